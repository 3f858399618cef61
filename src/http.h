/*
 * http.h - HTTP vocabulary (http.c): a leaf every module may name. No
 * state, no I/O, no allocation.
 */
#ifndef LATCH_HTTP_H
#define LATCH_HTTP_H

#include <stddef.h>

/* The reason phrase of a status code ("Not Found"); "unknown" for a code
 * without one. The string is static. */
const char *latch__http_reason(int status);

/* The q-value, 0..1000, that an Accept header value gives `type`
 * ("text/html"): from an exact match, else "text/ *", else "* / *"; 0
 * when none matches; 1000 when accept is NULL or empty (no Accept). */
int latch__http_accept_q(const char *accept, const char *type);

/* s escaped for HTML text (& < > " ' as entities, a newline as <br>) into
 * out, cap bytes with room for the NUL (cap >= 9); stops early rather than
 * overflow. Returns the length written. */
size_t latch__http_html_escape(char *out, size_t cap, const char *s);

/* s escaped as the inside of a JSON string (" and \ backslashed, ASCII
 * controls as \u00XX) into out, cap bytes with room for the NUL
 * (cap >= 9); stops early rather than overflow. Returns the length. */
size_t latch__http_json_escape(char *out, size_t cap, const char *s);

#endif
