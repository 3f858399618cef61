/*
 * tls.c - HTTPS: OpenSSL 3 under the connection, over memory BIOs.
 *
 * The SSL object of a connection reads and writes through one BIO of
 * latch's own: reads take ciphertext from the slice the socket just
 * delivered (zero copy; what a paused connection leaves unread is kept in
 * a small stash), writes append ciphertext to an output buffer that goes
 * to the socket with uv_try_write, the rest with uv_write. conn.c calls
 * this module instead of libuv's stream calls when the connection is TLS,
 * and gets plaintext through its own libuv callbacks (tls.h).
 *
 * The configuration is Mozilla's "intermediate": TLS 1.2 and 1.3, AEAD
 * ciphers with forward secrecy, X25519/P-256/P-384; ALPN http/1.1 (the
 * list where h2 will go); stateless session tickets whose keys rotate
 * (LATCH_TLS_TICKET_PERIOD_MS), shared by the workers and kept across
 * certificate reloads; no renegotiation, no compression, no OCSP stapling;
 * OpenSSL's buffers released while a connection is idle.
 *
 * This module knows nothing of HTTP, except one thing: the first bytes of
 * a plain HTTP request on a TLS port, which it tells conn.c about so the
 * client gets a 400 it can read rather than a TLS alert.
 */
#include "tls.h"
#include "internal.h"

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Plaintext encrypted per SSL_write: one full record. */
#define RECORD ((size_t)16384)
/* Plaintext of a queued uv_write encrypted at a time. */
#define FEED ((size_t)64 * 1024)
/* Ciphertext buffer capacity an idle connection may keep. */
#define COUT_KEEP ((size_t)20 * 1024)
/* The largest ciphertext the output buffer takes (far above what one
 * FEED step makes; a bound, not a setting). */
#define COUT_LIMIT ((size_t)1 << 24)

/* Mozilla's "intermediate" configuration (v5.7), TLS 1.2 part. */
static const char tls12_ciphers[] =
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"
    "DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384:"
    "DHE-RSA-CHACHA20-POLY1305";
static const char tls13_suites[] =
    "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:"
    "TLS_CHACHA20_POLY1305_SHA256";
static const char groups[] = "X25519:prime256v1:secp384r1";
/* ALPN, in the server's order of preference (wire format: length-prefixed
 * names). HTTP/2 goes first here once h2.c exists ("\x02h2"), with a
 * call that tells conn.c which one was chosen (SSL_get0_alpn_selected). */
static const unsigned char alpn_protos[] = "\x08http/1.1";

typedef struct ticket_key {
    unsigned char name[16];
    unsigned char aes[32];
    unsigned char hmac[32];
} ticket_key;

struct latch_tls_ctx {
    pthread_mutex_t mu;
    SSL_CTX *ssl; /* the current certificate's; under mu */
    char *cert_file, *key_file;
    /* Session ticket keys: [0] issues and decrypts, [1] (when has_prev)
     * only decrypts, and its tickets are renewed. Under kmu. */
    pthread_mutex_t kmu;
    ticket_key keys[2];
    bool has_key, has_prev;
    uint64_t keys_at; /* when keys[0] began, on clock() */
    uint64_t period;  /* ms */
    uint64_t (*clock)(void);
};

enum { ST_HANDSHAKE = 0, ST_OPEN, ST_PLAIN, ST_FAILED };

struct latch_tls {
    SSL *ssl;
    uv_tcp_t *tcp;
    void (*on_ready)(uv_stream_t *tcp);
    uv_alloc_cb alloc; /* conn.c's callbacks */
    uv_read_cb read;
    uint8_t state;
    bool reading;    /* the caller wants plaintext */
    bool closed;     /* latch__tls_close ran */
    bool pumping;    /* in pump: plaintext written is sent at its end */
    bool hello;      /* the ClientHello was whole: the server answered */
    size_t hs_bytes; /* ciphertext received during the handshake */
    /* Input the SSL object has not consumed: the slice being fed, which
     * points into the stash or into the thread's read buffer. */
    const char *in;
    size_t in_len;
    latch_buf stash;
    /* Ciphertext the SSL object wrote, not yet handed to the socket. */
    latch_buf cout;
    uint32_t nflight; /* uv_writes of ciphertext in flight */
    /* A uv_write the caller made, encrypted FEED bytes at a time as the
     * socket takes the ciphertext (none while ureq is NULL). */
    uv_write_t *ureq;
    uv_write_cb ucb;
    const char *ubase;
    size_t ulen, uoff;
    uv_timer_t *kick; /* delivers buffered plaintext after a resume */
};

/* One uv_write of ciphertext; ureq (if any) completes with it. */
typedef struct chunk {
    uv_write_t req;
    latch_tls *t;
    latch_buf data;
    uv_write_t *ureq;
    uv_write_cb ucb;
} chunk;

/* ------------------------------------------------------------------ */
/* The BIO: ciphertext in from t->in, out into t->cout                  */
/* ------------------------------------------------------------------ */

static BIO_METHOD *bio_method;
static pthread_once_t bio_once = PTHREAD_ONCE_INIT;

static int bio_write(BIO *b, const char *p, int n)
{
    latch_tls *t = BIO_get_data(b);

    BIO_clear_retry_flags(b);
    if (n <= 0)
        return 0;
    if (latch__buf_append(&t->cout, p, (size_t)n, COUT_LIMIT) < 0)
        return -1;
    return n;
}

static int bio_read(BIO *b, char *p, int n)
{
    latch_tls *t = BIO_get_data(b);
    size_t k;

    BIO_clear_retry_flags(b);
    if (t->in_len == 0) {
        BIO_set_retry_read(b); /* more when the socket has more */
        return -1;
    }
    k = t->in_len < (size_t)n ? t->in_len : (size_t)n;
    memcpy(p, t->in, k);
    t->in += k;
    t->in_len -= k;
    return (int)k;
}

static long bio_ctrl(BIO *b, int cmd, long num, void *ptr)
{
    latch_tls *t = BIO_get_data(b);

    (void)num;
    (void)ptr;
    switch (cmd) {
    case BIO_CTRL_FLUSH: return 1;
    case BIO_CTRL_PENDING: return t != NULL ? (long)t->in_len : 0;
    case BIO_CTRL_WPENDING: return 0;
    default: return 0;
    }
}

static int bio_create(BIO *b)
{
    BIO_set_init(b, 1);
    return 1;
}

static void bio_init_method(void)
{
    BIO_METHOD *m =
        BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "latch");

    if (m == NULL)
        return;
    BIO_meth_set_write(m, bio_write);
    BIO_meth_set_read(m, bio_read);
    BIO_meth_set_ctrl(m, bio_ctrl);
    BIO_meth_set_create(m, bio_create);
    bio_method = m;
}

/* ------------------------------------------------------------------ */
/* Contexts: certificate, key, tickets                                  */
/* ------------------------------------------------------------------ */

static uint64_t mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Logs OpenSSL's reasons for a failure (and empties its queue). */
static void log_ssl(const char *what, const char *cert, const char *key)
{
    unsigned long e;
    char buf[256];

    fprintf(stderr, "latch: tls: %s (certificate %s, key %s)", what, cert, key);
    while ((e = ERR_get_error()) != 0) {
        ERR_error_string_n(e, buf, sizeof(buf));
        fprintf(stderr, ": %s", buf);
    }
    fputc('\n', stderr);
}

static bool key_new(ticket_key *k)
{
    return RAND_bytes(k->name, sizeof(k->name)) == 1 &&
           RAND_bytes(k->aes, sizeof(k->aes)) == 1 &&
           RAND_bytes(k->hmac, sizeof(k->hmac)) == 1;
}

/* Under kmu: the key of the period `now` is in, made on first use. A
 * period without any handshake still counts, so a key never decrypts
 * for more than two periods after it began. False when no key can be
 * made (no randomness). */
static bool keys_rotate(latch_tls_ctx *c)
{
    uint64_t now = c->clock(), el;
    ticket_key k;

    if (!c->has_key) {
        if (!key_new(&c->keys[0]))
            return false;
        c->has_key = true;
        c->keys_at = now;
        return true;
    }
    el = now - c->keys_at;
    if (el < c->period)
        return true;
    if (!key_new(&k))
        return false;
    /* One period over: the current key only decrypts now. Two or more:
     * its tickets have expired, it goes too. */
    c->keys[1] = c->keys[0];
    c->has_prev = el < 2 * c->period;
    c->keys[0] = k;
    c->keys_at = now;
    return true;
}

static int ticket_key_cb(SSL *s, unsigned char name[16], unsigned char iv[16],
                         EVP_CIPHER_CTX *cctx, EVP_MAC_CTX *hctx, int enc)
{
    latch_tls_ctx *c = SSL_CTX_get_app_data(SSL_get_SSL_CTX(s));
    ticket_key k;
    int r = 1;
    OSSL_PARAM params[3];

    pthread_mutex_lock(&c->kmu);
    if (!keys_rotate(c)) {
        pthread_mutex_unlock(&c->kmu);
        return enc ? -1 : 0;
    }
    if (enc) {
        k = c->keys[0];
    } else if (memcmp(name, c->keys[0].name, 16) == 0) {
        k = c->keys[0];
    } else if (c->has_prev && memcmp(name, c->keys[1].name, 16) == 0) {
        k = c->keys[1];
        r = 2; /* good, and renewed under the current key */
    } else {
        r = 0; /* unknown or retired: a full handshake */
    }
    pthread_mutex_unlock(&c->kmu);
    if (r == 0)
        return 0;
    params[0] = OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, k.hmac,
                                                  sizeof(k.hmac));
    params[1] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST,
                                                 (char *)"SHA256", 0);
    params[2] = OSSL_PARAM_construct_end();
    if (enc) {
        memcpy(name, k.name, 16);
        if (RAND_bytes(iv, 16) != 1 ||
            EVP_EncryptInit_ex(cctx, EVP_aes_256_cbc(), NULL, k.aes, iv) != 1)
            r = -1;
    } else if (EVP_DecryptInit_ex(cctx, EVP_aes_256_cbc(), NULL, k.aes, iv) !=
               1) {
        r = -1;
    }
    if (r > 0 && EVP_MAC_CTX_set_params(hctx, params) != 1)
        r = -1;
    OPENSSL_cleanse(&k, sizeof(k));
    return r;
}

static int alpn_cb(SSL *s, const unsigned char **out, unsigned char *outlen,
                   const unsigned char *in, unsigned int inlen, void *arg)
{
    unsigned char *sel;

    (void)s;
    (void)arg;
    if (SSL_select_next_proto(&sel, outlen, alpn_protos,
                              sizeof(alpn_protos) - 1, in,
                              inlen) != OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_ALERT_FATAL; /* RFC 7301: no overlap */
    *out = sel;
    return SSL_TLSEXT_ERR_OK;
}

/* A configured SSL_CTX with c's certificate and key, or NULL (logged). */
static SSL_CTX *ctx_build(latch_tls_ctx *c)
{
    SSL_CTX *s;

    ERR_clear_error();
    s = SSL_CTX_new(TLS_server_method());
    if (s == NULL) {
        log_ssl("cannot make a context", c->cert_file, c->key_file);
        return NULL;
    }
    if (SSL_CTX_set_min_proto_version(s, TLS1_2_VERSION) != 1 ||
        SSL_CTX_set_cipher_list(s, tls12_ciphers) != 1 ||
        SSL_CTX_set_ciphersuites(s, tls13_suites) != 1 ||
        SSL_CTX_set1_groups_list(s, groups) != 1 ||
        SSL_CTX_set_dh_auto(s, 1) != 1) {
        log_ssl("cannot configure the context", c->cert_file, c->key_file);
        goto fail;
    }
    SSL_CTX_set_options(s, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
    SSL_CTX_set_mode(s, SSL_MODE_RELEASE_BUFFERS);
    /* Resumption by tickets only: no per-context cache to share among the
     * workers or to lose on a reload. */
    SSL_CTX_set_session_cache_mode(s, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_timeout(s, (long)(c->period / 1000 > 0 ? c->period / 1000 : 1));
    SSL_CTX_set_num_tickets(s, 1);
    SSL_CTX_set_app_data(s, c);
    SSL_CTX_set_tlsext_ticket_key_evp_cb(s, ticket_key_cb);
    SSL_CTX_set_alpn_select_cb(s, alpn_cb, NULL);
    if (SSL_CTX_use_certificate_chain_file(s, c->cert_file) != 1) {
        log_ssl("cannot load the certificate", c->cert_file, c->key_file);
        goto fail;
    }
    if (SSL_CTX_use_PrivateKey_file(s, c->key_file, SSL_FILETYPE_PEM) != 1) {
        log_ssl("cannot load the key", c->cert_file, c->key_file);
        goto fail;
    }
    if (SSL_CTX_check_private_key(s) != 1) {
        log_ssl("the key does not match the certificate", c->cert_file,
                c->key_file);
        goto fail;
    }
    return s;

fail:
    SSL_CTX_free(s);
    return NULL;
}

int latch__tls_ctx_new(latch_tls_ctx **out, const char *cert_file,
                       const char *key_file)
{
    latch_tls_ctx *c;

    *out = NULL;
    pthread_once(&bio_once, bio_init_method);
    if (bio_method == NULL)
        return LATCH_ERR_NOMEM;
    c = calloc(1, sizeof(*c));
    if (c == NULL)
        return LATCH_ERR_NOMEM;
    c->cert_file = strdup(cert_file);
    c->key_file = strdup(key_file);
    if (c->cert_file == NULL || c->key_file == NULL) {
        free(c->cert_file);
        free(c->key_file);
        free(c);
        return LATCH_ERR_NOMEM;
    }
    pthread_mutex_init(&c->mu, NULL);
    pthread_mutex_init(&c->kmu, NULL);
    c->clock = mono_ms;
    c->period = LATCH_TLS_TICKET_PERIOD_MS;
    c->ssl = ctx_build(c);
    if (c->ssl == NULL) {
        latch__tls_ctx_free(c);
        return LATCH_ERR_TLS;
    }
    *out = c;
    return 0;
}

int latch__tls_ctx_reload(latch_tls_ctx *c)
{
    SSL_CTX *s = ctx_build(c), *old;

    if (s == NULL) {
        fprintf(stderr, "latch: tls: reload failed, the certificate in use "
                        "stays\n");
        return LATCH_ERR_TLS;
    }
    pthread_mutex_lock(&c->mu);
    old = c->ssl;
    c->ssl = s;
    pthread_mutex_unlock(&c->mu);
    /* Connections made with it hold their own references. */
    SSL_CTX_free(old);
    return 0;
}

void latch__tls_ctx_free(latch_tls_ctx *c)
{
    if (c == NULL)
        return;
    SSL_CTX_free(c->ssl);
    pthread_mutex_destroy(&c->mu);
    pthread_mutex_destroy(&c->kmu);
    OPENSSL_cleanse(c->keys, sizeof(c->keys));
    free(c->cert_file);
    free(c->key_file);
    free(c);
}

void latch__tls_ctx_set_ticket_clock(latch_tls_ctx *c, uint64_t (*clock)(void),
                                     uint64_t period_ms)
{
    pthread_mutex_lock(&c->kmu);
    c->clock = clock != NULL ? clock : mono_ms;
    c->period = period_ms > 0 ? period_ms : LATCH_TLS_TICKET_PERIOD_MS;
    c->has_key = c->has_prev = false;
    pthread_mutex_unlock(&c->kmu);
}

void *latch__tls_ctx_ssl(latch_tls_ctx *c)
{
    SSL *s;

    pthread_mutex_lock(&c->mu);
    s = SSL_new(c->ssl);
    pthread_mutex_unlock(&c->mu);
    return s;
}

/* ------------------------------------------------------------------ */
/* Writing ciphertext                                                   */
/* ------------------------------------------------------------------ */

static void feed(latch_tls *t);

static void chunk_done(uv_write_t *req, int status)
{
    chunk *k = LATCH_CONTAINER_OF(req, chunk, req);
    latch_tls *t = k->t;

    t->nflight--;
    latch__buf_dispose(&k->data);
    if (k->ucb != NULL)
        k->ucb(k->ureq, status);
    free(k);
    if (status == 0)
        feed(t);
}

/* Hands t->cout to the socket: uv_try_write when nothing is queued before
 * it, uv_write for what that leaves (with ureq, completed by that write,
 * even an empty one). Returns 1 when the socket took everything, 0 when a
 * write was queued, or a negative error. */
static int send_out(latch_tls *t, uv_write_t *ureq, uv_write_cb ucb)
{
    size_t off = 0;
    chunk *k;
    uv_buf_t b;
    int n;

    if (t->cout.len > 0 && ureq == NULL && t->nflight == 0 &&
        t->tcp->write_queue_size == 0) {
        b = uv_buf_init(t->cout.data, (unsigned)t->cout.len);
        n = uv_try_write((uv_stream_t *)t->tcp, &b, 1);
        if (n < 0 && n != UV_EAGAIN)
            return n;
        off = n > 0 ? (size_t)n : 0;
        if (off == t->cout.len) {
            t->cout.len = 0;
            if (t->cout.cap > COUT_KEEP)
                latch__buf_dispose(&t->cout);
            return 1;
        }
    }
    if (t->cout.len == 0 && ureq == NULL)
        return 1;
    k = malloc(sizeof(*k));
    if (k == NULL)
        return UV_ENOMEM;
    /* The chunk takes the buffer as it is (no copy). */
    k->t = t;
    k->data = t->cout;
    k->ureq = ureq;
    k->ucb = ucb;
    memset(&t->cout, 0, sizeof(t->cout));
    b = uv_buf_init(k->data.data + off, (unsigned)(k->data.len - off));
    n = uv_write(&k->req, (uv_stream_t *)t->tcp, &b, 1, chunk_done);
    if (n < 0) {
        latch__buf_dispose(&k->data);
        free(k);
        return n;
    }
    t->nflight++;
    return 0;
}

/* Encrypts len bytes of plaintext into t->cout. 0 or UV_EPROTO. */
static int encrypt(latch_tls *t, const char *p, size_t len)
{
    while (len > 0) {
        size_t k = len < RECORD ? len : RECORD;
        int r;

        ERR_clear_error();
        r = SSL_write(t->ssl, p, (int)k);
        if (r <= 0)
            return UV_EPROTO;
        p += r;
        len -= (size_t)r;
    }
    return 0;
}

/* Encrypts the next part of the caller's uv_write once the socket took
 * what came before, so at most FEED bytes of its ciphertext wait. */
static void feed(latch_tls *t)
{
    uv_write_t *req;
    uv_write_cb cb;
    size_t k;
    int r;

    while (t->ureq != NULL && t->nflight == 0 && !t->closed) {
        k = t->ulen - t->uoff < FEED ? t->ulen - t->uoff : FEED;
        r = encrypt(t, t->ubase + t->uoff, k);
        t->uoff += k;
        req = t->ureq;
        cb = t->ucb;
        if (r == 0 && t->uoff == t->ulen) {
            t->ureq = NULL;
            r = send_out(t, req, cb); /* completes req */
            if (r < 0)
                cb(req, r);
            return;
        }
        if (r == 0)
            r = send_out(t, NULL, NULL);
        if (r < 0) {
            t->ureq = NULL;
            cb(req, r);
            return;
        }
    }
}

/* ------------------------------------------------------------------ */
/* Reading                                                              */
/* ------------------------------------------------------------------ */

/* Each worker thread reads ciphertext into one buffer: the SSL object
 * consumes it before the read callback returns (a paused connection
 * keeps its unread rest in its stash). */
static _Thread_local char rx[64 * 1024];

static void deliver(latch_tls *t, ssize_t n, const uv_buf_t *b)
{
    static const uv_buf_t none = {NULL, 0};

    if (t->closed || t->read == NULL)
        return;
    t->read((uv_stream_t *)t->tcp, n, b != NULL ? b : &none);
}

/* The handshake or the record layer failed: the alert OpenSSL wrote goes
 * out, the caller hears UV_EPROTO. */
static void fail(latch_tls *t)
{
    t->state = ST_FAILED;
    (void)send_out(t, NULL, NULL);
    ERR_clear_error();
    deliver(t, UV_EPROTO, NULL);
}

/* Runs the handshake, then decrypts into the caller's buffers while it
 * reads, as libuv would deliver bytes from a socket. */
static void pump_records(latch_tls *t)
{
    uv_buf_t b;
    int r, e;

    if (t->state == ST_HANDSHAKE) {
        ERR_clear_error();
        r = SSL_do_handshake(t->ssl);
        if (r != 1) {
            e = SSL_get_error(t->ssl, r);
            if (e != SSL_ERROR_WANT_READ) {
                fail(t);
                return;
            }
            /* The server's first flight (or a HelloRetryRequest) is out
             * only once the whole ClientHello was read. */
            if (t->cout.len > 0)
                t->hello = true;
            if (send_out(t, NULL, NULL) < 0)
                deliver(t, UV_EPIPE, NULL);
            return;
        }
        t->state = ST_OPEN;
        /* The last flight (TLS 1.3: the session tickets) stays in cout:
         * it leaves at the end of the pump, in one write with the answer
         * to a request that came with the client's Finished. */
        if (!t->closed && t->on_ready != NULL)
            t->on_ready((uv_stream_t *)t->tcp);
    }
    while (t->state == ST_OPEN && t->reading && !t->closed) {
        b = uv_buf_init(NULL, 0);
        t->alloc((uv_handle_t *)t->tcp, 64 * 1024, &b);
        if (b.base == NULL || b.len == 0) {
            deliver(t, UV_ENOBUFS, &b);
            return;
        }
        ERR_clear_error();
        r = SSL_read(t->ssl, b.base,
                     (int)(b.len > INT32_MAX ? INT32_MAX : b.len));
        if (r > 0) {
            deliver(t, r, &b);
            continue;
        }
        e = SSL_get_error(t->ssl, r);
        if (e == SSL_ERROR_WANT_READ) {
            /* Records that carry no data (a ticket, a key update) may
             * have made output. */
            if (send_out(t, NULL, NULL) < 0)
                deliver(t, UV_EPIPE, &b);
            else
                deliver(t, 0, &b);
            return;
        }
        if (e == SSL_ERROR_ZERO_RETURN) {
            /* close_notify: the client is done sending. */
            deliver(t, UV_EOF, &b);
            return;
        }
        deliver(t, 0, &b); /* the caller's buffer back, then the failure */
        fail(t);
        return;
    }
}

/* pump_records, and the ciphertext of what the caller wrote meanwhile
 * (the answers to several requests that came in one read, one record
 * each) goes to the socket in one write at the end, not one per record. */
static void pump(latch_tls *t)
{
    t->pumping = true;
    pump_records(t);
    t->pumping = false;
    if (!t->closed && t->cout.len > 0 && t->state != ST_PLAIN &&
        send_out(t, NULL, NULL) < 0)
        deliver(t, UV_EPIPE, NULL);
}

/* Keeps what the SSL object did not consume (a paused reader). */
static void keep_rest(latch_tls *t)
{
    if (t->in_len == 0) {
        t->in = NULL;
        t->stash.len = 0;
        if (t->stash.cap > COUT_KEEP)
            latch__buf_dispose(&t->stash);
        return;
    }
    if (t->stash.len > 0 && t->in >= t->stash.data &&
        t->in < t->stash.data + t->stash.len) {
        memmove(t->stash.data, t->in, t->in_len);
        t->stash.len = t->in_len;
    } else {
        t->stash.len = 0;
        if (latch__buf_append(&t->stash, t->in, t->in_len, SIZE_MAX) < 0) {
            t->in_len = 0;
            deliver(t, UV_ENOMEM, NULL);
            return;
        }
    }
    t->in = t->stash.data;
}

static void on_tcp_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    (void)h;
    (void)suggested;
    *b = uv_buf_init(rx, sizeof(rx));
}

/* Plain HTTP starts with a method, a token of letters: a TLS record
 * starts with its content type (22 for a handshake). */
static bool looks_like_http(unsigned char c)
{
    return c >= 'A' && c <= 'Z';
}

static void on_tcp_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    latch_tls *t = s->data;

    if (n == 0)
        return;
    if (n < 0) {
        deliver(t, n, NULL);
        return;
    }
    if (t->state == ST_PLAIN || t->state == ST_FAILED)
        return; /* the caller lingers or closes: discarded */
    if (t->state == ST_HANDSHAKE) {
        if (t->hs_bytes == 0 && looks_like_http((unsigned char)b->base[0])) {
            t->state = ST_PLAIN;
            deliver(t, LATCH_TLS_EPLAIN, NULL);
            return;
        }
        t->hs_bytes += (size_t)n;
        if (t->hs_bytes > LATCH_TLS_HANDSHAKE_MAX) {
            t->state = ST_FAILED;
            deliver(t, UV_EPROTO, NULL);
            return;
        }
    }
    if (t->in_len > 0) {
        /* A stash is waiting (reading resumed before the kick ran): the
         * new bytes go behind it. */
        keep_rest(t);
        if (latch__buf_append(&t->stash, b->base, (size_t)n, SIZE_MAX) < 0) {
            deliver(t, UV_ENOMEM, NULL);
            return;
        }
        t->in = t->stash.data;
        t->in_len = t->stash.len;
    } else {
        t->in = b->base;
        t->in_len = (size_t)n;
    }
    pump(t);
    if (!t->closed)
        keep_rest(t);
}

static void on_kick(uv_timer_t *tm)
{
    latch_tls *t = tm->data;

    if (t->closed || !t->reading)
        return;
    pump(t);
    if (!t->closed)
        keep_rest(t);
}

/* ------------------------------------------------------------------ */
/* The stream calls                                                     */
/* ------------------------------------------------------------------ */

latch_tls *latch__tls_new(latch_tls_ctx *ctx, uv_tcp_t *tcp,
                          void (*on_ready)(uv_stream_t *tcp))
{
    latch_tls *t = calloc(1, sizeof(*t));
    BIO *bio;

    if (t == NULL)
        return NULL;
    t->ssl = latch__tls_ctx_ssl(ctx);
    bio = BIO_new(bio_method);
    if (t->ssl == NULL || bio == NULL) {
        BIO_free(bio);
        SSL_free(t->ssl);
        free(t);
        return NULL;
    }
    BIO_set_data(bio, t);
    SSL_set_bio(t->ssl, bio, bio);
    SSL_set_accept_state(t->ssl);
    t->tcp = tcp;
    t->on_ready = on_ready;
    tcp->data = t;
    return t;
}

void latch__tls_close(latch_tls *t, bool notify)
{
    if (t == NULL)
        return;
    if (t->state == ST_OPEN && !t->closed && t->nflight == 0 &&
        t->ureq == NULL && t->tcp->write_queue_size == 0) {
        /* Closing with nothing queued: what was written during this pump
         * and close_notify, if the socket takes them now (no wait, the
         * handle is closing). */
        uv_buf_t b;
        if (notify && !(SSL_get_shutdown(t->ssl) & SSL_SENT_SHUTDOWN)) {
            ERR_clear_error();
            (void)SSL_shutdown(t->ssl);
        }
        b = uv_buf_init(t->cout.data, (unsigned)t->cout.len);
        if (b.len > 0)
            (void)uv_try_write((uv_stream_t *)t->tcp, &b, 1);
        t->cout.len = 0;
    }
    t->closed = true;
    t->reading = false;
    if (t->kick != NULL) {
        uv_close((uv_handle_t *)t->kick, (uv_close_cb)free);
        t->kick = NULL;
    }
}

void latch__tls_free(latch_tls *t)
{
    if (t == NULL)
        return;
    SSL_free(t->ssl); /* frees the BIO */
    latch__buf_dispose(&t->stash);
    latch__buf_dispose(&t->cout);
    free(t);
}

int latch__tls_read_start(latch_tls *t, uv_alloc_cb alloc, uv_read_cb read)
{
    int r;

    if (t->closed)
        return UV_EINVAL;
    t->alloc = alloc;
    t->read = read;
    r = uv_read_start((uv_stream_t *)t->tcp, on_tcp_alloc, on_tcp_read);
    if (r < 0 && r != UV_EALREADY)
        return r;
    t->reading = true;
    if (t->state == ST_OPEN &&
        (t->in_len > 0 || SSL_has_pending(t->ssl) == 1)) {
        /* Plaintext is here already: delivered from the loop, as a
         * socket's bytes would be. */
        if (t->kick == NULL) {
            t->kick = malloc(sizeof(*t->kick));
            if (t->kick == NULL)
                return UV_ENOMEM;
            uv_timer_init(t->tcp->loop, t->kick);
            t->kick->data = t;
        }
        uv_timer_start(t->kick, on_kick, 0, 0);
    }
    return 0;
}

void latch__tls_read_stop(latch_tls *t)
{
    t->reading = false;
    if (t->kick != NULL)
        uv_timer_stop(t->kick);
    uv_read_stop((uv_stream_t *)t->tcp);
}

int latch__tls_try_write(latch_tls *t, const uv_buf_t *b)
{
    size_t done = 0;
    int r;

    if (t->state == ST_PLAIN)
        return uv_try_write((uv_stream_t *)t->tcp, b, 1);
    if (t->state != ST_OPEN || t->closed)
        return UV_ENOTCONN;
    if (t->nflight > 0 || t->ureq != NULL || t->tcp->write_queue_size > 0)
        return UV_EAGAIN;
    /* FEED bytes per write(2) (four full records), not one record each;
     * while pumping, the ciphertext waits for the end of the pump unless
     * FEED of it is already waiting. */
    while (done < b->len) {
        size_t k = b->len - done < FEED ? b->len - done : FEED;

        if (encrypt(t, b->base + done, k) < 0)
            return UV_EPROTO;
        done += k;
        if (t->pumping && t->cout.len < FEED)
            continue;
        r = send_out(t, NULL, NULL);
        if (r < 0)
            return r;
        if (r == 0)
            break; /* the socket is full: the rest waits for uv_write */
    }
    return (int)done;
}

int latch__tls_write(latch_tls *t, uv_write_t *req, const uv_buf_t *b,
                     uv_write_cb cb)
{
    if (t->state == ST_PLAIN)
        return uv_write(req, (uv_stream_t *)t->tcp, b, 1, cb);
    if (t->state != ST_OPEN || t->closed)
        return UV_ENOTCONN;
    if (t->ureq != NULL)
        return UV_EBUSY;
    t->ureq = req;
    t->ucb = cb;
    t->ubase = b->base;
    t->ulen = b->len;
    t->uoff = 0;
    feed(t);
    return 0;
}

int latch__tls_shutdown(latch_tls *t, uv_shutdown_t *req, uv_shutdown_cb cb,
                        bool notify)
{
    if (t->state == ST_OPEN && t->ureq == NULL) {
        /* close_notify, after everything written before it (what this
         * pump wrote included: nothing goes after the shutdown). */
        if (notify) {
            ERR_clear_error();
            (void)SSL_shutdown(t->ssl);
        }
        if (t->cout.len > 0 && send_out(t, NULL, NULL) < 0)
            return UV_EPIPE;
    }
    return uv_shutdown(req, (uv_stream_t *)t->tcp, cb);
}

size_t latch__tls_unsent(const latch_tls *t)
{
    return t->ureq != NULL ? t->ulen - t->uoff : 0;
}

int latch__tls_progress(const latch_tls *t)
{
    if (t->state == ST_OPEN || (t->state == ST_HANDSHAKE && t->hello))
        return 2;
    /* A failed one only waits for its alert to go out. */
    return t->state == ST_HANDSHAKE && t->hs_bytes > 0 ? 1 : 0;
}
