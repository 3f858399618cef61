/*
 * test_conn.c - the life of a connection on a real server: HTTP/1.0 with
 * and without keep-alive, a streamed body on 1.0 (delimited by the close)
 * and on 1.1 (chunked), Connection: close, pipelined requests answered in
 * order when a later one finishes first, clients that leave mid-request or
 * while their handler is pending (the late end is refused and reported),
 * a client FIN while a handler is pending (a disconnect), and many concurrent
 * keep-alive connections.
 *
 * Not here: parse errors and limits (test_framing.c, test_limits.c).
 */
#include "harness.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

/* ------------------------------------------------------------------ */
/* Shared state between the server thread and the test                  */
/* ------------------------------------------------------------------ */

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;

/* Waits (mu held) until *flag is nonzero or timeout_ms passed. */
static bool wait_flag(const int *flag, int timeout_ms)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += timeout_ms / 1000;
    ts.tv_nsec += (long)(timeout_ms % 1000) * 1000000;
    if (ts.tv_nsec >= 1000000000) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000;
    }
    while (!*flag)
        if (pthread_cond_timedwait(&cv, &mu, &ts) != 0)
            break;
    return *flag != 0;
}

static void set_flag(int *flag)
{
    pthread_mutex_lock(&mu);
    *flag = 1;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
}

/*
 * The test thread's side: wait without holding `mu` afterwards, and copy
 * shared state out under it, so that a failed assertion (a longjmp) never
 * leaves `mu` locked for the server's handlers.
 */
static bool await_flag(int *flag, int timeout_ms)
{
    bool ok;

    pthread_mutex_lock(&mu);
    ok = wait_flag(flag, timeout_ms);
    pthread_mutex_unlock(&mu);
    return ok;
}

/* Requests that reached a handler of /count. */
static atomic_int dispatched;

/* The pipelining test: completion order on the loop. */
typedef struct pipe_state {
    int seq;      /* loop thread only */
    int fast_seq; /* when /fast answered */
    int slow_seq; /* when /slow answered */
    int fast_seen;
    int slow_saw_fast; /* the slow worker saw /fast done before posting */
    pthread_t threads[8];
    int nthreads;
} pipe_state;
static pipe_state pipe_st;

/* The pending-handler tests. */
typedef struct pend_state {
    latch_res *res; /* retained by the handler */
    int handler_ran;
    int closed; /* on_close fired */
    int close_count;
    int late_done;
    int late_rc;
    int late_line;
    bool late_destroyed;
    bool late_aborted;
} pend_state;
static pend_state pend;

static th_violations viol;

static pend_state pend_copy(void)
{
    pend_state p;

    pthread_mutex_lock(&mu);
    p = pend;
    pthread_mutex_unlock(&mu);
    return p;
}

static pipe_state pipe_copy(void)
{
    pipe_state p;

    pthread_mutex_lock(&mu);
    p = pipe_st;
    pthread_mutex_unlock(&mu);
    return p;
}

/* ------------------------------------------------------------------ */
/* Handlers (server thread: no cmocka asserts here)                     */
/* ------------------------------------------------------------------ */

static int hello(latch_req *req, latch_res *res, void *data)
{
    (void)req;
    (void)data;
    latch_res_set_header(res, "Content-Type", "text/plain");
    latch_res_send(res, "Hello", 5);
    return LATCH_DONE;
}

static int echo_path(latch_req *req, latch_res *res, void *data)
{
    (void)data;
    latch_res_set_header(res, "Content-Type", "text/plain");
    latch_res_send(res, latch_req_path(req), strlen(latch_req_path(req)));
    return LATCH_DONE;
}

/* Two writes then an end without data: chunked on 1.1, delimited by the
 * close on 1.0. */
static int stream(latch_req *req, latch_res *res, void *data)
{
    (void)req;
    (void)data;
    latch_res_set_header(res, "Content-Type", "text/plain");
    latch_res_write(res, "abc", 3);
    latch_res_write(res, "def", 3);
    latch_res_end(res, NULL, 0);
    return LATCH_DONE;
}

/* The handler decides the connection ends after this response. */
static int bye(latch_req *req, latch_res *res, void *data)
{
    (void)req;
    (void)data;
    latch_res_set_header(res, "Connection", "close");
    latch_res_set_header(res, "Content-Type", "text/plain");
    latch_res_send(res, "bye", 3);
    return LATCH_DONE;
}

/* Declares 10 bytes and ends after 4: a bug latch reports, and whose
 * response it must leave visibly truncated (DESIGN.md). */
static int short_body(latch_req *req, latch_res *res, void *data)
{
    (void)req;
    (void)data;
    latch_res_set_header(res, "Content-Length", "10");
    latch_res_end(res, "abcd", 4);
    return LATCH_DONE;
}

static int count(latch_req *req, latch_res *res, void *data)
{
    (void)req;
    (void)data;
    atomic_fetch_add(&dispatched, 1);
    latch_res_send(res, "counted", 7);
    return LATCH_DONE;
}

static int fast(latch_req *req, latch_res *res, void *data)
{
    (void)req;
    (void)data;
    pipe_st.fast_seq = ++pipe_st.seq;
    latch_res_set_header(res, "Content-Type", "text/plain");
    latch_res_send(res, "fast", 4);
    set_flag(&pipe_st.fast_seen);
    return LATCH_DONE;
}

/* On the loop: the slow work is done. */
static void slow_done(latch_res *res, void *data)
{
    (void)data;
    pipe_st.slow_seq = ++pipe_st.seq;
    latch_res_set_header(res, "Content-Type", "text/plain");
    latch_res_end(res, "slow", 4);
    latch_res_release(res);
}

/* The slow work: waits until /fast has answered (at most 2 s), so the
 * later request surely finishes first, then hands the end to the loop. */
static void *slow_worker(void *arg)
{
    latch_res *res = arg;

    pthread_mutex_lock(&mu);
    pipe_st.slow_saw_fast = wait_flag(&pipe_st.fast_seen, 2000);
    pthread_mutex_unlock(&mu);
    latch_res_post(res, slow_done, NULL);
    return NULL;
}

static int slow(latch_req *req, latch_res *res, void *data)
{
    (void)req;
    (void)data;
    latch_res_retain(res);
    pthread_mutex_lock(&mu);
    if (pipe_st.nthreads < 8 &&
        pthread_create(&pipe_st.threads[pipe_st.nthreads], NULL, slow_worker,
                       res) == 0) {
        pipe_st.nthreads++;
        pthread_mutex_unlock(&mu);
        return LATCH_DONE;
    }
    pthread_mutex_unlock(&mu);
    latch_res_release(res);
    latch_res_send_status(res, 500);
    return LATCH_DONE;
}

static void pending_closed(latch_res *res, void *data)
{
    (void)res;
    (void)data;
    pthread_mutex_lock(&mu);
    pend.close_count++;
    pend.closed = 1;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
}

/* Keeps the response for the test thread, which ends it later through
 * latch_res_post (late_end). */
static int pending(latch_req *req, latch_res *res, void *data)
{
    (void)req;
    (void)data;
    latch_res_retain(res);
    latch_res_on_close(res, pending_closed, NULL);
    pthread_mutex_lock(&mu);
    pend.res = res;
    pend.handler_ran = 1;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
    return LATCH_DONE;
}

/* On the loop, posted by the test. */
static void late_end(latch_res *res, void *data)
{
    int line, rc;

    (void)data;
    line = __LINE__ + 1;
    rc = latch_res_end(res, "done", 4);
    pthread_mutex_lock(&mu);
    pend.late_line = line;
    pend.late_rc = rc;
    pend.late_destroyed = latch_res_destroyed(res);
    pend.late_aborted = latch_req_aborted(latch_res_req(res));
    pthread_mutex_unlock(&mu);
    latch_res_release(res);
    set_flag(&pend.late_done);
}

/* ------------------------------------------------------------------ */
/* Server                                                               */
/* ------------------------------------------------------------------ */

static th_server srv;

static int setup(void **state)
{
    latch_app *app = latch_app_new();

    (void)state;
    assert_non_null(app);
    th_record_violations(app, &viol);
    assert_int_equal(latch_get(app, "/hello", hello, NULL), 0);
    assert_int_equal(latch_get(app, "/echo/*", echo_path, NULL), 0);
    assert_int_equal(latch_get(app, "/stream", stream, NULL), 0);
    assert_int_equal(latch_all(app, "/count", count, NULL), 0);
    assert_int_equal(latch_get(app, "/bye", bye, NULL), 0);
    assert_int_equal(latch_get(app, "/short", short_body, NULL), 0);
    assert_int_equal(latch_get(app, "/slow", slow, NULL), 0);
    assert_int_equal(latch_get(app, "/fast", fast, NULL), 0);
    assert_int_equal(latch_get(app, "/pending", pending, NULL), 0);
    th_server_start(&srv, app);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    assert_int_equal(th_server_stop(&srv), 0);
    return 0;
}

/* ------------------------------------------------------------------ */
/* Helpers                                                              */
/* ------------------------------------------------------------------ */

#define GOOD "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n"

static const char hello_close[] = "HTTP/1.1 200 OK\r\n"
                                  "Content-Type: text/plain\r\n"
                                  "Content-Length: 5\r\n"
                                  "Date: <d>\r\n"
                                  "Connection: close\r\n"
                                  "\r\n"
                                  "Hello";
static const char hello_keep[] = "HTTP/1.1 200 OK\r\n"
                                 "Content-Type: text/plain\r\n"
                                 "Content-Length: 5\r\n"
                                 "Date: <d>\r\n"
                                 "Connection: keep-alive\r\n"
                                 "Keep-Alive: timeout=5\r\n"
                                 "\r\n"
                                 "Hello";

/* Sends req on a fresh connection, reads to the server's FIN, and asserts
 * the normalized bytes are `want` (one response). */
static void expect_then_fin(const char *req, const char *want)
{
    int fd = th_connect(srv.port);
    size_t len;
    char *out, *norm;
    th_resp *r;

    th_send_str(fd, req);
    out = th_read(fd, &len, 5000, NULL, NULL);
    assert_int_equal(th_last_end(), TH_EOF);
    r = th_expect_responses(out, len, 1, NULL);
    norm = th_normalize(out, len);
    assert_string_equal(norm, want);
    th_resp_free(r, 1);
    free(r);
    free(norm);
    free(out);
    close(fd);
}

/* Reads `n` responses on fd and asserts the normalized bytes. */
static void expect_on(int fd, int n, const char *want)
{
    size_t len;
    char *out = th_read(fd, &len, 5000, th_until_responses, &n);
    char *norm = th_normalize(out, len);
    th_resp *r = th_expect_responses(out, len, n, NULL);

    assert_int_equal(th_last_end(), TH_OPEN);
    assert_string_equal(norm, want);
    th_resp_free(r, n);
    free(r);
    free(norm);
    free(out);
}

/* ------------------------------------------------------------------ */
/* HTTP/1.0 and Connection: close                                       */
/* ------------------------------------------------------------------ */

/* 1.0 without keep-alive: the response, then FIN; the request pipelined
 * after it is never answered. */
static void test_http10_closes(void **state)
{
    (void)state;
    expect_then_fin("GET /hello HTTP/1.0\r\n\r\n" GOOD, hello_close);
}

static void test_http10_keep_alive_stays_open(void **state)
{
    int fd = th_connect(srv.port);
    char two[sizeof(hello_keep) * 2];

    (void)state;
    th_send_str(fd, "GET /hello HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    expect_on(fd, 1, hello_keep);
    /* Still open: the next request, and two pipelined, are answered. */
    th_send_str(fd, "GET /hello HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n");
    expect_on(fd, 1, hello_keep);
    th_send_str(fd, "GET /hello HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
                    "GET /hello HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    snprintf(two, sizeof(two), "%s%s", hello_keep, hello_keep);
    expect_on(fd, 2, two);
    close(fd);
}

/* A 1.0 client gets no chunking: the body runs to the close, and the
 * request pipelined after it is never answered. */
static void expect_close_delimited(const char *req)
{
    static const char want[] = "HTTP/1.1 200 OK\r\n"
                               "Content-Type: text/plain\r\n"
                               "Date: <d>\r\n"
                               "Connection: close\r\n"
                               "\r\n"
                               "abcdef";
    int fd = th_connect(srv.port);
    size_t len;
    char *out, *norm;
    th_resp *r;

    th_send_str(fd, req);
    out = th_read(fd, &len, 5000, NULL, NULL);
    assert_int_equal(th_last_end(), TH_EOF);
    r = th_expect_responses(out, len, 1, NULL);
    assert_true(r[0].close_delimited);
    assert_false(r[0].chunked);
    norm = th_normalize(out, len);
    assert_string_equal(norm, want);
    assert_string_equal(r[0].body, "abcdef");
    th_resp_free(r, 1);
    free(r);
    free(norm);
    free(out);
    close(fd);
}

static void test_http10_streamed_body_close_delimited(void **state)
{
    (void)state;
    expect_close_delimited("GET /stream HTTP/1.0\r\n\r\n" GOOD);
}

/* Keep-alive asked, but without a length the connection cannot be kept:
 * the body is delimited by the close all the same, and the request
 * pipelined after it must not be answered (its bytes would become part of
 * the body). */
static void test_http10_keep_alive_streamed_body_close_delimited(void **state)
{
    (void)state;
    expect_close_delimited(
        "GET /stream HTTP/1.0\r\nConnection: keep-alive\r\n\r\n" GOOD);
}

static void test_http11_streamed_body_chunked(void **state)
{
    static const char want[] = "HTTP/1.1 200 OK\r\n"
                               "Content-Type: text/plain\r\n"
                               "Date: <d>\r\n"
                               "Connection: keep-alive\r\n"
                               "Keep-Alive: timeout=5\r\n"
                               "Transfer-Encoding: chunked\r\n"
                               "\r\n"
                               "3\r\nabc\r\n3\r\ndef\r\n0\r\n\r\n";
    int fd = th_connect(srv.port);

    (void)state;
    th_send_str(fd, "GET /stream HTTP/1.1\r\nHost: x\r\n\r\n");
    expect_on(fd, 1, want);
    th_send_str(fd, GOOD);
    expect_on(fd, 1, hello_keep);
    close(fd);
}

/* Connection: close on 1.1: said back, then FIN; what follows is never
 * answered. */
static void test_http11_connection_close(void **state)
{
    (void)state;
    expect_then_fin("GET /hello HTTP/1.1\r\nHost: x\r\n"
                    "Connection: close\r\n\r\n" GOOD GOOD,
                    hello_close);
    /* The token is case-insensitive and may sit in a list. */
    expect_then_fin("GET /hello HTTP/1.1\r\nHost: x\r\n"
                    "Connection: foo, CLOSE\r\n\r\n" GOOD,
                    hello_close);
}

/* A handler that answers with Connection: close ends the connection
 * there: the request pipelined after it is not answered (the client was
 * told the connection closes, and it will resend it elsewhere). */
static void test_handler_connection_close_pipelined(void **state)
{
    static const char want[] = "HTTP/1.1 200 OK\r\n"
                               "Connection: close\r\n"
                               "Content-Type: text/plain\r\n"
                               "Content-Length: 3\r\n"
                               "Date: <d>\r\n"
                               "\r\n"
                               "bye";

    (void)state;
    expect_then_fin("GET /bye HTTP/1.1\r\nHost: x\r\n\r\n" GOOD, want);
}

/* A response ended short of its Content-Length closes the connection
 * right after its last byte: the client sees a truncated body, and the
 * response to the request pipelined behind it must not be sent (its bytes
 * would complete the truncated body and desynchronize the client). */
static void test_short_body_closes_before_pipelined(void **state)
{
    /* The head went out before the body fell short, so it may say
     * keep-alive; either way nothing may follow "abcd". */
    static const char want_ka[] = "HTTP/1.1 200 OK\r\n"
                                  "Content-Length: 10\r\n"
                                  "Date: <d>\r\n"
                                  "Connection: keep-alive\r\n"
                                  "Keep-Alive: timeout=5\r\n"
                                  "\r\n"
                                  "abcd";
    static const char want_close[] = "HTTP/1.1 200 OK\r\n"
                                     "Content-Length: 10\r\n"
                                     "Date: <d>\r\n"
                                     "Connection: close\r\n"
                                     "\r\n"
                                     "abcd";
    int fd = th_connect(srv.port), before = th_violation_count(&viol);
    size_t len;
    char *out, *norm;
    th_resp r[1];
    const char *err;

    (void)state;
    th_send_str(fd, "GET /short HTTP/1.1\r\nHost: x\r\n\r\n" GOOD);
    out = th_read(fd, &len, 5000, NULL, NULL);
    assert_int_equal(th_last_end(), TH_EOF);
    /* The wire checker sees one response whose body never completes. */
    if (th_wire_parse(out, len, NULL, r, 1, false, &err) != 0)
        fail_msg("the truncated body was completed by later bytes:\n%s", out);
    norm = th_normalize(out, len);
    if (strcmp(norm, want_close) != 0)
        assert_string_equal(norm, want_ka);
    assert_int_equal(th_violation_count(&viol), before + 1);
    assert_int_equal(viol.codes[before],
                     LATCH_ERR_HTTP_CONTENT_LENGTH_MISMATCH);
    free(norm);
    free(out);
    close(fd);
}

/* ------------------------------------------------------------------ */
/* Pipelining: answered in request order                                */
/* ------------------------------------------------------------------ */

static void test_pipeline_later_finishes_first(void **state)
{
    static const char req[] = "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n"
                              "GET /fast HTTP/1.1\r\nHost: x\r\n\r\n"
                              "GET /echo/third HTTP/1.1\r\nHost: x\r\n\r\n";
    int fd = th_connect(srv.port), three = 3, i;
    size_t len;
    char *out;
    th_resp *r;
    pipe_state ps;

    (void)state;
    pthread_mutex_lock(&mu);
    memset(&pipe_st, 0, sizeof(pipe_st));
    pthread_mutex_unlock(&mu);
    th_send(fd, req, sizeof(req) - 1);
    out = th_read(fd, &len, 5000, th_until_responses, &three);
    assert_int_equal(th_last_end(), TH_OPEN);
    r = th_expect_responses(out, len, 3, NULL);
    for (i = 0; i < 3; i++)
        assert_int_equal(r[i].status, 200);
    assert_string_equal(r[0].body, "slow");
    assert_string_equal(r[1].body, "fast");
    assert_string_equal(r[2].body, "/echo/third");
    ps = pipe_copy();
    assert_int_equal(ps.nthreads, 1);
    pthread_join(ps.threads[0], NULL);
    /* The later request really finished first. */
    assert_true(ps.slow_saw_fast);
    assert_true(ps.fast_seq > 0);
    assert_true(ps.fast_seq < ps.slow_seq);
    th_resp_free(r, 3);
    free(r);
    free(out);
    /* The connection goes on serving. */
    th_send_str(fd, GOOD);
    expect_on(fd, 1, hello_keep);
    close(fd);
}

/* ------------------------------------------------------------------ */
/* Clients that leave                                                   */
/* ------------------------------------------------------------------ */

/* Sends `req`, half-closes, and expects the server to close with nothing
 * written and nothing dispatched. */
static void expect_dropped_at_eof(const char *req)
{
    int fd = th_connect(srv.port);
    size_t len;
    char *out;

    atomic_store(&dispatched, 0);
    th_send_str(fd, req);
    shutdown(fd, SHUT_WR);
    out = th_read(fd, &len, 5000, NULL, NULL);
    assert_int_equal(th_last_end(), TH_EOF);
    if (len != 0)
        fail_msg("an incomplete request was answered:\n%s", out);
    assert_int_equal(atomic_load(&dispatched), 0);
    free(out);
    close(fd);
    th_expect_alive(srv.port, "/hello", "Hello");
    assert_int_equal(atomic_load(&dispatched), 0);
}

static void test_disconnect_partial_head(void **state)
{
    (void)state;
    expect_dropped_at_eof("GET /count HTTP/1.1\r\nHost: x\r\n");
    expect_dropped_at_eof("GET /count HTTP/1.1\r\nHost: x\r\n\r");
    expect_dropped_at_eof("GET /cou");
}

static void test_disconnect_partial_body(void **state)
{
    (void)state;
    expect_dropped_at_eof("POST /count HTTP/1.1\r\nHost: x\r\n"
                          "Content-Length: 10\r\n\r\nabc");
    expect_dropped_at_eof("POST /count HTTP/1.1\r\nHost: x\r\n"
                          "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n");
    expect_dropped_at_eof("POST /count HTTP/1.1\r\nHost: x\r\n"
                          "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"
                          "0\r\n");
}

/* A complete request, then an incomplete one, then EOF: the first is
 * answered, the second never dispatched. */
static void test_disconnect_after_complete_request(void **state)
{
    int fd = th_connect(srv.port);
    size_t len;
    char *out;
    th_resp *r;

    (void)state;
    atomic_store(&dispatched, 0);
    th_send_str(fd, "GET /count HTTP/1.1\r\nHost: x\r\n\r\n"
                    "POST /count HTTP/1.1\r\nHost: x\r\n"
                    "Content-Length: 10\r\n\r\nabc");
    shutdown(fd, SHUT_WR);
    out = th_read(fd, &len, 5000, NULL, NULL);
    assert_int_equal(th_last_end(), TH_EOF);
    r = th_expect_responses(out, len, 1, NULL);
    assert_string_equal(r[0].body, "counted");
    assert_int_equal(atomic_load(&dispatched), 1);
    th_resp_free(r, 1);
    free(r);
    free(out);
    close(fd);
}

/* The same with a reset instead of a FIN: nothing dispatched, no harm. */
static void test_reset_mid_request(void **state)
{
    int other = th_connect(srv.port);
    static const char *const reqs[] = {
        "GET /count HTTP/1.1\r\nHost: x\r\n",
        "POST /count HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc",
        "POST /count HTTP/1.1\r\nHost: x\r\n"
        "Transfer-Encoding: chunked\r\n\r\n5\r\nhel",
    };
    size_t i;

    (void)state;
    atomic_store(&dispatched, 0);
    /* Another client, busy before and after on its own connection. */
    th_send_str(other, GOOD);
    expect_on(other, 1, hello_keep);
    for (i = 0; i < 3; i++) {
        int fd = th_connect(srv.port);
        th_send_str(fd, reqs[i]);
        th_close_reset(fd);
    }
    th_send_str(other, GOOD);
    expect_on(other, 1, hello_keep);
    th_expect_alive(srv.port, "/hello", "Hello");
    assert_int_equal(atomic_load(&dispatched), 0);
    close(other);
}

/* Starts GET /pending on fd and waits until its handler holds the
 * response. */
static void start_pending(int fd)
{
    pthread_mutex_lock(&mu);
    memset(&pend, 0, sizeof(pend));
    pthread_mutex_unlock(&mu);
    th_send_str(fd, "GET /pending HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_true(await_flag(&pend.handler_ran, 5000));
    assert_non_null(pend_copy().res);
}

/* The client resets while its handler is pending: the response is
 * destroyed (on_close fires once), and the late end is refused with
 * ERR_STREAM_DESTROYED and reported with both places. */
static void test_disconnect_while_pending(void **state)
{
    int fd = th_connect(srv.port), before = th_violation_count(&viol), i;
    int found = -1, other = th_connect(srv.port);
    pend_state pc;

    (void)state;
    start_pending(fd);
    th_send_str(other, GOOD);
    expect_on(other, 1, hello_keep);
    th_close_reset(fd);
    assert_true(await_flag(&pend.closed, 5000));
    /* The other connection is unaffected. */
    th_send_str(other, GOOD);
    expect_on(other, 1, hello_keep);
    close(other);
    /* From this (foreign) thread: runs late_end on the loop. */
    assert_int_equal(latch_res_post(pend_copy().res, late_end, NULL), 0);
    assert_true(await_flag(&pend.late_done, 5000));
    pc = pend_copy();
    assert_int_equal(pc.late_rc, LATCH_ERR_STREAM_DESTROYED);
    assert_true(pc.late_destroyed);
    assert_true(pc.late_aborted);
    assert_int_equal(pc.close_count, 1);
    assert_int_equal(th_violation_count(&viol), before + 1);
    for (i = before; i < th_violation_count(&viol) && i < 64; i++)
        if (viol.codes[i] == LATCH_ERR_STREAM_DESTROYED)
            found = i;
    assert_true(found >= 0);
    assert_non_null(strstr(viol.at_file[found], "test_conn.c"));
    assert_int_equal(viol.at_line[found], pc.late_line);
    assert_string_equal(viol.sealed_call[found], "client disconnect");
    th_expect_alive(srv.port, "/hello", "Hello");
}

/* A client that sends FIN while its handler is pending has gone, as for
 * Node's server (httpAllowHalfOpen false): the response is destroyed and
 * the request cancelled (on_close once), the late end is refused with
 * ERR_STREAM_DESTROYED sealed by "client disconnect", nothing is written,
 * and the server closes its side. */
static void test_fin_while_pending_is_a_disconnect(void **state)
{
    int fd = th_connect(srv.port), before = th_violation_count(&viol);
    size_t len;
    char *out;
    pend_state pc;

    (void)state;
    start_pending(fd);
    shutdown(fd, SHUT_WR);
    assert_true(await_flag(&pend.closed, 5000));
    assert_int_equal(latch_res_post(pend_copy().res, late_end, NULL), 0);
    assert_true(await_flag(&pend.late_done, 5000));
    pc = pend_copy();
    assert_int_equal(pc.late_rc, LATCH_ERR_STREAM_DESTROYED);
    assert_true(pc.late_destroyed);
    assert_true(pc.late_aborted);
    assert_int_equal(pc.close_count, 1);
    assert_int_equal(th_violation_count(&viol), before + 1);
    assert_string_equal(viol.sealed_call[before], "client disconnect");
    out = th_read(fd, &len, 5000, NULL, NULL);
    assert_int_equal(th_last_end(), TH_EOF);
    assert_int_equal(len, 0);
    free(out);
    close(fd);
    th_expect_alive(srv.port, "/hello", "Hello");
}

/* ------------------------------------------------------------------ */
/* Many connections                                                     */
/* ------------------------------------------------------------------ */

#define NCONN 200
#define NREQ 5

typedef struct client {
    int fd;
    int done; /* responses checked */
    char *buf;
    size_t len, cap;
} client;

static void send_req(client *c, int i)
{
    char req[128];

    snprintf(req, sizeof(req), "GET /echo/%d/%d HTTP/1.1\r\nHost: x\r\n\r\n", i,
             c->done);
    th_send_str(c->fd, req);
}

/* Reads what is there; when a whole response is in, checks it and sends
 * the next request. Returns true when this client is finished. */
static bool client_step(client *c, int i)
{
    char want[64];
    const char *err;
    th_resp r[1];
    ssize_t n;
    int got;

    if (c->len == c->cap) {
        c->cap = c->cap ? c->cap * 2 : 1024;
        c->buf = realloc(c->buf, c->cap + 1);
        assert_non_null(c->buf);
    }
    n = recv(c->fd, c->buf + c->len, c->cap - c->len, MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return false;
    if (n <= 0)
        fail_msg("connection %d ended after %d responses", i, c->done);
    c->len += (size_t)n;
    c->buf[c->len] = '\0';
    got = th_wire_parse(c->buf, c->len, NULL, r, 1, false, &err);
    if (got < 0)
        fail_msg("connection %d: %s", i, err);
    if (got == 0)
        return false;
    th_resp_free(r, 1);
    /* Exactly one response, and the right one. */
    {
        th_resp *x = th_expect_responses(c->buf, c->len, 1, NULL);
        snprintf(want, sizeof(want), "/echo/%d/%d", i, c->done);
        assert_int_equal(x[0].status, 200);
        assert_string_equal(x[0].body, want);
        th_resp_free(x, 1);
        free(x);
    }
    c->len = 0;
    if (++c->done == NREQ)
        return true;
    send_req(c, i);
    return false;
}

static void test_many_concurrent_connections(void **state)
{
    static client cl[NCONN];
    static struct pollfd pfd[NCONN];
    int64_t deadline = th_now_ms() + 30000;
    int i, left = NCONN;

    (void)state;
    memset(cl, 0, sizeof(cl));
    /* Every connection first, then the requests: over TLS under ASan 200
     * handshakes can take longer than the keep-alive timeout (5 s), which
     * would close the first connections while they wait between their
     * first and second requests. */
    for (i = 0; i < NCONN; i++)
        cl[i].fd = th_connect(srv.port);
    for (i = 0; i < NCONN; i++)
        send_req(&cl[i], i);
    while (left > 0) {
        int64_t now = th_now_ms();
        int r;
        if (now >= deadline)
            fail_msg("%d connection(s) not done in time", left);
        for (i = 0; i < NCONN; i++) {
            pfd[i].fd = cl[i].done == NREQ ? -1 : cl[i].fd;
            pfd[i].events = POLLIN;
            pfd[i].revents = 0;
        }
        r = poll(pfd, NCONN, (int)(deadline - now));
        if (r < 0 && errno == EINTR)
            continue;
        assert_true(r >= 0);
        for (i = 0; i < NCONN; i++)
            if (pfd[i].revents != 0 && client_step(&cl[i], i))
                left--;
    }
    for (i = 0; i < NCONN; i++) {
        assert_int_equal(cl[i].done, NREQ);
        close(cl[i].fd);
        free(cl[i].buf);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_http10_closes),
        cmocka_unit_test(test_http10_keep_alive_stays_open),
        cmocka_unit_test(test_http10_streamed_body_close_delimited),
        cmocka_unit_test(test_http10_keep_alive_streamed_body_close_delimited),
        cmocka_unit_test(test_http11_streamed_body_chunked),
        cmocka_unit_test(test_http11_connection_close),
        cmocka_unit_test(test_handler_connection_close_pipelined),
        cmocka_unit_test(test_short_body_closes_before_pipelined),
        cmocka_unit_test(test_pipeline_later_finishes_first),
        cmocka_unit_test(test_disconnect_partial_head),
        cmocka_unit_test(test_disconnect_partial_body),
        cmocka_unit_test(test_disconnect_after_complete_request),
        cmocka_unit_test(test_reset_mid_request),
        cmocka_unit_test(test_disconnect_while_pending),
        cmocka_unit_test(test_fin_while_pending_is_a_disconnect),
        cmocka_unit_test(test_many_concurrent_connections),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
