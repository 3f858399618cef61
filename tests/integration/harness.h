/*
 * harness.h - what integration tests share: an in-process latch server on
 * 127.0.0.1 (its own thread, port chosen by the kernel), raw-socket
 * clients that send exact bytes, and the wire checker (wire.c) that
 * re-parses everything the server wrote.
 *
 * Waiting is always for an event (bytes, EOF, a counter), bounded by a
 * deadline; nothing sleeps "a bit".
 */
#ifndef LATCH_TEST_HARNESS_H
#define LATCH_TEST_HARNESS_H

#include <latch.h>

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- server ---- */
typedef struct th_server {
    latch_app *app;
    int port;
    void *thread; /* pthread_t, opaque here */
    int run_result;
} th_server;

/* Starts app (routes already registered) on 127.0.0.1:0 with one worker,
 * no signal handlers. Asserts on failure. */
void th_server_start(th_server *s, latch_app *app);
/* latch_stop, join, latch_app_free. Returns latch_run's result. */
int th_server_stop(th_server *s);

/* ---- raw client ---- */
int th_connect(int port);                           /* asserts */
void th_send(int fd, const void *data, size_t len); /* all of it */
void th_send_str(int fd, const char *s);
/* Reads until EOF/reset or until `until` returns true for what was read
 * so far, or timeout_ms passed. Returns the bytes (malloc'd, NUL-added). */
typedef bool (*th_until)(const char *buf, size_t len, void *arg);
char *th_read(int fd, size_t *len, int timeout_ms, th_until until, void *arg);
/* How the connection ended, after th_read: */
enum { TH_OPEN = 0, TH_EOF = 1, TH_RESET = 2 };
int th_last_end(void);
/* true when `n` complete responses are in buf (wire checker). */
bool th_until_responses(const char *buf, size_t len, void *n);
/* Waits for EOF (or reset); returns TH_EOF, TH_RESET, or TH_OPEN on
 * timeout. Discards what arrives. */
int th_wait_close(int fd, int timeout_ms);

/* One request on a fresh connection; returns the raw reply (malloc'd),
 * read until the connection closes or `nresp` responses arrived. */
char *th_exchange(int port, const char *req, size_t reqlen, int nresp,
                  size_t *len);

/* ---- wire checker ---- */
typedef struct th_resp {
    int status;
    char head[4096]; /* status line + headers, Date value as <d> */
    size_t body_len;
    char *body; /* malloc'd, NUL-terminated */
    bool chunked;
    bool close_delimited;
} th_resp;

/*
 * Parses `n` responses (n < 0: as many as there are) from buf. `methods`
 * gives the request method for each response (NULL: all GET) so HEAD is
 * known to have no body. Returns the count parsed, or -1 with *err set to
 * the first malformation (incomplete trailing bytes are malformed when
 * `complete` is true). Fills out[0..count).
 */
int th_wire_parse(const char *buf, size_t len, const char **methods,
                  th_resp *out, int max, bool complete, const char **err);
void th_resp_free(th_resp *r, int n);
/* Asserts that buf holds exactly `n` well-formed responses, nothing
 * more, and returns them (caller frees with th_resp_free). */
th_resp *th_expect_responses(const char *buf, size_t len, int n,
                             const char **methods);
/* Copies buf with each Date header value replaced by "<d>". */
char *th_normalize(const char *buf, size_t len);

/* ---- violations ---- */
typedef struct th_violations {
    int count;
    int codes[64];
    char at_file[64][128];
    int at_line[64];
    char sealed_call[64][64];
    int sealed_line[64];
} th_violations;
/* Installs a hook that records violations (thread-safe). */
void th_record_violations(latch_app *app, th_violations *v);
int th_violation_count(th_violations *v);

/* ---- helpers added for the core tests (framing, limits, conn, ...) ---- */

/* Connects to 127.0.0.1:port; returns the fd or -errno (no assert), so a
 * test can see a refused connection. */
int th_try_connect(int port);
/* Closes with SO_LINGER 0: the peer gets a reset, not a FIN. */
void th_close_reset(int fd);
/* th_until for th_read: true once at least *(size_t *)n bytes arrived. */
bool th_until_bytes(const char *buf, size_t len, void *n);
/* The exact bytes (Date as "<d>", as th_normalize gives them) latch sends
 * for a refused request: `status reason`, a text/plain body "reason\n",
 * Connection: close. malloc'd. */
char *th_error_bytes(int status, const char *reason);
/*
 * Sends `req` (len bytes) in one write on a fresh connection, reads until
 * the server closes it, and asserts: exactly one well-formed response, whose
 * normalized bytes are th_error_bytes(status, reason), followed by a FIN.
 */
void th_expect_error_close(int port, const char *req, size_t len, int status,
                           const char *reason);
/* Asserts that a GET of `path` on a fresh connection gets one 200 whose
 * body is `body`: the server is still serving. */
void th_expect_alive(int port, const char *path, const char *body);
/* Milliseconds of CLOCK_MONOTONIC. */
int64_t th_now_ms(void);
/* Waits (10 s at most) until `channel` has `n` subscribers in `app`, and
 * asserts it has. */
void th_wait_subscribers(latch_app *app, const char *channel, int n);
/* VmRSS of this process (the server and the test's clients), in bytes;
 * asserts it could be read. */
uint64_t th_rss(void);

/* ---- TLS (tls_client.c) ---- */

/* Plain TCP to 127.0.0.1:port (th_connect is TLS in the TLS mode). */
int th_tcp_connect(int port);
/* A loopback port nothing listens on now (bound by the kernel's choice,
 * then closed): for a refused connect, or a server of the test's own. */
int th_free_port(void);
/* The harness's TLS mode: LATCH_TEST_TLS=1 in the environment. Then
 * th_server_start listens with latch_listen_tls (the "server" pair), and
 * th_connect / th_try_connect return a socket relayed over TLS. */
bool th_tls_mode(void);
/* This process's directory of certificates (removed at exit). */
const char *th_tls_dir(void);
/* Makes <dir>/<name>.crt and .key with the openssl command: a self-signed
 * certificate for localhost and 127.0.0.1, subject CN=cn, key kind "ec"
 * (P-256) or "rsa" (2048). */
void th_tls_make_cert(const char *name, const char *kind, const char *cn);
void th_tls_make_server_cert(void); /* "server", ec, CN=latch-test */
/* <dir>/<name>.<ext> */
void th_tls_path(char *out, size_t cap, const char *name, const char *ext);

/* A blocking TLS client (OpenSSL types behind void *). */
typedef struct th_tls {
    int fd;
    void *ssl; /* SSL * */
    void *ctx; /* SSL_CTX * */
} th_tls;
typedef struct th_tls_opts {
    const char *ca;  /* certificate name trusted (NULL: "server") */
    int min_version; /* TLS1_2_VERSION ...; 0: library default */
    int max_version;
    const char *alpn; /* wire format ("\x08http/1.1"); NULL: none */
    void *session;    /* SSL_SESSION * to resume, or NULL */
    bool no_verify;   /* accept any certificate */
} th_tls_opts;
/* Connects and handshakes (o may be NULL): 0, or -1 when the handshake
 * failed (t is set either way; th_tls_close it). */
int th_tls_connect(th_tls *t, int port, const th_tls_opts *o);
void th_tls_send(th_tls *t, const char *s);
/* As th_read over TLS; *end: TH_OPEN, TH_EOF (FIN without close_notify),
 * TH_CLOSE_NOTIFY, TH_RESET (or a TLS failure). */
enum { TH_CLOSE_NOTIFY = 3 };
char *th_tls_read(th_tls *t, size_t *len, int timeout_ms, th_until until,
                  void *arg, int *end);
void th_tls_close(th_tls *t);
/* The TLS mode's relay: a connected socket whose bytes travel over TLS to
 * port, or -1 when the handshake failed. */
int th_tls_relay_connect(int port);
/* Waits (10 s at most) for the relays to end once the server stopped. */
void th_tls_relays_end(void);

#endif

/* ---- helpers added for the response tests (test_res_*.c) ---- */

/* One violation, copied out of the hook (pointers are valid only during
 * the hook, so strings are copied; "" stands for NULL, and the *_null
 * flags say which were NULL). */
#define TH_VLOG_MAX 256
typedef struct th_vrec {
    int code;
    char name[64];
    char message[256];
    char call[64];
    char at_file[256];
    int at_line;
    char at_func[64];
    char sealed_call[64];
    bool sealed_call_null;
    char sealed_file[256];
    bool sealed_file_null;
    int sealed_line;
    uint64_t request_id;
    char method[16];
    char path[128];
} th_vrec;

typedef struct th_vlog {
    int count; /* every violation, also those beyond TH_VLOG_MAX */
    th_vrec rec[TH_VLOG_MAX];
} th_vlog;

/* Installs a hook that records every field of each violation
 * (thread-safe; the hook may run on any thread). Clears the log. */
void th_record_violations_full(latch_app *app, th_vlog *log);
/* The number recorded so far. */
int th_vlog_count(th_vlog *log);
/* Copies record i; false when i is not recorded (yet). */
bool th_vlog_get(th_vlog *log, int i, th_vrec *out);
/* Waits until at least n violations are recorded, or timeout_ms passed;
 * returns the count then. */
int th_vlog_wait(th_vlog *log, int n, int timeout_ms);

/* th_until for th_read: true once the NUL-terminated string `needle`
 * appears in what was read. */
bool th_until_substr(const char *buf, size_t len, void *needle);

/*
 * Takes the first response off buf (for a client that reads a stream of
 * responses): returns 1 when one complete, well-formed response is there
 * (*out filled, free its body with th_resp_free; *used set to its length in
 * bytes), 0 when it is not complete yet, -1 when the bytes are malformed
 * (*err set). `method` is the request's method (NULL: GET).
 */
int th_wire_take(const char *buf, size_t len, const char *method, th_resp *out,
                 size_t *used, const char **err);
