/*
 * test_chain.c - the bugs of the Express world, written as latch handlers,
 * each checked for exactly one response on the wire and the right report
 * with both of its places.
 *
 *  - respond without returning, then respond again   ERR_HTTP_HEADERS_SENT
 *  - next twice in a middleware                      ERR_NEXT_TWICE
 *  - respond, then pass an error on                  ERR_NEXT_AFTER_RESPONSE
 *  - an error handler that responds after the headers ERR_HTTP_HEADERS_SENT
 *  - a middleware that sets a header after next       ERR_HTTP_HEADERS_SENT
 *  - an async middleware that continues after another answer, or after
 *    the request timeout                             ERR_NEXT_AFTER_RESPONSE
 *  - a handler that returns without answering        ERR_NO_RESPONSE
 *
 * Each handler records the line of each call it makes, so the test can
 * check that the report's `at`, `sealed_at` and `prior_at` name exactly
 * those lines. A violation in what a handler returned is placed at the
 * handler: its name, and the line where it was registered.
 */
#include "harness.h"

#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

/* ------------------------------------------------------------------ */
/* Recorded reports                                                     */
/* ------------------------------------------------------------------ */

typedef struct report {
    int code;
    char call[64];
    char at_func[64];
    int at_line;
    char sealed_call[64];
    int sealed_line;
    char prior_call[64];
    int prior_line;
    char path[128];
} report;

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static report reps[32];
static int nreps;

static void copy(char *dst, size_t cap, const char *src)
{
    snprintf(dst, cap, "%s", src ? src : "");
}

static void on_violation(const latch_violation *v, void *data)
{
    (void)data;
    pthread_mutex_lock(&mu);
    if (nreps < 32) {
        report *r = &reps[nreps++];
        r->code = v->code;
        copy(r->call, sizeof(r->call), v->call);
        copy(r->at_func, sizeof(r->at_func), v->at.func);
        r->at_line = v->at.line;
        copy(r->sealed_call, sizeof(r->sealed_call), v->sealed_call);
        r->sealed_line = v->sealed_at.line;
        copy(r->prior_call, sizeof(r->prior_call), v->prior_call);
        r->prior_line = v->prior_at.line;
        copy(r->path, sizeof(r->path), v->path);
    }
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
}

/* Waits until n reports arrived (or 3 s), then a short while more to see
 * that no other follows; returns the count. */
static int wait_reports(int n)
{
    struct timespec ts;
    int got;

    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += 3;
    pthread_mutex_lock(&mu);
    while (nreps < n)
        if (pthread_cond_timedwait(&cv, &mu, &ts) != 0)
            break;
    /* Nothing more may come: give a stray report 100 ms to show up. */
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += 100 * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    while (pthread_cond_timedwait(&cv, &mu, &ts) == 0)
        ;
    got = nreps;
    pthread_mutex_unlock(&mu);
    return got;
}

static void reset_reports(void)
{
    pthread_mutex_lock(&mu);
    nreps = 0;
    memset(reps, 0, sizeof(reps));
    pthread_mutex_unlock(&mu);
}

/* ------------------------------------------------------------------ */
/* Lines the handlers record                                            */
/* ------------------------------------------------------------------ */

enum {
    L_FIRST,       /* the call that sealed the response */
    L_SECOND,      /* the offending call */
    L_NEXT1,       /* the first latch_next */
    L_REG,         /* where the handler under test was registered */
    L_REG_ROUTE,   /* where a route was registered */
    L_REG_SILENT,  /* where the silent handler was registered */
    L_ERRH_STATUS, /* the error handler's latch_res_status */
    L_ERRH_JSON,   /* the error handler's latch_res_json */
    L_FAIL,        /* a latch_fail */
    L_N
};
static _Atomic int lines[L_N];
static _Atomic int route_runs;
static _Atomic int errh_runs;
static _Atomic bool errh_saw_headers_sent;
static _Atomic int call_rc; /* what the offending call returned */

#define MARK(k) atomic_store(&lines[k], __LINE__ + 1)

/* ------------------------------------------------------------------ */
/* 1. Responding without returning, then responding again               */
/* ------------------------------------------------------------------ */

/* Express: `if (!name) res.status(400).json({error})` without `return`,
 * then `res.json(user)` throws ERR_HTTP_HEADERS_SENT. */
static int no_return(latch_req *req, latch_res *res, void *data)
{
    (void)data;
    if (latch_req_query(req, "name") == NULL) {
        latch_res_status(res, 400);
        MARK(L_FIRST);
        latch_res_json(res, "{\"error\":\"name is required\"}");
        /* the missing `return LATCH_DONE;` */
    }
    latch_res_status(res, 201);
    MARK(L_SECOND);
    atomic_store(&call_rc, latch_res_json(res, "{\"id\":1}"));
    return LATCH_DONE;
}

/* ------------------------------------------------------------------ */
/* 2. next twice in a middleware                                        */
/* ------------------------------------------------------------------ */

static void twice_cb(latch_res *res, void *data)
{
    latch_req *req = latch_res_req(res);

    (void)data;
    MARK(L_NEXT1);
    latch_next(req);
    /* A cleanup path that "makes sure" the chain goes on. */
    MARK(L_SECOND);
    latch_next(req);
}

static int twice_mw(latch_req *req, latch_res *res, void *data)
{
    (void)req;
    (void)data;
    if (latch_set_timeout(res, 1, twice_cb, NULL) == NULL)
        return latch_fail(req, 500, "no timer");
    return LATCH_PENDING;
}

static int count_and_send(latch_req *req, latch_res *res, void *data)
{
    (void)req;
    (void)data;
    atomic_fetch_add(&route_runs, 1);
    MARK(L_FIRST);
    latch_res_send(res, "route", 5);
    return LATCH_DONE;
}

/* latch_next inside the middleware (Express's next()), and then
 * LATCH_NEXT as well. */
static int sync_twice_mw(latch_req *req, latch_res *res, void *data)
{
    (void)res;
    (void)data;
    MARK(L_NEXT1);
    latch_next(req);
    return LATCH_NEXT;
}

/* Express's `next(); next();` in one synchronous middleware. */
static int double_next_mw(latch_req *req, latch_res *res, void *data)
{
    (void)res;
    (void)data;
    MARK(L_NEXT1);
    latch_next(req);
    MARK(L_SECOND);
    latch_next(req);
    return LATCH_DONE;
}

/* next(), then next(err) from the same middleware while the route is
 * still working. */
static int next_then_fail_mw(latch_req *req, latch_res *res, void *data)
{
    (void)res;
    (void)data;
    MARK(L_NEXT1);
    latch_next(req);
    MARK(L_FAIL);
    return latch_fail(req, 500, "late failure");
}

/* Express's timing middleware: next(), then a header once the route
 * answered inside it. */
static int sync_timing_mw(latch_req *req, latch_res *res, void *data)
{
    (void)data;
    latch_next(req);
    MARK(L_SECOND);
    atomic_store(&call_rc, latch_res_set_header(res, "X-Response-Time", "1ms"));
    return LATCH_DONE;
}

/* The route answers later: Express would send finalhandler's 404 on the
 * second next() and then crash on the route's late res.send. */
static void late_send(latch_res *res, void *data)
{
    (void)data;
    MARK(L_FIRST);
    latch_res_send(res, "late route", 10);
}

static int async_route(latch_req *req, latch_res *res, void *data)
{
    (void)data;
    atomic_fetch_add(&route_runs, 1);
    if (latch_set_timeout(res, 20, late_send, NULL) == NULL)
        return latch_fail(req, 500, "no timer");
    return LATCH_DONE;
}

/* ------------------------------------------------------------------ */
/* 3. Respond, then pass an error on; 4. error handler after headers     */
/* ------------------------------------------------------------------ */

/* The catch block that both responds and forwards: `res.send('ok');
 * next(err)`. */
static int respond_and_fail(latch_req *req, latch_res *res, void *data)
{
    (void)data;
    MARK(L_FIRST);
    latch_res_send(res, "saved", 5);
    MARK(L_FAIL);
    return latch_fail(req, 500, "audit log write failed");
}

/* Streams part of a body, then fails: the legitimate way to say the body
 * is incomplete. */
static int partial_then_fail(latch_req *req, latch_res *res, void *data)
{
    (void)data;
    MARK(L_FIRST);
    latch_res_write(res, "partial", 7);
    return latch_fail(req, 502, "upstream broke");
}

/* A careless error handler: answers whatever the state. */
static int careless_errh(const latch_error *err, latch_req *req, latch_res *res,
                         void *data)
{
    (void)err;
    (void)data;
    if (strncmp(latch_req_path(req), "/careless", 9) != 0)
        return LATCH_NEXT;
    atomic_fetch_add(&errh_runs, 1);
    atomic_store(&errh_saw_headers_sent, latch_res_headers_sent(res));
    MARK(L_ERRH_STATUS);
    latch_res_status(res, 500);
    MARK(L_ERRH_JSON);
    atomic_store(&call_rc, latch_res_json(res, "{\"error\":\"internal\"}"));
    return LATCH_DONE;
}

/* The error handler Express's docs prescribe: delegate when headers were
 * sent. */
static int careful_errh(const latch_error *err, latch_req *req, latch_res *res,
                        void *data)
{
    char body[160];

    (void)req;
    (void)data;
    atomic_fetch_add(&errh_runs, 1);
    atomic_store(&errh_saw_headers_sent, latch_res_headers_sent(res));
    if (latch_res_headers_sent(res))
        return LATCH_NEXT;
    snprintf(body, sizeof(body), "{\"error\":\"%s\"}",
             err->message ? err->message : "?");
    /* What the failed handler set for its success must not leak. */
    latch_res_clear_headers(res);
    latch_res_status(res, err->status);
    latch_res_json(res, body);
    return LATCH_DONE;
}

/* ------------------------------------------------------------------ */
/* 5. A middleware that sets a header after next                         */
/* ------------------------------------------------------------------ */

static void timing_cb(latch_res *res, void *data)
{
    latch_req *req = latch_res_req(res);

    (void)data;
    latch_next(req); /* the route answers inside */
    MARK(L_SECOND);
    atomic_store(&call_rc, latch_res_set_header(res, "X-Response-Time", "1ms"));
}

static int timing_mw(latch_req *req, latch_res *res, void *data)
{
    (void)data;
    if (latch_set_timeout(res, 1, timing_cb, NULL) == NULL)
        return latch_fail(req, 500, "no timer");
    return LATCH_PENDING;
}

/* ------------------------------------------------------------------ */
/* 6. Async middleware continuing after another answer                   */
/* ------------------------------------------------------------------ */

/*
 * A callback from outside latch (a database driver's own thread): it
 * holds a reference to the response, sleeps `ms`, then posts `fn` to the
 * response's loop; fn must release the reference. Unlike latch's timers,
 * nothing cancels it when the response is over: the late call happens.
 */
typedef struct later {
    latch_res *res;
    latch_res_cb fn;
    long ms;
} later;

static void *later_thread(void *arg)
{
    later *l = arg;
    struct timespec ts = {l->ms / 1000, (l->ms % 1000) * 1000000L};

    nanosleep(&ts, NULL);
    if (latch_res_post(l->res, l->fn, NULL) != 0)
        abort(); /* the test cannot go on without it */
    free(l);
    return NULL;
}

static int post_after(latch_res *res, long ms, latch_res_cb fn)
{
    later *l = malloc(sizeof(*l));
    pthread_t t;

    if (l == NULL)
        return -1;
    *l = (later){res, fn, ms};
    latch_res_retain(res);
    if (pthread_create(&t, NULL, later_thread, l) != 0) {
        latch_res_release(res);
        free(l);
        return -1;
    }
    pthread_detach(t);
    return 0;
}

/* Two checks in parallel (a rate limit and a ban list); either may
 * refuse. The first refuses; the second, passing, resumes the chain. */
static void limit_refuses(latch_res *res, void *data)
{
    (void)data;
    MARK(L_FIRST);
    latch_res_send_status(res, 429);
}

static void ban_passes(latch_res *res, void *data)
{
    (void)data;
    MARK(L_SECOND);
    latch_next(latch_res_req(res));
    latch_res_release(res);
}

static int two_checks_mw(latch_req *req, latch_res *res, void *data)
{
    (void)data;
    if (latch_set_timeout(res, 1, limit_refuses, NULL) == NULL ||
        post_after(res, 30, ban_passes) != 0)
        return latch_fail(req, 500, "no timer");
    return LATCH_PENDING;
}

/* A middleware that starts a lookup and returns LATCH_NEXT at once (it
 * should have returned LATCH_PENDING); the lookup's callback resumes. */
static void cache_cb(latch_res *res, void *data)
{
    (void)data;
    MARK(L_SECOND);
    latch_next(latch_res_req(res));
    latch_res_release(res);
}

static int fire_and_forget_mw(latch_req *req, latch_res *res, void *data)
{
    (void)data;
    if (post_after(res, 30, cache_cb) != 0)
        return latch_fail(req, 500, "no timer");
    return LATCH_NEXT;
}

/* A database callback that fires after the request timeout answered. */
static void db_done(latch_res *res, void *data)
{
    (void)data;
    MARK(L_SECOND);
    latch_next(latch_res_req(res));
    latch_res_release(res);
}

static int slow_auth_mw(latch_req *req, latch_res *res, void *data)
{
    (void)data;
    latch_req_set_timeout(req, 30, 0);
    /* 1 s: at 120 ms a loaded machine ran the 30 ms timer after it. */
    if (post_after(res, 1000, db_done) != 0)
        return latch_fail(req, 500, "no thread");
    return LATCH_PENDING;
}

/* ------------------------------------------------------------------ */
/* 7. Returning without answering; LATCH_NEXT after answering            */
/* ------------------------------------------------------------------ */

static int silent(latch_req *req, latch_res *res, void *data)
{
    (void)req;
    (void)res;
    (void)data;
    return LATCH_DONE;
}

/* Prepares a success, then fails before answering. */
static int prepared_then_fails(latch_req *req, latch_res *res, void *data)
{
    (void)data;
    latch_res_set_header(res, "Location", "/users/7");
    latch_res_type(res, "application/x-ndjson");
    return latch_fail(req, 409, "conflict");
}

static int ok(latch_req *req, latch_res *res, void *data)
{
    (void)req;
    (void)data;
    latch_res_send(res, "ok", 2);
    return LATCH_DONE;
}

/* res.send(); next(); inside one middleware. */
static int send_then_next(latch_req *req, latch_res *res, void *data)
{
    (void)data;
    MARK(L_FIRST);
    latch_res_send(res, "sent", 4);
    MARK(L_SECOND);
    latch_next(req);
    return LATCH_DONE;
}

static int answers_and_continues(latch_req *req, latch_res *res, void *data)
{
    (void)req;
    (void)data;
    MARK(L_FIRST);
    latch_res_send(res, "answered", 8);
    return LATCH_NEXT;
}

/* ------------------------------------------------------------------ */
/* The server                                                           */
/* ------------------------------------------------------------------ */

static th_server srv;

static int setup(void **state)
{
    latch_app *app = latch_app_new();

    (void)state;
    assert_non_null(app);
    latch_app_on_violation(app, on_violation, NULL);
    assert_int_equal(latch_get(app, "/ok", ok, NULL), 0);
    assert_int_equal(latch_get(app, "/prepared", prepared_then_fails, NULL), 0);
    assert_int_equal(latch_get(app, "/no-return", no_return, NULL), 0);

    assert_int_equal(latch_use(app, "/twice", twice_mw, NULL), 0);
    assert_int_equal(latch_get(app, "/twice", count_and_send, NULL), 0);
    assert_int_equal(latch_use(app, "/sync-twice", sync_twice_mw, NULL), 0);
    assert_int_equal(latch_get(app, "/sync-twice", count_and_send, NULL), 0);
    assert_int_equal(latch_use(app, "/twice-async", twice_mw, NULL), 0);
    assert_int_equal(latch_use(app, "/double-next", double_next_mw, NULL), 0);
    assert_int_equal(latch_get(app, "/double-next", count_and_send, NULL), 0);
    assert_int_equal(latch_use(app, "/sync-timing", sync_timing_mw, NULL), 0);
    assert_int_equal(latch_use(app, "/next-fail", next_then_fail_mw, NULL), 0);
    assert_int_equal(latch_get(app, "/next-fail", async_route, NULL), 0);
    assert_int_equal(latch_get(app, "/sync-timing", count_and_send, NULL), 0);
    assert_int_equal(latch_get(app, "/twice-async", async_route, NULL), 0);

    assert_int_equal(latch_get(app, "/respond-fail", respond_and_fail, NULL),
                     0);
    assert_int_equal(
        latch_get(app, "/careless/complete", respond_and_fail, NULL), 0);
    assert_int_equal(
        latch_get(app, "/careless/partial", partial_then_fail, NULL), 0);
    assert_int_equal(latch_get(app, "/partial", partial_then_fail, NULL), 0);

    assert_int_equal(latch_use(app, "/timing", timing_mw, NULL), 0);
    assert_int_equal(latch_get(app, "/timing", count_and_send, NULL), 0);

    assert_int_equal(latch_use(app, "/two-checks", two_checks_mw, NULL), 0);
    assert_int_equal(latch_get(app, "/two-checks", count_and_send, NULL), 0);
    assert_int_equal(latch_use(app, "/forget", fire_and_forget_mw, NULL), 0);
    assert_int_equal(latch_get(app, "/forget", count_and_send, NULL), 0);
    assert_int_equal(latch_use(app, "/slow-auth", slow_auth_mw, NULL), 0);
    assert_int_equal(latch_get(app, "/slow-auth", count_and_send, NULL), 0);

    assert_int_equal(latch_use(app, "/send-next", send_then_next, NULL), 0);
    assert_int_equal(latch_get(app, "/send-next", count_and_send, NULL), 0);
    MARK(L_REG_SILENT);
    assert_int_equal(latch_get(app, "/silent", silent, NULL), 0);
    MARK(L_REG);
    assert_int_equal(latch_get(app, "/continues", answers_and_continues, NULL),
                     0);
    assert_int_equal(latch_get(app, "/continues", count_and_send, NULL), 0);

    assert_int_equal(latch_use_error(app, careless_errh, NULL), 0);
    assert_int_equal(latch_use_error(app, careful_errh, NULL), 0);
    th_server_start(&srv, app);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    th_server_stop(&srv);
    return 0;
}

static int before_each(void **state)
{
    (void)state;
    reset_reports();
    atomic_store(&route_runs, 0);
    atomic_store(&errh_runs, 0);
    atomic_store(&errh_saw_headers_sent, false);
    atomic_store(&call_rc, 0);
    return 0;
}

/*
 * Sends `GET path` and then `GET /silent-check` on one connection when
 * `keep` is true; asserts exactly one response to the first (status,
 * body), and that the connection then still serves (keep) or was closed.
 * Returns nothing; the caller checks the reports.
 */
static void exchange(const char *path, int status, const char *body,
                     const char *absent_header)
{
    char req[256];
    size_t len;
    char *raw;
    th_resp *r;

    snprintf(req, sizeof(req),
             "GET %s HTTP/1.1\r\nHost: x\r\n\r\n"
             "GET /ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
             path);
    raw = th_exchange(srv.port, req, strlen(req), 2, &len);
    r = th_expect_responses(raw, len, 2, NULL);
    assert_int_equal(r[0].status, status);
    assert_string_equal(r[0].body, body);
    if (absent_header != NULL)
        assert_null(strstr(r[0].head, absent_header));
    /* The next request on the connection is answered as usual. */
    assert_int_equal(r[1].status, 200);
    assert_string_equal(r[1].body, "ok");
    th_resp_free(r, 2);
    free(r);
    free(raw);
}

/* The report of index i, for a path. */
static report *find(int code, const char *path)
{
    for (int i = 0; i < nreps; i++)
        if (reps[i].code == code && strcmp(reps[i].path, path) == 0)
            return &reps[i];
    fail_msg("no %s report for %s (%d reports)", latch_err_name(code), path,
             nreps);
    return NULL;
}

/* ------------------------------------------------------------------ */
/* Tests                                                                */
/* ------------------------------------------------------------------ */

static void test_respond_without_return(void **state)
{
    report *r;

    (void)state;
    exchange("/no-return", 400, "{\"error\":\"name is required\"}", NULL);
    /* The late latch_res_status is refused as well: two reports, both
     * pointing at the first json. */
    assert_int_equal(wait_reports(2), 2);
    r = find(LATCH_ERR_HTTP_HEADERS_SENT, "/no-return");
    assert_int_equal(atomic_load(&call_rc), LATCH_ERR_HTTP_HEADERS_SENT);
    assert_int_equal(reps[1].code, LATCH_ERR_HTTP_HEADERS_SENT);
    assert_string_equal(reps[1].call, "latch_res_json");
    assert_int_equal(reps[1].at_line, atomic_load(&lines[L_SECOND]));
    assert_string_equal(reps[1].sealed_call, "latch_res_json");
    assert_int_equal(reps[1].sealed_line, atomic_load(&lines[L_FIRST]));
    assert_string_equal(r->call, "latch_res_status");
    assert_int_equal(r->sealed_line, atomic_load(&lines[L_FIRST]));
}

static void test_next_twice_in_middleware(void **state)
{
    report *r;

    (void)state;
    exchange("/twice", 200, "route", NULL);
    assert_int_equal(atomic_load(&route_runs), 1);
    assert_int_equal(wait_reports(1), 1);
    r = find(LATCH_ERR_NEXT_TWICE, "/twice");
    assert_string_equal(r->call, "latch_next");
    assert_int_equal(r->at_line, atomic_load(&lines[L_SECOND]));
    assert_string_equal(r->prior_call, "latch_next");
    assert_int_equal(r->prior_line, atomic_load(&lines[L_NEXT1]));
    /* The route had answered in between: the report says where. */
    assert_string_equal(r->sealed_call, "latch_res_send");
    assert_int_equal(r->sealed_line, atomic_load(&lines[L_FIRST]));
}

static void test_sync_next_and_return_next(void **state)
{
    report *r;

    (void)state;
    exchange("/sync-twice", 200, "route", NULL);
    assert_int_equal(atomic_load(&route_runs), 1);
    assert_int_equal(wait_reports(1), 1);
    r = find(LATCH_ERR_NEXT_TWICE, "/sync-twice");
    /* The return value is the second continuation: placed at the
     * handler, after the latch_next inside it. */
    assert_string_equal(r->call, "LATCH_NEXT");
    assert_string_equal(r->at_func, "sync_twice_mw");
    assert_string_equal(r->prior_call, "latch_next");
    assert_int_equal(r->prior_line, atomic_load(&lines[L_NEXT1]));
    assert_string_equal(r->sealed_call, "latch_res_send");
    assert_int_equal(r->sealed_line, atomic_load(&lines[L_FIRST]));
}

static void test_sync_next_twice(void **state)
{
    report *r;

    (void)state;
    exchange("/double-next", 200, "route", NULL);
    assert_int_equal(atomic_load(&route_runs), 1);
    assert_int_equal(wait_reports(1), 1);
    r = find(LATCH_ERR_NEXT_TWICE, "/double-next");
    assert_string_equal(r->call, "latch_next");
    assert_int_equal(r->at_line, atomic_load(&lines[L_SECOND]));
    assert_string_equal(r->prior_call, "latch_next");
    assert_int_equal(r->prior_line, atomic_load(&lines[L_NEXT1]));
}

static void test_fail_after_sync_next(void **state)
{
    report *r;

    (void)state;
    /* The error is refused: the route, still working, answers once. */
    exchange("/next-fail", 200, "late route", NULL);
    assert_int_equal(atomic_load(&route_runs), 1);
    assert_int_equal(wait_reports(1), 1);
    r = find(LATCH_ERR_NEXT_TWICE, "/next-fail");
    assert_string_equal(r->call, "latch_fail");
    assert_int_equal(r->at_line, atomic_load(&lines[L_FAIL]));
    assert_string_equal(r->prior_call, "latch_next");
    assert_int_equal(r->prior_line, atomic_load(&lines[L_NEXT1]));
    assert_int_equal(atomic_load(&errh_runs), 0);
}

static void test_sync_header_after_next(void **state)
{
    report *r;

    (void)state;
    exchange("/sync-timing", 200, "route", "X-Response-Time");
    assert_int_equal(atomic_load(&route_runs), 1);
    assert_int_equal(wait_reports(1), 1);
    assert_int_equal(atomic_load(&call_rc), LATCH_ERR_HTTP_HEADERS_SENT);
    r = find(LATCH_ERR_HTTP_HEADERS_SENT, "/sync-timing");
    assert_string_equal(r->call, "latch_res_set_header");
    assert_int_equal(r->at_line, atomic_load(&lines[L_SECOND]));
    assert_string_equal(r->sealed_call, "latch_res_send");
    assert_int_equal(r->sealed_line, atomic_load(&lines[L_FIRST]));
}

static void test_next_twice_route_answers_later(void **state)
{
    report *r;

    (void)state;
    /* Express sends a 404 here and crashes on the late send; latch sends
     * the route's answer, once. */
    exchange("/twice-async", 200, "late route", NULL);
    assert_int_equal(atomic_load(&route_runs), 1);
    assert_int_equal(wait_reports(1), 1);
    r = find(LATCH_ERR_NEXT_TWICE, "/twice-async");
    assert_int_equal(r->at_line, atomic_load(&lines[L_SECOND]));
    assert_int_equal(r->prior_line, atomic_load(&lines[L_NEXT1]));
    assert_string_equal(r->sealed_call, "");
}

static void test_respond_and_fail(void **state)
{
    report *r;

    (void)state;
    exchange("/respond-fail", 200, "saved", NULL);
    assert_int_equal(wait_reports(1), 1);
    r = find(LATCH_ERR_NEXT_AFTER_RESPONSE, "/respond-fail");
    assert_string_equal(r->call, "latch_fail");
    assert_int_equal(r->at_line, atomic_load(&lines[L_FAIL]));
    assert_string_equal(r->sealed_call, "latch_res_send");
    assert_int_equal(r->sealed_line, atomic_load(&lines[L_FIRST]));
    /* The error handlers ran and saw the headers sent. */
    assert_int_equal(atomic_load(&errh_runs), 1);
    assert_true(atomic_load(&errh_saw_headers_sent));
}

static void test_error_handler_responds_after_headers(void **state)
{
    report *r;
    int n;

    (void)state;
    exchange("/careless/complete", 200, "saved", NULL);
    n = wait_reports(3);
    assert_int_equal(n, 3);
    assert_int_equal(atomic_load(&errh_runs), 1);
    assert_true(atomic_load(&errh_saw_headers_sent));
    assert_int_equal(atomic_load(&call_rc), LATCH_ERR_HTTP_HEADERS_SENT);
    for (int i = 0; i < n; i++) {
        if (reps[i].code != LATCH_ERR_HTTP_HEADERS_SENT)
            continue;
        r = &reps[i];
        assert_int_equal(r->at_line, strcmp(r->call, "latch_res_status") == 0
                                         ? atomic_load(&lines[L_ERRH_STATUS])
                                         : atomic_load(&lines[L_ERRH_JSON]));
        assert_string_equal(r->sealed_call, "latch_res_send");
        assert_int_equal(r->sealed_line, atomic_load(&lines[L_FIRST]));
    }
    r = find(LATCH_ERR_NEXT_AFTER_RESPONSE, "/careless/complete");
    assert_int_equal(r->at_line, atomic_load(&lines[L_FAIL]));
}

/* A response cut short by an error: the careless handler's answer is
 * refused, the body stays visibly truncated and the connection closes. */
static void test_error_handler_after_partial_body(void **state)
{
    static const char req[] =
        "GET /careless/partial HTTP/1.1\r\nHost: x\r\n\r\n";
    const char *err = NULL;
    th_resp r[2];
    size_t len;
    char *raw;
    report *rp;

    (void)state;
    raw = th_exchange(srv.port, req, sizeof(req) - 1, 2, &len);
    /* One head, "partial" in one chunk, no last chunk, then EOF. */
    assert_int_equal(th_wire_parse(raw, len, NULL, r, 2, true, &err), -1);
    assert_non_null(strstr(raw, "HTTP/1.1 200 OK\r\n"));
    assert_non_null(strstr(raw, "\r\n\r\n7\r\npartial\r\n"));
    assert_null(strstr(raw, "0\r\n\r\n"));
    assert_null(strstr(raw, "internal"));
    assert_null(strstr(strstr(raw, "\r\n\r\n"), "HTTP/1.1"));
    assert_int_equal(th_last_end(), TH_EOF);
    free(raw);
    assert_int_equal(wait_reports(3), 3);
    rp = find(LATCH_ERR_HTTP_HEADERS_SENT, "/careless/partial");
    assert_string_equal(rp->sealed_call, "latch_res_write");
    assert_int_equal(rp->sealed_line, atomic_load(&lines[L_FIRST]));
    /* It returned LATCH_DONE with the body unfinished: named, and cut. */
    rp = find(LATCH_ERR_NO_RESPONSE, "/careless/partial");
    assert_string_equal(rp->at_func, "careless_errh");
    /* Failing mid-body is how a handler says "incomplete": not a report. */
    for (int i = 0; i < nreps; i++)
        assert_int_not_equal(reps[i].code, LATCH_ERR_NEXT_AFTER_RESPONSE);
}

/* The same failure with a careful error handler: no report at all. */
static void test_fail_mid_body_is_not_a_violation(void **state)
{
    static const char req[] = "GET /partial HTTP/1.1\r\nHost: x\r\n\r\n";
    size_t len;
    char *raw;

    (void)state;
    raw = th_exchange(srv.port, req, sizeof(req) - 1, 2, &len);
    assert_non_null(strstr(raw, "\r\n\r\n7\r\npartial\r\n"));
    assert_null(strstr(raw, "0\r\n\r\n"));
    assert_int_equal(th_last_end(), TH_EOF);
    free(raw);
    assert_int_equal(atomic_load(&errh_runs), 1);
    assert_true(atomic_load(&errh_saw_headers_sent));
    assert_int_equal(wait_reports(0), 0);
}

static void test_header_after_next(void **state)
{
    report *r;

    (void)state;
    exchange("/timing", 200, "route", "X-Response-Time");
    assert_int_equal(wait_reports(1), 1);
    assert_int_equal(atomic_load(&call_rc), LATCH_ERR_HTTP_HEADERS_SENT);
    r = find(LATCH_ERR_HTTP_HEADERS_SENT, "/timing");
    assert_string_equal(r->call, "latch_res_set_header");
    assert_int_equal(r->at_line, atomic_load(&lines[L_SECOND]));
    assert_string_equal(r->sealed_call, "latch_res_send");
    assert_int_equal(r->sealed_line, atomic_load(&lines[L_FIRST]));
}

static void test_async_middleware_after_other_answered(void **state)
{
    report *r;

    (void)state;
    exchange("/two-checks", 429, "Too Many Requests", NULL);
    assert_int_equal(wait_reports(1), 1);
    assert_int_equal(atomic_load(&route_runs), 0);
    r = find(LATCH_ERR_NEXT_AFTER_RESPONSE, "/two-checks");
    assert_string_equal(r->call, "latch_next");
    assert_int_equal(r->at_line, atomic_load(&lines[L_SECOND]));
    assert_string_equal(r->sealed_call, "latch_res_send_status");
    assert_int_equal(r->sealed_line, atomic_load(&lines[L_FIRST]));
}

static void test_middleware_resumes_after_returning_next(void **state)
{
    report *r;

    (void)state;
    exchange("/forget", 200, "route", NULL);
    assert_int_equal(wait_reports(1), 1);
    assert_int_equal(atomic_load(&route_runs), 1);
    r = find(LATCH_ERR_NEXT_AFTER_RESPONSE, "/forget");
    assert_int_equal(r->at_line, atomic_load(&lines[L_SECOND]));
    assert_string_equal(r->sealed_call, "latch_res_send");
    assert_int_equal(r->sealed_line, atomic_load(&lines[L_FIRST]));
}

static void test_async_middleware_after_timeout(void **state)
{
    static const char req[] =
        "GET /slow-auth HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    size_t len;
    char *raw;
    th_resp *r;
    report *rp;

    (void)state;
    raw = th_exchange(srv.port, req, sizeof(req) - 1, 1, &len);
    r = th_expect_responses(raw, len, 1, NULL);
    assert_int_equal(r[0].status, 503);
    th_resp_free(r, 1);
    free(r);
    free(raw);
    /* The database answers 1 s in, long after the 503. */
    assert_int_equal(wait_reports(1), 1);
    assert_int_equal(atomic_load(&route_runs), 0);
    rp = find(LATCH_ERR_NEXT_AFTER_RESPONSE, "/slow-auth");
    assert_string_equal(rp->call, "latch_next");
    assert_int_equal(rp->at_line, atomic_load(&lines[L_SECOND]));
    assert_string_equal(rp->sealed_call, "request timeout");
}

static void test_no_response_names_the_handler(void **state)
{
    report *r;

    (void)state;
    exchange("/silent", 500, "Internal Server Error\n", NULL);
    assert_int_equal(wait_reports(1), 1);
    r = find(LATCH_ERR_NO_RESPONSE, "/silent");
    assert_string_equal(r->call, "LATCH_DONE");
    assert_string_equal(r->at_func, "silent");
    assert_int_equal(r->at_line, atomic_load(&lines[L_REG_SILENT]));
}

static void test_next_after_answer_names_the_handler(void **state)
{
    report *r;

    (void)state;
    exchange("/continues", 200, "answered", NULL);
    assert_int_equal(wait_reports(1), 1);
    assert_int_equal(atomic_load(&route_runs), 0);
    r = &reps[0];
    assert_int_equal(r->code, LATCH_ERR_NEXT_AFTER_RESPONSE);
    assert_string_equal(r->call, "LATCH_NEXT");
    assert_string_equal(r->at_func, "answers_and_continues");
    assert_int_equal(r->at_line, atomic_load(&lines[L_REG]));
    assert_string_equal(r->sealed_call, "latch_res_send");
    assert_int_equal(r->sealed_line, atomic_load(&lines[L_FIRST]));
}

static void test_sync_next_after_send(void **state)
{
    report *r;

    (void)state;
    exchange("/send-next", 200, "sent", NULL);
    assert_int_equal(atomic_load(&route_runs), 0);
    assert_int_equal(wait_reports(1), 1);
    r = find(LATCH_ERR_NEXT_AFTER_RESPONSE, "/send-next");
    assert_string_equal(r->call, "latch_next");
    assert_int_equal(r->at_line, atomic_load(&lines[L_SECOND]));
    assert_string_equal(r->sealed_call, "latch_res_send");
    assert_int_equal(r->sealed_line, atomic_load(&lines[L_FIRST]));
}

static void test_error_handler_clears_headers(void **state)
{
    static const char req[] = "GET /prepared HTTP/1.1\r\nHost: x\r\n"
                              "Connection: close\r\n\r\n";
    size_t len;
    char *raw;
    th_resp *r;

    (void)state;
    raw = th_exchange(srv.port, req, sizeof(req) - 1, 1, &len);
    r = th_expect_responses(raw, len, 1, NULL);
    assert_int_equal(r[0].status, 409);
    assert_string_equal(r[0].body, "{\"error\":\"conflict\"}");
    assert_null(strstr(r[0].head, "Location"));
    assert_null(strstr(r[0].head, "ndjson"));
    assert_non_null(strstr(r[0].head, "Content-Type: application/json"));
    th_resp_free(r, 1);
    free(r);
    free(raw);
    assert_int_equal(wait_reports(0), 0);
}

int main(void)
{
#define T(f) cmocka_unit_test_setup(f, before_each)
    const struct CMUnitTest tests[] = {
        T(test_respond_without_return),
        T(test_next_twice_in_middleware),
        T(test_sync_next_and_return_next),
        T(test_sync_next_twice),
        T(test_sync_header_after_next),
        T(test_fail_after_sync_next),
        T(test_next_twice_route_answers_later),
        T(test_respond_and_fail),
        T(test_error_handler_responds_after_headers),
        T(test_error_handler_after_partial_body),
        T(test_fail_mid_body_is_not_a_violation),
        T(test_header_after_next),
        T(test_async_middleware_after_other_answered),
        T(test_middleware_resumes_after_returning_next),
        T(test_async_middleware_after_timeout),
        T(test_no_response_names_the_handler),
        T(test_next_after_answer_names_the_handler),
        T(test_error_handler_clears_headers),
        T(test_sync_next_after_send),
    };
#undef T
    return cmocka_run_group_tests(tests, setup, teardown);
}
