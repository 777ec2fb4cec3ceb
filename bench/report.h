/* Benchmark reports: an aligned table on stdout; JSON and CSV with every field, a format
 * version and provenance; an SVG bar chart; and a comparison with an earlier JSON run. */
#ifndef CLATTN_REPORT_H
#define CLATTN_REPORT_H

#include "peak.h"
#include "suite.h"

#include <stdio.h>

#define BENCH_FORMAT_VERSION 1

typedef struct bench_device {
    int index;
    char name[256], vendor[256], driver[128], version[128];
    device_peak peak;
} bench_device;

typedef struct bench_report {
    bench_device devices[16];
    int ndevices;
    bench_row *rows;
    int nrows;
    char command[1024];
} bench_report;

void report_table(FILE *f, const bench_report *r);
/* Each writes to a temporary file and renames it: a failure leaves no half-written file.
 * They return 0, or 1 after printing the reason. */
int report_json(const char *path, const bench_report *r);
int report_csv(const char *path, const bench_report *r);
int report_svg(const char *path, const bench_report *r);
/* Prints, per row found in both runs (same case id, device name, algorithm), the GFLOP/s
 * ratio now / baseline. Returns 0, or 1 if the baseline cannot be read. */
int report_compare(FILE *f, const char *baseline_path, const bench_report *r);

#endif
