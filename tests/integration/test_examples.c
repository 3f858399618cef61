/*
 * test_examples.c - runs the programs of examples/ as a user would: each
 * one is started (fork/exec of $LATCH_EXAMPLES_DIR/<name> -p 0), its port
 * read from the "listening on http://127.0.0.1:PORT/" line on its stdout,
 * then raw requests go to it and every reply is checked byte for byte by
 * the wire checker. Finally SIGTERM: the program must drain and exit 0,
 * having written nothing on stderr (where latch's default hook would have
 * printed a violation report).
 *
 * Each program's documented behaviour is what is checked: slow_backend
 * answers JSON when its backend is fast, 504 when the deadline wins, and
 * drops the late result without a second response; fanout answers the
 * three results together, one 502 naming the first backend that failed,
 * or the deadline's 504; users_api answers each route, each validation
 * failure and each auth failure with its exact JSON, lets the error
 * handler answer (or cut, once the headers went out), and its async rate
 * limiter answers 429 or continues, once, and stays silent when the
 * request timed out first. The ports of Express's examples
 * (examples/express_ports/) answer as their originals do, and their
 * completions stay silent when the client left or the timeout answered;
 * fetch_timeout's upstream call (to slow_backend) is aborted by the
 * deadline and by the client leaving, and the upstream sees it. gateway
 * serves its files, keeps a request without the token from its backend
 * (a scripted thread that counts what it receives), proxies one with it,
 * and answers its own 502 once the backend is down.
 *
 * Waits are for events (a line on stdout, a response, EOF), each with a
 * deadline; a program that does not exit is killed and the test fails.
 */
#include "harness.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

/* ------------------------------------------------------------------ */
/* A running example                                                    */
/* ------------------------------------------------------------------ */

#define OUT_CAP 65536

typedef struct proc {
    pid_t pid;
    int out_fd, err_fd; /* -1 once at EOF */
    char out[OUT_CAP];
    size_t out_len;
    char err[OUT_CAP];
    size_t err_len;
    int port;
} proc;

static proc P;

/* Reads what is available on one pipe into buf; closes it at EOF. */
static void drain_pipe(int *fd, char *buf, size_t *len)
{
    char tmp[4096];
    ssize_t n = read(*fd, tmp, sizeof(tmp));

    if (n < 0 && (errno == EINTR || errno == EAGAIN))
        return;
    if (n <= 0) {
        close(*fd);
        *fd = -1;
        return;
    }
    if ((size_t)n > OUT_CAP - 1 - *len)
        n = (ssize_t)(OUT_CAP - 1 - *len); /* keep the start: enough */
    memcpy(buf + *len, tmp, (size_t)n);
    *len += (size_t)n;
    buf[*len] = '\0';
}

/* Collects the program's output until `needle` appears on stdout
 * (needle NULL: until both pipes are at EOF) or timeout_ms passed. */
static bool proc_wait(proc *p, const char *needle, int timeout_ms)
{
    int64_t deadline = th_now_ms() + timeout_ms;

    for (;;) {
        struct pollfd fds[2];
        int n = 0;
        int64_t left;

        if (needle != NULL && strstr(p->out, needle) != NULL)
            return true;
        if (needle == NULL && p->out_fd < 0 && p->err_fd < 0)
            return true;
        left = deadline - th_now_ms();
        if (left <= 0 || (p->out_fd < 0 && p->err_fd < 0))
            return false;
        if (p->out_fd >= 0)
            fds[n++] = (struct pollfd){p->out_fd, POLLIN, 0};
        if (p->err_fd >= 0)
            fds[n++] = (struct pollfd){p->err_fd, POLLIN, 0};
        if (poll(fds, (nfds_t)n, (int)left) <= 0)
            continue;
        while (n-- > 0) {
            if (fds[n].revents == 0)
                continue;
            if (fds[n].fd == p->out_fd)
                drain_pipe(&p->out_fd, p->out, &p->out_len);
            else
                drain_pipe(&p->err_fd, p->err, &p->err_len);
        }
    }
}

/* Starts the program at `path` with args (NULL-terminated, after
 * argv[0]), its stdout and stderr on pipes of p. */
static void proc_spawn(proc *p, const char *path, const char *const *args)
{
    char *argv[16];
    int out_p[2], err_p[2], i;

    memset(p, 0, sizeof(*p));
    argv[0] = (char *)path;
    for (i = 0; args[i] != NULL && i < 14; i++)
        argv[i + 1] = (char *)args[i];
    argv[i + 1] = NULL;
    assert_int_equal(pipe2(out_p, O_CLOEXEC), 0);
    assert_int_equal(pipe2(err_p, O_CLOEXEC), 0);
    fflush(NULL);
    p->pid = fork();
    assert_true(p->pid >= 0);
    if (p->pid == 0) {
        dup2(out_p[1], 1);
        dup2(err_p[1], 2);
        execv(path, argv);
        _exit(127);
    }
    close(out_p[1]);
    close(err_p[1]);
    p->out_fd = out_p[0];
    p->err_fd = err_p[0];
}

/* Starts $LATCH_EXAMPLES_DIR/name (or the program at `name` when it is a
 * path) with args and waits for its "listening" line. */
static void proc_start(proc *p, const char *name, const char *const *args)
{
    static const char mark[] = "listening on http://127.0.0.1:";
    const char *dir = getenv("LATCH_EXAMPLES_DIR");
    char path[1024];
    const char *at;

    if (name[0] == '/') {
        snprintf(path, sizeof(path), "%s", name); /* the latch command */
    } else if (dir == NULL) {
        print_message("LATCH_EXAMPLES_DIR is not set: run through ctest\n");
        skip();
    } else {
        snprintf(path, sizeof(path), "%s/%s", dir, name);
    }
    if (access(path, X_OK) != 0)
        fail_msg("%s: not built (%s)", path, strerror(errno));
    proc_spawn(p, path, args);
    if (!proc_wait(p, mark, 10000))
        fail_msg("%s did not say it listens; stdout:\n%s\nstderr:\n%s", name,
                 p->out, p->err);
    at = strstr(p->out, mark) + sizeof(mark) - 1;
    p->port = atoi(at);
    assert_true(p->port > 0 && p->port < 65536);
    assert_non_null(strstr(at, "/\n"));
}

/* SIGTERM, then waits (at most timeout_ms) for the program to exit and
 * returns its wait status; kills it and fails when it does not exit. */
static int proc_term(proc *p, int timeout_ms)
{
    int st = 0;

    assert_int_equal(kill(p->pid, SIGTERM), 0);
    if (!proc_wait(p, NULL, timeout_ms))
        fail_msg("the program did not exit within %d ms after SIGTERM",
                 timeout_ms); /* teardown kills it */
    assert_int_equal(waitpid(p->pid, &st, 0), p->pid);
    p->pid = 0;
    return st;
}

static void expect_clean_exit(proc *p)
{
    int st = proc_term(p, 15000);

    if (!WIFEXITED(st))
        fail_msg("the program died (signal %d)",
                 WIFSIGNALED(st) ? WTERMSIG(st) : -1);
    assert_int_equal(WEXITSTATUS(st), 0);
    /* No violation report, no sanitizer report, nothing. */
    if (p->err_len != 0)
        fail_msg("stderr was not empty:\n%s", p->err);
}

static int teardown(void **state)
{
    (void)state;
    if (P.pid > 0) {
        kill(P.pid, SIGKILL);
        waitpid(P.pid, NULL, 0);
        P.pid = 0;
    }
    if (P.out_fd > 0)
        close(P.out_fd);
    if (P.err_fd > 0)
        close(P.err_fd);
    P.out_fd = P.err_fd = -1;
    return 0;
}

/* ------------------------------------------------------------------ */
/* Client helpers                                                       */
/* ------------------------------------------------------------------ */

static void get_on(int fd, const char *target)
{
    char req[256];
    int n = snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: x\r\n\r\n",
                     target);

    assert_true(n > 0 && (size_t)n < sizeof(req));
    th_send(fd, req, (size_t)n);
}

/* Reads one response (within 10 s) and asserts its exact bytes, Date as
 * <d>, and that the connection stays open. */
static void expect_one(int fd, const char *want)
{
    int one = 1;
    size_t len;
    char *out = th_read(fd, &len, 10000, th_until_responses, &one);
    char *norm = th_normalize(out, len);
    th_resp *r = th_expect_responses(out, len, 1, NULL);

    assert_int_equal(th_last_end(), TH_OPEN);
    assert_string_equal(norm, want);
    th_resp_free(r, 1);
    free(r);
    free(norm);
    free(out);
}

/* The bytes of a JSON response on a keep-alive connection, with `headers`
 * ("Name: value\r\n" lines, or "") between the status line and the
 * Content-Type. */
static void expect_json_with(int fd, int status, const char *reason,
                             const char *headers, const char *body)
{
    char want[4096];
    int n = snprintf(want, sizeof(want),
                     "HTTP/1.1 %d %s\r\n"
                     "%s"
                     "Content-Type: application/json; charset=utf-8\r\n"
                     "Content-Length: %zu\r\n"
                     "Date: <d>\r\n"
                     "Connection: keep-alive\r\n"
                     "Keep-Alive: timeout=5\r\n"
                     "\r\n"
                     "%s",
                     status, reason, headers, strlen(body), body);

    assert_true(n > 0 && (size_t)n < sizeof(want));
    expect_one(fd, want);
}

/* The bytes of a JSON response on a keep-alive connection. */
static void expect_json(int fd, int status, const char *reason,
                        const char *body)
{
    expect_json_with(fd, status, reason, "", body);
}

/* The final handler's answer to a request timeout configured with 504
 * (no error handler answers it). */
static const char gateway_timeout[] =
    "HTTP/1.1 504 Gateway Timeout\r\n"
    "Content-Security-Policy: default-src 'none'\r\n"
    "X-Content-Type-Options: nosniff\r\n"
    "Content-Type: text/html; charset=utf-8\r\n"
    "Content-Length: 142\r\n"
    "Date: <d>\r\n"
    "Connection: keep-alive\r\n"
    "Keep-Alive: timeout=5\r\n"
    "\r\n"
    "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
    "<title>Error</title>\n</head>\n<body>\n<pre>Gateway Timeout</pre>\n"
    "</body>\n</html>\n";

static int count_substr(const char *s, const char *needle)
{
    int n = 0;

    while ((s = strstr(s, needle)) != NULL) {
        n++;
        s += strlen(needle);
    }
    return n;
}

/* The status of the one response to `target` on a fresh connection. */
static int status_of(int port, const char *target)
{
    char req[256];
    size_t len;
    char *out;
    th_resp *r;
    int n = snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: x\r\n\r\n",
                     target),
        st;

    assert_true(n > 0 && (size_t)n < sizeof(req));
    out = th_exchange(port, req, (size_t)n, 1, &len);
    r = th_expect_responses(out, len, 1, NULL);
    st = r[0].status;
    th_resp_free(r, 1);
    free(r);
    free(out);
    return st;
}

/* ------------------------------------------------------------------ */
/* slow_backend                                                         */
/* ------------------------------------------------------------------ */

static void test_slow_backend(void **state)
{
    static const char *const args[] = {"-p", "0", "-t", "1000", NULL};
    static const char dropped_timeout[] =
        ": request timeout, backend result dropped\n";
    int fd;

    (void)state;
    proc_start(&P, "slow_backend", args);

    /* A fast backend: its JSON. */
    fd = th_connect(P.port);
    get_on(fd, "/data?ms=10");
    expect_json(fd, 200, "OK",
                "{\"backend_ms\":10,\"rows\":[\"alpha\",\"beta\"]}");

    /* A slow one: the deadline's 504, then the late result is dropped
     * (logged), and the next answer on the same connection is exactly
     * the next response: nothing was written in between. */
    get_on(fd, "/data?ms=5000");
    expect_one(fd, gateway_timeout);
    if (!proc_wait(&P, dropped_timeout, 10000))
        fail_msg("the late result was not dropped; stdout:\n%s", P.out);
    get_on(fd, "/data?ms=0");
    expect_json(fd, 200, "OK",
                "{\"backend_ms\":0,\"rows\":[\"alpha\",\"beta\"]}");
    close(fd);

    /* A bad parameter is refused before any backend call. */
    assert_int_equal(status_of(P.port, "/data?ms=abc"), 400);

    expect_clean_exit(&P);
    assert_int_equal(count_substr(P.out, "backend result dropped"), 1);
}

/* A client that leaves while the backend works (deadline 10 s): the call
 * is cancelled and its result dropped. Two pipelined requests: once the
 * first is answered, the second has reached its handler (both were
 * parsed from one read), so the reset comes during its backend call. */
static void test_slow_backend_client_leaves(void **state)
{
    static const char *const args[] = {"-p", "0", "-t", "10000", NULL};
    static const char dropped_gone[] =
        ": client disconnect, backend result dropped\n";
    int fd, one = 1;
    size_t len;
    char *out;
    th_resp *r;

    (void)state;
    proc_start(&P, "slow_backend", args);
    fd = th_connect(P.port);
    th_send_str(fd, "GET /data?ms=0 HTTP/1.1\r\nHost: x\r\n\r\n"
                    "GET /data?ms=5000 HTTP/1.1\r\nHost: x\r\n\r\n");
    out = th_read(fd, &len, 10000, th_until_responses, &one);
    r = th_expect_responses(out, len, 1, NULL);
    assert_int_equal(r[0].status, 200);
    assert_string_equal(r[0].body,
                        "{\"backend_ms\":0,\"rows\":[\"alpha\",\"beta\"]}");
    th_resp_free(r, 1);
    free(r);
    free(out);
    th_close_reset(fd);
    if (!proc_wait(&P, dropped_gone, 10000))
        fail_msg("the disconnect did not cancel the call; stdout:\n%s", P.out);
    /* The call gave up at once: SIGTERM finds nothing in flight. */
    expect_clean_exit(&P);
    assert_int_equal(count_substr(P.out, "backend result dropped"), 1);
}

/* ------------------------------------------------------------------ */
/* fanout                                                               */
/* ------------------------------------------------------------------ */

static void test_fanout(void **state)
{
    /* A 1 s deadline: the answers below that must beat it take at most
     * 90 ms of backend time, and the pool and the loop of a sanitizer
     * build on a loaded machine add their delays to that. */
    static const char *const args[] = {"-p", "0", "-t", "1000", NULL};
    static const char all[] = "{\"users\":[{\"id\":1,\"name\":\"ada\"}],"
                              "\"orders\":[{\"id\":7,\"total\":42}],"
                              "\"stock\":{\"widgets\":3}}";
    int fd;

    (void)state;
    proc_start(&P, "fanout", args);
    fd = th_connect(P.port);

    /* All three answer (20, 40, 60 ms): one object. */
    get_on(fd, "/fanout");
    expect_json(fd, 200, "OK", all);

    /* users fails first (20 ms): one 502 at once. orders and stock answer
     * later (40, 60 ms) and are ignored: the next request takes 90 ms,
     * so their results are in before its answer, and nothing else came
     * on the wire. */
    get_on(fd, "/fanout?fail=users");
    expect_json(fd, 502, "Bad Gateway", "{\"error\":\"users unavailable\"}");
    get_on(fd, "/fanout?ms=30");
    expect_json(fd, 200, "OK", all);

    /* stock fails last: still one 502, naming it. */
    get_on(fd, "/fanout?fail=stock&ms=5");
    expect_json(fd, 502, "Bad Gateway", "{\"error\":\"stock unavailable\"}");

    /* Slower than the 1 s deadline (the join would settle at 2.1 s):
     * latch's 504; the join's completion learns it was cancelled and does
     * not answer. */
    get_on(fd, "/fanout?ms=700");
    expect_one(fd, gateway_timeout);
    if (!proc_wait(&P, "cancelled before the backends answered\n", 10000))
        fail_msg("the join was not cancelled; stdout:\n%s", P.out);
    get_on(fd, "/fanout?ms=1");
    expect_json(fd, 200, "OK", all);
    close(fd);

    assert_int_equal(status_of(P.port, "/fanout?fail=nobody"), 400);

    /* The cancelled fan-out's backends are still asleep (up to 2.1 s):
     * the drain waits for them, then the program exits 0. */
    expect_clean_exit(&P);
    assert_int_equal(count_substr(P.out, "cancelled before"), 1);
}

/* ------------------------------------------------------------------ */
/* users_api                                                            */
/* ------------------------------------------------------------------ */

#define TOKEN "s3cret"
#define BEARER "Bearer " TOKEN
#define CT_JSON "application/json"

/* What users_api answers and stores (ids from 1, never reused). */
#define ADA_IN "{\"name\":\"ada\",\"email\":\"ada@example.org\",\"age\":36}"
#define ADA_OUT(id)                                                            \
    "{\"id\":" #id ",\"name\":\"ada\",\"email\":\"ada@example.org\","          \
    "\"age\":36}"
#define BOB_IN "{\"name\":\"bob\",\"email\":\"bob@example.org\"}"
#define BOB_OUT                                                                \
    "{\"id\":2,\"name\":\"bob\",\"email\":\"bob@example.org\",\"age\":null}"

/* The longest name users_api accepts: 64 bytes. */
#define NAME64                                                                 \
    "eve"                                                                      \
    "eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee"
_Static_assert(sizeof(NAME64) - 1 == 64, "NAME64 is 64 bytes");

static const char unauthorized[] = "{\"error\":\"a bearer token is required\"}";
static const char forbidden[] = "{\"error\":\"the token is not valid\"}";

/* users_api's error handler answers the request timeout (503): the
 * answer is the app's. */
static const char service_unavailable[] =
    "HTTP/1.1 503 Service Unavailable\r\n"
    "Content-Type: application/json; charset=utf-8\r\n"
    "Content-Length: 42\r\n"
    "Date: <d>\r\n"
    "Connection: keep-alive\r\n"
    "Keep-Alive: timeout=5\r\n"
    "\r\n"
    "{\"error\":\"Request timed out\",\"status\":503}";

/*
 * Formats one request into out[cap] and returns its length: `auth` is the
 * whole Authorization value (NULL: none); with a body (NULL: none), its
 * Content-Type `ctype` (NULL: none) and its Content-Length.
 */
static size_t format_req(char *out, size_t cap, const char *method,
                         const char *target, const char *auth,
                         const char *ctype, const char *body)
{
    int n = snprintf(
        out, cap, "%s %s HTTP/1.1\r\nHost: x\r\n%s%s%s%s%s%s", method, target,
        auth ? "Authorization: " : "", auth ? auth : "", auth ? "\r\n" : "",
        ctype ? "Content-Type: " : "", ctype ? ctype : "", ctype ? "\r\n" : "");
    int m;

    assert_true(n > 0 && (size_t)n < cap);
    if (body != NULL)
        m = snprintf(out + n, cap - (size_t)n, "Content-Length: %zu\r\n\r\n%s",
                     strlen(body), body);
    else
        m = snprintf(out + n, cap - (size_t)n, "\r\n");
    assert_true(m > 0 && (size_t)m < cap - (size_t)n);
    return (size_t)n + (size_t)m;
}

static void send_req(int fd, const char *method, const char *target,
                     const char *auth, const char *ctype, const char *body)
{
    char req[4096];
    size_t n = format_req(req, sizeof(req), method, target, auth, ctype, body);

    th_send(fd, req, n);
}

/* POSTs a JSON body to /users with `auth`. */
static void post_user(int fd, const char *auth, const char *body)
{
    send_req(fd, "POST", "/users", auth, CT_JSON, body);
}

/* Reads n responses (within 10 s), asserts they are all there, well
 * formed, with nothing more, and that the connection stays open. Free
 * with th_resp_free(r, n) and free(r). */
static th_resp *read_resps(int fd, int n)
{
    size_t len;
    char *out = th_read(fd, &len, 10000, th_until_responses, &n);
    th_resp *r = th_expect_responses(out, len, n, NULL);

    assert_int_equal(th_last_end(), TH_OPEN);
    free(out);
    return r;
}

static void resps_free(th_resp *r, int n)
{
    th_resp_free(r, n);
    free(r);
}

/* The Retry-After value of a 429 (seconds), or -1 when absent. */
static int retry_after(const th_resp *r)
{
    const char *h = strstr(r->head, "\r\nRetry-After: ");

    return h != NULL ? atoi(h + strlen("\r\nRetry-After: ")) : -1;
}

/* A 429 from the rate limiter: its JSON, and a Retry-After within the
 * window of 60 s. */
static void assert_limited(const th_resp *r)
{
    int s;

    assert_int_equal(r->status, 429);
    assert_non_null(
        strstr(r->head, "\r\nContent-Type: application/json; charset=utf-8"));
    assert_string_equal(r->body, "{\"error\":\"too many requests\"}");
    s = retry_after(r);
    if (s < 1 || s > 60)
        fail_msg("Retry-After %d, want 1..60; head:\n%s", s, r->head);
}

/* Each invalid body POST /users refuses, with its exact answer. */
static void check_validation(int fd)
{
    static const struct {
        const char *ctype, *body;
        int status;
        const char *reason, *want;
    } bad[] = {
#define V422(body, msg, field)                                                 \
    {CT_JSON, body, 422, "Unprocessable Entity",                               \
     "{\"error\":\"" msg "\",\"field\":\"" field "\"}"}
        V422("{}", "name is required", "name"),
        V422("{\"name\":7,\"email\":\"e@x\"}", "name is required", "name"),
        V422("{\"name\":\"\",\"email\":\"e@x\"}", "name must not be empty",
             "name"),
        V422("{\"name\":\"" NAME64 "e\",\"email\":\"e@x\"}",
             "name is longer than 64 bytes", "name"),
        V422("{\"name\":\"eve\"}", "email is required", "email"),
        V422("{\"name\":\"eve\",\"email\":null}", "email is required", "email"),
        V422("{\"name\":\"eve\",\"email\":\"eve.example.org\"}",
             "email must be an address with an @", "email"),
        V422("{\"name\":\"eve\",\"email\":\"e@x\",\"age\":151}",
             "age must be an integer from 0 to 150", "age"),
        V422("{\"name\":\"eve\",\"email\":\"e@x\",\"age\":-1}",
             "age must be an integer from 0 to 150", "age"),
        V422("{\"name\":\"eve\",\"email\":\"e@x\",\"age\":\"12\"}",
             "age must be an integer from 0 to 150", "age"),
        V422("{\"name\":\"eve\",\"email\":\"e@x\",\"age\":1.5}",
             "age must be an integer from 0 to 150", "age"),
#undef V422
        {CT_JSON, "[1,2]", 400, "Bad Request",
         "{\"error\":\"the body must be a JSON object\",\"field\":\"body\"}"},
        {"text/plain", ADA_IN, 400, "Bad Request",
         "{\"error\":\"the body must be a JSON object\",\"field\":\"body\"}"},
        {CT_JSON, "{\"name\":\"ada2\",\"email\":\"ADA@example.org\"}", 409,
         "Conflict",
         "{\"error\":\"email is already registered\",\"field\":\"email\"}"},
    };
    size_t i;

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        send_req(fd, "POST", "/users", BEARER, bad[i].ctype, bad[i].body);
        expect_json(fd, bad[i].status, bad[i].reason, bad[i].want);
    }
}

/* Malformed JSON: latch_json_body sends it to the error handler, which
 * answers 400 with jansson's message (whose wording is jansson's). */
static void check_malformed(int fd)
{
    static const char head[] = "{\"error\":\"Invalid JSON at line 1, column ";
    static const char tail[] = "\",\"status\":400}";
    th_resp *r;
    size_t n;

    post_user(fd, BEARER, "{\"name\":");
    r = read_resps(fd, 1);
    assert_int_equal(r->status, 400);
    assert_non_null(
        strstr(r->head, "\r\nContent-Type: application/json; charset=utf-8"));
    n = strlen(r->body);
    if (strncmp(r->body, head, strlen(head)) != 0 || n < strlen(tail) ||
        strcmp(r->body + n - strlen(tail), tail) != 0)
        fail_msg("unexpected error body: %s", r->body);
    resps_free(r, 1);
}

/* /export streams the users as NDJSON; with fail_after=1 it fails after
 * the first line, when the headers are out: the error handler delegates
 * and the client sees the chunked body cut (no last chunk), then EOF. */
static void check_export(const char *lines, const char *first)
{
    static const char head[] = "HTTP/1.1 200 OK\r\n"
                               "Content-Type: application/x-ndjson\r\n"
                               "Date: <d>\r\n"
                               "Connection: keep-alive\r\n"
                               "Keep-Alive: timeout=5\r\n"
                               "Transfer-Encoding: chunked\r\n"
                               "\r\n";
    char want[1024];
    const char *err = NULL;
    th_resp one;
    size_t len;
    char *out, *norm;
    int fd = th_connect(P.port);
    th_resp *r;

    get_on(fd, "/export");
    r = read_resps(fd, 1);
    assert_int_equal(r->status, 200);
    assert_true(r->chunked);
    assert_string_equal(r->body, lines);
    resps_free(r, 1);

    get_on(fd, "/export?fail_after=1");
    out = th_read(fd, &len, 10000, NULL, NULL);
    assert_int_equal(th_last_end(), TH_EOF);
    norm = th_normalize(out, len);
    snprintf(want, sizeof(want), "%s%zx\r\n%s\r\n", head, strlen(first), first);
    assert_string_equal(norm, want);
    /* Incomplete, never a whole response. */
    assert_int_equal(th_wire_parse(out, len, NULL, &one, 1, true, &err), -1);
    free(norm);
    free(out);
    close(fd);
}

/* Five requests in one write: the answers come back in order, one each. */
static void check_pipelined(void)
{
    static const int want[] = {200, 400, 503, 404, 403};
    char req[4096];
    size_t n = 0;
    int fd = th_connect(P.port), i;
    th_resp *r;

    n += format_req(req + n, sizeof(req) - n, "GET", "/users/2", NULL, NULL,
                    NULL);
    n += format_req(req + n, sizeof(req) - n, "GET", "/users/abc", NULL, NULL,
                    NULL);
    n += format_req(req + n, sizeof(req) - n, "GET", "/boom", NULL, NULL, NULL);
    n += format_req(req + n, sizeof(req) - n, "GET", "/users/99", NULL, NULL,
                    NULL);
    n += format_req(req + n, sizeof(req) - n, "POST", "/users", "Bearer nope",
                    CT_JSON, ADA_IN);
    th_send(fd, req, n);
    r = read_resps(fd, 5);
    for (i = 0; i < 5; i++)
        assert_int_equal(r[i].status, want[i]);
    assert_string_equal(r[0].body, BOB_OUT);
    assert_string_equal(r[2].body,
                        "{\"error\":\"store offline\",\"status\":503}");
    assert_string_equal(r[4].body, forbidden);
    resps_free(r, 5);
    close(fd);
}

static void test_users_api(void **state)
{
    static const char *const args[] = {"-p", "0",      "-k", TOKEN,
                                       "-r", "100000", NULL};
    static const char eve_in[] =
        "{\"name\":\"" NAME64 "\",\"email\":\"eve@example.org\",\"age\":0}";
    static const char eve_out[] = "{\"id\":3,\"name\":\"" NAME64
                                  "\",\"email\":\"eve@example.org\",\"age\":0}";
    static const char no_content[] = "HTTP/1.1 204 No Content\r\n"
                                     "Date: <d>\r\n"
                                     "Connection: keep-alive\r\n"
                                     "Keep-Alive: timeout=5\r\n"
                                     "\r\n";
    static const char not_found[] =
        "{\"error\":\"user not found\",\"field\":\"id\"}";
    static const char bad_id[] =
        "{\"error\":\"id must be a number\",\"field\":\"id\"}";
    static const char bad_limit[] =
        "{\"error\":\"limit must be an integer from 0 to 1000\","
        "\"field\":\"limit\"}";
    char lines[1024], first[256];
    int fd;

    (void)state;
    proc_start(&P, "users_api", args);
    fd = th_connect(P.port);
    get_on(fd, "/users");
    expect_json(fd, 200, "OK", "[]");

    /* Auth: writes need the bearer token; 401 says which scheme. */
    post_user(fd, NULL, ADA_IN);
    expect_json_with(fd, 401, "Unauthorized", "WWW-Authenticate: Bearer\r\n",
                     unauthorized);
    post_user(fd, "Basic YWRhOnB3", ADA_IN);
    expect_json_with(fd, 401, "Unauthorized", "WWW-Authenticate: Bearer\r\n",
                     unauthorized);
    post_user(fd, "Bearer nope", ADA_IN);
    expect_json(fd, 403, "Forbidden", forbidden);
    post_user(fd, BEARER "x", ADA_IN);
    expect_json(fd, 403, "Forbidden", forbidden);
    post_user(fd, "Bearer s3cre", ADA_IN);
    expect_json(fd, 403, "Forbidden", forbidden);

    /* Created, with its Location, which then answers the same user. */
    post_user(fd, "bearer " TOKEN, ADA_IN);
    expect_json_with(fd, 201, "Created", "Location: /users/1\r\n", ADA_OUT(1));
    get_on(fd, "/users/1");
    expect_json(fd, 200, "OK", ADA_OUT(1));
    post_user(fd, BEARER, BOB_IN);
    expect_json_with(fd, 201, "Created", "Location: /users/2\r\n", BOB_OUT);
    post_user(fd, BEARER, eve_in);
    expect_json_with(fd, 201, "Created", "Location: /users/3\r\n", eve_out);
    get_on(fd, "/users/3");
    expect_json(fd, 200, "OK", eve_out);

    check_validation(fd);
    check_malformed(fd);

    /* Listing, with and without a limit; nothing refused was stored. */
    get_on(fd, "/users");
    snprintf(lines, sizeof(lines), "[%s,%s,%s]", ADA_OUT(1), BOB_OUT, eve_out);
    expect_json(fd, 200, "OK", lines);
    get_on(fd, "/users?limit=1");
    expect_json(fd, 200, "OK", "[" ADA_OUT(1) "]");
    get_on(fd, "/users?limit=0");
    expect_json(fd, 200, "OK", "[]");
    get_on(fd, "/users?limit=x");
    expect_json(fd, 400, "Bad Request", bad_limit);
    get_on(fd, "/users?limit=1001");
    expect_json(fd, 400, "Bad Request", bad_limit);

    /* Ids: non-numeric 400, unknown 404. */
    get_on(fd, "/users/abc");
    expect_json(fd, 400, "Bad Request", bad_id);
    get_on(fd, "/users/-1");
    expect_json(fd, 400, "Bad Request", bad_id);
    get_on(fd, "/users/12345678901234567890");
    expect_json(fd, 400, "Bad Request", bad_id);
    get_on(fd, "/users/99");
    expect_json(fd, 404, "Not Found", not_found);

    /* DELETE: auth first, then 204, then the user is gone. */
    send_req(fd, "DELETE", "/users/1", NULL, NULL, NULL);
    expect_json_with(fd, 401, "Unauthorized", "WWW-Authenticate: Bearer\r\n",
                     unauthorized);
    send_req(fd, "DELETE", "/users/1", BEARER, NULL, NULL);
    expect_one(fd, no_content);
    get_on(fd, "/users/1");
    expect_json(fd, 404, "Not Found", not_found);
    send_req(fd, "DELETE", "/users/1", BEARER, NULL, NULL);
    expect_json(fd, 404, "Not Found", not_found);
    send_req(fd, "DELETE", "/users/x", BEARER, NULL, NULL);
    expect_json(fd, 400, "Bad Request", bad_id);
    /* Her email is free again; her id is not. */
    post_user(fd, BEARER, ADA_IN);
    expect_json_with(fd, 201, "Created", "Location: /users/4\r\n", ADA_OUT(4));

    /* The error handler answers latch_fail's error as JSON. */
    get_on(fd, "/boom");
    expect_json(fd, 503, "Service Unavailable",
                "{\"error\":\"store offline\",\"status\":503}");
    close(fd);

    snprintf(first, sizeof(first), "%s\n", BOB_OUT);
    snprintf(lines, sizeof(lines), "%s\n%s\n%s\n", BOB_OUT, eve_out,
             ADA_OUT(4));
    check_export(lines, first);
    check_pipelined();

    expect_clean_exit(&P);
    assert_int_equal(count_substr(P.out, "verdict dropped"), 0);
}

/* -r 3 in a 60 s window: three requests pass, the fourth gets 429 with
 * Retry-After, and so does everything after it, on any route, before
 * auth: one answer per request, never a 429 followed by the route's. */
static void test_users_api_rate_limit(void **state)
{
    static const char *const args[] = {"-p", "0",     "-r", "3",
                                       "-w", "60000", NULL};
    char req[4096];
    size_t n = 0;
    int fd, i;
    th_resp *r;

    (void)state;
    proc_start(&P, "users_api", args);
    fd = th_connect(P.port);
    for (i = 0; i < 3; i++) {
        get_on(fd, "/users");
        expect_json(fd, 200, "OK", "[]");
    }
    get_on(fd, "/users");
    r = read_resps(fd, 1);
    assert_limited(&r[0]);
    resps_free(r, 1);

    /* Pipelined, on every kind of route: each one 429, in order, and
     * nothing else (the next request's answer would show it). */
    n += format_req(req + n, sizeof(req) - n, "POST", "/users", NULL, CT_JSON,
                    ADA_IN);
    n += format_req(req + n, sizeof(req) - n, "GET", "/boom", NULL, NULL, NULL);
    n += format_req(req + n, sizeof(req) - n, "GET", "/nowhere", NULL, NULL,
                    NULL);
    th_send(fd, req, n);
    r = read_resps(fd, 3);
    for (i = 0; i < 3; i++)
        assert_limited(&r[i]);
    resps_free(r, 3);
    get_on(fd, "/users/1");
    r = read_resps(fd, 1);
    assert_limited(&r[0]);
    resps_free(r, 1);
    close(fd);

    expect_clean_exit(&P);
    assert_int_equal(count_substr(P.out, "verdict dropped"), 0);
}

/* Five requests in one write against -r 3: the verdicts come back from
 * the pool in any order, yet each request gets one answer, three pass and
 * two get 429. */
static void test_users_api_rate_limit_pipelined(void **state)
{
    static const char *const args[] = {"-p", "0",     "-r", "3",
                                       "-w", "60000", NULL};
    char req[4096];
    size_t n = 0;
    int fd, i, ok = 0, limited = 0;
    th_resp *r;

    (void)state;
    proc_start(&P, "users_api", args);
    fd = th_connect(P.port);
    for (i = 0; i < 5; i++)
        n += format_req(req + n, sizeof(req) - n, "GET", "/users", NULL, NULL,
                        NULL);
    th_send(fd, req, n);
    r = read_resps(fd, 5);
    for (i = 0; i < 5; i++) {
        if (r[i].status == 429) {
            assert_limited(&r[i]);
            limited++;
        } else {
            assert_int_equal(r[i].status, 200);
            assert_string_equal(r[i].body, "[]");
            ok++;
        }
    }
    assert_int_equal(ok, 3);
    assert_int_equal(limited, 2);
    resps_free(r, 5);
    close(fd);
    expect_clean_exit(&P);
}

/* A rate limiter store slower (300 ms) than the request timeout (100 ms):
 * the app's error handler answers 503 once; the verdict that arrives later is
 * dropped (and logged), with nothing on the wire: the next answer on the
 * connection is exactly the next request's. */
static void test_users_api_slow_store(void **state)
{
    static const char *const args[] = {"-p", "0",   "-d", "300",
                                       "-t", "100", NULL};
    static const char dropped[] = ": request timeout, rate limit verdict "
                                  "dropped\n";
    int fd;

    (void)state;
    proc_start(&P, "users_api", args);
    fd = th_connect(P.port);
    post_user(fd, BEARER, ADA_IN);
    expect_one(fd, service_unavailable);
    if (!proc_wait(&P, dropped, 10000))
        fail_msg("the late verdict was not dropped; stdout:\n%s", P.out);
    get_on(fd, "/users");
    expect_one(fd, service_unavailable);
    close(fd);
    /* The second verdict is still on its way: the drain waits for it. */
    expect_clean_exit(&P);
    assert_int_equal(count_substr(P.out, "rate limit verdict dropped"), 2);
}

/* ------------------------------------------------------------------ */
/* express_ports: Express's examples ported (issue 16)                  */
/* ------------------------------------------------------------------ */

/* The upstream of fetch_timeout, when one runs (slow_backend). */
static proc Q;

static int teardown_both(void **state)
{
    if (Q.pid > 0) {
        kill(Q.pid, SIGKILL);
        waitpid(Q.pid, NULL, 0);
        Q.pid = 0;
    }
    if (Q.out_fd > 0)
        close(Q.out_fd);
    if (Q.err_fd > 0)
        close(Q.err_fd);
    Q.out_fd = Q.err_fd = -1;
    return teardown(state);
}

/* users_post: the 201 with the new id, the validation's 400 (nothing
 * stored: the next id is the next number), a body that is no JSON, and a
 * client that leaves during the insert (the completion answers nothing:
 * no report on stderr, and the next request is served). */
static void test_port_users_post(void **state)
{
    static const char *const args[] = {"-p", "0", "-d", "200", NULL};
    int fd;

    (void)state;
    proc_start(&P, "express_ports/users_post", args);
    fd = th_connect(P.port);
    send_req(fd, "POST", "/users", NULL, CT_JSON,
             "{\"email\":\"a@b.example\"}");
    expect_json(fd, 201, "Created", "{\"id\":1,\"email\":\"a@b.example\"}");
    send_req(fd, "POST", "/users", NULL, CT_JSON, "{\"email\":\"nope\"}");
    expect_json(fd, 400, "Bad Request", "{\"error\":\"Invalid email\"}");
    send_req(fd, "POST", "/users", NULL, CT_JSON, "{\"email\":7}");
    expect_json(fd, 400, "Bad Request", "{\"error\":\"Invalid email\"}");
    send_req(fd, "POST", "/users", NULL, CT_JSON, "[]");
    expect_json(fd, 400, "Bad Request", "{\"error\":\"Invalid email\"}");
    send_req(fd, "POST", "/users", NULL, CT_JSON,
             "{\"email\":\"q\\\"@x\\u00e9\"}");
    expect_json(fd, 201, "Created", "{\"id\":2,\"email\":\"q\\\"@x\xc3\xa9\"}");
    close(fd);

    /* Gone during the 200 ms insert: row 3 is made, nobody is told. */
    fd = th_connect(P.port);
    send_req(fd, "POST", "/users", NULL, CT_JSON,
             "{\"email\":\"c@d.example\"}");
    if (!proc_wait(&P, "users_post: insert c@d.example\n", 5000))
        fail_msg("the insert did not start; stdout:\n%s", P.out);
    th_close_reset(fd);
    fd = th_connect(P.port);
    send_req(fd, "POST", "/users", NULL, CT_JSON,
             "{\"email\":\"e@f.example\"}");
    expect_json(fd, 201, "Created", "{\"id\":4,\"email\":\"e@f.example\"}");
    close(fd);
    expect_clean_exit(&P);
}

/* users_post with the database down: the catch's 500. */
static void test_port_users_post_db_down(void **state)
{
    static const char *const args[] = {"-p", "0", "-f", NULL};
    int fd;
    th_resp *r;

    (void)state;
    proc_start(&P, "express_ports/users_post", args);
    fd = th_connect(P.port);
    send_req(fd, "POST", "/users", NULL, CT_JSON,
             "{\"email\":\"a@b.example\"}");
    r = read_resps(fd, 1);
    assert_int_equal(r[0].status, 500);
    resps_free(r, 1);
    close(fd);
    expect_clean_exit(&P);
}

/* rate_limit: two requests pass (the route's "ok"), the third is the
 * 429; with the store down the catch's 500; with a store slower than the
 * request timeout, latch's 503 and a completion that does nothing (no
 * next for a request already answered: stderr stays empty). */
static void test_port_rate_limit(void **state)
{
    static const char *const args[] = {"-p", "0", "-r", "2", NULL};
    static const char *const down[] = {"-p", "0", "-f", NULL};
    static const char *const slow[] = {"-p", "0",   "-d", "300",
                                       "-t", "100", NULL};
    static const char ok[] = "HTTP/1.1 200 OK\r\n"
                             "Content-Type: text/html; charset=utf-8\r\n"
                             "Content-Length: 2\r\n"
                             "Date: <d>\r\n"
                             "Connection: keep-alive\r\n"
                             "Keep-Alive: timeout=5\r\n"
                             "\r\n"
                             "ok";
    int fd, i;

    (void)state;
    proc_start(&P, "express_ports/rate_limit", args);
    fd = th_connect(P.port);
    for (i = 0; i < 2; i++) {
        get_on(fd, "/");
        expect_one(fd, ok);
    }
    get_on(fd, "/");
    expect_json(fd, 429, "Too Many Requests",
                "{\"error\":\"Too many requests\"}");
    close(fd);
    expect_clean_exit(&P);

    proc_start(&P, "express_ports/rate_limit", down);
    assert_int_equal(status_of(P.port, "/"), 500);
    expect_clean_exit(&P);

    proc_start(&P, "express_ports/rate_limit", slow);
    assert_int_equal(status_of(P.port, "/"), 503);
    assert_int_equal(status_of(P.port, "/"), 503);
    /* SIGTERM waits for the two late verdicts: neither may act. */
    expect_clean_exit(&P);
}

/* fetch_timeout over slow_backend: a fast upstream's JSON passed on; a
 * slow one's 504 {"error":"Request timed out"} at the deadline (1.5 s,
 * room for a loaded machine), the upstream call aborted at once (the
 * upstream sees its client leave long before its own 9 s); a client that leaves
 * aborts the call too; an upstream error is a 502. */
static void test_port_fetch_timeout(void **state)
{
    static const char *const up_args[] = {"-p", "0", "-t", "10000", NULL};
    static const char up_gone[] = ": client disconnect, backend result dropped";
    char up_port[16];
    const char *args[] = {"-p", "0", "-t", "1500", "-u", up_port, NULL};
    int fd;
    int64_t t0;

    (void)state;
    proc_start(&Q, "slow_backend", up_args);
    snprintf(up_port, sizeof(up_port), "%d", Q.port);
    proc_start(&P, "express_ports/fetch_timeout", args);

    fd = th_connect(P.port);
    get_on(fd, "/data?ms=10");
    expect_json(fd, 200, "OK",
                "{\"backend_ms\":10,\"rows\":[\"alpha\",\"beta\"]}");

    t0 = th_now_ms();
    get_on(fd, "/data?ms=9000");
    expect_json(fd, 504, "Gateway Timeout",
                "{\"error\":\"Request timed out\"}");
    if (!proc_wait(&P, "fetch_timeout: /data?ms=9000: aborted\n", 4000))
        fail_msg("the upstream call was not aborted; stdout:\n%s", P.out);
    if (!proc_wait(&Q, up_gone, 4000))
        fail_msg("the upstream did not see the abort; stdout:\n%s", Q.out);
    /* Aborted, not waited for: well before the upstream's 9 s. */
    assert_true(th_now_ms() - t0 < 7000);

    /* The same connection goes on with the next exchange. */
    get_on(fd, "/data?ms=0");
    expect_json(fd, 200, "OK",
                "{\"backend_ms\":0,\"rows\":[\"alpha\",\"beta\"]}");
    close(fd);

    /* A client that leaves aborts the call as well. */
    fd = th_connect(P.port);
    get_on(fd, "/data?ms=4000");
    if (!proc_wait(&P, "fetch_timeout: /data?ms=4000: sent\n", 4000))
        fail_msg("the upstream call did not start; stdout:\n%s", P.out);
    th_close_reset(fd);
    if (!proc_wait(&P, "fetch_timeout: /data?ms=4000: aborted\n", 4000))
        fail_msg("leaving did not abort the call; stdout:\n%s", P.out);

    /* The upstream refuses (400): a 502. */
    assert_int_equal(status_of(P.port, "/data?ms=abc"), 502);

    expect_clean_exit(&P);
    expect_clean_exit(&Q);
    assert_int_equal(count_substr(Q.out, up_gone), 2);
}

/* ------------------------------------------------------------------ */
/* Files: download, csv_export, latch serve                             */
/* ------------------------------------------------------------------ */

static char fdir[256];

static void put_file(const char *rel, const char *text, size_t n)
{
    char p[512];
    FILE *f;

    snprintf(p, sizeof(p), "%s/%s", fdir, rel);
    f = fopen(p, "wb");
    assert_non_null(f);
    for (size_t i = 0; i < n; i++)
        fputc(text != NULL ? text[i] : (int)((i * 7) & 0xff), f);
    fclose(f);
}

static void make_fdir(void)
{
    snprintf(fdir, sizeof(fdir), "/tmp/latch-examples-XXXXXX");
    assert_non_null(mkdtemp(fdir));
}

static void rm_fdir(const char *d)
{
    char cmd[600];

    /* a test directory under /tmp made by mkdtemp: its name has no
     * quote */
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", d);
    assert_int_equal(system(cmd), 0);
}

/* The one response to a request on a fresh connection (caller frees). */
static th_resp *one_response(int port, const char *method, const char *target)
{
    char req[512];
    size_t len;
    char *out;
    const char *methods[] = {method};
    th_resp *r;
    int n = snprintf(req, sizeof(req),
                     "%s %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                     method, target);

    assert_true(n > 0 && (size_t)n < sizeof(req));
    out = th_exchange(port, req, (size_t)n, 1, &len);
    r = th_expect_responses(out, len, 1, methods);
    free(out);
    return r;
}

static void free_one(th_resp *r)
{
    th_resp_free(r, 1);
    free(r);
}

/* Runs the latch command with args, without a server, to its end (in P,
 * so that teardown kills it if it hangs): its exit status; its stdout and
 * stderr are in P.out and P.err. */
static int run_cmd(const char *const *args)
{
    const char *bin = getenv("LATCH_BIN");
    int st = 0;

    if (bin == NULL)
        skip();
    proc_spawn(&P, bin, args);
    if (!proc_wait(&P, NULL, 10000))
        fail_msg("latch %s did not end", args[0]);
    assert_int_equal(waitpid(P.pid, &st, 0), P.pid);
    P.pid = 0;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void test_latch_serve(void **state)
{
    const char *bin = getenv("LATCH_BIN");
    const char *args[] = {"serve", fdir, "--port", "0", "--workers", "1", NULL};
    static const char *const help[] = {"serve", "--help", NULL};
    static const char *const bad[] = {"serve", "--port", "x", NULL};
    char p[512], out[8192];
    const char *a, *b, *l, *s;
    th_resp *r;

    (void)state;
    if (bin == NULL)
        skip();
    assert_int_equal(run_cmd(help), 0);
    assert_non_null(strstr(P.out, "usage: latch serve [DIR]"));
    assert_non_null(strstr(P.out, "examples:"));
    assert_int_equal(run_cmd(bad), 2);
    assert_non_null(strstr(P.err, "bad port"));

    make_fdir();
    put_file("a.txt", "alpha\n", 6);
    put_file("b&<c>\"q'.txt", "x", 1);
    put_file(".secret", "hidden", 6);
    snprintf(p, sizeof(p), "%s/list", fdir);
    assert_int_equal(mkdir(p, 0755), 0);
    put_file("list/in.bin", NULL, 3000);
    snprintf(p, sizeof(p), "%s/site", fdir);
    assert_int_equal(mkdir(p, 0755), 0);
    put_file("site/index.html", "<p>home</p>\n", 12);
    snprintf(p, sizeof(p), "%s/../", fdir); /* a symlink out of DIR */
    snprintf(out, sizeof(out), "%s/up", fdir);
    assert_int_equal(symlink("/etc", out), 0);

    proc_start(&P, bin, args);
    /* the listing: sorted, directories first, names escaped, no dotfile,
     * sizes and dates */
    r = one_response(P.port, "GET", "/");
    assert_int_equal(r[0].status, 200);
    assert_non_null(strstr(r[0].head, "Content-Type: text/html"));
    l = strstr(r[0].body, ">list/<");
    s = strstr(r[0].body, ">site/<");
    a = strstr(r[0].body, ">a.txt<");
    b = strstr(r[0].body, ">b&amp;&lt;c&gt;&quot;q&#39;.txt<");
    assert_true(l != NULL && s != NULL && a != NULL && b != NULL);
    assert_true(l < s && s < a && a < b);
    assert_non_null(strstr(r[0].body, "href=\"b%26%3Cc%3E%22q%27.txt\""));
    assert_null(strstr(r[0].body, "secret"));
    assert_null(strstr(r[0].body, ">b&<c>")); /* never unescaped */
    assert_non_null(strstr(r[0].body, "6 B"));
    assert_non_null(strstr(r[0].body, "<td>20")); /* a date: 20YY-MM-DD */
    free_one(r);
    r = one_response(P.port, "GET", "/list/");
    assert_int_equal(r[0].status, 200);
    assert_non_null(strstr(r[0].body, "2.9 KiB"));
    assert_non_null(strstr(r[0].body, "href=\"../\""));
    free_one(r);
    /* files, an index, a redirect, misses, refusals */
    r = one_response(P.port, "GET", "/a.txt");
    assert_int_equal(r[0].status, 200);
    assert_string_equal(r[0].body, "alpha\n");
    free_one(r);
    r = one_response(P.port, "GET", "/site/");
    assert_string_equal(r[0].body, "<p>home</p>\n");
    free_one(r);
    r = one_response(P.port, "GET", "/list");
    assert_int_equal(r[0].status, 301);
    free_one(r);
    assert_int_equal(status_of(P.port, "/.secret"), 404);
    assert_int_equal(status_of(P.port, "/nope.txt"), 404);
    assert_int_equal(status_of(P.port, "/%2e%2e/"), 403);
    assert_int_equal(status_of(P.port, "/up/passwd"), 403);
    assert_int_equal(status_of(P.port, "/up/"), 403);
    r = one_response(P.port, "POST", "/a.txt");
    assert_int_equal(r[0].status, 405);
    free_one(r);
    expect_clean_exit(&P);
    rm_fdir(fdir);
}

/* ------------------------------------------------------------------ */
/* latch demo                                                           */
/* ------------------------------------------------------------------ */

/* The 1-based number of the one line of tools/latch/demo_bugs.c that
 * contains `needle` (the reports must name the lines the page shows). */
static int bugs_line(const char *needle)
{
    char path[1024], line[512];
    int n = 0, found = 0;
    FILE *f;

    snprintf(path, sizeof(path), "%s/tools/latch/demo_bugs.c",
             LATCH_SOURCE_DIR);
    f = fopen(path, "r");
    assert_non_null(f);
    while (fgets(line, sizeof(line), f) != NULL) {
        n++;
        if (strstr(line, needle) != NULL) {
            if (found != 0)
                fail_msg("'%s' is on lines %d and %d", needle, found, n);
            found = n;
        }
    }
    fclose(f);
    if (found == 0)
        fail_msg("'%s' is not in demo_bugs.c", needle);
    return found;
}

/* "at CALL (tools/latch/demo_bugs.c:LINE, FUNC)" with LINE the line of
 * `needle`, as the report's JSON string carries it. */
static const char *site(char *out, size_t cap, const char *call,
                        const char *needle, const char *func)
{
    snprintf(out, cap, "%s (tools/latch/demo_bugs.c:%d, %s)", call,
             bugs_line(needle), func);
    return out;
}

/* A request to the demo that carries the page's token header. */
static int demo_send(int port, const char *method, const char *target,
                     const char *token)
{
    char req[512];
    int fd = th_connect(port);
    int n = snprintf(req, sizeof(req),
                     "%s %s HTTP/1.1\r\nHost: x\r\nX-Demo-Token: %s\r\n"
                     "Connection: close\r\n\r\n",
                     method, target, token);

    assert_true(n > 0 && (size_t)n < sizeof(req));
    th_send(fd, req, (size_t)n);
    return fd;
}

/* The one response to a tagged request; checks the status and the body
 * and that it tells its request id. */
static void demo_expect(int port, const char *target, const char *token,
                        int status, const char *body)
{
    const char *methods[] = {"GET"};
    int fd = demo_send(port, "GET", target, token);
    size_t len;
    char *out = th_read(fd, &len, 10000, NULL, NULL);
    th_resp *r = th_expect_responses(out, len, 1, methods);

    close(fd);
    if (r[0].status != status || strcmp(r[0].body, body) != 0)
        fail_msg("%s: %d %s, not %d %s", target, r[0].status, r[0].body, status,
                 body);
    assert_non_null(strstr(r[0].head, "X-Latch-Request-Id: "));
    th_resp_free(r, 1);
    free(r);
    free(out);
}

/*
 * The demo's record of the request with `token` (GET /demo/reports), once
 * its state is `state` and it holds `n` reports, waiting up to 5 s; the
 * JSON, malloc'd. Then exactly n reports: no more arrive within `settle`
 * ms.
 */
static char *demo_reports(int port, const char *token, const char *state, int n,
                          int settle)
{
    int64_t deadline = th_now_ms() + 5000;
    char target[128], want[64];
    th_resp *r;

    snprintf(target, sizeof(target), "/demo/reports?token=%s", token);
    snprintf(want, sizeof(want), "\"state\":\"%s\"", state);
    for (;;) {
        r = one_response(port, "GET", target);
        if (r[0].status == 200 && strstr(r[0].body, want) != NULL &&
            count_substr(r[0].body, "{\"code\":") >= n) {
            if (settle <= 0)
                break;
            usleep((useconds_t)settle * 1000);
            settle = 0;
        } else if (th_now_ms() > deadline) {
            fail_msg("%s: no %s with %d reports in 5 s: %d %s", token, want, n,
                     r[0].status, r[0].body);
        } else {
            usleep(50 * 1000);
        }
        free_one(r);
    }
    {
        char *json = strdup(r[0].body);
        free_one(r);
        assert_non_null(json);
        if (count_substr(json, "{\"code\":") != n)
            fail_msg("%s: not %d reports: %s", token, n, json);
        return json;
    }
}

/* Asserts that the JSON holds each NULL-terminated needle. */
static void has_all(const char *json, ...)
{
    va_list ap;
    const char *s;

    va_start(ap, json);
    while ((s = va_arg(ap, const char *)) != NULL)
        if (strstr(json, s) == NULL)
            fail_msg("no '%s' in %s", s, json);
    va_end(ap);
}

static void test_latch_demo(void **state)
{
    const char *bin = getenv("LATCH_BIN");
    const char *args[] = {"demo", "--port",       "0",    "--workers",
                          "2",    "--access-log", "json", NULL};
    char a[160], b[160], *json, *out;
    size_t len;
    th_resp *r;
    int fd;

    (void)state;
    if (bin == NULL)
        skip();
    proc_start(&P, bin, args);

    /* The page: a section per bug, its code as in the file, numbered. */
    r = one_response(P.port, "GET", "/");
    assert_int_equal(r[0].status, 200);
    {
        static const char *const bugs[] = {
            "missing-return",    "double-next",        "catch-and-forward",
            "timer-race",        "async-after-500",    "pipe-failed",
            "proxy-client-left", "pubsub-after-close", "return-and-send"};
        size_t i;
        for (i = 0; i < sizeof(bugs) / sizeof(bugs[0]); i++) {
            snprintf(a, sizeof(a), "<section class=\"bug\" id=\"%s\"", bugs[i]);
            assert_non_null(strstr(r[0].body, a));
        }
        snprintf(a, sizeof(a),
                 "%4d          latch_res_json(res, &quot;{\\&quot;error\\&quot;"
                 ":\\&quot;no such user\\&quot;}&quot;);\n",
                 bugs_line("no such user\\\"}\");"));
        assert_non_null(strstr(r[0].body, a));
        assert_null(strstr(r[0].body, "end bug")); /* markers cut off */
    }
    free_one(r);

    /* 1. missing return: the 404, and the second answer refused */
    demo_expect(P.port, "/bug/missing-return?id=42", "t1", 404,
                "{\"error\":\"no such user\"}");
    json = demo_reports(P.port, "t1", "finished", 1, 0);
    has_all(json, "\"code\":\"ERR_HTTP_HEADERS_SENT\"",
            site(a, sizeof(a), "at latch_res_json",
                 "\"{\\\"id\\\":1,\\\"name\\\"", "get_user"),
            site(b, sizeof(b), "sealed at latch_res_json",
                 "no such user\\\"}\");", "get_user"),
            "GET /bug/missing-return\\n", NULL);
    free(json);

    /* 2. double next: the route runs once */
    demo_expect(P.port, "/bug/double-next?debug=1", "t2", 200,
                "[{\"order\":1,\"total\":\"9.90\"}]");
    json = demo_reports(P.port, "t2", "finished", 1, 0);
    has_all(
        json, "\"code\":\"ERR_NEXT_TWICE\"",
        "at LATCH_NEXT returned by log_debug",
        site(a, sizeof(a), "after latch_next", "latch_next(req);", "log_debug"),
        NULL);
    free(json);

    /* 3. the catch that answers and forwards: the error handler's second
     * answer refused, both of its calls */
    demo_expect(P.port, "/bug/catch-and-forward?sku=lamp", "t3", 500,
                "{\"error\":\"inventory unavailable\"}");
    json = demo_reports(P.port, "t3", "finished", 3, 0);
    has_all(json, "\"code\":\"ERR_NEXT_AFTER_RESPONSE\"",
            site(a, sizeof(a), "at latch_fail", "inventory store failed",
                 "get_stock"),
            site(b, sizeof(b), "at latch_res_jsonf",
                 "{\\\"error\\\":%s}\", err->message", "on_error"),
            NULL);
    assert_int_equal(count_substr(json, "\"code\":\"ERR_HTTP_HEADERS_SENT\""),
                     2);
    free(json);

    /* 4. the timer answered; the data's answer 200 ms later refused */
    demo_expect(P.port, "/bug/timer-race", "t4", 504,
                "{\"error\":\"the report took too long\"}");
    json = demo_reports(P.port, "t4", "finished", 1, 0);
    has_all(json, "\"code\":\"ERR_HTTP_HEADERS_SENT\"",
            site(a, sizeof(a), "at latch_res_json", "{\\\"rows\\\"",
                 "report_ready"),
            site(b, sizeof(b), "sealed at latch_res_json", "took too long",
                 "give_up"),
            NULL);
    free(json);

    /* 5. the 500, then the async middleware's header refused */
    demo_expect(P.port, "/bug/async-after-500", "t5", 500,
                "{\"error\":\"payment service unavailable\"}");
    json = demo_reports(P.port, "t5", "finished", 1, 0);
    has_all(
        json, "\"code\":\"ERR_HTTP_HEADERS_SENT\"",
        site(a, sizeof(a), "at latch_res_set_header", "\"X-Audit\"", "audited"),
        site(b, sizeof(b), "sealed at latch_res_jsonf",
             "{\\\"error\\\":%s}\", err->message", "on_error"),
        NULL);
    free(json);

    /* 6. the pipe failed after three rows: a body visibly cut (no last
     * chunk, the connection closed), and the message after it refused */
    fd = demo_send(P.port, "GET", "/bug/pipe-failed", "t6");
    out = th_read(fd, &len, 10000, NULL, NULL);
    assert_int_equal(th_last_end(), TH_EOF);
    close(fd);
    assert_true(strncmp(out, "HTTP/1.1 200 OK\r\n", 17) == 0);
    assert_non_null(strstr(out, "\r\nTransfer-Encoding: chunked\r\n"));
    assert_non_null(strstr(out, "\r\n\r\n6\r\nrow 1\n\r\n6\r\nrow 2\n\r\n"
                                "6\r\nrow 3\n\r\n"));
    assert_true(len < 5 || strcmp(out + len - 5, "0\r\n\r\n") != 0);
    assert_null(strstr(out, "\r\n0\r\n"));
    assert_null(strstr(out, "export failed"));
    free(out);
    json = demo_reports(P.port, "t6", "cut", 1, 0);
    has_all(json, "\"code\":\"ERR_STREAM_DESTROYED\"",
            site(a, sizeof(a), "at latch_res_end", "\"export failed\\n\"",
                 "export_done"),
            site(b, sizeof(b), "sealed at latch_res_pipe_fail",
                 "latch_res_pipe_fail(res, -EIO)", "export_rows"),
            NULL);
    free(json);

    /* 7. the client leaves before the slow upstream answers: on_error is
     * not called, nothing to refuse (waited past the 1 s response timeout
     * and the upstream's 1.5 s); a client that stays gets on_error's 502 */
    fd = demo_send(P.port, "GET", "/bug/proxy-client-left", "t7");
    usleep(200 * 1000);
    close(fd);
    free(demo_reports(P.port, "t7", "cut", 0, 1800));
    demo_expect(P.port, "/bug/proxy-client-left", "t7b", 502, "Bad gateway\n");
    free(demo_reports(P.port, "t7b", "finished", 0, 0));

    /* 8. pub/sub: the stream's first event, the client leaves, the next
     * message goes to its kept handle: refused, with the stream's request */
    fd = demo_send(P.port, "GET", "/bug/pubsub-after-close", "t8");
    out = th_read(fd, &len, 10000, th_until_substr,
                  (void *)"event: joined\ndata: you are in the room\n\n");
    assert_non_null(strstr(out, "you are in the room"));
    free(out);
    close(fd);
    /* Its access log line says the server saw it leave; no request in
     * between, whose end would recycle the stream's object again and
     * leave the kept handle's request unknown. */
    if (!proc_wait(&P, "\"url\":\"/bug/pubsub-after-close\"", 5000))
        fail_msg("no access log line for the stream: %s", P.out);
    r = one_response(P.port, "POST", "/bug/pubsub-after-close/publish");
    assert_int_equal(r[0].status, 200);
    assert_non_null(strstr(r[0].body, "{\"posted_to\":"));
    free_one(r);
    json = demo_reports(P.port, "t8", "cut", 1, 0);
    has_all(json, "\"code\":\"ERR_STREAM_DESTROYED\"",
            "used after that request was over",
            site(a, sizeof(a), "at latch_res_post", "latch_res_post(room[i]",
                 "post_message"),
            NULL);
    free(json);

    /* 9. return-and-send: the answer, and the LATCH_NEXT after it */
    demo_expect(P.port, "/bug/return-and-send", "t9", 200,
                "{\"id\":7,\"name\":\"lamp\"}");
    json = demo_reports(P.port, "t9", "finished", 1, 0);
    has_all(json, "\"code\":\"ERR_NEXT_AFTER_RESPONSE\"",
            "at LATCH_NEXT returned by get_item", NULL);
    free(json);

    /* The counters: 10 reports, over JSON and over SSE. */
    r = one_response(P.port, "GET", "/demo/counters");
    has_all(r[0].body, "{\"total\":10,", "\"ERR_HTTP_HEADERS_SENT\":5,",
            "\"ERR_STREAM_DESTROYED\":2,", "\"ERR_NEXT_TWICE\":1,",
            "\"ERR_NEXT_AFTER_RESPONSE\":2,", NULL);
    free_one(r);
    fd = th_connect(P.port);
    th_send_str(fd, "GET /demo/events HTTP/1.1\r\nHost: x\r\n\r\n");
    out = th_read(fd, &len, 10000, th_until_substr, (void *)"}\n\n");
    has_all(out, "Content-Type: text/event-stream",
            "\nevent: counters\ndata: {\"total\":10,", NULL);
    free(out);
    close(fd);

    /* A request that does not exist is the catch-all's 404. */
    assert_int_equal(status_of(P.port, "/bug/nope"), 404);
    r = one_response(P.port, "GET", "/demo/reports?token=never");
    assert_int_equal(r[0].status, 404);
    free_one(r);

    /* SIGTERM: drained, exit 0; the reports were printed too */
    assert_int_equal(proc_term(&P, 15000), 0);
    assert_int_equal(count_substr(P.err, "latch: ERR_"), 10);
    assert_non_null(strstr(P.err, "    at latch_res_json (tools/latch/"
                                  "demo_bugs.c:"));
}

/* The rows csv_export writes. */
static size_t csv_rows(char *out, size_t cap, long from, long to)
{
    size_t n = 0;

    for (long i = from; i < to && n < cap; i++)
        n +=
            (size_t)snprintf(out + n, cap - n,
                             "%ld,item-%ld,%ld.%02ld,\"note, \"\"%ld\"\"\"\r\n",
                             i, i, (i * 37) % 10000, i % 100, i % 7);
    return n;
}

static void test_csv_export(void **state)
{
    static const char *const args[] = {"-p", "0", NULL};
    static const char *const kinds[] = {"fast", "slow"};
    char *want = malloc((size_t)8 << 20);
    size_t wlen, len, head = 1;
    th_resp *r;
    int fd;

    (void)state;
    assert_non_null(want);
    proc_start(&P, "csv_export", args);
    for (int k = 0; k < 2; k++) {
        char target[96];
        /* small, and larger than any buffer: 100,000 rows (about 4 MB)
         * from memory, 20,000 in 200 batches of the slow source */
        long counts[] = {5, k == 0 ? 100000 : 20000};
        for (int c = 0; c < 2; c++) {
            snprintf(target, sizeof(target), "/export.csv?rows=%ld&source=%s",
                     counts[c], kinds[k]);
            r = one_response(P.port, "GET", target);
            assert_int_equal(r[0].status, 200);
            assert_true(r[0].chunked);
            assert_non_null(
                strstr(r[0].head, "Content-Type: text/csv; charset=utf-8"));
            wlen = csv_rows(want, (size_t)8 << 20, 0, counts[c]);
            assert_int_equal(r[0].body_len, wlen);
            assert_memory_equal(r[0].body, want, wlen);
            free_one(r);
        }
    }
    /* a client slower than the fast source: it reads a little, stops,
     * then reads the rest; every row arrives once, in order */
    fd = th_connect(P.port);
    th_send_str(fd, "GET /export.csv?rows=100000 HTTP/1.1\r\nHost: x\r\n"
                    "Connection: close\r\n\r\n");
    free(th_read(fd, &len, 10000, th_until_bytes, &head));
    usleep(200000); /* the server meets backpressure meanwhile */
    {
        char *rest = th_read(fd, &len, 20000, NULL, NULL);
        assert_true(len > 0);
        free(rest);
    }
    close(fd);
    /* a client that leaves during a slow export, and bad arguments */
    fd = th_connect(P.port);
    th_send_str(fd, "GET /export.csv?rows=1000000&source=slow HTTP/1.1\r\n"
                    "Host: x\r\n\r\n");
    free(th_read(fd, &len, 10000, th_until_bytes, &head));
    th_close_reset(fd);
    assert_int_equal(status_of(P.port, "/export.csv?rows=abc"), 400);
    assert_int_equal(status_of(P.port, "/export.csv?rows=-1"), 400);
    assert_int_equal(status_of(P.port, "/export.csv?source=tape"), 400);
    r = one_response(P.port, "GET", "/export.csv?rows=0");
    assert_int_equal(r[0].status, 200);
    assert_int_equal(r[0].body_len, 0);
    free_one(r);
    expect_clean_exit(&P);
    free(want);
}

static void test_download(void **state)
{
    const char *args[] = {"-p", "0", "-d", fdir, NULL};
    static const char no_file[] = "{\"error\":\"no such file\"}";
    th_resp *r;
    int fd, st;
    size_t len, want = 1;
    char *out;

    (void)state;
    make_fdir();
    put_file("report.txt", "quarterly numbers\n", 18);
    put_file("big.bin", NULL, (size_t)8 << 20);
    proc_start(&P, "download", args);
    /* the right way */
    r = one_response(P.port, "GET", "/files/report.txt");
    assert_int_equal(r[0].status, 200);
    assert_string_equal(r[0].body, "quarterly numbers\n");
    assert_non_null(strstr(r[0].head, "Content-Disposition: attachment; "
                                      "filename=\"report.txt\""));
    free_one(r);
    r = one_response(P.port, "GET", "/files/missing.txt");
    assert_int_equal(r[0].status, 404);
    assert_string_equal(r[0].body, no_file);
    free_one(r);
    assert_int_equal(status_of(P.port, "/files/..%2f..%2fetc%2fpasswd"), 403);
    assert_true(proc_wait(&P, ": ENOENT\n", 5000));
    assert_true(proc_wait(&P, ": complete\n", 5000));
    /* the broken callback: one response on the wire (the error handler's
     * 404), its own 500 refused and reported with both places */
    r = one_response(P.port, "GET", "/broken/missing.txt");
    assert_int_equal(r[0].status, 404);
    assert_string_equal(r[0].body, no_file);
    free_one(r);
    /* a client that leaves half way: the callback's answer meets a
     * destroyed response */
    fd = th_connect(P.port);
    th_send_str(fd, "GET /broken/big.bin HTTP/1.1\r\nHost: x\r\n\r\n");
    out = th_read(fd, &len, 10000, th_until_bytes, &want);
    free(out);
    th_close_reset(fd);
    st = proc_term(&P, 15000);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    if (strstr(P.err, "ERR_HTTP_HEADERS_SENT") == NULL ||
        strstr(P.err, "response was sealed at latch_res_json "
                      "(examples/download.c") == NULL ||
        strstr(P.err, "ERR_STREAM_DESTROYED") == NULL)
        fail_msg("the broken callback's answers were not reported:\n%s", P.err);
    assert_non_null(strstr(P.err, "download.c:"));
    rm_fdir(fdir);
}

/* ------------------------------------------------------------------ */
/* gateway                                                              */
/* ------------------------------------------------------------------ */

/*
 * gateway's backend, scripted: a thread that answers every request head
 * it reads on 127.0.0.1 with one fixed JSON (keep-alive), counting the
 * requests and keeping the last head it saw. Requests without a body only.
 */
#define BK_CONNS 8

static struct backend {
    int lfd, port, stop[2];
    pthread_t th;
    pthread_mutex_t mu;
    int requests;    /* heads read (under mu) */
    char last[2048]; /* the last head (under mu) */
} bk = {.lfd = -1};

static const char bk_answer[] = "HTTP/1.1 200 OK\r\n"
                                "Content-Type: application/json\r\n"
                                "Content-Length: 15\r\n"
                                "\r\n"
                                "{\"users\":[\"a\"]}";

static void *backend_main(void *arg)
{
    int fds[BK_CONNS];
    char buf[BK_CONNS][2048];
    size_t len[BK_CONNS];

    (void)arg;
    for (int i = 0; i < BK_CONNS; i++)
        fds[i] = -1;
    for (;;) {
        struct pollfd p[BK_CONNS + 2];
        int n = 0, map[BK_CONNS + 2];

        p[n] = (struct pollfd){bk.stop[0], POLLIN, 0};
        map[n++] = -2;
        p[n] = (struct pollfd){bk.lfd, POLLIN, 0};
        map[n++] = -1;
        for (int i = 0; i < BK_CONNS; i++)
            if (fds[i] >= 0) {
                p[n] = (struct pollfd){fds[i], POLLIN, 0};
                map[n++] = i;
            }
        if (poll(p, (nfds_t)n, -1) < 0)
            continue;
        if (p[0].revents != 0)
            break;
        for (int k = 1; k < n; k++) {
            int i = map[k];
            ssize_t got;
            char *end;

            if (p[k].revents == 0)
                continue;
            if (i == -1) {
                int fd = accept4(bk.lfd, NULL, NULL, SOCK_CLOEXEC);
                for (i = 0; fd >= 0 && i < BK_CONNS && fds[i] >= 0; i++)
                    ;
                if (fd >= 0 && i == BK_CONNS)
                    close(fd);
                else if (fd >= 0) {
                    fds[i] = fd;
                    len[i] = 0;
                }
                continue;
            }
            got = read(fds[i], buf[i] + len[i], sizeof(buf[i]) - 1 - len[i]);
            if (got <= 0) {
                close(fds[i]);
                fds[i] = -1;
                continue;
            }
            len[i] += (size_t)got;
            buf[i][len[i]] = '\0';
            while ((end = strstr(buf[i], "\r\n\r\n")) != NULL) {
                size_t head = (size_t)(end + 4 - buf[i]);
                pthread_mutex_lock(&bk.mu);
                bk.requests++;
                snprintf(bk.last, sizeof(bk.last), "%.*s", (int)head, buf[i]);
                pthread_mutex_unlock(&bk.mu);
                memmove(buf[i], buf[i] + head, len[i] - head + 1);
                len[i] -= head;
                /* small: one send (no cmocka assert off the test's
                 * thread); a failure is seen by the client as no answer */
                if (send(fds[i], bk_answer, sizeof(bk_answer) - 1,
                         MSG_NOSIGNAL) < 0) {
                    close(fds[i]);
                    fds[i] = -1;
                    break;
                }
            }
        }
    }
    for (int i = 0; i < BK_CONNS; i++)
        if (fds[i] >= 0)
            close(fds[i]);
    return NULL;
}

static void backend_start(void)
{
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof(a);

    bk.lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(bk.lfd >= 0);
    assert_int_equal(bind(bk.lfd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(bk.lfd, 16), 0);
    assert_int_equal(getsockname(bk.lfd, (struct sockaddr *)&a, &al), 0);
    bk.port = ntohs(a.sin_port);
    bk.requests = 0;
    bk.last[0] = '\0';
    assert_int_equal(pipe2(bk.stop, O_CLOEXEC), 0);
    pthread_mutex_init(&bk.mu, NULL);
    assert_int_equal(pthread_create(&bk.th, NULL, backend_main, NULL), 0);
}

/* Stops the thread and closes every socket it had: the port then
 * refuses connections. */
static void backend_stop(void)
{
    if (bk.lfd < 0)
        return;
    assert_int_equal(write(bk.stop[1], "x", 1), 1);
    pthread_join(bk.th, NULL);
    close(bk.lfd);
    close(bk.stop[0]);
    close(bk.stop[1]);
    pthread_mutex_destroy(&bk.mu);
    bk.lfd = -1;
}

static int backend_requests(char *last, size_t cap)
{
    int n;

    pthread_mutex_lock(&bk.mu);
    n = bk.requests;
    if (last != NULL)
        snprintf(last, cap, "%s", bk.last);
    pthread_mutex_unlock(&bk.mu);
    return n;
}

static int teardown_gateway(void **state)
{
    teardown(state);
    backend_stop();
    if (fdir[0] != '\0')
        rm_fdir(fdir);
    fdir[0] = '\0';
    return 0;
}

static void gw_get(int fd, const char *target, const char *auth)
{
    char req[512];
    int n = snprintf(
        req, sizeof(req), "GET %s HTTP/1.1\r\nHost: gw\r\n%s%s%s\r\n", target,
        auth ? "Authorization: " : "", auth ? auth : "", auth ? "\r\n" : "");

    assert_true(n > 0 && (size_t)n < sizeof(req));
    th_send(fd, req, (size_t)n);
}

/* gateway over the scripted backend: a static file's bytes; 401 without
 * a token and 403 with a wrong one, the backend never contacted; the
 * backend's answer with the token, /api taken off the path; 502 from the
 * example's on_error once the backend is down; all on one keep-alive
 * connection, then a clean exit. */
static void test_gateway(void **state)
{
    char port_s[16], last[2048];
    const char *args[] = {"-p", "0",  "-u",  port_s, "-d",
                          fdir, "-k", "t0k", NULL};
    int fd;

    (void)state;
    make_fdir();
    put_file("index.html", "<h1>gateway</h1>\n", 17);
    backend_start();
    snprintf(port_s, sizeof(port_s), "%d", bk.port);
    proc_start(&P, "gateway", args);
    fd = th_connect(P.port);

    gw_get(fd, "/index.html", NULL);
    {
        int one = 1;
        size_t len;
        char *out = th_read(fd, &len, 10000, th_until_responses, &one);
        th_resp *r = th_expect_responses(out, len, 1, NULL);
        assert_int_equal(r[0].status, 200);
        assert_int_equal(r[0].body_len, 17);
        assert_memory_equal(r[0].body, "<h1>gateway</h1>\n", 17);
        th_resp_free(r, 1);
        free(r);
        free(out);
    }
    gw_get(fd, "/api/users", NULL);
    expect_json_with(fd, 401, "Unauthorized", "WWW-Authenticate: Bearer\r\n",
                     "{\"error\":\"a bearer token is required\"}");
    gw_get(fd, "/api/users", "Basic dTpw");
    expect_json_with(fd, 401, "Unauthorized", "WWW-Authenticate: Bearer\r\n",
                     "{\"error\":\"a bearer token is required\"}");
    gw_get(fd, "/api/users", "Bearer wrong");
    expect_json(fd, 403, "Forbidden", "{\"error\":\"the token is not valid\"}");
    assert_int_equal(backend_requests(NULL, 0), 0);

    gw_get(fd, "/api/users?page=2", "Bearer t0k");
    expect_one(fd, "HTTP/1.1 200 OK\r\n"
                   "Content-Type: application/json\r\n"
                   "Content-Length: 15\r\n"
                   "Via: 1.1 latch\r\n"
                   "Date: <d>\r\n"
                   "Connection: keep-alive\r\n"
                   "Keep-Alive: timeout=5\r\n"
                   "\r\n"
                   "{\"users\":[\"a\"]}");
    assert_int_equal(backend_requests(last, sizeof(last)), 1);
    if (strncmp(last, "GET /users?page=2 HTTP/1.1\r\n", 28) != 0 ||
        strstr(last, "\r\nAuthorization: Bearer t0k\r\n") == NULL)
        fail_msg("the backend saw:\n%s", last);

    backend_stop();
    gw_get(fd, "/api/users", "Bearer t0k");
    expect_json(fd, 502, "Bad Gateway",
                "{\"error\":\"the backend is not available\"}");
    gw_get(fd, "/index.html", NULL);
    {
        int one = 1;
        size_t len;
        char *out = th_read(fd, &len, 10000, th_until_responses, &one);
        th_resp *r = th_expect_responses(out, len, 1, NULL);
        assert_int_equal(r[0].status, 200);
        th_resp_free(r, 1);
        free(r);
        free(out);
    }
    close(fd);
    expect_clean_exit(&P);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_slow_backend, teardown),
        cmocka_unit_test_teardown(test_slow_backend_client_leaves, teardown),
        cmocka_unit_test_teardown(test_fanout, teardown),
        cmocka_unit_test_teardown(test_users_api, teardown),
        cmocka_unit_test_teardown(test_users_api_rate_limit, teardown),
        cmocka_unit_test_teardown(test_users_api_rate_limit_pipelined,
                                  teardown),
        cmocka_unit_test_teardown(test_users_api_slow_store, teardown),
        cmocka_unit_test_teardown(test_port_users_post, teardown),
        cmocka_unit_test_teardown(test_port_users_post_db_down, teardown),
        cmocka_unit_test_teardown(test_port_rate_limit, teardown),
        cmocka_unit_test_teardown(test_port_fetch_timeout, teardown_both),
        cmocka_unit_test_teardown(test_latch_serve, teardown),
        cmocka_unit_test_teardown(test_latch_demo, teardown),
        cmocka_unit_test_teardown(test_csv_export, teardown),
        cmocka_unit_test_teardown(test_download, teardown),
        cmocka_unit_test_teardown(test_gateway, teardown_gateway),
    };

    P.out_fd = P.err_fd = -1;
    Q.out_fd = Q.err_fd = -1;
    return cmocka_run_group_tests(tests, NULL, NULL);
}
