/*
 * test_trace.c - LATCH_DEBUG=lifecycle against a real server.
 *
 * The variable is set before the first latch_app_new (it is read once per
 * process); stderr goes to a file while a server runs. Checked, as exact
 * lines in order for one request: a normal request (dispatched, headers
 * sent and ended at the handler's own call site, finished, closed), a
 * violation (its code and site), a request whose client left while a
 * timer was pending (timer set, cancelled (client gone), destroyed,
 * closed), a request timeout (cancelled (timeout)), a latch_work job and
 * a subscription (subscribed, unsubscribed).
 * Paths are the client's: a control byte in one must not start a line.
 */
#include "harness.h"

#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

static int send_line, twice_line, timer_line, work_line, pipe_line, sub_line;

static int users(latch_req *req, latch_res *res, void *data)
{
    (void)req;
    (void)data;
    send_line = __LINE__ + 1;
    latch_res_send(res, "ok", 2);
    return LATCH_DONE;
}

static int subscribe(latch_req *req, latch_res *res, void *data)
{
    (void)req;
    (void)data;
    sub_line = __LINE__ + 1;
    latch_subscribe(res, "news", NULL, NULL);
    return LATCH_DONE;
}

static int twice(latch_req *req, latch_res *res, void *data)
{
    (void)req;
    (void)data;
    latch_res_send(res, "once", 4);
    twice_line = __LINE__ + 1;
    latch_res_send(res, "twice", 5);
    return LATCH_DONE;
}

static void late(latch_res *res, void *data)
{
    (void)data;
    latch_res_send(res, "late", 4);
}

static int slow(latch_req *req, latch_res *res, void *data)
{
    (void)req;
    (void)data;
    timer_line = __LINE__ + 1;
    latch_set_timeout(res, 10000, late, NULL);
    return LATCH_DONE;
}

static int timed(latch_req *req, latch_res *res, void *data)
{
    (void)res;
    (void)data;
    latch_req_set_timeout(req, 20, 503);
    latch_set_timeout(res, 10000, late, NULL);
    return LATCH_DONE;
}

static void job(void *data)
{
    (void)data;
}

static void job_done(latch_res *res, int status, void *data)
{
    (void)status;
    (void)data;
    latch_res_send(res, "worked", 6);
}

static int work(latch_req *req, latch_res *res, void *data)
{
    (void)req;
    (void)data;
    work_line = __LINE__ + 1;
    latch_work(res, job, job_done, NULL);
    return LATCH_DONE;
}

static void pull(latch_res *res, void *data)
{
    (void)data;
    latch_res_end(res, "piped", 5);
}

static void piped(latch_res *res, int status, void *data)
{
    (void)res;
    (void)status;
    (void)data;
}

static int pipe_route(latch_req *req, latch_res *res, void *data)
{
    (void)req;
    (void)data;
    pipe_line = __LINE__ + 1;
    latch_res_pipe(res, pull, piped, NULL);
    return LATCH_DONE;
}

/* ---- stderr captured in a file ---------------------------------------- */

static int saved_err = -1, cap_fd = -1;

static void capture_start(void)
{
    char path[] = "/tmp/latch-trace-XXXXXX";

    cap_fd = mkstemp(path);
    assert_true(cap_fd >= 0);
    unlink(path);
    saved_err = dup(2);
    assert_true(saved_err >= 0);
    assert_int_equal(dup2(cap_fd, 2), 2);
}

static void capture_stop(void)
{
    if (saved_err < 0)
        return;
    dup2(saved_err, 2);
    close(saved_err);
    saved_err = -1;
}

/* What stderr got so far (malloc'd). */
static char *captured(void)
{
    off_t n = lseek(cap_fd, 0, SEEK_END);
    char *buf = malloc((size_t)n + 1);

    assert_non_null(buf);
    assert_int_equal(pread(cap_fd, buf, (size_t)n, 0), n);
    buf[n] = '\0';
    return buf;
}

static void capture_stop(void);

/* Waits (bounded) until stderr holds `needle`; on a timeout, gives stderr
 * back first so that the failure can be read. */
static bool wait_for(const char *needle)
{
    int64_t deadline = th_now_ms() + 5000;

    while (th_now_ms() < deadline) {
        char *text = captured();
        bool found = strstr(text, needle) != NULL;
        free(text);
        if (found)
            return true;
        struct timespec ts = {0, 5 * 1000000L};
        nanosleep(&ts, NULL); /* polls the file, bounded by the deadline */
    }
    capture_stop();
    print_message("never saw \"%s\"\n", needle);
    return false;
}

/*
 * The lines of request `path` (its first request), without the
 * "LATCH <pid>: req <id> GET <path>: " prefix, joined by '\n'. Every line
 * of the capture must carry the prefix shape.
 */
static char *events_of(const char *method, const char *path)
{
    char *text = captured(), *save = NULL, *line, prefix[256];
    char *out = calloc(1, strlen(text) + 1);
    long pid = (long)getpid();
    unsigned long long want_id = 0;

    assert_non_null(out);
    for (line = strtok_r(text, "\n", &save); line != NULL;
         line = strtok_r(NULL, "\n", &save)) {
        long p;
        unsigned long long id;
        int n = 0;
        if (strncmp(line, "latch: ", 7) == 0 || line[0] == ' ')
            continue; /* the default violation report's block */
        assert_int_equal(sscanf(line, "LATCH %ld: req %llu %n", &p, &id, &n),
                         2);
        assert_int_equal(p, pid);
        snprintf(prefix, sizeof(prefix), "%s %s: ", method, path);
        if (strncmp(line + n, prefix, strlen(prefix)) != 0)
            continue;
        if (want_id == 0)
            want_id = id;
        if (id != want_id)
            continue;
        strcat(out, line + n + strlen(prefix));
        strcat(out, "\n");
    }
    free(text);
    return out;
}

static th_server S;

static void start(void)
{
    latch_app *app = latch_app_new();

    assert_non_null(app);
    latch_get(app, "/users", users, NULL);
    latch_get(app, "/twice", twice, NULL);
    latch_get(app, "/slow", slow, NULL);
    latch_get(app, "/timed", timed, NULL);
    latch_get(app, "/work", work, NULL);
    latch_get(app, "/pipe", pipe_route, NULL);
    latch_get(app, "/sub", subscribe, NULL);
    latch_app_set_violation_policy(app, LATCH_POLICY_COUNT);
    capture_start();
    th_server_start(&S, app);
}

static void stop(void)
{
    th_server_stop(&S);
    capture_stop();
}

static void get(const char *path)
{
    char req[256];
    size_t len;
    char *out;
    th_resp *r;

    snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", path);
    out = th_exchange(S.port, req, strlen(req), 1, &len);
    r = th_expect_responses(out, len, 1, NULL);
    th_resp_free(r, 1);
    free(r);
    free(out);
}

static void test_normal_request(void **state)
{
    char want[1024], *got;

    (void)state;
    start();
    get("/users");
    assert_true(wait_for("GET /users: closed"));
    got = events_of("GET", "/users");
    stop();
    snprintf(want, sizeof(want),
             "dispatched\n"
             "headers sent at latch_res_send (tests/integration/"
             "test_trace.c:%d)\n"
             "ended at latch_res_send (tests/integration/test_trace.c:%d)\n"
             "finished\n"
             "closed\n",
             send_line, send_line);
    assert_string_equal(got, want);
    free(got);
}

static void test_violation(void **state)
{
    char want[256], *got;

    (void)state;
    start();
    get("/twice");
    assert_true(wait_for("GET /twice: closed"));
    got = events_of("GET", "/twice");
    stop();
    snprintf(want, sizeof(want),
             "violation ERR_HTTP_HEADERS_SENT at latch_res_send "
             "(tests/integration/test_trace.c:%d)\n",
             twice_line);
    assert_non_null(strstr(got, want));
    free(got);
}

static void test_client_gone(void **state)
{
    char want[1024], *got;
    int fd;

    (void)state;
    start();
    fd = th_connect(S.port);
    th_send_str(fd, "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_true(wait_for("GET /slow: timer set"));
    close(fd);
    assert_true(wait_for("GET /slow: closed"));
    got = events_of("GET", "/slow");
    stop();
    snprintf(want, sizeof(want),
             "dispatched\n"
             "timer set (10000 ms) at latch_set_timeout "
             "(tests/integration/test_trace.c:%d)\n"
             "destroyed (client disconnect)\n"
             "cancelled (client gone)\n"
             "closed\n",
             timer_line);
    assert_string_equal(got, want);
    free(got);
}

static void test_timeout(void **state)
{
    char *got;

    (void)state;
    start();
    get("/timed");
    assert_true(wait_for("GET /timed: closed"));
    got = events_of("GET", "/timed");
    stop();
    assert_non_null(strstr(got, "cancelled (timeout)\n"));
    assert_non_null(strstr(got, "finished\nclosed\n"));
    free(got);
}

static void test_work(void **state)
{
    char want[256], *got;

    (void)state;
    start();
    get("/work");
    assert_true(wait_for("GET /work: closed"));
    got = events_of("GET", "/work");
    stop();
    snprintf(want, sizeof(want),
             "dispatched\n"
             "work queued at latch_work (tests/integration/test_trace.c:%d)\n"
             "work done (OK)\n",
             work_line);
    /* Then the send of job_done, finished, closed. */
    assert_int_equal(strncmp(got, want, strlen(want)), 0);
    assert_non_null(strstr(got, "finished\nclosed\n"));
    free(got);
}

static void test_pipe(void **state)
{
    char want[256], *got;

    (void)state;
    start();
    get("/pipe");
    assert_true(wait_for("GET /pipe: closed"));
    got = events_of("GET", "/pipe");
    stop();
    snprintf(
        want, sizeof(want),
        "dispatched\n"
        "pipe start at latch_res_pipe (tests/integration/test_trace.c:%d)\n",
        pipe_line);
    assert_int_equal(strncmp(got, want, strlen(want)), 0);
    assert_non_null(strstr(got, "finished\npipe done (OK)\nclosed\n"));
    free(got);
}

/* A subscription's start and end, in order, the end before the close. */
static void test_subscription(void **state)
{
    char want[256], *got, *a, *b, *c;
    int fd;

    (void)state;
    start();
    fd = th_connect(S.port);
    th_send_str(fd, "GET /sub HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_true(wait_for("GET /sub: subscribed news"));
    close(fd);
    assert_true(wait_for("GET /sub: closed"));
    got = events_of("GET", "/sub");
    stop();
    snprintf(want, sizeof(want),
             "subscribed news at latch_subscribe "
             "(tests/integration/test_trace.c:%d)\n",
             sub_line);
    a = strstr(got, want);
    b = strstr(got, "unsubscribed news\n");
    c = strstr(got, "closed\n");
    assert_non_null(a);
    assert_non_null(b);
    assert_non_null(c);
    assert_true(a < b && b < c);
    free(got);
}

static void test_control_bytes_in_path(void **state)
{
    char *text;

    (void)state;
    start();
    get("/users%0ALATCH%201:%20forged");
    assert_true(wait_for("forged: closed"));
    text = captured();
    stop();
    assert_null(strstr(text, "\nLATCH 1: forged"));
    assert_non_null(strstr(text, "GET /users\\x0aLATCH 1: forged: dispatched"));
    free(text);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_normal_request),
        cmocka_unit_test(test_violation),
        cmocka_unit_test(test_client_gone),
        cmocka_unit_test(test_timeout),
        cmocka_unit_test(test_work),
        cmocka_unit_test(test_pipe),
        cmocka_unit_test(test_subscription),
        cmocka_unit_test(test_control_bytes_in_path),
    };

    /* Read once, by the first latch_app_new. */
    setenv("LATCH_DEBUG", "lifecycle", 1);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
