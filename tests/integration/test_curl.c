/*
 * test_curl.c - ordinary traffic from real clients: libcurl's easy API
 * against an in-process server (GET, HEAD with the right Content-Length and
 * no body, POST bodies with and without Expect: 100-continue, keep-alive
 * reuse), and the curl command line tool against the `latch` demo binary
 * (env LATCH_BIN) started on a kernel-chosen port.
 *
 * Not here: exact-byte protocol checks (test_framing.c, test_conn.c).
 */
#include "harness.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

/* ------------------------------------------------------------------ */
/* The in-process server                                                */
/* ------------------------------------------------------------------ */

static int hello(latch_req *req, latch_res *res, void *data)
{
    (void)req;
    (void)data;
    latch_res_set_header(res, "Content-Type", "text/plain; charset=utf-8");
    latch_res_send(res, "Hello, World!", 13);
    return LATCH_DONE;
}

static int echo(latch_req *req, latch_res *res, void *data)
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

static th_server srv;

static int setup(void **state)
{
    latch_app *app = latch_app_new();

    (void)state;
    assert_non_null(app);
    assert_int_equal(latch_get(app, "/hello", hello, NULL), 0);
    assert_int_equal(latch_post(app, "/echo", echo, NULL), 0);
    th_server_start(&srv, app);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    assert_int_equal(th_server_stop(&srv), 0);
    return 0;
}

/* ------------------------------------------------------------------ */
/* libcurl helpers                                                      */
/* ------------------------------------------------------------------ */

typedef struct sink {
    char *data;
    size_t len;
} sink;

static size_t on_data(char *p, size_t size, size_t n, void *arg)
{
    sink *s = arg;
    size_t add = size * n;
    char *d = realloc(s->data, s->len + add + 1);

    if (d == NULL)
        return 0;
    memcpy(d + s->len, p, add);
    s->data = d;
    s->len += add;
    s->data[s->len] = '\0';
    return add;
}

static void sink_reset(sink *s)
{
    free(s->data);
    s->data = NULL;
    s->len = 0;
}

/* An easy handle with body and header sinks and a hard time limit. */
static CURL *easy(sink *body, sink *head)
{
    CURL *c = curl_easy_init();

    assert_non_null(c);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, body);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_data);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, head);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 10000L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    return c;
}

static void set_url(CURL *c, const char *path)
{
    char url[256];

    snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", srv.port, path);
    curl_easy_setopt(c, CURLOPT_URL, url);
}

static void perform_ok(CURL *c, long want_status)
{
    long code = 0, version = 0;
    CURLcode rc = curl_easy_perform(c);

    if (rc != CURLE_OK)
        fail_msg("curl: %s", curl_easy_strerror(rc));
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
    assert_int_equal(code, want_status);
    curl_easy_getinfo(c, CURLINFO_HTTP_VERSION, &version);
    assert_int_equal(version, CURL_HTTP_VERSION_1_1);
}

static long num_connects(CURL *c)
{
    long n = -1;

    curl_easy_getinfo(c, CURLINFO_NUM_CONNECTS, &n);
    return n;
}

/* ------------------------------------------------------------------ */
/* libcurl tests                                                        */
/* ------------------------------------------------------------------ */

static void test_curl_get(void **state)
{
    sink body = {0}, head = {0};
    CURL *c = easy(&body, &head);
    char *ct = NULL;

    (void)state;
    set_url(c, "/hello");
    perform_ok(c, 200);
    assert_string_equal(body.data, "Hello, World!");
    curl_easy_getinfo(c, CURLINFO_CONTENT_TYPE, &ct);
    assert_non_null(ct);
    assert_string_equal(ct, "text/plain; charset=utf-8");
    assert_non_null(strstr(head.data, "\r\nContent-Length: 13\r\n"));
    assert_non_null(strstr(head.data, "\r\nDate: "));
    curl_easy_cleanup(c);
    sink_reset(&body);
    sink_reset(&head);
}

/* HEAD: the headers of the GET (Content-Length 13), no body; the
 * connection is then reused for a GET that gets its whole body. */
static void test_curl_head(void **state)
{
    sink body = {0}, head = {0};
    CURL *c = easy(&body, &head);
    curl_off_t cl = -1;

    (void)state;
    set_url(c, "/hello");
    curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    perform_ok(c, 200);
    assert_int_equal(body.len, 0);
    curl_easy_getinfo(c, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &cl);
    assert_int_equal(cl, 13);
    assert_non_null(strstr(head.data, "\r\nContent-Length: 13\r\n"));
    assert_non_null(strstr(head.data, "\r\nContent-Type: text/plain; "
                                      "charset=utf-8\r\n"));
    curl_easy_setopt(c, CURLOPT_NOBODY, 0L);
    curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
    perform_ok(c, 200);
    assert_string_equal(body.data, "Hello, World!");
    assert_int_equal(num_connects(c), 0);
    curl_easy_cleanup(c);
    sink_reset(&body);
    sink_reset(&head);
}

/* th_until for a HEAD response followed by a GET response. */
static bool until_head_get(const char *buf, size_t len, void *methods)
{
    th_resp r[2];
    const char *err;
    int got = th_wire_parse(buf, len, methods, r, 2, false, &err);

    if (got > 0)
        th_resp_free(r, got);
    return got == 2;
}

/* The same on the wire: the HEAD response's bytes end at its blank line,
 * the GET pipelined after it is answered right behind. */
static void test_head_exact_bytes(void **state)
{
    static const char req[] = "HEAD /hello HTTP/1.1\r\nHost: x\r\n\r\n"
                              "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n";
    static const char want[] = "HTTP/1.1 200 OK\r\n"
                               "Content-Type: text/plain; charset=utf-8\r\n"
                               "Content-Length: 13\r\n"
                               "Date: <d>\r\n"
                               "Connection: keep-alive\r\n"
                               "Keep-Alive: timeout=5\r\n"
                               "\r\n"
                               "HTTP/1.1 200 OK\r\n"
                               "Content-Type: text/plain; charset=utf-8\r\n"
                               "Content-Length: 13\r\n"
                               "Date: <d>\r\n"
                               "Connection: keep-alive\r\n"
                               "Keep-Alive: timeout=5\r\n"
                               "\r\n"
                               "Hello, World!";
    static const char *methods[] = {"HEAD", "GET"};
    int fd = th_connect(srv.port);
    size_t len;
    char *out, *norm;
    th_resp *r;

    (void)state;
    th_send(fd, req, sizeof(req) - 1);
    out = th_read(fd, &len, 5000, until_head_get, methods);
    r = th_expect_responses(out, len, 2, methods);
    assert_int_equal(r[0].body_len, 0);
    assert_string_equal(r[1].body, "Hello, World!");
    norm = th_normalize(out, len);
    assert_string_equal(norm, want);
    th_resp_free(r, 2);
    free(r);
    free(norm);
    free(out);
    close(fd);
}

static void test_curl_post(void **state)
{
    sink body = {0}, head = {0};
    CURL *c = easy(&body, &head);
    char *ct = NULL;

    (void)state;
    set_url(c, "/echo");
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, "name=latch&x=1");
    perform_ok(c, 200);
    assert_string_equal(body.data, "name=latch&x=1");
    curl_easy_getinfo(c, CURLINFO_CONTENT_TYPE, &ct);
    assert_non_null(ct);
    assert_string_equal(ct, "application/x-www-form-urlencoded");
    curl_easy_cleanup(c);
    sink_reset(&body);
    sink_reset(&head);
}

/* A large body with Expect: 100-continue: curl waits up to 20 s for the
 * 100 before it sends the body, so finishing well before that proves the
 * server said 100 Continue. */
static void test_curl_post_large_expect_continue(void **state)
{
    enum { N = 300000 };
    sink body = {0}, head = {0};
    CURL *c = easy(&body, &head);
    struct curl_slist *hdrs = NULL;
    char *data = malloc(N);
    int64_t t0;
    size_t i;

    (void)state;
    assert_non_null(data);
    for (i = 0; i < N; i++)
        data[i] = (char)('a' + (i * 7) % 26);
    hdrs = curl_slist_append(hdrs, "Expect: 100-continue");
    hdrs = curl_slist_append(hdrs, "Content-Type: application/x-test");
    set_url(c, "/echo");
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, data);
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)N);
    curl_easy_setopt(c, CURLOPT_EXPECT_100_TIMEOUT_MS, 20000L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 30000L);
    t0 = th_now_ms();
    perform_ok(c, 200);
    assert_true(th_now_ms() - t0 < 10000);
    assert_non_null(strstr(head.data, "HTTP/1.1 100 Continue\r\n"));
    assert_int_equal(body.len, N);
    assert_memory_equal(body.data, data, N);
    curl_slist_free_all(hdrs);
    curl_easy_cleanup(c);
    sink_reset(&body);
    sink_reset(&head);
    free(data);
}

/* One easy handle, several requests: one connection. */
static void test_curl_keep_alive_reuse(void **state)
{
    sink body = {0}, head = {0};
    CURL *c = easy(&body, &head);
    long port1 = 0, port2 = 0;
    int i;

    (void)state;
    set_url(c, "/hello");
    perform_ok(c, 200);
    assert_int_equal(num_connects(c), 1);
    curl_easy_getinfo(c, CURLINFO_LOCAL_PORT, &port1);
    for (i = 0; i < 3; i++) {
        sink_reset(&body);
        perform_ok(c, 200);
        assert_string_equal(body.data, "Hello, World!");
        assert_int_equal(num_connects(c), 0);
        curl_easy_getinfo(c, CURLINFO_LOCAL_PORT, &port2);
        assert_int_equal(port1, port2);
    }
    /* A POST between GETs keeps the connection too. */
    set_url(c, "/echo");
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, "x");
    sink_reset(&body);
    perform_ok(c, 200);
    assert_string_equal(body.data, "x");
    assert_int_equal(num_connects(c), 0);
    set_url(c, "/nope");
    curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
    sink_reset(&body);
    perform_ok(c, 404);
    /* The final handler's page, as Express's: the method and the path. */
    assert_non_null(strstr(body.data, "<pre>Cannot GET /nope</pre>"));
    assert_int_equal(num_connects(c), 0);
    curl_easy_cleanup(c);
    sink_reset(&body);
    sink_reset(&head);
}

/* ------------------------------------------------------------------ */
/* The curl tool against the demo binary                                */
/* ------------------------------------------------------------------ */

/* Reads from fd until EOF or the deadline; returns the bytes (malloc'd,
 * NUL-terminated) and sets *eof. */
static char *read_all(int fd, int64_t deadline, size_t *len, bool *eof)
{
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap + 1);

    assert_non_null(buf);
    *eof = false;
    for (;;) {
        struct pollfd p = {fd, POLLIN, 0};
        int64_t left = deadline - th_now_ms();
        ssize_t r;
        if (left <= 0)
            break;
        if (poll(&p, 1, (int)left) <= 0)
            continue;
        if (n == cap) {
            cap *= 2;
            buf = realloc(buf, cap + 1);
            assert_non_null(buf);
        }
        r = read(fd, buf + n, cap - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            *eof = true;
            break;
        }
        n += (size_t)r;
    }
    buf[n] = '\0';
    *len = n;
    return buf;
}

/* Runs argv with stdout captured, at most 15 s. Returns its stdout;
 * asserts it exited 0. */
static char *run(char *const argv[])
{
    int p[2], st = 0;
    pid_t pid;
    size_t len;
    bool eof;
    char *out;

    assert_int_equal(pipe2(p, O_CLOEXEC), 0);
    fflush(NULL);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(p[1], 1);
        execvp(argv[0], argv);
        _exit(127);
    }
    close(p[1]);
    out = read_all(p[0], th_now_ms() + 15000, &len, &eof);
    close(p[0]);
    if (!eof)
        kill(pid, SIGKILL);
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(eof);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        fail_msg("%s exited with status %d", argv[0], st);
    return out;
}

static void test_curl_tool_against_demo(void **state)
{
    static const char prefix[] = "latch: listening on http://127.0.0.1:";
    const char *bin = getenv("LATCH_BIN");
    char line[256], url[256], *out, *nl;
    int p[2], port = 0, st = 0;
    size_t n = 0;
    pid_t pid;
    bool eof;
    int64_t deadline;

    (void)state;
    if (bin == NULL)
        fail_msg("LATCH_BIN is not set (ctest sets it)");
    assert_int_equal(pipe2(p, O_CLOEXEC), 0);
    fflush(NULL);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(p[1], 1);
        execl(bin, bin, "-h", "127.0.0.1", "-p", "0", "-w", "1", (char *)NULL);
        _exit(127);
    }
    close(p[1]);
    /* The first line says where it listens. */
    deadline = th_now_ms() + 10000;
    while (n < sizeof(line) - 1 && memchr(line, '\n', n) == NULL) {
        struct pollfd pf = {p[0], POLLIN, 0};
        int64_t left = deadline - th_now_ms();
        ssize_t r;
        if (left <= 0)
            break;
        if (poll(&pf, 1, (int)left) <= 0)
            continue;
        r = read(p[0], line + n, sizeof(line) - 1 - n);
        if (r <= 0)
            break;
        n += (size_t)r;
    }
    line[n] = '\0';
    nl = strchr(line, '\n');
    if (nl == NULL || strncmp(line, prefix, sizeof(prefix) - 1) != 0) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        fail_msg("demo did not announce its port: \"%s\"", line);
    }
    port = atoi(line + sizeof(prefix) - 1);
    assert_true(port > 0 && port < 65536);
    assert_string_equal(strchr(line + sizeof(prefix) - 1, '/'), "/\n");

    snprintf(url, sizeof(url), "http://127.0.0.1:%d/", port);
    {
        char *argv[] = {"curl", "-sS", "--max-time", "10", url, NULL};
        out = run(argv);
        assert_true(strncmp(out, "<!doctype html>\n", 16) == 0);
        assert_non_null(strstr(out, "<h1>latch</h1>"));
        assert_non_null(strstr(out, "POST /echo"));
        assert_string_equal(out + strlen(out) - 15, "</body></html>\n");
        free(out);
    }
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/hello", port);
    {
        char *argv[] = {"curl", "-sS", "--max-time", "10", url, NULL};
        out = run(argv);
        assert_string_equal(out, "Hello, World!");
        free(out);
    }
    {
        /* -i: the status line and headers as curl received them. */
        char *argv[] = {"curl", "-sS", "-i", "--max-time", "10", url, NULL};
        out = run(argv);
        assert_true(strncmp(out, "HTTP/1.1 200 OK\r\n", 17) == 0);
        assert_non_null(
            strstr(out, "\r\nContent-Type: text/plain; charset=utf-8\r\n"));
        assert_non_null(strstr(out, "\r\nContent-Length: 13\r\n"));
        assert_non_null(strstr(out, "\r\n\r\nHello, World!"));
        free(out);
    }
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/json", port);
    {
        char *argv[] = {"curl", "-sS", "--max-time",
                        "10",   "-w",  "|%{content_type}",
                        url,    NULL};
        out = run(argv);
        assert_string_equal(out, "{\"message\":\"Hello, World!\"}"
                                 "|application/json; charset=utf-8");
        free(out);
    }
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/echo", port);
    {
        char *argv[] = {"curl",       "-sS",
                        "--max-time", "10",
                        "-H",         "Content-Type: text/plain",
                        "-d",         "ping pong",
                        "-w",         "|%{http_code}|%{content_type}",
                        url,          NULL};
        out = run(argv);
        assert_string_equal(out, "ping pong|200|text/plain");
        free(out);
    }
    {
        /* Two URLs in one run: the second reuses the connection. */
        char url2[256];
        snprintf(url2, sizeof(url2), "http://127.0.0.1:%d/hello", port);
        char *argv[] = {"curl", "-sS", "--max-time",
                        "10",   "-w",  "|%{num_connects}\n",
                        url2,   url2,  NULL};
        out = run(argv);
        assert_string_equal(out, "Hello, World!|1\nHello, World!|0\n");
        free(out);
    }
    /* SIGTERM: the demo drains and exits 0. */
    assert_int_equal(kill(pid, SIGTERM), 0);
    free(read_all(p[0], th_now_ms() + 10000, &n, &eof));
    close(p[0]);
    if (!eof)
        kill(pid, SIGKILL);
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(eof);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_curl_get),
        cmocka_unit_test(test_curl_head),
        cmocka_unit_test(test_head_exact_bytes),
        cmocka_unit_test(test_curl_post),
        cmocka_unit_test(test_curl_post_large_expect_continue),
        cmocka_unit_test(test_curl_keep_alive_reuse),
        cmocka_unit_test(test_curl_tool_against_demo),
    };
    int r;

    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return 1;
    r = cmocka_run_group_tests(tests, setup, teardown);
    curl_global_cleanup();
    return r;
}
