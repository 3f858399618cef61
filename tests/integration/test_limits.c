/*
 * test_limits.c - the head limits, the request grammar and the timeouts of
 * shared/spec/http1-parsing.md on a real server: 414 and 431 just over each
 * configured limit and success exactly at it; 400 for each grammar rule
 * (bare LF, bare CR, obs-fold, space before the colon, Host rules, bad
 * versions); 505 for other HTTP versions; 408 when the head does not arrive
 * in time; the keep-alive idle close. Every refused request is followed,
 * in the same write, by a good one that must never be answered, and every
 * error test checks that a new connection is still served.
 *
 * Not here: body framing (test_framing.c).
 */
#include "harness.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#define LIM_REQUEST_LINE 256
#define LIM_FIELD_LINE 128
#define LIM_HEAD 512
#define LIM_FIELDS 10
#define SHORT_MS 200

/* ------------------------------------------------------------------ */
/* The servers                                                          */
/* ------------------------------------------------------------------ */

static int hello(latch_req *req, latch_res *res, void *data)
{
    (void)req;
    (void)data;
    latch_res_set_header(res, "Content-Type", "text/plain");
    latch_res_send(res, "Hello", 5);
    return LATCH_DONE;
}

static int ok(latch_req *req, latch_res *res, void *data)
{
    (void)req;
    (void)data;
    latch_res_set_header(res, "Content-Type", "text/plain");
    latch_res_send(res, "ok", 2);
    return LATCH_DONE;
}

static th_server srv;

static latch_app *new_app(void)
{
    latch_app *app = latch_app_new();

    assert_non_null(app);
    assert_int_equal(latch_get(app, "/hello", hello, NULL), 0);
    assert_int_equal(latch_get(app, "/l/*", ok, NULL), 0);
    return app;
}

/* Small head limits, default timeouts. */
static int setup_limits(void **state)
{
    latch_app *app = new_app();

    (void)state;
    assert_int_equal(
        latch_app_set_limit(app, LATCH_LIMIT_REQUEST_LINE, LIM_REQUEST_LINE),
        0);
    assert_int_equal(
        latch_app_set_limit(app, LATCH_LIMIT_FIELD_LINE, LIM_FIELD_LINE), 0);
    assert_int_equal(latch_app_set_limit(app, LATCH_LIMIT_HEAD, LIM_HEAD), 0);
    assert_int_equal(latch_app_set_limit(app, LATCH_LIMIT_FIELDS, LIM_FIELDS),
                     0);
    th_server_start(&srv, app);
    return 0;
}

/* Default limits, short header and keep-alive timeouts. */
static int setup_timeouts(void **state)
{
    latch_app *app = new_app();

    (void)state;
    assert_int_equal(latch_app_set_limit(app, LATCH_TIMEOUT_HEADER, SHORT_MS),
                     0);
    assert_int_equal(
        latch_app_set_limit(app, LATCH_TIMEOUT_KEEPALIVE, SHORT_MS), 0);
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

/* A growable request text. */
typedef struct sb {
    char *s;
    size_t len, cap;
} sb;

static void sb_add(sb *b, const char *p, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        b->cap = (b->len + n + 1) * 2;
        b->s = realloc(b->s, b->cap);
        assert_non_null(b->s);
    }
    memcpy(b->s + b->len, p, n);
    b->len += n;
    b->s[b->len] = '\0';
}

static void sb_str(sb *b, const char *s)
{
    sb_add(b, s, strlen(s));
}

static void sb_fill(sb *b, char c, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++)
        sb_add(b, &c, 1);
}

/* One field line "name: <v x vlen>\r\n". Returns its length in bytes. */
static size_t sb_field(sb *b, const char *name, size_t vlen)
{
    size_t before = b->len;

    sb_str(b, name);
    sb_str(b, ": ");
    sb_fill(b, 'v', vlen);
    sb_str(b, "\r\n");
    return b->len - before;
}

/* Sends a request that must succeed: exactly one 200 "ok" or "Hello". */
static void expect_ok(const char *req, size_t len, const char *body)
{
    size_t n;
    char *out = th_exchange(srv.port, req, len, 1, &n);
    th_resp *r = th_expect_responses(out, n, 1, NULL);

    assert_int_equal(r[0].status, 200);
    assert_string_equal(r[0].body, body);
    th_resp_free(r, 1);
    free(r);
    free(out);
}

/* The request plus GOOD in one write: the error, a FIN, nothing else; then
 * a new connection is served. */
static void expect_refused(const char *req, size_t len, int status,
                           const char *reason)
{
    sb b = {0};

    sb_add(&b, req, len);
    sb_str(&b, GOOD);
    th_expect_error_close(srv.port, b.s, b.len, status, reason);
    th_expect_alive(srv.port, "/hello", "Hello");
    free(b.s);
}

/* ------------------------------------------------------------------ */
/* Request line: 414                                                    */
/* ------------------------------------------------------------------ */

/* "GET /l/<k bytes> HTTP/1.1\r\n": 18 + k bytes, CRLF included. */
static void request_line(sb *b, size_t total)
{
    assert_true(total > 18);
    sb_str(b, "GET /l/");
    sb_fill(b, 'a', total - 18);
    sb_str(b, " HTTP/1.1\r\n");
    assert_int_equal(b->len, total);
}

static void test_request_line_at_limit(void **state)
{
    sb b = {0};

    (void)state;
    request_line(&b, LIM_REQUEST_LINE);
    sb_str(&b, "Host: x\r\n\r\n");
    expect_ok(b.s, b.len, "ok");
    free(b.s);
}

static void test_414_request_line_over_limit(void **state)
{
    sb b = {0};

    (void)state;
    request_line(&b, LIM_REQUEST_LINE + 1);
    sb_str(&b, "Host: x\r\n\r\n");
    expect_refused(b.s, b.len, 414, "URI Too Long");
    free(b.s);
}

/* A request line far over the limit and never finished: refused as soon
 * as the limit is crossed, without waiting for its end. */
static void test_414_unfinished_request_line(void **state)
{
    sb b = {0};

    (void)state;
    sb_str(&b, "GET /l/");
    sb_fill(&b, 'a', 4 * LIM_REQUEST_LINE);
    th_expect_error_close(srv.port, b.s, b.len, 414, "URI Too Long");
    th_expect_alive(srv.port, "/hello", "Hello");
    free(b.s);
}

/* ------------------------------------------------------------------ */
/* Field lines and the header section: 431                              */
/* ------------------------------------------------------------------ */

/* "X-Long: <v>\r\n" is 10 + vlen bytes. */
static void test_field_line_at_limit(void **state)
{
    sb b = {0};

    (void)state;
    sb_str(&b, "GET /hello HTTP/1.1\r\nHost: x\r\n");
    assert_int_equal(sb_field(&b, "X-Long", LIM_FIELD_LINE - 10),
                     LIM_FIELD_LINE);
    sb_str(&b, "\r\n");
    expect_ok(b.s, b.len, "Hello");
    free(b.s);
}

static void test_431_field_line_over_limit(void **state)
{
    sb b = {0};

    (void)state;
    sb_str(&b, "GET /hello HTTP/1.1\r\nHost: x\r\n");
    assert_int_equal(sb_field(&b, "X-Long", LIM_FIELD_LINE - 9),
                     LIM_FIELD_LINE + 1);
    sb_str(&b, "\r\n");
    expect_refused(b.s, b.len, 431, "Request Header Fields Too Large");
    free(b.s);
}

/*
 * Header section of `total` bytes (field lines + final CRLF): Host (9),
 * three lines of 125 and one of the rest, all under the field-line limit
 * and the field count.
 */
static void head_of(sb *b, size_t total)
{
    size_t start, last;

    sb_str(b, "GET /hello HTTP/1.1\r\n");
    start = b->len;
    sb_str(b, "Host: x\r\n");
    sb_field(b, "X-F1", 125 - 8);
    sb_field(b, "X-F2", 125 - 8);
    sb_field(b, "X-F3", 125 - 8);
    last = total - (b->len - start) - 2;
    assert_true(last <= LIM_FIELD_LINE);
    sb_field(b, "X-F4", last - 8);
    sb_str(b, "\r\n");
    assert_int_equal(b->len - start, total);
}

static void test_head_at_limit(void **state)
{
    sb b = {0};

    (void)state;
    head_of(&b, LIM_HEAD);
    expect_ok(b.s, b.len, "Hello");
    free(b.s);
}

static void test_431_head_over_limit(void **state)
{
    sb b = {0};

    (void)state;
    head_of(&b, LIM_HEAD + 1);
    expect_refused(b.s, b.len, 431, "Request Header Fields Too Large");
    free(b.s);
}

/* Host plus `others` short fields. */
static void fields_of(sb *b, int others)
{
    char line[32];
    int i;

    sb_str(b, "GET /hello HTTP/1.1\r\nHost: x\r\n");
    for (i = 0; i < others; i++) {
        snprintf(line, sizeof(line), "X-%d: %d\r\n", i, i);
        sb_str(b, line);
    }
    sb_str(b, "\r\n");
}

static void test_fields_at_limit(void **state)
{
    sb b = {0};

    (void)state;
    fields_of(&b, LIM_FIELDS - 1);
    expect_ok(b.s, b.len, "Hello");
    free(b.s);
}

static void test_431_too_many_fields(void **state)
{
    sb b = {0};

    (void)state;
    fields_of(&b, LIM_FIELDS);
    expect_refused(b.s, b.len, 431, "Request Header Fields Too Large");
    free(b.s);
}

/* ------------------------------------------------------------------ */
/* Grammar: 400 and 505, one test per rule                              */
/* ------------------------------------------------------------------ */

typedef struct bad_case {
    const char *name;
    const char *req; /* followed by GOOD in the same write */
    int status;
} bad_case;

static const bad_case bad_cases[] = {
    /* 1. CRLF only. */
    {"bare_lf_request_line", "GET /hello HTTP/1.1\nHost: x\r\n\r\n", 400},
    {"bare_lf_field_line", "GET /hello HTTP/1.1\r\nHost: x\nX: y\r\n\r\n", 400},
    {"bare_lf_end_of_head", "GET /hello HTTP/1.1\r\nHost: x\r\n\n", 400},
    {"bare_cr_request_line", "GET /hello HTTP/1.1\rHost: x\r\n\r\n", 400},
    {"bare_cr_field_line", "GET /hello HTTP/1.1\r\nHost: x\rX: y\r\n\r\n", 400},
    {"bare_cr_in_value", "GET /hello HTTP/1.1\r\nHost: x\r\nX: a\rb\r\n\r\n",
     400},
    {"bare_cr_end_of_head", "GET /hello HTTP/1.1\r\nHost: x\r\n\rX", 400},
    /* 2. Request line shape. */
    {"no_version_http09", "GET /hello\r\n\r\n", 400},
    {"two_spaces_after_method", "GET  /hello HTTP/1.1\r\nHost: x\r\n\r\n", 400},
    {"two_spaces_before_version", "GET /hello  HTTP/1.1\r\nHost: x\r\n\r\n",
     400},
    {"trailing_space_after_version", "GET /hello HTTP/1.1 \r\nHost: x\r\n\r\n",
     400},
    {"tab_separator", "GET\t/hello HTTP/1.1\r\nHost: x\r\n\r\n", 400},
    {"control_in_target", "GET /he\x01llo HTTP/1.1\r\nHost: x\r\n\r\n", 400},
    {"non_ascii_in_target", "GET /h\xc3\xa9 HTTP/1.1\r\nHost: x\r\n\r\n", 400},
    {"relative_target", "GET hello HTTP/1.1\r\nHost: x\r\n\r\n", 400},
    {"asterisk_with_get", "GET * HTTP/1.1\r\nHost: x\r\n\r\n", 400},
    {"authority_form_with_get", "GET x.test:80 HTTP/1.1\r\nHost: x\r\n\r\n",
     400},
    {"version_lowercase", "GET /hello http/1.1\r\nHost: x\r\n\r\n", 400},
    {"version_no_minor", "GET /hello HTTP/1.\r\nHost: x\r\n\r\n", 400},
    {"version_two_digit_major", "GET /hello HTTP/11.1\r\nHost: x\r\n\r\n", 400},
    {"version_two_digit_minor", "GET /hello HTTP/1.01\r\nHost: x\r\n\r\n", 400},
    {"version_trailing_garbage", "GET /hello HTTP/1.1x\r\nHost: x\r\n\r\n",
     400},
    {"version_letters", "GET /hello HTTP/a.b\r\nHost: x\r\n\r\n", 400},
    {"version_missing_slash", "GET /hello HTTP1.1\r\nHost: x\r\n\r\n", 400},
    /* 2. Other major versions: 505 (1.2 and up: test_request_policy.c). */
    {"version_2_0", "GET /hello HTTP/2.0\r\nHost: x\r\n\r\n", 505},
    {"version_3", "GET /hello HTTP/3\r\nHost: x\r\n\r\n", 505},
    {"version_5_6", "GET /hello HTTP/5.6\r\nHost: x\r\n\r\n", 505},
    /* 3. Field lines. */
    {"obs_fold_space", "GET /hello HTTP/1.1\r\nHost: x\r\nX: a\r\n b\r\n\r\n",
     400},
    {"obs_fold_tab", "GET /hello HTTP/1.1\r\nHost: x\r\nX: a\r\n\tb\r\n\r\n",
     400},
    {"space_after_request_line", "GET /hello HTTP/1.1\r\n Host: x\r\n\r\n",
     400},
    {"space_before_colon", "GET /hello HTTP/1.1\r\nHost : x\r\n\r\n", 400},
    {"tab_before_colon", "GET /hello HTTP/1.1\r\nHost: x\r\nX\t: y\r\n\r\n",
     400},
    {"empty_field_name", "GET /hello HTTP/1.1\r\nHost: x\r\n: y\r\n\r\n", 400},
    {"no_colon", "GET /hello HTTP/1.1\r\nHost: x\r\nNoColon\r\n\r\n", 400},
    {"bad_name_char", "GET /hello HTTP/1.1\r\nHost: x\r\nX(y): z\r\n\r\n", 400},
    {"control_in_value", "GET /hello HTTP/1.1\r\nHost: x\r\nX: a\x01z\r\n\r\n",
     400},
    {"del_in_value", "GET /hello HTTP/1.1\r\nHost: x\r\nX: a\x7fz\r\n\r\n",
     400},
    /* 4. Exactly one Host in HTTP/1.1. */
    {"missing_host", "GET /hello HTTP/1.1\r\n\r\n", 400},
    {"two_hosts_same", "GET /hello HTTP/1.1\r\nHost: x\r\nHost: x\r\n\r\n",
     400},
    {"two_hosts_differ", "GET /hello HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n",
     400},
};

static const char *reason_of(int status)
{
    switch (status) {
    case 400: return "Bad Request";
    case 505: return "HTTP Version Not Supported";
    default: fail_msg("no reason for %d", status); return NULL;
    }
}

static void test_bad_request(void **state)
{
    const bad_case *bc = *state;

    expect_refused(bc->req, strlen(bc->req), bc->status, reason_of(bc->status));
}

/* What the rules allow: HTTP/1.0 without Host, OWS around a value,
 * obs-text in a value, empty lines before the request line. */
static void test_grammar_accepted(void **state)
{
    static const char *const ok_reqs[] = {
        "GET /hello HTTP/1.0\r\n\r\n",
        "GET /hello HTTP/1.1\r\nHost: x\r\nX: \t a b \t\r\n\r\n",
        "GET /hello HTTP/1.1\r\nHost: x\r\nX: caf\xc3\xa9\r\n\r\n",
        "\r\n\r\nGET /hello HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET /hello HTTP/1.1\r\nhOsT: x\r\nX-Empty:\r\n\r\n",
        "GET http://x/hello HTTP/1.1\r\nHost: x\r\n\r\n",
    };
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(ok_reqs) / sizeof(ok_reqs[0]); i++)
        expect_ok(ok_reqs[i], strlen(ok_reqs[i]), "Hello");
}

/* CONNECT (latch is not a forward proxy) is refused with 405 or 501 and
 * the connection closes; the bytes after it, which a proxy would tunnel,
 * are never read as a request. */
static void test_connect_refused(void **state)
{
    static const char req[] = "CONNECT x.test:443 HTTP/1.1\r\n"
                              "Host: x.test:443\r\n\r\n" GOOD;
    int fd = th_connect(srv.port);
    size_t len;
    char *out;
    th_resp *r;

    (void)state;
    th_send(fd, req, sizeof(req) - 1);
    out = th_read(fd, &len, 5000, NULL, NULL);
    assert_int_equal(th_last_end(), TH_EOF);
    r = th_expect_responses(out, len, 1, NULL);
    if (r[0].status != 405 && r[0].status != 501)
        fail_msg("CONNECT answered %d", r[0].status);
    assert_non_null(strstr(r[0].head, "\r\nConnection: close\r\n"));
    th_resp_free(r, 1);
    free(r);
    free(out);
    close(fd);
    th_expect_alive(srv.port, "/hello", "Hello");
}

/* ------------------------------------------------------------------ */
/* Timeouts                                                             */
/* ------------------------------------------------------------------ */

/* A head that stops half-way: exactly one 408 and a FIN, not before the
 * configured time. */
static void test_408_partial_head(void **state)
{
    static const char head[] = "GET /hello HTTP/1.1\r\nHost: x\r\n";
    int64_t t0;

    (void)state;
    t0 = th_now_ms();
    th_expect_error_close(srv.port, head, strlen(head), 408, "Request Timeout");
    assert_true(th_now_ms() - t0 >= SHORT_MS - 50);
    th_expect_alive(srv.port, "/hello", "Hello");
}

/* A head trickled in: the timeout is for the whole head, so bytes that
 * keep coming do not extend it. The client sends one byte each time it
 * sees nothing within 50 ms, for at most 5 s. */
static void test_408_trickled_head(void **state)
{
    static const char head[] = "GET /hello HTTP/1.1\r\nX-Slow: "
                               "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
                               "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
                               "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
                               "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    int fd = th_connect(srv.port);
    int64_t t0 = th_now_ms();
    size_t i = 0, len = 0, n;
    char *out = NULL, *norm, *want = th_error_bytes(408, "Request Timeout");
    th_resp *r;

    (void)state;
    for (;;) {
        assert_true(i < sizeof(head) - 1);
        th_send(fd, head + i++, 1);
        /* th_read returns at the first EOF, or after 50 ms of nothing. */
        free(out);
        out = th_read(fd, &len, 50, NULL, NULL);
        if (len > 0 || th_last_end() != TH_OPEN)
            break;
    }
    if (th_last_end() == TH_OPEN) {
        /* Part of the 408 came: read the rest up to the FIN. */
        char *rest = th_read(fd, &n, 5000, NULL, NULL);
        out = realloc(out, len + n + 1);
        memcpy(out + len, rest, n + 1);
        len += n;
        free(rest);
    }
    assert_int_equal(th_last_end(), TH_EOF);
    assert_true(th_now_ms() - t0 >= SHORT_MS - 50);
    assert_true(th_now_ms() - t0 < 4 * SHORT_MS + 1000);
    r = th_expect_responses(out, len, 1, NULL);
    norm = th_normalize(out, len);
    assert_string_equal(norm, want);
    th_resp_free(r, 1);
    free(r);
    free(norm);
    free(want);
    free(out);
    close(fd);
    th_expect_alive(srv.port, "/hello", "Hello");
}

/* After a response, an idle keep-alive connection is closed (FIN) with
 * nothing written. Its Keep-Alive promises no more than it waits: 200 ms
 * is "timeout=0" (whole seconds rounded down, as Node does; rounded up,
 * a client would send its next request to a closing connection). */
static void test_keepalive_idle_close(void **state)
{
    int fd = th_connect(srv.port), one = 1;
    size_t len;
    char *out;
    int64_t t0;
    th_resp *r;

    (void)state;
    th_send_str(fd, GOOD);
    out = th_read(fd, &len, 5000, th_until_responses, &one);
    t0 = th_now_ms();
    r = th_expect_responses(out, len, 1, NULL);
    assert_int_equal(r[0].status, 200);
    assert_non_null(strstr(r[0].head, "Connection: keep-alive\r\n"));
    assert_non_null(strstr(r[0].head, "Keep-Alive: timeout=0\r\n"));
    th_resp_free(r, 1);
    free(r);
    free(out);
    out = th_read(fd, &len, 5000, NULL, NULL);
    assert_int_equal(th_last_end(), TH_EOF);
    assert_int_equal(len, 0);
    assert_true(th_now_ms() - t0 >= SHORT_MS - 100);
    free(out);
    close(fd);
    th_expect_alive(srv.port, "/hello", "Hello");
}

int main(void)
{
    static const struct CMUnitTest fixed[] = {
        cmocka_unit_test_setup_teardown(test_request_line_at_limit,
                                        setup_limits, teardown),
        cmocka_unit_test_setup_teardown(test_414_request_line_over_limit,
                                        setup_limits, teardown),
        cmocka_unit_test_setup_teardown(test_414_unfinished_request_line,
                                        setup_limits, teardown),
        cmocka_unit_test_setup_teardown(test_field_line_at_limit, setup_limits,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_431_field_line_over_limit,
                                        setup_limits, teardown),
        cmocka_unit_test_setup_teardown(test_head_at_limit, setup_limits,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_431_head_over_limit, setup_limits,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_fields_at_limit, setup_limits,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_431_too_many_fields, setup_limits,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_grammar_accepted, setup_limits,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_connect_refused, setup_limits,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_408_partial_head, setup_timeouts,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_408_trickled_head, setup_timeouts,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_keepalive_idle_close,
                                        setup_timeouts, teardown),
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
        snprintf(names[i], sizeof(names[i]), "test_bad_request_%s",
                 bad_cases[i].name);
        tests[NFIXED + i] =
            (struct CMUnitTest){names[i], test_bad_request, setup_limits,
                                teardown, (void *)&bad_cases[i]};
    }
    return _cmocka_run_group_tests("test_limits", tests, NFIXED + NBAD, NULL,
                                   NULL);
}
