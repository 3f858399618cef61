/*
 * test_sse_memory.c - what the server holds for each SSE subscriber once
 * it is subscribed and waiting (issue 15's memory goal): the heap in use
 * after N subscribers minus before, / N, read from the allocator itself
 * (glibc's mallinfo2, or ASan's count of allocated bytes under ASan), so
 * the figure is the server's own, not the kernel's view of the process.
 *
 * The bound pins that a waiting stream keeps no read buffer (16 KiB each
 * before), no other per-request buffer sized for the worst case (the
 * fields array), no cold part of its response (the chain's bookkeeping,
 * parameters, cancellation callbacks, JSON writer) and no header store
 * beyond its exact bytes: the response object, the connection, the
 * stream and the subscription are what is left. A request without that Accept
 * (curl, a script) keeps its head in the connection's read buffer, as any
 * request does: its strings are handed out before latch knows the response will
 * be long-lived, and they must not move (DESIGN.md); that buffer, the
 * connection's first, is small.
 *
 * One worker; clients are raw sockets in this process, whose reads free
 * what they allocate before each measure.
 */
#include "harness.h"

#include <malloc.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#if defined(__SANITIZE_ADDRESS__)
#define HAVE_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define HAVE_ASAN 1
#endif
#endif

#ifdef HAVE_ASAN
/* libasan's (sanitizer/allocator_interface.h, which GCC does not ship). */
size_t __sanitizer_get_current_allocated_bytes(void);
#endif

#define NSUBS 200

/* Bytes the allocator has handed out and not had back. */
static size_t heap_in_use(void)
{
#ifdef HAVE_ASAN
    return __sanitizer_get_current_allocated_bytes();
#else
    struct mallinfo2 mi = mallinfo2();
    return mi.uordblks + mi.hblkhd;
#endif
}

/* GET /events: an SSE stream subscribed to "mem". */
static int h_events(latch_req *req, latch_res *res, void *data)
{
    (void)data;
    if (latch_subscribe(res, "mem", NULL, NULL) != 0)
        return latch_fail(req, 500, "subscribe failed");
    return LATCH_DONE;
}

static bool until_head(const char *buf, size_t len, void *arg)
{
    (void)len;
    (void)arg;
    return strstr(buf, "\r\n\r\n") != NULL;
}

/* Opens a stream with the request `req` and waits for its head. */
static int open_stream(int port, const char *req)
{
    int fd = th_connect(port);
    size_t len = 0;
    char *head;

    th_send_str(fd, req);
    head = th_read(fd, &len, 5000, until_head, NULL);
    assert_non_null(strstr(head, "HTTP/1.1 200 OK\r\n"));
    assert_non_null(strstr(head, "text/event-stream"));
    free(head);
    return fd;
}

/*
 * Heap per subscriber for streams opened with `req`. One stream first
 * makes what the worker and the channel need once (the stream list, the
 * hub's records, the heartbeat timer); it stays open while the others are
 * measured.
 */
static size_t per_subscriber(const char *req)
{
    th_server s;
    latch_app *app = latch_app_new();
    int fds[NSUBS + 1], i;
    size_t before, after;

    assert_non_null(app);
    latch_get(app, "/events", h_events, NULL);
    th_server_start(&s, app);
    fds[NSUBS] = open_stream(s.port, req);
    th_wait_subscribers(app, "mem", 1);
    before = heap_in_use();
    for (i = 0; i < NSUBS; i++)
        fds[i] = open_stream(s.port, req);
    th_wait_subscribers(app, "mem", NSUBS + 1);
    after = heap_in_use();
    for (i = 0; i <= NSUBS; i++)
        close(fds[i]);
    th_wait_subscribers(app, "mem", 0);
    th_server_stop(&s);
    return after > before ? (after - before) / NSUBS : 0;
}

/*
 * Subscribers as a browser's EventSource makes them (Accept:
 * text/event-stream). Each holds, in glibc chunks: the response object
 * (432 B; its cold part, 1,184 B with the chain's state and the places of
 * its seals, went back to the worker's pool once the stream was quiet,
 * and its finish/close/drain callbacks are a block made only by
 * latch_res_on_*), the connection (512; its parser is pooled and taken
 * only while a message is read, its write-wait part only while output
 * waits for the socket, its rare part only for a shutdown, a file body or
 * a delayed disconnect), the stream and its subscription in one block
 * (176: the last id sent kept as an id, not text; the queue made only
 * while the client falls behind) and its head and fields in a buffer of
 * their own (160); its packed header store, and the chain's state, the
 * seals' places and the moves that a late report may name, are the
 * worker's one copy for every stream with equal bytes (intern.c): 1,309 B
 * measured (1,565 before the chain's state, the seals' places and the
 * connection's parts went, 1,933 before the shared copies and the one
 * block, 3,315 before that). The chain's state kept in the response
 * (+120), the cold part (+1.2 KB), a parser (+160),
 * a header store of its own (+144), the stream and its subscription apart
 * as they were (+96), a read buffer (16 KiB) or the fields array sized for
 * the most a head may have (1.6 KB) left on each would fail the bound.
 */
static void test_eventsource_subscriber(void **state)
{
    size_t n = per_subscriber("GET /events HTTP/1.1\r\nHost: t\r\n"
                              "Accept: text/event-stream\r\n"
                              "Cache-Control: no-cache\r\n\r\n");

    (void)state;
    print_message("heap per subscriber: %zu B\n", n);
    assert_true(n > 0);
    assert_true(n <= 1400);
}

/*
 * Subscribers whose request does not say it wants a stream (curl, a
 * script): the head stays where it was read, and keeps that buffer for
 * the life of the stream, but a connection's first read buffer is small
 * (2 KiB, not 16): 6.8 KB measured when this test was written, 5.5 KB
 * once the cold part, the parser and the header store went.
 */
static void test_plain_subscriber(void **state)
{
    size_t n = per_subscriber("GET /events HTTP/1.1\r\nHost: t\r\n\r\n");

    (void)state;
    print_message("heap per subscriber (no Accept): %zu B\n", n);
    assert_true(n > 0);
    assert_true(n <= 6300);
}

/* What a waiting stream gave back must not change what late calls see. */
typedef struct late {
    int got;         /* messages the callback saw */
    char header[32]; /* latch_res_get_header's answer there */
    int after;       /* ERR_NEXT_AFTER_RESPONSE reports */
    int twice;       /* ERR_NEXT_TWICE reports */
    int failed;      /* latch_fail's return there */
} late;

static void on_violation(const latch_violation *v, void *data)
{
    late *l = data;

    if (v->code == LATCH_ERR_NEXT_AFTER_RESPONSE)
        l->after++;
    else if (v->code == LATCH_ERR_NEXT_TWICE)
        l->twice++;
}

static void on_late_message(latch_res *res, const latch_message *m, void *data)
{
    late *l = data;
    const char *h = latch_res_get_header(res, "X-Late");

    snprintf(l->header, sizeof(l->header), "%s", h ? h : "(null)");
    /* Moves of the handler call that subscribed, long after it returned
     * LATCH_DONE: each is refused as a move after the response because
     * that return is still known (the moves the stream kept); had it been
     * lost, they would read as ERR_NEXT_TWICE. */
    latch_next(latch_res_req(res));
    l->failed = latch_fail(latch_res_req(res), 500, "late");
    l->got++;
    /* Last: the test reads the above once this event arrived. */
    latch_sse_send(res, NULL, NULL, m->data);
}

static late the_late;

static int h_late(latch_req *req, latch_res *res, void *data)
{
    (void)req;
    (void)data;
    latch_res_set_header(res, "X-Late", "kept");
    if (latch_sse_start(res) != 0 ||
        latch_subscribe(res, "mem", on_late_message, &the_late) != 0)
        return latch_fail(req, 500, "subscribe failed");
    return LATCH_DONE;
}

static bool until_event(const char *buf, size_t len, void *arg)
{
    (void)len;
    (void)arg;
    return strstr(buf, "data: hello\n\n") != NULL;
}

/*
 * A stream that has waited (its cold part and header store given back)
 * still answers latch_res_get_header with what it sent, and late moves of
 * its handler are reported as they are on a response that kept all: the
 * handler's LATCH_DONE is known (from the moves the stream kept).
 */
static void test_late_calls_on_waiting_stream(void **state)
{
    th_server s;
    latch_app *app = latch_app_new();
    size_t len = 0;
    char *out;
    int fd;

    (void)state;
    memset(&the_late, 0, sizeof(the_late));
    assert_non_null(app);
    latch_app_on_violation(app, on_violation, &the_late);
    latch_get(app, "/late", h_late, NULL);
    th_server_start(&s, app);
    fd = open_stream(s.port, "GET /late HTTP/1.1\r\nHost: t\r\n"
                             "Accept: text/event-stream\r\n\r\n");
    th_wait_subscribers(app, "mem", 1);
    assert_int_equal(latch_publish(app, "mem", NULL, "hello", 5), 1);
    out = th_read(fd, &len, 5000, until_event, NULL);
    assert_non_null(strstr(out, "data: hello\n\n"));
    free(out);
    assert_int_equal(the_late.got, 1);
    assert_string_equal(the_late.header, "kept");
    assert_int_equal(the_late.after, 2);
    assert_int_equal(the_late.twice, 0);
    assert_true(the_late.failed < 0);
    close(fd);
    th_wait_subscribers(app, "mem", 0);
    th_server_stop(&s);
}

/* A stream whose only owner is a program's reference, let go late. */
typedef struct forgot {
    latch_res *_Atomic res; /* retained by the handler */
    _Atomic int reports;    /* ERR_NO_RESPONSE reports */
    char message[160];      /* the first one's message, and call */
    char call[32];
    int start_line;       /* where the handler started the stream */
    _Atomic int sent;     /* ERR_HTTP_HEADERS_SENT reports */
    char sealed_call[32]; /* the first one's seal */
    char sealed_file[256];
    int sealed_line;
} forgot;

static forgot the_forgot;

static void on_forgot_violation(const latch_violation *v, void *data)
{
    forgot *f = data;

    if (v->code == LATCH_ERR_HTTP_HEADERS_SENT &&
        atomic_fetch_add(&f->sent, 1) == 0) {
        snprintf(f->sealed_call, sizeof(f->sealed_call), "%s",
                 v->sealed_call ? v->sealed_call : "(null)");
        snprintf(f->sealed_file, sizeof(f->sealed_file), "%s",
                 v->sealed_at.file ? v->sealed_at.file : "(null)");
        f->sealed_line = v->sealed_at.line;
    }
    if (v->code != LATCH_ERR_NO_RESPONSE)
        return;
    if (atomic_load(&f->reports) == 0) {
        snprintf(f->message, sizeof(f->message), "%s",
                 v->message ? v->message : "(null)");
        snprintf(f->call, sizeof(f->call), "%s", v->call ? v->call : "(null)");
    }
    atomic_fetch_add(&f->reports, 1);
}

static int h_forgot(latch_req *req, latch_res *res, void *data)
{
    (void)data;
    the_forgot.start_line = __LINE__ + 1;
    if (latch_sse_start(res) != 0)
        return latch_fail(req, 500, "start failed");
    latch_res_retain(res);
    atomic_store(&the_forgot.res, res);
    return LATCH_DONE;
}

static void on_forgot_cancel(latch_req *req, int reason, void *data)
{
    (void)req;
    (void)reason;
    (void)data;
}

/* On the loop, long after the handler returned: a cancellation callback
 * when asked (which needs the cold part again), a header set too late,
 * then the reference goes. */
static void late_calls_then_release(latch_res *res, void *data)
{
    if (*(bool *)data)
        assert_int_equal(
            latch_req_on_cancel(latch_res_req(res), on_forgot_cancel, NULL), 0);
    assert_int_equal(latch_res_set_header(res, "X-Late", "1"),
                     LATCH_ERR_HTTP_HEADERS_SENT);
    latch_res_release(res);
}

/*
 * The chain's state and the seals' places of a stream that waited (its
 * cold part given back, those kept packed with the moves) are the same
 * when a late report needs them: a header set late names the head's seal
 * (latch_sse_start, at its line), and a stream whose last owner lets go
 * without ending it is reported as never ended, naming the handler's
 * return (LATCH_DONE, by name). Read from the packed copy, or (`retake`)
 * from the cold part a late call took back, into which that copy was
 * restored. Had either been lost, the reports would name no place and no
 * return ("handler", no message).
 */
static void forgotten_stream(bool retake)
{
    th_server s;
    latch_app *app = latch_app_new();
    latch_res *res;
    int fd;
    int64_t end;

    memset(&the_forgot, 0, sizeof(the_forgot));
    assert_non_null(app);
    latch_app_on_violation(app, on_forgot_violation, &the_forgot);
    latch_get(app, "/forgot", h_forgot, NULL);
    th_server_start(&s, app);
    fd = open_stream(s.port, "GET /forgot HTTP/1.1\r\nHost: t\r\n"
                             "Accept: text/event-stream\r\n\r\n");
    res = atomic_load(&the_forgot.res);
    assert_non_null(res);
    assert_int_equal(latch_res_post(res, late_calls_then_release, &retake), 0);
    end = th_now_ms() + 5000;
    while (atomic_load(&the_forgot.reports) == 0 && th_now_ms() < end)
        usleep(1000);
    assert_int_equal(atomic_load(&the_forgot.reports), 1);
    assert_string_equal(the_forgot.call, "LATCH_DONE");
    assert_string_equal(the_forgot.message,
                        "h_forgot returned LATCH_DONE and the response was "
                        "never ended");
    /* The late header names the head's seal, call and place. */
    assert_int_equal(atomic_load(&the_forgot.sent), 1);
    assert_string_equal(the_forgot.sealed_call, "latch_sse_start");
    assert_non_null(strstr(the_forgot.sealed_file, "test_sse_memory.c"));
    assert_int_equal(the_forgot.sealed_line, the_forgot.start_line);
    /* Its headers were out: the stream is cut, never left open. */
    assert_int_not_equal(th_wait_close(fd, 5000), TH_OPEN);
    close(fd);
    th_server_stop(&s);
}

static void test_late_report_on_waiting_stream(void **state)
{
    (void)state;
    forgotten_stream(false);
}

static void test_late_report_after_retake(void **state)
{
    (void)state;
    forgotten_stream(true);
}

/* GET /echo: the path, a query value, X-Echo and the number of fields,
 * each read from the request's head wherever it lives. */
static int h_echo(latch_req *req, latch_res *res, void *data)
{
    char body[256];
    const char *x = latch_req_header(req, "X-Echo");
    const char *q = latch_req_query(req, "q");
    int n;

    (void)data;
    latch_res_set_header(res, "X-Path", latch_req_path(req));
    n = snprintf(body, sizeof(body), "%s %s %s %d", latch_req_path(req),
                 q ? q : "-", x ? x : "-", latch_req_header_count(req));
    latch_res_send(res, body, (size_t)n);
    return LATCH_DONE;
}

/*
 * Requests whose heads move to a buffer of their own, pipelined in one
 * write with one whose head stays in the connection's buffer: each is
 * read whole, in order, from where it lives (the moved head's fields, the
 * shared buffer kept while unread bytes are in it).
 */
static void test_moved_heads_pipelined(void **state)
{
    static const char reqs[] =
        "GET /echo?q=1 HTTP/1.1\r\nHost: t\r\nAccept: text/event-stream\r\n"
        "X-Echo: one\r\n\r\n"
        "GET /echo?q=2 HTTP/1.1\r\nHost: t\r\nX-Echo: two\r\n\r\n"
        "GET /echo HTTP/1.1\r\nAccept: text/html, text/event-stream\r\n"
        "X-Echo: three\r\nHost: t\r\nX-Pad: p\r\n\r\n";
    th_server s;
    latch_app *app = latch_app_new();
    size_t len = 0;
    int n = 3, fd;
    char *out;
    th_resp *r;

    (void)state;
    assert_non_null(app);
    latch_get(app, "/echo", h_echo, NULL);
    th_server_start(&s, app);
    fd = th_connect(s.port);
    th_send(fd, reqs, sizeof(reqs) - 1);
    out = th_read(fd, &len, 5000, th_until_responses, &n);
    r = th_expect_responses(out, len, 3, NULL);
    assert_string_equal(r[0].body, "/echo 1 one 3");
    assert_string_equal(r[1].body, "/echo 2 two 2");
    assert_string_equal(r[2].body, "/echo - three 4");
    assert_non_null(strstr(r[2].head, "X-Path: /echo\r\n"));
    th_resp_free(r, 3);
    free(r);
    free(out);
    close(fd);
    th_server_stop(&s);
}

/* POST /len: the length of the body and X-Echo. */
static int h_len(latch_req *req, latch_res *res, void *data)
{
    char out[64];
    const void *body;
    size_t len = 0;
    const char *x = latch_req_header(req, "X-Echo");
    int n;

    (void)data;
    latch_req_body(req, &body, &len);
    n = snprintf(out, sizeof(out), "%zu %s", len, x ? x : "-");
    latch_res_send(res, out, (size_t)n);
    return LATCH_DONE;
}

/*
 * A fresh connection's first buffer is small; what does not fit moves to
 * a full-sized one: a 5 KiB head, then a 40 KiB body, then a small
 * request, all in one write before anything was read.
 */
static void test_first_buffer_outgrown(void **state)
{
    th_server s;
    latch_app *app = latch_app_new();
    size_t len = 0, off = 0, cap = 64 * 1024;
    char *reqs = malloc(cap), *out;
    int n = 3, fd, i;
    th_resp *r;

    (void)state;
    assert_non_null(app);
    assert_non_null(reqs);
    latch_get(app, "/echo", h_echo, NULL);
    latch_post(app, "/len", h_len, NULL);
    th_server_start(&s, app);
    off += (size_t)snprintf(reqs + off, cap - off,
                            "GET /echo?q=big HTTP/1.1\r\nHost: t\r\n"
                            "X-Big: ");
    for (i = 0; i < 5000; i++)
        reqs[off++] = 'a' + i % 26;
    off += (size_t)snprintf(reqs + off, cap - off,
                            "\r\nX-Echo: first\r\n\r\n"
                            "POST /len HTTP/1.1\r\nHost: t\r\n"
                            "X-Echo: second\r\nContent-Length: 40000\r\n\r\n");
    memset(reqs + off, 'b', 40000);
    off += 40000;
    off += (size_t)snprintf(reqs + off, cap - off,
                            "GET /echo?q=3 HTTP/1.1\r\nHost: t\r\n"
                            "X-Echo: third\r\n\r\n");
    fd = th_connect(s.port);
    th_send(fd, reqs, off);
    out = th_read(fd, &len, 5000, th_until_responses, &n);
    r = th_expect_responses(out, len, 3, NULL);
    assert_string_equal(r[0].body, "/echo big first 3");
    assert_string_equal(r[1].body, "40000 second");
    assert_string_equal(r[2].body, "/echo 3 third 2");
    th_resp_free(r, 3);
    free(r);
    free(out);
    free(reqs);
    close(fd);
    th_server_stop(&s);
}

/* GET /hi: a small answer. */
static int h_hi(latch_req *req, latch_res *res, void *data)
{
    (void)req;
    (void)data;
    return latch_res_send(res, "hi", 2);
}

/*
 * What an idle keep-alive connection holds once its response went out:
 * the connection object (576 B; its parser, 152 B, is the worker's while
 * no message is read) and nothing else: its read buffer and its
 * output buffer went back to the worker's lists (the output buffer, 256 B,
 * stayed with each connection before; the project's bar is 1 KiB of RSS
 * per idle connection, bench/run.sh idle-conn-bytes).
 */
static void test_idle_keepalive_connection(void **state)
{
    th_server s;
    latch_app *app = latch_app_new();
    int fds[NSUBS + 1], i, n = 1;
    size_t before = 0, after, len, per;
    char *out;

    (void)state;
    assert_non_null(app);
    latch_get(app, "/hi", h_hi, NULL);
    th_server_start(&s, app);
    for (i = 0; i <= NSUBS; i++) {
        fds[i] = th_connect(s.port);
        th_send_str(fds[i], "GET /hi HTTP/1.1\r\nHost: t\r\n\r\n");
        out = th_read(fds[i], &len, 5000, th_until_responses, &n);
        assert_non_null(strstr(out, "HTTP/1.1 200 OK\r\n"));
        free(out);
        if (i == 0)
            before = heap_in_use(); /* what the worker makes once */
    }
    after = heap_in_use();
    for (i = 0; i <= NSUBS; i++)
        close(fds[i]);
    th_server_stop(&s);
    per = after > before ? (after - before) / NSUBS : 0;
    print_message("heap per idle keep-alive connection: %zu B\n", per);
    assert_true(per > 0);
    assert_true(per <= 900);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_eventsource_subscriber),
        cmocka_unit_test(test_plain_subscriber),
        cmocka_unit_test(test_late_calls_on_waiting_stream),
        cmocka_unit_test(test_late_report_on_waiting_stream),
        cmocka_unit_test(test_late_report_after_retake),
        cmocka_unit_test(test_moved_heads_pipelined),
        cmocka_unit_test(test_first_buffer_outgrown),
        cmocka_unit_test(test_idle_keepalive_connection),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
