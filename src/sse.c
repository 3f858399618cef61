/*
 * sse.c - Server-Sent Events on a response, and subscriptions that live
 * exactly as long as their response.
 *
 * An event stream is a response in text/event-stream whose frames come
 * from evstream.c and go out through latch_res_write, so a frame written
 * after the end is refused and reported like any late write. A worker
 * keeps its streams on one list: one timer per worker sends heartbeats to
 * those that were quiet for the heartbeat period, and at shutdown each
 * gets a final event and is ended.
 *
 * A subscription (latch_subscribe) is tied to its response by an
 * attachment: when the response finishes, is destroyed, times out or
 * loses its client, res.c calls the attachment's end op once, and every
 * subscription of the response leaves its channel there; its callback
 * never runs after that. A handler that ends the response itself is seen
 * at the next delivery (the state is checked before each one), with the
 * same effect. The hub (pubsub.c) hands each message to the worker that
 * holds subscribers; here it goes to each of them in order. A subscriber
 * whose connection cannot keep up has its messages queued (shared
 * messages, counted in bytes) up to the app's slow-consumer limit; past
 * it the stream is closed (LATCH_SLOW_DISCONNECT) or the oldest queued
 * messages are dropped for one latch-gap event (LATCH_SLOW_DROP).
 *
 * A waiting subscriber is most of what a server holds at scale, so it is
 * kept small: a response's stream and its first subscription are one
 * allocation, the last id a client got is kept as an id and printed only
 * for a gap, and the queue exists only while the client is behind.
 *
 * What it is not: the hub (ids, history, threads: pubsub.c), nor the
 * frame format (evstream.c).
 */
#include "pubsub.h"

#include "evstream.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HIGH_WATER ((size_t)64 * 1024)

typedef struct sse_worker sse_worker;
typedef struct evs evs;
typedef struct sub sub;

/* Messages held back while a subscriber's connection is full, in a ring
 * of cap: made for its first one, freed once it is empty again, so that
 * a subscriber that keeps up holds none. */
typedef struct subq {
    size_t head, len, cap;
    size_t bytes; /* msg_cost of what it holds */
    latch_msg *m[];
} subq;

/* How a subscriber's last id prints (sub.last_form). */
enum {
    LAST_NONE = 0, /* "": no id yet */
    LAST_PLAIN,    /* last.id as "hi" (in-process) */
    LAST_DASHED,   /* last.id as "hi-lo" (a backend's stream id) */
    LAST_TEXT,     /* last.text: a Last-Event-ID that no id prints as */
};

/* The longest Last-Event-ID kept as the client's last id. */
#define LAST_ID_MAX 48

/* A subscription. */
struct sub {
    sub *next; /* the channel's list on this worker */
    union {
        sub *prev;      /* the channel's list, while on it */
        sub *dead_next; /* then sse_worker's graveyard */
    } u;
    sub *evs_next; /* the response's subscriptions */
    evs *e;
    latch_chan *ch;
    latch_message_cb cb; /* NULL: written as SSE events */
    void *data;
    subq *q;          /* NULL unless messages are held back */
    latch_msgid from; /* deliver only ids above */
    /* The last id the client got, for a gap: kept as an id and printed
     * only when a gap needs it (last_form says how). */
    union {
        latch_msgid id;
        char *text; /* LAST_TEXT: owned */
    } last;
    uint16_t frame; /* the handler call that subscribed */
    unsigned last_form : 2;
    bool dead : 1;        /* left its channel; freed at the next sweep */
    bool gap_pending : 1; /* queued messages were dropped */
    bool pending : 1;     /* waits for the backend (hub_ready, probed) */
    bool ahead : 1;       /* pending on a probe: its Last-Event-ID is
                             newer than this process has seen */
    bool has_start : 1;   /* pending with a Last-Event-ID, in last */
    bool own : 1;         /* lives in its evs's block (evs_sub) */
};

/* Where a response's evs and its first subscription's sub live. */
enum {
    ROOM_NONE = 0, /* the evs was made alone (latch_sse_start) */
    ROOM_FREE,     /* made by latch_subscribe: its sub is not used yet */
    ROOM_USED,     /* its sub is subscribed */
    ROOM_BURIED,   /* its sub left and waits on the graveyard */
    ROOM_SWEPT,    /* its sub is gone */
};

/* A response's event stream and subscriptions: its attachment. */
struct evs {
    latch_attach a;
    latch_res *res;   /* its worker's sse_worker holds the list */
    evs *next, *prev; /* sse_worker's list */
    sub *subs;
    uint64_t last_write;
    bool sse;      /* latch_sse_start done */
    bool ended;    /* the response is over for its subscriptions */
    bool blocked;  /* a write returned 0: wait for drained */
    bool recycled; /* the response let it go while its own sub was on the
                      graveyard: the sweep frees the block */
    uint8_t room;  /* ROOM_* */
};

/* One allocation for a stream and its first subscription (the usual
 * case: one latch_subscribe per response). */
typedef struct evs_sub {
    evs e;
    sub s;
} evs_sub;

/* One worker's streams. */
struct sse_worker {
    latch_whook hook;
    latch_worker *w;
    evs *list;
    sub *graveyard;
    int depth; /* deliveries running: subscriptions are not freed */
    uint64_t heartbeat_ms;
    uv_timer_t timer;
    bool timer_on;
};

static const latch_site here_sse = {__FILE__, 0, "latch_subscribe"};

/* ------------------------------------------------------------------ */
/* Per worker                                                           */
/* ------------------------------------------------------------------ */

static void sw_finish(latch_whook *h, latch_worker *w);
static void sw_drain(latch_whook *h, latch_worker *w);

static void sw_closed(uv_handle_t *h)
{
    free(h->data);
}

static void heartbeat(uv_timer_t *t)
{
    sse_worker *sw = t->data;
    uint64_t now = uv_now(&sw->w->loop);
    evs *e;

    for (e = sw->list; e != NULL; e = e->next) {
        if (!e->sse || e->ended || e->blocked ||
            now - e->last_write < sw->heartbeat_ms)
            continue;
        e->last_write = now;
        if (latch_res_write_at(e->res, ":\n\n", 3, here_sse) == 0)
            e->blocked = true;
        /* Quiet for a heartbeat period: likely to stay so. */
        latch__res_trim_output(e->res);
    }
}

static sse_worker *sse_worker_of(latch_worker *w, bool make)
{
    latch_whook *h;
    sse_worker *sw;
    uint64_t period;

    for (h = w->hooks; h != NULL; h = h->next)
        if (h->finish == sw_finish)
            return LATCH_CONTAINER_OF(h, sse_worker, hook);
    if (!make || w->draining)
        return NULL;
    sw = calloc(1, sizeof(*sw));
    if (sw == NULL)
        return NULL;
    sw->w = w;
    sw->hook.drain = sw_drain;
    sw->hook.finish = sw_finish;
    sw->heartbeat_ms = w->app->sse_heartbeat_ms;
    uv_timer_init(&w->loop, &sw->timer);
    sw->timer.data = sw;
    if (sw->heartbeat_ms > 0) {
        /* Quiet streams get their comment within a quarter period of it
         * coming due; one walk of the list per tick. */
        period = sw->heartbeat_ms / 4 > 0 ? sw->heartbeat_ms / 4 : 1;
        uv_timer_start(&sw->timer, heartbeat, period, period);
        uv_unref((uv_handle_t *)&sw->timer);
    }
    latch__worker_hook(w, &sw->hook);
    return sw;
}

/* LATCH_DEBUG's "subscribed <channel>" and "unsubscribed <channel>". */
LATCH_COLD static void trace_sub(const latch_res *res, const char *what,
                                 const char *channel, latch_site at)
{
    char event[300];

    snprintf(event, sizeof(event), "%s %s", what, channel);
    latch__trace(res, event, at.file != NULL ? "latch_subscribe" : NULL, at);
}

/* Frees the subscriptions that left, once no delivery walks past them.
 * A response's own sub (in its evs's block) is never freed alone: the
 * block goes here only if the response let it go meanwhile. */
static void sweep(sse_worker *sw)
{
    sub *s;

    while ((s = sw->graveyard) != NULL) {
        sw->graveyard = s->u.dead_next;
        if (!s->own) {
            free(s);
            continue;
        }
        s->e->room = ROOM_SWEPT;
        if (s->e->recycled)
            free(s->e);
    }
}

/* ------------------------------------------------------------------ */
/* Subscriptions end                                                    */
/* ------------------------------------------------------------------ */

/* What a queued message costs its subscriber: the bytes it will write
 * (the message itself is shared by every subscriber and the history). */
static size_t msg_cost(const latch_msg *m)
{
    return m->sse_len + sizeof(m);
}

/* Takes the oldest message that s holds back (s->q not NULL), with its
 * reference; the queue goes once it is empty. */
static latch_msg *q_pop(sub *s)
{
    subq *q = s->q;
    latch_msg *m = q->m[q->head];

    q->head = (q->head + 1) % q->cap;
    q->bytes -= msg_cost(m);
    if (--q->len == 0) {
        free(q);
        s->q = NULL;
    }
    return m;
}

static void q_clear(sub *s)
{
    while (s->q != NULL)
        latch__msg_unref(q_pop(s));
}

/* ------------------------------------------------------------------ */
/* The last id a client got                                             */
/* ------------------------------------------------------------------ */

static void last_drop(sub *s)
{
    if (s->last_form == LAST_TEXT)
        free(s->last.text);
    s->last_form = LAST_NONE;
}

static inline void last_set(sub *s, latch_msgid id, bool dashed)
{
    if (s->last_form == LAST_TEXT)
        free(s->last.text);
    s->last.id = id;
    s->last_form = dashed ? LAST_DASHED : LAST_PLAIN;
}

/* Whether `text` is how an id prints ("hi", or "hi-lo" when it has a
 * dash); its id in *id if so. */
static bool last_is_id(const char *text, latch_msgid *id, bool *dashed)
{
    char canon[44];

    if (latch__msgid_parse(text, id) < 0)
        return false;
    *dashed = strchr(text, '-') != NULL;
    latch__msgid_format(*id, *dashed, canon);
    return strcmp(canon, text) == 0;
}

/* Sets the last id to exactly `text` (shorter than LAST_ID_MAX): an id
 * when it prints so, else a copy of the text: `copy` when not NULL (s
 * takes it: latch_subscribe makes it while failing is still clean), else
 * one made here (out of memory: no last id). */
static void last_set_text(sub *s, const char *text, char *copy)
{
    latch_msgid id;
    bool dashed;

    if (copy == NULL && last_is_id(text, &id, &dashed)) {
        last_set(s, id, dashed);
        return;
    }
    if (copy == NULL)
        copy = strdup(text);
    last_drop(s);
    if (copy != NULL) {
        s->last.text = copy;
        s->last_form = LAST_TEXT;
    }
}

/* The last id as the client knows it, written into out; returns out. */
static const char *last_text(const sub *s, char out[LAST_ID_MAX])
{
    switch (s->last_form) {
    case LAST_PLAIN:
    case LAST_DASHED:
        latch__msgid_format(s->last.id, s->last_form == LAST_DASHED, out);
        break;
    case LAST_TEXT: snprintf(out, LAST_ID_MAX, "%s", s->last.text); break;
    default: out[0] = '\0';
    }
    return out;
}

/* Leaves the channel, exactly once; the memory goes at the next sweep. */
static void sub_leave(sse_worker *sw, sub *s)
{
    latch_worker *w = sw->w;
    void **head;

    if (s->dead)
        return;
    s->dead = true;
    q_clear(s);
    last_drop(s); /* nobody reads a dead subscriber's last id */
    head = latch__chan_local(s->ch, w);
    if (s->u.prev != NULL)
        s->u.prev->next = s->next;
    else
        *head = s->next;
    if (s->next != NULL)
        s->next->u.prev = s->u.prev;
    /* Unlinked, but its own next stays valid for a delivery walking
     * past it: the sub is freed only when no walk runs. */
    latch__hub_leave(w->app, w, s->ch);
    if (LATCH_TRACING())
        trace_sub(s->e->res, "unsubscribed", s->ch->name,
                  (latch_site){NULL, 0, NULL});
    s->u.dead_next = sw->graveyard; /* u.prev is read no more */
    sw->graveyard = s;
    if (s->own)
        s->e->room = ROOM_BURIED;
}

/* The response is over for its stream and subscriptions (any reason).
 * Each live subscription held a reference (it owns the response, as a
 * timer does); they go last, so e is not touched after the response may
 * have been recycled. */
static void evs_end(evs *e)
{
    latch_res *res = e->res;
    sse_worker *sw;
    int owned = 0;
    sub *s;

    if (e->ended)
        return;
    e->ended = true;
    sw = sse_worker_of(res->w, false); /* made before e: still there */
    for (s = e->subs; s != NULL; s = s->evs_next)
        if (!s->dead) {
            sub_leave(sw, s);
            owned++;
        }
    if (e->prev != NULL)
        e->prev->next = e->next;
    else if (sw->list == e)
        sw->list = e->next;
    if (e->next != NULL)
        e->next->prev = e->prev;
    e->next = e->prev = NULL;
    if (sw->depth == 0)
        sweep(sw);
    while (owned-- > 0)
        latch__res_unref(res);
}

static void att_end(latch_attach *a, latch_res *res, int reason)
{
    (void)res;
    (void)reason;
    evs_end(LATCH_CONTAINER_OF(a, evs, a));
}

static void att_recycle(latch_attach *a, latch_res *res)
{
    evs *e = LATCH_CONTAINER_OF(a, evs, a);

    (void)res;
    evs_end(e); /* a response recycled without its end: never dispatched */
    /* Its own sub may still be on the graveyard (a delivery is walking):
     * the sweep frees the block then. */
    if (e->room == ROOM_BURIED)
        e->recycled = true;
    else
        free(e);
}

static void att_drained(latch_attach *a, latch_res *res);

static const latch_attach_ops evs_ops = {
    .end = att_end, .recycle = att_recycle, .drain = att_drained};

/* The stream state of res, made on first use (`room`: with its first
 * subscription's memory, for latch_subscribe). NULL when out of memory or
 * on a draining worker. */
static evs *evs_get(latch_res *res, bool room)
{
    latch_attach *a = latch__res_attached(res, &evs_ops);
    sse_worker *sw;
    evs *e;

    if (a != NULL)
        return LATCH_CONTAINER_OF(a, evs, a);
    if ((sw = sse_worker_of(res->w, true)) == NULL)
        return NULL;
    e = calloc(1, room ? sizeof(evs_sub) : sizeof(evs));
    if (e == NULL)
        return NULL;
    e->room = room ? ROOM_FREE : ROOM_NONE;
    e->a.ops = &evs_ops;
    e->res = res;
    e->last_write = uv_now(&res->w->loop);
    e->next = sw->list;
    if (sw->list != NULL)
        sw->list->prev = e;
    sw->list = e;
    latch__res_attach(res, &e->a); /* ends it at once if res is over */
    /* A stream or a subscription waits for long: once its head is out,
     * its connection keeps no idle output buffer for it. */
    latch__res_trim_output(res);
    return e;
}

/* ------------------------------------------------------------------ */
/* Delivery                                                             */
/* ------------------------------------------------------------------ */

/* The latch-gap data for a client whose last id is `last`. */
static int gap_json(latch_buf *b, const char *last)
{
    latch_json j;

    latch__json_init(&j, b, 4096, 0);
    latch__json_object_begin(&j);
    latch__json_key(&j, "last_id");
    latch__json_string(&j, last);
    latch__json_object_end(&j);
    if (latch__json_finish(&j) == 0)
        return 0;
    b->len = 0; /* not UTF-8: the id cannot be echoed */
    return latch__buf_append(b, "{\"last_id\":null}", 16, 4096);
}

static bool res_over(const latch_res *res)
{
    return res->state >= LATCH_RS_ENDED;
}

/*
 * Sends one message (or a gap) to a subscriber now. The response is held
 * across the callback; afterwards, a response that the callback ended
 * ends the subscription, and a full connection holds the next messages.
 */
static void sub_send(sub *s, latch_msg *msg, const char *gap_last)
{
    evs *e = s->e;
    latch_res *res = e->res;
    latch_buf gb = {0};
    latch_message view;
    int r;

    if (e->ended || s->dead)
        return;
    if (res_over(res)) {
        evs_end(e);
        return;
    }
    if (gap_last != NULL && gap_json(&gb, gap_last) < 0)
        return;
    latch__res_ref(res);
    e->last_write = uv_now(&res->w->loop);
    if (gap_last == NULL && msg->kind == LATCH_MSG_EVENT)
        last_set(s, msg->id, msg->dashed);
    if (s->cb != NULL) {
        uint16_t prev = latch__frame_enter(res, s->frame);

        if (gap_last != NULL) {
            view = (latch_message){s->ch->name, "latch-gap", NULL, gb.data,
                                   gb.len};
        } else {
            view = msg->m;
        }
        s->cb(latch__res_hf(res, s->frame), &view, s->data);
        latch__frame_leave(res, prev);
        if (!e->ended && latch__res_backlog(res) >= HIGH_WATER)
            e->blocked = true;
    } else if (gap_last != NULL) {
        char *f;
        size_t n = latch__evs_event_size("latch-gap", NULL, gb.data, gb.len);

        if ((f = malloc(n)) != NULL) {
            latch__evs_event(f, "latch-gap", NULL, gb.data, gb.len);
            if (latch_res_write_at(res, f, n, here_sse) == 0)
                e->blocked = true;
            free(f);
        }
    } else {
        r = latch_res_write_at(res, msg->sse, msg->sse_len, here_sse);
        if (r == 0)
            e->blocked = true;
    }
    latch__buf_dispose(&gb);
    if (!e->ended && res_over(res))
        evs_end(e);
    latch__res_unref(res);
}

/* Sends a gap to a subscriber now, naming the last id it got. */
LATCH_COLD static void sub_send_gap(sub *s)
{
    char last[LAST_ID_MAX];

    sub_send(s, NULL, last_text(s, last));
}

/* Holds msg back for a subscriber whose connection is full, under the
 * slow-consumer limit. */
static void sub_queue(sub *s, latch_msg *msg)
{
    latch_app *app = s->e->res->w->app;
    size_t max = app->slow_max_bytes;
    subq *q = s->q;

    if (q == NULL || q->len == q->cap) {
        size_t cap = q != NULL ? q->cap * 2 : 8, i;
        subq *nq = malloc(sizeof(*nq) + cap * sizeof(nq->m[0]));
        if (nq == NULL) {
            s->gap_pending = true; /* lost: the client hears of it */
            return;
        }
        *nq = (subq){.cap = cap};
        if (q != NULL) {
            for (i = 0; i < q->len; i++)
                nq->m[i] = q->m[(q->head + i) % q->cap];
            nq->len = q->len;
            nq->bytes = q->bytes;
            free(q);
        }
        s->q = q = nq;
    }
    latch__msg_ref(msg);
    q->m[(q->head + q->len) % q->cap] = msg;
    q->len++;
    q->bytes += msg_cost(msg);
    if (q->bytes <= max)
        return;
    if (app->slow_policy == LATCH_SLOW_DISCONNECT) {
        /* Close the stream; the client reconnects with Last-Event-ID. */
        latch_res_destroy_at(s->e->res,
                             (latch_site){__FILE__, __LINE__, "slow consumer"});
        return;
    }
    while (s->q != NULL && s->q->bytes > max) {
        latch__msg_unref(q_pop(s));
        s->gap_pending = true;
    }
}

static void sub_offer(sub *s, latch_msg *msg)
{
    if (s->dead || s->e->ended || s->pending)
        return; /* a pending one is served from the ring at hub_ready */
    if (msg->kind == LATCH_MSG_EVENT) {
        if (latch__msgid_cmp(msg->id, s->from) <= 0)
            return; /* replayed already, or before the subscription */
        s->from = msg->id;
    }
    if (msg->kind == LATCH_MSG_GAP) {
        /* The backend may have lost messages: say so in order. */
        if (s->q != NULL || s->e->blocked)
            s->gap_pending = true;
        else
            sub_send_gap(s);
        return;
    }
    if (s->q != NULL || s->gap_pending || s->e->blocked)
        sub_queue(s, msg);
    else
        sub_send(s, msg, NULL);
}

/* Flushes what a subscriber holds while its connection takes it. */
static void sub_flush(sub *s)
{
    while (!s->dead && !s->e->ended && !s->e->blocked) {
        if (s->gap_pending) {
            s->gap_pending = false;
            sub_send_gap(s);
        } else if (s->q != NULL) {
            latch_msg *m = q_pop(s);
            sub_send(s, m, NULL);
            latch__msg_unref(m);
        } else {
            break;
        }
    }
}

static void att_drained(latch_attach *a, latch_res *res)
{
    evs *e = LATCH_CONTAINER_OF(a, evs, a);
    sse_worker *sw;
    sub *s;

    if (e->ended || !e->blocked)
        return;
    sw = sse_worker_of(res->w, false);
    e->blocked = false;
    sw->depth++;
    for (s = e->subs; s != NULL && !e->ended && !e->blocked; s = s->evs_next)
        sub_flush(s);
    if (--sw->depth == 0)
        sweep(sw);
}

/* The hub's call, on the worker: one message for the worker's
 * subscribers of its channel, in publish order. */
static void deliver(latch_worker *w, latch_msg *msg)
{
    sse_worker *sw = sse_worker_of(w, false);
    sub *s, *next;

    if (sw == NULL)
        return;
    sw->depth++;
    for (s = *latch__chan_local(msg->ch, w); s != NULL; s = next) {
        next = s->next;
        sub_offer(s, msg);
    }
    if (--sw->depth == 0)
        sweep(sw);
}

/* Sends m to s now, or queues it behind what s holds back. */
static void sub_push(sub *s, latch_msg *m)
{
    if (s->dead || s->e->ended)
        return;
    if (s->e->blocked || s->q != NULL)
        sub_queue(s, m);
    else
        sub_send(s, m, NULL);
}

/* What a subscriber missed (a gap for `gap_last`, or replay[0..n)), now
 * and in order; each replayed message's reference is dropped. Live
 * messages follow, after s->from. */
static void sub_catch_up(sub *s, const char *gap_last, latch_msg **replay,
                         size_t n)
{
    sse_worker *sw = sse_worker_of(s->e->res->w, false);
    size_t i;

    /* s and its evs may be over after a send: only sw is used after. */
    sw->depth++;
    if (gap_last != NULL)
        sub_send(s, NULL, gap_last);
    for (i = 0; i < n; i++) {
        sub_push(s, replay[i]);
        latch__msg_unref(replay[i]);
    }
    free(replay);
    if (--sw->depth == 0)
        sweep(sw);
}

/* A subscriber whose Last-Event-ID is newer than anything this process
 * has seen: it waits (pending) for the backend to say what the stream
 * holds after it (probed). */
static void sub_probe(sub *s, latch_worker *w)
{
    char last[LAST_ID_MAX];

    s->pending = true;
    s->has_start = true;
    s->ahead = true;
    latch__hub_probe(w->app, w, s->ch, last_text(s, last));
}

/* The hub's call when the backend delivers ch on w: each subscriber that
 * joined pending gets what it is owed after its Last-Event-ID, or after
 * `start` (where the channel stood when it joined). */
static void ready(latch_worker *w, latch_chan *ch, const char *start)
{
    sse_worker *sw = sse_worker_of(w, false);
    char last[LAST_ID_MAX];
    latch_replay rp;
    sub *s, *next;

    if (sw == NULL)
        return;
    sw->depth++;
    for (s = *latch__chan_local(ch, w); s != NULL; s = next) {
        next = s->next;
        if (!s->pending || s->dead || s->e->ended)
            continue;
        s->pending = false;
        if (s->has_start)
            last_text(s, last);
        else
            snprintf(last, sizeof(last), "%s", start);
        if (latch__hub_replay(w->app, ch, last, &rp) < 0) {
            /* Out of memory for the list: the client hears of a gap. */
            rp = (latch_replay){.gap = true};
        }
        if (rp.ahead) {
            sub_probe(s, w);
            continue;
        }
        s->from = rp.from;
        if (!s->has_start && !rp.gap)
            last_set_text(s, start, NULL);
        if (rp.gap) {
            /* Live from here; the client's last id is all it can learn. */
            if (s->from.hi != 0 || s->from.lo != 0)
                last_set(s, s->from, true);
            sub_catch_up(s, last, rp.msgs, rp.n);
        } else {
            sub_catch_up(s, NULL, rp.msgs, rp.n);
        }
    }
    if (--sw->depth == 0)
        sweep(sw);
}

/*
 * The backend's answer for the subscribers waiting on `after`: a gap
 * unless the stream holds it (known); then what the stream holds after
 * it, msgs[0..n), and what the ring took meanwhile after those (the
 * live messages skipped while it waited). Live messages follow after
 * the newest of all that.
 */
static void probed(latch_worker *w, latch_chan *ch, const char *after,
                   latch_msg **msgs, size_t n, bool known)
{
    sse_worker *sw = sse_worker_of(w, false);
    char last[LAST_ID_MAX];
    latch_msgid upto;
    latch_replay rp;
    sub *s, *next;
    size_t i;

    if (sw == NULL)
        return;
    sw->depth++;
    for (s = *latch__chan_local(ch, w); s != NULL; s = next) {
        next = s->next;
        if (!s->pending || !s->ahead || s->dead || s->e->ended ||
            strcmp(last_text(s, last), after) != 0)
            continue;
        s->pending = s->ahead = false;
        if (latch__msgid_parse(after, &upto) < 0 || (n == 0 && !known)) {
            /* No stream entry at or after it (an id of no stream of this
             * channel, or the stream could not be read): a gap, then live
             * from the channel's newest. */
            latch_msgid top = {UINT64_MAX, UINT64_MAX};
            if (latch__hub_since(w->app, ch, top, &rp) < 0)
                rp.from = s->from;
            free(rp.msgs); /* nothing is newer than top */
            s->from = rp.from;
            sub_catch_up(s, after, NULL, 0);
            if (s->from.hi != 0 || s->from.lo != 0)
                last_set(s, s->from, true);
            continue;
        }
        if (!known)
            sub_catch_up(s, after, NULL, 0);
        for (i = 0; i < n; i++) {
            sub_push(s, msgs[i]);
            upto = msgs[i]->id;
        }
        if (latch__hub_since(w->app, ch, upto, &rp) < 0)
            rp = (latch_replay){.gap = true};
        sub_catch_up(s, rp.gap ? last_text(s, last) : NULL, rp.msgs, rp.n);
        s->from = latch__msgid_cmp(rp.from, upto) > 0 ? rp.from : upto;
    }
    if (--sw->depth == 0)
        sweep(sw);
}

static const latch_hub_up hub_up = {deliver, ready, probed};

/* ------------------------------------------------------------------ */
/* Shutdown                                                             */
/* ------------------------------------------------------------------ */

/* The worker drains: each stream gets a final event and is ended. */
static void sw_drain(latch_whook *h, latch_worker *w)
{
    sse_worker *sw = LATCH_CONTAINER_OF(h, sse_worker, hook);
    static const char final_frame[] = "event: latch-shutdown\ndata: \n\n";
    latch_res *res;
    sub *s;
    evs *e;

    (void)w;
    while ((e = sw->list) != NULL) {
        res = e->res;
        latch__res_ref(res);
        sw->depth++;
        if (!res_over(res)) {
            if (e->sse)
                latch_res_write_at(res, final_frame, sizeof(final_frame) - 1,
                                   here_sse);
            for (s = e->subs; s != NULL && !e->ended; s = s->evs_next) {
                latch_message m = {s->ch->name, "latch-shutdown", NULL, "", 0};
                uint16_t prev;
                if (s->dead || s->cb == NULL || res_over(res))
                    continue;
                prev = latch__frame_enter(res, s->frame);
                s->cb(latch__res_hf(res, s->frame), &m, s->data);
                latch__frame_leave(res, prev);
            }
        }
        evs_end(e);
        if (!res_over(res) && res->state != LATCH_RS_DESTROYED)
            latch_res_end_at(res, NULL, 0,
                             (latch_site){NULL, 0, "server shutdown"});
        sw->depth--;
        latch__res_unref(res);
    }
    sweep(sw);
}

static void sw_finish(latch_whook *h, latch_worker *w)
{
    sse_worker *sw = LATCH_CONTAINER_OF(h, sse_worker, hook);

    (void)w;
    while (sw->list != NULL)
        evs_end(sw->list);
    sweep(sw);
    uv_close((uv_handle_t *)&sw->timer, sw_closed);
}

/* ------------------------------------------------------------------ */
/* The public calls                                                     */
/* ------------------------------------------------------------------ */

/* The usual entry checks: a live handle, on its loop. */
static latch_res *enter(latch_res *h, const char *call, latch_site *at,
                        int *err)
{
    latch_res *res;

    *err = 0;
    if (h == NULL) {
        *err = LATCH_ERR_INVALID_ARG;
        return NULL;
    }
    if ((res = latch__res_in(h, call, at)) == NULL) {
        *err = LATCH_ERR_STREAM_DESTROYED;
        return NULL;
    }
    if (!pthread_equal(pthread_self(), res->w->thread)) {
        latch__violation(res, LATCH_ERR_WRONG_THREAD, call, NULL, *at);
        *err = LATCH_ERR_WRONG_THREAD;
        return NULL;
    }
    return res;
}

static int refuse(latch_res *res, int code, const char *call, const char *msg,
                  latch_site at)
{
    latch__violation(res, code, call, msg, at);
    return code;
}

/* latch_sse_start, or the start latch_subscribe makes for a stream of
 * events (no callback): `call` is the one the user made, named in reports
 * and as the seal of the headers. `room` as evs_get's. */
static int sse_start(latch_res *h, const char *call, latch_site at, bool room)
{
    latch_res *res;
    evs *e;
    int r;

    if ((res = enter(h, call, &at, &r)) == NULL)
        return r;
    /* It sends the head, as latch_res_flush_headers: refused (naming
     * this call) after the headers, and beside a producer of latch's own
     * that holds the response (a file being opened), before any of its
     * headers is touched. A user's pipe may stream events. */
    if ((r = latch__res_head_check(res, call, at)) < 0)
        return r;
    if ((r = latch_res_status_at(res, 200, at)) < 0 ||
        (r = latch_res_set_header_at(res, "Content-Type", "text/event-stream",
                                     at)) < 0 ||
        (r = latch_res_set_header_at(res, "Cache-Control", "no-cache", at)) <
            0 ||
        (r = latch_res_set_header_at(res, "X-Accel-Buffering", "no", at)) < 0)
        return r;
    /* No compression for a stream of small, latency-bound frames. */
    latch_res_remove_header_at(res, "Content-Encoding", at);
    latch_res_remove_header_at(res, "Content-Length", at);
    if (res->w->draining)
        return refuse(res, LATCH_ERR_STATE, call, "The server is shutting down",
                      at);
    if ((e = evs_get(res, room)) == NULL)
        return LATCH_ERR_NOMEM;
    e->sse = true;
    r = latch_res_flush_headers_at(res, at);
    /* Later reports name this call, not the flush it made. */
    if (r >= 0 && res->headers_call != NULL &&
        strcmp(res->headers_call, "latch_res_flush_headers") == 0)
        res->headers_call = call;
    return r;
}

int latch_sse_start_at(latch_res *h, latch_site at)
{
    return sse_start(h, "latch_sse_start", at, false);
}

/* Writes one frame of an SSE response: refused (reported) unless
 * latch_sse_start made it one. */
static int sse_write(latch_res *res, const char *call, const char *frame,
                     size_t n, latch_site at)
{
    latch_attach *a = latch__res_attached(res, &evs_ops);
    evs *e = a != NULL ? LATCH_CONTAINER_OF(a, evs, a) : NULL;
    int r;

    if (res->state == LATCH_RS_DESTROYED)
        return refuse(res, LATCH_ERR_STREAM_DESTROYED, call,
                      "Cannot send an event after the stream was destroyed",
                      at);
    if (res->state >= LATCH_RS_ENDED)
        return refuse(res, LATCH_ERR_STREAM_WRITE_AFTER_END, call, NULL, at);
    if (e == NULL || !e->sse)
        return refuse(res, LATCH_ERR_STATE, call,
                      "latch_sse_start was not called on this response", at);
    r = latch_res_write_at(res, frame, n, at);
    if (r >= 0)
        e->last_write = uv_now(&res->w->loop);
    return r;
}

int latch_sse_send_at(latch_res *h, const char *event, const char *id,
                      const char *data, latch_site at)
{
    latch_res *res;
    size_t dlen = data != NULL ? strlen(data) : 0, n;
    char stack[1024], *f;
    int r;

    if ((res = enter(h, "latch_sse_send", &at, &r)) == NULL)
        return r;
    if ((event != NULL && latch__evs_check_field(event) < 0) ||
        (id != NULL && latch__evs_check_field(id) < 0) ||
        (data != NULL && latch__evs_check_data(data, dlen) < 0))
        return refuse(res, LATCH_ERR_INVALID_CHAR, "latch_sse_send",
                      "Invalid character in an event: CR or LF in the event "
                      "name or id, or invalid UTF-8",
                      at);
    n = latch__evs_event_size(event, id, data, dlen);
    f = n <= sizeof(stack) ? stack : malloc(n);
    if (f == NULL)
        return LATCH_ERR_NOMEM;
    latch__evs_event(f, event, id, data, dlen);
    r = sse_write(res, "latch_sse_send", f, n, at);
    if (f != stack)
        free(f);
    return r;
}

int latch_sse_comment_at(latch_res *h, const char *text, latch_site at)
{
    latch_res *res;
    char stack[512], *f;
    size_t n;
    int r;

    if ((res = enter(h, "latch_sse_comment", &at, &r)) == NULL)
        return r;
    if (text == NULL)
        text = "";
    if (latch__evs_check_data(text, strlen(text)) < 0)
        return refuse(res, LATCH_ERR_INVALID_CHAR, "latch_sse_comment",
                      "Invalid UTF-8 in a comment", at);
    n = latch__evs_comment_size(text);
    f = n <= sizeof(stack) ? stack : malloc(n);
    if (f == NULL)
        return LATCH_ERR_NOMEM;
    latch__evs_comment(f, text);
    r = sse_write(res, "latch_sse_comment", f, n, at);
    if (f != stack)
        free(f);
    return r;
}

int latch_sse_retry_at(latch_res *h, uint64_t ms, latch_site at)
{
    latch_res *res;
    char f[32];
    int r;

    if ((res = enter(h, "latch_sse_retry", &at, &r)) == NULL)
        return r;
    if (ms > 86400000ull)
        return refuse(res, LATCH_ERR_INVALID_ARG, "latch_sse_retry",
                      "The retry delay is over 24 hours", at);
    return sse_write(res, "latch_sse_retry", f, latch__evs_retry(f, ms), at);
}

int latch_app_set_sse_heartbeat(latch_app *app, uint64_t ms)
{
    if (app == NULL || ms > 86400000ull)
        return LATCH_ERR_INVALID_ARG;
    if (app->running)
        return LATCH_ERR_STATE;
    app->sse_heartbeat_ms = ms;
    return 0;
}

int latch_subscribe_at(latch_res *h, const char *channel, latch_message_cb cb,
                       void *data, latch_site at)
{
    const char *last;
    char *copy = NULL;
    latch_replay rp;
    latch_msgid id;
    size_t clen;
    latch_res *res;
    latch_chan *ch;
    bool pending, dashed;
    sub *s;
    evs *e;
    void **head;
    int r;

    if ((res = enter(h, "latch_subscribe", &at, &r)) == NULL)
        return r;
    if (channel == NULL || (clen = strlen(channel)) == 0 || clen > 256)
        return refuse(res, LATCH_ERR_INVALID_ARG, "latch_subscribe",
                      "The channel name is NULL, empty or longer than 256 "
                      "bytes",
                      at);
    if (res->state >= LATCH_RS_ENDED || latch__res_attach_done(res))
        return refuse(
            res,
            res->state == LATCH_RS_DESTROYED ? LATCH_ERR_STREAM_DESTROYED
                                             : LATCH_ERR_STREAM_WRITE_AFTER_END,
            "latch_subscribe", "Cannot subscribe a response that is over", at);
    if (cb == NULL) {
        latch_attach *a = latch__res_attached(res, &evs_ops);
        if ((a == NULL || !LATCH_CONTAINER_OF(a, evs, a)->sse) &&
            (r = sse_start(h, "latch_subscribe", at, true)) < 0)
            return r;
    }
    if (res->w->draining)
        return refuse(res, LATCH_ERR_STATE, "latch_subscribe",
                      "The server is shutting down", at);
    if ((e = evs_get(res, true)) == NULL)
        return LATCH_ERR_NOMEM;
    last = latch_req_header(&res->req, "Last-Event-ID");
    /* A Last-Event-ID that no id prints as may become the last id as it
     * is: its copy is made while failing is clean. */
    if (last != NULL && strlen(last) < LAST_ID_MAX &&
        !last_is_id(last, &id, &dashed) && (copy = strdup(last)) == NULL)
        return LATCH_ERR_NOMEM;
    /* The response's first subscription lives in its evs's block. */
    if (e->room == ROOM_FREE)
        s = &LATCH_CONTAINER_OF(e, evs_sub, e)->s; /* zeroed, never used */
    else if ((s = calloc(1, sizeof(*s))) == NULL) {
        free(copy);
        return LATCH_ERR_NOMEM;
    }
    r = latch__hub_join(res->w->app, res->w, &hub_up, channel, last, &ch, &rp,
                        &pending);
    if (r < 0) {
        if (e->room != ROOM_FREE)
            free(s);
        free(copy);
        return r;
    }
    if (e->room == ROOM_FREE) {
        e->room = ROOM_USED;
        s->own = true;
    }
    if (LATCH_TRACING())
        trace_sub(res, "subscribed", channel, at);
    latch__res_ref(res); /* the subscription owns the response */
    s->e = e;
    s->ch = ch;
    s->cb = cb;
    s->data = data;
    s->frame = latch__frame_pick(latch__frame_of(h), res);
    s->pending = pending;
    s->from = rp.from;
    if (last != NULL && !rp.gap && strlen(last) < LAST_ID_MAX) {
        last_set_text(s, last, copy);
        copy = NULL;
        s->has_start = pending;
    } else if ((pending || rp.ahead) && last != NULL) {
        rp.gap = true; /* an id no channel could hold */
        rp.ahead = s->pending = false;
    } else if (s->from.hi != 0 || s->from.lo != 0) {
        last_set(s, s->from, ch->dashed);
    }
    free(copy);
    head = latch__chan_local(ch, res->w);
    s->next = *head;
    if (*head != NULL)
        ((sub *)*head)->u.prev = s;
    *head = s;
    s->evs_next = e->subs;
    e->subs = s;
    if (rp.ahead) {
        /* Another process published it: the stream says what follows. */
        sub_probe(s, res->w);
        return 0;
    }
    /* What the client missed: the gap, or the replay, now and in order;
     * then live messages after s->from (a pending one: at hub_ready). */
    sub_catch_up(s, rp.gap ? last : NULL, rp.msgs, rp.n);
    return 0;
}
