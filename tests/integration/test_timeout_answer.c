/*
 * test_timeout_answer.c - the request timeout's answer is the app's: when
 * it fires before anything was sent, the error handlers run with
 * LATCH_ERR_CANCELLED, the configured status and
 * latch_req_cancel_reason == LATCH_CANCEL_TIMEOUT, and answer with their
 * own body ({"error":"Request timed out"} as the Express example does);
 * an error handler that passes it on leaves it to the final handler,
 * which negotiates JSON or HTML by Accept; a middleware still waiting
 * (LATCH_PENDING) loses its turn, and its late latch_next is reported as
 * ERR_NEXT_AFTER_RESPONSE sealed by the request timeout; a job's late
 * completion is refused the same way. Headers already sent: cut, no
 * error handler (test_async.c).
 */
#include "harness.h"

#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

static struct {
    int err_runs, err_code, err_status, err_reason;
    char err_msg[64];
    int late_next, late_send_rc, late_after;
} st;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static th_vlog vlog;
static th_server srv;

/* The Express example's error middleware: answers timeouts as JSON. */
static int on_error(const latch_error *err, latch_req *req, latch_res *res,
                    void *data)
{
    (void)data;
    pthread_mutex_lock(&mu);
    st.err_runs++;
    st.err_code = err->code;
    st.err_status = err->status;
    st.err_reason = latch_req_cancel_reason(req);
    snprintf(st.err_msg, sizeof(st.err_msg), "%s",
             err->message ? err->message : "(null)");
    pthread_mutex_unlock(&mu);
    if (strcmp(latch_req_path(req), "/final") == 0)
        return LATCH_NEXT; /* leave it to the final handler */
    latch_res_status(res, err->status);
    return latch_res_json(res, "{\"error\":\"Request timed out\"}");
}

static int never(latch_req *req, latch_res *res, void *data)
{
    (void)req;
    (void)data;
    return latch_res_send(res, "route", 5); /* never reached */
}

/* A handler whose 300 ms job answers too late. */
static void slow_job(void *data)
{
    struct timespec ts = {0, 300 * 1000000L};

    (void)data;
    nanosleep(&ts, NULL);
}

static void slow_after(latch_res *res, int status, void *data)
{
    int rc;

    (void)data;
    (void)status;
    rc = latch_res_json(res, "{\"late\":true}");
    pthread_mutex_lock(&mu);
    st.late_send_rc = rc;
    st.late_after++;
    pthread_mutex_unlock(&mu);
}

static int slow_route(latch_req *req, latch_res *res, void *data)
{
    (void)req;
    (void)data;
    return latch_work(res, slow_job, slow_after, NULL);
}

/* A middleware whose check takes 300 ms (a job), longer than the 100 ms
 * timeout: its latch_next (whatever the status) comes after the answer. */
static void slow_check_done(latch_res *res, int status, void *data)
{
    (void)data;
    (void)status;
    latch_next(latch_res_req(res));
    pthread_mutex_lock(&mu);
    st.late_next++;
    pthread_mutex_unlock(&mu);
}

static int slow_check(latch_req *req, latch_res *res, void *data)
{
    (void)req;
    (void)data;
    latch_work(res, slow_job, slow_check_done, NULL);
    return LATCH_PENDING;
}

static int setup(void **state)
{
    latch_app *app = latch_app_new();

    (void)state;
    memset(&st, 0, sizeof(st));
    assert_non_null(app);
    assert_int_equal(latch_app_set_request_timeout(app, 100, 0), 0);
    memset(&vlog, 0, sizeof(vlog));
    th_record_violations_full(app, &vlog);
    assert_int_equal(latch_use(app, "/mw", slow_check, NULL), 0);
    assert_int_equal(latch_get(app, "/mw", never, NULL), 0);
    assert_int_equal(latch_get(app, "/job", slow_route, NULL), 0);
    assert_int_equal(latch_get(app, "/final", slow_route, NULL), 0);
    assert_int_equal(latch_use_error(app, on_error, NULL), 0);
    th_server_start(&srv, app);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    assert_int_equal(th_server_stop(&srv), 0);
    return 0;
}

static th_resp *ask(const char *path, const char *accept)
{
    char req[512];
    size_t len;
    char *out;
    th_resp *r;
    int n = snprintf(req, sizeof(req),
                     "GET %s HTTP/1.1\r\nHost: x\r\n%s%s%sConnection: "
                     "close\r\n\r\n",
                     path, accept ? "Accept: " : "", accept ? accept : "",
                     accept ? "\r\n" : "");

    out = th_exchange(srv.port, req, (size_t)n, 1, &len);
    r = th_expect_responses(out, len, 1, NULL);
    free(out);
    return r;
}

static __typeof__(st) snap(void)
{
    __typeof__(st) c;

    pthread_mutex_lock(&mu);
    c = st;
    pthread_mutex_unlock(&mu);
    return c;
}

static bool wait_for(const int *v, int n)
{
    for (int64_t end = th_now_ms() + 5000; th_now_ms() < end;) {
        pthread_mutex_lock(&mu);
        int now = *v;
        pthread_mutex_unlock(&mu);
        if (now >= n)
            return true;
        struct timespec ts = {0, 2000000};
        nanosleep(&ts, NULL);
    }
    return false;
}

/* The error handler answers; the job's late send is refused, and its
 * report names the timeout as what sealed the response. */
static void test_error_handler_answers_the_timeout(void **state)
{
    th_resp *r = ask("/job", NULL);
    th_vrec rec, *v = &rec;

    (void)state;
    assert_int_equal(r[0].status, 503);
    assert_string_equal(r[0].body, "{\"error\":\"Request timed out\"}");
    assert_non_null(strstr(r[0].head, "application/json"));
    th_resp_free(r, 1);
    free(r);
    assert_true(wait_for(&st.late_after, 1));
    __typeof__(st) s = snap();
    assert_int_equal(s.err_runs, 1);
    assert_int_equal(s.err_code, LATCH_ERR_CANCELLED);
    assert_int_equal(s.err_status, 503);
    assert_int_equal(s.err_reason, LATCH_CANCEL_TIMEOUT);
    assert_string_equal(s.err_msg, "Request timed out");
    assert_int_equal(s.late_send_rc, LATCH_ERR_HTTP_HEADERS_SENT);
    assert_int_equal(th_vlog_wait(&vlog, 1, 5000), 1);
    assert_true(th_vlog_get(&vlog, 0, v));
    assert_int_equal(v->code, LATCH_ERR_HTTP_HEADERS_SENT);
    assert_string_equal(v->call, "latch_res_json");
    assert_string_equal(v->sealed_call, "request timeout");
}

/* A middleware still pending loses its turn: the route never runs, and
 * its late latch_next is reported after the response. */
static void test_pending_middleware_loses_its_turn(void **state)
{
    th_resp *r = ask("/mw", NULL);
    th_vrec rec, *v = &rec;

    (void)state;
    assert_int_equal(r[0].status, 503);
    assert_string_equal(r[0].body, "{\"error\":\"Request timed out\"}");
    th_resp_free(r, 1);
    free(r);
    assert_true(wait_for(&st.late_next, 1));
    assert_int_equal(th_vlog_wait(&vlog, 1, 5000), 1);
    assert_true(th_vlog_get(&vlog, 0, v));
    assert_int_equal(v->code, LATCH_ERR_NEXT_AFTER_RESPONSE);
    assert_string_equal(v->call, "latch_next");
    assert_string_equal(v->sealed_call, "request timeout");
    assert_int_equal(snap().err_runs, 1);
}

/* Passed on, the final handler answers: JSON when Accept prefers it,
 * HTML otherwise. */
static void test_final_handler_negotiates(void **state)
{
    th_resp *r = ask("/final", "application/json");

    (void)state;
    assert_int_equal(r[0].status, 503);
    assert_string_equal(
        r[0].body,
        "{\"error\":{\"status\":503,\"message\":\"Service Unavailable\"}}\n");
    th_resp_free(r, 1);
    free(r);
    r = ask("/final", "text/html");
    assert_int_equal(r[0].status, 503);
    assert_non_null(strstr(r[0].body, "<pre>Service Unavailable</pre>"));
    th_resp_free(r, 1);
    free(r);
    assert_true(wait_for(&st.late_after, 2));
    assert_int_equal(snap().err_runs, 2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_error_handler_answers_the_timeout,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_pending_middleware_loses_its_turn,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_final_handler_negotiates, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
