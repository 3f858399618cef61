/*
 * lifecycle.c - the lifecycle fuzzer's driver: decodes a program (see
 * lifecycle.h), serves it from a real latch server on 127.0.0.1 through the
 * public API only, drives the client side, and judges the outcome.
 *
 * The app: middleware A and B on every path, a route on /r/:n for every
 * method, one error handler. Each request carries its index in the path;
 * each of the four stages and up to six callback contexts of the request
 * run the ops the program gives them. Body bytes, X-Tok headers and
 * Location values a request writes always carry its own marker
 * "<nonce:NN>", so a byte of request i in the answer of request j is seen.
 *
 * The oracle, each check a promise of include/latch.h / DESIGN.md:
 *  W1 the bytes of each connection parse as a strict HTTP/1.1 response
 *     stream (status line, token header names, no bare LF, one framing:
 *     Content-Length xor Transfer-Encoding: chunked, no body on HEAD / 204 /
 *     304, 1xx only as an interim answer, never 101, never close-delimited);
 *  W2 never more responses than requests, one per request in order;
 *  W3 every marker in response j is request j's (nothing from another);
 *  W4 a connection closed with requests unanswered, or a response cut
 *     short, only when the contract allows it: the client cut it, the last
 *     answer said Connection: close, or a request on it up to the first
 *     unanswered one did something that may cut (destroy, headers sent by
 *     a write / flush, framing headers, bad arguments, a stale pointer);
 *     otherwise every request gets its answer before the deadline (no hang);
 *  V1 a call on the loop or from another thread that returns an error is
 *     reported, with the call's own site (file and line);
 *  V2 void calls known to be misuse (a latch_next / latch_fail that is not
 *     the first move of a handler that is running or returned
 *     LATCH_PENDING, an over-release) are reported at their site;
 *  V3 misuse by return value (LATCH_NEXT after the handler's own answer,
 *     NEXT or an error returned after latch_next / latch_fail in the same
 *     handler, an error handler that answers and passes the error on) is
 *     reported for that request;
 *  V4 no ERR_NO_RESPONSE while latch-owned async still holds the response
 *     (a timer, a job, a post, a join, a drain callback after a write
 *     returned 0, a reference the program took);
 *  C1 a middleware after one that returned LATCH_PENDING runs only once
 *     that one's own latch_next resumed it, and each stage at most once;
 *  L1 the server drains and stops, every callback that latch promised ran
 *     (on_close of every dispatched request), threads end: no hang. Leaks
 *     and memory errors are ASan's and LSan's (the test-asan build and the
 *     libFuzzer build).
 *
 * What it does not judge: statuses and bodies chosen by the program (it
 * is no model of latch), timings, the report text (diag tests do).
 */
#include "lifecycle.h"

#include <latch.h>

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAXCONN 3
#define MAXREQ 8
#define NSTAGE 4 /* 0: middleware A, 1: middleware B, 2: route, 3: error */
#define NCTX 10  /* 0..3 the stages, 4..9 callbacks */
#define NOPS 6
#define MAXINV 512
#define MAXTHREADS 24
#define MAXSTASH 8
#define MAXDEFER 64
#define BIG (96 * 1024)

enum { ST_A = 0, ST_B = 1, ST_ROUTE = 2, ST_ERR = 3 };
enum { M_GET, M_POST, M_HEAD };
enum { E_NONE, E_FIN_AFTER_SEND, E_RST_AT_RESP, E_CUT_REQ };

typedef struct op {
    uint8_t kind, a, b;
} op;

typedef struct pctx {
    int n;
    op ops[NOPS];
} pctx;

typedef struct preq {
    int conn;
    int method;
    int ret[NSTAGE]; /* what each stage returns unless an op says */
    pctx c[NCTX];
} preq;

typedef struct pconn {
    int first, n;
    bool sequential, small_rcvbuf;
    int end;
    unsigned end_at;
    unsigned split;
    unsigned stall_ms;
} pconn;

typedef struct prog {
    int nconn, nreq;
    unsigned timeout_ms;
    pconn cn[MAXCONN];
    preq rq[MAXREQ];
} prog;

/* ------------------------------------------------------------------ */
/* Decoding                                                             */
/* ------------------------------------------------------------------ */

typedef struct rd {
    const uint8_t *p;
    size_t n, i;
} rd;

static unsigned byte(rd *r)
{
    return r->i < r->n ? r->p[r->i++] : 0;
}

static const char *const op_names[LF_NOPS] = {
    "write",       "write_big", "end",         "send",         "json",
    "status",      "header",    "write_head",  "flush",        "send_status",
    "destroy",     "next",      "fail",        "return",       "timer",
    "clear_timer", "work",      "thread",      "post",         "on_finish",
    "on_close",    "on_drain",  "on_cancel",   "req_timeout",  "stash",
    "use_stash",   "keep_raw",  "use_stale",   "over_release", "bad_arg",
    "framing",     "join",      "join_thread",
};

static void decode(const uint8_t *data, size_t len, const lf_config *cfg,
                   prog *p)
{
    rd r = {data, len, 0};
    int c, i, k, q = 0;

    memset(p, 0, sizeof(*p));
    p->nconn = 1 + (int)(byte(&r) % MAXCONN);
    k = (int)byte(&r);
    p->timeout_ms =
        k < 128 ? 20u + (unsigned)k : 150u + (unsigned)(k - 128) * 2;
    for (c = 0; c < p->nconn; c++) {
        pconn *cn = &p->cn[c];
        unsigned f = byte(&r);

        cn->first = q;
        cn->n = 1 + (int)(byte(&r) % 4);
        if (q + cn->n > MAXREQ)
            cn->n = MAXREQ - q;
        if (cn->n <= 0) {
            p->nconn = c;
            break;
        }
        q += cn->n;
        cn->sequential = f & 1;
        cn->small_rcvbuf = (f >> 1) & 1;
        cn->end = ((f >> 2) & 7) < 5 ? E_NONE : ((f >> 2) & 7) - 4;
        if (!(cfg->allow & LF_ALLOW_CLIENT_CUT))
            cn->end = E_NONE;
        cn->end_at = byte(&r) * 8u + byte(&r);
        cn->split = byte(&r);
        cn->stall_ms = (f & 0x20) ? byte(&r) % 200u : 0;
    }
    p->nreq = q;
    for (i = 0; i < p->nreq; i++) {
        preq *rq = &p->rq[i];

        for (c = 0; c < p->nconn; c++)
            if (i >= p->cn[c].first && i < p->cn[c].first + p->cn[c].n)
                rq->conn = c;
        rq->method = (int)(byte(&r) % 3);
        if (rq->method == M_HEAD && !(cfg->allow & LF_ALLOW_HEAD))
            rq->method = M_GET;
        for (k = 0; k < NCTX; k++) {
            pctx *x = &rq->c[k];
            int j;

            x->n = (int)(byte(&r) % (NOPS + 1));
            for (j = 0; j < x->n; j++) {
                unsigned kind = byte(&r) % LF_NOPS;

                x->ops[j].kind = (cfg->ops >> kind) & 1 ? (uint8_t)kind : 0xff;
                x->ops[j].a = (uint8_t)byte(&r);
                x->ops[j].b = (uint8_t)byte(&r);
            }
            if (k < NSTAGE) {
                /* Middleware continues, the route and the error handler
                 * are done, unless the program says otherwise. */
                unsigned b = byte(&r);
                int dflt = k == ST_ROUTE ? 0 : 1;

                rq->ret[k] = (int)((b + (unsigned)dflt) % 5);
            }
        }
    }
}

/* A handler's return value from its decoded form. */
static int ret_value(int stage, int v)
{
    if (stage == ST_ERR)
        return v % 2 ? LATCH_NEXT : LATCH_DONE;
    switch (v % 5) {
    case 0: return LATCH_DONE;
    case 1: return LATCH_NEXT;
    case 2: return LATCH_PENDING;
    case 3: return -1;
    default: return LATCH_ERR_INVALID_ARG;
    }
}

typedef struct sbuf {
    char *p;
    size_t n, cap;
} sbuf;

static void sb(sbuf *s, const char *fmt, ...)
{
    va_list ap;
    int w;

    if (s->cap == 0 || s->n >= s->cap - 1)
        return;
    va_start(ap, fmt);
    w = vsnprintf(s->p + s->n, s->cap - s->n, fmt, ap);
    va_end(ap);
    if (w > 0)
        s->n += (size_t)w < s->cap - s->n ? (size_t)w : s->cap - s->n - 1;
}

static void describe(const prog *p, sbuf *s)
{
    static const char *const stage[NSTAGE] = {"mw_a", "mw_b", "route", "err"};
    static const char *const meth[3] = {"GET", "POST", "HEAD"};
    static const char *const ends[4] = {"none", "fin-after-send",
                                        "rst-at-resp-byte", "cut-request-at"};
    int c, i, k, j;

    sb(s, "program: %d connection(s), %d request(s), request timeout %u ms\n",
       p->nconn, p->nreq, p->timeout_ms);
    for (c = 0; c < p->nconn; c++) {
        const pconn *cn = &p->cn[c];
        sb(s,
           "  conn %d: requests %d..%d %s%s split %u, end %s %u, stall "
           "%u ms\n",
           c, cn->first, cn->first + cn->n - 1,
           cn->sequential ? "sequential" : "pipelined",
           cn->small_rcvbuf ? " small-rcvbuf" : "", cn->split, ends[cn->end],
           cn->end_at, cn->stall_ms);
    }
    for (i = 0; i < p->nreq; i++) {
        const preq *rq = &p->rq[i];
        sb(s, "  request %d: %s /r/%d\n", i, meth[rq->method], i);
        for (k = 0; k < NCTX; k++) {
            const pctx *x = &rq->c[k];
            bool any = k < NSTAGE;

            for (j = 0; j < x->n; j++)
                any |= x->ops[j].kind != 0xff;
            if (!any)
                continue;
            if (k < NSTAGE)
                sb(s, "    %s:", stage[k]);
            else
                sb(s, "    ctx%d:", k);
            for (j = 0; j < x->n; j++)
                if (x->ops[j].kind != 0xff)
                    sb(s, " %s(%u,%u)", op_names[x->ops[j].kind], x->ops[j].a,
                       x->ops[j].b);
            if (k < NSTAGE)
                sb(s, " -> return %d", ret_value(k, rq->ret[k]));
            sb(s, "\n");
        }
    }
}

void lf_describe(const uint8_t *data, size_t len, const lf_config *cfg,
                 char *buf, size_t buflen)
{
    prog *p = malloc(sizeof(*p));
    sbuf s = {buf, 0, buflen};

    if (buflen)
        buf[0] = 0;
    if (p == NULL)
        return;
    decode(data, len, cfg, p);
    describe(p, &s);
    free(p);
}

/* ------------------------------------------------------------------ */
/* Run state                                                            */
/* ------------------------------------------------------------------ */

/* One scheduled run of a context. */
typedef struct inv {
    int rq, ctx, origin; /* origin: the stage whose code scheduled it */
    latch_res *res;
    latch_join *join;
    bool armed; /* timers: not fired nor cleared yet */
} inv;

typedef struct rstate {
    bool dispatched, closed;
    uint64_t id;
    latch_res *res;
    int ran[NSTAGE];
    bool in_frame[NSTAGE], pending[NSTAGE];
    int moves[NSTAGE];
    int expect_min;     /* reports promised with no call site of ours */
    int must_calls;     /* calls on this response that must be reported */
    int reports;        /* reports with this request's id */
    int owners;         /* latch-owned async holding the response */
    int user_refs;      /* references the program took and still holds */
    bool over_released; /* an over-release took one of those */
    bool wrote_zero;    /* a write returned 0: a drain will come */
    bool drain_owner;
    bool cut_ok; /* something that may legitimately cut the response */
    bool failed_in_frame;
    bool touched; /* a call that may answer or cut returned >= 0 */
    latch_timer *timers[8];
    inv *tinv[8];
    int ntimers;
    inv close_inv;  /* on_close with no program context */
    inv cancel_inv; /* the oracle's own cancel callback */
} rstate;

typedef struct stash {
    latch_res *res;
    int rq;
    bool retained;
} stash;

static struct {
    const lf_config *cfg;
    prog *p;
    latch_app *app;
    char nonce[8];
    rstate rs[MAXREQ];
    inv invs[MAXINV];
    int ninv;
    stash st[MAXSTASH];
    int nst;
    stash raw;
    pthread_mutex_t mu; /* threads, outstanding, failure, reports */
    pthread_cond_t cv;
    pthread_t threads[MAXTHREADS];
    int nthreads;
    int outstanding; /* work, posts, threads not yet back on the loop */
    /* The driver asked the server to stop (latch_stop): from then on a
     * post may be refused with LATCH_ERR_STATE, as latch.h says, once the
     * worker's loop ended. The client can leave before the server read
     * its requests, so the driver may stop the server while handlers of
     * a request it has not seen yet are still to run. */
    bool stopping;
    char fail[1024];
    bool failed;
    int nviol;
    struct {
        int line, rq, seen;
        const char *api;
    } defer[MAXDEFER]; /* misuse whose report may come after the call */
    int ndefer;
} G = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

static void failf(const char *fmt, ...)
{
    va_list ap;

    pthread_mutex_lock(&G.mu);
    if (!G.failed) {
        G.failed = true;
        va_start(ap, fmt);
        vsnprintf(G.fail, sizeof(G.fail), fmt, ap);
        va_end(ap);
    }
    pthread_mutex_unlock(&G.mu);
}

static void marker(int rq, char *out, size_t n)
{
    snprintf(out, n, "<%s:%02d>", G.nonce, rq);
}

static inv *inv_new(int rq, int ctx, int origin, latch_res *res)
{
    inv *v;

    pthread_mutex_lock(&G.mu);
    v = G.ninv < MAXINV ? &G.invs[G.ninv++] : NULL;
    pthread_mutex_unlock(&G.mu);
    if (v == NULL)
        return NULL;
    memset(v, 0, sizeof(*v));
    v->rq = rq;
    v->ctx = ctx;
    v->origin = origin;
    v->res = res;
    return v;
}

static void outstanding_add(int d)
{
    pthread_mutex_lock(&G.mu);
    G.outstanding += d;
    pthread_cond_broadcast(&G.cv);
    pthread_mutex_unlock(&G.mu);
}

/* Whether a post refused with `rc` breaks latch.h's promise: only
 * LATCH_ERR_STATE after the driver stopped the server is allowed (and a
 * stale handle after an over-release took the holder's reference). */
static bool post_refusal_wrong(int rq, int rc)
{
    bool stopping;

    pthread_mutex_lock(&G.mu);
    stopping = G.stopping;
    pthread_mutex_unlock(&G.mu);
    if (rc == LATCH_ERR_STATE && stopping)
        return false;
    return !G.rs[rq].over_released;
}

/* ------------------------------------------------------------------ */
/* Calls and their reports                                              */
/* ------------------------------------------------------------------ */

/* A call in progress, innermost on top (latch_next runs handlers inside
 * itself, so calls nest). */
typedef struct frame {
    struct frame *up;
    const char *api;
    int line;
    int rq; /* whose response, -1 when none */
    int reported;
    int siteless;
} frame;

static _Thread_local frame *tl_top;

enum {
    F_NONE = 0,
    F_RC = 1,   /* a negative return is a refusal: must be reported */
    F_MUST = 2, /* known misuse: must be reported */
};

/* Calls that answer, start answering or cut a response. */
static bool answering(const char *api)
{
    static const char *const names[] = {
        "latch_res_write",       "latch_res_end",
        "latch_res_send",        "latch_res_json",
        "latch_res_json_end",    "latch_res_flush_headers",
        "latch_res_send_status", "latch_res_redirect",
        "latch_res_destroy",     "latch_res_write_head",
        "latch_res_release"};
    size_t i;

    for (i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (strcmp(api, names[i]) == 0)
            return true;
    return false;
}

/* Entry points latch.h declares as plain functions: no caller's site. */
static bool function_only(const char *api)
{
    static const char *const names[] = {"latch_res_post"};
    size_t i;

    for (i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (strcmp(api, names[i]) == 0)
            return true;
    return false;
}

static void call_begin(frame *f, int rq, const char *api, int line)
{
    memset(f, 0, sizeof(*f));
    f->api = api;
    f->line = line;
    f->rq = rq;
    f->up = tl_top;
    tl_top = f;
}

static void call_end(frame *f, int flags, int rc, bool stale)
{
    bool must =
        (flags & F_MUST) || ((flags & F_RC) && rc < 0 && rc != LATCH_ERR_NOMEM);

    tl_top = f->up;
    if (G.cfg->verbose)
        fprintf(stderr, "  call %s:%d req %d -> %d%s%s\n", f->api, f->line,
                f->rq, rc, f->reported ? " reported" : "",
                must ? " (must report)" : "");
    if (rc >= 0 && f->rq >= 0 && !stale && answering(f->api))
        G.rs[f->rq].touched = true;
    if (!must)
        return;
    if (f->rq >= 0 && !stale) {
        pthread_mutex_lock(&G.mu);
        G.rs[f->rq].must_calls++;
        pthread_mutex_unlock(&G.mu);
    }
    if (f->reported > 0)
        return;
    if ((flags & F_MUST) && f->siteless == 0) {
        /* latch_fail inside a handler is judged when the handler returns
         * (latch.h): its report may come later, with this site. */
        pthread_mutex_lock(&G.mu);
        if (G.ndefer < MAXDEFER) {
            G.defer[G.ndefer].line = f->line;
            G.defer[G.ndefer].rq = f->rq;
            G.defer[G.ndefer].api = f->api;
            G.defer[G.ndefer++].seen = 0;
        }
        pthread_mutex_unlock(&G.mu);
        return;
    }
    if (f->siteless > 0 && (G.cfg->skip & LF_SKIP_FN_SITES) &&
        function_only(f->api))
        return;
    if (f->siteless > 0)
        failf("V1: %s (lifecycle.c:%d) on request %d returned %d (%s) and "
              "was reported without its site",
              f->api, f->line, f->rq, rc, latch_err_name(rc));
    else if (flags & F_MUST)
        failf("V2: %s (lifecycle.c:%d) on request %d is misuse and was not "
              "reported",
              f->api, f->line, f->rq);
    else
        failf("V1: %s (lifecycle.c:%d) on request %d returned %d (%s) "
              "without a report",
              f->api, f->line, f->rq, rc, latch_err_name(rc));
}

/* Runs EXPR as the call `api` on request R's response and judges its
 * report. EXPR and the frame share one __LINE__: that is the site latch
 * must name. Sets the local `rc`. */
#define CALL(R, API, FLAGS, STALE, EXPR)                                       \
    do {                                                                       \
        frame f_;                                                              \
        call_begin(&f_, (R), (API), __LINE__);                                 \
        rc = (EXPR);                                                           \
        call_end(&f_, (FLAGS), rc, (STALE));                                   \
    } while (0)
#define VCALL(R, API, FLAGS, STALE, EXPR)                                      \
    do {                                                                       \
        frame f_;                                                              \
        call_begin(&f_, (R), (API), __LINE__);                                 \
        EXPR;                                                                  \
        call_end(&f_, (FLAGS), 0, (STALE));                                    \
    } while (0)

static int rq_of_id(uint64_t id)
{
    int i;

    for (i = 0; G.p != NULL && i < G.p->nreq; i++)
        if (G.rs[i].dispatched && G.rs[i].id == id)
            return i;
    return -1;
}

/* Whether a report's file is this one: latch names a site's file relative
 * to where the program runs (latch__site_file), while __FILE__ is the path
 * the compiler was given (fuzz/run.sh gives absolute ones). */
static bool this_file(const char *file)
{
    static const char self[] = __FILE__;
    size_t n = strlen(file), m = strlen(self);

    return n <= m && strcmp(&self[m - n], file) == 0 &&
           (n == m || self[m - n - 1] == '/');
}

static void on_violation(const latch_violation *v, void *data)
{
    frame *f = tl_top;
    int rq;

    (void)data;
    pthread_mutex_lock(&G.mu);
    G.nviol++;
    rq = rq_of_id(v->request_id);
    if (rq >= 0)
        G.rs[rq].reports++;
    for (int d = 0; v->at.file != NULL && d < G.ndefer; d++)
        if (G.defer[d].rq == rq && v->at.line >= G.defer[d].line &&
            v->at.line <= G.defer[d].line + 3 && this_file(v->at.file) &&
            G.defer[d].seen == 0) {
            G.defer[d].seen++; /* one report answers one call */
            break;
        }
    if (f != NULL) {
        /* The site is the line of the latch macro inside CALL's
         * arguments: at most a few lines below where CALL starts. */
        if (v->at.file != NULL && v->at.line >= f->line &&
            v->at.line <= f->line + 3 && this_file(v->at.file))
            f->reported++;
        else if (v->at.file == NULL)
            f->siteless++;
    }
    pthread_mutex_unlock(&G.mu);
    if (G.cfg->verbose)
        fprintf(stderr, "  report %s from %s at %s:%d (request %d)\n", v->name,
                v->call ? v->call : "?", v->at.file ? v->at.file : "-",
                v->at.line, rq);
    /* V4: ERR_NO_RESPONSE only for a response nothing latch owns holds. */
    if (v->code == LATCH_ERR_NO_RESPONSE && rq >= 0 && G.rs[rq].owners > 0 &&
        !G.rs[rq].over_released)
        failf("V4: ERR_NO_RESPONSE on request %d while %d latch-owned "
              "async operation(s) held it%s",
              rq, G.rs[rq].owners,
              G.rs[rq].drain_owner ? " (a drain callback among them)" : "");
}

/* ------------------------------------------------------------------ */
/* Executing a context                                                  */
/* ------------------------------------------------------------------ */

static int exec(inv *iv, latch_req *req, latch_res *res, bool foreign,
                bool frame_of_stage);

static void run_ctx_cb(latch_res *res, inv *iv)
{
    if (iv->ctx >= 0)
        exec(iv, latch_res_req(res), res, false, false);
}

static void timer_cb(latch_res *res, void *data)
{
    inv *iv = data;

    if (iv->armed) {
        iv->armed = false;
        G.rs[iv->rq].owners--;
    }
    run_ctx_cb(res, iv);
}

static void work_fn(void *data)
{
    (void)data;
}

static void work_after(latch_res *res, int status, void *data)
{
    inv *iv = data;

    (void)status;
    G.rs[iv->rq].owners--;
    run_ctx_cb(res, iv);
    outstanding_add(-1);
}

static void post_cb(latch_res *res, void *data)
{
    inv *iv = data;

    run_ctx_cb(res, iv);
    G.rs[iv->rq].owners--;
    G.rs[iv->rq].user_refs--;
    latch_res_release(res);
    outstanding_add(-1);
}

static void thread_back(latch_res *res, void *data)
{
    inv *iv = data;

    /* The context ran on the thread unless the program keeps it for the
     * loop (ctx >= 0 here only then). */
    run_ctx_cb(res, iv);
    G.rs[iv->rq].owners--;
    G.rs[iv->rq].user_refs--;
    latch_res_release(res);
    outstanding_add(-1);
}

static void *thread_main(void *arg)
{
    inv *iv = arg;
    int rc;

    if (iv->ctx >= 0 && iv->origin >= 100) {
        /* Foreign calls: every one must be refused and reported. */
        iv->origin -= 100;
        exec(iv, latch_res_req(iv->res), iv->res, true, false);
        iv->ctx = -1;
    }
    if (iv->join != NULL) {
        CALL(iv->rq, "latch_join_resolve", F_RC, false,
             latch_join_resolve(iv->join, 1, NULL));
    }
    if ((rc = latch_res_post(iv->res, thread_back, iv)) != 0) {
        /* Refused only when the thread's reference was taken by an
         * over-release elsewhere (the handle is stale then), or once the
         * server stopped. */
        if (post_refusal_wrong(iv->rq, rc))
            failf("latch_res_post from a thread failed while it held a "
                  "reference (%s, request %d)",
                  latch_err_name(rc), iv->rq);
        outstanding_add(-1);
    }
    return NULL;
}

static bool spawn(inv *iv)
{
    bool ok = false;

    pthread_mutex_lock(&G.mu);
    if (G.nthreads < MAXTHREADS &&
        pthread_create(&G.threads[G.nthreads], NULL, thread_main, iv) == 0) {
        G.nthreads++;
        ok = true;
    }
    pthread_mutex_unlock(&G.mu);
    return ok;
}

static void finish_cb(latch_res *res, void *data)
{
    run_ctx_cb(res, data);
}

static void close_cb(latch_res *res, void *data)
{
    inv *iv = data;

    G.rs[iv->rq].closed = true;
    run_ctx_cb(res, iv);
    outstanding_add(0);
}

static void drain_cb(latch_res *res, void *data)
{
    inv *iv = data;

    if (G.rs[iv->rq].drain_owner) {
        G.rs[iv->rq].owners--;
        G.rs[iv->rq].drain_owner = false;
    }
    run_ctx_cb(res, iv);
}

static void cancel_cb(latch_req *req, int reason, void *data)
{
    inv *iv = data;

    if (iv->ctx == -2) {
        /* V5: the request timeout answers only a response that something
         * held (a pending handler, latch-owned async, a reference); a
         * response nothing holds is ERR_NO_RESPONSE and a 500 at once,
         * never the timeout's status (issue 11, item 5). */
        rstate *rs = &G.rs[iv->rq];
        latch_res *res = latch_req_res(req);
        int t;
        bool held = rs->owners > 0;

        for (t = 0; t < NSTAGE; t++)
            held |= rs->pending[t] || rs->in_frame[t];
        (void)res;
        if (reason == LATCH_CANCEL_TIMEOUT && !held && !rs->touched &&
            !(G.cfg->skip & LF_SKIP_V5))
            failf("V5: request %d: the request timeout fired on an "
                  "unanswered response that nothing held (no pending "
                  "handler, no latch-owned async): it should have been "
                  "ERR_NO_RESPONSE and a 500 when the chain ended",
                  iv->rq);
        return;
    }
    if (iv->ctx >= 0)
        exec(iv, req, latch_req_res(req), false, false);
}

static void join_done(latch_res *res, int status, void *const *results,
                      void *data)
{
    inv *iv = data;

    (void)status;
    (void)results;
    G.rs[iv->rq].owners--;
    run_ctx_cb(res, iv);
}

static void stash_release(latch_res *res, void *data)
{
    stash *s = data;

    s->retained = false;
    G.rs[s->rq].owners--;
    G.rs[s->rq].user_refs--;
    latch_res_release(res);
    outstanding_add(-1);
}

static const int statuses[] = {200,  201, 204, 304, 404, 500, 42,
                               1000, 103, 101, 599, 205, 418, 302};
#define NSTATUS ((int)(sizeof(statuses) / sizeof(statuses[0])))

/* A sub-call on a response someone kept (stash, stale pointer): `rq` is
 * the request that owned it, whose marker it writes. */
static void kept_call(int rq, latch_res *res, unsigned a, bool stale)
{
    char mk[32], json[64];
    int rc;

    marker(rq, mk, sizeof(mk));
    switch (a % 4) {
    case 0:
        CALL(rq, "latch_res_write", F_RC, stale,
             latch_res_write(res, mk, strlen(mk)));
        break;
    case 1:
        CALL(rq, "latch_res_end", F_RC, stale,
             latch_res_end(res, mk, strlen(mk)));
        break;
    case 2:
        CALL(rq, "latch_res_set_header", F_RC, stale,
             latch_res_set_header(res, "X-Tok", mk));
        break;
    default:
        snprintf(json, sizeof(json), "{\"t\":\"%s\"}", mk);
        CALL(rq, "latch_res_json", F_RC, stale, latch_res_json(res, json));
        break;
    }
    if (rc >= 0 && rq >= 0)
        G.rs[rq].cut_ok = true;
}

static void bad_arg(int rq, latch_req *req, latch_res *res, unsigned a)
{
    int rc;

    G.rs[rq].cut_ok = true;
    switch (a % 18) {
    case 0:
        CALL(rq, "latch_res_end", F_RC, false, latch_res_end(res, NULL, 5));
        break;
    case 1:
        CALL(rq, "latch_res_write", F_RC, false, latch_res_write(res, NULL, 5));
        break;
    case 2:
        CALL(rq, "latch_res_send", F_RC, false, latch_res_send(res, NULL, 3));
        break;
    case 3:
        CALL(rq, "latch_res_set_header", F_RC, false,
             latch_res_set_header(res, NULL, "v"));
        break;
    case 4:
        CALL(rq, "latch_res_set_header", F_RC, false,
             latch_res_set_header(res, "X-A", NULL));
        break;
    case 5:
        CALL(rq, "latch_res_set_header", F_RC, false,
             latch_res_set_header(res, "Bad Name", "v"));
        break;
    case 6:
        CALL(rq, "latch_res_json", F_RC, false, latch_res_json(res, NULL));
        break;
    case 7:
        CALL(rq, "latch_res_redirect", F_RC, false,
             latch_res_redirect(res, 302, NULL));
        break;
    case 8:
        CALL(rq, "latch_res_status", F_RC, false, latch_res_status(res, -1));
        break;
    case 9:
        CALL(rq, "latch_res_write_head", F_RC, false,
             latch_res_write_head(res, 0));
        break;
    case 10:
        CALL(rq, "latch_set_timeout", F_RC, false,
             latch_set_timeout(res, 1, NULL, NULL) ? 0 : -1);
        break;
    case 11:
        CALL(rq, "latch_work", F_RC, false, latch_work(res, NULL, NULL, NULL));
        break;
    case 12:
        CALL(rq, "latch_res_type", F_RC, false,
             latch_res_type(res, "no/such\r\n"));
        break;
    case 13:
        CALL(rq, "latch_req_on_cancel", F_RC, false,
             latch_req_on_cancel(req, NULL, NULL));
        break;
    case 14:
        CALL(rq, "latch_res_send_status", F_RC, false,
             latch_res_send_status(res, 42));
        break;
    case 15:
        CALL(rq, "latch_res_append_header", F_RC, false,
             latch_res_append_header(res, "X-A", "a\r\nX-Evil: 1"));
        break;
    case 16:
        CALL(rq, "latch_res_remove_header", F_RC, false,
             latch_res_remove_header(res, NULL));
        break;
    default:
        /* NULL objects: no response to report on; they must not crash. */
        rc = latch_res_end(NULL, "x", 1);
        rc = latch_res_write(NULL, "x", 1);
        latch_next(NULL);
        rc = latch_fail(NULL, 500, NULL);
        latch_res_destroy(NULL);
        rc = latch_res_on_close(NULL, NULL, NULL);
        rc = latch_clear_timeout(NULL);
        (void)rc;
        break;
    }
}

static void framing(int rq, latch_res *res, unsigned a, unsigned b)
{
    char v[16];
    int rc;

    G.rs[rq].cut_ok = true;
    switch (a % 5) {
    case 0:
        snprintf(v, sizeof(v), "%u", b % 40);
        CALL(rq, "latch_res_set_header", F_RC, false,
             latch_res_set_header(res, "Content-Length", v));
        break;
    case 1:
        CALL(rq, "latch_res_set_header", F_RC, false,
             latch_res_set_header(res, "Transfer-Encoding", "gzip"));
        break;
    case 2:
        CALL(rq, "latch_res_set_header", F_RC, false,
             latch_res_set_header(res, "Transfer-Encoding", "chunked"));
        break;
    case 3:
        CALL(rq, "latch_res_append_header", F_RC, false,
             latch_res_append_header(res, "Content-Length", "3"));
        CALL(rq, "latch_res_append_header", F_RC, false,
             latch_res_append_header(res, "Content-Length", "7"));
        break;
    default:
        CALL(rq, "latch_res_set_header", F_RC, false,
             latch_res_set_header(res, "Content-Length", "abc"));
        break;
    }
}

/* A latch_fail that is the first move of a handler while it runs. */
static bool legit_frame(const rstate *rs, int s, bool foreign)
{
    return !foreign && rs->moves[s] == 0 && rs->in_frame[s];
}

static bool may_schedule(int cur, unsigned a, int *to)
{
    int t = NSTAGE + (int)(a % (NCTX - NSTAGE));

    if (cur >= NSTAGE && t <= cur)
        return false; /* contexts only schedule later ones: finite */
    *to = t;
    return true;
}

/* Runs context iv->ctx of request iv->rq. Returns the handler's return
 * value for a stage (-2 when no return op decided it). */
static int exec(inv *iv, latch_req *req, latch_res *res, bool foreign,
                bool frame_of_stage)
{
    const lf_config *cfg = G.cfg;
    int rq = iv->rq, s = iv->origin, j, rc, to;
    rstate *rs = &G.rs[rq];
    const pctx *x = &G.p->rq[rq].c[iv->ctx];
    char mk[32], buf[96];

    marker(rq, mk, sizeof(mk));
    for (j = 0; j < x->n; j++) {
        const op *o = &x->ops[j];
        inv *nv;

        if (o->kind == 0xff)
            continue;
        if (foreign && !(cfg->allow & LF_ALLOW_FOREIGN_CALLS))
            return -2;
        switch (o->kind) {
        case LF_WRITE:
            snprintf(buf, sizeof(buf), "%s%.*s", mk, (int)(o->b % 40),
                     "........................................");
            CALL(rq, "latch_res_write", F_RC, false,
                 latch_res_write(res, buf, strlen(buf)));
            if (rc == 0)
                rs->wrote_zero = true;
            if (rc >= 0)
                rs->cut_ok = true;
            break;
        case LF_WRITE_BIG: {
            size_t i, n = strlen(mk);
            char *big = malloc(BIG);
            if (big == NULL)
                break;
            for (i = 0; i + n <= BIG; i += n)
                memcpy(big + i, mk, n);
            CALL(rq, "latch_res_write", F_RC, false,
                 latch_res_write(res, big, i));
            free(big);
            if (rc == 0)
                rs->wrote_zero = true;
            if (rc >= 0)
                rs->cut_ok = true;
            break;
        }
        case LF_END:
            if (o->a % 2)
                CALL(rq, "latch_res_end", F_RC, false,
                     latch_res_end(res, mk, strlen(mk)));
            else
                CALL(rq, "latch_res_end", F_RC, false,
                     latch_res_end(res, NULL, 0));
            break;
        case LF_SEND:
            CALL(rq, "latch_res_send", F_RC, false,
                 latch_res_send(res, mk, strlen(mk)));
            break;
        case LF_JSON:
            if (o->a % 2) {
                snprintf(buf, sizeof(buf), "{\"t\":\"%s\"}", mk);
                CALL(rq, "latch_res_json", F_RC, false,
                     latch_res_json(res, buf));
            } else {
                latch_json *jw;
                frame fj;
                call_begin(&fj, rq, "latch_res_json_begin", __LINE__);
                jw = latch_res_json_begin(res);
                call_end(&fj, F_RC, jw ? 0 : -1, false);
                if (jw != NULL) {
                    latch_json_object_begin(jw);
                    latch_json_key(jw, "t");
                    latch_json_string(jw, mk);
                    if (o->b % 2)
                        latch_json_object_end(jw);
                    /* b even: unfinished, latch answers 500 instead */
                    CALL(rq, "latch_res_json_end", F_NONE, false,
                         latch_res_json_end(res));
                }
            }
            break;
        case LF_STATUS:
            CALL(rq, "latch_res_status", F_RC, false,
                 latch_res_status(res, statuses[o->a % NSTATUS]));
            break;
        case LF_HEADER:
            switch (o->a % 4) {
            case 0:
                CALL(rq, "latch_res_set_header", F_RC, false,
                     latch_res_set_header(res, "X-Tok", mk));
                break;
            case 1:
                CALL(rq, "latch_res_append_header", F_RC, false,
                     latch_res_append_header(res, "X-Tok", mk));
                break;
            case 2:
                CALL(rq, "latch_res_remove_header", F_RC, false,
                     latch_res_remove_header(res, "X-Tok"));
                break;
            default:
                CALL(rq, "latch_res_clear_headers", F_RC, false,
                     latch_res_clear_headers(res));
                break;
            }
            break;
        case LF_WRITE_HEAD:
            CALL(rq, "latch_res_write_head", F_RC, false,
                 latch_res_write_head(res, statuses[o->a % NSTATUS]));
            break;
        case LF_FLUSH:
            CALL(rq, "latch_res_flush_headers", F_RC, false,
                 latch_res_flush_headers(res));
            if (rc >= 0)
                rs->cut_ok = true;
            break;
        case LF_SEND_STATUS:
            if (o->a % 2) {
                CALL(rq, "latch_res_send_status", F_RC, false,
                     latch_res_send_status(res, statuses[o->b % NSTATUS]));
            } else {
                snprintf(buf, sizeof(buf), "/x?t=%s", mk);
                CALL(rq, "latch_res_redirect", F_RC, false,
                     latch_res_redirect(res, o->b % 2 ? 0 : 301, buf));
            }
            break;
        case LF_DESTROY:
            rs->cut_ok = true;
            VCALL(rq, "latch_res_destroy", foreign ? F_MUST : F_NONE, false,
                  latch_res_destroy(res));
            break;
        case LF_NEXT:
        case LF_FAIL: {
            bool legit;

            if (s == ST_ERR && (o->kind == LF_NEXT || !frame_of_stage ||
                                !(cfg->allow & LF_ALLOW_ERR_PASS)))
                break; /* the error handler passes on by its return */
            if (s == ST_ERR) {
                CALL(rq, "latch_fail", F_NONE, false,
                     latch_fail(req, 500, "passed on"));
                rs->moves[s]++;
                break;
            }
            if (o->kind == LF_FAIL && legit_frame(rs, s, foreign))
                rs->failed_in_frame = true;
            legit = !foreign && rs->moves[s] == 0 &&
                    (rs->in_frame[s] || rs->pending[s]);
            if (!legit && !foreign && rs->moves[s] > 0 &&
                !(cfg->allow & LF_ALLOW_MULTI_NEXT))
                break;
            if (!legit && !foreign && rs->moves[s] == 0 &&
                !(cfg->allow & LF_ALLOW_LATE_NEXT))
                break;
            if (legit)
                rs->pending[s] = false;
            if (!foreign)
                rs->moves[s]++;
            if (o->kind == LF_NEXT)
                VCALL(rq, "latch_next", legit ? F_NONE : F_MUST, false,
                      latch_next(req));
            else
                CALL(rq, "latch_fail", legit ? F_NONE : F_MUST, false,
                     latch_fail(req, 400 + o->b % 200, "failed"));
            break;
        }
        case LF_RETURN: return o->a;
        case LF_TIMER:
            if (foreign) {
                CALL(rq, "latch_set_timeout", F_RC, false,
                     latch_set_timeout(res, 1, timer_cb, NULL) ? 0 : -1);
                break;
            }
            if (!may_schedule(iv->ctx, o->a, &to) ||
                (nv = inv_new(rq, to, s, res)) == NULL)
                break;
            {
                latch_timer *t;
                frame f_;
                call_begin(&f_, rq, "latch_set_timeout", __LINE__);
                t = latch_set_timeout(res, o->b % 20, timer_cb, nv);
                call_end(&f_, F_RC, t ? 0 : -1, false);
                if (t != NULL) {
                    nv->armed = true;
                    rs->owners++;
                    if (rs->ntimers < 8) {
                        rs->tinv[rs->ntimers] = nv;
                        rs->timers[rs->ntimers++] = t;
                    }
                }
            }
            break;
        case LF_CLEAR_TIMER:
            if (rs->ntimers == 0)
                break;
            {
                int k = o->a % rs->ntimers;
                CALL(rq, "latch_clear_timeout", F_RC, false,
                     latch_clear_timeout(rs->timers[k]));
                if (rc == 0 && !foreign && rs->tinv[k]->armed) {
                    rs->tinv[k]->armed = false;
                    rs->owners--;
                }
            }
            break;
        case LF_WORK:
            if (foreign) {
                CALL(rq, "latch_work", F_RC, false,
                     latch_work(res, work_fn, work_after, NULL));
                break;
            }
            if (!may_schedule(iv->ctx, o->a, &to) ||
                (nv = inv_new(rq, to, s, res)) == NULL)
                break;
            outstanding_add(1);
            CALL(rq, "latch_work", F_RC, false,
                 latch_work(res, work_fn, work_after, nv));
            if (rc == 0)
                rs->owners++;
            else
                outstanding_add(-1);
            break;
        case LF_THREAD:
        case LF_POST:
        case LF_JOIN_THREAD:
            if (foreign || !may_schedule(iv->ctx, o->a, &to) ||
                (nv = inv_new(rq, to, s, res)) == NULL)
                break;
            if (o->kind == LF_JOIN_THREAD) {
                inv *dv = inv_new(rq, to, s, res);
                if (dv == NULL)
                    break;
                dv->ctx = to;
                nv->ctx = -1;
                nv->join = latch_join_new(res, 2, join_done, dv);
                if (nv->join == NULL)
                    break;
                rs->owners++;
                CALL(rq, "latch_join_resolve", F_RC, false,
                     latch_join_resolve(nv->join, 0, NULL));
            }
            latch_res_retain(res);
            rs->owners++;
            rs->user_refs++;
            outstanding_add(1);
            if (o->kind == LF_THREAD && (o->b & 1) &&
                (cfg->allow & LF_ALLOW_FOREIGN_CALLS))
                nv->origin += 100; /* run the context on the thread */
            if (o->kind == LF_POST ? latch_res_post(res, post_cb, nv) != 0
                                   : !spawn(nv)) {
                rs->owners--;
                rs->user_refs--;
                outstanding_add(-1);
                latch_res_release(res);
            }
            break;
        case LF_JOIN:
            if (foreign || !may_schedule(iv->ctx, o->a, &to) ||
                (nv = inv_new(rq, to, s, res)) == NULL)
                break;
            {
                latch_join *jn = latch_join_new(res, 2, join_done, nv);
                if (jn == NULL)
                    break;
                rs->owners++;
                CALL(rq, "latch_join_resolve", F_RC, false,
                     latch_join_resolve(jn, 0, NULL));
                CALL(rq, "latch_join_resolve", F_RC, false,
                     o->b & 1 ? latch_join_fail(jn, 1, -1)
                              : latch_join_resolve(jn, 1, NULL));
            }
            break;
        case LF_ON_FINISH:
        case LF_ON_CLOSE:
        case LF_ON_DRAIN:
        case LF_ON_CANCEL:
            if (!may_schedule(iv->ctx, o->a, &to))
                break;
            if (!foreign && !(cfg->allow & LF_ALLOW_TOMBSTONE_CB) &&
                (rs->closed || latch_res_writable_finished(res) ||
                 latch_res_destroyed(res)))
                break;
            nv = inv_new(rq, foreign ? -1 : to, s, res);
            if (nv == NULL)
                break;
            if (o->kind == LF_ON_FINISH) {
                CALL(rq, "latch_res_on_finish", F_RC, false,
                     latch_res_on_finish(res, finish_cb, nv));
            } else if (o->kind == LF_ON_CLOSE) {
                CALL(rq, "latch_res_on_close", F_RC, false,
                     latch_res_on_close(res, close_cb, nv));
            } else if (o->kind == LF_ON_DRAIN) {
                CALL(rq, "latch_res_on_drain", F_RC, false,
                     latch_res_on_drain(res, drain_cb, nv));
                /* A registered drain callback is an owner (item 5). */
                if (rc == 0 && !foreign && !rs->drain_owner) {
                    rs->drain_owner = true;
                    rs->owners++;
                }
            } else {
                CALL(rq, "latch_req_on_cancel", F_RC, false,
                     latch_req_on_cancel(req, cancel_cb, nv));
            }
            break;
        case LF_REQ_TIMEOUT:
            CALL(rq, "latch_req_set_timeout", F_RC, false,
                 latch_req_set_timeout(req, 10u + o->b, 504));
            break;
        case LF_STASH:
            if (foreign || G.nst >= MAXSTASH)
                break;
            {
                stash *st = &G.st[G.nst++];
                st->res = res;
                st->rq = rq;
                st->retained = true;
                latch_res_retain(res);
                rs->owners++;
                rs->user_refs++;
                outstanding_add(1);
                if ((rc = latch_res_post(res, stash_release, st)) != 0) {
                    if (post_refusal_wrong(rq, rc))
                        failf("latch_res_post failed while the program "
                              "held a reference (%s, request %d)",
                              latch_err_name(rc), rq);
                    outstanding_add(-1);
                }
            }
            break;
        case LF_USE_STASH: {
            int k;
            if (foreign)
                break;
            for (k = G.nst - 1; k >= 0; k--)
                if (G.st[k].retained && G.st[(k + o->a) % G.nst].retained)
                    break;
            if (k >= 0) {
                stash *st = &G.st[(k + o->a) % G.nst];
                kept_call(st->rq, st->res, o->b, false);
            }
            break;
        }
        case LF_KEEP_RAW:
            if (!foreign) {
                G.raw.res = res;
                G.raw.rq = rq;
            }
            break;
        case LF_USE_STALE:
            if (!foreign && G.raw.res != NULL) {
                G.rs[G.raw.rq].cut_ok = true;
                kept_call(G.raw.rq, G.raw.res, o->b, true);
            }
            break;
        case LF_OVER_RELEASE:
            /* With a reference of the program's own outstanding, the
             * over-release takes that one: its holder (a thread, a post,
             * a stash) then uses an unreferenced pointer, item 2's class,
             * and the oracle's owner count is wrong (V4 and the wait for
             * posts are off for that request). Only when allowed. */
            if (rs->user_refs > 0 && !(cfg->allow & LF_ALLOW_STEAL_REF))
                break;
            if (rs->user_refs > 0 && !foreign)
                rs->over_released = true;
            if (!foreign) {
                rs->cut_ok = true;
                /* Misuse for certain only while the program holds no
                 * reference of its own (else it takes one of those, and
                 * the holder's later release is the refused one). */
                VCALL(rq, "latch_res_release",
                      rs->user_refs == 0 ? F_MUST : F_NONE, false,
                      latch_res_release(res));
            }
            break;
        case LF_BAD_ARG:
            if (!foreign)
                bad_arg(rq, req, res, o->a);
            break;
        case LF_FRAMING: framing(rq, res, o->a, o->b); break;
        default: break;
        }
    }
    return -2;
}

/* The request index from the path /r/<n>. */
static int rq_of(latch_req *req)
{
    const char *p = latch_req_path(req);
    int n;

    if (p == NULL || strncmp(p, "/r/", 3) != 0)
        return -1;
    n = atoi(p + 3);
    return n >= 0 && G.p != NULL && n < G.p->nreq ? n : -1;
}

static int stage_run(int stage, latch_req *req, latch_res *res)
{
    int rq = rq_of(req), r, t;
    rstate *rs;
    inv iv;

    if (rq < 0) {
        failf("a request that the program did not send reached stage %d",
              stage);
        return LATCH_DONE;
    }
    rs = &G.rs[rq];
    if (!rs->dispatched) {
        rs->dispatched = true;
        rs->id = latch_req_id(req);
        rs->res = res;
        rs->close_inv.rq = rq;
        rs->close_inv.ctx = -1;
        if (latch_res_on_close(res, close_cb, &rs->close_inv) != 0)
            failf("on_close at dispatch refused");
        rs->cancel_inv.rq = rq;
        rs->cancel_inv.ctx = -2;
        if (latch_req_on_cancel(req, cancel_cb, &rs->cancel_inv) != 0)
            failf("on_cancel at dispatch refused");
    }
    rs->ran[stage]++;
    if (stage != ST_ERR && rs->ran[stage] > 1)
        failf("C1: stage %d of request %d ran %d times", stage, rq,
              rs->ran[stage]);
    for (t = 0; stage != ST_ERR && t < stage; t++)
        if (rs->pending[t])
            failf("C1: stage %d of request %d ran while stage %d's "
                  "LATCH_PENDING was never resumed by stage %d's own "
                  "latch_next (someone else's next resumed it)",
                  stage, rq, t, t);
    memset(&iv, 0, sizeof(iv));
    iv.rq = rq;
    iv.ctx = stage;
    iv.origin = stage;
    iv.res = res;
    rs->in_frame[stage] = true;
    {
        int moves0 = rs->moves[stage];
        bool ended0 = latch_res_writable_ended(res);
        bool own, expect = false;

        r = exec(&iv, req, res, false, true);
        if (r == -2)
            r = G.p->rq[rq].ret[stage];
        r = ret_value(stage, r);
        if (r == LATCH_PENDING && latch_res_destroyed(res) &&
            !(G.cfg->allow & LF_ALLOW_PENDING_AFTER_CLOSE))
            r = LATCH_DONE;
        rs->in_frame[stage] = false;
        /* The handler ended the response itself, and it was not cut. */
        own = !ended0 && latch_res_writable_ended(res) &&
              !latch_res_destroyed(res);
        if (stage != ST_ERR) {
            if (rs->moves[stage] == 1 && moves0 == 0) {
                /* latch_next / latch_fail in the frame: a NEXT or an
                 * error returned as well is ERR_NEXT_TWICE; a latch_fail
                 * after the handler's own answer is "passed on after the
                 * response" (latch.h, latch_next and latch_fail). */
                if (rs->failed_in_frame ? (r == LATCH_NEXT || own)
                                        : (r == LATCH_NEXT || r < 0))
                    expect = true;
            } else if (rs->moves[stage] == 0) {
                if ((r == LATCH_NEXT || r < 0) && own)
                    expect = true; /* NEXT / error after the response */
                if (r == LATCH_PENDING)
                    rs->pending[stage] = true;
            }
            rs->moves[stage] += r == LATCH_PENDING ? 0 : 1;
        } else if (own && (G.cfg->allow & LF_ALLOW_ERR_PASS) &&
                   (r == LATCH_NEXT || rs->moves[stage] != moves0)) {
            expect = true; /* the error handler answered and passed on */
        }
        rs->failed_in_frame = false;
        if (expect)
            rs->expect_min++;
    }
    return r;
}

static int mw_a(latch_req *req, latch_res *res, void *data)
{
    (void)data;
    return stage_run(ST_A, req, res);
}

static int mw_b(latch_req *req, latch_res *res, void *data)
{
    (void)data;
    return stage_run(ST_B, req, res);
}

static int route(latch_req *req, latch_res *res, void *data)
{
    (void)data;
    return stage_run(ST_ROUTE, req, res);
}

static int on_error(const latch_error *err, latch_req *req, latch_res *res,
                    void *data)
{
    (void)err;
    (void)data;
    return stage_run(ST_ERR, req, res);
}

/* ------------------------------------------------------------------ */
/* The client's response parser: strict about framing                   */
/* ------------------------------------------------------------------ */

typedef struct resp {
    int status;
    bool close;   /* Connection: close */
    size_t start; /* offset of its first byte in the stream */
    size_t end;   /* one past its last byte */
} resp;

static bool tchar(int c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') ||
           (c >= 'A' && c <= 'Z') || (c && strchr("!#$%&'*+-.^_`|~", c));
}

/* Finds CRLF from b[i]; returns the index of CR, -1 when incomplete, -2
 * for a bare LF or CR. */
static long line_end(const char *b, size_t n, size_t i)
{
    for (; i < n; i++) {
        if (b[i] == '\n')
            return -2;
        if (b[i] == '\r') {
            if (i + 1 >= n)
                return -1;
            return b[i + 1] == '\n' ? (long)i : -2;
        }
    }
    return -1;
}

static bool ieq(const char *a, size_t an, const char *b)
{
    return an == strlen(b) && strncasecmp(a, b, an) == 0;
}

/*
 * One response from b[0..n): 1 (complete, *out, *used), 0 (incomplete),
 * -1 (malformed, *err). An interim 1xx is a response of its own here;
 * the caller skips it.
 */
static int parse_resp(const char *b, size_t n, bool head, resp *out,
                      size_t *used, const char **err)
{
    long e;
    size_t i, vs, ve;
    bool have_cl = false, chunked = false, te = false;
    unsigned long long cl = 0;

    memset(out, 0, sizeof(*out));
    if (n < 12)
        return memcmp(b, "HTTP/1.1 ", n < 9 ? n : 9) == 0
                   ? 0
                   : (*err = "status line does not start with HTTP/1.1", -1);
    if (memcmp(b, "HTTP/1.1 ", 9) != 0 || b[9] < '1' || b[9] > '5' ||
        b[10] < '0' || b[10] > '9' || b[11] < '0' || b[11] > '9')
        return *err = "bad status line", -1;
    out->status = (b[9] - '0') * 100 + (b[10] - '0') * 10 + (b[11] - '0');
    e = line_end(b, n, 12);
    if (e == -1)
        return n > 65536 ? (*err = "head too long", -1) : 0;
    if (e == -2 || (e > 12 && b[12] != ' '))
        return *err = "bad status line ending", -1;
    for (i = 13; i < (size_t)e; i++)
        if ((unsigned char)b[i] < 0x20 && b[i] != '\t')
            return *err = "control character in the reason phrase", -1;
    i = (size_t)e + 2;
    for (;;) {
        size_t ns = i, ne;

        e = line_end(b, n, i);
        if (e == -1)
            return n > 65536 ? (*err = "head too long", -1) : 0;
        if (e == -2)
            return *err = "bare CR or LF in the head", -1;
        if ((size_t)e == i) {
            i += 2;
            break;
        }
        for (ne = ns; ne < (size_t)e && tchar(b[ne]); ne++)
            ;
        if (ne == ns || ne >= (size_t)e || b[ne] != ':')
            return *err = "header line is not token \":\" value", -1;
        for (vs = ne + 1; vs < (size_t)e && (b[vs] == ' ' || b[vs] == '\t');
             vs++)
            ;
        for (ve = (size_t)e; ve > vs && (b[ve - 1] == ' ' || b[ve - 1] == '\t');
             ve--)
            ;
        for (size_t k = vs; k < ve; k++)
            if ((unsigned char)b[k] < 0x20 && b[k] != '\t')
                return *err = "control character in a header value", -1;
        if (ieq(b + ns, ne - ns, "content-length")) {
            unsigned long long v = 0;
            size_t k;
            if (ve == vs)
                return *err = "empty Content-Length", -1;
            for (k = vs; k < ve; k++) {
                if (b[k] < '0' || b[k] > '9' || v > 1000000000ull)
                    return *err = "Content-Length is not a number", -1;
                v = v * 10 + (unsigned)(b[k] - '0');
            }
            if (have_cl && v != cl)
                return *err = "two different Content-Lengths", -1;
            have_cl = true;
            cl = v;
        } else if (ieq(b + ns, ne - ns, "transfer-encoding")) {
            if (te)
                return *err = "Transfer-Encoding twice", -1;
            te = true;
            if (!ieq(b + vs, ve - vs, "chunked"))
                return *err = "Transfer-Encoding other than chunked", -1;
            chunked = true;
        } else if (ieq(b + ns, ne - ns, "connection")) {
            if (ieq(b + vs, ve - vs, "close"))
                out->close = true;
        }
        i = (size_t)e + 2;
    }
    if (te && have_cl)
        return *err = "Content-Length with Transfer-Encoding", -1;
    if (out->status == 101)
        return *err = "101 without an upgrade request", -1;
    if (out->status < 200) {
        if (te || have_cl)
            return *err = "framing headers on a 1xx", -1;
        *used = i;
        out->end = i;
        return 1;
    }
    if (out->status == 204 && (te || (have_cl && cl != 0)))
        return *err = "204 with a body length", -1;
    if (head || out->status == 204 || out->status == 304) {
        *used = i;
        out->end = i;
        return 1;
    }
    if (have_cl) {
        if (n - i < cl)
            return 0;
        *used = i + (size_t)cl;
        out->end = *used;
        return 1;
    }
    if (!chunked)
        return *err = "no Content-Length nor chunked: close-delimited", -1;
    for (;;) {
        unsigned long long sz = 0;
        size_t k = i;
        int digits = 0;

        e = line_end(b, n, i);
        if (e == -1)
            return 0;
        if (e == -2)
            return *err = "bare CR or LF in a chunk size line", -1;
        while (k < (size_t)e && isxdigit((unsigned char)b[k]) && digits < 12) {
            sz = sz * 16 +
                 (unsigned)(isdigit((unsigned char)b[k])
                                ? b[k] - '0'
                                : (tolower((unsigned char)b[k]) - 'a' + 10));
            k++;
            digits++;
        }
        if (digits == 0 || (k < (size_t)e && b[k] != ';'))
            return *err = "bad chunk size", -1;
        i = (size_t)e + 2;
        if (sz == 0) {
            /* Trailers, then the empty line. */
            for (;;) {
                e = line_end(b, n, i);
                if (e == -1)
                    return 0;
                if (e == -2)
                    return *err = "bad trailer", -1;
                if ((size_t)e == i) {
                    *used = i + 2;
                    out->end = *used;
                    return 1;
                }
                i = (size_t)e + 2;
            }
        }
        if (n - i < sz + 2)
            return 0;
        if (b[i + sz] != '\r' || b[i + sz + 1] != '\n')
            return *err = "chunk data not followed by CRLF", -1;
        i += sz + 2;
    }
}

/* ------------------------------------------------------------------ */
/* The client                                                           */
/* ------------------------------------------------------------------ */

typedef struct cconn {
    int fd;
    char out[MAXREQ * 128];
    size_t outlen, sent, limit;
    size_t req_end[MAXREQ]; /* offset after each request */
    char *in;
    size_t inlen, incap;
    size_t parsed;
    int nresp; /* final responses complete */
    resp r[MAXREQ + 1];
    int ended; /* 0 open, 1 EOF, 2 reset, 3 closed by us */
    bool client_cut, wr_shut, malformed;
    const char *err;
    unsigned seed;
    int64_t read_from;
} cconn;

static int64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void rst_close(cconn *c)
{
    struct linger lg = {1, 0};

    setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    close(c->fd);
    c->fd = -1;
    c->ended = 3;
    c->client_cut = true;
}

/* Parses what arrived since the last call. */
static void cparse(cconn *c, const pconn *pc)
{
    while (!c->malformed && c->parsed < c->inlen) {
        resp r;
        size_t used = 0;
        const char *err = NULL;
        int idx = pc->first + c->nresp;
        bool head = c->nresp < pc->n && G.p->rq[idx].method == M_HEAD;
        int k = parse_resp(c->in + c->parsed, c->inlen - c->parsed, head, &r,
                           &used, &err);

        if (k == 0)
            return;
        if (k < 0) {
            c->malformed = true;
            c->err = err;
            return;
        }
        r.start = c->parsed;
        r.end = c->parsed + used;
        c->parsed += used;
        if (r.status < 200)
            continue; /* interim */
        if (c->nresp < MAXREQ + 1)
            c->r[c->nresp] = r;
        c->nresp++;
    }
}

static bool cdone(const cconn *c, const pconn *pc)
{
    if (c->ended || c->malformed)
        return true;
    return c->sent == c->limit && c->nresp >= pc->n;
}

/* How many bytes to send next (split points from the seed). */
static size_t next_chunk(cconn *c, const pconn *pc, size_t avail)
{
    size_t n;

    if (pc->split == 0)
        return avail;
    c->seed = c->seed * 1103515245u + 12345u;
    n = 1 + (c->seed >> 16) % (pc->split % 64 + 1);
    return n < avail ? n : avail;
}

static int client_run(const prog *p, int port, cconn *cs)
{
    int c, i;
    int64_t t0 = now_ms(), deadline;
    unsigned maxto = p->timeout_ms + 300;

    deadline = t0 + 4000 + (int64_t)maxto * MAXREQ;
    for (c = 0; c < p->nconn; c++) {
        cconn *cc = &cs[c];
        const pconn *pc = &p->cn[c];
        struct sockaddr_in a;
        int one = 1;

        memset(cc, 0, sizeof(*cc));
        cc->seed = pc->split * 7919u + (unsigned)c;
        for (i = pc->first; i < pc->first + pc->n; i++) {
            static const char *const m[3] = {"GET", "POST", "HEAD"};
            int w = snprintf(
                cc->out + cc->outlen, sizeof(cc->out) - cc->outlen,
                "%s /r/%d HTTP/1.1\r\nHost: l\r\n%s\r\n%s", m[p->rq[i].method],
                i, p->rq[i].method == M_POST ? "Content-Length: 5\r\n" : "",
                p->rq[i].method == M_POST ? "hello" : "");
            cc->outlen += (size_t)w;
            cc->req_end[i - pc->first] = cc->outlen;
        }
        cc->limit = cc->outlen;
        if (pc->end == E_CUT_REQ && pc->end_at % (cc->outlen + 1) < cc->outlen)
            cc->limit = pc->end_at % (cc->outlen + 1);
        cc->read_from = t0 + pc->stall_ms;
        cc->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
        if (cc->fd < 0)
            return -1;
        if (pc->small_rcvbuf) {
            int sz = 4096;
            setsockopt(cc->fd, SOL_SOCKET, SO_RCVBUF, &sz, sizeof(sz));
        }
        setsockopt(cc->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        memset(&a, 0, sizeof(a));
        a.sin_family = AF_INET;
        a.sin_port = htons((uint16_t)port);
        a.sin_addr.s_addr = htonl(0x7f000001);
        if (connect(cc->fd, (struct sockaddr *)&a, sizeof(a)) != 0 &&
            errno != EINPROGRESS)
            return -1;
    }
    for (;;) {
        struct pollfd pf[MAXCONN];
        int64_t now = now_ms(), wait = 50;
        bool all = true;

        for (c = 0; c < p->nconn; c++) {
            cconn *cc = &cs[c];
            const pconn *pc = &p->cn[c];
            size_t allowed = cc->limit;

            pf[c].fd = -1;
            pf[c].events = 0;
            pf[c].revents = 0;
            if (cdone(cc, pc))
                continue;
            all = false;
            if (pc->sequential && cc->nresp < pc->n)
                allowed = cc->req_end[cc->nresp] < cc->limit
                              ? cc->req_end[cc->nresp]
                              : cc->limit;
            pf[c].fd = cc->fd;
            if (cc->sent < allowed ||
                (pc->end == E_CUT_REQ && !cc->wr_shut &&
                 cc->sent == cc->limit && cc->limit < cc->outlen))
                pf[c].events |= POLLOUT;
            if (now >= cc->read_from)
                pf[c].events |= POLLIN;
            else if (cc->read_from - now < wait)
                wait = cc->read_from - now;
        }
        if (all)
            return 0;
        if (now >= deadline)
            return 1;
        if (poll(pf, (nfds_t)p->nconn, (int)wait) < 0 && errno != EINTR)
            return -1;
        for (c = 0; c < p->nconn; c++) {
            cconn *cc = &cs[c];
            const pconn *pc = &p->cn[c];

            if (pf[c].fd < 0 || !pf[c].revents)
                continue;
            if (pf[c].revents & POLLOUT) {
                size_t allowed = cc->limit;
                if (pc->sequential && cc->nresp < pc->n &&
                    cc->req_end[cc->nresp] < allowed)
                    allowed = cc->req_end[cc->nresp];
                while (cc->sent < allowed) {
                    size_t n = next_chunk(cc, pc, allowed - cc->sent);
                    ssize_t w =
                        send(cc->fd, cc->out + cc->sent, n, MSG_NOSIGNAL);
                    if (w <= 0)
                        break;
                    cc->sent += (size_t)w;
                    if (pc->split)
                        break; /* one chunk per turn: separate segments */
                }
                if (cc->sent == cc->limit && !cc->wr_shut &&
                    (pc->end == E_FIN_AFTER_SEND ||
                     (pc->end == E_CUT_REQ && cc->limit < cc->outlen))) {
                    if (pc->end == E_CUT_REQ && (pc->end_at & 1)) {
                        rst_close(cc);
                        continue;
                    }
                    shutdown(cc->fd, SHUT_WR);
                    cc->wr_shut = true;
                    cc->client_cut = true;
                }
            }
            if (pf[c].revents & (POLLIN | POLLHUP | POLLERR)) {
                char tmp[16384];
                ssize_t r = recv(cc->fd, tmp, sizeof(tmp), 0);

                if (r > 0) {
                    if (cc->inlen + (size_t)r > cc->incap) {
                        size_t cap = (cc->incap ? cc->incap * 2 : 65536);
                        while (cap < cc->inlen + (size_t)r)
                            cap *= 2;
                        char *nb = realloc(cc->in, cap);
                        if (nb == NULL)
                            return -1;
                        cc->in = nb;
                        cc->incap = cap;
                    }
                    memcpy(cc->in + cc->inlen, tmp, (size_t)r);
                    cc->inlen += (size_t)r;
                    cparse(cc, pc);
                    if (pc->end == E_RST_AT_RESP && !cc->ended &&
                        cc->inlen >= pc->end_at % 4096)
                        rst_close(cc);
                } else if (r == 0) {
                    cc->ended = 1;
                } else if (errno != EAGAIN && errno != EINTR) {
                    cc->ended = 2;
                }
            }
        }
    }
}

/* W3: every marker in [s, e) names request `want`. */
static bool markers_ok(const cconn *c, size_t s, size_t e, int want, int *found)
{
    size_t nl = strlen(G.nonce);

    for (size_t i = s; i + nl + 4 < e; i++) {
        if (c->in[i] != '<' || memcmp(c->in + i + 1, G.nonce, nl) != 0 ||
            c->in[i + 1 + nl] != ':')
            continue;
        *found = atoi(c->in + i + 2 + nl);
        if (*found != want)
            return false;
    }
    return true;
}

static void judge_conn(const prog *p, int c, const cconn *cc, bool timed_out)
{
    const pconn *pc = &p->cn[c];
    int k, found = -1;
    bool cut_ok = cc->client_cut;

    if (cc->malformed) {
        failf("W1: connection %d: response %d is malformed: %s", c, cc->nresp,
              cc->err);
        return;
    }
    if (cc->nresp > pc->n) {
        failf("W2: connection %d: %d responses to %d requests", c, cc->nresp,
              pc->n);
        return;
    }
    for (k = 0; k < cc->nresp; k++)
        if (!markers_ok(cc, cc->r[k].start, cc->r[k].end, pc->first + k,
                        &found)) {
            failf("W3: connection %d: the response to request %d carries "
                  "request %d's marker",
                  c, pc->first + k, found);
            return;
        }
    if (cc->nresp < pc->n &&
        !markers_ok(cc, cc->parsed, cc->inlen, pc->first + cc->nresp, &found)) {
        failf("W3: connection %d: the cut response to request %d carries "
              "request %d's marker",
              c, pc->first + cc->nresp, found);
        return;
    }
    if (timed_out && !cc->ended && !cc->client_cut && cc->nresp < pc->n) {
        failf("W4: connection %d: no answer to request %d before the "
              "deadline (%d of %d answered; hang)",
              c, pc->first + cc->nresp, cc->nresp, pc->n);
        return;
    }
    if (cc->nresp > 0 && cc->r[cc->nresp - 1].close)
        cut_ok = true;
    for (k = pc->first; k <= pc->first + cc->nresp && k < pc->first + pc->n;
         k++)
        cut_ok |= G.rs[k].cut_ok;
    if (cc->nresp < pc->n && !cut_ok) {
        failf("W4: connection %d closed after %d of %d responses "
              "(%zu bytes of a cut response) with nothing that may cut "
              "it",
              c, cc->nresp, pc->n, cc->inlen - cc->parsed);
    }
}

/* ------------------------------------------------------------------ */
/* One run                                                              */
/* ------------------------------------------------------------------ */

static void *server_main(void *arg)
{
    latch_run(arg);
    return NULL;
}

static bool wait_quiet(int64_t deadline)
{
    struct timespec ts;
    bool ok;

    for (;;) {
        int i;

        pthread_mutex_lock(&G.mu);
        ok = G.outstanding == 0;
        pthread_mutex_unlock(&G.mu);
        for (i = 0; ok && i < G.p->nreq; i++)
            if (G.rs[i].dispatched && !G.rs[i].closed)
                ok = false;
        if (ok)
            return true;
        if (now_ms() >= deadline)
            return false;
        /* The closes and posts come from the loop: wait for a signal,
         * bounded so a missed one costs 5 ms, not the run. */
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 5 * 1000000;
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        pthread_mutex_lock(&G.mu);
        pthread_cond_timedwait(&G.cv, &G.mu, &ts);
        pthread_mutex_unlock(&G.mu);
    }
}

int lf_run(const uint8_t *data, size_t len, const lf_config *cfg, char *why,
           size_t whylen)
{
    static unsigned runs;
    prog *p = calloc(1, sizeof(*p));
    cconn *cs = calloc(MAXCONN, sizeof(*cs));
    latch_app *app;
    pthread_t srv;
    struct timespec ts;
    int c, i, port, cr, n, joined = 0;
    bool quiet;
    sbuf s = {why, 0, whylen};

    if (whylen)
        why[0] = 0;
    if (p == NULL || cs == NULL) {
        free(p);
        free(cs);
        return 0;
    }
    decode(data, len, cfg, p);
    memset(G.rs, 0, sizeof(G.rs));
    memset(G.st, 0, sizeof(G.st));
    memset(&G.raw, 0, sizeof(G.raw));
    G.cfg = cfg;
    G.p = p;
    G.ninv = 0;
    G.nst = 0;
    G.nthreads = 0;
    G.outstanding = 0;
    G.stopping = false;
    G.failed = false;
    G.fail[0] = 0;
    G.nviol = 0;
    G.ndefer = 0;
    snprintf(G.nonce, sizeof(G.nonce), "q%05x",
             (++runs * 2654435761u) & 0xfffff);
    if (cfg->verbose) {
        sbuf d = {malloc(8192), 0, 8192};
        if (d.p != NULL) {
            d.p[0] = 0;
            describe(p, &d);
            fprintf(stderr, "%s", d.p);
            free(d.p);
        }
    }

    app = latch_app_new();
    if (app == NULL)
        goto out;
    G.app = app;
    latch_app_set_workers(app, 1);
    latch_app_set_handle_signals(app, false);
    latch_app_set_violation_policy(app, LATCH_POLICY_REPORT);
    latch_app_on_violation(app, on_violation, NULL);
    latch_app_set_request_timeout(app, p->timeout_ms, 504);
    latch_app_set_limit(app, LATCH_TIMEOUT_DRAIN, 300);
    latch_app_set_limit(app, LATCH_TIMEOUT_LINGER, 100);
    latch_use(app, NULL, mw_a, NULL);
    latch_use(app, NULL, mw_b, NULL);
    latch_all(app, "/r/:n", route, NULL);
    latch_use_error(app, on_error, NULL);
    if (latch_listen(app, "127.0.0.1", 0) != 0 ||
        (port = latch_app_port(app)) <= 0 ||
        pthread_create(&srv, NULL, server_main, app) != 0) {
        latch_app_free(app);
        goto out;
    }

    cr = client_run(p, port, cs);
    if (cr < 0)
        failf("client: socket error %d", errno);
    for (c = 0; c < p->nconn; c++) {
        if (cfg->verbose)
            fprintf(stderr,
                    "  client conn %d: sent %zu of %zu (limit %zu), got %zu "
                    "bytes, %d responses, ended %d, cut %d\n",
                    c, cs[c].sent, cs[c].outlen, cs[c].limit, cs[c].inlen,
                    cs[c].nresp, cs[c].ended, cs[c].client_cut);
        judge_conn(p, c, &cs[c], cr == 1);
    }
    for (c = 0; c < p->nconn; c++)
        if (cs[c].fd > 0 && cs[c].ended != 3)
            close(cs[c].fd);

    /* L1: every dispatched response closes, every job and thread is back. */
    quiet = wait_quiet(now_ms() + 5000 + p->timeout_ms);
    if (!quiet) {
        int open = -1;
        for (i = 0; i < p->nreq; i++)
            if (G.rs[i].dispatched && !G.rs[i].closed)
                open = i;
        failf("L1: still busy 5 s after the client left (%d outstanding; "
              "request %d dispatched and never closed: no on_close)",
              G.outstanding, open);
    }
    /* The program's threads end before the server: none may post to a
     * loop that is gone (they only make a few calls and post). */
    pthread_mutex_lock(&G.mu);
    n = G.nthreads;
    pthread_mutex_unlock(&G.mu);
    for (; joined < n; joined++)
        pthread_join(G.threads[joined], NULL);
    /* latch_stop before latch_run began is lost (latch_run clears the
     * flag: see fuzz-findings), so ask again until it returns. */
    pthread_mutex_lock(&G.mu);
    G.stopping = true;
    pthread_mutex_unlock(&G.mu);
    for (i = 0; i < 50; i++) {
        latch_stop(app);
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 200 * 1000000;
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        if (pthread_timedjoin_np(srv, NULL, &ts) == 0)
            break;
    }
    if (i == 50) {
        fprintf(stderr, "lifecycle: latch_run did not return 10 s after "
                        "latch_stop (hang)\n");
        describe(p, &(sbuf){why, 0, whylen});
        fprintf(stderr, "%s%s\n", G.fail, why);
        abort();
    }
    for (; joined < G.nthreads; joined++)
        pthread_join(G.threads[joined], NULL);
    /* L1 again for what the server dispatched after the wait above saw
     * nothing left (the client had left before the server read it): the
     * drain closed it, and its on_close ran. */
    for (i = 0; quiet && i < p->nreq; i++)
        if (G.rs[i].dispatched && !G.rs[i].closed)
            failf("L1: request %d was dispatched and never closed (no "
                  "on_close) although latch_run returned",
                  i);

    /* V2: misuse whose report could come after the call. */
    for (i = 0; quiet && i < G.ndefer; i++)
        if (G.defer[i].seen == 0)
            failf("V2: %s (lifecycle.c:%d) on request %d is misuse and was "
                  "not reported",
                  G.defer[i].api, G.defer[i].line, G.defer[i].rq);
    /* V3: the reports promised for what handlers returned. */
    for (i = 0; quiet && i < p->nreq; i++) {
        rstate *rs = &G.rs[i];
        /* (Not after an over-release took a reference the program held:
         * its holders' calls went stale and report as such.) */
        if (rs->dispatched && !rs->over_released &&
            rs->reports < rs->expect_min + rs->must_calls)
            failf("V3: request %d: %d report(s), at least %d promised (%d "
                  "for refused calls, %d for handler returns)",
                  i, rs->reports, rs->expect_min + rs->must_calls,
                  rs->must_calls, rs->expect_min);
    }
    latch_app_free(app);
    G.app = NULL;

out:
    for (c = 0; c < MAXCONN; c++)
        free(cs[c].in);
    free(cs);
    if (G.failed) {
        sb(&s, "%s\n", G.fail);
        describe(p, &s);
    }
    if (cfg->verbose)
        fprintf(stderr, "verdict: %s (%d reports)\n", G.failed ? G.fail : "ok",
                G.nviol);
    G.p = NULL;
    free(p);
    /* Forget every pointer into latch: an object latch leaked must not
     * look reachable to LeakSanitizer through the driver's globals. */
    memset(G.rs, 0, sizeof(G.rs));
    memset(G.st, 0, sizeof(G.st));
    memset(G.invs, 0, sizeof(G.invs));
    memset(&G.raw, 0, sizeof(G.raw));
    return G.failed ? 1 : 0;
}
