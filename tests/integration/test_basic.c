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

static th_server srv;

static int setup(void **state)
{
    latch_app *app = latch_app_new();

    (void)state;
    latch_get(app, "/hello", hello, NULL);
    latch_get(app, "/p/*", echo_path, NULL);
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_exact_bytes),
        cmocka_unit_test(test_pipelined_three),
        cmocka_unit_test(test_one_byte_at_a_time),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
