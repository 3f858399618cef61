/*
 * idleconns - what one idle keep-alive connection costs a server in
 * resident memory, for `make bench`.
 *
 * It reads the server's VmRSS from /proc/<pid>/status, opens N connections
 * to it one after the other and makes one request on each (so that each is
 * a keep-alive connection the server has accepted, read from and answered,
 * not one waiting in the listen backlog), lets them sit idle for a moment,
 * reads VmRSS again, checks that the server closed none of them, and
 * prints (after - before) / N. The pid must be the process that holds the
 * connections (for nginx, the worker, not the master).
 *
 * The number is only meaningful on a server that has not served a load
 * yet: memory a load left behind in the allocator would be reused by the
 * new connections and hidden from the difference.
 *
 * It is not a load generator: connections are opened sequentially, and the
 * client sends nothing once they are idle.
 *
 * Usage: idleconns -p port -P pid [-n conns] [-u path] [-s settle_ms]
 * Defaults: 10000 connections, path /plaintext, 1000 ms of idling before
 * the second reading. Always 127.0.0.1. Output, one line:
 *   idleconns: conns=N rss_before_kb=B rss_after_kb=A bytes_per_conn=X
 * Exit status 0 on a valid measure, 1 when a connection failed or was
 * closed by the server, 2 on a usage error.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

enum { READ_TIMEOUT_S = 10, MAX_CONNS = 100000 };

/* The VmRSS of a process in kB, or -1 with a message. */
static long rss_kb(int pid)
{
    char path[64], line[256];
    long kb = -1;
    FILE *f;

    snprintf(path, sizeof(path), "/proc/%d/status", pid);
    f = fopen(path, "r");
    if (f == NULL) {
        fprintf(stderr, "idleconns: %s: %s\n", path, strerror(errno));
        return -1;
    }
    while (fgets(line, sizeof(line), f) != NULL) {
        if (strncmp(line, "VmRSS:", 6) == 0) {
            kb = strtol(line + 6, NULL, 10);
            break;
        }
    }
    fclose(f);
    if (kb < 0)
        fprintf(stderr, "idleconns: no VmRSS in %s\n", path);
    return kb;
}

/*
 * Raises the soft limit on open files to hold `want` descriptors (up to
 * the hard limit, which only a privileged process could move). Returns 0,
 * or -1 with a message when the hard limit is too low.
 */
static int raise_nofile(long want)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) < 0) {
        perror("idleconns: getrlimit");
        return -1;
    }
    if (rl.rlim_cur != RLIM_INFINITY && (long)rl.rlim_cur < want) {
        rl.rlim_cur = rl.rlim_max == RLIM_INFINITY || (long)rl.rlim_max >= want
                          ? (rlim_t)want
                          : rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) < 0 || (long)rl.rlim_cur < want) {
            fprintf(stderr,
                    "idleconns: cannot open %ld files (hard limit %ld)\n", want,
                    (long)rl.rlim_max);
            return -1;
        }
    }
    return 0;
}

/*
 * Opens one connection, sends one GET and reads one complete response,
 * which must be a 200 with a Content-Length. Returns the still open socket,
 * or -1 with a message.
 */
static int open_keepalive(int port, const char *req, size_t req_len)
{
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)port)};
    struct timeval tv = {.tv_sec = READ_TIMEOUT_S};
    char buf[4096];
    size_t len = 0;
    int fd;

    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        perror("idleconns: socket");
        return -1;
    }
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        perror("idleconns: connect");
        goto fail;
    }
    if (write(fd, req, req_len) != (ssize_t)req_len) {
        perror("idleconns: write");
        goto fail;
    }
    for (;;) {
        const char *end, *p;
        long body = -1;
        ssize_t n = read(fd, buf + len, sizeof(buf) - 1 - len);

        if (n <= 0) {
            fprintf(stderr, "idleconns: read: %s\n",
                    n == 0 ? "closed by the server" : strerror(errno));
            goto fail;
        }
        len += (size_t)n;
        buf[len] = '\0';
        end = strstr(buf, "\r\n\r\n");
        if (end == NULL) {
            if (len == sizeof(buf) - 1) {
                fprintf(stderr, "idleconns: response head too long\n");
                goto fail;
            }
            continue;
        }
        if (strncmp(buf, "HTTP/1.1 200", 12) != 0) {
            fprintf(stderr, "idleconns: not a 200: %.20s\n", buf);
            goto fail;
        }
        for (p = buf; p < end; p++) {
            if (p[0] == '\n' && strncasecmp(p + 1, "content-length:", 15) == 0)
                body = strtol(p + 16, NULL, 10);
        }
        if (body < 0) {
            fprintf(stderr, "idleconns: a response without Content-Length\n");
            goto fail;
        }
        if ((long)len >= end + 4 - buf + body)
            return fd;
    }
fail:
    close(fd);
    return -1;
}

int main(int argc, char **argv)
{
    int port = 0, pid = 0, settle_ms = 1000, opt, rc = 1;
    long n = 10000, opened = 0, closed = 0, i, before, after;
    const char *path = "/plaintext";
    char req[512];
    size_t req_len;
    struct pollfd *fds = NULL;

    while ((opt = getopt(argc, argv, "p:P:n:u:s:")) != -1) {
        switch (opt) {
        case 'p': port = atoi(optarg); break;
        case 'P': pid = atoi(optarg); break;
        case 'n': n = atol(optarg); break;
        case 'u': path = optarg; break;
        case 's': settle_ms = atoi(optarg); break;
        default: goto usage;
        }
    }
    if (port <= 0 || port > 65535 || pid <= 0 || n < 1 || n > MAX_CONNS ||
        settle_ms < 0 || strlen(path) > 256)
        goto usage;
    if (raise_nofile(n + 64) < 0)
        return 1;
    req_len = (size_t)snprintf(
        req, sizeof(req), "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", path);
    fds = calloc((size_t)n, sizeof(*fds));
    if (fds == NULL) {
        fprintf(stderr, "idleconns: out of memory\n");
        return 1;
    }
    before = rss_kb(pid);
    if (before < 0)
        goto out;
    for (opened = 0; opened < n; opened++) {
        fds[opened].fd = open_keepalive(port, req, req_len);
        if (fds[opened].fd < 0) {
            fprintf(stderr, "idleconns: connection %ld of %ld failed\n",
                    opened + 1, n);
            goto out;
        }
        fds[opened].events = POLLIN | POLLRDHUP;
    }
    usleep((useconds_t)settle_ms * 1000);
    after = rss_kb(pid);
    if (after < 0)
        goto out;
    /* An idle connection has nothing to read; anything readable means the
     * server closed it (or sent what it should not have), and the second
     * reading did not measure N open connections. */
    if (poll(fds, (nfds_t)n, 0) > 0) {
        for (i = 0; i < n; i++)
            closed += fds[i].revents != 0;
    }
    if (closed > 0) {
        fprintf(stderr, "idleconns: the server closed %ld of %ld connections\n",
                closed, n);
        goto out;
    }
    printf("idleconns: conns=%ld rss_before_kb=%ld rss_after_kb=%ld "
           "bytes_per_conn=%ld\n",
           n, before, after, (after - before) * 1024 / n);
    rc = 0;
out:
    for (i = 0; i < opened; i++)
        close(fds[i].fd);
    free(fds);
    return rc;
usage:
    fprintf(stderr,
            "usage: %s -p port -P pid [-n conns] [-u path] [-s settle_ms]\n",
            argv[0]);
    return 2;
}
