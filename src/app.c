/*
 * app.c - the app object and its settings (latch_app_new, limits,
 * latch_run, latch_stop: listeners and workers are server.c's), and
 * registration: middleware, routes, body limits and error handlers become
 * the layers chain.c runs (chain.h), with the route tree of router.c
 * built once before the workers start.
 */
#include "chain.h"
#include "internal.h"
#include "router.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct latch_keep {
    struct latch_keep *next;
    void *p;
    void (*fn)(void *);
};

int latch__app_keep(latch_app *app, void *p, void (*fn)(void *))
{
    struct latch_keep *k = malloc(sizeof(*k));

    if (k == NULL) {
        fn(p);
        return LATCH_ERR_NOMEM;
    }
    k->p = p;
    k->fn = fn;
    k->next = app->keeps;
    app->keeps = k;
    return 0;
}

static void free_layers(latch_app *app)
{
    latch_layer *l, *ln;
    latch_errlayer *e, *en;
    struct latch_keep *k;

    while ((k = app->keeps) != NULL) {
        app->keeps = k->next;
        k->fn(k->p);
        free(k);
    }

    for (l = app->layers; l != NULL; l = ln) {
        ln = l->next;
        free(l->method);
        free(l->pattern);
        free(l->pattern_src);
        free(l->name);
        free(l);
    }
    for (e = app->errlayers; e != NULL; e = en) {
        en = e->next;
        free(e->name);
        free(e);
    }
    for (l = app->limits; l != NULL; l = ln) {
        ln = l->next;
        free(l->method);
        free(l->pattern);
        free(l->pattern_src);
        free(l);
    }
    app->limits = app->limits_tail = NULL;
    app->layers = app->layers_tail = NULL;
    app->errlayers = app->errlayers_tail = NULL;
    latch__router_free(app->router);
    app->router = NULL;
    free(app->by_id);
    app->by_id = NULL;
    app->nlayers = 0;
}

/*
 * Readies the layers for matching, once, before the workers start: the
 * route tree, an index by id, and for each layer the next middleware, so
 * that a request visits only the middleware and the routes that match it,
 * in registration order, however many routes there are.
 */
static int prepare(latch_app *app)
{
    latch_layer *l, *next_mw = NULL, **by_id;
    uint32_t n = 0, i;
    int r;

    for (l = app->layers; l != NULL; l = l->next)
        l->id = n++;
    by_id = calloc(n ? n : 1, sizeof(*by_id));
    if (by_id == NULL)
        return LATCH_ERR_NOMEM;
    latch__router_free(app->router);
    app->router = latch__router_new();
    if (app->router == NULL) {
        free(by_id);
        return LATCH_ERR_NOMEM;
    }
    for (l = app->layers; l != NULL; l = l->next) {
        by_id[l->id] = l;
        if (l->kind == L_ROUTE &&
            (r = latch__router_add(app->router, l->pattern_src, l->id)) < 0) {
            free(by_id);
            return r;
        }
    }
    for (i = n; i-- > 0;) {
        by_id[i]->next_mw = next_mw;
        if (by_id[i]->kind == L_MIDDLEWARE)
            next_mw = by_id[i];
    }
    /* The parser refuses bodies above the largest limit that any request
     * can have; each request's own limit is checked once its head is in
     * (body_limit). */
    app->cfg.parse.body = app->cfg.body;
    for (l = app->limits; l != NULL; l = l->next)
        if (l->body_limit > app->cfg.parse.body)
            app->cfg.parse.body = l->body_limit;
    /* A body streamed to a proxy has no limit but a rule's. */
    if (app->streams)
        app->cfg.parse.body = UINT64_MAX;
    free(app->by_id);
    app->by_id = by_id;
    app->first_mw = next_mw;
    app->nlayers = n;
    return 0;
}

/* A method name is a token (RFC 9110 §9.1); "*" stands for every method. */
static bool is_token(const char *s)
{
    if (*s == '\0')
        return false;
    for (; *s; s++)
        if (!(*s > 0x20 && *s < 0x7f &&
              strchr("\"(),/:;<=>?@[\\]{}", *s) == NULL))
            return false;
    return true;
}

void latch__app_stream_last(latch_app *app)
{
    if (app->layers_tail != NULL) {
        app->layers_tail->streams = true;
        app->streams = true;
    }
}

static int add_layer(latch_app *app, int kind, const char *method,
                     const char *pattern, latch_handler fn, void *data,
                     const char *name, latch_site at)
{
    latch_layer *l;
    char *p;

    if (app == NULL || (fn == NULL && kind != L_LIMIT))
        return LATCH_ERR_INVALID_ARG;
    if (app->running)
        return LATCH_ERR_STATE;
    if (method != NULL && !is_token(method))
        return LATCH_ERR_INVALID_ARG; /* "" or "G T" would never match */
    if (pattern == NULL && kind == L_ROUTE)
        return LATCH_ERR_INVALID_ARG; /* a route needs a path */
    if (pattern == NULL)
        pattern = "/";
    if (pattern[0] != '/')
        return LATCH_ERR_INVALID_ARG;
    l = calloc(1, sizeof(*l));
    if (l == NULL)
        return LATCH_ERR_NOMEM;
    l->kind = kind;
    l->fn = fn;
    l->data = data;
    l->at = at;
    l->pattern = strdup(pattern);
    l->pattern_src = strdup(pattern);
    l->name = name != NULL ? strdup(name) : NULL;
    if (l->pattern == NULL || l->pattern_src == NULL ||
        (name != NULL && l->name == NULL))
        goto fail;
    if (method != NULL && strcmp(method, "*") != 0) {
        l->method = strdup(method);
        if (l->method == NULL)
            goto fail;
    }
    /* Middleware prefix without its trailing slash ("/" matches all). */
    l->prefix_len = strlen(l->pattern);
    while (l->prefix_len > 0 && l->pattern[l->prefix_len - 1] == '/')
        l->prefix_len--;
    /* Split the pattern into segments: literal, ":name" or a final "*". */
    for (p = l->pattern + 1; kind != L_MIDDLEWARE && *p;) {
        char *e = strchr(p, '/');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        if (l->nsegs == LATCH__ROUTER_MAX_SEGS || n > UINT16_MAX ||
            (p[0] == '*' && (n != 1 || e != NULL)) || (p[0] == ':' && n < 2))
            goto fail_arg;
        l->segs[l->nsegs] = p;
        l->seg_len[l->nsegs] = (uint16_t)n;
        l->nsegs++;
        if (e == NULL)
            break;
        *e = '\0'; /* names of parameters become C strings */
        p = e + 1;
    }
    if (kind == L_LIMIT) {
        if (app->limits_tail)
            app->limits_tail->next = l;
        else
            app->limits = l;
        app->limits_tail = l;
        return 0;
    }
    if (app->layers_tail)
        app->layers_tail->next = l;
    else
        app->layers = l;
    app->layers_tail = l;
    return 0;

fail_arg:
    free(l->method);
    free(l->pattern);
    free(l->pattern_src);
    free(l->name);
    free(l);
    return LATCH_ERR_INVALID_ARG;
fail:
    free(l->method);
    free(l->pattern);
    free(l->pattern_src);
    free(l->name);
    free(l);
    return LATCH_ERR_NOMEM;
}

/* The registration macros of latch.h pass the handler's name and site;
 * these definitions are the plain functions behind the same names. */
#undef latch_use
#undef latch_route
#undef latch_get
#undef latch_post
#undef latch_put
#undef latch_delete
#undef latch_patch
#undef latch_all
#undef latch_use_error

static const latch_site unknown_site = {NULL, 0, NULL};

int latch_use_at(latch_app *app, const char *prefix, latch_handler fn,
                 void *data, const char *name, latch_site at)
{
    return add_layer(app, L_MIDDLEWARE, NULL, prefix, fn, data, name, at);
}

int latch_route_at(latch_app *app, const char *method, const char *pattern,
                   latch_handler fn, void *data, const char *name,
                   latch_site at)
{
    return add_layer(app, L_ROUTE, method, pattern, fn, data, name, at);
}

int latch_use(latch_app *app, const char *prefix, latch_handler fn, void *data)
{
    return latch_use_at(app, prefix, fn, data, NULL, unknown_site);
}

int latch_route(latch_app *app, const char *method, const char *pattern,
                latch_handler fn, void *data)
{
    return latch_route_at(app, method, pattern, fn, data, NULL, unknown_site);
}

int latch_get(latch_app *app, const char *p, latch_handler fn, void *d)
{
    return latch_route_at(app, "GET", p, fn, d, NULL, unknown_site);
}

int latch_post(latch_app *app, const char *p, latch_handler fn, void *d)
{
    return latch_route_at(app, "POST", p, fn, d, NULL, unknown_site);
}

int latch_put(latch_app *app, const char *p, latch_handler fn, void *d)
{
    return latch_route_at(app, "PUT", p, fn, d, NULL, unknown_site);
}

int latch_delete(latch_app *app, const char *p, latch_handler fn, void *d)
{
    return latch_route_at(app, "DELETE", p, fn, d, NULL, unknown_site);
}

int latch_patch(latch_app *app, const char *p, latch_handler fn, void *d)
{
    return latch_route_at(app, "PATCH", p, fn, d, NULL, unknown_site);
}

int latch_all(latch_app *app, const char *p, latch_handler fn, void *d)
{
    return latch_route_at(app, NULL, p, fn, d, NULL, unknown_site);
}

int latch_route_body_limit(latch_app *app, const char *method,
                           const char *pattern, uint64_t bytes)
{
    int r = add_layer(app, L_LIMIT, method, pattern, NULL, NULL, NULL,
                      unknown_site);

    if (r == 0)
        app->limits_tail->body_limit = bytes;
    return r;
}

int latch_use_error_at(latch_app *app, latch_error_handler fn, void *data,
                       const char *name, latch_site at)
{
    latch_errlayer *e;

    if (app == NULL || fn == NULL)
        return LATCH_ERR_INVALID_ARG;
    if (app->running)
        return LATCH_ERR_STATE;
    e = calloc(1, sizeof(*e));
    if (e == NULL)
        return LATCH_ERR_NOMEM;
    e->fn = fn;
    e->data = data;
    e->at = at;
    if (name != NULL && (e->name = strdup(name)) == NULL) {
        free(e);
        return LATCH_ERR_NOMEM;
    }
    if (app->errlayers_tail)
        app->errlayers_tail->next = e;
    else
        app->errlayers = e;
    app->errlayers_tail = e;
    return 0;
}

int latch_use_error(latch_app *app, latch_error_handler fn, void *data)
{
    return latch_use_error_at(app, fn, data, NULL, unknown_site);
}

/* ------------------------------------------------------------------ */
/* The app object, its settings, run and stop                           */
/* ------------------------------------------------------------------ */

/*
 * LATCH_SHAKE as a seed: a decimal number from 1 to 2^64-1 turns the
 * shaker on with that seed; unset, empty, "0" or anything that is not a
 * number leaves it off (0), so "LATCH_SHAKE=0" reads as "off".
 */
static uint64_t shake_seed(const char *s)
{
    uint64_t v = 0;

    if (s == NULL || *s == '\0')
        return 0;
    for (; *s != '\0'; s++) {
        if (*s < '0' || *s > '9')
            return 0;
        if (v > (UINT64_MAX - (uint64_t)(*s - '0')) / 10)
            return 0; /* out of range: not a seed */
        v = v * 10 + (uint64_t)(*s - '0');
    }
    return v;
}

latch_app *latch_app_new(void)
{
    latch_app *app = calloc(1, sizeof(*app));
    const char *strict;

    if (app == NULL)
        return NULL;
    app->cfg.parse = latch__parse_limits_default;
    app->cfg.body = app->cfg.parse.body;
    app->cfg.pipeline = 64;
    app->cfg.header_ms = 60000;
    app->cfg.body_ms = 60000;
    app->cfg.keepalive_ms = 5000;
    app->cfg.linger_ms = 2000;
    app->cfg.drain_ms = 10000;
    app->cfg.output = (uint64_t)16 << 20;
    app->cfg.send_ms = 60000;
    app->cfg.receive_ms = 300000;
    app->cfg.rate_grace_ms = 10000;
    app->cfg.min_rate = 500;
    app->cfg.conn_buffer = (uint64_t)1 << 20;
    app->cfg.handshake_ms = 10000;
    app->cfg.max_handshakes = 1024;
    app->handle_signals = true;
    latch__server_init(app);
    pthread_mutex_init(&app->site_mu, NULL);
    app->cfg.request_status = 503;
    app->sse_heartbeat_ms = 15000;
    app->channel_history = 256;
    app->slow_max_bytes = (size_t)1 << 20;
    app->slow_policy = 0; /* LATCH_SLOW_DISCONNECT */
    app->shake_seed = shake_seed(getenv("LATCH_SHAKE"));
    {
        const char *env = getenv("LATCH_ENV");
        app->development = env != NULL && strcmp(env, "development") == 0;
    }
    strict = getenv("LATCH_STRICT");
    if (strict != NULL && strcmp(strict, "1") == 0)
        app->policy = LATCH_POLICY_ABORT;
    latch__diag_init(app);
    latch__ops_init(app);
    latch__trace_init(app);
    return app;
}

void latch_app_free(latch_app *app)
{
    if (app == NULL)
        return;
    latch__server_free(app);
    free_layers(app);
    latch__hub_free(app);
    pthread_mutex_destroy(&app->site_mu);
    latch__ops_free(app);
    latch__diag_free(app);
    free(app);
}

int latch_app_set_workers(latch_app *app, int n)
{
    if (app == NULL || n < 0 || n > 256)
        return LATCH_ERR_INVALID_ARG;
    if (app->running)
        return LATCH_ERR_STATE;
    app->nworkers = n;
    return 0;
}

int latch_app_set_request_timeout(latch_app *app, uint64_t ms, int status)
{
    if (app == NULL || (status != 0 && (status < 400 || status > 599)) ||
        ms > 24ull * 3600 * 1000)
        return LATCH_ERR_INVALID_ARG;
    if (app->running)
        return LATCH_ERR_STATE;
    app->cfg.request_ms = ms;
    app->cfg.request_status = status ? status : 503;
    return 0;
}

int latch_app_set_trust_proxy(latch_app *app, int hops)
{
    if (app == NULL || hops < 0 || hops > 64)
        return LATCH_ERR_INVALID_ARG;
    app->trust_proxy = hops;
    return 0;
}

int latch_app_set_development(latch_app *app, bool on)
{
    if (app == NULL)
        return LATCH_ERR_INVALID_ARG;
    app->development = on;
    return 0;
}

int latch_app_set_handle_signals(latch_app *app, bool on)
{
    if (app == NULL)
        return LATCH_ERR_INVALID_ARG;
    if (app->running)
        return LATCH_ERR_STATE;
    app->handle_signals = on;
    return 0;
}

int latch_app_set_limit(latch_app *app, int which, uint64_t v)
{
    latch_config *c;

    if (app == NULL)
        return LATCH_ERR_INVALID_ARG;
    if (app->running)
        return LATCH_ERR_STATE;
    c = &app->cfg;
    /* Head limits are offsets into one read buffer: keep them in 32 bits
     * and sane. */
    switch (which) {
    case LATCH_LIMIT_REQUEST_LINE:
    case LATCH_LIMIT_FIELD_LINE:
    case LATCH_LIMIT_HEAD:
        if (v < 64 || v > (1u << 20))
            return LATCH_ERR_INVALID_ARG;
        if (which == LATCH_LIMIT_REQUEST_LINE)
            c->parse.request_line = (uint32_t)v;
        else if (which == LATCH_LIMIT_FIELD_LINE)
            c->parse.field_line = (uint32_t)v;
        else
            c->parse.head = (uint32_t)v;
        return 0;
    case LATCH_LIMIT_FIELDS:
        if (v < 1 || v > 10000)
            return LATCH_ERR_INVALID_ARG;
        c->parse.fields = (uint32_t)v;
        return 0;
    case LATCH_LIMIT_BODY:
        c->body = v;
        c->parse.body = v; /* raised at latch_run for larger route limits */
        return 0;
    case LATCH_LIMIT_CHUNK_EXT:
        if (v > UINT32_MAX)
            return LATCH_ERR_INVALID_ARG;
        c->parse.chunk_ext = (uint32_t)v;
        return 0;
    case LATCH_LIMIT_PIPELINE:
        if (v < 1 || v > 1024)
            return LATCH_ERR_INVALID_ARG;
        c->pipeline = (uint32_t)v;
        return 0;
    case LATCH_LIMIT_OUTPUT:
        /* at least the high-water mark (64 KiB), at most 1 TiB */
        if (v < 65536 || v > ((uint64_t)1 << 40))
            return LATCH_ERR_INVALID_ARG;
        c->output = v;
        return 0;
    case LATCH_LIMIT_CONNECTIONS:
        if (v > (1u << 24))
            return LATCH_ERR_INVALID_ARG;
        c->max_conns = (uint32_t)v;
        return 0;
    case LATCH_LIMIT_HANDSHAKES:
        if (v < 1 || v > (1u << 24))
            return LATCH_ERR_INVALID_ARG;
        c->max_handshakes = (uint32_t)v;
        return 0;
    case LATCH_LIMIT_CONN_BUFFER:
        if (v < 4096 || v > ((uint64_t)1 << 40))
            return LATCH_ERR_INVALID_ARG;
        c->conn_buffer = v;
        return 0;
    case LATCH_LIMIT_MIN_RATE:
        if (v > ((uint64_t)1 << 40))
            return LATCH_ERR_INVALID_ARG;
        c->min_rate = v;
        return 0;
    default: break;
    }
    if (v < 1 || v > 24ull * 3600 * 1000)
        return LATCH_ERR_INVALID_ARG;
    switch (which) {
    case LATCH_TIMEOUT_HEADER: c->header_ms = v; return 0;
    case LATCH_TIMEOUT_BODY: c->body_ms = v; return 0;
    case LATCH_TIMEOUT_KEEPALIVE: c->keepalive_ms = v; return 0;
    case LATCH_TIMEOUT_LINGER: c->linger_ms = v; return 0;
    case LATCH_TIMEOUT_DRAIN: c->drain_ms = v; return 0;
    case LATCH_TIMEOUT_SEND: c->send_ms = v; return 0;
    case LATCH_TIMEOUT_RECEIVE: c->receive_ms = v; return 0;
    case LATCH_TIMEOUT_RATE_GRACE: c->rate_grace_ms = v; return 0;
    case LATCH_TIMEOUT_HANDSHAKE: c->handshake_ms = v; return 0;
    default: return LATCH_ERR_INVALID_ARG;
    }
}

int latch_run(latch_app *app)
{
    int r;

    if (app == NULL)
        return LATCH_ERR_INVALID_ARG;
    /* Worker 0 took the listening sockets of the last run: listen again
     * before running again. */
    if (!latch__server_ready(app))
        return LATCH_ERR_STATE;
    if ((r = prepare(app)) < 0)
        return r;
    app->serve = &latch__chain_serve;
    return latch__server_run(app);
}

void latch_stop(latch_app *app)
{
    if (app == NULL)
        return;
    latch__server_stop(app);
}
