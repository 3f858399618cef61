/*
 * evstream.h - the text/event-stream format (WHATWG HTML, "Server-sent
 * events", the event stream interpretation), as bytes: no I/O, no
 * allocation. sse.c writes what it builds to responses; pubsub.c frames
 * each published message once with it.
 *
 * A frame is the fields of one event and the blank line that dispatches
 * it. Data is split on every line break (CRLF, CR, LF: the three the
 * parser accepts) into "data:" lines, so no byte of the data can start a
 * field of its own; the parser joins the lines with LF, so data survives
 * the trip with its line breaks turned into LF. Each field is written
 * "name: value", and since the parser strips exactly one space after the
 * colon, a value that starts with a space keeps it.
 */
#ifndef LATCH_EVSTREAM_H
#define LATCH_EVSTREAM_H

#include "latch.h"

#include <stddef.h>
#include <stdint.h>

/* An event name or id: valid UTF-8 without CR or LF (a NUL cannot be in
 * a C string). 0, or LATCH_ERR_INVALID_CHAR. */
int latch__evs_check_field(const char *s);
/* Data: valid UTF-8 (NUL and line breaks allowed). 0, or
 * LATCH_ERR_INVALID_CHAR. */
int latch__evs_check_data(const char *data, size_t len);

/* The size of an event frame: "event: E\n" (event non-NULL), "id: I\n"
 * (id non-NULL), one "data: line\n" per line of data[0..len) (none when
 * data is NULL), then "\n". Fields are not checked here. */
size_t latch__evs_event_size(const char *event, const char *id,
                             const char *data, size_t len);
/* Writes that frame to out (latch__evs_event_size bytes); returns the
 * count written. */
size_t latch__evs_event(char *out, const char *event, const char *id,
                        const char *data, size_t len);
/* A comment: ": line\n" per line of text (one ":\n" for ""), then "\n". */
size_t latch__evs_comment_size(const char *text);
size_t latch__evs_comment(char *out, const char *text);
/* "retry: ms\n\n" into out (at least 32 bytes); returns its length. */
size_t latch__evs_retry(char *out, uint64_t ms);

#endif
