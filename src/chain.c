/*
 * chain.c - the handler chain: middleware, routes, next, error handlers and
 * the final handler, with the chain's misuses turned into reports.
 *
 * Layers (middleware and routes) run in registration order. A handler's
 * return value decides what happens next (LATCH_DONE, LATCH_NEXT,
 * LATCH_PENDING, or a negative error), and the chain backs the decision
 * up: continuing after the response was sealed, resuming twice, or
 * finishing without a response is reported and made harmless. When no
 * layer answers, the final handler does: 404, or 405 with Allow when the
 * path exists for other methods, or the error's status.
 *
 * Routes are found through the segment tree of router.c: a request visits
 * only the middleware whose prefix matches and the routes the tree
 * matched, in registration order, however many routes the app has. The
 * layers are app.c's (registration, chain.h); the chain serves requests
 * through the serve table (latch__chain_serve) and hears from the
 * response through the owner table it installs at dispatch.
 */
#include "chain.h"
#include "internal.h"
#include "router.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ------------------------------------------------------------------ */
/* Matching                                                             */
/* ------------------------------------------------------------------ */

static bool prefix_match(const latch_layer *l, const char *path)
{
    return l->prefix_len == 0 ||
           (strncmp(path, l->pattern, l->prefix_len) == 0 &&
            (path[l->prefix_len] == '/' || path[l->prefix_len] == '\0'));
}

/* Parameters live in the response's cold part, taken by the first one
 * stored; false when out of memory (the parameter is not stored, as one
 * past the limit is not). */
static bool params_ready(latch_req *q)
{
    struct latch_res_cold *c;

    if (q->params != NULL)
        return true;
    if ((c = latch__res_cold(LATCH_CONTAINER_OF(q, latch_res, req))) == NULL)
        return false;
    q->params = c->params;
    return true;
}

/* Matches the raw path (before decoding, so an escaped '/' stays inside
 * its segment) and fills the route parameters, decoded, unless q is NULL. */
static bool route_match(const latch_layer *l, latch_req *q, const char *raw,
                        size_t rawlen)
{
    const char *p = raw, *end = raw + rawlen;
    int i;

    if (q != NULL)
        q->nparams = 0;
    for (i = 0; i < l->nsegs; i++) {
        const char *seg = l->segs[i];
        size_t n = l->seg_len[i];
        const char *e;
        if (p >= end || *p != '/')
            return false;
        p++;
        if (seg[0] == '*') {
            if (q != NULL && q->nparams < LATCH__ROUTER_MAX_PARAMS &&
                params_ready(q)) {
                q->params[q->nparams].name = "*";
                q->params[q->nparams].value =
                    latch__req_decode(q, p, (size_t)(end - p));
                q->nparams++;
            }
            return true;
        }
        e = memchr(p, '/', (size_t)(end - p));
        if (e == NULL)
            e = end;
        if (seg[0] == ':') {
            if (e == p)
                return false;
            if (q != NULL && q->nparams < LATCH__ROUTER_MAX_PARAMS &&
                params_ready(q)) {
                q->params[q->nparams].name = seg + 1;
                q->params[q->nparams].value =
                    latch__req_decode(q, p, (size_t)(e - p));
                q->nparams++;
            }
        } else if ((size_t)(e - p) != n || memcmp(p, seg, n) != 0) {
            return false;
        }
        p = e;
    }
    /* A trailing slash is tolerated, as Express does by default. */
    return p == end || (p + 1 == end && *p == '/');
}

static void raw_path(const latch_req *q, const char **s, size_t *n)
{
    const char *t = q->url, *e;

    if (t[0] != '/') {
        *s = q->path;
        *n = strlen(q->path);
        return;
    }
    e = strchr(t, '?');
    *s = t;
    *n = e ? (size_t)(e - t) : strlen(t);
}

static bool method_match(const latch_layer *l, const latch_req *q)
{
    if (l->method == NULL)
        return true;
    if (strcmp(l->method, q->method) == 0)
        return true;
    return q->is_head && strcmp(l->method, "GET") == 0;
}

static bool body_streams(const latch_app *app, const latch_req *q);

/*
 * The body limit of a request whose head just arrived: that of the first
 * latch_route_body_limit rule, in registration order, that matches its
 * method and path, else the app's LATCH_LIMIT_BODY, which bounds what
 * latch buffers: a body streamed to a proxy is never buffered, and only a
 * rule limits it (DESIGN.md). Rules are few and only requests with a body
 * ask, so a walk over them is enough.
 */
static uint64_t body_limit(const latch_app *app, const latch_req *q)
{
    const latch_layer *l;
    const char *raw;
    size_t rawn;

    if (app->limits != NULL) {
        raw_path(q, &raw, &rawn);
        for (l = app->limits; l != NULL; l = l->next)
            if (method_match(l, q) && route_match(l, NULL, raw, rawn))
                return l->body_limit;
    }
    return body_streams(app, q) ? UINT64_MAX : app->cfg.body;
}

/* ------------------------------------------------------------------ */
/* Running the chain                                                    */
/* ------------------------------------------------------------------ */

static const latch_site no_site = {NULL, 0, NULL};

static void chain_done(latch_res *res);
static void chain_unreferenced(latch_res *res);
static void chain_closed(latch_res *res);
static void chain_observe(latch_res *res, bool finished);
static void chain_raise(latch_res *res, int code, int status, const char *call,
                        latch_site at);
static void chain_timeout(latch_res *res, int status);
/* What a dispatched response tells the chain (internal.h). */
static const latch_res_owner_ops chain_owner = {chain_unreferenced,
                                                chain_closed, chain_observe,
                                                chain_raise, chain_timeout};

/* ------------------------------------------------------------------ */
/* The final handler (what Express's finalhandler does)                 */
/* ------------------------------------------------------------------ */

/* Adds method `m` to the Allow list (", "-separated, in `cap` bytes)
 * unless the list already has it as a whole token (methods are case
 * sensitive: GETALL is not GET). A method that does not fit is left out. */
static void allow_add(char *allow, size_t cap, const char *m)
{
    size_t len = strlen(allow), mlen = strlen(m);
    const char *p = allow;

    while (*p != '\0') {
        const char *e = strchr(p, ',');
        size_t n = e != NULL ? (size_t)(e - p) : strlen(p);
        if (n == mlen && memcmp(p, m, n) == 0)
            return;
        if (e == NULL)
            break;
        p = e + 2; /* ", " */
    }
    if (len + mlen + 3 > cap)
        return;
    snprintf(allow + len, cap - len, "%s%s", len ? ", " : "", m);
}

/* The final handler for a request no layer answered: 404, or 405 with
 * Allow when the path exists for other methods (Express says 404). */
static void final_not_found(latch_res *res)
{
    latch_app *app = res->w->app;
    const char *raw;
    size_t rawn;
    char allow[256] = "", msg[600];
    latch_layer *l;

    raw_path(&res->req, &raw, &rawn);
    for (l = app->layers; l != NULL; l = l->next) {
        if (l->kind != L_ROUTE || l->method == NULL)
            continue;
        if (!res->rlinear) {
            /* Only the routes the tree matched can name the path. */
            bool hit = false;
            for (uint8_t k = 0; k < res->nrids && !hit; k++)
                hit = res->cold->rids[k] == l->id;
            if (!hit)
                continue;
        } else if (!route_match(l, &res->req, raw, rawn)) {
            continue;
        }
        allow_add(allow, sizeof(allow), l->method);
        if (strcmp(l->method, "GET") == 0)
            allow_add(allow, sizeof(allow), "HEAD");
    }
    res->req.nparams = 0;
    /* As finalhandler: the method and the path as sent, no query. */
    snprintf(msg, sizeof(msg), "Cannot %s %.*s", res->req.method,
             (int)(rawn > 500 ? 500 : rawn), raw);
    if (allow[0] != '\0')
        latch__pages_error(res, 405, msg, "Allow", allow, "final handler");
    else
        latch__pages_error(res, 404, msg, NULL, NULL, "final handler");
}

/* The chain's state to write: the cold part's, taken back (its packed
 * copy restored) when a long-lived response gave it back; NULL out of
 * memory. Taken at dispatch and kept while the chain runs, so never NULL
 * there. */
static struct latch_chainst *st(latch_res *res)
{
    struct latch_res_cold *c = latch__res_cold(res);

    return c != NULL ? &c->cs : NULL;
}

/* The final handler for an error no error handler took. */
static void final_error(latch_res *res)
{
    const struct latch_chainst *cs = latch__res_marks(res);
    latch_app *app = res->w->app;
    int status = cs->err.status;
    char msg[600];

    if (status < 400 || status > 599)
        status = 500;
    /* A head that write_head built but that never went out: the error's
     * status can still be sent instead. */
    latch__res_retract_head(res);
    if (res->state == LATCH_RS_FRESH) {
        /* Details only in development: an error message can tell an
         * attacker more than the status does. */
        if (app->development)
            snprintf(msg, sizeof(msg), "%s\n    at %s:%d (%s)",
                     cs->err.message ? cs->err.message
                                     : latch_strerror(cs->err.code),
                     cs->err.at.file ? cs->err.at.file : "?", cs->err.at.line,
                     cs->err.at.func ? cs->err.at.func : "?");
        else
            snprintf(msg, sizeof(msg), "%s", latch__http_reason(status));
        latch__pages_error(res, status, msg, NULL, NULL, "final handler");
    } else if (res->state == LATCH_RS_HEADERS_SENT) {
        /* Too late for a status: cut the response so the client sees it
         * incomplete, never whole. A complete response keeps its
         * connection (Express destroys it anyway). */
        latch_res_destroy_at(res, no_site);
    }
}

/* Where a handler's return value "happened": the handler, by name, and
 * where it was registered (a return has no call site of its own). */
static latch_site layer_site(const latch_layer *l)
{
    return (latch_site){l->at.file, l->at.line,
                        l->name ? l->name : l->pattern_src};
}

static void set_error(latch_res *res, struct latch_chainst *cs, int code,
                      latch_site at)
{
    cs->err.code = code;
    cs->err.status = 500;
    cs->err.message = NULL;
    cs->err.at = at;
    res->in_error = true;
}

/*
 * One handler call in progress, on the C stack: what the handler did to
 * the chain while it ran. Calls nest when a handler calls latch_next
 * itself (Express's next() inside a middleware): the rest of the chain
 * runs inside that call, and the handler's code after it runs after.
 */
struct latch_frame {
    latch_frame *up;
    bool continued;  /* latch_next inside: the chain went on from here */
    bool held;       /* the frame holds a reference (while continued) */
    bool failed;     /* latch_fail inside */
    uint16_t id;     /* this call's frame id (res->nframes) */
    latch_seal next; /* where the chain was continued */
};

static void frame_push(latch_res *res, latch_frame *f)
{
    memset(f, 0, sizeof(*f));
    f->up = res->frame;
    /* Ids saturate: past 65535 handler calls in one request the last id
     * is shared, and those calls may each move the chain only once in
     * all. */
    if (res->nframes < UINT16_MAX)
        res->nframes++;
    f->id = res->nframes;
    res->frame = f;
    res->running = f->id;
}

/* What frame `id` did to move the chain on (for the report of a second
 * move), kept for its last eight frames. */
static void record_move(latch_res *res, uint16_t id, const char *call,
                        latch_site at)
{
    struct latch_res_cold *c;

    /* Out of memory, a later report of a second move names no prior. */
    if (id == 0 || (c = latch__res_cold(res)) == NULL)
        return;
    c->move_ids[id & 7] = id;
    c->moves[id & 7].call = call;
    c->moves[id & 7].at = at;
}

static const latch_seal *move_of(const latch_res *res, uint16_t id)
{
    const struct latch_res_cold *c = res->cold;

    if (id == 0)
        return NULL;
    if (c != NULL)
        return c->move_ids[id & 7] == id ? &c->moves[id & 7] : NULL;
    /* A long-lived response packed them (latch__res_trim). */
    for (uint32_t i = 0; res->moves != NULL && i < res->moves->n; i++)
        if (res->moves->m[i].id == id)
            return &res->moves->m[i].seal;
    return NULL;
}

/* The running frame with this id, or NULL. */
static latch_frame *running_frame(const latch_res *res, uint16_t id)
{
    latch_frame *f;

    for (f = res->frame; f != NULL; f = f->up)
        if (f->id == id)
            return f;
    return NULL;
}

static void frame_pop(latch_res *res, latch_frame *f)
{
    res->frame = f->up;
    res->running = f->up != NULL ? f->up->id : 0;
}

/*
 * An error is on its way to the error handlers. If the response was
 * already complete, that is the catch block that both responded and
 * forwarded the error: reported, with where the response ended. The error
 * handlers still run and see latch_res_headers_sent true; nothing more
 * reaches the wire. A response cut short (destroyed) or still streaming is
 * not reported: failing is how a handler says its body is incomplete.
 */
static bool error_after_response(latch_res *res, const char *call,
                                 latch_site at)
{
    if (res->state != LATCH_RS_ENDED && res->state != LATCH_RS_FINISHED)
        return false;
    latch__violation(res, LATCH_ERR_NEXT_AFTER_RESPONSE, call,
                     "an error was passed on after the response was sent", at);
    return true;
}

/*
 * The chain moving on (LATCH_NEXT, latch_next, an error passed on) from a
 * response that nothing sealed yet but that a producer is answering: a
 * latch_res_pipe, latch_res_sendfile or latch_proxy made before (Express's
 * res.sendFile() then next()). That is a second answer: reported, with the
 * producer's call as the place the response was sealed, and the producer
 * keeps the response. Not while the request is cancelled: the timeout,
 * the client leaving and shutdown answer through the error path on their
 * own.
 */
static bool moved_after_claim(latch_res *res, const char *call, const char *msg,
                              latch_site at)
{
    const latch_seal *claim;

    if (res->attach == NULL) /* nothing attached: the common case */
        return false;
    if (res->state != LATCH_RS_FRESH || res->detached ||
        res->cancel_reason != LATCH_CANCEL_NONE)
        return false;
    if ((claim = latch__pipe_claim(res)) == NULL)
        return false;
    latch__violation_sealed(res, LATCH_ERR_NEXT_AFTER_RESPONSE, call, msg, at,
                            NULL, claim);
    return true;
}

#define CLAIMED_NEXT                                                           \
    "the chain moved on after the response was given to a "                    \
    "producer"
#define CLAIMED_ERROR                                                          \
    "an error was passed on after the response was given "                     \
    "to a producer"

/*
 * A handler that continued the chain from inside (latch_next) returned.
 * The chain already went on, so its return value cannot move it again: a
 * LATCH_NEXT or an error is a second continuation (ERR_NEXT_TWICE, or
 * ERR_NEXT_AFTER_RESPONSE for an error after a complete response), and is
 * ignored. Then the frame lets go of the response; `res` may be gone
 * after this.
 */
static void frame_returned(latch_res *res, latch_frame *f, int rc,
                           latch_site handler)
{
    if (rc == LATCH_NEXT) {
        latch__violation_prior(res, LATCH_ERR_NEXT_TWICE, "LATCH_NEXT",
                               "LATCH_NEXT returned after latch_next() "
                               "in one handler",
                               handler, &f->next);
    }
    /* A latch_fail after latch_next is its own misuse, reported as well
     * when the handler also returned LATCH_NEXT (fuzzer seed 816). */
    if (f->failed || rc < 0) {
        latch_site at = f->failed ? latch__res_marks(res)->err.at : handler;
        const char *call = f->failed ? "latch_fail" : "error return";
        if (!error_after_response(res, call, at))
            latch__violation_prior(res, LATCH_ERR_NEXT_TWICE, call,
                                   "an error was passed on after latch_next() "
                                   "in one handler",
                                   at, &f->next);
    }
    if (f->held)
        latch__res_unref(res);
}

/* Resuming the chain when it cannot be resumed (ERR_NEXT_TWICE), with
 * what resumed or ended it before as the report's prior site. */
static void next_twice(latch_res *res, const char *call, latch_site at)
{
    const struct latch_chainst *cs = latch__res_marks(res);
    const latch_seal *prior = NULL;
    const char *msg = NULL;

    if (res->frame != NULL && res->frame->continued) {
        prior = &res->frame->next;
        msg = "latch_next() called twice in one handler";
    } else if (cs->resumed.call != NULL) {
        prior = &cs->resumed;
    } else if (cs->returned.call != NULL) {
        prior = &cs->returned;
    }
    latch__violation_prior(res, LATCH_ERR_NEXT_TWICE, call, msg, at, prior);
}

/*
 * The next layer, from cs->layer on, that takes this request: a
 * middleware whose prefix matches or a route whose method and pattern do.
 * Only candidates are visited: the middleware chain and the routes the
 * tree matched (cold->rids, in id order). Fills the route's parameters.
 */
static latch_layer *next_layer(latch_res *res, const struct latch_chainst *cs,
                               const char *raw, size_t rawn)
{
    latch_app *app = res->w->app;
    latch_req *q = &res->req;
    latch_layer *l = cs->layer, *mw, *rt;

    if (res->rlinear) {
        /* More routes match this path than the request remembers. */
        while (l != NULL &&
               (l->kind == L_MIDDLEWARE
                    ? !prefix_match(l, q->path)
                    : (!method_match(l, q) || !route_match(l, q, raw, rawn))))
            l = l->next;
        return l;
    }
    while (l != NULL) {
        mw = l->kind == L_MIDDLEWARE ? l : l->next_mw;
        /* nrids > 0: the cold part holds them (dispatch) */
        while (res->ri < res->nrids && res->cold->rids[res->ri] < l->id)
            res->ri++;
        rt = res->ri < res->nrids ? app->by_id[res->cold->rids[res->ri]] : NULL;
        if (mw != NULL && (rt == NULL || mw->id < rt->id)) {
            if (prefix_match(mw, q->path))
                return mw;
            l = mw->next;
        } else if (rt != NULL) {
            res->ri++;
            if (method_match(rt, q) && route_match(rt, q, raw, rawn))
                return rt;
            l = rt->next;
        } else {
            return NULL;
        }
    }
    return NULL;
}

/* Runs layers from where the chain stands until one does not continue. */
static void run(latch_res *res)
{
    latch_app *app = res->w->app;
    latch_req *q = &res->req;
    /* Stays put while the chain runs (internal.h): the cold part is given
     * back only once the chain is done. */
    struct latch_chainst *cs = st(res);
    latch_frame f;
    const char *raw;
    size_t rawn;
    bool complete_before;
    int rc;

    if (cs == NULL) {
        /* Out of memory, with no record of where the chain stands (a
         * chain resumed after its response gave its cold part back):
         * the response is cut rather than answered from a guess. */
        latch_res_destroy_at(res, no_site);
        chain_done(res);
        return;
    }
    raw_path(q, &raw, &rawn);
    while (!res->detached) {
        if (res->in_error) {
            latch_errlayer *e = cs->elayer;
            if (e == NULL) {
                final_error(res);
                chain_done(res);
                return;
            }
            cs->elayer = e->next;
            /* Whether this error handler is the one that answers. */
            complete_before =
                res->state == LATCH_RS_ENDED || res->state == LATCH_RS_FINISHED;
            /* For its latch_next inside or after LATCH_PENDING (resume). */
            res->eh_complete = complete_before;
            frame_push(res, &f);
            rc = e->fn(&cs->err, latch__req_hf(res, f.id),
                       latch__res_hf(res, f.id), e->data);
            frame_pop(res, &f);
            cs->returned.call = rc == LATCH_NEXT      ? "LATCH_NEXT"
                                : rc == LATCH_PENDING ? "LATCH_PENDING"
                                                      : "LATCH_DONE";
            cs->returned.at = (latch_site){e->at.file, e->at.line,
                                           e->name ? e->name : "error handler"};
            if (!f.continued && !f.failed && rc != LATCH_PENDING)
                record_move(res, f.id, cs->returned.call, cs->returned.at);
            if (f.continued) {
                frame_returned(res, &f, rc, cs->returned.at);
                return;
            }
            if (f.failed) {
                /* latch_fail in an error handler: the new error goes on
                 * to the next error handler (Express's next(err2)); after
                 * a complete answer that is the handler that responds and
                 * forwards, reported with both places. */
                if (!complete_before)
                    error_after_response(res, "latch_fail", cs->err.at);
                continue;
            }
            if (rc == LATCH_NEXT) {
                /* Passing the error on after answering it in full. Not
                 * reported: delegating an error that someone else
                 * answered (Express's "if (res.headersSent) return
                 * next(err)"), or passing it on after headers only,
                 * which has the final handler cut the response. */
                if (!complete_before)
                    error_after_response(res, "LATCH_NEXT", cs->returned.at);
                continue;
            }
            if (rc == LATCH_PENDING) {
                /* An async error handler (Express's error middleware that
                 * awaits, then calls next(err)): its latch_next goes on
                 * to the next error handler, its latch_fail passes a new
                 * error on to it. */
                res->pending_next = true;
                res->pending_frame = f.id;
                return;
            }
            chain_done(res);
            return;
        }
        latch_layer *l = next_layer(res, cs, raw, rawn);
        if (l == NULL) {
            if (res->state == LATCH_RS_FRESH)
                final_not_found(res);
            chain_done(res);
            return;
        }
        cs->layer = l->next;
        frame_push(res, &f);
        rc = l->fn(latch__req_hf(res, f.id), latch__res_hf(res, f.id), l->data);
        frame_pop(res, &f);
        cs->returned.at = layer_site(l);
        cs->returned.call = rc == LATCH_NEXT      ? "LATCH_NEXT"
                            : rc == LATCH_DONE    ? "LATCH_DONE"
                            : rc == LATCH_PENDING ? "LATCH_PENDING"
                                                  : "error return";
        if (!f.continued && !f.failed && rc != LATCH_PENDING)
            record_move(res, f.id, cs->returned.call, cs->returned.at);
        if (f.continued) {
            /* The chain went on inside the handler's own latch_next. */
            frame_returned(res, &f, rc, layer_site(l));
            return;
        }
        if (f.failed) {
            /* latch_fail decided the outcome; a conflicting NEXT is the
             * classic "catch block that responds and forwards" bug. */
            if (rc == LATCH_NEXT) {
                latch_seal fail = {"latch_fail", cs->err.at};
                latch__violation_prior(
                    res, LATCH_ERR_NEXT_TWICE, "LATCH_NEXT",
                    "LATCH_NEXT returned after latch_fail() in one handler",
                    layer_site(l), &fail);
            }
            if (moved_after_claim(res, "latch_fail", CLAIMED_ERROR,
                                  cs->err.at)) {
                chain_done(res);
                return;
            }
            error_after_response(res, "latch_fail", cs->err.at);
            res->in_error = true;
            cs->elayer = app->errlayers;
            continue;
        }
        if (rc == LATCH_DONE) {
            chain_done(res);
            return;
        }
        if (rc == LATCH_PENDING) {
            res->pending_next = true;
            res->pending_frame = f.id;
            return; /* the framework's reference waits for latch_next */
        }
        if (rc == LATCH_NEXT) {
            if (res->state != LATCH_RS_FRESH) {
                latch__violation(res, LATCH_ERR_NEXT_AFTER_RESPONSE,
                                 "LATCH_NEXT", NULL, layer_site(l));
                chain_done(res);
                return;
            }
            if (moved_after_claim(res, "LATCH_NEXT", CLAIMED_NEXT,
                                  layer_site(l))) {
                chain_done(res);
                return;
            }
            continue;
        }
        /* A negative code: next(err). */
        if (moved_after_claim(res, "error return", CLAIMED_ERROR,
                              layer_site(l))) {
            chain_done(res);
            return;
        }
        set_error(res, cs, rc < 0 ? rc : LATCH_ERR_INVALID_ARG, layer_site(l));
        error_after_response(res, "error return", layer_site(l));
        cs->elayer = app->errlayers;
    }
    chain_done(res);
}

/* The chain is over: nobody can answer unless someone holds a reference. */
static void chain_done(latch_res *res)
{
    res->dispatched = LATCH_DISPATCH_DONE;
    chain_unreferenced(res);
    res->chain_ref = false;
    latch__res_unref(res);
}

/*
 * The response closed (finished, or cut) while a handler that returned
 * LATCH_PENDING has not resumed the chain: nobody needs the chain any
 * more, so its reference goes. A latch_next that comes later is reported
 * as ERR_NEXT_AFTER_RESPONSE (the caller must then hold its own reference,
 * as latch_work and latch_set_timeout do).
 */
static void chain_closed(latch_res *res)
{
    if (!res->pending_next || !res->chain_ref)
        return;
    res->pending_next = false;
    res->chain_dropped = true;
    res->dropped_frame = res->pending_frame;
    res->dispatched = LATCH_DISPATCH_DONE;
    res->chain_ref = false;
    latch__res_unref(res);
}

/*
 * A response the chain is done with, unanswered, that has no owner left:
 * it can never be answered, so report it and answer 500, or cut it when
 * its headers are already out. The report names the handler that ended
 * the chain.
 *
 * Owners are whatever can still answer: a user's reference, a pending
 * timer, latch_work job or join (each holds a reference), and a drain
 * callback waiting for the output to fall (the documented backpressure
 * pattern: write returned 0, on_drain registered, LATCH_DONE). Not owners:
 * the connection's queue and the finishing chain (references that answer
 * nothing), and the request timeout's own timer: a forgotten response gets
 * its 500 and report now, not the timeout's status later.
 */
static void chain_unreferenced(latch_res *res)
{
    const struct latch_chainst *cs;
    uint32_t mine = 1 + (res->chain_ref ? 1 : 0);
    const char *msg = NULL;
    char buf[200];

    if (res->detached || res->state >= LATCH_RS_ENDED || res->pending_next ||
        res->dispatched != LATCH_DISPATCH_DONE ||
        latch__res_has_cb(res, LATCH_CB_DRAIN))
        return;
    if (latch__async_request_timer_armed(res))
        mine++;
    if (res->refs != mine)
        return;
    cs = latch__res_marks(
        res); /* only now: every answered request passes above */
    if (cs->returned.call != NULL) {
        snprintf(
            buf, sizeof(buf), "%s returned %s and the response was never %s",
            cs->returned.at.func ? cs->returned.at.func : "a handler",
            cs->returned.call, res->state == LATCH_RS_FRESH ? "sent" : "ended");
        msg = buf;
    }
    latch__violation(res, LATCH_ERR_NO_RESPONSE,
                     cs->returned.call ? cs->returned.call : "handler", msg,
                     cs->returned.call ? cs->returned.at : no_site);
    /* A held head (write_head, then nothing) never went out: answer 500
     * rather than close on an empty reply. */
    latch__res_retract_head(res);
    if (res->state == LATCH_RS_FRESH) {
        latch__res_status_page(res, 500, "no response");
    } else {
        latch_res_destroy_at(res, no_site);
    }
}

/*
 * A feature's failure before the response's headers went out (a pipe's
 * producer): the error handlers answer it with `code` and `status`, as
 * after latch_fail. Inside a running handler that has not moved the chain
 * the handler's return is overridden, as latch_fail's is; a pending chain
 * is resumed at the error handlers; a chain that is over runs again from
 * the error handlers. The caller holds a reference.
 */
static void chain_raise(latch_res *res, int code, int status, const char *call,
                        latch_site at)
{
    latch_frame *f = res->frame;
    struct latch_chainst *cs = st(res);

    if (cs == NULL) {
        /* Out of memory (a long-lived response that gave its cold part
         * back): no error handler can be told, so the response is cut. */
        latch_res_destroy_at(res, no_site);
        return;
    }
    cs->err.code = code;
    cs->err.status = status;
    cs->err.message = NULL;
    cs->err.at = at;
    if (f != NULL && !f->continued && !f->failed) {
        record_move(res, f->id, call, at);
        f->failed = true;
        return;
    }
    res->in_error = true;
    cs->elayer = res->w->app->errlayers;
    if (f != NULL) {
        /* The running handler moved the chain already: answer now, with
         * no chain to run. */
        final_error(res);
        return;
    }
    if (res->pending_next) {
        res->pending_next = false;
        cs->resumed.call = call;
        cs->resumed.at = at;
        record_move(res, res->pending_frame, call, at);
        run(res);
        return;
    }
    res->dispatched = 1;
    res->refs++; /* the chain's reference, again */
    res->chain_ref = true;
    run(res);
}

/* The request timeout fired on a response that sent nothing: a handler
 * waiting (LATCH_PENDING) loses its turn (its late latch_next is
 * ERR_NEXT_AFTER_RESPONSE), and the error handlers run with
 * LATCH_ERR_CANCELLED and `status`; the final handler answers when none
 * does. The caller holds a reference. */
static void chain_timeout(latch_res *res, int status)
{
    struct latch_chainst *cs;

    if (res->frame != NULL)
        return; /* a handler runs: the loop cannot be in a timer now */
    if (res->pending_next && res->chain_ref) {
        /* The waiting handler's turn is over, as if the response had
         * closed (latch__app_res_closed); the chain's reference now
         * carries the error handlers. */
        res->pending_next = false;
        res->chain_dropped = true;
        res->dropped_frame = res->pending_frame;
    } else if (!res->chain_ref) {
        res->refs++; /* the chain's reference, again */
        res->chain_ref = true;
    }
    if ((cs = st(res)) == NULL) {
        /* Out of memory: no error handler can be told (chain_raise). */
        latch_res_destroy_at(res, no_site);
        return;
    }
    res->dispatched = LATCH_DISPATCH_RUNNING;
    cs->err.code = LATCH_ERR_CANCELLED;
    cs->err.status = status;
    cs->err.message = "Request timed out";
    cs->err.at = no_site;
    res->in_error = true;
    cs->elayer = res->w->app->errlayers;
    run(res);
}

/* Counted, logged and traced by metrics.c when the response closes. */
static void chain_observe(latch_res *res, bool finished)
{
    latch__ops_closed(res, finished);
}

/* The serve table's dispatch: the request timeout, then the chain. */
static void dispatch(latch_res *res)
{
    latch_app *app = res->w->app;
    /* The chain's state and the ids of the routes matching the path go
     * to the cold part (which the handlers' moves take anyway); out of
     * memory, the response is cut (below). */
    struct latch_res_cold *c = latch__res_cold(res);
    latch_rmatch m[LATCH_MAX_RIDS];
    const char *raw;
    size_t rawn;
    int n, i;

    if (app->cfg.request_ms > 0)
        latch__request_timer_start(res, app->cfg.request_ms,
                                   app->cfg.request_status);
    if (c != NULL)
        c->cs.layer = app->layers;
    res->ri = 0;
    res->nrids = 0;
    res->rlinear = app->router == NULL;
    if (app->router != NULL) {
        raw_path(&res->req, &raw, &rawn);
        n = c == NULL ? LATCH_MAX_RIDS + 1
                      : latch__router_match(app->router, raw, rawn, m,
                                            LATCH_MAX_RIDS);
        if (n > LATCH_MAX_RIDS) {
            res->rlinear = true;
        } else {
            for (i = 0; i < n; i++)
                c->rids[i] = m[i].id;
            res->nrids = (uint8_t)n;
        }
    }
    if (app->ops != 0) {
        /* Metrics, the access log or the trace: the response is observed
         * (latch__ops_closed when it closes). Off, this is the only cost. */
        res->t_start = uv_hrtime();
        if (app->ops & LATCH_OPS_TRACE)
            latch__trace(res, "dispatched", NULL, (latch_site){NULL, 0, NULL});
    }
    res->dispatched = LATCH_DISPATCH_RUNNING;
    res->owner = &chain_owner;
    res->refs++; /* the chain's reference */
    res->chain_ref = true;
    if (c == NULL) {
        /* Out of memory: no chain state, so no handler can run; the
         * response is cut (as run() does), never answered 404 by a chain
         * that a later cold part would start without its first layer. */
        latch_res_destroy_at(res, no_site);
        chain_done(res);
        return;
    }
    run(res);
}

/* latch_next or latch_fail resuming a pending chain: false (reported)
 * when there is nothing to resume. Used for calls no handler call can be
 * named for (a function posted from another thread). */
static bool take_pending(latch_res *res, const char *call, latch_site at)
{
    struct latch_chainst *cs;

    if (res->chain_dropped) {
        /* The response closed while this handler waited (a timeout, the
         * client leaving, another handler's answer). */
        res->chain_dropped = false;
        latch__violation(res, LATCH_ERR_NEXT_AFTER_RESPONSE, call, NULL, at);
        return false;
    }
    if (!res->pending_next) {
        /* Nothing waits. If no pending chain was ever resumed, the caller
         * is a handler that already returned and the response was sent
         * meanwhile: that is continuing after the answer. Otherwise the
         * chain is being resumed a second time. */
        if (latch__res_marks(res)->resumed.call == NULL &&
            res->state != LATCH_RS_FRESH)
            latch__violation(res, LATCH_ERR_NEXT_AFTER_RESPONSE, call, NULL,
                             at);
        else
            next_twice(res, call, at);
        return false;
    }
    res->pending_next = false;
    /* A pending chain keeps its cold part (st): never NULL here. */
    if ((cs = st(res)) != NULL)
        cs->resumed = (latch_seal){call, at};
    record_move(res, res->pending_frame, call, at);
    return true;
}

/*
 * A call from frame `id`, which is neither running nor pending: it moved
 * the chain already (or its pending chain was dropped). Refused and
 * reported with what it did before; nothing else is resumed.
 */
static void stray_move(latch_res *res, uint16_t id, const char *call,
                       latch_site at)
{
    const latch_seal *prior = move_of(res, id);

    if (id == res->dropped_frame && res->chain_dropped) {
        /* The response closed while this handler waited. */
        res->chain_dropped = false;
        latch__violation(res, LATCH_ERR_NEXT_AFTER_RESPONSE, call, NULL, at);
        record_move(res, id, call, at);
        return;
    }
    if (prior == NULL) {
        next_twice(res, call, at);
        return;
    }
    /* A handler that moved the chain by its return value and continues
     * after the answer was sent: continuing after the response. */
    if (res->state != LATCH_RS_FRESH && strncmp(prior->call, "LATCH_", 6) == 0)
        latch__violation(res, LATCH_ERR_NEXT_AFTER_RESPONSE, call, NULL, at);
    else
        latch__violation_prior(res, LATCH_ERR_NEXT_TWICE, call,
                               "the chain was already moved on by this "
                               "handler; a pending step of another handler "
                               "is resumed only by that handler",
                               at, prior);
}

/*
 * latch_next inside a running handler (Express's next()): the rest of the
 * chain runs now, inside this call; the frame holds the response until
 * the handler returns, whatever the rest of the chain does to it.
 */
/* latch_next moving the chain on: unless the response is already sealed
 * (then reported, and the chain ends), the next layers run now. */
static void resume(latch_res *res, latch_site at)
{
    if (res->in_error && !res->detached) {
        /* An error handler passing the error on (latch_next inside it, or
         * after its LATCH_PENDING): as its LATCH_NEXT would, whatever went
         * out already; reported only when it answered in full itself. */
        if (!res->eh_complete)
            error_after_response(res, "latch_next", at);
        run(res);
        return;
    }
    if (res->state != LATCH_RS_FRESH || res->detached) {
        if (!res->detached)
            latch__violation(res, LATCH_ERR_NEXT_AFTER_RESPONSE, "latch_next",
                             NULL, at);
        chain_done(res);
        return;
    }
    if (moved_after_claim(res, "latch_next", CLAIMED_NEXT, at)) {
        chain_done(res);
        return;
    }
    run(res);
}

static void continue_inside(latch_res *res, latch_frame *f, latch_site at)
{
    struct latch_chainst *cs;

    f->continued = true;
    f->held = true;
    f->next.call = "latch_next";
    f->next.at = at;
    /* A running handler's chain keeps its cold part (st): never NULL. */
    if ((cs = st(res)) != NULL)
        cs->resumed = f->next;
    record_move(res, f->id, "latch_next", at);
    res->refs++;
    resume(res, at);
}

/*
 * Who may move the chain: the handler call that latch_next/latch_fail acts
 * for (latch__res_acting_frame), and only once. A running handler that has
 * not moved it yet continues it inside (or fails); the handler that
 * returned LATCH_PENDING resumes it; any other call is refused and
 * reported (ERR_NEXT_TWICE with what that handler did before, or
 * ERR_NEXT_AFTER_RESPONSE). So a stray second next() of an earlier
 * middleware can never resume, and skip, a later one's pending step.
 * Returns 1 to continue inside the running frame *fp, 2 to resume the
 * pending chain, 0 when refused (reported).
 */
static int who_moves(latch_res *res, uint16_t hf, const char *call,
                     latch_site at, latch_frame **fp)
{
    uint16_t id = latch__frame_pick(hf, res);
    latch_frame *f;

    *fp = NULL;
    if (id == 0)
        return take_pending(res, call, at) ? 2 : 0;
    if ((f = running_frame(res, id)) != NULL) {
        if (!f->continued && !f->failed) {
            *fp = f;
            return 1;
        }
        /* The running handler moved the chain already. */
        *fp = f;
        return -1;
    }
    if (res->pending_next && res->pending_frame == id)
        return take_pending(res, call, at) ? 2 : 0;
    stray_move(res, id, call, at);
    return 0;
}

void latch_next_at(latch_req *req, latch_site at)
{
    uint16_t hf = latch__frame_of(req); /* the handler call it was given to */
    if (req != NULL &&
        (req = (latch_req *)latch__res_in(req, "latch_next", &at)) == NULL)
        return;
    latch_res *res = latch_req_res(req);
    latch_frame *f;
    int how;

    if (res == NULL)
        return;
    if (!pthread_equal(pthread_self(), res->w->thread)) {
        latch__violation(res, LATCH_ERR_WRONG_THREAD, "latch_next", NULL, at);
        return;
    }
    how = who_moves(res, hf, "latch_next", at, &f);
    if (how == 1)
        continue_inside(res, f, at);
    else if (how == 2)
        resume(res, at);
    else if (how < 0 && f->continued)
        next_twice(res, "latch_next", at);
    else if (how < 0)
        latch__violation_prior(res, LATCH_ERR_NEXT_TWICE, "latch_next",
                               "latch_next() after latch_fail() in one handler",
                               at, move_of(res, f->id));
}

int latch_fail_at(latch_req *req, int status, const char *message,
                  latch_site at)
{
    uint16_t hf = latch__frame_of(req);
    if (req != NULL &&
        (req = (latch_req *)latch__res_in(req, "latch_fail", &at)) == NULL)
        return LATCH_ERR_STREAM_DESTROYED;
    latch_res *res = latch_req_res(req);
    struct latch_res_cold *c;
    latch_frame *f;
    int how;

    if (res == NULL)
        return LATCH_ERR_INVALID_ARG;
    if (!pthread_equal(pthread_self(), res->w->thread)) {
        latch__violation(res, LATCH_ERR_WRONG_THREAD, "latch_fail", NULL, at);
        return LATCH_ERR_WRONG_THREAD;
    }
    how = who_moves(res, hf, "latch_fail", at, &f);
    if (how == 0)
        return LATCH_ERR_HTTP;
    if (how < 0 && f->failed) {
        latch__violation_prior(res, LATCH_ERR_NEXT_TWICE, "latch_fail",
                               "latch_fail() twice in one handler", at,
                               move_of(res, f->id));
        return LATCH_ERR_HTTP;
    }
    if (status < 400 || status > 599)
        status = 500;
    /* A running or pending chain keeps its cold part (st). */
    if ((c = latch__res_cold(res)) == NULL) {
        latch_res_destroy_at(res, no_site);
        return LATCH_ERR_HTTP;
    }
    c->cs.err.code = LATCH_ERR_HTTP;
    c->cs.err.status = status;
    c->cs.err.at = at;
    if (message != NULL) {
        /* An error handler passing its own error's message on gives the
         * buffer this copy writes: copied through the stack. */
        char msg[sizeof(c->err_msg)];

        snprintf(msg, sizeof(msg), "%s", message);
        memcpy(c->err_msg, msg, strlen(msg) + 1);
        c->cs.err.message = c->err_msg;
    } else {
        /* No message: the status's reason. */
        c->cs.err.message = NULL;
    }
    if (f != NULL) {
        /* After latch_next in the same handler, reported when it returns
         * (frame_returned); the chain is not moved again. */
        if (!f->continued)
            record_move(res, f->id, "latch_fail", at);
        f->failed = true;
        return LATCH_ERR_HTTP;
    }
    if (moved_after_claim(res, "latch_fail", CLAIMED_ERROR, at)) {
        chain_done(res);
        return LATCH_ERR_HTTP;
    }
    error_after_response(res, "latch_fail", at);
    /* From a pending error handler the new error goes on to the next
     * error handler, as latch_fail inside one does; else to the first. */
    if (!res->in_error)
        c->cs.elayer = res->w->app->errlayers;
    res->in_error = true;
    run(res);
    return LATCH_ERR_HTTP;
}

/* What the protocol calls to serve a request (internal.h), installed by
 * latch_run. */
/*
 * A request streams its body when a middleware that streams (a
 * latch_use_proxy) has a prefix that matches its path, whatever comes
 * before that middleware: the body cannot wait for the chain to get
 * there. Apps without a proxy pay one test.
 */
static bool body_streams(const latch_app *app, const latch_req *q)
{
    if (!app->streams)
        return false;
    for (const latch_layer *l = app->layers; l != NULL; l = l->next)
        if (l->streams && l->kind == L_MIDDLEWARE && prefix_match(l, q->path))
            return true;
    return false;
}

const latch_serve_ops latch__chain_serve = {
    .body_limit = body_limit,
    .dispatch = dispatch,
    .body_streams = body_streams,
};
