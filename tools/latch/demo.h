/*
 * demo.h - between the demo's page and server (demo.c) and its bug routes
 * (demo_bugs.c).
 */
#ifndef LATCH_TOOL_DEMO_H
#define LATCH_TOOL_DEMO_H

#include <latch.h>

#include <stddef.h>

/* How the page calls a bug route. */
enum {
    DEMO_FETCH = 1,      /* one request, its answer read whole */
    DEMO_ABORT = 2,      /* one request the page abandons after 200 ms */
    DEMO_SSE_PUBLISH = 3 /* an event stream the page reads once and closes,
                            then a POST to <path>/publish */
};

typedef struct demo_bug {
    const char *name;   /* the route is /bug/<name>; its code's marker */
    const char *method; /* what the page sends */
    const char *url;    /* what the page asks for */
    const char *title;
    const char *node;   /* what Node, Express or Fastify do with it */
    int client;         /* DEMO_* */
    int reports;        /* how many reports latch makes of one call */
    const char *shared; /* another marked section shown with it, or NULL */
} demo_bug;

extern const demo_bug demo_bugs[];
extern const size_t demo_nbugs;

/* Registers the error handler and the routes under /bug/ (the proxy route
 * forwards to `upstream`, an http:// URL). Returns 0 or a latch error. */
int demo_bugs_register(latch_app *app, const char *upstream);

#endif
