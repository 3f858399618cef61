/*
 * log.c - the access log: one line per response, in nginx's combined
 * format or as one JSON object, written by a thread of its own.
 *
 * A worker formats the line when the response closes (finished, or cut)
 * and appends it to its own buffer (latch_wops) under that buffer's mutex,
 * which only the writer thread ever contends for, and only to swap a
 * pointer. The writer wakes every 100 ms, or sooner when a buffer fills
 * past a quarter, takes each worker's buffer in exchange for an empty one
 * and writes it out. A descriptor that blocks or fails never holds up a
 * worker: the writer waits for it with poll() and gives a pipe or socket
 * at most PIPE_BUF bytes per write (so the write itself cannot block); a
 * worker whose buffer is full drops the line and counts it, and so does
 * the writer for each line it could not write. When the log is turned off
 * or the app freed, the writer writes what is left, waiting at most one
 * second for a descriptor that does not move.
 *
 * It is not a general logger: no rotation, no custom formats, and the
 * descriptor stays the caller's (never closed, its flags never changed).
 */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define LOG_WAKE (LATCH_LOG_BUF / 4) /* a buffer this full wakes the writer */
#define LOG_TICK_MS 100
#define LOG_LINE_MAX 8192 /* longer fields are cut ("...") to fit */
#define LOG_STOP_MS 1000  /* what a stuck descriptor gets at the end */

struct latch_alog {
    latch_app *app;
    int fd, format;
    bool regular; /* a regular file: writes of any size never block */
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stop, kick;
    char *spare; /* the writer's buffer, swapped with the workers' */
    _Atomic uint64_t dropped; /* lines the writer could not write */
};

/* ------------------------------------------------------------------ */
/* The writer thread                                                    */
/* ------------------------------------------------------------------ */

static uint64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static uint64_t count_lines(const char *p, size_t n)
{
    uint64_t lines = 0;
    const char *e = p + n;

    while (p < e && (p = memchr(p, '\n', (size_t)(e - p))) != NULL) {
        lines++;
        p++;
    }
    return lines;
}

static bool stopping(struct latch_alog *lg)
{
    bool s;

    pthread_mutex_lock(&lg->mu);
    s = lg->stop;
    pthread_mutex_unlock(&lg->mu);
    return s;
}

/*
 * Writes buf[0..n) to the log. Waits for the descriptor with poll() in
 * steps of one tick; once the writer is stopping, gives it until
 * `deadline` (monotonic ms). What cannot be written is counted as dropped
 * lines. A write to a pipe whose reader left raises SIGPIPE at this
 * thread, which blocks every signal: the signal is taken back here, and
 * the process never sees it.
 */
static void write_out(struct latch_alog *lg, const char *buf, size_t n,
                      uint64_t *deadline)
{
    size_t off = 0;

    while (off < n) {
        struct pollfd p = {.fd = lg->fd, .events = POLLOUT};
        size_t chunk = n - off;
        ssize_t w;
        int pr;

        if (*deadline == 0 && stopping(lg))
            *deadline = now_ms() + LOG_STOP_MS;
        if (*deadline != 0 && now_ms() >= *deadline)
            break;
        pr = poll(&p, 1, LOG_TICK_MS);
        if (pr < 0 && errno != EINTR)
            break;
        if (pr <= 0)
            continue;
        if (p.revents & (POLLERR | POLLNVAL))
            break;
        if (!lg->regular && chunk > PIPE_BUF) {
            /* Whole lines where they fit: a reader never sees half a line
             * because the end came while the descriptor was stuck. */
            const char *nl = memrchr(buf + off, '\n', PIPE_BUF);
            chunk = nl != NULL ? (size_t)(nl - (buf + off)) + 1 : PIPE_BUF;
        }
        w = write(lg->fd, buf + off, chunk);
        if (w < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (w < 0) {
            if (errno == EPIPE) {
                sigset_t pipe_set;
                struct timespec zero = {0, 0};
                sigemptyset(&pipe_set);
                sigaddset(&pipe_set, SIGPIPE);
                sigtimedwait(&pipe_set, NULL, &zero);
            }
            break;
        }
        off += (size_t)w;
    }
    if (off < n) {
        /* A line cut by the failure counts as dropped. */
        while (off > 0 && buf[off - 1] != '\n')
            off--;
        atomic_fetch_add_explicit(&lg->dropped, count_lines(buf + off, n - off),
                                  memory_order_relaxed);
    }
}

/* One pass over the workers' buffers: each is exchanged for the spare
 * and written. Workers only wait for the swap. */
static void write_pass(struct latch_alog *lg, uint64_t *deadline)
{
    latch_wops *o;

    for (o = atomic_load(&lg->app->wops); o != NULL; o = o->next) {
        char *full;
        size_t n;

        pthread_mutex_lock(&o->log_mu);
        full = o->log_buf;
        n = o->log_len;
        if (n > 0) {
            o->log_buf = lg->spare;
            o->log_len = 0;
        }
        o->log_kicked = false;
        pthread_mutex_unlock(&o->log_mu);
        if (n == 0)
            continue;
        write_out(lg, full, n, deadline);
        lg->spare = full;
    }
}

static void *writer_main(void *arg)
{
    struct latch_alog *lg = arg;
    uint64_t deadline = 0;
    bool stop;

    /* It runs with every signal blocked (latch_app_set_access_log): they
     * are for the program's own threads, and SIGPIPE from a write is taken
     * back in write_out. */
    do {
        struct timespec until;

        pthread_mutex_lock(&lg->mu);
        if (!lg->stop && !lg->kick) {
            clock_gettime(CLOCK_REALTIME, &until);
            until.tv_nsec += LOG_TICK_MS * 1000000L;
            if (until.tv_nsec >= 1000000000L) {
                until.tv_sec++;
                until.tv_nsec -= 1000000000L;
            }
            pthread_cond_timedwait(&lg->cv, &lg->mu, &until);
        }
        lg->kick = false;
        stop = lg->stop;
        pthread_mutex_unlock(&lg->mu);
        write_pass(lg, &deadline); /* after stop: the last lines */
    } while (!stop);
    return NULL;
}

static void alog_stop(latch_app *app)
{
    struct latch_alog *lg = app->alog;

    if (lg == NULL)
        return;
    pthread_mutex_lock(&lg->mu);
    lg->stop = true;
    pthread_cond_signal(&lg->cv);
    pthread_mutex_unlock(&lg->mu);
    pthread_join(lg->thread, NULL);
    pthread_cond_destroy(&lg->cv);
    pthread_mutex_destroy(&lg->mu);
    app->alog_dropped += atomic_load(&lg->dropped);
    free(lg->spare);
    free(lg);
    app->alog = NULL;
    app->ops &= (uint8_t)~LATCH_OPS_LOG;
}

int latch_app_set_access_log(latch_app *app, int fd, int format)
{
    struct latch_alog *lg;
    struct stat st;
    int r;

    if (app == NULL)
        return LATCH_ERR_INVALID_ARG;
    /* DESIGN.md lists -1 beside the formats as "turns it off"; the header
     * says fd -1. Either one turns the log off. */
    if (fd < 0 || format == -1) {
        if (app->running)
            return LATCH_ERR_STATE;
        alog_stop(app);
        return 0;
    }
    if (format != LATCH_LOG_COMBINED && format != LATCH_LOG_JSON)
        return LATCH_ERR_INVALID_ARG;
    if (fcntl(fd, F_GETFL) < 0 || fstat(fd, &st) < 0)
        return LATCH_ERR_INVALID_ARG; /* not an open descriptor */
    if (app->running)
        return LATCH_ERR_STATE;
    alog_stop(app);
    lg = calloc(1, sizeof(*lg));
    if (lg == NULL)
        return LATCH_ERR_NOMEM;
    lg->spare = malloc(LATCH_LOG_BUF);
    if (lg->spare == NULL) {
        free(lg);
        return LATCH_ERR_NOMEM;
    }
    lg->app = app;
    lg->fd = fd;
    lg->format = format;
    lg->regular = S_ISREG(st.st_mode);
    pthread_mutex_init(&lg->mu, NULL);
    pthread_cond_init(&lg->cv, NULL);
    {
        /* The writer blocks every signal; it must not take one before it
         * does, so it starts with them blocked. */
        sigset_t all, old;
        sigfillset(&all);
        pthread_sigmask(SIG_BLOCK, &all, &old);
        r = pthread_create(&lg->thread, NULL, writer_main, lg);
        pthread_sigmask(SIG_SETMASK, &old, NULL);
    }
    if (r != 0) {
        pthread_cond_destroy(&lg->cv);
        pthread_mutex_destroy(&lg->mu);
        free(lg->spare);
        free(lg);
        return -r;
    }
    app->alog = lg;
    app->ops |= LATCH_OPS_LOG;
    return 0;
}

void latch__alog_free(latch_app *app)
{
    alog_stop(app);
}

uint64_t latch__alog_dropped(latch_app *app)
{
    uint64_t n = app->alog_dropped;
    latch_wops *o;

    if (app->alog != NULL)
        n += atomic_load(&app->alog->dropped);
    for (o = atomic_load(&app->wops); o != NULL; o = o->next)
        n += atomic_load_explicit(&o->log_dropped, memory_order_relaxed);
    return n;
}

/* ------------------------------------------------------------------ */
/* Formatting, on the worker                                            */
/* ------------------------------------------------------------------ */

typedef struct line {
    char *p;
    size_t len, cap;
} line;

static void put(line *l, const char *s, size_t n)
{
    if (n > l->cap - l->len)
        n = l->cap - l->len;
    memcpy(l->p + l->len, s, n);
    l->len += n;
}

static void puts_(line *l, const char *s)
{
    put(l, s, strlen(s));
}

static void put_u64(line *l, uint64_t v)
{
    char num[24];
    int n = snprintf(num, sizeof(num), "%llu", (unsigned long long)v);

    put(l, num, (size_t)n);
}

/* nginx's default escaping of a variable in a log line: '"', '\\' and
 * bytes outside 0x20..0x7e as \xHH. At most max bytes of output. */
static void put_nginx(line *l, const char *s, size_t max)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t out = 0;

    for (; *s != '\0'; s++) {
        unsigned char c = (unsigned char)*s;
        bool esc = c == '"' || c == '\\' || c < 0x20 || c > 0x7e;
        if (out + (esc ? 4 : 1) > max) {
            put(l, "...", 3);
            return;
        }
        if (esc) {
            char e[4] = {'\\', 'x', hex[c >> 4], hex[c & 15]};
            put(l, e, 4);
            out += 4;
        } else {
            put(l, s, 1);
            out++;
        }
    }
}

/* A JSON string: UTF-8 kept as is, '"' '\\' and control bytes escaped,
 * each byte of an invalid sequence as U+FFFD, so the line always parses. */
static void put_json(line *l, const char *s, size_t max)
{
    static const char hex[] = "0123456789abcdef";
    size_t n = strlen(s), i = 0, out = 0;

    put(l, "\"", 1);
    while (i < n) {
        unsigned char c = (unsigned char)s[i];
        size_t seq = c < 0x80 ? 1 : latch__utf8_seq(s + i, n - i);
        char e[6];
        size_t en;
        const char *src = e;

        if (c < 0x20 || c == 0x7f) {
            memcpy(e, "\\u00", 4);
            e[4] = hex[c >> 4];
            e[5] = hex[c & 15];
            en = 6;
            seq = 1;
        } else if (c == '"' || c == '\\') {
            e[0] = '\\';
            e[1] = (char)c;
            en = 2;
        } else if (seq == 0) {
            src = "\\ufffd";
            en = 6;
            seq = 1;
        } else {
            src = s + i;
            en = seq;
        }
        if (out + en > max) {
            put(l, "...", 3);
            break;
        }
        put(l, src, en);
        out += en;
        i += seq;
    }
    put(l, "\"", 1);
}

static const char *months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                               "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};

/* The time field, redone once a second per worker: nginx's $time_local
 * ("05/Dec/2026:07:37:16 +0000") or, for JSON, ISO 8601. */
static void stamp(latch_wops *o, int format)
{
    time_t now = time(NULL);
    struct tm tm;
    long off;
    char sign;

    if (now == o->log_sec && o->log_time_len > 0)
        return;
    o->log_sec = now;
    localtime_r(&now, &tm);
    off = tm.tm_gmtoff / 60;
    sign = off < 0 ? '-' : '+';
    if (off < 0)
        off = -off;
    if (format == LATCH_LOG_JSON)
        o->log_time_len = (size_t)snprintf(
            o->log_time, sizeof(o->log_time),
            "%04d-%02d-%02dT%02d:%02d:%02d%c%02ld:%02ld", tm.tm_year + 1900,
            tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, sign,
            off / 60, off % 60);
    else
        o->log_time_len = (size_t)snprintf(
            o->log_time, sizeof(o->log_time),
            "%02d/%s/%04d:%02d:%02d:%02d %c%02ld%02ld", tm.tm_mday,
            months[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min,
            tm.tm_sec, sign, off / 60, off % 60);
}

void latch__alog_line(latch_res *res, latch_wops *o, const char *addr,
                      int status, uint64_t dur_ns)
{
    struct latch_alog *lg = res->w->app->alog;
    char buf[LOG_LINE_MAX];
    line l = {buf, 0, sizeof(buf) - 1};
    const char *ref = latch_req_header(&res->req, "Referer");
    const char *ua = latch_req_header(&res->req, "User-Agent");
    const char *method = res->req.method ? res->req.method : "-";
    const char *url = res->req.url ? res->req.url : "-";
    char proto[16];
    bool wake;

    snprintf(proto, sizeof(proto), "HTTP/1.%u",
             (unsigned)res->req.version_minor);
    stamp(o, lg->format);
    if (lg->format == LATCH_LOG_JSON) {
        char dur[32];
        puts_(&l, "{\"time\":\"");
        put(&l, o->log_time, o->log_time_len);
        puts_(&l, "\",\"remote_addr\":");
        put_json(&l, addr, 64);
        puts_(&l, ",\"request_id\":");
        put_u64(&l, res->req.id);
        puts_(&l, ",\"method\":");
        put_json(&l, method, 64);
        puts_(&l, ",\"url\":");
        put_json(&l, url, 2048);
        puts_(&l, ",\"protocol\":\"");
        puts_(&l, proto);
        puts_(&l, "\",\"status\":");
        put_u64(&l, (uint64_t)status);
        puts_(&l, ",\"body_bytes_sent\":");
        put_u64(&l, latch__res_body_bytes(res));
        puts_(&l, ",\"request_time\":");
        snprintf(dur, sizeof(dur), "%.6f", (double)dur_ns / 1e9);
        puts_(&l, dur);
        puts_(&l, ",\"referer\":");
        if (ref != NULL)
            put_json(&l, ref, 2048);
        else
            puts_(&l, "null");
        puts_(&l, ",\"user_agent\":");
        if (ua != NULL)
            put_json(&l, ua, 1024);
        else
            puts_(&l, "null");
        puts_(&l, "}");
    } else {
        /* $remote_addr - $remote_user [$time_local] "$request" $status
         * $body_bytes_sent "$http_referer" "$http_user_agent" */
        put_nginx(&l, addr, 64);
        puts_(&l, " - - [");
        put(&l, o->log_time, o->log_time_len);
        puts_(&l, "] \"");
        put_nginx(&l, method, 64);
        puts_(&l, " ");
        put_nginx(&l, url, 4096);
        puts_(&l, " ");
        puts_(&l, proto);
        puts_(&l, "\" ");
        put_u64(&l, (uint64_t)status);
        puts_(&l, " ");
        put_u64(&l, latch__res_body_bytes(res));
        puts_(&l, " \"");
        put_nginx(&l, ref != NULL ? ref : "-", 1024);
        puts_(&l, "\" \"");
        put_nginx(&l, ua != NULL ? ua : "-", 1024);
        puts_(&l, "\"");
    }
    buf[l.len++] = '\n'; /* cap leaves room for it */

    pthread_mutex_lock(&o->log_mu);
    if (o->log_buf == NULL)
        o->log_buf = malloc(LATCH_LOG_BUF);
    if (o->log_buf == NULL || l.len > LATCH_LOG_BUF - o->log_len) {
        /* The writer is behind (a slow or stuck descriptor): drop. */
        atomic_store_explicit(
            &o->log_dropped,
            atomic_load_explicit(&o->log_dropped, memory_order_relaxed) + 1,
            memory_order_relaxed);
        wake = true;
    } else {
        memcpy(o->log_buf + o->log_len, buf, l.len);
        o->log_len += l.len;
        wake = o->log_len >= LOG_WAKE && !o->log_kicked;
    }
    o->log_kicked = o->log_kicked || wake;
    pthread_mutex_unlock(&o->log_mu);
    if (wake) {
        pthread_mutex_lock(&lg->mu);
        lg->kick = true;
        pthread_cond_signal(&lg->cv);
        pthread_mutex_unlock(&lg->mu);
    }
}
