/*
 * internal.h - the structures that latch's modules share: the app, a
 * worker (one thread, one loop), a connection, a request/response pair,
 * and the small buffer types under them.
 *
 * This header is private. Only src/ and the unit tests include it. Each
 * struct belongs to one module that changes it; the others only read it
 * or go through that module's latch__ functions. A struct that only its
 * own module reads lives in that module's private header: conn.h
 * (struct latch_conn, conn.c's), res_internal.h (what res.c shares with
 * headers.c, send.c and pages.c, the response's other files), chain.h,
 * file.h, filemeta.h, upstream.h, pubsub.h, tls.h, evstream.h.
 *
 * The rule between modules: each names functions and reads fields only of
 * modules below it (src/LAYERS lists the allowed pairs; `make test`
 * checks them on the objects, and that they form no cycle). An event that
 * must go up - a request arrived, a response has nobody left to answer it
 * or closed, a feature failed before the head, a resource tied to a
 * response must end, a response writes to its protocol, a draining worker
 * has no connection left - goes through a table or hook that the upper
 * module installed, declared here with its contract: serve
 * (latch_serve_ops), the owner (latch_res_owner_ops), attachments
 * (latch_attach_ops), the exchange (latch_exchange_ops) and the worker's
 * drained hook. The response's files (res.c, headers.c, send.c, pages.c)
 * name no protocol and no part of the chain, and res.c names none of the
 * other three; conn.c names neither the app nor the chain.
 */
#ifndef LATCH_INTERNAL_H
#define LATCH_INTERNAL_H

#include "http.h"
#include "intern.h"
#include "latch.h"
#include "parser.h"
#include "router.h"

/*
 * latch.h makes its getters and the JSON writer's calls macros that pass
 * the caller's place (a stale handle's report names it). latch's own code
 * passes real pointers or handles it was given, for which no place is
 * needed, and defines the plain functions: it calls those.
 */
#undef latch_res_get_header
#undef latch_res_get_status
#undef latch_req_method
#undef latch_req_path
#undef latch_req_url
#undef latch_req_version_minor
#undef latch_req_id
#undef latch_req_aborted
#undef latch_req_secure
#undef latch_req_header
#undef latch_req_header_values
#undef latch_req_header_count
#undef latch_req_header_at
#undef latch_req_query
#undef latch_req_query_values
#undef latch_req_param
#undef latch_req_body
#undef latch_req_cookie
#undef latch_req_ip
#undef latch_req_res
#undef latch_req_json
#undef latch_req_cancel_reason
#undef latch_res_headers_sent
#undef latch_res_writable_ended
#undef latch_res_writable_finished
#undef latch_res_destroyed
#undef latch_res_req
#undef latch_json_object_begin
#undef latch_json_object_end
#undef latch_json_array_begin
#undef latch_json_array_end
#undef latch_json_key
#undef latch_json_string
#undef latch_json_string_n
#undef latch_json_int
#undef latch_json_uint
#undef latch_json_double
#undef latch_json_bool
#undef latch_json_null

#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <uv.h>

#define LATCH_CONTAINER_OF(ptr, type, member)                                  \
    ((type *)(void *)((char *)(ptr)-offsetof(type, member)))

/* Writes `v` in decimal at `p` (room for 20 digits), not terminated;
 * returns the end. By hand: it runs for every response's numbers, and
 * snprintf costs ten times as much. */
static inline char *latch__put_u64(char *p, uint64_t v)
{
    char tmp[20];
    int n = 0;

    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    while (n > 0)
        *p++ = tmp[--n];
    return p;
}

/* ------------------------------------------------------------------ */
/* buf.c: a growable byte buffer with a hard cap                        */
/* ------------------------------------------------------------------ */
typedef struct latch_buf {
    char *data;
    size_t len;
    size_t cap;
} latch_buf;

/* Makes room for `more` bytes beyond len, never growing past `limit`.
 * Returns 0, LATCH_ERR_LIMIT or LATCH_ERR_NOMEM (the buffer unchanged). */
int latch__buf_reserve(latch_buf *b, size_t more, size_t limit);
int latch__buf_append(latch_buf *b, const void *p, size_t n, size_t limit);
void latch__buf_dispose(latch_buf *b);

/* The JSON writer works on latch_buf; responses embed one (json.c). */
#include "json.h"

/* ------------------------------------------------------------------ */
/* Read buffers: reference counted so requests can keep their head      */
/* bytes (zero copy) while the connection reads on into a new buffer.   */
/* ------------------------------------------------------------------ */
typedef struct latch_rbuf {
    uint32_t refs;
    uint32_t cap;
    struct latch_rbuf *next_free;
    char data[];
} latch_rbuf;

/* ------------------------------------------------------------------ */
/* The app                                                              */
/* ------------------------------------------------------------------ */
typedef struct latch_layer latch_layer; /* app.c: middleware or route */
typedef struct latch_errlayer latch_errlayer;
typedef struct latch_frame latch_frame;
typedef struct latch_worker latch_worker;

#define LATCH_NCOUNTERS 64

/* Operational features on (app->ops), fixed before latch_run. */
enum { LATCH_OPS_METRICS = 1, LATCH_OPS_LOG = 2, LATCH_OPS_TRACE = 4 };

/* Proxied exchanges by upstream and outcome
 * (latch_upstream_requests_total): one row per upstream authority, made
 * on first use (at most LATCH_MAX_USTATS; later ones are not counted),
 * never moved or freed before the app, counted with relaxed adds. */
enum {
    LATCH_UP_OK = 0,    /* the whole answer went to the client */
    LATCH_UP_ERROR,     /* refused, reset or malformed before the head: 502 */
    LATCH_UP_TIMEOUT,   /* no answer in time: 504 */
    LATCH_UP_TRUNCATED, /* failed after the head: the client's response cut */
    LATCH_UP_ABORTED,   /* the client left, a timeout, shutdown, a refused
                           request body: the upstream request given up */
    LATCH_UP_NOUTCOMES,
};
#define LATCH_MAX_USTATS 64
typedef struct latch_ustat {
    char name[264]; /* the upstream's authority, "host:port" */
    _Atomic uint64_t n[LATCH_UP_NOUTCOMES];
} latch_ustat;

/*
 * A worker's block of counters and its access log buffer (metrics.c,
 * log.c). Made the first time its worker needs it, found again by worker
 * index by later runs, freed by latch_app_free. The counters are written
 * by that worker only and read by scrapes; the log buffer is filled by
 * the worker and taken by the writer thread, under log_mu.
 */
#define LATCH_NSTATUS 500 /* statuses 100..599, then one for the rest */
#define LATCH_NBUCKETS 12 /* latency histogram: 11 bounds, then +Inf */
#define LATCH_LOG_BUF (64 * 1024)
typedef struct latch_wops {
    struct latch_wops *next; /* immutable once on app->wops */
    int index;
    _Atomic uint64_t status[LATCH_NSTATUS + 1];
    _Atomic uint64_t bucket[LATCH_NBUCKETS]; /* not cumulative */
    _Atomic uint64_t dur_ns, bytes;
    pthread_mutex_t log_mu;
    char *log_buf; /* LATCH_LOG_BUF bytes, allocated with the first line */
    size_t log_len;
    bool log_kicked; /* the writer was woken for this buffer */
    _Atomic uint64_t log_dropped;
    long long log_sec; /* worker only: the second log_time shows */
    char log_time[40];
    size_t log_time_len;
} latch_wops;
#define LATCH_MAX_RIDS 16

/* Violations counted per offending site (diag.c). */
#define LATCH_NSITES 256
typedef struct latch_site_count {
    const char *file; /* NULL: free slot */
    int line;
    int code;
    uint64_t count;
} latch_site_count;

typedef struct latch_config {
    latch_parse_limits parse; /* parse.body: the largest body limit */
    uint64_t body;            /* LATCH_LIMIT_BODY, the app's own */
    uint32_t pipeline;
    uint64_t header_ms, body_ms, keepalive_ms, linger_ms, drain_ms;
    uint64_t request_ms; /* request timeout, 0: none */
    uint64_t output;     /* LATCH_LIMIT_OUTPUT: pending output bytes */
    int request_status;  /* its answer when nothing was sent (503) */
    uint64_t send_ms;    /* no write progress while output waits */
    uint64_t receive_ms; /* a whole request, head and body */
    uint64_t rate_grace_ms;
    uint64_t min_rate;       /* bytes/s after the grace; 0: off */
    uint64_t conn_buffer;    /* bytes a connection may hold before pausing */
    uint32_t max_conns;      /* per worker; 0: from RLIMIT_NOFILE */
    uint64_t handshake_ms;   /* a TLS handshake, from the connect */
    uint32_t max_handshakes; /* TLS handshakes in progress per worker */
} latch_config;

/* A listening address of the app (latch_listen, latch_listen_tls). */
#define LATCH_MAX_LISTENERS 8
typedef struct latch_listener {
    int fd;   /* bound by latch_listen*, given to worker 0; -1 after */
    int port; /* as bound (port 0 resolved) */
    struct sockaddr_storage addr;
    struct latch_tls_ctx *tls; /* NULL: plain HTTP (tls.c) */
} latch_listener;

struct latch_app {
    latch_config cfg;
    /* what conn.c calls to serve (app.c's, set by latch_run) */
    const struct latch_serve_ops *serve;
    latch_layer *layers, *layers_tail;
    latch_layer **by_id; /* layers by registration index */
    latch_layer *first_mw;
    uint32_t nlayers;
    struct latch_router *router; /* the routes as a tree (router.c) */
    latch_errlayer *errlayers, *errlayers_tail;
    latch_layer *limits, *limits_tail; /* latch_route_body_limit rules */
    struct latch_keep *keeps; /* what features registered (latch_static) */
    int nworkers;
    bool handle_signals;
    bool running;
    bool development; /* error pages show details (LATCH_ENV=development) */
    int trust_proxy;  /* hops of X-Forwarded-For to trust */
    bool streams;     /* a layer streams request bodies (a proxy) */
    /* listening addresses, in the order of the latch_listen* calls */
    latch_listener listeners[LATCH_MAX_LISTENERS];
    int nlisteners;
    uint64_t shake_seed; /* LATCH_SHAKE: 0 off */
    /* violations (diag.c) */
    int policy;
    void (*on_violation)(const latch_violation *v, void *data);
    void *on_violation_data;
    _Atomic uint64_t vcount_total;
    _Atomic uint64_t vcount[LATCH_NCOUNTERS]; /* by -7001 - code */
    pthread_mutex_t site_mu;
    latch_site_count sites[LATCH_NSITES];
    uint64_t sites_dropped; /* violations at sites beyond the table */
    /* operations (metrics.c, log.c) */
    uint8_t ops;              /* LATCH_OPS_* */
    pthread_mutex_t ops_mu;   /* adding to wops */
    latch_wops *_Atomic wops; /* one block per worker index */
    struct latch_alog *alog;  /* the access log's writer, or NULL */
    uint64_t alog_dropped;    /* lines dropped by writers stopped */
    char *src_root;           /* stripped from report paths (diag.c) */
    size_t src_root_len;      /* 0: strip nothing */
    /* workers (server.c) */
    latch_worker *workers;
    int nworkers_running;
    _Atomic(latch_worker *) live; /* set once every worker is ready */
    /* The workers of the last latch_run, kept until the next one or
     * latch_app_free: objects a program still holds point to them. */
    latch_worker *spent;
    int nspent;
    /* Connection counters (latch_app_counter), summed over workers. */
    _Atomic uint64_t counters[LATCH_COUNTER_COUNT];
    pthread_mutex_t live_mu; /* latch_stop vs. the end of latch_run */
    atomic_bool stopping;
    /* Server-Sent Events and pub/sub (sse.c, pubsub.c): settings, and the
     * hub, made on first use (latch__hub_get) and freed with the app. */
    uint64_t sse_heartbeat_ms; /* 0: off; set by latch_app_new: 15000 */
    int channel_history;       /* events kept per channel for replay */
    size_t slow_max_bytes;     /* per subscriber, queued */
    /* latch_upstream_requests_total (metrics.c): rows [0, nustats),
     * published with a release store; added to under ustat_mu. */
    latch_ustat *ustats;
    _Atomic int nustats;
    pthread_mutex_t ustat_mu;
    int slow_policy; /* LATCH_SLOW_* */
    struct latch_hub *_Atomic hub;
};

/* ------------------------------------------------------------------ */
/* A worker: one thread, one loop, one listener                        */
/* ------------------------------------------------------------------ */
typedef struct latch_conn latch_conn;

/* Connections waiting on one kind of timeout form a list ordered by
 * deadline, because every entry of a list has the same duration. */
typedef struct latch_tlist {
    latch_conn *head, *tail;
    uint32_t n; /* connections on the list */
} latch_tlist;

enum {
    LATCH_T_NONE = 0,
    LATCH_T_HEADER,
    LATCH_T_BODY,
    LATCH_T_IDLE,
    LATCH_T_LINGER,
    LATCH_T_DRAIN,
    LATCH_T_HANDSHAKE, /* TLS: from the connect to the handshake's end */
    LATCH_T_COUNT
};

/*
 * Features that keep state per worker (pubsub.c: its inbox, heartbeat
 * timer and subscribers) hear of the worker's two last moments through a
 * hook they register on the worker's thread, since server.c names no
 * feature: drain when the worker starts draining (a chance to end
 * long-lived responses cleanly), finish when it has no connection left
 * (close the handles that keep the loop alive). Each op runs once, on
 * the worker's thread; finish unlinks the hook first, so it may free it.
 */
typedef struct latch_whook latch_whook;
struct latch_whook {
    latch_whook *next;
    void (*drain)(latch_whook *h, latch_worker *w);
    void (*finish)(latch_whook *h, latch_worker *w);
};
/* Registers h on w (on w's thread). */
void latch__worker_hook(latch_worker *w, latch_whook *h);

/* One listening socket of a worker (server.c). */
typedef struct latch_wlistener {
    uv_poll_t poll; /* readable: accept */
    latch_worker *w;
    int fd;
    struct latch_tls_ctx *tls; /* the app listener's; NULL: plain */
} latch_wlistener;

/* A free list threaded through the blocks it holds (a listed block's
 * first word links the next), with its length. */
typedef struct latch_freelist {
    void *head;
    uint32_t n;
} latch_freelist;

struct latch_worker {
    uv_loop_t loop;
    latch_app *app;
    int index;
    pthread_t thread;
    latch_wlistener ls[LATCH_MAX_LISTENERS]; /* one per app listener */
    int nls;
    uv_timer_t accept_retry; /* accepting paused: no descriptor left */
    int reserve_fd;          /* spent to refuse a connection under EMFILE */
    uint32_t max_conns;      /* the connection cap of this worker */
    uv_async_t wake;         /* latch_stop, latch_res_post */
    uv_prepare_t flusher;    /* flushes dirty connections once per loop turn */
    uv_timer_t ticker;       /* Date header, once per second */
    uv_timer_t sweeper;      /* connection timeouts */
    uv_timer_t hold_timer;   /* the drain's wait for held responses */
    uv_signal_t sigint, sigterm, sighup; /* sighup: TLS apps only */
    bool has_sighup;
    bool has_signals;
    bool draining;
    /* Responses the program holds (a latch_res_retain not released yet),
     * counted on the loop by res.c. A draining worker that has no
     * connection left waits for them, up to the drain time, before it
     * finishes: their holders' posts and releases still reach the loop. */
    uint32_t held;
    bool hold_wait;      /* drained of connections, waiting for held */
    uint64_t drain_from; /* loop time the drain began */
    /* The Date header line, "Date: ...\r\n", redone once per second. */
    char date_line[48];
    size_t date_len;
    /* Connections that have output to flush at the next loop turn. */
    latch_conn *dirty;
    /* All connections, and those with a pending timeout, by kind. */
    latch_conn *conns;
    _Atomic uint32_t nconns; /* read by /metrics scrapes */
    latch_tlist tl[LATCH_T_COUNT];
    latch_conn *s_head, *s_tail; /* connections waiting to write */
    /* Free lists, so the hot path does not call malloc. */
    latch_rbuf *free_rbufs;
    uint32_t nfree_rbufs;
    latch_rbuf *free_first; /* connections' first (small) read buffers */
    uint32_t nfree_first;
    /* Connections' output buffers while they have nothing to send,
     * parsers while no message is read, and write-wait parts while the
     * socket takes everything (conn.c's intrusive lists). */
    latch_freelist free_outs, free_parsers, free_waits;
    latch_res *free_res;
    uint32_t nfree_res;
    struct latch_res_cold *free_cold; /* responses' cold parts (res.c) */
    uint32_t nfree_cold;
    /* Long-lived responses' packed headers and moves, one copy of each
     * (res.c's trim; intern.h). */
    latch_interns interns;
    uint64_t next_req_id;
    /* Calls posted from other threads (latch_res_post). */
    pthread_mutex_t post_mu;
    struct latch_post *posts;
    bool gone; /* under post_mu: the loop ended, posts are refused */
    /* Accept trouble since the last log line (at most one a second). */
    uint64_t accept_log_at;
    uint64_t log_errors, log_dropped, log_shed;
    int log_errno;
    uint64_t drain_deadline;
    uint64_t shake_state; /* xorshift state for LATCH_SHAKE delays */
    latch_whook *hooks;   /* features' drain and finish (above) */
    /* Set by server.c: conn.c calls it when the worker, draining, has no
     * connection left (the worker then finishes). */
    void (*drained)(latch_worker *w);
    /* "Connection: keep-alive\r\nKeep-Alive: timeout=N\r\n" */
    char ka_line[64];
    size_t ka_len;
    latch_wops *ops; /* metrics.c: NULL until first needed */
};

/* A connection: struct latch_conn is conn.c's own (conn.h); every other
 * module holds it as an opaque pointer and reaches it through the
 * exchange table (latch_exchange_ops). */

/* ------------------------------------------------------------------ */
/* A request and its response: one pooled, reference-counted object    */
/* ------------------------------------------------------------------ */
/* Where the chain is with a response (latch_res.dispatched). */
enum {
    LATCH_DISPATCH_NONE = 0, /* not dispatched yet */
    LATCH_DISPATCH_RUNNING,  /* the chain is running or waiting */
    LATCH_DISPATCH_DONE,     /* the chain is done with it */
};

/* latch_req_on_cancel's callbacks per request (latch.h says 8). */
#define LATCH_MAX_CANCEL_CBS 8
/* Output a response may have waiting before a write asks its caller to
 * wait for on_drain (Node's highWaterMark). */
#define LATCH_HIGH_WATER ((size_t)64 * 1024)
/* The request timeout's answer when none is configured. */
#define LATCH_TIMEOUT_STATUS_DEFAULT 503

enum latch_res_state {
    LATCH_RS_FRESH = 0,
    LATCH_RS_HEADERS_SENT,
    LATCH_RS_ENDED,
    LATCH_RS_FINISHED,
    LATCH_RS_DESTROYED,
};

typedef struct latch_hdr {
    uint32_t name_off, value_off; /* into res->hbuf, NUL-terminated */
    uint16_t name_len;
    uint16_t removed;
    uint32_t value_len;
} latch_hdr;

typedef struct latch_param {
    const char *name;
    const char *value;
} latch_param;

struct latch_req {
    const char *head; /* the message's first byte (in rb) */
    latch_rbuf *rb;   /* keeps head alive */
    const char *method;
    const char *url;
    const char *path;    /* decoded, no query */
    const char *query;   /* raw query (after '?'), NULL if none */
    latch_field *fields; /* spans into head; NUL-terminated in place */
    uint32_t nfields;
    uint8_t version_minor;
    bool is_head;
    bool keep_alive;
    bool aborted;
    bool secure;       /* arrived over TLS */
    bool fields_moved; /* fields live in rb, not in the pooled array */
    /* A streamed body (below): in what would be padding. */
    bool body_streamed;     /* dispatched before its body arrived */
    bool body_open;         /* that body is still arriving */
    bool sink_paused;       /* the sink returned 0: wait for its resume */
    bool expect_continue;   /* the client waits for 100 Continue (the proxy
                               relays the upstream's) */
    bool continue_owed;     /* relayed but not yet sent: earlier responses
                               are still going out */
    atomic_bool arena_busy; /* taking bytes from `arena`: any thread
                               (req.c) */
    uint64_t id;
    latch_buf body;
    struct latch_arena_blk *arena; /* decoded strings; never move */
    size_t arena_left;
    /* The route's parameters: the response's cold part, from the first
     * one stored (NULL before); the pointer never changes after. */
    latch_param *params;
    uint32_t nparams;
    const char *ip; /* latch_req_ip's answer, once computed */
    json_t *json;   /* latch_json_body's result */
    /* A streamed body (conn.c): the request was dispatched when its head
     * arrived, and its body goes to `sink` as it arrives, never into
     * `body` (see latch__res_body_sink). */
    struct latch_body_sink *sink;
};

/* Sealing and offending places, and the chain's state (app.c). */
typedef struct latch_seal {
    const char *call; /* API function or framework event */
    latch_site at;
} latch_seal;

struct latch_res {
    latch_req req;
    uint64_t handle; /* what users hold for this request (res.c) */
    uint32_t slot;   /* its slot in the handle table, or UINT32_MAX */
    int cut_code;    /* why latch destroyed it (LATCH_ERR_LIMIT), or 0 */
    struct latch_slot *slotp; /* that slot */
    uint32_t refs;            /* every reference, latch's own and the user's */
    uint32_t urefs; /* of which taken by latch_res_retain (user code) */
    uint8_t state;
    uint8_t dispatched; /* LATCH_DISPATCH_*: the chain's progress (app.c) */
    bool detached;      /* no longer attached to a connection */
    bool chunked;
    bool has_body;        /* false for HEAD, 1xx, 204, 304 */
    bool keep_alive;      /* the connection stays open after this one */
    bool has_cl;          /* a Content-Length header was set */
    bool close_delimited; /* HTTP/1.0 without length: body ends at close */
    bool end_short;       /* ended short of its Content-Length: close */
    bool sending;         /* a sender frames the whole body (res.c) */
    bool hold;            /* head built by write_head: not sent yet */
    bool end_called;      /* end ran to completion (writable_ended) */
    int status;
    uint64_t content_length; /* declared, when has_cl */
    uint64_t body_sent;      /* body bytes accepted so far */
    uint64_t end_seq;        /* conn->out_total after its last byte */
    latch_conn *conn;        /* NULL once detached (opaque to res.c) */
    const struct latch_exchange_ops *ex; /* its protocol (internal.h) */
    latch_worker *w;
    uint64_t t_start;  /* uv_hrtime at dispatch, when app->ops; else 0 */
    latch_res *q_next; /* conn queue, or worker free list */
    /* Headers before they are sent: entries over one byte buffer. */
    latch_buf hbuf;
    latch_hdr *hdrs;
    uint32_t nhdrs, hdrs_cap;
    /* The store was packed into one exact block (latch__res_trim). */
    bool hdrs_packed;
    /* latch_res_json_begin's writer is open (in the cold part). */
    bool json_open;
    /* LATCH_SOLE_*: a producer of latch's own (a file, the proxy) alone
     * writes this response's body; any other body call is refused. */
    uint8_t sole;
    bool closed_fired, want_drain; /* on_close ran; on_drain is owed */
    bool trim_out;    /* latch__res_trim_output, until conn.c did */
    bool in_error;    /* the chain runs the error handlers */
    bool attach_over; /* the attachments' end ops ran for the end */
    /* Output produced while an earlier response is still in the queue. */
    latch_buf pending;
    /* What sealed it: the call that sent its head, and the one that ended
     * it (or the event that cut it), NULL until then. Their places are in
     * the cold part (latch_chainst; latch__res_seal reads a whole seal). */
    const char *headers_call, *ended_call;
    /* Callbacks: latch_res_on_finish/_close/_drain's, NULL until one is
     * set (most responses set none; an event stream waits without). */
    struct latch_res_cbs *cbs;
    /* The chain (chain.c); its layers, error and places are in the cold
     * part (latch_chainst). */
    uint8_t nrids, ri; /* cold->rids: the routes matching the path */
    /* (The cancellation signal's, beside them: no padding.) */
    uint8_t cancel_reason; /* LATCH_CANCEL_*, once the request is cancelled */
    uint8_t ncancel;       /* cancel_cbs used (in the cold part) */
    /* Flags of one byte (a waiting stream keeps the response: its size is
     * per subscriber). */
    bool rlinear : 1;       /* more matched than rids holds: match layer by
                               layer */
    bool cancel_fired : 1;  /* the signal went out (attachments, callbacks);
                               the request timeout marks the reason first
                               and fires after its error handlers ran */
    bool pending_next : 1;  /* a handler returned LATCH_PENDING */
    bool chain_ref : 1;     /* the chain holds a reference */
    bool chain_dropped : 1; /* the response closed while the chain waited */
    bool eh_complete : 1;   /* the response was complete when the error
                               handler running or pending was called: its
                               passing the error on is delegation */
    /*
     * Who may move the chain (app.c). Every handler call gets a frame id
     * (1, 2, ... per request); latch's callbacks (timers, work, joins,
     * drain/finish/close, cancellation) remember the frame that registered
     * them and run with it as `ambient`, so a latch_next or latch_fail is
     * attributed to a handler call wherever it is made. Only the frame
     * that returned LATCH_PENDING may resume the chain; `moves` records,
     * for the last frames, what each did to move it (for the report).
     */
    uint16_t nframes;       /* frame ids handed out so far */
    uint16_t running;       /* the id of the handler call running, or 0 */
    uint16_t ambient;       /* frame of the latch callback running, or 0 */
    uint16_t pending_frame; /* the frame that returned LATCH_PENDING */
    uint16_t dropped_frame; /* the pending frame whose chain was dropped */
    /* What is tied to this response (async.c's timers, jobs and joins;
     * later pipes, upstreams, subscriptions): see latch_attach below. */
    struct latch_attach *attach;
    struct latch_frame *frame; /* the handler call running (app.c) */
    /* Who dispatched it (the chain, app.c), told of what it must know;
     * NULL before dispatch. */
    const struct latch_res_owner_ops *owner;
    /* What a plain request uses only while it is served (below): NULL
     * until first needed. */
    struct latch_res_cold *cold;
    /* The cold part's chain state and moves, packed, once a long-lived
     * response gave the rest back (latch__res_trim); NULL otherwise. */
    struct latch_moves *moves;
};

/*
 * The chain's state (chain.c) and the places of the response's seals,
 * in the response's cold part: live while the chain runs, and read by
 * reports; a stream that waits long after its chain is done keeps them
 * only packed (struct latch_moves), for a late report or a late error.
 * Zeroed when a cold part is taken for a new request.
 */
struct latch_chainst {
    latch_layer *layer;     /* next layer to try */
    latch_errlayer *elayer; /* next error layer to try */
    latch_error err;        /* the error the error handlers run with */
    latch_seal returned;    /* the last handler's return value, and where */
    latch_seal resumed;     /* what last resumed a pending chain */
    /* Where the response's seals were made (res->headers_call and
     * ended_call say what made them). */
    latch_site headers_site, ended_site;
};

/* A response's callbacks (res.c), by LATCH_CB_*: each with its data and
 * the handler call that registered it. Kept with the pooled object once
 * made. */
enum { LATCH_CB_FINISH, LATCH_CB_CLOSE, LATCH_CB_DRAIN };
struct latch_res_cbs {
    latch_res_cb cb[3];
    void *data[3];
    uint16_t frame[3];
};
static inline bool latch__res_has_cb(const latch_res *r, int kind)
{
    return r->cbs != NULL && r->cbs->cb[kind] != NULL;
}

/* What a long-lived response keeps of its cold part (latch__res_trim):
 * the chain's state and the frames that moved the chain, in one exact
 * block, shared by the streams whose bytes are equal (intern.h). */
struct latch_moves {
    struct latch_chainst cs;
    uint32_t n;
    struct {
        uint16_t id;
        latch_seal seal;
    } m[];
};

/*
 * The cold part of a response: what a request uses while it is served
 * but a stream that waits for events does not (issue 15: thousands of
 * streams wait at once). Taken from the worker's pool the first time one
 * of its fields is needed (latch__res_cold, on the loop: every request
 * the chain runs records its handlers' moves), and given back when the
 * response is recycled, or earlier by a long-lived response whose chain
 * is done and whose cold part holds nothing live but the chain's state
 * and the moves (latch__res_trim): those are packed into res->moves, so a
 * late report still names them, and a later use takes a cold part again
 * with them restored. Whatever it holds stays valid as long as the response
 * does: a parameter read late from another thread, a cancellation callback, the
 * places a late report names. The counts and flags that say whether it
 * holds anything else (req.nparams, ncancel, json_open) stay in the
 * response, so a reader that finds none never needs it; a latch_fail
 * message (err_msg) keeps the cold part.
 */
struct latch_res_cold {
    struct latch_res_cold *next; /* the worker's free list */
    latch_res *res;              /* whose it is (the JSON writer's owner) */
    latch_param params[LATCH__ROUTER_MAX_PARAMS]; /* req.params */
    uint32_t rids[LATCH_MAX_RIDS]; /* ids of the routes matching the path,
                                      in id order (app.c's dispatch) */
    struct {
        latch_cancel_cb cb;
        void *data;
        uint16_t frame; /* the handler call that registered it */
    } cancel_cbs[LATCH_MAX_CANCEL_CBS];
    /* What each of the last eight handler calls did to move the chain
     * (app.c, for the report of a second move). */
    uint16_t move_ids[8];
    latch_seal moves[8];
    struct latch_chainst cs; /* the chain's state (above) */
    char err_msg[128];       /* latch_fail's message */
    /* latch_res_json_begin's writer and the body it writes. */
    latch_json json;
    latch_buf jbuf;
};
/* res's cold part, taken from the pool the first time; NULL when out of
 * memory. On the response's loop only. */
struct latch_res_cold *latch__res_cold_take(latch_res *res);
static inline struct latch_res_cold *latch__res_cold(latch_res *res)
{
    return res->cold != NULL ? res->cold : latch__res_cold_take(res);
}
/* The chain's state and the seals' places to read: the cold part's, the
 * packed copy a long-lived response keeps, or none (all zero). On the
 * response's loop: either may be given back there at any time. */
static inline const struct latch_chainst *latch__res_marks(const latch_res *r)
{
    static const struct latch_chainst none;

    if (r->cold != NULL)
        return &r->cold->cs;
    return r->moves != NULL ? &r->moves->cs : &none;
}
/* A seal as it stands (what made it, and where), and setting one: the
 * call always, its place in the cold part (out of memory the place alone
 * is lost, a report then names none). On the response's loop. */
enum { LATCH_SEAL_HEADERS, LATCH_SEAL_ENDED };
static inline latch_seal latch__res_seal(const latch_res *res, int which)
{
    const struct latch_chainst *m = latch__res_marks(res);

    if (which == LATCH_SEAL_HEADERS)
        return (latch_seal){res->headers_call, m->headers_site};
    return (latch_seal){res->ended_call, m->ended_site};
}
void latch__res_seal_set(latch_res *res, int which, const char *call,
                         latch_site at);

/* ------------------------------------------------------------------ */
/* Attachments: what is tied to one response (res.c releases them)      */
/* ------------------------------------------------------------------ */
/*
 * Anything a module ties to one response (async.c's timers, thread-pool
 * jobs and joins; sse.c's event stream and subscriptions; a pipe's
 * source, a proxy's upstream later) is an attachment: a latch_attach
 * embedded in the module's own state, with a table of operations. res.c
 * names no such module: it walks the response's list at fixed moments,
 * and the module does the rest.
 *
 * end(a, res, reason) tells an attachment of two events, on the
 * response's loop, each exactly once per attachment that exists when it
 * happens: the response is over (reached FINISHED or DESTROYED; reason
 * LATCH_CANCEL_NONE), and the request's cancellation signal fired (reason
 * LATCH_CANCEL_*; at most once, and never on a FINISHED response). They
 * come in either order: a timeout cancels an ENDED response that finishes
 * later; a lost connection destroys the response, then cancels it; a
 * response destroyed by its handler may be cancelled much later, when
 * its connection goes. An attachment made after an event gets it at
 * once. On the first, end stops whatever would act on the response later
 * (timers disarmed, an upstream aborted); on the cancellation it also
 * abandons work done for the request (queued jobs cancelled, joins
 * settled with LATCH_ERR_CANCELLED, running the user's completion). It
 * must neither free `a` nor unlink it.
 *
 * drain(a, res), when not NULL, is called on the loop each time the
 * pending output of the response fell below the high-water mark after a
 * write returned 0 (or after latch__res_want_drain), while the response
 * is not over: a producer attached to the response (stream.c's pipe)
 * writes on from there. The response is held across the call.
 *
 * recycle(a, res) is called exactly once per attachment, when the
 * response's last reference went and the object goes back to its pool;
 * the list is detached first, so recycle frees `a` and whatever end left
 * (a response recycled before it was dispatched skips end). Anything
 * that would still act on the response holds a latch reference
 * (latch__res_ref) until it is done, so at recycle nothing is running.
 */
typedef struct latch_attach latch_attach;
typedef struct latch_attach_ops {
    void (*end)(latch_attach *a, latch_res *res, int reason);
    void (*recycle)(latch_attach *a, latch_res *res);
    void (*drain)(latch_attach *a, latch_res *res); /* optional */
    /* optional: the call that gave the response to this attachment, while
     * it answers the response (a live pipe), else NULL */
    const struct latch_seal *(*claim)(const latch_attach *a);
} latch_attach_ops;

/*
 * res->sole. A producer of latch's own (file.c, proxy.c) makes the
 * response HELD once its pipe is attached; it brackets its own body calls
 * (latch_res_write / latch_res_end) with latch__sole_enter / _leave, so
 * that only a body call from anyone else meets HELD in the gate: refused
 * (ERR_HTTP_HEADERS_SENT, the producer's call named as the seal), as
 * Express's res.sendFile() followed by a forgotten res.send(). Header and
 * status calls stay allowed; a cancelled request (the timeout's error
 * handlers) is let through; a call that sends the head (write_head,
 * flush_headers, latch_sse_start) is refused too. A user's pipe
 * (stream.c) makes it PIPE: only a whole answer beside it (send, json,
 * redirect, send_status) is refused, since its producer writes with the
 * ordinary calls from anywhere; inside its pull (PULLING) nothing is.
 * The pipe's end and a producer failure (latch_res_pipe_fail) clear it.
 */
enum {
    LATCH_SOLE_NONE = 0,
    LATCH_SOLE_HELD = 1,
    LATCH_SOLE_WRITING = 2,
    LATCH_SOLE_PIPE = 3,
    LATCH_SOLE_PULLING = 4,
};
static inline void latch__sole_enter(latch_res *res)
{
    if (res->sole == LATCH_SOLE_HELD)
        res->sole = LATCH_SOLE_WRITING;
}
static inline void latch__sole_leave(latch_res *res)
{
    if (res->sole == LATCH_SOLE_WRITING)
        res->sole = LATCH_SOLE_HELD;
}
struct latch_attach {
    latch_attach *next; /* the response's list (res.c) */
    const latch_attach_ops *ops;
};

/* ------------------------------------------------------------------ */
/* Serve: what a protocol asks of whoever serves requests               */
/* ------------------------------------------------------------------ */
/*
 * latch_run installs app.c's table in app->serve before the workers
 * start; conn.c calls it and names no part of the chain. Both ops run on
 * the worker's thread.
 *
 * body_limit(app, req): a head with a body is in; the most body bytes
 * this request may send (a route's latch_route_body_limit, else the
 * app's LATCH_LIMIT_BODY).
 *
 * dispatch(res): the request is complete and queued on its connection;
 * the callee arms the request timeout and runs the chain (the protocol
 * learns of neither).
 *
 * body_streams(app, req): a head with a body is in; whether the request
 * is dispatched now and its body streamed to a sink (latch__res_body_sink)
 * rather than buffered: under the prefix of a latch_use_proxy.
 */
typedef struct latch_serve_ops {
    uint64_t (*body_limit)(const latch_app *app, const latch_req *req);
    void (*dispatch)(latch_res *res);
    bool (*body_streams)(const latch_app *app, const latch_req *req);
} latch_serve_ops;

/* ------------------------------------------------------------------ */
/* The owner: what the response tells the one who dispatched it         */
/* ------------------------------------------------------------------ */
/*
 * The chain (app.c) installs its table in res->owner when it dispatches a
 * request; res.c calls it and names no part of the chain. Both ops run on
 * the response's loop and may drop references (which may recycle res:
 * callers hold one across when they touch res after).
 *
 * unreferenced(res): latch let go of one of its references, or a waiting
 * drain callback was cleared, and references are left. The owner decides
 * whether anyone can still answer (a response nobody can answer gets its
 * ERR_NO_RESPONSE report and a 500).
 *
 * closed(res): on_close ran (the response finished or was destroyed); the
 * owner lets go of what it kept waiting for an answer.
 *
 * observe(res, finished): the response closes (finished: its last byte
 * went to the OS; else it was cut), called before it lets go of its
 * connection and only when res->t_start is set (metrics, the access log
 * or the trace are on); the owner counts, logs and traces it.
 *
 * raise(res, code, status, call, at): a feature's or a send helper's
 * failure (`call` at `at`) on a response that sent nothing yet: the
 * owner's error handlers answer it with err code and status. The caller
 * holds a reference.
 *
 * timeout(res, status): the request timeout fired on a response that sent
 * nothing; the owner answers it (error handlers with LATCH_ERR_CANCELLED
 * and `status`). The caller holds a reference.
 *
 * Features and res.c reach raise and timeout through latch__res_raise and
 * latch__res_timed_out, which answer `status` themselves when no owner is
 * installed (a response not dispatched by the chain: unit tests).
 */
typedef struct latch_res_owner_ops {
    void (*unreferenced)(latch_res *res);
    void (*closed)(latch_res *res);
    void (*observe)(latch_res *res, bool finished);
    void (*raise)(latch_res *res, int code, int status, const char *call,
                  latch_site at);
    void (*timeout)(latch_res *res, int status);
} latch_res_owner_ops;

/* send.c: the owner's raise and timeout (above), or, without an owner, a
 * plain answer with `status` (latch_res_send_status). */
void latch__res_raise(latch_res *res, int code, int status, const char *call,
                      latch_site at);
void latch__res_timed_out(latch_res *res, int status);
/* Body bytes that went on the wire (none for HEAD, 204 and 304); for the
 * metrics and the access log. */
uint64_t latch__res_body_bytes(const latch_res *res);

/* ------------------------------------------------------------------ */
/* The exchange: what a response needs from the protocol that carries it */
/* ------------------------------------------------------------------ */
/*
 * The protocol (conn.c for HTTP/1.1; a stream of h2.c later) sets
 * res->ex when it allocates the response (latch__res_alloc); res.c writes
 * and ends through it and reads no field of the protocol's objects. res.c
 * calls the ops only while res->conn is not NULL (the response is still
 * carried), except release_input. All run on the response's loop.
 *
 * sink(res): the buffer the response's next bytes go to (the wire's when
 *   it may write now, else res->pending, kept in order); res.c reserves
 *   and appends, then calls wrote with the count.
 * wrote(res, b, n): n bytes were appended to b, the buffer sink gave.
 * unhold(res): a head held by write_head (res->hold) may go now, with
 *   what was written after it.
 * make_last(res): the response decided the connection ends with it (no
 *   keep-alive): no later request is read or answered.
 * may_keep_alive(res): whether the connection may stay open after res as
 *   far as the protocol is concerned (it is not already the last).
 * ended(res): the response's last byte was appended: later ones may
 *   write. The protocol finishes it (latch__res_finished) once the OS took
 *   the bytes, or detaches it (latch__res_detach) if it cannot.
 * cut(res, event, reason): destroy it on the wire: what it had not
 *   written is dropped, the responses after it are detached, and the
 *   connection closes after those before it; res is detached with event
 *   and reason (now or once those before it went out).
 * backlog(res): bytes of the connection's output not yet taken by the OS.
 * on_wire(res): for an ENDED response, whether its bytes count as handed
 *   to the socket without waiting (latch_res_writable_finished).
 * want_flush(res): a drain callback waits: call latch__res_check_drain at
 *   the next flush.
 * release_input(res): the request's bytes (res->req.rb) are no longer
 *   needed; called when the response is recycled, carried or not.
 * peer(res, ss): the address of the client the request came from, in ss;
 *   0, or a negative error (libuv's).
 * can_sendfile(res), sendfile(res, fd, off, len, cb, data): a file body
 *   put on the wire by the protocol without a copy (conn.c's
 *   h1_can_sendfile and h1_sendfile say how); both
 *   NULL for a protocol that cannot, and res.c then writes the bytes.
 * body_sink, body_resume, body_stop, send_continue: a streamed request
 *   body and its 100 Continue (latch__res_body_sink and the others above
 *   say what each does); NULL for a protocol that never streams one.
 */
/*
 * Streamed request bodies (the protocol's, through the exchange's body
 * ops below; res.c's latch__res_body_* reach them). A request whose head
 * matches a streaming rule of the app (latch__app_body_streams: a
 * latch_use_proxy prefix) and that has a body is dispatched as soon as its head
 * is complete; its body is then handed to the sink the handler attaches, piece
 * by piece as it arrives, with backpressure: while no sink is attached, or the
 * sink returned 0, the connection reads nothing more. The body limit in force
 * for the request (route rule, else LATCH_LIMIT_BODY) still applies, and so
 * do the body, receive and minimum-rate deadlines, without the time reading
 * waited for the sink. Once the
 * response ended, or the sink was stopped, the rest of the body is read and
 * dropped, and the connection closes after the response (a head built while the
 * body still arrives says Connection: close).
 */
typedef struct latch_body_sink latch_body_sink;
struct latch_body_sink { /* embedded in the consumer's own state */
    /* n decoded body bytes (never chunk framing): 1 more, 0 pause until
     * latch__res_body_resume. */
    int (*data)(latch_body_sink *self, const char *p, size_t n);
    /* At most once per attached sink, never after it was stopped: 0 when
     * the body is complete, or why it will never be (LATCH_ERR_LIMIT;
     * LATCH_ERR_HTTP, a malformed body; UV_ETIMEDOUT, the body timeout);
     * then the connection answers or cuts the response itself. A
     * connection that closes calls none: its response's end (a pipe's
     * done) is where the consumer stops its sink. */
    void (*end)(latch_body_sink *self, int status);
};
/* Attaches the sink of a streamed body that is still open: 0, or
 * LATCH_ERR_STATE (not streamed, already complete, a sink there, no
 * longer carried). Body bytes already read are handed over from the
 * loop, never from inside this call. */
int latch__res_body_sink(latch_res *res, latch_body_sink *sink);
/* The paused sink takes more (from the loop). */
void latch__res_body_resume(latch_res *res);
/* Detaches the sink (no callback after this); the rest of the body is
 * dropped. No sink attached: no-op. */
void latch__res_body_stop(latch_res *res);
/* The upstream said 100 Continue: the client gets one, in order with the
 * responses before it, when it asked for it and nothing was sent. */
void latch__res_continue(latch_res *res);

typedef void (*latch_sendfile_cb)(latch_res *res, int status, void *data);
typedef struct latch_exchange_ops {
    latch_buf *(*sink)(latch_res *res);
    void (*wrote)(latch_res *res, latch_buf *b, size_t n);
    void (*unhold)(latch_res *res);
    void (*make_last)(latch_res *res);
    bool (*may_keep_alive)(const latch_res *res);
    void (*ended)(latch_res *res);
    void (*cut)(latch_res *res, const char *event, int reason);
    size_t (*backlog)(const latch_res *res);
    bool (*on_wire)(const latch_res *res);
    void (*want_flush)(latch_res *res);
    void (*release_input)(latch_res *res);
    int (*peer)(const latch_res *res, struct sockaddr_storage *ss);
    bool (*can_sendfile)(const latch_res *res);
    int (*sendfile)(latch_res *res, int fd, uint64_t off, uint64_t len,
                    latch_sendfile_cb cb, void *data);
    int (*body_sink)(latch_res *res, latch_body_sink *sink);
    void (*body_resume)(latch_res *res);
    void (*body_stop)(latch_res *res);
    void (*send_continue)(latch_res *res);
} latch_exchange_ops;

/* Ties `a` (ops set by the caller, memory owned by the caller until its
 * recycle op runs) to `res`. On the response's loop. */
void latch__res_attach(latch_res *res, latch_attach *a);
/* True once the attachments heard that the response is over or its
 * request cancelled: a new attachment would get its end at once. */
static inline bool latch__res_attach_done(const latch_res *res)
{
    return res->attach_over || res->cancel_fired;
}
/* The first attachment of `res` with these ops, or NULL. */
latch_attach *latch__res_attached(const latch_res *res,
                                  const latch_attach_ops *ops);
/* Pending output of the response's connection not yet taken by the OS
 * (0 once detached). */
size_t latch__res_backlog(const latch_res *res);
/* The client's address through the exchange: 0, or LATCH_ERR_STATE once
 * the response is no longer carried (or its protocol cannot say). Inline:
 * req.c asks it too, and req.c and res.c name no function of each other. */
static inline int latch__res_peer(const latch_res *res,
                                  struct sockaddr_storage *ss)
{
    if (res->conn == NULL || res->ex->peer == NULL ||
        res->ex->peer(res, ss) != 0)
        return LATCH_ERR_STATE;
    return 0;
}

/* ------------------------------------------------------------------ */
/* Handles: what users hold instead of the pooled object (res.c)        */
/* ------------------------------------------------------------------ */
/*
 * A latch_res * or latch_req * given to user code is never the object's
 * address: it is a handle, bit 0 set, bit 1 set for a request, bits 2..17
 * the handler call it was given to (its frame id, app.c; 0: none), bits
 * 18..39 a slot of a process-wide table, bits 40..63 the slot's
 * generation. The frame is what attributes a latch_next made through the
 * handle, wherever it runs (a thread's latch_res_post included). The
 * generation changes when the object goes back to its pool, so a handle
 * kept without a reference can never reach the next request served by the
 * same object: every public entry point translates its argument with
 * latch__res_in, which refuses and reports a stale handle. Slots are never
 * freed while the process runs (a stale handle is always safe to decode),
 * and a slot whose generation would wrap is retired, never reused.
 * latch's own code passes real pointers (bit 0 clear), which the entry
 * points take as they are.
 */
typedef struct latch_slot {
    _Atomic uint32_t gen; /* 0: retired or free */
    uint32_t next_free;   /* free list: index + 1 */
    _Atomic(latch_res *) obj;
    latch_app *_Atomic app;   /* for the report of a stale handle */
    _Atomic uint64_t last_id; /* the request of the previous generation */
} latch_slot;

#define LATCH_SLAB_BITS 12
#define LATCH_SLOT_BITS 22
#define LATCH_SLABS ((size_t)1 << (LATCH_SLOT_BITS - LATCH_SLAB_BITS))
#define LATCH_GEN_MAX 0xffffffu /* 24 bits */
#define LATCH_H_SLOT(v) ((uint32_t)((v) >> 18) & ((1u << LATCH_SLOT_BITS) - 1))
#define LATCH_H_GEN(v) ((uint32_t)((v) >> 40))
extern latch_slot *_Atomic latch__slabs[LATCH_SLABS];

/* handle.c: reports a stale or invalid handle; returns NULL. */
latch_res *latch__res_stale(uintptr_t v, const char *call,
                            const latch_site *at);
/* handle.c: the slot table. take: a free slot (UINT32_MAX when out of
 * memory or slots; slabs are kept for the process's life); give_back: the
 * slot is free again; at: the slot of an index taken. Any thread. */
uint32_t latch__rslot_take(void);
void latch__rslot_give_back(uint32_t idx);
latch_slot *latch__rslot_at(uint32_t idx);
/* handle.c: an app's run is over for good (server.c: the next latch_run
 * frees the workers ws[0..n) of the last one; latch_app_free frees the
 * app). The slots of responses that still point to those workers are
 * retired, and with app_gone every slot forgets the app. */
void latch__rslot_run_over(const latch_app *app, const latch_worker *ws, int n,
                           bool app_gone);
/* The site of calls that have none (plain functions). */
static const latch_site latch__no_site = {NULL, 0, NULL};

/* The object behind what a user passed: a live handle's object, latch's
 * own pointer as is, NULL for NULL, or NULL (reported) for a handle whose
 * request is over and whose object was recycled. */
static inline latch_res *latch__res_in(const void *p, const char *call,
                                       const latch_site *at)
{
    uintptr_t v = (uintptr_t)p;
    uint32_t idx;
    latch_slot *slab;

    if (!(v & 1))
        return (latch_res *)(uintptr_t)p;
    idx = LATCH_H_SLOT(v);
    slab = atomic_load_explicit(&latch__slabs[idx >> LATCH_SLAB_BITS],
                                memory_order_acquire);
    if (slab != NULL &&
        atomic_load_explicit(&slab[idx & ((1u << LATCH_SLAB_BITS) - 1)].gen,
                             memory_order_acquire) == LATCH_H_GEN(v))
        return atomic_load_explicit(
            &slab[idx & ((1u << LATCH_SLAB_BITS) - 1)].obj,
            memory_order_relaxed);
    return latch__res_stale(v, call, at);
}

/* The handles user code gets for a response and its request, given to
 * (or registered by) handler call `frame`. */
static inline latch_res *latch__res_hf(const latch_res *res, uint16_t frame)
{
    return (latch_res *)(uintptr_t)(res->handle | (uint64_t)frame << 2);
}
static inline latch_req *latch__req_hf(const latch_res *res, uint16_t frame)
{
    return (latch_req *)(uintptr_t)(res->handle | (uint64_t)frame << 2 | 2);
}
/* The handler call a handle names (0: none, or latch's own pointer). */
static inline uint16_t latch__frame_of(const void *p)
{
    uintptr_t v = (uintptr_t)p;

    return (v & 1) ? (uint16_t)(v >> 2) : 0;
}
/* A request's pointer is its response's: entry points translate both
 * with latch__res_in. */
_Static_assert(offsetof(latch_res, req) == 0, "req first in latch_res");
_Static_assert(sizeof(void *) == 8, "handles need 64-bit pointers");

/* What a public entry point returns for a handle it refused. */
#define LATCH_GONE(p)                                                          \
    ((p) != NULL ? LATCH_ERR_STREAM_DESTROYED : LATCH_ERR_INVALID_ARG)

/* ------------------------------------------------------------------ */
/* Cross-module internal functions                                      */
/* ------------------------------------------------------------------ */

/* worker.c: one worker's runtime (a leaf). */
/* Redoes w's Date line (server.c's ticker, once a second). */
void latch__worker_date(latch_worker *w);
/* Runs fn(NULL, data) on w's loop; any thread. 0, LATCH_ERR_NOMEM, or
 * LATCH_ERR_STATE once the loop ended (latch__worker_close_posts). */
int latch__worker_post(latch_worker *w, latch_res_cb fn, void *data);
/* The same with a handle: fn(res, data) (latch_res_post). */
int latch__worker_post_res(latch_worker *w, latch_res *res, latch_res_cb fn,
                           void *data);
/* fn_at(res, at) on w's loop (a release from another thread). */
int latch__worker_post_at(latch_worker *w, latch_res *res,
                          void (*fn_at)(latch_res *res, latch_site at),
                          latch_site at);
/* Runs the calls posted to w in the order they were posted; on w's loop
 * (or, once it ended, on the thread that disposes of w). */
void latch__worker_run_posts(latch_worker *w);
/* From now on posts to w are refused (its loop ends). */
void latch__worker_close_posts(latch_worker *w);
/* res.c, on w's loop: the program took its first reference to a
 * response (hold) or let go of its last one (unhold). When w waits for
 * held responses to finish its drain, the last unhold wakes its loop to
 * finish (server.c's on_wake), from a clean stack. */
void latch__worker_hold(latch_worker *w);
void latch__worker_unhold(latch_worker *w);
/* A delay in ms to add under LATCH_SHAKE (0 when off). */
uint64_t latch__shake_ms(latch_worker *w);
/* The shaker's state for worker `index` of an app seeded with `seed`
 * (0: off, and then 0). */
uint64_t latch__shake_state(uint64_t seed, int index);

/* server.c */
/* The server's part of the app (app.c calls these; server.c keeps the
 * listeners, the workers' threads, signals and the drain). init and free:
 * with the app. ready: not running, and listening (a run takes the
 * listening sockets: listen again before the next). run: latch_run's
 * loop on the calling thread, SIGPIPE blocked, with the app prepared.
 * stop: latch_stop (any thread, also before run). */
void latch__server_init(latch_app *app);
void latch__server_free(latch_app *app);
bool latch__server_ready(const latch_app *app);
int latch__server_run(latch_app *app);
void latch__server_stop(latch_app *app);

/* conn.c */
/* Takes an accepted socket (non-blocking) into a new connection, served
 * over TLS with `tls` when not NULL; on failure the descriptor is closed.
 * Returns 0 or a negative code. */
int latch__conn_open(latch_worker *w, int fd, struct latch_tls_ctx *tls);
/* Closes one connection to make room for a newcomer: the oldest idle
 * keep-alive connection, else a TLS handshake that has taken a second
 * (one whose client sent nothing first, then one short of a whole
 * ClientHello, then the oldest), else the one receiving a request the
 * slowest for at least a second with nothing queued. Returns false when
 * none may go. */
bool latch__conn_shed(latch_worker *w);
/* Closes one connection still in its TLS handshake (the handshake cap):
 * of those a second old, one that sent nothing, else one short of a
 * whole ClientHello; else the oldest. False when there is none. */
bool latch__conn_shed_handshake(latch_worker *w);
#define LATCH_COUNT(app, which, n)                                             \
    atomic_fetch_add_explicit(&(app)->counters[(which)], (n),                  \
                              memory_order_relaxed)
void latch__conn_flush_all(latch_worker *w);
void latch__conn_drain(latch_worker *w);
void latch__conn_pool_free(latch_worker *w);

/* res.c */
/* A response and its request from w's pool, reset, with one reference
 * (the connection's), a handle, and `ex` as its protocol's exchange;
 * NULL when out of memory. */
latch_res *latch__res_alloc(latch_worker *w, const latch_exchange_ops *ex);
/* The protocol moved the request's fields (nfields of them) to `fields`,
 * storage that lives as long as res->req.rb (a long-lived request keeps
 * only what it uses): the pooled array, sized for the most fields a head
 * may have, goes back to the allocator, and the object gets a new one
 * when it is next taken from the pool. */
void latch__res_fields_moved(latch_res *res, latch_field *fields);
/* The response waits for long between writes (an event stream after its
 * head, or after a heartbeat: sse.c): the protocol gives its output
 * buffer back the next time it is empty (conn.c), instead of keeping it
 * for the next write. One-shot, so a busy stream keeps its buffer. */
void latch__res_trim_output(latch_res *res);
/* Called by the protocol there (its output buffer just went back): a
 * response whose head is on the wire packs its header store into one
 * exact block (latch_res_get_header still answers from it). */
void latch__res_trim(latch_res *res);
/* latch's own references (connection queue, chain, timers, work, joins,
 * frames): never counted as the user's, so a user's over-release can be
 * told apart and refused. unref may recycle the response. */
void latch__res_ref(latch_res *res);
void latch__res_unref(latch_res *res);
/* Frees every pooled response of w (its loop is over). */
void latch__res_pool_free(latch_worker *w);
/* The last byte of an ENDED response went to the OS: FINISHED, its
 * attachments ended, on_finish then on_close, and the queue's reference
 * dropped. */
void latch__res_finished(latch_res *res);
/* The connection lets go of the response (closed, or cut): an unfinished
 * one becomes DESTROYED sealed by `event`, the cancellation signal fires
 * with `reason` (LATCH_CANCEL_NONE: none), on_close runs, and the
 * queue's reference is dropped (which may recycle it). */
void latch__res_detach(latch_res *res, const char *event, int reason);
/* pages.c: answers a request the framework refuses (404, 500, ...):
 * status and a short text body, honouring the state machine. */
int latch__res_simple(latch_res *res, int status, const char *ctype,
                      const char *body, size_t len, const char *event);
/* headers.c: sets a header latch chose itself (a valid name and value),
 * before the head: 0, LATCH_ERR_LIMIT or LATCH_ERR_NOMEM; never reported. */
int latch__res_header(latch_res *res, const char *name, const char *value);
/* pages.c: a framework answer on a FRESH response: `status` with its reason
 * phrase as a text/plain body, and none of the handler's headers; sealed
 * by `event`. LATCH_ERR_STATE when the response is not FRESH. */
int latch__res_status_page(latch_res *res, int status, const char *event);
/* pages.c: an error page for `status` (drops the headers the handlers
 * set; adds the security headers, and extra_name: extra_value when not
 * NULL) with msg as its text, HTML or JSON by the request's Accept;
 * sealed by `event`. */
void latch__pages_error(latch_res *res, int status, const char *msg,
                        const char *extra_name, const char *extra_value,
                        const char *event);
/* pages.c: the answer to a request the parser refused (`reason` stays in the
 * server: it could help tune a smuggling payload). */
void latch__res_protocol_error(latch_res *res, int status, const char *reason);
/* The output fell (r: the response that may write now, or NULL): runs
 * r's on_drain when it waits for it and the backlog is below
 * LATCH_HIGH_WATER, then its attachments' drain ops. */
void latch__res_check_drain(latch_res *r);
/* A file body for `res` by conn.c's h1_sendfile: builds the head first
 * when FRESH (sealed by `call` at `at`), counts the bytes as written.
 * 0 (cb runs once), 1: not possible now or on this response (framing
 * other than Content-Length, queued behind another response, no
 * connection): the caller writes the bytes itself; < 0: an error of the
 * head or of the connection op (cb never runs). */
int latch__res_sendfile(latch_res *res, int fd, uint64_t off, uint64_t len,
                        latch_sendfile_cb cb, void *data, const char *call,
                        latch_site at);
/* Takes back a head built by write_head and not sent yet: FRESH again. */
bool latch__res_retract_head(latch_res *res);
/* Asks for the drain ops (and on_drain) at the next flush once the
 * pending output is below the high-water mark, as if a write had returned
 * 0: a producer's first pull. No-op on a response without a connection. */
void latch__res_want_drain(latch_res *res);

/* handle.c: handles for latch_timer * and latch_join * (see there).
 * latch__handle_new gives 0 when out of memory; a retired handle and any
 * value that never was one give NULL from latch__handle_get. The _locked
 * form lets a caller pin the object before another thread may free it. */
uintptr_t latch__handle_new(void *obj, const void *owner);
/* Retires the handles of objects whose owner (the worker given to
 * latch__handle_new) lies in [lo, hi): those workers are being freed. */
void latch__handle_run_over(const void *lo, const void *hi);
void latch__handle_retire(uintptr_t h);
void *latch__handle_get(uintptr_t h);
void latch__handle_lock(void);
void latch__handle_unlock(void);
void *latch__handle_get_locked(uintptr_t h);

/* async.c */
/* Arms the request timeout of `res` (replacing one armed before): after
 * ms (0: none) an unanswered response gets `status` (<= 0: 503), a
 * started one is cut, and the cancellation signal fires. Silently not
 * armed when out of memory. */
void latch__request_timer_start(latch_res *res, uint64_t ms, int status);
/* True while the request timeout of `res` is armed: its timer holds a
 * reference that owns nothing (app.c's unreferenced op). */
bool latch__async_request_timer_armed(const latch_res *res);

/* The request timeout, in two steps. res.c's begin: retracts a held head and,
 * when nothing was sent, marks the request cancelled (LATCH_CANCEL_TIMEOUT)
 * without firing the signal yet, so that the error handlers the caller
 * then runs see the reason; returns whether nothing was sent. Then
 * pages.c's latch__res_timeout answers what is still unanswered (the status
 * page when nothing was sent, a cut when headers were), names the timeout as
 * what sealed the response, and fires the signal. */
bool latch__res_timeout_begin(latch_res *res);
void latch__res_timeout(latch_res *res, int status);
/* send.c: the checks latch_res_json makes before sending (reported), and
 * the send itself for a JSON body of len bytes, reported as `call`. */
int latch__res_send_check(latch_res *res, const char *call, latch_site at);
/* res.c: the checks a call that sends the head makes (as
 * latch_res_flush_headers: refused, reported as `call`, after the headers
 * and beside a producer of latch's own), 0 when it may. */
int latch__res_head_check(latch_res *res, const char *call, latch_site at);
int latch__res_send_json(latch_res *res, const char *json, size_t len,
                         const char *call, latch_site at);

/* stream.c */
/* latch_res_pipe as `call` (file.c's latch_res_sendfile, the proxy's
 * latch_proxy): the name its refusals, traces and claim carry. */
int latch__res_pipe_named(latch_res *res, latch_pull_cb pull,
                          latch_done_cb done, void *data, const char *call,
                          latch_site at);
/* The call that attached res's live pipe (one that has neither failed nor
 * ended), or NULL: while it is live the response is answered by its
 * producer, so the chain moving on (LATCH_NEXT, latch_next, an error
 * passed on) is a second answer (ERR_NEXT_AFTER_RESPONSE). */
const latch_seal *latch__pipe_claim(const latch_res *res);
/* Makes res's live pipe its sole writer (res->sole, LATCH_SOLE_HELD):
 * for producers of latch's own, right after their pipe was attached. */
void latch__pipe_make_sole(latch_res *res);
/* The pipe whose data is `data` lends the response (yield true) to a hook
 * of its producer's, or takes it back (false): while lent it claims
 * nothing, another producer may be attached beside it (the proxy's
 * on_error answering with a file, a pipe or another proxy) and it is not
 * pulled. Nothing happens when res has no such pipe. */
void latch__pipe_yield(latch_res *res, const void *data, bool yield);
/* The sole producer's own body calls (latch__sole_enter/_leave around
 * latch_res_write / latch_res_end, with a reference held across): the seal
 * they make is named `call`, the producer's public call. */
int latch__pipe_own_write(latch_res *res, const void *data, size_t len,
                          const char *call, latch_site at);
int latch__pipe_own_end(latch_res *res, const void *data, size_t len,
                        const char *call, latch_site at);

/* req.c */
/* Fills q's path (decoded) and query from its target once the head is
 * parsed. */
void latch__req_prepare(latch_req *q);
/* Frees q's arena and parsed JSON body; q can serve the next request. */
void latch__req_reset(latch_req *q);
/* n bytes in q's arena that never move until latch__req_reset; NULL when
 * out of memory or past the arena's limit. */
char *latch__req_alloc(latch_req *q, size_t n);
/* A percent-decoded copy of s[0..n) in the request's arena. */
char *latch__req_decode(latch_req *q, const char *s, size_t n);
/* The address of the peer the request came from (not X-Forwarded-For),
 * as text in out: AF_INET or AF_INET6, or LATCH_ERR_STATE once the
 * connection is gone. */
int latch__req_peer(const latch_req *q, char *out, size_t cap);

/* app.c */
/* The frame a call made now on the response's thread acts for: the handler
 * call running, else the frame of the latch callback running, else 0. */
static inline uint16_t latch__res_acting_frame(const latch_res *res)
{
    return res->running != 0 ? res->running : res->ambient;
}
/* Runs a latch callback registered by `frame`: sets it as the ambient
 * frame and returns the previous one, for latch__frame_leave. */
static inline uint16_t latch__frame_enter(latch_res *res, uint16_t frame)
{
    uint16_t prev = res->ambient;

    res->ambient = frame;
    return prev;
}
static inline void latch__frame_leave(latch_res *res, uint16_t prev)
{
    res->ambient = prev;
}
/* The frame a registration or a chain call acts for: the one its handle
 * names, else the one running. */
static inline uint16_t latch__frame_pick(uint16_t hf, const latch_res *res)
{
    return hf != 0 ? hf : latch__res_acting_frame(res);
}
/* Keeps p until the app is freed, then calls fn(p) (a feature's handler
 * data). 0 or LATCH_ERR_NOMEM (then fn(p) has run). */
int latch__app_keep(latch_app *app, void *p, void (*fn)(void *));
/* Marks the layer registered last (latch_use_proxy's middleware) as one
 * whose requests stream their bodies (serve's body_streams). */
void latch__app_stream_last(latch_app *app);

/* pubsub.c: frees the app's hub (channels, history, backend). */
void latch__hub_free(latch_app *app);
/* Calls fn for each channel with its subscribers on this process, under
 * the hub's lock (fn must not call into pubsub). For /metrics. */
void latch__hub_each(latch_app *app,
                     void (*fn)(const char *channel, int subscribers,
                                void *data),
                     void *data);
/* ops.c: the per-worker blocks; a closed response counted and
 * logged (called once per dispatched response, finished or cut, before
 * it lets go of its connection, only when app->ops). */
void latch__ops_init(latch_app *app);
void latch__ops_free(latch_app *app);
void latch__ops_closed(latch_res *res, bool finished);
/* log.c: the line for a closed response (status as the client saw it,
 * dur_ns since dispatch); the writer stopped; lines dropped so far. */
void latch__alog_line(latch_res *res, latch_wops *o, const char *addr,
                      int status, uint64_t dur_ns);
void latch__alog_free(latch_app *app);
uint64_t latch__alog_dropped(latch_app *app);

/* trace.c: LATCH_DEBUG=lifecycle. latch__tracing is set once, by the
 * first latch_app_new (latch__trace_init), and only read afterwards; each
 * event point is LATCH_TRACING() && a call, so off it costs a load and a
 * branch never taken. */
extern __attribute__((visibility("hidden"))) atomic_bool latch__tracing;
#define LATCH_TRACING()                                                        \
    __builtin_expect(                                                          \
        atomic_load_explicit(&latch__tracing, memory_order_relaxed), 0)
/* Reads LATCH_DEBUG (once per process); when tracing, marks app->ops. */
void latch__trace_init(latch_app *app);
/* "<event>[ at <call> (<file>:<line>)]" for the request of res. Cold: the
 * compiler keeps these calls out of the hot code it inlines (without it,
 * res.c's end path stopped inlining its body emitter: +28 instructions a
 * request, LOAD=0 make bench). */
#define LATCH_COLD __attribute__((cold, noinline))
LATCH_COLD void latch__trace(const latch_res *res, const char *event,
                             const char *call, latch_site at);
/* The state res just entered, with the seal that put it there. */
LATCH_COLD void latch__trace_state(const latch_res *res, int to);
/* "headers sent" (when the same call sent them) and "ended". */
LATCH_COLD void latch__trace_end(const latch_res *res, bool with_head);
LATCH_COLD void latch__trace_cancel(const latch_res *res, int reason);

/* diag.c */
/* Reports a misuse of res (code LATCH_ERR_*, made by `call` at `at`;
 * message NULL: the code's own text), with the places that sealed res,
 * to the app's hook and counters under its policy (ABORT aborts). */
void latch__violation(latch_res *res, int code, const char *call,
                      const char *message, latch_site at);
/* As latch__violation, naming also `prior` (may be NULL), the earlier
 * event the call conflicts with. */
void latch__violation_prior(latch_res *res, int code, const char *call,
                            const char *message, latch_site at,
                            const latch_seal *prior);
/* As latch__violation_prior, naming `sealed` as the place the response
 * was sealed when nothing sealed it yet (a response given to a pipe). */
void latch__violation_sealed(latch_res *res, int code, const char *call,
                             const char *message, latch_site at,
                             const latch_seal *prior, const latch_seal *sealed);
/* As latch__violation, for a misuse that has no live response (a stale
 * handle). */
void latch__violation_app(latch_app *app, int code, const char *call,
                          const char *message, latch_site at);
/* As latch__violation_app, naming the request the stale handle belonged
 * to (request_id 0: unknown). */
void latch__violation_app_req(latch_app *app, int code, const char *call,
                              const char *message, latch_site at,
                              uint64_t request_id);
/* The source root reports strip (LATCH_SOURCE_ROOT, else the working
 * directory), taken by latch_app_new and freed by latch_app_free. */
void latch__diag_init(latch_app *app);
void latch__diag_free(latch_app *app);
/* file without the source root and its '/', when it starts with them;
 * else file itself (NULL stays NULL). Never allocates. Inline: diag.c and
 * trace.c (a leaf below it) both shorten sites. */
static inline const char *latch__site_file(const latch_app *app,
                                           const char *file)
{
    size_t n = app->src_root_len;

    if (file != NULL && n > 0 && strncmp(file, app->src_root, n) == 0 &&
        file[n] == '/' && file[n + 1] != '\0')
        return file + n + 1;
    return file;
}

#endif
