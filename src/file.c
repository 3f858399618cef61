/*
 * file.c - files on a response (latch_res_sendfile, and the sending half
 * of latch_static): open and stat off the loop, the headers, preconditions
 * and ranges of filemeta.c, and the bytes through a pipe (stream.c): with
 * sendfile(2) from the file to the socket when the connection can take
 * them so (conn.c's op; no copy, no buffer), else read with uv_fs_read
 * chunk by chunk (a response queued behind another, until it is at the
 * head; later a TLS connection). Either way a slow client holds the
 * file's sending, never its bytes in memory. sendfile reads the page
 * cache on the loop, as nginx does without aio: a cold file on a slow
 * disk can stall the worker for the read.
 *
 * What it is not: a path policy (static.c cleans request paths; here a
 * root only bounds where the opened file may lie) and not a cache. The
 * bytes sent are those of the open descriptor: a file that shrinks ends
 * the response truncated (destroyed), one that grows sends the length
 * announced.
 */
#include "file.h"
#include "filemeta.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CHUNK ((size_t)128 * 1024)

typedef struct fsend {
    latch_res *res;    /* latch's pointer; one latch reference while alive */
    int refs;          /* the pipe (until done) and each fs request in flight */
    int fd;            /* -1 until open */
    uint64_t off, end; /* bytes [off, end) remain to be sent */
    bool ready;        /* headers sent, bytes to pump */
    bool reading;      /* a uv_fs_read is in flight */
    bool sending;      /* a sendfile body is in flight (conn.c) */
    bool no_sf;        /* this send copies: sendfile could not start */
    bool over;         /* the pipe's done ran: nothing more */
    latch_done_cb done;
    void *data;
    const char *call;
    latch_site at;
    latch_file_opts opts;
    char *ctype; /* a copy of opts.content_type */
    char *path;  /* latch_res_sendfile: what to open */
    char *root;  /* and the root it must lie under */
    int open_err;
    struct stat st;
    uv_work_t work;
    uv_fs_t rreq;
    char *buf;
} fsend;

static void fs_put(fsend *f)
{
    if (--f->refs > 0)
        return;
    if (f->fd >= 0)
        close(f->fd);
    free(f->buf);
    free(f->ctype);
    free(f->path);
    free(f->root);
    latch__res_unref(f->res);
    free(f);
}

/* ------------------------------------------------------------------ */
/* Headers                                                              */
/* ------------------------------------------------------------------ */

/* Content-Disposition: attachment with the file's base name; a name with
 * bytes outside printable ASCII also gets RFC 8187's filename*. */
static void disposition(latch_res *res, const char *name, latch_site at)
{
    const char *base = strrchr(name, '/');
    char v[1024], *p = v, *e = v + sizeof(v) - 8;
    bool ext = false;
    const unsigned char *s;

    base = base != NULL ? base + 1 : name;
    p += snprintf(p, (size_t)(e - p), "attachment; filename=\"");
    for (s = (const unsigned char *)base; *s != '\0' && p < e - 2; s++) {
        if (*s < 0x20 || *s >= 0x7f) {
            *p++ = '?';
            ext = true;
        } else {
            if (*s == '"' || *s == '\\')
                *p++ = '\\';
            *p++ = (char)*s;
        }
    }
    *p++ = '"';
    if (ext && p + 20 < e) {
        static const char hex[] = "0123456789ABCDEF";
        p += snprintf(p, (size_t)(e - p), "; filename*=UTF-8''");
        for (s = (const unsigned char *)base; *s != '\0' && p + 3 < e; s++) {
            if ((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
                (*s >= '0' && *s <= '9') || strchr("!#$&+-.^_`|~", *s)) {
                *p++ = (char)*s;
            } else {
                *p++ = '%';
                *p++ = hex[*s >> 4];
                *p++ = hex[*s & 15];
            }
        }
    }
    *p = '\0';
    latch_res_set_header_at(res, "Content-Disposition", v, at);
}

static void set_num(latch_res *res, const char *name, uint64_t v, latch_site at)
{
    char num[24];

    *latch__put_u64(num, v) = '\0';
    latch_res_set_header_at(res, name, num, at);
}

static int64_t mtime_of(const struct stat *st)
{
    return (int64_t)st->st_mtim.tv_sec;
}

static void pump(fsend *f);

/* The file's own body calls: the only ones its response lets through
 * while the file holds it (res->sole, internal.h), sealed in later
 * reports as the file's call (latch_res_sendfile, latch_static). */
static int own_end(fsend *f, const void *data, size_t len)
{
    return latch__pipe_own_end(f->res, data, len, f->call, f->at);
}

static int own_write(fsend *f, const void *data, size_t len)
{
    return latch__pipe_own_write(f->res, data, len, f->call, f->at);
}

/*
 * The file is open: decide the status, set the headers, and either end
 * (HEAD, 304, 412, 416, an empty body) or start pumping bytes.
 */
static void start(fsend *f, const char *name, const char *encoding)
{
    latch_res *res = f->res;
    latch_req *q = &res->req;
    const latch_file_opts *o = &f->opts;
    uint64_t size = (uint64_t)f->st.st_size, first = 0, last = 0;
    char etag[64] = "", lm[40] = "", cr[80];
    const char *ct;
    latch_cond c;
    int kind = LATCH_RANGE_NONE, st;

    if (!o->no_etag)
        latch__etag_format(etag, sizeof(etag), (uint64_t)f->st.st_ino, size,
                           (int64_t)f->st.st_mtim.tv_sec,
                           f->st.st_mtim.tv_nsec);
    if (!o->no_last_modified)
        latch__http_date(lm, sizeof(lm), mtime_of(&f->st));
    if (latch_res_get_header(res, "Cache-Control") == NULL) {
        char cc[48] = "public, max-age=";
        *latch__put_u64(cc + 16, o->max_age_ms / 1000) = '\0';
        latch_res_set_header_at(res, "Cache-Control", cc, f->at);
    }
    if (etag[0] != '\0')
        latch_res_set_header_at(res, "ETag", etag, f->at);
    if (lm[0] != '\0')
        latch_res_set_header_at(res, "Last-Modified", lm, f->at);

    memset(&c, 0, sizeof(c));
    c.if_match = latch_req_header(q, "If-Match");
    c.if_none_match = latch_req_header(q, "If-None-Match");
    c.if_modified_since =
        o->no_last_modified ? NULL : latch_req_header(q, "If-Modified-Since");
    c.if_unmodified_since =
        o->no_last_modified ? NULL : latch_req_header(q, "If-Unmodified-Since");
    c.get_or_head = strcmp(q->method, "GET") == 0 || q->is_head;
    st =
        latch__cond_eval(&c, etag[0] != '\0' ? etag : "\"\"", mtime_of(&f->st));
    if (st == 304) {
        /* RFC 9110 15.4.5: the validators and Cache-Control, no body, no
         * type or length. */
        latch_res_status_at(res, 304, f->at);
        own_end(f, NULL, 0);
        return;
    }
    if (st == 412) {
        latch__res_status_page(res, 412, f->call);
        return;
    }
    if (!o->no_ranges) {
        latch_res_set_header_at(res, "Accept-Ranges", "bytes", f->at);
        if (c.get_or_head && latch__if_range_ok(latch_req_header(q, "If-Range"),
                                                etag, mtime_of(&f->st)))
            kind = latch__range_parse(latch_req_header(q, "Range"), size,
                                      &first, &last);
    }
    if (kind == LATCH_RANGE_UNSAT) {
        /* RFC 9110 15.5.17: the current length, and no other header of
         * the file's (as send's 416 page). */
        static const char body[] = "Range Not Satisfiable\n";
        latch_res_clear_headers_at(res, f->at);
        snprintf(cr, sizeof(cr), "bytes */%llu", (unsigned long long)size);
        latch_res_set_header_at(res, "Content-Range", cr, f->at);
        latch__res_simple(res, 416, "text/plain; charset=utf-8", body,
                          sizeof(body) - 1, f->call);
        return;
    }
    ct = f->ctype;
    if (ct == NULL && latch_res_get_header(res, "Content-Type") == NULL) {
        ct = latch__mime_by_ext(name);
        if (ct == NULL)
            ct = "application/octet-stream";
    }
    if (ct != NULL)
        latch_res_set_header_at(res, "Content-Type", ct, f->at);
    if (encoding != NULL)
        latch_res_set_header_at(res, "Content-Encoding", encoding, f->at);
    if (o->attachment)
        disposition(res, name, f->at);
    if (kind == LATCH_RANGE_ONE) {
        snprintf(cr, sizeof(cr), "bytes %llu-%llu/%llu",
                 (unsigned long long)first, (unsigned long long)last,
                 (unsigned long long)size);
        latch_res_set_header_at(res, "Content-Range", cr, f->at);
        latch_res_status_at(res, 206, f->at);
        f->off = first;
        f->end = last + 1;
    } else {
        f->off = 0;
        f->end = size;
    }
    set_num(res, "Content-Length", f->end - f->off, f->at);
    if (q->is_head || f->off == f->end) {
        own_end(f, NULL, 0);
        return;
    }
    /* The head goes out with the first bytes: when they are copied, a
     * read that fails at once still gets a 500 from the error handlers;
     * with sendfile a read error after the head truncates (destroys). */
    f->ready = true;
    pump(f);
}

/* ------------------------------------------------------------------ */
/* Bytes                                                                */
/* ------------------------------------------------------------------ */

static void on_read(uv_fs_t *req)
{
    fsend *f = req->data;
    latch_res *res = f->res;
    ssize_t n = req->result;
    int r;

    uv_fs_req_cleanup(req);
    f->reading = false;
    if (f->over) {
        fs_put(f);
        return;
    }
    if (n < 0) {
        latch_res_pipe_fail_at(res, (int)n, f->at);
    } else if (n == 0) {
        /* The file shrank under us: never pad, never pretend. */
        latch_res_pipe_fail_at(res, LATCH_ERR_HTTP_CONTENT_LENGTH_MISMATCH,
                               f->at);
    } else {
        f->off += (uint64_t)n;
        if (f->off >= f->end) {
            own_end(f, f->buf, (size_t)n);
        } else {
            r = own_write(f, f->buf, (size_t)n);
            if (r == 1)
                pump(f); /* below the mark: read on now */
            /* 0: the pipe's pull resumes; < 0: the end op follows */
        }
    }
    fs_put(f);
}

/* The connection's sendfile op is over: the whole rest went (end), the
 * file shrank (truncated: destroyed), or it failed or was cancelled. */
static void on_sent(latch_res *res, int status, void *data)
{
    fsend *f = data;

    (void)res;
    f->sending = false;
    if (!f->over && status != UV_ECANCELED) {
        if (status == 0) {
            f->off = f->end;
            own_end(f, NULL, 0);
        } else {
            latch_res_pipe_fail_at(f->res,
                                   status == UV_EOF
                                       ? LATCH_ERR_HTTP_CONTENT_LENGTH_MISMATCH
                                       : status,
                                   f->at);
        }
    }
    fs_put(f);
}

/* Sends the rest with sendfile(2) when the connection can take it now
 * (a plain socket, this response at the head of the queue). True when it
 * took over; false: copy this chunk (queued behind another response, or
 * sendfile cannot be used on this response). */
static bool try_sendfile(fsend *f)
{
    latch_res *res = f->res;
    int r;

    if (f->no_sf)
        return false;
    r = latch__res_sendfile(res, f->fd, f->off, f->end - f->off, on_sent, f,
                            f->call, f->at);
    if (r == 0) {
        f->sending = true;
        f->refs++;
        return true;
    }
    if (r < 0 && res->state == LATCH_RS_FRESH) {
        latch_res_pipe_fail_at(res, r, f->at); /* the head failed */
        return true;
    }
    if (r < 0)
        f->no_sf = true; /* no memory for it: copy from now */
    return false;
}

/* Sends the next part: the rest with sendfile, else reads a chunk, unless
 * one is in flight or nothing is left. */
static void pump(fsend *f)
{
    uint64_t left = f->end - f->off;
    uv_buf_t b;
    int r;

    if (f->over || !f->ready || f->reading || f->sending || left == 0)
        return;
    if (try_sendfile(f))
        return;
    if (f->buf == NULL && (f->buf = malloc(CHUNK)) == NULL) {
        latch_res_pipe_fail_at(f->res, LATCH_ERR_NOMEM, f->at);
        return;
    }
    b = uv_buf_init(f->buf, (unsigned)(left < CHUNK ? left : CHUNK));
    f->rreq.data = f;
    r = uv_fs_read(&f->res->w->loop, &f->rreq, f->fd, &b, 1, (int64_t)f->off,
                   on_read);
    if (r < 0) {
        latch_res_pipe_fail_at(f->res, r, f->at);
        return;
    }
    f->reading = true;
    f->refs++;
}

static void file_pull(latch_res *res, void *data)
{
    (void)res;
    pump(data);
}

static void file_done(latch_res *res, int status, void *data)
{
    fsend *f = data;

    f->over = true;
    if (f->done != NULL)
        f->done(res, status, f->data);
    fs_put(f);
}

/* ------------------------------------------------------------------ */
/* Open                                                                 */
/* ------------------------------------------------------------------ */

int latch__fd_within(int fd, const char *root)
{
    char link[64], real[PATH_MAX];
    ssize_t n;

    snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
    n = readlink(link, real, sizeof(real) - 1);
    if (n < 0)
        return -errno;
    real[n] = '\0';
    return latch__path_within(root, real) ? 0 : UV_EACCES;
}

/* The thread pool: resolve the root, open, stat, check where it lies. */
static void open_work(uv_work_t *w)
{
    fsend *f = LATCH_CONTAINER_OF(w, fsend, work);
    char *real = NULL;
    int fd;

    if (f->root != NULL) {
        if ((real = realpath(f->root, NULL)) == NULL) {
            f->open_err = -errno;
            return;
        }
        free(f->root);
        f->root = real;
    }
    /* O_NONBLOCK: a FIFO must not hold this thread until a writer comes
     * (it is refused below); O_NOCTTY: a terminal never becomes ours. */
    fd = open(f->path, O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
    if (fd < 0) {
        f->open_err = -errno;
        return;
    }
    if (fstat(fd, &f->st) < 0) {
        f->open_err = -errno;
        close(fd);
        return;
    }
    if (S_ISDIR(f->st.st_mode))
        f->open_err = UV_EISDIR;
    else if (!S_ISREG(f->st.st_mode))
        f->open_err = UV_ENOENT; /* a FIFO or a device is not a file */
    else if (f->root != NULL)
        f->open_err = latch__fd_within(fd, f->root);
    if (f->open_err < 0) {
        close(fd);
        return;
    }
    f->fd = fd;
}

static void open_done(uv_work_t *w, int status)
{
    fsend *f = LATCH_CONTAINER_OF(w, fsend, work);

    if (status < 0 && f->open_err == 0)
        f->open_err = status;
    if (!f->over) {
        if (f->open_err < 0)
            latch_res_pipe_fail_at(f->res, f->open_err, f->at);
        else if (f->res->state == LATCH_RS_FRESH)
            start(f, f->path, NULL);
        else /* someone answered meanwhile: that answer stands */
            latch_res_pipe_fail_at(f->res, LATCH_ERR_HTTP_HEADERS_SENT, f->at);
    }
    fs_put(f);
}

/* A new send state and its pipe. NULL (and *err) on failure. */
static fsend *fsend_new(latch_res *res, const latch_file_opts *opts,
                        latch_done_cb done, void *data, const char *call,
                        latch_site at, int *err)
{
    fsend *f = calloc(1, sizeof(*f));

    *err = LATCH_ERR_NOMEM;
    if (f == NULL)
        return NULL;
    f->fd = -1;
    f->res = res;
    f->done = done;
    f->data = data;
    f->call = call;
    f->at = at;
    if (opts != NULL) {
        f->opts = *opts;
        f->opts.root = NULL;
        f->opts.content_type = NULL;
        if (opts->content_type != NULL &&
            (f->ctype = strdup(opts->content_type)) == NULL) {
            free(f);
            return NULL;
        }
    }
    latch__res_ref(res);
    f->refs = 1; /* the pipe's, until file_done */
    *err = latch__res_pipe_named(res, file_pull, file_done, f, call, at);
    if (*err < 0) {
        f->done = NULL;
        f->refs = 0;
        free(f->ctype);
        latch__res_unref(res);
        free(f);
        return NULL;
    }
    latch__pipe_make_sole(res);
    return f;
}

/* Refuses a sendfile on a response that sent anything (reported). */
static int check_fresh(latch_res *res, const char *call, latch_site at)
{
    if (res->state == LATCH_RS_FRESH)
        return 0;
    if (res->state == LATCH_RS_DESTROYED || res->detached) {
        latch__violation(res, LATCH_ERR_STREAM_DESTROYED, call, NULL, at);
        return LATCH_ERR_STREAM_DESTROYED;
    }
    latch__violation(res, LATCH_ERR_HTTP_HEADERS_SENT, call, NULL, at);
    return LATCH_ERR_HTTP_HEADERS_SENT;
}

int latch__file_send(latch_res *res, int fd, const struct stat *st,
                     const char *name, const char *encoding,
                     const latch_file_opts *opts, latch_done_cb done,
                     void *data, const char *call, latch_site at)
{
    fsend *f;
    int r;

    if ((r = check_fresh(res, call, at)) < 0 ||
        (f = fsend_new(res, opts, done, data, call, at, &r)) == NULL) {
        close(fd);
        return r;
    }
    f->fd = fd;
    f->st = *st;
    f->refs++;
    start(f, name, encoding);
    fs_put(f);
    return 0;
}

/* Whether a relative path under a root has a ".." segment. */
static bool has_dotdot(const char *p)
{
    while (*p != '\0') {
        const char *s = p;
        while (*p != '\0' && *p != '/')
            p++;
        if (p - s == 2 && s[0] == '.' && s[1] == '.')
            return true;
        while (*p == '/')
            p++;
    }
    return false;
}

int latch_res_sendfile_at(latch_res *res, const char *path,
                          const latch_file_opts *opts, latch_done_cb done,
                          void *data, latch_site at)
{
    if (res != NULL &&
        (res = latch__res_in(res, "latch_res_sendfile", &at)) == NULL)
        return LATCH_ERR_STREAM_DESTROYED;
    const char *root = opts != NULL ? opts->root : NULL;
    fsend *f;
    size_t n;
    int r;

    if (res == NULL)
        return LATCH_ERR_INVALID_ARG;
    if (!pthread_equal(pthread_self(), res->w->thread)) {
        latch__violation(res, LATCH_ERR_WRONG_THREAD, "latch_res_sendfile",
                         NULL, at);
        return LATCH_ERR_WRONG_THREAD;
    }
    if (path == NULL || *path == '\0') {
        latch__violation(res, LATCH_ERR_INVALID_ARG, "latch_res_sendfile",
                         "The path is NULL or empty", at);
        return LATCH_ERR_INVALID_ARG;
    }
    if ((r = check_fresh(res, "latch_res_sendfile", at)) < 0)
        return r;
    f = fsend_new(res, opts, done, data, "latch_res_sendfile", at, &r);
    if (f == NULL)
        return r;
    n = strlen(path) + (root != NULL ? strlen(root) + 2 : 1);
    if ((f->path = malloc(n)) == NULL ||
        (root != NULL && (f->root = strdup(root)) == NULL)) {
        latch_res_pipe_fail_at(res, LATCH_ERR_NOMEM, at);
        return 0;
    }
    if (root != NULL)
        snprintf(f->path, n, "%s/%s", root, path);
    else
        snprintf(f->path, n, "%s", path);
    if (root != NULL && has_dotdot(path)) {
        /* Refused before the disk is touched, as send does. */
        latch_res_pipe_fail_at(res, UV_EACCES, at);
        return 0;
    }
    f->refs++;
    r = uv_queue_work(&res->w->loop, &f->work, open_work, open_done);
    if (r < 0) {
        f->refs--;
        latch_res_pipe_fail_at(res, r, at);
    }
    return 0;
}
