/*
 * parser.c - latch's strict, incremental, allocation-free HTTP/1.1 request
 * parser. The contract is in parser.h, the policy it enforces in
 * shared/spec/http1-parsing.md.
 *
 * The head is parsed by one resumable state machine over the bytes of the
 * message. Its only memory of earlier calls is a state number and a few
 * offsets, so the caller may move or grow its buffer between calls; since
 * every call passes the message again from its first byte, the end of a
 * line can look back (to trim OWS, to read a Content-Length) instead of
 * doing that work byte by byte. Runs of ordinary bytes (method, target,
 * field names and values) are skipped 16 at a time with SSE2, or by an
 * unrolled loop over a class table, and the limits are folded into where
 * the scans stop, so the common path has no per-byte branch for them and
 * no per-byte function call. The few field names that matter are found by
 * length, then one case-folded compare. The body decoder works on bytes
 * the caller hands over once and never sees again.
 *
 * It is deliberately not lenient: every byte that two implementations
 * could read differently is refused (request smuggling, RFC 9112 §11.2),
 * as early as the prefix proves it. It is not the server's policy layer
 * either: the number of Host lines, CONNECT, Upgrade, Expect and `*` with
 * methods other than OPTIONS are recorded for conn.c, not answered here
 * (a Host value's grammar is checked here, like Content-Length's).
 */
#include "parser.h"

#include <string.h>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

const latch_parse_limits latch__parse_limits_default = {
    .request_line = 8192,
    .field_line = 8192,
    .head = 16384,
    .fields = 100,
    .body = 1024 * 1024,
    .chunk_ext = 16384,
};

/* Character classes, one bit each in ctab[]. */
enum {
    T_TOKEN = 1,  /* tchar (RFC 9110 §5.6.2) */
    T_TARGET = 2, /* request-target byte: visible ASCII 0x21-0x7E */
    T_VALUE = 4,  /* field-value byte: HTAB, SP, VCHAR, obs-text */
    T_QDTEXT = 8, /* quoted-string text: T_VALUE minus '"' and '\' */
    T_HEX = 16,   /* HEXDIG */
    T_HOST = 32,  /* reg-name byte but '%' (RFC 3986 §3.2.2): unreserved
                     and sub-delims, less ',' (see uri_host) */
};

static const unsigned char ctab[256] = {
    0,  0,  0,  0,  0,  0,  0,  0,  0,  12, 0,  0,  0,  0,  0,  0,  /* 0x00 */
    0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  /* 0x10 */
    12, 47, 6,  15, 47, 15, 47, 47, 46, 46, 47, 47, 14, 47, 47, 14, /* 0x20 */
    63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 14, 46, 14, 46, 14, 14, /* 0x30 */
    14, 63, 63, 63, 63, 63, 63, 47, 47, 47, 47, 47, 47, 47, 47, 47, /* 0x40 */
    47, 47, 47, 47, 47, 47, 47, 47, 47, 47, 47, 14, 6,  14, 15, 47, /* 0x50 */
    15, 63, 63, 63, 63, 63, 63, 47, 47, 47, 47, 47, 47, 47, 47, 47, /* 0x60 */
    47, 47, 47, 47, 47, 47, 47, 47, 47, 47, 47, 14, 15, 14, 47, 0,  /* 0x70 */
    12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, /* 0x80 */
    12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, /* 0x90 */
    12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, /* 0xa0 */
    12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, /* 0xb0 */
    12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, /* 0xc0 */
    12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, /* 0xd0 */
    12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, /* 0xe0 */
    12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, /* 0xf0 */
};

/*
 * States (p->st). The head states come first; parse_head answers DONE for
 * every body state, so their order matters.
 */
enum {
    S_START = 0,    /* before the method; blank lines are skipped */
    S_START_LF,     /* CR of a blank line seen, LF must follow */
    S_METHOD,       /* in the method; p->method.off is set */
    S_TARGET_START, /* after the SP that ends the method */
    S_TARGET,       /* in the target; p->target.off is set */
    S_VERSION,      /* in "HTTP/d.d"; pos - p->mark indexes it */
    S_RS_START,     /* response: before the status line (blank lines) */
    S_RS_START_LF,  /* response: CR of a blank line seen */
    S_RS_VERSION,   /* response: in "HTTP/1.d "; pos - p->mark indexes it */
    S_RS_CODE,      /* response: in the 3 digits; pos - p->mark indexes */
    S_RS_REASON,    /* response: in the reason phrase; target.off set */
    S_RL_LF,        /* CR after the version (or reason phrase) seen */
    S_LINE_START,   /* first byte of a field line or the final CRLF */
    S_NAME,         /* in a field name; fields[nfields].name.off set */
    S_VALUE,        /* after the colon; fields[nfields].value.off set */
    S_VALUE_LF,     /* CR after the value seen */
    S_HEAD_LF,      /* CR of the final empty line seen */
    S_ERROR,        /* sticky: p->status, p->reason */
    B_NONE,         /* body states from here on */
    B_LENGTH,
    B_SIZE_START,     /* first byte of a chunk-size line */
    B_SIZE,           /* in the hex digits */
    B_SIZE_LF,        /* CR of the chunk-size line seen */
    B_EXT_NAME_START, /* after ';' */
    B_EXT_NAME,
    B_EXT_VAL_START, /* after '=' */
    B_EXT_VAL_TOKEN,
    B_EXT_QUOTED,
    B_EXT_QUOTED_ESC, /* after '\' inside a quoted-string */
    B_EXT_AFTER_QUOTE,
    B_DATA,
    B_CLOSE,   /* a response's body up to the connection's close */
    B_DATA_CR, /* chunk data done, CRLF must follow */
    B_DATA_LF,
    B_TR_START, /* first byte of a trailer line or the final CRLF */
    B_TR_NAME,
    B_TR_VALUE,
    B_TR_LF,
    B_TR_END_LF,
    B_DONE,
};

/* p->flags: the kind of the current field line, then sticky facts. */
enum {
    H_OTHER = 0,
    H_HOST,
    H_CONTENT_LENGTH,
    H_TRANSFER_ENCODING,
    H_CONNECTION,
    H_UPGRADE,
    H_EXPECT,
    H_ACCEPT,
    F_KIND = 7,            /* mask of the H_* kind */
    F_CONN_CLOSE = 8,      /* Connection: close */
    F_CONN_KEEP = 16,      /* Connection: keep-alive */
    F_CONN_UPGRADE = 32,   /* Connection: upgrade */
    F_UPGRADE_FIELD = 64,  /* an Upgrade field line was seen */
    F_TE_UNSUPPORTED = 128 /* a coding other than chunked: 501 */
};

static int fail(latch_parser *p, int status, const char *reason)
{
    p->st = S_ERROR;
    p->status = status;
    p->reason = reason;
    return LATCH_PARSE_ERROR;
}

/* a + b clamped to UINT32_MAX: offsets are 32-bit, limits may be huge. */
static uint32_t add_clamp(uint32_t a, uint32_t b)
{
    return (uint64_t)a + b > UINT32_MAX ? UINT32_MAX : a + b;
}

static uint32_t min32(uint32_t a, uint32_t b)
{
    return a < b ? a : b;
}

/*
 * The offset of the first byte that would break a limit while in state
 * `st`. The header section limit covers the whole section; the field line
 * limit only applies once a byte of a field name has been seen, so the
 * final CRLF is bounded by the section limit alone.
 */
static uint32_t limit_end(const latch_parser *p, uint32_t st)
{
    const latch_parse_limits *lim = p->lim;
    uint32_t end;

    if (st <= S_RL_LF)
        return lim->request_line; /* leading blank lines count too */
    end = add_clamp(p->mark2, lim->head);
    if (st >= S_NAME && st <= S_VALUE_LF)
        end = min32(end, add_clamp(p->line_start, lim->field_line));
    return end;
}

/*
 * Skips bytes of class `cls` from pos up to stop and returns the offset of
 * the first other byte (or stop). Unrolled: this is where the head's bytes
 * go.
 */
static inline uint32_t scan(const unsigned char *b, uint32_t pos, uint32_t stop,
                            unsigned cls)
{
    while (stop - pos >= 4) {
        if (!(ctab[b[pos]] & cls))
            return pos;
        if (!(ctab[b[pos + 1]] & cls))
            return pos + 1;
        if (!(ctab[b[pos + 2]] & cls))
            return pos + 2;
        if (!(ctab[b[pos + 3]] & cls))
            return pos + 3;
        pos += 4;
    }
    while (pos < stop && (ctab[b[pos]] & cls))
        pos++;
    return pos;
}

/*
 * Field values: SSE2 finds the first control byte or DEL 16 bytes at a
 * time. HTAB is a control byte too but a legal one, so the vector loop
 * stops on it and steps over it. The tail, fewer than 16 bytes before
 * `stop` (where most heads end: the last value and the final CRLFs), is
 * one load of the 16 bytes that end at stop, masked to the lanes from
 * pos, when the message has 16 bytes before stop; the table loop does it
 * otherwise.
 */
static inline uint32_t scan_value(const unsigned char *b, uint32_t pos,
                                  uint32_t stop)
{
#if defined(__SSE2__)
    const __m128i c1f = _mm_set1_epi8(0x1f);
    const __m128i c7f = _mm_set1_epi8(0x7f);

    while (stop - pos >= 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)(const void *)(b + pos));
        __m128i ctl = _mm_cmpeq_epi8(_mm_min_epu8(v, c1f), v);
        __m128i bad = _mm_or_si128(ctl, _mm_cmpeq_epi8(v, c7f));
        unsigned m = (unsigned)_mm_movemask_epi8(bad);

        if (m == 0) {
            pos += 16;
            continue;
        }
        pos += (uint32_t)__builtin_ctz(m);
        if (b[pos] != '\t')
            return pos;
        pos++;
    }
    if (pos < stop && stop >= 16) {
        __m128i v =
            _mm_loadu_si128((const __m128i *)(const void *)(b + stop - 16));
        __m128i ctl = _mm_andnot_si128(_mm_cmpeq_epi8(v, _mm_set1_epi8('\t')),
                                       _mm_cmpeq_epi8(_mm_min_epu8(v, c1f), v));
        __m128i bad = _mm_or_si128(ctl, _mm_cmpeq_epi8(v, c7f));
        /* Lane j holds byte stop - 16 + j; pos is lane 16 - (stop - pos). */
        unsigned m =
            (unsigned)_mm_movemask_epi8(bad) & (0xffffu << (16 - (stop - pos)));

        return m == 0 ? stop : stop - 16 + (uint32_t)__builtin_ctz(m);
    }
#endif
    return scan(b, pos, stop, T_VALUE);
}

/* Request targets: the first byte outside 0x21-0x7E. */
static inline uint32_t scan_target(const unsigned char *b, uint32_t pos,
                                   uint32_t stop)
{
#if defined(__SSE2__)
    const __m128i c21 = _mm_set1_epi8(0x21);
    const __m128i c5d = _mm_set1_epi8(0x5d);

    while (stop - pos >= 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)(const void *)(b + pos));
        /* v - 0x21 <= 0x5d (unsigned) exactly for 0x21..0x7e. */
        __m128i t = _mm_sub_epi8(v, c21);
        __m128i ok = _mm_cmpeq_epi8(_mm_max_epu8(t, c5d), c5d);
        unsigned m = (unsigned)_mm_movemask_epi8(ok) ^ 0xffffu;

        if (m != 0)
            return pos + (uint32_t)__builtin_ctz(m);
        pos += 16;
    }
#endif
    return scan(b, pos, stop, T_TARGET);
}

/*
 * Compares n bytes with a lowercase literal made of letters, digits and
 * '-', four or eight bytes at a time. The OR with 0x20 folds case; on the bytes
 * it is used on (tchars, field values) it cannot create a false match: only
 * letters fold onto letters, and what folds onto '-' or a digit is a
 * control byte, which never gets this far.
 */
static inline uint64_t load64(const void *s)
{
    uint64_t x;

    memcpy(&x, s, sizeof(x));
    return x;
}

static inline uint32_t load32(const void *s)
{
    uint32_t x;

    memcpy(&x, s, sizeof(x));
    return x;
}

/* The bit of the 8-byte word "HTTP/1.x" that tells '0' from '1' in x, in
 * the host's byte order. */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
#define VERSION_BIT 1ull
#else
#define VERSION_BIT (1ull << 56)
#endif

static inline bool ieq_lower(const unsigned char *s, const char *lit,
                             uint32_t n)
{
    uint32_t i = 0;

    if (n < 4) {
        for (; i < n; i++)
            if ((s[i] | 0x20) != (unsigned char)lit[i])
                return false;
        return true;
    }
    /* The tail is one load that overlaps what was compared already: n is
     * a constant at most call sites, so this is two or three compares. */
    if (n < 8)
        return (load32(s) | 0x20202020u) == load32(lit) &&
               (load32(s + n - 4) | 0x20202020u) == load32(lit + n - 4);
    for (; i + 8 <= n; i += 8)
        if ((load64(s + i) | 0x2020202020202020ull) != load64(lit + i))
            return false;
    return i == n ||
           (load64(s + n - 8) | 0x2020202020202020ull) == load64(lit + n - 8);
}

/*
 * Field names and methods: SSE2 skips runs of letters, digits and '-' (all
 * that common names contain); any other byte goes to the table, which
 * knows the rest of tchar.
 */
static inline uint32_t scan_token(const unsigned char *b, uint32_t pos,
                                  uint32_t stop)
{
#if defined(__SSE2__)
    const __m128i c20 = _mm_set1_epi8(0x20);
    const __m128i ca = _mm_set1_epi8('a');
    const __m128i c25 = _mm_set1_epi8(25);
    const __m128i c0 = _mm_set1_epi8('0');
    const __m128i c9 = _mm_set1_epi8(9);
    const __m128i dash = _mm_set1_epi8('-');

    while (stop - pos >= 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)(const void *)(b + pos));
        /* (v | 0x20) - 'a' <= 25 exactly for ASCII letters. */
        __m128i l = _mm_sub_epi8(_mm_or_si128(v, c20), ca);
        __m128i d = _mm_sub_epi8(v, c0);
        __m128i ok =
            _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(_mm_max_epu8(l, c25), c25),
                                      _mm_cmpeq_epi8(_mm_max_epu8(d, c9), c9)),
                         _mm_cmpeq_epi8(v, dash));
        unsigned m = (unsigned)_mm_movemask_epi8(ok) ^ 0xffffu;

        if (m == 0) {
            pos += 16;
            continue;
        }
        pos += (uint32_t)__builtin_ctz(m);
        if (!(ctab[b[pos]] & T_TOKEN))
            return pos;
        pos++;
    }
#endif
    return scan(b, pos, stop, T_TOKEN);
}

/* The few field names the parser acts on, by length first: the common
 * case (any other name) costs one switch. */
static uint32_t classify_name(const unsigned char *s, uint32_t n)
{
    switch (n) {
    case 4: return ieq_lower(s, "host", 4) ? H_HOST : H_OTHER;
    case 6:
        if (ieq_lower(s, "expect", 6))
            return H_EXPECT;
        return ieq_lower(s, "accept", 6) ? H_ACCEPT : H_OTHER;
    case 7: return ieq_lower(s, "upgrade", 7) ? H_UPGRADE : H_OTHER;
    case 10: return ieq_lower(s, "connection", 10) ? H_CONNECTION : H_OTHER;
    case 14:
        return ieq_lower(s, "content-length", 14) ? H_CONTENT_LENGTH : H_OTHER;
    case 17:
        return ieq_lower(s, "transfer-encoding", 17) ? H_TRANSFER_ENCODING
                                                     : H_OTHER;
    default: return H_OTHER;
    }
}

static bool is_alpha(unsigned char c)
{
    return (unsigned char)((c | 0x20) - 'a') < 26;
}

static bool is_digit(unsigned char c)
{
    return (unsigned char)(c - '0') < 10;
}

static bool is_ows(unsigned char c)
{
    return c == ' ' || c == '\t';
}

/* "%" HEXDIG HEXDIG at s[i], within s[0..n). */
static bool pct_at(const unsigned char *s, uint32_t i, uint32_t n)
{
    return s[i] == '%' && n - i >= 3 && (ctab[s[i + 1]] & T_HEX) &&
           (ctab[s[i + 2]] & T_HEX);
}

/* dec-octet "." dec-octet "." dec-octet "." dec-octet, each 0-255 without
 * leading zeros (RFC 3986 §3.2.2), filling s[0..n). */
static bool ipv4_ok(const unsigned char *s, uint32_t n)
{
    uint32_t i = 0, start, v;

    for (int part = 0; part < 4; part++) {
        if (part > 0 && (i == n || s[i++] != '.'))
            return false;
        start = i;
        v = 0;
        while (i < n && i - start < 3 && is_digit(s[i]))
            v = v * 10 + (uint32_t)(s[i++] - '0');
        if (i == start || v > 255 || (s[start] == '0' && i - start > 1))
            return false;
    }
    return i == n;
}

/*
 * IPv6address (RFC 3986 §3.2.2) filling s[0..n): eight h16 groups, or
 * fewer with one "::" standing for at least one more; the last two groups
 * may be written as an IPv4 address. No zone identifier.
 */
static bool ipv6_ok(const unsigned char *s, uint32_t n)
{
    uint32_t i = 0, h, groups = 0;
    bool elided = false;

    if (n >= 2 && s[0] == ':' && s[1] == ':') {
        elided = true;
        i = 2;
    }
    while (i < n) {
        for (h = i; h < n && h - i < 5 && (ctab[s[h]] & T_HEX); h++)
            ;
        if (h < n && s[h] == '.') {
            /* ls32 as an IPv4 address: it ends the literal. */
            if (!ipv4_ok(s + i, n - i))
                return false;
            groups += 2;
            break;
        }
        if (h == i || h - i > 4)
            return false;
        groups++;
        i = h;
        if (i == n)
            break;
        if (s[i++] != ':' || i == n)
            return false; /* not a separator, or a single trailing ':' */
        if (s[i] == ':') {
            if (elided)
                return false;
            elided = true;
            i++;
        }
    }
    return elided ? groups <= 7 : groups == 8;
}

/* IPvFuture = "v" 1*HEXDIG "." 1*( unreserved / sub-delims / ":" ),
 * filling s[0..n). */
static bool ipvfuture_ok(const unsigned char *s, uint32_t n)
{
    uint32_t i = 1;

    if (n < 4 || (s[0] | 0x20) != 'v')
        return false;
    while (i < n && (ctab[s[i]] & T_HEX))
        i++;
    if (i == 1 || i + 1 >= n || s[i] != '.')
        return false;
    for (i++; i < n; i++)
        if (!(ctab[s[i]] & T_HOST) && s[i] != ':')
            return false;
    return true;
}

/*
 * The length of the uri-host that starts s[0..n) (RFC 3986 §3.2.2), 0 when
 * there is none: an IP-literal in brackets, or a non-empty reg-name, which
 * covers IPv4address. A comma is refused although reg-name allows it: in
 * a field value it is what two Host lines joined into a list look like
 * (RFC 9110 §5.3), so two recipients could read two hosts into it, and no
 * DNS name holds one.
 */
static uint32_t uri_host(const unsigned char *s, uint32_t n)
{
    uint32_t i = 0;

    if (n > 0 && s[0] == '[') {
        while (i < n && s[i] != ']')
            i++;
        if (i == n || !(ipv6_ok(s + 1, i - 1) || ipvfuture_ok(s + 1, i - 1)))
            return 0;
        return i + 1;
    }
    for (;;) {
        while (i < n && (ctab[s[i]] & T_HOST))
            i++;
        if (i == n || !pct_at(s, i, n))
            return i;
        i += 3;
    }
}

/*
 * uri-host [":" port] filling s[0..n) (the Host field, RFC 9110 §7.2, and
 * the authority of a target). port = *DIGIT, so "host:" is valid; CONNECT's
 * authority-form needs a port of 1 to 5 digits (`port_required`).
 */
static bool host_port_ok(const unsigned char *s, uint32_t n, bool port_required)
{
    uint32_t h = uri_host(s, n);

    if (h == 0)
        return false;
    if (h == n)
        return !port_required;
    if (s[h] != ':')
        return false;
    for (uint32_t i = h + 1; i < n; i++)
        if (!is_digit(s[i]))
            return false;
    return !port_required || (n - h - 1 >= 1 && n - h - 1 <= 5);
}

/* userinfo = *( unreserved / pct-encoded / sub-delims / ":" ). */
static bool userinfo_ok(const unsigned char *s, uint32_t n)
{
    uint32_t i = 0;

    while (i < n) {
        if ((ctab[s[i]] & T_HOST) || s[i] == ':' || s[i] == ',')
            i++;
        else if (pct_at(s, i, n))
            i += 3;
        else
            return false;
    }
    return true;
}

/*
 * absolute-form: scheme "://" authority, then anything visible (checked
 * already). The authority ends at the first "/", "?" or "#" and is
 * [userinfo "@"] uri-host [":" port] with a non-empty host (RFC 9110
 * §4.2.1): a malformed authority is as ambiguous in the target as in Host.
 */
static bool absolute_form(const unsigned char *t, uint32_t n)
{
    uint32_t i = 1, a, e, at;

    if (!is_alpha(t[0]))
        return false;
    while (i < n && (is_alpha(t[i]) || is_digit(t[i]) || t[i] == '+' ||
                     t[i] == '-' || t[i] == '.'))
        i++;
    if (n - i < 4 || memcmp(t + i, "://", 3) != 0)
        return false;
    a = i + 3;
    for (e = a; e < n && t[e] != '/' && t[e] != '?' && t[e] != '#'; e++)
        ;
    for (at = a; at < e && t[at] != '@'; at++)
        ;
    if (at < e) {
        if (!userinfo_ok(t + a, at - a))
            return false;
        a = at + 1;
    }
    return host_port_ok(t + a, e - a, false);
}

/* authority-form (CONNECT only): uri-host ":" port, nothing else. */
static bool authority_form(const unsigned char *t, uint32_t n)
{
    return host_port_ok(t, n, true);
}

/*
 * The usual Host in one SSE2 pass: up to 16 letters, digits, '-' and '.',
 * then optionally ':' and digits. True only for such a value, which
 * host_port_ok would accept too; false sends anything else to it. The one
 * load is of the 16 bytes that end with the value's last byte, which the
 * message holds when the value ends at offset 16 or later (`off` + n: it
 * always does, the request line alone is longer); the lanes before the
 * value are masked off. This keeps the check of every request's Host to a
 * few instructions (bench/README.md, instr/req).
 *
 * The bytes are field-value bytes (HTAB, SP, VCHAR, obs-text), so OR 0x20
 * folds exactly the upper-case letters onto the set: what else folds into
 * '-' .. '9' or 'a' .. 'z' is a control byte other than HTAB, or '/',
 * which is taken out.
 */
static inline bool host_usual(const unsigned char *v, uint32_t n, uint32_t off)
{
#if defined(__SSE2__)
    __m128i x, y, lo, al, ok;
    unsigned want, bad, digits, colon, k;

    if (n > 16 || off + n < 16)
        return false;
    x = _mm_loadu_si128((const __m128i *)(const void *)(v + n - 16));
    y = _mm_or_si128(x, _mm_set1_epi8(0x20));
    /* '-' .. '9' is 0x2d .. 0x39, 'a' .. 'z' 0x61 .. 0x7a. */
    lo = _mm_sub_epi8(y, _mm_set1_epi8('-'));
    lo = _mm_cmpeq_epi8(_mm_max_epu8(lo, _mm_set1_epi8(12)), _mm_set1_epi8(12));
    al = _mm_sub_epi8(y, _mm_set1_epi8('a'));
    al = _mm_cmpeq_epi8(_mm_max_epu8(al, _mm_set1_epi8(25)), _mm_set1_epi8(25));
    ok = _mm_andnot_si128(_mm_cmpeq_epi8(x, _mm_set1_epi8('/')),
                          _mm_or_si128(lo, al));
    /* Lane j holds byte j - (16 - n) of the value. */
    want = 0xffffu << (16 - n) & 0xffffu;
    bad = want & ~(unsigned)_mm_movemask_epi8(ok);
    if (bad == 0)
        return true;
    /* The first other byte must be a ':' after at least one host byte,
     * and every byte after it a digit. */
    k = (unsigned)__builtin_ctz(bad);
    colon = (unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(x, _mm_set1_epi8(':')));
    digits = (unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(
        _mm_max_epu8(_mm_sub_epi8(x, _mm_set1_epi8('0')), _mm_set1_epi8(9)),
        _mm_set1_epi8(9)));
    return k > 16 - n && (colon >> k & 1) &&
           (want & ~((2u << k) - 1) & ~digits) == 0;
#else
    (void)v;
    (void)n;
    (void)off;
    return false;
#endif
}

/*
 * Host (RFC 9112 §3.2, RFC 9110 §7.2): uri-host [":" port], in any HTTP
 * version, else 400 ("a Host header field with an invalid field value").
 * Empty is what a client sends when the target URI has no authority: with
 * absolute-form or authority-form it contradicts the request line, 400. A
 * non-empty Host that differs from the target's authority is not refused:
 * the target wins (RFC 9112 §3.2.2). The number of Host lines is the
 * server's rule (parser.h).
 */
static int host_field(latch_parser *p, const unsigned char *b,
                      const unsigned char *v, uint32_t n)
{
    unsigned char t0;

    if (n == 0) {
        t0 = b[p->target.off];
        if (t0 != '/' && t0 != '*')
            return fail(p, 400, "empty Host with an authority in the target");
        return 0;
    }
    if (!host_usual(v, n, (uint32_t)(v - b)) && !host_port_ok(v, n, false))
        return fail(p, 400, "invalid Host (not uri-host [\":\" port])");
    return 0;
}

/*
 * Checks the form of the complete target. `*` is accepted with any method:
 * refusing it with methods other than OPTIONS is the server's rule, like
 * Host (see parser.h).
 */
static bool target_ok(const latch_parser *p, const unsigned char *t, uint32_t n)
{
    if (p->is_connect)
        return authority_form(t, n);
    if (t[0] == '/')
        return true;
    if (t[0] == '*')
        return n == 1;
    return absolute_form(t, n);
}

/* Content-Length: 1*DIGIT, at most 18 significant digits (< 2^63). */
static int content_length(latch_parser *p, const unsigned char *v, uint32_t n)
{
    uint64_t x = 0;
    uint32_t sig = 0;

    if (n == 0)
        return fail(p, 400, "invalid Content-Length (empty)");
    for (uint32_t i = 0; i < n; i++) {
        if (!is_digit(v[i]))
            return fail(p, 400, "invalid Content-Length");
        if (x == 0 && v[i] == '0')
            continue; /* leading zero */
        if (++sig > 18)
            return fail(p, 400, "Content-Length overflow");
        x = x * 10 + (uint64_t)(v[i] - '0');
    }
    p->content_length = x;
    return 0;
}

/*
 * Transfer-Encoding: 1#token with OWS around the commas, nothing else (no
 * parameters, quotes or empty elements), "chunked" exactly once and last.
 * Other codings make a valid list that latch cannot decode: 501, answered
 * at the end of the head so that a 400 found later still wins.
 */
static int transfer_encoding(latch_parser *p, const unsigned char *v,
                             uint32_t n)
{
    uint32_t i = 0, start;
    bool chunked = false, last_chunked = false;

    for (;;) {
        start = i;
        while (i < n && (ctab[v[i]] & T_TOKEN))
            i++;
        if (i == start)
            return fail(p, 400, "invalid Transfer-Encoding list");
        if (i - start == 7 && ieq_lower(v + start, "chunked", 7)) {
            if (chunked)
                return fail(p, 400, "chunked applied twice");
            chunked = last_chunked = true;
        } else {
            if (chunked)
                return fail(p, 400, "chunked is not the final coding");
            p->flags |= F_TE_UNSUPPORTED;
            last_chunked = false;
        }
        while (i < n && is_ows(v[i]))
            i++;
        if (i == n)
            break;
        if (v[i] != ',')
            return fail(p, 400, "invalid Transfer-Encoding list");
        i++;
        while (i < n && is_ows(v[i]))
            i++;
    }
    if (!last_chunked)
        return fail(p, 400, "chunked is not the final transfer coding");
    return 0;
}

/*
 * Connection: the tokens close, keep-alive and upgrade, case-insensitive.
 * Other elements (hop-by-hop field names) and empty elements are ignored,
 * as RFC 9110 §5.6.1 asks of recipients: they do not affect framing.
 */
static void connection(latch_parser *p, const unsigned char *v, uint32_t n)
{
    uint32_t i = 0, start, end;

    while (i < n) {
        while (i < n && (v[i] == ',' || is_ows(v[i])))
            i++;
        start = i;
        while (i < n && v[i] != ',')
            i++;
        end = i;
        while (end > start && is_ows(v[end - 1]))
            end--;
        if (end - start == 5 && ieq_lower(v + start, "close", 5))
            p->flags |= F_CONN_CLOSE;
        else if (end - start == 10 && ieq_lower(v + start, "keep-alive", 10))
            p->flags |= F_CONN_KEEP;
        else if (end - start == 7 && ieq_lower(v + start, "upgrade", 7))
            p->flags |= F_CONN_UPGRADE;
    }
}

/* An Accept value naming text/event-stream (any case, anywhere in the
 * list: what an EventSource sends is exactly that type). */
static bool names_event_stream(const unsigned char *v, uint32_t n)
{
    uint32_t i;

    for (i = 0; i + 17 <= n; i++)
        if ((v[i] | 0x20) == 't' && ieq_lower(v + i, "text/event-stream", 17))
            return true;
    return false;
}

/*
 * Acts on a complete field line of one of the H_* kinds. The framing
 * conflicts are refused here, at the line that creates them, not at the
 * end of the head: nothing after such a line can make it valid.
 */
static int field_semantics(latch_parser *p, const unsigned char *b,
                           const latch_field *f, uint32_t kind)
{
    const unsigned char *v = b + f->value.off;
    uint32_t n = f->value.len;

    if (p->response && (kind == H_HOST || kind == H_EXPECT || kind == H_ACCEPT))
        return 0; /* request fields: nothing to a response's framing */
    switch (kind) {
    case H_HOST: p->host_count++; return host_field(p, b, v, n);
    case H_CONTENT_LENGTH:
        if (p->cl_count++ > 0)
            return fail(p, 400, "more than one Content-Length field line");
        if (p->te_count > 0)
            return fail(p, 400, "both Transfer-Encoding and Content-Length");
        return content_length(p, v, n);
    case H_TRANSFER_ENCODING:
        if (p->version_minor == 0)
            return fail(p, 400, "Transfer-Encoding in HTTP/1.0");
        if (p->te_count++ > 0)
            return fail(p, 400, "more than one Transfer-Encoding field line");
        if (p->cl_count > 0)
            return fail(p, 400, "both Transfer-Encoding and Content-Length");
        return transfer_encoding(p, v, n);
    case H_CONNECTION: connection(p, v, n); return 0;
    case H_UPGRADE: p->flags |= F_UPGRADE_FIELD; return 0;
    case H_EXPECT:
        /* Several Expect lines: anything but 100-continue wins (417). */
        if (n == 12 && ieq_lower(v, "100-continue", 12)) {
            if (p->expect == LATCH_EXPECT_NONE)
                p->expect = LATCH_EXPECT_CONTINUE;
        } else if (n > 0) {
            p->expect = LATCH_EXPECT_OTHER;
        }
        return 0;
    case H_ACCEPT:
        if (names_event_stream(v, n))
            p->event_stream = true;
        return 0;
    default: return 0;
    }
}

/*
 * The final CRLF is in: derive the results and choose the body decoder.
 * The 501 and 413 decided here leave every result set (head_len != 0), so
 * the server can still apply its own head checks (Host) first.
 */
static int finish_response(latch_parser *p, uint32_t f);

static int finish_head(latch_parser *p, uint32_t pos)
{
    uint32_t f = p->flags;

    p->pos = pos;
    p->head_len = pos;
    p->conn_close = (f & F_CONN_CLOSE) != 0;
    if (p->version_minor == 1)
        p->keep_alive = !p->conn_close;
    else
        p->keep_alive = (f & F_CONN_KEEP) && !p->conn_close;
    /* RFC 9110 §7.8 and §10.1.1: in HTTP/1.0 an Upgrade field and a
     * 100-continue expectation must be ignored. */
    if (p->version_minor == 0 && p->expect == LATCH_EXPECT_CONTINUE)
        p->expect = LATCH_EXPECT_NONE;
    p->upgrade =
        p->is_connect || (p->version_minor == 1 && (f & F_UPGRADE_FIELD) &&
                          (f & F_CONN_UPGRADE));
    if (p->response)
        return finish_response(p, f);
    if (p->te_count > 0) {
        p->body_kind = LATCH_BODY_CHUNKED;
        if (f & F_TE_UNSUPPORTED)
            return fail(p, 501, "unsupported transfer coding");
        p->st = B_SIZE_START;
    } else if (p->cl_count > 0) {
        p->body_kind = LATCH_BODY_LENGTH;
        if (p->content_length > p->lim->body)
            return fail(p, 413, "Content-Length above the body limit");
        p->remaining = p->content_length;
        p->st = B_LENGTH;
    } else {
        p->body_kind = LATCH_BODY_NONE;
        p->st = B_NONE;
    }
    return LATCH_PARSE_DONE;
}

/*
 * A response's framing (RFC 9112 §6.3), once its head is in. What a
 * request may get away with as a 501 is a refusal here: a proxy cannot
 * frame a coding it does not decode, and a 1xx or 204 that claims a body
 * is exactly the disagreement a smuggler needs.
 */
static int finish_response(latch_parser *p, uint32_t f)
{
    uint16_t code = p->code;
    bool bodiless = code < 200 || code == 204;

    if (bodiless && p->te_count > 0)
        return fail(p, 502, "Transfer-Encoding in a 1xx or 204 response");
    if (bodiless && p->cl_count > 0 && p->content_length != 0)
        return fail(p, 502, "Content-Length in a 1xx or 204 response");
    if (p->te_count > 0 && (f & F_TE_UNSUPPORTED))
        return fail(p, 502, "unsupported transfer coding in a response");
    if (bodiless || code == 304 || p->is_head) {
        /* The framing fields of a 304 or a HEAD answer describe the
         * representation, not bytes on this connection. */
        p->body_kind = LATCH_BODY_NONE;
        p->st = B_NONE;
    } else if (p->te_count > 0) {
        p->body_kind = LATCH_BODY_CHUNKED;
        p->st = B_SIZE_START;
    } else if (p->cl_count > 0) {
        if (p->content_length > p->lim->body)
            return fail(p, 502, "Content-Length above the body limit");
        p->body_kind = LATCH_BODY_LENGTH;
        p->remaining = p->content_length;
        p->st = B_LENGTH;
    } else {
        p->body_kind = LATCH_BODY_CLOSE;
        p->keep_alive = false;
        p->st = B_CLOSE;
    }
    return LATCH_PARSE_DONE;
}

/* A limit was crossed at `stop` while in state `st`. */
static int fail_limit(latch_parser *p, uint32_t st, uint32_t stop)
{
    if (st <= S_RL_LF)
        return fail(p, 414,
                    p->response ? "status line too long"
                                : "request line too long");
    if (st >= S_NAME && st <= S_VALUE_LF &&
        stop == add_clamp(p->line_start, p->lim->field_line) &&
        stop != add_clamp(p->mark2, p->lim->head))
        return fail(p, 431, "field line too long");
    return fail(p, 431, "header section too long");
}

void latch__parser_init(latch_parser *p, const latch_parse_limits *lim,
                        latch_field *fields, uint32_t fields_cap)
{
    p->lim = lim != NULL ? lim : &latch__parse_limits_default;
    p->fields = fields;
    p->fields_cap = fields_cap;
    latch__parser_reset(p);
}

void latch__parser_reset(latch_parser *p)
{
    const latch_parse_limits *lim = p->lim;
    latch_field *fields = p->fields;
    uint32_t cap = p->fields_cap;

    memset(p, 0, sizeof(*p));
    p->lim = lim;
    p->fields = fields;
    p->fields_cap = cap;
}

void latch__parser_reset_response(latch_parser *p, bool head_request)
{
    latch__parser_reset(p);
    p->response = true;
    p->is_head = head_request;
    p->st = S_RS_START;
}

/*
 * Moves to `state` with the byte at pos in `c`, or stops for more input.
 * The cases below are ordered so that the usual path falls from one state
 * into the next (or jumps back with goto) without going through the
 * switch again: a request costs no indirect branch per line.
 */
#define NEXT(state)                                                            \
    do {                                                                       \
        st = (state);                                                          \
        if (pos >= stop)                                                       \
            goto starved;                                                      \
        c = b[pos];                                                            \
    } while (0)

int latch__parse_head(latch_parser *p, const char *buf, size_t len)
{
    const unsigned char *b = (const unsigned char *)buf;
    uint32_t n = len < UINT32_MAX ? (uint32_t)len : UINT32_MAX;
    uint32_t st = p->st, pos = p->pos, stop, hstop = 0, i, kind, vs, ve;
    uint32_t fl = p->lim->field_line;
    /* fields_cap >= lim->fields is the caller's promise; never trust it
     * with a write. */
    uint32_t max_fields = min32(p->lim->fields, p->fields_cap);
    latch_field *f;
    unsigned char c;

    if (st >= S_ERROR)
        return st == S_ERROR ? LATCH_PARSE_ERROR : LATCH_PARSE_DONE;
    /*
     * `stop` is the end of the input or the first byte that would break
     * the current line's limit, whichever comes first; it is recomputed
     * at each line boundary. The scans never look past it, so no limit
     * needs a check per byte, and running into it is the only way to
     * leave the loop without an answer (see `starved`).
     */
    stop = min32(n, limit_end(p, st));
    /* The header section's own stop, for the lines to come. */
    if (st >= S_LINE_START)
        hstop = min32(n, add_clamp(p->mark2, p->lim->head));
    NEXT(st);

    switch (st) {
    case S_START_LF:
        if (c != '\n')
            return fail(p, 400, "bare CR before request-line");
        pos++;
        p->skipped = pos;
        NEXT(S_START);
        /* fall through */
    case S_START:
    start:
        /* RFC 9112 §2.2: skip at least one empty line before the request
         * line; they count against its limit. */
        if (c == '\r') {
            pos++;
            NEXT(S_START_LF);
            if (c != '\n')
                return fail(p, 400, "bare CR before request-line");
            pos++;
            p->skipped = pos;
            NEXT(S_START);
            goto start;
        }
        if (!(ctab[c] & T_TOKEN))
            return fail(p, 400,
                        c == '\n' ? "bare LF before request-line"
                                  : "invalid method");
        p->method.off = pos;
        st = S_METHOD;
        /* fall through */
    case S_METHOD:
        pos = scan_token(b, pos, stop);
        NEXT(S_METHOD);
        if (c != ' ')
            return fail(p, 400,
                        c == '\r' || c == '\n'
                            ? "request-line must be method SP target SP "
                              "version"
                            : "invalid method");
        p->method.len = pos - p->method.off;
        /* Methods are case-sensitive (RFC 9110 §9.1). */
        if (p->method.len == 7 && memcmp(b + p->method.off, "CONNECT", 7) == 0)
            p->is_connect = true;
        else if (p->method.len == 4 &&
                 memcmp(b + p->method.off, "HEAD", 4) == 0)
            p->is_head = true;
        pos++;
        NEXT(S_TARGET_START);
        /* fall through */
    case S_TARGET_START:
        /*
         * The first byte already tells the form apart: refuse here what no
         * form can start with, the rest at the SP.
         */
        if (!(ctab[c] & T_TARGET))
            return fail(p, 400,
                        c == ' ' ? "empty request-target"
                        : c == '\r' || c == '\n'
                            ? "request-line must be method SP target SP "
                              "version"
                            : "invalid request-target");
        if (p->is_connect ? (c == '/' || c == '*')
                          : (c != '/' && c != '*' && !is_alpha(c)))
            return fail(p, 400, "invalid request-target form");
        p->target.off = pos;
        st = S_TARGET;
        /* fall through */
    case S_TARGET:
        pos = scan_target(b, pos, stop);
        NEXT(S_TARGET);
        if (c != ' ')
            return fail(p, 400,
                        c == '\r' || c == '\n'
                            ? "request-line must be method SP target SP "
                              "version"
                            : "invalid request-target");
        p->target.len = pos - p->target.off;
        if (!target_ok(p, b + p->target.off, p->target.len))
            return fail(p, 400, "invalid request-target form");
        pos++;
        p->mark = pos;
        /* The usual versions: one 8-byte compare (the 1.0 and 1.1 words
         * differ in one bit, which is the minor version). */
        if (stop - pos >= 9 && b[pos + 8] == '\r' &&
            (load64(b + pos) | VERSION_BIT) == load64("HTTP/1.1")) {
            p->version_minor = (uint8_t)(b[pos + 7] & 1);
            pos += 9;
            NEXT(S_RL_LF);
            goto rl_lf;
        }
        NEXT(S_VERSION);
        /* fall through */
    case S_VERSION:
    version:
        i = pos - p->mark;
        if (i < 5) {
            if (c != (unsigned char)"HTTP/"[i])
                return fail(p, 400, "invalid HTTP-version");
        } else if (i == 5 || i == 7) {
            if (!is_digit(c))
                return fail(p, 400, "invalid HTTP-version");
            /*
             * "HTTP/" DIGIT "." DIGIT with a major other than 1 names a
             * protocol we do not speak whatever follows: 505 now, before
             * the line ends (expected.tsv: "GET / HTTP/5.6" at EOF).
             */
            if (i == 7 && b[pos - 2] != '1')
                return fail(p, 505, "unsupported HTTP major version");
        } else if (i == 6) {
            /* "HTTP/2", "HTTP/3": a bare major version other than 1 names
             * a protocol we do not speak (505); "HTTP/1" is malformed. */
            if (c == '\r' && b[pos - 1] != '1')
                return fail(p, 505, "unsupported HTTP major version");
            if (c != '.')
                return fail(p, 400, "invalid HTTP-version");
        } else {
            /*
             * "HTTP/1." DIGIT is complete only at the CR: a third digit
             * (HTTP/1.32) makes it malformed, 400. 1.2 to 1.9 are read as
             * 1.1: a recipient processes a higher minor version of a
             * major version it speaks as the highest minor it implements
             * (RFC 9110 §6.2), so the request gets 1.1's rules and the
             * response says HTTP/1.1.
             */
            if (c != '\r')
                return fail(p, 400,
                            c == '\n' ? "bare LF in request-line"
                                      : "invalid HTTP-version");
            p->version_minor = b[pos - 1] != '0';
            pos++;
            NEXT(S_RL_LF);
            goto rl_lf;
        }
        pos++;
        NEXT(S_VERSION);
        goto version;
    case S_RS_START_LF:
        if (c != '\n')
            return fail(p, 400, "bare CR before status-line");
        pos++;
        p->skipped = pos;
        NEXT(S_RS_START);
        /* fall through */
    case S_RS_START:
    rs_start:
        /* Blank lines before a status line are skipped, as before a
         * request line. */
        if (c == '\r') {
            pos++;
            NEXT(S_RS_START_LF);
            if (c != '\n')
                return fail(p, 400, "bare CR before status-line");
            pos++;
            p->skipped = pos;
            NEXT(S_RS_START);
            goto rs_start;
        }
        p->mark = pos;
        st = S_RS_VERSION;
        /* fall through */
    case S_RS_VERSION:
    rs_version:
        /* "HTTP/1." DIGIT SP, nothing else: no HTTP/0.9, no RTSP or ICE,
         * no second digit, no tab for the space. */
        i = pos - p->mark;
        if (i < 7) {
            if (c != (unsigned char)"HTTP/1."[i])
                return fail(p, i == 5 && is_digit(c) ? 505 : 400,
                            "invalid HTTP-version in status-line");
        } else if (i == 7) {
            if (!is_digit(c))
                return fail(p, 400, "invalid HTTP-version in status-line");
            p->version_minor = c != '0';
        } else {
            if (c != ' ')
                return fail(p, 400, "status-line must be version SP code");
            pos++;
            p->mark = pos;
            NEXT(S_RS_CODE);
            goto rs_code;
        }
        pos++;
        NEXT(S_RS_VERSION);
        goto rs_version;
    case S_RS_CODE:
    rs_code:
        i = pos - p->mark;
        if (i < 3) {
            if (!is_digit(c))
                return fail(p, 400, "invalid status code");
            p->code = (uint16_t)(p->code * 10 + (c - '0'));
            pos++;
            NEXT(S_RS_CODE);
            goto rs_code;
        }
        if (p->code < 100 || p->code > 599)
            return fail(p, 400, "status code out of range");
        p->target.off = pos;
        if (c == '\r') {
            /* No reason phrase and no SP before it: read as empty. */
            pos++;
            NEXT(S_RL_LF);
            goto rl_lf;
        }
        if (c != ' ')
            return fail(p, 400, "invalid status code");
        pos++;
        p->target.off = pos;
        NEXT(S_RS_REASON);
        /* fall through */
    case S_RS_REASON:
        /* reason-phrase: HTAB, SP, VCHAR, obs-text; never read. */
        pos = scan_value(b, pos, stop);
        NEXT(S_RS_REASON);
        if (c != '\r')
            return fail(p, 400,
                        c == '\n' ? "bare LF in status-line"
                                  : "invalid octet in reason phrase");
        p->target.len = pos - p->target.off;
        pos++;
        NEXT(S_RL_LF);
        /* fall through */
    case S_RL_LF:
    rl_lf:
        if (c != '\n')
            return fail(p, 400,
                        p->response ? "bare CR in status-line"
                                    : "bare CR in request-line");
        pos++;
        p->mark2 = pos; /* the header section starts here */
        p->line_start = pos;
        stop = hstop = min32(n, add_clamp(pos, p->lim->head));
        NEXT(S_LINE_START);
        /* fall through */
    case S_LINE_START:
    line_start:
        if (c == '\r') {
            pos++;
            NEXT(S_HEAD_LF);
            goto head_lf;
        }
        if (!(ctab[c] & T_TOKEN))
            return fail(p, 400,
                        is_ows(c)   ? "line starting with whitespace "
                                      "(obs-fold or SP after start line)"
                        : c == '\n' ? "bare LF in header"
                                    : "invalid field-name");
        /* A line that starts with a tchar is a field line: one too many is
         * conclusive here, at its first byte. */
        if (p->nfields >= max_fields)
            return fail(p, 431, "too many header fields");
        p->fields[p->nfields].name.off = pos;
        st = S_NAME;
        stop = min32(hstop, add_clamp(pos, fl));
        /* fall through */
    case S_NAME:
        f = &p->fields[p->nfields];
        pos = scan_token(b, pos, stop);
        NEXT(S_NAME);
        /* Nothing may sit between name and colon (RFC 9112 §5.1):
         * "Content-Length :" is how one server's field becomes another's
         * garbage. */
        if (c != ':')
            return fail(p, 400,
                        c == '\r'   ? "field line without colon"
                        : c == '\n' ? "bare LF in header"
                                    : "invalid field-name");
        f->name.len = pos - f->name.off;
        p->flags = (p->flags & ~(uint32_t)F_KIND) |
                   classify_name(b + f->name.off, f->name.len);
        pos++;
        f->value.off = pos;
        st = S_VALUE;
        /* fall through */
    case S_VALUE:
        /* Leading OWS is part of the run; trimmed at the line end. */
        pos = scan_value(b, pos, stop);
        NEXT(S_VALUE);
        if (c != '\r')
            return fail(p, 400,
                        c == '\n' ? "bare LF in header"
                                  : "invalid octet in field value");
        pos++;
        NEXT(S_VALUE_LF);
        /* fall through */
    case S_VALUE_LF:
        if (c != '\n')
            return fail(p, 400, "bare CR in header");
        /* Trim OWS by looking back: the line is still in buf. */
        f = &p->fields[p->nfields];
        vs = f->value.off;
        ve = pos - 1;
        while (vs < ve && is_ows(b[vs]))
            vs++;
        while (ve > vs && is_ows(b[ve - 1]))
            ve--;
        f->value.off = vs;
        f->value.len = ve - vs;
        p->nfields++;
        kind = p->flags & F_KIND;
        if (kind != H_OTHER && field_semantics(p, b, f, kind) < 0)
            return LATCH_PARSE_ERROR;
        pos++;
        p->line_start = pos;
        stop = hstop;
        NEXT(S_LINE_START);
        goto line_start;
    case S_HEAD_LF:
    head_lf:
        if (c != '\n')
            return fail(p, 400, "bare CR in header");
        return finish_head(p, pos + 1);
    default: return fail(p, 500, "parser state corrupt");
    }

starved:
    /*
     * Out of bytes. When the scan stopped at a limit rather than at the
     * end of the input, the byte at `stop` exists and belongs to the line
     * that is too long: that is conclusive.
     */
    if (stop < n)
        return fail_limit(p, st, stop);
    p->st = st;
    p->pos = pos;
    return LATCH_PARSE_AGAIN;
}

#undef NEXT

/* One byte of a chunk extension, counted against lim->chunk_ext. */
#define EXT_BYTE()                                                             \
    do {                                                                       \
        if (p->ext_bytes >= p->lim->chunk_ext) {                               \
            *consumed = i;                                                     \
            return fail(p, 413, "chunk extensions above the limit");           \
        }                                                                      \
        p->ext_bytes++;                                                        \
    } while (0)

#define BODY_FAIL(status, reason)                                              \
    do {                                                                       \
        *consumed = i;                                                         \
        return fail(p, (status), (reason));                                    \
    } while (0)

/*
 * The chunked decoder: chunk-size lines, extensions, data spans and the
 * trailer section. Input is consumed once, so unlike the head nothing can
 * be re-read: every decision is made on the byte at hand.
 */
static int parse_chunked(latch_parser *p, const unsigned char *b, size_t len,
                         size_t *consumed, const char **data, size_t *dlen)
{
    const latch_parse_limits *lim = p->lim;
    uint32_t st = p->st;
    size_t i = 0;
    unsigned char c;
    unsigned d;

    while (i < len) {
        c = b[i];
        switch (st) {
        case B_SIZE_START:
            if (!(ctab[c] & T_HEX))
                BODY_FAIL(400, "invalid chunk-size");
            p->remaining = 0;
            p->hexdigits = 0;
            st = B_SIZE;
            /* fall through */
        case B_SIZE:
            /*
             * Leading zeros are free; more than 16 significant digits is a
             * malformed size (400, at the 17th), so the size fits in 64
             * bits without an overflow check. Whether it fits the body
             * limit (413) is decided when the size is complete, at CR or
             * ';': until then another digit could still make it
             * malformed, and the answer must not depend on the split.
             */
            if (ctab[c] & T_HEX) {
                d = is_digit(c) ? (unsigned)(c - '0')
                                : (unsigned)((c | 0x20) - 'a' + 10);
                i++;
                if (p->remaining == 0 && d == 0)
                    break; /* leading zero */
                if (++p->hexdigits > 16)
                    BODY_FAIL(400, "chunk-size too long (more than 16 "
                                   "significant hex digits)");
                p->remaining = p->remaining << 4 | d;
                break;
            }
            if (c != '\r' && c != ';')
                BODY_FAIL(400, "invalid character after chunk-size");
            /* The sum stays within lim->body: body_total + remaining
             * cannot wrap. */
            if (p->remaining > lim->body - p->body_total)
                BODY_FAIL(413, "chunked body above the body limit");
            if (c == '\r') {
                st = B_SIZE_LF;
            } else {
                EXT_BYTE();
                st = B_EXT_NAME_START;
            }
            i++;
            break;
        case B_SIZE_LF:
            if (c != '\n')
                BODY_FAIL(400, "bare CR in chunk-size line");
            i++;
            if (p->remaining == 0) {
                st = B_TR_START;
                p->mark = 0;
                break;
            }
            p->body_total += p->remaining;
            st = B_DATA;
            break;
        case B_EXT_NAME_START:
            if (!(ctab[c] & T_TOKEN))
                BODY_FAIL(400, "empty chunk-ext name");
            st = B_EXT_NAME;
            /* fall through */
        case B_EXT_NAME:
        case B_EXT_VAL_TOKEN:
            if (ctab[c] & T_TOKEN) {
                EXT_BYTE();
            } else if (c == '=' && st == B_EXT_NAME) {
                EXT_BYTE();
                st = B_EXT_VAL_START;
            } else if (c == ';') {
                EXT_BYTE();
                st = B_EXT_NAME_START;
            } else if (c == '\r') {
                st = B_SIZE_LF;
            } else {
                BODY_FAIL(400, "invalid chunk-ext");
            }
            i++;
            break;
        case B_EXT_VAL_START:
            if (c == '"')
                st = B_EXT_QUOTED;
            else if (ctab[c] & T_TOKEN)
                st = B_EXT_VAL_TOKEN;
            else
                BODY_FAIL(400, "empty chunk-ext value");
            EXT_BYTE();
            i++;
            break;
        case B_EXT_QUOTED:
            if (c == '"')
                st = B_EXT_AFTER_QUOTE;
            else if (c == '\\')
                st = B_EXT_QUOTED_ESC;
            else if (!(ctab[c] & T_QDTEXT))
                BODY_FAIL(400, "unterminated quoted chunk-ext value");
            EXT_BYTE();
            i++;
            break;
        case B_EXT_QUOTED_ESC:
            /* quoted-pair: "\" (HTAB / SP / VCHAR / obs-text) */
            if (!(ctab[c] & T_VALUE))
                BODY_FAIL(400, "invalid quoted-pair in chunk-ext");
            EXT_BYTE();
            st = B_EXT_QUOTED;
            i++;
            break;
        case B_EXT_AFTER_QUOTE:
            if (c == ';') {
                EXT_BYTE();
                st = B_EXT_NAME_START;
            } else if (c == '\r') {
                st = B_SIZE_LF;
            } else {
                BODY_FAIL(400, "invalid character after chunk-ext value");
            }
            i++;
            break;
        case B_DATA: {
            size_t take = len - i;

            if (take > p->remaining)
                take = (size_t)p->remaining;
            p->remaining -= take;
            if (p->remaining == 0)
                st = B_DATA_CR;
            p->st = st;
            *data = (const char *)b + i;
            *dlen = take;
            *consumed = i + take;
            return LATCH_PARSE_DATA;
        }
        case B_DATA_CR:
        case B_DATA_LF:
            if (c != (st == B_DATA_CR ? '\r' : '\n'))
                BODY_FAIL(400, "chunk data not followed by CRLF");
            st = st == B_DATA_CR ? B_DATA_LF : B_SIZE_START;
            i++;
            break;
        /*
         * The trailer section: the head's grammar and limits, byte by byte
         * (it is rare, and dropped). trailer_bytes counts the section,
         * p->mark is the start of the current line in those units.
         */
        case B_TR_START:
        case B_TR_NAME:
        case B_TR_VALUE:
        case B_TR_LF:
        case B_TR_END_LF:
            if (p->trailer_bytes >= lim->head)
                BODY_FAIL(431, "trailer section too long");
            if (st == B_TR_START) {
                if (c == '\r') {
                    st = B_TR_END_LF;
                } else if (ctab[c] & T_TOKEN) {
                    if (p->trailer_fields >= lim->fields)
                        BODY_FAIL(431, "too many trailer fields");
                    /* Not consumed: B_TR_NAME applies the line limit
                     * to this first byte too. */
                    p->mark = p->trailer_bytes;
                    st = B_TR_NAME;
                    continue;
                } else {
                    BODY_FAIL(400, is_ows(c)   ? "line starting with "
                                                 "whitespace in trailer"
                                   : c == '\n' ? "bare LF in trailer"
                                               : "invalid trailer name");
                }
            } else if (st == B_TR_END_LF) {
                if (c != '\n')
                    BODY_FAIL(400, "bare CR in trailer");
                st = B_DONE;
                p->st = st;
                *consumed = i + 1;
                return LATCH_PARSE_DONE;
            } else {
                if (p->trailer_bytes - p->mark >= lim->field_line)
                    BODY_FAIL(431, "trailer field line too long");
                if (st == B_TR_NAME) {
                    if (c == ':')
                        st = B_TR_VALUE;
                    else if (!(ctab[c] & T_TOKEN))
                        BODY_FAIL(400, c == '\r'   ? "trailer without colon"
                                       : c == '\n' ? "bare LF in trailer"
                                                   : "invalid trailer name");
                } else if (st == B_TR_VALUE) {
                    if (c == '\r')
                        st = B_TR_LF;
                    else if (!(ctab[c] & T_VALUE))
                        BODY_FAIL(400, c == '\n' ? "bare LF in trailer"
                                                 : "invalid octet in trailer");
                } else {
                    if (c != '\n')
                        BODY_FAIL(400, "bare CR in trailer");
                    p->trailer_fields++;
                    st = B_TR_START;
                }
            }
            p->trailer_bytes++;
            i++;
            break;
        default: BODY_FAIL(500, "parser state corrupt");
        }
    }
    p->st = st;
    *consumed = len;
    return LATCH_PARSE_AGAIN;
}

int latch__parse_body(latch_parser *p, const char *in, size_t len,
                      size_t *consumed, const char **data, size_t *dlen)
{
    size_t take;

    *consumed = 0;
    *data = NULL;
    *dlen = 0;
    switch (p->st) {
    case S_ERROR: return LATCH_PARSE_ERROR;
    case B_NONE:
    case B_DONE: p->st = B_DONE; return LATCH_PARSE_DONE;
    case B_CLOSE:
        /* Everything is body until the caller sees the close. */
        if (len == 0)
            return LATCH_PARSE_AGAIN;
        *data = in;
        *dlen = len;
        *consumed = len;
        return LATCH_PARSE_DATA;
    case B_LENGTH:
        /* The span is the caller's own bytes: no copy, and the whole
         * input when it is all body. */
        if (p->remaining == 0) {
            p->st = B_DONE;
            return LATCH_PARSE_DONE;
        }
        if (len == 0)
            return LATCH_PARSE_AGAIN;
        take = len < p->remaining ? len : (size_t)p->remaining;
        p->remaining -= take;
        *data = in;
        *dlen = take;
        *consumed = take;
        return LATCH_PARSE_DATA;
    default:
        if (p->st < S_ERROR)
            return fail(p, 500, "body parsed before the head was complete");
        return parse_chunked(p, (const unsigned char *)in, len, consumed, data,
                             dlen);
    }
}

bool latch__span_ieq(const char *buf, latch_span sp, const char *s)
{
    const unsigned char *a = (const unsigned char *)buf + sp.off;
    size_t n = strlen(s);

    if (n != sp.len)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char x = a[i], y = (unsigned char)s[i];

        if ((unsigned)(x - 'A') < 26u)
            x |= 0x20;
        if ((unsigned)(y - 'A') < 26u)
            y |= 0x20;
        if (x != y)
            return false;
    }
    return true;
}
