/*
 * intern.c - one copy of equal immutable blocks, per worker (intern.h).
 *
 * A chained hash table of counted blocks: FNV-1a over the bytes, the
 * table doubled when it holds more blocks than buckets, a block unlinked
 * and freed at its last release. Equal bytes share; unequal bytes (a
 * per-user header) just get a block of their own, 24 bytes larger than a
 * plain allocation, looked up in O(1).
 */
#include "intern.h"

#include <stdlib.h>
#include <string.h>

typedef struct latch_iblk {
    struct latch_iblk *next;
    uint64_t hash;
    uint32_t refs;
    uint32_t len;
    unsigned char data[]; /* 8-byte aligned: offset 24 */
} latch_iblk;

_Static_assert(offsetof(latch_iblk, data) % 8 == 0,
               "interned blocks hold structs with 8-byte members");

static uint64_t hash_bytes(const unsigned char *p, size_t n)
{
    uint64_t h = 14695981039346656037ull;

    while (n-- > 0) {
        h ^= *p++;
        h *= 1099511628211ull;
    }
    return h;
}

static latch_iblk *blk_of(const void *p)
{
    return (latch_iblk *)(void *)((unsigned char *)(uintptr_t)p -
                                  offsetof(latch_iblk, data));
}

/* Doubles the buckets (16 the first time); false when out of memory. */
static int grow(latch_interns *t)
{
    uint32_t cap = t->cap ? t->cap * 2 : 16, i;
    latch_iblk **b = calloc(cap, sizeof(*b));

    if (b == NULL)
        return -1;
    for (i = 0; i < t->cap; i++) {
        latch_iblk *k = t->b[i], *next;
        for (; k != NULL; k = next) {
            next = k->next;
            k->next = b[k->hash & (cap - 1)];
            b[k->hash & (cap - 1)] = k;
        }
    }
    free(t->b);
    t->b = b;
    t->cap = cap;
    return 0;
}

const void *latch__intern(latch_interns *t, const void *data, size_t len)
{
    uint64_t h = hash_bytes(data, len);
    latch_iblk *k;

    if (len > UINT32_MAX)
        return NULL;
    if (t->cap > 0)
        for (k = t->b[h & (t->cap - 1)]; k != NULL; k = k->next)
            if (k->hash == h && k->len == len &&
                memcmp(k->data, data, len) == 0 && k->refs < UINT32_MAX) {
                k->refs++;
                return k->data;
            }
    /* A full table still takes the block (in longer chains) when it
     * cannot grow. */
    if ((t->n >= t->cap && grow(t) < 0 && t->cap == 0) ||
        (k = malloc(sizeof(*k) + len)) == NULL)
        return NULL;
    k->hash = h;
    k->refs = 1;
    k->len = (uint32_t)len;
    memcpy(k->data, data, len);
    k->next = t->b[h & (t->cap - 1)];
    t->b[h & (t->cap - 1)] = k;
    t->n++;
    return k->data;
}

void latch__intern_release(latch_interns *t, const void *p)
{
    latch_iblk *k = blk_of(p), **pp;

    if (--k->refs > 0)
        return;
    for (pp = &t->b[k->hash & (t->cap - 1)]; *pp != k; pp = &(*pp)->next)
        ;
    *pp = k->next;
    t->n--;
    free(k);
    if (t->n == 0 && t->ended) {
        free(t->b);
        t->b = NULL;
        t->cap = 0;
    }
}

void latch__interns_end(latch_interns *t)
{
    t->ended = 1;
    if (t->n == 0) {
        free(t->b);
        t->b = NULL;
        t->cap = 0;
    }
}
