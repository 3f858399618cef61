/*
 * ops.c - the operational counters of a response, kept per worker: when a
 * dispatched response closes (the chain's observe op), it is counted here
 * for /metrics (metrics.c renders the blocks), logged by log.c and its
 * "finished" traced (trace.c). Each worker counts into its own block
 * (latch_wops, made the first time the worker needs it and kept until
 * latch_app_free, so counts survive from one latch_run to the next); only
 * the owning worker writes a block, with a relaxed load and store (a plain
 * add on x86, no lock), and a scrape reads every block with relaxed loads
 * and sums. Nothing is counted unless metrics or the access log are on.
 */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>

/* The histogram's upper bounds, in ns (Prometheus' default buckets). */
static const uint64_t bounds_ns[LATCH_NBUCKETS - 1] = {
    5000000ull,    10000000ull,   25000000ull,   50000000ull,
    100000000ull,  250000000ull,  500000000ull,  1000000000ull,
    2500000000ull, 5000000000ull, 10000000000ull};
void latch__ops_init(latch_app *app)
{
    pthread_mutex_init(&app->ops_mu, NULL);
    pthread_mutex_init(&app->ustat_mu, NULL);
}

void latch__ops_free(latch_app *app)
{
    latch_wops *o, *next;

    latch__alog_free(app);
    for (o = atomic_load(&app->wops); o != NULL; o = next) {
        next = o->next;
        pthread_mutex_destroy(&o->log_mu);
        free(o->log_buf);
        free(o);
    }
    atomic_store(&app->wops, NULL);
    pthread_mutex_destroy(&app->ops_mu);
    free(app->ustats);
    app->ustats = NULL;
    atomic_store(&app->nustats, 0);
    pthread_mutex_destroy(&app->ustat_mu);
}

/* The worker's block: found by index (a later latch_run's worker takes
 * over its predecessor's), else made. NULL when out of memory: that
 * response is not counted. Worker thread only. */
static latch_wops *wops_of(latch_worker *w)
{
    latch_app *app = w->app;
    latch_wops *o;

    if (w->ops != NULL)
        return w->ops;
    pthread_mutex_lock(&app->ops_mu);
    for (o = atomic_load(&app->wops); o != NULL; o = o->next)
        if (o->index == w->index)
            break;
    if (o == NULL && (o = calloc(1, sizeof(*o))) != NULL) {
        o->index = w->index;
        pthread_mutex_init(&o->log_mu, NULL);
        o->next = atomic_load(&app->wops);
        atomic_store(&app->wops, o); /* readers walk without the lock */
    }
    pthread_mutex_unlock(&app->ops_mu);
    w->ops = o;
    return o;
}

/* One more, by the block's only writer. */
static inline void bump(_Atomic uint64_t *c, uint64_t n)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n,
                          memory_order_relaxed);
}

/* The peer's address for the log, or "-". */
static void peer(latch_res *res, char *out, size_t cap)
{
    struct sockaddr_storage ss;

    snprintf(out, cap, "-");
    if (latch__res_peer(res, &ss) != 0)
        return;
    if (ss.ss_family == AF_INET6)
        uv_ip6_name((struct sockaddr_in6 *)&ss, out, cap);
    else if (ss.ss_family == AF_INET)
        uv_ip4_name((struct sockaddr_in *)&ss, out, cap);
}

void latch__ops_closed(latch_res *res, bool finished)
{
    latch_app *app = res->w->app;
    latch_wops *o;
    uint64_t dur;
    int status, b;

    if (res->t_start == 0)
        return; /* never dispatched */
    if (finished && (app->ops & LATCH_OPS_TRACE))
        latch__trace(res, "finished", NULL, (latch_site){NULL, 0, NULL});
    if (!(app->ops & (LATCH_OPS_METRICS | LATCH_OPS_LOG)) ||
        (o = wops_of(res->w)) == NULL)
        return; /* tracing only, or no memory */
    dur = uv_hrtime() - res->t_start;
    /* What the client got: the status once the head went out; for a
     * response cut before that, nginx's 499 (closed without a response). */
    status = res->status;
    if (!finished &&
        (res->state == LATCH_RS_FRESH ||
         (res->state == LATCH_RS_DESTROYED && res->headers_call == NULL)))
        status = 499;
    if (app->ops & LATCH_OPS_METRICS) {
        if (status >= 100 && status < 100 + LATCH_NSTATUS)
            bump(&o->status[status - 100], 1);
        else
            bump(&o->status[LATCH_NSTATUS], 1);
        for (b = 0; b < LATCH_NBUCKETS - 1 && dur > bounds_ns[b]; b++)
            ;
        bump(&o->bucket[b], 1);
        bump(&o->dur_ns, dur);
        bump(&o->bytes, latch__res_body_bytes(res));
    }
    if (app->ops & LATCH_OPS_LOG) {
        char addr[64];
        peer(res, addr, sizeof(addr));
        latch__alog_line(res, o, addr, status, dur);
    }
}
