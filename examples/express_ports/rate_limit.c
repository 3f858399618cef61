/*
 * rate_limit.c - an async rate-limit middleware over a Redis-like store,
 * ported from Express (issue 16's second example).
 *
 * The Express original and its port sit side by side below, between the
 * markers that scripts/count_lines.sh reads for the README's table: code
 * lines only, blank and comment lines not counted, on either side.
 *
 * What latch owns here: the store's round trip runs on the thread pool
 * with the middleware's local as its data (latch_work_copy); the chain
 * waits (LATCH_PENDING) and the completion moves it exactly once:
 * latch_next, a 429, or latch_fail. When the request timeout answered or
 * the client left first, the completion gets LATCH_ERR_CANCELLED and does
 * none of them: the Express code needs its `if (req.timedout) return`,
 * and without it next() runs the route for a request already answered
 * (ERR_HTTP_HEADERS_SENT there); with latch a forgotten check makes a
 * second move, which is refused and reported, never acted on.
 *
 * Usage: rate_limit [-p port] [-r limit] [-w window_s] [-d store_delay_ms]
 * [-t timeout_ms] [-f]. -r requests per client address per window
 * (default 100), -w the window (default 60 s), -d the store's simulated
 * latency (default 0), -t the request timeout answered 503 by latch
 * (default 2000), -f the store is down. GET / answers "ok" when the
 * limiter lets the request through. Listens on 127.0.0.1 (port 0: the
 * kernel chooses) and prints the address on stdout. SIGINT/SIGTERM drain
 * and exit 0.
 */
#include <latch.h>

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static long limit = 100;  /* requests per window */
static int window_s = 60; /* the window */

/* ------------------------------------------------------------------ */
/* The store (Express's `redis`), simulated                             */
/* ------------------------------------------------------------------ */

/*
 * INCR and EXPIRE over 1024 counters, one per hash of the key: the
 * stand-in for a Redis server, which is another process and does each
 * command atomically; here the atomics do. Two keys of one hash share a
 * counter (a simplification a test with one client never meets). Called
 * on the thread pool, from any number of jobs at once.
 */
#define STORE_SLOTS 1024
static struct {
    atomic_long count;
    atomic_int_least64_t expires_ms; /* 0: no expiry */
} store[STORE_SLOTS];
static int store_delay_ms;
static bool store_down;

static int64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static size_t store_slot(const char *key)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */

    for (; *key != '\0'; key++)
        h = (h ^ (unsigned char)*key) * 1099511628211ull;
    return (size_t)(h % STORE_SLOTS);
}

/* INCR key: the count after this one, or -1 when the store is down. A
 * counter whose expiry passed starts again from 0, as an expired key. */
static long store_incr(const char *key)
{
    size_t i = store_slot(key);
    int_least64_t exp = atomic_load(&store[i].expires_ms);
    struct timespec ts = {store_delay_ms / 1000,
                          (store_delay_ms % 1000) * 1000000L};

    if (store_delay_ms > 0)
        nanosleep(&ts, NULL);
    if (store_down)
        return -1;
    if (exp != 0 && now_ms() >= exp &&
        atomic_compare_exchange_strong(&store[i].expires_ms, &exp, 0))
        atomic_store(&store[i].count, 0);
    return atomic_fetch_add(&store[i].count, 1) + 1;
}

/* EXPIRE key seconds. */
static void store_expire(const char *key, int seconds)
{
    atomic_store(&store[store_slot(key)].expires_ms,
                 now_ms() + (int64_t)seconds * 1000);
}

/* ------------------------------------------------------------------ */
/* Express and latch                                                    */
/* ------------------------------------------------------------------ */

// clang-format off
/* express: begin
 * const rateLimit = async (req, res, next) => {
 *   try {
 *     const key = `rate:${req.ip}`;
 *     const count = await redis.incr(key);
 *     if (count === 1) await redis.expire(key, 60);
 *     if (req.timedout) return; // connect-timeout answered meanwhile
 *     if (count > 100) {
 *       return res.status(429).json({ error: 'Too many requests' });
 *     }
 *     next();
 *   } catch (err) {
 *     next(err);
 *   }
 * };
 * express: end
 * app.use(rateLimit);  (latch_use in main) */
// clang-format on

/* latch: begin */
struct hit {
    char key[64];
    long count;
};
static void count_hit(void *data) /* await redis.incr(key), expire */
{
    struct hit *h = data;
    if ((h->count = store_incr(h->key)) == 1)
        store_expire(h->key, window_s);
}
static void counted(latch_res *res, int status, void *data)
{
    const struct hit *h = data;      /* cancelled: latch answered, do nothing */
    if (status == 0 && h->count < 0) /* the catch: next(err) */
        latch_fail(latch_res_req(res), 500, "The store is down");
    else if (status == 0 && h->count <= limit)
        latch_next(latch_res_req(res));
    else if (status == 0 && latch_res_status(res, 429) == 0)
        latch_res_json(res, "{\"error\":\"Too many requests\"}");
}
static int rate_limit(latch_req *req, latch_res *res, void *data)
{
    struct hit h;
    snprintf(h.key, sizeof(h.key), "rate:%s", latch_req_ip(req));
    int r = latch_work_copy(res, count_hit, counted, &h, sizeof(h));
    return r < 0 ? r : LATCH_PENDING;
}
/* latch: end */

static int hello(latch_req *req, latch_res *res, void *data)
{
    return latch_res_send(res, "ok", 2);
}

int main(int argc, char **argv)
{
    int port = 8080, timeout_ms = 2000, opt, r;
    latch_app *app;

    while ((opt = getopt(argc, argv, "p:r:w:d:t:f")) != -1) {
        switch (opt) {
        case 'p': port = atoi(optarg); break;
        case 'r': limit = atol(optarg); break;
        case 'w': window_s = atoi(optarg); break;
        case 'd': store_delay_ms = atoi(optarg); break;
        case 't': timeout_ms = atoi(optarg); break;
        case 'f': store_down = true; break;
        default:
            fprintf(stderr,
                    "usage: %s [-p port] [-r limit] [-w window_s] "
                    "[-d store_delay_ms] [-t timeout_ms] [-f]\n",
                    argv[0]);
            return 2;
        }
    }
    if ((app = latch_app_new()) == NULL)
        return 1;
    if ((r = latch_use(app, NULL, rate_limit, NULL)) < 0 ||
        (r = latch_get(app, "/", hello, NULL)) < 0 ||
        (r = latch_app_set_request_timeout(app, (uint64_t)timeout_ms, 503)) <
            0 ||
        (r = latch_listen(app, "127.0.0.1", port)) < 0) {
        fprintf(stderr, "rate_limit: %s\n", latch_strerror(r));
        latch_app_free(app);
        return 1;
    }
    printf("rate_limit: listening on http://127.0.0.1:%d/\n",
           latch_app_port(app));
    fflush(stdout);
    r = latch_run(app);
    latch_app_free(app);
    return r < 0 ? 1 : 0;
}
