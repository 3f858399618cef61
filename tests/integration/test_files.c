/*
 * test_files.c - pipes, latch_res_sendfile and latch_static against real
 * clients: libcurl for bytes, ranges and conditional requests, raw sockets
 * for path shapes curl would normalize, half-way disconnects and readers
 * that stop reading.
 *
 * Files live in a fresh directory under /tmp: root/ is served, outside.txt
 * beside it must never be sent (a symlink in root points at it). Every
 * pipe's done is counted per status and must run exactly once per request.
 *
 * Not here: the rules themselves row by row (tests/unit/test_filemeta.c).
 */
#include "harness.h"

#include <curl/curl.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include <cmocka.h>

static char dir[256], root[300];
static th_server srv;
static th_violations viol;
static atomic_int done_calls, done_ok, done_cancelled, done_err,
    done_last_status;
static atomic_int pipe_started;

static void count_done(latch_res *res, int status, void *data)
{
    (void)res;
    (void)data;
    atomic_fetch_add(&done_calls, 1);
    atomic_store(&done_last_status, status);
    if (status == 0)
        atomic_fetch_add(&done_ok, 1);
    else if (status == LATCH_ERR_CANCELLED)
        atomic_fetch_add(&done_cancelled, 1);
    else
        atomic_fetch_add(&done_err, 1);
}

static void reset_counts(void)
{
    atomic_store(&done_calls, 0);
    atomic_store(&done_ok, 0);
    atomic_store(&done_cancelled, 0);
    atomic_store(&done_err, 0);
    atomic_store(&pipe_started, 0);
}

/* Waits (bounded) for done to have run n times in all. */
static void wait_done(int n)
{
    int64_t end = th_now_ms() + 10000;

    while (atomic_load(&done_calls) < n && th_now_ms() < end)
        usleep(1000);
    assert_int_equal(atomic_load(&done_calls), n);
}

/* ---- files ---------------------------------------------------------- */

static void write_file(const char *rel, size_t n, unsigned seed)
{
    char p[512];
    FILE *f;

    snprintf(p, sizeof(p), "%s/%s", dir, rel);
    f = fopen(p, "wb");
    assert_non_null(f);
    for (size_t i = 0; i < n; i++)
        fputc((int)((i * 131u + seed) & 0xff), f);
    fclose(f);
}

static char *read_file(const char *rel, size_t *n)
{
    char p[512];
    FILE *f;
    char *b;
    long len;

    snprintf(p, sizeof(p), "%s/%s", dir, rel);
    f = fopen(p, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    len = ftell(f);
    fseek(f, 0, SEEK_SET);
    b = malloc((size_t)len + 1);
    assert_non_null(b);
    assert_int_equal(fread(b, 1, (size_t)len, f), (size_t)len);
    fclose(f);
    *n = (size_t)len;
    return b;
}

/* ---- the app ---------------------------------------------------------- */

static int h_sendfile(latch_req *req, latch_res *res, void *data)
{
    latch_file_opts o = {0};
    const char *q = latch_req_query(req, "attach");

    (void)data;
    o.root = root;
    o.attachment = q != NULL;
    o.max_age_ms = 60000;
    latch_res_sendfile(res, latch_req_param(req, "name"), &o, count_done, NULL);
    return LATCH_DONE;
}

/* A generated body: n lines, pulled with backpressure. */
typedef struct gen {
    int next, n;
} gen;

static void gen_pull(latch_res *res, void *data)
{
    gen *g = data;
    char line[64];
    int r = 1;

    while (r == 1 && g->next < g->n) {
        int len = snprintf(line, sizeof(line), "row %d\n", g->next++);
        if (g->next == g->n) {
            latch_res_end(res, line, (size_t)len);
            return;
        }
        r = latch_res_write(res, line, (size_t)len);
    }
}

static void gen_done(latch_res *res, int status, void *data)
{
    free(data);
    count_done(res, status, NULL);
}

static int h_pipe(latch_req *req, latch_res *res, void *data)
{
    gen *g = calloc(1, sizeof(*g));

    (void)data;
    g->n = atoi(latch_req_query(req, "n") ? latch_req_query(req, "n") : "10");
    latch_res_set_header(res, "Content-Type", "text/plain");
    atomic_fetch_add(&pipe_started, 1);
    if (latch_res_pipe(res, gen_pull, gen_done, g) < 0)
        free(g);
    return LATCH_DONE;
}

/* A producer that fails: before the headers (fail=0) or after (fail=1). */
static void fail_pull(latch_res *res, void *data)
{
    if (data != NULL)
        latch_res_write(res, "partial", 7);
    latch_res_pipe_fail(res, UV_EIO);
    /* a late write from the failed producer: refused and reported */
    latch_res_write(res, "late", 4);
}

static int h_pipe_fail(latch_req *req, latch_res *res, void *data)
{
    (void)data;
    latch_res_pipe(res, fail_pull, count_done,
                   latch_req_query(req, "after") ? (void *)1 : NULL);
    return LATCH_DONE;
}

static int on_error(const latch_error *err, latch_req *req, latch_res *res,
                    void *data)
{
    char body[96];

    (void)req;
    (void)data;
    snprintf(body, sizeof(body), "error %d %s\n", err->status,
             latch_err_name(err->code));
    latch_res_status(res, err->status);
    latch_res_send(res, body, strlen(body));
    return LATCH_DONE;
}

static int h_after_static(latch_req *req, latch_res *res, void *data)
{
    (void)req;
    (void)data;
    latch_res_send(res, "next handler\n", 13);
    return LATCH_DONE;
}

static void make_tree(void)
{
    char p[600];

    snprintf(dir, sizeof(dir), "/tmp/latch-files-XXXXXX");
    assert_non_null(mkdtemp(dir));
    snprintf(root, sizeof(root), "%s/root", dir);
    assert_int_equal(mkdir(root, 0755), 0);
    snprintf(p, sizeof(p), "%s/root/sub", dir);
    assert_int_equal(mkdir(p, 0755), 0);
    snprintf(p, sizeof(p), "%s/root/noindex", dir);
    assert_int_equal(mkdir(p, 0755), 0);
    write_file("root/empty.bin", 0, 0);
    write_file("root/one.bin", 1, 7);
    write_file("root/a64k-1.bin", 65535, 1);
    write_file("root/a64k.bin", 65536, 2);
    write_file("root/a64k+1.bin", 65537, 3);
    write_file("root/ten.bin", 10u << 20, 4);
    write_file("root/page.html", 100, 5);
    write_file("root/sub/index.html", 50, 6);
    write_file("root/.secret", 10, 8);
    write_file("root/data.json", 30, 9);
    write_file("root/data.json.gz", 20, 10);
    snprintf(p, sizeof(p), "%s/outside.txt", dir);
    {
        FILE *f = fopen(p, "w");
        assert_non_null(f);
        fputs("TOP-SECRET-OUTSIDE-ROOT\n", f);
        fclose(f);
    }
    snprintf(p, sizeof(p), "%s/root/escape.txt", dir);
    assert_int_equal(symlink("../outside.txt", p), 0);
    snprintf(p, sizeof(p), "%s/root/inside-link.html", dir);
    assert_int_equal(symlink("page.html", p), 0);
    /* absolute symlinks: one within root (served, as it always was), one
     * out of it (403); a loop (a miss); a FIFO (a miss, and no open may
     * wait for a writer) */
    {
        char t[600];
        snprintf(p, sizeof(p), "%s/root/abs-link.html", dir);
        snprintf(t, sizeof(t), "%s/root/page.html", dir);
        assert_int_equal(symlink(t, p), 0);
        snprintf(p, sizeof(p), "%s/root/abs-escape.txt", dir);
        snprintf(t, sizeof(t), "%s/outside.txt", dir);
        assert_int_equal(symlink(t, p), 0);
    }
    snprintf(p, sizeof(p), "%s/root/loop-a", dir);
    assert_int_equal(symlink("loop-b", p), 0);
    snprintf(p, sizeof(p), "%s/root/loop-b", dir);
    assert_int_equal(symlink("loop-a", p), 0);
    snprintf(p, sizeof(p), "%s/root/pipe.fifo", dir);
    assert_int_equal(mkfifo(p, 0644), 0);
}

static void rm_tree(const char *d)
{
    DIR *dp = opendir(d);
    struct dirent *e;
    char p[800];
    struct stat st;

    if (dp == NULL)
        return;
    while ((e = readdir(dp)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        snprintf(p, sizeof(p), "%s/%s", d, e->d_name);
        if (lstat(p, &st) == 0 && S_ISDIR(st.st_mode))
            rm_tree(p);
        else
            unlink(p);
    }
    closedir(dp);
    rmdir(d);
}

static int setup(void **state)
{
    latch_app *app = latch_app_new();
    latch_static_opts so = {0};

    (void)state;
    make_tree();
    so.precompressed = true;
    th_record_violations(app, &viol);
    assert_int_equal(latch_static(app, "/s", root, &so), 0);
    latch_get(app, "/s/*", h_after_static, NULL);
    latch_get(app, "/f/:name", h_sendfile, NULL);
    latch_get(app, "/pipe", h_pipe, NULL);
    latch_get(app, "/pipefail", h_pipe_fail, NULL);
    latch_use_error(app, on_error, NULL);
    th_server_start(&srv, app);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    th_server_stop(&srv);
    rm_tree(dir);
    return 0;
}

/* ---- libcurl ----------------------------------------------------------- */

typedef struct sink {
    char *data;
    size_t len, cap;
} sink;

/* Appends with doubling (a 10 MB body in 16 KiB pieces must not copy
 * quadratically, least of all under ASan). */
static size_t on_data(char *p, size_t size, size_t n, void *arg)
{
    sink *s = arg;
    size_t add = size * n;

    if (s->len + add + 1 > s->cap) {
        size_t cap = s->cap ? s->cap : 4096;
        char *d;
        while (cap < s->len + add + 1)
            cap *= 2;
        if ((d = realloc(s->data, cap)) == NULL)
            return 0;
        s->data = d;
        s->cap = cap;
    }
    memcpy(s->data + s->len, p, add);
    s->len += add;
    s->data[s->len] = '\0';
    return add;
}

/* One GET (or HEAD) with extra request headers; returns the status and
 * fills body and head (caller frees). */
static long get(const char *path, const char *const *hdrs, bool head_only,
                sink *body, sink *head)
{
    CURL *c = curl_easy_init();
    struct curl_slist *l = NULL;
    char url[512];
    long code = 0;
    CURLcode rc;

    assert_non_null(c);
    memset(body, 0, sizeof(*body));
    memset(head, 0, sizeof(*head));
    snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", srv.port, path);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_PATH_AS_IS, 1L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, body);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_data);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, head);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 20000L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    if (head_only)
        curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    for (; hdrs != NULL && *hdrs != NULL; hdrs++)
        l = curl_slist_append(l, *hdrs);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, l);
    rc = curl_easy_perform(c);
    if (rc != CURLE_OK)
        fail_msg("curl %s: %s", path, curl_easy_strerror(rc));
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
    curl_slist_free_all(l);
    curl_easy_cleanup(c);
    return code;
}

/* The value of a response header (case-insensitive), copied, or NULL. */
static char *header(const sink *head, const char *name)
{
    size_t n = strlen(name);
    const char *p = head->data;

    while (p != NULL && *p != '\0') {
        const char *eol = strstr(p, "\r\n");
        if (eol == NULL)
            break;
        if (strncasecmp(p, name, n) == 0 && p[n] == ':') {
            const char *v = p + n + 1;
            while (*v == ' ')
                v++;
            return strndup(v, (size_t)(eol - v));
        }
        p = eol + 2;
    }
    return NULL;
}

static void free_sinks(sink *a, sink *b)
{
    free(a->data);
    free(b->data);
}

static void expect_header(const sink *head, const char *name, const char *want)
{
    char *v = header(head, name);

    if (want == NULL) {
        if (v != NULL)
            fail_msg("%s: %s, want none", name, v);
        return;
    }
    if (v == NULL || strcmp(v, want) != 0)
        fail_msg("%s: %s, want %s", name, v ? v : "(none)", want);
    free(v);
}

/* ---- tests ------------------------------------------------------------- */

static void test_bytes_exact(void **state)
{
    static const char *const names[] = {"empty.bin", "one.bin",    "a64k-1.bin",
                                        "a64k.bin",  "a64k+1.bin", "ten.bin"};
    sink b, h;
    char path[128], want_len[32];

    (void)state;
    reset_counts();
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        size_t n;
        char rel[64], *want;
        snprintf(rel, sizeof(rel), "root/%s", names[i]);
        want = read_file(rel, &n);
        for (int via = 0; via < 2; via++) {
            snprintf(path, sizeof(path), via ? "/s/%s" : "/f/%s", names[i]);
            assert_int_equal(get(path, NULL, false, &b, &h), 200);
            if (b.len != n || (n > 0 && memcmp(b.data, want, n) != 0))
                fail_msg("%s: %zu bytes, want %zu", path, b.len, n);
            snprintf(want_len, sizeof(want_len), "%zu", n);
            expect_header(&h, "Content-Length", want_len);
            expect_header(&h, "Content-Type", "application/octet-stream");
            expect_header(&h, "Accept-Ranges", "bytes");
            free_sinks(&b, &h);
        }
        free(want);
    }
    /* every sendfile's done ran once, with 0 */
    wait_done(6);
    assert_int_equal(atomic_load(&done_ok), 6);
}

static void test_head_and_types(void **state)
{
    sink b, h;

    (void)state;
    reset_counts();
    assert_int_equal(get("/f/page.html", NULL, true, &b, &h), 200);
    assert_int_equal(b.len, 0);
    expect_header(&h, "Content-Length", "100");
    expect_header(&h, "Content-Type", "text/html; charset=utf-8");
    expect_header(&h, "Cache-Control", "public, max-age=60");
    free_sinks(&b, &h);
    assert_int_equal(get("/f/page.html?attach=1", NULL, false, &b, &h), 200);
    expect_header(&h, "Content-Disposition",
                  "attachment; filename=\"page.html\"");
    free_sinks(&b, &h);
    wait_done(2);
    assert_int_equal(atomic_load(&done_ok), 2);
}

static void test_ranges(void **state)
{
    static const char *const r1[] = {"Range: bytes=10-19", NULL};
    static const char *const r2[] = {"Range: bytes=-5", NULL};
    static const char *const unsat[] = {"Range: bytes=100-", NULL};
    static const char *const many[] = {"Range: bytes=0-1,5-6", NULL};
    static const char *const bad[] = {"Range: bytes=5-1", NULL};
    sink b, h;
    size_t n;
    char *want = read_file("root/page.html", &n);

    (void)state;
    assert_int_equal(get("/s/page.html", r1, false, &b, &h), 206);
    assert_int_equal(b.len, 10);
    assert_memory_equal(b.data, want + 10, 10);
    expect_header(&h, "Content-Range", "bytes 10-19/100");
    expect_header(&h, "Content-Length", "10");
    free_sinks(&b, &h);
    assert_int_equal(get("/f/page.html", r2, false, &b, &h), 206);
    assert_int_equal(b.len, 5);
    assert_memory_equal(b.data, want + 95, 5);
    expect_header(&h, "Content-Range", "bytes 95-99/100");
    free_sinks(&b, &h);
    assert_int_equal(get("/s/page.html", unsat, false, &b, &h), 416);
    expect_header(&h, "Content-Range", "bytes */100");
    free_sinks(&b, &h);
    assert_int_equal(get("/s/page.html", many, false, &b, &h), 200);
    assert_int_equal(b.len, 100);
    free_sinks(&b, &h);
    assert_int_equal(get("/s/page.html", bad, false, &b, &h), 200);
    assert_int_equal(b.len, 100);
    assert_memory_equal(b.data, want, 100);
    free_sinks(&b, &h);
    free(want);
}

static void test_conditionals(void **state)
{
    sink b, h;
    char *etag, *lm, l1[160], l2[160], l3[200];
    const char *inm[] = {l1, NULL}, *ims[] = {l2, NULL},
               *ir[] = {l3, "Range: bytes=0-9", NULL};
    const char *ir_ok[] = {l1 + 0, NULL, NULL};

    (void)state;
    assert_int_equal(get("/s/page.html", NULL, false, &b, &h), 200);
    etag = header(&h, "ETag");
    lm = header(&h, "Last-Modified");
    assert_non_null(etag);
    assert_non_null(lm);
    free_sinks(&b, &h);

    snprintf(l1, sizeof(l1), "If-None-Match: W/%s", etag); /* weak cmp */
    assert_int_equal(get("/s/page.html", inm, false, &b, &h), 304);
    assert_int_equal(b.len, 0);
    expect_header(&h, "ETag", etag);
    expect_header(&h, "Content-Length", NULL);
    free_sinks(&b, &h);

    snprintf(l2, sizeof(l2), "If-Modified-Since: %s", lm);
    assert_int_equal(get("/f/page.html", ims, false, &b, &h), 304);
    free_sinks(&b, &h);

    /* If-Range with another validator: the Range is ignored */
    snprintf(l3, sizeof(l3), "If-Range: \"nope\"");
    assert_int_equal(get("/s/page.html", ir, false, &b, &h), 200);
    assert_int_equal(b.len, 100);
    free_sinks(&b, &h);
    snprintf(l3, sizeof(l3), "If-Range: %s", etag);
    assert_int_equal(get("/s/page.html", ir, false, &b, &h), 206);
    assert_int_equal(b.len, 10);
    free_sinks(&b, &h);
    (void)ir_ok;
    free(etag);
    free(lm);
}

/* The raw reply to a GET of `path` on a fresh connection. */
static char *raw_get(const char *path, size_t *len)
{
    char req[1024];
    int n = snprintf(req, sizeof(req),
                     "GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                     path);

    return th_exchange(srv.port, req, (size_t)n, 1, len);
}

static void expect_status(const char *path, int status)
{
    size_t len;
    char *r = raw_get(path, &len);
    char want[32];

    snprintf(want, sizeof(want), "HTTP/1.1 %d ", status);
    if (strncmp(r, want, strlen(want)) != 0)
        fail_msg("GET %s: %.40s, want %d", path, r, status);
    /* never the bytes of the file outside root */
    if (memmem(r, len, "TOP-SECRET", 10) != NULL)
        fail_msg("GET %s sent the outside file: %s", path, r);
    free(r);
}

static void test_static_paths(void **state)
{
    size_t len;
    char *r;

    (void)state;
    /* traversal shapes: refused before the disk (403), or a miss */
    expect_status("/s/../outside.txt", 403);
    expect_status("/s/%2e%2e/outside.txt", 403);
    expect_status("/s/%2E%2E/%2e%2e/etc/passwd", 403);
    expect_status("/s/..%2foutside.txt", 403);
    expect_status("/s/..%5coutside.txt", 403);
    expect_status("/s/..\\outside.txt", 403);
    expect_status("/s/page.html%00.png", 403);
    expect_status("/s/sub/..%2f..%2foutside.txt", 403);
    expect_status("/s/%zz", 400);
    /* a symlink resolving outside root: 403, never its bytes */
    expect_status("/s/escape.txt", 403);
    expect_status("/f/escape.txt", 403);
    expect_status("/f/..%2foutside.txt", 403);
    /* a symlink inside root is fine */
    expect_status("/s/inside-link.html", 200);
    /* a FIFO is no file, and opening it must not wait for a writer */
    expect_status("/f/pipe.fifo", 404);
    r = raw_get("/s/pipe.fifo", &len);
    assert_non_null(strstr(r, "next handler"));
    free(r);
    /* dotfiles ignored: falls through to the next handler */
    r = raw_get("/s/.secret", &len);
    assert_non_null(strstr(r, "next handler"));
    free(r);
    /* a miss falls through */
    r = raw_get("/s/nope.txt", &len);
    assert_non_null(strstr(r, "next handler"));
    free(r);
    /* /dir -> 301 /dir/, leading slashes collapsed */
    r = raw_get("/s/sub?x=1", &len);
    assert_non_null(strstr(r, "HTTP/1.1 301 "));
    assert_non_null(strstr(r, "\r\nLocation: /s/sub/?x=1\r\n"));
    free(r);
    r = raw_get("/s/sub/", &len);
    assert_non_null(strstr(r, "HTTP/1.1 200 "));
    assert_non_null(strstr(r, "text/html"));
    free(r);
    /* a directory without index: a miss */
    r = raw_get("/s/noindex/", &len);
    assert_non_null(strstr(r, "next handler"));
    free(r);
    /* sendfile of a missing file: the error handlers, 404 */
    reset_counts();
    r = raw_get("/f/nope.txt", &len);
    assert_non_null(strstr(r, "HTTP/1.1 404 "));
    assert_non_null(strstr(r, "error 404 ENOENT"));
    free(r);
    wait_done(1);
    assert_int_equal(atomic_load(&done_last_status), UV_ENOENT);
}

/* ---- the open on the loop -------------------------------------------- */

/* static.c's test hooks (not in latch.h): called before each openat2 of
 * latch_static with the path and whether it is the loop's cached try; a
 * nonzero return is taken as the syscall's errno. And what openat2 can do
 * on this kernel, as static.c learnt it (0 all, 1 no RESOLVE_CACHED, 2 no
 * openat2). */
extern int (*latch__static_open_hook)(const char *rel, bool cached);
extern atomic_int latch__static_openat2;

static atomic_int hook_cached, hook_pool;         /* calls seen */
static atomic_int hook_err_cached, hook_err_pool; /* errno to answer */
static char hook_only[64]; /* only for this path ("": every path) */

static int open_hook(const char *rel, bool cached)
{
    atomic_fetch_add(cached ? &hook_cached : &hook_pool, 1);
    if (hook_only[0] != '\0' && strcmp(rel, hook_only) != 0)
        return 0;
    return atomic_load(cached ? &hook_err_cached : &hook_err_pool);
}

static void hook_set(int err_cached, int err_pool, const char *only)
{
    atomic_store(&hook_cached, 0);
    atomic_store(&hook_pool, 0);
    atomic_store(&hook_err_cached, err_cached);
    atomic_store(&hook_err_pool, err_pool);
    snprintf(hook_only, sizeof(hook_only), "%s", only != NULL ? only : "");
}

/* A GET through libcurl: the status, and the body must be `file`'s. */
static void expect_file(const char *path, const char *file)
{
    size_t n;
    char *want = read_file(file, &n);
    sink b, h;

    assert_int_equal(get(path, NULL, false, &b, &h), 200);
    assert_int_equal(b.len, n);
    assert_memory_equal(b.data, want, n);
    free_sinks(&b, &h);
    free(want);
}

/* Every path shape of the tree, answered the same way whichever way the
 * file was opened. */
static void expect_tree_answers(void)
{
    size_t len;
    char *r;

    expect_file("/s/page.html", "root/page.html");
    expect_file("/s/inside-link.html", "root/page.html");
    expect_file("/s/abs-link.html", "root/page.html");
    expect_file("/s/sub/", "root/sub/index.html");
    expect_status("/s/escape.txt", 403);
    expect_status("/s/abs-escape.txt", 403);
    r = raw_get("/s/loop-a", &len);
    assert_non_null(strstr(r, "next handler"));
    free(r);
    r = raw_get("/s/pipe.fifo", &len);
    assert_non_null(strstr(r, "next handler"));
    free(r);
    r = raw_get("/s/nope-never-there.txt", &len);
    assert_non_null(strstr(r, "next handler"));
    free(r);
}

static void test_open_on_loop(void **state)
{
    (void)state;
    hook_set(0, 0, NULL);
    latch__static_open_hook = open_hook;
    expect_tree_answers(); /* warms the dentry cache */

    /* A file whose names are all cached is opened on the loop, and a
     * symlink out of root is refused there: without RESOLVE_BENEATH this
     * open would succeed, and nothing else on the loop checks where the
     * file lies. */
    hook_set(0, 0, NULL);
    expect_file("/s/page.html", "root/page.html");
    expect_file("/s/inside-link.html", "root/page.html");
    assert_int_equal(atomic_load(&hook_pool), 0);
    assert_true(atomic_load(&hook_cached) >= 2);
    hook_set(0, 0, NULL);
    expect_status("/s/escape.txt", 403);
    assert_true(atomic_load(&hook_cached) >= 1);

    /* Not in the cache (EAGAIN on the loop): the thread pool opens it. */
    hook_set(EAGAIN, 0, NULL);
    expect_tree_answers();
    assert_true(atomic_load(&hook_pool) >= 1);
    /* Only the precompressed sibling uncached: still the sibling. */
    {
        static const char *const gz[] = {"Accept-Encoding: gzip", NULL};
        sink b, h;

        hook_set(EAGAIN, 0, "data.json.gz");
        assert_int_equal(get("/s/data.json", gz, false, &b, &h), 200);
        assert_int_equal(b.len, 20);
        expect_header(&h, "Content-Encoding", "gzip");
        free_sinks(&b, &h);
        assert_true(atomic_load(&hook_pool) >= 1);
    }

    /* A kernel without RESOLVE_CACHED (EINVAL): no more tries on the loop,
     * every open on the thread pool. */
    hook_set(EINVAL, 0, NULL);
    expect_file("/s/page.html", "root/page.html");
    assert_int_equal(atomic_load(&latch__static_openat2), 1);
    hook_set(0, 0, NULL);
    expect_tree_answers();
    assert_int_equal(atomic_load(&hook_cached), 0);
    assert_true(atomic_load(&hook_pool) >= 1);

    /* A kernel without openat2 (ENOSYS): by path, checked by where the
     * descriptor lies; the same answers. */
    atomic_store(&latch__static_openat2, 0);
    hook_set(ENOSYS, ENOSYS, NULL);
    expect_file("/s/page.html", "root/page.html");
    assert_int_equal(atomic_load(&latch__static_openat2), 2);
    hook_set(0, 0, NULL);
    expect_tree_answers();
    assert_int_equal(atomic_load(&hook_cached) + atomic_load(&hook_pool), 0);

    latch__static_open_hook = NULL;
    atomic_store(&latch__static_openat2, 0);
}

/* Polls GET path (5 s at most) until its body is `file`'s bytes. */
static bool becomes(const char *path, const char *file)
{
    int64_t end = th_now_ms() + 5000;
    size_t n;
    char *want = read_file(file, &n);
    bool same = false;

    while (!same && th_now_ms() < end) {
        sink b, h;
        if (get(path, NULL, false, &b, &h) == 200 && b.len == n &&
            memcmp(b.data, want, n) == 0)
            same = true;
        free_sinks(&b, &h);
        if (!same)
            usleep(20000);
    }
    free(want);
    return same;
}

/* A deploy that swaps directories: the root's path now names another
 * directory (the old one renamed, still there). Its files are served
 * within a second or so, as an open by path serves them, not the old
 * directory's; and the old ones again after the swap back. */
static void test_root_replaced(void **state)
{
    char old[400], p[600];

    (void)state;
    expect_file("/s/page.html", "root/page.html");
    snprintf(old, sizeof(old), "%s/root.old", dir);
    assert_int_equal(rename(root, old), 0);
    assert_int_equal(mkdir(root, 0755), 0);
    write_file("root/page.html", 77, 42);
    assert_true(becomes("/s/page.html", "root/page.html"));
    /* back: the new one goes, the old one is the root again */
    snprintf(p, sizeof(p), "%s/root/page.html", dir);
    assert_int_equal(unlink(p), 0);
    assert_int_equal(rmdir(root), 0);
    assert_int_equal(rename(old, root), 0);
    assert_true(becomes("/s/page.html", "root/page.html"));
}

static void test_precompressed(void **state)
{
    static const char *const gz[] = {"Accept-Encoding: gzip, br;q=0", NULL};
    sink b, h;

    (void)state;
    assert_int_equal(get("/s/data.json", gz, false, &b, &h), 200);
    assert_int_equal(b.len, 20);
    expect_header(&h, "Content-Encoding", "gzip");
    expect_header(&h, "Content-Type", "application/json; charset=utf-8");
    expect_header(&h, "Vary", "Accept-Encoding");
    free_sinks(&b, &h);
    assert_int_equal(get("/s/data.json", NULL, false, &b, &h), 200);
    assert_int_equal(b.len, 30);
    expect_header(&h, "Content-Encoding", NULL);
    free_sinks(&b, &h);
}

static void test_pipe_generated(void **state)
{
    sink b, h;
    char want[64];

    (void)state;
    reset_counts();
    assert_int_equal(get("/pipe?n=100000", NULL, false, &b, &h), 200);
    snprintf(want, sizeof(want), "row 99999\n");
    assert_true(b.len > 100000);
    assert_memory_equal(b.data + b.len - strlen(want), want, strlen(want));
    assert_memory_equal(b.data, "row 0\nrow 1\n", 12);
    free_sinks(&b, &h);
    wait_done(1);
    assert_int_equal(atomic_load(&done_ok), 1);
}

static void test_pipe_fail(void **state)
{
    size_t len;
    char *r;
    int before = th_violation_count(&viol);

    (void)state;
    reset_counts();
    /* before the headers: the error handlers answer 500 */
    r = raw_get("/pipefail", &len);
    assert_non_null(strstr(r, "HTTP/1.1 500 "));
    assert_non_null(strstr(r, "error 500 EIO"));
    free(r);
    wait_done(1);
    assert_int_equal(atomic_load(&done_last_status), UV_EIO);
    /* after the headers: truncated (no terminating chunk), no handler */
    r = raw_get("/pipefail?after=1", &len);
    assert_non_null(strstr(r, "HTTP/1.1 200 "));
    assert_non_null(strstr(r, "partial"));
    assert_null(strstr(r, "0\r\n\r\n"));
    assert_null(strstr(r, "late"));
    free(r);
    wait_done(2);
    assert_int_equal(atomic_load(&done_last_status), UV_EIO);
    /* each late write was refused and reported */
    assert_true(th_violation_count(&viol) >= before + 2);
}

/* A client that leaves after reading part of a large file: done runs
 * once with LATCH_ERR_CANCELLED, nothing crashes, the fds come back. */
static int count_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    int n = 0;

    assert_non_null(d);
    while ((e = readdir(d)) != NULL)
        n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

static void test_client_leaves(void **state)
{
    int fds0, fd;
    size_t want = 1u << 20, len;
    char *r;
    int64_t end;

    (void)state;
    fds0 = count_fds();
    reset_counts();
    fd = th_connect(srv.port);
    th_send_str(fd, "GET /f/ten.bin HTTP/1.1\r\nHost: x\r\n\r\n");
    r = th_read(fd, &len, 10000, th_until_bytes, &want);
    assert_true(len >= want);
    free(r);
    th_close_reset(fd);
    wait_done(1);
    assert_int_equal(atomic_load(&done_cancelled), 1);
    /* the file and the socket are closed again (connections of earlier
     * tests may still have been closing at the start: at most fds0) */
    end = th_now_ms() + 5000;
    while (count_fds() > fds0 && th_now_ms() < end)
        usleep(1000);
    assert_true(count_fds() <= fds0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bytes_exact),
        cmocka_unit_test(test_head_and_types),
        cmocka_unit_test(test_ranges),
        cmocka_unit_test(test_conditionals),
        cmocka_unit_test(test_static_paths),
        cmocka_unit_test(test_precompressed),
        cmocka_unit_test(test_open_on_loop),
        cmocka_unit_test(test_pipe_generated),
        cmocka_unit_test(test_pipe_fail),
        cmocka_unit_test(test_client_leaves),
        cmocka_unit_test(test_root_replaced),
    };
    int r;

    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return 1;
    r = cmocka_run_group_tests(tests, setup, teardown);
    curl_global_cleanup();
    return r;
}
