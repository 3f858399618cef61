/*
 * fanout.c - one request, three backends queried in parallel, one answer.
 *
 * GET /fanout?ms=N&fail=NAME queries three simulated backends at once on
 * the thread pool: users (N ms, default 20), orders (2N) and stock (3N);
 * N is at most 2000. A join collects them and answers exactly once:
 *  - all three answered: 200 with one JSON object holding the three
 *    results;
 *  - one failed (fail=users, orders or stock): 502 with the name of the
 *    first that failed, as soon as it failed; the others' late results
 *    are ignored;
 *  - the request's deadline (-t, default 1000 ms) passed first: latch's
 *    own 504, and the join's completion learns it was cancelled.
 *
 * The Node bug this avoids: fanning out with callbacks, or Promise.all
 * with a .catch on each call, where every error path answers. When two
 * backends fail, or one fails after a timeout answered, the second
 * res.status(502).json() throws ERR_HTTP_HEADERS_SENT ("Cannot set headers
 * after they are sent to the client"); when a path forgets to answer, the
 * request hangs. A join has one completion, so the handler answers in one
 * place, once.
 *
 * Usage: fanout [-p port] [-t timeout_ms]. Listens on 127.0.0.1 (port 0:
 * the kernel chooses) and prints the address on stdout, where each
 * cancelled fan-out is logged too. SIGINT/SIGTERM drain and exit 0.
 */
#include <latch.h>

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAX_BACKEND_MS 2000
#define NBACKENDS 3

/* -t: each request's deadline. */
static uint64_t timeout_ms = 1000;

static const char *const names[NBACKENDS] = {"users", "orders", "stock"};

/* What each backend returns when it works (JSON values). */
static const char *const answers[NBACKENDS] = {
    "[{\"id\":1,\"name\":\"ada\"}]",
    "[{\"id\":7,\"total\":42}]",
    "{\"widgets\":3}",
};

struct fanout;

/* One backend call: the pool thread fills `result`, the loop reads it. */
typedef struct backend {
    struct fanout *f;
    int index;
    int ms;
    bool fail; /* the simulated backend refuses */
    char result[96];
} backend;

/*
 * One request's fan-out. The join's completion may run from a backend's
 * completion or from the request's cancellation, and the backends'
 * completions run until the last one (latch_work calls each exactly once,
 * also after a cancellation), so the last of them frees it.
 */
typedef struct fanout {
    latch_join *join;
    backend b[NBACKENDS];
    int pending;        /* backend completions still to come (loop only) */
    const char *failed; /* the first backend that failed */
} fanout;

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};

    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* On the pool: a blocking backend client, which cannot be interrupted. */
static void query_backend(void *data)
{
    backend *b = data;

    sleep_ms(b->ms);
    if (!b->fail)
        snprintf(b->result, sizeof(b->result), "%s", answers[b->index]);
}

/* On the loop, exactly once per backend: hand the result to the join.
 * Every backend must report, even when nobody waits for its result any
 * more: that is how the join knows it may free itself. */
static void backend_done(latch_res *res, int status, void *data)
{
    backend *b = data;
    fanout *f = b->f;

    (void)res;
    if (status < 0) {
        latch_join_fail(f->join, b->index, status); /* cancelled */
    } else if (b->fail) {
        if (f->failed == NULL && !latch_join_settled(f->join))
            f->failed = names[b->index];
        latch_join_fail(f->join, b->index, -ECONNREFUSED);
    } else {
        /* Once the join settled, this result is ignored. */
        latch_join_resolve(f->join, b->index, b->result);
    }
    if (--f->pending == 0)
        free(f);
}

/* The join's completion: the only place that answers. */
static void fanout_done(latch_res *res, int status, void *const *results,
                        void *data)
{
    fanout *f = data;
    latch_req *req = latch_res_req(res);
    char body[512];

    if (status == 0) {
        snprintf(body, sizeof(body),
                 "{\"users\":%s,\"orders\":%s,\"stock\":%s}",
                 (const char *)results[0], (const char *)results[1],
                 (const char *)results[2]);
        latch_res_json(res, body);
    } else if (status == LATCH_ERR_CANCELLED) {
        /* The deadline answered 504, or the client left: nothing to say. */
        printf("fanout: request %llu: cancelled before the backends "
               "answered\n",
               (unsigned long long)latch_req_id(req));
        fflush(stdout);
    } else {
        snprintf(body, sizeof(body), "{\"error\":\"%s unavailable\"}",
                 f->failed ? f->failed : "backend");
        latch_res_status(res, 502);
        latch_res_json(res, body);
    }
}

/* GET /fanout?ms=N&fail=NAME */
static int on_fanout(latch_req *req, latch_res *res, void *data)
{
    const char *q = latch_req_query(req, "ms");
    const char *fail = latch_req_query(req, "fail");
    char *end = NULL;
    long ms = 20;
    fanout *f;
    int i, failing = -1;

    (void)data;
    if (q != NULL) {
        ms = strtol(q, &end, 10);
        if (*q == '\0' || *end != '\0' || ms < 0 || ms > MAX_BACKEND_MS)
            return latch_fail(req, 400, "ms: 0 to 2000");
    }
    for (i = 0; fail != NULL && i < NBACKENDS; i++)
        if (strcmp(fail, names[i]) == 0)
            failing = i;
    if (fail != NULL && failing < 0)
        return latch_fail(req, 400, "fail: users, orders or stock");
    latch_req_set_timeout(req, timeout_ms, 504);
    f = calloc(1, sizeof(*f));
    if (f == NULL)
        return latch_fail(req, 500, "out of memory");
    f->join = latch_join_new(res, NBACKENDS, fanout_done, f);
    if (f->join == NULL) {
        free(f);
        return latch_fail(req, 500, "cannot start the fan-out");
    }
    f->pending = NBACKENDS;
    for (i = 0; i < NBACKENDS; i++) {
        backend *b = &f->b[i];
        b->f = f;
        b->index = i;
        b->ms = (int)ms * (i + 1);
        b->fail = i == failing;
        if (latch_work(res, query_backend, backend_done, b) != 0) {
            /* Never started: report it here, as its completion would. */
            latch_join_fail(f->join, i, LATCH_ERR_STATE);
            f->pending--;
        }
    }
    if (f->pending == 0)
        free(f);
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
    latch_get(app, "/fanout", on_fanout, NULL);
    r = latch_listen(app, "127.0.0.1", port);
    if (r < 0) {
        fprintf(stderr, "fanout: cannot listen on 127.0.0.1:%d: %s\n", port,
                latch_strerror(r));
        latch_app_free(app);
        return 1;
    }
    printf("fanout: listening on http://127.0.0.1:%d/\n", latch_app_port(app));
    fflush(stdout);
    r = latch_run(app);
    latch_app_free(app);
    return r < 0 ? 1 : 0;
}
