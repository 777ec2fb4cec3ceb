/* `clattn bench`: the numbered suite (or --shape cases) on one device or all, for each
 * algorithm, with measured device peaks; table on stdout, JSON/CSV/SVG files, --compare. */
#include "cli.h"
#include "report.h"

#include <cblas.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int parse_shape(const char *s, bench_case *c)
{
    char tail;
    memset(c, 0, sizeof *c);
    if (sscanf(s, "%dx%dx%dx%dx%dx%d%c", &c->b, &c->hq, &c->hkv, &c->nq, &c->nk, &c->d, &tail) != 6 || c->b < 1 ||
        c->hq < 1 || c->hkv < 1 || c->nq < 1 || c->nk < 1 || c->d < 1 || c->hq % c->hkv)
        return cli_error("bench: --shape wants BxHqxHkvxNqxNkxD with positive sizes and Hq a multiple of Hkv (got '%s')", s);
    return 0;
}

static int parse_algos(const char *list, bool want[3])
{
    want[0] = want[1] = want[2] = false;
    const char *item;
    size_t len;
    while (cli_list_next(&list, &item, &len)) {
        if (cli_list_item_is(item, len, "fused")) want[ALGO_FUSED] = true;
        else if (cli_list_item_is(item, len, "unfused")) want[ALGO_UNFUSED] = true;
        else if (cli_list_item_is(item, len, "reference")) want[ALGO_REFERENCE] = true;
        else if (cli_list_item_is(item, len, "all")) want[0] = want[1] = want[2] = true;
        else
            return cli_error("bench: --algo: unknown algorithm '%.*s' (valid: fused, unfused, reference, all; "
                             "comma-separated)", (int)len, item);
    }
    return 0;
}

/* The suite index of a --cases entry (a case id), or -1. */
static int suite_index(const char *item, size_t len)
{
    char text[16];
    long id;
    if (len >= sizeof text) return -1;
    memcpy(text, item, len);
    text[len] = '\0';
    if (!cli_parse_long(text, 0, 1 << 30, &id)) return -1;
    for (int i = 0; i < bench_suite_size; i++)
        if (bench_suite[i].id == id) return i;
    return -1;
}

/* --cases: suite ids, each one that exists (a mistyped id would silently measure less). */
static int parse_cases(const char *list, bool pick[])
{
    for (int i = 0; i < bench_suite_size; i++) pick[i] = false;
    const char *item;
    size_t len;
    while (cli_list_next(&list, &item, &len)) {
        const int i = suite_index(item, len);
        if (i < 0) {
            char valid[256] = "";
            for (int k = 0; k < bench_suite_size; k++) {
                const size_t used = strlen(valid);
                snprintf(valid + used, sizeof valid - used, "%s%d", k ? ", " : "", bench_suite[k].id);
            }
            return cli_error("bench: --cases: no suite case '%.*s' (ids: %s)", (int)len, item, valid);
        }
        pick[i] = true;
    }
    return 0;
}

/* Appends " word" to the recorded command line, truncating at its end. */
static void record_arg(char *command, size_t size, const char *word)
{
    const size_t used = strlen(command);
    if (used + 1 < size) snprintf(command + used, size - used, " %s", word);
}

enum {
    OPT_CAUSAL = 256, OPT_QUICK, OPT_REMEASURE, OPT_KEEP_PEAKS, OPT_PEERS, OPT_DEVICE, OPT_JSON, OPT_CSV, OPT_SVG, OPT_COMPARE,
    OPT_CASES, OPT_ALGO, OPT_SHAPE, OPT_DTYPE, OPT_SPLITS, OPT_BUDGET, OPT_PASS
};

static const struct option bench_options[] = {
    {"causal", no_argument, NULL, OPT_CAUSAL},
    {"quick", no_argument, NULL, OPT_QUICK},
    {"remeasure-peaks", no_argument, NULL, OPT_REMEASURE},
    {"keep-peaks", no_argument, NULL, OPT_KEEP_PEAKS},
    {"peers", no_argument, NULL, OPT_PEERS},
    {"device", required_argument, NULL, OPT_DEVICE},
    {"json", required_argument, NULL, OPT_JSON},
    {"csv", required_argument, NULL, OPT_CSV},
    {"svg", required_argument, NULL, OPT_SVG},
    {"compare", required_argument, NULL, OPT_COMPARE},
    {"cases", required_argument, NULL, OPT_CASES},
    {"algo", required_argument, NULL, OPT_ALGO},
    {"shape", required_argument, NULL, OPT_SHAPE},
    {"dtype", required_argument, NULL, OPT_DTYPE},
    {"splits", required_argument, NULL, OPT_SPLITS},
    {"budget-ms", required_argument, NULL, OPT_BUDGET},
    {"pass", required_argument, NULL, OPT_PASS},
    {NULL, 0, NULL, 0},
};

/* A row above one of its device's peaks: the peaks are measured again now and the larger of
 * each kept (a shared VM's memory ran in two speeds minutes apart: a decode once streamed 70 GB/s
 * against a 65.5 GB/s peak measured in a slow minute). A row still above is a measurement error,
 * reported as such (report.c), never as a share above 100%. */
static void raise_peaks(clattn_context *ctx, bench_device *bd, bench_row *rows, int n)
{
    bool above = false;
    for (int i = 0; i < n; i++)
        above = above || (!strcmp(rows[i].status, "ok") && (report_above_peak(rows[i].pct_flops) ||
                                                              report_above_peak(rows[i].pct_bw)));
    if (!above) return;
    fprintf(stderr, "clattn bench: %s: a row ran above a peak; measuring the peaks again...\n", bd->name);
    if (!peak_raise(ctx, &bd->peak)) return;
    fprintf(stderr, "clattn bench: %s: now %.1f GFLOP/s FMA, %.1f GB/s read\n", bd->name, bd->peak.fma_gflops,
            bd->peak.read_gbs);
    for (int i = 0; i < n; i++)
        if (!strcmp(rows[i].status, "ok") && !isnan(rows[i].pct_flops)) bench_row_shares(&rows[i], &bd->peak);
}

/* Fused rows that ran generic parameters (nothing tuned or shipped for their device and class):
 * say so, and how to tune. */
static void print_generic(const bench_report *rep)
{
    char ids[256] = "";
    int n = 0;
    for (int i = 0; i < rep->nrows; i++) {
        const bench_row *w = &rep->rows[i];
        if (w->algo != ALGO_FUSED || strcmp(w->status, "ok") || strcmp(w->tuning_source, "generic")) continue;
        const size_t len = strlen(ids);
        snprintf(ids + len, sizeof ids - len, "%s%d", n++ ? ", " : "", w->c.id);
    }
    if (n)
        printf("\nnote: %d fused row(s) ran generic parameters (case %s): nothing is tuned or shipped for their "
               "device and shape class. `clattn tune --quick` (35 s on a 2-core PoCL) or `clattn tune` measures and "
               "stores tuned ones; later runs use them.\n", n, ids);
}

/* Each paged row beside the same call on a dense cache, timed in alternation with it (the
 * ratio that drift on a shared machine moves least), and beside the dense case's own row of the
 * same run when there is one. GB/s count the same fewest bytes for both. */
static void print_paged(const bench_report *rep)
{
    bool header = false;
    for (int i = 0; i < rep->nrows; i++) {
        const bench_row *p = &rep->rows[i];
        if (!p->c.page || strcmp(p->status, "ok")) continue;
        const bench_row *dense = NULL;
        for (int j = 0; j < rep->nrows && !dense; j++) {
            const bench_row *d = &rep->rows[j];
            const bench_case *a = &p->c, *b = &d->c;
            if (!b->page && !strcmp(d->status, "ok") && d->algo == p->algo && d->dtype == p->dtype &&
                d->pass == p->pass && d->device_index == p->device_index && a->b == b->b && a->hq == b->hq &&
                a->hkv == b->hkv && a->nq == b->nq && a->nk == b->nk && a->d == b->d && a->causal == b->causal)
                dense = d;
        }
        if (!header)
            printf("\npaged KV cache against the same call on a dense cache (GB/s of the same fewest bytes):\n"
                   "%-4s %-28s %-8s %10s %10s %10s %10s %10s %8s %13s\n", "id", "case", "algo", "paged ms", "dense ms",
                   "BSHD ms", "paged GB/s", "of dense", "of BSHD", "of dense row");
        header = true;
        char shape[64], row_share[16] = "-", share[16] = "-", dense_ms[16] = "-", bshd[16] = "-", bshd_ms[16] = "-";
        bench_case_name(&p->c, shape, sizeof shape);
        if (!isnan(p->dense_ms)) {
            snprintf(dense_ms, sizeof dense_ms, "%.3f", p->dense_ms);
            snprintf(share, sizeof share, "%.1f%%", 100.0 * p->dense_share);
        }
        if (!isnan(p->bshd_ms)) {
            snprintf(bshd_ms, sizeof bshd_ms, "%.3f", p->bshd_ms);
            snprintf(bshd, sizeof bshd, "%.1f%%", 100.0 * p->bshd_share);
        }
        if (dense) snprintf(row_share, sizeof row_share, "%.1f%%", 100.0 * p->gbs / dense->gbs);
        printf("%-4d %-28s %-8s %10.3f %10s %10s %10.2f %10s %8s %13s\n", p->c.id, shape, bench_algo_name(p->algo),
               p->ms_median, dense_ms, bshd_ms, p->gbs, share, bshd, row_share);
    }
    if (header)
        printf("(dense ms: the same call on a dense BHSD cache, timed in alternation with the paged one, sample "
               "for sample; BSHD ms: on a dense BSHD cache (a token's heads side by side, as in the pages), in the "
               "same alternation; of dense, of BSHD: the median over those pairs of dense / paged time; of dense "
               "row: against the dense case's own row of this run)\n");
}

int cmd_bench(int argc, char **argv)
{
    const char *device = NULL, *json = NULL, *csv = NULL, *svg = NULL, *compare = NULL;
    bench_case custom[32];
    int ncustom = 0, causal = 0, quick = 0, remeasure = 0, keep_peaks = 0;
    bool algos[3] = {true, true, true}, have_cases = false, pick[64]; /* pick: per suite index, as list[64] */
    bench_opts opts = {1000.0, CLATTN_DTYPE_F32, false, 0};
    bool passes[2] = {true, false}; /* forward, backward */
    bench_report rep;
    memset(&rep, 0, sizeof rep);
    snprintf(rep.command, sizeof rep.command, "clattn bench");
    for (int i = 1; i < argc; i++) record_arg(rep.command, sizeof rep.command, argv[i]);
    optind = 0;
    for (int c; (c = cli_next_option("bench", argc, argv, "", bench_options)) != -1;) {
        const char *v = optarg;
        long n;
        switch (c) {
        case OPT_CAUSAL: causal = 1; break;
        case OPT_QUICK: quick = 1; break;
        case OPT_REMEASURE: remeasure = 1; break;
        case OPT_KEEP_PEAKS: keep_peaks = 1; break;
        case OPT_PEERS: rep.have_peers = true; break;
        case OPT_DEVICE: device = v; break;
        case OPT_JSON: json = v; break;
        case OPT_CSV: csv = v; break;
        case OPT_SVG: svg = v; break;
        case OPT_COMPARE: compare = v; break;
        case OPT_CASES:
            if (parse_cases(v, pick)) return 1;
            have_cases = true;
            break;
        case OPT_ALGO:
            if (parse_algos(v, algos)) return 1;
            break;
        case OPT_SHAPE:
            if (ncustom == 32) return cli_error("bench: at most 32 --shape cases");
            if (parse_shape(v, &custom[ncustom])) return 1;
            custom[ncustom].id = 100 + ncustom;
            ncustom++;
            break;
        case OPT_DTYPE:
            if (!strcmp(v, "f32")) opts.dtype = CLATTN_DTYPE_F32;
            else if (!strcmp(v, "f16")) opts.dtype = CLATTN_DTYPE_F16;
            else if (!strcmp(v, "bf16")) opts.dtype = CLATTN_DTYPE_BF16;
            else return cli_error("bench: --dtype must be f32, f16 or bf16 (got '%s')", v);
            break;
        case OPT_SPLITS:
            if (!cli_parse_long(v, 1, 1024, &n)) return cli_error("bench: --splits wants 1..1024 (got '%s')", v);
            opts.num_splits = (int)n;
            break;
        case OPT_PASS:
            if (!strcmp(v, "forward")) passes[0] = true, passes[1] = false;
            else if (!strcmp(v, "backward")) passes[0] = false, passes[1] = true;
            else if (!strcmp(v, "both")) passes[0] = passes[1] = true;
            else return cli_error("bench: --pass must be forward, backward or both (got '%s')", v);
            break;
        case OPT_BUDGET:
            if (!cli_parse_double(v, &opts.budget_ms) || opts.budget_ms <= 0)
                return cli_error("bench: --budget-ms wants a positive number (got '%s')", v);
            break;
        default: return 1; /* reported */
        }
    }
    opts.inject_error = getenv("CLATTN_TEST_INJECT_ERROR") != NULL; /* test-only hook */
    /* Check the output paths before hours of measuring: each must be creatable. */
    const char *outs[3] = {json, csv, svg};
    for (int i = 0; i < 3; i++) {
        if (!outs[i]) continue;
        char probe[4096];
        snprintf(probe, sizeof probe, "%s.probe.tmp", outs[i]);
        FILE *f = fopen(probe, "w");
        if (!f) return cli_error("bench: cannot write %s", outs[i]);
        fclose(f);
        remove(probe);
    }

    /* cases: --shape ones, else the suite (or --quick / --cases subsets) */
    bench_case list[64];
    int ncases = 0;
    for (int i = 0; i < ncustom; i++) {
        list[ncases] = custom[i];
        list[ncases++].causal = causal;
    }
    if (!ncustom)
        for (int i = 0; i < bench_suite_size; i++) {
            const bench_case *c = &bench_suite[i];
            if (quick && !c->quick) continue;
            if (have_cases && !pick[i]) continue;
            list[ncases++] = *c;
        }
    if (!ncases) return cli_error("bench: no case selected (see --cases and the suite in README.md)");

    cl_device_id devs[CLI_MAX_DEVICES];
    int first, last;
    if (cli_select_devices("bench", device, devs, &first, &last)) return 1;
    peer_figures before = {0}, after = {0};
    if (rep.have_peers) {
        fprintf(stderr, "clattn bench: measuring the peers (OpenBLAS SGEMM, OpenBLAS unfused attention, stream)...\n");
        if (peers_measure(5, &before)) return 1;
    }
    const int nalgo = algos[0] + algos[1] + algos[2], npass = passes[0] + passes[1];
    rep.rows = calloc((size_t)(last - first + 1) * (size_t)ncases * 6, sizeof(bench_row));
    if (!rep.rows) return cli_error("bench: out of memory");
    int done = 0, total = (last - first + 1) * ncases * nalgo * npass, failures = 0, ran = 0;
    for (int di = first; di <= last; di++) {
        char sel[16];
        snprintf(sel, sizeof sel, "%d", di);
        clattn_context *ctx;
        if (cli_open_context(sel, &ctx)) return 1;
        bench_device *bd = &rep.devices[rep.ndevices++];
        bd->index = di;
        clGetDeviceInfo(devs[di], CL_DEVICE_NAME, sizeof bd->name - 1, bd->name, NULL);
        clGetDeviceInfo(devs[di], CL_DEVICE_VENDOR, sizeof bd->vendor - 1, bd->vendor, NULL);
        clGetDeviceInfo(devs[di], CL_DRIVER_VERSION, sizeof bd->driver - 1, bd->driver, NULL);
        clGetDeviceInfo(devs[di], CL_DEVICE_VERSION, sizeof bd->version - 1, bd->version, NULL);
        cl_device_type type = 0;
        clGetDeviceInfo(devs[di], CL_DEVICE_TYPE, sizeof type, &type, NULL);
        bd->cpu = (type & CL_DEVICE_TYPE_CPU) != 0;
        fprintf(stderr, "clattn bench: %s: measuring peaks...\n", bd->name);
        if (peak_measure(ctx, remeasure, &bd->peak)) {
            clattn_context_destroy(ctx);
            return 1;
        }
        fprintf(stderr, "clattn bench: %s: %.1f GFLOP/s FMA, %.1f GB/s read%s\n", bd->name, bd->peak.fma_gflops,
                bd->peak.read_gbs, bd->peak.cached ? " (cached; --remeasure-peaks to redo)" : "");
        fprintf(stderr, "clattn bench: %s: measuring the dispatch overhead...\n", bd->name);
        if (dispatch_measure(ctx, &bd->dispatch)) {
            clattn_context_destroy(ctx);
            return 1;
        }
        const int first_row = rep.nrows;
        for (int c = 0; c < ncases; c++)
            for (int pa = 0; pa < 2; pa++)
            for (int a = 0; a < 3; a++) {
                if (!algos[a] || !passes[pa]) continue;
                char shape[64];
                bench_case_name(&list[c], shape, sizeof shape);
                fprintf(stderr, "clattn bench: [%d/%d] case %d %s %s %s on %s\n", ++done, total, list[c].id, shape,
                        bench_algo_name((bench_algo)a), bench_pass_name((bench_pass)pa), bd->name);
                bench_row *row = &rep.rows[rep.nrows++];
                opts.pass = (bench_pass)pa;
                bench_run(ctx, &bd->peak, &list[c], (bench_algo)a, &opts, row);
                row->device_index = di;
                snprintf(row->device, sizeof row->device, "%s", a == ALGO_REFERENCE ? "CPU reference" : bd->name);
                snprintf(row->driver, sizeof row->driver, "%s", a == ALGO_REFERENCE ? "" : bd->driver);
                failures += !strcmp(row->status, "error") || !strcmp(row->status, "wrong");
                ran += !strcmp(row->status, "ok");
            }
        if (!keep_peaks) raise_peaks(ctx, bd, rep.rows + first_row, rep.nrows - first_row);
        clattn_context_destroy(ctx);
    }
    if (rep.have_peers) { /* again after the rows: the mean of both, so drift shows in neither alone */
        fprintf(stderr, "clattn bench: measuring the peers again...\n");
        if (peers_measure(5, &after)) return 1;
        rep.peers.sgemm_gflops = 0.5 * (before.sgemm_gflops + after.sgemm_gflops);
        rep.peers.attn_gflops = 0.5 * (before.attn_gflops + after.attn_gflops);
        rep.peers.attn_causal_gflops = 0.5 * (before.attn_causal_gflops + after.attn_causal_gflops);
        rep.peers.stream_gbs = 0.5 * (before.stream_gbs + after.stream_gbs);
        printf("peers (same process, before / after the rows):\n"
               "  OpenBLAS SGEMM 2048:                     %7.1f / %7.1f GFLOP/s\n"
               "  OpenBLAS unfused attention 1x8x2048x64:  %7.1f / %7.1f GFLOP/s\n"
               "  the same, causal (full GEMMs, masked; credited half the FLOPs):\n"
               "                                           %7.1f / %7.1f GFLOP/s\n"
               "  streaming read (OpenBLAS's threads):      %7.1f / %7.1f GB/s\n\n",
               before.sgemm_gflops, after.sgemm_gflops, before.attn_gflops, after.attn_gflops,
               before.attn_causal_gflops, after.attn_causal_gflops, before.stream_gbs, after.stream_gbs);
        /* PyTorch's CPU SDPA on the forward cases, at OpenBLAS's thread count (as the other peers) */
        const int nt = openblas_get_num_threads();
        fprintf(stderr, "clattn bench: PyTorch SDPA on the CPU (if torch imports)...\n");
        peers_torch(list, ncases, nt < 1 ? 1 : nt, &rep.torch);
        if (rep.torch.present)
            printf("  PyTorch %s scaled_dot_product_attention, CPU, %d thread(s): the xtorch column below\n\n",
                   rep.torch.version, rep.torch.threads);
        else
            printf("  PyTorch SDPA: absent (%s)\n\n", rep.torch.note);
    }
    printf("devices:\n");
    for (int i = 0; i < rep.ndevices; i++) report_device(stdout, &rep.devices[i]);
    printf("\n");
    report_table(stdout, &rep);
    bool any_unfused = false;
    for (int i = 0; i < rep.nrows; i++) any_unfused = any_unfused || !isnan(report_ratio_unfused(&rep, &rep.rows[i]));
    if (rep.have_peers || any_unfused) {
        printf("\nratios (x SGEMM rate; x OpenBLAS unfused attention, same shape; x streaming read; x clattn's "
               "unfused CLBlast path, same case; x PyTorch's CPU SDPA, same case, f32, its ms over ours):\n");
        printf("%-4s %-22s %-4s %-24.24s %-11s %10s %10s %10s %10s %10s\n", "id", "BxHqxHkvxNqxNkxD", "type", "device",
               "algo", "xSGEMM", "xBLASattn", "xstream", "xunfused", "xtorch");
        for (int i = 0; i < rep.nrows; i++) {
            const bench_row *w = &rep.rows[i];
            if (strcmp(w->status, "ok") || w->algo == ALGO_REFERENCE) continue;
            char shape[64], a[16] = "-", b[16] = "-", c[16] = "-", u[16] = "-", t[16] = "-";
            bench_case_name(&w->c, shape, sizeof shape);
            double x;
            if (!isnan(x = report_ratio_sgemm(&rep, w))) snprintf(a, sizeof a, "%.3f", x);
            if (!isnan(x = report_ratio_blas_attention(&rep, w))) snprintf(b, sizeof b, "%.3f", x);
            if (!isnan(x = report_ratio_stream(&rep, w))) snprintf(c, sizeof c, "%.3f", x);
            if (!isnan(x = report_ratio_unfused(&rep, w))) snprintf(u, sizeof u, "%.2f", x);
            if (!isnan(x = report_ratio_torch(&rep, w))) snprintf(t, sizeof t, "%.2f", x);
            char label[24];
            printf("%-4d %-22s %-4s %-24.24s %-11s %10s %10s %10s %10s %10s\n", w->c.id, shape,
                   w->dtype == CLATTN_DTYPE_F32 ? "f32" : w->dtype == CLATTN_DTYPE_F16 ? "f16" : "bf16", w->device,
                   report_algo_label(w, label, sizeof label), a, b, c, u, t);
        }
    }
    print_generic(&rep);
    print_paged(&rep);
    int rc = 0;
    if (json && report_json(json, &rep)) rc = 1;
    if (csv && report_csv(csv, &rep)) rc = 1;
    if (svg && report_svg(svg, &rep)) rc = 1;
    if (compare && report_compare(stdout, compare, &rep)) rc = 1;
    free(rep.rows);
    if (failures) return cli_error("bench: %d row(s) failed or gave wrong results", failures);
    /* A run that measured nothing is no result, even when every row was refused for a reason. */
    if (!ran) return cli_error("bench: no row ran: every case was unsupported or skipped");
    return rc;
}
