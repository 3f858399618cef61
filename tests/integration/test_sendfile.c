/*
 * test_sendfile.c - file bodies under stress, through the sendfile(2) path
 * of conn.c and the copy path beside it: a sparse file above 2 GiB (ranges
 * at offsets past 2^31), readers that stop reading (the process's RSS
 * stays under LATCH_LIMIT_OUTPUT + 1 MiB), a client that resets half way
 * (no SIGPIPE: this process keeps the default disposition, so one would
 * kill it; the fd count comes back), files truncated and deleted while
 * they are sent, pipelined file responses in order, the send timeout on a
 * file body, LATCH_LIMIT_OUTPUT on a producer that ignores backpressure,
 * and every done exactly once, also under LATCH_SHAKE with 20 seeds.
 *
 * Not here: headers, ranges and conditionals case by case (test_files.c).
 */
#include "harness.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <uv.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#define MB ((size_t)1 << 20)
#define BIG_SIZE (50 * MB)
#define OUT_CAP (4 * MB)
/* The sparse file: 2 GiB + 3 MiB, with data at 2 GiB + 1 MiB. */
#define SPARSE_SIZE (((uint64_t)1 << 31) + 3 * MB)
#define SPARSE_AT (((uint64_t)1 << 31) + MB)
#define SPARSE_LEN ((size_t)8192)

static char dir[256];
static th_server srv;
static th_vlog vlog;
static atomic_int calls, done_calls, done_ok, done_cancelled, done_err;
static atomic_int done_last;

#if defined(__SANITIZE_ADDRESS__)
/* ASan keeps freed memory aside (256 MiB by default) so that a use after
 * free is caught: every allocation of the measured round would then be
 * new memory, and the RSS bound would measure ASan. A 1 MiB quarantine
 * still catches a use right after a free; the environment's
 * ASAN_OPTIONS (make test's) are applied on top of this. */
const char *__asan_default_options(void);
const char *__asan_default_options(void)
{
    return "quarantine_size_mb=1:thread_local_quarantine_size_kb=64";
}
#endif

/* ---- files ------------------------------------------------------------ */

static unsigned char pat(uint64_t i)
{
    return (unsigned char)((i * 131u + (i >> 16)) & 0xff);
}

static void path_of(char *p, size_t n, const char *rel)
{
    snprintf(p, n, "%s/%s", dir, rel);
}

static void write_pattern(const char *rel, size_t n)
{
    char p[512];
    unsigned char *b = malloc(MB);
    int fd;

    assert_non_null(b);
    path_of(p, sizeof(p), rel);
    fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    assert_true(fd >= 0);
    for (size_t off = 0; off < n; off += MB) {
        size_t k = n - off < MB ? n - off : MB;
        for (size_t i = 0; i < k; i++)
            b[i] = pat(off + i);
        assert_int_equal(write(fd, b, k), (ssize_t)k);
    }
    close(fd);
    free(b);
}

static void make_sparse(void)
{
    char p[512];
    unsigned char b[SPARSE_LEN];
    int fd;

    path_of(p, sizeof(p), "sparse.bin");
    fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    assert_true(fd >= 0);
    assert_int_equal(ftruncate(fd, (off_t)SPARSE_SIZE), 0);
    for (size_t i = 0; i < SPARSE_LEN; i++)
        b[i] = pat(SPARSE_AT + i);
    assert_int_equal(pwrite(fd, b, SPARSE_LEN, (off_t)SPARSE_AT),
                     (ssize_t)SPARSE_LEN);
    close(fd);
}

/* The byte at `i` of the sparse file. */
static unsigned char sparse_at(uint64_t i)
{
    return i >= SPARSE_AT && i < SPARSE_AT + SPARSE_LEN ? pat(i) : 0;
}

/* ---- the app ---------------------------------------------------------- */

static void count_done(latch_res *res, int status, void *data)
{
    (void)res;
    (void)data;
    atomic_store(&done_last, status);
    if (status == 0)
        atomic_fetch_add(&done_ok, 1);
    else if (status == LATCH_ERR_CANCELLED)
        atomic_fetch_add(&done_cancelled, 1);
    else
        atomic_fetch_add(&done_err, 1);
    atomic_fetch_add(&done_calls, 1);
}

static void reset_counts(void)
{
    atomic_store(&calls, 0);
    atomic_store(&done_calls, 0);
    atomic_store(&done_ok, 0);
    atomic_store(&done_cancelled, 0);
    atomic_store(&done_err, 0);
    atomic_store(&done_last, 1);
}

/* Waits (bounded) until done ran n times, and asserts it did. */
static void wait_done(int n)
{
    int64_t end = th_now_ms() + 20000;

    while (atomic_load(&done_calls) < n && th_now_ms() < end)
        usleep(1000);
    assert_int_equal(atomic_load(&done_calls), n);
}

static int h_file(latch_req *req, latch_res *res, void *data)
{
    latch_file_opts o = {0};

    (void)data;
    o.root = dir;
    atomic_fetch_add(&calls, 1);
    latch_res_sendfile(res, latch_req_param(req, "name"), &o, count_done, NULL);
    return LATCH_DONE;
}

static int h_small(latch_req *req, latch_res *res, void *data)
{
    (void)req;
    (void)data;
    latch_res_send(res, "small\n", 6);
    return LATCH_DONE;
}

/* Answers after 30 ms: a file requested behind it in a pipeline waits,
 * then goes partly by copy, then by sendfile. */
static void later(latch_res *res, void *data)
{
    (void)data;
    latch_res_send(res, "later\n", 6);
}

static int h_later(latch_req *req, latch_res *res, void *data)
{
    (void)req;
    (void)data;
    latch_set_timeout(res, 30, later, NULL);
    return LATCH_DONE;
}

/* A generated body of n 64 KiB pieces, pulled with backpressure, or (greedy)
 * written all at once, ignoring the 0 that asks to wait. */
typedef struct gen {
    int next, n;
    bool greedy;
} gen;

static char piece[64 * 1024];
static atomic_int gen_last; /* what the last write of a generator gave */

static void gen_pull(latch_res *res, void *data)
{
    gen *g = data;
    int r = 1;

    while ((r == 1 || (g->greedy && r == 0)) && g->next < g->n) {
        if (++g->next == g->n)
            r = latch_res_end(res, piece, sizeof(piece));
        else
            r = latch_res_write(res, piece, sizeof(piece));
        /* done may have run inside that write (a destroyed response
         * ends its pipe at once) and freed g: the result goes outside. */
        atomic_store(&gen_last, r);
        if (r < 0)
            return;
    }
}

static void gen_done(latch_res *res, int status, void *data)
{
    gen *g = data;

    free(g);
    count_done(res, status, NULL);
}

static int h_gen(latch_req *req, latch_res *res, void *data)
{
    gen *g = calloc(1, sizeof(*g));
    const char *n = latch_req_query(req, "n");

    (void)data;
    assert_non_null(g);
    g->n = n != NULL ? atoi(n) : 16;
    g->greedy = latch_req_query(req, "greedy") != NULL;
    atomic_fetch_add(&calls, 1);
    latch_res_set_header(res, "Content-Type", "application/octet-stream");
    if (latch_res_pipe(res, gen_pull, gen_done, g) < 0)
        free(g);
    return LATCH_DONE;
}

static latch_app *make_app(void)
{
    latch_app *app = latch_app_new();

    assert_non_null(app);
    th_record_violations_full(app, &vlog);
    assert_int_equal(latch_app_set_limit(app, LATCH_LIMIT_OUTPUT, OUT_CAP), 0);
    latch_get(app, "/f/:name", h_file, NULL);
    latch_get(app, "/small", h_small, NULL);
    latch_get(app, "/later", h_later, NULL);
    latch_get(app, "/gen", h_gen, NULL);
    return app;
}

static int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof(dir), "/tmp/latch-sendfile-XXXXXX");
    assert_non_null(mkdtemp(dir));
    write_pattern("big.bin", BIG_SIZE);
    write_pattern("mid.bin", 3 * MB);
    write_pattern("one.bin", 1);
    make_sparse();
    th_server_start(&srv, make_app());
    return 0;
}

static int teardown(void **state)
{
    DIR *d;
    struct dirent *e;
    char p[600];

    (void)state;
    th_server_stop(&srv);
    if ((d = opendir(dir)) != NULL) {
        while ((e = readdir(d)) != NULL)
            if (e->d_name[0] != '.') {
                snprintf(p, sizeof(p), "%s/%s", dir, e->d_name);
                unlink(p);
            }
        closedir(d);
    }
    rmdir(dir);
    return 0;
}

/* ---- the client --------------------------------------------------------- */

/* A connection whose receive buffer is small, so a reader that stops
 * stops the server soon. */
static int connect_small(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0), sz = 64 * 1024;
    struct sockaddr_in sa;

    assert_true(fd >= 0);
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &sz, sizeof(sz));
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    sa.sin_addr.s_addr = htonl(0x7f000001);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    return fd;
}

/* Reads the head of one response (up to the blank line, byte by byte so
 * nothing of the body is taken); returns its Content-Length (-1: none)
 * and copies the status. */
static int64_t read_head(int fd, int *status, char *head, size_t cap)
{
    size_t n = 0;
    const char *cl;

    while (n + 1 < cap) {
        struct pollfd p = {fd, POLLIN, 0};
        ssize_t k;
        if (poll(&p, 1, 20000) <= 0)
            fail_msg("no response head");
        if ((k = read(fd, head + n, 1)) <= 0)
            fail_msg("connection ended in the head");
        n++;
        if (n >= 4 && memcmp(head + n - 4, "\r\n\r\n", 4) == 0)
            break;
    }
    head[n] = '\0';
    assert_int_equal(sscanf(head, "HTTP/1.1 %d", status), 1);
    cl = strcasestr(head, "\r\nContent-Length: ");
    return cl != NULL ? strtoll(cl + 18, NULL, 10) : -1;
}

/* Reads up to `want` body bytes, checking each against the byte the file
 * has at `base` + its index (byte_at). Returns what arrived before EOF,
 * a reset, the count, or the timeout. */
typedef unsigned char (*byte_fn)(uint64_t i);

static uint64_t read_body(int fd, uint64_t want, uint64_t base, byte_fn at,
                          int timeout_ms)
{
    static unsigned char b[256 * 1024];
    uint64_t got = 0;
    int64_t end = th_now_ms() + timeout_ms;

    while (got < want && th_now_ms() < end) {
        struct pollfd p = {fd, POLLIN, 0};
        size_t ask = want - got < sizeof(b) ? (size_t)(want - got) : sizeof(b);
        ssize_t k;
        if (poll(&p, 1, 1000) <= 0)
            continue;
        k = read(fd, b, ask);
        if (k <= 0)
            break;
        if (at == sparse_at && (base + got + (uint64_t)k <= SPARSE_AT ||
                                base + got >= SPARSE_AT + SPARSE_LEN)) {
            /* a hole: zeros (compared in one call, 2 GiB of them) */
            static const unsigned char zero[sizeof(b)];
            if (memcmp(b, zero, (size_t)k) != 0)
                fail_msg("a hole at %llu is not zeros",
                         (unsigned long long)(base + got));
            got += (uint64_t)k;
            continue;
        }
        for (ssize_t i = 0; i < k; i++)
            if (b[i] != at(base + got + (uint64_t)i))
                fail_msg("byte %llu: %u, want %u",
                         (unsigned long long)(base + got + (uint64_t)i), b[i],
                         at(base + got + (uint64_t)i));
        got += (uint64_t)k;
    }
    return got;
}

static int count_fds(void)
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

static void wait_fds(int fds0)
{
    int64_t end = th_now_ms() + 5000;

    while (count_fds() > fds0 && th_now_ms() < end)
        usleep(1000);
    assert_true(count_fds() <= fds0);
}

/* ---- tests ------------------------------------------------------------- */

/* The whole sparse file (2 GiB + 3 MiB) byte for byte, and ranges whose
 * offsets are above 2^31. */
static void test_sparse_2g(void **state)
{
    char req[256], head[2048], want[128];
    int fd, st;
    uint64_t first = SPARSE_AT - 100, last = SPARSE_AT + SPARSE_LEN + 99;

    (void)state;
    reset_counts();
    fd = th_connect(srv.port);
    th_send_str(fd, "GET /f/sparse.bin HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_int_equal(read_head(fd, &st, head, sizeof(head)),
                     (int64_t)SPARSE_SIZE);
    assert_int_equal(st, 200);
    assert_int_equal(read_body(fd, SPARSE_SIZE, 0, sparse_at, 240000),
                     SPARSE_SIZE);
    wait_done(1);
    /* the same connection, a range past 2^31 */
    snprintf(req, sizeof(req),
             "GET /f/sparse.bin HTTP/1.1\r\nHost: x\r\n"
             "Range: bytes=%llu-%llu\r\n\r\n",
             (unsigned long long)first, (unsigned long long)last);
    th_send_str(fd, req);
    assert_int_equal(read_head(fd, &st, head, sizeof(head)),
                     (int64_t)(last - first + 1));
    assert_int_equal(st, 206);
    snprintf(want, sizeof(want), "Content-Range: bytes %llu-%llu/%llu\r\n",
             (unsigned long long)first, (unsigned long long)last,
             (unsigned long long)SPARSE_SIZE);
    assert_non_null(strstr(head, want));
    assert_int_equal(read_body(fd, last - first + 1, first, sparse_at, 20000),
                     last - first + 1);
    /* a suffix range: the last 5 bytes, at 2^31 + 3 MiB - 5 */
    th_send_str(fd, "GET /f/sparse.bin HTTP/1.1\r\nHost: x\r\n"
                    "Range: bytes=-5\r\n\r\n");
    assert_int_equal(read_head(fd, &st, head, sizeof(head)), 5);
    assert_int_equal(st, 206);
    assert_int_equal(read_body(fd, 5, SPARSE_SIZE - 5, sparse_at, 20000), 5);
    close(fd);
    wait_done(3);
    assert_int_equal(atomic_load(&done_ok), 3);
}

/* Readers that stop: a generated body that waits for drain and 21 file
 * downloads (sendfile) at once, all stalled. Returns the largest RSS seen
 * while they hang; every done ran (CANCELLED) when it returns. */
#define NSTALL 22
static uint64_t stall_round(void)
{
    int fds[NSTALL], st, i;
    char head[2048];
    uint64_t peak = 0;

    reset_counts();
    for (i = 0; i < NSTALL; i++) {
        fds[i] = connect_small(srv.port);
        th_send_str(fds[i], i == 0
                                ? "GET /gen?n=800 HTTP/1.1\r\nHost: x\r\n\r\n"
                                : "GET /f/big.bin HTTP/1.1\r\nHost: x\r\n\r\n");
    }
    for (i = 0; i < NSTALL; i++) {
        read_head(fds[i], &st, head, sizeof(head));
        assert_int_equal(st, 200);
    }
    /* each server side is now blocked on a full socket: sample a while */
    for (int k = 0; k < 20; k++) {
        uint64_t r = th_rss();
        if (r > peak)
            peak = r;
        usleep(20000);
    }
    for (i = 0; i < NSTALL; i++)
        th_close_reset(fds[i]);
    wait_done(NSTALL);
    assert_int_equal(atomic_load(&done_cancelled), NSTALL);
    return peak;
}

/* The process's RSS grows by less than LATCH_LIMIT_OUTPUT + 1 MiB while
 * the readers hang, measured against a first round of the same shape
 * (which warms the pools, the thread pool's stacks and the allocator's
 * caches, under ASan too). */
static void test_stalled_readers_rss(void **state)
{
    uint64_t base, peak;

    (void)state;
    stall_round();
    base = th_rss();
    peak = stall_round();
    if (peak > base && peak - base >= OUT_CAP + MB)
        fail_msg("RSS grew by %llu bytes with stalled readers",
                 (unsigned long long)(peak - base));
}

/* A client resets after 1 MB of 50 MB: no SIGPIPE (it would end this
 * process), done once with LATCH_ERR_CANCELLED, the fds come back. */
static void test_reset_midway(void **state)
{
    int fds0, fd, st;
    char head[2048];

    (void)state;
    fds0 = count_fds();
    reset_counts();
    for (int round = 0; round < 3; round++) {
        fd = connect_small(srv.port);
        th_send_str(fd, "GET /f/big.bin HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_int_equal(read_head(fd, &st, head, sizeof(head)),
                         (int64_t)BIG_SIZE);
        assert_int_equal(read_body(fd, MB, 0, pat, 20000), MB);
        th_close_reset(fd);
        wait_done(round + 1);
    }
    assert_int_equal(atomic_load(&done_cancelled), 3);
    wait_fds(fds0);
    th_expect_alive(srv.port, "/small", "small\n");
}

/* A file truncated while it is sent: the response ends short of its
 * Content-Length and the connection closes (never padded), done gets
 * LATCH_ERR_HTTP_CONTENT_LENGTH_MISMATCH. */
static void test_truncated_while_sent(void **state)
{
    char p[512], head[2048];
    int fd, st, end;
    uint64_t got;

    (void)state;
    write_pattern("shrink.bin", 20 * MB);
    reset_counts();
    fd = connect_small(srv.port);
    th_send_str(fd, "GET /f/shrink.bin HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_int_equal(read_head(fd, &st, head, sizeof(head)),
                     (int64_t)(20 * MB));
    assert_int_equal(read_body(fd, MB, 0, pat, 20000), MB);
    path_of(p, sizeof(p), "shrink.bin");
    assert_int_equal(truncate(p, 0), 0);
    got = MB + read_body(fd, 20 * MB - MB, MB, pat, 20000);
    assert_true(got < 20 * MB);
    end = th_wait_close(fd, 5000);
    assert_true(end == TH_EOF || end == TH_RESET);
    close(fd);
    wait_done(1);
    assert_int_equal(atomic_load(&done_last),
                     LATCH_ERR_HTTP_CONTENT_LENGTH_MISMATCH);
    unlink(p);
}

/* A file deleted while it is sent: the open descriptor still has it, so
 * every byte arrives and done gets 0. */
static void test_deleted_while_sent(void **state)
{
    char p[512], head[2048];
    int fd, st;

    (void)state;
    write_pattern("gone.bin", 20 * MB);
    reset_counts();
    fd = connect_small(srv.port);
    th_send_str(fd, "GET /f/gone.bin HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_int_equal(read_head(fd, &st, head, sizeof(head)),
                     (int64_t)(20 * MB));
    assert_int_equal(read_body(fd, MB, 0, pat, 20000), MB);
    path_of(p, sizeof(p), "gone.bin");
    assert_int_equal(unlink(p), 0);
    assert_int_equal(read_body(fd, 20 * MB - MB, MB, pat, 60000), 20 * MB - MB);
    close(fd);
    wait_done(1);
    assert_int_equal(atomic_load(&done_ok), 1);
}

/* Pipelined: files and other responses in one write come back in order,
 * byte for byte, including a file queued behind a response that answers
 * late (it goes by copy until it is at the head of the queue). */
static void test_pipelined_order(void **state)
{
    static const char req[] =
        "GET /f/mid.bin HTTP/1.1\r\nHost: x\r\n\r\n"
        "GET /small HTTP/1.1\r\nHost: x\r\n\r\n"
        "GET /later HTTP/1.1\r\nHost: x\r\n\r\n"
        "GET /f/mid.bin HTTP/1.1\r\nHost: x\r\n\r\n"
        "GET /f/one.bin HTTP/1.1\r\nHost: x\r\n\r\n"
        "GET /small HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    size_t len;
    char *buf;
    th_resp *r;

    (void)state;
    reset_counts();
    buf = th_exchange(srv.port, req, sizeof(req) - 1, 6, &len);
    r = th_expect_responses(buf, len, 6, NULL);
    for (int i = 0; i < 6; i++)
        assert_int_equal(r[i].status, 200);
    assert_int_equal(r[0].body_len, 3 * MB);
    assert_int_equal(r[3].body_len, 3 * MB);
    for (size_t i = 0; i < 3 * MB; i++)
        if ((unsigned char)r[0].body[i] != pat(i) ||
            (unsigned char)r[3].body[i] != pat(i))
            fail_msg("pipelined file byte %zu differs", i);
    assert_string_equal(r[1].body, "small\n");
    assert_string_equal(r[2].body, "later\n");
    assert_int_equal(r[4].body_len, 1);
    assert_int_equal((unsigned char)r[4].body[0], pat(0));
    assert_string_equal(r[5].body, "small\n");
    th_resp_free(r, 6);
    free(r);
    free(buf);
    wait_done(3);
    assert_int_equal(atomic_load(&done_ok), 3);
}

/* epoll_ctl, as libuv calls it, counted: this program's definition is the
 * one the dynamic linker binds libuv's calls to (the executable comes
 * first), and it passes each call on to the kernel unchanged. */
static atomic_int epoll_ctls, epoll_ctl_fails;

int epoll_ctl(int epfd, int op, int fd, struct epoll_event *ev)
{
    long r = syscall(SYS_epoll_ctl, epfd, op, fd, ev);

    atomic_fetch_add(&epoll_ctls, 1);
    if (r < 0)
        atomic_fetch_add(&epoll_ctl_fails, 1);
    return (int)r;
}

/* A file body by sendfile costs the loop no epoll_ctl and no descriptor
 * of its own when the socket takes it at once (the writability watch, a
 * dup of the socket, is made when a body first has to wait), and one
 * watch however often a body waits (libuv's uv_poll_stop is an
 * EPOLL_CTL_DEL even on a watch that is off, and its start a DEL then an
 * ADD). */
static void test_sendfile_epoll_calls(void **state)
{
    char head[2048];
    int fd, st, c0, f0, fds0;

    (void)state;
    reset_counts();
    fds0 = count_fds();
    c0 = atomic_load(&epoll_ctls);
    f0 = atomic_load(&epoll_ctl_fails);
    fd = connect_small(srv.port);
    for (int i = 0; i < 51; i++) {
        th_send_str(fd, "GET /f/one.bin HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_int_equal(read_head(fd, &st, head, sizeof(head)), 1);
        assert_int_equal(st, 200);
        assert_int_equal(read_body(fd, 1, 0, pat, 20000), 1);
    }
    wait_done(51);
    /* the count is live: accepting the connection registered it; and
     * that is all the epoll_ctl there was */
    assert_true(atomic_load(&epoll_ctls) - c0 >= 1);
    assert_true(atomic_load(&epoll_ctls) - c0 <= 2);
    assert_int_equal(atomic_load(&epoll_ctl_fails) - f0, 0);
    /* two descriptors for the connection (ours, the server's), no dup */
    wait_fds(fds0 + 2);
    /* 3 MiB through a 64 KiB receive buffer: the body waits many times */
    c0 = atomic_load(&epoll_ctls);
    f0 = atomic_load(&epoll_ctl_fails);
    th_send_str(fd, "GET /f/mid.bin HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_int_equal(read_head(fd, &st, head, sizeof(head)), (int64_t)(3 * MB));
    assert_int_equal(read_body(fd, 3 * MB, 0, pat, 20000), 3 * MB);
    wait_done(52);
    /* the watch made (libuv's check of the dup: an ADD and a DEL), its
     * start (a DEL of a watch that is off, ENOENT, then the ADD), its
     * stop at the end (DEL): five at most, whatever the number of waits */
    fprintf(stderr, "epoll_ctl for the 3 MiB body: %d (%d failed)\n",
            atomic_load(&epoll_ctls) - c0, atomic_load(&epoll_ctl_fails) - f0);
    assert_true(atomic_load(&epoll_ctl_fails) - f0 <= 1);
    assert_true(atomic_load(&epoll_ctls) - c0 >= 1);
    assert_true(atomic_load(&epoll_ctls) - c0 <= 5);
    close(fd);
}

/* LATCH_LIMIT_OUTPUT: a producer that ignores the 0 of latch_res_write
 * meets LATCH_ERR_LIMIT, the response is destroyed (truncated), reported
 * once, and done gets the error; the process did not grow past the cap
 * by much more than the copy it was writing. */
static void test_output_limit(void **state)
{
    int fd, st, before = th_vlog_count(&vlog), end;
    char head[2048];
    th_vrec v;
    uint64_t got;

    (void)state;
    reset_counts();
    fd = connect_small(srv.port);
    /* 400 pieces of 64 KiB: 25 MiB, far past the 4 MiB cap */
    th_send_str(fd, "GET /gen?n=400&greedy=1 HTTP/1.1\r\nHost: x\r\n\r\n");
    read_head(fd, &st, head, sizeof(head));
    assert_int_equal(st, 200);
    wait_done(1);
    assert_int_equal(atomic_load(&done_last), LATCH_ERR_LIMIT);
    assert_int_equal(atomic_load(&gen_last), LATCH_ERR_LIMIT);
    assert_true(th_vlog_wait(&vlog, before + 1, 5000) >= before + 1);
    assert_true(th_vlog_get(&vlog, before, &v));
    assert_int_equal(v.code, LATCH_ERR_LIMIT);
    assert_string_equal(v.call, "latch_res_write");
    /* truncated: the chunked body never gets its last chunk */
    got = 0;
    for (;;) {
        char b[65536];
        ssize_t k = read(fd, b, sizeof(b));
        if (k <= 0)
            break;
        got += (uint64_t)k;
        if (got > 2 * OUT_CAP + MB)
            fail_msg("more than the cap arrived: %llu",
                     (unsigned long long)got);
    }
    end = th_last_end();
    (void)end;
    close(fd);
}

/* The send timeout covers a file body: a client that stops reading is
 * closed after LATCH_TIMEOUT_SEND without progress (done: CANCELLED). */
static void test_send_timeout_file(void **state)
{
    th_server s2;
    latch_app *app = make_app();
    int fd, st;
    char head[2048];
    int64_t t0;

    (void)state;
    assert_int_equal(latch_app_set_limit(app, LATCH_TIMEOUT_SEND, 600), 0);
    th_server_start(&s2, app);
    reset_counts();
    fd = connect_small(s2.port);
    th_send_str(fd, "GET /f/big.bin HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_int_equal(read_head(fd, &st, head, sizeof(head)), (int64_t)BIG_SIZE);
    t0 = th_now_ms();
    wait_done(1);
    assert_int_equal(atomic_load(&done_cancelled), 1);
    assert_true(th_now_ms() - t0 >= 300);
    /* what was in flight, then the end */
    assert_true(th_wait_close(fd, 20000) != TH_OPEN);
    close(fd);
    th_server_stop(&s2);
}

/* done exactly once on every path, with LATCH_SHAKE delaying disconnects
 * and completions, 20 seeds: whole files, HEAD, ranges, a miss, a reset
 * half way, pipelined files, a truncating reader. */
static void shake_round(int port)
{
    static const char pipelined[] =
        "GET /f/mid.bin HTTP/1.1\r\nHost: x\r\n\r\n"
        "HEAD /f/mid.bin HTTP/1.1\r\nHost: x\r\n\r\n"
        "GET /f/nope.bin HTTP/1.1\r\nHost: x\r\n\r\n"
        "GET /f/mid.bin HTTP/1.1\r\nHost: x\r\nRange: bytes=5-9\r\n\r\n"
        "GET /f/one.bin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    const char *methods[] = {"GET", "HEAD", "GET", "GET", "GET"};
    size_t len, want = 256 * 1024;
    char *buf;
    th_resp *r;
    int fd;

    buf = th_exchange(port, pipelined, sizeof(pipelined) - 1, 5, &len);
    r = th_expect_responses(buf, len, 5, methods);
    assert_int_equal(r[0].body_len, 3 * MB);
    assert_int_equal(r[1].status, 200);
    assert_int_equal(r[2].status, 404);
    assert_int_equal(r[3].status, 206);
    th_resp_free(r, 5);
    free(r);
    free(buf);
    /* a reset half way */
    fd = connect_small(port);
    th_send_str(fd, "GET /f/big.bin HTTP/1.1\r\nHost: x\r\n\r\n");
    free(th_read(fd, &len, 10000, th_until_bytes, &want));
    th_close_reset(fd);
    /* a client that leaves before the answer */
    fd = th_connect(port);
    th_send_str(fd, "GET /f/mid.bin HTTP/1.1\r\nHost: x\r\n\r\n");
    close(fd);
}

static void test_done_once_shake(void **state)
{
    (void)state;
    for (int seed = 1; seed <= 20; seed++) {
        th_server s2;
        char env[16];
        int n;

        snprintf(env, sizeof(env), "%d", seed);
        assert_int_equal(setenv("LATCH_SHAKE", env, 1), 0);
        th_server_start(&s2, make_app());
        unsetenv("LATCH_SHAKE");
        reset_counts();
        shake_round(s2.port);
        /* stopping drains: every request that reached the handler has
         * had its done by the time latch_run returned */
        th_server_stop(&s2);
        n = atomic_load(&calls);
        assert_true(n >= 6); /* the last client may leave unheard */
        if (atomic_load(&done_calls) != n)
            fail_msg("seed %d: %d handler calls, %d dones", seed, n,
                     atomic_load(&done_calls));
        assert_true(atomic_load(&done_ok) >= 4);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sparse_2g),
        cmocka_unit_test(test_stalled_readers_rss),
        cmocka_unit_test(test_reset_midway),
        cmocka_unit_test(test_truncated_while_sent),
        cmocka_unit_test(test_deleted_while_sent),
        cmocka_unit_test(test_pipelined_order),
        cmocka_unit_test(test_sendfile_epoll_calls),
        cmocka_unit_test(test_output_limit),
        cmocka_unit_test(test_send_timeout_file),
        cmocka_unit_test(test_done_once_shake),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
