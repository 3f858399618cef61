/*
 * fixedclient - sends an exact number of keep-alive requests and checks
 * every answer, for the instruction counts of `make bench`.
 *
 * The load generator of the timed benchmark (wrk) sends as much as it can
 * for a duration; the instruction count needs the opposite: a fixed amount
 * of work, done the same way on every run, so that the count of the server
 * under callgrind divided by the number of requests means something. So this
 * client is strictly sequential: it opens C connections, then, taking them
 * in turn, writes D requests at once (D = 1: no pipelining) on one
 * connection and reads the D responses before it moves to the next. No
 * timing decides how the server's reads and writes are batched.
 *
 * Every response must be "HTTP/1.1 200" with a Content-Length (the servers
 * of the benchmark all send one); anything else, a closed connection or a
 * read that takes longer than the timeout fails the run.
 *
 * It is not a load generator and not an HTTP client beyond that: no
 * chunked bodies, no redirects, no TLS.
 *
 * Usage: fixedclient -p port [-n requests] [-c conns] [-d depth]
 *                    [-u path] [-w connect_wait_s]
 * Defaults: 20000 requests, 10 connections, depth 1, path /plaintext,
 * 60 s to wait for the server to accept (it may be starting under
 * valgrind). Always 127.0.0.1. Exit status 0 when every request was
 * answered with 200, 1 otherwise, 2 on a usage error.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

enum {
    MAX_CONNS = 1000,
    MAX_DEPTH = 64,
    READ_TIMEOUT_S = 30,
    /* One connection's input buffer: D responses of the benchmark's small
     * bodies fit many times over. */
    INBUF_CAP = 256 * 1024,
};

/* The input side of one connection: bytes received and not yet parsed. */
typedef struct conn {
    int fd;
    size_t len;
    char buf[INBUF_CAP];
} conn;

/* Seconds on a monotonic clock. */
static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/*
 * Connects to 127.0.0.1:port, retrying while the server is not listening
 * yet, for at most wait_s seconds. Returns the socket (blocking, with a
 * receive timeout and TCP_NODELAY) or -1 with a message on stderr.
 */
static int connect_retry(int port, double wait_s)
{
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)port)};
    struct timeval tv = {.tv_sec = READ_TIMEOUT_S};
    double deadline = now_s() + wait_s;
    int one = 1;

    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    for (;;) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

        if (fd < 0) {
            perror("fixedclient: socket");
            return -1;
        }
        if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
            return fd;
        }
        close(fd);
        /* Only "nobody listens yet" is worth waiting for. */
        if (errno != ECONNREFUSED || now_s() > deadline) {
            fprintf(stderr, "fixedclient: connect to port %d: %s\n", port,
                    strerror(errno));
            return -1;
        }
        usleep(50 * 1000);
    }
}

/* Writes all of buf. Returns 0 or -1 with a message. */
static int write_all(int fd, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, buf, len);

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            perror("fixedclient: write");
            return -1;
        }
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

/*
 * The length of the first complete response in c->buf, once it is all
 * there: 0 while more bytes are needed, -1 when the response is not a 200
 * with a Content-Length. Only the status code and Content-Length are
 * looked at.
 */
static long response_length(const conn *c)
{
    const char *end = memmem(c->buf, c->len, "\r\n\r\n", 4);
    const char *p;
    long head, body = -1;

    if (end == NULL)
        return c->len >= sizeof(c->buf) ? -1 : 0;
    head = end + 4 - c->buf;
    if (c->len < 12 || memcmp(c->buf, "HTTP/1.1 200", 12) != 0) {
        /* The status line ends before the head's end: memchr finds it. */
        const char *eol = memchr(c->buf, '\r', (size_t)head);

        fprintf(stderr, "fixedclient: not a 200: %.*s\n", (int)(eol - c->buf),
                c->buf);
        return -1;
    }
    /* Field names are case-insensitive; each starts after a CRLF. */
    for (p = c->buf; p < end; p++) {
        if (p[0] == '\n' && end - p > 16 &&
            strncasecmp(p + 1, "content-length:", 15) == 0) {
            body = strtol(p + 16, NULL, 10);
            break;
        }
    }
    if (body < 0) {
        fprintf(stderr, "fixedclient: a response without Content-Length\n");
        return -1;
    }
    return c->len >= (size_t)(head + body) ? head + body : 0;
}

/* Reads and checks `count` responses on c. Returns 0 or -1. */
static int read_responses(conn *c, int count)
{
    while (count > 0) {
        long r = response_length(c);
        ssize_t n;

        if (r < 0)
            return -1;
        if (r > 0) {
            /* Keep whatever belongs to the next response. */
            memmove(c->buf, c->buf + r, c->len - (size_t)r);
            c->len -= (size_t)r;
            count--;
            continue;
        }
        n = read(c->fd, c->buf + c->len, sizeof(c->buf) - c->len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            fprintf(stderr, "fixedclient: read: %s\n",
                    n == 0 ? "connection closed by the server"
                           : strerror(errno));
            return -1;
        }
        c->len += (size_t)n;
    }
    return 0;
}

static void usage(const char *argv0)
{
    fprintf(stderr,
            "usage: %s -p port [-n requests] [-c conns] [-d depth] "
            "[-u path] [-w connect_wait_s]\n",
            argv0);
}

int main(int argc, char **argv)
{
    long total = 20000, done = 0;
    int port = 0, nconns = 10, depth = 1, opt, i, rc = 1;
    double wait_s = 60;
    const char *path = "/plaintext";
    char req[512], *batch = NULL;
    size_t req_len;
    conn *conns = NULL;

    while ((opt = getopt(argc, argv, "p:n:c:d:u:w:")) != -1) {
        switch (opt) {
        case 'p': port = atoi(optarg); break;
        case 'n': total = atol(optarg); break;
        case 'c': nconns = atoi(optarg); break;
        case 'd': depth = atoi(optarg); break;
        case 'u': path = optarg; break;
        case 'w': wait_s = atof(optarg); break;
        default: usage(argv[0]); return 2;
        }
    }
    if (port <= 0 || port > 65535 || total < 0 || nconns < 1 ||
        nconns > MAX_CONNS || depth < 1 || depth > MAX_DEPTH ||
        strlen(path) > 256) {
        usage(argv[0]);
        return 2;
    }
    req_len = (size_t)snprintf(
        req, sizeof(req), "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", path);
    batch = malloc(req_len * (size_t)depth);
    conns = calloc((size_t)nconns, sizeof(*conns));
    if (batch == NULL || conns == NULL) {
        fprintf(stderr, "fixedclient: out of memory\n");
        goto out;
    }
    for (i = 0; i < depth; i++)
        memcpy(batch + req_len * (size_t)i, req, req_len);
    for (i = 0; i < nconns; i++)
        conns[i].fd = -1;
    for (i = 0; i < nconns; i++) {
        conns[i].fd = connect_retry(port, wait_s);
        if (conns[i].fd < 0)
            goto out;
    }
    /* Round-robin over the connections, one batch of `depth` at a time. */
    for (i = 0; done < total; i = (i + 1) % nconns) {
        int n = total - done < depth ? (int)(total - done) : depth;

        if (write_all(conns[i].fd, batch, req_len * (size_t)n) < 0 ||
            read_responses(&conns[i], n) < 0) {
            fprintf(stderr, "fixedclient: failed after %ld of %ld requests\n",
                    done, total);
            goto out;
        }
        done += n;
    }
    printf("fixedclient: %ld requests to %s over %d connections, depth %d: "
           "all 200\n",
           done, path, nconns, depth);
    rc = 0;
out:
    if (conns != NULL) {
        for (i = 0; i < nconns; i++)
            if (conns[i].fd >= 0)
                close(conns[i].fd);
    }
    free(conns);
    free(batch);
    return rc;
}
