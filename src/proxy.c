/*
 * proxy.c - the reverse proxy engine: latch_proxy and latch_use_proxy.
 *
 * One proxied exchange is a pipe on the client's response (stream.c) fed
 * by one upstream call (upstream.c). The pipe gives the moments: its
 * first pull, once every earlier response of the client connection
 * ended, starts the call (so a pipelined client's requests go upstream
 * one after the other over one pooled connection, as nginx sends them);
 * later pulls resume the upstream read that a full client output paused;
 * its done (exactly once: finished, client gone, timeout, shutdown,
 * failure) is the moment the upstream call is given up if it still runs
 * (or the request that never went is dropped), and
 * latch_res_pipe_fail answers a failure before the headers through the
 * error handlers (502, 504) or truncates the response after them. The
 * call's own done says how the upstream side ended.
 *
 * This file builds the request head that goes upstream (target, Host,
 * forwarding fields, hop-by-hop fields stripped) and copies the answer's
 * status and end-to-end fields to the response; the body framing on both
 * sides is latch's own. It is not a client (no sockets here).
 *
 * The request body: under a latch_use_proxy prefix conn.c streams it
 * (the request is dispatched at its head): the proxy is its sink and
 * passes each piece on as it arrives, with the client's Content-Length or
 * chunked framing of latch's own, pausing the client's reading while the
 * upstream holds enough (its drain resumes it). An Expect: 100-continue
 * goes upstream, and the upstream's 100 is relayed: the client sends its
 * body only when the upstream asked for it. Elsewhere (latch_proxy in a
 * route of the app's own) the body is the one conn.c buffered, sent with
 * a Content-Length.
 */
#include "upstream.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Request heads sent upstream: beyond this, the request is a 502 (a
 * client head is at most 16 KiB; the fields latch adds are small). */
#define HEAD_LIMIT (64 * 1024)

typedef struct latch_pxy {
    latch_res *res;     /* latch's pointer; the pipe holds a reference */
    latch_upstream own; /* parsed by latch_proxy itself (else unused) */
    const latch_upstream *u;
    latch_proxy_opts opts;
    latch_ucall *call; /* NULL once the call is over */
    char *req;         /* the request built, until its call starts */
    size_t req_len;
    latch_site at;        /* latch_proxy's caller: failures are sealed here */
    uint16_t frame;       /* the handler call that proxied */
    int busy;             /* inside a callback that may end the pipe */
    bool over;            /* the pipe's done ran: free when not busy */
    bool paused;          /* the upstream read waits for a pull */
    bool waiting;         /* the call starts at the pipe's first pull */
    bool headed;          /* the upstream's head is set on the response */
    bool streamed;        /* the request body streams (its sink is p) */
    bool chunked;         /* ... framed by latch as chunked upstream */
    bool counted;         /* its outcome went to the metrics */
    latch_body_sink sink; /* conn.c's consumer of the streamed body */
} latch_pxy;

/* An app's latch_use_proxy route. */
typedef struct proxy_cfg {
    latch_upstream u;
    latch_proxy_opts opts;
    char *strip;
} proxy_cfg;

static const char *const hop_by_hop[] = {
    "connection",        "keep-alive", "te", "trailer",
    "transfer-encoding", "upgrade",    NULL,
};

/* ---- fields ---------------------------------------------------------- */

/* Does the comma-separated list `list` hold the token name[0..n)? */
static bool list_has(const char *list, size_t llen, const char *name, size_t n)
{
    size_t i = 0;

    while (i < llen) {
        size_t s, e;

        while (i < llen &&
               (list[i] == ',' || list[i] == ' ' || list[i] == '\t'))
            i++;
        s = i;
        while (i < llen && list[i] != ',')
            i++;
        e = i;
        while (e > s && (list[e - 1] == ' ' || list[e - 1] == '\t'))
            e--;
        if (e - s == n && strncasecmp(list + s, name, n) == 0)
            return true;
    }
    return false;
}

/*
 * Is field `name` (n bytes) hop-by-hop for a message whose Connection
 * lines are the `nconn` values in conn[] / connlen[]? Proxy-* are
 * (Proxy-Connection, Proxy-Authorization, Proxy-Authenticate).
 */
static bool hop(const char *name, size_t n, const char *const *conn,
                const size_t *connlen, int nconn)
{
    for (int i = 0; hop_by_hop[i] != NULL; i++)
        if (strlen(hop_by_hop[i]) == n &&
            strncasecmp(name, hop_by_hop[i], n) == 0)
            return true;
    if (n >= 6 && strncasecmp(name, "proxy-", 6) == 0)
        return true;
    for (int i = 0; i < nconn; i++)
        if (list_has(conn[i], connlen[i], name, n))
            return true;
    return false;
}

static bool name_is(const char *name, size_t n, const char *want)
{
    return strlen(want) == n && strncasecmp(name, want, n) == 0;
}

/* ---- the request that goes upstream ---------------------------------- */

static int put(latch_buf *b, const char *s, size_t n)
{
    return latch__buf_append(b, s, n, HEAD_LIMIT + n);
}

static int puts_(latch_buf *b, const char *s)
{
    return put(b, s, strlen(s));
}

static int put_field(latch_buf *b, const char *name, const char *v, size_t n)
{
    int r = puts_(b, name);

    if (r == 0)
        r = put(b, ": ", 2);
    if (r == 0)
        r = put(b, v, n);
    if (r == 0)
        r = put(b, "\r\n", 2);
    return r;
}

/* The origin-form path and query of the request as received: an
 * absolute-form target loses its scheme and authority. */
static const char *origin_form(const char *url)
{
    const char *p;

    if (url[0] == '/' || url[0] == '*')
        return url;
    p = strstr(url, "://");
    if (p == NULL)
        return "/";
    p += 3;
    p += strcspn(p, "/?");
    return *p != '\0' ? p : "/";
}

/* The target: the path as received, less strip_prefix when it starts
 * with it (at a segment boundary), under the upstream's base. */
static int put_target(latch_buf *b, const latch_upstream *u, const char *strip,
                      const char *url)
{
    const char *t = origin_form(url);
    size_t n = strip != NULL ? strlen(strip) : 0;
    int r;

    while (n > 0 && strip[n - 1] == '/')
        n--;
    if (n > 0 && strncmp(t, strip, n) == 0 &&
        (t[n] == '\0' || t[n] == '/' || t[n] == '?'))
        t += n;
    if ((r = puts_(b, u->base)) < 0)
        return r;
    if (t[0] != '/' && !(t[0] == '*' && u->base[0] == '\0'))
        if ((r = put(b, "/", 1)) < 0)
            return r;
    return puts_(b, t);
}

static bool idempotent(const char *m)
{
    return strcmp(m, "GET") == 0 || strcmp(m, "HEAD") == 0 ||
           strcmp(m, "OPTIONS") == 0 || strcmp(m, "TRACE") == 0 ||
           strcmp(m, "PUT") == 0 || strcmp(m, "DELETE") == 0;
}

/*
 * X-Forwarded-For/-Proto/-Host and Forwarded. The client's own values
 * are kept (and ours appended) only when the app trusts the proxies in
 * front of it; otherwise they could be anyone's, and ours replace them.
 */
static int put_forwarded(latch_buf *b, latch_res *res, bool trusted)
{
    latch_req *q = &res->req;
    const char *host = latch_req_header(q, "host");
    const char *xff = NULL, *fwd = NULL, *xfp = NULL, *xfh = NULL;
    char peer[64], node[80];
    int fam = latch__req_peer(q, peer, sizeof(peer)), r;
    latch_buf v = {0};

    if (fam < 0)
        snprintf(peer, sizeof(peer), "unknown");
    if (trusted) {
        xff = latch_req_header(q, "x-forwarded-for");
        fwd = latch_req_header(q, "forwarded");
        xfp = latch_req_header(q, "x-forwarded-proto");
        xfh = latch_req_header(q, "x-forwarded-host");
    }
    /* X-Forwarded-For: client, proxy1, ..., our peer. */
    r = xff != NULL && xff[0] != '\0'
            ? latch__buf_append(&v, xff, strlen(xff), HEAD_LIMIT)
            : 0;
    if (r == 0 && v.len > 0)
        r = latch__buf_append(&v, ", ", 2, HEAD_LIMIT);
    if (r == 0)
        r = latch__buf_append(&v, peer, strlen(peer), HEAD_LIMIT);
    if (r == 0)
        r = put_field(b, "X-Forwarded-For", v.data, v.len);
    /* The scheme the client used here, unless a trusted proxy said. */
    if (xfp == NULL)
        xfp = q->secure ? "https" : "http";
    if (r == 0)
        r = put_field(b, "X-Forwarded-Proto", xfp, strlen(xfp));
    if (r == 0 && (xfh != NULL || host != NULL))
        r = put_field(b, "X-Forwarded-Host", xfh ? xfh : host,
                      strlen(xfh ? xfh : host));
    /* Forwarded (RFC 7239): an IPv6 node is quoted and bracketed. */
    v.len = 0;
    if (fam == AF_INET6)
        snprintf(node, sizeof(node), "\"[%s]\"", peer);
    else
        memcpy(node, fam < 0 ? "unknown" : peer,
               strlen(fam < 0 ? "unknown" : peer) + 1); /* < 64 bytes */
    if (r == 0 && fwd != NULL && fwd[0] != '\0')
        r = latch__buf_append(&v, fwd, strlen(fwd), HEAD_LIMIT);
    if (r == 0 && v.len > 0)
        r = latch__buf_append(&v, ", ", 2, HEAD_LIMIT);
    if (r == 0)
        r = latch__buf_append(&v, "for=", 4, HEAD_LIMIT);
    if (r == 0)
        r = latch__buf_append(&v, node, strlen(node), HEAD_LIMIT);
    if (r == 0 && host != NULL && host[0] != '\0') {
        /* host= is a token or a quoted-string: quote it. */
        r = latch__buf_append(&v, ";host=\"", 7, HEAD_LIMIT);
        for (const char *h = host; r == 0 && *h; h++)
            if (*h != '"' && *h != '\\')
                r = latch__buf_append(&v, h, 1, HEAD_LIMIT);
        if (r == 0)
            r = latch__buf_append(&v, "\"", 1, HEAD_LIMIT);
    }
    if (r == 0)
        r = q->secure ? latch__buf_append(&v, ";proto=https", 12, HEAD_LIMIT)
                      : latch__buf_append(&v, ";proto=http", 11, HEAD_LIMIT);
    if (r == 0)
        r = put_field(b, "Forwarded", v.data, v.len);
    latch__buf_dispose(&v);
    return r;
}

/* The whole request for the upstream, head and body, in *out. */
static int build_request(latch_pxy *p, latch_buf *out)
{
    latch_res *res = p->res;
    latch_req *q = &res->req;
    const char *conn[8];
    size_t connlen[8];
    int nconn = 0, r, n = latch_req_header_count(q);
    const void *body;
    size_t blen;
    bool has_body;
    char num[32];

    /* The client's Connection lines name more hop-by-hop fields. */
    for (int i = 0; i < n && nconn < 8; i++) {
        const char *name, *value;
        latch_req_header_at(q, i, &name, &value);
        if (strcasecmp(name, "connection") == 0) {
            conn[nconn] = value;
            connlen[nconn++] = strlen(value);
        }
    }
    r = puts_(out, q->method);
    if (r == 0)
        r = put(out, " ", 1);
    if (r == 0)
        r = put_target(out, p->u, p->opts.strip_prefix, q->url);
    if (r == 0)
        r = puts_(out, " HTTP/1.1\r\n");
    if (r == 0 && p->opts.preserve_host && latch_req_header(q, "host"))
        r = put_field(out, "Host", latch_req_header(q, "host"),
                      strlen(latch_req_header(q, "host")));
    else if (r == 0)
        r = put_field(out, "Host", p->u->authority, strlen(p->u->authority));
    for (int i = 0; i < n && r == 0; i++) {
        const char *name, *value;
        size_t nl;

        latch_req_header_at(q, i, &name, &value);
        nl = strlen(name);
        if (hop(name, nl, conn, connlen, nconn) || name_is(name, nl, "host") ||
            name_is(name, nl, "content-length") ||
            name_is(name, nl, "expect") ||
            (!p->opts.no_forwarded_headers &&
             (name_is(name, nl, "x-forwarded-for") ||
              name_is(name, nl, "x-forwarded-proto") ||
              name_is(name, nl, "x-forwarded-host") ||
              name_is(name, nl, "forwarded"))))
            continue;
        r = put_field(out, name, value, strlen(value));
    }
    if (r == 0 && !p->opts.no_forwarded_headers)
        r = put_forwarded(out, res, res->w->app->trust_proxy > 0);
    if (r == 0)
        r = puts_(out, q->version_minor == 0 ? "Via: 1.0 latch\r\n"
                                             : "Via: 1.1 latch\r\n");
    /* The body latch buffered, with a length of latch's own; or the
     * streamed one, with the client's length (checked by the parser) or
     * else chunked. */
    latch_req_body(q, &body, &blen);
    has_body = blen > 0 || latch_req_header(q, "content-length") != NULL ||
               latch_req_header(q, "transfer-encoding") != NULL;
    p->streamed = q->body_open;
    if (r == 0 && p->streamed) {
        const char *cl = latch_req_header(q, "content-length");

        p->chunked = cl == NULL;
        r = cl != NULL ? put_field(out, "Content-Length", cl, strlen(cl))
                       : puts_(out, "Transfer-Encoding: chunked\r\n");
        if (r == 0 && q->expect_continue)
            r = puts_(out, "Expect: 100-continue\r\n");
    } else if (r == 0 && has_body) {
        r = put_field(out, "Content-Length", num,
                      (size_t)(latch__put_u64(num, blen) - num));
    }
    if (r == 0 && p->opts.max_idle_per_upstream < 0)
        r = puts_(out, "Connection: close\r\n");
    if (r == 0)
        r = put(out, "\r\n", 2);
    if (r == 0 && blen > 0)
        r = latch__buf_append(out, body, blen, HEAD_LIMIT + blen + 2);
    return r;
}

/* ---- the exchange ------------------------------------------------------ */

/* The row of upstream `name` among the first n, or NULL. */
static latch_ustat *ustat_find(latch_app *app, int n, const char *name)
{
    for (int i = 0; i < n; i++)
        if (strcmp(app->ustats[i].name, name) == 0)
            return &app->ustats[i];
    return NULL;
}

/* The exchange's outcome, once, into latch_upstream_requests_total (the
 * app's rows, which metrics.c renders), while metrics are on. */
static void count(latch_pxy *p, int outcome)
{
    latch_app *app = p->res->w->app;
    const char *name = p->u->authority;
    latch_ustat *u = NULL;
    int n;

    if (p->counted || !(app->ops & LATCH_OPS_METRICS))
        return;
    p->counted = true;
    /* Rows are immutable once published: most calls find theirs without
     * the lock. */
    n = atomic_load_explicit(&app->nustats, memory_order_acquire);
    if (n > 0)
        u = ustat_find(app, n, name);
    if (u == NULL) {
        pthread_mutex_lock(&app->ustat_mu);
        n = atomic_load_explicit(&app->nustats, memory_order_relaxed);
        if (n > 0)
            u = ustat_find(app, n, name);
        if (u == NULL && app->ustats == NULL)
            app->ustats = calloc(LATCH_MAX_USTATS, sizeof(*app->ustats));
        if (u == NULL && app->ustats != NULL && n < LATCH_MAX_USTATS) {
            u = &app->ustats[n];
            snprintf(u->name, sizeof(u->name), "%s", name);
            atomic_store_explicit(&app->nustats, n + 1, memory_order_release);
        }
        pthread_mutex_unlock(&app->ustat_mu);
    }
    if (u != NULL)
        atomic_fetch_add_explicit(&u->n[outcome], 1, memory_order_relaxed);
}

static void pxy_free(latch_pxy *p)
{
    free(p->req); /* never started: the client left first */
    latch__upstream_dispose(&p->own);
    free(p);
}

/* Leaves a callback during which the pipe may have ended; true when p
 * is gone (the caller must not touch it). */
static bool pxy_leave(latch_pxy *p)
{
    if (--p->busy == 0 && p->over) {
        pxy_free(p);
        return true;
    }
    return false;
}

/* The upstream's head: status and end-to-end fields onto the response. */
static int up_head(void *data, const latch_uhead *h)
{
    latch_pxy *p = data;
    latch_res *res = p->res;
    const char *conn[8];
    size_t connlen[8];
    int nconn = 0, r = 0;
    char name[256], num[32];
    latch_buf val = {0};

    if (res->state != LATCH_RS_FRESH || res->detached)
        return LATCH_ERR_STATE; /* someone else answered: stop */
    for (uint32_t i = 0; i < h->nfields && nconn < 8; i++)
        if (latch__span_ieq(h->buf, h->fields[i].name, "connection")) {
            conn[nconn] = h->buf + h->fields[i].value.off;
            connlen[nconn++] = h->fields[i].value.len;
        }
    p->busy++;
    if (latch_res_status_at(res, h->status, p->at) < 0)
        r = LATCH_ERR_UPSTREAM;
    for (uint32_t i = 0; i < h->nfields && r == 0; i++) {
        const latch_field *f = &h->fields[i];
        const char *nm = h->buf + f->name.off;

        if (f->name.len >= sizeof(name) ||
            hop(nm, f->name.len, conn, connlen, nconn) ||
            name_is(nm, f->name.len, "content-length"))
            continue;
        memcpy(name, nm, f->name.len);
        name[f->name.len] = '\0';
        val.len = 0;
        if (latch__buf_append(&val, h->buf + f->value.off, f->value.len + 1,
                              HEAD_LIMIT) < 0) {
            r = LATCH_ERR_NOMEM;
            break;
        }
        val.data[f->value.len] = '\0';
        if (latch_res_append_header_at(res, name, val.data, p->at) < 0)
            r = LATCH_ERR_UPSTREAM;
    }
    latch__buf_dispose(&val);
    /* The length the upstream announced (and the parser checked): latch
     * enforces it, and a HEAD or 304 describes the representation. */
    if (r == 0 && h->has_cl && h->status != 204) {
        *latch__put_u64(num, h->content_length) = '\0';
        if (latch_res_set_header_at(res, "Content-Length", num, p->at) < 0)
            r = LATCH_ERR_UPSTREAM;
    }
    if (r == 0 &&
        latch_res_append_header_at(
            res, "Via", h->version_minor == 0 ? "1.0 latch" : "1.1 latch",
            p->at) < 0)
        r = LATCH_ERR_UPSTREAM;
    /* The head goes out with the first body bytes, not now: a body
     * whose framing the parser refuses at its first byte (a bad chunk
     * size) is still a clean 502, with nothing of it forwarded. */
    p->headed = true;
    if (pxy_leave(p))
        return LATCH_ERR_CANCELLED;
    return r;
}

static int up_body(void *data, const char *b, size_t n)
{
    latch_pxy *p = data;
    int r;

    p->busy++;
    r = latch__pipe_own_write(p->res, b, n, "latch_proxy", p->at);
    if (pxy_leave(p))
        return LATCH_ERR_CANCELLED;
    if (r == 0)
        p->paused = true;
    return r;
}

/* The upstream call ended. */
static void up_done(void *data, int status, bool headed)
{
    latch_pxy *p = data;
    latch_res *res = p->res;

    (void)headed;
    p->call = NULL;
    if (p->over)
        return;
    count(p, status == 0 ? LATCH_UP_OK
             : res->state != LATCH_RS_FRESH || res->detached
                 ? LATCH_UP_TRUNCATED
             : status == UV_ETIMEDOUT ? LATCH_UP_TIMEOUT
                                      : LATCH_UP_ERROR);
    p->busy++;
    if (status == 0) {
        latch__pipe_own_end(res, NULL, 0, "latch_proxy", p->at);
    } else if (res->state == LATCH_RS_FRESH && !res->detached) {
        if (p->headed) {
            /* The upstream's status and fields are set but not sent: the
             * failure is answered on a clean slate. */
            latch_res_clear_headers_at(res, p->at);
            latch_res_status_at(res, 200, p->at);
        }
        bool taken = false; /* by a producer the hook started */

        /* The response is the hook's (or the error handlers') now. */
        res->sole = LATCH_SOLE_NONE;
        if (p->opts.on_error != NULL) {
            latch_error err = {
                .code = status,
                .status = status == UV_ETIMEDOUT ? 504 : 502,
                .message = latch_strerror(status),
                .at = p->at,
            };
            uint16_t prev = latch__frame_enter(res, p->frame);

            /* It may answer with a producer of its own (a file, a pipe,
             * another upstream): this pipe claims nothing meanwhile. */
            latch__pipe_yield(res, p, true);
            p->opts.on_error(&err, latch__req_hf(res, p->frame),
                             latch__res_hf(res, p->frame), p->opts.data);
            latch__frame_leave(res, prev);
            if (!p->over) {
                taken = latch__pipe_claim(res) != NULL;
                latch__pipe_yield(res, p, false);
            }
        }
        if (taken || p->over || res->detached) {
            /* Answered, or being answered by the hook's producer. */
        } else if (res->state == LATCH_RS_FRESH) {
            /* Unanswered: the error handlers say 502 (504). */
            latch_res_pipe_fail_at(res, status, p->at);
        } else if (res->state == LATCH_RS_HEADERS_SENT) {
            /* Begun and left unfinished: nothing will end it (the hook
             * answers before it returns), and the pipe would hold it
             * open for good. A response without its end, as a
             * handler's. */
            latch__violation(res, LATCH_ERR_NO_RESPONSE, "on_error",
                             "The proxy's on_error hook returned with its "
                             "answer unfinished: the response is cut",
                             p->at);
            latch_res_pipe_fail_at(res, status, p->at);
        }
    } else if (res->state < LATCH_RS_ENDED && !res->detached) {
        /* Headers went out: truncated, never complete-looking. */
        latch_res_pipe_fail_at(res, status, p->at);
    }
    pxy_leave(p);
}

/* The upstream said 100 Continue: so does latch, when the client asked. */
static void up_interim(void *data, int status)
{
    latch_pxy *p = data;

    if (status == 100 && !p->over)
        latch__res_continue(p->res);
}

/* The upstream took enough of the streamed body: the client's reading
 * goes on. */
static void up_drain(void *data)
{
    latch_pxy *p = data;

    if (!p->over)
        latch__res_body_resume(p->res);
}

static const latch_ucall_ops up_ops = {
    .head = up_head,
    .body = up_body,
    .done = up_done,
    .interim = up_interim,
    .drain = up_drain,
};

/* ---- the streamed request body (conn.c's sink) ------------------------- */

static int sink_data(latch_body_sink *self, const char *b, size_t n)
{
    latch_pxy *p = LATCH_CONTAINER_OF(self, latch_pxy, sink);
    uv_buf_t v[3];
    char size[24];
    int k = 0;

    if (p->call == NULL)
        return 1; /* the exchange is over: the rest is dropped */
    if (p->chunked) {
        int hl = snprintf(size, sizeof(size), "%zx\r\n", n);
        v[k++] = uv_buf_init(size, (unsigned)hl);
    }
    v[k++] = uv_buf_init((char *)(uintptr_t)b, (unsigned)n);
    if (p->chunked)
        v[k++] = uv_buf_init("\r\n", 2);
    /* 0: the upstream holds enough; an error: done will tell. */
    return latch__ucall_send(p->call, v, k) == 0 ? 0 : 1;
}

static void sink_end(latch_body_sink *self, int status)
{
    latch_pxy *p = LATCH_CONTAINER_OF(self, latch_pxy, sink);
    static const char last[] = "0\r\n\r\n";

    if (p->call == NULL)
        return;
    if (status == 0) {
        uv_buf_t v = uv_buf_init((char *)(uintptr_t)last, sizeof(last) - 1);

        if (p->chunked)
            (void)latch__ucall_send(p->call, &v, 1);
        latch__ucall_send_end(p->call);
        return;
    }
    /* The body will never be whole (too large, malformed, the client's
     * timeout): the upstream request cannot complete, and conn.c answers
     * the client itself. */
    count(p, LATCH_UP_ABORTED);
    latch__ucall_abort(p->call);
    p->call = NULL;
}

/*
 * The request goes upstream now: the pipe's first pull, which comes once
 * every earlier response of the client connection ended (only then may
 * this one write). A pipelined client's requests therefore go upstream
 * one at a time, each on the connection the one before it just gave
 * back to the pool (nginx's way), never one upstream connection each at
 * once; and the response timeout runs from here, not from the dispatch.
 */
static void call_start(latch_pxy *p)
{
    latch_res *res = p->res;
    latch_uopts uo;
    char *req = p->req;
    int r;

    p->waiting = false;
    p->req = NULL; /* the call owns it, also on failure */
    uo.connect_ms = p->opts.connect_timeout_ms;
    uo.response_ms = p->opts.response_timeout_ms;
    uo.idle_ms = p->opts.idle_timeout_ms;
    uo.max_idle = p->opts.max_idle_per_upstream;
    r = latch__ucall_start(res->w, p->u, &uo, req, p->req_len, p->streamed,
                           idempotent(res->req.method), res->req.is_head,
                           &up_ops, p, &p->call);
    if (r < 0) {
        /* The pipe ends through its own done. */
        p->call = NULL;
        count(p, LATCH_UP_ERROR);
        latch_res_pipe_fail_at(res, r, p->at);
        return;
    }
    /* The body goes on as it arrives (from the loop, not from here);
     * until now the connection read none of it (no sink). */
    p->sink.data = sink_data;
    p->sink.end = sink_end;
    if (p->streamed && latch__res_body_sink(res, &p->sink) < 0) {
        p->streamed = false;
        latch__ucall_abort(p->call);
        p->call = NULL;
        latch_res_pipe_fail_at(res, LATCH_ERR_STATE, p->at);
    }
}

/* The response may write: the first time, the call starts; later, the
 * client's output drained: the upstream read goes on. */
static void pipe_pull(latch_res *res, void *data)
{
    latch_pxy *p = data;

    (void)res;
    if (p->waiting) {
        p->busy++;
        call_start(p);
        pxy_leave(p);
        return;
    }
    if (!p->paused || p->call == NULL)
        return;
    p->paused = false;
    p->busy++;
    latch__ucall_resume(p->call);
    pxy_leave(p);
}

/* The response is over, one way or another: the upstream call too. */
static void pipe_done(latch_res *res, int status, void *data)
{
    latch_pxy *p = data;

    (void)res; /* a handle: p->res is latch's pointer */
    (void)status;
    p->over = true;
    if (p->streamed)
        latch__res_body_stop(p->res);
    if (p->call != NULL) {
        count(p, LATCH_UP_ABORTED);
        latch__ucall_abort(p->call);
        p->call = NULL;
    }
    if (p->busy == 0)
        pxy_free(p);
}

static int refuse(latch_res *res, int code, const char *msg, latch_site at)
{
    latch__violation(res, code, "latch_proxy", msg, at);
    return code;
}

/*
 * Starts one exchange; `p` is filled but for res/frame; freed on error.
 * The request is built now (its errors are the caller's); it goes
 * upstream at the pipe's first pull (call_start). A response that ends
 * before (the client left, a request timeout) frees it unsent: pipe_done.
 */
static int proxy_start(latch_res *res, uint16_t hf, latch_pxy *p, latch_site at)
{
    latch_buf reqb = {0};
    int r;

    p->res = res;
    p->at = at;
    p->frame = latch__frame_pick(hf, res);
    if (res->state != LATCH_RS_FRESH || res->detached) {
        pxy_free(p);
        if (res->state == LATCH_RS_DESTROYED || res->detached)
            return refuse(res, LATCH_ERR_STREAM_DESTROYED,
                          "The response was destroyed", at);
        return refuse(res, LATCH_ERR_HTTP_HEADERS_SENT,
                      "Cannot proxy: the response was already sent", at);
    }
    if ((r = build_request(p, &reqb)) < 0) {
        latch__buf_dispose(&reqb);
        pxy_free(p);
        return r == LATCH_ERR_LIMIT ? refuse(res, LATCH_ERR_LIMIT,
                                             "The request head is too large "
                                             "to forward",
                                             at)
                                    : r;
    }
    p->req = reqb.data;
    p->req_len = reqb.len;
    p->waiting = true;
    if ((r = latch__res_pipe_named(res, pipe_pull, pipe_done, p, "latch_proxy",
                                   at)) < 0) {
        pxy_free(p);
        return r;
    }
    latch__pipe_make_sole(res);
    return 0;
}

int latch_proxy_at(latch_req *req, latch_res *res, const char *upstream,
                   const latch_proxy_opts *opts, latch_site at)
{
    uint16_t hf = latch__frame_of(res);
    latch_res *rq;
    latch_pxy *p;
    int r;

    if (res != NULL && (res = latch__res_in(res, "latch_proxy", &at)) == NULL)
        return LATCH_ERR_STREAM_DESTROYED;
    if (req != NULL && (rq = latch__res_in(req, "latch_proxy", &at)) == NULL)
        return LATCH_ERR_STREAM_DESTROYED;
    if (res == NULL || req == NULL)
        return LATCH_ERR_INVALID_ARG;
    if (!pthread_equal(pthread_self(), res->w->thread))
        return refuse(res, LATCH_ERR_WRONG_THREAD, NULL, at);
    if (rq != res)
        return refuse(res, LATCH_ERR_INVALID_ARG,
                      "req and res are not the same request's", at);
    if (upstream == NULL)
        return refuse(res, LATCH_ERR_INVALID_ARG, "The upstream is NULL", at);
    if ((p = calloc(1, sizeof(*p))) == NULL)
        return LATCH_ERR_NOMEM;
    if ((r = latch__upstream_parse(upstream, &p->own)) < 0) {
        free(p);
        return r == LATCH_ERR_INVALID_ARG
                   ? refuse(res, r,
                            "The upstream must be http://host[:port][/base]",
                            at)
                   : r;
    }
    p->u = &p->own;
    if (opts != NULL)
        p->opts = *opts;
    return proxy_start(res, hf, p, at);
}

/* latch_use_proxy's middleware: every matching request is proxied. */
static int proxy_handler(latch_req *req, latch_res *res, void *data)
{
    const proxy_cfg *c = data;
    latch_res *r = latch__res_in(res, "latch_use_proxy", &latch__no_site);
    latch_pxy *p;
    int e;

    (void)req;
    if (r == NULL)
        return LATCH_ERR_STREAM_DESTROYED;
    if ((p = calloc(1, sizeof(*p))) == NULL)
        return LATCH_ERR_NOMEM;
    p->u = &c->u;
    p->opts = c->opts;
    p->opts.strip_prefix = c->strip;
    e = proxy_start(r, latch__frame_of(res), p, latch__no_site);
    return e < 0 ? e : LATCH_DONE;
}

static void cfg_free(void *v)
{
    proxy_cfg *c = v;

    latch__upstream_dispose(&c->u);
    free(c->strip);
    free(c);
}

int latch_use_proxy(latch_app *app, const char *prefix, const char *upstream,
                    const latch_proxy_opts *opts)
{
    proxy_cfg *c;
    int r;

    if (app == NULL || upstream == NULL)
        return LATCH_ERR_INVALID_ARG;
    if (app->running)
        return LATCH_ERR_STATE;
    if ((c = calloc(1, sizeof(*c))) == NULL)
        return LATCH_ERR_NOMEM;
    if ((r = latch__upstream_parse(upstream, &c->u)) < 0) {
        free(c);
        return r;
    }
    if (opts != NULL)
        c->opts = *opts;
    if (c->opts.strip_prefix != NULL &&
        (c->strip = strdup(c->opts.strip_prefix)) == NULL) {
        cfg_free(c);
        return LATCH_ERR_NOMEM;
    }
    c->opts.strip_prefix = NULL;
    if ((r = latch__app_keep(app, c, cfg_free)) < 0)
        return r;
    if (prefix != NULL && strcmp(prefix, "/") == 0)
        prefix = NULL;
    if ((r = latch_use_at(app, prefix, proxy_handler, c, "latch_use_proxy",
                          latch__no_site)) < 0)
        return r;
    /* Its requests' bodies stream to the upstream (conn.c). */
    latch__app_stream_last(app);
    return 0;
}
