/*
 * latch.h - the public interface of latch, an HTTP/1.1 server library.
 *
 * latch gives C programs the programming model of Node's http module and of
 * Express (a response object with headers_sent / writable_ended /
 * writable_finished / destroyed, middleware, next, error middleware) with one
 * guarantee on top: every request gets exactly one well-formed response, and
 * every misuse of a response (a header after the headers went out, a write
 * after the end, a late call from an async callback) is refused with an
 * error code and reported with the place it happened and the place the
 * response was sealed. Nothing a handler does to its response can reach the
 * wire of another request.
 *
 * Conventions (those of libuv):
 *  - Fallible functions return 0 (or a documented non-negative value) on
 *    success and a negative code on failure: a LATCH_ERR_* constant below or
 *    a negated errno value (as libuv's UV_E* codes). latch_err_name() and
 *    latch_strerror() name both kinds.
 *  - All objects are opaque. Strings returned by the library are owned by
 *    it; the comment of each function says how long they stay valid.
 *  - A request and its response live on one worker thread (one libuv loop).
 *    Handlers and every callback about a response run on that thread.
 *  - A bad argument (NULL where an object, a name or a callback is
 *    required, NULL data with a non-zero length, a status, index, count or
 *    limit out of range) never crashes: the call returns
 *    LATCH_ERR_INVALID_ARG (getters: NULL, 0 or false) and, when it is
 *    about a request or response, is reported like any refused call.
 *    tests/integration/test_api_args.c holds one row per entry point.
 *  - Functions that can raise a lifecycle violation are macros over an
 *    `_at` variant that takes the caller's place (LATCH_HERE), so reports
 *    name the file and line of the offending call.
 *
 * This header is the only public one. Names here are a contract: they are
 * used by code outside this repository.
 */
#ifndef LATCH_H
#define LATCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* This header's version, which is the library's: the build (CMake's
 * project version, latch.pc, the CMake package) reads it from here. */
#define LATCH_VERSION_MAJOR 0
#define LATCH_VERSION_MINOR 1
#define LATCH_VERSION_PATCH 0
#define LATCH_VERSION_STR_(x) #x
#define LATCH_VERSION_XSTR_(x) LATCH_VERSION_STR_(x)
#define LATCH_VERSION_STRING                                                   \
    LATCH_VERSION_XSTR_(LATCH_VERSION_MAJOR)                                   \
    "." LATCH_VERSION_XSTR_(LATCH_VERSION_MINOR) "." LATCH_VERSION_XSTR_(      \
        LATCH_VERSION_PATCH)

#if defined(LATCH_BUILDING) && defined(__GNUC__)
#define LATCH_API __attribute__((visibility("default")))
#else
#define LATCH_API
#endif

/* ------------------------------------------------------------------ */
/* Errors                                                               */
/* ------------------------------------------------------------------ */

/*
 * The one list of latch's own error codes: X(NAME, number, message).
 * Numbers never change once released; the message is Node's where Node
 * has the same error. The range -7001.. keeps them apart from -errno and from
 * libuv's own codes (UV_EAI_* sit at -3000..-3014, UV_EOF and friends at
 * -4095..-4000).
 */
#define LATCH_ERRNO_MAP(X)                                                     \
    X(HTTP_HEADERS_SENT, -7001,                                                \
      "Cannot set headers after they are sent to the client")                  \
    X(STREAM_WRITE_AFTER_END, -7002, "write after end")                        \
    X(STREAM_DESTROYED, -7003,                                                 \
      "Cannot call write after a stream was "                                  \
      "destroyed")                                                             \
    X(STREAM_ALREADY_FINISHED, -7004,                                          \
      "Cannot call end after a stream was finished")                           \
    X(HTTP_CONTENT_LENGTH_MISMATCH, -7005,                                     \
      "Response body's content-length does not match the content-length "      \
      "set in header")                                                         \
    X(HTTP_INVALID_STATUS_CODE, -7006, "Invalid status code")                  \
    X(INVALID_CHAR, -7007, "Invalid character in header content")              \
    X(NO_RESPONSE, -7008,                                                      \
      "The request ended without a response: nothing was sent")                \
    X(NEXT_TWICE, -7009, "next() was called more than once")                   \
    X(NEXT_AFTER_RESPONSE, -7010,                                              \
      "next() was called after the response was sent")                         \
    X(WRONG_THREAD, -7011,                                                     \
      "Called from a thread other than the response's event loop")             \
    X(NOMEM, -7012, "Out of memory")                                           \
    X(INVALID_ARG, -7013, "Invalid argument")                                  \
    X(HTTP_BODY_NOT_ALLOWED, -7014,                                            \
      "Adding content for this request method "                                \
      "or response status is not allowed.")                                    \
    X(HTTP, -7015, "HTTP error")                                               \
    X(LIMIT, -7016, "A configured limit was exceeded")                         \
    X(STATE, -7017, "Not allowed in the current state")                        \
    X(NOT_FOUND, -7018, "Not found")                                           \
    X(CANCELLED, -7019, "The request was cancelled")                           \
    X(UPSTREAM, -7020, "The upstream server sent an invalid response")         \
    X(TLS, -7021, "The TLS certificate or key cannot be used")

enum {
#define LATCH_X_(name, num, msg) LATCH_ERR_##name = (num),
    LATCH_ERRNO_MAP(LATCH_X_)
#undef LATCH_X_
};

/* "ERR_HTTP_HEADERS_SENT" for a latch code, libuv's name ("ECONNRESET")
 * for a negated errno, "OK" for 0, "UNKNOWN" otherwise. Static storage. */
LATCH_API const char *latch_err_name(int code);
/* The message for a code (Node's wording for Node's errors). Static. */
LATCH_API const char *latch_strerror(int code);

/* ------------------------------------------------------------------ */
/* Types                                                                */
/* ------------------------------------------------------------------ */

typedef struct latch_app latch_app;
typedef struct latch_req latch_req;
typedef struct latch_res latch_res;

/* A place in the caller's source. */
typedef struct latch_site {
    const char *file;
    int line;
    const char *func;
} latch_site;
#define LATCH_HERE ((latch_site){__FILE__, __LINE__, __func__})

/* What a handler returns. */
enum { LATCH_DONE = 0, LATCH_NEXT = 1, LATCH_PENDING = 2 };

/*
 * A handler or middleware. Runs on the request's worker thread. Returns
 * LATCH_DONE (it responded, or async work holding the response will),
 * LATCH_NEXT (continue with the next matching handler), LATCH_PENDING (it
 * will call latch_next() or latch_fail() later), or a negative error (the
 * error handlers run, as with Express's next(err)).
 *
 * A response given to a producer (latch_res_pipe, latch_res_sendfile,
 * latch_proxy) is answered by it even before its first byte: moving the
 * chain on from it (LATCH_NEXT, latch_next, an error returned or passed
 * with latch_fail: Express's res.sendFile() then next()) is reported as
 * ERR_NEXT_AFTER_RESPONSE, the producer's call named as where the
 * response was sealed, and the chain stops there: the producer answers.
 * A producer that failed (latch_res_pipe_fail) gave the response back to
 * the error handlers.
 */
typedef int (*latch_handler)(latch_req *req, latch_res *res, void *data);

/* An error on its way through the error handlers. */
typedef struct latch_error {
    int code;            /* negative latch or errno code */
    int status;          /* HTTP status to answer (4xx/5xx) */
    const char *message; /* human text; may be NULL */
    latch_site at;       /* where it was raised */
} latch_error;

/* An error handler: returns LATCH_DONE (handled), LATCH_NEXT, or
 * LATCH_PENDING (an async one: it calls latch_next, which goes on to the
 * next error handler, or latch_fail, which passes a new error on, once,
 * later; the request timeout answers meanwhile as for a pending handler).
 * One that answers in full and then passes the error on (LATCH_NEXT,
 * latch_fail) is reported as ERR_NEXT_AFTER_RESPONSE with both places;
 * delegating an error someone else answered (Express's "if
 * (res.headersSent) return next(err)") is not. */
typedef int (*latch_error_handler)(const latch_error *err, latch_req *req,
                                   latch_res *res, void *data);

typedef void (*latch_res_cb)(latch_res *res, void *data);

/* A lifecycle violation, as delivered to the app's violation hook. All
 * pointers are valid only during the hook call. */
typedef struct latch_violation {
    int code;                /* LATCH_ERR_* */
    const char *name;        /* "ERR_HTTP_HEADERS_SENT" */
    const char *message;     /* Node's message, specific to the call */
    const char *call;        /* the offending API function, "latch_res_json" */
    latch_site at;           /* where the offending call was made */
    const char *sealed_call; /* what sealed the response: an API function
                                name, or an event ("request timeout",
                                "client disconnect"); NULL if not sealed */
    latch_site sealed_at;    /* where; file NULL for framework events */
    uint64_t request_id;
    const char *method;
    const char *path;
    /* The earlier half of a conflict, for ERR_NEXT_TWICE: what had already
     * moved the chain on (the first latch_next, a latch_fail, or a
     * handler's LATCH_NEXT / LATCH_DONE); NULL when unknown. */
    const char *prior_call;
    latch_site prior_at;
} latch_violation;

enum {
    LATCH_POLICY_REPORT = 0, /* hook (default: stderr) + counters */
    LATCH_POLICY_ABORT = 1,  /* report, then abort(): tests, development */
    LATCH_POLICY_COUNT = 2,  /* counters only */
};

/* ------------------------------------------------------------------ */
/* The application                                                      */
/* ------------------------------------------------------------------ */

/* A new app with default settings; NULL when out of memory. The
 * environment variable LATCH_STRICT=1 selects LATCH_POLICY_ABORT. */
LATCH_API latch_app *latch_app_new(void);
/* Frees an app that is not running. NULL is allowed. */
LATCH_API void latch_app_free(latch_app *app);

/*
 * Registers middleware run for every request whose path starts with
 * `prefix` at a segment boundary (NULL or "/": every request), in
 * registration order with the routes. Returns 0, LATCH_ERR_NOMEM, or
 * LATCH_ERR_STATE once the app runs. `data` is passed to fn as is.
 */
LATCH_API int latch_use(latch_app *app, const char *prefix, latch_handler fn,
                        void *data);
/*
 * Registers a route: `method` ("GET", ...; NULL or "*" for every method)
 * and a path pattern with named parameters ("/users/:id") and a trailing
 * wildcard ("/static/ *", param name "*"). A GET route also serves HEAD
 * (the body is dropped). Returns 0, LATCH_ERR_INVALID_ARG for a malformed
 * or NULL pattern or a method that is not a token ("", "G T"),
 * LATCH_ERR_NOMEM, or LATCH_ERR_STATE once the app runs.
 */
LATCH_API int latch_route(latch_app *app, const char *method,
                          const char *pattern, latch_handler fn, void *data);
LATCH_API int latch_get(latch_app *app, const char *pattern, latch_handler fn,
                        void *data);
LATCH_API int latch_post(latch_app *app, const char *pattern, latch_handler fn,
                         void *data);
LATCH_API int latch_put(latch_app *app, const char *pattern, latch_handler fn,
                        void *data);
LATCH_API int latch_delete(latch_app *app, const char *pattern,
                           latch_handler fn, void *data);
LATCH_API int latch_patch(latch_app *app, const char *pattern, latch_handler fn,
                          void *data);
LATCH_API int latch_all(latch_app *app, const char *pattern, latch_handler fn,
                        void *data);
/* Registers an error handler (run in registration order). */
LATCH_API int latch_use_error(latch_app *app, latch_error_handler fn,
                              void *data);
/*
 * A body limit for the requests that match `method` (NULL or "*": every
 * method) and `pattern` (the route syntax; "/uploads/ *" for a subtree),
 * instead of LATCH_LIMIT_BODY: larger (an upload route) or smaller (0: no
 * body at all). The first matching rule in registration order applies. A
 * request above it gets 413 with Connection: close before its body is
 * read, as with the app's limit. Returns 0, LATCH_ERR_INVALID_ARG for a
 * malformed pattern, LATCH_ERR_NOMEM, or LATCH_ERR_STATE once the app runs.
 */
LATCH_API int latch_route_body_limit(latch_app *app, const char *method,
                                     const char *pattern, uint64_t bytes);

/*
 * The same, naming the handler: `name` (the handler's function name; the
 * macros below pass #fn) and `at` (where it was registered) are what a
 * report shows when the violation is in what a handler returned (LATCH_NEXT
 * after the response was sealed, LATCH_DONE without a response), where no
 * call site exists. The macros make every registration pass them; the
 * functions above remain for callers that take their address.
 */
LATCH_API int latch_use_at(latch_app *app, const char *prefix, latch_handler fn,
                           void *data, const char *name, latch_site at);
LATCH_API int latch_route_at(latch_app *app, const char *method,
                             const char *pattern, latch_handler fn, void *data,
                             const char *name, latch_site at);
LATCH_API int latch_use_error_at(latch_app *app, latch_error_handler fn,
                                 void *data, const char *name, latch_site at);
#define latch_use(app, prefix, fn, data)                                       \
    latch_use_at((app), (prefix), (fn), (data), #fn, LATCH_HERE)
#define latch_route(app, method, pattern, fn, data)                            \
    latch_route_at((app), (method), (pattern), (fn), (data), #fn, LATCH_HERE)
#define latch_get(app, pattern, fn, data)                                      \
    latch_route_at((app), "GET", (pattern), (fn), (data), #fn, LATCH_HERE)
#define latch_post(app, pattern, fn, data)                                     \
    latch_route_at((app), "POST", (pattern), (fn), (data), #fn, LATCH_HERE)
#define latch_put(app, pattern, fn, data)                                      \
    latch_route_at((app), "PUT", (pattern), (fn), (data), #fn, LATCH_HERE)
#define latch_delete(app, pattern, fn, data)                                   \
    latch_route_at((app), "DELETE", (pattern), (fn), (data), #fn, LATCH_HERE)
#define latch_patch(app, pattern, fn, data)                                    \
    latch_route_at((app), "PATCH", (pattern), (fn), (data), #fn, LATCH_HERE)
#define latch_all(app, pattern, fn, data)                                      \
    latch_route_at((app), NULL, (pattern), (fn), (data), #fn, LATCH_HERE)
#define latch_use_error(app, fn, data)                                         \
    latch_use_error_at((app), (fn), (data), #fn, LATCH_HERE)

/*
 * Binds a listening socket on host:port (host: "127.0.0.1", "::1", "0.0.0.0"
 * ...; port 0 picks a free port, see latch_app_port). Each worker gets its
 * own SO_REUSEPORT socket on the same address when the app runs. Returns 0
 * or a negated errno (UV_EADDRINUSE, ...). Each call (and each
 * latch_listen_tls) adds a listener, up to 8 per app (then LATCH_ERR_LIMIT);
 * LATCH_ERR_STATE once the app runs.
 */
LATCH_API int latch_listen(latch_app *app, const char *host, int port);
/*
 * As latch_listen, for HTTPS: TLS 1.2 and 1.3 (Mozilla's "intermediate"
 * ciphers), ALPN http/1.1, session tickets with keys that rotate hourly,
 * no renegotiation. cert_file is a PEM file with the certificate, then
 * its chain; key_file the PEM private key. Both are read now (and again
 * by latch_app_reload_tls, and on SIGHUP while latch_run handles
 * signals). Handlers see the same requests as on a plain listener;
 * latch_req_secure tells them apart. A plain HTTP request on this port
 * gets a 400 and the connection closes; a handshake must complete within
 * LATCH_TIMEOUT_HANDSHAKE and 64 KiB. Returns 0, LATCH_ERR_INVALID_ARG
 * (NULL app or file, bad host or port), LATCH_ERR_TLS (a file cannot be
 * read or parsed, or the key does not match the certificate; the reason
 * is logged on stderr), LATCH_ERR_LIMIT, LATCH_ERR_STATE, LATCH_ERR_NOMEM
 * or a negated errno from binding.
 */
LATCH_API int latch_listen_tls(latch_app *app, const char *host, int port,
                               const char *cert_file, const char *key_file);
/* The bound port of the first listener, or -1. */
LATCH_API int latch_app_port(const latch_app *app);
/* The bound port of listener `index` (0 for the first latch_listen or
 * latch_listen_tls call, 1 for the second ...), or -1 when there is none. */
LATCH_API int latch_app_listener_port(const latch_app *app, int index);
/*
 * Re-reads the certificate and key of every TLS listener: connections
 * made afterwards use the new pair, open ones are not disturbed. A pair
 * that fails to load or does not match keeps the previous one in use and
 * is logged on stderr. SIGHUP does the same while latch_run handles
 * signals. Any thread, running or not. Returns 0, the first failure
 * (LATCH_ERR_TLS, LATCH_ERR_NOMEM), or LATCH_ERR_INVALID_ARG (NULL).
 */
LATCH_API int latch_app_reload_tls(latch_app *app);
/*
 * Runs the workers and blocks until the server stopped: after latch_stop()
 * or SIGINT/SIGTERM it stops accepting, closes idle keep-alive
 * connections, lets in-flight requests finish up to the drain timeout,
 * closes the rest and returns 0. A negative code when it could not start.
 * A response the program still holds (latch_res_retain not released yet:
 * a thread that will post its result) is in flight too: within the drain
 * timeout, latch_run waits for its release, so that the holder's
 * latch_res_post still runs.
 * A client that leaves never kills the process: while it runs, SIGPIPE is
 * blocked on the threads that write to sockets (the calling thread and
 * the workers, and threads they create inherit that), whatever the
 * program's disposition for it; the calling thread's mask is restored
 * when latch_run returns.
 */
LATCH_API int latch_run(latch_app *app);
/* Asks a running app to drain and stop. Any thread; async-signal-unsafe. */
LATCH_API void latch_stop(latch_app *app);

/* Worker threads; 0 = one per core (the default). Before latch_run. */
LATCH_API int latch_app_set_workers(latch_app *app, int n);
/* Development mode: error pages show the error's message and where it
 * was raised (default: off, or LATCH_ENV=development in the environment).
 * Off, they show only the status text. */
LATCH_API int latch_app_set_development(latch_app *app, bool on);
/* Trust `hops` proxies in front of the app for latch_req_ip (0: none, the
 * default): the client address is taken from X-Forwarded-For. */
LATCH_API int latch_app_set_trust_proxy(latch_app *app, int hops);
/* Whether latch_run installs SIGINT/SIGTERM handlers (default: true). */
LATCH_API int latch_app_set_handle_signals(latch_app *app, bool on);

/* Limits and timeouts; each returns 0 or LATCH_ERR_INVALID_ARG, and
 * LATCH_ERR_STATE once the app runs. Defaults in brackets. */
enum latch_limit {
    LATCH_LIMIT_REQUEST_LINE = 0, /* bytes [8192] -> 414 */
    LATCH_LIMIT_FIELD_LINE,       /* bytes of one field line [8192] -> 431 */
    LATCH_LIMIT_HEAD,             /* bytes of the field section [16384] */
    LATCH_LIMIT_FIELDS,           /* number of fields [100] -> 431 */
    LATCH_LIMIT_BODY,             /* buffered body bytes [1 MiB] -> 413 */
    LATCH_LIMIT_CHUNK_EXT,        /* chunk-ext bytes per request [16384] */
    LATCH_LIMIT_PIPELINE,         /* requests in flight per conn [64] */
    LATCH_TIMEOUT_HEADER,         /* ms to receive a request head [60000] */
    LATCH_TIMEOUT_BODY,           /* ms without body progress [60000] */
    LATCH_TIMEOUT_KEEPALIVE,      /* ms an idle keep-alive conn stays [5000] */
    LATCH_TIMEOUT_LINGER,         /* ms to discard input after an error
                                     response before closing [2000] */
    LATCH_TIMEOUT_DRAIN,          /* ms in-flight requests get on stop
                                     [10000]; a request still arriving may
                                     finish, else it gets 503 + close */
    LATCH_LIMIT_CONNECTIONS,      /* open connections per worker [0: from
                                     RLIMIT_NOFILE]; at the cap the oldest
                                     idle (then a stalled handshake, then
                                     the slowest receiving) one is
                                     shed for a newcomer, or it is refused */
    LATCH_LIMIT_CONN_BUFFER,      /* bytes one connection may hold: output
                                     the OS has not taken, queued responses'
                                     output and request bodies [1 MiB];
                                     over it, no further request is read */
    LATCH_LIMIT_MIN_RATE,         /* bytes/s a request must arrive at once
                                     the grace period passed [500; 0: off]
                                     -> 408 */
    LATCH_TIMEOUT_SEND,           /* ms without write progress while output
                                     waits for the client -> close [60000] */
    LATCH_TIMEOUT_RECEIVE,        /* ms to receive a whole request, head
                                     and body [300000] -> 408 */
    LATCH_TIMEOUT_RATE_GRACE,     /* ms before the minimum rate applies
                                     [10000] */
    LATCH_LIMIT_OUTPUT,           /* bytes of output a connection may hold
                                     unsent [16 MiB; 64 KiB..1 TiB]: a write
                                     made while the pending output is at or
                                     above the high-water mark (a write
                                     returned 0 and the writer went on) that
                                     would pass it fails with
                                     LATCH_ERR_LIMIT, reported, and the
                                     response is destroyed */
    LATCH_TIMEOUT_HANDSHAKE,      /* ms a TLS client has to complete its
                                     handshake, then closed [10000] */
    LATCH_LIMIT_HANDSHAKES,       /* TLS handshakes in progress per worker
                                     [1024; 1..2^24]; each holds some 40 KiB
                                     (OpenSSL's state, at most 64 KiB of
                                     ClientHello): at the cap one is shed
                                     for a newcomer (counted as
                                     LATCH_COUNTER_SHED): of those a second
                                     old, the oldest that sent nothing, else
                                     the oldest short of a whole
                                     ClientHello; else the oldest */
};
LATCH_API int latch_app_set_limit(latch_app *app, int which, uint64_t value);

/*
 * Connection counters of the app, summed over its workers since it was
 * created (they survive latch_run returning): connections accepted,
 * accept(2) failures (EMFILE, ENFILE, ENOBUFS ...), connections refused
 * at once (reset) for want of a descriptor or of room under
 * LATCH_LIMIT_CONNECTIONS, and connections shed (closed) to make room:
 * idle keep-alive ones first, then a TLS handshake over a second old (one
 * that sent nothing first, then one short of a whole ClientHello), then the
 * slowest still sending a request (and a TLS handshake, in that order, at
 * LATCH_LIMIT_HANDSHAKES).
 * Each kind is also logged on stderr, at most once a second per worker.
 * Any thread. Returns 0 for an unknown counter or a NULL app.
 */
enum latch_counter {
    LATCH_COUNTER_ACCEPTED = 0,
    LATCH_COUNTER_ACCEPT_ERRORS,
    LATCH_COUNTER_DROPPED,
    LATCH_COUNTER_SHED,
    LATCH_COUNTER_COUNT
};
LATCH_API uint64_t latch_app_counter(const latch_app *app, int which);

/*
 * The request timeout: `ms` after a request was dispatched (0: none, the
 * default), if its response has not ended, the request is cancelled
 * (LATCH_CANCEL_TIMEOUT). A response that sent nothing yet (a head held
 * by latch_res_write_head counts as nothing sent) is answered by the app:
 * the error handlers run with err->code LATCH_ERR_CANCELLED, err->status
 * `status` (0: 503), err->message "Request timed out", and
 * latch_req_cancel_reason(req) already LATCH_CANCEL_TIMEOUT; with none
 * answering, the final handler does (JSON or HTML by Accept, as for any
 * error). A handler still waiting (LATCH_PENDING) loses its turn: its late
 * latch_next is ERR_NEXT_AFTER_RESPONSE. Then the cancellation signal
 * fires (jobs, joins, latch_req_on_cancel callbacks). A response whose
 * headers were sent is cut (the connection is destroyed), no error
 * handler runs. Any later call on the response is refused and its report
 * names "request timeout" as what sealed it (at the error handler's call,
 * when one answered).
 *
 *     static int on_error(const latch_error *err, latch_req *req,
 *                         latch_res *res, void *data)
 *     {
 *         if (latch_res_headers_sent(res))      // Express's headersSent
 *             return LATCH_NEXT;
 *         latch_res_status(res, err->status);
 *         if (latch_req_cancel_reason(req) == LATCH_CANCEL_TIMEOUT)
 *             return latch_res_json(res, "{\"error\":\"Request timed out\"}");
 *         return latch_res_jsonf(res, "{\"error\":%s}", err->message);
 *     }
 *
 * Requests pipelined behind a cut one are cancelled as
 * LATCH_CANCEL_DISCONNECT and sealed by "connection closed": they lost
 * their connection, they did not time out.
 */
LATCH_API int latch_app_set_request_timeout(latch_app *app, uint64_t ms,
                                            int status);
/* Overrides the request timeout for this request, counted from now (for a
 * route: call it first thing in its handler or in a middleware on its
 * prefix). ms 0 removes it. Returns 0, LATCH_ERR_INVALID_ARG (a status
 * outside 400..599, more than 24 hours), LATCH_ERR_STATE when the response
 * already ended, LATCH_ERR_WRONG_THREAD; each refusal is reported. */
LATCH_API int latch_req_set_timeout(latch_req *req, uint64_t ms, int status);
LATCH_API int latch_req_set_timeout_at(latch_req *req, uint64_t ms, int status,
                                       latch_site at);
#define latch_req_set_timeout(req, ms, status)                                 \
    latch_req_set_timeout_at((req), (ms), (status), LATCH_HERE)

LATCH_API int latch_app_set_violation_policy(latch_app *app, int policy);
/* Replaces the violation hook (NULL: the default, which prints to stderr).
 * The hook runs on the worker thread of the offending call. */
LATCH_API int latch_app_on_violation(latch_app *app,
                                     void (*cb)(const latch_violation *v,
                                                void *data),
                                     void *data);
/*
 * The text the default hook prints for v (the block that starts
 * "latch: ERR_...", one line per place, ending with a newline), for a hook
 * that keeps or forwards reports and still wants latch's words: at most
 * cap - 1 bytes of it and a NUL into buf (nothing with cap 0). Any thread.
 * Returns the whole block's length, which is below 4096 (a return >= cap
 * means it was cut), or LATCH_ERR_INVALID_ARG for a NULL v, or a NULL buf
 * with cap > 0.
 */
LATCH_API int latch_violation_format(const latch_violation *v, char *buf,
                                     size_t cap);
/* Total violations reported so far with `code` (0: all codes). */
LATCH_API uint64_t latch_app_violation_count(const latch_app *app, int code);
/* Violations reported so far at one offending site (file as in the
 * report, i.e. the caller's __FILE__, and line), all codes together. */
LATCH_API uint64_t latch_app_violation_site_count(latch_app *app,
                                                  const char *file, int line);
/* Calls fn once per offending site with its code and count (a snapshot;
 * fn runs on the calling thread, outside latch's locks). */
LATCH_API void latch_app_violation_sites(latch_app *app,
                                         void (*fn)(const char *file, int line,
                                                    int code, uint64_t count,
                                                    void *data),
                                         void *data);

/* ------------------------------------------------------------------ */
/* Operations: metrics and the access log                              */
/* ------------------------------------------------------------------ */

/*
 * Adds a route answering GET (and HEAD) `path` with the app's metrics in
 * the Prometheus text format 0.0.4, summed across workers:
 * latch_requests_total{code} (the status the client got; 499 when it left
 * before one), latch_request_duration_seconds (histogram: dispatch to the
 * last byte or the cut), latch_connections{state="open"},
 * latch_violations_total{code}, latch_violation_sites_total{code,site}
 * (code as "ERR_HTTP_HEADERS_SENT", site as "file:line"),
 * latch_upstream_requests_total{upstream,outcome},
 * latch_sse_subscribers{channel}, latch_bytes_sent_total (response body
 * bytes), latch_access_log_dropped_total, and latch_app_counter's as
 * latch_connections_accepted_total, latch_accept_errors_total,
 * latch_connections_dropped_total, latch_connections_shed_total. Counting
 * starts with this call (each worker counts apart, without locks; a scrape
 * sums) and lasts until latch_app_free, across runs. Returns 0,
 * LATCH_ERR_INVALID_ARG (NULL app or path, a malformed path), LATCH_ERR_NOMEM,
 * or LATCH_ERR_STATE once the app runs.
 */
LATCH_API int latch_use_metrics(latch_app *app, const char *path);

/* Access log formats. */
enum {
    LATCH_LOG_COMBINED = 1, /* nginx's "combined" format, byte for byte */
    LATCH_LOG_JSON = 2      /* one JSON object per line */
};

/*
 * Writes one line per response to `fd` once the response finished or was
 * cut: LATCH_LOG_COMBINED, as nginx's
 *   $remote_addr - $remote_user [$time_local] "$request" $status
 *   $body_bytes_sent "$http_referer" "$http_user_agent"
 * (nginx's escaping: '"', '\' and bytes outside 0x20..0x7e as \xHH), or
 * LATCH_LOG_JSON, an object with time, remote_addr, request_id, method,
 * url, protocol, status, body_bytes_sent, request_time (seconds), referer
 * and user_agent (null when absent); invalid UTF-8 becomes U+FFFD. The
 * status is the one the client got, 499 when it left before any. Lines are
 * buffered per worker and written by a thread of latch's, at least every
 * 100 ms; a descriptor that blocks or fails never holds a worker up: lines
 * that do not fit are dropped and counted (latch_access_log_dropped_total
 * in the metrics). fd -1 (or format -1) turns the log off. The caller owns fd
 * and keeps it open until latch_app_free (or until the log is turned off);
 * latch never closes it or changes its flags. Set before latch_run. Returns 0,
 * LATCH_ERR_INVALID_ARG (NULL app, an fd that is not open, an unknown
 * format), LATCH_ERR_STATE while the app runs, LATCH_ERR_NOMEM or a
 * negated errno (the writer thread could not start).
 */
LATCH_API int latch_app_set_access_log(latch_app *app, int fd, int format);

/* ------------------------------------------------------------------ */
/* The chain                                                            */
/* ------------------------------------------------------------------ */

/*
 * Continues the chain. Called inside a running handler (Express's
 * next()), the rest of the chain runs within this call and the handler's
 * code after it runs afterwards; its return value then no longer moves the
 * chain (LATCH_NEXT or an error returned as well is reported as
 * ERR_NEXT_TWICE and ignored). Called later, from a callback, it resumes a
 * chain whose handler returned LATCH_PENDING. Reported and ignored: a
 * second call (ERR_NEXT_TWICE; the report's prior site names what moved
 * the chain on before), and a call once the response was sent by someone
 * else, the request timeout or the client leaving (ERR_NEXT_AFTER_RESPONSE,
 * sealed site included; the chain ends). When the response closes while
 * a handler is pending, the chain lets go of it: a late caller must hold
 * its own reference, as latch_work and latch_set_timeout callbacks do.
 *
 * Who may move the chain. Every handler call (middleware, route, error
 * handler) moves the chain at most once: by latch_next or latch_fail
 * inside it, by its return value, or, after returning LATCH_PENDING, by
 * one latch_next or latch_fail later. A call is attributed to a handler
 * call by the req it is given: each handler call receives its own req and
 * res values (handles naming that call; latch_res_req and latch_req_res
 * keep it), and every callback gets the one it was registered with
 * (latch_set_timeout, latch_work's after, a join's completion, on_drain,
 * on_finish, on_close, latch_req_on_cancel, latch_res_post), so a
 * latch_next made later from a timer or a thread's posted function acts
 * for the handler whose res it came from. Only the handler that
 * returned LATCH_PENDING can resume it: a second latch_next of an earlier
 * middleware, in its body or from its timer, never resumes (and so never
 * skips) a later middleware's pending step; it is ERR_NEXT_TWICE with that
 * middleware's first move as the prior site, or ERR_NEXT_AFTER_RESPONSE
 * when the move was a return value and the response was already sent.
 * Compare requests by latch_req_id, not by pointer: two handlers of one
 * request get different values.
 *
 * An async middleware (Express's async (req, res, next) => { await ...;
 * next(); }): the handler starts a job and returns LATCH_PENDING; the
 * job's completion either calls latch_next or answers, once. When the
 * request was cancelled meanwhile (the request timeout answered, the
 * client left) the completion gets LATCH_ERR_CANCELLED and does neither:
 * that status is its guard, so it needs no headers_sent check, and no
 * reference (latch_work_copy keeps the data, latch_work the response):
 *
 *     struct hit { const char *ip; long count; };
 *     static void counted(latch_res *res, int status, void *data)
 *     {
 *         const struct hit *h = data;
 *         if (status != 0)                    // cancelled: latch answered
 *             return;
 *         if (h->count <= 100)
 *             latch_next(latch_res_req(res)); // await ...; next()
 *         else if (latch_res_status(res, 429) == 0)
 *             latch_res_json(res, "{\"error\":\"Too many requests\"}");
 *     }
 *     static int rate_limit(latch_req *req, latch_res *res, void *data)
 *     {
 *         struct hit h = {.ip = latch_req_ip(req)};
 *         int r = latch_work_copy(res, count_hit, counted, &h, sizeof(h));
 *         return r < 0 ? r : LATCH_PENDING;
 *     }
 */
#define latch_next(req) latch_next_at((req), LATCH_HERE)
LATCH_API void latch_next_at(latch_req *req, latch_site at);
/*
 * Records an HTTP error (status 400..599, else 500; message may be NULL)
 * and returns a negative code for the handler to return. After
 * LATCH_PENDING it resumes the chain at the error handlers (outside a
 * handler it follows latch_next's rules). In an error handler it passes
 * the new error to the next error handler. An error passed on after the
 * response was complete (the catch block that responds and forwards) is
 * reported as ERR_NEXT_AFTER_RESPONSE; the error handlers still run, see
 * latch_res_headers_sent true, and nothing more reaches the wire.
 */
#define latch_fail(req, status, message)                                       \
    latch_fail_at((req), (status), (message), LATCH_HERE)
LATCH_API int latch_fail_at(latch_req *req, int status, const char *message,
                            latch_site at);

/* ------------------------------------------------------------------ */
/* The request                                                          */
/* ------------------------------------------------------------------ */
/*
 * Strings returned by these functions are NUL-terminated, owned by the
 * request, and valid as long as the response is referenced (during the
 * handler, while a latch_res_retain is held, and for the whole life of a
 * latch_work job, which holds a reference until its completion returned),
 * even after the response ended or the client left. They never change:
 * nobody needs to copy them.
 *
 * Reading from another thread. latch_req_method, _path, _url, _query,
 * _query_values, _param, _header, _header_values, _header_count,
 * _header_at, _cookie, _body, _json (read it only), _id and
 * _version_minor may be called from any thread while
 * the response is referenced, such as a latch_work job reading what it
 * needs off the loop:
 *
 *     struct lookup { latch_req *req; bool found; struct record user; };
 *     static void lookup(void *data)          // on the pool thread
 *     {
 *         struct lookup *l = data;            // l->req: the handler's req
 *         const char *id = latch_req_param(l->req, "id");
 *         l->found = db_find_user(id, &l->user);
 *     }
 *
 * Route parameters are those of the route running: a job started by a
 * middleware that then passes the request on reads its parameters before
 * it does (the strings stay valid). Everything else (latch_req_ip,
 * latch_req_aborted, latch_req_cancel_reason, the response) is the loop's:
 * a job asks latch_work_cancelled, and latch_req_ip off the loop is
 * refused (NULL, LATCH_ERR_WRONG_THREAD, reported).
 *
 * A getter given a handle whose request is over (kept without a
 * reference) returns NULL, 0 or false, or LATCH_ERR_STREAM_DESTROYED, and
 * reports it. So that the report names the caller's place, each getter
 * here and on latch_res below (and each latch_json_* call) is a macro over
 * an _at variant; the plain functions remain for callers that take their
 * address. (latch_req_header's variant is latch_req_header_get_at and
 * latch_req_header_at's is latch_req_header_nth_at, the _at names being
 * taken.)
 */
LATCH_API const char *latch_req_method(const latch_req *req);
LATCH_API const char *latch_req_method_at(const latch_req *req, latch_site at);
#define latch_req_method(req) latch_req_method_at((req), LATCH_HERE)
/* The path, percent-decoded, without the query. */
LATCH_API const char *latch_req_path(const latch_req *req);
LATCH_API const char *latch_req_path_at(const latch_req *req, latch_site at);
#define latch_req_path(req) latch_req_path_at((req), LATCH_HERE)
/* The request target exactly as sent. */
LATCH_API const char *latch_req_url(const latch_req *req);
LATCH_API const char *latch_req_url_at(const latch_req *req, latch_site at);
#define latch_req_url(req) latch_req_url_at((req), LATCH_HERE)
/* The first value of query parameter `name` (decoded: percent escapes,
 * '+' as a space; names are compared decoded), NULL if absent; "" for a
 * key without '='. */
LATCH_API const char *latch_req_query(const latch_req *req, const char *name);
LATCH_API const char *latch_req_query_at(const latch_req *req, const char *name,
                                         latch_site at);
#define latch_req_query(req, name) latch_req_query_at((req), (name), LATCH_HERE)
/* Every value of a repeated query parameter ("?tag=a&tag=b", what Express
 * gives as an array), in order: stores the first `max` in values and
 * returns how many there are (0 if absent), or LATCH_ERR_INVALID_ARG. */
LATCH_API int latch_req_query_values(const latch_req *req, const char *name,
                                     const char **values, int max);
LATCH_API int latch_req_query_values_at(const latch_req *req, const char *name,
                                        const char **values, int max,
                                        latch_site at);
#define latch_req_query_values(req, name, values, max)                         \
    latch_req_query_values_at((req), (name), (values), (max), LATCH_HERE)
/* A route parameter (decoded), NULL if the route has none of that name. */
LATCH_API const char *latch_req_param(const latch_req *req, const char *name);
LATCH_API const char *latch_req_param_at(const latch_req *req, const char *name,
                                         latch_site at);
#define latch_req_param(req, name) latch_req_param_at((req), (name), LATCH_HERE)
/* The first value of a header (case-insensitive name), NULL if absent. */
LATCH_API const char *latch_req_header(const latch_req *req, const char *name);
LATCH_API const char *latch_req_header_get_at(const latch_req *req,
                                              const char *name, latch_site at);
#define latch_req_header(req, name)                                            \
    latch_req_header_get_at((req), (name), LATCH_HERE)
/* Every value of a header sent on several lines, in order (as with
 * latch_req_query_values): stores the first `max`, returns the count. */
LATCH_API int latch_req_header_values(const latch_req *req, const char *name,
                                      const char **values, int max);
LATCH_API int latch_req_header_values_at(const latch_req *req, const char *name,
                                         const char **values, int max,
                                         latch_site at);
#define latch_req_header_values(req, name, values, max)                        \
    latch_req_header_values_at((req), (name), (values), (max), LATCH_HERE)
/* Number of header fields, and field i (0-based) as name and value. */
LATCH_API int latch_req_header_count(const latch_req *req);
LATCH_API int latch_req_header_count_at(const latch_req *req, latch_site at);
#define latch_req_header_count(req) latch_req_header_count_at((req), LATCH_HERE)
LATCH_API int latch_req_header_at(const latch_req *req, int i,
                                  const char **name, const char **value);
LATCH_API int latch_req_header_nth_at(const latch_req *req, int i,
                                      const char **name, const char **value,
                                      latch_site at);
#define latch_req_header_at(req, i, name, value)                               \
    latch_req_header_nth_at((req), (i), (name), (value), LATCH_HERE)
/* The value of cookie `name` from the Cookie header(s), percent-decoded
 * and without surrounding quotes; NULL if absent. */
LATCH_API const char *latch_req_cookie(const latch_req *req, const char *name);
LATCH_API const char *latch_req_cookie_at(const latch_req *req,
                                          const char *name, latch_site at);
#define latch_req_cookie(req, name)                                            \
    latch_req_cookie_at((req), (name), LATCH_HERE)
/* The client's IP address as text ("127.0.0.1", "::1"). Without a trusted
 * proxy (the default) it is the peer of the connection; with
 * latch_app_set_trust_proxy(app, n), the address n hops back in
 * X-Forwarded-For (as Express's "trust proxy" n). NULL once the
 * connection is gone and nothing was cached. */
LATCH_API const char *latch_req_ip(const latch_req *req);
LATCH_API const char *latch_req_ip_at(const latch_req *req, latch_site at);
#define latch_req_ip(req) latch_req_ip_at((req), LATCH_HERE)
/*
 * JSON request bodies (parsed with jansson). latch_json_body is a
 * middleware (latch_use(app, prefix, latch_json_body, NULL)): for a request
 * whose Content-Type is application/json or *+json and whose body is not
 * empty, it parses the body; malformed JSON goes to the error handlers as
 * a 400 whose message gives jansson's text and the line and column (shown
 * in development mode only). latch_req_json returns the parsed value,
 * owned by the request (json_incref it to keep it longer), or NULL.
 */
typedef struct json_t json_t;
LATCH_API int latch_json_body(latch_req *req, latch_res *res, void *data);
LATCH_API json_t *latch_req_json(const latch_req *req);
LATCH_API json_t *latch_req_json_at(const latch_req *req, latch_site at);
#define latch_req_json(req) latch_req_json_at((req), LATCH_HERE)
/* The buffered body (may be empty, data non-NULL). Returns 0. */
LATCH_API int latch_req_body(latch_req *req, const void **data, size_t *len);
LATCH_API int latch_req_body_at(latch_req *req, const void **data, size_t *len,
                                latch_site at);
#define latch_req_body(req, data, len)                                         \
    latch_req_body_at((req), (data), (len), LATCH_HERE)
/* Unique per server run, increasing per worker. */
LATCH_API uint64_t latch_req_id(const latch_req *req);
LATCH_API uint64_t latch_req_id_at(const latch_req *req, latch_site at);
#define latch_req_id(req) latch_req_id_at((req), LATCH_HERE)
/* True once the client went away or the request was cancelled. */
LATCH_API bool latch_req_aborted(const latch_req *req);
LATCH_API bool latch_req_aborted_at(const latch_req *req, latch_site at);
#define latch_req_aborted(req) latch_req_aborted_at((req), LATCH_HERE)
/* True when the request came over TLS (a latch_listen_tls listener), as
 * Express's req.secure without proxies; false otherwise and for NULL. */
LATCH_API bool latch_req_secure(const latch_req *req);
LATCH_API bool latch_req_secure_at(const latch_req *req, latch_site at);
#define latch_req_secure(req) latch_req_secure_at((req), LATCH_HERE)
/*
 * The request's cancellation signal. It fires once, on the first of: the
 * client went away (EOF or reset while the response is not complete), the
 * request timeout, server shutdown. Then latch_req_aborted is true, the
 * response's timers are cleared, queued latch_work jobs are cancelled, and
 * the callbacks registered here run once each, in registration order, on
 * the request's thread, before the response's on_close.
 */
enum {
    LATCH_CANCEL_NONE = 0,
    LATCH_CANCEL_DISCONNECT = 1, /* client EOF or reset */
    LATCH_CANCEL_TIMEOUT = 2,    /* the request timeout */
    LATCH_CANCEL_SHUTDOWN = 3,   /* the server's drain deadline */
};
typedef void (*latch_cancel_cb)(latch_req *req, int reason, void *data);
/* Registers cleanup for the signal (at most 8 per request). Returns 0,
 * LATCH_ERR_LIMIT, LATCH_ERR_STATE once the signal fired or the response
 * is over (cb is then never called), LATCH_ERR_WRONG_THREAD; each
 * refusal is reported. */
LATCH_API int latch_req_on_cancel(latch_req *req, latch_cancel_cb cb,
                                  void *data);
LATCH_API int latch_req_on_cancel_at(latch_req *req, latch_cancel_cb cb,
                                     void *data, latch_site at);
#define latch_req_on_cancel(req, cb, data)                                     \
    latch_req_on_cancel_at((req), (cb), (data), LATCH_HERE)
/* LATCH_CANCEL_* for a cancelled request, LATCH_CANCEL_NONE otherwise. */
LATCH_API int latch_req_cancel_reason(const latch_req *req);
LATCH_API int latch_req_cancel_reason_at(const latch_req *req, latch_site at);
#define latch_req_cancel_reason(req)                                           \
    latch_req_cancel_reason_at((req), LATCH_HERE)

/* 0 for HTTP/1.0, 1 for HTTP/1.1 (HTTP/1.2 to 1.9 are served as 1.1: 1). */
LATCH_API int latch_req_version_minor(const latch_req *req);
LATCH_API int latch_req_version_minor_at(const latch_req *req, latch_site at);
#define latch_req_version_minor(req)                                           \
    latch_req_version_minor_at((req), LATCH_HERE)
/* The response of a request, and the request of a response. */
LATCH_API latch_res *latch_req_res(latch_req *req);
LATCH_API latch_res *latch_req_res_at(latch_req *req, latch_site at);
#define latch_req_res(req) latch_req_res_at((req), LATCH_HERE)
LATCH_API latch_req *latch_res_req(latch_res *res);
LATCH_API latch_req *latch_res_req_at(latch_res *res, latch_site at);
#define latch_res_req(res) latch_res_req_at((res), LATCH_HERE)

/* ------------------------------------------------------------------ */
/* The response                                                         */
/* ------------------------------------------------------------------ */
/*
 * States: FRESH -> HEADERS_SENT -> ENDED -> FINISHED, and DESTROYED from
 * any of them. Calls that the state forbids return the error below and
 * report a violation; they never put a byte on the wire.
 */

/* Sets the status (200..999, else LATCH_ERR_HTTP_INVALID_STATUS_CODE,
 * reported: a 1xx is informational and cannot be the answer; latch sends
 * 100 Continue itself). The same holds for every call that takes a
 * status. */
#define latch_res_status(res, status)                                          \
    latch_res_status_at((res), (status), LATCH_HERE)
LATCH_API int latch_res_status_at(latch_res *res, int status, latch_site at);
/* The status set so far (200 by default). */
LATCH_API int latch_res_get_status(const latch_res *res);
LATCH_API int latch_res_get_status_at(const latch_res *res, latch_site at);
#define latch_res_get_status(res) latch_res_get_status_at((res), LATCH_HERE)

/*
 * Sets (replacing, keeping its position), appends (another line of the same
 * name) or removes a header before the headers are sent. Name must be a
 * token and value must not contain CR, LF or NUL (LATCH_ERR_INVALID_CHAR).
 * The strings are copied. latch owns the framing, so these are refused
 * with LATCH_ERR_INVALID_ARG (reported): a Content-Length that is not a
 * decimal number up to 2^63 - 1 (what clients can hold), a second
 * Content-Length or Transfer-Encoding line, the
 * two together, and a Transfer-Encoding other than "chunked". A
 * Transfer-Encoding is dropped for an HTTP/1.0 client (the body then ends
 * at the close), and a Connection header that promises keep-alive on a
 * connection latch closes is replaced by "Connection: close".
 */
#define latch_res_set_header(res, name, value)                                 \
    latch_res_set_header_at((res), (name), (value), LATCH_HERE)
#define latch_res_append_header(res, name, value)                              \
    latch_res_append_header_at((res), (name), (value), LATCH_HERE)
#define latch_res_remove_header(res, name)                                     \
    latch_res_remove_header_at((res), (name), LATCH_HERE)
LATCH_API int latch_res_set_header_at(latch_res *res, const char *name,
                                      const char *value, latch_site at);
LATCH_API int latch_res_append_header_at(latch_res *res, const char *name,
                                         const char *value, latch_site at);
LATCH_API int latch_res_remove_header_at(latch_res *res, const char *name,
                                         latch_site at);
/* Removes every header set so far, before the headers are sent: an error
 * handler answering for a handler that failed midway starts clean, so a
 * Content-Type or Location set for the success does not leak into the
 * error (as Express's final handler does). */
#define latch_res_clear_headers(res)                                           \
    latch_res_clear_headers_at((res), LATCH_HERE)
LATCH_API int latch_res_clear_headers_at(latch_res *res, latch_site at);
/* The value of a header set so far (first one), or NULL. Valid until the
 * next header change on this response; on an event stream (latch_sse_start,
 * latch_subscribe), only until control goes back to the loop: once its
 * head is on the wire and it waits, its header store is packed into a
 * block of the exact size, from which later calls still answer. */
LATCH_API const char *latch_res_get_header(const latch_res *res,
                                           const char *name);
LATCH_API const char *latch_res_get_header_at(const latch_res *res,
                                              const char *name, latch_site at);
#define latch_res_get_header(res, name)                                        \
    latch_res_get_header_at((res), (name), LATCH_HERE)

/* Builds the header block with this status; nothing is sent yet (Node's
 * writeHead). Until the next write, end or flush the head is held: when
 * the request times out, an error reaches the final handler, or the
 * response is left unanswered meanwhile, latch drops the held head and
 * sends that status (503, the error's, 500) instead of an empty reply. */
#define latch_res_write_head(res, status)                                      \
    latch_res_write_head_at((res), (status), LATCH_HERE)
LATCH_API int latch_res_write_head_at(latch_res *res, int status,
                                      latch_site at);
/* Builds the header block if needed and sends it now. */
#define latch_res_flush_headers(res)                                           \
    latch_res_flush_headers_at((res), LATCH_HERE)
LATCH_API int latch_res_flush_headers_at(latch_res *res, latch_site at);

/*
 * Writes body bytes (headers implicitly first; chunked unless a
 * Content-Length was set). An empty write sends nothing. Returns 1 while
 * the connection's pending output is below the high-water mark, 0 when the
 * caller should wait for latch_res_on_drain, or a negative error.
 */
#define latch_res_write(res, data, len)                                        \
    latch_res_write_at((res), (data), (len), LATCH_HERE)
LATCH_API int latch_res_write_at(latch_res *res, const void *data, size_t len,
                                 latch_site at);
/* Ends the response, with optional last data (NULL, 0: none). With no
 * earlier write, the length is sent as Content-Length. */
#define latch_res_end(res, data, len)                                          \
    latch_res_end_at((res), (data), (len), LATCH_HERE)
LATCH_API int latch_res_end_at(latch_res *res, const void *data, size_t len,
                               latch_site at);

/* Express's res.send: Content-Type text/html; charset=utf-8 unless set,
 * Content-Length, the body, end. As Express (and RFC 9110), the senders
 * (send, json, json_end, send_status, redirect) on a 204 or 304 send no
 * body, no Content-Type, Content-Length nor Transfer-Encoding; on a 205, no
 * body and "Content-Length: 0". */
#define latch_res_send(res, body, len)                                         \
    latch_res_send_at((res), (body), (len), LATCH_HERE)
LATCH_API int latch_res_send_at(latch_res *res, const void *body, size_t len,
                                latch_site at);
/* Sends NUL-terminated JSON text as application/json; charset=utf-8
 * (NULL sends the JSON value null). */
#define latch_res_json(res, json) latch_res_json_at((res), (json), LATCH_HERE)
LATCH_API int latch_res_json_at(latch_res *res, const char *json,
                                latch_site at);
/*
 * A JSON response in one call, printf-like (Express's
 * res.status(201).json({id, email})):
 *
 *     const char *email = latch_req_query(req, "email");
 *     int id = 42;
 *     latch_res_status(res, 201);
 *     return latch_res_jsonf(res, "{\"id\":%d,\"email\":%s}", id, email);
 *
 * The format's text is copied as is and each conversion inserts one JSON
 * value: %s a string, escaped (NULL: null); %d %i %u %ld %lu %lld %llu %zu
 * an integer, exact; %g %f a number in the shortest form that reads back
 * to the same double; %b (an int) true or false; %j raw JSON text, checked
 * to be one value (NULL: null); %% a percent sign. No widths, precisions
 * or flags. The result must be one JSON document: a conversion inside a
 * string literal of the format ("\"Hello %s\"") is refused. It is sent as
 * latch_res_json sends (Content-Type application/json; charset=utf-8
 * unless set).
 *
 * Checked: the macro passes each argument's type (C11 _Generic), so an
 * argument is read as the type it has; an argument of a type no
 * conversion takes (a struct, an int *) does not compile, and a
 * conversion that does not fit its argument (%s given an int, %g given
 * an int, more or fewer arguments than conversions) is refused at run
 * time, never read wrongly. Integer conversions take any integer type,
 * %g and %f a double or float, %s and %j a char * (or NULL). At most 23
 * values.
 *
 * Returns 0, or: the state errors of latch_res_json (headers sent, ended,
 * destroyed, wrong thread), reported, nothing sent; LATCH_ERR_INVALID_ARG
 * for a bad format, a mismatched or invalid value (invalid UTF-8 in %s,
 * NaN or infinity, %j that is not JSON, a document past 16 MiB): reported
 * with the caller's site, and the error handlers run with that code and
 * status 500, as after latch_fail (inside a handler, whatever it then
 * returns); LATCH_ERR_NOMEM.
 */
#ifndef __cplusplus
#define LATCH__JT(x)                                                           \
    _Generic((x),                                                              \
        _Bool: 'i',                                                            \
        char: 'i',                                                             \
        signed char: 'i',                                                      \
        unsigned char: 'i',                                                    \
        short: 'i',                                                            \
        unsigned short: 'i',                                                   \
        int: 'i',                                                              \
        unsigned: 'u',                                                         \
        long: 'l',                                                             \
        unsigned long: 'L',                                                    \
        long long: 'q',                                                        \
        unsigned long long: 'Q',                                               \
        float: 'd',                                                            \
        double: 'd',                                                           \
        char *: 's',                                                           \
        const char *: 's',                                                     \
        void *: 's')
#define LATCH__JNARG(...)                                                      \
    LATCH__JNARG_(__VA_ARGS__, 24, 23, 22, 21, 20, 19, 18, 17, 16, 15, 14, 13, \
                  12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1)
#define LATCH__JNARG_(_1, _2, _3, _4, _5, _6, _7, _8, _9, _10, _11, _12, _13,  \
                      _14, _15, _16, _17, _18, _19, _20, _21, _22, _23, _24,   \
                      n, ...)                                                  \
    n
#define LATCH__JCAT(a, b) LATCH__JCAT_(a, b)
#define LATCH__JCAT_(a, b) a##b
#define LATCH__JT1(x) LATCH__JT(x)
#define LATCH__JT2(x, ...) LATCH__JT(x), LATCH__JT1(__VA_ARGS__)
#define LATCH__JT3(x, ...) LATCH__JT(x), LATCH__JT2(__VA_ARGS__)
#define LATCH__JT4(x, ...) LATCH__JT(x), LATCH__JT3(__VA_ARGS__)
#define LATCH__JT5(x, ...) LATCH__JT(x), LATCH__JT4(__VA_ARGS__)
#define LATCH__JT6(x, ...) LATCH__JT(x), LATCH__JT5(__VA_ARGS__)
#define LATCH__JT7(x, ...) LATCH__JT(x), LATCH__JT6(__VA_ARGS__)
#define LATCH__JT8(x, ...) LATCH__JT(x), LATCH__JT7(__VA_ARGS__)
#define LATCH__JT9(x, ...) LATCH__JT(x), LATCH__JT8(__VA_ARGS__)
#define LATCH__JT10(x, ...) LATCH__JT(x), LATCH__JT9(__VA_ARGS__)
#define LATCH__JT11(x, ...) LATCH__JT(x), LATCH__JT10(__VA_ARGS__)
#define LATCH__JT12(x, ...) LATCH__JT(x), LATCH__JT11(__VA_ARGS__)
#define LATCH__JT13(x, ...) LATCH__JT(x), LATCH__JT12(__VA_ARGS__)
#define LATCH__JT14(x, ...) LATCH__JT(x), LATCH__JT13(__VA_ARGS__)
#define LATCH__JT15(x, ...) LATCH__JT(x), LATCH__JT14(__VA_ARGS__)
#define LATCH__JT16(x, ...) LATCH__JT(x), LATCH__JT15(__VA_ARGS__)
#define LATCH__JT17(x, ...) LATCH__JT(x), LATCH__JT16(__VA_ARGS__)
#define LATCH__JT18(x, ...) LATCH__JT(x), LATCH__JT17(__VA_ARGS__)
#define LATCH__JT19(x, ...) LATCH__JT(x), LATCH__JT18(__VA_ARGS__)
#define LATCH__JT20(x, ...) LATCH__JT(x), LATCH__JT19(__VA_ARGS__)
#define LATCH__JT21(x, ...) LATCH__JT(x), LATCH__JT20(__VA_ARGS__)
#define LATCH__JT22(x, ...) LATCH__JT(x), LATCH__JT21(__VA_ARGS__)
#define LATCH__JT23(x, ...) LATCH__JT(x), LATCH__JT22(__VA_ARGS__)
#define LATCH__JT24(x, ...) LATCH__JT(x), LATCH__JT23(__VA_ARGS__)
/* The types of the arguments after the format, one char each. */
#define LATCH__JTYPES(...)                                                     \
    ((const char[]){                                                           \
         LATCH__JCAT(LATCH__JT, LATCH__JNARG(__VA_ARGS__))(__VA_ARGS__), 0} +  \
     1)
#define latch_res_jsonf(res, ...)                                              \
    latch_res_jsonf_at((res), LATCH_HERE, LATCH__JTYPES(__VA_ARGS__),          \
                       __VA_ARGS__)
#else
#define latch_res_jsonf(res, ...)                                              \
    latch_res_jsonf_at((res), LATCH_HERE, NULL, __VA_ARGS__)
#endif
/* types: one char per argument as the macro makes them, or NULL: the
 * arguments are then read as the conversions say, as printf reads them. */
LATCH_API int latch_res_jsonf_at(latch_res *res, latch_site at,
                                 const char *types, const char *fmt, ...);
/* Express's res.type: sets Content-Type from a MIME type ("text/csv"), an
 * extension or a short name ("json", "html", "txt", ".png"); text types
 * get "; charset=utf-8". LATCH_ERR_INVALID_ARG for an unknown name. */
#define latch_res_type(res, type) latch_res_type_at((res), (type), LATCH_HERE)
LATCH_API int latch_res_type_at(latch_res *res, const char *type,
                                latch_site at);
/* Sends the status with its reason phrase as a text/plain body. */
#define latch_res_send_status(res, status)                                     \
    latch_res_send_status_at((res), (status), LATCH_HERE)
LATCH_API int latch_res_send_status_at(latch_res *res, int status,
                                       latch_site at);
/* Redirects (status 0: 302) to url, with Location and a short body. */
#define latch_res_redirect(res, status, url)                                   \
    latch_res_redirect_at((res), (status), (url), LATCH_HERE)
LATCH_API int latch_res_redirect_at(latch_res *res, int status, const char *url,
                                    latch_site at);

/*
 * A JSON body written value by value, without building a string first
 * (escaping, UTF-8 checks and number formatting by latch's writer):
 * latch_res_json_begin on a response that sent nothing, then the values,
 * then latch_res_json_end, which sends it as with latch_res_json (Content-
 * Type application/json; charset=utf-8 unless set). Value calls return 0
 * or the writer's first error, which sticks (LATCH_ERR_INVALID_CHAR for
 * invalid UTF-8, LATCH_ERR_INVALID_ARG for a misplaced value or a
 * non-finite double, LATCH_ERR_LIMIT past 64 nested levels or 16 MiB).
 * latch_res_json_end returns that error, or LATCH_ERR_INVALID_ARG for an
 * unfinished document, reports it, and then answers 500 instead. The writer
 * belongs to the response; it is valid until latch_res_json_end. It is a
 * handle, as a latch_res * is: a writer kept past its request is refused
 * (LATCH_ERR_STREAM_DESTROYED, reported), never the next request's writer.
 */
typedef struct latch_json latch_json;
#define latch_res_json_begin(res) latch_res_json_begin_at((res), LATCH_HERE)
/* NULL (reported) when the response already sent its headers, ended or
 * was destroyed, or a writer is already open. */
LATCH_API latch_json *latch_res_json_begin_at(latch_res *res, latch_site at);
LATCH_API int latch_json_object_begin(latch_json *j);
LATCH_API int latch_json_object_begin_at(latch_json *j, latch_site at);
#define latch_json_object_begin(j) latch_json_object_begin_at((j), LATCH_HERE)
LATCH_API int latch_json_object_end(latch_json *j);
LATCH_API int latch_json_object_end_at(latch_json *j, latch_site at);
#define latch_json_object_end(j) latch_json_object_end_at((j), LATCH_HERE)
LATCH_API int latch_json_array_begin(latch_json *j);
LATCH_API int latch_json_array_begin_at(latch_json *j, latch_site at);
#define latch_json_array_begin(j) latch_json_array_begin_at((j), LATCH_HERE)
LATCH_API int latch_json_array_end(latch_json *j);
LATCH_API int latch_json_array_end_at(latch_json *j, latch_site at);
#define latch_json_array_end(j) latch_json_array_end_at((j), LATCH_HERE)
LATCH_API int latch_json_key(latch_json *j, const char *key);
LATCH_API int latch_json_key_at(latch_json *j, const char *key, latch_site at);
#define latch_json_key(j, key) latch_json_key_at((j), (key), LATCH_HERE)
LATCH_API int latch_json_string(latch_json *j, const char *s);
LATCH_API int latch_json_string_at(latch_json *j, const char *s, latch_site at);
#define latch_json_string(j, s) latch_json_string_at((j), (s), LATCH_HERE)
LATCH_API int latch_json_string_n(latch_json *j, const char *s, size_t n);
LATCH_API int latch_json_string_n_at(latch_json *j, const char *s, size_t n,
                                     latch_site at);
#define latch_json_string_n(j, s, n)                                           \
    latch_json_string_n_at((j), (s), (n), LATCH_HERE)
LATCH_API int latch_json_int(latch_json *j, int64_t v);
LATCH_API int latch_json_int_at(latch_json *j, int64_t v, latch_site at);
#define latch_json_int(j, v) latch_json_int_at((j), (v), LATCH_HERE)
LATCH_API int latch_json_uint(latch_json *j, uint64_t v);
LATCH_API int latch_json_uint_at(latch_json *j, uint64_t v, latch_site at);
#define latch_json_uint(j, v) latch_json_uint_at((j), (v), LATCH_HERE)
LATCH_API int latch_json_double(latch_json *j, double v);
LATCH_API int latch_json_double_at(latch_json *j, double v, latch_site at);
#define latch_json_double(j, v) latch_json_double_at((j), (v), LATCH_HERE)
LATCH_API int latch_json_bool(latch_json *j, bool v);
LATCH_API int latch_json_bool_at(latch_json *j, bool v, latch_site at);
#define latch_json_bool(j, v) latch_json_bool_at((j), (v), LATCH_HERE)
LATCH_API int latch_json_null(latch_json *j);
LATCH_API int latch_json_null_at(latch_json *j, latch_site at);
#define latch_json_null(j) latch_json_null_at((j), LATCH_HERE)
#define latch_res_json_end(res) latch_res_json_end_at((res), LATCH_HERE)
LATCH_API int latch_res_json_end_at(latch_res *res, latch_site at);

/* Tears the response down: the connection is closed without completing
 * the response (a truncated body stays visibly truncated). */
#define latch_res_destroy(res) latch_res_destroy_at((res), LATCH_HERE)
LATCH_API void latch_res_destroy_at(latch_res *res, latch_site at);

/*
 * The state, as Node's res.headersSent, res.writableEnded,
 * res.writableFinished and res.destroyed (false, and reported, for a
 * handle whose request is over and recycled).
 *
 * The headersSent guard belongs where two parties may answer and either
 * may come second: an error handler (the error may come after the body
 * started: pass it on and latch cuts the response, as Express's docs ask
 * of `if (res.headersSent) return next(err)`), and a timer racing a job
 * (latch_set_timeout). A completion that alone answers (latch_work's
 * after, a join's, a pipe's done) needs none: LATCH_ERR_CANCELLED tells
 * it the request timeout or the client came first. A second answer
 * without the guard is refused and reported, never sent: the guard keeps
 * the report away, not a corrupt wire.
 *
 *     static int on_error(const latch_error *err, latch_req *req,
 *                         latch_res *res, void *data)
 *     {
 *         if (latch_res_headers_sent(res))    // Express: return next(err)
 *             return LATCH_NEXT;
 *         latch_res_status(res, err->status);
 *         return latch_res_jsonf(res, "{\"error\":%s}", err->message);
 *     }
 */
LATCH_API bool latch_res_headers_sent(const latch_res *res);
LATCH_API bool latch_res_headers_sent_at(const latch_res *res, latch_site at);
#define latch_res_headers_sent(res) latch_res_headers_sent_at((res), LATCH_HERE)
LATCH_API bool latch_res_writable_ended(const latch_res *res);
LATCH_API bool latch_res_writable_ended_at(const latch_res *res, latch_site at);
#define latch_res_writable_ended(res)                                          \
    latch_res_writable_ended_at((res), LATCH_HERE)
LATCH_API bool latch_res_writable_finished(const latch_res *res);
LATCH_API bool latch_res_writable_finished_at(const latch_res *res,
                                              latch_site at);
#define latch_res_writable_finished(res)                                       \
    latch_res_writable_finished_at((res), LATCH_HERE)
LATCH_API bool latch_res_destroyed(const latch_res *res);
LATCH_API bool latch_res_destroyed_at(const latch_res *res, latch_site at);
#define latch_res_destroyed(res) latch_res_destroyed_at((res), LATCH_HERE)

/*
 * Callbacks, each fired at most once, on the response's thread, after
 * latch's own cleanup: on_finish when the last byte was handed to the
 * OS; on_close when the response is done with, finished or not; on_drain
 * when pending output fell below the high-water mark after a write
 * returned 0. One callback of each kind; a second replaces the first, and
 * a NULL cb removes it. Returns 0, LATCH_ERR_STATE when the event already
 * happened, LATCH_ERR_WRONG_THREAD off the response's loop; both
 * reported.
 *
 * A registered drain callback owns the response until it runs, and runs
 * once the pending output is below the high-water mark (at once, at the
 * next loop turn, when no write is waiting): a handler whose write
 * returned 0 may register it and return LATCH_DONE, and the callback
 * writes the rest (registering again while writes return 0) and ends.
 * If the callback returns leaving no owner (no end, no drain callback, no
 * reference, timer, work or join) the response is reported as
 * ERR_NO_RESPONSE and cut. The request timeout owns nothing: a response
 * that nobody can answer is reported and answered 500 at once, whatever
 * the timeout.
 *
 * Streaming with backpressure (Node's `if (!res.write(chunk))
 * res.once('drain', more)`): write while latch_res_write returns 1; on 0
 * let the drain callback go on. The producer's state has one owner,
 * on_close, which runs once however the response ends (ended, client
 * gone, destroyed); the drain callback never runs after it. No reference.
 * (latch_res_pipe is the same with `done` as the owner.)
 *
 *     struct rows { int next, count; };
 *     static void more(latch_res *res, void *data)
 *     {
 *         struct rows *r = data;              // on_close frees it
 *         char line[32];
 *         int w = 1;
 *         while (w == 1 && r->next < r->count) {
 *             int n = snprintf(line, sizeof(line), "%d\n", r->next++);
 *             w = latch_res_write(res, line, (size_t)n);
 *         }
 *         if (w == 0)                         // past the high-water mark
 *             latch_res_on_drain(res, more, r);
 *         else if (w == 1)                    // < 0: gone, nothing to do
 *             latch_res_end(res, NULL, 0);
 *     }
 *     static void rows_free(latch_res *res, void *data)
 *     {
 *         free(data);
 *     }
 *     static int numbers(latch_req *req, latch_res *res, void *data)
 *     {
 *         struct rows *r = calloc(1, sizeof(*r));
 *         if (r == NULL || latch_res_on_close(res, rows_free, r) < 0) {
 *             free(r);
 *             return latch_fail(req, 500, NULL);
 *         }
 *         r->count = 1000000;
 *         more(res, r);
 *         return LATCH_DONE;
 *     }
 */
LATCH_API int latch_res_on_finish(latch_res *res, latch_res_cb cb, void *data);
LATCH_API int latch_res_on_close(latch_res *res, latch_res_cb cb, void *data);
LATCH_API int latch_res_on_drain(latch_res *res, latch_res_cb cb, void *data);
/* The three are macros over these, so that a refusal names the caller's
 * place; the plain functions remain for callers that take their address. */
LATCH_API int latch_res_on_finish_at(latch_res *res, latch_res_cb cb,
                                     void *data, latch_site at);
LATCH_API int latch_res_on_close_at(latch_res *res, latch_res_cb cb, void *data,
                                    latch_site at);
LATCH_API int latch_res_on_drain_at(latch_res *res, latch_res_cb cb, void *data,
                                    latch_site at);
#define latch_res_on_finish(res, cb, data)                                     \
    latch_res_on_finish_at((res), (cb), (data), LATCH_HERE)
#define latch_res_on_close(res, cb, data)                                      \
    latch_res_on_close_at((res), (cb), (data), LATCH_HERE)
#define latch_res_on_drain(res, cb, data)                                      \
    latch_res_on_drain_at((res), (cb), (data), LATCH_HERE)

/*
 * Reference counting: a response stays a valid object (a tombstone once
 * the request is done) until the last reference is released. Code that
 * keeps `res` beyond the call that received it (a global, a thread, a
 * driver's callback argument) takes a reference on the response's thread
 * with latch_res_retain and gives it back once with latch_res_release.
 * latch's own async APIs (timers, latch_work, joins) hold their own.
 *
 * latch counts its own references (connection queue, chain, timers, work,
 * joins) apart from the ones taken here. A release without a matching
 * retain is refused (LATCH_ERR_STATE, reported with its site; nothing is
 * released), so it can never recycle a response latch still uses. A
 * retain from another thread is refused (LATCH_ERR_WRONG_THREAD); a
 * release from another thread is reported as LATCH_ERR_WRONG_THREAD and
 * carried out on the response's loop, so the reference is not leaked.
 * Both are macros over the _at variants; the plain functions remain for
 * callers that take their address.
 *
 * The latch_res * and latch_req * a handler or callback receives are
 * handles, not addresses: they name this request's response for as long
 * as it is referenced. One kept without a reference and used after the
 * request is over is refused (LATCH_ERR_STREAM_DESTROYED, NULL, false or
 * an empty string, as the call returns) and reported, and never reaches
 * another request, whatever object latch reuses. Callbacks get the same
 * handle the handler got; latch_req_res and latch_res_req map one to the
 * other.
 */
LATCH_API void latch_res_retain(latch_res *res);
LATCH_API void latch_res_release(latch_res *res);
LATCH_API void latch_res_retain_at(latch_res *res, latch_site at);
LATCH_API void latch_res_release_at(latch_res *res, latch_site at);
#define latch_res_retain(res) latch_res_retain_at((res), LATCH_HERE)
#define latch_res_release(res) latch_res_release_at((res), LATCH_HERE)

/* Runs fn(res, data) on the response's loop; callable from any thread.
 * The caller must hold a reference (latch_res_retain, taken on the loop)
 * that lasts until fn runs; fn may release it. Returns 0 or
 * LATCH_ERR_NOMEM / LATCH_ERR_INVALID_ARG, and then fn never runs.
 * A handle whose request is already over is refused
 * (LATCH_ERR_STREAM_DESTROYED, reported). Once posted, fn runs exactly
 * once, even if the reference was released too early and the request
 * ended meanwhile: then every call fn makes through res is refused and
 * reported, and fn can still free `data`. A draining server waits, up to
 * its drain timeout, for the responses the program holds, so a post made
 * while holding one runs. Once latch_run is returning (the worker's loop
 * ended: the drain timeout passed), a post is refused with
 * LATCH_ERR_STATE, reported, and fn never runs; the objects of that run stay
 * addressable (calls on them are refused) until the next latch_run or
 * latch_app_free. */
LATCH_API int latch_res_post(latch_res *res, latch_res_cb fn, void *data);
/* latch_res_post is a macro over this variant, so that a refusal names the
 * caller's place; the plain function remains for taking its address. */
LATCH_API int latch_res_post_at(latch_res *res, latch_res_cb fn, void *data,
                                latch_site at);
#define latch_res_post(res, fn, data)                                          \
    latch_res_post_at((res), (fn), (data), LATCH_HERE)

/* ------------------------------------------------------------------ */
/* Pipes, files and static serving                                      */
/* ------------------------------------------------------------------ */

/*
 * A pipe: a producer attached to a response, pulled with backpressure and
 * told exactly once how it ended (Node's stream.pipeline for a response).
 * The producer writes with latch_res_write / latch_res_end as any code
 * does, so a late write from it meets the same state machine: refused and
 * reported, never on the wire.
 *
 * pull(res, data) runs on the response's loop once after latch_res_pipe
 * returned (at the next loop turn, once the response may write) and again
 * each time the pending output fell below the high-water mark after a
 * write returned 0; never after the response ended. A producer whose
 * source is slower than the client writes whenever it has data and waits
 * for pull only after a 0.
 *
 * done(res, status, data) runs exactly once, last, on the loop: status 0
 * after latch_res_end once the last byte went to the OS; LATCH_ERR_CANCELLED
 * when the request's cancellation signal fired first (client gone, request
 * timeout, shutdown); the error given to latch_res_pipe_fail; LATCH_ERR_LIMIT
 * when a write passed LATCH_LIMIT_OUTPUT; LATCH_ERR_STREAM_DESTROYED when
 * someone destroyed the response. Nothing of the pipe runs after it; it may
 * free `data`. The pipe holds a reference to the response until done
 * returned.
 *
 * The pipe claims the response: a whole answer made beside it
 * (latch_res_send, _json, _redirect, _send_status: a forgotten return
 * after latch_res_pipe) is refused with
 * LATCH_ERR_HTTP_HEADERS_SENT and reported, naming this call as where the
 * response was sealed, and the producer answers (where Node lets the
 * res.end() win and fails the pipe's next write). latch_res_write /
 * latch_res_end stay allowed from anywhere: they are how the producer
 * writes. Inside pull every call is the producer's.
 *
 * Returns 0 (done will run), or an error and done never runs:
 * LATCH_ERR_INVALID_ARG (pull NULL), LATCH_ERR_STATE (a pipe already,
 * one per response; reported naming the first producer's call as the
 * seal), LATCH_ERR_STREAM_WRITE_AFTER_END (ended),
 * LATCH_ERR_STREAM_DESTROYED, LATCH_ERR_WRONG_THREAD, LATCH_ERR_NOMEM; all
 * but NOMEM reported.
 */
typedef void (*latch_pull_cb)(latch_res *res, void *data);
typedef void (*latch_done_cb)(latch_res *res, int status, void *data);
#define latch_res_pipe(res, pull, done, data)                                  \
    latch_res_pipe_at((res), (pull), (done), (data), LATCH_HERE)
LATCH_API int latch_res_pipe_at(latch_res *res, latch_pull_cb pull,
                                latch_done_cb done, void *data, latch_site at);
/*
 * The producer failed with `error` (negative: a -errno / UV_E* or a
 * LATCH_ERR_* code). Before the headers went out (a head held by
 * latch_res_write_head counts as not sent) the error handlers run with
 * err->code = error and err->status 404 for UV_ENOENT / UV_ENOTDIR, 403 for
 * UV_EACCES / UV_EPERM, 500 otherwise; after the headers the response is
 * destroyed without its terminating chunk (no error handler runs), so the
 * client sees a truncated body, never a complete-looking one. Either way
 * done runs last with `error`, and later reports name this call as where
 * the response was sealed. Returns 0, or (reported) LATCH_ERR_INVALID_ARG
 * for an error >= 0, LATCH_ERR_STATE without a pipe, the response's state
 * error once it ended or was destroyed (the pipe's done already ran or
 * will run with the earlier outcome), LATCH_ERR_WRONG_THREAD.
 */
#define latch_res_pipe_fail(res, error)                                        \
    latch_res_pipe_fail_at((res), (error), LATCH_HERE)
LATCH_API int latch_res_pipe_fail_at(latch_res *res, int error, latch_site at);

/* How latch_res_sendfile sends a file; all-zero (or NULL) is the default. */
typedef struct latch_file_opts {
    const char *root;    /* path is resolved under root, symlinks included;
                            escaping it is a 403 (NULL: the path as is) */
    uint64_t max_age_ms; /* Cache-Control: public, max-age (seconds) */
    bool no_etag, no_last_modified, no_ranges;
    const char *content_type; /* NULL: from the extension */
    bool attachment; /* Content-Disposition: attachment; filename="..." */
} latch_file_opts;
/*
 * Sends a file as Express's res.sendFile does, on a pipe: the file is
 * opened and stat'ed off the loop; Content-Type from the extension
 * (application/octet-stream when unknown) unless set, Content-Length,
 * ETag (strong, from inode, size and mtime) and Last-Modified,
 * Accept-Ranges: bytes; 304 for If-None-Match (weak comparison) or
 * If-Modified-Since, 412 for If-Match / If-Unmodified-Since; one byte range
 * is a 206 with Content-Range, an unsatisfiable one a 416 with
 * "Content-Range: bytes * /size" (no space), several ranges or a malformed
 * Range header the whole file (200); If-Range that does not match sends
 * it whole. HEAD sends the headers only. The status set before (200 by
 * default) is kept for a whole file. The bytes are those of the open
 * file: a file that shrinks while it is sent truncates the response (it is
 * destroyed, done gets LATCH_ERR_HTTP_CONTENT_LENGTH_MISMATCH), one that
 * grows sends the length announced.
 *
 * A path that is not a regular file, or that `opts->root` does not
 * contain, fails as latch_res_pipe_fail does before the headers: the error
 * handlers run with 404 (UV_ENOENT, UV_ENOTDIR, a directory: UV_EISDIR is
 * sent as 404 too), 403 (UV_EACCES, UV_EPERM, an escape from root) or 500.
 * done(res, status, data), which may be NULL, runs exactly once as a
 * pipe's. Returns 0, or an error (done never runs): LATCH_ERR_INVALID_ARG
 * (path NULL or empty, reported), LATCH_ERR_HTTP_HEADERS_SENT once the
 * headers went out, the state errors of latch_res_pipe.
 *
 * From the call on, the body is the file's: a latch_res_send, _json,
 * _write, _end ... made beside it (Express's res.sendFile() and a
 * forgotten return) is refused with LATCH_ERR_HTTP_HEADERS_SENT and
 * reported, naming this call as where the response was sealed; headers
 * and status may still be set until the file is opened, but not sent
 * (latch_res_write_head, latch_res_flush_headers and latch_sse_start are
 * refused the same way). Moving the chain on is refused as well
 * (latch_handler). After a failure (done's error handlers run) the
 * response is theirs again.
 */
#define latch_res_sendfile(res, path, opts, done, data)                        \
    latch_res_sendfile_at((res), (path), (opts), (done), (data), LATCH_HERE)
LATCH_API int latch_res_sendfile_at(latch_res *res, const char *path,
                                    const latch_file_opts *opts,
                                    latch_done_cb done, void *data,
                                    latch_site at);

enum {
    LATCH_DOTFILES_IGNORE = 0, /* 404 (default) */
    LATCH_DOTFILES_DENY = 1,   /* 403 */
    LATCH_DOTFILES_ALLOW = 2,
};
/* latch_static's options; all-zero (or NULL) means the defaults. */
typedef struct latch_static_opts {
    const char *index;     /* NULL: "index.html"; "": none */
    int dotfiles;          /* LATCH_DOTFILES_IGNORE, _DENY, _ALLOW */
    bool no_fallthrough;   /* false: a miss calls the next handler; true: 404 */
    bool no_redirect_dirs; /* false: /dir -> 301 /dir/ */
    bool precompressed;    /* serve file.br / file.gz when Accept-Encoding
                              allows and the sibling exists */
    uint64_t max_age_ms;
} latch_static_opts;
/*
 * Serves the files under `root` for GET and HEAD requests whose path
 * starts with `prefix` (NULL or "/": every path), as Express's
 * serve-static: the rest of the path names a file under root, a directory
 * its index file (a directory without the trailing slash is a 301 to the
 * path with it), dotfiles per opts, and a miss (no such file, a method
 * other than GET/HEAD) continues the chain unless no_fallthrough. The path
 * is checked before any disk access: a ".." segment (also percent-encoded),
 * an encoded '/' or '\', a '\', a NUL or control byte is a 403 (400 for a
 * malformed escape), and a symlink that resolves outside root is a 403;
 * the bytes of a file outside root are never sent. Responses are those of
 * latch_res_sendfile. With precompressed, Vary: Accept-Encoding is sent
 * and a .br or .gz sibling is preferred when the client accepts it.
 * Returns 0, LATCH_ERR_INVALID_ARG (app or root NULL, root not an
 * existing directory, dotfiles out of range), LATCH_ERR_NOMEM, or
 * LATCH_ERR_STATE once the app runs. The app keeps what it needs of opts.
 */
LATCH_API int latch_static(latch_app *app, const char *prefix, const char *root,
                           const latch_static_opts *opts);

/* ------------------------------------------------------------------ */
/* Reverse proxy                                                        */
/* ------------------------------------------------------------------ */

/* latch_proxy's options; all-zero (or NULL) means the defaults. */
typedef struct latch_proxy_opts {
    uint64_t connect_timeout_ms;  /* resolve + connect [5000]; then 504 */
    uint64_t response_timeout_ms; /* the response head, then each read of
                                     the body [60000]; 504 before headers */
    uint64_t idle_timeout_ms;     /* a pooled upstream connection [60000] */
    bool preserve_host;           /* forward the client's Host (default: the
                                     upstream's authority) */
    bool no_forwarded_headers;    /* add no X-Forwarded-For/-Proto/-Host and no
                                     Forwarded */
    const char *strip_prefix;     /* removed from the path before forwarding */
    int max_idle_per_upstream;    /* keep-alive pool per worker; 0: 32;
                                     negative: no pooling */
    /*
     * Called once when the upstream fails (connect error, reset, timeout,
     * malformed response) before any response header was forwarded, while
     * the response is FRESH: it may answer (its own 502 page); if it
     * returns with the response unanswered, latch answers 502 (504 on a
     * timeout) through the error handlers. Its return value is ignored.
     * It may answer through a producer of its own too (latch_res_sendfile
     * of a 502 page, latch_res_pipe, latch_proxy to another upstream),
     * which then answers as it would from a handler.
     * An answer it begins and leaves unfinished when it returns (a
     * write without an end) is reported as ERR_NO_RESPONSE (call
     * "on_error", sealed where its headers went out) and cut: the hook
     * answers before it returns.
     * err->code is the cause (UV_ECONNREFUSED, UV_ETIMEDOUT,
     * LATCH_ERR_UPSTREAM, ...), err->status 502 or 504. Never called after
     * the client left, and never once headers were forwarded: then latch
     * destroys the response (truncated), and a late call from the app is
     * refused and reported like any other.
     */
    void (*on_error)(const latch_error *err, latch_req *req, latch_res *res,
                     void *data);
    void *data;
} latch_proxy_opts;

/*
 * Forwards the request to `upstream` ("http://host[:port][/base]": a name,
 * resolved off the loop, or an IPv4 or [IPv6] literal) and streams the
 * answer back, as nginx's proxy_pass: the path as received (after
 * opts->strip_prefix, then under the upstream's base path); hop-by-hop
 * fields (Connection, Keep-Alive, Proxy-*, TE, Trailer,
 * Transfer-Encoding, Upgrade, and every field named in Connection)
 * stripped both ways; X-Forwarded-For/-Proto/-Host and Forwarded set,
 * appended to the client's own only when latch_app_set_trust_proxy trusts
 * the peer; Via added both ways. The upstream's answer is parsed strictly
 * (one Content-Length, no CL with TE, chunked alone and last, no obs-fold,
 * no NUL, at most 8 interim 1xx, no 101) and its framing is regenerated
 * by latch; a refused answer is a 502 and nothing of it is forwarded. The
 * body comes back with backpressure (a slow client slows the upstream
 * read). Upstream connections are kept alive per worker and upstream.
 * A request pipelined behind others on its client connection goes
 * upstream once the response before it ended (its answer could not be
 * sent earlier anyway), on the connection that one gave back to the
 * pool, as nginx does; the response timeout runs from then. A client
 * that leaves first releases it unsent. Never pipelined upstream.
 *
 * Endings, each exactly once: a failure before the response headers
 * calls opts->on_error (see above), then the error handlers answer 502,
 * or 504 after a timeout; a failure after them destroys the response
 * without its last chunk (truncated); a client that leaves, a request
 * timeout or shutdown closes the upstream connection at once (never
 * pooled) and calls nothing; an idempotent request that fails on a reused
 * connection before any response byte is sent again once on a fresh one.
 *
 * The request body: under a latch_use_proxy prefix it is streamed (see
 * there); otherwise it is the one latch buffered (LATCH_LIMIT_BODY
 * applies), sent with a Content-Length. `req` and `res` are the same
 * request's.
 * Until the upstream fails before its headers (on_error, then the error
 * handlers), the body is the proxy's: another body call on the response is
 * refused (LATCH_ERR_HTTP_HEADERS_SENT, reported, naming latch_proxy as
 * the seal), as is sending the head (latch_res_write_head,
 * latch_res_flush_headers) or moving the chain on (latch_handler).
 * Returns 0 (the response is the proxy's: return LATCH_DONE), or an error
 * with nothing sent: LATCH_ERR_INVALID_ARG (NULL, a malformed upstream;
 * reported), LATCH_ERR_HTTP_HEADERS_SENT and the other state errors of a
 * response that is not FRESH (reported), LATCH_ERR_WRONG_THREAD,
 * LATCH_ERR_NOMEM.
 */
#define latch_proxy(req, res, upstream, opts)                                  \
    latch_proxy_at((req), (res), (upstream), (opts), LATCH_HERE)
LATCH_API int latch_proxy_at(latch_req *req, latch_res *res,
                             const char *upstream, const latch_proxy_opts *opts,
                             latch_site at);
/*
 * Proxies every request whose path starts with `prefix` (NULL or "/":
 * all) to `upstream`, as latch_proxy does; a middleware, so one in front
 * of it (authentication) may answer first.
 *
 * Request bodies under `prefix` are streamed, never buffered whole: such
 * a request is dispatched as soon as its head arrived (so latch_req_body
 * is empty for every handler under the prefix), and its body goes to the
 * upstream as it arrives, with the client's Content-Length or else
 * chunked, at the upstream's pace (while the upstream does not take it,
 * latch reads nothing more from the client). LATCH_LIMIT_BODY, which
 * bounds what latch buffers, does not apply to such a body (it is never
 * buffered); a latch_route_body_limit rule that matches does (nginx's
 * client_max_body_size for a location): a Content-Length above it is a
 * 413 before anything is forwarded, a chunked body that grows past it
 * gets a 413 (or is cut, once the answer started) and its upstream
 * request is abandoned. So do the
 * deadlines of a request's arrival (LATCH_TIMEOUT_BODY,
 * LATCH_TIMEOUT_RECEIVE, LATCH_LIMIT_MIN_RATE after
 * LATCH_TIMEOUT_RATE_GRACE): 408 when nothing was sent, else the
 * response cut and the upstream request abandoned; the time latch reads
 * nothing because the upstream does not take more (or the request waits
 * for the responses before it) does not count against the client. Expect:
 * 100-continue is passed through: latch sends no 100 of its own, the
 * upstream's 100 reaches the client, and an upstream that answers first
 * (401, 413) spares the client its upload. A response that starts while
 * the body still arrives (a middleware's 401, an upstream that answers
 * early) says Connection: close; the rest of the body is read and
 * dropped. A streamed request is retried on a fresh connection (see
 * above) only while no byte of its body went out.
 *
 * Returns 0,
 * LATCH_ERR_INVALID_ARG (app NULL, upstream malformed), LATCH_ERR_NOMEM,
 * LATCH_ERR_STATE once the app runs. The app keeps what it needs of opts.
 */
LATCH_API int latch_use_proxy(latch_app *app, const char *prefix,
                              const char *upstream,
                              const latch_proxy_opts *opts);

/* ------------------------------------------------------------------ */
/* Timers                                                               */
/* ------------------------------------------------------------------ */

/*
 * Async idioms, each shown beside its functions, none with a mutex, a
 * condition variable or a reference count in user code: an async
 * middleware (latch_next), the headersSent guard
 * (latch_res_headers_sent), a timer racing a job (below), blocking work
 * with its data copied (latch_work_copy), cancellation of a blocking call
 * (latch_work_cancelled, latch_work_cancel_fd), a join of pool tasks
 * (latch_join_new), streaming with drain (latch_res_on_drain). Only code
 * that keeps a res where latch does not see it (a global, a driver's
 * callback argument) needs latch_res_retain. tests/integration/
 * test_doc_examples.sh compiles every example of this file.
 */
typedef struct latch_timer latch_timer;

/*
 * Calls cb(res, data) after `ms` milliseconds on the response's loop. The
 * timer holds a reference to the response until it fires or is cleared,
 * and is cancelled (cb never runs) when the response finishes or is
 * destroyed first. Returns NULL when res is over (reported), when called
 * from another thread (reported), or out of memory. A latch_timer * is a
 * handle, not an address: kept after its response was over and recycled,
 * it is recognized as stale, and latch_clear_timeout on it does nothing
 * (returns 0), never touching another request's timer.
 *
 * A timer racing a job (Promise.race of a query and a 50 ms deadline):
 * each side answers unless the other did, with latch_res_headers_sent as
 * the guard. The timer's data is NULL and the job's is latch's copy:
 * nothing to free, no reference, whichever wins.
 *
 *     struct quote { const char *symbol; double price; };
 *     static void too_slow(latch_res *res, void *data)  // the timer
 *     {
 *         if (!latch_res_headers_sent(res))
 *             latch_res_json(res, "{\"price\":null}");
 *     }
 *     static void priced(latch_res *res, int status, void *data)
 *     {
 *         const struct quote *q = data;
 *         if (status == 0 && !latch_res_headers_sent(res))
 *             latch_res_jsonf(res, "{\"price\":%g}", q->price);
 *     }
 *     static int price(latch_req *req, latch_res *res, void *data)
 *     {
 *         struct quote q = {.symbol = latch_req_param(req, "symbol")};
 *         latch_set_timeout(res, 50, too_slow, NULL);
 *         return latch_work_copy(res, fetch_price, priced, &q, sizeof(q));
 *     }
 */
#define latch_set_timeout(res, ms, cb, data)                                   \
    latch_set_timeout_at((res), (ms), (cb), (data), LATCH_HERE)
LATCH_API latch_timer *latch_set_timeout_at(latch_res *res, uint64_t ms,
                                            latch_res_cb cb, void *data,
                                            latch_site at);
/* Cancels a timer; 0 also when it already fired or was cleared (as Node's
 * clearTimeout). LATCH_ERR_WRONG_THREAD (reported) off the loop. */
LATCH_API int latch_clear_timeout(latch_timer *timer);
LATCH_API int latch_clear_timeout_at(latch_timer *timer, latch_site at);
#define latch_clear_timeout(timer) latch_clear_timeout_at((timer), LATCH_HERE)

/*
 * Runs work(data) on libuv's thread pool, then after(res, status, data) on
 * the response's loop. status is 0, or LATCH_ERR_CANCELLED when the
 * request was cancelled meanwhile (work may then not have run at all, if
 * it had not started). The response is retained until `after` returned.
 * Returns 0 (after is then called exactly once) or an error (never
 * called): LATCH_ERR_STATE when the response is over, WRONG_THREAD.
 */
#define latch_work(res, work, after, data)                                     \
    latch_work_at((res), (work), (after), (data), LATCH_HERE)
LATCH_API int latch_work_at(latch_res *res, void (*work)(void *data),
                            void (*after)(latch_res *res, int status,
                                          void *data),
                            void *data, latch_site at);

/*
 * latch_work with the job's data copied: `size` bytes (1 to
 * LATCH_WORK_COPY_MAX) at `data` are copied into memory latch owns, and
 * work and after get that copy (aligned for any type), valid until after
 * returned, then freed by latch. `data` may be a local variable: the
 * closure an Express handler gets for free, with no malloc, no free, and
 * no owner to agree on between the job, the completion and on_close. The
 * job writes its results into the copy; the completion reads them.
 * Pointers in the copy are copied as pointers: request strings stay valid
 * for the job's whole life (see "The request"), other memory must outlive
 * the completion. Returns what latch_work returns, and
 * LATCH_ERR_INVALID_ARG (reported) for NULL data, a size of 0 or one past
 * LATCH_WORK_COPY_MAX; after an error nothing was copied and after never
 * runs.
 *
 *     struct user { const char *id; bool found; char name[64]; };
 *     static void find(void *data)            // on the pool thread
 *     {
 *         struct user *u = data;              // latch's copy
 *         u->found = db_find_name(u->id, u->name, sizeof(u->name));
 *     }
 *     static void found(latch_res *res, int status, void *data)
 *     {
 *         const struct user *u = data;        // freed once this returned
 *         if (status == 0 && u->found)
 *             latch_res_jsonf(res, "{\"name\":%s}", u->name);
 *         else if (status == 0)               // else cancelled: say nothing
 *             latch_res_send_status(res, 404);
 *     }
 *     static int get_user(latch_req *req, latch_res *res, void *data)
 *     {
 *         struct user u = {.id = latch_req_param(req, "id")};
 *         return latch_work_copy(res, find, found, &u, sizeof(u));
 *     }
 */
#define LATCH_WORK_COPY_MAX 65536
#define latch_work_copy(res, work, after, data, size)                          \
    latch_work_copy_at((res), (work), (after), (data), (size), LATCH_HERE)
LATCH_API int latch_work_copy_at(latch_res *res, void (*work)(void *data),
                                 void (*after)(latch_res *res, int status,
                                               void *data),
                                 const void *data, size_t size, latch_site at);

/*
 * Inside a latch_work job (on its pool thread): whether the job's request
 * was cancelled (the client left, the request timeout, shutdown), and a
 * descriptor that becomes readable when it is, to poll beside a driver's
 * own socket and abort a blocking call, as fetch(url, { signal }) does.
 * The descriptor is made on the job's first call (later calls return the
 * same one), is readable at once if the request is cancelled already, and
 * belongs to latch: do not read, write or close it; it is closed once the
 * job returned. The completion still runs exactly once, with
 * LATCH_ERR_CANCELLED, and frees what the job used: nothing else holds
 * the job's data, so no reference count is needed between the completion
 * and on_close. Outside a job: false, and -1 (also -1 when no descriptor
 * can be made, errno set). The end of the response alone is no
 * cancellation: a job the handler left running after answering (an e-mail
 * to send) runs on.
 *
 * A job that works in steps asks between them (an AbortSignal's aborted):
 *
 *     struct export { int done, total; };
 *     static void export_rows(void *data)   // on the pool thread
 *     {
 *         struct export *e = data;
 *         while (e->done < e->total && !latch_work_cancelled())
 *             e->done += render_batch(e);   // stops once the client left
 *     }
 *
 * A job blocked in a driver polls the descriptor beside the driver's
 * socket (fetch(url, { signal })); here its data is heap memory that the
 * completion alone frees:
 *
 *     struct fetch { bool ok; const char *body; };
 *     static void fetch_job(void *data)     // on the pool thread
 *     {
 *         struct fetch *f = data;
 *         struct pollfd p[2] = {{driver_fd(f), POLLIN, 0},
 *                               {latch_work_cancel_fd(), POLLIN, 0}};
 *         while (!driver_done(f) && poll(p, 2, -1) >= 0 && !p[1].revents)
 *             driver_step(f);
 *         f->ok = driver_done(f);
 *     }
 *     static void fetch_after(latch_res *res, int status, void *data)
 *     {
 *         struct fetch *f = data;     // status: 0, or LATCH_ERR_CANCELLED
 *         if (status == 0 && f->ok)   // cancelled: the app answered
 *             latch_res_jsonf(res, "{\"data\":%j}", f->body);
 *         else if (status == 0)
 *             latch_res_send_status(res, 502);
 *         free(f);                    // the only owner; runs exactly once
 *     }
 */
LATCH_API bool latch_work_cancelled(void);
LATCH_API int latch_work_cancel_fd(void);

/*
 * A join: n tasks of one request and one completion, called exactly once
 * on the response's loop: with status 0 and every task's result once all
 * n resolved, or with the first task's error as soon as one fails, or
 * with LATCH_ERR_CANCELLED when the request is cancelled first. After the
 * completion, latch_join_settled is true and later resolutions are
 * ignored (tasks still running may check it and stop). Each task reports
 * once (resolve or fail) and must not use the join after its report. The
 * join frees itself once the completion ran and every task reported, or
 * when its response is recycled (tasks that never report, such as timers
 * cleared with the response, hold nothing). A request may make any number
 * of joins, one after another or at once; none takes one of the 8
 * latch_req_on_cancel callbacks the request may register.
 *
 * latch_join_resolve and latch_join_fail may be called from any thread
 * (a latch_work job, a driver's thread), as long as the join is alive
 * (before the task's own report, its response referenced): the report is
 * posted to the response's loop, where the completion runs, and the call
 * returns 0 once it is queued. A task index outside the join is
 * LATCH_ERR_INVALID_ARG, a second report of one task LATCH_ERR_STATE (on
 * the loop, for a posted one); both reported. latch_join_settled may be
 * read from any thread. A latch_join * is a handle: once its request is
 * over and recycled, a late report returns LATCH_ERR_STREAM_DESTROYED (as a
 * promise settled long ago, it changes nothing) and latch_join_settled
 * true; it never reaches another request's join.
 *
 * A join of pool tasks (Promise.all of two queries): each task is a
 * latch_work_copy job whose completion reports to the join, and the
 * join's completion answers once. Results are values, or pointers to
 * memory that outlives the completion: after a failure or a cancellation
 * the completion gets results NULL and later reports are ignored, so a
 * result it would have had to free would leak. No reference: the join
 * holds the response, each job its copy.
 *
 *     struct part { latch_join *join; int index; long count; };
 *     static void part_done(latch_res *res, int status, void *data)
 *     {
 *         const struct part *p = data;
 *         if (status < 0)
 *             latch_join_fail(p->join, p->index, status);
 *         else
 *             latch_join_resolve(p->join, p->index, (void *)p->count);
 *     }
 *     static void both(latch_res *res, int status, void *const *r, void *d)
 *     {
 *         if (status == 0)
 *             latch_res_jsonf(res, "{\"users\":%ld,\"orders\":%ld}",
 *                             (long)r[0], (long)r[1]);
 *         else if (status != LATCH_ERR_CANCELLED)
 *             latch_res_send_status(res, 502);
 *     }
 *     static int counts(latch_req *req, latch_res *res, void *data)
 *     {
 *         latch_join *j = latch_join_new(res, 2, both, NULL);
 *         for (int i = 0; j != NULL && i < 2; i++) {
 *             struct part p = {j, i, 0};
 *             if (latch_work_copy(res, count, part_done, &p, sizeof(p)))
 *                 latch_join_fail(j, i, LATCH_ERR_STATE);
 *         }
 *         return j != NULL ? LATCH_DONE : latch_fail(req, 500, NULL);
 *     }
 */
typedef struct latch_join latch_join;
typedef void (*latch_join_cb)(latch_res *res, int status, void *const *results,
                              void *data);
LATCH_API latch_join *latch_join_new(latch_res *res, int n, latch_join_cb done,
                                     void *data);
LATCH_API int latch_join_resolve(latch_join *j, int index, void *result);
LATCH_API int latch_join_fail(latch_join *j, int index, int error);
/* Macros over the _at variants, so that a refusal names the caller's
 * place (also for a task on another thread: its report reaches the loop
 * with the site); the plain functions remain. */
LATCH_API latch_join *latch_join_new_at(latch_res *res, int n,
                                        latch_join_cb done, void *data,
                                        latch_site at);
LATCH_API int latch_join_resolve_at(latch_join *j, int index, void *result,
                                    latch_site at);
LATCH_API int latch_join_fail_at(latch_join *j, int index, int error,
                                 latch_site at);
#define latch_join_new(res, n, done, data)                                     \
    latch_join_new_at((res), (n), (done), (data), LATCH_HERE)
#define latch_join_resolve(j, index, result)                                   \
    latch_join_resolve_at((j), (index), (result), LATCH_HERE)
#define latch_join_fail(j, index, error)                                       \
    latch_join_fail_at((j), (index), (error), LATCH_HERE)
LATCH_API bool latch_join_settled(const latch_join *j);

/* ------------------------------------------------------------------ */
/* Server-Sent Events and pub/sub                                       */
/* ------------------------------------------------------------------ */
/*
 * An event stream (WHATWG HTML, "Server-sent events") on a response. Each
 * call below goes through the response's state machine like
 * latch_res_write: on a response that is over it is refused and reported
 * (write after end, destroyed), and it returns what latch_res_write
 * returns (1, or 0 when the caller should slow down, see
 * latch_res_on_drain), or a negative error.
 */
/* Starts the stream: status 200, Content-Type: text/event-stream,
 * Cache-Control: no-cache, X-Accel-Buffering: no (nginx passes each event
 * on at once), no Content-Length or Content-Encoding; the headers go out
 * now. LATCH_ERR_HTTP_HEADERS_SENT (reported, naming latch_sse_start)
 * when they went out already, or while a file being opened or the proxy
 * holds the response (as latch_res_flush_headers), before any of its
 * headers is touched (beside a latch_res_pipe it is allowed: its producer
 * may stream events); LATCH_ERR_STATE (reported) while the server shuts
 * down. The stream gets a comment line (":") after each heartbeat period
 * without output. A request timeout (latch_app_set_request_timeout) still
 * runs: when it fires, the stream is destroyed and its subscriptions end
 * (a late write is refused and reported); a route whose streams should
 * outlive it clears it first with latch_req_set_timeout(req, 0, 0). */
#define latch_sse_start(res) latch_sse_start_at((res), LATCH_HERE)
LATCH_API int latch_sse_start_at(latch_res *res, latch_site at);
/* Sends one event: "event: E" (event NULL: omitted, the client's default
 * "message"), "id: I" (id NULL: omitted), one "data: " line per line of
 * data (split on CRLF, CR and LF, so no field can be injected; the client
 * joins them with LF; NULL: no data line), then the blank line that
 * dispatches it. LATCH_ERR_INVALID_CHAR (reported, nothing sent) for CR
 * or LF in event or id, or invalid UTF-8 anywhere; LATCH_ERR_STATE
 * (reported) on a response latch_sse_start did not start. Data "" is one
 * empty data line: the client dispatches an event with empty data; NULL
 * sends none, and then EventSource dispatches nothing (an id alone still
 * sets the client's last event id). */
#define latch_sse_send(res, event, id, data)                                   \
    latch_sse_send_at((res), (event), (id), (data), LATCH_HERE)
LATCH_API int latch_sse_send_at(latch_res *res, const char *event,
                                const char *id, const char *data,
                                latch_site at);
/* A comment (": text", one per line of text; NULL or "": ":"), which the
 * client ignores: keeps proxies from timing the stream out. */
#define latch_sse_comment(res, text)                                           \
    latch_sse_comment_at((res), (text), LATCH_HERE)
LATCH_API int latch_sse_comment_at(latch_res *res, const char *text,
                                   latch_site at);
/* "retry: ms": the client's reconnection delay (at most 24 hours, else
 * LATCH_ERR_INVALID_ARG, reported). */
#define latch_sse_retry(res, ms) latch_sse_retry_at((res), (ms), LATCH_HERE)
LATCH_API int latch_sse_retry_at(latch_res *res, uint64_t ms, latch_site at);
/* The heartbeat period (default 15000 ms; 0: none; at most 24 hours).
 * Before latch_run (LATCH_ERR_STATE after). */
LATCH_API int latch_app_set_sse_heartbeat(latch_app *app, uint64_t ms);

/* A message as a subscriber's callback sees it; valid during the call.
 * data is NUL-terminated, len excludes the NUL; id is the message's id
 * ("17" in-process); event may be NULL. */
typedef struct latch_message {
    const char *channel, *event, *id, *data;
    size_t len;
} latch_message;
typedef void (*latch_message_cb)(latch_res *res, const latch_message *msg,
                                 void *data);
/*
 * Subscribes the response to `channel` (1 to 256 bytes). cb NULL: each
 * message is sent as an SSE event with its id (latch_sse_start is called
 * first if the response sent nothing yet). Otherwise cb(res, msg, data)
 * runs on the response's thread for each message, in id order.
 *
 * The subscription ends exactly once, when the response is over for any
 * reason (it finished, the handler ended it, the client left, the request
 * timed out, latch_res_destroy, the server shut down); cb never runs
 * after that. A Last-Event-ID request header replays the messages the
 * channel still holds after that id (within this call; with a backend,
 * once the worker has loaded the channel's history from it, if it had to);
 * when the id is older than the channel's history (or unknown to it), one
 * gap event is sent instead: event "latch-gap", data {"last_id":"<the id
 * received>"}. Without the header, the subscriber receives every message
 * published after this call (with a backend: after the moment the worker
 * started watching the channel, which is no later).
 * The same gap event tells a subscriber that messages were dropped for it
 * (LATCH_SLOW_DROP) or may have been lost by the backend.
 *
 * At shutdown each subscriber gets a final event "latch-shutdown" (an SSE
 * event, or a call of cb) and its response is ended.
 *
 * Returns 0; LATCH_ERR_INVALID_ARG for a bad channel name,
 * LATCH_ERR_STREAM_WRITE_AFTER_END / _DESTROYED for a response that is
 * over, LATCH_ERR_STATE while the server shuts down (each reported);
 * LATCH_ERR_NOMEM. A response may hold several subscriptions.
 */
#define latch_subscribe(res, channel, cb, data)                                \
    latch_subscribe_at((res), (channel), (cb), (data), LATCH_HERE)
LATCH_API int latch_subscribe_at(latch_res *res, const char *channel,
                                 latch_message_cb cb, void *data,
                                 latch_site at);
/*
 * Publishes an event (event NULL: none; data[0..len), NULL with len 0:
 * empty). Any thread, any time. The id is assigned where the event is
 * stored: in-process, a per-channel counter ("1", "2", ...); with a
 * backend (latch_app_set_pubsub), the backend's. Every subscriber, of this
 * process or another one on the same backend, receives each event once,
 * in id order, on its own response's thread. Returns the number of this
 * process's subscribers of the channel (>= 0), or LATCH_ERR_INVALID_ARG
 * (bad channel, NULL data with a length) or LATCH_ERR_INVALID_CHAR (CR or
 * LF in event, invalid UTF-8), both reported, or LATCH_ERR_NOMEM; with a
 * backend also LATCH_ERR_STATE (its connection is down, or before
 * latch_run) and LATCH_ERR_LIMIT (65,536 publishes, or 64 MiB, wait for
 * the backend to answer): never reported, the caller decides.
 */
#define latch_publish(app, channel, event, data, len)                          \
    latch_publish_at((app), (channel), (event), (data), (len), LATCH_HERE)
LATCH_API int latch_publish_at(latch_app *app, const char *channel,
                               const char *event, const char *data, size_t len,
                               latch_site at);
/*
 * Publishing through a broker, so that every latch process sharing it
 * delivers every event: "redis://host:port" (port 6379 if left out);
 * NULL: in-process (the default). Before latch_run. Each worker that has
 * subscribers keeps two connections to Redis (commands, and a subscriber
 * connection watching the channels it has subscribers for), not one per
 * client. A publish appends the event to a Redis stream and publishes it
 * in one atomic step, so the stream entry's id ("1718000000000-0") is the
 * event's id in every process; the stream keeps exactly the channel
 * history (latch_app_set_channel_history), and a worker that starts
 * watching a channel loads it, so a Last-Event-ID given to any process
 * (one restarted, or one that never saw the event) is replayed alike.
 * When a connection drops, latch reconnects with backoff; what was
 * published meanwhile is read back from the stream (from the last id each
 * worker delivered) and delivered in order with its ids, and the
 * subscribers get a latch-gap event only when the stream no longer holds
 * that id (trimmed past it, Redis restarted empty) or cannot be read. A
 * Last-Event-ID that another process delivered before this one is served
 * from the stream too, without a gap. A publish accepted is kept until
 * Redis answers it, and sent again (once: the stream entry carries a
 * token) when its connection dropped first; only a shutdown while Redis
 * is down drops what still waits. latch_publish fails with LATCH_ERR_STATE
 * while the connection is down (from a thread that is no worker: worker
 * 0's, which carries it), or before latch_run. Returns 0, LATCH_ERR_INVALID_ARG
 * for a URL it cannot use, LATCH_ERR_STATE while running. Nothing connects
 * until a worker needs it.
 */
LATCH_API int latch_app_set_pubsub(latch_app *app, const char *url);
/* This process's subscribers of `channel` now (0 for an unknown one). */
LATCH_API int latch_app_subscribers(latch_app *app, const char *channel);
/* Events kept per channel for Last-Event-ID replay (default 256; 0 to
 * 1048576). Before the first subscribe or publish (LATCH_ERR_STATE). */
LATCH_API int latch_app_set_channel_history(latch_app *app, int events);
enum {
    LATCH_SLOW_DISCONNECT = 0, /* close the stream (the default) */
    LATCH_SLOW_DROP = 1,       /* drop the oldest queued, send a latch-gap */
};
/* A subscriber whose connection does not take its events has them queued
 * (shared, counted by size) up to max_queued_bytes (default 1 MiB); past
 * that, `policy` applies. Before latch_run. */
LATCH_API int latch_app_set_slow_consumer(latch_app *app,
                                          size_t max_queued_bytes, int policy);

#ifdef __cplusplus
}
#endif
#endif
