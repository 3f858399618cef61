/*
 * test_api_args.c - every public entry point of include/latch.h called
 * with bad arguments: NULL objects, NULL data with a length, NULL names
 * and values, statuses out of range, limits and policies out of range,
 * NULL callbacks where one is required, indexes outside a join or a
 * header list. Each row of one table makes one such call and says what
 * it must return and how many reports (and of which code) it raises.
 *
 * Rows marked H run inside a real handler on a real server (one request
 * per row): a call that concerns a response is reported, names this file
 * when the entry point takes a site, and leaves the response usable (the
 * handler answers "ok" afterwards and the client gets exactly one
 * well-formed response). Rows marked O run outside any request (NULL
 * objects, app settings): they must return the documented value and never
 * crash.
 *
 * The table is checked against the header itself: test_every_entry_point
 * _has_a_row parses include/latch.h at run time and fails for any
 * LATCH_API function without a row, so a new entry point cannot be added
 * without deciding what its bad arguments do.
 */
static const char test_file[] = __FILE__;
#include "res_probe.h"

#include <ctype.h>
#include <limits.h>

#ifndef LATCH_SOURCE_DIR
#error "LATCH_SOURCE_DIR must name the source tree (tests/CMakeLists.txt)"
#endif

typedef struct ctx {
    latch_app *app; /* H: the running app; O: a fresh app, not running */
    latch_req *req;
    latch_res *res;
} ctx;

enum { O, H };

/* Reports raised by the row being run. */
static struct {
    int n;
    int codes[8];
    char files[8][256];
} rep;
static pthread_mutex_t rep_mu = PTHREAD_MUTEX_INITIALIZER;

static void rep_hook(const latch_violation *v, void *data)
{
    (void)data;
    pthread_mutex_lock(&rep_mu);
    if (rep.n < 8) {
        rep.codes[rep.n] = v->code;
        snprintf(rep.files[rep.n], sizeof(rep.files[0]), "%s",
                 v->at.file ? v->at.file : "");
    }
    rep.n++;
    pthread_mutex_unlock(&rep_mu);
}

static void rep_reset(void)
{
    pthread_mutex_lock(&rep_mu);
    memset(&rep, 0, sizeof(rep));
    pthread_mutex_unlock(&rep_mu);
}

/* ---- helpers for rows that need more than one call ----------------- */

static int h_ok(latch_req *req, latch_res *res, void *data)
{
    (void)req;
    (void)data;
    return latch_res_send(res, "x", 1);
}

static int e_ok(const latch_error *err, latch_req *req, latch_res *res,
                void *data)
{
    (void)err;
    (void)req;
    (void)res;
    (void)data;
    return LATCH_NEXT;
}

static void cb_res(latch_res *res, void *data)
{
    (void)res;
    (void)data;
}

static void cb_cancel(latch_req *req, int reason, void *data)
{
    (void)req;
    (void)reason;
    (void)data;
}

static void cb_work(void *data)
{
    (void)data;
}

static void cb_after(latch_res *res, int status, void *data)
{
    (void)res;
    (void)status;
    (void)data;
}

static void cb_join(latch_res *res, int status, void *const *results,
                    void *data)
{
    (void)res;
    (void)status;
    (void)results;
    (void)data;
}

static void cb_site(const char *file, int line, int code, uint64_t count,
                    void *data)
{
    (void)file;
    (void)line;
    (void)code;
    (void)count;
    (void)data;
}

static bool str_is(const char *s, const char *want)
{
    return s != NULL && strcmp(s, want) == 0;
}

/* A join of two tasks: one bad report (refused), then both tasks report
 * so the join completes and lets go of the response. Returns the bad
 * call's result. */
static long join_bad(ctx *c, int which)
{
    latch_join *j = latch_join_new(c->res, 2, cb_join, NULL);
    long r;

    if (j == NULL)
        return 1;
    r = which == 0   ? latch_join_resolve(j, -1, NULL)
        : which == 1 ? latch_join_resolve(j, 2, NULL)
        : which == 2 ? latch_join_fail(j, INT_MAX, -5)
                     : latch_join_fail(j, -7, -5);
    latch_join_resolve(j, 0, NULL);
    latch_join_resolve(j, 1, NULL);
    return r;
}

/* A JSON writer fed a bad value: the value call returns the error and
 * json_end answers 500 and reports it. Returns json_end's result. */
static long json_bad(ctx *c, int which)
{
    latch_json *j = latch_res_json_begin(c->res);

    if (j == NULL)
        return 1;
    if (which == 0) {
        if (latch_json_string_n(j, NULL, 5) != LATCH_ERR_INVALID_ARG)
            return 2;
    } else {
        latch_json_object_begin(j);
        if (latch_json_key(j, NULL) != LATCH_ERR_INVALID_ARG)
            return 2;
    }
    return latch_res_json_end(c->res);
}

/* A value written with a writer that json_end closed: refused. */
static long json_closed(ctx *c)
{
    latch_json *j = latch_res_json_begin(c->res);

    if (j == NULL || latch_json_null(j) != 0 || latch_res_json_end(c->res) != 0)
        return 1;
    return latch_json_int(j, 5);
}

static long header_at_bad(ctx *c, int i)
{
    const char *n = "x", *v = "x";
    long r = latch_req_header_at(c->req, i, &n, &v);

    /* Out-parameters are set on every path. */
    return n == NULL && v == NULL ? r : 1;
}

static long header_values_bad(ctx *c, int max, bool null_values)
{
    const char *vals[2];

    return latch_req_header_values(c->req, "Host", null_values ? NULL : vals,
                                   max);
}

static long query_values_bad(ctx *c, int max, bool null_values)
{
    const char *vals[2];

    return latch_req_query_values(c->req, "a", null_values ? NULL : vals, max);
}

static long body_null(void)
{
    const void *d = "x";
    size_t n = 7;
    long r = latch_req_body(NULL, &d, &n);

    return d != NULL && n == 0 ? r : 1;
}

/* The registration functions behind the macros, by address. */
static long reg_null_app(int which)
{
    switch (which) {
    case 0: return (latch_use)(NULL, "/", h_ok, NULL);
    case 1: return (latch_route)(NULL, "GET", "/a", h_ok, NULL);
    case 2: return (latch_get)(NULL, "/a", h_ok, NULL);
    case 3: return (latch_post)(NULL, "/a", h_ok, NULL);
    case 4: return (latch_put)(NULL, "/a", h_ok, NULL);
    case 5: return (latch_delete)(NULL, "/a", h_ok, NULL);
    case 6: return (latch_patch)(NULL, "/a", h_ok, NULL);
    case 7: return (latch_all)(NULL, "/a", h_ok, NULL);
    default: return (latch_use_error)(NULL, e_ok, NULL);
    }
}

static long reg_null_fn(ctx *c, int which)
{
    switch (which) {
    case 0: return (latch_use)(c->app, "/", NULL, NULL);
    case 1: return (latch_route)(c->app, "GET", "/a", NULL, NULL);
    case 2: return (latch_get)(c->app, "/a", NULL, NULL);
    case 3: return (latch_post)(c->app, "/a", NULL, NULL);
    case 4: return (latch_put)(c->app, "/a", NULL, NULL);
    case 5: return (latch_delete)(c->app, "/a", NULL, NULL);
    case 6: return (latch_patch)(c->app, "/a", NULL, NULL);
    case 7: return (latch_all)(c->app, "/a", NULL, NULL);
    default: return (latch_use_error)(c->app, NULL, NULL);
    }
}

/* ---- the table ------------------------------------------------------ */

#define IA LATCH_ERR_INVALID_ARG
#define IC LATCH_ERR_INVALID_CHAR
#define IS LATCH_ERR_HTTP_INVALID_STATUS_CODE
#define SITE_ LATCH_HERE

/*
 * X(id, "prototype name", O|H, expected result, reports, report code,
 * the call as an expression over `c`). Pointer results are compared to
 * NULL in the expression; void calls yield 0 with a comma.
 */
#define ROWS(X)                                                                \
    X(1, "latch_err_name", O, 1, 0, 0,                                         \
      str_is(latch_err_name(INT_MIN), "UNKNOWN"))                              \
    X(2, "latch_strerror", O, 1, 0, 0,                                         \
      str_is(latch_strerror(INT_MAX), "Unknown error"))                        \
    X(3, "latch_app_new", O, 1, 0, 0, (latch_app_free(latch_app_new()), 1))    \
    X(4, "latch_app_free", O, 0, 0, 0, (latch_app_free(NULL), 0))              \
    X(5, "latch_use", O, IA, 0, 0, reg_null_app(0))                            \
    X(6, "latch_use", O, IA, 0, 0, reg_null_fn(c, 0))                          \
    X(7, "latch_route", O, IA, 0, 0, reg_null_app(1))                          \
    X(8, "latch_route", O, IA, 0, 0, reg_null_fn(c, 1))                        \
    X(9, "latch_get", O, IA, 0, 0, reg_null_app(2))                            \
    X(10, "latch_get", O, IA, 0, 0, reg_null_fn(c, 2))                         \
    X(11, "latch_post", O, IA, 0, 0, reg_null_app(3))                          \
    X(12, "latch_post", O, IA, 0, 0, reg_null_fn(c, 3))                        \
    X(13, "latch_put", O, IA, 0, 0, reg_null_app(4))                           \
    X(14, "latch_put", O, IA, 0, 0, reg_null_fn(c, 4))                         \
    X(15, "latch_delete", O, IA, 0, 0, reg_null_app(5))                        \
    X(16, "latch_delete", O, IA, 0, 0, reg_null_fn(c, 5))                      \
    X(17, "latch_patch", O, IA, 0, 0, reg_null_app(6))                         \
    X(18, "latch_patch", O, IA, 0, 0, reg_null_fn(c, 6))                       \
    X(19, "latch_all", O, IA, 0, 0, reg_null_app(7))                           \
    X(20, "latch_all", O, IA, 0, 0, reg_null_fn(c, 7))                         \
    X(21, "latch_use_error", O, IA, 0, 0, reg_null_app(8))                     \
    X(22, "latch_use_error", O, IA, 0, 0, reg_null_fn(c, 8))                   \
    X(23, "latch_use_at", O, IA, 0, 0,                                         \
      latch_use_at(c->app, "no-slash", h_ok, NULL, NULL, SITE_))               \
    X(24, "latch_route_at", O, IA, 0, 0,                                       \
      latch_route_at(c->app, "", "/a", h_ok, NULL, "h", SITE_))                \
    X(25, "latch_route_at", O, IA, 0, 0,                                       \
      latch_route_at(c->app, "G T", "/a", h_ok, NULL, "h", SITE_))             \
    X(26, "latch_route_at", O, IA, 0, 0,                                       \
      latch_route_at(c->app, "GET", NULL, h_ok, NULL, "h", SITE_))             \
    X(27, "latch_route_at", O, IA, 0, 0,                                       \
      latch_route_at(c->app, "GET", "/:", h_ok, NULL, "h", SITE_))             \
    X(28, "latch_use_error_at", O, IA, 0, 0,                                   \
      latch_use_error_at(c->app, NULL, NULL, "e", SITE_))                      \
    X(29, "latch_route_body_limit", O, IA, 0, 0,                               \
      latch_route_body_limit(NULL, "GET", "/a", 1))                            \
    X(30, "latch_route_body_limit", O, IA, 0, 0,                               \
      latch_route_body_limit(c->app, "", "/a", 1))                             \
    X(31, "latch_route_body_limit", O, IA, 0, 0,                               \
      latch_route_body_limit(c->app, "GET", "a", 1))                           \
    X(32, "latch_listen", O, IA, 0, 0, latch_listen(NULL, "127.0.0.1", 0))     \
    X(33, "latch_listen", O, IA, 0, 0, latch_listen(c->app, "127.0.0.1", -1))  \
    X(34, "latch_listen", O, IA, 0, 0,                                         \
      latch_listen(c->app, "127.0.0.1", 65536))                                \
    X(35, "latch_listen", O, IA, 0, 0, latch_listen(c->app, "not-an-ip", 0))   \
    X(36, "latch_app_port", O, -1, 0, 0, latch_app_port(NULL))                 \
    X(37, "latch_run", O, IA, 0, 0, latch_run(NULL))                           \
    X(38, "latch_run", O, LATCH_ERR_STATE, 0, 0, latch_run(c->app))            \
    X(39, "latch_stop", O, 0, 0, 0, (latch_stop(NULL), 0))                     \
    X(40, "latch_app_set_workers", O, IA, 0, 0,                                \
      latch_app_set_workers(NULL, 1))                                          \
    X(41, "latch_app_set_workers", O, IA, 0, 0,                                \
      latch_app_set_workers(c->app, -1))                                       \
    X(42, "latch_app_set_workers", O, IA, 0, 0,                                \
      latch_app_set_workers(c->app, INT_MAX))                                  \
    X(43, "latch_app_set_development", O, IA, 0, 0,                            \
      latch_app_set_development(NULL, true))                                   \
    X(44, "latch_app_set_trust_proxy", O, IA, 0, 0,                            \
      latch_app_set_trust_proxy(NULL, 1))                                      \
    X(45, "latch_app_set_trust_proxy", O, IA, 0, 0,                            \
      latch_app_set_trust_proxy(c->app, -1))                                   \
    X(46, "latch_app_set_handle_signals", O, IA, 0, 0,                         \
      latch_app_set_handle_signals(NULL, false))                               \
    X(47, "latch_app_set_limit", O, IA, 0, 0,                                  \
      latch_app_set_limit(NULL, LATCH_LIMIT_BODY, 1))                          \
    X(48, "latch_app_set_limit", O, IA, 0, 0,                                  \
      latch_app_set_limit(c->app, -1, 5))                                      \
    X(49, "latch_app_set_limit", O, IA, 0, 0,                                  \
      latch_app_set_limit(c->app, 999, 5))                                     \
    X(50, "latch_app_set_limit", O, IA, 0, 0,                                  \
      latch_app_set_limit(c->app, LATCH_LIMIT_FIELDS, 0))                      \
    X(51, "latch_app_set_limit", O, IA, 0, 0,                                  \
      latch_app_set_limit(c->app, LATCH_TIMEOUT_HEADER, 0))                    \
    X(52, "latch_app_set_limit", O, IA, 0, 0,                                  \
      latch_app_set_limit(c->app, LATCH_LIMIT_HEAD, UINT64_MAX))               \
    X(53, "latch_app_set_request_timeout", O, IA, 0, 0,                        \
      latch_app_set_request_timeout(NULL, 10, 0))                              \
    X(54, "latch_app_set_request_timeout", O, IA, 0, 0,                        \
      latch_app_set_request_timeout(c->app, 10, 200))                          \
    X(55, "latch_app_set_request_timeout", O, IA, 0, 0,                        \
      latch_app_set_request_timeout(c->app, UINT64_MAX, 0))                    \
    X(56, "latch_app_set_violation_policy", O, IA, 0, 0,                       \
      latch_app_set_violation_policy(NULL, LATCH_POLICY_REPORT))               \
    X(57, "latch_app_set_violation_policy", O, IA, 0, 0,                       \
      latch_app_set_violation_policy(c->app, 7))                               \
    X(58, "latch_app_set_violation_policy", O, IA, 0, 0,                       \
      latch_app_set_violation_policy(c->app, -1))                              \
    X(59, "latch_app_on_violation", O, IA, 0, 0,                               \
      latch_app_on_violation(NULL, rep_hook, NULL))                            \
    X(60, "latch_app_violation_count", O, 0, 0, 0,                             \
      (long)latch_app_violation_count(NULL, 0))                                \
    X(61, "latch_app_violation_count", O, 0, 0, 0,                             \
      (long)latch_app_violation_count(c->app, INT_MIN))                        \
    X(62, "latch_app_violation_site_count", O, 0, 0, 0,                        \
      (long)latch_app_violation_site_count(NULL, "a.c", 1))                    \
    X(63, "latch_app_violation_site_count", O, 0, 0, 0,                        \
      (long)latch_app_violation_site_count(c->app, NULL, 1))                   \
    X(64, "latch_app_violation_sites", O, 0, 0, 0,                             \
      (latch_app_violation_sites(NULL, cb_site, NULL), 0))                     \
    X(65, "latch_app_violation_sites", O, 0, 0, 0,                             \
      (latch_app_violation_sites(c->app, NULL, NULL), 0))                      \
    X(66, "latch_req_set_timeout_at", O, IA, 0, 0,                             \
      latch_req_set_timeout(NULL, 1, 0))                                       \
    X(67, "latch_req_set_timeout_at", H, IA, 1, IA,                            \
      latch_req_set_timeout(c->req, 10, 200))                                  \
    X(68, "latch_req_set_timeout_at", H, IA, 1, IA,                            \
      latch_req_set_timeout(c->req, UINT64_MAX, 0))                            \
    X(69, "latch_next_at", O, 0, 0, 0, (latch_next(NULL), 0))                  \
    X(70, "latch_fail_at", O, IA, 0, 0, latch_fail(NULL, 500, "x"))            \
    X(71, "latch_req_method", O, 1, 0, 0, str_is(latch_req_method(NULL), ""))  \
    X(72, "latch_req_path", O, 1, 0, 0, str_is(latch_req_path(NULL), ""))      \
    X(73, "latch_req_url", O, 1, 0, 0, str_is(latch_req_url(NULL), ""))        \
    X(74, "latch_req_query", O, 1, 0, 0, (latch_req_query)(NULL, "a") == NULL) \
    X(75, "latch_req_query", H, 1, 1, IA,                                      \
      (latch_req_query)(c->req, NULL) == NULL)                                 \
    X(76, "latch_req_query_values", H, IA, 1, IA,                              \
      query_values_bad(c, -1, false))                                          \
    X(77, "latch_req_query_values", H, IA, 1, IA,                              \
      query_values_bad(c, 2, true))                                            \
    X(78, "latch_req_query_values", H, IA, 1, IA,                              \
      (latch_req_query_values)(c->req, NULL, NULL, 0))                         \
    X(79, "latch_req_param", H, 1, 1, IA,                                      \
      (latch_req_param)(c->req, NULL) == NULL)                                 \
    X(80, "latch_req_header", H, 1, 1, IA,                                     \
      (latch_req_header)(c->req, NULL) == NULL)                                \
    X(81, "latch_req_header_values", H, IA, 1, IA,                             \
      header_values_bad(c, -1, false))                                         \
    X(82, "latch_req_header_values", H, IA, 1, IA,                             \
      header_values_bad(c, 2, true))                                           \
    X(83, "latch_req_header_values", H, IA, 1, IA,                             \
      (latch_req_header_values)(c->req, NULL, NULL, 0))                        \
    X(84, "latch_req_header_count", O, 0, 0, 0,                                \
      (latch_req_header_count)(NULL))                                          \
    X(85, "latch_req_header_at", H, IA, 1, IA, header_at_bad(c, -1))           \
    X(86, "latch_req_header_at", H, IA, 1, IA, header_at_bad(c, INT_MAX))      \
    X(87, "latch_req_header_at", O, IA, 0, 0,                                  \
      (latch_req_header_at)(NULL, 0, NULL, NULL))                              \
    X(88, "latch_req_cookie", H, 1, 1, IA,                                     \
      (latch_req_cookie)(c->req, NULL) == NULL)                                \
    X(89, "latch_req_ip", O, 1, 0, 0, (latch_req_ip)(NULL) == NULL)            \
    X(90, "latch_json_body", O, LATCH_NEXT, 0, 0,                              \
      latch_json_body(NULL, NULL, NULL))                                       \
    X(91, "latch_req_json", O, 1, 0, 0, (latch_req_json)(NULL) == NULL)        \
    X(92, "latch_req_body", O, IA, 0, 0, body_null())                          \
    X(93, "latch_req_id", O, 0, 0, 0, (long)(latch_req_id)(NULL))              \
    X(94, "latch_req_aborted", O, 0, 0, 0, (latch_req_aborted)(NULL))          \
    X(95, "latch_req_on_cancel_at", O, IA, 0, 0,                               \
      latch_req_on_cancel(NULL, cb_cancel, NULL))                              \
    X(96, "latch_req_on_cancel_at", H, IA, 1, IA,                              \
      latch_req_on_cancel(c->req, NULL, NULL))                                 \
    X(97, "latch_req_cancel_reason", O, LATCH_CANCEL_NONE, 0, 0,               \
      (latch_req_cancel_reason)(NULL))                                         \
    X(98, "latch_req_version_minor", O, 0, 0, 0,                               \
      (latch_req_version_minor)(NULL))                                         \
    X(99, "latch_req_res", O, 1, 0, 0, (latch_req_res)(NULL) == NULL)          \
    X(100, "latch_res_req", O, 1, 0, 0, (latch_res_req)(NULL) == NULL)         \
    X(101, "latch_res_status_at", O, IA, 0, 0, latch_res_status(NULL, 200))    \
    X(102, "latch_res_status_at", H, IS, 1, IS, latch_res_status(c->res, 99))  \
    X(103, "latch_res_status_at", H, IS, 1, IS,                                \
      latch_res_status(c->res, 1000))                                          \
    X(104, "latch_res_status_at", H, IS, 1, IS,                                \
      latch_res_status(c->res, INT_MIN))                                       \
    X(105, "latch_res_get_status", O, 0, 0, 0, (latch_res_get_status)(NULL))   \
    X(106, "latch_res_set_header_at", O, IA, 0, 0,                             \
      latch_res_set_header(NULL, "X", "1"))                                    \
    X(107, "latch_res_set_header_at", H, IA, 1, IA,                            \
      latch_res_set_header(c->res, NULL, "1"))                                 \
    X(108, "latch_res_set_header_at", H, IA, 1, IA,                            \
      latch_res_set_header(c->res, "X", NULL))                                 \
    X(109, "latch_res_set_header_at", H, IC, 1, IC,                            \
      latch_res_set_header(c->res, "", "1"))                                   \
    X(110, "latch_res_set_header_at", H, IC, 1, IC,                            \
      latch_res_set_header(c->res, "X", "a\r\nb: c"))                          \
    X(111, "latch_res_append_header_at", O, IA, 0, 0,                          \
      latch_res_append_header(NULL, "X", "1"))                                 \
    X(112, "latch_res_append_header_at", H, IA, 1, IA,                         \
      latch_res_append_header(c->res, NULL, NULL))                             \
    X(113, "latch_res_append_header_at", H, IC, 1, IC,                         \
      latch_res_append_header(c->res, "X Y", "1"))                             \
    X(114, "latch_res_remove_header_at", O, IA, 0, 0,                          \
      latch_res_remove_header(NULL, "X"))                                      \
    X(115, "latch_res_remove_header_at", H, IA, 1, IA,                         \
      latch_res_remove_header(c->res, NULL))                                   \
    X(116, "latch_res_clear_headers_at", O, IA, 0, 0,                          \
      latch_res_clear_headers(NULL))                                           \
    X(117, "latch_res_get_header", O, 1, 0, 0,                                 \
      (latch_res_get_header)(NULL, "X") == NULL)                               \
    X(118, "latch_res_get_header", H, 1, 1, IA,                                \
      (latch_res_get_header)(c->res, NULL) == NULL)                            \
    X(119, "latch_res_write_head_at", O, IA, 0, 0,                             \
      latch_res_write_head(NULL, 200))                                         \
    X(120, "latch_res_write_head_at", H, IS, 1, IS,                            \
      latch_res_write_head(c->res, 42))                                        \
    X(121, "latch_res_write_head_at", H, IS, 1, IS,                            \
      latch_res_write_head(c->res, -200))                                      \
    X(122, "latch_res_flush_headers_at", O, IA, 0, 0,                          \
      latch_res_flush_headers(NULL))                                           \
    X(123, "latch_res_write_at", O, IA, 0, 0, latch_res_write(NULL, "x", 1))   \
    X(124, "latch_res_write_at", H, IA, 1, IA,                                 \
      latch_res_write(c->res, NULL, 5))                                        \
    X(125, "latch_res_end_at", O, IA, 0, 0, latch_res_end(NULL, NULL, 0))      \
    X(126, "latch_res_end_at", H, IA, 1, IA, latch_res_end(c->res, NULL, 5))   \
    X(127, "latch_res_send_at", O, IA, 0, 0, latch_res_send(NULL, "x", 1))     \
    X(128, "latch_res_send_at", H, IA, 1, IA, latch_res_send(c->res, NULL, 5)) \
    X(129, "latch_res_json_at", O, IA, 0, 0, latch_res_json(NULL, "{}"))       \
    X(130, "latch_res_type_at", O, IA, 0, 0, latch_res_type(NULL, "json"))     \
    X(131, "latch_res_type_at", H, IA, 1, IA, latch_res_type(c->res, NULL))    \
    X(132, "latch_res_type_at", H, IA, 1, IA, latch_res_type(c->res, ""))      \
    X(133, "latch_res_type_at", H, IA, 1, IA,                                  \
      latch_res_type(c->res, "no-such"))                                       \
    X(134, "latch_res_type_at", H, IC, 1, IC,                                  \
      latch_res_type(c->res, "text/a\nb"))                                     \
    X(135, "latch_res_send_status_at", O, IA, 0, 0,                            \
      latch_res_send_status(NULL, 200))                                        \
    X(136, "latch_res_send_status_at", H, IS, 1, IS,                           \
      latch_res_send_status(c->res, 5))                                        \
    X(137, "latch_res_redirect_at", O, IA, 0, 0,                               \
      latch_res_redirect(NULL, 302, "/"))                                      \
    X(138, "latch_res_redirect_at", H, IA, 1, IA,                              \
      latch_res_redirect(c->res, 302, NULL))                                   \
    X(139, "latch_res_redirect_at", H, IA, 1, IA,                              \
      latch_res_redirect(c->res, 200, "/"))                                    \
    X(140, "latch_res_json_begin_at", O, 1, 0, 0,                              \
      latch_res_json_begin(NULL) == NULL)                                      \
    X(141, "latch_json_object_begin", O, IA, 0, 0,                             \
      (latch_json_object_begin)(NULL))                                         \
    X(142, "latch_json_object_end", O, IA, 0, 0,                               \
      (latch_json_object_end)(NULL))                                           \
    X(143, "latch_json_array_begin", O, IA, 0, 0,                              \
      (latch_json_array_begin)(NULL))                                          \
    X(144, "latch_json_array_end", O, IA, 0, 0, (latch_json_array_end)(NULL))  \
    X(145, "latch_json_key", O, IA, 0, 0, (latch_json_key)(NULL, "k"))         \
    X(146, "latch_json_key", H, IA, 1, IA, json_bad(c, 1))                     \
    X(147, "latch_json_string", O, IA, 0, 0, (latch_json_string)(NULL, "s"))   \
    X(148, "latch_json_string_n", O, IA, 0, 0,                                 \
      (latch_json_string_n)(NULL, "s", 1))                                     \
    X(149, "latch_json_string_n", H, IA, 1, IA, json_bad(c, 0))                \
    X(150, "latch_json_int", O, IA, 0, 0, (latch_json_int)(NULL, 1))           \
    X(151, "latch_json_uint", O, IA, 0, 0, (latch_json_uint)(NULL, 1))         \
    X(152, "latch_json_double", O, IA, 0, 0, (latch_json_double)(NULL, 1.0))   \
    X(153, "latch_json_bool", O, IA, 0, 0, (latch_json_bool)(NULL, true))      \
    X(154, "latch_json_null", O, IA, 0, 0, (latch_json_null)(NULL))            \
    X(155, "latch_res_json_end_at", O, IA, 0, 0, latch_res_json_end(NULL))     \
    X(156, "latch_res_json_end_at", H, LATCH_ERR_STATE, 1, LATCH_ERR_STATE,    \
      latch_res_json_end(c->res))                                              \
    X(157, "latch_res_destroy_at", O, 0, 0, 0, (latch_res_destroy(NULL), 0))   \
    X(158, "latch_res_headers_sent", O, 0, 0, 0,                               \
      (latch_res_headers_sent)(NULL))                                          \
    X(159, "latch_res_writable_ended", O, 0, 0, 0,                             \
      (latch_res_writable_ended)(NULL))                                        \
    X(160, "latch_res_writable_finished", O, 0, 0, 0,                          \
      (latch_res_writable_finished)(NULL))                                     \
    X(161, "latch_res_destroyed", O, 0, 0, 0, (latch_res_destroyed)(NULL))     \
    X(162, "latch_res_on_finish_at", O, IA, 0, 0,                              \
      latch_res_on_finish(NULL, cb_res, NULL))                                 \
    X(163, "latch_res_on_close_at", O, IA, 0, 0,                               \
      latch_res_on_close(NULL, cb_res, NULL))                                  \
    X(164, "latch_res_on_drain_at", O, IA, 0, 0,                               \
      latch_res_on_drain(NULL, cb_res, NULL))                                  \
    X(165, "latch_res_retain", O, 0, 0, 0, ((latch_res_retain)(NULL), 0))      \
    X(166, "latch_res_release", O, 0, 0, 0, ((latch_res_release)(NULL), 0))    \
    X(901, "latch_res_retain_at", O, 0, 0, 0,                                  \
      (latch_res_retain_at(NULL, SITE_), 0))                                   \
    X(902, "latch_res_release_at", O, 0, 0, 0,                                 \
      (latch_res_release_at(NULL, SITE_), 0))                                  \
    X(903, "latch_res_pipe_at", O, IA, 0, 0,                                   \
      latch_res_pipe(NULL, cb_res, NULL, NULL))                                \
    X(904, "latch_res_pipe_at", H, IA, 1, IA,                                  \
      latch_res_pipe(c->res, NULL, NULL, NULL))                                \
    X(905, "latch_res_pipe_fail_at", O, IA, 0, 0,                              \
      latch_res_pipe_fail(NULL, -5))                                           \
    X(906, "latch_res_pipe_fail_at", H, IA, 1, IA,                             \
      latch_res_pipe_fail(c->res, 0))                                          \
    X(907, "latch_res_pipe_fail_at", H, LATCH_ERR_STATE, 1, LATCH_ERR_STATE,   \
      latch_res_pipe_fail(c->res, -5))                                         \
    X(908, "latch_res_sendfile_at", O, IA, 0, 0,                               \
      latch_res_sendfile(NULL, "x", NULL, NULL, NULL))                         \
    X(909, "latch_res_sendfile_at", H, IA, 1, IA,                              \
      latch_res_sendfile(c->res, NULL, NULL, NULL, NULL))                      \
    X(910, "latch_res_sendfile_at", H, IA, 1, IA,                              \
      latch_res_sendfile(c->res, "", NULL, NULL, NULL))                        \
    X(911, "latch_static", O, IA, 0, 0, latch_static(NULL, "/", "/", NULL))    \
    X(912, "latch_static", O, IA, 0, 0, latch_static(c->app, "/", NULL, NULL)) \
    X(913, "latch_static", O, IA, 0, 0,                                        \
      latch_static(c->app, "/", "/nonexistent-latch-root", NULL))              \
    X(914, "latch_proxy_at", O, IA, 0, 0,                                      \
      latch_proxy(NULL, NULL, "http://h", NULL))                               \
    X(915, "latch_proxy_at", H, IA, 1, IA,                                     \
      latch_proxy(c->req, c->res, NULL, NULL))                                 \
    X(916, "latch_proxy_at", H, IA, 1, IA,                                     \
      latch_proxy(c->req, c->res, "ftp://h/", NULL))                           \
    X(917, "latch_use_proxy", O, IA, 0, 0,                                     \
      latch_use_proxy(NULL, "/", "http://h", NULL))                            \
    X(918, "latch_use_proxy", O, IA, 0, 0,                                     \
      latch_use_proxy(c->app, "/", NULL, NULL))                                \
    X(940, "latch_res_on_finish", O, IA, 0, 0,                                 \
      (latch_res_on_finish)(NULL, cb_res, NULL))                               \
    X(941, "latch_res_on_close", O, IA, 0, 0,                                  \
      (latch_res_on_close)(NULL, cb_res, NULL))                                \
    X(942, "latch_res_on_drain", O, IA, 0, 0,                                  \
      (latch_res_on_drain)(NULL, cb_res, NULL))                                \
    X(943, "latch_req_on_cancel", O, IA, 0, 0,                                 \
      (latch_req_on_cancel)(NULL, cb_cancel, NULL))                            \
    X(944, "latch_req_on_cancel", H, IA, 1, IA,                                \
      (latch_req_on_cancel)(c->req, NULL, NULL))                               \
    X(945, "latch_req_set_timeout", O, IA, 0, 0,                               \
      (latch_req_set_timeout)(NULL, 1, 0))                                     \
    X(946, "latch_req_set_timeout", H, IA, 1, IA,                              \
      (latch_req_set_timeout)(c->req, 10, 200))                                \
    X(947, "latch_clear_timeout", O, IA, 0, 0, (latch_clear_timeout)(NULL))    \
    X(948, "latch_join_new", O, 1, 0, 0,                                       \
      (latch_join_new)(NULL, 1, cb_join, NULL) == NULL)                        \
    X(949, "latch_join_new", H, 1, 1, IA,                                      \
      (latch_join_new)(c->res, 0, cb_join, NULL) == NULL)                      \
    X(950, "latch_join_resolve", O, IA, 0, 0,                                  \
      (latch_join_resolve)(NULL, 0, NULL))                                     \
    X(951, "latch_join_fail", O, IA, 0, 0, (latch_join_fail)(NULL, 0, -5))     \
    X(167, "latch_res_post", O, IA, 0, 0, latch_res_post(NULL, cb_res, NULL))  \
    X(168, "latch_res_post", H, IA, 1, IA, latch_res_post(c->res, NULL, NULL)) \
    X(169, "latch_set_timeout_at", O, 1, 0, 0,                                 \
      latch_set_timeout(NULL, 1, cb_res, NULL) == NULL)                        \
    X(170, "latch_set_timeout_at", H, 1, 1, IA,                                \
      latch_set_timeout(c->res, 1, NULL, NULL) == NULL)                        \
    X(171, "latch_clear_timeout_at", O, IA, 0, 0, latch_clear_timeout(NULL))   \
    X(172, "latch_work_at", O, IA, 0, 0,                                       \
      latch_work(NULL, cb_work, cb_after, NULL))                               \
    X(173, "latch_work_at", H, IA, 1, IA,                                      \
      latch_work(c->res, NULL, cb_after, NULL))                                \
    X(174, "latch_work_at", H, IA, 1, IA,                                      \
      latch_work(c->res, cb_work, NULL, NULL))                                 \
    X(920, "latch_work_copy_at", O, IA, 0, 0,                                  \
      latch_work_copy(NULL, cb_work, cb_after, c, 1))                          \
    X(921, "latch_work_copy_at", H, IA, 1, IA,                                 \
      latch_work_copy(c->res, NULL, cb_after, c, 1))                           \
    X(922, "latch_work_copy_at", H, IA, 1, IA,                                 \
      latch_work_copy(c->res, cb_work, NULL, c, 1))                            \
    X(923, "latch_work_copy_at", H, IA, 1, IA,                                 \
      latch_work_copy(c->res, cb_work, cb_after, NULL, 8))                     \
    X(924, "latch_work_copy_at", H, IA, 1, IA,                                 \
      latch_work_copy(c->res, cb_work, cb_after, c, 0))                        \
    X(925, "latch_work_copy_at", H, IA, 1, IA,                                 \
      latch_work_copy(c->res, cb_work, cb_after, c, LATCH_WORK_COPY_MAX + 1))  \
    X(175, "latch_join_new_at", O, 1, 0, 0,                                    \
      latch_join_new(NULL, 1, cb_join, NULL) == NULL)                          \
    X(176, "latch_join_new_at", H, 1, 1, IA,                                   \
      latch_join_new(c->res, 0, cb_join, NULL) == NULL)                        \
    X(177, "latch_join_new_at", H, 1, 1, IA,                                   \
      latch_join_new(c->res, INT_MIN, cb_join, NULL) == NULL)                  \
    X(178, "latch_join_new_at", H, 1, 1, IA,                                   \
      latch_join_new(c->res, 2, NULL, NULL) == NULL)                           \
    X(179, "latch_join_resolve_at", O, IA, 0, 0,                               \
      latch_join_resolve(NULL, 0, NULL))                                       \
    X(180, "latch_join_resolve_at", H, IA, 1, IA, join_bad(c, 0))              \
    X(181, "latch_join_resolve_at", H, IA, 1, IA, join_bad(c, 1))              \
    X(182, "latch_join_fail_at", O, IA, 0, 0, latch_join_fail(NULL, 0, -5))    \
    X(183, "latch_join_fail_at", H, IA, 1, IA, join_bad(c, 2))                 \
    X(184, "latch_join_fail_at", H, IA, 1, IA, join_bad(c, 3))                 \
    X(185, "latch_join_settled", O, 1, 0, 0, latch_join_settled(NULL))         \
    X(186, "latch_res_json_at", H, 0, 0, 0, latch_res_json(c->res, NULL))      \
    X(187, "latch_json_int", H, LATCH_ERR_STATE, 1, LATCH_ERR_STATE,           \
      json_closed(c))                                                          \
    X(188, "latch_sse_start_at", O, IA, 0, 0, latch_sse_start(NULL))           \
    X(189, "latch_sse_send_at", O, IA, 0, 0,                                   \
      latch_sse_send(NULL, NULL, NULL, "x"))                                   \
    X(190, "latch_sse_send_at", H, IC, 1, IC,                                  \
      latch_sse_send(c->res, "a\nb", NULL, "x"))                               \
    X(191, "latch_sse_send_at", H, IC, 1, IC,                                  \
      latch_sse_send(c->res, NULL, NULL, "\xff"))                              \
    X(192, "latch_sse_comment_at", O, IA, 0, 0, latch_sse_comment(NULL, "x"))  \
    X(193, "latch_sse_comment_at", H, IC, 1, IC,                               \
      latch_sse_comment(c->res, "\xc0"))                                       \
    X(194, "latch_sse_retry_at", O, IA, 0, 0, latch_sse_retry(NULL, 1))        \
    X(195, "latch_sse_retry_at", H, IA, 1, IA,                                 \
      latch_sse_retry(c->res, UINT64_MAX))                                     \
    X(196, "latch_app_set_sse_heartbeat", O, IA, 0, 0,                         \
      latch_app_set_sse_heartbeat(NULL, 1))                                    \
    X(197, "latch_app_set_sse_heartbeat", O, IA, 0, 0,                         \
      latch_app_set_sse_heartbeat(c->app, UINT64_MAX))                         \
    X(198, "latch_subscribe_at", O, IA, 0, 0,                                  \
      latch_subscribe(NULL, "a", NULL, NULL))                                  \
    X(199, "latch_subscribe_at", H, IA, 1, IA,                                 \
      latch_subscribe(c->res, NULL, NULL, NULL))                               \
    X(200, "latch_subscribe_at", H, IA, 1, IA,                                 \
      latch_subscribe(c->res, "", NULL, NULL))                                 \
    X(201, "latch_publish_at", O, IA, 0, 0,                                    \
      latch_publish(NULL, "a", NULL, "x", 1))                                  \
    X(202, "latch_app_subscribers", O, IA, 0, 0,                               \
      latch_app_subscribers(NULL, "a"))                                        \
    X(203, "latch_app_subscribers", O, IA, 0, 0,                               \
      latch_app_subscribers(c->app, NULL))                                     \
    X(204, "latch_app_set_channel_history", O, IA, 0, 0,                       \
      latch_app_set_channel_history(c->app, -1))                               \
    X(205, "latch_app_set_slow_consumer", O, IA, 0, 0,                         \
      latch_app_set_slow_consumer(c->app, 0, LATCH_SLOW_DROP))                 \
    X(206, "latch_app_set_slow_consumer", O, IA, 0, 0,                         \
      latch_app_set_slow_consumer(NULL, 1, 7))                                 \
    X(250, "latch_app_counter", O, 0, 0, 0,                                    \
      latch_app_counter(NULL, LATCH_COUNTER_ACCEPTED))                         \
    X(251, "latch_app_counter", O, 0, 0, 0, latch_app_counter(c->app, -1))     \
    X(252, "latch_app_counter", O, 0, 0, 0,                                    \
      latch_app_counter(c->app, LATCH_COUNTER_COUNT))                          \
    X(253, "latch_app_set_limit", O, IA, 0, 0,                                 \
      latch_app_set_limit(c->app, LATCH_LIMIT_CONN_BUFFER, 1))                 \
    X(254, "latch_app_set_limit", O, IA, 0, 0,                                 \
      latch_app_set_limit(c->app, LATCH_TIMEOUT_SEND, 0))                      \
    X(255, "latch_app_set_limit", O, IA, 0, 0,                                 \
      latch_app_set_limit(c->app, LATCH_LIMIT_CONNECTIONS, (1u << 24) + 1))    \
    X(400, "latch_use_metrics", O, IA, 0, 0, latch_use_metrics(NULL, "/m"))    \
    X(401, "latch_use_metrics", O, IA, 0, 0, latch_use_metrics(c->app, NULL))  \
    X(402, "latch_use_metrics", O, IA, 0, 0, latch_use_metrics(c->app, "m"))   \
    X(403, "latch_use_metrics", H, LATCH_ERR_STATE, 0, 0,                      \
      latch_use_metrics(c->app, "/m"))                                         \
    X(404, "latch_app_set_access_log", O, IA, 0, 0,                            \
      latch_app_set_access_log(NULL, 2, LATCH_LOG_COMBINED))                   \
    X(405, "latch_app_set_access_log", O, IA, 0, 0,                            \
      latch_app_set_access_log(c->app, 2, 0))                                  \
    X(406, "latch_app_set_access_log", O, IA, 0, 0,                            \
      latch_app_set_access_log(c->app, 1 << 20, LATCH_LOG_JSON))               \
    X(407, "latch_app_set_access_log", H, LATCH_ERR_STATE, 0, 0,               \
      latch_app_set_access_log(c->app, 2, LATCH_LOG_JSON))                     \
    X(207, "latch_app_set_pubsub", O, IA, 0, 0,                                \
      latch_app_set_pubsub(NULL, NULL))                                        \
    X(208, "latch_app_set_pubsub", O, IA, 0, 0,                                \
      latch_app_set_pubsub(c->app, "http://127.0.0.1:6379"))                   \
    X(209, "latch_app_set_pubsub", O, IA, 0, 0,                                \
      latch_app_set_pubsub(c->app, "redis://127.0.0.1:99999"))                 \
    X(330, "latch_work_cancelled", O, 0, 0, 0, latch_work_cancelled())         \
    X(331, "latch_work_cancelled", H, 0, 0, 0, latch_work_cancelled())         \
    X(332, "latch_work_cancel_fd", O, -1, 0, 0, latch_work_cancel_fd())        \
    X(333, "latch_work_cancel_fd", H, -1, 0, 0, latch_work_cancel_fd())        \
    X(334, "latch_res_jsonf_at", O, IA, 0, 0,                                  \
      latch_res_jsonf(NULL, "{\"a\":%d}", 1))                                  \
    X(335, "latch_res_jsonf_at", H, IA, 1, IA, latch_res_jsonf(c->res, NULL))  \
    X(300, "latch_listen_tls", O, IA, 0, 0,                                    \
      latch_listen_tls(NULL, "127.0.0.1", 0, "c.pem", "k.pem"))                \
    X(301, "latch_listen_tls", O, IA, 0, 0,                                    \
      latch_listen_tls(c->app, "127.0.0.1", 0, NULL, "k.pem"))                 \
    X(302, "latch_listen_tls", O, IA, 0, 0,                                    \
      latch_listen_tls(c->app, "127.0.0.1", 0, "c.pem", NULL))                 \
    X(303, "latch_listen_tls", O, IA, 0, 0,                                    \
      latch_listen_tls(c->app, "127.0.0.1", -1, "c.pem", "k.pem"))             \
    X(304, "latch_listen_tls", O, LATCH_ERR_TLS, 0, 0,                         \
      latch_listen_tls(c->app, "127.0.0.1", 0, "/nonexistent/c.pem",           \
                       "/nonexistent/k.pem"))                                  \
    X(305, "latch_app_listener_port", O, -1, 0, 0,                             \
      latch_app_listener_port(NULL, 0))                                        \
    X(306, "latch_app_listener_port", O, -1, 0, 0,                             \
      latch_app_listener_port(c->app, -1))                                     \
    X(307, "latch_app_listener_port", O, -1, 0, 0,                             \
      latch_app_listener_port(c->app, 8))                                      \
    X(308, "latch_app_reload_tls", O, IA, 0, 0, latch_app_reload_tls(NULL))    \
    X(309, "latch_req_secure", O, 0, 0, 0, (latch_req_secure)(NULL))           \
    X(310, "latch_app_set_limit", O, IA, 0, 0,                                 \
      latch_app_set_limit(c->app, LATCH_TIMEOUT_HANDSHAKE, 0))                 \
    X(311, "latch_app_set_limit", O, IA, 0, 0,                                 \
      latch_app_set_limit(c->app, LATCH_LIMIT_HANDSHAKES, 0))                  \
    X(1401, "latch_violation_format", O, IA, 0, 0,                             \
      latch_violation_format(NULL, NULL, 0))                                   \
    X(1402, "latch_violation_format", O, IA, 0, 0,                             \
      latch_violation_format(&(latch_violation){0}, NULL, 8))                  \
    X(1403, "latch_violation_format", O, 1, 0, 0,                              \
      latch_violation_format(&(latch_violation){0}, NULL, 0) > 0)              \
    X(1404, "latch_res_post_at", O, IA, 0, 0,                                  \
      latch_res_post_at(NULL, cb_res, NULL, SITE_))                            \
    X(1405, "latch_res_post_at", H, IA, 1, IA,                                 \
      latch_res_post_at(c->res, NULL, NULL, SITE_))                            \
    X(1406, "latch_res_post", O, IA, 0, 0,                                     \
      (latch_res_post)(NULL, cb_res, NULL))                                    \
    X(2000, "latch_req_method_at", O, 1, 0, 0,                                 \
      str_is(latch_req_method(NULL), ""))                                      \
    X(2001, "latch_req_path_at", O, 1, 0, 0, str_is(latch_req_path(NULL), "")) \
    X(2002, "latch_req_url_at", O, 1, 0, 0, str_is(latch_req_url(NULL), ""))   \
    X(2003, "latch_req_query_at", O, 1, 0, 0,                                  \
      latch_req_query(NULL, "a") == NULL)                                      \
    X(2004, "latch_req_query_at", H, 1, 1, IA,                                 \
      latch_req_query(c->req, NULL) == NULL)                                   \
    X(2005, "latch_req_query_values_at", H, IA, 1, IA,                         \
      query_values_bad(c, -1, false))                                          \
    X(2006, "latch_req_query_values_at", H, IA, 1, IA,                         \
      query_values_bad(c, 2, true))                                            \
    X(2007, "latch_req_query_values_at", H, IA, 1, IA,                         \
      latch_req_query_values(c->req, NULL, NULL, 0))                           \
    X(2008, "latch_req_param_at", H, 1, 1, IA,                                 \
      latch_req_param(c->req, NULL) == NULL)                                   \
    X(2009, "latch_req_header_get_at", H, 1, 1, IA,                            \
      latch_req_header(c->req, NULL) == NULL)                                  \
    X(2010, "latch_req_header_values_at", H, IA, 1, IA,                        \
      header_values_bad(c, -1, false))                                         \
    X(2011, "latch_req_header_values_at", H, IA, 1, IA,                        \
      header_values_bad(c, 2, true))                                           \
    X(2012, "latch_req_header_values_at", H, IA, 1, IA,                        \
      latch_req_header_values(c->req, NULL, NULL, 0))                          \
    X(2013, "latch_req_header_count_at", O, 0, 0, 0,                           \
      latch_req_header_count(NULL))                                            \
    X(2014, "latch_req_header_nth_at", H, IA, 1, IA, header_at_bad(c, -1))     \
    X(2015, "latch_req_header_nth_at", H, IA, 1, IA,                           \
      header_at_bad(c, INT_MAX))                                               \
    X(2016, "latch_req_header_nth_at", O, IA, 0, 0,                            \
      latch_req_header_at(NULL, 0, NULL, NULL))                                \
    X(2017, "latch_req_cookie_at", H, 1, 1, IA,                                \
      latch_req_cookie(c->req, NULL) == NULL)                                  \
    X(2018, "latch_req_ip_at", O, 1, 0, 0, latch_req_ip(NULL) == NULL)         \
    X(2019, "latch_req_json_at", O, 1, 0, 0, latch_req_json(NULL) == NULL)     \
    X(2020, "latch_req_body_at", O, IA, 0, 0, body_null())                     \
    X(2021, "latch_req_id_at", O, 0, 0, 0, (long)latch_req_id(NULL))           \
    X(2022, "latch_req_aborted_at", O, 0, 0, 0, latch_req_aborted(NULL))       \
    X(2023, "latch_req_cancel_reason_at", O, LATCH_CANCEL_NONE, 0, 0,          \
      latch_req_cancel_reason(NULL))                                           \
    X(2024, "latch_req_version_minor_at", O, 0, 0, 0,                          \
      latch_req_version_minor(NULL))                                           \
    X(2025, "latch_req_res_at", O, 1, 0, 0, latch_req_res(NULL) == NULL)       \
    X(2026, "latch_res_req_at", O, 1, 0, 0, latch_res_req(NULL) == NULL)       \
    X(2027, "latch_res_get_status_at", O, 0, 0, 0, latch_res_get_status(NULL)) \
    X(2028, "latch_res_get_header_at", O, 1, 0, 0,                             \
      latch_res_get_header(NULL, "X") == NULL)                                 \
    X(2029, "latch_res_get_header_at", H, 1, 1, IA,                            \
      latch_res_get_header(c->res, NULL) == NULL)                              \
    X(2030, "latch_json_object_begin_at", O, IA, 0, 0,                         \
      latch_json_object_begin(NULL))                                           \
    X(2031, "latch_json_object_end_at", O, IA, 0, 0,                           \
      latch_json_object_end(NULL))                                             \
    X(2032, "latch_json_array_begin_at", O, IA, 0, 0,                          \
      latch_json_array_begin(NULL))                                            \
    X(2033, "latch_json_array_end_at", O, IA, 0, 0,                            \
      latch_json_array_end(NULL))                                              \
    X(2034, "latch_json_key_at", O, IA, 0, 0, latch_json_key(NULL, "k"))       \
    X(2035, "latch_json_key_at", H, IA, 1, IA, json_bad(c, 1))                 \
    X(2036, "latch_json_string_at", O, IA, 0, 0, latch_json_string(NULL, "s")) \
    X(2037, "latch_json_string_n_at", O, IA, 0, 0,                             \
      latch_json_string_n(NULL, "s", 1))                                       \
    X(2038, "latch_json_string_n_at", H, IA, 1, IA, json_bad(c, 0))            \
    X(2039, "latch_json_int_at", O, IA, 0, 0, latch_json_int(NULL, 1))         \
    X(2040, "latch_json_uint_at", O, IA, 0, 0, latch_json_uint(NULL, 1))       \
    X(2041, "latch_json_double_at", O, IA, 0, 0, latch_json_double(NULL, 1.0)) \
    X(2042, "latch_json_bool_at", O, IA, 0, 0, latch_json_bool(NULL, true))    \
    X(2043, "latch_json_null_at", O, IA, 0, 0, latch_json_null(NULL))          \
    X(2044, "latch_res_headers_sent_at", O, 0, 0, 0,                           \
      latch_res_headers_sent(NULL))                                            \
    X(2045, "latch_res_writable_ended_at", O, 0, 0, 0,                         \
      latch_res_writable_ended(NULL))                                          \
    X(2046, "latch_res_writable_finished_at", O, 0, 0, 0,                      \
      latch_res_writable_finished(NULL))                                       \
    X(2047, "latch_res_destroyed_at", O, 0, 0, 0, latch_res_destroyed(NULL))   \
    X(2048, "latch_json_int_at", H, LATCH_ERR_STATE, 1, LATCH_ERR_STATE,       \
      json_closed(c))                                                          \
    X(2049, "latch_req_secure_at", O, 0, 0, 0, latch_req_secure(NULL))

#define FN_(id, api, where, want, nrep, code, expr)                            \
    static long row_##id(ctx *c)                                               \
    {                                                                          \
        (void)c;                                                               \
        return (long)(expr);                                                   \
    }
ROWS(FN_)
#undef FN_

typedef struct row {
    int id;
    const char *api;
    int where;
    long want;
    int nrep;
    int code;
    long (*fn)(ctx *c);
    const char *expr;
} row;

static const row rows[] = {
#define TAB_(id, api, where, want, nrep, code, expr)                           \
    {id, api, where, want, nrep, code, row_##id, #expr},
    ROWS(TAB_)
#undef TAB_
};
#define NROWS ((int)(sizeof(rows) / sizeof(rows[0])))

/* ---- running the rows ------------------------------------------------ */

static struct {
    long got;
    int nrep;
    int codes[8];
    char files[8][256];
    bool ran;
} result[NROWS];

static int row_handler(latch_req *req, latch_res *res, void *data)
{
    int i = atoi(latch_req_param(req, "i"));
    ctx c = {(latch_app *)data, req, res};
    long got;

    rep_reset();
    got = rows[i].fn(&c);
    pthread_mutex_lock(&rep_mu);
    result[i].got = got;
    result[i].nrep = rep.n;
    memcpy(result[i].codes, rep.codes, sizeof(rep.codes));
    memcpy(result[i].files, rep.files, sizeof(rep.files));
    result[i].ran = true;
    pthread_mutex_unlock(&rep_mu);
    /* The response is still usable after a refused call. */
    if (!latch_res_headers_sent(res))
        latch_res_send(res, "ok", 2);
    return LATCH_DONE;
}

/* Prints what is wrong with a row's outcome; false when anything is. Every
 * row runs, so one run lists every entry point that misbehaves. */
static bool check_row(int i, long got, int nrep, const int *codes,
                      char (*files)[256])
{
    bool ok = true;
    const row *r = &rows[i];
    /* The _at variants take the caller's site (latch_req_header_at is an
     * index, not a site). */
    bool has_site = strlen(r->api) > 3 &&
                    strcmp(r->api + strlen(r->api) - 3, "_at") == 0 &&
                    strcmp(r->api, "latch_req_header_at") != 0;

    if (got != r->want)
        ok = false, print_error("row %d %s: %s returned %ld, want %ld\n", r->id,
                                r->api, r->expr, got, r->want);
    if (nrep != r->nrep)
        ok = false, print_error("row %d %s: %s raised %d report(s), want %d\n",
                                r->id, r->api, r->expr, nrep, r->nrep);
    for (int k = 0; k < nrep && k < 8; k++) {
        if (codes[k] != r->code)
            ok = false,
            print_error("row %d %s: report %s, want %s\n", r->id, r->api,
                        latch_err_name(codes[k]), latch_err_name(r->code));
        if (has_site && strcmp(files[k], test_file) != 0)
            ok = false,
            print_error("row %d %s: report names \"%s\", not this file\n",
                        r->id, r->api, files[k]);
    }
    return ok;
}

static void test_outside_any_request(void **state)
{
    int bad = 0;

    (void)state;
    for (int i = 0; i < NROWS; i++) {
        ctx c = {NULL, NULL, NULL};
        long got;

        if (rows[i].where != O)
            continue;
        c.app = latch_app_new();
        assert_non_null(c.app);
        latch_app_on_violation(c.app, rep_hook, NULL);
        rep_reset();
        got = rows[i].fn(&c);
        bad += !check_row(i, got, rep.n, rep.codes, rep.files);
        latch_app_free(c.app);
    }
    assert_int_equal(bad, 0);
}

static void test_inside_a_handler(void **state)
{
    latch_app *app = latch_app_new();
    th_server server;
    int n = 0, bad = 0;

    (void)state;
    assert_non_null(app);
    latch_app_on_violation(app, rep_hook, NULL);
    assert_int_equal(latch_get(app, "/row/:i", row_handler, app), 0);
    th_server_start(&server, app);
    for (int i = 0; i < NROWS; i++) {
        char req[128], *out;
        size_t len;
        th_resp *r;
        int k;

        if (rows[i].where != H)
            continue;
        k = snprintf(req, sizeof(req),
                     "GET /row/%d?a=1 HTTP/1.1\r\nHost: x\r\n\r\n", i);
        out = th_exchange(server.port, req, (size_t)k, 1, &len);
        /* Exactly one well-formed response, whatever the row did. */
        r = th_expect_responses(out, len, 1, NULL);
        pthread_mutex_lock(&rep_mu);
        assert_true(result[i].ran);
        bad += !check_row(i, result[i].got, result[i].nrep, result[i].codes,
                          result[i].files);
        pthread_mutex_unlock(&rep_mu);
        th_resp_free(r, 1);
        free(r);
        free(out);
        n++;
    }
    assert_true(n > 40);
    th_server_stop(&server);
    assert_int_equal(bad, 0);
}

/* ---- a timeout at the top of the range ------------------------------ */

static void fired(latch_res *res, void *data)
{
    latch_res_send(res, data, strlen(data));
}

static int huge_timer_handler(latch_req *req, latch_res *res, void *data)
{
    (void)req;
    (void)data;
    latch_set_timeout(res, UINT64_MAX, fired, "early");
    latch_set_timeout(res, 30, fired, "in time");
    return LATCH_DONE;
}

/* UINT64_MAX ms is "never", also when LATCH_SHAKE adds its delay (it used
 * to wrap around to a few ms). */
static void test_huge_timeout_never_fires(void **state)
{
    latch_app *app;
    th_server server;

    (void)state;
    assert_int_equal(setenv("LATCH_SHAKE", "12345", 1), 0);
    app = latch_app_new();
    unsetenv("LATCH_SHAKE");
    assert_non_null(app);
    assert_int_equal(latch_get(app, "/t", huge_timer_handler, NULL), 0);
    th_server_start(&server, app);
    for (int i = 0; i < 8; i++) {
        static const char req[] = "GET /t HTTP/1.1\r\nHost: x\r\n\r\n";
        size_t len;
        char *out = th_exchange(server.port, req, sizeof(req) - 1, 1, &len);
        th_resp *r = th_expect_responses(out, len, 1, NULL);
        assert_string_equal(r[0].body, "in time");
        th_resp_free(r, 1);
        free(r);
        free(out);
    }
    th_server_stop(&server);
}

/* Every LATCH_API function of the header has at least one row. */
static void test_every_entry_point_has_a_row(void **state)
{
    char path[1024], *text, missing[4096] = "";
    FILE *f;
    long size;
    int found = 0;

    (void)state;
    snprintf(path, sizeof(path), "%s/include/latch.h", LATCH_SOURCE_DIR);
    f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    size = ftell(f);
    rewind(f);
    text = malloc((size_t)size + 1);
    assert_non_null(text);
    assert_int_equal(fread(text, 1, (size_t)size, f), (size_t)size);
    text[size] = '\0';
    fclose(f);
    for (char *p = strstr(text, "LATCH_API "); p != NULL;
         p = strstr(p + 1, "LATCH_API ")) {
        /* The name is the identifier right before the first '('. */
        char *paren = strchr(p, '('), *e, *s, name[128];
        bool has = false;
        if (paren == NULL)
            break;
        e = paren;
        while (e > p && isspace((unsigned char)e[-1]))
            e--;
        s = e;
        while (s > p && (isalnum((unsigned char)s[-1]) || s[-1] == '_'))
            s--;
        if (e - s <= 0 || (size_t)(e - s) >= sizeof(name))
            continue;
        memcpy(name, s, (size_t)(e - s));
        name[e - s] = '\0';
        if (strncmp(name, "latch_", 6) != 0)
            continue; /* the #define of LATCH_API itself */
        found++;
        for (int i = 0; i < NROWS && !has; i++)
            has = strcmp(rows[i].api, name) == 0;
        if (!has && strlen(missing) + strlen(name) + 3 < sizeof(missing)) {
            strcat(missing, " ");
            strcat(missing, name);
        }
    }
    free(text);
    assert_true(found > 100);
    if (missing[0] != '\0')
        fail_msg("entry points of latch.h without a row:%s", missing);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_entry_point_has_a_row),
        cmocka_unit_test(test_outside_any_request),
        cmocka_unit_test(test_inside_a_handler),
        cmocka_unit_test(test_huge_timeout_never_fires),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
