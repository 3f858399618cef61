/*
 * evstream.c - builds text/event-stream frames (see evstream.h). A leaf:
 * it names nothing of latch but the UTF-8 check of the JSON writer.
 *
 * What it deliberately is not: a parser (latch only sends events), and
 * not a writer to a response (sse.c does that, through the response's
 * state machine, so a frame written late is refused like any late write).
 */
#include "evstream.h"

#include "json.h"

#include <stdio.h>
#include <string.h>

int latch__evs_check_field(const char *s)
{
    size_t n = strlen(s);

    if (memchr(s, '\r', n) != NULL || memchr(s, '\n', n) != NULL)
        return LATCH_ERR_INVALID_CHAR;
    return latch__utf8_valid(s, n) ? 0 : LATCH_ERR_INVALID_CHAR;
}

int latch__evs_check_data(const char *data, size_t len)
{
    return latch__utf8_valid(data, len) ? 0 : LATCH_ERR_INVALID_CHAR;
}

/* Calls line(s, n, arg) for each line of text[0..len), split on CRLF, CR
 * and LF; returns the number of lines (len 0 is one empty line). */
static size_t each_line(const char *text, size_t len,
                        void (*line)(const char *s, size_t n, void *arg),
                        void *arg)
{
    size_t i = 0, start = 0, count = 0;

    while (i < len) {
        char c = text[i];
        if (c != '\r' && c != '\n') {
            i++;
            continue;
        }
        if (line != NULL)
            line(text + start, i - start, arg);
        count++;
        i += (c == '\r' && i + 1 < len && text[i + 1] == '\n') ? 2 : 1;
        start = i;
    }
    if (line != NULL)
        line(text + start, len - start, arg);
    return count + 1;
}

/* Line breaks' bytes in text[0..len): what the split drops. */
static size_t break_bytes(const char *text, size_t len)
{
    size_t i, n = 0;

    for (i = 0; i < len; i++)
        if (text[i] == '\r' || text[i] == '\n')
            n++;
    return n;
}

typedef struct put_state {
    char *p;
    const char *prefix;
    size_t plen;
} put_state;

static void put_line(const char *s, size_t n, void *arg)
{
    put_state *st = arg;

    memcpy(st->p, st->prefix, st->plen);
    st->p += st->plen;
    memcpy(st->p, s, n);
    st->p += n;
    *st->p++ = '\n';
}

size_t latch__evs_event_size(const char *event, const char *id,
                             const char *data, size_t len)
{
    size_t n = 1; /* the blank line */

    if (event != NULL)
        n += 8 + strlen(event);
    if (id != NULL)
        n += 5 + strlen(id);
    if (data != NULL) {
        size_t lines = each_line(data, len, NULL, NULL);
        n += lines * 7 + len - break_bytes(data, len);
    }
    return n;
}

size_t latch__evs_event(char *out, const char *event, const char *id,
                        const char *data, size_t len)
{
    put_state st = {out, "data: ", 6};

    if (event != NULL) {
        st.prefix = "event: ";
        st.plen = 7;
        put_line(event, strlen(event), &st);
    }
    if (id != NULL) {
        st.prefix = "id: ";
        st.plen = 4;
        put_line(id, strlen(id), &st);
    }
    if (data != NULL) {
        st.prefix = "data: ";
        st.plen = 6;
        each_line(data, len, put_line, &st);
    }
    *st.p++ = '\n';
    return (size_t)(st.p - out);
}

size_t latch__evs_comment_size(const char *text)
{
    size_t len = strlen(text);

    if (len == 0)
        return 3; /* ":\n\n" */
    return each_line(text, len, NULL, NULL) * 3 + len - break_bytes(text, len) +
           1;
}

size_t latch__evs_comment(char *out, const char *text)
{
    size_t len = strlen(text);
    put_state st = {out, ": ", 2};

    if (len == 0) {
        memcpy(out, ":\n\n", 3);
        return 3;
    }
    each_line(text, len, put_line, &st);
    *st.p++ = '\n';
    return (size_t)(st.p - out);
}

size_t latch__evs_retry(char *out, uint64_t ms)
{
    return (size_t)snprintf(out, 32, "retry: %llu\n\n", (unsigned long long)ms);
}
