/*
 * fuzz_parser.c - libFuzzer target for the request parser (src/parser.c).
 *
 * The input after its first byte is a stream of pipelined requests, parsed
 * the way a connection would: head, body, reset, next head, until an
 * error, an incomplete message, an upgrade or a close. The first byte picks
 * the limits (defaults, tiny ones so that every limit is reached, or an
 * unbounded body) and a split pattern. The stream is parsed three times:
 * whole, one byte at a time, and with the chosen pattern (each call on a
 * fresh heap copy of exactly the bytes available, so ASan sees any read
 * past them or any pointer kept across calls), and the three traces must
 * be identical.
 * Invariants of every answer are checked on the way; a violation traps.
 *
 * It is not a differential fuzzer against another parser, and it checks
 * properties, not the policy's verdicts (tests/unit/test_parser.c does).
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "parser.h"

#define CHECK(cond)                                                            \
    do {                                                                       \
        if (!(cond))                                                           \
            __builtin_trap();                                                  \
    } while (0)

#define MAXF 128

/* The record of one parse of the stream, compared across splits. */
typedef struct trace {
    unsigned char buf[1 << 16];
    size_t len;
    uint64_t hash; /* of everything, including what did not fit */
} trace;

static void rec(trace *t, const void *p, size_t n)
{
    const unsigned char *s = p;

    for (size_t i = 0; i < n; i++) {
        t->hash = (t->hash ^ s[i]) * 0x100000001b3ull;
        if (t->len < sizeof(t->buf))
            t->buf[t->len++] = s[i];
    }
}

#define REC(t, v)                                                              \
    do {                                                                       \
        uint64_t v_ = (uint64_t)(v);                                           \
        rec((t), &v_, sizeof(v_));                                             \
    } while (0)

enum { SPLIT_WHOLE, SPLIT_BYTES, SPLIT_PATTERN };

typedef struct feeder {
    int mode;
    uint32_t rng; /* SPLIT_PATTERN: random steps when fixed == 0 */
    size_t fixed; /* SPLIT_PATTERN: constant step */
    size_t avail; /* bytes delivered so far */
    size_t len;
} feeder;

static void deliver(feeder *f)
{
    size_t step;

    if (f->mode == SPLIT_WHOLE) {
        f->avail = f->len;
        return;
    }
    if (f->mode == SPLIT_BYTES) {
        step = 1;
    } else if (f->fixed != 0) {
        step = f->fixed;
    } else {
        f->rng ^= f->rng << 13;
        f->rng ^= f->rng >> 17;
        f->rng ^= f->rng << 5;
        step = 1 + f->rng % 64;
    }
    f->avail = f->len - f->avail > step ? f->avail + step : f->len;
}

static bool is_ows(unsigned char c)
{
    return c == ' ' || c == '\t';
}

static bool span_in(latch_span s, size_t n)
{
    return (size_t)s.off + s.len <= n;
}

/* Properties of a head answered DONE (or 413/501, decided after it). */
static void check_head(const latch_parser *p, const unsigned char *m,
                       size_t avail, const latch_parse_limits *lim)
{
    size_t hl = p->head_len, rl_end;

    CHECK(hl >= 16 && hl <= avail); /* "M / HTTP/1.1\r\n\r\n" is 16 */
    CHECK(m[hl - 1] == '\n' && m[hl - 2] == '\r');
    CHECK(m[hl - 3] == '\n' && m[hl - 4] == '\r');
    CHECK(p->skipped % 2 == 0 && p->method.off == p->skipped);
    for (uint32_t i = 0; i < p->skipped; i++)
        CHECK(m[i] == (i % 2 ? '\n' : '\r'));
    CHECK(p->method.len > 0 && m[p->method.off + p->method.len] == ' ');
    CHECK(p->target.off == p->method.off + p->method.len + 1);
    CHECK(p->target.len > 0 && m[p->target.off + p->target.len] == ' ');
    CHECK(span_in(p->target, hl));
    rl_end = (size_t)p->target.off + p->target.len + 11;
    CHECK(rl_end <= hl && rl_end <= lim->request_line);
    CHECK(memcmp(m + p->target.off + p->target.len, " HTTP/1.", 8) == 0);
    /* 1.0 and 1.1 as sent; 1.2 to 1.9 read as 1.1. */
    CHECK(m[rl_end - 3] == '0' + p->version_minor ||
          (p->version_minor == 1 && m[rl_end - 3] >= '2' &&
           m[rl_end - 3] <= '9'));
    CHECK(p->version_minor <= 1);
    CHECK(hl - rl_end <= lim->head);
    CHECK(p->nfields <= lim->fields);
    /* No bare CR or LF, no control byte but HTAB, anywhere in the head. */
    for (size_t i = 0; i < hl; i++) {
        unsigned char c = m[i];

        if (c == '\r')
            CHECK(m[i + 1] == '\n');
        else if (c == '\n')
            CHECK(i > 0 && m[i - 1] == '\r');
        else
            CHECK(c == '\t' || (c >= 0x20 && c != 0x7f));
    }
    for (uint32_t i = 0; i < p->nfields; i++) {
        latch_span nm = p->fields[i].name, v = p->fields[i].value;

        CHECK(nm.len > 0 && span_in(nm, hl) && span_in(v, hl));
        CHECK(nm.off >= rl_end && m[nm.off - 1] == '\n');
        CHECK(m[nm.off + nm.len] == ':');
        CHECK(v.off > nm.off + nm.len && v.off + v.len < hl);
        if (v.len > 0)
            CHECK(!is_ows(m[v.off]) && !is_ows(m[v.off + v.len - 1]));
        CHECK((size_t)v.off + v.len + 2 - nm.off <= lim->field_line);
        /* A Host value is uri-host [":" port]: none of the bytes that
         * would make it a list, a URI or userinfo. */
        if (nm.len == 4 && latch__span_ieq((const char *)m, nm, "host"))
            for (uint32_t k = 0; k < v.len; k++)
                CHECK(strchr("@/?#, \t\"\\", m[v.off + k]) == NULL &&
                      m[v.off + k] < 0x7f);
    }
    CHECK(p->body_kind <= LATCH_BODY_CHUNKED);
    CHECK(p->expect <= LATCH_EXPECT_OTHER);
    if (p->conn_close)
        CHECK(!p->keep_alive);
    if (p->version_minor == 0 && p->body_kind == LATCH_BODY_CHUNKED)
        CHECK(0);
    if (p->upgrade)
        CHECK(p->is_connect || p->version_minor == 1);
    if (p->is_connect)
        CHECK(p->upgrade && p->method.len == 7);
}

static const int statuses[] = {400, 413, 414, 431, 501, 505};

static void check_error(const latch_parser *p)
{
    bool known = false;

    for (size_t i = 0; i < sizeof(statuses) / sizeof(statuses[0]); i++)
        known = known || p->status == statuses[i];
    CHECK(known && p->reason != NULL);
}

/* Calls on a copy of exactly the bytes available in SPLIT_PATTERN mode. */
static int head_call(latch_parser *p, const unsigned char *m, size_t n,
                     bool copy)
{
    unsigned char *c;
    int rc;

    if (!copy)
        return latch__parse_head(p, (const char *)m, n);
    c = malloc(n ? n : 1);
    CHECK(c != NULL);
    memcpy(c, m, n);
    rc = latch__parse_head(p, (const char *)c, n);
    free(c);
    return rc;
}

static int body_call(latch_parser *p, const unsigned char *in, size_t n,
                     bool copy, size_t *consumed, trace *t, uint64_t *total)
{
    unsigned char *c = (unsigned char *)in;
    const char *data;
    size_t dlen;
    int rc;

    if (copy) {
        c = malloc(n ? n : 1);
        CHECK(c != NULL);
        memcpy(c, in, n);
    }
    rc = latch__parse_body(p, (const char *)c, n, consumed, &data, &dlen);
    CHECK(*consumed <= n);
    switch (rc) {
    case LATCH_PARSE_DATA:
        CHECK(dlen > 0 && (const unsigned char *)data >= c);
        CHECK((const unsigned char *)data + dlen == c + *consumed);
        rec(t, data, dlen); /* the bytes, not where they were cut */
        *total += dlen;
        break;
    case LATCH_PARSE_AGAIN:
        CHECK(*consumed == n && data == NULL && dlen == 0);
        break;
    case LATCH_PARSE_DONE: CHECK(data == NULL && dlen == 0); break;
    case LATCH_PARSE_ERROR: check_error(p); break;
    default: CHECK(0);
    }
    if (copy)
        free(c);
    return rc;
}

static void run(const unsigned char *buf, size_t len,
                const latch_parse_limits *lim, feeder f, trace *t)
{
    static latch_field fields[MAXF];
    latch_parser p;
    bool copy = f.mode == SPLIT_PATTERN;
    size_t off = 0, at, consumed;
    uint64_t total;
    int rc;

    t->len = 0;
    t->hash = 0xcbf29ce484222325ull;
    f.len = len;
    f.avail = 0;
    deliver(&f);
    latch__parser_init(&p, lim, fields, MAXF);
    while (off < len) {
        latch__parser_reset(&p);
        while (f.avail <= off)
            deliver(&f);
        for (;;) {
            rc = head_call(&p, buf + off, f.avail - off, copy);
            if (rc != LATCH_PARSE_AGAIN || f.avail == len)
                break;
            deliver(&f);
        }
        REC(t, rc);
        if (rc == LATCH_PARSE_AGAIN) {
            CHECK(p.skipped <= len - off);
            REC(t, p.skipped);
            return;
        }
        if (rc == LATCH_PARSE_ERROR) {
            check_error(&p);
            REC(t, p.status);
            if (p.status == 413 || p.status == 501)
                check_head(&p, buf + off, f.avail - off, lim);
            REC(t, p.head_len);
            return;
        }
        CHECK(rc == LATCH_PARSE_DONE);
        check_head(&p, buf + off, f.avail - off, lim);
        REC(t, p.head_len);
        REC(t, p.target.len);
        REC(t, p.nfields);
        for (uint32_t i = 0; i < p.nfields; i++) {
            REC(t, p.fields[i].name.off);
            REC(t, p.fields[i].value.off);
            REC(t, p.fields[i].value.len);
        }
        REC(t, (p.body_kind << 8) | (p.expect << 4) | (p.keep_alive << 3) |
                   (p.upgrade << 2) | (p.is_head << 1) | p.conn_close);
        REC(t, p.host_count);
        REC(t, p.content_length);
        /* A second parse_head call changes nothing. */
        CHECK(latch__parse_head(&p, (const char *)buf + off, f.avail - off) ==
              LATCH_PARSE_DONE);

        at = off + p.head_len;
        total = 0;
        for (;;) {
            rc = body_call(&p, buf + at, f.avail - at, copy, &consumed, t,
                           &total);
            at += consumed;
            if (rc == LATCH_PARSE_DATA)
                continue;
            if (rc == LATCH_PARSE_AGAIN && f.avail < len) {
                deliver(&f);
                continue;
            }
            break;
        }
        REC(t, rc);
        REC(t, total);
        if (rc == LATCH_PARSE_ERROR) {
            REC(t, p.status);
            return;
        }
        if (p.body_kind == LATCH_BODY_LENGTH)
            CHECK(total <= p.content_length);
        CHECK(total <= lim->body);
        if (rc == LATCH_PARSE_AGAIN) {
            CHECK(at == len);
            return;
        }
        CHECK(rc == LATCH_PARSE_DONE);
        if (p.body_kind == LATCH_BODY_LENGTH)
            CHECK(total == p.content_length);
        if (p.body_kind == LATCH_BODY_NONE)
            CHECK(total == 0 && at == off + p.head_len);
        REC(t, at);
        if (p.upgrade || !p.keep_alive)
            return;
        off = at;
    }
}

/*
 * The limits a control byte can pick. `tiny` reaches each limit with short
 * inputs (its header section limit is below fields * field_line, so both
 * can be hit); `unbounded` lets chunk sizes reach their 16-digit cap.
 */
static const latch_parse_limits tiny = {
    .request_line = 64,
    .field_line = 48,
    .head = 128,
    .fields = 4,
    .body = 64,
    .chunk_ext = 16,
};

static const latch_parse_limits unbounded = {
    .request_line = 8192,
    .field_line = 8192,
    .head = 16384,
    .fields = 100,
    .body = UINT64_MAX,
    .chunk_ext = 64,
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static trace a, b;
    const latch_parse_limits *lim;
    feeder f = {SPLIT_WHOLE, 0, 0, 0, 0};
    uint8_t ctl;

    if (size < 1)
        return 0;
    ctl = data[0];
    data++;
    size--;
    /* Bits 0-1: the limits. Bit 2: a fixed step of (ctl >> 3) + 1 bytes,
     * else random steps seeded by ctl. */
    switch (ctl & 3) {
    case 1: lim = &tiny; break;
    case 2: lim = &unbounded; break;
    default: lim = &latch__parse_limits_default;
    }

    run(data, size, lim, f, &a);
    f.mode = SPLIT_BYTES;
    run(data, size, lim, f, &b);
    CHECK(a.len == b.len && a.hash == b.hash &&
          memcmp(a.buf, b.buf, a.len) == 0);
    f.mode = SPLIT_PATTERN;
    f.fixed = ctl & 4 ? (size_t)(ctl >> 3) + 1 : 0;
    f.rng = 0x9e3779b9u ^ ctl;
    run(data, size, lim, f, &b);
    CHECK(a.len == b.len && a.hash == b.hash &&
          memcmp(a.buf, b.buf, a.len) == 0);
    return 0;
}
