/*
 * worker.c - one worker's runtime, a leaf every module may name: the
 * Date line redone once a second, the queue of calls posted
 * from other threads (latch_res_post, a job's join, a Redis message), the
 * hooks features register for the worker's drain and finish, and the
 * LATCH_SHAKE delays. It names no other module of latch: server.c makes
 * and runs the workers, and calls in here.
 */
#include "internal.h"

#include <stdlib.h>
#include <time.h>

/* The Date header, redone once a second rather than per response. */
void latch__worker_date(latch_worker *w)
{
    time_t t = time(NULL);
    struct tm tm;

    gmtime_r(&t, &tm);
    w->date_len = strftime(w->date_line, sizeof(w->date_line),
                           "Date: %a, %d %b %Y %H:%M:%S GMT\r\n", &tm);
}

void latch__worker_hook(latch_worker *w, latch_whook *h)
{
    h->next = w->hooks;
    w->hooks = h;
}

/* ------------------------------------------------------------------ */
/* Posting from other threads                                           */
/* ------------------------------------------------------------------ */

struct latch_post {
    struct latch_post *next;
    latch_res *res;
    latch_res_cb fn; /* NULL: fn_at(res, at) */
    void *data;
    void (*fn_at)(latch_res *res, latch_site at);
    latch_site at;
};

/* Queues fn(res, data), or fn_at(res, at) when fn is NULL, for the
 * worker's loop. Any thread. */
static int post(latch_worker *w, latch_res *res, latch_res_cb fn, void *data,
                void (*fn_at)(latch_res *, latch_site), latch_site at)
{
    struct latch_post *p = malloc(sizeof(*p));

    if (p == NULL)
        return LATCH_ERR_NOMEM;
    p->res = res;
    p->fn = fn;
    p->data = data;
    p->fn_at = fn_at;
    p->at = at;
    pthread_mutex_lock(&w->post_mu);
    if (w->gone) {
        /* The server stopped: no loop will run it. */
        pthread_mutex_unlock(&w->post_mu);
        free(p);
        return LATCH_ERR_STATE;
    }
    p->next = w->posts;
    w->posts = p;
    /* Under the lock: the loop closes the wake handle only after it
     * marked itself gone under it. */
    uv_async_send(&w->wake);
    pthread_mutex_unlock(&w->post_mu);
    return 0;
}

int latch__worker_post(latch_worker *w, latch_res_cb fn, void *data)
{
    return post(w, NULL, fn, data, NULL, (latch_site){NULL, 0, NULL});
}

int latch__worker_post_res(latch_worker *w, latch_res *res, latch_res_cb fn,
                           void *data)
{
    return post(w, res, fn, data, NULL, (latch_site){NULL, 0, NULL});
}

int latch__worker_post_at(latch_worker *w, latch_res *res,
                          void (*fn_at)(latch_res *res, latch_site at),
                          latch_site at)
{
    return post(w, res, NULL, NULL, fn_at, at);
}

void latch__worker_close_posts(latch_worker *w)
{
    pthread_mutex_lock(&w->post_mu);
    w->gone = true;
    pthread_mutex_unlock(&w->post_mu);
}

void latch__worker_run_posts(latch_worker *w)
{
    struct latch_post *p, *rev = NULL, *next;

    pthread_mutex_lock(&w->post_mu);
    p = w->posts;
    w->posts = NULL;
    pthread_mutex_unlock(&w->post_mu);
    /* Posted in LIFO order: run them in the order they were posted. */
    for (; p != NULL; p = next) {
        next = p->next;
        p->next = rev;
        rev = p;
    }
    for (p = rev; p != NULL; p = next) {
        next = p->next;
        if (p->fn != NULL) {
            /* fn runs exactly once, as promised, with the handle as
             * posted: if its request is over and the object recycled
             * meanwhile (a reference released too early), every call fn
             * makes through it is refused and reported, and fn can still
             * free its data. */
            p->fn(p->res, p->data);
        } else {
            p->fn_at(p->res, p->at);
        }
        free(p);
    }
}

/* ------------------------------------------------------------------ */
/* Responses the program holds                                          */
/* ------------------------------------------------------------------ */

void latch__worker_hold(latch_worker *w)
{
    w->held++;
}

void latch__worker_unhold(latch_worker *w)
{
    /* The wake handle is open while the worker waits (it closes when the
     * worker finishes, which clears hold_wait first). */
    if (--w->held == 0 && w->hold_wait)
        uv_async_send(&w->wake);
}

/* ------------------------------------------------------------------ */
/* LATCH_SHAKE                                                          */
/* ------------------------------------------------------------------ */

/* xorshift64*: cheap, seeded, and the same sequence on every run. */
uint64_t latch__shake_ms(latch_worker *w)
{
    uint64_t x = w->shake_state;

    if (x == 0)
        return 0;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    w->shake_state = x;
    return ((x * 0x2545f4914f6cdd1dull) >> 33) % 20;
}

/* splitmix64's finalizer: a bijection of 64-bit values that scatters. */
static uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/*
 * The xorshift state of one worker: the seed mixed, then mixed again with
 * the worker index. For one index it is a bijection of the seed, so
 * distinct seeds start distinct states, and xorshift maps distinct
 * non-zero states to distinct sequences; mixing the seed first keeps one
 * seed's worker 1 from being another seed's worker 0. The one state that
 * would be 0 (xorshift's fixed point, which means "off") takes another
 * constant.
 */
uint64_t latch__shake_state(uint64_t seed, int index)
{
    uint64_t z;

    if (seed == 0)
        return 0;
    z = mix64(mix64(seed) + (uint64_t)(index + 1) * 0x9e3779b97f4a7c15ull);
    return z != 0 ? z : 0x2545f4914f6cdd1dull;
}
