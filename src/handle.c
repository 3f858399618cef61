/*
 * handle.c - handles for the small objects user code keeps: a
 * latch_timer * or a latch_join * given to a program is an encoded slot
 * and generation, not an address. When latch frees the object, the slot's
 * generation moves on, so a pointer kept past its object's life is
 * recognized as stale and refused instead of being dereferenced (a
 * latch_clear_timeout on a timer of a finished request, a join resolved by
 * a thread after its request was recycled). Responses and requests have
 * their own, faster scheme in res.c; these objects are not on the hot path.
 *
 * A handle: bit 0 set (latch's own code passes real pointers, which are
 * aligned), bits 1-31 the slot, bits 32-63 the generation (never 0). Slots
 * live as long as the process, in slabs that are never freed, and one
 * mutex guards them: a lookup from any thread returns the object only
 * while it is alive, and the caller may pin it (its own count) before the
 * lock is let go.
 */
#include "internal.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#define SLAB_BITS 10
#define SLABS 4096 /* 4M slots */

typedef struct hslot {
    uint32_t gen;       /* the live generation; a free slot keeps its last */
    uint32_t next_free; /* free list: index + 1 */
    void *obj;          /* NULL when free */
    const void *owner;  /* the worker the object lives on */
} hslot;

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static hslot *slabs[SLABS];
static uint32_t nslots;    /* handed out of the slabs so far */
static uint32_t free_head; /* index + 1, 0: none */

static hslot *slot_at(uint32_t idx)
{
    return &slabs[idx >> SLAB_BITS][idx & ((1u << SLAB_BITS) - 1)];
}

void latch__handle_lock(void)
{
    pthread_mutex_lock(&mu);
}

void latch__handle_unlock(void)
{
    pthread_mutex_unlock(&mu);
}

uintptr_t latch__handle_new(void *obj, const void *owner)
{
    uint32_t idx = UINT32_MAX;
    hslot *sl;
    uintptr_t h = 0;

    pthread_mutex_lock(&mu);
    if (free_head != 0) {
        idx = free_head - 1;
        free_head = slot_at(idx)->next_free;
    } else if (nslots < (uint32_t)SLABS << SLAB_BITS) {
        uint32_t si = nslots >> SLAB_BITS;
        if (slabs[si] == NULL)
            slabs[si] = calloc((size_t)1 << SLAB_BITS, sizeof(hslot));
        if (slabs[si] != NULL)
            idx = nslots++;
    }
    if (idx != UINT32_MAX) {
        sl = slot_at(idx);
        if (++sl->gen == 0)
            sl->gen = 1; /* after 2^32 lives a slot starts again at 1 */
        sl->obj = obj;
        sl->owner = owner;
        h = (uintptr_t)sl->gen << 32 | (uintptr_t)idx << 1 | 1u;
    }
    pthread_mutex_unlock(&mu);
    return h;
}

/* With the lock held: the object of a live handle, else NULL. */
void *latch__handle_get_locked(uintptr_t h)
{
    uint32_t idx = (uint32_t)(h >> 1) & 0x7fffffffu;
    hslot *sl;

    if (!(h & 1) || idx >= nslots)
        return NULL;
    sl = slot_at(idx);
    if (sl->obj == NULL || sl->gen != (uint32_t)(h >> 32))
        return NULL;
    return sl->obj;
}

void *latch__handle_get(uintptr_t h)
{
    void *obj;

    pthread_mutex_lock(&mu);
    obj = latch__handle_get_locked(h);
    pthread_mutex_unlock(&mu);
    return obj;
}

void latch__handle_retire(uintptr_t h)
{
    uint32_t idx = (uint32_t)(h >> 1) & 0x7fffffffu;
    hslot *sl;

    if (!(h & 1))
        return;
    pthread_mutex_lock(&mu);
    if (idx < nslots) {
        sl = slot_at(idx);
        if (sl->obj != NULL && sl->gen == (uint32_t)(h >> 32)) {
            sl->obj = NULL;
            sl->next_free = free_head;
            free_head = idx + 1;
        }
    }
    pthread_mutex_unlock(&mu);
}

/* The workers in [lo, hi) are about to be freed (server.c: the next
 * latch_run, latch_app_free): a handle of an object still living on one
 * of them (a join whose response the program held past its run, its
 * tasks still out) goes stale now, so that a late report is refused
 * instead of following the object to its worker. The object stays. */
void latch__handle_run_over(const void *lo, const void *hi)
{
    uint32_t idx;

    pthread_mutex_lock(&mu);
    for (idx = 0; idx < nslots; idx++) {
        hslot *sl = slot_at(idx);
        uintptr_t o = (uintptr_t)sl->owner;

        if (sl->obj == NULL || o < (uintptr_t)lo || o >= (uintptr_t)hi)
            continue;
        sl->obj = NULL;
        sl->next_free = free_head;
        free_head = idx + 1;
    }
    pthread_mutex_unlock(&mu);
}

/* ------------------------------------------------------------------ */
/* The slots of responses and requests                                 */
/* ------------------------------------------------------------------ */
/*
 * The table behind latch_res * and latch_req * handles (internal.h,
 * "Handles"): res.c takes a slot for a pooled response and moves its
 * generation on when the response is recycled; every public entry point
 * decodes with latch__res_in, which reads the slabs lock-free and reports
 * a stale handle here. A leaf, so that req.c and res.c both decode
 * handles without naming each other for it.
 */

latch_slot *_Atomic latch__slabs[LATCH_SLABS];
static pthread_mutex_t slot_mu = PTHREAD_MUTEX_INITIALIZER;
static uint32_t slot_free;  /* index + 1 of the first free slot, 0: none */
static uint32_t slot_count; /* slots handed out of the slabs so far */

latch_slot *latch__rslot_at(uint32_t idx)
{
    latch_slot *slab = atomic_load_explicit(
        &latch__slabs[idx >> LATCH_SLAB_BITS], memory_order_acquire);

    return &slab[idx & ((1u << LATCH_SLAB_BITS) - 1)];
}

/* A free slot for a new object, or UINT32_MAX when out of memory or
 * slots. Slabs are allocated once and kept for the process's life. */
uint32_t latch__rslot_take(void)
{
    uint32_t idx = UINT32_MAX;

    pthread_mutex_lock(&slot_mu);
    if (slot_free != 0) {
        idx = slot_free - 1;
        slot_free = latch__rslot_at(idx)->next_free;
    } else if (slot_count < (1u << LATCH_SLOT_BITS) - 1) {
        size_t si = slot_count >> LATCH_SLAB_BITS;
        if (atomic_load(&latch__slabs[si]) == NULL) {
            latch_slot *slab =
                calloc((size_t)1 << LATCH_SLAB_BITS, sizeof(*slab));
            if (slab != NULL)
                atomic_store_explicit(&latch__slabs[si], slab,
                                      memory_order_release);
        }
        if (atomic_load(&latch__slabs[si]) != NULL)
            idx = slot_count++;
    }
    pthread_mutex_unlock(&slot_mu);
    return idx;
}

void latch__rslot_give_back(uint32_t idx)
{
    latch_slot *sl = latch__rslot_at(idx);

    atomic_store_explicit(&sl->obj, NULL, memory_order_relaxed);
    pthread_mutex_lock(&slot_mu);
    sl->next_free = slot_free;
    slot_free = idx + 1;
    pthread_mutex_unlock(&slot_mu);
}

/*
 * What a handle may still reach once an app's run is over for good: the
 * next latch_run frees the workers of the last one (ws[0..n)), and
 * latch_app_free the app. A response the program held past its run (a
 * latch_res_retain it never released, a thread that kept it) still has a
 * live slot pointing to a worker about to be freed, so a later call through
 * its handle (latch_res_post, latch_res_release, any getter) would follow
 * it: its slot is retired now, and such a call is refused as for any stale
 * handle. The object itself stays where it was, as unreleased as before.
 * With app_gone every slot that names the app forgets it (free slots too):
 * a stale handle used after latch_app_free is refused without a report,
 * there being no app left to report to. Any thread; the caller makes sure
 * no worker of the app runs.
 */
void latch__rslot_run_over(const latch_app *app, const latch_worker *ws, int n,
                           bool app_gone)
{
    uint32_t i;

    pthread_mutex_lock(&slot_mu);
    for (i = 0; i < slot_count; i++) {
        latch_slot *sl = latch__rslot_at(i);
        latch_res *r;

        if (atomic_load_explicit(&sl->app, memory_order_relaxed) != app)
            continue;
        r = atomic_load_explicit(&sl->obj, memory_order_relaxed);
        /* Compared as numbers: r->w may be a worker of another run. */
        if (r != NULL && n > 0 && (uintptr_t)r->w >= (uintptr_t)ws &&
            (uintptr_t)r->w < (uintptr_t)(ws + n) &&
            atomic_load_explicit(&sl->gen, memory_order_relaxed) != 0) {
            /* Retired as a slot whose generation would wrap is: never on
             * the free list again, its handles stale forever. */
            atomic_store_explicit(&sl->last_id, r->req.id,
                                  memory_order_relaxed);
            atomic_store_explicit(&sl->gen, 0, memory_order_release);
        }
        if (app_gone)
            atomic_store_explicit(&sl->app, NULL, memory_order_relaxed);
    }
    pthread_mutex_unlock(&slot_mu);
}

latch_res *latch__res_stale(uintptr_t v, const char *call, const latch_site *at)
{
    uint32_t idx = LATCH_H_SLOT(v);
    latch_slot *slab = atomic_load_explicit(
        &latch__slabs[idx >> LATCH_SLAB_BITS], memory_order_acquire);
    latch_slot *sl;
    latch_app *app;
    uint64_t last_id = 0;
    char msg[200];

    if (slab == NULL)
        return NULL; /* never a handle latch gave out */
    sl = &slab[idx & ((1u << LATCH_SLAB_BITS) - 1)];
    app = atomic_load_explicit(&sl->app, memory_order_relaxed);
    if (app == NULL)
        return NULL;
    if (atomic_load_explicit(&sl->gen, memory_order_relaxed) == 0 &&
        atomic_load_explicit(&sl->obj, memory_order_relaxed) != NULL) {
        /* Retired by latch__rslot_run_over: it was referenced, but its
         * run is over for good. */
        last_id = atomic_load_explicit(&sl->last_id, memory_order_relaxed);
        snprintf(msg, sizeof(msg),
                 "%s of request %llu used after its server run was over (the "
                 "app ran again): a reference kept past latch_run; nothing "
                 "was done",
                 v & 2 ? "The request" : "The response",
                 (unsigned long long)last_id);
    } else if (atomic_load_explicit(&sl->gen, memory_order_relaxed) ==
               LATCH_H_GEN(v) + 1) {
        last_id = atomic_load_explicit(&sl->last_id, memory_order_relaxed);
        snprintf(msg, sizeof(msg),
                 "%s of request %llu used after that request was over: it was "
                 "kept without latch_res_retain; nothing was done",
                 v & 2 ? "The request" : "The response",
                 (unsigned long long)last_id);
    } else
        snprintf(msg, sizeof(msg),
                 "%s used after its request was over: it was kept without "
                 "latch_res_retain; nothing was done",
                 v & 2 ? "A request" : "A response");
    latch__violation_app_req(app, LATCH_ERR_STREAM_DESTROYED, call, msg, *at,
                             last_id);
    return NULL;
}
