/*
 * sseclients - fan-out of Server-Sent Events, measured from the clients:
 * N subscribers of one channel on a server that publishes on command
 * (bench/apps/sse_bench.c, bench/node/sse.js), for `bench/sse.sh`.
 *
 * It opens N connections to GET /events (one after the other, each
 * waiting for its response head, so that every one is a subscriber the
 * server has accepted), then reads the server's VmRSS again: the memory
 * per subscriber is (after - before) / N, as idleconns measures it for an
 * idle connection. Then, for each round, it asks the server to publish
 * (GET /publish?n=K&rate=R: K events, R a second, 0 as fast as it can; the
 * data of each event is the publisher's CLOCK_MONOTONIC in ns when it
 * published it, which this process shares) and reads every connection
 * with epoll until each got the K events or the deadline passed:
 *   deliveries/s  N*K over the time from the first publish to the last
 *                 event received (a burst, R = 0: the fan-out throughput);
 *   latency       receive time minus publish time of every delivery,
 *                 p50 and p99 (at a rate the server keeps up with: the
 *                 time an event takes to reach a subscriber);
 *   cpu ns/deliv  the CPU the server process (and -R pid, Redis) used
 *                 during the round, from /proc/<pid>/stat, per delivery.
 * It is a measure, not a check: a round that loses events says so (the
 * count) and the exit status is 1.
 *
 * Usage: sseclients -p port -P pid [-n subscribers] [-k events]
 *        [-r rate] [-i rounds] [-w warm-up rounds] [-R redis_pid]
 *        [-l label]
 * Warm-up rounds (default 0) run first, exactly as the others, and are
 * printed but left out of the medians: the first burst after the
 * subscribers connected pays for first-touch page faults and cold caches
 * (a single round at 1,000 subscribers read 120-480 ns a delivery for the
 * same code).
 * Always 127.0.0.1. Output: one line per round, then a summary line
 *   sse: label=L subs=N rss_per_sub_b=X deliveries_s=D p50_us=A p99_us=B
 *        cpu_ns_per_delivery=C
 * with the medians of the rounds.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { MAX_SUBS = 60000, BUF = 65536, DEADLINE_S = 60 };

typedef struct sub {
    int fd;
    uint32_t got;  /* events this round */
    size_t keep;   /* bytes of an incomplete line kept in line[] */
    char line[64]; /* the start of a "data: " line split across reads */
} sub;

static int64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static long rss_kb(int pid)
{
    char path[64], line[256];
    long kb = -1;
    FILE *f;

    snprintf(path, sizeof(path), "/proc/%d/status", pid);
    if ((f = fopen(path, "r")) == NULL)
        return -1;
    while (fgets(line, sizeof(line), f) != NULL)
        if (strncmp(line, "VmRSS:", 6) == 0) {
            kb = strtol(line + 6, NULL, 10);
            break;
        }
    fclose(f);
    return kb;
}

/* utime + stime of a process, in ns (0 for pid 0). */
static int64_t cpu_ns(int pid)
{
    char path[64], buf[1024], *p;
    unsigned long ut = 0, st = 0;
    FILE *f;
    size_t n;

    if (pid <= 0)
        return 0;
    snprintf(path, sizeof(path), "/proc/%d/stat", pid);
    if ((f = fopen(path, "r")) == NULL)
        return 0;
    n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    /* After the command's ")": state is field 3, utime 14, stime 15. */
    if ((p = strrchr(buf, ')')) == NULL ||
        sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu",
               &ut, &st) != 2)
        return 0;
    return (int64_t)(ut + st) * (1000000000 / sysconf(_SC_CLK_TCK));
}

static int dial(int port)
{
    struct sockaddr_in sa;
    int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;

    if (fd < 0)
        return -1;
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        close(fd);
        return -1;
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return fd;
}

/* Sends a GET and reads up to the end of the response head (and, with
 * whole, to the end of the connection). 0 or -1. A subscription (not
 * whole) asks as a browser's EventSource does, with Accept:
 * text/event-stream (the WHATWG spec has every EventSource send it; latch
 * keeps such a request's head in a buffer of its own size). */
static int get(int fd, const char *path, bool whole)
{
    char req[256], buf[4096];
    size_t have = 0;
    ssize_t n;
    int len = snprintf(
        req, sizeof(req), "GET %s HTTP/1.1\r\nHost: b\r\n%s\r\n", path,
        whole ? "Connection: close\r\n" : "Accept: text/event-stream\r\n");

    if (write(fd, req, (size_t)len) != len)
        return -1;
    for (;;) {
        n = read(fd, buf + have, sizeof(buf) - 1 - have);
        if (n <= 0)
            return whole && have > 0 ? 0 : -1;
        have += (size_t)n;
        buf[have] = '\0';
        if (!whole && strstr(buf, "\r\n\r\n") != NULL)
            return strncmp(buf, "HTTP/1.1 200", 12) == 0 ? 0 : -1;
        if (have == sizeof(buf) - 1)
            have = 0; /* only the end matters */
    }
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    int i, j;

    for (i = 1; i < n; i++)
        for (j = i; j > 0 && v[j - 1] > v[j]; j--) {
            double t = v[j];
            v[j] = v[j - 1];
            v[j - 1] = t;
        }
    return n == 0 ? 0 : n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* The "data: <ns>" lines of one read; each is one event. */
static void scan(sub *s, const char *p, size_t n, int64_t t, int64_t *lat,
                 size_t *nlat, size_t cap, int64_t *first)
{
    const char *end = p + n, *nl;
    char tmp[64];

    while (p < end) {
        nl = memchr(p, '\n', (size_t)(end - p));
        size_t len = nl != NULL ? (size_t)(nl - p) : (size_t)(end - p);
        if (nl == NULL) { /* keep a partial line (only its start matters) */
            size_t k = len < sizeof(s->line) - s->keep
                           ? len
                           : sizeof(s->line) - s->keep;
            memcpy(s->line + s->keep, p, k);
            s->keep += k;
            return;
        }
        const char *line = p;
        if (s->keep > 0) {
            size_t k = len < sizeof(tmp) - 1 - s->keep
                           ? len
                           : sizeof(tmp) - 1 - s->keep;
            memcpy(tmp, s->line, s->keep);
            memcpy(tmp + s->keep, p, k);
            len = s->keep + k;
            tmp[len] = '\0';
            line = tmp;
            s->keep = 0;
        }
        if (len > 6 && memcmp(line, "data: ", 6) == 0) {
            int64_t ts = strtoll(line + 6, NULL, 10);
            s->got++;
            if (*first == 0 || ts < *first)
                *first = ts;
            if (*nlat < cap)
                lat[(*nlat)++] = t - ts;
        }
        p = nl + 1;
    }
}

int main(int argc, char **argv)
{
    int port = 0, pid = 0, rpid = 0, nsubs = 1000, k = 20, rounds = 3, i, r;
    int warm = 0;
    int ep, bad = 0;
    double rate = 0, dps[16], p50s[16], p99s[16], cpus[16];
    const char *label = "server";
    long before, after;
    sub *subs;
    int64_t *lat;
    size_t cap;
    char *buf;

    for (i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "-p") == 0)
            port = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "-P") == 0)
            pid = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "-R") == 0)
            rpid = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "-n") == 0)
            nsubs = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "-k") == 0)
            k = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "-r") == 0)
            rate = atof(argv[i + 1]);
        else if (strcmp(argv[i], "-i") == 0)
            rounds = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "-w") == 0)
            warm = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "-l") == 0)
            label = argv[i + 1];
    }
    if (port <= 0 || pid <= 0 || nsubs < 1 || nsubs > MAX_SUBS || k < 1 ||
        rounds < 1 || rounds > 16 || warm < 0 || warm > 16) {
        fprintf(stderr, "usage: sseclients -p port -P pid [-n subs] [-k "
                        "events] [-r rate] [-i rounds<=16] [-w warm<=16] "
                        "[-R redis_pid] [-l label]\n");
        return 2;
    }
    subs = calloc((size_t)nsubs, sizeof(*subs));
    cap = (size_t)nsubs * (size_t)k;
    lat = malloc(cap * sizeof(*lat));
    buf = malloc(BUF);
    if (subs == NULL || lat == NULL || buf == NULL)
        return 2;
    before = rss_kb(pid);
    for (i = 0; i < nsubs; i++) {
        if ((subs[i].fd = dial(port)) < 0 || get(subs[i].fd, "/events", 0)) {
            fprintf(stderr, "sseclients: subscriber %d: %s\n", i,
                    strerror(errno));
            return 1;
        }
    }
    usleep(500000); /* let the server settle */
    after = rss_kb(pid);
    ep = epoll_create1(0);
    for (i = 0; i < nsubs; i++) {
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
        epoll_ctl(ep, EPOLL_CTL_ADD, subs[i].fd, &ev);
    }
    /* r < 0: the warm-up rounds. */
    for (r = -warm; r < rounds; r++) {
        char path[128];
        double dps_r, p50_r, p99_r, cpu_r;
        int cfd, done = 0;
        size_t nlat = 0;
        int64_t first = 0, last = 0, c0, c1,
                deadline = now_ns() + (int64_t)DEADLINE_S * 1000000000;
        struct epoll_event evs[256];

        for (i = 0; i < nsubs; i++)
            subs[i].got = 0;
        snprintf(path, sizeof(path), "/publish?n=%d&rate=%g", k, rate);
        c0 = cpu_ns(pid) + cpu_ns(rpid);
        if ((cfd = dial(port)) < 0 || get(cfd, path, 1) < 0) {
            fprintf(stderr, "sseclients: %s failed\n", path);
            return 1;
        }
        close(cfd);
        while (done < nsubs && now_ns() < deadline) {
            int n = epoll_wait(ep, evs, 256, 1000), e;
            for (e = 0; e < n; e++) {
                sub *s = &subs[evs[e].data.u32];
                ssize_t got = read(s->fd, buf, BUF);
                uint32_t was = s->got;
                if (got <= 0) {
                    fprintf(stderr, "sseclients: a subscriber was closed\n");
                    return 1;
                }
                last = now_ns();
                scan(s, buf, (size_t)got, last, lat, &nlat, cap, &first);
                if (was < (uint32_t)k && s->got >= (uint32_t)k)
                    done++;
            }
        }
        c1 = cpu_ns(pid) + cpu_ns(rpid);
        qsort(lat, nlat, sizeof(*lat), cmp_i64);
        dps_r = (double)nlat / ((double)(last - first) / 1e9);
        p50_r = nlat ? (double)lat[nlat / 2] / 1e3 : 0;
        p99_r = nlat ? (double)lat[nlat * 99 / 100] / 1e3 : 0;
        cpu_r = nlat ? (double)(c1 - c0) / (double)nlat : 0;
        if (done < nsubs)
            bad = 1;
        if (r >= 0) {
            dps[r] = dps_r;
            p50s[r] = p50_r;
            p99s[r] = p99_r;
            cpus[r] = cpu_r;
        }
        printf("%s %d: %s subs=%d events=%d rate=%g delivered=%zu/%zu "
               "deliveries_s=%.0f p50_us=%.0f p99_us=%.0f "
               "cpu_ns_per_delivery=%.0f\n",
               r < 0 ? "warm-up" : "round", r < 0 ? r + warm + 1 : r + 1, label,
               nsubs, k, rate, nlat, cap, dps_r, p50_r, p99_r, cpu_r);
        fflush(stdout);
        usleep(200000);
    }
    printf("sse: label=%s subs=%d rate=%g rss_per_sub_b=%ld deliveries_s=%.0f "
           "p50_us=%.0f p99_us=%.0f cpu_ns_per_delivery=%.0f%s\n",
           label, nsubs, rate, (after - before) * 1024 / nsubs,
           median(dps, rounds), median(p50s, rounds), median(p99s, rounds),
           median(cpus, rounds), bad ? " INCOMPLETE" : "");
    for (i = 0; i < nsubs; i++)
        close(subs[i].fd);
    free(subs);
    free(lat);
    free(buf);
    return bad;
}
