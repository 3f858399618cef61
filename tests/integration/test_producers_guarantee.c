/*
 * test_producers_guarantee.c - the guarantee against the producers of the
 * second half (pipes, files, proxy, SSE, pub/sub), in shapes the other
 * suites do not write: a producer's callbacks that answer after it was
 * told it is over, a second producer, a second writer beside a live pipe,
 * a file from an error handler after the headers went out, an event
 * stream used after its client left, a proxy misused around its hooks.
 *
 * Each shape asserts the wire (exactly one well-formed response, or a
 * clean cut), the return codes, each violation (code, call, sealed call,
 * both places), and that the connection serves its next request when it
 * stays open.
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

#include <cmocka.h>
#include <uv.h>

/* ------------------------------------------------------------------ */
/* What the handlers saw                                                */
/* ------------------------------------------------------------------ */

#define NRC 8
static atomic_int rc[NRC]; /* return codes of the calls under test */
/* Records the return code of one call under test, on one line: the
 * report's place is that line. */
#define R(i, call) atomic_store(&rc[(i)], (call))
static atomic_int dones, done_status, cb_runs, next_runs, late_runs;
static atomic_int line_seal, line_bad, line_proxy;
static latch_res *_Atomic kept;
static char file_path[256];
static const char file_body[] = "the file's own bytes\n";
static th_server srv, osrv;
static th_vlog vlog;

static void count_done(latch_res *res, int status, void *data)
{
    (void)res;
    (void)data;
    atomic_store(&done_status, status);
    atomic_fetch_add(&dones, 1);
}

static void pull_nothing(latch_res *res, void *data)
{
    (void)res;
    (void)data;
}

static void pull_body(latch_res *res, void *data)
{
    (void)data;
    latch_res_end(res, "piped body", 10);
}

/* ---- a producer told CANCELLED (request timeout) answers anyway ---- */

static void done_answers(latch_res *res, int status, void *data)
{
    latch_req *req = latch_res_req(res);

    (void)data;
    atomic_store(&done_status, status);
    atomic_store(&line_bad, __LINE__ + 1);
    R(0, latch_res_send(res, "late", 4));
    R(1, latch_res_write(res, "late", 4));
    R(2, latch_res_end(res, "late", 4));
    R(3, latch_res_end(res, NULL, 0));
    latch_next(req);
    R(4, latch_fail(req, 500, "late failure"));
    R(5, latch_res_pipe(res, pull_body, count_done, NULL));
    atomic_fetch_add(&dones, 1);
}

static int h_timeout_done(latch_req *req, latch_res *res, void *data)
{
    (void)data;
    latch_req_set_timeout(req, 30, 503);
    latch_res_pipe(res, pull_nothing, done_answers, NULL);
    return LATCH_DONE;
}

/* ---- a producer's source (a pool job) completes after the timeout ---- */

static void slow_job(void *data)
{
    (void)data;
    usleep(150 * 1000);
}

static void job_writes(latch_res *res, int status, void *data)
{
    (void)data;
    R(6, status);
    atomic_store(&line_bad, __LINE__ + 1);
    R(0, latch_res_write(res, "from the job", 12));
    R(1, latch_res_end(res, NULL, 0));
    R(2, latch_res_pipe_fail(res, UV_EIO));
    atomic_fetch_add(&late_runs, 1);
}

static void pull_starts_job(latch_res *res, void *data)
{
    (void)data;
    if (atomic_fetch_add(&cb_runs, 1) == 0)
        latch_work(res, slow_job, job_writes, NULL);
}

static int h_timeout_job(latch_req *req, latch_res *res, void *data)
{
    (void)data;
    latch_req_set_timeout(req, 30, 503);
    latch_res_pipe(res, pull_starts_job, count_done, NULL);
    return LATCH_DONE;
}

/* ---- the same after the headers went out: the client leaves ---- */

static void pull_first_then_job(latch_res *res, void *data)
{
    (void)data;
    if (atomic_fetch_add(&cb_runs, 1) == 0) {
        latch_res_write(res, "first chunk", 11);
        latch_work(res, slow_job, job_writes, NULL);
    }
}

static int h_left_job(latch_req *req, latch_res *res, void *data)
{
    (void)req;
    (void)data;
    latch_res_pipe(res, pull_first_then_job, count_done, NULL);
    return LATCH_DONE;
}

/* ---- two producers ---- */

static int h_pipe_then_sendfile(latch_req *req, latch_res *res, void *data)
{
    (void)req;
    (void)data;
    atomic_store(&line_seal, __LINE__ + 1);
    latch_res_pipe(res, pull_body, count_done, NULL);
    atomic_store(&line_bad, __LINE__ + 1);
    R(0, latch_res_sendfile(res, file_path, NULL, count_done, NULL));
    return LATCH_DONE;
}

static int h_sendfile_twice(latch_req *req, latch_res *res, void *data)
{
    (void)req;
    (void)data;
    atomic_store(&line_seal, __LINE__ + 1);
    latch_res_sendfile(res, file_path, NULL, count_done, NULL);
    atomic_store(&line_bad, __LINE__ + 1);
    R(0, latch_res_sendfile(res, file_path, NULL, count_done, NULL));
    return LATCH_DONE;
}

static int h_sendfile_then_pipe(latch_req *req, latch_res *res, void *data)
{
    (void)req;
    (void)data;
    atomic_store(&line_seal, __LINE__ + 1);
    latch_res_sendfile(res, file_path, NULL, count_done, NULL);
    atomic_store(&line_bad, __LINE__ + 1);
    R(0, latch_res_pipe(res, pull_body, count_done, NULL));
    return LATCH_DONE;
}

/* ---- a file from an error handler after the headers went out ---- */

static int h_write_then_error(latch_req *req, latch_res *res, void *data)
{
    (void)req;
    (void)data;
    atomic_store(&line_seal, __LINE__ + 1);
    latch_res_write(res, "partial", 7);
    return LATCH_ERR_INVALID_ARG;
}

/* ---- HEAD ---- */

static int h_sendfile(latch_req *req, latch_res *res, void *data)
{
    (void)req;
    (void)data;
    R(0, latch_res_sendfile(res, file_path, NULL, count_done, NULL));
    return LATCH_DONE;
}

/* ---- done releases what it does not hold / retains and keeps ---- */

static void done_releases(latch_res *res, int status, void *data)
{
    count_done(res, status, data);
    atomic_store(&line_bad, __LINE__ + 1);
    latch_res_release(res);
}

static int h_done_releases(latch_req *req, latch_res *res, void *data)
{
    (void)req;
    (void)data;
    latch_res_pipe(res, pull_body, done_releases, NULL);
    return LATCH_DONE;
}

static void done_keeps(latch_res *res, int status, void *data)
{
    count_done(res, status, data);
    latch_res_retain(res);
    atomic_store(&kept, res);
}

static int h_done_keeps(latch_req *req, latch_res *res, void *data)
{
    (void)req;
    (void)data;
    atomic_store(&line_seal, __LINE__ + 1);
    latch_res_pipe(res, pull_body, done_keeps, NULL);
    return LATCH_DONE;
}

/* The kept response used from the next request's handler. */
static int h_use_kept(latch_req *req, latch_res *res, void *data)
{
    latch_res *k = atomic_exchange(&kept, NULL);

    (void)req;
    (void)data;
    atomic_store(&line_bad, __LINE__ + 1);
    R(0, latch_res_send(k, "kept", 4));
    R(1, latch_res_pipe(k, pull_body, count_done, NULL));
    latch_res_release(k);
    latch_res_send(res, "fresh", 5);
    return LATCH_DONE;
}

/* ---- latch_res_pipe_fail twice, after the end, from another thread ---- */

static int h_fail_twice(latch_req *req, latch_res *res, void *data)
{
    (void)req;
    (void)data;
    latch_res_pipe(res, pull_nothing, count_done, NULL);
    atomic_store(&line_seal, __LINE__ + 1);
    R(0, latch_res_pipe_fail(res, UV_EIO));
    atomic_store(&line_bad, __LINE__ + 1);
    R(1, latch_res_pipe_fail(res, UV_ENOENT));
    return LATCH_DONE;
}

static void done_fails(latch_res *res, int status, void *data)
{
    count_done(res, status, data);
    atomic_store(&line_bad, __LINE__ + 1);
    R(0, latch_res_pipe_fail(res, UV_EIO));
}

static int h_fail_after_end(latch_req *req, latch_res *res, void *data)
{
    (void)req;
    (void)data;
    atomic_store(&line_seal, __LINE__ + 1);
    latch_res_pipe(res, pull_body, done_fails, NULL);
    return LATCH_DONE;
}

static void job_fails_pipe(void *data)
{
    latch_res *res = data;

    atomic_store(&line_bad, __LINE__ + 1);
    R(0, latch_res_pipe_fail(res, UV_EIO));
}

static void job_after_ends(latch_res *res, int status, void *data)
{
    (void)status;
    (void)data;
    R(1, latch_res_end(res, "ended on the loop", 17));
}

static int h_fail_thread(latch_req *req, latch_res *res, void *data)
{
    (void)req;
    (void)data;
    latch_res_pipe(res, pull_nothing, count_done, NULL);
    latch_work(res, job_fails_pipe, job_after_ends, res);
    return LATCH_DONE;
}

/* ---- a write, then a pipe; a pipe, then a second writer ---- */

static void pull_tail(latch_res *res, void *data)
{
    (void)data;
    R(1, latch_res_end(res, "+tail", 5));
}

static int h_write_then_pipe(latch_req *req, latch_res *res, void *data)
{
    (void)req;
    (void)data;
    latch_res_write(res, "head", 4);
    R(0, latch_res_pipe(res, pull_tail, count_done, NULL));
    return LATCH_DONE;
}

static void pull_counted(latch_res *res, void *data)
{
    (void)data;
    atomic_fetch_add(&cb_runs, 1);
    R(1, latch_res_end(res, "piped body", 10));
}

static int h_pipe_plus_send(latch_req *req, latch_res *res, void *data)
{
    (void)req;
    (void)data;
    atomic_store(&line_seal, __LINE__ + 1);
    latch_res_pipe(res, pull_counted, count_done, NULL);
    atomic_store(&line_bad, __LINE__ + 1);
    R(0, latch_res_send(res, "second writer", 13));
    return LATCH_DONE;
}

/* ---- SSE ---- */

/* An event stream fed by a pipe: the head may go out beside it. */
static void pull_events(latch_res *res, void *data)
{
    (void)data;
    R(1, latch_sse_send(res, NULL, NULL, "from the pipe"));
    R(2, latch_res_end(res, NULL, 0));
}

static int h_pipe_then_sse(latch_req *req, latch_res *res, void *data)
{
    (void)req;
    (void)data;
    latch_res_pipe(res, pull_events, count_done, NULL);
    R(0, latch_sse_start(res));
    return LATCH_DONE;
}

static int h_sse_twice(latch_req *req, latch_res *res, void *data)
{
    (void)req;
    (void)data;
    atomic_store(&line_seal, __LINE__ + 1);
    R(0, latch_sse_start(res));
    atomic_store(&line_bad, __LINE__ + 1);
    R(1, latch_sse_start(res));
    R(2, latch_res_send(res, "x", 1));
    R(3, latch_sse_send(res, NULL, NULL, "one"));
    R(4, latch_res_end(res, NULL, 0));
    return LATCH_DONE;
}

static int h_sub_after_end(latch_req *req, latch_res *res, void *data)
{
    (void)req;
    (void)data;
    atomic_store(&line_seal, __LINE__ + 1);
    latch_res_send(res, "done", 4);
    atomic_store(&line_bad, __LINE__ + 1);
    R(0, latch_subscribe(res, "after-end", NULL, NULL));
    R(1, latch_sse_start(res));
    R(2, latch_sse_send(res, NULL, NULL, "x"));
    return LATCH_DONE;
}

static void cb_ends(latch_res *res, const latch_message *msg, void *data)
{
    (void)data;
    if (atomic_fetch_add(&cb_runs, 1) == 0) {
        R(0, latch_sse_send(res, msg->event, msg->id, msg->data));
        R(1, latch_res_end(res, NULL, 0));
    }
}

static int h_sub_cb_ends(latch_req *req, latch_res *res, void *data)
{
    (void)req;
    (void)data;
    latch_sse_start(res);
    R(2, latch_subscribe(res, "cb-ends", cb_ends, NULL));
    return LATCH_DONE;
}

static int h_sse_kept(latch_req *req, latch_res *res, void *data)
{
    (void)req;
    (void)data;
    latch_sse_start(res);
    latch_res_retain(res);
    atomic_store(&kept, res);
    latch_subscribe(res, "kept", NULL, NULL);
    return LATCH_DONE;
}

static void post_sends(latch_res *res, void *data)
{
    (void)data;
    atomic_store(&line_bad, __LINE__ + 1);
    R(0, latch_sse_send(res, NULL, NULL, "late"));
    R(1, latch_sse_comment(res, "late"));
    R(2, latch_subscribe(res, "kept", NULL, NULL));
    latch_res_release(res);
    atomic_fetch_add(&late_runs, 1);
}

static int h_storm(latch_req *req, latch_res *res, void *data)
{
    (void)req;
    (void)data;
    latch_subscribe(res, "storm", NULL, NULL);
    return LATCH_DONE;
}

/* ---- proxy ---- */

static int origin(latch_req *req, latch_res *res, void *data)
{
    (void)req;
    (void)data;
    latch_res_send(res, "from origin", 11);
    return LATCH_DONE;
}

static void upstream(char *up, size_t cap)
{
    snprintf(up, cap, "http://127.0.0.1:%d/origin", srv.port);
}

static int h_proxy_twice(latch_req *req, latch_res *res, void *data)
{
    char up[64];

    (void)data;
    upstream(up, sizeof(up));
    atomic_store(&line_seal, __LINE__ + 1);
    R(0, latch_proxy(req, res, up, NULL));
    atomic_store(&line_bad, __LINE__ + 1);
    R(1, latch_proxy(req, res, up, NULL));
    R(2, latch_res_pipe(res, pull_body, count_done, NULL));
    R(3, latch_res_sendfile(res, file_path, NULL, count_done, NULL));
    return LATCH_DONE;
}

static int h_write_then_proxy(latch_req *req, latch_res *res, void *data)
{
    char up[64];

    (void)data;
    upstream(up, sizeof(up));
    atomic_store(&line_seal, __LINE__ + 1);
    latch_res_write(res, "partial", 7);
    atomic_store(&line_bad, __LINE__ + 1);
    R(0, latch_proxy(req, res, up, NULL));
    R(1, latch_res_end(res, "+end", 4));
    return LATCH_DONE;
}

static int down_port;

static void on_error_answers_then_fails(const latch_error *err, latch_req *req,
                                        latch_res *res, void *data)
{
    (void)err;
    (void)data;
    atomic_fetch_add(&cb_runs, 1);
    atomic_store(&line_seal, __LINE__ + 1);
    latch_res_status(res, 502);
    latch_res_send(res, "own 502", 7);
    atomic_store(&line_bad, __LINE__ + 1);
    R(0, latch_res_send(res, "again", 5));
    R(1, latch_fail(req, 500, "and an error"));
    latch_next(req);
}

static void on_error_half(const latch_error *err, latch_req *req,
                          latch_res *res, void *data)
{
    (void)err;
    (void)req;
    (void)data;
    atomic_fetch_add(&cb_runs, 1);
    latch_res_status(res, 502);
    R(0, latch_res_write(res, "half", 4));
}

/* The hook answers with a producer of its own: a file, a pipe, another
 * upstream. Its contract says it may answer; these are answers. */
static void on_error_file(const latch_error *err, latch_req *req,
                          latch_res *res, void *data)
{
    (void)err;
    (void)req;
    (void)data;
    latch_res_status(res, 502);
    R(0, latch_res_sendfile(res, file_path, NULL, count_done, NULL));
}

static void on_error_pipe(const latch_error *err, latch_req *req,
                          latch_res *res, void *data)
{
    (void)err;
    (void)req;
    (void)data;
    R(0, latch_res_pipe(res, pull_body, count_done, NULL));
}

static void on_error_failover(const latch_error *err, latch_req *req,
                              latch_res *res, void *data)
{
    char up[64];

    (void)err;
    (void)data;
    snprintf(up, sizeof(up), "http://127.0.0.1:%d/origin", srv.port);
    R(0, latch_proxy(req, res, up, NULL));
}

static int h_proxy_down(latch_req *req, latch_res *res, void *data)
{
    latch_proxy_opts o = {.on_error = data};
    char up[64];

    snprintf(up, sizeof(up), "http://127.0.0.1:%d", down_port);
    atomic_store(&line_proxy, __LINE__ + 1);
    R(7, latch_proxy(req, res, up, &o));
    return LATCH_DONE;
}

static int h_after_use_proxy(latch_req *req, latch_res *res, void *data)
{
    (void)req;
    (void)data;
    atomic_fetch_add(&late_runs, 1);
    R(0, latch_res_send(res, "second", 6));
    return LATCH_DONE;
}

static int h_sendfile_then_sse(latch_req *req, latch_res *res, void *data)
{
    (void)req;
    (void)data;
    atomic_store(&line_seal, __LINE__ + 1);
    latch_res_sendfile(res, file_path, NULL, count_done, NULL);
    atomic_store(&line_bad, __LINE__ + 1);
    R(0, latch_sse_start(res));
    R(1, latch_subscribe(res, "beside-file", NULL, NULL));
    return LATCH_DONE;
}

static int h_sendfile_then_flush(latch_req *req, latch_res *res, void *data)
{
    (void)req;
    (void)data;
    atomic_store(&line_seal, __LINE__ + 1);
    latch_res_sendfile(res, file_path, NULL, count_done, NULL);
    atomic_store(&line_bad, __LINE__ + 1);
    R(0, latch_res_flush_headers(res));
    R(1, latch_res_write_head(res, 200));
    R(2, latch_res_set_header(res, "X-Still", "allowed"));
    return LATCH_DONE;
}

static void done_writes(latch_res *res, int status, void *data)
{
    count_done(res, status, data);
    atomic_store(&line_bad, __LINE__ + 1);
    R(1, latch_res_write(res, "late", 4));
}

static int h_fail_late(latch_req *req, latch_res *res, void *data)
{
    (void)req;
    (void)data;
    latch_res_pipe(res, pull_nothing, done_writes, NULL);
    atomic_store(&line_seal, __LINE__ + 1);
    R(0, latch_res_pipe_fail(res, UV_EIO));
    return LATCH_DONE;
}

/* ---- the rest ---- */

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
    (void)data;
    if (strcmp(latch_req_path(req), "/sendfile-in-error") == 0) {
        atomic_store(&line_bad, __LINE__ + 1);
        R(0, latch_res_sendfile(res, file_path, NULL, count_done, NULL));
        return LATCH_DONE;
    }
    if (!latch_res_headers_sent(res)) {
        latch_res_status(res, err->status);
        latch_res_send(res, "error page", 10);
    }
    return LATCH_DONE;
}

static int setup(void **state)
{
    latch_app *app = latch_app_new();
    char up[64];
    FILE *f;

    (void)state;
    snprintf(file_path, sizeof(file_path), "/tmp/latch-producers-%d.txt",
             (int)getpid());
    assert_non_null(f = fopen(file_path, "w"));
    fputs(file_body, f);
    fclose(f);
    down_port = th_free_port();
    latch_app_set_sse_heartbeat(app, 0);
    th_record_violations_full(app, &vlog);
    latch_get(app, "/timeout-done", h_timeout_done, NULL);
    latch_get(app, "/timeout-job", h_timeout_job, NULL);
    latch_get(app, "/left-job", h_left_job, NULL);
    latch_get(app, "/pipe-then-sendfile", h_pipe_then_sendfile, NULL);
    latch_get(app, "/sendfile-twice", h_sendfile_twice, NULL);
    latch_get(app, "/sendfile-then-pipe", h_sendfile_then_pipe, NULL);
    latch_get(app, "/sendfile-in-error", h_write_then_error, NULL);
    latch_get(app, "/sendfile", h_sendfile, NULL);
    latch_get(app, "/done-releases", h_done_releases, NULL);
    latch_get(app, "/done-keeps", h_done_keeps, NULL);
    latch_get(app, "/use-kept", h_use_kept, NULL);
    latch_get(app, "/fail-twice", h_fail_twice, NULL);
    latch_get(app, "/fail-after-end", h_fail_after_end, NULL);
    latch_get(app, "/fail-thread", h_fail_thread, NULL);
    latch_get(app, "/write-then-pipe", h_write_then_pipe, NULL);
    latch_get(app, "/pipe-plus-send", h_pipe_plus_send, NULL);
    latch_get(app, "/sse-twice", h_sse_twice, NULL);
    latch_get(app, "/pipe-then-sse", h_pipe_then_sse, NULL);
    latch_get(app, "/sub-after-end", h_sub_after_end, NULL);
    latch_get(app, "/sub-cb-ends", h_sub_cb_ends, NULL);
    latch_get(app, "/sse-kept", h_sse_kept, NULL);
    latch_get(app, "/storm", h_storm, NULL);
    latch_get(app, "/proxy-twice", h_proxy_twice, NULL);
    latch_get(app, "/write-then-proxy", h_write_then_proxy, NULL);
    latch_get(app, "/proxy-down-fails", h_proxy_down,
              (void *)on_error_answers_then_fails);
    latch_get(app, "/proxy-down-half", h_proxy_down, (void *)on_error_half);
    latch_get(app, "/proxy-down-file", h_proxy_down, (void *)on_error_file);
    latch_get(app, "/proxy-down-pipe", h_proxy_down, (void *)on_error_pipe);
    latch_get(app, "/proxy-down-failover", h_proxy_down,
              (void *)on_error_failover);
    latch_get(app, "/origin/*", origin, NULL);
    latch_get(app, "/sendfile-then-sse", h_sendfile_then_sse, NULL);
    latch_get(app, "/fail-late", h_fail_late, NULL);
    latch_get(app, "/sendfile-then-flush", h_sendfile_then_flush, NULL);
    {
        latch_app *o = latch_app_new();
        latch_get(o, "/*", origin, NULL);
        th_server_start(&osrv, o);
        snprintf(up, sizeof(up), "http://127.0.0.1:%d", osrv.port);
        latch_use_proxy(app, "/up", up, NULL);
        latch_use(app, "/up", h_after_use_proxy, NULL);
    }
    (void)post_sends;
    latch_use(app, "/", next_handler, NULL);
    latch_use_error(app, error_handler, NULL);
    th_server_start(&srv, app);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    th_server_stop(&srv);
    th_server_stop(&osrv);
    unlink(file_path);
    return 0;
}

static int before_each(void **state)
{
    (void)state;
    for (int i = 0; i < NRC; i++)
        atomic_store(&rc[i], 12345);
    atomic_store(&dones, 0);
    atomic_store(&done_status, 12345);
    atomic_store(&cb_runs, 0);
    atomic_store(&next_runs, 0);
    atomic_store(&late_runs, 0);
    atomic_store(&line_seal, 0);
    atomic_store(&line_bad, 0);
    atomic_store(&line_proxy, 0);
    th_record_violations_full(srv.app, &vlog);
    return 0;
}

/* ------------------------------------------------------------------ */
/* Checks                                                               */
/* ------------------------------------------------------------------ */

static const char *const after_req = "GET /after HTTP/1.1\r\nHost: x\r\n\r\n";

/* `method path` then GET /after on one keep-alive connection: exactly two
 * well-formed responses, the second the next handler's (the connection
 * is whole). Returns them (caller frees). */
static th_resp *two(const char *method, const char *path)
{
    const char *methods[2] = {method, "GET"};
    char req[256];
    int n = 2, fd = th_connect(srv.port);
    size_t len;
    char *raw;
    th_resp *r;

    snprintf(req, sizeof(req), "%s %s HTTP/1.1\r\nHost: x\r\n\r\n%s", method,
             path, after_req);
    th_send_str(fd, req);
    raw = th_read(fd, &len, 5000, th_until_responses, &n);
    close(fd);
    r = th_expect_responses(raw, len, 2, methods);
    free(raw);
    assert_int_equal(r[1].status, 200);
    assert_string_equal(r[1].body, "next ran");
    return r;
}

/* GET path on a fresh connection, read until the server closes it: the
 * bytes must start a response and must not complete one (a clean cut,
 * never a complete-looking answer). Returns them (caller frees). */
static char *cut(const char *path)
{
    char req[256];
    int fd = th_connect(srv.port);
    size_t len;
    char *raw;
    th_resp r;
    const char *err = NULL;

    snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", path);
    th_send_str(fd, req);
    raw = th_read(fd, &len, 5000, NULL, NULL);
    assert_int_not_equal(th_last_end(), TH_OPEN);
    close(fd);
    assert_true(len > 0);
    assert_memory_equal(raw, "HTTP/1.1 ", 9);
    assert_true(th_wire_parse(raw, len, NULL, &r, 1, true, &err) <= 0);
    return raw;
}

static void wait_for(atomic_int *v, int n)
{
    int64_t end = th_now_ms() + 5000;

    while (atomic_load(v) < n && th_now_ms() < end)
        usleep(1000);
    assert_int_equal(atomic_load(v), n);
}

/* The producer's done ran exactly once, with `status`. */
static void expect_done(int status)
{
    wait_for(&dones, 1);
    assert_int_equal(atomic_load(&done_status), status);
}

/* Exactly n violations (waited for; a late extra one would show). */
static void expect_reports(int n)
{
    assert_int_equal(th_vlog_wait(&vlog, n, 5000), n);
    usleep(50 * 1000);
    assert_int_equal(th_vlog_count(&vlog), n);
}

/* Violation i: its code, call and line (0: not checked) in this file,
 * and what sealed the response (sealed_line 0: not checked). */
static void expect_v(int i, int code, const char *call, int line,
                     const char *sealed_call, int sealed_line)
{
    th_vrec r;

    assert_true(th_vlog_get(&vlog, i, &r));
    assert_string_equal(r.name, latch_err_name(code));
    assert_int_equal(r.code, code);
    assert_string_equal(r.call, call);
    assert_false(r.at_file[0] == '\0');
    if (line != 0) {
        assert_non_null(strstr(r.at_file, "test_producers_guarantee.c"));
        assert_int_equal(r.at_line, line);
    }
    if (sealed_call == NULL) {
        assert_true(r.sealed_call_null);
        return;
    }
    assert_string_equal(r.sealed_call, sealed_call);
    if (sealed_line != 0) {
        assert_non_null(strstr(r.sealed_file, "test_producers_guarantee.c"));
        assert_int_equal(r.sealed_line, sealed_line);
    }
}

static int rcv(int i)
{
    return atomic_load(&rc[i]);
}

/* ---- a producer told it is over answers anyway ---- */

static void test_done_answers_after_timeout(void **state)
{
    th_resp *r;
    int bad;

    (void)state;
    r = two("GET", "/timeout-done");
    assert_int_equal(r[0].status, 503);
    assert_string_equal(r[0].body, "error page");
    th_resp_free(r, 2);
    free(r);
    expect_done(LATCH_ERR_CANCELLED);
    assert_int_equal(rcv(0), LATCH_ERR_HTTP_HEADERS_SENT);
    assert_int_equal(rcv(1), LATCH_ERR_STREAM_WRITE_AFTER_END);
    assert_int_equal(rcv(2), LATCH_ERR_STREAM_WRITE_AFTER_END);
    assert_int_equal(rcv(3), 0); /* end() of an ended response: Node's no-op */
    assert_true(rcv(4) < 0);
    assert_int_equal(rcv(5), LATCH_ERR_STREAM_WRITE_AFTER_END);
    expect_reports(6);
    bad = atomic_load(&line_bad);
    expect_v(0, LATCH_ERR_HTTP_HEADERS_SENT, "latch_res_send", bad,
             "request timeout", 0);
    expect_v(1, LATCH_ERR_STREAM_WRITE_AFTER_END, "latch_res_write", bad + 1,
             "request timeout", 0);
    expect_v(2, LATCH_ERR_STREAM_WRITE_AFTER_END, "latch_res_end", bad + 2,
             "request timeout", 0);
    expect_v(3, LATCH_ERR_NEXT_AFTER_RESPONSE, "latch_next", bad + 4,
             "request timeout", 0);
    expect_v(4, LATCH_ERR_NEXT_AFTER_RESPONSE, "latch_fail", bad + 5,
             "request timeout", 0);
    expect_v(5, LATCH_ERR_STREAM_WRITE_AFTER_END, "latch_res_pipe", bad + 6,
             "request timeout", 0);
}

static void test_source_completes_after_timeout(void **state)
{
    th_resp *r;
    int bad;

    (void)state;
    r = two("GET", "/timeout-job");
    assert_int_equal(r[0].status, 503);
    th_resp_free(r, 2);
    free(r);
    expect_done(LATCH_ERR_CANCELLED);
    wait_for(&late_runs, 1);
    assert_int_equal(rcv(6), LATCH_ERR_CANCELLED);
    assert_int_equal(rcv(0), LATCH_ERR_STREAM_WRITE_AFTER_END);
    assert_int_equal(rcv(1), 0);
    assert_int_equal(rcv(2), LATCH_ERR_STREAM_WRITE_AFTER_END);
    expect_reports(2);
    bad = atomic_load(&line_bad);
    expect_v(0, LATCH_ERR_STREAM_WRITE_AFTER_END, "latch_res_write", bad,
             "request timeout", 0);
    expect_v(1, LATCH_ERR_STREAM_WRITE_AFTER_END, "latch_res_pipe_fail",
             bad + 2, "request timeout", 0);
}

static void test_source_completes_after_client_left(void **state)
{
    size_t len;
    char *raw;
    int bad, fd = th_connect(srv.port);

    (void)state;
    th_send_str(fd, "GET /left-job HTTP/1.1\r\nHost: x\r\n\r\n");
    raw = th_read(fd, &len, 5000, th_until_substr, "first chunk");
    assert_non_null(strstr(raw, "first chunk"));
    free(raw);
    close(fd);
    expect_done(LATCH_ERR_CANCELLED);
    wait_for(&late_runs, 1);
    assert_int_equal(rcv(6), LATCH_ERR_CANCELLED);
    for (int i = 0; i < 3; i++)
        assert_int_equal(rcv(i), LATCH_ERR_STREAM_DESTROYED);
    expect_reports(3);
    bad = atomic_load(&line_bad);
    expect_v(0, LATCH_ERR_STREAM_DESTROYED, "latch_res_write", bad,
             "client disconnect", 0);
    expect_v(1, LATCH_ERR_STREAM_DESTROYED, "latch_res_end", bad + 1,
             "client disconnect", 0);
    expect_v(2, LATCH_ERR_STREAM_DESTROYED, "latch_res_pipe_fail", bad + 2,
             "client disconnect", 0);
    th_expect_alive(srv.port, "/after", "next ran");
}

/* ---- two producers ---- */

static void expect_second_producer(const char *path, const char *body,
                                   const char *call, const char *first)
{
    th_resp *r = two("GET", path);

    assert_int_equal(r[0].status, 200);
    assert_string_equal(r[0].body, body);
    th_resp_free(r, 2);
    free(r);
    expect_done(0); /* the first one's; the refused one's never runs */
    assert_int_equal(rcv(0), LATCH_ERR_STATE);
    expect_reports(1);
    expect_v(0, LATCH_ERR_STATE, call, atomic_load(&line_bad), first,
             atomic_load(&line_seal));
}

static void test_pipe_then_sendfile(void **state)
{
    (void)state;
    expect_second_producer("/pipe-then-sendfile", "piped body",
                           "latch_res_sendfile", "latch_res_pipe");
}

static void test_sendfile_twice(void **state)
{
    (void)state;
    expect_second_producer("/sendfile-twice", file_body, "latch_res_sendfile",
                           "latch_res_sendfile");
}

static void test_sendfile_then_pipe(void **state)
{
    (void)state;
    expect_second_producer("/sendfile-then-pipe", file_body, "latch_res_pipe",
                           "latch_res_sendfile");
}

static void test_proxy_twice(void **state)
{
    th_resp *r;
    int bad, seal;

    (void)state;
    r = two("GET", "/proxy-twice");
    assert_int_equal(r[0].status, 200);
    assert_string_equal(r[0].body, "from origin");
    th_resp_free(r, 2);
    free(r);
    assert_int_equal(rcv(0), 0);
    for (int i = 1; i <= 3; i++)
        assert_int_equal(rcv(i), LATCH_ERR_STATE);
    expect_reports(3);
    bad = atomic_load(&line_bad);
    seal = atomic_load(&line_seal);
    expect_v(0, LATCH_ERR_STATE, "latch_proxy", bad, "latch_proxy", seal);
    expect_v(1, LATCH_ERR_STATE, "latch_res_pipe", bad + 1, "latch_proxy",
             seal);
    expect_v(2, LATCH_ERR_STATE, "latch_res_sendfile", bad + 2, "latch_proxy",
             seal);
    assert_int_equal(atomic_load(&dones), 0);
}

/* ---- a file from an error handler after the headers went out ---- */

static void test_sendfile_in_error_handler_after_headers(void **state)
{
    char *raw;

    (void)state;
    raw = cut("/sendfile-in-error");
    assert_non_null(strstr(raw, "\r\n\r\n7\r\npartial\r\n"));
    assert_null(strstr(raw, file_body));
    free(raw);
    assert_int_equal(rcv(0), LATCH_ERR_HTTP_HEADERS_SENT);
    expect_reports(2);
    expect_v(0, LATCH_ERR_HTTP_HEADERS_SENT, "latch_res_sendfile",
             atomic_load(&line_bad), "latch_res_write",
             atomic_load(&line_seal));
    /* The error handler left it unfinished: reported, cut. */
    expect_v(1, LATCH_ERR_NO_RESPONSE, "LATCH_DONE", 0, "latch_res_write",
             atomic_load(&line_seal));
    assert_int_equal(atomic_load(&dones), 0);
}

static void test_sendfile_on_head(void **state)
{
    th_resp *r;

    (void)state;
    r = two("HEAD", "/sendfile");
    assert_int_equal(r[0].status, 200);
    assert_non_null(strstr(r[0].head, "Content-Length: 21\r\n"));
    assert_int_equal(r[0].body_len, 0);
    th_resp_free(r, 2);
    free(r);
    assert_int_equal(rcv(0), 0);
    expect_done(0);
    expect_reports(0);
}

/* ---- done and references ---- */

static void test_done_releases_what_it_does_not_hold(void **state)
{
    th_resp *r;

    (void)state;
    r = two("GET", "/done-releases");
    assert_string_equal(r[0].body, "piped body");
    th_resp_free(r, 2);
    free(r);
    expect_done(0);
    expect_reports(1);
    expect_v(0, LATCH_ERR_STATE, "latch_res_release", atomic_load(&line_bad),
             "latch_res_end", 0);
}

static void test_done_keeps_then_next_request_uses_it(void **state)
{
    th_resp *r;
    int bad;

    (void)state;
    r = two("GET", "/done-keeps");
    assert_string_equal(r[0].body, "piped body");
    th_resp_free(r, 2);
    free(r);
    expect_done(0);
    assert_non_null(atomic_load(&kept));
    atomic_store(&dones, 0);
    r = two("GET", "/use-kept");
    assert_string_equal(r[0].body, "fresh");
    th_resp_free(r, 2);
    free(r);
    assert_int_equal(rcv(0), LATCH_ERR_HTTP_HEADERS_SENT);
    assert_true(rcv(1) < 0);
    expect_reports(2);
    bad = atomic_load(&line_bad);
    expect_v(0, LATCH_ERR_HTTP_HEADERS_SENT, "latch_res_send", bad,
             "latch_res_end", 0);
    assert_int_equal(atomic_load(&dones), 0); /* the refused pipe's */
}

/* ---- latch_res_pipe_fail ---- */

static void test_pipe_fail_twice(void **state)
{
    th_resp *r;

    (void)state;
    r = two("GET", "/fail-twice");
    assert_int_equal(r[0].status, 500);
    assert_string_equal(r[0].body, "error page");
    th_resp_free(r, 2);
    free(r);
    expect_done(UV_EIO);
    assert_int_equal(rcv(0), 0);
    assert_int_equal(rcv(1), LATCH_ERR_STREAM_WRITE_AFTER_END);
    expect_reports(1);
    expect_v(0, LATCH_ERR_STREAM_WRITE_AFTER_END, "latch_res_pipe_fail",
             atomic_load(&line_bad), "latch_res_pipe_fail",
             atomic_load(&line_seal));
}

static void test_pipe_fail_after_end(void **state)
{
    th_resp *r;

    (void)state;
    r = two("GET", "/fail-after-end");
    assert_string_equal(r[0].body, "piped body");
    th_resp_free(r, 2);
    free(r);
    expect_done(0);
    assert_int_equal(rcv(0), LATCH_ERR_STREAM_WRITE_AFTER_END);
    expect_reports(1);
    expect_v(0, LATCH_ERR_STREAM_WRITE_AFTER_END, "latch_res_pipe_fail",
             atomic_load(&line_bad), "latch_res_end", 0);
}

/* The error handlers answered after latch_res_pipe_fail returned: a late
 * write names the failure as the seal, not the error page. */
static void test_late_write_names_the_failure(void **state)
{
    th_resp *r;

    (void)state;
    r = two("GET", "/fail-late");
    assert_int_equal(r[0].status, 500);
    th_resp_free(r, 2);
    free(r);
    expect_done(UV_EIO);
    assert_int_equal(rcv(0), 0);
    assert_int_equal(rcv(1), LATCH_ERR_STREAM_WRITE_AFTER_END);
    expect_reports(1);
    expect_v(0, LATCH_ERR_STREAM_WRITE_AFTER_END, "latch_res_write",
             atomic_load(&line_bad), "latch_res_pipe_fail",
             atomic_load(&line_seal));
}

static void test_pipe_fail_from_another_thread(void **state)
{
    th_resp *r;

    (void)state;
    r = two("GET", "/fail-thread");
    assert_string_equal(r[0].body, "ended on the loop");
    th_resp_free(r, 2);
    free(r);
    expect_done(0);
    assert_int_equal(rcv(0), LATCH_ERR_WRONG_THREAD);
    assert_int_equal(rcv(1), 0);
    expect_reports(1);
    expect_v(0, LATCH_ERR_WRONG_THREAD, "latch_res_pipe_fail",
             atomic_load(&line_bad), NULL, 0);
}

/* ---- a write, then a pipe; a pipe and a second writer ---- */

static void test_write_then_pipe(void **state)
{
    th_resp *r;

    (void)state;
    r = two("GET", "/write-then-pipe");
    assert_true(r[0].chunked);
    assert_string_equal(r[0].body, "head+tail");
    th_resp_free(r, 2);
    free(r);
    expect_done(0);
    assert_int_equal(rcv(0), 0);
    assert_int_equal(rcv(1), 0);
    expect_reports(0);
}

/* Node: pipeline(src, res) and res.end(x) -> the pipe's next write fails
 * with ERR_STREAM_WRITE_AFTER_END. latch: the pipe claimed the response,
 * so the whole answer beside it is the one refused, as beside a file;
 * the producer answers, and its done gets 0. */
static void test_pipe_and_a_second_writer(void **state)
{
    th_resp *r;

    (void)state;
    r = two("GET", "/pipe-plus-send");
    assert_string_equal(r[0].body, "piped body");
    th_resp_free(r, 2);
    free(r);
    expect_done(0);
    assert_int_equal(atomic_load(&cb_runs), 1);
    assert_int_equal(rcv(0), LATCH_ERR_HTTP_HEADERS_SENT);
    assert_int_equal(rcv(1), 0);
    expect_reports(1);
    expect_v(0, LATCH_ERR_HTTP_HEADERS_SENT, "latch_res_send",
             atomic_load(&line_bad), "latch_res_pipe", atomic_load(&line_seal));
}

/* The head sent beside a file being opened would answer for it. */
static void test_flush_headers_beside_a_file(void **state)
{
    th_resp *r;
    int bad;

    (void)state;
    r = two("GET", "/sendfile-then-flush");
    assert_string_equal(r[0].body, file_body);
    assert_non_null(strstr(r[0].head, "X-Still: allowed\r\n"));
    th_resp_free(r, 2);
    free(r);
    expect_done(0);
    assert_int_equal(rcv(0), LATCH_ERR_HTTP_HEADERS_SENT);
    assert_int_equal(rcv(1), LATCH_ERR_HTTP_HEADERS_SENT);
    assert_int_equal(rcv(2), 0);
    expect_reports(2);
    bad = atomic_load(&line_bad);
    expect_v(0, LATCH_ERR_HTTP_HEADERS_SENT, "latch_res_flush_headers", bad,
             "latch_res_sendfile", atomic_load(&line_seal));
    expect_v(1, LATCH_ERR_HTTP_HEADERS_SENT, "latch_res_write_head", bad + 1,
             "latch_res_sendfile", atomic_load(&line_seal));
}

/* ---- SSE ---- */

static void test_sse_start_twice(void **state)
{
    th_resp *r;
    int bad;

    (void)state;
    r = two("GET", "/sse-twice");
    assert_int_equal(r[0].status, 200);
    assert_true(r[0].chunked);
    assert_string_equal(r[0].body, "data: one\n\n");
    th_resp_free(r, 2);
    free(r);
    assert_int_equal(rcv(0), 0);
    assert_int_equal(rcv(1), LATCH_ERR_HTTP_HEADERS_SENT);
    assert_int_equal(rcv(2), LATCH_ERR_HTTP_HEADERS_SENT);
    assert_int_equal(rcv(3), 1);
    assert_int_equal(rcv(4), 0);
    expect_reports(2);
    bad = atomic_load(&line_bad);
    expect_v(0, LATCH_ERR_HTTP_HEADERS_SENT, "latch_sse_start", bad,
             "latch_sse_start", atomic_load(&line_seal));
    expect_v(1, LATCH_ERR_HTTP_HEADERS_SENT, "latch_res_send", bad + 1,
             "latch_sse_start", atomic_load(&line_seal));
}

static void test_pipe_streams_events(void **state)
{
    th_resp *r;

    (void)state;
    r = two("GET", "/pipe-then-sse");
    assert_int_equal(r[0].status, 200);
    assert_non_null(strstr(r[0].head, "text/event-stream"));
    assert_string_equal(r[0].body, "data: from the pipe\n\n");
    th_resp_free(r, 2);
    free(r);
    expect_done(0);
    assert_int_equal(rcv(0), 0);
    assert_int_equal(rcv(1), 1);
    assert_int_equal(rcv(2), 0);
    expect_reports(0);
}

static void test_subscribe_after_end(void **state)
{
    th_resp *r;
    int bad;

    (void)state;
    r = two("GET", "/sub-after-end");
    assert_string_equal(r[0].body, "done");
    th_resp_free(r, 2);
    free(r);
    assert_int_equal(rcv(0), LATCH_ERR_STREAM_WRITE_AFTER_END);
    assert_int_equal(rcv(1), LATCH_ERR_HTTP_HEADERS_SENT);
    assert_int_equal(rcv(2), LATCH_ERR_STREAM_WRITE_AFTER_END);
    expect_reports(3);
    bad = atomic_load(&line_bad);
    expect_v(0, LATCH_ERR_STREAM_WRITE_AFTER_END, "latch_subscribe", bad,
             "latch_res_send", atomic_load(&line_seal));
    expect_v(1, LATCH_ERR_HTTP_HEADERS_SENT, "latch_sse_start", bad + 1,
             "latch_res_send", atomic_load(&line_seal));
    expect_v(2, LATCH_ERR_STREAM_WRITE_AFTER_END, "latch_sse_send", bad + 2,
             "latch_res_send", atomic_load(&line_seal));
    assert_int_equal(latch_app_subscribers(srv.app, "after-end"), 0);
}

static void test_sse_beside_a_file(void **state)
{
    th_resp *r;
    int bad;

    (void)state;
    r = two("GET", "/sendfile-then-sse");
    assert_string_equal(r[0].body, file_body);
    assert_null(strstr(r[0].head, "event-stream"));
    assert_null(strstr(r[0].head, "no-cache"));
    th_resp_free(r, 2);
    free(r);
    expect_done(0);
    assert_int_equal(rcv(0), LATCH_ERR_HTTP_HEADERS_SENT);
    assert_int_equal(rcv(1), LATCH_ERR_HTTP_HEADERS_SENT);
    expect_reports(2);
    bad = atomic_load(&line_bad);
    expect_v(0, LATCH_ERR_HTTP_HEADERS_SENT, "latch_sse_start", bad,
             "latch_res_sendfile", atomic_load(&line_seal));
    expect_v(1, LATCH_ERR_HTTP_HEADERS_SENT, "latch_subscribe", bad + 1,
             "latch_res_sendfile", atomic_load(&line_seal));
    assert_int_equal(latch_app_subscribers(srv.app, "beside-file"), 0);
}

/* The callback ends the response; the hub delivers again: never to it. */
static void test_subscription_ends_its_response(void **state)
{
    const char *methods[2] = {"GET", "GET"};
    char req[256];
    int n = 2, fd = th_connect(srv.port);
    size_t len;
    char *raw;
    th_resp *r;

    (void)state;
    snprintf(req, sizeof(req), "GET /sub-cb-ends HTTP/1.1\r\nHost: x\r\n\r\n%s",
             after_req);
    th_send_str(fd, req);
    th_wait_subscribers(srv.app, "cb-ends", 1);
    assert_int_equal(latch_publish(srv.app, "cb-ends", "ev", "payload", 7), 1);
    assert_true(latch_publish(srv.app, "cb-ends", "ev", "again", 5) >= 0);
    raw = th_read(fd, &len, 5000, th_until_responses, &n);
    close(fd);
    r = th_expect_responses(raw, len, 2, methods);
    free(raw);
    assert_string_equal(r[0].body, "event: ev\nid: 1\ndata: payload\n\n");
    assert_string_equal(r[1].body, "next ran");
    th_resp_free(r, 2);
    free(r);
    th_wait_subscribers(srv.app, "cb-ends", 0);
    assert_int_equal(latch_publish(srv.app, "cb-ends", "ev", "late", 4), 0);
    assert_int_equal(atomic_load(&cb_runs), 1);
    assert_int_equal(rcv(0), 1);
    assert_int_equal(rcv(1), 0);
    assert_int_equal(rcv(2), 0);
    expect_reports(0);
}

/* A stream kept past its client: sends from its loop are refused. */
static void test_stream_used_after_client_left(void **state)
{
    int bad, fd = th_connect(srv.port);
    size_t len;
    char *raw;

    (void)state;
    th_send_str(fd, "GET /sse-kept HTTP/1.1\r\nHost: x\r\n\r\n");
    raw = th_read(fd, &len, 5000, th_until_substr, "\r\n\r\n");
    assert_non_null(strstr(raw, "text/event-stream"));
    free(raw);
    th_wait_subscribers(srv.app, "kept", 1);
    close(fd);
    th_wait_subscribers(srv.app, "kept", 0);
    assert_int_equal(latch_publish(srv.app, "kept", NULL, "x", 1), 0);
    assert_int_equal(latch_res_post(atomic_load(&kept), post_sends, NULL), 0);
    wait_for(&late_runs, 1);
    for (int i = 0; i < 3; i++)
        assert_int_equal(rcv(i), LATCH_ERR_STREAM_DESTROYED);
    expect_reports(3);
    bad = atomic_load(&line_bad);
    expect_v(0, LATCH_ERR_STREAM_DESTROYED, "latch_sse_send", bad,
             "client disconnect", 0);
    expect_v(1, LATCH_ERR_STREAM_DESTROYED, "latch_sse_comment", bad + 1,
             "client disconnect", 0);
    expect_v(2, LATCH_ERR_STREAM_DESTROYED, "latch_subscribe", bad + 2,
             "client disconnect", 0);
    assert_int_equal(latch_app_subscribers(srv.app, "kept"), 0);
}

/* Publishers on four threads while the subscribers leave (bounded; ASan
 * in the second build). */
#define STORM_CLIENTS 12
#define STORM_PUBLISHES 300
static atomic_int storm_errors;

static void *storm_publisher(void *arg)
{
    char data[64];

    for (int i = 0; i < STORM_PUBLISHES; i++) {
        snprintf(data, sizeof(data), "p%d-%d", (int)(intptr_t)arg, i);
        if (latch_publish(srv.app, "storm", "tick", data, strlen(data)) < 0)
            atomic_fetch_add(&storm_errors, 1);
    }
    return NULL;
}

static void test_publish_storm_while_clients_leave(void **state)
{
    int fds[STORM_CLIENTS];
    pthread_t t[4];

    (void)state;
    atomic_store(&storm_errors, 0);
    for (int i = 0; i < STORM_CLIENTS; i++) {
        fds[i] = th_connect(srv.port);
        th_send_str(fds[i], "GET /storm HTTP/1.1\r\nHost: x\r\n\r\n");
    }
    th_wait_subscribers(srv.app, "storm", STORM_CLIENTS);
    for (intptr_t i = 0; i < 4; i++)
        assert_int_equal(
            pthread_create(&t[i], NULL, storm_publisher, (void *)i), 0);
    for (int i = 0; i < STORM_CLIENTS; i++) {
        if (i % 2 == 0)
            th_close_reset(fds[i]);
        else
            close(fds[i]);
    }
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    assert_int_equal(atomic_load(&storm_errors), 0);
    th_wait_subscribers(srv.app, "storm", 0);
    expect_reports(0);
    th_expect_alive(srv.port, "/after", "next ran");
}

/* ---- proxy ---- */

static void test_proxy_after_write(void **state)
{
    th_resp *r;

    (void)state;
    r = two("GET", "/write-then-proxy");
    assert_string_equal(r[0].body, "partial+end");
    th_resp_free(r, 2);
    free(r);
    assert_int_equal(rcv(0), LATCH_ERR_HTTP_HEADERS_SENT);
    assert_int_equal(rcv(1), 0);
    expect_reports(1);
    expect_v(0, LATCH_ERR_HTTP_HEADERS_SENT, "latch_proxy",
             atomic_load(&line_bad), "latch_res_write",
             atomic_load(&line_seal));
}

static void test_on_error_answers_then_fails(void **state)
{
    th_resp *r;
    int bad, seal;

    (void)state;
    r = two("GET", "/proxy-down-fails");
    assert_int_equal(r[0].status, 502);
    assert_string_equal(r[0].body, "own 502");
    th_resp_free(r, 2);
    free(r);
    assert_int_equal(atomic_load(&cb_runs), 1);
    assert_int_equal(rcv(7), 0);
    assert_int_equal(rcv(0), LATCH_ERR_HTTP_HEADERS_SENT);
    assert_true(rcv(1) < 0);
    expect_reports(3);
    bad = atomic_load(&line_bad);
    seal = atomic_load(&line_seal) + 1; /* the send after the status */
    expect_v(0, LATCH_ERR_HTTP_HEADERS_SENT, "latch_res_send", bad,
             "latch_res_send", seal);
    expect_v(1, LATCH_ERR_NEXT_AFTER_RESPONSE, "latch_fail", bad + 1,
             "latch_res_send", seal);
    expect_v(2, LATCH_ERR_NEXT_AFTER_RESPONSE, "latch_next", bad + 2,
             "latch_res_send", seal);
}

/* on_error begins an answer and returns: nothing will end it. It used
 * to hang the connection (the proxy's pipe held the response for good). */
static void test_on_error_leaves_its_answer_unfinished(void **state)
{
    char *raw;
    th_vrec v;

    (void)state;
    raw = cut("/proxy-down-half");
    assert_memory_equal(raw, "HTTP/1.1 502 ", 13);
    assert_non_null(strstr(raw, "\r\n\r\n4\r\nhalf\r\n"));
    free(raw);
    assert_int_equal(atomic_load(&cb_runs), 1);
    assert_int_equal(rcv(7), 0);
    assert_int_equal(rcv(0), 1);
    expect_reports(1);
    expect_v(0, LATCH_ERR_NO_RESPONSE, "on_error", atomic_load(&line_proxy),
             "latch_res_write", 0);
    assert_true(th_vlog_get(&vlog, 0, &v));
    assert_non_null(strstr(v.sealed_file, "test_producers_guarantee.c"));
    th_expect_alive(srv.port, "/after", "next ran");
}

/* on_error answers through a producer: it used to be refused (ERR_STATE,
 * the proxy's own pipe counted as the response's one) and reported, and
 * the error handlers' 502 went out instead. */
static void expect_hook_producer(const char *path, int status, const char *body,
                                 bool done)
{
    th_resp *r = two("GET", path);

    assert_int_equal(r[0].status, status);
    assert_string_equal(r[0].body, body);
    th_resp_free(r, 2);
    free(r);
    assert_int_equal(rcv(7), 0);
    assert_int_equal(rcv(0), 0);
    if (done)
        expect_done(0);
    expect_reports(0);
}

static void test_on_error_answers_with_a_file(void **state)
{
    (void)state;
    expect_hook_producer("/proxy-down-file", 502, file_body, true);
}

static void test_on_error_answers_with_a_pipe(void **state)
{
    (void)state;
    expect_hook_producer("/proxy-down-pipe", 200, "piped body", true);
}

static void test_on_error_fails_over(void **state)
{
    (void)state;
    expect_hook_producer("/proxy-down-failover", 200, "from origin", false);
}

/* A middleware after latch_use_proxy never runs for a proxied path. */
static void test_middleware_after_use_proxy(void **state)
{
    th_resp *r;

    (void)state;
    r = two("GET", "/up/x");
    assert_string_equal(r[0].body, "from origin");
    th_resp_free(r, 2);
    free(r);
    assert_int_equal(atomic_load(&late_runs), 0);
    expect_reports(0);
}

int main(void)
{
#define T(f) cmocka_unit_test_setup(f, before_each)
    const struct CMUnitTest tests[] = {
        T(test_done_answers_after_timeout),
        T(test_source_completes_after_timeout),
        T(test_source_completes_after_client_left),
        T(test_pipe_then_sendfile),
        T(test_sendfile_twice),
        T(test_sendfile_then_pipe),
        T(test_proxy_twice),
        T(test_sendfile_in_error_handler_after_headers),
        T(test_sendfile_on_head),
        T(test_done_releases_what_it_does_not_hold),
        T(test_done_keeps_then_next_request_uses_it),
        T(test_pipe_fail_twice),
        T(test_pipe_fail_after_end),
        T(test_late_write_names_the_failure),
        T(test_pipe_fail_from_another_thread),
        T(test_write_then_pipe),
        T(test_pipe_and_a_second_writer),
        T(test_flush_headers_beside_a_file),
        T(test_sse_start_twice),
        T(test_pipe_streams_events),
        T(test_subscribe_after_end),
        T(test_sse_beside_a_file),
        T(test_subscription_ends_its_response),
        T(test_stream_used_after_client_left),
        T(test_publish_storm_while_clients_leave),
        T(test_proxy_after_write),
        T(test_on_error_answers_then_fails),
        T(test_on_error_leaves_its_answer_unfinished),
        T(test_on_error_answers_with_a_file),
        T(test_on_error_answers_with_a_pipe),
        T(test_on_error_fails_over),
        T(test_middleware_after_use_proxy),
    };
#undef T
    return cmocka_run_group_tests(tests, setup, teardown);
}
