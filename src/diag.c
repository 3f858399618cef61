/*
 * diag.c - error names and messages, and lifecycle violation reports.
 *
 * Every refused call on a response ends here: the violation is counted,
 * then delivered according to the app's policy (the hook, by default a
 * block on stderr in the shape Node users read; abort() under the strict
 * policy). Reports never touch the connection. This module does not decide
 * what is a violation: res.c and app.c do.
 */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The index of a latch code in the counters, or -1. */
#define LATCH_ERR_FIRST (-7001)
static int code_index(int code)
{
    int i = LATCH_ERR_FIRST - code;

    return i >= 0 && i < LATCH_NCOUNTERS ? i : -1;
}

const char *latch_err_name(int code)
{
    switch (code) {
    case 0: return "OK";
#define LATCH_X_(name, num, msg)                                               \
    case num: return "ERR_" #name;
        LATCH_ERRNO_MAP(LATCH_X_)
#undef LATCH_X_
        /* libuv's own codes (negated errno values on Unix), by name; only the
         * known ones, since uv_err_name allocates for the others. */
#define LATCH_UV_(name, msg)                                                   \
    case UV_##name: return #name;
        UV_ERRNO_MAP(LATCH_UV_)
#undef LATCH_UV_
    default: return "UNKNOWN";
    }
}

const char *latch_strerror(int code)
{
    switch (code) {
    case 0: return "Success";
#define LATCH_X_(name, num, msg)                                               \
    case num: return msg;
        LATCH_ERRNO_MAP(LATCH_X_)
#undef LATCH_X_
#define LATCH_UV_(name, msg)                                                   \
    case UV_##name: return msg;
        UV_ERRNO_MAP(LATCH_UV_)
#undef LATCH_UV_
    default: return "Unknown error";
    }
}

/*
 * The default hook's block is built in one buffer and written at once, so
 * reports from several workers never interleave line by line. Every field
 * has a bound (a path or a message can be as long as a request allows):
 * a longer one is cut visibly with "...", and the bounds add up to less
 * than the buffer, so a block always ends with its own newline and the
 * next report starts on a line of its own.
 */
#define FIELD_MAX 480 /* message, path, file */
#define NAME_MAX_ 96  /* call, function, method */
#define BLOCK_MAX 4096

typedef struct block {
    char buf[BLOCK_MAX];
    size_t len;
} block;

static void put_n(block *b, const char *s, size_t n)
{
    if (n > sizeof(b->buf) - 1 - b->len)
        n = sizeof(b->buf) - 1 - b->len; /* cannot happen: see the bounds */
    memcpy(b->buf + b->len, s, n);
    b->len += n;
}

/* s, at most max bytes of output ("..." marks a cut); "?" for NULL. A
 * control byte is written as \xHH: a path is the client's, and a decoded
 * "%0A" must not start a line (a forged report) in the log. */
static void put_s(block *b, const char *s, size_t max)
{
    static const char hex[] = "0123456789abcdef";
    size_t out = 0;

    if (s == NULL)
        s = "?";
    for (; *s != '\0'; s++) {
        unsigned char ch = (unsigned char)*s;
        bool ctl = ch < 0x20 || ch == 0x7f;
        size_t n = ctl ? 4 : 1;
        if (out + n > max) {
            put_n(b, "...", 3);
            return;
        }
        if (ctl) {
            char e[4] = {'\\', 'x', hex[ch >> 4], hex[ch & 15]};
            put_n(b, e, 4);
        } else {
            put_n(b, s, 1);
        }
        out += n;
    }
}

static void put_int(block *b, unsigned long long v, bool negative)
{
    char num[32];
    int n = snprintf(num, sizeof(num), "%s%llu", negative ? "-" : "", v);

    put_n(b, num, (size_t)n);
}

static void print_site(block *b, const char *call, latch_site at)
{
    /* A handler's return value has no call site: the report names the
     * handler and where it was registered. */
    if (call != NULL && (strncmp(call, "LATCH_", 6) == 0 ||
                         strcmp(call, "error return") == 0)) {
        put_s(b, call, NAME_MAX_);
        put_s(b, " returned by ", 16);
        put_s(b, at.func ? at.func : "a handler", NAME_MAX_);
        if (at.file != NULL) {
            put_s(b, " (registered at ", 16);
            put_s(b, at.file, FIELD_MAX);
            put_n(b, ":", 1);
            put_int(b,
                    at.line < 0 ? 0ull - (unsigned)at.line : (unsigned)at.line,
                    at.line < 0);
            put_n(b, ")", 1);
        }
        return;
    }
    put_s(b, call, NAME_MAX_);
    put_n(b, " (", 2);
    put_s(b, at.file, FIELD_MAX);
    put_n(b, ":", 1);
    put_int(b, at.line < 0 ? 0ull - (unsigned)at.line : (unsigned)at.line,
            at.line < 0);
    put_n(b, ", ", 2);
    put_s(b, at.func, NAME_MAX_);
    put_n(b, ")", 1);
}

/* The default hook's block for v, in b. Its longest block (every line,
 * every field at its bound) is about 3 KiB. */
static void format_block(const latch_violation *v, block *b)
{
    b->len = 0;
    put_s(b, "latch: ", 8);
    put_s(b, v->name, NAME_MAX_);
    put_n(b, ": ", 2);
    put_s(b, v->message, FIELD_MAX);
    put_n(b, "\n    at ", 8);
    print_site(b, v->call, v->at);
    put_n(b, "\n", 1);
    if (v->sealed_call != NULL) {
        put_s(b, "    response was sealed at ", 32);
        if (v->sealed_at.file != NULL)
            print_site(b, v->sealed_call, v->sealed_at);
        else
            put_s(b, v->sealed_call, NAME_MAX_);
        put_n(b, "\n", 1);
    }
    if (v->prior_call != NULL) {
        put_s(b, "    after ", 16);
        print_site(b, v->prior_call, v->prior_at);
        put_n(b, "\n", 1);
    }
    if (v->request_id != 0) {
        put_s(b, "    request ", 16);
        put_int(b, (unsigned long long)v->request_id, false);
        /* A stale handle's request is over: its id is all that is left. */
        if (v->method != NULL) {
            put_n(b, ": ", 2);
            put_s(b, v->method, NAME_MAX_);
            put_n(b, " ", 1);
            put_s(b, v->path, FIELD_MAX);
        }
        put_n(b, "\n", 1);
    }
    /* The bounds keep a block well inside the buffer; should that ever
     * change, the block still ends its last line. */
    if (b->len == sizeof(b->buf) - 1)
        b->buf[b->len - 1] = '\n';
}

/* The default hook: one block per violation, on stderr, written at once. */
static void default_hook(const latch_violation *v, void *data)
{
    block b;

    (void)data;
    format_block(v, &b);
    fwrite(b.buf, 1, b.len, stderr);
}

int latch_violation_format(const latch_violation *v, char *buf, size_t cap)
{
    block b;

    if (v == NULL || (buf == NULL && cap > 0))
        return LATCH_ERR_INVALID_ARG;
    format_block(v, &b);
    if (cap > 0) {
        size_t n = b.len < cap - 1 ? b.len : cap - 1;
        memcpy(buf, b.buf, n);
        buf[n] = '\0';
    }
    return (int)b.len;
}

/* Counts per site in a small open-addressing table; violations are rare,
 * so one mutex is enough. */
static void count_site(latch_app *app, int code, latch_site at)
{
    const char *file = at.file ? at.file : "";
    uint64_t h = (uint64_t)at.line * 0x9e3779b97f4a7c15ull;
    size_t i, n;

    for (const char *p = file; *p; p++)
        h = (h ^ (unsigned char)*p) * 0x100000001b3ull;
    pthread_mutex_lock(&app->site_mu);
    for (n = 0, i = (size_t)(h ^ (uint64_t)code) % LATCH_NSITES;
         n < LATCH_NSITES; n++, i = (i + 1) % LATCH_NSITES) {
        latch_site_count *sc = &app->sites[i];
        if (sc->file == NULL) {
            sc->file = file;
            sc->line = at.line;
            sc->code = code;
            sc->count = 1;
            break;
        }
        if (sc->line == at.line && sc->code == code &&
            (sc->file == file || strcmp(sc->file, file) == 0)) {
            sc->count++;
            break;
        }
    }
    if (n == LATCH_NSITES)
        app->sites_dropped++;
    pthread_mutex_unlock(&app->site_mu);
}

static void count(latch_app *app, int code, latch_site at)
{
    int i = code_index(code);

    atomic_fetch_add_explicit(&app->vcount_total, 1, memory_order_relaxed);
    if (i >= 0)
        atomic_fetch_add_explicit(&app->vcount[i], 1, memory_order_relaxed);
    count_site(app, code, at);
}

uint64_t latch_app_violation_site_count(latch_app *app, const char *file,
                                        int line)
{
    uint64_t total = 0;
    size_t i;

    if (app == NULL || file == NULL)
        return 0;
    file = latch__site_file(app, file); /* as counted */
    pthread_mutex_lock(&app->site_mu);
    for (i = 0; i < LATCH_NSITES; i++)
        if (app->sites[i].file != NULL && app->sites[i].line == line &&
            strcmp(app->sites[i].file, file) == 0)
            total += app->sites[i].count;
    pthread_mutex_unlock(&app->site_mu);
    return total;
}

void latch_app_violation_sites(latch_app *app,
                               void (*fn)(const char *file, int line, int code,
                                          uint64_t count, void *data),
                               void *data)
{
    latch_site_count copy[LATCH_NSITES];
    size_t i;

    if (app == NULL || fn == NULL)
        return;
    /* Call back outside the lock: fn may report or count itself. */
    pthread_mutex_lock(&app->site_mu);
    memcpy(copy, app->sites, sizeof(copy));
    pthread_mutex_unlock(&app->site_mu);
    for (i = 0; i < LATCH_NSITES; i++)
        if (copy[i].file != NULL)
            fn(copy[i].file, copy[i].line, copy[i].code, copy[i].count, data);
}

/*
 * Report paths. A build that hands the compiler absolute paths (CMake
 * does) puts them in __FILE__; latch's CMake package and latch.pc map them
 * at compile time (-fmacro-prefix-map). For a program built without that,
 * reports strip the source root at run time: $LATCH_SOURCE_ROOT, or else
 * the directory the program started in (latch_app_new's), which is the
 * project's own when run as ./build/app. "/" or a relative root strips
 * nothing.
 */
void latch__diag_init(latch_app *app)
{
    const char *root = getenv("LATCH_SOURCE_ROOT");
    char cwd[4096];
    size_t n;

    if (root == NULL || *root == '\0')
        root = getcwd(cwd, sizeof(cwd));
    if (root == NULL || root[0] != '/')
        return;
    n = strlen(root);
    while (n > 1 && root[n - 1] == '/')
        n--;
    if (n <= 1)
        return;
    app->src_root = strndup(root, n);
    app->src_root_len = app->src_root != NULL ? n : 0; /* NOMEM: keep it */
}

void latch__diag_free(latch_app *app)
{
    free(app->src_root);
    app->src_root = NULL;
    app->src_root_len = 0;
}

static void deliver(latch_app *app, latch_violation *v)
{
    v->at.file = latch__site_file(app, v->at.file);
    v->sealed_at.file = latch__site_file(app, v->sealed_at.file);
    v->prior_at.file = latch__site_file(app, v->prior_at.file);
    count(app, v->code, v->at);
    if (app->policy == LATCH_POLICY_COUNT)
        return;
    if (app->on_violation != NULL)
        app->on_violation(v, app->on_violation_data);
    else
        default_hook(v, NULL);
    if (app->policy == LATCH_POLICY_ABORT)
        abort();
}

void latch__violation(latch_res *res, int code, const char *call,
                      const char *message, latch_site at)
{
    latch__violation_prior(res, code, call, message, at, NULL);
}

void latch__violation_prior(latch_res *res, int code, const char *call,
                            const char *message, latch_site at,
                            const latch_seal *prior)
{
    latch__violation_sealed(res, code, call, message, at, prior, NULL);
}

void latch__violation_sealed(latch_res *res, int code, const char *call,
                             const char *message, latch_site at,
                             const latch_seal *prior, const latch_seal *sealed)
{
    static const latch_site nowhere = {NULL, 0, NULL};
    latch_violation v;
    latch_seal ended = {res->ended_call, nowhere};
    latch_seal headers = {res->headers_call, nowhere};
    const latch_seal *seal;

    /* The seals' places live in the cold part or its packed copy, which
     * the loop may give back at any time: read on the loop only. A call
     * from another thread (refused as such) is told what sealed the
     * response, without the place. */
    if (pthread_equal(pthread_self(), res->w->thread)) {
        ended = latch__res_seal(res, LATCH_SEAL_ENDED);
        headers = latch__res_seal(res, LATCH_SEAL_HEADERS);
    }
    memset(&v, 0, sizeof(v));
    v.code = code;
    v.name = latch_err_name(code);
    v.message = message ? message : latch_strerror(code);
    v.call = call;
    v.at = at;
    /* The place that matters is the one that closed the door the call
     * tried to open: the end for writes, the headers for header calls. */
    seal = ended.call ? &ended : &headers;
    if (code == LATCH_ERR_HTTP_HEADERS_SENT && headers.call)
        seal = &headers;
    if (sealed != NULL && seal->call == NULL)
        seal = sealed;
    if (seal->call != NULL) {
        v.sealed_call = seal->call;
        v.sealed_at = seal->at;
    }
    if (prior != NULL && prior->call != NULL) {
        v.prior_call = prior->call;
        v.prior_at = prior->at;
    }
    v.request_id = res->req.id;
    v.method = res->req.method;
    v.path = res->req.path ? res->req.path : res->req.url;
    if (LATCH_TRACING()) {
        char event[64];
        snprintf(event, sizeof(event), "violation %s", latch_err_name(code));
        latch__trace(res, event, call, at);
    }
    deliver(res->w->app, &v);
}

void latch__violation_app_req(latch_app *app, int code, const char *call,
                              const char *message, latch_site at,
                              uint64_t request_id)
{
    latch_violation v;

    memset(&v, 0, sizeof(v));
    v.code = code;
    v.name = latch_err_name(code);
    v.message = message ? message : latch_strerror(code);
    v.call = call;
    v.at = at;
    v.request_id = request_id;
    deliver(app, &v);
}

void latch__violation_app(latch_app *app, int code, const char *call,
                          const char *message, latch_site at)
{
    latch__violation_app_req(app, code, call, message, at, 0);
}

int latch_app_set_violation_policy(latch_app *app, int policy)
{
    if (app == NULL || policy < LATCH_POLICY_REPORT ||
        policy > LATCH_POLICY_COUNT)
        return LATCH_ERR_INVALID_ARG;
    app->policy = policy;
    return 0;
}

int latch_app_on_violation(latch_app *app,
                           void (*cb)(const latch_violation *v, void *data),
                           void *data)
{
    if (app == NULL)
        return LATCH_ERR_INVALID_ARG;
    app->on_violation = cb;
    app->on_violation_data = data;
    return 0;
}

uint64_t latch_app_violation_count(const latch_app *app, int code)
{
    int i = code_index(code);

    if (app == NULL)
        return 0;
    if (code == 0)
        return atomic_load(&app->vcount_total);
    return i < 0 ? 0 : atomic_load(&app->vcount[i]);
}
