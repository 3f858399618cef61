/*
 * chat.c - a live chat room: an HTML page with an EventSource and a form,
 * served by latch, whose messages reach every browser connected to any
 * chat process that shares the same Redis.
 *
 *   GET  /        the page
 *   GET  /events  the room as Server-Sent Events (latch_subscribe); a
 *                 browser that reconnects sends Last-Event-ID and gets what
 *                 it missed, or a latch-gap event
 *   POST /send    form field "text" (urlencoded): published to the room
 *
 * Usage: chat [-p PORT] [-r redis://127.0.0.1:6379] [-w WORKERS]
 * Without -r the room lives in this process only. Listens on 127.0.0.1
 * (port 0: the kernel chooses) and prints the address on stdout.
 */
#include <latch.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char page[] =
    "<!doctype html>\n<html><head><meta charset=\"utf-8\">"
    "<title>latch chat</title><link rel=\"icon\" href=\"data:,\">"
    "</head>\n<body>\n"
    "<h1>latch chat</h1>\n<p id=\"status\">connecting</p>\n"
    "<ul id=\"log\"></ul>\n"
    "<form id=\"f\" method=\"post\" action=\"/send\">"
    "<input id=\"text\" name=\"text\" autocomplete=\"off\">"
    "<button>Send</button></form>\n"
    "<script>\n"
    "const log = document.getElementById('log');\n"
    "const status = document.getElementById('status');\n"
    "window.received = [];\n"
    "window.gaps = 0;\n"
    "window.opens = 0;\n"
    "const es = new EventSource('/events');\n"
    "es.onopen = () => { window.opens++; status.textContent = 'live'; };\n"
    "es.onerror = () => { status.textContent = 'reconnecting'; };\n"
    "es.addEventListener('msg', (e) => {\n"
    "  window.received.push({id: e.lastEventId, text: e.data});\n"
    "  const li = document.createElement('li');\n"
    "  li.textContent = e.data;\n"
    "  log.appendChild(li);\n"
    "});\n"
    "es.addEventListener('latch-gap', () => { window.gaps++; });\n"
    "document.getElementById('f').addEventListener('submit', (e) => {\n"
    "  e.preventDefault();\n"
    "  const t = document.getElementById('text');\n"
    "  fetch('/send', {method: 'POST', body: new URLSearchParams({text: "
    "t.value})});\n"
    "  t.value = '';\n"
    "});\n"
    "</script>\n</body></html>\n";

static int get_page(latch_req *req, latch_res *res, void *data)
{
    (void)req;
    (void)data;
    latch_res_send(res, page, sizeof(page) - 1);
    return LATCH_DONE;
}

static int get_events(latch_req *req, latch_res *res, void *data)
{
    (void)data;
    /* Browsers reconnect after 3 s by default; a chat wants less. */
    if (latch_sse_start(res) < 0 || latch_sse_retry(res, 500) < 0)
        return LATCH_DONE;
    if (latch_subscribe(res, "room", NULL, NULL) < 0)
        latch_res_end(res, NULL, 0);
    (void)req;
    return LATCH_DONE;
}

/* The value of "text" in an urlencoded body, decoded into out. */
static size_t form_text(const char *b, size_t n, char *out, size_t cap)
{
    size_t i = 0, o = 0;
    const char *p = NULL;

    for (i = 0; i + 5 <= n; i++)
        if ((i == 0 || b[i - 1] == '&') && memcmp(b + i, "text=", 5) == 0) {
            p = b + i + 5;
            break;
        }
    if (p == NULL)
        return 0;
    for (; p < b + n && *p != '&' && o + 1 < cap; p++) {
        if (*p == '+') {
            out[o++] = ' ';
        } else if (*p == '%' && p + 2 < b + n) {
            char hex[3] = {p[1], p[2], 0};
            out[o++] = (char)strtol(hex, NULL, 16);
            p += 2;
        } else {
            out[o++] = *p;
        }
    }
    out[o] = '\0';
    return o;
}

static int post_send(latch_req *req, latch_res *res, void *data)
{
    latch_app *app = data;
    const void *body;
    size_t len, n;
    char text[1024];

    latch_req_body(req, &body, &len);
    n = form_text(body, len, text, sizeof(text));
    if (n == 0)
        return latch_fail(req, 400, "the form has no text");
    if (latch_publish(app, "room", "msg", text, n) < 0)
        return latch_fail(req, 503, "the room is unavailable");
    latch_res_send_status(res, 204);
    return LATCH_DONE;
}

int main(int argc, char **argv)
{
    const char *redis = NULL;
    int port = 8080, workers = 1, i, r;
    latch_app *app = latch_app_new();

    if (app == NULL)
        return 1;
    for (i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "-p") == 0)
            port = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "-r") == 0)
            redis = argv[i + 1];
        else if (strcmp(argv[i], "-w") == 0)
            workers = atoi(argv[i + 1]);
    }
    latch_app_set_workers(app, workers);
    if (redis != NULL && (r = latch_app_set_pubsub(app, redis)) < 0) {
        fprintf(stderr, "chat: %s: %s\n", redis, latch_strerror(r));
        latch_app_free(app);
        return 1;
    }
    latch_get(app, "/", get_page, NULL);
    latch_get(app, "/events", get_events, NULL);
    latch_post(app, "/send", post_send, app);
    r = latch_listen(app, "127.0.0.1", port);
    if (r < 0) {
        fprintf(stderr, "chat: cannot listen: %s\n", latch_strerror(r));
        latch_app_free(app);
        return 1;
    }
    printf("chat: listening on http://127.0.0.1:%d/\n", latch_app_port(app));
    fflush(stdout);
    r = latch_run(app);
    latch_app_free(app);
    return r < 0 ? 1 : 0;
}
