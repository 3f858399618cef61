/*
 * wire.c - the wire checker: re-parses what the server wrote on one
 * connection and says whether it is a sequence of well-formed HTTP/1.1
 * responses, strictly (CRLF only, a valid status line, valid fields,
 * framing that agrees with the headers and the request method).
 */
#include "harness.h"

#include <ctype.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

static bool ieq_n(const char *a, const char *b, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++)
        if (tolower((unsigned char)a[i]) != tolower((unsigned char)b[i]))
            return false;
    return true;
}

static const char *find_crlf(const char *p, const char *end)
{
    for (; p + 1 < end; p++)
        if (p[0] == '\r' && p[1] == '\n')
            return p;
    return NULL;
}

void th_resp_free(th_resp *r, int n)
{
    int i;

    for (i = 0; i < n; i++) {
        free(r[i].body);
        r[i].body = NULL;
    }
}

/* Parses one response at *pp; returns 1 done, 0 incomplete, -1 bad. */
static int parse_one(const char **pp, const char *end, const char *method,
                     th_resp *r, const char **err)
{
    const char *p = *pp, *eol, *line;
    long long cl = -1;
    bool chunked = false, conn_close = false;
    size_t hl = 0, cap = 0;
    int status;

    memset(r, 0, sizeof(*r));
    eol = find_crlf(p, end);
    if (eol == NULL)
        return 0;
    if (eol - p < 12 || memcmp(p, "HTTP/1.1 ", 9) != 0 ||
        !isdigit((unsigned char)p[9]) || !isdigit((unsigned char)p[10]) ||
        !isdigit((unsigned char)p[11]) || (eol - p > 12 && p[12] != ' ')) {
        *err = "bad status line";
        return -1;
    }
    status = (p[9] - '0') * 100 + (p[10] - '0') * 10 + (p[11] - '0');
    r->status = status;
    hl = (size_t)(eol - p) + 2;
    if (hl >= sizeof(r->head)) {
        *err = "status line too long";
        return -1;
    }
    memcpy(r->head, p, hl);
    p = eol + 2;
    for (;;) {
        const char *colon;
        eol = find_crlf(p, end);
        if (eol == NULL)
            return 0;
        line = p;
        p = eol + 2;
        if (eol == line)
            break;
        colon = memchr(line, ':', (size_t)(eol - line));
        if (colon == NULL || colon == line) {
            *err = "bad header line";
            return -1;
        }
        for (const char *c = line; c < colon; c++)
            if (!isgraph((unsigned char)*c)) {
                *err = "bad header name";
                return -1;
            }
        for (const char *c = colon + 1; c < eol; c++)
            if ((unsigned char)*c < 0x20 && *c != '\t') {
                *err = "control byte in header value";
                return -1;
            }
        {
            size_t nlen = (size_t)(colon - line);
            const char *v = colon + 1;
            while (v < eol && (*v == ' ' || *v == '\t'))
                v++;
            char tmp[4096];
            int n;
            if (nlen == 4 && ieq_n(line, "date", 4))
                n = snprintf(tmp, sizeof(tmp), "%.*s: <d>\r\n", (int)nlen,
                             line);
            else
                n = snprintf(tmp, sizeof(tmp), "%.*s\r\n", (int)(eol - line),
                             line);
            if (n < 0 || hl + (size_t)n >= sizeof(r->head)) {
                *err = "head too long";
                return -1;
            }
            memcpy(r->head + hl, tmp, (size_t)n);
            hl += (size_t)n;
            if (nlen == 14 && ieq_n(line, "content-length", 14)) {
                char *e;
                if (cl >= 0) {
                    *err = "two Content-Length";
                    return -1;
                }
                cl = strtoll(v, &e, 10);
                if (e == v || cl < 0) {
                    *err = "bad Content-Length";
                    return -1;
                }
            } else if (nlen == 17 && ieq_n(line, "transfer-encoding", 17)) {
                chunked =
                    (size_t)(eol - v) >= 7 && ieq_n(eol - 7, "chunked", 7);
            } else if (nlen == 10 && ieq_n(line, "connection", 10)) {
                conn_close = (size_t)(eol - v) == 5 && ieq_n(v, "close", 5);
            }
        }
    }
    r->head[hl] = '\0';
    if (cl >= 0 && chunked) {
        *err = "both Content-Length and chunked";
        return -1;
    }
    if ((method && strcmp(method, "HEAD") == 0) || status < 200 ||
        status == 204 || status == 304) {
        r->body = calloc(1, 1);
        *pp = p;
        return 1;
    }
    if (chunked) {
        r->chunked = true;
        r->body = malloc(1);
        for (;;) {
            char *e;
            unsigned long long sz;
            eol = find_crlf(p, end);
            if (eol == NULL)
                goto incomplete;
            if (!isxdigit((unsigned char)*p)) {
                *err = "bad chunk size";
                goto bad;
            }
            sz = strtoull(p, &e, 16);
            if (e != eol) {
                *err = "bad chunk size line";
                goto bad;
            }
            p = eol + 2;
            if (sz == 0) {
                eol = find_crlf(p, end);
                if (eol == NULL)
                    goto incomplete;
                if (eol != p) {
                    *err = "trailers not expected";
                    goto bad;
                }
                p = eol + 2;
                break;
            }
            if ((size_t)(end - p) < sz + 2)
                goto incomplete;
            if (p[sz] != '\r' || p[sz + 1] != '\n') {
                *err = "chunk not followed by CRLF";
                goto bad;
            }
            if (r->body_len + sz + 1 > cap) {
                cap = (r->body_len + sz + 1) * 2;
                r->body = realloc(r->body, cap);
            }
            memcpy(r->body + r->body_len, p, sz);
            r->body_len += sz;
            p += sz + 2;
        }
        r->body[r->body_len] = '\0';
        *pp = p;
        return 1;
    }
    if (cl >= 0) {
        if ((long long)(end - p) < cl)
            return 0;
        r->body = malloc((size_t)cl + 1);
        memcpy(r->body, p, (size_t)cl);
        r->body[cl] = '\0';
        r->body_len = (size_t)cl;
        *pp = p + cl;
        return 1;
    }
    /* No framing: the body runs to the connection's close. */
    if (!conn_close) {
        *err = "no framing and no Connection: close";
        return -1;
    }
    r->close_delimited = true;
    r->body_len = (size_t)(end - p);
    r->body = malloc(r->body_len + 1);
    memcpy(r->body, p, r->body_len);
    r->body[r->body_len] = '\0';
    *pp = end;
    return 1;
incomplete:
    free(r->body);
    r->body = NULL;
    return 0;
bad:
    free(r->body);
    r->body = NULL;
    return -1;
}

int th_wire_parse(const char *buf, size_t len, const char **methods,
                  th_resp *out, int max, bool complete, const char **err)
{
    const char *p = buf, *end = buf + len;
    int n = 0, r;

    *err = NULL;
    while (p < end && n < max) {
        r = parse_one(&p, end, methods ? methods[n] : NULL, &out[n], err);
        if (r < 0) {
            th_resp_free(out, n);
            return -1;
        }
        if (r == 0) {
            if (complete) {
                *err = "incomplete response";
                th_resp_free(out, n);
                return -1;
            }
            break;
        }
        n++;
    }
    if (complete && p != end && n == max) {
        *err = "bytes after the last expected response";
        th_resp_free(out, n);
        return -1;
    }
    return n;
}

th_resp *th_expect_responses(const char *buf, size_t len, int n,
                             const char **methods)
{
    th_resp *r = calloc((size_t)n + 1, sizeof(*r));
    const char *err = NULL;
    int got;

    assert_non_null(r);
    got = th_wire_parse(buf, len, methods, r, n, true, &err);
    if (got != n)
        fail_msg("wire: expected %d response(s), got %d (%s) in:\n%.*s", n, got,
                 err ? err : "fewer", (int)(len > 2000 ? 2000 : len), buf);
    return r;
}

char *th_normalize(const char *buf, size_t len)
{
    char *out = malloc(len + 1), *o = out;
    const char *p = buf, *end = buf + len;

    assert_non_null(out);
    while (p < end) {
        if ((p == buf || p[-1] == '\n') && (size_t)(end - p) > 6 &&
            ieq_n(p, "date: ", 6)) {
            const char *e = find_crlf(p, end);
            memcpy(o, "Date: <d>", 9);
            o += 9;
            p = e ? e : end;
            continue;
        }
        *o++ = *p++;
    }
    *o = '\0';
    return out;
}
