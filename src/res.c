/*
 * res.c - the response: its state machine, header block and body framing.
 *
 * A response moves FRESH -> HEADERS_SENT -> ENDED -> FINISHED, or to
 * DESTROYED from any state. Every public call first asks `gate` whether the
 * state allows it; a refused call returns Node's error code, is reported
 * with the place of the call and the place that sealed the response, and
 * never reaches the wire. Bytes go out through conn.c's sink, which keeps
 * pipelined responses in order.
 *
 * A response is a reference-counted object from a per-worker pool, never a
 * slot of its connection: once the request is over it stays a tombstone
 * (conn == NULL) until its last reference goes, and any call on it is
 * refused without touching the connection that may already serve the next
 * request. This module does not pick handlers (app.c) nor read requests.
 */
#include "filemeta.h"
#include "internal.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define RES_FREE_MAX 1024
#define HDR_LIMIT ((size_t)64 * 1024)
#define PENDING_LIMIT ((size_t)1 << 40)
/* Buffers kept with a pooled response up to these capacities. */
#define KEEP_HBUF 4096
#define KEEP_BUF 16384
/* latch_res_json_begin's writer: the document's size and depth
 * (latch.h). */
#define JSON_MAX_BYTES ((size_t)16 << 20)
#define JSON_MAX_DEPTH 64
#define REDIRECT_URL_MAX 2048 /* an encoded Location, NUL included */

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
        r = calloc(1, sizeof(*r) + nf * sizeof(latch_field));
        if (r == NULL)
            return NULL;
        r->req.fields = (latch_field *)(void *)(r + 1);
        r->slot = UINT32_MAX;
    }
    /* Keep the buffers' storage; reset everything else. */
    {
        latch_buf hbuf = r->hbuf, pending = r->pending, body = r->req.body,
                  jbuf = r->jbuf;
        latch_hdr *hdrs = r->hdrs;
        uint32_t hcap = r->hdrs_cap;
        latch_field *fields = r->req.fields;
        uint32_t slot = r->slot;
        uint64_t handle = r->handle;
        latch_slot *slotp = r->slotp;

        memset(r, 0, sizeof(*r));
        r->slot = slot;
        r->handle = handle;
        r->slotp = slotp;
        r->hbuf = hbuf;
        r->hbuf.len = 0;
        r->pending = pending;
        r->pending.len = 0;
        r->req.body = body;
        r->req.body.len = 0;
        r->jbuf = jbuf;
        r->jbuf.len = 0;
        r->hdrs = hdrs;
        r->hdrs_cap = hcap;
        r->req.fields = fields;
    }
    if (r->slot == UINT32_MAX && handle_open(r, w) < 0) {
        /* No slot for its handle (out of memory): the object stays
         * unused in the pool. */
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

static void res_recycle(latch_res *r)
{
    latch_worker *w = r->w;

    handle_close(r); /* from here on, its handles are stale */
    r->ex->release_input(r);
    r->req.rb = NULL;
    latch__req_reset(&r->req);
    recycle_attached(r);
    /* Large buffers are not worth keeping in the pool. */
    if (r->hbuf.cap > KEEP_HBUF)
        latch__buf_dispose(&r->hbuf);
    if (r->pending.cap > KEEP_BUF)
        latch__buf_dispose(&r->pending);
    if (r->req.body.cap > KEEP_BUF)
        latch__buf_dispose(&r->req.body);
    if (r->jbuf.cap > KEEP_BUF)
        latch__buf_dispose(&r->jbuf);
    if (w->nfree_res < RES_FREE_MAX) {
        r->q_next = w->free_res;
        w->free_res = r;
        w->nfree_res++;
        return;
    }
    latch__buf_dispose(&r->hbuf);
    latch__buf_dispose(&r->pending);
    latch__buf_dispose(&r->req.body);
    latch__buf_dispose(&r->jbuf);
    free(r->hdrs);
    if (r->slot != UINT32_MAX)
        latch__rslot_give_back(r->slot);
    free(r);
}

void latch__res_pool_free(latch_worker *w)
{
    latch_res *r;

    while ((r = w->free_res) != NULL) {
        w->free_res = r->q_next;
        latch__buf_dispose(&r->hbuf);
        latch__buf_dispose(&r->pending);
        latch__buf_dispose(&r->req.body);
        latch__buf_dispose(&r->jbuf);
        free(r->hdrs);
        if (r->slot != UINT32_MAX)
            latch__rslot_give_back(r->slot);
        free(r);
    }
    w->nfree_res = 0;
}

static bool on_loop(const latch_res *res)
{
    return pthread_equal(pthread_self(), res->w->thread);
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
    if (!on_loop(res)) {
        /* Taking a reference from another thread races with the loop
         * letting go of its own: refused. */
        latch__violation(res, LATCH_ERR_WRONG_THREAD, "latch_res_retain",
                         "latch_res_retain must be called on the response's "
                         "loop (before handing the response to a thread)",
                         at);
        return;
    }
    res->refs++;
    res->urefs++;
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
    res->urefs--;
    latch__res_unref(res);
}

static int post_release(latch_res *res, latch_res *h, latch_site at);

void latch_res_release_at(latch_res *h, latch_site at)
{
    latch_res *res = latch__res_in(h, "latch_res_release", &at);

    if (res == NULL)
        return;
    if (!on_loop(res)) {
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

enum call_kind {
    K_HEADER, /* set/append/remove header, write_head */
    K_STATUS,
    K_WRITE,
    K_END_DATA,
    K_END_EMPTY,
    K_SEND, /* send, json, redirect, send_status */
};

static int refuse(latch_res *res, int code, const char *call, const char *msg,
                  latch_site at)
{
    latch__violation(res, code, call, msg, at);
    return code;
}

/*
 * Returns 0 when `kind` is allowed now, 1 for the silent no-op of end()
 * on an ended response (K_END_EMPTY only: every other kind gets 0 or an
 * error), or a reported error.
 */
static int gate(latch_res *res, int kind, const char *call, const char *verb,
                latch_site at)
{
    char msg[96];

    if (res == NULL)
        return LATCH_ERR_INVALID_ARG;
    if (!on_loop(res))
        return refuse(res, LATCH_ERR_WRONG_THREAD, call, NULL, at);
    switch (res->state) {
    case LATCH_RS_FRESH: return 0;
    case LATCH_RS_DESTROYED:
        snprintf(msg, sizeof(msg),
                 "Cannot call %s after a stream was destroyed",
                 kind == K_WRITE || kind == K_END_DATA || kind == K_END_EMPTY
                     ? (kind == K_WRITE ? "write" : "end")
                     : call);
        return refuse(res, LATCH_ERR_STREAM_DESTROYED, call, msg, at);
    case LATCH_RS_HEADERS_SENT:
        if (kind == K_WRITE || kind == K_END_DATA || kind == K_END_EMPTY)
            return 0;
        break;
    default: /* ENDED, FINISHED */
        if (kind == K_END_EMPTY)
            return 1;
        if (kind == K_WRITE || kind == K_END_DATA)
            return refuse(res, LATCH_ERR_STREAM_WRITE_AFTER_END, call, NULL,
                          at);
        break;
    }
    snprintf(msg, sizeof(msg),
             "Cannot %s headers after they are sent to the client", verb);
    return refuse(res, LATCH_ERR_HTTP_HEADERS_SENT, call, msg, at);
}

/* ------------------------------------------------------------------ */
/* Headers                                                              */
/* ------------------------------------------------------------------ */

static const unsigned char tchar[256] = {
    ['!'] = 1, ['#'] = 1, ['$'] = 1, ['%'] = 1, ['&'] = 1, ['\''] = 1,
    ['*'] = 1, ['+'] = 1, ['-'] = 1, ['.'] = 1, ['^'] = 1, ['_'] = 1,
    ['`'] = 1, ['|'] = 1, ['~'] = 1, ['0'] = 1, ['1'] = 1, ['2'] = 1,
    ['3'] = 1, ['4'] = 1, ['5'] = 1, ['6'] = 1, ['7'] = 1, ['8'] = 1,
    ['9'] = 1, ['A'] = 1, ['B'] = 1, ['C'] = 1, ['D'] = 1, ['E'] = 1,
    ['F'] = 1, ['G'] = 1, ['H'] = 1, ['I'] = 1, ['J'] = 1, ['K'] = 1,
    ['L'] = 1, ['M'] = 1, ['N'] = 1, ['O'] = 1, ['P'] = 1, ['Q'] = 1,
    ['R'] = 1, ['S'] = 1, ['T'] = 1, ['U'] = 1, ['V'] = 1, ['W'] = 1,
    ['X'] = 1, ['Y'] = 1, ['Z'] = 1, ['a'] = 1, ['b'] = 1, ['c'] = 1,
    ['d'] = 1, ['e'] = 1, ['f'] = 1, ['g'] = 1, ['h'] = 1, ['i'] = 1,
    ['j'] = 1, ['k'] = 1, ['l'] = 1, ['m'] = 1, ['n'] = 1, ['o'] = 1,
    ['p'] = 1, ['q'] = 1, ['r'] = 1, ['s'] = 1, ['t'] = 1, ['u'] = 1,
    ['v'] = 1, ['w'] = 1, ['x'] = 1, ['y'] = 1, ['z'] = 1,
};

/* The length of a token name, or -1 when it is empty or not a token. */
static long name_len(const char *s)
{
    const char *p = s;

    if (s == NULL || *s == '\0')
        return -1;
    while (tchar[(unsigned char)*p])
        p++;
    return *p == '\0' ? p - s : -1;
}

/* The length of a value, or -1 when it has a CR, LF (response splitting)
 * or another control byte but HTAB. */
static long value_len(const char *s)
{
    const unsigned char *p = (const unsigned char *)s;

    if (s == NULL)
        return -1;
    for (;; p++) {
        if (*p >= 0x20 && *p != 0x7f)
            continue;
        if (*p == '\t')
            continue;
        break;
    }
    return *p == '\0' ? (const char *)p - s : -1;
}

static bool ieq(const char *a, const char *b, size_t n)
{
    size_t i;

    /* Handlers nearly always spell a name the same way each time. */
    if (memcmp(a, b, n) == 0)
        return true;

    for (i = 0; i < n; i++) {
        unsigned char x = (unsigned char)a[i], y = (unsigned char)b[i];
        if (x >= 'A' && x <= 'Z')
            x += 32;
        if (y >= 'A' && y <= 'Z')
            y += 32;
        if (x != y)
            return false;
    }
    return true;
}

static int find_hdr(const latch_res *res, const char *name, size_t nlen)
{
    uint32_t i;

    for (i = 0; i < res->nhdrs; i++) {
        const latch_hdr *h = &res->hdrs[i];
        if (!h->removed && h->name_len == nlen &&
            ieq(res->hbuf.data + h->name_off, name, nlen))
            return (int)i;
    }
    return -1;
}

/* Stores "value\0" (and "name\0" for a new entry) in hbuf. */
static int store_str(latch_res *res, const char *s, size_t n, uint32_t *off)
{
    int r = latch__buf_reserve(&res->hbuf, n + 1, HDR_LIMIT);

    if (r < 0)
        return r;
    *off = (uint32_t)res->hbuf.len;
    memcpy(res->hbuf.data + res->hbuf.len, s, n);
    res->hbuf.data[res->hbuf.len + n] = '\0';
    res->hbuf.len += n + 1;
    return 0;
}

/* Inserts a header entry at index `pos` (nhdrs: at the end). */
static int add_hdr(latch_res *res, uint32_t pos, const char *name, size_t nlen,
                   const char *value, size_t vlen)
{
    latch_hdr h;
    int r;

    if (res->nhdrs == res->hdrs_cap) {
        uint32_t cap = res->hdrs_cap ? res->hdrs_cap * 2 : 8;
        latch_hdr *p;
        if (cap > 1024)
            return LATCH_ERR_LIMIT;
        p = realloc(res->hdrs, cap * sizeof(*p));
        if (p == NULL)
            return LATCH_ERR_NOMEM;
        res->hdrs = p;
        res->hdrs_cap = cap;
    }
    memset(&h, 0, sizeof(h));
    if ((r = store_str(res, name, nlen, &h.name_off)) < 0 ||
        (r = store_str(res, value, vlen, &h.value_off)) < 0)
        return r;
    h.name_len = (uint16_t)nlen;
    h.value_len = (uint32_t)vlen;
    memmove(&res->hdrs[pos + 1], &res->hdrs[pos],
            (res->nhdrs - pos) * sizeof(h));
    res->hdrs[pos] = h;
    res->nhdrs++;
    return 0;
}

/* Header changes the framing logic must know about. */
static bool is_cl(const char *name, size_t n)
{
    return n == 14 && ieq(name, "content-length", 14);
}

static bool digits_only(const char *s)
{
    if (*s == '\0')
        return false;
    for (; *s; s++)
        if (*s < '0' || *s > '9')
            return false;
    return true;
}

/* Sets or appends a header already known to be valid. */
static int put_hdr(latch_res *res, const char *name, size_t nlen,
                   const char *value, size_t vlen, bool append)
{
    uint32_t pos;
    int r, i;

    if (!append && (i = find_hdr(res, name, nlen)) >= 0) {
        /* Replace in place: Node keeps the first position of a name. */
        latch_hdr *h = &res->hdrs[i];
        uint32_t j;
        r = store_str(res, value, vlen, &h->value_off);
        if (r < 0)
            return r;
        h->value_len = (uint32_t)vlen;
        for (j = (uint32_t)i + 1; j < res->nhdrs; j++)
            if (!res->hdrs[j].removed && res->hdrs[j].name_len == nlen &&
                ieq(res->hbuf.data + res->hdrs[j].name_off, name, nlen))
                res->hdrs[j].removed = 1;
        return 0;
    }
    /* Node keeps every value of a name together, at the name's first
     * place: an appended line goes right after the last one of its name. */
    pos = res->nhdrs;
    if (append) {
        uint32_t j;
        for (j = res->nhdrs; j-- > 0;)
            if (!res->hdrs[j].removed && res->hdrs[j].name_len == nlen &&
                ieq(res->hbuf.data + res->hdrs[j].name_off, name, nlen)) {
                pos = j + 1;
                break;
            }
    }
    return add_hdr(res, pos, name, nlen, value, vlen);
}

static bool is_te(const char *name, size_t n)
{
    return n == 17 && ieq(name, "transfer-encoding", 17);
}

/* value is one token, compared case-insensitively, with optional
 * whitespace around it. */
static bool is_only_token(const char *v, const char *tok)
{
    size_t n = strlen(tok);

    while (*v == ' ' || *v == '\t')
        v++;
    if (strncasecmp(v, tok, n) != 0)
        return false;
    for (v += n; *v == ' ' || *v == '\t'; v++)
        ;
    return *v == '\0';
}

/*
 * latch owns the framing: a header the handler sets may not make the
 * response one that a client cannot delimit. Returns NULL when the header
 * is fine, else why it is refused. Refused: a Transfer-Encoding other than
 * "chunked" (latch applies no other coding; "gzip" copied from an upstream
 * would announce a coding the body does not have), a second
 * Transfer-Encoding or Content-Length line, Content-Length together with
 * Transfer-Encoding (RFC 9112 §6.2: a sender must not), and a
 * Content-Length that is not a decimal number.
 */
static const char *framing_check(latch_res *res, const char *name, size_t n,
                                 const char *value, bool append)
{
    if (is_cl(name, n)) {
        if (!digits_only(value))
            return "Content-Length must be a decimal number";
        if (append && find_hdr(res, name, n) >= 0)
            return "A second Content-Length would make the body's end "
                   "ambiguous";
        if (find_hdr(res, "Transfer-Encoding", 17) >= 0)
            return "Content-Length may not be sent with Transfer-Encoding";
        return NULL;
    }
    if (!is_te(name, n))
        return NULL;
    if (!is_only_token(value, "chunked"))
        return "latch frames the body: Transfer-Encoding may only be "
               "\"chunked\"";
    if (append && find_hdr(res, name, n) >= 0)
        return "Transfer-Encoding is already set";
    if (find_hdr(res, "Content-Length", 14) >= 0)
        return "Transfer-Encoding may not be sent with Content-Length";
    return NULL;
}

/*
 * A status the response can end with: 200..999 (Node takes 100..999). A
 * 1xx is informational: sent as the answer, the client would wait for the
 * final response that never comes, and the connection would be out of
 * step. latch sends 100 Continue itself; it has no other interim answer.
 */
static bool final_status(int s)
{
    return s >= 200 && s <= 999;
}

static void status_msg(char *msg, size_t cap, int status)
{
    if (status >= 100 && status <= 199)
        snprintf(msg, cap,
                 "Invalid status code: %d (1xx is not a final answer)", status);
    else
        snprintf(msg, cap, "Invalid status code: %d", status);
}

static int header_op(latch_res *res, const char *name, const char *value,
                     bool append, const char *call, latch_site at)
{
    const char *r_why;
    long nlen, vlen;
    int r;

    r = gate(res, K_HEADER, call, append ? "append" : "set", at);
    if (r != 0)
        return r;
    if (name == NULL || value == NULL)
        return refuse(res, LATCH_ERR_INVALID_ARG, call,
                      "Invalid header: NULL name or value", at);
    nlen = name_len(name);
    if (nlen < 0)
        return refuse(res, LATCH_ERR_INVALID_CHAR, call,
                      "Header name must be a valid HTTP token", at);
    vlen = value_len(value);
    if (vlen < 0)
        return refuse(res, LATCH_ERR_INVALID_CHAR, call,
                      "Invalid character in header content", at);
    if (nlen > 1024 || vlen > 65536)
        return refuse(res, LATCH_ERR_INVALID_ARG, call, "Header too long", at);
    if ((r_why = framing_check(res, name, (size_t)nlen, value, append)) != NULL)
        return refuse(res, LATCH_ERR_INVALID_ARG, call, r_why, at);
    return put_hdr(res, name, (size_t)nlen, value, (size_t)vlen, append);
}

int latch_res_set_header_at(latch_res *res, const char *name, const char *value,
                            latch_site at)
{
    if (res != NULL &&
        (res = latch__res_in(res, "latch_res_set_header", &at)) == NULL)
        return LATCH_ERR_STREAM_DESTROYED;
    return header_op(res, name, value, false, "latch_res_set_header", at);
}

int latch_res_append_header_at(latch_res *res, const char *name,
                               const char *value, latch_site at)
{
    if (res != NULL &&
        (res = latch__res_in(res, "latch_res_append_header", &at)) == NULL)
        return LATCH_ERR_STREAM_DESTROYED;
    return header_op(res, name, value, true, "latch_res_append_header", at);
}

int latch_res_remove_header_at(latch_res *res, const char *name, latch_site at)
{
    if (res != NULL &&
        (res = latch__res_in(res, "latch_res_remove_header", &at)) == NULL)
        return LATCH_ERR_STREAM_DESTROYED;
    size_t nlen;
    int r, i;

    r = gate(res, K_HEADER, "latch_res_remove_header", "remove", at);
    if (r != 0)
        return r;
    if (name == NULL)
        return refuse(res, LATCH_ERR_INVALID_ARG, "latch_res_remove_header",
                      "Invalid header: NULL name", at);
    nlen = strlen(name);
    while ((i = find_hdr(res, name, nlen)) >= 0)
        res->hdrs[i].removed = 1;
    return 0;
}

int latch_res_clear_headers_at(latch_res *res, latch_site at)
{
    if (res != NULL &&
        (res = latch__res_in(res, "latch_res_clear_headers", &at)) == NULL)
        return LATCH_ERR_STREAM_DESTROYED;
    int r = gate(res, K_HEADER, "latch_res_clear_headers", "remove", at);

    if (r != 0)
        return r;
    res->nhdrs = 0;
    res->hbuf.len = 0;
    return 0;
}

const char *latch_res_get_header(const latch_res *res, const char *name)
{
    if (res != NULL && (res = latch__res_in(res, "latch_res_get_header",
                                            &latch__no_site)) == NULL)
        return NULL;
    int i;

    if (res != NULL && name == NULL && on_loop(res))
        latch__violation((latch_res *)res, LATCH_ERR_INVALID_ARG,
                         "latch_res_get_header", "Invalid header: NULL name",
                         (latch_site){NULL, 0, NULL});
    if (res == NULL || name == NULL)
        return NULL;
    i = find_hdr(res, name, strlen(name));
    return i < 0 ? NULL : res->hbuf.data + res->hdrs[i].value_off;
}

int latch_res_status_at(latch_res *res, int status, latch_site at)
{
    if (res != NULL &&
        (res = latch__res_in(res, "latch_res_status", &at)) == NULL)
        return LATCH_ERR_STREAM_DESTROYED;
    int r = gate(res, K_STATUS, "latch_res_status", "set", at);
    char msg[64];

    if (r != 0)
        return r;
    if (!final_status(status)) {
        status_msg(msg, sizeof(msg), status);
        return refuse(res, LATCH_ERR_HTTP_INVALID_STATUS_CODE,
                      "latch_res_status", msg, at);
    }
    res->status = status;
    return 0;
}

int latch_res_get_status(const latch_res *res)
{
    if (res != NULL && (res = latch__res_in(res, "latch_res_get_status",
                                            &latch__no_site)) == NULL)
        return 0;
    return res ? res->status : 0;
}

/* ------------------------------------------------------------------ */
/* The header block                                                     */
/* ------------------------------------------------------------------ */

static char *put(char *p, const char *s, size_t n)
{
    memcpy(p, s, n);
    return p + n;
}

static char *put_u64(char *p, uint64_t v)
{
    char tmp[24];
    int n = 0;

    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n)
        *p++ = tmp[--n];
    return p;
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
        if ((size_t)(e - s) == tl && ieq(s, tok, tl))
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
            if (ieq(name, "content-length", 14)) {
                user_cl = true;
                res->content_length = parse_digits(val);
            }
            break;
        case 17:
            if (ieq(name, "transfer-encoding", 17)) {
                user_te = true;
                res->chunked = value_has_token(val, "chunked");
            }
            break;
        case 10:
            if (ieq(name, "connection", 10)) {
                user_conn = true;
                close_req = value_has_token(val, "close");
            }
            break;
        case 4:
            if (ieq(name, "date", 4))
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
        p = put_u64(p, (uint64_t)st);
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
              ieq(name, "transfer-encoding", 17)) ||
             (h->name_len == 14 && ((user_cl && user_te) || st == 204) &&
              ieq(name, "content-length", 14)) ||
             (h->name_len == 10 && drop_conn && ieq(name, "connection", 10))))
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
            p = put_u64(p, res->content_length);
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
    res->headers_at.call = call;
    res->headers_at.at = at;
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
 * json, end) report head and end together from end_common instead: one
 * check of the flag per response on the common path (LOAD=0 make bench).
 */
static inline int traced_head(latch_res *res, int r)
{
    if (r == 0 && LATCH_TRACING())
        latch__trace_state(res, LATCH_RS_HEADERS_SENT);
    return r;
}

/* Appends body bytes (framed) to the sink. Inline: end_common's share of
 * a response's instructions depends on it (GCC stops inlining it there
 * when end_common grows by as little as a trace call). */
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
    char msg[64];

    if (final_status(res->status))
        return 0;
    status_msg(msg, sizeof(msg), res->status);
    return refuse(res, LATCH_ERR_HTTP_INVALID_STATUS_CODE, call, msg, at);
}

int latch_res_write_head_at(latch_res *res, int status, latch_site at)
{
    if (res != NULL &&
        (res = latch__res_in(res, "latch_res_write_head", &at)) == NULL)
        return LATCH_ERR_STREAM_DESTROYED;
    int r = gate(res, K_HEADER, "latch_res_write_head", "write", at);
    char msg[64];

    if (r != 0)
        return r;
    if (!final_status(status)) {
        status_msg(msg, sizeof(msg), status);
        return refuse(res, LATCH_ERR_HTTP_INVALID_STATUS_CODE,
                      "latch_res_write_head", msg, at);
    }
    res->status = status;
    return traced_head(res,
                       build_head(res, -1, true, "latch_res_write_head", at));
}

int latch_res_flush_headers_at(latch_res *res, latch_site at)
{
    if (res != NULL &&
        (res = latch__res_in(res, "latch_res_flush_headers", &at)) == NULL)
        return LATCH_ERR_STREAM_DESTROYED;
    int r;

    /* As Node's flushHeaders: headers built by write_head go out now;
     * once they are out it does nothing. */
    if (res != NULL && on_loop(res) && !res->detached &&
        res->state >= LATCH_RS_HEADERS_SENT &&
        res->state <= LATCH_RS_FINISHED) {
        if (res->hold)
            res->ex->unhold(res);
        return 0;
    }
    r = gate(res, K_HEADER, "latch_res_flush_headers", "write", at);
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
    if (res->ended_at.call == NULL) {
        res->ended_at.call = call;
        res->ended_at.at = at;
    }
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
        return refuse(res, LATCH_ERR_HTTP_CONTENT_LENGTH_MISMATCH, call, msg,
                      at);
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
    if (res != NULL && data == NULL && len > 0 && on_loop(res))
        return refuse(res, LATCH_ERR_INVALID_ARG, "latch_res_write",
                      "May not write null values to stream", at);
    r = gate(res, K_WRITE, "latch_res_write", "write", at);
    if (r != 0)
        return r;
    return write_common(res, data, len, "latch_res_write", at);
}

static int end_common(latch_res *res, const void *data, size_t len,
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
            return refuse(res, LATCH_ERR_HTTP_CONTENT_LENGTH_MISMATCH, call,
                          msg, at);
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
        ret =
            refuse(res, LATCH_ERR_HTTP_CONTENT_LENGTH_MISMATCH, call, msg, at);
    }
    transition(res, LATCH_RS_ENDED);
    res->end_called = true;
    res->ended_at.call = call;
    res->ended_at.at = at;
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
    int kind = (data != NULL && len > 0) ? K_END_DATA : K_END_EMPTY;
    int r;

    /* As write: NULL data with a length is refused before the state. */
    if (res != NULL && data == NULL && len > 0 && on_loop(res))
        return refuse(res, LATCH_ERR_INVALID_ARG, "latch_res_end",
                      "May not write null values to stream", at);
    r = gate(res, kind, "latch_res_end", "write", at);

    if (r == 1)
        return 0; /* end() after end(): a no-op, as in Node */
    if (r != 0)
        return r;
    return end_common(res, data, len, "latch_res_end", at);
}

/* Removes every line of a header (latch's own decision, not reported). */
static void drop_hdr(latch_res *res, const char *name, size_t n)
{
    int i;

    while ((i = find_hdr(res, name, n)) >= 0)
        res->hdrs[i].removed = 1;
}

/* The Express-style senders share this: FRESH only, then one end(). The
 * Content-Type comes from latch itself (a valid constant) or NULL. */
static int send_as(latch_res *res, const char *ctype, const void *body,
                   size_t len, const char *call, latch_site at)
{
    char num[24];
    int r = gate(res, K_SEND, call, "set", at);

    if (r != 0)
        return r;
    if (body == NULL && len > 0)
        return refuse(res, LATCH_ERR_INVALID_ARG, call,
                      "May not send null values", at);
    /* Express's res.send, which RFC 9110 backs: a 204 or 304 has no
     * content and says nothing of its framing or type; a 205 has no
     * content either, and says so with Content-Length: 0 (§15.3.6), so a
     * client that does not know 205 still finds its end. */
    if (res->status == 204 || res->status == 304 || res->status == 205) {
        drop_hdr(res, "Content-Type", 12);
        drop_hdr(res, "Content-Length", 14);
        drop_hdr(res, "Transfer-Encoding", 17);
        body = "";
        len = 0;
        if (res->status != 205)
            return end_common(res, body, len, call, at);
        ctype = NULL;
    }
    /* The whole body is known: its length frames it, not chunked (a
     * user's Transfer-Encoding is left out of the head, build_head). */
    if (ctype != NULL &&
        (r = put_hdr(res, "Content-Type", 12, ctype, strlen(ctype), false)) < 0)
        return r;
    /* Express sets Content-Length as a header: it keeps its place before
     * Date, and a HEAD response carries it too. */
    r = put_hdr(res, "Content-Length", 14, num,
                (size_t)(put_u64(num, len) - num), false);
    if (r < 0)
        return r;
    res->sending = true;
    r = end_common(res, body, len, call, at);
    res->sending = false;
    return r;
}

int latch_res_send_at(latch_res *res, const void *body, size_t len,
                      latch_site at)
{
    if (res != NULL &&
        (res = latch__res_in(res, "latch_res_send", &at)) == NULL)
        return LATCH_ERR_STREAM_DESTROYED;
    const char *ct = NULL;

    if (res != NULL && on_loop(res) && res->state == LATCH_RS_FRESH &&
        latch_res_get_header(res, "Content-Type") == NULL)
        ct = "text/html; charset=utf-8";
    return send_as(res, ct, body, len, "latch_res_send", at);
}

int latch__res_send_check(latch_res *res, const char *call, latch_site at)
{
    return gate(res, K_SEND, call, "set", at);
}

int latch__res_send_json(latch_res *res, const char *json, size_t len,
                         const char *call, latch_site at)
{
    const char *ct = "application/json; charset=utf-8";

    /* As Express: a Content-Type the handler chose stays. */
    if (res->state == LATCH_RS_FRESH &&
        latch_res_get_header(res, "Content-Type") != NULL)
        ct = NULL;
    return send_as(res, ct, json, len, call, at);
}

int latch_res_json_at(latch_res *res, const char *json, latch_site at)
{
    if (res != NULL &&
        (res = latch__res_in(res, "latch_res_json", &at)) == NULL)
        return LATCH_ERR_STREAM_DESTROYED;
    const char *ct = "application/json; charset=utf-8";

    if (json == NULL)
        json = "null";
    /* As Express: a Content-Type the handler chose stays. */
    if (res != NULL && on_loop(res) && res->state == LATCH_RS_FRESH &&
        latch_res_get_header(res, "Content-Type") != NULL)
        ct = NULL;
    return send_as(res, ct, json, strlen(json), "latch_res_json", at);
}

latch_json *latch_res_json_begin_at(latch_res *res, latch_site at)
{
    if (res != NULL &&
        (res = latch__res_in(res, "latch_res_json_begin", &at)) == NULL)
        return NULL;
    int r = gate(res, K_SEND, "latch_res_json_begin", "set", at);

    if (r != 0)
        return NULL;
    if (res->json_open) {
        refuse(res, LATCH_ERR_STATE, "latch_res_json_begin",
               "A JSON writer is already open on this response", at);
        return NULL;
    }
    res->jbuf.len = 0;
    latch__json_init(&res->json, &res->jbuf, JSON_MAX_BYTES, JSON_MAX_DEPTH);
    res->json_open = true;
    /* The writer is named by its request's handle, not by its address:
     * one kept past its response is refused, never a later request's
     * writer on the same pooled object. */
    return (latch_json *)(uintptr_t)(res->handle | 2);
}

/*
 * The writer belongs to its response: a value call is refused (and
 * reported) from another thread, and once latch_res_json_end closed the
 * writer (the document went out, or was answered with a 500).
 */
static int json_check(latch_json **jp, const char *call)
{
    latch_json *j = *jp;
    latch_res *res;

    if (j == NULL)
        return LATCH_ERR_INVALID_ARG;
    if ((uintptr_t)j & 1) {
        res = latch__res_in(j, call, &latch__no_site);
        if (res == NULL)
            return LATCH_ERR_STREAM_DESTROYED;
    } else {
        res = LATCH_CONTAINER_OF(j, latch_res, json);
    }
    if (!on_loop(res))
        return refuse(res, LATCH_ERR_WRONG_THREAD, call, NULL,
                      (latch_site){NULL, 0, NULL});
    if (!res->json_open)
        return refuse(res, LATCH_ERR_STATE, call,
                      "The JSON writer is closed (latch_res_json_end)",
                      (latch_site){NULL, 0, NULL});
    *jp = &res->json;
    return 0;
}

int latch_json_object_begin(latch_json *j)
{
    int r = json_check(&j, "latch_json_object_begin");

    return r != 0 ? r : latch__json_object_begin(j);
}

int latch_json_object_end(latch_json *j)
{
    int r = json_check(&j, "latch_json_object_end");

    return r != 0 ? r : latch__json_object_end(j);
}

int latch_json_array_begin(latch_json *j)
{
    int r = json_check(&j, "latch_json_array_begin");

    return r != 0 ? r : latch__json_array_begin(j);
}

int latch_json_array_end(latch_json *j)
{
    int r = json_check(&j, "latch_json_array_end");

    return r != 0 ? r : latch__json_array_end(j);
}

int latch_json_key(latch_json *j, const char *key)
{
    int r = json_check(&j, "latch_json_key");

    return r != 0 ? r : latch__json_key(j, key);
}

int latch_json_string(latch_json *j, const char *s)
{
    int r = json_check(&j, "latch_json_string");

    return r != 0 ? r : latch__json_string(j, s);
}

int latch_json_string_n(latch_json *j, const char *s, size_t n)
{
    int r = json_check(&j, "latch_json_string_n");

    return r != 0 ? r : latch__json_string_n(j, s, n);
}

int latch_json_int(latch_json *j, int64_t v)
{
    int r = json_check(&j, "latch_json_int");

    return r != 0 ? r : latch__json_int64(j, v);
}

int latch_json_uint(latch_json *j, uint64_t v)
{
    int r = json_check(&j, "latch_json_uint");

    return r != 0 ? r : latch__json_uint64(j, v);
}

int latch_json_double(latch_json *j, double v)
{
    int r = json_check(&j, "latch_json_double");

    return r != 0 ? r : latch__json_double(j, v);
}

int latch_json_bool(latch_json *j, bool v)
{
    int r = json_check(&j, "latch_json_bool");

    return r != 0 ? r : latch__json_bool(j, v);
}

int latch_json_null(latch_json *j)
{
    int r = json_check(&j, "latch_json_null");

    return r != 0 ? r : latch__json_null(j);
}

int latch_res_json_end_at(latch_res *res, latch_site at)
{
    if (res != NULL &&
        (res = latch__res_in(res, "latch_res_json_end", &at)) == NULL)
        return LATCH_ERR_STREAM_DESTROYED;
    const char *ct = "application/json; charset=utf-8";
    int r;

    if (res == NULL)
        return LATCH_ERR_INVALID_ARG;
    if (!on_loop(res))
        return refuse(res, LATCH_ERR_WRONG_THREAD, "latch_res_json_end", NULL,
                      at);
    if (!res->json_open)
        return refuse(res, LATCH_ERR_STATE, "latch_res_json_end",
                      "No JSON writer is open on this response", at);
    res->json_open = false;
    r = latch__json_finish(&res->json);
    if (r < 0) {
        /* A broken document is never sent as if it were whole: the
         * writer's error is reported here, where the document ended. */
        refuse(res, r, "latch_res_json_end",
               r == LATCH_ERR_INVALID_ARG
                   ? "The JSON document is unfinished or had a misplaced "
                     "or invalid value"
                   : NULL,
               at);
        /* The answer is the app's, as any error's: its error handlers
         * (or the final handler) with the writer's code and 500. */
        if (res->state == LATCH_RS_FRESH) {
            latch__res_ref(res);
            latch__res_raise(res, r, 500, "latch_res_json_end", at);
            latch__res_unref(res);
        }
        return r;
    }
    if (res->state == LATCH_RS_FRESH &&
        latch_res_get_header(res, "Content-Type") != NULL)
        ct = NULL;
    return send_as(res, ct, res->jbuf.data, res->jbuf.len, "latch_res_json_end",
                   at);
}

int latch_res_type_at(latch_res *res, const char *type, latch_site at)
{
    if (res != NULL &&
        (res = latch__res_in(res, "latch_res_type", &at)) == NULL)
        return LATCH_ERR_STREAM_DESTROYED;
    char buf[160];
    const char *known;
    int r;

    if (type == NULL || *type == '\0') {
        if ((r = gate(res, K_HEADER, "latch_res_type", "set", at)) != 0)
            return r;
        return refuse(res, LATCH_ERR_INVALID_ARG, "latch_res_type",
                      "The type is NULL or empty", at);
    }
    if (strchr(type, '/') != NULL) {
        /* A MIME type: text types get the charset, as Express does. */
        if (strncmp(type, "text/", 5) == 0 && strchr(type, ';') == NULL &&
            strlen(type) < sizeof(buf) - 16) {
            snprintf(buf, sizeof(buf), "%s; charset=utf-8", type);
            type = buf;
        }
        return header_op(res, "Content-Type", type, false, "latch_res_type",
                         at);
    }
    /* A short name or an extension: filemeta.c's table, the one that
     * file bodies get their type from too. */
    if ((known = latch__mime_by_name(type)) != NULL)
        return header_op(res, "Content-Type", known, false, "latch_res_type",
                         at);
    if ((r = gate(res, K_HEADER, "latch_res_type", "set", at)) != 0)
        return r;
    return refuse(res, LATCH_ERR_INVALID_ARG, "latch_res_type",
                  "Unknown type name", at);
}

int latch_res_send_status_at(latch_res *res, int status, latch_site at)
{
    if (res != NULL &&
        (res = latch__res_in(res, "latch_res_send_status", &at)) == NULL)
        return LATCH_ERR_STREAM_DESTROYED;
    const char *reason;
    int r = gate(res, K_SEND, "latch_res_send_status", "set", at);
    char msg[64];

    if (r != 0)
        return r;
    if (!final_status(status)) {
        status_msg(msg, sizeof(msg), status);
        return refuse(res, LATCH_ERR_HTTP_INVALID_STATUS_CODE,
                      "latch_res_send_status", msg, at);
    }
    res->status = status;
    reason = latch__http_reason(status);
    if (strcmp(reason, "unknown") == 0) {
        snprintf(msg, sizeof(msg), "%d", status);
        reason = msg;
    }
    return send_as(res, "text/plain; charset=utf-8", reason, strlen(reason),
                   "latch_res_send_status", at);
}

/* encodeurl: percent-encodes what may not stand in a URL (controls,
 * spaces, non-ASCII, quotes, '<' '>' ...) and keeps existing %XX escapes.
 * Returns the length, or -1 when it does not fit. */
static int encode_url(char *out, size_t cap, const char *url)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t n = 0;

    for (const unsigned char *p = (const unsigned char *)url; *p; p++) {
        bool keep = (*p > 0x20 && *p < 0x7f && *p != '"' && *p != '<' &&
                     *p != '>' && *p != '\\' && *p != '^' && *p != '`' &&
                     *p != '{' && *p != '|' && *p != '}');
        if (n + 4 >= cap)
            return -1;
        if (keep) {
            out[n++] = (char)*p;
        } else {
            out[n++] = '%';
            out[n++] = hex[*p >> 4];
            out[n++] = hex[*p & 15];
        }
    }
    out[n] = '\0';
    return (int)n;
}

/*
 * Express's res.redirect: the status (302 by default), an encoded
 * Location, Vary: Accept, and a body negotiated by Accept: text/plain
 * "Found. Redirecting to URL", text/html a tiny page, else empty.
 */
int latch_res_redirect_at(latch_res *res, int status, const char *url,
                          latch_site at)
{
    if (res != NULL &&
        (res = latch__res_in(res, "latch_res_redirect", &at)) == NULL)
        return LATCH_ERR_STREAM_DESTROYED;
    char loc[REDIRECT_URL_MAX];
    const char *accept, *reason, *ct = NULL;
    latch_buf b = {NULL, 0, 0};
    int r = gate(res, K_SEND, "latch_res_redirect", "set", at);
    int n = 0, qt, qh;
    size_t ll, rl;

    if (r != 0)
        return r;
    if (status == 0)
        status = 302;
    if (status < 300 || status > 399 || url == NULL)
        return refuse(res, LATCH_ERR_INVALID_ARG, "latch_res_redirect",
                      "A redirect needs a 3xx status and a URL", at);
    if (encode_url(loc, sizeof(loc), url) < 0)
        return refuse(res, LATCH_ERR_INVALID_ARG, "latch_res_redirect",
                      "URL too long", at);
    if ((r = header_op(res, "Location", loc, false, "latch_res_redirect", at)) <
            0 ||
        (r = put_hdr(res, "Vary", 4, "Accept", 6, false)) < 0)
        return r;
    res->status = status;
    reason = latch__http_reason(status);
    accept = latch_req_header(&res->req, "Accept");
    qt = latch__http_accept_q(accept, "text/plain");
    qh = latch__http_accept_q(accept, "text/html");
    /* The body goes to a buffer of its own on the heap (an escaped
     * Location may be 6 times the URL), freed once it is sent. */
    ll = strlen(loc);
    rl = strlen(reason);
    if (qt > 0 && qt >= qh) {
        ct = "text/plain; charset=utf-8";
        if ((r = latch__buf_reserve(&b, rl + ll + 32, SIZE_MAX)) < 0)
            return r;
        n = snprintf(b.data, b.cap, "%s. Redirecting to %s", reason, loc);
    } else if (qh > 0) {
        ct = "text/html; charset=utf-8";
        if ((r = latch__buf_reserve(&b, 2 * rl + 6 * ll + 128, SIZE_MAX)) < 0)
            return r;
        n = snprintf(b.data, b.cap,
                     "<!DOCTYPE html><head><title>%s</title></head><body><p>"
                     "%s. Redirecting to ",
                     reason, reason);
        n += (int)latch__http_html_escape(b.data + n, b.cap - (size_t)n, loc);
        n += snprintf(b.data + n, b.cap - (size_t)n, "</p></body>");
    }
    r = send_as(res, ct, b.data != NULL ? b.data : "", (size_t)n,
                "latch_res_redirect", at);
    latch__buf_dispose(&b);
    return r;
}

/* ------------------------------------------------------------------ */
/* Framework answers                                                    */
/* ------------------------------------------------------------------ */

/* Sets a header latch itself chose (known valid), before the head. */
int latch__res_header(latch_res *res, const char *name, const char *value)
{
    return put_hdr(res, name, strlen(name), value, strlen(value), false);
}

int latch__res_simple(latch_res *res, int status, const char *ctype,
                      const char *body, size_t len, const char *event)
{
    latch_site none = {NULL, 0, NULL};
    char num[24];
    int r;

    if (res->state != LATCH_RS_FRESH)
        return LATCH_ERR_STATE;
    res->status = status;
    if (ctype != NULL &&
        (r = put_hdr(res, "Content-Type", 12, ctype, strlen(ctype), false)) < 0)
        return r;
    r = put_hdr(res, "Content-Length", 14, num,
                (size_t)(put_u64(num, len) - num), false);
    if (r < 0)
        return r;
    return end_common(res, body, len, event, none);
}

/* A framework answer: the status, its text as a text/plain body, and no
 * header the handler may have set (they must not leak into it). */
int latch__res_status_page(latch_res *res, int status, const char *event)
{
    char body[160];
    int n = snprintf(body, sizeof(body), "%s\n", latch__http_reason(status));

    res->nhdrs = 0;
    res->hbuf.len = 0;
    return latch__res_simple(res, status, "text/plain; charset=utf-8", body,
                             (size_t)n, event);
}

void latch__res_protocol_error(latch_res *res, int status, const char *reason)
{
    /* The reason stays in the server: it can help an attacker tune a
     * smuggling payload. The client gets the status text. */
    (void)reason;
    latch__res_status_page(res, status, "protocol error");
}

/* ------------------------------------------------------------------ */
/* Ends of life                                                         */
/* ------------------------------------------------------------------ */

static void fire_close(latch_res *res)
{
    latch_res_cb cb = res->on_close;

    if (res->closed_fired)
        return;
    res->closed_fired = true;
    res->on_close = NULL;
    if (cb) {
        uint16_t prev = latch__frame_enter(res, res->on_close_frame);
        cb(latch__res_hf(res, res->on_close_frame), res->on_close_data);
        latch__frame_leave(res, prev);
    }
}

/* Body bytes that went on the wire: none for HEAD, 204 and 304, whatever
 * the handler sent (latch drops it). */
uint64_t latch__res_body_bytes(const latch_res *res)
{
    return res->has_body ? res->body_sent : 0;
}

void latch__res_raise(latch_res *res, int code, int status, const char *call,
                      latch_site at)
{
    if (res->owner != NULL)
        res->owner->raise(res, code, status, call, at);
    else if (res->state == LATCH_RS_FRESH)
        latch_res_send_status_at(res, status, at);
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

void latch__res_timed_out(latch_res *res, int status)
{
    if (res->owner != NULL)
        res->owner->timeout(res, status);
    else if (res->state == LATCH_RS_FRESH)
        latch_res_send_status_at(res, status, (latch_site){NULL, 0, NULL});
}

/* The last byte was handed to the OS: FINISHED, then finish and close. */
void latch__res_finished(latch_res *res)
{
    latch_res_cb cb = res->on_finish;

    if (res->t_start != 0 && res->owner != NULL) /* metrics, log or trace */
        res->owner->observe(res, true);
    transition(res, LATCH_RS_FINISHED);
    end_attached(res, LATCH_CANCEL_NONE); /* no timer fires after this */
    res->conn = NULL;
    res->detached = true;
    res->on_finish = NULL;
    res->on_drain = NULL;
    latch__res_ref(res);
    if (cb) {
        uint16_t prev = latch__frame_enter(res, res->on_finish_frame);
        cb(latch__res_hf(res, res->on_finish_frame), res->on_finish_data);
        latch__frame_leave(res, prev);
    }
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
        if (res->state < LATCH_RS_ENDED && res->ended_at.call == NULL) {
            res->ended_at.call = event;
            res->ended_at.at = (latch_site){NULL, 0, NULL};
        }
        transition(res, LATCH_RS_DESTROYED);
        if (LATCH_TRACING())
            latch__trace_state(res, LATCH_RS_DESTROYED);
    }
    res->req.aborted = res->req.aborted || unfinished;
    res->on_finish = NULL;
    res->on_drain = NULL;
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
    if (!on_loop(res)) {
        refuse(res, LATCH_ERR_WRONG_THREAD, "latch_res_destroy", NULL, at);
        return;
    }
    if (res->state >= LATCH_RS_FINISHED || res->detached)
        return; /* as Node: destroying a finished response does nothing */
    c = res->conn;
    if (res->ended_at.call == NULL) {
        res->ended_at.call = "latch_res_destroy";
        res->ended_at.at = at;
    }
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
    n = res->ncancel;
    for (i = 0; i < n; i++) {
        latch_cancel_cb cb = res->cancel_cbs[i].cb;
        res->cancel_cbs[i].cb = NULL;
        if (cb != NULL) {
            uint16_t prev = latch__frame_enter(res, res->cancel_cbs[i].frame);
            cb(latch__req_hf(res, res->cancel_cbs[i].frame), reason,
               res->cancel_cbs[i].data);
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

    if (res == NULL)
        return LATCH_ERR_INVALID_ARG;
    if (cb == NULL)
        return refuse(res, LATCH_ERR_INVALID_ARG, "latch_req_on_cancel",
                      "The callback is NULL", at);
    if (!on_loop(res))
        return refuse(res, LATCH_ERR_WRONG_THREAD, "latch_req_on_cancel", NULL,
                      at);
    if (res->cancel_reason != LATCH_CANCEL_NONE || res->detached ||
        res->state >= LATCH_RS_FINISHED) {
        refuse(res, LATCH_ERR_STATE, "latch_req_on_cancel",
               "The request is over or cancelled: the callback would never "
               "run",
               at);
        return LATCH_ERR_STATE;
    }
    if (res->ncancel == LATCH_MAX_CANCEL_CBS) {
        refuse(res, LATCH_ERR_LIMIT, "latch_req_on_cancel",
               "At most 8 cancellation callbacks per request", at);
        return LATCH_ERR_LIMIT;
    }
    res->cancel_cbs[res->ncancel].cb = cb;
    res->cancel_cbs[res->ncancel].data = data;
    res->cancel_cbs[res->ncancel].frame = latch__frame_pick(hf, res);
    res->ncancel++;
    return 0;
}

int latch_req_cancel_reason(const latch_req *req)
{
    if (req != NULL &&
        (req = (const latch_req *)latch__res_in(req, "latch_req_cancel_reason",
                                                &latch__no_site)) == NULL)
        return 0;
    const latch_res *res = latch_req_res((latch_req *)req);

    return res ? res->cancel_reason : LATCH_CANCEL_NONE;
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
    res->headers_at.call = NULL;
    res->headers_at.at = (latch_site){NULL, 0, NULL};
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
static void seal_as_timeout(latch_seal *s)
{
    if (s->call != NULL)
        s->call = "request timeout";
}

void latch__res_timeout(latch_res *res, int status)
{
    static const latch_site none = {NULL, 0, NULL};

    latch__res_ref(res); /* answering may finish and release it */
    latch__res_retract_head(res);
    if (res->cancel_reason == LATCH_CANCEL_TIMEOUT && !res->cancel_fired) {
        /* The error handlers ran (latch__res_timeout_begin). */
        seal_as_timeout(&res->headers_at);
        seal_as_timeout(&res->ended_at);
    }
    if (res->state == LATCH_RS_FRESH) {
        /* Nobody answered (an error handler returned without it). */
        latch__res_status_page(res, status, "request timeout");
    } else if (res->state == LATCH_RS_HEADERS_SENT) {
        /* Too late for a status: cut it, visibly incomplete. */
        if (res->ended_at.call == NULL) {
            res->ended_at.call = "request timeout";
            res->ended_at.at = none;
        }
        /* The attachments hear of it below, cancelled with the reason
         * before they hear that the response is over. */
        transition(res, LATCH_RS_DESTROYED);
        if (LATCH_TRACING())
            latch__trace(res, "destroyed (request timeout)", NULL, none);
        if (res->conn != NULL)
            res->ex->cut(res, "request timeout", LATCH_CANCEL_TIMEOUT);
    }
    cancel_signal(res, LATCH_CANCEL_TIMEOUT);
    latch__res_unref(res);
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
    latch_res_cb cb;

    if (r == NULL || !r->want_drain || r->conn == NULL ||
        r->ex->backlog(r) >= LATCH_HIGH_WATER)
        return;
    r->want_drain = false;
    cb = r->on_drain;
    if (cb) {
        /* The callback was an owner of the response; held across it, the
         * release checks whether it left one (it wrote and registered
         * again, ended, or handed the response on). */
        uint16_t prev;

        r->on_drain = NULL;
        latch__res_ref(r);
        prev = latch__frame_enter(r, r->on_drain_frame);
        cb(latch__res_hf(r, r->on_drain_frame), r->on_drain_data);
        latch__frame_leave(r, prev);
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

bool latch_res_headers_sent(const latch_res *res)
{
    if (res != NULL && (res = latch__res_in(res, "latch_res_headers_sent",
                                            &latch__no_site)) == NULL)
        return false;
    return res != NULL && res->headers_at.call != NULL;
}

bool latch_res_writable_ended(const latch_res *res)
{
    if (res != NULL && (res = latch__res_in(res, "latch_res_writable_ended",
                                            &latch__no_site)) == NULL)
        return false;
    return res != NULL && res->end_called;
}

bool latch_res_writable_finished(const latch_res *res)
{
    if (res != NULL && (res = latch__res_in(res, "latch_res_writable_finished",
                                            &latch__no_site)) == NULL)
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

bool latch_res_destroyed(const latch_res *res)
{
    if (res != NULL && (res = latch__res_in(res, "latch_res_destroyed",
                                            &latch__no_site)) == NULL)
        return false;
    return res != NULL &&
           (res->state == LATCH_RS_DESTROYED ||
            (res->state == LATCH_RS_FINISHED && res->closed_fired));
}

enum { CB_FINISH, CB_CLOSE, CB_DRAIN };

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
    if (!on_loop(res))
        return refuse(res, LATCH_ERR_WRONG_THREAD, names[kind], NULL, at);
    done = kind == CB_FINISH  ? res->detached || res->state >= LATCH_RS_FINISHED
           : kind == CB_CLOSE ? res->closed_fired
                              : res->detached;
    if (done)
        return refuse(res, LATCH_ERR_STATE, names[kind],
                      "The event already happened: the callback would never "
                      "run",
                      at);
    switch (kind) {
    case CB_FINISH:
        res->on_finish = cb;
        res->on_finish_data = data;
        res->on_finish_frame = latch__frame_pick(hf, res);
        break;
    case CB_CLOSE:
        res->on_close = cb;
        res->on_close_data = data;
        res->on_close_frame = latch__frame_pick(hf, res);
        break;
    default:
        res->on_drain = cb;
        res->on_drain_data = data;
        res->on_drain_frame = latch__frame_pick(hf, res);
        break;
    }
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
    return set_cb(res, CB_FINISH, cb, data, hf, at);
}

int latch_res_on_close_at(latch_res *res, latch_res_cb cb, void *data,
                          latch_site at)
{
    uint16_t hf = latch__frame_of(res);

    if (res != NULL &&
        (res = latch__res_in(res, "latch_res_on_close", &at)) == NULL)
        return LATCH_ERR_STREAM_DESTROYED;
    return set_cb(res, CB_CLOSE, cb, data, hf, at);
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
    int r = set_cb(res, CB_DRAIN, cb, data, hf, at);

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
latch_req *latch_res_req(latch_res *res)
{
    latch_res *r = latch__res_in(res, "latch_res_req", &latch__no_site);

    if (r == NULL)
        return NULL;
    /* Same generation, same handler call. */
    return ((uintptr_t)res & 1) ? (latch_req *)((uintptr_t)res | 2) : &r->req;
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
        return refuse(res, LATCH_ERR_INVALID_ARG, "latch_res_post",
                      "The function is NULL", at);
    /* The handle travels, not the object: checked again on the loop, so
     * a post that arrives after its request was over is refused there. */
    return latch__worker_post_res(res->w, h, fn, data);
}

int latch_res_post(latch_res *h, latch_res_cb fn, void *data)
{
    return latch_res_post_at(h, fn, data, latch__no_site);
}
