/*
 * test_json.c - unit tests of the JSON writer (src/json.c).
 *
 * Covers the structure rules (exact output of nested documents, commas and
 * colons, every kind of misuse), the sticky error (the failing call leaves
 * no byte behind, later calls return the same error and write nothing),
 * string escaping for every byte below 0x20 and the other escaped
 * characters, UTF-8 validation against a table and against an independent
 * reference decoder over every lead/second byte pair, the depth limit at
 * max and max + 1, the byte limit exactly reached and exceeded, integers at
 * their extremes, and doubles: exact strings for known values, and for many
 * random finite bit patterns a round trip through strtod, a length never
 * above %.17g's and a digit count equal to a linear search's minimum.
 *
 * It does not test the writer's users (res.c).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <float.h>
#include <inttypes.h>
#include <locale.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define BIG ((size_t)1 << 20)

/* A writer over its own buffer, disposed by the test's teardown. */
typedef struct fixture {
    latch_buf b;
    latch_json j;
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof(*f));

    if (f == NULL)
        return -1;
    latch__json_init(&f->j, &f->b, BIG, 0);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;

    latch__buf_dispose(&f->b);
    free(f);
    return 0;
}

/* Asserts that b holds exactly the bytes of `want` (n bytes). */
static void assert_out_n(const latch_buf *b, const char *want, size_t n)
{
    if (b->len != n || (n > 0 && memcmp(b->data, want, n) != 0))
        fail_msg("output is \"%.*s\" (%zu bytes), want \"%.*s\" (%zu bytes)",
                 (int)b->len, b->len ? b->data : "", b->len, (int)n, want, n);
}

static void assert_out(const latch_buf *b, const char *want)
{
    assert_out_n(b, want, strlen(want));
}

/* ------------------------------------------------------------------ */
/* Structure                                                            */
/* ------------------------------------------------------------------ */

static void test_nested_document(void **state)
{
    fixture *f = *state;
    latch_json *j = &f->j;

    assert_int_equal(latch__json_object_begin(j), 0);
    assert_int_equal(latch__json_key(j, "a"), 0);
    assert_int_equal(latch__json_int64(j, 1), 0);
    assert_int_equal(latch__json_key(j, "b"), 0);
    assert_int_equal(latch__json_array_begin(j), 0);
    assert_int_equal(latch__json_bool(j, true), 0);
    assert_int_equal(latch__json_bool(j, false), 0);
    assert_int_equal(latch__json_null(j), 0);
    assert_int_equal(latch__json_string(j, "x"), 0);
    assert_int_equal(latch__json_object_begin(j), 0);
    assert_int_equal(latch__json_key(j, "c"), 0);
    assert_int_equal(latch__json_int64(j, -2), 0);
    assert_int_equal(latch__json_key_n(j, "dz", 1), 0);
    assert_int_equal(latch__json_array_begin(j), 0);
    assert_int_equal(latch__json_array_end(j), 0);
    assert_int_equal(latch__json_object_end(j), 0);
    assert_int_equal(latch__json_object_begin(j), 0);
    assert_int_equal(latch__json_object_end(j), 0);
    assert_int_equal(latch__json_raw(j, "[1,2]", 5), 0);
    assert_int_equal(latch__json_array_end(j), 0);
    assert_int_equal(latch__json_key(j, "e"), 0);
    assert_int_equal(latch__json_object_begin(j), 0);
    assert_int_equal(latch__json_key(j, "f"), 0);
    assert_int_equal(latch__json_array_begin(j), 0);
    assert_int_equal(latch__json_array_begin(j), 0);
    assert_int_equal(latch__json_array_end(j), 0);
    assert_int_equal(latch__json_array_begin(j), 0);
    assert_int_equal(latch__json_uint64(j, 7), 0);
    assert_int_equal(latch__json_array_end(j), 0);
    assert_int_equal(latch__json_array_end(j), 0);
    assert_int_equal(latch__json_object_end(j), 0);
    assert_int_equal(latch__json_key(j, ""), 0);
    assert_int_equal(latch__json_double(j, 1.5), 0);
    assert_int_equal(latch__json_key(j, "r"), 0);
    assert_int_equal(latch__json_raw(j, "{\"k\":null}", 10), 0);
    /* Not finished while the outer object is open. */
    assert_int_equal(latch__json_finish(j), LATCH_ERR_INVALID_ARG);
    assert_int_equal(latch__json_object_end(j), 0);
    assert_int_equal(latch__json_finish(j), 0);
    assert_out(&f->b,
               "{\"a\":1,\"b\":[true,false,null,\"x\",{\"c\":-2,\"d\":[]},"
               "{},[1,2]],\"e\":{\"f\":[[],[7]]},\"\":1.5,"
               "\"r\":{\"k\":null}}");
}

static void test_top_level_scalars(void **state)
{
    static const struct {
        int kind;
        const char *want;
    } cases[] = {
        {0, "null"}, {1, "true"},      {2, "false"},
        {3, "-12"},  {4, "\"s\\\"\""}, {5, "0.25"},
        {6, "[]"},   {7, "{}"},        {8, "{\"raw\":true}"},
    };
    size_t i;
    int r;

    (void)state;
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        latch_buf b = {0};
        latch_json j;

        latch__json_init(&j, &b, BIG, 0);
        assert_int_equal(latch__json_finish(&j), LATCH_ERR_INVALID_ARG);
        switch (cases[i].kind) {
        case 0: r = latch__json_null(&j); break;
        case 1: r = latch__json_bool(&j, true); break;
        case 2: r = latch__json_bool(&j, false); break;
        case 3: r = latch__json_int64(&j, -12); break;
        case 4: r = latch__json_string(&j, "s\""); break;
        case 5: r = latch__json_double(&j, 0.25); break;
        case 6:
            r = latch__json_array_begin(&j);
            if (r == 0)
                r = latch__json_array_end(&j);
            break;
        case 7:
            r = latch__json_object_begin(&j);
            if (r == 0)
                r = latch__json_object_end(&j);
            break;
        default: r = latch__json_raw(&j, "{\"raw\":true}", 12); break;
        }
        assert_int_equal(r, 0);
        assert_int_equal(latch__json_finish(&j), 0);
        assert_out(&b, cases[i].want);
        /* A second top-level value is refused, and nothing is added. */
        assert_int_equal(latch__json_null(&j), LATCH_ERR_INVALID_ARG);
        assert_out(&b, cases[i].want);
        latch__buf_dispose(&b);
    }
}

static void test_appends_after_existing_bytes(void **state)
{
    fixture *f = *state;
    static const char head[] = "HTTP/1.1 200 OK\r\n\r\n";

    assert_int_equal(latch__buf_append(&f->b, head, sizeof(head) - 1, BIG), 0);
    latch__json_init(&f->j, &f->b, BIG, 0);
    assert_int_equal(latch__json_array_begin(&f->j), 0);
    assert_int_equal(latch__json_int64(&f->j, 1), 0);
    assert_int_equal(latch__json_int64(&f->j, 2), 0);
    assert_int_equal(latch__json_array_end(&f->j), 0);
    assert_int_equal(latch__json_finish(&f->j), 0);
    assert_out(&f->b, "HTTP/1.1 200 OK\r\n\r\n[1,2]");
}

static void test_finish_on_unfinished_is_not_sticky(void **state)
{
    fixture *f = *state;

    assert_int_equal(latch__json_array_begin(&f->j), 0);
    assert_int_equal(latch__json_finish(&f->j), LATCH_ERR_INVALID_ARG);
    assert_int_equal(latch__json_null(&f->j), 0);
    assert_int_equal(latch__json_array_end(&f->j), 0);
    assert_int_equal(latch__json_finish(&f->j), 0);
    assert_out(&f->b, "[null]");
}

/* Operations for the misuse table: a script of calls. */
enum op {
    END_OF_SCRIPT,
    OB, /* object_begin */
    OE,
    AB,
    AE,
    KEY, /* key "k" */
    KEYNULL,
    KEYN_NULL, /* key_n(NULL, 1) */
    STR,       /* string "s" */
    STRNULL,
    STRN_NULL,
    INT,
    NUL,
    RAW,
    RAWNULL,
    RAWEMPTY,
    DNAN,
    DINF,
    DNINF,
};

static int run_op(latch_json *j, enum op op)
{
    switch (op) {
    case OB: return latch__json_object_begin(j);
    case OE: return latch__json_object_end(j);
    case AB: return latch__json_array_begin(j);
    case AE: return latch__json_array_end(j);
    case KEY: return latch__json_key(j, "k");
    case KEYNULL: return latch__json_key(j, NULL);
    case KEYN_NULL: return latch__json_key_n(j, NULL, 1);
    case STR: return latch__json_string(j, "s");
    case STRNULL: return latch__json_string(j, NULL);
    case STRN_NULL: return latch__json_string_n(j, NULL, 1);
    case INT: return latch__json_int64(j, 5);
    case NUL: return latch__json_null(j);
    case RAW: return latch__json_raw(j, "1", 1);
    case RAWNULL: return latch__json_raw(j, NULL, 1);
    case RAWEMPTY: return latch__json_raw(j, "1", 0);
    case DNAN: return latch__json_double(j, NAN);
    case DINF: return latch__json_double(j, INFINITY);
    case DNINF: return latch__json_double(j, -INFINITY);
    default: return -1;
    }
}

/*
 * Calls every entry point of the writer and asserts that each returns
 * `err` and that the buffer stays as `want`.
 */
static void assert_all_calls_refused(latch_json *j, const latch_buf *b, int err,
                                     const char *want)
{
    int op;

    for (op = OB; op <= DNINF; op++) {
        assert_int_equal(run_op(j, (enum op)op), err);
        assert_out(b, want);
    }
    assert_int_equal(latch__json_key_n(j, "k", 1), err);
    assert_int_equal(latch__json_string_n(j, "s", 1), err);
    assert_int_equal(latch__json_uint64(j, 1), err);
    assert_int_equal(latch__json_double(j, 1.0), err);
    assert_int_equal(latch__json_bool(j, true), err);
    assert_int_equal(latch__json_finish(j), err);
    assert_out(b, want);
}

static void test_misuse_table(void **state)
{
    static const struct {
        const char *name;
        enum op ops[8]; /* the last one fails */
        int err;
        const char *out; /* what stays in the buffer */
    } cases[] = {
        {"value where a key is due", {OB, INT}, LATCH_ERR_INVALID_ARG, "{"},
        {"string where a key is due",
         {OB, KEY, INT, STR},
         LATCH_ERR_INVALID_ARG,
         "{\"k\":5"},
        {"container where a key is due", {OB, AB}, LATCH_ERR_INVALID_ARG, "{"},
        {"raw where a key is due", {OB, RAW}, LATCH_ERR_INVALID_ARG, "{"},
        {"key in an array", {AB, KEY}, LATCH_ERR_INVALID_ARG, "["},
        {"key at the top level", {KEY}, LATCH_ERR_INVALID_ARG, ""},
        {"key after a key", {OB, KEY, KEY}, LATCH_ERR_INVALID_ARG, "{\"k\":"},
        {"key after the document", {OB, OE, KEY}, LATCH_ERR_INVALID_ARG, "{}"},
        {"array end closing an object", {OB, AE}, LATCH_ERR_INVALID_ARG, "{"},
        {"object end closing an array", {AB, OE}, LATCH_ERR_INVALID_ARG, "["},
        {"end of the outer container first",
         {AB, OB, AE},
         LATCH_ERR_INVALID_ARG,
         "[{"},
        {"object end with no container", {OE}, LATCH_ERR_INVALID_ARG, ""},
        {"array end with no container", {AE}, LATCH_ERR_INVALID_ARG, ""},
        {"end after the document", {AB, AE, AE}, LATCH_ERR_INVALID_ARG, "[]"},
        {"object end after a key",
         {OB, KEY, OE},
         LATCH_ERR_INVALID_ARG,
         "{\"k\":"},
        {"second top-level scalar", {INT, NUL}, LATCH_ERR_INVALID_ARG, "5"},
        {"second top-level container",
         {OB, OE, AB},
         LATCH_ERR_INVALID_ARG,
         "{}"},
        {"second top-level raw", {RAW, RAW}, LATCH_ERR_INVALID_ARG, "1"},
        {"key NULL", {OB, KEYNULL}, LATCH_ERR_INVALID_ARG, "{"},
        {"key_n NULL", {OB, KEYN_NULL}, LATCH_ERR_INVALID_ARG, "{"},
        {"string NULL", {AB, STRNULL}, LATCH_ERR_INVALID_ARG, "["},
        {"string_n NULL", {AB, INT, STRN_NULL}, LATCH_ERR_INVALID_ARG, "[5"},
        {"raw NULL", {AB, RAWNULL}, LATCH_ERR_INVALID_ARG, "["},
        {"raw empty", {AB, RAWEMPTY}, LATCH_ERR_INVALID_ARG, "["},
        {"NaN", {AB, INT, DNAN}, LATCH_ERR_INVALID_ARG, "[5"},
        {"+Inf", {OB, KEY, DINF}, LATCH_ERR_INVALID_ARG, "{\"k\":"},
        {"-Inf", {DNINF}, LATCH_ERR_INVALID_ARG, ""},
    };
    size_t i, k;

    (void)state;
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        latch_buf b = {0};
        latch_json j;
        int r = 0;

        latch__json_init(&j, &b, BIG, 0);
        for (k = 0; cases[i].ops[k] != END_OF_SCRIPT; k++) {
            r = run_op(&j, cases[i].ops[k]);
            if (cases[i].ops[k + 1] != END_OF_SCRIPT && r != 0)
                fail_msg("%s: step %zu failed early (%d)", cases[i].name, k, r);
        }
        if (r != cases[i].err)
            fail_msg("%s: got %d, want %d", cases[i].name, r, cases[i].err);
        assert_out(&b, cases[i].out);
        assert_all_calls_refused(&j, &b, cases[i].err, cases[i].out);
        latch__buf_dispose(&b);
    }
}

static void test_bad_init(void **state)
{
    latch_buf b = {0};
    latch_json j;

    (void)state;
    latch__json_init(&j, &b, BIG, -1);
    assert_all_calls_refused(&j, &b, LATCH_ERR_INVALID_ARG, "");
    latch__json_init(&j, &b, BIG, LATCH_JSON_MAX_DEPTH + 1);
    assert_all_calls_refused(&j, &b, LATCH_ERR_INVALID_ARG, "");
    latch__json_init(&j, NULL, BIG, 0);
    assert_int_equal(latch__json_null(&j), LATCH_ERR_INVALID_ARG);
    assert_int_equal(latch__json_finish(&j), LATCH_ERR_INVALID_ARG);
    /* The largest accepted depth works. */
    latch__json_init(&j, &b, BIG, LATCH_JSON_MAX_DEPTH);
    assert_int_equal(latch__json_null(&j), 0);
    assert_int_equal(latch__json_finish(&j), 0);
    assert_out(&b, "null");
    latch__buf_dispose(&b);
}

/* ------------------------------------------------------------------ */
/* Sticky errors                                                        */
/* ------------------------------------------------------------------ */

static void test_sticky_after_invalid_string_midway(void **state)
{
    fixture *f = *state;
    latch_json *j = &f->j;
    /* Escapes and a valid run come before the bad byte, so the writer has
     * appended part of the token when it finds the error. */
    static const char bad[] = "ok\n\"\\ \xC3\xA9 more \xFF tail";

    assert_int_equal(latch__json_object_begin(j), 0);
    assert_int_equal(latch__json_key(j, "a"), 0);
    assert_int_equal(latch__json_int64(j, 1), 0);
    assert_int_equal(latch__json_key(j, "b"), 0);
    assert_int_equal(latch__json_string(j, bad), LATCH_ERR_INVALID_CHAR);
    assert_out(&f->b, "{\"a\":1,\"b\":");
    assert_all_calls_refused(j, &f->b, LATCH_ERR_INVALID_CHAR,
                             "{\"a\":1,\"b\":");
}

static void test_sticky_after_invalid_key_midway(void **state)
{
    fixture *f = *state;
    latch_json *j = &f->j;

    assert_int_equal(latch__json_object_begin(j), 0);
    assert_int_equal(latch__json_key(j, "a"), 0);
    assert_int_equal(latch__json_null(j), 0);
    /* The comma and the start of the key were appended, then undone. */
    assert_int_equal(latch__json_key(j, "abc\x01\xED\xA0\x80"),
                     LATCH_ERR_INVALID_CHAR);
    assert_out(&f->b, "{\"a\":null");
    assert_all_calls_refused(j, &f->b, LATCH_ERR_INVALID_CHAR, "{\"a\":null");
}

static void test_first_error_wins(void **state)
{
    fixture *f = *state;
    latch_json *j = &f->j;

    assert_int_equal(latch__json_array_begin(j), 0);
    assert_int_equal(latch__json_double(j, NAN), LATCH_ERR_INVALID_ARG);
    /* A later call that would fail differently still reports the first. */
    assert_int_equal(latch__json_string(j, "\xFF"), LATCH_ERR_INVALID_ARG);
    assert_int_equal(latch__json_key(j, NULL), LATCH_ERR_INVALID_ARG);
    assert_out(&f->b, "[");

    latch__json_init(j, &f->b, BIG, 0);
    f->b.len = 0;
    assert_int_equal(latch__json_string(j, "\xFF"), LATCH_ERR_INVALID_CHAR);
    assert_int_equal(latch__json_double(j, NAN), LATCH_ERR_INVALID_CHAR);
    assert_int_equal(latch__json_key(j, NULL), LATCH_ERR_INVALID_CHAR);
    assert_int_equal(latch__json_raw(j, NULL, 0), LATCH_ERR_INVALID_CHAR);
    assert_out(&f->b, "");
}

/* ------------------------------------------------------------------ */
/* Limits                                                               */
/* ------------------------------------------------------------------ */

/* Opens `n` containers alternating object, array, object, ... (index i is
 * an object when i is even) and returns the first error. Each array's
 * parent object gets the key "k" first. Appends the same text to want. */
static int nest(latch_json *j, int n, latch_buf *want)
{
    int i, r;

    for (i = 0; i < n; i++) {
        if (i % 2 == 1) {
            r = latch__json_key(j, "k");
            if (r < 0)
                return r;
            latch__buf_append(want, "\"k\":", 4, BIG);
        }
        r = i % 2 ? latch__json_array_begin(j) : latch__json_object_begin(j);
        if (r < 0)
            return r;
        latch__buf_append(want, i % 2 ? "[" : "{", 1, BIG);
    }
    return 0;
}

/* Closes what nest(n) opened. */
static int unnest(latch_json *j, int n, latch_buf *want)
{
    int i, r;

    for (i = n - 1; i >= 0; i--) {
        r = i % 2 ? latch__json_array_end(j) : latch__json_object_end(j);
        if (r < 0)
            return r;
        latch__buf_append(want, i % 2 ? "]" : "}", 1, BIG);
    }
    return 0;
}

static void check_depth(int max_depth, int effective)
{
    latch_buf b = {0}, want = {0};
    latch_json j;

    /* Exactly max: accepted, and the document closes. */
    latch__json_init(&j, &b, BIG, max_depth);
    assert_int_equal(nest(&j, effective, &want), 0);
    assert_int_equal(unnest(&j, effective, &want), 0);
    assert_int_equal(latch__json_finish(&j), 0);
    assert_out_n(&b, want.data, want.len);

    /* max + 1: the innermost begin is refused and sticks. */
    b.len = want.len = 0;
    latch__json_init(&j, &b, BIG, max_depth);
    assert_int_equal(nest(&j, effective, &want), 0);
    if (effective % 2 == 1) {
        /* The innermost (index effective - 1) is an object. */
        assert_int_equal(latch__json_key(&j, "k"), 0);
        latch__buf_append(&want, "\"k\":", 4, BIG);
    }
    assert_int_equal(latch__json_array_begin(&j), LATCH_ERR_LIMIT);
    assert_out_n(&b, want.data, want.len);
    assert_int_equal(latch__json_null(&j), LATCH_ERR_LIMIT);
    assert_int_equal(latch__json_finish(&j), LATCH_ERR_LIMIT);
    assert_out_n(&b, want.data, want.len);

    latch__buf_dispose(&b);
    latch__buf_dispose(&want);
}

static void test_depth_limit(void **state)
{
    (void)state;
    check_depth(1, 1);
    check_depth(3, 3);
    check_depth(0, LATCH_JSON_DEFAULT_DEPTH);
    check_depth(64, 64);
    /* Crosses the 64-bit words of the container stack. */
    check_depth(65, 65);
    check_depth(LATCH_JSON_MAX_DEPTH, LATCH_JSON_MAX_DEPTH);
}

/* The object/array kinds survive deep nesting: closing with the wrong
 * kind is still caught at every level of a mixed stack. */
static void test_deep_stack_remembers_kinds(void **state)
{
    latch_buf b = {0}, want = {0};
    latch_json j;
    int d;

    (void)state;
    for (d = 1; d <= LATCH_JSON_MAX_DEPTH; d += 21) {
        b.len = want.len = 0;
        latch__json_init(&j, &b, BIG, LATCH_JSON_MAX_DEPTH);
        assert_int_equal(nest(&j, d, &want), 0);
        /* Level d (1-based) is an object when d is odd. */
        if (d % 2)
            assert_int_equal(latch__json_array_end(&j), LATCH_ERR_INVALID_ARG);
        else
            assert_int_equal(latch__json_object_end(&j), LATCH_ERR_INVALID_ARG);
        assert_out_n(&b, want.data, want.len);
    }
    latch__buf_dispose(&b);
    latch__buf_dispose(&want);
}

/* Writes the document {"name":"value\n","n":[12345,true]} with the given
 * limit and returns the first error. */
static int write_doc(latch_buf *b, size_t limit)
{
    latch_json j;

    latch__json_init(&j, b, limit, 0);
    latch__json_object_begin(&j);
    latch__json_key(&j, "name");
    latch__json_string(&j, "value\n");
    latch__json_key(&j, "n");
    latch__json_array_begin(&j);
    latch__json_int64(&j, 12345);
    latch__json_bool(&j, true);
    latch__json_array_end(&j);
    latch__json_object_end(&j);
    return latch__json_finish(&j);
}

static void test_byte_limit(void **state)
{
    static const char doc[] = "{\"name\":\"value\\n\",\"n\":[12345,true]}";
    const size_t n = sizeof(doc) - 1;
    latch_buf b = {0};
    size_t limit;

    (void)state;
    /* Exactly reached. */
    assert_int_equal(write_doc(&b, n), 0);
    assert_out(&b, doc);
    /* Exceeded by one, and every smaller limit: the output is the longest
     * whole-token prefix that fits, never a piece of a token. */
    for (limit = 0; limit < n; limit++) {
        /* Where each call ends: { "name": "value\n" ,"n": [ 12345 ,true ] */
        static const size_t cuts[] = {0, 1, 8, 17, 22, 23, 28, 33, 34};
        size_t k, fit = 0;

        b.len = 0;
        assert_int_equal(write_doc(&b, limit), LATCH_ERR_LIMIT);
        for (k = 0; k < sizeof(cuts) / sizeof(cuts[0]); k++)
            if (cuts[k] <= limit)
                fit = cuts[k];
        assert_out_n(&b, doc, fit);
    }
    latch__buf_dispose(&b);
}

static void test_byte_limit_counts_existing_bytes(void **state)
{
    latch_buf b = {0};
    latch_json j;

    (void)state;
    assert_int_equal(latch__buf_append(&b, "abc", 3, BIG), 0);
    latch__json_init(&j, &b, 8, 0);
    assert_int_equal(latch__json_string(&j, "123"), 0); /* 3 + 5 = 8 */
    assert_out(&b, "abc\"123\"");
    b.len = 3;
    latch__json_init(&j, &b, 8, 0);
    assert_int_equal(latch__json_string(&j, "1234"), LATCH_ERR_LIMIT);
    assert_out(&b, "abc");
    assert_int_equal(latch__json_null(&j), LATCH_ERR_LIMIT);
    latch__buf_dispose(&b);
}

/* A long string whose runs are copied in several appends: the limit hits
 * in the middle and everything is undone. */
static void test_byte_limit_inside_long_string(void **state)
{
    latch_buf b = {0};
    latch_json j;
    char s[3000];
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(s); i++)
        s[i] = i % 100 == 99 ? '\n' : (char)('a' + i % 26);
    latch__json_init(&j, &b, 2000, 0);
    assert_int_equal(latch__json_array_begin(&j), 0);
    assert_int_equal(latch__json_string_n(&j, s, sizeof(s)), LATCH_ERR_LIMIT);
    assert_out(&b, "[");
    latch__buf_dispose(&b);
}

/* ------------------------------------------------------------------ */
/* Strings                                                              */
/* ------------------------------------------------------------------ */

/* Writes s[0..n) as a top-level string; returns the result. */
static int one_string(latch_buf *b, const char *s, size_t n)
{
    latch_json j;

    b->len = 0;
    latch__json_init(&j, b, BIG, 0);
    return latch__json_string_n(&j, s, n);
}

static void test_control_characters(void **state)
{
    static const char *const want[0x20] = {
        "\\u0000", "\\u0001", "\\u0002", "\\u0003", "\\u0004", "\\u0005",
        "\\u0006", "\\u0007", "\\b",     "\\t",     "\\n",     "\\u000b",
        "\\f",     "\\r",     "\\u000e", "\\u000f", "\\u0010", "\\u0011",
        "\\u0012", "\\u0013", "\\u0014", "\\u0015", "\\u0016", "\\u0017",
        "\\u0018", "\\u0019", "\\u001a", "\\u001b", "\\u001c", "\\u001d",
        "\\u001e", "\\u001f",
    };
    latch_buf b = {0};
    char expect[32], in[3];
    int c;

    (void)state;
    for (c = 0; c < 0x20; c++) {
        /* Alone, and between plain bytes (flushing a run each side). */
        in[0] = (char)c;
        assert_int_equal(one_string(&b, in, 1), 0);
        snprintf(expect, sizeof(expect), "\"%s\"", want[c]);
        assert_out(&b, expect);
        in[0] = 'x';
        in[1] = (char)c;
        in[2] = 'y';
        assert_int_equal(one_string(&b, in, 3), 0);
        snprintf(expect, sizeof(expect), "\"x%sy\"", want[c]);
        assert_out(&b, expect);
    }
    latch__buf_dispose(&b);
}

static void test_other_escapes_and_copies(void **state)
{
    static const struct {
        const char *in;
        size_t n;
        const char *want;
    } cases[] = {
        {"\"", 1, "\"\\\"\""},
        {"\\", 1, "\"\\\\\""},
        {"/", 1, "\"/\""},
        {"</script>", 9, "\"</script>\""},
        {"\x7F", 1, "\"\x7F\""},
        {" ~", 2, "\" ~\""},
        {"", 0, "\"\""},
        {"a\0b", 3, "\"a\\u0000b\""},
        /* U+2028 and U+2029 escaped; their neighbours copied. */
        {"\xE2\x80\xA8", 3, "\"\\u2028\""},
        {"\xE2\x80\xA9", 3, "\"\\u2029\""},
        {"a\xE2\x80\xA8z\xE2\x80\xA9", 8, "\"a\\u2028z\\u2029\""},
        {"\xE2\x80\xA7\xE2\x80\xAA", 6, "\"\xE2\x80\xA7\xE2\x80\xAA\""},
        {"\xE2\x81\xA8", 3, "\"\xE2\x81\xA8\""},
        {"caf\xC3\xA9 \xE6\x97\xA5\xE6\x9C\xAC \xF0\x9F\x98\x80", 17,
         "\"caf\xC3\xA9 \xE6\x97\xA5\xE6\x9C\xAC \xF0\x9F\x98\x80\""},
        {"q\"b\\s\n\xC3\xA9\x01", 9, "\"q\\\"b\\\\s\\n\xC3\xA9\\u0001\""},
    };
    latch_buf b = {0};
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        assert_int_equal(one_string(&b, cases[i].in, cases[i].n), 0);
        assert_out(&b, cases[i].want);
    }
    latch__buf_dispose(&b);
}

static void test_keys_are_escaped(void **state)
{
    fixture *f = *state;

    assert_int_equal(latch__json_object_begin(&f->j), 0);
    assert_int_equal(latch__json_key_n(&f->j, "a\"\0\xE2\x80\xA8", 6), 0);
    assert_int_equal(latch__json_int64(&f->j, 1), 0);
    assert_int_equal(latch__json_key_n(&f->j, NULL, 0), 0);
    assert_int_equal(latch__json_string_n(&f->j, NULL, 0), 0);
    assert_int_equal(latch__json_object_end(&f->j), 0);
    assert_out(&f->b, "{\"a\\\"\\u0000\\u2028\":1,\"\":\"\"}");
}

static void test_utf8_table(void **state)
{
    static const struct {
        const char *s;
        bool ok;
    } cases[] = {
        {"\xC2\x80", true},                  /* U+0080 */
        {"\xDF\xBF", true},                  /* U+07FF */
        {"\xE0\xA0\x80", true},              /* U+0800 */
        {"\xED\x9F\xBF", true},              /* U+D7FF */
        {"\xEE\x80\x80", true},              /* U+E000 */
        {"\xEF\xBF\xBF", true},              /* U+FFFF */
        {"\xEF\xBB\xBF", true},              /* BOM, copied */
        {"\xF0\x90\x80\x80", true},          /* U+10000 */
        {"\xF3\xBF\xBF\xBF", true},          /* U+FFFFF */
        {"\xF4\x8F\xBF\xBF", true},          /* U+10FFFF, the maximum */
        {"\x80", false},                     /* stray continuation */
        {"\xBF", false},                     /* stray continuation */
        {"a\x80z", false},                   /* stray, mid-string */
        {"\xC3\xA9\xA9", false},             /* one continuation too many */
        {"\xC0\x80", false},                 /* overlong NUL */
        {"\xC1\xBF", false},                 /* overlong U+007F */
        {"\xE0\x80\x80", false},             /* overlong */
        {"\xE0\x9F\xBF", false},             /* overlong U+07FF */
        {"\xF0\x80\x80\x80", false},         /* overlong */
        {"\xF0\x8F\xBF\xBF", false},         /* overlong U+FFFF */
        {"\xED\xA0\x80", false},             /* U+D800 */
        {"\xED\xAF\xBF", false},             /* U+DBFF */
        {"\xED\xB0\x80", false},             /* U+DC00 */
        {"\xED\xBF\xBF", false},             /* U+DFFF */
        {"\xED\xA0\xBD\xED\xB8\x80", false}, /* CESU-8 pair */
        {"\xF4\x90\x80\x80", false},         /* U+110000 */
        {"\xF5\x80\x80\x80", false},         /* above the range */
        {"\xF7\xBF\xBF\xBF", false},
        {"\xF8\x88\x80\x80\x80", false}, /* 5-byte form */
        {"\xFC\x84\x80\x80\x80\x80", false},
        {"\xFE", false},
        {"\xFF", false},
        {"\xC2", false},             /* truncated at the end */
        {"\xE2\x82", false},         /* truncated */
        {"\xF0\x9F\x98", false},     /* truncated */
        {"\xC2 ", false},            /* truncated by ASCII */
        {"\xE2\x28\xA1", false},     /* bad second byte */
        {"\xE2\x82\x28", false},     /* bad third byte */
        {"\xF0\x9F\x98\x28", false}, /* bad fourth byte */
        {"\xF0\x9F\xC3\xA9", false}, /* a lead byte as continuation */
    };
    latch_buf b = {0}, want = {0};
    latch_json j;
    size_t i, n;
    int err;

    (void)state;
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        n = strlen(cases[i].s);
        err = cases[i].ok ? 0 : LATCH_ERR_INVALID_CHAR;
        /* As a string value. */
        if (one_string(&b, cases[i].s, n) != err)
            fail_msg("case %zu: string gave %d, want %d", i,
                     one_string(&b, cases[i].s, n), err);
        want.len = 0;
        if (cases[i].ok) {
            latch__buf_append(&want, "\"", 1, BIG);
            latch__buf_append(&want, cases[i].s, n, BIG);
            latch__buf_append(&want, "\"", 1, BIG);
        }
        assert_out_n(&b, want.data, want.len);
        /* As a key, after a member (so a comma was written first). */
        b.len = 0;
        latch__json_init(&j, &b, BIG, 0);
        assert_int_equal(latch__json_object_begin(&j), 0);
        assert_int_equal(latch__json_key(&j, "a"), 0);
        assert_int_equal(latch__json_null(&j), 0);
        assert_int_equal(latch__json_key_n(&j, cases[i].s, n), err);
        if (!cases[i].ok)
            assert_out(&b, "{\"a\":null");
        else
            assert_int_equal(b.len, strlen("{\"a\":null,\"\":") + n);
    }
    latch__buf_dispose(&b);
    latch__buf_dispose(&want);
}

/*
 * An independent UTF-8 check by decoding: the length from the lead byte's
 * high bits, the continuation bytes' 10xxxxxx form, then the code point's
 * range (not overlong for its length, not a surrogate, at most U+10FFFF).
 * Returns whether s[0..n) is exactly one valid sequence.
 */
static bool ref_utf8_one(const unsigned char *s, size_t n)
{
    static const uint32_t min[5] = {0, 0, 0x80, 0x800, 0x10000};
    size_t len, i;
    uint32_t cp;

    if (s[0] < 0x80)
        return n == 1;
    if ((s[0] & 0xE0) == 0xC0) {
        len = 2;
        cp = s[0] & 0x1F;
    } else if ((s[0] & 0xF0) == 0xE0) {
        len = 3;
        cp = s[0] & 0x0F;
    } else if ((s[0] & 0xF8) == 0xF0) {
        len = 4;
        cp = s[0] & 0x07;
    } else {
        return false;
    }
    if (n != len)
        return false;
    for (i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return false;
        cp = cp << 6 | (s[i] & 0x3F);
    }
    return cp >= min[len] && cp <= 0x10FFFF && (cp < 0xD800 || cp > 0xDFFF);
}

/* The same for a whole string: ASCII bytes, or sequences whose length the
 * lead byte's high bits give, each checked by ref_utf8_one. */
static bool ref_utf8_valid(const unsigned char *s, size_t n)
{
    size_t i = 0, len;

    while (i < n) {
        if (s[i] < 0x80)
            len = 1;
        else if ((s[i] & 0xE0) == 0xC0)
            len = 2;
        else if ((s[i] & 0xF0) == 0xE0)
            len = 3;
        else if ((s[i] & 0xF8) == 0xF0)
            len = 4;
        else
            return false;
        if (len > n - i || !ref_utf8_one(s + i, len))
            return false;
        i += len;
    }
    return true;
}

/*
 * Every non-ASCII lead byte with every second byte, as strings of 1 to 4
 * bytes whose further bytes are 0x80 or 0xBF (the extremes of the
 * continuation range), against the reference.
 */
static void test_utf8_against_reference(void **state)
{
    latch_buf b = {0};
    unsigned char s[4];
    unsigned b0, b1, tail;
    unsigned long accepted = 0, rejected = 0;
    size_t n;
    int got;
    bool ok;

    (void)state;
    for (b0 = 0x80; b0 <= 0xFF; b0++) {
        s[0] = (unsigned char)b0;
        for (b1 = 0; b1 <= 0xFF; b1++) {
            for (tail = 0x80; tail <= 0xBF; tail += 0x3F) {
                s[1] = (unsigned char)b1;
                s[2] = s[3] = (unsigned char)tail;
                for (n = 1; n <= 4; n++) {
                    ok = ref_utf8_valid(s, n);
                    got = one_string(&b, (char *)s, n);
                    if (got != (ok ? 0 : LATCH_ERR_INVALID_CHAR))
                        fail_msg("%02x %02x, %zu bytes, tail %02x: writer "
                                 "%d, reference %d",
                                 b0, b1, n, tail, got, ok);
                    if (ok) {
                        /* Copied as is, between the quotes. */
                        assert_int_equal(b.len, n + 2);
                        assert_memory_equal(b.data + 1, s, n);
                        accepted++;
                    } else {
                        assert_int_equal(b.len, 0);
                        rejected++;
                    }
                }
            }
        }
    }
    /* Both outcomes occur (a loop that tests nothing fails here). */
    assert_true(accepted > 1000);
    assert_true(rejected > 1000);
    latch__buf_dispose(&b);
}

/* ------------------------------------------------------------------ */
/* Integers                                                             */
/* ------------------------------------------------------------------ */

static void test_int64_extremes(void **state)
{
    static const struct {
        int64_t v;
        const char *want;
    } cases[] = {
        {0, "0"},
        {1, "1"},
        {-1, "-1"},
        {9, "9"},
        {10, "10"},
        {-10, "-10"},
        {INT64_MAX, "9223372036854775807"},
        {INT64_MIN, "-9223372036854775808"},
        {INT64_MIN + 1, "-9223372036854775807"},
        {INT32_MIN, "-2147483648"},
    };
    static const struct {
        uint64_t v;
        const char *want;
    } ucases[] = {
        {0, "0"},
        {UINT64_MAX, "18446744073709551615"},
        {(uint64_t)INT64_MAX + 1, "9223372036854775808"},
        {10000000000000000000u, "10000000000000000000"},
    };
    latch_buf b = {0};
    latch_json j;
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        b.len = 0;
        latch__json_init(&j, &b, BIG, 0);
        assert_int_equal(latch__json_int64(&j, cases[i].v), 0);
        assert_out(&b, cases[i].want);
    }
    for (i = 0; i < sizeof(ucases) / sizeof(ucases[0]); i++) {
        b.len = 0;
        latch__json_init(&j, &b, BIG, 0);
        assert_int_equal(latch__json_uint64(&j, ucases[i].v), 0);
        assert_out(&b, ucases[i].want);
    }
    latch__buf_dispose(&b);
}

/* Powers of ten and their neighbours, against printf. */
static void test_integers_against_printf(void **state)
{
    latch_buf b = {0};
    latch_json j;
    char want[32];
    uint64_t p = 1;
    int k, d;

    (void)state;
    for (k = 0; k < 20; k++, p *= 10) {
        for (d = -1; d <= 1; d++) {
            uint64_t u = p + (uint64_t)(int64_t)d;
            int64_t s = (int64_t)(u & INT64_MAX);

            b.len = 0;
            latch__json_init(&j, &b, BIG, 0);
            assert_int_equal(latch__json_uint64(&j, u), 0);
            snprintf(want, sizeof(want), "%" PRIu64, u);
            assert_out(&b, want);

            b.len = 0;
            latch__json_init(&j, &b, BIG, 0);
            assert_int_equal(latch__json_int64(&j, -s), 0);
            snprintf(want, sizeof(want), "%" PRId64, -s);
            assert_out(&b, want);
        }
    }
    latch__buf_dispose(&b);
}

/* ------------------------------------------------------------------ */
/* Doubles                                                              */
/* ------------------------------------------------------------------ */

/* Formats v alone; returns the NUL-terminated text in buf. */
static void fmt(double v, char *buf, size_t size)
{
    latch_buf b = {0};
    latch_json j;

    latch__json_init(&j, &b, BIG, 0);
    assert_int_equal(latch__json_double(&j, v), 0);
    assert_int_equal(latch__json_finish(&j), 0);
    assert_true(b.len < size);
    memcpy(buf, b.data, b.len);
    buf[b.len] = '\0';
    latch__buf_dispose(&b);
}

static void test_double_known_values(void **state)
{
    static const struct {
        double v;
        const char *want;
    } cases[] = {
        {0.0, "0"},
        {-0.0, "-0"},
        {0.1, "0.1"},
        {0.3, "0.3"},
        {0.1 + 0.2, "0.30000000000000004"},
        {1.0 / 3.0, "0.3333333333333333"},
        {-2.5, "-2.5"},
        {1.5, "1.5"},
        {3.0, "3"},
        {100.0, "100"},
        {120.0, "120"},
        {1000.0, "1000"},
        {123456.789, "123456.789"},
        {9007199254740992.0, "9007199254740992"},
        {1e16, "10000000000000000"},
        {1e17, "1e+17"},
        {123456789012345680.0, "1.2345678901234568e+17"},
        {1e21, "1e+21"},
        {1e22, "1e+22"},
        {1e23, "1e+23"},
        {0.0001, "0.0001"},
        {0.00012, "0.00012"},
        {0.00001, "1e-5"},
        {1.5e-7, "1.5e-7"},
        {-1e-100, "-1e-100"},
        {5e-324, "5e-324"},
        {-5e-324, "-5e-324"},
        {2.2250738585072014e-308, "2.2250738585072014e-308"},
        {DBL_MAX, "1.7976931348623157e+308"},
        {-DBL_MAX, "-1.7976931348623157e+308"},
        {4.35, "4.35"},
        {2.675, "2.675"},
        {5e-310, "5e-310"},
    };
    char buf[64];
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        fmt(cases[i].v, buf, sizeof(buf));
        if (strcmp(buf, cases[i].want) != 0)
            fail_msg("%.17g: got %s, want %s", cases[i].v, buf, cases[i].want);
    }
}

static void test_double_in_containers(void **state)
{
    fixture *f = *state;

    assert_int_equal(latch__json_array_begin(&f->j), 0);
    assert_int_equal(latch__json_double(&f->j, 0.5), 0);
    assert_int_equal(latch__json_double(&f->j, -0.0), 0);
    assert_int_equal(latch__json_double(&f->j, 1e300), 0);
    assert_int_equal(latch__json_array_end(&f->j), 0);
    assert_out(&f->b, "[0.5,-0,1e+300]");
}

/* Whether s is a JSON number (RFC 8259 section 6) and nothing else. */
static bool is_json_number(const char *s)
{
    if (*s == '-')
        s++;
    if (*s == '0') {
        s++;
    } else if (*s >= '1' && *s <= '9') {
        while (*s >= '0' && *s <= '9')
            s++;
    } else {
        return false;
    }
    if (*s == '.') {
        s++;
        if (!(*s >= '0' && *s <= '9'))
            return false;
        while (*s >= '0' && *s <= '9')
            s++;
    }
    if (*s == 'e' || *s == 'E') {
        s++;
        if (*s == '+' || *s == '-')
            s++;
        if (!(*s >= '0' && *s <= '9'))
            return false;
        while (*s >= '0' && *s <= '9')
            s++;
    }
    return *s == '\0';
}

/* Significant digits of a number's text: the digits of its mantissa
 * without leading and trailing zeros (at least 1). */
static int sig_digits(const char *s)
{
    char d[64];
    int n = 0, lo = 0;

    for (; *s && *s != 'e'; s++)
        if (*s >= '0' && *s <= '9' && n < (int)sizeof(d))
            d[n++] = *s;
    while (lo < n - 1 && d[lo] == '0')
        lo++;
    while (n - 1 > lo && d[n - 1] == '0')
        n--;
    return n - lo;
}

/* The fewest significant digits that round-trip, by linear search. */
static int min_digits(double v)
{
    char buf[64];
    double back;
    int p;

    for (p = 1; p < 17; p++) {
        snprintf(buf, sizeof(buf), "%.*e", p - 1, v);
        back = strtod(buf, NULL);
        if (memcmp(&back, &v, sizeof(v)) == 0)
            return p;
    }
    return 17;
}

static uint64_t rng = 0x9E3779B97F4A7C15u;

static uint64_t next_rand(void)
{
    /* xorshift64*: deterministic, so a failure reproduces. */
    rng ^= rng >> 12;
    rng ^= rng << 25;
    rng ^= rng >> 27;
    return rng * 0x2545F4914F6CDD1Du;
}

/* Checks the four promises for v: it reads back to the same bits, it is a
 * JSON number, it is no longer than %.17g, it has the fewest digits. */
static void check_double(double v)
{
    char buf[64], ref[64];
    double back;

    fmt(v, buf, sizeof(buf));
    back = strtod(buf, NULL);
    if (memcmp(&back, &v, sizeof(v)) != 0)
        fail_msg("%.17g printed as %s reads back as %.17g", v, buf, back);
    if (!is_json_number(buf))
        fail_msg("%.17g printed as %s: not a JSON number", v, buf);
    snprintf(ref, sizeof(ref), "%.17g", v);
    if (strlen(buf) > strlen(ref))
        fail_msg("%.17g printed as %s: longer than %s", v, buf, ref);
    if (sig_digits(buf) != min_digits(v))
        fail_msg("%.17g printed as %s: %d digits, %d suffice", v, buf,
                 sig_digits(buf), min_digits(v));
}

static void test_double_random_round_trip(void **state)
{
    uint64_t bits;
    double v;
    int i, tested = 0;

    (void)state;
    for (i = 0; i < 100000; i++) {
        bits = next_rand();
        memcpy(&v, &bits, sizeof(v));
        if (!isfinite(v))
            continue;
        check_double(v);
        tested++;
    }
    /* Random doubles of moderate exponent, where plain notation is used. */
    for (i = 0; i < 50000; i++) {
        bits = next_rand();
        v = (double)(bits >> 11) / 9007199254740992.0; /* [0, 1) */
        v = ldexp(v, (int)(bits % 80) - 20);
        check_double(i % 2 ? -v : v);
        tested++;
    }
    assert_true(tested > 140000);
}

static void test_double_edge_families(void **state)
{
    double p, v;
    int e, k;

    (void)state;
    /* Powers of ten and their neighbours: the notation boundaries. */
    for (e = -325; e <= 308; e++) {
        char s[16];

        snprintf(s, sizeof(s), "1e%d", e);
        p = strtod(s, NULL);
        check_double(p);
        check_double(nextafter(p, 0));
        check_double(nextafter(p, INFINITY));
    }
    /* Powers of two over the whole range, subnormals included. */
    for (e = -1074; e <= 1023; e++)
        check_double(ldexp(1.0, e));
    /* Integers and halves near the point where doubles stop being exact. */
    for (k = -100; k <= 100; k++) {
        v = 9007199254740992.0 + (double)k * 2;
        check_double(v);
        check_double((double)k / 2);
    }
    check_double(DBL_MIN);
    check_double(nextafter(DBL_MIN, 0));
    check_double(DBL_MAX);
    check_double(nextafter(DBL_MAX, 0));
    check_double(DBL_EPSILON);
}

/*
 * A locale with a decimal comma still yields '.', and the same text as the C
 * locale. Skipped when the system has no such locale (one can be built
 * without root: localedef -i de_DE -f UTF-8 DIR/de_DE.UTF-8, then run with
 * LOCPATH=DIR).
 */
static void test_double_ignores_decimal_comma(void **state)
{
    static const char *const names[] = {"de_DE.UTF-8", "de_DE.utf8",
                                        "fr_FR.UTF-8", "fr_FR.utf8",
                                        "de_DE",       "fr_FR"};
    static const double values[] = {0.5,     -2.5,    0.1,    123456.789,
                                    1.5e-7,  1e21,    5e-324, DBL_MAX,
                                    0.00012, 1.0 / 3, 3.0,    -0.0};
    enum { NV = sizeof(values) / sizeof(values[0]) };
    char in_c[NV][64], buf[64], probe[16];
    size_t i;
    bool found = false;

    (void)state;
    for (i = 0; i < NV; i++)
        fmt(values[i], in_c[i], sizeof(in_c[i]));
    for (i = 0; i < sizeof(names) / sizeof(names[0]) && !found; i++)
        found = setlocale(LC_NUMERIC, names[i]) != NULL;
    if (!found)
        skip();
    snprintf(probe, sizeof(probe), "%.1f", 0.5);
    for (i = 0; i < NV; i++) {
        fmt(values[i], buf, sizeof(buf));
        if (strcmp(buf, in_c[i]) != 0) {
            setlocale(LC_NUMERIC, "C");
            fail_msg("%s in a decimal-comma locale, %s in C", buf, in_c[i]);
        }
    }
    setlocale(LC_NUMERIC, "C");
    assert_string_equal(probe, "0,5"); /* the locale was really in effect */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_nested_document, setup, teardown),
        cmocka_unit_test(test_top_level_scalars),
        cmocka_unit_test_setup_teardown(test_appends_after_existing_bytes,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_finish_on_unfinished_is_not_sticky,
                                        setup, teardown),
        cmocka_unit_test(test_misuse_table),
        cmocka_unit_test(test_bad_init),
        cmocka_unit_test_setup_teardown(test_sticky_after_invalid_string_midway,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_sticky_after_invalid_key_midway,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_first_error_wins, setup, teardown),
        cmocka_unit_test(test_depth_limit),
        cmocka_unit_test(test_deep_stack_remembers_kinds),
        cmocka_unit_test(test_byte_limit),
        cmocka_unit_test(test_byte_limit_counts_existing_bytes),
        cmocka_unit_test(test_byte_limit_inside_long_string),
        cmocka_unit_test(test_control_characters),
        cmocka_unit_test(test_other_escapes_and_copies),
        cmocka_unit_test_setup_teardown(test_keys_are_escaped, setup, teardown),
        cmocka_unit_test(test_utf8_table),
        cmocka_unit_test(test_utf8_against_reference),
        cmocka_unit_test(test_int64_extremes),
        cmocka_unit_test(test_integers_against_printf),
        cmocka_unit_test(test_double_known_values),
        cmocka_unit_test_setup_teardown(test_double_in_containers, setup,
                                        teardown),
        cmocka_unit_test(test_double_random_round_trip),
        cmocka_unit_test(test_double_edge_families),
        cmocka_unit_test(test_double_ignores_decimal_comma),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
