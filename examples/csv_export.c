/*
 * csv_export.c - a generated CSV streamed row by row with backpressure
 * (latch_res_pipe): the producer writes rows while latch_res_write says
 * there is room (1), stops at 0, and writes on when pull is called again.
 * Memory stays at one row plus the connection's high-water mark, however
 * many rows and however slow the client.
 *
 * Two sources, as a real export meets them:
 *   fast: rows are ready at once (an in-memory table): the client is the
 *         slower side, so the producer waits for pull after each 0.
 *   slow: rows arrive in batches from a timer (a database cursor paging
 *         every few ms): the producer is the slower side, so it writes a
 *         batch when it arrives and asks for the next one; pull may come
 *         while a batch is still on its way, and must not start a second.
 * Either way done runs exactly once: 0 when the last byte went out,
 * LATCH_ERR_CANCELLED when the client left (the pending batch timer is
 * cleared, the state freed), never anything after it.
 *
 * Routes:
 *   GET /export.csv?rows=N&source=fast|slow   N rows (default 1000,
 *       at most 10,000,000), text/csv, chunked; a bad N is a 400.
 *
 * Usage: csv_export [-p port]. Listens on 127.0.0.1 (default 8080; 0:
 * the kernel chooses) and prints the address; SIGINT/SIGTERM drain.
 */
#include <latch.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_ROWS 10000000L
#define BATCH 100  /* rows per batch of the slow source */
#define BATCH_MS 2 /* and how long each batch takes to come */

typedef struct export
{
    long next, rows; /* the next row to write, and how many in all */
    long ready;      /* slow source: rows arrived and not yet written */
    bool slow;
    bool waiting;       /* slow source: a batch is on its way */
    bool want;          /* pull came: the client has room */
    latch_timer *timer; /* the batch on its way */
}
export;

/* One row: id, a name, an amount with two decimals, a quoted comment
 * (with a comma and a doubled quote, so a reader must parse CSV). */
static int row(char *out, size_t cap, long i)
{
    return snprintf(out, cap,
                    "%ld,item-%ld,%ld.%02ld,\"note, \"\"%ld\"\"\"\r\n", i, i,
                    (i * 37) % 10000, i % 100, i % 7);
}

static void next_batch(export *e, latch_res *res);

/* Writes the rows that are ready while the client has room. */
static void write_rows(export *e, latch_res *res)
{
    char line[128];
    int r = 1;

    while (r == 1 && e->next < e->rows && (!e->slow || e->ready > 0)) {
        int n = row(line, sizeof(line), e->next++);
        if (e->slow)
            e->ready--;
        if (e->next == e->rows) {
            /* the last row ends the response; done follows once it is
             * on the wire */
            latch_res_end(res, line, (size_t)n);
            return;
        }
        r = latch_res_write(res, line, (size_t)n);
    }
    if (r < 0)
        return; /* the response is over: done tells how */
    e->want = r == 1;
    if (e->slow && e->ready == 0)
        next_batch(e, res);
}

static void batch_arrived(latch_res *res, void *data)
{
    export *e = data;
    long left = e->rows - e->next;

    e->timer = NULL;
    e->waiting = false;
    e->ready = left < BATCH ? left : BATCH;
    /* write now only if the client has room; else pull will come */
    if (e->want)
        write_rows(e, res);
}

static void next_batch(export *e, latch_res *res)
{
    if (e->waiting || e->next >= e->rows)
        return;
    e->timer = latch_set_timeout(res, BATCH_MS, batch_arrived, e);
    e->waiting = e->timer != NULL;
}

/* The client has room: rows that are ready go; a slow source without
 * rows has a batch on its way, which writes when it comes. */
static void pull(latch_res *res, void *data)
{
    export *e = data;

    e->want = true;
    if (!e->slow || e->ready > 0)
        write_rows(e, res);
    else
        next_batch(e, res);
}

static void done(latch_res *res, int status, void *data)
{
    export *e = data;

    (void)res;
    /* a batch still on its way never comes now */
    if (e->timer != NULL)
        latch_clear_timeout(e->timer);
    if (status != 0 && status != LATCH_ERR_CANCELLED)
        fprintf(stderr, "csv_export: export ended: %s\n",
                latch_err_name(status));
    free(e);
}

static int on_export(latch_req *req, latch_res *res, void *data)
{
    const char *n = latch_req_query(req, "rows");
    const char *src = latch_req_query(req, "source");
    long rows = 1000;
    char *end = NULL;
    export *e;

    (void)data;
    if (n != NULL) {
        rows = strtol(n, &end, 10);
        if (*n == '\0' || *end != '\0' || rows < 0 || rows > MAX_ROWS)
            return latch_fail(req, 400, "rows must be 0 .. 10000000");
    }
    if (src != NULL && strcmp(src, "fast") != 0 && strcmp(src, "slow") != 0)
        return latch_fail(req, 400, "source must be fast or slow");
    latch_res_set_header(res, "Content-Type", "text/csv; charset=utf-8");
    latch_res_set_header(res, "Content-Disposition",
                         "attachment; filename=\"export.csv\"");
    if (rows == 0) {
        latch_res_send(res, "", 0);
        return LATCH_DONE;
    }
    if ((e = calloc(1, sizeof(*e))) == NULL)
        return latch_fail(req, 500, "out of memory");
    e->rows = rows;
    e->slow = src != NULL && strcmp(src, "slow") == 0;
    if (latch_res_pipe(res, pull, done, e) < 0) {
        free(e); /* done never runs when the pipe was refused */
        return latch_fail(req, 500, "cannot start the export");
    }
    return LATCH_DONE;
}

int main(int argc, char **argv)
{
    int port = 8080, opt, r;
    latch_app *app;

    while ((opt = getopt(argc, argv, "p:")) != -1) {
        if (opt != 'p') {
            fprintf(stderr, "usage: %s [-p port]\n", argv[0]);
            return 2;
        }
        port = atoi(optarg);
    }
    if ((app = latch_app_new()) == NULL)
        return 1;
    latch_app_set_workers(app, 1);
    latch_get(app, "/export.csv", on_export, NULL);
    r = latch_listen(app, "127.0.0.1", port);
    if (r < 0) {
        fprintf(stderr, "csv_export: cannot listen: %s\n", latch_strerror(r));
        latch_app_free(app);
        return 1;
    }
    printf("csv_export: listening on http://127.0.0.1:%d/\n",
           latch_app_port(app));
    fflush(stdout);
    r = latch_run(app);
    latch_app_free(app);
    return r < 0 ? 1 : 0;
}
