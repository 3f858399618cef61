/*
 * headers.c - the response's header store: the lines a handler sets,
 * appends, removes and reads before the head goes out (latch_res_set_header
 * and its siblings, latch_res_status), checked as they come in (a token
 * name, no CR/LF or control byte in a value, and no framing header that
 * would make the response one a client cannot delimit), kept in the
 * response's hbuf as "name\0value\0" with an index of lines.
 *
 * Not here: the head's bytes and the framing decision (res.c's
 * build_head, which reads this store), the senders that set Content-Type
 * and Content-Length on their way (send.c).
 */
#include "res_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define HDR_LIMIT ((size_t)64 * 1024)

static const unsigned char tchar[256] = {
    ['!'] = 1, ['#'] = 1, ['$'] = 1, ['%'] = 1, ['&'] = 1, ['\''] = 1,
    ['*'] = 1, ['+'] = 1, ['-'] = 1, ['.'] = 1, ['^'] = 1, ['_'] = 1,
    ['`'] = 1, ['|'] = 1, ['~'] = 1, ['0'] = 1, ['1'] = 1, ['2'] = 1,
    ['3'] = 1, ['4'] = 1, ['5'] = 1, ['6'] = 1, ['7'] = 1, ['8'] = 1,
    ['9'] = 1, ['A'] = 1, ['B'] = 1, ['C'] = 1, ['D'] = 1, ['E'] = 1,
    ['F'] = 1, ['G'] = 1, ['H'] = 1, ['I'] = 1, ['J'] = 1, ['K'] = 1,
    ['L'] = 1, ['M'] = 1, ['N'] = 1, ['O'] = 1, ['P'] = 1, ['Q'] = 1,
    ['R'] = 1, ['S'] = 1, ['T'] = 1, ['U'] = 1, ['V'] = 1, ['W'] = 1,
    ['X'] = 1, ['Y'] = 1, ['Z'] = 1, ['a'] = 1, ['b'] = 1, ['c'] = 1,
    ['d'] = 1, ['e'] = 1, ['f'] = 1, ['g'] = 1, ['h'] = 1, ['i'] = 1,
    ['j'] = 1, ['k'] = 1, ['l'] = 1, ['m'] = 1, ['n'] = 1, ['o'] = 1,
    ['p'] = 1, ['q'] = 1, ['r'] = 1, ['s'] = 1, ['t'] = 1, ['u'] = 1,
    ['v'] = 1, ['w'] = 1, ['x'] = 1, ['y'] = 1, ['z'] = 1,
};

/* The length of a token name, or -1 when it is empty or not a token. */
static long name_len(const char *s)
{
    const char *p = s;

    if (s == NULL || *s == '\0')
        return -1;
    while (tchar[(unsigned char)*p])
        p++;
    return *p == '\0' ? p - s : -1;
}

/* The length of a value, or -1 when it has a CR, LF (response splitting)
 * or another control byte but HTAB. */
static long value_len(const char *s)
{
    const unsigned char *p = (const unsigned char *)s;

    if (s == NULL)
        return -1;
    for (;; p++) {
        if (*p >= 0x20 && *p != 0x7f)
            continue;
        if (*p == '\t')
            continue;
        break;
    }
    return *p == '\0' ? (const char *)p - s : -1;
}

int latch__res_find_header(const latch_res *res, const char *name, size_t nlen)
{
    uint32_t i;

    for (i = 0; i < res->nhdrs; i++) {
        const latch_hdr *h = &res->hdrs[i];
        if (!h->removed && h->name_len == nlen &&
            latch__res_ieq(res->hbuf.data + h->name_off, name, nlen))
            return (int)i;
    }
    return -1;
}

/* Stores "value\0" (and "name\0" for a new entry) in hbuf. */
static int store_str(latch_res *res, const char *s, size_t n, uint32_t *off)
{
    int r = latch__buf_reserve(&res->hbuf, n + 1, HDR_LIMIT);

    if (r < 0)
        return r;
    *off = (uint32_t)res->hbuf.len;
    memcpy(res->hbuf.data + res->hbuf.len, s, n);
    res->hbuf.data[res->hbuf.len + n] = '\0';
    res->hbuf.len += n + 1;
    return 0;
}

/* Inserts a header entry at index `pos` (nhdrs: at the end). */
static int add_hdr(latch_res *res, uint32_t pos, const char *name, size_t nlen,
                   const char *value, size_t vlen)
{
    latch_hdr h;
    int r;

    if (res->nhdrs == res->hdrs_cap) {
        uint32_t cap = res->hdrs_cap ? res->hdrs_cap * 2 : 8;
        latch_hdr *p;
        if (cap > 1024)
            return LATCH_ERR_LIMIT;
        p = realloc(res->hdrs, cap * sizeof(*p));
        if (p == NULL)
            return LATCH_ERR_NOMEM;
        res->hdrs = p;
        res->hdrs_cap = cap;
    }
    memset(&h, 0, sizeof(h));
    if ((r = store_str(res, name, nlen, &h.name_off)) < 0 ||
        (r = store_str(res, value, vlen, &h.value_off)) < 0)
        return r;
    h.name_len = (uint16_t)nlen;
    h.value_len = (uint32_t)vlen;
    memmove(&res->hdrs[pos + 1], &res->hdrs[pos],
            (res->nhdrs - pos) * sizeof(h));
    res->hdrs[pos] = h;
    res->nhdrs++;
    return 0;
}

/* Header changes the framing logic must know about. */
static bool is_cl(const char *name, size_t n)
{
    return n == 14 && latch__res_ieq(name, "content-length", 14);
}

/* A Content-Length a client can hold: decimal digits only, at most
 * 2^63 - 1. Clients read it into a signed 64-bit integer (curl, Go) and
 * refuse a larger one as malformed (RFC 9110 8.6 warns of the overflow):
 * "99999999999999999999" would be a response no client can frame. */
static bool cl_valid(const char *s)
{
    uint64_t v = 0;

    if (*s == '\0')
        return false;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            return false;
        if (v > ((uint64_t)INT64_MAX - (uint64_t)(*s - '0')) / 10)
            return false;
        v = v * 10 + (uint64_t)(*s - '0');
    }
    return true;
}

/* Sets or appends a header already known to be valid. */
int latch__res_put_header(latch_res *res, const char *name, size_t nlen,
                          const char *value, size_t vlen, bool append)
{
    uint32_t pos;
    int r, i;

    /* A packed store is read-only, and may be shared (latch__res_trim). */
    if (res->hdrs_packed)
        return LATCH_ERR_STATE;
    if (!append && (i = latch__res_find_header(res, name, nlen)) >= 0) {
        /* Replace in place: Node keeps the first position of a name. */
        latch_hdr *h = &res->hdrs[i];
        uint32_t j;
        r = store_str(res, value, vlen, &h->value_off);
        if (r < 0)
            return r;
        h->value_len = (uint32_t)vlen;
        for (j = (uint32_t)i + 1; j < res->nhdrs; j++)
            if (!res->hdrs[j].removed && res->hdrs[j].name_len == nlen &&
                latch__res_ieq(res->hbuf.data + res->hdrs[j].name_off, name,
                               nlen))
                res->hdrs[j].removed = 1;
        return 0;
    }
    /* Node keeps every value of a name together, at the name's first
     * place: an appended line goes right after the last one of its name. */
    pos = res->nhdrs;
    if (append) {
        uint32_t j;
        for (j = res->nhdrs; j-- > 0;)
            if (!res->hdrs[j].removed && res->hdrs[j].name_len == nlen &&
                latch__res_ieq(res->hbuf.data + res->hdrs[j].name_off, name,
                               nlen)) {
                pos = j + 1;
                break;
            }
    }
    return add_hdr(res, pos, name, nlen, value, vlen);
}

static bool is_te(const char *name, size_t n)
{
    return n == 17 && latch__res_ieq(name, "transfer-encoding", 17);
}

/* value is one token, compared case-insensitively, with optional
 * whitespace around it. */
static bool is_only_token(const char *v, const char *tok)
{
    size_t n = strlen(tok);

    while (*v == ' ' || *v == '\t')
        v++;
    if (strncasecmp(v, tok, n) != 0)
        return false;
    for (v += n; *v == ' ' || *v == '\t'; v++)
        ;
    return *v == '\0';
}

/*
 * latch owns the framing: a header the handler sets may not make the
 * response one that a client cannot delimit. Returns NULL when the header
 * is fine, else why it is refused. Refused: a Transfer-Encoding other than
 * "chunked" (latch applies no other coding; "gzip" copied from an upstream
 * would announce a coding the body does not have), a second
 * Transfer-Encoding or Content-Length line, Content-Length together with
 * Transfer-Encoding (RFC 9112 §6.2: a sender must not), and a
 * Content-Length that is not a decimal number or is past 2^63 - 1.
 */
static const char *framing_check(latch_res *res, const char *name, size_t n,
                                 const char *value, bool append)
{
    if (is_cl(name, n)) {
        if (!cl_valid(value))
            return "Content-Length must be a decimal number up to "
                   "9223372036854775807";
        if (append && latch__res_find_header(res, name, n) >= 0)
            return "A second Content-Length would make the body's end "
                   "ambiguous";
        if (latch__res_find_header(res, "Transfer-Encoding", 17) >= 0)
            return "Content-Length may not be sent with Transfer-Encoding";
        return NULL;
    }
    if (!is_te(name, n))
        return NULL;
    if (!is_only_token(value, "chunked"))
        return "latch frames the body: Transfer-Encoding may only be "
               "\"chunked\"";
    if (append && latch__res_find_header(res, name, n) >= 0)
        return "Transfer-Encoding is already set";
    if (latch__res_find_header(res, "Content-Length", 14) >= 0)
        return "Transfer-Encoding may not be sent with Content-Length";
    return NULL;
}

int latch__res_header_op(latch_res *res, const char *name, const char *value,
                         bool append, const char *call, latch_site at)
{
    const char *r_why;
    long nlen, vlen;
    int r;

    r = latch__res_gate(res, LATCH_K_HEADER, call, append ? "append" : "set",
                        at);
    if (r != 0)
        return r;
    if (name == NULL || value == NULL)
        return latch__res_refuse(res, LATCH_ERR_INVALID_ARG, call,
                                 "Invalid header: NULL name or value", at);
    nlen = name_len(name);
    if (nlen < 0)
        return latch__res_refuse(res, LATCH_ERR_INVALID_CHAR, call,
                                 "Header name must be a valid HTTP token", at);
    vlen = value_len(value);
    if (vlen < 0)
        return latch__res_refuse(res, LATCH_ERR_INVALID_CHAR, call,
                                 "Invalid character in header content", at);
    if (nlen > 1024 || vlen > 65536)
        return latch__res_refuse(res, LATCH_ERR_INVALID_ARG, call,
                                 "Header too long", at);
    if ((r_why = framing_check(res, name, (size_t)nlen, value, append)) != NULL)
        return latch__res_refuse(res, LATCH_ERR_INVALID_ARG, call, r_why, at);
    return latch__res_put_header(res, name, (size_t)nlen, value, (size_t)vlen,
                                 append);
}

int latch_res_set_header_at(latch_res *res, const char *name, const char *value,
                            latch_site at)
{
    if (res != NULL &&
        (res = latch__res_in(res, "latch_res_set_header", &at)) == NULL)
        return LATCH_ERR_STREAM_DESTROYED;
    return latch__res_header_op(res, name, value, false, "latch_res_set_header",
                                at);
}

int latch_res_append_header_at(latch_res *res, const char *name,
                               const char *value, latch_site at)
{
    if (res != NULL &&
        (res = latch__res_in(res, "latch_res_append_header", &at)) == NULL)
        return LATCH_ERR_STREAM_DESTROYED;
    return latch__res_header_op(res, name, value, true,
                                "latch_res_append_header", at);
}

int latch_res_remove_header_at(latch_res *res, const char *name, latch_site at)
{
    if (res != NULL &&
        (res = latch__res_in(res, "latch_res_remove_header", &at)) == NULL)
        return LATCH_ERR_STREAM_DESTROYED;
    size_t nlen;
    int r, i;

    r = latch__res_gate(res, LATCH_K_HEADER, "latch_res_remove_header",
                        "remove", at);
    if (r != 0)
        return r;
    if (name == NULL)
        return latch__res_refuse(res, LATCH_ERR_INVALID_ARG,
                                 "latch_res_remove_header",
                                 "Invalid header: NULL name", at);
    nlen = strlen(name);
    while ((i = latch__res_find_header(res, name, nlen)) >= 0)
        res->hdrs[i].removed = 1;
    return 0;
}

int latch_res_clear_headers_at(latch_res *res, latch_site at)
{
    if (res != NULL &&
        (res = latch__res_in(res, "latch_res_clear_headers", &at)) == NULL)
        return LATCH_ERR_STREAM_DESTROYED;
    int r = latch__res_gate(res, LATCH_K_HEADER, "latch_res_clear_headers",
                            "remove", at);

    if (r != 0)
        return r;
    res->nhdrs = 0;
    res->hbuf.len = 0;
    return 0;
}

const char *latch_res_get_header_at(const latch_res *res, const char *name,
                                    latch_site at)
{
    if (res != NULL &&
        (res = latch__res_in(res, "latch_res_get_header", &at)) == NULL)
        return NULL;
    int i;

    if (res != NULL && name == NULL && latch__res_on_loop(res))
        latch__violation((latch_res *)res, LATCH_ERR_INVALID_ARG,
                         "latch_res_get_header", "Invalid header: NULL name",
                         at);
    if (res == NULL || name == NULL)
        return NULL;
    i = latch__res_find_header(res, name, strlen(name));
    return i < 0 ? NULL : res->hbuf.data + res->hdrs[i].value_off;
}

const char *latch_res_get_header(const latch_res *res, const char *name)
{
    return latch_res_get_header_at(res, name, latch__no_site);
}

int latch_res_status_at(latch_res *res, int status, latch_site at)
{
    if (res != NULL &&
        (res = latch__res_in(res, "latch_res_status", &at)) == NULL)
        return LATCH_ERR_STREAM_DESTROYED;
    int r = latch__res_gate(res, LATCH_K_STATUS, "latch_res_status", "set", at);

    if (r != 0)
        return r;
    if (!latch__res_final_status(status))
        return latch__res_bad_status(res, status, "latch_res_status", at);
    res->status = status;
    return 0;
}

int latch_res_get_status_at(const latch_res *res, latch_site at)
{
    if (res != NULL &&
        (res = latch__res_in(res, "latch_res_get_status", &at)) == NULL)
        return 0;
    return res ? res->status : 0;
}

int latch_res_get_status(const latch_res *res)
{
    return latch_res_get_status_at(res, latch__no_site);
}

/* Removes every line of a header (latch's own decision, not reported). */
void latch__res_drop_header(latch_res *res, const char *name, size_t n)
{
    int i;

    if (res->hdrs_packed)
        return; /* read-only (latch__res_put_header) */
    while ((i = latch__res_find_header(res, name, n)) >= 0)
        res->hdrs[i].removed = 1;
}

/* Sets a header latch itself chose (known valid), before the head. */
int latch__res_header(latch_res *res, const char *name, const char *value)
{
    return latch__res_put_header(res, name, strlen(name), value, strlen(value),
                                 false);
}
