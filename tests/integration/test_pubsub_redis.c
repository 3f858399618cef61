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
 * mid-stream: when Redis is back (empty: it kept nothing), the subscriber
 * gets one latch-gap, and events flow again with increasing ids.
 *
 * Holes closed (issue 15): a subscriber connection that drops while Redis
 * keeps running costs no gap (what was published meanwhile is read back
 * from the stream, in order, with its ids; a gap only when the stream was
 * trimmed past the last id delivered); a Last-Event-ID that another
 * process delivered and this one has not seen yet is served from the
 * stream, without a gap or a duplicate; a publish accepted just before
 * the command connection dropped is sent again on the next one.
 *
 * Replay across processes: a Last-Event-ID that this process never saw
 * (published while it had no subscriber) is answered from the stream, an
 * id older than the history or unknown gets one latch-gap; a publish made
 * right after subscribing (before Redis confirmed the SUBSCRIBE) reaches
 * the new subscriber; a publish from a thread that is no worker is
 * refused while Redis is down instead of vanishing.
 *
 * Skipped (a visible SKIP) only when redis-server is not installed.
 */
#include "sse_client.h"

#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/wait.h>

#include <cmocka.h>

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

/* Subscribes to a new channel ("j<n>") and publishes to it at once,
 * before Redis confirmed the SUBSCRIBE. */
static int h_join(latch_req *req, latch_res *res, void *data)
{
    static atomic_int n;
    char ch[32];

    (void)req;
    snprintf(ch, sizeof(ch), "j%d", atomic_fetch_add(&n, 1));
    if (latch_subscribe(res, ch, NULL, NULL) == 0)
        latch_publish(data, ch, "msg", "joined", 6);
    return LATCH_DONE;
}

static int h_hold(latch_req *req, latch_res *res, void *data);
static int h_swap(latch_req *req, latch_res *res, void *data);

static latch_app *redis_app_hist(int rport, int history)
{
    char url[64];
    latch_app *app = latch_app_new();

    assert_non_null(app);
    if (history > 0)
        assert_int_equal(latch_app_set_channel_history(app, history), 0);
    snprintf(url, sizeof(url), "redis://127.0.0.1:%d", rport);
    assert_int_equal(latch_app_set_pubsub(app, url), 0);
    latch_get(app, "/events", h_events, NULL);
    latch_get(app, "/join", h_join, app);
    latch_get(app, "/hold", h_hold, NULL);
    latch_get(app, "/swap", h_swap, app);
    return app;
}

static latch_app *redis_app(int rport)
{
    return redis_app_hist(rport, 0);
}

/* Waits until the server's workers run (a publish from another thread
 * before that is refused: no worker to carry it). */
static void wait_running(th_server *s)
{
    static const char get[] =
        "GET /none HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
    size_t len;
    char *reply = th_exchange(s->port, get, sizeof(get) - 1, 1, &len);

    assert_non_null(reply);
    free(reply);
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
    rport = th_free_port();
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
    rport = th_free_port();
    redis = redis_start(rport);
    th_server_start(&a, redis_app(rport));
    sse_open(&c, a.port, "/events", NULL, 0);
    wait_numsub(rport, "latch:c:room", 1);
    for (i = 0; i < 20; i++)
        latch_publish(a.app, "room", "msg", "x", 1);
    assert_int_equal(sse_wait_events(&c, 20, 10000), 20);
    stop_pid(redis, SIGKILL); /* mid-stream */
    /* Back, without the stream: latch cannot tell what was lost. */
    redis = redis_start(rport);
    wait_numsub(rport, "latch:c:room", 1); /* latch subscribed again */
    assert_int_equal(sse_wait_events(&c, 21, 10000), 21);
    assert_string_equal(c.ev[20].event, "latch-gap");
    gap = true;
    before = c.nev;
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

/* The stream's entries: ids in ids[0..n), data in data[0..n). */
static size_t stream_entries(int port, const char *key, char ids[][48],
                             char data[][16], size_t max)
{
    redisContext *c = redisConnect("127.0.0.1", port);
    redisReply *r;
    size_t i, j, n = 0;

    assert_true(c != NULL && c->err == 0);
    r = redisCommand(c, "XRANGE %s - +", key);
    assert_non_null(r);
    assert_int_equal(r->type, REDIS_REPLY_ARRAY);
    for (i = 0; i < r->elements && n < max; i++, n++) {
        redisReply *e = r->element[i], *f = e->element[1];
        snprintf(ids[n], 48, "%s", e->element[0]->str);
        data[n][0] = '\0';
        for (j = 0; j + 1 < f->elements; j += 2)
            if (strcmp(f->element[j]->str, "d") == 0)
                snprintf(data[n], 16, "%s", f->element[j + 1]->str);
    }
    freeReplyObject(r);
    redisFree(c);
    return n;
}

static void test_replay_from_stream(void **state)
{
    char ids[32][48], data[32][16], d[16], unknown[64];
    int rport, i;
    size_t n, k, b;
    pid_t redis;
    th_server a;
    sse_client c1, c2, c3, c4, c5;
    int64_t end;
    unsigned long long ms, sq;

    (void)state;
    if (skip_without_redis())
        skip();
    rport = th_free_port();
    redis = redis_start(rport);
    th_server_start(&a, redis_app_hist(rport, 16));
    wait_running(&a);
    /* Published while nobody here subscribes: only the stream has them. */
    for (i = 0; i < 30; i++) {
        snprintf(d, sizeof(d), "e%d", i);
        assert_true(latch_publish(a.app, "room", "msg", d, strlen(d)) >= 0);
    }
    end = th_now_ms() + 10000;
    do {
        n = stream_entries(rport, "latch:s:room", ids, data, 32);
    } while ((n == 0 || strcmp(data[n - 1], "e29") != 0) && th_now_ms() < end &&
             usleep(10000) == 0);
    assert_true(n >= 16);
    b = n - 16; /* e14 */
    assert_int_equal(sscanf(ids[b + 5], "%llu-%llu", &ms, &sq), 2);
    snprintf(unknown, sizeof(unknown), "%llu-%llu", ms, sq + 100000);

    sse_open(&c1, a.port, "/events", ids[b + 5], 0); /* had e19 */
    sse_open(&c2, a.port, "/events", ids[b], 0);     /* had e14, the oldest */
    sse_open(&c3, a.port, "/events", "1-0", 0);      /* older than history */
    sse_open(&c4, a.port, "/events", unknown, 0);    /* no such entry */
    assert_int_equal(sse_wait_events(&c1, 10, 10000), 10);
    assert_int_equal(sse_wait_events(&c2, 15, 10000), 15);
    assert_int_equal(sse_wait_events(&c3, 1, 10000), 1);
    assert_int_equal(sse_wait_events(&c4, 1, 10000), 1);
    for (k = 0; k < 10; k++) {
        assert_string_equal(c1.ev[k].id, ids[b + 6 + k]);
        assert_string_equal(c1.ev[k].data, data[b + 6 + k]);
    }
    for (k = 0; k < 15; k++)
        assert_string_equal(c2.ev[k].id, ids[b + 1 + k]);
    assert_string_equal(c3.ev[0].event, "latch-gap");
    assert_string_equal(c4.ev[0].event, "latch-gap");
    /* Once loaded, served from the ring at once. */
    sse_open(&c5, a.port, "/events", ids[b + 13], 0);
    assert_int_equal(sse_wait_events(&c5, 2, 10000), 2);
    assert_string_equal(c5.ev[0].id, ids[b + 14]);
    assert_string_equal(c5.ev[1].id, ids[b + 15]);
    /* Then live, once each. */
    assert_true(latch_publish(a.app, "room", "msg", "live", 4) >= 0);
    assert_int_equal(sse_wait_events(&c1, 11, 10000), 11);
    assert_int_equal(sse_wait_events(&c2, 16, 10000), 16);
    assert_int_equal(sse_wait_events(&c3, 2, 10000), 2);
    assert_int_equal(sse_wait_events(&c5, 3, 10000), 3);
    assert_string_equal(c1.ev[10].data, "live");
    assert_string_equal(c2.ev[15].data, "live");
    assert_string_equal(c3.ev[1].data, "live");
    assert_string_equal(c5.ev[2].data, "live");
    assert_int_equal(sse_wait_events(&c1, 12, 200), 11); /* no duplicate */
    check_ids(&c1, 0);
    check_ids(&c2, 0);
    /* Trimmed exactly to the history: what any process's ring holds. */
    assert_int_equal(n, 16);
    sse_close(&c1);
    sse_close(&c2);
    sse_close(&c3);
    sse_close(&c4);
    sse_close(&c5);
    th_server_stop(&a);
    stop_pid(redis, SIGTERM);
}

/* Each of 20 subscribers joins a channel new to the worker and publishes
 * to it in the same handler: Redis sees the publish before the SUBSCRIBE
 * (two connections), yet the subscriber gets it, once. */
static void test_publish_before_subscribe_confirmed(void **state)
{
    int rport, i;
    pid_t redis;
    th_server a;
    sse_client c;

    (void)state;
    if (skip_without_redis())
        skip();
    rport = th_free_port();
    redis = redis_start(rport);
    th_server_start(&a, redis_app(rport));
    for (i = 0; i < 20; i++) {
        sse_open(&c, a.port, "/join", NULL, 0);
        assert_int_equal(sse_wait_events(&c, 1, 10000), 1);
        assert_string_equal(c.ev[0].event, "msg");
        assert_string_equal(c.ev[0].data, "joined");
        assert_int_equal(sse_wait_events(&c, 2, 50), 1);
        sse_close(&c);
    }
    th_server_stop(&a);
    stop_pid(redis, SIGTERM);
}

/* /hold subscribes and keeps its response; /swap ends the held one (the
 * worker's last subscriber leaves: UNSUBSCRIBE) and subscribes its own in
 * the same call, before Redis could confirm the UNSUBSCRIBE. One worker:
 * both run on its thread. */
static latch_res *held;

static int h_hold(latch_req *req, latch_res *res, void *data)
{
    (void)req;
    (void)data;
    if (latch_subscribe(res, "room", NULL, NULL) == 0)
        held = res;
    return LATCH_DONE;
}

static int h_swap(latch_req *req, latch_res *res, void *data)
{
    (void)req;
    latch_res_destroy(held); /* its subscription ends now */
    held = NULL;
    if (latch_app_subscribers(data, "room") == 0)
        latch_subscribe(res, "room", NULL, NULL);
    return LATCH_DONE;
}

/*
 * A page reloaded: the worker's last subscriber of a channel leaves and a
 * new one arrives in the same loop turn, while Redis has not confirmed
 * the UNSUBSCRIBE: the SUBSCRIBE waits for that confirmation, the new
 * subscriber is served once its own SUBSCRIBE took effect, and gets the
 * next event.
 */
static void test_resubscribe_at_once(void **state)
{
    int rport;
    pid_t redis;
    th_server a;
    sse_client c1, c2;

    (void)state;
    if (skip_without_redis())
        skip();
    rport = th_free_port();
    redis = redis_start(rport);
    th_server_start(&a, redis_app(rport));
    sse_open(&c1, a.port, "/hold", NULL, 0);
    wait_numsub(rport, "latch:c:room", 1);
    assert_true(latch_publish(a.app, "room", "msg", "first", 5) >= 0);
    assert_int_equal(sse_wait_events(&c1, 1, 10000), 1);
    sse_open(&c2, a.port, "/swap", NULL, 0);
    while (!c2.head_done && sse_pump(&c2, 50) && !c1.eof)
        ;
    assert_true(c2.head_done);
    sse_wait_events(&c1, 2, 2000); /* its end */
    assert_true(c1.eof || c1.ended);
    wait_numsub(rport, "latch:c:room", 1);
    assert_true(latch_publish(a.app, "room", "msg", "second", 6) >= 0);
    assert_int_equal(sse_wait_events(&c2, 1, 5000), 1);
    assert_string_equal(c2.ev[0].data, "second");
    sse_close(&c1);
    sse_close(&c2);
    th_server_stop(&a);
    stop_pid(redis, SIGTERM);
}

/* latch_publish from a thread that is no worker goes through worker 0's
 * connection: while Redis is down it is refused, not dropped unseen. */
static void test_thread_publish_refused_while_down(void **state)
{
    int rport, r = 0;
    pid_t redis;
    th_server a;
    int64_t end;

    (void)state;
    if (skip_without_redis())
        skip();
    rport = th_free_port();
    redis = redis_start(rport);
    th_server_start(&a, redis_app(rport));
    wait_running(&a);
    assert_true(latch_publish(a.app, "t", NULL, "1", 1) >= 0);
    end = th_now_ms() + 10000;
    while (redis_int(rport, "XLEN %s", "latch:s:t") != 1 && th_now_ms() < end)
        usleep(10000);
    assert_int_equal(redis_int(rport, "XLEN %s", "latch:s:t"), 1);
    stop_pid(redis, SIGKILL);
    end = th_now_ms() + 10000;
    while ((r = latch_publish(a.app, "t", NULL, "2", 1)) >= 0 &&
           th_now_ms() < end)
        usleep(10000);
    assert_int_equal(r, LATCH_ERR_STATE);
    /* Back: accepted and stored again. */
    redis = redis_start(rport);
    end = th_now_ms() + 10000;
    while (redis_int(rport, "XLEN %s", "latch:s:t") != 1 && th_now_ms() < end) {
        latch_publish(a.app, "t", NULL, "3", 1);
        usleep(20000);
    }
    assert_true(redis_int(rport, "XLEN %s", "latch:s:t") >= 1);
    th_server_stop(&a);
    stop_pid(redis, SIGTERM);
}

/* One transaction on the test's Redis: kills the clients of `kill_type`
 * (NULL: none; the test's own connection is spared), then adds n entries
 * "<prefix><i>" to the stream `key` as latch's script does, but publishes
 * none: only a stream read finds them. Their ids in ids[0..n). */
static void kill_and_add(int port, const char *kill_type, const char *key,
                         int maxlen, const char *prefix, int n, char ids[][48])
{
    redisContext *c = redisConnect("127.0.0.1", port);
    redisReply *r;
    char d[32];
    int i, k;

    assert_true(c != NULL && c->err == 0);
    redisAppendCommand(c, "MULTI");
    if (kill_type != NULL)
        redisAppendCommand(c, "CLIENT KILL TYPE %s", kill_type);
    for (i = 0; i < n; i++) {
        snprintf(d, sizeof(d), "%s%d", prefix, i);
        redisAppendCommand(c, "XADD %s MAXLEN %d * e msg d %s f 1", key, maxlen,
                           d);
    }
    redisAppendCommand(c, "EXEC");
    for (k = 0; k < n + 2 + (kill_type != NULL); k++) {
        assert_int_equal(redisGetReply(c, (void **)&r), REDIS_OK);
        if (k == n + 1 + (kill_type != NULL)) {
            assert_int_equal(r->type, REDIS_REPLY_ARRAY);
            for (i = 0; i < n; i++)
                snprintf(ids[i], 48, "%s",
                         r->element[i + (kill_type != NULL)]->str);
        }
        freeReplyObject(r);
    }
    redisFree(c);
}

/* Events after `from` are exactly want[0..n) (data), then nothing else
 * within a short look (no duplicate). */
static void expect_data(sse_client *c, size_t from, const char **want, size_t n)
{
    size_t i;

    assert_int_equal(sse_wait_events(c, from + n, 10000), from + n);
    for (i = 0; i < n; i++)
        assert_string_equal(c->ev[from + i].data, want[i]);
    assert_int_equal(sse_wait_events(c, from + n + 1, 200), from + n);
}

/*
 * The worker's subscriber connection to Redis drops (CLIENT KILL) while
 * Redis keeps running, and events are added to the stream in the same
 * transaction, before latch can subscribe again: the subscriber gets
 * them from the stream once latch is back, in order and with the
 * stream's ids, then live ones, and no latch-gap: nothing was lost.
 */
static void test_reconnect_backfills(void **state)
{
    static const char *want[] = {"m0", "m1", "m2", "m3", "m4", "live"};
    char added[5][48];
    int rport, i;
    pid_t redis;
    th_server a;
    sse_client c;

    (void)state;
    if (skip_without_redis())
        skip();
    rport = th_free_port();
    redis = redis_start(rport);
    th_server_start(&a, redis_app_hist(rport, 64));
    sse_open(&c, a.port, "/events", NULL, 0);
    wait_numsub(rport, "latch:c:room", 1);
    for (i = 0; i < 10; i++)
        assert_true(latch_publish(a.app, "room", "msg", "x", 1) >= 0);
    assert_int_equal(sse_wait_events(&c, 10, 10000), 10);
    kill_and_add(rport, "pubsub", "latch:s:room", 64, "m", 5, added);
    wait_numsub(rport, "latch:c:room", 1); /* subscribed again */
    assert_true(latch_publish(a.app, "room", "msg", "live", 4) >= 0);
    expect_data(&c, 10, want, 6);
    for (i = 0; i < 5; i++)
        assert_string_equal(c.ev[10 + i].id, added[i]);
    for (i = 0; i < 16; i++)
        assert_string_equal(c.ev[i].event, "msg");
    check_ids(&c, 0);
    sse_close(&c);
    th_server_stop(&a);
    stop_pid(redis, SIGTERM);
}

/*
 * The same drop, but more events than the history were added while latch
 * was away: the last id it delivered is trimmed from the stream, so the
 * subscriber gets one latch-gap (naming that id), then what the stream
 * still holds, then live events.
 */
static void test_reconnect_trimmed_gap(void **state)
{
    static const char *want[] = {"m2", "m3", "m4", "m5", "live"};
    char added[6][48], gap_data[96];
    int rport, i;
    pid_t redis;
    th_server a;
    sse_client c;

    (void)state;
    if (skip_without_redis())
        skip();
    rport = th_free_port();
    redis = redis_start(rport);
    th_server_start(&a, redis_app_hist(rport, 4));
    sse_open(&c, a.port, "/events", NULL, 0);
    wait_numsub(rport, "latch:c:room", 1);
    for (i = 0; i < 3; i++)
        assert_true(latch_publish(a.app, "room", "msg", "x", 1) >= 0);
    assert_int_equal(sse_wait_events(&c, 3, 10000), 3);
    kill_and_add(rport, "pubsub", "latch:s:room", 4, "m", 6, added);
    wait_numsub(rport, "latch:c:room", 1);
    assert_true(latch_publish(a.app, "room", "msg", "live", 4) >= 0);
    assert_true(sse_wait_events(&c, 4, 10000) >= 4);
    assert_string_equal(c.ev[3].event, "latch-gap");
    snprintf(gap_data, sizeof(gap_data), "{\"last_id\":\"%s\"}", c.ev[2].id);
    assert_string_equal(c.ev[3].data, gap_data);
    expect_data(&c, 4, want, 5);
    for (i = 0; i < 4; i++)
        assert_string_equal(c.ev[4 + i].id, added[2 + i]);
    check_ids(&c, 0);
    sse_close(&c);
    th_server_stop(&a);
    stop_pid(redis, SIGTERM);
}

/*
 * Last-Event-IDs newer than anything this process has delivered: entries
 * of the stream that its subscriber connection has not brought (added
 * here without a publish, as another process's events look to a worker
 * that lags). The stream says what follows: c1 gets the two entries after
 * its id, c2 (the newest) nothing yet, neither a gap; an id no entry
 * reaches gets one gap. Then a live event reaches each once.
 */
static void test_last_event_id_ahead(void **state)
{
    static const char *want1[] = {"s1", "s2", "live"};
    static const char *want2[] = {"live"};
    char added[3][48];
    int rport;
    pid_t redis;
    th_server a;
    sse_client c0, c1, c2, c3;

    (void)state;
    if (skip_without_redis())
        skip();
    rport = th_free_port();
    redis = redis_start(rport);
    th_server_start(&a, redis_app_hist(rport, 16));
    sse_open(&c0, a.port, "/events", NULL, 0);
    wait_numsub(rport, "latch:c:room", 1);
    assert_true(latch_publish(a.app, "room", "msg", "first", 5) >= 0);
    assert_int_equal(sse_wait_events(&c0, 1, 10000), 1);
    kill_and_add(rport, NULL, "latch:s:room", 16, "s", 3, added);
    sse_open(&c1, a.port, "/events", added[0], 0);
    sse_open(&c2, a.port, "/events", added[2], 0);
    sse_open(&c3, a.port, "/events", "99999999999999-0", 0);
    assert_int_equal(sse_wait_events(&c1, 2, 10000), 2);
    assert_string_equal(c1.ev[0].id, added[1]);
    assert_string_equal(c1.ev[1].id, added[2]);
    assert_int_equal(sse_wait_events(&c3, 1, 10000), 1);
    assert_string_equal(c3.ev[0].event, "latch-gap");
    assert_true(latch_publish(a.app, "room", "msg", "live", 4) >= 0);
    expect_data(&c1, 0, want1, 3);
    expect_data(&c2, 0, want2, 1);
    assert_int_equal(sse_wait_events(&c3, 2, 10000), 2);
    assert_string_equal(c3.ev[1].data, "live");
    assert_string_equal(c2.ev[0].event, "msg");
    check_ids(&c1, 0);
    sse_close(&c0);
    sse_close(&c1);
    sse_close(&c2);
    sse_close(&c3);
    th_server_stop(&a);
    stop_pid(redis, SIGTERM);
}

/* The test's Redis's blocked (here: paused) clients. */
static long long blocked_clients(int port)
{
    redisContext *c = redisConnect("127.0.0.1", port);
    redisReply *r;
    const char *p;
    long long v = -1;

    if (c == NULL || c->err) {
        redisFree(c);
        return -1;
    }
    r = redisCommand(c, "INFO clients");
    if (r != NULL && r->type == REDIS_REPLY_STRING &&
        (p = strstr(r->str, "blocked_clients:")) != NULL)
        v = strtoll(p + 16, NULL, 10);
    freeReplyObject(r);
    redisFree(c);
    return v;
}

/*
 * Publishes accepted from a thread that is no worker, held by Redis
 * (CLIENT PAUSE WRITE) when latch's command connection is killed: Redis
 * never ran them, and latch sends them again on its next connection, in
 * order, once each; the subscriber gets all of them, without a gap.
 */
static void test_publish_retried_after_drop(void **state)
{
    static const char *want[] = {"p0", "p1", "p2", "p3", "p4"};
    int rport, i;
    pid_t redis;
    th_server a;
    sse_client c;
    int64_t end;

    (void)state;
    if (skip_without_redis())
        skip();
    rport = th_free_port();
    redis = redis_start(rport);
    th_server_start(&a, redis_app(rport));
    sse_open(&c, a.port, "/events", NULL, 0);
    wait_numsub(rport, "latch:c:room", 1);
    assert_true(latch_publish(a.app, "room", "msg", "a", 1) >= 0);
    assert_int_equal(sse_wait_events(&c, 1, 10000), 1);
    assert_int_equal(redis_int(rport, "CLIENT PAUSE 20000 %s", "WRITE"), 0);
    for (i = 0; i < 5; i++)
        assert_true(latch_publish(a.app, "room", "msg", want[i], 2) >= 0);
    end = th_now_ms() + 10000;
    while (blocked_clients(rport) < 1 && th_now_ms() < end)
        usleep(10000);
    assert_int_equal(blocked_clients(rport), 1); /* the first is held */
    assert_true(redis_int(rport, "CLIENT KILL TYPE %s", "normal") >= 1);
    assert_int_equal(redis_int(rport, "CLIENT UNPAUSE%s", ""), 0);
    expect_data(&c, 1, want, 5);
    check_ids(&c, 0);
    assert_int_equal(redis_int(rport, "XLEN %s", "latch:s:room"), 6);
    sse_close(&c);
    th_server_stop(&a);
    stop_pid(redis, SIGTERM);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_two_processes, teardown),
        cmocka_unit_test_teardown(test_redis_killed_and_restarted, teardown),
        cmocka_unit_test_teardown(test_replay_from_stream, teardown),
        cmocka_unit_test_teardown(test_publish_before_subscribe_confirmed,
                                  teardown),
        cmocka_unit_test_teardown(test_resubscribe_at_once, teardown),
        cmocka_unit_test_teardown(test_thread_publish_refused_while_down,
                                  teardown),
        cmocka_unit_test_teardown(test_reconnect_backfills, teardown),
        cmocka_unit_test_teardown(test_reconnect_trimmed_gap, teardown),
        cmocka_unit_test_teardown(test_last_event_id_ahead, teardown),
        cmocka_unit_test_teardown(test_publish_retried_after_drop, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
