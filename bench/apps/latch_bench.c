/*
 * latch_bench - the latch side of `make bench`.
 *
 * Serves the two responses every server in the benchmark serves:
 * GET /plaintext, the 13 bytes "Hello, World!" as text/plain, and GET /json,
 * {"message":"Hello, World!"} as application/json, formatted per request
 * (with snprintf until latch has its own JSON writer), as an application
 * would. One worker thread, so that it compares with the single-worker
 * configurations of the other servers.
 *
 * GET /app is the framework's cost: the same JSON through two middlewares
 * on the "/app" prefix (one sets a security header, one checks an optional
 * Authorization header, as an auth layer for public routes does) and a
 * route found by the router. With -c ("core") the program instead answers
 * every path with one catch-all handler that writes the same bytes itself:
 * no middleware, no route lookup, the closest the public API gets to the
 * bare core. /app of the two must be byte-identical (run.sh checks).
 *
 * It is not an example of a complete application: no logging, no error
 * handlers; just what the benchmark measures.
 *
 * Usage: latch_bench [-p port] [-k keepalive_ms] [-w workers] [-c]
 * Defaults: port 18080, keep-alive 120000 ms (long enough for the idle
 * connection measure), 1 worker. Listens on 127.0.0.1 only. SIGINT/SIGTERM
 * drain and exit 0.
 */
#include <latch.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int on_plaintext(latch_req *req, latch_res *res, void *data)
{
    (void)req;
    (void)data;
    latch_res_set_header(res, "Content-Type", "text/plain");
    latch_res_send(res, "Hello, World!", 13);
    return LATCH_DONE;
}

static int on_json(latch_req *req, latch_res *res, void *data)
{
    /* Formatted on every request, as a handler that builds its JSON from
     * data would, rather than sent from a constant. */
    static const char *const message = "Hello, World!";
    char body[64];
    int n;

    (void)req;
    (void)data;
    n = snprintf(body, sizeof(body), "{\"message\":\"%s\"}", message);
    if (n < 0 || (size_t)n >= sizeof(body))
        return latch_fail(req, 500, "json body too long");
    latch_res_json(res, body);
    return LATCH_DONE;
}

static const char app_token[] = "Bearer bench-secret";

/* The first middleware: a header every answer under /app carries. */
static int mw_headers(latch_req *req, latch_res *res, void *data)
{
    (void)req;
    (void)data;
    latch_res_set_header(res, "X-Content-Type-Options", "nosniff");
    return LATCH_NEXT;
}

/* The second: public routes pass without credentials; wrong ones stop. */
static int mw_auth(latch_req *req, latch_res *res, void *data)
{
    const char *auth = latch_req_header(req, "Authorization");

    (void)data;
    if (auth != NULL && strcmp(auth, app_token) != 0) {
        latch_res_send_status(res, 401);
        return LATCH_DONE;
    }
    return LATCH_NEXT;
}

/* The core: one handler for every path, the same bytes as /app. */
static int on_core(latch_req *req, latch_res *res, void *data)
{
    const char *path = latch_req_path(req);

    if (strcmp(path, "/plaintext") == 0)
        return on_plaintext(req, res, data);
    if (strcmp(path, "/json") == 0)
        return on_json(req, res, data);
    latch_res_set_header(res, "X-Content-Type-Options", "nosniff");
    return on_json(req, res, data);
}

int main(int argc, char **argv)
{
    int port = 18080, workers = 1, opt, r, core = 0;
    long keepalive_ms = 120000;
    latch_app *app;

    while ((opt = getopt(argc, argv, "p:k:w:c")) != -1) {
        switch (opt) {
        case 'c': core = 1; break;
        case 'p': port = atoi(optarg); break;
        case 'k': keepalive_ms = atol(optarg); break;
        case 'w': workers = atoi(optarg); break;
        default:
            fprintf(stderr,
                    "usage: %s [-p port] [-k keepalive_ms] [-w n] [-c]\n",
                    argv[0]);
            return 2;
        }
    }
    app = latch_app_new();
    if (app == NULL)
        return 1;
    if (latch_app_set_workers(app, workers) < 0 ||
        latch_app_set_limit(app, LATCH_TIMEOUT_KEEPALIVE,
                            (uint64_t)keepalive_ms) < 0 ||
        (core ? latch_use(app, NULL, on_core, NULL) < 0
              : (latch_get(app, "/plaintext", on_plaintext, NULL) < 0 ||
                 latch_get(app, "/json", on_json, NULL) < 0 ||
                 latch_use(app, "/app", mw_headers, NULL) < 0 ||
                 latch_use(app, "/app", mw_auth, NULL) < 0 ||
                 latch_get(app, "/app", on_json, NULL) < 0))) {
        fprintf(stderr, "latch_bench: cannot configure the app\n");
        latch_app_free(app);
        return 1;
    }
    r = latch_listen(app, "127.0.0.1", port);
    if (r < 0) {
        fprintf(stderr, "latch_bench: cannot listen on 127.0.0.1:%d: %s\n",
                port, latch_strerror(r));
        latch_app_free(app);
        return 1;
    }
    r = latch_run(app);
    latch_app_free(app);
    return r < 0 ? 1 : 0;
}
