/*
 * test_buf.c - unit tests of the capped byte buffer (src/buf.c).
 *
 * Covers latch__buf_reserve, latch__buf_append and latch__buf_dispose:
 * growth (doubling from 256, never past the limit), the hard cap at the
 * exact limit and one byte past it, the promise that a refused or failed
 * call leaves the buffer exactly as it was (same data pointer, len, cap
 * and bytes), empty appends, dispose, and sizes near SIZE_MAX where a
 * naive len + more would wrap around.
 *
 * It does not test the buffers' users (conn.c, res.c).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "internal.h"

/*
 * AddressSanitizer aborts on an impossible allocation by default; these
 * tests need realloc(SIZE_MAX) to fail the way the C library's does, so
 * that buf.c's LATCH_ERR_NOMEM path runs. Unused without ASan.
 */
const char *__asan_default_options(void);
const char *__asan_default_options(void)
{
    return "allocator_may_return_null=1";
}

/* A snapshot of a buffer, to check that a refused call changed nothing. */
typedef struct snap {
    char *data;
    size_t len, cap;
    char *bytes;
} snap;

static void take(snap *s, const latch_buf *b)
{
    s->data = b->data;
    s->len = b->len;
    s->cap = b->cap;
    s->bytes = malloc(b->len ? b->len : 1);
    assert_non_null(s->bytes);
    if (b->len)
        memcpy(s->bytes, b->data, b->len);
}

static void assert_unchanged(snap *s, const latch_buf *b)
{
    assert_ptr_equal(b->data, s->data);
    assert_int_equal(b->len, s->len);
    assert_int_equal(b->cap, s->cap);
    if (s->len)
        assert_memory_equal(b->data, s->bytes, s->len);
    free(s->bytes);
    s->bytes = NULL;
}

/* n bytes of a pattern that depends on the offset, so shifted or
 * overwritten bytes are visible. */
static void fill(char *p, size_t n, size_t from)
{
    size_t i;

    for (i = 0; i < n; i++)
        p[i] = (char)('a' + (from + i) % 26);
}

static void check_pattern(const latch_buf *b)
{
    size_t i;

    for (i = 0; i < b->len; i++)
        assert_int_equal(b->data[i], (char)('a' + i % 26));
}

static void append_pattern(latch_buf *b, size_t n, size_t limit)
{
    char *tmp = malloc(n ? n : 1);

    assert_non_null(tmp);
    fill(tmp, n, b->len);
    assert_int_equal(latch__buf_append(b, tmp, n, limit), 0);
    free(tmp);
}

/* ---- growth ----------------------------------------------------------- */

static void test_first_growth_is_256(void **state)
{
    latch_buf b = {0};

    (void)state;
    assert_int_equal(latch__buf_append(&b, "x", 1, 1 << 20), 0);
    assert_non_null(b.data);
    assert_int_equal(b.len, 1);
    assert_int_equal(b.cap, 256);
    assert_int_equal(b.data[0], 'x');
    latch__buf_dispose(&b);
}

static void test_growth_doubles_and_keeps_bytes(void **state)
{
    latch_buf b = {0};
    size_t i;

    (void)state;
    append_pattern(&b, 256, 1 << 20);
    assert_int_equal(b.cap, 256);
    append_pattern(&b, 1, 1 << 20);
    assert_int_equal(b.cap, 512);
    append_pattern(&b, 300, 1 << 20);
    assert_int_equal(b.len, 557);
    assert_int_equal(b.cap, 1024);
    /* Many small appends: len adds up, cap stays a power of two from
     * 256, and the content is the concatenation. */
    for (i = 0; i < 1000; i++)
        append_pattern(&b, 1 + i % 13, 1 << 20);
    assert_true(b.cap >= b.len);
    assert_int_equal(b.cap & (b.cap - 1), 0);
    check_pattern(&b);
    latch__buf_dispose(&b);
}

static void test_one_big_reserve_jumps_past_doubling(void **state)
{
    latch_buf b = {0};

    (void)state;
    /* 256 -> 512 -> ... until it holds 5000 bytes. */
    assert_int_equal(latch__buf_reserve(&b, 5000, 1 << 20), 0);
    assert_int_equal(b.len, 0);
    assert_int_equal(b.cap, 8192);
    latch__buf_dispose(&b);
}

static void test_reserve_within_capacity_does_not_move(void **state)
{
    latch_buf b = {0};
    char *data;

    (void)state;
    append_pattern(&b, 10, 1000);
    data = b.data;
    assert_int_equal(latch__buf_reserve(&b, b.cap - b.len, 1000), 0);
    assert_ptr_equal(b.data, data);
    assert_int_equal(b.len, 10);
    assert_int_equal(b.cap, 256);
    check_pattern(&b);
    latch__buf_dispose(&b);
}

static void test_growth_is_clamped_to_limit(void **state)
{
    latch_buf b = {0};

    (void)state;
    /* Below the first step: the first allocation is the limit itself. */
    append_pattern(&b, 10, 100);
    assert_int_equal(b.cap, 100);
    latch__buf_dispose(&b);

    /* Doubling would give 512; the limit is 300. */
    append_pattern(&b, 257, 300);
    assert_int_equal(b.cap, 300);
    append_pattern(&b, 43, 300);
    assert_int_equal(b.len, 300);
    assert_int_equal(b.cap, 300);
    check_pattern(&b);
    latch__buf_dispose(&b);
}

/* ---- the hard cap ------------------------------------------------------ */

static void test_append_up_to_exact_limit(void **state)
{
    latch_buf b = {0};
    snap s;

    (void)state;
    append_pattern(&b, 999, 1000);
    append_pattern(&b, 1, 1000);
    assert_int_equal(b.len, 1000);
    assert_true(b.cap <= 1000);

    /* Full: one more byte is refused and changes nothing. */
    take(&s, &b);
    assert_int_equal(latch__buf_append(&b, "z", 1, 1000), LATCH_ERR_LIMIT);
    assert_unchanged(&s, &b);
    take(&s, &b);
    assert_int_equal(latch__buf_reserve(&b, 1, 1000), LATCH_ERR_LIMIT);
    assert_unchanged(&s, &b);
    check_pattern(&b);
    latch__buf_dispose(&b);
}

static void test_append_past_limit_leaves_buffer_unchanged(void **state)
{
    latch_buf b = {0};
    char big[64];
    snap s;

    (void)state;
    memset(big, 'Z', sizeof(big));
    append_pattern(&b, 990, 1000);

    /* 990 + 11 = 1001: refused, nothing copied, nothing reallocated. */
    take(&s, &b);
    assert_int_equal(latch__buf_append(&b, big, 11, 1000), LATCH_ERR_LIMIT);
    assert_unchanged(&s, &b);

    /* The same call with 10 bytes fits exactly. */
    assert_int_equal(latch__buf_append(&b, big, 10, 1000), 0);
    assert_int_equal(b.len, 1000);
    assert_memory_equal(b.data + 990, big, 10);
    latch__buf_dispose(&b);
}

static void test_first_append_larger_than_limit(void **state)
{
    latch_buf b = {0};
    char big[64] = {0};

    (void)state;
    assert_int_equal(latch__buf_append(&b, big, 64, 63), LATCH_ERR_LIMIT);
    assert_null(b.data);
    assert_int_equal(b.len, 0);
    assert_int_equal(b.cap, 0);
    assert_int_equal(latch__buf_reserve(&b, 1, 0), LATCH_ERR_LIMIT);
    assert_null(b.data);
    assert_int_equal(b.cap, 0);
}

/* ---- empty appends ----------------------------------------------------- */

static void test_zero_length_append(void **state)
{
    latch_buf b = {0};
    snap s;

    (void)state;
    /* On an empty buffer: success without allocating (p may be NULL). */
    assert_int_equal(latch__buf_append(&b, NULL, 0, 1000), 0);
    assert_null(b.data);
    assert_int_equal(b.len, 0);
    assert_int_equal(b.cap, 0);
    /* Even with a zero limit. */
    assert_int_equal(latch__buf_append(&b, NULL, 0, 0), 0);
    assert_null(b.data);

    /* On a full buffer: success, nothing changes. */
    append_pattern(&b, 100, 100);
    take(&s, &b);
    assert_int_equal(latch__buf_append(&b, "q", 0, 100), 0);
    assert_unchanged(&s, &b);
    take(&s, &b);
    assert_int_equal(latch__buf_reserve(&b, 0, 100), 0);
    assert_unchanged(&s, &b);
    latch__buf_dispose(&b);
}

/* ---- dispose ------------------------------------------------------------ */

static void test_dispose_resets_and_buffer_is_reusable(void **state)
{
    latch_buf b = {0};

    (void)state;
    /* On a never-used buffer. */
    latch__buf_dispose(&b);
    assert_null(b.data);
    assert_int_equal(b.len, 0);
    assert_int_equal(b.cap, 0);

    append_pattern(&b, 700, 4096);
    assert_non_null(b.data);
    latch__buf_dispose(&b);
    assert_null(b.data);
    assert_int_equal(b.len, 0);
    assert_int_equal(b.cap, 0);
    /* Twice is harmless. */
    latch__buf_dispose(&b);
    assert_null(b.data);

    /* Usable again, growing from scratch. */
    append_pattern(&b, 3, 4096);
    assert_int_equal(b.len, 3);
    assert_int_equal(b.cap, 256);
    check_pattern(&b);
    latch__buf_dispose(&b);
}

/* ---- sizes near SIZE_MAX ------------------------------------------------ */

static void test_huge_sizes_against_small_limit(void **state)
{
    latch_buf b = {0};
    snap s;

    (void)state;
    append_pattern(&b, 10, 1000);
    take(&s, &b);
    assert_int_equal(latch__buf_reserve(&b, SIZE_MAX, 1000), LATCH_ERR_LIMIT);
    assert_unchanged(&s, &b);
    /* len + more wraps to 9: a wrapping check would accept it. */
    take(&s, &b);
    assert_int_equal(latch__buf_reserve(&b, SIZE_MAX, SIZE_MAX),
                     LATCH_ERR_LIMIT);
    assert_unchanged(&s, &b);
    take(&s, &b);
    assert_int_equal(latch__buf_append(&b, "x", SIZE_MAX, SIZE_MAX),
                     LATCH_ERR_LIMIT);
    assert_unchanged(&s, &b);
    /* One past the limit by one byte: len 10 + (SIZE_MAX - 9). */
    take(&s, &b);
    assert_int_equal(latch__buf_reserve(&b, SIZE_MAX - 9, SIZE_MAX),
                     LATCH_ERR_LIMIT);
    assert_unchanged(&s, &b);
    latch__buf_dispose(&b);
}

static void test_huge_size_within_limit_fails_cleanly(void **state)
{
    latch_buf b = {0};
    snap s;

    (void)state;
    /* Allowed by the limit but impossible to allocate: NOMEM, and the
     * doubling loop must not wrap (it would loop forever or allocate a
     * small block and report success). */
    assert_int_equal(latch__buf_reserve(&b, SIZE_MAX, SIZE_MAX),
                     LATCH_ERR_NOMEM);
    assert_null(b.data);
    assert_int_equal(b.len, 0);
    assert_int_equal(b.cap, 0);

    append_pattern(&b, 10, SIZE_MAX);
    take(&s, &b);
    /* len + more == SIZE_MAX exactly: within the limit. */
    assert_int_equal(latch__buf_reserve(&b, SIZE_MAX - 10, SIZE_MAX),
                     LATCH_ERR_NOMEM);
    assert_unchanged(&s, &b);
    /* Just above half of the address space: the doubling step. */
    take(&s, &b);
    assert_int_equal(latch__buf_reserve(&b, SIZE_MAX / 2 + 2, SIZE_MAX),
                     LATCH_ERR_NOMEM);
    assert_unchanged(&s, &b);
    check_pattern(&b);
    latch__buf_dispose(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_first_growth_is_256),
        cmocka_unit_test(test_growth_doubles_and_keeps_bytes),
        cmocka_unit_test(test_one_big_reserve_jumps_past_doubling),
        cmocka_unit_test(test_reserve_within_capacity_does_not_move),
        cmocka_unit_test(test_growth_is_clamped_to_limit),
        cmocka_unit_test(test_append_up_to_exact_limit),
        cmocka_unit_test(test_append_past_limit_leaves_buffer_unchanged),
        cmocka_unit_test(test_first_append_larger_than_limit),
        cmocka_unit_test(test_zero_length_append),
        cmocka_unit_test(test_dispose_resets_and_buffer_is_reusable),
        cmocka_unit_test(test_huge_sizes_against_small_limit),
        cmocka_unit_test(test_huge_size_within_limit_fails_cleanly),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
