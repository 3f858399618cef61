/*
 * static.c - latch_static: a directory served as Express's serve-static
 * serves it (index file, /dir -> /dir/, dotfiles, fallthrough,
 * precompressed siblings), with nginx's care about where a path may lead.
 *
 * The request path is cleaned by filemeta.c before anything touches the
 * disk (no "..", no encoded separators, no NUL). The file is then opened
 * relative to a descriptor of the root (taken at registration, and taken
 * again when another directory replaces it at its path: checked once a
 * second), with openat2(2)'s RESOLVE_BENEATH: the kernel refuses every
 * lookup that would leave the root, so a symlink cannot lead out. Most
 * requests find every name in the kernel's dentry cache: RESOLVE_CACHED
 * then opens on the loop without blocking, as nginx does (no thread-pool
 * hop); a lookup that would have to read the disk answers EAGAIN, and the
 * same open runs on the thread pool. (An open that blocks inside the file
 * system, FUSE or NFS, still blocks the loop, as it does nginx's.)
 *
 * The older way stays for what openat2 refuses or cannot do: on the
 * thread pool, open by path, and the opened descriptor's real path must
 * lie under the root (file.c reads /proc/self/fd). It decides the lookups
 * RESOLVE_BENEATH refuses (EXDEV: a symlink leading out, or any absolute
 * one; ELOOP: a magic link, or a loop), so that an absolute symlink
 * within the root is served as it always was and one leading out is 403,
 * and every open on a kernel without openat2 (before 5.6; RESOLVE_CACHED
 * came with 5.12).
 *
 * Sending is file.c's. Not here: directory listings (tools/latch builds
 * its own page on top of this), and no cache of descriptors or stats.
 */
#include "file.h"
#include "filemeta.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/syscall.h>
#include <unistd.h>

/* Every file is opened so: a FIFO cannot block the open (it is refused
 * after the fstat), a terminal never becomes the controlling one. */
#define OPEN_FLAGS (O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC)

/* A directory descriptor that was the root once (kept open: another
 * worker may still be resolving beneath it). */
typedef struct old_fd {
    struct old_fd *next;
    int fd;
} old_fd;

typedef struct stat_cfg {
    char *prefix; /* "" for every path */
    size_t prefix_len;
    char *root; /* resolved */
    /* O_PATH of the directory at root: what openat2 resolves beneath.
     * Checked at most once a second against the path (ROOT_CHECK_MS), so
     * a root replaced by another directory (a deploy that swaps
     * directories) is followed, as an open by path follows it. */
    atomic_int root_fd;
    _Atomic uint64_t root_checked; /* the worker clock (ms) of the check */
    pthread_mutex_t old_mu;
    old_fd *old; /* the descriptors root_fd had, closed with the app */
    char *index; /* NULL: none */
    latch_static_opts opts;
} stat_cfg;

#define ROOT_CHECK_MS 1000

/* What finding the file gave. F_AGAIN (on the loop only): a lookup would
 * have blocked, or the loop cannot open here: ask the thread pool. */
enum { F_FILE, F_MISS, F_REDIRECT, F_ERROR, F_AGAIN };

typedef struct stat_job {
    uv_work_t work;
    latch_res *res; /* latch's pointer, referenced */
    latch_req *req; /* the handler's handle, for latch_next / latch_fail */
    const stat_cfg *cfg;
    int root_fd; /* cfg's when the request came */
    bool slash;  /* the request path ended with '/' */
    bool br, gz; /* encodings the client accepts */
    /* out */
    int outcome, err, fd;
    struct stat st;
    const char *encoding;
    char rel[PATH_MAX];  /* the cleaned request path, relative to root */
    char path[PATH_MAX]; /* the file opened, relative to root */
} stat_job;

/* What this kernel's openat2 can do, learnt from its first refusal and
 * kept for the process: O2_ALL; O2_NO_CACHED (RESOLVE_CACHED unknown:
 * every open on the thread pool); O2_NONE (no openat2: the checked open
 * by path). Tests set it to run the older kernels' paths. */
enum { O2_ALL = 0, O2_NO_CACHED = 1, O2_NONE = 2 };
atomic_int latch__static_openat2;

/* Tests only: when set, called before each openat2 with the path and
 * whether it is the loop's cached try; a nonzero return is taken as the
 * syscall's errno (EAGAIN: "not in the dentry cache"), without the call. */
int (*latch__static_open_hook)(const char *rel, bool cached);

/* openat2 of rel beneath the root: the descriptor, or a negative code.
 * UV_EAGAIN (cached only): a lookup would block, or the loop cannot
 * decide: the thread pool's turn. UV_ENOSYS (off the loop only): open by
 * path and check where it lies (no openat2 here, or it refused a symlink
 * that leaves the root, is absolute, is magic, or loops). */
static int open_beneath(int root_fd, const char *rel, bool cached)
{
    struct open_how how;
    int fd, e, tries = 0;

    if (atomic_load_explicit(&latch__static_openat2, memory_order_relaxed) >
        (cached ? O2_ALL : O2_NO_CACHED))
        return cached ? UV_EAGAIN : UV_ENOSYS;
    memset(&how, 0, sizeof(how));
    how.flags = OPEN_FLAGS;
    how.resolve =
        RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS | (cached ? RESOLVE_CACHED : 0);
    /* Off the loop, EAGAIN is openat2's "a rename raced the lookup", to
     * be retried; on it, "not in the cache": the pool's turn. */
    do {
        e = latch__static_open_hook != NULL
                ? latch__static_open_hook(rel, cached)
                : 0;
        if (e == 0) {
            fd = (int)syscall(SYS_openat2, root_fd, rel[0] != '\0' ? rel : ".",
                              &how, sizeof(how));
            if (fd >= 0)
                return fd;
            e = errno;
        }
    } while ((e == EINTR || (e == EAGAIN && !cached)) && ++tries < 4);
    switch (e) {
    case ENOSYS: /* before 5.6, or a seccomp filter that does not know it */
        atomic_store(&latch__static_openat2, O2_NONE);
        return cached ? UV_EAGAIN : UV_ENOSYS;
    case EINVAL: /* a flag this kernel does not know: RESOLVE_CACHED */
        atomic_store(&latch__static_openat2, cached ? O2_NO_CACHED : O2_NONE);
        return cached ? UV_EAGAIN : UV_ENOSYS;
    case EXDEV:
    case ELOOP: return cached ? UV_EAGAIN : UV_ENOSYS;
    default: return -e;
    }
}

/* Opens rel (relative to root) if it is a regular file under root: the
 * descriptor, or a negative code: UV_EISDIR for a directory, UV_EAGAIN
 * when `cached` and the loop cannot open it without blocking. */
static int open_in(const stat_job *j, const char *rel, bool cached,
                   struct stat *st)
{
    const stat_cfg *cfg = j->cfg;
    char p[PATH_MAX];
    bool by_path = false;
    int fd, r;

    fd = open_beneath(j->root_fd, rel, cached);
    if (fd == UV_ENOSYS) {
        /* By path, and where it lies is checked below. */
        by_path = true;
        if ((size_t)snprintf(p, sizeof(p), "%s/%s", cfg->root, rel) >=
            sizeof(p))
            return UV_ENAMETOOLONG;
        fd = open(p, OPEN_FLAGS);
        if (fd < 0)
            return -errno;
    }
    if (fd < 0)
        return fd;
    if (fstat(fd, st) < 0) {
        r = -errno;
        close(fd);
        return r;
    }
    if (S_ISDIR(st->st_mode))
        r = UV_EISDIR;
    else if (!S_ISREG(st->st_mode))
        r = UV_ENOENT; /* a FIFO or a device is not a file to serve */
    else if (by_path)
        r = latch__fd_within(fd, cfg->root); /* the kernel did not check */
    else
        r = 0;
    if (r < 0) {
        close(fd);
        return r;
    }
    return fd;
}

/* A precompressed sibling (path.ext), when it is a file under root.
 * UV_EAGAIN: the loop cannot tell (cached); 0 or 1: taken or not. */
static int take_sibling(stat_job *j, const char *ext, const char *encoding,
                        bool cached)
{
    char p[PATH_MAX + 8];
    struct stat st;
    int fd;

    if ((size_t)snprintf(p, sizeof(p), "%s.%s", j->path, ext) >= sizeof(p))
        return 0;
    fd = open_in(j, p, cached, &st);
    if (fd == UV_EAGAIN && cached)
        return UV_EAGAIN;
    if (fd < 0)
        return 0;
    close(j->fd);
    j->fd = fd;
    j->st = st;
    j->encoding = encoding;
    return 1;
}

static int miss_or_error(int err)
{
    return err == UV_ENOENT || err == UV_ENOTDIR || err == UV_EISDIR ||
                   err == UV_ENAMETOOLONG || err == UV_ELOOP
               ? F_MISS
               : F_ERROR;
}

/* Finds the file the cleaned path names: sets j->outcome (and j->fd,
 * j->st, j->encoding for F_FILE; j->err for F_ERROR). `cached`: on the
 * loop, where any lookup that would block gives F_AGAIN, nothing open. */
static void find(stat_job *j, bool cached)
{
    const stat_cfg *cfg = j->cfg;
    size_t n;
    int fd, r;

    j->fd = -1;
    j->encoding = NULL;
    n = strlen(j->rel);
    if (n >= sizeof(j->path) - 16) {
        j->outcome = F_MISS;
        return;
    }
    memcpy(j->path, j->rel, n + 1);
    fd = open_in(j, j->path, cached, &j->st);
    if (fd == UV_EISDIR) {
        if (!j->slash) {
            j->outcome = cfg->opts.no_redirect_dirs ? F_MISS : F_REDIRECT;
            return;
        }
        if (cfg->index == NULL ||
            (size_t)snprintf(j->path + n, sizeof(j->path) - n, "%s%s",
                             n > 0 ? "/" : "",
                             cfg->index) >= sizeof(j->path) - n - 8) {
            j->outcome = F_MISS;
            return;
        }
        fd = open_in(j, j->path, cached, &j->st);
    } else if (fd >= 0 && j->slash) {
        /* "file.txt/" names a directory that is not there */
        close(fd);
        j->outcome = F_MISS;
        return;
    }
    if (fd == UV_EAGAIN && cached) {
        j->outcome = F_AGAIN;
        return;
    }
    if (fd < 0) {
        j->err = fd;
        j->outcome = miss_or_error(fd);
        return;
    }
    j->fd = fd;
    r = j->br ? take_sibling(j, "br", "br", cached) : 0;
    if (r == 0 && j->gz)
        r = take_sibling(j, "gz", "gzip", cached);
    if (r == UV_EAGAIN) {
        close(j->fd);
        j->fd = -1;
        j->encoding = NULL;
        j->outcome = F_AGAIN;
        return;
    }
    j->outcome = F_FILE;
}

/* The thread pool: the same search, lookups that may block allowed. */
static void stat_work(uv_work_t *w)
{
    find(LATCH_CONTAINER_OF(w, stat_job, work), false);
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

/* The file found (or not) becomes the answer: a sent file, a redirect,
 * the next handler (LATCH_NEXT) or an error through the error handlers.
 * `h` is the handler's handle of the response, `res` latch's pointer.
 * Returns what the handler returns when it answers at once. */
static int answer(stat_job *j, latch_req *req, latch_res *h, latch_res *res)
{
    const stat_cfg *cfg = j->cfg;
    latch_file_opts fo;

    switch (j->outcome) {
    case F_FILE:
        memset(&fo, 0, sizeof(fo));
        fo.max_age_ms = cfg->opts.max_age_ms;
        if (cfg->opts.precompressed)
            latch_res_append_header(h, "Vary", "Accept-Encoding");
        /* j->path is the file's own name, also for a sibling: its type */
        latch__file_send(res, j->fd, &j->st, j->path, j->encoding, &fo, NULL,
                         NULL, "latch_static", latch__no_site);
        j->fd = -1; /* file.c's now */
        return LATCH_DONE;
    case F_REDIRECT: redirect_dir(h, latch_req_url(req)); return LATCH_DONE;
    case F_MISS:
        if (!cfg->opts.no_fallthrough)
            return LATCH_NEXT;
        return latch_fail(req, 404, NULL);
    default:
        return latch_fail(
            req, j->err == UV_EACCES || j->err == UV_EPERM ? 403 : 500, NULL);
    }
}

static void stat_done(uv_work_t *w, int status)
{
    stat_job *j = LATCH_CONTAINER_OF(w, stat_job, work);
    latch_res *res = j->res;

    if (status < 0 && j->outcome == F_FILE) {
        close(j->fd);
        j->fd = -1;
        j->outcome = F_ERROR;
        j->err = status;
    }
    if (res->detached || res->state != LATCH_RS_FRESH) {
        /* The client left or the request timed out meanwhile. */
        if (j->fd >= 0)
            close(j->fd);
    } else if (answer(j, j->req, latch_req_res(j->req), res) == LATCH_NEXT) {
        latch_next(j->req);
    }
    latch__res_unref(res);
    free(j);
}

/* The root's descriptor for a request at `now` (ms). Once a second (one
 * worker does it), whether the directory at the root's path is still the
 * one held: when another took its place, it is opened and used from then
 * on; the old descriptor stays open until the app is freed (a worker may
 * be resolving beneath it), one per replacement. A path that is missing
 * for the moment (between the two renames of a swap) keeps the old. */
static int root_now(stat_cfg *cfg, uint64_t now)
{
    uint64_t last =
        atomic_load_explicit(&cfg->root_checked, memory_order_relaxed);
    struct stat at_path, held;
    old_fd *o;
    int fd, prev;

    if (now - last < ROOT_CHECK_MS ||
        !atomic_compare_exchange_strong(&cfg->root_checked, &last, now))
        return atomic_load(&cfg->root_fd);
    prev = atomic_load(&cfg->root_fd);
    if (stat(cfg->root, &at_path) < 0 || !S_ISDIR(at_path.st_mode) ||
        fstat(prev, &held) < 0 ||
        (at_path.st_dev == held.st_dev && at_path.st_ino == held.st_ino))
        return prev;
    if ((o = malloc(sizeof(*o))) == NULL)
        return prev;
    fd = open(cfg->root, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        free(o);
        return prev;
    }
    atomic_store(&cfg->root_fd, fd);
    o->fd = prev;
    pthread_mutex_lock(&cfg->old_mu);
    o->next = cfg->old;
    cfg->old = o;
    pthread_mutex_unlock(&cfg->old_mu);
    return fd;
}

/* Whether Accept-Encoding accepts `coding` (a q-value above 0). */
static bool accepts(const char *ae, const char *coding)
{
    return ae != NULL && latch__http_accept_q(ae, coding) > 0 &&
           strcasestr(ae, coding) != NULL;
}

static int static_handler(latch_req *req, latch_res *res, void *data)
{
    stat_cfg *cfg = data;
    const char *url = latch_req_url(req), *method = latch_req_method(req);
    const char *q, *ae;
    latch_res *r;
    stat_job *j, job;
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
    /* On the stack: most requests are answered before this returns. */
    j = &job;
    rc = latch__path_clean(url, n, j->rel, sizeof(j->rel), &flags);
    if (rc < 0) {
        if (rc == UV_ENAMETOOLONG)
            return cfg->opts.no_fallthrough ? latch_fail(req, 404, NULL)
                                            : LATCH_NEXT;
        return latch_fail(req, rc == UV_EACCES ? 403 : 400, NULL);
    }
    if ((flags & LATCH_PATH_DOT) &&
        cfg->opts.dotfiles != LATCH_DOTFILES_ALLOW) {
        if (cfg->opts.dotfiles == LATCH_DOTFILES_DENY)
            return latch_fail(req, 403, NULL);
        return cfg->opts.no_fallthrough ? latch_fail(req, 404, NULL)
                                        : LATCH_NEXT;
    }
    j->slash = (flags & LATCH_PATH_DIR) != 0;
    j->cfg = cfg;
    j->req = req;
    j->br = j->gz = false;
    j->err = 0;
    if (cfg->opts.precompressed) {
        ae = latch_req_header(req, "Accept-Encoding");
        j->br = accepts(ae, "br");
        j->gz = accepts(ae, "gzip");
    }
    r = latch__res_in(res, "latch_static", &latch__no_site);
    if (r == NULL)
        return LATCH_DONE;
    j->root_fd = root_now(cfg, uv_now(&r->w->loop));
    /* On the loop when every name is in the dentry cache (no blocking),
     * else the same search on the thread pool. */
    find(j, true);
    if (j->outcome != F_AGAIN)
        return answer(j, req, res, r);
    if ((j = malloc(sizeof(*j))) == NULL)
        return latch_fail(req, 500, NULL);
    memcpy(j, &job, sizeof(*j));
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
    if (atomic_load(&c->root_fd) >= 0)
        close(atomic_load(&c->root_fd));
    for (old_fd *o = c->old, *next; o != NULL; o = next) {
        next = o->next;
        close(o->fd);
        free(o);
    }
    pthread_mutex_destroy(&c->old_mu);
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
    atomic_init(&c->root_fd, -1);
    pthread_mutex_init(&c->old_mu, NULL);
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
    /* What openat2 resolves beneath: checked against the path once a
     * second (root_now), closed when the app is freed (cfg_free). */
    atomic_store(&c->root_fd, open(c->root, O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (atomic_load(&c->root_fd) < 0) {
        r = -errno;
        cfg_free(c);
        return r == UV_EMFILE || r == UV_ENFILE ? r : LATCH_ERR_INVALID_ARG;
    }
    /* The app frees it with its layers (also when latch_use fails). */
    if ((r = latch__app_keep(app, c, cfg_free_v)) < 0)
        return r;
    return latch_use_at(app, c->prefix[0] != '\0' ? c->prefix : NULL,
                        static_handler, c, "latch_static", latch__no_site);
}
