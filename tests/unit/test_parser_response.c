/*
 * test_parser_response.c - the response side of src/parser.c, which the
 * proxy's upstream client reads upstream answers with.
 *
 * Two parts. The corpus test runs every response fixture of
 * $LATCH_SHARED_DIR/corpus/llhttp (cases.tsv, raw/<id>.bin) against
 * latch's verdict for it, written in the table below: how many final
 * responses are complete (1xx are interim and not counted; a body without
 * framing ends at the end of the bytes, the connection's close), or a
 * refusal. Where latch differs from llhttp on purpose the row says why:
 * llhttp's lenient modes, RTSP/ICE, HTTP/0.9, a coding other than chunked,
 * two Transfer-Encoding lines, a 101 with a body all are refusals here.
 * The targeted tests are the smuggling shapes the proxy must refuse (and
 * so answer 502, forwarding nothing): CL+TE, two Content-Lengths, bad
 * chunk sizes, obs-fold, NUL, a 1xx or 204 claiming a body.
 *
 * Every input is parsed whole and one byte at a time, each call on a
 * fresh heap copy of exactly the bytes available (ASan sees an overread).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "parser.h"

#define MAXF 128

static const latch_parse_limits resp_limits = {
    .request_line = 8192,
    .field_line = 8192,
    .head = 16384,
    .fields = 100,
    .body = UINT64_MAX,
    .chunk_ext = 16384,
};

/* The outcome of a byte stream read as consecutive responses. */
typedef struct outcome {
    int finals;       /* complete final responses */
    int interim;      /* 1xx heads skipped */
    bool error;       /* refused */
    int status;       /* the parser's status for the refusal */
    int last_code;    /* the code of the last final head */
    int body_kind;    /* of the last final head */
    bool keep_alive;  /* of the last final head */
    size_t body_len;  /* body bytes of all final responses */
    char body[65536]; /* their concatenation (truncated) */
} outcome;

/* Parses the head with the first `avail` bytes (a fresh copy each call). */
static int head_call(latch_parser *p, const char *msg, size_t avail)
{
    char *copy = malloc(avail ? avail : 1);
    int r;

    memcpy(copy, msg, avail);
    r = latch__parse_head(p, copy, avail);
    free(copy);
    return r;
}

/*
 * Reads `len` bytes as responses (answers to GET, or HEAD when `head`),
 * delivered whole (bytewise false) or one byte at a time. Stops after a
 * response whose connection closes (keep_alive false), as a client must.
 */
static void run(const char *buf, size_t len, bool head, bool bytewise,
                outcome *o)
{
    latch_field fields[MAXF];
    latch_parser p;
    size_t msg = 0;

    memset(o, 0, sizeof(*o));
    latch__parser_init(&p, &resp_limits, fields, MAXF);
    for (;;) {
        size_t avail = bytewise ? 0 : len - msg;
        int r;

        latch__parser_reset_response(&p, head);
        for (;;) {
            if (bytewise && avail < len - msg)
                avail++;
            r = head_call(&p, buf + msg, avail);
            if (r != LATCH_PARSE_AGAIN || avail == len - msg)
                break;
        }
        if (r == LATCH_PARSE_ERROR) {
            o->error = true;
            o->status = p.status;
            return;
        }
        if (r == LATCH_PARSE_AGAIN)
            return; /* incomplete at the end: not counted */
        msg += p.head_len;
        if (p.code < 200) {
            o->interim++;
            continue;
        }
        o->last_code = p.code;
        o->body_kind = p.body_kind;
        o->keep_alive = p.keep_alive;
        /* The body, from bytes handed over once each. */
        for (;;) {
            size_t give = bytewise ? (len - msg > 0 ? 1 : 0) : len - msg;
            size_t consumed;
            const char *data;
            size_t dlen;
            char *copy = malloc(give ? give : 1);

            memcpy(copy, buf + msg, give);
            r = latch__parse_body(&p, copy, give, &consumed, &data, &dlen);
            if (r == LATCH_PARSE_DATA) {
                assert_true(data >= copy && data + dlen <= copy + give);
                if (o->body_len + dlen <= sizeof(o->body))
                    memcpy(o->body + o->body_len, data, dlen);
                o->body_len += dlen;
            }
            free(copy);
            assert_true(consumed <= give);
            msg += consumed;
            if (r == LATCH_PARSE_ERROR) {
                o->error = true;
                o->status = p.status;
                return;
            }
            if (r == LATCH_PARSE_DONE)
                break;
            if (r == LATCH_PARSE_AGAIN && msg == len) {
                /* The end of the bytes is the connection's close: it
                 * completes only a body delimited by it. */
                if (p.body_kind == LATCH_BODY_CLOSE)
                    o->finals++;
                return;
            }
        }
        o->finals++;
        if (!p.keep_alive || msg == len)
            return;
    }
}

/* Both deliveries agree; returns the whole one. */
static void run_both(const char *buf, size_t len, bool head, outcome *o)
{
    static outcome b;

    run(buf, len, head, false, o);
    run(buf, len, head, true, &b);
    assert_int_equal(o->error, b.error);
    assert_int_equal(o->finals, b.finals);
    assert_int_equal(o->interim, b.interim);
    assert_int_equal(o->body_len, b.body_len);
    if (o->body_len <= sizeof(o->body))
        assert_memory_equal(o->body, b.body, o->body_len);
}

#define RUN(lit, head, o) run_both((lit), sizeof(lit) - 1, (head), (o))

/* ---- the corpus ------------------------------------------------------ */

/* latch's verdict per response fixture: finals complete, or -1 refused. */
static const struct {
    const char *id;
    int finals;
    const char *why; /* where latch differs from llhttp's strict mode */
} verdicts[] = {
    {"response-connection-L6", 1, NULL},
    {"response-connection-L51", 1, "the end of the bytes ends the body"},
    {"response-connection-L79", 1, NULL},
    {"response-connection-L115", 1, "the end of the bytes ends the body"},
    {"response-connection-L138", 1, NULL},
    {"response-connection-L166", 1, NULL},
    {"response-connection-L195", 1, "nothing read after Connection: close"},
    {"response-connection-L229", 1, NULL},
    {"response-connection-L262", 1, "nothing read after Connection: close"},
    {"response-connection-L295", -1, "a 101 with Content-Length"},
    {"response-connection-L333", -1, "a 101 with Transfer-Encoding"},
    {"response-connection-L376", 1, "the end of the bytes ends the body"},
    {"response-connection-L407", 1, NULL},
    {"response-connection-L444", 1, NULL},
    {"response-connection-L494", 2, NULL},
    {"response-connection-L539", 1, NULL},
    {"response-connection-L588", 1, "the 100 is interim, not counted"},
    {"response-connection-L643", 0, "103 interim; the body is 1 short"},
    {"response-content-length-L12", 1, "the end of the bytes ends the body"},
    {"response-content-length-L85", 1, NULL},
    {"response-content-length-L125", 0, NULL},
    {"response-content-length-L170", 0, NULL},
    {"response-finish-L8", 1, "the end of the bytes ends the body"},
    {"response-invalid-L6", -1, NULL},
    {"response-invalid-L21", -1, NULL},
    {"response-invalid-L38", -1, NULL},
    {"response-invalid-L55", -1, NULL},
    {"response-invalid-L74", -1, NULL},
    {"response-invalid-L92", -1, NULL},
    {"response-invalid-L110", -1, NULL},
    {"response-invalid-L134", -1, NULL},
    {"response-invalid-L153", -1, "lenient mode"},
    {"response-invalid-L178", -1, NULL},
    {"response-invalid-L197", -1, NULL},
    {"response-invalid-L214", -1, NULL},
    {"response-invalid-L233", -1, NULL},
    {"response-invalid-L251", 1, "the end of the bytes ends the body"},
    {"response-invalid-L271", -1, NULL},
    {"response-invalid-L289", -1, NULL},
    {"response-invalid-L306", -1, "lenient mode"},
    {"response-invalid-L329", -1, NULL},
    {"response-invalid-L350", -1, "lenient mode"},
    {"response-lenient-version-L6", -1, "lenient mode"},
    {"response-pausing-L6", 1, NULL},
    {"response-pausing-L34", 1, NULL},
    {"response-pausing-L62", 1, NULL},
    {"response-pausing-L90", 1, NULL},
    {"response-pausing-L118", 1, NULL},
    {"response-pausing-L146", 1, NULL},
    {"response-pausing-L174", 1, NULL},
    {"response-pausing-L202", 1, NULL},
    {"response-pausing-L239", 1, NULL},
    {"response-pausing-L279", 1, NULL},
    {"response-pausing-L319", 1, NULL},
    {"response-pipelining-L6", 2, NULL},
    {"response-sample-L6", 1, NULL},
    {"response-sample-L42", -1, "RTSP is not HTTP"},
    {"response-sample-L62", -1, "ICE is not HTTP"},
    {"response-sample-L84", -1, NULL},
    {"response-sample-L100", 1, "the end of the bytes ends the body"},
    {"response-sample-L120", 0, "the body is short of its length"},
    {"response-sample-L198", 1, NULL},
    {"response-sample-L273", 1, "the end of the bytes ends the body"},
    {"response-sample-L293", 1, "the end of the bytes ends the body"},
    {"response-sample-L312", 1, "the end of the bytes ends the body"},
    {"response-sample-L332", -1, NULL},
    {"response-sample-L353", -1, "lenient mode"},
    {"response-sample-L386", 1, NULL},
    {"response-sample-L430", 1, "the end of the bytes ends the body"},
    {"response-sample-L496", 1, NULL},
    {"response-sample-L576", -1, NULL},
    {"response-sample-L611", 1, NULL},
    {"response-sample-L647", -1, "HTTP/0.9 is refused"},
    {"response-sample-L671", 1, "the end of the bytes ends the body"},
    {"response-sample-L697", 1, NULL},
    {"response-transfer-encoding-L6", -1, NULL},
    {"response-transfer-encoding-L45", -1, "deflate cannot be framed"},
    {"response-transfer-encoding-L76", -1, "two Transfer-Encoding lines"},
    {"response-transfer-encoding-L114", -1, "chunkedchunked is not chunked"},
    {"response-transfer-encoding-L159", 1, NULL},
    {"response-transfer-encoding-L214", -1, NULL},
    {"response-transfer-encoding-L250", -1, NULL},
    {"response-transfer-encoding-L286", 0, NULL},
    {"response-transfer-encoding-L347", -1, NULL},
    {"response-transfer-encoding-L391", -1, "obs-fold"},
};

static const char *shared_dir(void)
{
    const char *d = getenv("LATCH_SHARED_DIR");

    return d != NULL ? d : "../shared";
}

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf;
    long n;

    if (f == NULL)
        return NULL;
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    buf = malloc((size_t)n + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return buf;
}

/* Every response row of cases.tsv has a verdict, and meets it. */
static void test_corpus(void **state)
{
    char path[2048], line[512];
    size_t nv = sizeof(verdicts) / sizeof(verdicts[0]), seen = 0;
    static outcome o;
    FILE *f;

    (void)state;
    snprintf(path, sizeof(path), "%s/corpus/llhttp/cases.tsv", shared_dir());
    f = fopen(path, "r");
    if (f == NULL)
        fail_msg("cannot read %s (set LATCH_SHARED_DIR)", path);
    while (fgets(line, sizeof(line), f) != NULL) {
        char *tab = strchr(line, '\t');
        size_t i, len = 0;
        char *raw;

        if (strncmp(line, "response", 8) != 0 || tab == NULL ||
            tab - line > 100)
            continue;
        *tab = '\0';
        for (i = 0; i < nv; i++)
            if (strcmp(verdicts[i].id, line) == 0)
                break;
        if (i == nv)
            fail_msg("%s: no verdict in the table", line);
        seen++;
        snprintf(path, sizeof(path), "%s/corpus/llhttp/raw/%s.bin",
                 shared_dir(), line);
        raw = slurp(path, &len);
        if (raw == NULL)
            fail_msg("cannot read %s", path);
        run_both(raw, len, false, &o);
        if (verdicts[i].finals < 0) {
            if (!o.error)
                fail_msg("%s: accepted (%d), latch refuses", line, o.finals);
        } else if (o.error || o.finals != verdicts[i].finals) {
            fail_msg("%s: %s %d, expected %d", line,
                     o.error ? "refused" : "accepted", o.finals,
                     verdicts[i].finals);
        }
        free(raw);
    }
    fclose(f);
    assert_int_equal(seen, nv);
}

/* ---- targeted -------------------------------------------------------- */

static void expect_refused(const char *msg, const char *what)
{
    static outcome o;

    run_both(msg, strlen(msg), false, &o);
    if (!o.error)
        fail_msg("accepted: %s", what);
    /* Nothing of a refused response may have been taken for body. */
    assert_int_equal(o.finals, 0);
}

static void test_smuggling_shapes(void **state)
{
    (void)state;
    expect_refused("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n"
                   "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
                   "CL then TE");
    expect_refused("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
                   "Content-Length: 5\r\n\r\n0\r\n\r\n",
                   "TE then CL");
    expect_refused("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n"
                   "Content-Length: 5\r\n\r\nhello",
                   "two equal Content-Lengths");
    expect_refused("HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\nhello",
                   "a Content-Length list");
    expect_refused("HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\nhello",
                   "a signed Content-Length");
    expect_refused("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                   "0x5\r\nhello\r\n0\r\n\r\n",
                   "a 0x chunk size");
    expect_refused("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                   "-5\r\nhello\r\n0\r\n\r\n",
                   "a negative chunk size");
    expect_refused("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                   "5 \r\nhello\r\n0\r\n\r\n",
                   "a space after the chunk size");
    expect_refused("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                   "11111111111111111\r\nx\r\n",
                   "a chunk size beyond 64 bits");
    expect_refused("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                   "5\r\nhelloXX0\r\n\r\n",
                   "chunk data longer than its size");
    expect_refused("HTTP/1.1 200 OK\r\nX-A: 1\r\n folded\r\n"
                   "Content-Length: 0\r\n\r\n",
                   "obs-fold");
    { /* NUL in a value (strlen would stop at it) */
        static const char nul[] = "HTTP/1.1 200 OK\r\nX-A: a\0b\r\n"
                                  "Content-Length: 0\r\n\r\n";
        static outcome o;

        run_both(nul, sizeof(nul) - 1, false, &o);
        assert_true(o.error);
    }
    expect_refused("HTTP/1.1 200 OK\r\nContent-Length : 0\r\n\r\n",
                   "space before the colon");
    expect_refused("HTTP/1.1 200 OK\nContent-Length: 0\n\n", "bare LF");
    expect_refused("HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                   "0\r\n\r\n",
                   "Transfer-Encoding in HTTP/1.0");
    expect_refused("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nxx",
                   "a coding other than chunked");
    expect_refused("HTTP/1.1 100 Continue\r\nContent-Length: 5\r\n\r\n",
                   "a 1xx with a body");
    expect_refused("HTTP/1.1 103 Early Hints\r\nTransfer-Encoding: chunked"
                   "\r\n\r\n",
                   "a 1xx chunked");
    expect_refused("HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n"
                   "hello",
                   "a 204 with a body");
    expect_refused("HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked"
                   "\r\n\r\n0\r\n\r\n",
                   "a 204 chunked");
    expect_refused("HTTP/1.1 600 Odd\r\n\r\n", "status 600");
    expect_refused("HTTP/1.1 099 Odd\r\n\r\n", "status 099");
    expect_refused("HTTP/1.1 20 OK\r\n\r\n", "two digits");
    expect_refused("HTTP/1.1 2000 OK\r\n\r\n", "four digits");
    expect_refused("HTTP/2 200 OK\r\n\r\n", "HTTP/2");
    expect_refused("HTTP/1.1 200 O\rK\r\n\r\n", "CR in the reason");
}

static void test_framing(void **state)
{
    static outcome o;
    static const char twice[] =
        "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc"
        "HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n"
        "2\r\nde\r\n1;x=\"y\"\r\nf\r\n0\r\nT: 1\r\n\r\n";

    (void)state;
    run_both(twice, sizeof(twice) - 1, false, &o);
    assert_false(o.error);
    assert_int_equal(o.finals, 2);
    assert_int_equal(o.last_code, 404);
    assert_int_equal(o.body_len, 6);
    assert_memory_equal(o.body, "abcdef", 6);
    assert_true(o.keep_alive);

    /* No framing: to the close, and the connection cannot be kept. */
    RUN("HTTP/1.1 200 OK\r\n\r\nuntil close", false, &o);
    assert_int_equal(o.finals, 1);
    assert_int_equal(o.body_kind, LATCH_BODY_CLOSE);
    assert_false(o.keep_alive);
    assert_int_equal(o.body_len, 11);

    /* An answer to HEAD, a 304 and a 204 with Content-Length: 0 carry no
     * bytes whatever their framing fields say. */
    RUN("HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n", true, &o);
    assert_false(o.error);
    assert_int_equal(o.finals, 1);
    assert_int_equal(o.body_len, 0);
    RUN("HTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\n\r\n", false, &o);
    assert_int_equal(o.finals, 1);
    assert_int_equal(o.body_kind, LATCH_BODY_NONE);
    RUN("HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n", false, &o);
    assert_false(o.error);
    assert_int_equal(o.finals, 1);

    /* Interim responses come before the final one. */
    RUN("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\n"
        "Link: </a>\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n"
        "\r\nok",
        false, &o);
    assert_false(o.error);
    assert_int_equal(o.interim, 2);
    assert_int_equal(o.finals, 1);
    assert_int_equal(o.last_code, 201);

    /* HTTP/1.0: closes unless it says keep-alive. */
    RUN("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", false, &o);
    assert_false(o.keep_alive);
    RUN("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n"
        "Content-Length: 0\r\n\r\n",
        false, &o);
    assert_true(o.keep_alive);
}

/* The status line's pieces, and its limit. */
static void test_status_line(void **state)
{
    latch_field fields[MAXF];
    latch_parser p;
    static const char m[] = "\r\nHTTP/1.1 502 Bad  Gateway\r\n\r\n";
    char *big;

    (void)state;
    latch__parser_init(&p, &resp_limits, fields, MAXF);
    latch__parser_reset_response(&p, false);
    assert_int_equal(head_call(&p, m, sizeof(m) - 1), LATCH_PARSE_DONE);
    assert_int_equal(p.code, 502);
    assert_int_equal(p.version_minor, 1);
    assert_int_equal(p.target.len, 12);
    assert_memory_equal(m + p.target.off, "Bad  Gateway", 12);
    assert_int_equal(p.head_len, sizeof(m) - 1);

    big = malloc(9000);
    memcpy(big, "HTTP/1.1 200 ", 13);
    memset(big + 13, 'x', 9000 - 13);
    latch__parser_reset_response(&p, false);
    assert_int_equal(head_call(&p, big, 9000), LATCH_PARSE_ERROR);
    free(big);

    /* A request parser is not changed by having read a response. */
    latch__parser_reset(&p);
    assert_int_equal(head_call(&p, "GET / HTTP/1.1\r\nHost: a\r\n\r\n", 27),
                     LATCH_PARSE_DONE);
    assert_false(p.response);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_corpus),
        cmocka_unit_test(test_smuggling_shapes),
        cmocka_unit_test(test_framing),
        cmocka_unit_test(test_status_line),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
