/*
 * trace.c - LATCH_DEBUG=lifecycle: one stderr line per lifecycle event of
 * every request, what NODE_DEBUG=stream is to Node users:
 *
 *   LATCH 4711: req 17 GET /users: headers sent at latch_res_json
 * (src/users.c:18)
 *
 * Events: dispatched, headers sent, ended, finished, closed, destroyed,
 * cancelled (client gone|timeout|shutdown), violation ERR_..., timer,
 * work (pipe and subscription events join them with those modules).
 *
 * The variable is read once per process, by the first latch_app_new
 * ("lifecycle" or "all" in a comma or space separated list). Off, each
 * event point costs a load and a branch that is never taken; on, a line
 * is built on the stack and written with one write(2), so lines from
 * several workers never interleave. Paths are the client's: control bytes
 * are written as \xHH, so a decoded %0A cannot forge a line.
 *
 * It is not a logger: no levels, no destination other than stderr.
 */
#include "internal.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

atomic_bool latch__tracing;

static pthread_once_t once = PTHREAD_ONCE_INIT;

static bool listed(const char *list, const char *word)
{
    size_t n = strlen(word);
    const char *p = list;

    while (*p != '\0') {
        size_t len;
        p += strspn(p, ", ");
        len = strcspn(p, ", ");
        if (len == n && strncmp(p, word, n) == 0)
            return true;
        p += len;
    }
    return false;
}

static void read_env(void)
{
    const char *v = getenv("LATCH_DEBUG");

    if (v != NULL && (listed(v, "lifecycle") || listed(v, "all")))
        atomic_store(&latch__tracing, true);
}

void latch__trace_init(latch_app *app)
{
    pthread_once(&once, read_env);
    if (atomic_load(&latch__tracing))
        app->ops |= LATCH_OPS_TRACE;
}

#define LINE_MAX_ 1024

typedef struct tline {
    char buf[LINE_MAX_];
    size_t len;
} tline;

/* s, control bytes as \xHH, at most max bytes of output ("..." marks a
 * cut), never past the line's end (one byte kept for the newline). */
static void put_s(tline *l, const char *s, size_t max)
{
    static const char hex[] = "0123456789abcdef";
    size_t out = 0, room;

    for (; s != NULL && *s != '\0'; s++) {
        unsigned char c = (unsigned char)*s;
        size_t n = c < 0x20 || c == 0x7f ? 4 : 1;
        room = sizeof(l->buf) - 1 - l->len;
        if (out + n > max || n + 3 > room) {
            if (room >= 3) {
                memcpy(l->buf + l->len, "...", 3);
                l->len += 3;
            }
            return;
        }
        if (n == 4) {
            char e[4] = {'\\', 'x', hex[c >> 4], hex[c & 15]};
            memcpy(l->buf + l->len, e, 4);
        } else {
            l->buf[l->len] = (char)c;
        }
        l->len += n;
        out += n;
    }
}

static void put_f(tline *l, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void put_f(tline *l, const char *fmt, ...)
{
    size_t room = sizeof(l->buf) - 1 - l->len;
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(l->buf + l->len, room + 1, fmt, ap);
    va_end(ap);
    if (n > 0)
        l->len += (size_t)n < room ? (size_t)n : room;
}

/* "LATCH <pid>: req <id> <METHOD> <path>: " */
static void head(tline *l, const latch_res *res)
{
    const char *path = res->req.path ? res->req.path : res->req.url;

    l->len = 0;
    put_f(l, "LATCH %ld: req %llu ", (long)getpid(),
          (unsigned long long)res->req.id);
    put_s(l, res->req.method ? res->req.method : "-", 32);
    put_s(l, " ", 1);
    put_s(l, path ? path : "-", 400);
    put_s(l, ": ", 2);
}

/* " at <call> (<file>:<line>)", or " at <call>" for a framework event. */
static void site(tline *l, const latch_res *res, const char *call,
                 latch_site at)
{
    if (call == NULL)
        return;
    put_s(l, " at ", 4);
    put_s(l, call, 64);
    if (at.file != NULL) {
        put_s(l, " (", 2);
        put_s(l, latch__site_file(res->w->app, at.file), 300);
        put_f(l, ":%d)", at.line);
    }
}

static void emit(tline *l)
{
    size_t off = 0;

    l->buf[l->len++] = '\n';
    while (off < l->len) {
        ssize_t n = write(2, l->buf + off, l->len - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return; /* stderr gone: tracing must not hurt the server */
        off += (size_t)n;
    }
}

void latch__trace(const latch_res *res, const char *event, const char *call,
                  latch_site at)
{
    tline l;

    head(&l, res);
    put_s(&l, event, 200);
    site(&l, res, call, at);
    emit(&l);
}

void latch__trace_state(const latch_res *res, int to)
{
    latch_seal seal;
    const latch_seal *s = NULL;
    const char *event;
    tline l;

    switch (to) {
    case LATCH_RS_HEADERS_SENT:
        event = "headers sent";
        seal = latch__res_seal(res, LATCH_SEAL_HEADERS);
        s = &seal;
        break;
    case LATCH_RS_ENDED:
        event = "ended";
        seal = latch__res_seal(res, LATCH_SEAL_ENDED);
        s = &seal;
        break;
    case LATCH_RS_FINISHED: event = "finished"; break;
    case LATCH_RS_DESTROYED:
        event = "destroyed";
        seal = latch__res_seal(res, LATCH_SEAL_ENDED);
        s = &seal;
        break;
    default: return; /* a held head taken back: nothing happened */
    }
    head(&l, res);
    put_s(&l, event, 32);
    if (s != NULL && s->call != NULL && s->at.file == NULL &&
        to == LATCH_RS_DESTROYED) {
        /* Sealed by a framework event ("connection closed"). */
        put_s(&l, " (", 2);
        put_s(&l, s->call, 64);
        put_s(&l, ")", 1);
    } else if (s != NULL) {
        site(&l, res, s->call, s->at);
    }
    emit(&l);
}

void latch__trace_end(const latch_res *res, bool with_head)
{
    if (with_head)
        latch__trace_state(res, LATCH_RS_HEADERS_SENT);
    latch__trace_state(res, LATCH_RS_ENDED);
}

void latch__trace_cancel(const latch_res *res, int reason)
{
    static const char *const why[] = {"none", "client gone", "timeout",
                                      "shutdown"};
    char event[48];

    snprintf(event, sizeof(event), "cancelled (%s)",
             reason >= 0 && reason <= LATCH_CANCEL_SHUTDOWN ? why[reason]
                                                            : "unknown");
    latch__trace(res, event, NULL, (latch_site){NULL, 0, NULL});
}
