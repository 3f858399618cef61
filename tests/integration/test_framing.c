/*
 * test_framing.c - request bodies on a real server: Content-Length and
 * chunked bodies echoed byte for byte (whole, split across many writes,
 * one byte at a time), the body limit (413 before the body is read, and
 * for a chunked total), Expect: 100-continue, and every framing rule of
 * shared/spec/http1-parsing.md "Message framing": each bad request gets
 * exactly one 400 (501 for an unimplemented coding) with Connection:
 * close, then a FIN, and the request pipelined behind it is never
 * answered.
 *
 * Not here: head limits and grammar (test_limits.c), connection lifecycle
 * (test_conn.c).
 */
#include "harness.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#define BODY_LIMIT 1024

/* ------------------------------------------------------------------ */
/* The server                                                           */
/* ------------------------------------------------------------------ */

static int echo(latch_req *req, latch_res *res, void *data)
{
    const void *body;
    size_t len;

    (void)data;
    /* No cmocka assert here: this runs on the server's thread. */
    if (latch_req_body(req, &body, &len) != 0) {
        latch_res_send_status(res, 500);
        return LATCH_DONE;
    }
    latch_res_set_header(res, "Content-Type", "application/octet-stream");
    latch_res_send(res, body, len);
    return LATCH_DONE;
}

static int hello(latch_req *req, latch_res *res, void *data)
{
    (void)req;
    (void)data;
    latch_res_set_header(res, "Content-Type", "text/plain");
    latch_res_send(res, "Hello", 5);
    return LATCH_DONE;
}

static th_server srv;

static int setup(void **state)
{
    latch_app *app = latch_app_new();

    (void)state;
    assert_non_null(app);
    assert_int_equal(latch_app_set_limit(app, LATCH_LIMIT_BODY, BODY_LIMIT), 0);
    assert_int_equal(latch_all(app, "/echo", echo, NULL), 0);
    assert_int_equal(latch_get(app, "/hello", hello, NULL), 0);
    th_server_start(&srv, app);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    assert_int_equal(th_server_stop(&srv), 0);
    return 0;
}

/* ------------------------------------------------------------------ */
/* Helpers                                                              */
/* ------------------------------------------------------------------ */

#define GOOD "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n"

static const char hello_resp[] = "HTTP/1.1 200 OK\r\n"
                                 "Content-Type: text/plain\r\n"
                                 "Content-Length: 5\r\n"
                                 "Date: <d>\r\n"
                                 "Connection: keep-alive\r\n"
                                 "Keep-Alive: timeout=5\r\n"
                                 "\r\n"
                                 "Hello";

/* The normalized bytes of the echo of `body` (no NUL in it). */
static char *echo_resp(const char *body, size_t len)
{
    size_t cap = len + 256;
    char *s = malloc(cap);
    int n;

    assert_non_null(s);
    n = snprintf(s, cap,
                 "HTTP/1.1 200 OK\r\n"
                 "Content-Type: application/octet-stream\r\n"
                 "Content-Length: %zu\r\n"
                 "Date: <d>\r\n"
                 "Connection: keep-alive\r\n"
                 "Keep-Alive: timeout=5\r\n"
                 "\r\n",
                 len);
    assert_true(n > 0 && (size_t)n + len < cap);
    memcpy(s + n, body, len);
    s[(size_t)n + len] = '\0';
    return s;
}

/* Sends `req` in pieces of `step` bytes (0: one write), reads `nresp`
 * responses and returns the raw bytes; asserts the connection stays open. */
static char *send_split(const char *req, size_t len, size_t step, int nresp,
                        size_t *outlen)
{
    int fd = th_connect(srv.port);
    size_t off;
    char *out;

    if (step == 0)
        step = len;
    for (off = 0; off < len; off += step)
        th_send(fd, req + off, len - off < step ? len - off : step);
    out = th_read(fd, outlen, 5000, th_until_responses, &nresp);
    assert_int_equal(th_last_end(), TH_OPEN);
    close(fd);
    return out;
}

/* Asserts that `out` is exactly the echo of `body` then the hello reply. */
static void expect_echo_then_hello(const char *out, size_t len,
                                   const char *body, size_t blen)
{
    th_resp *r = th_expect_responses(out, len, 2, NULL);
    char *want = echo_resp(body, blen), *norm = th_normalize(out, len);
    size_t wl = strlen(want);

    assert_int_equal(r[0].status, 200);
    assert_int_equal(r[0].body_len, blen);
    assert_memory_equal(r[0].body, body, blen);
    assert_string_equal(r[1].body, "Hello");
    assert_true(strlen(norm) == wl + strlen(hello_resp));
    assert_memory_equal(norm, want, wl);
    assert_string_equal(norm + wl, hello_resp);
    th_resp_free(r, 2);
    free(r);
    free(want);
    free(norm);
}

/* ------------------------------------------------------------------ */
/* Content-Length bodies                                                */
/* ------------------------------------------------------------------ */

static void test_cl_body_echoed(void **state)
{
    static const char req[] = "POST /echo HTTP/1.1\r\n"
                              "Host: x\r\n"
                              "Content-Length: 17\r\n"
                              "\r\n"
                              "hello\r\nworld\r\n\r\nx" GOOD;
    size_t len;
    char *out = send_split(req, sizeof(req) - 1, 0, 2, &len);

    (void)state;
    expect_echo_then_hello(out, len, "hello\r\nworld\r\n\r\nx", 17);
    free(out);
}

/* Every byte value, NUL included, survives; leading zeros and OWS around
 * the Content-Length value are allowed. */
static void test_cl_binary_body_leading_zeros(void **state)
{
    char req[1024];
    char body[256];
    size_t len, n, i;
    int fd = th_connect(srv.port), two = 2;
    char *out;
    th_resp *r;

    (void)state;
    for (i = 0; i < sizeof(body); i++)
        body[i] = (char)i;
    n = (size_t)snprintf(req, sizeof(req),
                         "PUT /echo HTTP/1.1\r\nHost: x\r\n"
                         "Content-Length: \t 000000000000000000000256 \t\r\n"
                         "\r\n");
    memcpy(req + n, body, sizeof(body));
    n += sizeof(body);
    memcpy(req + n, GOOD, strlen(GOOD));
    n += strlen(GOOD);
    th_send(fd, req, n);
    out = th_read(fd, &len, 5000, th_until_responses, &two);
    r = th_expect_responses(out, len, 2, NULL);
    assert_int_equal(r[0].status, 200);
    assert_int_equal(r[0].body_len, sizeof(body));
    assert_memory_equal(r[0].body, body, sizeof(body));
    assert_string_equal(r[1].body, "Hello");
    th_resp_free(r, 2);
    free(r);
    free(out);
    close(fd);
}

static void test_cl_body_split_and_bytewise(void **state)
{
    static const char req[] = "POST /echo HTTP/1.1\r\n"
                              "Host: x\r\n"
                              "Content-Length: 26\r\n"
                              "\r\n"
                              "abcdefghijklmnopqrstuvwxyz" GOOD;
    static const size_t steps[] = {1, 2, 3, 7, 13, 40};
    size_t i, len;

    (void)state;
    for (i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
        char *out = send_split(req, sizeof(req) - 1, steps[i], 2, &len);
        expect_echo_then_hello(out, len, "abcdefghijklmnopqrstuvwxyz", 26);
        free(out);
    }
}

/* A body of exactly the limit is read and answered. */
static void test_cl_body_exactly_at_limit(void **state)
{
    char *req = malloc(BODY_LIMIT + 256), body[BODY_LIMIT];
    size_t n, len, i;
    char *out;

    (void)state;
    assert_non_null(req);
    for (i = 0; i < sizeof(body); i++)
        body[i] = (char)('a' + i % 26);
    n = (size_t)sprintf(req,
                        "POST /echo HTTP/1.1\r\nHost: x\r\n"
                        "Content-Length: %d\r\n\r\n",
                        BODY_LIMIT);
    memcpy(req + n, body, sizeof(body));
    n += sizeof(body);
    memcpy(req + n, GOOD, strlen(GOOD));
    n += strlen(GOOD);
    out = send_split(req, n, 0, 2, &len);
    expect_echo_then_hello(out, len, body, sizeof(body));
    free(out);
    free(req);
}

/* ------------------------------------------------------------------ */
/* Chunked bodies                                                       */
/* ------------------------------------------------------------------ */

/* Several chunks, extensions (token, token=token, quoted-string with a
 * quoted-pair), upper case hex with leading zeros, chunk data that looks
 * like framing, and a trailer section: the body is the data only. */
static const char chunked_req[] = "POST /echo HTTP/1.1\r\n"
                                  "Host: x\r\n"
                                  "Transfer-Encoding: chunked\r\n"
                                  "\r\n"
                                  "5;name=value\r\n"
                                  "hello\r\n"
                                  "1;a;b=\"q \\\" s\"\r\n"
                                  " \r\n"
                                  "00A\r\n"
                                  "0123456789\r\n"
                                  "1c\r\n"
                                  "\r\n0\r\n\r\nabcdefghijklmnopqrstu\r\n"
                                  "0;last=1\r\n"
                                  "X-Trailer: t\r\n"
                                  "Y: 2\r\n"
                                  "\r\n" GOOD;
static const char chunked_body[] = "hello 0123456789"
                                   "\r\n0\r\n\r\nabcdefghijklmnopqrstu";

static void test_chunked_body_echoed(void **state)
{
    size_t len;
    char *out = send_split(chunked_req, sizeof(chunked_req) - 1, 0, 2, &len);

    (void)state;
    expect_echo_then_hello(out, len, chunked_body, sizeof(chunked_body) - 1);
    free(out);
}

static void test_chunked_body_many_writes(void **state)
{
    static const size_t steps[] = {2, 3, 5, 7, 11, 16};
    size_t i, len;

    (void)state;
    for (i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
        char *out =
            send_split(chunked_req, sizeof(chunked_req) - 1, steps[i], 2, &len);
        expect_echo_then_hello(out, len, chunked_body,
                               sizeof(chunked_body) - 1);
        free(out);
    }
}

static void test_chunked_body_one_byte_at_a_time(void **state)
{
    size_t len;
    char *out = send_split(chunked_req, sizeof(chunked_req) - 1, 1, 2, &len);

    (void)state;
    expect_echo_then_hello(out, len, chunked_body, sizeof(chunked_body) - 1);
    free(out);
}

/* Coding names are case-insensitive and OWS around the value is not part
 * of it; an empty chunked body is empty. */
static void test_chunked_case_and_empty(void **state)
{
    static const char req[] = "POST /echo HTTP/1.1\r\n"
                              "Host: x\r\n"
                              "Transfer-Encoding: \t CHUNKED \t\r\n"
                              "\r\n"
                              "0\r\n"
                              "\r\n" GOOD;
    size_t len;
    char *out = send_split(req, sizeof(req) - 1, 0, 2, &len);

    (void)state;
    expect_echo_then_hello(out, len, "", 0);
    free(out);
}

/* Chunks whose sizes add up to exactly the limit are accepted. */
static void test_chunked_total_exactly_at_limit(void **state)
{
    char *req = malloc(4 * BODY_LIMIT), body[BODY_LIMIT];
    size_t n, len, i;
    char *out;

    (void)state;
    assert_non_null(req);
    for (i = 0; i < sizeof(body); i++)
        body[i] = (char)('A' + i % 26);
    n = (size_t)sprintf(req, "POST /echo HTTP/1.1\r\nHost: x\r\n"
                             "Transfer-Encoding: chunked\r\n\r\n");
    /* 0x200 + 0x1ff + 0x1 = 1024 */
    n += (size_t)sprintf(req + n, "200\r\n");
    memcpy(req + n, body, 0x200);
    n += 0x200;
    n += (size_t)sprintf(req + n, "\r\n1ff\r\n");
    memcpy(req + n, body + 0x200, 0x1ff);
    n += 0x1ff;
    n += (size_t)sprintf(req + n, "\r\n1\r\n");
    req[n++] = body[BODY_LIMIT - 1];
    n += (size_t)sprintf(req + n, "\r\n0\r\n\r\n" GOOD);
    out = send_split(req, n, 0, 2, &len);
    expect_echo_then_hello(out, len, body, sizeof(body));
    free(out);
    free(req);
}

/* ------------------------------------------------------------------ */
/* The body limit                                                       */
/* ------------------------------------------------------------------ */

/* Only the head is sent: the 413 must come without waiting for a body. */
static void test_413_content_length_before_body(void **state)
{
    static const char req[] = "POST /echo HTTP/1.1\r\n"
                              "Host: x\r\n"
                              "Content-Length: 1025\r\n"
                              "\r\n";

    (void)state;
    th_expect_error_close(srv.port, req, sizeof(req) - 1, 413,
                          "Payload Too Large");
    th_expect_alive(srv.port, "/hello", "Hello");
}

/* With Expect: 100-continue and a length over the limit: the 413, and no
 * 100 Continue before it. */
static void test_413_with_expect_no_continue(void **state)
{
    static const char req[] = "POST /echo HTTP/1.1\r\n"
                              "Host: x\r\n"
                              "Content-Length: 4096\r\n"
                              "Expect: 100-continue\r\n"
                              "\r\n";

    (void)state;
    th_expect_error_close(srv.port, req, sizeof(req) - 1, 413,
                          "Payload Too Large");
    th_expect_alive(srv.port, "/hello", "Hello");
}

static void test_413_chunked_total(void **state)
{
    char *req = malloc(4 * BODY_LIMIT);
    size_t n;

    (void)state;
    assert_non_null(req);
    /* 0x200 + 0x200 + 0x1 = 1025 */
    n = (size_t)sprintf(req, "POST /echo HTTP/1.1\r\nHost: x\r\n"
                             "Transfer-Encoding: chunked\r\n\r\n");
    n += (size_t)sprintf(req + n, "200\r\n");
    memset(req + n, 'a', 0x200);
    n += 0x200;
    n += (size_t)sprintf(req + n, "\r\n200\r\n");
    memset(req + n, 'b', 0x200);
    n += 0x200;
    n += (size_t)sprintf(req + n, "\r\n1\r\nc\r\n0\r\n\r\n" GOOD);
    th_expect_error_close(srv.port, req, n, 413, "Payload Too Large");
    th_expect_alive(srv.port, "/hello", "Hello");
    free(req);
}

/* Chunk extensions count against their own limit (16 KiB by default). */
static void test_413_chunk_extensions_over_limit(void **state)
{
    size_t cap = 20000, n;
    char *req = malloc(cap);

    (void)state;
    assert_non_null(req);
    n = (size_t)sprintf(req, "POST /echo HTTP/1.1\r\nHost: x\r\n"
                             "Transfer-Encoding: chunked\r\n\r\n1;e=");
    memset(req + n, 'v', 16400);
    n += 16400;
    n += (size_t)sprintf(req + n, "\r\nx\r\n0\r\n\r\n" GOOD);
    assert_true(n < cap);
    th_expect_error_close(srv.port, req, n, 413, "Payload Too Large");
    th_expect_alive(srv.port, "/hello", "Hello");
    free(req);
}

/* ------------------------------------------------------------------ */
/* Expect: 100-continue                                                 */
/* ------------------------------------------------------------------ */

static void test_expect_100_continue(void **state)
{
    static const char head[] = "POST /echo HTTP/1.1\r\n"
                               "Host: x\r\n"
                               "Content-Length: 5\r\n"
                               "Expect: 100-continue\r\n"
                               "\r\n";
    static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
    size_t want = sizeof(cont) - 1, len1, len2;
    int fd = th_connect(srv.port), one = 1;
    char *a, *b, *all, *norm, *echo;
    th_resp *r;

    (void)state;
    th_send(fd, head, sizeof(head) - 1);
    a = th_read(fd, &len1, 5000, th_until_bytes, &want);
    assert_int_equal(th_last_end(), TH_OPEN);
    assert_int_equal(len1, want);
    assert_memory_equal(a, cont, want);
    th_send_str(fd, "hello");
    b = th_read(fd, &len2, 5000, th_until_responses, &one);
    assert_int_equal(th_last_end(), TH_OPEN);
    all = malloc(len1 + len2 + 1);
    assert_non_null(all);
    memcpy(all, a, len1);
    memcpy(all + len1, b, len2);
    r = th_expect_responses(all, len1 + len2, 2, NULL);
    assert_int_equal(r[0].status, 100);
    assert_int_equal(r[1].status, 200);
    norm = th_normalize(b, len2);
    echo = echo_resp("hello", 5);
    assert_string_equal(norm, echo);
    /* The connection serves the next request. */
    free(b);
    th_send_str(fd, GOOD);
    b = th_read(fd, &len2, 5000, th_until_responses, &one);
    free(norm);
    norm = th_normalize(b, len2);
    assert_string_equal(norm, hello_resp);
    th_resp_free(r, 2);
    free(r);
    free(a);
    free(b);
    free(all);
    free(norm);
    free(echo);
    close(fd);
}

/* ------------------------------------------------------------------ */
/* Framing errors: one table, one test per rule                         */
/* ------------------------------------------------------------------ */

typedef struct bad_case {
    const char *name;
    const char *req; /* always followed by GOOD in the same write */
    int status;
} bad_case;

#define POST11 "POST /echo HTTP/1.1\r\nHost: x\r\n"
#define CHUNKED POST11 "Transfer-Encoding: chunked\r\n\r\n"

static const bad_case bad_cases[] = {
    /* 5. Transfer-Encoding and Content-Length together, any order. */
    {"te_then_cl",
     POST11 "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n"
            "0\r\n\r\n",
     400},
    {"cl_then_te",
     POST11 "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
            "0\r\n\r\n",
     400},
    {"cl_then_te_gzip_chunked",
     POST11 "Content-Length: 5\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
            "0\r\n\r\n",
     400},
    /* 6. Transfer-Encoding in HTTP/1.0; more than one line. */
    {"te_in_http10",
     "POST /echo HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400},
    {"te_two_lines",
     POST11 "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n"
            "\r\n0\r\n\r\n",
     400},
    {"te_two_lines_gzip_then_chunked",
     POST11 "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n"
            "\r\n0\r\n\r\n",
     400},
    /* 6. Bad coding lists. */
    {"te_empty_leading_element",
     POST11 "Transfer-Encoding: , chunked\r\n\r\n0\r\n\r\n", 400},
    {"te_empty_middle_element",
     POST11 "Transfer-Encoding: gzip,,chunked\r\n\r\n0\r\n\r\n", 400},
    {"te_empty_trailing_element",
     POST11 "Transfer-Encoding: chunked,\r\n\r\n0\r\n\r\n", 400},
    {"te_empty_value", POST11 "Transfer-Encoding: \r\n\r\n0\r\n\r\n", 400},
    {"te_parameter", POST11 "Transfer-Encoding: chunked;q=1\r\n\r\n0\r\n\r\n",
     400},
    {"te_parameter_on_other",
     POST11 "Transfer-Encoding: gzip;level=1, chunked\r\n\r\n0\r\n\r\n", 400},
    {"te_quoted", POST11 "Transfer-Encoding: \"chunked\"\r\n\r\n0\r\n\r\n",
     400},
    {"te_non_token", POST11 "Transfer-Encoding: chu{nked\r\n\r\n0\r\n\r\n",
     400},
    {"te_space_inside", POST11 "Transfer-Encoding: chu nked\r\n\r\n0\r\n\r\n",
     400},
    {"te_chunked_not_last",
     POST11 "Transfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n", 400},
    {"te_no_chunked", POST11 "Transfer-Encoding: gzip\r\n\r\n0\r\n\r\n", 400},
    {"te_identity", POST11 "Transfer-Encoding: identity\r\n\r\n0\r\n\r\n", 400},
    {"te_chunked_twice",
     POST11 "Transfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n", 400},
    /* 6. A valid list with a coding latch does not implement: 501. */
    {"te_gzip_chunked",
     POST11 "Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501},
    {"te_deflate_chunked",
     POST11 "Transfer-Encoding: deflate,chunked\r\n\r\n0\r\n\r\n", 501},
    /* 7. Content-Length: digits only, one line, one value. */
    {"cl_plus_sign", POST11 "Content-Length: +5\r\n\r\nhello", 400},
    {"cl_minus_sign", POST11 "Content-Length: -5\r\n\r\nhello", 400},
    {"cl_inner_space", POST11 "Content-Length: 5 5\r\n\r\nhello", 400},
    {"cl_list_same_value", POST11 "Content-Length: 5, 5\r\n\r\nhello", 400},
    {"cl_list_no_space", POST11 "Content-Length: 5,5\r\n\r\nhello", 400},
    {"cl_two_lines_same",
     POST11 "Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello", 400},
    {"cl_two_lines_differ",
     POST11 "Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello", 400},
    {"cl_empty", POST11 "Content-Length: \r\n\r\nhello", 400},
    {"cl_hex", POST11 "Content-Length: 0x5\r\n\r\nhello", 400},
    {"cl_trailing_letter", POST11 "Content-Length: 5a\r\n\r\nhello", 400},
    {"cl_decimal_point", POST11 "Content-Length: 5.0\r\n\r\nhello", 400},
    {"cl_19_digits", POST11 "Content-Length: 1000000000000000005\r\n\r\nhello",
     400},
    {"cl_20_digits_overflow",
     POST11 "Content-Length: 18446744073709551621\r\n\r\nhello", 400},
    /* 18 digits is a valid length, only above the body limit. */
    {"cl_18_digits_over_limit",
     POST11 "Content-Length: 999999999999999999\r\n\r\nhello", 413},
    /* 9. Chunk sizes: hex digits only. */
    {"chunk_size_0x", CHUNKED "0x5\r\nhello\r\n0\r\n\r\n", 400},
    {"chunk_size_leading_space", CHUNKED " 5\r\nhello\r\n0\r\n\r\n", 400},
    {"chunk_size_trailing_space", CHUNKED "5 \r\nhello\r\n0\r\n\r\n", 400},
    {"chunk_size_space_before_ext", CHUNKED "5 ;a=b\r\nhello\r\n0\r\n\r\n",
     400},
    {"chunk_size_minus", CHUNKED "-5\r\nhello\r\n0\r\n\r\n", 400},
    {"chunk_size_plus", CHUNKED "+5\r\nhello\r\n0\r\n\r\n", 400},
    {"chunk_size_underscore", CHUNKED "5_0\r\nhello\r\n0\r\n\r\n", 400},
    {"chunk_size_empty", CHUNKED "\r\nhello\r\n0\r\n\r\n", 400},
    {"chunk_size_not_hex", CHUNKED "g\r\nhello\r\n0\r\n\r\n", 400},
    {"chunk_size_bare_lf", CHUNKED "5\nhello\r\n0\r\n\r\n", 400},
    {"chunk_size_bare_cr", CHUNKED "5\rhello\r\n0\r\n\r\n", 400},
    /* 9. Extensions: ";" token ["=" (token / quoted-string)]. */
    {"chunk_ext_empty_name", CHUNKED "5;\r\nhello\r\n0\r\n\r\n", 400},
    {"chunk_ext_empty_value", CHUNKED "5;a=\r\nhello\r\n0\r\n\r\n", 400},
    {"chunk_ext_space_in_name", CHUNKED "5;a b\r\nhello\r\n0\r\n\r\n", 400},
    {"chunk_ext_unterminated_quote", CHUNKED "5;a=\"x\r\nhello\r\n0\r\n\r\n",
     400},
    /* 9. Chunk data must be followed by exactly CRLF. */
    {"chunk_data_then_byte", CHUNKED "5\r\nhelloX\r\n0\r\n\r\n", 400},
    {"chunk_data_then_bare_lf", CHUNKED "5\r\nhello\n0\r\n\r\n", 400},
    {"chunk_data_then_bare_cr", CHUNKED "5\r\nhello\rX0\r\n\r\n", 400},
    {"chunk_data_too_long", CHUNKED "3\r\nhello\r\n0\r\n\r\n", 400},
    /* 9. The trailer section is parsed like fields. */
    {"trailer_obs_fold", CHUNKED "0\r\nX: a\r\n b\r\n\r\n", 400},
    {"trailer_no_colon", CHUNKED "0\r\nNoColon\r\n\r\n", 400},
    {"trailer_bare_lf", CHUNKED "0\r\nX: a\n\r\n", 400},
    {"last_chunk_bare_lf_end", CHUNKED "0\r\n\n", 400},
};

static const char *reason_of(int status)
{
    switch (status) {
    case 400: return "Bad Request";
    case 413: return "Payload Too Large";
    case 501: return "Not Implemented";
    default: fail_msg("no reason for %d", status); return NULL;
    }
}

/* The bad request and a good one in one write: exactly one response, the
 * error, then a FIN; the good one is never answered. */
static void test_bad_framing(void **state)
{
    const bad_case *bc = *state;
    size_t n = strlen(bc->req) + strlen(GOOD);
    char *req = malloc(n + 1);

    assert_non_null(req);
    strcpy(req, bc->req);
    strcat(req, GOOD);
    th_expect_error_close(srv.port, req, n, bc->status, reason_of(bc->status));
    th_expect_alive(srv.port, "/hello", "Hello");
    free(req);
}

/* A good request, then a bad one, then a good one, in one write: the
 * first is answered, the second refused, the third never answered. */
static void test_good_bad_good_pipelined(void **state)
{
    static const char req[] =
        GOOD POST11 "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n"
                    "0\r\n\r\n" GOOD;
    int fd = th_connect(srv.port);
    size_t len;
    char *out, *norm, *err = th_error_bytes(400, "Bad Request");
    th_resp *r;

    (void)state;
    th_send(fd, req, sizeof(req) - 1);
    out = th_read(fd, &len, 5000, NULL, NULL);
    assert_int_equal(th_last_end(), TH_EOF);
    r = th_expect_responses(out, len, 2, NULL);
    assert_int_equal(r[0].status, 200);
    assert_string_equal(r[0].body, "Hello");
    assert_int_equal(r[1].status, 400);
    norm = th_normalize(out, len);
    assert_true(strlen(norm) > strlen(err));
    assert_string_equal(norm + strlen(norm) - strlen(err), err);
    th_resp_free(r, 2);
    free(r);
    free(out);
    free(norm);
    free(err);
    close(fd);
}

int main(void)
{
    static const struct CMUnitTest fixed[] = {
        cmocka_unit_test(test_cl_body_echoed),
        cmocka_unit_test(test_cl_binary_body_leading_zeros),
        cmocka_unit_test(test_cl_body_split_and_bytewise),
        cmocka_unit_test(test_cl_body_exactly_at_limit),
        cmocka_unit_test(test_chunked_body_echoed),
        cmocka_unit_test(test_chunked_body_many_writes),
        cmocka_unit_test(test_chunked_body_one_byte_at_a_time),
        cmocka_unit_test(test_chunked_case_and_empty),
        cmocka_unit_test(test_chunked_total_exactly_at_limit),
        cmocka_unit_test(test_413_content_length_before_body),
        cmocka_unit_test(test_413_with_expect_no_continue),
        cmocka_unit_test(test_413_chunked_total),
        cmocka_unit_test(test_413_chunk_extensions_over_limit),
        cmocka_unit_test(test_expect_100_continue),
        cmocka_unit_test(test_good_bad_good_pipelined),
    };
    enum {
        NFIXED = sizeof(fixed) / sizeof(fixed[0]),
        NBAD = sizeof(bad_cases) / sizeof(bad_cases[0])
    };
    static struct CMUnitTest tests[NFIXED + NBAD];
    static char names[NBAD][80];
    size_t i;

    for (i = 0; i < NFIXED; i++)
        tests[i] = fixed[i];
    for (i = 0; i < NBAD; i++) {
        snprintf(names[i], sizeof(names[i]), "test_bad_framing_%s",
                 bad_cases[i].name);
        tests[NFIXED + i] = (struct CMUnitTest){
            names[i], test_bad_framing, NULL, NULL, (void *)&bad_cases[i]};
    }
    return _cmocka_run_group_tests("test_framing", tests, NFIXED + NBAD, setup,
                                   teardown);
}
