/* `clattn tune`: searches the fused kernel's parameters (rows or work-group size, key block,
 * vector width, work-group shape, key-split target) per device and shape class; with
 * --families, the same search for each named family, the fastest stored as the class's family
 * for auto (clattn_tuning_store_preferred). Every
 * candidate's output is checked against the CPU reference before it is timed (a wrong or
 * failing candidate is reported and dropped); the winner is re-verified on awkward shapes of
 * its class, then stored in the user's tuning file, which plans use from then on (`auto`).
 * --emit-c prints the winners as lines for the shipped table (host/tuning_db.c). */
#include "cli.h"
#include "suite.h"
#include "verify.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct tune_class {
    const char *name;   /* as clattn_tuning_class */
    bench_case cpu, gpu; /* the representative shape: smaller prefill on CPU devices; decode
                            streams K/V larger than any cache (268 MB at d=128) */
    bench_case odd[2];  /* awkward shapes of the same class for the re-verification */
} tune_class;

static const tune_class classes[] = {
    {"prefill-d64", {101, 1, 8, 8, 1024, 1024, 64, 0, false}, {101, 1, 8, 8, 4096, 4096, 64, 0, false},
     {{0, 2, 6, 2, 77, 93, 64, 1, false}, {0, 1, 3, 3, 130, 61, 40, 0, false}}},
    {"prefill-d128", {102, 1, 8, 8, 1024, 1024, 128, 0, false}, {102, 1, 8, 8, 4096, 4096, 128, 0, false},
     {{0, 2, 8, 2, 45, 70, 128, 1, false}, {0, 1, 2, 1, 129, 129, 96, 0, false}}},
    {"decode-d64", {103, 1, 32, 8, 1, 32768, 64, 1, false}, {103, 1, 32, 8, 1, 32768, 64, 1, false},
     {{0, 3, 8, 2, 1, 1000, 64, 1, false}, {0, 2, 4, 1, 3, 777, 48, 1, false}}},
    {"decode-d128", {104, 1, 32, 8, 1, 32768, 128, 1, false}, {104, 1, 32, 8, 1, 32768, 128, 1, false},
     {{0, 3, 8, 2, 1, 1000, 128, 1, false}, {0, 2, 4, 1, 5, 613, 96, 1, false}}},
};
#define NCLASSES ((int)(sizeof classes / sizeof classes[0]))

/* The search space per family; --quick keeps a corner of it. Every field is set, so no
 * candidate inherits a value from an earlier tuning of the same class. */
static int candidates(clattn_kernel_family fam, bool quick, bool decode, clattn_tuning *out, int max)
{
    int n = 0;
    if (fam == CLATTN_KERNELS_ROWS) {
        /* Decode: a work-item streams its KV head's keys once for the rows it holds, so fewer
         * rows than the class's 4 query heads per KV head would read K and V twice. On this
         * machine's noisy memory a 3-round median once preferred 2 rows anyway (23.7 against
         * 26.5 ms, where the 4-row candidate had run in 14.7 ms in the sweep). */
        const int rows[] = {2, 4, 8}, keys[] = {8, 16, 32}, vw[] = {8, 16};
        for (int a = 0; a < 3; a++)
            for (int b = 0; b < 3; b++)
                for (int c = 0; c < 2; c++) {
                    if (decode && rows[a] < 4) continue;
                    if (quick && (rows[a] == 2 || keys[b] != 16 || vw[c] != 16)) continue;
                    if (n < max) out[n++] = (clattn_tuning){sizeof(clattn_tuning), rows[a], keys[b], vw[c], 8, 8, 1};
                }
    } else if (fam == CLATTN_KERNELS_MMA || fam == CLATTN_KERNELS_RTILE) {
        /* rows per work-group x keys per tile; mma: 16 rows a warp, rtile: 4 x 4 a work-item */
        const int rows[] = {32, 64, 128}, keys[] = {32, 64};
        for (int a = 0; a < 3; a++)
            for (int b = 0; b < 2; b++) {
                if (quick && (rows[a] != 64 || keys[b] != 64)) continue;
                const int group = fam == CLATTN_KERNELS_MMA ? rows[a] * 2 : rows[a] / 4 * keys[b] / 4;
                if (n < max) out[n++] = (clattn_tuning){sizeof(clattn_tuning), rows[a], keys[b], fam == CLATTN_KERNELS_MMA ? 1 : 4,
                                                        group, 8, 1};
            }
    } else if (fam == CLATTN_KERNELS_DECODE) {
        /* work-items per group (its rows x keys per tile) and the key-split target */
        const int group[] = {64, 128, 256}, split[] = {2, 4, 8};
        for (int a = 0; a < 3; a++)
            for (int b = 0; b < 3; b++) {
                if (quick && (group[a] != 128 || split[b] == 8)) continue;
                if (n < max) out[n++] = (clattn_tuning){sizeof(clattn_tuning), 16, 64, 4, group[a], split[b], 1};
            }
    } else {
        const int rows[] = {4, 16, 64, 128}, keys[] = {16, 32}, tpr[] = {1, 2, 4};
        for (int a = 0; a < 4; a++)
            for (int b = 0; b < 2; b++)
                for (int c = 0; c < 3; c++) {
                    if (quick && (rows[a] != 64 || tpr[c] == 4)) continue;
                    if (n < max) out[n++] = (clattn_tuning){sizeof(clattn_tuning), rows[a], keys[b], 4, rows[a] * tpr[c], 8, tpr[c]};
                }
    }
    return n;
}

static void print_tuning(const clattn_tuning *t)
{
    printf("rows=%-3d keys=%-2d vw=%-2d group=%-3d split=%-2d tpr=%d", t->rows, t->keys, t->vector_width,
           t->group_size, t->split_units, t->threads_per_row);
}

/* One candidate: checked, then timed (bench_run); returns its median ms, or -1. */
static double try_one(clattn_context *ctx, const bench_case *c, clattn_dtype dtype, const clattn_tuning *t,
                      double budget_ms, char *variant, size_t variant_size)
{
    bench_opts o = {0};
    o.budget_ms = budget_ms;
    o.dtype = dtype;
    o.tuning = t;
    bench_row row;
    bench_run(ctx, NULL, c, ALGO_FUSED, &o, &row);
    snprintf(variant, variant_size, "%s", row.variant);
    printf("  ");
    print_tuning(t);
    if (strcmp(row.status, "ok")) {
        printf("  %-8s %s\n", row.status, row.reason);
        return -1;
    }
    printf("  %9.3f ms %9.1f GFLOP/s %8.1f GB/s  (%s)\n", row.ms_median, row.gflops, row.gbs, row.variant);
    fflush(stdout);
    return row.ms_median;
}

static bool reverify(clattn_context *ctx, const tune_class *k, const clattn_tuning *t)
{
    int held = 0;
    for (int i = 0; i < 2; i++) {
        const bench_case *c = &k->odd[i];
        for (int dt = 0; dt < 2; dt++) {
            const clattn_desc d = bench_desc(c, dt ? CLATTN_DTYPE_BF16 : CLATTN_DTYPE_F32, ALGO_FUSED);
            clattn_plan *probe = NULL;
            if (clattn_plan_create_tuned(ctx, &d, t, &probe) == CLATTN_UNSUPPORTED) continue; /* not this family's */
            clattn_plan_destroy(probe);
            verify_opts o = {0};
            o.seed = 0x7e57ull * 16 + (uint64_t)(i * 2 + dt);
            o.tuning = t;
            verify_result r;
            const bool ok = !verify_run(ctx, &d, &o, &r) && verify_ok(&r);
            printf("  re-verify %dx%dx%dx%dx%dx%d%s %s: %s", c->b, c->hq, c->hkv, c->nq, c->nk, c->d,
                   c->causal ? "c" : "", dt ? "bf16" : "f32", ok ? "pass" : "FAIL");
            if (r.error[0]) printf(" (%s)", r.error);
            else printf(" (rel L2 %.2e)", r.o.rel_l2);
            printf("\n");
            if (!ok) return false;
            held++;
        }
    }
    return held > 0;
}

static const char *family_names[] = {"auto", "rows", "tiles", "mma", "decode", "rtile"};
#define NFAMILY_NAMES ((int)(sizeof family_names / sizeof family_names[0]))

/* One class on one context (its family): candidates timed, the finalists timed again in
 * rounds, the key-split target around the winner, then the winner re-verified on awkward
 * shapes (else the next best that holds). True with *win and *win_ms when one held. */
static bool search_class(clattn_context *ctx, clattn_kernel_family fam, const tune_class *tc, const bench_case *c,
                         clattn_dtype dtype, bool quick, double budget_ms, clattn_tuning *win_out, double *win_ms_out)
{
    clattn_tuning cand[64];
    const int n = candidates(fam, quick, bench_is_decode(c), cand, 64);
    double ranked[64][2]; /* (ms, candidate index), sorted by time */
    char variants[64][256];
    int nok = 0;
    for (int i = 0; i < n; i++) {
        const double ms = try_one(ctx, c, dtype, &cand[i], budget_ms, variants[i], sizeof variants[i]);
        if (ms < 0) continue;
        ranked[nok][0] = ms;
        ranked[nok][1] = i;
        nok++;
    }
    if (!nok) {
        printf("  no candidate passed\n");
        return false;
    }
    qsort(ranked, (size_t)nok, sizeof ranked[0], cli_cmp_double); /* by the first of each pair */
    /* One pass is noisy where the machine is (two threads here move by up to 1.5x): the
     * finalists are timed again in interleaved rounds, and the median decides. */
    const int nfin = nok < 3 ? nok : 3, rounds = quick ? 1 : 3;
    double fin[3][8];
    for (int rd = 0; rd < rounds; rd++)
        for (int f = 0; f < nfin; f++) {
            char v[256];
            printf("  final %d/%d", rd + 1, rounds);
            fin[f][rd] = try_one(ctx, c, dtype, &cand[(int)ranked[f][1]], budget_ms, v, sizeof v);
            if (fin[f][rd] < 0) fin[f][rd] = 1e30;
        }
    int best = 0;
    double best_med = 1e30;
    for (int f = 0; f < nfin; f++) {
        const double med = cli_median(fin[f], rounds);
        if (med < best_med) best_med = med, best = f;
    }
    clattn_tuning win = cand[(int)ranked[best][1]];
    double win_ms = best_med;
    const char *win_variant = variants[(int)ranked[best][1]];
    /* The key-split target, around the winner (decode, and prefill where rows are few):
     * only targets that change the split count are timed, and only a clear gain counts. */
    const int splits[] = {2, 4, 16, 32};
    char seen[5][256];
    int nseen = 0;
    snprintf(seen[nseen++], sizeof seen[0], "%s", win_variant);
    for (int sidx = 0; sidx < (quick ? 0 : 4); sidx++) {
        clattn_tuning t = win;
        t.split_units = splits[sidx];
        const clattn_desc probe = bench_desc(c, dtype, ALGO_FUSED);
        clattn_plan *pp;
        if (clattn_plan_create_tuned(ctx, &probe, &t, &pp)) continue;
        char v[256];
        snprintf(v, sizeof v, "%s", clattn_plan_variant(pp));
        clattn_plan_destroy(pp);
        bool dup = false;
        for (int q = 0; q < nseen; q++) dup = dup || !strcmp(seen[q], v);
        if (dup) continue; /* the same split count: nothing to measure */
        snprintf(seen[nseen++], sizeof seen[0], "%s", v);
        const double ms = try_one(ctx, c, dtype, &t, budget_ms, v, sizeof v);
        if (ms > 0 && ms < win_ms * 0.9) win = t, win_ms = ms;
    }
    /* The winner must hold on awkward shapes of its class; else the next best that does. */
    const int first_pick = (int)ranked[best][1];
    bool verified = reverify(ctx, tc, &win);
    for (int rank = 0; !verified && rank < nok; rank++) {
        if ((int)ranked[rank][1] == first_pick) continue;
        win = cand[(int)ranked[rank][1]];
        win_ms = ranked[rank][0];
        verified = reverify(ctx, tc, &win);
    }
    if (!verified) {
        printf("  no candidate passed the re-verification\n");
        return false;
    }
    *win_out = win;
    *win_ms_out = win_ms;
    return true;
}

/* The family the context's fused plans run for the class: under auto a class whose preferred
 * family the tuning file names (tune --families) runs that one, not the context's default, so
 * its parameters are that family's to search and store. */
static clattn_kernel_family class_family(clattn_context *ctx, const bench_case *c, clattn_dtype dtype,
                                         clattn_kernel_family own)
{
    const clattn_desc d = bench_desc(c, dtype, ALGO_FUSED);
    clattn_plan *p;
    if (clattn_plan_create(ctx, &d, &p)) return own; /* the search reports why no plan is made */
    const clattn_kernel_family f = clattn_plan_kernel_family(p);
    clattn_plan_destroy(p);
    return f == CLATTN_KERNELS_AUTO ? own : f;
}

/* Every wanted class on the device: the parameters of the family its plans run (the context's,
 * or the class's preferred one under auto), or with `families` the fastest family's, stored as
 * the class's preferred family for auto. */
static int tune_device(const char *sel, const clattn_kernel_family *families, int nfamilies, clattn_dtype dtype,
                       const bool *want, bool quick, double budget_ms, bool emit_c, char *emit, size_t emit_size)
{
    clattn_context *ctx;
    if (cli_open_context(sel, &ctx)) return NCLASSES;
    char name[256] = "";
    cl_device_type type = 0;
    clGetDeviceInfo(clattn_context_device(ctx), CL_DEVICE_NAME, sizeof name - 1, name, NULL);
    clGetDeviceInfo(clattn_context_device(ctx), CL_DEVICE_TYPE, sizeof type, &type, NULL);
    const clattn_kernel_family own = clattn_context_kernel_family(ctx);
    const bool cpu = (type & CL_DEVICE_TYPE_CPU) != 0;
    if (nfamilies) {
        printf("== %s: families", name);
        for (int f = 0; f < nfamilies; f++) printf(" %s", family_names[families[f]]);
        printf(" compared; tuning file %s\n", clattn_tuning_file(ctx)[0] ? clattn_tuning_file(ctx) : "(disk cache off)");
    } else {
        printf("== %s: %s family; tuning file %s\n", name, family_names[own],
               clattn_tuning_file(ctx)[0] ? clattn_tuning_file(ctx) : "(disk cache off: not stored)");
    }
    const char *dtype_label = dtype == CLATTN_DTYPE_F32 ? "f32" : dtype == CLATTN_DTYPE_F16 ? "f16" : "bf16";
    int failures = 0;
    for (int k = 0; k < NCLASSES; k++) {
        if (!want[k]) continue;
        const tune_class *tc = &classes[k];
        const bench_case *c = cpu ? &tc->cpu : &tc->gpu;
        char cname[64];
        bench_case_name(c, cname, sizeof cname);
        printf("-- %s (%s, %s)\n", tc->name, cname, dtype_label);
        clattn_tuning win = {0};
        double win_ms = 0;
        clattn_kernel_family win_fam = own;
        bool found = false;
        if (!nfamilies) {
            win_fam = class_family(ctx, c, dtype, own);
            if (win_fam != own) printf("  %s family: the class's preferred one\n", family_names[win_fam]);
            found = search_class(ctx, win_fam, tc, c, dtype, quick, budget_ms, &win, &win_ms);
        } else {
            for (int f = 0; f < nfamilies; f++) { /* each family on a context of its own */
                clattn_context_options o = CLATTN_CONTEXT_OPTIONS_INIT;
                o.device = sel;
                o.kernel_family = families[f];
                clattn_context *fctx;
                if (clattn_context_create(&o, &fctx)) continue;
                printf(" - %s family\n", family_names[families[f]]);
                clattn_tuning t;
                double ms;
                if (search_class(fctx, families[f], tc, c, dtype, quick, budget_ms, &t, &ms) && (!found || ms < win_ms))
                    win = t, win_ms = ms, win_fam = families[f], found = true;
                clattn_context_destroy(fctx);
            }
        }
        if (!found) {
            printf("  nothing stored\n");
            failures++;
            continue;
        }
        const clattn_desc d = bench_desc(c, dtype, ALGO_FUSED);
        const clattn_status st = nfamilies ? clattn_tuning_store_preferred(ctx, &d, win_fam, &win)
                                           : clattn_tuning_store(ctx, &d, &win);
        printf("  best: %s%s", nfamilies ? family_names[win_fam] : "", nfamilies ? " " : "");
        print_tuning(&win);
        printf("  %.3f ms  -> %s\n", win_ms,
               st ? clattn_context_last_error(ctx) : nfamilies ? "stored, the class's family for auto" : "stored");
        if (st) failures++;
        if (emit_c) {
            char upper[16];
            snprintf(upper, sizeof upper, "%s", family_names[win_fam]);
            for (char *u = upper; *u; u++) *u = (char)(*u - 'a' + 'A');
            const size_t used_len = strlen(emit);
            snprintf(emit + used_len, emit_size - used_len,
                     "    {\"%s\", NULL, 0, %s, \"%s\", {%d, %d, %d, %d, %d, %d}}, /* %s %s %.3f ms */\n", name,
                     upper, tc->name, win.rows, win.keys, win.vector_width, win.group_size, win.split_units,
                     win.threads_per_row, cname, dtype_label, win_ms);
        }
    }
    clattn_context_destroy(ctx);
    return failures;
}

/* --families: names of the table (auto excluded). */
static int parse_families(const char *list, clattn_kernel_family *out, int *n)
{
    const char *item;
    size_t len;
    *n = 0;
    while (cli_list_next(&list, &item, &len)) {
        int f = 1;
        while (f < NFAMILY_NAMES && !cli_list_item_is(item, len, family_names[f])) f++;
        if (f == NFAMILY_NAMES)
            return cli_error("tune: --families: unknown family '%.*s' (rows, tiles, mma, decode, rtile)", (int)len, item);
        if (*n < NFAMILY_NAMES) out[(*n)++] = (clattn_kernel_family)f;
    }
    return *n ? 0 : cli_error("tune: --families needs at least one family");
}

/* --classes: every entry must name a class (an unknown one would otherwise tune nothing or
 * less than asked, silently). */
static int parse_classes(const char *list, bool want[NCLASSES])
{
    for (int k = 0; k < NCLASSES; k++) want[k] = false;
    const char *item;
    size_t len;
    while (cli_list_next(&list, &item, &len)) {
        int k = 0;
        while (k < NCLASSES && !cli_list_item_is(item, len, classes[k].name)) k++;
        if (k == NCLASSES) {
            char valid[256] = "";
            for (int i = 0; i < NCLASSES; i++) {
                const size_t used = strlen(valid);
                snprintf(valid + used, sizeof valid - used, "%s%s", i ? ", " : "", classes[i].name);
            }
            return cli_error("tune: --classes: unknown class '%.*s' (valid: %s)", (int)len, item, valid);
        }
        want[k] = true;
    }
    return 0;
}

int cmd_tune(int argc, char **argv)
{
    enum { OPT_QUICK = 256, OPT_EMIT_C, OPT_DEVICE, OPT_BUDGET, OPT_CLASSES, OPT_FAMILIES, OPT_DTYPE };
    static const struct option opts[] = {{"quick", no_argument, NULL, OPT_QUICK},
                                         {"families", required_argument, NULL, OPT_FAMILIES},
                                         {"dtype", required_argument, NULL, OPT_DTYPE},
                                         {"emit-c", no_argument, NULL, OPT_EMIT_C},
                                         {"device", required_argument, NULL, OPT_DEVICE},
                                         {"budget-ms", required_argument, NULL, OPT_BUDGET},
                                         {"classes", required_argument, NULL, OPT_CLASSES},
                                         {NULL, 0, NULL, 0}};
    const char *device = NULL;
    bool quick = false, emit_c = false, want[NCLASSES];
    double budget_ms = 200;
    clattn_kernel_family families[NFAMILY_NAMES];
    int nfamilies = 0;
    clattn_dtype dtype = CLATTN_DTYPE_F32;
    for (int k = 0; k < NCLASSES; k++) want[k] = true;
    optind = 0;
    for (int c; (c = cli_next_option("tune", argc, argv, "", opts)) != -1;) {
        switch (c) {
        case OPT_QUICK: quick = true; break;
        case OPT_EMIT_C: emit_c = true; break;
        case OPT_DEVICE: device = optarg; break;
        case OPT_BUDGET:
            if (!cli_parse_double(optarg, &budget_ms) || budget_ms <= 0)
                return cli_error("tune: --budget-ms takes a positive number (got '%s')", optarg);
            break;
        case OPT_CLASSES:
            if (parse_classes(optarg, want)) return 1;
            break;
        case OPT_FAMILIES:
            if (parse_families(optarg, families, &nfamilies)) return 1;
            break;
        case OPT_DTYPE:
            if (!strcmp(optarg, "f32")) dtype = CLATTN_DTYPE_F32;
            else if (!strcmp(optarg, "f16")) dtype = CLATTN_DTYPE_F16;
            else if (!strcmp(optarg, "bf16")) dtype = CLATTN_DTYPE_BF16;
            else return cli_error("tune: --dtype takes f32, f16 or bf16, not '%s'", optarg);
            break;
        default: return 1; /* reported */
        }
    }
    cl_device_id devs[CLI_MAX_DEVICES];
    int first, last;
    if (cli_select_devices("tune", device, devs, &first, &last)) return 1;
    static char emit[16384];
    emit[0] = '\0';
    int failures = 0;
    const double t0 = cli_now_ms();
    for (int di = first; di <= last; di++) {
        char sel[16];
        snprintf(sel, sizeof sel, "%d", di);
        failures += tune_device(sel, families, nfamilies, dtype, want, quick, budget_ms, emit_c, emit, sizeof emit);
    }
    if (emit_c) {
        char day[16];
        const time_t now = time(NULL);
        strftime(day, sizeof day, "%Y-%m-%d", gmtime(&now));
        printf("\n/* host/tuning_db.c lines, clattn tune %s */\n%s", day, emit);
    }
    printf("\ntuned in %.1f s\n", (cli_now_ms() - t0) / 1000);
    if (failures) return cli_error("tune: %d class(es) not tuned", failures);
    return 0;
}
