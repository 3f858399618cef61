/*
 * fetch_timeout.c - a call to an upstream with a deadline, aborted when
 * the deadline passes or the client leaves: Express's AbortController
 * pattern (issue 16's third example), ported.
 *
 * The Express original and its port sit side by side below, between the
 * markers that scripts/count_lines.sh reads for the README's table: code
 * lines only, blank and comment lines not counted, on either side.
 *
 * What latch owns here: the deadline (latch_req_set_timeout replaces the
 * setTimeout and its clearTimeout), the abort on the deadline and on the
 * client leaving (the job's latch_work_cancel_fd is the AbortSignal,
 * polled beside the upstream's socket, with no req.on('close')), and the
 * one answer: the timeout's goes through the error handler before
 * anything else can be sent, and the completion of an aborted call gets
 * LATCH_ERR_CANCELLED, so nobody needs Express's headersSent check.
 *
 * Usage: fetch_timeout -u upstream_port [-p port] [-t timeout_ms].
 * GET /data?... is fetched from http://127.0.0.1:<upstream_port> with the
 * same path and query, and its JSON answered as is; -t is the deadline
 * (default 5000 ms, answered 504 {"error":"Request timed out"}); an
 * upstream that fails or answers other than 200 is a 502. Listens on
 * 127.0.0.1 (port 0: the kernel chooses) and prints the address on
 * stdout, where each upstream request sent and each one aborted is logged
 * too.
 * SIGINT/SIGTERM drain and exit 0.
 */
#include <latch.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static int upstream_port;
static uint64_t timeout_ms = 5000;

/* ------------------------------------------------------------------ */
/* fetch(), the client library (Node's built-in fetch)                  */
/* ------------------------------------------------------------------ */

/*
 * GET `target` ("/path?query") from 127.0.0.1:upstream_port with
 * Connection: close, blocking, and copies the body into body[cap]
 * (NUL-terminated). `signal` is a descriptor (an AbortSignal): once it is
 * readable the call gives up at once and closes the connection; -1: none.
 * Returns the HTTP status, -ECANCELED when aborted, -EMSGSIZE for an
 * answer that does not fit, or another negative errno.
 */
static int fetch(const char *target, char *body, size_t cap, int signal)
{
    struct sockaddr_in to = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)upstream_port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    char buf[16384], req[1024];
    size_t len = 0;
    int fd, n, r, status;
    const char *sep;

    n = snprintf(req, sizeof(req),
                 "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                 "Connection: close\r\n\r\n",
                 target);
    if (n < 0 || (size_t)n >= sizeof(req))
        return -EINVAL;
    if ((fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0)
        return -errno;
    /* Loopback: the connect and the small send do not block. */
    if (connect(fd, (struct sockaddr *)&to, sizeof(to)) < 0 ||
        send(fd, req, (size_t)n, MSG_NOSIGNAL) != n) {
        r = -errno;
        goto out;
    }
    printf("fetch_timeout: %s: sent\n", target);
    fflush(stdout);
    for (;;) {
        struct pollfd p[2] = {{fd, POLLIN, 0}, {signal, POLLIN, 0}};
        ssize_t got;

        if (poll(p, 2, -1) < 0) {
            r = -errno;
            if (errno == EINTR)
                continue;
            goto out;
        }
        if (p[1].revents != 0) {
            r = -ECANCELED;
            goto out;
        }
        got = recv(fd, buf + len, sizeof(buf) - 1 - len, 0);
        if (got == 0)
            break;
        if (got < 0) {
            r = -errno;
            if (errno == EINTR)
                continue;
            goto out;
        }
        len += (size_t)got;
        if (len == sizeof(buf) - 1) {
            r = -EMSGSIZE;
            goto out;
        }
    }
    buf[len] = '\0';
    r = -EPROTO;
    if (sscanf(buf, "HTTP/1.%*d %d", &status) != 1 ||
        (sep = strstr(buf, "\r\n\r\n")) == NULL)
        goto out;
    r = -EMSGSIZE;
    if ((size_t)snprintf(body, cap, "%s", sep + 4) >= cap)
        goto out;
    r = status;
out:
    close(fd);
    if (r == -ECANCELED) {
        printf("fetch_timeout: %s: aborted\n", target);
        fflush(stdout);
    }
    return r;
}

/* ------------------------------------------------------------------ */
/* Express and latch                                                    */
/* ------------------------------------------------------------------ */

// clang-format off
/* express: begin
 * app.get('/data', async (req, res, next) => {
 *   const controller = new AbortController();
 *   const timer = setTimeout(() => controller.abort(), 5000);
 *   req.on('close', () => controller.abort());
 *   try {
 *     const upstream = await fetch(UPSTREAM + req.url, {
 *       signal: controller.signal,
 *     });
 *     if (!upstream.ok) throw new Error(`upstream answered ${upstream.status}`);
 *     res.json(await upstream.json());
 *   } catch (err) {
 *     if (err.name !== 'AbortError') return next(err);
 *     if (!res.headersSent) res.status(504).json({ error: 'Request timed out' });
 *   } finally {
 *     clearTimeout(timer);
 *   }
 * });
 * express: end */
// clang-format on

/* latch: begin */
struct call {
    const char *url; /* the request's: valid for the job's whole life */
    int status;
    char body[8192];
};
static void fetch_data(void *data) /* await fetch(url, { signal }) */
{
    struct call *c = data;
    c->status = fetch(c->url, c->body, sizeof(c->body), latch_work_cancel_fd());
}
static void fetched(latch_res *res, int status, void *data)
{
    const struct call *c = data; /* cancelled: the timeout answered */
    if (status == 0 && c->status == 200)
        latch_res_jsonf(res, "%j", c->body);
    else if (status == 0) /* the catch: next(err) */
        latch_res_send_status(res, 502);
}
static int get_data(latch_req *req, latch_res *res, void *data)
{
    struct call c = {.url = latch_req_url(req)};
    latch_req_set_timeout(req, timeout_ms, 504);
    return latch_work_copy(res, fetch_data, fetched, &c, sizeof(c));
}
static int on_error(const latch_error *err, latch_req *req, latch_res *res,
                    void *data) /* runs before anything was sent */
{
    latch_res_status(res, err->status);
    return latch_res_jsonf(res, "{\"error\":%s}", err->message);
}
/* latch: end */

int main(int argc, char **argv)
{
    int port = 8080, opt, r;
    latch_app *app;

    while ((opt = getopt(argc, argv, "p:u:t:")) != -1) {
        switch (opt) {
        case 'p': port = atoi(optarg); break;
        case 'u': upstream_port = atoi(optarg); break;
        case 't': timeout_ms = strtoull(optarg, NULL, 10); break;
        default: upstream_port = 0; break;
        }
    }
    if (upstream_port <= 0 || upstream_port > 65535) {
        fprintf(stderr, "usage: %s -u upstream_port [-p port] [-t ms]\n",
                argv[0]);
        return 2;
    }
    if ((app = latch_app_new()) == NULL)
        return 1;
    if ((r = latch_get(app, "/data", get_data, NULL)) < 0 ||
        (r = latch_use_error(app, on_error, NULL)) < 0 ||
        (r = latch_listen(app, "127.0.0.1", port)) < 0) {
        fprintf(stderr, "fetch_timeout: %s\n", latch_strerror(r));
        latch_app_free(app);
        return 1;
    }
    printf("fetch_timeout: listening on http://127.0.0.1:%d/\n",
           latch_app_port(app));
    fflush(stdout);
    r = latch_run(app);
    latch_app_free(app);
    return r < 0 ? 1 : 0;
}
