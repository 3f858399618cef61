/*
 * pubsub.c - the hub: channels, per-channel increasing ids, a bounded
 * history ring per channel for Last-Event-ID replay, and latch_publish
 * from any thread, delivered on each subscribing worker's own loop in
 * publish order.
 *
 * One lock guards the channels. A publish takes it, assigns the next id,
 * keeps the message in the channel's ring, and appends it to the inbox of
 * each worker that has subscribers on the channel; since the ids and the
 * inbox order come from the same critical section, every worker sees a
 * channel's messages in id order. A worker empties its inbox on its own
 * loop (a uv_async per worker) and hands each message to sse.c, which
 * fans it out to that worker's subscribers. Messages are shared,
 * immutable and reference counted; the SSE frame of each is built once.
 *
 * With a backend (latch_app_set_pubsub, pubsub_redis.c) latch_publish
 * goes through it instead, and what the backend receives enters here
 * through latch__hub_arrived on the worker that subscribed.
 *
 * What it is not: it knows no response, no subscriber and no SSE
 * connection (sse.c), and it never blocks a worker on the network.
 */
#include "pubsub.h"

#include "evstream.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HUB_BUCKETS 256
#define CHANNEL_NAME_MAX 256

/* One worker's side of the hub. */
typedef struct hub_worker {
    struct latch_hub *hub;
    latch_worker *w;
    bool live;   /* the async handle is open: publishers may post */
    bool posted; /* an async send is pending */
    uv_async_t async;
    latch_msg **inbox; /* under the hub's lock */
    size_t n, cap;
    latch_whook hook;
} hub_worker;

struct latch_hub {
    pthread_mutex_t mu;
    latch_app *app;
    latch_chan *buckets[HUB_BUCKETS];
    const latch_hub_up *up;
    hub_worker *hw; /* one per worker while running */
    int nhw;
    latch_backend *be;
};

/* ------------------------------------------------------------------ */
/* Ids and messages                                                     */
/* ------------------------------------------------------------------ */

static bool parse_u64(const char **sp, uint64_t *out)
{
    const char *s = *sp;
    uint64_t v = 0;

    if (*s < '0' || *s > '9')
        return false;
    for (; *s >= '0' && *s <= '9'; s++) {
        if (v > (UINT64_MAX - (uint64_t)(*s - '0')) / 10)
            return false;
        v = v * 10 + (uint64_t)(*s - '0');
    }
    *sp = s;
    *out = v;
    return true;
}

int latch__msgid_parse(const char *s, latch_msgid *out)
{
    latch_msgid id = {0, 0};

    if (s == NULL || !parse_u64(&s, &id.hi))
        return LATCH_ERR_INVALID_ARG;
    if (*s == '-') {
        s++;
        if (!parse_u64(&s, &id.lo))
            return LATCH_ERR_INVALID_ARG;
    }
    if (*s != '\0')
        return LATCH_ERR_INVALID_ARG;
    *out = id;
    return 0;
}

void latch__msgid_format(latch_msgid id, bool dashed, char *out)
{
    if (dashed)
        snprintf(out, 44, "%llu-%llu", (unsigned long long)id.hi,
                 (unsigned long long)id.lo);
    else
        snprintf(out, 44, "%llu", (unsigned long long)id.hi);
}

latch_msg *latch__msg_new(latch_chan *ch, int kind, const char *event,
                          const char *data, size_t len)
{
    size_t elen = event != NULL ? strlen(event) + 1 : 0;
    latch_msg *m;
    char *p;

    if (data == NULL)
        data = "";
    m = malloc(sizeof(*m) + elen + len + 1);
    if (m == NULL)
        return NULL;
    memset(m, 0, sizeof(*m));
    atomic_init(&m->refs, 1);
    m->kind = (uint8_t)kind;
    m->ch = ch;
    p = (char *)(m + 1);
    m->m.channel = ch != NULL ? ch->name : "";
    if (event != NULL) {
        memcpy(p, event, elen);
        m->m.event = p;
        p += elen;
    }
    memcpy(p, data, len);
    p[len] = '\0';
    m->m.data = p;
    m->m.len = len;
    return m;
}

/* Sets the id and builds the SSE frame (id included); on the publisher's
 * side, before the message is shared. 0 or LATCH_ERR_NOMEM. */
static int msg_frame(latch_msg *m, latch_msgid id, bool dashed)
{
    char *f;
    size_t n;

    m->id = id;
    m->dashed = dashed;
    latch__msgid_format(id, dashed, m->idbuf);
    m->m.id = m->idbuf;
    n = latch__evs_event_size(m->m.event, m->idbuf, m->m.data, m->m.len);
    f = malloc(n);
    if (f == NULL)
        return LATCH_ERR_NOMEM;
    m->sse_len = latch__evs_event(f, m->m.event, m->idbuf, m->m.data, m->m.len);
    m->sse = f;
    return 0;
}

void latch__msg_ref(latch_msg *m)
{
    atomic_fetch_add_explicit(&m->refs, 1, memory_order_relaxed);
}

void latch__msg_unref(latch_msg *m)
{
    if (m != NULL &&
        atomic_fetch_sub_explicit(&m->refs, 1, memory_order_acq_rel) == 1) {
        free((void *)m->sse);
        free(m);
    }
}

/* ------------------------------------------------------------------ */
/* The hub and its channels                                             */
/* ------------------------------------------------------------------ */

struct latch_hub *latch__hub_get(latch_app *app)
{
    struct latch_hub *h = atomic_load(&app->hub), *expect = NULL;

    if (h != NULL)
        return h;
    h = calloc(1, sizeof(*h));
    if (h == NULL)
        return NULL;
    pthread_mutex_init(&h->mu, NULL);
    h->app = app;
    if (!atomic_compare_exchange_strong(&app->hub, &expect, h)) {
        /* Another thread made it first. */
        pthread_mutex_destroy(&h->mu);
        free(h);
        return expect;
    }
    return h;
}

static void chan_free(latch_chan *ch)
{
    int i;

    for (i = 0; i < ch->ring_len; i++)
        latch__msg_unref(ch->ring[(ch->ring_head + i) % ch->ring_cap]);
    free(ch->ring);
    free(ch->wsubs);
    free(ch->wready);
    free(ch->local);
    free(ch->blocal);
    free(ch->name);
    free(ch);
}

void latch__hub_free(latch_app *app)
{
    struct latch_hub *h = atomic_load(&app->hub);
    latch_chan *ch, *next;
    int i;
    size_t k;

    if (h == NULL)
        return;
    if (h->be != NULL)
        h->be->ops->free(h->be);
    for (i = 0; i < HUB_BUCKETS; i++)
        for (ch = h->buckets[i]; ch != NULL; ch = next) {
            next = ch->next;
            chan_free(ch);
        }
    for (i = 0; i < h->nhw; i++) {
        for (k = 0; k < h->hw[i].n; k++)
            latch__msg_unref(h->hw[i].inbox[k]);
        free(h->hw[i].inbox);
    }
    free(h->hw);
    pthread_mutex_destroy(&h->mu);
    free(h);
    atomic_store(&app->hub, NULL);
}

static uint32_t hash_name(const char *s, size_t n)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    size_t i;

    for (i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 16777619u;
    return h;
}

/* Finds or makes a channel; under the lock. */
static latch_chan *chan_get(struct latch_hub *h, const char *name, size_t n,
                            bool make)
{
    uint32_t b = hash_name(name, n) % HUB_BUCKETS;
    latch_chan *ch;
    int cap = h->app->channel_history;

    for (ch = h->buckets[b]; ch != NULL; ch = ch->next)
        if (ch->name_len == n && memcmp(ch->name, name, n) == 0)
            return ch;
    if (!make)
        return NULL;
    ch = calloc(1, sizeof(*ch));
    if (ch == NULL)
        return NULL;
    ch->name = malloc(n + 1);
    ch->ring = cap > 0 ? calloc((size_t)cap, sizeof(*ch->ring)) : NULL;
    if (ch->name == NULL || (cap > 0 && ch->ring == NULL)) {
        free(ch->name);
        free(ch->ring);
        free(ch);
        return NULL;
    }
    memcpy(ch->name, name, n);
    ch->name[n] = '\0';
    ch->name_len = n;
    ch->ring_cap = cap;
    ch->next = h->buckets[b];
    h->buckets[b] = ch;
    return ch;
}

/* Sizes the per-worker arrays of ch for this run; under the lock. */
static int chan_workers(latch_chan *ch, int n)
{
    uint32_t *ws;
    bool *ready;
    void **local, **blocal;

    if (ch->nw == n)
        return 0;
    ws = calloc((size_t)n, sizeof(*ws));
    ready = calloc((size_t)n, sizeof(*ready));
    local = calloc((size_t)n, sizeof(*local));
    blocal = calloc((size_t)n, sizeof(*blocal));
    if (ws == NULL || ready == NULL || local == NULL || blocal == NULL) {
        free(ws);
        free(ready);
        free(local);
        free(blocal);
        return LATCH_ERR_NOMEM;
    }
    /* Only between runs, when no worker has subscribers left (and the
     * backend's per-worker state went with its workers). */
    free(ch->wsubs);
    free(ch->wready);
    free(ch->local);
    free(ch->blocal);
    ch->wsubs = ws;
    ch->wready = ready;
    ch->local = local;
    ch->blocal = blocal;
    ch->nw = n;
    return 0;
}

/* Keeps msg in the ring (a reference of its own); under the lock. */
static void ring_push(latch_chan *ch, latch_msg *m)
{
    if (ch->ring_cap == 0) {
        ch->evicted = m->id;
        return;
    }
    if (ch->ring_len == ch->ring_cap) {
        latch_msg *old = ch->ring[ch->ring_head];
        ch->evicted = old->id;
        latch__msg_unref(old);
        ch->ring_head = (ch->ring_head + 1) % ch->ring_cap;
        ch->ring_len--;
    }
    latch__msg_ref(m);
    ch->ring[(ch->ring_head + ch->ring_len) % ch->ring_cap] = m;
    ch->ring_len++;
}

void **latch__chan_local(latch_chan *ch, latch_worker *w)
{
    return &ch->local[w->index];
}

void **latch__chan_blocal(latch_chan *ch, latch_worker *w)
{
    return &ch->blocal[w->index];
}

/* Empties the ring; under the lock. */
static void ring_clear(latch_chan *ch)
{
    while (ch->ring_len > 0) {
        latch__msg_unref(ch->ring[ch->ring_head]);
        ch->ring_head = (ch->ring_head + 1) % ch->ring_cap;
        ch->ring_len--;
    }
    ch->ring_head = 0;
}

/* Whether the ring holds an entry with this id; under the lock. */
static bool ring_has(const latch_chan *ch, latch_msgid id)
{
    int i;

    for (i = ch->ring_len - 1; i >= 0; i--) {
        int c = latch__msgid_cmp(
            ch->ring[(ch->ring_head + i) % ch->ring_cap]->id, id);
        if (c <= 0)
            return c == 0;
    }
    return false;
}

/*
 * What a client that got everything up to `after` is owed from the ring:
 * the entries after it (referenced, in rp->msgs), or rp->gap when the
 * ring cannot say (unparsable, newer than the channel, older than the
 * ring). A backend's ids are not consecutive: there `after` must be an
 * entry the ring holds, the one evicted last, or 0-0 for a channel that
 * has lost nothing (a stream read while empty); and one newer than the
 * channel is rp->ahead (`backend`): another process has seen it, the
 * backend is asked. Under the lock. 0 or LATCH_ERR_NOMEM.
 */
static int ring_replay(latch_chan *ch, const char *after_text, bool backend,
                       latch_replay *rp)
{
    latch_msgid after;
    latch_msg **out;
    int i;

    *rp = (latch_replay){.from = ch->last};
    if (latch__msgid_parse(after_text, &after) == 0 && backend && ch->dashed &&
        latch__msgid_cmp(after, ch->last) > 0) {
        rp->ahead = true;
        return 0;
    }
    if (latch__msgid_parse(after_text, &after) < 0 ||
        latch__msgid_cmp(after, ch->last) > 0 ||
        latch__msgid_cmp(after, ch->evicted) < 0 ||
        (ch->dashed && latch__msgid_cmp(after, ch->evicted) != 0 &&
         !ring_has(ch, after))) {
        /* Not an id of this channel's history as the hub knows it
         * (unparsable, from a later run, or older than the ring). */
        rp->gap = true;
        return 0;
    }
    if (ch->ring_len == 0)
        return 0;
    out = malloc((size_t)ch->ring_len * sizeof(*out));
    if (out == NULL)
        return LATCH_ERR_NOMEM;
    for (i = 0; i < ch->ring_len; i++) {
        latch_msg *m = ch->ring[(ch->ring_head + i) % ch->ring_cap];
        if (latch__msgid_cmp(m->id, after) > 0) {
            latch__msg_ref(m);
            out[rp->n++] = m;
        }
    }
    rp->msgs = out;
    return 0;
}

/* ------------------------------------------------------------------ */
/* Workers' inboxes                                                     */
/* ------------------------------------------------------------------ */

static void inbox_run(uv_async_t *a)
{
    hub_worker *hw = a->data;
    struct latch_hub *h = hw->hub;
    latch_msg **msgs;
    size_t n, i;

    pthread_mutex_lock(&h->mu);
    msgs = hw->inbox;
    n = hw->n;
    hw->inbox = NULL;
    hw->n = hw->cap = 0;
    hw->posted = false;
    pthread_mutex_unlock(&h->mu);
    for (i = 0; i < n; i++) {
        h->up->deliver(hw->w, msgs[i]);
        latch__msg_unref(msgs[i]);
    }
    free(msgs);
}

/* Appends to a worker's inbox and wakes it; under the lock. A worker that
 * is out of memory for its inbox misses the message: its subscribers get
 * a gap instead (sse.c sees the id jump). */
static void inbox_post(hub_worker *hw, latch_msg *m)
{
    if (!hw->live)
        return;
    if (hw->n == hw->cap) {
        size_t cap = hw->cap ? hw->cap * 2 : 16;
        latch_msg **p = realloc(hw->inbox, cap * sizeof(*p));
        if (p == NULL)
            return;
        hw->inbox = p;
        hw->cap = cap;
    }
    latch__msg_ref(m);
    hw->inbox[hw->n++] = m;
    if (!hw->posted) {
        hw->posted = true;
        uv_async_send(&hw->async);
    }
}

static void hw_closed(uv_handle_t *handle)
{
    (void)handle;
}

/* The worker has no connection left: no publisher may post to it from
 * now on, and what its inbox holds is dropped. */
static void hw_finish(latch_whook *hook, latch_worker *w)
{
    hub_worker *hw = LATCH_CONTAINER_OF(hook, hub_worker, hook);
    struct latch_hub *h = hw->hub;
    size_t i;

    if (h->be != NULL && h->be->ops->worker_finish != NULL)
        h->be->ops->worker_finish(h->be, w);
    pthread_mutex_lock(&h->mu);
    hw->live = false;
    for (i = 0; i < hw->n; i++)
        latch__msg_unref(hw->inbox[i]);
    hw->n = 0;
    pthread_mutex_unlock(&h->mu);
    uv_close((uv_handle_t *)&hw->async, hw_closed);
}

/* w's side of the hub, opened on first use on w's thread; under the
 * lock. NULL when out of memory or when w is draining. */
static hub_worker *hub_worker_get(struct latch_hub *h, latch_worker *w)
{
    hub_worker *hw;
    int n = h->app->nworkers_running;

    if (h->nhw != n) {
        /* A new run: the previous run's workers are all finished. */
        hub_worker *p = calloc((size_t)n, sizeof(*p));
        int i;
        if (p == NULL)
            return NULL;
        for (i = 0; i < h->nhw; i++)
            free(h->hw[i].inbox);
        free(h->hw);
        h->hw = p;
        h->nhw = n;
    }
    hw = &h->hw[w->index];
    if (hw->w == w && hw->live)
        return hw;
    if (w->draining)
        return NULL;
    memset(hw, 0, sizeof(*hw));
    hw->hub = h;
    hw->w = w;
    if (uv_async_init(&w->loop, &hw->async, inbox_run) < 0)
        return NULL;
    hw->async.data = hw;
    hw->live = true;
    hw->hook.finish = hw_finish;
    latch__worker_hook(w, &hw->hook);
    return hw;
}

/* ------------------------------------------------------------------ */
/* Joining and leaving                                                  */
/* ------------------------------------------------------------------ */

int latch__hub_join(latch_app *app, latch_worker *w, const latch_hub_up *up,
                    const char *name, const char *last_id, latch_chan **chp,
                    latch_replay *rp, bool *pending)
{
    struct latch_hub *h = latch__hub_get(app);
    size_t n = strlen(name);
    latch_chan *ch;
    bool first;
    int r = 0;

    *chp = NULL;
    *rp = (latch_replay){0};
    *pending = false;
    if (h == NULL)
        return LATCH_ERR_NOMEM;
    pthread_mutex_lock(&h->mu);
    h->up = up;
    ch = chan_get(h, name, n, true);
    if (ch == NULL || hub_worker_get(h, w) == NULL ||
        chan_workers(ch, app->nworkers_running) < 0) {
        r = w->draining ? LATCH_ERR_STATE : LATCH_ERR_NOMEM;
        goto out;
    }
    first = ch->wsubs[w->index]++ == 0;
    if (first && h->be != NULL) {
        pthread_mutex_unlock(&h->mu);
        h->be->ops->watch(h->be, w, ch);
        pthread_mutex_lock(&h->mu);
    }
    rp->from = ch->last;
    /* With a backend, a worker that does not deliver the channel yet
     * cannot say where its history ends: the subscriber waits. */
    *pending = h->be != NULL && !ch->wready[w->index];
    if (last_id != NULL && !*pending &&
        (r = ring_replay(ch, last_id, h->be != NULL, rp)) < 0) {
        pthread_mutex_unlock(&h->mu);
        latch__hub_leave(app, w, ch);
        return r;
    }
    pthread_mutex_unlock(&h->mu);
    *chp = ch;
    return 0;
out:
    pthread_mutex_unlock(&h->mu);
    return r;
}

int latch__hub_replay(latch_app *app, latch_chan *ch, const char *after,
                      latch_replay *rp)
{
    struct latch_hub *h = atomic_load(&app->hub);
    int r;

    pthread_mutex_lock(&h->mu);
    r = ring_replay(ch, after, h->be != NULL, rp);
    pthread_mutex_unlock(&h->mu);
    return r;
}

int latch__hub_since(latch_app *app, latch_chan *ch, latch_msgid after,
                     latch_replay *rp)
{
    struct latch_hub *h = atomic_load(&app->hub);
    int i, r = 0;

    pthread_mutex_lock(&h->mu);
    *rp = (latch_replay){.from = ch->last};
    rp->gap = latch__msgid_cmp(ch->evicted, after) > 0;
    if (ch->ring_len > 0 &&
        (rp->msgs = malloc((size_t)ch->ring_len * sizeof(*rp->msgs))) == NULL)
        r = LATCH_ERR_NOMEM;
    for (i = 0; r == 0 && i < ch->ring_len; i++) {
        latch_msg *m = ch->ring[(ch->ring_head + i) % ch->ring_cap];
        if (latch__msgid_cmp(m->id, after) > 0) {
            latch__msg_ref(m);
            rp->msgs[rp->n++] = m;
        }
    }
    pthread_mutex_unlock(&h->mu);
    return r;
}

void latch__hub_probe(latch_app *app, latch_worker *w, latch_chan *ch,
                      const char *after)
{
    struct latch_hub *h = atomic_load(&app->hub);

    if (h->be != NULL && h->be->ops->probe != NULL)
        h->be->ops->probe(h->be, w, ch, after);
    else
        latch__hub_probed(app, w, ch, after, NULL, 0, false);
}

void latch__hub_probed(latch_app *app, latch_worker *w, latch_chan *ch,
                       const char *after, latch_msg **msgs, size_t n,
                       bool known)
{
    struct latch_hub *h = atomic_load(&app->hub);

    if (h->up != NULL && h->up->probed != NULL)
        h->up->probed(w, ch, after, msgs, n, known);
}

void latch__hub_hole(latch_app *app, latch_chan *ch, latch_msgid first)
{
    struct latch_hub *h = atomic_load(&app->hub);

    pthread_mutex_lock(&h->mu);
    if (latch__msgid_cmp(first, ch->last) > 0) {
        /* Everything up to just before `first` counts as evicted: only
         * the entry right before it (which nobody can name) replays. */
        ring_clear(ch);
        ch->evicted = first;
        if (ch->evicted.lo > 0)
            ch->evicted.lo--;
        else if (ch->evicted.hi > 0) {
            ch->evicted.hi--;
            ch->evicted.lo = UINT64_MAX;
        }
    }
    pthread_mutex_unlock(&h->mu);
}

void latch__hub_leave(latch_app *app, latch_worker *w, latch_chan *ch)
{
    struct latch_hub *h = atomic_load(&app->hub);
    bool last;

    pthread_mutex_lock(&h->mu);
    assert(ch->wsubs[w->index] > 0); /* each subscriber leaves once */
    last = --ch->wsubs[w->index] == 0;
    if (last)
        ch->wready[w->index] = false;
    pthread_mutex_unlock(&h->mu);
    if (last && h->be != NULL)
        h->be->ops->unwatch(h->be, w, ch);
}

/* ------------------------------------------------------------------ */
/* Publishing                                                           */
/* ------------------------------------------------------------------ */

static int count_local(latch_chan *ch)
{
    int i;
    long n = 0;

    for (i = 0; i < ch->nw; i++)
        n += ch->wsubs[i];
    return n > INT32_MAX ? INT32_MAX : (int)n;
}

int latch_publish_at(latch_app *app, const char *channel, const char *event,
                     const char *data, size_t len, latch_site at)
{
    struct latch_hub *h;
    latch_chan *ch;
    latch_msg *m;
    latch_msgid id;
    size_t n;
    int i, r;

    if (app == NULL)
        return LATCH_ERR_INVALID_ARG;
    if (channel == NULL || (n = strlen(channel)) == 0 || n > CHANNEL_NAME_MAX ||
        (data == NULL && len > 0)) {
        latch__violation_app(app, LATCH_ERR_INVALID_ARG, "latch_publish",
                             channel == NULL || data == NULL
                                 ? "NULL channel or data"
                                 : "The channel name is empty or longer "
                                   "than 256 bytes",
                             at);
        return LATCH_ERR_INVALID_ARG;
    }
    if ((event != NULL && latch__evs_check_field(event) < 0) ||
        latch__evs_check_data(data != NULL ? data : "", len) < 0 ||
        !latch__utf8_valid(channel, n)) {
        latch__violation_app(app, LATCH_ERR_INVALID_CHAR, "latch_publish",
                             "Invalid character in an event: CR or LF in "
                             "the event name, or invalid UTF-8",
                             at);
        return LATCH_ERR_INVALID_CHAR;
    }
    if ((h = latch__hub_get(app)) == NULL)
        return LATCH_ERR_NOMEM;
    if (h->be != NULL) {
        /* The backend assigns the id; each process, this one included,
         * delivers what comes back from it. */
        pthread_mutex_lock(&h->mu);
        ch = chan_get(h, channel, n, false);
        r = ch != NULL ? count_local(ch) : 0;
        pthread_mutex_unlock(&h->mu);
        i = h->be->ops->publish(h->be, channel, event, data, len);
        return i < 0 ? i : r;
    }
    pthread_mutex_lock(&h->mu);
    ch = chan_get(h, channel, n, true);
    if (ch == NULL) {
        pthread_mutex_unlock(&h->mu);
        return LATCH_ERR_NOMEM;
    }
    /* Built under the lock: the id and the order are one decision. */
    id.hi = ch->last.hi + 1;
    id.lo = 0;
    m = latch__msg_new(ch, LATCH_MSG_EVENT, event, data, len);
    if (m == NULL || msg_frame(m, id, false) < 0) {
        pthread_mutex_unlock(&h->mu);
        latch__msg_unref(m);
        return LATCH_ERR_NOMEM;
    }
    ch->last = id;
    ring_push(ch, m);
    r = count_local(ch);
    for (i = 0; i < ch->nw && i < h->nhw; i++)
        if (ch->wsubs[i] > 0)
            inbox_post(&h->hw[i], m);
    pthread_mutex_unlock(&h->mu);
    latch__msg_unref(m);
    return r;
}

/* ------------------------------------------------------------------ */
/* For the backend                                                      */
/* ------------------------------------------------------------------ */

latch_chan *latch__hub_chan(latch_app *app, const char *name, size_t len)
{
    struct latch_hub *h = latch__hub_get(app);
    latch_chan *ch;

    if (h == NULL)
        return NULL;
    pthread_mutex_lock(&h->mu);
    ch = chan_get(h, name, len, true);
    pthread_mutex_unlock(&h->mu);
    return ch;
}

int latch__msg_set_id(latch_msg *m, latch_msgid id)
{
    return msg_frame(m, id, true);
}

void latch__hub_arrived(latch_app *app, latch_worker *w, latch_msg *msg)
{
    struct latch_hub *h = atomic_load(&app->hub);
    latch_chan *ch = msg->ch;

    pthread_mutex_lock(&h->mu);
    if (latch__msgid_cmp(msg->id, ch->last) > 0) {
        ch->last = msg->id;
        ring_push(ch, msg);
    }
    pthread_mutex_unlock(&h->mu);
    if (h->up != NULL)
        h->up->deliver(w, msg);
}

void latch__hub_loaded(latch_app *app, latch_worker *w, latch_chan *ch,
                       latch_msg **msgs, size_t n, latch_msgid start)
{
    struct latch_hub *h = atomic_load(&app->hub);
    char text[44];
    size_t i;
    int k;
    bool alone = true;

    pthread_mutex_lock(&h->mu);
    for (k = 0; k < ch->nw; k++)
        if (k != w->index && ch->wready[k])
            alone = false;
    if (alone) {
        /* Nobody here delivered ch: the ring may have missed events. */
        ring_clear(ch);
        ch->last = ch->evicted = (latch_msgid){0, 0};
        if (n > 0 && ch->ring_cap > 0 && n >= (size_t)ch->ring_cap)
            ch->evicted = msgs[0]->id; /* the stream holds older ones */
    }
    for (i = 0; i < n; i++)
        if (latch__msgid_cmp(msgs[i]->id, ch->last) > 0) {
            ch->last = msgs[i]->id;
            ring_push(ch, msgs[i]);
        }
    ch->wready[w->index] = true;
    pthread_mutex_unlock(&h->mu);
    latch__msgid_format(start, true, text);
    if (h->up != NULL && h->up->ready != NULL)
        h->up->ready(w, ch, text);
}

void latch__hub_unready(latch_app *app, latch_worker *w, latch_chan *ch)
{
    struct latch_hub *h = atomic_load(&app->hub);

    pthread_mutex_lock(&h->mu);
    if (w->index < ch->nw)
        ch->wready[w->index] = false;
    pthread_mutex_unlock(&h->mu);
}

void latch__hub_gap(latch_app *app, latch_worker *w, latch_chan *ch)
{
    struct latch_hub *h = atomic_load(&app->hub);
    latch_msg *g = latch__msg_new(ch, LATCH_MSG_GAP, NULL, NULL, 0);

    if (g == NULL || h->up == NULL) {
        latch__msg_unref(g);
        return;
    }
    h->up->deliver(w, g);
    latch__msg_unref(g);
}

/* ------------------------------------------------------------------ */
/* Settings                                                             */
/* ------------------------------------------------------------------ */

int latch_app_set_channel_history(latch_app *app, int events)
{
    if (app == NULL || events < 0 || events > (1 << 20))
        return LATCH_ERR_INVALID_ARG;
    if (app->running || atomic_load(&app->hub) != NULL)
        return LATCH_ERR_STATE;
    app->channel_history = events;
    return 0;
}

int latch_app_set_slow_consumer(latch_app *app, size_t max_queued_bytes,
                                int policy)
{
    if (app == NULL || max_queued_bytes == 0 ||
        (policy != LATCH_SLOW_DISCONNECT && policy != LATCH_SLOW_DROP))
        return LATCH_ERR_INVALID_ARG;
    if (app->running)
        return LATCH_ERR_STATE;
    app->slow_max_bytes = max_queued_bytes;
    app->slow_policy = policy;
    return 0;
}

int latch_app_subscribers(latch_app *app, const char *channel)
{
    struct latch_hub *h;
    latch_chan *ch;
    int n;

    if (app == NULL || channel == NULL)
        return LATCH_ERR_INVALID_ARG;
    if ((h = atomic_load(&app->hub)) == NULL)
        return 0;
    pthread_mutex_lock(&h->mu);
    ch = chan_get(h, channel, strlen(channel), false);
    n = ch != NULL ? count_local(ch) : 0;
    pthread_mutex_unlock(&h->mu);
    return n;
}

void latch__hub_each(latch_app *app,
                     void (*fn)(const char *channel, int subscribers,
                                void *data),
                     void *data)
{
    struct latch_hub *h = atomic_load(&app->hub);
    latch_chan *ch;
    int i;

    if (h == NULL)
        return;
    pthread_mutex_lock(&h->mu);
    for (i = 0; i < HUB_BUCKETS; i++)
        for (ch = h->buckets[i]; ch != NULL; ch = ch->next)
            fn(ch->name, count_local(ch), data);
    pthread_mutex_unlock(&h->mu);
}

void latch__hub_set_backend(latch_app *app, latch_backend *be)
{
    struct latch_hub *h = atomic_load(&app->hub);

    if (h->be != NULL)
        h->be->ops->free(h->be);
    h->be = be;
}
