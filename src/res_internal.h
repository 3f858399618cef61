/*
 * res_internal.h - what the response's own files share: res.c (the state
 * machine, the head's framing, the ends of life), headers.c (the header
 * store), send.c (the senders: send, json, type, redirect, send_status)
 * and pages.c (the framework's answers). Not for any other module: they
 * call the public latch_res_* functions and internal.h's latch__res_*.
 *
 * Everything here runs on the response's loop thread, on a response the
 * caller holds (a handle already checked by latch__res_in).
 */
#ifndef LATCH_RES_INTERNAL_H
#define LATCH_RES_INTERNAL_H

#include "internal.h"

#include <pthread.h>
#include <string.h>

/* What kind of call asks the gate (latch__res_gate). */
enum latch_res_call {
    LATCH_K_HEADER, /* set/append/remove header */
    LATCH_K_HEAD,   /* write_head, flush_headers: the head goes out */
    LATCH_K_STATUS,
    LATCH_K_WRITE,
    LATCH_K_END_DATA,
    LATCH_K_END_EMPTY,
    LATCH_K_SEND, /* send, json, redirect, send_status */
};

/* Whether the caller runs on the response's loop thread. */
static inline bool latch__res_on_loop(const latch_res *res)
{
    return pthread_equal(pthread_self(), res->w->thread);
}

/* Reports a refused call (the place of the call, and what sealed the
 * response) and returns `code`, the caller's return value. */
static inline int latch__res_refuse(latch_res *res, int code, const char *call,
                                    const char *msg, latch_site at)
{
    latch__violation(res, code, call, msg, at);
    return code;
}

/*
 * res.c: may a call of `kind` run in the response's state? 0 when it may;
 * 1 for the silent no-op of end() on an ended response (LATCH_K_END_EMPTY
 * only); else the error, reported: LATCH_ERR_INVALID_ARG (res NULL, not
 * reported), LATCH_ERR_WRONG_THREAD, LATCH_ERR_STREAM_DESTROYED,
 * LATCH_ERR_STREAM_WRITE_AFTER_END or LATCH_ERR_HTTP_HEADERS_SENT. `call`
 * names the public call, `verb` what it does to headers ("set", ...).
 */
int latch__res_gate(latch_res *res, int kind, const char *call,
                    const char *verb, latch_site at);

/*
 * A status the response can end with: 200..999 (Node takes 100..999). A
 * 1xx is informational: sent as the answer, the client would wait for the
 * final response that never comes, and the connection would be out of
 * step. latch sends 100 Continue itself; it has no other interim answer.
 */
static inline bool latch__res_final_status(int s)
{
    return s >= 200 && s <= 999;
}

/* res.c: reports `status` (not final) as refused for `call` and returns
 * LATCH_ERR_HTTP_INVALID_STATUS_CODE. */
int latch__res_bad_status(latch_res *res, int status, const char *call,
                          latch_site at);

/*
 * res.c: end() once the gate let it through: builds the head when the
 * response is FRESH (its length from `len`), frames and appends the last
 * body bytes, moves to ENDED and tells the protocol. Returns 0, or an
 * error (reported where it is the user's: a Content-Length mismatch, an
 * output past LATCH_LIMIT_OUTPUT, which destroys the response; NOMEM is
 * not reported and leaves the state as it was).
 */
int latch__res_end(latch_res *res, const void *data, size_t len,
                   const char *call, latch_site at);

/* ASCII case-insensitive comparison of `n` bytes (header names). */
static inline bool latch__res_ieq(const char *a, const char *b, size_t n)
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

/* headers.c: the index of the first live line named `name` (`nlen`
 * bytes, any case), or -1. */
int latch__res_find_header(const latch_res *res, const char *name, size_t nlen);

/* headers.c: sets (replacing every line of the name, at the first one's
 * place) or appends a header already known to be valid; no gate, no
 * report. Returns 0, LATCH_ERR_NOMEM or LATCH_ERR_LIMIT (64 KiB of
 * header text, 1024 lines); on error the store is as it was, but a
 * value's bytes may stay unused in hbuf. */
int latch__res_put_header(latch_res *res, const char *name, size_t nlen,
                          const char *value, size_t vlen, bool append);

/* A body known whole (send's and the framework's answers): its type (NULL:
 * none set here) and its length as headers, in that order. 0 or the error
 * of latch__res_put_header. */
static inline int latch__res_put_type_length(latch_res *res, const char *ctype,
                                             uint64_t len)
{
    char num[24];
    int r;

    if (ctype != NULL &&
        (r = latch__res_put_header(res, "Content-Type", 12, ctype,
                                   strlen(ctype), false)) < 0)
        return r;
    return latch__res_put_header(res, "Content-Length", 14, num,
                                 (size_t)(latch__put_u64(num, len) - num),
                                 false);
}

/* headers.c: removes every line of a header (latch's own decision, not
 * reported). */
void latch__res_drop_header(latch_res *res, const char *name, size_t nlen);

/* headers.c: latch_res_set_header / _append_header behind the handle
 * check: the gate, the name and value checked, the framing headers
 * checked (latch owns the framing); each refusal reported for `call`. */
int latch__res_header_op(latch_res *res, const char *name, const char *value,
                         bool append, const char *call, latch_site at);

/*
 * res.c, for pages.c's answer to the request timeout (latch__res_timeout):
 * timeout_seal takes back a held head and marks what the error handlers
 * sealed as the timeout's; returns whether the response is FRESH (nobody
 * answered). timeout_cut destroys a response whose head went out (too
 * late for a status) and cuts it on the wire; it does nothing in another
 * state. cancel fires the request's cancellation signal once (the
 * attachments' end, then latch_req_on_cancel's callbacks; nothing on a
 * FINISHED response).
 */
bool latch__res_timeout_seal(latch_res *res);
void latch__res_timeout_cut(latch_res *res);
void latch__res_cancel(latch_res *res, int reason);

#endif
