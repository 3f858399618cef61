/*
 * sse_client.h - a raw-socket EventSource for the integration tests: sends
 * a GET (with an optional Last-Event-ID), checks the response head, takes
 * the chunked body apart and decodes the event stream as the WHATWG steps
 * say (fields, data lines joined with LF, dispatch on a blank line,
 * comments counted). Header-only: static functions for test_sse.c and
 * test_pubsub_redis.c.
 */
#ifndef LATCH_TEST_SSE_CLIENT_H
#define LATCH_TEST_SSE_CLIENT_H

#include "harness.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

typedef struct sse_event {
    char event[32];
    char id[48];
    char *data;
} sse_event;

typedef struct sse_client {
    int fd;
    char *raw; /* bytes not yet taken apart */
    size_t rlen, rcap;
    bool head_done, eof, ended; /* ended: the terminating chunk came */
    char head[2048];
    /* The decoded body not yet interpreted. */
    char *body;
    size_t blen, bcap;
    /* Events dispatched so far. */
    sse_event *ev;
    size_t nev, evcap;
    int comments;
    /* The event being built. */
    char cur_event[32], cur_id[48];
    char *cur_data;
    size_t cur_len, cur_cap;
} sse_client;

static void sse_grow(char **p, size_t *cap, size_t need)
{
    if (need <= *cap)
        return;
    while (*cap < need)
        *cap = *cap ? *cap * 2 : 4096;
    *p = realloc(*p, *cap);
    if (*p == NULL)
        abort();
}

/* Connects (rcvbuf > 0: that receive buffer, set before connect) and
 * sends the GET. */
static void sse_open(sse_client *c, int port, const char *path,
                     const char *last_id, int rcvbuf)
{
    struct sockaddr_in sa;
    char req[512];
    int one = 1;

    memset(c, 0, sizeof(*c));
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c->fd < 0)
        abort();
    if (rcvbuf > 0)
        setsockopt(c->fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)) != 0)
        abort();
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    snprintf(req, sizeof(req),
             "GET %s HTTP/1.1\r\nHost: t\r\nAccept: text/event-stream\r\n"
             "%s%s%s\r\n",
             path, last_id ? "Last-Event-ID: " : "", last_id ? last_id : "",
             last_id ? "\r\n" : "");
    th_send_str(c->fd, req);
}

static void sse_line(sse_client *c, const char *line, size_t n)
{
    const char *colon, *val;
    size_t flen, vlen;

    if (n == 0) {
        if (c->cur_len > 0) {
            sse_event *e;
            if (c->nev == c->evcap) {
                c->evcap = c->evcap ? c->evcap * 2 : 64;
                c->ev = realloc(c->ev, c->evcap * sizeof(*c->ev));
                if (c->ev == NULL)
                    abort();
            }
            e = &c->ev[c->nev++];
            memset(e, 0, sizeof(*e));
            snprintf(e->event, sizeof(e->event), "%s",
                     c->cur_event[0] ? c->cur_event : "message");
            snprintf(e->id, sizeof(e->id), "%s", c->cur_id);
            c->cur_data[c->cur_len - 1] = '\0'; /* the last LF */
            e->data = strdup(c->cur_data);
        }
        c->cur_len = 0;
        c->cur_event[0] = '\0';
        return;
    }
    if (line[0] == ':') {
        c->comments++;
        return;
    }
    colon = memchr(line, ':', n);
    flen = colon ? (size_t)(colon - line) : n;
    val = colon ? colon + 1 : line + n;
    if (val < line + n && *val == ' ')
        val++;
    vlen = (size_t)(line + n - val);
    if (flen == 4 && memcmp(line, "data", 4) == 0) {
        sse_grow(&c->cur_data, &c->cur_cap, c->cur_len + vlen + 2);
        memcpy(c->cur_data + c->cur_len, val, vlen);
        c->cur_len += vlen;
        c->cur_data[c->cur_len++] = '\n';
    } else if (flen == 5 && memcmp(line, "event", 5) == 0) {
        snprintf(c->cur_event, sizeof(c->cur_event), "%.*s", (int)vlen, val);
    } else if (flen == 2 && memcmp(line, "id", 2) == 0) {
        /* The last event id stays until changed (the spec's buffer). */
        snprintf(c->cur_id, sizeof(c->cur_id), "%.*s", (int)vlen, val);
    }
}

/* Interprets the complete lines of the body (LF only: latch sends LF). */
static void sse_interpret(sse_client *c)
{
    size_t start = 0, i;

    for (i = 0; i < c->blen; i++) {
        if (c->body[i] != '\n')
            continue;
        sse_line(c, c->body + start, i - start);
        start = i + 1;
    }
    if (start > 0)
        memmove(c->body, c->body + start, c->blen - start);
    c->blen -= start;
}

/* Takes the head and complete chunks off raw. */
static void sse_parse(sse_client *c)
{
    size_t pos = 0;

    if (!c->head_done) {
        char *e = c->rlen ? memmem(c->raw, c->rlen, "\r\n\r\n", 4) : NULL;
        if (e == NULL)
            return;
        pos = (size_t)(e - c->raw) + 4;
        snprintf(c->head, sizeof(c->head), "%.*s", (int)pos, c->raw);
        c->head_done = true;
    }
    while (!c->ended) {
        char *nl = memmem(c->raw + pos, c->rlen - pos, "\r\n", 2);
        unsigned long size;
        size_t hl;
        if (nl == NULL)
            break;
        size = strtoul(c->raw + pos, NULL, 16);
        hl = (size_t)(nl - (c->raw + pos)) + 2;
        if (c->rlen - pos < hl + size + 2)
            break;
        if (size == 0) {
            c->ended = true;
            pos += hl + 2;
            break;
        }
        sse_grow(&c->body, &c->bcap, c->blen + size);
        memcpy(c->body + c->blen, c->raw + pos + hl, size);
        c->blen += size;
        pos += hl + size + 2;
    }
    if (pos > 0)
        memmove(c->raw, c->raw + pos, c->rlen - pos);
    c->rlen -= pos;
    sse_interpret(c);
}

/* Reads what is there, waiting up to ms for something. false at EOF. */
static bool sse_pump(sse_client *c, int ms)
{
    struct pollfd p = {c->fd, POLLIN, 0};
    ssize_t n;

    if (c->eof)
        return false;
    if (poll(&p, 1, ms) <= 0)
        return true;
    sse_grow(&c->raw, &c->rcap, c->rlen + 65536);
    n = recv(c->fd, c->raw + c->rlen, 65536, 0);
    if (n <= 0) {
        c->eof = true;
        return false;
    }
    c->rlen += (size_t)n;
    sse_parse(c);
    return true;
}

/* Reads until n events arrived (or EOF, or ms passed). */
static size_t sse_wait_events(sse_client *c, size_t n, int ms)
{
    int64_t end = th_now_ms() + ms;

    while (c->nev < n && th_now_ms() < end && sse_pump(c, 50))
        ;
    return c->nev;
}

/* Pumps until the stream ended (its terminating chunk, or the server
 * closed) or ms passed; whether it ended. */
static inline bool sse_wait_end(sse_client *c, int ms)
{
    int64_t end = th_now_ms() + ms;

    while (!c->ended && !c->eof && th_now_ms() < end && sse_pump(c, 50))
        ;
    return c->ended || c->eof;
}

static void sse_close(sse_client *c)
{
    size_t i;

    if (c->fd >= 0)
        close(c->fd);
    for (i = 0; i < c->nev; i++)
        free(c->ev[i].data);
    free(c->ev);
    free(c->raw);
    free(c->body);
    free(c->cur_data);
    memset(c, 0, sizeof(*c));
    c->fd = -1;
}

#endif
