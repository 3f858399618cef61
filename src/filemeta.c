/*
 * filemeta.c - a file as HTTP sees it (see filemeta.h): the MIME table,
 * ETag and HTTP-date formats, Range and conditional headers, and the
 * cleaning of a request path before it names a file.
 *
 * No I/O and no response here: every function answers from its arguments,
 * so each rule can be tested on its own. What to send is file.c's
 * business; where a file really lies (symlinks) is checked there, on the
 * opened descriptor.
 */
#include "filemeta.h"
#include "latch.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <uv.h>

/* ------------------------------------------------------------------ */
/* MIME types                                                           */
/* ------------------------------------------------------------------ */

/* Sorted by extension (bsearch). Text types carry the charset, as
 * Express's send does for the types it knows to be text. The one table of
 * latch: latch_res_type's short names are looked up here too. */
static const struct mime {
    const char *ext;
    const char *type;
} mimes[] = {
    {"7z", "application/x-7z-compressed"},
    {"aac", "audio/aac"},
    {"avif", "image/avif"},
    {"bin", "application/octet-stream"},
    {"bmp", "image/bmp"},
    {"br", "application/x-brotli"},
    {"bz2", "application/x-bzip2"},
    {"c", "text/x-c; charset=utf-8"},
    {"css", "text/css; charset=utf-8"},
    {"csv", "text/csv; charset=utf-8"},
    {"doc", "application/msword"},
    {"docx", "application/vnd.openxmlformats-officedocument."
             "wordprocessingml.document"},
    {"eot", "application/vnd.ms-fontobject"},
    {"epub", "application/epub+zip"},
    {"flac", "audio/flac"},
    {"gif", "image/gif"},
    {"gz", "application/gzip"},
    {"h", "text/x-c; charset=utf-8"},
    {"htm", "text/html; charset=utf-8"},
    {"html", "text/html; charset=utf-8"},
    {"ico", "image/x-icon"},
    {"ics", "text/calendar; charset=utf-8"},
    {"jpeg", "image/jpeg"},
    {"jpg", "image/jpeg"},
    {"js", "text/javascript; charset=utf-8"},
    {"json", "application/json; charset=utf-8"},
    {"jsonld", "application/ld+json"},
    {"m4a", "audio/mp4"},
    {"map", "application/json; charset=utf-8"},
    {"md", "text/markdown; charset=utf-8"},
    {"mjs", "text/javascript; charset=utf-8"},
    {"mov", "video/quicktime"},
    {"mp3", "audio/mpeg"},
    {"mp4", "video/mp4"},
    {"mpeg", "video/mpeg"},
    {"oga", "audio/ogg"},
    {"ogg", "audio/ogg"},
    {"ogv", "video/ogg"},
    {"otf", "font/otf"},
    {"pdf", "application/pdf"},
    {"png", "image/png"},
    {"rss", "application/rss+xml"},
    {"rtf", "application/rtf"},
    {"svg", "image/svg+xml"},
    {"tar", "application/x-tar"},
    {"text", "text/plain; charset=utf-8"},
    {"tif", "image/tiff"},
    {"tiff", "image/tiff"},
    {"toml", "application/toml"},
    {"ts", "video/mp2t"},
    {"tsv", "text/tab-separated-values; charset=utf-8"},
    {"ttf", "font/ttf"},
    {"txt", "text/plain; charset=utf-8"},
    {"wasm", "application/wasm"},
    {"wav", "audio/wav"},
    {"weba", "audio/webm"},
    {"webm", "video/webm"},
    {"webmanifest", "application/manifest+json"},
    {"webp", "image/webp"},
    {"woff", "font/woff"},
    {"woff2", "font/woff2"},
    {"xhtml", "application/xhtml+xml"},
    {"xls", "application/vnd.ms-excel"},
    {"xlsx", "application/vnd.openxmlformats-officedocument."
             "spreadsheetml.sheet"},
    {"xml", "application/xml; charset=utf-8"},
    {"yaml", "application/yaml"},
    {"yml", "application/yaml"},
    {"zip", "application/zip"},
};

static int mime_cmp(const void *key, const void *elem)
{
    return strcasecmp((const char *)key, ((const struct mime *)elem)->ext);
}

/* Short names of latch_res_type that are no file extension (Express's),
 * so a file named x.form is not sent as a form. */
static const struct mime names_only[] = {
    {"form", "application/x-www-form-urlencoded"},
    {"urlencoded", "application/x-www-form-urlencoded"},
};

static const struct mime *mime_find(const char *ext)
{
    return bsearch(ext, mimes, sizeof(mimes) / sizeof(mimes[0]),
                   sizeof(mimes[0]), mime_cmp);
}

const char *latch__mime_by_ext(const char *name)
{
    const char *dot, *slash;
    const struct mime *m;

    if (name == NULL)
        return NULL;
    dot = strrchr(name, '.');
    slash = strrchr(name, '/');
    if (dot == NULL || (slash != NULL && dot < slash) || dot[1] == '\0')
        return NULL;
    m = mime_find(dot + 1);
    return m != NULL ? m->type : NULL;
}

const char *latch__mime_by_name(const char *name)
{
    const struct mime *m;

    if (name == NULL)
        return NULL;
    if (*name == '.')
        name++;
    if ((m = mime_find(name)) != NULL)
        return m->type;
    for (size_t i = 0; i < sizeof(names_only) / sizeof(names_only[0]); i++)
        if (strcasecmp(name, names_only[i].ext) == 0)
            return names_only[i].type;
    return NULL;
}

/* ------------------------------------------------------------------ */
/* Range                                                                */
/* ------------------------------------------------------------------ */

static const char *skip_ows(const char *p)
{
    while (*p == ' ' || *p == '\t')
        p++;
    return p;
}

/* Digits into *v; NULL when there are none or the number passes 2^63. */
static const char *digits(const char *p, uint64_t *v)
{
    uint64_t x = 0;
    const char *s = p;

    while (*p >= '0' && *p <= '9') {
        if (x > (UINT64_C(1) << 63) / 10)
            return NULL;
        x = x * 10 + (uint64_t)(*p - '0');
        p++;
    }
    if (p == s || x > (UINT64_C(1) << 63))
        return NULL;
    *v = x;
    return p;
}

int latch__range_parse(const char *h, uint64_t size, uint64_t *first,
                       uint64_t *last)
{
    const char *p;
    int nsat = 0, nspec = 0;
    uint64_t f1 = 0, l1 = 0;

    *first = *last = 0;
    if (h == NULL)
        return LATCH_RANGE_NONE;
    p = skip_ows(h);
    if (strncasecmp(p, "bytes", 5) != 0)
        return LATCH_RANGE_NONE;
    p = skip_ows(p + 5);
    if (*p++ != '=')
        return LATCH_RANGE_NONE;
    for (;;) {
        uint64_t a, b;
        bool sat;

        p = skip_ows(p);
        if (*p == ',') { /* empty list elements are allowed (RFC 9110 5.6.1) */
            p++;
            continue;
        }
        if (*p == '\0')
            break;
        if (*p == '-') {
            /* -suffix: the last `b` bytes */
            if ((p = digits(p + 1, &b)) == NULL)
                return LATCH_RANGE_NONE;
            sat = b > 0 && size > 0;
            a = b >= size ? 0 : size - b;
            b = size - 1;
        } else {
            if ((p = digits(p, &a)) == NULL || *p++ != '-')
                return LATCH_RANGE_NONE;
            if (*p >= '0' && *p <= '9') {
                if ((p = digits(p, &b)) == NULL || b < a)
                    return LATCH_RANGE_NONE;
            } else {
                b = UINT64_MAX;
            }
            sat = a < size;
            if (sat && b > size - 1)
                b = size - 1;
        }
        nspec++;
        if (sat) {
            nsat++;
            f1 = a;
            l1 = b;
        }
        p = skip_ows(p);
        if (*p == ',')
            p++;
        else if (*p != '\0')
            return LATCH_RANGE_NONE;
    }
    if (nspec == 0)
        return LATCH_RANGE_NONE;
    if (nsat == 0)
        return LATCH_RANGE_UNSAT;
    if (nspec > 1)
        return LATCH_RANGE_MANY;
    *first = f1;
    *last = l1;
    return LATCH_RANGE_ONE;
}

/* ------------------------------------------------------------------ */
/* Validators                                                           */
/* ------------------------------------------------------------------ */

/* Writes `v` in lowercase hex at p; returns the end. (By hand: these run
 * for every file sent, and snprintf costs about ten times as much.) */
static char *put_hex(char *p, uint64_t v)
{
    static const char hex[] = "0123456789abcdef";
    char tmp[16];
    int n = 0;

    do {
        tmp[n++] = hex[v & 15];
        v >>= 4;
    } while (v != 0);
    while (n > 0)
        *p++ = tmp[--n];
    return p;
}

/* Two decimal digits of v (0..99) at p; returns the end. */
static char *put2(char *p, int v)
{
    *p++ = (char)('0' + v / 10);
    *p++ = (char)('0' + v % 10);
    return p;
}

size_t latch__etag_format(char *out, size_t cap, uint64_t ino, uint64_t size,
                          int64_t mtime_sec, long mtime_nsec)
{
    uint64_t ns = (uint64_t)mtime_sec * 1000000000u + (uint64_t)mtime_nsec;
    char b[3 * 16 + 4], *p = b;
    size_t n;

    if (cap == 0)
        return 0;
    *p++ = '"';
    p = put_hex(p, ino);
    *p++ = '-';
    p = put_hex(p, size);
    *p++ = '-';
    p = put_hex(p, ns);
    *p++ = '"';
    n = (size_t)(p - b);
    if (n >= cap)
        n = cap - 1; /* cut, as snprintf would */
    memcpy(out, b, n);
    out[n] = '\0';
    return n;
}

static const char wdays[7][4] = {"Sun", "Mon", "Tue", "Wed",
                                 "Thu", "Fri", "Sat"};
static const char months[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                   "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};

size_t latch__http_date(char *out, size_t cap, int64_t t)
{
    struct tm tm;
    time_t tt = (time_t)t;
    char *p = out;
    int y;

    if (cap < 30 || gmtime_r(&tt, &tm) == NULL || tm.tm_year + 1900 > 9999 ||
        tm.tm_year + 1900 < 0)
        return 0;
    /* "Sun, 06 Nov 1994 08:49:37 GMT": 29 bytes, always */
    y = tm.tm_year + 1900;
    memcpy(p, wdays[tm.tm_wday], 3);
    p += 3;
    *p++ = ',';
    *p++ = ' ';
    p = put2(p, tm.tm_mday);
    *p++ = ' ';
    memcpy(p, months[tm.tm_mon], 3);
    p += 3;
    *p++ = ' ';
    p = put2(p, y / 100);
    p = put2(p, y % 100);
    *p++ = ' ';
    p = put2(p, tm.tm_hour);
    *p++ = ':';
    p = put2(p, tm.tm_min);
    *p++ = ':';
    p = put2(p, tm.tm_sec);
    memcpy(p, " GMT", 5);
    return (size_t)(p + 4 - out);
}

static int month_of(const char *s)
{
    for (int i = 0; i < 12; i++)
        if (strncmp(s, months[i], 3) == 0)
            return i;
    return -1;
}

/* Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm). */
static int64_t days_from_civil(int64_t y, int m, int d)
{
    int64_t era;
    unsigned yoe, doy, doe;

    y -= m <= 2;
    era = (y >= 0 ? y : y - 399) / 400;
    yoe = (unsigned)(y - era * 400);
    doy = (unsigned)((153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1);
    doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

/* Reads exactly `n` digits. */
static const char *fixed(const char *p, int n, int *v)
{
    int x = 0;

    for (int i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9')
            return NULL;
        x = x * 10 + (p[i] - '0');
    }
    *v = x;
    return p + n;
}

static const char *hms(const char *p, int *h, int *mi, int *s)
{
    if ((p = fixed(p, 2, h)) == NULL || *p++ != ':' ||
        (p = fixed(p, 2, mi)) == NULL || *p++ != ':' ||
        (p = fixed(p, 2, s)) == NULL)
        return NULL;
    return p;
}

int latch__http_date_parse(const char *s, int64_t *t)
{
    int day, mon, year, h, mi, sec;
    const char *p, *comma;

    if (s == NULL)
        return -1;
    comma = strchr(s, ',');
    if (comma != NULL && comma - s == 3) {
        /* IMF-fixdate: Sun, 06 Nov 1994 08:49:37 GMT */
        p = comma + 1;
        if (*p++ != ' ' || (p = fixed(p, 2, &day)) == NULL || *p++ != ' ' ||
            (mon = month_of(p)) < 0 || p[3] != ' ' ||
            (p = fixed(p + 4, 4, &year)) == NULL || *p++ != ' ' ||
            (p = hms(p, &h, &mi, &sec)) == NULL || strcmp(p, " GMT") != 0)
            return -1;
    } else if (comma != NULL) {
        /* RFC 850: Sunday, 06-Nov-94 08:49:37 GMT (two-digit years are
         * read as 19xx/20xx, the nearest past century rule simplified) */
        p = comma + 1;
        if (*p++ != ' ' || (p = fixed(p, 2, &day)) == NULL || *p++ != '-' ||
            (mon = month_of(p)) < 0 || p[3] != '-' ||
            (p = fixed(p + 4, 2, &year)) == NULL || *p++ != ' ' ||
            (p = hms(p, &h, &mi, &sec)) == NULL || strcmp(p, " GMT") != 0)
            return -1;
        year += year < 70 ? 2000 : 1900;
    } else {
        /* asctime: Sun Nov  6 08:49:37 1994 */
        p = s;
        if (strlen(p) < 24 || p[3] != ' ' || (mon = month_of(p + 4)) < 0 ||
            p[7] != ' ')
            return -1;
        p += 8;
        if (*p == ' ')
            p++; /* a one-digit day is padded with a space */
        if (p[0] >= '0' && p[0] <= '9' && p[1] == ' ') {
            day = p[0] - '0';
            p += 1;
        } else if ((p = fixed(p, 2, &day)) == NULL) {
            return -1;
        }
        if (*p++ != ' ' || (p = hms(p, &h, &mi, &sec)) == NULL || *p++ != ' ' ||
            (p = fixed(p, 4, &year)) == NULL || *p != '\0')
            return -1;
    }
    if (day < 1 || day > 31 || h > 23 || mi > 59 || sec > 60)
        return -1;
    *t = days_from_civil(year, mon + 1, day) * 86400 + h * 3600 + mi * 60 + sec;
    return 0;
}

/* The opaque part of an entity tag at p ("..." or W/"..."): sets *tag,
 * *n, *weak and returns the byte after it, or NULL if malformed. */
static const char *etag_at(const char *p, const char **tag, size_t *n,
                           bool *weak)
{
    const char *q;

    *weak = false;
    if (p[0] == 'W' && p[1] == '/') {
        *weak = true;
        p += 2;
    }
    if (*p != '"')
        return NULL;
    for (q = p + 1; *q != '"'; q++)
        if (*q == '\0' || (unsigned char)*q < 0x21 || *q == 0x7f)
            return NULL;
    *tag = p + 1;
    *n = (size_t)(q - (p + 1));
    return q + 1;
}

bool latch__etag_match(const char *list, const char *etag, bool weak)
{
    const char *p, *mine, *tag;
    size_t mlen, n;
    bool mweak, tweak;

    if (list == NULL || etag == NULL ||
        etag_at(etag, &mine, &mlen, &mweak) == NULL)
        return false;
    p = skip_ows(list);
    if (p[0] == '*' && *skip_ows(p + 1) == '\0')
        return true;
    while (*p != '\0') {
        p = skip_ows(p);
        if (*p == ',') {
            p++;
            continue;
        }
        if (*p == '\0')
            break;
        if ((p = etag_at(p, &tag, &n, &tweak)) == NULL)
            return false;
        if (n == mlen && memcmp(tag, mine, n) == 0 &&
            (weak || (!tweak && !mweak)))
            return true;
        p = skip_ows(p);
        if (*p != ',' && *p != '\0')
            return false;
    }
    return false;
}

int latch__cond_eval(const latch_cond *c, const char *etag, int64_t mtime)
{
    int64_t t;

    /* 1, 2: If-Match, else If-Unmodified-Since (412 on failure) */
    if (c->if_match != NULL) {
        if (!latch__etag_match(c->if_match, etag, false))
            return 412;
    } else if (c->if_unmodified_since != NULL &&
               latch__http_date_parse(c->if_unmodified_since, &t) == 0 &&
               mtime > t) {
        return 412;
    }
    /* 3, 4: If-None-Match, else If-Modified-Since (GET/HEAD: 304) */
    if (c->if_none_match != NULL) {
        if (latch__etag_match(c->if_none_match, etag, true))
            return c->get_or_head ? 304 : 412;
        return 0;
    }
    if (c->get_or_head && c->if_modified_since != NULL &&
        latch__http_date_parse(c->if_modified_since, &t) == 0 && mtime <= t)
        return 304;
    return 0;
}

bool latch__if_range_ok(const char *v, const char *etag, int64_t mtime)
{
    int64_t t;

    if (v == NULL)
        return true;
    v = skip_ows(v);
    if (v[0] == '"' || (v[0] == 'W' && v[1] == '/'))
        return latch__etag_match(v, etag, false);
    return latch__http_date_parse(v, &t) == 0 && t == mtime;
}

/* ------------------------------------------------------------------ */
/* Paths                                                                */
/* ------------------------------------------------------------------ */

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int latch__path_clean(const char *raw, size_t n, char *out, size_t cap,
                      unsigned *flags)
{
    size_t i = 0, o = 0;

    *flags = 0;
    if (cap == 0)
        return UV_ENAMETOOLONG;
    out[0] = '\0';
    if (n > 0 && raw[n - 1] == '/')
        *flags |= LATCH_PATH_DIR;
    while (i < n) {
        size_t seg = o, start;

        while (i < n && raw[i] == '/')
            i++;
        if (i == n)
            break;
        if (o > 0) {
            if (o + 1 >= cap)
                return UV_ENAMETOOLONG;
            out[o++] = '/';
        }
        start = o;
        for (; i < n && raw[i] != '/'; i++) {
            int c = (unsigned char)raw[i];
            if (c == '%') {
                int hi = i + 2 < n ? hexval(raw[i + 1]) : -1;
                int lo = i + 2 < n ? hexval(raw[i + 2]) : -1;
                if (i + 2 >= n || hi < 0 || lo < 0)
                    return LATCH_ERR_INVALID_ARG;
                c = hi * 16 + lo;
                i += 2;
                /* An encoded separator would join two names into one
                 * segment here and split them again in the OS. */
                if (c == '/')
                    return UV_EACCES;
            }
            if (c == '\\' || c < 0x20 || c == 0x7f)
                return UV_EACCES;
            if (o + 1 >= cap)
                return UV_ENAMETOOLONG;
            out[o++] = (char)c;
        }
        /* The segment as decoded: "." is dropped, ".." refused. */
        if (o - start == 1 && out[start] == '.') {
            o = seg;
            continue;
        }
        if (o - start == 2 && out[start] == '.' && out[start + 1] == '.')
            return UV_EACCES;
        if (out[start] == '.')
            *flags |= LATCH_PATH_DOT;
    }
    out[o] = '\0';
    return 0;
}

bool latch__path_within(const char *root, const char *real)
{
    size_t n = strlen(root);

    if (n == 1 && root[0] == '/')
        return real[0] == '/';
    return strncmp(root, real, n) == 0 && (real[n] == '\0' || real[n] == '/');
}
