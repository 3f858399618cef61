/*
 * test_signal.c - graceful shutdown on a signal, in a forked server
 * process that installs latch's own SIGINT/SIGTERM handlers: a request in
 * flight when SIGTERM arrives still gets its complete response (which says
 * Connection: close), then the connection closes, new connections are
 * refused or closed, and the process exits 0; an idle keep-alive
 * connection is closed at once. Every wait has a deadline and the child is
 * killed with SIGKILL if it does not exit, so the test never hangs.
 *
 * The child learns nothing by sleeping either: its slow handler tells the
 * parent it has the request (a byte on a pipe) and finishes only when the
 * parent says so (a byte on another pipe), after the parent has seen the
 * server stop accepting.
 */
#include "harness.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

/* ------------------------------------------------------------------ */
/* The child: a server with signal handling on                          */
/* ------------------------------------------------------------------ */

static int got_w = -1; /* child -> parent: "I have the request" */
static int go_r = -1;  /* parent -> child: "finish it now" */

static int hello(latch_req *req, latch_res *res, void *data)
{
    (void)req;
    (void)data;
    latch_res_set_header(res, "Content-Type", "text/plain");
    latch_res_send(res, "Hello", 5);
    return LATCH_DONE;
}

static void slow_done(latch_res *res, void *data)
{
    (void)data;
    latch_res_set_header(res, "Content-Type", "text/plain");
    latch_res_end(res, "slow", 4);
    latch_res_release(res);
}

/* Waits for the parent's go (at most 10 s), then ends on the loop. */
static void *slow_worker(void *arg)
{
    struct pollfd p = {go_r, POLLIN, 0};
    char b;

    if (poll(&p, 1, 10000) == 1)
        (void)!read(go_r, &b, 1);
    latch_res_post(arg, slow_done, NULL);
    return NULL;
}

static int slow(latch_req *req, latch_res *res, void *data)
{
    pthread_t t;

    (void)req;
    (void)data;
    latch_res_retain(res);
    if (pthread_create(&t, NULL, slow_worker, res) != 0) {
        latch_res_release(res);
        latch_res_send_status(res, 500);
        return LATCH_DONE;
    }
    pthread_detach(t);
    (void)!write(got_w, "g", 1);
    return LATCH_DONE;
}

/* Runs the server; never returns. */
static void child_main(int port_w)
{
    latch_app *app = latch_app_new();
    int port, r;

    if (app == NULL || latch_app_set_workers(app, 1) != 0 ||
        latch_app_set_handle_signals(app, true) != 0 ||
        latch_get(app, "/hello", hello, NULL) != 0 ||
        latch_get(app, "/slow", slow, NULL) != 0 ||
        latch_listen(app, "127.0.0.1", 0) != 0)
        exit(2);
    port = latch_app_port(app);
    if (write(port_w, &port, sizeof(port)) != (ssize_t)sizeof(port))
        exit(2);
    close(port_w);
    r = latch_run(app);
    latch_app_free(app);
    /* exit, not _exit: under ASan the leak check runs here too. */
    exit(r == 0 ? 0 : 3);
}

/* ------------------------------------------------------------------ */
/* The parent's view of the child                                       */
/* ------------------------------------------------------------------ */

typedef struct child {
    pid_t pid;
    int port;
    int got_r;  /* reads the child's "g" */
    int go_w;   /* writes the go byte */
    int life_r; /* EOF when the child is gone */
} child;

/* The child of the running test, killed by the teardown if a failed
 * assertion left it behind. */
static pid_t live_pid = -1;

static int teardown(void **state)
{
    (void)state;
    if (live_pid > 0) {
        kill(live_pid, SIGKILL);
        waitpid(live_pid, NULL, 0);
        live_pid = -1;
    }
    return 0;
}

static void xpipe(int p[2])
{
    assert_int_equal(pipe2(p, O_CLOEXEC), 0);
}

/* Reads exactly n bytes from fd within timeout_ms; false on EOF/time. */
static bool read_within(int fd, void *buf, size_t n, int timeout_ms)
{
    int64_t deadline = th_now_ms() + timeout_ms;
    size_t got = 0;

    while (got < n) {
        struct pollfd p = {fd, POLLIN, 0};
        int64_t left = deadline - th_now_ms();
        ssize_t r;
        if (left <= 0)
            return false;
        if (poll(&p, 1, (int)left) <= 0)
            continue;
        r = read(fd, (char *)buf + got, n - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return false;
        got += (size_t)r;
    }
    return true;
}

static void start_child(child *c)
{
    int port_p[2], got_p[2], go_p[2], life_p[2];

    xpipe(port_p);
    xpipe(got_p);
    xpipe(go_p);
    xpipe(life_p);
    fflush(NULL);
    c->pid = fork();
    assert_true(c->pid >= 0);
    if (c->pid == 0) {
        close(port_p[0]);
        close(got_p[0]);
        close(go_p[1]);
        close(life_p[0]);
        got_w = got_p[1];
        go_r = go_p[0];
        /* life_p[1] stays open until the process ends. */
        child_main(port_p[1]);
    }
    live_pid = c->pid;
    close(port_p[1]);
    close(got_p[1]);
    close(go_p[0]);
    close(life_p[1]);
    c->got_r = got_p[0];
    c->go_w = go_p[1];
    c->life_r = life_p[0];
    if (!read_within(port_p[0], &c->port, sizeof(c->port), 10000))
        fail_msg("the server process did not start"); /* teardown kills */
    close(port_p[0]);
    assert_true(c->port > 0);
}

/* True when fd reaches EOF within timeout_ms. */
static bool wait_eof(int fd, int timeout_ms)
{
    int64_t deadline = th_now_ms() + timeout_ms;
    char b[64];

    for (;;) {
        struct pollfd p = {fd, POLLIN, 0};
        int64_t left = deadline - th_now_ms();
        ssize_t r;
        if (left <= 0)
            return false;
        if (poll(&p, 1, (int)left) <= 0)
            continue;
        r = read(fd, b, sizeof(b));
        if (r == 0)
            return true;
        if (r < 0 && errno != EINTR)
            return false;
    }
}

/* Waits for the child to exit (at most timeout_ms, then SIGKILL and a
 * failure) and returns its wait status. */
static int wait_child(child *c, int timeout_ms)
{
    int st = 0;

    if (!wait_eof(c->life_r, timeout_ms))
        fail_msg("the server did not exit within %d ms", timeout_ms);
    assert_int_equal(waitpid(c->pid, &st, 0), c->pid);
    live_pid = -1;
    close(c->got_r);
    close(c->go_w);
    close(c->life_r);
    return st;
}

static void expect_exit_0(int st)
{
    if (!WIFEXITED(st))
        fail_msg("the server died (signal %d)",
                 WIFSIGNALED(st) ? WTERMSIG(st) : -1);
    assert_int_equal(WEXITSTATUS(st), 0);
}

/* After the signal, a new connection is refused, or accepted by the
 * kernel and then closed without an answer. Tries until that is seen (a
 * connection accepted just before the drain may still be answered). */
static void expect_not_accepting(int port)
{
    static const char req[] = "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n";
    int64_t deadline = th_now_ms() + 10000;
    int one = 1;

    for (;;) {
        int fd;
        size_t len;
        char *out;
        if (th_now_ms() >= deadline)
            fail_msg("the server still accepts connections");
        fd = th_try_connect(port);
        if (fd == -ECONNREFUSED)
            return;
        assert_true(fd >= 0);
        if (send(fd, req, sizeof(req) - 1, MSG_NOSIGNAL) !=
            (ssize_t)sizeof(req) - 1) {
            close(fd);
            return; /* reset under us: closed */
        }
        out = th_read(fd, &len, 5000, th_until_responses, &one);
        close(fd);
        free(out);
        if (len == 0 && th_last_end() != TH_OPEN)
            return;
        /* Answered: it was accepted before the drain; try again. */
    }
}

/* ------------------------------------------------------------------ */
/* Tests                                                                */
/* ------------------------------------------------------------------ */

static void test_sigterm_in_flight_request_completes(void **state)
{
    static const char want[] = "HTTP/1.1 200 OK\r\n"
                               "Content-Type: text/plain\r\n"
                               "Date: <d>\r\n"
                               "Connection: close\r\n"
                               "Content-Length: 4\r\n"
                               "\r\n"
                               "slow";
    child c;
    int fd;
    char b;
    size_t len;
    char *out, *norm;
    th_resp *r;

    (void)state;
    start_child(&c);
    fd = th_connect(c.port);
    th_send_str(fd, "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n");
    if (!read_within(c.got_r, &b, 1, 10000))
        fail_msg("the handler never got the request");
    assert_int_equal(kill(c.pid, SIGTERM), 0);
    expect_not_accepting(c.port);
    /* Only now may the in-flight request finish. */
    assert_int_equal(write(c.go_w, "x", 1), 1);
    out = th_read(fd, &len, 10000, NULL, NULL);
    assert_int_equal(th_last_end(), TH_EOF);
    r = th_expect_responses(out, len, 1, NULL);
    norm = th_normalize(out, len);
    assert_string_equal(norm, want);
    close(fd); /* the server lingers until the client closes too */
    expect_exit_0(wait_child(&c, 10000));
    /* Gone for good. */
    assert_int_equal(th_try_connect(c.port), -ECONNREFUSED);
    th_resp_free(r, 1);
    free(r);
    free(norm);
    free(out);
}

/* An idle keep-alive connection is closed at once (FIN, no bytes), and
 * the process exits 0; SIGINT does the same as SIGTERM. */
static void test_signal_closes_idle_keep_alive(void **state)
{
    static const int sigs[] = {SIGTERM, SIGINT};
    int i;

    (void)state;
    for (i = 0; i < 2; i++) {
        child c;
        int fd, one = 1;
        size_t len;
        char *out;
        th_resp *r;

        start_child(&c);
        fd = th_connect(c.port);
        th_send_str(fd, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
        out = th_read(fd, &len, 5000, th_until_responses, &one);
        r = th_expect_responses(out, len, 1, NULL);
        assert_int_equal(r[0].status, 200);
        assert_non_null(strstr(r[0].head, "Connection: keep-alive\r\n"));
        th_resp_free(r, 1);
        free(r);
        free(out);
        assert_int_equal(kill(c.pid, sigs[i]), 0);
        out = th_read(fd, &len, 10000, NULL, NULL);
        assert_int_equal(th_last_end(), TH_EOF);
        assert_int_equal(len, 0);
        free(out);
        close(fd);
        expect_exit_0(wait_child(&c, 10000));
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_sigterm_in_flight_request_completes,
                                  teardown),
        cmocka_unit_test_teardown(test_signal_closes_idle_keep_alive, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
