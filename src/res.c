/*
 * res.c - the response: its state machine, the head's framing and the
 * body's, and its ends of life (finished, detached, destroyed, the
 * cancellation signal, the attachments).
 *
 * A response moves FRESH -> HEADERS_SENT -> ENDED -> FINISHED, or to
 * DESTROYED from any state. Every public call first asks the gate
 * (latch__res_gate) whether the state allows it; a refused call returns
 * Node's error code, is reported with the place of the call and the place
 * that sealed the response, and never reaches the wire. Bytes go out
 * through the protocol's exchange table, which keeps pipelined responses
 * in order.
 *
 * A response is a reference-counted object from a per-worker pool, never a
 * slot of its connection: once the request is over it stays a tombstone
 * (conn == NULL) until its last reference goes, and any call on it is
 * refused without touching the connection that may already serve the next
 * request. This module does not pick handlers (chain.c) nor read requests.
 * The header store is headers.c's, the senders (send, json, type,
 * redirect) send.c's, the framework's answers pages.c's; they share what
 * they need of this file through res_internal.h.
 */
#include "res_internal.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define RES_FREE_MAX 1024
#define PENDING_LIMIT ((size_t)1 << 40)
/* Buffers kept with a pooled response up to these capacities. */
#define KEEP_HBUF 4096
#define KEEP_BUF 16384

/* ------------------------------------------------------------------ */
/* Handles                                                              */
/* ------------------------------------------------------------------ */

/* Gives an object without a slot (new, or its slot retired) a slot and
 * its first handle. An object coming back from the pool already has its
 * next handle (handle_close made it). */
static int handle_open(latch_res *r, latch_worker *w)
{
    latch_slot *sl;
    uint32_t gen;

    if ((r->slot = latch__rslot_take()) == UINT32_MAX)
        return LATCH_ERR_NOMEM;
    sl = r->slotp = latch__rslot_at(r->slot);
    atomic_store_explicit(&sl->obj, r, memory_order_relaxed);
    atomic_store_explicit(&sl->app, w->app, memory_order_relaxed);
    gen = atomic_load_explicit(&sl->gen, memory_order_relaxed);
    if (gen == 0) {
        gen = 1; /* a fresh slot */
        atomic_store_explicit(&sl->gen, gen, memory_order_release);
    }
    r->handle = (uint64_t)gen << 40 | (uint64_t)r->slot << 18 | 1u;
    return 0;
}

/* The request is over and the object goes back to the pool: every handle
 * of this generation becomes stale. A slot whose generation would wrap is
 * retired (its old handles stay stale forever) and the object takes a new
 * one next time. */
static void handle_close(latch_res *r)
{
    latch_slot *sl;
    uint32_t gen;

    if (r->slot == UINT32_MAX)
        return;
    sl = r->slotp;
    gen = atomic_load_explicit(&sl->gen, memory_order_relaxed);
    atomic_store_explicit(&sl->last_id, r->req.id, memory_order_relaxed);
    if (gen == LATCH_GEN_MAX) {
        atomic_store_explicit(&sl->gen, 0, memory_order_release);
        atomic_store_explicit(&sl->obj, NULL, memory_order_relaxed);
        r->slot = UINT32_MAX;
        return;
    }
    atomic_store_explicit(&sl->gen, gen + 1, memory_order_release);
    /* The next request on this object gets this handle: nothing to do
     * for it on the hot path. */
    r->handle = (uint64_t)(gen + 1) << 40 | (r->handle & ((1ull << 40) - 1));
}

/* ------------------------------------------------------------------ */
/* Pool                                                                 */
/* ------------------------------------------------------------------ */

latch_res *latch__res_alloc(latch_worker *w, const latch_exchange_ops *ex)
{
    latch_res *r;
    uint32_t nf = w->app->cfg.parse.fields;

    if (w->free_res != NULL) {
        r = w->free_res;
        w->free_res = r->q_next;
        w->nfree_res--;
    } else {
        r = calloc(1, sizeof(*r));
        if (r == NULL)
            return NULL;
        r->slot = UINT32_MAX;
    }
    /* Keep the buffers' storage; reset everything else. */
    {
        latch_buf hbuf = r->hbuf, pending = r->pending, body = r->req.body;
        latch_hdr *hdrs = r->hdrs;
        uint32_t hcap = r->hdrs_cap;
        latch_field *fields = r->req.fields;
        uint32_t slot = r->slot;
        uint64_t handle = r->handle;
        latch_slot *slotp = r->slotp;
        struct latch_res_cbs *cbs = r->cbs;

        memset(r, 0, sizeof(*r));
        if (cbs != NULL) {
            memset(cbs, 0, sizeof(*cbs));
            r->cbs = cbs;
        }
        r->slot = slot;
        r->handle = handle;
        r->slotp = slotp;
        r->hbuf = hbuf;
        r->hbuf.len = 0;
        r->pending = pending;
        r->pending.len = 0;
        r->req.body = body;
        r->req.body.len = 0;
        r->hdrs = hdrs;
        r->hdrs_cap = hcap;
        r->req.fields = fields;
    }
    /* The fields array is the object's own unless a long-lived request
     * gave it back (latch__res_fields_moved). */
    if ((r->req.fields == NULL &&
         (r->req.fields = malloc(nf * sizeof(latch_field))) == NULL) ||
        (r->slot == UINT32_MAX && handle_open(r, w) < 0)) {
        /* No fields array or no slot for its handle (out of memory):
         * the object stays unused in the pool. */
        r->q_next = w->free_res;
        w->free_res = r;
        w->nfree_res++;
        return NULL;
    }
    r->refs = 1; /* the connection's */
    r->ex = ex;
    r->status = 200;
    r->w = w;
    return r;
}

void latch__res_fields_moved(latch_res *res, latch_field *fields)
{
    if (!res->req.fields_moved)
        free(res->req.fields);
    res->req.fields = fields;
    res->req.fields_moved = true;
}

void latch__res_trim_output(latch_res *res)
{
    res->trim_out = true;
}

static void cold_give_back(latch_res *res);

/*
 * A response whose head is on the wire and that will wait for long (an
 * event stream, once quiet: conn.c, at its trim): its header store, kept
 * for latch_res_get_header only since no header can change any more, is
 * packed into one block of the exact size, entries then strings, and the
 * pooled buffers it had go (416 B of 3.3 KB per waiting EventSource).
 * The block is the worker's one copy of those bytes (intern.h): the
 * streams of one route usually answer with the same headers, and
 * thousands of them then share one block.
 */
void latch__res_trim(latch_res *res)
{
    uint32_t i, n = 0;
    size_t bytes = 0, off = 0, size;
    latch_hdr *h = NULL;
    const void *shared = NULL;
    char *str;
    _Alignas(latch_hdr) char stack[512];

    if (res->cold != NULL)
        cold_give_back(res);
    /* Storage an earlier request on this pooled object left, unused
     * (latch_req_body answers a static "" for an empty body). */
    if (res->pending.len == 0)
        latch__buf_dispose(&res->pending);
    if (res->req.body.len == 0)
        latch__buf_dispose(&res->req.body);
    if (res->state == LATCH_RS_FRESH || res->hold || res->hdrs_packed)
        return;
    for (i = 0; i < res->nhdrs; i++)
        if (!res->hdrs[i].removed) {
            n++;
            bytes += res->hdrs[i].name_len + 1u + res->hdrs[i].value_len + 1u;
        }
    size = n * sizeof(*h) + bytes;
    if (n > 0) {
        /* Built in zeroed memory: it is compared as bytes. Out of memory,
         * the store stays as it is. */
        if (size <= sizeof(stack)) {
            h = (latch_hdr *)(void *)stack;
            memset(h, 0, size);
        } else if ((h = calloc(1, size)) == NULL) {
            return;
        }
    }
    str = n > 0 ? (char *)(h + n) : NULL;
    for (i = 0, n = 0; i < res->nhdrs; i++) {
        const latch_hdr *o = &res->hdrs[i];
        if (o->removed)
            continue;
        h[n].name_len = o->name_len;
        h[n].value_len = o->value_len;
        h[n].name_off = (uint32_t)off;
        memcpy(str + off, res->hbuf.data + o->name_off, o->name_len + 1u);
        off += o->name_len + 1u;
        h[n].value_off = (uint32_t)off;
        memcpy(str + off, res->hbuf.data + o->value_off, o->value_len + 1u);
        off += o->value_len + 1u;
        n++;
    }
    if (n > 0) {
        shared = latch__intern(&res->w->interns, h, size);
        if ((char *)h != stack)
            free(h);
        if (shared == NULL)
            return;
    }
    latch__buf_dispose(&res->hbuf);
    free(res->hdrs);
    /* Read-only from here on (const in all but the type): every header
     * call is refused past FRESH and latch's own ones when packed. */
    res->hdrs = (latch_hdr *)(uintptr_t)shared;
    res->nhdrs = res->hdrs_cap = n;
    /* hbuf views the block's strings; it is never grown again and never
     * freed on its own. */
    res->hbuf.data = n > 0 ? (char *)(res->hdrs + n) : NULL;
    res->hbuf.len = res->hbuf.cap = bytes;
    res->hdrs_packed = true;
}

/* ------------------------------------------------------------------ */
/* Attachments                                                          */
/* ------------------------------------------------------------------ */

void latch__res_attach(latch_res *res, latch_attach *a)
{
    a->next = res->attach;
    res->attach = a;
    /* The events that already happened, at once. */
    if (res->attach_over)
        a->ops->end(a, res, LATCH_CANCEL_NONE);
    if (res->cancel_fired)
        a->ops->end(a, res, res->cancel_reason);
}

latch_attach *latch__res_attached(const latch_res *res,
                                  const latch_attach_ops *ops)
{
    latch_attach *a;

    for (a = res->attach; a != NULL && a->ops != ops; a = a->next)
        ;
    return a;
}

size_t latch__res_backlog(const latch_res *res)
{
    return res->conn != NULL ? res->ex->backlog(res) : 0;
}

/*
 * The response is over (reason NONE) or its request cancelled (the one
 * call from cancel_signal): each attachment's end. The event is marked
 * before the walk, so an end op that leads back here (a join's completion
 * that destroys the response) walks nothing twice; an attachment made
 * meanwhile goes to the head and gets the event from latch__res_attach,
 * so the walk never meets it.
 */
static void end_attached(latch_res *res, int reason)
{
    latch_attach *a, *next;

    if (reason == LATCH_CANCEL_NONE) {
        if (res->attach_over)
            return;
        res->attach_over = true;
    }
    for (a = res->attach; a != NULL; a = next) {
        next = a->next;
        a->ops->end(a, res, reason);
    }
}

/* The object goes back to its pool: each attachment's recycle, over the
 * list detached first, so an op may free its own attachment. */
static void recycle_attached(latch_res *res)
{
    latch_attach *a = res->attach, *next;

    res->attach = NULL;
    for (; a != NULL; a = next) {
        next = a->next;
        a->ops->recycle(a, res);
    }
}

static void cancel_signal(latch_res *res, int reason);

/* ------------------------------------------------------------------ */
/* The cold part (internal.h)                                           */
/* ------------------------------------------------------------------ */

/* The chain's state, member by member (no padding copied: a packed
 * record is compared as bytes). */
static void chainst_copy(struct latch_chainst *d, const struct latch_chainst *s)
{
    d->layer = s->layer;
    d->elayer = s->elayer;
    d->err.code = s->err.code;
    d->err.status = s->err.status;
    d->err.message = s->err.message;
    d->err.at.file = s->err.at.file;
    d->err.at.line = s->err.at.line;
    d->err.at.func = s->err.at.func;
    d->returned.call = s->returned.call;
    d->returned.at.file = s->returned.at.file;
    d->returned.at.line = s->returned.at.line;
    d->returned.at.func = s->returned.at.func;
    d->resumed.call = s->resumed.call;
    d->resumed.at.file = s->resumed.at.file;
    d->resumed.at.line = s->resumed.at.line;
    d->resumed.at.func = s->resumed.at.func;
    d->headers_site.file = s->headers_site.file;
    d->headers_site.line = s->headers_site.line;
    d->headers_site.func = s->headers_site.func;
    d->ended_site.file = s->ended_site.file;
    d->ended_site.line = s->ended_site.line;
    d->ended_site.func = s->ended_site.func;
}

void latch__res_seal_set(latch_res *res, int which, const char *call,
                         latch_site at)
{
    const latch_site *now;
    struct latch_res_cold *c = res->cold;

    if (which == LATCH_SEAL_HEADERS)
        res->headers_call = call;
    else
        res->ended_call = call;
    if (c == NULL) {
        /* A stream that gave its cold part back takes it again only for
         * a place that changes (an event's place is none, as is the end's
         * of a stream not ended yet). */
        now = which == LATCH_SEAL_HEADERS ? &latch__res_marks(res)->headers_site
                                          : &latch__res_marks(res)->ended_site;
        if (now->file == at.file && now->line == at.line &&
            now->func == at.func)
            return;
        if ((c = latch__res_cold_take(res)) == NULL)
            return; /* the place is lost, never the seal */
    }
    if (which == LATCH_SEAL_HEADERS)
        c->cs.headers_site = at;
    else
        c->cs.ended_site = at;
}

struct latch_res_cold *latch__res_cold_take(latch_res *res)
{
    latch_worker *w = res->w;
    struct latch_res_cold *c = res->cold;

    if (c != NULL)
        return c;
    if ((c = w->free_cold) != NULL) {
        w->free_cold = c->next;
        w->nfree_cold--;
    } else if ((c = calloc(1, sizeof(*c))) == NULL) {
        return NULL;
    }
    /* Only the moves and the chain's state are read before they are
     * written (the counts and flags in res guard the rest); the JSON
     * buffer keeps its storage. */
    memset(c->move_ids, 0, sizeof(c->move_ids));
    memset(&c->cs, 0, sizeof(c->cs));
    c->jbuf.len = 0;
    c->res = res;
    res->cold = c;
    if (res->moves != NULL) {
        /* Given back by latch__res_trim: the chain's state and the moves
         * come back. */
        chainst_copy(&c->cs, &res->moves->cs);
        for (uint32_t i = 0; i < res->moves->n; i++) {
            uint16_t id = res->moves->m[i].id;
            c->move_ids[id & 7] = id;
            c->moves[id & 7] = res->moves->m[i].seal;
        }
        latch__intern_release(&w->interns, res->moves);
        res->moves = NULL;
    }
    return c;
}

static void cold_put(latch_worker *w, latch_res *r);

/*
 * A long-lived response gives its cold part back early (internal.h):
 * only when its chain is done and nothing there is live but the chain's
 * state and the moves, which are packed (a latch_fail message, kept in the
 * cold part, keeps it). Out of memory, it keeps the cold part.
 */
static void cold_give_back(latch_res *res)
{
    struct latch_res_cold *c = res->cold;
    union {
        struct latch_moves m;
        char b[sizeof(struct latch_moves) + 8 * sizeof(res->moves->m[0])];
    } u;
    const void *shared;
    uint32_t i, n = 0;

    if (res->dispatched != LATCH_DISPATCH_DONE || res->frame != NULL ||
        res->req.nparams != 0 || res->ncancel != 0 || res->json_open ||
        c->cs.err.message == c->err_msg)
        return;
    for (i = 0; i < 8; i++)
        n += c->move_ids[i] != 0;
    /* In zeroed memory, member by member (no padding copied): the
     * block is the worker's one copy of these bytes (intern.h), as
     * every stream of a route moves its chain at the same places. */
    memset(&u, 0, sizeof(u));
    chainst_copy(&u.m.cs, &c->cs);
    for (i = 0; i < 8; i++)
        if (c->move_ids[i] != 0) {
            u.m.m[u.m.n].id = c->move_ids[i];
            u.m.m[u.m.n].seal.call = c->moves[i].call;
            u.m.m[u.m.n].seal.at.file = c->moves[i].at.file;
            u.m.m[u.m.n].seal.at.line = c->moves[i].at.line;
            u.m.m[u.m.n].seal.at.func = c->moves[i].at.func;
            u.m.n++;
        }
    shared = latch__intern(&res->w->interns, &u.m,
                           sizeof(u.m) + n * sizeof(u.m.m[0]));
    if (shared == NULL)
        return;
    res->moves = (struct latch_moves *)(uintptr_t)shared;
    res->req.params = NULL; /* nparams is 0: nobody reads it */
    /* The chain is done; were it walked again, it would match layer by
     * layer rather than read the route ids. */
    res->nrids = 0;
    res->rlinear = true;
    cold_put(res->w, res);
}

static void cold_free(struct latch_res_cold *c)
{
    latch__buf_dispose(&c->jbuf);
    free(c);
}

/* res's cold part goes back to the worker's pool. */
static void cold_put(latch_worker *w, latch_res *r)
{
    struct latch_res_cold *c = r->cold;

    r->cold = NULL;
    if (c->jbuf.cap > KEEP_BUF)
        latch__buf_dispose(&c->jbuf);
    if (w->nfree_cold < RES_FREE_MAX) {
        c->next = w->free_cold;
        w->free_cold = c;
        w->nfree_cold++;
        return;
    }
    cold_free(c);
}

static void res_recycle(latch_res *r)
{
    latch_worker *w = r->w;

    handle_close(r); /* from here on, its handles are stale */
    if (r->req.fields_moved)
        r->req.fields = NULL; /* they go with the input */
    r->ex->release_input(r);
    r->req.rb = NULL;
    latch__req_reset(&r->req);
    recycle_attached(r);
    if (r->cold != NULL)
        cold_put(w, r);
    if (r->moves != NULL)
        latch__intern_release(&w->interns, r->moves);
    r->moves = NULL;
    if (r->hdrs_packed) {
        /* One shared block (latch__res_trim), the worker's: the next
         * request on this object makes a store of its own. */
        if (r->hdrs != NULL)
            latch__intern_release(&w->interns, r->hdrs);
        r->hdrs = NULL;
        r->nhdrs = r->hdrs_cap = 0;
        r->hbuf = (latch_buf){NULL, 0, 0};
        r->hdrs_packed = false;
    }
    /* Large buffers are not worth keeping in the pool. */
    if (r->hbuf.cap > KEEP_HBUF)
        latch__buf_dispose(&r->hbuf);
    if (r->pending.cap > KEEP_BUF)
        latch__buf_dispose(&r->pending);
    if (r->req.body.cap > KEEP_BUF)
        latch__buf_dispose(&r->req.body);
    if (w->nfree_res < RES_FREE_MAX) {
        r->q_next = w->free_res;
        w->free_res = r;
        w->nfree_res++;
        return;
    }
    latch__buf_dispose(&r->hbuf);
    latch__buf_dispose(&r->pending);
    latch__buf_dispose(&r->req.body);
    free(r->hdrs);
    free(r->req.fields);
    free(r->cbs);
    if (r->slot != UINT32_MAX)
        latch__rslot_give_back(r->slot);
    free(r);
}

void latch__res_pool_free(latch_worker *w)
{
    struct latch_res_cold *c;
    latch_res *r;

    while ((r = w->free_res) != NULL) {
        w->free_res = r->q_next;
        latch__buf_dispose(&r->hbuf);
        latch__buf_dispose(&r->pending);
        latch__buf_dispose(&r->req.body);
        free(r->hdrs);
        free(r->req.fields);
        free(r->cbs);
        if (r->slot != UINT32_MAX)
            latch__rslot_give_back(r->slot);
        free(r);
    }
    w->nfree_res = 0;
    while ((c = w->free_cold) != NULL) {
        w->free_cold = c->next;
        cold_free(c);
    }
    w->nfree_cold = 0;
    latch__interns_end(&w->interns);
}

void latch__res_ref(latch_res *res)
{
    res->refs++;
}

void latch__res_unref(latch_res *res)
{
    assert(res->refs > res->urefs); /* latch's own count never underflows */
    if (--res->refs == 0) {
        res_recycle(res);
        return;
    }
    /* The last holder let go of a response nobody answered. */
    if (res->owner != NULL)
        res->owner->unreferenced(res);
}

/* The retain/release macros of latch.h pass the caller's place; these
 * definitions are the plain functions behind the same names. */
#undef latch_res_retain
#undef latch_res_release

/*
 * A user's reference. latch counts it apart from its own (connection
 * queue, chain, timers, work, joins), so that a release can be checked
 * against the user's retains: a release without a matching retain would
 * recycle a response latch still holds, and is refused.
 */
void latch_res_retain_at(latch_res *res, latch_site at)
{
    if (res != NULL &&
        (res = latch__res_in(res, "latch_res_retain", &at)) == NULL)
        return;
    if (res == NULL)
        return;
    if (!latch__res_on_loop(res)) {
        /* Taking a reference from another thread races with the loop
         * letting go of its own: refused. */
        latch__violation(res, LATCH_ERR_WRONG_THREAD, "latch_res_retain",
                         "latch_res_retain must be called on the response's "
                         "loop (before handing the response to a thread)",
                         at);
        return;
    }
    res->refs++;
    if (res->urefs++ == 0)
        latch__worker_hold(res->w);
}

static void user_release(latch_res *res, latch_site at)
{
    char msg[200];

    if (res->urefs == 0) {
        snprintf(msg, sizeof(msg),
                 "latch_res_release without a matching latch_res_retain: the "
                 "%u reference(s) left are latch's own (connection, chain, "
                 "timers, work); nothing was released",
                 (unsigned)res->refs);
        latch__violation(res, LATCH_ERR_STATE, "latch_res_release", msg, at);
        return;
    }
    if (--res->urefs == 0)
        latch__worker_unhold(res->w); /* the worker outlives res */
    latch__res_unref(res);
}

static int post_release(latch_res *res, latch_res *h, latch_site at);

void latch_res_release_at(latch_res *h, latch_site at)
{
    latch_res *res = latch__res_in(h, "latch_res_release", &at);

    if (res == NULL)
        return;
    if (!latch__res_on_loop(res)) {
        /* Reported, and still carried out on the loop: refusing it
         * outright would keep the response forever. */
        latch__violation(res, LATCH_ERR_WRONG_THREAD, "latch_res_release",
                         "latch_res_release called from another thread; the "
                         "reference is released on the response's loop",
                         at);
        post_release(res, h, at);
        return;
    }
    user_release(res, at);
}

void latch_res_retain(latch_res *res)
{
    latch_res_retain_at(res, (latch_site){NULL, 0, NULL});
}

void latch_res_release(latch_res *res)
{
    latch_res_release_at(res, (latch_site){NULL, 0, NULL});
}

/* ------------------------------------------------------------------ */
/* Transitions                                                          */
/* ------------------------------------------------------------------ */

/*
 * The one place a response changes state. The legal edges are FRESH ->
 * HEADERS_SENT -> ENDED -> FINISHED, and any state but FINISHED ->
 * DESTROYED. Callers have already refused what the user may not do (gate
 * below), so an illegal edge here is latch's own bug. Each caller that
 * ends the response (FINISHED, DESTROYED) then ends its attachments, with
 * the cancellation reason when one comes with the end.
 */
static void transition(latch_res *res, int to)
{
    int from = res->state;
    bool ok;

    switch (to) {
    case LATCH_RS_FRESH: /* a held head taken back: nothing went out */
        ok = from == LATCH_RS_HEADERS_SENT && res->hold;
        break;
    case LATCH_RS_HEADERS_SENT: ok = from == LATCH_RS_FRESH; break;
    case LATCH_RS_ENDED: ok = from == LATCH_RS_HEADERS_SENT; break;
    case LATCH_RS_FINISHED: ok = from == LATCH_RS_ENDED; break;
    case LATCH_RS_DESTROYED: ok = from != LATCH_RS_FINISHED; break;
    default: ok = false; break;
    }
    assert(ok);
    (void)ok;
    res->state = (uint8_t)to;
}

/* ------------------------------------------------------------------ */
/* Gate: may this call run in this state?                               */
/* ------------------------------------------------------------------ */

/*
 * A body call on a response a producer of latch's own holds (res->sole,
 * internal.h): refused with the producer's call as the seal, unless it
 * only sets headers or status, or the request was cancelled (the
 * timeout's error handlers answer). Beside a user's pipe only a whole
 * answer is refused: its producer writes with the ordinary calls.
 */
static LATCH_COLD int sole_refuse(latch_res *res, int kind, const char *call,
                                  latch_site at)
{
    const latch_seal *claim = NULL;
    latch_attach *a;
    char msg[112];

    if (res->sole == LATCH_SOLE_WRITING || res->sole == LATCH_SOLE_PULLING ||
        kind == LATCH_K_HEADER || kind == LATCH_K_STATUS ||
        res->cancel_reason != LATCH_CANCEL_NONE ||
        (res->sole == LATCH_SOLE_PIPE && kind != LATCH_K_SEND))
        return 0;
    for (a = res->attach; a != NULL && claim == NULL; a = a->next)
        if (a->ops->claim != NULL)
            claim = a->ops->claim(a);
    snprintf(msg, sizeof(msg), "Cannot %s: the response is being sent by %s",
             kind == LATCH_K_WRITE  ? "write"
             : kind == LATCH_K_SEND ? "send"
             : kind == LATCH_K_HEAD ? "send the headers"
                                    : "end",
             claim != NULL ? claim->call : "a producer");
    latch__violation_sealed(res, LATCH_ERR_HTTP_HEADERS_SENT, call, msg, at,
                            NULL, claim);
    return LATCH_ERR_HTTP_HEADERS_SENT;
}

/*
 * Returns 0 when `kind` is allowed now, 1 for the silent no-op of end()
 * on an ended response (LATCH_K_END_EMPTY only: every other kind gets 0 or an
 * error), or a reported error.
 */
int latch__res_gate(latch_res *res, int kind, const char *call,
                    const char *verb, latch_site at)
{
    char msg[96];

    if (res == NULL)
        return LATCH_ERR_INVALID_ARG;
    if (!latch__res_on_loop(res))
        return latch__res_refuse(res, LATCH_ERR_WRONG_THREAD, call, NULL, at);
    switch (res->state) {
    case LATCH_RS_FRESH:
        return res->sole == LATCH_SOLE_NONE ? 0
                                            : sole_refuse(res, kind, call, at);
    case LATCH_RS_DESTROYED:
        snprintf(msg, sizeof(msg),
                 "Cannot call %s after a stream was destroyed",
                 kind == LATCH_K_WRITE || kind == LATCH_K_END_DATA ||
                         kind == LATCH_K_END_EMPTY
                     ? (kind == LATCH_K_WRITE ? "write" : "end")
                     : call);
        return latch__res_refuse(res, LATCH_ERR_STREAM_DESTROYED, call, msg,
                                 at);
    case LATCH_RS_HEADERS_SENT:
        if (kind == LATCH_K_WRITE || kind == LATCH_K_END_DATA ||
            kind == LATCH_K_END_EMPTY)
            return res->sole != LATCH_SOLE_HELD
                       ? 0
                       : sole_refuse(res, kind, call, at);
        break;
    default: /* ENDED, FINISHED */
        if (kind == LATCH_K_END_EMPTY)
            return 1;
        if (kind == LATCH_K_WRITE || kind == LATCH_K_END_DATA)
            return latch__res_refuse(res, LATCH_ERR_STREAM_WRITE_AFTER_END,
                                     call, NULL, at);
        break;
    }
    snprintf(msg, sizeof(msg),
             "Cannot %s headers after they are sent to the client", verb);
    return latch__res_refuse(res, LATCH_ERR_HTTP_HEADERS_SENT, call, msg, at);
}

/* The refusal of a status that is not final (latch__res_final_status). */
int latch__res_bad_status(latch_res *res, int status, const char *call,
                          latch_site at)
{
    char msg[64];

    if (status >= 100 && status <= 199)
        snprintf(msg, sizeof(msg),
                 "Invalid status code: %d (1xx is not a final answer)", status);
    else
        snprintf(msg, sizeof(msg), "Invalid status code: %d", status);
    return latch__res_refuse(res, LATCH_ERR_HTTP_INVALID_STATUS_CODE, call, msg,
                             at);
}

/* ------------------------------------------------------------------ */
/* The header block                                                     */
/* ------------------------------------------------------------------ */

static char *put(char *p, const char *s, size_t n)
{
    memcpy(p, s, n);
    return p + n;
}

/* A decimal value that header_op already checked (digits only). */
static uint64_t parse_digits(const char *s)
{
    uint64_t v = 0;

    for (; *s >= '0' && *s <= '9'; s++)
        v = v > (UINT64_MAX - 9) / 10 ? UINT64_MAX
                                      : v * 10 + (uint64_t)(*s - '0');
    return v;
}

static bool value_has_token(const char *v, const char *tok)
{
    size_t tl = strlen(tok);

    while (*v) {
        while (*v == ' ' || *v == '\t' || *v == ',')
            v++;
        const char *s = v;
        while (*v && *v != ',')
            v++;
        const char *e = v;
        while (e > s && (e[-1] == ' ' || e[-1] == '\t'))
            e--;
        if ((size_t)(e - s) == tl && latch__res_ieq(s, tok, tl))
            return true;
    }
    return false;
}

/*
 * Builds the status line and headers, decides the framing, and puts the
 * block into the response's sink. `known_len` is the whole body's length
 * when end(data) is the first body call, else -1. With `hold`, the block
 * waits in the response until the next write/end/flush (Node's writeHead).
 */
static int build_head(latch_res *res, int64_t known_len, bool hold,
                      const char *call, latch_site at)
{
    latch_conn *c = res->conn;
    latch_worker *w = res->w;
    const char *reason = latch__http_reason(res->status);
    bool user_cl = false, user_te = false, user_conn = false, user_date = false,
         close_req = false, drop_te = false, drop_conn = false, filter;
    size_t need, rl = strlen(reason);
    latch_buf *b;
    uint32_t i;
    char *p;
    int r, st = res->status;

    res->has_body = !(res->req.is_head || st < 200 || st == 204 || st == 304);
    need = 17 + rl + w->date_len + w->ka_len + 64;
    for (i = 0; i < res->nhdrs; i++) {
        const latch_hdr *h = &res->hdrs[i];
        const char *name = res->hbuf.data + h->name_off;
        const char *val = res->hbuf.data + h->value_off;
        if (h->removed)
            continue;
        need += h->name_len + h->value_len + 4;
        switch (h->name_len) {
        case 14:
            if (latch__res_ieq(name, "content-length", 14)) {
                user_cl = true;
                res->content_length = parse_digits(val);
            }
            break;
        case 17:
            if (latch__res_ieq(name, "transfer-encoding", 17)) {
                user_te = true;
                res->chunked = value_has_token(val, "chunked");
            }
            break;
        case 10:
            if (latch__res_ieq(name, "connection", 10)) {
                user_conn = true;
                close_req = value_has_token(val, "close");
            }
            break;
        case 4:
            if (latch__res_ieq(name, "date", 4))
                user_date = true;
            break;
        }
    }
    /* A user's Transfer-Encoding (header_op lets only "chunked" in) is
     * honoured for HTTP/1.1 clients; an HTTP/1.0 client cannot read
     * chunked, so its line is dropped and the body is framed as if it had
     * not been set. With chunked, a Content-Length line is never sent. */
    if (user_te && (res->req.version_minor < 1 || res->sending)) {
        user_te = false;
        drop_te = true;
        res->chunked = false;
    }
    res->has_cl = user_cl && !user_te;
    if (user_te && !res->has_body && res->chunked) {
        /* A 204/304 that claims chunking: no zero chunk may follow, so
         * the connection cannot be reused (Node does the same). */
        res->chunked = false;
        close_req = true;
    } else if (!res->has_cl && !user_te && res->has_body) {
        if (known_len >= 0) {
            res->content_length = (uint64_t)known_len;
            res->has_cl = true;
        } else if (res->req.version_minor >= 1) {
            res->chunked = true;
        } else {
            res->close_delimited = true;
        }
    }
    /* A streamed body still arriving: the rest will be dropped, and
     * the connection closes after this response. */
    res->keep_alive = res->req.keep_alive && !close_req &&
                      !res->close_delimited && c != NULL &&
                      !res->req.body_open && res->ex->may_keep_alive(res);
    if (!res->keep_alive && c != NULL)
        res->ex->make_last(res);
    /* A handler's Connection that promises more than latch will do
     * (keep-alive on a connection that closes) is replaced by latch's. */
    if (user_conn && !res->keep_alive && !close_req) {
        user_conn = false;
        drop_conn = true;
    }

    res->hold = hold;
    if (c == NULL)
        goto sealed; /* destroyed meanwhile: nothing to send */
    b = res->ex->sink(res);
    r = latch__buf_reserve(b, need, PENDING_LIMIT);
    if (r < 0)
        return r;
    p = b->data + b->len;
    if (st == 200) {
        p = put(p, "HTTP/1.1 200 OK\r\n", 17);
    } else {
        p = put(p, "HTTP/1.1 ", 9);
        p = latch__put_u64(p, (uint64_t)st);
        *p++ = ' ';
        p = put(p, reason, rl);
        p = put(p, "\r\n", 2);
    }
    /* One test per header on the common path: only a head that leaves a
     * user's framing header out looks at names. */
    filter = drop_te || drop_conn || (user_cl && user_te) || st == 204;
    for (i = 0; i < res->nhdrs; i++) {
        const latch_hdr *h = &res->hdrs[i];
        const char *name = res->hbuf.data + h->name_off;
        if (h->removed)
            continue;
        if (filter &&
            ((h->name_len == 17 && drop_te &&
              latch__res_ieq(name, "transfer-encoding", 17)) ||
             (h->name_len == 14 && ((user_cl && user_te) || st == 204) &&
              latch__res_ieq(name, "content-length", 14)) ||
             (h->name_len == 10 && drop_conn &&
              latch__res_ieq(name, "connection", 10))))
            continue;
        p = put(p, res->hbuf.data + h->name_off, h->name_len);
        p = put(p, ": ", 2);
        p = put(p, res->hbuf.data + h->value_off, h->value_len);
        p = put(p, "\r\n", 2);
    }
    if (!user_date)
        p = put(p, w->date_line, w->date_len);
    if (!user_conn) {
        if (res->keep_alive)
            p = put(p, w->ka_line, w->ka_len);
        else
            p = put(p, "Connection: close\r\n", 19);
    }
    if (!user_cl && !user_te && res->has_body) {
        if (res->has_cl) {
            p = put(p, "Content-Length: ", 16);
            p = latch__put_u64(p, res->content_length);
            p = put(p, "\r\n", 2);
        } else if (res->chunked) {
            p = put(p, "Transfer-Encoding: chunked\r\n", 28);
        }
    }
    p = put(p, "\r\n", 2);
    res->ex->wrote(res, b, (size_t)(p - (b->data + b->len)));
    b->len = (size_t)(p - b->data);
sealed:
    transition(res, LATCH_RS_HEADERS_SENT);
    latch__res_seal_set(res, LATCH_SEAL_HEADERS, call, at);
    return 0;
}

/* Output not yet taken by the OS that this response waits behind: the
 * connection's, and its own while an earlier response holds the wire. */
static size_t out_backlog(const latch_res *res)
{
    return res->ex->backlog(res) + res->pending.len;
}

/*
 * LATCH_LIMIT_OUTPUT: a write that starts while the backlog is at or above
 * the high-water mark (the previous write returned 0 and the caller went
 * on) and would take it past the cap is refused. A single large write
 * into a backlog below the mark is not: its bytes are in the caller's
 * memory already, and the next write will wait.
 */
static bool out_over(const latch_res *res, size_t need)
{
    size_t backlog = out_backlog(res);

    return backlog >= LATCH_HIGH_WATER &&
           backlog + need > res->w->app->cfg.output;
}

/*
 * LATCH_DEBUG=lifecycle's "headers sent" for the head build_head just
 * made (r == 0). The calls that end the response in the same stroke (send,
 * json, end) report head and end together from latch__res_end instead: one
 * check of the flag per response on the common path (LOAD=0 make bench).
 */
static inline int traced_head(latch_res *res, int r)
{
    if (r == 0 && LATCH_TRACING())
        latch__trace_state(res, LATCH_RS_HEADERS_SENT);
    return r;
}

/* Appends body bytes (framed) to the sink. Inline: latch__res_end's share of
 * a response's instructions depends on it (GCC stops inlining it there
 * when latch__res_end grows by as little as a trace call). */
static inline int emit_body(latch_res *res, const void *data, size_t len,
                            bool last)
{
    latch_conn *c = res->conn;
    latch_buf *b;
    size_t need;
    char *p;
    int r;

    if (c == NULL)
        return 0;
    if (!res->has_body)
        len = 0;
    if (len == 0 && !(last && res->chunked))
        return 0;
    need = len + (res->chunked ? 32 : 0);
    if (out_over(res, need))
        return LATCH_ERR_LIMIT;
    b = res->ex->sink(res);
    r = latch__buf_reserve(b, need, PENDING_LIMIT);
    if (r < 0)
        return r;
    p = b->data + b->len;
    if (res->chunked && len > 0) {
        static const char hex[] = "0123456789abcdef";
        char tmp[16];
        int n = 0;
        size_t v = len;
        do {
            tmp[n++] = hex[v & 15];
            v >>= 4;
        } while (v);
        while (n)
            *p++ = tmp[--n];
        p = put(p, "\r\n", 2);
        p = put(p, data, len);
        p = put(p, "\r\n", 2);
    } else if (len > 0) {
        p = put(p, data, len);
    }
    if (last && res->chunked)
        p = put(p, "0\r\n\r\n", 5);
    res->ex->wrote(res, b, (size_t)(p - (b->data + b->len)));
    b->len = (size_t)(p - b->data);
    return 0;
}

static int check_status(latch_res *res, const char *call, latch_site at)
{
    if (latch__res_final_status(res->status))
        return 0;
    return latch__res_bad_status(res, res->status, call, at);
}

int latch_res_write_head_at(latch_res *res, int status, latch_site at)
{
    if (res != NULL &&
        (res = latch__res_in(res, "latch_res_write_head", &at)) == NULL)
        return LATCH_ERR_STREAM_DESTROYED;
    int r =
        latch__res_gate(res, LATCH_K_HEAD, "latch_res_write_head", "write", at);

    if (r != 0)
        return r;
    if (!latch__res_final_status(status))
        return latch__res_bad_status(res, status, "latch_res_write_head", at);
    res->status = status;
    return traced_head(res,
                       build_head(res, -1, true, "latch_res_write_head", at));
}

int latch__res_head_check(latch_res *res, const char *call, latch_site at)
{
    return latch__res_gate(res, LATCH_K_HEAD, call, "write", at);
}

int latch_res_flush_headers_at(latch_res *res, latch_site at)
{
    if (res != NULL &&
        (res = latch__res_in(res, "latch_res_flush_headers", &at)) == NULL)
        return LATCH_ERR_STREAM_DESTROYED;
    int r;

    /* As Node's flushHeaders: headers built by write_head go out now;
     * once they are out it does nothing. */
    if (res != NULL && latch__res_on_loop(res) && !res->detached &&
        res->state >= LATCH_RS_HEADERS_SENT &&
        res->state <= LATCH_RS_FINISHED) {
        if (res->hold)
            res->ex->unhold(res);
        return 0;
    }
    r = latch__res_gate(res, LATCH_K_HEAD, "latch_res_flush_headers", "write",
                        at);
    if (r != 0)
        return r;
    if ((r = check_status(res, "latch_res_flush_headers", at)) < 0)
        return r;
    return traced_head(
        res, build_head(res, -1, false, "latch_res_flush_headers", at));
}

/*
 * A write past LATCH_LIMIT_OUTPUT: the caller ignored backpressure, so the
 * response cannot be completed without buffering without bound. Reported
 * once, then the response is destroyed (the client sees it truncated);
 * later calls meet the destroyed state.
 */
static int over_limit(latch_res *res, const char *call, latch_site at)
{
    char msg[200];

    snprintf(msg, sizeof(msg),
             "The pending output would pass LATCH_LIMIT_OUTPUT (%llu bytes): "
             "a write returned 0 and the writer went on without waiting for "
             "drain; the response is destroyed",
             (unsigned long long)res->w->app->cfg.output);
    latch__violation(res, LATCH_ERR_LIMIT, call, msg, at);
    res->cut_code = LATCH_ERR_LIMIT;
    if (res->ended_call == NULL)
        latch__res_seal_set(res, LATCH_SEAL_ENDED, call, at);
    latch_res_destroy_at(res, at);
    return LATCH_ERR_LIMIT;
}

static int write_common(latch_res *res, const void *data, size_t len,
                        const char *call, latch_site at)
{
    latch_conn *c;
    int r;

    if (res->state == LATCH_RS_FRESH) {
        if ((r = check_status(res, call, at)) < 0)
            return r;
        if ((r = traced_head(res, build_head(res, -1, false, call, at))) < 0)
            return r;
    }
    if (res->has_cl && res->has_body &&
        (len > res->content_length - res->body_sent ||
         res->body_sent > res->content_length)) {
        char msg[160];
        snprintf(msg, sizeof(msg),
                 "Response body's content-length of %llu byte(s) does not "
                 "match the content-length of %llu byte(s) set in header",
                 (unsigned long long)(res->body_sent + len),
                 (unsigned long long)res->content_length);
        return latch__res_refuse(res, LATCH_ERR_HTTP_CONTENT_LENGTH_MISMATCH,
                                 call, msg, at);
    }
    if (res->hold)
        res->ex->unhold(res);
    if ((r = emit_body(res, data, len, false)) < 0)
        return r == LATCH_ERR_LIMIT ? over_limit(res, call, at) : r;
    res->body_sent += len;
    c = res->conn;
    if (c != NULL && out_backlog(res) >= LATCH_HIGH_WATER) {
        res->want_drain = true;
        return 0;
    }
    return 1;
}

/*
 * A file body through the connection's sendfile op (file.c). The bytes
 * count as written when the op takes them, as write_common counts bytes
 * it buffers: a later write past the Content-Length is refused as ever,
 * and an end during the body is a complete one (conn.c holds the queue
 * until the body is out).
 */
int latch__res_sendfile(latch_res *res, int fd, uint64_t off, uint64_t len,
                        latch_sendfile_cb cb, void *data, const char *call,
                        latch_site at)
{
    int r;

    if (res->conn == NULL || res->detached ||
        res->state > LATCH_RS_HEADERS_SENT || res->ex->sendfile == NULL ||
        !res->ex->can_sendfile(res))
        return 1;
    if (res->state == LATCH_RS_FRESH) {
        if ((r = check_status(res, call, at)) < 0)
            return r;
        if ((r = build_head(res, -1, false, call, at)) < 0)
            return r;
        if (res->conn == NULL)
            return 1;
    }
    if (!res->has_cl || res->chunked || !res->has_body ||
        res->body_sent > res->content_length ||
        len > res->content_length - res->body_sent)
        return 1;
    r = res->ex->sendfile(res, fd, off, len, cb, data);
    if (r == 0)
        res->body_sent += len;
    return r;
}

int latch_res_write_at(latch_res *res, const void *data, size_t len,
                       latch_site at)
{
    if (res != NULL &&
        (res = latch__res_in(res, "latch_res_write", &at)) == NULL)
        return LATCH_ERR_STREAM_DESTROYED;
    int r;

    /* As Node, the argument is checked before the state. */
    if (res != NULL && data == NULL && len > 0 && latch__res_on_loop(res))
        return latch__res_refuse(res, LATCH_ERR_INVALID_ARG, "latch_res_write",
                                 "May not write null values to stream", at);
    r = latch__res_gate(res, LATCH_K_WRITE, "latch_res_write", "write", at);
    if (r != 0)
        return r;
    return write_common(res, data, len, "latch_res_write", at);
}

int latch__res_end(latch_res *res, const void *data, size_t len,
                   const char *call, latch_site at)
{
    int r, ret = 0;
    bool fresh = res->state == LATCH_RS_FRESH;

    if (fresh) {
        if ((r = check_status(res, call, at)) < 0)
            return r;
        if ((r = build_head(res, (int64_t)len, false, call, at)) < 0)
            return r;
    }
    if (res->has_cl && res->has_body) {
        if (len > res->content_length - res->body_sent) {
            char msg[160];
            snprintf(msg, sizeof(msg),
                     "Response body's content-length of %llu byte(s) does "
                     "not match the content-length of %llu byte(s) set in "
                     "header",
                     (unsigned long long)(res->body_sent + len),
                     (unsigned long long)res->content_length);
            return latch__res_refuse(
                res, LATCH_ERR_HTTP_CONTENT_LENGTH_MISMATCH, call, msg, at);
        }
    }
    if (res->hold)
        res->ex->unhold(res);
    if ((r = emit_body(res, data, len, true)) < 0)
        return r == LATCH_ERR_LIMIT ? over_limit(res, call, at) : r;
    res->body_sent += len;
    if (res->has_cl && res->has_body && res->body_sent < res->content_length) {
        /* Ended short: the client must not take the truncated body for a
         * whole one, so the connection closes after it. */
        char msg[160];
        res->end_short = true;
        res->keep_alive = false;
        if (res->conn != NULL)
            res->ex->make_last(res);
        snprintf(msg, sizeof(msg),
                 "Response body's content-length of %llu byte(s) does not "
                 "match the content-length of %llu byte(s) set in header",
                 (unsigned long long)res->body_sent,
                 (unsigned long long)res->content_length);
        ret = latch__res_refuse(res, LATCH_ERR_HTTP_CONTENT_LENGTH_MISMATCH,
                                call, msg, at);
    }
    transition(res, LATCH_RS_ENDED);
    res->end_called = true;
    latch__res_seal_set(res, LATCH_SEAL_ENDED, call, at);
    if (LATCH_TRACING())
        latch__trace_end(res, fresh);
    if (res->conn == NULL) {
        /* Destroyed while the head was built: nothing more to do. */
        return ret;
    }
    res->ex->ended(res);
    return ret;
}

int latch_res_end_at(latch_res *res, const void *data, size_t len,
                     latch_site at)
{
    if (res != NULL && (res = latch__res_in(res, "latch_res_end", &at)) == NULL)
        return LATCH_ERR_STREAM_DESTROYED;
    int kind = (data != NULL && len > 0) ? LATCH_K_END_DATA : LATCH_K_END_EMPTY;
    int r;

    /* As write: NULL data with a length is refused before the state. */
    if (res != NULL && data == NULL && len > 0 && latch__res_on_loop(res))
        return latch__res_refuse(res, LATCH_ERR_INVALID_ARG, "latch_res_end",
                                 "May not write null values to stream", at);
    r = latch__res_gate(res, kind, "latch_res_end", "write", at);

    if (r == 1)
        return 0; /* end() after end(): a no-op, as in Node */
    if (r != 0)
        return r;
    return latch__res_end(res, data, len, "latch_res_end", at);
}

/* ------------------------------------------------------------------ */
/* Ends of life                                                         */
/* ------------------------------------------------------------------ */

/* Takes callback `kind` away (it runs at most once) and runs it, with
 * the handler call that registered it as the ambient frame. */
static void run_cb(latch_res *res, int kind)
{
    struct latch_res_cbs *c = res->cbs;
    latch_res_cb cb = c != NULL ? c->cb[kind] : NULL;
    uint16_t prev, frame;

    if (cb == NULL)
        return;
    c->cb[kind] = NULL;
    frame = c->frame[kind];
    prev = latch__frame_enter(res, frame);
    cb(latch__res_hf(res, frame), c->data[kind]);
    latch__frame_leave(res, prev);
}

static void cb_clear(latch_res *res, int kind)
{
    if (res->cbs != NULL)
        res->cbs->cb[kind] = NULL;
}

static void fire_close(latch_res *res)
{
    if (res->closed_fired)
        return;
    res->closed_fired = true;
    run_cb(res, LATCH_CB_CLOSE);
}

/* Body bytes that went on the wire: none for HEAD, 204 and 304, whatever
 * the handler sent (latch drops it). */
uint64_t latch__res_body_bytes(const latch_res *res)
{
    return res->has_body ? res->body_sent : 0;
}

int latch__res_body_sink(latch_res *res, latch_body_sink *sink)
{
    if (res->conn == NULL || res->ex->body_sink == NULL)
        return LATCH_ERR_STATE;
    return res->ex->body_sink(res, sink);
}

void latch__res_body_resume(latch_res *res)
{
    if (res->conn != NULL && res->ex->body_resume != NULL)
        res->ex->body_resume(res);
}

void latch__res_body_stop(latch_res *res)
{
    if (res->conn != NULL && res->ex->body_stop != NULL)
        res->ex->body_stop(res);
    res->req.sink = NULL; /* carried or not, nothing calls it again */
    res->req.sink_paused = false;
}

void latch__res_continue(latch_res *res)
{
    if (res->conn != NULL && res->ex->send_continue != NULL)
        res->ex->send_continue(res);
}

/* The last byte was handed to the OS: FINISHED, then finish and close. */
void latch__res_finished(latch_res *res)
{
    if (res->t_start != 0 && res->owner != NULL) /* metrics, log or trace */
        res->owner->observe(res, true);
    transition(res, LATCH_RS_FINISHED);
    end_attached(res, LATCH_CANCEL_NONE); /* no timer fires after this */
    res->conn = NULL;
    res->detached = true;
    cb_clear(res, LATCH_CB_DRAIN);
    latch__res_ref(res);
    run_cb(res, LATCH_CB_FINISH);
    fire_close(res);
    if (LATCH_TRACING())
        latch__trace(res, "closed", NULL, (latch_site){NULL, 0, NULL});
    if (res->owner != NULL)
        res->owner->closed(res);
    latch__res_unref(res); /* ours */
    latch__res_unref(res); /* the queue's */
}

/*
 * The connection went away under the response, or cut it. An unfinished
 * response becomes DESTROYED, sealed by `event`; with a `reason` the
 * request's cancellation signal fires; then on_close.
 */
void latch__res_detach(latch_res *res, const char *event, int reason)
{
    bool unfinished = res->state < LATCH_RS_FINISHED;

    if (res->t_start != 0 && res->owner != NULL)
        res->owner->observe(res, false);
    res->conn = NULL;
    res->detached = true;
    if (unfinished && res->state != LATCH_RS_DESTROYED) {
        if (res->state < LATCH_RS_ENDED && res->ended_call == NULL)
            latch__res_seal_set(res, LATCH_SEAL_ENDED, event,
                                (latch_site){NULL, 0, NULL});
        transition(res, LATCH_RS_DESTROYED);
        if (LATCH_TRACING())
            latch__trace_state(res, LATCH_RS_DESTROYED);
    }
    res->req.aborted = res->req.aborted || unfinished;
    cb_clear(res, LATCH_CB_FINISH);
    cb_clear(res, LATCH_CB_DRAIN);
    latch__res_ref(res);
    /* The cancellation first, so that attachments whose end reports how
     * the response ended (a pipe's done) learn the reason. */
    if (unfinished && reason != LATCH_CANCEL_NONE)
        cancel_signal(res, reason);
    end_attached(res, LATCH_CANCEL_NONE);
    fire_close(res);
    if (LATCH_TRACING())
        latch__trace(res, "closed", NULL, (latch_site){NULL, 0, NULL});
    if (res->owner != NULL)
        res->owner->closed(res);
    latch__res_unref(res);
    latch__res_unref(res); /* the queue's */
}

void latch_res_destroy_at(latch_res *res, latch_site at)
{
    if (res != NULL &&
        (res = latch__res_in(res, "latch_res_destroy", &at)) == NULL)
        return;
    latch_conn *c;

    if (res == NULL)
        return;
    if (!latch__res_on_loop(res)) {
        latch__res_refuse(res, LATCH_ERR_WRONG_THREAD, "latch_res_destroy",
                          NULL, at);
        return;
    }
    if (res->state >= LATCH_RS_FINISHED || res->detached)
        return; /* as Node: destroying a finished response does nothing */
    c = res->conn;
    if (res->ended_call == NULL)
        latch__res_seal_set(res, LATCH_SEAL_ENDED, "latch_res_destroy", at);
    transition(res, LATCH_RS_DESTROYED);
    if (LATCH_TRACING())
        latch__trace(res, "destroyed", "latch_res_destroy", at);
    end_attached(res, LATCH_CANCEL_NONE);
    if (c != NULL) {
        /* What the response wrote goes out, truncated where it stopped,
         * after the responses before it; then the connection closes. */
        res->ex->cut(res, "latch_res_destroy", LATCH_CANCEL_NONE);
    }
}

/* ------------------------------------------------------------------ */
/* The cancellation signal                                              */
/* ------------------------------------------------------------------ */

/* Fires the request's cancellation signal (once): the attachments' end
 * ops with `reason`, then latch_req_on_cancel's callbacks. Nothing on a
 * FINISHED response. */
static void cancel_signal(latch_res *res, int reason)
{
    uint8_t i, n;

    if (res->cancel_fired || res->state == LATCH_RS_FINISHED)
        return;
    /* A reason marked before (the request timeout's) stands. */
    if (res->cancel_reason == LATCH_CANCEL_NONE)
        res->cancel_reason = (uint8_t)reason;
    reason = res->cancel_reason;
    res->cancel_fired = true;
    res->req.aborted = true;
    if (LATCH_TRACING())
        latch__trace_cancel(res, reason);
    /* Hold the response: releasing timers and jobs may drop the others. */
    res->refs++;
    end_attached(res, reason);
    n = res->ncancel; /* > 0: the cold part holds them */
    for (i = 0; i < n; i++) {
        struct latch_res_cold *c = res->cold;
        latch_cancel_cb cb = c->cancel_cbs[i].cb;
        c->cancel_cbs[i].cb = NULL;
        if (cb != NULL) {
            uint16_t prev = latch__frame_enter(res, c->cancel_cbs[i].frame);
            cb(latch__req_hf(res, c->cancel_cbs[i].frame), reason,
               c->cancel_cbs[i].data);
            latch__frame_leave(res, prev);
        }
    }
    latch__res_unref(res);
}

#undef latch_req_on_cancel

int latch_req_on_cancel(latch_req *req, latch_cancel_cb cb, void *data)
{
    return latch_req_on_cancel_at(req, cb, data, latch__no_site);
}

int latch_req_on_cancel_at(latch_req *req, latch_cancel_cb cb, void *data,
                           latch_site at)
{
    uint16_t hf = latch__frame_of(req);
    if (req != NULL && (req = (latch_req *)latch__res_in(
                            req, "latch_req_on_cancel", &at)) == NULL)
        return LATCH_ERR_STREAM_DESTROYED;
    latch_res *res = latch_req_res(req);
    struct latch_res_cold *c;

    if (res == NULL)
        return LATCH_ERR_INVALID_ARG;
    if (cb == NULL)
        return latch__res_refuse(res, LATCH_ERR_INVALID_ARG,
                                 "latch_req_on_cancel", "The callback is NULL",
                                 at);
    if (!latch__res_on_loop(res))
        return latch__res_refuse(res, LATCH_ERR_WRONG_THREAD,
                                 "latch_req_on_cancel", NULL, at);
    if (res->cancel_reason != LATCH_CANCEL_NONE || res->detached ||
        res->state >= LATCH_RS_FINISHED) {
        latch__res_refuse(
            res, LATCH_ERR_STATE, "latch_req_on_cancel",
            "The request is over or cancelled: the callback would never "
            "run",
            at);
        return LATCH_ERR_STATE;
    }
    if (res->ncancel == LATCH_MAX_CANCEL_CBS) {
        latch__res_refuse(res, LATCH_ERR_LIMIT, "latch_req_on_cancel",
                          "At most 8 cancellation callbacks per request", at);
        return LATCH_ERR_LIMIT;
    }
    if ((c = latch__res_cold(res)) == NULL)
        return LATCH_ERR_NOMEM;
    c->cancel_cbs[res->ncancel].cb = cb;
    c->cancel_cbs[res->ncancel].data = data;
    c->cancel_cbs[res->ncancel].frame = latch__frame_pick(hf, res);
    res->ncancel++;
    return 0;
}

int latch_req_cancel_reason_at(const latch_req *req, latch_site at)
{
    if (req != NULL && (req = (const latch_req *)latch__res_in(
                            req, "latch_req_cancel_reason", &at)) == NULL)
        return 0;
    const latch_res *res = latch_req_res((latch_req *)req);

    return res ? res->cancel_reason : LATCH_CANCEL_NONE;
}

int latch_req_cancel_reason(const latch_req *req)
{
    return latch_req_cancel_reason_at(req, latch__no_site);
}

/*
 * A head that latch_res_write_head built and still holds (no write, end or
 * flush came after it) has not reached the wire: latch can take it back
 * and answer otherwise. The response is FRESH again, with the headers the
 * handler set (latch's own answers clear them). Returns whether it did.
 */
bool latch__res_retract_head(latch_res *res)
{
    if (res->state != LATCH_RS_HEADERS_SENT || !res->hold ||
        res->conn == NULL || res->body_sent != 0)
        return false;
    transition(res, LATCH_RS_FRESH);
    res->hold = false;
    res->pending.len = 0; /* the head, and only it: nothing came after */
    latch__res_seal_set(res, LATCH_SEAL_HEADERS, NULL,
                        (latch_site){NULL, 0, NULL});
    res->chunked = res->has_cl = res->close_delimited = false;
    res->content_length = 0;
    return true;
}

bool latch__res_timeout_begin(latch_res *res)
{
    latch__res_retract_head(res);
    if (res->state != LATCH_RS_FRESH || res->cancel_reason != LATCH_CANCEL_NONE)
        return false;
    res->cancel_reason = LATCH_CANCEL_TIMEOUT;
    res->req.aborted = true;
    return true;
}

/* What sealed the response during the timeout's error handlers (their
 * latch_res_json ...) is reported as the timeout, at their site. */
static void seal_as_timeout(const char **call)
{
    if (*call != NULL)
        *call = "request timeout";
}

bool latch__res_timeout_seal(latch_res *res)
{
    latch__res_retract_head(res);
    if (res->cancel_reason == LATCH_CANCEL_TIMEOUT && !res->cancel_fired) {
        /* The error handlers ran (latch__res_timeout_begin). */
        seal_as_timeout(&res->headers_call);
        seal_as_timeout(&res->ended_call);
    }
    return res->state == LATCH_RS_FRESH;
}

void latch__res_timeout_cut(latch_res *res)
{
    static const latch_site none = {NULL, 0, NULL};

    if (res->state != LATCH_RS_HEADERS_SENT)
        return;
    /* Too late for a status: cut it, visibly incomplete. */
    if (res->ended_call == NULL)
        latch__res_seal_set(res, LATCH_SEAL_ENDED, "request timeout", none);
    /* The attachments hear of it from latch__res_cancel, cancelled with
     * the reason before they hear that the response is over. */
    transition(res, LATCH_RS_DESTROYED);
    if (LATCH_TRACING())
        latch__trace(res, "destroyed (request timeout)", NULL, none);
    if (res->conn != NULL)
        res->ex->cut(res, "request timeout", LATCH_CANCEL_TIMEOUT);
}

void latch__res_cancel(latch_res *res, int reason)
{
    cancel_signal(res, reason);
}

/* The attachments that write on when the output drained (a pipe's
 * producer). Held across: a drain op may end the response. */
static void drain_attached(latch_res *r)
{
    latch_attach *a, *next;

    if (r->attach == NULL)
        return;
    latch__res_ref(r);
    for (a = r->attach; a != NULL && !latch__res_attach_done(r); a = next) {
        next = a->next;
        if (a->ops->drain != NULL && r->state < LATCH_RS_ENDED)
            a->ops->drain(a, r);
    }
    latch__res_unref(r);
}

void latch__res_check_drain(latch_res *r)
{
    if (r == NULL || !r->want_drain || r->conn == NULL ||
        r->ex->backlog(r) >= LATCH_HIGH_WATER)
        return;
    r->want_drain = false;
    if (latch__res_has_cb(r, LATCH_CB_DRAIN)) {
        /* The callback was an owner of the response; held across it, the
         * release checks whether it left one (it wrote and registered
         * again, ended, or handed the response on). */
        latch__res_ref(r);
        run_cb(r, LATCH_CB_DRAIN);
        latch__res_unref(r);
    }
    drain_attached(r);
}

void latch__res_want_drain(latch_res *res)
{
    if (res->conn == NULL)
        return;
    res->want_drain = true;
    res->ex->want_flush(res);
}

/* ------------------------------------------------------------------ */
/* Flags and callbacks                                                  */
/* ------------------------------------------------------------------ */

bool latch_res_headers_sent_at(const latch_res *res, latch_site at)
{
    if (res != NULL &&
        (res = latch__res_in(res, "latch_res_headers_sent", &at)) == NULL)
        return false;
    return res != NULL && res->headers_call != NULL;
}

bool latch_res_headers_sent(const latch_res *res)
{
    return latch_res_headers_sent_at(res, latch__no_site);
}

bool latch_res_writable_ended_at(const latch_res *res, latch_site at)
{
    if (res != NULL &&
        (res = latch__res_in(res, "latch_res_writable_ended", &at)) == NULL)
        return false;
    return res != NULL && res->end_called;
}

bool latch_res_writable_ended(const latch_res *res)
{
    return latch_res_writable_ended_at(res, latch__no_site);
}

bool latch_res_writable_finished_at(const latch_res *res, latch_site at)
{
    if (res != NULL &&
        (res = latch__res_in(res, "latch_res_writable_finished", &at)) == NULL)
        return false;
    if (res == NULL)
        return false;
    if (res->state == LATCH_RS_FINISHED)
        return true;
    /* Node's writableFinished: everything went to the socket without
     * waiting; the protocol knows when that is. */
    return res->state == LATCH_RS_ENDED && res->conn != NULL &&
           res->ex->on_wire(res);
}

bool latch_res_writable_finished(const latch_res *res)
{
    return latch_res_writable_finished_at(res, latch__no_site);
}

bool latch_res_destroyed_at(const latch_res *res, latch_site at)
{
    if (res != NULL &&
        (res = latch__res_in(res, "latch_res_destroyed", &at)) == NULL)
        return false;
    return res != NULL &&
           (res->state == LATCH_RS_DESTROYED ||
            (res->state == LATCH_RS_FINISHED && res->closed_fired));
}

bool latch_res_destroyed(const latch_res *res)
{
    return latch_res_destroyed_at(res, latch__no_site);
}

/*
 * Registers one of the response's callbacks. A call from another thread
 * (ERR_WRONG_THREAD) or after the event (LATCH_ERR_STATE: cb would never
 * run) is refused and reported, as every refused call is.
 */
static int set_cb(latch_res *res, int kind, latch_res_cb cb, void *data,
                  uint16_t hf, latch_site at)
{
    static const char *const names[] = {
        "latch_res_on_finish", "latch_res_on_close", "latch_res_on_drain"};
    bool done;

    if (res == NULL)
        return LATCH_ERR_INVALID_ARG;
    if (!latch__res_on_loop(res))
        return latch__res_refuse(res, LATCH_ERR_WRONG_THREAD, names[kind], NULL,
                                 at);
    done = kind == LATCH_CB_FINISH
               ? res->detached || res->state >= LATCH_RS_FINISHED
           : kind == LATCH_CB_CLOSE ? res->closed_fired
                                    : res->detached;
    if (done)
        return latch__res_refuse(
            res, LATCH_ERR_STATE, names[kind],
            "The event already happened: the callback would never "
            "run",
            at);
    if (res->cbs == NULL && (res->cbs = calloc(1, sizeof(*res->cbs))) == NULL)
        return latch__res_refuse(res, LATCH_ERR_NOMEM, names[kind],
                                 "Out of memory", at);
    res->cbs->cb[kind] = cb;
    res->cbs->data[kind] = data;
    res->cbs->frame[kind] = latch__frame_pick(hf, res);
    return 0;
}

/* The on_* macros of latch.h pass the caller's place; the plain functions
 * behind the same names pass none. */
#undef latch_res_on_finish
#undef latch_res_on_close
#undef latch_res_on_drain

int latch_res_on_finish_at(latch_res *res, latch_res_cb cb, void *data,
                           latch_site at)
{
    uint16_t hf = latch__frame_of(res);

    if (res != NULL &&
        (res = latch__res_in(res, "latch_res_on_finish", &at)) == NULL)
        return LATCH_ERR_STREAM_DESTROYED;
    return set_cb(res, LATCH_CB_FINISH, cb, data, hf, at);
}

int latch_res_on_close_at(latch_res *res, latch_res_cb cb, void *data,
                          latch_site at)
{
    uint16_t hf = latch__frame_of(res);

    if (res != NULL &&
        (res = latch__res_in(res, "latch_res_on_close", &at)) == NULL)
        return LATCH_ERR_STREAM_DESTROYED;
    return set_cb(res, LATCH_CB_CLOSE, cb, data, hf, at);
}

int latch_res_on_finish(latch_res *res, latch_res_cb cb, void *data)
{
    return latch_res_on_finish_at(res, cb, data, latch__no_site);
}

int latch_res_on_close(latch_res *res, latch_res_cb cb, void *data)
{
    return latch_res_on_close_at(res, cb, data, latch__no_site);
}

int latch_res_on_drain(latch_res *res, latch_res_cb cb, void *data)
{
    return latch_res_on_drain_at(res, cb, data, latch__no_site);
}

int latch_res_on_drain_at(latch_res *res, latch_res_cb cb, void *data,
                          latch_site at)
{
    uint16_t hf = latch__frame_of(res);

    if (res != NULL &&
        (res = latch__res_in(res, "latch_res_on_drain", &at)) == NULL)
        return LATCH_ERR_STREAM_DESTROYED;
    int r = set_cb(res, LATCH_CB_DRAIN, cb, data, hf, at);

    if (r != 0)
        return r;
    if (cb == NULL) {
        /* A waiting drain callback owns the response: clearing it may
         * leave the response without an owner. */
        if (res->owner != NULL)
            res->owner->unreferenced(res);
        return 0;
    }
    /* A registered callback owns the response until it runs, so it must
     * run: if no write is waiting for the output to fall, it runs at the
     * next flush, once the output is below the high-water mark. */
    res->want_drain = true;
    if (res->conn != NULL)
        res->ex->want_flush(res);
    return 0;
}

/* A handle gives a handle of the same generation (the request's has bit 1
 * set); latch's own pointers give pointers. A stale handle gives NULL,
 * reported. */
latch_req *latch_res_req_at(latch_res *res, latch_site at)
{
    latch_res *r = latch__res_in(res, "latch_res_req", &at);

    if (r == NULL)
        return NULL;
    /* Same generation, same handler call. */
    return ((uintptr_t)res & 1) ? (latch_req *)((uintptr_t)res | 2) : &r->req;
}

latch_req *latch_res_req(latch_res *res)
{
    return latch_res_req_at(res, latch__no_site);
}

/* ------------------------------------------------------------------ */
/* Posting from other threads                                           */
/* ------------------------------------------------------------------ */

/* A latch_res_release from another thread, carried out on the loop. */
static void release_posted(latch_res *h, latch_site at)
{
    latch_res *r = latch__res_in(h, "latch_res_release", &at);

    if (r != NULL)
        user_release(r, at);
}

static int post_release(latch_res *res, latch_res *h, latch_site at)
{
    return latch__worker_post_at(res->w, h, release_posted, at);
}

#undef latch_res_post

int latch_res_post_at(latch_res *h, latch_res_cb fn, void *data, latch_site at)
{
    latch_res *res = latch__res_in(h, "latch_res_post", &at);

    if (res == NULL)
        return LATCH_GONE(h);
    if (fn == NULL)
        return latch__res_refuse(res, LATCH_ERR_INVALID_ARG, "latch_res_post",
                                 "The function is NULL", at);
    /* The handle travels, not the object: checked again on the loop, so
     * a post that arrives after its request was over is refused there. */
    int rc = latch__worker_post_res(res->w, h, fn, data);

    if (rc == LATCH_ERR_STATE)
        /* After latch_run (latch.h: objects stay addressable until the
         * next run or latch_app_free, and nothing runs on the loop). */
        latch__res_refuse(res, rc, "latch_res_post",
                          "The server stopped: no loop will run the function",
                          at);
    return rc;
}

int latch_res_post(latch_res *h, latch_res_cb fn, void *data)
{
    return latch_res_post_at(h, fn, data, latch__no_site);
}
