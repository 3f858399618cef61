/*
 * jsonf.c - latch_res_jsonf: a JSON response from a printf-like template
 * in one call, the conversions escaped and formatted by latch's JSON
 * writer (json.c) rather than by printf.
 *
 * The template's literal text is the document's structure, copied as is;
 * each conversion inserts exactly one JSON value (a string, a number,
 * true/false, null, or checked raw JSON), and the whole document is then
 * checked, so a template whose literal text is not JSON, or that puts a
 * conversion inside a string literal, is refused rather than sent. The
 * latch_res_jsonf macro passes the type of every argument (_Generic), so
 * a conversion is only ever read as the type its argument really has: a
 * mismatch is refused at run time, never undefined behaviour, and an
 * argument of a type no conversion takes (a struct, an int *) does not
 * compile. Any refusal is reported with the caller's site and answered
 * 500 through the error handlers.
 *
 * It is not a template engine: no named fields, no loops, no widths or
 * precisions (a JSON number has one exact form).
 */
#include "internal.h"

#include <jansson.h>

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

/* The document's cap: the JSON writer's (latch_res_json_begin's). */
#define JSONF_LIMIT ((size_t)16 << 20)

/* One argument, read as the type the macro said it has. */
typedef struct arg {
    char type; /* LATCH__JT_* as a char; see latch.h */
    union {
        long long i;
        unsigned long long u;
        double d;
        const char *s;
    } v;
} arg;

/* Reads the next argument as its type (unchecked calls: as the
 * conversion says, printf's rules). 0, or LATCH_ERR_INVALID_ARG for a
 * type the library does not know. */
static int read_arg(va_list *ap, char type, arg *a)
{
    a->type = type;
    switch (type) {
    case 'i': a->v.i = va_arg(*ap, int); return 0;
    case 'u': a->v.u = va_arg(*ap, unsigned); return 0;
    case 'l': a->v.i = va_arg(*ap, long); return 0;
    case 'L': a->v.u = va_arg(*ap, unsigned long); return 0;
    case 'q': a->v.i = va_arg(*ap, long long); return 0;
    case 'Q': a->v.u = va_arg(*ap, unsigned long long); return 0;
    case 'z': a->v.u = va_arg(*ap, size_t); return 0;
    case 'd': a->v.d = va_arg(*ap, double); return 0;
    case 's': a->v.s = va_arg(*ap, const char *); return 0;
    }
    return LATCH_ERR_INVALID_ARG;
}

static bool is_signed(char t)
{
    return t == 'i' || t == 'l' || t == 'q';
}

static bool is_integer(char t)
{
    return is_signed(t) || t == 'u' || t == 'L' || t == 'Q' || t == 'z';
}

/* The type an unchecked call's conversion reads (printf's rules). */
static char conv_type(const char *len, char conv)
{
    if (conv == 's' || conv == 'j')
        return 's';
    if (conv == 'g' || conv == 'f')
        return len[0] == '\0' ? 'd' : 0;
    if (conv == 'b')
        return len[0] == '\0' ? 'i' : 0;
    bool u = conv == 'u';
    if (len[0] == '\0')
        return u ? 'u' : 'i';
    if (strcmp(len, "l") == 0)
        return u ? 'L' : 'l';
    if (strcmp(len, "ll") == 0)
        return u ? 'Q' : 'q';
    if (strcmp(len, "z") == 0 && u)
        return 'z';
    return 0;
}

/* Writes one converted value at the end of out. */
static int put_value(latch_buf *out, char conv, const arg *a)
{
    latch_json j;
    json_t *raw;
    size_t n;

    latch__json_init(&j, out, JSONF_LIMIT, 0);
    switch (conv) {
    case 's':
        if (a->type != 's')
            return LATCH_ERR_INVALID_ARG;
        return a->v.s == NULL ? latch__json_null(&j)
                              : latch__json_string(&j, a->v.s);
    case 'j':
        if (a->type != 's')
            return LATCH_ERR_INVALID_ARG;
        if (a->v.s == NULL)
            return latch__json_null(&j);
        n = strlen(a->v.s);
        /* One JSON value, whole: parsed once to be sure. */
        raw = json_loadb(a->v.s, n, JSON_DECODE_ANY | JSON_DECODE_INT_AS_REAL,
                         NULL);
        if (raw == NULL)
            return LATCH_ERR_INVALID_ARG;
        json_decref(raw);
        return latch__json_raw(&j, a->v.s, n);
    case 'b':
        if (!is_integer(a->type))
            return LATCH_ERR_INVALID_ARG;
        return latch__json_bool(&j, a->v.u != 0);
    case 'g':
    case 'f':
        if (a->type != 'd')
            return LATCH_ERR_INVALID_ARG;
        return latch__json_double(&j, a->v.d); /* NaN, Inf: INVALID_ARG */
    default:                                   /* d i u */
        if (!is_integer(a->type))
            return LATCH_ERR_INVALID_ARG;
        return is_signed(a->type) ? latch__json_int64(&j, (int64_t)a->v.i)
                                  : latch__json_uint64(&j, (uint64_t)a->v.u);
    }
}

/*
 * Expands fmt into out. types: one char per argument (the macro's), NUL
 * ended, or NULL for an unchecked call. Returns 0 or
 * LATCH_ERR_INVALID_ARG (a bad conversion, too few or too many arguments,
 * a mismatched type, a bad value), LATCH_ERR_INVALID_CHAR (a %s that is
 * not UTF-8), LATCH_ERR_LIMIT, LATCH_ERR_NOMEM; *why says which.
 */
static int expand(latch_buf *out, const char *types, const char *fmt,
                  va_list *ap, const char **why)
{
    const char *p = fmt, *lit;
    size_t used = 0, have = types != NULL ? strlen(types) : 0;
    int r;

    while (*p != '\0') {
        char len[3] = "";
        size_t k = 0;
        char conv, want;
        arg a;

        for (lit = p; *p != '\0' && *p != '%'; p++)
            ;
        if (p > lit && (r = latch__buf_append(out, lit, (size_t)(p - lit),
                                              JSONF_LIMIT)) < 0)
            return r;
        if (*p == '\0')
            break;
        p++; /* the '%' */
        if (*p == '%') {
            if ((r = latch__buf_append(out, "%", 1, JSONF_LIMIT)) < 0)
                return r;
            p++;
            continue;
        }
        while ((*p == 'l' || *p == 'z') && k < 2)
            len[k++] = *p++;
        conv = *p;
        if (conv == '\0' || strchr("sdiugfbj", conv) == NULL ||
            (want = conv_type(len, conv)) == 0) {
            *why = "Unknown conversion in the format (latch_res_jsonf takes "
                   "%s %d %i %u %ld %lu %lld %llu %zu %g %f %b %j %%)";
            return LATCH_ERR_INVALID_ARG;
        }
        p++;
        if (types != NULL) {
            if (used == have) {
                *why = "The format has more conversions than arguments";
                return LATCH_ERR_INVALID_ARG;
            }
            want = types[used];
        }
        used++;
        if (read_arg(ap, want, &a) < 0) {
            *why = "An argument of a type latch_res_jsonf does not take";
            return LATCH_ERR_INVALID_ARG;
        }
        r = put_value(out, conv, &a);
        if (r < 0) {
            *why = r == LATCH_ERR_INVALID_CHAR
                       ? "A %s string is not valid UTF-8"
                   : r == LATCH_ERR_INVALID_ARG
                       ? "An argument does not fit its conversion (its "
                         "type, a NaN or infinite number, %j that is not "
                         "one JSON value)"
                       : NULL;
            return r;
        }
    }
    if (types != NULL && used != have) {
        *why = "The format has fewer conversions than arguments";
        return LATCH_ERR_INVALID_ARG;
    }
    return 0;
}

int latch_res_jsonf_at(latch_res *res, latch_site at, const char *types,
                       const char *fmt, ...)
{
    if (res != NULL &&
        (res = latch__res_in(res, "latch_res_jsonf", &at)) == NULL)
        return LATCH_ERR_STREAM_DESTROYED;
    latch_buf out = {NULL, 0, 0};
    const char *why = NULL;
    json_t *doc;
    va_list ap;
    int r;

    if (res == NULL)
        return LATCH_ERR_INVALID_ARG;
    if (fmt == NULL) {
        /* A bad argument, as any call's: reported, nothing answered. */
        latch__violation(res, LATCH_ERR_INVALID_ARG, "latch_res_jsonf",
                         "The format is NULL", at);
        return LATCH_ERR_INVALID_ARG;
    }
    /* A response that cannot be sent is refused as latch_res_json
     * refuses it, before any formatting. */
    if ((r = latch__res_send_check(res, "latch_res_jsonf", at)) < 0)
        return r;
    va_start(ap, fmt);
    r = expand(&out, types, fmt, &ap, &why);
    va_end(ap);
    if (r == 0 && (r = latch__buf_append(&out, "", 1, JSONF_LIMIT + 1)) == 0) {
        /* The template's own text must be JSON too. */
        doc = json_loadb(out.data, out.len - 1,
                         JSON_DECODE_ANY | JSON_DECODE_INT_AS_REAL, NULL);
        if (doc == NULL) {
            why = "The format's text is not one JSON document (a "
                  "conversion inside a string literal?)";
            r = LATCH_ERR_INVALID_ARG;
        } else {
            json_decref(doc);
            r = latch__res_send_json(res, out.data, out.len - 1,
                                     "latch_res_jsonf", at);
            latch__buf_dispose(&out);
            return r;
        }
    }
    latch__buf_dispose(&out);
    if (r == LATCH_ERR_NOMEM)
        return r;
    if (r == LATCH_ERR_INVALID_CHAR || r == LATCH_ERR_LIMIT)
        r = LATCH_ERR_INVALID_ARG;
    latch__violation(res, r, "latch_res_jsonf", why, at);
    /* The answer is the app's, as any error's. */
    latch__res_ref(res);
    latch__res_raise(res, r, 500, "latch_res_jsonf", at);
    latch__res_unref(res);
    return r;
}
