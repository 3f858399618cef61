/*
 * sse_bench - latch's side of the SSE fan-out measure (bench/sse.sh, read
 * by bench/tools/sseclients.c): one channel, its subscribers as SSE
 * streams, and a publisher on a thread of its own.
 *
 *   GET /events                 subscribes to "bench" (latch_subscribe)
 *   GET /publish?n=K&rate=R     starts publishing K events, R a second
 *                               (0: as fast as latch_publish returns), from
 *                               a thread that is no worker; answers at once
 *
 * Each event's data is the publisher's CLOCK_MONOTONIC in ns at the
 * publish, padded to 64 bytes, so that the client measures publish ->
 * client latency on the same clock. The slow-consumer limit is raised (64
 * MiB a subscriber, drop + gap past it) so that a burst is measured, not
 * cut: the client reads as fast as it can.
 *
 * Usage: sse_bench [-p port] [-w workers] [-r redis://host:port]
 * Listens on 127.0.0.1 and prints "sse_bench: port N".
 */
#include <latch.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct job {
    latch_app *app;
    long n;
    double rate;
} job;

static atomic_bool busy;

static int64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void *publisher(void *arg)
{
    job *j = arg;
    int64_t start = now_ns(), gap;
    char data[64];
    long i;

    gap = j->rate > 0 ? (int64_t)(1e9 / j->rate) : 0;
    for (i = 0; i < j->n; i++) {
        if (gap > 0) {
            int64_t due = start + gap * i, t = now_ns();
            if (due > t) {
                struct timespec ts = {(time_t)((due - t) / 1000000000),
                                      (long)((due - t) % 1000000000)};
                nanosleep(&ts, NULL);
            }
        }
        /* The time, then padding: 64 bytes of data an event. */
        snprintf(data, sizeof(data), "%-63lld", (long long)now_ns());
        if (latch_publish(j->app, "bench", NULL, data, 63) < 0)
            fprintf(stderr, "sse_bench: publish %ld refused\n", i);
    }
    atomic_store(&busy, false);
    free(j);
    return NULL;
}

static int h_events(latch_req *req, latch_res *res, void *data)
{
    (void)req;
    (void)data;
    latch_subscribe(res, "bench", NULL, NULL);
    return LATCH_DONE;
}

static int h_publish(latch_req *req, latch_res *res, void *data)
{
    const char *n = latch_req_query(req, "n"), *rate;
    pthread_t t;
    job *j;

    rate = latch_req_query(req, "rate");
    if (n == NULL || atomic_exchange(&busy, true))
        return latch_fail(req, 409, "publishing already, or no n");
    if ((j = calloc(1, sizeof(*j))) == NULL) {
        atomic_store(&busy, false);
        return latch_fail(req, 500, "out of memory");
    }
    j->app = data;
    j->n = atol(n);
    j->rate = rate != NULL ? atof(rate) : 0;
    if (pthread_create(&t, NULL, publisher, j) != 0) {
        free(j);
        atomic_store(&busy, false);
        return latch_fail(req, 500, "no thread");
    }
    pthread_detach(t);
    latch_res_send(res, "started\n", 8);
    return LATCH_DONE;
}

int main(int argc, char **argv)
{
    latch_app *app = latch_app_new();
    const char *redis = NULL;
    int port = 0, workers = 1, i, r;

    if (app == NULL)
        return 1;
    for (i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "-p") == 0)
            port = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "-w") == 0)
            workers = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "-r") == 0)
            redis = argv[i + 1];
    }
    latch_app_set_workers(app, workers);
    latch_app_set_slow_consumer(app, (size_t)64 << 20, LATCH_SLOW_DROP);
    if (redis != NULL && (r = latch_app_set_pubsub(app, redis)) < 0) {
        fprintf(stderr, "sse_bench: %s: %s\n", redis, latch_strerror(r));
        return 1;
    }
    latch_get(app, "/events", h_events, NULL);
    latch_get(app, "/publish", h_publish, app);
    if ((r = latch_listen(app, "127.0.0.1", port)) < 0) {
        fprintf(stderr, "sse_bench: %s\n", latch_strerror(r));
        return 1;
    }
    printf("sse_bench: port %d\n", latch_app_port(app));
    fflush(stdout);
    r = latch_run(app);
    latch_app_free(app);
    return r < 0 ? 1 : 0;
}
