/*
 * test_survive.c - the server survives its clients (issue 10).
 *
 * Clients that leave in the middle of responses never kill the process,
 * whatever its SIGPIPE disposition; pipelined requests are answered in
 * order at any depth however the bytes are split; a client that never
 * reads loses its connection at the send timeout and cannot make the
 * server hold more than the connection buffer; a client that stops
 * reading, then reads, gets every byte in order, fill after fill on one
 * connection, each fill taking the connection's write-wait part and each
 * drain giving it back; requests that arrive too
 * slowly get 408; at the connection cap idle and slow connections make
 * room for newcomers; a slow-body attack on a server with 256 descriptors
 * does not deny service to normal clients; accept failures are counted
 * and logged; a stop lets an arriving upload finish, or answers 503.
 *
 * Everything runs on 127.0.0.1; every loop is bounded in count and time.
 * Servers that must be killable (signals, descriptor limits) run in a
 * forked child, killed with SIGKILL if the test fails.
 */
#include "harness.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
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
/* Routes                                                               */
/* ------------------------------------------------------------------ */

static int h_hello(latch_req *req, latch_res *res, void *data)
{
    (void)req;
    (void)data;
    latch_res_send(res, "hello", 5);
    return LATCH_DONE;
}

/* GET /n/:i answers i: the order of pipelined answers is visible. */
static int h_n(latch_req *req, latch_res *res, void *data)
{
    const char *i = latch_req_param(req, "i");

    (void)data;
    latch_res_send(res, i, strlen(i));
    return LATCH_DONE;
}

static _Atomic int big_dispatched;
static size_t big_size = 256 * 1024; /* set while no server runs */
/* Lines of 16 bytes, each its own offset in hex: a byte lost, doubled or
 * moved shows. Shared by the workers. */
static char big_body[4u << 20];
static pthread_once_t big_once = PTHREAD_ONCE_INIT;

static void big_init(void)
{
    char line[17];

    for (size_t i = 0; i < sizeof(big_body); i += 16) {
        snprintf(line, sizeof(line), "%015zx\n", i);
        memcpy(big_body + i, line, 16);
    }
}

/* conn.c's test hook: write-wait parts held by connections now. */
extern atomic_uint latch__conn_waits;

static int h_big(latch_req *req, latch_res *res, void *data)
{
    (void)req;
    (void)data;
    pthread_once(&big_once, big_init);
    atomic_fetch_add(&big_dispatched, 1);
    latch_res_send(res, big_body, big_size);
    return LATCH_DONE;
}

static int h_echo(latch_req *req, latch_res *res, void *data)
{
    const void *b = NULL;
    size_t n = 0;

    (void)data;
    latch_req_body(req, &b, &n);
    latch_res_send(res, b, n);
    return LATCH_DONE;
}

/* ------------------------------------------------------------------ */
/* Helpers                                                              */
/* ------------------------------------------------------------------ */

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* True once latch__conn_waits is `n`, false if it is not within
 * timeout_ms (looked at every millisecond). */
static bool waits_become(unsigned n, int timeout_ms)
{
    int64_t t0 = th_now_ms();

    while (atomic_load(&latch__conn_waits) != n) {
        if (th_now_ms() - t0 > timeout_ms)
            return false;
        sleep_ms(1);
    }
    return true;
}

/* A socket connected to 127.0.0.1:port whose receive buffer is `rcv`
 * bytes, set before the connect so the window it announces stays small. */
static int small_window_connect(int port, int rcv)
{
    struct sockaddr_in sa = {0};
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    assert_true(fd >= 0);
    (void)setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcv, sizeof(rcv));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    return fd;
}

/* Sends all of it, or returns false (the peer went away). */
static bool send_all(int fd, const char *p, size_t len)
{
    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return false;
        p += n;
        len -= (size_t)n;
    }
    return true;
}

/* One GET /hello on a fresh connection: true when it got "hello". */
static bool hello_once(int port, int timeout_ms)
{
    static const char req[] = "GET /hello HTTP/1.1\r\nHost: t\r\n\r\n";
    int fd = th_try_connect(port), one = 1;
    size_t len = 0, want = 1;
    char *out;
    bool ok;

    if (fd < 0)
        return false;
    (void)want;
    if (!send_all(fd, req, sizeof(req) - 1)) {
        close(fd);
        return false;
    }
    {
        int n = 1;
        out = th_read(fd, &len, timeout_ms, th_until_responses, &n);
    }
    ok = out != NULL && strstr(out, "\r\n\r\nhello") != NULL;
    free(out);
    (void)one;
    close(fd);
    return ok;
}

/* ------------------------------------------------------------------ */
/* A server in a child process                                          */
/* ------------------------------------------------------------------ */

typedef struct child {
    pid_t pid;
    int port;
    int life;  /* readable (EOF) once the child is gone */
    int errfd; /* the child's stderr, or -1 */
} child;

typedef void (*child_setup)(latch_app *app);

static child live = {-1, 0, -1, -1};

static int kill_child(void **state)
{
    (void)state;
    if (live.pid > 0) {
        kill(live.pid, SIGKILL);
        waitpid(live.pid, NULL, 0);
    }
    if (live.life >= 0)
        close(live.life);
    if (live.errfd >= 0)
        close(live.errfd);
    live = (child){-1, 0, -1, -1};
    return 0;
}

static void on_sigpipe(int sig)
{
    /* If a SIGPIPE ever gets here, the default action kills us. */
    signal(sig, SIG_DFL);
    raise(sig);
}

/*
 * Forks a server: `fd_limit` descriptors (0: unchanged), `workers`,
 * SIGPIPE at its default action or with a handler that dies of it,
 * stderr kept when `keep_err` (read it from c->errfd).
 */
static void child_start(child *c, int fd_limit, int workers, bool handler,
                        bool keep_err, child_setup setup)
{
    int port_p[2], life_p[2], err_p[2] = {-1, -1};
    struct pollfd p;
    pid_t pid;

    assert_int_equal(pipe2(port_p, O_CLOEXEC), 0);
    assert_int_equal(pipe2(life_p, O_CLOEXEC), 0);
    if (keep_err)
        assert_int_equal(pipe2(err_p, O_CLOEXEC), 0);
    fflush(NULL);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct rlimit rl = {(rlim_t)fd_limit, (rlim_t)fd_limit};
        latch_app *app;
        int port, r;

        close(port_p[0]);
        close(life_p[0]);
        if (keep_err) {
            close(err_p[0]);
            dup2(err_p[1], 2);
        }
        /* The child is the server, not a test: a crash must show as one
         * (cmocka's handlers would resume the test in the child). */
        signal(SIGSEGV, SIG_DFL);
        signal(SIGILL, SIG_DFL);
        signal(SIGFPE, SIG_DFL);
        signal(SIGBUS, SIG_DFL);
        signal(SIGSYS, SIG_DFL);
        signal(SIGPIPE, handler ? on_sigpipe : SIG_DFL);
        if (fd_limit > 0 && setrlimit(RLIMIT_NOFILE, &rl) != 0)
            _exit(2);
        app = latch_app_new();
        if (app == NULL || latch_app_set_workers(app, workers) != 0 ||
            latch_get(app, "/hello", h_hello, NULL) != 0 ||
            latch_get(app, "/big", h_big, NULL) != 0 ||
            latch_listen(app, "127.0.0.1", 0) != 0)
            _exit(2);
        if (setup != NULL)
            setup(app);
        port = latch_app_port(app);
        if (write(port_p[1], &port, sizeof(port)) != (ssize_t)sizeof(port))
            _exit(2);
        close(port_p[1]);
        r = latch_run(app); /* SIGTERM ends it */
        latch_app_free(app);
        _exit(r == 0 ? 0 : 3);
    }
    c->pid = pid;
    close(port_p[1]);
    close(life_p[1]);
    c->life = life_p[0];
    if (keep_err) {
        close(err_p[1]);
        c->errfd = err_p[0];
    }
    p = (struct pollfd){port_p[0], POLLIN, 0};
    assert_int_equal(poll(&p, 1, 10000), 1);
    assert_int_equal(read(port_p[0], &c->port, sizeof(c->port)),
                     sizeof(c->port));
    close(port_p[0]);
    assert_true(c->port > 0);
}

/* Whether the child still runs; fails the test with how it died if not. */
static void child_alive(child *c)
{
    int st = 0;
    pid_t r = waitpid(c->pid, &st, WNOHANG);

    if (r == c->pid) {
        c->pid = -1;
        if (WIFSIGNALED(st))
            fail_msg("the server was killed by signal %d", WTERMSIG(st));
        fail_msg("the server exited with %d", WEXITSTATUS(st));
    }
    assert_int_equal(r, 0);
}

/* SIGTERM, then it must exit 0 within 10 s. */
static void child_stop(child *c)
{
    struct pollfd p = {c->life, POLLIN, 0};
    int st = 0;

    assert_int_equal(kill(c->pid, SIGTERM), 0);
    assert_int_equal(poll(&p, 1, 10000), 1);
    assert_int_equal(waitpid(c->pid, &st, 0), c->pid);
    c->pid = -1;
    if (WIFSIGNALED(st))
        fail_msg("the server was killed by signal %d", WTERMSIG(st));
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
}

/* ------------------------------------------------------------------ */
/* 1. SIGPIPE                                                           */
/* ------------------------------------------------------------------ */

/*
 * 1,000 clients pipeline four 256 KiB responses each and leave after a
 * few bytes, half with a FIN, half with a reset, against 2 workers whose
 * process keeps SIGPIPE's default action (and, second run, a handler that
 * dies of it). Not one may kill it.
 */
static void disconnect_storm(bool handler)
{
    static const char req[] = "GET /big HTTP/1.1\r\nHost: t\r\n\r\n"
                              "GET /big HTTP/1.1\r\nHost: t\r\n\r\n"
                              "GET /big HTTP/1.1\r\nHost: t\r\n\r\n"
                              "GET /big HTTP/1.1\r\nHost: t\r\n\r\n";
    int i, killed = 0;
    int64_t deadline = th_now_ms() + 60000;

    child_start(&live, 0, 2, handler, false, NULL);
    for (i = 0; i < 1000 && th_now_ms() < deadline; i++) {
        int fd = th_try_connect(live.port);
        char b[512];
        if (fd < 0)
            continue;
        if (send_all(fd, req, sizeof(req) - 1) && (i % 3) != 0) {
            /* Some bytes of the first response, so the server is
             * writing when the client goes. */
            struct pollfd p = {fd, POLLIN, 0};
            if (poll(&p, 1, 1000) == 1)
                (void)recv(fd, b, sizeof(b), 0);
        }
        if (i % 2)
            th_close_reset(fd);
        else
            close(fd);
        if (i % 100 == 99 && waitpid(live.pid, NULL, WNOHANG) != 0)
            killed++;
    }
    assert_int_equal(killed, 0);
    child_alive(&live);
    assert_true(hello_once(live.port, 5000));
    child_alive(&live);
    child_stop(&live);
}

static void test_sigpipe_default_never_kills(void **state)
{
    (void)state;
    disconnect_storm(false);
}

static void test_sigpipe_handler_never_reached(void **state)
{
    (void)state;
    disconnect_storm(true);
}

/* ------------------------------------------------------------------ */
/* 2. Pipelines of any depth                                            */
/* ------------------------------------------------------------------ */

/* th_until for any number of responses (th_until_responses stops
 * counting at 64). */
static bool until_n(const char *buf, size_t len, void *arg)
{
    int want = *(int *)arg, got;
    th_resp *r = calloc((size_t)want, sizeof(*r));
    const char *err;

    assert_non_null(r);
    got = th_wire_parse(buf, len, NULL, r, want, false, &err);
    if (got > 0)
        th_resp_free(r, got);
    free(r);
    return got >= want;
}

/* Sends `depth` GET /n/i in one write (split == 0) or in random pieces
 * of 1..split bytes, then one more request: every answer, in order. */
static void pipeline_round(int port, int depth, int split, unsigned *seed)
{
    size_t cap = (size_t)depth * 48 + 64, len = 0, off = 0, rlen = 0;
    char *reqs = malloc(cap), *out;
    int fd = th_connect(port), i, n, one = 1;
    th_resp *r;

    assert_non_null(reqs);
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    for (i = 0; i < depth; i++)
        len += (size_t)snprintf(reqs + len, cap - len,
                                "GET /n/%d HTTP/1.1\r\nHost: t\r\n\r\n", i);
    if (split == 0) {
        assert_true(send_all(fd, reqs, len));
    } else {
        while (off < len) {
            size_t piece = 1 + (size_t)(rand_r(seed) % (unsigned)split);
            if (piece > len - off)
                piece = len - off;
            assert_true(send_all(fd, reqs + off, piece));
            off += piece;
        }
    }
    n = depth;
    out = th_read(fd, &rlen, 20000, until_n, &n);
    assert_non_null(out);
    r = th_expect_responses(out, rlen, depth, NULL);
    for (i = 0; i < depth; i++) {
        char want[16];
        snprintf(want, sizeof(want), "%d", i);
        assert_int_equal(r[i].status, 200);
        assert_string_equal(r[i].body, want);
    }
    th_resp_free(r, depth);
    free(r);
    free(out);
    /* The connection still reads: the next request is answered. */
    th_send_str(fd, "GET /n/next HTTP/1.1\r\nHost: t\r\n\r\n");
    n = 1;
    out = th_read(fd, &rlen, 5000, th_until_responses, &n);
    assert_non_null(out);
    if (strstr(out, "\r\n\r\nnext") == NULL)
        fail_msg("depth %d split %d: the next request got \"%s\"", depth, split,
                 out);
    free(out);
    close(fd);
    free(reqs);
}

static void test_pipeline_any_depth(void **state)
{
    static const int depths[] = {1,   2,   63,  64,  65,  100,
                                 120, 128, 129, 500, 1000};
    th_server s;
    latch_app *app = latch_app_new();
    unsigned seed = 12345;
    size_t i;

    (void)state;
    assert_int_equal(latch_get(app, "/n/:i", h_n, NULL), 0);
    th_server_start(&s, app);
    for (i = 0; i < sizeof(depths) / sizeof(depths[0]); i++) {
        pipeline_round(s.port, depths[i], 0, &seed);
        pipeline_round(s.port, depths[i], 7, &seed);
        pipeline_round(s.port, depths[i], 300, &seed);
    }
    assert_int_equal(th_server_stop(&s), 0);
}

/* ------------------------------------------------------------------ */
/* 3. A client that never reads                                         */
/* ------------------------------------------------------------------ */

static void setup_nonreader(latch_app *app)
{
    (void)latch_app_set_limit(app, LATCH_TIMEOUT_SEND, 1000);
}

/*
 * 16 pipelined requests for 4 MiB each, never read. With a 1 MiB
 * connection buffer, the server handles only what the socket buffers
 * and the bound hold (not all 16), and closes the connection once a
 * second passed without the client taking a byte.
 */
static void test_nonreader_bounded_then_closed(void **state)
{
    th_server s;
    latch_app *app = latch_app_new();
    char req[64];
    int fd, i, rcv = 16384, got;
    int64_t t0;

    (void)state;
    big_size = 4u << 20;
    atomic_store(&big_dispatched, 0);
    assert_int_equal(latch_get(app, "/big", h_big, NULL), 0);
    setup_nonreader(app);
    th_server_start(&s, app);
    assert_int_equal(atomic_load(&latch__conn_waits), 0);
    fd = small_window_connect(s.port, rcv);
    snprintf(req, sizeof(req), "GET /big HTTP/1.1\r\nHost: t\r\n\r\n");
    for (i = 0; i < 16; i++)
        assert_true(send_all(fd, req, strlen(req)));
    t0 = th_now_ms();
    /* The socket is full: the output waits, under the send timeout, in
     * the connection's write-wait part. */
    assert_true(waits_become(1, 5000));
    /* The server must give up on it: a reset or EOF arrives within the
     * send timeout and some slack, without our reading before. */
    sleep_ms(2500);
    got = atomic_load(&big_dispatched);
    if (got >= 16)
        fail_msg("all %d responses were made for a client that reads "
                 "nothing: the connection buffer did not bound them",
                 got);
    {
        /* What arrived is read now; the connection must be over. */
        int end = th_wait_close(fd, 5000);
        assert_int_not_equal(end, TH_OPEN);
    }
    assert_true(th_now_ms() - t0 < 10000);
    /* The closed connection gave its part back. */
    assert_true(waits_become(0, 5000));
    close(fd);
    big_size = 256 * 1024;
    assert_int_equal(th_server_stop(&s), 0);
}

/* Whether the head of one response to GET /big and all of its body (as
 * big_size bytes of big_body) arrived. */
static bool until_big(const char *buf, size_t len, void *arg)
{
    const char *end = memmem(buf, len, "\r\n\r\n", 4);

    (void)arg;
    return end != NULL && (size_t)(buf + len - (end + 4)) >= big_size;
}

/*
 * Fill and drain, again and again, on one keep-alive connection: a 4 MiB
 * response to a client that reads nothing (through a small window, so
 * the kernel never holds all of it) fills the socket, and the output
 * waits in the connection's write-wait part; then the client reads it
 * all, every byte in order, and the drained connection gives the part
 * back before the next request. Under ASan, a part lost or freed twice
 * on the way shows too.
 */
static void test_fill_drain_cycles(void **state)
{
    th_server s;
    latch_app *app = latch_app_new();
    int fd, round;
    size_t len;
    char *out;
    th_resp *r;

    (void)state;
    big_size = 4u << 20;
    assert_int_equal(latch_get(app, "/big", h_big, NULL), 0);
    assert_int_equal(latch_get(app, "/hello", h_hello, NULL), 0);
    /* Far more than the test takes: no timeout closes the connection
     * (which would give its part back too). */
    assert_int_equal(latch_app_set_limit(app, LATCH_TIMEOUT_SEND, 60000), 0);
    assert_int_equal(latch_app_set_limit(app, LATCH_TIMEOUT_KEEPALIVE, 60000),
                     0);
    th_server_start(&s, app);
    assert_int_equal(atomic_load(&latch__conn_waits), 0);
    fd = small_window_connect(s.port, 4096);
    for (round = 0; round < 5; round++) {
        th_send_str(fd, "GET /big HTTP/1.1\r\nHost: t\r\n\r\n");
        if (!waits_become(1, 5000))
            fail_msg("round %d: the output never waited for the socket", round);
        out = th_read(fd, &len, 20000, until_big, NULL);
        assert_non_null(out);
        assert_int_equal(th_last_end(), TH_OPEN);
        r = th_expect_responses(out, len, 1, NULL);
        assert_int_equal(r[0].status, 200);
        assert_int_equal(r[0].body_len, big_size);
        if (memcmp(r[0].body, big_body, big_size) != 0)
            fail_msg("round %d: the body arrived altered", round);
        th_resp_free(r, 1);
        free(r);
        free(out);
        if (!waits_become(0, 5000))
            fail_msg("round %d: the drained connection kept its part", round);
    }
    /* The connection still serves. */
    th_send_str(fd, "GET /hello HTTP/1.1\r\nHost: t\r\n\r\n");
    {
        int n = 1;
        out = th_read(fd, &len, 5000, th_until_responses, &n);
    }
    assert_non_null(strstr(out, "\r\n\r\nhello"));
    free(out);
    close(fd);
    big_size = 256 * 1024;
    assert_int_equal(th_server_stop(&s), 0);
}

/* A slow reader that does take bytes keeps its connection past the send
 * timeout: the timeout counts time without progress, not in total. */
static void test_slow_reader_kept(void **state)
{
    th_server s;
    latch_app *app = latch_app_new();
    int fd, rcv = 4096;
    size_t total = 0, want = 4u << 20;
    int64_t start;
    char buf[8192];

    (void)state;
    big_size = 4u << 20;
    assert_int_equal(latch_get(app, "/big", h_big, NULL), 0);
    assert_int_equal(latch_app_set_limit(app, LATCH_TIMEOUT_SEND, 1000), 0);
    th_server_start(&s, app);
    fd = small_window_connect(s.port, rcv);
    th_send_str(fd, "GET /big HTTP/1.1\r\nHost: t\r\n\r\n");
    start = th_now_ms();
    /* Read 4 MiB in 8 KiB steps, pausing 100 ms every 128 KiB: about
     * 3 s in all, three times the send timeout, but never still for
     * long (a loaded machine may add some scheduling delay to a pause,
     * far from the 1 s). Bounded at 20 s. */
    while (total < want && th_now_ms() - start < 20000) {
        ssize_t n = recv(fd, buf, sizeof(buf), 0);
        if (n <= 0)
            break;
        total += (size_t)n;
        if ((total / sizeof(buf)) % 16 == 0)
            sleep_ms(100);
    }
    if (total < want)
        fail_msg("got %zu of %zu bytes in %lld ms", total, want,
                 (long long)(th_now_ms() - start));
    assert_true(th_now_ms() - start > 2000); /* past the timeout, twice */
    close(fd);
    big_size = 256 * 1024;
    assert_int_equal(th_server_stop(&s), 0);
}

/* ------------------------------------------------------------------ */
/* 4. Slow requests                                                      */
/* ------------------------------------------------------------------ */

/* A body at a few bytes a second gets 408 once the grace period passed. */
static void test_slow_body_408(void **state)
{
    th_server s;
    latch_app *app = latch_app_new();
    int fd, i;
    size_t len = 0;
    char *out;
    int64_t t0;

    (void)state;
    assert_int_equal(latch_post(app, "/echo", h_echo, NULL), 0);
    assert_int_equal(latch_app_set_limit(app, LATCH_TIMEOUT_RATE_GRACE, 400),
                     0);
    th_server_start(&s, app);
    fd = th_connect(s.port);
    t0 = th_now_ms();
    th_send_str(fd, "POST /echo HTTP/1.1\r\nHost: t\r\n"
                    "Content-Length: 1000\r\n\r\n");
    for (i = 0; i < 40 && th_now_ms() - t0 < 5000; i++) {
        if (!send_all(fd, "x", 1))
            break;
        sleep_ms(50);
    }
    out = th_read(fd, &len, 5000, NULL, NULL);
    assert_non_null(out);
    assert_true(strncmp(out, "HTTP/1.1 408 ", 13) == 0);
    assert_non_null(strstr(out, "Connection: close\r\n"));
    assert_int_not_equal(th_last_end(), TH_OPEN);
    free(out);
    close(fd);
    /* A normal upload is untouched. */
    fd = th_connect(s.port);
    th_send_str(fd, "POST /echo HTTP/1.1\r\nHost: t\r\n"
                    "Content-Length: 5\r\n\r\nabcde");
    {
        int n = 1;
        out = th_read(fd, &len, 5000, th_until_responses, &n);
    }
    assert_non_null(strstr(out, "\r\n\r\nabcde"));
    free(out);
    close(fd);
    assert_int_equal(th_server_stop(&s), 0);
}

/* A request that keeps a decent rate but takes longer than the receive
 * timeout in total gets 408. */
static void test_receive_deadline_408(void **state)
{
    th_server s;
    latch_app *app = latch_app_new();
    int fd, i;
    size_t len = 0;
    char *out, chunk[256];
    int64_t t0;

    (void)state;
    memset(chunk, 'y', sizeof(chunk));
    assert_int_equal(latch_post(app, "/echo", h_echo, NULL), 0);
    assert_int_equal(latch_app_set_limit(app, LATCH_TIMEOUT_RECEIVE, 600), 0);
    th_server_start(&s, app);
    fd = th_connect(s.port);
    t0 = th_now_ms();
    th_send_str(fd, "POST /echo HTTP/1.1\r\nHost: t\r\n"
                    "Content-Length: 100000\r\n\r\n");
    for (i = 0; i < 100 && th_now_ms() - t0 < 5000; i++) {
        if (!send_all(fd, chunk, sizeof(chunk)))
            break;
        sleep_ms(20);
    }
    out = th_read(fd, &len, 5000, NULL, NULL);
    assert_non_null(out);
    assert_true(strncmp(out, "HTTP/1.1 408 ", 13) == 0);
    free(out);
    close(fd);
    assert_int_equal(th_server_stop(&s), 0);
}

/* ------------------------------------------------------------------ */
/* 5. The connection cap and shedding                                   */
/* ------------------------------------------------------------------ */

#define CAP 4

static void test_connection_cap_sheds(void **state)
{
    th_server s;
    latch_app *app = latch_app_new();
    int fds[CAP], fd, i, n;
    size_t len;
    char *out;

    (void)state;
    assert_int_equal(latch_get(app, "/hello", h_hello, NULL), 0);
    assert_int_equal(latch_app_set_limit(app, LATCH_LIMIT_CONNECTIONS, CAP), 0);
    th_server_start(&s, app);
    /* CAP keep-alive connections, each served once, then idle. */
    for (i = 0; i < CAP; i++) {
        fds[i] = th_connect(s.port);
        th_send_str(fds[i], "GET /hello HTTP/1.1\r\nHost: t\r\n\r\n");
        n = 1;
        out = th_read(fds[i], &len, 5000, th_until_responses, &n);
        assert_non_null(strstr(out, "hello"));
        free(out);
    }
    /* A newcomer is served: the oldest idle one made room. */
    assert_true(hello_once(s.port, 5000));
    assert_int_not_equal(th_wait_close(fds[0], 5000), TH_OPEN);
    assert_true(latch_app_counter(app, LATCH_COUNTER_SHED) >= 1);
    for (i = 0; i < CAP; i++)
        close(fds[i]);

    /* CAP connections busy sending a head, none of them for a second
     * yet: a newcomer is refused rather than one of them cut. */
    sleep_ms(100); /* the server sees the closes */
    for (i = 0; i < CAP; i++) {
        fds[i] = th_connect(s.port);
        th_send_str(fds[i], "GET /hello HTTP/1.1\r\n");
    }
    sleep_ms(100);
    {
        uint64_t dropped = latch_app_counter(app, LATCH_COUNTER_DROPPED);
        fd = th_try_connect(s.port);
        if (fd >= 0) {
            assert_int_not_equal(th_wait_close(fd, 5000), TH_OPEN);
            close(fd);
        }
        if (latch_app_counter(app, LATCH_COUNTER_DROPPED) <= dropped)
            fail_msg(
                "not refused: accepted %llu shed %llu dropped %llu",
                (unsigned long long)latch_app_counter(app,
                                                      LATCH_COUNTER_ACCEPTED),
                (unsigned long long)latch_app_counter(app, LATCH_COUNTER_SHED),
                (unsigned long long)dropped);
    }
    /* A second later they are slow: a newcomer takes the place of one. */
    sleep_ms(1100);
    assert_true(hello_once(s.port, 5000));
    n = 0;
    for (i = 0; i < CAP; i++) {
        struct pollfd p = {fds[i], POLLIN, 0};
        if (poll(&p, 1, 0) == 1)
            n++; /* this one was closed */
        close(fds[i]);
    }
    assert_int_equal(n, 1);
    assert_true(latch_app_counter(app, LATCH_COUNTER_ACCEPTED) >= CAP + 1);
    assert_int_equal(th_server_stop(&s), 0);
}

/* ------------------------------------------------------------------ */
/* 6. A slow-body attack on a server with 256 descriptors               */
/* ------------------------------------------------------------------ */

static void setup_attack(latch_app *app)
{
    (void)latch_app_set_limit(app, LATCH_TIMEOUT_RATE_GRACE, 1000);
}

#define ATTACKERS 300
#define NORMAL 100

/*
 * 300 attackers each open a connection, send a head announcing a large
 * body and trickle a byte of it every 200 ms, reconnecting whenever they
 * are cut; meanwhile a normal client makes 100 requests, one connection
 * each, retrying a refused connection after 20 ms. Every normal request
 * must be served within the time bound (before: none was).
 */
static void test_slow_body_attack_256_fds(void **state)
{
    static int att[ATTACKERS];
    static const char head[] = "POST /hello HTTP/1.1\r\nHost: t\r\n"
                               "Content-Length: 100000\r\n\r\n";
    int i, served = 0, tries = 0;
    int64_t deadline, next_trickle = 0;

    (void)state;
    child_start(&live, 256, 1, false, false, setup_attack);
    for (i = 0; i < ATTACKERS; i++) {
        att[i] = th_try_connect(live.port);
        if (att[i] >= 0 && !send_all(att[i], head, sizeof(head) - 1)) {
            close(att[i]);
            att[i] = -1;
        }
    }
    deadline = th_now_ms() + 60000;
    while (served < NORMAL && th_now_ms() < deadline) {
        if (th_now_ms() >= next_trickle) {
            for (i = 0; i < ATTACKERS; i++) {
                if (att[i] >= 0 && send_all(att[i], "x", 1))
                    continue;
                if (att[i] >= 0)
                    close(att[i]);
                att[i] = th_try_connect(live.port);
                if (att[i] >= 0 && !send_all(att[i], head, sizeof(head) - 1)) {
                    close(att[i]);
                    att[i] = -1;
                }
            }
            next_trickle = th_now_ms() + 200;
        }
        tries++;
        if (hello_once(live.port, 2000))
            served++;
        else
            sleep_ms(20);
    }
    for (i = 0; i < ATTACKERS; i++)
        if (att[i] >= 0)
            close(att[i]);
    print_message("slow-body attack: %d of %d normal requests served in "
                  "%d tries\n",
                  served, NORMAL, tries);
    assert_int_equal(served, NORMAL);
    child_alive(&live);
    child_stop(&live);
}

/* ------------------------------------------------------------------ */
/* 7. Out of descriptors: counted and logged                           */
/* ------------------------------------------------------------------ */

static void setup_no_cap(latch_app *app)
{
    /* Above the descriptors there are: accept(2) itself fails. */
    (void)latch_app_set_limit(app, LATCH_LIMIT_CONNECTIONS, 100000);
}

static void test_emfile_logged(void **state)
{
    int fds[100], i, nfd = 0;
    char log[4096];
    size_t len = 0;
    int64_t deadline;

    (void)state;
    child_start(&live, 64, 1, false, true, setup_no_cap);
    for (i = 0; i < 100; i++) {
        fds[i] = th_try_connect(live.port);
        if (fds[i] >= 0)
            nfd++;
    }
    /* The log line comes within a second or so (rate-limited). */
    deadline = th_now_ms() + 5000;
    while (th_now_ms() < deadline && len < sizeof(log) - 1) {
        struct pollfd p = {live.errfd, POLLIN, 0};
        ssize_t n;
        if (poll(&p, 1, 200) != 1)
            continue;
        n = read(live.errfd, log + len, sizeof(log) - 1 - len);
        if (n <= 0)
            break;
        len += (size_t)n;
        log[len] = '\0';
        if (strstr(log, "connections refused") != NULL)
            break;
    }
    log[len] = '\0';
    if (strstr(log, "latch: accept: Too many open files") == NULL)
        fail_msg("no EMFILE line in the server's log: \"%s\"", log);
    for (i = 0; i < 100; i++)
        if (fds[i] >= 0)
            close(fds[i]);
    child_alive(&live);
    /* It serves again once the clients left (bounded retries). */
    deadline = th_now_ms() + 10000;
    while (!hello_once(live.port, 2000) && th_now_ms() < deadline)
        sleep_ms(50);
    assert_true(th_now_ms() < deadline);
    (void)nfd;
    child_stop(&live);
}

/* ------------------------------------------------------------------ */
/* 8. Stopping while an upload arrives                                  */
/* ------------------------------------------------------------------ */

static void test_drain_upload_finishes(void **state)
{
    th_server s;
    latch_app *app = latch_app_new();
    int fd, n = 1;
    size_t len = 0;
    char *out;

    (void)state;
    assert_int_equal(latch_post(app, "/echo", h_echo, NULL), 0);
    th_server_start(&s, app);
    fd = th_connect(s.port);
    th_send_str(fd, "POST /echo HTTP/1.1\r\nHost: t\r\n"
                    "Content-Length: 10\r\n\r\n01234");
    sleep_ms(100);
    latch_stop(app); /* latch_run drains; th_server_stop joins later */
    sleep_ms(100);
    th_send_str(fd, "56789");
    out = th_read(fd, &len, 5000, th_until_responses, &n);
    assert_non_null(out);
    assert_true(strncmp(out, "HTTP/1.1 200 ", 13) == 0);
    assert_non_null(strstr(out, "Connection: close\r\n"));
    assert_non_null(strstr(out, "\r\n\r\n0123456789"));
    free(out);
    assert_int_not_equal(th_wait_close(fd, 5000), TH_OPEN);
    close(fd);
    assert_int_equal(th_server_stop(&s), 0);
}

static void test_drain_deadline_503(void **state)
{
    th_server s;
    latch_app *app = latch_app_new();
    int fd;
    size_t len = 0;
    char *out;

    (void)state;
    assert_int_equal(latch_post(app, "/echo", h_echo, NULL), 0);
    assert_int_equal(latch_app_set_limit(app, LATCH_TIMEOUT_DRAIN, 300), 0);
    th_server_start(&s, app);
    fd = th_connect(s.port);
    th_send_str(fd, "POST /echo HTTP/1.1\r\nHost: t\r\n"
                    "Content-Length: 10\r\n\r\n01234");
    sleep_ms(100);
    latch_stop(app);
    out = th_read(fd, &len, 5000, NULL, NULL); /* until the close */
    assert_non_null(out);
    assert_true(strncmp(out, "HTTP/1.1 503 ", 13) == 0);
    assert_non_null(strstr(out, "Connection: close\r\n"));
    assert_int_not_equal(th_last_end(), TH_OPEN);
    free(out);
    close(fd);
    assert_int_equal(th_server_stop(&s), 0);
}

/* ------------------------------------------------------------------ */
/* 9. A stop asked for before the server runs                           */
/* ------------------------------------------------------------------ */

static void *run_app(void *arg)
{
    static int r;

    r = latch_run(arg);
    return &r;
}

/* latch_stop before latch_run is not lost: latch_run starts, drains and
 * returns 0 at once. */
static void test_stop_before_run(void **state)
{
    latch_app *app = latch_app_new();
    pthread_t t;
    void *ret = NULL;
    int64_t t0;
    struct timespec ts;

    (void)state;
    assert_int_equal(latch_app_set_workers(app, 2), 0);
    assert_int_equal(latch_app_set_handle_signals(app, false), 0);
    assert_int_equal(latch_get(app, "/hello", h_hello, NULL), 0);
    assert_int_equal(latch_listen(app, "127.0.0.1", 0), 0);
    latch_stop(app);
    t0 = th_now_ms();
    assert_int_equal(pthread_create(&t, NULL, run_app, app), 0);
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += 10;
    if (pthread_timedjoin_np(t, &ret, &ts) != 0)
        fail_msg("latch_run did not return after a latch_stop made before it");
    assert_int_equal(*(int *)ret, 0);
    assert_true(th_now_ms() - t0 < 10000);
    latch_app_free(app);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_sigpipe_default_never_kills, kill_child),
        cmocka_unit_test_teardown(test_sigpipe_handler_never_reached,
                                  kill_child),
        cmocka_unit_test(test_pipeline_any_depth),
        cmocka_unit_test(test_nonreader_bounded_then_closed),
        cmocka_unit_test(test_slow_reader_kept),
        cmocka_unit_test(test_fill_drain_cycles),
        cmocka_unit_test(test_slow_body_408),
        cmocka_unit_test(test_receive_deadline_408),
        cmocka_unit_test(test_connection_cap_sheds),
        cmocka_unit_test_teardown(test_slow_body_attack_256_fds, kill_child),
        cmocka_unit_test_teardown(test_emfile_logged, kill_child),
        cmocka_unit_test(test_drain_upload_finishes),
        cmocka_unit_test(test_drain_deadline_503),
        cmocka_unit_test(test_stop_before_run),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
