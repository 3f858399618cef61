/*
 * test_claimed.c - a response given to a producer is answered by it.
 *
 * Express's `res.sendFile(path); next()`, a pipe started and then the
 * chain moved on, a proxied request whose handler also forwards an error:
 * the response has not sent a byte yet (the file is being opened, the
 * upstream connected), so nothing sealed it, but a producer owns it. The
 * chain moving on from it is a second answer. Each shape below must give
 * the producer's bytes on the wire, never run the next handler or an
 * error handler, report ERR_NEXT_AFTER_RESPONSE once with the place it
 * happened and the producer's call as where the response was sealed, and
 * call the producer's done exactly once with 0.
 *
 * The same for a body call made beside a producer of latch's own (a file,
 * the proxy): Express's res.sendFile() and a forgotten return before
 * res.send(). The call is refused (ERR_HTTP_HEADERS_SENT, the producer's
 * call as the seal) and the producer's bytes go out.
 *
 * And what must stay quiet: the proxy's on_error hook answering its own
 * 502; a producer that failed (latch_res_pipe_fail)
 * hands the response to the error handlers; a request timeout while a
 * file is still opening answers through them too.
 */
#include "harness.h"

#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cmocka.h>
#include <uv.h>

/* ------------------------------------------------------------------ */
/* Reports                                                              */
/* ------------------------------------------------------------------ */

typedef struct report {
    int code;
    char call[64];
    char sealed_call[64];
    char path[128];
    int at_line, sealed_line;
} report;

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static report reps[16];
static atomic_int nreps;

static void on_violation(const latch_violation *v, void *data)
{
    (void)data;
    pthread_mutex_lock(&mu);
    int i = atomic_load(&nreps);
    if (i < 16) {
        report *r = &reps[i];
        r->code = v->code;
        snprintf(r->call, sizeof(r->call), "%s", v->call ? v->call : "");
        snprintf(r->sealed_call, sizeof(r->sealed_call), "%s",
                 v->sealed_call ? v->sealed_call : "");
        snprintf(r->path, sizeof(r->path), "%s", v->path ? v->path : "");
        r->at_line = v->at.line;
        r->sealed_line = v->sealed_at.line;
    }
    atomic_fetch_add(&nreps, 1);
    pthread_mutex_unlock(&mu);
}

/* ------------------------------------------------------------------ */
/* Handlers                                                             */
/* ------------------------------------------------------------------ */

static char file_path[256];
static const char file_body[] = "the file's own bytes\n";
static atomic_int next_runs, error_runs, dones, last_status = 12345;
static atomic_int line_claim, line_move;

static void count_done(latch_res *res, int status, void *data)
{
    (void)res;
    (void)data;
    atomic_fetch_add(&dones, 1);
    atomic_store(&last_status, status);
}

/* A pipe that writes its body at the first pull. */
static void pull_body(latch_res *res, void *data)
{
    (void)data;
    latch_res_end(res, "piped body", 10);
}

static int sendfile_then_next(latch_req *req, latch_res *res, void *data)
{
    (void)req;
    (void)data;
    atomic_store(&line_claim, __LINE__ + 1);
    latch_res_sendfile(res, file_path, NULL, count_done, NULL);
    atomic_store(&line_move, __LINE__ + 1);
    return LATCH_NEXT;
}

static int pipe_then_next_inside(latch_req *req, latch_res *res, void *data)
{
    (void)data;
    atomic_store(&line_claim, __LINE__ + 1);
    latch_res_pipe(res, pull_body, count_done, NULL);
    atomic_store(&line_move, __LINE__ + 1);
    latch_next(req);
    return LATCH_DONE;
}

static void next_later(latch_res *res, void *data)
{
    (void)data;
    atomic_store(&line_move, __LINE__ + 1);
    latch_next(latch_res_req(res));
    latch_res_end(res, "piped body", 10); /* the producer's data came */
}

/* A producer whose source is slower than the client: it writes when its
 * data comes (next_later), not at the pull. */
static void pull_nothing_yet(latch_res *res, void *data)
{
    (void)res;
    (void)data;
}

/* Async middleware: the pipe is made, then the chain resumed later. */
static int pipe_then_pending(latch_req *req, latch_res *res, void *data)
{
    (void)req;
    (void)data;
    atomic_store(&line_claim, __LINE__ + 1);
    latch_res_pipe(res, pull_nothing_yet, count_done, NULL);
    latch_set_timeout(res, 20, next_later, NULL);
    return LATCH_PENDING;
}

static int sendfile_then_fail(latch_req *req, latch_res *res, void *data)
{
    (void)data;
    atomic_store(&line_claim, __LINE__ + 1);
    latch_res_sendfile(res, file_path, NULL, count_done, NULL);
    atomic_store(&line_move, __LINE__ + 1);
    return latch_fail(req, 500, "after the file");
}

static int sendfile_then_error_return(latch_req *req, latch_res *res,
                                      void *data)
{
    (void)req;
    (void)data;
    atomic_store(&line_claim, __LINE__ + 1);
    latch_res_sendfile(res, file_path, NULL, count_done, NULL);
    atomic_store(&line_move, __LINE__ + 1);
    return LATCH_ERR_INVALID_ARG;
}

static th_server srv;

/* Proxies to this server's /origin/<path>, recording the line. */
static void proxy_to_origin(latch_req *req, latch_res *res)
{
    char up[64];

    snprintf(up, sizeof(up), "http://127.0.0.1:%d/origin", srv.port);
    atomic_store(&line_claim, __LINE__ + 1);
    latch_proxy(req, res, up, NULL);
}

static int proxy_then_next(latch_req *req, latch_res *res, void *data)
{
    (void)data;
    proxy_to_origin(req, res);
    atomic_store(&line_move, __LINE__ + 1);
    return LATCH_NEXT;
}

static int origin(latch_req *req, latch_res *res, void *data)
{
    (void)req;
    (void)data;
    latch_res_send(res, "from origin", 11);
    return LATCH_DONE;
}

/* Express's res.sendFile(path) and a forgotten return before res.send. */
static int sendfile_then_send(latch_req *req, latch_res *res, void *data)
{
    (void)req;
    (void)data;
    atomic_store(&line_claim, __LINE__ + 1);
    latch_res_sendfile(res, file_path, NULL, count_done, NULL);
    atomic_store(&line_move, __LINE__ + 1);
    latch_res_send(res, "second answer", 13);
    return LATCH_DONE;
}

static int proxy_then_end(latch_req *req, latch_res *res, void *data)
{
    (void)data;
    proxy_to_origin(req, res);
    atomic_store(&line_move, __LINE__ + 1);
    latch_res_end(res, "second answer", 13);
    return LATCH_DONE;
}

/* The seed's broken completion: it writes after the file was sent. The
 * report names the sendfile call as what sealed the response. */
static void done_writes(latch_res *res, int status, void *data)
{
    count_done(res, status, data);
    atomic_store(&line_move, __LINE__ + 1);
    latch_res_end(res, "late", 4);
}

static int sendfile_done_writes(latch_req *req, latch_res *res, void *data)
{
    (void)req;
    (void)data;
    atomic_store(&line_claim, __LINE__ + 1);
    latch_res_sendfile(res, file_path, NULL, done_writes, NULL);
    return LATCH_DONE;
}

/* The proxy's on_error hook answers: the response is the hook's. */
static int down_port;
static void own_502(const latch_error *err, latch_req *req, latch_res *res,
                    void *data)
{
    (void)err;
    (void)req;
    (void)data;
    latch_res_status(res, 502);
    latch_res_send(res, "custom 502", 10);
}

static int proxy_down(latch_req *req, latch_res *res, void *data)
{
    latch_proxy_opts o = {.on_error = own_502};
    char up[64];

    (void)data;
    snprintf(up, sizeof(up), "http://127.0.0.1:%d", down_port);
    latch_proxy(req, res, up, &o);
    return LATCH_DONE;
}

/* The quiet ones: the producer failed, then the error handlers answer. */
static int pipe_failed_then_error(latch_req *req, latch_res *res, void *data)
{
    (void)data;
    (void)req;
    latch_res_pipe(res, pull_body, count_done, NULL);
    latch_res_pipe_fail(res, UV_ENOENT);
    return LATCH_DONE;
}

static int next_handler(latch_req *req, latch_res *res, void *data)
{
    (void)req;
    (void)data;
    atomic_fetch_add(&next_runs, 1);
    latch_res_send(res, "next ran", 8);
    return LATCH_DONE;
}

static int error_handler(const latch_error *err, latch_req *req, latch_res *res,
                         void *data)
{
    (void)req;
    (void)data;
    atomic_fetch_add(&error_runs, 1);
    if (!latch_res_headers_sent(res)) {
        latch_res_status(res, err->status);
        latch_res_send(res, "error page", 10);
    }
    return LATCH_DONE;
}

/* ------------------------------------------------------------------ */
/* The server                                                           */
/* ------------------------------------------------------------------ */

static int setup(void **state)
{
    latch_app *app = latch_app_new();
    FILE *f;

    (void)state;
    snprintf(file_path, sizeof(file_path), "/tmp/latch-claimed-%d.txt",
             (int)getpid());
    assert_non_null(f = fopen(file_path, "w"));
    fputs(file_body, f);
    fclose(f);
    assert_non_null(app);
    down_port = th_free_port();
    latch_app_on_violation(app, on_violation, NULL);
    latch_use(app, "/sendfile-next", sendfile_then_next, NULL);
    latch_use(app, "/pipe-next-inside", pipe_then_next_inside, NULL);
    latch_use(app, "/pipe-pending", pipe_then_pending, NULL);
    latch_use(app, "/sendfile-fail", sendfile_then_fail, NULL);
    latch_use(app, "/sendfile-error", sendfile_then_error_return, NULL);
    latch_use(app, "/proxy-next", proxy_then_next, NULL);
    latch_use(app, "/failed", pipe_failed_then_error, NULL);
    latch_use(app, "/sendfile-send", sendfile_then_send, NULL);
    latch_use(app, "/proxy-end", proxy_then_end, NULL);
    latch_use(app, "/proxy-down", proxy_down, NULL);
    latch_use(app, "/sendfile-done-writes", sendfile_done_writes, NULL);
    latch_get(app, "/origin/proxy-next", origin, NULL);
    latch_get(app, "/origin/proxy-end", origin, NULL);
    latch_use(app, "/", next_handler, NULL);
    latch_use_error(app, error_handler, NULL);
    th_server_start(&srv, app);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    th_server_stop(&srv);
    unlink(file_path);
    return 0;
}

static int before_each(void **state)
{
    (void)state;
    pthread_mutex_lock(&mu);
    atomic_store(&nreps, 0);
    memset(reps, 0, sizeof(reps));
    pthread_mutex_unlock(&mu);
    atomic_store(&next_runs, 0);
    atomic_store(&error_runs, 0);
    atomic_store(&dones, 0);
    atomic_store(&last_status, 12345);
    atomic_store(&line_claim, 0);
    atomic_store(&line_move, 0);
    return 0;
}

/* GET path on a keep-alive connection, then GET /after on it: returns
 * the first response (caller frees); the second must be the next
 * handler's, so the connection is whole. */
static th_resp *get_then_after(const char *path)
{
    char req[256];
    int two = 2, fd = th_connect(srv.port);
    size_t len;
    char *raw;
    th_resp *r;

    snprintf(req, sizeof(req),
             "GET %s HTTP/1.1\r\nHost: x\r\n\r\n"
             "GET /after HTTP/1.1\r\nHost: x\r\n\r\n",
             path);
    th_send_str(fd, req);
    raw = th_read(fd, &len, 5000, th_until_responses, &two);
    close(fd);
    r = th_expect_responses(raw, len, 2, NULL);
    free(raw);
    assert_int_equal(r[1].status, 200);
    assert_string_equal(r[1].body, "next ran");
    return r;
}

/* Waits (bounded) for the producer's done. */
static void wait_done(void)
{
    for (int i = 0; i < 300 && atomic_load(&dones) == 0; i++)
        usleep(10000);
    usleep(50000); /* a second done would show */
}

static void expect_refused(const char *path, const char *body, int code,
                           const char *move_call, const char *claim_call);

static void expect_claimed(const char *path, const char *body,
                           const char *move_call, const char *claim_call)
{
    expect_refused(path, body, LATCH_ERR_NEXT_AFTER_RESPONSE, move_call,
                   claim_call);
}

static void expect_refused(const char *path, const char *body, int code,
                           const char *move_call, const char *claim_call)
{
    th_resp *r = get_then_after(path);

    assert_int_equal(r[0].status, 200);
    assert_string_equal(r[0].body, body);
    th_resp_free(r, 2);
    free(r);
    wait_done();
    /* The next handler ran once: for /after, not for this request. */
    assert_int_equal(atomic_load(&next_runs), 1);
    assert_int_equal(atomic_load(&error_runs), 0);
    if (claim_call != NULL) {
        assert_int_equal(atomic_load(&dones), 1);
        assert_int_equal(atomic_load(&last_status), 0);
    }
    assert_int_equal(atomic_load(&nreps), 1);
    assert_int_equal(reps[0].code, code);
    assert_string_equal(reps[0].call, move_call);
    assert_string_equal(reps[0].sealed_call,
                        claim_call != NULL ? claim_call : "latch_proxy");
    assert_int_equal(reps[0].sealed_line, atomic_load(&line_claim));
    if (atomic_load(&line_move) != 0 && strcmp(move_call, "LATCH_NEXT") != 0 &&
        strcmp(move_call, "error return") != 0)
        assert_int_equal(reps[0].at_line, atomic_load(&line_move));
    assert_string_equal(reps[0].path, path);
}

static void test_sendfile_then_next(void **state)
{
    (void)state;
    expect_claimed("/sendfile-next", file_body, "LATCH_NEXT",
                   "latch_res_sendfile");
}

static void test_pipe_then_next_inside(void **state)
{
    (void)state;
    expect_claimed("/pipe-next-inside", "piped body", "latch_next",
                   "latch_res_pipe");
}

static void test_pipe_then_pending_next(void **state)
{
    (void)state;
    expect_claimed("/pipe-pending", "piped body", "latch_next",
                   "latch_res_pipe");
}

static void test_sendfile_then_fail(void **state)
{
    (void)state;
    expect_claimed("/sendfile-fail", file_body, "latch_fail",
                   "latch_res_sendfile");
}

static void test_sendfile_then_error_return(void **state)
{
    (void)state;
    expect_claimed("/sendfile-error", file_body, "error return",
                   "latch_res_sendfile");
}

static void test_proxy_then_next(void **state)
{
    (void)state;
    /* The proxy's done is its own (no user callback to count). */
    expect_claimed("/proxy-next", "from origin", "LATCH_NEXT", NULL);
}

static void test_sendfile_then_send(void **state)
{
    (void)state;
    expect_refused("/sendfile-send", file_body, LATCH_ERR_HTTP_HEADERS_SENT,
                   "latch_res_send", "latch_res_sendfile");
}

static void test_proxy_then_end(void **state)
{
    (void)state;
    expect_refused("/proxy-end", "from origin", LATCH_ERR_HTTP_HEADERS_SENT,
                   "latch_res_end", NULL);
}

static void test_late_write_names_the_file(void **state)
{
    (void)state;
    expect_refused("/sendfile-done-writes", file_body,
                   LATCH_ERR_STREAM_WRITE_AFTER_END, "latch_res_end",
                   "latch_res_sendfile");
}

/* The proxy's on_error hook answers its own 502: allowed, unreported. */
static void test_proxy_on_error_answers(void **state)
{
    th_resp *r;

    (void)state;
    r = get_then_after("/proxy-down");
    assert_int_equal(r[0].status, 502);
    assert_string_equal(r[0].body, "custom 502");
    th_resp_free(r, 2);
    free(r);
    assert_int_equal(atomic_load(&nreps), 0);
    assert_int_equal(atomic_load(&error_runs), 0);
}

/* A failed producer gave the response back: the error handlers answer,
 * nothing is reported as a second answer. */
static void test_failed_producer_is_quiet(void **state)
{
    th_resp *r;

    (void)state;
    r = get_then_after("/failed");
    assert_int_equal(r[0].status, 404);
    assert_string_equal(r[0].body, "error page");
    th_resp_free(r, 2);
    free(r);
    wait_done();
    assert_int_equal(atomic_load(&error_runs), 1);
    assert_int_equal(atomic_load(&dones), 1);
    assert_int_equal(atomic_load(&last_status), UV_ENOENT);
    for (int i = 0; i < atomic_load(&nreps) && i < 16; i++)
        assert_int_not_equal(reps[i].code, LATCH_ERR_NEXT_AFTER_RESPONSE);
}

int main(void)
{
#define T(f) cmocka_unit_test_setup(f, before_each)
    const struct CMUnitTest tests[] = {
        T(test_sendfile_then_next),         T(test_pipe_then_next_inside),
        T(test_pipe_then_pending_next),     T(test_sendfile_then_fail),
        T(test_sendfile_then_error_return), T(test_proxy_then_next),
        T(test_sendfile_then_send),         T(test_proxy_then_end),
        T(test_late_write_names_the_file),  T(test_proxy_on_error_answers),
        T(test_failed_producer_is_quiet),
    };
#undef T
    return cmocka_run_group_tests(tests, setup, teardown);
}
