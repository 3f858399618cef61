/*
 * pages.c - the framework's error pages: what the final handler answers
 * for a request no layer answered (404, 405 with Allow) or an error no
 * error handler took (the error's status), in HTML or, when the client
 * prefers it, JSON, with the security headers Express sends. The plain
 * status pages the core answers on its own (a protocol error, the request
 * timeout, a precondition) are res.c's latch__res_status_page.
 */
#include "internal.h"

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
