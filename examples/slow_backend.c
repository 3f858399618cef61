/*
 * slow_backend.c - a handler that waits on a slow backend, with a deadline.
 *
 * GET /data?ms=N asks a simulated backend that takes N milliseconds
 * (default 20, at most 10000) and answers its rows as JSON. Each request
 * gets a deadline (-t, default 100 ms) from latch_req_set_timeout; when the
 * backend is slower, latch itself answers 504 Gateway Timeout.
 *
 * The Express bug this avoids: the connect-timeout middleware (or a
 * setTimeout that sends a 504) races the backend's callback. When the
 * backend answers late, its res.json() throws ERR_HTTP_HEADERS_SENT
 * ("Cannot set headers after they are sent to the client") unless every
 * callback remembers to check req.timedout, and the query runs on for
 * nobody. Here the deadline belongs to latch: it answers 504 once and fires
 * the request's cancellation signal. The backend call, blocked on the pool
 * thread, polls latch_work_cancel_fd beside its wait and gives up early;
 * its completion gets LATCH_ERR_CANCELLED and drops the result. No mutex,
 * condition variable or reference count: latch_work_copy owns the job's
 * data, and the descriptor is latch's. Had it called latch_res_json anyway,
 * latch would have refused the call and reported it, naming the timeout as what
 * sealed the response: there is never a second response on the wire.
 *
 * Usage: slow_backend [-p port] [-t timeout_ms]. Listens on 127.0.0.1
 * (port 0: the kernel chooses) and prints the address on stdout, where each
 * dropped result is logged too. SIGINT/SIGTERM drain and exit 0.
 */
#include <latch.h>

#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#define MAX_BACKEND_MS 10000

/* -t: each request's deadline. */
static uint64_t timeout_ms = 100;

static int64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/*
 * On the pool: the backend's latency (*data milliseconds), cut short by a
 * cancellation, as a database client polls its socket beside the job's
 * cancel descriptor and sends a cancel request when it fires. The job's
 * data is latch's copy of the handler's int (latch_work_copy): it lives
 * until backend_done returned, and nobody frees it.
 */
static void backend_query(void *data)
{
    int64_t until = now_ms() + *(const int *)data, left;
    struct pollfd p = {latch_work_cancel_fd(), POLLIN, 0};

    /* A signal may end a poll early: wait again for what is left. */
    while (!latch_work_cancelled() && (left = until - now_ms()) > 0)
        poll(&p, 1, (int)left);
}

static const char *reason_name(int reason)
{
    switch (reason) {
    case LATCH_CANCEL_TIMEOUT: return "request timeout";
    case LATCH_CANCEL_DISCONNECT: return "client disconnect";
    case LATCH_CANCEL_SHUTDOWN: return "server shutdown";
    default: return "not cancelled";
    }
}

/* On the loop, exactly once: the backend's answer, or the news that
 * nobody wants it any more. */
static void backend_done(latch_res *res, int status, void *data)
{
    latch_req *req = latch_res_req(res);

    if (status == LATCH_ERR_CANCELLED || latch_req_aborted(req)) {
        /* latch answered already (the 504), or there is no one to answer.
         * Responding here is the Express bug: say nothing. */
        printf("slow_backend: request %llu: %s, backend result dropped\n",
               (unsigned long long)latch_req_id(req),
               reason_name(latch_req_cancel_reason(req)));
        fflush(stdout);
        return;
    }
    latch_res_jsonf(res, "{\"backend_ms\":%d,\"rows\":[\"alpha\",\"beta\"]}",
                    *(const int *)data);
}

/* GET /data?ms=N */
static int on_data(latch_req *req, latch_res *res, void *data)
{
    const char *q = latch_req_query(req, "ms");
    char *end = NULL;
    long ms = 20;
    int n;

    (void)data;
    if (q != NULL) {
        ms = strtol(q, &end, 10);
        if (*q == '\0' || *end != '\0' || ms < 0 || ms > MAX_BACKEND_MS)
            return latch_fail(req, 400, "ms: 0 to 10000");
    }
    /* The deadline first: it counts from now, and covers everything the
     * handler starts. */
    latch_req_set_timeout(req, timeout_ms, 504);
    n = (int)ms;
    if (latch_work_copy(res, backend_query, backend_done, &n, sizeof(n)) != 0)
        latch_res_send_status(res, 503); /* the completion will never run */
    return LATCH_DONE;
}

int main(int argc, char **argv)
{
    int port = 8080, opt, r;
    latch_app *app;

    while ((opt = getopt(argc, argv, "p:t:")) != -1) {
        switch (opt) {
        case 'p': port = atoi(optarg); break;
        case 't': timeout_ms = strtoull(optarg, NULL, 10); break;
        default:
            fprintf(stderr, "usage: %s [-p port] [-t timeout_ms]\n", argv[0]);
            return 2;
        }
    }
    app = latch_app_new();
    if (app == NULL)
        return 1;
    latch_get(app, "/data", on_data, NULL);
    r = latch_listen(app, "127.0.0.1", port);
    if (r < 0) {
        fprintf(stderr, "slow_backend: cannot listen on 127.0.0.1:%d: %s\n",
                port, latch_strerror(r));
        latch_app_free(app);
        return 1;
    }
    printf("slow_backend: listening on http://127.0.0.1:%d/\n",
           latch_app_port(app));
    fflush(stdout);
    r = latch_run(app);
    latch_app_free(app);
    return r < 0 ? 1 : 0;
}
