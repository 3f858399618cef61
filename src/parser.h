/*
 * parser.h - latch's incremental, allocation-free, strict HTTP/1.1 request
 * parser (shared/spec/http1-parsing.md).
 *
 * The parser never copies and never allocates. It reads a request head that
 * the caller keeps contiguous in memory and reports every field as an offset
 * and a length relative to the first byte it was given for this message, so
 * the caller may move the unconsumed bytes (compacting or growing its buffer)
 * between calls as long as it passes them again from the same first byte.
 * It then decodes the body framing (Content-Length or chunked) one span at a
 * time. It does no I/O and knows nothing of connections: that makes it
 * fuzzable on its own (fuzz/fuzz_parser.c).
 *
 * It is not the server's policy layer: it does not require Host, does not
 * answer CONNECT or Upgrade, and does not decide what to do after an error.
 * It records what conn.c needs to decide (host_count, upgrade, method).
 * It does check each Host value, as it checks Content-Length's, at the end
 * of its line: uri-host [":" port], and not empty when the target has an
 * authority (RFC 9112 §3.2), else 400.
 * Likewise it accepts the asterisk-form target `*` with any method (as
 * shared/corpus/llhttp/expected.tsv does for the parser alone): answering
 * 400 to `*` with a method other than OPTIONS is the server's rule.
 */
#ifndef LATCH_PARSER_H
#define LATCH_PARSER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A slice of the message's bytes: offset from the message's first byte. */
typedef struct latch_span {
    uint32_t off;
    uint32_t len;
} latch_span;

typedef struct latch_field {
    latch_span name;  /* as sent (case preserved) */
    latch_span value; /* leading and trailing OWS trimmed */
} latch_field;

/* Limits; every one configurable. Defaults: latch__parse_limits_default. */
typedef struct latch_parse_limits {
    uint32_t request_line; /* bytes incl. CRLF and any skipped leading
                              empty lines; over it: 414 (8 KiB) */
    uint32_t field_line;   /* one field line incl. CRLF; over: 431 (8 KiB) */
    uint32_t head;         /* header section (fields + final CRLF); 431
                              (16 KiB); the request line is not counted */
    uint32_t fields;       /* number of field lines; over it: 431 (100) */
    uint64_t body;         /* Content-Length or sum of chunk sizes; over
                              it: 413 (1 MiB); UINT64_MAX: unlimited */
    uint32_t chunk_ext;    /* chunk-extension bytes per message; 413 (16K) */
} latch_parse_limits;

extern const latch_parse_limits latch__parse_limits_default;

enum latch_body_kind {
    LATCH_BODY_NONE = 0,    /* no Content-Length, no Transfer-Encoding */
    LATCH_BODY_LENGTH = 1,  /* Content-Length: content_length bytes */
    LATCH_BODY_CHUNKED = 2, /* Transfer-Encoding: chunked */
    LATCH_BODY_CLOSE = 3,   /* a response without either: the body ends
                               when the connection closes */
};

enum latch_expect {
    LATCH_EXPECT_NONE = 0,
    LATCH_EXPECT_CONTINUE = 1, /* exactly "100-continue", any case;
                                  HTTP/1.1 only (RFC 9110 §10.1.1) */
    LATCH_EXPECT_OTHER = 2,    /* any other expectation: server says 417 */
};

/* Return values of latch__parse_head / latch__parse_body (>= 0). Errors
 * are LATCH_PARSE_ERROR (-1) with p->status and p->reason set. */
enum {
    LATCH_PARSE_AGAIN = 0,  /* everything consumed; need more bytes */
    LATCH_PARSE_DONE = 1,   /* head: head complete; body: message done */
    LATCH_PARSE_DATA = 2,   /* body: one data span in *data / *len */
    LATCH_PARSE_ERROR = -1, /* p->status (400, 413, 414, 431, 501, 505) */
};

typedef struct latch_parser {
    /* Configuration (set by latch__parser_init, kept across messages). */
    const latch_parse_limits *lim;
    latch_field *fields; /* caller's array of fields_cap entries */
    uint32_t fields_cap; /* >= lim->fields */

    /* Results of the head, valid after LATCH_PARSE_DONE from parse_head. */
    uint32_t skipped;        /* leading empty lines (CRLF) skipped, in bytes;
                                the request line starts at offset `skipped`.
                                Kept up to date while parsing: after AGAIN,
                                skipped == len means only empty lines came */
    uint32_t head_len;       /* bytes of the whole head from offset 0, incl.
                                skipped empty lines and the final CRLF */
    latch_span method;       /* token */
    latch_span target;       /* request-target as sent; in a response, the
                                reason phrase (possibly empty) */
    uint8_t version_minor;   /* 0 or 1 (major is always 1; HTTP/1.2 to
                                1.9 are read as 1.1, RFC 9110 §6.2) */
    uint8_t body_kind;       /* enum latch_body_kind */
    uint8_t expect;          /* enum latch_expect */
    bool keep_alive;         /* HTTP/1.1 without "close", or 1.0 with
                                "keep-alive", per the Connection tokens */
    bool conn_close;         /* Connection has the token "close" */
    bool upgrade;            /* CONNECT, or Upgrade field + Connection: upgrade
                                in HTTP/1.1 (1.0 ignores Upgrade, §7.8) */
    bool is_connect;         /* method is CONNECT (authority-form target) */
    bool is_head;            /* method is HEAD; for a response: it answers
                                a HEAD (set by reset_response) */
    bool response;           /* parsing a response (reset_response) */
    bool event_stream;       /* Accept names text/event-stream: an
                                EventSource, whose response is likely to
                                stay open for long */
    uint16_t code;           /* a response's status code, 100..599 */
    uint32_t nfields;        /* fields[0..nfields) */
    uint32_t host_count;     /* number of Host field lines */
    uint64_t content_length; /* when body_kind == LATCH_BODY_LENGTH */

    /* Error, valid after LATCH_PARSE_ERROR. */
    int status;         /* HTTP status to answer */
    const char *reason; /* short static text, e.g. "bare LF in header" */

    /* Private state; zeroed by latch__parser_reset. */
    uint32_t st;    /* state machine state */
    uint32_t pos;   /* next byte to look at (offset) */
    uint32_t mark;  /* start of the current token / line */
    uint32_t mark2; /* auxiliary mark (e.g. value start) */
    uint32_t line_start;
    uint32_t flags;
    uint32_t te_count, cl_count;
    uint64_t remaining;  /* body: bytes left in this chunk / body */
    uint64_t body_total; /* body: sum of chunk sizes so far */
    uint32_t ext_bytes;  /* chunk extension bytes so far */
    uint32_t hexdigits;  /* significant hex digits of the chunk size */
    uint32_t trailer_fields;
    uint32_t trailer_bytes;
} latch_parser;

/*
 * Prepares `p` for a connection. `lim` must outlive the parser (NULL: the
 * defaults). `fields` is caller-owned storage for `fields_cap` entries,
 * reused by every message; fields_cap must be >= lim->fields. Calls
 * latch__parser_reset.
 */
void latch__parser_init(latch_parser *p, const latch_parse_limits *lim,
                        latch_field *fields, uint32_t fields_cap);

/* Forgets the previous message (results and state) and keeps the
 * configuration: call it before the next pipelined message. */
void latch__parser_reset(latch_parser *p);

/*
 * Forgets the previous message, like latch__parser_reset, and makes the
 * next message a response (the proxy's upstream client): a status line
 * "HTTP/1.x SP 3DIGIT [SP reason]" instead of a request line, then the
 * same field grammar, limits and framing conflicts as a request (one
 * Content-Length, never with Transfer-Encoding, chunked alone and last,
 * no obs-fold, no NUL), and the response's own body rules (RFC 9112
 * §6.3): none for 1xx, 204, 304 and an answer to HEAD (`head_request`);
 * Transfer-Encoding or a non-zero Content-Length on a 1xx or 204 is
 * refused, a coding other than chunked is refused (a proxy cannot frame
 * it), and a response with neither is LATCH_BODY_CLOSE (keep_alive
 * false). The results are those of a request but: code, target (the
 * reason phrase); method, host_count and expect stay zero. Errors carry
 * a status as for requests; a proxy answers every one of them 502.
 */
void latch__parser_reset_response(latch_parser *p, bool head_request);

/*
 * Parses the head of one request (or response, after
 * latch__parser_reset_response). `buf` points at the message's first byte
 * and `len` counts all bytes available from there; on each call pass the
 * same bytes again (possibly moved, possibly with more appended): the
 * parser resumes where it stopped and never re-reads what it accepted.
 * Returns:
 *   LATCH_PARSE_AGAIN  the head is incomplete and what is there is valid;
 *   LATCH_PARSE_DONE   the head is complete: p->head_len bytes form it and
 *                      the results above are set; call latch__parse_body
 *                      next (also for LATCH_BODY_NONE: it returns DONE);
 *   LATCH_PARSE_ERROR  the bytes are conclusively bad, as early as the
 *                      prefix proves it; p->status and p->reason say why.
 *                      The errors decided once the whole head is in (501
 *                      for a coding other than chunked, 413 for a
 *                      Content-Length above lim->body) leave p->head_len
 *                      and every result set, so the server can apply its
 *                      own head rules (Host) first; other errors leave
 *                      p->head_len == 0.
 * Any split of the same bytes gives the same result.
 */
int latch__parse_head(latch_parser *p, const char *buf, size_t len);

/*
 * Decodes body framing after the head. `in` points at unconsumed bytes
 * right after what was consumed before (the head on the first call), `len`
 * counts them. Sets *consumed (always) to how many input bytes were used.
 * Returns:
 *   LATCH_PARSE_DATA   *data / *dlen is one span of body bytes inside `in`;
 *                      call again with the rest;
 *   LATCH_PARSE_AGAIN  all input consumed, the message is not complete;
 *   LATCH_PARSE_DONE   the message is complete (chunked: after the last
 *                      chunk and the trailer section, which is parsed like
 *                      fields and dropped); bytes after it belong to the
 *                      next message; never for LATCH_BODY_CLOSE, whose
 *                      end is the caller's to see (the peer's FIN);
 *   LATCH_PARSE_ERROR  p->status / p->reason (400 framing, 413 limits).
 */
int latch__parse_body(latch_parser *p, const char *in, size_t len,
                      size_t *consumed, const char **data, size_t *dlen);

/* ASCII case-insensitive comparison of a span of `buf` with `s`. */
bool latch__span_ieq(const char *buf, latch_span sp, const char *s);

#endif
