/*
 * conn.c - one TCP connection: the read buffer and the parser, the queue
 * of pipelined requests, the write path, timeouts, keep-alive and close.
 *
 * Reading: bytes land in a reference-counted read buffer (rbuf). A request
 * whose head is complete keeps a reference to the buffer holding its head,
 * so its fields stay slices of what was read (zero copy) while the
 * connection reads on, into the same buffer when it can and into a fresh
 * one when the old one is still referenced. Bodies are copied into the
 * request, up to the body limit, except a streamed body (a request under
 * a latch_use_proxy prefix): its request is dispatched at its head and
 * the body goes to the sink the handler attaches as it arrives, reading
 * paused while the sink is not ready (latch__res_body_sink).
 *
 * Writing: responses sit in a queue in request order. Only the first one
 * that has not ended (the writer) appends to the connection's output
 * buffer; later ones buffer their bytes until they become the writer, so
 * responses leave strictly in order even when a later one finishes first.
 * Output is flushed once per loop turn (a uv_prepare in server.c), which
 * makes one write(2) per connection per batch of pipelined requests.
 *
 * Timeouts: a connection waits on at most one timeout at a time (header,
 * body, keep-alive idle, linger). Each kind keeps its connections in a list
 * ordered by deadline, and one timer per worker fires for the earliest.
 *
 * TLS: a connection of a TLS listener reads and writes through tls.c
 * (the io_* calls below pick it or libuv's stream calls), which hands the
 * same callbacks plaintext; nothing else here differs, except the
 * handshake timeout and the 400 for plain HTTP sent to a TLS port.
 *
 * This module decides nothing about response contents (res.c) nor which
 * handler runs (app.c); it answers protocol errors itself, through res.c.
 */
#include "conn.h"
#include "internal.h"
#include "tls.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/sockios.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <unistd.h>

/* Used before their definitions below. */
static void mark_dirty(latch_conn *c);
static void close_why(latch_conn *c, int reason);
static void protocol_error(latch_conn *c, int status, const char *reason);
static void send_continue(latch_conn *c);
static void flush_now(latch_conn *c);
static void sweep(latch_worker *w);
static void conn_destroy(latch_conn *c);
static size_t pending_out(const latch_conn *c);
static void rbuf_release(latch_worker *w, latch_rbuf *rb);
static latch_buf *h1_sink(latch_res *res);
static void h1_unhold(latch_res *res);
static void h1_last(latch_res *res);
static void h1_ended(latch_res *res);
static void h1_cut(latch_res *res, const char *event, int reason);
/*
 * The exchange op for a file body (file.c through latch__res_sendfile):
 * `len` bytes of the regular file `fd` from `off` go to the socket with
 * sendfile(2), no copy through memory, after every byte the connection
 * holds for the responses before and for `res` itself, and before any
 * byte `res` writes later (buffered meanwhile) or any later response's.
 * Driven by the socket's writability on the loop, under the send timeout,
 * at most a bounded amount per loop turn.
 *
 * h1_can_sendfile says whether `res` may start one now: it is the
 * connection's writer with nothing buffered of its own and no file body
 * going out. h1_sendfile returns 0 (cb runs exactly once later),
 * 1 when it may not start now (the caller copies instead), or an error
 * (no memory): then cb never runs. The writability watch is made when
 * the body first has to wait; without one the connection closes (cb gets
 * UV_ECANCELED: the body is cut).
 * cb(res, status, data) on the loop: 0 when the OS took the last byte,
 * UV_EOF when the file ended short of `len` (it shrank), another negative
 * errno of sendfile, or UV_ECANCELED when the connection closed or `res`
 * was cut first. `fd` stays the caller's; it must stay open until cb.
 * Nothing of the connection is touched after cb with UV_ECANCELED.
 */
static bool h1_can_sendfile(const latch_res *res);
static int h1_sendfile(latch_res *res, int fd, uint64_t off, uint64_t len,
                       latch_sendfile_cb cb, void *data);
static const latch_exchange_ops h1_exchange;

#define RBUF_SIZE (16u * 1024)
/* A connection's first read buffer: enough for the first request's head
 * almost always, and all that a request kept for long (a stream, a long
 * poll) pins with its head when nothing told latch it would be (make_room
 * moves to a RBUF_SIZE one the first time it fills). */
#define RBUF_FIRST 2048u
/* Kept for new connections: a few, since a connection gives its first
 * buffer back as soon as its first request is read (or never, when that
 * request stays open). */
#define RBUF_FIRST_FREE_MAX 64
#define RBUF_FREE_MAX 256
#define OUT_LIMIT ((size_t)1 << 40) /* bounded by the high-water mark */
#define HIGH_WATER ((size_t)64 * 1024)
/* An empty output buffer of the first size (buf.c's) goes back to the
 * worker's list, which keeps at most OUT_FREE_MAX of them. */
#define OUT_FIRST ((size_t)256)
#define OUT_FREE_MAX 256
/* Parsers kept for messages to come (a parser is taken per message). */
#define PARSER_FREE_MAX 256
/* Write-wait parts kept for sockets to fill (only slow clients and large
 * responses take one, and each gives it back once the socket drained). */
#define WAIT_FREE_MAX 64
/* What one file body may send in one loop turn before it lets the other
 * connections of the worker go (nginx's sendfile_max_chunk). */
#define SF_TURN ((size_t)2 << 20)

static void conn_close(latch_conn *c);
static void process(latch_conn *c);
static void on_closed(uv_handle_t *h);
static void no_more_requests(latch_conn *c);
static void went_idle(latch_conn *c);
static void start_linger(latch_conn *c);
static void advance_queue(latch_conn *c);
static void flush(latch_conn *c);
static void stream_fail(latch_conn *c, int status, const char *reason,
                        int code);
static latch_res *stream_release(latch_conn *c, latch_body_sink **sink);
static void sf_end(latch_conn *c, int status);

/* A file body going out with sendfile(2) (below, h1_sendfile). */
typedef struct latch_sfile {
    latch_res *res;
    int fd;
    uint64_t off, left;
    latch_sendfile_cb cb;
    void *data;
} latch_sfile;
static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

/* ------------------------------------------------------------------ */
/* The transport: the socket itself, or TLS over it (tls.c)             */
/* ------------------------------------------------------------------ */

/* The connection of its TCP handle (whose data tls.c may use). */
static latch_conn *conn_of(void *tcp)
{
    return LATCH_CONTAINER_OF(tcp, latch_conn, tcp);
}

static int io_read_start(latch_conn *c)
{
    if (c->tls != NULL)
        return latch__tls_read_start(c->tls, on_alloc, on_read);
    return uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

static void io_read_stop(latch_conn *c)
{
    if (c->tls != NULL)
        latch__tls_read_stop(c->tls);
    else
        uv_read_stop((uv_stream_t *)&c->tcp);
}

static int io_try_write(latch_conn *c, const uv_buf_t *b)
{
    if (c->tls != NULL)
        return latch__tls_try_write(c->tls, b);
    return uv_try_write((uv_stream_t *)&c->tcp, b, 1);
}

static int io_write(latch_conn *c, const uv_buf_t *b, uv_write_cb cb)
{
    if (c->tls != NULL)
        return latch__tls_write(c->tls, &c->wait->req, b, cb);
    return uv_write(&c->wait->req, (uv_stream_t *)&c->tcp, b, 1, cb);
}

static int io_shutdown(latch_conn *c, uv_shutdown_cb cb)
{
    if (c->tls != NULL)
        return latch__tls_shutdown(c->tls, &c->rare->sreq, cb,
                                   !(c->flags & LATCH_CF_CUT));
    return uv_shutdown(&c->rare->sreq, (uv_stream_t *)&c->tcp, cb);
}

/* ------------------------------------------------------------------ */
/* Read buffers                                                         */
/* ------------------------------------------------------------------ */

static latch_rbuf *rbuf_get(latch_worker *w, uint32_t cap)
{
    latch_rbuf *rb;

    if (cap == RBUF_SIZE && w->free_rbufs != NULL) {
        rb = w->free_rbufs;
        w->free_rbufs = rb->next_free;
        w->nfree_rbufs--;
    } else if (cap == RBUF_FIRST && w->free_first != NULL) {
        rb = w->free_first;
        w->free_first = rb->next_free;
        w->nfree_first--;
    } else {
        rb = malloc(sizeof(*rb) + cap);
        if (rb == NULL)
            return NULL;
        rb->cap = cap;
    }
    rb->refs = 1;
    rb->next_free = NULL;
    return rb;
}

static void rbuf_release(latch_worker *w, latch_rbuf *rb)
{
    if (rb == NULL || --rb->refs > 0)
        return;
    if (rb->cap == RBUF_SIZE && w->nfree_rbufs < RBUF_FREE_MAX) {
        rb->next_free = w->free_rbufs;
        w->free_rbufs = rb;
        w->nfree_rbufs++;
        return;
    }
    if (rb->cap == RBUF_FIRST && w->nfree_first < RBUF_FIRST_FREE_MAX) {
        rb->next_free = w->free_first;
        w->free_first = rb;
        w->nfree_first++;
        return;
    }
    free(rb);
}

/* The worker's intrusive free lists (output buffers, parsers). */
static void *fl_pop(latch_freelist *f)
{
    void *p = f->head;

    if (p != NULL) {
        memcpy(&f->head, p, sizeof(void *));
        f->n--;
    }
    return p;
}

/* False when the list holds `max` already: the caller frees `p`. */
static bool fl_push(latch_freelist *f, void *p, uint32_t max)
{
    if (f->n >= max)
        return false;
    memcpy(p, &f->head, sizeof(void *));
    f->head = p;
    f->n++;
    return true;
}

static void fl_free(latch_freelist *f)
{
    void *p;

    while ((p = fl_pop(f)) != NULL)
        free(p);
}

/*
 * Output buffers. A connection's `out` (and its wait part's `wout`) of the
 * first size (OUT_FIRST, what every response head and small body fits in) is
 * taken from the worker's list when a response first writes into it and goes
 * back when it is empty again (shrink), so the 10,000 idle keep-alive
 * connections of a server hold no output buffer, and a busy one pays a
 * list pop and push per response instead of malloc and free. A buffer
 * that grew stays with its connection (up to HIGH_WATER), as before.
 */
static void out_take(latch_worker *w, latch_buf *b)
{
    char *p;

    if (b->cap != 0 || (p = fl_pop(&w->free_outs)) == NULL)
        return;
    b->data = p;
    b->cap = OUT_FIRST;
}

static void out_give(latch_worker *w, latch_buf *b)
{
    if (!fl_push(&w->free_outs, b->data, OUT_FREE_MAX)) {
        latch__buf_dispose(b);
        return;
    }
    b->data = NULL;
    b->cap = 0;
}

/*
 * The write-wait part (conn.h): taken when output must wait for the
 * socket, given back by the flush that finds the socket drained, nothing
 * left to write and no file body waiting. wait_take returns 0, or -1
 * when out of memory.
 *
 * latch__conn_waits counts the parts connections hold now, all workers
 * together: a test hook (test_survive.c checks that each fill of the
 * socket takes one and each drain gives it back), counted only on this
 * slow path.
 */
atomic_uint latch__conn_waits;

static int wait_take(latch_conn *c)
{
    latch_conn_wait *wt;

    if (c->wait != NULL)
        return 0;
    wt = fl_pop(&c->w->free_waits);
    if (wt == NULL && (wt = malloc(sizeof(*wt))) == NULL)
        return -1;
    wt->req.data = c;
    memset(&wt->wout, 0, sizeof(wt->wout));
    wt->s_next = wt->s_prev = NULL;
    c->wait = wt;
    atomic_fetch_add_explicit(&latch__conn_waits, 1, memory_order_relaxed);
    return 0;
}

/* The part goes back to the pool, with no buffer: a buffer wout kept
 * (one that grew, under HIGH_WATER: shrink) becomes out's when out has
 * none, as it would have stayed with the connection; else it goes.
 * Only with LATCH_CF_WRITING and LATCH_CF_SENDQ clear, or on close. */
static void wait_give(latch_conn *c)
{
    latch_conn_wait *wt = c->wait;

    c->wait = NULL;
    atomic_fetch_sub_explicit(&latch__conn_waits, 1, memory_order_relaxed);
    if (wt->wout.cap != 0 && c->out.cap == 0 &&
        !(c->flags & LATCH_CF_CLOSING)) {
        c->out = wt->wout;
        c->out.len = 0;
    } else {
        latch__buf_dispose(&wt->wout);
    }
    if (!fl_push(&c->w->free_waits, wt, WAIT_FREE_MAX))
        free(wt);
}

/* Gives the wait part back if nothing waits for the socket any more. */
static void wait_done(latch_conn *c)
{
    if (c->wait != NULL && !(c->flags & (LATCH_CF_WRITING | LATCH_CF_SENDQ)))
        wait_give(c);
}

/* The rare part (conn.h), made the first time one of its fields is
 * needed. NULL when out of memory. */
static latch_conn_rare *rare_take(latch_conn *c)
{
    if (c->rare == NULL)
        c->rare = calloc(1, sizeof(*c->rare));
    return c->rare;
}

/* ------------------------------------------------------------------ */
/* Parsers                                                              */
/* ------------------------------------------------------------------ */

/* A message starts: the connection takes a parser. -1 when out of
 * memory. */
static int parser_take(latch_conn *c)
{
    latch_worker *w = c->w;
    latch_parser *p = fl_pop(&w->free_parsers);

    if (p == NULL && (p = malloc(sizeof(*p))) == NULL)
        return -1;
    /* What a reset keeps; process() resets it for the message at once. */
    p->lim = &w->app->cfg.parse;
    p->fields = NULL;
    p->fields_cap = 0;
    c->parser = p;
    return 0;
}

/* No message is being read: the parser goes back to the pool. */
static void parser_give_back(latch_conn *c)
{
    latch_parser *p = c->parser;

    if (p == NULL)
        return;
    c->parser = NULL;
    if (!fl_push(&c->w->free_parsers, p, PARSER_FREE_MAX))
        free(p);
}

/* The largest head a connection can need to hold in one buffer. */
static uint32_t rbuf_max(const latch_config *cfg)
{
    uint64_t m = (uint64_t)cfg->parse.request_line + cfg->parse.head + 4096;
    return m < RBUF_SIZE ? RBUF_SIZE : (uint32_t)m;
}

/*
 * Makes free room at the end of the read buffer. Only the bytes not yet
 * given to a request need to move: [msg, rlen) of an unfinished head, or
 * nothing while a body is being read (body bytes are copied out as they
 * come). Returns 0 or LATCH_ERR_NOMEM / LATCH_ERR_LIMIT.
 */
static int make_room(latch_conn *c)
{
    latch_worker *w = c->w;
    uint32_t keep_from, keep, cap;
    latch_rbuf *nb;

    if (c->rb == NULL) {
        c->rb = rbuf_get(w, c->nreqs == 0 ? RBUF_FIRST : RBUF_SIZE);
        c->rlen = c->msg = c->bpos = 0;
        return c->rb ? 0 : LATCH_ERR_NOMEM;
    }
    if (c->rlen < c->rb->cap)
        return 0;
    keep_from = (c->flags & LATCH_CF_IN_BODY) ? c->bpos : c->msg;
    keep = c->rlen - keep_from;
    if (keep_from > 0 && c->rb->refs == 1 && c->rb->cap >= RBUF_SIZE) {
        /* Only the connection uses the buffer: slide the bytes down. The
         * parser works on offsets, so nothing else needs fixing. */
        memmove(c->rb->data, c->rb->data + keep_from, keep);
    } else {
        cap = c->rb->cap;
        if (cap < RBUF_SIZE) {
            /* The first buffer filled: this connection reads more than
             * one small head (a larger head, pipelined requests, a
             * body), so it reads on in a full-sized one. */
            cap = RBUF_SIZE;
        } else if (keep_from == 0 && keep == cap) {
            /* One head fills the buffer: grow, up to the largest head the
             * limits allow (the parser refuses before that). */
            if (cap >= rbuf_max(&w->app->cfg))
                return LATCH_ERR_LIMIT;
            cap = cap * 2 > rbuf_max(&w->app->cfg) ? rbuf_max(&w->app->cfg)
                                                   : cap * 2;
        } else {
            cap = RBUF_SIZE;
        }
        nb = rbuf_get(w, cap);
        if (nb == NULL)
            return LATCH_ERR_NOMEM;
        memcpy(nb->data, c->rb->data + keep_from, keep);
        rbuf_release(w, c->rb);
        c->rb = nb;
    }
    c->rlen = keep;
    /* The bytes kept now start the buffer. In a body, the head stays where
     * it was (its request holds the old buffer) and parsing goes on here. */
    c->msg = 0;
    c->bpos = 0;
    return 0;
}

/* Gives the read buffer back when nothing unread is in it. */
static void maybe_release_rbuf(latch_conn *c)
{
    if (c->rb == NULL || (c->flags & LATCH_CF_IN_BODY) || c->cur != NULL)
        return;
    if (c->rlen != c->msg)
        return;
    rbuf_release(c->w, c->rb);
    c->rb = NULL;
    c->rlen = c->msg = c->bpos = 0;
}

/* ------------------------------------------------------------------ */
/* Timeouts                                                             */
/* ------------------------------------------------------------------ */

static void t_unlink(latch_conn *c)
{
    latch_tlist *l;

    if (c->tkind == LATCH_T_NONE)
        return;
    l = &c->w->tl[c->tkind];
    if (c->t_prev)
        c->t_prev->t_next = c->t_next;
    else
        l->head = c->t_next;
    if (c->t_next)
        c->t_next->t_prev = c->t_prev;
    else
        l->tail = c->t_prev;
    c->t_next = c->t_prev = NULL;
    c->tkind = LATCH_T_NONE;
    l->n--;
}

static uint64_t t_duration(latch_conn *c, int kind)
{
    const latch_config *cfg = &c->w->app->cfg;

    switch (kind) {
    case LATCH_T_HEADER: return cfg->header_ms;
    case LATCH_T_BODY: return cfg->body_ms;
    case LATCH_T_IDLE: return cfg->keepalive_ms;
    case LATCH_T_HANDSHAKE: return cfg->handshake_ms;
    default: return cfg->linger_ms;
    }
}

static void on_sweep(uv_timer_t *t);

static void arm_sweeper(latch_worker *w, uint64_t deadline)
{
    uint64_t now = uv_now(&w->loop);

    /* Re-arm only when this deadline comes before the armed one. */
    if (uv_is_active((uv_handle_t *)&w->sweeper) &&
        now + uv_timer_get_due_in(&w->sweeper) <= deadline)
        return;
    uv_timer_start(&w->sweeper, on_sweep, deadline > now ? deadline - now : 0,
                   0);
}

/* Puts the connection on the list of `kind`, with a fresh deadline. All
 * entries of a list have the same duration, so appending keeps it sorted. */
static void t_set(latch_conn *c, int kind)
{
    latch_tlist *l = &c->w->tl[kind];

    t_unlink(c);
    c->tkind = (uint8_t)kind;
    c->deadline = uv_now(&c->w->loop) + t_duration(c, kind);
    c->t_prev = l->tail;
    c->t_next = NULL;
    if (l->tail)
        l->tail->t_next = c;
    else
        l->head = c;
    l->tail = c;
    l->n++;
    arm_sweeper(c->w, c->deadline);
}

/*
 * The send timeout. A connection is on the worker's send list while libuv
 * holds output the socket did not take. When its deadline comes, the
 * connection goes on if what waits for the client shrank since it was
 * last looked at (progress), and is closed if it did not: a client that
 * stops reading cannot keep its connection and what it holds for ever.
 */
static void s_unlink(latch_conn *c)
{
    latch_worker *w = c->w;
    latch_conn_wait *wt = c->wait;

    if (!(c->flags & LATCH_CF_SENDQ))
        return;
    if (wt->s_prev)
        wt->s_prev->wait->s_next = wt->s_next;
    else
        w->s_head = wt->s_next;
    if (wt->s_next)
        wt->s_next->wait->s_prev = wt->s_prev;
    else
        w->s_tail = wt->s_prev;
    wt->s_next = wt->s_prev = NULL;
    c->flags &= ~LATCH_CF_SENDQ;
}

/*
 * What waits for the client: output libuv holds plus what the kernel's
 * send queue holds (not yet acknowledged). The kernel's buffer can hold
 * megabytes, and libuv writes again only once much of it drained, so
 * libuv's queue alone can stand still for a long time while the client
 * reads steadily; the sum moves as soon as it reads anything.
 */
static size_t s_waiting(latch_conn *c)
{
    uv_os_fd_t fd;
    int outq = 0;

    if (uv_fileno((uv_handle_t *)&c->tcp, &fd) != 0 ||
        ioctl(fd, SIOCOUTQ, &outq) != 0 || outq < 0)
        outq = 0;
    /* Over TLS, plaintext of a queued write waits too (tls.c encrypts
     * it as the socket takes what came before). */
    return c->tcp.write_queue_size + (size_t)outq +
           (c->tls != NULL ? latch__tls_unsent(c->tls) : 0);
}

/* The connection holds its wait part (wait_take). */
static void s_set(latch_conn *c)
{
    latch_worker *w = c->w;
    latch_conn_wait *wt = c->wait;

    s_unlink(c);
    c->flags |= LATCH_CF_SENDQ;
    wt->s_queued = s_waiting(c);
    wt->s_deadline = uv_now(&w->loop) + w->app->cfg.send_ms;
    wt->s_prev = w->s_tail;
    wt->s_next = NULL;
    if (w->s_tail)
        w->s_tail->wait->s_next = c;
    else
        w->s_head = c;
    w->s_tail = c;
    arm_sweeper(w, wt->s_deadline);
}

static void on_send_deadline(latch_conn *c)
{
    if (s_waiting(c) < c->wait->s_queued) {
        s_set(c); /* it read some: another period */
        return;
    }
    s_unlink(c);
    close_why(c, LATCH_CANCEL_DISCONNECT);
}

static void on_timeout(latch_conn *c)
{
    int kind = c->tkind;

    t_unlink(c);
    switch (kind) {
    case LATCH_T_IDLE:
    case LATCH_T_LINGER:
    case LATCH_T_HANDSHAKE: conn_close(c); break;
    case LATCH_T_HEADER:
    case LATCH_T_BODY:
        /* A connection that never sent a byte is closed quietly, as an
         * idle one; a request that took too long to arrive gets 408 once
         * the responses before it are out, then the connection closes. */
        if (kind == LATCH_T_HEADER && c->cur == NULL && c->rlen == c->msg &&
            c->q_head == NULL) {
            conn_close(c);
            break;
        }
        protocol_error(c, 408, "request timeout");
        break;
    }
}

static void on_sweep(uv_timer_t *t)
{
    sweep(t->data);
}

static void sweep(latch_worker *w)
{
    uint64_t now = uv_now(&w->loop), next = UINT64_MAX;
    int k;

    for (k = 1; k < LATCH_T_COUNT; k++) {
        while (w->tl[k].head && w->tl[k].head->deadline <= now)
            on_timeout(w->tl[k].head);
    }
    while (w->s_head && w->s_head->wait->s_deadline <= now)
        on_send_deadline(w->s_head);
    if (w->draining && w->drain_deadline && now >= w->drain_deadline) {
        /* The drain time is over: what is still open is cut. */
        latch_conn *c, *cn;
        w->drain_deadline = 0;
        /* conn_close only starts the close: walk the list, do not wait
         * for it to empty. */
        for (c = w->conns; c != NULL; c = cn) {
            cn = c->next;
            if (c->cur != NULL && c->q_head == NULL &&
                !(c->flags & LATCH_CF_CLOSING)) {
                /* Still arriving: the client learns why, and that it
                 * may retry elsewhere. */
                protocol_error(c, 503, "server shutting down");
                flush(c);
                if (c->flags & (LATCH_CF_SHUTDOWN | LATCH_CF_CLOSING))
                    continue; /* answered; it lingers briefly, then closes */
            }
            close_why(c, LATCH_CANCEL_SHUTDOWN);
        }
        return;
    }
    for (k = 1; k < LATCH_T_COUNT; k++)
        if (w->tl[k].head && w->tl[k].head->deadline < next)
            next = w->tl[k].head->deadline;
    if (w->s_head && w->s_head->wait->s_deadline < next)
        next = w->s_head->wait->s_deadline;
    if (w->draining && w->drain_deadline && w->drain_deadline < next)
        next = w->drain_deadline;
    if (next != UINT64_MAX)
        uv_timer_start(&w->sweeper, on_sweep, next > now ? next - now : 0, 0);
}

/* ------------------------------------------------------------------ */
/* Accept and close                                                     */
/* ------------------------------------------------------------------ */

/* The TLS handshake completed: the request's header timeout runs. */
static void on_tls_ready(uv_stream_t *tcp)
{
    latch_conn *c = conn_of(tcp);

    if (c->tkind == LATCH_T_HANDSHAKE)
        t_set(c, LATCH_T_HEADER);
}

int latch__conn_open(latch_worker *w, int fd, struct latch_tls_ctx *tls)
{
    latch_conn *c = calloc(1, sizeof(*c));
    int r;

    if (c == NULL) {
        close(fd);
        return LATCH_ERR_NOMEM;
    }
    c->w = w;
    uv_tcp_init(&w->loop, &c->tcp);
    c->tcp.data = c;
    r = uv_tcp_open(&c->tcp, fd);
    if (r < 0) {
        close(fd);
        uv_close((uv_handle_t *)&c->tcp, (uv_close_cb)free);
        return r;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    if (tls != NULL &&
        (c->tls = latch__tls_new(tls, &c->tcp, on_tls_ready)) == NULL) {
        uv_close((uv_handle_t *)&c->tcp, (uv_close_cb)free);
        return LATCH_ERR_NOMEM;
    }
    c->next = w->conns;
    if (w->conns)
        w->conns->prev = c;
    w->conns = c;
    w->nconns++;
    c->rx_start = uv_now(&w->loop);
    /* The first request gets the header timeout: a client that connects
     * and says nothing is the start of a slowloris attack. */
    t_set(c, c->tls != NULL ? LATCH_T_HANDSHAKE : LATCH_T_HEADER);
    io_read_start(c);
    return 0;
}

/* Whether `c` may be closed for a newcomer: waiting for a request it has
 * been slow to send for a second at least, with nothing queued for it. */
static bool sheddable(const latch_conn *c, uint64_t now)
{
    return c->q_head == NULL && !(c->flags & LATCH_CF_CLOSING) &&
           now - c->rx_start >= 1000;
}

/* How long a TLS client may take to send a whole ClientHello before it
 * counts as stalled when one is shed: a healthy client sends it at once,
 * but one accepted this very turn has not been read yet. */
#define HELLO_GRACE_MS 1000

/*
 * The TLS handshake to shed first, among those at least min_age ms old:
 * of those past HELLO_GRACE_MS, one whose client sent nothing, else one
 * still short of a whole ClientHello (those the server answered spent a
 * key exchange, and are a round trip from done); else the oldest. The
 * list is in connect order (one timeout for all, fixed while running), so
 * the walk stops at the first one younger than the grace, or at the
 * first silent one. NULL when none is min_age old.
 */
static latch_conn *handshake_victim(latch_worker *w, uint64_t min_age)
{
    uint64_t now = uv_now(&w->loop);
    latch_conn *c, *oldest = w->tl[LATCH_T_HANDSHAKE].head, *best = NULL;
    int rank, best_rank = 2;

    if (oldest == NULL || now - oldest->rx_start < min_age)
        return NULL;
    for (c = oldest; c != NULL && now - c->rx_start >= HELLO_GRACE_MS;
         c = c->t_next) {
        rank = latch__tls_progress(c->tls);
        if (rank < best_rank) {
            best = c;
            best_rank = rank;
            if (rank == 0)
                break;
        }
    }
    return best != NULL ? best : oldest;
}

bool latch__conn_shed(latch_worker *w)
{
    uint64_t now = uv_now(&w->loop), best_rate = UINT64_MAX;
    latch_conn *c, *best = NULL;
    int k, n;

    /* Idle keep-alive connections, oldest first: nothing is lost. */
    if ((c = w->tl[LATCH_T_IDLE].head) != NULL) {
        close_why(c, LATCH_CANCEL_DISCONNECT);
        return true;
    }
    /* Then a TLS handshake a second old (one takes a round trip). */
    c = handshake_victim(w, 1000);
    if (c != NULL) {
        close_why(c, LATCH_CANCEL_DISCONNECT);
        return true;
    }
    /* Then the slowest sender among the oldest still receiving a head or a
     * body (each list is in deadline order; a few from each suffice). */
    for (k = LATCH_T_HEADER; k <= LATCH_T_BODY; k++) {
        for (c = w->tl[k].head, n = 0; c != NULL && n < 16;
             c = c->t_next, n++) {
            uint64_t rate;
            if (!sheddable(c, now))
                continue;
            rate = c->rx_bytes * 1000 / (now - c->rx_start);
            if (best == NULL || rate < best_rate) {
                best = c;
                best_rate = rate;
            }
        }
    }
    if (best == NULL)
        return false;
    close_why(best, LATCH_CANCEL_DISCONNECT);
    return true;
}

bool latch__conn_shed_handshake(latch_worker *w)
{
    latch_conn *c = handshake_victim(w, 0);

    if (c == NULL)
        return false;
    close_why(c, LATCH_CANCEL_DISCONNECT);
    return true;
}

static void on_closed(uv_handle_t *h)
{
    latch_conn *c = conn_of(h);
    latch_worker *w = c->w;

    s_unlink(c);
    parser_give_back(c);
    rbuf_release(w, c->rb);
    latch__buf_dispose(&c->out);
    if (c->wait != NULL)
        wait_give(c); /* its uv_write, if any, completed (cancelled) */
    if (c->prev)
        c->prev->next = c->next;
    else
        w->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    w->nconns--;
    if (c->flags & LATCH_CF_DIRTY) {
        /* Still on the list of connections to flush: take it off before
         * the memory goes. The list is short (one loop turn's worth). */
        latch_conn **pp = &w->dirty;
        while (*pp != NULL && *pp != c)
            pp = &(*pp)->next_dirty;
        if (*pp == c)
            *pp = c->next_dirty;
    }
    latch__tls_free(c->tls);
    free(c->rare);
    free(c);
    if (w->draining && w->nconns == 0)
        w->drained(w);
}

static const char *close_event(int reason)
{
    switch (reason) {
    case LATCH_CANCEL_TIMEOUT: return "request timeout";
    case LATCH_CANCEL_SHUTDOWN: return "server shutdown";
    default: return "client disconnect";
    }
}

/*
 * Closes at once: every response still queued is destroyed (its request
 * cancelled with `reason`, then its on_close), the request being received
 * is dropped, then the handle closes.
 */
static void close_why(latch_conn *c, int reason)
{
    latch_res *r, *next;

    if (c->flags & LATCH_CF_CLOSING)
        return;
    c->flags |= LATCH_CF_CLOSING | LATCH_CF_NO_MORE;
    t_unlink(c);
    s_unlink(c);
    io_read_stop(c);
    /* A clean end (nothing unfinished, nothing cut) says so over TLS. */
    latch__tls_close(c->tls, c->q_head == NULL && c->cur == NULL &&
                                 !(c->flags & LATCH_CF_CUT));
    if (c->sf != NULL)
        sf_end(c, UV_ECANCELED);
    if (c->rare != NULL && c->rare->sf_poll != NULL) {
        /* uv_close stops the watch at once (epoll forgets the dup), so
         * the dup may close right after; the handle's memory goes when
         * libuv is done with it. */
        uv_os_fd_t dfd = -1;
        uv_fileno((uv_handle_t *)c->rare->sf_poll, &dfd);
        uv_close((uv_handle_t *)c->rare->sf_poll, (uv_close_cb)free);
        if (dfd >= 0)
            close(dfd);
        c->rare->sf_poll = NULL;
    }
    if (c->rare != NULL && c->rare->shake_timer != NULL) {
        uv_close((uv_handle_t *)c->rare->shake_timer, (uv_close_cb)free);
        c->rare->shake_timer = NULL;
    }
    if (c->cur != NULL) {
        r = c->cur;
        c->cur = NULL;
        r->conn = NULL;
        r->detached = true;
        latch__res_unref(r);
    }
    r = c->q_head;
    c->q_head = c->q_tail = c->writer = NULL;
    c->inflight = 0;
    for (; r != NULL; r = next) {
        next = r->q_next;
        r->q_next = NULL;
        latch__res_detach(r, close_event(reason), reason);
    }
    uv_close((uv_handle_t *)&c->tcp, on_closed);
}

static void conn_close(latch_conn *c)
{
    close_why(c, LATCH_CANCEL_DISCONNECT);
}

static void conn_destroy(latch_conn *c)
{
    c->flags |= LATCH_CF_CUT;
    conn_close(c);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    latch_conn *c = req->data;

    if (c->flags & LATCH_CF_CLOSING)
        return;
    if (status < 0 || (c->flags & LATCH_CF_EOF)) {
        conn_close(c);
        return;
    }
    /* Read and discard what the client still sends, for a bounded time,
     * so that closing does not reset the connection under the response
     * it has not read yet. */
    c->flags |= LATCH_CF_LINGER;
    t_set(c, LATCH_T_LINGER);
    if (c->flags & LATCH_CF_READ_STOPPED) {
        c->flags &= ~LATCH_CF_READ_STOPPED;
        io_read_start(c);
    }
}

/* Everything was written and the connection must not serve more. */
static void start_linger(latch_conn *c)
{
    if (c->flags & (LATCH_CF_CLOSING | LATCH_CF_SHUTDOWN))
        return;
    c->flags |= LATCH_CF_SHUTDOWN;
    t_unlink(c);
    if (c->flags & LATCH_CF_EOF) {
        conn_close(c);
        return;
    }
    if (rare_take(c) == NULL) {
        conn_close(c);
        return;
    }
    c->rare->sreq.data = c;
    if (io_shutdown(c, on_shutdown) != 0)
        conn_close(c);
}

/* ------------------------------------------------------------------ */
/* Reading                                                              */
/* ------------------------------------------------------------------ */

static void read_stop(latch_conn *c)
{
    if (!(c->flags & LATCH_CF_READ_STOPPED)) {
        c->flags |= LATCH_CF_READ_STOPPED;
        io_read_stop(c);
    }
}

static void read_resume(latch_conn *c)
{
    if ((c->flags & LATCH_CF_READ_STOPPED) &&
        !(c->flags & (LATCH_CF_CLOSING | LATCH_CF_EOF))) {
        c->flags &= ~LATCH_CF_READ_STOPPED;
        io_read_start(c);
    }
}

/*
 * What the connection holds for its client: output the OS has not taken,
 * output queued responses buffered while they waited, and the bodies of
 * the requests in the queue. Past LATCH_LIMIT_CONN_BUFFER, no further
 * request is read until the client took enough.
 */
static uint64_t held(const latch_conn *c)
{
    uint64_t n = pending_out(c);
    const latch_res *r;

    for (r = c->q_head; r != NULL; r = r->q_next)
        n += r->pending.len + r->req.body.len;
    return n;
}

/* Reading pauses: enough requests in flight, or enough held. */
static void read_pause(latch_conn *c)
{
    c->flags |= LATCH_CF_PAUSED;
    read_stop(c);
}

/* A response finished or output went out: reading goes on once the
 * connection is under both bounds again. */
static void maybe_resume(latch_conn *c)
{
    const latch_config *cfg = &c->w->app->cfg;

    if (!(c->flags & LATCH_CF_PAUSED) || (c->flags & LATCH_CF_CLOSING))
        return;
    if (c->inflight >= cfg->pipeline ||
        (c->inflight > 0 && held(c) >= cfg->conn_buffer))
        return;
    c->flags &= ~LATCH_CF_PAUSED;
    read_resume(c);
    process(c);
}

/*
 * A request must arrive whole within the receive timeout and, once the
 * grace period passed, at the minimum rate on average (a body trickling
 * at a byte a second would hold its connection for ever otherwise):
 * `bytes` of it arrived since rx_start. Returns false when it was refused
 * with 408 (a streamed body's request gets it through stream_fail: 408
 * when nothing was sent, else its response cut).
 */
static bool rx_in_time(latch_conn *c, uint64_t bytes)
{
    const latch_config *cfg = &c->w->app->cfg;
    uint64_t el = uv_now(&c->w->loop) - c->rx_start;

    if (el >= cfg->receive_ms) {
        protocol_error(c, 408, "request took too long to arrive");
        return false;
    }
    if (cfg->min_rate > 0 && el >= cfg->rate_grace_ms &&
        bytes * 1000 < cfg->min_rate * el) {
        protocol_error(c, 408, "request arriving too slowly");
        return false;
    }
    return true;
}

/* n bytes of the request being received (its head, or a body latch
 * buffers) arrived: rx_in_time. */
static bool rx_ok(latch_conn *c, size_t n)
{
    c->rx_bytes += n;
    return rx_in_time(c, c->rx_bytes);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    latch_conn *c = conn_of(h);

    (void)suggested;
    if (make_room(c) < 0) {
        buf->base = NULL;
        buf->len = 0;
        return;
    }
    buf->base = c->rb->data + c->rlen;
    buf->len = c->rb->cap - c->rlen;
}

/* The connection is idle: nothing unread, nothing in flight. */
static void went_idle(latch_conn *c)
{
    maybe_release_rbuf(c);
    if (c->flags & LATCH_CF_NO_MORE) {
        c->flags |= LATCH_CF_CLOSE_AFTER_WRITE;
        mark_dirty(c);
        return;
    }
    if (c->w->draining) {
        conn_close(c);
        return;
    }
    t_set(c, LATCH_T_IDLE);
}

static void peer_gone(latch_conn *c, int status);

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    latch_conn *c = conn_of(s);

    (void)buf;
    if (nread > 0) {
        c->rlen += (uint32_t)nread;
        /* After an error or a last request, what follows is never
         * parsed, only discarded. */
        if ((c->flags & LATCH_CF_LINGER) ||
            ((c->flags & LATCH_CF_NO_MORE) && c->cur == NULL &&
             !(c->flags & LATCH_CF_IN_BODY))) {
            c->rlen = c->msg;
            return;
        }
        if (c->cur != NULL && !rx_ok(c, (size_t)nread))
            return;
        /* A streamed body (its request dispatched, c->cur NULL) is held to
         * the same deadlines; rx_bytes counts its decoded bytes (for the
         * body limit), so this read counts as it comes. Time its reading
         * was paused for latch's side is not in rx_start's count. */
        if (c->cur == NULL && (c->flags & LATCH_CF_IN_BODY) &&
            !rx_in_time(c, c->rx_bytes + (uint64_t)nread))
            return;
        process(c);
        /* Answer what this read produced right away (one write for the
         * whole batch of pipelined requests) rather than at the next loop
         * turn: the client sees its response a little sooner. */
        if ((c->flags & LATCH_CF_DIRTY) && c->out.len > 0)
            flush(c);
        return;
    }
    if (nread == 0)
        return;
    if (nread == UV_ENOBUFS) {
        /* make_room refused: a head larger than any limit allows, or no
         * memory. */
        protocol_error(c, 431, "request head too large");
        return;
    }
    if (nread == LATCH_TLS_EPLAIN) {
        /* Plain HTTP on a TLS port: the answer goes out in plaintext
         * (tls.c passes it through), then the connection lingers. */
        t_unlink(c);
        protocol_error(c, 400, "plain HTTP sent to the TLS port");
        return;
    }
    peer_gone(c, (int)nread);
}

/*
 * The client closed (EOF) or the connection failed. As Node's server does
 * by default, a client's FIN while a response is unfinished is a
 * disconnect: that response is destroyed and its request cancelled.
 * Responses that already ended still go out; then the connection closes.
 */
static void peer_gone_now(latch_conn *c, int status)
{
    c->flags |= LATCH_CF_EOF | LATCH_CF_NO_MORE;
    read_stop(c);
    if (status != UV_EOF || (c->flags & LATCH_CF_LINGER) || c->q_head == NULL ||
        c->writer != NULL) {
        /* An error, nothing to answer (an incomplete request at EOF is
         * never dispatched), or a response the client will not wait for. */
        if (status == UV_EOF)
            flush_now(c);
        conn_close(c);
        return;
    }
    no_more_requests(c);
    c->flags |= LATCH_CF_CLOSE_AFTER_WRITE;
    t_unlink(c);
    mark_dirty(c);
}

static void on_shaken(uv_timer_t *t)
{
    latch_conn *c = t->data;

    uv_close((uv_handle_t *)t, (uv_close_cb)free);
    c->rare->shake_timer = NULL;
    peer_gone_now(c, c->rare->shake_status);
}

static void peer_gone(latch_conn *c, int status)
{
    uint64_t delay = latch__shake_ms(c->w);
    latch_conn_rare *r;

    if (delay > 0 && (r = rare_take(c)) != NULL && r->shake_timer == NULL &&
        (r->shake_timer = malloc(sizeof(*r->shake_timer))) != NULL) {
        /* LATCH_SHAKE: the disconnect reaches the app a little later, as
         * it may in production. */
        read_stop(c);
        r->shake_status = status;
        r->shake_timer->data = c;
        uv_timer_init(&c->w->loop, r->shake_timer);
        uv_timer_start(r->shake_timer, on_shaken, delay, 0);
        return;
    }
    peer_gone_now(c, status);
}

/* HTTP/1.1 needs exactly one Host; HTTP/1.0 at most one. */
static bool host_ok(const latch_parser *p)
{
    return p->host_count <= 1 && (p->version_minor == 0 || p->host_count == 1);
}

/* Copies the start of the request into its request view, and terminates
 * its strings in place: the head is never parsed again. */
static int head_done(latch_conn *c)
{
    latch_parser *p = c->parser;
    latch_res *res = c->cur;
    latch_req *q = &res->req;
    char *base = c->rb->data + c->msg;
    uint32_t i;

    if (!host_ok(p)) {
        protocol_error(c, 400, "exactly one Host is required");
        return -1;
    }
    if (c->rb->data[c->msg + p->target.off] == '*' &&
        !(p->method.len == 7 &&
          memcmp(c->rb->data + c->msg + p->method.off, "OPTIONS", 7) == 0)) {
        protocol_error(c, 400, "'*' only with OPTIONS");
        return -1;
    }
    if (p->is_connect) {
        protocol_error(c, 501, "CONNECT is not supported");
        return -1;
    }
    if (p->expect == LATCH_EXPECT_OTHER) {
        protocol_error(c, 417, "unsupported expectation");
        return -1;
    }
    q->head = base;
    q->rb = c->rb;
    c->rb->refs++;
    if (p->event_stream) {
        /* An EventSource: its response stays open for as long as the
         * page does, and its head would keep the whole read buffer alive
         * with it, and its fields the response's array sized for the
         * most a head may have. Both move to one buffer of their own,
         * sized to them, here, before any string of the request is
         * handed out (so no pointer a handler keeps ever moves); the
         * connection's buffer goes back to the pool once nothing unread
         * is left in it (maybe_release_rbuf), and the next read takes one
         * again. Out of memory, the request keeps them where they are. */
        uint32_t foff = (p->head_len + 7u) & ~7u;
        latch_rbuf *hb =
            rbuf_get(c->w, foff + p->nfields * (uint32_t)sizeof(latch_field));

        if (hb != NULL) {
            latch_field *fields = (latch_field *)(void *)(hb->data + foff);

            memcpy(hb->data, base, p->head_len);
            memcpy(fields, q->fields, p->nfields * sizeof(latch_field));
            c->rb->refs--;
            q->rb = hb;
            q->head = base = hb->data;
            latch__res_fields_moved(res, fields);
            /* The parser is done with this head; it must never write to
             * the array it had (gone) before the next request's. */
            p->fields = NULL;
            p->fields_cap = 0;
        }
    }
    base[p->method.off + p->method.len] = '\0';
    base[p->target.off + p->target.len] = '\0';
    q->method = base + p->method.off;
    q->url = base + p->target.off;
    q->nfields = p->nfields;
    for (i = 0; i < p->nfields; i++) {
        latch_field *f = &q->fields[i];
        base[f->name.off + f->name.len] = '\0';
        base[f->value.off + f->value.len] = '\0';
    }
    q->version_minor = p->version_minor;
    q->is_head = p->is_head;
    q->secure = c->tls != NULL;
    q->keep_alive = p->keep_alive && !p->upgrade;
    q->id = c->w->next_req_id++;
    latch__req_prepare(q);
    /* After a last request, the bytes that follow are never read as
     * requests (with an upgrade they belong to another protocol). */
    if (!q->keep_alive)
        c->flags |= LATCH_CF_NO_MORE;
    return 0;
}

static void queue_push(latch_conn *c, latch_res *res)
{
    res->q_next = NULL;
    if (c->q_tail)
        c->q_tail->q_next = res;
    else
        c->q_head = res;
    c->q_tail = res;
    c->inflight++;
    if (c->writer == NULL)
        c->writer = res;
}

/* The current request is complete: queue its response and run the app. */
static void dispatch(latch_conn *c)
{
    latch_res *res = c->cur;

    c->cur = NULL;
    res->conn = c;
    if (c->flags & LATCH_CF_DRAIN_LAST) {
        /* The server is stopping: this request, which was arriving, is
         * served, and it is the last. */
        res->req.keep_alive = false;
        c->flags |= LATCH_CF_NO_MORE;
    }
    queue_push(c, res);
    t_unlink(c);
    c->w->app->serve->dispatch(res);
}

/* ------------------------------------------------------------------ */
/* Streamed request bodies                                              */
/* ------------------------------------------------------------------ */

/* The request whose body streams in now, while its response is queued
 * (as the queue's last: nothing after it was read); NULL when no streamed
 * body arrives, or once the response left the queue (its rest is then
 * dropped). */
static latch_res *stream_res(const latch_conn *c)
{
    latch_res *r = c->q_tail;

    if (!(c->flags & LATCH_CF_IN_BODY) || c->cur != NULL || r == NULL ||
        !r->req.body_open)
        return NULL;
    return r;
}

/* The request being received streams its body: it is dispatched now. */
static void stream_start(latch_conn *c)
{
    latch_res *res = c->cur;
    latch_req *q = &res->req;

    q->body_streamed = q->body_open = true;
    /* The client waits for a word before it sends the body: the
     * upstream's 100 Continue is relayed (latch__res_continue); latch
     * sends none of its own, so an upstream that refuses the body first
     * (401, 413) spares the client the upload. */
    q->expect_continue =
        c->parser->expect == LATCH_EXPECT_CONTINUE && c->bpos == c->rlen;
    c->rx_bytes = 0; /* the body's bytes, against the limit */
    dispatch(c);
}

/* Does the streamed body's consumer take bytes now? Its sink when one is
 * attached and not paused; nobody (the bytes are dropped) once the
 * response ended or went, or the sink was stopped. */
static bool stream_takes(const latch_conn *c)
{
    const latch_res *sb = stream_res(c);

    if (sb == NULL || sb->detached || sb->state >= LATCH_RS_ENDED)
        return true;
    if (sb->req.sink != NULL)
        return !sb->req.sink_paused;
    return !sb->req.body_open; /* stopped: dropped */
}

/* As stream_takes; when it does not, reading stops (BODY_WAIT) with no
 * body timeout: the client is not the slow side. The body ops mark
 * the connection dirty, and flush reads on. */
static bool stream_ready(latch_conn *c)
{
    if (stream_takes(c))
        return true;
    if (!(c->flags & LATCH_CF_BODY_WAIT))
        c->paused_at = (uint32_t)uv_now(&c->w->loop);
    c->flags |= LATCH_CF_BODY_WAIT;
    read_stop(c);
    t_unlink(c);
    return false;
}

/* n body bytes: to the sink, or dropped; the body limit counts both.
 * -1 when the body was refused or the connection closed. */
static int stream_data(latch_conn *c, const char *data, size_t n)
{
    latch_res *sb = stream_res(c);
    int r;

    c->rx_bytes += n;
    if (c->rx_bytes > c->body_limit) {
        protocol_error(c, 413, "body too large");
        return -1;
    }
    if (sb == NULL || sb->req.sink == NULL || sb->detached ||
        sb->state >= LATCH_RS_ENDED)
        return 0;
    r = sb->req.sink->data(sb->req.sink, data, n);
    if (c->flags & LATCH_CF_CLOSING)
        return -1;
    if (r == 0 && sb->req.sink != NULL)
        sb->req.sink_paused = true;
    return 0;
}

/* The streamed body is over (call before IN_BODY is cleared): its
 * request (NULL once gone) lets go of its sink, returned in *sink. */
static latch_res *stream_release(latch_conn *c, latch_body_sink **sink)
{
    latch_res *sb = stream_res(c);

    c->flags &= ~LATCH_CF_BODY_WAIT;
    *sink = NULL;
    if (sb == NULL)
        return NULL;
    *sink = sb->req.sink;
    sb->req.sink = NULL;
    sb->req.sink_paused = false;
    sb->req.body_open = false;
    return sb;
}

/* The streamed body is complete: its sink hears it, and the connection
 * reads on (the next request). */
static void stream_done(latch_conn *c)
{
    latch_body_sink *s;

    stream_release(c, &s);
    c->flags &= ~LATCH_CF_IN_BODY;
    read_resume(c);
    if (s != NULL)
        s->end(s, 0);
}

/*
 * The streamed body cannot complete (over the body limit, malformed, too
 * slow): its sink hears why, nothing more is read, and the request gets
 * `status` through the error handlers when nothing was sent yet (its
 * chain resumes there if it waits), else its response is cut. Then the
 * connection closes after the responses.
 */
static void stream_fail(latch_conn *c, int status, const char *reason, int code)
{
    latch_body_sink *s;
    latch_res *sb = stream_release(c, &s);

    (void)reason;
    c->flags |= LATCH_CF_NO_MORE;
    c->flags &= ~LATCH_CF_IN_BODY;
    c->rlen = c->msg;
    t_unlink(c);
    if (sb == NULL)
        return; /* its response went: the rest was only dropped */
    latch__res_ref(sb);
    if (s != NULL)
        s->end(s, code);
    if (!(c->flags & LATCH_CF_CLOSING) && sb->conn == c && !sb->detached) {
        if (sb->state == LATCH_RS_FRESH && !sb->hold)
            latch__res_raise(sb, code, status, "request body", latch__no_site);
        else if (sb->state < LATCH_RS_ENDED)
            h1_cut(sb, "request body refused", LATCH_CANCEL_DISCONNECT);
    }
    latch__res_unref(sb);
    if (!(c->flags & LATCH_CF_CLOSING))
        mark_dirty(c);
}

static int h1_body_sink(latch_res *res, latch_body_sink *sink)
{
    latch_conn *c = res->conn;

    if (!res->req.body_open || res->req.sink != NULL || c == NULL ||
        stream_res(c) != res || sink == NULL)
        return LATCH_ERR_STATE;
    res->req.sink = sink;
    res->req.sink_paused = false;
    if (c->flags & LATCH_CF_BODY_WAIT)
        mark_dirty(c);
    return 0;
}

static void h1_body_resume(latch_res *res)
{
    latch_conn *c = res->conn;

    if (res->req.sink == NULL || !res->req.sink_paused)
        return;
    res->req.sink_paused = false;
    if (c != NULL && stream_res(c) == res && (c->flags & LATCH_CF_BODY_WAIT))
        mark_dirty(c);
}

static void h1_body_stop(latch_res *res)
{
    latch_conn *c = res->conn;

    if (res->req.sink == NULL)
        return;
    res->req.sink = NULL;
    res->req.sink_paused = false;
    if (c != NULL && stream_res(c) == res && (c->flags & LATCH_CF_BODY_WAIT))
        mark_dirty(c);
}

static void h1_send_continue(latch_res *res)
{
    latch_conn *c = res->conn;

    if (!res->req.expect_continue || c == NULL || res->detached ||
        (c->flags & LATCH_CF_CLOSING) || res->state != LATCH_RS_FRESH ||
        res->hold)
        return;
    res->req.expect_continue = false;
    if (c->writer == res && res->pending.len == 0 && c->sf == NULL)
        send_continue(c);
    else
        res->req.continue_owed = true; /* sent when it is at the head */
}

/* Parses and dispatches every complete request in the buffer. */
static void process(latch_conn *c)
{
    latch_parser *p = c->parser;
    const latch_config *cfg = &c->w->app->cfg;
    const char *data;
    size_t consumed, dlen;
    int r;

    /* Responses queued from earlier reads may hold much already: one
     * look at all of them per call, then only at the output (the
     * responses of this batch that end at once write there). */
    if (c->inflight > 0 && c->cur == NULL && c->msg != c->rlen &&
        held(c) >= cfg->conn_buffer) {
        read_pause(c);
        return;
    }
    while (!(c->flags & LATCH_CF_CLOSING)) {
        /* Whatever a handler did meanwhile, the connection's own. */
        p = c->parser;
        if (!(c->flags & LATCH_CF_IN_BODY)) {
            if (c->msg == c->rlen || (c->flags & LATCH_CF_NO_MORE))
                break;
            if (c->cur == NULL &&
                (c->inflight >= cfg->pipeline ||
                 (c->inflight > 0 && pending_out(c) >= cfg->conn_buffer))) {
                /* Enough in flight or held: stop reading until some
                 * finish or go out (maybe_resume). */
                read_pause(c);
                break;
            }
            if (c->cur == NULL) {
                if (p == NULL) {
                    if (parser_take(c) < 0) {
                        conn_close(c);
                        return;
                    }
                    p = c->parser;
                }
                c->cur = latch__res_alloc(c->w, &h1_exchange);
                if (c->cur == NULL) {
                    conn_close(c);
                    return;
                }
                /* The first request counts from the connect (a client
                 * that connects and waits is slow already). */
                if (c->nreqs++ > 0)
                    c->rx_start = uv_now(&c->w->loop);
                c->rx_bytes = c->rlen - c->msg;
                latch__parser_reset(p);
                p->fields = c->cur->req.fields;
                p->fields_cap = cfg->parse.fields;
            }
            r = latch__parse_head(p, c->rb->data + c->msg, c->rlen - c->msg);
            if (r == LATCH_PARSE_AGAIN) {
                if (c->tkind != LATCH_T_HEADER)
                    t_set(c, LATCH_T_HEADER);
                break;
            }
            if (r == LATCH_PARSE_ERROR) {
                /* A complete head refused for its body (413, 501) must
                 * first pass the Host rule, as any other request. */
                if (p->head_len != 0 && !host_ok(p))
                    protocol_error(c, 400, "exactly one Host is required");
                else
                    protocol_error(c, p->status, p->reason);
                break;
            }
            if (head_done(c) < 0)
                break;
            c->bpos = c->msg + p->head_len;
            if (p->body_kind == LATCH_BODY_NONE) {
                c->msg = c->bpos;
                dispatch(c);
                continue;
            }
            /* The route may allow more or less than the app does. */
            c->body_limit =
                c->w->app->serve->body_limit(c->w->app, &c->cur->req);
            if (p->body_kind == LATCH_BODY_LENGTH &&
                p->content_length > c->body_limit) {
                protocol_error(c, 413,
                               "Content-Length above the body "
                               "limit");
                break;
            }
            c->flags |= LATCH_CF_IN_BODY;
            if (c->w->app->serve->body_streams(c->w->app, &c->cur->req)) {
                stream_start(c);
                continue;
            }
            if (p->expect == LATCH_EXPECT_CONTINUE && c->bpos == c->rlen) {
                /* The client waits for our word before sending the body;
                 * it must come after every earlier response. */
                c->flags |= LATCH_CF_CONTINUE;
                if (c->writer == NULL)
                    send_continue(c);
            }
        }
        if (c->cur == NULL) {
            /* A streamed body: parsed while its sink takes bytes (or
             * nobody needs them); else only an end already reached. */
            bool go = stream_ready(c);

            r = latch__parse_body(p, c->rb->data + c->bpos,
                                  go ? c->rlen - c->bpos : 0, &consumed, &data,
                                  &dlen);
            c->bpos += (uint32_t)consumed;
            if (r == LATCH_PARSE_DATA) {
                if (stream_data(c, data, dlen) < 0)
                    break;
                continue;
            }
            if (r == LATCH_PARSE_AGAIN) {
                if (go)
                    t_set(c, LATCH_T_BODY);
                break;
            }
            if (r == LATCH_PARSE_ERROR) {
                protocol_error(c, p->status, p->reason);
                break;
            }
            c->msg = c->bpos;
            stream_done(c);
            continue;
        }
        r = latch__parse_body(p, c->rb->data + c->bpos, c->rlen - c->bpos,
                              &consumed, &data, &dlen);
        c->bpos += (uint32_t)consumed;
        if (r == LATCH_PARSE_DATA) {
            if (latch__buf_append(&c->cur->req.body, data, dlen,
                                  c->body_limit) < 0) {
                protocol_error(c, 413, "body too large");
                break;
            }
            continue;
        }
        if (r == LATCH_PARSE_AGAIN) {
            t_set(c, LATCH_T_BODY);
            break;
        }
        if (r == LATCH_PARSE_ERROR) {
            protocol_error(c, p->status, p->reason);
            break;
        }
        c->flags &= ~(LATCH_CF_IN_BODY | LATCH_CF_CONTINUE);
        c->msg = c->bpos;
        dispatch(c);
    }
    if (c->flags & LATCH_CF_CLOSING)
        return;
    /* Between messages the parser holds nothing of the next one. */
    if (c->cur == NULL && !(c->flags & LATCH_CF_IN_BODY))
        parser_give_back(c);
    if (c->flags & LATCH_CF_NO_MORE && c->cur == NULL &&
        !(c->flags & LATCH_CF_IN_BODY))
        c->rlen = c->msg; /* never parsed */
    if (c->q_head == NULL && c->cur == NULL && c->msg == c->rlen)
        went_idle(c);
    else
        maybe_release_rbuf(c);
}

static void send_continue(latch_conn *c)
{
    static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";

    c->flags &= ~LATCH_CF_CONTINUE;
    out_take(c->w, &c->out);
    if (latch__buf_append(&c->out, cont, sizeof(cont) - 1, OUT_LIMIT) == 0) {
        c->out_total += sizeof(cont) - 1;
        mark_dirty(c);
    }
}

/*
 * The request being received is refused (or never came in time): one
 * response with the status, Connection: close, then linger and close.
 * Nothing after the bad bytes is parsed.
 */
static void protocol_error(latch_conn *c, int status, const char *reason)
{
    latch_res *res = c->cur;

    if (c->flags & LATCH_CF_CLOSING)
        return;
    if (res == NULL && (c->flags & LATCH_CF_IN_BODY)) {
        /* A streamed body went wrong: its request was answered already
         * or is being answered; it gets this status instead. */
        stream_fail(c, status, reason,
                    status == 413   ? LATCH_ERR_LIMIT
                    : status == 408 ? UV_ETIMEDOUT
                                    : LATCH_ERR_HTTP);
        return;
    }
    c->flags |= LATCH_CF_NO_MORE;
    c->flags &= ~(LATCH_CF_IN_BODY | LATCH_CF_CONTINUE);
    c->rlen = c->msg;
    t_unlink(c);
    if (res == NULL) {
        res = latch__res_alloc(c->w, &h1_exchange);
        if (res == NULL) {
            conn_close(c);
            return;
        }
    }
    c->cur = NULL;
    res->conn = c;
    res->req.keep_alive = false;
    res->req.id = c->w->next_req_id++;
    queue_push(c, res);
    latch__res_protocol_error(res, status, reason);
}

/* ------------------------------------------------------------------ */
/* The response queue and the write path                                */
/* ------------------------------------------------------------------ */

static latch_buf *h1_sink(latch_res *res)
{
    latch_conn *c = res->conn;

    /* While a file body goes out, what its response writes waits behind
     * it (and no other response writes: only the writer may). */
    if (res == c->writer && res->pending.len == 0 && !res->hold &&
        c->sf == NULL) {
        mark_dirty(c);
        out_take(c->w, &c->out);
        return &c->out;
    }
    return &res->pending;
}

/* Moves output a response buffered while it waited into the wire. */
static void h1_unhold(latch_res *res)
{
    latch_conn *c = res->conn;

    res->hold = false;
    if (c == NULL || res != c->writer || res->pending.len == 0 || c->sf != NULL)
        return;
    out_take(c->w, &c->out);
    if (latch__buf_append(&c->out, res->pending.data, res->pending.len,
                          OUT_LIMIT) < 0) {
        conn_destroy(c);
        return;
    }
    c->out_total += res->pending.len;
    res->pending.len = 0;
    mark_dirty(c);
}

/* Drops the request being received and stops reading requests: the
 * connection ends after the responses already queued. */
static void no_more_requests(latch_conn *c)
{
    latch_res *r = c->cur;

    c->flags |= LATCH_CF_NO_MORE;
    if (r == NULL && (c->flags & LATCH_CF_IN_BODY))
        return; /* a streamed body goes on to its end (or is dropped) */
    c->flags &= ~(LATCH_CF_IN_BODY | LATCH_CF_CONTINUE);
    c->rlen = c->msg;
    if (r != NULL) {
        c->cur = NULL;
        r->conn = NULL;
        r->detached = true;
        latch__res_unref(r);
    }
}

/* A response decided the connection ends with it (Connection: close, a
 * body delimited by the close, a body cut short): no later request may be
 * read, and none already read may be answered after it. */
static void h1_last(latch_res *res)
{
    if (res->conn != NULL && !(res->conn->flags & LATCH_CF_CLOSING))
        no_more_requests(res->conn);
}

/* Cuts every response queued after `last`, with its buffered output. */
static void cut_after(latch_conn *c, latch_res *last)
{
    latch_res *r = last->q_next, *next;

    last->q_next = NULL;
    c->q_tail = last;
    for (; r != NULL; r = next) {
        next = r->q_next;
        r->q_next = NULL;
        r->pending.len = 0;
        c->inflight--;
        latch__res_detach(r, "connection closed", LATCH_CANCEL_DISCONNECT);
    }
}

/*
 * Cuts `res` and every response queued after it: they are destroyed
 * (`res` sealed by `event` and its request cancelled with `reason`; those
 * after it by "connection closed", LATCH_CANCEL_DISCONNECT), what `res`
 * had not yet written is dropped, no request is read any more, and the
 * connection closes once the responses before `res` went out. The client
 * sees `res` truncated, never complete, and earlier responses whole.
 */
static void h1_cut(latch_res *res, const char *event, int reason)
{
    latch_conn *c = res->conn;
    latch_res *prev = NULL, *r, *next;

    if (c == NULL || (c->flags & LATCH_CF_CLOSING))
        return;
    c->flags |= LATCH_CF_CUT;
    no_more_requests(c);
    for (r = c->q_head; r != NULL && r != res; r = r->q_next)
        prev = r;
    if (r == NULL)
        return; /* not queued: nothing to cut */
    if (prev != NULL)
        prev->q_next = NULL;
    else
        c->q_head = NULL;
    c->q_tail = prev;
    /* The writer was res or later, or none: nothing after prev writes. */
    if (c->writer == NULL || c->writer == res) {
        c->writer = NULL;
    } else {
        bool before = false;
        for (latch_res *p = c->q_head; p != NULL; p = p->q_next)
            before = before || p == c->writer;
        if (!before)
            c->writer = NULL;
    }
    /* A file body of a response cut here stops (it is always the
     * writer's): its caller hears it before the response is destroyed. */
    if (c->sf != NULL && c->writer != c->sf->res)
        sf_end(c, UV_ECANCELED);
    for (; r != NULL; r = next) {
        next = r->q_next;
        r->q_next = NULL;
        r->pending.len = 0;
        c->inflight--;
        /* Only `res` was cut for its own reason (its timeout, a destroy);
         * the requests behind it lose their connection, and say so. */
        if (r == res)
            latch__res_detach(r, event, reason);
        else
            latch__res_detach(r, "connection closed", LATCH_CANCEL_DISCONNECT);
    }
    c->flags |= LATCH_CF_CLOSE_AFTER_WRITE;
    if (c->q_head == NULL)
        went_idle(c);
    mark_dirty(c);
}

/* Lets the next responses write, in order, once the writer ended. */
static void advance_queue(latch_conn *c)
{
    latch_res *r;

    /* A writer that ended while its file body still goes out moves on
     * when the body is out (sf_end). */
    while ((r = c->writer) != NULL && r->state >= LATCH_RS_ENDED &&
           c->sf == NULL) {
        r->end_seq = c->out_total;
        if (!r->keep_alive) {
            /* The last response on this connection: nothing after it. */
            no_more_requests(c);
            cut_after(c, r);
            c->writer = NULL;
            c->flags |= LATCH_CF_CLOSE_AFTER_WRITE;
            break;
        }
        r = c->writer = r->q_next;
        if (r == NULL)
            break;
        if (r->req.continue_owed) {
            /* The upstream's 100 Continue, relayed in its place. */
            r->req.continue_owed = false;
            if (r->state == LATCH_RS_FRESH && !r->hold && r->pending.len == 0)
                send_continue(c);
        }
        if (!r->hold)
            h1_unhold(r);
        if (c->flags & LATCH_CF_CLOSING)
            return;
    }
    if (c->writer == NULL && (c->flags & LATCH_CF_CONTINUE))
        send_continue(c);
    mark_dirty(c);
}

static void h1_ended(latch_res *res)
{
    latch_conn *c = res->conn;

    if (c != NULL && res == c->writer)
        advance_queue(c);
}

static size_t pending_out(const latch_conn *c)
{
    return c->out.len + (c->wait != NULL ? c->wait->wout.len : 0);
}

/* ------------------------------------------------------------------ */
/* HTTP/1.1's exchange: what res.c asks of the connection (internal.h)  */
/* ------------------------------------------------------------------ */

static void h1_wrote(latch_res *res, latch_buf *b, size_t n)
{
    latch_conn *c = res->conn;

    if (b == &c->out)
        c->out_total += n;
}

/* Not the last response of a connection that reads no more requests. */
static bool h1_may_keep_alive(const latch_res *res)
{
    const latch_conn *c = res->conn;

    return !((c->flags & LATCH_CF_NO_MORE) && res == c->q_tail);
}

static size_t h1_backlog(const latch_res *res)
{
    return pending_out(res->conn);
}

/*
 * Node's writableFinished is true once everything went to the socket
 * without waiting; for a small body that is right after end(). latch
 * hands a batch to the OS once per loop turn, so the same moment is:
 * ended, not queued behind an earlier response, and no backpressure.
 */
static bool h1_on_wire(const latch_res *res)
{
    const latch_conn *c = res->conn;

    if (res == c->writer)
        return false;
    for (const latch_res *r = c->q_head; r != NULL && r != res; r = r->q_next)
        if (r->state != LATCH_RS_ENDED)
            return false; /* its bytes wait behind an earlier response */
    if (res->end_seq <= c->written_total)
        return true;
    return !(c->flags & LATCH_CF_WRITING) && pending_out(c) < LATCH_HIGH_WATER;
}

static void h1_want_flush(latch_res *res)
{
    mark_dirty(res->conn);
}

static void h1_release_input(latch_res *res)
{
    rbuf_release(res->w, res->req.rb);
}

/*
 * The exchange's peer: the TCP connection's other end, asked of the
 * kernel once per connection (a getpeername(2) per proxied request and
 * per access log line otherwise) and kept in c->peer_*. An IPv6 address
 * with a scope id is not kept (it would lose it): asked each time.
 */
static int h1_peer(const latch_res *res, struct sockaddr_storage *ss)
{
    latch_conn *c = res->conn;
    struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
    int len = sizeof(*ss), r;

    memset(ss, 0, sizeof(*ss));
    if (c->peer_family == AF_INET) {
        s4->sin_family = AF_INET;
        s4->sin_port = c->peer_port;
        memcpy(&s4->sin_addr, c->peer_addr, 4);
        return 0;
    }
    if (c->peer_family == AF_INET6) {
        s6->sin6_family = AF_INET6;
        s6->sin6_port = c->peer_port;
        memcpy(&s6->sin6_addr, c->peer_addr, 16);
        return 0;
    }
    r = uv_tcp_getpeername(&c->tcp, (struct sockaddr *)ss, &len);
    if (r != 0)
        return r;
    if (ss->ss_family == AF_INET) {
        c->peer_port = s4->sin_port;
        memcpy(c->peer_addr, &s4->sin_addr, 4);
        c->peer_family = AF_INET;
    } else if (ss->ss_family == AF_INET6 && s6->sin6_scope_id == 0) {
        c->peer_port = s6->sin6_port;
        memcpy(c->peer_addr, &s6->sin6_addr, 16);
        c->peer_family = AF_INET6;
    }
    return 0;
}

static const latch_exchange_ops h1_exchange = {
    .sink = h1_sink,
    .wrote = h1_wrote,
    .unhold = h1_unhold,
    .make_last = h1_last,
    .may_keep_alive = h1_may_keep_alive,
    .ended = h1_ended,
    .cut = h1_cut,
    .backlog = h1_backlog,
    .on_wire = h1_on_wire,
    .want_flush = h1_want_flush,
    .release_input = h1_release_input,
    .peer = h1_peer,
    .can_sendfile = h1_can_sendfile,
    .sendfile = h1_sendfile,
    .body_sink = h1_body_sink,
    .body_resume = h1_body_resume,
    .body_stop = h1_body_stop,
    .send_continue = h1_send_continue,
};

/* Responses whose last byte the OS has taken are finished. */
static void finish_written(latch_conn *c)
{
    latch_res *r;
    bool close_after = false;

    while ((r = c->q_head) != NULL && r != c->writer &&
           r->end_seq <= c->written_total) {
        c->q_head = r->q_next;
        if (c->q_head == NULL)
            c->q_tail = NULL;
        c->inflight--;
        r->q_next = NULL;
        if (!r->keep_alive)
            close_after = true;
        latch__res_finished(r);
        if (c->flags & LATCH_CF_CLOSING)
            return;
        if (close_after)
            break;
    }
    if (close_after) {
        /* A last response went out: later ones (there should be none,
         * parsing stopped) are cut, then the connection closes. */
        c->flags |= LATCH_CF_NO_MORE | LATCH_CF_CLOSE_AFTER_WRITE;
        while ((r = c->q_head) != NULL) {
            c->q_head = r->q_next;
            r->q_next = NULL;
            c->inflight--;
            latch__res_detach(r, "connection closed", LATCH_CANCEL_DISCONNECT);
        }
        c->q_tail = c->writer = NULL;
        return;
    }
    if (c->flags & LATCH_CF_PAUSED) {
        /* Reading paused for this queue or these bytes: it may go on
         * (and what waits in the buffer is parsed). */
        maybe_resume(c);
    } else if (c->q_head == NULL && c->inflight == 0) {
        /* More requests may be waiting in the buffer. */
        if (c->rlen != c->msg || (c->flags & LATCH_CF_IN_BODY) || c->cur)
            process(c);
        else
            went_idle(c);
    }
}

/* After a burst, large output buffers go back to the allocator: an idle
 * connection keeps none of what a big response needed. A response that
 * will wait for long (an event stream after its head or a heartbeat)
 * asked for even a small one to go: thousands of such streams wait at
 * once. Not after every write of a stream: a malloc and a free for each
 * event would cost more than the event (callgrind: +300 instructions a
 * delivery, 200 subscribers at 20 events/s). */
static void shrink(latch_conn *c, latch_buf *b)
{
    if (b->len != 0 || b->cap == 0)
        return;
    if (b->cap > HIGH_WATER) {
        latch__buf_dispose(b);
    } else if (c->writer != NULL && c->writer->trim_out) {
        c->writer->trim_out = false;
        latch__buf_dispose(b);
        latch__res_trim(c->writer);
    } else if (b->cap == OUT_FIRST) {
        out_give(c->w, b);
    }
}

/* The wait part stays until the flush this schedules: out may have
 * filled meanwhile, and then the socket is likely full again. */
static void on_written(uv_write_t *req, int status)
{
    latch_conn *c = req->data;
    latch_conn_wait *wt = c->wait;

    c->flags &= ~LATCH_CF_WRITING;
    if (status < 0) {
        if (status != UV_ECANCELED)
            conn_close(c);
        return;
    }
    c->written_total += wt->wout.len;
    wt->wout.len = 0;
    shrink(c, &wt->wout);
    s_unlink(c);
    finish_written(c);
    if (c->flags & LATCH_CF_CLOSING)
        return;
    /* The socket took the backlog: a writer waiting for drain may go on. */
    latch__res_check_drain(c->writer);
    mark_dirty(c);
}

/* ------------------------------------------------------------------ */
/* File bodies with sendfile(2)                                         */
/* ------------------------------------------------------------------ */
/*
 * A file body is the tail of the connection's output while it goes out:
 * it starts once out and wout are empty (the bytes before it are on the
 * wire), nothing else is appended meanwhile (its response is the writer;
 * what it writes itself is buffered behind it, and the queue does not
 * move past it), and when its last byte went, the connection continues
 * as if the bytes had been written through out: they count in out_total
 * and written_total alike, so end_seq and finish_written work unchanged.
 *
 * When the socket is full, the body waits for writability on a uv_poll of
 * a dup of the socket: libuv has no writability watch on a uv_tcp_t for
 * outside writers, and epoll takes the dup as a registration of its own.
 */

static bool h1_can_sendfile(const latch_res *res)
{
    const latch_conn *c = res->conn;

    /* Over TLS the bytes must pass through OpenSSL: file.c reads and
     * writes (pread + SSL_write) instead. */
    return c != NULL && !(c->flags & LATCH_CF_CLOSING) && c->sf == NULL &&
           c->tls == NULL && res == c->writer && res->pending.len == 0 &&
           !res->hold;
}

/* A socket error that means the client is gone (the connection closes),
 * not that the file could not be read. */
static bool peer_error(int e)
{
    return e == EPIPE || e == ECONNRESET || e == ENOTCONN || e == ETIMEDOUT ||
           e == ECONNABORTED || e == EHOSTUNREACH || e == ENETUNREACH ||
           e == EBADF;
}

/* out ahead of a file body: the kernel may hold a partial segment for the
 * file's first bytes (MSG_MORE), so a small body leaves with its head in
 * one packet rather than two. As uv_try_write: bytes taken, or UV_*. */
static int send_more(latch_conn *c)
{
    uv_os_fd_t fd;
    ssize_t n;

    if (uv_fileno((uv_handle_t *)&c->tcp, &fd) < 0)
        return UV_EBADF;
    do
        n = send(fd, c->out.data, c->out.len,
                 MSG_MORE | MSG_DONTWAIT | MSG_NOSIGNAL);
    while (n < 0 && errno == EINTR);
    if (n >= 0)
        return (int)(n > INT_MAX ? INT_MAX : n);
    return errno == EAGAIN || errno == EWOULDBLOCK ? UV_EAGAIN : -errno;
}

/*
 * The body is over (status 0: all of it went), or the connection or its
 * response stopped it (UV_ECANCELED), or it failed: the caller hears it,
 * once. After a whole body, what the response wrote meanwhile follows it
 * and, if the response ended meanwhile, the queue moves on.
 */
static void sf_end(latch_conn *c, int status)
{
    latch_sfile *sf = c->sf;
    latch_res *res = sf->res;

    c->sf = NULL;
    /* libuv's stop is an epoll_ctl(DEL) whether or not the watch is on:
     * a body that never waited (most small files) makes no syscall. */
    if (c->rare != NULL && c->rare->sf_poll != NULL &&
        uv_is_active((uv_handle_t *)c->rare->sf_poll))
        uv_poll_stop(c->rare->sf_poll);
    if (!(c->flags & LATCH_CF_WRITING)) {
        s_unlink(c);
        wait_done(c);
    }
    if (status == 0 && !(c->flags & LATCH_CF_CLOSING)) {
        h1_unhold(res);
        if (res == c->writer && res->state >= LATCH_RS_ENDED)
            advance_queue(c);
        mark_dirty(c);
    }
    sf->cb(res, status, sf->data);
    free(sf);
}

static void on_sf_writable(uv_poll_t *p, int status, int events);

/* The connection's writability watch, made the first time a body has to
 * wait (most small files never do: they cost no descriptor and no system
 * call for it): a uv_poll of a dup of the socket, kept until the
 * connection closes. 0 or an error (no descriptor left, no memory). */
static int sf_watch(latch_conn *c)
{
    uv_os_fd_t sfd;
    uv_poll_t *p;
    int dfd, r;

    if (rare_take(c) == NULL)
        return LATCH_ERR_NOMEM;
    if (c->rare->sf_poll != NULL)
        return 0;
    if ((r = uv_fileno((uv_handle_t *)&c->tcp, &sfd)) < 0)
        return r;
    if ((p = malloc(sizeof(*p))) == NULL)
        return LATCH_ERR_NOMEM;
    if ((dfd = fcntl(sfd, F_DUPFD_CLOEXEC, 0)) < 0) {
        r = -errno;
        free(p);
        return r;
    }
    if ((r = uv_poll_init(&c->w->loop, p, dfd)) < 0) {
        close(dfd);
        free(p);
        return r;
    }
    p->data = c;
    c->rare->sf_poll = p;
    return 0;
}

/* Sends what the socket takes, at most SF_TURN bytes this turn; then the
 * body is over or waits for writability (under the send timeout). */
static void sf_run(latch_conn *c)
{
    latch_sfile *sf = c->sf;
    uv_os_fd_t sfd;
    size_t turn = SF_TURN;
    bool moved = false;
    int err = 0;

    if (uv_fileno((uv_handle_t *)&c->tcp, &sfd) < 0) {
        conn_close(c);
        return;
    }
    while (sf->left > 0 && turn > 0) {
        off_t o = (off_t)sf->off;
        size_t want = sf->left < turn ? (size_t)sf->left : turn;
        ssize_t n = sendfile(sfd, sf->fd, &o, want);

        if (n > 0) {
            sf->off += (uint64_t)n;
            sf->left -= (uint64_t)n;
            turn -= (size_t)n;
            c->out_total += (uint64_t)n;
            c->written_total += (uint64_t)n;
            moved = true;
        } else if (n == 0) {
            err = UV_EOF; /* the file ends before the length announced */
            break;
        } else if (errno == EINTR) {
            continue;
        } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
            break;
        } else {
            err = -errno;
            break;
        }
    }
    if (err != 0 && peer_error(-err)) {
        conn_close(c);
        return;
    }
    if (err != 0 || sf->left == 0) {
        sf_end(c, err);
        return;
    }
    /* The socket is full, or this turn's share is spent: on when it can
     * take more. A deadline that finds no byte moved since closes it. */
    if (wait_take(c) < 0) {
        conn_close(c);
        return;
    }
    if (moved || !(c->flags & LATCH_CF_SENDQ))
        s_set(c);
    /* A watch still on (sf_run called from on_sf_writable) stays as it
     * is: libuv's start is a DEL then an ADD even for the same events.
     * No watch to be had: the body cannot go on (truncated, closed). */
    if (sf_watch(c) < 0 ||
        (!uv_is_active((uv_handle_t *)c->rare->sf_poll) &&
         uv_poll_start(c->rare->sf_poll, UV_WRITABLE, on_sf_writable) < 0))
        conn_close(c);
}

/* The socket takes bytes again. The watch stays on while the body keeps
 * the socket full (sf_run leaves it), so a long body costs one ADD and
 * one DEL, not a pair per wait; it stops when nothing here is to run. */
static void on_sf_writable(uv_poll_t *p, int status, int events)
{
    latch_conn *c = p->data;

    (void)events;
    if (c->sf == NULL || (c->flags & LATCH_CF_CLOSING) || status < 0 ||
        (c->flags & LATCH_CF_WRITING) || c->out.len > 0) {
        if (!uv_is_closing((uv_handle_t *)p))
            uv_poll_stop(p);
        if (status < 0 && c->sf != NULL && !(c->flags & LATCH_CF_CLOSING))
            conn_close(c);
        /* else (writing, out) flush drives it once those bytes are out */
        return;
    }
    sf_run(c);
}

static int h1_sendfile(latch_res *res, int fd, uint64_t off, uint64_t len,
                       latch_sendfile_cb cb, void *data)
{
    latch_conn *c = res->conn;
    latch_sfile *sf;

    if (len == 0 || !h1_can_sendfile(res))
        return 1;
    if ((sf = malloc(sizeof(*sf))) == NULL)
        return LATCH_ERR_NOMEM;
    sf->res = res;
    sf->fd = fd;
    sf->off = off;
    sf->left = len;
    sf->cb = cb;
    sf->data = data;
    c->sf = sf;
    mark_dirty(c);
    return 0;
}

static bool stream_takes(const latch_conn *c);

static void flush(latch_conn *c)
{
    uv_buf_t b;
    int n;
    latch_buf tmp;

    if (c->flags & LATCH_CF_CLOSING)
        return;
    if ((c->flags & LATCH_CF_BODY_WAIT) && stream_takes(c)) {
        /* A streamed body's sink is ready again (or nobody needs the
         * rest): reading goes on from here, outside the sink's calls. */
        c->flags &= ~LATCH_CF_BODY_WAIT;
        /* The wait was the upstream's (or the request's turn behind the
         * responses before it), not the client's: the receive timeout
         * and the minimum rate do not count it. */
        c->rx_start += (uint32_t)((uint32_t)uv_now(&c->w->loop) - c->paused_at);
        read_resume(c);
        process(c);
        if (c->flags & LATCH_CF_CLOSING)
            return;
    }
    if (c->flags & LATCH_CF_WRITING)
        return;
    if (c->out.len > 0) {
        b = uv_buf_init(c->out.data, (unsigned)c->out.len);
        n = c->sf != NULL ? send_more(c) : io_try_write(c, &b);
        if (n < 0 && n != UV_EAGAIN) {
            conn_close(c);
            return;
        }
        if (n < 0)
            n = 0;
        c->written_total += (size_t)n;
        if ((size_t)n < c->out.len) {
            /* The socket is full: hand the rest to uv_write and collect
             * new output in the other buffer meanwhile. Most connections
             * never fill the socket: what waiting needs is taken now. */
            if (wait_take(c) < 0) {
                conn_close(c);
                return;
            }
            memmove(c->out.data, c->out.data + n, c->out.len - (size_t)n);
            c->out.len -= (size_t)n;
            tmp = c->wait->wout;
            c->wait->wout = c->out;
            c->out = tmp;
            c->out.len = 0;
            b = uv_buf_init(c->wait->wout.data, (unsigned)c->wait->wout.len);
            if (io_write(c, &b, on_written) < 0) {
                conn_close(c);
                return;
            }
            c->flags |= LATCH_CF_WRITING;
            s_set(c);
        } else {
            c->out.len = 0;
            shrink(c, &c->out);
        }
        if (c->q_head != NULL && c->q_head != c->writer) {
            finish_written(c);
            if (c->flags & LATCH_CF_CLOSING)
                return;
        }
        latch__res_check_drain(c->writer);
    } else {
        /* Nothing to write: a response whose file body went out and that
         * ended since is finished; a drain callback registered meanwhile
         * runs. */
        if (c->q_head != NULL && c->q_head != c->writer) {
            finish_written(c);
            if (c->flags & LATCH_CF_CLOSING)
                return;
        }
        latch__res_check_drain(c->writer);
    }
    if (c->sf != NULL && !(c->flags & LATCH_CF_WRITING) && c->out.len == 0) {
        sf_run(c);
        if (c->flags & LATCH_CF_CLOSING)
            return;
    }
    /* The socket took everything and no file body waits: the wait part
     * goes back (a waiting connection holds none). */
    wait_done(c);
    if (!(c->flags & LATCH_CF_WRITING) && c->out.len == 0 &&
        (c->flags & LATCH_CF_CLOSE_AFTER_WRITE) && c->q_head == NULL)
        start_linger(c);
}

/* Hands what is already in the output buffer to the socket now, if it
 * takes it without waiting: used right before a connection is cut. */
static void flush_now(latch_conn *c)
{
    uv_buf_t b;

    if ((c->flags & (LATCH_CF_WRITING | LATCH_CF_CLOSING)) || c->out.len == 0)
        return;
    b = uv_buf_init(c->out.data, (unsigned)c->out.len);
    (void)io_try_write(c, &b);
}

static void mark_dirty(latch_conn *c)
{
    if (c->flags & (LATCH_CF_DIRTY | LATCH_CF_CLOSING))
        return;
    c->flags |= LATCH_CF_DIRTY;
    c->next_dirty = c->w->dirty;
    c->w->dirty = c;
}

void latch__conn_flush_all(latch_worker *w)
{
    latch_conn *c;

    /* Flushing can finish responses, which can start handlers of
     * pipelined requests, which can dirty connections again: go on until
     * a pass leaves nothing behind. */
    while ((c = w->dirty) != NULL) {
        w->dirty = c->next_dirty;
        c->next_dirty = NULL;
        c->flags &= ~LATCH_CF_DIRTY;
        flush(c);
    }
}

/* Shutdown: idle connections close now, busy ones after their last
 * response (which says Connection: close if its headers are not out). */
void latch__conn_drain(latch_worker *w)
{
    latch_conn *c, *next;

    for (c = w->conns; c != NULL; c = next) {
        next = c->next;
        if (c->cur != NULL) {
            /* A request is arriving (an upload, say): it may finish
             * within the drain time, and is the last one. */
            c->flags |= LATCH_CF_DRAIN_LAST;
            continue;
        }
        c->flags |= LATCH_CF_NO_MORE;
        if (c->q_head == NULL)
            conn_close(c);
    }
    if (w->nconns == 0) {
        w->drained(w);
        return;
    }
    w->drain_deadline = uv_now(&w->loop) + w->app->cfg.drain_ms;
    arm_sweeper(w, w->drain_deadline);
}

void latch__conn_pool_free(latch_worker *w)
{
    latch_rbuf *rb;

    while ((rb = w->free_rbufs) != NULL) {
        w->free_rbufs = rb->next_free;
        free(rb);
    }
    w->nfree_rbufs = 0;
    while ((rb = w->free_first) != NULL) {
        w->free_first = rb->next_free;
        free(rb);
    }
    w->nfree_first = 0;
    fl_free(&w->free_outs);
    fl_free(&w->free_parsers);
    fl_free(&w->free_waits);
}
