/*
 * fuzz_lifecycle.c - libFuzzer target for the response lifecycle: each
 * input is a program of API calls and network events (fuzz/lifecycle.h)
 * run against a real latch server on 127.0.0.1 and judged by the oracle
 * in fuzz/lifecycle.c. A failed check prints why and the decoded program,
 * then aborts, so libFuzzer keeps the input (build-fuzz/crash-*); replay
 * it with build-fuzz/fuzz_lifecycle <file>, or LF_VERBOSE=1 for a trace.
 *
 * By default it runs the CI set (LF_CI_* in lifecycle.h: everything but
 * what a known open hole makes fail), to find the next hole; LF_ALL=1
 * enables every op and check. LF_OPS (hex mask of enum lf_op_kind),
 * LF_ALLOW (of LF_ALLOW_*) and LF_SKIP (of LF_SKIP_*) set them exactly.
 */
#include "lifecycle.h"

#include <stdio.h>
#include <stdlib.h>

static lf_config cfg;

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    const char *e;

    (void)argc;
    (void)argv;
    cfg.ops = LF_CI_OPS;
    cfg.allow = LF_CI_ALLOW;
    cfg.skip = LF_CI_SKIP;
    if ((e = getenv("LF_ALL")) != NULL && *e) {
        cfg.ops = LF_ALL_OPS;
        cfg.allow = LF_ALLOW_ALL;
        cfg.skip = 0;
    }
    if ((e = getenv("LF_OPS")) != NULL && *e)
        cfg.ops = strtoull(e, NULL, 16);
    if ((e = getenv("LF_ALLOW")) != NULL && *e)
        cfg.allow = (uint32_t)strtoul(e, NULL, 16);
    if ((e = getenv("LF_SKIP")) != NULL && *e)
        cfg.skip = (uint32_t)strtoul(e, NULL, 16);
    cfg.verbose = getenv("LF_VERBOSE") != NULL;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char why[8192];

    if (size > 4096)
        return -1; /* longer inputs decode to the same program */
    if (lf_run(data, size, &cfg, why, sizeof(why)) != 0) {
        fprintf(stderr, "lifecycle oracle failed:\n%s\n", why);
        abort();
    }
    return 0;
}
