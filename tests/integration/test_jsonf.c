/*
 * test_jsonf.c - latch_res_jsonf on a real server: each conversion's
 * exact output (escaped strings, NULL as null, integers of every width at
 * their limits, shortest round-trip doubles, %b, checked %j, %%), the
 * Content-Type, and the refusals: an unknown conversion, a NaN, invalid
 * UTF-8 in %s, %j that is not JSON, a mismatch between a conversion and
 * its argument's type, too few or too many arguments, a template that is
 * not JSON. Each refusal returns LATCH_ERR_INVALID_ARG, is reported with
 * this file's line, and is answered 500 by the app's error handler
 * (which sees the code), never by a page that bypasses it; so is an
 * error of the JSON writer (latch_res_json_begin .. _end).
 */
#include "harness.h"

#include <limits.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

static th_server srv;
static th_vlog vlog;
static _Atomic int last_rc, err_code;

static int h(latch_req *req, latch_res *res, void *data)
{
    const char *w = latch_req_query(req, "w");
    int rc;

    (void)data;
    if (strcmp(w, "str") == 0)
        rc = latch_res_jsonf(res, "{\"a\":%s,\"b\":%s,\"c\":%s}",
                             "q\"\\\n\x01/\xc3\xa9", (const char *)NULL, "");
    else if (strcmp(w, "int") == 0)
        rc = latch_res_jsonf(res, "[%d,%i,%u,%ld,%lu,%lld,%llu,%zu,%d]",
                             INT_MIN, -1, UINT_MAX, LONG_MIN, ULONG_MAX,
                             LLONG_MIN, ULLONG_MAX, (size_t)42, (char)'A');
    else if (strcmp(w, "dbl") == 0)
        rc = latch_res_jsonf(res, "[%g,%f,%g,%g,%g]", 0.1, 3.0, -0.0, 1e21,
                             (float)0.5);
    else if (strcmp(w, "misc") == 0)
        rc = latch_res_jsonf(res,
                             "{\"t\":%b,\"f\":%b,\"j\":%j,\"n\":%j,"
                             "\"p\":\"100%%\"}",
                             1, 0, "[1, {\"x\":null}]", (const char *)NULL);
    else if (strcmp(w, "none") == 0)
        rc = latch_res_jsonf(res, " {\"ok\":true} ");
    else if (strcmp(w, "unknown") == 0)
        rc = latch_res_jsonf(res, "{\"a\":%x}", 1);
    else if (strcmp(w, "nan") == 0)
        rc = latch_res_jsonf(res, "{\"a\":%g}", NAN);
    else if (strcmp(w, "utf8") == 0)
        rc = latch_res_jsonf(res, "{\"a\":%s}", "\xff");
    else if (strcmp(w, "badj") == 0)
        rc = latch_res_jsonf(res, "{\"a\":%j}", "{nope");
    else if (strcmp(w, "type") == 0)
        rc = latch_res_jsonf(res, "{\"a\":%s}", 42);
    else if (strcmp(w, "gint") == 0)
        rc = latch_res_jsonf(res, "{\"a\":%g}", 42);
    else if (strcmp(w, "few") == 0)
        rc = latch_res_jsonf(res, "[%d,%d]", 1);
    else if (strcmp(w, "many") == 0)
        rc = latch_res_jsonf(res, "[%d]", 1, 2);
    else if (strcmp(w, "writer") == 0) {
        latch_json *j = latch_res_json_begin(res);
        latch_json_double(j, NAN);
        rc = latch_res_json_end(res);
    } else if (strcmp(w, "inside") == 0)
        rc = latch_res_jsonf(res, "{\"a\":\"hello %s\"}", "you");
    else
        rc = latch_res_jsonf(res, "{\"a\":1", 0);
    last_rc = rc;
    return LATCH_DONE;
}

static int on_error(const latch_error *err, latch_req *req, latch_res *res,
                    void *data)
{
    (void)req;
    (void)data;
    err_code = err->code;
    latch_res_status(res, err->status);
    return latch_res_json(res, "{\"error\":\"app\"}");
}

static int setup(void **state)
{
    latch_app *app = latch_app_new();

    (void)state;
    assert_non_null(app);
    th_record_violations_full(app, &vlog);
    assert_int_equal(latch_get(app, "/", h, NULL), 0);
    assert_int_equal(latch_use_error(app, on_error, NULL), 0);
    th_server_start(&srv, app);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    return th_server_stop(&srv);
}

/* GET /?w=what; returns the one response. */
static th_resp *ask(const char *what)
{
    char req[256];
    size_t len;
    int n = snprintf(req, sizeof(req),
                     "GET /?w=%s HTTP/1.1\r\nHost: x\r\nConnection: "
                     "close\r\n\r\n",
                     what);
    char *out = th_exchange(srv.port, req, (size_t)n, 1, &len);
    th_resp *r = th_expect_responses(out, len, 1, NULL);

    free(out);
    return r;
}

static void expect_body(const char *what, const char *body)
{
    th_resp *r = ask(what);
    th_vrec v;

    if (r[0].status != 200 && th_vlog_wait(&vlog, 1, 1000) > 0 &&
        th_vlog_get(&vlog, th_vlog_count(&vlog) - 1, &v))
        fail_msg("%s: %d, reported: %s", what, r[0].status, v.message);
    assert_int_equal(r[0].status, 200);
    assert_non_null(
        strstr(r[0].head, "Content-Type: application/json; charset=utf-8"));
    assert_string_equal(r[0].body, body);
    assert_int_equal(last_rc, 0);
    th_resp_free(r, 1);
    free(r);
}

static void test_conversions(void **state)
{
    (void)state;
    expect_body("str", "{\"a\":\"q\\\"\\\\\\n\\u0001/\xc3\xa9\",\"b\":null,"
                       "\"c\":\"\"}");
    expect_body("int", "[-2147483648,-1,4294967295,-9223372036854775808,"
                       "18446744073709551615,-9223372036854775808,"
                       "18446744073709551615,42,65]");
    expect_body("dbl", "[0.1,3,-0,1e+21,0.5]");
    expect_body("misc", "{\"t\":true,\"f\":false,\"j\":[1, {\"x\":null}],"
                        "\"n\":null,\"p\":\"100%\"}");
    expect_body("none", " {\"ok\":true} ");
    assert_int_equal(th_vlog_count(&vlog), 0);
}

static void test_refusals(void **state)
{
    static const char *const bad[] = {"unknown", "nan",  "utf8", "badj",
                                      "type",    "gint", "few",  "many",
                                      "inside",  "open"};
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        th_resp *r;
        th_vrec v;

        err_code = 0;
        r = ask(bad[i]);
        if (r[0].status != 500 || strcmp(r[0].body, "{\"error\":\"app\"}") != 0)
            fail_msg("%s: %d %s", bad[i], r[0].status, r[0].body);
        th_resp_free(r, 1);
        free(r);
        assert_int_equal(last_rc, LATCH_ERR_INVALID_ARG);
        assert_int_equal(err_code, LATCH_ERR_INVALID_ARG);
        assert_int_equal(th_vlog_wait(&vlog, (int)i + 1, 5000), (int)i + 1);
        assert_true(th_vlog_get(&vlog, (int)i, &v));
        assert_int_equal(v.code, LATCH_ERR_INVALID_ARG);
        assert_string_equal(v.call, "latch_res_jsonf");
        assert_non_null(strstr(v.at_file, "test_jsonf.c"));
    }
}

/* The JSON writer's error too is answered by the app (it was a text/plain
 * 500 that bypassed the error handlers). */
static void test_writer_error_goes_to_the_error_handlers(void **state)
{
    int before = th_vlog_count(&vlog);
    th_resp *r;

    (void)state;
    err_code = 0;
    r = ask("writer");
    assert_int_equal(r[0].status, 500);
    assert_string_equal(r[0].body, "{\"error\":\"app\"}");
    th_resp_free(r, 1);
    free(r);
    assert_int_equal(last_rc, LATCH_ERR_INVALID_ARG);
    assert_int_equal(err_code, LATCH_ERR_INVALID_ARG);
    assert_int_equal(th_vlog_wait(&vlog, before + 1, 5000), before + 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_conversions),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_writer_error_goes_to_the_error_handlers),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
