/*
 * test_emfile.c - running out of file descriptors. A forked server process
 * with RLIMIT_NOFILE lowered to 64 gets 100 connections at once: it must
 * keep serving the connections it has, must not spin on the listener it
 * cannot accept from (its CPU time over one second stays low), must not
 * die, and once the clients are gone it must serve new connections again.
 * The child is killed with SIGKILL if anything fails, so the test never
 * hangs or leaks a process.
 */
#include "harness.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#define FD_LIMIT 64
#define NCLIENTS 100

/* ------------------------------------------------------------------ */
/* The child                                                            */
/* ------------------------------------------------------------------ */

static int hello(latch_req *req, latch_res *res, void *data)
{
    (void)req;
    (void)data;
    latch_res_set_header(res, "Content-Type", "text/plain");
    latch_res_send(res, "Hello", 5);
    return LATCH_DONE;
}

static void child_main(int port_w)
{
    struct rlimit rl = {FD_LIMIT, FD_LIMIT};
    latch_app *app;
    int port, r;

    if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
        exit(2);
    app = latch_app_new();
    if (app == NULL || latch_app_set_workers(app, 1) != 0 ||
        latch_get(app, "/hello", hello, NULL) != 0 ||
        latch_listen(app, "127.0.0.1", 0) != 0)
        exit(2);
    port = latch_app_port(app);
    if (write(port_w, &port, sizeof(port)) != (ssize_t)sizeof(port))
        exit(2);
    close(port_w);
    r = latch_run(app); /* SIGTERM ends it */
    latch_app_free(app);
    exit(r == 0 ? 0 : 3);
}

/* ------------------------------------------------------------------ */
/* The parent                                                           */
/* ------------------------------------------------------------------ */

static pid_t live_pid = -1;
static int clients[NCLIENTS];
static int nclients;

static int teardown(void **state)
{
    int i;

    (void)state;
    for (i = 0; i < nclients; i++)
        if (clients[i] >= 0)
            close(clients[i]);
    nclients = 0;
    if (live_pid > 0) {
        kill(live_pid, SIGKILL);
        waitpid(live_pid, NULL, 0);
        live_pid = -1;
    }
    return 0;
}

/* utime + stime of a process, in clock ticks, from /proc/<pid>/stat. */
static long long cpu_ticks(pid_t pid)
{
    char path[64], buf[1024], *p;
    long long ut = -1, st = -1;
    FILE *f;
    size_t n;
    int field;

    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    f = fopen(path, "r");
    assert_non_null(f);
    n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    /* The command name may hold spaces: fields count from its ')'. */
    p = strrchr(buf, ')');
    assert_non_null(p);
    p++;
    for (field = 3; field <= 15 && p != NULL; field++) {
        while (*p == ' ')
            p++;
        if (field == 14)
            ut = strtoll(p, NULL, 10);
        if (field == 15)
            st = strtoll(p, NULL, 10);
        p = strchr(p, ' ');
    }
    assert_true(ut >= 0 && st >= 0);
    return ut + st;
}

/* One GET /hello on fd: true when exactly one 200 "Hello" came back. */
static bool hello_on(int fd, int timeout_ms)
{
    static const char req[] = "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n";
    size_t len;
    char *out;
    int one = 1, got;
    th_resp r[1];
    const char *err;
    bool ok;

    if (send(fd, req, sizeof(req) - 1, MSG_NOSIGNAL) !=
        (ssize_t)sizeof(req) - 1)
        return false;
    out = th_read(fd, &len, timeout_ms, th_until_responses, &one);
    got = th_wire_parse(out, len, NULL, r, 1, true, &err);
    ok = got == 1 && r[0].status == 200 && strcmp(r[0].body, "Hello") == 0;
    if (got == 1)
        th_resp_free(r, 1);
    free(out);
    return ok;
}

static void test_emfile_no_spin_and_recovers(void **state)
{
    int port_p[2], life_p[2], port = 0, i, st = 0;
    int64_t deadline;
    long long t0, t1;
    long hz = sysconf(_SC_CLK_TCK);
    struct pollfd p;
    pid_t pid;
    bool served = false;

    (void)state;
    assert_int_equal(pipe2(port_p, O_CLOEXEC), 0);
    assert_int_equal(pipe2(life_p, O_CLOEXEC), 0);
    fflush(NULL);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(port_p[0]);
        close(life_p[0]);
        child_main(port_p[1]); /* life_p[1] open until the end */
    }
    live_pid = pid;
    close(port_p[1]);
    close(life_p[1]);
    p = (struct pollfd){port_p[0], POLLIN, 0};
    assert_int_equal(poll(&p, 1, 10000), 1);
    assert_int_equal(read(port_p[0], &port, sizeof(port)), sizeof(port));
    close(port_p[0]);
    assert_true(port > 0);

    /* Far more connections than the server has descriptors. The first
     * is accepted first (the backlog is a queue). */
    for (i = 0; i < NCLIENTS; i++) {
        clients[i] = th_try_connect(port);
        if (clients[i] < 0)
            fail_msg("connect %d: %s", i, strerror(-clients[i]));
        nclients++;
    }
    /* The server did run out: what it could not accept, it closed (libuv
     * accepts and closes the backlog with a reserve descriptor). Wait
     * until one of the clients sees that. */
    {
        static struct pollfd pf[NCLIENTS];
        int closed = -1;
        deadline = th_now_ms() + 10000;
        while (closed < 0) {
            int64_t left = deadline - th_now_ms();
            if (left <= 0)
                fail_msg("no connection was dropped: the limit was not "
                         "reached");
            for (i = 0; i < NCLIENTS; i++)
                pf[i] = (struct pollfd){clients[i], POLLIN, 0};
            if (poll(pf, NCLIENTS, (int)left) <= 0)
                continue;
            for (i = 0; i < NCLIENTS && closed < 0; i++) {
                char b;
                if (pf[i].revents == 0)
                    continue;
                if (recv(clients[i], &b, 1, MSG_DONTWAIT) <= 0)
                    closed = i;
                else
                    fail_msg("client %d got bytes it never asked for", i);
            }
        }
        /* The first ones were accepted before the limit. */
        assert_true(closed > 0);
    }
    /* It keeps serving a connection it has, at the limit. */
    assert_true(hello_on(clients[0], 5000));

    /* One second at the limit: no spinning, no death. */
    t0 = cpu_ticks(pid);
    p = (struct pollfd){life_p[0], POLLIN, 0};
    assert_int_equal(poll(&p, 1, 1000), 0); /* readable = child gone */
    t1 = cpu_ticks(pid);
    if (t1 - t0 > hz / 4)
        fail_msg("the server used %lld ticks of CPU in 1 s (%ld per s)",
                 t1 - t0, hz);
    assert_int_equal(waitpid(pid, &st, WNOHANG), 0);
    assert_true(hello_on(clients[0], 5000));

    /* Clients gone: a new connection is served again. Until the server
     * has seen the closes, a new connection may still be dropped, so
     * try again (bounded). */
    for (i = 0; i < nclients; i++) {
        close(clients[i]);
        clients[i] = -1;
    }
    nclients = 0;
    deadline = th_now_ms() + 10000;
    for (i = 0; i < 1000 && !served && th_now_ms() < deadline; i++) {
        int fd = th_try_connect(port);
        assert_true(fd >= 0);
        served = hello_on(fd, 5000);
        close(fd);
    }
    assert_true(served);
    /* And several at once, on one connection each. */
    for (i = 0; i < 10; i++) {
        int fd = th_connect(port);
        assert_true(hello_on(fd, 5000));
        assert_true(hello_on(fd, 5000));
        close(fd);
    }

    /* It stops cleanly. */
    assert_int_equal(kill(pid, SIGTERM), 0);
    p = (struct pollfd){life_p[0], POLLIN, 0};
    assert_int_equal(poll(&p, 1, 10000), 1);
    assert_int_equal(waitpid(pid, &st, 0), pid);
    live_pid = -1;
    close(life_p[0]);
    if (!WIFEXITED(st))
        fail_msg("the server died (signal %d)",
                 WIFSIGNALED(st) ? WTERMSIG(st) : -1);
    assert_int_equal(WEXITSTATUS(st), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_emfile_no_spin_and_recovers, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
