/*
 * test_proxy_stream.c - request bodies streamed through latch_use_proxy:
 * uploads of 1 MB and 50 MB byte-exact (a digest the upstream computes as
 * it reads) with this process's memory bounded, a slow upstream reader
 * that holds the client back instead of being buffered for, chunked
 * uploads, body limits on a streamed body, a client that leaves mid-way,
 * middleware in front of the proxy (one that answers at once, one that
 * waits), and Expect: 100-continue passed through both ways (the client
 * gets the upstream's 100, or its refusal and never latch's own 100).
 *
 * The upstream here is a thread on 127.0.0.1 that reads a request head,
 * answers 100 Continue when asked (or refuses), reads the body (by
 * Content-Length or chunked) as slowly as a test wants, and answers with
 * the body's length and FNV-1a digest. The clients generate their bodies
 * on the fly, so the process's resident memory is the server's measure.
 */
#include "harness.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#define MB (1024u * 1024u)

/* ---- bodies: a pattern and its digest -------------------------------- */

static unsigned char pat(uint64_t i)
{
    return (unsigned char)(i * 31 + (i >> 12) + (i >> 20) * 7);
}

static uint64_t fnv(uint64_t h, const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x100000001b3ull;
    }
    return h;
}
#define FNV_INIT 0xcbf29ce484222325ull

/* ---- the upstream ------------------------------------------------------ */

static struct {
    int lfd, port;
    pthread_t th;
    atomic_bool stop;
    pthread_mutex_t mu;
    /* the script */
    atomic_int slow_us; /* pause after each read of the body */
    atomic_bool refuse; /* an Expect: 100-continue gets 401 and a close */
    atomic_bool no_100; /* read the body without saying 100 first */
    /* what happened */
    atomic_int accepts, closes, requests;
    atomic_llong got; /* body bytes of the request being read */
    char last_head[4096];
} up;

typedef struct rd {
    int fd;
    char buf[65536];
    size_t pos, len;
} rd;

/* More bytes into r (keeping [pos, len)): >0, 0 at EOF, -1 on error or
 * when the test stops the upstream. */
static ssize_t rd_fill(rd *r, size_t max)
{
    ssize_t n;

    if (r->pos > 0) {
        memmove(r->buf, r->buf + r->pos, r->len - r->pos);
        r->len -= r->pos;
        r->pos = 0;
    }
    if (max > sizeof(r->buf) - r->len)
        max = sizeof(r->buf) - r->len;
    for (;;) {
        struct pollfd pf = {r->fd, POLLIN, 0};
        if (atomic_load(&up.stop))
            return -1;
        if (poll(&pf, 1, 50) <= 0)
            continue;
        n = recv(r->fd, r->buf + r->len, max, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n > 0)
            r->len += (size_t)n;
        return n < 0 ? -1 : n;
    }
}

static void up_send(int fd, const char *s, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, s, n, MSG_NOSIGNAL);
        if (w <= 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return;
        s += w;
        n -= (size_t)w;
    }
}

/* n body bytes into the digest, at the test's pace. */
static bool rd_body(rd *r, uint64_t n, uint64_t *h)
{
    while (n > 0) {
        size_t have = r->len - r->pos, take;
        int slow = atomic_load(&up.slow_us);

        if (have == 0) {
            if (rd_fill(r, slow > 0 ? 16384 : sizeof(r->buf)) <= 0)
                return false;
            if (slow > 0)
                usleep((useconds_t)slow);
            continue;
        }
        take = have < n ? have : (size_t)n;
        *h = fnv(*h, (const unsigned char *)r->buf + r->pos, take);
        r->pos += take;
        n -= take;
        atomic_fetch_add(&up.got, (long long)take);
    }
    return true;
}

/* A CRLF-terminated line (without it) into out. */
static bool rd_line(rd *r, char *out, size_t cap)
{
    for (;;) {
        char *e = memmem(r->buf + r->pos, r->len - r->pos, "\r\n", 2);
        if (e != NULL) {
            size_t n = (size_t)(e - (r->buf + r->pos));
            if (n >= cap)
                return false;
            memcpy(out, r->buf + r->pos, n);
            out[n] = '\0';
            r->pos += n + 2;
            return true;
        }
        if (rd_fill(r, sizeof(r->buf)) <= 0)
            return false;
    }
}

/* One request: false when the connection is over. */
static bool up_serve(rd *r)
{
    char head[4096], line[128], ans[160];
    const char *cl;
    size_t hl;
    uint64_t h = FNV_INIT, n = 0;
    char *e;

    while ((e = memmem(r->buf + r->pos, r->len - r->pos, "\r\n\r\n", 4)) ==
           NULL)
        if (r->len - r->pos >= sizeof(head) - 1 ||
            rd_fill(r, sizeof(r->buf)) <= 0)
            return false;
    hl = (size_t)(e - (r->buf + r->pos)) + 4;
    memcpy(head, r->buf + r->pos, hl);
    head[hl] = '\0';
    r->pos += hl;
    pthread_mutex_lock(&up.mu);
    memcpy(up.last_head, head, hl + 1);
    pthread_mutex_unlock(&up.mu);
    atomic_fetch_add(&up.requests, 1);
    atomic_store(&up.got, 0);
    if (strcasestr(head, "\r\nexpect: 100-continue\r\n") != NULL) {
        if (atomic_load(&up.refuse)) {
            static const char no[] = "HTTP/1.1 401 Unauthorized\r\n"
                                     "Content-Length: 6\r\n"
                                     "Connection: close\r\n\r\nrefuse";
            up_send(r->fd, no, sizeof(no) - 1);
            return false;
        }
        if (!atomic_load(&up.no_100))
            up_send(r->fd, "HTTP/1.1 100 Continue\r\n\r\n", 25);
    }
    if ((cl = strcasestr(head, "\r\ncontent-length: ")) != NULL) {
        n = strtoull(cl + 18, NULL, 10);
        if (!rd_body(r, n, &h))
            return false;
    } else if (strcasestr(head, "\r\ntransfer-encoding: chunked\r\n")) {
        uint64_t size, total = 0;
        do {
            if (!rd_line(r, line, sizeof(line)))
                return false;
            size = strtoull(line, NULL, 16);
            if (size > 0 && (!rd_body(r, size, &h) ||
                             !rd_line(r, line, sizeof(line)) || line[0]))
                return false;
            total += size;
        } while (size > 0);
        if (!rd_line(r, line, sizeof(line)) || line[0] != '\0')
            return false; /* no trailers from latch */
        n = total;
    }
    {
        char b[64];
        int bl = snprintf(b, sizeof(b), "%llu %016llx", (unsigned long long)n,
                          (unsigned long long)h);
        int al =
            snprintf(ans, sizeof(ans),
                     "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", bl, b);
        up_send(r->fd, ans, (size_t)al);
    }
    return true;
}

static void *up_main(void *arg)
{
    static rd r;

    (void)arg;
    while (!atomic_load(&up.stop)) {
        struct pollfd pf = {up.lfd, POLLIN, 0};
        if (poll(&pf, 1, 50) <= 0)
            continue;
        r.fd = accept(up.lfd, NULL, NULL);
        if (r.fd < 0)
            continue;
        atomic_fetch_add(&up.accepts, 1);
        r.pos = r.len = 0;
        while (up_serve(&r))
            ;
        close(r.fd);
        atomic_fetch_add(&up.closes, 1);
    }
    return NULL;
}

static void up_start(void)
{
    struct sockaddr_in sa = {0};
    socklen_t sl = sizeof(sa);
    int one = 1;

    memset(&up, 0, sizeof(up));
    pthread_mutex_init(&up.mu, NULL);
    up.lfd = socket(AF_INET, SOCK_STREAM, 0);
    setsockopt(up.lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(up.lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(listen(up.lfd, 64), 0);
    getsockname(up.lfd, (struct sockaddr *)&sa, &sl);
    up.port = ntohs(sa.sin_port);
    pthread_create(&up.th, NULL, up_main, NULL);
}

static void up_stop(void)
{
    atomic_store(&up.stop, true);
    pthread_join(up.th, NULL);
    close(up.lfd);
}

static void up_script(int slow_us, bool refuse, bool no_100)
{
    atomic_store(&up.slow_us, slow_us);
    atomic_store(&up.refuse, refuse);
    atomic_store(&up.no_100, no_100);
}

static int wait_count(atomic_int *v, int n, int ms)
{
    int64_t end = th_now_ms() + ms;

    while (atomic_load(v) < n && th_now_ms() < end)
        usleep(500);
    return atomic_load(v);
}

/* ---- the proxy app ----------------------------------------------------- */

static th_server srv;
static th_violations viol;

/* In front of the proxy: X-Deny answers 403 at once; X-Wait resumes the
 * chain from a timer after its value in ms (at least 30; the body waits
 * meanwhile). */
static void resume(latch_res *res, void *data)
{
    (void)data;
    latch_next(latch_res_req(res));
}

static int h_gate(latch_req *req, latch_res *res, void *data)
{
    (void)data;
    if (latch_req_header(req, "x-deny") != NULL)
        return latch_res_send_status(res, 403);
    if (latch_req_header(req, "x-wait") != NULL) {
        int ms = atoi(latch_req_header(req, "x-wait"));

        if (latch_set_timeout(res, ms > 30 ? (uint64_t)ms : 30, resume, NULL) ==
            NULL)
            return latch_fail(req, 500, "no timer");
        return LATCH_PENDING;
    }
    return LATCH_NEXT;
}

/* Limits for the next start() (0: latch's default). */
static uint64_t receive_ms, min_rate, grace_ms;

/* POST /buffered: a body latch buffers, answered with its length. */
static int h_buffered(latch_req *req, latch_res *res, void *data)
{
    size_t len = 0;
    char out[32];

    (void)data;
    latch_req_body(req, NULL, &len);
    snprintf(out, sizeof(out), "%zu", len);
    latch_res_send(res, out, strlen(out));
    return LATCH_DONE;
}

static void start(void)
{
    latch_app *app = latch_app_new();
    char url[64];

    if (receive_ms > 0)
        assert_int_equal(
            latch_app_set_limit(app, LATCH_TIMEOUT_RECEIVE, receive_ms), 0);
    if (min_rate > 0)
        assert_int_equal(
            latch_app_set_limit(app, LATCH_LIMIT_MIN_RATE, min_rate), 0);
    if (grace_ms > 0)
        assert_int_equal(
            latch_app_set_limit(app, LATCH_TIMEOUT_RATE_GRACE, grace_ms), 0);
    receive_ms = min_rate = grace_ms = 0;

    snprintf(url, sizeof(url), "http://127.0.0.1:%d", up.port);
    th_record_violations(app, &viol);
    /* LATCH_LIMIT_BODY stays 1 MiB: the upload route allows more, and
     * one small route less. */
    assert_int_equal(
        latch_route_body_limit(app, NULL, "/up/small/*", 100 * 1000), 0);
    assert_int_equal(latch_route_body_limit(app, NULL, "/up/*", 256ull * MB),
                     0);
    latch_use(app, "/up", h_gate, NULL);
    assert_int_equal(latch_use_proxy(app, "/up", url, NULL), 0);
    /* A prefix no rule names: LATCH_LIMIT_BODY (1 MiB) bounds what latch
     * buffers, and a body streamed to the proxy is never buffered. */
    assert_int_equal(latch_use_proxy(app, "/free", url, NULL), 0);
    latch_post(app, "/buffered", h_buffered, NULL);
    th_server_start(&srv, app);
    memset(&viol, 0, sizeof(viol));
    up_script(0, false, false);
    atomic_store(&up.accepts, 0);
    atomic_store(&up.closes, 0);
    atomic_store(&up.requests, 0);
}

static void stop(void)
{
    int64_t end;

    th_server_stop(&srv);
    /* The upstream (one connection at a time) counts the close of the
     * connection the server pooled before the next start() resets the
     * counts: a late count there would be the next test's. */
    end = th_now_ms() + 3000;
    while (atomic_load(&up.closes) < atomic_load(&up.accepts) &&
           th_now_ms() < end)
        usleep(500);
    assert_int_equal(th_violation_count(&viol), 0);
}

/* Sends n pattern bytes from offset `from` (as chunks of `chunk` bytes
 * when chunk > 0); returns their digest folded into h; tracks the
 * largest RSS seen in *peak (when not NULL). */
static uint64_t send_body(int fd, uint64_t from, uint64_t n, size_t chunk,
                          uint64_t h, uint64_t *peak)
{
    static unsigned char b[65536];
    uint64_t i = from, end = from + n;
    int k = 0;

    while (i < end) {
        size_t m = sizeof(b);
        char hx[32];

        if (chunk > 0 && m > chunk)
            m = chunk;
        if (m > end - i)
            m = (size_t)(end - i);
        for (size_t j = 0; j < m; j++)
            b[j] = pat(i + j);
        h = fnv(h, b, m);
        if (chunk > 0) {
            snprintf(hx, sizeof(hx), "%zx\r\n", m);
            th_send_str(fd, hx);
        }
        th_send(fd, b, m);
        if (chunk > 0)
            th_send_str(fd, "\r\n");
        i += m;
        if (peak != NULL && (++k & 15) == 0) {
            uint64_t r = th_rss();
            if (r > *peak)
                *peak = r;
        }
    }
    return h;
}

/* The upstream's answer, "<length> <digest>", checked. */
static void expect_digest(const char *reply, size_t len, uint64_t n, uint64_t h)
{
    th_resp *r = th_expect_responses(reply, len, 1, NULL);
    char want[64];

    snprintf(want, sizeof(want), "%llu %016llx", (unsigned long long)n,
             (unsigned long long)h);
    if (r[0].status != 200)
        fail_msg("expected 200 with %s, got:\n%s", want, reply);
    assert_string_equal(r[0].body, want);
    th_resp_free(r, 1);
    free(r);
}

/* One upload of n bytes (Content-Length, or chunked when chunk > 0) on a
 * fresh connection; returns the growth of RSS seen while it went. */
static uint64_t upload(const char *path, uint64_t n, size_t chunk)
{
    char head[256];
    uint64_t h, base = th_rss(), peak = base;
    size_t len, one = 1;
    int fd = th_connect(srv.port);
    char *reply;

    if (chunk > 0)
        snprintf(head, sizeof(head),
                 "POST %s HTTP/1.1\r\nHost: h\r\n"
                 "Transfer-Encoding: chunked\r\n\r\n",
                 path);
    else
        snprintf(head, sizeof(head),
                 "POST %s HTTP/1.1\r\nHost: h\r\nContent-Length: %llu\r\n\r\n",
                 path, (unsigned long long)n);
    th_send_str(fd, head);
    h = send_body(fd, 0, n, chunk, FNV_INIT, &peak);
    if (chunk > 0)
        th_send_str(fd, "0\r\n\r\n");
    reply = th_read(fd, &len, 60000, th_until_responses, &one);
    expect_digest(reply, len, n, h);
    free(reply);
    close(fd);
    return peak - base;
}

/* ---- tests ------------------------------------------------------------- */

/* 1 MB and 50 MB through the proxy, byte for byte; the 50 MB never sit in
 * memory (the bound allows the sanitizers' own growth). Buffered, the
 * second upload alone would add 50 MB. */
static void test_uploads_streamed(void **state)
{
    uint64_t grow;
    char *up_head;

    (void)state;
    start();
    grow = upload("/up/one", 1000 * 1000, 0);
    (void)grow;
    pthread_mutex_lock(&up.mu);
    up_head = strdup(up.last_head);
    pthread_mutex_unlock(&up.mu);
    assert_non_null(strstr(up_head, "POST /up/one HTTP/1.1\r\n"));
    assert_non_null(strstr(up_head, "\r\nContent-Length: 1000000\r\n"));
    assert_null(strcasestr(up_head, "transfer-encoding"));
    free(up_head);
    grow = upload("/up/fifty", 50ull * MB, 0);
    print_message("50 MB upload: RSS grew %llu KiB\n",
                  (unsigned long long)(grow / 1024));
    assert_true(grow < 16 * MB);
    /* The pooled upstream connection carried both. */
    assert_int_equal(atomic_load(&up.accepts), 1);
    stop();
}

/* A chunked upload goes upstream chunked (latch's own chunks). */
static void test_chunked_upload(void **state)
{
    char *up_head;

    (void)state;
    start();
    upload("/up/chunked", 3 * MB + 17, 10000);
    pthread_mutex_lock(&up.mu);
    up_head = strdup(up.last_head);
    pthread_mutex_unlock(&up.mu);
    assert_non_null(strstr(up_head, "\r\nTransfer-Encoding: chunked\r\n"));
    assert_null(strcasestr(up_head, "content-length"));
    free(up_head);
    stop();
}

/* An upstream that reads slowly holds the client back: 16 MB go through
 * it whole while latch holds little of them (an unbounded buffer, or one
 * past its cap, would show here). */
static void test_slow_upstream_reader(void **state)
{
    uint64_t grow;

    (void)state;
    start();
    up_script(1000, false, false); /* 16 KiB a millisecond at most */
    grow = upload("/up/slow", 16 * MB, 0);
    print_message("slow upstream: RSS grew %llu KiB\n",
                  (unsigned long long)(grow / 1024));
    assert_true(grow < 12 * MB);
    stop();
}

/* Expect: 100-continue goes upstream; its 100 reaches the client, which
 * sends its body only then. */
static void test_continue_relayed(void **state)
{
    static const char head[] = "PUT /up/c HTTP/1.1\r\nHost: h\r\n"
                               "Expect: 100-continue\r\n"
                               "Content-Length: 70000\r\n\r\n";
    size_t len, one = 1;
    char *reply, *up_head;
    uint64_t h;
    int fd;

    (void)state;
    start();
    fd = th_connect(srv.port);
    th_send_str(fd, head);
    reply = th_read(fd, &len, 5000, th_until_substr, "\r\n\r\n");
    assert_string_equal(reply, "HTTP/1.1 100 Continue\r\n\r\n");
    free(reply);
    pthread_mutex_lock(&up.mu);
    up_head = strdup(up.last_head);
    pthread_mutex_unlock(&up.mu);
    assert_non_null(strstr(up_head, "\r\nExpect: 100-continue\r\n"));
    free(up_head);
    h = send_body(fd, 0, 70000, 0, FNV_INIT, NULL);
    reply = th_read(fd, &len, 5000, th_until_responses, &one);
    expect_digest(reply, len, 70000, h);
    free(reply);
    /* The connection serves on. */
    th_send_str(fd, "GET /up/after HTTP/1.1\r\nHost: h\r\n\r\n");
    reply = th_read(fd, &len, 5000, th_until_responses, &one);
    expect_digest(reply, len, 0, FNV_INIT);
    free(reply);
    close(fd);
    stop();
}

/* An upstream that refuses the body: the client gets its answer, never a
 * 100 (latch sends none of its own), and the connection closes. */
static void test_continue_refused(void **state)
{
    static const char head[] = "PUT /up/r HTTP/1.1\r\nHost: h\r\n"
                               "Expect: 100-continue\r\n"
                               "Content-Length: 5000000\r\n\r\n";
    size_t len;
    char *reply;
    th_resp *r;
    int fd;

    (void)state;
    start();
    up_script(0, true, false);
    fd = th_connect(srv.port);
    th_send_str(fd, head);
    reply = th_read(fd, &len, 5000, NULL, NULL);
    assert_int_equal(th_last_end(), TH_EOF);
    assert_memory_equal(reply, "HTTP/1.1 401 ", 13);
    r = th_expect_responses(reply, len, 1, NULL);
    assert_int_equal(r[0].status, 401);
    assert_string_equal(r[0].body, "refuse");
    assert_non_null(strstr(r[0].head, "\r\nConnection: close\r\n"));
    th_resp_free(r, 1);
    free(r);
    free(reply);
    close(fd);
    stop();
}

/* Body limits hold for streamed bodies: a Content-Length above the
 * route's limit is a 413 before anything goes upstream; a chunked body
 * that grows past it is cut there with a 413, and its upstream request
 * is abandoned (that connection closed). */
static void test_body_limits(void **state)
{
    char *reply;
    size_t len;
    th_resp *r;
    int fd;

    (void)state;
    start();
    {
        static const char big[] = "POST /up/small/x HTTP/1.1\r\nHost: h\r\n"
                                  "Content-Length: 100001\r\n\r\n";
        th_expect_error_close(srv.port, big, sizeof(big) - 1, 413,
                              "Payload Too Large");
    }
    assert_int_equal(atomic_load(&up.requests), 0);
    fd = th_connect(srv.port);
    th_send_str(fd, "POST /up/small/y HTTP/1.1\r\nHost: h\r\n"
                    "Transfer-Encoding: chunked\r\n\r\n");
    send_body(fd, 0, 150000, 1000, FNV_INIT, NULL);
    reply = th_read(fd, &len, 5000, NULL, NULL);
    r = th_expect_responses(reply, len, 1, NULL);
    assert_int_equal(r[0].status, 413);
    assert_non_null(strstr(r[0].head, "\r\nConnection: close\r\n"));
    th_resp_free(r, 1);
    free(r);
    free(reply);
    close(fd);
    assert_int_equal(wait_count(&up.requests, 1, 3000), 1);
    assert_int_equal(wait_count(&up.closes, 1, 3000), 1);
    /* The server goes on. */
    upload("/up/fine", 1000, 0);
    stop();
}

/* Under a proxy prefix that no latch_route_body_limit rule names, a body
 * larger than LATCH_LIMIT_BODY goes through whole, by Content-Length and
 * chunked (DESIGN.md: the app's limit bounds what latch buffers, and a
 * proxied body is streamed); a body latch buffers is still held to it. */
static void test_app_limit_is_for_buffered_bodies(void **state)
{
    (void)state;
    start();
    upload("/free/big", 5 * MB + 3, 0);
    upload("/free/chunked", 3 * MB + 5, 10000);
    {
        static const char big[] = "POST /buffered HTTP/1.1\r\nHost: h\r\n"
                                  "Content-Length: 1048577\r\n\r\n";
        th_expect_error_close(srv.port, big, sizeof(big) - 1, 413,
                              "Payload Too Large");
    }
    assert_int_equal(atomic_load(&up.requests), 2);
    stop();
}

/* The client leaves half way through its upload: the upstream sees its
 * connection closed (the request abandoned, never pooled). */
static void test_client_leaves_mid_upload(void **state)
{
    int fd;

    (void)state;
    start();
    fd = th_connect(srv.port);
    th_send_str(fd, "POST /up/gone HTTP/1.1\r\nHost: h\r\n"
                    "Content-Length: 10000000\r\n\r\n");
    send_body(fd, 0, MB, 0, FNV_INIT, NULL);
    {
        int64_t end = th_now_ms() + 5000;
        while (atomic_load(&up.got) < 100000 && th_now_ms() < end)
            usleep(500);
    }
    assert_true(atomic_load(&up.got) >= 100000);
    assert_int_equal(atomic_load(&up.closes), 0);
    th_close_reset(fd);
    assert_int_equal(wait_count(&up.closes, 1, 3000), 1);
    upload("/up/next", 1000, 0);
    assert_int_equal(atomic_load(&up.accepts), 2);
    stop();
}

/* Middleware in front of the proxy: one that answers at once (the body
 * it did not want is dropped, the connection closes after the answer),
 * one that waits (the body waits with it, then streams). */
static void test_middleware_in_front(void **state)
{
    char head[256], *reply;
    size_t len, one = 1;
    th_resp *r;
    uint64_t h;
    int fd;

    (void)state;
    start();
    fd = th_connect(srv.port);
    th_send_str(fd, "POST /up/deny HTTP/1.1\r\nHost: h\r\nX-Deny: 1\r\n"
                    "Content-Length: 300000\r\n\r\n");
    send_body(fd, 0, 300000, 0, FNV_INIT, NULL);
    reply = th_read(fd, &len, 5000, NULL, NULL);
    r = th_expect_responses(reply, len, 1, NULL);
    assert_int_equal(r[0].status, 403);
    assert_non_null(strstr(r[0].head, "\r\nConnection: close\r\n"));
    th_resp_free(r, 1);
    free(r);
    free(reply);
    close(fd);
    assert_int_equal(atomic_load(&up.requests), 0);

    fd = th_connect(srv.port);
    snprintf(head, sizeof(head),
             "POST /up/wait HTTP/1.1\r\nHost: h\r\nX-Wait: 1\r\n"
             "Content-Length: %u\r\n\r\n",
             2 * MB);
    th_send_str(fd, head);
    h = send_body(fd, 0, 2 * MB, 0, FNV_INIT, NULL);
    reply = th_read(fd, &len, 10000, th_until_responses, &one);
    expect_digest(reply, len, 2 * MB, h);
    free(reply);
    close(fd);
    stop();
}

/* Sends `head`, then `piece` pattern bytes every `every_ms` until the
 * server answers (or `ms` passed); returns what it sent until its close. */
static char *trickle(const char *head, size_t piece, int every_ms, int ms,
                     size_t *len)
{
    int fd = th_connect(srv.port);
    int64_t end = th_now_ms() + ms;
    char b[256];
    char *reply;

    memset(b, 'x', sizeof(b));
    th_send_str(fd, head);
    while (th_now_ms() < end) {
        struct pollfd pf = {fd, POLLIN, 0};

        if (poll(&pf, 1, every_ms) > 0)
            break;
        if (send(fd, b, piece, MSG_NOSIGNAL) < 0)
            break;
    }
    reply = th_read(fd, len, 5000, NULL, NULL);
    close(fd);
    return reply;
}

/* The answer a streamed body that came too slowly gets: 408, then the
 * close; its upstream request was abandoned (that connection closed). */
static void expect_408(char *reply, size_t len)
{
    th_resp *r = th_expect_responses(reply, len, 1, NULL);

    assert_int_equal(r[0].status, 408);
    assert_non_null(strstr(r[0].head, "\r\nConnection: close\r\n"));
    assert_int_equal(th_last_end(), TH_EOF);
    th_resp_free(r, 1);
    free(r);
    free(reply);
    assert_int_equal(wait_count(&up.requests, 1, 3000), 1);
    assert_int_equal(wait_count(&up.closes, 1, 3000), 1);
}

/*
 * A streamed body is held to LATCH_TIMEOUT_RECEIVE and LATCH_LIMIT_MIN_RATE
 * as a buffered one is (they used to stop at its head): a body that
 * trickles in, each piece well within the body timeout, gets 408 once the
 * request took longer than the receive timeout, or once it arrives below
 * the minimum rate after the grace period; its upstream request is
 * abandoned. The server goes on.
 */
static void test_streamed_body_deadlines(void **state)
{
    static const char head[] = "POST /up/trickle HTTP/1.1\r\nHost: h\r\n"
                               "Content-Length: 1000000\r\n\r\n";
    char *reply;
    size_t len;

    (void)state;
    receive_ms = 400;
    start();
    reply = trickle(head, 100, 20, 5000, &len); /* 5 KB/s */
    expect_408(reply, len);
    upload("/up/fine", 1000, 0);
    stop();

    min_rate = 4000;
    grace_ms = 200;
    start();
    reply = trickle(head, 20, 20, 5000, &len); /* 1 KB/s */
    expect_408(reply, len);
    upload("/up/fine", 1000, 0);
    stop();
}

/*
 * The time a streamed body waits for latch's side (here a middleware that
 * holds the request 600 ms before the proxy takes its body; likewise an
 * upstream that reads slowly, or the request's turn behind the responses
 * before it) is not the client's: with a receive timeout of 300 ms, a
 * 2 MB body sent at once still goes through whole.
 */
static void test_streamed_wait_not_counted(void **state)
{
    char head[256], *reply;
    size_t len, one = 1;
    uint64_t h;
    int fd;

    (void)state;
    receive_ms = 300;
    start();
    fd = th_connect(srv.port);
    snprintf(head, sizeof(head),
             "POST /up/held HTTP/1.1\r\nHost: h\r\nX-Wait: 600\r\n"
             "Content-Length: %u\r\n\r\n",
             2 * MB);
    th_send_str(fd, head);
    h = send_body(fd, 0, 2 * MB, 0, FNV_INIT, NULL);
    reply = th_read(fd, &len, 10000, th_until_responses, &one);
    expect_digest(reply, len, 2 * MB, h);
    free(reply);
    close(fd);
    stop();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_uploads_streamed),
        cmocka_unit_test(test_chunked_upload),
        cmocka_unit_test(test_slow_upstream_reader),
        cmocka_unit_test(test_continue_relayed),
        cmocka_unit_test(test_continue_refused),
        cmocka_unit_test(test_body_limits),
        cmocka_unit_test(test_app_limit_is_for_buffered_bodies),
        cmocka_unit_test(test_client_leaves_mid_upload),
        cmocka_unit_test(test_middleware_in_front),
        cmocka_unit_test(test_streamed_body_deadlines),
        cmocka_unit_test(test_streamed_wait_not_counted),
    };
    int r;

    up_start();
    r = cmocka_run_group_tests(tests, NULL, NULL);
    up_stop();
    return r;
}
