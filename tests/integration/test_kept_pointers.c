/*
 * test_kept_pointers.c - what a program keeps past its request (issue 11,
 * the stale-pointer class beyond latch_res * / latch_req *): a JSON writer,
 * a timer and a join kept in a global after their request was over and
 * used while the next request runs on the same pooled object. Each use is
 * refused (or, for a timer, is the no-op clearTimeout is) and never
 * reaches the next request: its body is exactly what its handler wrote,
 * its timer still fires, its join completes with its own results.
 *
 * Also here: latch_fail after latch_next in a handler that then returns
 * LATCH_NEXT, a misuse whose report was lost (found by the fuzzer); and a
 * latch_res_post to a response kept without a reference, whose report
 * must name the caller and the request the handle belonged to.
 *
 * And handles that outlive more than their request: a response held
 * (retained, never released) into the app's next latch_run, whose start
 * frees the workers it pointed to, a join of such a response whose task
 * reports then, and a handle kept without a reference past
 * latch_app_free. Both are refused as stale handles, never followed
 * (ASan checks).
 *
 * One worker and one connection make the next request reuse the object
 * (and, for the timer and the join, memory) the first one had.
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
#include <unistd.h>

#include <cmocka.h>

static latch_json *kept_json;
static latch_timer *kept_timer;
static latch_join *kept_join;
static _Atomic int stale_rc = 12345;
static _Atomic int stale_rc2 = 12345;
static pthread_t thr;
static bool thr_started;

/* Two requests on one connection, one after the other; returns the
 * second's body (malloc'd). */
static char *second_body(int port, const char *a, const char *b)
{
    char req[256];
    size_t len = 0;
    int fd = th_connect(port), n = 1;
    char *out;
    th_resp *r;

    snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: t\r\n\r\n", a);
    th_send_str(fd, req);
    out = th_read(fd, &len, 5000, th_until_responses, &n);
    free(out);
    snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: t\r\n\r\n", b);
    th_send_str(fd, req);
    out = th_read(fd, &len, 5000, th_until_responses, &n);
    close(fd);
    r = th_expect_responses(out, len, 1, NULL);
    free(out);
    {
        char *body = strdup(r[0].body);
        th_resp_free(r, 1);
        free(r);
        return body;
    }
}

/* ------------------------------------------------------------------ */
/* A JSON writer                                                        */
/* ------------------------------------------------------------------ */

static int h_json_a(latch_req *req, latch_res *res, void *data)
{
    latch_json *j = latch_res_json_begin(res);

    (void)req;
    (void)data;
    kept_json = j; /* the bug: kept past the response */
    latch_json_object_begin(j);
    latch_json_key(j, "a");
    latch_json_int(j, 1);
    latch_json_object_end(j);
    latch_res_json_end(res);
    return LATCH_DONE;
}

static int h_json_b(latch_req *req, latch_res *res, void *data)
{
    latch_json *j = latch_res_json_begin(res);

    (void)req;
    (void)data;
    latch_json_object_begin(j);
    atomic_store(&stale_rc, latch_json_key(kept_json, "stale"));
    atomic_store(&stale_rc2, latch_json_int(kept_json, 99));
    latch_json_key(j, "b");
    latch_json_int(j, 2);
    latch_json_object_end(j);
    latch_res_json_end(res);
    return LATCH_DONE;
}

static void test_kept_json_writer(void **state)
{
    th_server s;
    th_violations v = {0};
    latch_app *app = latch_app_new();
    char *body;

    (void)state;
    th_record_violations(app, &v);
    assert_int_equal(latch_get(app, "/a", h_json_a, NULL), 0);
    assert_int_equal(latch_get(app, "/b", h_json_b, NULL), 0);
    th_server_start(&s, app);
    body = second_body(s.port, "/a", "/b");
    /* The next request's document is its own, whole. */
    assert_string_equal(body, "{\"b\":2}");
    free(body);
    assert_int_equal(atomic_load(&stale_rc), LATCH_ERR_STREAM_DESTROYED);
    assert_int_equal(atomic_load(&stale_rc2), LATCH_ERR_STREAM_DESTROYED);
    assert_true(th_violation_count(&v) >= 2);
    assert_int_equal(v.codes[0], LATCH_ERR_STREAM_DESTROYED);
    assert_int_equal(th_server_stop(&s), 0);
}

/* ------------------------------------------------------------------ */
/* A timer                                                              */
/* ------------------------------------------------------------------ */

static void never(latch_res *res, void *data)
{
    (void)res;
    (void)data;
    fail_msg("a timer of a finished request fired");
}

static int h_timer_a(latch_req *req, latch_res *res, void *data)
{
    (void)req;
    (void)data;
    kept_timer = latch_set_timeout(res, 60000, never, NULL);
    assert_non_null(kept_timer);
    latch_res_send(res, "a", 1); /* the timer goes with the response */
    return LATCH_DONE;
}

static void answer_b(latch_res *res, void *data)
{
    (void)data;
    latch_res_send(res, "b-timer", 7);
}

static int h_timer_b(latch_req *req, latch_res *res, void *data)
{
    (void)req;
    (void)data;
    /* Its own timer first (it may get the memory the first one had),
     * then the stale one is cleared: clearTimeout of a long gone timer. */
    assert_non_null(latch_set_timeout(res, 20, answer_b, NULL));
    atomic_store(&stale_rc, latch_clear_timeout(kept_timer));
    return LATCH_DONE; /* the timer owns the response */
}

static void test_kept_timer(void **state)
{
    th_server s;
    th_violations v = {0};
    latch_app *app = latch_app_new();
    char *body;

    (void)state;
    th_record_violations(app, &v);
    assert_int_equal(latch_get(app, "/a", h_timer_a, NULL), 0);
    assert_int_equal(latch_get(app, "/b", h_timer_b, NULL), 0);
    th_server_start(&s, app);
    body = second_body(s.port, "/a", "/b");
    assert_string_equal(body, "b-timer"); /* its timer was not cleared */
    free(body);
    assert_int_equal(atomic_load(&stale_rc), 0);
    assert_int_equal(th_violation_count(&v), 0);
    assert_int_equal(th_server_stop(&s), 0);
}

/* ------------------------------------------------------------------ */
/* A join                                                               */
/* ------------------------------------------------------------------ */

static void done_a(latch_res *res, int status, void *const *results, void *data)
{
    (void)status;
    (void)results;
    (void)data;
    latch_res_send(res, "a", 1);
}

static int h_join_a(latch_req *req, latch_res *res, void *data)
{
    (void)req;
    (void)data;
    kept_join = latch_join_new(res, 2, done_a, NULL);
    assert_non_null(kept_join);
    latch_join_resolve(kept_join, 0, NULL);
    latch_join_resolve(kept_join, 1, NULL); /* settled, then freed */
    return LATCH_DONE;
}

static void done_b(latch_res *res, int status, void *const *results, void *data)
{
    char out[64];

    (void)data;
    if (status != 0) {
        latch_res_send_status(res, 500);
        return;
    }
    snprintf(out, sizeof(out), "%s,%s", (const char *)results[0],
             (const char *)results[1]);
    latch_res_send(res, out, strlen(out));
}

/* A task's thread: first the stale join of the earlier request (a late
 * task of it), then the join it belongs to. */
static void *late_task(void *arg)
{
    latch_join *mine = arg;

    atomic_store(&stale_rc, latch_join_resolve(kept_join, 0, "stale"));
    atomic_store(&stale_rc2, latch_join_fail(kept_join, 1, -5));
    latch_join_resolve(mine, 0, "b0");
    latch_join_resolve(mine, 1, "b1");
    return NULL;
}

static int h_join_b(latch_req *req, latch_res *res, void *data)
{
    latch_join *j = latch_join_new(res, 2, done_b, NULL);

    (void)req;
    (void)data;
    assert_non_null(j);
    assert_int_equal(pthread_create(&thr, NULL, late_task, j), 0);
    thr_started = true;
    return LATCH_DONE; /* the join owns the response */
}

static void test_kept_join(void **state)
{
    th_server s;
    th_violations v = {0};
    latch_app *app = latch_app_new();
    char *body;

    (void)state;
    th_record_violations(app, &v);
    assert_int_equal(latch_get(app, "/a", h_join_a, NULL), 0);
    assert_int_equal(latch_get(app, "/b", h_join_b, NULL), 0);
    th_server_start(&s, app);
    body = second_body(s.port, "/a", "/b");
    if (thr_started)
        pthread_join(thr, NULL);
    thr_started = false;
    assert_string_equal(body, "b0,b1");
    free(body);
    assert_int_equal(atomic_load(&stale_rc), LATCH_ERR_STREAM_DESTROYED);
    assert_int_equal(atomic_load(&stale_rc2), LATCH_ERR_STREAM_DESTROYED);
    assert_false(latch_join_settled(kept_join) == false);
    assert_int_equal(th_violation_count(&v), 0);
    assert_int_equal(th_server_stop(&s), 0);
}

/* ------------------------------------------------------------------ */
/* A response held past latch_run                                       */
/* ------------------------------------------------------------------ */

static latch_res *_Atomic held; /* set on the server's thread */

static int h_hold(latch_req *req, latch_res *res, void *data)
{
    (void)req;
    (void)data;
    latch_res_retain(res); /* the bug: never answered, never released */
    held = res;
    return LATCH_DONE;
}

static void never_posted(latch_res *res, void *data)
{
    (void)res;
    (void)data;
    fail_msg("a function posted after the server stopped ran");
}

/*
 * Starts the app, sends `req` (whose handler holds its response in
 * `held`), waits for it to be held, then stops the server and waits for
 * latch_run to return, keeping the app. The drain cuts the response.
 */
static void run_until_held(th_server *s, latch_app *app, const char *req)
{
    int64_t end;
    size_t len;
    char *out;
    int fd;

    th_server_start(s, app);
    fd = th_connect(s->port);
    th_send_str(fd, req);
    end = th_now_ms() + 5000;
    while (atomic_load(&held) == NULL && th_now_ms() < end)
        usleep(1000);
    assert_non_null(atomic_load(&held));
    latch_stop(app);
    pthread_join(*(pthread_t *)s->thread, NULL);
    free(s->thread);
    out = th_read(fd, &len, 5000, NULL, NULL);
    free(out);
    close(fd);
}

/*
 * The program keeps a reference past the server's life and uses it from
 * its own thread after latch_run returned: a post is refused with
 * LATCH_ERR_STATE, every call refused, nothing touches freed memory (ASan
 * checks). Before, the workers were freed when latch_run returned.
 */
static void test_held_past_run(void **state)
{
    th_server s;
    th_violations v = {0};
    latch_app *app = latch_app_new();

    (void)state;
    th_record_violations(app, &v);
    assert_int_equal(latch_get(app, "/hold", h_hold, NULL), 0);
    assert_int_equal(latch_app_set_limit(app, LATCH_TIMEOUT_DRAIN, 100), 0);
    run_until_held(&s, app, "GET /hold HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_int_equal(latch_res_post(held, never_posted, NULL), LATCH_ERR_STATE);
    assert_true(latch_res_set_header(held, "X-Late", "1") < 0);
    assert_true(latch_res_end(held, "late", 4) < 0);
    latch_res_release(held);
    held = NULL;
    latch_app_free(app);
}

static int h_ok(latch_req *req, latch_res *res, void *data)
{
    (void)req;
    (void)data;
    return latch_res_send(res, "ok", 2);
}

/*
 * The same reference, still held when the program runs the app again:
 * that latch_run frees the workers of the first run, which the held
 * response points to. Every call through its handle is refused as stale
 * and reported (it followed the freed worker before), the second run
 * serves as usual, and after latch_app_free the handle is refused
 * without a report (there is no app to report to).
 */
static void test_held_into_the_next_run(void **state)
{
    static th_vlog v;
    th_vrec rec;
    th_server s;
    latch_app *app = latch_app_new();

    (void)state;
    th_record_violations_full(app, &v);
    assert_int_equal(latch_get(app, "/hold", h_hold, NULL), 0);
    assert_int_equal(latch_get(app, "/ok", h_ok, NULL), 0);
    assert_int_equal(latch_app_set_limit(app, LATCH_TIMEOUT_DRAIN, 100), 0);
    run_until_held(&s, app, "GET /hold HTTP/1.1\r\nHost: t\r\n\r\n");
    /* The second run; its first request is served before the old handle
     * is used, so that the run is surely under way. */
    th_server_start(&s, app);
    th_expect_alive(s.port, "/ok", "ok");
    assert_int_equal(th_vlog_count(&v), 0);
    assert_int_equal(latch_res_post(held, never_posted, NULL),
                     LATCH_ERR_STREAM_DESTROYED);
    assert_int_equal(latch_res_end(held, "late", 4),
                     LATCH_ERR_STREAM_DESTROYED);
    latch_res_release(held);
    assert_int_equal(th_vlog_count(&v), 3);
    for (int i = 0; i < 3; i++) {
        assert_true(th_vlog_get(&v, i, &rec));
        assert_int_equal(rec.code, LATCH_ERR_STREAM_DESTROYED);
        assert_non_null(strstr(rec.message, "after its server run was over"));
    }
    assert_string_equal(rec.call, "latch_res_release");
    th_expect_alive(s.port, "/ok", "ok");
    th_server_stop(&s); /* latch_app_free */
    assert_int_equal(latch_res_end(held, "later", 5),
                     LATCH_ERR_STREAM_DESTROYED);
    assert_int_equal(th_vlog_count(&v), 3);
    held = NULL;
}

/* A join of a response held past its run, its task still out when the
 * program runs the app again: the task's late report is refused as for
 * any stale join (it followed the join to the freed worker before). */
static latch_join *held_join;
static _Atomic int held_join_status = 1;

static void held_join_done(latch_res *res, int status, void *const *results,
                           void *data)
{
    (void)res;
    (void)results;
    (void)data;
    atomic_store(&held_join_status, status);
}

static int h_hold_join(latch_req *req, latch_res *res, void *data)
{
    (void)req;
    (void)data;
    if (held_join != NULL)
        return latch_res_send(res, "ok", 2);
    held_join = latch_join_new(res, 1, held_join_done, NULL);
    latch_res_retain(res); /* the bug: never released */
    held = res;
    return LATCH_DONE;
}

static void test_join_held_into_the_next_run(void **state)
{
    th_server s;
    latch_app *app = latch_app_new();

    (void)state;
    assert_int_equal(latch_get(app, "/join", h_hold_join, NULL), 0);
    assert_int_equal(latch_app_set_limit(app, LATCH_TIMEOUT_DRAIN, 100), 0);
    run_until_held(&s, app, "GET /join HTTP/1.1\r\nHost: t\r\n\r\n");
    /* The drain cut the response: the join completed, its task is out. */
    assert_int_equal(atomic_load(&held_join_status), LATCH_ERR_CANCELLED);
    th_server_start(&s, app);
    th_expect_alive(s.port, "/join", "ok");
    assert_int_equal(latch_join_resolve(held_join, 0, NULL),
                     LATCH_ERR_STREAM_DESTROYED);
    assert_true(latch_join_settled(held_join));
    latch_res_release(held);
    th_server_stop(&s);
    held = NULL;
    held_join = NULL;
}

/* A handle kept without a reference, used after its app was freed (a
 * program that makes a new app, or a test suite that runs many in one
 * process): refused, and no report goes to the freed app. */
static latch_res *kept_past_app;

static int h_keep_past_app(latch_req *req, latch_res *res, void *data)
{
    (void)req;
    (void)data;
    kept_past_app = res; /* the bug: kept without a reference */
    return latch_res_send(res, "ok", 2);
}

static void test_kept_past_its_app(void **state)
{
    static th_violations v;
    th_server s;
    latch_app *app = latch_app_new();

    (void)state;
    memset(&v, 0, sizeof(v));
    th_record_violations(app, &v);
    assert_int_equal(latch_get(app, "/ok", h_keep_past_app, NULL), 0);
    th_server_start(&s, app);
    th_expect_alive(s.port, "/ok", "ok");
    th_server_stop(&s); /* latch_app_free */
    assert_non_null(kept_past_app);
    assert_int_equal(latch_res_send(kept_past_app, "late", 4),
                     LATCH_ERR_STREAM_DESTROYED);
    assert_string_equal(latch_req_path(latch_res_req(kept_past_app)), "");
    assert_int_equal(th_violation_count(&v), 0);
    kept_past_app = NULL;
}

/* ------------------------------------------------------------------ */
/* latch_fail after latch_next, then LATCH_NEXT (fuzzer seed 816)      */
/* ------------------------------------------------------------------ */

static int mw_next_fail_next(latch_req *req, latch_res *res, void *data)
{
    (void)res;
    (void)data;
    latch_next(req);
    latch_fail(req, 500, "too late"); /* misuse: the chain moved already */
    return LATCH_NEXT;                /* misuse again */
}

static int h_route_ok(latch_req *req, latch_res *res, void *data)
{
    (void)req;
    (void)data;
    latch_res_send(res, "ok", 2);
    return LATCH_DONE;
}

/* Both misuses are reported (the latch_fail one used to be lost when the
 * handler also returned LATCH_NEXT), and the response is the route's. */
static void test_fail_after_next_reported(void **state)
{
    th_server s;
    th_violations v = {0};
    latch_app *app = latch_app_new();
    size_t len;
    char *out;
    th_resp *r;
    int i, nexts = 0;

    (void)state;
    static const char req[] = "GET /x HTTP/1.1\r\nHost: t\r\n\r\n";

    th_record_violations(app, &v);
    assert_int_equal(latch_use(app, "/", mw_next_fail_next, NULL), 0);
    assert_int_equal(latch_get(app, "/x", h_route_ok, NULL), 0);
    th_server_start(&s, app);
    out = th_exchange(s.port, req, sizeof(req) - 1, 1, &len);
    r = th_expect_responses(out, len, 1, NULL);
    assert_int_equal(r[0].status, 200);
    assert_string_equal(r[0].body, "ok");
    th_resp_free(r, 1);
    free(r);
    free(out);
    assert_int_equal(th_server_stop(&s), 0);
    /* LATCH_NEXT after latch_next, and the latch_fail: the route had
     * answered by then, so it is an error passed after the response. */
    assert_int_equal(th_violation_count(&v), 2);
    for (i = 0; i < 2; i++)
        nexts += v.codes[i] == LATCH_ERR_NEXT_TWICE ||
                 v.codes[i] == LATCH_ERR_NEXT_AFTER_RESPONSE;
    assert_int_equal(nexts, 2);
    assert_int_not_equal(v.codes[0], v.codes[1]);
}

/* ------------------------------------------------------------------ */
/* A response kept without a reference, posted to later                 */
/* ------------------------------------------------------------------ */

static latch_res *kept_res;
static _Atomic uint64_t kept_id;
static _Atomic int post_rc = 12345, post_line;

static int h_keep_a(latch_req *req, latch_res *res, void *data)
{
    (void)data;
    kept_res = res; /* the bug: clients.push(res), never removed */
    atomic_store(&kept_id, latch_req_id(req));
    return latch_res_send(res, "a", 1);
}

static void never_run(latch_res *res, void *data)
{
    (void)res;
    (void)data;
    fail_msg("a post to a stale handle ran");
}

static int h_post_b(latch_req *req, latch_res *res, void *data)
{
    (void)req;
    (void)data;
    atomic_store(&post_line, __LINE__ + 1);
    atomic_store(&post_rc, latch_res_post(kept_res, never_run, NULL));
    return latch_res_send(res, "b", 1);
}

/* The post is refused, and its report names the caller's line and the
 * request the handle belonged to (both were lost: "at latch_res_post
 * (?:0, ?)" and no request), so a hook can tell which request a kept
 * handle came from. The second request is served untouched. */
static void test_kept_res_post_reported(void **state)
{
    latch_app *app = latch_app_new();
    th_vlog log;
    th_vrec v;
    th_server s;
    char *body;

    (void)state;
    th_record_violations_full(app, &log);
    assert_int_equal(latch_get(app, "/a", h_keep_a, NULL), 0);
    assert_int_equal(latch_get(app, "/b", h_post_b, NULL), 0);
    th_server_start(&s, app);
    body = second_body(s.port, "/a", "/b");
    assert_string_equal(body, "b");
    free(body);
    assert_int_equal(th_server_stop(&s), 0);
    assert_int_equal(atomic_load(&post_rc), LATCH_ERR_STREAM_DESTROYED);
    assert_int_equal(th_vlog_count(&log), 1);
    assert_true(th_vlog_get(&log, 0, &v));
    assert_int_equal(v.code, LATCH_ERR_STREAM_DESTROYED);
    assert_string_equal(v.call, "latch_res_post");
    assert_non_null(strstr(v.at_file, "test_kept_pointers.c"));
    assert_int_equal(v.at_line, atomic_load(&post_line));
    assert_string_equal(v.at_func, "h_post_b");
    assert_true(atomic_load(&kept_id) != 0);
    assert_int_equal(v.request_id, atomic_load(&kept_id));
}

/* ------------------------------------------------------------------ */
/* Getters and the JSON writer through kept handles                     */
/* ------------------------------------------------------------------ */

/*
 * DESIGN.md: every public function that can raise a violation passes the
 * caller's place. A getter on a stale handle is refused and reported too
 * (the Express guard `if (res.headersSent)` in a callback that outlived
 * its request), and so is a JSON value written after latch_res_json_end:
 * each report must name the line that made the call, not "?:0". The
 * handler of the second request makes every such call on the first one's
 * kept handles; the second request is served untouched.
 */
static latch_req *kept_req;
static latch_json *kept_writer;
enum { NGET = 20 };
static struct {
    const char *call;
    int line;
} got[NGET];
static int ngot;

#define GET(name, expr)                                                        \
    do {                                                                       \
        got[ngot].call = (name);                                               \
        got[ngot++].line = __LINE__;                                           \
        (void)(expr);                                                          \
    } while (0)

static int h_keep_both(latch_req *req, latch_res *res, void *data)
{
    latch_json *j = latch_res_json_begin(res);

    (void)data;
    kept_req = req; /* the bug: both kept past the response */
    kept_res = res;
    kept_writer = j;
    atomic_store(&kept_id, latch_req_id(req));
    latch_json_object_begin(j);
    latch_json_object_end(j);
    return latch_res_json_end(res);
}

static int h_get_b(latch_req *req, latch_res *res, void *data)
{
    const char *vals[2], *n, *v;
    const void *body;
    size_t len;
    latch_json *j;
    latch_req *k = kept_req;
    latch_res *kr = kept_res;
    latch_json *kw = kept_writer;

    (void)req;
    (void)data;
    ngot = 0;
    GET("latch_req_method", latch_req_method(k));
    GET("latch_req_path", latch_req_path(k));
    GET("latch_req_url", latch_req_url(k));
    GET("latch_req_query", latch_req_query(k, "q"));
    GET("latch_req_query_values", latch_req_query_values(k, "q", vals, 2));
    GET("latch_req_param", latch_req_param(k, "id"));
    GET("latch_req_header", latch_req_header(k, "Host"));
    GET("latch_req_header_values", latch_req_header_values(k, "Host", vals, 2));
    GET("latch_req_header_count", latch_req_header_count(k));
    GET("latch_req_header_at", latch_req_header_at(k, 0, &n, &v));
    GET("latch_req_cookie", latch_req_cookie(k, "sid"));
    GET("latch_req_ip", latch_req_ip(k));
    GET("latch_req_body", latch_req_body(k, &body, &len));
    GET("latch_req_aborted", latch_req_aborted(k));
    GET("latch_req_res", latch_req_res(k));
    GET("latch_res_headers_sent", latch_res_headers_sent(kr));
    GET("latch_res_writable_ended", latch_res_writable_ended(kr));
    GET("latch_res_destroyed", latch_res_destroyed(kr));
    GET("latch_res_get_header", latch_res_get_header(kr, "X"));
    GET("latch_json_int", latch_json_int(kw, 1));
    /* Its own writer, after the document went out: closed. */
    j = latch_res_json_begin(res);
    latch_json_object_begin(j);
    latch_json_object_end(j);
    latch_res_json_end(res);
    atomic_store(&post_line, __LINE__ + 1);
    atomic_store(&post_rc, latch_json_key(j, "late"));
    return LATCH_DONE;
}

static void test_kept_getters_name_the_caller(void **state)
{
    latch_app *app = latch_app_new();
    th_vlog log;
    th_vrec v;
    th_server s;
    char *body;
    int i;

    (void)state;
    th_record_violations_full(app, &log);
    assert_int_equal(latch_get(app, "/a", h_keep_both, NULL), 0);
    assert_int_equal(latch_get(app, "/b", h_get_b, NULL), 0);
    th_server_start(&s, app);
    body = second_body(s.port, "/a", "/b");
    assert_string_equal(body, "{}");
    free(body);
    assert_int_equal(th_server_stop(&s), 0);
    assert_int_equal(ngot, NGET);
    assert_int_equal(th_vlog_count(&log), NGET + 1);
    for (i = 0; i < NGET; i++) {
        assert_true(th_vlog_get(&log, i, &v));
        if (v.code != LATCH_ERR_STREAM_DESTROYED ||
            strcmp(v.call, got[i].call) != 0 ||
            strstr(v.at_file, "test_kept_pointers.c") == NULL ||
            v.at_line != got[i].line || strcmp(v.at_func, "h_get_b") != 0)
            fail_msg("report %d: %s %s at %s:%d (%s), wanted "
                     "ERR_STREAM_DESTROYED %s at line %d (h_get_b)",
                     i, v.name, v.call, v.at_file, v.at_line, v.at_func,
                     got[i].call, got[i].line);
        assert_int_equal(v.request_id, atomic_load(&kept_id));
    }
    assert_int_equal(atomic_load(&post_rc), LATCH_ERR_STATE);
    assert_true(th_vlog_get(&log, NGET, &v));
    assert_int_equal(v.code, LATCH_ERR_STATE);
    assert_string_equal(v.call, "latch_json_key");
    assert_int_equal(v.at_line, atomic_load(&post_line));
    assert_string_equal(v.at_func, "h_get_b");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kept_json_writer),
        cmocka_unit_test(test_kept_timer),
        cmocka_unit_test(test_kept_join),
        cmocka_unit_test(test_held_past_run),
        cmocka_unit_test(test_held_into_the_next_run),
        cmocka_unit_test(test_join_held_into_the_next_run),
        cmocka_unit_test(test_kept_past_its_app),
        cmocka_unit_test(test_fail_after_next_reported),
        cmocka_unit_test(test_kept_res_post_reported),
        cmocka_unit_test(test_kept_getters_name_the_caller),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
