/*
 * test_shake.c - unit tests of the race shaker (src/async.c, seeded from
 * src/server.c): LATCH_SHAKE parsing and the delay sequences.
 *
 * What LATCH_SHAKE means: unset, empty, "0" or not a number: off, no
 * delay ever; a positive decimal seed: on, and distinct seeds give
 * distinct sequences (per worker too), so a run can be replayed with its
 * own seed and no other seed replays it by accident. Timers, jobs and
 * joins are tested against a real server in tests/integration/.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define DRAWS 64

/* The seed latch_app_new reads from LATCH_SHAKE=value (NULL: unset). */
static uint64_t seed_for(const char *value)
{
    latch_app *app;
    uint64_t seed;

    if (value != NULL)
        assert_int_equal(setenv("LATCH_SHAKE", value, 1), 0);
    else
        unsetenv("LATCH_SHAKE");
    app = latch_app_new();
    assert_non_null(app);
    seed = app->shake_seed;
    latch_app_free(app);
    unsetenv("LATCH_SHAKE");
    return seed;
}

/* The first DRAWS delays of worker `index` of an app with `seed`. */
static void draws(uint64_t seed, int index, uint64_t *out)
{
    latch_worker w;

    memset(&w, 0, sizeof(w));
    w.shake_state = latch__shake_state(seed, index);
    for (int i = 0; i < DRAWS; i++) {
        out[i] = latch__shake_ms(&w);
        assert_true(out[i] < 20);
    }
}

static bool all_zero(const uint64_t *d)
{
    for (int i = 0; i < DRAWS; i++)
        if (d[i] != 0)
            return false;
    return true;
}

static void test_zero_unset_and_garbage_mean_off(void **state)
{
    const char *off[] = {NULL, "", "0", "00", "abc", "-3", "12x", " "};
    uint64_t d[DRAWS];

    (void)state;
    for (size_t i = 0; i < sizeof(off) / sizeof(off[0]); i++) {
        assert_int_equal(seed_for(off[i]), 0);
        draws(0, 0, d);
        assert_true(all_zero(d));
    }
}

static void test_a_seed_turns_it_on(void **state)
{
    uint64_t d[DRAWS];

    (void)state;
    assert_int_equal(seed_for("1"), 1);
    assert_int_equal(seed_for("42"), 42);
    assert_int_equal(seed_for("18446744073709551615"), UINT64_MAX);
    draws(1, 0, d);
    assert_false(all_zero(d));
}

/* Seeds s and s|1 (and every other pair) are different runs. */
static void test_distinct_seeds_give_distinct_sequences(void **state)
{
    static uint64_t seq[64][DRAWS];

    (void)state;
    for (uint64_t s = 1; s <= 64; s++)
        draws(s, 0, seq[s - 1]);
    for (int a = 0; a < 64; a++)
        for (int b = a + 1; b < 64; b++)
            assert_memory_not_equal(seq[a], seq[b], sizeof(seq[a]));
    /* The pair that used to collide (s and s|1), as read from the
     * environment, and the top of the range. */
    {
        uint64_t x[DRAWS], y[DRAWS];
        draws(seed_for("2"), 0, x);
        draws(seed_for("3"), 0, y);
        assert_memory_not_equal(x, y, sizeof(x));
        draws(UINT64_MAX - 1, 0, x);
        draws(UINT64_MAX, 0, y);
        assert_memory_not_equal(x, y, sizeof(x));
    }
}

/* One seed, several workers: each its own sequence, each repeatable. */
static void test_workers_differ_and_repeat(void **state)
{
    uint64_t a[DRAWS], b[DRAWS], a2[DRAWS];

    (void)state;
    draws(7, 0, a);
    draws(7, 1, b);
    draws(7, 0, a2);
    assert_memory_not_equal(a, b, sizeof(a));
    assert_memory_equal(a, a2, sizeof(a));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_zero_unset_and_garbage_mean_off),
        cmocka_unit_test(test_a_seed_turns_it_on),
        cmocka_unit_test(test_distinct_seeds_give_distinct_sequences),
        cmocka_unit_test(test_workers_differ_and_repeat),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
