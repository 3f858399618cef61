/*
 * send.c - the senders: the calls that answer in one stroke, Express's
 * res.send, res.json, res.sendStatus, res.redirect and res.type, and the
 * response's streaming JSON writer (latch_res_json_begin, latch_json_*,
 * latch_res_json_end). Each one checks the state through res.c's gate,
 * sets the Content-Type and Content-Length it knows in the header store
 * (headers.c) and ends the response through res.c (latch__res_end), so
 * the whole body is framed by its length.
 *
 * Not here: the state machine and the framing (res.c), the framework's
 * own answers (pages.c).
 */
#include "filemeta.h"
#include "res_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* latch_res_json_begin's writer: the document's size and depth
 * (latch.h). */
#define JSON_MAX_BYTES ((size_t)16 << 20)
#define JSON_MAX_DEPTH 64
#define REDIRECT_URL_MAX 2048 /* an encoded Location, NUL included */

/* The Express-style senders share this: FRESH only, then one end(). The
 * Content-Type comes from latch itself (a valid constant) or NULL. */
static int send_as(latch_res *res, const char *ctype, const void *body,
                   size_t len, const char *call, latch_site at)
{
    int r = latch__res_gate(res, LATCH_K_SEND, call, "set", at);

    if (r != 0)
        return r;
    if (body == NULL && len > 0)
        return latch__res_refuse(res, LATCH_ERR_INVALID_ARG, call,
                                 "May not send null values", at);
    /* Express's res.send, which RFC 9110 backs: a 204 or 304 has no
     * content and says nothing of its framing or type; a 205 has no
     * content either, and says so with Content-Length: 0 (§15.3.6), so a
     * client that does not know 205 still finds its end. */
    if (res->status == 204 || res->status == 304 || res->status == 205) {
        latch__res_drop_header(res, "Content-Type", 12);
        latch__res_drop_header(res, "Content-Length", 14);
        latch__res_drop_header(res, "Transfer-Encoding", 17);
        body = "";
        len = 0;
        if (res->status != 205)
            return latch__res_end(res, body, len, call, at);
        ctype = NULL;
    }
    /* The whole body is known: its length frames it, not chunked (a
     * user's Transfer-Encoding is left out of the head, build_head). */
    /* Express sets Content-Length as a header: it keeps its place before
     * Date, and a HEAD response carries it too. */
    if ((r = latch__res_put_type_length(res, ctype, len)) < 0)
        return r;
    res->sending = true;
    r = latch__res_end(res, body, len, call, at);
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

    if (res != NULL && latch__res_on_loop(res) &&
        res->state == LATCH_RS_FRESH &&
        latch_res_get_header(res, "Content-Type") == NULL)
        ct = "text/html; charset=utf-8";
    return send_as(res, ct, body, len, "latch_res_send", at);
}

int latch__res_send_check(latch_res *res, const char *call, latch_site at)
{
    return latch__res_gate(res, LATCH_K_SEND, call, "set", at);
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
    if (res != NULL && latch__res_on_loop(res) &&
        res->state == LATCH_RS_FRESH &&
        latch_res_get_header(res, "Content-Type") != NULL)
        ct = NULL;
    return send_as(res, ct, json, strlen(json), "latch_res_json", at);
}

latch_json *latch_res_json_begin_at(latch_res *res, latch_site at)
{
    if (res != NULL &&
        (res = latch__res_in(res, "latch_res_json_begin", &at)) == NULL)
        return NULL;
    int r =
        latch__res_gate(res, LATCH_K_SEND, "latch_res_json_begin", "set", at);
    struct latch_res_cold *c;

    if (r != 0)
        return NULL;
    if (res->json_open) {
        latch__res_refuse(res, LATCH_ERR_STATE, "latch_res_json_begin",
                          "A JSON writer is already open on this response", at);
        return NULL;
    }
    /* The writer lives in the response's cold part. */
    if ((c = latch__res_cold(res)) == NULL)
        return NULL; /* out of memory */
    c->jbuf.len = 0;
    latch__json_init(&c->json, &c->jbuf, JSON_MAX_BYTES, JSON_MAX_DEPTH);
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
static int json_check(latch_json **jp, const char *call, latch_site at)
{
    latch_json *j = *jp;
    latch_res *res;

    if (j == NULL)
        return LATCH_ERR_INVALID_ARG;
    if ((uintptr_t)j & 1) {
        res = latch__res_in(j, call, &at);
        if (res == NULL)
            return LATCH_ERR_STREAM_DESTROYED;
    } else {
        res = LATCH_CONTAINER_OF(j, struct latch_res_cold, json)->res;
    }
    if (!latch__res_on_loop(res))
        return latch__res_refuse(res, LATCH_ERR_WRONG_THREAD, call, NULL, at);
    if (!res->json_open)
        return latch__res_refuse(
            res, LATCH_ERR_STATE, call,
            "The JSON writer is closed (latch_res_json_end)", at);
    *jp = &res->cold->json; /* json_open: the cold part holds it */
    return 0;
}

int latch_json_object_begin_at(latch_json *j, latch_site at)
{
    int r = json_check(&j, "latch_json_object_begin", at);

    return r != 0 ? r : latch__json_object_begin(j);
}

int latch_json_object_begin(latch_json *j)
{
    return latch_json_object_begin_at(j, latch__no_site);
}

int latch_json_object_end_at(latch_json *j, latch_site at)
{
    int r = json_check(&j, "latch_json_object_end", at);

    return r != 0 ? r : latch__json_object_end(j);
}

int latch_json_object_end(latch_json *j)
{
    return latch_json_object_end_at(j, latch__no_site);
}

int latch_json_array_begin_at(latch_json *j, latch_site at)
{
    int r = json_check(&j, "latch_json_array_begin", at);

    return r != 0 ? r : latch__json_array_begin(j);
}

int latch_json_array_begin(latch_json *j)
{
    return latch_json_array_begin_at(j, latch__no_site);
}

int latch_json_array_end_at(latch_json *j, latch_site at)
{
    int r = json_check(&j, "latch_json_array_end", at);

    return r != 0 ? r : latch__json_array_end(j);
}

int latch_json_array_end(latch_json *j)
{
    return latch_json_array_end_at(j, latch__no_site);
}

int latch_json_key_at(latch_json *j, const char *key, latch_site at)
{
    int r = json_check(&j, "latch_json_key", at);

    return r != 0 ? r : latch__json_key(j, key);
}

int latch_json_key(latch_json *j, const char *key)
{
    return latch_json_key_at(j, key, latch__no_site);
}

int latch_json_string_at(latch_json *j, const char *s, latch_site at)
{
    int r = json_check(&j, "latch_json_string", at);

    return r != 0 ? r : latch__json_string(j, s);
}

int latch_json_string(latch_json *j, const char *s)
{
    return latch_json_string_at(j, s, latch__no_site);
}

int latch_json_string_n_at(latch_json *j, const char *s, size_t n,
                           latch_site at)
{
    int r = json_check(&j, "latch_json_string_n", at);

    return r != 0 ? r : latch__json_string_n(j, s, n);
}

int latch_json_string_n(latch_json *j, const char *s, size_t n)
{
    return latch_json_string_n_at(j, s, n, latch__no_site);
}

int latch_json_int_at(latch_json *j, int64_t v, latch_site at)
{
    int r = json_check(&j, "latch_json_int", at);

    return r != 0 ? r : latch__json_int64(j, v);
}

int latch_json_int(latch_json *j, int64_t v)
{
    return latch_json_int_at(j, v, latch__no_site);
}

int latch_json_uint_at(latch_json *j, uint64_t v, latch_site at)
{
    int r = json_check(&j, "latch_json_uint", at);

    return r != 0 ? r : latch__json_uint64(j, v);
}

int latch_json_uint(latch_json *j, uint64_t v)
{
    return latch_json_uint_at(j, v, latch__no_site);
}

int latch_json_double_at(latch_json *j, double v, latch_site at)
{
    int r = json_check(&j, "latch_json_double", at);

    return r != 0 ? r : latch__json_double(j, v);
}

int latch_json_double(latch_json *j, double v)
{
    return latch_json_double_at(j, v, latch__no_site);
}

int latch_json_bool_at(latch_json *j, bool v, latch_site at)
{
    int r = json_check(&j, "latch_json_bool", at);

    return r != 0 ? r : latch__json_bool(j, v);
}

int latch_json_bool(latch_json *j, bool v)
{
    return latch_json_bool_at(j, v, latch__no_site);
}

int latch_json_null_at(latch_json *j, latch_site at)
{
    int r = json_check(&j, "latch_json_null", at);

    return r != 0 ? r : latch__json_null(j);
}

int latch_json_null(latch_json *j)
{
    return latch_json_null_at(j, latch__no_site);
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
    if (!latch__res_on_loop(res))
        return latch__res_refuse(res, LATCH_ERR_WRONG_THREAD,
                                 "latch_res_json_end", NULL, at);
    if (!res->json_open)
        return latch__res_refuse(res, LATCH_ERR_STATE, "latch_res_json_end",
                                 "No JSON writer is open on this response", at);
    res->json_open = false;
    r = latch__json_finish(&res->cold->json);
    if (r < 0) {
        /* A broken document is never sent as if it were whole: the
         * writer's error is reported here, where the document ended. */
        latch__res_refuse(
            res, r, "latch_res_json_end",
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
    return send_as(res, ct, res->cold->jbuf.data, res->cold->jbuf.len,
                   "latch_res_json_end", at);
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
        if ((r = latch__res_gate(res, LATCH_K_HEADER, "latch_res_type", "set",
                                 at)) != 0)
            return r;
        return latch__res_refuse(res, LATCH_ERR_INVALID_ARG, "latch_res_type",
                                 "The type is NULL or empty", at);
    }
    if (strchr(type, '/') != NULL) {
        /* A MIME type: text types get the charset, as Express does. */
        if (strncmp(type, "text/", 5) == 0 && strchr(type, ';') == NULL &&
            strlen(type) < sizeof(buf) - 16) {
            snprintf(buf, sizeof(buf), "%s; charset=utf-8", type);
            type = buf;
        }
        return latch__res_header_op(res, "Content-Type", type, false,
                                    "latch_res_type", at);
    }
    /* A short name or an extension: filemeta.c's table, the one that
     * file bodies get their type from too. */
    if ((known = latch__mime_by_name(type)) != NULL)
        return latch__res_header_op(res, "Content-Type", known, false,
                                    "latch_res_type", at);
    if ((r = latch__res_gate(res, LATCH_K_HEADER, "latch_res_type", "set",
                             at)) != 0)
        return r;
    return latch__res_refuse(res, LATCH_ERR_INVALID_ARG, "latch_res_type",
                             "Unknown type name", at);
}

int latch_res_send_status_at(latch_res *res, int status, latch_site at)
{
    if (res != NULL &&
        (res = latch__res_in(res, "latch_res_send_status", &at)) == NULL)
        return LATCH_ERR_STREAM_DESTROYED;
    const char *reason;
    int r =
        latch__res_gate(res, LATCH_K_SEND, "latch_res_send_status", "set", at);
    char msg[64];

    if (r != 0)
        return r;
    if (!latch__res_final_status(status))
        return latch__res_bad_status(res, status, "latch_res_send_status", at);
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
    int r = latch__res_gate(res, LATCH_K_SEND, "latch_res_redirect", "set", at);
    int n = 0, qt, qh;
    size_t ll, rl;

    if (r != 0)
        return r;
    if (status == 0)
        status = 302;
    if (status < 300 || status > 399 || url == NULL)
        return latch__res_refuse(res, LATCH_ERR_INVALID_ARG,
                                 "latch_res_redirect",
                                 "A redirect needs a 3xx status and a URL", at);
    if (encode_url(loc, sizeof(loc), url) < 0)
        return latch__res_refuse(res, LATCH_ERR_INVALID_ARG,
                                 "latch_res_redirect", "URL too long", at);
    if ((r = latch__res_header_op(res, "Location", loc, false,
                                  "latch_res_redirect", at)) < 0 ||
        (r = latch__res_put_header(res, "Vary", 4, "Accept", 6, false)) < 0)
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

/* An error on the response: the owner's error handlers answer it (the
 * chain), or, with no owner, a plain status as latch_res_send_status. */
void latch__res_raise(latch_res *res, int code, int status, const char *call,
                      latch_site at)
{
    if (res->owner != NULL)
        res->owner->raise(res, code, status, call, at);
    else if (res->state == LATCH_RS_FRESH)
        latch_res_send_status_at(res, status, at);
}

/* The request timeout fired: the owner's error handlers answer it, or,
 * with no owner, a plain status. */
void latch__res_timed_out(latch_res *res, int status)
{
    if (res->owner != NULL)
        res->owner->timeout(res, status);
    else if (res->state == LATCH_RS_FRESH)
        latch_res_send_status_at(res, status, (latch_site){NULL, 0, NULL});
}
