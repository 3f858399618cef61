/*
 * test_sizes.c - the size budgets of the per-request and per-connection
 * structs (x86-64). Every pooled response and every open connection costs
 * this much: a change that grows one past its budget fails here, so
 * growth is a decision taken in review (raise the budget, with the
 * reason), not an accident. Shrinking needs no change.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "conn.h"
#include "internal.h"

/* Measured when the budgets were set: latch_res 1632 (+ the field slots
 * allocated after it), latch_conn 712. Then (issue 15, thousands of
 * waiting event streams) latch_res gave what such a stream does not use
 * to a cold part taken from the worker's pool while the chain runs and
 * given back by a long-lived stream, and latch_conn its parser to a pool
 * of parsers taken while a message is read: latch_res 656, its cold part
 * 1016, latch_conn 576. Then latch_res's finish/close/drain callbacks
 * went to a block made by the first latch_res_on_* call, and two holes
 * were closed: 600. Then latch_conn gave what only a write that waits for
 * the socket uses (wout, the uv_write_t, the send list) to a write-wait
 * part taken from the worker's pool while output waits (248), and the
 * shutdown request, the file body's writability watch and the delayed
 * disconnect to a rare part made the first time one is needed (104):
 * latch_conn 496 (a 512-byte heap block instead of 592). Then the chain's
 * state (layers, error, the places of the last return and resume:
 * latch_chainst, 120 B) moved to the cold part, which a waiting stream
 * gives back (packed, shared): latch_res 480, its cold part 1136. Then the
 * places of the response's seals (the calls stay: they are state): 432
 * and 1184. Then five of its flags became bits of one byte: 424 (a
 * 432-byte heap block instead of 448). */
#define RES_BUDGET 424
#define COLD_BUDGET 1184
#define CONN_BUDGET 496
#define CONN_WAIT_BUDGET 248
#define CONN_RARE_BUDGET 104

static void test_res_within_budget(void **state)
{
    (void)state;
    if (sizeof(struct latch_res) > RES_BUDGET)
        fail_msg("struct latch_res is %zu bytes, over its budget of %d",
                 sizeof(struct latch_res), RES_BUDGET);
}

static void test_cold_within_budget(void **state)
{
    (void)state;
    if (sizeof(struct latch_res_cold) > COLD_BUDGET)
        fail_msg("struct latch_res_cold is %zu bytes, over its budget of %d",
                 sizeof(struct latch_res_cold), COLD_BUDGET);
}

static void test_conn_within_budget(void **state)
{
    (void)state;
    if (sizeof(struct latch_conn) > CONN_BUDGET)
        fail_msg("struct latch_conn is %zu bytes, over its budget of %d",
                 sizeof(struct latch_conn), CONN_BUDGET);
}

static void test_conn_parts_within_budget(void **state)
{
    (void)state;
    if (sizeof(latch_conn_wait) > CONN_WAIT_BUDGET)
        fail_msg("latch_conn_wait is %zu bytes, over its budget of %d",
                 sizeof(latch_conn_wait), CONN_WAIT_BUDGET);
    if (sizeof(latch_conn_rare) > CONN_RARE_BUDGET)
        fail_msg("latch_conn_rare is %zu bytes, over its budget of %d",
                 sizeof(latch_conn_rare), CONN_RARE_BUDGET);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_res_within_budget),
        cmocka_unit_test(test_cold_within_budget),
        cmocka_unit_test(test_conn_within_budget),
        cmocka_unit_test(test_conn_parts_within_budget),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
