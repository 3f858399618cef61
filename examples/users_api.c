/*
 * users_api.c - a small users API: validation, auth, an error handler and
 * an async rate limiter, each written the way that cannot answer twice.
 *
 * Routes (an in-memory store of at most 1000 users, ids increasing from 1
 * and never reused):
 *   GET    /users[?limit=N]  the users as a JSON array, oldest first
 *   GET    /users/:id        one user; 400 for a non-numeric id, 404 unknown
 *   POST   /users            {"name","email"[,"age"]}: 201 with Location
 *   DELETE /users/:id        204, or 404
 *   GET    /export[?fail_after=N]  the users as NDJSON, streamed; with
 *                            fail_after, the "store" fails past N lines
 *   GET    /boom             an error on purpose: 503 through the handler
 * Validation and client errors answer {"error":"...","field":"..."} (field
 * only when one is at fault); errors raised with latch_fail answer
 * {"error":"...","status":N} through the error handler.
 *
 * Each of the four patterns below carries the bug from the Express /
 * Next.js / Fastify world that it avoids:
 *  1. create_user: validation that returns after answering (Express's
 *     missing `return` before the next res.json: ERR_HTTP_HEADERS_SENT);
 *  2. auth: a middleware that either answers or continues, never both;
 *  3. on_error: an error handler that delegates when headers went out;
 *  4. rate_limit: an async middleware (its counter lives off the loop, as
 *     a Redis-backed limiter's would) that answers 429 or calls
 *     latch_next, exactly once, and does nothing when the request was
 *     cancelled (timeout or client gone) meanwhile.
 * latch would refuse and report each of those bugs rather than put a
 * second response on the wire; the point here is the code that has no
 * such bug to report.
 *
 * Usage: users_api [-p port] [-k token] [-r limit] [-w window_ms]
 * [-d store_delay_ms] [-t timeout_ms]. -k is the bearer token that POST
 * and DELETE need (default "secret"); -r requests per client IP per -w
 * window (default 100 per 1000 ms); -d the simulated latency of the rate
 * limiter's store (default 0); -t the request timeout, answered 503 by
 * latch (default 2000). Listens on 127.0.0.1 (port 0: the kernel chooses)
 * and prints the address on stdout, where each rate limit verdict that
 * came too late is logged too. SIGINT/SIGTERM drain and exit 0.
 */
#include <latch.h>

#include <jansson.h>

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#define MAX_USERS 1000
#define MAX_NAME 64   /* bytes */
#define MAX_EMAIL 254 /* bytes, the longest address SMTP carries */
#define MAX_AGE 150
#define LIMIT_SLOTS 4096 /* client addresses the rate limiter tracks */
#define IP_CAP 64        /* an IPv6 address as text is at most 45 bytes */
/* One NDJSON line: every byte of name and email escaped as \uXXXX. */
#define LINE_CAP (6 * (MAX_NAME + MAX_EMAIL) + 96)

/* ------------------------------------------------------------------ */
/* Small helpers                                                        */
/* ------------------------------------------------------------------ */

static uint64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void sleep_ms(uint64_t ms)
{
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000};

    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/*
 * Parses a whole decimal number (digits only: no sign, no spaces, at most
 * 18 digits so it cannot overflow) into *out. Returns false for anything
 * else; *out is set on every path.
 */
static bool parse_u64(const char *s, uint64_t *out)
{
    uint64_t v = 0;
    size_t n = 0;

    *out = 0;
    if (s == NULL)
        return false;
    for (; s[n] != '\0'; n++) {
        if (s[n] < '0' || s[n] > '9' || n == 18)
            return false;
        v = v * 10 + (uint64_t)(s[n] - '0');
    }
    if (n == 0)
        return false;
    *out = v;
    return true;
}

/*
 * Answers `status` with {"error":msg,"field":field} (field NULL: left
 * out), escaped by latch_res_jsonf. Returns what the handler returns:
 * LATCH_DONE once the response is answered, or a negative code for the
 * error handlers: when it could not even start (whose handler sees the
 * headers were sent, if that is why), or when latch_res_jsonf refused a
 * value (it then sent the 500 through them itself).
 */
static int reply_error(latch_res *res, int status, const char *msg,
                       const char *field)
{
    int r = latch_res_status(res, status);

    /* latch_res_jsonf escapes both texts; on a refused value it answers
     * 500 through the error handlers itself. */
    if (r >= 0 && field == NULL)
        r = latch_res_jsonf(res, "{\"error\":%s}", msg);
    else if (r >= 0)
        r = latch_res_jsonf(res, "{\"error\":%s,\"field\":%s}", msg, field);
    return r < 0 ? r : LATCH_DONE;
}

/* ------------------------------------------------------------------ */
/* The store                                                            */
/* ------------------------------------------------------------------ */

typedef struct user {
    uint64_t id;
    int age; /* -1: not given */
    char name[MAX_NAME + 1];
    char email[MAX_EMAIL + 1];
} user;

/*
 * The users, in id order (ids only grow, so adding appends and the array
 * stays sorted). Handlers run on every worker thread at once, hence the
 * mutex; it is never held across a call into latch, so a slow client
 * cannot stall the store.
 */
typedef struct user_store {
    pthread_mutex_t mu;
    uint64_t next_id;
    size_t count;
    user users[MAX_USERS];
} user_store;

static user_store *store_new(void)
{
    user_store *s = calloc(1, sizeof(*s));

    if (s == NULL)
        return NULL;
    if (pthread_mutex_init(&s->mu, NULL) != 0) {
        free(s);
        return NULL;
    }
    s->next_id = 1;
    return s;
}

static void store_free(user_store *s)
{
    if (s == NULL)
        return;
    pthread_mutex_destroy(&s->mu);
    free(s);
}

/* The index of the first user whose id is >= id (count if none). Under
 * mu. */
static size_t store_lower_bound(const user_store *s, uint64_t id)
{
    size_t lo = 0, hi = s->count;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (s->users[mid].id < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* Copies user `id` into *out; false when there is none. */
static bool store_get(user_store *s, uint64_t id, user *out)
{
    size_t i;
    bool found;

    pthread_mutex_lock(&s->mu);
    i = store_lower_bound(s, id);
    found = i < s->count && s->users[i].id == id;
    if (found)
        *out = s->users[i];
    pthread_mutex_unlock(&s->mu);
    return found;
}

/* Copies the first user whose id is >= id into *out; false when none. */
static bool store_next(user_store *s, uint64_t id, user *out)
{
    size_t i;
    bool found;

    pthread_mutex_lock(&s->mu);
    i = store_lower_bound(s, id);
    found = i < s->count;
    if (found)
        *out = s->users[i];
    pthread_mutex_unlock(&s->mu);
    return found;
}

/*
 * Adds *u (its id is assigned here and written back). Returns 0,
 * -EEXIST when the email is taken (compared without case, as mail
 * systems do in practice), or -ENOSPC when the store is full.
 */
static int store_add(user_store *s, user *u)
{
    size_t i;
    int r = 0;

    pthread_mutex_lock(&s->mu);
    for (i = 0; i < s->count && r == 0; i++)
        if (strcasecmp(s->users[i].email, u->email) == 0)
            r = -EEXIST;
    if (r == 0 && s->count == MAX_USERS)
        r = -ENOSPC;
    if (r == 0) {
        u->id = s->next_id++;
        s->users[s->count++] = *u;
    }
    pthread_mutex_unlock(&s->mu);
    return r;
}

/* Removes user `id`; false when there is none. */
static bool store_remove(user_store *s, uint64_t id)
{
    size_t i;
    bool found;

    pthread_mutex_lock(&s->mu);
    i = store_lower_bound(s, id);
    found = i < s->count && s->users[i].id == id;
    if (found) {
        memmove(&s->users[i], &s->users[i + 1],
                (s->count - i - 1) * sizeof(s->users[0]));
        s->count--;
    }
    pthread_mutex_unlock(&s->mu);
    return found;
}

/* {"id":1,"name":"...","email":"...","age":36 or null} */
static void write_user(latch_json *j, const user *u)
{
    latch_json_object_begin(j);
    latch_json_key(j, "id");
    latch_json_uint(j, u->id);
    latch_json_key(j, "name");
    latch_json_string(j, u->name);
    latch_json_key(j, "email");
    latch_json_string(j, u->email);
    latch_json_key(j, "age");
    if (u->age >= 0)
        latch_json_int(j, u->age);
    else
        latch_json_null(j);
    latch_json_object_end(j);
}

/* Answers one user as JSON with the status already set. */
static int reply_user(latch_res *res, const user *u)
{
    latch_json *j = latch_res_json_begin(res);

    if (j == NULL)
        return LATCH_ERR_STATE;
    write_user(j, u);
    latch_res_json_end(res); /* on a writer error latch answers 500 */
    return LATCH_DONE;
}

/* ------------------------------------------------------------------ */
/* Routes                                                               */
/* ------------------------------------------------------------------ */

/* The :id of the route as a number; false for anything non-numeric. */
static bool id_param(latch_req *req, uint64_t *id)
{
    return parse_u64(latch_req_param(req, "id"), id);
}

/* GET /users[?limit=N] */
static int list_users(latch_req *req, latch_res *res, void *data)
{
    user_store *s = data;
    const char *q = latch_req_query(req, "limit");
    uint64_t limit = MAX_USERS, n;
    latch_json *j;
    size_t i;

    if (q != NULL && (!parse_u64(q, &limit) || limit > MAX_USERS))
        return reply_error(res, 400, "limit must be an integer from 0 to 1000",
                           "limit");
    j = latch_res_json_begin(res);
    if (j == NULL)
        return LATCH_ERR_STATE;
    latch_json_array_begin(j);
    /* The writer only appends to the response's buffer, so holding the
     * store's lock through it does not wait on the network. */
    pthread_mutex_lock(&s->mu);
    n = s->count < limit ? s->count : limit;
    for (i = 0; i < n; i++)
        write_user(j, &s->users[i]);
    pthread_mutex_unlock(&s->mu);
    latch_json_array_end(j);
    latch_res_json_end(res);
    return LATCH_DONE;
}

/* GET /users/:id */
static int get_user(latch_req *req, latch_res *res, void *data)
{
    uint64_t id;
    user u;

    if (!id_param(req, &id))
        return reply_error(res, 400, "id must be a number", "id");
    if (!store_get(data, id, &u))
        return reply_error(res, 404, "user not found", "id");
    return reply_user(res, &u);
}

/*
 * Checks a POST /users body: name a non-empty string of at most 64 bytes,
 * email a string with an '@', age (optional) an integer from 0 to 150.
 * Returns NULL when it is valid, with *u filled; else the name of the
 * field at fault, with *msg and *status (422) set for the answer.
 */
static const char *validate_user(json_t *body, user *u, const char **msg,
                                 int *status)
{
    json_t *name = json_object_get(body, "name");
    json_t *email = json_object_get(body, "email");
    json_t *age = json_object_get(body, "age");
    json_int_t a;

    *status = 422;
    if (!json_is_string(name)) {
        *msg = "name is required";
        return "name";
    }
    if (json_string_length(name) == 0) {
        *msg = "name must not be empty";
        return "name";
    }
    if (json_string_length(name) > MAX_NAME) {
        *msg = "name is longer than 64 bytes";
        return "name";
    }
    if (!json_is_string(email)) {
        *msg = "email is required";
        return "email";
    }
    if (json_string_length(email) > MAX_EMAIL ||
        strchr(json_string_value(email), '@') == NULL) {
        *msg = "email must be an address with an @";
        return "email";
    }
    if (age != NULL) {
        a = json_is_integer(age) ? json_integer_value(age) : -1;
        if (a < 0 || a > MAX_AGE) {
            *msg = "age must be an integer from 0 to 150";
            return "age";
        }
    }
    /* jansson refuses \u0000 in strings by default, so the lengths above
     * are those of the C strings copied here. */
    memset(u, 0, sizeof(*u));
    memcpy(u->name, json_string_value(name), json_string_length(name));
    memcpy(u->email, json_string_value(email), json_string_length(email));
    u->age = age != NULL ? (int)json_integer_value(age) : -1;
    return NULL;
}

/*
 * POST /users. Pattern 1: every failure answers and returns in one
 * statement. In Express,
 *     if (!name) res.status(422).json({error: 'name is required'});
 *     ...
 *     res.status(201).json(user);
 * forgets the `return`: the handler goes on, stores the invalid user, and
 * its second res.json throws ERR_HTTP_HEADERS_SENT ("Cannot set headers
 * after they are sent to the client"). Here the store and the 201 are
 * reached only when every check passed.
 */
static int create_user(latch_req *req, latch_res *res, void *data)
{
    json_t *body = latch_req_json(req);
    const char *field, *msg = NULL;
    char location[64];
    int status = 0, r;
    user u;

    if (!json_is_object(body))
        return reply_error(res, 400, "the body must be a JSON object", "body");
    field = validate_user(body, &u, &msg, &status);
    if (field != NULL)
        return reply_error(res, status, msg, field);
    r = store_add(data, &u);
    if (r == -EEXIST)
        return reply_error(res, 409, "email is already registered", "email");
    if (r < 0)
        return latch_fail(req, 503, "the user store is full");
    snprintf(location, sizeof(location), "/users/%" PRIu64, u.id);
    if ((r = latch_res_status(res, 201)) < 0 ||
        (r = latch_res_set_header(res, "Location", location)) < 0)
        return r;
    return reply_user(res, &u);
}

/* DELETE /users/:id */
static int delete_user(latch_req *req, latch_res *res, void *data)
{
    uint64_t id;
    int r;

    if (!id_param(req, &id))
        return reply_error(res, 400, "id must be a number", "id");
    if (!store_remove(data, id))
        return reply_error(res, 404, "user not found", "id");
    if ((r = latch_res_status(res, 204)) < 0 ||
        (r = latch_res_end(res, NULL, 0)) < 0)
        return r;
    return LATCH_DONE;
}

/*
 * Writes u as one line of NDJSON (the same object as write_user, then
 * "\n") into line[cap]. Returns its length, or 0 when out of memory.
 */
static size_t user_line(const user *u, char *line, size_t cap)
{
    json_t *age = NULL, *o;
    size_t n;

    if (u->age >= 0 && (age = json_integer(u->age)) == NULL)
        return 0;
    /* "o?" takes the reference to age, also on failure; NULL is null. */
    o = json_pack("{sIssssso?}", "id", (json_int_t)u->id, "name", u->name,
                  "email", u->email, "age", age);
    if (o == NULL)
        return 0;
    n = json_dumpb(o, line, cap - 1, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(o);
    if (n == 0 || n > cap - 1)
        return 0; /* cannot happen: LINE_CAP fits the longest user */
    line[n] = '\n';
    return n + 1;
}

/*
 * GET /export[?fail_after=N]: one JSON user per line, streamed (chunked).
 * With fail_after=N the simulated store fails on reaching user N+1,
 * after the head and N lines went out: the handler raises the error all the
 * same and leaves the answer to the error handlers (pattern 3), which can only
 * cut the response. At most 1000 short lines: they are written at once and
 * latch buffers them; a larger export would wait for latch_res_on_drain
 * whenever latch_res_write returned 0.
 */
static int export_users(latch_req *req, latch_res *res, void *data)
{
    const char *q = latch_req_query(req, "fail_after");
    uint64_t fail_after = UINT64_MAX, lines = 0, next = 1;
    char line[LINE_CAP];
    size_t n;
    user u;
    int r;

    if (q != NULL && !parse_u64(q, &fail_after))
        return reply_error(res, 400, "fail_after must be a number",
                           "fail_after");
    r = latch_res_set_header(res, "Content-Type", "application/x-ndjson");
    if (r < 0)
        return r;
    /* Always a head, even for an empty store: an export is a stream. */
    if ((r = latch_res_flush_headers(res)) < 0)
        return r;
    /* One user at a time: the lock is never held across a write. */
    while (store_next(data, next, &u)) {
        if (lines == fail_after)
            return latch_fail(req, 500, "the store failed during the export");
        next = u.id + 1;
        n = user_line(&u, line, sizeof(line));
        if (n == 0)
            return latch_fail(req, 500, "cannot write a user");
        if ((r = latch_res_write(res, line, n)) < 0)
            return r;
        lines++;
    }
    if ((r = latch_res_end(res, NULL, 0)) < 0)
        return r;
    return LATCH_DONE;
}

/* GET /boom: the store is "offline"; the error handler answers. */
static int boom(latch_req *req, latch_res *res, void *data)
{
    (void)res;
    (void)data;
    return latch_fail(req, 503, "store offline");
}

/* ------------------------------------------------------------------ */
/* Pattern 2: auth                                                      */
/* ------------------------------------------------------------------ */

/* Compares in time independent of where the strings differ, so the
 * answer's timing does not reveal how much of a guess was right. */
static bool token_equal(const char *a, const char *b)
{
    size_t na = strlen(a), nb = strlen(b), i;
    unsigned char diff = na != nb;

    for (i = 0; i < na; i++)
        diff |= (unsigned char)(a[i] ^ b[i % (nb ? nb : 1)]);
    return diff == 0 && nb != 0;
}

/*
 * Writes (POST, PUT, PATCH, DELETE) need "Authorization: Bearer <token>".
 * The Express bug: `if (!ok) res.status(401).json(...); next();` with no
 * `return` or `else`: the route runs anyway and answers a second time
 * (ERR_HTTP_HEADERS_SENT), after a write an unauthenticated client was
 * not allowed to make. Here every path either answers and returns
 * LATCH_DONE, or answers nothing and returns LATCH_NEXT.
 */
static int auth(latch_req *req, latch_res *res, void *data)
{
    const char *token = data;
    const char *method = latch_req_method(req);
    const char *h = latch_req_header(req, "Authorization");
    int r;

    if (strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0 ||
        strcmp(method, "OPTIONS") == 0)
        return LATCH_NEXT; /* reads are public */
    /* The scheme is case-insensitive (RFC 9110, 11.1). */
    if (h == NULL || strncasecmp(h, "Bearer ", 7) != 0) {
        r = latch_res_set_header(res, "WWW-Authenticate", "Bearer");
        if (r < 0)
            return r;
        return reply_error(res, 401, "a bearer token is required", NULL);
    }
    if (!token_equal(h + 7, token))
        return reply_error(res, 403, "the token is not valid", NULL);
    return LATCH_NEXT;
}

/* ------------------------------------------------------------------ */
/* Pattern 3: the error handler                                         */
/* ------------------------------------------------------------------ */

/*
 * Every error raised with latch_fail (or returned as a negative code)
 * becomes {"error":message,"status":N}. The bug it avoids: an Express
 * error handler that always does res.status(500).json(...). When the
 * error came after the headers went out (a stream that failed halfway),
 * that throws ERR_HTTP_HEADERS_SENT, or worse, appends an error document
 * to a half-sent body; Express's docs say to delegate to next(err) then.
 * Here it returns LATCH_NEXT, and latch's final handler cuts the
 * response so the client sees it incomplete, never whole.
 */
static int on_error(const latch_error *err, latch_req *req, latch_res *res,
                    void *data)
{
    const char *msg =
        err->message != NULL ? err->message : latch_strerror(err->code);

    (void)req;
    (void)data;
    if (latch_res_headers_sent(res) || latch_res_destroyed(res))
        return LATCH_NEXT;
    /* Whatever the failed handler set for its success (a Content-Type,
     * a Location) must not leak into the error. */
    if (latch_res_clear_headers(res) < 0 ||
        latch_res_status(res, err->status) < 0)
        return LATCH_NEXT;
    /* On a refused value latch answers 500 itself. */
    latch_res_jsonf(res, "{\"error\":%s,\"status\":%d}", msg, err->status);
    return LATCH_DONE;
}

/* ------------------------------------------------------------------ */
/* Pattern 4: the rate limiter, asynchronous                            */
/* ------------------------------------------------------------------ */

/* One client address and its fixed window. */
typedef struct limit_slot {
    char ip[IP_CAP]; /* "": never used */
    uint64_t window_start;
    uint64_t count;
} limit_slot;

/*
 * The counters, standing in for a Redis server: they are reached only
 * from the thread pool (a network round trip would block), so the mutex
 * is what INCR's atomicity is in Redis.
 */
typedef struct limiter {
    pthread_mutex_t mu;
    uint64_t limit;     /* requests per window */
    uint64_t window_ms; /* window length */
    uint64_t delay_ms;  /* simulated latency of the store */
    limit_slot slots[LIMIT_SLOTS];
} limiter;

/* LIMIT_NONE first: a call whose job never ran (zeroed) cannot read as
 * allowed. */
enum { LIMIT_NONE, LIMIT_ALLOW, LIMIT_DENY, LIMIT_FULL };

/* One request's question to the store: latch's copy of the middleware's
 * local (latch_work_copy), where the pool thread writes the verdict and
 * `after` reads it; latch frees it once `after` returned. */
typedef struct limit_call {
    limiter *lim;
    char ip[IP_CAP];
    int verdict;       /* LIMIT_* */
    uint64_t retry_ms; /* LIMIT_DENY: until the window ends */
} limit_call;

static limiter *limiter_new(uint64_t limit, uint64_t window_ms,
                            uint64_t delay_ms)
{
    limiter *l = calloc(1, sizeof(*l));

    if (l == NULL)
        return NULL;
    if (pthread_mutex_init(&l->mu, NULL) != 0) {
        free(l);
        return NULL;
    }
    l->limit = limit;
    l->window_ms = window_ms;
    l->delay_ms = delay_ms;
    return l;
}

static void limiter_free(limiter *l)
{
    if (l == NULL)
        return;
    pthread_mutex_destroy(&l->mu);
    free(l);
}

static uint64_t hash_ip(const char *s)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */

    for (; *s != '\0'; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

/*
 * The slot of `ip`, or a slot to take for it: a never-used one or one
 * whose window is over. Open addressing that only stops at never-used
 * slots, so reusing an expired slot never hides a key further on. NULL
 * when every slot is in a live window. Under mu.
 */
static limit_slot *limiter_find(limiter *l, const char *ip, uint64_t now)
{
    size_t start = (size_t)(hash_ip(ip) % LIMIT_SLOTS), k;
    limit_slot *spare = NULL;

    for (k = 0; k < LIMIT_SLOTS; k++) {
        limit_slot *s = &l->slots[(start + k) % LIMIT_SLOTS];
        if (s->ip[0] == '\0')
            return spare != NULL ? spare : s;
        if (strcmp(s->ip, ip) == 0)
            return s;
        if (spare == NULL && now - s->window_start >= l->window_ms)
            spare = s;
    }
    return spare;
}

/* On the pool: the round trip to the store, then the INCR. */
static void limit_work(void *data)
{
    limit_call *c = data;
    limiter *l = c->lim;
    limit_slot *s;
    uint64_t now;

    if (l->delay_ms > 0)
        sleep_ms(l->delay_ms);
    pthread_mutex_lock(&l->mu);
    now = now_ms();
    s = limiter_find(l, c->ip, now);
    if (s == NULL) {
        c->verdict = LIMIT_FULL;
    } else {
        if (strcmp(s->ip, c->ip) != 0 ||
            now - s->window_start >= l->window_ms) {
            memcpy(s->ip, c->ip, sizeof(s->ip));
            s->window_start = now;
            s->count = 0;
        }
        s->count++;
        c->verdict = s->count <= l->limit ? LIMIT_ALLOW : LIMIT_DENY;
        c->retry_ms = s->window_start + l->window_ms - now;
    }
    pthread_mutex_unlock(&l->mu);
}

static const char *cancel_name(int reason)
{
    switch (reason) {
    case LATCH_CANCEL_TIMEOUT: return "request timeout";
    case LATCH_CANCEL_DISCONNECT: return "client disconnect";
    case LATCH_CANCEL_SHUTDOWN: return "server shutdown";
    default: return "not cancelled";
    }
}

/*
 * On the loop, exactly once: the store's verdict. The bugs it avoids, from
 * Express's async middleware: answering 429 and then calling next()
 * anyway (the route answers too: ERR_HTTP_HEADERS_SENT), and acting on a
 * verdict that arrives after connect-timeout already answered 503 or the
 * client left (a second response, or a next() that runs the route for
 * nobody). So: cancelled, nothing at all; denied, answer and stop;
 * allowed, latch_next once.
 */
static void limit_done(latch_res *res, int status, void *data)
{
    const limit_call *c = data;
    latch_req *req = latch_res_req(res);
    char retry[32];
    int verdict = c->verdict, r;
    uint64_t retry_s = (c->retry_ms + 999) / 1000;

    if (status != 0) {
        /* LATCH_ERR_CANCELLED: latch answered the timeout, or nobody is
         * listening. Neither an answer nor latch_next, only a line in the
         * log. */
        printf("users_api: request %" PRIu64 ": %s, rate limit verdict "
               "dropped\n",
               latch_req_id(req), cancel_name(latch_req_cancel_reason(req)));
        fflush(stdout);
        return;
    }
    if (verdict == LIMIT_ALLOW) {
        latch_next(req);
        return;
    }
    if (verdict != LIMIT_DENY) {
        latch_fail(req, 503,
                   verdict == LIMIT_FULL ? "the rate limiter is full"
                                         : "the rate limiter did not answer");
        return;
    }
    /* Denied: answer, and do not resume the chain. Once the 429 is out,
     * latch lets go of the chain that waited for this handler. */
    snprintf(retry, sizeof(retry), "%" PRIu64, retry_s > 0 ? retry_s : 1);
    r = latch_res_set_header(res, "Retry-After", retry);
    if (r >= 0)
        r = reply_error(res, 429, "too many requests", NULL);
    if (r < 0)
        latch_fail(req, 500, "cannot answer 429");
}

/* Asks the store off the loop; the chain waits (LATCH_PENDING). */
static int rate_limit(latch_req *req, latch_res *res, void *data)
{
    const char *ip = latch_req_ip(req);
    limit_call c = {.lim = data};
    int r;

    if (ip == NULL)
        return latch_fail(req, 500, "no client address");
    snprintf(c.ip, sizeof(c.ip), "%s", ip);
    r = latch_work_copy(res, limit_work, limit_done, &c, sizeof(c));
    if (r < 0) /* limit_done will never run */
        return latch_fail(req, 503, "the rate limiter is unavailable");
    return LATCH_PENDING;
}

/* ------------------------------------------------------------------ */
/* main                                                                 */
/* ------------------------------------------------------------------ */

typedef struct options {
    int port;
    const char *token;
    uint64_t limit, window_ms, delay_ms, timeout_ms;
} options;

/* A whole non-negative number for option `opt`; false otherwise. */
static bool parse_opt(int opt, const char *arg, uint64_t max, uint64_t *out)
{
    if (parse_u64(arg, out) && *out <= max)
        return true;
    fprintf(stderr, "users_api: -%c: a number from 0 to %" PRIu64 "\n", opt,
            max);
    return false;
}

/* Fills *o from argv; false (after a message on stderr) on a bad one. */
static bool parse_args(int argc, char **argv, options *o)
{
    uint64_t v;
    int opt;

    *o = (options){8080, "secret", 100, 1000, 0, 2000};
    while ((opt = getopt(argc, argv, "p:k:r:w:d:t:")) != -1) {
        switch (opt) {
        case 'p':
            if (!parse_opt(opt, optarg, 65535, &v))
                return false;
            o->port = (int)v;
            break;
        case 'k': o->token = optarg; break;
        case 'r':
            if (!parse_opt(opt, optarg, UINT32_MAX, &o->limit))
                return false;
            break;
        case 'w':
            if (!parse_opt(opt, optarg, 86400000, &o->window_ms))
                return false;
            break;
        case 'd':
            if (!parse_opt(opt, optarg, 60000, &o->delay_ms))
                return false;
            break;
        case 't':
            if (!parse_opt(opt, optarg, 86400000, &o->timeout_ms))
                return false;
            break;
        default: return false;
        }
    }
    if (o->token[0] == '\0' || o->window_ms == 0) {
        fprintf(stderr, "users_api: -k and -w must not be empty or 0\n");
        return false;
    }
    return true;
}

/* Registers everything, in the order requests meet it. */
static int setup(latch_app *app, const options *o, user_store *s, limiter *l)
{
    int r;

    /* The limiter first, for every route: a flood of bad tokens or bad
     * bodies must count too. Then auth, then parsing, only for /users. */
    if ((r = latch_use(app, NULL, rate_limit, l)) < 0 ||
        (r = latch_use(app, "/users", auth, (void *)o->token)) < 0 ||
        (r = latch_use(app, "/users", latch_json_body, NULL)) < 0 ||
        (r = latch_get(app, "/users", list_users, s)) < 0 ||
        (r = latch_post(app, "/users", create_user, s)) < 0 ||
        (r = latch_get(app, "/users/:id", get_user, s)) < 0 ||
        (r = latch_delete(app, "/users/:id", delete_user, s)) < 0 ||
        (r = latch_get(app, "/export", export_users, s)) < 0 ||
        (r = latch_get(app, "/boom", boom, NULL)) < 0 ||
        (r = latch_use_error(app, on_error, NULL)) < 0)
        return r;
    /* A slow store (or route) gets latch's own 503, once. */
    return latch_app_set_request_timeout(app, o->timeout_ms, 503);
}

int main(int argc, char **argv)
{
    options o;
    user_store *s = NULL;
    limiter *l = NULL;
    latch_app *app = NULL;
    int r, rc = 1;

    if (!parse_args(argc, argv, &o)) {
        fprintf(stderr,
                "usage: %s [-p port] [-k token] [-r limit] [-w window_ms] "
                "[-d store_delay_ms] [-t timeout_ms]\n",
                argv[0]);
        return 2;
    }
    s = store_new();
    l = limiter_new(o.limit, o.window_ms, o.delay_ms);
    app = latch_app_new();
    if (s == NULL || l == NULL || app == NULL) {
        fprintf(stderr, "users_api: out of memory\n");
        goto out;
    }
    r = setup(app, &o, s, l);
    if (r < 0) {
        fprintf(stderr, "users_api: setup: %s\n", latch_strerror(r));
        goto out;
    }
    r = latch_listen(app, "127.0.0.1", o.port);
    if (r < 0) {
        fprintf(stderr, "users_api: cannot listen on 127.0.0.1:%d: %s\n",
                o.port, latch_strerror(r));
        goto out;
    }
    printf("users_api: listening on http://127.0.0.1:%d/\n",
           latch_app_port(app));
    fflush(stdout);
    r = latch_run(app);
    rc = r < 0 ? 1 : 0;
out:
    /* The app first: its workers are the last users of the store and of
     * the limiter (latch_run returned after the thread pool's jobs). */
    latch_app_free(app);
    limiter_free(l);
    store_free(s);
    return rc;
}
