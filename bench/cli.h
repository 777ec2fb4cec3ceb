/* Shared pieces of the clattn program's commands. */
#ifndef CLATTN_CLI_H
#define CLATTN_CLI_H

#include "clattn.h"

#include <stdbool.h>

/* Prints "clattn: <message>" as one line on stderr; returns the exit status 1. */
int cli_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Opens a context on the device `selector` (index or name substring; NULL: default pick). */
int cli_open_context(const char *selector, clattn_context **ctx);

/* The devices a --device option selects among `devs` (all platforms' devices, in order):
 * "all" -> every one; NULL -> the default pick (CLATTN_DEVICE, else first GPU, else first);
 * else an index or name substring. Sets [*first, *last]; returns 0, or 1 after an error. */
int cli_device_range(const char *device, const cl_device_id *devs, int ndev, int *first, int *last);

/* Milliseconds of a completed event (needs a profiling queue). */
double cli_event_ms(cl_event ev);
double cli_now_ms(void);

int cmd_run(int argc, char **argv);
int cmd_devices(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_check(int argc, char **argv);
int cmd_tune(int argc, char **argv);

#endif
