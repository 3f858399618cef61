/*
 * test_filemeta.c - unit tests of a file as HTTP sees it (src/filemeta.c).
 *
 * Covers the MIME table, Range parsing (RFC 9110 14.1: single, suffix,
 * open-ended, several, unsatisfiable, malformed), the ETag and HTTP-date
 * formats, the preconditions of RFC 9110 13.2.2 (If-None-Match with the
 * weak comparison, If-Modified-Since, If-Match, If-Unmodified-Since,
 * If-Range), and the path cleaner with the published traversal shapes of
 * Express's send / serve-static, st and node-static as rows.
 *
 * It does not open files: where a symlink leads is file.c's check, tested
 * with real files in tests/integration/test_files.c.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <string.h>
#include <time.h>
#include <uv.h>

#include "filemeta.h"
#include "latch.h"

static void test_mime(void **state)
{
    (void)state;
    assert_string_equal(latch__mime_by_ext("index.html"),
                        "text/html; charset=utf-8");
    assert_string_equal(latch__mime_by_ext("A.PNG"), "image/png");
    assert_string_equal(latch__mime_by_ext("x.tar.gz"), "application/gzip");
    assert_string_equal(latch__mime_by_ext("/a.b/c.woff2"), "font/woff2");
    assert_string_equal(latch__mime_by_ext("app.mjs"),
                        "text/javascript; charset=utf-8");
    assert_null(latch__mime_by_ext("README"));
    assert_null(latch__mime_by_ext("a.b/README")); /* dot in a directory */
    assert_null(latch__mime_by_ext("x."));
    assert_null(latch__mime_by_ext("x.unknownext"));
    assert_null(latch__mime_by_ext(NULL));
}

/* latch_res_type's names come from the same table: every name it knew
 * before the tables were merged, Express's aliases that are no file
 * extension (found by name, never by a file's extension), and a few rows
 * at both ends of the sorted table (bsearch finds them only if it is
 * sorted). */
static void test_mime_names(void **state)
{
    static const char *const names[] = {
        "html", "htm",  "text", "txt",  "css",        "csv", "js",
        "mjs",  "json", "xml",  "svg",  "png",        "jpg", "jpeg",
        "gif",  "webp", "ico",  "pdf",  "wasm",       "bin", "7z",
        "zip",  "yml",  "aac",  "form", "urlencoded",
    };

    (void)state;
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (latch__mime_by_name(names[i]) == NULL)
            fail_msg("no type for the name %s", names[i]);
    assert_string_equal(latch__mime_by_name("form"),
                        "application/x-www-form-urlencoded");
    assert_string_equal(latch__mime_by_name("urlencoded"),
                        "application/x-www-form-urlencoded");
    assert_string_equal(latch__mime_by_name(".JSON"),
                        "application/json; charset=utf-8");
    assert_string_equal(latch__mime_by_name("text"),
                        "text/plain; charset=utf-8");
    assert_string_equal(latch__mime_by_ext("notes.text"),
                        "text/plain; charset=utf-8");
    /* aliases are no extensions: a file named x.form is unknown */
    assert_null(latch__mime_by_ext("x.form"));
    assert_null(latch__mime_by_ext("x.urlencoded"));
    assert_null(latch__mime_by_name("no-such"));
    assert_null(latch__mime_by_name(""));
    assert_null(latch__mime_by_name(NULL));
}

/* One Range row: header, size, expected kind and bounds. */
static const struct range_row {
    const char *h;
    uint64_t size;
    int kind;
    uint64_t first, last;
} range_rows[] = {
    {NULL, 100, LATCH_RANGE_NONE, 0, 0},
    {"bytes=0-0", 100, LATCH_RANGE_ONE, 0, 0},
    {"bytes=0-99", 100, LATCH_RANGE_ONE, 0, 99},
    {"bytes=10-", 100, LATCH_RANGE_ONE, 10, 99},
    {"bytes=10-1000", 100, LATCH_RANGE_ONE, 10, 99}, /* clamped */
    {"bytes=-10", 100, LATCH_RANGE_ONE, 90, 99},
    {"bytes=-1000", 100, LATCH_RANGE_ONE, 0, 99}, /* suffix > size: whole */
    {"BYTES = 5-6", 100, LATCH_RANGE_ONE, 5, 6},
    {"bytes= 5-6 ", 100, LATCH_RANGE_ONE, 5, 6},
    {"bytes=5-6,", 100, LATCH_RANGE_ONE, 5, 6},
    {"bytes=99-99", 100, LATCH_RANGE_ONE, 99, 99},
    {"bytes=2147483648-", UINT64_C(3) << 30, LATCH_RANGE_ONE,
     UINT64_C(2147483648), (UINT64_C(3) << 30) - 1},
    /* unsatisfiable: 416 */
    {"bytes=100-", 100, LATCH_RANGE_UNSAT, 0, 0},
    {"bytes=100-200", 100, LATCH_RANGE_UNSAT, 0, 0},
    {"bytes=-0", 100, LATCH_RANGE_UNSAT, 0, 0},
    {"bytes=0-", 0, LATCH_RANGE_UNSAT, 0, 0},
    {"bytes=-5", 0, LATCH_RANGE_UNSAT, 0, 0},
    {"bytes=100-1,200-300", 100, LATCH_RANGE_NONE, 0, 0}, /* 100-1 bad */
    {"bytes=150-160,200-", 100, LATCH_RANGE_UNSAT, 0, 0},
    /* several: 200 whole */
    {"bytes=0-1,5-6", 100, LATCH_RANGE_MANY, 0, 0},
    {"bytes=0-1, 500-", 100, LATCH_RANGE_MANY, 0, 0},
    {"bytes=0-0,-1", 100, LATCH_RANGE_MANY, 0, 0},
    /* malformed: ignored */
    {"", 100, LATCH_RANGE_NONE, 0, 0},
    {"bytes", 100, LATCH_RANGE_NONE, 0, 0},
    {"bytes=", 100, LATCH_RANGE_NONE, 0, 0},
    {"bytes=,", 100, LATCH_RANGE_NONE, 0, 0},
    {"items=0-5", 100, LATCH_RANGE_NONE, 0, 0},
    {"bytes=5-1", 100, LATCH_RANGE_NONE, 0, 0},
    {"bytes=a-5", 100, LATCH_RANGE_NONE, 0, 0},
    {"bytes=-", 100, LATCH_RANGE_NONE, 0, 0},
    {"bytes=5", 100, LATCH_RANGE_NONE, 0, 0},
    {"bytes=0-5x", 100, LATCH_RANGE_NONE, 0, 0},
    {"bytes=0-5;1-2", 100, LATCH_RANGE_NONE, 0, 0},
    {"bytes=--5", 100, LATCH_RANGE_NONE, 0, 0},
    {"bytes=99999999999999999999-", 100, LATCH_RANGE_NONE, 0, 0},
    {"bytes=0-99999999999999999999", 100, LATCH_RANGE_NONE, 0, 0},
};

static void test_range(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(range_rows) / sizeof(range_rows[0]); i++) {
        const struct range_row *r = &range_rows[i];
        uint64_t f = 7, l = 7;
        int k = latch__range_parse(r->h, r->size, &f, &l);
        if (k != r->kind || f != r->first || l != r->last)
            fail_msg("row %zu \"%s\" size %llu: kind %d [%llu, %llu], want "
                     "%d [%llu, %llu]",
                     i, r->h ? r->h : "(null)", (unsigned long long)r->size, k,
                     (unsigned long long)f, (unsigned long long)l, r->kind,
                     (unsigned long long)r->first, (unsigned long long)r->last);
    }
}

static void test_etag_and_dates(void **state)
{
    char buf[64];
    int64_t t;
    size_t n;

    (void)state;
    n = latch__etag_format(buf, sizeof(buf), 0x1234, 1024, 1, 5);
    assert_string_equal(buf, "\"1234-400-3b9aca05\"");
    assert_int_equal(n, strlen(buf));
    /* the largest values fit in 64 bytes */
    n = latch__etag_format(buf, sizeof(buf), UINT64_MAX, UINT64_MAX,
                           INT64_MAX / 1000000000, 999999999);
    assert_int_equal(n, strlen(buf));
    assert_true(n < sizeof(buf));

    /* cut to the room given, as snprintf does */
    n = latch__etag_format(buf, 5, 0x1234, 1024, 1, 5);
    assert_string_equal(buf, "\"123");
    assert_int_equal(n, 4);
    assert_int_equal(latch__etag_format(buf, 0, 1, 1, 1, 1), 0);
    n = latch__etag_format(buf, sizeof(buf), 0, 0, 0, 0);
    assert_string_equal(buf, "\"0-0-0\"");

    n = latch__http_date(buf, sizeof(buf), 784111777);
    assert_string_equal(buf, "Sun, 06 Nov 1994 08:49:37 GMT");
    assert_int_equal(n, 29);
    /* against strftime's, over the years 0 to 9999 */
    {
        static const int64_t ts[] = {
            0,           1,  951782400,    951868799,
            2147483648,  -1, -62135596800, -62167219200,
            253402300799};
        for (size_t i = 0; i < sizeof(ts) / sizeof(ts[0]); i++) {
            char want[64];
            time_t tt = (time_t)ts[i];
            struct tm tm;
            assert_non_null(gmtime_r(&tt, &tm));
            strftime(want, sizeof(want), "%a, %d %b %Y %H:%M:%S GMT", &tm);
            if (tm.tm_year + 1900 < 1000) { /* %Y does not pad */
                snprintf(want + 12, sizeof(want) - 12,
                         "%04d %02d:%02d:%02d GMT", tm.tm_year + 1900,
                         tm.tm_hour, tm.tm_min, tm.tm_sec);
            }
            n = latch__http_date(buf, sizeof(buf), ts[i]);
            assert_int_equal(n, 29);
            assert_string_equal(buf, want);
        }
    }
    assert_int_equal(latch__http_date(buf, sizeof(buf), 253402300800), 0);
    assert_int_equal(latch__http_date(buf, 29, 784111777), 0);
    n = latch__http_date(buf, sizeof(buf), 784111777);
    assert_int_equal(latch__http_date_parse(buf, &t), 0);
    assert_int_equal(t, 784111777);
    assert_int_equal(
        latch__http_date_parse("Sunday, 06-Nov-94 08:49:37 GMT", &t), 0);
    assert_int_equal(t, 784111777);
    assert_int_equal(latch__http_date_parse("Sun Nov  6 08:49:37 1994", &t), 0);
    assert_int_equal(t, 784111777);
    assert_int_equal(
        latch__http_date_parse("Thu, 01 Jan 1970 00:00:00 GMT", &t), 0);
    assert_int_equal(t, 0);
    assert_int_equal(
        latch__http_date_parse("Tue, 19 Jan 2038 03:14:08 GMT", &t), 0);
    assert_int_equal(t, INT64_C(2147483648));
    /* malformed */
    assert_int_equal(latch__http_date_parse("", &t), -1);
    assert_int_equal(latch__http_date_parse("yesterday", &t), -1);
    assert_int_equal(
        latch__http_date_parse("Sun, 06 Nov 1994 08:49:37 UTC", &t), -1);
    assert_int_equal(
        latch__http_date_parse("Sun, 06 Foo 1994 08:49:37 GMT", &t), -1);
    assert_int_equal(
        latch__http_date_parse("Sun, 32 Nov 1994 08:49:37 GMT", &t), -1);
    assert_int_equal(
        latch__http_date_parse("Sun, 06 Nov 1994 25:49:37 GMT", &t), -1);
    assert_int_equal(latch__http_date_parse(NULL, &t), -1);
}

static void test_etag_match(void **state)
{
    const char *e = "\"abc-1\"";

    (void)state;
    assert_true(latch__etag_match("\"abc-1\"", e, true));
    assert_true(latch__etag_match("W/\"abc-1\"", e, true)); /* weak cmp */
    assert_false(latch__etag_match("W/\"abc-1\"", e, false));
    assert_true(latch__etag_match("\"x\", \"abc-1\"", e, false));
    assert_true(latch__etag_match("\"x\",W/\"abc-1\"", e, true));
    assert_true(latch__etag_match("*", e, false));
    assert_true(latch__etag_match(" * ", e, true));
    assert_false(latch__etag_match("\"abc-2\"", e, true));
    assert_false(latch__etag_match("abc-1", e, true));   /* unquoted */
    assert_false(latch__etag_match("\"abc-1", e, true)); /* unterminated */
    assert_false(latch__etag_match("\"x\" junk \"abc-1\"", e, true));
    assert_false(latch__etag_match("\"abc-1 \"", e, true));
    assert_false(latch__etag_match("*, \"y\"", e, true));
    assert_false(latch__etag_match(NULL, e, true));
    assert_false(latch__etag_match("\"abc\"", "W/\"abc\"", false));
}

static void test_conditionals(void **state)
{
    const char *e = "\"t1\"";
    const int64_t mt = 784111777; /* Sun, 06 Nov 1994 08:49:37 GMT */
    latch_cond c;

    (void)state;
    memset(&c, 0, sizeof(c));
    c.get_or_head = true;
    assert_int_equal(latch__cond_eval(&c, e, mt), 0);
    c.if_none_match = "W/\"t1\"";
    assert_int_equal(latch__cond_eval(&c, e, mt), 304);
    c.if_none_match = "\"t0\"";
    /* If-None-Match present and not matching: If-Modified-Since ignored */
    c.if_modified_since = "Sun, 06 Nov 1994 08:49:37 GMT";
    assert_int_equal(latch__cond_eval(&c, e, mt), 0);
    c.if_none_match = NULL;
    assert_int_equal(latch__cond_eval(&c, e, mt), 304);
    c.if_modified_since = "Sun, 06 Nov 1994 08:49:36 GMT";
    assert_int_equal(latch__cond_eval(&c, e, mt), 0);
    c.if_modified_since = "garbage";
    assert_int_equal(latch__cond_eval(&c, e, mt), 0);
    c.if_modified_since = "Sun, 06 Nov 1994 08:49:37 GMT";
    c.get_or_head = false; /* IMS applies to GET/HEAD only */
    assert_int_equal(latch__cond_eval(&c, e, mt), 0);
    c.if_modified_since = NULL;
    c.if_none_match = "*";
    assert_int_equal(latch__cond_eval(&c, e, mt), 412);
    c.get_or_head = true;
    c.if_none_match = NULL;
    c.if_match = "\"t1\"";
    assert_int_equal(latch__cond_eval(&c, e, mt), 0);
    c.if_match = "W/\"t1\""; /* strong comparison */
    assert_int_equal(latch__cond_eval(&c, e, mt), 412);
    c.if_match = NULL;
    c.if_unmodified_since = "Sun, 06 Nov 1994 08:49:36 GMT";
    assert_int_equal(latch__cond_eval(&c, e, mt), 412);
    c.if_unmodified_since = "Sun, 06 Nov 1994 08:49:37 GMT";
    assert_int_equal(latch__cond_eval(&c, e, mt), 0);

    assert_true(latch__if_range_ok(NULL, e, mt));
    assert_true(latch__if_range_ok("\"t1\"", e, mt));
    assert_false(latch__if_range_ok("W/\"t1\"", e, mt)); /* never weak */
    assert_false(latch__if_range_ok("\"t0\"", e, mt));
    assert_true(latch__if_range_ok("Sun, 06 Nov 1994 08:49:37 GMT", e, mt));
    assert_false(latch__if_range_ok("Sun, 06 Nov 1994 08:49:38 GMT", e, mt));
    assert_false(latch__if_range_ok("soon", e, mt));
}

/* One path row: the path as sent, the outcome, the clean path. */
static const struct path_row {
    const char *raw;
    int rc;
    const char *clean;
    unsigned flags;
} path_rows[] = {
    {"/", 0, "", LATCH_PATH_DIR},
    {"", 0, "", 0},
    {"/a/b.txt", 0, "a/b.txt", 0},
    {"//a///b", 0, "a/b", 0},
    {"/a/./b/.", 0, "a/b", 0},
    {"/dir/", 0, "dir", LATCH_PATH_DIR},
    {"/a%20b", 0, "a b", 0},
    {"/%E2%82%AC", 0, "\xe2\x82\xac", 0},
    {"/.env", 0, ".env", LATCH_PATH_DOT},
    {"/a/.git/config", 0, "a/.git/config", LATCH_PATH_DOT},
    {"/.%2e.", 0, "...", LATCH_PATH_DOT}, /* three dots: a name */
    {"/..a", 0, "..a", LATCH_PATH_DOT},
    {"/%c0%ae%c0%ae/x", 0, "\xc0\xae\xc0\xae/x", 0}, /* overlong: a name */
    /* traversal: refused before any disk access */
    {"/..", UV_EACCES, NULL, 0},
    {"/../etc/passwd", UV_EACCES, NULL, 0},
    {"/a/../../etc/passwd", UV_EACCES, NULL, 0},
    {"/a/..", UV_EACCES, NULL, 0},
    /* st < 0.2.5 (CVE-2014-3744): encoded dots */
    {"/%2e%2e/%2e%2e/etc/passwd", UV_EACCES, NULL, 0},
    {"/%2E%2E/etc/passwd", UV_EACCES, NULL, 0},
    {"/.%2e/etc/passwd", UV_EACCES, NULL, 0},
    {"/%2e./etc/passwd", UV_EACCES, NULL, 0},
    /* encoded separators (node-static, send on Windows) */
    {"/..%2fetc%2fpasswd", UV_EACCES, NULL, 0},
    {"/%2e%2e%2fetc/passwd", UV_EACCES, NULL, 0},
    {"/a%2Fb", UV_EACCES, NULL, 0},
    {"/..%5c..%5cetc/passwd", UV_EACCES, NULL, 0},
    {"/..\\..\\etc\\passwd", UV_EACCES, NULL, 0},
    {"/a%5cb", UV_EACCES, NULL, 0},
    /* NUL and control bytes (the old "file.txt%00.png" trick) */
    {"/etc/passwd%00.png", UV_EACCES, NULL, 0},
    {"/a%0ab", UV_EACCES, NULL, 0},
    {"/a%7fb", UV_EACCES, NULL, 0},
    /* malformed escapes */
    {"/%zz", LATCH_ERR_INVALID_ARG, NULL, 0},
    {"/%4", LATCH_ERR_INVALID_ARG, NULL, 0},
    {"/%", LATCH_ERR_INVALID_ARG, NULL, 0},
};

static void test_path_clean(void **state)
{
    char out[64];
    unsigned fl;

    (void)state;
    for (size_t i = 0; i < sizeof(path_rows) / sizeof(path_rows[0]); i++) {
        const struct path_row *r = &path_rows[i];
        int rc =
            latch__path_clean(r->raw, strlen(r->raw), out, sizeof(out), &fl);
        if (rc != r->rc)
            fail_msg("row %zu \"%s\": rc %d, want %d", i, r->raw, rc, r->rc);
        if (rc == 0 && (strcmp(out, r->clean) != 0 || fl != r->flags))
            fail_msg("row %zu \"%s\": \"%s\" flags %u, want \"%s\" %u", i,
                     r->raw, out, fl, r->clean, r->flags);
    }
    /* too long for the buffer: refused, never truncated into another name */
    assert_int_equal(latch__path_clean("/abcdefgh", 9, out, 8, &fl),
                     UV_ENAMETOOLONG);
    assert_int_equal(latch__path_clean("/abcdefg", 8, out, 8, &fl), 0);
    assert_string_equal(out, "abcdefg"); /* 7 bytes and the NUL: exact */
    assert_int_equal(latch__path_clean("/abc/defg", 9, out, 8, &fl),
                     UV_ENAMETOOLONG);
}

static void test_path_within(void **state)
{
    (void)state;
    assert_true(latch__path_within("/srv/www", "/srv/www"));
    assert_true(latch__path_within("/srv/www", "/srv/www/a/b"));
    /* the prefix check that send < 0.8.4 and node-static got wrong */
    assert_false(latch__path_within("/srv/www", "/srv/www-secret/x"));
    assert_false(latch__path_within("/srv/www", "/srv/wwwx"));
    assert_false(latch__path_within("/srv/www", "/srv"));
    assert_false(latch__path_within("/srv/www", "/etc/passwd"));
    assert_true(latch__path_within("/", "/etc/passwd"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mime),
        cmocka_unit_test(test_mime_names),
        cmocka_unit_test(test_range),
        cmocka_unit_test(test_etag_and_dates),
        cmocka_unit_test(test_etag_match),
        cmocka_unit_test(test_conditionals),
        cmocka_unit_test(test_path_clean),
        cmocka_unit_test(test_path_within),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
