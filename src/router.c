/*
 * router.c - the route matcher: a segment tree over route patterns.
 *
 * Each node stands for a pattern prefix. It has literal children sorted by
 * their bytes (binary search), at most one ":param" child, the routes that
 * end at the node and the routes that end at it with a final "*". Matching
 * walks the path one segment at a time down every branch that fits (the
 * literal child with those bytes, and the parameter child when the segment
 * is not empty) and gathers the routes of the nodes where the path ends,
 * keeping the lowest ids in order in the caller's array. A node is reached
 * at most once per lookup (its depth fixes which path segments led to it),
 * so a lookup visits at most the nodes on the path's branches, and a path
 * made of literals costs O(segments x log(children)) whatever the number of
 * routes.
 *
 * It is not a compressed radix tree over bytes: segments are the unit, as
 * parameters always cover a whole segment. It does not decode, does not
 * know methods, and does not keep parameter names (see router.h).
 */
#include "router.h"

#include "latch.h"

#include <assert.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

/* Route ids, sorted; equal ids keep the order they were added in. */
typedef struct idlist {
    uint32_t *v;
    uint32_t n, cap;
} idlist;

typedef struct rnode rnode;
struct rnode {
    rnode **kids; /* literal children, sorted by (len, bytes) */
    uint32_t nkids, capkids;
    rnode *param; /* the ":name" child, or NULL */
    idlist ends;  /* routes whose pattern ends at this node */
    idlist wild;  /* routes whose pattern is this node's prefix + "/ *" */
    uint32_t len; /* label bytes; 0 for the root and parameter nodes */
    char label[]; /* the literal segment (not NUL-terminated) */
};

struct latch_router {
    rnode *root;
    uint32_t nroutes; /* hard cap: LATCH__ROUTER_MAX_ROUTES */
};

enum { SEG_LIT, SEG_PARAM, SEG_WILD };

typedef struct seg {
    const char *p;
    uint32_t len;
    int kind;
} seg;

/* ------------------------------------------------------------------ */
/* Nodes                                                                */
/* ------------------------------------------------------------------ */

static rnode *node_new(const char *label, uint32_t len)
{
    rnode *nd = calloc(1, sizeof(*nd) + len);

    if (nd == NULL)
        return NULL;
    nd->len = len;
    if (len > 0)
        memcpy(nd->label, label, len);
    return nd;
}

/* Frees a node and its subtree. The depth is at most
 * LATCH__ROUTER_MAX_SEGS, so recursion is bounded. */
static void node_free(rnode *nd)
{
    uint32_t i;

    if (nd == NULL)
        return;
    for (i = 0; i < nd->nkids; i++)
        node_free(nd->kids[i]);
    node_free(nd->param);
    free(nd->kids);
    free(nd->ends.v);
    free(nd->wild.v);
    free(nd);
}

/*
 * Returns an array with room for n + 1 elements of `size` bytes: v itself
 * when it has room, else v grown (doubling from 4, *cap updated), or NULL
 * when out of memory (v and *cap untouched). Every array holds at most one
 * element per route, so LATCH__ROUTER_MAX_ROUTES caps its growth.
 */
static void *grow(void *v, uint32_t *cap, uint32_t n, size_t size)
{
    uint32_t ncap;
    void *p;

    if (n < *cap)
        return v;
    ncap = *cap ? *cap * 2 : 4;
    p = realloc(v, (size_t)ncap * size);
    if (p == NULL)
        return NULL;
    *cap = ncap;
    return p;
}

/* Inserts id after every id not greater than it: an append when ids come
 * in increasing order. 0 or LATCH_ERR_NOMEM (the list unchanged). */
static int idlist_add(idlist *l, uint32_t id)
{
    uint32_t *v = grow(l->v, &l->cap, l->n, sizeof(*v));
    uint32_t i;

    if (v == NULL)
        return LATCH_ERR_NOMEM;
    l->v = v;
    for (i = l->n; i > 0 && v[i - 1] > id; i--)
        ;
    memmove(&v[i + 1], &v[i], (size_t)(l->n - i) * sizeof(*v));
    v[i] = id;
    l->n++;
    return 0;
}

/* Orders labels by length, then bytes: any total order will do for the
 * binary search, and comparing lengths first rejects most labels cheaply. */
static int label_cmp(const rnode *kid, const char *s, uint32_t n)
{
    if (kid->len != n)
        return kid->len < n ? -1 : 1;
    return n == 0 ? 0 : memcmp(kid->label, s, n);
}

/* The index of the literal child labelled s[0, n) when *found, else the
 * index where it would be inserted. */
static uint32_t kid_find(const rnode *nd, const char *s, uint32_t n,
                         bool *found)
{
    uint32_t lo = 0, hi = nd->nkids;

    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        int c = label_cmp(nd->kids[mid], s, n);
        if (c == 0) {
            *found = true;
            return mid;
        }
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    *found = false;
    return lo;
}

/*
 * The child of nd for segment s (literal or parameter), created when
 * missing (*created then true). NULL when out of memory, with nd as it was.
 */
static rnode *descend(rnode *nd, const seg *s, bool *created)
{
    rnode *kid, **kids;
    uint32_t at;
    bool found;

    *created = false;
    if (s->kind == SEG_PARAM) {
        if (nd->param == NULL) {
            nd->param = node_new(NULL, 0);
            if (nd->param == NULL)
                return NULL;
            *created = true;
        }
        return nd->param;
    }
    at = kid_find(nd, s->p, s->len, &found);
    if (found)
        return nd->kids[at];
    kid = node_new(s->p, s->len);
    if (kid == NULL)
        return NULL;
    kids = grow(nd->kids, &nd->capkids, nd->nkids, sizeof(*kids));
    if (kids == NULL) {
        node_free(kid);
        return NULL;
    }
    nd->kids = kids;
    memmove(&kids[at + 1], &kids[at], (size_t)(nd->nkids - at) * sizeof(*kids));
    kids[at] = kid;
    nd->nkids++;
    *created = true;
    return kid;
}

/* Unlinks kid, a child of parent, without freeing it. A kids array left
 * empty is freed, as it did not exist before kid was added. */
static void detach(rnode *parent, const rnode *kid)
{
    uint32_t at;
    bool found;

    if (parent->param == kid) {
        parent->param = NULL;
        return;
    }
    at = kid_find(parent, kid->label, kid->len, &found);
    assert(found && parent->kids[at] == kid);
    parent->nkids--;
    memmove(&parent->kids[at], &parent->kids[at + 1],
            (size_t)(parent->nkids - at) * sizeof(*parent->kids));
    if (parent->nkids == 0) {
        free(parent->kids);
        parent->kids = NULL;
        parent->capkids = 0;
    }
}

/* ------------------------------------------------------------------ */
/* Building                                                             */
/* ------------------------------------------------------------------ */

latch_router *latch__router_new(void)
{
    latch_router *r = calloc(1, sizeof(*r));

    if (r == NULL)
        return NULL;
    r->root = node_new(NULL, 0);
    if (r->root == NULL) {
        free(r);
        return NULL;
    }
    return r;
}

void latch__router_free(latch_router *r)
{
    if (r == NULL)
        return;
    node_free(r->root);
    free(r);
}

/*
 * Splits a pattern into segs[0, *nsegs) the way app.c always has: the
 * leading '/' is dropped, a trailing '/' ends the pattern without adding an
 * empty segment, and "//" inside it makes an empty literal segment (which
 * matches an empty path segment). 0 or LATCH_ERR_INVALID_ARG.
 */
static int parse(const char *pattern, seg *segs, int *nsegs)
{
    const char *p, *e;
    int n = 0, ncap = 0;

    *nsegs = 0;
    if (pattern[0] != '/')
        return LATCH_ERR_INVALID_ARG;
    for (p = pattern + 1; *p != '\0'; p = e + 1) {
        size_t len;
        int kind = SEG_LIT;
        e = strchr(p, '/');
        len = e ? (size_t)(e - p) : strlen(p);
        if (n == LATCH__ROUTER_MAX_SEGS || len > UINT32_MAX)
            return LATCH_ERR_INVALID_ARG;
        if (p[0] == '*') {
            /* Only a bare, final '*' is a wildcard; a segment such as
             * "*x" is refused, not read as a literal, as app.c did. */
            if (len != 1 || e != NULL)
                return LATCH_ERR_INVALID_ARG;
            kind = SEG_WILD;
            ncap++;
        } else if (p[0] == ':') {
            if (len < 2)
                return LATCH_ERR_INVALID_ARG;
            kind = SEG_PARAM;
            ncap++;
        }
        if (ncap > LATCH__ROUTER_MAX_PARAMS)
            return LATCH_ERR_INVALID_ARG;
        segs[n].p = p;
        segs[n].len = (uint32_t)len;
        segs[n].kind = kind;
        n++;
        if (e == NULL)
            break;
    }
    *nsegs = n;
    return 0;
}

int latch__router_add(latch_router *r, const char *pattern, uint32_t id)
{
    seg segs[LATCH__ROUTER_MAX_SEGS];
    rnode *nd, *first_new = NULL, *first_parent = NULL;
    idlist *list;
    int nsegs, i, rc;

    if (r == NULL || pattern == NULL)
        return LATCH_ERR_INVALID_ARG;
    rc = parse(pattern, segs, &nsegs);
    if (rc != 0)
        return rc;
    if (r->nroutes >= LATCH__ROUTER_MAX_ROUTES)
        return LATCH_ERR_LIMIT;
    nd = r->root;
    for (i = 0; i < nsegs && segs[i].kind != SEG_WILD; i++) {
        bool created;
        rnode *kid = descend(nd, &segs[i], &created);
        if (kid == NULL)
            goto fail;
        /* The nodes created form one chain below the first one: undoing
         * the add only needs to unlink and free that one. */
        if (created && first_new == NULL) {
            first_new = kid;
            first_parent = nd;
        }
        nd = kid;
    }
    list = i < nsegs ? &nd->wild : &nd->ends;
    if (idlist_add(list, id) != 0)
        goto fail;
    r->nroutes++;
    return 0;

fail:
    if (first_new != NULL) {
        detach(first_parent, first_new);
        node_free(first_new);
    }
    return LATCH_ERR_NOMEM;
}

/* ------------------------------------------------------------------ */
/* Matching                                                             */
/* ------------------------------------------------------------------ */

typedef struct mstate {
    const char *path;
    size_t len;
    latch_rmatch *out;
    int max;   /* capacity of out */
    int nout;  /* written so far, sorted by id */
    int total; /* matched so far; <= routes, so it fits */
    uint16_t ncap;
    latch_rspan cap[LATCH__ROUTER_MAX_PARAMS]; /* captures of this branch */
} mstate;

/* Records every id of l as a match with the current captures, keeping
 * out[0, nout) the lowest ids seen so far, in order. */
static void emit(mstate *m, const idlist *l)
{
    uint32_t i;

    for (i = 0; i < l->n; i++) {
        uint32_t id = l->v[i];
        int j;
        if (m->nout < m->max) {
            j = m->nout++;
        } else if (m->max > 0 && id < m->out[m->max - 1].id) {
            j = m->max - 1; /* the highest kept id falls off */
        } else {
            /* l is sorted: none of the rest can be kept either. */
            m->total += (int)(l->n - i);
            return;
        }
        m->total++;
        /* "> id", not ">=": an equal id found earlier stays first. */
        for (; j > 0 && m->out[j - 1].id > id; j--)
            m->out[j] = m->out[j - 1];
        m->out[j].id = id;
        m->out[j].nparams = m->ncap;
        memcpy(m->out[j].params, m->cap, m->ncap * sizeof(m->cap[0]));
    }
}

/* Matches the rest of the path, path[pos, len), below nd. pos is 0 at the
 * root, else the end of the segment that led to nd: the end of the path or
 * the '/' that starts the next segment. */
static void walk(const rnode *nd, size_t pos, mstate *m)
{
    const char *path = m->path;
    size_t len = m->len, s, e;
    const char *slash;

    /* The pattern ends here: so must the path, but for one '/'. */
    if (nd->ends.n > 0 && (pos == len || (pos + 1 == len && path[pos] == '/')))
        emit(m, &nd->ends);
    if (pos == len || path[pos] != '/')
        return;
    s = pos + 1;
    /* The wildcard takes the rest after the '/', even when it is empty. */
    if (nd->wild.n > 0) {
        assert(m->ncap < LATCH__ROUTER_MAX_PARAMS); /* parse() counted */
        m->cap[m->ncap].off = (uint32_t)s;
        m->cap[m->ncap].len = (uint32_t)(len - s);
        m->ncap++;
        emit(m, &nd->wild);
        m->ncap--;
    }
    slash = s < len ? memchr(path + s, '/', len - s) : NULL;
    e = slash ? (size_t)(slash - path) : len;
    if (nd->nkids > 0) {
        bool found;
        uint32_t at = kid_find(nd, path + s, (uint32_t)(e - s), &found);
        if (found)
            walk(nd->kids[at], e, m);
    }
    /* A parameter needs a non-empty segment ("/users//" has none). */
    if (nd->param != NULL && e > s) {
        assert(m->ncap < LATCH__ROUTER_MAX_PARAMS);
        m->cap[m->ncap].off = (uint32_t)s;
        m->cap[m->ncap].len = (uint32_t)(e - s);
        m->ncap++;
        walk(nd->param, e, m);
        m->ncap--;
    }
}

int latch__router_match(const latch_router *r, const char *path, size_t len,
                        latch_rmatch *out, int max)
{
    mstate m;

    if (r == NULL || len > UINT32_MAX || (path == NULL && len > 0))
        return 0;
    m.path = path;
    m.len = len;
    m.out = out;
    m.max = out != NULL && max > 0 ? max : 0;
    m.nout = 0;
    m.total = 0;
    m.ncap = 0;
    walk(r->root, 0, &m);
    return m.total;
}
