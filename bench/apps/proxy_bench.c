/*
 * proxy_bench - the latch side of bench/proxy.sh: every request forwarded
 * to one upstream with latch_use_proxy, as nginx's proxy_pass does in the
 * same script.
 *
 * The pool size is an option so that the comparison is like for like
 * (nginx's `keepalive 64` keeps 64 idle upstream connections per worker;
 * -m 64 here) and so that the idle pooled connection measure can keep
 * thousands (-m 0 would be latch's default, 32).
 *
 * -P sets LATCH_LIMIT_PIPELINE, the requests of one client connection
 * dispatched at once (64 by default); a proxied one goes upstream only
 * once the response before it ended, so either way a client connection
 * holds one upstream connection at a time, as with nginx; -P 1 also reads
 * the requests one at a time, as nginx does.
 *
 * -M: on SIGUSR1 (taken by a thread of its own, with sigwait, so no
 * handler runs inside the allocator) it prints the heap's bytes in use
 * (mallinfo2's uordblks) on stderr, as "proxy_bench: heap_in_use=N": what
 * the process holds, unlike RSS, which keeps the allocator's high-water
 * mark. bench/proxy.sh reads it for the pooled connection measure.
 *
 * It is not an example: no error handlers, no logging.
 *
 * Usage: proxy_bench -u http://127.0.0.1:PORT [-p port] [-m max_idle]
 *        [-k keepalive_ms] [-w workers] [-P pipeline] [-M]
 * Defaults: port 18280, 64 idle upstream connections per worker, client
 * keep-alive 120000 ms, 1 worker. Listens on 127.0.0.1 only; SIGINT and
 * SIGTERM drain and exit 0.
 */
#include <latch.h>

#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static sigset_t usr1;

/* -M: one line per SIGUSR1, the heap in use. */
static void *heap_reporter(void *arg)
{
    int sig;

    (void)arg;
    while (sigwait(&usr1, &sig) == 0) {
        struct mallinfo2 mi = mallinfo2();
        fprintf(stderr, "proxy_bench: heap_in_use=%zu\n", mi.uordblks);
        fflush(stderr);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    latch_proxy_opts po = {.max_idle_per_upstream = 64};
    const char *upstream = NULL;
    int port = 18280, workers = 1, pipeline = 64, heap = 0, opt, r;
    pthread_t reporter;
    long keepalive_ms = 120000;
    latch_app *app;

    while ((opt = getopt(argc, argv, "u:p:m:k:w:P:M")) != -1) {
        switch (opt) {
        case 'u': upstream = optarg; break;
        case 'p': port = atoi(optarg); break;
        case 'm': po.max_idle_per_upstream = atoi(optarg); break;
        case 'k': keepalive_ms = atol(optarg); break;
        case 'w': workers = atoi(optarg); break;
        case 'P': pipeline = atoi(optarg); break;
        case 'M': heap = 1; break;
        default:
            upstream = NULL;
            optind = argc;
            break;
        }
    }
    if (upstream == NULL) {
        fprintf(stderr,
                "usage: %s -u http://HOST:PORT [-p port] [-m max_idle] "
                "[-k keepalive_ms] [-w n] [-P pipeline] [-M]\n",
                argv[0]);
        return 2;
    }
    if (heap) {
        /* blocked before any thread starts, so every thread inherits it */
        sigemptyset(&usr1);
        sigaddset(&usr1, SIGUSR1);
        if (pthread_sigmask(SIG_BLOCK, &usr1, NULL) != 0 ||
            pthread_create(&reporter, NULL, heap_reporter, NULL) != 0)
            return 1;
        pthread_detach(reporter);
    }
    if ((app = latch_app_new()) == NULL)
        return 1;
    if (latch_app_set_workers(app, workers) < 0 ||
        latch_app_set_limit(app, LATCH_TIMEOUT_KEEPALIVE,
                            (uint64_t)keepalive_ms) < 0 ||
        latch_app_set_limit(app, LATCH_LIMIT_PIPELINE, (uint64_t)pipeline) <
            0 ||
        (r = latch_use_proxy(app, "/", upstream, &po)) < 0) {
        fprintf(stderr, "proxy_bench: cannot configure the app\n");
        latch_app_free(app);
        return 1;
    }
    r = latch_listen(app, "127.0.0.1", port);
    if (r < 0) {
        fprintf(stderr, "proxy_bench: cannot listen on 127.0.0.1:%d: %s\n",
                port, latch_strerror(r));
        latch_app_free(app);
        return 1;
    }
    r = latch_run(app);
    latch_app_free(app);
    return r < 0 ? 1 : 0;
}
