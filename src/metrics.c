/*
 * metrics.c - the /metrics route (latch_use_metrics): Prometheus text
 * exposition format 0.0.4, rendered from the per-worker blocks ops.c
 * counts into (responses by status, a latency histogram, body bytes),
 * summed on scrape with relaxed loads; violation counters are the app's
 * own (diag.c), connection counters the server's (latch_app_counter).
 * Nothing is counted unless latch_use_metrics was called.
 *
 * It is not a client library: no registry, no user-defined series.
 */
#include "internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const bounds_text[LATCH_NBUCKETS] = {
    "0.005", "0.01", "0.025", "0.05", "0.1", "0.25",
    "0.5",   "1",    "2.5",   "5",    "10",  "+Inf"};

/* ------------------------------------------------------------------ */
/* The exposition                                                       */
/* ------------------------------------------------------------------ */

/* The text, grown as needed up to a cap (a scrape of a pathological
 * site table must not take the worker's memory). */
#define TEXT_MAX (4u << 20)

typedef struct text {
    char *p;
    size_t len, cap;
    bool full;
} text;

static void add(text *t, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void add(text *t, const char *fmt, ...)
{
    va_list ap;
    int n;

    for (;;) {
        if (t->full)
            return;
        va_start(ap, fmt);
        n = vsnprintf(t->p + t->len, t->cap - t->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            t->full = true;
            return;
        }
        if ((size_t)n < t->cap - t->len) {
            t->len += (size_t)n;
            return;
        }
        size_t cap = t->cap * 2;
        char *p = cap <= TEXT_MAX ? realloc(t->p, cap) : NULL;
        if (p == NULL) {
            t->full = true;
            return;
        }
        t->p = p;
        t->cap = cap;
    }
}

/* A label value: backslash, double quote and newline escaped (0.0.4). */
static void add_label(text *t, const char *s)
{
    char buf[512];
    size_t n = 0;

    for (; *s != '\0' && n < sizeof(buf) - 3; s++) {
        if (*s == '\\' || *s == '"') {
            buf[n++] = '\\';
            buf[n++] = *s;
        } else if (*s == '\n') {
            buf[n++] = '\\';
            buf[n++] = 'n';
        } else {
            buf[n++] = *s;
        }
    }
    buf[n] = '\0';
    add(t, "%s", buf);
}

static void family(text *t, const char *name, const char *type,
                   const char *help)
{
    add(t, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* Every block's counters, summed. */
typedef struct totals {
    uint64_t status[LATCH_NSTATUS + 1], bucket[LATCH_NBUCKETS];
    uint64_t dur_ns, bytes;
} totals;

static uint64_t get(_Atomic uint64_t *c)
{
    return atomic_load_explicit(c, memory_order_relaxed);
}

static void sum(latch_app *app, totals *t)
{
    latch_wops *o;
    size_t i;

    memset(t, 0, sizeof(*t));
    for (o = atomic_load(&app->wops); o != NULL; o = o->next) {
        for (i = 0; i <= LATCH_NSTATUS; i++)
            t->status[i] += get(&o->status[i]);
        for (i = 0; i < LATCH_NBUCKETS; i++)
            t->bucket[i] += get(&o->bucket[i]);
        t->dur_ns += get(&o->dur_ns);
        t->bytes += get(&o->bytes);
    }
}

static void site_line(const char *file, int line, int code, uint64_t count,
                      void *data)
{
    text *t = data;
    char site[600];

    snprintf(site, sizeof(site), "%s:%d", file, line);
    add(t, "latch_violation_sites_total{code=\"");
    add_label(t, latch_err_name(code));
    add(t, "\",site=\"");
    add_label(t, site);
    add(t, "\"} %llu\n", (unsigned long long)count);
}

static void channel_line(const char *channel, int subscribers, void *data)
{
    text *t = data;

    add(t, "latch_sse_subscribers{channel=\"");
    add_label(t, channel);
    add(t, "\"} %d\n", subscribers);
}

static void render(latch_app *app, text *t)
{
    static const int codes[] = {
#define LATCH_X_(name, num, msg) num,
        LATCH_ERRNO_MAP(LATCH_X_)
#undef LATCH_X_
    };
    uint64_t cum = 0, conns = 0;
    totals all;
    size_t i;
    int k;

    sum(app, &all);
    family(t, "latch_requests_total", "counter",
           "Responses by HTTP status code (499: the client left first).");
    for (i = 0; i < LATCH_NSTATUS; i++) {
        if (all.status[i] > 0)
            add(t, "latch_requests_total{code=\"%zu\"} %llu\n", i + 100,
                (unsigned long long)all.status[i]);
    }
    family(t, "latch_request_duration_seconds", "histogram",
           "Time from dispatch to the response's last byte or its cut.");
    for (k = 0; k < LATCH_NBUCKETS; k++) {
        cum += all.bucket[k];
        add(t, "latch_request_duration_seconds_bucket{le=\"%s\"} %llu\n",
            bounds_text[k], (unsigned long long)cum);
    }
    add(t, "latch_request_duration_seconds_sum %.9f\n",
        (double)all.dur_ns / 1e9);
    add(t, "latch_request_duration_seconds_count %llu\n",
        (unsigned long long)cum);

    /* Workers are alive while a scrape runs: it runs on one of them. */
    for (k = 0; app->workers != NULL && k < app->nworkers_running; k++)
        conns +=
            atomic_load_explicit(&app->workers[k].nconns, memory_order_relaxed);
    family(t, "latch_connections", "gauge", "Connections by state.");
    add(t, "latch_connections{state=\"open\"} %llu\n",
        (unsigned long long)conns);
    /* The accept loop's counters (server.c), the app's own. */
    family(t, "latch_connections_accepted_total", "counter",
           "Connections accepted.");
    add(t, "latch_connections_accepted_total %llu\n",
        (unsigned long long)latch_app_counter(app, LATCH_COUNTER_ACCEPTED));
    family(t, "latch_accept_errors_total", "counter",
           "accept(2) failures (EMFILE, ENFILE, ENOBUFS, ...).");
    add(t, "latch_accept_errors_total %llu\n",
        (unsigned long long)latch_app_counter(app,
                                              LATCH_COUNTER_ACCEPT_ERRORS));
    family(t, "latch_connections_dropped_total", "counter",
           "Connections refused at once: no descriptor or no room.");
    add(t, "latch_connections_dropped_total %llu\n",
        (unsigned long long)latch_app_counter(app, LATCH_COUNTER_DROPPED));
    family(t, "latch_connections_shed_total", "counter",
           "Connections closed to make room (idle first, then slowest).");
    add(t, "latch_connections_shed_total %llu\n",
        (unsigned long long)latch_app_counter(app, LATCH_COUNTER_SHED));

    family(t, "latch_violations_total", "counter",
           "Lifecycle violations by error code.");
    for (i = 0; i < sizeof(codes) / sizeof(codes[0]); i++)
        add(t, "latch_violations_total{code=\"%s\"} %llu\n",
            latch_err_name(codes[i]),
            (unsigned long long)latch_app_violation_count(app, codes[i]));
    family(t, "latch_violation_sites_total", "counter",
           "Lifecycle violations by error code and offending file:line.");
    latch_app_violation_sites(app, site_line, t);

    family(t, "latch_upstream_requests_total", "counter",
           "Proxied requests by upstream and outcome.");
    {
        static const char *const outcomes[LATCH_UP_NOUTCOMES] = {
            "ok", "error", "timeout", "truncated", "aborted"};
        int nu = atomic_load_explicit(&app->nustats, memory_order_acquire);

        for (int u = 0; u < nu; u++)
            for (int o = 0; o < LATCH_UP_NOUTCOMES; o++) {
                add(t, "latch_upstream_requests_total{upstream=\"");
                add_label(t, app->ustats[u].name);
                add(t, "\",outcome=\"%s\"} %llu\n", outcomes[o],
                    (unsigned long long)atomic_load_explicit(
                        &app->ustats[u].n[o], memory_order_relaxed));
            }
    }
    family(t, "latch_sse_subscribers", "gauge",
           "Subscribers (server-sent event streams and callbacks) by "
           "channel.");
    latch__hub_each(app, channel_line, t);
    family(t, "latch_bytes_sent_total", "counter", "Response body bytes sent.");
    add(t, "latch_bytes_sent_total %llu\n", (unsigned long long)all.bytes);
    family(t, "latch_access_log_dropped_total", "counter",
           "Access log lines dropped: the log descriptor was slow or failed.");
    add(t, "latch_access_log_dropped_total %llu\n",
        (unsigned long long)latch__alog_dropped(app));
}

static int on_metrics(latch_req *req, latch_res *res, void *data)
{
    latch_app *app = data;
    text t = {malloc(16384), 0, 16384, false};
    int r;

    (void)req;
    if (t.p == NULL)
        return LATCH_ERR_NOMEM; /* the error handlers answer */
    render(app, &t);
    if (t.full) {
        free(t.p);
        return LATCH_ERR_NOMEM;
    }
    latch_res_set_header(res, "Content-Type",
                         "text/plain; version=0.0.4; charset=utf-8");
    r = latch_res_send(res, t.p, t.len);
    free(t.p);
    return r < 0 ? r : LATCH_DONE;
}

int latch_use_metrics(latch_app *app, const char *path)
{
    int r;

    if (app == NULL || path == NULL)
        return LATCH_ERR_INVALID_ARG;
    r = latch_route_at(app, "GET", path, on_metrics, app, "latch_use_metrics",
                       (latch_site){__FILE__, __LINE__, "latch_use_metrics"});
    if (r == 0)
        app->ops |= LATCH_OPS_METRICS;
    return r;
}
