/*
 * conn.h - an HTTP/1.1 connection's state, conn.c's own. Included by
 * conn.c and the unit tests that pin its size (test_sizes.c); every other
 * module holds a latch_conn * as an opaque pointer (internal.h) and asks
 * the connection for what it needs through the exchange table
 * (latch_exchange_ops), so reading a field from elsewhere fails to
 * compile instead of passing review.
 */
#ifndef LATCH_CONN_H
#define LATCH_CONN_H

#include "internal.h"

enum {
    LATCH_CF_CLOSING = 1u << 0, /* uv_close called */
    LATCH_CF_NO_MORE = 1u << 1, /* no further request will be read */
    LATCH_CF_READ_STOPPED = 1u << 2,
    LATCH_CF_EOF = 1u << 3,      /* the peer half-closed */
    LATCH_CF_DIRTY = 1u << 4,    /* on the worker's dirty list */
    LATCH_CF_LINGER = 1u << 5,   /* error answered: discard, then close */
    LATCH_CF_SHUTDOWN = 1u << 6, /* write side shut down */
    LATCH_CF_IN_BODY = 1u << 7,  /* reading the current request's body */
    LATCH_CF_CONTINUE = 1u << 8, /* owe a 100 Continue when at head */
    LATCH_CF_CLOSE_AFTER_WRITE = 1u << 9,
    LATCH_CF_WRITE_ERROR = 1u << 10,
    LATCH_CF_PAUSED = 1u << 11,     /* reading paused: pipeline or buffer */
    LATCH_CF_DRAIN_LAST = 1u << 12, /* draining: the request arriving is
                                       the last one */
    LATCH_CF_CUT = 1u << 13,        /* a response was cut: the end must not
                                       look clean (no TLS close_notify) */
    LATCH_CF_BODY_WAIT = 1u << 14,  /* a streamed body waits for its sink
                                       (none yet, or it paused) */
    LATCH_CF_WRITING = 1u << 15,    /* uv_write runs on the wait part's
                                       wout */
    LATCH_CF_SENDQ = 1u << 16,      /* on the worker's send list (the send
                                       timeout runs) */
};

/*
 * What a connection needs only while its output waits for the socket
 * (uv_try_write did not take everything, or a file body waits for
 * writability): taken from the worker's pool when a write must wait,
 * given back once the socket took everything and nothing is queued, so
 * a connection that waits for its next request or event holds none.
 * Held while LATCH_CF_WRITING or LATCH_CF_SENDQ is set, or between a
 * write's completion and the flush after it.
 */
typedef struct latch_conn_wait {
    uv_write_t req; /* uv_write of wout (tls.c's write takes it too) */
    latch_buf wout; /* being written by uv_write; out collects meanwhile */
    /* The send timeout: the worker's send list, the deadline, and the
     * size of what waited for the client when last looked at. */
    latch_conn *s_next, *s_prev;
    uint64_t s_deadline;
    size_t s_queued;
} latch_conn_wait;

/*
 * What few connections ever use, behind one pointer: made the first time
 * one of them is needed, freed with the connection.
 */
typedef struct latch_conn_rare {
    uv_shutdown_t sreq; /* the write side's shutdown (start_linger) */
    /* The writability watch a file body waits on (a dup of the socket,
     * made for the connection's first body that has to wait, kept until
     * it closes). */
    uv_poll_t *sf_poll;
    uv_timer_t *shake_timer; /* a disconnect whose delivery is delayed */
    int shake_status;        /* ... and its status */
} latch_conn_rare;

struct latch_conn {
    uv_tcp_t tcp;
    latch_worker *w;
    struct latch_tls *tls; /* NULL: plain TCP; else reads and writes go
                              through tls.c */
    uint32_t flags;
    /* (uint32_t)uv_now when reading a streamed body last paused
     * (LATCH_CF_BODY_WAIT): that wait is not counted against the client
     * (rx_start moves on by it when reading resumes). */
    uint32_t paused_at;
    /* Read side: rb holds bytes [0, rlen); the current message starts at
     * msg; body bytes are decoded from bpos on. */
    latch_rbuf *rb;
    uint32_t rlen, msg, bpos;
    uint32_t nreqs;      /* requests begun on this connection */
    uint64_t body_limit; /* of the request whose body is being read */
    /* The parser, from the worker's pool while a message is being read
     * (a head, or a body): a connection between requests, or under a
     * response that waits for long (an event stream), holds none. */
    latch_parser *parser;
    latch_res *cur; /* request being received (head or body), or NULL */
    /* Responses in request order; only the head one writes to `out`. */
    latch_res *q_head, *q_tail;
    latch_res *writer; /* first response in the queue not yet ended */
    /* Write side: out collects bytes (the wait part's wout is what
     * uv_write has, while the socket is full). */
    latch_buf out;
    latch_conn_wait *wait;  /* NULL unless output waits for the socket */
    latch_conn_rare *rare;  /* NULL until one of its fields is needed */
    uint64_t out_total;     /* bytes ever appended to out */
    uint64_t written_total; /* bytes the OS accepted */
    /* Lists. */
    latch_conn *next, *prev; /* worker->conns */
    latch_conn *next_dirty;
    latch_conn *t_next, *t_prev;
    uint64_t deadline;
    uint8_t tkind;
    /* The client's address, read once (h1_peer; every proxied request
     * and access log line asks for it): family AF_INET or AF_INET6 (0:
     * not read yet), port in network order, address bytes (4 or 16). */
    uint8_t peer_family;
    uint16_t peer_port;
    uint8_t peer_addr[16];
    /* Here, where the address leaves room: responses queued (requests
     * dispatched whose response has not gone out). */
    uint32_t inflight;
    /* The request being received: when it started, bytes so far. */
    uint64_t rx_start, rx_bytes;
    /* A file body going out with sendfile(2) (conn.c's h1_sendfile); read
     * by every response's writes, so here rather than in the rare part. */
    struct latch_sfile *sf;
};

#endif
