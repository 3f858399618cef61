/*
 * test_basic.c - the first requests: exact bytes of a small response,
 * keep-alive, three pipelined requests in one write, one request one byte
 * at a time.
 */
#include "harness.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

static int hello(latch_req *req, latch_res *res, void *data)
{
    (void)req;
    (void)data;
    latch_res_set_header(res, "Content-Type", "text/plain");
    latch_res_send(res, "Hello, World!", 13);
    return LATCH_DONE;
}

static int echo_path(latch_req *req, latch_res *res, void *data)
{
    (void)data;
    latch_res_send(res, latch_req_path(req), strlen(latch_req_path(req)));
    return LATCH_DONE;
}

static void never(latch_res *res, void *data)
{
    (void)data;
    latch_res_end(res, NULL, 0);
}

/* Writes part of a body, then waits a minute (a timer holds the response). */
static int hang(latch_req *req, latch_res *res, void *data)
{
    (void)req;
    (void)data;
    latch_res_write(res, "part", 4);
    latch_set_timeout(res, 60000, never, NULL);
    return LATCH_DONE;
}

static void end_late(latch_res *res, void *data)
{
    (void)data;
    latch_res_end(res, "late", 4);
}

/* write_head builds the head, flush_headers sends it at once (twice is
 * harmless, as Node's flushHeaders), the body comes from a timer. */
static int flushed(latch_req *req, latch_res *res, void *data)
{
    int rc;

    (void)req;
    (void)data;
    rc = latch_res_write_head(res, 201);
    rc |= latch_res_flush_headers(res);
    rc |= latch_res_flush_headers(res);
    if (rc != 0)
        latch_res_destroy(res);
    else
        latch_set_timeout(res, 300, end_late, NULL);
    return LATCH_DONE;
}

static th_server srv;
static th_violations viol;

static int setup(void **state)
{
    latch_app *app = latch_app_new();

    (void)state;
    latch_get(app, "/hello", hello, NULL);
    latch_get(app, "/p/*", echo_path, NULL);
    latch_get(app, "/flushed", flushed, NULL);
    th_record_violations(app, &viol);
    th_server_start(&srv, app);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    assert_int_equal(th_server_stop(&srv), 0);
    return 0;
}

static const char hello_resp[] = "HTTP/1.1 200 OK\r\n"
                                 "Content-Type: text/plain\r\n"
                                 "Content-Length: 13\r\n"
                                 "Date: <d>\r\n"
                                 "Connection: keep-alive\r\n"
                                 "Keep-Alive: timeout=5\r\n"
                                 "\r\n"
                                 "Hello, World!";

static void test_exact_bytes(void **state)
{
    size_t len;
    char *out, *norm;
    int fd = th_connect(srv.port), one = 1;

    (void)state;
    th_send_str(fd, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
    out = th_read(fd, &len, 5000, th_until_responses, &one);
    norm = th_normalize(out, len);
    assert_string_equal(norm, hello_resp);
    /* Still open for the next request. */
    assert_int_equal(th_last_end(), TH_OPEN);
    free(out);
    free(norm);
    th_send_str(fd, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
    out = th_read(fd, &len, 5000, th_until_responses, &one);
    norm = th_normalize(out, len);
    assert_string_equal(norm, hello_resp);
    free(out);
    free(norm);
    close(fd);
}

static void test_pipelined_three(void **state)
{
    static const char req[] = "GET /p/a HTTP/1.1\r\nHost: x\r\n\r\n"
                              "GET /p/b HTTP/1.1\r\nHost: x\r\n\r\n"
                              "GET /p/c HTTP/1.1\r\nHost: x\r\n\r\n";
    size_t len;
    char *out = th_exchange(srv.port, req, sizeof(req) - 1, 3, &len);
    th_resp *r = th_expect_responses(out, len, 3, NULL);

    (void)state;
    assert_string_equal(r[0].body, "/p/a");
    assert_string_equal(r[1].body, "/p/b");
    assert_string_equal(r[2].body, "/p/c");
    th_resp_free(r, 3);
    free(r);
    free(out);
}

static void test_one_byte_at_a_time(void **state)
{
    static const char req[] = "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n";
    size_t i, len;
    int fd = th_connect(srv.port), one = 1;
    char *out, *norm;

    (void)state;
    for (i = 0; i < sizeof(req) - 1; i++)
        th_send(fd, req + i, 1);
    out = th_read(fd, &len, 5000, th_until_responses, &one);
    norm = th_normalize(out, len);
    assert_string_equal(norm, hello_resp);
    free(out);
    free(norm);
    close(fd);
}

static bool has_head(const char *buf, size_t len, void *arg)
{
    (void)arg;
    return len >= 4 && strstr(buf, "\r\n\r\n") != NULL;
}

static bool has_last_chunk(const char *buf, size_t len, void *arg)
{
    (void)arg;
    return len >= 5 && strstr(buf, "0\r\n\r\n") != NULL;
}

static void test_flush_headers_after_write_head(void **state)
{
    int fd = th_connect(srv.port);
    size_t len;
    char *out;

    (void)state;
    th_send_str(fd, "GET /flushed HTTP/1.1\r\nHost: x\r\n\r\n");
    out = th_read(fd, &len, 5000, has_head, NULL);
    /* The head is out before the body exists. */
    assert_non_null(strstr(out, "HTTP/1.1 201 Created\r\n"));
    assert_null(strstr(out, "late"));
    free(out);
    out = th_read(fd, &len, 5000, has_last_chunk, NULL);
    assert_non_null(strstr(out, "4\r\nlate\r\n0\r\n\r\n"));
    assert_int_equal(th_violation_count(&viol), 0);
    free(out);
    close(fd);
}

static bool has_part(const char *buf, size_t len, void *arg)
{
    (void)arg;
    return len >= 4 && strstr(buf, "4\r\npart\r\n") != NULL;
}

/* latch_stop with a request that will not finish: the drain timeout cuts
 * it, latch_run returns 0, and the client sees the body truncated. */
static void test_drain_timeout_cuts(void **state)
{
    latch_app *app = latch_app_new();
    th_server s;
    size_t len;
    char *out;
    int fd;
    int64_t t0;

    (void)state;
    latch_get(app, "/hang", hang, NULL);
    assert_int_equal(latch_app_set_limit(app, LATCH_TIMEOUT_DRAIN, 200), 0);
    th_server_start(&s, app);
    fd = th_connect(s.port);
    th_send_str(fd, "GET /hang HTTP/1.1\r\nHost: x\r\n\r\n");
    out = th_read(fd, &len, 5000, has_part, NULL);
    assert_non_null(strstr(out, "4\r\npart\r\n"));
    free(out);
    t0 = th_now_ms();
    assert_int_equal(th_server_stop(&s), 0);
    assert_true(th_now_ms() - t0 < 5000);
    out = th_read(fd, &len, 5000, NULL, NULL);
    /* Cut: no terminating chunk ever came. */
    assert_true(th_last_end() == TH_EOF || th_last_end() == TH_RESET);
    assert_null(strstr(out, "0\r\n\r\n"));
    free(out);
    close(fd);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_exact_bytes),
        cmocka_unit_test(test_pipelined_three),
        cmocka_unit_test(test_one_byte_at_a_time),
        cmocka_unit_test(test_flush_headers_after_write_head),
    };
    const struct CMUnitTest alone[] = {
        cmocka_unit_test(test_drain_timeout_cuts),
    };
    if (cmocka_run_group_tests(alone, NULL, NULL) != 0)
        return 1;
    return cmocka_run_group_tests(tests, setup, teardown);
}
