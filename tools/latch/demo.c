/*
 * demo.c - `latch demo`, what `make run` starts: a page that lists the
 * lifecycle bugs of Node.js, Express and Fastify programs, each a route
 * written the buggy way in C (demo_bugs.c), with its source, a button that
 * calls it, the response that arrived and the report latch made; live
 * violation counters over Server-Sent Events. Also GET /hello, /json and
 * POST /echo, the routes a first curl tries.
 *
 * The parts:
 *   the page      demo.html and demo_bugs.c are embedded by the build
 *                 (cmake/embed.cmake); the page is demo.html with one
 *                 section per bug, its code cut from demo_bugs.c at the
 *                 marker comments, built once at start.
 *   the reports   the app's violation hook prints each report as latch's
 *                 default hook does and keeps it for its request; a
 *                 middleware on /bug/ tags each request with the page's
 *                 X-Demo-Token and tells the request id (X-Latch-Request-Id)
 *                 and how the response ended (finished, or cut).
 *                 GET /demo/reports?token=T (or ?id=N) answers them.
 *   the counters  GET /demo/counters (JSON) and GET /demo/events (SSE: a
 *                 "counters" event at once and whenever they change).
 *   the upstream  the proxy bug needs a slow server: a second app on
 *                 127.0.0.1 in a thread of its own, answering any path in
 *                 1.5 s.
 *
 * What it is not: a benchmark target (bench/ has its own apps) or a place
 * for configuration; everything is a command-line option (ops.c).
 */
#include "demo.h"
#include "cmd.h"
#include "ops.h"

#include "demo_bugs_src.h"
#include "demo_html.h"

#include <latch.h>

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the first routes -------------------------------------------------- */

static int on_hello(latch_req *req, latch_res *res, void *data)
{
    (void)req;
    (void)data;
    latch_res_set_header(res, "Content-Type", "text/plain; charset=utf-8");
    latch_res_send(res, "Hello, World!", 13);
    return LATCH_DONE;
}

static int on_json(latch_req *req, latch_res *res, void *data)
{
    (void)req;
    (void)data;
    latch_res_json(res, "{\"message\":\"Hello, World!\"}");
    return LATCH_DONE;
}

static int on_echo(latch_req *req, latch_res *res, void *data)
{
    const void *body;
    size_t len;
    const char *ct = latch_req_header(req, "Content-Type");

    (void)data;
    latch_req_body(req, &body, &len);
    latch_res_set_header(res, "Content-Type",
                         ct ? ct : "application/octet-stream");
    latch_res_send(res, body, len);
    return LATCH_DONE;
}

/* ---- the page ---------------------------------------------------------- */

/* A growing string with a hard cap; a failed append sticks. */
typedef struct sbuf {
    char *p;
    size_t len, cap;
    bool failed;
} sbuf;

#define PAGE_MAX (1u << 20)

static void put(sbuf *b, const char *s, size_t n)
{
    if (b->failed)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 16384;
        char *p;
        while (cap < b->len + n + 1)
            cap *= 2;
        if (cap > PAGE_MAX || (p = realloc(b->p, cap)) == NULL) {
            b->failed = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void puts_(sbuf *b, const char *s)
{
    put(b, s, strlen(s));
}

/* s[0..n) escaped for HTML text and attribute values. */
static void put_html(sbuf *b, const char *s, size_t n)
{
    size_t i, from = 0;

    for (i = 0; i < n; i++) {
        const char *e = NULL;
        switch (s[i]) {
        case '&': e = "&amp;"; break;
        case '<': e = "&lt;"; break;
        case '>': e = "&gt;"; break;
        case '"': e = "&quot;"; break;
        default: continue;
        }
        put(b, s + from, i - from);
        puts_(b, e);
        from = i + 1;
    }
    put(b, s + from, n - from);
}

/*
 * The lines of demo_bugs.c between "bug: <name>" and "end bug" (marker
 * comments), numbered as in the file, into b. Returns false when the
 * markers are missing (a build that embedded another file).
 */
static bool put_code(sbuf *b, const char *name)
{
    const char *src = (const char *)demo_bugs_src, *at, *end, *p;
    char marker[96], num[16];
    int line = 1;

    snprintf(marker, sizeof(marker), "/* bug: %s */\n", name);
    at = strstr(src, marker);
    if (at == NULL)
        return false;
    at += strlen(marker);
    end = strstr(at, "/* end bug */");
    if (end == NULL)
        return false;
    for (p = src; p < at; p++)
        line += *p == '\n';
    for (p = at; p < end; line++) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t n = nl != NULL ? (size_t)(nl - p) : (size_t)(end - p);
        snprintf(num, sizeof(num), "%4d  ", line);
        puts_(b, num);
        put_html(b, p, n);
        puts_(b, "\n");
        p += n + 1;
    }
    return true;
}

static const char *const client_names[] = {"", "fetch", "abort", "sse"};

/* demo.html with a section per bug where it says <!--bugs-->. NULL when
 * out of memory or when a bug's code is not in the embedded source. */
static char *build_page(void)
{
    const char *html = (const char *)demo_html;
    const char *slot = strstr(html, "<!--bugs-->");
    sbuf b = {0};
    char num[32];
    size_t i;

    if (slot == NULL)
        return NULL;
    put(&b, html, (size_t)(slot - html));
    for (i = 0; i < demo_nbugs; i++) {
        const demo_bug *g = &demo_bugs[i];
        puts_(&b, "<section class=\"bug\" id=\"");
        puts_(&b, g->name);
        puts_(&b, "\" data-method=\"");
        puts_(&b, g->method);
        puts_(&b, "\" data-url=\"");
        put_html(&b, g->url, strlen(g->url));
        puts_(&b, "\" data-client=\"");
        puts_(&b, client_names[g->client]);
        snprintf(num, sizeof(num), "\" data-reports=\"%d\">\n", g->reports);
        puts_(&b, num);
        snprintf(num, sizeof(num), "<h3>%zu. ", i + 1);
        puts_(&b, num);
        put_html(&b, g->title, strlen(g->title));
        puts_(&b, "</h3>\n<p class=\"node\"><b>In Node.js:</b> ");
        put_html(&b, g->node, strlen(g->node));
        puts_(&b, "</p>\n<pre class=\"code\">");
        if (!put_code(&b, g->name) ||
            (g->shared != NULL &&
             (puts_(&b, "\n"), !put_code(&b, g->shared)))) {
            free(b.p);
            return NULL;
        }
        puts_(&b, "</pre>\n<button>");
        puts_(&b, g->method);
        puts_(&b, " ");
        put_html(&b, g->url, strlen(g->url));
        puts_(&b, "</button>\n<pre class=\"res\"></pre>\n"
                  "<pre class=\"rep\"></pre>\n</section>\n");
    }
    puts_(&b, slot + strlen("<!--bugs-->"));
    if (b.failed) {
        free(b.p);
        return NULL;
    }
    return b.p;
}

static char *page;

static int on_index(latch_req *req, latch_res *res, void *data)
{
    (void)req;
    (void)data;
    return latch_res_send(res, page, strlen(page));
}

/* ---- the reports, per request ------------------------------------------ */

#define KEPT 128  /* requests remembered, the oldest forgotten first */
#define REPORTS 4 /* reports kept per request */
#define REPORT_MAX 1024
#define TOKEN_MAX 48

typedef struct kept {
    uint64_t id; /* 0: free */
    char token[TOKEN_MAX];
    char method[8];
    char path[64];
    int state; /* 0 open, 1 finished, 2 cut (closed before it finished) */
    int nreports;
    char code[REPORTS][40];
    char text[REPORTS][REPORT_MAX];
} kept;

static kept kept_[KEPT];
static unsigned kept_next;
static pthread_mutex_t kept_mu = PTHREAD_MUTEX_INITIALIZER;

/* The entry of request id, or NULL; with kept_mu held. */
static kept *find_id(uint64_t id)
{
    size_t i;

    for (i = 0; i < KEPT; i++)
        if (kept_[i].id == id)
            return &kept_[i];
    return NULL;
}

static void on_violation(const latch_violation *v, void *data)
{
    char text[REPORT_MAX];
    kept *k;

    (void)data;
    latch_violation_format(v, text, sizeof(text));
    fputs(text, stderr); /* what latch's default hook prints */
    if (v->request_id == 0)
        return;
    pthread_mutex_lock(&kept_mu);
    k = find_id(v->request_id);
    if (k != NULL && k->nreports < REPORTS) {
        snprintf(k->code[k->nreports], sizeof(k->code[0]), "%s", v->name);
        memcpy(k->text[k->nreports], text, sizeof(text));
        k->nreports++;
    }
    pthread_mutex_unlock(&kept_mu);
}

static void set_state(latch_res *res, void *data, int state)
{
    kept *k;

    (void)res;
    pthread_mutex_lock(&kept_mu);
    k = find_id((uint64_t)(uintptr_t)data);
    if (k != NULL && k->state == 0)
        k->state = state;
    pthread_mutex_unlock(&kept_mu);
}

static void on_finished(latch_res *res, void *data)
{
    set_state(res, data, 1);
}

static void on_closed(latch_res *res, void *data)
{
    /* 'close' comes after 'finish' on a finished response: only a
     * response that never finished is cut. */
    set_state(res, data, 2);
}

/* The page's token: letters, digits and '-' only, else none. */
static const char *token_of(const latch_req *req)
{
    const char *t = latch_req_header(req, "X-Demo-Token");
    size_t n;

    if (t == NULL || (n = strlen(t)) == 0 || n >= TOKEN_MAX ||
        strspn(t, "abcdefghijklmnopqrstuvwxyz0123456789-") != n)
        return "";
    return t;
}

/* Middleware on /bug/: remembers the request, tells its id. */
static int tag(latch_req *req, latch_res *res, void *data)
{
    uint64_t id = latch_req_id(req);
    char num[24];
    kept *k;

    (void)data;
    pthread_mutex_lock(&kept_mu);
    k = &kept_[kept_next++ % KEPT];
    memset(k, 0, sizeof(*k));
    k->id = id;
    snprintf(k->token, sizeof(k->token), "%s", token_of(req));
    snprintf(k->method, sizeof(k->method), "%s", latch_req_method(req));
    snprintf(k->path, sizeof(k->path), "%s", latch_req_path(req));
    pthread_mutex_unlock(&kept_mu);
    snprintf(num, sizeof(num), "%" PRIu64, id);
    latch_res_set_header(res, "X-Latch-Request-Id", num);
    /* The page abandons some of these requests, as a client that leaves.
     * A browser keeps an abandoned keep-alive connection open for seconds
     * to drain its body (an event stream never ends): on a connection that
     * closes after the response, it closes at once and latch sees the
     * client leave. */
    latch_res_set_header(res, "Connection", "close");
    latch_res_on_finish(res, on_finished, (void *)(uintptr_t)id);
    latch_res_on_close(res, on_closed, (void *)(uintptr_t)id);
    return LATCH_NEXT;
}

static const char *const state_names[] = {"open", "finished", "cut"};

/* GET /demo/reports?token=T or ?id=N: {"id","method","path","state",
 * "reports":[{"code","text"}]}; 404 when the request is not (or no
 * longer) remembered. */
static int on_reports(latch_req *req, latch_res *res, void *data)
{
    const char *token = latch_req_query(req, "token");
    const char *ids = latch_req_query(req, "id");
    uint64_t id = ids != NULL ? strtoull(ids, NULL, 10) : 0;
    kept copy, *k = NULL;
    latch_json *j;
    size_t i;
    int n;

    (void)data;
    pthread_mutex_lock(&kept_mu);
    for (i = 0; i < KEPT && k == NULL; i++) {
        kept *e = &kept_[i];
        if (e->id != 0 && ((token != NULL && token[0] != '\0' &&
                            strcmp(e->token, token) == 0) ||
                           (id != 0 && e->id == id)))
            k = e;
    }
    if (k != NULL)
        copy = *k;
    pthread_mutex_unlock(&kept_mu);
    if (k == NULL) {
        latch_res_status(res, 404);
        return latch_res_json(res, "{\"error\":\"no such request\"}");
    }
    latch_res_set_header(res, "Cache-Control", "no-store");
    j = latch_res_json_begin(res);
    latch_json_object_begin(j);
    latch_json_key(j, "id");
    latch_json_uint(j, copy.id);
    latch_json_key(j, "method");
    latch_json_string(j, copy.method);
    latch_json_key(j, "path");
    latch_json_string(j, copy.path);
    latch_json_key(j, "state");
    latch_json_string(j, state_names[copy.state]);
    latch_json_key(j, "reports");
    latch_json_array_begin(j);
    for (n = 0; n < copy.nreports; n++) {
        latch_json_object_begin(j);
        latch_json_key(j, "code");
        latch_json_string(j, copy.code[n]);
        latch_json_key(j, "text");
        latch_json_string(j, copy.text[n]);
        latch_json_object_end(j);
    }
    latch_json_array_end(j);
    latch_json_object_end(j);
    return latch_res_json_end(res);
}

/* ---- the counters ------------------------------------------------------ */

static latch_app *demo_app;

static const int counted[] = {
    LATCH_ERR_HTTP_HEADERS_SENT,   LATCH_ERR_STREAM_WRITE_AFTER_END,
    LATCH_ERR_STREAM_DESTROYED,    LATCH_ERR_NEXT_TWICE,
    LATCH_ERR_NEXT_AFTER_RESPONSE, LATCH_ERR_NO_RESPONSE,
};

/* {"total":N,"ERR_...":N,...} into buf. */
static void counters(char *buf, size_t cap)
{
    size_t i, len;

    len = (size_t)snprintf(buf, cap, "{\"total\":%" PRIu64,
                           latch_app_violation_count(demo_app, 0));
    for (i = 0; i < sizeof(counted) / sizeof(counted[0]) && len < cap; i++)
        len +=
            (size_t)snprintf(buf + len, cap - len, ",\"%s\":%" PRIu64,
                             latch_err_name(counted[i]),
                             latch_app_violation_count(demo_app, counted[i]));
    if (len < cap)
        snprintf(buf + len, cap - len, "}");
}

static int on_counters(latch_req *req, latch_res *res, void *data)
{
    char buf[512];

    (void)req;
    (void)data;
    counters(buf, sizeof(buf));
    latch_res_set_header(res, "Cache-Control", "no-store");
    return latch_res_json(res, buf);
}

/* Every 200 ms: a "counters" event when the total moved. The total last
 * sent rides in the timer's data. */
static void tick(latch_res *res, void *data)
{
    uint64_t total = latch_app_violation_count(demo_app, 0);
    char buf[512];

    if (total != (uint64_t)(uintptr_t)data) {
        counters(buf, sizeof(buf));
        if (latch_sse_send(res, "counters", NULL, buf) < 0)
            return;
    }
    latch_set_timeout(res, 200, tick, (void *)(uintptr_t)total);
}

static int on_events(latch_req *req, latch_res *res, void *data)
{
    (void)req;
    (void)data;
    if (latch_sse_start(res) < 0)
        return LATCH_DONE;
    /* UINTPTR_MAX: no total sent yet, so the first tick sends one */
    tick(res, (void *)UINTPTR_MAX);
    return LATCH_DONE;
}

/* ---- the slow upstream ------------------------------------------------- */

static void answer_slowly(latch_res *res, void *data)
{
    (void)data;
    latch_res_send(res, "the slow page\n", 14);
}

static int on_slow(latch_req *req, latch_res *res, void *data)
{
    (void)req;
    (void)data;
    latch_set_timeout(res, 1500, answer_slowly, NULL);
    return LATCH_DONE;
}

static void *run_upstream(void *app)
{
    latch_run(app);
    return NULL;
}

/* The upstream app, listening and running, or NULL (printed). */
static latch_app *start_upstream(pthread_t *th, char *url, size_t cap)
{
    latch_app *up = latch_app_new();

    if (up == NULL)
        return NULL;
    latch_app_set_workers(up, 1);
    latch_app_set_handle_signals(up, false);
    latch_all(up, "/*", on_slow, NULL);
    if (latch_listen(up, "127.0.0.1", 0) < 0 ||
        pthread_create(th, NULL, run_upstream, up) != 0) {
        fprintf(stderr, "latch: cannot start the demo's upstream\n");
        latch_app_free(up);
        return NULL;
    }
    snprintf(url, cap, "http://127.0.0.1:%d", latch_app_port(up));
    return up;
}

/* ---- the command ------------------------------------------------------- */

static const char demo_usage[] =
    "usage: latch [demo] [options]\n"
    "\n"
    "Serves the demo: GET / (a page of the lifecycle bugs Node.js, Express\n"
    "and Fastify programs meet, each a route under /bug/ written the same\n"
    "way in C, with what latch reported), GET /hello, /json, POST /echo.\n"
    "\n"
    "options:\n"
    "  -h HOST, -p PORT, -w N   short for --host, --port, --workers\n";

static void print_usage(FILE *f)
{
    fputs(demo_usage, f);
    fputs(cli_opts_usage, f);
    fputs("  --help                this text\n"
          "\n"
          "See latch(1).\n",
          f);
}

enum { CLI_HELP = 0x200 };

int latch_cmd_demo(int argc, char **argv)
{
    static const struct option longs[] = {
        CLI_LONGOPTS,
        {"help", no_argument, NULL, CLI_HELP},
        {NULL, 0, NULL, 0},
    };
    latch_app *app = NULL, *up = NULL;
    char upstream[64];
    pthread_t up_th;
    cli_opts o;
    int opt, r = -1;

    cli_opts_init(&o);
    optind = 1;
    while ((opt = getopt_long(argc, argv, "h:p:w:", longs, NULL)) != -1) {
        if (opt == CLI_HELP) {
            print_usage(stdout);
            return 0;
        }
        /* -h is --host here, as it always was for the demo; -1: the
         * reason is printed, 0: getopt_long printed it */
        if (cli_opts_take(&o, opt == 'h' ? CLI_HOST : opt, "latch", argc,
                          argv) <= 0)
            goto usage;
    }
    if (optind < argc) {
        fprintf(stderr, "latch: unexpected argument '%s'\n", argv[optind]);
        goto usage;
    }
    if ((page = build_page()) == NULL) {
        fprintf(stderr, "latch: cannot build the demo page\n");
        return 1;
    }
    cli_opts_env(&o);
    if ((app = latch_app_new()) == NULL)
        goto out;
    demo_app = app;
    if (cli_opts_apply(&o, app, "latch") != 0)
        goto out;
    if ((up = start_upstream(&up_th, upstream, sizeof(upstream))) == NULL)
        goto out;
    latch_app_on_violation(app, on_violation, NULL);
    latch_get(app, "/", on_index, NULL);
    latch_get(app, "/hello", on_hello, NULL);
    latch_get(app, "/json", on_json, NULL);
    latch_post(app, "/echo", on_echo, NULL);
    latch_get(app, "/demo/reports", on_reports, NULL);
    latch_get(app, "/demo/counters", on_counters, NULL);
    latch_get(app, "/demo/events", on_events, NULL);
    latch_use(app, "/bug", tag, NULL);
    if (demo_bugs_register(app, upstream) < 0) {
        fprintf(stderr, "latch: cannot register the demo's routes\n");
        goto out;
    }
    if (cli_opts_listen(&o, app, "latch", "") != 0)
        goto out;
    r = latch_run(app);

out:
    if (up != NULL) {
        latch_stop(up);
        pthread_join(up_th, NULL);
        latch_app_free(up);
    }
    latch_app_free(app);
    free(page);
    page = NULL;
    return r < 0 ? 1 : 0;

usage:
    fputc('\n', stderr);
    print_usage(stderr);
    return 2;
}
