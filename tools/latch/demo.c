/*
 * demo.c - `latch demo`, what `make run` starts: a page of routes served by
 * the library like any user's app (GET /, /hello, /json; POST /echo).
 *
 * What it is not: a benchmark target (bench/ has its own apps) or a place
 * for configuration; everything is a command-line option (ops.c).
 */
#include "cmd.h"
#include "ops.h"

#include <latch.h>

#include <stdio.h>
#include <string.h>

static const char index_html[] =
    "<!doctype html>\n"
    "<html><head><meta charset=\"utf-8\"><title>latch</title></head>\n"
    "<body>\n"
    "<h1>latch</h1>\n"
    "<p>An HTTP/1.1 server library for C: every request gets exactly one "
    "response.</p>\n"
    "<ul>\n"
    "<li><a href=\"/\">GET /</a>: this page</li>\n"
    "<li><a href=\"/hello\">GET /hello</a>: plain text</li>\n"
    "<li><a href=\"/json\">GET /json</a>: JSON</li>\n"
    "<li>POST /echo: echoes the request body</li>\n"
    "</ul>\n"
    "</body></html>\n";

static int on_index(latch_req *req, latch_res *res, void *data)
{
    (void)req;
    (void)data;
    latch_res_send(res, index_html, sizeof(index_html) - 1);
    return LATCH_DONE;
}

static int on_hello(latch_req *req, latch_res *res, void *data)
{
    (void)req;
    (void)data;
    latch_res_set_header(res, "Content-Type", "text/plain; charset=utf-8");
    latch_res_send(res, "Hello, World!", 13);
    return LATCH_DONE;
}

static int on_json(latch_req *req, latch_res *res, void *data)
{
    (void)req;
    (void)data;
    latch_res_json(res, "{\"message\":\"Hello, World!\"}");
    return LATCH_DONE;
}

static int on_echo(latch_req *req, latch_res *res, void *data)
{
    const void *body;
    size_t len;
    const char *ct = latch_req_header(req, "Content-Type");

    (void)data;
    latch_req_body(req, &body, &len);
    latch_res_set_header(res, "Content-Type",
                         ct ? ct : "application/octet-stream");
    latch_res_send(res, body, len);
    return LATCH_DONE;
}

static const char demo_usage[] =
    "usage: latch [demo] [options]\n"
    "\n"
    "Serves the demo app: GET / (a page), /hello, /json; POST /echo.\n"
    "\n"
    "options:\n"
    "  -h HOST, -p PORT, -w N   short for --host, --port, --workers\n";

static void print_usage(FILE *f)
{
    fputs(demo_usage, f);
    fputs(cli_opts_usage, f);
    fputs("  --help                this text\n"
          "\n"
          "See latch(1).\n",
          f);
}

enum { CLI_HELP = 0x200 };

int latch_cmd_demo(int argc, char **argv)
{
    static const struct option longs[] = {
        CLI_LONGOPTS,
        {"help", no_argument, NULL, CLI_HELP},
        {NULL, 0, NULL, 0},
    };
    cli_opts o;
    latch_app *app;
    int opt, r;

    cli_opts_init(&o);
    optind = 1;
    while ((opt = getopt_long(argc, argv, "h:p:w:", longs, NULL)) != -1) {
        if (opt == CLI_HELP) {
            print_usage(stdout);
            return 0;
        }
        /* -h is --host here, as it always was for the demo */
        r = cli_opts_take(&o, opt == 'h' ? CLI_HOST : opt, "latch", argc, argv);
        if (r <= 0)
            goto usage; /* -1: the reason is printed */
    }
    if (optind < argc) {
        fprintf(stderr, "latch: unexpected argument '%s'\n", argv[optind]);
        goto usage;
    }
    cli_opts_env(&o);
    if ((app = latch_app_new()) == NULL)
        return 1;
    if (cli_opts_apply(&o, app, "latch") != 0)
        goto fail;
    latch_get(app, "/", on_index, NULL);
    latch_get(app, "/hello", on_hello, NULL);
    latch_get(app, "/json", on_json, NULL);
    latch_post(app, "/echo", on_echo, NULL);
    if (cli_opts_listen(&o, app, "latch", "") != 0)
        goto fail;
    r = latch_run(app);
    latch_app_free(app);
    return r < 0 ? 1 : 0;

fail:
    latch_app_free(app);
    return 1;

usage:
    fputc('\n', stderr);
    print_usage(stderr);
    return 2;
}
