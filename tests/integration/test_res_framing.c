/*
 * test_res_framing.c - latch owns the framing of a response: whatever
 * headers and status a handler gives, what goes on the wire can be
 * delimited by the client, and the keep-alive connection goes on serving
 * the next request exactly.
 *
 * Each case is a handler that tries to break the framing through one of
 * the ways a header or a status reaches the wire (set_header,
 * append_header, latch_res_type, latch_res_status, write_head,
 * send_status): a Transfer-Encoding other than chunked, Content-Length
 * with chunked (either order), two Content-Lengths, a Content-Length that
 * is not a number or that no client can hold (past 2^63 - 1), a 1xx
 * status as the final answer. The call is refused
 * and reported (or normalized), and the answer that follows is checked
 * byte for byte, then /ok on the same connection.
 *
 * Then the Express senders on 204, 205 and 304 (RFC 9110 §15.3.5,
 * §15.3.6, §15.4.5; Express's res.send): no body, no Content-Type, no
 * Content-Length, except 205's "Content-Length: 0"; and an HTTP/1.0
 * client, which cannot read chunked or keep a close-delimited body's
 * connection.
 */
static const char test_file[] = __FILE__;
#include "res_probe.h"

typedef struct fcase {
    const char *path;
    const char *want; /* the normalized response */
    int codes[3];     /* the reports, in order (0: none further) */
    const char *calls[3];
} fcase;

#define IA LATCH_ERR_INVALID_ARG
#define IS LATCH_ERR_HTTP_INVALID_STATUS_CODE

static int framing_handler(latch_req *req, latch_res *res, const void *arg)
{
    const char *p = latch_req_path(req);

    (void)arg;
    if (strcmp(p, "/te-gzip") == 0) {
        latch_res_set_header(res, "Transfer-Encoding", "gzip");
        latch_res_end(res, "hello", 5);
    } else if (strcmp(p, "/te-gzip-chunked") == 0) {
        latch_res_append_header(res, "Transfer-Encoding", "gzip, chunked");
        latch_res_end(res, "hello", 5);
    } else if (strcmp(p, "/te-twice") == 0) {
        latch_res_set_header(res, "Transfer-Encoding", "chunked");
        latch_res_append_header(res, "Transfer-Encoding", "chunked");
        latch_res_write(res, "hello", 5);
        latch_res_end(res, NULL, 0);
    } else if (strcmp(p, "/cl-then-te") == 0) {
        latch_res_set_header(res, "Content-Length", "5");
        latch_res_set_header(res, "Transfer-Encoding", "chunked");
        latch_res_end(res, "hello", 5);
    } else if (strcmp(p, "/te-then-cl") == 0) {
        latch_res_set_header(res, "Transfer-Encoding", "chunked");
        latch_res_append_header(res, "Content-Length", "5");
        latch_res_write(res, "hello", 5);
        latch_res_end(res, NULL, 0);
    } else if (strcmp(p, "/cl-twice") == 0) {
        latch_res_set_header(res, "Content-Length", "5");
        latch_res_append_header(res, "content-length", "7");
        latch_res_end(res, "hello", 5);
    } else if (strcmp(p, "/cl-not-digits") == 0) {
        latch_res_set_header(res, "Content-Length", "-1");
        latch_res_set_header(res, "Content-Length", " 5");
        latch_res_set_header(res, "Content-Length", "0x5");
        latch_res_end(res, "hello", 5);
    } else if (strcmp(p, "/cl-too-big") == 0) {
        /* Digits, but past what a client reads into a signed 64-bit
         * integer: once on the wire, the response could not be framed. */
        latch_res_set_header(res, "Content-Length", "99999999999999999999");
        latch_res_set_header(res, "Content-Length", "9223372036854775808");
        latch_res_end(res, "hello", 5);
    } else if (strcmp(p, "/te-send") == 0) {
        /* send knows the whole body: its Content-Length wins. */
        latch_res_set_header(res, "Transfer-Encoding", "chunked");
        latch_res_send(res, "hello", 5);
    } else if (strcmp(p, "/status-101") == 0) {
        latch_res_status(res, 101);
        latch_res_send(res, "hello", 5);
    } else if (strcmp(p, "/write-head-103") == 0) {
        latch_res_write_head(res, 103);
        latch_res_send(res, "hello", 5);
    } else if (strcmp(p, "/send-status-100") == 0) {
        latch_res_send_status(res, 100);
        latch_res_send(res, "hello", 5);
    } else if (strcmp(p, "/204-send") == 0) {
        latch_res_status(res, 204);
        latch_res_set_header(res, "ETag", "\"e\"");
        latch_res_send(res, "hello", 5);
    } else if (strcmp(p, "/204-send-status") == 0) {
        latch_res_send_status(res, 204);
    } else if (strcmp(p, "/304-json") == 0) {
        latch_res_status(res, 304);
        latch_res_type(res, "json");
        latch_res_json(res, "{\"a\":1}");
    } else if (strcmp(p, "/205-send") == 0) {
        latch_res_status(res, 205);
        latch_res_send(res, "hello", 5);
    } else if (strcmp(p, "/205-te-json") == 0) {
        latch_res_status(res, 205);
        latch_res_set_header(res, "Transfer-Encoding", "chunked");
        latch_res_json(res, "{}");
    } else if (strcmp(p, "/204-cl") == 0) {
        /* RFC 9110 §8.6: no Content-Length in a 204, whoever set it. */
        latch_res_status(res, 204);
        latch_res_set_header(res, "Content-Length", "4");
        latch_res_end(res, "body", 4);
    } else if (strcmp(p, "/10-keep-alive") == 0) {
        latch_res_set_header(res, "Connection", "keep-alive");
        latch_res_write(res, "hel", 3);
        latch_res_end(res, "lo", 2);
    } else if (strcmp(p, "/10-te") == 0) {
        latch_res_set_header(res, "Transfer-Encoding", "chunked");
        latch_res_write(res, "hel", 3);
        latch_res_end(res, "lo", 2);
    }
    return LATCH_DONE;
}

#define HELLO_CL "HTTP/1.1 200 OK\r\n" KA "Content-Length: 5\r\n\r\nhello"
#define HELLO_SEND                                                             \
    "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n"            \
    "Content-Length: 5\r\n" KA "\r\nhello"

static const fcase cases[] = {
    {"/te-gzip", HELLO_CL, {IA}, {"latch_res_set_header"}},
    {"/te-gzip-chunked", HELLO_CL, {IA}, {"latch_res_append_header"}},
    {"/te-twice",
     "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n" KA
     "\r\n5\r\nhello\r\n0\r\n\r\n",
     {IA},
     {"latch_res_append_header"}},
    {"/cl-then-te",
     "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n" KA "\r\nhello",
     {IA},
     {"latch_res_set_header"}},
    {"/te-then-cl",
     "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n" KA
     "\r\n5\r\nhello\r\n0\r\n\r\n",
     {IA},
     {"latch_res_append_header"}},
    {"/cl-twice",
     "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n" KA "\r\nhello",
     {IA},
     {"latch_res_append_header"}},
    {"/cl-not-digits",
     HELLO_CL,
     {IA, IA, IA},
     {"latch_res_set_header", "latch_res_set_header", "latch_res_set_header"}},
    {"/cl-too-big",
     HELLO_CL,
     {IA, IA},
     {"latch_res_set_header", "latch_res_set_header"}},
    {"/te-send", HELLO_SEND, {0}, {NULL}},
    {"/status-101", HELLO_SEND, {IS}, {"latch_res_status"}},
    {"/write-head-103", HELLO_SEND, {IS}, {"latch_res_write_head"}},
    {"/send-status-100", HELLO_SEND, {IS}, {"latch_res_send_status"}},
    {"/204-send",
     "HTTP/1.1 204 No Content\r\nETag: \"e\"\r\n" KA "\r\n",
     {0},
     {NULL}},
    {"/204-send-status", "HTTP/1.1 204 No Content\r\n" KA "\r\n", {0}, {NULL}},
    {"/304-json", "HTTP/1.1 304 Not Modified\r\n" KA "\r\n", {0}, {NULL}},
    {"/204-cl", "HTTP/1.1 204 No Content\r\n" KA "\r\n", {0}, {NULL}},
    {"/205-send",
     "HTTP/1.1 205 Reset Content\r\nContent-Length: 0\r\n" KA "\r\n",
     {0},
     {NULL}},
    {"/205-te-json",
     "HTTP/1.1 205 Reset Content\r\nContent-Length: 0\r\n" KA "\r\n",
     {0},
     {NULL}},
};
#define NCASES ((int)(sizeof(cases) / sizeof(cases[0])))

static void run_case(const fcase *c)
{
    char req[256];
    int fd, n = 0;

    srv_start(framing_handler, NULL);
    fd = th_connect(srv.port);
    snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", c->path);
    th_send_str(fd, req);
    expect_resp(fd, c->want);
    /* The connection is still in step: the next answer is exactly /ok. */
    expect_ok_on(fd);
    close(fd);
    srv_stop();
    while (n < 3 && c->codes[n] != 0) {
        th_vrec v = vget(n);
        if (v.code != c->codes[n] || strcmp(v.call, c->calls[n]) != 0)
            fail_msg("%s: report %d is %s from %s, want %s from %s", c->path, n,
                     v.name, v.call, latch_err_name(c->codes[n]), c->calls[n]);
        assert_string_equal(v.at_file, test_file);
        n++;
    }
    if (th_vlog_count(&vlog) != n)
        fail_msg("%s: %d report(s), want %d", c->path, th_vlog_count(&vlog), n);
}

static void test_cases(void **state)
{
    (void)state;
    for (int i = 0; i < NCASES; i++)
        run_case(&cases[i]);
}

/* HTTP/1.0: no chunked (the client cannot read it) and a body without a
 * length ends at the close, whatever Connection the handler set. */
static void test_http10_close_delimited(void **state)
{
    static const char *const paths[] = {"/10-keep-alive", "/10-te"};

    (void)state;
    srv_start(framing_handler, NULL);
    for (int i = 0; i < 2; i++) {
        char req[128], *out, *norm;
        size_t len;
        int fd = th_connect(srv.port);

        snprintf(req, sizeof(req), "GET %s HTTP/1.0\r\n\r\n", paths[i]);
        th_send_str(fd, req);
        out = th_read(fd, &len, 5000, NULL, NULL);
        assert_int_equal(th_last_end(), TH_EOF);
        norm = th_normalize(out, len);
        if (strstr(norm, "chunked") != NULL ||
            strstr(norm, "keep-alive") != NULL ||
            strstr(norm, "Connection: close\r\n") == NULL ||
            strcmp(norm + strlen(norm) - 9, "\r\n\r\nhello") != 0)
            fail_msg("%s: not a close-delimited answer:\n%s", paths[i], norm);
        free(norm);
        free(out);
        close(fd);
    }
    srv_stop();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_cases, teardown),
        cmocka_unit_test_teardown(test_http10_close_delimited, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
