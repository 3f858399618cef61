/*
 * test_misuse_reports.c - every refused call is reported (DESIGN.md), and
 * what can be made to work across threads works.
 *
 *  - An error handler that answers and then passes the error on
 *    (LATCH_NEXT, latch_fail): ERR_NEXT_AFTER_RESPONSE with the offending
 *    site and the call that sealed the response.
 *  - Calls from a thread other than the response's loop (on_close,
 *    on_finish, on_drain, latch_req_on_cancel, latch_clear_timeout,
 *    latch_req_set_timeout, latch_join_new): ERR_WRONG_THREAD, reported.
 *  - Joins settled from pool threads (Promise.all's tasks finish there):
 *    latch_join_resolve / latch_join_fail from any thread post the report
 *    to the response's loop, and the completion runs there.
 *  - An async error handler (Express's error middleware that awaits a log
 *    write, then calls next(err)): LATCH_PENDING, then latch_next or
 *    latch_fail from its job's completion goes on to the next error
 *    handler, with no report.
 *  - Calls on a tombstone that used to return LATCH_ERR_STATE or NULL
 *    silently (latch_req_on_cancel, latch_req_set_timeout, latch_join_new,
 *    latch_res_flush_headers): reported.
 */
static const char test_file[] = __FILE__;
#include "res_probe.h"

static int sealed_line, offend_line;

/* ---- error handlers that answer and pass the error on --------------- */

static int fails(latch_req *req, latch_res *res, const void *arg)
{
    (void)res;
    (void)arg;
    (void)req;
    return -5;
}

static int eh_send_next(const latch_error *err, latch_req *req, latch_res *res,
                        void *data)
{
    (void)err;
    (void)req;
    (void)data;
    sealed_line = __LINE__ + 1;
    latch_res_send(res, "handled", 7);
    return LATCH_NEXT;
}

static int eh_send_fail(const latch_error *err, latch_req *req, latch_res *res,
                        void *data)
{
    (void)err;
    (void)data;
    sealed_line = __LINE__ + 1;
    latch_res_send(res, "handled", 7);
    offend_line = __LINE__ + 1;
    return latch_fail(req, 500, "and pass it on");
}

static void error_handler_case(latch_error_handler eh, const char *call,
                               bool fail_site)
{
    latch_app *app = srv_prepare(fails, NULL);
    th_vrec v;
    int fd;

    assert_int_equal(latch_use_error(app, eh, NULL), 0);
    srv_go(app);
    fd = th_connect(srv.port);
    th_send_str(fd, REQ("/x"));
    expect_resp(fd, "HTTP/1.1 200 OK\r\nContent-Type: text/html; "
                    "charset=utf-8\r\nContent-Length: 7\r\n" KA "\r\nhandled");
    expect_ok_on(fd);
    close(fd);
    srv_stop();
    assert_int_equal(th_vlog_count(&vlog), 1);
    v = vget(0);
    assert_int_equal(v.code, LATCH_ERR_NEXT_AFTER_RESPONSE);
    assert_string_equal(v.call, call);
    assert_string_equal(v.sealed_call, "latch_res_send");
    assert_int_equal(v.sealed_line, sealed_line);
    if (fail_site) {
        assert_string_equal(v.at_file, test_file);
        assert_int_equal(v.at_line, offend_line);
    }
}

static void test_error_handler_answers_then_next(void **state)
{
    (void)state;
    error_handler_case(eh_send_next, "LATCH_NEXT", false);
}

static void test_error_handler_answers_then_fail(void **state)
{
    (void)state;
    error_handler_case(eh_send_fail, "latch_fail", true);
}

/* ---- an async error handler ----------------------------------------- */

static int async_fails_with; /* 0: latch_next, else latch_fail's status */

static void log_job(void *data)
{
    (void)data;
}

static void logged(latch_res *res, int status, void *data)
{
    (void)data;
    if (status != 0)
        return; /* cancelled: latch answered */
    if (async_fails_with == 0)
        latch_next(latch_res_req(res));
    else
        latch_fail(latch_res_req(res), async_fails_with, "from the log");
}

static int eh_async_log(const latch_error *err, latch_req *req, latch_res *res,
                        void *data)
{
    (void)err;
    (void)req;
    (void)data;
    return latch_work(res, log_job, logged, NULL) < 0 ? LATCH_NEXT
                                                      : LATCH_PENDING;
}

static int eh_answer_status(const latch_error *err, latch_req *req,
                            latch_res *res, void *data)
{
    char body[64];
    int n;

    (void)req;
    (void)data;
    n = snprintf(body, sizeof(body), "%d %s", err->status,
                 err->message != NULL ? err->message : "-");
    latch_res_status(res, err->status);
    latch_res_send(res, body, (size_t)n);
    return LATCH_DONE;
}

static int fails_400(latch_req *req, latch_res *res, const void *arg)
{
    (void)res;
    (void)arg;
    return latch_fail(req, 400, "bad input");
}

/* The misuses below were once reported where nothing was wrong. */
static void expect_no_reports(void)
{
    if (th_vlog_count(&vlog) != 0)
        fail_msg("%d report(s), the first %s from %s", th_vlog_count(&vlog),
                 vget(0).name, vget(0).call);
}

/* A handler fails with 400 "bad input"; the error handler `first` passes
 * an error on to one that answers with its status and message: `want`,
 * and no report. */
static void passed_on_case(latch_error_handler first, const char *want)
{
    latch_app *app = srv_prepare(fails_400, NULL);
    int fd;

    assert_int_equal(latch_use_error(app, first, NULL), 0);
    assert_int_equal(latch_use_error(app, eh_answer_status, NULL), 0);
    srv_go(app);
    fd = th_connect(srv.port);
    th_send_str(fd, REQ("/x"));
    expect_resp(fd, want);
    expect_ok_on(fd);
    close(fd);
    srv_stop();
    expect_no_reports();
}

#define ANSWER_400                                                             \
    "HTTP/1.1 400 Bad Request\r\nContent-Type: text/html; "                    \
    "charset=utf-8\r\nContent-Length: 13\r\n" KA "\r\n400 bad input"

/* Async, it used to be taken for LATCH_DONE: the completion's latch_next
 * was ERR_NEXT_TWICE, then ERR_NO_RESPONSE and a 500. */
static void test_async_error_handler_next(void **state)
{
    (void)state;
    async_fails_with = 0;
    passed_on_case(eh_async_log, ANSWER_400);
}

static void test_async_error_handler_fail(void **state)
{
    (void)state;
    async_fails_with = 502;
    passed_on_case(eh_async_log,
                   "HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/html; "
                   "charset=utf-8\r\nContent-Length: 16\r\n" KA
                   "\r\n502 from the log");
}

/* Passing the same error on with latch_fail: its message is the buffer
 * latch_fail copies into (it was copied onto itself). */
static int eh_fail_same(const latch_error *err, latch_req *req, latch_res *res,
                        void *data)
{
    (void)res;
    (void)data;
    return latch_fail(req, err->status, err->message);
}

static void test_error_handler_fails_with_its_error(void **state)
{
    (void)state;
    passed_on_case(eh_fail_same, ANSWER_400);
}

/* A handler whose stream broke after its head went out. */
static int streams_then_fails(latch_req *req, latch_res *res, const void *arg)
{
    (void)arg;
    latch_res_write(res, "part", 4);
    return latch_fail(req, 500, "broke mid-stream");
}

static void delegated(latch_res *res, int status, void *data)
{
    (void)data;
    if (status == 0)
        latch_next(latch_res_req(res));
}

/* Express's "if (res.headersSent) return next(err)", at once or after an
 * await. */
static int eh_delegate(const latch_error *err, latch_req *req, latch_res *res,
                       void *data)
{
    (void)err;
    (void)req;
    (void)data;
    return latch_res_headers_sent(res) ? LATCH_NEXT : LATCH_DONE;
}

static int eh_async_delegate(const latch_error *err, latch_req *req,
                             latch_res *res, void *data)
{
    (void)err;
    (void)req;
    (void)data;
    return latch_work(res, log_job, delegated, NULL) < 0 ? LATCH_NEXT
                                                         : LATCH_PENDING;
}

/* The error handler delegates an error raised after the head went out:
 * no report, and the final handler cuts the response (no last chunk), as
 * Express's finalhandler destroys the socket. The async form used to be
 * reported ERR_NEXT_AFTER_RESPONSE, then ERR_NO_RESPONSE. */
static void delegated_after_head_case(latch_error_handler eh)
{
    latch_app *app = srv_prepare(streams_then_fails, NULL);
    size_t len = 0;
    char *out;
    int fd;

    assert_int_equal(latch_use_error(app, eh, NULL), 0);
    srv_go(app);
    fd = th_connect(srv.port);
    th_send_str(fd, REQ("/x"));
    out = th_read(fd, &len, 5000, NULL, NULL);
    assert_int_not_equal(th_last_end(), TH_OPEN);
    assert_non_null(strstr(out, "HTTP/1.1 200 OK\r\n"));
    assert_non_null(strstr(out, "\r\n4\r\npart\r\n"));
    assert_null(strstr(out, "\r\n0\r\n\r\n"));
    free(out);
    close(fd);
    srv_stop();
    expect_no_reports();
}

static void test_error_handler_delegates_after_head(void **state)
{
    (void)state;
    delegated_after_head_case(eh_delegate);
}

static void test_async_error_handler_delegates_after_head(void **state)
{
    (void)state;
    delegated_after_head_case(eh_async_delegate);
}

/* ---- calls from another thread --------------------------------------- */

static latch_timer *foreign_timer;

static void answer_and_release(latch_res *res, void *data)
{
    (void)data;
    latch_res_send(res, "done", 4);
    latch_res_release(res);
}

static void nothing(latch_res *res, void *data)
{
    (void)res;
    (void)data;
}

static void nothing_cancel(latch_req *req, int reason, void *data)
{
    (void)req;
    (void)reason;
    (void)data;
}

static void join_nothing(latch_res *res, int status, void *const *results,
                         void *data)
{
    (void)res;
    (void)status;
    (void)results;
    (void)data;
}

static void *foreign(void *arg)
{
    latch_res *res = arg;
    latch_req *req = latch_res_req(res);

    /* Each note's line is its call's: the report must name it. */
    put_note(T_X, NULL, latch_res_on_close(res, nothing, NULL), __LINE__);
    put_note(T_X, NULL, latch_res_on_finish(res, nothing, NULL), __LINE__);
    put_note(T_X, NULL, latch_res_on_drain(res, nothing, NULL), __LINE__);
    put_note(T_X, NULL, latch_req_on_cancel(req, nothing_cancel, NULL),
             __LINE__ - 1);
    put_note(T_X, NULL, latch_clear_timeout(foreign_timer), __LINE__);
    put_note(T_X, NULL, latch_req_set_timeout(req, 1000, 0), __LINE__);
    put_note(T_X, NULL,
             latch_join_new(res, 1, join_nothing, NULL) == NULL
                 ? LATCH_ERR_WRONG_THREAD
                 : 0,
             __LINE__ - 3);
    put_note(T_THREAD, NULL, 0, 0);
    latch_res_post(res, answer_and_release, NULL);
    return NULL;
}

static int thread_handler(latch_req *req, latch_res *res, const void *arg)
{
    (void)req;
    (void)arg;
    latch_res_retain(res);
    foreign_timer = latch_set_timeout(res, 10000, nothing, NULL);
    pthread_mutex_lock(&mu);
    sh.worker_started = pthread_create(&sh.worker, NULL, foreign, res) == 0;
    pthread_mutex_unlock(&mu);
    return LATCH_DONE;
}

static void test_wrong_thread_is_reported(void **state)
{
    note v[8];
    int fd;

    (void)state;
    srv_start(thread_handler, NULL);
    fd = th_connect(srv.port);
    th_send_str(fd, REQ("/t"));
    expect_resp(fd, "HTTP/1.1 200 OK\r\nContent-Type: text/html; "
                    "charset=utf-8\r\nContent-Length: 4\r\n" KA "\r\ndone");
    close(fd);
    assert_true(wait_note(T_THREAD, 5000, NULL));
    pthread_join(sh.worker, NULL);
    srv_stop();
    assert_int_equal(notes_all(T_X, v, 7), 7);
    for (int i = 0; i < 7; i++)
        if (v[i].rc != LATCH_ERR_WRONG_THREAD)
            fail_msg("foreign call %d returned %s", v[i].line,
                     latch_err_name(v[i].rc));
    assert_int_equal(th_vlog_count(&vlog), 7);
    for (int i = 0; i < 7; i++) {
        th_vrec r = vget(i);
        assert_int_equal(r.code, LATCH_ERR_WRONG_THREAD);
        /* Reported with the caller's place (they were plain functions
         * whose reports had none: the lifecycle fuzzer's finding F3). */
        assert_string_equal(r.at_file, test_file);
        assert_int_equal(r.at_line, v[i].line);
    }
}

/* ---- joins settled from pool threads ---------------------------------- */

static latch_join *pool_join;
static const char *const words[3] = {"a", "b", "c"};

typedef struct task {
    int index;
    bool fail;
} task;

static void task_work(void *data)
{
    task *t = data;

    /* On a pool thread, as a Promise.all task finishes. */
    if (t->fail)
        latch_join_fail(pool_join, t->index, -ECONNREFUSED);
    else
        latch_join_resolve(pool_join, t->index, (void *)words[t->index]);
}

static void task_after(latch_res *res, int status, void *data)
{
    (void)res;
    (void)status;
    (void)data;
}

static void join_done(latch_res *res, int status, void *const *results,
                      void *data)
{
    char body[16];

    (void)data;
    put_note(T_COMPLETE, res, pthread_equal(pthread_self(), sh.loop), 0);
    if (status < 0) {
        latch_res_send_status(res, 502);
        return;
    }
    snprintf(body, sizeof(body), "%s+%s+%s", (const char *)results[0],
             (const char *)results[1], (const char *)results[2]);
    latch_res_send(res, body, strlen(body));
}

static task tasks[3];

static int join_handler(latch_req *req, latch_res *res, const void *arg)
{
    bool fail = strcmp(latch_req_path(req), "/fail") == 0;

    (void)arg;
    pthread_mutex_lock(&mu);
    sh.loop = pthread_self();
    pthread_mutex_unlock(&mu);
    pool_join = latch_join_new(res, 3, join_done, NULL);
    for (int i = 0; i < 3; i++) {
        tasks[i].index = i;
        tasks[i].fail = fail && i == 1;
        latch_work(res, task_work, task_after, &tasks[i]);
    }
    return LATCH_DONE;
}

static void test_join_settled_from_pool_threads(void **state)
{
    int fd;

    (void)state;
    srv_start(join_handler, NULL);
    fd = th_connect(srv.port);
    th_send_str(fd, REQ("/all"));
    expect_resp(fd, "HTTP/1.1 200 OK\r\nContent-Type: text/html; "
                    "charset=utf-8\r\nContent-Length: 5\r\n" KA "\r\na+b+c");
    assert_int_equal(get_note(T_COMPLETE).rc, 1); /* on the loop */
    th_send_str(fd, REQ("/fail"));
    expect_resp(fd,
                "HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain; "
                "charset=utf-8\r\nContent-Length: 11\r\n" KA "\r\nBad Gateway");
    expect_ok_on(fd);
    close(fd);
    srv_stop();
    assert_int_equal(th_vlog_count(&vlog), 0);
}

/* ---- the tombstone ---------------------------------------------------- */

static void tomb_calls(latch_res *two, void *data)
{
    latch_res *h = held_res();
    latch_req *q = latch_res_req(h);

    (void)data;
    put_note(T_X, h, latch_req_on_cancel(q, nothing_cancel, NULL), 1);
    put_note(T_X, h, latch_req_set_timeout(q, 1000, 0), 2);
    put_note(T_X, h, latch_join_new(h, 1, join_nothing, NULL) == NULL ? -1 : 0,
             3);
    put_note(T_X, h, latch_res_flush_headers(h), 4);
    latch_res_release(h); /* the last reference: the object is recycled */
    latch_res_release(h); /* a second release of the released response */
    latch_res_send(two, "two", 3);
}

static int tomb_handler(latch_req *req, latch_res *res, const void *arg)
{
    (void)arg;
    if (strcmp(latch_req_path(req), "/b") == 0) {
        latch_set_timeout(res, 1, tomb_calls, NULL);
        return LATCH_DONE;
    }
    latch_res_retain(res);
    set_held(res);
    latch_res_send(res, "one", 3);
    return LATCH_DONE;
}

static void test_tombstone_refusals_are_reported(void **state)
{
    note v[4];
    int fd;

    (void)state;
    srv_start(tomb_handler, NULL);
    fd = th_connect(srv.port);
    th_send_str(fd, REQ("/a"));
    expect_resp(fd, "HTTP/1.1 200 OK\r\nContent-Type: text/html; "
                    "charset=utf-8\r\nContent-Length: 3\r\n" KA "\r\none");
    th_send_str(fd, REQ("/b"));
    expect_resp(fd, "HTTP/1.1 200 OK\r\nContent-Type: text/html; "
                    "charset=utf-8\r\nContent-Length: 3\r\n" KA "\r\ntwo");
    close(fd);
    srv_stop();
    assert_int_equal(notes_all(T_X, v, 4), 4);
    assert_int_equal(v[0].rc, LATCH_ERR_STATE);
    assert_int_equal(v[1].rc, LATCH_ERR_STATE);
    assert_int_equal(v[2].rc, -1);
    assert_true(v[3].rc < 0);
    /* One report per refused call, each naming request 1; the second
     * release is reported too (it used to return silently), as a use of
     * a response whose request is over. */
    assert_int_equal(th_vlog_count(&vlog), 5);
    for (int i = 0; i < 4; i++)
        assert_string_equal(vget(i).path, "/a");
    assert_string_equal(vget(4).call, "latch_res_release");
    assert_int_equal(vget(4).code, LATCH_ERR_STREAM_DESTROYED);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_error_handler_answers_then_next,
                                  teardown),
        cmocka_unit_test_teardown(test_error_handler_answers_then_fail,
                                  teardown),
        cmocka_unit_test_teardown(test_async_error_handler_next, teardown),
        cmocka_unit_test_teardown(test_async_error_handler_fail, teardown),
        cmocka_unit_test_teardown(test_error_handler_fails_with_its_error,
                                  teardown),
        cmocka_unit_test_teardown(test_error_handler_delegates_after_head,
                                  teardown),
        cmocka_unit_test_teardown(test_async_error_handler_delegates_after_head,
                                  teardown),
        cmocka_unit_test_teardown(test_wrong_thread_is_reported, teardown),
        cmocka_unit_test_teardown(test_join_settled_from_pool_threads,
                                  teardown),
        cmocka_unit_test_teardown(test_tombstone_refusals_are_reported,
                                  teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
