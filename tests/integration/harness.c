/*
 * harness.c - the in-process server, the raw-socket client and the
 * violation recorder used by every integration test (see harness.h).
 */
#include "harness.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

static void *server_main(void *arg)
{
    th_server *s = arg;

    s->run_result = latch_run(s->app);
    return NULL;
}

void th_server_start(th_server *s, latch_app *app)
{
    pthread_t *t = malloc(sizeof(*t));

    assert_non_null(t);
    memset(s, 0, sizeof(*s));
    s->app = app;
    assert_int_equal(latch_app_set_workers(app, 1), 0);
    assert_int_equal(latch_app_set_handle_signals(app, false), 0);
    if (th_tls_mode()) {
        /* TLS mode: the same tests, over HTTPS (tls_client.c). */
        static pthread_once_t once = PTHREAD_ONCE_INIT;
        char crt[512], key[512];
        pthread_once(&once, th_tls_make_server_cert);
        th_tls_path(crt, sizeof(crt), "server", "crt");
        th_tls_path(key, sizeof(key), "server", "key");
        assert_int_equal(latch_listen_tls(app, "127.0.0.1", 0, crt, key), 0);
    } else {
        assert_int_equal(latch_listen(app, "127.0.0.1", 0), 0);
    }
    s->port = latch_app_port(app);
    assert_true(s->port > 0);
    assert_int_equal(pthread_create(t, NULL, server_main, s), 0);
    s->thread = t;
}

int th_server_stop(th_server *s)
{
    pthread_t *t = s->thread;

    latch_stop(s->app);
    pthread_join(*t, NULL);
    free(t);
    if (th_tls_mode())
        th_tls_relays_end();
    latch_app_free(s->app);
    s->app = NULL;
    return s->run_result;
}

int th_connect(int port)
{
    if (th_tls_mode()) {
        int fd = th_tls_relay_connect(port);
        assert_true(fd >= 0);
        return fd;
    }
    return th_tcp_connect(port);
}

int th_free_port(void)
{
    struct sockaddr_in sa = {.sin_family = AF_INET};
    socklen_t sl = sizeof(sa);
    int fd = socket(AF_INET, SOCK_STREAM, 0), port;

    assert_true(fd >= 0);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &sl), 0);
    port = ntohs(sa.sin_port);
    close(fd);
    return port;
}

int th_tcp_connect(int port)
{
    struct sockaddr_in sa;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;

    assert_true(fd >= 0);
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return fd;
}

void th_send(int fd, const void *data, size_t len)
{
    const char *p = data;

    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        assert_true(n > 0);
        p += n;
        len -= (size_t)n;
    }
}

void th_send_str(int fd, const char *s)
{
    th_send(fd, s, strlen(s));
}

static _Thread_local int last_end;

int th_last_end(void)
{
    return last_end;
}

static int64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

char *th_read(int fd, size_t *lenp, int timeout_ms, th_until until, void *arg)
{
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap + 1);
    int64_t deadline = now_ms() + timeout_ms;

    assert_non_null(buf);
    last_end = TH_OPEN;
    for (;;) {
        struct pollfd p = {fd, POLLIN, 0};
        int64_t left = deadline - now_ms();
        ssize_t n;

        buf[len] = '\0';
        if (until != NULL && until(buf, len, arg))
            break;
        if (left <= 0)
            break;
        if (poll(&p, 1, (int)left) <= 0)
            continue;
        if (len == cap) {
            cap *= 2;
            buf = realloc(buf, cap + 1);
            assert_non_null(buf);
        }
        n = recv(fd, buf + len, cap - len, 0);
        if (n == 0) {
            last_end = TH_EOF;
            break;
        }
        if (n < 0) {
            if (errno == EINTR || errno == EAGAIN)
                continue;
            last_end = TH_RESET;
            break;
        }
        len += (size_t)n;
    }
    buf[len] = '\0';
    *lenp = len;
    return buf;
}

bool th_until_responses(const char *buf, size_t len, void *n)
{
    th_resp r[64];
    const char *err;
    int want = *(int *)n;
    int got =
        th_wire_parse(buf, len, NULL, r, want < 64 ? want : 64, false, &err);

    if (got > 0)
        th_resp_free(r, got);
    return got >= want;
}

int th_wait_close(int fd, int timeout_ms)
{
    size_t len;
    char *b = th_read(fd, &len, timeout_ms, NULL, NULL);

    free(b);
    return last_end;
}

char *th_exchange(int port, const char *req, size_t reqlen, int nresp,
                  size_t *len)
{
    int fd = th_connect(port);
    char *out;

    th_send(fd, req, reqlen);
    out = th_read(fd, len, 5000, nresp > 0 ? th_until_responses : NULL, &nresp);
    close(fd);
    return out;
}

/* ---- violations ---- */

static pthread_mutex_t vmu = PTHREAD_MUTEX_INITIALIZER;

static void record(const latch_violation *v, void *data)
{
    th_violations *t = data;

    pthread_mutex_lock(&vmu);
    if (t->count < 64) {
        int i = t->count;
        t->codes[i] = v->code;
        snprintf(t->at_file[i], sizeof(t->at_file[i]), "%s",
                 v->at.file ? v->at.file : "");
        t->at_line[i] = v->at.line;
        snprintf(t->sealed_call[i], sizeof(t->sealed_call[i]), "%s",
                 v->sealed_call ? v->sealed_call : "");
        t->sealed_line[i] = v->sealed_at.line;
    }
    t->count++;
    pthread_mutex_unlock(&vmu);
}

void th_record_violations(latch_app *app, th_violations *v)
{
    memset(v, 0, sizeof(*v));
    latch_app_on_violation(app, record, v);
}

int th_violation_count(th_violations *v)
{
    int n;

    pthread_mutex_lock(&vmu);
    n = v->count;
    pthread_mutex_unlock(&vmu);
    return n;
}

/* ---- helpers added for the core tests ---- */

int64_t th_now_ms(void)
{
    return now_ms();
}

void th_wait_subscribers(latch_app *app, const char *channel, int n)
{
    int64_t end = now_ms() + 10000;

    while (latch_app_subscribers(app, channel) != n && now_ms() < end)
        usleep(1000);
    assert_int_equal(latch_app_subscribers(app, channel), n);
}

uint64_t th_rss(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    unsigned long long kb = 0;

    assert_non_null(f);
    while (fgets(line, sizeof(line), f) != NULL)
        if (sscanf(line, "VmRSS: %llu kB", &kb) == 1)
            break;
    fclose(f);
    assert_true(kb > 0);
    return (uint64_t)kb * 1024;
}

int th_try_connect(int port)
{
    struct sockaddr_in sa;
    int fd, one = 1, err;

    if (th_tls_mode()) {
        fd = th_tls_relay_connect(port);
        return fd >= 0 ? fd : -ECONNRESET;
    }
    fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    if (fd < 0)
        return -errno;
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        err = -errno;
        close(fd);
        return err;
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return fd;
}

void th_close_reset(int fd)
{
    struct linger l = {1, 0};

    setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
    close(fd);
}

bool th_until_bytes(const char *buf, size_t len, void *n)
{
    (void)buf;
    return len >= *(size_t *)n;
}

char *th_error_bytes(int status, const char *reason)
{
    size_t cap = 256 + 2 * strlen(reason);
    char *s = malloc(cap);

    assert_non_null(s);
    snprintf(s, cap,
             "HTTP/1.1 %d %s\r\n"
             "Content-Type: text/plain; charset=utf-8\r\n"
             "Content-Length: %zu\r\n"
             "Date: <d>\r\n"
             "Connection: close\r\n"
             "\r\n"
             "%s\n",
             status, reason, strlen(reason) + 1, reason);
    return s;
}

void th_expect_error_close(int port, const char *req, size_t len, int status,
                           const char *reason)
{
    int fd = th_connect(port);
    size_t n;
    char *out, *norm, *want = th_error_bytes(status, reason);
    th_resp *r;

    th_send(fd, req, len);
    out = th_read(fd, &n, 5000, NULL, NULL);
    if (last_end != TH_EOF)
        fail_msg("expected a FIN after the %d, got %s; read:\n%s", status,
                 last_end == TH_OPEN ? "nothing (still open)" : "a reset", out);
    r = th_expect_responses(out, n, 1, NULL);
    if (r[0].status != status)
        fail_msg("expected a %d, got:\n%s", status, out);
    norm = th_normalize(out, n);
    assert_string_equal(norm, want);
    th_resp_free(r, 1);
    free(r);
    free(norm);
    free(want);
    free(out);
    close(fd);
}

void th_expect_alive(int port, const char *path, const char *body)
{
    char req[512];
    size_t n;
    char *out;
    th_resp *r;
    int len =
        snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", path);

    assert_true(len > 0 && (size_t)len < sizeof(req));
    out = th_exchange(port, req, (size_t)len, 1, &n);
    r = th_expect_responses(out, n, 1, NULL);
    assert_int_equal(r[0].status, 200);
    assert_string_equal(r[0].body, body);
    th_resp_free(r, 1);
    free(r);
    free(out);
}

/* ---- helpers added for the response tests ---- */

static pthread_mutex_t vlog_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t vlog_cv = PTHREAD_COND_INITIALIZER;

static void copy_str(char *dst, size_t cap, const char *s)
{
    snprintf(dst, cap, "%s", s ? s : "");
}

static void record_full(const latch_violation *v, void *data)
{
    th_vlog *log = data;

    pthread_mutex_lock(&vlog_mu);
    if (log->count < TH_VLOG_MAX) {
        th_vrec *r = &log->rec[log->count];
        memset(r, 0, sizeof(*r));
        r->code = v->code;
        copy_str(r->name, sizeof(r->name), v->name);
        copy_str(r->message, sizeof(r->message), v->message);
        copy_str(r->call, sizeof(r->call), v->call);
        copy_str(r->at_file, sizeof(r->at_file), v->at.file);
        r->at_line = v->at.line;
        copy_str(r->at_func, sizeof(r->at_func), v->at.func);
        copy_str(r->sealed_call, sizeof(r->sealed_call), v->sealed_call);
        r->sealed_call_null = v->sealed_call == NULL;
        copy_str(r->sealed_file, sizeof(r->sealed_file), v->sealed_at.file);
        r->sealed_file_null = v->sealed_at.file == NULL;
        r->sealed_line = v->sealed_at.line;
        r->request_id = v->request_id;
        copy_str(r->method, sizeof(r->method), v->method);
        copy_str(r->path, sizeof(r->path), v->path);
    }
    log->count++;
    pthread_cond_broadcast(&vlog_cv);
    pthread_mutex_unlock(&vlog_mu);
}

void th_record_violations_full(latch_app *app, th_vlog *log)
{
    pthread_mutex_lock(&vlog_mu);
    memset(log, 0, sizeof(*log));
    pthread_mutex_unlock(&vlog_mu);
    assert_int_equal(latch_app_on_violation(app, record_full, log), 0);
}

int th_vlog_count(th_vlog *log)
{
    int n;

    pthread_mutex_lock(&vlog_mu);
    n = log->count;
    pthread_mutex_unlock(&vlog_mu);
    return n;
}

bool th_vlog_get(th_vlog *log, int i, th_vrec *out)
{
    bool ok;

    pthread_mutex_lock(&vlog_mu);
    ok = i >= 0 && i < log->count && i < TH_VLOG_MAX;
    if (ok)
        *out = log->rec[i];
    pthread_mutex_unlock(&vlog_mu);
    return ok;
}

int th_vlog_wait(th_vlog *log, int n, int timeout_ms)
{
    struct timespec ts;
    int got;

    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += timeout_ms / 1000;
    ts.tv_nsec += (long)(timeout_ms % 1000) * 1000000;
    if (ts.tv_nsec >= 1000000000) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000;
    }
    pthread_mutex_lock(&vlog_mu);
    while (log->count < n)
        if (pthread_cond_timedwait(&vlog_cv, &vlog_mu, &ts) != 0)
            break;
    got = log->count;
    pthread_mutex_unlock(&vlog_mu);
    return got;
}

bool th_until_substr(const char *buf, size_t len, void *needle)
{
    (void)len;
    return strstr(buf, needle) != NULL;
}

/* The length of the response th_wire_parse just accepted at buf. */
static size_t response_length(const char *buf, size_t len, const th_resp *r)
{
    const char *end = buf + len, *p;
    const char *head_end = NULL;

    for (p = buf; p + 3 < end; p++)
        if (p[0] == '\r' && p[1] == '\n' && p[2] == '\r' && p[3] == '\n') {
            head_end = p + 4;
            break;
        }
    if (head_end == NULL)
        return 0;
    if (r->close_delimited)
        return len;
    if (!r->chunked)
        return (size_t)(head_end - buf) + r->body_len;
    /* Walk the chunks (already validated): size line, data, CRLF; the
     * last chunk is "0\r\n\r\n" (no trailers are accepted). */
    p = head_end;
    for (;;) {
        char *e;
        unsigned long long sz = strtoull(p, &e, 16);
        p = e + 2;
        if (sz == 0)
            return (size_t)(p + 2 - buf);
        p += sz + 2;
    }
}

int th_wire_take(const char *buf, size_t len, const char *method, th_resp *out,
                 size_t *used, const char **err)
{
    const char *methods[1] = {method};
    int n;

    *used = 0;
    n = th_wire_parse(buf, len, method ? methods : NULL, out, 1, false, err);
    if (n <= 0)
        return n;
    *used = response_length(buf, len, out);
    if (*used == 0 || *used > len) {
        th_resp_free(out, 1);
        *err = "cannot measure the response";
        return -1;
    }
    return 1;
}
