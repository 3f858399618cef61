/*
 * json.h - latch's JSON writer: builds one JSON document (RFC 8259) by
 * appending straight into a capped latch_buf, such as a response buffer.
 *
 * The writer checks the structure as it goes (keys only inside objects, one
 * value per key, containers closed in order, one top-level value), escapes
 * strings, refuses invalid UTF-8, and formats numbers itself: integers
 * exactly, doubles in the shortest form that reads back to the same bits.
 * The first error sticks: it is kept in the struct, every later call returns
 * it and writes nothing, and the call that failed leaves no partial token in
 * the buffer. So a caller may make a run of calls and check only the result
 * of latch__json_finish.
 *
 * It is not a parser (request bodies are parsed with jansson), it does no
 * I/O, no pretty printing, and no heap allocation of its own: the only
 * memory it touches is the caller's latch_buf, grown through
 * latch__buf_reserve under the caller's limit. The struct is defined here so
 * that callers can embed it; its fields are private to json.c.
 *
 * Locale: latch assumes the C locale and never calls setlocale. Doubles are
 * formatted with snprintf("%e") and checked with strtod, which both follow
 * LC_NUMERIC; the writer reads only the digits and the exponent from
 * snprintf's output and writes the decimal point itself, so a program that
 * switched LC_NUMERIC to a locale with a decimal comma still gets '.'.
 */
#ifndef LATCH_JSON_H
#define LATCH_JSON_H

#include "latch.h"

/* The buffer type of internal.h (buf.c); only pointers to it here. */
typedef struct latch_buf latch_buf;

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* max_depth used when latch__json_init is given 0. */
#define LATCH_JSON_DEFAULT_DEPTH 64
/* The largest max_depth the container stack can hold (one bit a level). */
#define LATCH_JSON_MAX_DEPTH 256

typedef struct latch_json {
    latch_buf *out;
    size_t limit;
    int err;       /* first error, sticky; 0 while all is well */
    int depth;     /* open containers */
    int max_depth; /* 1..LATCH_JSON_MAX_DEPTH */
    bool first;    /* the innermost container has no member yet */
    bool has_key;  /* in an object: a key was written, its value is due */
    bool done;     /* the top-level value is complete */
    /* Bit d set: the container at depth d+1 is an object, else an array. */
    uint64_t objects[LATCH_JSON_MAX_DEPTH / 64];
} latch_json;

/* The length (2..4) of the valid UTF-8 sequence at s[0..n), or 0 when the
 * bytes there are not one (overlong, surrogate, past U+10FFFF, cut short,
 * or a byte that never starts a sequence). s[0] >= 0x80. */
size_t latch__utf8_seq(const char *s, size_t n);

/*
 * Prepares j to write one document at the end of `out` (whatever out already
 * holds stays in front of it). The writer never makes out->len exceed
 * `limit` (LATCH_ERR_LIMIT). max_depth bounds the nesting of objects and
 * arrays (0: LATCH_JSON_DEFAULT_DEPTH); a value outside 0..LATCH_JSON_MAX_DEPTH
 * or a NULL `out` makes LATCH_ERR_INVALID_ARG the sticky error from the
 * start. `out` must stay valid, and be changed by no one else, until the
 * last call on j. j needs no disposal.
 */
void latch__json_init(latch_json *j, latch_buf *out, size_t limit,
                      int max_depth);

/*
 * Every function below returns 0 on success or a negative code, and on
 * failure writes nothing (out->len is back where it was when the call
 * began) and records the code as j's sticky error. When j already holds an
 * error they return it at once and do nothing. The codes:
 *  - LATCH_ERR_INVALID_ARG: structural misuse (a value where a key is due
 *    in an object, a key in an array or at the top level or right after
 *    another key, the end of a container that is not the innermost open
 *    one or of an object whose last key has no value, a second top-level
 *    value, a NULL pointer with a non-zero length), a NaN or infinite
 *    double, an empty raw value;
 *  - LATCH_ERR_LIMIT: out would pass `limit`, or an object or array would
 *    nest deeper than max_depth;
 *  - LATCH_ERR_INVALID_CHAR: a key or string that is not valid UTF-8;
 *  - LATCH_ERR_NOMEM: growing out failed.
 */

/* Opens or closes an object or an array; the begin calls are values. */
int latch__json_object_begin(latch_json *j);
int latch__json_object_end(latch_json *j);
int latch__json_array_begin(latch_json *j);
int latch__json_array_end(latch_json *j);

/*
 * Writes an object member's key: s is NUL-terminated for key, n bytes for
 * key_n (may hold NUL bytes, which are escaped; s may be NULL when n is 0).
 * The bytes must be valid UTF-8 (no overlong forms, no surrogates, nothing
 * above U+10FFFF, no truncated sequence, no stray continuation byte). They
 * are escaped as for latch__json_string_n. The next call must write the
 * member's value.
 */
int latch__json_key(latch_json *j, const char *s);
int latch__json_key_n(latch_json *j, const char *s, size_t n);

/*
 * Writes a string value, with the same rules as the keys. Escaping: '"'
 * and '\\' get a backslash; the control characters below 0x20 become \b
 * \f \n \r \t or \u00xx (lowercase hex); U+2028 and U+2029 become \u2028
 * and \u2029, so that the output can also be inlined in a JavaScript
 * <script>; everything else, DEL, '/' and all other non-ASCII characters
 * included, is copied as is.
 */
int latch__json_string(latch_json *j, const char *s);
int latch__json_string_n(latch_json *j, const char *s, size_t n);

/* Integers, exact over their whole range, in plain decimal. */
int latch__json_int64(latch_json *j, int64_t v);
int latch__json_uint64(latch_json *j, uint64_t v);

/*
 * A finite double in the shortest decimal that strtod reads back to the
 * same bits: 0.1 as 0.1, 3.0 as 3, -0.0 as -0, 1e21 as 1e+21, 5e-324 and
 * 1.7976931348623157e+308 as such. The notation is the one %.17g would
 * choose (plain for decimal exponents -4..16, else d.ddde+X / d.ddde-X with
 * no leading zeros in X), so the output is never longer than %.17g's. NaN
 * and infinities: LATCH_ERR_INVALID_ARG (JSON has no token for them).
 */
int latch__json_double(latch_json *j, double v);

/* The literals true, false and null. */
int latch__json_bool(latch_json *j, bool v);
int latch__json_null(latch_json *j);

/*
 * Inserts n bytes of pre-serialized JSON as one value (separators are
 * handled as for any value). The bytes are trusted and not checked: the
 * caller guarantees they are exactly one valid JSON value. json NULL or n 0:
 * LATCH_ERR_INVALID_ARG.
 */
int latch__json_raw(latch_json *j, const char *json, size_t n);

/*
 * Returns j's sticky error if there is one; otherwise 0 when exactly one
 * complete top-level value was written and every container is closed, and
 * LATCH_ERR_INVALID_ARG when the document is unfinished (that answer is not
 * recorded: writing may go on). Writes nothing.
 */
int latch__json_finish(latch_json *j);

/* True when s[0..n) is well-formed UTF-8 (the Unicode table the string
 * writer checks against); NUL bytes count as well-formed. */
bool latch__utf8_valid(const char *s, size_t n);

#endif
