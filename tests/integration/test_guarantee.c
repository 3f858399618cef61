/*
 * test_guarantee.c - who may act on a response, as a user breaks it
 * (issue 11): each shape checked for exactly one response on the wire and
 * the report with its places.
 *
 *  - over-release: latch_res_release on a reference never taken, from a
 *    timer on a pipelined connection, and from another thread: refused
 *    and reported; the pool stays whole, nothing leaks
 *  - backpressure: write returned 0, on_drain registered, LATCH_DONE: the
 *    whole body goes out, no false ERR_NO_RESPONSE
 *  - a forgotten response in an app with a request timeout: the 500 and
 *    ERR_NO_RESPONSE at once, not the timeout's 503
 *  - a stray latch_next from an earlier middleware (twice in its body,
 *    once in its body and once from its timer, LATCH_NEXT and its timer,
 *    its timer after the async auth returned LATCH_PENDING, an error
 *    handler's timer): never resumes the async auth's pending step;
 *    ERR_NEXT_TWICE with both places
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
    char message[256];
    char at_func[64];
    int at_line;
    char sealed_call[64];
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
        report *r = &reps[nreps];
        r->code = v->code;
        copy(r->call, sizeof(r->call), v->call);
        copy(r->message, sizeof(r->message), v->message);
        copy(r->at_func, sizeof(r->at_func), v->at.func);
        r->at_line = v->at.line;
        copy(r->sealed_call, sizeof(r->sealed_call), v->sealed_call);
        copy(r->prior_call, sizeof(r->prior_call), v->prior_call);
        r->prior_line = v->prior_at.line;
        copy(r->path, sizeof(r->path), v->path);
    }
    nreps++;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
}

/* Waits until n reports arrived (or 3 s), then 100 ms more so that a
 * stray one shows; returns the count. */
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

static report *find(int code)
{
    for (int i = 0; i < nreps && i < 32; i++)
        if (reps[i].code == code)
            return &reps[i];
    fail_msg("no %s report (%d reports)", latch_err_name(code), nreps);
    return NULL;
}

/* ------------------------------------------------------------------ */
/* Lines the handlers record                                            */
/* ------------------------------------------------------------------ */

enum { L_FIRST, L_SECOND, L_RELEASE, L_N };
static _Atomic int lines[L_N];
static _Atomic int route_runs;
static _Atomic int auth_runs;
static _Atomic int thread_done;

#define MARK(k) atomic_store(&lines[k], __LINE__ + 1)

/* ------------------------------------------------------------------ */
/* Over-release                                                         */
/* ------------------------------------------------------------------ */

/* Copied from a latch_res_post example: the callback "gives back" a
 * reference the handler never took. */
static void answer_and_release(latch_res *res, void *data)
{
    (void)data;
    latch_res_send(res, "late", 4);
    MARK(L_RELEASE);
    latch_res_release(res);
}

static int over_release(latch_req *req, latch_res *res, void *data)
{
    (void)data;
    if (latch_set_timeout(res, 5, answer_and_release, NULL) == NULL)
        return latch_fail(req, 500, "no timer");
    return LATCH_DONE;
}

/* A thread that answers through latch_res_post and releases from the
 * thread itself, after the post (the wrong thread). */
static void post_send(latch_res *res, void *data)
{
    (void)data;
    latch_res_send(res, "posted", 6);
}

static void *release_thread(void *arg)
{
    latch_res *res = arg;

    if (latch_res_post(res, post_send, NULL) != 0)
        abort();
    MARK(L_RELEASE);
    latch_res_release(res);
    atomic_store(&thread_done, 1);
    return NULL;
}

static int thread_release(latch_req *req, latch_res *res, void *data)
{
    pthread_t t;

    (void)data;
    latch_res_retain(res);
    if (pthread_create(&t, NULL, release_thread, res) != 0) {
        latch_res_release(res);
        return latch_fail(req, 500, "no thread");
    }
    pthread_detach(t);
    return LATCH_DONE;
}

/* ------------------------------------------------------------------ */
/* Backpressure, and the request timeout as a non-owner                 */
/* ------------------------------------------------------------------ */

#define BIG_CHUNK (256 * 1024)
#define BIG_TOTAL (4 * BIG_CHUNK)
static char big[BIG_CHUNK];
static _Atomic int drains;

/* Writes chunks until write returns 0 or the body is complete. */
static void pump(latch_res *res, void *data)
{
    size_t *sent = data;
    int r = 1;

    atomic_fetch_add(&drains, 1);
    while (r == 1 && *sent < BIG_TOTAL) {
        r = latch_res_write(res, big, BIG_CHUNK);
        *sent += BIG_CHUNK;
    }
    if (r < 0)
        return;
    if (*sent >= BIG_TOTAL) {
        latch_res_end(res, NULL, 0);
        free(sent);
        return;
    }
    latch_res_on_drain(res, pump, sent);
}

static int backpressure(latch_req *req, latch_res *res, void *data)
{
    size_t *sent = calloc(1, sizeof(*sent));
    int r;

    (void)data;
    if (sent == NULL)
        return latch_fail(req, 500, "no memory");
    latch_res_set_header(res, "Content-Type", "application/octet-stream");
    r = latch_res_write(res, big, BIG_CHUNK);
    *sent = BIG_CHUNK;
    assert_int_equal(r, 0); /* 256 KiB is above the high-water mark */
    latch_res_on_drain(res, pump, sent);
    return LATCH_DONE;
}

static int forgets_with_timeout(latch_req *req, latch_res *res, void *data)
{
    (void)res;
    (void)data;
    latch_req_set_timeout(req, 10000, 0);
    return LATCH_DONE;
}

/* ------------------------------------------------------------------ */
/* A stray latch_next and the async auth check after it                 */
/* ------------------------------------------------------------------ */

/* The auth check: asynchronous (a token lookup on a timer), refuses an
 * unauthenticated client with 401, else continues. */
static void auth_done(latch_res *res, void *data)
{
    latch_req *req = latch_res_req(res);

    (void)data;
    if (latch_req_header(req, "Authorization") == NULL) {
        latch_res_send_status(res, 401);
        return;
    }
    latch_next(req);
}

static int auth(latch_req *req, latch_res *res, void *data)
{
    (void)data;
    atomic_fetch_add(&auth_runs, 1);
    if (latch_set_timeout(
            res, strncmp(latch_req_path(req), "/a5", 3) == 0 ? 300 : 40,
            auth_done, NULL) == NULL)
        return latch_fail(req, 500, "no timer");
    return LATCH_PENDING;
}

static int secret(latch_req *req, latch_res *res, void *data)
{
    (void)req;
    (void)data;
    atomic_fetch_add(&route_runs, 1);
    latch_res_send(res, "secret", 6);
    return LATCH_DONE;
}

/* Express's `next(); next();` (a missing return) in front of the auth. */
static int next_twice_body(latch_req *req, latch_res *res, void *data)
{
    (void)res;
    (void)data;
    MARK(L_FIRST);
    latch_next(req);
    MARK(L_SECOND);
    latch_next(req);
    return LATCH_DONE;
}

static void stray_next(latch_res *res, void *data)
{
    (void)data;
    MARK(L_SECOND);
    latch_next(latch_res_req(res));
}

/* next() in the body, and again from its own timer (a "make sure" path). */
static int next_body_and_timer(latch_req *req, latch_res *res, void *data)
{
    (void)data;
    if (latch_set_timeout(res, 5, stray_next, NULL) == NULL)
        return latch_fail(req, 500, "no timer");
    MARK(L_FIRST);
    latch_next(req);
    return LATCH_DONE;
}

/* LATCH_NEXT returned, and latch_next from its timer as well. */
static int return_next_and_timer(latch_req *req, latch_res *res, void *data)
{
    (void)data;
    if (latch_set_timeout(res, 5, stray_next, NULL) == NULL)
        return latch_fail(req, 500, "no timer");
    return LATCH_NEXT;
}

/* An async middleware whose timer continues twice: the second call comes
 * after the auth returned LATCH_PENDING. */
static void next_then_again(latch_res *res, void *data)
{
    latch_req *req = latch_res_req(res);

    (void)data;
    MARK(L_FIRST);
    latch_next(req);
    MARK(L_SECOND);
    latch_next(req);
}

static int async_twice(latch_req *req, latch_res *res, void *data)
{
    (void)data;
    if (latch_set_timeout(res, 1, next_then_again, NULL) == NULL)
        return latch_fail(req, 500, "no timer");
    return LATCH_PENDING;
}

/* A driver's thread (outside latch) that calls back through
 * latch_res_post: the "make sure" second next() of the middleware arrives
 * from there, after the auth returned LATCH_PENDING. */
static void posted_stray(latch_res *res, void *data)
{
    (void)data;
    MARK(L_SECOND);
    latch_next(latch_res_req(res));
    latch_res_release(res);
}

static void *stray_thread(void *arg)
{
    struct timespec ts = {0, 1000000L};
    int i;

    /* The driver answers once the auth is waiting (it waits 300 ms). */
    for (i = 0; i < 3000 && atomic_load(&auth_runs) == 0; i++)
        nanosleep(&ts, NULL);
    if (latch_res_post(arg, posted_stray, NULL) != 0)
        abort();
    return NULL;
}

static int next_body_and_thread(latch_req *req, latch_res *res, void *data)
{
    pthread_t t;

    (void)data;
    latch_res_retain(res);
    if (pthread_create(&t, NULL, stray_thread, res) != 0) {
        latch_res_release(res);
        return latch_fail(req, 500, "no thread");
    }
    pthread_detach(t);
    MARK(L_FIRST);
    latch_next(req);
    return LATCH_DONE;
}

/* ------------------------------------------------------------------ */
/* A pointer kept without a reference                                   */
/* ------------------------------------------------------------------ */

/* What a Node developer does: keep `res` (and `req`) for later, in a
 * global, without latch_res_retain. */
static latch_res *kept_res;
static latch_req *kept_req;
static _Atomic int stale_rc[4];
static _Atomic int stale_posted;

static void stale_post_fn(latch_res *res, void *data)
{
    (void)data;
    atomic_store(&stale_posted, 1);
    latch_res_send(res, "POSTED", 6);
}

static int keeps(latch_req *req, latch_res *res, void *data)
{
    (void)data;
    kept_res = res;
    kept_req = req;
    latch_res_send(res, "one", 3);
    return LATCH_DONE;
}

/* The next request on the same connection: its response is the same
 * pooled object. Every stale call must be refused, none delivered. */
static int uses_stale(latch_req *req, latch_res *res, void *data)
{
    (void)req;
    (void)data;
    MARK(L_SECOND);
    atomic_store(&stale_rc[0], latch_res_send(kept_res, "STALE", 5));
    atomic_store(&stale_rc[1], latch_res_set_header(kept_res, "X-Stale", "1"));
    atomic_store(&stale_rc[2], latch_res_post(kept_res, stale_post_fn, NULL));
    atomic_store(&stale_rc[3],
                 latch_res_send(latch_req_res(kept_req), "STALE", 5) == 0);
    latch_next(kept_req);
    latch_res_send(res, "two", 3);
    return LATCH_DONE;
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
    memset(big, 'b', sizeof(big));
    latch_app_on_violation(app, on_violation, NULL);
    assert_int_equal(latch_get(app, "/over-release", over_release, NULL), 0);
    assert_int_equal(latch_get(app, "/thread-release", thread_release, NULL),
                     0);
    assert_int_equal(latch_get(app, "/backpressure", backpressure, NULL), 0);
    assert_int_equal(latch_get(app, "/forgets", forgets_with_timeout, NULL), 0);
    assert_int_equal(latch_get(app, "/ok", secret, NULL), 0);
    assert_int_equal(latch_get(app, "/keep", keeps, NULL), 0);
    assert_int_equal(latch_get(app, "/stale", uses_stale, NULL), 0);

    assert_int_equal(latch_use(app, "/a1", next_twice_body, NULL), 0);
    assert_int_equal(latch_use(app, "/a2", next_body_and_timer, NULL), 0);
    assert_int_equal(latch_use(app, "/a3", return_next_and_timer, NULL), 0);
    assert_int_equal(latch_use(app, "/a4", async_twice, NULL), 0);
    assert_int_equal(latch_use(app, "/a5", next_body_and_thread, NULL), 0);
    assert_int_equal(latch_use(app, "/", auth, NULL), 0);
    assert_int_equal(latch_get(app, "/a1", secret, NULL), 0);
    assert_int_equal(latch_get(app, "/a2", secret, NULL), 0);
    assert_int_equal(latch_get(app, "/a3", secret, NULL), 0);
    assert_int_equal(latch_get(app, "/a4", secret, NULL), 0);
    assert_int_equal(latch_get(app, "/a5", secret, NULL), 0);
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
    pthread_mutex_lock(&mu);
    nreps = 0;
    memset(reps, 0, sizeof(reps));
    pthread_mutex_unlock(&mu);
    atomic_store(&route_runs, 0);
    atomic_store(&auth_runs, 0);
    atomic_store(&thread_done, 0);
    atomic_store(&drains, 0);
    return 0;
}

/* GET path, then GET /ok on the same connection; returns the responses
 * (both asserted well-formed). */
static th_resp *two(const char *path, const char *extra)
{
    char req[512];
    size_t len;
    char *raw;
    th_resp *r;

    snprintf(req, sizeof(req),
             "GET %s HTTP/1.1\r\nHost: x\r\n%s\r\n"
             "GET /ok HTTP/1.1\r\nHost: x\r\nAuthorization: t\r\n"
             "Connection: close\r\n\r\n",
             path, extra ? extra : "");
    raw = th_exchange(srv.port, req, strlen(req), 2, &len);
    r = th_expect_responses(raw, len, 2, NULL);
    free(raw);
    return r;
}

/* ------------------------------------------------------------------ */
/* Tests                                                                */
/* ------------------------------------------------------------------ */

static void test_over_release_refused(void **state)
{
    th_resp *r;
    report *rp;

    (void)state;
    /* Pipelined: the over-released response is still queued on its
     * connection behind nothing, and the next one waits behind it. */
    r = two("/over-release", NULL);
    assert_int_equal(r[0].status, 200);
    assert_string_equal(r[0].body, "late");
    assert_int_equal(r[1].status, 200);
    assert_string_equal(r[1].body, "secret");
    th_resp_free(r, 2);
    free(r);
    assert_int_equal(wait_reports(1), 1);
    rp = find(LATCH_ERR_STATE);
    assert_string_equal(rp->call, "latch_res_release");
    assert_int_equal(rp->at_line, atomic_load(&lines[L_RELEASE]));
    assert_string_equal(rp->at_func, "answer_and_release");
    /* The worker still serves. */
    th_expect_alive(srv.port, "/ok", "secret");
    r = two("/over-release", NULL);
    th_resp_free(r, 2);
    free(r);
}

static void test_release_from_thread(void **state)
{
    th_resp *r;
    report *rp;

    (void)state;
    r = two("/thread-release", NULL);
    assert_int_equal(r[0].status, 200);
    assert_string_equal(r[0].body, "posted");
    th_resp_free(r, 2);
    free(r);
    assert_int_equal(wait_reports(1), 1);
    rp = find(LATCH_ERR_WRONG_THREAD);
    assert_string_equal(rp->call, "latch_res_release");
    assert_int_equal(rp->at_line, atomic_load(&lines[L_RELEASE]));
    /* The reference itself is released on the loop: a leak would show
     * under LeakSanitizer when the server stops. */
}

static void test_backpressure_is_not_no_response(void **state)
{
    static const char req[] = "GET /backpressure HTTP/1.1\r\nHost: x\r\n"
                              "Connection: close\r\n\r\n";
    size_t len, want = BIG_TOTAL;
    th_resp *r;
    char *raw;
    int fd;

    (void)state;
    fd = th_connect(srv.port);
    th_send(fd, req, sizeof(req) - 1);
    raw = th_read(fd, &len, 10000, NULL, NULL);
    close(fd);
    r = th_expect_responses(raw, len, 1, NULL);
    assert_int_equal(r[0].status, 200);
    assert_int_equal(r[0].body_len, want);
    assert_true(atomic_load(&drains) >= 1);
    th_resp_free(r, 1);
    free(r);
    free(raw);
    assert_int_equal(wait_reports(0), 0);
}

static void test_forgotten_response_with_timeout(void **state)
{
    static const char req[] =
        "GET /forgets HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    int64_t t0 = th_now_ms();
    size_t len;
    char *raw;
    th_resp *r;
    report *rp;

    (void)state;
    raw = th_exchange(srv.port, req, sizeof(req) - 1, 1, &len);
    /* At once: the 10 s request timeout owns nothing. */
    assert_true(th_now_ms() - t0 < 5000);
    r = th_expect_responses(raw, len, 1, NULL);
    assert_int_equal(r[0].status, 500);
    th_resp_free(r, 1);
    free(r);
    free(raw);
    assert_int_equal(wait_reports(1), 1);
    rp = find(LATCH_ERR_NO_RESPONSE);
    assert_string_equal(rp->at_func, "forgets_with_timeout");
}

/* The auth skipped by a stray latch_next from the middleware before it:
 * the client without Authorization must get 401 and the route never
 * run; the stray call is reported with the call that moved the chain. */
static void expect_auth_holds(const char *path, const char *prior_call,
                              int prior_key)
{
    th_resp *r;
    report *rp;

    r = two(path, NULL);
    assert_int_equal(r[0].status, 401);
    assert_int_equal(r[1].status, 200);
    th_resp_free(r, 2);
    free(r);
    /* Only the second request's route ran. */
    assert_int_equal(atomic_load(&route_runs), 1);
    assert_int_equal(wait_reports(1), 1);
    rp = find(LATCH_ERR_NEXT_TWICE);
    assert_string_equal(rp->call, "latch_next");
    assert_int_equal(rp->at_line, atomic_load(&lines[L_SECOND]));
    assert_string_equal(rp->prior_call, prior_call);
    if (prior_key >= 0)
        assert_int_equal(rp->prior_line, atomic_load(&lines[prior_key]));
}

static void test_next_twice_in_body_skips_nothing(void **state)
{
    (void)state;
    expect_auth_holds("/a1", "latch_next", L_FIRST);
}

static void test_next_in_body_and_timer_skips_nothing(void **state)
{
    (void)state;
    expect_auth_holds("/a2", "latch_next", L_FIRST);
}

static void test_return_next_and_timer_skips_nothing(void **state)
{
    (void)state;
    expect_auth_holds("/a3", "LATCH_NEXT", -1);
}

static void test_async_next_twice_skips_nothing(void **state)
{
    (void)state;
    expect_auth_holds("/a4", "latch_next", L_FIRST);
}

static void test_next_from_thread_skips_nothing(void **state)
{
    (void)state;
    expect_auth_holds("/a5", "latch_next", L_FIRST);
}

/* One connection, one request after the other: the second request gets
 * the first one's pooled object. */
static void test_stale_pointer_never_reaches_next_request(void **state)
{
    static const char r1[] = "GET /keep HTTP/1.1\r\nHost: x\r\n\r\n";
    static const char r2[] =
        "GET /stale HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    int one = 1, fd;
    size_t len;
    char *raw;
    th_resp *r;
    report *rp;

    (void)state;
    fd = th_connect(srv.port);
    th_send(fd, r1, sizeof(r1) - 1);
    raw = th_read(fd, &len, 3000, th_until_responses, &one);
    r = th_expect_responses(raw, len, 1, NULL);
    assert_string_equal(r[0].body, "one");
    th_resp_free(r, 1);
    free(r);
    free(raw);
    th_send(fd, r2, sizeof(r2) - 1);
    raw = th_read(fd, &len, 3000, NULL, NULL);
    close(fd);
    r = th_expect_responses(raw, len, 1, NULL);
    assert_int_equal(r[0].status, 200);
    assert_string_equal(r[0].body, "two");
    assert_null(strstr(r[0].head, "X-Stale"));
    th_resp_free(r, 1);
    free(r);
    free(raw);
    assert_int_equal(atomic_load(&stale_rc[0]), LATCH_ERR_STREAM_DESTROYED);
    assert_int_equal(atomic_load(&stale_rc[1]), LATCH_ERR_STREAM_DESTROYED);
    assert_int_equal(atomic_load(&stale_rc[2]), LATCH_ERR_STREAM_DESTROYED);
    assert_int_equal(atomic_load(&stale_rc[3]), 0);
    assert_int_equal(atomic_load(&stale_posted), 0);
    /* send, set_header, post, req_res, latch_next: each reported. */
    assert_int_equal(wait_reports(5), 5);
    rp = find(LATCH_ERR_STREAM_DESTROYED);
    assert_string_equal(rp->call, "latch_res_send");
    assert_int_equal(rp->at_line, atomic_load(&lines[L_SECOND]));
    assert_non_null(strstr(rp->message, "without latch_res_retain"));
    for (int i = 0; i < 5; i++)
        assert_int_equal(reps[i].code, LATCH_ERR_STREAM_DESTROYED);
}

int main(void)
{
#define T(f) cmocka_unit_test_setup(f, before_each)
    const struct CMUnitTest tests[] = {
        T(test_over_release_refused),
        T(test_release_from_thread),
        T(test_backpressure_is_not_no_response),
        T(test_forgotten_response_with_timeout),
        T(test_next_twice_in_body_skips_nothing),
        T(test_next_in_body_and_timer_skips_nothing),
        T(test_return_next_and_timer_skips_nothing),
        T(test_async_next_twice_skips_nothing),
        T(test_next_from_thread_skips_nothing),
        T(test_stale_pointer_never_reaches_next_request),
    };
#undef T
    return cmocka_run_group_tests(tests, setup, teardown);
}
