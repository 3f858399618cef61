/*
 * ops.h - the options every mode of the `latch` command takes (where it
 * listens, how many workers, TLS, and the operations options --access-log,
 * --metrics, --debug), apart from the modes (demo.c, serve.c) so that they
 * share one parser, one usage text and one way to start listening.
 *
 * Each mode parses with getopt_long: it puts CLI_LONGOPTS in its table and
 * hands every option it does not know itself to cli_opts_take.
 */
#ifndef LATCH_TOOL_OPS_H
#define LATCH_TOOL_OPS_H

#include <latch.h>

#include <getopt.h>
#include <stdbool.h>

/* getopt_long answers for the shared long options (outside any char). */
enum {
    CLI_HOST = 0x100,
    CLI_PORT,
    CLI_WORKERS,
    CLI_TLS,
    CLI_ACCESS_LOG,
    CLI_METRICS,
    CLI_DEBUG
};

/* clang-format off */
#define CLI_LONGOPTS                                          \
    {"host", required_argument, NULL, CLI_HOST},              \
    {"port", required_argument, NULL, CLI_PORT},              \
    {"workers", required_argument, NULL, CLI_WORKERS},        \
    {"tls", required_argument, NULL, CLI_TLS},                \
    {"access-log", optional_argument, NULL, CLI_ACCESS_LOG},  \
    {"metrics", optional_argument, NULL, CLI_METRICS},        \
    {"debug", no_argument, NULL, CLI_DEBUG}
/* clang-format on */

typedef struct cli_opts {
    const char *host;    /* 127.0.0.1 */
    long port;           /* 8080; 0: the kernel chooses */
    long workers;        /* 0: one per core */
    const char *cert;    /* --tls CERT KEY; NULL: plain HTTP */
    const char *key;     /* (both or neither) */
    int access_log;      /* 0: off, else LATCH_LOG_COMBINED or _JSON */
    const char *metrics; /* the metrics route's path; NULL: off */
    bool debug;          /* LATCH_DEBUG=lifecycle */
} cli_opts;

/* The shared options' lines for a mode's --help. */
extern const char cli_opts_usage[];

/* The defaults above. */
void cli_opts_init(cli_opts *o);

/*
 * Takes the option getopt_long answered `opt` (CLI_*; 'p' and 'w' are
 * --port and --workers) with its optarg, and the word after it when that
 * word is the option's value given apart (--tls CERT KEY, --access-log
 * json): optind then moves past it. Returns 1 when taken, 0 when `opt` is
 * not a shared option, -1 after printing to stderr why the value is wrong
 * (`cmd` names the command in the message: "latch", "latch serve").
 */
int cli_opts_take(cli_opts *o, int opt, const char *cmd, int argc, char **argv);

/*
 * Before latch_app_new: --debug turns the lifecycle trace on (latch reads
 * LATCH_DEBUG once, when the first app is made).
 */
void cli_opts_env(const cli_opts *o);

/*
 * First thing after latch_app_new (the metrics route must come before a
 * mode's catch-all routes): the access log on stdout, the metrics route.
 * Returns 0, or 1 after printing why it cannot.
 */
int cli_opts_apply(const cli_opts *o, latch_app *app, const char *cmd);

/*
 * With the app's routes in place: listens (TLS when --tls was given) and
 * prints where on stdout, "latch: <what>listening on http(s)://HOST:PORT/"
 * (`what` may be ""), flushed. Returns 0, or 1 after printing why not.
 */
int cli_opts_listen(const cli_opts *o, latch_app *app, const char *cmd,
                    const char *what);

#endif
