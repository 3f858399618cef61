/*
 * file.h - what static.c asks of file.c: send a file it already opened
 * (off the loop) on a pipe, with every header, precondition and range rule
 * of latch_res_sendfile.
 */
#ifndef LATCH_FILE_H
#define LATCH_FILE_H

#include "internal.h"

#include <sys/stat.h>

/*
 * Sends the open regular file `fd` (stat `st`) on `res`, which must be
 * FRESH. `name` gives the Content-Type by its extension (and the
 * attachment's file name); `encoding` ("br", "gzip" or NULL) is sent as
 * Content-Encoding. Takes `fd` in every case (closed on error). done (may
 * be NULL) runs as a pipe's when 0 is returned; `call` and `at` name the
 * API call for reports. Returns 0 or an error (done never runs).
 */
int latch__file_send(latch_res *res, int fd, const struct stat *st,
                     const char *name, const char *encoding,
                     const latch_file_opts *opts, latch_done_cb done,
                     void *data, const char *call, latch_site at);

/* Where an open descriptor really lies is under `root` (resolved, as by
 * realpath): 0, UV_EACCES when it is not, or an error of readlink. Runs
 * off the loop (it reads /proc/self/fd). */
int latch__fd_within(int fd, const char *root);

#endif
