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
 * Loss. When a connection drops, the pair reconnects with backoff
 * (RETRY_MIN_MS doubling to RETRY_MAX_MS), subscribing again to what is
 * still watched. Events published while the subscriber connection was
 * down are in the stream: once the SUBSCRIBE is back, each channel reads
 * its stream from the last id this worker delivered on it (XRANGE) and
 * delivers what it missed, in order, with the stream's ids, then what
 * arrived meanwhile; a latch-gap goes to the subscribers only when that
 * id is no longer in the stream (trimmed past it, or Redis restarted
 * empty) or the stream cannot be read. A publish is kept until Redis
 * answers it: one that went out on a connection that dropped is sent
 * again on the next one, in order, and the script recognizes a retry of
 * an event it already added (a token per publish, kept in the entry), so
 * a publish the dropped connection carried to Redis is not added twice.
 * At most PUB_MAX publishes (PUB_BYTES bytes) wait so; past that, and
 * while the command connection is known down, latch_publish is refused
 * (LATCH_ERR_LIMIT, LATCH_ERR_STATE): the caller always knows. Only a
 * worker that finishes (shutdown) while Redis is down drops what waits.
 *
 * A Last-Event-ID newer than anything this process has seen (another
 * process delivered it first) is not a gap: the stream says whether it
 * is an entry and what follows it (probe), and the subscriber is served
 * from there.
 *
 * What it is not: a general Redis client, and not a durable queue.
 */
#include "pubsub.h"

#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#define CONNECT_MS 2000
#define PUB_MAX 65536
#define PUB_BYTES ((size_t)64 << 20)
#define RETRY_MIN_MS 50
#define RETRY_MAX_MS 2000
#define PREFIX_C "latch:c:"
#define PREFIX_S "latch:s:"

/* The stream is trimmed exactly to the history (not "~", which keeps up to
 * a macro node more): what the stream holds is what a ring loaded from it
 * holds, so a Last-Event-ID is answered the same by every process. A
 * retry (ARGV[6] "1") first looks for its token (ARGV[5]) among the
 * entries the stream keeps: found, the first try was added already. */
static const char script[] =
    "if ARGV[6] == '1' then "
    "for _, e in ipairs(redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', "
    "ARGV[4])) do "
    "local f = e[2] "
    "for i = 1, #f - 1, 2 do "
    "if f[i] == 't' and f[i + 1] == ARGV[5] then return e[1] end "
    "end end end "
    "local id = redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[4], '*', "
    "'e', ARGV[1], 'd', ARGV[2], 'f', ARGV[3], 't', ARGV[5]) "
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
    bool resync;      /* the subscriber link came back: backfill first */
    bool b_sent;      /* the backfill read is in flight */
    latch_msgid t0;   /* the stream's newest id when the watch began */
    latch_msgid last; /* the newest id this worker delivered on ch */
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

/* A probe: what the stream of ch holds from `after` on. */
typedef struct rprobe {
    struct rworker *rw;
    latch_chan *ch;
    char after[48];
} rprobe;

/*
 * A publish that Redis has not answered yet, on its worker's list in
 * publish order: sent on the current command connection (sent), or
 * waiting for the next one. `token` names it in the stream entry, so
 * that a retry finds the first try if Redis ran it.
 */
typedef struct rpub {
    struct rpub *next;
    struct rbackend *be;
    struct rworker *rw; /* set when it joins a worker's list */
    bool sent, retry;
    size_t bytes;
    char *channel, *event, *data;
    size_t len;
    char token[48];
} rpub;

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
    rpub *pubs, **pubs_tail; /* unanswered publishes, oldest first */
    size_t nunsent;          /* of them, waiting for a connection */
};

typedef struct rbackend {
    latch_backend base;
    latch_app *app;
    char host[256];
    int port;
    pthread_mutex_t mu; /* rw's allocation */
    rworker *rw;
    int nrw;
    uint64_t nonce;         /* this process's part of the tokens */
    atomic_ullong seq;      /* the publishes' part */
    atomic_size_t npub;     /* publishes not answered yet, all workers */
    atomic_size_t pubbytes; /* and their bytes */
} rbackend;

static void rw_connect(rworker *rw);
static void on_message(redisAsyncContext *ac, void *reply, void *priv);
static void read_t0(rwatch *st);
static void read_history(rwatch *st);
static void read_backfill(rwatch *st);
static void pub_flush(rworker *rw);

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
            st->t0_sent = st->h_sent = st->b_sent = false;
    if (!c->sub)
        atomic_store(&rw->cmd_state, CMD_DOWN);
    if (rw->closing)
        return;
    schedule_retry(rw);
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
    st->resync = st->b_sent = false;
    st->last = (latch_msgid){0, 0};
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
        /* Events published until the next SUBSCRIBE are not seen here:
         * a channel this worker delivers holds what arrives from then on
         * until its stream says what fell between (read_backfill); one
         * still loading loads again. Replies to reads of the previous
         * period are stale either way. */
        for (st = rw->watches; st != NULL; st = st->next) {
            if (!st->watched)
                continue;
            if (st->ready || st->resync) {
                st->gen = ++rw->gen;
                st->ready = st->b_sent = false;
                st->resync = true;
            } else {
                watch_reset(st);
                latch__hub_unready(rw->be->app, rw->w, st->ch);
            }
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
            read_backfill(st);
        }
    if (!c->sub)
        pub_flush(c->rw);
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
        read_backfill(st);
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
    if (st != NULL && st->watched && !st->ready) {
        buf_add(st, m); /* after the ring is loaded, or the backfill */
    } else {
        if (st != NULL && latch__msgid_cmp(id, st->last) > 0)
            st->last = id;
        latch__hub_arrived(c->rw->be->app, c->rw->w, m);
    }
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

/* Hands held[0..n) to the hub in order and frees them. The hub's
 * callbacks may end this watch (and start another: st->gen says), so
 * st's record of the last id is kept only while the period lasts. */
static void deliver_held(rworker *rw, rwatch *st, latch_chan *ch,
                         latch_msg **held, size_t n)
{
    uint32_t gen = st->gen;
    size_t i;

    for (i = 0; i < n; i++) {
        if (st->gen == gen && latch__msgid_cmp(held[i]->id, st->last) > 0)
            st->last = held[i]->id;
        latch__hub_arrived(rw->be->app, rw->w, held[i]);
        latch__msg_unref(held[i]);
    }
    free(held);
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
    /* Delivered from here on: what the ring took, or where the watch
     * began (what a subscriber with no Last-Event-ID starts after). */
    st->last = st->t0;
    if (k > 0 && latch__msgid_cmp(msgs[k - 1]->id, st->last) > 0)
        st->last = msgs[k - 1]->id;
    latch__hub_loaded(rw->be->app, rw->w, ch, msgs, k, st->t0);
    for (i = 0; i < k; i++)
        latch__msg_unref(msgs[i]);
    free(msgs);
    deliver_held(rw, st, ch, held, nheld);
}

static void read_history(rwatch *st)
{
    rworker *rw = st->rw;
    int hist = rw->be->app->channel_history;
    rread *rq;

    if (!st->watched || st->sub != SUB_ON || !st->t0_known || st->h_sent ||
        st->ready || st->resync || rw->cmd.ac == NULL ||
        (rq = read_new(st)) == NULL)
        return;
    if (redisAsyncCommand(rw->cmd.ac, on_history, rq,
                          "XREVRANGE " PREFIX_S "%b + - COUNT %d", st->ch->name,
                          st->ch->name_len, hist > 0 ? hist : 1) != REDIS_OK) {
        free(rq);
        return;
    }
    st->h_sent = true;
}

/*
 * After the subscriber connection came back and its SUBSCRIBE took
 * effect: what the stream holds after the last id this worker delivered
 * on the channel (XRANGE, from that id included, so that finding it
 * first proves nothing between was trimmed). The stream holds at most the
 * history: COUNT history + 1 reads all of it.
 */
static void on_backfill(redisAsyncContext *ac, void *reply, void *priv)
{
    redisReply *r = reply;
    rwatch *st = read_done(ac, r, priv);
    latch_msg **msgs = NULL, **held;
    size_t n, k = 0, i, nheld;
    latch_msgid last;
    bool hole;
    int hist;
    uint32_t gen;
    rworker *rw;
    latch_chan *ch;

    if (st == NULL)
        return;
    rw = st->rw;
    ch = st->ch;
    hist = rw->be->app->channel_history > 0 ? rw->be->app->channel_history : 1;
    st->b_sent = false;
    n = r->type == REDIS_REPLY_ARRAY ? r->elements : 0;
    if (n > 0 && (msgs = malloc(n * sizeof(*msgs))) == NULL)
        n = 0;
    for (i = 0; i < n; i++) {
        if ((msgs[k] = entry_msg(ch, r->element[i])) == NULL)
            break;
        k++;
    }
    last = st->last;
    if (r->type != REDIS_REPLY_ARRAY || k < n) {
        hole = true; /* cannot be read (or kept): the client hears of it */
    } else if (last.hi == 0 && last.lo == 0) {
        /* Nothing delivered, the stream empty when the watch began: all
         * it holds is new, unless it filled up (then some may be gone). */
        hole = k >= (size_t)hist;
    } else {
        hole = k == 0 || latch__msgid_cmp(msgs[0]->id, last) != 0;
    }
    st->resync = false;
    st->ready = true;
    held = st->buf;
    nheld = st->nbuf;
    st->buf = NULL;
    st->nbuf = st->capbuf = 0;
    /* The entries after `last`, then what arrived meanwhile; the hub
     * drops nothing twice (each subscriber skips what it has). */
    for (i = 0; i < k && latch__msgid_cmp(msgs[i]->id, last) <= 0; i++)
        latch__msg_unref(msgs[i]);
    if (hole) {
        if (i < k)
            latch__hub_hole(rw->be->app, ch, msgs[i]->id);
        latch__hub_gap(rw->be->app, rw->w, ch);
    }
    for (gen = st->gen; i < k; i++) {
        if (st->gen == gen && latch__msgid_cmp(msgs[i]->id, st->last) > 0)
            st->last = msgs[i]->id;
        latch__hub_arrived(rw->be->app, rw->w, msgs[i]);
        latch__msg_unref(msgs[i]);
    }
    free(msgs);
    deliver_held(rw, st, ch, held, nheld);
}

static void read_backfill(rwatch *st)
{
    rworker *rw = st->rw;
    int hist = rw->be->app->channel_history;
    char start[48] = "-";
    rread *rq;

    if (!st->watched || !st->resync || st->sub != SUB_ON || st->b_sent ||
        !rw->cmd.up || (rq = read_new(st)) == NULL)
        return;
    if (st->last.hi != 0 || st->last.lo != 0)
        latch__msgid_format(st->last, true, start);
    if (redisAsyncCommand(rw->cmd.ac, on_backfill, rq,
                          "XRANGE " PREFIX_S "%b %s + COUNT %d", st->ch->name,
                          st->ch->name_len, start,
                          (hist > 0 ? hist : 1) + 1) != REDIS_OK) {
        free(rq);
        return;
    }
    st->b_sent = true;
}

static void on_probe(redisAsyncContext *ac, void *reply, void *priv)
{
    redisReply *r = reply;
    rprobe *p = priv;
    rworker *rw = p->rw;
    latch_msg **msgs = NULL;
    size_t n = 0, k = 0, i, skip = 0;
    latch_msgid after;

    (void)ac;
    if (!rw->open || rw->closing) { /* the worker finishes */
        free(p);
        return;
    }
    if (r != NULL && r->type == REDIS_REPLY_ARRAY)
        n = r->elements;
    if (n > 0 && (msgs = malloc(n * sizeof(*msgs))) == NULL)
        n = 0;
    for (i = 0; i < n; i++) {
        if ((msgs[k] = entry_msg(p->ch, r->element[i])) == NULL)
            break;
        k++;
    }
    if (k > 0 && latch__msgid_parse(p->after, &after) == 0 &&
        latch__msgid_cmp(msgs[0]->id, after) == 0)
        skip = 1; /* the id is an entry: what follows it is owed */
    latch__hub_probed(rw->be->app, rw->w, p->ch, p->after,
                      k > skip ? msgs + skip : NULL, k - skip, skip == 1);
    for (i = 0; i < k; i++)
        latch__msg_unref(msgs[i]);
    free(msgs);
    free(p);
}

static void be_probe(latch_backend *base, latch_worker *w, latch_chan *ch,
                     const char *after)
{
    rbackend *be = (rbackend *)base;
    rworker *rw = w->index < be->nrw ? &be->rw[w->index] : NULL;
    int hist = be->app->channel_history;
    latch_msgid id;
    char text[48];
    rprobe *p = NULL;

    if (rw == NULL || !rw->open || rw->closing || rw->w != w ||
        rw->cmd.ac == NULL || latch__msgid_parse(after, &id) < 0 ||
        strlen(after) >= sizeof(p->after) || (p = malloc(sizeof(*p))) == NULL)
        goto fail;
    p->rw = rw;
    p->ch = ch;
    snprintf(p->after, sizeof(p->after), "%s", after);
    latch__msgid_format(id, true, text);
    if (redisAsyncCommand(rw->cmd.ac, on_probe, p,
                          "XRANGE " PREFIX_S "%b %s + COUNT %d", ch->name,
                          ch->name_len, text,
                          (hist > 0 ? hist : 1) + 1) == REDIS_OK)
        return;
fail:
    /* Cannot ask: the subscriber hears of a gap. */
    free(p);
    latch__hub_probed(be->app, w, ch, after, NULL, 0, false);
}

/* ------------------------------------------------------------------ */
/* Publishing: the script, kept until Redis answers it                  */
/* ------------------------------------------------------------------ */

static void pub_free(rpub *p)
{
    atomic_fetch_sub(&p->be->npub, 1);
    atomic_fetch_sub(&p->be->pubbytes, p->bytes);
    free(p->channel);
    free(p->event);
    free(p->data);
    free(p);
}

/* Takes p off its worker's list and frees it. */
static void pub_done(rpub *p)
{
    rworker *rw = p->rw;
    rpub **pp;

    for (pp = &rw->pubs; *pp != NULL; pp = &(*pp)->next)
        if (*pp == p) {
            *pp = p->next;
            if (rw->pubs_tail == &p->next)
                rw->pubs_tail = pp;
            break;
        }
    pub_free(p);
}

static void on_published(redisAsyncContext *ac, void *reply, void *priv)
{
    rpub *p = priv;

    (void)ac;
    if (reply == NULL && !p->rw->closing) {
        /* The connection dropped before Redis answered: it may or may
         * not have run it; the next connection sends it again. */
        p->sent = false;
        p->retry = true;
        p->rw->nunsent++;
        return;
    }
    /* Answered (an error reply too: Redis refused it, a retry would be
     * refused alike), or the worker finishes. */
    pub_done(p);
}

static void pub_send(rworker *rw, rpub *p)
{
    int hist = rw->be->app->channel_history;
    char h[24];
    size_t clen = strlen(p->channel);

    snprintf(h, sizeof(h), "%d", hist > 0 ? hist : 1);
    if (redisAsyncCommand(rw->cmd.ac, on_published, p,
                          "EVAL %s 2 " PREFIX_S "%b " PREFIX_C
                          "%b %s %b %s %s %s %s",
                          script, p->channel, clen, p->channel, clen,
                          p->event != NULL ? p->event : "", p->data, p->len,
                          p->event != NULL ? "1" : "0", h, p->token,
                          p->retry ? "1" : "0") == REDIS_OK)
        p->sent = true;
}

/* Sends what waits, in order, while the command connection is up. */
static void pub_flush(rworker *rw)
{
    rpub *p;

    for (p = rw->pubs;
         p != NULL && rw->nunsent > 0 && rw->cmd.up && !rw->closing;
         p = p->next)
        if (!p->sent) {
            pub_send(rw, p);
            if (!p->sent)
                break; /* keep the order: the rest waits too */
            rw->nunsent--;
        }
}

/* Puts p on w's list and sends it now unless the connection is down or
 * older ones still wait (the order is the publish order). */
static void pub_enqueue(rworker *rw, rpub *p)
{
    p->rw = rw;
    p->next = NULL;
    if (rw->pubs_tail == NULL)
        rw->pubs_tail = &rw->pubs;
    *rw->pubs_tail = p;
    rw->pubs_tail = &p->next;
    if (rw->nunsent == 0 && rw->cmd.up && !rw->closing)
        pub_send(rw, p);
    if (!p->sent)
        rw->nunsent++;
}

/* A publish accepted: counted against the bound, copied, and named.
 * NULL with *err set when refused. */
static rpub *pub_new(rbackend *be, const char *channel, const char *event,
                     const char *data, size_t len, int *err)
{
    size_t bytes = strlen(channel) + len + (event ? strlen(event) : 0) + 64;
    rpub *p;

    if (atomic_fetch_add(&be->npub, 1) >= PUB_MAX ||
        atomic_fetch_add(&be->pubbytes, bytes) + bytes > PUB_BYTES) {
        /* Redis does not keep up, or is away: the caller knows. */
        atomic_fetch_sub(&be->npub, 1);
        atomic_fetch_sub(&be->pubbytes, bytes);
        *err = LATCH_ERR_LIMIT;
        return NULL;
    }
    p = calloc(1, sizeof(*p));
    if (p == NULL) {
        atomic_fetch_sub(&be->npub, 1);
        atomic_fetch_sub(&be->pubbytes, bytes);
        *err = LATCH_ERR_NOMEM;
        return NULL;
    }
    p->be = be;
    p->bytes = bytes;
    p->channel = strdup(channel);
    p->event = event != NULL ? strdup(event) : NULL;
    p->data = malloc(len + 1);
    p->len = len;
    if (p->channel == NULL || (event != NULL && p->event == NULL) ||
        p->data == NULL) {
        pub_free(p);
        *err = LATCH_ERR_NOMEM;
        return NULL;
    }
    if (len > 0)
        memcpy(p->data, data, len);
    p->data[len] = '\0';
    snprintf(p->token, sizeof(p->token), "%016llx.%llx",
             (unsigned long long)be->nonce,
             (unsigned long long)atomic_fetch_add(&be->seq, 1));
    return p;
}

/* A publish on w's own thread. */
static int publish_here(rbackend *be, latch_worker *w, const char *channel,
                        const char *event, const char *data, size_t len)
{
    rworker *rw = rw_get(be, w);
    rpub *p;
    int err = 0;

    /* While it first connects, the publish waits for the connection. */
    if (rw == NULL || atomic_load(&rw->cmd_state) == CMD_DOWN)
        return LATCH_ERR_STATE;
    if ((p = pub_new(be, channel, event, data, len, &err)) == NULL)
        return err;
    pub_enqueue(rw, p);
    return 0;
}

static void job_run(latch_res *unused, void *data)
{
    rpub *p = data;
    latch_worker *w = &p->be->app->workers[0];
    rworker *rw;

    (void)unused;
    /* Accepted already: it waits for the connection if it is down now. */
    if ((rw = rw_get(p->be, w)) == NULL) {
        pub_free(p); /* the worker is shutting down */
        return;
    }
    pub_enqueue(rw, p);
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
    rpub *p;
    int r = 0;

    if (w != NULL)
        return publish_here(be, w, channel, event, data, len);
    /* From another thread: worker 0's connection, through its post queue
     * (one queue, so one thread's publishes keep their order). Refused
     * while that connection is known down, as on a worker; accepted, it
     * is sent when the connection is up, again if it drops first. */
    pthread_mutex_lock(&be->mu);
    r = be->nrw > 0 && atomic_load(&be->rw[0].cmd_state) == CMD_DOWN
            ? LATCH_ERR_STATE
            : 0;
    pthread_mutex_unlock(&be->mu);
    if (r < 0)
        return r;
    if ((p = pub_new(be, channel, event, data, len, &r)) == NULL)
        return r;
    pthread_mutex_lock(&app->live_mu);
    if (atomic_load(&app->live) == NULL || atomic_load(&app->stopping))
        r = LATCH_ERR_STATE;
    else
        r = latch__worker_post(&app->workers[0], job_run, p);
    pthread_mutex_unlock(&app->live_mu);
    if (r < 0)
        pub_free(p);
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
    rpub *p;

    if (w->index >= be->nrw)
        return;
    rw = &be->rw[w->index];
    if (!rw->open || rw->w != w)
        return;
    rw->closing = true; /* what hiredis answers now is dropped */
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
    /* Publishes that waited for a connection that did not come back in
     * time: shutdown drops them (a process that stops cannot send). */
    while ((p = rw->pubs) != NULL) {
        rw->pubs = p->next;
        pub_free(p);
    }
    rw->pubs_tail = NULL;
    rw->nunsent = 0;
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
    .publish = be_publish,
    .watch = be_watch,
    .unwatch = be_unwatch,
    .worker_finish = be_worker_finish,
    .probe = be_probe,
    .free = be_free,
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
    /* Tokens unique across the processes sharing the Redis server. */
    if (getrandom(&be->nonce, sizeof(be->nonce), GRND_NONBLOCK) !=
        (ssize_t)sizeof(be->nonce))
        be->nonce = ((uint64_t)getpid() << 32) ^ (uint64_t)(uintptr_t)be ^
                    (uint64_t)time(NULL);
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
