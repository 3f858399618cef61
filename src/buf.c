/*
 * buf.c - a growable byte buffer with a hard cap.
 *
 * Growth doubles (at least 256 bytes) and never passes the caller's limit;
 * a failed growth leaves the buffer exactly as it was, so the caller can
 * answer the error and go on. It is not a pool: buffers that should be
 * reused keep their capacity by setting len to 0 instead of disposing.
 */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

int latch__buf_reserve(latch_buf *b, size_t more, size_t limit)
{
    size_t need, cap;
    char *p;

    /* The cap holds even when the buffer is already larger than it (one
     * buffer used under different limits). */
    if (more > limit || b->len > limit - more)
        return LATCH_ERR_LIMIT;
    if (more <= b->cap - b->len)
        return 0;
    need = b->len + more;
    cap = b->cap ? b->cap : 256;
    while (cap < need)
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    if (cap > limit)
        cap = limit;
    p = realloc(b->data, cap);
    if (p == NULL)
        return LATCH_ERR_NOMEM;
    b->data = p;
    b->cap = cap;
    return 0;
}

int latch__buf_append(latch_buf *b, const void *p, size_t n, size_t limit)
{
    int r;

    if (n == 0)
        return 0;
    r = latch__buf_reserve(b, n, limit);
    if (r < 0)
        return r;
    memcpy(b->data + b->len, p, n);
    b->len += n;
    return 0;
}

void latch__buf_dispose(latch_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}
