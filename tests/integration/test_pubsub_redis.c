/*
 * test_pubsub_redis.c - latch's pub/sub across processes through a real
 * Redis (redis-server, started by this test on a free loopback port and
 * stopped by its pid).
 *
 * Two processes: this test's own server (app A) and the chat example
 * (examples/chat, process B), both with latch_app_set_pubsub on the same
 * Redis. An event published in A reaches the SSE clients of both, and one
 * posted to B's form reaches A's, each exactly once, in the same order,
 * with the same ids (Redis stream ids, increasing). Then Redis is killed
 * mid-stream: the subscriber gets one latch-gap, latch reconnects when
 * Redis is back, and events flow again with increasing ids.
 *
 * Skipped (a visible SKIP) only when redis-server is not installed.
 */
#include "sse_client.h"

#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <sys/wait.h>

#include <cmocka.h>

static int free_port(void)
{
    struct sockaddr_in sa;
    socklen_t sl = sizeof(sa);
    int fd = socket(AF_INET, SOCK_STREAM, 0), port;

    assert_true(fd >= 0);
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &sl), 0);
    port = ntohs(sa.sin_port);
    close(fd);
    return port;
}

/* A command to the test's Redis; the integer reply (or -1). */
static long long redis_int(int port, const char *fmt, const char *arg)
{
    redisContext *c = redisConnect("127.0.0.1", port);
    redisReply *r;
    long long v = -1;

    if (c == NULL || c->err) {
        redisFree(c);
        return -1;
    }
    r = redisCommand(c, fmt, arg);
    if (r != NULL && r->type == REDIS_REPLY_INTEGER)
        v = r->integer;
    else if (r != NULL && r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
             r->element[1]->type == REDIS_REPLY_INTEGER)
        v = r->element[1]->integer; /* PUBSUB NUMSUB name n */
    else if (r != NULL && r->type == REDIS_REPLY_STATUS)
        v = 0;
    freeReplyObject(r);
    redisFree(c);
    return v;
}

/* Children to stop whatever happens to the test (cmocka's teardown). */
static pid_t kids[4];

static void track(pid_t pid)
{
    int i;

    for (i = 0; i < 4; i++)
        if (kids[i] == 0) {
            kids[i] = pid;
            return;
        }
}

static int teardown(void **state)
{
    int i, st;

    (void)state;
    for (i = 0; i < 4; i++)
        if (kids[i] > 0) {
            kill(kids[i], SIGKILL);
            waitpid(kids[i], &st, 0);
            kids[i] = 0;
        }
    return 0;
}

static pid_t redis_start(int port)
{
    char p[16];
    pid_t pid;
    int64_t end = th_now_ms() + 10000;

    snprintf(p, sizeof(p), "%d", port);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int null = open("/dev/null", O_WRONLY);
        dup2(null, 1);
        dup2(null, 2);
        execlp("redis-server", "redis-server", "--port", p, "--bind",
               "127.0.0.1", "--save", "", "--appendonly", "no", NULL);
        _exit(127);
    }
    track(pid);
    while (redis_int(port, "PING%s", "") != 0 && th_now_ms() < end)
        usleep(10000);
    assert_int_equal(redis_int(port, "PING%s", ""), 0);
    return pid;
}

static void stop_pid(pid_t pid, int sig)
{
    int st, i;

    kill(pid, sig);
    waitpid(pid, &st, 0);
    for (i = 0; i < 4; i++)
        if (kids[i] == pid)
            kids[i] = 0;
}

static void wait_numsub(int port, const char *channel, long long n)
{
    int64_t end = th_now_ms() + 10000;

    while (redis_int(port, "PUBSUB NUMSUB %s", channel) != n &&
           th_now_ms() < end)
        usleep(10000);
    assert_int_equal(redis_int(port, "PUBSUB NUMSUB %s", channel), n);
}

static int h_events(latch_req *req, latch_res *res, void *data)
{
    (void)req;
    (void)data;
    latch_subscribe(res, "room", NULL, NULL);
    return LATCH_DONE;
}

static latch_app *redis_app(int rport)
{
    char url[64];
    latch_app *app = latch_app_new();

    assert_non_null(app);
    snprintf(url, sizeof(url), "redis://127.0.0.1:%d", rport);
    assert_int_equal(latch_app_set_pubsub(app, url), 0);
    latch_get(app, "/events", h_events, NULL);
    return app;
}

/* Starts examples/chat on a free port; its port in *port. */
static pid_t chat_start(int rport, int *port)
{
    const char *dir = getenv("LATCH_EXAMPLES_DIR");
    char bin[512], url[64], line[256] = "";
    int fds[2];
    pid_t pid;
    FILE *f;

    assert_non_null(dir);
    snprintf(bin, sizeof(bin), "%s/chat", dir);
    snprintf(url, sizeof(url), "redis://127.0.0.1:%d", rport);
    assert_int_equal(pipe(fds), 0);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(fds[1], 1);
        close(fds[0]);
        execl(bin, bin, "-p", "0", "-r", url, NULL);
        _exit(127);
    }
    track(pid);
    close(fds[1]);
    f = fdopen(fds[0], "r");
    assert_non_null(f);
    assert_non_null(fgets(line, sizeof(line), f));
    fclose(f);
    assert_int_equal(
        sscanf(line, "chat: listening on http://127.0.0.1:%d/", port), 1);
    return pid;
}

static bool skip_without_redis(void)
{
    if (system("command -v redis-server >/dev/null 2>&1") == 0)
        return false;
    fprintf(stderr, "SKIP: redis-server is not installed\n");
    return true;
}

/* "ms-seq" ids, strictly increasing along the client's events. */
static void check_ids(sse_client *c, size_t from)
{
    unsigned long long ms0 = 0, sq0 = 0, ms, sq;
    size_t i;

    for (i = from; i < c->nev; i++) {
        if (strcmp(c->ev[i].event, "latch-gap") == 0)
            continue;
        assert_int_equal(sscanf(c->ev[i].id, "%llu-%llu", &ms, &sq), 2);
        assert_true(ms > ms0 || (ms == ms0 && sq > sq0));
        ms0 = ms;
        sq0 = sq;
    }
}

static void test_two_processes(void **state)
{
    int rport, bport, i;
    pid_t redis, chat;
    th_server a;
    sse_client ca, cb;
    char data[16], *reply;
    size_t len;

    (void)state;
    if (skip_without_redis())
        skip();
    rport = free_port();
    redis = redis_start(rport);
    chat = chat_start(rport, &bport);
    th_server_start(&a, redis_app(rport));
    sse_open(&ca, a.port, "/events", NULL, 0);
    sse_open(&cb, bport, "/events", NULL, 0);
    wait_numsub(rport, "latch:c:room", 2);
    for (i = 0; i < 200; i++) {
        snprintf(data, sizeof(data), "a%d", i);
        assert_true(latch_publish(a.app, "room", "msg", data, strlen(data)) >=
                    0);
    }
    assert_int_equal(sse_wait_events(&ca, 200, 10000), 200);
    /* One through B's form, after A's: the order across processes is the
     * order Redis ran the publishes in. */
    {
        static const char post[] =
            "POST /send HTTP/1.1\r\nHost: t\r\nContent-Type: "
            "application/x-www-form-urlencoded\r\nContent-Length: 9\r\n"
            "Connection: close\r\n\r\ntext=b+1!";
        reply = th_exchange(bport, post, sizeof(post) - 1, 1, &len);
        assert_non_null(strstr(reply, "HTTP/1.1 204"));
        free(reply);
    }
    assert_int_equal(sse_wait_events(&ca, 201, 10000), 201);
    assert_int_equal(sse_wait_events(&cb, 201, 10000), 201);
    for (i = 0; i < 201; i++) {
        /* Same events, same order, same ids in both processes. */
        assert_string_equal(ca.ev[i].id, cb.ev[i].id);
        assert_string_equal(ca.ev[i].data, cb.ev[i].data);
        assert_string_equal(ca.ev[i].event, "msg");
        if (i < 200) {
            snprintf(data, sizeof(data), "a%d", i);
            assert_string_equal(ca.ev[i].data, data);
        }
    }
    assert_string_equal(ca.ev[200].data, "b 1!");
    check_ids(&ca, 0);
    sse_close(&ca);
    sse_close(&cb);
    th_server_stop(&a);
    stop_pid(chat, SIGTERM);
    stop_pid(redis, SIGTERM);
}

static void test_redis_killed_and_restarted(void **state)
{
    int rport, i;
    size_t before, k;
    pid_t redis;
    th_server a;
    sse_client c;
    bool gap = false, after = false;
    int64_t end;

    (void)state;
    if (skip_without_redis())
        skip();
    rport = free_port();
    redis = redis_start(rport);
    th_server_start(&a, redis_app(rport));
    sse_open(&c, a.port, "/events", NULL, 0);
    wait_numsub(rport, "latch:c:room", 1);
    for (i = 0; i < 20; i++)
        latch_publish(a.app, "room", "msg", "x", 1);
    assert_int_equal(sse_wait_events(&c, 20, 10000), 20);
    stop_pid(redis, SIGKILL); /* mid-stream */
    assert_int_equal(sse_wait_events(&c, 21, 10000), 21);
    assert_string_equal(c.ev[20].event, "latch-gap");
    gap = true;
    before = c.nev;
    redis = redis_start(rport);
    wait_numsub(rport, "latch:c:room", 1); /* latch subscribed again */
    end = th_now_ms() + 10000;
    while (!after && th_now_ms() < end) {
        latch_publish(a.app, "room", "msg", "y", 1);
        sse_wait_events(&c, c.nev + 1, 100);
        for (k = before; k < c.nev; k++)
            after = after || strcmp(c.ev[k].data, "y") == 0;
    }
    assert_true(gap && after);
    check_ids(&c, 0);
    assert_int_equal(latch_app_subscribers(a.app, "room"), 1);
    sse_close(&c);
    th_server_stop(&a);
    stop_pid(redis, SIGTERM);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_two_processes, teardown),
        cmocka_unit_test_teardown(test_redis_killed_and_restarted, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
