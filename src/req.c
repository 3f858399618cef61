/*
 * req.c - the request view: method, target, decoded path, query, headers
 * and body of one request, read without copying from the connection's
 * read buffer where possible.
 *
 * Strings the head already holds are returned in place (conn.c terminated
 * them with NUL once the head was parsed). Decoded strings (the path when
 * it has escapes or a query, query values, route parameters) come from a
 * small per-request arena whose blocks never move, so every pointer handed
 * out stays valid as long as the response is referenced. This module does
 * not parse HTTP (parser.c) and does not match routes (app.c).
 */
#include "internal.h"

#include <jansson.h>

#include <sched.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define ARENA_BLOCK 1024
#define ARENA_LIMIT ((size_t)1 << 20)

struct latch_arena_blk {
    struct latch_arena_blk *next;
    size_t size;
    char data[];
};

/*
 * n bytes that never move; NULL when out of memory or past the limit.
 * Any thread: a latch_work job may decode a query value or a cookie while
 * the loop decodes another, so taking the bytes is locked (a spin on one
 * flag, never contended on the loop alone); writing them is not, since
 * each caller writes only its own.
 */
char *latch__req_alloc(latch_req *q, size_t n)
{
    struct latch_arena_blk *b;
    size_t size;
    char *p = NULL;

    while (atomic_exchange_explicit(&q->arena_busy, true, memory_order_acquire))
        sched_yield();
    if (q->arena != NULL && q->arena_left >= n) {
        p = q->arena->data + (q->arena->size - q->arena_left);
        q->arena_left -= n;
        goto out;
    }
    if (n > ARENA_LIMIT)
        goto out;
    size = n > ARENA_BLOCK ? n : ARENA_BLOCK;
    b = malloc(sizeof(*b) + size);
    if (b == NULL)
        goto out;
    b->next = q->arena;
    b->size = size;
    q->arena = b;
    q->arena_left = size - n;
    p = b->data;
out:
    atomic_store_explicit(&q->arena_busy, false, memory_order_release);
    return p;
}

void latch__req_reset(latch_req *q)
{
    struct latch_arena_blk *b, *next;

    if (q->json != NULL) {
        json_decref(q->json);
        q->json = NULL;
    }
    for (b = q->arena; b != NULL; b = next) {
        next = b->next;
        free(b);
    }
    q->arena = NULL;
    q->arena_left = 0;
}

static int hexval(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/*
 * Percent-decodes s[0..n) into a new arena string (with `plus`, '+' is a
 * space: query strings). A malformed escape, and %00 (which would cut a C
 * string), are kept as written.
 */
/* The decoded byte at s[*i] (a %XX escape, '+' as a space when `plus`,
 * else the byte itself); advances *i past it. %00 stays as written. */
static char decode_at(const char *s, size_t n, size_t *i, bool plus)
{
    size_t k = *i;

    if (s[k] == '%' && k + 2 < n) {
        int hi = hexval((unsigned char)s[k + 1]);
        int lo = hexval((unsigned char)s[k + 2]);
        if (hi >= 0 && lo >= 0 && (hi | lo) != 0) {
            *i = k + 3;
            return (char)(hi * 16 + lo);
        }
    }
    *i = k + 1;
    return (plus && s[k] == '+') ? ' ' : s[k];
}

static char *decode(latch_req *q, const char *s, size_t n, bool plus)
{
    char *out = latch__req_alloc(q, n + 1), *o = out;
    size_t i = 0;

    if (out == NULL)
        return NULL;
    while (i < n)
        *o++ = decode_at(s, n, &i, plus);
    *o = '\0';
    return out;
}

/* Whether the encoded s[0..n) decodes to `name`, without allocating. */
static bool decoded_eq(const char *s, size_t n, const char *name)
{
    size_t i = 0;

    while (i < n) {
        if (*name == '\0' || decode_at(s, n, &i, true) != *name)
            return false;
        name++;
    }
    return *name == '\0';
}

/* Fills path and query from the target (origin-, absolute- or
 * asterisk-form). */
void latch__req_prepare(latch_req *q)
{
    const char *t = q->url, *path = t, *qm;
    size_t plen;

    if (t[0] != '/' && t[0] != '*') {
        /* absolute-form: skip "scheme://authority" */
        const char *s = strstr(t, "://");
        path = s ? s + 3 : t;
        while (*path && *path != '/' && *path != '?')
            path++;
    }
    qm = strchr(path, '?');
    q->query = qm ? qm + 1 : NULL;
    plen = qm ? (size_t)(qm - path) : strlen(path);
    if (plen == 0) {
        q->path = "/";
        return;
    }
    if (path[plen] == '\0' && memchr(path, '%', plen) == NULL) {
        q->path = path; /* the common case: no copy */
        return;
    }
    q->path = decode(q, path, plen, false);
    if (q->path == NULL)
        q->path = "/";
}

/*
 * A request function given a bad argument (a NULL name, a negative
 * count): reported against the request's response, from whatever thread
 * reads the request, at the caller's place.
 */
static void refuse_arg(const latch_req *req, const char *call, const char *msg,
                       latch_site at)
{
    latch_res *res = latch_req_res((latch_req *)req);

    if (res != NULL && res->w != NULL)
        latch__violation(res, LATCH_ERR_INVALID_ARG, call, msg, at);
}

const char *latch_req_method_at(const latch_req *req, latch_site at)
{
    if (req != NULL && (req = (const latch_req *)latch__res_in(
                            req, "latch_req_method", &at)) == NULL)
        return "";
    return req && req->method ? req->method : "";
}

const char *latch_req_method(const latch_req *req)
{
    return latch_req_method_at(req, latch__no_site);
}

const char *latch_req_path_at(const latch_req *req, latch_site at)
{
    if (req != NULL && (req = (const latch_req *)latch__res_in(
                            req, "latch_req_path", &at)) == NULL)
        return "";
    return req && req->path ? req->path : "";
}

const char *latch_req_path(const latch_req *req)
{
    return latch_req_path_at(req, latch__no_site);
}

const char *latch_req_url_at(const latch_req *req, latch_site at)
{
    if (req != NULL && (req = (const latch_req *)latch__res_in(
                            req, "latch_req_url", &at)) == NULL)
        return "";
    return req && req->url ? req->url : "";
}

const char *latch_req_url(const latch_req *req)
{
    return latch_req_url_at(req, latch__no_site);
}

int latch_req_version_minor_at(const latch_req *req, latch_site at)
{
    if (req != NULL && (req = (const latch_req *)latch__res_in(
                            req, "latch_req_version_minor", &at)) == NULL)
        return 0;
    return req ? req->version_minor : 0;
}

int latch_req_version_minor(const latch_req *req)
{
    return latch_req_version_minor_at(req, latch__no_site);
}

uint64_t latch_req_id_at(const latch_req *req, latch_site at)
{
    if (req != NULL && (req = (const latch_req *)latch__res_in(
                            req, "latch_req_id", &at)) == NULL)
        return 0;
    return req ? req->id : 0;
}

uint64_t latch_req_id(const latch_req *req)
{
    return latch_req_id_at(req, latch__no_site);
}

bool latch_req_aborted_at(const latch_req *req, latch_site at)
{
    if (req != NULL && (req = (const latch_req *)latch__res_in(
                            req, "latch_req_aborted", &at)) == NULL)
        return false;
    return req ? req->aborted : false;
}

bool latch_req_aborted(const latch_req *req)
{
    return latch_req_aborted_at(req, latch__no_site);
}

bool latch_req_secure_at(const latch_req *req, latch_site at)
{
    if (req != NULL && (req = (const latch_req *)latch__res_in(
                            req, "latch_req_secure", &at)) == NULL)
        return false;
    return req ? req->secure : false;
}

bool latch_req_secure(const latch_req *req)
{
    return latch_req_secure_at(req, latch__no_site);
}

static bool name_ieq(const char *a, const char *b)
{
    for (;; a++, b++) {
        unsigned char x = (unsigned char)*a, y = (unsigned char)*b;
        if (x >= 'A' && x <= 'Z')
            x += 32;
        if (y >= 'A' && y <= 'Z')
            y += 32;
        if (x != y)
            return false;
        if (x == '\0')
            return true;
    }
}

const char *latch_req_header_get_at(const latch_req *req, const char *name,
                                    latch_site at)
{
    if (req != NULL && (req = (const latch_req *)latch__res_in(
                            req, "latch_req_header", &at)) == NULL)
        return NULL;
    uint32_t i;

    if (req != NULL && name == NULL)
        refuse_arg(req, "latch_req_header", "The header name is NULL", at);
    if (req == NULL || name == NULL || req->head == NULL)
        return NULL;
    for (i = 0; i < req->nfields; i++)
        if (name_ieq(req->head + req->fields[i].name.off, name))
            return req->head + req->fields[i].value.off;
    return NULL;
}

const char *latch_req_header(const latch_req *req, const char *name)
{
    return latch_req_header_get_at(req, name, latch__no_site);
}

int latch_req_header_values_at(const latch_req *req, const char *name,
                               const char **values, int max, latch_site at)
{
    if (req != NULL && (req = (const latch_req *)latch__res_in(
                            req, "latch_req_header_values", &at)) == NULL)
        return LATCH_ERR_STREAM_DESTROYED;
    uint32_t i;
    int n = 0;

    if (max < 0 || (max > 0 && values == NULL) ||
        (req != NULL && name == NULL)) {
        refuse_arg(req, "latch_req_header_values",
                   name == NULL ? "The header name is NULL"
                                : "values must hold max entries (max >= 0)",
                   at);
        return LATCH_ERR_INVALID_ARG;
    }
    if (req == NULL || req->head == NULL)
        return 0;
    for (i = 0; i < req->nfields; i++) {
        if (!name_ieq(req->head + req->fields[i].name.off, name))
            continue;
        if (n < max)
            values[n] = req->head + req->fields[i].value.off;
        n++;
    }
    return n;
}

int latch_req_header_values(const latch_req *req, const char *name,
                            const char **values, int max)
{
    return latch_req_header_values_at(req, name, values, max, latch__no_site);
}

int latch_req_header_count_at(const latch_req *req, latch_site at)
{
    if (req != NULL && (req = (const latch_req *)latch__res_in(
                            req, "latch_req_header_count", &at)) == NULL)
        return 0;
    return req && req->head ? (int)req->nfields : 0;
}

int latch_req_header_count(const latch_req *req)
{
    return latch_req_header_count_at(req, latch__no_site);
}

int latch_req_header_nth_at(const latch_req *req, int i, const char **name,
                            const char **value, latch_site at)
{
    if (req != NULL && (req = (const latch_req *)latch__res_in(
                            req, "latch_req_header_at", &at)) == NULL)
        return LATCH_ERR_STREAM_DESTROYED;
    if (name)
        *name = NULL;
    if (value)
        *value = NULL;
    if (req == NULL || req->head == NULL || i < 0 ||
        (uint32_t)i >= req->nfields) {
        if (req != NULL)
            refuse_arg(req, "latch_req_header_at",
                       "The index is outside 0 .. latch_req_header_count - 1",
                       at);
        return LATCH_ERR_INVALID_ARG;
    }
    if (name)
        *name = req->head + req->fields[i].name.off;
    if (value)
        *value = req->head + req->fields[i].value.off;
    return 0;
}

int latch_req_header_at(const latch_req *req, int i, const char **name,
                        const char **value)
{
    return latch_req_header_nth_at(req, i, name, value, latch__no_site);
}

/*
 * Visits the values of query parameter `name`, in order: stores the
 * first `max` (decoded) in out and returns how many there are. A key
 * without '=' has the value "".
 */
static int query_values(const latch_req *req, const char *name,
                        const char **out, int max)
{
    latch_req *q = (latch_req *)req; /* the arena is a cache */
    const char *s, *e, *eq, *end;
    int n = 0;

    if (req == NULL || name == NULL || req->query == NULL)
        return 0;
    s = req->query;
    end = s + strlen(s);
    while (s < end) {
        e = memchr(s, '&', (size_t)(end - s));
        if (e == NULL)
            e = end;
        eq = memchr(s, '=', (size_t)(e - s));
        if (decoded_eq(s, (size_t)((eq ? eq : e) - s), name)) {
            if (n < max) {
                out[n] =
                    eq ? decode(q, eq + 1, (size_t)(e - eq - 1), true) : "";
                if (out[n] == NULL)
                    return n; /* out of memory: what was decoded */
            }
            n++;
        }
        s = e + 1;
    }
    return n;
}

const char *latch_req_query_at(const latch_req *req, const char *name,
                               latch_site at)
{
    if (req != NULL && (req = (const latch_req *)latch__res_in(
                            req, "latch_req_query", &at)) == NULL)
        return NULL;
    const char *v = NULL;

    if (req != NULL && name == NULL)
        refuse_arg(req, "latch_req_query", "The parameter name is NULL", at);
    return query_values(req, name, &v, 1) > 0 ? v : NULL;
}

const char *latch_req_query(const latch_req *req, const char *name)
{
    return latch_req_query_at(req, name, latch__no_site);
}

int latch_req_query_values_at(const latch_req *req, const char *name,
                              const char **values, int max, latch_site at)
{
    if (req != NULL && (req = (const latch_req *)latch__res_in(
                            req, "latch_req_query_values", &at)) == NULL)
        return LATCH_ERR_STREAM_DESTROYED;
    if (max < 0 || (max > 0 && values == NULL) ||
        (req != NULL && name == NULL)) {
        refuse_arg(req, "latch_req_query_values",
                   name == NULL ? "The parameter name is NULL"
                                : "values must hold max entries (max >= 0)",
                   at);
        return LATCH_ERR_INVALID_ARG;
    }
    return query_values(req, name, values, max);
}

int latch_req_query_values(const latch_req *req, const char *name,
                           const char **values, int max)
{
    return latch_req_query_values_at(req, name, values, max, latch__no_site);
}

const char *latch_req_param_at(const latch_req *req, const char *name,
                               latch_site at)
{
    if (req != NULL && (req = (const latch_req *)latch__res_in(
                            req, "latch_req_param", &at)) == NULL)
        return NULL;
    uint32_t i;

    if (req != NULL && name == NULL)
        refuse_arg(req, "latch_req_param", "The parameter name is NULL", at);
    if (req == NULL || name == NULL)
        return NULL;
    for (i = 0; i < req->nparams; i++)
        if (strcmp(req->params[i].name, name) == 0)
            return req->params[i].value;
    return NULL;
}

const char *latch_req_param(const latch_req *req, const char *name)
{
    return latch_req_param_at(req, name, latch__no_site);
}

int latch_req_body_at(latch_req *req, const void **data, size_t *len,
                      latch_site at)
{
    if (req != NULL &&
        (req = (latch_req *)latch__res_in(req, "latch_req_body", &at)) == NULL)
        return LATCH_ERR_STREAM_DESTROYED;
    static const char empty[1];

    if (data)
        *data = empty;
    if (len)
        *len = 0;
    if (req == NULL)
        return LATCH_ERR_INVALID_ARG;
    if (req->body.len > 0) {
        if (data)
            *data = req->body.data;
        if (len)
            *len = req->body.len;
    }
    return 0;
}

int latch_req_body(latch_req *req, const void **data, size_t *len)
{
    return latch_req_body_at(req, data, len, latch__no_site);
}

/* Exposed for app.c: a decoded copy of s[0..n). */
char *latch__req_decode(latch_req *q, const char *s, size_t n)
{
    return decode(q, s, n, false);
}

const char *latch_req_cookie_at(const latch_req *req, const char *name,
                                latch_site at)
{
    if (req != NULL && (req = (const latch_req *)latch__res_in(
                            req, "latch_req_cookie", &at)) == NULL)
        return NULL;
    latch_req *q = (latch_req *)req; /* the arena is a cache */
    size_t nlen;
    uint32_t i;

    if (req != NULL && name == NULL)
        refuse_arg(req, "latch_req_cookie", "The cookie name is NULL", at);
    if (req == NULL || name == NULL || req->head == NULL)
        return NULL;
    nlen = strlen(name);
    for (i = 0; i < req->nfields; i++) {
        const char *v = req->head + req->fields[i].value.off;
        if (!name_ieq(req->head + req->fields[i].name.off, "cookie"))
            continue;
        /* "a=1; b=2": pairs separated by ';', optional spaces. */
        while (*v) {
            const char *k, *ke, *val, *ve;
            while (*v == ' ' || *v == '\t' || *v == ';')
                v++;
            k = v;
            while (*v && *v != '=' && *v != ';')
                v++;
            ke = v;
            while (ke > k && (ke[-1] == ' ' || ke[-1] == '\t'))
                ke--;
            if (*v != '=') {
                continue; /* a pair without '=' is skipped */
            }
            val = ++v;
            while (*v && *v != ';')
                v++;
            ve = v;
            while (ve > val && (ve[-1] == ' ' || ve[-1] == '\t'))
                ve--;
            if ((size_t)(ke - k) != nlen || memcmp(k, name, nlen) != 0)
                continue;
            if (ve - val >= 2 && val[0] == '"' && ve[-1] == '"') {
                val++;
                ve--;
            }
            return decode(q, val, (size_t)(ve - val), false);
        }
    }
    return NULL;
}

const char *latch_req_cookie(const latch_req *req, const char *name)
{
    return latch_req_cookie_at(req, name, latch__no_site);
}

/* Trims one X-Forwarded-For element s[0..n) into the arena. */
static const char *xff_item(latch_req *q, const char *s, size_t n)
{
    char *out;

    while (n > 0 && (*s == ' ' || *s == '\t')) {
        s++;
        n--;
    }
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t'))
        n--;
    out = latch__req_alloc(q, n + 1);
    if (out == NULL)
        return NULL;
    memcpy(out, s, n);
    out[n] = '\0';
    return out;
}

/* An IPv4 address as "a.b.c.d" into out (cap bytes, 16 suffice): 0, or
 * -1 when it does not fit. By hand: every proxied request formats its
 * client's, and uv_ip4_name's snprintf cost ten times as much. */
static int ip4_name(const struct sockaddr_in *sa, char *out, size_t cap)
{
    const unsigned char *b = (const unsigned char *)&sa->sin_addr;
    char tmp[16], *p = tmp;

    for (int i = 0; i < 4; i++) {
        unsigned v = b[i];

        if (v >= 100)
            *p++ = (char)('0' + v / 100);
        if (v >= 10)
            *p++ = (char)('0' + v / 10 % 10);
        *p++ = (char)('0' + v % 10);
        *p++ = i < 3 ? '.' : '\0';
    }
    if ((size_t)(p - tmp) > cap)
        return -1;
    memcpy(out, tmp, (size_t)(p - tmp));
    return 0;
}

int latch__req_peer(const latch_req *q, char *out, size_t cap)
{
    const latch_res *res = (const latch_res *)(const void *)q;
    struct sockaddr_storage ss;

    if (cap > 0)
        out[0] = '\0';
    if (latch__res_peer(res, &ss) != 0)
        return LATCH_ERR_STATE;
    if (ss.ss_family == AF_INET6)
        return uv_ip6_name((struct sockaddr_in6 *)&ss, out, cap) == 0
                   ? AF_INET6
                   : LATCH_ERR_STATE;
    return ip4_name((struct sockaddr_in *)&ss, out, cap) == 0 ? AF_INET
                                                              : LATCH_ERR_STATE;
}

const char *latch_req_ip_at(const latch_req *req, latch_site at)
{
    if (req != NULL && (req = (const latch_req *)latch__res_in(
                            req, "latch_req_ip", &at)) == NULL)
        return NULL;
    latch_req *q = (latch_req *)req;
    latch_res *res = latch_req_res(q);
    struct sockaddr_storage ss;
    int hops;
    char addr[64];
    const char *xff;

    if (req == NULL)
        return NULL;
    /* The connection is the loop's: another thread may not look. */
    if (!pthread_equal(pthread_self(), res->w->thread)) {
        latch__violation(res, LATCH_ERR_WRONG_THREAD, "latch_req_ip", NULL, at);
        return NULL;
    }
    if (req->ip != NULL)
        return req->ip;
    if (latch__res_peer(res, &ss) != 0)
        return NULL;
    if (ss.ss_family == AF_INET6)
        uv_ip6_name((struct sockaddr_in6 *)&ss, addr, sizeof(addr));
    else
        uv_ip4_name((struct sockaddr_in *)&ss, addr, sizeof(addr));
    q->ip = xff_item(q, addr, strlen(addr));
    hops = res->w->app->trust_proxy;
    xff = latch_req_header(req, "X-Forwarded-For");
    if (hops > 0 && xff != NULL) {
        /* The list is client, proxy1, proxy2, ...; the peer is the last
         * proxy. Trusting n hops means taking the address n back from the
         * peer (Express's "trust proxy" n). */
        const char *end = xff + strlen(xff), *p = end;
        while (hops-- > 0 && p > xff) {
            const char *e = p;
            while (p > xff && p[-1] != ',')
                p--;
            if (hops == 0 || p == xff) {
                const char *it = xff_item(q, p, (size_t)(e - p));
                if (it != NULL && *it != '\0')
                    q->ip = it;
                break;
            }
            p--; /* over the ',' */
        }
    }
    return q->ip;
}

const char *latch_req_ip(const latch_req *req)
{
    return latch_req_ip_at(req, latch__no_site);
}

latch_res *latch_req_res_at(latch_req *req, latch_site at)
{
    latch_res *r = latch__res_in(req, "latch_req_res", &at);

    if (r == NULL)
        return NULL;
    return ((uintptr_t)req & 1) ? (latch_res *)((uintptr_t)req & ~(uintptr_t)2)
                                : r;
}

latch_res *latch_req_res(latch_req *req)
{
    return latch_req_res_at(req, latch__no_site);
}

json_t *latch_req_json_at(const latch_req *req, latch_site at)
{
    if (req != NULL && (req = (const latch_req *)latch__res_in(
                            req, "latch_req_json", &at)) == NULL)
        return NULL;
    return req ? req->json : NULL;
}

json_t *latch_req_json(const latch_req *req)
{
    return latch_req_json_at(req, latch__no_site);
}
