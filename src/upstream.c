/*
 * upstream.c - the upstream client: connections to upstream HTTP/1.1
 * servers, kept alive in a pool per worker and per upstream, carrying one
 * exchange (a latch_ucall) at a time.
 *
 * A call resolves the name off the loop (uv_getaddrinfo; IP literals are
 * used as they are), connects, writes the whole request the proxy built,
 * and reads the answer with the strict parser in its response mode
 * (parser.c): 1xx heads are dropped, a 101 is refused, and whatever the
 * parser refuses fails the call before a byte of it is handed on. Body
 * bytes go to the owner decoded, with pause/resume for backpressure.
 * Timeouts: connect (resolve included), response (the head, then each read
 * of the body while the owner wants it) and idle (in the pool).
 *
 * A connection goes back to the pool only when its exchange ended exactly
 * at the end of the bytes read, the response allowed keep-alive and the
 * worker is not draining; anything else closes it. A call on a reused
 * connection that fails before any response byte is sent again once on a
 * fresh connection when the request is idempotent (the upstream may have
 * closed the idle connection as we wrote).
 *
 * The request goes out through a buffer per connection: the head (and a
 * whole body the proxy had) at once, or the head and then a body streamed
 * piece by piece (latch__ucall_send) with backpressure: past a high-water
 * mark of bytes not yet taken by the socket the owner is told to wait,
 * and resumed (drain) once they fell below a low-water mark. A call whose
 * body was streamed is retried only when no byte of that body went out.
 *
 * It is not the proxy: it knows nothing of responses to clients, headers
 * to forward, body framing, or how an error is answered.
 */
#include "upstream.h"

#include <stdlib.h>
#include <string.h>

#define DEFAULT_CONNECT_MS 5000
#define DEFAULT_RESPONSE_MS 60000
#define DEFAULT_IDLE_MS 60000
#define DEFAULT_MAX_IDLE 32
/* Interim (1xx) heads allowed before the final one: more is a flood. */
#define MAX_INTERIM 8
/* Read buffer: a head must fit; body bytes pass through in reads of this
 * much at most. */
#define READ_CHUNK 65536
#define RBUF_LIMIT (16384 + 2 * READ_CHUNK)
#define MAX_FIELDS 100
/* Request bytes a connection holds before the owner waits (drain), and
 * the level that resumes it; a hard cap past which a send fails. */
#define OUT_HIGH (64 * 1024)
#define OUT_LOW (16 * 1024)
#define OUT_LIMIT (8 * 1024 * 1024)

static const latch_parse_limits resp_limits = {
    .request_line = 8192,
    .field_line = 8192,
    .head = 16384,
    .fields = MAX_FIELDS,
    .body = UINT64_MAX, /* streamed: no limit on what passes through */
    .chunk_ext = 16384,
};

typedef struct latch_upool latch_upool;
typedef struct latch_uconn latch_uconn;

enum {
    UC_RESOLVING = 0,
    UC_CONNECTING,
    UC_ACTIVE, /* carrying a call */
    UC_IDLE,   /* in the pool */
    UC_CLOSING,
};

struct latch_uconn {
    uv_tcp_t tcp;
    uv_timer_t timer;
    uv_getaddrinfo_t gai;
    uv_connect_t creq;
    uv_write_t wreq;
    latch_upool *pool;
    latch_uconn *next_idle;
    latch_ucall *call;
    int state;
    int closes;        /* handle closes (and a resolver callback) owed */
    bool gai_pending;  /* uv_getaddrinfo's callback has not run */
    bool writing;      /* uv_write in flight: wreq in use */
    bool reused;       /* carried an exchange before this one */
    bool reading;      /* uv_read_start in effect */
    bool head_done;    /* the final head was handed on */
    int start_err;     /* a failure found while starting (deferred) */
    char idle_buf[16]; /* what an idle connection reads (and drops) */
    bool eof;          /* the upstream half-closed */
    uint8_t interim;   /* 1xx heads of this exchange */
    uint64_t got;      /* response bytes of this exchange */
    latch_buf rb;      /* [0, rb.len): bytes read, not handed on */
    latch_buf ob;      /* request bytes not yet handed to uv_write */
    latch_buf wb;      /* request bytes uv_write has (while writing) */
    latch_parser parser;
    latch_field fields[MAX_FIELDS];
};

struct latch_upool {
    latch_upool *next;
    char *key;
    latch_uconn *idle;
    int nidle, nopen;
};

/* A worker's pools, found through the worker's hook list. */
typedef struct latch_uworker {
    latch_whook hook;
    latch_upool *pools;
    bool draining;
} latch_uworker;

struct latch_ucall {
    latch_worker *w;
    const latch_upstream *u;
    latch_uopts o;
    char *req;
    size_t len;
    bool idempotent, head_request, retried;
    bool body_open;     /* body bytes still to come (latch__ucall_send) */
    bool want_drain;    /* a send returned 0: drain when below OUT_LOW */
    uint64_t body_sent; /* streamed body bytes taken so far */
    bool busy;          /* inside a callback of the owner: free later */
    bool dead;          /* aborted or done: no more callbacks */
    const latch_ucall_ops *ops;
    void *data;
    latch_uconn *c;
    latch_upool *pool;
};

static void uw_drain(latch_whook *h, latch_worker *w);
static void uw_finish(latch_whook *h, latch_worker *w);
static void conn_close(latch_uconn *c);
static void call_fail(latch_ucall *x, int status);
static void process(latch_uconn *c);
static int open_conn(latch_ucall *x);
static void on_deferred_fail(uv_timer_t *t);

/* ---- targets ------------------------------------------------------- */

static char *dup_n(const char *s, size_t n)
{
    char *d = malloc(n + 1);

    if (d != NULL) {
        memcpy(d, s, n);
        d[n] = '\0';
    }
    return d;
}

void latch__upstream_dispose(latch_upstream *u)
{
    if (u == NULL)
        return;
    free(u->host);
    free(u->authority);
    free(u->base);
    free(u->key);
    memset(u, 0, sizeof(*u));
}

static bool host_byte_ok(unsigned char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
           (ch >= '0' && ch <= '9') || ch == '-' || ch == '.' || ch == '_';
}

int latch__upstream_parse(const char *url, latch_upstream *u)
{
    const char *h, *he, *p, *path;
    char auth[300], key[300];
    bool v6 = false;
    long port = 80;
    size_t plen;

    memset(u, 0, sizeof(*u));
    if (url == NULL || strncmp(url, "http://", 7) != 0)
        return LATCH_ERR_INVALID_ARG;
    h = url + 7;
    path = h + strcspn(h, "/?#");
    if (*path == '?' || *path == '#' || memchr(h, '@', (size_t)(path - h)))
        return LATCH_ERR_INVALID_ARG;
    if (*h == '[') {
        v6 = true;
        he = memchr(h, ']', (size_t)(path - h));
        if (he == NULL)
            return LATCH_ERR_INVALID_ARG;
        h++;
        p = he + 1;
        for (const char *q = h; q < he; q++)
            if (!((*q >= '0' && *q <= '9') || (*q >= 'a' && *q <= 'f') ||
                  (*q >= 'A' && *q <= 'F') || *q == ':' || *q == '.'))
                return LATCH_ERR_INVALID_ARG;
    } else {
        he = h;
        while (he < path && *he != ':')
            he++;
        p = he;
        for (const char *q = h; q < he; q++)
            if (!host_byte_ok((unsigned char)*q))
                return LATCH_ERR_INVALID_ARG;
    }
    if (he == h || he - h > 253)
        return LATCH_ERR_INVALID_ARG;
    if (p < path) {
        char *end;

        if (*p != ':' || p + 1 == path || p + 6 < path)
            return LATCH_ERR_INVALID_ARG;
        for (const char *q = p + 1; q < path; q++)
            if (*q < '0' || *q > '9')
                return LATCH_ERR_INVALID_ARG;
        port = strtol(p + 1, &end, 10);
        if (port < 1 || port > 65535)
            return LATCH_ERR_INVALID_ARG;
    }
    /* The base path: as given, less a trailing '/', checked as a request
     * target's bytes (it is sent as one). */
    plen = strlen(path);
    for (size_t i = 0; i < plen; i++)
        if ((unsigned char)path[i] <= 0x20 || (unsigned char)path[i] >= 0x7f ||
            path[i] == '?' || path[i] == '#')
            return LATCH_ERR_INVALID_ARG;
    while (plen > 0 && path[plen - 1] == '/')
        plen--;
    snprintf(auth, sizeof(auth), "%s%.*s%s", v6 ? "[" : "", (int)(he - h), h,
             v6 ? "]" : "");
    if (port != 80) {
        size_t n = strlen(auth);
        snprintf(auth + n, sizeof(auth) - n, ":%ld", port);
    }
    snprintf(key, sizeof(key), "%.*s %ld", (int)(he - h), h, port);
    u->port = (int)port;
    u->host = dup_n(h, (size_t)(he - h));
    u->authority = dup_n(auth, strlen(auth));
    u->base = dup_n(path, plen);
    u->key = dup_n(key, strlen(key));
    if (!u->host || !u->authority || !u->base || !u->key) {
        latch__upstream_dispose(u);
        return LATCH_ERR_NOMEM;
    }
    return 0;
}

/* ---- pools ----------------------------------------------------------- */

static const latch_whook uw_proto = {NULL, uw_drain, uw_finish};

static latch_uworker *uworker(latch_worker *w, bool make)
{
    latch_uworker *uw;

    for (latch_whook *h = w->hooks; h != NULL; h = h->next)
        if (h->finish == uw_finish)
            return LATCH_CONTAINER_OF(h, latch_uworker, hook);
    if (!make || (uw = calloc(1, sizeof(*uw))) == NULL)
        return NULL;
    uw->hook = uw_proto;
    latch__worker_hook(w, &uw->hook);
    return uw;
}

static latch_upool *pool_get(latch_worker *w, const latch_upstream *u,
                             bool make)
{
    latch_uworker *uw = uworker(w, make);
    latch_upool *p;

    if (uw == NULL)
        return NULL;
    for (p = uw->pools; p != NULL; p = p->next)
        if (strcmp(p->key, u->key) == 0)
            return p;
    if (!make || (p = calloc(1, sizeof(*p))) == NULL)
        return NULL;
    if ((p->key = dup_n(u->key, strlen(u->key))) == NULL) {
        free(p);
        return NULL;
    }
    p->next = uw->pools;
    uw->pools = p;
    return p;
}

static void idle_unlink(latch_uconn *c)
{
    latch_uconn **pp = &c->pool->idle;

    while (*pp != NULL && *pp != c)
        pp = &(*pp)->next_idle;
    if (*pp == c) {
        *pp = c->next_idle;
        c->pool->nidle--;
    }
    c->next_idle = NULL;
}

/* The worker stops: pooled connections go now, busy ones after their
 * exchange. */
static void uw_drain(latch_whook *h, latch_worker *w)
{
    latch_uworker *uw = LATCH_CONTAINER_OF(h, latch_uworker, hook);

    (void)w;
    uw->draining = true;
    for (latch_upool *p = uw->pools; p != NULL; p = p->next)
        while (p->idle != NULL)
            conn_close(p->idle);
}

/* No client connection is left: no call either (each is tied to a
 * response). The pools go; a connection still closing no longer names
 * its pool. */
static void uw_finish(latch_whook *h, latch_worker *w)
{
    latch_uworker *uw = LATCH_CONTAINER_OF(h, latch_uworker, hook);
    latch_upool *p, *next;

    uw_drain(h, w);
    for (p = uw->pools; p != NULL; p = next) {
        next = p->next;
        free(p->key);
        free(p);
    }
    free(uw);
}

/* ---- connections ----------------------------------------------------- */

static void conn_free_maybe(latch_uconn *c)
{
    if (c->closes == 0 && !c->gai_pending) {
        latch__buf_dispose(&c->rb);
        latch__buf_dispose(&c->ob);
        latch__buf_dispose(&c->wb);
        free(c);
    }
}

static void on_handle_closed(uv_handle_t *h)
{
    latch_uconn *c = h->data;

    c->closes--;
    conn_free_maybe(c);
}

/* Closes c now: it leaves its pool and its call (which must have let go
 * of it or be failing). */
static void conn_close(latch_uconn *c)
{
    if (c->state == UC_CLOSING)
        return;
    if (c->state == UC_IDLE)
        idle_unlink(c);
    c->state = UC_CLOSING;
    if (c->pool != NULL)
        c->pool->nopen--;
    c->pool = NULL;
    if (c->call != NULL && c->call->c == c)
        c->call->c = NULL;
    c->call = NULL;
    if (c->gai_pending)
        uv_cancel((uv_req_t *)&c->gai); /* its callback frees, or we do */
    c->closes = 2;
    uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
    uv_close((uv_handle_t *)&c->timer, on_handle_closed);
}

static void arm(latch_uconn *c, uint64_t ms, uv_timer_cb cb)
{
    uv_timer_start(&c->timer, cb, ms, 0);
}

static void on_idle_timeout(uv_timer_t *t)
{
    conn_close(t->data);
}

static void on_call_timeout(uv_timer_t *t)
{
    latch_uconn *c = t->data;

    if (c->call != NULL)
        call_fail(c->call, UV_ETIMEDOUT);
}

static void alloc_cb(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    latch_uconn *c = h->data;

    (void)hint;
    if (c->state == UC_IDLE) {
        buf->base = c->idle_buf;
        buf->len = sizeof(c->idle_buf);
        return;
    }
    if (latch__buf_reserve(&c->rb, READ_CHUNK, RBUF_LIMIT) < 0) {
        buf->base = NULL;
        buf->len = 0;
        return;
    }
    buf->base = c->rb.data + c->rb.len;
    buf->len = c->rb.cap - c->rb.len;
}

static void read_stop(latch_uconn *c)
{
    if (c->reading) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = false;
    }
}

static void read_cb(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    latch_uconn *c = s->data;

    (void)buf;
    if (n == 0)
        return;
    if (c->state == UC_IDLE) {
        /* Nothing may arrive on an idle connection: a close, or bytes
         * that belong to no request. Either way it cannot be reused. */
        conn_close(c);
        return;
    }
    if (c->state != UC_ACTIVE || c->call == NULL)
        return;
    if (n < 0) {
        if (n == UV_ENOBUFS) {
            call_fail(c->call, LATCH_ERR_UPSTREAM);
            return;
        }
        if (n != UV_EOF) {
            call_fail(c->call, (int)n);
            return;
        }
        c->eof = true;
        read_stop(c);
    } else {
        c->rb.len += (size_t)n;
        c->got += (uint64_t)n;
        arm(c, c->call->o.response_ms, on_call_timeout);
    }
    process(c);
}

/*
 * The exchange on c ended well: back to the pool, or closed.
 *
 * A request write still "in flight" whose bytes all went to the kernel
 * (libuv's queue is empty) is done but for its callback, which libuv runs
 * on a later turn: the answer can be parsed first (the next pipelined
 * request, dispatched from the done callback, then found no pooled
 * connection and opened one, and this one was closed: connections
 * churned behind every pipelined client). Such a connection is pooled;
 * write_cb clears `writing`, and flushes what a new call queued on it
 * meanwhile (out_flush waits for it).
 */
static void conn_release(latch_uconn *c)
{
    latch_uworker *uw = uworker(c->call->w, false);
    latch_ucall *x = c->call;
    bool flushed = !c->writing ||
                   uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) == 0;
    bool keep = c->parser.keep_alive && c->rb.len == 0 && !c->eof && flushed &&
                c->ob.len == 0 && !x->body_open && x->o.max_idle >= 0 &&
                uw != NULL && !uw->draining && c->pool != NULL &&
                c->pool->nidle < x->o.max_idle;

    c->call = NULL;
    x->c = NULL;
    if (!keep) {
        conn_close(c);
        return;
    }
    c->state = UC_IDLE;
    c->reused = true;
    c->next_idle = c->pool->idle;
    c->pool->idle = c;
    c->pool->nidle++;
    /* Idle: no buffer kept (wb once its write's callback ran), and a
     * read armed to notice a close. */
    latch__buf_dispose(&c->rb);
    latch__buf_dispose(&c->ob);
    if (!c->writing)
        latch__buf_dispose(&c->wb);
    if (!c->reading) {
        uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb);
        c->reading = true;
    }
    arm(c, x->o.idle_ms, on_idle_timeout);
}

/* ---- calls ----------------------------------------------------------- */

static void call_free(latch_ucall *x)
{
    free(x->req);
    free(x);
}

/* done, once; the call is over. */
static void call_finish(latch_ucall *x, int status, bool headed)
{
    x->dead = true;
    x->busy = true;
    x->ops->done(x->data, status, headed);
    call_free(x);
}

/*
 * The call failed on its connection: retried once on a fresh one when
 * that is safe, else done with the error. The connection is closed.
 */
static void call_fail(latch_ucall *x, int status)
{
    latch_uconn *c = x->c;
    bool headed = c != NULL && c->head_done;
    bool nothing = c == NULL || c->got == 0;

    if (c != NULL)
        conn_close(c);
    if (x->dead)
        return;
    if (nothing && c != NULL && c->reused && x->idempotent && !x->retried &&
        x->body_sent == 0 && status != UV_ETIMEDOUT &&
        status != LATCH_ERR_UPSTREAM) {
        x->retried = true;
        x->pool = pool_get(x->w, x->u, true);
        if (open_conn(x) == 0)
            return;
    }
    call_finish(x, status, headed);
}

/* The final head: handed on, its framing kept for the body. */
static int deliver_head(latch_uconn *c)
{
    latch_parser *p = &c->parser;
    latch_uhead h;
    int r;

    h.buf = c->rb.data;
    h.fields = c->fields;
    h.nfields = p->nfields;
    h.status = p->code;
    h.version_minor = p->version_minor;
    h.body_kind = p->body_kind;
    h.has_cl = p->cl_count > 0;
    h.content_length = p->content_length;
    c->head_done = true;
    c->call->busy = true;
    r = c->call->ops->head(c->call->data, &h);
    c->call->busy = false;
    return r;
}

/* Drops the first n bytes of the read buffer. */
static void consume(latch_uconn *c, size_t n)
{
    memmove(c->rb.data, c->rb.data + n, c->rb.len - n);
    c->rb.len -= n;
}

/*
 * Parses what is buffered and hands it on, until more bytes are needed,
 * the owner pauses, the exchange ends, or it fails. The owner's callbacks
 * may abort the call: after each, the call is looked at again, and every
 * path that ends or fails the call returns at once (x may be freed).
 */
static void process(latch_uconn *c)
{
    latch_parser *p = &c->parser;
    latch_ucall *x = c->call;
    const char *data;
    size_t used, dlen;
    int r;

    if (x == NULL || x->dead)
        return;
    for (;;) {
        if (!c->head_done) {
            r = latch__parse_head(p, c->rb.data, c->rb.len);
            if (r == LATCH_PARSE_ERROR) {
                call_fail(x, LATCH_ERR_UPSTREAM);
                return;
            }
            if (r == LATCH_PARSE_AGAIN) {
                if (c->eof)
                    call_fail(x, c->got == 0 ? UV_ECONNRESET : UV_EOF);
                return;
            }
            if (p->code < 200) {
                /* 1xx: interim, dropped (the request went whole, so a
                 * 100 Continue changes nothing); a 101 was not asked for
                 * and many of them are a flood. */
                if (p->code == 101 || ++c->interim > MAX_INTERIM) {
                    call_fail(x, LATCH_ERR_UPSTREAM);
                    return;
                }
                if (p->code == 100 && x->ops->interim != NULL) {
                    /* The upstream wants the body: the owner may tell
                     * the client that waits for this word. */
                    x->busy = true;
                    x->ops->interim(x->data, 100);
                    x->busy = false;
                    if (x->dead) {
                        call_free(x);
                        return;
                    }
                }
                consume(c, p->head_len);
                latch__parser_reset_response(p, x->head_request);
                continue;
            }
            r = deliver_head(c);
            if (x->dead) {
                call_free(x); /* aborted from the callback */
                return;
            }
            if (r < 0) {
                call_fail(x, r);
                return;
            }
            consume(c, p->head_len);
            continue;
        }
        r = latch__parse_body(p, c->rb.data, c->rb.len, &used, &data, &dlen);
        if (r == LATCH_PARSE_ERROR) {
            call_fail(x, LATCH_ERR_UPSTREAM);
            return;
        }
        if (r == LATCH_PARSE_DONE) {
            consume(c, used);
            uv_timer_stop(&c->timer);
            conn_release(c);
            call_finish(x, 0, true);
            return;
        }
        if (r == LATCH_PARSE_DATA) {
            x->busy = true;
            r = x->ops->body(x->data, data, dlen);
            x->busy = false;
            if (x->dead) {
                call_free(x);
                return;
            }
            consume(c, used);
            if (r < 0) {
                call_fail(x, r);
                return;
            }
            if (r == 0) {
                /* The owner pauses: the rest waits in the buffer. */
                read_stop(c);
                uv_timer_stop(&c->timer);
                return;
            }
            continue;
        }
        /* AGAIN: everything buffered is consumed. */
        consume(c, used);
        if (!c->eof)
            return;
        if (p->body_kind == LATCH_BODY_CLOSE) {
            /* The close is this body's end. */
            conn_close(c);
            call_finish(x, 0, true);
            return;
        }
        call_fail(x, UV_EOF);
        return;
    }
}

/* Request bytes the connection holds: buffered, and in uv_write. */
static size_t out_pending(const latch_uconn *c)
{
    return c->ob.len + (c->writing ? c->wb.len : 0);
}

/*
 * The response timeout while the request goes out: it runs while bytes
 * wait for the upstream to take them (a stalled upstream) and once the
 * whole request went (waiting for the head); not while a streamed body
 * waits for its client, whose own body timeout applies.
 */
static void arm_response(latch_uconn *c)
{
    latch_ucall *x = c->call;

    if (c->head_done)
        return; /* the body's reads re-arm it */
    if (x->body_open && out_pending(c) == 0)
        uv_timer_stop(&c->timer);
    else
        arm(c, x->o.response_ms, on_call_timeout);
}

static void write_cb(uv_write_t *wr, int status);

/*
 * Hands what ob holds to the socket when no write is in flight: what the
 * socket takes now is written at once (uv_try_write), the rest goes to
 * uv_write. A request almost always fits: then no write request, no
 * callback on a later turn, and no re-arming of the descriptor, which
 * libuv does when a write request's queue empties (one epoll_ctl per
 * proxied request). Returns 0 or the write's error.
 */
static int out_flush(latch_uconn *c)
{
    latch_buf t;
    uv_buf_t b;
    int r;

    if (c->writing || c->ob.len == 0 || c->state != UC_ACTIVE)
        return 0;
    b = uv_buf_init(c->ob.data, (unsigned)c->ob.len);
    r = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
    if (r < 0 && r != UV_EAGAIN)
        return r;
    if (r > 0) {
        memmove(c->ob.data, c->ob.data + r, c->ob.len - (size_t)r);
        c->ob.len -= (size_t)r;
    }
    if (c->ob.len == 0)
        return 0;
    t = c->wb;
    c->wb = c->ob;
    c->ob = t;
    c->ob.len = 0;
    b = uv_buf_init(c->wb.data, (unsigned)c->wb.len);
    c->wreq.data = c;
    r = uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &b, 1, write_cb);
    if (r == 0)
        c->writing = true;
    return r;
}

/* A send that returned 0 waits for drain: told once the bytes c holds
 * fell below the low-water mark. The caller touches x no more (drain may
 * have aborted it: then it is freed here). */
static void drain_check(latch_ucall *x, latch_uconn *c)
{
    if (!x->want_drain || out_pending(c) >= OUT_LOW)
        return;
    x->want_drain = false;
    if (x->ops->drain != NULL) {
        x->busy = true;
        x->ops->drain(x->data);
        x->busy = false;
        if (x->dead)
            call_free(x);
    }
}

static void write_cb(uv_write_t *wr, int status)
{
    latch_uconn *c = wr->data;
    latch_ucall *x = c->call;
    int r;

    c->writing = false;
    c->wb.len = 0;
    if (c->state == UC_IDLE)
        latch__buf_dispose(&c->wb); /* pooled before this callback */
    if (c->state == UC_CLOSING || x == NULL)
        return;
    if (status < 0) {
        call_fail(x, status);
        return;
    }
    if ((r = out_flush(c)) < 0) {
        call_fail(x, r);
        return;
    }
    arm_response(c);
    drain_check(x, c);
}

/* The call takes connection c; its request head waits in c's buffer
 * (before any body byte sent while c connects). */
static int conn_attach(latch_uconn *c, latch_ucall *x)
{
    c->call = x;
    x->c = c;
    return latch__buf_append(&c->ob, x->req, x->len, OUT_LIMIT);
}

/* c is connected (or was idle): the call's request goes out. */
static void conn_send(latch_uconn *c, latch_ucall *x)
{
    int r;

    c->state = UC_ACTIVE;
    c->got = 0;
    c->head_done = false;
    c->interim = 0;
    c->eof = false;
    latch__parser_init(&c->parser, &resp_limits, c->fields, MAX_FIELDS);
    latch__parser_reset_response(&c->parser, x->head_request);
    r = c->start_err;
    if (r == 0)
        r = out_flush(c);
    arm_response(c);
    if (r == 0 && !c->reading) {
        r = uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb);
        c->reading = r == 0;
    }
    if (r < 0) {
        /* Reported from the loop (this may run inside ucall_start). */
        c->start_err = r;
        arm(c, 0, on_deferred_fail);
    }
}

static void connect_cb(uv_connect_t *cr, int status)
{
    latch_uconn *c = cr->data;

    if (c->state == UC_CLOSING)
        return;
    if (status < 0) {
        if (c->call != NULL)
            call_fail(c->call, status);
        else
            conn_close(c);
        return;
    }
    if (c->call == NULL) {
        conn_close(c);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    conn_send(c, c->call);
    /* What the owner sent while c connected may have gone at once
     * (out_flush's uv_try_write): no write callback will say so. */
    if (c->start_err == 0 && c->call != NULL)
        drain_check(c->call, c);
}

/* A failure found while starting: reported from the loop, so that done
 * never runs inside latch__ucall_start (or inside a retry's caller). */
static void on_deferred_fail(uv_timer_t *t)
{
    latch_uconn *c = t->data;

    if (c->call != NULL)
        call_fail(c->call, c->start_err);
}

static void start_connect(latch_uconn *c, const struct sockaddr *sa)
{
    int r;

    c->state = UC_CONNECTING;
    c->creq.data = c;
    r = uv_tcp_connect(&c->creq, &c->tcp, sa, connect_cb);
    if (r < 0) {
        c->start_err = r;
        arm(c, 0, on_deferred_fail);
    }
}

static void gai_cb(uv_getaddrinfo_t *g, int status, struct addrinfo *res)
{
    latch_uconn *c = g->data;

    c->gai_pending = false;
    if (c->state == UC_CLOSING) {
        uv_freeaddrinfo(res);
        conn_free_maybe(c);
        return;
    }
    if (status < 0 || res == NULL) {
        uv_freeaddrinfo(res);
        call_fail(c->call, status < 0 ? status : UV_EAI_NONAME);
        return;
    }
    start_connect(c, res->ai_addr);
    uv_freeaddrinfo(res);
}

/* A new connection for x: resolved (or a literal), then connected. */
static int open_conn(latch_ucall *x)
{
    struct sockaddr_storage ss;
    latch_uconn *c = calloc(1, sizeof(*c));
    char port[8];

    if (c == NULL)
        return LATCH_ERR_NOMEM;
    uv_tcp_init(&x->w->loop, &c->tcp);
    uv_timer_init(&x->w->loop, &c->timer);
    c->tcp.data = c->timer.data = c->gai.data = c;
    c->pool = x->pool;
    c->pool->nopen++;
    if (conn_attach(c, x) < 0)
        c->start_err = LATCH_ERR_NOMEM; /* told once connected */
    arm(c, x->o.connect_ms, on_call_timeout);
    if (uv_ip4_addr(x->u->host, x->u->port, (struct sockaddr_in *)&ss) == 0 ||
        uv_ip6_addr(x->u->host, x->u->port, (struct sockaddr_in6 *)&ss) == 0) {
        start_connect(c, (const struct sockaddr *)&ss);
        return 0;
    }
    {
        struct addrinfo hints;
        int r;

        memset(&hints, 0, sizeof(hints));
        hints.ai_family = AF_UNSPEC;
        hints.ai_socktype = SOCK_STREAM;
        snprintf(port, sizeof(port), "%d", x->u->port);
        c->state = UC_RESOLVING;
        c->gai_pending = true;
        r = uv_getaddrinfo(&x->w->loop, &c->gai, gai_cb, x->u->host, port,
                           &hints);
        if (r < 0) {
            c->gai_pending = false;
            c->start_err = r;
            arm(c, 0, on_deferred_fail);
        }
    }
    return 0;
}

int latch__ucall_start(latch_worker *w, const latch_upstream *u,
                       const latch_uopts *o, char *req, size_t len,
                       bool body_follows, bool idempotent, bool head_request,
                       const latch_ucall_ops *ops, void *data,
                       latch_ucall **out)
{
    latch_ucall *x = calloc(1, sizeof(*x));
    latch_upool *pool = pool_get(w, u, true);
    latch_uconn *c;
    int r;

    *out = NULL;
    if (x == NULL || pool == NULL) {
        free(x);
        free(req);
        return LATCH_ERR_NOMEM;
    }
    x->w = w;
    x->u = u;
    x->o = *o;
    if (x->o.connect_ms == 0)
        x->o.connect_ms = DEFAULT_CONNECT_MS;
    if (x->o.response_ms == 0)
        x->o.response_ms = DEFAULT_RESPONSE_MS;
    if (x->o.idle_ms == 0)
        x->o.idle_ms = DEFAULT_IDLE_MS;
    if (x->o.max_idle == 0)
        x->o.max_idle = DEFAULT_MAX_IDLE;
    x->req = req;
    x->len = len;
    x->idempotent = idempotent;
    x->head_request = head_request;
    x->body_open = body_follows;
    x->ops = ops;
    x->data = data;
    x->pool = pool;
    /* The most recently pooled connection first: the warmest. */
    if ((c = pool->idle) != NULL) {
        idle_unlink(c);
        uv_timer_stop(&c->timer);
        c->start_err = conn_attach(c, x);
        conn_send(c, x);
        *out = x;
        return 0;
    }
    r = open_conn(x);
    if (r < 0) {
        x->req = NULL;
        call_free(x);
        free(req);
        return r;
    }
    *out = x;
    return 0;
}

int latch__ucall_send(latch_ucall *x, const uv_buf_t *bufs, int n)
{
    latch_uconn *c;
    size_t total = 0;

    if (x == NULL || x->dead || !x->body_open || (c = x->c) == NULL ||
        c->state == UC_CLOSING)
        return LATCH_ERR_STATE;
    for (int i = 0; i < n; i++) {
        if (latch__buf_append(&c->ob, bufs[i].base, bufs[i].len, OUT_LIMIT) <
            0) {
            /* Told from the loop, as a failure of the connection. */
            c->start_err = LATCH_ERR_LIMIT;
            arm(c, 0, on_deferred_fail);
            return LATCH_ERR_LIMIT;
        }
        total += bufs[i].len;
    }
    x->body_sent += total;
    if (c->state == UC_ACTIVE) {
        int r = out_flush(c);
        if (r < 0) {
            c->start_err = r;
            arm(c, 0, on_deferred_fail);
            return r;
        }
        arm_response(c);
    }
    if (out_pending(c) >= OUT_HIGH) {
        x->want_drain = true;
        return 0;
    }
    return 1;
}

void latch__ucall_send_end(latch_ucall *x)
{
    if (x == NULL || x->dead || !x->body_open)
        return;
    x->body_open = false;
    if (x->c != NULL && x->c->state == UC_ACTIVE)
        arm_response(x->c);
}

void latch__ucall_resume(latch_ucall *x)
{
    latch_uconn *c;

    if (x == NULL || x->dead || (c = x->c) == NULL || c->state != UC_ACTIVE ||
        x->busy)
        return;
    if (!c->reading && !c->eof) {
        if (uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb) < 0) {
            call_fail(x, UV_EIO);
            return;
        }
        c->reading = true;
    }
    arm(c, x->o.response_ms, on_call_timeout);
    if (c->rb.len > 0 || c->eof)
        process(c);
}

void latch__ucall_abort(latch_ucall *x)
{
    if (x == NULL || x->dead)
        return;
    x->dead = true;
    if (x->c != NULL)
        conn_close(x->c);
    if (!x->busy)
        call_free(x);
}
