/*
 * ops.c - the options every mode of the `latch` command shares (ops.h):
 *
 *   --host HOST, --port PORT, --workers N   where and how it listens
 *   --tls CERT KEY                          HTTPS (PEM files, SIGHUP re-reads)
 *   --access-log [combined|json]            one line per response on stdout
 *   --metrics[=PATH]                        Prometheus text at PATH (/metrics)
 *   --debug                                 LATCH_DEBUG=lifecycle on stderr
 *
 * Values given apart are taken only when they can be one: --access-log
 * takes the next word when it is "combined" or "json", --metrics never
 * takes the next word (latch serve's DIR may start with '/'), so a path
 * other than /metrics is given as --metrics=PATH.
 */
#include "ops.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

const char cli_opts_usage[] =
    "  --host HOST           address to listen on (default 127.0.0.1)\n"
    "  --port PORT           port (default 8080; 0: the kernel chooses)\n"
    "  --workers N           worker threads (default 0: one per core)\n"
    "  --tls CERT KEY        serve HTTPS with the PEM certificate (chain)\n"
    "                        CERT and key KEY, re-read on SIGHUP\n"
    "  --access-log [combined|json]\n"
    "                        one line per response on stdout: nginx's\n"
    "                        combined format (the default) or JSON lines\n"
    "  --metrics[=PATH]      Prometheus metrics at PATH (default /metrics)\n"
    "  --debug               every request's lifecycle on stderr\n"
    "                        (as LATCH_DEBUG=lifecycle)\n";

void cli_opts_init(cli_opts *o)
{
    memset(o, 0, sizeof(*o));
    o->host = "127.0.0.1";
    o->port = 8080;
}

/* A whole decimal number in [lo, hi], or -1. */
static long number(const char *s, long lo, long hi)
{
    char *end;
    long v;

    if (s == NULL || *s < '0' || *s > '9')
        return -1;
    v = strtol(s, &end, 10);
    return *end == '\0' && v >= lo && v <= hi ? v : -1;
}

/* The word after the option, taken as its value when accept(word). */
static const char *next_word(int argc, char **argv,
                             bool (*accept)(const char *))
{
    if (optind < argc && accept(argv[optind]))
        return argv[optind++];
    return NULL;
}

static bool any_word(const char *w)
{
    return w[0] != '-';
}

static bool log_format(const char *w)
{
    return strcmp(w, "combined") == 0 || strcmp(w, "json") == 0;
}

int cli_opts_take(cli_opts *o, int opt, const char *cmd, int argc, char **argv)
{
    const char *v;

    switch (opt) {
    case CLI_HOST:
        if (optarg[0] == '\0')
            goto bad;
        o->host = optarg;
        return 1;
    case 'p':
    case CLI_PORT:
        if ((o->port = number(optarg, 0, 65535)) < 0)
            goto bad;
        return 1;
    case 'w':
    case CLI_WORKERS:
        if ((o->workers = number(optarg, 0, 1024)) < 0)
            goto bad;
        return 1;
    case CLI_TLS:
        /* --tls CERT KEY: the key is the next word. */
        o->cert = optarg;
        o->key = next_word(argc, argv, any_word);
        if (o->key == NULL) {
            fprintf(stderr, "%s: --tls takes two files: CERT KEY\n", cmd);
            return -1;
        }
        return 1;
    case CLI_ACCESS_LOG:
        v = optarg != NULL ? optarg : next_word(argc, argv, log_format);
        if (v == NULL || strcmp(v, "combined") == 0) {
            o->access_log = LATCH_LOG_COMBINED;
        } else if (strcmp(v, "json") == 0) {
            o->access_log = LATCH_LOG_JSON;
        } else {
            fprintf(stderr,
                    "%s: --access-log takes combined or json, not '%s'\n", cmd,
                    v);
            return -1;
        }
        return 1;
    case CLI_METRICS:
        o->metrics = optarg != NULL ? optarg : "/metrics";
        if (o->metrics[0] != '/') {
            fprintf(stderr,
                    "%s: --metrics takes a path starting with '/', not "
                    "'%s'\n",
                    cmd, o->metrics);
            return -1;
        }
        return 1;
    case CLI_DEBUG: o->debug = true; return 1;
    default: return 0;
    }

bad:
    fprintf(stderr, "%s: bad %s: '%s'\n", cmd,
            opt == CLI_HOST                 ? "host"
            : opt == 'p' || opt == CLI_PORT ? "port"
                                            : "worker count",
            optarg);
    return -1;
}

void cli_opts_env(const cli_opts *o)
{
    if (o->debug)
        setenv("LATCH_DEBUG", "lifecycle", 1);
}

int cli_opts_apply(const cli_opts *o, latch_app *app, const char *cmd)
{
    int r;

    latch_app_set_workers(app, (int)o->workers);
    if (o->access_log != 0 &&
        (r = latch_app_set_access_log(app, STDOUT_FILENO, o->access_log)) < 0) {
        fprintf(stderr, "%s: cannot write the access log: %s\n", cmd,
                latch_strerror(r));
        return 1;
    }
    if (o->metrics != NULL && (r = latch_use_metrics(app, o->metrics)) < 0) {
        fprintf(stderr, "%s: cannot serve metrics at %s: %s\n", cmd, o->metrics,
                latch_strerror(r));
        return 1;
    }
    return 0;
}

int cli_opts_listen(const cli_opts *o, latch_app *app, const char *cmd,
                    const char *what)
{
    int r = o->cert != NULL
                ? latch_listen_tls(app, o->host, (int)o->port, o->cert, o->key)
                : latch_listen(app, o->host, (int)o->port);

    if (r < 0) {
        fprintf(stderr, "%s: cannot listen on %s:%ld: %s\n", cmd, o->host,
                o->port, latch_strerror(r));
        return 1;
    }
    printf("latch: %slistening on %s://%s:%d/\n", what,
           o->cert != NULL ? "https" : "http", o->host, latch_app_port(app));
    fflush(stdout);
    return 0;
}
