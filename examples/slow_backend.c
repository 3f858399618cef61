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
 * the request's cancellation signal. The backend call listens to the signal
 * and gives up early; its completion gets LATCH_ERR_CANCELLED and drops the
 * result. Had it called latch_res_json anyway, latch would have refused the
 * call and reported it, naming the timeout as what sealed the response:
 * there is never a second response on the wire.
 *
 * Usage: slow_backend [-p port] [-t timeout_ms]. Listens on 127.0.0.1
 * (port 0: the kernel chooses) and prints the address on stdout, where each
 * dropped result is logged too. SIGINT/SIGTERM drain and exit 0.
 */
#include <latch.h>

#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAX_BACKEND_MS 10000

/* -t: each request's deadline. */
static uint64_t timeout_ms = 100;

/*
 * One backend call. The pool thread waits on `cv` until the backend
 * "answers" or the request is cancelled. The cancel callback, the
 * completion and on_close run on the loop thread. The cancel callback can
 * run as long as the response is not closed, even after the completion (a
 * client that leaves while the JSON is still being written), so the call
 * has two owners: the completion and on_close.
 */
typedef struct call {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool cancelled; /* under mu */
    int ms;         /* how long the backend takes */
    int refs;       /* loop thread only */
} call;

static call *call_new(int ms)
{
    call *c = calloc(1, sizeof(*c));
    pthread_condattr_t attr;

    if (c == NULL)
        return NULL;
    /* A monotonic deadline: a clock change must not stretch the wait. */
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&c->cv, &attr);
    pthread_condattr_destroy(&attr);
    pthread_mutex_init(&c->mu, NULL);
    c->ms = ms;
    c->refs = 2;
    return c;
}

static void call_release(call *c)
{
    if (--c->refs > 0)
        return;
    pthread_cond_destroy(&c->cv);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

/* The request timed out, the client left, or the server is stopping. */
static void on_cancel(latch_req *req, int reason, void *data)
{
    call *c = data;

    (void)req;
    (void)reason;
    pthread_mutex_lock(&c->mu);
    c->cancelled = true;
    pthread_cond_signal(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

/* On the pool: the backend's latency, cut short by a cancellation (as a
 * database client's cancel request would). */
static void backend_query(void *data)
{
    call *c = data;
    struct timespec until;

    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += c->ms / 1000;
    until.tv_nsec += (long)(c->ms % 1000) * 1000000;
    if (until.tv_nsec >= 1000000000) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000;
    }
    pthread_mutex_lock(&c->mu);
    while (!c->cancelled)
        if (pthread_cond_timedwait(&c->cv, &c->mu, &until) != 0)
            break; /* the backend answered */
    pthread_mutex_unlock(&c->mu);
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
    call *c = data;
    latch_req *req = latch_res_req(res);
    char body[128];

    if (status == LATCH_ERR_CANCELLED || latch_req_aborted(req)) {
        /* latch answered already (the 504), or there is no one to answer.
         * Responding here is the Express bug: say nothing. */
        printf("slow_backend: request %llu: %s, backend result dropped\n",
               (unsigned long long)latch_req_id(req),
               reason_name(latch_req_cancel_reason(req)));
        fflush(stdout);
    } else {
        snprintf(body, sizeof(body),
                 "{\"backend_ms\":%d,\"rows\":[\"alpha\",\"beta\"]}", c->ms);
        latch_res_json(res, body);
    }
    call_release(c);
}

static void on_close(latch_res *res, void *data)
{
    (void)res;
    call_release(data);
}

/* GET /data?ms=N */
static int on_data(latch_req *req, latch_res *res, void *data)
{
    const char *q = latch_req_query(req, "ms");
    char *end = NULL;
    long ms = 20;
    call *c;

    (void)data;
    if (q != NULL) {
        ms = strtol(q, &end, 10);
        if (*q == '\0' || *end != '\0' || ms < 0 || ms > MAX_BACKEND_MS)
            return latch_fail(req, 400, "ms: 0 to 10000");
    }
    /* The deadline first: it counts from now, and covers everything the
     * handler starts. */
    latch_req_set_timeout(req, timeout_ms, 504);
    c = call_new((int)ms);
    if (c == NULL)
        return latch_fail(req, 500, "out of memory");
    latch_req_on_cancel(req, on_cancel, c);
    latch_res_on_close(res, on_close, c);
    if (latch_work(res, backend_query, backend_done, c) != 0) {
        call_release(c); /* the completion will never run */
        latch_res_send_status(res, 503);
    }
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
