/*
 * test_sse.c - Server-Sent Events and the in-process hub on a real server
 * with raw-socket EventSource clients (sse_client.h).
 *
 * The stream: its head (200, text/event-stream, no-cache,
 * X-Accel-Buffering: no, chunked), events byte-exact after decoding,
 * injection refused and reported, heartbeats. The hub: 10,000 events to
 * 100 subscribers in order with their ids; publishing from 4 threads at
 * once; a client that leaves mid-stream (its subscription ends once,
 * nothing reported, nothing leaked under ASan); the seed's broken
 * delivery callback that writes after a request timeout ended the stream
 * (refused and reported with the timeout as the sealing event, while a
 * latch_subscribe callback is never called again); slow consumers, closed
 * (with the server's memory bounded, read from /proc) or given a gap;
 * Last-Event-ID replay and the gap event; shutdown's final event.
 *
 * Each test starts its own one-worker server on 127.0.0.1. Waiting is for
 * events (bytes, subscriber counts), bounded by deadlines.
 */
#include "sse_client.h"

#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>

#include <cmocka.h>

/* ASan keeps freed memory in a quarantine; the memory test reads the RSS,
 * so keep it small. Unused without ASan. */
const char *__asan_default_options(void);
const char *__asan_default_options(void)
{
    return "quarantine_size_mb=8";
}

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;

static struct {
    int cb_calls, cb_after_end;
    int sse_rc[8];
    latch_res *kept;
    bool timed_out;
} st;

static void reset(void)
{
    pthread_mutex_lock(&mu);
    memset(&st, 0, sizeof(st));
    pthread_mutex_unlock(&mu);
}

/* GET /events?ch=NAME: an SSE stream subscribed to NAME. */
static int h_events(latch_req *req, latch_res *res, void *data)
{
    const char *ch = latch_req_query(req, "ch");

    (void)data;
    if (latch_subscribe(res, ch ? ch : "news", NULL, NULL) != 0)
        return latch_fail(req, 500, "subscribe failed");
    return LATCH_DONE;
}

static latch_app *new_app(void)
{
    latch_app *app = latch_app_new();

    assert_non_null(app);
    latch_get(app, "/events", h_events, NULL);
    return app;
}

/* ------------------------------------------------------------------ */

/* GET /raw: the SSE calls one by one, their results kept. */
static int h_raw(latch_req *req, latch_res *res, void *data)
{
    (void)req;
    (void)data;
    st.sse_rc[0] = latch_sse_send(res, NULL, NULL, "early");
    st.sse_rc[1] = latch_sse_start(res);
    st.sse_rc[2] = latch_sse_retry(res, 1500);
    st.sse_rc[3] = latch_sse_send(res, "up\ndate", NULL, "x");
    st.sse_rc[4] = latch_sse_send(res, NULL, "1\r", "x");
    st.sse_rc[5] = latch_sse_send(res, "tick", "7", "line one\r\nline two");
    st.sse_rc[6] = latch_sse_comment(res, "note");
    st.sse_rc[7] = latch_sse_start(res);
    latch_res_end(res, NULL, 0);
    return LATCH_DONE;
}

static void test_stream_format(void **state)
{
    th_vlog log;
    th_server s;
    sse_client c;
    latch_app *app = new_app();

    (void)state;
    reset();
    latch_get(app, "/raw", h_raw, NULL);
    th_record_violations_full(app, &log);
    th_server_start(&s, app);
    sse_open(&c, s.port, "/raw", NULL, 0);
    assert_true(sse_wait_end(&c, 5000));
    assert_true(c.ended);
    assert_non_null(strstr(c.head, "HTTP/1.1 200 OK\r\n"));
    assert_non_null(strstr(c.head, "Content-Type: text/event-stream\r\n"));
    assert_non_null(strstr(c.head, "Cache-Control: no-cache\r\n"));
    assert_non_null(strstr(c.head, "X-Accel-Buffering: no\r\n"));
    assert_non_null(strstr(c.head, "Transfer-Encoding: chunked\r\n"));
    assert_null(strstr(c.head, "Content-Length"));
    assert_int_equal(st.sse_rc[0], LATCH_ERR_STATE);
    assert_int_equal(st.sse_rc[1], 0);
    assert_int_equal(st.sse_rc[2], 1);
    assert_int_equal(st.sse_rc[3], LATCH_ERR_INVALID_CHAR);
    assert_int_equal(st.sse_rc[4], LATCH_ERR_INVALID_CHAR);
    assert_int_equal(st.sse_rc[5], 1);
    assert_int_equal(st.sse_rc[6], 1);
    assert_int_equal(st.sse_rc[7], LATCH_ERR_HTTP_HEADERS_SENT);
    /* Exactly one event went out, with both lines and its id. */
    assert_int_equal(c.nev, 1);
    assert_string_equal(c.ev[0].event, "tick");
    assert_string_equal(c.ev[0].id, "7");
    assert_string_equal(c.ev[0].data, "line one\nline two");
    assert_int_equal(c.comments, 1);
    /* Each refusal was reported, naming this file. */
    assert_int_equal(th_vlog_count(&log), 4);
    {
        th_vrec r;
        assert_true(th_vlog_get(&log, 1, &r));
        assert_int_equal(r.code, LATCH_ERR_INVALID_CHAR);
        assert_non_null(strstr(r.at_file, "test_sse.c"));
        assert_string_equal(r.call, "latch_sse_send");
    }
    sse_close(&c);
    th_server_stop(&s);
}

/*
 * latch_subscribe without a callback starts the event stream itself: a
 * refusal of that start, and the seal of the head it sends, name
 * latch_subscribe (the call the user made), not latch_sse_start.
 */
static int h_sub_after_head(latch_req *req, latch_res *res, void *data)
{
    (void)req;
    (void)data;
    latch_res_flush_headers(res);
    st.sse_rc[0] = latch_subscribe(res, "late-head", NULL, NULL);
    latch_res_end(res, NULL, 0);
    return LATCH_DONE;
}

static int h_sub_then_header(latch_req *req, latch_res *res, void *data)
{
    (void)req;
    (void)data;
    st.sse_rc[1] = latch_subscribe(res, "implicit", NULL, NULL);
    st.sse_rc[2] = latch_res_set_header(res, "X-Late", "1");
    latch_res_end(res, NULL, 0);
    return LATCH_DONE;
}

static void test_subscribe_names_itself(void **state)
{
    th_vlog log;
    th_server s;
    sse_client c;
    th_vrec r;
    latch_app *app = new_app();

    (void)state;
    reset();
    latch_get(app, "/after-head", h_sub_after_head, NULL);
    latch_get(app, "/then-header", h_sub_then_header, NULL);
    th_record_violations_full(app, &log);
    th_server_start(&s, app);
    sse_open(&c, s.port, "/after-head", NULL, 0);
    assert_true(sse_wait_end(&c, 5000));
    assert_true(c.ended);
    sse_close(&c);
    sse_open(&c, s.port, "/then-header", NULL, 0);
    assert_true(sse_wait_end(&c, 5000));
    assert_true(c.ended);
    assert_non_null(strstr(c.head, "Content-Type: text/event-stream\r\n"));
    sse_close(&c);
    th_server_stop(&s);
    assert_int_equal(st.sse_rc[0], LATCH_ERR_HTTP_HEADERS_SENT);
    assert_int_equal(st.sse_rc[1], 0);
    assert_int_equal(st.sse_rc[2], LATCH_ERR_HTTP_HEADERS_SENT);
    assert_int_equal(th_vlog_count(&log), 2);
    assert_true(th_vlog_get(&log, 0, &r));
    assert_int_equal(r.code, LATCH_ERR_HTTP_HEADERS_SENT);
    assert_string_equal(r.call, "latch_subscribe");
    assert_non_null(strstr(r.at_file, "test_sse.c"));
    assert_string_equal(r.sealed_call, "latch_res_flush_headers");
    assert_true(th_vlog_get(&log, 1, &r));
    assert_string_equal(r.call, "latch_res_set_header");
    assert_string_equal(r.sealed_call, "latch_subscribe");
    assert_non_null(strstr(r.sealed_file, "test_sse.c"));
}

/*
 * An app-wide request timeout ends an event stream that did not clear it
 * (destroyed, subscription gone); a route that clears it with
 * latch_req_set_timeout(req, 0, 0) keeps its stream past it (latch.h,
 * latch_sse_start).
 */
static int h_events_no_timeout(latch_req *req, latch_res *res, void *data)
{
    (void)data;
    latch_req_set_timeout(req, 0, 0);
    if (latch_subscribe(res, "outlive", NULL, NULL) != 0)
        return latch_fail(req, 500, "subscribe failed");
    return LATCH_DONE;
}

static void test_stream_and_request_timeout(void **state)
{
    th_server s;
    sse_client kept, cut;
    latch_app *app = new_app();

    (void)state;
    assert_int_equal(latch_app_set_request_timeout(app, 150, 0), 0);
    latch_get(app, "/outlive", h_events_no_timeout, NULL);
    th_server_start(&s, app);
    /* In this order, so that the kept stream's timer, had it one, would
     * fire before the other's (one loop, earlier deadline). */
    sse_open(&kept, s.port, "/outlive", NULL, 0);
    th_wait_subscribers(app, "outlive", 1);
    sse_open(&cut, s.port, "/events?ch=outlive", NULL, 0);
    th_wait_subscribers(app, "outlive", 2);
    /* The timeout ends the stream that kept it: its subscription goes. */
    assert_true(sse_wait_end(&cut, 5000));
    assert_true(cut.head_done);
    th_wait_subscribers(app, "outlive", 1);
    assert_int_equal(latch_publish(app, "outlive", NULL, "still here", 10), 1);
    assert_int_equal(sse_wait_events(&kept, 1, 5000), 1);
    assert_string_equal(kept.ev[0].data, "still here");
    sse_close(&kept);
    sse_close(&cut);
    th_server_stop(&s);
}

static void test_heartbeat(void **state)
{
    th_server s;
    sse_client c;
    latch_app *app = new_app();
    int64_t end;

    (void)state;
    assert_int_equal(latch_app_set_sse_heartbeat(app, 80), 0);
    th_server_start(&s, app);
    sse_open(&c, s.port, "/events?ch=hb", NULL, 0);
    end = th_now_ms() + 5000;
    while (c.comments < 2 && th_now_ms() < end && sse_pump(&c, 50))
        ;
    assert_true(c.comments >= 2);
    assert_int_equal(c.nev, 0);
    assert_int_equal(latch_app_set_sse_heartbeat(app, 10), LATCH_ERR_STATE);
    sse_close(&c);
    th_server_stop(&s);
}

/* ------------------------------------------------------------------ */

#define NSUB 100
#define NEV 10000

static void check_in_order(sse_client *c, size_t n, size_t first_id)
{
    size_t i;
    char want[32];

    assert_int_equal(c->nev, n);
    for (i = 0; i < n; i++) {
        snprintf(want, sizeof(want), "%zu", first_id + i);
        assert_string_equal(c->ev[i].id, want);
        assert_string_equal(c->ev[i].data, want);
    }
}

static void test_10000_events_to_100_subscribers(void **state)
{
    static sse_client c[NSUB];
    th_vlog log;
    th_server s;
    latch_app *app = new_app();
    char data[32];
    int i, done;
    int64_t end;

    (void)state;
    th_record_violations_full(app, &log);
    th_server_start(&s, app);
    for (i = 0; i < NSUB; i++)
        sse_open(&c[i], s.port, "/events?ch=fan", NULL, 0);
    th_wait_subscribers(app, "fan", NSUB);
    for (i = 1; i <= NEV; i++) {
        snprintf(data, sizeof(data), "%d", i);
        assert_int_equal(latch_publish(app, "fan", NULL, data, strlen(data)),
                         NSUB);
        if (i % 500 == 0) /* read along, as a browser would */
            for (int k = 0; k < NSUB; k++)
                sse_pump(&c[k], 0);
    }
    end = th_now_ms() + 60000;
    do {
        done = 0;
        for (i = 0; i < NSUB; i++) {
            sse_pump(&c[i], 1);
            done += c[i].nev == NEV;
        }
    } while (done < NSUB && th_now_ms() < end);
    for (i = 0; i < NSUB; i++) {
        check_in_order(&c[i], NEV, 1);
        sse_close(&c[i]);
    }
    th_wait_subscribers(app, "fan", 0);
    assert_int_equal(th_vlog_count(&log), 0);
    th_server_stop(&s);
}

/* ------------------------------------------------------------------ */

#define NTHR 4
#define PER_THR 2500

static latch_app *pub_app;

static void *publisher(void *arg)
{
    int t = (int)(intptr_t)arg, k;
    char data[32];

    for (k = 0; k < PER_THR; k++) {
        snprintf(data, sizeof(data), "%d:%d", t, k);
        if (latch_publish(pub_app, "four", "p", data, strlen(data)) < 0)
            abort();
    }
    return NULL;
}

static void test_publish_from_4_threads(void **state)
{
    sse_client c[3];
    pthread_t th[NTHR];
    th_server s;
    latch_app *app = new_app();
    int i, t, next[NTHR];
    size_t k;

    (void)state;
    th_server_start(&s, app);
    for (i = 0; i < 3; i++)
        sse_open(&c[i], s.port, "/events?ch=four", NULL, 0);
    th_wait_subscribers(app, "four", 3);
    pub_app = app;
    for (t = 0; t < NTHR; t++)
        pthread_create(&th[t], NULL, publisher, (void *)(intptr_t)t);
    for (t = 0; t < NTHR; t++)
        pthread_join(th[t], NULL);
    for (i = 0; i < 3; i++) {
        assert_int_equal(sse_wait_events(&c[i], NTHR * PER_THR, 30000),
                         NTHR * PER_THR);
        /* Ids 1..N in order, and each thread's events in its order. */
        memset(next, 0, sizeof(next));
        for (k = 0; k < c[i].nev; k++) {
            char want[48];
            snprintf(want, sizeof(want), "%zu", k + 1);
            assert_string_equal(c[i].ev[k].id, want);
            assert_string_equal(c[i].ev[k].event, "p");
            assert_int_equal(sscanf(c[i].ev[k].data, "%d:", &t), 1);
            assert_true(t >= 0 && t < NTHR);
            snprintf(want, sizeof(want), "%d:%d", t, next[t]++);
            assert_string_equal(c[i].ev[k].data, want);
        }
        sse_close(&c[i]);
    }
    th_server_stop(&s);
}

/* ------------------------------------------------------------------ */

static void test_disconnect_mid_stream(void **state)
{
    th_vlog log;
    th_server s;
    sse_client a, b;
    latch_app *app = new_app();
    int i;

    (void)state;
    th_record_violations_full(app, &log);
    th_server_start(&s, app);
    sse_open(&a, s.port, "/events?ch=mid", NULL, 0);
    sse_open(&b, s.port, "/events?ch=mid", NULL, 0);
    th_wait_subscribers(app, "mid", 2);
    for (i = 0; i < 50; i++)
        latch_publish(app, "mid", NULL, "x", 1);
    assert_int_equal(sse_wait_events(&a, 50, 5000), 50);
    th_close_reset(a.fd); /* gone mid-stream */
    a.fd = -1;
    th_wait_subscribers(app, "mid", 1);
    for (i = 0; i < 50; i++)
        latch_publish(app, "mid", NULL, "y", 1);
    assert_int_equal(sse_wait_events(&b, 100, 5000), 100);
    close(b.fd); /* a FIN this time */
    b.fd = -1;
    th_wait_subscribers(app, "mid", 0);
    /* Publishing to nobody reaches nobody; nothing was reported. */
    assert_int_equal(latch_publish(app, "mid", NULL, "z", 1), 0);
    assert_int_equal(th_vlog_count(&log), 0);
    sse_close(&a);
    sse_close(&b);
    th_server_stop(&s);
}

/* ------------------------------------------------------------------ */

/* The seed's delivery: a callback that writes to the stream. */
static void on_msg(latch_res *res, const latch_message *m, void *data)
{
    (void)data;
    pthread_mutex_lock(&mu);
    st.cb_calls++;
    if (st.timed_out)
        st.cb_after_end++;
    pthread_mutex_unlock(&mu);
    latch_sse_send(res, m->event, m->id, m->data);
}

static int h_seed(latch_req *req, latch_res *res, void *data)
{
    (void)data;
    latch_req_set_timeout(req, 150, 503);
    latch_sse_start(res);
    latch_subscribe(res, "seed", on_msg, NULL);
    /* And the seed's own pattern: the response kept in a set of clients
     * that a publisher writes to later. */
    latch_res_retain(res);
    pthread_mutex_lock(&mu);
    st.kept = res;
    pthread_mutex_unlock(&mu);
    return LATCH_DONE;
}

static void late_write(latch_res *res, void *data)
{
    _Atomic int *rc = data;

    atomic_store(rc, latch_sse_send(res, NULL, NULL, "late")); /* the bug */
    latch_res_release(res);
}

static void test_broken_callback_after_timeout(void **state)
{
    th_vlog log;
    th_vrec r;
    th_server s;
    sse_client c;
    latch_app *app = new_app();
    _Atomic int rc = 1;
    int i, calls;
    int64_t end;

    (void)state;
    reset();
    latch_get(app, "/seed", h_seed, NULL);
    th_record_violations_full(app, &log);
    th_server_start(&s, app);
    sse_open(&c, s.port, "/seed", NULL, 0);
    th_wait_subscribers(app, "seed", 1);
    latch_publish(app, "seed", NULL, "before", 6);
    assert_int_equal(sse_wait_events(&c, 1, 5000), 1);
    /* The timeout cuts the stream and ends the subscription. */
    assert_int_equal(th_wait_close(c.fd, 5000), TH_EOF);
    th_wait_subscribers(app, "seed", 0);
    pthread_mutex_lock(&mu);
    st.timed_out = true;
    calls = st.cb_calls;
    pthread_mutex_unlock(&mu);
    assert_int_equal(calls, 1);
    for (i = 0; i < 20; i++)
        assert_int_equal(latch_publish(app, "seed", NULL, "after", 5), 0);
    /* The kept response: the late write is refused and reported. */
    assert_int_equal(latch_res_post(st.kept, late_write, &rc), 0);
    assert_int_equal(th_vlog_wait(&log, 1, 5000), 1);
    assert_true(th_vlog_get(&log, 0, &r));
    assert_int_equal(r.code, LATCH_ERR_STREAM_DESTROYED);
    assert_string_equal(r.call, "latch_sse_send");
    assert_string_equal(r.sealed_call, "request timeout");
    assert_non_null(strstr(r.at_file, "test_sse.c"));
    pthread_mutex_lock(&mu);
    assert_int_equal(st.cb_after_end, 0);
    pthread_mutex_unlock(&mu);
    end = th_now_ms() + 5000;
    while (atomic_load(&rc) == 1 && th_now_ms() < end)
        usleep(1000);
    assert_int_equal(atomic_load(&rc), LATCH_ERR_STREAM_DESTROYED);
    sse_close(&c);
    th_server_stop(&s);
}

/* ------------------------------------------------------------------ */

static void test_slow_consumer_closed(void **state)
{
    th_vlog log;
    th_server s;
    sse_client slow, fast;
    latch_app *app = new_app();
    char *big = malloc(1024);
    long before, peak = 0;
    int i;

    (void)state;
    memset(big, 'a', 1023);
    big[1023] = '\0';
    assert_int_equal(
        latch_app_set_slow_consumer(app, 64 * 1024, LATCH_SLOW_DISCONNECT), 0);
    assert_int_equal(latch_app_set_channel_history(app, 16), 0);
    th_record_violations_full(app, &log);
    th_server_start(&s, app);
    sse_open(&slow, s.port, "/events?ch=slow", NULL, 4096);
    th_wait_subscribers(app, "slow", 1);
    before = (long)(th_rss() / 1024);
    /* 64 MiB of events to a client that reads nothing. */
    for (i = 0; i < 65536 && latch_app_subscribers(app, "slow") > 0; i++) {
        latch_publish(app, "slow", NULL, big, 1023);
        if (i % 1024 == 0) {
            long now = (long)(th_rss() / 1024);
            if (now - before > peak)
                peak = now - before;
        }
    }
    th_wait_subscribers(app, "slow", 0);
    assert_true(i < 65536);
    /* What the server held for it stayed near the socket buffers plus the
     * queue limit: far below what was published. */
    assert_true(peak < 24 * 1024);
    /* It was closed, and the server goes on serving others. */
    assert_int_equal(th_wait_close(slow.fd, 10000) != TH_OPEN, 1);
    sse_open(&fast, s.port, "/events?ch=slow", NULL, 0);
    th_wait_subscribers(app, "slow", 1);
    latch_publish(app, "slow", NULL, "ok", 2);
    assert_int_equal(sse_wait_events(&fast, 1, 5000), 1);
    assert_string_equal(fast.ev[0].data, "ok");
    assert_int_equal(th_vlog_count(&log), 0);
    sse_close(&slow);
    sse_close(&fast);
    free(big);
    th_server_stop(&s);
}

static void test_slow_consumer_dropped_with_gap(void **state)
{
    th_server s;
    sse_client slow;
    latch_app *app = new_app();
    char *big = malloc(1024);
    size_t k, n;
    int i, gaps = 0;
    long last = 0, id;

    (void)state;
    memset(big, 'b', 1023);
    big[1023] = '\0';
    assert_int_equal(
        latch_app_set_slow_consumer(app, 32 * 1024, LATCH_SLOW_DROP), 0);
    th_server_start(&s, app);
    sse_open(&slow, s.port, "/events?ch=drop", NULL, 4096);
    th_wait_subscribers(app, "drop", 1);
    for (i = 0; i < 8192; i++)
        latch_publish(app, "drop", NULL, big, 1023);
    latch_publish(app, "drop", "last", "end", 3);
    /* Now read: some events, one gap (or more), then the rest. */
    n = 0;
    while (sse_pump(&slow, 2000) &&
           (slow.nev == 0 || strcmp(slow.ev[slow.nev - 1].event, "last")))
        n++;
    assert_true(slow.nev > 0);
    assert_string_equal(slow.ev[slow.nev - 1].event, "last");
    assert_true(slow.nev < 8193);
    for (k = 0; k < slow.nev; k++) {
        if (strcmp(slow.ev[k].event, "latch-gap") == 0) {
            char want[64];
            gaps++;
            snprintf(want, sizeof(want), "{\"last_id\":\"%ld\"}", last);
            assert_string_equal(slow.ev[k].data, want);
            continue;
        }
        id = atol(slow.ev[k].id);
        assert_true(id > last); /* increasing, never repeated */
        last = id;
    }
    assert_true(gaps >= 1);
    assert_int_equal(latch_app_subscribers(app, "drop"), 1);
    sse_close(&slow);
    free(big);
    th_server_stop(&s);
}

/*
 * Checks what a dropping slow consumer got in ev[from..nev): ids increase,
 * each event's data starts with its own id (its publish number: nothing
 * came from another slot of a queue that was remade), and each gap names
 * the id of the event before it ("" before any). *last: the id before
 * ev[from], then the newest. Returns the number of gaps.
 */
static int check_drop_phase(const sse_client *c, size_t from, long *last)
{
    char want[64];
    int gaps = 0;
    size_t k;
    long id;

    for (k = from; k < c->nev; k++) {
        if (strcmp(c->ev[k].event, "latch-gap") == 0) {
            if (*last == 0)
                snprintf(want, sizeof(want), "{\"last_id\":\"\"}");
            else
                snprintf(want, sizeof(want), "{\"last_id\":\"%ld\"}", *last);
            assert_string_equal(c->ev[k].data, want);
            gaps++;
            continue;
        }
        id = atol(c->ev[k].id);
        assert_true(id > *last);
        assert_int_equal(atol(c->ev[k].data), id);
        *last = id;
    }
    return gaps;
}

/* Reads until the newest event is `mark`, for up to 20 s. */
static void read_until_event(sse_client *c, const char *mark)
{
    int64_t end = th_now_ms() + 20000;

    while ((c->nev == 0 || strcmp(c->ev[c->nev - 1].event, mark) != 0) &&
           th_now_ms() < end && sse_pump(c, 100))
        ;
    assert_true(c->nev > 0);
    assert_string_equal(c->ev[c->nev - 1].event, mark);
}

/*
 * A slow consumer that caught up gives its queue back (sse.c frees it once
 * empty) and gets a new one when it falls behind again: in both rounds the
 * events come in publish order with their own data, and each gap names the
 * last id the client got, the round before's included.
 */
static void test_slow_consumer_slow_again(void **state)
{
    th_server s;
    sse_client slow;
    latch_app *app = new_app();
    char *big = malloc(1024);
    const char *mark[2] = {"mark1", "mark2"};
    int i, round, seq = 0, gaps[2];
    size_t from = 0;
    long last = 0;

    (void)state;
    memset(big, 'c', 1023);
    big[1023] = '\0';
    assert_int_equal(
        latch_app_set_slow_consumer(app, 32 * 1024, LATCH_SLOW_DROP), 0);
    th_server_start(&s, app);
    sse_open(&slow, s.port, "/events?ch=again", NULL, 4096);
    th_wait_subscribers(app, "again", 1);
    for (round = 0; round < 2; round++) {
        /* The client reads nothing while 8 MiB go out. */
        for (i = 0; i < 8192; i++) {
            int n = snprintf(big, 32, "%d", ++seq);
            big[n] = 'c';
            latch_publish(app, "again", NULL, big, 1023);
        }
        snprintf(big, 32, "%d", ++seq);
        latch_publish(app, "again", mark[round], big, strlen(big));
        /* Then everything: the queue drains empty with the mark. */
        read_until_event(&slow, mark[round]);
        gaps[round] = check_drop_phase(&slow, from, &last);
        assert_int_equal(last, seq);
        from = slow.nev;
    }
    assert_true(gaps[0] >= 1);
    assert_true(gaps[1] >= 1);
    assert_int_equal(latch_app_subscribers(app, "again"), 1);
    sse_close(&slow);
    free(big);
    th_server_stop(&s);
}

/* A delivery callback that destroys its own stream. */
static void on_destroy(latch_res *res, const latch_message *m, void *data)
{
    (void)m;
    (void)data;
    pthread_mutex_lock(&mu);
    st.cb_calls++;
    pthread_mutex_unlock(&mu);
    latch_res_destroy(res);
}

/* GET /gone: a stream with two subscriptions of "gone": the first (no
 * callback) shares its stream's allocation, the second (on_destroy) is
 * made alone and comes first on the channel's list. */
static int h_gone(latch_req *req, latch_res *res, void *data)
{
    (void)data;
    if (latch_subscribe(res, "gone", NULL, NULL) != 0 ||
        latch_subscribe(res, "gone", on_destroy, NULL) != 0)
        return latch_fail(req, 500, "subscribe failed");
    return LATCH_DONE;
}

/*
 * A response destroyed from a delivery, in the middle of the walk of its
 * channel: both its subscriptions end there, once, and the one that
 * shares the stream's allocation is still walked past (never freed with
 * the stream while a delivery runs: ASan checks it) to reach the next
 * subscriber, who gets every message.
 */
static void test_callback_destroys_its_stream(void **state)
{
    th_vlog log;
    th_server s;
    sse_client plain, gone;
    latch_app *app = new_app();
    int64_t end;
    int calls;

    (void)state;
    reset();
    latch_get(app, "/gone", h_gone, NULL);
    th_record_violations_full(app, &log);
    th_server_start(&s, app);
    sse_open(&plain, s.port, "/events?ch=gone", NULL, 0);
    th_wait_subscribers(app, "gone", 1);
    sse_open(&gone, s.port, "/gone", NULL, 0);
    th_wait_subscribers(app, "gone", 3);
    latch_publish(app, "gone", NULL, "one", 3);
    assert_int_equal(sse_wait_events(&plain, 1, 5000), 1);
    assert_string_equal(plain.ev[0].data, "one");
    th_wait_subscribers(app, "gone", 1);
    end = th_now_ms() + 5000;
    while (sse_pump(&gone, 100) && th_now_ms() < end)
        ;
    assert_true(gone.eof);
    assert_int_equal(gone.nev, 0); /* destroyed before its turn came */
    latch_publish(app, "gone", NULL, "two", 3);
    assert_int_equal(sse_wait_events(&plain, 2, 5000), 2);
    assert_string_equal(plain.ev[1].data, "two");
    pthread_mutex_lock(&mu);
    calls = st.cb_calls;
    pthread_mutex_unlock(&mu);
    assert_int_equal(calls, 1);
    assert_int_equal(th_vlog_count(&log), 0);
    sse_close(&gone);
    sse_close(&plain);
    th_server_stop(&s);
}

/* ------------------------------------------------------------------ */

static void test_replay_and_gap(void **state)
{
    th_server s;
    sse_client c;
    latch_app *app = new_app();
    char data[16];
    int i;

    (void)state;
    assert_int_equal(latch_app_set_channel_history(app, 8), 0);
    th_server_start(&s, app);
    for (i = 1; i <= 20; i++) {
        snprintf(data, sizeof(data), "%d", i);
        latch_publish(app, "r", NULL, data, strlen(data));
    }
    /* Within the ring (13..20): 16..20, then live from 21. */
    sse_open(&c, s.port, "/events?ch=r", "15", 0);
    assert_int_equal(sse_wait_events(&c, 5, 5000), 5);
    th_wait_subscribers(app, "r", 1);
    latch_publish(app, "r", NULL, "21", 2);
    assert_int_equal(sse_wait_events(&c, 6, 5000), 6);
    check_in_order(&c, 6, 16);
    sse_close(&c);
    th_wait_subscribers(app, "r", 0);
    /* The newest id: nothing to replay. */
    sse_open(&c, s.port, "/events?ch=r", "21", 0);
    th_wait_subscribers(app, "r", 1);
    latch_publish(app, "r", NULL, "22", 2);
    assert_int_equal(sse_wait_events(&c, 1, 5000), 1);
    check_in_order(&c, 1, 22);
    sse_close(&c);
    th_wait_subscribers(app, "r", 0);
    /* Older than the ring: one gap, then live. */
    sse_open(&c, s.port, "/events?ch=r", "5", 0);
    th_wait_subscribers(app, "r", 1);
    latch_publish(app, "r", NULL, "23", 2);
    assert_int_equal(sse_wait_events(&c, 2, 5000), 2);
    assert_string_equal(c.ev[0].event, "latch-gap");
    assert_string_equal(c.ev[0].data, "{\"last_id\":\"5\"}");
    assert_string_equal(c.ev[1].id, "23");
    sse_close(&c);
    th_wait_subscribers(app, "r", 0);
    /* An id this channel never had (a quote in it, escaped), and one
     * from the future: a gap each. */
    sse_open(&c, s.port, "/events?ch=r", "ab\"c", 0);
    assert_int_equal(sse_wait_events(&c, 1, 5000), 1);
    assert_string_equal(c.ev[0].data, "{\"last_id\":\"ab\\\"c\"}");
    sse_close(&c);
    sse_open(&c, s.port, "/events?ch=r", "99", 0);
    assert_int_equal(sse_wait_events(&c, 1, 5000), 1);
    assert_string_equal(c.ev[0].event, "latch-gap");
    sse_close(&c);
    th_server_stop(&s);
}

static void test_shutdown_final_event(void **state)
{
    th_server s;
    sse_client c;
    latch_app *app = new_app();
    int64_t end;

    (void)state;
    th_server_start(&s, app);
    sse_open(&c, s.port, "/events?ch=bye", NULL, 0);
    th_wait_subscribers(app, "bye", 1);
    latch_publish(app, "bye", NULL, "hi", 2);
    assert_int_equal(sse_wait_events(&c, 1, 5000), 1);
    latch_stop(s.app);
    end = th_now_ms() + 5000;
    while (!c.eof && th_now_ms() < end)
        sse_pump(&c, 50);
    assert_true(c.eof);
    assert_true(c.ended); /* a complete response: the last chunk came */
    assert_int_equal(c.nev, 2);
    assert_string_equal(c.ev[1].event, "latch-shutdown");
    assert_string_equal(c.ev[1].data, "");
    th_server_stop(&s);
    sse_close(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stream_format),
        cmocka_unit_test(test_subscribe_names_itself),
        cmocka_unit_test(test_stream_and_request_timeout),
        cmocka_unit_test(test_heartbeat),
        cmocka_unit_test(test_10000_events_to_100_subscribers),
        cmocka_unit_test(test_publish_from_4_threads),
        cmocka_unit_test(test_disconnect_mid_stream),
        cmocka_unit_test(test_broken_callback_after_timeout),
        cmocka_unit_test(test_slow_consumer_closed),
        cmocka_unit_test(test_slow_consumer_dropped_with_gap),
        cmocka_unit_test(test_slow_consumer_slow_again),
        cmocka_unit_test(test_callback_destroys_its_stream),
        cmocka_unit_test(test_replay_and_gap),
        cmocka_unit_test(test_shutdown_final_event),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
