/*
 * test_work_cancel.c - a latch_work job that sees its request's
 * cancellation without plumbing: latch_work_cancelled() and the descriptor
 * of latch_work_cancel_fd(), polled by a job blocked as a driver call
 * would be, on a real server: the client leaves (FIN and reset), the
 * request timeout fires, the descriptor is asked for only after the
 * cancellation (readable at once), a job whose request is not cancelled
 * (never readable, completion 0), and both calls outside any job. Each
 * time the completion runs exactly once with the outcome and on_close
 * follows, and the descriptors are closed once the jobs are over.
 *
 * latch_work_copy too: the job and its completion get latch's copy of a
 * handler's local (the local overwritten after the call changes
 * nothing), aligned, the job's results seen by the completion, the
 * biggest copy allowed, and a cancelled job's copy freed with no owner in
 * the app (ASan's leak check in the sanitizer build).
 *
 * The jobs block in poll() on the descriptor for at most 10 s, so a
 * missing signal shows as a timeout of the wait below, never as a hang.
 * Not here: latch_work itself (test_async.c).
 */
#include "harness.h"

#include <dirent.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

/* What the server's threads saw; under mu, waited for with cv. */
static struct {
    int started;       /* jobs that began polling */
    int polled;        /* jobs whose poll returned */
    int readable;      /* ... with the descriptor readable */
    int saw_cancelled; /* ... and latch_work_cancelled() true */
    int fd;            /* the last job's descriptor */
    int fd_again;      /* a second call's answer */
    int waited_ms;     /* how long the last poll blocked */
    int after, after_status, close;
    int handler_cancelled, handler_fd; /* the calls on the loop */
    char seen[512];                    /* what /read's job read */
    int ip_null, loop_reads_ok;
} st;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;

static void bump(int *v)
{
    pthread_mutex_lock(&mu);
    (*v)++;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
}

/* A copy of st to assert on: a failed assertion must not leave mu held
 * (the server's threads would wait for it forever). */
static __typeof__(st) snap(void)
{
    __typeof__(st) c;

    pthread_mutex_lock(&mu);
    c = st;
    pthread_mutex_unlock(&mu);
    return c;
}

/* Waits until *v >= n, at most timeout_ms; the test thread's only wait. */
static bool await_ge(const int *v, int n, int timeout_ms)
{
    int64_t end = th_now_ms() + timeout_ms;
    bool ok;

    pthread_mutex_lock(&mu);
    while (*v < n && th_now_ms() < end) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 10 * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&cv, &mu, &ts);
    }
    ok = *v >= n;
    pthread_mutex_unlock(&mu);
    return ok;
}

/* A driver call blocked on its socket, here only on the cancellation. */
static void job_poll(void *data)
{
    int timeout = data != NULL ? *(const int *)data : 10000;
    int fd = latch_work_cancel_fd();
    struct pollfd p = {fd, POLLIN, 0};
    int64_t t0 = th_now_ms();
    int r;

    pthread_mutex_lock(&mu);
    st.fd = fd;
    st.fd_again = latch_work_cancel_fd();
    pthread_mutex_unlock(&mu);
    bump(&st.started);
    r = poll(&p, 1, timeout);
    pthread_mutex_lock(&mu);
    st.waited_ms = (int)(th_now_ms() - t0);
    if (r == 1 && (p.revents & POLLIN))
        st.readable++;
    if (latch_work_cancelled())
        st.saw_cancelled++;
    pthread_mutex_unlock(&mu);
    bump(&st.polled);
}

/* Asks for the descriptor only once the flag says cancelled. */
static void job_late_fd(void *data)
{
    int64_t end = th_now_ms() + 10000;
    struct pollfd p;

    (void)data;
    bump(&st.started);
    while (!latch_work_cancelled() && th_now_ms() < end) {
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    p.fd = latch_work_cancel_fd();
    p.events = POLLIN;
    p.revents = 0;
    pthread_mutex_lock(&mu);
    st.fd = p.fd;
    if (latch_work_cancelled())
        st.saw_cancelled++;
    if (poll(&p, 1, 0) == 1 && (p.revents & POLLIN))
        st.readable++;
    pthread_mutex_unlock(&mu);
    bump(&st.polled);
}

static void after(latch_res *res, int status, void *data)
{
    (void)data;
    pthread_mutex_lock(&mu);
    st.after_status = status;
    pthread_mutex_unlock(&mu);
    if (status == 0)
        latch_res_send(res, "done", 4);
    bump(&st.after);
}

static void on_close(latch_res *res, void *data)
{
    (void)res;
    (void)data;
    bump(&st.close);
}

static int h_job(latch_req *req, latch_res *res, void *data)
{
    (void)req;
    pthread_mutex_lock(&mu);
    st.handler_cancelled = latch_work_cancelled();
    st.handler_fd = latch_work_cancel_fd();
    pthread_mutex_unlock(&mu);
    latch_res_on_close(res, on_close, NULL);
    return latch_work(res, job_poll, after, data);
}

static int h_late(latch_req *req, latch_res *res, void *data)
{
    (void)req;
    (void)data;
    latch_res_on_close(res, on_close, NULL);
    return latch_work(res, job_late_fd, after, NULL);
}

/* /read/:id: the job waits until the client left, then reads the request
 * (which its reference keeps whole); meanwhile a timer on the loop
 * decodes query values and cookies into the same arena, so both threads
 * take arena bytes at once. */
typedef struct reader {
    latch_req *req;
    int loop_rounds;
} reader;

static void read_everything(latch_req *req, char *out, size_t cap)
{
    const void *body;
    size_t blen;
    const char *vals[2];
    int n = latch_req_query_values(req, "tag", vals, 2);

    latch_req_body(req, &body, &blen);
    snprintf(out, cap,
             "%s %s %s id=%s q=%s tags=%d:%s,%s c=%s h=%s n=%d b=%.*s",
             latch_req_method(req), latch_req_path(req), latch_req_url(req),
             latch_req_param(req, "id"), latch_req_query(req, "q"), n,
             n > 0 ? vals[0] : "-", n > 1 ? vals[1] : "-",
             latch_req_cookie(req, "sid"), latch_req_header(req, "X-Thing"),
             latch_req_header_count(req), (int)blen, (const char *)body);
}

static const char read_want[] =
    "POST /read/a b /read/a%20b?q=x%2By&tag=one&tag=t%C3%A9 id=a b q=x+y "
    "tags=2:one,t\xc3\xa9 c=s 1 h=v n=4 b=hello";

static void job_read(void *data)
{
    reader *r = data;
    struct pollfd p = {latch_work_cancel_fd(), POLLIN, 0};
    char buf[512];
    int i;

    bump(&st.started);
    poll(&p, 1, 10000); /* until the client left */
    for (i = 0; i < 2000; i++)
        read_everything(r->req, buf, sizeof(buf));
    pthread_mutex_lock(&mu);
    snprintf(st.seen, sizeof(st.seen), "%s", buf);
    st.ip_null = latch_req_ip(r->req) == NULL;
    pthread_mutex_unlock(&mu);
    bump(&st.polled);
}

static void loop_reads(latch_res *res, void *data)
{
    reader *r = data;
    char buf[512];
    int i;

    for (i = 0; i < 200; i++)
        read_everything(r->req, buf, sizeof(buf));
    if (strcmp(buf, read_want) == 0)
        bump(&st.loop_reads_ok);
    if (++r->loop_rounds < 50)
        latch_set_timeout(res, 1, loop_reads, r);
}

static void after_read(latch_res *res, int status, void *data)
{
    (void)res;
    free(data);
    pthread_mutex_lock(&mu);
    st.after_status = status;
    pthread_mutex_unlock(&mu);
    bump(&st.after);
}

static int h_read(latch_req *req, latch_res *res, void *data)
{
    reader *r = calloc(1, sizeof(*r));

    (void)data;
    if (r == NULL)
        return latch_fail(req, 500, NULL);
    r->req = req;
    latch_set_timeout(res, 1, loop_reads, r);
    return latch_work(res, job_read, after_read, r);
}

/* latch_work_copy: a handler's local, copied. */
typedef struct copied {
    char tag[16];
    long n;
    const void *local; /* the handler's variable, to compare */
    int block;         /* the job waits for the cancellation first */
} copied;

static struct {
    char tag[16];
    long n;
    int aligned, distinct, big_ok;
} cp;

/* cp, copied under mu (see snap). */
static __typeof__(cp) cp_snap(void)
{
    __typeof__(cp) c;

    pthread_mutex_lock(&mu);
    c = cp;
    pthread_mutex_unlock(&mu);
    return c;
}

static void copy_job(void *data)
{
    copied *c = data;

    pthread_mutex_lock(&mu);
    snprintf(cp.tag, sizeof(cp.tag), "%s", c->tag);
    cp.n = c->n;
    cp.aligned = (uintptr_t)data % _Alignof(max_align_t) == 0;
    cp.distinct = data != c->local;
    pthread_mutex_unlock(&mu);
    if (c->block) {
        struct pollfd p = {latch_work_cancel_fd(), POLLIN, 0};
        bump(&st.started);
        poll(&p, 1, 10000);
    }
    c->n *= 2; /* the result, for the completion */
}

static void copy_after(latch_res *res, int status, void *data)
{
    const copied *c = data;

    pthread_mutex_lock(&mu);
    st.after_status = status;
    pthread_mutex_unlock(&mu);
    if (status == 0)
        latch_res_jsonf(res, "{\"tag\":%s,\"n\":%ld}", c->tag, c->n);
    bump(&st.after);
}

static int h_copy(latch_req *req, latch_res *res, void *data)
{
    copied c = {.n = 21, .block = data != NULL};
    int r;

    snprintf(c.tag, sizeof(c.tag), "%s", latch_req_param(req, "tag"));
    c.local = &c;
    r = latch_work_copy(res, copy_job, copy_after, &c, sizeof(c));
    memset(&c, 0x5a, sizeof(c)); /* the job must not see this */
    return r;
}

/* The biggest copy: its last byte arrives too. */
static void big_job(void *data)
{
    const unsigned char *b = data;

    pthread_mutex_lock(&mu);
    cp.big_ok = b[0] == 1 && b[LATCH_WORK_COPY_MAX - 1] == 2;
    pthread_mutex_unlock(&mu);
}

static void big_after(latch_res *res, int status, void *data)
{
    (void)data;
    if (status == 0)
        latch_res_send(res, "big", 3);
    bump(&st.after);
}

static int h_copy_big(latch_req *req, latch_res *res, void *data)
{
    unsigned char *b = calloc(1, LATCH_WORK_COPY_MAX);
    int r;

    (void)data;
    if (b == NULL)
        return latch_fail(req, 500, NULL);
    b[0] = 1;
    b[LATCH_WORK_COPY_MAX - 1] = 2;
    r = latch_work_copy(res, big_job, big_after, b, LATCH_WORK_COPY_MAX);
    free(b);
    return r;
}

static const int short_poll = 0;

static th_server srv;

static int setup(void **state)
{
    latch_app *app = latch_app_new();

    (void)state;
    memset(&st, 0, sizeof(st));
    memset(&cp, 0, sizeof(cp));
    st.fd = st.fd_again = st.handler_fd = -2;
    assert_non_null(app);
    assert_int_equal(latch_get(app, "/job", h_job, NULL), 0);
    assert_int_equal(latch_get(app, "/late", h_late, NULL), 0);
    assert_int_equal(latch_post(app, "/read/:id", h_read, NULL), 0);
    assert_int_equal(latch_get(app, "/quick", h_job, (void *)&short_poll), 0);
    assert_int_equal(latch_get(app, "/timeout", h_job, NULL), 0);
    assert_int_equal(latch_get(app, "/copy/:tag", h_copy, NULL), 0);
    assert_int_equal(latch_get(app, "/copy-wait/:tag", h_copy, &srv), 0);
    assert_int_equal(latch_get(app, "/copy-big", h_copy_big, NULL), 0);
    th_server_start(&srv, app);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    assert_int_equal(th_server_stop(&srv), 0);
    return 0;
}

static int get(const char *path)
{
    int fd = th_connect(srv.port);
    char req[256];

    snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", path);
    th_send_str(fd, req);
    return fd;
}

/* The job, blocked in poll, wakes when the client leaves; the completion
 * runs once with LATCH_ERR_CANCELLED, then on_close. */
static void client_leaves(bool reset)
{
    int fd = get("/job");

    assert_true(await_ge(&st.started, 1, 5000));
    if (reset)
        th_close_reset(fd);
    else
        close(fd);
    assert_true(await_ge(&st.polled, 1, 5000));
    assert_true(await_ge(&st.after, 1, 5000));
    assert_true(await_ge(&st.close, 1, 5000));
    {
        __typeof__(st) s = snap();
        assert_int_equal(s.readable, 1);
        assert_int_equal(s.saw_cancelled, 1);
        assert_true(s.fd >= 0);
        assert_int_equal(s.fd_again, s.fd); /* one descriptor per job */
        assert_true(s.waited_ms < 5000);
        assert_int_equal(s.after, 1);
        assert_int_equal(s.after_status, LATCH_ERR_CANCELLED);
        assert_int_equal(s.close, 1);
    }
}

static void test_client_fin_wakes_the_job(void **state)
{
    (void)state;
    client_leaves(false);
}

static void test_client_reset_wakes_the_job(void **state)
{
    (void)state;
    client_leaves(true);
}

/* The request timeout cancels: the client gets the timeout's answer, the
 * job wakes long before its own 10 s, the completion sees CANCELLED. */
static void test_timeout_wakes_the_job(void **state)
{
    int fd;
    size_t len;
    char *out;

    (void)state;
    fd = get("/timeout");
    assert_true(await_ge(&st.started, 1, 5000));
    /* The app's 100 ms request timeout answers while the job blocks. */
    out = th_read(fd, &len, 5000, th_until_responses, &(int){1});
    assert_true(strncmp(out, "HTTP/1.1 503 ", 13) == 0);
    free(out);
    assert_true(await_ge(&st.after, 1, 5000));
    {
        __typeof__(st) s = snap();
        assert_int_equal(s.readable, 1);
        assert_int_equal(s.saw_cancelled, 1);
        assert_int_equal(s.after_status, LATCH_ERR_CANCELLED);
    }
    close(fd);
}

static int timeout_setup(void **state)
{
    latch_app *app = latch_app_new();

    (void)state;
    memset(&st, 0, sizeof(st));
    assert_non_null(app);
    assert_int_equal(latch_app_set_request_timeout(app, 100, 0), 0);
    assert_int_equal(latch_get(app, "/timeout", h_job, NULL), 0);
    th_server_start(&srv, app);
    return 0;
}

/* Asked for after the cancellation, the descriptor is readable at once. */
static void test_fd_made_after_the_cancel_is_readable(void **state)
{
    int fd = get("/late");

    (void)state;
    assert_true(await_ge(&st.started, 1, 5000));
    close(fd);
    assert_true(await_ge(&st.polled, 1, 5000));
    assert_true(await_ge(&st.after, 1, 5000));
    {
        __typeof__(st) s = snap();
        assert_true(s.fd >= 0);
        assert_int_equal(s.saw_cancelled, 1);
        assert_int_equal(s.readable, 1);
        assert_int_equal(s.after_status, LATCH_ERR_CANCELLED);
    }
}

/* Open descriptors of this process. */
static int open_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    int n = 0;

    assert_non_null(d);
    while ((e = readdir(d)) != NULL)
        n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

/* Not cancelled: never readable, the completion gets 0 and answers; and
 * the descriptors of finished jobs are closed. On the loop, outside any
 * job, the calls answer false and -1. */
static void quick_exchange(void)
{
    static const char req[] = "GET /quick HTTP/1.1\r\nHost: x\r\n"
                              "Connection: close\r\n\r\n";
    size_t len;
    char *out = th_exchange(srv.port, req, sizeof(req) - 1, 1, &len);
    th_resp *r = th_expect_responses(out, len, 1, NULL);

    assert_int_equal(r[0].status, 200);
    assert_string_equal(r[0].body, "done");
    th_resp_free(r, 1);
    free(r);
    free(out);
}

/* Descriptors come back to `before` within 5 s (the server closes its
 * side of each connection on its own time); returns the last count. */
static int fds_settle(int before)
{
    int now = open_fds();

    for (int64_t end = th_now_ms() + 5000; now > before && th_now_ms() < end;
         now = open_fds()) {
        struct timespec ts = {0, 5000000};
        nanosleep(&ts, NULL);
    }
    return now;
}

/* Not cancelled: never readable, the completion gets 0 and answers; and
 * the descriptors of finished jobs are closed. On the loop, outside any
 * job, the calls answer false and -1. */
static void test_uncancelled_job_and_no_fd_left(void **state)
{
    int before, i;

    (void)state;
    /* The first request lets the worker make what it keeps (its loop's
     * own descriptors) before the count. */
    quick_exchange();
    before = fds_settle(open_fds());
    for (i = 0; i < 20; i++)
        quick_exchange();
    assert_true(await_ge(&st.after, 21, 5000));
    {
        __typeof__(st) s = snap();
        assert_int_equal(s.readable, 0);
        assert_int_equal(s.saw_cancelled, 0);
        assert_int_equal(s.after_status, 0);
        assert_true(s.fd >= 0); /* each job made one */
        assert_int_equal(s.handler_cancelled, 0);
        assert_int_equal(s.handler_fd, -1);
    }
    assert_true(fds_settle(before) <= before);
    assert_false(latch_work_cancelled());
    assert_int_equal(latch_work_cancel_fd(), -1);
}

/* Request strings stay whole and unchanged for the job after the client
 * left (its reference keeps them; ASan sees any use after free), decoding
 * from the job while the loop decodes gives the right strings, and
 * latch_req_ip off the loop is refused. */
static void test_request_readable_from_the_job(void **state)
{
    static const char req[] =
        "POST /read/a%20b?q=x%2By&tag=one&tag=t%C3%A9 HTTP/1.1\r\n"
        "Host: x\r\nCookie: sid=s%201\r\nX-Thing: v\r\n"
        "Content-Length: 5\r\n\r\nhello";
    int fd = th_connect(srv.port);

    (void)state;
    th_send(fd, req, sizeof(req) - 1);
    assert_true(await_ge(&st.started, 1, 5000));
    assert_true(await_ge(&st.loop_reads_ok, 1, 5000));
    close(fd);
    assert_true(await_ge(&st.polled, 1, 15000));
    assert_true(await_ge(&st.after, 1, 5000));
    {
        __typeof__(st) s = snap();
        assert_string_equal(s.seen, read_want);
        assert_int_equal(s.ip_null, 1);
        assert_int_equal(s.after_status, LATCH_ERR_CANCELLED);
    }
    assert_int_equal(latch_app_violation_count(srv.app, LATCH_ERR_WRONG_THREAD),
                     1);
}

/* The job and the completion see the handler's values, in latch's own
 * aligned copy, and the completion sees what the job wrote; the biggest
 * copy allowed arrives whole. */
static void test_work_copy(void **state)
{
    static const char want[] =
        "HTTP/1.1 200 OK\r\n"
        "Content-Type: application/json; charset=utf-8\r\n"
        "Content-Length: 22\r\n"
        "Date: <d>\r\n"
        "Connection: close\r\n"
        "\r\n"
        "{\"tag\":\"hello\",\"n\":42}";
    static const char req[] = "GET /copy/hello HTTP/1.1\r\nHost: x\r\n"
                              "Connection: close\r\n\r\n";
    static const char big[] = "GET /copy-big HTTP/1.1\r\nHost: x\r\n"
                              "Connection: close\r\n\r\n";
    size_t len;
    char *out = th_exchange(srv.port, req, sizeof(req) - 1, 1, &len);
    char *norm = th_normalize(out, len);
    __typeof__(cp) c;

    (void)state;
    assert_string_equal(norm, want);
    free(norm);
    free(out);
    c = cp_snap();
    assert_string_equal(c.tag, "hello");
    assert_int_equal(c.n, 21);
    assert_int_equal(c.aligned, 1);
    assert_int_equal(c.distinct, 1);
    assert_true(await_ge(&st.after, 1, 5000));
    assert_int_equal(snap().after_status, 0);

    out = th_exchange(srv.port, big, sizeof(big) - 1, 1, &len);
    assert_non_null(strstr(out, "\r\n\r\nbig"));
    free(out);
    assert_int_equal(cp_snap().big_ok, 1);
    assert_int_equal(latch_app_violation_count(srv.app, LATCH_ERR_INVALID_ARG),
                     0);
}

/* A cancelled job's copy: the completion runs once with CANCELLED and
 * nobody in the app frees anything (the sanitizer build checks that latch
 * does). */
static void test_work_copy_cancelled(void **state)
{
    int fd = get("/copy-wait/bye");

    (void)state;
    assert_true(await_ge(&st.started, 1, 5000));
    close(fd);
    assert_true(await_ge(&st.after, 1, 5000));
    assert_int_equal(snap().after_status, LATCH_ERR_CANCELLED);
    assert_string_equal(cp_snap().tag, "bye");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_client_fin_wakes_the_job, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_client_reset_wakes_the_job, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_timeout_wakes_the_job,
                                        timeout_setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_fd_made_after_the_cancel_is_readable, setup, teardown),
        cmocka_unit_test_setup_teardown(test_uncancelled_job_and_no_fd_left,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_request_readable_from_the_job,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_work_copy, setup, teardown),
        cmocka_unit_test_setup_teardown(test_work_copy_cancelled, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
