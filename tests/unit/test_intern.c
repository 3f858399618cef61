/*
 * test_intern.c - one copy of equal immutable blocks (intern.c): equal
 * bytes share one counted block, unequal bytes do not, the last release
 * frees it (ASan/LSan see a double free or a leak), the table grows past
 * its first buckets and finds every block again, and a worker that ends
 * while a block is held frees its table at that block's last release.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "intern.h"

static void test_equal_bytes_share(void **state)
{
    latch_interns t = {0};
    char a[] = "content-type\0text/event-stream", b[sizeof(a)];
    const void *p, *q;

    (void)state;
    memcpy(b, a, sizeof(a));
    p = latch__intern(&t, a, sizeof(a));
    q = latch__intern(&t, b, sizeof(b));
    assert_non_null(p);
    assert_ptr_equal(p, q);
    assert_ptr_not_equal(p, a); /* a copy, not the caller's bytes */
    assert_memory_equal(p, a, sizeof(a));
    assert_int_equal(t.n, 1);
    assert_int_equal((uintptr_t)p % 8, 0);
    latch__intern_release(&t, p);
    /* One holder left: still there, still found. */
    assert_int_equal(t.n, 1);
    assert_ptr_equal(latch__intern(&t, a, sizeof(a)), q);
    latch__intern_release(&t, q);
    latch__intern_release(&t, q);
    assert_int_equal(t.n, 0);
    latch__interns_end(&t);
    assert_null(t.b);
}

static void test_unequal_bytes_do_not(void **state)
{
    latch_interns t = {0};
    const char a[] = "x-user: 1", b[] = "x-user: 2";
    const void *p, *q, *r;

    (void)state;
    p = latch__intern(&t, a, sizeof(a));
    q = latch__intern(&t, b, sizeof(b));
    /* A prefix of a is other bytes too. */
    r = latch__intern(&t, a, sizeof(a) - 2);
    assert_ptr_not_equal(p, q);
    assert_ptr_not_equal(p, r);
    assert_memory_equal(q, b, sizeof(b));
    assert_int_equal(t.n, 3);
    latch__intern_release(&t, q);
    assert_memory_equal(p, a, sizeof(a));
    assert_memory_equal(r, a, sizeof(a) - 2);
    latch__intern_release(&t, p);
    latch__intern_release(&t, r);
    assert_int_equal(t.n, 0);
    latch__interns_end(&t);
}

/* 1,000 distinct blocks, each held twice: the table grows (16 buckets at
 * first) and every block is found again after. */
static void test_growth_keeps_every_block(void **state)
{
    enum { N = 1000 };
    static const void *held[N];
    latch_interns t = {0};
    char key[32];
    int i;

    (void)state;
    for (i = 0; i < N; i++) {
        int n = snprintf(key, sizeof(key), "block %d", i);
        held[i] = latch__intern(&t, key, (size_t)n);
        assert_non_null(held[i]);
    }
    assert_int_equal(t.n, N);
    assert_true(t.cap >= N);
    for (i = 0; i < N; i++) {
        int n = snprintf(key, sizeof(key), "block %d", i);
        assert_ptr_equal(latch__intern(&t, key, (size_t)n), held[i]);
    }
    for (i = 0; i < N; i++) {
        latch__intern_release(&t, held[i]);
        latch__intern_release(&t, held[i]);
    }
    assert_int_equal(t.n, 0);
    latch__interns_end(&t);
}

static void test_end_while_held(void **state)
{
    latch_interns t = {0};
    const void *p;

    (void)state;
    p = latch__intern(&t, "kept", 4);
    latch__interns_end(&t);
    /* A response the program still holds keeps its block readable. */
    assert_non_null(t.b);
    assert_memory_equal(p, "kept", 4);
    latch__intern_release(&t, p); /* the last: the table goes too */
    assert_null(t.b);
    assert_int_equal(t.n, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_equal_bytes_share),
        cmocka_unit_test(test_unequal_bytes_do_not),
        cmocka_unit_test(test_growth_keeps_every_block),
        cmocka_unit_test(test_end_while_held),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
