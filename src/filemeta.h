/*
 * filemeta.h - a file as HTTP sees it: its media type, its validators
 * (ETag, Last-Modified), the conditional and range headers a request puts
 * on it, and the mapping of a request path onto a file under a root.
 *
 * A leaf: pure functions over strings and numbers, no I/O, no response.
 * file.c and static.c decide what to send from these answers; the unit
 * test (tests/unit/test_filemeta.c) pins each rule with the RFC 9110 case
 * or the published exploit it comes from.
 */
#ifndef LATCH_FILEMETA_H
#define LATCH_FILEMETA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The Content-Type for a file name, by its extension (case-insensitive;
 * text types carry "; charset=utf-8"), or NULL when the extension is not
 * in the table (file.c then sends application/octet-stream). */
const char *latch__mime_by_ext(const char *name);
/* The Content-Type a short name or an extension names ("html", ".json",
 * "png"; case-insensitive), Express's res.type names "form" and
 * "urlencoded" included; NULL when unknown. */
const char *latch__mime_by_name(const char *name);

/* What a Range header asks of a representation of `size` bytes. */
enum {
    LATCH_RANGE_NONE = 0, /* absent or malformed: send it whole (200) */
    LATCH_RANGE_ONE,      /* one satisfiable range: 206 [*first, *last] */
    LATCH_RANGE_MANY,     /* several, some satisfiable: 200 whole */
    LATCH_RANGE_UNSAT,    /* none satisfiable: 416, bytes * / size */
};
/*
 * Parses a Range header value (NULL: absent) per RFC 9110 14.1.1: the
 * "bytes" unit (any case), comma-separated first-last, first- and -suffix
 * specs with optional whitespace around them. A spec with last < first,
 * a number past 2^63, an unknown unit or any stray byte makes the whole
 * header malformed (NONE, as Express's send ignores it). For ONE, *first
 * and *last are set (last clamped to size - 1); otherwise both are 0.
 */
int latch__range_parse(const char *h, uint64_t size, uint64_t *first,
                       uint64_t *last);

/* The ETag of a file: strong, from inode, size and modification time in
 * nanoseconds, as "<ino>-<size>-<mtime>" in hex between quotes. Writes
 * at most cap bytes (64 are always enough); returns the length. */
size_t latch__etag_format(char *out, size_t cap, uint64_t ino, uint64_t size,
                          int64_t mtime_sec, long mtime_nsec);

/* An IMF-fixdate ("Sun, 06 Nov 1994 08:49:37 GMT") into out (cap >= 30);
 * returns the length, 0 when the time cannot be represented. */
size_t latch__http_date(char *out, size_t cap, int64_t t);
/* Parses an HTTP-date (IMF-fixdate, RFC 850 or asctime; RFC 9110 5.6.7).
 * Returns 0 and sets *t, or -1 for anything else. */
int latch__http_date_parse(const char *s, int64_t *t);

/* Whether an If-None-Match / If-Match list names `etag`: "*" always; the
 * weak comparison ignores W/ on either side, the strong one never matches
 * a weak tag. A malformed list matches nothing. */
bool latch__etag_match(const char *list, const char *etag, bool weak);

/* The request's conditional headers (NULL when absent). */
typedef struct latch_cond {
    const char *if_match, *if_none_match, *if_modified_since,
        *if_unmodified_since, *if_range;
    bool get_or_head; /* 304 applies only to GET and HEAD */
} latch_cond;
/*
 * The outcome of the preconditions of RFC 9110 13.2.2 for a file with
 * `etag` and modification time `mtime` (seconds): 0 (go on), 304 (not
 * modified) or 412 (precondition failed). If-None-Match is evaluated with
 * the weak comparison and, when present, If-Modified-Since is ignored.
 */
int latch__cond_eval(const latch_cond *c, const char *etag, int64_t mtime);
/* Whether an If-Range value (NULL: absent, true) still names this
 * representation: a strong ETag match, or an HTTP-date equal to the
 * modification time. Otherwise the Range is ignored (200 whole). */
bool latch__if_range_ok(const char *v, const char *etag, int64_t mtime);

/* What latch__path_clean found. */
enum {
    LATCH_PATH_DOT = 1u << 0, /* a segment starts with '.' (dotfile) */
    LATCH_PATH_DIR = 1u << 1, /* the path ended with '/' */
};
/*
 * Maps a request path as sent (still percent-encoded, no query) onto a
 * relative path under a root, before anything touches the disk. Decodes
 * each segment on its own and refuses, with UV_EACCES (403): a ".."
 * segment (also when spelled %2e%2e, .%2e, %2E.), an encoded '/' or '\'
 * (%2f, %5c), a raw '\', a NUL (%00) or any other control byte, so no
 * request can name a file outside the root, whatever the OS does with
 * backslashes. A malformed escape ("%zz", "%4") is LATCH_ERR_INVALID_ARG
 * (400). "." and empty segments are dropped. On success writes the clean
 * relative path (no leading '/', segments joined by '/', "" for the root)
 * into out, NUL-terminated, sets *flags to LATCH_PATH_* and returns 0;
 * UV_ENAMETOOLONG when it does not fit in cap. Symlinks are not resolved
 * here: file.c checks where the opened file really lies.
 */
int latch__path_clean(const char *raw, size_t n, char *out, size_t cap,
                      unsigned *flags);
/* Whether `real` (an absolute resolved path) is `root` (resolved, no
 * trailing '/') or lies below it. */
bool latch__path_within(const char *root, const char *real);

#endif
