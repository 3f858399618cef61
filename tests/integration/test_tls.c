/*
 * test_tls.c - HTTPS (issue 18): a plain and two TLS listeners on one app
 * (an ECDSA P-256 and an RSA 2048 certificate, made by the openssl
 * command at test time); libcurl and the curl command with --cacert, TLS
 * 1.2 and 1.3 forced; ALPN; latch_req_secure; session resumption; the
 * certificate re-read on SIGHUP and by latch_app_reload_tls while an old
 * connection goes on; close_notify sent and tolerated missing; plain HTTP,
 * garbage, half and oversized handshakes, the handshake timeout and
 * renegotiation, each leaving the server serving. The basic suites run
 * over TLS as well (LATCH_TEST_TLS=1, tests/integration/CMakeLists.txt).
 */
#include "harness.h"

#include <curl/curl.h>
#include <errno.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#if defined(__SANITIZE_ADDRESS__)
/* ASan keeps freed memory aside (256 MiB by default), so every allocation
 * of the flood would be new memory and the RSS bound would measure ASan;
 * 1 MiB still catches a use right after a free. */
const char *__asan_default_options(void);
const char *__asan_default_options(void)
{
    return "quarantine_size_mb=1:thread_local_quarantine_size_kb=64";
}
#endif

/* 10 MB and an odd tail, so the last record is a short one. */
#define BIG_SIZE ((size_t)10 * 1000 * 1000 + 7)

static char *big; /* BIG_SIZE bytes of a known pattern */

static int secure(latch_req *req, latch_res *res, void *data)
{
    (void)data;
    if (latch_req_secure(req))
        return latch_res_send(res, "secure", 6);
    return latch_res_send(res, "plain", 5);
}

static char big_path[512]; /* big, as a file */

/* A file body: over TLS it cannot go by sendfile(2), file.c reads and
 * tls.c encrypts. */
static int big_file(latch_req *req, latch_res *res, void *data)
{
    (void)req;
    (void)data;
    return latch_res_sendfile(res, big_path, NULL, NULL, NULL);
}

static int big_body(latch_req *req, latch_res *res, void *data)
{
    (void)req;
    (void)data;
    return latch_res_send(res, big, BIG_SIZE);
}

/* The app of most tests: listener 0 plain, 1 TLS (ECDSA "server"), 2 TLS
 * (RSA "rsa"). */
typedef struct srv3 {
    latch_app *app;
    pthread_t thread;
    int plain, ec, rsa;
    int rc;
} srv3;

static void *run_main(void *arg)
{
    srv3 *s = arg;

    s->rc = latch_run(s->app);
    return NULL;
}

static latch_app *new_app(void)
{
    latch_app *app = latch_app_new();

    assert_non_null(app);
    latch_get(app, "/secure", secure, NULL);
    latch_get(app, "/big", big_body, NULL);
    latch_get(app, "/file", big_file, NULL);
    assert_int_equal(latch_app_set_workers(app, 1), 0);
    return app;
}

static void srv_start(srv3 *s, latch_app *app, bool signals)
{
    char crt[512], key[512];

    memset(s, 0, sizeof(*s));
    s->app = app;
    assert_int_equal(latch_app_set_handle_signals(app, signals), 0);
    assert_int_equal(latch_listen(app, "127.0.0.1", 0), 0);
    th_tls_path(crt, sizeof(crt), "server", "crt");
    th_tls_path(key, sizeof(key), "server", "key");
    assert_int_equal(latch_listen_tls(app, "127.0.0.1", 0, crt, key), 0);
    th_tls_path(crt, sizeof(crt), "rsa", "crt");
    th_tls_path(key, sizeof(key), "rsa", "key");
    assert_int_equal(latch_listen_tls(app, "127.0.0.1", 0, crt, key), 0);
    s->plain = latch_app_listener_port(app, 0);
    s->ec = latch_app_listener_port(app, 1);
    s->rsa = latch_app_listener_port(app, 2);
    assert_true(s->plain > 0 && s->ec > 0 && s->rsa > 0);
    assert_int_equal(latch_app_port(app), s->plain);
    assert_int_equal(latch_app_listener_port(app, 3), -1);
    assert_int_equal(pthread_create(&s->thread, NULL, run_main, s), 0);
}

static void srv_stop(srv3 *s)
{
    latch_stop(s->app);
    pthread_join(s->thread, NULL);
    assert_int_equal(s->rc, 0);
    latch_app_free(s->app);
}

static srv3 srv;

static int setup(void **state)
{
    (void)state;
    srv_start(&srv, new_app(), false);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    srv_stop(&srv);
    return 0;
}

/* One GET over TLS on a fresh connection: the body. */
static char *tls_get(int port, const char *path, const th_tls_opts *o,
                     th_tls *keep)
{
    th_tls t;
    char req[256];
    size_t len;
    int one = 1, end;
    char *out, *body;
    th_resp *r;

    assert_int_equal(th_tls_connect(&t, port, o), 0);
    snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", path);
    th_tls_send(&t, req);
    out = th_tls_read(&t, &len, 10000, th_until_responses, &one, &end);
    r = th_expect_responses(out, len, 1, NULL);
    assert_int_equal(r[0].status, 200);
    body = strdup(r[0].body);
    th_resp_free(r, 1);
    free(r);
    free(out);
    if (keep != NULL)
        *keep = t;
    else
        th_tls_close(&t);
    return body;
}

/* A GET over TLS on a fresh connection verified with the certificate
 * `ca` is answered: the server still serves. */
static void expect_tls_alive_ca(int port, const char *ca)
{
    th_tls_opts o = {0};
    char *b;

    o.ca = ca;
    b = tls_get(port, "/secure", &o, NULL);

    assert_string_equal(b, "secure");
    free(b);
}

static void expect_tls_alive(int port)
{
    expect_tls_alive_ca(port, port == srv.rsa ? "rsa" : "server");
}

/* ---- clients ---- */

typedef struct sink {
    char *p;
    size_t n, cap;
    CURL *curl;
    int tls_version;
    char cipher[64];
} sink;

static size_t sink_write(char *p, size_t sz, size_t n, void *arg)
{
    sink *s = arg;
    const struct curl_tlssessioninfo *info = NULL;

    /* The TLS object is valid during the transfer only. */
    if (s->tls_version == 0 &&
        curl_easy_getinfo(s->curl, CURLINFO_TLS_SSL_PTR, &info) == CURLE_OK &&
        info->backend == CURLSSLBACKEND_OPENSSL && info->internals != NULL) {
        s->tls_version = SSL_version(info->internals);
        snprintf(s->cipher, sizeof(s->cipher), "%s",
                 SSL_get_cipher_name(info->internals));
    }

    if (s->n + sz * n + 1 > s->cap) {
        /* Doubling: a copy per callback of 10 MB is slow under ASan. */
        size_t cap = s->cap ? s->cap : 4096;
        while (cap < s->n + sz * n + 1)
            cap *= 2;
        s->p = realloc(s->p, cap);
        assert_non_null(s->p);
        s->cap = cap;
    }
    memcpy(s->p + s->n, p, sz * n);
    s->n += sz * n;
    s->p[s->n] = '\0';
    return sz * n;
}

/* libcurl with the TLS version pinned (CURL_SSLVERSION_TLSv1_x), offering
 * h2 and http/1.1: the body, and what was negotiated. */
static void curl_get(int port, const char *ca, long version, const char *path,
                     sink *out, int *tls_version, const char **cipher,
                     long *http_version)
{
    CURL *c = curl_easy_init();
    char url[128], cafile[512];
    long code = 0;

    assert_non_null(c);
    out->curl = c;
    snprintf(url, sizeof(url), "https://localhost:%d%s", port, path);
    th_tls_path(cafile, sizeof(cafile), ca, "crt");
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CAINFO, cafile);
    curl_easy_setopt(c, CURLOPT_SSLVERSION, version | (version << 16));
    curl_easy_setopt(c, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, sink_write);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, out);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 20000L);
    assert_int_equal(curl_easy_perform(c), CURLE_OK);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
    assert_int_equal(code, 200);
    curl_easy_getinfo(c, CURLINFO_HTTP_VERSION, http_version);
    *tls_version = out->tls_version;
    *cipher = out->cipher;
    curl_easy_cleanup(c);
}

static void test_libcurl_tls12_and_13(void **state)
{
    static const struct {
        long curl_version;
        int version;
    } v[] = {{CURL_SSLVERSION_TLSv1_2, TLS1_2_VERSION},
             {CURL_SSLVERSION_TLSv1_3, TLS1_3_VERSION}};
    size_t i;

    (void)state;
    for (i = 0; i < 2; i++) {
        sink s = {0};
        int tv = 0;
        const char *cipher = NULL;
        long hv = 0;

        curl_get(srv.ec, "server", v[i].curl_version, "/secure", &s, &tv,
                 &cipher, &hv);
        assert_string_equal(s.p, "secure");
        assert_int_equal(tv, v[i].version);
        /* h2 was offered: ALPN chose HTTP/1.1. */
        assert_int_equal(hv, CURL_HTTP_VERSION_1_1);
        if (v[i].version == TLS1_2_VERSION)
            assert_non_null(strstr(cipher, "ECDHE-ECDSA"));
        free(s.p);

        memset(&s, 0, sizeof(s));
        curl_get(srv.rsa, "rsa", v[i].curl_version, "/secure", &s, &tv, &cipher,
                 &hv);
        assert_string_equal(s.p, "secure");
        assert_int_equal(tv, v[i].version);
        if (v[i].version == TLS1_2_VERSION)
            assert_non_null(strstr(cipher, "ECDHE-RSA"));
        free(s.p);
    }
}

/* 10 MB through the socket's back pressure, byte for byte: from memory,
 * and from a file (read by file.c and encrypted by tls.c, since
 * sendfile(2) would skip OpenSSL) over TLS 1.2 and 1.3. */
static void test_big_response(void **state)
{
    sink s = {0};
    int tv;
    const char *cipher;
    long hv;

    (void)state;
    curl_get(srv.ec, "server", CURL_SSLVERSION_TLSv1_3, "/big", &s, &tv,
             &cipher, &hv);
    assert_int_equal(s.n, BIG_SIZE);
    assert_memory_equal(s.p, big, BIG_SIZE);
    free(s.p);
    memset(&s, 0, sizeof(s));
    curl_get(srv.ec, "server", CURL_SSLVERSION_TLSv1_2, "/file", &s, &tv,
             &cipher, &hv);
    assert_int_equal(s.n, BIG_SIZE);
    assert_memory_equal(s.p, big, BIG_SIZE);
    free(s.p);
    memset(&s, 0, sizeof(s));
    curl_get(srv.rsa, "rsa", CURL_SSLVERSION_TLSv1_3, "/file", &s, &tv, &cipher,
             &hv);
    assert_int_equal(s.n, BIG_SIZE);
    assert_memory_equal(s.p, big, BIG_SIZE);
    free(s.p);
}

/* The curl command with --cacert, both versions forced. */
static void test_curl_command(void **state)
{
    static const char *flags[] = {"--tlsv1.2 --tls-max 1.2",
                                  "--tlsv1.3 --tls-max 1.3"};
    char cmd[1024], ca[512], out[512];
    size_t i;

    (void)state;
    th_tls_path(ca, sizeof(ca), "server", "crt");
    for (i = 0; i < 2; i++) {
        FILE *f;
        size_t n;

        snprintf(cmd, sizeof(cmd),
                 "curl -sS --max-time 20 %s --cacert '%s' "
                 "https://localhost:%d/secure http://127.0.0.1:%d/secure",
                 flags[i], ca, srv.ec, srv.plain);
        f = popen(cmd, "r");
        assert_non_null(f);
        n = fread(out, 1, sizeof(out) - 1, f);
        out[n] = '\0';
        assert_int_equal(pclose(f), 0);
        assert_string_equal(out, "secureplain");
    }
}

static void test_plain_and_tls_on_one_app(void **state)
{
    (void)state;
    th_expect_alive(srv.plain, "/secure", "plain");
    expect_tls_alive(srv.ec);
    expect_tls_alive(srv.rsa);
    th_expect_alive(srv.plain, "/secure", "plain");
}

static void test_alpn(void **state)
{
    th_tls t;
    th_tls_opts o = {0};
    const unsigned char *p;
    unsigned n;

    (void)state;
    o.alpn = "\x02h2\x08http/1.1";
    assert_int_equal(th_tls_connect(&t, srv.ec, &o), 0);
    SSL_get0_alpn_selected(t.ssl, &p, &n);
    assert_int_equal(n, 8);
    assert_memory_equal(p, "http/1.1", 8);
    th_tls_close(&t);
    /* No ALPN at all: fine, HTTP/1.1. */
    assert_int_equal(th_tls_connect(&t, srv.ec, NULL), 0);
    SSL_get0_alpn_selected(t.ssl, &p, &n);
    assert_int_equal(n, 0);
    th_tls_close(&t);
    /* Only protocols latch does not speak: RFC 7301's fatal alert. */
    o.alpn = "\x02h2";
    assert_int_equal(th_tls_connect(&t, srv.ec, &o), -1);
    th_tls_close(&t);
    expect_tls_alive(srv.ec);
}

/* Resumption with the ticket of a first connection, both versions. */
static void test_session_tickets(void **state)
{
    int v[] = {TLS1_2_VERSION, TLS1_3_VERSION};
    size_t i;

    (void)state;
    for (i = 0; i < 2; i++) {
        th_tls t;
        th_tls_opts o = {0};
        SSL_SESSION *sess;
        char *b;

        o.min_version = o.max_version = v[i];
        b = tls_get(srv.ec, "/secure", &o, &t); /* the ticket came first */
        free(b);
        assert_int_equal(SSL_session_reused(t.ssl), 0);
        sess = SSL_get1_session(t.ssl);
        assert_non_null(sess);
        assert_int_equal(SSL_SESSION_is_resumable(sess), 1);
        /* A clean close: OpenSSL drops a TLS 1.2 session otherwise. */
        SSL_shutdown(t.ssl);
        th_tls_close(&t);
        o.session = sess;
        b = tls_get(srv.ec, "/secure", &o, &t);
        assert_string_equal(b, "secure");
        free(b);
        if (SSL_session_reused(t.ssl) != 1)
            fail_msg("not resumed with TLS version %x", v[i]);
        th_tls_close(&t);
        SSL_SESSION_free(sess);
    }
}

/* Keep-alive and pipelining over one TLS connection, with reading paused
 * at the pipeline limit and resumed from plaintext already decrypted. */
static void test_pipelined_over_tls(void **state)
{
    latch_app *app = new_app();
    srv3 s;
    th_tls t;
    char req[64 * 40];
    size_t len = 0, n;
    int i, want = 40, end;
    char *out;
    th_resp *r;

    (void)state;
    assert_int_equal(latch_app_set_limit(app, LATCH_LIMIT_PIPELINE, 2), 0);
    srv_start(&s, app, false);
    for (i = 0; i < want; i++)
        len += (size_t)snprintf(req + len, sizeof(req) - len,
                                "GET /secure HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_int_equal(th_tls_connect(&t, s.ec, NULL), 0);
    th_tls_send(&t, req); /* one write: records the server reads at once */
    out = th_tls_read(&t, &n, 10000, th_until_responses, &want, &end);
    r = th_expect_responses(out, n, want, NULL);
    for (i = 0; i < want; i++)
        assert_string_equal(r[i].body, "secure");
    th_resp_free(r, want);
    free(r);
    free(out);
    th_tls_close(&t);
    srv_stop(&s);
}

/* X-Forwarded-Proto and Forwarded's proto= name the scheme the client
 * used: the TLS listener proxies to the plain one of the same app. */
static int show_proto(latch_req *req, latch_res *res, void *data)
{
    char out[512];
    const char *x = latch_req_header(req, "x-forwarded-proto");
    const char *f = latch_req_header(req, "forwarded");

    (void)data;
    snprintf(out, sizeof(out), "%s|%s", x ? x : "-", f ? f : "-");
    return latch_res_send(res, out, strlen(out));
}

static void test_forwarded_proto(void **state)
{
    latch_app *app = new_app();
    latch_proxy_opts po = {0};
    char url[64], *b;
    srv3 s;
    th_resp *r;
    size_t n;
    char *out;

    (void)state;
    latch_get(app, "/proto", show_proto, NULL);
    po.strip_prefix = "/via";
    /* The upstream is the plain listener: its port is known once bound. */
    assert_int_equal(latch_listen(app, "127.0.0.1", 0), 0);
    snprintf(url, sizeof(url), "http://127.0.0.1:%d",
             latch_app_listener_port(app, 0));
    assert_int_equal(latch_use_proxy(app, "/via", url, &po), 0);
    {
        char crt[512], key[512];
        th_tls_path(crt, sizeof(crt), "server", "crt");
        th_tls_path(key, sizeof(key), "server", "key");
        assert_int_equal(latch_listen_tls(app, "127.0.0.1", 0, crt, key), 0);
    }
    memset(&s, 0, sizeof(s));
    s.app = app;
    s.plain = latch_app_listener_port(app, 0);
    s.ec = latch_app_listener_port(app, 1);
    assert_int_equal(latch_app_set_handle_signals(app, false), 0);
    assert_int_equal(pthread_create(&s.thread, NULL, run_main, &s), 0);
    b = tls_get(s.ec, "/via/proto", NULL, NULL);
    assert_non_null(strstr(b, "https|"));
    assert_non_null(strstr(b, ";proto=https"));
    free(b);
    out = th_exchange(s.plain, "GET /via/proto HTTP/1.1\r\nHost: x\r\n\r\n", 36,
                      1, &n);
    r = th_expect_responses(out, n, 1, NULL);
    assert_non_null(strstr(r[0].body, "http|"));
    assert_null(strstr(r[0].body, "https"));
    th_resp_free(r, 1);
    free(r);
    free(out);
    srv_stop(&s);
}

/* ---- close_notify ---- */

static void test_close_notify_sent(void **state)
{
    th_tls t;
    size_t n;
    int end;
    char *out;

    (void)state;
    assert_int_equal(th_tls_connect(&t, srv.ec, NULL), 0);
    th_tls_send(&t,
                "GET /secure HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    out = th_tls_read(&t, &n, 5000, NULL, NULL, &end);
    assert_non_null(strstr(out, "\r\n\r\nsecure"));
    assert_int_equal(end, TH_CLOSE_NOTIFY);
    free(out);
    th_tls_close(&t);
}

/* A client's close_notify right after its request is a half-close: the
 * response still comes. A client that leaves without one is a normal
 * disconnect. */
static void test_close_notify_received_or_missing(void **state)
{
    th_tls t;
    size_t n;
    int end, i;
    char *out;

    (void)state;
    assert_int_equal(th_tls_connect(&t, srv.ec, NULL), 0);
    th_tls_send(&t, "GET /secure HTTP/1.1\r\nHost: x\r\n\r\n");
    SSL_shutdown(t.ssl);
    out = th_tls_read(&t, &n, 5000, NULL, NULL, &end);
    assert_non_null(strstr(out, "\r\n\r\nsecure"));
    assert_true(end == TH_CLOSE_NOTIFY || end == TH_EOF);
    free(out);
    th_tls_close(&t);
    for (i = 0; i < 20; i++) {
        /* Mid-request, and mid-record: TCP closes, no close_notify. */
        assert_int_equal(th_tls_connect(&t, srv.ec, NULL), 0);
        if (i % 2)
            th_tls_send(&t, "GET /secure HTTP/1.1\r\nHo");
        close(t.fd);
        t.fd = 0;
        th_tls_close(&t);
    }
    expect_tls_alive(srv.ec);
}

/* ---- what is not TLS ---- */

static void test_plain_http_on_tls_port(void **state)
{
    static const char req[] = "GET /secure HTTP/1.1\r\nHost: x\r\n\r\n";

    (void)state;
    /* A 400 in plaintext, a FIN: the client learns why. */
    th_expect_error_close(srv.ec, req, sizeof(req) - 1, 400, "Bad Request");
    expect_tls_alive(srv.ec);
}

/* Bytes sent raw, then how the server ended the connection. */
static int raw_exchange(int port, const void *p, size_t n, char **out)
{
    int fd = th_tcp_connect(port);
    size_t len;
    const char *q = p;

    while (n > 0) {
        ssize_t k = send(fd, q, n, MSG_NOSIGNAL);
        if (k <= 0)
            break; /* closed on us mid-way: fine */
        q += k;
        n -= (size_t)k;
    }
    *out = th_read(fd, &len, 5000, NULL, NULL);
    close(fd);
    return th_last_end();
}

static void test_garbage(void **state)
{
    static const char g1[] = "\x16\x03\x01\x00\x05hello, this is no handshake";
    static const char g2[] = "\x00\x01\x02\x03\xff\xfe garbage garbage";
    static const char g3[] = "\x17\x03\x03\x00\x10zzzzzzzzzzzzzzzz";
    const char *g[] = {g1, g2, g3};
    size_t gl[] = {sizeof(g1) - 1, sizeof(g2) - 1, sizeof(g3) - 1};
    char *out;
    size_t i;

    (void)state;
    for (i = 0; i < 3; i++) {
        int end = raw_exchange(srv.ec, g[i], gl[i], &out);
        /* Closed (an alert, maybe), never answered in HTTP. */
        assert_true(end == TH_EOF || end == TH_RESET);
        assert_null(strstr(out, "HTTP/1.1"));
        free(out);
    }
    expect_tls_alive(srv.ec);
}

/* The bytes of a real ClientHello (OpenSSL's, over memory BIOs). */
static size_t client_hello(char *buf, size_t cap)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    SSL *ssl = SSL_new(ctx);
    BIO *rb = BIO_new(BIO_s_mem()), *wb = BIO_new(BIO_s_mem());
    int n;

    SSL_set_bio(ssl, rb, wb);
    SSL_set_connect_state(ssl);
    assert_true(SSL_do_handshake(ssl) <= 0);
    n = BIO_read(wb, buf, (int)cap);
    assert_true(n > 100);
    SSL_free(ssl);
    SSL_CTX_free(ctx);
    return (size_t)n;
}

/* Half a ClientHello, then silence: the handshake timeout closes it.
 * Half a ClientHello, then the client leaves: freed (ASan's leak check). */
static void test_half_handshake(void **state)
{
    latch_app *app = new_app();
    srv3 s;
    char hello[4096], *out;
    size_t n = client_hello(hello, sizeof(hello)), len;
    int fd, i;
    int64_t t0;

    (void)state;
    assert_int_equal(latch_app_set_limit(app, LATCH_TIMEOUT_HANDSHAKE, 300), 0);
    srv_start(&s, app, false);
    for (i = 0; i < 10; i++) {
        fd = th_tcp_connect(s.ec);
        th_send(fd, hello, n / 2);
        close(fd);
    }
    fd = th_tcp_connect(s.ec);
    th_send(fd, hello, n / 2);
    t0 = th_now_ms();
    out = th_read(fd, &len, 5000, NULL, NULL);
    assert_true(th_last_end() == TH_EOF || th_last_end() == TH_RESET);
    assert_int_equal(len, 0);
    assert_true(th_now_ms() - t0 >= 200);
    assert_true(th_now_ms() - t0 < 3000);
    free(out);
    close(fd);
    /* A silent client too. */
    fd = th_tcp_connect(s.ec);
    out = th_read(fd, &len, 5000, NULL, NULL);
    assert_true(th_last_end() == TH_EOF || th_last_end() == TH_RESET);
    free(out);
    close(fd);
    /* A handshake done in time gets the header timeout, not this one. */
    {
        th_tls t;
        assert_int_equal(th_tls_connect(&t, s.ec, NULL), 0);
        out = th_tls_read(&t, &len, 600, NULL, NULL, &i);
        assert_int_equal(i, TH_OPEN);
        free(out);
        int one = 1;
        th_tls_send(&t, "GET /secure HTTP/1.1\r\nHost: x\r\n\r\n");
        out = th_tls_read(&t, &len, 5000, th_until_responses, &one, &i);
        assert_non_null(strstr(out, "secure"));
        free(out);
        th_tls_close(&t);
    }
    srv_stop(&s);
}

/* A handshake past 64 KiB is cut at once: 5 records (80 KiB) of a
 * ClientHello that announces 100 KiB, which OpenSSL alone would wait for
 * (its own bound is 128 KiB) until the handshake timeout (10 s). */
static void test_handshake_memory_cap(void **state)
{
    static char rec[5 + 16384];
    char *out;
    int fd = th_tcp_connect(srv.ec), end, i;
    size_t len;

    (void)state;
    memset(rec, 'A', sizeof(rec));
    rec[0] = 0x16;
    rec[1] = 0x03;
    rec[2] = 0x01;
    rec[3] = 0x40;
    rec[4] = 0x00;
    /* handshake header: ClientHello, 100 KiB */
    rec[5] = 0x01;
    rec[6] = 0x01;
    rec[7] = 0x90;
    rec[8] = 0x00;
    for (i = 0; i < 5; i++) {
        if (send(fd, rec, sizeof(rec), MSG_NOSIGNAL) <= 0)
            break;
        /* later records continue the message */
        rec[5] = rec[6] = rec[7] = rec[8] = 'A';
    }
    out = th_read(fd, &len, 3000, NULL, NULL);
    end = th_last_end();
    assert_true(end == TH_EOF || end == TH_RESET);
    free(out);
    close(fd);
    expect_tls_alive(srv.ec);
}

/* Whether the server closed fd already (EOF or reset waiting), without
 * waiting. */
static bool closed_now(int fd)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};

    return poll(&p, 1, 0) == 1;
}

#define FLOOD 400
#define FLOOD_CAP 32

/* A flood of half handshakes (raw sockets that send half a ClientHello and
 * hold) past LATCH_LIMIT_HANDSHAKES: the oldest are shed as newcomers
 * arrive, so at most the cap stays open, the newest; HTTPS clients are
 * served meanwhile, and the process's RSS grows by far less than the
 * flood would hold (400 x ~40 KiB without the cap). The flood goes to
 * one listener: a worker accepts each listener's backlog in order, but
 * not the backlogs of two in the order their clients connected. */
static void test_handshake_flood(void **state)
{
    latch_app *app = new_app();
    srv3 s;
    char hello[4096];
    size_t n = client_hello(hello, sizeof(hello));
    static int fds[FLOOD];
    uint64_t base, grown;
    int i;

    (void)state;
    assert_int_equal(latch_app_set_limit(app, LATCH_LIMIT_HANDSHAKES, 0),
                     LATCH_ERR_INVALID_ARG);
    assert_int_equal(
        latch_app_set_limit(app, LATCH_LIMIT_HANDSHAKES, (1u << 24) + 1),
        LATCH_ERR_INVALID_ARG);
    assert_int_equal(
        latch_app_set_limit(app, LATCH_LIMIT_HANDSHAKES, FLOOD_CAP), 0);
    srv_start(&s, app, false);
    /* A first round of each kind, so that what the process keeps anyway
     * (OpenSSL's tables, the worker's buffers) is in the base. */
    for (i = 0; i < 4; i++) {
        expect_tls_alive_ca(s.ec, "server");
        expect_tls_alive_ca(s.rsa, "rsa");
    }
    base = th_rss();
    for (i = 0; i < FLOOD; i++) {
        fds[i] = th_tcp_connect(s.ec);
        th_send(fds[i], hello, n / 2);
    }
    /* Served through the flood (accepted after all of it: one listener
     * accepts in order). */
    for (i = 0; i < 4; i++) {
        expect_tls_alive_ca(s.ec, "server");
        expect_tls_alive_ca(s.rsa, "rsa");
    }
    grown = th_rss() - base;
    print_message("rss grew by %llu KiB over %d half handshakes\n",
                  (unsigned long long)(grown >> 10), FLOOD);
    assert_true(grown < ((uint64_t)8 << 20));
    /* The oldest went, the newest stay (each client above took a slot
     * too, shedding one more of the oldest). */
    for (i = 0; i < FLOOD - FLOOD_CAP; i++)
        assert_int_not_equal(th_wait_close(fds[i], 2000), TH_OPEN);
    for (i = FLOOD - FLOOD_CAP / 2; i < FLOOD; i++)
        assert_false(closed_now(fds[i]));
    assert_true(latch_app_counter(app, LATCH_COUNTER_SHED) >=
                FLOOD - FLOOD_CAP);
    for (i = 0; i < FLOOD; i++)
        close(fds[i]);
    srv_stop(&s);
}

/* At the connection cap, a handshake stalled for a second makes room for
 * a newcomer (none of the others could: nothing idle, no request). */
static void test_stalled_handshake_shed_at_connection_cap(void **state)
{
    latch_app *app = new_app();
    srv3 s;
    char hello[4096];
    size_t n = client_hello(hello, sizeof(hello));
    int fds[8], i;

    (void)state;
    assert_int_equal(latch_app_set_limit(app, LATCH_LIMIT_CONNECTIONS, 8), 0);
    srv_start(&s, app, false);
    for (i = 0; i < 8; i++) {
        fds[i] = th_tcp_connect(s.ec);
        th_send(fds[i], hello, n / 2);
    }
    usleep(1200 * 1000);
    expect_tls_alive_ca(s.ec, "server");
    assert_int_not_equal(th_wait_close(fds[0], 2000), TH_OPEN);
    assert_false(closed_now(fds[7]));
    assert_true(latch_app_counter(app, LATCH_COUNTER_SHED) >= 1);
    for (i = 0; i < 8; i++)
        close(fds[i]);
    srv_stop(&s);
}

static bool got_bytes(const char *buf, size_t len, void *arg)
{
    (void)buf;
    (void)arg;
    return len > 0;
}

/* Whether fd is still open, without waiting: what the server sent is
 * read and dropped (the rest of a flight may still come in). */
static bool open_now(int fd)
{
    char buf[4096];
    ssize_t r;

    while ((r = recv(fd, buf, sizeof(buf), MSG_DONTWAIT)) > 0)
        ;
    return r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
}

/* A whole ClientHello on a new connection, and the server's answer read:
 * a handshake the server spent a key exchange on, then left hanging. */
static int answered_handshake(int port, const char *hello, size_t n)
{
    int fd = th_tcp_connect(port);
    size_t len;
    char *out;

    th_send(fd, hello, n);
    out = th_read(fd, &len, 5000, got_bytes, NULL);
    assert_true(len > 0);
    free(out);
    return fd;
}

/* At LATCH_LIMIT_HANDSHAKES the handshake shed for a newcomer is, among
 * those a second old, one that sent nothing, then one that sent half a
 * ClientHello, before any the server answered, however old those are. */
static void test_handshake_cap_sheds_unanswered_first(void **state)
{
    latch_app *app = new_app();
    srv3 s;
    char hello[4096];
    size_t n = client_hello(hello, sizeof(hello));
    int a[3], half, silent, late, i;

    (void)state;
    assert_int_equal(latch_app_set_limit(app, LATCH_LIMIT_HANDSHAKES, 5), 0);
    srv_start(&s, app, false);
    a[0] = answered_handshake(s.ec, hello, n);
    a[1] = answered_handshake(s.ec, hello, n);
    half = th_tcp_connect(s.ec);
    th_send(half, hello, n / 2);
    /* The server read the half by the time it answers a later hello (it
     * accepts in order, and the half was waiting before this connect). */
    a[2] = answered_handshake(s.ec, hello, n);
    silent = th_tcp_connect(s.ec);
    /* The grace a client has to send its ClientHello (a second). */
    usleep(1200 * 1000);
    /* At the cap (5): this newcomer takes the silent one's place. */
    late = th_tcp_connect(s.ec);
    assert_int_not_equal(th_wait_close(silent, 2000), TH_OPEN);
    /* And this one the half one's (the late one is within its grace). */
    expect_tls_alive_ca(s.ec, "server");
    assert_int_not_equal(th_wait_close(half, 2000), TH_OPEN);
    for (i = 0; i < 3; i++)
        assert_true(open_now(a[i]));
    assert_true(open_now(late));
    assert_int_equal(latch_app_counter(app, LATCH_COUNTER_SHED), 2);
    for (i = 0; i < 3; i++)
        close(a[i]);
    close(half);
    close(silent);
    close(late);
    srv_stop(&s);
}

/* A TLS 1.2 client asking to renegotiate is refused; the server serves
 * on. */
static void test_renegotiation_refused(void **state)
{
    th_tls t;
    th_tls_opts o = {0};
    size_t len;
    int one = 1, end;
    char *out;

    (void)state;
    o.min_version = o.max_version = TLS1_2_VERSION;
    assert_int_equal(th_tls_connect(&t, srv.ec, &o), 0);
    th_tls_send(&t, "GET /secure HTTP/1.1\r\nHost: x\r\n\r\n");
    out = th_tls_read(&t, &len, 5000, th_until_responses, &one, &end);
    free(out);
    assert_int_equal(SSL_renegotiate(t.ssl), 1);
    assert_true(SSL_do_handshake(t.ssl) != 1);
    th_tls_close(&t);
    expect_tls_alive(srv.ec);
}

/* ---- configuration ---- */

static void test_listen_tls_errors(void **state)
{
    latch_app *app = latch_app_new();
    char crt[512], key[512], rsakey[512], missing[512];

    (void)state;
    th_tls_path(crt, sizeof(crt), "server", "crt");
    th_tls_path(key, sizeof(key), "server", "key");
    th_tls_path(rsakey, sizeof(rsakey), "rsa", "key");
    th_tls_path(missing, sizeof(missing), "none", "crt");
    assert_int_equal(latch_listen_tls(NULL, "127.0.0.1", 0, crt, key),
                     LATCH_ERR_INVALID_ARG);
    assert_int_equal(latch_listen_tls(app, "127.0.0.1", 0, NULL, key),
                     LATCH_ERR_INVALID_ARG);
    assert_int_equal(latch_listen_tls(app, "127.0.0.1", 70000, crt, key),
                     LATCH_ERR_INVALID_ARG);
    assert_int_equal(latch_listen_tls(app, "127.0.0.1", 0, missing, key),
                     LATCH_ERR_TLS);
    assert_int_equal(latch_listen_tls(app, "127.0.0.1", 0, crt, rsakey),
                     LATCH_ERR_TLS);
    assert_int_equal(latch_listen_tls(app, "127.0.0.1", 0, key, key),
                     LATCH_ERR_TLS);
    assert_int_equal(latch_listen_tls(app, "no-such-host", 0, crt, key),
                     LATCH_ERR_INVALID_ARG);
    assert_int_equal(latch_app_listener_port(app, 0), -1);
    for (int i = 0; i < 8; i++)
        assert_int_equal(latch_listen_tls(app, "127.0.0.1", 0, crt, key), 0);
    assert_int_equal(latch_listen_tls(app, "127.0.0.1", 0, crt, key),
                     LATCH_ERR_LIMIT);
    assert_int_equal(latch_listen(app, "127.0.0.1", 0), LATCH_ERR_LIMIT);
    assert_int_equal(latch_app_reload_tls(app), 0);
    assert_int_equal(latch_app_reload_tls(NULL), LATCH_ERR_INVALID_ARG);
    assert_false(latch_req_secure(NULL));
    assert_string_equal(latch_err_name(LATCH_ERR_TLS), "ERR_TLS");
    latch_app_free(app);
}

/* ---- certificate reload ---- */

static void copy_file(const char *from, const char *to)
{
    char cmd[1200];

    snprintf(cmd, sizeof(cmd), "cp '%s' '%s'", from, to);
    assert_int_equal(system(cmd), 0);
}

/* The subject's CN of the certificate a new handshake gets. */
static void peer_cn(int port, char *cn, size_t cap)
{
    th_tls t;
    th_tls_opts o = {0};
    X509 *x;

    o.no_verify = true;
    assert_int_equal(th_tls_connect(&t, port, &o), 0);
    x = SSL_get1_peer_certificate(t.ssl);
    assert_non_null(x);
    X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, cn,
                              (int)cap);
    X509_free(x);
    th_tls_close(&t);
}

static void use_pair(const char *name, const char *crt, const char *key)
{
    char a[512], b[512];

    th_tls_path(a, sizeof(a), name, "crt");
    th_tls_path(b, sizeof(b), name, "key");
    copy_file(a, crt);
    copy_file(b, key);
}

static void test_reload_on_sighup(void **state)
{
    latch_app *app = latch_app_new();
    char crt[512], key[512], cn[64], *out;
    th_tls old;
    pthread_t tid;
    srv3 s;
    size_t len;
    int port, one = 1, end, i;

    (void)state;
    th_tls_path(crt, sizeof(crt), "live", "crt");
    th_tls_path(key, sizeof(key), "live", "key");
    use_pair("one", crt, key);
    latch_get(app, "/secure", secure, NULL);
    assert_int_equal(latch_app_set_workers(app, 1), 0);
    assert_int_equal(latch_listen_tls(app, "127.0.0.1", 0, crt, key), 0);
    port = latch_app_port(app);
    memset(&s, 0, sizeof(s));
    s.app = app;
    /* With its signal handlers: SIGHUP reloads, SIGINT/SIGTERM stop. */
    assert_int_equal(pthread_create(&tid, NULL, run_main, &s), 0);
    peer_cn(port, cn, sizeof(cn));
    assert_string_equal(cn, "one");
    /* A connection made under "one" stays open across the reloads. */
    {
        th_tls_opts o = {0};
        o.ca = "one";
        assert_int_equal(th_tls_connect(&old, port, &o), 0);
    }
    use_pair("two", crt, key);
    assert_int_equal(kill(getpid(), SIGHUP), 0);
    for (i = 0; i < 100; i++) {
        peer_cn(port, cn, sizeof(cn));
        if (strcmp(cn, "two") == 0)
            break;
    }
    assert_string_equal(cn, "two");
    /* A broken file: the reload fails, "two" stays. */
    copy_file("/dev/null", crt);
    assert_int_equal(latch_app_reload_tls(app), LATCH_ERR_TLS);
    assert_int_equal(kill(getpid(), SIGHUP), 0);
    peer_cn(port, cn, sizeof(cn));
    assert_string_equal(cn, "two");
    /* A key that is not the certificate's: refused too. */
    {
        char a[512];
        th_tls_path(a, sizeof(a), "one", "crt");
        copy_file(a, crt);
    }
    assert_int_equal(latch_app_reload_tls(app), LATCH_ERR_TLS);
    peer_cn(port, cn, sizeof(cn));
    assert_string_equal(cn, "two");
    /* And back to "one" through the function. */
    use_pair("one", crt, key);
    assert_int_equal(latch_app_reload_tls(app), 0);
    peer_cn(port, cn, sizeof(cn));
    assert_string_equal(cn, "one");
    /* The old connection never noticed. */
    th_tls_send(&old, "GET /secure HTTP/1.1\r\nHost: x\r\n\r\n");
    out = th_tls_read(&old, &len, 5000, th_until_responses, &one, &end);
    assert_non_null(strstr(out, "\r\n\r\nsecure"));
    free(out);
    th_tls_close(&old);
    latch_stop(app);
    pthread_join(tid, NULL);
    assert_int_equal(s.rc, 0);
    latch_app_free(app);
}

static int group_setup(void **state)
{
    size_t i;

    (void)state;
    th_tls_make_server_cert();
    th_tls_make_cert("rsa", "rsa", "latch-rsa");
    th_tls_make_cert("one", "ec", "one");
    th_tls_make_cert("two", "ec", "two");
    big = malloc(BIG_SIZE);
    assert_non_null(big);
    for (i = 0; i < BIG_SIZE; i++)
        big[i] = (char)('a' + (i * 7 + i / 4096) % 26);
    th_tls_path(big_path, sizeof(big_path), "big", "bin");
    {
        FILE *f = fopen(big_path, "wb");
        assert_non_null(f);
        assert_int_equal(fwrite(big, 1, BIG_SIZE, f), BIG_SIZE);
        assert_int_equal(fclose(f), 0);
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    free(big);
    curl_global_cleanup();
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_libcurl_tls12_and_13, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_big_response, setup, teardown),
        cmocka_unit_test_setup_teardown(test_curl_command, setup, teardown),
        cmocka_unit_test_setup_teardown(test_plain_and_tls_on_one_app, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_alpn, setup, teardown),
        cmocka_unit_test_setup_teardown(test_session_tickets, setup, teardown),
        cmocka_unit_test(test_pipelined_over_tls),
        cmocka_unit_test(test_forwarded_proto),
        cmocka_unit_test_setup_teardown(test_close_notify_sent, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_close_notify_received_or_missing,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_plain_http_on_tls_port, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_garbage, setup, teardown),
        cmocka_unit_test(test_half_handshake),
        cmocka_unit_test_setup_teardown(test_handshake_memory_cap, setup,
                                        teardown),
        cmocka_unit_test(test_handshake_flood),
        cmocka_unit_test(test_stalled_handshake_shed_at_connection_cap),
        cmocka_unit_test(test_handshake_cap_sheds_unanswered_first),
        cmocka_unit_test_setup_teardown(test_renegotiation_refused, setup,
                                        teardown),
        cmocka_unit_test(test_listen_tls_errors),
        cmocka_unit_test(test_reload_on_sighup),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
