/*
 * poolconns - what one idle pooled upstream connection costs a reverse
 * proxy in resident memory, for bench/proxy.sh.
 *
 * The tool is both sides of the proxy: the upstream (it listens on
 * 127.0.0.1:UPORT, where the proxy must forward) and the client (N
 * keep-alive connections to the proxy, one request each). Two modes:
 *
 *   -c  concurrent: every client sends its request before the upstream
 *       answers any, so the proxy opens N upstream connections; then all
 *       are answered, and the proxy keeps N idle client connections and
 *       (when its pool allows) N idle pooled upstream connections;
 *   (default) sequential: one request at a time, answered before the next
 *       is sent, so the proxy reuses one pooled upstream connection; it
 *       keeps N idle client connections and one upstream connection.
 *
 * It reads the proxy's VmRSS before and after (after a settle time),
 * checks that the proxy closed no client connection, counts the upstream
 * connections still open (a proxy without a pool closes them), and prints
 * (after - before) / N. Run each mode on a fresh proxy: the difference of
 * the two figures is the cost of one pooled upstream connection.
 *
 * It is not a load generator: every step is sequential and bounded by a
 * 10 s timeout.
 *
 * With -K it then sends SIGUSR1 to the proxy and holds every connection
 * 500 ms more, for a proxy that reports its heap on that signal
 * (bench/apps/proxy_bench.c -M).
 *
 * Usage: poolconns -p proxy_port -P proxy_pid -U upstream_port [-n conns]
 *        [-c] [-s settle_ms] [-K]
 * Defaults: 1000 connections, 1000 ms. Output, one line:
 *   poolconns: mode=M conns=N upstream_conns=U upstream_open=O
 *   rss_before_kb=B rss_after_kb=A bytes_per_conn=X
 * Exit status 0 on a valid measure, 1 on a failure, 2 on a usage error.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

enum { TIMEOUT_MS = 10000, MAX_CONNS = 30000 };

static const char request[] = "GET /pool HTTP/1.1\r\nHost: bench\r\n\r\n";
static const char answer[] = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                             "Content-Length: 2\r\n\r\nok";

static long rss_kb(int pid)
{
    char path[64], line[256];
    long kb = -1;
    FILE *f;

    snprintf(path, sizeof(path), "/proc/%d/status", pid);
    if ((f = fopen(path, "r")) == NULL) {
        fprintf(stderr, "poolconns: %s: %s\n", path, strerror(errno));
        return -1;
    }
    while (fgets(line, sizeof(line), f) != NULL)
        if (strncmp(line, "VmRSS:", 6) == 0) {
            kb = strtol(line + 6, NULL, 10);
            break;
        }
    fclose(f);
    return kb;
}

static bool wait_in(int fd)
{
    struct pollfd p = {fd, POLLIN, 0};

    return poll(&p, 1, TIMEOUT_MS) == 1;
}

/* Reads until buf holds a head ("\r\n\r\n") and `body` more bytes. */
static bool read_message(int fd, size_t body)
{
    char buf[4096];
    size_t len = 0;

    for (;;) {
        const char *e;
        ssize_t n;

        buf[len] = '\0';
        e = strstr(buf, "\r\n\r\n");
        if (e != NULL && len - (size_t)(e + 4 - buf) >= body)
            return true;
        if (len == sizeof(buf) - 1 || !wait_in(fd))
            return false;
        n = read(fd, buf + len, sizeof(buf) - 1 - len);
        if (n <= 0)
            return false;
        len += (size_t)n;
    }
}

static bool send_all(int fd, const char *s, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, s, n, MSG_NOSIGNAL);
        if (w <= 0)
            return false;
        s += w;
        n -= (size_t)w;
    }
    return true;
}

static int connect_to(int port)
{
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    if (fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
        close(fd);
        fd = -1;
    }
    return fd;
}

/* Accepts one upstream connection within the timeout, or -1. */
static int accept_one(int lfd)
{
    return wait_in(lfd) ? accept4(lfd, NULL, NULL, SOCK_CLOEXEC) : -1;
}

/* Whether the peer closed fd (or sent something it should not have). */
static bool still_idle(int fd)
{
    struct pollfd p = {fd, POLLIN, 0};

    return poll(&p, 1, 0) == 0;
}

int main(int argc, char **argv)
{
    int port = 0, pid = 0, uport = 0, n = 1000, settle = 1000, opt, lfd;
    int *cfd, *ufd, nup = 0, open_up = 0;
    bool concurrent = false, signal_it = false;
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    struct rlimit rl;
    long before, after;

    while ((opt = getopt(argc, argv, "p:P:U:n:cs:K")) != -1) {
        switch (opt) {
        case 'p': port = atoi(optarg); break;
        case 'P': pid = atoi(optarg); break;
        case 'U': uport = atoi(optarg); break;
        case 'n': n = atoi(optarg); break;
        case 'c': concurrent = true; break;
        case 's': settle = atoi(optarg); break;
        case 'K': signal_it = true; break;
        default: port = 0; break;
        }
    }
    if (port <= 0 || pid <= 0 || uport <= 0 || n < 1 || n > MAX_CONNS) {
        fprintf(stderr,
                "usage: %s -p proxy_port -P proxy_pid -U upstream_port "
                "[-n conns] [-c] [-s settle_ms] [-K]\n",
                argv[0]);
        return 2;
    }
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    cfd = calloc((size_t)n, sizeof(int));
    ufd = calloc((size_t)n, sizeof(int));
    if (cfd == NULL || ufd == NULL)
        return 1;
    a.sin_port = htons((uint16_t)uport);
    lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &(int){1}, sizeof(int));
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&a, sizeof(a)) != 0 ||
        listen(lfd, 4096) != 0) {
        fprintf(stderr, "poolconns: cannot listen on %d: %s\n", uport,
                strerror(errno));
        return 1;
    }
    if ((before = rss_kb(pid)) < 0)
        return 1;
    if (concurrent) {
        for (int i = 0; i < n; i++)
            if ((cfd[i] = connect_to(port)) < 0 ||
                !send_all(cfd[i], request, sizeof(request) - 1))
                goto fail;
        for (nup = 0; nup < n; nup++)
            if ((ufd[nup] = accept_one(lfd)) < 0 || !read_message(ufd[nup], 0))
                goto fail;
        for (int i = 0; i < nup; i++)
            if (!send_all(ufd[i], answer, sizeof(answer) - 1))
                goto fail;
        for (int i = 0; i < n; i++)
            if (!read_message(cfd[i], 2))
                goto fail;
    } else {
        for (int i = 0; i < n; i++) {
            int u = nup - 1;

            if ((cfd[i] = connect_to(port)) < 0 ||
                !send_all(cfd[i], request, sizeof(request) - 1))
                goto fail;
            /* a new upstream connection when the proxy opened one, else
             * the request comes on a pooled one */
            for (;;) {
                struct pollfd q[2] = {{lfd, POLLIN, 0},
                                      {u >= 0 ? ufd[u] : -1, POLLIN, 0}};
                if (poll(q, 2, TIMEOUT_MS) <= 0)
                    goto fail;
                if (q[0].revents != 0) {
                    if (nup == n || (ufd[nup] = accept_one(lfd)) < 0)
                        goto fail;
                    u = nup++;
                    continue;
                }
                break;
            }
            if (!read_message(ufd[u], 0) ||
                !send_all(ufd[u], answer, sizeof(answer) - 1) ||
                !read_message(cfd[i], 2))
                goto fail;
        }
    }
    usleep((useconds_t)settle * 1000);
    if ((after = rss_kb(pid)) < 0)
        return 1;
    for (int i = 0; i < n; i++)
        if (!still_idle(cfd[i])) {
            fprintf(stderr, "poolconns: client connection %d closed\n", i);
            return 1;
        }
    /* a proxy without a pool closes them: counted, not an error */
    for (int i = 0; i < nup; i++)
        open_up += still_idle(ufd[i]);
    printf("poolconns: mode=%s conns=%d upstream_conns=%d upstream_open=%d "
           "rss_before_kb=%ld rss_after_kb=%ld bytes_per_conn=%.0f\n",
           concurrent ? "concurrent" : "sequential", n, nup, open_up, before,
           after, (double)(after - before) * 1024.0 / n);
    fflush(stdout);
    if (signal_it && kill(pid, SIGUSR1) == 0)
        usleep(500 * 1000);
    return 0;

fail:
    fprintf(stderr, "poolconns: a step failed or timed out (%s)\n",
            strerror(errno));
    return 1;
}
