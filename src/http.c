/*
 * http.c - HTTP vocabulary shared by the modules above it: status reason
 * phrases, Accept q-values, and HTML escaping.
 *
 * Pure functions of their arguments: no state, no I/O, no allocation, and
 * no name of any other latch module (a leaf). It is not a parser (parser.c
 * reads requests) and not a serializer (res.c writes heads).
 */
#include "http.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

const char *latch__http_reason(int s)
{
    switch (s) {
    case 100: return "Continue";
    case 101: return "Switching Protocols";
    case 102: return "Processing";
    case 103: return "Early Hints";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 203: return "Non-Authoritative Information";
    case 204: return "No Content";
    case 205: return "Reset Content";
    case 207: return "Multi-Status";
    case 208: return "Already Reported";
    case 226: return "IM Used";
    case 206: return "Partial Content";
    case 300: return "Multiple Choices";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 303: return "See Other";
    case 304: return "Not Modified";
    case 305: return "Use Proxy";
    case 307: return "Temporary Redirect";
    case 308: return "Permanent Redirect";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 402: return "Payment Required";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 406: return "Not Acceptable";
    case 407: return "Proxy Authentication Required";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 410: return "Gone";
    case 411: return "Length Required";
    case 412: return "Precondition Failed";
    case 413: return "Payload Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 416: return "Range Not Satisfiable";
    case 417: return "Expectation Failed";
    case 418: return "I'm a Teapot";
    case 421: return "Misdirected Request";
    case 422: return "Unprocessable Entity";
    case 423: return "Locked";
    case 424: return "Failed Dependency";
    case 425: return "Too Early";
    case 426: return "Upgrade Required";
    case 428: return "Precondition Required";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 451: return "Unavailable For Legal Reasons";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    case 506: return "Variant Also Negotiates";
    case 507: return "Insufficient Storage";
    case 508: return "Loop Detected";
    case 509: return "Bandwidth Limit Exceeded";
    case 510: return "Not Extended";
    case 511: return "Network Authentication Required";
    default: return "unknown";
    }
}

/* The q-value the Accept header gives `type` ("text/html"), from an exact
 * match, then "text/ *", then "* / *"; 1000 when there is no Accept. */
int latch__http_accept_q(const char *accept, const char *type)
{
    const char *p = accept, *slash = strchr(type, '/');
    int best = -1, best_spec = -1;

    if (accept == NULL || *accept == '\0')
        return 1000;
    while (*p) {
        const char *e = p, *semi;
        size_t n;
        int spec = -1, q = 1000;
        while (*e && *e != ',')
            e++;
        while (p < e && (*p == ' ' || *p == '\t'))
            p++;
        semi = memchr(p, ';', (size_t)(e - p));
        n = (size_t)((semi ? semi : e) - p);
        while (n > 0 && (p[n - 1] == ' ' || p[n - 1] == '\t'))
            n--;
        if (n == strlen(type) && strncasecmp(p, type, n) == 0)
            spec = 2;
        else if (n == (size_t)(slash - type) + 2 &&
                 strncasecmp(p, type, (size_t)(slash - type) + 1) == 0 &&
                 p[n - 1] == '*')
            spec = 1;
        else if (n == 3 && strncmp(p, "*/*", 3) == 0)
            spec = 0;
        if (semi != NULL) {
            const char *qp = strstr(semi, "q=");
            if (qp != NULL && qp < e) {
                double d = strtod(qp + 2, NULL);
                q = d <= 0 ? 0 : d >= 1 ? 1000 : (int)(d * 1000 + 0.5);
            }
        }
        if (spec > best_spec) {
            best_spec = spec;
            best = q;
        }
        p = *e ? e + 1 : e;
    }
    return best < 0 ? 0 : best;
}

/* Appends s to the buffer, escaped for HTML text, "\n" as "<br>". */
size_t latch__http_html_escape(char *out, size_t cap, const char *s)
{
    size_t n = 0;

    for (; *s && n + 8 < cap; s++) {
        const char *rep = NULL;
        switch (*s) {
        case '&': rep = "&amp;"; break;
        case '<': rep = "&lt;"; break;
        case '>': rep = "&gt;"; break;
        case '"': rep = "&quot;"; break;
        case '\'': rep = "&#39;"; break;
        case '\n': rep = "<br>"; break;
        }
        if (rep != NULL) {
            size_t k = strlen(rep);
            memcpy(out + n, rep, k);
            n += k;
        } else {
            out[n++] = *s;
        }
    }
    out[n] = '\0';
    return n;
}

size_t latch__http_json_escape(char *out, size_t cap, const char *s)
{
    size_t n = 0;

    for (; *s && n + 8 < cap; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            out[n++] = '\\';
            out[n++] = (char)c;
        } else if (c < 0x20) {
            n += (size_t)snprintf(out + n, cap - n, "\\u%04x", c);
        } else {
            out[n++] = (char)c;
        }
    }
    out[n] = '\0';
    return n;
}
