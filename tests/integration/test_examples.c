/*
 * test_examples.c - runs the programs of examples/ as a user would: each
 * one is started (fork/exec of $LATCH_EXAMPLES_DIR/<name> -p 0), its port
 * read from the "listening on http://127.0.0.1:PORT/" line on its stdout,
 * then raw requests go to it and every reply is checked byte for byte by
 * the wire checker. Finally SIGTERM: the program must drain and exit 0,
 * having written nothing on stderr (where latch's default hook would have
 * printed a violation report).
 *
 * Each program's documented behaviour is what is checked: slow_backend
 * answers JSON when its backend is fast, 504 when the deadline wins, and
 * drops the late result without a second response; fanout answers the
 * three results together, one 502 naming the first backend that failed,
 * or the deadline's 504.
 *
 * Waits are for events (a line on stdout, a response, EOF), each with a
 * deadline; a program that does not exit is killed and the test fails.
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
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

/* ------------------------------------------------------------------ */
/* A running example                                                    */
/* ------------------------------------------------------------------ */

#define OUT_CAP 65536

typedef struct proc {
    pid_t pid;
    int out_fd, err_fd; /* -1 once at EOF */
    char out[OUT_CAP];
    size_t out_len;
    char err[OUT_CAP];
    size_t err_len;
    int port;
} proc;

static proc P;

/* Reads what is available on one pipe into buf; closes it at EOF. */
static void drain_pipe(int *fd, char *buf, size_t *len)
{
    char tmp[4096];
    ssize_t n = read(*fd, tmp, sizeof(tmp));

    if (n < 0 && (errno == EINTR || errno == EAGAIN))
        return;
    if (n <= 0) {
        close(*fd);
        *fd = -1;
        return;
    }
    if ((size_t)n > OUT_CAP - 1 - *len)
        n = (ssize_t)(OUT_CAP - 1 - *len); /* keep the start: enough */
    memcpy(buf + *len, tmp, (size_t)n);
    *len += (size_t)n;
    buf[*len] = '\0';
}

/* Collects the program's output until `needle` appears on stdout
 * (needle NULL: until both pipes are at EOF) or timeout_ms passed. */
static bool proc_wait(proc *p, const char *needle, int timeout_ms)
{
    int64_t deadline = th_now_ms() + timeout_ms;

    for (;;) {
        struct pollfd fds[2];
        int n = 0;
        int64_t left;

        if (needle != NULL && strstr(p->out, needle) != NULL)
            return true;
        if (needle == NULL && p->out_fd < 0 && p->err_fd < 0)
            return true;
        left = deadline - th_now_ms();
        if (left <= 0 || (p->out_fd < 0 && p->err_fd < 0))
            return false;
        if (p->out_fd >= 0)
            fds[n++] = (struct pollfd){p->out_fd, POLLIN, 0};
        if (p->err_fd >= 0)
            fds[n++] = (struct pollfd){p->err_fd, POLLIN, 0};
        if (poll(fds, (nfds_t)n, (int)left) <= 0)
            continue;
        while (n-- > 0) {
            if (fds[n].revents == 0)
                continue;
            if (fds[n].fd == p->out_fd)
                drain_pipe(&p->out_fd, p->out, &p->out_len);
            else
                drain_pipe(&p->err_fd, p->err, &p->err_len);
        }
    }
}

/* Starts $LATCH_EXAMPLES_DIR/name with args (NULL-terminated, after
 * argv[0]) and waits for its "listening" line. */
static void proc_start(proc *p, const char *name, const char *const *args)
{
    static const char mark[] = "listening on http://127.0.0.1:";
    const char *dir = getenv("LATCH_EXAMPLES_DIR");
    char path[1024];
    char *argv[16];
    int out_p[2], err_p[2], i;
    const char *at;

    if (dir == NULL) {
        print_message("LATCH_EXAMPLES_DIR is not set: run through ctest\n");
        skip();
    }
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    if (access(path, X_OK) != 0)
        fail_msg("%s: not built (%s)", path, strerror(errno));
    memset(p, 0, sizeof(*p));
    argv[0] = path;
    for (i = 0; args[i] != NULL && i < 14; i++)
        argv[i + 1] = (char *)args[i];
    argv[i + 1] = NULL;
    assert_int_equal(pipe2(out_p, O_CLOEXEC), 0);
    assert_int_equal(pipe2(err_p, O_CLOEXEC), 0);
    fflush(NULL);
    p->pid = fork();
    assert_true(p->pid >= 0);
    if (p->pid == 0) {
        dup2(out_p[1], 1);
        dup2(err_p[1], 2);
        execv(path, argv);
        _exit(127);
    }
    close(out_p[1]);
    close(err_p[1]);
    p->out_fd = out_p[0];
    p->err_fd = err_p[0];
    if (!proc_wait(p, mark, 10000))
        fail_msg("%s did not say it listens; stdout:\n%s\nstderr:\n%s", name,
                 p->out, p->err);
    at = strstr(p->out, mark) + sizeof(mark) - 1;
    p->port = atoi(at);
    assert_true(p->port > 0 && p->port < 65536);
    assert_non_null(strstr(at, "/\n"));
}

/* SIGTERM, then waits (at most timeout_ms) for the program to exit and
 * returns its wait status; kills it and fails when it does not exit. */
static int proc_term(proc *p, int timeout_ms)
{
    int st = 0;

    assert_int_equal(kill(p->pid, SIGTERM), 0);
    if (!proc_wait(p, NULL, timeout_ms))
        fail_msg("the program did not exit within %d ms after SIGTERM",
                 timeout_ms); /* teardown kills it */
    assert_int_equal(waitpid(p->pid, &st, 0), p->pid);
    p->pid = 0;
    return st;
}

static void expect_clean_exit(proc *p)
{
    int st = proc_term(p, 15000);

    if (!WIFEXITED(st))
        fail_msg("the program died (signal %d)",
                 WIFSIGNALED(st) ? WTERMSIG(st) : -1);
    assert_int_equal(WEXITSTATUS(st), 0);
    /* No violation report, no sanitizer report, nothing. */
    if (p->err_len != 0)
        fail_msg("stderr was not empty:\n%s", p->err);
}

static int teardown(void **state)
{
    (void)state;
    if (P.pid > 0) {
        kill(P.pid, SIGKILL);
        waitpid(P.pid, NULL, 0);
        P.pid = 0;
    }
    if (P.out_fd > 0)
        close(P.out_fd);
    if (P.err_fd > 0)
        close(P.err_fd);
    P.out_fd = P.err_fd = -1;
    return 0;
}

/* ------------------------------------------------------------------ */
/* Client helpers                                                       */
/* ------------------------------------------------------------------ */

static void get_on(int fd, const char *target)
{
    char req[256];
    int n = snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: x\r\n\r\n",
                     target);

    assert_true(n > 0 && (size_t)n < sizeof(req));
    th_send(fd, req, (size_t)n);
}

/* Reads one response (within 10 s) and asserts its exact bytes, Date as
 * <d>, and that the connection stays open. */
static void expect_one(int fd, const char *want)
{
    int one = 1;
    size_t len;
    char *out = th_read(fd, &len, 10000, th_until_responses, &one);
    char *norm = th_normalize(out, len);
    th_resp *r = th_expect_responses(out, len, 1, NULL);

    assert_int_equal(th_last_end(), TH_OPEN);
    assert_string_equal(norm, want);
    th_resp_free(r, 1);
    free(r);
    free(norm);
    free(out);
}

/* The bytes of a JSON response on a keep-alive connection. */
static void expect_json(int fd, int status, const char *reason,
                        const char *body)
{
    char want[1024];

    snprintf(want, sizeof(want),
             "HTTP/1.1 %d %s\r\n"
             "Content-Type: application/json; charset=utf-8\r\n"
             "Content-Length: %zu\r\n"
             "Date: <d>\r\n"
             "Connection: keep-alive\r\n"
             "Keep-Alive: timeout=5\r\n"
             "\r\n"
             "%s",
             status, reason, strlen(body), body);
    expect_one(fd, want);
}

/* latch's own answer to a request timeout configured with 504. */
static const char gateway_timeout[] =
    "HTTP/1.1 504 Gateway Timeout\r\n"
    "Content-Type: text/plain; charset=utf-8\r\n"
    "Content-Length: 16\r\n"
    "Date: <d>\r\n"
    "Connection: keep-alive\r\n"
    "Keep-Alive: timeout=5\r\n"
    "\r\n"
    "Gateway Timeout\n";

static int count_substr(const char *s, const char *needle)
{
    int n = 0;

    while ((s = strstr(s, needle)) != NULL) {
        n++;
        s += strlen(needle);
    }
    return n;
}

/* The status of the one response to `target` on a fresh connection. */
static int status_of(int port, const char *target)
{
    char req[256];
    size_t len;
    char *out;
    th_resp *r;
    int n = snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: x\r\n\r\n",
                     target),
        st;

    assert_true(n > 0 && (size_t)n < sizeof(req));
    out = th_exchange(port, req, (size_t)n, 1, &len);
    r = th_expect_responses(out, len, 1, NULL);
    st = r[0].status;
    th_resp_free(r, 1);
    free(r);
    free(out);
    return st;
}

/* ------------------------------------------------------------------ */
/* slow_backend                                                         */
/* ------------------------------------------------------------------ */

static void test_slow_backend(void **state)
{
    static const char *const args[] = {"-p", "0", "-t", "100", NULL};
    static const char dropped_timeout[] =
        ": request timeout, backend result dropped\n";
    int fd;

    (void)state;
    proc_start(&P, "slow_backend", args);

    /* A fast backend: its JSON. */
    fd = th_connect(P.port);
    get_on(fd, "/data?ms=10");
    expect_json(fd, 200, "OK",
                "{\"backend_ms\":10,\"rows\":[\"alpha\",\"beta\"]}");

    /* A slow one: the deadline's 504, then the late result is dropped
     * (logged), and the next answer on the same connection is exactly
     * the next response: nothing was written in between. */
    get_on(fd, "/data?ms=5000");
    expect_one(fd, gateway_timeout);
    if (!proc_wait(&P, dropped_timeout, 10000))
        fail_msg("the late result was not dropped; stdout:\n%s", P.out);
    get_on(fd, "/data?ms=0");
    expect_json(fd, 200, "OK",
                "{\"backend_ms\":0,\"rows\":[\"alpha\",\"beta\"]}");
    close(fd);

    /* A bad parameter is refused before any backend call. */
    assert_int_equal(status_of(P.port, "/data?ms=abc"), 400);

    expect_clean_exit(&P);
    assert_int_equal(count_substr(P.out, "backend result dropped"), 1);
}

/* A client that leaves while the backend works (deadline 10 s): the call
 * is cancelled and its result dropped. Two pipelined requests: once the
 * first is answered, the second has reached its handler (both were
 * parsed from one read), so the reset comes during its backend call. */
static void test_slow_backend_client_leaves(void **state)
{
    static const char *const args[] = {"-p", "0", "-t", "10000", NULL};
    static const char dropped_gone[] =
        ": client disconnect, backend result dropped\n";
    int fd, one = 1;
    size_t len;
    char *out;
    th_resp *r;

    (void)state;
    proc_start(&P, "slow_backend", args);
    fd = th_connect(P.port);
    th_send_str(fd, "GET /data?ms=0 HTTP/1.1\r\nHost: x\r\n\r\n"
                    "GET /data?ms=5000 HTTP/1.1\r\nHost: x\r\n\r\n");
    out = th_read(fd, &len, 10000, th_until_responses, &one);
    r = th_expect_responses(out, len, 1, NULL);
    assert_int_equal(r[0].status, 200);
    assert_string_equal(r[0].body,
                        "{\"backend_ms\":0,\"rows\":[\"alpha\",\"beta\"]}");
    th_resp_free(r, 1);
    free(r);
    free(out);
    th_close_reset(fd);
    if (!proc_wait(&P, dropped_gone, 10000))
        fail_msg("the disconnect did not cancel the call; stdout:\n%s", P.out);
    /* The call gave up at once: SIGTERM finds nothing in flight. */
    expect_clean_exit(&P);
    assert_int_equal(count_substr(P.out, "backend result dropped"), 1);
}

/* ------------------------------------------------------------------ */
/* fanout                                                               */
/* ------------------------------------------------------------------ */

static void test_fanout(void **state)
{
    static const char *const args[] = {"-p", "0", "-t", "300", NULL};
    static const char all[] = "{\"users\":[{\"id\":1,\"name\":\"ada\"}],"
                              "\"orders\":[{\"id\":7,\"total\":42}],"
                              "\"stock\":{\"widgets\":3}}";
    int fd;

    (void)state;
    proc_start(&P, "fanout", args);
    fd = th_connect(P.port);

    /* All three answer (20, 40, 60 ms): one object. */
    get_on(fd, "/fanout");
    expect_json(fd, 200, "OK", all);

    /* users fails first (20 ms): one 502 at once. orders and stock answer
     * later (40, 60 ms) and are ignored: the next request takes 90 ms,
     * so their results are in before its answer, and nothing else came
     * on the wire. */
    get_on(fd, "/fanout?fail=users");
    expect_json(fd, 502, "Bad Gateway", "{\"error\":\"users unavailable\"}");
    get_on(fd, "/fanout?ms=30");
    expect_json(fd, 200, "OK", all);

    /* stock fails last: still one 502, naming it. */
    get_on(fd, "/fanout?fail=stock&ms=5");
    expect_json(fd, 502, "Bad Gateway", "{\"error\":\"stock unavailable\"}");

    /* Slower than the 300 ms deadline: latch's 504; the join's completion
     * learns it was cancelled and does not answer. */
    get_on(fd, "/fanout?ms=400");
    expect_one(fd, gateway_timeout);
    if (!proc_wait(&P, "cancelled before the backends answered\n", 10000))
        fail_msg("the join was not cancelled; stdout:\n%s", P.out);
    get_on(fd, "/fanout?ms=1");
    expect_json(fd, 200, "OK", all);
    close(fd);

    assert_int_equal(status_of(P.port, "/fanout?fail=nobody"), 400);

    /* The cancelled fan-out's backends are still asleep (up to 1.2 s):
     * the drain waits for them, then the program exits 0. */
    expect_clean_exit(&P);
    assert_int_equal(count_substr(P.out, "cancelled before"), 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_slow_backend, teardown),
        cmocka_unit_test_teardown(test_slow_backend_client_leaves, teardown),
        cmocka_unit_test_teardown(test_fanout, teardown),
    };

    P.out_fd = P.err_fd = -1;
    signal(SIGPIPE, SIG_IGN);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
