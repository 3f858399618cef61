/*
 * latch - the latch command: `latch serve [DIR]` (serve.c), a static file
 * server, and `latch demo` (what `make run` starts), a page of routes.
 *
 * A user of the library like any other: it registers routes and runs the
 * app. Usage: latch [demo] [-h host] [-p port] [-w workers] [--tls CERT
 * KEY] (defaults: 127.0.0.1, 8080, one worker per core, plain HTTP; with
 * --tls the port serves HTTPS with the PEM certificate (chain) CERT and
 * key KEY, re-read on SIGHUP), latch serve --help, latch --help.
 */
#include "cmd.h"

#include <latch.h>

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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

static const char usage[] =
    "usage: latch <command> [options]\n"
    "\n"
    "commands:\n"
    "  serve [DIR]   serve the files under DIR (default: .) over HTTP;\n"
    "                latch serve --help for its options\n"
    "  demo          the demo app (the default): latch [demo] [-h host]\n"
    "                [-p port] [-w workers] [--tls CERT KEY]\n"
    "\n"
    "examples:\n"
    "  latch serve public --port 3000\n"
    "  latch demo -p 8080\n";

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"host", required_argument, NULL, 'h'},
        {"port", required_argument, NULL, 'p'},
        {"workers", required_argument, NULL, 'w'},
        {"tls", required_argument, NULL, 't'},
        {NULL, 0, NULL, 0},
    };
    const char *host = "127.0.0.1", *cert = NULL, *key = NULL;
    int port = 8080, workers = 0, opt, r;
    latch_app *app;

    if (argc > 1 && strcmp(argv[1], "serve") == 0)
        return latch_cmd_serve(argc - 1, argv + 1);
    if (argc > 1 &&
        (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "help") == 0)) {
        fputs(usage, stdout);
        return 0;
    }
    if (argc > 1 && strcmp(argv[1], "demo") == 0) {
        argc--;
        argv++;
    }
    while ((opt = getopt_long(argc, argv, "h:p:w:", longopts, NULL)) != -1) {
        switch (opt) {
        case 'h': host = optarg; break;
        case 'p': port = atoi(optarg); break;
        case 'w': workers = atoi(optarg); break;
        case 't':
            /* --tls CERT KEY: two arguments */
            if (optind >= argc || argv[optind][0] == '-')
                goto usage;
            cert = optarg;
            key = argv[optind++];
            break;
        default: goto usage;
        }
    }
    app = latch_app_new();
    if (app == NULL)
        return 1;
    latch_app_set_workers(app, workers);
    latch_get(app, "/", on_index, NULL);
    latch_get(app, "/hello", on_hello, NULL);
    latch_get(app, "/json", on_json, NULL);
    latch_post(app, "/echo", on_echo, NULL);
    r = cert != NULL ? latch_listen_tls(app, host, port, cert, key)
                     : latch_listen(app, host, port);
    if (r < 0) {
        fprintf(stderr, "latch: cannot listen on %s:%d: %s\n", host, port,
                latch_strerror(r));
        latch_app_free(app);
        return 1;
    }
    printf("latch: listening on %s://%s:%d/\n", cert != NULL ? "https" : "http",
           host, latch_app_port(app));
    fflush(stdout);
    r = latch_run(app);
    latch_app_free(app);
    return r < 0 ? 1 : 0;

usage:
    fputs(usage, stderr);
    return 2;
}
