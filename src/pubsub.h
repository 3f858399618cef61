/*
 * pubsub.h - the hub of latch's pub/sub (pubsub.c) as sse.c and the Redis
 * backend (pubsub_redis.c) see it: channels, messages, per-worker inboxes.
 *
 * The hub knows channels, ids, history and which worker has subscribers
 * on which channel. It knows nothing of responses: sse.c keeps each
 * worker's subscribers (on the channel's per-worker slot) and is told of
 * each message through the table it installs (latch_hub_up). Publishing
 * is thread-safe; everything about one worker's subscribers runs on that
 * worker's thread.
 */
#ifndef LATCH_PUBSUB_H
#define LATCH_PUBSUB_H

#include "internal.h"

enum {
    LATCH_MSG_EVENT = 0, /* a published event */
    LATCH_MSG_GAP = 1,   /* events of the channel may have been lost */
};

/* An id as an ordered pair: in-process "hi" (a counter, lo 0); Redis
 * "hi-lo" (a stream entry id). Compared as (hi, lo). */
typedef struct latch_msgid {
    uint64_t hi, lo;
} latch_msgid;

static inline int latch__msgid_cmp(latch_msgid a, latch_msgid b)
{
    if (a.hi != b.hi)
        return a.hi < b.hi ? -1 : 1;
    return a.lo < b.lo ? -1 : a.lo > b.lo;
}
/* Parses "N" or "N-M" (decimal, no sign, no spaces). 0 or
 * LATCH_ERR_INVALID_ARG. */
int latch__msgid_parse(const char *s, latch_msgid *out);
/* Writes "hi" or "hi-lo" (dashed) into out (44 bytes at least). */
void latch__msgid_format(latch_msgid id, bool dashed, char *out);

typedef struct latch_chan latch_chan;

/*
 * A message: immutable once published, shared by every worker and
 * subscriber that holds it (reference counted, any thread). `m` is what a
 * subscriber's callback gets; `sse` the same event framed for an event
 * stream, built once at publish time so that fan-out only copies bytes.
 */
typedef struct latch_msg {
    _Atomic uint32_t refs;
    uint8_t kind; /* LATCH_MSG_* */
    bool dashed;  /* id prints as "hi-lo" (idbuf) */
    latch_msgid id;
    latch_chan *ch;
    latch_message m;
    const char *sse;
    size_t sse_len;
    char idbuf[44];
} latch_msg;

/* A new message with one reference: the event framed for SSE, the id
 * given (id NULL: none yet, see latch__msg_set_id). NULL when out of
 * memory. event may be NULL; data[0..len) is copied. */
latch_msg *latch__msg_new(latch_chan *ch, int kind, const char *event,
                          const char *data, size_t len);
/* Sets a backend's id ("hi-lo") and builds the SSE frame with it. 0 or
 * LATCH_ERR_NOMEM. Before the message is shared. */
int latch__msg_set_id(latch_msg *m, latch_msgid id);
void latch__msg_ref(latch_msg *m);
void latch__msg_unref(latch_msg *m);

/* What sse.c is told, on a worker's thread. */
typedef struct latch_hub_up {
    /* A message for the worker's subscribers on msg->ch. */
    void (*deliver)(latch_worker *w, latch_msg *msg);
    /* The backend is ready on (w, ch): each of w's subscribers that
     * joined pending gets what it is owed after its start point (its
     * Last-Event-ID, or `start` for one that gave none) through
     * latch__hub_replay, then live messages. */
    void (*ready)(latch_worker *w, latch_chan *ch, const char *start);
    /* The backend's answer to latch__hub_probe(w, ch, after): whether
     * `after` is an entry of the channel's stream (known), and the
     * entries after it that the stream holds, msgs[0..n) in id order
     * (borrowed for the call). n 0 and !known: the stream holds nothing
     * at or after it, or could not be read. */
    void (*probed)(latch_worker *w, latch_chan *ch, const char *after,
                   latch_msg **msgs, size_t n, bool known);
} latch_hub_up;

/*
 * A channel. `name` never changes and the object lives as long as the
 * hub, so workers and messages may point at it without a reference.
 * local[i] belongs to worker i's thread (sse.c's list of that worker's
 * subscribers); the rest is the hub's, under its lock.
 */
struct latch_chan {
    latch_chan *next; /* hash chain */
    char *name;
    size_t name_len;
    latch_msgid last;    /* the newest id assigned or seen */
    latch_msgid evicted; /* the newest id that left the ring (0: none) */
    latch_msg **ring;
    int ring_cap, ring_len, ring_head; /* head: oldest */
    int nw;
    uint32_t *wsubs; /* subscribers per worker */
    bool *wready;    /* per worker: the backend delivers ch there */
    void **local;    /* per worker, that worker's thread only */
    void **blocal;   /* per worker, the backend's (that worker's thread) */
    bool dashed;     /* ids are "hi-lo" (a backend's stream ids) */
};

/*
 * The backend behind latch_app_set_pubsub (pubsub_redis.c). publish is
 * called from any thread with the hub's lock NOT held and owns nothing
 * of its arguments after it returns; watch and unwatch on worker w's
 * thread when w's first subscriber of a channel arrives or its last one
 * leaves. Until the backend calls latch__hub_loaded for (w, ch), w's new
 * subscribers of ch join pending: nothing is replayed or delivered to
 * them before it.
 */
typedef struct latch_backend latch_backend;
typedef struct latch_backend_ops {
    int (*publish)(latch_backend *be, const char *channel, const char *event,
                   const char *data, size_t len);
    void (*watch)(latch_backend *be, latch_worker *w, latch_chan *ch);
    void (*unwatch)(latch_backend *be, latch_worker *w, latch_chan *ch);
    void (*worker_finish)(latch_backend *be, latch_worker *w);
    /* On w's thread: what the stream of ch holds at and after `after`
     * (an id newer than any this process has seen); answered once,
     * through latch__hub_probed, maybe before probe returns. */
    void (*probe)(latch_backend *be, latch_worker *w, latch_chan *ch,
                  const char *after);
    void (*free)(latch_backend *be);
} latch_backend_ops;
struct latch_backend {
    const latch_backend_ops *ops;
};

/* The app's hub, made on first use; NULL when out of memory. */
struct latch_hub *latch__hub_get(latch_app *app);

/* What a Last-Event-ID is owed from a channel's ring. */
typedef struct latch_replay {
    latch_msg **msgs; /* the entries after it, each with a reference for
                         the caller, who frees the array */
    size_t n;
    bool gap;         /* events after it may be gone (older than the ring,
                         unknown, or from a later run) */
    bool ahead;       /* with a backend: newer than any id this process
                         has seen (another process published it): ask the
                         backend (latch__hub_probe); nothing returned */
    latch_msgid from; /* the channel's newest id now: live messages after
                         it follow */
} latch_replay;

/*
 * Worker w joins `name` for one subscriber (on w's thread): the channel
 * (made if new) is returned in *ch and w counts one more subscriber on
 * it. `last_id` (NULL: none) is a client's Last-Event-ID: what the ring
 * owes it is returned in *rp (rp->from alone without one). *pending
 * instead, with nothing returned: the backend is not ready on (w, ch)
 * yet (up->ready comes later). Installs `up` for deliveries. 0,
 * LATCH_ERR_NOMEM or LATCH_ERR_INVALID_ARG.
 */
int latch__hub_join(latch_app *app, latch_worker *w, const latch_hub_up *up,
                    const char *name, const char *last_id, latch_chan **ch,
                    latch_replay *rp, bool *pending);
/* What the ring of ch holds after `after` (an id as text), as
 * latch__hub_join returns it, for a subscriber that joined pending. */
int latch__hub_replay(latch_app *app, latch_chan *ch, const char *after,
                      latch_replay *rp);
/* The ring's entries after `after`, without asking whether `after` is
 * one (a subscriber served from the stream up to it): rp->gap when an
 * entry after it left the ring. 0 or LATCH_ERR_NOMEM. */
int latch__hub_since(latch_app *app, latch_chan *ch, latch_msgid after,
                     latch_replay *rp);
/* Asks the backend what the stream of ch holds from `after` (w's
 * thread); up->probed answers. */
void latch__hub_probe(latch_app *app, latch_worker *w, latch_chan *ch,
                      const char *after);
/* The backend's answer to a probe (w's thread): up->probed. */
void latch__hub_probed(latch_app *app, latch_worker *w, latch_chan *ch,
                       const char *after, latch_msg **msgs, size_t n,
                       bool known);
/* The backend found that the events of ch before `first` may be gone
 * (its stream was trimmed while the link was down): unless the ring
 * holds `first` or newer already, it is emptied and a Last-Event-ID
 * older than `first` gets a gap from now on (w's thread). */
void latch__hub_hole(latch_app *app, latch_chan *ch, latch_msgid first);
/* One subscriber of w on ch left (on w's thread). */
void latch__hub_leave(latch_app *app, latch_worker *w, latch_chan *ch);
/* The per-worker slot of ch for w (w's thread only), sse.c's and the
 * backend's. */
void **latch__chan_local(latch_chan *ch, latch_worker *w);
void **latch__chan_blocal(latch_chan *ch, latch_worker *w);

/*
 * For the backend, on w's thread: a message that arrived for ch (the
 * hub records it in the channel's ring if it is newer than what it has,
 * and hands it to sse.c); takes a reference of its own.
 */
void latch__hub_arrived(latch_app *app, latch_worker *w, latch_msg *msg);
/* Finds or makes a channel (backend use). NULL when out of memory. */
latch_chan *latch__hub_chan(latch_app *app, const char *name, size_t len);
/*
 * The backend is ready on (w, ch) (w's thread): msgs[0..n) are the
 * channel's newest entries in id order, n < the history when they are all
 * it holds; when no other worker is ready on ch they replace the ring
 * (it may have missed events while nobody watched), else the newer ones
 * are added. Then w's pending subscribers are served from `start` (the
 * channel's newest id when the first of them joined). Takes references.
 */
void latch__hub_loaded(latch_app *app, latch_worker *w, latch_chan *ch,
                       latch_msg **msgs, size_t n, latch_msgid start);
/* The backend no longer delivers ch on w (its link dropped): w's next
 * subscribers of ch join pending until latch__hub_loaded again. */
void latch__hub_unready(latch_app *app, latch_worker *w, latch_chan *ch);
/* Sends each subscriber of w on ch a gap (the backend lost its link). */
void latch__hub_gap(latch_app *app, latch_worker *w, latch_chan *ch);

/* Replaces the backend of the app's hub, made before (latch__hub_get),
 * by `be` (NULL: in-process only), freeing the one it had. Before
 * latch_run only. The backends sit above the hub and install themselves
 * (pubsub_redis.c's latch_app_set_pubsub). */
void latch__hub_set_backend(latch_app *app, latch_backend *be);

#endif
