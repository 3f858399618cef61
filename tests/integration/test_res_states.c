/*
 * test_res_states.c - the response state machine of DESIGN.md, cell by
 * cell, on a real server: each call {set/append/remove header, write_head,
 * status, write, end with data, end without data, send, json, redirect,
 * send_status} in each state {FRESH, HEADERS_SENT after write_head and
 * after a write, ENDED in the same handler, FINISHED as a tombstone called
 * from a timer of the next keep-alive request, DESTROYED by
 * latch_res_destroy and by a client reset}. Each cell asserts the return
 * code, the one report with both places (offending call and sealing call),
 * and the exact bytes on the wire (nothing from a refused call).
 *
 * Then what latch does beyond Node (Content-Length enforced, CR/LF in
 * headers refused, status after the headers reported, no response at all
 * reported and answered 500), the violation policies (COUNT, per-site
 * counters, ABORT under LATCH_STRICT=1 in a forked server), the lifetime
 * of a response (on_finish / on_close exactly once, tombstones that never
 * touch the connection, backpressure and on_drain) and threads
 * (ERR_WRONG_THREAD, latch_res_post).
 *
 * Not here: Node's own cases with their wire bytes (test_res_node.c), the
 * randomized load (test_res_stress.c).
 */
/* Where the calls under test are made: reports must name this file. */
static const char test_file[] = __FILE__;
#include "res_probe.h"

static void on_finish_count(latch_res *res, void *data)
{
    (void)res;
    (void)data;
    bump(K_FINISH);
}

static void on_close_count(latch_res *res, void *data)
{
    (void)res;
    (void)data;
    bump(K_CLOSE);
}

static void check_destroyed_pattern(const char *msg)
{
    static const char tail[] = " after a stream was destroyed";
    size_t n = strlen(msg), t = sizeof(tail) - 1;

    if (strncmp(msg, "Cannot call ", 12) != 0 || n <= 12 + t ||
        strcmp(msg + n - t, tail) != 0)
        fail_msg("not Node's ERR_STREAM_DESTROYED message: \"%s\"", msg);
}

/* ------------------------------------------------------------------ */
/* The cells                                                            */
/* ------------------------------------------------------------------ */

enum {
    C_SET,
    C_APPEND,
    C_REMOVE,
    C_WRITE_HEAD,
    C_STATUS,
    C_WRITE,
    C_END_DATA,
    C_END_EMPTY,
    C_SEND,
    C_JSON,
    C_REDIRECT,
    C_SEND_STATUS,
    C_COUNT
};

enum {
    S_FRESH,
    S_HS_WRITE_HEAD, /* HEADERS_SENT by write_head */
    S_HS_WRITE,      /* HEADERS_SENT by a write */
    S_ENDED,         /* end in the same handler */
    S_TOMB,          /* FINISHED, retained, called from a later timer */
    S_DESTROYED,     /* latch_res_destroy */
    S_DISCONNECT,    /* DESTROYED by a client reset, called from a post */
    S_COUNT
};

static const char *const call_name[C_COUNT] = {
    "set_header", "append_header", "remove_header", "write_head",
    "status",     "write",         "end_data",      "end_empty",
    "send",       "json",          "redirect",      "send_status",
};

static const char *const call_api[C_COUNT] = {
    "latch_res_set_header",    "latch_res_append_header",
    "latch_res_remove_header", "latch_res_write_head",
    "latch_res_status",        "latch_res_write",
    "latch_res_end",           "latch_res_end",
    "latch_res_send",          "latch_res_json",
    "latch_res_redirect",      "latch_res_send_status",
};

static const char *const state_name[S_COUNT] = {
    "FRESH",
    "HEADERS_SENT(write_head)",
    "HEADERS_SENT(write)",
    "ENDED",
    "FINISHED(tombstone)",
    "DESTROYED(destroy)",
    "DESTROYED(client reset)",
};

typedef struct cell {
    int state;
    int call;
} cell;

/* Makes call `call` on res; *line is the line of the call. */
static int do_call(latch_res *res, int call, int *line)
{
    /* One call per line, after the line that records it: clang-format
     * would join a case label with its statements. */
    /* clang-format off */
    switch (call) {
    case C_SET:
        *line = __LINE__ + 1;
        return latch_res_set_header(res, "X-Late", "1");
    case C_APPEND:
        *line = __LINE__ + 1;
        return latch_res_append_header(res, "X-Late", "1");
    case C_REMOVE:
        *line = __LINE__ + 1;
        return latch_res_remove_header(res, "X-Pre");
    case C_WRITE_HEAD:
        *line = __LINE__ + 1;
        return latch_res_write_head(res, 201);
    case C_STATUS:
        *line = __LINE__ + 1;
        return latch_res_status(res, 201);
    case C_WRITE:
        *line = __LINE__ + 1;
        return latch_res_write(res, "late", 4);
    case C_END_DATA:
        *line = __LINE__ + 1;
        return latch_res_end(res, "late", 4);
    case C_END_EMPTY:
        *line = __LINE__ + 1;
        return latch_res_end(res, NULL, 0);
    case C_SEND:
        *line = __LINE__ + 1;
        return latch_res_send(res, "late", 4);
    case C_JSON:
        *line = __LINE__ + 1;
        return latch_res_json(res, "{\"late\":1}");
    case C_REDIRECT:
        *line = __LINE__ + 1;
        return latch_res_redirect(res, 302, "/else");
    case C_SEND_STATUS:
        *line = __LINE__ + 1;
        return latch_res_send_status(res, 404);
    }
    /* clang-format on */
    return -1;
}

static bool is_header_kind(int call)
{
    return call <= C_STATUS || call >= C_SEND;
}

/* The return code DESIGN.md's table gives. */
static int expected_rc(int state, int call)
{
    switch (state) {
    case S_FRESH: return call == C_WRITE ? 1 : 0;
    case S_HS_WRITE_HEAD:
    case S_HS_WRITE:
        if (is_header_kind(call))
            return LATCH_ERR_HTTP_HEADERS_SENT;
        return call == C_WRITE ? 1 : 0;
    case S_ENDED:
    case S_TOMB:
        if (is_header_kind(call))
            return LATCH_ERR_HTTP_HEADERS_SENT;
        return call == C_END_EMPTY ? 0 : LATCH_ERR_STREAM_WRITE_AFTER_END;
    default: return LATCH_ERR_STREAM_DESTROYED;
    }
}

/* The exact message of the report. */
static void check_message(const th_vrec *v, int code, int call)
{
    switch (code) {
    case LATCH_ERR_HTTP_HEADERS_SENT:
        switch (call) {
        case C_REMOVE:
            assert_string_equal(
                v->message,
                "Cannot remove headers after they are sent to the client");
            break;
        case C_APPEND:
            assert_string_equal(
                v->message,
                "Cannot append headers after they are sent to the client");
            break;
        case C_WRITE_HEAD:
            assert_string_equal(
                v->message,
                "Cannot write headers after they are sent to the client");
            break;
        case C_STATUS: check_headers_sent_pattern(v->message); break;
        default:
            /* set_header, and the senders, which set headers (Express). */
            assert_string_equal(
                v->message,
                "Cannot set headers after they are sent to the client");
        }
        break;
    case LATCH_ERR_STREAM_WRITE_AFTER_END:
        assert_string_equal(v->message, "write after end");
        break;
    case LATCH_ERR_STREAM_DESTROYED:
        if (call == C_WRITE)
            assert_string_equal(
                v->message, "Cannot call write after a stream was destroyed");
        else if (call == C_END_DATA || call == C_END_EMPTY)
            assert_string_equal(v->message,
                                "Cannot call end after a stream was destroyed");
        else
            check_destroyed_pattern(v->message);
        break;
    default: fail_msg("unexpected code %d", code);
    }
}

/* The response to the cell's (first) request, normalized. */
static void expected_wire(const cell *c, char *out, size_t cap)
{
    static const char *const fresh[C_COUNT] = {
        [C_SET] = "HTTP/1.1 200 OK\r\nX-Pre: p\r\nX-Late: 1\r\n" KA
                  "Content-Length: 0\r\n\r\n",
        [C_APPEND] = "HTTP/1.1 200 OK\r\nX-Pre: p\r\nX-Late: 1\r\n" KA
                     "Content-Length: 0\r\n\r\n",
        [C_REMOVE] = "HTTP/1.1 200 OK\r\n" KA "Content-Length: 0\r\n\r\n",
        [C_WRITE_HEAD] = "HTTP/1.1 201 Created\r\nX-Pre: p\r\n" KA
                         "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        [C_STATUS] = "HTTP/1.1 201 Created\r\nX-Pre: p\r\n" KA
                     "Content-Length: 0\r\n\r\n",
        [C_WRITE] = "HTTP/1.1 200 OK\r\nX-Pre: p\r\n" KA
                    "Transfer-Encoding: chunked\r\n\r\n4\r\nlate\r\n0\r\n\r\n",
        [C_END_DATA] = "HTTP/1.1 200 OK\r\nX-Pre: p\r\n" KA
                       "Content-Length: 4\r\n\r\nlate",
        [C_END_EMPTY] =
            "HTTP/1.1 200 OK\r\nX-Pre: p\r\n" KA "Content-Length: 0\r\n\r\n",
        [C_SEND] = "HTTP/1.1 200 OK\r\nX-Pre: p\r\n"
                   "Content-Type: text/html; charset=utf-8\r\n"
                   "Content-Length: 4\r\n" KA "\r\nlate",
        [C_JSON] = "HTTP/1.1 200 OK\r\nX-Pre: p\r\n"
                   "Content-Type: application/json; charset=utf-8\r\n"
                   "Content-Length: 10\r\n" KA "\r\n{\"late\":1}",
        [C_REDIRECT] =
            "HTTP/1.1 302 Found\r\nX-Pre: p\r\nLocation: /else\r\n"
            "Vary: Accept\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n"
            "Content-Length: 27\r\n" KA "\r\nFound. Redirecting to /else",
        [C_SEND_STATUS] = "HTTP/1.1 404 Not Found\r\nX-Pre: p\r\n"
                          "Content-Type: text/plain; charset=utf-8\r\n"
                          "Content-Length: 9\r\n" KA "\r\nNot Found",
    };
    bool late = c->call == C_WRITE || c->call == C_END_DATA;

    switch (c->state) {
    case S_FRESH: snprintf(out, cap, "%s", fresh[c->call]); break;
    case S_HS_WRITE_HEAD:
    case S_HS_WRITE:
        snprintf(out, cap,
                 "HTTP/1.1 200 OK\r\nX-Pre: p\r\n" KA
                 "Transfer-Encoding: chunked\r\n\r\n%s%s0\r\n\r\n",
                 c->state == S_HS_WRITE ? "1\r\na\r\n" : "",
                 late ? "4\r\nlate\r\n" : "");
        break;
    case S_ENDED:
    case S_TOMB:
        snprintf(out, cap,
                 "HTTP/1.1 200 OK\r\nX-Pre: p\r\n" KA
                 "Content-Length: 4\r\n\r\ndone");
        break;
    default: out[0] = '\0';
    }
}

/* Request 2 of the tombstone cells, answered after the late call. */
static const char two_bytes[] =
    "HTTP/1.1 200 OK\r\nX-Two: 2\r\n" KA "Content-Length: 3\r\n\r\ntwo";

/* The tombstone's late call, from a timer of request 2 (on the same
 * connection): request 1's response is FINISHED and only retained. */
static void tomb_fire(latch_res *two, void *data)
{
    const cell *c = data;
    latch_res *h = held_res();
    int line = 0, rc;

    put_note(T_TOMB, h, latch_res_on_finish(h, on_finish_count, NULL), 0);
    rc = do_call(h, c->call, &line);
    put_note(T_CALL, h, rc, line);
    latch_res_release(h);
    latch_res_set_header(two, "X-Two", "2");
    latch_res_end(two, "two", 3);
}

/* The late call on a response the client reset, posted by the test. */
static void disconnect_post(latch_res *res, void *data)
{
    const cell *c = data;
    int line = 0, rc;

    rc = do_call(res, c->call, &line);
    put_note(T_CALL, res, rc, line);
    latch_res_release(res);
}

static int cell_handler(latch_req *req, latch_res *res, const void *arg)
{
    const cell *c = arg;
    int line = 0, seal = 0, rc = 0;

    if (c->state == S_TOMB && strcmp(latch_req_path(req), "/b") == 0) {
        if (latch_set_timeout(res, 5, tomb_fire, (void *)c) == NULL)
            latch_res_send_status(res, 500);
        return LATCH_DONE;
    }
    put_note(T_PRE, res, latch_res_set_header(res, "X-Pre", "p"), 0);
    switch (c->state) {
    case S_HS_WRITE_HEAD:
        seal = __LINE__ + 1;
        rc = latch_res_write_head(res, 200);
        break;
    case S_HS_WRITE:
        seal = __LINE__ + 1;
        rc = latch_res_write(res, "a", 1);
        break;
    case S_ENDED:
        seal = __LINE__ + 1;
        rc = latch_res_end(res, "done", 4);
        break;
    case S_TOMB:
        latch_res_retain(res);
        latch_res_on_finish(res, on_finish_count, NULL);
        latch_res_on_close(res, on_close_count, NULL);
        seal = __LINE__ + 1;
        rc = latch_res_end(res, "done", 4);
        set_held(res);
        put_note(T_SEAL, res, rc, seal);
        return LATCH_DONE;
    case S_DESTROYED:
        seal = __LINE__ + 1;
        latch_res_destroy(res);
        break;
    case S_DISCONNECT:
        latch_res_retain(res);
        latch_res_on_finish(res, on_finish_count, NULL);
        latch_res_on_close(res, on_close_count, NULL);
        set_held(res);
        put_note(T_READY, res, 0, 0);
        return LATCH_DONE;
    }
    put_note(T_SEAL, res, rc, seal);
    rc = do_call(res, c->call, &line);
    put_note(T_CALL, res, rc, line);
    if (c->state != S_DESTROYED && !latch_res_writable_ended(res))
        put_note(T_COMPLETE, res, latch_res_end(res, NULL, 0), 0);
    return LATCH_DONE;
}

static void run_cell(const cell *c)
{
    char want[1024];
    int fd, vfirst = 0, want_rc = expected_rc(c->state, c->call);
    note call, seal = {0}, pre;
    uint64_t req_id;

    srv_start(cell_handler, c);
    fd = th_connect(srv.port);
    expected_wire(c, want, sizeof(want));
    switch (c->state) {
    case S_TOMB:
        th_send_str(fd, REQ("/a"));
        expect_resp(fd, want);
        /* Request 1 is over (finish and close fired) before request 2. */
        assert_true(wait_count(K_CLOSE, 1, 5000));
        assert_int_equal(count_of(K_FINISH), 1);
        th_send_str(fd, REQ("/b"));
        expect_resp(fd, two_bytes);
        break;
    case S_DESTROYED:
        th_send_str(fd, REQ("/t"));
        expect_nothing_then_fin(fd);
        break;
    case S_DISCONNECT:
        th_send_str(fd, REQ("/t"));
        assert_true(wait_note(T_READY, 5000, NULL));
        th_close_reset(fd);
        fd = -1;
        assert_true(wait_count(K_CLOSE, 1, 5000));
        assert_int_equal(latch_res_post(held_res(), disconnect_post, (void *)c),
                         0);
        break;
    default:
        /* FRESH, HEADERS_SENT, ENDED: the call ran inside the handler. */
        th_send_str(fd, REQ("/t"));
        expect_resp(fd, want);
        break;
    }
    assert_true(wait_note(T_CALL, 5000, &call));
    if (c->state == S_DISCONNECT) {
        req_id = get_note(T_READY).req_id;
    } else {
        pre = get_note(T_PRE);
        assert_int_equal(pre.rc, 0);
        req_id = pre.req_id;
        if (c->state != S_FRESH)
            seal = get_note(T_SEAL);
    }
    /* The call's return code, exactly the table's. */
    if (call.rc != want_rc)
        fail_msg("%s in %s returned %s (%d), expected %s (%d)",
                 call_name[c->call], state_name[c->state],
                 latch_err_name(call.rc), call.rc, latch_err_name(want_rc),
                 want_rc);
    switch (c->state) {
    case S_HS_WRITE_HEAD: assert_int_equal(seal.rc, 0); break;
    case S_HS_WRITE: assert_int_equal(seal.rc, 1); break;
    case S_ENDED:
    case S_TOMB: assert_int_equal(seal.rc, 0); break;
    default: break;
    }
    if (notes_with(T_COMPLETE) > 0)
        assert_int_equal(get_note(T_COMPLETE).rc, 0);
    if (c->state == S_TOMB) {
        /* The tombstone, as Node's response after 'close'. */
        note t = get_note(T_TOMB);
        assert_int_equal(t.rc, LATCH_ERR_STATE); /* on_finish: too late */
        assert_true(t.hs && t.we && t.wf && t.ds);
    }
    /* The server goes on serving: on the same connection when it is kept
     * (nothing of the refused call is waiting in front of this answer). */
    if (c->state >= S_DESTROYED)
        expect_server_ok();
    else
        expect_ok_on(fd);
    /* Exactly one report for a refused call, none otherwise; and none
     * later. On the tombstone, the probe's own latch_res_on_finish was
     * refused first and reported as well (ERR_STATE). */
    {
        int first = 0;
        if (c->state == S_TOMB) {
            th_vrec p = vget(0);
            assert_int_equal(p.code, LATCH_ERR_STATE);
            assert_string_equal(p.call, "latch_res_on_finish");
            first = 1;
        }
        assert_int_equal(th_vlog_count(&vlog), first + (want_rc < 0 ? 1 : 0));
        vfirst = first;
    }
    if (want_rc < 0) {
        th_vrec v = vget(vfirst);
        const char *sealed_call = NULL;
        int sealed_line = seal.line;
        check_code(&v, want_rc);
        check_message(&v, want_rc, c->call);
        switch (c->state) {
        case S_HS_WRITE_HEAD: sealed_call = "latch_res_write_head"; break;
        case S_HS_WRITE: sealed_call = "latch_res_write"; break;
        case S_ENDED:
        case S_TOMB: sealed_call = "latch_res_end"; break;
        case S_DESTROYED: sealed_call = "latch_res_destroy"; break;
        case S_DISCONNECT:
            sealed_call = "client disconnect";
            sealed_line = 0;
            break;
        }
        check_sites(&v, call_api[c->call], call.line, "do_call", sealed_call,
                    sealed_line);
        /* The report names the request the response belongs to, also when
         * the connection serves another one by now. */
        assert_int_equal(v.request_id, req_id);
        assert_string_equal(v.method, "GET");
        assert_string_equal(v.path, c->state == S_TOMB ? "/a" : "/t");
    }
    if (fd >= 0)
        close(fd);
    srv_stop();
    assert_int_equal(th_vlog_count(&vlog), vfirst + (want_rc < 0 ? 1 : 0));
    if (c->state == S_TOMB) {
        assert_int_equal(count_of(K_FINISH), 1);
        assert_int_equal(count_of(K_CLOSE), 1);
    }
    if (c->state == S_DISCONNECT) {
        assert_int_equal(count_of(K_FINISH), 0);
        assert_int_equal(count_of(K_CLOSE), 1);
    }
}

static void test_cell(void **state)
{
    run_cell(*state);
}

/* ------------------------------------------------------------------ */
/* Names and messages                                                   */
/* ------------------------------------------------------------------ */

static void test_error_names_and_messages(void **state)
{
    (void)state;
    assert_string_equal(latch_err_name(0), "OK");
    assert_string_equal(latch_err_name(LATCH_ERR_HTTP_HEADERS_SENT),
                        "ERR_HTTP_HEADERS_SENT");
    assert_string_equal(latch_strerror(LATCH_ERR_HTTP_HEADERS_SENT),
                        "Cannot set headers after they are sent to the client");
    assert_string_equal(latch_err_name(LATCH_ERR_STREAM_WRITE_AFTER_END),
                        "ERR_STREAM_WRITE_AFTER_END");
    assert_string_equal(latch_strerror(LATCH_ERR_STREAM_WRITE_AFTER_END),
                        "write after end");
    assert_string_equal(latch_err_name(LATCH_ERR_STREAM_DESTROYED),
                        "ERR_STREAM_DESTROYED");
    assert_string_equal(latch_strerror(LATCH_ERR_STREAM_DESTROYED),
                        "Cannot call write after a stream was destroyed");
    assert_string_equal(latch_err_name(LATCH_ERR_STREAM_ALREADY_FINISHED),
                        "ERR_STREAM_ALREADY_FINISHED");
    assert_string_equal(latch_strerror(LATCH_ERR_STREAM_ALREADY_FINISHED),
                        "Cannot call end after a stream was finished");
    assert_string_equal(latch_err_name(LATCH_ERR_HTTP_CONTENT_LENGTH_MISMATCH),
                        "ERR_HTTP_CONTENT_LENGTH_MISMATCH");
    assert_string_equal(latch_err_name(LATCH_ERR_HTTP_INVALID_STATUS_CODE),
                        "ERR_HTTP_INVALID_STATUS_CODE");
    assert_string_equal(latch_err_name(LATCH_ERR_INVALID_CHAR),
                        "ERR_INVALID_CHAR");
    assert_string_equal(latch_err_name(LATCH_ERR_NO_RESPONSE),
                        "ERR_NO_RESPONSE");
    assert_string_equal(latch_err_name(LATCH_ERR_NEXT_TWICE), "ERR_NEXT_TWICE");
    assert_string_equal(latch_err_name(LATCH_ERR_NEXT_AFTER_RESPONSE),
                        "ERR_NEXT_AFTER_RESPONSE");
    assert_string_equal(latch_err_name(LATCH_ERR_WRONG_THREAD),
                        "ERR_WRONG_THREAD");
    assert_string_equal(latch_err_name(LATCH_ERR_INVALID_ARG),
                        "ERR_INVALID_ARG");
    assert_string_equal(latch_err_name(LATCH_ERR_STATE), "ERR_STATE");
    assert_string_equal(latch_err_name(-999999), "UNKNOWN");
    /* The numbers are a contract. */
    assert_int_equal(LATCH_ERR_HTTP_HEADERS_SENT, -7001);
    assert_int_equal(LATCH_ERR_STREAM_WRITE_AFTER_END, -7002);
    assert_int_equal(LATCH_ERR_STREAM_DESTROYED, -7003);
    assert_int_equal(LATCH_ERR_HTTP_CONTENT_LENGTH_MISMATCH, -7005);
    assert_int_equal(LATCH_ERR_WRONG_THREAD, -7011);
}

/* ------------------------------------------------------------------ */
/* Content-Length, always enforced                                      */
/* ------------------------------------------------------------------ */

static int cl_past_handler(latch_req *req, latch_res *res, const void *arg)
{
    int line, rc;

    (void)req;
    (void)arg;
    put_note(T_PRE, res, latch_res_set_header(res, "Content-Length", "5"), 0);
    line = __LINE__ + 1;
    rc = latch_res_write(res, "hello", 5);
    put_note(T_SEAL, res, rc, line);
    line = __LINE__ + 1;
    rc = latch_res_write(res, "a", 1);
    put_note(T_CALL, res, rc, line);
    put_note(T_COMPLETE, res, latch_res_end(res, NULL, 0), 0);
    return LATCH_DONE;
}

/* Writing past a declared length is refused: nothing of it is written,
 * the byte count does not advance, and the end that follows completes the
 * response (Node's strictContentLength, always on). */
static void test_content_length_write_past(void **state)
{
    static const char want[] =
        "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n" KA "\r\nhello";
    int fd;
    note call, seal;
    th_vrec v;

    (void)state;
    srv_start(cl_past_handler, NULL);
    fd = th_connect(srv.port);
    th_send_str(fd, REQ("/t"));
    expect_resp(fd, want);
    expect_ok_on(fd);
    assert_true(wait_note(T_CALL, 5000, &call));
    seal = get_note(T_SEAL);
    assert_int_equal(get_note(T_PRE).rc, 0);
    assert_int_equal(seal.rc, 1);
    assert_int_equal(call.rc, LATCH_ERR_HTTP_CONTENT_LENGTH_MISMATCH);
    assert_false(call.we);
    assert_int_equal(get_note(T_COMPLETE).rc, 0);
    assert_int_equal(th_vlog_count(&vlog), 1);
    v = vget(0);
    check_code(&v, LATCH_ERR_HTTP_CONTENT_LENGTH_MISMATCH);
    assert_string_equal(v.message,
                        "Response body's content-length of 6 byte(s) does "
                        "not match the content-length of 5 byte(s) set in "
                        "header");
    /* Sealed where the header block declaring the length went out. */
    check_sites(&v, "latch_res_write", call.line, "cl_past_handler",
                "latch_res_write", seal.line);
    close(fd);
}

static int cl_short_handler(latch_req *req, latch_res *res, const void *arg)
{
    int line, rc;

    (void)arg;
    if (strcmp(latch_req_path(req), "/w") == 0) {
        /* The short body comes from writes; the end has no data. */
        latch_res_set_header(res, "Content-Length", "5");
        put_note(T_SEAL, res, latch_res_write(res, "ab", 2), 0);
        line = __LINE__ + 1;
        rc = latch_res_end(res, NULL, 0);
        put_note(T_CALL, res, rc, line);
        return LATCH_DONE;
    }
    put_note(T_PRE, res, latch_res_set_header(res, "Content-Length", "5"), 0);
    line = __LINE__ + 1;
    rc = latch_res_end(res, "ab", 2);
    put_note(T_CALL, res, rc, line);
    return LATCH_DONE;
}

/* Reads to the FIN and asserts the bytes are `head` + "ab" with the
 * response visibly truncated: no complete response in them, and nothing
 * (the pipelined /ok) after the short body. */
static void expect_truncated(int fd)
{
    static const char want_ka[] =
        "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n" KA "\r\nab";
    static const char want_close[] = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n"
                                     "Date: <d>\r\nConnection: close\r\n\r\nab";
    size_t len;
    char *out = th_read(fd, &len, 5000, NULL, NULL), *norm;
    th_resp r[1];
    const char *err;

    assert_int_equal(th_last_end(), TH_EOF);
    if (th_wire_parse(out, len, NULL, r, 1, false, &err) != 0)
        fail_msg("the short body was completed by later bytes:\n%s", out);
    norm = th_normalize(out, len);
    /* The head may go out before the body falls short (keep-alive) or
     * say the close; either way nothing may follow "ab". */
    if (strcmp(norm, want_close) != 0)
        assert_string_equal(norm, want_ka);
    free(norm);
    free(out);
}

/* Ending short of the declared length is reported, and the connection
 * closes right after the short body: the request pipelined behind it is
 * not answered. */
static void test_content_length_end_short_closes(void **state)
{
    int fd;
    note call = {0};
    th_vrec v;

    (void)state;
    srv_start(cl_short_handler, NULL);
    fd = th_connect(srv.port);
    th_send_str(fd, REQ("/t") REQ("/ok"));
    expect_truncated(fd);
    close(fd);
    assert_true(wait_note(T_CALL, 5000, &call));
    assert_int_equal(get_note(T_PRE).rc, 0);
    assert_int_equal(call.rc, LATCH_ERR_HTTP_CONTENT_LENGTH_MISMATCH);
    assert_int_equal(th_vlog_count(&vlog), 1);
    v = vget(0);
    check_code(&v, LATCH_ERR_HTTP_CONTENT_LENGTH_MISMATCH);
    assert_string_equal(v.message,
                        "Response body's content-length of 2 byte(s) does "
                        "not match the content-length of 5 byte(s) set in "
                        "header");
    check_sites(&v, "latch_res_end", call.line, "cl_short_handler",
                "latch_res_end", call.line);
    expect_server_ok();

    /* The same when the short body came from a write. */
    fd = th_connect(srv.port);
    th_send_str(fd, REQ("/w") REQ("/ok"));
    expect_truncated(fd);
    close(fd);
    assert_int_equal(th_vlog_wait(&vlog, 2, 5000), 2);
    /* The report comes inside end(), the note after it returned. */
    assert_true(wait_notes(T_CALL, 2, 5000));
    call = get_note(T_CALL);
    assert_int_equal(get_note(T_SEAL).rc, 1);
    assert_int_equal(call.rc, LATCH_ERR_HTTP_CONTENT_LENGTH_MISMATCH);
    v = vget(1);
    check_code(&v, LATCH_ERR_HTTP_CONTENT_LENGTH_MISMATCH);
    assert_string_equal(v.message,
                        "Response body's content-length of 2 byte(s) does "
                        "not match the content-length of 5 byte(s) set in "
                        "header");
    assert_int_equal(v.at_line, call.line);
    expect_server_ok();
    assert_int_equal(th_vlog_count(&vlog), 2);
}

/* ------------------------------------------------------------------ */
/* Header injection                                                     */
/* ------------------------------------------------------------------ */

#define NBAD 8

static int bad_lines[NBAD];

static int invalid_char_handler(latch_req *req, latch_res *res, const void *arg)
{
    int rc[NBAD], i = 0;

    (void)req;
    (void)arg;
    latch_res_set_header(res, "X-Keep", "v");
    bad_lines[i] = __LINE__ + 1;
    rc[i++] = latch_res_set_header(res, "X-A", "a\r\nX-Injected: 1");
    bad_lines[i] = __LINE__ + 1;
    rc[i++] = latch_res_set_header(res, "X-A", "a\nX-Injected: 1");
    bad_lines[i] = __LINE__ + 1;
    rc[i++] = latch_res_set_header(res, "X-A", "a\rb");
    bad_lines[i] = __LINE__ + 1;
    rc[i++] = latch_res_append_header(res, "X-Keep", "w\r\nX-Injected: 1");
    bad_lines[i] = __LINE__ + 1;
    rc[i++] = latch_res_set_header(res, "Bad Name", "v");
    bad_lines[i] = __LINE__ + 1;
    rc[i++] = latch_res_set_header(res, "X-A:", "v");
    bad_lines[i] = __LINE__ + 1;
    rc[i++] = latch_res_set_header(res, "X-A\r\nX-Injected", "v");
    bad_lines[i] = __LINE__ + 1;
    rc[i++] = latch_res_set_header(res, "", "v");
    for (i = 0; i < NBAD; i++)
        put_note(T_CALL, res, rc[i], bad_lines[i]);
    /* Nothing was set: X-A is unknown, X-Keep unchanged. */
    put_note(T_X, res,
             latch_res_get_header(res, "X-A") == NULL &&
                 latch_res_get_header(res, "X-Injected") == NULL &&
                 strcmp(latch_res_get_header(res, "X-Keep"), "v") == 0,
             0);
    latch_res_end(res, "ok", 2);
    return LATCH_DONE;
}

/* CR or LF in a value, or a name that is not a token, is refused with
 * ERR_INVALID_CHAR and sets nothing: no response splitting. */
static void test_invalid_char_refused(void **state)
{
    static const char want[] =
        "HTTP/1.1 200 OK\r\nX-Keep: v\r\n" KA "Content-Length: 2\r\n\r\nok";
    note calls[NBAD];
    int fd, i;

    (void)state;
    srv_start(invalid_char_handler, NULL);
    fd = th_connect(srv.port);
    th_send_str(fd, REQ("/t"));
    expect_resp(fd, want);
    expect_ok_on(fd);
    close(fd);
    assert_true(wait_note(T_X, 5000, NULL));
    assert_int_equal(get_note(T_X).rc, 1);
    assert_int_equal(notes_all(T_CALL, calls, NBAD), NBAD);
    for (i = 0; i < NBAD; i++)
        if (calls[i].rc != LATCH_ERR_INVALID_CHAR)
            fail_msg("bad header %d (line %d) returned %s, not "
                     "ERR_INVALID_CHAR",
                     i, calls[i].line, latch_err_name(calls[i].rc));
    /* Each refused call is reported where it was made (not sealed). */
    assert_int_equal(th_vlog_count(&vlog), NBAD);
    for (i = 0; i < NBAD; i++) {
        th_vrec v = vget(i);
        check_code(&v, LATCH_ERR_INVALID_CHAR);
        check_sites(&v,
                    i == 3 ? "latch_res_append_header" : "latch_res_set_header",
                    bad_lines[i], "invalid_char_handler", NULL, 0);
    }
}

/* ------------------------------------------------------------------ */
/* Status after the headers                                             */
/* ------------------------------------------------------------------ */

static int status_late_handler(latch_req *req, latch_res *res, const void *arg)
{
    int line, seal, rc;

    (void)req;
    (void)arg;
    seal = __LINE__ + 1;
    put_note(T_SEAL, res, latch_res_write(res, "a", 1), seal);
    line = __LINE__ + 1;
    rc = latch_res_status(res, 404);
    put_note(T_CALL, res, rc, line);
    put_note(T_X, res, latch_res_get_status(res), 0);
    latch_res_end(res, "b", 1);
    return LATCH_DONE;
}

/* Node is silent and reads the new value back; latch refuses, reports,
 * and keeps the status that went out. */
static void test_status_after_headers_reported(void **state)
{
    static const char want[] =
        "HTTP/1.1 200 OK\r\n" KA "Transfer-Encoding: chunked\r\n\r\n"
        "1\r\na\r\n1\r\nb\r\n0\r\n\r\n";
    int fd;
    note call = {0};
    th_vrec v;

    (void)state;
    srv_start(status_late_handler, NULL);
    fd = th_connect(srv.port);
    th_send_str(fd, REQ("/t"));
    expect_resp(fd, want);
    expect_ok_on(fd);
    close(fd);
    assert_true(wait_note(T_CALL, 5000, &call));
    assert_int_equal(call.rc, LATCH_ERR_HTTP_HEADERS_SENT);
    assert_int_equal(get_note(T_X).rc, 200);
    assert_int_equal(th_vlog_count(&vlog), 1);
    v = vget(0);
    check_code(&v, LATCH_ERR_HTTP_HEADERS_SENT);
    check_headers_sent_pattern(v.message);
    check_sites(&v, "latch_res_status", call.line, "status_late_handler",
                "latch_res_write", get_note(T_SEAL).line);
}

/* ------------------------------------------------------------------ */
/* No response at all                                                   */
/* ------------------------------------------------------------------ */

static const char no_response_500[] =
    "HTTP/1.1 500 Internal Server Error\r\n"
    "Content-Type: text/plain; charset=utf-8\r\n"
    "Content-Length: 22\r\n" KA "\r\nInternal Server Error\n";

static int silent_handler(latch_req *req, latch_res *res, const void *arg)
{
    (void)req;
    (void)arg;
    /* A header set, then nothing: it must not leak into the 500. */
    latch_res_set_header(res, "X-Secret", "s");
    put_note(T_READY, res, 0, 0);
    return LATCH_DONE;
}

/* The handler returns LATCH_DONE without responding and without
 * retaining: reported, and the client gets a 500 (not a hang). */
static void test_no_response_reported_and_500(void **state)
{
    int fd;
    th_vrec v;

    (void)state;
    srv_start(silent_handler, NULL);
    fd = th_connect(srv.port);
    th_send_str(fd, REQ("/t"));
    expect_resp(fd, no_response_500);
    expect_ok_on(fd);
    close(fd);
    assert_int_equal(th_vlog_count(&vlog), 1);
    v = vget(0);
    check_code(&v, LATCH_ERR_NO_RESPONSE);
    assert_int_equal(v.request_id, get_note(T_READY).req_id);
    assert_string_equal(v.method, "GET");
    assert_string_equal(v.path, "/t");
    /* Nothing sealed the response before the report. */
    assert_true(v.sealed_call_null);
}

static void answer_later(latch_res *res, void *data)
{
    (void)data;
    put_note(T_POST, res, latch_res_end(res, "later", 5), 0);
    latch_res_release(res);
}

static void release_unanswered(latch_res *res, void *data)
{
    (void)data;
    put_note(T_POST, res, 0, 0);
    latch_res_release(res);
}

static int retain_handler(latch_req *req, latch_res *res, const void *arg)
{
    bool answer = strcmp(latch_req_path(req), "/answer") == 0;

    (void)arg;
    latch_res_retain(res);
    latch_res_set_header(res, "X-Secret", "s");
    put_note(T_READY, res,
             latch_set_timeout(res, 20,
                               answer ? answer_later : release_unanswered,
                               NULL) != NULL,
             0);
    return LATCH_DONE;
}

/* Retained and answered later from a timer: no report. */
static void test_retained_answered_later_not_reported(void **state)
{
    static const char want[] = "HTTP/1.1 200 OK\r\nX-Secret: s\r\n" KA
                               "Content-Length: 5\r\n\r\nlater";
    int fd;

    (void)state;
    srv_start(retain_handler, NULL);
    fd = th_connect(srv.port);
    th_send_str(fd, REQ("/answer"));
    expect_resp(fd, want);
    expect_ok_on(fd);
    close(fd);
    assert_int_equal(get_note(T_READY).rc, 1);
    assert_int_equal(get_note(T_POST).rc, 0);
    assert_int_equal(th_vlog_count(&vlog), 0);
    srv_stop();
    assert_int_equal(th_vlog_count(&vlog), 0);
}

/* Retained, then released without an answer: reported at the release,
 * and the client gets the 500 then. */
static void test_retained_released_unanswered_500(void **state)
{
    int fd;
    th_vrec v;

    (void)state;
    srv_start(retain_handler, NULL);
    fd = th_connect(srv.port);
    th_send_str(fd, REQ("/drop"));
    expect_resp(fd, no_response_500);
    expect_ok_on(fd);
    close(fd);
    assert_int_equal(get_note(T_READY).rc, 1);
    assert_true(wait_note(T_POST, 5000, NULL));
    assert_int_equal(th_vlog_count(&vlog), 1);
    v = vget(0);
    check_code(&v, LATCH_ERR_NO_RESPONSE);
    assert_int_equal(v.request_id, get_note(T_READY).req_id);
    assert_string_equal(v.path, "/drop");
}

/* ------------------------------------------------------------------ */
/* Policies and counters                                                */
/* ------------------------------------------------------------------ */

static int misuse_lines[3];

/* Three misuses at three lines: set_header after end (HEADERS_SENT), a
 * write after end, and a second set_header (HEADERS_SENT). */
static int misuse_handler(latch_req *req, latch_res *res, const void *arg)
{
    int rc[3];

    (void)req;
    (void)arg;
    latch_res_end(res, "ok", 2);
    misuse_lines[0] = __LINE__ + 1;
    rc[0] = latch_res_set_header(res, "X-Late", "1");
    misuse_lines[1] = __LINE__ + 1;
    rc[1] = latch_res_write(res, "x", 1);
    misuse_lines[2] = __LINE__ + 1;
    rc[2] = latch_res_set_header(res, "X-Late", "2");
    for (int i = 0; i < 3; i++)
        put_note(T_CALL, res, rc[i], misuse_lines[i]);
    return LATCH_DONE;
}

static const char misuse_ok[] =
    "HTTP/1.1 200 OK\r\n" KA "Content-Length: 2\r\n\r\nok";

/* COUNT: the calls are still refused and counted, but the hook is not
 * called. */
static void test_policy_count(void **state)
{
    latch_app *app;
    note calls[3];
    int fd;

    (void)state;
    app = srv_prepare(misuse_handler, NULL);
    assert_int_equal(latch_app_set_violation_policy(app, LATCH_POLICY_COUNT),
                     0);
    assert_int_equal(latch_app_set_violation_policy(app, 99),
                     LATCH_ERR_INVALID_ARG);
    srv_go(app);
    fd = th_connect(srv.port);
    for (int r = 0; r < 2; r++) {
        th_send_str(fd, REQ("/t"));
        expect_resp(fd, misuse_ok);
    }
    expect_ok_on(fd);
    close(fd);
    assert_int_equal(notes_all(T_CALL, calls, 3), 3);
    assert_int_equal(calls[0].rc, LATCH_ERR_HTTP_HEADERS_SENT);
    assert_int_equal(calls[1].rc, LATCH_ERR_STREAM_WRITE_AFTER_END);
    assert_int_equal(calls[2].rc, LATCH_ERR_HTTP_HEADERS_SENT);
    assert_int_equal(latch_app_violation_count(srv.app, 0), 6);
    assert_int_equal(
        latch_app_violation_count(srv.app, LATCH_ERR_HTTP_HEADERS_SENT), 4);
    assert_int_equal(
        latch_app_violation_count(srv.app, LATCH_ERR_STREAM_WRITE_AFTER_END),
        2);
    assert_int_equal(
        latch_app_violation_count(srv.app, LATCH_ERR_STREAM_DESTROYED), 0);
    assert_int_equal(
        latch_app_violation_site_count(srv.app, __FILE__, misuse_lines[1]), 2);
    /* The hook was never called. */
    assert_int_equal(th_vlog_count(&vlog), 0);
}

typedef struct site_seen {
    int line;
    int code;
    uint64_t count;
    int calls;
} site_seen;

static void collect_site(const char *file, int line, int code, uint64_t count,
                         void *data)
{
    site_seen *s = data;

    if (strcmp(file, __FILE__) != 0)
        return;
    for (int i = 0; i < 3; i++)
        if (s[i].line == line) {
            s[i].code = code;
            s[i].count = count;
            s[i].calls++;
        }
}

/* Per-site counters: the file as the caller's __FILE__ and the line. */
static void test_site_counters(void **state)
{
    site_seen seen[3];
    int fd, i;

    (void)state;
    srv_start(misuse_handler, NULL);
    fd = th_connect(srv.port);
    for (int r = 0; r < 3; r++) {
        th_send_str(fd, REQ("/t"));
        expect_resp(fd, misuse_ok);
    }
    close(fd);
    assert_int_equal(th_vlog_count(&vlog), 9);
    for (i = 0; i < 3; i++)
        assert_int_equal(
            latch_app_violation_site_count(srv.app, __FILE__, misuse_lines[i]),
            3);
    /* Another line, another file: nothing. */
    assert_int_equal(
        latch_app_violation_site_count(srv.app, __FILE__, misuse_lines[0] - 1),
        0);
    assert_int_equal(
        latch_app_violation_site_count(srv.app, "other.c", misuse_lines[0]), 0);
    memset(seen, 0, sizeof(seen));
    for (i = 0; i < 3; i++)
        seen[i].line = misuse_lines[i];
    latch_app_violation_sites(srv.app, collect_site, seen);
    for (i = 0; i < 3; i++) {
        assert_int_equal(seen[i].calls, 1);
        assert_int_equal(seen[i].count, 3);
        assert_int_equal(seen[i].code, i == 1 ? LATCH_ERR_STREAM_WRITE_AFTER_END
                                              : LATCH_ERR_HTTP_HEADERS_SENT);
    }
    for (i = 0; i < 9; i++) {
        th_vrec v = vget(i);
        assert_int_equal(v.at_line, misuse_lines[i % 3]);
        assert_string_equal(v.at_file, __FILE__);
    }
}

/* ABORT: a child process runs a server; its violation hook writes each
 * report to a pipe, so the parent sees the report came before the end. */
static int child_report_fd = -1;

static void child_hook(const latch_violation *v, void *data)
{
    int msg[2] = {v->code, v->at.line};

    (void)data;
    if (write(child_report_fd, msg, sizeof(msg)) != (ssize_t)sizeof(msg))
        _exit(5);
}

/* The misuse; the parent calls it with NULL to learn its line. */
static int child_misuse(latch_res *res, int *line)
{
    *line = __LINE__ + 1;
    return latch_res_set_header(res, "X-Late", "1");
}

static int child_handler(latch_req *req, latch_res *res, void *data)
{
    int line;

    (void)req;
    (void)data;
    latch_res_end(res, "ok", 2);
    child_misuse(res, &line);
    return LATCH_DONE;
}

/* Forks a server with LATCH_STRICT=1 in its environment (or without it);
 * returns its pid, its port, and the read end of its report pipe. */
static pid_t spawn_child(bool strict, int *port, int *report)
{
    int portp[2], rep[2];
    pid_t pid;

    assert_int_equal(pipe(portp), 0);
    assert_int_equal(pipe(rep), 0);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct rlimit nocore = {0, 0};
        latch_app *app;
        int p;
        close(portp[0]);
        close(rep[0]);
        setrlimit(RLIMIT_CORE, &nocore);
        if (strict)
            setenv("LATCH_STRICT", "1", 1);
        else
            unsetenv("LATCH_STRICT");
        child_report_fd = rep[1];
        app = latch_app_new();
        if (app == NULL || latch_use(app, NULL, child_handler, NULL) != 0 ||
            latch_app_on_violation(app, child_hook, NULL) != 0 ||
            latch_app_set_workers(app, 1) != 0 ||
            latch_listen(app, "127.0.0.1", 0) != 0)
            _exit(3);
        p = latch_app_port(app);
        if (write(portp[1], &p, sizeof(p)) != (ssize_t)sizeof(p))
            _exit(4);
        close(portp[1]);
        _exit(latch_run(app) == 0 ? 0 : 6);
    }
    close(portp[1]);
    close(rep[1]);
    {
        struct pollfd pf = {portp[0], POLLIN, 0};
        assert_int_equal(poll(&pf, 1, 5000), 1);
        assert_int_equal(read(portp[0], port, sizeof(*port)),
                         (ssize_t)sizeof(*port));
    }
    close(portp[0]);
    *report = rep[0];
    return pid;
}

/* Reads the child's reports until its pipe closes (the child is gone);
 * returns how many; kills it if it outlives the deadline. */
static int read_reports(pid_t pid, int fd, int msgs[][2], int max)
{
    int64_t deadline = th_now_ms() + 10000;
    int n = 0, buf[2];
    size_t got = 0;

    for (;;) {
        struct pollfd pf = {fd, POLLIN, 0};
        int64_t left = deadline - th_now_ms();
        ssize_t r;
        if (left <= 0) {
            kill(pid, SIGKILL);
            fail_msg("the child server did not end in time");
        }
        if (poll(&pf, 1, (int)left) <= 0)
            continue;
        r = read(fd, (char *)buf + got, sizeof(buf) - got);
        if (r <= 0)
            break;
        got += (size_t)r;
        if (got == sizeof(buf)) {
            if (n < max) {
                msgs[n][0] = buf[0];
                msgs[n][1] = buf[1];
            }
            n++;
            got = 0;
        }
    }
    close(fd);
    return n;
}

static void test_policy_abort_strict_env(void **state)
{
    int port, rep, st = 0, msgs[4][2], fd, n, line = 0;
    size_t len;
    char *out;
    pid_t pid;

    (void)state;
    assert_int_equal(child_misuse(NULL, &line), LATCH_ERR_INVALID_ARG);
    /* Control: without LATCH_STRICT the same misuse is reported and the
     * server goes on (the response was sent). */
    pid = spawn_child(false, &port, &rep);
    fd = th_connect(port);
    th_send_str(fd, REQ("/t"));
    expect_resp(fd, misuse_ok);
    close(fd);
    assert_int_equal(kill(pid, SIGTERM), 0);
    n = read_reports(pid, rep, msgs, 4);
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
    assert_int_equal(n, 1);
    assert_int_equal(msgs[0][0], LATCH_ERR_HTTP_HEADERS_SENT);
    assert_int_equal(msgs[0][1], line);

    /* LATCH_STRICT=1: the misuse is reported, then the process aborts
     * before the response goes out. */
    pid = spawn_child(true, &port, &rep);
    fd = th_connect(port);
    th_send_str(fd, REQ("/t"));
    out = th_read(fd, &len, 10000, NULL, NULL);
    assert_int_not_equal(th_last_end(), TH_OPEN);
    if (len != 0)
        fail_msg("the aborted server answered:\n%s", out);
    free(out);
    close(fd);
    n = read_reports(pid, rep, msgs, 4);
    assert_int_equal(waitpid(pid, &st, 0), pid);
    if (!WIFSIGNALED(st))
        fail_msg("the strict server was not killed by a signal (status %#x)",
                 st);
    assert_int_equal(WTERMSIG(st), SIGABRT);
    assert_int_equal(n, 1);
    assert_int_equal(msgs[0][0], LATCH_ERR_HTTP_HEADERS_SENT);
    assert_int_equal(msgs[0][1], line);
}

/* ------------------------------------------------------------------ */
/* Lifetime: on_finish, on_close, tombstones                            */
/* ------------------------------------------------------------------ */

static int once_handler(latch_req *req, latch_res *res, const void *arg)
{
    (void)req;
    (void)arg;
    put_note(T_PRE, res, latch_res_on_finish(res, on_finish_count, NULL), 0);
    put_note(T_X, res, latch_res_on_close(res, on_close_count, NULL), 0);
    latch_res_end(res, "x", 1);
    return LATCH_DONE;
}

/* A normal response: on_finish once, then on_close once, never again
 * (checked after the server stopped, when nothing more can fire). */
static void test_finish_and_close_fire_once_in_order(void **state)
{
    static const char want[] =
        "HTTP/1.1 200 OK\r\n" KA "Content-Length: 1\r\n\r\nx";
    int fd;

    (void)state;
    srv_start(once_handler, NULL);
    fd = th_connect(srv.port);
    th_send_str(fd, REQ("/t"));
    expect_resp(fd, want);
    assert_true(wait_count(K_CLOSE, 1, 5000));
    expect_ok_on(fd);
    close(fd);
    srv_stop();
    assert_int_equal(get_note(T_PRE).rc, 0);
    assert_int_equal(get_note(T_X).rc, 0);
    assert_int_equal(count_of(K_FINISH), 1);
    assert_int_equal(count_of(K_CLOSE), 1);
    assert_true(first_of(K_FINISH) < first_of(K_CLOSE));
    assert_int_equal(th_vlog_count(&vlog), 0);
}

static int destroy_mid_handler(latch_req *req, latch_res *res, const void *arg)
{
    (void)req;
    (void)arg;
    latch_res_on_finish(res, on_finish_count, NULL);
    latch_res_on_close(res, on_close_count, NULL);
    put_note(T_SEAL, res, latch_res_write(res, "part", 4), 0);
    latch_res_destroy(res);
    put_note(T_X, res, 0, 0);
    return LATCH_DONE;
}

/* latch_res_destroy mid-body: what was written goes out, without the
 * terminating chunk, then FIN (Node case 34); on_close once, on_finish
 * never. */
static void test_destroy_mid_body_no_finish(void **state)
{
    static const char want[] =
        "HTTP/1.1 200 OK\r\n" KA "Transfer-Encoding: chunked\r\n\r\n"
        "4\r\npart\r\n";
    int fd;
    size_t len;
    char *out, *norm;
    note x = {0};

    (void)state;
    srv_start(destroy_mid_handler, NULL);
    fd = th_connect(srv.port);
    th_send_str(fd, REQ("/t"));
    out = th_read(fd, &len, 5000, NULL, NULL);
    assert_int_equal(th_last_end(), TH_EOF);
    norm = th_normalize(out, len);
    assert_string_equal(norm, want);
    free(norm);
    free(out);
    close(fd);
    assert_true(wait_count(K_CLOSE, 1, 5000));
    /* on_close fired inside destroy; the note comes after it returned. */
    assert_true(wait_note(T_X, 5000, &x));
    assert_true(x.ds);
    assert_true(x.hs);
    assert_false(x.we);
    assert_false(x.wf);
    expect_server_ok();
    srv_stop();
    assert_int_equal(count_of(K_FINISH), 0);
    assert_int_equal(count_of(K_CLOSE), 1);
    assert_int_equal(th_vlog_count(&vlog), 0);
}

static void late_write_post(latch_res *res, void *data)
{
    int line, rc;

    (void)data;
    put_note(T_TOMB, res, 0, 0);
    line = __LINE__ + 1;
    rc = latch_res_write(res, "more", 4);
    put_note(T_CALL, res, rc, line);
    latch_res_release(res);
}

static int hold_mid_body_handler(latch_req *req, latch_res *res,
                                 const void *arg)
{
    int line;

    (void)req;
    (void)arg;
    latch_res_retain(res);
    latch_res_on_finish(res, on_finish_count, NULL);
    latch_res_on_close(res, on_close_count, NULL);
    line = __LINE__ + 1;
    put_note(T_SEAL, res, latch_res_write(res, "part", 4), line);
    set_held(res);
    put_note(T_READY, res, 0, 0);
    return LATCH_DONE;
}

/* The client resets mid-body: on_close once (destroyed true, ended
 * false), on_finish never; a later write is refused as destroyed, and
 * the report names the disconnect as the sealing event. */
static void test_client_reset_mid_body(void **state)
{
    int fd;
    size_t len;
    char *out;
    note t, call;
    th_vrec v;

    (void)state;
    srv_start(hold_mid_body_handler, NULL);
    fd = th_connect(srv.port);
    th_send_str(fd, REQ("/t"));
    out = th_read(fd, &len, 5000, th_until_substr, "4\r\npart\r\n");
    assert_non_null(strstr(out, "4\r\npart\r\n"));
    free(out);
    th_close_reset(fd);
    assert_true(wait_count(K_CLOSE, 1, 5000));
    assert_int_equal(latch_res_post(held_res(), late_write_post, NULL), 0);
    assert_true(wait_note(T_CALL, 5000, &call));
    t = get_note(T_TOMB);
    assert_true(t.ds);
    assert_true(t.hs);
    assert_false(t.we);
    assert_false(t.wf);
    assert_int_equal(call.rc, LATCH_ERR_STREAM_DESTROYED);
    assert_int_equal(th_vlog_count(&vlog), 1);
    v = vget(0);
    check_code(&v, LATCH_ERR_STREAM_DESTROYED);
    assert_string_equal(v.message,
                        "Cannot call write after a stream was destroyed");
    check_sites(&v, "latch_res_write", call.line, "late_write_post",
                "client disconnect", 0);
    expect_server_ok();
    srv_stop();
    assert_int_equal(count_of(K_FINISH), 0);
    assert_int_equal(count_of(K_CLOSE), 1);
}

#define TOMB_EXTRA 4 /* set_timeout, on_finish, on_close, on_drain */

static int tomb_extra_lines[1];

static void tomb_all_fire(latch_res *two, void *data)
{
    latch_res *h = held_res();
    int line = 0, rc;

    (void)data;
    /* Request 2 is in flight on the same connection meanwhile. */
    for (int c = 0; c < C_COUNT; c++) {
        rc = do_call(h, c, &line);
        put_note(T_CALL, h, rc, line);
    }
    tomb_extra_lines[0] = __LINE__ + 1;
    rc = latch_set_timeout(h, 1, tomb_fire, NULL) == NULL ? -1 : 0;
    put_note(T_X, h, rc, tomb_extra_lines[0]);
    put_note(T_X, h, latch_res_on_finish(h, on_finish_count, NULL), 0);
    put_note(T_X, h, latch_res_on_close(h, on_close_count, NULL), 0);
    put_note(T_X, h, latch_res_on_drain(h, on_close_count, NULL), 0);
    latch_res_release(h);
    latch_res_set_header(two, "X-Two", "2");
    latch_res_end(two, "two", 3);
}

static int tomb_all_handler(latch_req *req, latch_res *res, const void *arg)
{
    int line;

    (void)arg;
    if (strcmp(latch_req_path(req), "/b") == 0) {
        put_note(T_READY, res,
                 latch_set_timeout(res, 5, tomb_all_fire, NULL) != NULL, 0);
        return LATCH_DONE;
    }
    latch_res_retain(res);
    latch_res_on_finish(res, on_finish_count, NULL);
    latch_res_on_close(res, on_close_count, NULL);
    line = __LINE__ + 1;
    put_note(T_SEAL, res, latch_res_end(res, "one", 3), line);
    set_held(res);
    return LATCH_DONE;
}

/* A tombstone refuses every call with an error and a report (end()
 * without data stays Node's silent no-op), never touches the connection,
 * which meanwhile serves the next keep-alive request exactly. */
static void test_tombstone_refuses_everything(void **state)
{
    static const char one[] =
        "HTTP/1.1 200 OK\r\n" KA "Content-Length: 3\r\n\r\none";
    note calls[C_COUNT], extra[TOMB_EXTRA], seal;
    int fd, i, k;

    (void)state;
    srv_start(tomb_all_handler, NULL);
    fd = th_connect(srv.port);
    th_send_str(fd, REQ("/a"));
    expect_resp(fd, one);
    assert_true(wait_count(K_CLOSE, 1, 5000));
    th_send_str(fd, REQ("/b"));
    expect_resp(fd, two_bytes);
    expect_ok_on(fd);
    close(fd);
    assert_int_equal(get_note(T_READY).rc, 1);
    seal = get_note(T_SEAL);
    assert_int_equal(seal.rc, 0);
    assert_int_equal(notes_all(T_CALL, calls, C_COUNT), C_COUNT);
    assert_int_equal(notes_all(T_X, extra, TOMB_EXTRA), TOMB_EXTRA);
    for (i = 0; i < C_COUNT; i++)
        if (calls[i].rc != expected_rc(S_TOMB, i))
            fail_msg("%s on a tombstone returned %s, expected %s", call_name[i],
                     latch_err_name(calls[i].rc),
                     latch_err_name(expected_rc(S_TOMB, i)));
    assert_int_equal(extra[0].rc, -1); /* no timer on a finished response */
    assert_int_equal(extra[1].rc, LATCH_ERR_STATE);
    assert_int_equal(extra[2].rc, LATCH_ERR_STATE);
    assert_int_equal(extra[3].rc, LATCH_ERR_STATE);
    /* One report per refused call (all but end() without data), then the
     * timer's and the three callbacks' (ERR_STATE: they would never run);
     * every one names request 1 and its end. */
    assert_int_equal(th_vlog_count(&vlog), C_COUNT - 1 + 1 + 3);
    for (i = 0, k = 0; i < C_COUNT; i++) {
        th_vrec v;
        if (i == C_END_EMPTY)
            continue;
        v = vget(k++);
        check_code(&v, expected_rc(S_TOMB, i));
        check_message(&v, expected_rc(S_TOMB, i), i);
        check_sites(&v, call_api[i], calls[i].line, "do_call", "latch_res_end",
                    seal.line);
        assert_int_equal(v.request_id, seal.req_id);
        assert_string_equal(v.path, "/a");
    }
    {
        th_vrec v = vget(k);
        check_code(&v, LATCH_ERR_STREAM_ALREADY_FINISHED);
        check_sites(&v, "latch_set_timeout", tomb_extra_lines[0],
                    "tomb_all_fire", "latch_res_end", seal.line);
    }
    for (i = 1; i <= 3; i++) {
        static const char *const names[] = {
            "latch_res_on_finish", "latch_res_on_close", "latch_res_on_drain"};
        th_vrec v = vget(k + i);
        check_code(&v, LATCH_ERR_STATE);
        assert_string_equal(v.call, names[i - 1]);
        assert_int_equal(v.request_id, seal.req_id);
    }
    srv_stop();
    assert_int_equal(count_of(K_FINISH), 1);
    assert_int_equal(count_of(K_CLOSE), 1);
}

/* ------------------------------------------------------------------ */
/* Backpressure                                                         */
/* ------------------------------------------------------------------ */

#define BIG ((size_t)4 << 20)

static char *big_data;

static void drain_cb(latch_res *res, void *data)
{
    (void)data;
    bump(K_DRAIN);
    put_note(T_POST, res, latch_res_end(res, "!", 1), 0);
    latch_res_release(res);
}

static int big_handler(latch_req *req, latch_res *res, const void *arg)
{
    (void)req;
    (void)arg;
    latch_res_retain(res);
    put_note(T_PRE, res, latch_res_write(res, "s", 1), 0);
    put_note(T_CALL, res, latch_res_write(res, big_data, BIG), 0);
    put_note(T_X, res, latch_res_on_drain(res, drain_cb, NULL), 0);
    return LATCH_DONE;
}

/* A client that does not read: a write of 4 MiB returns 0 (wait for
 * drain), a small one before it returned 1; on_drain fires only once the
 * client reads, and the whole body arrives. */
static void test_write_high_water_and_drain(void **state)
{
    static const char head[] =
        "HTTP/1.1 200 OK\r\n" KA "Transfer-Encoding: chunked\r\n\r\n";
    struct sockaddr_in sa;
    int fd, small = 4096, large = 1 << 20, one = 1;
    size_t len;
    char *out, *norm;
    th_resp *r;

    (void)state;
    big_data = malloc(BIG);
    assert_non_null(big_data);
    for (size_t i = 0; i < BIG; i++)
        big_data[i] = (char)('a' + i % 26);
    srv_start(big_handler, NULL);
    fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    assert_int_equal(
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small)), 0);
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)srv.port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    th_send_str(fd, REQ("/t"));
    assert_true(wait_note(T_X, 5000, NULL));
    assert_int_equal(get_note(T_PRE).rc, 1);
    assert_int_equal(get_note(T_CALL).rc, 0);
    assert_int_equal(get_note(T_X).rc, 0);
    /* Not while the client reads nothing. */
    assert_false(wait_count(K_DRAIN, 1, 300));
    assert_int_equal(
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &large, sizeof(large)), 0);
    /* The head, "1\r\ns\r\n", "400000\r\n", the data, "\r\n", then
     * what the drain callback adds: "1\r\n!\r\n0\r\n\r\n". */
    out = th_read(fd, &len, 20000, th_until_substr, "\r\n1\r\n!\r\n0\r\n\r\n");
    assert_int_equal(th_last_end(), TH_OPEN);
    assert_true(wait_count(K_DRAIN, 1, 5000));
    assert_int_equal(get_note(T_POST).rc, 0);
    r = th_expect_responses(out, len, 1, NULL);
    assert_true(r[0].chunked);
    assert_int_equal(r[0].body_len, BIG + 2);
    assert_int_equal(r[0].body[0], 's');
    assert_memory_equal(r[0].body + 1, big_data, BIG);
    assert_int_equal(r[0].body[BIG + 1], '!');
    norm = th_normalize(out, 200);
    assert_memory_equal(norm, head, sizeof(head) - 1);
    assert_memory_equal(norm + sizeof(head) - 1, "1\r\ns\r\n400000\r\n", 14);
    free(norm);
    th_resp_free(r, 1);
    free(r);
    free(out);
    expect_ok_on(fd);
    close(fd);
    srv_stop();
    assert_int_equal(count_of(K_DRAIN), 1);
    assert_int_equal(th_vlog_count(&vlog), 0);
    free(big_data);
    big_data = NULL;
}

/* ------------------------------------------------------------------ */
/* Threads                                                              */
/* ------------------------------------------------------------------ */

#define NFOREIGN 7

static int foreign_lines[NFOREIGN];

static void posted_end(latch_res *res, void *data)
{
    bool on_loop;

    (void)data;
    pthread_mutex_lock(&mu);
    on_loop = pthread_equal(pthread_self(), sh.loop) != 0;
    pthread_mutex_unlock(&mu);
    put_note(T_POST, res, on_loop, 0);
    put_note(T_X, res, latch_res_end(res, "posted", 6), 0);
    latch_res_release(res);
}

static void *foreign_thread(void *arg)
{
    latch_res *res = arg;
    int rc[NFOREIGN], i = 0;

    foreign_lines[i] = __LINE__ + 1;
    rc[i++] = latch_res_set_header(res, "X-Foreign", "1");
    foreign_lines[i] = __LINE__ + 1;
    rc[i++] = latch_res_status(res, 500);
    foreign_lines[i] = __LINE__ + 1;
    rc[i++] = latch_res_write(res, "w", 1);
    foreign_lines[i] = __LINE__ + 1;
    rc[i++] = latch_res_end(res, "e", 1);
    foreign_lines[i] = __LINE__ + 1;
    rc[i++] = latch_res_send(res, "s", 1);
    foreign_lines[i] = __LINE__ + 1;
    rc[i++] = latch_res_json(res, "{}");
    foreign_lines[i] = __LINE__ + 1;
    rc[i++] = latch_set_timeout(res, 1, posted_end, NULL) == NULL
                  ? LATCH_ERR_WRONG_THREAD
                  : 0;
    for (i = 0; i < NFOREIGN; i++)
        put_note(T_CALL, NULL, rc[i], foreign_lines[i]);
    /* The right way: run it on the loop (the handler retained res). */
    put_note(T_THREAD, NULL, latch_res_post(res, posted_end, NULL), 0);
    return NULL;
}

static int foreign_handler(latch_req *req, latch_res *res, const void *arg)
{
    int rc;

    (void)req;
    (void)arg;
    latch_res_retain(res);
    set_held(res);
    pthread_mutex_lock(&mu);
    rc = pthread_create(&sh.worker, NULL, foreign_thread, res);
    sh.worker_started = rc == 0;
    pthread_mutex_unlock(&mu);
    if (rc != 0) {
        latch_res_release(res);
        latch_res_send_status(res, 500);
    }
    put_note(T_READY, res, rc, 0);
    return LATCH_DONE;
}

/* Calls from another thread are refused with ERR_WRONG_THREAD and
 * reported where they were made; latch_res_post runs on the loop, where
 * the response is answered. */
static void test_wrong_thread_and_post(void **state)
{
    static const char want[] =
        "HTTP/1.1 200 OK\r\n" KA "Content-Length: 6\r\n\r\nposted";
    note calls[NFOREIGN];
    pthread_t worker;
    bool started;
    int fd, i;

    (void)state;
    srv_start(foreign_handler, NULL);
    fd = th_connect(srv.port);
    th_send_str(fd, REQ("/t"));
    expect_resp(fd, want);
    expect_ok_on(fd);
    close(fd);
    assert_true(wait_note(T_THREAD, 5000, NULL));
    pthread_mutex_lock(&mu);
    worker = sh.worker;
    started = sh.worker_started;
    pthread_mutex_unlock(&mu);
    assert_true(started);
    pthread_join(worker, NULL);
    assert_int_equal(get_note(T_READY).rc, 0);
    assert_int_equal(get_note(T_THREAD).rc, 0);
    assert_int_equal(get_note(T_POST).rc, 1); /* ran on the loop thread */
    assert_int_equal(get_note(T_X).rc, 0);
    assert_int_equal(notes_all(T_CALL, calls, NFOREIGN), NFOREIGN);
    for (i = 0; i < NFOREIGN; i++)
        assert_int_equal(calls[i].rc, LATCH_ERR_WRONG_THREAD);
    assert_int_equal(th_vlog_count(&vlog), NFOREIGN);
    for (i = 0; i < NFOREIGN; i++) {
        th_vrec v = vget(i);
        check_code(&v, LATCH_ERR_WRONG_THREAD);
        assert_string_equal(v.at_file, __FILE__);
        assert_int_equal(v.at_line, foreign_lines[i]);
        assert_string_equal(v.at_func, "foreign_thread");
        assert_true(v.sealed_call_null);
        assert_int_equal(v.request_id, get_note(T_READY).req_id);
    }
}

/* ------------------------------------------------------------------ */
/* Main                                                                 */
/* ------------------------------------------------------------------ */

#define NCELLS (C_COUNT * S_COUNT)

static cell cells[NCELLS];
static char cell_names[NCELLS][80];

#define T(f) cmocka_unit_test_setup_teardown(f, NULL, teardown)

int main(void)
{
    static struct CMUnitTest tests[NCELLS + 17];
    static const struct CMUnitTest rest[] = {
        T(test_error_names_and_messages),
        T(test_content_length_write_past),
        T(test_content_length_end_short_closes),
        T(test_invalid_char_refused),
        T(test_status_after_headers_reported),
        T(test_no_response_reported_and_500),
        T(test_retained_answered_later_not_reported),
        T(test_retained_released_unanswered_500),
        T(test_policy_count),
        T(test_site_counters),
        T(test_policy_abort_strict_env),
        T(test_finish_and_close_fire_once_in_order),
        T(test_destroy_mid_body_no_finish),
        T(test_client_reset_mid_body),
        T(test_tombstone_refuses_everything),
        T(test_write_high_water_and_drain),
        T(test_wrong_thread_and_post),
    };
    int n = 0;

    _Static_assert(sizeof(rest) / sizeof(rest[0]) == 17, "rest");
    for (int s = 0; s < S_COUNT; s++)
        for (int c = 0; c < C_COUNT; c++) {
            cells[n].state = s;
            cells[n].call = c;
            snprintf(cell_names[n], sizeof(cell_names[n]), "cell %s in %s",
                     call_name[c], state_name[s]);
            tests[n].name = cell_names[n];
            tests[n].test_func = test_cell;
            tests[n].setup_func = NULL;
            tests[n].teardown_func = teardown;
            tests[n].initial_state = &cells[n];
            n++;
        }
    for (size_t i = 0; i < sizeof(rest) / sizeof(rest[0]); i++)
        tests[n++] = rest[i];
    /* TEST_FILTER="cell write*" runs a subset (cmocka's glob). */
    if (getenv("TEST_FILTER") != NULL)
        cmocka_set_test_filter(getenv("TEST_FILTER"));
    return cmocka_run_group_tests(tests, NULL, NULL);
}
