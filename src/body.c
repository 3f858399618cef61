/*
 * body.c - body middleware: latch_json_body parses a JSON request body
 * (application/json or +json) for latch_req_json, and answers a body that
 * does not parse with 400 through the error handlers (latch_fail). It is
 * middleware, so it sits beside the chain and above the request view.
 */
#include "internal.h"

#include <jansson.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

/* application/json, or a structured type ending in +json. */
static bool is_json_type(const char *ct)
{
    const char *semi;
    size_t n;

    if (ct == NULL)
        return false;
    semi = strchr(ct, ';');
    n = semi ? (size_t)(semi - ct) : strlen(ct);
    while (n > 0 && (ct[n - 1] == ' ' || ct[n - 1] == '\t'))
        n--;
    return (n == 16 && strncasecmp(ct, "application/json", 16) == 0) ||
           (n > 5 && strncasecmp(ct + n - 5, "+json", 5) == 0);
}

int latch_json_body(latch_req *req, latch_res *res, void *data)
{
    if (req != NULL && (req = (latch_req *)latch__res_in(
                            req, "latch_json_body", &latch__no_site)) == NULL)
        return LATCH_ERR_STREAM_DESTROYED;
    if (res != NULL &&
        (res = latch__res_in(res, "latch_json_body", &latch__no_site)) == NULL)
        return LATCH_ERR_STREAM_DESTROYED;
    json_error_t err;
    char msg[300];

    (void)res;
    (void)data;
    if (req == NULL || req->json != NULL || req->body.len == 0 ||
        !is_json_type(latch_req_header(req, "Content-Type")))
        return LATCH_NEXT;
    req->json = json_loadb(req->body.data, req->body.len,
                           JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &err);
    if (req->json == NULL) {
        snprintf(msg, sizeof(msg), "Invalid JSON at line %d, column %d: %s",
                 err.line, err.column, err.text);
        return latch_fail(req, 400, msg);
    }
    return LATCH_NEXT;
}
