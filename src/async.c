/*
 * async.c - what a request does over time: timers tied to its response,
 * thread-pool work, the request timeout, joins of several tasks, and the
 * race shaker.
 *
 * Everything here holds a reference to its response while it may still
 * act, and is tied to the response through one attachment (internal.h,
 * latch_attach), made the first time a request uses any of it: when the
 * response is over, pending timers never fire; when the request is
 * cancelled, queued work is cancelled and unsettled joins complete with
 * LATCH_ERR_CANCELLED, exactly once. Timer objects live until the
 * response is recycled, which makes latch_clear_timeout safe after the
 * timer fired. None of it takes one of the request's latch_req_on_cancel
 * slots: those are the user's.
 *
 * LATCH_SHAKE=<seed> adds seeded pseudo-random delays (0-19 ms) to timer
 * firing, work completion and disconnect delivery, so that tests can
 * reproduce, on purpose and repeatably, the races production latency
 * causes. It is not a scheduler and adds no delay when unset.
 */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/eventfd.h>
#endif

static const latch_site no_site = {NULL, 0, NULL};

/* What this module ties to one response: its attachment. */
typedef struct async_att {
    latch_attach a;
    struct latch_timer *timers;    /* every timer, until recycled */
    struct latch_timer *req_timer; /* the request timeout, if armed */
    struct latch_work_req *works;  /* latch_work jobs not yet delivered */
    struct latch_join *joins;      /* joins not yet freed */
    int timeout_status;
} async_att;

static void att_end(latch_attach *a, latch_res *res, int reason);
static void att_recycle(latch_attach *a, latch_res *res);
static const latch_attach_ops att_ops = {att_end, att_recycle, NULL, NULL};

static async_att *att_of(const latch_res *res)
{
    return (async_att *)(void *)latch__res_attached(res, &att_ops);
}

/* The response's attachment, made on first use; NULL when out of
 * memory. */
static async_att *att_get(latch_res *res)
{
    async_att *att = att_of(res);

    if (att != NULL)
        return att;
    att = calloc(1, sizeof(*att));
    if (att == NULL)
        return NULL;
    att->a.ops = &att_ops;
    latch__res_attach(res, &att->a);
    return att;
}

struct latch_timer {
    uv_timer_t handle;
    latch_res *res;
    latch_res_cb cb;
    void *data;
    latch_timer *next; /* the response's list */
    uintptr_t h;       /* its handle, for latch_set_timeout's caller */
    uint16_t frame;    /* the handler call that set it (app.c) */
    bool user;         /* set by latch_set_timeout: cb gets the handle */
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
    latch__res_unref(t->res);
}

static void on_fire(uv_timer_t *h)
{
    latch_timer *t = h->data;
    latch_res *res = t->res;
    uint16_t prev;

    if (!t->armed)
        return;
    t->armed = false;
    uv_close((uv_handle_t *)&t->handle, on_closed);
    /* latch_next in the callback acts for the handler that set it. */
    if (t->user && LATCH_TRACING())
        latch__trace(res, "timer fired", NULL, (latch_site){NULL, 0, NULL});
    prev = latch__frame_enter(res, t->frame);
    t->cb(t->user ? latch__res_hf(res, t->frame) : res, t->data);
    latch__frame_leave(res, prev);
    latch__res_unref(res);
}

static latch_timer *timer_start(latch_res *res, uint64_t ms, latch_res_cb cb,
                                void *data)
{
    async_att *att = att_get(res);
    latch_timer *t;
    uint64_t shake;

    if (att == NULL || (t = calloc(1, sizeof(*t))) == NULL)
        return NULL;
    t->res = res;
    t->cb = cb;
    t->data = data;
    t->frame = latch__res_acting_frame(res);
    t->handle.data = t;
    uv_timer_init(&res->w->loop, &t->handle);
    /* A huge ms must not wrap around to a short one. */
    shake = latch__shake_ms(res->w);
    uv_timer_start(&t->handle, on_fire,
                   ms > UINT64_MAX - shake ? UINT64_MAX : ms + shake, 0);
    t->armed = true;
    latch__res_ref(res); /* held until it fires or is cleared */
    t->next = att->timers;
    att->timers = t;
    return t;
}

latch_timer *latch_set_timeout_at(latch_res *res, uint64_t ms, latch_res_cb cb,
                                  void *data, latch_site at)
{
    latch_timer *t;
    uint16_t hf = latch__frame_of(res);

    if (res != NULL &&
        (res = latch__res_in(res, "latch_set_timeout", &at)) == NULL)
        return NULL;
    if (res == NULL)
        return NULL;
    if (cb == NULL) {
        latch__violation(res, LATCH_ERR_INVALID_ARG, "latch_set_timeout",
                         "The callback is NULL", at);
        return NULL;
    }
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
    if (res->cancel_reason != LATCH_CANCEL_NONE) {
        latch__violation(res, LATCH_ERR_CANCELLED, "latch_set_timeout",
                         "Cannot set a timer on a cancelled request", at);
        return NULL;
    }
    t = timer_start(res, ms, cb, data);
    if (t == NULL)
        return NULL;
    t->user = true;
    t->frame = latch__frame_pick(hf, res);
    /* The caller keeps a handle, which turns stale when the timer's
     * memory goes with its response: never a dangling pointer. */
    if ((t->h = latch__handle_new(t, res->w)) == 0) {
        disarm(t);
        return NULL;
    }
    if (LATCH_TRACING()) {
        char event[48];
        snprintf(event, sizeof(event), "timer set (%llu ms)",
                 (unsigned long long)ms);
        latch__trace(res, event, "latch_set_timeout", at);
    }
    return (latch_timer *)t->h;
}

#undef latch_clear_timeout

int latch_clear_timeout(latch_timer *tp)
{
    return latch_clear_timeout_at(tp, no_site);
}

int latch_clear_timeout_at(latch_timer *tp, latch_site at)
{
    latch_timer *t = tp;

    if (t == NULL)
        return LATCH_ERR_INVALID_ARG;
    if ((uintptr_t)tp & 1) {
        /* A timer of a request that is over (its memory gone) is long
         * fired or cleared: as clearTimeout, nothing to do. */
        if ((t = latch__handle_get((uintptr_t)tp)) == NULL)
            return 0;
    }
    if (!pthread_equal(pthread_self(), t->res->w->thread)) {
        latch__violation(t->res, LATCH_ERR_WRONG_THREAD, "latch_clear_timeout",
                         NULL, at);
        return LATCH_ERR_WRONG_THREAD;
    }
    if (!t->armed)
        return 0; /* fired or cleared already: nothing to do, as Node */
    if (t->user && LATCH_TRACING())
        latch__trace(t->res, "timer cleared", NULL, at);
    disarm(t);
    return 0;
}

static void timers_free(async_att *att)
{
    latch_timer *t, *next;

    for (t = att->timers; t != NULL; t = next) {
        next = t->next;
        latch__handle_retire(t->h);
        /* Armed timers hold a reference, so none is armed here. */
        if (t->closed)
            free(t);
        else
            t->orphan = true;
    }
    att->timers = NULL;
}

/* ------------------------------------------------------------------ */
/* The request timeout                                                  */
/* ------------------------------------------------------------------ */

static void on_request_timeout(latch_res *res, void *data)
{
    async_att *att = data;

    att->req_timer = NULL;
    if (res->detached || res->state >= LATCH_RS_ENDED)
        return; /* answered in time; only the client is slow */
    latch__res_ref(res);
    /* Nothing sent: the answer is the app's (its error handlers, or the
     * final handler), with the request already marked cancelled. */
    if (latch__res_timeout_begin(res))
        latch__res_timed_out(res, att->timeout_status);
    latch__res_timeout(res, att->timeout_status);
    latch__res_unref(res);
}

void latch__request_timer_start(latch_res *res, uint64_t ms, int status)
{
    async_att *att = att_get(res);

    if (att == NULL)
        return;
    if (att->req_timer != NULL) {
        latch_clear_timeout(att->req_timer);
        att->req_timer = NULL;
    }
    att->timeout_status = status > 0 ? status : LATCH_TIMEOUT_STATUS_DEFAULT;
    if (ms > 0)
        att->req_timer = timer_start(res, ms, on_request_timeout, att);
}

bool latch__async_request_timer_armed(const latch_res *res)
{
    const async_att *att = res->attach != NULL ? att_of(res) : NULL;

    return att != NULL && att->req_timer != NULL && att->req_timer->armed;
}

#undef latch_req_set_timeout

int latch_req_set_timeout(latch_req *req, uint64_t ms, int status)
{
    return latch_req_set_timeout_at(req, ms, status, no_site);
}

int latch_req_set_timeout_at(latch_req *req, uint64_t ms, int status,
                             latch_site at)
{
    if (req != NULL && (req = (latch_req *)latch__res_in(
                            req, "latch_req_set_timeout", &at)) == NULL)
        return LATCH_ERR_STREAM_DESTROYED;
    latch_res *res = latch_req_res(req);

    if (res == NULL)
        return LATCH_ERR_INVALID_ARG;
    if ((status != 0 && (status < 400 || status > 599)) ||
        ms > 24ull * 3600 * 1000) {
        latch__violation(res, LATCH_ERR_INVALID_ARG, "latch_req_set_timeout",
                         "The status must be 0 or 400..599 and the timeout "
                         "at most 24 hours",
                         at);
        return LATCH_ERR_INVALID_ARG;
    }
    if (!pthread_equal(pthread_self(), res->w->thread)) {
        latch__violation(res, LATCH_ERR_WRONG_THREAD, "latch_req_set_timeout",
                         NULL, at);
        return LATCH_ERR_WRONG_THREAD;
    }
    if (res->detached || res->state >= LATCH_RS_ENDED ||
        res->cancel_reason != LATCH_CANCEL_NONE) {
        latch__violation(res, LATCH_ERR_STATE, "latch_req_set_timeout",
                         "The response already ended or the request was "
                         "cancelled",
                         at);
        return LATCH_ERR_STATE;
    }
    latch__request_timer_start(res, ms, status);
    return 0;
}

/* ------------------------------------------------------------------ */
/* Thread-pool work                                                     */
/* ------------------------------------------------------------------ */

struct latch_work_req {
    uv_work_t req;
    uv_timer_t delay; /* LATCH_SHAKE: the completion arrives late */
    latch_res *res;
    void (*work)(void *data);
    void (*after)(latch_res *res, int status, void *data);
    void *data;
    int status;
    uint16_t frame;              /* the handler call that queued it */
    async_att *att;              /* its response's */
    struct latch_work_req *next; /* att's list */
    /*
     * What the job sees of its request's cancellation, on the pool
     * thread: the flag, and a descriptor made on the job's first
     * latch_work_cancel_fd (most jobs never ask). The loop sets the flag
     * and then reads cancel_fd; the job publishes cancel_fd and then
     * reads the flag; both sequentially consistent, so whichever comes
     * second signals the descriptor (a counter: signalled twice is
     * still just readable). Both live until the job's completion ran,
     * after the job returned.
     */
    atomic_bool cancel;
    atomic_int cancel_fd; /* -1 until asked for */
    int cancel_fd_w;      /* the write end where it is a pipe, else -1 */
    /* latch_work_copy: the caller's bytes, which `data` points to; they
     * go with the request, after the completion returned. */
    max_align_t copy[];
};

/* The job running on this pool thread, for latch_work_cancelled. */
static _Thread_local struct latch_work_req *current_job;

static void work_unlink(struct latch_work_req *wr)
{
    struct latch_work_req **pp = &wr->att->works;

    while (*pp != NULL && *pp != wr)
        pp = &(*pp)->next;
    if (*pp == wr)
        *pp = wr->next;
}

static void work_run(uv_work_t *req)
{
    struct latch_work_req *wr = req->data;
    struct latch_work_req *up = current_job;

    current_job = wr;
    wr->work(wr->data);
    current_job = up;
}

/* Makes a cancel descriptor readable; any thread, idempotent. */
static void cancel_fd_signal(const struct latch_work_req *wr, int fd)
{
    ssize_t r;

#ifdef __linux__
    uint64_t one = 1;
    (void)wr;
    do
        r = write(fd, &one, sizeof(one));
    while (r < 0 && errno == EINTR);
#else
    char one = 1;
    (void)fd;
    do
        r = write(wr->cancel_fd_w, &one, 1);
    while (r < 0 && errno == EINTR);
#endif
    /* EAGAIN: the counter (or the pipe) is full, so readable already. */
    (void)r;
}

/* The loop's half: the job's request was cancelled. */
static void work_cancel(struct latch_work_req *wr)
{
    int fd;

    atomic_store(&wr->cancel, true);
    fd = atomic_load(&wr->cancel_fd);
    if (fd >= 0)
        cancel_fd_signal(wr, fd);
}

bool latch_work_cancelled(void)
{
    return current_job != NULL && atomic_load(&current_job->cancel);
}

int latch_work_cancel_fd(void)
{
    struct latch_work_req *wr = current_job;
    int fd;

    if (wr == NULL)
        return -1;
    fd = atomic_load(&wr->cancel_fd);
    if (fd >= 0)
        return fd;
#ifdef __linux__
    fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (fd < 0)
        return -1;
#else
    {
        int p[2];
        if (pipe(p) < 0)
            return -1;
        for (int i = 0; i < 2; i++) {
            fcntl(p[i], F_SETFD, FD_CLOEXEC);
            fcntl(p[i], F_SETFL, O_NONBLOCK);
        }
        fd = p[0];
        wr->cancel_fd_w = p[1];
    }
#endif
    atomic_store(&wr->cancel_fd, fd);
    if (atomic_load(&wr->cancel))
        cancel_fd_signal(wr, fd);
    return fd;
}

/* The job is over (its completion is about to run): its descriptor
 * goes. */
static void cancel_fd_close(struct latch_work_req *wr)
{
    int fd = atomic_load(&wr->cancel_fd);

    if (fd >= 0)
        close(fd);
    if (wr->cancel_fd_w >= 0)
        close(wr->cancel_fd_w);
    atomic_store(&wr->cancel_fd, -1);
    wr->cancel_fd_w = -1;
}

static void work_deliver(struct latch_work_req *wr)
{
    latch_res *res = wr->res;
    int status = wr->status;

    uint16_t prev;

    work_unlink(wr);
    cancel_fd_close(wr);
    if (status == 0 && res->cancel_reason != LATCH_CANCEL_NONE)
        status = LATCH_ERR_CANCELLED;
    if (LATCH_TRACING()) {
        char event[64];
        snprintf(event, sizeof(event), "work done (%s)",
                 latch_err_name(status));
        latch__trace(res, event, NULL, (latch_site){NULL, 0, NULL});
    }
    prev = latch__frame_enter(res, wr->frame);
    wr->after(latch__res_hf(res, wr->frame), status, wr->data);
    latch__frame_leave(res, prev);
    latch__res_unref(res);
}

static void work_free(uv_handle_t *h)
{
    free(h->data);
}

static void on_delay(uv_timer_t *t)
{
    struct latch_work_req *wr = t->data;

    work_deliver(wr);
    uv_close((uv_handle_t *)&wr->delay, work_free);
}

static void work_done(uv_work_t *req, int status)
{
    struct latch_work_req *wr = req->data;
    uint64_t delay = latch__shake_ms(wr->res->w);

    wr->status = status == UV_ECANCELED ? LATCH_ERR_CANCELLED : 0;
    if (delay > 0) {
        wr->delay.data = wr;
        uv_timer_init(&wr->res->w->loop, &wr->delay);
        uv_timer_start(&wr->delay, on_delay, delay, 0);
        return;
    }
    work_deliver(wr);
    free(wr);
}

/*
 * latch_work and latch_work_copy: `size` bytes of `data` copied into the
 * job's own record when size > 0 (the job and its completion then get
 * the copy), `data` passed as is otherwise. `call` names the entry point
 * in reports.
 */
static int work_start(latch_res *res, void (*work)(void *data),
                      void (*after)(latch_res *res, int status, void *data),
                      void *data, size_t size, const char *call, latch_site at)
{
    struct latch_work_req *wr;
    async_att *att;
    int r;
    uint16_t hf = latch__frame_of(res);

    if (res != NULL && (res = latch__res_in(res, call, &at)) == NULL)
        return LATCH_ERR_STREAM_DESTROYED;
    if (res == NULL)
        return LATCH_ERR_INVALID_ARG;
    if (work == NULL || after == NULL) {
        latch__violation(res, LATCH_ERR_INVALID_ARG, call,
                         "The work and after functions are required", at);
        return LATCH_ERR_INVALID_ARG;
    }
    if (size > 0 && (data == NULL || size > LATCH_WORK_COPY_MAX)) {
        latch__violation(res, LATCH_ERR_INVALID_ARG, call,
                         "The data to copy must be 1 byte to 64 KiB", at);
        return LATCH_ERR_INVALID_ARG;
    }
    if (!pthread_equal(pthread_self(), res->w->thread)) {
        latch__violation(res, LATCH_ERR_WRONG_THREAD, call, NULL, at);
        return LATCH_ERR_WRONG_THREAD;
    }
    if (res->state >= LATCH_RS_FINISHED || res->detached ||
        res->cancel_reason != LATCH_CANCEL_NONE) {
        latch__violation(res,
                         res->cancel_reason ? LATCH_ERR_CANCELLED
                                            : LATCH_ERR_STREAM_DESTROYED,
                         call, "Cannot start work for a request that is over",
                         at);
        return LATCH_ERR_STATE;
    }
    if ((att = att_get(res)) == NULL ||
        (wr = calloc(1, sizeof(*wr) + size)) == NULL)
        return LATCH_ERR_NOMEM;
    wr->req.data = wr;
    wr->att = att;
    wr->res = res;
    wr->work = work;
    wr->after = after;
    wr->data = data;
    if (size > 0) {
        memcpy(wr->copy, data, size);
        wr->data = wr->copy;
    }
    wr->frame = latch__frame_pick(hf, res);
    atomic_init(&wr->cancel, false);
    atomic_init(&wr->cancel_fd, -1);
    wr->cancel_fd_w = -1;
    r = uv_queue_work(&res->w->loop, &wr->req, work_run, work_done);
    if (r < 0) {
        free(wr);
        return r;
    }
    latch__res_ref(res);
    wr->next = att->works;
    att->works = wr;
    if (LATCH_TRACING())
        latch__trace(res, "work queued", call, at);
    return 0;
}

int latch_work_at(latch_res *res, void (*work)(void *data),
                  void (*after)(latch_res *res, int status, void *data),
                  void *data, latch_site at)
{
    return work_start(res, work, after, data, 0, "latch_work", at);
}

int latch_work_copy_at(latch_res *res, void (*work)(void *data),
                       void (*after)(latch_res *res, int status, void *data),
                       const void *data, size_t size, latch_site at)
{
    /* size 0 would mean "no copy": refused here, as NULL data is. */
    return work_start(res, work, after, (void *)data,
                      size == 0 ? LATCH_WORK_COPY_MAX + 1 : size,
                      "latch_work_copy", at);
}

/* ------------------------------------------------------------------ */
/* Joins                                                                */
/* ------------------------------------------------------------------ */

struct latch_join {
    latch_res *res;
    async_att *att;   /* its response's */
    latch_join *next; /* att's joins */
    latch_join_cb done;
    void *data;
    int n;
    int reported;        /* tasks that resolved or failed */
    atomic_bool settled; /* read by tasks on any thread */
    bool holds_ref;      /* a reference to res until the completion ran */
    /* The memory's owners: the response (1, until join_destroy) and each
     * report from another thread on its way to the loop. */
    atomic_int users;
    bool dead;       /* join_destroy ran: the reports still in flight drop */
    uintptr_t h;     /* the handle its creator got */
    latch_worker *w; /* its response's, which outlives it */
    uint16_t frame;  /* the handler call that made it */
    uint8_t *seen;
    void *results[];
};

static void join_unuse(latch_join *j)
{
    if (atomic_fetch_sub(&j->users, 1) == 1) {
        free(j->seen);
        free(j);
    }
}

static void join_destroy(latch_join *j)
{
    latch_join **pp = &j->att->joins;

    /* From here on the handle is stale: no thread can pin the join any
     * more, and those that did hold their count. */
    latch__handle_retire(j->h);
    while (*pp != NULL && *pp != j)
        pp = &(*pp)->next;
    if (*pp == j)
        *pp = j->next;
    j->dead = true;
    join_unuse(j);
}

/*
 * After the completion, the join only waits for its tasks' reports. Tasks
 * that never report (timers cleared with the response) must not keep it,
 * or the response, alive: it lets go of the response at once, and is
 * freed when the last task reports or when the response is recycled.
 */
static void join_after_settle(latch_join *j)
{
    latch_res *res = j->res;
    bool drop = j->holds_ref;

    j->holds_ref = false;
    if (j->reported == j->n)
        join_destroy(j);
    if (drop)
        latch__res_unref(res); /* may recycle res, and free j with it */
}

static void join_settle(latch_join *j, int status)
{
    latch_res *res = j->res;
    uint16_t prev;

    j->settled = true;
    latch__res_ref(res); /* for the completion, which may release others */
    prev = latch__frame_enter(res, j->frame);
    j->done(latch__res_hf(res, j->frame), status,
            status == 0 ? j->results : NULL, j->data);
    latch__frame_leave(res, prev);
    latch__res_unref(res);
}

/* ------------------------------------------------------------------ */
/* The attachment's two operations                                      */
/* ------------------------------------------------------------------ */

/*
 * The response is over (reason NONE) or its request cancelled (each event
 * once, in either order): no timer fires from now on; on the
 * cancellation, jobs not started yet will not start (their after gets
 * LATCH_ERR_CANCELLED) and every unsettled join completes with
 * LATCH_ERR_CANCELLED. A completion runs user code that may settle or free
 * other joins, so the list is searched again after each one; none is added
 * meanwhile (latch_join_new refuses a cancelled request).
 */
static void att_end(latch_attach *a, latch_res *res, int reason)
{
    async_att *att = (async_att *)(void *)a;
    latch_timer *t;
    struct latch_work_req *wr;
    latch_join *j;

    (void)res;
    for (t = att->timers; t != NULL; t = t->next)
        disarm(t);
    if (reason == LATCH_CANCEL_NONE)
        return;
    for (wr = att->works; wr != NULL; wr = wr->next) {
        work_cancel(wr); /* a running job sees it */
        uv_cancel((uv_req_t *)&wr->req);
    }
    for (;;) {
        for (j = att->joins; j != NULL && j->settled; j = j->next)
            ;
        if (j == NULL)
            break;
        join_settle(j, LATCH_ERR_CANCELLED);
        join_after_settle(j);
    }
}

/* The response goes back to its pool: nothing holds it, so no timer is
 * armed and no job is pending; joins whose tasks never reported go, and
 * reports still on their way from other threads find them dead. */
static void att_recycle(latch_attach *a, latch_res *res)
{
    async_att *att = (async_att *)(void *)a;

    (void)res;
    timers_free(att);
    while (att->joins != NULL)
        join_destroy(att->joins);
    free(att);
}

#undef latch_join_new

latch_join *latch_join_new(latch_res *res, int n, latch_join_cb done,
                           void *data)
{
    return latch_join_new_at(res, n, done, data, no_site);
}

latch_join *latch_join_new_at(latch_res *res, int n, latch_join_cb done,
                              void *data, latch_site at)
{
    uint16_t hf = latch__frame_of(res);
    if (res != NULL &&
        (res = latch__res_in(res, "latch_join_new", &at)) == NULL)
        return NULL;
    latch_join *j;

    if (res == NULL)
        return NULL;
    async_att *att;

    if (done == NULL || n < 1 || n > 4096) {
        latch__violation(res, LATCH_ERR_INVALID_ARG, "latch_join_new",
                         "A join needs 1..4096 tasks and a completion", at);
        return NULL;
    }
    if (!pthread_equal(pthread_self(), res->w->thread)) {
        latch__violation(res, LATCH_ERR_WRONG_THREAD, "latch_join_new", NULL,
                         at);
        return NULL;
    }
    if (res->state >= LATCH_RS_FINISHED || res->detached ||
        res->cancel_reason != LATCH_CANCEL_NONE) {
        latch__violation(res,
                         res->cancel_reason ? LATCH_ERR_CANCELLED
                                            : LATCH_ERR_STREAM_DESTROYED,
                         "latch_join_new",
                         "Cannot start a join for a request that is over", at);
        return NULL;
    }
    if ((att = att_get(res)) == NULL)
        return NULL;
    j = calloc(1, sizeof(*j) + (size_t)n * sizeof(void *));
    if (j == NULL)
        return NULL;
    j->seen = calloc((size_t)n, 1);
    if (j->seen == NULL) {
        free(j);
        return NULL;
    }
    j->res = res;
    j->att = att;
    j->done = done;
    j->data = data;
    j->n = n;
    atomic_init(&j->users, 1);
    atomic_init(&j->settled, false);
    j->frame = latch__frame_pick(hf, res);
    j->w = res->w;
    if ((j->h = latch__handle_new(j, j->w)) == 0) {
        free(j->seen);
        free(j);
        return NULL;
    }
    latch__res_ref(res);
    j->holds_ref = true;
    j->next = att->joins;
    att->joins = j;
    return (latch_join *)j->h;
}

/*
 * The join behind a handle, pinned (its memory stays until join_unuse)
 * so that a task on another thread can use it while the loop may free
 * it; NULL for a handle whose join is gone: its request is over and
 * recycled, and a late report has nobody to tell (as a promise settled
 * long ago, it is ignored).
 */
static latch_join *join_pin(const latch_join *jp)
{
    latch_join *j;

    if (!((uintptr_t)jp & 1)) {
        j = (latch_join *)(uintptr_t)jp;
        atomic_fetch_add(&j->users, 1);
        return j;
    }
    latch__handle_lock();
    j = latch__handle_get_locked((uintptr_t)jp);
    if (j != NULL)
        atomic_fetch_add(&j->users, 1);
    latch__handle_unlock();
    return j;
}

static int join_report_here(latch_join *j, int index, void *result, int error,
                            latch_site at);

/* A task's report made on another thread, on its way to the loop. */
struct join_remote {
    latch_join *j;
    int index;
    void *result;
    int error;
    latch_site at; /* the task's call */
};

static void join_remote_run(latch_res *unused, void *data)
{
    struct join_remote *m = data;
    latch_join *j = m->j;

    (void)unused;
    /* A join whose response was recycled meanwhile has nobody to tell. */
    if (!j->dead)
        join_report_here(j, m->index, m->result, m->error, m->at);
    join_unuse(j);
    free(m);
}

/*
 * Promise.all's tasks finish where they run: a report from another thread
 * (a latch_work job, a driver's thread) is posted to the response's loop,
 * where the join is only ever touched. The join's memory stays until the
 * post ran, even if its response is recycled first. The caller must make
 * the call while the join is alive (before its own report, the response
 * referenced: a latch_work job holds it for its whole life).
 */
static int join_post(latch_join *j, int index, void *result, int error,
                     latch_site at)
{
    struct join_remote *m = malloc(sizeof(*m));
    int r;

    if (m == NULL)
        return LATCH_ERR_NOMEM;
    m->j = j;
    m->index = index;
    m->result = result;
    m->error = error;
    m->at = at;
    atomic_fetch_add(&j->users, 1);
    r = latch__worker_post(j->w, join_remote_run, m);
    if (r < 0) {
        atomic_fetch_sub(&j->users, 1);
        free(m);
    }
    return r;
}

static int join_report(latch_join *j, int index, void *result, int error,
                       latch_site at)
{
    if (j == NULL)
        return LATCH_ERR_INVALID_ARG;
    if (index < 0 || index >= j->n) {
        const char *call = error < 0 ? "latch_join_fail" : "latch_join_resolve";
        /* Off the loop the response may be recycled any time: the report
         * goes to the app, not to a response. */
        if (pthread_equal(pthread_self(), j->w->thread) && !j->dead)
            latch__violation(j->res, LATCH_ERR_INVALID_ARG, call,
                             "The task index is outside the join", at);
        else
            latch__violation_app(j->w->app, LATCH_ERR_INVALID_ARG, call,
                                 "The task index is outside the join", at);
        return LATCH_ERR_INVALID_ARG;
    }
    if (!pthread_equal(pthread_self(), j->w->thread))
        return join_post(j, index, result, error, at);
    return join_report_here(j, index, result, error, at);
}

static int join_report_here(latch_join *j, int index, void *result, int error,
                            latch_site at)
{
    if (j->seen[index]) {
        /* Each task reports once. */
        latch__violation(j->res, LATCH_ERR_STATE,
                         error < 0 ? "latch_join_fail" : "latch_join_resolve",
                         "This task of the join already reported", at);
        return LATCH_ERR_STATE;
    }
    j->seen[index] = 1;
    j->reported++;
    if (j->settled) {
        if (j->reported == j->n)
            join_destroy(j);
        return 0;
    }
    if (error < 0) {
        join_settle(j, error);
    } else {
        j->results[index] = result;
        if (j->reported == j->n)
            join_settle(j, 0);
    }
    if (j->settled)
        join_after_settle(j);
    return 0;
}

static int join_report_pinned(latch_join *jp, int index, void *result,
                              int error, latch_site at)
{
    latch_join *j;
    int r;

    if (jp == NULL)
        return LATCH_ERR_INVALID_ARG;
    if ((j = join_pin(jp)) == NULL)
        return LATCH_ERR_STREAM_DESTROYED;
    /* On the loop, a join destroyed meanwhile (pinned only by this call)
     * has nobody to tell; a post from another thread finds that out on
     * the loop (join_remote_run). */
    if (pthread_equal(pthread_self(), j->w->thread) && j->dead)
        r = LATCH_ERR_STREAM_DESTROYED;
    else
        r = join_report(j, index, result, error, at);
    join_unuse(j);
    return r;
}

#undef latch_join_resolve
#undef latch_join_fail

int latch_join_resolve_at(latch_join *j, int index, void *result, latch_site at)
{
    return join_report_pinned(j, index, result, 0, at);
}

int latch_join_fail_at(latch_join *j, int index, int error, latch_site at)
{
    return join_report_pinned(j, index, NULL,
                              error < 0 ? error : LATCH_ERR_HTTP, at);
}

int latch_join_resolve(latch_join *j, int index, void *result)
{
    return latch_join_resolve_at(j, index, result, no_site);
}

int latch_join_fail(latch_join *j, int index, int error)
{
    return latch_join_fail_at(j, index, error, no_site);
}

bool latch_join_settled(const latch_join *jp)
{
    latch_join *j;
    bool settled;

    if (jp == NULL || (j = join_pin(jp)) == NULL)
        return true; /* gone: long settled */
    settled = atomic_load(&j->settled);
    join_unuse(j);
    return settled;
}
