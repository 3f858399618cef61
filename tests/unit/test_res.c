/*
 * test_res.c - the response state machine without a socket: every cell of
 * DESIGN.md's state table, driven through a fake exchange (the table
 * res.c writes through, internal.h) on a worker that has no loop running.
 *
 * Each cell takes a fresh response, puts it in the column's state (FRESH,
 * HEADERS_SENT, ENDED, FINISHED, DESTROYED) with public calls and the two
 * events a protocol delivers (latch__res_finished, latch__res_detach),
 * makes the row's call and checks its return value, that a refused call
 * was reported exactly once and an allowed one not at all, and that a
 * refused call put no byte into the sink.
 *
 * Not here: the bytes on the wire (test_res_framing.c, test_res_states.c
 * over a real connection).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* ------------------------------------------------------------------ */
/* A fake exchange: a buffer for a wire, and counts of what was asked    */
/* ------------------------------------------------------------------ */

static struct {
    latch_buf wire;
    size_t wrote, ended, cut, last, flushes;
} fx;

static latch_buf *fx_sink(latch_res *res)
{
    (void)res;
    return &fx.wire;
}

static void fx_wrote(latch_res *res, latch_buf *b, size_t n)
{
    (void)res;
    assert_ptr_equal(b, &fx.wire);
    fx.wrote += n;
}

static void fx_unhold(latch_res *res)
{
    res->hold = false;
}

static void fx_make_last(latch_res *res)
{
    (void)res;
    fx.last++;
}

static bool fx_may_keep_alive(const latch_res *res)
{
    (void)res;
    return true;
}

static void fx_ended(latch_res *res)
{
    (void)res;
    fx.ended++;
}

static void fx_cut(latch_res *res, const char *event, int reason)
{
    (void)res;
    (void)event;
    (void)reason;
    fx.cut++;
}

static size_t fx_backlog(const latch_res *res)
{
    (void)res;
    return 0;
}

static bool fx_on_wire(const latch_res *res)
{
    (void)res;
    return true;
}

static void fx_want_flush(latch_res *res)
{
    (void)res;
    fx.flushes++;
}

static void fx_release_input(latch_res *res)
{
    assert_null(res->req.rb);
}

static const latch_exchange_ops fake_exchange = {
    .sink = fx_sink,
    .wrote = fx_wrote,
    .unhold = fx_unhold,
    .make_last = fx_make_last,
    .may_keep_alive = fx_may_keep_alive,
    .ended = fx_ended,
    .cut = fx_cut,
    .backlog = fx_backlog,
    .on_wire = fx_on_wire,
    .want_flush = fx_want_flush,
    .release_input = fx_release_input,
    .peer = NULL,         /* no address: latch__res_peer says so */
    .can_sendfile = NULL, /* no sendfile: res.c writes file bodies */
    .sendfile = NULL,
};

/* ------------------------------------------------------------------ */
/* A worker with no loop, and its app's violation hook                  */
/* ------------------------------------------------------------------ */

static int reports;
static int last_code;

static void on_violation(const latch_violation *v, void *data)
{
    (void)data;
    reports++;
    last_code = v->code;
}

typedef struct world {
    latch_app *app;
    latch_worker *w;
} world;

static int setup(void **state)
{
    world *wd = calloc(1, sizeof(*wd));

    assert_non_null(wd);
    wd->app = latch_app_new();
    assert_non_null(wd->app);
    latch_app_on_violation(wd->app, on_violation, NULL);
    wd->w = calloc(1, sizeof(*wd->w));
    assert_non_null(wd->w);
    wd->w->app = wd->app;
    wd->w->thread = pthread_self(); /* the calls come from "its loop" */
    *state = wd;
    return 0;
}

static int teardown(void **state)
{
    world *wd = *state;

    latch__res_pool_free(wd->w);
    free(wd->w);
    latch_app_free(wd->app);
    latch__buf_dispose(&fx.wire);
    free(wd);
    return 0;
}

/* ------------------------------------------------------------------ */
/* The table                                                            */
/* ------------------------------------------------------------------ */

enum { S_FRESH, S_HEADERS_SENT, S_ENDED, S_FINISHED, S_DESTROYED, S_N };
static const char *const state_names[S_N] = {"FRESH", "HEADERS_SENT", "ENDED",
                                             "FINISHED", "DESTROYED"};

enum {
    C_SET_HEADER,
    C_APPEND_HEADER,
    C_REMOVE_HEADER,
    C_WRITE_HEAD,
    C_STATUS,
    C_WRITE,
    C_END_DATA,
    C_END_EMPTY,
    C_SEND,
    C_JSON,
    C_REDIRECT,
    C_N
};
static const char *const call_names[C_N] = {
    "set_header", "append_header", "remove_header", "write_head",
    "status",     "write",         "end(data)",     "end()",
    "send",       "json",          "redirect"};

#define OK 1 /* the call is allowed: its success value */
#define HS LATCH_ERR_HTTP_HEADERS_SENT
#define WAE LATCH_ERR_STREAM_WRITE_AFTER_END
#define SD LATCH_ERR_STREAM_DESTROYED
#define NOP 2 /* end() on an ended response: 0, silently */

/* DESIGN.md, "The response state machine": FINISHED shares ENDED's
 * column. */
static const int table[C_N][S_N] = {
    [C_SET_HEADER] = {OK, HS, HS, HS, SD},
    [C_APPEND_HEADER] = {OK, HS, HS, HS, SD},
    [C_REMOVE_HEADER] = {OK, HS, HS, HS, SD},
    [C_WRITE_HEAD] = {OK, HS, HS, HS, SD},
    [C_STATUS] = {OK, HS, HS, HS, SD},
    [C_WRITE] = {OK, OK, WAE, WAE, SD},
    [C_END_DATA] = {OK, OK, WAE, WAE, SD},
    [C_END_EMPTY] = {OK, OK, NOP, NOP, SD},
    [C_SEND] = {OK, HS, HS, HS, SD},
    [C_JSON] = {OK, HS, HS, HS, SD},
    [C_REDIRECT] = {OK, HS, HS, HS, SD},
};

/* What an allowed call returns. */
static int success_of(int call)
{
    return call == C_WRITE ? 1 : 0; /* write: 1, no backpressure */
}

static int make_call(latch_res *res, int call)
{
    switch (call) {
    case C_SET_HEADER: return latch_res_set_header(res, "X-A", "1");
    case C_APPEND_HEADER: return latch_res_append_header(res, "X-A", "2");
    case C_REMOVE_HEADER: return latch_res_remove_header(res, "X-A");
    case C_WRITE_HEAD: return latch_res_write_head(res, 201);
    case C_STATUS: return latch_res_status(res, 202);
    case C_WRITE: return latch_res_write(res, "abc", 3);
    case C_END_DATA: return latch_res_end(res, "abc", 3);
    case C_END_EMPTY: return latch_res_end(res, NULL, 0);
    case C_SEND: return latch_res_send(res, "hi", 2);
    case C_JSON: return latch_res_json(res, "{}");
    default: return latch_res_redirect(res, 302, "/elsewhere");
    }
}

/* A response in state `s`, with an extra reference of the test's own so
 * that FINISHED does not recycle it. */
static latch_res *res_in(world *wd, int s)
{
    latch_res *res = latch__res_alloc(wd->w, &fake_exchange);

    assert_non_null(res);
    res->req.method = "GET";
    res->req.url = res->req.path = "/";
    res->req.version_minor = 1;
    res->req.keep_alive = true;
    res->conn = (latch_conn *)(void *)&fx; /* carried: never read */
    latch__res_ref(res);
    switch (s) {
    case S_FRESH: break;
    case S_HEADERS_SENT:
        assert_int_equal(latch_res_flush_headers(res), 0);
        break;
    case S_ENDED: assert_int_equal(latch_res_end(res, "x", 1), 0); break;
    case S_FINISHED:
        assert_int_equal(latch_res_end(res, "x", 1), 0);
        latch__res_finished(res); /* drops the connection's reference */
        break;
    default: latch_res_destroy(res); break;
    }
    assert_int_equal(res->state, s == S_FRESH          ? LATCH_RS_FRESH
                                 : s == S_HEADERS_SENT ? LATCH_RS_HEADERS_SENT
                                 : s == S_ENDED        ? LATCH_RS_ENDED
                                 : s == S_FINISHED     ? LATCH_RS_FINISHED
                                                       : LATCH_RS_DESTROYED);
    return res;
}

/* The protocol lets go (if it had not), then the test's reference. */
static void res_done(latch_res *res)
{
    if (res->conn != NULL)
        latch__res_detach(res, "test over", LATCH_CANCEL_NONE);
    latch__res_unref(res);
}

static void test_every_cell(void **state)
{
    world *wd = *state;
    int s, c;

    for (c = 0; c < C_N; c++) {
        for (s = 0; s < S_N; s++) {
            latch_res *res = res_in(wd, s);
            int want = table[c][s], rc;
            size_t before = fx.wire.len;

            reports = 0;
            last_code = 0;
            rc = make_call(res, c);
            if (want == OK) {
                if (rc != success_of(c))
                    fail_msg("%s in %s: %d, want %d", call_names[c],
                             state_names[s], rc, success_of(c));
                assert_int_equal(reports, 0);
            } else if (want == NOP) {
                assert_int_equal(rc, 0);
                assert_int_equal(reports, 0);
                assert_int_equal(fx.wire.len, before);
            } else {
                if (rc != want)
                    fail_msg("%s in %s: %d (%s), want %s", call_names[c],
                             state_names[s], rc, latch_err_name(rc),
                             latch_err_name(want));
                /* Refused: reported once, with the code returned, and
                 * nothing reached the wire. */
                assert_int_equal(reports, 1);
                assert_int_equal(last_code, want);
                assert_int_equal(fx.wire.len, before);
            }
            res_done(res);
        }
    }
}

/* The exchange sees what the table promises: end() tells it the response
 * ended once, destroy cuts it once, and every byte appended is counted. */
static void test_exchange_is_told(void **state)
{
    world *wd = *state;
    latch_res *res;
    size_t ended = fx.ended, cut = fx.cut;

    fx.wire.len = 0;
    fx.wrote = 0;
    res = res_in(wd, S_FRESH);
    /* A protocol without a peer op: no address, said so. */
    {
        struct sockaddr_storage ss;
        assert_int_equal(latch__res_peer(res, &ss), LATCH_ERR_STATE);
    }
    assert_int_equal(latch_res_end(res, "hello", 5), 0);
    assert_int_equal(fx.ended, ended + 1);
    assert_int_equal(fx.wrote, fx.wire.len);
    assert_non_null(memmem(fx.wire.data, fx.wire.len, "\r\n\r\nhello", 9));
    assert_int_equal(latch_res_end(res, NULL, 0), 0); /* a no-op */
    assert_int_equal(fx.ended, ended + 1);
    res_done(res);

    res = res_in(wd, S_HEADERS_SENT);
    latch_res_destroy(res);
    assert_int_equal(fx.cut, cut + 1);
    latch_res_destroy(res); /* destroyed already: nothing more */
    assert_int_equal(fx.cut, cut + 1);
    res_done(res);
}

/* latch_res_release is misuse-checked, never silent (issue 12, item 5): a
 * second release after one retain, and a release through a handle kept
 * past its request, are both reported and change nothing. */
static void test_release_after_release_reports(void **state)
{
    world *wd = *state;
    latch_res *res = res_in(wd, S_FRESH);
    latch_res *h = (latch_res *)(uintptr_t)res->handle; /* the user's */
    uint32_t refs = res->refs;
    int before = reports;

    latch_res_retain(h);
    assert_int_equal(res->refs, refs + 1);
    latch_res_release(h);
    assert_int_equal(res->refs, refs);
    assert_int_equal(reports, before);
    latch_res_release(h); /* released already: reported, nothing dropped */
    assert_int_equal(reports, before + 1);
    assert_int_equal(last_code, LATCH_ERR_STATE);
    assert_int_equal(res->refs, refs);

    /* Finished and recycled: the kept handle is stale. */
    assert_int_equal(latch_res_end(res, "x", 1), 0);
    latch__res_finished(res);
    res_done(res);
    latch_res_release(h);
    assert_int_equal(reports, before + 2);
    assert_int_equal(last_code, LATCH_ERR_STREAM_DESTROYED);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_every_cell, setup, teardown),
        cmocka_unit_test_setup_teardown(test_exchange_is_told, setup, teardown),
        cmocka_unit_test_setup_teardown(test_release_after_release_reports,
                                        setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
