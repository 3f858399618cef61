/*
 * test_sse_shared.c - what waiting event streams share (res.c's trim,
 * intern.h): once quiet, a stream's header store and its chain's moves
 * become the worker's one copy of those bytes, held by every stream that
 * has equal ones. Each stream must still read its own headers: equal
 * ones from the shared block, a per-user one from a block of its own;
 * streams that leave give their hold back without taking the block from
 * the others (ASan sees a read after free), and a late latch_next on a
 * stream whose moves are shared is still reported against its own
 * return.
 *
 * GET /events?u=N: sets X-Route (the same for all) and, for odd N,
 * X-User: N; subscribes to "room" with a callback that answers each
 * message with an event "u=<X-User or -> route=<X-Route>".
 */
#include "sse_client.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stdint.h>

#include <cmocka.h>

#define NS 8

static int late_after; /* ERR_NEXT_AFTER_RESPONSE reports */

static void on_violation(const latch_violation *v, void *data)
{
    (void)data;
    if (v->code == LATCH_ERR_NEXT_AFTER_RESPONSE)
        __atomic_add_fetch(&late_after, 1, __ATOMIC_SEQ_CST);
}

static void on_message(latch_res *res, const latch_message *m, void *data)
{
    const char *u = latch_res_get_header(res, "X-User");
    const char *route = latch_res_get_header(res, "X-Route");
    char out[96];

    (void)data;
    snprintf(out, sizeof(out), "u=%s route=%s", u ? u : "-",
             route ? route : "(none)");
    if (strcmp(m->data, "late") == 0)
        latch_next(latch_res_req(res));
    latch_sse_send(res, NULL, NULL, out);
}

static int h_events(latch_req *req, latch_res *res, void *data)
{
    const char *u = latch_req_query(req, "u");

    (void)data;
    latch_res_set_header(res, "X-Route", "events");
    if (u != NULL && atoi(u) % 2 == 1)
        latch_res_set_header(res, "X-User", u);
    if (latch_sse_start(res) != 0 ||
        latch_subscribe(res, "room", on_message, NULL) != 0)
        return latch_fail(req, 500, "subscribe failed");
    return LATCH_DONE;
}

static void expect_answer(sse_client *c, int u, size_t nth)
{
    char want[64];

    assert_true(sse_wait_events(c, nth, 5000) >= nth);
    if (u % 2 == 1)
        snprintf(want, sizeof(want), "u=%d route=events", u);
    else
        snprintf(want, sizeof(want), "u=- route=events");
    assert_string_equal(c->ev[nth - 1].data, want);
}

static void test_streams_read_their_own_headers(void **state)
{
    th_server s;
    latch_app *app = latch_app_new();
    sse_client c[NS];
    char path[32];
    int i;

    (void)state;
    assert_non_null(app);
    latch_app_on_violation(app, on_violation, NULL);
    latch_get(app, "/events", h_events, NULL);
    th_server_start(&s, app);
    for (i = 0; i < NS; i++) {
        snprintf(path, sizeof(path), "/events?u=%d", i);
        sse_open(&c[i], s.port, path, NULL, 0);
        while (!c[i].head_done && sse_pump(&c[i], 50))
            ;
        assert_true(c[i].head_done);
    }
    th_wait_subscribers(app, "room", NS);
    /* Each store was packed and shared when its head's write completed
     * (conn.c's shrink, in the flush that sent it); a publish is
     * delivered on a later turn of the loop, so every callback below
     * reads a shared store. */
    assert_int_equal(latch_publish(app, "room", NULL, "one", 3), NS);
    for (i = 0; i < NS; i++)
        expect_answer(&c[i], i, 1);
    /* Half leave, one of each kind first: the others keep their blocks. */
    for (i = 0; i < NS; i += 2)
        sse_close(&c[i]);
    th_wait_subscribers(app, "room", NS / 2);
    assert_int_equal(latch_publish(app, "room", NULL, "two", 3), NS / 2);
    for (i = 1; i < NS; i += 2)
        expect_answer(&c[i], i, 2);
    /* A late move from a callback: reported after the response, each. */
    assert_int_equal(latch_publish(app, "room", NULL, "late", 4), NS / 2);
    for (i = 1; i < NS; i += 2)
        expect_answer(&c[i], i, 3);
    assert_int_equal(__atomic_load_n(&late_after, __ATOMIC_SEQ_CST), NS / 2);
    for (i = 1; i < NS; i += 2)
        sse_close(&c[i]);
    th_wait_subscribers(app, "room", 0);
    assert_int_equal(th_server_stop(&s), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_streams_read_their_own_headers),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
