/*
 * json.c - the JSON writer (contracts in json.h).
 *
 * Each public call follows one pattern: return the sticky error if there is
 * one; note where the buffer ends; check the structure and write the comma,
 * the token, and for keys the colon; on any failure cut the buffer back to
 * the mark and record the error; only on success update the structural
 * state. So state and buffer always describe the same valid prefix of a
 * document.
 *
 * Strings are scanned once: runs of bytes that need no escape (printable
 * ASCII and valid multi-byte UTF-8 other than U+2028/U+2029) are copied with
 * one append each, and validation happens during the same scan; a failure
 * mid-string is undone by the cut back to the mark.
 *
 * It does not allocate (beyond growing the caller's buffer), does not
 * validate raw values, and does not pretty-print.
 */
#include "json.h"
#include "internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void latch__json_init(latch_json *j, latch_buf *out, size_t limit,
                      int max_depth)
{
    memset(j, 0, sizeof(*j));
    j->out = out;
    j->limit = limit;
    j->max_depth = max_depth == 0 ? LATCH_JSON_DEFAULT_DEPTH : max_depth;
    /* Every call checks err before touching out, so a NULL out is safe. */
    if (out == NULL || max_depth < 0 || max_depth > LATCH_JSON_MAX_DEPTH)
        j->err = LATCH_ERR_INVALID_ARG;
}

/* ------------------------------------------------------------------ */
/* State                                                                */
/* ------------------------------------------------------------------ */

static int put(latch_json *j, const void *p, size_t n)
{
    return latch__buf_append(j->out, p, n, j->limit);
}

/* Undoes the current call's output and makes r the sticky error. */
static int fail(latch_json *j, size_t mark, int r)
{
    j->out->len = mark;
    j->err = r;
    return r;
}

/* Records r unless an earlier error is already kept; returns the kept one. */
static int refuse(latch_json *j, int r)
{
    if (j->err == 0)
        j->err = r;
    return j->err;
}

/* Whether the innermost open container (depth > 0) is an object. */
static bool in_object(const latch_json *j)
{
    int d = j->depth - 1;

    return (j->objects[d / 64] >> (d % 64)) & 1u;
}

/* Checks that a value may come now and writes the comma before it. */
static int value_begin(latch_json *j)
{
    if (j->depth == 0)
        return j->done ? LATCH_ERR_INVALID_ARG : 0;
    if (in_object(j))
        return j->has_key ? 0 : LATCH_ERR_INVALID_ARG;
    return j->first ? 0 : put(j, ",", 1);
}

/* A value (scalar or closed container) was completed at this depth. The
 * flags of the enclosing container need no saving while a child is open:
 * once the child closes, the parent has a member and no pending key. */
static void value_end(latch_json *j)
{
    if (j->depth == 0) {
        j->done = true;
        return;
    }
    j->first = false;
    j->has_key = false;
}

/* Writes one complete scalar token as a value. */
static int scalar(latch_json *j, const char *tok, size_t n)
{
    size_t mark;
    int r;

    if (j->err)
        return j->err;
    mark = j->out->len;
    r = value_begin(j);
    if (r == 0)
        r = put(j, tok, n);
    if (r < 0)
        return fail(j, mark, r);
    value_end(j);
    return 0;
}

/* ------------------------------------------------------------------ */
/* Containers                                                           */
/* ------------------------------------------------------------------ */

static int container_begin(latch_json *j, bool object)
{
    size_t mark;
    uint64_t bit;
    int r, d;

    if (j->err)
        return j->err;
    mark = j->out->len;
    r = value_begin(j);
    if (r == 0 && j->depth >= j->max_depth)
        r = LATCH_ERR_LIMIT;
    if (r == 0)
        r = put(j, object ? "{" : "[", 1);
    if (r < 0)
        return fail(j, mark, r);
    d = j->depth++;
    bit = (uint64_t)1 << (d % 64);
    if (object)
        j->objects[d / 64] |= bit;
    else
        j->objects[d / 64] &= ~bit;
    j->first = true;
    j->has_key = false;
    return 0;
}

static int container_end(latch_json *j, bool object)
{
    size_t mark;
    int r = 0;

    if (j->err)
        return j->err;
    mark = j->out->len;
    if (j->depth == 0 || in_object(j) != object || j->has_key)
        r = LATCH_ERR_INVALID_ARG;
    if (r == 0)
        r = put(j, object ? "}" : "]", 1);
    if (r < 0)
        return fail(j, mark, r);
    j->depth--;
    value_end(j);
    return 0;
}

int latch__json_object_begin(latch_json *j)
{
    return container_begin(j, true);
}

int latch__json_object_end(latch_json *j)
{
    return container_end(j, true);
}

int latch__json_array_begin(latch_json *j)
{
    return container_begin(j, false);
}

int latch__json_array_end(latch_json *j)
{
    return container_end(j, false);
}

/* ------------------------------------------------------------------ */
/* Strings                                                              */
/* ------------------------------------------------------------------ */

/*
 * The length of the valid UTF-8 sequence that starts at s[0] >= 0x80, with
 * n bytes available, or 0 if it is invalid. The ranges are those of Unicode
 * table 3-7 ("well-formed UTF-8 byte sequences"): the narrowed second byte
 * after E0, ED, F0 and F4 excludes overlong forms, the surrogates
 * D800-DFFF and code points above U+10FFFF; C0, C1 and F5-FF never start a
 * sequence, and 80-BF never does either (stray continuation byte).
 */
size_t latch__utf8_seq(const char *str, size_t n)
{
    const unsigned char *s = (const unsigned char *)str;
    unsigned char c = s[0], lo = 0x80, hi = 0xBF;
    size_t len, i;

    if (c >= 0xC2 && c <= 0xDF) {
        len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        if (c == 0xE0)
            lo = 0xA0;
        else if (c == 0xED)
            hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        if (c == 0xF0)
            lo = 0x90;
        else if (c == 0xF4)
            hi = 0x8F;
    } else {
        return 0;
    }
    if (n < len || s[1] < lo || s[1] > hi)
        return 0;
    for (i = 2; i < len; i++)
        if ((s[i] & 0xC0) != 0x80)
            return 0;
    return len;
}

bool latch__utf8_valid(const char *str, size_t n)
{
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0, len;

    while (i < n) {
        if (s[i] < 0x80) {
            i++;
            continue;
        }
        len = latch__utf8_seq((const char *)s + i, n - i);
        if (len == 0)
            return false;
        i += len;
    }
    return true;
}

/* Writes the escape for an ASCII byte below 0x20, '"' or '\\'. */
static int put_escape(latch_json *j, unsigned char c)
{
    static const char hex[] = "0123456789abcdef";
    char e[6] = {'\\', 'u', '0', '0', 0, 0};

    switch (c) {
    case '"': return put(j, "\\\"", 2);
    case '\\': return put(j, "\\\\", 2);
    case '\b': return put(j, "\\b", 2);
    case '\f': return put(j, "\\f", 2);
    case '\n': return put(j, "\\n", 2);
    case '\r': return put(j, "\\r", 2);
    case '\t': return put(j, "\\t", 2);
    default:
        e[4] = hex[c >> 4];
        e[5] = hex[c & 15];
        return put(j, e, 6);
    }
}

/* Writes s[0..n) as a quoted, escaped JSON string. On failure the output
 * may be partial; the caller cuts it back. */
static int put_string(latch_json *j, const char *str, size_t n)
{
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0, run = 0, len;
    unsigned char c;
    int r;

    r = put(j, "\"", 1);
    while (r == 0 && i < n) {
        c = s[i];
        if (c >= 0x20 && c < 0x80 && c != '"' && c != '\\') {
            i++;
            continue;
        }
        if (c >= 0x80) {
            len = latch__utf8_seq((const char *)s + i, n - i);
            if (len == 0)
                return LATCH_ERR_INVALID_CHAR;
            /* U+2028 and U+2029 (E2 80 A8/A9) end a line in JavaScript. */
            if (len != 3 || c != 0xE2 || s[i + 1] != 0x80 ||
                (s[i + 2] != 0xA8 && s[i + 2] != 0xA9)) {
                i += len;
                continue;
            }
            r = put(j, s + run, i - run);
            if (r == 0)
                r = put(j, s[i + 2] == 0xA8 ? "\\u2028" : "\\u2029", 6);
            i += len;
            run = i;
            continue;
        }
        r = put(j, s + run, i - run);
        if (r == 0)
            r = put_escape(j, c);
        run = ++i;
    }
    if (r == 0)
        r = put(j, s + run, i - run);
    if (r == 0)
        r = put(j, "\"", 1);
    return r;
}

int latch__json_key_n(latch_json *j, const char *s, size_t n)
{
    size_t mark;
    int r = 0;

    if (j->err)
        return j->err;
    mark = j->out->len;
    if ((s == NULL && n > 0) || j->depth == 0 || !in_object(j) || j->has_key)
        r = LATCH_ERR_INVALID_ARG;
    if (s == NULL)
        s = ""; /* n is 0: no arithmetic on a null pointer */
    if (r == 0 && !j->first)
        r = put(j, ",", 1);
    if (r == 0)
        r = put_string(j, s, n);
    if (r == 0)
        r = put(j, ":", 1);
    if (r < 0)
        return fail(j, mark, r);
    j->has_key = true;
    return 0;
}

int latch__json_key(latch_json *j, const char *s)
{
    if (s == NULL)
        return refuse(j, LATCH_ERR_INVALID_ARG);
    return latch__json_key_n(j, s, strlen(s));
}

int latch__json_string_n(latch_json *j, const char *s, size_t n)
{
    size_t mark;
    int r = 0;

    if (j->err)
        return j->err;
    mark = j->out->len;
    if (s == NULL && n > 0)
        r = LATCH_ERR_INVALID_ARG;
    if (s == NULL)
        s = ""; /* n is 0: no arithmetic on a null pointer */
    if (r == 0)
        r = value_begin(j);
    if (r == 0)
        r = put_string(j, s, n);
    if (r < 0)
        return fail(j, mark, r);
    value_end(j);
    return 0;
}

int latch__json_string(latch_json *j, const char *s)
{
    if (s == NULL)
        return refuse(j, LATCH_ERR_INVALID_ARG);
    return latch__json_string_n(j, s, strlen(s));
}

/* ------------------------------------------------------------------ */
/* Numbers                                                              */
/* ------------------------------------------------------------------ */

/* Writes v's decimal digits so that they end at `end`; returns the first. */
static char *u64_digits(uint64_t v, char *end)
{
    do {
        *--end = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    return end;
}

int latch__json_uint64(latch_json *j, uint64_t v)
{
    char buf[20]; /* UINT64_MAX has 20 digits */
    char *p = u64_digits(v, buf + sizeof(buf));

    return scalar(j, p, (size_t)(buf + sizeof(buf) - p));
}

int latch__json_int64(latch_json *j, int64_t v)
{
    char buf[21]; /* '-' and the 19 digits of INT64_MIN's magnitude */
    char *p;

    /* Negate in unsigned arithmetic: -INT64_MIN overflows int64_t. */
    p = u64_digits(v < 0 ? 0 - (uint64_t)v : (uint64_t)v, buf + sizeof(buf));
    if (v < 0)
        *--p = '-';
    return scalar(j, p, (size_t)(buf + sizeof(buf) - p));
}

/* Whether v printed with p significant digits reads back as the same bits.
 * Leaves the printout ("-d.ddde+XX", in the current locale) in buf. */
static bool round_trips(double v, int p, char *buf, size_t size)
{
    double back;

    snprintf(buf, size, "%.*e", p - 1, v);
    back = strtod(buf, NULL);
    return memcmp(&back, &v, sizeof(v)) == 0;
}

/*
 * Formats a finite v into out (at least 32 bytes); returns the length.
 *
 * The shortest digits: the smallest precision p in 1..17 whose correctly
 * rounded printout reads back to v (17 always does for a binary64). The
 * search is a bisection because the property is monotonic in p: the
 * p-digit rounding is also a (p+1)-digit decimal, so the nearest
 * (p+1)-digit decimal is at least as close to v.
 *
 * The notation is %g's rule for precision 17 (plain when the decimal
 * exponent is in -4..16), applied to those digits, so the result is never
 * longer than %.17g's own output for v.
 */
static size_t format_double(double v, char *out)
{
    char buf[48], digits[17], exp[3];
    const char *s;
    char *o = out, *e;
    int lo = 1, hi = 17, mid, k = 0, x, i;

    while (lo < hi) {
        mid = lo + (hi - lo) / 2;
        if (round_trips(v, mid, buf, sizeof(buf)))
            hi = mid;
        else
            lo = mid + 1;
    }
    snprintf(buf, sizeof(buf), "%.*e", lo - 1, v);

    /* Read sign, digits and exponent; whatever else comes before the 'e'
     * is the locale's decimal point, which is not copied. */
    s = buf;
    if (*s == '-')
        *o++ = *s++;
    for (; *s != 'e' && *s != '\0'; s++)
        if (*s >= '0' && *s <= '9' && k < (int)sizeof(digits))
            digits[k++] = *s;
    x = (int)strtol(*s == 'e' ? s + 1 : "0", NULL, 10);
    /* At the smallest p the last digit is not 0 (p - 1 digits would have
     * read back too); this only guards a strtod that is not correctly
     * rounded, where the search may stop later. */
    while (k > 1 && digits[k - 1] == '0')
        k--;

    if (x >= -4 && x < 17) {
        if (x < 0) {
            /* 0.000ddd */
            *o++ = '0';
            *o++ = '.';
            for (i = -1; i > x; i--)
                *o++ = '0';
            memcpy(o, digits, (size_t)k);
            o += k;
        } else if (x >= k - 1) {
            /* ddd000: an integral value, no decimal point */
            memcpy(o, digits, (size_t)k);
            o += k;
            for (i = k - 1; i < x; i++)
                *o++ = '0';
        } else {
            /* dd.ddd */
            memcpy(o, digits, (size_t)x + 1);
            o += x + 1;
            *o++ = '.';
            memcpy(o, digits + x + 1, (size_t)(k - x - 1));
            o += k - x - 1;
        }
    } else {
        /* d.ddde+X: JSON allows the sign and needs no padded exponent. */
        *o++ = digits[0];
        if (k > 1) {
            *o++ = '.';
            memcpy(o, digits + 1, (size_t)(k - 1));
            o += k - 1;
        }
        *o++ = 'e';
        *o++ = x < 0 ? '-' : '+';
        e = u64_digits((uint64_t)(x < 0 ? -x : x), exp + sizeof(exp));
        memcpy(o, e, (size_t)(exp + sizeof(exp) - e));
        o += exp + sizeof(exp) - e;
    }
    return (size_t)(o - out);
}

int latch__json_double(latch_json *j, double v)
{
    char buf[32];

    if (j->err)
        return j->err;
    if (!isfinite(v))
        return refuse(j, LATCH_ERR_INVALID_ARG);
    return scalar(j, buf, format_double(v, buf));
}

/* ------------------------------------------------------------------ */
/* Literals, raw values, the end                                        */
/* ------------------------------------------------------------------ */

int latch__json_bool(latch_json *j, bool v)
{
    return v ? scalar(j, "true", 4) : scalar(j, "false", 5);
}

int latch__json_null(latch_json *j)
{
    return scalar(j, "null", 4);
}

int latch__json_raw(latch_json *j, const char *json, size_t n)
{
    if (json == NULL || n == 0)
        return refuse(j, LATCH_ERR_INVALID_ARG);
    return scalar(j, json, n);
}

int latch__json_finish(latch_json *j)
{
    if (j->err)
        return j->err;
    return j->done ? 0 : LATCH_ERR_INVALID_ARG;
}
