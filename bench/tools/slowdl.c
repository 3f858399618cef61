/*
 * slowdl - what a server's memory does while many clients download a big
 * file slowly, for bench/slowdl.sh (issue 13: "RSS while 1,000 clients
 * download 100 MB each slowly").
 *
 * It opens N connections to 127.0.0.1:port, each with a small receive
 * buffer (SO_RCVBUF, set before connect so the window stays small), sends
 * one GET of the path on each, then reads every connection at a fixed
 * rate (bytes per second, in ticks of 50 ms) for a fixed time, and closes
 * them all. A server that sends what the client does not read yet must
 * keep it somewhere: in its own memory (what this measures), or in the
 * file (sendfile), or in the kernel's socket buffers (not the process's
 * RSS). Meanwhile it samples, every 250 ms, the sum of VmRSS of the given
 * processes (nginx: master and worker) from /proc/PID/status; at the end
 * it reads their VmHWM (the peak resident size since each started).
 *
 * Bounded: at most -t seconds of reading (default 20), connections
 * opened one after the other with a 5 s timeout each, all closed before
 * it exits; RLIMIT_NOFILE is raised to what N needs when the hard limit
 * allows it.
 *
 * Usage: slowdl -p port -P pid[,pid...] [-u path] [-n conns] [-r bytes/s]
 *               [-t seconds] [-b rcvbuf]
 * Defaults: /100m.bin, 1000 connections, 65536 bytes/s each, 20 s, a
 * receive buffer of 16384 (the kernel doubles it). Output, one line:
 *   slowdl: conns=N ok=K failed=F mb_read=M rate_kib_s=R
 *     rss_before_kb=B rss_max_kb=X rss_end_kb=E hwm_kb=H rss_after_kb=A
 *     per_conn_bytes=P
 * rss_end_kb is the last sample with every connection open; per_conn_bytes
 * is (rss_max - rss_before) / N; rss_after_kb is 1 s after all closed.
 * Exit status 0 when every connection got a 200 and stayed open to the
 * end, 1 otherwise, 2 on a usage error.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { MAX_CONNS = 100000, MAX_PIDS = 8, TICK_MS = 50, SAMPLE_MS = 250 };

typedef struct client {
    int fd;
    bool head_ok;   /* the status line said 200 */
    bool ended;     /* EOF or an error before the end */
    int err;        /* the errno that ended it (0: EOF) */
    uint64_t got;   /* bytes read (head and body) */
    double budget;  /* bytes it may read now */
    char first[16]; /* the first bytes, for the status line */
} client;

static int pids[MAX_PIDS], npids;

static int64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A field of /proc/PID/status in kB ("VmRSS:", "VmHWM:"), or -1. */
static long status_kb(int pid, const char *field)
{
    char path[64], line[256];
    size_t n = strlen(field);
    long kb = -1;
    FILE *f;

    snprintf(path, sizeof(path), "/proc/%d/status", pid);
    if ((f = fopen(path, "r")) == NULL)
        return -1;
    while (fgets(line, sizeof(line), f) != NULL)
        if (strncmp(line, field, n) == 0) {
            kb = strtol(line + n, NULL, 10);
            break;
        }
    fclose(f);
    return kb;
}

/* The sum over the processes; -1 when one is gone. */
static long sum_kb(const char *field)
{
    long s = 0, v;

    for (int i = 0; i < npids; i++) {
        if ((v = status_kb(pids[i], field)) < 0)
            return -1;
        s += v;
    }
    return s;
}

/* One connection with a small receive buffer, connected (blocking, 5 s
 * at most), then non-blocking. -1 on failure. */
static int open_conn(int port, int rcvbuf)
{
    struct sockaddr_in sa;
    struct timeval tv = {5, 0};
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    if (fd < 0)
        return -1;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Reads what this client may read now (its budget), without blocking. */
static void read_some(client *c)
{
    static char buf[256 * 1024];

    while (!c->ended && c->budget >= 1) {
        size_t want = c->budget < sizeof(buf) ? (size_t)c->budget : sizeof(buf);
        ssize_t n = recv(c->fd, buf, want, MSG_DONTWAIT);

        if (n > 0) {
            if (c->got < sizeof(c->first) - 1) {
                size_t k = sizeof(c->first) - 1 - (size_t)c->got;
                memcpy(c->first + c->got, buf, (size_t)n < k ? (size_t)n : k);
                if (c->got + (uint64_t)n >= 12)
                    c->head_ok = strncmp(c->first, "HTTP/1.1 200", 12) == 0;
            }
            c->got += (uint64_t)n;
            c->budget -= (double)n;
        } else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
            c->ended = true;
            c->err = n == 0 ? 0 : errno;
        } else if (errno == EAGAIN) {
            break;
        }
    }
}

static int usage(void)
{
    fprintf(stderr, "usage: slowdl -p port -P pid[,pid...] [-u path] "
                    "[-n conns] [-r bytes/s] [-t seconds] [-b rcvbuf]\n");
    return 2;
}

int main(int argc, char **argv)
{
    const char *path = "/100m.bin";
    int port = 0, n = 1000, secs = 20, rcvbuf = 16384, opt, ok = 0, failed = 0;
    int no_head = 0, eof = 0, reset = 0;
    double rate = 65536;
    long before, rss, rss_max, rss_end, hwm, after;
    uint64_t total = 0;
    int64_t t0, t_end, t_read, next_sample, last;
    struct rlimit rl;
    client *cs;
    char req[512];
    int reqlen;

    while ((opt = getopt(argc, argv, "p:P:u:n:r:t:b:")) != -1) {
        switch (opt) {
        case 'p': port = atoi(optarg); break;
        case 'P':
            for (char *s = optarg; *s != '\0' && npids < MAX_PIDS;) {
                pids[npids++] = (int)strtol(s, &s, 10);
                if (*s == ',')
                    s++;
            }
            break;
        case 'u': path = optarg; break;
        case 'n': n = atoi(optarg); break;
        case 'r': rate = atof(optarg); break;
        case 't': secs = atoi(optarg); break;
        case 'b': rcvbuf = atoi(optarg); break;
        default: return usage();
        }
    }
    if (port <= 0 || npids == 0 || n <= 0 || n > MAX_CONNS || rate <= 0 ||
        secs <= 0 || secs > 600)
        return usage();
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t)n + 64) {
        rl.rlim_cur = (rlim_t)n + 64;
        if (rl.rlim_max < rl.rlim_cur)
            rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    if ((cs = calloc((size_t)n, sizeof(*cs))) == NULL)
        return 1;
    reqlen =
        snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", path);
    before = sum_kb("VmRSS:");
    for (int i = 0; i < n; i++) {
        cs[i].fd = open_conn(port, rcvbuf);
        if (cs[i].fd < 0 || send(cs[i].fd, req, (size_t)reqlen, 0) != reqlen) {
            fprintf(stderr, "slowdl: connection %d: %s\n", i, strerror(errno));
            cs[i].ended = true;
        }
    }
    /* Read at the rate for `secs`, sampling the servers' memory. */
    rss_max = rss_end = sum_kb("VmRSS:");
    t0 = last = now_ms();
    t_end = t0 + (int64_t)secs * 1000;
    next_sample = t0 + SAMPLE_MS;
    while (now_ms() < t_end) {
        int64_t t;
        poll(NULL, 0, TICK_MS);
        t = now_ms();
        for (int i = 0; i < n; i++) {
            if (cs[i].ended)
                continue;
            /* at most one second of credit: a client that fell behind
             * does not then read in a burst */
            cs[i].budget += rate * (double)(t - last) / 1000.0;
            if (cs[i].budget > rate)
                cs[i].budget = rate;
            read_some(&cs[i]);
        }
        last = t;
        if (t >= next_sample) {
            if ((rss = sum_kb("VmRSS:")) > rss_max)
                rss_max = rss;
            if (rss >= 0)
                rss_end = rss;
            next_sample = t + SAMPLE_MS;
        }
    }
    t_read = now_ms();
    hwm = sum_kb("VmHWM:");
    for (int i = 0; i < n; i++) {
        total += cs[i].got;
        if (cs[i].head_ok && !cs[i].ended)
            ok++;
        else
            failed++;
        if (!cs[i].head_ok)
            no_head++;
        else if (cs[i].ended && cs[i].err == 0)
            eof++;
        else if (cs[i].ended)
            reset++;
        if (cs[i].fd >= 0)
            close(cs[i].fd);
    }
    poll(NULL, 0, 1000);
    after = sum_kb("VmRSS:");
    if (failed > 0)
        fprintf(stderr,
                "slowdl: failed: %d without a 200, %d closed by the server "
                "(EOF), %d reset or another error\n",
                no_head, eof, reset);
    printf("slowdl: conns=%d ok=%d failed=%d mb_read=%.1f rate_kib_s=%.1f "
           "rss_before_kb=%ld rss_max_kb=%ld rss_end_kb=%ld hwm_kb=%ld "
           "rss_after_kb=%ld per_conn_bytes=%.0f\n",
           n, ok, failed, (double)total / 1048576.0,
           (double)total / 1024.0 / n / ((double)(t_read - t0) / 1000.0),
           before, rss_max, rss_end, hwm, after,
           (double)(rss_max - before) * 1024.0 / n);
    free(cs);
    return failed == 0 ? 0 : 1;
}
