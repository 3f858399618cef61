/*
 * static.c - latch_static: a directory served as Express's serve-static
 * serves it (index file, /dir -> /dir/, dotfiles, fallthrough,
 * precompressed siblings), with nginx's care about where a path may lead.
 *
 * The request path is cleaned by filemeta.c before anything touches the
 * disk (no "..", no encoded separators, no NUL); the file is then opened
 * off the loop under the root resolved once at registration, and the
 * opened descriptor's real path must lie under it, so a symlink cannot
 * lead out either. Sending is file.c's. Not here: directory listings
 * (tools/latch builds its own page on top of this).
 */
#include "file.h"
#include "filemeta.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

typedef struct stat_cfg {
    char *prefix; /* "" for every path */
    size_t prefix_len;
    char *root;  /* resolved */
    char *index; /* NULL: none */
    latch_static_opts opts;
} stat_cfg;

/* What the open job found. */
enum { F_FILE, F_MISS, F_REDIRECT, F_ERROR };

typedef struct stat_job {
    uv_work_t work;
    latch_res *res; /* latch's pointer, referenced */
    latch_req *req; /* the handler's handle, for latch_next / latch_fail */
    const stat_cfg *cfg;
    bool slash;  /* the request path ended with '/' */
    bool br, gz; /* encodings the client accepts */
    /* out */
    int outcome, err, fd;
    struct stat st;
    const char *encoding;
    char rel[PATH_MAX];
    char path[PATH_MAX]; /* the file opened */
} stat_job;

/* Opens path if it is a regular file under root: the fd, or a negative
 * code (UV_EISDIR for a directory). */
static int open_in(const stat_cfg *cfg, const char *path, struct stat *st)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC), r;

    if (fd < 0)
        return -errno;
    if (fstat(fd, st) < 0) {
        r = -errno;
        close(fd);
        return r;
    }
    if (S_ISDIR(st->st_mode))
        r = UV_EISDIR;
    else if (!S_ISREG(st->st_mode))
        r = UV_ENOENT; /* a FIFO or a device is not a file to serve */
    else
        r = latch__fd_within(fd, cfg->root);
    if (r < 0) {
        close(fd);
        return r;
    }
    return fd;
}

/* A precompressed sibling (path.ext), when it is a file under root. */
static bool take_sibling(stat_job *j, const char *ext, const char *encoding)
{
    char p[PATH_MAX + 8];
    struct stat st;
    int fd;

    if ((size_t)snprintf(p, sizeof(p), "%s.%s", j->path, ext) >= sizeof(p) ||
        (fd = open_in(j->cfg, p, &st)) < 0)
        return false;
    close(j->fd);
    j->fd = fd;
    j->st = st;
    j->encoding = encoding;
    return true;
}

static int miss_or_error(int err)
{
    return err == UV_ENOENT || err == UV_ENOTDIR || err == UV_EISDIR ||
                   err == UV_ENAMETOOLONG || err == UV_ELOOP
               ? F_MISS
               : F_ERROR;
}

/* The thread pool: find the file the cleaned path names. */
static void stat_work(uv_work_t *w)
{
    stat_job *j = LATCH_CONTAINER_OF(w, stat_job, work);
    const stat_cfg *cfg = j->cfg;
    size_t n;
    int fd;

    j->fd = -1;
    n = (size_t)snprintf(j->path, sizeof(j->path), "%s%s%s", cfg->root,
                         j->rel[0] != '\0' ? "/" : "", j->rel);
    if (n >= sizeof(j->path) - 16) {
        j->outcome = F_MISS;
        return;
    }
    fd = open_in(cfg, j->path, &j->st);
    if (fd == UV_EISDIR) {
        if (!j->slash) {
            j->outcome = cfg->opts.no_redirect_dirs ? F_MISS : F_REDIRECT;
            return;
        }
        if (cfg->index == NULL ||
            (size_t)snprintf(j->path + n, sizeof(j->path) - n, "/%s",
                             cfg->index) >= sizeof(j->path) - n - 8) {
            j->outcome = F_MISS;
            return;
        }
        fd = open_in(cfg, j->path, &j->st);
    } else if (fd >= 0 && j->slash) {
        /* "file.txt/" names a directory that is not there */
        close(fd);
        j->outcome = F_MISS;
        return;
    }
    if (fd < 0) {
        j->err = fd;
        j->outcome = miss_or_error(fd);
        return;
    }
    j->fd = fd;
    j->encoding = NULL;
    if (!(j->br && take_sibling(j, "br", "br")) && j->gz)
        take_sibling(j, "gz", "gzip");
    j->outcome = F_FILE;
}

/* The Location of /dir -> /dir/: the path as sent plus '/', its query
 * kept, and leading slashes collapsed so that "//evil.example/" can never
 * become a protocol-relative URL (serve-static's CVE-2015-1164). */
static void redirect_dir(latch_res *res, const char *url)
{
    const char *q = strchr(url, '?');
    size_t n = q != NULL ? (size_t)(q - url) : strlen(url);
    char loc[4096];

    while (n > 1 && url[0] == '/' && url[1] == '/') {
        url++;
        n--;
    }
    if (n + 2 + (q != NULL ? strlen(q) : 0) >= sizeof(loc)) {
        latch_res_send_status(res, 414);
        return;
    }
    snprintf(loc, sizeof(loc), "%.*s/%s", (int)n, url, q != NULL ? q : "");
    latch_res_redirect(res, 301, loc);
}

static void stat_done(uv_work_t *w, int status)
{
    stat_job *j = LATCH_CONTAINER_OF(w, stat_job, work);
    latch_res *res = j->res;
    latch_res *h = latch_req_res(j->req);
    const stat_cfg *cfg = j->cfg;
    latch_file_opts fo;

    if (status < 0 && j->outcome == F_FILE) {
        j->outcome = F_ERROR;
        j->err = status;
    }
    if (res->detached || res->state != LATCH_RS_FRESH) {
        /* The client left or the request timed out meanwhile. */
        if (j->fd >= 0)
            close(j->fd);
    } else if (j->outcome == F_FILE) {
        memset(&fo, 0, sizeof(fo));
        fo.max_age_ms = cfg->opts.max_age_ms;
        if (cfg->opts.precompressed)
            latch_res_append_header(h, "Vary", "Accept-Encoding");
        /* j->path is the file's own name, also for a sibling: its type */
        latch__file_send(res, j->fd, &j->st, j->path, j->encoding, &fo, NULL,
                         NULL, "latch_static", latch__no_site);
    } else if (j->outcome == F_REDIRECT) {
        redirect_dir(h, latch_req_url(j->req));
    } else if (j->outcome == F_MISS && !cfg->opts.no_fallthrough) {
        latch_next(j->req);
    } else {
        latch_fail(j->req,
                   j->outcome == F_MISS                        ? 404
                   : j->err == UV_EACCES || j->err == UV_EPERM ? 403
                                                               : 500,
                   NULL);
    }
    latch__res_unref(res);
    free(j);
}

/* Whether Accept-Encoding accepts `coding` (a q-value above 0). */
static bool accepts(const char *ae, const char *coding)
{
    return ae != NULL && latch__http_accept_q(ae, coding) > 0 &&
           strcasestr(ae, coding) != NULL;
}

static int static_handler(latch_req *req, latch_res *res, void *data)
{
    const stat_cfg *cfg = data;
    const char *url = latch_req_url(req), *method = latch_req_method(req);
    const char *q, *ae;
    latch_res *r;
    stat_job *j;
    unsigned flags;
    size_t n;
    int rc;

    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
        if (!cfg->opts.no_fallthrough)
            return LATCH_NEXT;
        latch_res_set_header(res, "Allow", "GET, HEAD");
        latch_res_send_status(res, 405);
        return LATCH_DONE;
    }
    q = strchr(url, '?');
    n = q != NULL ? (size_t)(q - url) : strlen(url);
    /* The mount prefix as sent; a prefix that came percent-encoded is not
     * this mount's (the chain goes on). */
    if (n < cfg->prefix_len || strncmp(url, cfg->prefix, cfg->prefix_len) != 0)
        return LATCH_NEXT;
    url += cfg->prefix_len;
    n -= cfg->prefix_len;
    if ((j = calloc(1, sizeof(*j))) == NULL)
        return latch_fail(req, 500, NULL);
    rc = latch__path_clean(url, n, j->rel, sizeof(j->rel), &flags);
    if (rc < 0) {
        free(j);
        if (rc == UV_ENAMETOOLONG)
            return cfg->opts.no_fallthrough ? latch_fail(req, 404, NULL)
                                            : LATCH_NEXT;
        return latch_fail(req, rc == UV_EACCES ? 403 : 400, NULL);
    }
    if ((flags & LATCH_PATH_DOT) &&
        cfg->opts.dotfiles != LATCH_DOTFILES_ALLOW) {
        free(j);
        if (cfg->opts.dotfiles == LATCH_DOTFILES_DENY)
            return latch_fail(req, 403, NULL);
        return cfg->opts.no_fallthrough ? latch_fail(req, 404, NULL)
                                        : LATCH_NEXT;
    }
    j->slash = (flags & LATCH_PATH_DIR) != 0;
    j->cfg = cfg;
    j->req = req;
    if (cfg->opts.precompressed) {
        ae = latch_req_header(req, "Accept-Encoding");
        j->br = accepts(ae, "br");
        j->gz = accepts(ae, "gzip");
    }
    r = latch__res_in(res, "latch_static", &latch__no_site);
    if (r == NULL) {
        free(j);
        return LATCH_DONE;
    }
    j->res = r;
    latch__res_ref(r);
    rc = uv_queue_work(&r->w->loop, &j->work, stat_work, stat_done);
    if (rc < 0) {
        latch__res_unref(r);
        free(j);
        return latch_fail(req, 500, NULL);
    }
    return LATCH_PENDING;
}

static void cfg_free(stat_cfg *c)
{
    if (c == NULL)
        return;
    free(c->prefix);
    free(c->root);
    free(c->index);
    free(c);
}

static void cfg_free_v(void *p)
{
    cfg_free(p);
}

int latch_static(latch_app *app, const char *prefix, const char *root,
                 const latch_static_opts *opts)
{
    stat_cfg *c;
    struct stat st;
    int r;

    if (app == NULL || root == NULL ||
        (opts != NULL && (opts->dotfiles < LATCH_DOTFILES_IGNORE ||
                          opts->dotfiles > LATCH_DOTFILES_ALLOW)))
        return LATCH_ERR_INVALID_ARG;
    if (app->running)
        return LATCH_ERR_STATE;
    if ((c = calloc(1, sizeof(*c))) == NULL)
        return LATCH_ERR_NOMEM;
    if (opts != NULL)
        c->opts = *opts;
    if (prefix == NULL || strcmp(prefix, "/") == 0)
        prefix = "";
    c->prefix = strdup(prefix);
    {
        const char *idx = c->opts.index != NULL ? c->opts.index : "index.html";
        c->opts.index = NULL;
        if (c->prefix == NULL ||
            (idx[0] != '\0' && (c->index = strdup(idx)) == NULL)) {
            cfg_free(c);
            return LATCH_ERR_NOMEM;
        }
    }
    /* A prefix "/static/" mounts as "/static". */
    c->prefix_len = strlen(c->prefix);
    while (c->prefix_len > 0 && c->prefix[c->prefix_len - 1] == '/')
        c->prefix[--c->prefix_len] = '\0';
    /* The root, resolved once: every opened file is checked against it. */
    c->root = realpath(root, NULL);
    if (c->root == NULL || stat(c->root, &st) < 0 || !S_ISDIR(st.st_mode)) {
        cfg_free(c);
        return LATCH_ERR_INVALID_ARG;
    }
    /* The app frees it with its layers (also when latch_use fails). */
    if ((r = latch__app_keep(app, c, cfg_free_v)) < 0)
        return r;
    return latch_use_at(app, c->prefix[0] != '\0' ? c->prefix : NULL,
                        static_handler, c, "latch_static", latch__no_site);
}
