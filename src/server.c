/*
 * server.c - listening, worker threads, signals and the graceful drain.
 *
 * Each worker is one thread running one libuv loop with its own
 * SO_REUSEPORT listener on the app's address, so the kernel spreads
 * connections and no lock sits on the accept path. The calling thread of
 * latch_run is worker 0. latch_stop (or SIGINT/SIGTERM) makes every worker
 * stop accepting, close its idle connections, and give in-flight requests
 * the drain timeout before closing what is left.
 *
 * The app object and its settings are app.c's (latch_app_new, limits,
 * latch_run, latch_stop), which calls in here. This module does not parse
 * or answer requests: conn.c does.
 */
#include "internal.h"
#include "tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* A non-blocking TCP socket with SO_REUSEPORT, bound and listening. */
static int open_listener(const struct sockaddr *sa, int *out_fd)
{
    int fd, one = 1;
    socklen_t len = sa->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                              : sizeof(struct sockaddr_in);

    *out_fd = -1;
    fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0 ||
        bind(fd, sa, len) < 0 || listen(fd, 1024) < 0) {
        int err = -errno;
        close(fd);
        return err;
    }
    *out_fd = fd;
    return 0;
}

/* A run took the listening sockets (worker 0 closed them when it
 * drained): the listeners of that run are forgotten, and the next
 * latch_listen* calls make the addresses of the next run. */
static void drop_spent_listeners(latch_app *app)
{
    if (app->nlisteners == 0 || app->listeners[0].fd >= 0)
        return;
    for (int i = 0; i < app->nlisteners; i++)
        latch__tls_ctx_free(app->listeners[i].tls);
    memset(app->listeners, 0, sizeof(app->listeners));
    app->nlisteners = 0;
}

/* Binds host:port as the app's next listener (tls: its context, taken
 * on success). */
static int add_listener(latch_app *app, const char *host, int port,
                        latch_tls_ctx *tls)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    latch_listener *l;
    int r, fd;

    if (app->running)
        return LATCH_ERR_STATE;
    drop_spent_listeners(app);
    if (app->nlisteners == LATCH_MAX_LISTENERS)
        return LATCH_ERR_LIMIT;
    if (host == NULL)
        host = "127.0.0.1";
    memset(&ss, 0, sizeof(ss));
    if (uv_ip4_addr(host, port, (struct sockaddr_in *)&ss) != 0 &&
        uv_ip6_addr(host, port, (struct sockaddr_in6 *)&ss) != 0)
        return LATCH_ERR_INVALID_ARG;
    r = open_listener((struct sockaddr *)&ss, &fd);
    if (r < 0)
        return r;
    /* Port 0: the other workers must bind the port the kernel chose. */
    if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0) {
        r = -errno;
        close(fd);
        return r;
    }
    l = &app->listeners[app->nlisteners++];
    l->addr = ss;
    l->fd = fd;
    l->tls = tls;
    l->port =
        ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                       : ((struct sockaddr_in *)&ss)->sin_port);
    return 0;
}

int latch_listen(latch_app *app, const char *host, int port)
{
    if (app == NULL || port < 0 || port > 65535)
        return LATCH_ERR_INVALID_ARG;
    return add_listener(app, host, port, NULL);
}

int latch_listen_tls(latch_app *app, const char *host, int port,
                     const char *cert_file, const char *key_file)
{
    latch_tls_ctx *tls;
    int r;

    if (app == NULL || port < 0 || port > 65535 || cert_file == NULL ||
        key_file == NULL)
        return LATCH_ERR_INVALID_ARG;
    if (app->running)
        return LATCH_ERR_STATE;
    drop_spent_listeners(app);
    if (app->nlisteners == LATCH_MAX_LISTENERS)
        return LATCH_ERR_LIMIT;
    r = latch__tls_ctx_new(&tls, cert_file, key_file);
    if (r < 0)
        return r;
    r = add_listener(app, host, port, tls);
    if (r < 0)
        latch__tls_ctx_free(tls);
    return r;
}

int latch_app_port(const latch_app *app)
{
    return latch_app_listener_port(app, 0);
}

int latch_app_listener_port(const latch_app *app, int index)
{
    if (app == NULL || index < 0 || index >= app->nlisteners)
        return -1;
    return app->listeners[index].port;
}

int latch_app_reload_tls(latch_app *app)
{
    int i, r, first = 0;

    if (app == NULL)
        return LATCH_ERR_INVALID_ARG;
    /* The listeners never change while the app runs, and contexts swap
     * their certificate under their own lock. */
    for (i = 0; i < app->nlisteners; i++) {
        if (app->listeners[i].tls == NULL)
            continue;
        r = latch__tls_ctx_reload(app->listeners[i].tls);
        if (r < 0 && first == 0)
            first = r;
    }
    return first;
}

uint64_t latch_app_counter(const latch_app *app, int which)
{
    if (app == NULL || which < 0 || which >= LATCH_COUNTER_COUNT)
        return 0;
    return atomic_load_explicit(&((latch_app *)app)->counters[which],
                                memory_order_relaxed);
}

/*
 * Trouble on the accept path is logged as nginx does it: one line at most
 * once a second per worker, with what happened since the last line. The
 * ticker calls this too, so the last second of a burst is not lost.
 */
static void log_accept(latch_worker *w)
{
    uint64_t now = uv_now(&w->loop);

    if (w->log_errors + w->log_dropped + w->log_shed == 0)
        return;
    if (w->accept_log_at != 0 && now - w->accept_log_at < 1000)
        return;
    w->accept_log_at = now;
    fprintf(stderr,
            "latch: accept: %s (worker %d; since the last report: %llu "
            "accept errors, %llu connections refused, %llu shed)\n",
            w->log_errno != 0 ? strerror(w->log_errno)
                              : "connection or handshake limit reached",
            w->index, (unsigned long long)w->log_errors,
            (unsigned long long)w->log_dropped,
            (unsigned long long)w->log_shed);
    w->log_errors = w->log_dropped = w->log_shed = 0;
    w->log_errno = 0;
}

static void on_tick(uv_timer_t *t)
{
    latch__worker_date(t->data);
    log_accept(t->data);
}

static void on_flush(uv_prepare_t *p)
{
    latch__conn_flush_all(p->data);
}

static void on_acceptable(uv_poll_t *p, int status, int events);

static void on_accept_retry(uv_timer_t *t)
{
    latch_worker *w = t->data;

    if (!w->draining)
        for (int i = 0; i < w->nls; i++)
            uv_poll_start(&w->ls[i].poll, UV_READABLE, on_acceptable);
}

/* Nothing can be freed for the pending connections: stop watching the
 * listeners for a while rather than spin on them. */
static void accept_pause(latch_worker *w)
{
    for (int i = 0; i < w->nls; i++)
        uv_poll_stop(&w->ls[i].poll);
    uv_timer_start(&w->accept_retry, on_accept_retry, 100, 0);
}

/* Closes an accepted socket with a reset: the client learns at once that
 * it was refused, and no TIME_WAIT is left behind. */
static void refuse_fd(int fd)
{
    struct linger lg = {1, 0};

    (void)setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    close(fd);
}

static void count_dropped(latch_worker *w)
{
    LATCH_COUNT(w->app, LATCH_COUNTER_DROPPED, 1);
    w->log_dropped++;
}

static void count_shed(latch_worker *w)
{
    LATCH_COUNT(w->app, LATCH_COUNTER_SHED, 1);
    w->log_shed++;
}

/* Out of descriptors: the reserve one is spent to take the first pending
 * connection off the backlog and refuse it, then taken again. */
static bool refuse_with_reserve(latch_worker *w, int listen_fd)
{
    int fd;

    if (w->reserve_fd < 0)
        return false;
    close(w->reserve_fd);
    fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);
    if (fd >= 0) {
        count_dropped(w);
        refuse_fd(fd);
    }
    w->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    return fd >= 0;
}

/* accept(2) errors that concern one pending connection only (Linux passes
 * the new socket's network errors on): the next one may be fine. */
static bool accept_error_transient(int err)
{
    switch (err) {
    case EINTR:
    case ECONNABORTED:
    case EPROTO:
    case ENETDOWN:
    case ENOPROTOOPT:
    case EHOSTDOWN:
    case ENONET:
    case EHOSTUNREACH:
    case EOPNOTSUPP:
    case ENETUNREACH: return true;
    default: return false;
    }
}

/*
 * The listener is readable: accept a batch. At the worker's connection cap
 * a newcomer takes the place of the oldest idle (or slowest receiving)
 * connection, or is refused; out of descriptors, the same, then the
 * reserve descriptor refuses one; with nothing to free, accepting pauses.
 * Every case is counted and logged, never silent, and the loop never spins.
 */
static void on_acceptable(uv_poll_t *p, int status, int events)
{
    latch_wlistener *l = p->data;
    latch_worker *w = l->w;
    int i, fd, err;

    (void)events;
    if (status < 0) {
        w->log_errors++;
        w->log_errno = -status;
        LATCH_COUNT(w->app, LATCH_COUNTER_ACCEPT_ERRORS, 1);
        log_accept(w);
        accept_pause(w);
        return;
    }
    for (i = 0; i < 128 && !w->draining; i++) {
        fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            err = errno;
            if (err == EAGAIN || err == EWOULDBLOCK)
                break;
            if (accept_error_transient(err))
                continue;
            LATCH_COUNT(w->app, LATCH_COUNTER_ACCEPT_ERRORS, 1);
            w->log_errors++;
            w->log_errno = err;
            if (err == EMFILE || err == ENFILE) {
                if (latch__conn_shed(w)) {
                    count_shed(w);
                    continue;
                }
                if (refuse_with_reserve(w, l->fd))
                    continue;
            }
            log_accept(w);
            accept_pause(w);
            return;
        }
        /* Handshakes hold OpenSSL's state for a client that has proved
         * nothing yet: at their cap the oldest makes room. */
        if (l->tls != NULL &&
            w->tl[LATCH_T_HANDSHAKE].n >= w->app->cfg.max_handshakes &&
            latch__conn_shed_handshake(w))
            count_shed(w);
        if (w->nconns >= w->max_conns) {
            if (latch__conn_shed(w)) {
                count_shed(w);
            } else {
                count_dropped(w); /* counted before the client can see */
                refuse_fd(fd);
                continue;
            }
        }
        if (latch__conn_open(w, fd, l->tls) < 0) {
            count_dropped(w); /* no memory for it; the fd is closed */
            continue;
        }
        LATCH_COUNT(w->app, LATCH_COUNTER_ACCEPTED, 1);
    }
    log_accept(w);
}

static void begin_drain(latch_worker *w);

static void worker_finish(latch_worker *w);

static void on_wake(uv_async_t *a)
{
    latch_worker *w = a->data;

    if (atomic_load(&w->app->stopping) && !w->draining)
        begin_drain(w);
    latch__worker_run_posts(w);
    /* The last response the program held was let go (worker.c). */
    if (w->hold_wait && w->held == 0)
        worker_finish(w);
}

static void on_signal(uv_signal_t *s, int signum)
{
    latch_app *app = ((latch_worker *)s->data)->app;

    if (signum == SIGHUP) {
        /* New certificates for the next handshakes; a pair that fails
         * keeps the old one (tls.c logs why). */
        (void)latch_app_reload_tls(app);
        return;
    }
    latch__server_stop(app);
}

static void close_cb_noop(uv_handle_t *h)
{
    (void)h;
}

/* Stop accepting and close idle connections; conn.c closes the rest as
 * their responses finish, or when the drain timeout passes. Features
 * first end their long-lived responses (event streams) cleanly. */
static void begin_drain(latch_worker *w)
{
    latch_whook *h, *next;

    w->draining = true;
    w->drain_from = uv_now(&w->loop);
    for (h = w->hooks; h != NULL; h = next) {
        next = h->next;
        if (h->drain != NULL)
            h->drain(h, w);
    }
    if (!uv_is_closing((uv_handle_t *)&w->accept_retry)) {
        for (int i = 0; i < w->nls; i++) {
            uv_close((uv_handle_t *)&w->ls[i].poll, close_cb_noop);
            /* The poll handle left epoll in uv_close: the socket may go. */
            close(w->ls[i].fd);
            w->ls[i].fd = -1;
        }
        uv_close((uv_handle_t *)&w->accept_retry, close_cb_noop);
    }
    if (w->has_signals) {
        uv_close((uv_handle_t *)&w->sigint, close_cb_noop);
        uv_close((uv_handle_t *)&w->sigterm, close_cb_noop);
        if (w->has_sighup)
            uv_close((uv_handle_t *)&w->sighup, close_cb_noop);
        w->has_signals = w->has_sighup = false;
    }
    latch__conn_drain(w);
}

/* The drain time is over and the program still holds responses: the
 * worker finishes without them (their posts are refused from now on). */
static void on_hold_timeout(uv_timer_t *t)
{
    worker_finish(t->data);
}

/*
 * The worker's drained hook: conn.c calls it when a draining worker has
 * no connection left. A response the program still holds (a thread that
 * will post its result, a callback that will release it) is in flight as
 * much as a connection is: the worker waits for the last one, within
 * what is left of the drain time, so that those posts run and those
 * references are released instead of being refused and kept for good.
 */
static void worker_drained(latch_worker *w)
{
    uint64_t now = uv_now(&w->loop), end = w->drain_from + w->app->cfg.drain_ms;

    if (w->held == 0 || now >= end) {
        worker_finish(w);
        return;
    }
    if (!w->hold_wait) {
        w->hold_wait = true;
        uv_timer_start(&w->hold_timer, on_hold_timeout, end - now, 0);
    }
}

/* The worker ends: no connection left, and no held response or no time
 * left to wait for one. */
static void worker_finish(latch_worker *w)
{
    latch_whook *h;

    w->hold_wait = false;
    while ((h = w->hooks) != NULL) {
        w->hooks = h->next;
        if (h->finish != NULL)
            h->finish(h, w);
    }
    /* From here on a post from another thread is refused, not queued on
     * a loop that ends (what is queued already runs in worker_dispose). */
    latch__worker_close_posts(w);
    uv_close((uv_handle_t *)&w->wake, close_cb_noop);
    uv_close((uv_handle_t *)&w->flusher, close_cb_noop);
    uv_close((uv_handle_t *)&w->ticker, close_cb_noop);
    uv_close((uv_handle_t *)&w->sweeper, close_cb_noop);
    uv_close((uv_handle_t *)&w->hold_timer, close_cb_noop);
}

/*
 * The connection cap of a worker: the configured one, else what the
 * descriptor limit leaves, less some for files, upstreams and the
 * process's own, shared among the workers.
 */
static uint32_t default_max_conns(const latch_app *app)
{
    struct rlimit rl;
    uint64_t n = (uint64_t)1 << 20, per;
    int workers = app->nworkers_running > 0 ? app->nworkers_running : 1;

    if (app->cfg.max_conns > 0)
        return app->cfg.max_conns;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
        rl.rlim_cur < n)
        n = rl.rlim_cur;
    n = n > 64 ? n - 32 : n / 2;
    per = n / (uint64_t)workers;
    return per < 8 ? 8 : (uint32_t)per;
}

/* Closes the listening sockets worker_init opened before it failed. */
static void close_listeners(latch_worker *w, int n)
{
    for (int i = 0; i < n; i++)
        if (w->ls[i].fd >= 0)
            close(w->ls[i].fd);
}

static int worker_init(latch_worker *w, latch_app *app, int index)
{
    int r, fd, i;
    bool tls = false;

    w->app = app;
    w->index = index;
    w->drained = worker_drained;
    w->reserve_fd = -1;
    w->next_req_id = ((uint64_t)index << 48) + 1;
    /* Each worker its own reproducible sequence of shake delays. */
    w->shake_state = latch__shake_state(app->shake_seed, index);
    pthread_mutex_init(&w->post_mu, NULL);
    r = uv_loop_init(&w->loop);
    if (r < 0)
        return r;
    /* One socket per app listener: worker 0 takes the ones latch_listen*
     * bound, the others bind their own on the same address. */
    for (i = 0; i < app->nlisteners; i++) {
        latch_listener *l = &app->listeners[i];
        if (index == 0) {
            fd = l->fd;
            l->fd = -1;
        } else {
            r = open_listener((struct sockaddr *)&l->addr, &fd);
            if (r < 0) {
                close_listeners(w, i);
                goto fail_loop;
            }
        }
        w->ls[i].fd = fd;
        w->ls[i].w = w;
        w->ls[i].tls = l->tls;
        tls = tls || l->tls != NULL;
    }
    /* Whole seconds, rounded down as Node does: a client told more than
     * the connection will wait may send its next request to a connection
     * that is closing (1,500 ms is "timeout=1", 200 ms "timeout=0"). */
    w->ka_len = (size_t)snprintf(
        w->ka_line, sizeof(w->ka_line),
        "Connection: keep-alive\r\nKeep-Alive: timeout=%llu\r\n",
        (unsigned long long)(app->cfg.keepalive_ms / 1000));
    w->max_conns = default_max_conns(app);
    for (i = 0; i < app->nlisteners; i++) {
        r = uv_poll_init_socket(&w->loop, &w->ls[i].poll, w->ls[i].fd);
        if (r < 0) {
            while (i-- > 0)
                uv_close((uv_handle_t *)&w->ls[i].poll, close_cb_noop);
            close_listeners(w, app->nlisteners);
            uv_run(&w->loop, UV_RUN_NOWAIT); /* the closes complete */
            goto fail_loop;
        }
        w->ls[i].poll.data = &w->ls[i];
    }
    w->nls = app->nlisteners;
    for (i = 0; i < w->nls; i++)
        uv_poll_start(&w->ls[i].poll, UV_READABLE, on_acceptable);
    uv_timer_init(&w->loop, &w->accept_retry);
    w->accept_retry.data = w;
    /* One descriptor kept aside to refuse connections when none is left. */
    w->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    uv_async_init(&w->loop, &w->wake, on_wake);
    w->wake.data = w;
    uv_prepare_init(&w->loop, &w->flusher);
    w->flusher.data = w;
    uv_prepare_start(&w->flusher, on_flush);
    uv_timer_init(&w->loop, &w->ticker);
    w->ticker.data = w;
    uv_timer_start(&w->ticker, on_tick, 1000, 1000);
    uv_unref((uv_handle_t *)&w->ticker);
    uv_timer_init(&w->loop, &w->sweeper);
    w->sweeper.data = w;
    uv_timer_init(&w->loop, &w->hold_timer);
    w->hold_timer.data = w;
    latch__worker_date(w);
    if (index == 0 && app->handle_signals) {
        uv_signal_init(&w->loop, &w->sigint);
        uv_signal_init(&w->loop, &w->sigterm);
        w->sigint.data = w->sigterm.data = w;
        uv_signal_start(&w->sigint, on_signal, SIGINT);
        uv_signal_start(&w->sigterm, on_signal, SIGTERM);
        w->has_signals = true;
        if (tls) {
            /* SIGHUP re-reads the certificates (as nginx's reload does
             * for its configuration). */
            uv_signal_init(&w->loop, &w->sighup);
            w->sighup.data = w;
            uv_signal_start(&w->sighup, on_signal, SIGHUP);
            w->has_sighup = true;
        }
    }
    return 0;

fail_loop:
    uv_loop_close(&w->loop);
    return r;
}

static void worker_dispose(latch_worker *w)
{
    /* Let close callbacks run, then release the pools. */
    uv_run(&w->loop, UV_RUN_DEFAULT);
    /* Functions posted before the loop ended still run, once, here (the
     * worker's thread is gone; this one takes its place). */
    w->thread = pthread_self();
    latch__worker_close_posts(w);
    latch__worker_run_posts(w);
    latch__res_pool_free(w);
    latch__conn_pool_free(w);
    uv_loop_close(&w->loop);
    if (w->reserve_fd >= 0)
        close(w->reserve_fd);
    w->reserve_fd = -1;
    /* The memory and post_mu stay until free_spent: a response a program
     * still holds points here, and a late post must find `gone`. */
}

/* The workers of an earlier latch_run, once nothing can run on them. */
static void free_spent(latch_app *app)
{
    int i;

    /* A response the program still holds from that run points to these
     * workers: its handle goes stale before they go. */
    if (app->nspent > 0) {
        latch__rslot_run_over(app, app->spent, app->nspent, false);
        latch__handle_run_over(app->spent, app->spent + app->nspent);
    }
    for (i = 0; i < app->nspent; i++)
        pthread_mutex_destroy(&app->spent[i].post_mu);
    free(app->spent);
    app->spent = NULL;
    app->nspent = 0;
}

static void *worker_main(void *arg)
{
    latch_worker *w = arg;

    w->thread = pthread_self();
    uv_run(&w->loop, UV_RUN_DEFAULT);
    return NULL;
}

/*
 * A write to a socket the client closed raises SIGPIPE on the writing
 * thread, and its default action kills the process. While latch_run runs
 * it is blocked on the calling thread, so on every worker (threads inherit
 * the mask) and on whatever thread they start, whatever disposition the
 * program chose: the write fails with EPIPE and the connection closes.
 */
static void sigpipe_block(sigset_t *old)
{
    sigset_t set;

    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &set, old);
}

/* Drops the SIGPIPEs raised on this thread meanwhile (unblocked, they
 * would be delivered at once), then restores the caller's mask. */
static void sigpipe_restore(const sigset_t *old)
{
    static const struct timespec zero = {0, 0};
    sigset_t set;

    if (!sigismember(old, SIGPIPE)) {
        sigemptyset(&set);
        sigaddset(&set, SIGPIPE);
        while (sigtimedwait(&set, NULL, &zero) == SIGPIPE)
            ;
    }
    pthread_sigmask(SIG_SETMASK, old, NULL);
}

static int run(latch_app *app);

void latch__server_init(latch_app *app)
{
    pthread_mutex_init(&app->live_mu, NULL);
}

void latch__server_free(latch_app *app)
{
    for (int i = 0; i < app->nlisteners; i++) {
        if (app->listeners[i].fd >= 0)
            close(app->listeners[i].fd);
        latch__tls_ctx_free(app->listeners[i].tls);
    }
    free_spent(app);
    /* A handle kept past the app is refused, never reported to it. */
    latch__rslot_run_over(app, NULL, 0, true);
    pthread_mutex_destroy(&app->live_mu);
}

bool latch__server_ready(const latch_app *app)
{
    return !app->running && app->nlisteners > 0 && app->listeners[0].fd >= 0;
}

int latch__server_run(latch_app *app)
{
    sigset_t old;
    int r;

    sigpipe_block(&old);
    r = run(app);
    sigpipe_restore(&old);
    return r;
}

static int run(latch_app *app)
{
    int n, i, r = 0, started = 0;
    latch_worker *ws;
    struct {
        pthread_t id;
        bool started;
    } *tids = NULL;

    /* Worker 0 took the listening sockets of the last run: listen again
     * before running again. */
    if (!latch__server_ready(app))
        return LATCH_ERR_STATE;
    n = app->nworkers;
    if (n <= 0) {
        long cores = sysconf(_SC_NPROCESSORS_ONLN);
        n = cores > 0 ? (int)cores : 1;
    }
    free_spent(app);
    ws = calloc((size_t)n, sizeof(*ws));
    if (ws == NULL)
        return LATCH_ERR_NOMEM;
    app->workers = ws;
    app->nworkers_running = n;
    app->running = true;
    /* A latch_stop made before latch_run is not forgotten: the workers
     * start and drain at once (the flag is cleared when latch_run
     * returns, so the app may run again). */
    for (i = 0; i < n; i++) {
        r = worker_init(&ws[i], app, i);
        if (r < 0)
            break;
        started++;
    }
    if (r < 0) {
        /* Undo the workers that did start; nothing ran on them yet. */
        for (i = 0; i < started; i++) {
            begin_drain(&ws[i]);
            worker_dispose(&ws[i]);
        }
        goto out;
    }
    ws[0].thread = pthread_self();
    atomic_store(&app->live, ws);
    tids = calloc((size_t)n, sizeof(*tids));
    for (i = 1; i < n; i++) {
        /* The worker records its own id: pthread_create may store it only
         * after the thread already runs. */
        if (tids == NULL ||
            pthread_create(&tids[i].id, NULL, worker_main, &ws[i]) != 0) {
            /* Run with the workers we have. */
            begin_drain(&ws[i]);
        } else {
            tids[i].started = true;
        }
    }
    /* A latch_stop that came before the workers were live. */
    if (atomic_load(&app->stopping))
        latch__server_stop(app);
    uv_run(&ws[0].loop, UV_RUN_DEFAULT);
    pthread_mutex_lock(&app->live_mu);
    atomic_store(&app->live, NULL);
    pthread_mutex_unlock(&app->live_mu);
    for (i = 1; i < n; i++)
        if (tids != NULL && tids[i].started)
            pthread_join(tids[i].id, NULL);
    free(tids);
    for (i = 0; i < n; i++)
        worker_dispose(&ws[i]);
out:
    app->spent = ws;
    app->nspent = started;
    app->workers = NULL;
    app->running = false;
    atomic_store(&app->stopping, false);
    return r;
}

void latch__server_stop(latch_app *app)
{
    latch_worker *ws;
    int i;

    atomic_store(&app->stopping, true);
    pthread_mutex_lock(&app->live_mu);
    ws = atomic_load(&app->live);
    for (i = 0; ws != NULL && i < app->nworkers_running; i++)
        uv_async_send(&ws[i].wake);
    pthread_mutex_unlock(&app->live_mu);
}
