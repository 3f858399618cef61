/*
 * res_probe.h - what the response tests share (test_res_node.c and
 * test_res_states.c): notes the server thread leaves for the test, waits
 * with deadlines, counters for callbacks, a raw client and checks of
 * Node's messages. Included by each of those test programs; its
 * functions are static inline so each program takes what it uses.
 */
#ifndef LATCH_TEST_RES_PROBE_H
#define LATCH_TEST_RES_PROBE_H

#include "harness.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

/* ------------------------------------------------------------------ */
/* What the server thread tells the test                                */
/* ------------------------------------------------------------------ */

/* A note: the result of one call made on the server, with the response's
 * flags right after it. */
typedef struct note {
    int tag;
    int rc;
    int line;
    bool hs, we, wf, ds; /* headers_sent, writable_ended/_finished, destroyed */
    uint64_t req_id;
} note;

enum {
    T_PRE = 1, /* set_header("X-Pre") before the state is set up */
    T_SEAL,    /* the call that put the response in its state */
    T_CALL,    /* the call under test */
    T_COMPLETE,
    T_READY,  /* a handler holds its response */
    T_TOMB,   /* flags of the tombstone before the late call */
    T_THREAD, /* the foreign thread is done */
    T_POST,   /* a posted function ran */
    T_X,      /* test specific */
};

/* Counted events. */
enum { K_FINISH, K_CLOSE, K_DRAIN, K_NCOUNT };

#define NOTES_MAX 128

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static struct {
    int n;
    note v[NOTES_MAX];
    int count[K_NCOUNT];
    int seq;             /* event order */
    int first[K_NCOUNT]; /* seq of the first event of each kind */
    latch_res *held;     /* a response a handler retained */
    pthread_t loop;      /* the server's loop thread */
    pthread_t worker;    /* a thread a handler started */
    bool worker_started;
    bool post_on_loop;
} sh;

static inline void put_note(int tag, latch_res *res, int rc, int line)
{
    pthread_mutex_lock(&mu);
    if (sh.n < NOTES_MAX) {
        note *n = &sh.v[sh.n++];
        memset(n, 0, sizeof(*n));
        n->tag = tag;
        n->rc = rc;
        n->line = line;
        if (res != NULL) {
            n->hs = latch_res_headers_sent(res);
            n->we = latch_res_writable_ended(res);
            n->wf = latch_res_writable_finished(res);
            n->ds = latch_res_destroyed(res);
            n->req_id = latch_req_id(latch_res_req(res));
        }
    }
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
}

static inline void bump(int k)
{
    pthread_mutex_lock(&mu);
    if (sh.count[k]++ == 0)
        sh.first[k] = ++sh.seq;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
}

static inline void deadline_in(struct timespec *ts, int ms)
{
    clock_gettime(CLOCK_REALTIME, ts);
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (long)(ms % 1000) * 1000000;
    if (ts->tv_nsec >= 1000000000) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000;
    }
}

/* Waits until a note with `tag` exists; copies the last one. */
static inline bool wait_note(int tag, int ms, note *out)
{
    struct timespec ts;
    bool found = false;

    if (out != NULL)
        memset(out, 0, sizeof(*out)); /* set on every path */
    deadline_in(&ts, ms);
    pthread_mutex_lock(&mu);
    for (;;) {
        for (int i = sh.n - 1; i >= 0; i--)
            if (sh.v[i].tag == tag) {
                if (out != NULL)
                    *out = sh.v[i];
                found = true;
                break;
            }
        if (found || pthread_cond_timedwait(&cv, &mu, &ts) != 0)
            break;
    }
    pthread_mutex_unlock(&mu);
    return found;
}

/* Waits until at least n notes with `tag` exist. */
static inline bool wait_notes(int tag, int n, int ms)
{
    struct timespec ts;
    int k = 0;

    deadline_in(&ts, ms);
    pthread_mutex_lock(&mu);
    for (;;) {
        k = 0;
        for (int i = 0; i < sh.n; i++)
            k += sh.v[i].tag == tag;
        if (k >= n || pthread_cond_timedwait(&cv, &mu, &ts) != 0)
            break;
    }
    pthread_mutex_unlock(&mu);
    return k >= n;
}

/* The note with `tag` (asserts it exists; no waiting). */
static inline note get_note(int tag)
{
    note n = {0};

    if (!wait_note(tag, 0, &n))
        fail_msg("no note with tag %d", tag);
    return n;
}

static inline int notes_with(int tag)
{
    int k = 0;

    pthread_mutex_lock(&mu);
    for (int i = 0; i < sh.n; i++)
        k += sh.v[i].tag == tag;
    pthread_mutex_unlock(&mu);
    return k;
}

/* All notes with `tag`, in order; returns how many (at most max). */
static inline int notes_all(int tag, note *out, int max)
{
    int k = 0;

    pthread_mutex_lock(&mu);
    for (int i = 0; i < sh.n && k < max; i++)
        if (sh.v[i].tag == tag)
            out[k++] = sh.v[i];
    pthread_mutex_unlock(&mu);
    return k;
}

static inline bool wait_count(int k, int n, int ms)
{
    struct timespec ts;
    bool ok;

    deadline_in(&ts, ms);
    pthread_mutex_lock(&mu);
    while (sh.count[k] < n)
        if (pthread_cond_timedwait(&cv, &mu, &ts) != 0)
            break;
    ok = sh.count[k] >= n;
    pthread_mutex_unlock(&mu);
    return ok;
}

static inline int count_of(int k)
{
    int n;

    pthread_mutex_lock(&mu);
    n = sh.count[k];
    pthread_mutex_unlock(&mu);
    return n;
}

static inline int first_of(int k)
{
    int n;

    pthread_mutex_lock(&mu);
    n = sh.first[k];
    pthread_mutex_unlock(&mu);
    return n;
}

static inline latch_res *held_res(void)
{
    latch_res *r;

    pthread_mutex_lock(&mu);
    r = sh.held;
    pthread_mutex_unlock(&mu);
    return r;
}

static inline void set_held(latch_res *res)
{
    pthread_mutex_lock(&mu);
    sh.held = res;
    sh.loop = pthread_self();
    pthread_mutex_unlock(&mu);
}

/* ------------------------------------------------------------------ */
/* A server per test                                                    */
/* ------------------------------------------------------------------ */

typedef int (*scen_fn)(latch_req *req, latch_res *res, const void *arg);

static th_server srv;
static bool srv_running;
static th_vlog vlog;
static scen_fn scen_f;
static const void *scen_arg;

/* Every request: /ok answers "ok" (a probe that the server still serves
 * well), the rest goes to the test's scenario. */
static inline int route(latch_req *req, latch_res *res, void *data)
{
    (void)data;
    if (strcmp(latch_req_path(req), "/ok") == 0) {
        latch_res_send(res, "ok", 2);
        return LATCH_DONE;
    }
    return scen_f(req, res, scen_arg);
}

static inline latch_app *srv_prepare(scen_fn fn, const void *arg)
{
    latch_app *app = latch_app_new();

    assert_non_null(app);
    pthread_mutex_lock(&mu);
    memset(&sh, 0, sizeof(sh));
    pthread_mutex_unlock(&mu);
    scen_f = fn;
    scen_arg = arg;
    th_record_violations_full(app, &vlog);
    assert_int_equal(latch_use(app, NULL, route, NULL), 0);
    return app;
}

static inline void srv_go(latch_app *app)
{
    th_server_start(&srv, app);
    srv_running = true;
}

static inline void srv_start(scen_fn fn, const void *arg)
{
    srv_go(srv_prepare(fn, arg));
}

static inline void srv_stop(void)
{
    if (!srv_running)
        return;
    srv_running = false;
    assert_int_equal(th_server_stop(&srv), 0);
}

static inline int teardown(void **state)
{
    (void)state;
    srv_stop();
    return 0;
}

/* ------------------------------------------------------------------ */
/* Client helpers                                                       */
/* ------------------------------------------------------------------ */

#define REQ(path) "GET " path " HTTP/1.1\r\nHost: x\r\n\r\n"
#define KA "Date: <d>\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\n"

static const char ok_bytes[] = "HTTP/1.1 200 OK\r\n"
                               "Content-Type: text/html; charset=utf-8\r\n"
                               "Content-Length: 2\r\n" KA "\r\nok";

/* Reads one response on fd; asserts its normalized bytes are `want`, that
 * nothing follows it, and that the connection is still open. */
static inline void expect_resp(int fd, const char *want)
{
    int one = 1;
    size_t len;
    char *out = th_read(fd, &len, 5000, th_until_responses, &one);
    char *norm = th_normalize(out, len);
    th_resp *r;

    if (th_last_end() != TH_OPEN)
        fail_msg("the connection ended (%d) after:\n%s", th_last_end(), out);
    r = th_expect_responses(out, len, 1, NULL);
    assert_string_equal(norm, want);
    th_resp_free(r, 1);
    free(r);
    free(norm);
    free(out);
}

/* The connection still serves: /ok gets exactly its answer. */
static inline void expect_ok_on(int fd)
{
    th_send_str(fd, REQ("/ok"));
    expect_resp(fd, ok_bytes);
}

/* A new connection gets /ok. */
static inline void expect_server_ok(void)
{
    int fd = th_connect(srv.port);

    expect_ok_on(fd);
    close(fd);
}

/* Reads until the server closes; asserts no byte came and a FIN. */
static inline void expect_nothing_then_fin(int fd)
{
    size_t len;
    char *out = th_read(fd, &len, 5000, NULL, NULL);

    if (len != 0)
        fail_msg("expected no byte, got:\n%s", out);
    assert_int_equal(th_last_end(), TH_EOF);
    free(out);
}

/* ------------------------------------------------------------------ */
/* Violation checks                                                     */
/* ------------------------------------------------------------------ */

static inline th_vrec vget(int i)
{
    th_vrec v;

    if (!th_vlog_get(&vlog, i, &v))
        fail_msg("violation %d was not reported (%d reported)", i,
                 th_vlog_count(&vlog));
    return v;
}

/* Asserts the offending site and the sealing site of a report.
 * sealed_call NULL: the response was not sealed; sealed_line 0: a
 * framework event (no file). */
static inline void check_sites(const th_vrec *v, const char *call, int line,
                               const char *func, const char *sealed_call,
                               int sealed_line)
{
    assert_string_equal(v->call, call);
    assert_string_equal(v->at_file, test_file);
    assert_int_equal(v->at_line, line);
    if (func != NULL)
        assert_string_equal(v->at_func, func);
    if (sealed_call == NULL) {
        assert_true(v->sealed_call_null);
        return;
    }
    assert_false(v->sealed_call_null);
    assert_string_equal(v->sealed_call, sealed_call);
    if (sealed_line == 0) {
        assert_true(v->sealed_file_null);
        assert_int_equal(v->sealed_line, 0);
    } else {
        assert_string_equal(v->sealed_file, test_file);
        assert_int_equal(v->sealed_line, sealed_line);
    }
}

static inline void check_code(const th_vrec *v, int code)
{
    if (v->code != code)
        fail_msg("violation code %s (%d), expected %s (%d): %s", v->name,
                 v->code, latch_err_name(code), code, v->message);
    assert_string_equal(v->name, latch_err_name(code));
}

/* "Cannot <verb> headers after they are sent to the client" with any
 * verb (Node's pattern). */
static inline void check_headers_sent_pattern(const char *msg)
{
    static const char tail[] = " headers after they are sent to the client";
    size_t n = strlen(msg), t = sizeof(tail) - 1;

    if (strncmp(msg, "Cannot ", 7) != 0 || n <= 7 + t ||
        strcmp(msg + n - t, tail) != 0 || strchr(msg + 7, ' ') != msg + n - t)
        fail_msg("not Node's ERR_HTTP_HEADERS_SENT message: \"%s\"", msg);
}

#endif
