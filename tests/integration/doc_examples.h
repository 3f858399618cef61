/*
 * doc_examples.h - what the examples in include/latch.h's comments take
 * as given: the headers a program would include and the user's own
 * functions they call (a database, a driver, a renderer), declared only.
 * test_doc_examples.sh puts this first in each example's translation
 * unit and compiles it; nothing here is defined or run.
 */
#ifndef LATCH_DOC_EXAMPLES_H
#define LATCH_DOC_EXAMPLES_H

#include <latch.h>

#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* latch_req strings read off the loop (The request). */
struct record {
    char name[64];
};
bool db_find_user(const char *id, struct record *out);

/* latch_work_copy */
bool db_find_name(const char *id, char *name, size_t cap);

/* An async middleware (latch_next): the store's INCR, on the pool. */
void count_hit(void *hit);

/* A timer racing a job (latch_set_timeout). */
void fetch_price(void *quote);

/* Cancellation (latch_work_cancelled, latch_work_cancel_fd). */
struct export;
int render_batch(struct export *e);
struct fetch;
int driver_fd(struct fetch *f);
bool driver_done(struct fetch *f);
void driver_step(struct fetch *f);

/* A join of pool tasks (latch_join_new): one query, on the pool. */
void count(void *part);

#endif
