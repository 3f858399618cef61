/*
 * download.c - file downloads on a pipe, done right and done as the seed's
 * broken Express code does it.
 *
 * GET /files/:name sends DIR/name as an attachment (latch_res_sendfile:
 * sendfile(2) on a plain socket, ranges, ETag, 304s). Its completion
 * callback is the one place that learns how the download ended, exactly
 * once: 0 when the last byte went out, LATCH_ERR_CANCELLED when the client
 * left half way, the error otherwise. It only logs (a line on stdout):
 * the answer to a failure is the error handler's job before the headers,
 * and after them there is no answer to give, only a truncated body. That
 * is what makes it progress-safe: nothing in it writes to the response.
 *
 * GET /broken/:name is the same download written as Express code often is:
 *
 *     pipeline(fs.createReadStream(path), res, (err) => {
 *         if (err) res.status(500).send("download failed");
 *     });
 *
 * Its callback answers the failure itself. Node throws (or logs)
 * ERR_HTTP_HEADERS_SENT / ERR_STREAM_WRITE_AFTER_END there; latch refuses
 * the second answer and reports it on stderr with both places: the late
 * call, and where the response was sealed (the error handler's answer for
 * a missing file, "client disconnect" for a client that left half way).
 * The wire keeps exactly one response: the 404, or the truncated body.
 *
 * Usage: download [-p port] [-d dir]. Listens on 127.0.0.1 (default 8080;
 * 0: the kernel chooses), serves DIR (default "."), prints the address.
 */
#include <latch.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *root = ".";

/* The right way: learn the outcome, never answer from here. */
static void logged(latch_res *res, int status, void *data)
{
    (void)data;
    printf("download %llu: %s\n",
           (unsigned long long)latch_req_id(latch_res_req(res)),
           status == 0 ? "complete" : latch_err_name(status));
    fflush(stdout);
}

static int on_file(latch_req *req, latch_res *res, void *data)
{
    latch_file_opts o = {0};

    (void)data;
    o.root = root;       /* ../ and symlinks out of DIR: 403 */
    o.attachment = true; /* Content-Disposition: attachment */
    o.max_age_ms = 60000;
    /* 0: logged runs once, later; < 0: it never runs, and the error was
     * reported (a misuse) or is the pipe's state error */
    if (latch_res_sendfile(res, latch_req_param(req, "name"), &o, logged,
                           NULL) < 0)
        return latch_fail(req, 500, "cannot start the download");
    return LATCH_DONE;
}

/* The seed's broken callback: answers the failure itself, after the
 * error handler (or the cut) already sealed the response. latch refuses
 * and reports it; nothing reaches the wire. */
static void answers_itself(latch_res *res, int status, void *data)
{
    (void)data;
    if (status != 0) {
        latch_res_status(res, 500);
        latch_res_send(res, "download failed\n", 16);
    }
}

static int on_broken(latch_req *req, latch_res *res, void *data)
{
    latch_file_opts o = {0};

    (void)data;
    o.root = root;
    if (latch_res_sendfile(res, latch_req_param(req, "name"), &o,
                           answers_itself, NULL) < 0)
        return latch_fail(req, 500, "cannot start the download");
    return LATCH_DONE;
}

/* Failures before the headers: one JSON answer, by status. */
static int on_error(const latch_error *err, latch_req *req, latch_res *res,
                    void *data)
{
    (void)req;
    (void)data;
    latch_res_status(res, err->status);
    latch_res_json(res, err->status == 404 ? "{\"error\":\"no such file\"}"
                        : err->status == 403
                            ? "{\"error\":\"forbidden\"}"
                            : "{\"error\":\"download failed\"}");
    return LATCH_DONE;
}

int main(int argc, char **argv)
{
    int port = 8080, opt, r;
    latch_app *app;

    while ((opt = getopt(argc, argv, "p:d:")) != -1) {
        switch (opt) {
        case 'p': port = atoi(optarg); break;
        case 'd': root = optarg; break;
        default:
            fprintf(stderr, "usage: %s [-p port] [-d dir]\n", argv[0]);
            return 2;
        }
    }
    if ((app = latch_app_new()) == NULL)
        return 1;
    latch_app_set_workers(app, 1);
    latch_get(app, "/files/:name", on_file, NULL);
    latch_get(app, "/broken/:name", on_broken, NULL);
    latch_use_error(app, on_error, NULL);
    r = latch_listen(app, "127.0.0.1", port);
    if (r < 0) {
        fprintf(stderr, "download: cannot listen: %s\n", latch_strerror(r));
        latch_app_free(app);
        return 1;
    }
    printf("download: listening on http://127.0.0.1:%d/\n",
           latch_app_port(app));
    fflush(stdout);
    r = latch_run(app);
    latch_app_free(app);
    return r < 0 ? 1 : 0;
}
