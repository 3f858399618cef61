/*
 * stream.c - pipes: a producer attached to a response, pulled with
 * backpressure, told exactly once how it ended (latch.h, latch_res_pipe).
 *
 * A pipe is an attachment of the response (internal.h, latch_attach): its
 * drain op pulls the producer when the output fell below the high-water
 * mark, its end op calls done exactly once (finished, destroyed or
 * cancelled), its recycle op frees it. The producer writes through the
 * ordinary latch_res_write / latch_res_end, so everything it does late is
 * refused by the response's own state machine; this file adds no second
 * one. It is not a byte source: file.c and the proxy are producers on top.
 */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct latch_pipe {
    latch_attach a;
    latch_res *res; /* latch's own pointer; the pipe holds a reference */
    latch_pull_cb pull;
    latch_done_cb done;
    void *data;
    uint16_t frame;   /* the handler call that made it: its callbacks' */
    bool over;        /* done ran (or is running) */
    bool failed;      /* latch_res_pipe_fail was called */
    bool failed_head; /* ... before the headers: error handlers answer */
    bool yielded;     /* lent to its producer's hook: latch__pipe_yield */
    int error;        /* and with what */
    latch_seal claim; /* the call that gave the response to this pipe */
    latch_seal fail;  /* the latch_res_pipe_fail call */
} latch_pipe;

static void pipe_end(latch_attach *a, latch_res *res, int reason);
static void pipe_recycle(latch_attach *a, latch_res *res);
static void pipe_drain(latch_attach *a, latch_res *res);
static const latch_seal *pipe_claim(const latch_attach *a);
static const latch_attach_ops pipe_ops = {pipe_end, pipe_recycle, pipe_drain,
                                          pipe_claim};

static latch_pipe *pipe_of(const latch_res *res)
{
    latch_attach *a = latch__res_attached(res, &pipe_ops);

    return a != NULL ? LATCH_CONTAINER_OF(a, latch_pipe, a) : NULL;
}

static bool on_loop(const latch_res *res)
{
    return pthread_equal(pthread_self(), res->w->thread);
}

static int refuse(latch_res *res, int code, const char *call, const char *msg,
                  latch_site at)
{
    latch__violation(res, code, call, msg, at);
    return code;
}

/* The refusal for a call on a response that is over: its state's error. */
static int refuse_over(latch_res *res, const char *call, latch_site at)
{
    /* A finished response that left its connection ended: as a write. */
    if (res->state == LATCH_RS_DESTROYED ||
        (res->detached && res->state < LATCH_RS_ENDED))
        return refuse(res, LATCH_ERR_STREAM_DESTROYED, call,
                      "The response was destroyed: the pipe is over", at);
    return refuse(res, LATCH_ERR_STREAM_WRITE_AFTER_END, call,
                  "The response has ended: the pipe is over", at);
}

int latch_res_pipe_at(latch_res *res, latch_pull_cb pull, latch_done_cb done,
                      void *data, latch_site at)
{
    return latch__res_pipe_named(res, pull, done, data, "latch_res_pipe", at);
}

int latch__res_pipe_named(latch_res *res, latch_pull_cb pull,
                          latch_done_cb done, void *data, const char *call,
                          latch_site at)
{
    uint16_t hf = latch__frame_of(res);
    if (res != NULL && (res = latch__res_in(res, call, &at)) == NULL)
        return LATCH_ERR_STREAM_DESTROYED;
    latch_pipe *p;

    if (res == NULL)
        return LATCH_ERR_INVALID_ARG;
    if (!on_loop(res))
        return refuse(res, LATCH_ERR_WRONG_THREAD, call, NULL, at);
    if (pull == NULL)
        return refuse(res, LATCH_ERR_INVALID_ARG, call,
                      "The pull callback is NULL", at);
    if (res->state >= LATCH_RS_ENDED || res->detached ||
        latch__res_attach_done(res))
        return refuse_over(res, call, at);
    /* One producer at a time: after a failure, an error handler may send
     * its own page through a new one (a sendfile of 500.html). The
     * report names the first producer's call: nothing else sealed the
     * response yet. */
    if ((p = pipe_of(res)) != NULL && !p->failed && !p->yielded) {
        latch__violation_sealed(
            res, LATCH_ERR_STATE, call,
            "The response already has a pipe (one per response)", at, NULL,
            &p->claim);
        return LATCH_ERR_STATE;
    }
    if ((p = calloc(1, sizeof(*p))) == NULL)
        return LATCH_ERR_NOMEM;
    p->a.ops = &pipe_ops;
    p->res = res;
    p->pull = pull;
    p->done = done;
    p->data = data;
    p->frame = latch__frame_pick(hf, res);
    p->claim.call = call;
    p->claim.at = at;
    latch__res_ref(res); /* until done returned */
    latch__res_attach(res, &p->a);
    /* A whole answer beside it (latch_res_send ...) is refused; the
     * producer's own writes are not (file.c and the proxy go further:
     * latch__pipe_make_sole). */
    if (res->sole == LATCH_SOLE_NONE)
        res->sole = LATCH_SOLE_PIPE;
    if (LATCH_TRACING())
        latch__trace(res, "pipe start", call, at);
    /* The first pull: at the next flush, once this response may write. */
    latch__res_want_drain(res);
    return 0;
}

/* The response's live producer, if one is attached and has neither
 * failed nor ended: the call that attached it. The chain refuses to move
 * on from a response that is being answered this way. */
static const latch_seal *pipe_claim(const latch_attach *a)
{
    const latch_pipe *p = LATCH_CONTAINER_OF(a, latch_pipe, a);

    return !p->over && !p->failed && !p->yielded ? &p->claim : NULL;
}

const latch_seal *latch__pipe_claim(const latch_res *res)
{
    const latch_pipe *p = pipe_of(res);

    return p != NULL ? pipe_claim(&p->a) : NULL;
}

void latch__pipe_make_sole(latch_res *res)
{
    if (latch__pipe_claim(res) != NULL)
        res->sole = LATCH_SOLE_HELD;
}

void latch__pipe_yield(latch_res *res, const void *data, bool yield)
{
    latch_attach *a;

    for (a = res->attach; a != NULL; a = a->next) {
        latch_pipe *p = LATCH_CONTAINER_OF(a, latch_pipe, a);

        if (a->ops == &pipe_ops && p->data == data)
            p->yielded = yield;
    }
}

/* A seal the producer's own body call just made is the producer's: later
 * reports name `call` (latch_res_sendfile), not the latch_res_end it made. */
static void own_seal(latch_res *res, int which, const char *made,
                     const char *call, latch_site at)
{
    latch_seal s = latch__res_seal(res, which);

    if (s.call != NULL && strcmp(s.call, made) == 0 && s.at.line == at.line &&
        s.at.file == at.file)
        latch__res_seal_set(res, which, call, at);
}

int latch__pipe_own_write(latch_res *res, const void *data, size_t len,
                          const char *call, latch_site at)
{
    int r;

    latch__res_ref(res); /* the write may end the pipe and its reference */
    latch__sole_enter(res);
    r = latch_res_write_at(res, data, len, at);
    latch__sole_leave(res);
    own_seal(res, LATCH_SEAL_HEADERS, "latch_res_write", call, at);
    latch__res_unref(res);
    return r;
}

int latch__pipe_own_end(latch_res *res, const void *data, size_t len,
                        const char *call, latch_site at)
{
    int r;

    latch__res_ref(res);
    latch__sole_enter(res);
    r = latch_res_end_at(res, data, len, at);
    latch__sole_leave(res);
    own_seal(res, LATCH_SEAL_HEADERS, "latch_res_end", call, at);
    own_seal(res, LATCH_SEAL_ENDED, "latch_res_end", call, at);
    latch__res_unref(res);
    return r;
}

/* The output drained (or the first turn came): the producer writes on. */
static void pipe_drain(latch_attach *a, latch_res *res)
{
    latch_pipe *p = LATCH_CONTAINER_OF(a, latch_pipe, a);
    uint16_t prev;

    if (p->over || p->failed || p->yielded || res->state >= LATCH_RS_ENDED ||
        res->detached)
        return;
    prev = latch__frame_enter(res, p->frame);
    /* Inside pull the producer may answer whole (latch_res_send). */
    if (res->sole == LATCH_SOLE_PIPE)
        res->sole = LATCH_SOLE_PULLING;
    p->pull(latch__res_hf(res, p->frame), p->data);
    if (res->sole == LATCH_SOLE_PULLING)
        res->sole = LATCH_SOLE_PIPE;
    latch__frame_leave(res, prev);
}

/* How the pipe ended, from how the response ended. */
static int pipe_status(const latch_pipe *p, const latch_res *res, int reason)
{
    if (p->failed)
        return p->error;
    if (reason != LATCH_CANCEL_NONE)
        return LATCH_ERR_CANCELLED;
    if (res->state == LATCH_RS_FINISHED)
        return 0;
    if (res->cut_code != 0)
        return res->cut_code;
    return res->cancel_reason != LATCH_CANCEL_NONE ? LATCH_ERR_CANCELLED
                                                   : LATCH_ERR_STREAM_DESTROYED;
}

/* The response finished, was destroyed, or its request was cancelled:
 * done, once. The pipe's reference goes after done returned. */
static void pipe_end(latch_attach *a, latch_res *res, int reason)
{
    latch_pipe *p = LATCH_CONTAINER_OF(a, latch_pipe, a);
    int status;

    if (p->over)
        return;
    p->over = true;
    res->sole = LATCH_SOLE_NONE;
    status = pipe_status(p, res, reason);
    /* The error handlers answered a failure after latch_res_pipe_fail
     * returned (it was called inside a handler): later reports name the
     * failure, not the error page it caused, as when they answered at
     * once. */
    if (p->failed_head && res->ended_call != NULL)
        latch__res_seal_set(res, LATCH_SEAL_ENDED, p->fail.call, p->fail.at);
    if (LATCH_TRACING()) {
        char event[64];
        snprintf(event, sizeof(event), "pipe done (%s)",
                 latch_err_name(status));
        latch__trace(res, event, NULL, (latch_site){NULL, 0, NULL});
    }
    if (p->done != NULL) {
        uint16_t prev = latch__frame_enter(res, p->frame);
        p->done(latch__res_hf(res, p->frame), status, p->data);
        latch__frame_leave(res, prev);
    }
    latch__res_unref(res);
}

static void pipe_recycle(latch_attach *a, latch_res *res)
{
    (void)res;
    free(LATCH_CONTAINER_OF(a, latch_pipe, a));
}

/* err->status for a producer's error, as send and serve-static map them. */
static int fail_status(int error)
{
    switch (error) {
    case UV_ENOENT:
    case UV_ENOTDIR:
    case UV_EISDIR:
    case LATCH_ERR_NOT_FOUND: return 404;
    case UV_EACCES:
    case UV_EPERM: return 403;
    /* A producer that is a client of another server (the proxy): that
     * server failed (502), or did not answer in time (504). */
    case LATCH_ERR_UPSTREAM:
    case UV_ECONNREFUSED:
    case UV_ECONNRESET:
    case UV_ECONNABORTED:
    case UV_EHOSTUNREACH:
    case UV_ENETUNREACH:
    case UV_EPIPE:
    case UV_EOF: return 502;
    case UV_ETIMEDOUT: return 504;
    default:
        /* The resolver's UV_EAI_* (-3000 .. -3014): a name that fails. */
        return error >= UV_EAI_PROTOCOL && error <= UV_EAI_ADDRFAMILY ? 502
                                                                      : 500;
    }
}

int latch_res_pipe_fail_at(latch_res *res, int error, latch_site at)
{
    if (res != NULL &&
        (res = latch__res_in(res, "latch_res_pipe_fail", &at)) == NULL)
        return LATCH_ERR_STREAM_DESTROYED;
    latch_pipe *p;

    if (res == NULL)
        return LATCH_ERR_INVALID_ARG;
    if (!on_loop(res))
        return refuse(res, LATCH_ERR_WRONG_THREAD, "latch_res_pipe_fail", NULL,
                      at);
    if (error >= 0)
        return refuse(res, LATCH_ERR_INVALID_ARG, "latch_res_pipe_fail",
                      "The error must be a negative code", at);
    if ((p = pipe_of(res)) == NULL)
        return refuse(res, LATCH_ERR_STATE, "latch_res_pipe_fail",
                      "The response has no pipe", at);
    if (p->failed && !p->over && res->state < LATCH_RS_ENDED &&
        !res->detached) {
        /* Failed once already; its error handlers have not answered yet:
         * that first call is what sealed the response. */
        latch__violation_sealed(
            res, LATCH_ERR_STREAM_WRITE_AFTER_END, "latch_res_pipe_fail",
            "The pipe already failed: the pipe is over", at, NULL, &p->fail);
        return LATCH_ERR_STREAM_WRITE_AFTER_END;
    }
    if (p->over || p->failed || res->state >= LATCH_RS_ENDED || res->detached)
        return refuse_over(res, "latch_res_pipe_fail", at);
    p->failed = true;
    p->error = error;
    p->fail.call = "latch_res_pipe_fail";
    p->fail.at = at;
    res->sole = LATCH_SOLE_NONE; /* the error handlers answer now */
    latch__res_ref(res);         /* answering may finish and release it */
    latch__res_retract_head(res);
    if (res->state == LATCH_RS_FRESH) {
        /* Nothing went out: the error handlers answer. */
        p->failed_head = true;
        latch__res_raise(res, error, fail_status(error), "latch_res_pipe_fail",
                         at);
        /* Later reports name the failure, not the error page it caused. */
        if (res->state >= LATCH_RS_ENDED)
            latch__res_seal_set(res, LATCH_SEAL_ENDED, "latch_res_pipe_fail",
                                at);
    } else {
        /* Headers are out: truncated, never complete-looking. */
        if (res->ended_call == NULL)
            latch__res_seal_set(res, LATCH_SEAL_ENDED, "latch_res_pipe_fail",
                                at);
        latch_res_destroy_at(res, at);
    }
    latch__res_unref(res);
    return 0;
}
