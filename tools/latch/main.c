/*
 * latch - the latch command: `latch demo` (demo.c, what `make run`
 * starts), `latch serve [DIR]` (serve.c, a static file server), and
 * `latch --help` / `latch --version`. Each mode is a user of the library
 * like any other: it registers routes and runs an app; the options they
 * share (where to listen, TLS, --access-log, --metrics, --debug) are
 * ops.c's. man/latch.1 tells it all.
 *
 * With no command, or options first, it is the demo: `latch -p 0` is
 * `latch demo -p 0`, as it was before latch had commands.
 */
#include "cmd.h"
#include "ops.h"

#include <latch.h>

#include <stdio.h>
#include <string.h>

static const char usage[] =
    "usage: latch [demo] [options]\n"
    "       latch serve [DIR] [options]\n"
    "       latch --help | --version\n"
    "\n"
    "commands:\n"
    "  demo          the demo app (the default): each lifecycle bug a\n"
    "                route, with what latch reported; latch demo --help\n"
    "  serve [DIR]   serve the files under DIR (default: .) over HTTP;\n"
    "                latch serve --help for its own options\n"
    "\n"
    "options both take:\n";

static const char usage_tail[] =
    "\n"
    "examples:\n"
    "  latch                             the demo on http://127.0.0.1:8080/\n"
    "  latch serve public --port 3000    ./public on port 3000\n"
    "  latch serve --access-log json --metrics --debug\n"
    "\n"
    "See latch(1).\n";

static void print_usage(FILE *f)
{
    fputs(usage, f);
    fputs(cli_opts_usage, f);
    fputs(usage_tail, f);
}

int main(int argc, char **argv)
{
    const char *cmd = argc > 1 ? argv[1] : NULL;

    if (cmd == NULL || cmd[0] == '-') {
        if (cmd != NULL &&
            (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-?") == 0)) {
            print_usage(stdout);
            return 0;
        }
        if (cmd != NULL && strcmp(cmd, "--version") == 0) {
            printf("latch %s\n", LATCH_VERSION_STRING);
            return 0;
        }
        /* options first: the demo's (argv[0] stands in for "demo") */
        return latch_cmd_demo(argc, argv);
    }
    if (strcmp(cmd, "demo") == 0)
        return latch_cmd_demo(argc - 1, argv + 1);
    if (strcmp(cmd, "serve") == 0)
        return latch_cmd_serve(argc - 1, argv + 1);
    if (strcmp(cmd, "help") == 0) {
        print_usage(stdout);
        return 0;
    }
    if (strcmp(cmd, "version") == 0) {
        printf("latch %s\n", LATCH_VERSION_STRING);
        return 0;
    }
    fprintf(stderr, "latch: unknown command '%s'\n\n", cmd);
    print_usage(stderr);
    return 2;
}
