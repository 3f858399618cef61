/*
 * test_ops.c - the access log and /metrics against a real server.
 *
 * Access log: 1,000 requests (pipelined on keep-alive connections, with
 * and without Referer and User-Agent, 200s, 404s, HEAD, HTTP/1.0, bytes
 * nginx escapes) are logged to a file; after latch_app_free every line is
 * parsed field by field and matched to the request that caused it:
 * exactly one line per request, in nginx's combined format. The JSON
 * format gets the same, each line parsed by jansson (invalid UTF-8 in a
 * header must still give valid JSON). A log descriptor that never drains
 * (a pipe nobody reads) must not slow the server: every request is
 * answered, the lines that did not fit are counted as dropped, and the
 * pipe holds only whole lines. A pipe whose reader left raises no SIGPIPE
 * in the process (the test does not ignore it: it would die).
 *
 * Metrics: two workers, a known mix of responses and one violation; the
 * scrape is parsed as the text format 0.0.4 (every sample after its
 * # TYPE, names and labels well formed) and each counter must equal what
 * the test caused; promtool checks it too when Debian's prometheus
 * package installed it.
 */
#include "harness.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

/* ---- routes ---------------------------------------------------------- */

static int hello(latch_req *req, latch_res *res, void *data)
{
    (void)req;
    (void)data;
    latch_res_set_header(res, "Content-Type", "text/plain");
    return latch_res_send(res, "Hello, World!", 13) < 0 ? -1 : LATCH_DONE;
}

static int boom(latch_req *req, latch_res *res, void *data)
{
    (void)res;
    (void)data;
    return latch_fail(req, 500, "boom");
}

static int twice_line; /* the line of the second send, for the site label */

static int twice(latch_req *req, latch_res *res, void *data)
{
    (void)req;
    (void)data;
    latch_res_send(res, "once", 4);
    twice_line = __LINE__ + 1;
    latch_res_send(res, "twice", 5); /* ERR_HTTP_HEADERS_SENT */
    return LATCH_DONE;
}

/* Responses that finished, outside /metrics. A response is counted when
 * its last byte went to the OS, which may be after the client read it;
 * its on_finish runs after that, so waiting for this count makes the
 * scrape's numbers exact. */
static atomic_int finished;

static void on_done(latch_res *res, void *data)
{
    (void)res;
    (void)data;
    atomic_fetch_add(&finished, 1);
}

static int count_finish(latch_req *req, latch_res *res, void *data)
{
    (void)data;
    if (strcmp(latch_req_path(req), "/metrics") != 0)
        latch_res_on_finish(res, on_done, NULL);
    return LATCH_NEXT;
}

static void wait_finished(int n)
{
    int64_t end = th_now_ms() + 10000;

    while (atomic_load(&finished) < n && th_now_ms() < end) {
        struct timespec ts = {0, 1000000L};
        nanosleep(&ts, NULL); /* polls a counter, bounded */
    }
    assert_int_equal(atomic_load(&finished), n);
}

/* An event stream subscribed to the channel `news"q` (a label to escape). */
static int events(latch_req *req, latch_res *res, void *data)
{
    (void)data;
    if (latch_subscribe(res, "news\"q", NULL, NULL) != 0)
        return latch_fail(req, 500, "subscribe failed");
    return LATCH_DONE;
}

/* ---- a server with N workers ----------------------------------------- */

typedef struct srv {
    latch_app *app;
    int port;
    pthread_t thread;
} srv;

static void *srv_main(void *arg)
{
    srv *s = arg;

    latch_run(s->app);
    return NULL;
}

static void srv_start(srv *s, latch_app *app, int workers)
{
    s->app = app;
    assert_int_equal(latch_app_set_workers(app, workers), 0);
    assert_int_equal(latch_app_set_handle_signals(app, false), 0);
    assert_int_equal(latch_listen(app, "127.0.0.1", 0), 0);
    s->port = latch_app_port(app);
    assert_int_equal(pthread_create(&s->thread, NULL, srv_main, s), 0);
}

/* latch_stop, join, latch_app_free: the log writer has written all. */
static void srv_stop(srv *s)
{
    latch_stop(s->app);
    pthread_join(s->thread, NULL);
    latch_app_free(s->app);
    s->app = NULL;
}

/* th_until for th_read: n complete responses to requests of `methods`
 * (th_until_responses would wait for the body of a HEAD's response). */
typedef struct until_n {
    int n;
    const char **methods;
} until_n;

static bool until_responses(const char *buf, size_t len, void *arg)
{
    until_n *u = arg;
    th_resp r[64];
    const char *err = NULL;
    int got = th_wire_parse(buf, len, u->methods, r, 64, false, &err);

    if (got > 0)
        th_resp_free(r, got);
    return got >= u->n;
}

/* Sends the n requests pipelined on one connection and reads until all n
 * responses arrived (methods for the wire checker). */
static void pipelined(int port, int n, const char **reqs, const char **methods)
{
    size_t total = 0, len, off = 0;
    char *all, *out;
    int fd, i, want = n;

    for (i = 0; i < n; i++)
        total += strlen(reqs[i]);
    all = malloc(total + 1);
    assert_non_null(all);
    for (i = 0; i < n; i++) {
        memcpy(all + off, reqs[i], strlen(reqs[i]));
        off += strlen(reqs[i]);
    }
    fd = th_connect(port);
    th_send(fd, all, total);
    out = th_read(fd, &len, 10000, until_responses, &(until_n){want, methods});
    {
        th_resp r[64];
        const char *err = NULL;
        assert_int_equal(th_wire_parse(out, len, methods, r, 64, true, &err),
                         n);
        th_resp_free(r, n);
    }
    close(fd);
    free(out);
    free(all);
}

static char *slurp_fd(int fd, size_t *len)
{
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap + 1);
    ssize_t r;

    assert_non_null(buf);
    for (;;) {
        if (n == cap) {
            cap *= 2;
            buf = realloc(buf, cap + 1);
            assert_non_null(buf);
        }
        r = read(fd, buf + n, cap - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        n += (size_t)r;
    }
    buf[n] = '\0';
    *len = n;
    return buf;
}

/* ---- the access log, combined --------------------------------------- */

#define NLOG 1000
#define PER_CONN 50

/* What request i is: its path, method, protocol, headers, expectations. */
typedef struct want_line {
    char method[8];
    char path[64];
    int minor;
    const char *referer; /* as logged (escaped), "-" when absent */
    const char *ua;
    int status;
    int bytes;
    bool seen;
} want_line;

static want_line wants[NLOG];

/* The exotic header values and how nginx logs them. */
#define UA_QUOTE "curl \"quoted\" \\back"
#define UA_QUOTE_LOGGED "curl \\x22quoted\\x22 \\x5Cback"
#define UA_HIGH "caf\xc3\xa9"
#define UA_HIGH_LOGGED "caf\\xC3\\xA9"

static void build_request(int i, char *out, size_t cap)
{
    want_line *w = &wants[i];
    const char *ref = NULL, *ua = NULL;

    memset(w, 0, sizeof(*w));
    w->minor = 1;
    snprintf(w->method, sizeof(w->method), "GET");
    if (i % 10 == 3) {
        snprintf(w->path, sizeof(w->path), "/missing?i=%d", i);
        w->status = 404;
        w->bytes = -1; /* the page's size: checked positive only */
    } else {
        snprintf(w->path, sizeof(w->path), "/hello?i=%d", i);
        w->status = 200;
        w->bytes = 13;
    }
    if (i % 10 == 5) {
        snprintf(w->method, sizeof(w->method), "HEAD");
        if (w->status == 200)
            w->bytes = 0;
    }
    if (i % 7 == 1) {
        ref = "http://example.com/from?x=1";
        w->referer = ref;
    }
    if (i % 11 == 2) {
        ua = UA_QUOTE;
        w->ua = UA_QUOTE_LOGGED;
    } else if (i % 13 == 4) {
        ua = UA_HIGH;
        w->ua = UA_HIGH_LOGGED;
    } else if (i % 2 == 0) {
        ua = "test/1.0";
        w->ua = ua;
    }
    int k = snprintf(out, cap, "%s %s HTTP/1.1\r\nHost: x\r\n%s%s%s%s%s%s\r\n",
                     w->method, w->path, ref ? "Referer: " : "", ref ? ref : "",
                     ref ? "\r\n" : "", ua ? "User-Agent: " : "", ua ? ua : "",
                     ua ? "\r\n" : "");
    assert_true(k > 0 && (size_t)k < cap);
}

/* Parses one combined line strictly; returns the request index. */
static int check_combined(const char *line)
{
    char addr[64], user[8], when[40], method[8], path[64], proto[16];
    char rest[512];
    int status, n = 0, idx;
    long bytes;
    const char *p;
    want_line *w;

    /* 127.0.0.1 - - [05/Dec/2026:07:37:16 +0000] "GET /p HTTP/1.1" ... */
    assert_int_equal(sscanf(line,
                            "%63s - %7s [%39[^]]] \"%7s %63s %15[^\"]\" "
                            "%d %ld %n",
                            addr, user, when, method, path, proto, &status,
                            &bytes, &n),
                     8);
    assert_string_equal(addr, "127.0.0.1");
    assert_string_equal(user, "-");
    {
        int d, y, hh, mm, ss, off, k = 0;
        char mon[4];
        assert_int_equal(sscanf(when, "%2d/%3s/%4d:%2d:%2d:%2d %5d%n", &d, mon,
                                &y, &hh, &mm, &ss, &off, &k),
                         7);
        assert_int_equal((size_t)k, strlen(when));
        assert_non_null(strstr("JanFebMarAprMayJunJulAugSepOctNovDec", mon));
        assert_true(when[21] == '+' || when[21] == '-');
    }
    assert_int_equal(sscanf(path, "%*[^=]=%d", &idx), 1);
    assert_true(idx >= 0 && idx < NLOG);
    w = &wants[idx];
    assert_false(w->seen); /* one line per request */
    w->seen = true;
    assert_string_equal(method, w->method);
    assert_string_equal(path, w->path);
    assert_string_equal(proto, "HTTP/1.1");
    assert_int_equal(status, w->status);
    if (w->bytes >= 0)
        assert_int_equal(bytes, w->bytes);
    else if (strcmp(w->method, "HEAD") == 0)
        assert_int_equal(bytes, 0);
    else
        assert_true(bytes > 0);
    p = line + n;
    snprintf(rest, sizeof(rest), "\"%s\" \"%s\"", w->referer ? w->referer : "-",
             w->ua ? w->ua : "-");
    assert_string_equal(p, rest);
    return idx;
}

static void test_access_log_combined(void **state)
{
    char path[] = "/tmp/latch-alog-XXXXXX";
    int fd = mkstemp(path), i, c;
    latch_app *app = latch_app_new();
    srv s;
    char *text, *line, *save = NULL;
    size_t len;
    int lines = 0;

    (void)state;
    assert_true(fd >= 0);
    unlink(path);
    assert_non_null(app);
    latch_get(app, "/hello", hello, NULL);
    assert_int_equal(latch_app_set_access_log(app, fd, LATCH_LOG_COMBINED), 0);
    srv_start(&s, app, 2);
    for (c = 0; c < NLOG / PER_CONN; c++) {
        static char bufs[PER_CONN][512];
        const char *reqs[PER_CONN], *methods[PER_CONN];
        for (i = 0; i < PER_CONN; i++) {
            build_request(c * PER_CONN + i, bufs[i], sizeof(bufs[i]));
            reqs[i] = bufs[i];
            methods[i] = wants[c * PER_CONN + i].method;
        }
        pipelined(s.port, PER_CONN, reqs, methods);
    }
    srv_stop(&s);
    assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
    text = slurp_fd(fd, &len);
    close(fd);
    assert_true(len > 0 && text[len - 1] == '\n');
    for (line = strtok_r(text, "\n", &save); line != NULL;
         line = strtok_r(NULL, "\n", &save)) {
        check_combined(line);
        lines++;
    }
    assert_int_equal(lines, NLOG);
    for (i = 0; i < NLOG; i++)
        assert_true(wants[i].seen);
    free(text);
}

/* ---- the access log, JSON ------------------------------------------- */

static void test_access_log_json(void **state)
{
    char path[] = "/tmp/latch-alog-XXXXXX";
    int fd = mkstemp(path), i;
    latch_app *app = latch_app_new();
    srv s;
    char *text, *line, *save = NULL, reqs_buf[4][512];
    const char *reqs[4], *methods[4] = {"GET", "GET", "HEAD", "GET"};
    size_t len;
    int lines = 0;

    (void)state;
    assert_true(fd >= 0);
    unlink(path);
    latch_get(app, "/hello", hello, NULL);
    assert_int_equal(latch_app_set_access_log(app, fd, LATCH_LOG_JSON), 0);
    srv_start(&s, app, 1);
    snprintf(reqs_buf[0], 512,
             "GET /hello?a=%%22 HTTP/1.1\r\nHost: x\r\n"
             "User-Agent: bad \xff\xfe utf8 \"q\"\r\n\r\n");
    snprintf(reqs_buf[1], 512,
             "GET /nope HTTP/1.1\r\nHost: x\r\nReferer: http://r/\r\n\r\n");
    snprintf(reqs_buf[2], 512, "HEAD /hello HTTP/1.1\r\nHost: x\r\n\r\n");
    snprintf(reqs_buf[3], 512,
             "GET /hello HTTP/1.0\r\nUser-Agent: caf\xc3\xa9\r\n\r\n");
    for (i = 0; i < 4; i++)
        reqs[i] = reqs_buf[i];
    pipelined(s.port, 3, reqs, methods); /* 1.0 closes: on its own */
    pipelined(s.port, 1, reqs + 3, methods + 3);
    srv_stop(&s);
    assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
    text = slurp_fd(fd, &len);
    close(fd);
    for (line = strtok_r(text, "\n", &save); line != NULL;
         line = strtok_r(NULL, "\n", &save), lines++) {
        json_error_t err;
        json_t *o = json_loads(line, 0, &err);
        assert_non_null(o);
        assert_string_equal(
            json_string_value(json_object_get(o, "remote_addr")), "127.0.0.1");
        assert_true(json_is_integer(json_object_get(o, "request_id")));
        assert_true(json_is_real(json_object_get(o, "request_time")));
        assert_true(strlen(json_string_value(json_object_get(o, "time"))) ==
                    25); /* 2026-12-05T07:37:16+00:00 */
        switch (lines) {
        case 0:
            assert_string_equal(json_string_value(json_object_get(o, "url")),
                                "/hello?a=%22");
            assert_int_equal(json_integer_value(json_object_get(o, "status")),
                             200);
            assert_int_equal(
                json_integer_value(json_object_get(o, "body_bytes_sent")), 13);
            assert_string_equal(
                json_string_value(json_object_get(o, "user_agent")),
                "bad \xef\xbf\xbd\xef\xbf\xbd utf8 \"q\"");
            assert_true(json_is_null(json_object_get(o, "referer")));
            break;
        case 1:
            assert_int_equal(json_integer_value(json_object_get(o, "status")),
                             404);
            assert_string_equal(
                json_string_value(json_object_get(o, "referer")), "http://r/");
            break;
        case 2:
            assert_string_equal(json_string_value(json_object_get(o, "method")),
                                "HEAD");
            assert_int_equal(
                json_integer_value(json_object_get(o, "body_bytes_sent")), 0);
            break;
        case 3:
            assert_string_equal(
                json_string_value(json_object_get(o, "protocol")), "HTTP/1.0");
            assert_string_equal(
                json_string_value(json_object_get(o, "user_agent")),
                "caf\xc3\xa9");
            break;
        }
        json_decref(o);
    }
    assert_int_equal(lines, 4);
    free(text);
}

/* ---- metrics: the exposition parsed ---------------------------------- */

/* One scrape, checked against the text format 0.0.4 as it is parsed:
 * each sample's family was declared by a # TYPE line before it, names are
 * [a-zA-Z_:][a-zA-Z0-9_:]*, label values are quoted with \\ \" \n escapes
 * only, values are numbers. Returns the body (caller frees). */
typedef struct sample {
    char name[64];
    char labels[512]; /* as written, between the braces */
    double value;
} sample;

static int parse_exposition(const char *text, sample *out, int max)
{
    char types[32][64];
    int ntypes = 0, n = 0;
    const char *p = text;

    while (*p != '\0') {
        const char *e = strchr(p, '\n');
        char line[1024];
        size_t l;
        assert_non_null(e); /* every line ends with \n */
        l = (size_t)(e - p);
        assert_true(l < sizeof(line));
        memcpy(line, p, l);
        line[l] = '\0';
        p = e + 1;
        if (strncmp(line, "# TYPE ", 7) == 0) {
            char name[64], type[16];
            assert_int_equal(sscanf(line + 7, "%63s %15s", name, type), 2);
            assert_true(strcmp(type, "counter") == 0 ||
                        strcmp(type, "gauge") == 0 ||
                        strcmp(type, "histogram") == 0);
            assert_true(ntypes < 32);
            snprintf(types[ntypes++], 64, "%s", name);
            continue;
        }
        if (line[0] == '#') {
            assert_int_equal(strncmp(line, "# HELP ", 7), 0);
            continue;
        }
        {
            sample *s = &out[n];
            const char *q = line, *v;
            size_t nl = strspn(q, "abcdefghijklmnopqrstuvwxyz"
                                  "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_:");
            char *end;
            bool declared = false;
            assert_true(n < max);
            assert_true(nl > 0 && nl < sizeof(s->name));
            memcpy(s->name, q, nl);
            s->name[nl] = '\0';
            q += nl;
            s->labels[0] = '\0';
            if (*q == '{') {
                const char *b = ++q;
                while (*q != '}') {
                    /* name="value" */
                    q += strspn(q, "abcdefghijklmnopqrstuvwxyz_");
                    assert_int_equal(*q++, '=');
                    assert_int_equal(*q++, '"');
                    while (*q != '"') {
                        assert_true(*q != '\0');
                        if (*q == '\\') {
                            q++;
                            assert_non_null(strchr("\\\"n", *q));
                        }
                        q++;
                    }
                    q++;
                    if (*q == ',')
                        q++;
                    else
                        assert_int_equal(*q, '}');
                }
                assert_true((size_t)(q - b) < sizeof(s->labels));
                memcpy(s->labels, b, (size_t)(q - b));
                s->labels[q - b] = '\0';
                q++;
            }
            assert_int_equal(*q++, ' ');
            v = q;
            s->value = strtod(v, &end);
            assert_true(end != v && *end == '\0');
            for (int t = 0; t < ntypes && !declared; t++) {
                size_t tl = strlen(types[t]);
                declared = strncmp(s->name, types[t], tl) == 0 &&
                           (s->name[tl] == '\0' ||
                            strcmp(s->name + tl, "_bucket") == 0 ||
                            strcmp(s->name + tl, "_sum") == 0 ||
                            strcmp(s->name + tl, "_count") == 0);
            }
            assert_true(declared);
            n++;
        }
    }
    return n;
}

/* The value of name{labels} (labels exactly as written), or -1. */
static double value_of(const sample *s, int n, const char *name,
                       const char *labels)
{
    for (int i = 0; i < n; i++)
        if (strcmp(s[i].name, name) == 0 && strcmp(s[i].labels, labels) == 0)
            return s[i].value;
    return -1;
}

static char *scrape(int port, size_t *body_len, char *ctype, size_t ctcap)
{
    static const char req[] = "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n";
    size_t len;
    char *out = th_exchange(port, req, sizeof(req) - 1, 1, &len);
    th_resp *r = th_expect_responses(out, len, 1, NULL);
    char *body, *ct;

    assert_int_equal(r[0].status, 200);
    ct = strstr(r[0].head, "Content-Type: ");
    assert_non_null(ct);
    snprintf(ctype, ctcap, "%.*s", (int)strcspn(ct + 14, "\r\n"), ct + 14);
    body = strdup(r[0].body);
    *body_len = r[0].body_len;
    th_resp_free(r, 1);
    free(r);
    free(out);
    return body;
}

static void get_status(int port, const char *path, int status)
{
    char req[256];
    size_t len;
    char *out;
    th_resp *r;

    snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", path);
    out = th_exchange(port, req, strlen(req), 1, &len);
    r = th_expect_responses(out, len, 1, NULL);
    assert_int_equal(r[0].status, status);
    th_resp_free(r, 1);
    free(r);
    free(out);
}

/* promtool check metrics, when installed: exit status 0 on this text. */
static void promtool_check(const char *text, size_t len)
{
    int in[2], st;
    pid_t pid;

    if (access("/usr/bin/promtool", X_OK) != 0) {
        print_message("promtool not installed: the parser above checked it\n");
        return;
    }
    assert_int_equal(pipe(in), 0);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(in[0], 0);
        close(in[0]);
        close(in[1]);
        execl("/usr/bin/promtool", "promtool", "check", "metrics", (char *)0);
        _exit(127);
    }
    close(in[0]);
    assert_int_equal(write(in[1], text, len), (ssize_t)len);
    close(in[1]);
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
}

static void test_metrics(void **state)
{
    latch_app *app = latch_app_new();
    th_violations v;
    sample s[256];
    char ctype[128], site[300];
    size_t len;
    char *text;
    int n, i;
    srv sv;

    (void)state;
    atomic_store(&finished, 0);
    latch_use(app, NULL, count_finish, NULL);
    latch_get(app, "/hello", hello, NULL);
    latch_get(app, "/boom", boom, NULL);
    latch_get(app, "/twice", twice, NULL);
    latch_get(app, "/events", events, NULL);
    assert_int_equal(latch_use_metrics(app, "/metrics"), 0);
    th_record_violations(app, &v);
    srv_start(&sv, app, 2);
    for (i = 0; i < 7; i++)
        get_status(sv.port, "/hello", 200);
    for (i = 0; i < 3; i++)
        get_status(sv.port, "/nowhere", 404);
    for (i = 0; i < 2; i++)
        get_status(sv.port, "/boom", 500);
    get_status(sv.port, "/twice", 200);
    wait_finished(13);

    text = scrape(sv.port, &len, ctype, sizeof(ctype));
    assert_string_equal(ctype, "text/plain; version=0.0.4; charset=utf-8");
    n = parse_exposition(text, s, 256);
    assert_true(n > 0);
    /* The scrape itself is counted once it finished: not in its own. */
    assert_true(value_of(s, n, "latch_requests_total", "code=\"200\"") == 8);
    assert_true(value_of(s, n, "latch_requests_total", "code=\"404\"") == 3);
    assert_true(value_of(s, n, "latch_requests_total", "code=\"500\"") == 2);
    assert_true(value_of(s, n, "latch_request_duration_seconds_count", "") ==
                13);
    assert_true(value_of(s, n, "latch_request_duration_seconds_bucket",
                         "le=\"+Inf\"") == 13);
    /* Buckets never decrease. */
    {
        double prev = 0;
        for (i = 0; i < n; i++)
            if (strcmp(s[i].name, "latch_request_duration_seconds_bucket") ==
                0) {
                assert_true(s[i].value >= prev);
                prev = s[i].value;
            }
    }
    assert_true(value_of(s, n, "latch_request_duration_seconds_sum", "") > 0);
    assert_true(value_of(s, n, "latch_violations_total",
                         "code=\"ERR_HTTP_HEADERS_SENT\"") == 1);
    assert_true(value_of(s, n, "latch_violations_total",
                         "code=\"ERR_STREAM_WRITE_AFTER_END\"") == 0);
    snprintf(site, sizeof(site),
             "code=\"ERR_HTTP_HEADERS_SENT\",site=\"%s:%d\"", v.at_file[0],
             twice_line);
    assert_true(value_of(s, n, "latch_violation_sites_total", site) == 1);
    /* The report names the file relative to the source tree. */
    assert_string_equal(v.at_file[0], "tests/integration/test_ops.c");
    /* Body bytes: 8 x 13 (one of them "once" + nothing: 4) ... */
    assert_true(value_of(s, n, "latch_bytes_sent_total", "") > 7 * 13);
    /* 14 connections so far (th_exchange: one each), the scrape's
     * included; none refused. */
    assert_true(value_of(s, n, "latch_connections_accepted_total", "") == 14);
    assert_true(value_of(s, n, "latch_connections_dropped_total", "") == 0);
    assert_true(value_of(s, n, "latch_connections_shed_total", "") == 0);
    assert_true(value_of(s, n, "latch_accept_errors_total", "") == 0);
    /* The scrape's own connection is open. */
    assert_true(value_of(s, n, "latch_connections", "state=\"open\"") >= 1);
    assert_true(value_of(s, n, "latch_access_log_dropped_total", "") == 0);
    promtool_check(text, len);
    free(text);

    /* The first scrape is counted by a later one, once it finished (on
     * its worker, which may be behind the client). */
    for (i = 0; i < 100; i++) {
        double ok200;
        text = scrape(sv.port, &len, ctype, sizeof(ctype));
        n = parse_exposition(text, s, 256);
        ok200 = value_of(s, n, "latch_requests_total", "code=\"200\"");
        free(text);
        assert_true(ok200 >= 8 && ok200 <= 8 + i + 1);
        if (ok200 >= 9)
            break;
    }
    assert_true(i < 100);

    /* Two event streams on one channel. */
    {
        int fds[2];
        for (i = 0; i < 2; i++) {
            fds[i] = th_connect(sv.port);
            th_send_str(fds[i], "GET /events HTTP/1.1\r\nHost: x\r\n\r\n");
        }
        th_wait_subscribers(app, "news\"q", 2);
        text = scrape(sv.port, &len, ctype, sizeof(ctype));
        n = parse_exposition(text, s, 256);
        assert_true(value_of(s, n, "latch_sse_subscribers",
                             "channel=\"news\\\"q\"") == 2);
        promtool_check(text, len);
        free(text);
        for (i = 0; i < 2; i++)
            close(fds[i]);
    }
    srv_stop(&sv);
}

/* ---- a log that never drains, a log whose reader left ---------------- */

static double scrape_value(int port, const char *name)
{
    sample s[256];
    char ctype[128];
    size_t len;
    char *text = scrape(port, &len, ctype, sizeof(ctype));
    int n = parse_exposition(text, s, 256);
    double v = value_of(s, n, name, "");

    free(text);
    return v;
}

static void test_access_log_stuck_pipe(void **state)
{
    latch_app *app = latch_app_new();
    int p[2], i, c, lines = 0;
    char big[1100];
    srv sv;
    size_t len;
    char *text;
    const char *prev;
    int64_t t0;

    (void)state;
    assert_int_equal(pipe(p), 0);
    latch_get(app, "/hello", hello, NULL);
    assert_int_equal(latch_use_metrics(app, "/metrics"), 0);
    assert_int_equal(latch_app_set_access_log(app, p[1], LATCH_LOG_COMBINED),
                     0);
    srv_start(&sv, app, 1);
    /* ~1 KiB lines: the pipe (64 KiB) and the worker's buffer (64 KiB) fill
     * long before 400 requests are done. Nobody reads the pipe. */
    memset(big, 'a', sizeof(big));
    t0 = th_now_ms();
    for (c = 0; c < 400 / PER_CONN; c++) {
        static char bufs[PER_CONN][1400];
        const char *reqs[PER_CONN], *methods[PER_CONN];
        for (i = 0; i < PER_CONN; i++) {
            snprintf(bufs[i], sizeof(bufs[i]),
                     "GET /hello?%.*s HTTP/1.1\r\nHost: x\r\n\r\n", 1000, big);
            reqs[i] = bufs[i];
            methods[i] = "GET";
        }
        pipelined(sv.port, PER_CONN, reqs, methods);
    }
    print_message("400 requests answered in %lld ms with the log stuck\n",
                  (long long)(th_now_ms() - t0));
    assert_true(scrape_value(sv.port, "latch_access_log_dropped_total") > 0);
    srv_stop(&sv); /* the writer gives up on the pipe after a second */
    close(p[1]);
    text = slurp_fd(p[0], &len);
    close(p[0]);
    /* Only whole lines reached the pipe. */
    assert_true(len > 0 && text[len - 1] == '\n');
    for (prev = text; (prev = strchr(prev, '\n')) != NULL; prev++)
        lines++;
    assert_true(lines > 0 && lines < 400);
    free(text);
}

static void test_access_log_reader_gone(void **state)
{
    latch_app *app = latch_app_new();
    int p[2], i;
    srv sv;
    int64_t deadline;
    double dropped = 0;

    (void)state;
    assert_int_equal(pipe(p), 0);
    close(p[0]); /* a write now raises SIGPIPE: it must not reach us */
    latch_get(app, "/hello", hello, NULL);
    assert_int_equal(latch_use_metrics(app, "/metrics"), 0);
    assert_int_equal(latch_app_set_access_log(app, p[1], LATCH_LOG_JSON), 0);
    srv_start(&sv, app, 1);
    for (i = 0; i < 10; i++)
        get_status(sv.port, "/hello", 200);
    /* Each scrape is logged (and dropped) too: at least the 10. */
    deadline = th_now_ms() + 5000;
    while (th_now_ms() < deadline &&
           (dropped = scrape_value(sv.port, "latch_access_log_dropped_total")) <
               10) {
        struct timespec ts = {0, 20 * 1000000L};
        nanosleep(&ts, NULL); /* polls a counter, bounded by the deadline */
    }
    assert_true(dropped >= 10);
    srv_stop(&sv);
    close(p[1]);
}

static void test_access_log_arguments(void **state)
{
    latch_app *app = latch_app_new();
    int p[2];

    (void)state;
    assert_int_equal(pipe(p), 0);
    assert_int_equal(latch_app_set_access_log(app, p[1], 3),
                     LATCH_ERR_INVALID_ARG);
    assert_int_equal(latch_app_set_access_log(app, p[1], LATCH_LOG_JSON), 0);
    /* Replaced, then off, then on again: one writer at a time. */
    assert_int_equal(latch_app_set_access_log(app, p[1], LATCH_LOG_COMBINED),
                     0);
    assert_int_equal(latch_app_set_access_log(app, -1, 0), 0);
    assert_int_equal(latch_app_set_access_log(app, -1, 0), 0);
    assert_int_equal(latch_app_set_access_log(app, p[1], LATCH_LOG_COMBINED),
                     0);
    latch_app_free(app);
    /* latch never closed the caller's descriptor. */
    assert_int_equal(write(p[1], "x", 1), 1);
    close(p[0]);
    close(p[1]);
}

/* DESIGN.md: "format LATCH_LOG_COMBINED (1 ...) or LATCH_LOG_JSON (2 ...);
 * -1 turns it off": a format of -1 with an open descriptor turns the log
 * off (it was refused as an unknown format), and nothing is written. */
static void test_access_log_format_off(void **state)
{
    char path[] = "/tmp/latch-alog-XXXXXX";
    int fd = mkstemp(path);
    latch_app *app = latch_app_new();
    srv s;
    struct stat st;

    (void)state;
    assert_true(fd >= 0);
    unlink(path);
    assert_non_null(app);
    latch_get(app, "/hello", hello, NULL);
    assert_int_equal(latch_app_set_access_log(app, fd, LATCH_LOG_COMBINED), 0);
    assert_int_equal(latch_app_set_access_log(app, fd, -1), 0);
    srv_start(&s, app, 1);
    get_status(s.port, "/hello", 200);
    get_status(s.port, "/hello", 200);
    srv_stop(&s); /* the writer, were it on, has written all by now */
    assert_int_equal(fstat(fd, &st), 0);
    assert_int_equal(st.st_size, 0);
    close(fd);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_access_log_combined),
        cmocka_unit_test(test_access_log_json),
        cmocka_unit_test(test_metrics),
        cmocka_unit_test(test_access_log_stuck_pipe),
        cmocka_unit_test(test_access_log_reader_gone),
        cmocka_unit_test(test_access_log_arguments),
        cmocka_unit_test(test_access_log_format_off),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
