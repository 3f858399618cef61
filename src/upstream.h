/*
 * upstream.h - latch's HTTP/1.1 client for upstream servers (upstream.c),
 * as the reverse proxy (proxy.c) uses it: one exchange at a time per
 * connection, connections kept alive in a pool per worker and upstream.
 *
 * Private to src/. Everything here runs on one worker's loop.
 */
#ifndef LATCH_UPSTREAM_H
#define LATCH_UPSTREAM_H

#include "internal.h"

/* A parsed target, "http://host[:port][/base]": immutable once parsed, so
 * an app's route may share one among its workers. */
typedef struct latch_upstream {
    char *host;      /* name or IP literal as connected to (no brackets) */
    char *authority; /* for Host: "host", "host:port", "[::1]:port" */
    char *base;      /* path prefix without a trailing '/': "" for none */
    char *key;       /* the pool's key: "host port" */
    int port;
} latch_upstream;

/* Parses `url` into *u (owning its strings). Only http: with a host; a
 * port in 1..65535 (default 80); no userinfo, query or fragment. Returns
 * 0, LATCH_ERR_INVALID_ARG (*u zeroed) or LATCH_ERR_NOMEM. */
int latch__upstream_parse(const char *url, latch_upstream *u);
/* Frees what parse allocated; NULL and a zeroed *u are fine. */
void latch__upstream_dispose(latch_upstream *u);

typedef struct latch_uopts {
    uint64_t connect_ms;  /* resolve + connect; 0: 5 s */
    uint64_t response_ms; /* waiting for the head, and between reads of
                             the body while it is wanted; 0: 60 s */
    uint64_t idle_ms;     /* a pooled connection unused; 0: 60 s */
    int max_idle;         /* pooled per upstream per worker; 0: 32;
                             negative: none (Connection: close) */
} latch_uopts;

/* The final response head, valid during the head callback only. */
typedef struct latch_uhead {
    const char *buf; /* the head's bytes: the fields' spans are from it */
    const latch_field *fields;
    uint32_t nfields;
    int status;
    uint8_t version_minor;
    int body_kind;           /* LATCH_BODY_*: how the body is framed */
    bool has_cl;             /* a (valid) Content-Length field is there */
    uint64_t content_length; /* its value */
} latch_uhead;

/*
 * What a call tells its owner, on the worker's loop. After done, and
 * after latch__ucall_abort, nothing more is called.
 */
typedef struct latch_ucall_ops {
    /* The final head (1xx are read and dropped here; a 101 is refused).
     * 0 goes on; a negative code fails the call with it (done follows). */
    int (*head)(void *data, const latch_uhead *h);
    /* Body bytes (decoded: never chunk framing). 1 goes on; 0 pauses
     * reading until latch__ucall_resume; negative fails the call. */
    int (*body)(void *data, const char *p, size_t n);
    /* Exactly once: 0 after the whole body, else why it failed: a libuv
     * code (UV_ECONNREFUSED, UV_ECONNRESET, UV_EOF for a close before the
     * end, UV_EAI_* from the resolver), UV_ETIMEDOUT, or
     * LATCH_ERR_UPSTREAM for a response the strict parser refused.
     * `headed` says whether the head callback ran. */
    void (*done)(void *data, int status, bool headed);
    /* Optional: an interim 100 Continue arrived (other 1xx are dropped
     * silently). */
    void (*interim)(void *data, int status);
    /* Optional: a latch__ucall_send that returned 0 may be followed by
     * more; the bytes held fell below the low-water mark. */
    void (*drain)(void *data);
} latch_ucall_ops;

typedef struct latch_ucall latch_ucall;

/*
 * Sends one request (`req`, len bytes: a complete message, head and any
 * body, or with `body_follows` the head and as much of the body as the
 * caller has, the rest to come through latch__ucall_send; the call takes
 * ownership of the malloc'd buffer, also on failure) to `u` on worker w,
 * on an idle pooled connection when there is one, else a new one. `u`
 * must outlive the call. `idempotent`: when a reused connection fails
 * before any byte of the response (and before any byte given to
 * latch__ucall_send), the request is sent once more on a fresh
 * connection. `head_request`: the answer to HEAD has no body. Returns 0
 * with *out set (then done runs exactly once, never before this returns,
 * unless aborted), or LATCH_ERR_NOMEM.
 */
int latch__ucall_start(latch_worker *w, const latch_upstream *u,
                       const latch_uopts *o, char *req, size_t len,
                       bool body_follows, bool idempotent, bool head_request,
                       const latch_ucall_ops *ops, void *data,
                       latch_ucall **out);
/*
 * More of the request's body (bytes as they go on the wire: the caller
 * frames them), copied. Returns 1 (more is welcome), 0 (taken, but wait
 * for ops->drain before the next), or an error (LATCH_ERR_STATE: the call
 * is over or its body ended; LATCH_ERR_LIMIT: far past the high-water
 * mark): then the bytes were not taken, and a failure of the call's
 * connection is told through done. Never calls back before it returns.
 */
int latch__ucall_send(latch_ucall *x, const uv_buf_t *bufs, int n);
/* The request's body is complete (the caller sent its last framing):
 * the response timeout runs from here. */
void latch__ucall_send_end(latch_ucall *x);
/* Reads the response on after a callback paused it (backpressure); the
 * response timeout runs again. May deliver buffered bytes before it
 * returns. */
void latch__ucall_resume(latch_ucall *x);
/* Gives the call up: its connection is closed now (never pooled) and no
 * callback runs after this. May be called from inside a callback. */
void latch__ucall_abort(latch_ucall *x);

#endif
