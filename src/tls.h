/*
 * tls.h - the TLS transport under conn.c (tls.c).
 *
 * A connection served over TLS reads and writes through a latch_tls in
 * place of its TCP handle: the calls below mirror the five libuv stream
 * calls conn.c makes (read start/stop, try_write, write, shutdown), take
 * plaintext, and call conn.c's own libuv callbacks with plaintext, passing
 * the TCP handle as the stream, so the parser, the response queue and
 * everything above them never learn that the bytes were encrypted.
 *
 * A latch_tls_ctx is one TLS listener's configuration (certificate, key,
 * session ticket keys), shared by every worker; a latch_tls is one
 * connection's state, used on its worker's thread only.
 */
#ifndef LATCH_TLS_H
#define LATCH_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct latch_tls_ctx latch_tls_ctx;
typedef struct latch_tls latch_tls;

/* What the read callback gets, instead of bytes, when the first bytes on
 * a TLS port are a plain HTTP request: the connection answers 400 in
 * plaintext (writes pass through from then on) and closes. */
#define LATCH_TLS_EPLAIN (-7900)
/* Ciphertext a client may send before its handshake completes; past it
 * the connection is closed (a ClientHello is a few hundred bytes to a few
 * KiB). */
#define LATCH_TLS_HANDSHAKE_MAX ((size_t)64 * 1024)
/* How long session ticket keys are used to issue tickets; a key then
 * decrypts (and renews) tickets for one more period, and tickets live
 * one period (SSL_CTX_set_timeout), so a ticket is never refused while
 * its lifetime runs. */
#define LATCH_TLS_TICKET_PERIOD_MS ((uint64_t)3600 * 1000)

/*
 * Loads cert_file (PEM, the certificate then its chain) and key_file (PEM
 * private key) into a new context with Mozilla's "intermediate" settings
 * (TLS 1.2 and 1.3, its cipher list, X25519/P-256/P-384), ALPN http/1.1,
 * session tickets with rotating keys, no stateful session cache, no
 * renegotiation, no OCSP stapling. The paths are copied for reloads.
 * Returns 0 (*out set), LATCH_ERR_TLS (unreadable files, a key that does
 * not match the certificate; the reason is logged on stderr) or
 * LATCH_ERR_NOMEM (*out NULL).
 */
int latch__tls_ctx_new(latch_tls_ctx **out, const char *cert_file,
                       const char *key_file);
/* Re-reads the certificate and key; connections made from then on use
 * them, open ones keep theirs. On failure the previous pair stays in use
 * and the reason is logged. Any thread. 0 or LATCH_ERR_TLS/_NOMEM. */
int latch__tls_ctx_reload(latch_tls_ctx *ctx);
/* Frees ctx (NULL: nothing); connections still open keep what they use. */
void latch__tls_ctx_free(latch_tls_ctx *ctx);
/* Tests: the clock of ticket key rotation (ms, monotonic), and its
 * period; NULL/0 restore the defaults. */
void latch__tls_ctx_set_ticket_clock(latch_tls_ctx *ctx,
                                     uint64_t (*clock)(void),
                                     uint64_t period_ms);
/* A new server SSL object of ctx's current certificate (tests drive it
 * over memory BIOs); NULL when out of memory. Its type is SSL *. */
void *latch__tls_ctx_ssl(latch_tls_ctx *ctx);

/*
 * One connection's TLS over `tcp` (an open TCP handle whose data is the
 * connection). on_ready runs once, when the handshake completed. NULL
 * when out of memory. The handshake starts with latch__tls_read_start.
 */
latch_tls *latch__tls_new(latch_tls_ctx *ctx, uv_tcp_t *tcp,
                          void (*on_ready)(uv_stream_t *tcp));
/* The connection is closing (before uv_close on its TCP handle): no
 * callback of the caller runs any more. notify: a clean end, close_notify
 * goes out if the socket takes it at once; false after a response was
 * cut, so that a body delimited by the close never looks complete. */
void latch__tls_close(latch_tls *t, bool notify);
/* Frees t once its TCP handle is closed (NULL: nothing). */
void latch__tls_free(latch_tls *t);

/* As uv_read_start / uv_read_stop, with plaintext. alloc and read are
 * called with the TCP handle; read gets nread > 0 (plaintext), 0, UV_EOF
 * (the peer's close_notify or a TCP FIN, with or without close_notify),
 * UV_EPROTO (a TLS failure: the alert is on its way), LATCH_TLS_EPLAIN, or
 * the socket's error. Plaintext already decrypted when reading resumes is
 * delivered from the loop, never from inside latch__tls_read_start. */
int latch__tls_read_start(latch_tls *t, uv_alloc_cb alloc, uv_read_cb read);
void latch__tls_read_stop(latch_tls *t);
/* As uv_try_write: plaintext bytes taken (encrypted, and all but at most
 * 64 KiB of ciphertext handed to the socket; the rest is written before
 * anything later), or UV_EAGAIN while earlier output is still queued, or
 * an error. Called from inside the read callback, the ciphertext goes
 * out when the callback returns, in one write with the answers to the
 * other records of the same read. */
int latch__tls_try_write(latch_tls *t, const uv_buf_t *b);
/* As uv_write of one buffer: cb(req, status) once its ciphertext went to
 * the socket (UV_ECANCELED when the handle closed first). 0 or an error
 * (cb not called). */
int latch__tls_write(latch_tls *t, uv_write_t *req, const uv_buf_t *b,
                     uv_write_cb cb);
/* Plaintext of the queued uv_write not encrypted yet (it is encrypted as
 * the socket takes what came before). */
size_t latch__tls_unsent(const latch_tls *t);
/* As uv_shutdown: sends close_notify (when notify: not after a cut
 * response) after what is queued, then shuts the TCP write side down. */
int latch__tls_shutdown(latch_tls *t, uv_shutdown_t *req, uv_shutdown_cb cb,
                        bool notify);
/* How far the handshake went, for shedding under a cap: 0 nothing
 * received yet, 1 part of a ClientHello, 2 a whole one (the server
 * answered it and spent a key exchange on it), or past the handshake;
 * a failed one is 0 (its alert is all that is left to send). */
int latch__tls_progress(const latch_tls *t);

#endif
