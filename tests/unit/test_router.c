/*
 * test_router.c - unit tests of the route matcher (src/router.c).
 *
 * Every lookup is checked against its whole expected answer, written as a
 * string ("0[me] 1 2[me]": ids in order, each with its captures read back
 * from the path), so a missing, extra, misordered or wrongly captured match
 * fails. Covered: literals, parameters, the wildcard (empty and nested
 * rest), the tolerated trailing slash, "%2F" inside a segment, registration
 * order across overlapping literal, parameter and wildcard routes (with ids
 * chosen so that the tree's walk finds them in the reverse order), no
 * match, the root, duplicate patterns, truncation to max, malformed
 * patterns and the limits, 10,000 random literal routes, and a randomized
 * comparison with a copy of app.c's linear matcher.
 *
 * Out-of-memory: this file also compiles router.c a second time, with its
 * functions renamed oom_router_* and calloc/realloc/free replaced by
 * counting versions that can refuse the n-th allocation. The oom_ tests
 * fail every allocation of an add in turn and check that the router
 * answers as before and that no block leaked. All other tests use the
 * library's own router (latch_static).
 *
 * It does not test app.c's use of the matches (decoding, methods, 405).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <assert.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "latch.h"
#include "router.h"

/* ------------------------------------------------------------------ */
/* An instrumented copy of router.c                                     */
/* ------------------------------------------------------------------ */

static long t_budget = -1; /* allocations left before refusing; -1: all */
static long t_live;        /* blocks allocated and not yet freed */

static bool t_refuse(void)
{
    if (t_budget < 0)
        return false;
    if (t_budget == 0)
        return true;
    t_budget--;
    return false;
}

static void *t_calloc(size_t n, size_t size)
{
    void *p;

    if (t_refuse())
        return NULL;
    p = calloc(n, size);
    if (p != NULL)
        t_live++;
    return p;
}

static void *t_realloc(void *v, size_t n)
{
    void *p;

    if (t_refuse())
        return NULL;
    p = realloc(v, n);
    if (p != NULL && v == NULL)
        t_live++;
    return p;
}

static void t_free(void *p)
{
    if (p != NULL)
        t_live--;
    free(p);
}

#define calloc t_calloc
#define realloc t_realloc
#define free t_free
#define latch__router_new oom_router_new
#define latch__router_free oom_router_free
#define latch__router_add oom_router_add
#define latch__router_match oom_router_match
#include "router.c"
#undef calloc
#undef realloc
#undef free
#undef latch__router_new
#undef latch__router_free
#undef latch__router_add
#undef latch__router_match

/* ------------------------------------------------------------------ */
/* Helpers                                                              */
/* ------------------------------------------------------------------ */

#define OUTMAX 512

/* Formats matches as "id[capture][capture] id ...". */
static void format(char *buf, size_t size, const char *path, size_t len,
                   const latch_rmatch *m, int n)
{
    size_t at = 0;
    int i, k;

    buf[0] = '\0';
    for (i = 0; i < n; i++) {
        at += (size_t)snprintf(buf + at, size - at, "%s%u", i ? " " : "",
                               (unsigned)m[i].id);
        assert_true(at < size);
        assert_true(m[i].nparams <= LATCH__ROUTER_MAX_PARAMS);
        for (k = 0; k < m[i].nparams; k++) {
            const latch_rspan *s = &m[i].params[k];
            assert_true((size_t)s->off + s->len <= len);
            at += (size_t)snprintf(buf + at, size - at, "[%.*s]", (int)s->len,
                                   path + s->off);
            assert_true(at < size);
        }
    }
}

/* Matches path with r and formats every match into got. */
static int match_fmt(int (*match)(const latch_router *, const char *, size_t,
                                  latch_rmatch *, int),
                     const latch_router *r, const char *path, char *got,
                     size_t size)
{
    latch_rmatch out[OUTMAX];
    size_t len = strlen(path);
    int n = match(r, path, len, out, OUTMAX);

    assert_in_range(n, 0, OUTMAX);
    format(got, size, path, len, out, n);
    return n;
}

/* Asserts that path matches exactly `want` (format() of the answer). */
static void check(const latch_router *r, const char *path, const char *want)
{
    char got[8192];

    match_fmt(latch__router_match, r, path, got, sizeof(got));
    if (strcmp(got, want) != 0)
        print_error("path \"%s\": got \"%s\", want \"%s\"\n", path, got, want);
    assert_string_equal(got, want);
}

static latch_router *router_with(const char *const *patterns, int n)
{
    latch_router *r = latch__router_new();
    int i;

    assert_non_null(r);
    for (i = 0; i < n; i++)
        assert_int_equal(latch__router_add(r, patterns[i], (uint32_t)i), 0);
    return r;
}

#define ROUTER(...)                                                            \
    router_with((const char *const[]){__VA_ARGS__},                            \
                (int)(sizeof((const char *const[]){__VA_ARGS__}) /             \
                      sizeof(const char *)))

/* ------------------------------------------------------------------ */
/* Semantics                                                            */
/* ------------------------------------------------------------------ */

static void test_literal(void **state)
{
    latch_router *r = ROUTER("/users", "/users/list", "/a/b/c", "/a/bb", "/ab");

    check(r, "/users", "0");
    check(r, "/users/list", "1");
    check(r, "/users/lis", "");
    check(r, "/users/listx", "");
    check(r, "/users/list/more", "");
    check(r, "/Users", ""); /* case-sensitive, as Express's default */
    check(r, "/a/b/c", "2");
    check(r, "/a/b", "");
    check(r, "/a/bb", "3");
    check(r, "/ab", "4");
    check(r, "/a", "");
    check(r, "users", ""); /* no leading slash */
    latch__router_free(r);
}

static void test_params(void **state)
{
    latch_router *r =
        ROUTER("/users/:id", "/users/:id/posts/:pid", "/:a/:b/:c");

    check(r, "/users/42", "0[42]");
    check(r, "/users/42/posts/7", "1[42][7]");
    check(r, "/users/42/posts", "2[users][42][posts]");
    check(r, "/users/", ""); /* a parameter needs a non-empty segment */
    check(r, "/users//posts/7", "");
    check(r, "/users/42/posts/", "2[users][42][posts]");
    check(r, "/x/y/z", "2[x][y][z]");
    check(r, "/x/y/z/w", "");
    latch__router_free(r);
}

static void test_wildcard(void **state)
{
    latch_router *r = ROUTER("/static/*", "/files/:dir/*", "/*");

    check(r, "/static/", "0[] 2[static/]");
    check(r, "/static/a/b/c.css", "0[a/b/c.css] 2[static/a/b/c.css]");
    check(r, "/static/a/", "0[a/] 2[static/a/]");
    check(r, "/static", "2[static]"); /* "/static/ *" needs the slash */
    check(r, "/staticx/a", "2[staticx/a]");
    check(r, "/files/x/a/b", "1[x][a/b] 2[files/x/a/b]");
    check(r, "/files/x/", "1[x][] 2[files/x/]");
    check(r, "/files/x", "2[files/x]");
    check(r, "/", "2[]");
    check(r, "//", "2[/]");
    check(r, "", "");
    latch__router_free(r);
}

static void test_trailing_slash(void **state)
{
    latch_router *r = ROUTER("/users", "/users/:id", "/about/");

    check(r, "/users", "0");
    check(r, "/users/", "0");
    check(r, "/users//", "");
    check(r, "/users/5/", "1[5]");
    check(r, "/users/5//", "");
    check(r, "/about", "2"); /* a pattern's trailing slash is ignored */
    check(r, "/about/", "2");
    latch__router_free(r);
}

static void test_encoded_slash_stays_in_segment(void **state)
{
    latch_router *r = ROUTER("/files/:name", "/a%2Fb", "/raw/*");

    check(r, "/files/a%2Fb", "0[a%2Fb]");
    check(r, "/files/a/b", "");
    check(r, "/a%2Fb", "1");
    check(r, "/a/b", "");
    check(r, "/raw/x%2Fy/z", "2[x%2Fy/z]");
    latch__router_free(r);
}

static void test_empty_literal_segment(void **state)
{
    /* "//" inside a pattern is an empty literal, as app.c parsed it. */
    latch_router *r = ROUTER("/a//b");

    check(r, "/a//b", "0");
    check(r, "/a/b", "");
    check(r, "/a///b", "");
    latch__router_free(r);
}

/*
 * The walk meets the wildcard first (at the "users" node), then the
 * literal, then the parameter: the reverse of the ids. Every route must
 * still come out in id order, each with its own captures.
 */
static void test_registration_order(void **state)
{
    latch_router *r = ROUTER("/users/:id", "/users/me", "/users/*");
    latch_router *q = ROUTER("/x/*", "/x/y", "/x/:p", "/x/y", "/:a/y");

    check(r, "/users/me", "0[me] 1 2[me]");
    check(r, "/users/you", "0[you] 2[you]");
    check(r, "/users/me/", "0[me] 1 2[me/]");
    check(r, "/users/me/x", "2[me/x]");
    check(q, "/x/y", "0[y] 1 2[y] 3 4[x]");
    check(q, "/x/z", "0[z] 2[z]");
    check(q, "/z/y", "4[z]");
    latch__router_free(r);
    latch__router_free(q);
}

static void test_ids_are_the_callers(void **state)
{
    latch_router *r = latch__router_new();
    latch_rmatch out[1];

    assert_non_null(r);
    /* Gaps and a late low id: the order is the ids', not the calls'. */
    assert_int_equal(latch__router_add(r, "/p/:x", 70), 0);
    assert_int_equal(latch__router_add(r, "/p/q", 10), 0);
    assert_int_equal(latch__router_add(r, "/p/*", 7), 0);
    assert_int_equal(latch__router_add(r, "/p/q", 5), 0);
    check(r, "/p/q", "5 7[q] 10 70[q]");
    /* With a full array (7, found first), "/p/q"'s ids must still be
     * read lowest first: 5 replaces 7. */
    assert_int_equal(latch__router_match(r, "/p/q", 4, out, 1), 4);
    assert_int_equal(out[0].id, 5);
    latch__router_free(r);
}

static void test_no_match(void **state)
{
    latch_router *r = latch__router_new();
    latch_rmatch out[2];

    assert_non_null(r);
    check(r, "/", "");
    check(r, "/anything", "");
    assert_int_equal(latch__router_add(r, "/a", 0), 0);
    check(r, "/b", "");
    check(r, "/a/b", "");
    check(r, "", "");
    out[0].id = 99;
    assert_int_equal(latch__router_match(r, "/b", 2, out, 2), 0);
    assert_int_equal(out[0].id, 99); /* nothing written */
    assert_int_equal(latch__router_match(NULL, "/a", 2, out, 2), 0);
    assert_int_equal(latch__router_match(r, NULL, 0, out, 2), 0);
    assert_int_equal(latch__router_match(r, "/a", 2, out, 2), 1);
    /* Only path[0, len) is read: "/a" is also a prefix of "/ab". */
    assert_int_equal(latch__router_match(r, "/ab", 2, out, 2), 1);
    assert_int_equal(latch__router_match(r, "/ab", 3, out, 2), 0);
    latch__router_free(r);
}

static void test_root(void **state)
{
    latch_router *r = ROUTER("/", "/a");

    check(r, "/", "0");
    check(r, "", "0"); /* as app.c: an empty path is the root */
    check(r, "/a", "1");
    check(r, "/a/", "1");
    check(r, "//", "");
    check(r, "a", "");
    latch__router_free(r);
}

static void test_duplicates(void **state)
{
    latch_router *r =
        ROUTER("/dup", "/dup", "/d/:a", "/d/:b", "/dup/", "/d/*", "/d/*");

    check(r, "/dup", "0 1 4");
    check(r, "/d/x", "2[x] 3[x] 5[x] 6[x]");
    latch__router_free(r);
}

static void test_max_truncation(void **state)
{
    /* The walk finds 2, 3 (wildcards), then 1, then 0: the lowest ids
     * must push the higher ones out of a full array. */
    latch_router *r = ROUTER("/t/:p", "/t/x", "/t/*", "/t/*");
    latch_rmatch out[4];
    int i;

    for (i = 0; i < 4; i++)
        out[i].id = 99;
    assert_int_equal(latch__router_match(r, "/t/x", 4, out, 2), 4);
    assert_int_equal(out[0].id, 0);
    assert_int_equal(out[0].nparams, 1);
    assert_int_equal(out[0].params[0].off, 3);
    assert_int_equal(out[0].params[0].len, 1);
    assert_int_equal(out[1].id, 1);
    assert_int_equal(out[1].nparams, 0);
    assert_int_equal(out[2].id, 99); /* never written past max */

    assert_int_equal(latch__router_match(r, "/t/x", 4, out, 1), 4);
    assert_int_equal(out[0].id, 0);
    assert_int_equal(out[1].id, 1); /* from the call before */

    out[0].id = 99;
    assert_int_equal(latch__router_match(r, "/t/x", 4, out, 0), 4);
    assert_int_equal(latch__router_match(r, "/t/x", 4, out, -3), 4);
    assert_int_equal(out[0].id, 99);
    assert_int_equal(latch__router_match(r, "/t/x", 4, NULL, 0), 4);
    assert_int_equal(latch__router_match(r, "/t/x", 4, NULL, 5), 4);

    assert_int_equal(latch__router_match(r, "/t/y", 4, out, 3), 3);
    assert_int_equal(out[0].id, 0);
    assert_int_equal(out[1].id, 2);
    assert_int_equal(out[2].id, 3);
    assert_int_equal(out[2].params[0].len, 1);
    latch__router_free(r);
}

/* Builds "/:p0/:p1/.../:p(n-1)" followed by `tail`. */
static void params_pattern(char *buf, size_t size, int n, const char *tail)
{
    size_t at = 0;
    int i;

    for (i = 0; i < n; i++)
        at += (size_t)snprintf(buf + at, size - at, "/:p%d", i);
    snprintf(buf + at, size - at, "%s", tail);
}

static void segs_pattern(char *buf, size_t size, int n)
{
    size_t at = 0;
    int i;

    buf[0] = '\0';
    for (i = 0; i < n; i++)
        at += (size_t)snprintf(buf + at, size - at, "/s");
}

static void test_invalid_patterns(void **state)
{
    static const char *const bad[] = {
        "",     "users", "*",     ":id",   "/:",     "/a/:/b",
        "/*/a", "/a/*/", "/a/*x", "/a/**", "/a/*/*", "/:/",
    };
    latch_router *r = latch__router_new();
    char pat[512];
    size_t i;

    assert_non_null(r);
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (latch__router_add(r, bad[i], 0) != LATCH_ERR_INVALID_ARG)
            print_error("pattern \"%s\" accepted\n", bad[i]);
        assert_int_equal(latch__router_add(r, bad[i], 0),
                         LATCH_ERR_INVALID_ARG);
    }
    assert_int_equal(latch__router_add(NULL, "/a", 0), LATCH_ERR_INVALID_ARG);
    assert_int_equal(latch__router_add(r, NULL, 0), LATCH_ERR_INVALID_ARG);
    /* Nothing of the refused patterns stayed behind. */
    check(r, "/a/x/", "");
    check(r, "/a/x/y", "");
    check(r, "/", "");

    /* Captures: 16 fit ('*' counts), 17 do not. */
    params_pattern(pat, sizeof(pat), 16, "");
    assert_int_equal(latch__router_add(r, pat, 1), 0);
    params_pattern(pat, sizeof(pat), 15, "/*");
    assert_int_equal(latch__router_add(r, pat, 2), 0);
    params_pattern(pat, sizeof(pat), 17, "");
    assert_int_equal(latch__router_add(r, pat, 3), LATCH_ERR_INVALID_ARG);
    params_pattern(pat, sizeof(pat), 16, "/*");
    assert_int_equal(latch__router_add(r, pat, 4), LATCH_ERR_INVALID_ARG);
    params_pattern(pat, sizeof(pat), 16, "/lit");
    assert_int_equal(latch__router_add(r, pat, 5), 0);
    check(r, "/a/b/c/d/e/f/g/h/i/j/k/l/m/n/o/p",
          "1[a][b][c][d][e][f][g][h][i][j][k][l][m][n][o][p] "
          "2[a][b][c][d][e][f][g][h][i][j][k][l][m][n][o][p]");
    check(r, "/a/b/c/d/e/f/g/h/i/j/k/l/m/n/o/p/lit",
          "2[a][b][c][d][e][f][g][h][i][j][k][l][m][n][o][p/lit] "
          "5[a][b][c][d][e][f][g][h][i][j][k][l][m][n][o][p]");

    latch__router_free(r);

    /* Segments: 32 fit, 33 do not. */
    r = latch__router_new();
    assert_non_null(r);
    segs_pattern(pat, sizeof(pat), 32);
    assert_int_equal(latch__router_add(r, pat, 6), 0);
    check(r, pat, "6");
    segs_pattern(pat, sizeof(pat), 33);
    assert_int_equal(latch__router_add(r, pat, 7), LATCH_ERR_INVALID_ARG);
    check(r, pat, "");
    latch__router_free(r);
}

/* ------------------------------------------------------------------ */
/* Scale: 10,000 random literal routes                                  */
/* ------------------------------------------------------------------ */

static uint64_t rng_state = 0x9e3779b97f4a7c15u;

static uint32_t rnd(uint32_t n)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state % n);
}

/* Appends 1..4 random segments of 1..4 letters from "abcdefgh". */
static void random_segments(char *buf, size_t size, int nsegs)
{
    size_t at = strlen(buf);
    int i, k, n;

    for (i = 0; i < nsegs; i++) {
        assert_true(at + 6 < size);
        buf[at++] = '/';
        n = 1 + (int)rnd(4);
        for (k = 0; k < n; k++)
            buf[at++] = (char)('a' + rnd(8));
    }
    buf[at] = '\0';
}

static int slashes(const char *s)
{
    int n = 0;

    for (; *s; s++)
        n += *s == '/';
    return n;
}

typedef struct entry {
    char *pat;
    uint32_t id;
} entry;

static int entry_cmp(const void *a, const void *b)
{
    const entry *x = a, *y = b;
    int c = strcmp(x->pat, y->pat);

    if (c != 0)
        return c;
    return x->id < y->id ? -1 : x->id > y->id;
}

/* The ids registered under exactly `path`, formatted like check()'s. */
static void expected_ids(const entry *sorted, int n, const char *path,
                         char *buf, size_t size)
{
    int lo = 0, hi = n;
    size_t at = 0;

    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        if (strcmp(sorted[mid].pat, path) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    buf[0] = '\0';
    for (; lo < n && strcmp(sorted[lo].pat, path) == 0; lo++)
        at += (size_t)snprintf(buf + at, size - at, "%s%u", at ? " " : "",
                               (unsigned)sorted[lo].id);
}

#define NROUTES 10000

static void test_many_static_routes(void **state)
{
    entry *routes = calloc(NROUTES, sizeof(*routes));
    entry *sorted = calloc(NROUTES, sizeof(*sorted));
    latch_router *r = latch__router_new();
    char path[128], want[8192];
    int i, found = 0, missed = 0;

    assert_non_null(routes);
    assert_non_null(sorted);
    assert_non_null(r);
    for (i = 0; i < NROUTES; i++) {
        uint32_t pick = rnd(100);
        path[0] = '\0';
        if (i > 0 && pick < 5) {
            /* An exact duplicate of an earlier route. */
            snprintf(path, sizeof(path), "%s", routes[rnd((uint32_t)i)].pat);
        } else if (i > 0 && pick < 40) {
            /* A longer route sharing an earlier route as its prefix. */
            snprintf(path, sizeof(path), "%s", routes[rnd((uint32_t)i)].pat);
            if (strlen(path) < 80 && slashes(path) < LATCH__ROUTER_MAX_SEGS)
                random_segments(path, sizeof(path), 1);
        } else {
            random_segments(path, sizeof(path), 1 + (int)rnd(4));
        }
        routes[i].pat = strdup(path);
        assert_non_null(routes[i].pat);
        routes[i].id = (uint32_t)i;
        assert_int_equal(latch__router_add(r, routes[i].pat, (uint32_t)i), 0);
    }
    memcpy(sorted, routes, NROUTES * sizeof(*routes));
    qsort(sorted, NROUTES, sizeof(*sorted), entry_cmp);

    for (i = 0; i < NROUTES; i++) {
        char *slash;
        /* The route's own path, with and without a trailing slash. */
        expected_ids(sorted, NROUTES, routes[i].pat, want, sizeof(want));
        assert_true(want[0] != '\0'); /* it is registered */
        check(r, routes[i].pat, want);
        snprintf(path, sizeof(path), "%s/", routes[i].pat);
        check(r, path, want);
        /* Its parent path: registered or not. */
        snprintf(path, sizeof(path), "%s", routes[i].pat);
        slash = strrchr(path, '/');
        if (slash != path) {
            *slash = '\0';
            expected_ids(sorted, NROUTES, path, want, sizeof(want));
            check(r, path, want);
        }
        /* A random path: mostly not registered. */
        path[0] = '\0';
        random_segments(path, sizeof(path), 1 + (int)rnd(3));
        expected_ids(sorted, NROUTES, path, want, sizeof(want));
        check(r, path, want);
        if (want[0] != '\0')
            found++;
        else
            missed++;
    }
    /* Both kinds of random lookups happened. */
    assert_true(found > 0);
    assert_true(missed > 0);
    for (i = 0; i < NROUTES; i++)
        free(routes[i].pat);
    free(routes);
    free(sorted);
    latch__router_free(r);
}

/* ------------------------------------------------------------------ */
/* Randomized comparison with app.c's linear matcher                    */
/* ------------------------------------------------------------------ */

typedef struct refroute {
    char pat[128];
    int nsegs;
    const char *segs[LATCH__ROUTER_MAX_SEGS];
    size_t seg_len[LATCH__ROUTER_MAX_SEGS];
} refroute;

/* app.c's add_layer split, on the test's own copy of the pattern. */
static void ref_parse(refroute *rr)
{
    const char *p = rr->pat + 1;

    rr->nsegs = 0;
    while (*p) {
        const char *e = strchr(p, '/');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        rr->segs[rr->nsegs] = p;
        rr->seg_len[rr->nsegs] = n;
        rr->nsegs++;
        if (e == NULL)
            break;
        p = e + 1;
    }
}

/* app.c's route_match, capturing spans instead of decoded strings. */
static bool ref_match(const refroute *rr, const char *raw, size_t rawlen,
                      latch_rmatch *m)
{
    const char *p = raw, *end = raw + rawlen;
    int i;

    m->nparams = 0;
    for (i = 0; i < rr->nsegs; i++) {
        const char *sg = rr->segs[i];
        size_t n = rr->seg_len[i];
        const char *e;
        if (p >= end || *p != '/')
            return false;
        p++;
        if (n > 0 && sg[0] == '*') {
            m->params[m->nparams].off = (uint32_t)(p - raw);
            m->params[m->nparams].len = (uint32_t)(end - p);
            m->nparams++;
            return true;
        }
        e = memchr(p, '/', (size_t)(end - p));
        if (e == NULL)
            e = end;
        if (n > 0 && sg[0] == ':') {
            if (e == p)
                return false;
            m->params[m->nparams].off = (uint32_t)(p - raw);
            m->params[m->nparams].len = (uint32_t)(e - p);
            m->nparams++;
        } else if ((size_t)(e - p) != n || memcmp(p, sg, n) != 0) {
            return false;
        }
        p = e;
    }
    return p == end || (p + 1 == end && *p == '/');
}

#define NREF 300
#define NREFPATHS 5000

static void test_same_answers_as_linear_matcher(void **state)
{
    static const char *const lits[] = {"a", "b", "ab", "", "a%2Fb"};
    static refroute refs[NREF];
    static latch_rmatch want[NREF], got[NREF];
    static char wbuf[65536], gbuf[65536];
    latch_router *r = latch__router_new();
    char path[128];
    int i, k, nwant, ngot, hits = 0, multi = 0;

    assert_non_null(r);
    for (i = 0; i < NREF; i++) {
        refroute *rr = &refs[i];
        int nsegs = (int)rnd(5);
        size_t at = 0;
        rr->pat[0] = '/';
        rr->pat[1] = '\0';
        for (k = 0; k < nsegs; k++) {
            uint32_t pick = rnd(10);
            const char *s = pick < 6 ? lits[rnd(5)] : pick < 9 ? ":p" : "*";
            if (s[0] == '*' && k != nsegs - 1)
                s = ":q";
            at +=
                (size_t)snprintf(rr->pat + at, sizeof(rr->pat) - at, "/%s", s);
        }
        /* A trailing slash, except after a wildcard (an error). */
        if (rnd(4) == 0 && rr->pat[strlen(rr->pat) - 1] != '*')
            strcat(rr->pat, "/");
        ref_parse(rr);
        assert_int_equal(latch__router_add(r, rr->pat, (uint32_t)i), 0);
    }
    for (i = 0; i < NREFPATHS; i++) {
        int nsegs = (int)rnd(6);
        size_t at = 0, len;
        path[0] = '\0';
        for (k = 0; k < nsegs; k++)
            at += (size_t)snprintf(path + at, sizeof(path) - at, "/%s",
                                   lits[rnd(5)]);
        if (nsegs == 0 || rnd(4) == 0)
            strcat(path, "/");
        len = strlen(path);
        nwant = 0;
        for (k = 0; k < NREF; k++) {
            if (ref_match(&refs[k], path, len, &want[nwant])) {
                want[nwant].id = (uint32_t)k;
                nwant++;
            }
        }
        ngot = latch__router_match(r, path, len, got, NREF);
        assert_in_range(ngot, 0, NREF);
        format(wbuf, sizeof(wbuf), path, len, want, nwant);
        format(gbuf, sizeof(gbuf), path, len, got, ngot);
        if (strcmp(wbuf, gbuf) != 0)
            print_error("path \"%s\"\n", path);
        assert_string_equal(gbuf, wbuf);
        hits += nwant > 0;
        multi += nwant > 1;
    }
    /* The comparison was not vacuous. */
    assert_true(hits > NREFPATHS / 10);
    assert_true(multi > NREFPATHS / 20);
    latch__router_free(r);
}

/* ------------------------------------------------------------------ */
/* Out of memory and limits (the instrumented copy)                     */
/* ------------------------------------------------------------------ */

static void oom_check(const latch_router *r, const char *path, const char *want)
{
    char got[1024];

    match_fmt(oom_router_match, r, path, got, sizeof(got));
    assert_string_equal(got, want);
}

static void test_oom_new(void **state)
{
    latch_router *r;
    long k;

    t_live = 0;
    for (k = 0;; k++) {
        t_budget = k;
        r = oom_router_new();
        t_budget = -1;
        if (r != NULL)
            break;
        assert_int_equal(t_live, 0);
    }
    assert_int_equal(k, 2); /* the router, then its root */
    oom_router_free(r);
    assert_int_equal(t_live, 0);
}

/*
 * Fails each allocation of an add in turn: the add must report NOMEM and
 * leave the router answering as before, with no block more than before.
 * The root starts with a full kids array (4 of 4), so the add has to grow
 * it, then creates a chain of new nodes under it.
 */
static void oom_add_each_allocation(const char *pattern, const char *path,
                                    const char *before, const char *after)
{
    latch_router *r = oom_router_new();
    long k, live;
    int rc;

    assert_non_null(r);
    assert_int_equal(oom_router_add(r, "/k0", 0), 0);
    assert_int_equal(oom_router_add(r, "/k1", 1), 0);
    assert_int_equal(oom_router_add(r, "/k2/x/:y/*", 2), 0);
    assert_int_equal(oom_router_add(r, "/k3", 3), 0);
    assert_int_equal(r->root->nkids, r->root->capkids);
    for (k = 0;; k++) {
        live = t_live;
        t_budget = k;
        rc = oom_router_add(r, pattern, 9);
        t_budget = -1;
        if (rc == 0)
            break;
        assert_int_equal(rc, LATCH_ERR_NOMEM);
        assert_int_equal(t_live, live);
        oom_check(r, path, before);
        oom_check(r, "/k2/x/y/z", "2[y][z]");
        oom_check(r, "/k1", "1");
    }
    assert_true(k > 0); /* at least one failure was exercised */
    oom_check(r, path, after);
    oom_check(r, "/k2/x/y/z", "2[y][z]");
    oom_router_free(r);
}

static void test_oom_add(void **state)
{
    t_live = 0;
    oom_add_each_allocation("/k4/a/:b/c/*", "/k4/a/B/c/d", "", "9[B][d]");
    assert_int_equal(t_live, 0);
    oom_add_each_allocation("/k2/x/:z/w", "/k2/x/y/w", "2[y][w]",
                            "2[y][w] 9[y]");
    assert_int_equal(t_live, 0);
    oom_add_each_allocation("/k3/*", "/k3/z", "", "9[z]");
    assert_int_equal(t_live, 0);
    oom_add_each_allocation("/:p/q", "/k1/q", "", "9[k1]");
    assert_int_equal(t_live, 0);
}

static void test_route_limit(void **state)
{
    latch_router *r = oom_router_new();

    assert_non_null(r);
    r->nroutes = LATCH__ROUTER_MAX_ROUTES - 1;
    assert_int_equal(oom_router_add(r, "/last", 1), 0);
    assert_int_equal(oom_router_add(r, "/over", 2), LATCH_ERR_LIMIT);
    /* A malformed pattern is still reported as such. */
    assert_int_equal(oom_router_add(r, "over", 3), LATCH_ERR_INVALID_ARG);
    oom_check(r, "/last", "1");
    oom_check(r, "/over", "");
    oom_router_free(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_literal),
        cmocka_unit_test(test_params),
        cmocka_unit_test(test_wildcard),
        cmocka_unit_test(test_trailing_slash),
        cmocka_unit_test(test_encoded_slash_stays_in_segment),
        cmocka_unit_test(test_empty_literal_segment),
        cmocka_unit_test(test_registration_order),
        cmocka_unit_test(test_ids_are_the_callers),
        cmocka_unit_test(test_no_match),
        cmocka_unit_test(test_root),
        cmocka_unit_test(test_duplicates),
        cmocka_unit_test(test_max_truncation),
        cmocka_unit_test(test_invalid_patterns),
        cmocka_unit_test(test_many_static_routes),
        cmocka_unit_test(test_same_answers_as_linear_matcher),
        cmocka_unit_test(test_oom_new),
        cmocka_unit_test(test_oom_add),
        cmocka_unit_test(test_route_limit),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
