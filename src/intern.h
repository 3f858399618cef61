/*
 * intern.h - one copy of equal immutable blocks, per worker.
 *
 * Thousands of event streams of one route wait with the same response
 * headers and the same record of their chain's moves (issue 15): each
 * kept its own copy of bytes that are equal across all of them. A block
 * given to latch__intern comes back as the worker's one copy of those
 * bytes, counted: every holder releases it once, and the last release
 * frees it. Only the worker's loop calls these (no lock). The bytes must
 * be fully written, padding included (build them in zeroed memory), as
 * they are compared as bytes.
 */
#ifndef LATCH_INTERN_H
#define LATCH_INTERN_H

#include <stddef.h>
#include <stdint.h>

struct latch_iblk;

typedef struct latch_interns {
    struct latch_iblk **b; /* buckets, a power of two of them, or NULL */
    uint32_t n, cap;       /* blocks held, buckets */
    int ended;             /* the worker ended: the last release frees */
} latch_interns;

/* The worker's copy of data[0..len) (8-byte aligned), with one more
 * holder; NULL when out of memory (nothing changed). */
const void *latch__intern(latch_interns *t, const void *data, size_t len);
/* One holder of p (latch__intern's answer) fewer. */
void latch__intern_release(latch_interns *t, const void *p);
/* The worker's end: frees the table now if it holds no block, else at the
 * last release (a response the program still holds keeps its blocks). */
void latch__interns_end(latch_interns *t);

#endif
