/*
 * chain.h - the layers app.c registers and chain.c runs (private to the
 * two, and to the unit tests).
 */
#ifndef LATCH_CHAIN_H
#define LATCH_CHAIN_H

#include "internal.h"
#include "router.h"

enum { L_MIDDLEWARE, L_ROUTE, L_LIMIT };

struct latch_layer {
    latch_layer *next;
    latch_layer *next_mw; /* the first middleware after this layer */
    uint32_t id;          /* registration index */
    int kind;
    char *method;      /* NULL: every method */
    char *pattern;     /* owned copy; segments point into it */
    char *pattern_src; /* the pattern as registered (for the tree) */
    size_t prefix_len;
    int nsegs;
    const char *segs[LATCH__ROUTER_MAX_SEGS];
    uint16_t seg_len[LATCH__ROUTER_MAX_SEGS];
    latch_handler fn;
    void *data;
    uint64_t body_limit; /* L_LIMIT: the body limit of matching requests */
    bool streams;        /* its requests stream their bodies (a proxy) */
    char *name;          /* the handler's name as registered, or NULL */
    latch_site at;       /* where it was registered (file NULL: unknown) */
};

struct latch_errlayer {
    latch_errlayer *next;
    latch_error_handler fn;
    void *data;
    char *name;
    latch_site at;
};

/* chain.c: the serve table latch_run installs in app->serve. */
extern const latch_serve_ops latch__chain_serve;

#endif
