/*
 * hello.c - the README's first program: one route, one response.
 *
 * It is also what the packaging test builds out of tree against a staged
 * install, with pkg-config and with CMake's find_package(latch), so it
 * uses nothing but latch.h and libc.
 *
 * Usage: hello [PORT]. Listens on 127.0.0.1 (default port 8080; 0: the
 * kernel chooses) and prints the address on stdout. SIGINT/SIGTERM drain
 * in-flight requests, then it exits 0.
 */
#include <latch.h>

#include <stdio.h>
#include <stdlib.h>

static int hello(latch_req *req, latch_res *res, void *data)
{
    (void)req;
    (void)data;
    latch_res_set_header(res, "Content-Type", "text/plain");
    latch_res_send(res, "Hello, World!", 13);
    return LATCH_DONE;
}

int main(int argc, char **argv)
{
    int port = argc > 1 ? atoi(argv[1]) : 8080, r;
    latch_app *app = latch_app_new();

    if (app == NULL)
        return 1;
    latch_get(app, "/hello", hello, NULL);
    r = latch_listen(app, "127.0.0.1", port);
    if (r < 0) {
        fprintf(stderr, "hello: cannot listen: %s\n", latch_strerror(r));
        latch_app_free(app);
        return 1;
    }
    printf("hello: listening on http://127.0.0.1:%d/\n", latch_app_port(app));
    fflush(stdout);
    r = latch_run(app);
    latch_app_free(app);
    return r < 0 ? 1 : 0;
}
