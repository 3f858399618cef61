/*
 * gateway.c - an API gateway: static files, /api proxied to a backend,
 * and a bearer-token check in front of the proxy only. The Express
 * original (express.static + http-proxy-middleware behind an auth
 * middleware) sits beside the port below.
 *
 * What latch owns here: the order (a middleware that answers 401 returns
 * LATCH_DONE, so the proxy is never reached and the backend never sees
 * the request: Express's `return` before `next()`); the proxy's endings
 * (a backend that is down is a 502 from on_error, called only while the
 * response is still unanswered, so the error handler of
 * http-proxy-middleware that writes into a response whose client left has
 * no counterpart here; a backend that fails half way truncates the
 * response; a client that leaves closes the backend connection); and the
 * request body, streamed to the backend as it arrives.
 *
 * Usage: gateway -u upstream_port [-p port] [-d dir] [-k token].
 * /api and the paths under it go to http://127.0.0.1:<upstream_port> with
 * /api taken off (GET /api/users is GET /users there), when the request
 * carries "Authorization: Bearer <token>" (default token: "secret");
 * without it: 401 {"error":"a bearer token is required"}, with a wrong
 * one: 403 {"error":"the token is not valid"}; a backend that cannot be
 * reached or answers malformed: 502 {"error":"the backend is not
 * available"} (504 {"error":"the backend did not answer"} after 10 s).
 * Everything else is a file under dir (default "public"). Listens on
 * 127.0.0.1 (port 0: the kernel chooses) and prints the address on
 * stdout. SIGINT/SIGTERM drain and exit 0.
 */
#include <latch.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

static const char *token = "secret";

// clang-format off
/* express: begin
 * const express = require('express');
 * const { createProxyMiddleware } = require('http-proxy-middleware');
 * const app = express();
 *
 * function requireToken(req, res, next) {
 *   const auth = req.get('authorization');
 *   if (!auth || !/^bearer /i.test(auth)) {
 *     res.set('WWW-Authenticate', 'Bearer');
 *     return res.status(401).json({ error: 'a bearer token is required' });
 *   }
 *   if (auth.slice(7) !== TOKEN)
 *     return res.status(403).json({ error: 'the token is not valid' });
 *   next();
 * }
 *
 * app.use('/api', requireToken, createProxyMiddleware({
 *   target: UPSTREAM,
 *   proxyTimeout: 10000,
 *   on: {
 *     error: (err, req, res) => {  // res may be a socket, or gone
 *       if (res.headersSent) return res.destroy();
 *       const late = err.code === 'ECONNRESET' && req.socket.destroyed;
 *       if (!late) res.status(502).json({ error: 'the backend is not available' });
 *     },
 *   },
 * }));
 * app.use(express.static('public'));
 * app.listen(8080);
 * express: end */
// clang-format on

/* latch: begin */
static int require_token(latch_req *req, latch_res *res, void *data)
{
    const char *auth = latch_req_header(req, "Authorization");
    if (auth == NULL || strncasecmp(auth, "Bearer ", 7) != 0) {
        latch_res_set_header(res, "WWW-Authenticate", "Bearer");
        latch_res_status(res, 401);
        latch_res_jsonf(res, "{\"error\":%s}", "a bearer token is required");
        return LATCH_DONE;
    }
    if (strcmp(auth + 7, token) != 0) {
        latch_res_status(res, 403);
        latch_res_jsonf(res, "{\"error\":%s}", "the token is not valid");
        return LATCH_DONE;
    }
    return LATCH_NEXT;
}
static void backend_failed(const latch_error *err, latch_req *req,
                           latch_res *res, void *data) /* res is unanswered */
{
    latch_res_status(res, err->status); /* 502, or 504 on the timeout */
    latch_res_jsonf(res, "{\"error\":%s}",
                    err->status == 504 ? "the backend did not answer"
                                       : "the backend is not available");
}
static int routes(latch_app *app, const char *upstream, const char *dir)
{
    latch_proxy_opts proxy = {.strip_prefix = "/api",
                              .response_timeout_ms = 10000,
                              .on_error = backend_failed};
    int r = latch_use(app, "/api", require_token, NULL);
    if (r == 0)
        r = latch_use_proxy(app, "/api", upstream, &proxy);
    if (r == 0)
        r = latch_static(app, "/", dir, NULL);
    return r;
}
/* latch: end */

int main(int argc, char **argv)
{
    const char *dir = "public";
    char upstream[64];
    int port = 8080, up = 0, opt, r;
    latch_app *app;

    while ((opt = getopt(argc, argv, "p:u:d:k:")) != -1) {
        switch (opt) {
        case 'p': port = atoi(optarg); break;
        case 'u': up = atoi(optarg); break;
        case 'd': dir = optarg; break;
        case 'k': token = optarg; break;
        default: up = 0; break;
        }
    }
    if (up <= 0 || up > 65535) {
        fprintf(stderr,
                "usage: %s -u upstream_port [-p port] [-d dir] [-k token]\n",
                argv[0]);
        return 2;
    }
    snprintf(upstream, sizeof(upstream), "http://127.0.0.1:%d", up);
    if ((app = latch_app_new()) == NULL)
        return 1;
    if ((r = routes(app, upstream, dir)) < 0 ||
        (r = latch_listen(app, "127.0.0.1", port)) < 0) {
        fprintf(stderr, "gateway: %s\n", latch_strerror(r));
        latch_app_free(app);
        return 1;
    }
    printf("gateway: listening on http://127.0.0.1:%d/\n", latch_app_port(app));
    fflush(stdout);
    r = latch_run(app);
    latch_app_free(app);
    return r < 0 ? 1 : 0;
}
