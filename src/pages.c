/*
 * pages.c - the framework's error pages: what the final handler answers
 * for a request no layer answered (404, 405 with Allow) or an error no
 * error handler took (the error's status), in HTML or, when the client
 * prefers it, JSON, with the security headers Express sends; and the
 * plain status pages latch answers on its own (a protocol error, the
 * request timeout, a precondition, a handler that answered nothing).
 */
#include "res_internal.h"

#include <stdio.h>

/*
 * Answers an error page: status, the security headers Express sends, and
 * a small body in HTML (the default) or JSON when the client prefers it.
 * Headers the handlers set are dropped first, so they do not leak into
 * the error page. `extra` names one more header (Allow) or is NULL.
 */
void latch__pages_error(latch_res *res, int status, const char *msg,
                        const char *extra_name, const char *extra_value,
                        const char *event)
{
    static const char head[] = "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n"
                               "<meta charset=\"utf-8\">\n<title>Error</title>"
                               "\n</head>\n<body>\n<pre>";
    static const char tail[] = "</pre>\n</body>\n</html>\n";
    const char *accept = latch_req_header(&res->req, "Accept");
    char esc[1024], body[1400];
    int n;

    /* Only a response with nothing sent gets a page (latch__res_simple
     * says so too): a sent head's store, which may be a block shared by
     * other responses (latch__res_trim), is never touched. */
    if (res->state != LATCH_RS_FRESH)
        return;
    res->nhdrs = 0;
    res->hbuf.len = 0;
    latch__res_header(res, "Content-Security-Policy", "default-src 'none'");
    latch__res_header(res, "X-Content-Type-Options", "nosniff");
    if (extra_name != NULL)
        latch__res_header(res, extra_name, extra_value);
    if (latch__http_accept_q(accept, "application/json") >
        latch__http_accept_q(accept, "text/html")) {
        latch__http_json_escape(esc, sizeof(esc), msg);
        n = snprintf(body, sizeof(body),
                     "{\"error\":{\"status\":%d,\"message\":\"%s\"}}\n", status,
                     esc);
        latch__res_simple(res, status, "application/json; charset=utf-8", body,
                          (size_t)n, event);
        return;
    }
    latch__http_html_escape(esc, sizeof(esc), msg);
    n = snprintf(body, sizeof(body), "%s%s%s", head, esc, tail);
    latch__res_simple(res, status, "text/html; charset=utf-8", body, (size_t)n,
                      event);
}

/* A framework answer with a known body: FRESH only (else
 * LATCH_ERR_STATE), the status, the type and the length as headers, then
 * the end, sealed by `event`. */
int latch__res_simple(latch_res *res, int status, const char *ctype,
                      const char *body, size_t len, const char *event)
{
    latch_site none = {NULL, 0, NULL};
    int r;

    if (res->state != LATCH_RS_FRESH)
        return LATCH_ERR_STATE;
    res->status = status;
    if ((r = latch__res_put_type_length(res, ctype, len)) < 0)
        return r;
    return latch__res_end(res, body, len, event, none);
}

/* A framework answer: the status, its text as a text/plain body, and no
 * header the handler may have set (they must not leak into it). */
int latch__res_status_page(latch_res *res, int status, const char *event)
{
    char body[160];
    int n = snprintf(body, sizeof(body), "%s\n", latch__http_reason(status));

    if (res->state != LATCH_RS_FRESH)
        return LATCH_ERR_STATE;
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

/*
 * The request timeout, after its error handlers ran
 * (latch__res_timeout_begin, latch__res_timed_out): what is still
 * unanswered gets the status page, a response whose head went out is cut,
 * and the request's cancellation signal fires.
 */
void latch__res_timeout(latch_res *res, int status)
{
    latch__res_ref(res); /* answering may finish and release it */
    if (latch__res_timeout_seal(res)) {
        /* Nobody answered (an error handler returned without it). */
        latch__res_status_page(res, status, "request timeout");
    } else {
        latch__res_timeout_cut(res);
    }
    latch__res_cancel(res, LATCH_CANCEL_TIMEOUT);
    latch__res_unref(res);
}
