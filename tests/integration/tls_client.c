/*
 * tls_client.c - TLS for the integration tests (harness.h): certificates
 * made with the openssl command at test time, a blocking OpenSSL client,
 * and the harness's TLS mode (LATCH_TEST_TLS=1), in which th_server_start
 * listens with latch_listen_tls and th_connect hands the test a plain
 * TCP socket whose bytes a relay thread carries over TLS to the server:
 * every raw-socket test then runs unchanged over TLS. The relay keeps the
 * test's view of the connection: a FIN stays a FIN (close_notify and a
 * TCP shutdown toward the server), a reset stays a reset.
 */
#include "harness.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
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

static pthread_once_t dir_once = PTHREAD_ONCE_INIT;
static char dir_path[64];

static void rm_dir(void)
{
    char cmd[128];

    if (dir_path[0] != '\0') {
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir_path);
        if (system(cmd) != 0)
            fprintf(stderr, "tls_client: cannot remove %s\n", dir_path);
    }
}

static void make_dir(void)
{
    snprintf(dir_path, sizeof(dir_path), "/tmp/latch-tls-XXXXXX");
    if (mkdtemp(dir_path) == NULL) {
        dir_path[0] = '\0';
        return;
    }
    atexit(rm_dir);
}

const char *th_tls_dir(void)
{
    pthread_once(&dir_once, make_dir);
    assert_true(dir_path[0] != '\0');
    return dir_path;
}

void th_tls_make_cert(const char *name, const char *kind, const char *cn)
{
    char cmd[1024];
    const char *dir = th_tls_dir();

    snprintf(cmd, sizeof(cmd),
             "openssl req -x509 -newkey %s -nodes -days 2 -subj /CN=%s "
             "-addext subjectAltName=DNS:localhost,IP:127.0.0.1 "
             "-keyout '%s/%s.key' -out '%s/%s.crt' >/dev/null 2>&1",
             strcmp(kind, "rsa") == 0 ? "rsa:2048"
                                      : "ec -pkeyopt ec_paramgen_curve:P-256",
             cn, dir, name, dir, name);
    assert_int_equal(system(cmd), 0);
}

void th_tls_make_server_cert(void)
{
    th_tls_make_cert("server", "ec", "latch-test");
}

void th_tls_path(char *out, size_t cap, const char *name, const char *ext)
{
    snprintf(out, cap, "%s/%s.%s", th_tls_dir(), name, ext);
}

bool th_tls_mode(void)
{
    const char *e = getenv("LATCH_TEST_TLS");

    return e != NULL && strcmp(e, "1") == 0;
}

/* After an SSL_read that returned k <= 0 with error e: the peer's TCP FIN
 * without close_notify (OpenSSL 3 reports it as an error of its own). */
static bool plain_eof(int e, int k)
{
    unsigned long err = ERR_peek_error();

    if (e == SSL_ERROR_SYSCALL && k == 0 && err == 0)
        return true;
    return e == SSL_ERROR_SSL &&
           ERR_GET_REASON(err) == SSL_R_UNEXPECTED_EOF_WHILE_READING;
}

int th_tls_connect(th_tls *t, int port, const th_tls_opts *o)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    SSL *ssl;
    char ca[512];
    int r;

    memset(t, 0, sizeof(*t));
    assert_non_null(ctx);
    th_tls_path(ca, sizeof(ca), o != NULL && o->ca ? o->ca : "server", "crt");
    assert_int_equal(SSL_CTX_load_verify_locations(ctx, ca, NULL), 1);
    SSL_CTX_set_verify(
        ctx, o != NULL && o->no_verify ? SSL_VERIFY_NONE : SSL_VERIFY_PEER,
        NULL);
    if (o != NULL && o->min_version)
        SSL_CTX_set_min_proto_version(ctx, o->min_version);
    if (o != NULL && o->max_version)
        SSL_CTX_set_max_proto_version(ctx, o->max_version);
    /* Records that carry no data (tickets) must not block a read. */
    SSL_CTX_clear_mode(ctx, SSL_MODE_AUTO_RETRY);
    ssl = SSL_new(ctx);
    assert_non_null(ssl);
    if (o != NULL && o->alpn != NULL)
        SSL_set_alpn_protos(ssl, (const unsigned char *)o->alpn,
                            (unsigned)strlen(o->alpn));
    if (o != NULL && o->session != NULL)
        SSL_set_session(ssl, o->session);
    SSL_set_tlsext_host_name(ssl, "localhost");
    SSL_set1_host(ssl, "localhost");
    t->fd = th_tcp_connect(port);
    SSL_set_fd(ssl, t->fd);
    t->ssl = ssl;
    t->ctx = ctx;
    ERR_clear_error();
    r = SSL_connect(ssl);
    return r == 1 ? 0 : -1;
}

void th_tls_send(th_tls *t, const char *s)
{
    size_t len = strlen(s);

    while (len > 0) {
        int n = SSL_write(t->ssl, s, (int)len);
        assert_true(n > 0);
        s += n;
        len -= (size_t)n;
    }
}

char *th_tls_read(th_tls *t, size_t *lenp, int timeout_ms, th_until until,
                  void *arg, int *end)
{
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap + 1);
    int64_t deadline = th_now_ms() + timeout_ms;

    assert_non_null(buf);
    *end = TH_OPEN;
    for (;;) {
        struct pollfd p = {t->fd, POLLIN, 0};
        int64_t left = deadline - th_now_ms();
        int n, e;

        buf[len] = '\0';
        if (until != NULL && until(buf, len, arg))
            break;
        if (SSL_pending(t->ssl) == 0) {
            if (left <= 0)
                break;
            if (poll(&p, 1, (int)left) <= 0)
                continue;
        }
        if (len == cap) {
            cap *= 2;
            buf = realloc(buf, cap + 1);
            assert_non_null(buf);
        }
        ERR_clear_error();
        n = SSL_read(t->ssl, buf + len, (int)(cap - len));
        if (n > 0) {
            len += (size_t)n;
            continue;
        }
        e = SSL_get_error(t->ssl, n);
        if (e == SSL_ERROR_WANT_READ)
            continue;
        if (e == SSL_ERROR_ZERO_RETURN)
            *end = TH_CLOSE_NOTIFY;
        else if (plain_eof(e, n))
            *end = TH_EOF;
        else
            *end = TH_RESET;
        break;
    }
    buf[len] = '\0';
    *lenp = len;
    return buf;
}

void th_tls_close(th_tls *t)
{
    if (t->ssl != NULL)
        SSL_free(t->ssl);
    if (t->ctx != NULL)
        SSL_CTX_free(t->ctx);
    if (t->fd > 0)
        close(t->fd);
    memset(t, 0, sizeof(*t));
}

/* ---- the relay of the harness's TLS mode ---- */

static pthread_mutex_t relay_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t relay_cv = PTHREAD_COND_INITIALIZER;
static int relays;       /* running */
static bool relays_stop; /* th_server_stop: the server is gone */

typedef struct relay {
    int app; /* the test's socket's peer */
    th_tls tls;
} relay;

static bool write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t k = send(fd, p, n, MSG_NOSIGNAL);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return false;
        p += k;
        n -= (size_t)k;
    }
    return true;
}

static void reset_close(int fd)
{
    struct linger lg = {1, 0};

    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    close(fd);
}

static void *relay_main(void *arg)
{
    relay *r = arg;
    SSL *ssl = r->tls.ssl;
    char buf[16384];
    bool app_open = true, net_open = true;

    while (app_open || net_open) {
        /* A side that is done is left out (its POLLHUP would spin). */
        struct pollfd p[2] = {{app_open ? r->app : -1, POLLIN, 0},
                              {net_open ? r->tls.fd : -1, POLLIN, 0}};
        int n;
        bool stop;

        pthread_mutex_lock(&relay_mu);
        stop = relays_stop;
        pthread_mutex_unlock(&relay_mu);
        if (stop && !net_open)
            break; /* the server is gone and the test keeps its socket */

        if (net_open && SSL_pending(ssl) > 0) {
            p[1].revents = POLLIN;
            n = 1;
        } else {
            n = poll(p, 2, 100);
        }
        if (n <= 0)
            continue;
        if (p[0].revents & (POLLIN | POLLHUP | POLLERR)) {
            ssize_t k = recv(r->app, buf, sizeof(buf), 0);
            if (k > 0) {
                if (SSL_write(ssl, buf, (int)k) <= 0)
                    app_open = false; /* the server is gone */
            } else if (k == 0) {
                /* The test's FIN: close_notify and a FIN to the server. */
                SSL_shutdown(ssl);
                shutdown(r->tls.fd, SHUT_WR);
                app_open = false;
            } else if (errno != EINTR && errno != EAGAIN) {
                reset_close(r->tls.fd); /* the test's reset, passed on */
                r->tls.fd = -1;
                break;
            }
        }
        if (net_open && (p[1].revents & (POLLIN | POLLHUP | POLLERR))) {
            int k, e;
            ERR_clear_error();
            k = SSL_read(ssl, buf, sizeof(buf));
            if (k > 0) {
                if (!write_all(r->app, buf, (size_t)k)) {
                    reset_close(r->tls.fd);
                    r->tls.fd = -1;
                    break;
                }
                continue;
            }
            e = SSL_get_error(ssl, k);
            if (e == SSL_ERROR_WANT_READ)
                continue;
            if (e == SSL_ERROR_ZERO_RETURN || plain_eof(e, k)) {
                shutdown(r->app, SHUT_WR); /* the server's FIN */
                net_open = false;
                continue;
            }
            /* A reset (or a TLS failure): the test sees a reset. */
            reset_close(r->app);
            r->app = -1;
            break;
        }
    }
    if (r->app >= 0)
        close(r->app);
    if (r->tls.fd < 0)
        r->tls.fd = 0; /* closed already */
    th_tls_close(&r->tls);
    free(r);
    /* This thread's OpenSSL state (its error queue, 904 bytes) goes now:
     * left to the thread-exit destructor, it raced with the process's
     * exit once th_tls_relays_end had seen the count drop, and a thread
     * that ended after OPENSSL_cleanup removed the destructor's key left
     * it behind (LeakSanitizer's intermittent libcrypto leak). */
    OPENSSL_thread_stop();
    pthread_mutex_lock(&relay_mu);
    relays--;
    pthread_cond_broadcast(&relay_cv);
    pthread_mutex_unlock(&relay_mu);
    return NULL;
}

/* A connected pair of loopback TCP sockets: a reset on one is a reset on
 * the other, as the test expects of its socket. */
static void tcp_pair(int *a, int *b)
{
    struct sockaddr_in sa;
    socklen_t len = sizeof(sa);
    int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;

    assert_true(l >= 0);
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(l, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(listen(l, 1), 0);
    assert_int_equal(getsockname(l, (struct sockaddr *)&sa, &len), 0);
    *a = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_int_equal(connect(*a, (struct sockaddr *)&sa, sizeof(sa)), 0);
    *b = accept(l, NULL, NULL);
    assert_true(*b >= 0);
    close(l);
    setsockopt(*a, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    setsockopt(*b, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

int th_tls_relay_connect(int port)
{
    relay *r = calloc(1, sizeof(*r));
    pthread_t tid;
    int mine;

    assert_non_null(r);
    if (th_tls_connect(&r->tls, port, NULL) != 0) {
        th_tls_close(&r->tls);
        free(r);
        return -1;
    }
    tcp_pair(&mine, &r->app);
    pthread_mutex_lock(&relay_mu);
    relays++;
    relays_stop = false;
    pthread_mutex_unlock(&relay_mu);
    assert_int_equal(pthread_create(&tid, NULL, relay_main, r), 0);
    pthread_detach(tid);
    return mine;
}

void th_tls_relays_end(void)
{
    int64_t deadline = th_now_ms() + 10000;

    pthread_mutex_lock(&relay_mu);
    relays_stop = true;
    while (relays > 0 && th_now_ms() < deadline) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 50 * 1000000;
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        pthread_cond_timedwait(&relay_cv, &relay_mu, &ts);
    }
    pthread_mutex_unlock(&relay_mu);
}
