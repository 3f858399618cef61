/*
 * test_res_node.c - the cases of shared/spec/node-semantics.md sections
 * A-D (the state model, headers after they were sent, framing and implicit
 * headers, end()/write() misuse) and F (HEAD, 204, 304), one test per
 * case, each with the exact bytes Node v20 puts on the wire (Date
 * normalized) and how the connection ends. latch sends Node's default
 * keep-alive headers (Connection: keep-alive, Keep-Alive: timeout=5) and
 * orders headers as Node does: the user's in insertion order, then Date,
 * Connection, Keep-Alive, then the automatic Content-Length or
 * Transfer-Encoding.
 *
 * Where latch deliberately differs from Node (DESIGN.md: a refused call is
 * reported; the status after the headers is refused), the test says so.
 * Not here: the full state table (test_res_states.c).
 */
/* Where the calls under test are made: reports must name this file. */
static const char test_file[] = __FILE__;
#include "res_probe.h"

/* ------------------------------------------------------------------ */
/* More client helpers                                                  */
/* ------------------------------------------------------------------ */

typedef struct until_m {
    int n;
    const char *method;
} until_m;

static bool until_one_m(const char *buf, size_t len, void *arg)
{
    until_m *u = arg;
    const char *methods[1] = {u->method};
    th_resp r[1];
    const char *err;
    int got = th_wire_parse(buf, len, methods, r, 1, false, &err);

    if (got > 0)
        th_resp_free(r, got);
    return got >= 1;
}

/* expect_resp for a request with `method` (HEAD has no body). */
static void expect_resp_m(int fd, const char *want, const char *method)
{
    until_m u = {1, method};
    const char *methods[1] = {method};
    size_t len;
    char *out = th_read(fd, &len, 5000, until_one_m, &u);
    char *norm = th_normalize(out, len);
    th_resp *r;

    if (th_last_end() != TH_OPEN)
        fail_msg("the connection ended (%d) after:\n%s", th_last_end(), out);
    r = th_expect_responses(out, len, 1, methods);
    assert_string_equal(norm, want);
    th_resp_free(r, 1);
    free(r);
    free(norm);
    free(out);
}

/* Sends req on a new connection, reads to the server's FIN, and asserts
 * the normalized bytes are exactly `want` (one response). */
static void expect_then_fin(const char *req, const char *want)
{
    int fd = th_connect(srv.port);
    size_t len;
    char *out, *norm;
    th_resp *r;

    th_send_str(fd, req);
    out = th_read(fd, &len, 5000, NULL, NULL);
    if (th_last_end() != TH_EOF)
        fail_msg("expected a FIN, got %d after:\n%s", th_last_end(), out);
    r = th_expect_responses(out, len, 1, NULL);
    norm = th_normalize(out, len);
    assert_string_equal(norm, want);
    th_resp_free(r, 1);
    free(r);
    free(norm);
    free(out);
    close(fd);
}

/* One GET on a new connection: exactly `want`, connection kept. */
static void expect_get(const char *path, const char *want)
{
    char req[256];
    int fd = th_connect(srv.port);

    snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", path);
    th_send_str(fd, req);
    expect_resp(fd, want);
    expect_ok_on(fd);
    close(fd);
}

static void check_flags(const note *n, bool hs, bool we, bool wf, bool ds)
{
    if (n->hs != hs || n->we != we || n->wf != wf || n->ds != ds)
        fail_msg("note %d: headers_sent=%d writable_ended=%d "
                 "writable_finished=%d destroyed=%d, expected %d %d %d %d",
                 n->tag, n->hs, n->we, n->wf, n->ds, hs, we, wf, ds);
}

/* The one report so far: its code, message and sites. */
static void check_one_report(int code, const char *message, const char *call,
                             int line, const char *func,
                             const char *sealed_call, int sealed_line)
{
    th_vrec v;

    assert_int_equal(th_vlog_count(&vlog), 1);
    v = vget(0);
    check_code(&v, code);
    if (message != NULL)
        assert_string_equal(v.message, message);
    check_sites(&v, call, line, func, sealed_call, sealed_line);
}

/* ------------------------------------------------------------------ */
/* A. The state model                                                   */
/* ------------------------------------------------------------------ */

enum { TL_START = 100, TL_SET, TL_WRITE, TL_END, TL_FINISH, TL_CLOSE };

static bool inside_end;

static void tl_finish(latch_res *res, void *data)
{
    (void)data;
    put_note(TL_FINISH, res, inside_end, 0);
    bump(K_FINISH);
}

static void tl_close(latch_res *res, void *data)
{
    (void)data;
    put_note(TL_CLOSE, res, inside_end, 0);
    bump(K_CLOSE);
}

static int timeline_handler(latch_req *req, latch_res *res, const void *arg)
{
    (void)req;
    (void)arg;
    latch_res_on_finish(res, tl_finish, NULL);
    latch_res_on_close(res, tl_close, NULL);
    put_note(TL_START, res, 0, 0);
    put_note(TL_SET, res,
             latch_res_set_header(res, "Content-Type", "text/plain"), 0);
    put_note(TL_WRITE, res, latch_res_write(res, "a", 1), 0);
    inside_end = true;
    put_note(TL_END, res, latch_res_end(res, "b", 1), 0);
    inside_end = false;
    return LATCH_DONE;
}

/* Case 2 [N7]: setHeader, write('a'), end('b'): the flags at each point,
 * 'finish' after end() returned (never inside it), then 'close', where
 * destroyed is true. */
static void test_case02_flag_timeline(void **state)
{
    static const char want[] =
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n" KA
        "Transfer-Encoding: chunked\r\n\r\n"
        "1\r\na\r\n1\r\nb\r\n0\r\n\r\n";
    note n = {0};
    int fd;

    (void)state;
    srv_start(timeline_handler, NULL);
    fd = th_connect(srv.port);
    th_send_str(fd, REQ("/t"));
    expect_resp(fd, want);
    assert_true(wait_count(K_CLOSE, 1, 5000));
    expect_ok_on(fd);
    close(fd);
    srv_stop();
    n = get_note(TL_START);
    check_flags(&n, false, false, false, false);
    n = get_note(TL_SET);
    assert_int_equal(n.rc, 0);
    check_flags(&n, false, false, false, false);
    n = get_note(TL_WRITE);
    assert_int_equal(n.rc, 1);
    check_flags(&n, true, false, false, false);
    n = get_note(TL_END);
    assert_int_equal(n.rc, 0);
    check_flags(&n, true, true, true, false); /* small body: finished */
    n = get_note(TL_FINISH);
    assert_int_equal(n.rc, 0); /* not inside end() */
    check_flags(&n, true, true, true, false);
    n = get_note(TL_CLOSE);
    assert_int_equal(n.rc, 0);
    check_flags(&n, true, true, true, true);
    assert_int_equal(count_of(K_FINISH), 1);
    assert_int_equal(count_of(K_CLOSE), 1);
    assert_true(first_of(K_FINISH) < first_of(K_CLOSE));
    assert_int_equal(th_vlog_count(&vlog), 0);
}

#define LARGE ((size_t)4 << 20)

static char *large_data;

static int large_handler(latch_req *req, latch_res *res, const void *arg)
{
    (void)req;
    (void)arg;
    latch_res_on_finish(res, tl_finish, NULL);
    latch_res_on_close(res, tl_close, NULL);
    put_note(TL_WRITE, res, latch_res_write(res, large_data, LARGE), 0);
    put_note(TL_END, res, latch_res_end(res, NULL, 0), 0);
    return LATCH_DONE;
}

/* Case 3 [N7b]: a large body to a client that does not read yet: write
 * returns 0 (Node: false), and right after end() writable_finished is
 * false; in 'finish' it is true; 'close' follows. */
static void test_case03_large_body_flags(void **state)
{
    struct sockaddr_in sa;
    int fd, small = 4096, large = 1 << 20;
    size_t len;
    char *out;
    th_resp *r;
    note n = {0};

    (void)state;
    large_data = malloc(LARGE);
    assert_non_null(large_data);
    for (size_t i = 0; i < LARGE; i++)
        large_data[i] = (char)('A' + i % 26);
    srv_start(large_handler, NULL);
    fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    assert_int_equal(
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small)), 0);
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)srv.port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    th_send_str(fd, REQ("/t"));
    assert_true(wait_note(TL_END, 5000, &n));
    assert_int_equal(n.rc, 0);
    check_flags(&n, true, true, false, false);
    n = get_note(TL_WRITE);
    assert_int_equal(n.rc, 0);
    /* Not finished while the client reads nothing. */
    assert_false(wait_count(K_FINISH, 1, 300));
    assert_int_equal(
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &large, sizeof(large)), 0);
    out = th_read(fd, &len, 20000, th_until_substr, "\r\n0\r\n\r\n");
    assert_int_equal(th_last_end(), TH_OPEN);
    r = th_expect_responses(out, len, 1, NULL);
    assert_int_equal(r[0].body_len, LARGE);
    assert_memory_equal(r[0].body, large_data, LARGE);
    th_resp_free(r, 1);
    free(r);
    free(out);
    assert_true(wait_count(K_CLOSE, 1, 5000));
    n = get_note(TL_FINISH);
    check_flags(&n, true, true, true, false);
    n = get_note(TL_CLOSE);
    check_flags(&n, true, true, true, true);
    assert_true(first_of(K_FINISH) < first_of(K_CLOSE));
    expect_ok_on(fd);
    close(fd);
    free(large_data);
    large_data = NULL;
}

static void abort_close(latch_res *res, void *data)
{
    (void)data;
    put_note(TL_CLOSE, res, latch_req_aborted(latch_res_req(res)), 0);
    bump(K_CLOSE);
}

static void release_post(latch_res *res, void *data)
{
    (void)data;
    put_note(T_POST, res, 0, 0);
    latch_res_release(res);
}

static int abandoned_handler(latch_req *req, latch_res *res, const void *arg)
{
    (void)arg;
    latch_res_retain(res);
    latch_res_on_finish(res, tl_finish, NULL);
    latch_res_on_close(res, abort_close, NULL);
    if (strcmp(latch_req_path(req), "/partial") == 0)
        latch_res_write(res, "part", 4);
    set_held(res);
    put_note(T_READY, res, latch_req_aborted(req), 0);
    return LATCH_DONE;
}

/* Case 5 [N12a, N12b]: the client leaves before end(): 'close' without
 * 'finish', destroyed true, writable_ended false, headers_sent as it was,
 * and the request is aborted. */
static void run_case05(const char *path, bool partial)
{
    char req[128];
    int fd;
    note n = {0};

    pthread_mutex_lock(&mu);
    memset(&sh, 0, sizeof(sh));
    pthread_mutex_unlock(&mu);
    fd = th_connect(srv.port);
    snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", path);
    th_send_str(fd, req);
    assert_true(wait_note(T_READY, 5000, &n));
    assert_int_equal(n.rc, 0); /* not aborted yet */
    if (partial) {
        size_t len;
        char *out = th_read(fd, &len, 5000, th_until_substr, "4\r\npart\r\n");
        assert_non_null(strstr(out, "4\r\npart\r\n"));
        free(out);
    }
    th_close_reset(fd);
    assert_true(wait_count(K_CLOSE, 1, 5000));
    n = get_note(TL_CLOSE);
    assert_int_equal(n.rc, 1); /* latch_req_aborted */
    check_flags(&n, partial, false, false, true);
    assert_int_equal(latch_res_post(held_res(), release_post, NULL), 0);
    assert_true(wait_note(T_POST, 5000, NULL));
    assert_int_equal(count_of(K_FINISH), 0);
    assert_int_equal(notes_with(TL_FINISH), 0);
}

static void test_case05_client_leaves_close_without_finish(void **state)
{
    (void)state;
    srv_start(abandoned_handler, NULL);
    run_case05("/partial", true);
    run_case05("/nothing", false);
    expect_server_ok();
    srv_stop();
    assert_int_equal(count_of(K_FINISH), 0);
    assert_int_equal(th_vlog_count(&vlog), 0);
}

/* Case 6 [N5]: writeHead builds the header block and sends nothing: no
 * byte arrives before the end (200 ms later, from a timer), then the whole
 * response, chunked. */
static void wh_end(latch_res *res, void *data)
{
    (void)data;
    put_note(TL_FINISH, res, 0, 0); /* flags just before the end */
    put_note(T_POST, res, latch_res_end(res, "body", 4), 0);
}

static int write_head_handler(latch_req *req, latch_res *res, const void *arg)
{
    (void)req;
    (void)arg;
    latch_res_set_header(res, "X-A", "1");
    put_note(T_SEAL, res, latch_res_write_head(res, 201), 0);
    put_note(T_READY, res, latch_set_timeout(res, 200, wh_end, NULL) != NULL,
             0);
    return LATCH_DONE;
}

static void test_case06_write_head_sends_nothing(void **state)
{
    static const char want[] = "HTTP/1.1 201 Created\r\nX-A: 1\r\n" KA
                               "Transfer-Encoding: chunked\r\n\r\n"
                               "4\r\nbody\r\n0\r\n\r\n";
    int fd;
    size_t len;
    char *out;
    note n = {0};

    (void)state;
    srv_start(write_head_handler, NULL);
    fd = th_connect(srv.port);
    th_send_str(fd, REQ("/t"));
    /* Nothing arrives in the first 100 ms; the end had not run by then
     * (so the silence proves something). */
    out = th_read(fd, &len, 100, NULL, NULL);
    assert_int_equal(th_last_end(), TH_OPEN);
    if (len != 0)
        fail_msg("bytes before the end:\n%s", out);
    free(out);
    assert_true(wait_note(T_READY, 5000, &n));
    assert_int_equal(n.rc, 1);
    assert_int_equal(notes_with(T_POST), 0);
    n = get_note(T_SEAL);
    assert_int_equal(n.rc, 0);
    check_flags(&n, true, false, false, false);
    expect_resp(fd, want);
    n = get_note(TL_FINISH);
    check_flags(&n, true, false, false, false);
    assert_int_equal(get_note(T_POST).rc, 0);
    expect_ok_on(fd);
    close(fd);
    assert_int_equal(th_vlog_count(&vlog), 0);
}

/* ------------------------------------------------------------------ */
/* B. Headers after they were sent                                      */
/* ------------------------------------------------------------------ */

static int after_write_handler(latch_req *req, latch_res *res, const void *arg)
{
    const char *p = latch_req_path(req);
    int line, rc, seal;

    (void)arg;
    latch_res_set_header(res, "X-A", "1");
    seal = __LINE__ + 1;
    latch_res_write(res, "chunk", 5);
    put_note(T_SEAL, res, 0, seal);
    if (strcmp(p, "/set") == 0) {
        line = __LINE__ + 1;
        rc = latch_res_set_header(res, "X-B", "2");
    } else if (strcmp(p, "/remove") == 0) {
        line = __LINE__ + 1;
        rc = latch_res_remove_header(res, "X-A");
    } else if (strcmp(p, "/append") == 0) {
        line = __LINE__ + 1;
        rc = latch_res_append_header(res, "X-A", "2");
    } else if (strcmp(p, "/clear") == 0) {
        line = __LINE__ + 1;
        rc = latch_res_clear_headers(res);
    } else {
        line = __LINE__ + 1;
        rc = latch_res_write_head(res, 404);
    }
    put_note(T_CALL, res, rc, line);
    {
        const char *v = latch_res_get_header(res, "X-A");
        put_note(T_X, res, v != NULL && strcmp(v, "1") == 0, 0);
    }
    latch_res_end(res, NULL, 0);
    return LATCH_DONE;
}

/* Cases 7, 8, 9 [N4]: after a write, setHeader, removeHeader,
 * appendHeader and writeHead throw ERR_HTTP_HEADERS_SENT with Node's verb;
 * getHeader still reads the stored value; the response goes on unharmed
 * with its original status line. */
static void test_case07_08_09_headers_after_write(void **state)
{
    static const char want[] =
        "HTTP/1.1 200 OK\r\nX-A: 1\r\n" KA "Transfer-Encoding: chunked\r\n\r\n"
        "5\r\nchunk\r\n0\r\n\r\n";
    static const struct {
        const char *path, *msg, *call;
    } cases[] = {
        {"/set", "Cannot set headers after they are sent to the client",
         "latch_res_set_header"},
        {"/remove", "Cannot remove headers after they are sent to the client",
         "latch_res_remove_header"},
        {"/append", "Cannot append headers after they are sent to the client",
         "latch_res_append_header"},
        {"/clear", "Cannot remove headers after they are sent to the client",
         "latch_res_clear_headers"},
        {"/write_head",
         "Cannot write headers after they are sent to the client",
         "latch_res_write_head"},
    };

    (void)state;
    srv_start(after_write_handler, NULL);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        th_vrec v;
        note call = {0};
        pthread_mutex_lock(&mu);
        sh.n = 0;
        pthread_mutex_unlock(&mu);
        expect_get(cases[i].path, want);
        assert_true(wait_note(T_CALL, 5000, &call));
        assert_int_equal(call.rc, LATCH_ERR_HTTP_HEADERS_SENT);
        assert_int_equal(get_note(T_X).rc, 1);
        assert_int_equal(th_vlog_count(&vlog), (int)i + 1);
        v = vget((int)i);
        check_code(&v, LATCH_ERR_HTTP_HEADERS_SENT);
        assert_string_equal(v.message, cases[i].msg);
        check_sites(&v, cases[i].call, call.line, "after_write_handler",
                    "latch_res_write", get_note(T_SEAL).line);
    }
}

static int twice_handler(latch_req *req, latch_res *res, const void *arg)
{
    int line, seal;

    (void)req;
    (void)arg;
    seal = __LINE__ + 1;
    put_note(T_SEAL, res, latch_res_write_head(res, 200), seal);
    line = __LINE__ + 1;
    put_note(T_CALL, res, latch_res_write_head(res, 100), line);
    line = __LINE__ + 1;
    put_note(T_X, res, latch_res_set_header(res, "X-B", "2"), line);
    latch_res_end(res, "ok", 2);
    return LATCH_DONE;
}

/* Case 10 [N5]: writeHead twice: the second throws ERR_HTTP_HEADERS_SENT
 * (assert the code, the verb changed across Node versions); setHeader
 * after writeHead throws "Cannot set headers". */
static void test_case10_write_head_twice(void **state)
{
    static const char want[] =
        "HTTP/1.1 200 OK\r\n" KA "Transfer-Encoding: chunked\r\n\r\n"
        "2\r\nok\r\n0\r\n\r\n";
    note seal, call, set;
    th_vrec v;

    (void)state;
    srv_start(twice_handler, NULL);
    expect_get("/t", want);
    seal = get_note(T_SEAL);
    call = get_note(T_CALL);
    set = get_note(T_X);
    assert_int_equal(seal.rc, 0);
    assert_int_equal(call.rc, LATCH_ERR_HTTP_HEADERS_SENT);
    assert_int_equal(set.rc, LATCH_ERR_HTTP_HEADERS_SENT);
    assert_int_equal(th_vlog_count(&vlog), 2);
    v = vget(0);
    check_code(&v, LATCH_ERR_HTTP_HEADERS_SENT);
    check_headers_sent_pattern(v.message);
    check_sites(&v, "latch_res_write_head", call.line, "twice_handler",
                "latch_res_write_head", seal.line);
    v = vget(1);
    check_code(&v, LATCH_ERR_HTTP_HEADERS_SENT);
    assert_string_equal(v.message,
                        "Cannot set headers after they are sent to the client");
    check_sites(&v, "latch_res_set_header", set.line, "twice_handler",
                "latch_res_write_head", seal.line);
}

static int set_after_end_handler(latch_req *req, latch_res *res,
                                 const void *arg)
{
    int line, seal;

    (void)req;
    (void)arg;
    seal = __LINE__ + 1;
    put_note(T_SEAL, res, latch_res_end(res, "ok", 2), seal);
    line = __LINE__ + 1;
    put_note(T_CALL, res, latch_res_set_header(res, "X-A", "1"), line);
    return LATCH_DONE;
}

/* Case 11 [N6]: setHeader after end throws; the wire is unaffected. */
static void test_case11_set_header_after_end(void **state)
{
    static const char want[] =
        "HTTP/1.1 200 OK\r\n" KA "Content-Length: 2\r\n\r\nok";

    (void)state;
    srv_start(set_after_end_handler, NULL);
    expect_get("/t", want);
    assert_int_equal(get_note(T_CALL).rc, LATCH_ERR_HTTP_HEADERS_SENT);
    check_one_report(LATCH_ERR_HTTP_HEADERS_SENT,
                     "Cannot set headers after they are sent to the client",
                     "latch_res_set_header", get_note(T_CALL).line,
                     "set_after_end_handler", "latch_res_end",
                     get_note(T_SEAL).line);
}

static int bad_status_lines[5];

static int bad_status_handler(latch_req *req, latch_res *res, const void *arg)
{
    int rc[5], i = 0;

    (void)req;
    (void)arg;
    bad_status_lines[i] = __LINE__ + 1;
    rc[i++] = latch_res_status(res, 99);
    bad_status_lines[i] = __LINE__ + 1;
    rc[i++] = latch_res_status(res, 1000);
    bad_status_lines[i] = __LINE__ + 1;
    rc[i++] = latch_res_write_head(res, 99);
    bad_status_lines[i] = __LINE__ + 1;
    rc[i++] = latch_res_write_head(res, 1000);
    bad_status_lines[i] = __LINE__ + 1;
    rc[i++] = latch_res_send_status(res, 99);
    for (i = 0; i < 5; i++)
        put_note(T_CALL, res, rc[i], bad_status_lines[i]);
    put_note(T_X, res, latch_res_get_status(res), 0);
    /* Still FRESH: a valid end goes out as a 200. */
    latch_res_end(res, "ok", 2);
    return LATCH_DONE;
}

/* Case 14: status 99 and 1000 are refused with
 * ERR_HTTP_INVALID_STATUS_CODE "Invalid status code: 99"; nothing was
 * built, so the response can still answer. */
static void test_case14_invalid_status_code(void **state)
{
    static const char want[] =
        "HTTP/1.1 200 OK\r\n" KA "Content-Length: 2\r\n\r\nok";
    static const char *const calls[5] = {
        "latch_res_status", "latch_res_status", "latch_res_write_head",
        "latch_res_write_head", "latch_res_send_status"};
    static const int codes[5] = {99, 1000, 99, 1000, 99};
    note n[5];

    (void)state;
    srv_start(bad_status_handler, NULL);
    expect_get("/t", want);
    assert_int_equal(notes_all(T_CALL, n, 5), 5);
    assert_int_equal(get_note(T_X).rc, 200);
    assert_int_equal(th_vlog_count(&vlog), 5);
    for (int i = 0; i < 5; i++) {
        char msg[64];
        th_vrec v = vget(i);
        assert_int_equal(n[i].rc, LATCH_ERR_HTTP_INVALID_STATUS_CODE);
        check_code(&v, LATCH_ERR_HTTP_INVALID_STATUS_CODE);
        snprintf(msg, sizeof(msg), "Invalid status code: %d", codes[i]);
        assert_string_equal(v.message, msg);
        check_sites(&v, calls[i], bad_status_lines[i], "bad_status_handler",
                    NULL, 0);
    }
}

/* ------------------------------------------------------------------ */
/* C. Framing and implicit headers                                      */
/* ------------------------------------------------------------------ */

static int framing_handler(latch_req *req, latch_res *res, const void *arg)
{
    const char *p = latch_req_path(req);
    char buf[4096];
    int rc[4] = {0, 0, 0, 0};

    (void)arg;
    if (strcmp(p, "/c15") == 0) {
        rc[0] = latch_res_end(res, NULL, 0);
    } else if (strcmp(p, "/c16") == 0) {
        rc[0] = latch_res_end(res, "h\xc3\xa9llo", 6);
    } else if (strcmp(p, "/c17") == 0) {
        rc[0] = latch_res_write(res, "ab", 2);
        rc[1] = latch_res_write(res, "", 0);
        rc[2] = latch_res_end(res, "cd", 2);
    } else if (strcmp(p, "/c17empty") == 0) {
        rc[0] = latch_res_write(res, "ab", 2);
        rc[1] = latch_res_write(res, "", 0);
        rc[2] = latch_res_end(res, NULL, 0);
    } else if (strcmp(p, "/c17hex") == 0) {
        memset(buf, 'x', sizeof(buf));
        rc[0] = latch_res_write(res, buf, 26);
        rc[1] = latch_res_write(res, buf, 255);
        rc[2] = latch_res_write(res, buf, 4096);
        rc[3] = latch_res_end(res, buf, 171);
    } else if (strcmp(p, "/c18") == 0) {
        latch_res_set_header(res, "Content-Length", "4");
        rc[0] = latch_res_write(res, "ab", 2);
        rc[1] = latch_res_write(res, "cd", 2);
        rc[2] = latch_res_end(res, NULL, 0);
    } else if (strcmp(p, "/c18end") == 0) {
        latch_res_set_header(res, "Content-Length", "4");
        rc[0] = latch_res_end(res, "abcd", 4);
    } else if (strcmp(p, "/c19") == 0) {
        rc[0] = latch_res_write(res, "ab", 2);
        rc[1] = latch_res_end(res, "cd", 2);
    } else if (strcmp(p, "/c20") == 0) {
        rc[0] = latch_res_end(res, "x", 1);
    }
    put_note(T_CALL, res, rc[0], 0);
    put_note(T_CALL, res, rc[1], 0);
    put_note(T_CALL, res, rc[2], 0);
    put_note(T_CALL, res, rc[3], 0);
    return LATCH_DONE;
}

/* The four return codes the framing handler noted for its last request. */
static void expect_rcs(int a, int b, int c, int d)
{
    note n[NOTES_MAX];
    int k = notes_all(T_CALL, n, NOTES_MAX);

    assert_true(k >= 4);
    assert_int_equal(n[k - 4].rc, a);
    assert_int_equal(n[k - 3].rc, b);
    assert_int_equal(n[k - 2].rc, c);
    assert_int_equal(n[k - 1].rc, d);
}

/* Case 15 [N8a]: end() with no data: Content-Length: 0. */
static void test_case15_end_no_data(void **state)
{
    (void)state;
    srv_start(framing_handler, NULL);
    expect_get("/c15", "HTTP/1.1 200 OK\r\n" KA "Content-Length: 0\r\n\r\n");
    expect_rcs(0, 0, 0, 0);
    assert_int_equal(th_vlog_count(&vlog), 0);
}

/* Case 16 [N8b]: end(data) alone: Content-Length is the byte length. */
static void test_case16_content_length_is_bytes(void **state)
{
    (void)state;
    srv_start(framing_handler, NULL);
    expect_get("/c16", "HTTP/1.1 200 OK\r\n" KA
                       "Content-Length: 6\r\n\r\nh\xc3\xa9llo");
    expect_rcs(0, 0, 0, 0);
}

/* Case 17 [N8c]: write without a length: chunked, lowercase hex sizes, an
 * empty write emits nothing (never an early 0\r\n\r\n). */
static void test_case17_chunked(void **state)
{
    char want[8192], body[4096];
    int n;

    (void)state;
    srv_start(framing_handler, NULL);
    expect_get("/c17",
               "HTTP/1.1 200 OK\r\n" KA "Transfer-Encoding: chunked\r\n\r\n"
               "2\r\nab\r\n2\r\ncd\r\n0\r\n\r\n");
    expect_rcs(1, 1, 0, 0);
    expect_get("/c17empty",
               "HTTP/1.1 200 OK\r\n" KA "Transfer-Encoding: chunked\r\n\r\n"
               "2\r\nab\r\n0\r\n\r\n");
    expect_rcs(1, 1, 0, 0);
    memset(body, 'x', sizeof(body));
    n = snprintf(want, sizeof(want),
                 "HTTP/1.1 200 OK\r\n" KA "Transfer-Encoding: chunked\r\n\r\n"
                 "1a\r\n%.26s\r\nff\r\n%.255s\r\n1000\r\n",
                 body, body);
    memcpy(want + n, body, 4096);
    n += 4096;
    n += snprintf(want + n, sizeof(want) - (size_t)n,
                  "\r\nab\r\n%.171s\r\n0\r\n\r\n", body);
    expect_get("/c17hex", want);
    expect_rcs(1, 1, 1, 0);
    assert_int_equal(th_vlog_count(&vlog), 0);
}

/* Case 18 [N8f]: an explicit Content-Length: no chunking, the header where
 * the user set it (before Date). */
static void test_case18_explicit_content_length(void **state)
{
    static const char want[] =
        "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n" KA "\r\nabcd";

    (void)state;
    srv_start(framing_handler, NULL);
    expect_get("/c18", want);
    expect_rcs(1, 1, 0, 0);
    expect_get("/c18end", want);
    expect_rcs(0, 0, 0, 0);
    assert_int_equal(th_vlog_count(&vlog), 0);
}

/* Case 19 [N8d, N8e]: HTTP/1.0 and a body of unknown length: no chunking,
 * Connection: close, the body ends with the FIN; also when the client
 * asked for keep-alive. */
static void test_case19_http10_close_delimited(void **state)
{
    static const char want[] = "HTTP/1.1 200 OK\r\nDate: <d>\r\n"
                               "Connection: close\r\n\r\nabcd";

    (void)state;
    srv_start(framing_handler, NULL);
    expect_then_fin("GET /c19 HTTP/1.0\r\n\r\n", want);
    expect_rcs(1, 0, 0, 0);
    expect_then_fin("GET /c19 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
                    "GET /ok HTTP/1.0\r\n\r\n",
                    want);
    expect_rcs(1, 0, 0, 0);
    assert_int_equal(th_vlog_count(&vlog), 0);
}

/* Case 20 [N8g]: a request with Connection: close: said back, then FIN;
 * the request pipelined after it is not answered. */
static void test_case20_connection_close(void **state)
{
    (void)state;
    srv_start(framing_handler, NULL);
    expect_then_fin("GET /c20 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                    "GET /ok HTTP/1.1\r\nHost: x\r\n\r\n",
                    "HTTP/1.1 200 OK\r\nDate: <d>\r\nConnection: close\r\n"
                    "Content-Length: 1\r\n\r\nx");
    expect_rcs(0, 0, 0, 0);
}

static void flush_end(latch_res *res, void *data)
{
    (void)data;
    put_note(T_POST, res, latch_res_end(res, "late", 4), 0);
    latch_res_release(res);
}

static int flush_handler(latch_req *req, latch_res *res, const void *arg)
{
    (void)req;
    (void)arg;
    latch_res_retain(res);
    put_note(T_SEAL, res, latch_res_flush_headers(res), 0);
    set_held(res);
    return LATCH_DONE;
}

/* Case 21 [N8h]: flushHeaders sends the header block at once (before any
 * end); a later end('late') goes out chunked. */
static void test_case21_flush_headers(void **state)
{
    static const char head[] =
        "HTTP/1.1 200 OK\r\n" KA "Transfer-Encoding: chunked\r\n\r\n";
    int fd;
    size_t len;
    char *out, *norm;
    note n = {0};

    (void)state;
    srv_start(flush_handler, NULL);
    fd = th_connect(srv.port);
    th_send_str(fd, REQ("/t"));
    out = th_read(fd, &len, 5000, th_until_substr, "\r\n\r\n");
    assert_int_equal(th_last_end(), TH_OPEN);
    norm = th_normalize(out, len);
    assert_string_equal(norm, head);
    free(norm);
    free(out);
    /* The end has not run: the test itself triggers it now. */
    assert_int_equal(notes_with(T_POST), 0);
    n = get_note(T_SEAL);
    assert_int_equal(n.rc, 0);
    check_flags(&n, true, false, false, false);
    assert_int_equal(latch_res_post(held_res(), flush_end, NULL), 0);
    {
        size_t want = strlen("4\r\nlate\r\n0\r\n\r\n");
        out = th_read(fd, &len, 5000, th_until_bytes, &want);
    }
    assert_int_equal(th_last_end(), TH_OPEN);
    assert_string_equal(out, "4\r\nlate\r\n0\r\n\r\n");
    free(out);
    assert_int_equal(get_note(T_POST).rc, 0);
    expect_ok_on(fd);
    close(fd);
    assert_int_equal(th_vlog_count(&vlog), 0);
}

static int order_handler(latch_req *req, latch_res *res, const void *arg)
{
    const char *p = latch_req_path(req);

    (void)arg;
    if (strcmp(p, "/order") == 0) {
        latch_res_set_header(res, "X-B", "2");
        latch_res_set_header(res, "X-A", "1");
        latch_res_set_header(res, "X-C", "3");
        latch_res_set_header(res, "X-B", "4"); /* replaced in place */
        latch_res_remove_header(res, "X-A");
        latch_res_set_header(res, "X-A", "5"); /* back, at the end */
        latch_res_end(res, "ok", 2);
    } else if (strcmp(p, "/user-cl") == 0) {
        latch_res_set_header(res, "Content-Length", "2");
        latch_res_set_header(res, "X-C", "c");
        latch_res_end(res, "ok", 2);
    } else if (strcmp(p, "/user-te") == 0) {
        latch_res_set_header(res, "X-D", "d");
        latch_res_set_header(res, "Transfer-Encoding", "chunked");
        latch_res_set_header(res, "X-E", "e");
        latch_res_write(res, "ab", 2);
        latch_res_end(res, NULL, 0);
    } else if (strcmp(p, "/append") == 0) {
        latch_res_set_header(res, "X-B", "1");
        latch_res_set_header(res, "X-A", "1");
        latch_res_append_header(res, "X-B", "2");
        latch_res_end(res, "ok", 2);
    }
    return LATCH_DONE;
}

/* Case 22 [N4, N8*]: user headers in insertion order (a replaced value
 * keeps its place, a removed and re-set one goes last), then Date,
 * Connection, Keep-Alive, then the automatic framing header; a framing
 * header the user set stays where the user put it. */
static void test_case22_header_order(void **state)
{
    (void)state;
    srv_start(order_handler, NULL);
    expect_get("/order", "HTTP/1.1 200 OK\r\nX-B: 4\r\nX-C: 3\r\nX-A: 5\r\n" KA
                         "Content-Length: 2\r\n\r\nok");
    expect_get("/user-cl", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n"
                           "X-C: c\r\n" KA "\r\nok");
    expect_get("/user-te", "HTTP/1.1 200 OK\r\nX-D: d\r\n"
                           "Transfer-Encoding: chunked\r\nX-E: e\r\n" KA
                           "\r\n2\r\nab\r\n0\r\n\r\n");
    assert_int_equal(th_vlog_count(&vlog), 0);
}

/* Node's appendHeader adds a value to the existing entry, and
 * _storeHeader prints all values of an entry together at the entry's
 * place (lib/_http_outgoing.js appendHeader, processHeader). */
static void test_case22_appended_value_stays_with_its_name(void **state)
{
    (void)state;
    srv_start(order_handler, NULL);
    expect_get("/append", "HTTP/1.1 200 OK\r\nX-B: 1\r\nX-B: 2\r\nX-A: 1\r\n" KA
                          "Content-Length: 2\r\n\r\nok");
}

/* ------------------------------------------------------------------ */
/* D. end() and write() misuse                                          */
/* ------------------------------------------------------------------ */

static int misuse_handler(latch_req *req, latch_res *res, const void *arg)
{
    const char *p = latch_req_path(req);
    int line = 0, rc = 0, seal = 0;

    (void)arg;
    if (strcmp(p, "/c23") == 0) {
        seal = __LINE__ + 1;
        put_note(T_SEAL, res, latch_res_end(res, NULL, 0), seal);
        line = __LINE__ + 1;
        rc = latch_res_end(res, NULL, 0);
    } else if (strcmp(p, "/c25") == 0) {
        seal = __LINE__ + 1;
        put_note(T_SEAL, res, latch_res_end(res, "first", 5), seal);
        line = __LINE__ + 1;
        rc = latch_res_end(res, "second", 6);
    } else if (strcmp(p, "/c27") == 0) {
        latch_res_write(res, "a", 1);
        seal = __LINE__ + 1;
        put_note(T_SEAL, res, latch_res_end(res, NULL, 0), seal);
        line = __LINE__ + 1;
        rc = latch_res_write(res, "b", 1);
    }
    put_note(T_CALL, res, rc, line);
    return LATCH_DONE;
}

/* Case 23 [N1]: end() twice without data: a silent no-op (0, no bytes, no
 * report). */
static void test_case23_end_twice_silent(void **state)
{
    (void)state;
    srv_start(misuse_handler, NULL);
    expect_get("/c23", "HTTP/1.1 200 OK\r\n" KA "Content-Length: 0\r\n\r\n");
    assert_int_equal(get_note(T_SEAL).rc, 0);
    assert_int_equal(get_note(T_CALL).rc, 0);
    srv_stop();
    assert_int_equal(th_vlog_count(&vlog), 0);
}

/* Case 25 [N3]: end(data) after end(): nothing reaches the wire; Node's
 * deferred ERR_STREAM_WRITE_AFTER_END is latch's return code and report. */
static void test_case25_end_data_after_end(void **state)
{
    (void)state;
    srv_start(misuse_handler, NULL);
    expect_get("/c25",
               "HTTP/1.1 200 OK\r\n" KA "Content-Length: 5\r\n\r\nfirst");
    assert_int_equal(get_note(T_CALL).rc, LATCH_ERR_STREAM_WRITE_AFTER_END);
    check_one_report(LATCH_ERR_STREAM_WRITE_AFTER_END, "write after end",
                     "latch_res_end", get_note(T_CALL).line, "misuse_handler",
                     "latch_res_end", get_note(T_SEAL).line);
}

/* Case 27 [N2a]: write after end in the same tick: refused (Node: false
 * and ERR_STREAM_WRITE_AFTER_END), the original response unchanged. */
static void test_case27_write_after_end(void **state)
{
    (void)state;
    srv_start(misuse_handler, NULL);
    expect_get("/c27",
               "HTTP/1.1 200 OK\r\n" KA "Transfer-Encoding: chunked\r\n\r\n"
               "1\r\na\r\n0\r\n\r\n");
    assert_int_equal(get_note(T_CALL).rc, LATCH_ERR_STREAM_WRITE_AFTER_END);
    check_one_report(LATCH_ERR_STREAM_WRITE_AFTER_END, "write after end",
                     "latch_res_write", get_note(T_CALL).line, "misuse_handler",
                     "latch_res_end", get_note(T_SEAL).line);
}

static void write_after_close(latch_res *res, void *data)
{
    int line, rc;

    (void)data;
    put_note(T_TOMB, res, 0, 0);
    line = __LINE__ + 1;
    rc = latch_res_write(res, "b", 1);
    put_note(T_CALL, res, rc, line);
    latch_res_release(res);
}

static int end_retained_handler(latch_req *req, latch_res *res, const void *arg)
{
    int seal;

    (void)req;
    (void)arg;
    latch_res_retain(res);
    latch_res_on_close(res, tl_close, NULL);
    seal = __LINE__ + 1;
    put_note(T_SEAL, res, latch_res_end(res, "x", 1), seal);
    set_held(res);
    return LATCH_DONE;
}

/* Case 28 [N2c, N2d]: write after 'close' (destroyed is true by then):
 * the finished check comes first, so ERR_STREAM_WRITE_AFTER_END, not
 * ERR_STREAM_DESTROYED; no bytes. */
static void test_case28_write_after_close(void **state)
{
    note t, call;
    int fd;

    (void)state;
    srv_start(end_retained_handler, NULL);
    fd = th_connect(srv.port);
    th_send_str(fd, REQ("/t"));
    expect_resp(fd, "HTTP/1.1 200 OK\r\n" KA "Content-Length: 1\r\n\r\nx");
    assert_true(wait_count(K_CLOSE, 1, 5000));
    assert_int_equal(latch_res_post(held_res(), write_after_close, NULL), 0);
    assert_true(wait_note(T_CALL, 5000, &call));
    t = get_note(T_TOMB);
    check_flags(&t, true, true, true, true);
    assert_int_equal(call.rc, LATCH_ERR_STREAM_WRITE_AFTER_END);
    expect_ok_on(fd);
    close(fd);
    check_one_report(LATCH_ERR_STREAM_WRITE_AFTER_END, "write after end",
                     "latch_res_write", call.line, "write_after_close",
                     "latch_res_end", get_note(T_SEAL).line);
}

static int null_lines[3];

static int null_write_handler(latch_req *req, latch_res *res, const void *arg)
{
    const char *p = latch_req_path(req);
    int rc;

    (void)arg;
    if (strcmp(p, "/fresh") == 0) {
        null_lines[0] = __LINE__ + 1;
        rc = latch_res_write(res, NULL, 3);
        put_note(T_CALL, res, rc, null_lines[0]);
        latch_res_end(res, "ok", 2);
    } else if (strcmp(p, "/ended") == 0) {
        latch_res_end(res, "ok", 2);
        null_lines[1] = __LINE__ + 1;
        rc = latch_res_write(res, NULL, 3);
        put_note(T_CALL, res, rc, null_lines[1]);
    } else {
        latch_res_destroy(res);
        null_lines[2] = __LINE__ + 1;
        rc = latch_res_write(res, NULL, 3);
        put_note(T_CALL, res, rc, null_lines[2]);
    }
    return LATCH_DONE;
}

/* Case 29: write(NULL, 3) is refused as an invalid argument before the
 * state is looked at: also after end() and after destroy. */
static void test_case29_write_null(void **state)
{
    static const char want[] =
        "HTTP/1.1 200 OK\r\n" KA "Content-Length: 2\r\n\r\nok";
    note n[3];
    int fd;

    (void)state;
    srv_start(null_write_handler, NULL);
    expect_get("/fresh", want);
    expect_get("/ended", want);
    fd = th_connect(srv.port);
    th_send_str(fd, REQ("/destroyed"));
    expect_nothing_then_fin(fd);
    close(fd);
    /* The FIN comes inside destroy(), the last note after it returned. */
    assert_true(wait_notes(T_CALL, 3, 5000));
    assert_int_equal(notes_all(T_CALL, n, 3), 3);
    assert_int_equal(th_vlog_count(&vlog), 3);
    for (int i = 0; i < 3; i++) {
        th_vrec v = vget(i);
        assert_int_equal(n[i].rc, LATCH_ERR_INVALID_ARG);
        check_code(&v, LATCH_ERR_INVALID_ARG);
        assert_string_equal(v.call, "latch_res_write");
        assert_string_equal(v.at_file, __FILE__);
        assert_int_equal(v.at_line, null_lines[i]);
    }
}

/* ------------------------------------------------------------------ */
/* F. HEAD, 204, 304                                                    */
/* ------------------------------------------------------------------ */

static int nobody_handler(latch_req *req, latch_res *res, const void *arg)
{
    const char *p = latch_req_path(req);
    int rc[2] = {0, 0};

    (void)arg;
    if (strcmp(p, "/end") == 0) {
        rc[0] = latch_res_end(res, "body", 4);
    } else if (strcmp(p, "/write") == 0) {
        rc[0] = latch_res_write(res, "body", 4);
        rc[1] = latch_res_end(res, NULL, 0);
    } else if (strcmp(p, "/cl") == 0) {
        latch_res_set_header(res, "Content-Length", "4");
        rc[0] = latch_res_end(res, "body", 4);
    } else if (strcmp(p, "/204") == 0) {
        latch_res_status(res, 204);
        latch_res_set_header(res, "Content-Type", "text/plain");
        rc[0] = latch_res_write(res, "body", 4);
        rc[1] = latch_res_end(res, "body", 4);
    } else if (strcmp(p, "/304cl") == 0) {
        latch_res_status(res, 304);
        latch_res_set_header(res, "Content-Length", "4");
        rc[0] = latch_res_end(res, "body", 4);
    } else if (strcmp(p, "/204te") == 0) {
        latch_res_status(res, 204);
        latch_res_set_header(res, "Transfer-Encoding", "chunked");
        rc[0] = latch_res_write(res, "body", 4);
        rc[1] = latch_res_end(res, NULL, 0);
    }
    put_note(T_CALL, res, rc[0], 0);
    put_note(T_X, res, rc[1], 0);
    return LATCH_DONE;
}

static void expect_head(const char *path, const char *want)
{
    char req[128];
    int fd = th_connect(srv.port);

    snprintf(req, sizeof(req), "HEAD %s HTTP/1.1\r\nHost: x\r\n\r\n", path);
    th_send_str(fd, req);
    expect_resp_m(fd, want, "HEAD");
    /* No body bytes were sent: the next response parses cleanly. */
    expect_ok_on(fd);
    close(fd);
}

/* Case 37 [N9a, N9b]: HEAD with end('body') or write('body'): the body is
 * dropped silently, no automatic Content-Length, write returns 1; the
 * connection stays open. */
static void test_case37_head_drops_body(void **state)
{
    static const char want[] = "HTTP/1.1 200 OK\r\n" KA "\r\n";

    (void)state;
    srv_start(nobody_handler, NULL);
    expect_head("/end", want);
    assert_int_equal(get_note(T_CALL).rc, 0);
    expect_head("/write", want);
    assert_int_equal(get_note(T_CALL).rc, 1);
    assert_int_equal(get_note(T_X).rc, 0);
    assert_int_equal(th_vlog_count(&vlog), 0);
}

/* Case 38 [N9c]: HEAD with an explicit Content-Length keeps it; no body. */
static void test_case38_head_explicit_length(void **state)
{
    (void)state;
    srv_start(nobody_handler, NULL);
    expect_head("/cl", "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n" KA "\r\n");
    assert_int_equal(get_note(T_CALL).rc, 0);
    assert_int_equal(th_vlog_count(&vlog), 0);
}

/* Case 40 [N10a, N10e]: 204/304 with a body: dropped, write returns 1,
 * Content-Type kept, an explicit Content-Length kept, no
 * Transfer-Encoding; the connection stays open. */
static void test_case40_204_304_drop_body(void **state)
{
    (void)state;
    srv_start(nobody_handler, NULL);
    expect_get("/204", "HTTP/1.1 204 No Content\r\n"
                       "Content-Type: text/plain\r\n" KA "\r\n");
    assert_int_equal(get_note(T_CALL).rc, 1);
    assert_int_equal(get_note(T_X).rc, 0);
    expect_get("/304cl", "HTTP/1.1 304 Not Modified\r\n"
                         "Content-Length: 4\r\n" KA "\r\n");
    assert_int_equal(get_note(T_CALL).rc, 0);
    assert_int_equal(th_vlog_count(&vlog), 0);
}

/* Case 41 [N10c]: 204 with a user-set Transfer-Encoding: chunked: kept,
 * no zero chunk, Connection: close forced, then FIN (the pipelined
 * request is not answered). */
static void test_case41_204_chunked_closes(void **state)
{
    (void)state;
    srv_start(nobody_handler, NULL);
    expect_then_fin(REQ("/204te") REQ("/ok"),
                    "HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\n"
                    "Date: <d>\r\nConnection: close\r\n\r\n");
    assert_int_equal(get_note(T_CALL).rc, 1);
    assert_int_equal(get_note(T_X).rc, 0);
    assert_int_equal(th_vlog_count(&vlog), 0);
}

/* ------------------------------------------------------------------ */
/* Main                                                                 */
/* ------------------------------------------------------------------ */

#define T(f) cmocka_unit_test_setup_teardown(f, NULL, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_case02_flag_timeline),
        T(test_case03_large_body_flags),
        T(test_case05_client_leaves_close_without_finish),
        T(test_case06_write_head_sends_nothing),
        T(test_case07_08_09_headers_after_write),
        T(test_case10_write_head_twice),
        T(test_case11_set_header_after_end),
        T(test_case14_invalid_status_code),
        T(test_case15_end_no_data),
        T(test_case16_content_length_is_bytes),
        T(test_case17_chunked),
        T(test_case18_explicit_content_length),
        T(test_case19_http10_close_delimited),
        T(test_case20_connection_close),
        T(test_case21_flush_headers),
        T(test_case22_header_order),
        T(test_case22_appended_value_stays_with_its_name),
        T(test_case23_end_twice_silent),
        T(test_case25_end_data_after_end),
        T(test_case27_write_after_end),
        T(test_case28_write_after_close),
        T(test_case29_write_null),
        T(test_case37_head_drops_body),
        T(test_case38_head_explicit_length),
        T(test_case40_204_304_drop_body),
        T(test_case41_204_chunked_closes),
    };

    if (getenv("TEST_FILTER") != NULL)
        cmocka_set_test_filter(getenv("TEST_FILTER"));
    return cmocka_run_group_tests(tests, NULL, NULL);
}
