#include "report.h"
#include "cli.h"
#include "files.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "clattn_commit.h" /* generated at build time: CLATTN_GIT_COMMIT */
#ifndef CLATTN_BUILD_OPTIONS
#define CLATTN_BUILD_OPTIONS "unknown"
#endif

static const char *dtype_name(clattn_dtype t)
{
    return t == CLATTN_DTYPE_F16 ? "f16" : t == CLATTN_DTYPE_BF16 ? "bf16" : "f32";
}

static void fmt_num(char *buf, size_t size, const char *fmt, double x)
{
    if (isnan(x)) snprintf(buf, size, "-");
    else if (isinf(x)) snprintf(buf, size, "inf");
    else snprintf(buf, size, fmt, x);
}

double report_ratio_sgemm(const bench_report *r, const bench_row *w)
{
    return r->have_peers && !strcmp(w->status, "ok") && r->peers.sgemm_gflops > 0 ? w->gflops / r->peers.sgemm_gflops
                                                                                  : NAN;
}

double report_ratio_blas_attention(const bench_report *r, const bench_row *w)
{
    const bench_case *c = &w->c;
    /* the peer is an f32 forward (two SGEMMs and a softmax): only such rows compare with it */
    if (!r->have_peers || strcmp(w->status, "ok") || w->dtype != CLATTN_DTYPE_F32 || w->pass != PASS_FORWARD ||
        c->b != 1 || c->hq != 8 || c->hkv != 8 || c->nq != 2048 || c->nk != 2048 || c->d != 64)
        return NAN;
    const double peer = c->causal ? r->peers.attn_causal_gflops : r->peers.attn_gflops;
    return peer > 0 ? w->gflops / peer : NAN;
}

double report_ratio_stream(const bench_report *r, const bench_row *w)
{
    return r->have_peers && !strcmp(w->status, "ok") && bench_is_decode(&w->c) && r->peers.stream_gbs > 0
               ? w->gbs / r->peers.stream_gbs
               : NAN;
}

double report_ratio_torch(const bench_report *r, const bench_row *w)
{
    if (!r->torch.present || strcmp(w->status, "ok") || w->algo == ALGO_REFERENCE || w->dtype != CLATTN_DTYPE_F32 ||
        w->pass != PASS_FORWARD)
        return NAN;
    bool cpu = false;
    for (int i = 0; i < r->ndevices; i++)
        if (r->devices[i].index == w->device_index) cpu = r->devices[i].cpu;
    const double peer = peers_torch_ms(&r->torch, w->c.id);
    return cpu && peer > 0 && w->ms_median > 0 ? peer / w->ms_median : NAN;
}

double report_ratio_unfused(const bench_report *r, const bench_row *w)
{
    if (w->algo != ALGO_FUSED || strcmp(w->status, "ok")) return NAN;
    for (int i = 0; i < r->nrows; i++) {
        const bench_row *u = &r->rows[i];
        if (u->algo == ALGO_UNFUSED && !strcmp(u->status, "ok") && u->device_index == w->device_index &&
            u->c.id == w->c.id && u->dtype == w->dtype && u->pass == w->pass && !memcmp(&u->c, &w->c, sizeof u->c))
            return w->ms_median > 0 ? u->ms_median / w->ms_median : NAN;
    }
    return NAN;
}

/* "fused", or "fused bwd" for a backward row: the table's and the chart's name of a row. */
const char *report_algo_label(const bench_row *w, char *buf, size_t size)
{
    snprintf(buf, size, "%s%s", bench_algo_name(w->algo), w->pass == PASS_BACKWARD ? " bwd" : "");
    return buf;
}

/* "BM=4 BN=16 VW=16 WG=8 splits=1 (shipped (device))": the fused plan's parameters. */
void report_params(const bench_row *w, char *buf, size_t size)
{
    buf[0] = '\0';
    if (w->algo != ALGO_FUSED || !w->tuning.rows) return;
    const char *sp = strstr(w->variant, "splits=");
    snprintf(buf, size, "BM=%d BN=%d VW=%d WG=%d TPR=%d %s (%s)", w->tuning.rows, w->tuning.keys,
             w->tuning.vector_width, w->tuning.group_size, w->tuning.threads_per_row, sp ? sp : "", w->tuning_source);
}

bool report_above_peak(double pct) { return pct > 100.0; }

/* A share of a measured peak, never above 100%: above it is a measurement error. */
static void fmt_pct(char *buf, size_t size, double pct)
{
    if (report_above_peak(pct)) snprintf(buf, size, "%s", REPORT_ABOVE_PEAK);
    else fmt_num(buf, size, "%.1f", pct);
}

void report_device(FILE *f, const bench_device *d)
{
    fprintf(f, "  %d %s (%s): peak %.1f GFLOP/s FMA, %.1f GB/s read", d->index, d->name, d->driver,
            d->peak.fma_gflops, d->peak.read_gbs);
    fprintf(f, d->peak.read_method[0] ? " (best read: %s)\n" : "\n", d->peak.read_method);
    const dispatch_figures *x = &d->dispatch;
    if (!x->measured) return;
    fprintf(f,
            "    dispatch: clattn_plan_execute %.1f us per call (enqueue only, median of %d); tiny call %s "
            "%.1f us, empty kernel %.1f us round trip (%.2fx; medians of %d, enqueue + clFinish)\n",
            x->execute_us, x->execute_calls, DISPATCH_TINY_SHAPE, x->tiny_call_us, x->empty_kernel_us,
            x->empty_kernel_us > 0 ? x->tiny_call_us / x->empty_kernel_us : NAN, x->round_trips);
}

void report_table(FILE *f, const bench_report *r)
{
    fprintf(f, "%-4s %-22s %-4s %-24.24s %-11s %10s %8s %8s %7s %8s %6s %9s %9s %5s %-6s %s\n", "id",
            "BxHqxHkvxNqxNkxD", "type", "device", "algo", "ms(med)", "spread%", "GFLOP/s", "%peak", "GB/s", "%bw",
            "mem_MiB", "relL2", "rows", "status", "parameters");
    bool above = false;
    for (int i = 0; i < r->nrows; i++) {
        const bench_row *w = &r->rows[i];
        char shape[64], ms[32], spread[32], gf[32], pf[32], gb[32], pb[32], err[32];
        bench_case_name(&w->c, shape, sizeof shape);
        const bool ok = !strcmp(w->status, "ok") || !strcmp(w->status, "wrong");
        fmt_num(ms, sizeof ms, "%.3f", ok ? w->ms_median : NAN);
        fmt_num(spread, sizeof spread, "%.1f", ok && w->ms_median > 0 ? 100 * (w->ms_max - w->ms_min) / w->ms_median : NAN);
        fmt_num(gf, sizeof gf, "%.1f", ok ? w->gflops : NAN);
        fmt_pct(pf, sizeof pf, ok ? w->pct_flops : NAN);
        fmt_num(gb, sizeof gb, "%.1f", ok ? w->gbs : NAN);
        fmt_pct(pb, sizeof pb, ok ? w->pct_bw : NAN);
        above = above || (ok && (report_above_peak(w->pct_flops) || report_above_peak(w->pct_bw)));
        fmt_num(err, sizeof err, "%.2e", ok && w->algo != ALGO_REFERENCE ? w->rel_l2 : NAN);
        char params[160];
        report_params(w, params, sizeof params);
        char label[24];
        fprintf(f, "%-4d %-22s %-4s %-24.24s %-11s %10s %8s %8s %7s %8s %6s %9.1f %9s %5d %-6s %s%s%s\n", w->c.id,
                shape, dtype_name(w->dtype), w->device, report_algo_label(w, label, sizeof label), ms, spread, gf, pf, gb, pb,
                w->mem_bytes / 1048576.0, err, w->checked_rows, w->status, params, w->reason[0] ? ": " : "",
                w->reason);
    }
    if (above)
        fprintf(f, "%s: the row measured more than the device's measured peak, so one of the two is wrong (the peak, "
                   "or the row helped by a cache): a measurement error, not a percentage; --remeasure-peaks redoes "
                   "the peaks\n", REPORT_ABOVE_PEAK);
}

int report_write_text(const char *path, const char *text)
{
    const files_chunk all = {text, strlen(text)};
    const int e = files_write_atomic(path, &all, 1);
    return e ? cli_error("cannot write %s: %s", path, strerror(e)) : 0;
}

static cJSON *num(double x) { return isfinite(x) ? cJSON_CreateNumber(x) : cJSON_CreateNull(); }

int report_json(const char *path, const bench_report *r)
{
    cJSON *root = cJSON_CreateObject();
    cJSON_AddNumberToObject(root, "format_version", BENCH_FORMAT_VERSION);
    cJSON *prov = cJSON_AddObjectToObject(root, "provenance");
    cJSON_AddStringToObject(prov, "clattn_version", clattn_version_string());
    cJSON_AddStringToObject(prov, "commit", CLATTN_GIT_COMMIT);
    cJSON_AddStringToObject(prov, "build_options", CLATTN_BUILD_OPTIONS);
    cJSON_AddStringToObject(prov, "command", r->command);
    char date[64];
    time_t now = time(NULL);
    strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
    cJSON_AddStringToObject(prov, "date", date);
    cJSON *devs = cJSON_AddArrayToObject(root, "devices");
    for (int i = 0; i < r->ndevices; i++) {
        const bench_device *d = &r->devices[i];
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "index", d->index);
        cJSON_AddStringToObject(o, "name", d->name);
        cJSON_AddStringToObject(o, "vendor", d->vendor);
        cJSON_AddStringToObject(o, "driver", d->driver);
        cJSON_AddStringToObject(o, "opencl_version", d->version);
        cJSON_AddItemToObject(o, "peak_fma_gflops", num(d->peak.fma_gflops));
        cJSON_AddItemToObject(o, "peak_read_gbs", num(d->peak.read_gbs));
        cJSON_AddStringToObject(o, "peak_read_method", d->peak.read_method);
        if (d->dispatch.measured) {
            const dispatch_figures *x = &d->dispatch;
            cJSON *dj = cJSON_AddObjectToObject(o, "dispatch");
            cJSON_AddItemToObject(dj, "execute_us", num(x->execute_us));
            cJSON_AddNumberToObject(dj, "execute_calls", x->execute_calls);
            cJSON_AddStringToObject(dj, "tiny_shape", DISPATCH_TINY_SHAPE);
            cJSON_AddStringToObject(dj, "tiny_variant", x->variant);
            cJSON_AddItemToObject(dj, "tiny_call_us", num(x->tiny_call_us));
            cJSON_AddItemToObject(dj, "empty_kernel_us", num(x->empty_kernel_us));
            cJSON_AddItemToObject(dj, "tiny_over_empty",
                                  num(x->empty_kernel_us > 0 ? x->tiny_call_us / x->empty_kernel_us : NAN));
            cJSON_AddNumberToObject(dj, "round_trips", x->round_trips);
        }
        cJSON_AddItemToArray(devs, o);
    }
    cJSON *peers = r->have_peers ? cJSON_AddObjectToObject(root, "peers") : NULL;
    if (peers) {
        cJSON_AddItemToObject(peers, "openblas_sgemm_2048_gflops", num(r->peers.sgemm_gflops));
        cJSON_AddItemToObject(peers, "openblas_unfused_attention_gflops", num(r->peers.attn_gflops));
        cJSON_AddItemToObject(peers, "openblas_unfused_attention_causal_gflops", num(r->peers.attn_causal_gflops));
        cJSON_AddItemToObject(peers, "stream_read_gbs", num(r->peers.stream_gbs));
        cJSON *t = cJSON_AddObjectToObject(peers, "torch_sdpa_cpu");
        if (t && r->torch.present) {
            cJSON_AddStringToObject(t, "torch", r->torch.version);
            cJSON_AddNumberToObject(t, "threads", r->torch.threads);
            cJSON *ms = cJSON_AddObjectToObject(t, "ms_by_case");
            for (int i = 0; ms && i < r->torch.n; i++) {
                char id[16];
                snprintf(id, sizeof id, "%d", r->torch.id[i]);
                cJSON_AddItemToObject(ms, id, num(r->torch.ms[i]));
            }
        } else if (t) {
            cJSON_AddStringToObject(t, "absent", r->torch.note);
        }
    }
    cJSON *rows = cJSON_AddArrayToObject(root, "rows");
    for (int i = 0; i < r->nrows; i++) {
        const bench_row *w = &r->rows[i];
        cJSON *o = cJSON_CreateObject();
        char shape[64];
        bench_case_name(&w->c, shape, sizeof shape);
        cJSON_AddNumberToObject(o, "case", w->c.id);
        cJSON_AddStringToObject(o, "shape", shape);
        cJSON_AddNumberToObject(o, "batch", w->c.b);
        cJSON_AddNumberToObject(o, "heads_q", w->c.hq);
        cJSON_AddNumberToObject(o, "heads_kv", w->c.hkv);
        cJSON_AddNumberToObject(o, "seq_q", w->c.nq);
        cJSON_AddNumberToObject(o, "seq_kv", w->c.nk);
        cJSON_AddNumberToObject(o, "head_dim", w->c.d);
        cJSON_AddBoolToObject(o, "causal", w->c.causal);
        cJSON_AddStringToObject(o, "dtype", dtype_name(w->dtype));
        cJSON_AddNumberToObject(o, "device_index", w->device_index);
        cJSON_AddStringToObject(o, "device", w->device);
        cJSON_AddStringToObject(o, "driver", w->driver);
        cJSON_AddStringToObject(o, "algo", bench_algo_name(w->algo));
        cJSON_AddStringToObject(o, "pass", bench_pass_name(w->pass));
        cJSON_AddStringToObject(o, "variant", w->variant);
        cJSON_AddStringToObject(o, "status", w->status);
        cJSON_AddStringToObject(o, "reason", w->reason);
        cJSON_AddItemToObject(o, "ms_median", num(w->ms_median));
        cJSON_AddItemToObject(o, "ms_min", num(w->ms_min));
        cJSON_AddItemToObject(o, "ms_max", num(w->ms_max));
        cJSON_AddNumberToObject(o, "samples", w->samples);
        cJSON_AddNumberToObject(o, "calls_per_sample", w->calls_per_sample);
        cJSON_AddItemToObject(o, "gflops", num(w->gflops));
        /* above the measured peak: null, and flagged, never a percentage above 100 */
        cJSON_AddItemToObject(o, "pct_peak_flops", num(report_above_peak(w->pct_flops) ? NAN : w->pct_flops));
        cJSON_AddBoolToObject(o, "above_peak_flops", report_above_peak(w->pct_flops));
        cJSON_AddItemToObject(o, "gbs", num(w->gbs));
        cJSON_AddItemToObject(o, "pct_peak_bw", num(report_above_peak(w->pct_bw) ? NAN : w->pct_bw));
        cJSON_AddBoolToObject(o, "above_peak_bw", report_above_peak(w->pct_bw));
        cJSON_AddNumberToObject(o, "mem_bytes", w->mem_bytes);
        cJSON_AddItemToObject(o, "rel_l2", num(w->rel_l2));
        cJSON_AddItemToObject(o, "max_abs", num(w->max_abs));
        cJSON_AddNumberToObject(o, "checked_rows", w->checked_rows);
        cJSON_AddNumberToObject(o, "seed", (double)w->seed);
        cJSON_AddItemToObject(o, "ratio_sgemm", num(report_ratio_sgemm(r, w)));
        cJSON_AddItemToObject(o, "ratio_blas_attention", num(report_ratio_blas_attention(r, w)));
        cJSON_AddItemToObject(o, "ratio_stream", num(report_ratio_stream(r, w)));
        cJSON_AddItemToObject(o, "ratio_unfused", num(report_ratio_unfused(r, w)));
        cJSON_AddItemToObject(o, "ratio_torch", num(report_ratio_torch(r, w)));
        if (w->algo == ALGO_FUSED && w->tuning.rows) {
            cJSON *t = cJSON_AddObjectToObject(o, "tuning");
            cJSON_AddNumberToObject(t, "rows", w->tuning.rows);
            cJSON_AddNumberToObject(t, "keys", w->tuning.keys);
            cJSON_AddNumberToObject(t, "vector_width", w->tuning.vector_width);
            cJSON_AddNumberToObject(t, "group_size", w->tuning.group_size);
            cJSON_AddNumberToObject(t, "split_units", w->tuning.split_units);
            cJSON_AddNumberToObject(t, "threads_per_row", w->tuning.threads_per_row);
            cJSON_AddStringToObject(t, "source", w->tuning_source);
        }
        cJSON_AddItemToArray(rows, o);
    }
    char *text = cJSON_Print(root);
    cJSON_Delete(root);
    if (!text) return cli_error("out of memory writing %s", path);
    int rc = report_write_text(path, text);
    free(text);
    return rc;
}

void text_printf(text_buf *t, const char *fmt, ...)
{
    if (t->failed) return;
    va_list ap;
    va_start(ap, fmt);
    const int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) {
        t->failed = true;
        return;
    }
    if (t->len + (size_t)n + 1 > t->cap) {
        size_t cap = t->cap ? t->cap : 4096;
        while (t->len + (size_t)n + 1 > cap) cap *= 2;
        char *s = realloc(t->s, cap);
        if (!s) {
            t->failed = true;
            return;
        }
        t->s = s;
        t->cap = cap;
    }
    va_start(ap, fmt);
    vsnprintf(t->s + t->len, t->cap - t->len, fmt, ap);
    va_end(ap);
    t->len += (size_t)n;
}

/* One RFC 4180 field, then `after`: enclosed in double quotes, inner ones doubled, when it
 * holds a comma, a double quote, CR or LF (device names and reasons are free text); as is
 * otherwise. */
static void csv_field(text_buf *t, const char *field, const char *after)
{
    if (!field[strcspn(field, ",\"\r\n")]) {
        text_printf(t, "%s%s", field, after);
        return;
    }
    text_printf(t, "\"");
    for (const char *p = field; *p; p++) {
        const size_t run = strcspn(p, "\"");
        text_printf(t, "%.*s", (int)run, p);
        p += run;
        if (!*p) break;
        text_printf(t, "\"\"");
    }
    text_printf(t, "\"%s", after);
}

int report_csv(const char *path, const bench_report *r)
{
    text_buf t = {0};
    text_printf(&t,
                "# clattn bench, format_version %d, clattn %s, commit %s\n"
                "case,shape,batch,heads_q,heads_kv,seq_q,seq_kv,head_dim,causal,dtype,device_index,device,"
                "driver,algo,pass,variant,status,reason,ms_median,ms_min,ms_max,samples,calls_per_sample,gflops,"
                "pct_peak_flops,above_peak_flops,gbs,pct_peak_bw,above_peak_bw,mem_bytes,rel_l2,max_abs,checked_rows,"
                "seed,ratio_sgemm,ratio_blas_attention,ratio_stream,ratio_unfused,ratio_torch\n",
                BENCH_FORMAT_VERSION, clattn_version_string(), CLATTN_GIT_COMMIT);
    for (int i = 0; i < r->nrows; i++) {
        const bench_row *w = &r->rows[i];
        char shape[64];
        bench_case_name(&w->c, shape, sizeof shape);
        text_printf(&t, "%d,", w->c.id);
        csv_field(&t, shape, ",");
        text_printf(&t, "%d,%d,%d,%d,%d,%d,%d,", w->c.b, w->c.hq, w->c.hkv, w->c.nq, w->c.nk, w->c.d, w->c.causal);
        csv_field(&t, dtype_name(w->dtype), ",");
        text_printf(&t, "%d,", w->device_index);
        const char *text[] = {w->device, w->driver, bench_algo_name(w->algo), bench_pass_name(w->pass), w->variant,
                              w->status, w->reason};
        for (size_t k = 0; k < sizeof text / sizeof text[0]; k++) csv_field(&t, text[k], ",");
        const bool af = report_above_peak(w->pct_flops), ab = report_above_peak(w->pct_bw);
        text_printf(&t, "%.6g,%.6g,%.6g,%d,%d,%.6g,%.6g,%d,%.6g,%.6g,%d,%.0f,%.6g,%.6g,%d,%llu,%.6g,%.6g,%.6g,%.6g,%.6g\n",
                    w->ms_median, w->ms_min, w->ms_max, w->samples, w->calls_per_sample, w->gflops,
                    af ? NAN : w->pct_flops, af, w->gbs, ab ? NAN : w->pct_bw, ab, w->mem_bytes, w->rel_l2, w->max_abs,
                    w->checked_rows,
                    (unsigned long long)w->seed, report_ratio_sgemm(r, w), report_ratio_blas_attention(r, w),
                    report_ratio_stream(r, w), report_ratio_unfused(r, w), report_ratio_torch(r, w));
    }
    const int rc = t.failed ? cli_error("out of memory writing %s", path) : report_write_text(path, t.s);
    free(t.s);
    return rc;
}

/* Grouped bars: one group per case, one bar per device x algorithm that ran (status ok),
 * one colour per device x algorithm, with a legend and labelled axes. */
int report_svg(const char *path, const bench_report *r)
{
    char series[32][300];
    int nseries = 0, cases[128], ncases = 0;
    double ymax = 0;
    for (int i = 0; i < r->nrows; i++) {
        const bench_row *w = &r->rows[i];
        if (strcmp(w->status, "ok")) continue;
        char key[300], label[24];
        snprintf(key, sizeof key, "%s / %s", w->device, report_algo_label(w, label, sizeof label));
        int s = 0;
        while (s < nseries && strcmp(series[s], key)) s++;
        if (s == nseries && nseries < 32) snprintf(series[nseries++], sizeof series[0], "%s", key);
        int c = 0;
        while (c < ncases && cases[c] != w->c.id) c++;
        if (c == ncases && ncases < 128) cases[ncases++] = w->c.id;
        if (w->gflops > ymax) ymax = w->gflops;
    }
    if (ymax <= 0) ymax = 1;
    const int gw = 16 * (nseries > 0 ? nseries : 1) + 24, left = 70, top = 40, ph = 320;
    const int width = left + gw * (ncases > 0 ? ncases : 1) + 40, height = top + ph + 80 + 18 * nseries;
    static const char *colour[] = {"#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948",
                                   "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac"};
    size_t cap = 65536 + (size_t)r->nrows * 512, len = 0;
    char *t = malloc(cap);
    if (!t) return cli_error("out of memory writing %s", path);
#define OUT(...) (len += (size_t)snprintf(t + len, cap - len, __VA_ARGS__))
    OUT("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    OUT("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" font-family=\"sans-serif\" font-size=\"11\">\n",
        width, height);
    OUT("<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n");
    OUT("<text x=\"%d\" y=\"20\" font-size=\"14\">clattn bench: GFLOP/s per case (higher is better)</text>\n", left);
    for (int g = 0; g <= 4; g++) { /* y axis with gridlines */
        const double v = ymax * g / 4;
        const int y = top + ph - (int)(ph * g / 4);
        OUT("<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"#ddd\"/>\n", left, y, width - 30, y);
        OUT("<text x=\"%d\" y=\"%d\" text-anchor=\"end\">%.1f</text>\n", left - 5, y + 4, v);
    }
    OUT("<text transform=\"translate(18,%d) rotate(-90)\" text-anchor=\"middle\">GFLOP/s</text>\n", top + ph / 2);
    OUT("<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"black\"/>\n", left, top + ph, width - 30, top + ph);
    for (int c = 0; c < ncases; c++) {
        const int x0 = left + 12 + c * gw;
        for (int i = 0; i < r->nrows; i++) {
            const bench_row *w = &r->rows[i];
            if (w->c.id != cases[c] || strcmp(w->status, "ok")) continue;
            char key[300], label[24];
            snprintf(key, sizeof key, "%s / %s", w->device, report_algo_label(w, label, sizeof label));
            int s = 0;
            while (s < nseries && strcmp(series[s], key)) s++;
            const int h = (int)(ph * w->gflops / ymax);
            OUT("<rect class=\"bar\" x=\"%d\" y=\"%d\" width=\"14\" height=\"%d\" fill=\"%s\"><title>case %d, %s: %.2f GFLOP/s</title></rect>\n",
                x0 + 16 * s, top + ph - h, h, colour[s % 10], w->c.id, key, w->gflops);
        }
        OUT("<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">%d</text>\n", x0 + 8 * nseries, top + ph + 15, cases[c]);
    }
    OUT("<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">case id (see the table or JSON for shapes)</text>\n",
        left + gw * ncases / 2, top + ph + 34);
    for (int s = 0; s < nseries; s++) {
        char esc[600];
        size_t k = 0;
        for (const char *p = series[s]; *p && k < sizeof esc - 7; p++) {
            if (*p == '&') k += (size_t)snprintf(esc + k, sizeof esc - k, "&amp;");
            else if (*p == '<') k += (size_t)snprintf(esc + k, sizeof esc - k, "&lt;");
            else if (*p == '>') k += (size_t)snprintf(esc + k, sizeof esc - k, "&gt;");
            else esc[k++] = *p;
        }
        esc[k] = '\0';
        const int y = top + ph + 52 + 18 * s;
        OUT("<rect x=\"%d\" y=\"%d\" width=\"12\" height=\"12\" fill=\"%s\"/>\n", left, y - 10, colour[s % 10]);
        OUT("<text x=\"%d\" y=\"%d\">%s</text>\n", left + 18, y, esc);
    }
    OUT("</svg>\n");
#undef OUT
    int rc = report_write_text(path, t);
    free(t);
    return rc;
}

int report_compare(FILE *f, const char *baseline_path, const bench_report *r)
{
    FILE *in = fopen(baseline_path, "rb");
    if (!in) return cli_error("--compare: %s: %s", baseline_path, strerror(errno));
    fseek(in, 0, SEEK_END);
    long n = ftell(in);
    fseek(in, 0, SEEK_SET);
    char *text = n > 0 ? malloc((size_t)n + 1) : NULL;
    const bool read = text && fread(text, 1, (size_t)n, in) == (size_t)n;
    fclose(in);
    if (!read) {
        free(text);
        return cli_error("--compare: cannot read %s", baseline_path);
    }
    text[n] = '\0';
    cJSON *root = cJSON_Parse(text);
    free(text);
    const cJSON *rows = root ? cJSON_GetObjectItemCaseSensitive(root, "rows") : NULL;
    const cJSON *ver = root ? cJSON_GetObjectItemCaseSensitive(root, "format_version") : NULL;
    if (!cJSON_IsArray(rows) || !cJSON_IsNumber(ver) || ver->valueint < 1 || ver->valueint > BENCH_FORMAT_VERSION) {
        cJSON_Delete(root);
        return cli_error("--compare: %s is not a clattn bench JSON of format version 1..%d", baseline_path,
                         BENCH_FORMAT_VERSION);
    }
    fprintf(f, "\ncompared with %s (GFLOP/s now / baseline):\n", baseline_path);
    fprintf(f, "%-4s %-24.24s %-9s %10s %10s %7s\n", "id", "device", "algo", "baseline", "now", "ratio");
    for (int i = 0; i < r->nrows; i++) {
        const bench_row *w = &r->rows[i];
        const cJSON *b;
        cJSON_ArrayForEach(b, rows)
        {
            const cJSON *id = cJSON_GetObjectItemCaseSensitive(b, "case");
            const cJSON *dev = cJSON_GetObjectItemCaseSensitive(b, "device");
            const cJSON *algo = cJSON_GetObjectItemCaseSensitive(b, "algo");
            const cJSON *gf = cJSON_GetObjectItemCaseSensitive(b, "gflops");
            const cJSON *dt = cJSON_GetObjectItemCaseSensitive(b, "dtype");
            const cJSON *pass = cJSON_GetObjectItemCaseSensitive(b, "pass"); /* absent before format 3: forward */
            if (strcmp(cJSON_IsString(pass) ? pass->valuestring : "forward", bench_pass_name(w->pass))) continue;
            if (!cJSON_IsNumber(id) || id->valueint != w->c.id || !cJSON_IsString(dev) || strcmp(dev->valuestring, w->device) ||
                !cJSON_IsString(algo) || strcmp(algo->valuestring, bench_algo_name(w->algo)) || !cJSON_IsString(dt) ||
                strcmp(dt->valuestring, dtype_name(w->dtype)))
                continue;
            if (cJSON_IsNumber(gf) && gf->valuedouble > 0 && !strcmp(w->status, "ok"))
                fprintf(f, "%-4d %-24.24s %-9s %10.2f %10.2f %7.3f\n", w->c.id, w->device, bench_algo_name(w->algo),
                        gf->valuedouble, w->gflops, w->gflops / gf->valuedouble);
            break;
        }
    }
    cJSON_Delete(root);
    return 0;
}
