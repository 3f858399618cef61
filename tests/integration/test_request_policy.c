/*
 * test_request_policy.c - the request-line and Host policy of
 * shared/spec/http1-parsing.md (rules 2 and 4, RFC 9112 §2.3 and §3.2) and
 * the chunk-size rule 9 on a real server, on the wire:
 *
 * - HTTP/1.2 to HTTP/1.9 are served as HTTP/1.1 (RFC 9110 §6.2): one
 *   "HTTP/1.1 200" each, keep-alive, the handler sees minor version 1;
 * - another major version is one 505 + close, a malformed version one
 *   400 + close;
 * - a Host that is not uri-host [":" port], and an empty Host when the
 *   target has an authority, are one 400 + close, in HTTP/1.0 too;
 * - a chunk size of more than 16 significant hex digits is one 400 + close,
 *   not 413.
 *
 * Every refused request is followed in the same write by a good one that
 * must never be answered, and the server must serve a new connection after.
 */
#include "harness.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

/* ------------------------------------------------------------------ */
/* The server                                                           */
/* ------------------------------------------------------------------ */

static int hello(latch_req *req, latch_res *res, void *data)
{
    (void)req;
    (void)data;
    latch_res_set_header(res, "Content-Type", "text/plain");
    latch_res_send(res, "Hello", 5);
    return LATCH_DONE;
}

/* Answers "1.<minor>": the version the request is handled as. */
static int version(latch_req *req, latch_res *res, void *data)
{
    char body[8];
    int n = snprintf(body, sizeof(body), "1.%d", latch_req_version_minor(req));

    (void)data;
    latch_res_set_header(res, "Content-Type", "text/plain");
    latch_res_send(res, body, (size_t)n);
    return LATCH_DONE;
}

static th_server srv;

static int setup(void **state)
{
    latch_app *app = latch_app_new();

    (void)state;
    assert_non_null(app);
    assert_int_equal(latch_get(app, "/hello", hello, NULL), 0);
    assert_int_equal(latch_all(app, "/v", version, NULL), 0);
    th_server_start(&srv, app);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    assert_int_equal(th_server_stop(&srv), 0);
    return 0;
}

#define GOOD "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n"

static const char *reason_of(int status)
{
    switch (status) {
    case 400: return "Bad Request";
    case 505: return "HTTP Version Not Supported";
    default: fail_msg("no reason for %d", status); return NULL;
    }
}

/* `req` then GOOD in one write: exactly one `status` with Connection:
 * close, then a FIN (GOOD is never answered); then a fresh connection is
 * served. */
static void expect_refused(const char *req, int status)
{
    size_t n = strlen(req) + strlen(GOOD);
    char *both = malloc(n + 1);

    assert_non_null(both);
    strcpy(both, req);
    strcat(both, GOOD);
    th_expect_error_close(srv.port, both, n, status, reason_of(status));
    th_expect_alive(srv.port, "/hello", "Hello");
    free(both);
}

/* Exactly `n` responses to `req` on one connection, which stays open;
 * returns them (free with th_resp_free). */
static th_resp *exchange_open(const char *req, int n)
{
    int fd = th_connect(srv.port);
    size_t len;
    char *out;
    th_resp *r;

    th_send_str(fd, req);
    out = th_read(fd, &len, 5000, th_until_responses, &n);
    if (th_last_end() != TH_OPEN)
        fail_msg("connection closed after:\n%s", out);
    r = th_expect_responses(out, len, n, NULL);
    free(out);
    close(fd);
    return r;
}

/* ------------------------------------------------------------------ */
/* Versions                                                             */
/* ------------------------------------------------------------------ */

/* HTTP/1.2 .. 1.9: served as 1.1, keep-alive, pipelined with 1.1. */
static void test_minor_versions_served_as_1_1(void **state)
{
    static const char req[] = "GET /v HTTP/1.2\r\nHost: x\r\n\r\n"
                              "GET /v HTTP/1.9\r\nHost: x\r\n\r\n"
                              "POST /v HTTP/1.3\r\nHost: x\r\n"
                              "Transfer-Encoding: chunked\r\n\r\n"
                              "1\r\na\r\n0\r\n\r\n"
                              "GET /v HTTP/1.1\r\nHost: x\r\n\r\n"
                              "GET /v HTTP/1.0\r\nHost: x\r\n"
                              "Connection: keep-alive\r\n\r\n";
    static const char *const want[] = {"1.1", "1.1", "1.1", "1.1", "1.0"};
    th_resp *r;

    (void)state;
    r = exchange_open(req, 5);
    for (int i = 0; i < 5; i++) {
        if (strncmp(r[i].head, "HTTP/1.1 200 OK\r\n", 17) != 0)
            fail_msg("response %d:\n%s", i, r[i].head);
        assert_non_null(strstr(r[i].head, "\r\nConnection: keep-alive\r\n"));
        assert_string_equal(r[i].body, want[i]);
    }
    th_resp_free(r, 5);
    free(r);
}

/* Served as 1.1 means 1.1's rules too: Host required, close honoured. */
static void test_minor_version_rules_of_1_1(void **state)
{
    static const char req[] =
        "GET /v HTTP/1.5\r\nHost: x\r\nConnection: close\r\n\r\n" GOOD;
    int fd;
    size_t len;
    char *out;
    th_resp *r;

    (void)state;
    expect_refused("GET /v HTTP/1.2\r\n\r\n", 400);
    expect_refused("GET /v HTTP/1.2\r\nHost: x\r\nHost: y\r\n\r\n", 400);
    fd = th_connect(srv.port);
    th_send_str(fd, req);
    out = th_read(fd, &len, 5000, NULL, NULL);
    assert_int_equal(th_last_end(), TH_EOF);
    r = th_expect_responses(out, len, 1, NULL);
    assert_int_equal(r[0].status, 200);
    assert_string_equal(r[0].body, "1.1");
    assert_non_null(strstr(r[0].head, "\r\nConnection: close\r\n"));
    th_resp_free(r, 1);
    free(r);
    free(out);
    close(fd);
}

static void test_other_major_versions_505(void **state)
{
    static const char *const reqs[] = {
        "GET /hello HTTP/2.0\r\nHost: x\r\n\r\n",
        "GET /hello HTTP/3.0\r\nHost: x\r\n\r\n",
        "GET /hello HTTP/0.9\r\nHost: x\r\n\r\n",
        "GET /hello HTTP/9.9\r\nHost: x\r\n\r\n",
        "GET /hello HTTP/2\r\nHost: x\r\n\r\n",
        "GET /hello HTTP/2.00\r\nHost: x\r\n\r\n",
    };

    (void)state;
    for (size_t i = 0; i < sizeof(reqs) / sizeof(reqs[0]); i++)
        expect_refused(reqs[i], 505);
}

static void test_malformed_versions_400(void **state)
{
    static const char *const versions[] = {
        "HTTP/1.32", "HTTP/1.22", "HTTP/01.1", "HTTP/11.1", "HTTP/1.",
        "HTTP/1",    "HTTP/1.1x", "HTTP/1.2x", "http/1.1",  "Http/1.2",
        "HTTP/2.x",  "HTTP/2x",   "HTTP/1.01", "HTTP/1.a",  "HTTP/1,1",
    };
    char req[128];

    (void)state;
    for (size_t i = 0; i < sizeof(versions) / sizeof(versions[0]); i++) {
        snprintf(req, sizeof(req), "GET /hello %s\r\nHost: x\r\n\r\n",
                 versions[i]);
        expect_refused(req, 400);
    }
}

/* ------------------------------------------------------------------ */
/* Host                                                                 */
/* ------------------------------------------------------------------ */

static void test_bad_host_values_400(void **state)
{
    static const char *const hosts[] = {
        "u@x",     "u:p@x:80", "x/",    "x/y",         "/",         "x?y",
        "x#y",     "x,y",      "x, y",  "x y",         "x\ty",      "x:8x",
        "x:80:81", ":80",      "[::1",  "[::1]x",      "[1::2::3]", "[]",
        "x%zz",    "x%2",      "\"x\"", "caf\xc3\xa9", "http://x",
    };
    static const char *const starts[] = {
        "GET /hello HTTP/1.1",
        "GET /hello HTTP/1.0",
        "GET http://x/hello HTTP/1.1",
    };
    char req[256];

    (void)state;
    for (size_t i = 0; i < sizeof(hosts) / sizeof(hosts[0]); i++) {
        for (size_t k = 0; k < sizeof(starts) / sizeof(starts[0]); k++) {
            snprintf(req, sizeof(req), "%s\r\nHost: %s\r\n\r\n", starts[k],
                     hosts[i]);
            expect_refused(req, 400);
        }
    }
}

/* Empty Host: fine for origin-form, 400 when the target has an
 * authority. */
static void test_empty_host(void **state)
{
    static const char *const ok_reqs[] = {
        "GET /hello HTTP/1.1\r\nHost:\r\n\r\n",
        "GET /hello HTTP/1.1\r\nHost: \r\n\r\n",
        "GET /hello HTTP/1.0\r\nHost:\r\n\r\n",
    };
    th_resp *r;

    (void)state;
    for (size_t i = 0; i < sizeof(ok_reqs) / sizeof(ok_reqs[0]); i++) {
        r = exchange_open(ok_reqs[i], 1);
        assert_int_equal(r[0].status, 200);
        assert_string_equal(r[0].body, "Hello");
        th_resp_free(r, 1);
        free(r);
    }
    expect_refused("GET http://x/hello HTTP/1.1\r\nHost:\r\n\r\n", 400);
    expect_refused("GET http://x:80/hello HTTP/1.1\r\nHost: \t\r\n\r\n", 400);
    expect_refused("GET http://u@x/hello HTTP/1.0\r\nHost:\r\n\r\n", 400);
}

/* The shapes that stay valid: ports, IP literals, sub-delims. */
static void test_good_host_values(void **state)
{
    static const char *const hosts[] = {
        "x",          "x:",         "x:8080",      "127.0.0.1:1",
        "[::1]",      "[::1]:8080", "[v1.x]",      "0.0.0.0=5000",
        "a_b~c-d.e.", "%41",        "X.EXAMPLE:1",
    };
    char req[256];
    th_resp *r;

    (void)state;
    for (size_t i = 0; i < sizeof(hosts) / sizeof(hosts[0]); i++) {
        snprintf(req, sizeof(req), "GET /hello HTTP/1.1\r\nHost: %s\r\n\r\n",
                 hosts[i]);
        r = exchange_open(req, 1);
        if (r[0].status != 200)
            fail_msg("Host: %s answered %d", hosts[i], r[0].status);
        th_resp_free(r, 1);
        free(r);
    }
    /* absolute-form: the target wins over a different Host (RFC 9112
     * §3.2.2), it is not refused. */
    r = exchange_open("GET http://y/hello HTTP/1.1\r\nHost: x\r\n\r\n", 1);
    assert_int_equal(r[0].status, 200);
    th_resp_free(r, 1);
    free(r);
}

/* ------------------------------------------------------------------ */
/* Chunk sizes                                                          */
/* ------------------------------------------------------------------ */

#define CHUNKED                                                                \
    "POST /v HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"

static void test_chunk_size_17_digits_400(void **state)
{
    (void)state;
    expect_refused(CHUNKED "10000000000000000\r\nx\r\n0\r\n\r\n", 400);
    expect_refused(CHUNKED "FFFFFFFFFFFFFFFFF\r\nx\r\n0\r\n\r\n", 400);
    expect_refused(CHUNKED "0000FFFFFFFFFFFFFFFFF;a=b\r\nx\r\n0\r\n\r\n", 400);
    expect_refused(CHUNKED "1\r\na\r\n123456789abcdef012\r\nx\r\n0\r\n\r\n",
                   400);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_minor_versions_served_as_1_1),
        cmocka_unit_test(test_minor_version_rules_of_1_1),
        cmocka_unit_test(test_other_major_versions_505),
        cmocka_unit_test(test_malformed_versions_400),
        cmocka_unit_test(test_bad_host_values_400),
        cmocka_unit_test(test_empty_host),
        cmocka_unit_test(test_good_host_values),
        cmocka_unit_test(test_chunk_size_17_digits_400),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
