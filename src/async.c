/*
 * async.c - timers tied to a response.
 *
 * A timer set with latch_set_timeout holds a reference to its response and
 * belongs to it: when the response finishes or is destroyed, every timer
 * of it that has not fired is cancelled, so its callback never runs on a
 * response that is over. The timer objects live until the response is
 * recycled, which makes latch_clear_timeout safe after the timer fired.
 *
 * This is not yet the whole of the async layer (thread-pool work, request
 * timeouts and the cancellation signal come with it later).
 */
#include "internal.h"

#include <stdlib.h>

struct latch_timer {
    uv_timer_t handle;
    latch_res *res;
    latch_res_cb cb;
    void *data;
    latch_timer *next; /* the response's list */
    bool armed;        /* started, not fired nor cleared */
    bool closed;       /* uv_close completed */
    bool orphan;       /* the response was recycled: free on close */
};

static void on_closed(uv_handle_t *h)
{
    latch_timer *t = h->data;

    t->closed = true;
    if (t->orphan)
        free(t);
}

/* Stops the timer and drops its reference; the callback will not run. */
static void disarm(latch_timer *t)
{
    if (!t->armed)
        return;
    t->armed = false;
    uv_timer_stop(&t->handle);
    uv_close((uv_handle_t *)&t->handle, on_closed);
    latch_res_release(t->res);
}

static void on_fire(uv_timer_t *h)
{
    latch_timer *t = h->data;
    latch_res *res = t->res;

    if (!t->armed)
        return;
    t->armed = false;
    uv_close((uv_handle_t *)&t->handle, on_closed);
    t->cb(res, t->data);
    latch_res_release(res);
}

latch_timer *latch_set_timeout_at(latch_res *res, uint64_t ms, latch_res_cb cb,
                                  void *data, latch_site at)
{
    latch_timer *t;

    if (res == NULL || cb == NULL)
        return NULL;
    if (!pthread_equal(pthread_self(), res->w->thread)) {
        latch__violation(res, LATCH_ERR_WRONG_THREAD, "latch_set_timeout", NULL,
                         at);
        return NULL;
    }
    if (res->state >= LATCH_RS_FINISHED) {
        latch__violation(res,
                         res->state == LATCH_RS_DESTROYED
                             ? LATCH_ERR_STREAM_DESTROYED
                             : LATCH_ERR_STREAM_ALREADY_FINISHED,
                         "latch_set_timeout",
                         "Cannot set a timer on a response that is over", at);
        return NULL;
    }
    t = calloc(1, sizeof(*t));
    if (t == NULL)
        return NULL;
    t->res = res;
    t->cb = cb;
    t->data = data;
    t->handle.data = t;
    uv_timer_init(&res->w->loop, &t->handle);
    uv_timer_start(&t->handle, on_fire, ms, 0);
    t->armed = true;
    res->refs++; /* held until it fires or is cleared */
    t->next = res->timers;
    res->timers = t;
    return t;
}

int latch_clear_timeout(latch_timer *t)
{
    if (t == NULL)
        return LATCH_ERR_INVALID_ARG;
    if (!pthread_equal(pthread_self(), t->res->w->thread))
        return LATCH_ERR_WRONG_THREAD;
    if (!t->armed)
        return 0; /* fired or cleared already: nothing to do, as Node */
    disarm(t);
    return 0;
}

void latch__timers_cancel(latch_res *res)
{
    latch_timer *t;

    for (t = res->timers; t != NULL; t = t->next)
        disarm(t);
}

void latch__timers_free(latch_res *res)
{
    latch_timer *t, *next;

    for (t = res->timers; t != NULL; t = next) {
        next = t->next;
        /* Armed timers hold a reference, so none is armed here. */
        if (t->closed)
            free(t);
        else
            t->orphan = true;
    }
    res->timers = NULL;
}
