/*
 * router_bench - nanoseconds per route lookup, segment tree (src/router.c)
 * against a linear walk like the one app.c used, as the number of routes
 * grows.
 *
 * For R routes it registers R/2 resources, each with a literal route
 * "/api/v1/resourceK" and a parameter route "/api/v1/resourceK/:id/items",
 * and then looks up, many times over, three paths: the last resource's
 * literal path (the linear walk's worst case, as it must test every route
 * anyway: the chain needs all matches), a parameter path for it, and a path
 * that matches nothing. Each figure is the best of 5 timed runs of about
 * 50 ms each (clock_gettime, CLOCK_MONOTONIC), so it is the cost with warm
 * caches on one core.
 *
 * It is not a test: it checks only that each lookup found what it should
 * (and exits 1 otherwise), never how fast it was.
 *
 * Build: cc -O2 -Iinclude -Isrc bench/tools/router_bench.c src/router.c \
 *        -o /tmp/rb
 * Usage: rb [route counts...]   (default: 10 100 1000 10000)
 */
#define _GNU_SOURCE
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "router.h"

/* ------------------------------------------------------------------ */
/* The linear walk (app.c's route_match, capturing spans)               */
/* ------------------------------------------------------------------ */

typedef struct lroute {
    char *pat;
    int nsegs;
    const char *segs[LATCH__ROUTER_MAX_SEGS];
    size_t seg_len[LATCH__ROUTER_MAX_SEGS];
} lroute;

static void lin_parse(lroute *l)
{
    const char *p = l->pat + 1;

    while (*p && l->nsegs < LATCH__ROUTER_MAX_SEGS) {
        const char *e = strchr(p, '/');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        l->segs[l->nsegs] = p;
        l->seg_len[l->nsegs] = n;
        l->nsegs++;
        if (e == NULL)
            break;
        p = e + 1;
    }
}

static bool lin_match_one(const lroute *l, const char *raw, size_t rawlen,
                          latch_rmatch *m)
{
    const char *p = raw, *end = raw + rawlen;
    int i;

    m->nparams = 0;
    for (i = 0; i < l->nsegs; i++) {
        const char *seg = l->segs[i];
        size_t n = l->seg_len[i];
        const char *e;
        if (p >= end || *p != '/')
            return false;
        p++;
        if (n > 0 && seg[0] == '*') {
            m->params[m->nparams].off = (uint32_t)(p - raw);
            m->params[m->nparams].len = (uint32_t)(end - p);
            m->nparams++;
            return true;
        }
        e = memchr(p, '/', (size_t)(end - p));
        if (e == NULL)
            e = end;
        if (n > 0 && seg[0] == ':') {
            if (e == p)
                return false;
            m->params[m->nparams].off = (uint32_t)(p - raw);
            m->params[m->nparams].len = (uint32_t)(e - p);
            m->nparams++;
        } else if ((size_t)(e - p) != n || memcmp(p, seg, n) != 0) {
            return false;
        }
        p = e;
    }
    return p == end || (p + 1 == end && *p == '/');
}

/* Every route in order, as the chain walks them: same contract as
 * latch__router_match. */
static int lin_match(const lroute *routes, int n, const char *path, size_t len,
                     latch_rmatch *out, int max)
{
    latch_rmatch m;
    int i, total = 0;

    for (i = 0; i < n; i++) {
        if (!lin_match_one(&routes[i], path, len, &m))
            continue;
        if (total < max) {
            out[total] = m;
            out[total].id = (uint32_t)i;
        }
        total++;
    }
    return total;
}

/* ------------------------------------------------------------------ */
/* Timing                                                               */
/* ------------------------------------------------------------------ */

static volatile uint32_t sink;

static double now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

typedef struct setup {
    latch_router *tree;
    lroute *lin;
    int nroutes;
} setup;

/* One lookup with either matcher; returns the number of matches. */
static int lookup(const setup *s, bool tree, const char *path, size_t len,
                  latch_rmatch *out)
{
    if (tree)
        return latch__router_match(s->tree, path, len, out, 4);
    return lin_match(s->lin, s->nroutes, path, len, out, 4);
}

/* ns per lookup of path: best of 5 runs of `iters` lookups. */
static double time_path(const setup *s, bool tree, const char *path, long iters)
{
    latch_rmatch out[4];
    size_t len = strlen(path);
    double best = 0;
    int run;

    memset(out, 0, sizeof(out)); /* a miss writes nothing */
    for (run = 0; run < 5; run++) {
        double t0 = now_ns(), dt;
        uint32_t acc = 0;
        long i;
        for (i = 0; i < iters; i++)
            acc += (uint32_t)lookup(s, tree, path, len, out) + out[0].id;
        dt = now_ns() - t0;
        sink += acc;
        if (run == 0 || dt < best)
            best = dt;
    }
    return best / (double)iters;
}

/* Iterations for about 50 ms per run, from a short calibration. */
static long calibrate(const setup *s, bool tree, const char *path)
{
    double ns = time_path(s, tree, path, 1000);

    if (ns < 1)
        ns = 1;
    return (long)(50e6 / ns) + 1;
}

/* Checks that path matches exactly `want` routes, the first being
 * want_id with want_params captures. */
static void expect(const setup *s, const char *path, int want, uint32_t want_id,
                   int want_params)
{
    latch_rmatch out[4];
    int t;

    for (t = 0; t < 2; t++) {
        int n = lookup(s, t == 0, path, strlen(path), out);
        if (n != want || (n > 0 && (out[0].id != want_id ||
                                    out[0].nparams != want_params))) {
            fprintf(stderr, "%s: %s matched %d routes, want %d\n",
                    t == 0 ? "tree" : "linear", path, n, want);
            exit(1);
        }
    }
}

static void bench(int nroutes)
{
    setup s = {latch__router_new(), calloc((size_t)nroutes, sizeof(lroute)),
               nroutes};
    char pat[128], lit[128], par[128];
    const char *miss = "/api/v2/nothing/here";
    int k, nres = nroutes / 2;

    if (s.tree == NULL || s.lin == NULL || nres < 1) {
        fprintf(stderr, "out of memory or too few routes\n");
        exit(1);
    }
    for (k = 0; k < nres; k++) {
        int j;
        for (j = 0; j < 2; j++) {
            int id = 2 * k + j;
            snprintf(pat, sizeof(pat),
                     j ? "/api/v1/resource%d/:id/items" : "/api/v1/resource%d",
                     k);
            s.lin[id].pat = strdup(pat);
            if (s.lin[id].pat == NULL ||
                latch__router_add(s.tree, pat, (uint32_t)id) != 0) {
                fprintf(stderr, "cannot add %s\n", pat);
                exit(1);
            }
            lin_parse(&s.lin[id]);
        }
    }
    s.nroutes = 2 * nres;
    snprintf(lit, sizeof(lit), "/api/v1/resource%d", nres - 1);
    snprintf(par, sizeof(par), "/api/v1/resource%d/42/items", nres - 1);
    expect(&s, lit, 1, (uint32_t)(2 * nres - 2), 0);
    expect(&s, par, 1, (uint32_t)(2 * nres - 1), 1);
    expect(&s, miss, 0, 0, 0);

    {
        const char *paths[3] = {lit, par, miss};
        const char *names[3] = {"static", "param", "miss"};
        int i;
        for (i = 0; i < 3; i++) {
            double t =
                time_path(&s, true, paths[i], calibrate(&s, true, paths[i]));
            double l =
                time_path(&s, false, paths[i], calibrate(&s, false, paths[i]));
            printf("%7d  %-7s %-34s %9.1f %11.1f\n", s.nroutes, names[i],
                   paths[i], t, l);
        }
    }
    for (k = 0; k < s.nroutes; k++)
        free(s.lin[k].pat);
    free(s.lin);
    latch__router_free(s.tree);
}

int main(int argc, char **argv)
{
    static const int defaults[] = {10, 100, 1000, 10000};
    int i;

    printf("%7s  %-7s %-34s %9s %11s\n", "routes", "path", "", "tree ns",
           "linear ns");
    if (argc > 1) {
        for (i = 1; i < argc; i++)
            bench(atoi(argv[i]));
    } else {
        for (i = 0; i < 4; i++)
            bench(defaults[i]);
    }
    return 0;
}
