/*
 * test_res_stress.c - the response state machine under load: 10,000
 * requests over 50 keep-alive connections (pipelined up to 4 deep), each
 * handler running a random but reproducible sequence of response calls,
 * legal and illegal, some at once and some later from timers (0-5 ms) or
 * posts. The test models the state machine on its side and predicts, for
 * every call, whether it must be refused and with which code; then it
 * asserts that the server reported exactly that many violations of each
 * code, that every connection carried exactly one well-formed response per
 * request, in order, with the predicted status and body, and that every
 * deferred step ran.
 *
 * The seed is printed; LATCH_STRESS_SEED=<n> replays a run.
 */
#include "harness.h"

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#define NCONN 50
#define NREQ 10000
#define PER_CONN (NREQ / NCONN)
#define DEPTH 4    /* requests in flight per connection */
#define MAX_OPS 12 /* random ops, plus the final end() */
#define DEADLINE_MS 55000

/* ------------------------------------------------------------------ */
/* The sequences, generated the same way on both sides                  */
/* ------------------------------------------------------------------ */

enum {
    O_SET,
    O_APPEND,
    O_REMOVE,
    O_BAD_HEADER, /* a value with CR LF: ERR_INVALID_CHAR when FRESH */
    O_WRITE_HEAD,
    O_STATUS,
    O_WRITE,
    O_END_DATA,
    O_END_EMPTY,
    O_SEND,
    O_JSON,
    O_REDIRECT,
    O_SEND_STATUS,
    O_YIELD, /* the rest runs later: a timer while not ended, else a post */
    O_NOPS
};

typedef struct op {
    uint8_t kind;
    uint8_t arg; /* the yield's delay in ms */
} op;

typedef struct seq {
    int n;
    op ops[MAX_OPS + 1];
} seq;

static uint64_t splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);

    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* The sequence of one request; always ends with end() without data, so
 * every request is answered (a no-op when it already was). */
static void make_seq(uint64_t seed, seq *s)
{
    uint64_t st = seed;
    int n = 1 + (int)(splitmix(&st) % MAX_OPS);

    for (int i = 0; i < n; i++) {
        uint64_t r = splitmix(&st);
        s->ops[i].kind = (uint8_t)(r % O_NOPS);
        s->ops[i].arg = (uint8_t)((r >> 32) % 6);
    }
    s->ops[n].kind = O_END_EMPTY;
    s->ops[n].arg = 0;
    s->n = n + 1;
}

/* ------------------------------------------------------------------ */
/* The test's model of a response                                       */
/* ------------------------------------------------------------------ */

enum { M_FRESH, M_HEADERS_SENT, M_ENDED };

/* Violations predicted, by code. */
enum { V_HEADERS_SENT, V_WRITE_AFTER_END, V_INVALID_CHAR, V_NCODES };

typedef struct expect {
    int status;
    char body[256];
    size_t body_len;
    int v[V_NCODES];
    int timers, posts;
} expect;

static void body_add(expect *e, const char *s, size_t n)
{
    assert_true(e->body_len + n < sizeof(e->body));
    memcpy(e->body + e->body_len, s, n);
    e->body_len += n;
    e->body[e->body_len] = '\0';
}

static void body_set(expect *e, const char *s, size_t n)
{
    e->body_len = 0;
    body_add(e, s, n);
}

/* The bytes op i writes, the same on both sides. */
static size_t op_data(int kind, int i, char *buf, size_t cap)
{
    int n;

    switch (kind) {
    case O_WRITE: n = snprintf(buf, cap, "w%d.", i); break;
    case O_END_DATA: n = snprintf(buf, cap, "e%d.", i); break;
    case O_SEND: n = snprintf(buf, cap, "s%d.", i); break;
    case O_JSON: n = snprintf(buf, cap, "{\"j\":%d}", i); break;
    default: n = 0; buf[0] = '\0';
    }
    return (size_t)n;
}

/* Predicts what the server must do with `s`: the refusals, the status and
 * body on the wire, and how many steps run from timers and posts. */
static void predict(const seq *s, expect *e)
{
    static const char redirect_body[] = "Found. Redirecting to /r";
    int st = M_FRESH;
    char data[32];

    memset(e, 0, sizeof(*e));
    e->status = 200;
    for (int i = 0; i < s->n; i++) {
        int k = s->ops[i].kind;
        size_t dn = op_data(k, i, data, sizeof(data));
        switch (k) {
        case O_SET:
        case O_APPEND:
        case O_REMOVE:
            if (st != M_FRESH)
                e->v[V_HEADERS_SENT]++;
            break;
        case O_BAD_HEADER:
            e->v[st == M_FRESH ? V_INVALID_CHAR : V_HEADERS_SENT]++;
            break;
        case O_WRITE_HEAD:
            if (st != M_FRESH) {
                e->v[V_HEADERS_SENT]++;
                break;
            }
            e->status = 201;
            st = M_HEADERS_SENT;
            break;
        case O_STATUS:
            if (st != M_FRESH)
                e->v[V_HEADERS_SENT]++;
            else
                e->status = 202;
            break;
        case O_WRITE:
            if (st == M_ENDED) {
                e->v[V_WRITE_AFTER_END]++;
                break;
            }
            body_add(e, data, dn);
            st = M_HEADERS_SENT;
            break;
        case O_END_DATA:
            if (st == M_ENDED) {
                e->v[V_WRITE_AFTER_END]++;
                break;
            }
            body_add(e, data, dn);
            st = M_ENDED;
            break;
        case O_END_EMPTY: st = M_ENDED; break; /* silent after an end */
        case O_SEND:
        case O_JSON:
        case O_REDIRECT:
        case O_SEND_STATUS:
            if (st != M_FRESH) {
                e->v[V_HEADERS_SENT]++;
                break;
            }
            if (k == O_REDIRECT) {
                e->status = 302;
                body_set(e, redirect_body, sizeof(redirect_body) - 1);
            } else if (k == O_SEND_STATUS) {
                e->status = 404;
                body_set(e, "Not Found", 9);
            } else {
                body_set(e, data, dn);
            }
            st = M_ENDED;
            break;
        case O_YIELD:
            if (st == M_ENDED)
                e->posts++;
            else
                e->timers++;
            break;
        }
    }
}

/* ------------------------------------------------------------------ */
/* The server side: run the sequence                                    */
/* ------------------------------------------------------------------ */

static atomic_int v_count[V_NCODES];
static atomic_int v_other;
static atomic_int v_total;
static atomic_int timers_run, posts_run, jobs_done, job_errors;

static void count_violation(const latch_violation *v, void *data)
{
    (void)data;
    atomic_fetch_add(&v_total, 1);
    switch (v->code) {
    case LATCH_ERR_HTTP_HEADERS_SENT:
        atomic_fetch_add(&v_count[V_HEADERS_SENT], 1);
        break;
    case LATCH_ERR_STREAM_WRITE_AFTER_END:
        atomic_fetch_add(&v_count[V_WRITE_AFTER_END], 1);
        break;
    case LATCH_ERR_INVALID_CHAR:
        atomic_fetch_add(&v_count[V_INVALID_CHAR], 1);
        break;
    default: atomic_fetch_add(&v_other, 1);
    }
}

typedef struct job {
    latch_res *res;
    seq s;
    int i;
} job;

static void run_job(job *j);

static void resume_timer(latch_res *res, void *data)
{
    (void)res;
    atomic_fetch_add(&timers_run, 1);
    run_job(data);
}

static void resume_post(latch_res *res, void *data)
{
    (void)res;
    atomic_fetch_add(&posts_run, 1);
    run_job(data);
}

static void exec_op(latch_res *res, int k, int i)
{
    char data[32];
    size_t dn = op_data(k, i, data, sizeof(data));

    switch (k) {
    case O_SET: latch_res_set_header(res, "X-S", "1"); break;
    case O_APPEND: latch_res_append_header(res, "X-S", "2"); break;
    case O_REMOVE: latch_res_remove_header(res, "X-S"); break;
    case O_BAD_HEADER: latch_res_set_header(res, "X-Bad", "a\r\nb: c"); break;
    case O_WRITE_HEAD: latch_res_write_head(res, 201); break;
    case O_STATUS: latch_res_status(res, 202); break;
    case O_WRITE: latch_res_write(res, data, dn); break;
    case O_END_DATA: latch_res_end(res, data, dn); break;
    case O_END_EMPTY: latch_res_end(res, NULL, 0); break;
    case O_SEND: latch_res_send(res, data, dn); break;
    case O_JSON: latch_res_json(res, data); break;
    case O_REDIRECT: latch_res_redirect(res, 302, "/r"); break;
    case O_SEND_STATUS: latch_res_send_status(res, 404); break;
    }
}

/* Runs the job's ops until a yield (which schedules the rest) or the
 * end (which releases the response). */
static void run_job(job *j)
{
    while (j->i < j->s.n) {
        const op *o = &j->s.ops[j->i];
        int i = j->i++;
        if (o->kind != O_YIELD) {
            exec_op(j->res, o->kind, i);
            continue;
        }
        /* A timer is cancelled when its response finishes, so once the
         * response ended, the rest goes through a post (it always runs). */
        if (!latch_res_writable_ended(j->res)) {
            if (latch_set_timeout(j->res, o->arg, resume_timer, j) != NULL)
                return;
        } else if (latch_res_post(j->res, resume_post, j) == 0) {
            return;
        }
        atomic_fetch_add(&job_errors, 1);
    }
    latch_res_release(j->res);
    free(j);
    atomic_fetch_add(&jobs_done, 1);
}

static int stress_handler(latch_req *req, latch_res *res, void *data)
{
    const char *p = latch_req_path(req);
    job *j;

    (void)data;
    j = malloc(sizeof(*j));
    if (j == NULL || strncmp(p, "/s/", 3) != 0) {
        free(j);
        atomic_fetch_add(&job_errors, 1);
        latch_res_send_status(res, 500);
        return LATCH_DONE;
    }
    make_seq(strtoull(p + 3, NULL, 16), &j->s);
    j->i = 0;
    j->res = res;
    latch_res_retain(res);
    run_job(j);
    return LATCH_DONE;
}

/* ------------------------------------------------------------------ */
/* The clients                                                          */
/* ------------------------------------------------------------------ */

typedef struct client {
    int fd;
    int sent, done;
    expect want[DEPTH]; /* ring: requests in flight, in order */
    uint64_t seeds[DEPTH];
    char *buf;
    size_t len, cap;
} client;

static uint64_t run_seed;
static expect total;

static uint64_t request_seed(int c, int k)
{
    uint64_t s = run_seed ^ ((uint64_t)c << 40) ^ (uint64_t)k;

    return splitmix(&s);
}

static void add_expect(const expect *e)
{
    for (int i = 0; i < V_NCODES; i++)
        total.v[i] += e->v[i];
    total.timers += e->timers;
    total.posts += e->posts;
}

static void send_next(client *cl, int c)
{
    char req[128];
    uint64_t seed = request_seed(c, cl->sent);
    seq s;
    int slot = cl->sent % DEPTH;

    make_seq(seed, &s);
    predict(&s, &cl->want[slot]);
    cl->seeds[slot] = seed;
    add_expect(&cl->want[slot]);
    snprintf(req, sizeof(req),
             "GET /s/%016" PRIx64 " HTTP/1.1\r\nHost: x\r\n\r\n", seed);
    th_send_str(cl->fd, req);
    cl->sent++;
}

/* Reads what is there and checks each complete response against the
 * prediction for its request. Returns true once the client is done. */
static bool client_step(client *cl, int c)
{
    ssize_t n;

    if (cl->cap - cl->len < 4096) {
        cl->cap = cl->cap ? cl->cap * 2 : 16384;
        cl->buf = realloc(cl->buf, cl->cap + 1);
        assert_non_null(cl->buf);
    }
    n = recv(cl->fd, cl->buf + cl->len, cl->cap - cl->len, MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return false;
    if (n <= 0)
        fail_msg("connection %d ended after %d responses (%s)", c, cl->done,
                 n == 0 ? "FIN" : strerror(errno));
    cl->len += (size_t)n;
    cl->buf[cl->len] = '\0';
    for (;;) {
        th_resp r;
        size_t used;
        const char *err = NULL;
        int got = th_wire_take(cl->buf, cl->len, NULL, &r, &used, &err);
        const expect *e = &cl->want[cl->done % DEPTH];
        if (got < 0)
            fail_msg("connection %d, response %d (seed %016" PRIx64
                     "): %s in:\n%.*s",
                     c, cl->done, cl->seeds[cl->done % DEPTH], err,
                     (int)(cl->len > 1500 ? 1500 : cl->len), cl->buf);
        if (got == 0)
            break;
        if (cl->done >= cl->sent)
            fail_msg("connection %d: a response nobody asked for", c);
        if (r.status != e->status || r.body_len != e->body_len ||
            memcmp(r.body, e->body, e->body_len) != 0)
            fail_msg("connection %d, response %d (seed %016" PRIx64
                     "): got %d \"%s\", expected %d \"%s\"",
                     c, cl->done, cl->seeds[cl->done % DEPTH], r.status, r.body,
                     e->status, e->body);
        if (strstr(r.head, "Connection: keep-alive\r\n") == NULL)
            fail_msg("connection %d, response %d: not keep-alive:\n%s", c,
                     cl->done, r.head);
        th_resp_free(&r, 1);
        memmove(cl->buf, cl->buf + used, cl->len - used);
        cl->len -= used;
        cl->done++;
        if (cl->sent < PER_CONN)
            send_next(cl, c);
    }
    return cl->done == PER_CONN;
}

static void test_random_sequences_under_load(void **state)
{
    static client cl[NCONN];
    static struct pollfd pfd[NCONN];
    th_server srv;
    latch_app *app = latch_app_new();
    int64_t start = th_now_ms(), deadline = start + DEADLINE_MS;
    int left = NCONN, i;
    const char *env = getenv("LATCH_STRESS_SEED");

    (void)state;
    run_seed = env != NULL ? strtoull(env, NULL, 0)
                           : (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
    printf("stress seed: %" PRIu64 " (LATCH_STRESS_SEED=%" PRIu64
           " replays it)\n",
           run_seed, run_seed);
    fflush(stdout);
    memset(&total, 0, sizeof(total));
    assert_non_null(app);
    assert_int_equal(latch_app_on_violation(app, count_violation, NULL), 0);
    assert_int_equal(latch_use(app, NULL, stress_handler, NULL), 0);
    th_server_start(&srv, app);

    memset(cl, 0, sizeof(cl));
    for (i = 0; i < NCONN; i++) {
        cl[i].fd = th_connect(srv.port);
        for (int d = 0; d < DEPTH; d++)
            send_next(&cl[i], i);
    }
    while (left > 0) {
        int64_t now = th_now_ms();
        int r;
        if (now >= deadline) {
            int done = 0;
            for (i = 0; i < NCONN; i++)
                done += cl[i].done;
            fail_msg("only %d of %d responses in %d ms (seed %" PRIu64 ")",
                     done, NREQ, DEADLINE_MS, run_seed);
        }
        for (i = 0; i < NCONN; i++) {
            pfd[i].fd = cl[i].done == PER_CONN ? -1 : cl[i].fd;
            pfd[i].events = POLLIN;
            pfd[i].revents = 0;
        }
        r = poll(pfd, NCONN, (int)(deadline - now));
        if (r < 0 && errno == EINTR)
            continue;
        assert_true(r >= 0);
        for (i = 0; i < NCONN; i++)
            if (pfd[i].revents != 0 && cl[i].done < PER_CONN &&
                client_step(&cl[i], i))
                left--;
    }
    /* Every response is in; the last jobs may still be releasing (a post
     * after the end runs after the bytes went out). */
    while (atomic_load(&jobs_done) < NREQ && th_now_ms() < deadline) {
        struct pollfd none = {-1, 0, 0};
        poll(&none, 0, 1);
    }
    printf("stress: %d requests in %" PRId64 " ms; %d timer and %d post "
           "steps; refusals: %d HEADERS_SENT, %d WRITE_AFTER_END, %d "
           "INVALID_CHAR\n",
           NREQ, th_now_ms() - start, total.timers, total.posts,
           total.v[V_HEADERS_SENT], total.v[V_WRITE_AFTER_END],
           total.v[V_INVALID_CHAR]);
    assert_int_equal(atomic_load(&jobs_done), NREQ);
    assert_int_equal(atomic_load(&job_errors), 0);
    assert_int_equal(atomic_load(&timers_run), total.timers);
    assert_int_equal(atomic_load(&posts_run), total.posts);
    assert_int_equal(atomic_load(&v_count[V_HEADERS_SENT]),
                     total.v[V_HEADERS_SENT]);
    assert_int_equal(atomic_load(&v_count[V_WRITE_AFTER_END]),
                     total.v[V_WRITE_AFTER_END]);
    assert_int_equal(atomic_load(&v_count[V_INVALID_CHAR]),
                     total.v[V_INVALID_CHAR]);
    assert_int_equal(atomic_load(&v_other), 0);
    assert_int_equal(atomic_load(&v_total), total.v[V_HEADERS_SENT] +
                                                total.v[V_WRITE_AFTER_END] +
                                                total.v[V_INVALID_CHAR]);
    assert_int_equal(latch_app_violation_count(app, 0),
                     (uint64_t)atomic_load(&v_total));
    /* The load exercised what it is meant to. */
    assert_true(total.timers > 100 && total.posts > 100);
    assert_true(total.v[V_HEADERS_SENT] > 100 &&
                total.v[V_WRITE_AFTER_END] > 100 &&
                total.v[V_INVALID_CHAR] > 100);
    for (i = 0; i < NCONN; i++) {
        char extra[64];
        assert_int_equal(cl[i].done, PER_CONN);
        /* Nothing after the last response, and the connection is open. */
        assert_int_equal(cl[i].len, 0);
        assert_int_equal(recv(cl[i].fd, extra, sizeof(extra), MSG_DONTWAIT),
                         -1);
        assert_int_equal(errno, EAGAIN);
        close(cl[i].fd);
        free(cl[i].buf);
    }
    assert_int_equal(th_server_stop(&srv), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_random_sequences_under_load),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
