/*
 * pubsub_redis.c - the hub's Redis backend (latch_app_set_pubsub with
 * "redis://host:port"): every latch process that shares the Redis server
 * delivers every event, with the same id everywhere.
 *
 * Ids. A publish runs one Lua script that XADDs the event to a stream
 * (latch:s:<channel>, trimmed to about the channel history) and PUBLISHes
 * "<stream id>\n<0|1><event>\n<data>" on latch:c:<channel>. A script runs
 * atomically, so no other publish can come between the two steps: the
 * order of the messages on the Pub/Sub channel is the order of the stream
 * ids, and the stream id (time-ms "-" sequence, increasing) is the SSE id
 * that every process sends, which is what makes a Last-Event-ID given to
 * one process meaningful to another. MULTI/EXEC would make the two steps
 * atomic too, but the stream id is only known inside the transaction, so
 * the PUBLISH could not carry it; a second round trip would let another
 * publish in between.
 *
 * Connections. Each worker that uses the backend opens a pair on its own
 * loop: one for commands (the script), one in subscriber mode that
 * SUBSCRIBEs to the channels this worker has subscribers for (the hub
 * says when: watch/unwatch), so the number of Redis connections grows
 * with workers, never with clients. hiredis's async API drives them
 * through latch's own adapter on libuv below (not hiredis's bundled
 * adapters/libuv.h, which in Debian's 0.14 drops poll errors, so a dead
 * socket can hang a connection, and has no timeouts): poll errors are
 * handed to hiredis as readiness so it sees the error, and a connect that
 * does not complete in CONNECT_MS is abandoned.
 *
 * Loss. When a connection drops, the worker's subscribers on every
 * channel it watched get one latch-gap (events may have been published
 * meanwhile), and the pair reconnects with backoff (RETRY_MIN_MS doubling
 * to RETRY_MAX_MS), subscribing again to what is still watched.
 *
 * What it is not: a general Redis client, and not a queue: a publish made
 * while the command connection is down fails (LATCH_ERR_STATE).
 */
#include "pubsub.h"

#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CONNECT_MS 2000
#define RETRY_MIN_MS 50
#define RETRY_MAX_MS 2000
#define PREFIX_C "latch:c:"
#define PREFIX_S "latch:s:"

/* The stream is trimmed exactly to the history (not "~", which keeps up to
 * a macro node more): what the stream holds is what a ring loaded from it
 * holds, so a Last-Event-ID is answered the same by every process. */
static const char script[] =
    "local id = redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[4], '*', "
    "'e', ARGV[1], 'd', ARGV[2], 'f', ARGV[3]) "
    "redis.call('PUBLISH', KEYS[2], id .. '\\n' .. ARGV[3] .. ARGV[1] .. "
    "'\\n' .. ARGV[2]) "
    "return id";

typedef struct rworker rworker;

/* A worker's command connection, as publishers of other threads see it:
 * not opened yet (its first use opens it), usable (connected, or in its
 * first connect: hiredis holds commands until then), or down. */
enum { CMD_NEW, CMD_OK, CMD_DOWN };

/* Where a worker's subscription to a channel stands in Redis. */
enum { SUB_NONE, SUB_SENT, SUB_ON, SUB_LEAVING };

/*
 * A channel on one worker (the channel's backend slot; kept until the
 * worker finishes, so that confirmations of an old SUBSCRIBE/UNSUBSCRIBE
 * always find it). While not ready, what arrives is buffered: the hub
 * gets it after the ring was loaded.
 */
typedef struct rwatch {
    struct rwatch *next; /* the worker's list */
    rworker *rw;
    latch_chan *ch;
    uint32_t gen; /* a watch period: replies of older ones are stale */
    bool watched; /* the hub wants the channel on this worker */
    int sub;      /* SUB_* */
    bool t0_sent, t0_known, h_sent, ready;
    latch_msgid t0; /* the stream's newest id when the watch began */
    latch_msg **buf;
    size_t nbuf, capbuf;
} rwatch;

/* A read in flight on the command connection, for one watch period. */
typedef struct rread {
    rworker *rw;
    latch_chan *ch;
    uint32_t gen;
} rread;

/* The poll handle of one hiredis context; it outlives the context until
 * its close callback ran. */
typedef struct rlink {
    uv_poll_t poll;
    redisAsyncContext *ac; /* NULL once hiredis freed it */
    int events;
} rlink;

/* One connection of a worker's pair. */
typedef struct rconn {
    rworker *rw;
    redisAsyncContext *ac; /* NULL while down */
    bool up;               /* connected */
    bool sub;              /* the subscriber connection */
    uv_timer_t timer;      /* connect timeout */
} rconn;

struct rworker {
    struct rbackend *be;
    latch_worker *w;
    rconn cmd, sub;
    uv_timer_t retry;
    uint64_t backoff;
    latch_whook hook;     /* the worker's finish closes the pair */
    bool open;            /* handles initialized */
    bool closing;         /* the worker finishes: no reconnect */
    atomic_int cmd_state; /* CMD_* */
    rwatch *watches;
    uint32_t gen;
};

typedef struct rbackend {
    latch_backend base;
    latch_app *app;
    char host[256];
    int port;
    pthread_mutex_t mu; /* rw's allocation */
    rworker *rw;
    int nrw;
} rbackend;

/* A publish handed from another thread to a worker. */
typedef struct rjob {
    rbackend *be;
    char *channel, *event, *data;
    size_t len;
} rjob;

static void rw_connect(rworker *rw);
static void on_message(redisAsyncContext *ac, void *reply, void *priv);
static void read_t0(rwatch *st);
static void read_history(rwatch *st);

/* ------------------------------------------------------------------ */
/* The adapter: hiredis's event hooks over a uv_poll_t                  */
/* ------------------------------------------------------------------ */

static void link_closed(uv_handle_t *h)
{
    free(h->data);
}

static void on_poll(uv_poll_t *p, int status, int events)
{
    rlink *l = p->data;

    if (status < 0) /* an error on the socket: hiredis reads and sees it */
        events = UV_READABLE | (l->events & UV_WRITABLE);
    if (l->ac != NULL && (events & UV_READABLE))
        redisAsyncHandleRead(l->ac);
    if (l->ac != NULL && (events & UV_WRITABLE))
        redisAsyncHandleWrite(l->ac);
}

static void link_update(rlink *l, int add, int del)
{
    l->events = (l->events | add) & ~del;
    if (l->events != 0)
        uv_poll_start(&l->poll, l->events, on_poll);
    else
        uv_poll_stop(&l->poll);
}

static void ev_add_read(void *d)
{
    link_update(d, UV_READABLE, 0);
}
static void ev_del_read(void *d)
{
    link_update(d, 0, UV_READABLE);
}
static void ev_add_write(void *d)
{
    link_update(d, UV_WRITABLE, 0);
}
static void ev_del_write(void *d)
{
    link_update(d, 0, UV_WRITABLE);
}
static void ev_cleanup(void *d)
{
    rlink *l = d;

    l->ac = NULL;
    uv_poll_stop(&l->poll);
    uv_close((uv_handle_t *)&l->poll, link_closed);
}

static int attach_loop(redisAsyncContext *ac, uv_loop_t *loop)
{
    rlink *l = calloc(1, sizeof(*l));

    if (l == NULL)
        return LATCH_ERR_NOMEM;
    if (uv_poll_init_socket(loop, &l->poll, ac->c.fd) < 0) {
        free(l);
        return LATCH_ERR_NOMEM;
    }
    l->poll.data = l;
    l->ac = ac;
    ac->ev.data = l;
    ac->ev.addRead = ev_add_read;
    ac->ev.delRead = ev_del_read;
    ac->ev.addWrite = ev_add_write;
    ac->ev.delWrite = ev_del_write;
    ac->ev.cleanup = ev_cleanup;
    return 0;
}

/* ------------------------------------------------------------------ */
/* Connections                                                          */
/* ------------------------------------------------------------------ */

static void schedule_retry(rworker *rw);

/* A connection went down (or never came up). */
static void conn_lost(rconn *c)
{
    rworker *rw = c->rw;
    rwatch *st;

    c->ac = NULL;
    c->up = false;
    uv_timer_stop(&c->timer);
    /* What was in flight on it is gone: asked again on the next one. */
    for (st = rw->watches; st != NULL; st = st->next)
        if (c->sub)
            st->sub = SUB_NONE;
        else
            st->t0_sent = st->h_sent = false;
    if (!c->sub)
        atomic_store(&rw->cmd_state, CMD_DOWN);
    if (rw->closing)
        return;
    schedule_retry(rw);
}

static void gap_one(latch_chan *ch, void *data)
{
    rworker *rw = data;

    latch__hub_gap(rw->be->app, rw->w, ch);
}

static void buf_clear(rwatch *st)
{
    size_t i;

    for (i = 0; i < st->nbuf; i++)
        latch__msg_unref(st->buf[i]);
    free(st->buf);
    st->buf = NULL;
    st->nbuf = st->capbuf = 0;
}

/* A new watch period: where the stream stood is to be read again, and
 * replies to the reads of the previous period are stale. */
static void watch_reset(rwatch *st)
{
    st->gen = ++st->rw->gen;
    st->t0_sent = st->t0_known = st->h_sent = st->ready = false;
    buf_clear(st);
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    rconn *c = ac->data;
    rworker *rw;
    rwatch *st;

    (void)status;
    if (c == NULL)
        return;
    rw = c->rw;
    if (c->sub && c->up && !rw->closing) {
        /* Events published until the next SUBSCRIBE are not seen: the
         * subscribers hear of a gap, and the channels are loaded again
         * (the ring too may have missed them). */
        latch__hub_each_watched(rw->be->app, rw->w, gap_one, rw);
        for (st = rw->watches; st != NULL; st = st->next)
            if (st->watched) {
                watch_reset(st);
                latch__hub_unready(rw->be->app, rw->w, st->ch);
            }
    }
    conn_lost(c);
    if (c->sub)
        for (st = rw->watches; st != NULL; st = st->next)
            read_t0(st);
}

/*
 * SUBSCRIBE when the hub wants the channel and nothing is in flight for
 * it. One command at a time per channel makes each confirmation
 * unambiguous: the "subscribe" that moves SUB_SENT to SUB_ON is the one
 * that took effect for this watch, so the history read it triggers is
 * read after the subscription, never after an older one that an
 * UNSUBSCRIBE still in flight is about to end. hiredis keeps the callback
 * for the subscription's life: each message comes to on_message.
 */
static void sub_want(rwatch *st)
{
    rconn *c = &st->rw->sub;

    if (!st->watched || st->sub != SUB_NONE || !c->up)
        return;
    if (redisAsyncCommand(c->ac, on_message, NULL, "SUBSCRIBE " PREFIX_C "%b",
                          st->ch->name, st->ch->name_len) == REDIS_OK)
        st->sub = SUB_SENT;
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    rconn *c = ac->data;
    rwatch *st;

    if (c == NULL)
        return;
    uv_timer_stop(&c->timer);
    if (status != REDIS_OK) {
        /* hiredis frees the context after this returns. */
        ((redisAsyncContext *)ac)->data = NULL;
        conn_lost(c);
        return;
    }
    c->up = true;
    c->rw->backoff = 0;
    if (!c->sub)
        atomic_store(&c->rw->cmd_state, CMD_OK);
    for (st = c->rw->watches; st != NULL; st = st->next)
        if (c->sub) {
            sub_want(st);
        } else {
            read_t0(st);
            read_history(st);
        }
}

static void on_connect_timeout(uv_timer_t *t)
{
    rconn *c = t->data;
    redisAsyncContext *ac = c->ac;

    if (ac == NULL || c->up)
        return;
    ac->data = NULL; /* no callback of ours for it any more */
    redisAsyncFree(ac);
    conn_lost(c);
}

static void conn_open(rconn *c)
{
    rworker *rw = c->rw;
    redisAsyncContext *ac;

    if (c->ac != NULL || rw->closing)
        return;
    ac = redisAsyncConnect(rw->be->host, rw->be->port);
    if (ac == NULL)
        goto fail;
    if (ac->err != 0) {
        redisAsyncFree(ac);
        goto fail;
    }
    if (attach_loop(ac, &rw->w->loop) < 0) {
        redisAsyncFree(ac);
        goto fail;
    }
    ac->data = c;
    c->ac = ac;
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    uv_timer_start(&c->timer, on_connect_timeout, CONNECT_MS, 0);
    return;
fail:
    schedule_retry(rw);
}

static void on_retry(uv_timer_t *t)
{
    rworker *rw = t->data;

    conn_open(&rw->cmd);
    conn_open(&rw->sub);
}

static void schedule_retry(rworker *rw)
{
    if (rw->closing || uv_is_active((uv_handle_t *)&rw->retry))
        return;
    rw->backoff = rw->backoff == 0 ? RETRY_MIN_MS : rw->backoff * 2;
    if (rw->backoff > RETRY_MAX_MS)
        rw->backoff = RETRY_MAX_MS;
    uv_timer_start(&rw->retry, on_retry, rw->backoff, 0);
}

static void rw_connect(rworker *rw)
{
    conn_open(&rw->cmd);
    conn_open(&rw->sub);
}

static void be_worker_finish(latch_backend *base, latch_worker *w);

static void rw_finish(latch_whook *h, latch_worker *w)
{
    rworker *rw = LATCH_CONTAINER_OF(h, rworker, hook);

    be_worker_finish(&rw->be->base, w);
}

/* The worker's pair, opened on first use on its thread. */
static rworker *rw_get(rbackend *be, latch_worker *w)
{
    rworker *rw;
    int n = be->app->nworkers_running;

    pthread_mutex_lock(&be->mu);
    if (be->nrw != n) {
        rworker *p = calloc((size_t)n, sizeof(*p));
        if (p == NULL) {
            pthread_mutex_unlock(&be->mu);
            return NULL;
        }
        free(be->rw);
        be->rw = p;
        be->nrw = n;
    }
    rw = &be->rw[w->index];
    if (rw->open && rw->w == w) {
        pthread_mutex_unlock(&be->mu);
        return rw->closing ? NULL : rw;
    }
    if (w->draining) {
        pthread_mutex_unlock(&be->mu);
        return NULL;
    }
    /* Under the lock: publishers of other threads read cmd_state. */
    memset(rw, 0, sizeof(*rw));
    atomic_store(&rw->cmd_state, CMD_OK);
    pthread_mutex_unlock(&be->mu);
    rw->be = be;
    rw->w = w;
    rw->cmd.rw = rw->sub.rw = rw;
    rw->sub.sub = true;
    uv_timer_init(&w->loop, &rw->retry);
    uv_timer_init(&w->loop, &rw->cmd.timer);
    uv_timer_init(&w->loop, &rw->sub.timer);
    rw->retry.data = rw;
    rw->cmd.timer.data = &rw->cmd;
    rw->sub.timer.data = &rw->sub;
    rw->open = true;
    rw->hook.finish = rw_finish;
    latch__worker_hook(w, &rw->hook);
    rw_connect(rw);
    return rw;
}

/* ------------------------------------------------------------------ */
/* Messages                                                             */
/* ------------------------------------------------------------------ */

static rwatch *watch_of(rworker *rw, latch_chan *ch)
{
    return *latch__chan_blocal(ch, rw->w);
}

/* Holds a message that arrived before the channel was loaded. */
static void buf_add(rwatch *st, latch_msg *m)
{
    if (st->nbuf == st->capbuf) {
        size_t cap = st->capbuf ? st->capbuf * 2 : 16;
        latch_msg **p = realloc(st->buf, cap * sizeof(*p));
        if (p == NULL)
            return; /* the ring load has it, or the id jump says so */
        st->buf = p;
        st->capbuf = cap;
    }
    latch__msg_ref(m);
    st->buf[st->nbuf++] = m;
}

/* A (un)subscribe confirmation for ch on this worker. */
static void sub_confirmed(rworker *rw, latch_chan *ch, bool on)
{
    rwatch *st = watch_of(rw, ch);

    if (st == NULL)
        return;
    if (on && st->sub == SUB_SENT) {
        st->sub = SUB_ON;
        read_history(st);
    } else if (!on && st->sub == SUB_LEAVING) {
        st->sub = SUB_NONE;
        sub_want(st); /* watched again meanwhile */
    }
}

static void on_message(redisAsyncContext *ac, void *reply, void *priv)
{
    redisReply *r = reply, *name, *payload;
    rconn *c = ac->data;
    const char *p, *nl, *nl2, *end, *kind;
    char idtext[48];
    latch_msgid id;
    latch_chan *ch;
    latch_msg *m;
    rwatch *st;
    size_t plen = sizeof(PREFIX_C) - 1;

    (void)priv;
    if (c == NULL || r == NULL || r->type != REDIS_REPLY_ARRAY ||
        r->elements != 3 || r->element[0]->type != REDIS_REPLY_STRING)
        return;
    kind = r->element[0]->str;
    name = r->element[1];
    payload = r->element[2];
    if (name->type != REDIS_REPLY_STRING || (size_t)name->len <= plen ||
        memcmp(name->str, PREFIX_C, plen) != 0)
        return;
    if (strcmp(kind, "subscribe") == 0 || strcmp(kind, "unsubscribe") == 0) {
        ch = latch__hub_chan(c->rw->be->app, name->str + plen,
                             (size_t)name->len - plen);
        if (ch != NULL)
            sub_confirmed(c->rw, ch, kind[0] == 's');
        return;
    }
    if (strcmp(kind, "message") != 0 || payload->type != REDIS_REPLY_STRING)
        return;
    p = payload->str;
    end = p + payload->len;
    nl = memchr(p, '\n', (size_t)(end - p));
    if (nl == NULL || nl - p >= (long)sizeof(idtext) || nl + 1 >= end)
        return;
    memcpy(idtext, p, (size_t)(nl - p));
    idtext[nl - p] = '\0';
    nl2 = memchr(nl + 1, '\n', (size_t)(end - nl - 1));
    if (nl2 == NULL || latch__msgid_parse(idtext, &id) < 0)
        return;
    ch = latch__hub_chan(c->rw->be->app, name->str + plen,
                         (size_t)name->len - plen);
    if (ch == NULL)
        return;
    ch->dashed = true;
    {
        /* "<0|1><event>": the flag says whether there is an event. */
        size_t elen = (size_t)(nl2 - nl - 2);
        char *ev = NULL;
        if (nl[1] == '1') {
            ev = malloc(elen + 1);
            if (ev == NULL)
                return;
            memcpy(ev, nl + 2, elen);
            ev[elen] = '\0';
        }
        m = latch__msg_new(ch, LATCH_MSG_EVENT, ev, nl2 + 1,
                           (size_t)(end - nl2 - 1));
        free(ev);
    }
    if (m == NULL || latch__msg_set_id(m, id) < 0) {
        latch__msg_unref(m);
        return;
    }
    st = watch_of(c->rw, ch);
    if (st != NULL && st->watched && !st->ready)
        buf_add(st, m); /* after the ring is loaded */
    else
        latch__hub_arrived(c->rw->be->app, c->rw->w, m);
    latch__msg_unref(m);
}

/* ------------------------------------------------------------------ */
/* Loading a channel: where its stream stands, and its history          */
/* ------------------------------------------------------------------ */

/*
 * A worker that starts watching a channel cannot deliver it at once: the
 * SUBSCRIBE is not in effect yet, and the ring (the history answering
 * Last-Event-ID) may not hold what the stream holds. So:
 *  1. at watch, the stream's newest id (XREVRANGE COUNT 1) on the command
 *     connection: t0, where the channel stands when its first subscriber
 *     arrived (one without Last-Event-ID is owed what comes after it, and
 *     this worker's own publishes after it come later on the same
 *     connection);
 *  2. once the SUBSCRIBE is confirmed, the history (XREVRANGE COUNT
 *     history): read after the subscription took effect, it overlaps the
 *     messages that arrive (held meanwhile), so nothing falls between;
 *  3. the hub loads the ring with it (latch__hub_loaded), the pending
 *     subscribers are served from the ring, then the held messages go.
 * One read per channel and worker, not per subscriber: a thousand
 * browsers reconnecting after a restart with Last-Event-ID cost one
 * XREVRANGE, and since the stream is trimmed exactly to the history, a
 * per-subscriber XRANGE would never find more than the ring holds.
 */

/* The stream id of an entry [id, [field, value...]]. */
static bool entry_id(const redisReply *e, latch_msgid *id)
{
    return e->type == REDIS_REPLY_ARRAY && e->elements == 2 &&
           e->element[0]->type == REDIS_REPLY_STRING &&
           latch__msgid_parse(e->element[0]->str, id) == 0;
}

/* An entry as a message of ch, or NULL. */
static latch_msg *entry_msg(latch_chan *ch, const redisReply *e)
{
    const redisReply *f, *ev = NULL, *data = NULL, *flag = NULL;
    latch_msgid id;
    latch_msg *m;
    char *evs = NULL;
    size_t i;

    if (!entry_id(e, &id) || (f = e->element[1])->type != REDIS_REPLY_ARRAY)
        return NULL;
    for (i = 0; i + 1 < f->elements; i += 2) {
        const redisReply *k = f->element[i], *v = f->element[i + 1];
        if (k->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING)
            continue;
        if (strcmp(k->str, "e") == 0)
            ev = v;
        else if (strcmp(k->str, "d") == 0)
            data = v;
        else if (strcmp(k->str, "f") == 0)
            flag = v;
    }
    if (data == NULL)
        return NULL;
    /* "f" says whether there was an event name ("" is none without it). */
    if (ev != NULL &&
        (flag != NULL ? strcmp(flag->str, "1") == 0 : ev->len > 0)) {
        if ((evs = malloc((size_t)ev->len + 1)) == NULL)
            return NULL;
        memcpy(evs, ev->str, (size_t)ev->len);
        evs[ev->len] = '\0';
    }
    m = latch__msg_new(ch, LATCH_MSG_EVENT, evs, data->str, (size_t)data->len);
    free(evs);
    if (m != NULL && latch__msg_set_id(m, id) < 0) {
        latch__msg_unref(m);
        m = NULL;
    }
    return m;
}

/* A read for the current watch period of st; NULL when out of memory. */
static rread *read_new(rwatch *st)
{
    rread *rq = malloc(sizeof(*rq));

    if (rq != NULL)
        *rq = (rread){st->rw, st->ch, st->gen};
    return rq;
}

/* The watch a read's reply is for; NULL when the reply is stale (the
 * worker finishes, the connection dropped, or the channel's watch period
 * changed since). Frees the read. */
static rwatch *read_done(redisAsyncContext *ac, redisReply *r, rread *rq)
{
    rwatch *st = NULL;

    if (r != NULL && ac->data != NULL && rq->rw->open && !rq->rw->closing) {
        st = watch_of(rq->rw, rq->ch);
        if (st != NULL && (st->gen != rq->gen || !st->watched))
            st = NULL;
    }
    free(rq);
    return st;
}

static void on_t0(redisAsyncContext *ac, void *reply, void *priv)
{
    redisReply *r = reply;
    rwatch *st = read_done(ac, r, priv);

    if (st == NULL)
        return;
    st->t0_sent = false;
    st->t0 = (latch_msgid){0, 0}; /* no stream yet, or an error: empty */
    if (r->type == REDIS_REPLY_ARRAY && r->elements > 0 &&
        !entry_id(r->element[0], &st->t0))
        st->t0 = (latch_msgid){0, 0};
    st->t0_known = true;
    read_history(st);
}

static void read_t0(rwatch *st)
{
    rconn *c = &st->rw->cmd;
    rread *rq;

    if (!st->watched || st->t0_known || st->t0_sent || c->ac == NULL ||
        (rq = read_new(st)) == NULL)
        return;
    if (redisAsyncCommand(c->ac, on_t0, rq,
                          "XREVRANGE " PREFIX_S "%b + - COUNT 1", st->ch->name,
                          st->ch->name_len) != REDIS_OK) {
        free(rq);
        return;
    }
    st->t0_sent = true;
}

static void on_history(redisAsyncContext *ac, void *reply, void *priv)
{
    redisReply *r = reply;
    rwatch *st = read_done(ac, r, priv);
    latch_msg **msgs = NULL, **held;
    size_t n, k = 0, i, nheld;
    rworker *rw;
    latch_chan *ch;

    if (st == NULL)
        return;
    st->h_sent = false;
    n = r->type == REDIS_REPLY_ARRAY ? r->elements : 0;
    if (n > 0 && (msgs = malloc(n * sizeof(*msgs))) == NULL)
        n = 0;
    /* Newest first; an entry that cannot be made ends the list there, so
     * the ring holds the newest ones without a hole (older ids: a gap). */
    for (i = 0; i < n; i++) {
        if ((msgs[k] = entry_msg(st->ch, r->element[i])) == NULL)
            break;
        k++;
    }
    for (i = 0; i < k / 2; i++) {
        latch_msg *t = msgs[i];
        msgs[i] = msgs[k - 1 - i];
        msgs[k - 1 - i] = t;
    }
    /* The hub's callbacks may end subscriptions (and this watch period):
     * take what st holds first. */
    st->ready = true;
    held = st->buf;
    nheld = st->nbuf;
    st->buf = NULL;
    st->nbuf = st->capbuf = 0;
    rw = st->rw;
    ch = st->ch;
    latch__hub_loaded(rw->be->app, rw->w, ch, msgs, k, st->t0);
    for (i = 0; i < k; i++)
        latch__msg_unref(msgs[i]);
    free(msgs);
    for (i = 0; i < nheld; i++) {
        latch__hub_arrived(rw->be->app, rw->w, held[i]);
        latch__msg_unref(held[i]);
    }
    free(held);
}

static void read_history(rwatch *st)
{
    rworker *rw = st->rw;
    int hist = rw->be->app->channel_history;
    rread *rq;

    if (!st->watched || st->sub != SUB_ON || !st->t0_known || st->h_sent ||
        st->ready || rw->cmd.ac == NULL || (rq = read_new(st)) == NULL)
        return;
    if (redisAsyncCommand(rw->cmd.ac, on_history, rq,
                          "XREVRANGE " PREFIX_S "%b + - COUNT %d", st->ch->name,
                          st->ch->name_len, hist > 0 ? hist : 1) != REDIS_OK) {
        free(rq);
        return;
    }
    st->h_sent = true;
}

/* Runs the script on w's command connection. */
static int publish_here(rbackend *be, latch_worker *w, const char *channel,
                        const char *event, const char *data, size_t len)
{
    rworker *rw = rw_get(be, w);
    char hist[24];
    size_t clen = strlen(channel);

    /* While it connects, hiredis keeps the command for when it is up. */
    if (rw == NULL || rw->cmd.ac == NULL ||
        atomic_load(&rw->cmd_state) == CMD_DOWN)
        return LATCH_ERR_STATE;
    snprintf(hist, sizeof(hist), "%d",
             be->app->channel_history > 0 ? be->app->channel_history : 1);
    if (redisAsyncCommand(rw->cmd.ac, NULL, NULL,
                          "EVAL %s 2 " PREFIX_S "%b " PREFIX_C "%b %s %b %s %s",
                          script, channel, clen, channel, clen,
                          event != NULL ? event : "", data != NULL ? data : "",
                          len, event != NULL ? "1" : "0", hist) != REDIS_OK)
        return LATCH_ERR_STATE;
    return 0;
}

static void job_run(latch_res *unused, void *data)
{
    rjob *j = data;
    latch_worker *w;

    (void)unused;
    w = &j->be->app->workers[0];
    publish_here(j->be, w, j->channel, j->event, j->data, j->len);
    free(j->channel);
    free(j->event);
    free(j->data);
    free(j);
}

/* The worker whose thread this is, or NULL. */
static latch_worker *this_worker(latch_app *app)
{
    latch_worker *ws = atomic_load(&app->live);
    int i;

    for (i = 0; ws != NULL && i < app->nworkers_running; i++)
        if (pthread_equal(pthread_self(), ws[i].thread))
            return &ws[i];
    return NULL;
}

static int be_publish(latch_backend *base, const char *channel,
                      const char *event, const char *data, size_t len)
{
    rbackend *be = (rbackend *)base;
    latch_app *app = be->app;
    latch_worker *w = this_worker(app);
    rjob *j;
    int r;

    if (w != NULL)
        return publish_here(be, w, channel, event, data, len);
    /* From another thread: worker 0's connection, through its post queue
     * (one queue, so one thread's publishes keep their order). Refused
     * while that connection is down, as on a worker: the job could not
     * send it, and the caller would never know. */
    pthread_mutex_lock(&be->mu);
    r = be->nrw > 0 && atomic_load(&be->rw[0].cmd_state) == CMD_DOWN
            ? LATCH_ERR_STATE
            : 0;
    pthread_mutex_unlock(&be->mu);
    if (r < 0)
        return r;
    j = calloc(1, sizeof(*j));
    if (j == NULL)
        return LATCH_ERR_NOMEM;
    j->be = be;
    j->channel = strdup(channel);
    j->event = event != NULL ? strdup(event) : NULL;
    j->data = malloc(len + 1);
    j->len = len;
    r = 0;
    if (j->channel == NULL || (event != NULL && j->event == NULL) ||
        j->data == NULL)
        r = LATCH_ERR_NOMEM;
    else if (len > 0)
        memcpy(j->data, data, len);
    pthread_mutex_lock(&app->live_mu);
    if (r < 0)
        ;
    else if (atomic_load(&app->live) == NULL || atomic_load(&app->stopping))
        r = LATCH_ERR_STATE;
    else
        r = latch__worker_post(&app->workers[0], job_run, j);
    pthread_mutex_unlock(&app->live_mu);
    if (r < 0) {
        free(j->channel);
        free(j->event);
        free(j->data);
        free(j);
    }
    return r;
}

static void be_watch(latch_backend *base, latch_worker *w, latch_chan *ch)
{
    rbackend *be = (rbackend *)base;
    rworker *rw = rw_get(be, w);
    rwatch *st;

    ch->dashed = true;
    if (rw == NULL)
        return; /* the worker is shutting down */
    if ((st = watch_of(rw, ch)) == NULL) {
        if ((st = calloc(1, sizeof(*st))) == NULL) {
            /* Cannot track it: deliver what comes, from now on. */
            latch__hub_loaded(be->app, w, ch, NULL, 0, ch->last);
            return;
        }
        st->rw = rw;
        st->ch = ch;
        st->next = rw->watches;
        rw->watches = st;
        *latch__chan_blocal(ch, w) = st;
    }
    st->watched = true;
    watch_reset(st);
    read_t0(st);
    sub_want(st);
}

static void be_unwatch(latch_backend *base, latch_worker *w, latch_chan *ch)
{
    rbackend *be = (rbackend *)base;
    rworker *rw;
    rwatch *st;

    if (w->index >= be->nrw)
        return;
    rw = &be->rw[w->index];
    if (!rw->open || rw->closing || rw->w != w ||
        (st = watch_of(rw, ch)) == NULL)
        return;
    st->watched = false;
    watch_reset(st);
    if ((st->sub == SUB_SENT || st->sub == SUB_ON) && rw->sub.up &&
        redisAsyncCommand(rw->sub.ac, NULL, NULL, "UNSUBSCRIBE " PREFIX_C "%b",
                          ch->name, ch->name_len) == REDIS_OK)
        st->sub = SUB_LEAVING;
}

static void timer_closed(uv_handle_t *h)
{
    (void)h;
}

static void be_worker_finish(latch_backend *base, latch_worker *w)
{
    rbackend *be = (rbackend *)base;
    rworker *rw;
    rwatch *st;

    if (w->index >= be->nrw)
        return;
    rw = &be->rw[w->index];
    if (!rw->open || rw->w != w)
        return;
    rw->closing = true;
    if (rw->cmd.ac != NULL) {
        rw->cmd.ac->data = NULL;
        redisAsyncFree(rw->cmd.ac);
        rw->cmd.ac = NULL;
    }
    if (rw->sub.ac != NULL) {
        rw->sub.ac->data = NULL;
        redisAsyncFree(rw->sub.ac);
        rw->sub.ac = NULL;
    }
    uv_close((uv_handle_t *)&rw->retry, timer_closed);
    uv_close((uv_handle_t *)&rw->cmd.timer, timer_closed);
    uv_close((uv_handle_t *)&rw->sub.timer, timer_closed);
    while ((st = rw->watches) != NULL) {
        rw->watches = st->next;
        buf_clear(st);
        *latch__chan_blocal(st->ch, w) = NULL;
        free(st);
    }
    atomic_store(&rw->cmd_state, CMD_NEW); /* the next run opens a pair */
    rw->open = false;
}

static void be_free(latch_backend *base)
{
    rbackend *be = (rbackend *)base;

    pthread_mutex_destroy(&be->mu);
    free(be->rw);
    free(be);
}

static const latch_backend_ops redis_ops = {
    be_publish, be_watch, be_unwatch, be_worker_finish, be_free,
};

/* A backend for "redis://host:port". 0, or LATCH_ERR_INVALID_ARG for a
 * URL it cannot use, LATCH_ERR_NOMEM. */
static int backend_new(latch_app *app, const char *url, latch_backend **out)
{
    const char *p, *colon;
    rbackend *be;
    char *end;
    long port = 6379;
    size_t hlen;

    *out = NULL;
    if (strncmp(url, "redis://", 8) != 0)
        return LATCH_ERR_INVALID_ARG;
    p = url + 8;
    colon = strrchr(p, ':');
    hlen = colon != NULL ? (size_t)(colon - p) : strlen(p);
    if (colon != NULL) {
        port = strtol(colon + 1, &end, 10);
        if (end == colon + 1 || (*end != '\0' && *end != '/') || port <= 0 ||
            port > 65535)
            return LATCH_ERR_INVALID_ARG;
    }
    if (hlen == 0 || hlen >= sizeof(be->host))
        return LATCH_ERR_INVALID_ARG;
    be = calloc(1, sizeof(*be));
    if (be == NULL)
        return LATCH_ERR_NOMEM;
    be->base.ops = &redis_ops;
    be->app = app;
    memcpy(be->host, p, hlen);
    be->host[hlen] = '\0';
    be->port = (int)port;
    pthread_mutex_init(&be->mu, NULL);
    *out = &be->base;
    return 0;
}

int latch_app_set_pubsub(latch_app *app, const char *url)
{
    latch_backend *be = NULL;
    int r;

    if (app == NULL)
        return LATCH_ERR_INVALID_ARG;
    if (app->running)
        return LATCH_ERR_STATE;
    if (latch__hub_get(app) == NULL)
        return LATCH_ERR_NOMEM;
    if (url != NULL && (r = backend_new(app, url, &be)) < 0)
        return r;
    latch__hub_set_backend(app, be);
    return 0;
}
