/* Benchmark reports: an aligned table on stdout; JSON and CSV with every field, a format
 * version and provenance; an SVG bar chart; and a comparison with an earlier JSON run. */
#ifndef CLATTN_REPORT_H
#define CLATTN_REPORT_H

#include "dispatch.h"
#include "peak.h"
#include "peers.h"
#include "suite.h"

#include <stdio.h>

/* 2 added devices[].peak_read_method and .dispatch, rows' above_peak_flops / above_peak_bw (a
 * percentage above 100 is written as null); 3 added rows' pass ("forward" or "backward": a row
 * without it is a forward one); 4 added rows' ratio_torch and peers.torch_sdpa_cpu. Readers take
 * versions 1 to 3 too. */
#define BENCH_FORMAT_VERSION 4

/* "fused", or "fused bwd" for a backward row: how tables and charts name a row. */
const char *report_algo_label(const bench_row *w, char *buf, size_t size);

typedef struct bench_device {
    int index;
    char name[256], vendor[256], driver[128], version[128];
    bool cpu; /* a CPU device: the CPU peers compare with it */
    device_peak peak;
    dispatch_figures dispatch;
} bench_device;

typedef struct bench_report {
    bench_device devices[16];
    int ndevices;
    bench_row *rows;
    int nrows;
    char command[1024];
    bool have_peers;    /* --peers: measured before and after the rows, averaged */
    peer_figures peers;
    torch_peer torch;   /* --peers: PyTorch's CPU SDPA on the f32 forward cases, when importable */
} bench_report;

/* A row's ratio to a peer, or NAN where the peer does not apply: GFLOP/s to SGEMM (any row),
 * to the BLAS unfused attention (its shape, 1x8x8x2048x2048x64, causal or not), GB/s to the
 * streaming read (decode rows, seq_q <= 16). */
double report_ratio_sgemm(const bench_report *r, const bench_row *w);
double report_ratio_blas_attention(const bench_report *r, const bench_row *w);
double report_ratio_stream(const bench_report *r, const bench_row *w);
/* PyTorch SDPA's ms over the row's (> 1: clattn is faster), for f32 forward rows on a CPU
 * device that PyTorch ran; NAN elsewhere. */
double report_ratio_torch(const bench_report *r, const bench_row *w);

/* What the table prints instead of a share of a peak above 100%: the row measured more than
 * the device's measured peak, a measurement error (of the peak, or of the row helped by a
 * cache); the JSON writes null and sets above_peak_flops / above_peak_bw. */
#define REPORT_ABOVE_PEAK "!>peak"
bool report_above_peak(double pct);

/* One device's line in the table's header: peaks (and the read that gave the bandwidth) and
 * the dispatch overhead. */
void report_device(FILE *f, const bench_device *d);
void report_table(FILE *f, const bench_report *r);
/* A fused row's time against the unfused row of the same case, device and dtype (x faster). */
double report_ratio_unfused(const bench_report *r, const bench_row *w);
/* The fused plan's parameters and their source, for the table. */
void report_params(const bench_row *w, char *buf, size_t size);
/* A growing text; `failed` once an allocation failed (later appends do nothing). */
typedef struct text_buf {
    char *s;
    size_t len, cap;
    bool failed;
} text_buf;
void text_printf(text_buf *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Writes `text` to path atomically (a failed write leaves the old file): 0, or 1 after
 * printing why. */
int report_write_text(const char *path, const char *text);

/* Each writes to a temporary file and renames it: a failure leaves no half-written file.
 * They return 0, or 1 after printing the reason. */
int report_json(const char *path, const bench_report *r);
int report_csv(const char *path, const bench_report *r);
int report_svg(const char *path, const bench_report *r);
/* Prints, per row found in both runs (same case id, device name, algorithm), the GFLOP/s
 * ratio now / baseline. Returns 0, or 1 if the baseline cannot be read. */
int report_compare(FILE *f, const char *baseline_path, const bench_report *r);

#endif
