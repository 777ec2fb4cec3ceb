/* Shared pieces of the clattn program's commands. */
#ifndef CLATTN_CLI_H
#define CLATTN_CLI_H

#include "clattn.h"

#include <getopt.h>
#include <stdbool.h>
#include <stddef.h>

/* Prints "clattn: <message>" as one line on stderr; returns the exit status 1. */
int cli_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Opens a context on the device `selector` (index or name substring; NULL: default pick). */
int cli_open_context(const char *selector, clattn_context **ctx);

/* Prints, when the fused kernels would run generic parameters on ctx's device for a prefill or
 * a decode class, a note that says so and how to tune. Returns the number of such classes. */
int cli_tuning_note(clattn_context *ctx, const char *device_name);

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

/* The next option of a command's arguments, through glibc's getopt_long; argv[0] is the
 * command's name, and each command sets optind = 0 before its first call (glibc: a full
 * reinitialisation; getopt keeps state between parses). `shortopts` lists the short options
 * (getopt syntax, "" for none). Options come first and long ones are spelt in full. Returns the
 * option's val (optarg holds its value), -1 after the last option, or '?' after printing one
 * line "clattn: <cmd>: ..." naming the unknown option, the option missing its value, the flag
 * given one, or the argument that is not an option. */
int cli_next_option(const char *cmd, int argc, char **argv, const char *shortopts, const struct option *longopts);

/* Strict numbers: the whole of `text` (no leading space, nothing after the number), within
 * [lo, hi] or finite. Return false, leaving *out alone, otherwise; the caller says why. */
bool cli_parse_long(const char *text, long lo, long hi, long *out);
bool cli_parse_double(const char *text, double *out);

/* Walks a comma-separated list: each call sets the next entry (`*len` characters at `*item`,
 * not terminated) and returns false after the last. "", "a," and "a,,b" yield an empty entry,
 * for the caller to refuse with the unknown ones. */
bool cli_list_next(const char **rest, const char **item, size_t *len);
bool cli_list_item_is(const char *item, size_t len, const char *name);

/* The commands; argv[0] is the command's name. */
int cmd_run(int argc, char **argv);
int cmd_devices(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_check(int argc, char **argv);
int cmd_tune(int argc, char **argv);
int cmd_report(int argc, char **argv);
int cmd_ring(int argc, char **argv); /* built with clattn_mpi only */

#endif
