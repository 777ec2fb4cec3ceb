/* Shared pieces of the clattn program's commands. */
#ifndef CLATTN_CLI_H
#define CLATTN_CLI_H

#include "clattn.h"

#include <stdbool.h>

/* Prints "clattn: <message>" as one line on stderr; returns the exit status 1. */
int cli_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Opens a context on the device `selector` (index or name substring; NULL: default pick). */
int cli_open_context(const char *selector, clattn_context **ctx);

/* Lists every platform's devices into devs (at most CLI_MAX_DEVICES, in order) and sets
 * [*first, *last] to those a --device option selects: "all" -> every one; NULL -> the default
 * pick (CLATTN_DEVICE, else first GPU, else first); else an index or name substring. Returns
 * 0, or 1 after printing an error that names `cmd`. */
#define CLI_MAX_DEVICES 16
int cli_select_devices(const char *cmd, const char *device, cl_device_id devs[CLI_MAX_DEVICES], int *first,
                       int *last);

/* qsort comparator for doubles, and the median of n values (sorts them). */
int cli_cmp_double(const void *a, const void *b);
double cli_median(double *v, int n);

/* Milliseconds on a monotonic clock: every timing of the program is wall time, none comes from
 * event profiling. */
double cli_now_ms(void);

int cmd_run(int argc, char **argv);
int cmd_devices(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_check(int argc, char **argv);
int cmd_tune(int argc, char **argv);

#endif
