/*
 * test_tls_ctx.c - tls.c's contexts without sockets: a client and latch's
 * server SSL object handshake over memory BIOs, to check session ticket
 * key rotation on a fake clock (a ticket resumes while its key is
 * current, is renewed during the next period, and is refused after two)
 * and the reload of a certificate (the next handshake gets it, a failed
 * reload keeps the old one). Certificates come from the openssl command.
 */
#include "internal.h"
#include "tls.h"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

static char dir[64];
static uint64_t fake_now;

static uint64_t fake_clock(void)
{
    return fake_now;
}

static void path(char *out, size_t cap, const char *name, const char *ext)
{
    snprintf(out, cap, "%s/%s.%s", dir, name, ext);
}

static void make_cert(const char *name)
{
    char cmd[1024];

    snprintf(cmd, sizeof(cmd),
             "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 "
             "-nodes -days 2 -subj /CN=%s -keyout '%s/%s.key' "
             "-out '%s/%s.crt' >/dev/null 2>&1",
             name, dir, name, dir, name);
    assert_int_equal(system(cmd), 0);
}

/* Moves what each side wrote to the other until the client's handshake
 * is done; then a byte of application data from the server, so a TLS
 * 1.3 client has read its ticket. Returns the client, or NULL when the
 * handshake failed. */
static SSL *handshake(latch_tls_ctx *ctx, int version, SSL_SESSION *sess,
                      char *cn, size_t cap)
{
    SSL_CTX *cctx = SSL_CTX_new(TLS_client_method());
    SSL *c = SSL_new(cctx), *s = latch__tls_ctx_ssl(ctx);
    BIO *c_in = BIO_new(BIO_s_mem()), *c_out = BIO_new(BIO_s_mem());
    BIO *s_in = BIO_new(BIO_s_mem()), *s_out = BIO_new(BIO_s_mem());
    char buf[32768], one;
    int i, n, done_c = 0, done_s = 0;
    X509 *x;

    assert_non_null(s);
    SSL_CTX_set_min_proto_version(cctx, version);
    SSL_CTX_set_max_proto_version(cctx, version);
    SSL_set_bio(c, c_in, c_out);
    SSL_set_bio(s, s_in, s_out);
    SSL_set_connect_state(c);
    SSL_set_accept_state(s);
    if (sess != NULL)
        SSL_set_session(c, sess);
    for (i = 0; i < 20 && !(done_c && done_s); i++) {
        if (!done_c)
            done_c = SSL_do_handshake(c) == 1;
        while ((n = BIO_read(c_out, buf, sizeof(buf))) > 0)
            BIO_write(s_in, buf, n);
        if (!done_s)
            done_s = SSL_do_handshake(s) == 1;
        while ((n = BIO_read(s_out, buf, sizeof(buf))) > 0)
            BIO_write(c_in, buf, n);
    }
    if (!(done_c && done_s)) {
        ERR_clear_error();
        SSL_free(c);
        SSL_free(s);
        SSL_CTX_free(cctx);
        return NULL;
    }
    assert_int_equal(SSL_write(s, "x", 1), 1);
    while ((n = BIO_read(s_out, buf, sizeof(buf))) > 0)
        BIO_write(c_in, buf, n);
    assert_int_equal(SSL_read(c, &one, 1), 1);
    if (cn != NULL) {
        x = SSL_get1_peer_certificate(c);
        X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, cn,
                                  (int)cap);
        X509_free(x);
    }
    SSL_free(s);
    SSL_CTX_free(cctx);
    return c;
}

/* Resumes with sess at the fake time `at`: whether it was resumed, and
 * the client's new session (a renewed ticket) in *renewed. */
static bool resumes(latch_tls_ctx *ctx, int version, SSL_SESSION *sess,
                    uint64_t at, SSL_SESSION **renewed)
{
    SSL *c;
    bool r;

    fake_now = at;
    c = handshake(ctx, version, sess, NULL, 0);
    assert_non_null(c);
    r = SSL_session_reused(c) == 1;
    if (renewed != NULL)
        *renewed = SSL_get1_session(c);
    SSL_shutdown(c);
    SSL_free(c);
    return r;
}

static void check_rotation(int version)
{
    char crt[256], key[256];
    latch_tls_ctx *ctx;
    SSL_SESSION *s0, *s1;
    SSL *c;
    const uint64_t P = 1000; /* the period, ms */

    path(crt, sizeof(crt), "a", "crt");
    path(key, sizeof(key), "a", "key");
    assert_int_equal(latch__tls_ctx_new(&ctx, crt, key), 0);
    latch__tls_ctx_set_ticket_clock(ctx, fake_clock, P);
    fake_now = 5000;
    c = handshake(ctx, version, NULL, NULL, 0);
    assert_non_null(c);
    s0 = SSL_get1_session(c);
    SSL_shutdown(c);
    SSL_free(c);
    /* The key is current: resumed. */
    assert_true(resumes(ctx, version, s0, 5000 + P / 2, NULL));
    /* One period on: the key decrypts only, the ticket is renewed. */
    assert_true(resumes(ctx, version, s0, 5000 + P + P / 2, &s1));
    /* Two periods after the key began: s0's ticket is refused ... */
    assert_false(resumes(ctx, version, s0, 5000 + 2 * P + P / 2, NULL));
    /* ... and the renewed one, issued under the next key, resumes. */
    assert_true(resumes(ctx, version, s1, 5000 + 2 * P + P / 2, NULL));
    SSL_SESSION_free(s0);
    SSL_SESSION_free(s1);
    latch__tls_ctx_free(ctx);
}

static void test_ticket_rotation_tls12(void **state)
{
    (void)state;
    check_rotation(TLS1_2_VERSION);
}

static void test_ticket_rotation_tls13(void **state)
{
    (void)state;
    check_rotation(TLS1_3_VERSION);
}

static void copy(const char *from, const char *to)
{
    char cmd[600];

    snprintf(cmd, sizeof(cmd), "cp '%s' '%s'", from, to);
    assert_int_equal(system(cmd), 0);
}

/* A reload swaps the certificate for the next handshake; a failing one
 * keeps the old, and tickets survive both. */
static void test_reload(void **state)
{
    char crt[256], key[256], a[256], b[256], cn[64];
    latch_tls_ctx *ctx;
    SSL_SESSION *sess;
    SSL *c;

    (void)state;
    path(crt, sizeof(crt), "live", "crt");
    path(key, sizeof(key), "live", "key");
    path(a, sizeof(a), "a", "crt");
    copy(a, crt);
    path(a, sizeof(a), "a", "key");
    copy(a, key);
    assert_int_equal(latch__tls_ctx_new(&ctx, crt, key), 0);
    c = handshake(ctx, TLS1_3_VERSION, NULL, cn, sizeof(cn));
    assert_string_equal(cn, "a");
    sess = SSL_get1_session(c);
    SSL_shutdown(c);
    SSL_free(c);
    path(b, sizeof(b), "b", "crt");
    copy(b, crt);
    path(b, sizeof(b), "b", "key");
    copy(b, key);
    assert_int_equal(latch__tls_ctx_reload(ctx), 0);
    c = handshake(ctx, TLS1_3_VERSION, NULL, cn, sizeof(cn));
    assert_string_equal(cn, "b");
    SSL_free(c);
    /* A ticket of the old certificate's context still resumes. */
    c = handshake(ctx, TLS1_3_VERSION, sess, NULL, 0);
    assert_int_equal(SSL_session_reused(c), 1);
    SSL_free(c);
    copy("/dev/null", key);
    assert_int_equal(latch__tls_ctx_reload(ctx), LATCH_ERR_TLS);
    c = handshake(ctx, TLS1_3_VERSION, NULL, cn, sizeof(cn));
    assert_string_equal(cn, "b");
    SSL_free(c);
    SSL_SESSION_free(sess);
    latch__tls_ctx_free(ctx);
}

static int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof(dir), "/tmp/latch-unit-tls-XXXXXX");
    assert_non_null(mkdtemp(dir));
    make_cert("a");
    make_cert("b");
    return 0;
}

static int teardown(void **state)
{
    char cmd[128];

    (void)state;
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ticket_rotation_tls12),
        cmocka_unit_test(test_ticket_rotation_tls13),
        cmocka_unit_test(test_reload),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
