/*
 * demo_bugs.c - the lifecycle bugs of Node.js, Express and Fastify
 * programs (the seeds' list), each written the same way in C as a route of
 * `latch demo` under /bug/<name>. The code here is wrong on purpose: it is
 * what a developer coming from Express writes. latch refuses the second
 * answer, the late write, the extra next; reports each with the place it
 * happened and the place the response was sealed; and the client gets
 * exactly one well-formed response (or a visibly truncated one).
 *
 * The demo page shows each handler's source from this very file (the
 * build embeds it; demo.c cuts it at the marker comments "bug: NAME" and
 * "end bug"), so the line numbers on the page are the ones in the reports.
 *
 * What it is not: an example to copy. examples/users_api.c is the same
 * kind of code written right.
 */
#include "demo.h"

#include <latch.h>

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The upstream the proxy route forwards to (demo.c's, a slow one). */
static char upstream_url[128];

/* bug: error-handler */
/* The app's error handler, as Express apps write it:
 *   app.use((err, req, res, next) =>
 *       res.status(err.status || 500).json({ error: err.message })) */
static int on_error(const latch_error *err, latch_req *req, latch_res *res,
                    void *data)
{
    (void)req;
    (void)data;
    latch_res_status(res, err->status);
    return latch_res_jsonf(res, "{\"error\":%s}", err->message);
}
/* end bug */

/* bug: missing-return */
static int get_user(latch_req *req, latch_res *res, void *data)
{
    const char *id = latch_req_query(req, "id");

    (void)data;
    if (id == NULL || strcmp(id, "1") != 0) {
        latch_res_status(res, 404);
        latch_res_json(res, "{\"error\":\"no such user\"}");
        /* the missing line: return LATCH_DONE; */
    }
    latch_res_json(res, "{\"id\":1,\"name\":\"Ada\"}");
    return LATCH_DONE;
}
/* end bug */

/* bug: double-next */
/* A logging middleware: next() for debug requests... */
static int log_debug(latch_req *req, latch_res *res, void *data)
{
    (void)res;
    (void)data;
    if (latch_req_query(req, "debug") != NULL) {
        fprintf(stderr, "demo: debug request %s\n", latch_req_url(req));
        latch_next(req);
    }
    return LATCH_NEXT; /* ...and next() again for every request */
}

static int list_orders(latch_req *req, latch_res *res, void *data)
{
    (void)req;
    (void)data;
    return latch_res_json(res, "[{\"order\":1,\"total\":\"9.90\"}]");
}
/* end bug */

/* bug: catch-and-forward */
static int load_stock(const char *sku, int *count)
{
    (void)sku;
    *count = 0;
    return -EIO; /* the inventory store is down */
}

static int get_stock(latch_req *req, latch_res *res, void *data)
{
    int count, r = load_stock(latch_req_query(req, "sku"), &count);

    (void)data;
    if (r < 0) { /* } catch (err) { */
        latch_res_status(res, 500);
        latch_res_json(res, "{\"error\":\"inventory unavailable\"}");
        return latch_fail(req, 500, "inventory store failed"); /* next(err) */
    }
    return latch_res_jsonf(res, "{\"count\":%d}", count);
}
/* end bug */

/* bug: timer-race */
static void run_report_query(void *data)
{
    (void)data;
    usleep(300 * 1000); /* the database takes 300 ms today */
}

static void give_up(latch_res *res, void *data)
{
    (void)data;
    latch_res_status(res, 504);
    latch_res_json(res, "{\"error\":\"the report took too long\"}");
}

static void report_ready(latch_res *res, int status, void *data)
{
    (void)status;
    (void)data;
    latch_res_json(res, "{\"rows\":[3,1,4]}");
}

static int get_report(latch_req *req, latch_res *res, void *data)
{
    (void)req;
    (void)data;
    latch_set_timeout(res, 100, give_up, NULL); /* a 100 ms budget */
    latch_work(res, run_report_query, report_ready, NULL);
    return LATCH_DONE;
}
/* end bug */

/* bug: async-after-500 */
static void write_audit_row(void *data)
{
    (void)data;
    usleep(200 * 1000);
}

static void audited(latch_res *res, int status, void *data)
{
    (void)status;
    (void)data;
    latch_res_set_header(res, "X-Audit", "written");
}

/* An async middleware nobody awaits: app.use(async (req, res, next) => {
 * next(); await audit.write(req); res.set('X-Audit', 'written') }) */
static int audit(latch_req *req, latch_res *res, void *data)
{
    (void)req;
    (void)data;
    latch_work(res, write_audit_row, audited, NULL);
    return LATCH_NEXT;
}

static int checkout(latch_req *req, latch_res *res, void *data)
{
    (void)res;
    (void)data;
    return latch_fail(req, 500, "payment service unavailable");
}
/* end bug */

/* bug: pipe-failed */
typedef struct export_job {
    int rows;
} export_job;

/* The producer: three rows, then the disk fails under it. */
static void export_rows(latch_res *res, void *data)
{
    export_job *job = data;
    char line[32];

    while (job->rows < 3) {
        int n = snprintf(line, sizeof(line), "row %d\n", ++job->rows);
        if (latch_res_write(res, line, (size_t)n) == 0)
            return; /* pulled again when the client caught up */
    }
    latch_res_pipe_fail(res, -EIO);
}

/* stream.pipeline(rows, res, err => { if (err) res.end('export failed') }) */
static void export_done(latch_res *res, int status, void *data)
{
    free(data);
    if (status != 0)
        latch_res_end(res, "export failed\n", 14);
}

static int get_export(latch_req *req, latch_res *res, void *data)
{
    export_job *job = calloc(1, sizeof(*job));

    (void)data;
    if (job == NULL)
        return latch_fail(req, 503, "out of memory");
    latch_res_set_header(res, "Content-Type", "text/plain; charset=utf-8");
    if (latch_res_pipe(res, export_rows, export_done, job) < 0) {
        free(job);
        return latch_fail(req, 500, "cannot start the export");
    }
    return LATCH_DONE;
}
/* end bug */

/* bug: proxy-client-left */
/* proxy.on('error', (err, req, res) => {
 *     res.writeHead(502); res.end('Bad gateway') }) */
static void upstream_failed(const latch_error *err, latch_req *req,
                            latch_res *res, void *data)
{
    (void)err;
    (void)req;
    (void)data;
    latch_res_status(res, 502);
    latch_res_send(res, "Bad gateway\n", 12);
}

static int get_slow_page(latch_req *req, latch_res *res, void *data)
{
    latch_proxy_opts opts = {0};

    (void)data;
    opts.response_timeout_ms = 1000;
    opts.on_error = upstream_failed;
    if (latch_proxy(req, res, upstream_url, &opts) < 0)
        return latch_fail(req, 502, "cannot proxy");
    return LATCH_DONE;
}
/* end bug */

/* bug: pubsub-after-close */
#define ROOM_MAX 64
static latch_res *room[ROOM_MAX]; /* const clients = [] */
static unsigned room_len;
static pthread_mutex_t room_mu = PTHREAD_MUTEX_INITIALIZER;

static int join_room(latch_req *req, latch_res *res, void *data)
{
    (void)req;
    (void)data;
    latch_sse_start(res);
    latch_sse_send(res, "joined", NULL, "you are in the room");
    latch_subscribe(res, "demo-room", NULL, NULL); /* keeps it open */
    pthread_mutex_lock(&room_mu);
    room[room_len++ % ROOM_MAX] = res; /* clients.push(res), never removed */
    pthread_mutex_unlock(&room_mu);
    return LATCH_DONE;
}

static void deliver(latch_res *res, void *data)
{
    latch_sse_send(res, "message", NULL, data);
}

/* clients.forEach(c => c.write(...)), each on its own worker's loop */
static int post_message(latch_req *req, latch_res *res, void *data)
{
    unsigned i, n;

    (void)req;
    (void)data;
    pthread_mutex_lock(&room_mu);
    n = room_len < ROOM_MAX ? room_len : ROOM_MAX;
    for (i = 0; i < n; i++)
        latch_res_post(room[i], deliver, "someone is typing");
    pthread_mutex_unlock(&room_mu);
    return latch_res_jsonf(res, "{\"posted_to\":%d}", (int)n);
}
/* end bug */

/* bug: return-and-send */
/* Fastify: async (req, reply) => { reply.send(item); return item } */
static int get_item(latch_req *req, latch_res *res, void *data)
{
    (void)req;
    (void)data;
    latch_res_json(res, "{\"id\":7,\"name\":\"lamp\"}");
    return LATCH_NEXT; /* "return item": go on after answering */
}
/* end bug */

/* A catch-all behind every bug route: what a LATCH_NEXT reaches. */
static int not_found(latch_req *req, latch_res *res, void *data)
{
    (void)req;
    (void)data;
    latch_res_status(res, 404);
    return latch_res_json(res, "{\"error\":\"not found\"}");
}

const demo_bug demo_bugs[] = {
    {"missing-return", "GET", "/bug/missing-return?id=42", "missing return",
     "The handler answers 404 and, with no return after it, falls through to "
     "the 200 answer: Express throws ERR_HTTP_HEADERS_SENT (\"Cannot set "
     "headers after they are sent to the client\") from the second res.json, "
     "which an async handler turns into an unhandled rejection.",
     DEMO_FETCH, 1, NULL},
    {"double-next", "GET", "/bug/double-next?debug=1", "double next",
     "A middleware calls next() in a branch and again at its end: Express "
     "runs the route twice, and the second run fails with "
     "ERR_HTTP_HEADERS_SENT.",
     DEMO_FETCH, 1, NULL},
    {"catch-and-forward", "GET", "/bug/catch-and-forward?sku=lamp",
     "catch that responds and forwards",
     "The catch block answers 500 and also calls next(err): the error "
     "handler answers again, and Express throws ERR_HTTP_HEADERS_SENT from "
     "inside the error handler.",
     DEMO_FETCH, 3, "error-handler"},
    {"timer-race", "GET", "/bug/timer-race", "timer racing the data",
     "A 100 ms timer answers 504 while the query still runs; when the rows "
     "arrive at 300 ms the callback answers again: ERR_HTTP_HEADERS_SENT, "
     "often an uncaught exception that takes the process down.",
     DEMO_FETCH, 1, NULL},
    {"async-after-500", "GET", "/bug/async-after-500",
     "async middleware after a 500",
     "A middleware starts async work and calls next() at once; the route "
     "fails with 500, and when the work completes the middleware sets a "
     "header on the answered response: ERR_HTTP_HEADERS_SENT, long after "
     "the request, with no request in the stack trace.",
     DEMO_FETCH, 1, "error-handler"},
    {"pipe-failed", "GET", "/bug/pipe-failed", "write after a pipe failed",
     "The source fails after three rows; pipeline() destroys the response "
     "and its callback writes an error message to it: ERR_STREAM_DESTROYED "
     "(or write after end), and whether the client can tell the body is "
     "cut depends on the framing.",
     DEMO_FETCH, 1, NULL},
    {"proxy-client-left", "GET", "/bug/proxy-client-left",
     "proxy error after the client left",
     "The client gives up before the slow upstream answers; http-proxy's "
     "error event then fires (ECONNRESET) and the handler writes a 502 to a "
     "response whose client is gone: ERR_STREAM_DESTROYED, or a crash on "
     "writeHead.",
     DEMO_ABORT, 0, NULL},
    {"pubsub-after-close", "GET", "/bug/pubsub-after-close",
     "pub/sub write after close",
     "Each event-stream client is pushed on a list that nothing empties "
     "when it leaves; the next message is written to the closed responses: "
     "write after end (ERR_STREAM_WRITE_AFTER_END or ERR_STREAM_DESTROYED), "
     "and the list grows for ever.",
     DEMO_SSE_PUBLISH, 1, NULL},
    {"return-and-send", "GET", "/bug/return-and-send",
     "Fastify-style return-and-send",
     "An async Fastify handler calls reply.send(item) and also returns "
     "item: Fastify logs FST_ERR_REP_ALREADY_SENT (\"Reply was already "
     "sent\"); in Express the same shape is res.json() followed by next().",
     DEMO_FETCH, 1, NULL},
};
const size_t demo_nbugs = sizeof(demo_bugs) / sizeof(demo_bugs[0]);

int demo_bugs_register(latch_app *app, const char *upstream)
{
    snprintf(upstream_url, sizeof(upstream_url), "%s", upstream);
    latch_use_error(app, on_error, NULL);
    latch_get(app, "/bug/missing-return", get_user, NULL);
    latch_use(app, "/bug/double-next", log_debug, NULL);
    latch_get(app, "/bug/double-next", list_orders, NULL);
    latch_get(app, "/bug/catch-and-forward", get_stock, NULL);
    latch_get(app, "/bug/timer-race", get_report, NULL);
    latch_use(app, "/bug/async-after-500", audit, NULL);
    latch_get(app, "/bug/async-after-500", checkout, NULL);
    latch_get(app, "/bug/pipe-failed", get_export, NULL);
    latch_get(app, "/bug/proxy-client-left", get_slow_page, NULL);
    latch_get(app, "/bug/pubsub-after-close", join_room, NULL);
    latch_post(app, "/bug/pubsub-after-close/publish", post_message, NULL);
    latch_get(app, "/bug/return-and-send", get_item, NULL);
    return latch_all(app, "/bug/*", not_found, NULL);
}
