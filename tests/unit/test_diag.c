/*
 * test_diag.c - unit tests of error names and violation reports
 * (src/diag.c).
 *
 * Error names: every code of the LATCH_ERRNO_MAP X-macro is walked through
 * the macro itself, so a code added later is covered without touching this
 * file; then 0, negated errno values (libuv's names) and codes that are
 * neither.
 *
 * Violations: a real app from latch_app_new, and a fake worker and
 * response (zeroed structs from internal.h with only the fields diag.c
 * reads filled in) handed to latch__violation. Checked: what the hook
 * receives (which seal is reported for which code), the counters, each
 * policy, the exact text of the default stderr block, abort() under
 * LATCH_POLICY_ABORT and under LATCH_STRICT=1 (in a forked child).
 *
 * It does not decide what is a violation (res.c, app.c and their tests do).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "internal.h"

/* Every latch code, from the one list. */
typedef struct code_info {
    const char *name; /* "ERR_" NAME */
    int num;
    const char *msg;
} code_info;

static const code_info codes[] = {
#define X_(name, num, msg) {"ERR_" #name, (num), (msg)},
    LATCH_ERRNO_MAP(X_)
#undef X_
};
#define NCODES (sizeof(codes) / sizeof(codes[0]))

/* ---- names and messages ------------------------------------------------ */

static void test_every_code_has_its_name_and_message(void **state)
{
    size_t i;

    (void)state;
    assert_true(NCODES >= 18);
    for (i = 0; i < NCODES; i++) {
        assert_string_equal(latch_err_name(codes[i].num), codes[i].name);
        assert_string_equal(latch_strerror(codes[i].num), codes[i].msg);
    }
}

static void test_codes_are_distinct_and_negative(void **state)
{
    size_t i, j;

    (void)state;
    for (i = 0; i < NCODES; i++) {
        /* In latch's own range, apart from every -errno. */
        assert_true(codes[i].num <= -3000);
        for (j = i + 1; j < NCODES; j++) {
            assert_int_not_equal(codes[i].num, codes[j].num);
            assert_string_not_equal(codes[i].name, codes[j].name);
        }
    }
}

static void test_zero_is_ok(void **state)
{
    (void)state;
    assert_string_equal(latch_err_name(0), "OK");
    assert_string_equal(latch_strerror(0), "Success");
}

static void test_negated_errno_has_libuv_name(void **state)
{
    (void)state;
    assert_int_equal(UV_ECONNRESET, -ECONNRESET);
    assert_string_equal(latch_err_name(-ECONNRESET), "ECONNRESET");
    assert_string_equal(latch_strerror(-ECONNRESET),
                        "connection reset by peer");
    assert_string_equal(latch_err_name(-EADDRINUSE), "EADDRINUSE");
    assert_string_equal(latch_err_name(-EPIPE), "EPIPE");
    assert_string_equal(latch_err_name(UV_EOF), "EOF");
}

static void test_out_of_range_codes_are_unknown(void **state)
{
    static const int unknown[] = {1, 42, INT_MAX, -4096, -5000, INT_MIN};
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(unknown) / sizeof(unknown[0]); i++) {
        assert_string_equal(latch_err_name(unknown[i]), "UNKNOWN");
        assert_string_equal(latch_strerror(unknown[i]), "Unknown error");
    }
}

/*
 * Negative codes that are neither a latch code nor an errno value: the
 * first unassigned number after the X-macro list, and a number between
 * the errno values and latch's range. latch.h promises "UNKNOWN" (and
 * static storage for both strings).
 */
static void test_unassigned_negative_codes_are_unknown(void **state)
{
    int next = 0;
    size_t i;

    (void)state;
    for (i = 0; i < NCODES; i++)
        if (codes[i].num < next)
            next = codes[i].num;
    next--;
    assert_string_equal(latch_err_name(next), "UNKNOWN");
    assert_string_equal(latch_err_name(-1000), "UNKNOWN");
    assert_string_equal(latch_strerror(next), "Unknown error");
    assert_string_equal(latch_strerror(-1000), "Unknown error");
}

/* ---- the fake request/response and a recording hook ------------------- */

typedef struct fixture {
    latch_app *app;
    latch_worker *w;
    latch_res *res;
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof(*f));

    if (f == NULL)
        return -1;
    f->app = latch_app_new();
    f->w = calloc(1, sizeof(*f->w));
    f->res = calloc(1, sizeof(*f->res));
    if (f->app == NULL || f->w == NULL || f->res == NULL)
        return -1;
    f->w->app = f->app;
    f->w->thread = pthread_self(); /* reports are made on its loop */
    f->res->w = f->w;
    f->res->req.id = 17;
    f->res->req.method = "POST";
    f->res->req.url = "/users?x=1";
    f->res->req.path = "/users";
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;

    latch_app_free(f->app);
    free(f->w);
    free(f->res->cold); /* taken by latch__res_seal_set for the places */
    free(f->res);
    free(f);
    return 0;
}

static void seal_headers(latch_res *res, const char *call, const char *file,
                         int line, const char *func)
{
    latch__res_seal_set(res, LATCH_SEAL_HEADERS, call,
                        (latch_site){file, line, func});
}

static void seal_end(latch_res *res, const char *call, const char *file,
                     int line, const char *func)
{
    latch__res_seal_set(res, LATCH_SEAL_ENDED, call,
                        (latch_site){file, line, func});
}

/* Copies of what the hook saw: its pointers die when it returns. */
typedef struct text {
    bool null;
    char s[256];
} text;

typedef struct record {
    int calls;
    void *data;
    int code;
    text name, message, call, at_file, at_func;
    int at_line;
    text sealed_call, sealed_file, sealed_func;
    int sealed_line;
    uint64_t request_id;
    text method, path;
} record;

static void keep(text *t, const char *s)
{
    t->null = s == NULL;
    snprintf(t->s, sizeof(t->s), "%s", s ? s : "");
}

static record rec;

static void recording_hook(const latch_violation *v, void *data)
{
    rec.calls++;
    rec.data = data;
    rec.code = v->code;
    keep(&rec.name, v->name);
    keep(&rec.message, v->message);
    keep(&rec.call, v->call);
    keep(&rec.at_file, v->at.file);
    keep(&rec.at_func, v->at.func);
    rec.at_line = v->at.line;
    keep(&rec.sealed_call, v->sealed_call);
    keep(&rec.sealed_file, v->sealed_at.file);
    keep(&rec.sealed_func, v->sealed_at.func);
    rec.sealed_line = v->sealed_at.line;
    rec.request_id = v->request_id;
    keep(&rec.method, v->method);
    keep(&rec.path, v->path);
}

static void hook_on(fixture *f)
{
    memset(&rec, 0, sizeof(rec));
    assert_int_equal(latch_app_on_violation(f->app, recording_hook, &rec), 0);
}

#define SITE(file, line, func) ((latch_site){(file), (line), (func)})

/* ---- what the hook receives ------------------------------------------- */

static void test_hook_gets_the_headers_seal_for_headers_sent(void **state)
{
    fixture *f = *state;

    hook_on(f);
    seal_headers(f->res, "latch_res_flush_headers", "file.c", 12, "h");
    seal_end(f->res, "latch_res_end", "file.c", 30, "h_end");
    latch__violation(f->res, LATCH_ERR_HTTP_HEADERS_SENT,
                     "latch_res_set_header", NULL, SITE("file.c", 40, "late"));
    assert_int_equal(rec.calls, 1);
    assert_ptr_equal(rec.data, &rec);
    assert_int_equal(rec.code, LATCH_ERR_HTTP_HEADERS_SENT);
    assert_string_equal(rec.name.s, "ERR_HTTP_HEADERS_SENT");
    assert_string_equal(rec.message.s,
                        "Cannot set headers after they are sent to the "
                        "client");
    assert_string_equal(rec.call.s, "latch_res_set_header");
    assert_string_equal(rec.at_file.s, "file.c");
    assert_int_equal(rec.at_line, 40);
    assert_string_equal(rec.at_func.s, "late");
    /* The headers closed the door, even though the end came later. */
    assert_string_equal(rec.sealed_call.s, "latch_res_flush_headers");
    assert_string_equal(rec.sealed_file.s, "file.c");
    assert_int_equal(rec.sealed_line, 12);
    assert_string_equal(rec.sealed_func.s, "h");
    assert_int_equal(rec.request_id, 17);
    assert_string_equal(rec.method.s, "POST");
    assert_string_equal(rec.path.s, "/users");
}

static void test_hook_gets_the_end_seal_for_write_after_end(void **state)
{
    fixture *f = *state;

    hook_on(f);
    seal_headers(f->res, "latch_res_flush_headers", "file.c", 12, "h");
    seal_end(f->res, "latch_res_end", "file.c", 30, "h_end");
    latch__violation(f->res, LATCH_ERR_STREAM_WRITE_AFTER_END,
                     "latch_res_write", "write after end (17 bytes)",
                     SITE("other.c", 99, "cb"));
    assert_int_equal(rec.calls, 1);
    assert_int_equal(rec.code, LATCH_ERR_STREAM_WRITE_AFTER_END);
    assert_string_equal(rec.name.s, "ERR_STREAM_WRITE_AFTER_END");
    /* A message specific to the call wins over the generic one. */
    assert_string_equal(rec.message.s, "write after end (17 bytes)");
    assert_string_equal(rec.call.s, "latch_res_write");
    assert_string_equal(rec.at_file.s, "other.c");
    assert_int_equal(rec.at_line, 99);
    assert_string_equal(rec.sealed_call.s, "latch_res_end");
    assert_int_equal(rec.sealed_line, 30);
    assert_string_equal(rec.sealed_func.s, "h_end");
}

static void test_headers_seal_when_not_ended(void **state)
{
    fixture *f = *state;

    hook_on(f);
    seal_headers(f->res, "latch_res_write", "file.c", 12, "h");
    latch__violation(f->res, LATCH_ERR_HTTP_CONTENT_LENGTH_MISMATCH,
                     "latch_res_write", NULL, SITE("file.c", 13, "h"));
    assert_int_equal(rec.calls, 1);
    assert_string_equal(rec.sealed_call.s, "latch_res_write");
    assert_int_equal(rec.sealed_line, 12);
}

/* A report made off the response's loop (a call from the wrong thread)
 * names what sealed the response but not where: the places live in the
 * cold part, which the loop may give back meanwhile. */
static void *report_off_loop(void *arg)
{
    fixture *f = arg;

    latch__violation(f->res, LATCH_ERR_WRONG_THREAD, "latch_res_write", NULL,
                     SITE("thread.c", 7, "worker"));
    return NULL;
}

static void test_off_loop_report_names_no_place(void **state)
{
    fixture *f = *state;
    pthread_t t;

    hook_on(f);
    seal_end(f->res, "latch_res_end", "file.c", 30, "h_end");
    assert_int_equal(pthread_create(&t, NULL, report_off_loop, f), 0);
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_int_equal(rec.calls, 1);
    assert_string_equal(rec.sealed_call.s, "latch_res_end");
    assert_true(rec.sealed_file.null);
    assert_int_equal(rec.sealed_line, 0);
    /* On the loop, the place. */
    latch__violation(f->res, LATCH_ERR_STREAM_WRITE_AFTER_END,
                     "latch_res_write", NULL, SITE("file.c", 31, "h_end"));
    assert_int_equal(rec.calls, 2);
    assert_int_equal(rec.sealed_line, 30);
}

static void test_framework_event_seal_and_no_seal(void **state)
{
    fixture *f = *state;

    hook_on(f);
    /* Sealed by an event: a name and no file. */
    f->res->ended_call = "request timeout";
    latch__violation(f->res, LATCH_ERR_STREAM_DESTROYED, "latch_res_write",
                     NULL, SITE("file.c", 5, "h"));
    assert_int_equal(rec.calls, 1);
    assert_string_equal(rec.sealed_call.s, "request timeout");
    assert_true(rec.sealed_file.null);
    assert_int_equal(rec.sealed_line, 0);

    /* Not sealed at all. */
    latch__res_seal_set(f->res, LATCH_SEAL_ENDED, NULL,
                        (latch_site){NULL, 0, NULL});
    latch__violation(f->res, LATCH_ERR_NO_RESPONSE, "handler", NULL,
                     SITE("file.c", 6, "h"));
    assert_int_equal(rec.calls, 2);
    assert_true(rec.sealed_call.null);
    assert_true(rec.sealed_file.null);
    assert_true(rec.sealed_func.null);
    assert_int_equal(rec.sealed_line, 0);
    assert_string_equal(rec.message.s,
                        "The request ended without a response: nothing "
                        "was sent");
}

static void test_path_falls_back_to_url(void **state)
{
    fixture *f = *state;

    hook_on(f);
    f->res->req.path = NULL;
    latch__violation(f->res, LATCH_ERR_STATE, "x", NULL, SITE("a.c", 1, "f"));
    assert_int_equal(rec.calls, 1);
    assert_string_equal(rec.path.s, "/users?x=1");
}

static void test_app_violation_has_no_request(void **state)
{
    fixture *f = *state;

    hook_on(f);
    latch__violation_app(f->app, LATCH_ERR_WRONG_THREAD, "latch_stop", NULL,
                         SITE("main.c", 3, "main"));
    assert_int_equal(rec.calls, 1);
    assert_string_equal(rec.name.s, "ERR_WRONG_THREAD");
    assert_string_equal(rec.call.s, "latch_stop");
    assert_int_equal(rec.at_line, 3);
    assert_true(rec.sealed_call.null);
    assert_int_equal(rec.request_id, 0);
    assert_true(rec.method.null);
    assert_true(rec.path.null);
    assert_int_equal(latch_app_violation_count(f->app, LATCH_ERR_WRONG_THREAD),
                     1);
}

/* ---- counters and policies --------------------------------------------- */

static void test_counts_per_code_and_total(void **state)
{
    fixture *f = *state;
    uint64_t total = 0;
    size_t i, k;

    hook_on(f);
    for (i = 0; i < NCODES; i++)
        assert_int_equal(latch_app_violation_count(f->app, codes[i].num), 0);
    assert_int_equal(latch_app_violation_count(f->app, 0), 0);

    /* COUNT: the hook is never called, but every code is counted. Code
     * i is reported i + 1 times so a count landing in the wrong slot
     * shows. */
    assert_int_equal(latch_app_set_violation_policy(f->app, LATCH_POLICY_COUNT),
                     0);
    for (i = 0; i < NCODES; i++) {
        for (k = 0; k <= i; k++)
            latch__violation(f->res, codes[i].num, "x", NULL,
                             SITE("a.c", 1, "f"));
        total += i + 1;
    }
    assert_int_equal(rec.calls, 0);
    for (i = 0; i < NCODES; i++)
        assert_int_equal(latch_app_violation_count(f->app, codes[i].num),
                         i + 1);
    assert_int_equal(latch_app_violation_count(f->app, 0), total);

    /* REPORT counts too, and calls the hook each time. */
    assert_int_equal(
        latch_app_set_violation_policy(f->app, LATCH_POLICY_REPORT), 0);
    latch__violation(f->res, codes[0].num, "x", NULL, SITE("a.c", 1, "f"));
    assert_int_equal(rec.calls, 1);
    assert_int_equal(latch_app_violation_count(f->app, codes[0].num), 2);
    assert_int_equal(latch_app_violation_count(f->app, 0), total + 1);

    /* Codes that are not latch's have no counter of their own. */
    assert_int_equal(latch_app_violation_count(f->app, -ECONNRESET), 0);
    assert_int_equal(latch_app_violation_count(f->app, 5), 0);
}

static void test_invalid_policy_is_refused(void **state)
{
    fixture *f = *state;

    hook_on(f);
    assert_int_equal(latch_app_set_violation_policy(f->app, LATCH_POLICY_COUNT),
                     0);
    assert_int_equal(latch_app_set_violation_policy(f->app, -1),
                     LATCH_ERR_INVALID_ARG);
    assert_int_equal(latch_app_set_violation_policy(f->app, 3),
                     LATCH_ERR_INVALID_ARG);
    assert_int_equal(latch_app_set_violation_policy(f->app, INT_MAX),
                     LATCH_ERR_INVALID_ARG);
    assert_int_equal(latch_app_set_violation_policy(NULL, LATCH_POLICY_REPORT),
                     LATCH_ERR_INVALID_ARG);
    assert_int_equal(latch_app_on_violation(NULL, recording_hook, NULL),
                     LATCH_ERR_INVALID_ARG);
    /* The refused calls left COUNT in place: still no hook call. */
    latch__violation(f->res, LATCH_ERR_STATE, "x", NULL, SITE("a.c", 1, "f"));
    assert_int_equal(rec.calls, 0);
    assert_int_equal(latch_app_violation_count(f->app, LATCH_ERR_STATE), 1);
}

/* ---- the default hook: exact text on stderr ---------------------------- */

typedef struct capture {
    int saved;
    FILE *tmp;
} capture;

static void capture_start(capture *c)
{
    fflush(stderr);
    c->tmp = tmpfile();
    assert_non_null(c->tmp);
    c->saved = dup(STDERR_FILENO);
    assert_true(c->saved >= 0);
    assert_true(dup2(fileno(c->tmp), STDERR_FILENO) >= 0);
}

/* Restores stderr and returns what was written meanwhile. */
static void capture_stop(capture *c, char *out, size_t cap)
{
    size_t n;

    fflush(stderr);
    dup2(c->saved, STDERR_FILENO);
    close(c->saved);
    rewind(c->tmp);
    n = fread(out, 1, cap - 1, c->tmp);
    out[n] = '\0';
    fclose(c->tmp);
}

static void test_default_hook_prints_the_block(void **state)
{
    fixture *f = *state;
    char out[2048];
    capture c;

    /* A hook set and then removed: back to the default. */
    hook_on(f);
    assert_int_equal(latch_app_on_violation(f->app, NULL, NULL), 0);
    seal_headers(f->res, "latch_res_json", "file.c", 18, "create_user");
    seal_end(f->res, "latch_res_json", "file.c", 18, "create_user");
    capture_start(&c);
    latch__violation(f->res, LATCH_ERR_HTTP_HEADERS_SENT, "latch_res_json",
                     NULL, SITE("file.c", 24, "create_user"));
    capture_stop(&c, out, sizeof(out));
    assert_int_equal(rec.calls, 0);
    assert_string_equal(
        out, "latch: ERR_HTTP_HEADERS_SENT: Cannot set headers after they "
             "are sent to the client\n"
             "    at latch_res_json (file.c:24, create_user)\n"
             "    response was sealed at latch_res_json (file.c:18, "
             "create_user)\n"
             "    request 17: POST /users\n");
}

static void test_default_hook_event_seal(void **state)
{
    fixture *f = *state;
    char out[2048];
    capture c;

    f->res->ended_call = "client disconnect";
    f->res->req.id = 123456789012345ULL;
    f->res->req.method = "GET";
    f->res->req.path = "/a b";
    capture_start(&c);
    latch__violation(f->res, LATCH_ERR_STREAM_DESTROYED, "latch_res_write",
                     NULL, SITE("app.c", 7, "stream"));
    capture_stop(&c, out, sizeof(out));
    assert_string_equal(
        out, "latch: ERR_STREAM_DESTROYED: Cannot call write after a "
             "stream was destroyed\n"
             "    at latch_res_write (app.c:7, stream)\n"
             "    response was sealed at client disconnect\n"
             "    request 123456789012345: GET /a b\n");
}

static void test_default_hook_without_seal_or_request(void **state)
{
    fixture *f = *state;
    char out[2048];
    capture c;

    capture_start(&c);
    latch__violation_app(f->app, LATCH_ERR_WRONG_THREAD, "latch_res_end",
                         "called from thread 3", SITE(NULL, 0, NULL));
    capture_stop(&c, out, sizeof(out));
    assert_string_equal(out, "latch: ERR_WRONG_THREAD: called from thread 3\n"
                             "    at latch_res_end (?:0, ?)\n");
}

/* A stale handle's report names the request it belonged to, by id only:
 * the request is over, its method and path are gone. */
static void test_default_hook_stale_handle_request(void **state)
{
    fixture *f = *state;
    char out[2048];
    capture c;

    capture_start(&c);
    latch__violation_app_req(f->app, LATCH_ERR_STREAM_DESTROYED,
                             "latch_res_post", "The response of request 42",
                             SITE("room.c", 9, "publish"), 42);
    capture_stop(&c, out, sizeof(out));
    assert_string_equal(out,
                        "latch: ERR_STREAM_DESTROYED: The response of request "
                        "42\n"
                        "    at latch_res_post (room.c:9, publish)\n"
                        "    request 42\n");
}

static char formatted[4096];
static int formatted_len;

static void formatting_hook(const latch_violation *v, void *data)
{
    (void)data;
    formatted_len = latch_violation_format(v, formatted, sizeof(formatted));
}

/* latch_violation_format gives a hook the default hook's exact text; cut
 * to the buffer (NUL-terminated, the whole length returned, as snprintf),
 * measured with cap 0, refused without a violation. */
static void test_violation_format_is_the_default_text(void **state)
{
    fixture *f = *state;
    char out[2048], small[16];
    capture c;

    seal_headers(f->res, "latch_res_json", "file.c", 18, "create_user");
    seal_end(f->res, "latch_res_json", "file.c", 18, "create_user");
    capture_start(&c);
    latch__violation(f->res, LATCH_ERR_HTTP_HEADERS_SENT, "latch_res_json",
                     NULL, SITE("file.c", 24, "create_user"));
    capture_stop(&c, out, sizeof(out));
    assert_int_equal(latch_app_on_violation(f->app, formatting_hook, NULL), 0);
    latch__violation(f->res, LATCH_ERR_HTTP_HEADERS_SENT, "latch_res_json",
                     NULL, SITE("file.c", 24, "create_user"));
    assert_string_equal(formatted, out);
    assert_int_equal(formatted_len, (int)strlen(out));
    {
        latch_violation v = {0};
        v.code = LATCH_ERR_NEXT_TWICE;
        v.name = "ERR_NEXT_TWICE";
        v.message = "twice";
        v.call = "latch_next";
        v.at = SITE("m.c", 3, "mw");
        assert_int_equal(latch_violation_format(&v, small, sizeof(small)),
                         (int)strlen("latch: ERR_NEXT_TWICE: twice\n"
                                     "    at latch_next (m.c:3, mw)\n"));
        assert_string_equal(small, "latch: ERR_NEXT");
        assert_int_equal(latch_violation_format(&v, NULL, 0),
                         (int)strlen("latch: ERR_NEXT_TWICE: twice\n"
                                     "    at latch_next (m.c:3, mw)\n"));
    }
    assert_int_equal(latch_violation_format(NULL, small, sizeof(small)),
                     LATCH_ERR_INVALID_ARG);
}

/*
 * A report longer than any buffer (a long path, a long message) is cut
 * field by field, visibly ("..."), and every line still ends with a
 * newline: the next report starts on a line of its own.
 */
static void test_default_hook_long_report_keeps_its_lines(void **state)
{
    fixture *f = *state;
    static char path[6000], message[3000], out[32768];
    const char *p, *line;
    int reports = 0, lines = 0;
    capture c;

    memset(path, 'p', sizeof(path) - 1);
    path[0] = '/';
    memset(message, 'm', sizeof(message) - 1);
    f->res->req.path = path;
    capture_start(&c);
    latch__violation(f->res, LATCH_ERR_STATE, "latch_res_write", message,
                     SITE("file.c", 3, "h"));
    latch__violation(f->res, LATCH_ERR_NEXT_TWICE, "latch_next", NULL,
                     SITE("file.c", 4, "h"));
    capture_stop(&c, out, sizeof(out));
    assert_true(strlen(out) > 0);
    assert_int_equal(out[strlen(out) - 1], '\n');
    for (line = out; *line != '\0'; line = p + 1) {
        p = strchr(line, '\n');
        assert_non_null(p);
        lines++;
        if (strncmp(line, "latch: ", 7) == 0)
            reports++;
        else
            assert_memory_equal(line, "    ", 4);
    }
    assert_int_equal(reports, 2);
    /* Both blocks whole: message, site and request lines of each. */
    assert_int_equal(lines, 6);
    assert_non_null(strstr(out, "mmm...\n    at latch_res_write (file.c:3"));
    assert_non_null(strstr(out, "    request 17: POST /ppp"));
    assert_non_null(strstr(out, "ppp...\nlatch: ERR_NEXT_TWICE"));
    assert_non_null(strstr(out, "    at latch_next (file.c:4, h)\n"
                                "    request 17: POST /ppp"));
}

/*
 * A path is the client's: a decoded "%0A" must not start a line of its
 * own (it could forge a report). Control bytes in any field are escaped.
 */
static void test_default_hook_escapes_control_bytes(void **state)
{
    fixture *f = *state;
    char out[4096];
    capture c;

    f->res->req.path = "/a\nlatch: ERR_FORGED: x\r\n\tb\x7f";
    capture_start(&c);
    latch__violation(f->res, LATCH_ERR_STATE, "latch_res_write", "m\nn",
                     SITE("file.c", 3, "h"));
    capture_stop(&c, out, sizeof(out));
    assert_string_equal(out, "latch: ERR_STATE: m\\x0an\n"
                             "    at latch_res_write (file.c:3, h)\n"
                             "    request 17: POST /a\\x0alatch: ERR_FORGED: "
                             "x\\x0d\\x0a\\x09b\\x7f\n");
}

static void test_policy_count_prints_nothing(void **state)
{
    fixture *f = *state;
    char out[2048];
    capture c;

    assert_int_equal(latch_app_set_violation_policy(f->app, LATCH_POLICY_COUNT),
                     0);
    capture_start(&c);
    latch__violation(f->res, LATCH_ERR_STATE, "x", NULL, SITE("a.c", 1, "f"));
    capture_stop(&c, out, sizeof(out));
    assert_string_equal(out, "");
    assert_int_equal(latch_app_violation_count(f->app, LATCH_ERR_STATE), 1);
}

/* ---- abort, in a child ------------------------------------------------- */

static void pipe_hook(const latch_violation *v, void *data)
{
    int fd = *(int *)data;
    char c = (char)('0' - v->code % 10);

    /* One byte per report: the parent checks the report came first. */
    if (write(fd, &c, 1) != 1)
        _exit(3);
}

typedef struct child_result {
    int status;
    char out[2048];
} child_result;

/*
 * Runs one violation in a child with LATCH_STRICT set to `strict` (NULL:
 * unset) before latch_app_new. With `policy` >= 0 it is set explicitly;
 * with `hooked` the pipe hook reports, else the default hook prints to
 * stderr, which goes to the pipe too. The child exits 0 if it survives.
 */
static void run_child(const char *strict, int policy, bool hooked,
                      child_result *r)
{
    int fds[2];
    size_t n = 0;
    ssize_t k;
    pid_t pid;

    assert_int_equal(pipe(fds), 0);
    fflush(NULL);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct rlimit no_core = {0, 0};
        latch_app *app;
        latch_worker *w = calloc(1, sizeof(*w));
        latch_res *res = calloc(1, sizeof(*res));

        /* No core file, and abort() must not reach a test framework's
         * handler. */
        setrlimit(RLIMIT_CORE, &no_core);
        signal(SIGABRT, SIG_DFL);
        close(fds[0]);
        if (strict)
            setenv("LATCH_STRICT", strict, 1);
        else
            unsetenv("LATCH_STRICT");
        app = latch_app_new();
        if (app == NULL || w == NULL || res == NULL)
            _exit(4);
        if (policy >= 0 && latch_app_set_violation_policy(app, policy) != 0)
            _exit(5);
        if (hooked)
            latch_app_on_violation(app, pipe_hook, &fds[1]);
        else if (dup2(fds[1], STDERR_FILENO) < 0)
            _exit(6);
        w->app = app;
        res->w = w;
        res->req.id = 9;
        res->req.method = "GET";
        res->req.path = "/x";
        latch__violation(res, LATCH_ERR_NEXT_TWICE, "latch_next", NULL,
                         SITE("t.c", 2, "h"));
        _exit(0);
    }
    close(fds[1]);
    while (n < sizeof(r->out) - 1 &&
           (k = read(fds[0], r->out + n, sizeof(r->out) - 1 - n)) > 0)
        n += (size_t)k;
    r->out[n] = '\0';
    close(fds[0]);
    assert_int_equal(waitpid(pid, &r->status, 0), pid);
}

static const char next_twice_block[] =
    "latch: ERR_NEXT_TWICE: next() was called more than once\n"
    "    at latch_next (t.c:2, h)\n"
    "    request 9: GET /x\n";

static void test_policy_abort_reports_then_aborts(void **state)
{
    child_result r;

    (void)state;
    run_child(NULL, LATCH_POLICY_ABORT, true, &r);
    assert_true(WIFSIGNALED(r.status));
    assert_int_equal(WTERMSIG(r.status), SIGABRT);
    /* -3009 % 10 == -9: the hook wrote '9' before abort(). */
    assert_string_equal(r.out, "9");

    run_child(NULL, LATCH_POLICY_ABORT, false, &r);
    assert_true(WIFSIGNALED(r.status));
    assert_int_equal(WTERMSIG(r.status), SIGABRT);
    assert_string_equal(r.out, next_twice_block);
}

static void test_policy_report_does_not_abort(void **state)
{
    child_result r;

    (void)state;
    run_child(NULL, -1, false, &r);
    assert_true(WIFEXITED(r.status));
    assert_int_equal(WEXITSTATUS(r.status), 0);
    assert_string_equal(r.out, next_twice_block);
}

static void test_latch_strict_selects_abort(void **state)
{
    child_result r;

    (void)state;
    run_child("1", -1, false, &r);
    assert_true(WIFSIGNALED(r.status));
    assert_int_equal(WTERMSIG(r.status), SIGABRT);
    assert_string_equal(r.out, next_twice_block);

    /* Only "1" is strict. */
    run_child("0", -1, false, &r);
    assert_true(WIFEXITED(r.status));
    assert_int_equal(WEXITSTATUS(r.status), 0);
    assert_string_equal(r.out, next_twice_block);

    /* An explicit policy overrides the environment. */
    run_child("1", LATCH_POLICY_REPORT, true, &r);
    assert_true(WIFEXITED(r.status));
    assert_int_equal(WEXITSTATUS(r.status), 0);
    assert_string_equal(r.out, "9");
}

/* ---- report paths ------------------------------------------------------ */

/* An app made under LATCH_SOURCE_ROOT=root (NULL: unset), with the
 * recording hook, and one violation sealed and raised in `file`. */
static latch_app *strip_app(const char *root, fixture *f, const char *file)
{
    latch_app *app;

    if (root != NULL)
        setenv("LATCH_SOURCE_ROOT", root, 1);
    else
        unsetenv("LATCH_SOURCE_ROOT");
    app = latch_app_new();
    unsetenv("LATCH_SOURCE_ROOT");
    assert_non_null(app);
    memset(&rec, 0, sizeof(rec));
    assert_int_equal(latch_app_on_violation(app, recording_hook, &rec), 0);
    f->w->app = app;
    seal_end(f->res, "latch_res_end", file, 17, "create_user");
    latch__violation(f->res, LATCH_ERR_STREAM_WRITE_AFTER_END,
                     "latch_res_write", NULL, SITE(file, 18, "create_user"));
    f->w->app = f->app;
    assert_int_equal(rec.calls, 1);
    return app;
}

static void test_reports_strip_the_source_root(void **state)
{
    fixture *f = *state;
    latch_app *app;

    /* The root, with or without its trailing slash, goes with its '/'. */
    app = strip_app("/home/u/proj/", f, "/home/u/proj/src/users.c");
    assert_string_equal(rec.at_file.s, "src/users.c");
    assert_string_equal(rec.sealed_file.s, "src/users.c");
    /* Counted under the short name; asked either way. */
    assert_int_equal(latch_app_violation_site_count(app, "src/users.c", 18), 1);
    assert_int_equal(
        latch_app_violation_site_count(app, "/home/u/proj/src/users.c", 18), 1);
    latch_app_free(app);

    /* Only a whole directory matches; relative paths are kept. */
    app = strip_app("/home/u/proj", f, "/home/u/project/a.c");
    assert_string_equal(rec.at_file.s, "/home/u/project/a.c");
    latch_app_free(app);
    app = strip_app("/home/u/proj", f, "src/users.c");
    assert_string_equal(rec.at_file.s, "src/users.c");
    latch_app_free(app);

    /* "/" strips nothing (every path would lose its root). */
    app = strip_app("/", f, "/home/u/proj/src/users.c");
    assert_string_equal(rec.at_file.s, "/home/u/proj/src/users.c");
    latch_app_free(app);
}

static void test_reports_strip_the_working_directory(void **state)
{
    fixture *f = *state;
    char cwd[4096], file[4200];
    latch_app *app;

    assert_non_null(getcwd(cwd, sizeof(cwd)));
    snprintf(file, sizeof(file), "%s/src/users.c", cwd);
    app = strip_app(NULL, f, file);
    if (strcmp(cwd, "/") == 0)
        assert_string_equal(rec.at_file.s, file);
    else
        assert_string_equal(rec.at_file.s, "src/users.c");
    latch_app_free(app);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_code_has_its_name_and_message),
        cmocka_unit_test(test_codes_are_distinct_and_negative),
        cmocka_unit_test(test_zero_is_ok),
        cmocka_unit_test(test_negated_errno_has_libuv_name),
        cmocka_unit_test(test_out_of_range_codes_are_unknown),
        cmocka_unit_test(test_unassigned_negative_codes_are_unknown),
        cmocka_unit_test_setup_teardown(
            test_hook_gets_the_headers_seal_for_headers_sent, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_hook_gets_the_end_seal_for_write_after_end, setup, teardown),
        cmocka_unit_test_setup_teardown(test_headers_seal_when_not_ended, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_framework_event_seal_and_no_seal,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_off_loop_report_names_no_place,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_path_falls_back_to_url, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_app_violation_has_no_request,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_counts_per_code_and_total, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_invalid_policy_is_refused, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_default_hook_prints_the_block,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_default_hook_event_seal, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(
            test_default_hook_without_seal_or_request, setup, teardown),
        cmocka_unit_test_setup_teardown(test_default_hook_stale_handle_request,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_violation_format_is_the_default_text, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_default_hook_long_report_keeps_its_lines, setup, teardown),
        cmocka_unit_test_setup_teardown(test_default_hook_escapes_control_bytes,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_policy_count_prints_nothing, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_reports_strip_the_source_root,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_reports_strip_the_working_directory, setup, teardown),
        cmocka_unit_test(test_policy_abort_reports_then_aborts),
        cmocka_unit_test(test_policy_report_does_not_abort),
        cmocka_unit_test(test_latch_strict_selects_abort),
    };

    /* The policy under test must not come from the caller's environment:
     * the tests that need LATCH_STRICT set it in a child. */
    unsetenv("LATCH_STRICT");
    unsetenv("LATCH_SOURCE_ROOT");
    return cmocka_run_group_tests(tests, NULL, NULL);
}
