/*
 * users_post.c - POST /users with validation, a database call and a 201,
 * ported from Express (issue 16's first example).
 *
 * The Express original and its port sit side by side below, between the
 * markers that scripts/count_lines.sh reads for the README's table: code
 * lines only, blank and comment lines not counted, on either side.
 *
 * What latch owns here that the Express code had to get right: the
 * database call runs on the thread pool with the handler's local as its
 * data (latch_work_copy: no malloc, no free, no owner to agree on); a
 * client that leaves while the insert runs makes the completion see
 * LATCH_ERR_CANCELLED, and it answers nothing; the validation's early
 * return cannot fall through into a second answer (and if it did, latch
 * would refuse it and report both places).
 *
 * Usage: users_post [-p port] [-d db_delay_ms] [-f]. -d: how long the
 * simulated insert takes (default 0); -f: the database is down (each
 * insert fails). Listens on 127.0.0.1 (port 0: the kernel chooses) and
 * prints the address on stdout, and each insert once its id is taken.
 * SIGINT/SIGTERM drain and exit 0.
 */
#include <latch.h>

#include <jansson.h>

#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------------ */
/* The database driver (Express's `db`), simulated                      */
/* ------------------------------------------------------------------ */

static int db_delay_ms;
static bool db_down;
static atomic_long db_last_id;

/* The data layer's record (what the ORM's model is to the Express code):
 * the email is the request's string, valid for the whole life of a job
 * of that request. */
struct user {
    const char *email;
    long id;
};

/* A blocking insert, as a driver's: the new row's id, or -1 when the
 * database is down. Called on the thread pool, from any number of jobs
 * at once (the id is one atomic counter, as a sequence is). */
static long db_insert(const char *email)
{
    struct timespec ts = {db_delay_ms / 1000, (db_delay_ms % 1000) * 1000000L};
    long id = db_down ? -1 : atomic_fetch_add(&db_last_id, 1) + 1;

    /* The row is taken first, the round trip's latency after: a client
     * that leaves now does not stop the insert, as with a real server. */
    printf("users_post: insert %s\n", email); /* a real one stores it */
    fflush(stdout);
    if (db_delay_ms > 0)
        nanosleep(&ts, NULL);
    return id;
}

/* ------------------------------------------------------------------ */
/* Express and latch                                                    */
/* ------------------------------------------------------------------ */

// clang-format off
/* express: begin
 * app.post('/users', async (req, res, next) => {
 *   try {
 *     const { email } = req.body;
 *     if (!email || !email.includes('@')) {
 *       return res.status(400).json({ error: 'Invalid email' });
 *     }
 *     const user = await db.insert({ email });
 *     res.status(201).json({ id: user.id, email: user.email });
 *   } catch (err) {
 *     next(err);
 *   }
 * });
 * express: end */
// clang-format on

/* latch: begin */
static void insert_user(void *data) /* await db.insert({ email }) */
{
    struct user *u = data;
    u->id = db_insert(u->email);
}
static void inserted(latch_res *res, int status, void *data)
{
    const struct user *u = data;  /* cancelled: nobody to answer */
    if (status == 0 && u->id < 0) /* the catch: next(err) */
        latch_res_send_status(res, 500);
    else if (status == 0 && latch_res_status(res, 201) == 0)
        latch_res_jsonf(res, "{\"id\":%ld,\"email\":%s}", u->id, u->email);
}
static int create_user(latch_req *req, latch_res *res, void *data)
{
    struct user u = {.email = json_string_value(
                         json_object_get(latch_req_json(req), "email"))};
    if (u.email == NULL || strchr(u.email, '@') == NULL) {
        latch_res_status(res, 400);
        return latch_res_json(res, "{\"error\":\"Invalid email\"}");
    }
    return latch_work_copy(res, insert_user, inserted, &u, sizeof(u));
}
/* latch: end */

int main(int argc, char **argv)
{
    int port = 8080, opt, r;
    latch_app *app;

    while ((opt = getopt(argc, argv, "p:d:f")) != -1) {
        switch (opt) {
        case 'p': port = atoi(optarg); break;
        case 'd': db_delay_ms = atoi(optarg); break;
        case 'f': db_down = true; break;
        default:
            fprintf(stderr, "usage: %s [-p port] [-d db_delay_ms] [-f]\n",
                    argv[0]);
            return 2;
        }
    }
    if ((app = latch_app_new()) == NULL)
        return 1;
    /* app.use(express.json()) */
    if ((r = latch_use(app, "/users", latch_json_body, NULL)) < 0 ||
        (r = latch_post(app, "/users", create_user, NULL)) < 0 ||
        (r = latch_listen(app, "127.0.0.1", port)) < 0) {
        fprintf(stderr, "users_post: %s\n", latch_strerror(r));
        latch_app_free(app);
        return 1;
    }
    printf("users_post: listening on http://127.0.0.1:%d/\n",
           latch_app_port(app));
    fflush(stdout);
    r = latch_run(app);
    latch_app_free(app);
    return r < 0 ? 1 : 0;
}
