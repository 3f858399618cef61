/*
 * router.h - the route matcher: a segment tree that maps a request path to
 * every route pattern it matches.
 *
 * Patterns are Express-like: they start with '/' and split on '/' into
 * segments; a segment is a literal, ":name" (one non-empty path segment,
 * captured) or, last, "*" (the rest of the path after the '/', possibly
 * empty, captured). A trailing '/' in a pattern is ignored, and one in the
 * path is tolerated ("/users/" matches "/users"). Matching works on the raw
 * path, before percent-decoding, so an encoded "%2F" stays inside its
 * segment; captures are spans of that raw path and decoding them is the
 * caller's business.
 *
 * The same path can match several routes ("/users/me" matches "/users/:id",
 * "/users/me" and "/users/ *"). The chain in app.c runs every matching route
 * in registration order, interleaved with middleware, until one responds,
 * so the router returns all of them sorted by the caller's id instead of
 * picking a "best" one. Looking up a path costs O(segments x log(children))
 * per branch taken, independent of the number of routes; only the branches
 * that can match (a literal child, the parameter child, the wildcard) are
 * explored.
 *
 * It is not the method dispatcher, the middleware prefix matcher, or the
 * keeper of parameter names: the caller maps ids to its layers and re-reads
 * names from its own copy of the pattern. A router is built once, before
 * the app runs, and is then only read: latch__router_match is safe from
 * several threads at once, latch__router_add is not.
 */
#ifndef LATCH_ROUTER_H
#define LATCH_ROUTER_H

#include <stddef.h>
#include <stdint.h>

#define LATCH__ROUTER_MAX_PARAMS 16 /* captures per pattern, '*' included */
#define LATCH__ROUTER_MAX_SEGS 32   /* segments per pattern */
#define LATCH__ROUTER_MAX_ROUTES (1u << 24) /* keeps match's count an int */

typedef struct latch_router latch_router;

/* A capture: bytes path[off, off + len) of the path given to match. */
typedef struct latch_rspan {
    uint32_t off;
    uint32_t len;
} latch_rspan;

/* One matching route: its id and its captures in pattern order (the
 * wildcard's, when there is one, is last). */
typedef struct latch_rmatch {
    uint32_t id;
    uint16_t nparams;
    latch_rspan params[LATCH__ROUTER_MAX_PARAMS];
} latch_rmatch;

/* An empty router (matches nothing), or NULL when out of memory. Free it
 * with latch__router_free. */
latch_router *latch__router_new(void);

/* Frees the router and everything it allocated. NULL is a no-op. */
void latch__router_free(latch_router *r);

/*
 * Adds `pattern` (a NUL-terminated string, not kept: the router copies the
 * literal bytes it needs) under the caller's `id`. Ids should increase with
 * registration; the router sorts by id anyway, and keeps equal ids in the
 * order they were added. The same pattern may be added several times: every
 * copy matches.
 *
 * Returns 0; LATCH_ERR_INVALID_ARG when r or pattern is NULL or the pattern
 * is malformed: it does not start with '/', has a ':' with an empty name, a
 * '*' segment that is not the last thing in the pattern or a segment that
 * starts with '*' and is longer than it, more than LATCH__ROUTER_MAX_PARAMS
 * captures or more than LATCH__ROUTER_MAX_SEGS segments; LATCH_ERR_LIMIT
 * once the router holds LATCH__ROUTER_MAX_ROUTES routes; LATCH_ERR_NOMEM.
 * On any error the router is exactly as it was before the call.
 */
int latch__router_add(latch_router *r, const char *pattern, uint32_t id);

/*
 * Finds every route that matches path[0, len) (the raw path, without the
 * query) and writes the first `max` of them, lowest ids first, into
 * out[0, max). Each written match carries its captures as spans of `path`,
 * valid as long as the caller keeps `path`. Allocates nothing; reads the
 * router only.
 *
 * Returns how many routes matched in total, which may exceed max: then only
 * the max lowest ids were written. 0 when nothing matched, when r is NULL,
 * or when len does not fit in 32 bits (captures are 32-bit offsets). out
 * may be NULL when max is 0 (to count); a negative max counts as 0.
 */
int latch__router_match(const latch_router *r, const char *path, size_t len,
                        latch_rmatch *out, int max);

#endif
