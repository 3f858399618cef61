/*
 * serve.c - `latch serve [DIR]`: a static file server on the library, as
 * `npx serve` or `python3 -m http.server` are, built only on latch.h.
 *
 * Files go through latch_static (ranges, ETag, 304, precompressed .br/.gz
 * siblings, dotfiles ignored, paths checked before any disk access and
 * symlinks out of DIR refused). A directory without index.html gets a
 * listing page: HTML, entries sorted (directories first, then by name),
 * sizes and modification dates, every name escaped for HTML and for the
 * URL. The listing is read on the thread pool (latch_work), so a large or
 * slow directory never stalls the loop, and is bounded in entries.
 *
 * --proxy PREFIX=URL (repeatable) puts a latch_use_proxy in front of the
 * files: a request whose path is PREFIX or under it (at a segment
 * boundary) goes to URL instead, with nginx's proxy_pass rule for the
 * path: a URL with a path ("http://h:3000/", "http://h:3000/v1") has the
 * PREFIX replaced by that path, a URL without one gets the request's path
 * as received.
 *
 * What it is not: an upload server, a load balancer (one URL per prefix),
 * or a place for configuration files; everything is a command-line option.
 */
#include "cmd.h"
#include "ops.h"

#include <latch.h>

#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MAX_ENTRIES 20000
#define MAX_PROXIES 64

/* getopt_long's answer for --proxy (beside ops.h's CLI_*). */
enum { SERVE_PROXY = 0x200 };

static const char serve_usage[] =
    "usage: latch serve [DIR] [options]\n"
    "\n"
    "Serves the files under DIR (default: the current directory) over "
    "HTTP/1.1.\n"
    "A directory with an index.html is served by it; one without gets a\n"
    "listing page. Dotfiles are not served, paths that leave DIR (.., "
    "encoded\n"
    "slashes, symlinks pointing out) are refused.\n"
    "\n"
    "options:\n"
    "  -p PORT, -w N         short for --port, --workers\n";

static const char serve_usage_tail[] =
    "  --no-listing          404 for a directory without index.html\n"
    "  --max-age SEC         Cache-Control max-age for files (default 0)\n"
    "  --proxy PREFIX=URL    forward PREFIX and the paths under it to URL\n"
    "                        (http://HOST:PORT[/PATH]) before any file is\n"
    "                        looked up; with a PATH in URL, PREFIX is\n"
    "                        replaced by it, else the path goes as it came;\n"
    "                        repeatable\n"
    "  -h, --help            this text\n"
    "\n"
    "examples:\n"
    "  latch serve                       the current directory on "
    "http://127.0.0.1:8080/\n"
    "  latch serve public --port 3000    ./public on port 3000\n"
    "  latch serve /srv/www --host 0.0.0.0 --workers 4\n"
    "  latch serve dist --no-listing --max-age 3600\n"
    "  latch serve --access-log json --metrics --debug\n"
    "  latch serve dist --proxy /api=http://127.0.0.1:3000/\n";

static void print_usage(FILE *f)
{
    fputs(serve_usage, f);
    fputs(cli_opts_usage, f);
    fputs(serve_usage_tail, f);
}

typedef struct serve_cfg {
    char root[PATH_MAX]; /* DIR, resolved */
    size_t root_len;
} serve_cfg;

/* One directory listing being built on the thread pool. */
typedef struct listing {
    const serve_cfg *cfg;
    const char *path; /* the decoded request path (the request's) */
    int status;       /* 200, or the error to answer */
    const char *reason;
    char *html; /* the page (malloc'd) */
    size_t len, cap;
} listing;

typedef struct entry {
    char *name;
    bool dir;
    long long size;
    time_t mtime;
} entry;

/* ---- a bounded growable page -------------------------------------------- */

static bool put(listing *l, const char *s, size_t n)
{
    if (l->len + n + 1 > l->cap) {
        size_t cap = l->cap ? l->cap : 4096;
        char *p;
        while (cap < l->len + n + 1)
            cap *= 2;
        if (cap > ((size_t)64 << 20) || (p = realloc(l->html, cap)) == NULL)
            return false;
        l->html = p;
        l->cap = cap;
    }
    memcpy(l->html + l->len, s, n);
    l->len += n;
    l->html[l->len] = '\0';
    return true;
}

static bool puts_(listing *l, const char *s)
{
    return put(l, s, strlen(s));
}

/* s as HTML text (and attribute value): & < > " ' escaped. */
static bool put_html(listing *l, const char *s)
{
    bool ok = true;

    for (; *s != '\0' && ok; s++) {
        switch (*s) {
        case '&': ok = puts_(l, "&amp;"); break;
        case '<': ok = puts_(l, "&lt;"); break;
        case '>': ok = puts_(l, "&gt;"); break;
        case '"': ok = puts_(l, "&quot;"); break;
        case '\'': ok = puts_(l, "&#39;"); break;
        default: ok = put(l, s, 1);
        }
    }
    return ok;
}

/* s as one URL path segment: every byte but the unreserved ones encoded
 * (so a name with '?', '#', '%' or a space links to itself). */
static bool put_url(listing *l, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    bool ok = true;

    for (; *s != '\0' && ok; s++) {
        unsigned char c = (unsigned char)*s;
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
            (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_' ||
            c == '~') {
            ok = put(l, s, 1);
        } else {
            char e[3] = {'%', hex[c >> 4], hex[c & 15]};
            ok = put(l, e, 3);
        }
    }
    return ok;
}

/* ---- the listing ----------------------------------------------------------
 */

/* Whether a decoded request path may name a directory to list: absolute,
 * no backslash, no empty-dot, dot-dot or dotfile segment. */
static bool path_ok(const char *p)
{
    if (p[0] != '/' || strchr(p, '\\') != NULL)
        return false;
    for (const char *s = p + 1; *s != '\0';) {
        if (*s == '.')
            return false; /* ".", "..", and dotfiles: never listed */
        while (*s != '\0' && *s != '/')
            s++;
        while (*s == '/')
            s++;
    }
    return true;
}

static int by_kind_then_name(const void *a, const void *b)
{
    const entry *x = a, *y = b;

    if (x->dir != y->dir)
        return x->dir ? -1 : 1;
    return strcmp(x->name, y->name);
}

static void human(char *out, size_t cap, long long n)
{
    static const char *const unit[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    double v = (double)n;
    int u = 0;

    while (v >= 1024 && u < 4) {
        v /= 1024;
        u++;
    }
    if (u == 0)
        snprintf(out, cap, "%lld B", n);
    else
        snprintf(out, cap, "%.1f %s", v, unit[u]);
}

static void fail_with(listing *l, int status, const char *reason)
{
    l->status = status;
    l->reason = reason;
}

/* The thread pool: read the directory, build the page. */
static void build(void *data)
{
    listing *l = data;
    char full[PATH_MAX], real[PATH_MAX];
    entry *ents = NULL;
    size_t n = 0, cap = 0, i;
    DIR *d;
    struct dirent *e;
    int dfd;

    l->status = 200;
    if (!path_ok(l->path)) {
        fail_with(l, 404, "Not Found\n");
        return;
    }
    if ((size_t)snprintf(full, sizeof(full), "%s%s", l->cfg->root, l->path) >=
            sizeof(full) ||
        realpath(full, real) == NULL) {
        fail_with(l, 404, "Not Found\n");
        return;
    }
    /* where it really is must be DIR or under it (a symlinked directory
     * pointing out of DIR is not listed) */
    if (strncmp(real, l->cfg->root, l->cfg->root_len) != 0 ||
        (real[l->cfg->root_len] != '\0' && real[l->cfg->root_len] != '/')) {
        fail_with(l, 403, "Forbidden\n");
        return;
    }
    if ((d = opendir(real)) == NULL) {
        fail_with(l, errno == EACCES ? 403 : 404,
                  errno == EACCES ? "Forbidden\n" : "Not Found\n");
        return;
    }
    dfd = dirfd(d);
    while ((e = readdir(d)) != NULL && n < MAX_ENTRIES) {
        struct stat st;
        if (e->d_name[0] == '.')
            continue; /* dotfiles, "." and ".." */
        if (fstatat(dfd, e->d_name, &st, 0) != 0)
            continue; /* a dangling symlink */
        if (n == cap) {
            size_t nc = cap ? cap * 2 : 64;
            entry *ne = realloc(ents, nc * sizeof(*ents));
            if (ne == NULL)
                break;
            ents = ne;
            cap = nc;
        }
        if ((ents[n].name = strdup(e->d_name)) == NULL)
            break;
        ents[n].dir = S_ISDIR(st.st_mode);
        ents[n].size = (long long)st.st_size;
        ents[n].mtime = st.st_mtime;
        n++;
    }
    closedir(d);
    qsort(ents, n, sizeof(*ents), by_kind_then_name);

    puts_(l, "<!doctype html>\n<html><head><meta charset=\"utf-8\">"
             "<title>Index of ");
    put_html(l, l->path);
    puts_(l, "</title>\n<style>body{font-family:sans-serif;margin:2em}"
             "td{padding:.1em 1.5em .1em 0}td.s{text-align:right}</style>"
             "</head>\n<body>\n<h1>Index of ");
    put_html(l, l->path);
    puts_(l, "</h1>\n<table>\n<tr><th>Name</th><th>Size</th>"
             "<th>Modified (UTC)</th></tr>\n");
    if (strcmp(l->path, "/") != 0)
        puts_(l, "<tr><td><a href=\"../\">../</a></td><td></td><td></td>"
                 "</tr>\n");
    for (i = 0; i < n; i++) {
        char size[32], date[32];
        struct tm tm;
        gmtime_r(&ents[i].mtime, &tm);
        strftime(date, sizeof(date), "%Y-%m-%d %H:%M", &tm);
        if (ents[i].dir)
            snprintf(size, sizeof(size), "-");
        else
            human(size, sizeof(size), ents[i].size);
        puts_(l, "<tr><td><a href=\"");
        put_url(l, ents[i].name);
        if (ents[i].dir)
            puts_(l, "/");
        puts_(l, "\">");
        put_html(l, ents[i].name);
        if (ents[i].dir)
            puts_(l, "/");
        puts_(l, "</a></td><td class=\"s\">");
        puts_(l, size);
        puts_(l, "</td><td>");
        puts_(l, date);
        puts_(l, "</td></tr>\n");
        free(ents[i].name);
    }
    free(ents);
    if (!puts_(l, "</table>\n</body></html>\n")) {
        free(l->html);
        l->html = NULL;
        fail_with(l, 500, "The listing is too large\n");
    }
}

/* Back on the loop: the page, or the error. */
static void listed(latch_res *res, int status, void *data)
{
    listing *l = data;

    if (status == 0) {
        if (l->status == 200) {
            latch_res_set_header(res, "Content-Type",
                                 "text/html; charset=utf-8");
            latch_res_set_header(res, "Cache-Control", "no-cache");
            latch_res_send(res, l->html, l->len);
        } else {
            latch_res_status(res, l->status);
            latch_res_set_header(res, "Content-Type",
                                 "text/plain; charset=utf-8");
            latch_res_send(res, l->reason, strlen(l->reason));
        }
    }
    /* LATCH_ERR_CANCELLED: the client left, nothing to answer */
    free(l->html);
    free(l);
}

/* After latch_static: a miss. A directory gets its listing, anything else
 * a 404 (a method other than GET/HEAD: 405). */
static int on_miss(latch_req *req, latch_res *res, void *data)
{
    const char *m = latch_req_method(req);
    listing *l;

    if (strcmp(m, "GET") != 0 && strcmp(m, "HEAD") != 0) {
        latch_res_status(res, 405);
        latch_res_set_header(res, "Allow", "GET, HEAD");
        latch_res_send(res, "Method Not Allowed\n", 19);
        return LATCH_DONE;
    }
    if (data == NULL ||
        latch_req_path(req)[strlen(latch_req_path(req)) - 1] != '/') {
        latch_res_status(res, 404);
        latch_res_set_header(res, "Content-Type", "text/plain; charset=utf-8");
        latch_res_send(res, "Not Found\n", 10);
        return LATCH_DONE;
    }
    if ((l = calloc(1, sizeof(*l))) == NULL)
        return latch_fail(req, 500, "out of memory");
    l->cfg = data;
    l->path = latch_req_path(req);
    if (latch_work(res, build, listed, l) < 0) {
        free(l);
        return latch_fail(req, 500, "cannot list the directory");
    }
    return LATCH_DONE;
}

/* ---- --proxy PREFIX=URL ------------------------------------------------ */

typedef struct proxy_spec {
    const char *arg; /* as given, for messages */
    char prefix[256];
    const char *url;
    bool strip; /* URL has a path: PREFIX is replaced by it */
} proxy_spec;

/* Splits and checks what latch can check before the app exists; the URL
 * itself is checked by latch_use_proxy. Returns false after printing why. */
static bool proxy_parse(const char *arg, proxy_spec *ps)
{
    const char *eq = strchr(arg, '='), *auth;
    size_t n;

    ps->arg = arg;
    if (eq == NULL || eq == arg || eq[1] == '\0') {
        fprintf(stderr, "latch serve: --proxy takes PREFIX=URL, not '%s'\n",
                arg);
        return false;
    }
    n = (size_t)(eq - arg);
    if (arg[0] != '/' || n >= sizeof(ps->prefix) || strcspn(arg, "?# \t") < n) {
        fprintf(stderr,
                "latch serve: --proxy: the prefix must be a path starting "
                "with '/', not '%.*s'\n",
                (int)n, arg);
        return false;
    }
    memcpy(ps->prefix, arg, n);
    ps->prefix[n] = '\0';
    ps->url = eq + 1;
    if (strncmp(ps->url, "http://", 7) != 0) {
        fprintf(stderr,
                "latch serve: --proxy: the URL must be "
                "http://HOST:PORT[/PATH], not '%s'\n",
                ps->url);
        return false;
    }
    /* nginx's rule: a URL with a path, even "/", replaces the prefix. */
    auth = ps->url + 7;
    ps->strip = auth[strcspn(auth, "/")] == '/';
    return true;
}

int latch_cmd_serve(int argc, char **argv)
{
    static const struct option longs[] = {
        CLI_LONGOPTS,
        {"no-listing", no_argument, NULL, 'n'},
        {"max-age", required_argument, NULL, 'm'},
        {"proxy", required_argument, NULL, SERVE_PROXY},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    static serve_cfg cfg;
    static proxy_spec proxies[MAX_PROXIES];
    int nproxies = 0;
    const char *dir = ".";
    char what[PATH_MAX + 16];
    long max_age = 0;
    bool listing_on = true;
    latch_static_opts so = {0};
    latch_app *app;
    cli_opts o;
    char *end;
    int opt, r;

    cli_opts_init(&o);
    optind = 1;
    while ((opt = getopt_long(argc, argv, "hp:w:", longs, NULL)) != -1) {
        switch (opt) {
        case 'n': listing_on = false; break;
        case 'm':
            max_age = strtol(optarg, &end, 10);
            if (*optarg == '\0' || *end != '\0' || max_age < 0) {
                fprintf(stderr, "latch serve: bad max-age: %s\n", optarg);
                goto usage;
            }
            break;
        case SERVE_PROXY:
            if (nproxies == MAX_PROXIES) {
                fprintf(stderr, "latch serve: at most %d --proxy options\n",
                        MAX_PROXIES);
                goto usage;
            }
            if (!proxy_parse(optarg, &proxies[nproxies++]))
                goto usage;
            break;
        case 'h': print_usage(stdout); return 0;
        default:
            /* -1: the reason is printed; 0: getopt_long printed it */
            if (cli_opts_take(&o, opt, "latch serve", argc, argv) <= 0)
                goto usage;
        }
    }
    if (optind < argc)
        dir = argv[optind++];
    if (optind < argc) {
        fprintf(stderr, "latch serve: one directory only (got %s too)\n",
                argv[optind]);
        goto usage;
    }
    if (realpath(dir, cfg.root) == NULL) {
        fprintf(stderr, "latch serve: %s: %s\n", dir, strerror(errno));
        return 1;
    }
    cfg.root_len = strlen(cfg.root);
    if (cfg.root_len == 1)
        cfg.root_len = 0; /* "/": every real path is under it */
    cli_opts_env(&o);
    if ((app = latch_app_new()) == NULL)
        return 1;
    if (cli_opts_apply(&o, app, "latch serve") != 0)
        goto fail;
    /* Proxied prefixes first: they are matched before the files. */
    for (int i = 0; i < nproxies; i++) {
        latch_proxy_opts po = {0};
        po.strip_prefix = proxies[i].strip ? proxies[i].prefix : NULL;
        r = latch_use_proxy(app, proxies[i].prefix, proxies[i].url, &po);
        if (r == LATCH_ERR_INVALID_ARG) {
            fprintf(stderr, "latch serve: --proxy: bad value '%s'\n",
                    proxies[i].arg);
            latch_app_free(app);
            goto usage;
        }
        if (r < 0) {
            fprintf(stderr, "latch serve: --proxy %s: %s\n", proxies[i].arg,
                    latch_strerror(r));
            goto fail;
        }
    }
    so.precompressed = true;
    so.max_age_ms = (uint64_t)max_age * 1000;
    r = latch_static(app, "/", cfg.root, &so);
    if (r < 0) {
        fprintf(stderr, "latch serve: %s: %s\n", dir, latch_strerror(r));
        goto fail;
    }
    latch_use(app, NULL, on_miss, listing_on ? &cfg : NULL);
    snprintf(what, sizeof(what), "serving %s, ", cfg.root);
    if (cli_opts_listen(&o, app, "latch serve", what) != 0)
        goto fail;
    r = latch_run(app);
    latch_app_free(app);
    return r < 0 ? 1 : 0;

fail:
    latch_app_free(app);
    return 1;

usage:
    fputc('\n', stderr);
    print_usage(stderr);
    return 2;
}
