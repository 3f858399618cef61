/*
 * test_app.c - the chain's final handler: 404 and 405 pages, error pages
 * with Express's security headers in HTML or JSON by Accept, details only
 * in development mode, and what happens when the headers already went out.
 */
#include "harness.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

static int fail_418(latch_req *req, latch_res *res, void *data)
{
    (void)res;
    (void)data;
    latch_res_set_header(res, "X-Leak", "secret");
    return latch_fail(req, 418, "teapot <here>");
}

static int partial_then_fail(latch_req *req, latch_res *res, void *data)
{
    (void)data;
    latch_res_write(res, "partial", 7);
    return latch_fail(req, 500, "too late");
}

static int done_then_fail(latch_req *req, latch_res *res, void *data)
{
    (void)data;
    latch_res_send(res, "done", 4);
    return latch_fail(req, 500, "after done");
}

static int users(latch_req *req, latch_res *res, void *data)
{
    (void)data;
    latch_res_send(res, latch_req_param(req, "id"),
                   strlen(latch_req_param(req, "id")));
    return LATCH_DONE;
}

/* Order test: each layer appends its tag to a trace; the last answers it. */
static int tag(latch_req *req, latch_res *res, void *data)
{
    (void)req;
    /* The trace lives in the response's headers as they are built. */
    const char *t = latch_res_get_header(res, "X-Trace");
    char buf[512];
    snprintf(buf, sizeof(buf), "%s%s%s", t ? t : "", t ? "," : "",
             (const char *)data);
    latch_res_set_header(res, "X-Trace", buf);
    return LATCH_NEXT;
}

static int answer_trace(latch_req *req, latch_res *res, void *data)
{
    char buf[600];
    const char *t = latch_res_get_header(res, "X-Trace");
    const char *id = latch_req_param(req, "id");
    const char *rest = latch_req_param(req, "*");

    (void)data;
    snprintf(buf, sizeof(buf), "%s|id=%s|rest=%s", t ? t : "", id ? id : "-",
             rest ? rest : "-");
    latch_res_remove_header(res, "X-Trace");
    latch_res_send(res, buf, strlen(buf));
    return LATCH_DONE;
}

static int json_doc(latch_req *req, latch_res *res, void *data)
{
    latch_json *j = latch_res_json_begin(res);

    (void)req;
    (void)data;
    latch_json_object_begin(j);
    latch_json_key(j, "a");
    latch_json_array_begin(j);
    latch_json_int(j, -1);
    latch_json_double(j, 0.1);
    latch_json_string(j, "x\n\"y\"");
    latch_json_array_end(j);
    latch_json_key(j, "b");
    latch_json_null(j);
    latch_json_key(j, "c");
    latch_json_bool(j, true);
    latch_json_object_end(j);
    return latch_res_json_end(res) == 0 ? LATCH_DONE
                                        : latch_fail(req, 500, "json");
}

static int json_rc;

/* Invalid UTF-8 in a value: the document is never sent; a 500 is. */
static int json_bad(latch_req *req, latch_res *res, void *data)
{
    latch_json *j = latch_res_json_begin(res);

    (void)req;
    (void)data;
    latch_json_array_begin(j);
    latch_json_string(j, "ok");
    latch_json_string(j, "\xc3\x28");
    latch_json_array_end(j);
    json_rc = latch_res_json_end(res);
    return LATCH_DONE;
}

/* Echoes cookie "sid", the client IP and a typed body. */
static int who(latch_req *req, latch_res *res, void *data)
{
    char buf[256];
    const char *sid = latch_req_cookie(req, "sid");
    const char *ip = latch_req_ip(req);

    (void)data;
    snprintf(buf, sizeof(buf), "sid=%s ip=%s", sid ? sid : "-", ip ? ip : "-");
    latch_res_type(res, "txt"); /* checked through the header on the wire */
    latch_res_send(res, buf, strlen(buf));
    return LATCH_DONE;
}

/* The return codes go into the body: assertions belong to the test
 * thread, not to the server's. */
static int typed(latch_req *req, latch_res *res, void *data)
{
    int bad = latch_res_type(res, "no-such-type");
    int ok = latch_res_type(res, "text/csv");

    (void)req;
    (void)data;
    if (bad == LATCH_ERR_INVALID_ARG && ok == 0)
        latch_res_send(res, "a,b", 3);
    else
        latch_res_send(res, "rc mismatch", 11);
    return LATCH_DONE;
}

/* Answers the "name" member of the parsed body, or "none". */
static int api_name(latch_req *req, latch_res *res, void *data)
{
    json_t *body = latch_req_json(req);
    const char *name = json_string_value(json_object_get(body, "name"));

    (void)data;
    if (name == NULL)
        name = "none";
    latch_res_send(res, name, strlen(name));
    return LATCH_DONE;
}

static int go_there(latch_req *req, latch_res *res, void *data)
{
    (void)data;
    latch_res_redirect(res, 0, latch_req_query(req, "to"));
    return LATCH_DONE;
}

/* Answers the length of the body it received. */
static int body_len(latch_req *req, latch_res *res, void *data)
{
    const void *body;
    size_t len;
    char out[32];
    int n;

    (void)data;
    latch_req_body(req, &body, &len);
    n = snprintf(out, sizeof(out), "%zu", len);
    latch_res_send(res, out, (size_t)n);
    return LATCH_DONE;
}

static th_server srv;
static th_violations viol;
static bool dev_mode;
static char names[1000][32];

static int setup(void **state)
{
    latch_app *app = latch_app_new();

    (void)state;
    latch_app_set_development(app, dev_mode);
    memset(&viol, 0, sizeof(viol));
    th_record_violations(app, &viol);
    latch_get(app, "/teapot", fail_418, NULL);
    latch_get(app, "/partial", partial_then_fail, NULL);
    latch_get(app, "/done", done_then_fail, NULL);
    latch_get(app, "/users/:id", users, NULL);
    latch_put(app, "/users/:id", users, NULL);
    /* Methods that contain others: Allow must still list each. */
    latch_route(app, "GETALL", "/tokens", users, NULL);
    latch_route(app, "HEADLINE", "/tokens", users, NULL);
    latch_get(app, "/tokens", users, NULL);
    latch_get(app, "/doc", json_doc, NULL);
    latch_get(app, "/who", who, NULL);
    latch_get(app, "/go", go_there, NULL);
    latch_use(app, "/api", latch_json_body, NULL);
    latch_post(app, "/api/name", api_name, NULL);
    latch_get(app, "/typed", typed, NULL);
    if (dev_mode)
        latch_app_set_trust_proxy(app, 2);
    latch_get(app, "/bad", json_bad, NULL);
    /* Body limits: the app's 1000 bytes, more for uploads, less for a
     * small API, none for a ping; the first matching rule wins. */
    assert_int_equal(latch_app_set_limit(app, LATCH_LIMIT_BODY, 1000), 0);
    assert_int_equal(latch_route_body_limit(app, "POST", "/upload/*", 100000),
                     0);
    assert_int_equal(latch_route_body_limit(app, NULL, "/small/:x", 8), 0);
    assert_int_equal(latch_route_body_limit(app, NULL, "/small/*", 50), 0);
    assert_int_equal(latch_route_body_limit(app, "POST", "/ping", 0), 0);
    assert_int_equal(latch_route_body_limit(app, "GET", "bad", 1),
                     LATCH_ERR_INVALID_ARG);
    latch_post(app, "/upload/:name", body_len, NULL);
    latch_post(app, "/small/*", body_len, NULL);
    latch_post(app, "/ping", body_len, NULL);
    latch_post(app, "/plain", body_len, NULL);
    /* Registration order across params, middleware, literals and a
     * wildcard, among a thousand unrelated routes. */
    for (int i = 0; i < 1000; i++) {
        snprintf(names[i], sizeof(names[i]), "/filler/r%d/:id", i);
        latch_get(app, names[i], users, NULL);
    }
    latch_get(app, "/o/:id", tag, "param");
    latch_use(app, "/o", tag, "mw");
    latch_get(app, "/o/me", tag, "literal");
    latch_get(app, "/o/*", tag, "star");
    latch_get(app, "/o/me", answer_trace, NULL);
    /* More than the 16 matches a request remembers: layer by layer. */
    for (int i = 0; i < 20; i++)
        latch_get(app, "/many/*", tag, "m");
    latch_get(app, "/many/:id", answer_trace, NULL);
    th_server_start(&srv, app);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    assert_int_equal(th_server_stop(&srv), 0);
    return 0;
}

static char *get(const char *req, size_t *len)
{
    return th_exchange(srv.port, req, strlen(req), 1, len);
}

static const char page_404[] =
    "HTTP/1.1 404 Not Found\r\n"
    "Content-Security-Policy: default-src 'none'\r\n"
    "X-Content-Type-Options: nosniff\r\n"
    "Content-Type: text/html; charset=utf-8\r\n"
    "Content-Length: 143\r\n"
    "Date: <d>\r\n"
    "Connection: keep-alive\r\n"
    "Keep-Alive: timeout=5\r\n"
    "\r\n"
    "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
    "<title>Error</title>\n</head>\n<body>\n<pre>Cannot GET /nope</pre>\n"
    "</body>\n</html>\n";

static void test_404_html(void **state)
{
    size_t len;
    char *out = get("GET /nope?x=1 HTTP/1.1\r\nHost: x\r\n\r\n", &len);
    char *norm = th_normalize(out, len);

    (void)state;
    assert_string_equal(norm, page_404);
    free(norm);
    free(out);
}

static void test_404_json_by_accept(void **state)
{
    size_t len;
    char *out = get("GET /nope HTTP/1.1\r\nHost: x\r\n"
                    "Accept: text/html;q=0.5, application/json\r\n\r\n",
                    &len);
    th_resp *r = th_expect_responses(out, len, 1, NULL);

    (void)state;
    assert_int_equal(r[0].status, 404);
    assert_non_null(strstr(r[0].head, "Content-Type: application/json"));
    assert_string_equal(
        r[0].body,
        "{\"error\":{\"status\":404,\"message\":\"Cannot GET /nope\"}}\n");
    th_resp_free(r, 1);
    free(r);
    free(out);
}

static void test_405_allow(void **state)
{
    size_t len;
    char *out = get("DELETE /users/7 HTTP/1.1\r\nHost: x\r\n\r\n", &len);
    th_resp *r = th_expect_responses(out, len, 1, NULL);

    (void)state;
    assert_int_equal(r[0].status, 405);
    assert_non_null(strstr(r[0].head, "\r\nAllow: GET, HEAD, PUT\r\n"));
    assert_non_null(strstr(r[0].body, "<pre>Cannot DELETE /users/7</pre>"));
    th_resp_free(r, 1);
    free(r);
    free(out);
}

/* Allow lists methods as tokens: GETALL registered first must not hide
 * GET, nor HEADLINE the HEAD that GET implies. */
static void test_405_allow_tokens(void **state)
{
    size_t len;
    char *out = get("DELETE /tokens HTTP/1.1\r\nHost: x\r\n\r\n", &len);
    th_resp *r = th_expect_responses(out, len, 1, NULL);

    (void)state;
    assert_int_equal(r[0].status, 405);
    assert_non_null(
        strstr(r[0].head, "\r\nAllow: GETALL, HEADLINE, GET, HEAD\r\n"));
    th_resp_free(r, 1);
    free(r);
    free(out);
}

static void test_error_page_production(void **state)
{
    size_t len;
    char *out = get("GET /teapot HTTP/1.1\r\nHost: x\r\n\r\n", &len);
    th_resp *r = th_expect_responses(out, len, 1, NULL);

    (void)state;
    assert_int_equal(r[0].status, 418);
    /* No detail, no header the handler set. */
    assert_non_null(strstr(r[0].body, "<pre>I&#39;m a Teapot</pre>"));
    assert_null(strstr(r[0].body, "teapot &lt;here&gt;"));
    assert_null(strstr(r[0].head, "X-Leak"));
    assert_non_null(strstr(r[0].head, "X-Content-Type-Options: nosniff"));
    th_resp_free(r, 1);
    free(r);
    free(out);
}

static void test_error_page_development(void **state)
{
    size_t len;
    char *out = get("GET /teapot HTTP/1.1\r\nHost: x\r\n\r\n", &len);
    th_resp *r = th_expect_responses(out, len, 1, NULL);

    (void)state;
    assert_int_equal(r[0].status, 418);
    /* The message, escaped, and where it was raised. */
    assert_non_null(strstr(r[0].body, "teapot &lt;here&gt;<br>"));
    assert_non_null(strstr(r[0].body, "test_app.c:"));
    th_resp_free(r, 1);
    free(r);
    free(out);
}

static void test_head_error_has_no_body(void **state)
{
    static const char *head[] = {"HEAD"};
    size_t len;
    char *out = get("HEAD /nope HTTP/1.1\r\nHost: x\r\n\r\n", &len);
    th_resp *r = th_expect_responses(out, len, 1, head);

    (void)state;
    assert_int_equal(r[0].status, 404);
    assert_int_equal(r[0].body_len, 0);
    /* "Cannot HEAD /nope": one byte longer than the GET page. */
    assert_non_null(strstr(r[0].head, "Content-Length: 144"));
    th_resp_free(r, 1);
    free(r);
    free(out);
}

/* An error after a partial body: the connection is cut, no last chunk. */
static void test_error_after_partial_cuts(void **state)
{
    int fd = th_connect(srv.port);
    size_t len;
    char *out;

    (void)state;
    th_send_str(fd, "GET /partial HTTP/1.1\r\nHost: x\r\n\r\n");
    out = th_read(fd, &len, 5000, NULL, NULL);
    assert_true(th_last_end() == TH_EOF || th_last_end() == TH_RESET);
    assert_non_null(strstr(out, "7\r\npartial\r\n"));
    assert_null(strstr(out, "0\r\n\r\n"));
    free(out);
    close(fd);
}

/* An error after a complete response: latch keeps the connection (Express
 * destroys it), and the next request is served. */
static void test_error_after_done_keeps_connection(void **state)
{
    int fd = th_connect(srv.port), one = 1;
    size_t len;
    char *out;
    th_resp *r;

    (void)state;
    th_send_str(fd, "GET /done HTTP/1.1\r\nHost: x\r\n\r\n");
    out = th_read(fd, &len, 5000, th_until_responses, &one);
    r = th_expect_responses(out, len, 1, NULL);
    assert_string_equal(r[0].body, "done");
    th_resp_free(r, 1);
    free(r);
    free(out);
    th_send_str(fd, "GET /users/42 HTTP/1.1\r\nHost: x\r\n\r\n");
    out = th_read(fd, &len, 5000, th_until_responses, &one);
    r = th_expect_responses(out, len, 1, NULL);
    assert_string_equal(r[0].body, "42");
    assert_int_equal(th_last_end(), TH_OPEN);
    th_resp_free(r, 1);
    free(r);
    free(out);
    close(fd);
    /* Responding and then failing is the catch block that does both:
     * reported, sealed where the response was sent. */
    assert_int_equal(th_violation_count(&viol), 1);
    assert_int_equal(viol.codes[0], LATCH_ERR_NEXT_AFTER_RESPONSE);
    assert_string_equal(viol.sealed_call[0], "latch_res_send");
}

static void expect_body(const char *path, const char *body)
{
    char req[256];
    size_t len;
    char *out;
    th_resp *r;

    snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", path);
    out = get(req, &len);
    r = th_expect_responses(out, len, 1, NULL);
    assert_int_equal(r[0].status, 200);
    assert_string_equal(r[0].body, body);
    th_resp_free(r, 1);
    free(r);
    free(out);
}

static void test_layers_in_registration_order(void **state)
{
    (void)state;
    /* Parameters belong to each route: the answering one has none. */
    expect_body("/o/me", "param,mw,literal,star|id=-|rest=-");
    expect_body("/filler/r999/q", "q");
    expect_body("/many/7",
                "m,m,m,m,m,m,m,m,m,m,m,m,m,m,m,m,m,m,m,m|id=7|rest=-");
}

static void test_json_writer_body(void **state)
{
    size_t len;
    char *out = get("GET /doc HTTP/1.1\r\nHost: x\r\n\r\n", &len);
    th_resp *r = th_expect_responses(out, len, 1, NULL);

    (void)state;
    assert_int_equal(r[0].status, 200);
    assert_non_null(
        strstr(r[0].head, "Content-Type: application/json; charset=utf-8"));
    assert_string_equal(
        r[0].body, "{\"a\":[-1,0.1,\"x\\n\\\"y\\\"\"],\"b\":null,\"c\":true}");
    th_resp_free(r, 1);
    free(r);
    free(out);
}

static void test_json_writer_invalid_utf8(void **state)
{
    size_t len;
    char *out = get("GET /bad HTTP/1.1\r\nHost: x\r\n\r\n", &len);
    th_resp *r = th_expect_responses(out, len, 1, NULL);

    (void)state;
    assert_int_equal(json_rc, LATCH_ERR_INVALID_CHAR);
    assert_int_equal(r[0].status, 500);
    assert_null(strstr(r[0].body, "ok"));
    th_resp_free(r, 1);
    free(r);
    free(out);
}

static void expect_req(const char *req, const char *body, const char *inhead)
{
    size_t len;
    char *out = get(req, &len);
    th_resp *r = th_expect_responses(out, len, 1, NULL);

    assert_int_equal(r[0].status, 200);
    assert_string_equal(r[0].body, body);
    if (inhead != NULL)
        assert_non_null(strstr(r[0].head, inhead));
    th_resp_free(r, 1);
    free(r);
    free(out);
}

static void test_cookies_ip_type(void **state)
{
    (void)state;
    expect_req("GET /who HTTP/1.1\r\nHost: x\r\n"
               "Cookie: a=1; sid=\"ab%20c\" ; z\r\n\r\n",
               "sid=ab c ip=127.0.0.1",
               "Content-Type: text/plain; charset=utf-8");
    /* No trusted proxy: X-Forwarded-For is ignored. */
    expect_req("GET /who HTTP/1.1\r\nHost: x\r\n"
               "X-Forwarded-For: 10.0.0.1\r\n\r\n",
               "sid=- ip=127.0.0.1", NULL);
    expect_req("GET /typed HTTP/1.1\r\nHost: x\r\n\r\n", "a,b",
               "Content-Type: text/csv; charset=utf-8");
}

/* Two trusted hops: the address two back from the peer. */
static void test_trusted_proxy_ip(void **state)
{
    (void)state;
    expect_req("GET /who HTTP/1.1\r\nHost: x\r\n"
               "X-Forwarded-For: 203.0.113.9, 198.51.100.2, 10.0.0.1\r\n"
               "Cookie: sid=7\r\n\r\n",
               "sid=7 ip=198.51.100.2", NULL);
    /* A shorter list than the hops: the first address. */
    expect_req("GET /who HTTP/1.1\r\nHost: x\r\n"
               "X-Forwarded-For: 203.0.113.9\r\n\r\n",
               "sid=- ip=203.0.113.9", NULL);
}

static char *post(const char *path, const char *ctype, const char *body,
                  size_t *len)
{
    char req[1024];

    snprintf(req, sizeof(req),
             "POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: %s\r\n"
             "Content-Length: %zu\r\n\r\n%s",
             path, ctype, strlen(body), body);
    return get(req, len);
}

static void test_json_request_body(void **state)
{
    size_t len;
    char *out = post("/api/name", "application/json; charset=utf-8",
                     "{\"name\":\"ada\"}", &len);
    th_resp *r = th_expect_responses(out, len, 1, NULL);

    (void)state;
    assert_int_equal(r[0].status, 200);
    assert_string_equal(r[0].body, "ada");
    th_resp_free(r, 1);
    free(r);
    free(out);
    /* Not JSON by its type: not parsed. */
    out = post("/api/name", "text/plain", "{\"name\":\"ada\"}", &len);
    r = th_expect_responses(out, len, 1, NULL);
    assert_string_equal(r[0].body, "none");
    th_resp_free(r, 1);
    free(r);
    free(out);
    /* Malformed: a 400 through the error chain, no detail in production. */
    out = post("/api/name", "application/json", "{\"name\":", &len);
    r = th_expect_responses(out, len, 1, NULL);
    assert_int_equal(r[0].status, 400);
    assert_non_null(strstr(r[0].body, "<pre>Bad Request</pre>"));
    th_resp_free(r, 1);
    free(r);
    free(out);
}

/* In development mode the 400 says what jansson found, and where. */
static void test_json_request_body_error_detail(void **state)
{
    size_t len;
    char *out = post("/api/name", "application/vnd.x+json",
                     "{\"a\":1,\n \"a\":2}", &len);
    th_resp *r = th_expect_responses(out, len, 1, NULL);

    (void)state;
    assert_int_equal(r[0].status, 400);
    assert_non_null(strstr(r[0].body, "Invalid JSON at line 2, column"));
    assert_non_null(strstr(r[0].body, "duplicate"));
    th_resp_free(r, 1);
    free(r);
    free(out);
}

static void test_redirect_like_express(void **state)
{
    size_t len;
    char *out, *norm;
    th_resp *r;

    (void)state;
    out = get("GET /go?to=/there HTTP/1.1\r\nHost: x\r\n"
              "Accept: text/plain\r\n\r\n",
              &len);
    norm = th_normalize(out, len);
    assert_string_equal(norm, "HTTP/1.1 302 Found\r\n"
                              "Location: /there\r\n"
                              "Vary: Accept\r\n"
                              "Content-Type: text/plain; charset=utf-8\r\n"
                              "Content-Length: 28\r\n"
                              "Date: <d>\r\n"
                              "Connection: keep-alive\r\n"
                              "Keep-Alive: timeout=5\r\n\r\n"
                              "Found. Redirecting to /there");
    free(norm);
    free(out);
    /* HTML by Accept, and the Location encoded ("%20" from '+'). */
    out = get("GET /go?to=/a+b%3Cc HTTP/1.1\r\nHost: x\r\n"
              "Accept: text/html\r\n\r\n",
              &len);
    r = th_expect_responses(out, len, 1, NULL);
    assert_non_null(strstr(r[0].head, "Location: /a%20b%3Cc\r\n"));
    assert_string_equal(r[0].body,
                        "<!DOCTYPE html><head><title>Found</title></head>"
                        "<body><p>Found. Redirecting to /a%20b%3Cc</p></body>");
    th_resp_free(r, 1);
    free(r);
    free(out);
    /* A long Location whose HTML escape is five times as long. */
    {
        char req[8192], want[12000];
        size_t k = 0, w = 0;

        k += (size_t)snprintf(req, sizeof(req), "GET /go?to=/");
        w += (size_t)snprintf(want, sizeof(want),
                              "<!DOCTYPE html><head><title>Found</title>"
                              "</head><body><p>Found. Redirecting to /");
        for (int i = 0; i < 1000; i++) {
            memcpy(req + k, "%26%27", 6);
            k += 6;
            memcpy(want + w, "&amp;&#39;", 10);
            w += 10;
        }
        snprintf(req + k, sizeof(req) - k,
                 " HTTP/1.1\r\nHost: x\r\nAccept: text/html\r\n\r\n");
        snprintf(want + w, sizeof(want) - w, "</p></body>");
        out = get(req, &len);
        r = th_expect_responses(out, len, 1, NULL);
        assert_int_equal(r[0].status, 302);
        assert_string_equal(r[0].body, want);
        th_resp_free(r, 1);
        free(r);
        free(out);
    }
    /* Anything else: an empty body. */
    out = get("GET /go?to=/x HTTP/1.1\r\nHost: x\r\n"
              "Accept: application/json\r\n\r\n",
              &len);
    r = th_expect_responses(out, len, 1, NULL);
    assert_int_equal(r[0].status, 302);
    assert_int_equal(r[0].body_len, 0);
    assert_non_null(strstr(r[0].head, "Content-Length: 0\r\n"));
    th_resp_free(r, 1);
    free(r);
    free(out);
}

/* A POST of `n` bytes of body (Content-Length, or chunked in 3 chunks). */
/* nresp 0: read until the server closes. */
static char *post_n(const char *path, size_t n, bool chunked, int nresp,
                    size_t *len)
{
    size_t cap = n + 512, off;
    char *req = malloc(cap), *out;
    size_t third = n / 3;

    assert_non_null(req);
    if (!chunked) {
        off = (size_t)snprintf(req, cap,
                               "POST %s HTTP/1.1\r\nHost: x\r\n"
                               "Content-Length: %zu\r\n\r\n",
                               path, n);
        memset(req + off, 'b', n);
        off += n;
    } else {
        size_t parts[3] = {third, third, n - 2 * third};
        off = (size_t)snprintf(req, cap,
                               "POST %s HTTP/1.1\r\nHost: x\r\n"
                               "Transfer-Encoding: chunked\r\n\r\n",
                               path);
        for (int i = 0; i < 3; i++) {
            if (parts[i] == 0)
                continue;
            off += (size_t)snprintf(req + off, cap - off, "%zx\r\n", parts[i]);
            memset(req + off, 'c', parts[i]);
            off += parts[i];
            memcpy(req + off, "\r\n", 2);
            off += 2;
        }
        memcpy(req + off, "0\r\n\r\n", 5);
        off += 5;
    }
    out = th_exchange(srv.port, req, off, nresp, len);
    free(req);
    return out;
}

static void expect_len(const char *path, size_t n, bool chunked)
{
    size_t len;
    char want[32];
    char *out = post_n(path, n, chunked, 1, &len);
    th_resp *r = th_expect_responses(out, len, 1, NULL);

    snprintf(want, sizeof(want), "%zu", n);
    assert_int_equal(r[0].status, 200);
    assert_string_equal(r[0].body, want);
    th_resp_free(r, 1);
    free(r);
    free(out);
}

static void expect_413(const char *path, size_t n, bool chunked)
{
    size_t len;
    char *out = post_n(path, n, chunked, 0, &len);
    th_resp *r = th_expect_responses(out, len, 1, NULL);

    assert_int_equal(r[0].status, 413);
    assert_non_null(strstr(r[0].head, "Connection: close\r\n"));
    assert_int_equal(th_last_end(), TH_EOF);
    th_resp_free(r, 1);
    free(r);
    free(out);
}

static void test_route_body_limits(void **state)
{
    (void)state;
    /* The app's limit where no rule matches. */
    expect_len("/plain", 1000, false);
    expect_413("/plain", 1001, false);
    expect_413("/plain", 1001, true);
    /* An upload route allows more, Content-Length or chunked. */
    expect_len("/upload/a", 60000, false);
    expect_len("/upload/a", 60000, true);
    expect_413("/upload/a", 100001, false);
    expect_413("/upload/a", 100001, true);
    /* The first matching rule: /small/:x (8) before /small/ * (50). */
    expect_len("/small/x", 8, false);
    expect_413("/small/x", 9, false);
    expect_413("/small/x", 9, true);
    expect_len("/small/x/y", 50, false);
    expect_413("/small/x/y", 51, true);
    /* No body at all. */
    expect_len("/ping", 0, false);
    expect_413("/ping", 1, false);
}

static int setup_dev(void **state)
{
    dev_mode = true;
    return setup(state);
}

static int setup_prod(void **state)
{
    dev_mode = false;
    return setup(state);
}

int main(void)
{
    const struct CMUnitTest prod[] = {
        cmocka_unit_test(test_404_html),
        cmocka_unit_test(test_404_json_by_accept),
        cmocka_unit_test(test_405_allow),
        cmocka_unit_test(test_405_allow_tokens),
        cmocka_unit_test(test_error_page_production),
        cmocka_unit_test(test_head_error_has_no_body),
        cmocka_unit_test(test_error_after_partial_cuts),
        cmocka_unit_test(test_error_after_done_keeps_connection),
        cmocka_unit_test(test_layers_in_registration_order),
        cmocka_unit_test(test_json_writer_body),
        cmocka_unit_test(test_json_writer_invalid_utf8),
        cmocka_unit_test(test_cookies_ip_type),
        cmocka_unit_test(test_json_request_body),
        cmocka_unit_test(test_redirect_like_express),
        cmocka_unit_test(test_route_body_limits),
    };
    const struct CMUnitTest dev[] = {
        cmocka_unit_test(test_error_page_development),
        cmocka_unit_test(test_trusted_proxy_ip),
        cmocka_unit_test(test_json_request_body_error_detail),
    };
    int r = cmocka_run_group_tests(prod, setup_prod, teardown);

    return r | cmocka_run_group_tests(dev, setup_dev, teardown);
}
