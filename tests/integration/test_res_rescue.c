/*
 * test_res_rescue.c - a response that can still be answered is answered.
 *
 * latch_res_write_head builds the head but holds it until the next write,
 * end or flush: nothing reached the wire. When such a response is then
 * left unanswered (a send refused because the head exists, an error
 * returned, the request timeout), latch still holds every byte it would
 * send, so it drops the held head and sends the answer the event calls
 * for (the timeout's status, the error's, the 500 of ERR_NO_RESPONSE)
 * instead of closing the connection on an empty reply.
 *
 * And a pipelined request cut because the one before it was cut (its
 * timeout came after its headers went out) is told the truth: cancelled
 * as LATCH_CANCEL_DISCONNECT, sealed by "connection closed", not by the
 * other request's timeout.
 */
static const char test_file[] = __FILE__;
#include "res_probe.h"

static int refused_line;

static void never(latch_res *res, void *data)
{
    (void)data;
    latch_res_end(res, "late", 4);
}

static void late_cancel(latch_req *req, int reason, void *data)
{
    latch_res *res = latch_req_res(req);

    (void)data;
    put_note(T_X, res, reason, 0);
    refused_line = __LINE__ + 1;
    put_note(T_CALL, res, latch_res_send(res, "late", 4), refused_line);
}

static int rescue_handler(latch_req *req, latch_res *res, const void *arg)
{
    const char *p = latch_req_path(req);

    (void)arg;
    if (strcmp(p, "/held-timeout") == 0) {
        latch_req_set_timeout(req, 50, 504);
        latch_res_set_header(res, "X-Success", "1");
        latch_res_write_head(res, 200);
        /* Something keeps the response; it will never answer in time. */
        latch_set_timeout(res, 10000, never, NULL);
        return LATCH_DONE;
    }
    if (strcmp(p, "/held-send") == 0) {
        latch_res_write_head(res, 201);
        refused_line = __LINE__ + 1;
        put_note(T_CALL, res, latch_res_send(res, "x", 1), refused_line);
        return LATCH_DONE;
    }
    if (strcmp(p, "/held-fail") == 0) {
        latch_res_write_head(res, 200);
        return latch_fail(req, 502, "upstream failed");
    }
    if (strcmp(p, "/cut") == 0) {
        latch_req_set_timeout(req, 50, 0);
        latch_res_write(res, "part", 4);
        latch_set_timeout(res, 10000, never, NULL);
        return LATCH_DONE;
    }
    if (strcmp(p, "/behind") == 0) {
        latch_req_set_timeout(req, 10000, 0);
        latch_req_on_cancel(req, late_cancel, NULL);
        latch_set_timeout(res, 10000, never, NULL);
        return LATCH_DONE;
    }
    return LATCH_NEXT;
}

/* One request; its answer must be a complete response with `status` and
 * no trace of the held head; the connection keeps serving. */
static th_resp *one_answer(int fd, const char *path, int status)
{
    char req[128];
    int one = 1;
    size_t len;
    char *out;
    th_resp *r;

    snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", path);
    th_send_str(fd, req);
    out = th_read(fd, &len, 5000, th_until_responses, &one);
    if (len == 0)
        fail_msg("%s: an empty reply (connection %s)", path,
                 th_last_end() == TH_OPEN ? "open" : "closed");
    r = th_expect_responses(out, len, 1, NULL);
    if (r[0].status != status)
        fail_msg("%s: status %d, want %d:\n%s", path, r[0].status, status, out);
    free(out);
    return r;
}

static void test_held_head_then_timeout(void **state)
{
    th_resp *r;
    int fd;

    (void)state;
    srv_start(rescue_handler, NULL);
    fd = th_connect(srv.port);
    r = one_answer(fd, "/held-timeout", 504);
    /* The success's header went with the held head; the final handler
     * answered the timeout. */
    assert_null(strstr(r[0].head, "X-Success"));
    assert_non_null(strstr(r[0].body, "<pre>Gateway Timeout</pre>"));
    th_resp_free(r, 1);
    free(r);
    expect_ok_on(fd);
    close(fd);
    srv_stop();
}

static void test_held_head_then_refused_send(void **state)
{
    th_resp *r;
    th_vrec v;
    int fd;

    (void)state;
    srv_start(rescue_handler, NULL);
    fd = th_connect(srv.port);
    r = one_answer(fd, "/held-send", 500);
    th_resp_free(r, 1);
    free(r);
    expect_ok_on(fd);
    close(fd);
    srv_stop();
    assert_int_equal(get_note(T_CALL).rc, LATCH_ERR_HTTP_HEADERS_SENT);
    assert_int_equal(th_vlog_count(&vlog), 2);
    v = vget(0);
    assert_int_equal(v.code, LATCH_ERR_HTTP_HEADERS_SENT);
    check_sites(&v, "latch_res_send", refused_line, "rescue_handler",
                "latch_res_write_head", refused_line - 2);
    v = vget(1);
    assert_int_equal(v.code, LATCH_ERR_NO_RESPONSE);
}

static void test_held_head_then_error(void **state)
{
    th_resp *r;
    int fd;

    (void)state;
    srv_start(rescue_handler, NULL);
    fd = th_connect(srv.port);
    r = one_answer(fd, "/held-fail", 502);
    th_resp_free(r, 1);
    free(r);
    expect_ok_on(fd);
    close(fd);
    srv_stop();
}

static void test_pipelined_behind_a_cut_is_closed_not_timed_out(void **state)
{
    char *out;
    size_t len;
    note reason, call;
    th_vrec v;
    int fd;

    (void)state;
    srv_start(rescue_handler, NULL);
    fd = th_connect(srv.port);
    th_send_str(fd, REQ("/cut") REQ("/behind"));
    out = th_read(fd, &len, 5000, NULL, NULL);
    /* /cut is visibly truncated (no last chunk), /behind gets nothing. */
    assert_int_equal(th_last_end(), TH_EOF);
    assert_non_null(strstr(out, "4\r\npart\r\n"));
    assert_null(strstr(out, "0\r\n\r\n"));
    free(out);
    close(fd);
    assert_true(wait_note(T_CALL, 5000, &call));
    reason = get_note(T_X);
    srv_stop();
    assert_int_equal(reason.rc, LATCH_CANCEL_DISCONNECT);
    assert_int_equal(call.rc, LATCH_ERR_STREAM_DESTROYED);
    assert_int_equal(th_vlog_count(&vlog), 1);
    v = vget(0);
    assert_string_equal(v.path, "/behind");
    check_sites(&v, "latch_res_send", refused_line, "late_cancel",
                "connection closed", 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_held_head_then_timeout, teardown),
        cmocka_unit_test_teardown(test_held_head_then_refused_send, teardown),
        cmocka_unit_test_teardown(test_held_head_then_error, teardown),
        cmocka_unit_test_teardown(
            test_pipelined_behind_a_cut_is_closed_not_timed_out, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
