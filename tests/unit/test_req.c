/*
 * test_req.c - unit tests of the request view (src/req.c).
 *
 * Each test lays out a request head the way conn.c's head_done leaves it:
 * the bytes in one buffer, field spans relative to the first byte, and a
 * NUL written after the method, the target and every field name and value.
 * Then it calls latch__req_prepare, as head_done does, and reads the
 * request through the public accessors: the decoded path (origin-,
 * absolute- and asterisk-form; escapes decoded, %00 and malformed escapes
 * kept), query parameters, headers and the body. The per-request arena
 * (latch__req_alloc / latch__req_reset) is tested directly: pointers never
 * move, large blocks, the per-allocation limit, and freeing (the
 * AddressSanitizer run checks for leaks).
 *
 * It does not parse HTTP (test_parser.c does) and does not use a
 * connection.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define MAXF 32

typedef struct fixture {
    latch_res res;
    char head[4096];
    latch_field fields[MAXF];
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof(*f));

    if (f == NULL)
        return -1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;

    latch__req_reset(&f->res.req);
    latch__buf_dispose(&f->res.req.body);
    free(f);
    return 0;
}

static latch_span span(const char *head, const char *from, const char *to)
{
    latch_span s = {(uint32_t)(from - head), (uint32_t)(to - from)};

    return s;
}

/*
 * Loads `raw` ("METHOD target HTTP/1.1\r\n", then "Name: value\r\n" lines,
 * then "\r\n") into f as head_done would, and prepares the request. Values
 * are trimmed of spaces and tabs, as the parser does.
 */
static latch_req *load(fixture *f, const char *raw)
{
    latch_req *q = &f->res.req;
    char *h = f->head, *sp1, *sp2, *line, *eol;
    latch_span method, target;
    uint32_t n = 0, i;

    assert_true(strlen(raw) < sizeof(f->head));
    strcpy(h, raw);
    sp1 = strchr(h, ' ');
    assert_non_null(sp1);
    sp2 = strchr(sp1 + 1, ' ');
    assert_non_null(sp2);
    eol = strstr(h, "\r\n");
    assert_non_null(eol);
    method = span(h, h, sp1);
    target = span(h, sp1 + 1, sp2);
    for (line = eol + 2; strncmp(line, "\r\n", 2) != 0; line = eol + 2) {
        char *colon = strchr(line, ':'), *vs, *ve;

        eol = strstr(line, "\r\n");
        assert_non_null(colon);
        assert_non_null(eol);
        assert_true(colon < eol);
        assert_true(n < MAXF);
        for (vs = colon + 1; *vs == ' ' || *vs == '\t'; vs++)
            ;
        for (ve = eol; ve > vs && (ve[-1] == ' ' || ve[-1] == '\t'); ve--)
            ;
        f->fields[n].name = span(h, line, colon);
        f->fields[n].value = span(h, vs, ve);
        n++;
    }
    /* Now the NULs, as head_done writes them. */
    h[method.off + method.len] = '\0';
    h[target.off + target.len] = '\0';
    for (i = 0; i < n; i++) {
        h[f->fields[i].name.off + f->fields[i].name.len] = '\0';
        h[f->fields[i].value.off + f->fields[i].value.len] = '\0';
    }
    q->head = h;
    q->method = h + method.off;
    q->url = h + target.off;
    q->fields = f->fields;
    q->nfields = n;
    q->version_minor = 1;
    q->id = 1;
    latch__req_prepare(q);
    return q;
}

/* A request with this target and no fields. */
static latch_req *target(fixture *f, const char *t)
{
    char raw[2048];

    snprintf(raw, sizeof(raw), "GET %s HTTP/1.1\r\n\r\n", t);
    return load(f, raw);
}

/* ---- the path ----------------------------------------------------------- */

static void test_origin_form_without_query(void **state)
{
    latch_req *q = target(*state, "/users/42");

    assert_string_equal(latch_req_method(q), "GET");
    assert_string_equal(latch_req_url(q), "/users/42");
    assert_string_equal(latch_req_path(q), "/users/42");
    assert_null(q->query);
    /* Nothing to decode: the path is the target itself, not a copy. */
    assert_ptr_equal(latch_req_path(q), q->url);
    assert_null(q->arena);
}

static void test_origin_form_with_query(void **state)
{
    latch_req *q = target(*state, "/users?id=7&x");

    assert_string_equal(latch_req_path(q), "/users");
    assert_string_equal(latch_req_url(q), "/users?id=7&x");
    assert_ptr_equal(q->query, q->url + 7);
    assert_string_equal(q->query, "id=7&x");
}

static void test_empty_query(void **state)
{
    latch_req *q = target(*state, "/p?");

    assert_string_equal(latch_req_path(q), "/p");
    assert_non_null(q->query);
    assert_string_equal(q->query, "");
    assert_null(latch_req_query(q, "p"));
    assert_null(latch_req_query(q, ""));
}

static void test_root_path(void **state)
{
    latch_req *q = target(*state, "/");

    assert_string_equal(latch_req_path(q), "/");
    assert_null(q->query);
}

static void test_percent_escapes_are_decoded(void **state)
{
    fixture *f = *state;
    latch_req *q = target(f, "/caf%C3%A9/a%20b/%7euser");

    assert_string_equal(latch_req_path(q), "/caf\xC3\xA9/a b/~user");
    /* The target as sent is untouched. */
    assert_string_equal(latch_req_url(q), "/caf%C3%A9/a%20b/%7euser");
    latch__req_reset(q);

    q = target(f, "/caf%c3%a9?q=%20");
    assert_string_equal(latch_req_path(q), "/caf\xC3\xA9");
    assert_string_equal(q->query, "q=%20");
}

static void test_encoded_slash_is_decoded(void **state)
{
    fixture *f = *state;
    latch_req *q = target(f, "/a%2Fb");

    assert_string_equal(latch_req_path(q), "/a/b");
    latch__req_reset(q);
    q = target(f, "/files/x%2fy%2F");
    assert_string_equal(latch_req_path(q), "/files/x/y/");
}

static void test_encoded_nul_is_kept(void **state)
{
    latch_req *q = target(*state, "/a%00b");

    /* Decoding it would cut the C string at "/a". */
    assert_string_equal(latch_req_path(q), "/a%00b");
    assert_int_equal(strlen(latch_req_path(q)), 6);
}

static void test_malformed_escapes_are_kept(void **state)
{
    static const struct {
        const char *target, *path;
    } cases[] = {
        {"/a%G1", "/a%G1"}, {"/a%1G", "/a%1G"},     {"/a%", "/a%"},
        {"/a%4", "/a%4"},   {"/a%4?x=1", "/a%4"},   {"/%%41", "/%A"},
        {"/%", "/%"},       {"/a%zz%41", "/a%zzA"}, {"/a%%", "/a%%"},
        {"/%4%41", "/%4A"},
    };
    fixture *f = *state;
    size_t i;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        latch_req *q = target(f, cases[i].target);

        assert_string_equal(latch_req_path(q), cases[i].path);
        latch__req_reset(q);
    }
}

static void test_plus_is_not_a_space_in_the_path(void **state)
{
    fixture *f = *state;
    latch_req *q = target(f, "/a+b");

    assert_string_equal(latch_req_path(q), "/a+b");
    latch__req_reset(q);
    /* Also when the path is copied (query present). */
    q = target(f, "/a+b?c=d+e");
    assert_string_equal(latch_req_path(q), "/a+b");
    assert_string_equal(latch_req_query(q, "c"), "d e");
}

static void test_absolute_form(void **state)
{
    fixture *f = *state;
    latch_req *q = target(f, "http://host:80/a%20b?x=1");

    assert_string_equal(latch_req_path(q), "/a b");
    assert_string_equal(q->query, "x=1");
    assert_string_equal(latch_req_query(q, "x"), "1");
    assert_string_equal(latch_req_url(q), "http://host:80/a%20b?x=1");
    latch__req_reset(q);

    q = target(f, "http://host");
    assert_string_equal(latch_req_path(q), "/");
    assert_null(q->query);
    latch__req_reset(q);

    q = target(f, "http://host/");
    assert_string_equal(latch_req_path(q), "/");
    assert_null(q->query);
    latch__req_reset(q);

    q = target(f, "https://example.com:8443?a=b");
    assert_string_equal(latch_req_path(q), "/");
    assert_string_equal(q->query, "a=b");
    latch__req_reset(q);

    q = target(f, "http://h/x/y");
    assert_string_equal(latch_req_path(q), "/x/y");
    assert_null(q->query);
}

static void test_asterisk_form(void **state)
{
    fixture *f = *state;
    latch_req *q = load(f, "OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n");

    assert_string_equal(latch_req_method(q), "OPTIONS");
    assert_string_equal(latch_req_path(q), "*");
    assert_string_equal(latch_req_url(q), "*");
    assert_null(q->query);
}

/* ---- the query ---------------------------------------------------------- */

static void test_query_lookup(void **state)
{
    latch_req *q = target(*state, "/s?a=1&b=&c&a=2&x=p=q&d=%ZZ&e=%00");

    assert_null(latch_req_query(q, "zz"));
    assert_null(latch_req_query(q, NULL));
    assert_string_equal(latch_req_query(q, "a"), "1"); /* first wins */
    assert_string_equal(latch_req_query(q, "b"), "");
    assert_string_equal(latch_req_query(q, "c"), "");
    assert_string_equal(latch_req_query(q, "x"), "p=q");
    assert_string_equal(latch_req_query(q, "d"), "%ZZ");
    assert_string_equal(latch_req_query(q, "e"), "%00");
    /* Neither name is a prefix match of the other. */
    assert_null(latch_req_query(q, "aa"));
    assert_null(latch_req_query(q, ""));
}

static void test_query_without_query(void **state)
{
    latch_req *q = target(*state, "/s");

    assert_null(latch_req_query(q, "a"));
    assert_null(latch_req_query(NULL, "a"));
}

static void test_query_key_prefix_of_another(void **state)
{
    fixture *f = *state;
    latch_req *q = target(f, "/s?abc=3&ab=2&a=1");

    assert_string_equal(latch_req_query(q, "a"), "1");
    assert_string_equal(latch_req_query(q, "ab"), "2");
    assert_string_equal(latch_req_query(q, "abc"), "3");
    assert_null(latch_req_query(q, "abcd"));
    assert_null(latch_req_query(q, "b"));
    latch__req_reset(q);

    q = target(f, "/s?a=1&ab=2");
    assert_string_equal(latch_req_query(q, "ab"), "2");
    assert_string_equal(latch_req_query(q, "a"), "1");
}

static void test_query_decoding(void **state)
{
    latch_req *q = target(
        *state, "/s?q=x+y%2Bz&k%20ey=v%26al&a+b=c+d&%61%3Db=eq&u=%C3%A9");

    /* '+' is a space, "%2B" a plus. */
    assert_string_equal(latch_req_query(q, "q"), "x y+z");
    /* Keys are decoded too, and a decoded '&' does not split. */
    assert_string_equal(latch_req_query(q, "k ey"), "v&al");
    assert_null(latch_req_query(q, "k%20ey"));
    assert_string_equal(latch_req_query(q, "a b"), "c d");
    assert_string_equal(latch_req_query(q, "a=b"), "eq");
    assert_string_equal(latch_req_query(q, "u"), "\xC3\xA9");
}

static void test_query_values_never_move(void **state)
{
    latch_req *q = target(*state, "/p%20q?v=hello+world&w=2");
    const char *path = latch_req_path(q);
    const char *v = latch_req_query(q, "v");
    int i;

    assert_string_equal(v, "hello world");
    /* Every lookup takes arena space; earlier strings must stay put. */
    for (i = 0; i < 500; i++)
        assert_string_equal(latch_req_query(q, "w"), "2");
    assert_string_equal(v, "hello world");
    assert_string_equal(path, "/p q");
    assert_ptr_equal(latch_req_path(q), path);
}

static void test_query_repeated_values(void **state)
{
    latch_req *q = target(*state, "/s?tag=a&x=1&tag=b+c&t%61g=%41&tag&tags=no");
    const char *v[8] = {0};

    assert_int_equal(latch_req_query_values(q, "tag", v, 8), 4);
    assert_string_equal(v[0], "a");
    assert_string_equal(v[1], "b c");
    assert_string_equal(v[2], "A"); /* the key decoded matches too */
    assert_string_equal(v[3], "");
    assert_null(v[4]);
    /* Fewer slots than values: the first ones, and the full count. */
    memset(v, 0, sizeof(v));
    assert_int_equal(latch_req_query_values(q, "tag", v, 2), 4);
    assert_string_equal(v[1], "b c");
    assert_null(v[2]);
    assert_int_equal(latch_req_query_values(q, "tag", NULL, 0), 4);
    assert_int_equal(latch_req_query_values(q, "x", v, 8), 1);
    assert_int_equal(latch_req_query_values(q, "nope", v, 8), 0);
    assert_int_equal(latch_req_query_values(q, "tag", NULL, 1),
                     LATCH_ERR_INVALID_ARG);
    assert_int_equal(latch_req_query_values(q, "tag", v, -1),
                     LATCH_ERR_INVALID_ARG);
    assert_string_equal(latch_req_query(q, "tag"), "a");
}

/* ---- headers ------------------------------------------------------------ */

static const char with_fields[] = "GET / HTTP/1.1\r\n"
                                  "Host: example.com\r\n"
                                  "X-Dup: one\r\n"
                                  "Content-Type:  text/plain \r\n"
                                  "x-dup: two\r\n"
                                  "Empty:\r\n"
                                  "\r\n";

static void test_header_lookup(void **state)
{
    latch_req *q = load(*state, with_fields);

    assert_string_equal(latch_req_header(q, "Host"), "example.com");
    assert_string_equal(latch_req_header(q, "host"), "example.com");
    assert_string_equal(latch_req_header(q, "HOST"), "example.com");
    assert_string_equal(latch_req_header(q, "content-type"), "text/plain");
    assert_string_equal(latch_req_header(q, "X-DUP"), "one");
    assert_string_equal(latch_req_header(q, "Empty"), "");
    assert_null(latch_req_header(q, "Accept"));
    assert_null(latch_req_header(q, "Hos"));
    assert_null(latch_req_header(q, "Hostx"));
    assert_null(latch_req_header(q, ""));
    assert_null(latch_req_header(q, NULL));
    assert_null(latch_req_header(NULL, "Host"));
    /* Returned in place, in the head. */
    assert_ptr_equal(latch_req_header(q, "host"),
                     q->head + q->fields[0].value.off);
}

static void test_header_repeated_values(void **state)
{
    latch_req *q = load(*state, with_fields);
    const char *v[4] = {0};

    assert_int_equal(latch_req_header_values(q, "X-DUP", v, 4), 2);
    assert_string_equal(v[0], "one");
    assert_string_equal(v[1], "two");
    assert_null(v[2]);
    assert_int_equal(latch_req_header_values(q, "host", v, 1), 1);
    assert_string_equal(v[0], "example.com");
    assert_int_equal(latch_req_header_values(q, "accept", v, 4), 0);
    assert_int_equal(latch_req_header_values(q, "x-dup", NULL, 0), 2);
    assert_int_equal(latch_req_header_values(q, "x-dup", NULL, 2),
                     LATCH_ERR_INVALID_ARG);
}

static void test_header_count_and_at(void **state)
{
    latch_req *q = load(*state, with_fields);
    const char *name = "sentinel", *value = "sentinel";

    assert_int_equal(latch_req_header_count(q), 5);
    assert_int_equal(latch_req_header_at(q, 0, &name, &value), 0);
    assert_string_equal(name, "Host");
    assert_string_equal(value, "example.com");
    /* Case and order as sent. */
    assert_int_equal(latch_req_header_at(q, 3, &name, &value), 0);
    assert_string_equal(name, "x-dup");
    assert_string_equal(value, "two");
    assert_int_equal(latch_req_header_at(q, 4, &name, &value), 0);
    assert_string_equal(name, "Empty");
    assert_string_equal(value, "");
    /* Either out-parameter may be NULL. */
    assert_int_equal(latch_req_header_at(q, 2, NULL, &value), 0);
    assert_string_equal(value, "text/plain");
    assert_int_equal(latch_req_header_at(q, 2, &name, NULL), 0);
    assert_string_equal(name, "Content-Type");

    /* Out of range: an error, and both out-parameters set to NULL. */
    assert_int_equal(latch_req_header_at(q, 5, &name, &value),
                     LATCH_ERR_INVALID_ARG);
    assert_null(name);
    assert_null(value);
    name = value = "sentinel";
    assert_int_equal(latch_req_header_at(q, -1, &name, &value),
                     LATCH_ERR_INVALID_ARG);
    assert_null(name);
    assert_null(value);
    name = value = "sentinel";
    assert_int_equal(latch_req_header_at(NULL, 0, &name, &value),
                     LATCH_ERR_INVALID_ARG);
    assert_null(name);
    assert_null(value);
    assert_int_equal(latch_req_header_count(NULL), 0);
}

static void test_no_headers(void **state)
{
    fixture *f = *state;
    latch_req *q = target(f, "/");
    const char *name = "sentinel", *value = "sentinel";

    assert_int_equal(latch_req_header_count(q), 0);
    assert_null(latch_req_header(q, "Host"));
    assert_int_equal(latch_req_header_at(q, 0, &name, &value),
                     LATCH_ERR_INVALID_ARG);
    assert_null(name);
    assert_null(value);

    /* A request whose head was never attached (zeroed). */
    memset(q, 0, sizeof(*q));
    q->nfields = 3;
    assert_int_equal(latch_req_header_count(q), 0);
    assert_null(latch_req_header(q, "Host"));
}

/* ---- the body ----------------------------------------------------------- */

static void test_body_empty(void **state)
{
    latch_req *q = target(*state, "/");
    const void *data = NULL;
    size_t len = 99;

    assert_int_equal(latch_req_body(q, &data, &len), 0);
    assert_non_null(data);
    assert_int_equal(len, 0);

    /* A pooled request keeps its buffer with len 0: still empty. */
    assert_int_equal(latch__buf_append(&q->body, "old", 3, 1024), 0);
    q->body.len = 0;
    data = NULL;
    len = 99;
    assert_int_equal(latch_req_body(q, &data, &len), 0);
    assert_non_null(data);
    assert_int_equal(len, 0);
    assert_int_equal(latch_req_body(q, NULL, NULL), 0);
}

static void test_body_non_empty(void **state)
{
    latch_req *q = load(*state, "POST /u HTTP/1.1\r\n"
                                "Content-Length: 11\r\n\r\n");
    const void *data = NULL;
    size_t len = 0;

    assert_int_equal(latch__buf_append(&q->body, "hello", 5, 1024), 0);
    assert_int_equal(latch__buf_append(&q->body, " world", 6, 1024), 0);
    assert_int_equal(latch_req_body(q, &data, &len), 0);
    assert_ptr_equal(data, q->body.data);
    assert_int_equal(len, 11);
    assert_memory_equal(data, "hello world", 11);
}

static void test_body_null_request(void **state)
{
    const void *data = NULL;
    size_t len = 99;

    (void)state;
    assert_int_equal(latch_req_body(NULL, &data, &len), LATCH_ERR_INVALID_ARG);
    assert_non_null(data);
    assert_int_equal(len, 0);
}

/* ---- the arena ---------------------------------------------------------- */

#define NSMALL 2000

static void test_arena_pointers_never_move(void **state)
{
    fixture *f = *state;
    latch_req *q = &f->res.req;
    char *p[NSMALL];
    size_t i, j;

    for (i = 0; i < NSMALL; i++) {
        size_t n = 1 + i % 37;

        p[i] = latch__req_alloc(q, n + 1);
        assert_non_null(p[i]);
        for (j = 0; j < n; j++)
            p[i][j] = (char)('A' + (i + j) % 26);
        p[i][n] = '\0';
    }
    /* Every string is where it was and as it was written: no block moved
     * and no two allocations overlap. */
    for (i = 0; i < NSMALL; i++) {
        size_t n = 1 + i % 37;

        assert_int_equal(strlen(p[i]), n);
        for (j = 0; j < n; j++)
            assert_int_equal(p[i][j], (char)('A' + (i + j) % 26));
    }
}

static void test_arena_large_allocations(void **state)
{
    fixture *f = *state;
    latch_req *q = &f->res.req;
    char *small1, *big, *small2, *exact, *huge;

    small1 = latch__req_alloc(q, 6);
    assert_non_null(small1);
    memcpy(small1, "first", 6);

    /* Larger than a block: its own block, every byte writable. */
    big = latch__req_alloc(q, 5000);
    assert_non_null(big);
    memset(big, 'b', 5000);
    exact = latch__req_alloc(q, 1024);
    assert_non_null(exact);
    memset(exact, 'e', 1024);
    small2 = latch__req_alloc(q, 7);
    assert_non_null(small2);
    memcpy(small2, "second", 7);

    /* The largest one allowed (1 MiB), and one byte more. */
    huge = latch__req_alloc(q, (size_t)1 << 20);
    assert_non_null(huge);
    memset(huge, 'h', (size_t)1 << 20);
    assert_null(latch__req_alloc(q, ((size_t)1 << 20) + 1));
    /* Sizes whose header arithmetic would wrap. */
    assert_null(latch__req_alloc(q, SIZE_MAX));
    assert_null(latch__req_alloc(q, SIZE_MAX - 8));

    assert_string_equal(small1, "first");
    assert_string_equal(small2, "second");
    assert_int_equal(big[0], 'b');
    assert_int_equal(big[4999], 'b');
    assert_int_equal(exact[0], 'e');
    assert_int_equal(exact[1023], 'e');
    assert_int_equal(huge[0], 'h');
    assert_int_equal(huge[((size_t)1 << 20) - 1], 'h');

    /* Still usable after a refusal. */
    small1 = latch__req_alloc(q, 3);
    assert_non_null(small1);
    memcpy(small1, "ok", 3);
    assert_string_equal(small2, "second");
}

static void test_arena_reset_frees_and_restarts(void **state)
{
    fixture *f = *state;
    latch_req *q = &f->res.req;
    char *p;
    int i;

    /* Several blocks, small and large. */
    for (i = 0; i < 50; i++)
        assert_non_null(latch__req_alloc(q, 100));
    assert_non_null(latch__req_alloc(q, 3000));
    assert_non_null(q->arena);
    latch__req_reset(q);
    assert_null(q->arena);
    assert_int_equal(q->arena_left, 0);

    /* Twice, and on an empty arena, is harmless. */
    latch__req_reset(q);
    assert_null(q->arena);

    /* Usable again. */
    p = latch__req_alloc(q, 4);
    assert_non_null(p);
    memcpy(p, "new", 4);
    assert_string_equal(p, "new");
    assert_non_null(q->arena);
    latch__req_reset(q);
    assert_null(q->arena);
}

static void test_reset_after_decoding(void **state)
{
    fixture *f = *state;
    latch_req *q = target(f, "/a%20b?k=v+w");

    assert_string_equal(latch_req_path(q), "/a b");
    assert_string_equal(latch_req_query(q, "k"), "v w");
    assert_non_null(q->arena);
    latch__req_reset(q);
    assert_null(q->arena);
    /* The same object serves the next request. */
    q = target(f, "/c%41?k=z");
    assert_string_equal(latch_req_path(q), "/cA");
    assert_string_equal(latch_req_query(q, "k"), "z");
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_origin_form_without_query),
        T(test_origin_form_with_query),
        T(test_empty_query),
        T(test_root_path),
        T(test_percent_escapes_are_decoded),
        T(test_encoded_slash_is_decoded),
        T(test_encoded_nul_is_kept),
        T(test_malformed_escapes_are_kept),
        T(test_plus_is_not_a_space_in_the_path),
        T(test_absolute_form),
        T(test_asterisk_form),
        T(test_query_lookup),
        T(test_query_without_query),
        T(test_query_key_prefix_of_another),
        T(test_query_decoding),
        T(test_query_values_never_move),
        T(test_query_repeated_values),
        T(test_header_repeated_values),
        T(test_header_lookup),
        T(test_header_count_and_at),
        T(test_no_headers),
        T(test_body_empty),
        T(test_body_non_empty),
        T(test_body_null_request),
        T(test_arena_pointers_never_move),
        T(test_arena_large_allocations),
        T(test_arena_reset_frees_and_restarts),
        T(test_reset_after_decoding),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
