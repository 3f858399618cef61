/*
 * test_lifecycle_fuzz.c - the lifecycle fuzzer's deterministic slice, run
 * by `make test` in both builds: programs from fixed seeds plus every file
 * in fuzz/lifecycle-corpus/ (fuzz/lifecycle.c is the driver and the
 * oracle; fuzz/fuzz_lifecycle.c is the libFuzzer front-end, `make fuzz`).
 *
 * Usage beyond ctest:
 *   test_lifecycle_fuzz FILE...   replays inputs (a libFuzzer crash file,
 *                                 a corpus file) with every op and check
 *                                 (LF_CI=1: the CI set), verbose; exit
 *                                 status 1 if one fails
 *   LF_SEEDS=n                    programs from seeds (default below)
 *   LF_FIRST_SEED=s               start there
 *   LF_SEED_LIST=a,b,c            exactly these seeds, in this order
 *   LF_DUMP=dir                   also writes each seed's input to
 *                                 dir/seed-N (a corpus file, for replay)
 *   LF_ALL=1                      every op and pattern, not the CI set
 *   LF_OPS, LF_ALLOW, LF_SKIP     hex masks (fuzz/lifecycle.h), exactly
 *   LF_SURVEY=1                   run the seeds, print each failure's
 *                                 first line and the seed, never fail
 */
#include "lifecycle.h"

#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#ifndef LF_CORPUS_DIR
#define LF_CORPUS_DIR "fuzz/lifecycle-corpus"
#endif

/* An environment variable, NULL when unset or empty. */
static const char *env(const char *name)
{
    const char *e = getenv(name);

    return e != NULL && *e ? e : NULL;
}

static lf_config config(void)
{
    lf_config c = {LF_CI_OPS, LF_CI_ALLOW, LF_CI_SKIP, 0};

    if (env("LF_ALL") != NULL) {
        c.ops = LF_ALL_OPS;
        c.allow = LF_ALLOW_ALL;
        c.skip = 0;
    }
    if (env("LF_SKIP") != NULL)
        c.skip = (uint32_t)strtoul(env("LF_SKIP"), NULL, 16);
    if (env("LF_OPS") != NULL)
        c.ops = strtoull(env("LF_OPS"), NULL, 16);
    if (env("LF_ALLOW") != NULL)
        c.allow = (uint32_t)strtoul(env("LF_ALLOW"), NULL, 16);
    if (env("LF_VERBOSE") != NULL)
        c.verbose = 1;
    return c;
}

/* A program from a seed: splitmix64 bytes, 24..535 of them. */
static size_t program_of(uint64_t seed, uint8_t *buf, size_t cap)
{
    uint64_t x = seed * 0x9e3779b97f4a7c15ull + 1;
    size_t n, i;

    for (i = 0, n = 0; i < cap; i++) {
        uint64_t z = (x += 0x9e3779b97f4a7c15ull);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        z ^= z >> 31;
        if (i == 0)
            n = 24 + (size_t)(z % 512);
        buf[i] = (uint8_t)z;
    }
    return n < cap ? n : cap;
}

static uint64_t env_u64(const char *name, uint64_t dflt)
{
    const char *e = getenv(name);

    return e != NULL ? strtoull(e, NULL, 0) : dflt;
}

static void test_seeded(void **state)
{
    lf_config c = config();
    uint64_t first = env_u64("LF_FIRST_SEED", 1);
    uint64_t n = env_u64("LF_SEEDS", 40), s;
    bool survey = getenv("LF_SURVEY") != NULL;
    static uint8_t buf[600];
    static char why[16384];
    int failed = 0;

    (void)state;
    const char *list = getenv("LF_SEED_LIST"); /* "5,12,12": these */

    if (list != NULL)
        n = 1;
    for (s = first; s < first + n; s++) {
        size_t len;

        if (list != NULL && *list) {
            char *end;
            s = strtoull(list, &end, 0);
            list = *end ? end + 1 : end;
            n = s - first + 2;
            if (*list == 0)
                n = s - first + 1;
        }
        len = program_of(s, buf, sizeof(buf));
        if (getenv("LF_DUMP") != NULL) {
            char path[512];
            FILE *f;
            snprintf(path, sizeof(path), "%s/seed-%llu", getenv("LF_DUMP"),
                     (unsigned long long)s);
            if ((f = fopen(path, "wb")) != NULL) {
                fwrite(buf, 1, len, f);
                fclose(f);
            }
        }

        if (lf_run(buf, len, &c, why, sizeof(why)) == 0)
            continue;
        failed++;
        if (survey) {
            char *nl = strchr(why, '\n');
            if (nl)
                *nl = 0;
            printf("seed %llu: %s\n", (unsigned long long)s, why);
            continue;
        }
        fail_msg("seed %llu (LF_FIRST_SEED=%llu LF_SEEDS=1 to replay):\n%s",
                 (unsigned long long)s, (unsigned long long)s, why);
    }
    if (survey)
        printf("%d of %llu programs failed\n", failed, (unsigned long long)n);
}

static int run_file(const char *path, const lf_config *c, bool must_pass)
{
    static uint8_t buf[4096];
    static char why[16384];
    FILE *f = fopen(path, "rb");
    size_t len;
    int r;

    if (f == NULL) {
        fprintf(stderr, "%s: cannot open\n", path);
        return -1;
    }
    len = fread(buf, 1, sizeof(buf), f);
    fclose(f);
    r = lf_run(buf, len, c, why, sizeof(why));
    if (r != 0 && must_pass)
        fail_msg("%s:\n%s", path, why);
    if (r != 0)
        printf("%s: FAILED\n%s\n", path, why);
    return r;
}

/* Every file of the checked-in corpus, with the CI set. */
static void test_corpus(void **state)
{
    lf_config c = config();
    DIR *d = opendir(LF_CORPUS_DIR);
    struct dirent *e;
    static char names[256][256];
    char path[sizeof(LF_CORPUS_DIR) + 260];
    int n = 0, i;

    (void)state;
    assert_non_null(d);
    while ((e = readdir(d)) != NULL && n < 256) {
        if (e->d_name[0] == '.' || strstr(e->d_name, ".md") != NULL)
            continue;
        if (strlen(e->d_name) < sizeof(names[0]))
            memcpy(names[n++], e->d_name, strlen(e->d_name) + 1);
    }
    closedir(d);
    assert_true(n > 0);
    for (i = 0; i < n; i++) {
        int w = snprintf(path, sizeof(path), "%s/%s", LF_CORPUS_DIR, names[i]);
        assert_true(w > 0 && (size_t)w < sizeof(path));
        run_file(path, &c, true);
    }
}

int main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_corpus),
        cmocka_unit_test(test_seeded),
    };

    if (argc > 1) {
        lf_config c;
        int i, bad = 0;

        /* Replay: every op and check unless LF_CI=1 (the CI set); the
         * LF_OPS / LF_ALLOW / LF_SKIP variables still apply. */
        if (env("LF_CI") == NULL)
            setenv("LF_ALL", "1", 1);
        c = config();
        c.verbose = 1;
        for (i = 1; i < argc; i++)
            bad |= run_file(argv[i], &c, false) != 0;
        return bad;
    }
    return cmocka_run_group_tests(tests, NULL, NULL);
}
