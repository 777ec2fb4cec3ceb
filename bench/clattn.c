/* The clattn program: cross-vendor benchmarking and correctness comparison. */
#include "cli.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int cli_error(const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    for (char *p = buf; *p; p++)
        if (*p == '\n') *p = ' '; /* one line, always */
    fprintf(stderr, "clattn: %s\n", buf);
    return 1;
}

int cli_open_context(const char *selector, clattn_context **ctx)
{
    clattn_context_options opt = CLATTN_CONTEXT_OPTIONS_INIT;
    opt.device = selector;
    clattn_status st = clattn_context_create(&opt, ctx);
    if (st == CLATTN_NO_DEVICE && selector)
        return cli_error("no OpenCL device matches '%s' (see `clattn devices`)", selector);
    const char *fam = getenv("CLATTN_KERNELS");
    static const char *const families[] = {"auto", "rows", "tiles", "mma", "decode", "rtile"};
    bool known = !fam || !fam[0];
    for (size_t i = 0; i < sizeof families / sizeof families[0] && !known; i++) known = !strcmp(fam, families[i]);
    if (st == CLATTN_INVALID_ARGUMENT && !known)
        return cli_error("CLATTN_KERNELS='%s' names no kernel family (auto, rows, tiles, mma, decode, rtile)", fam);
    if (st) return cli_error("cannot open an OpenCL device: %s (%d)", clattn_status_string(st), st);
    return 0;
}

int cli_tuning_note(clattn_context *ctx, const char *device_name)
{
    /* a prefill and a decode class, the two a first user meets */
    static const int shapes[2][6] = {{1, 8, 8, 512, 512, 64}, {1, 32, 8, 1, 4096, 128}};
    char generic[64] = "";
    int n = 0;
    for (int i = 0; i < 2; i++) {
        clattn_desc d = CLATTN_DESC_INIT;
        d.batch = shapes[i][0]; d.heads_q = shapes[i][1]; d.heads_kv = shapes[i][2]; d.seq_q = shapes[i][3];
        d.seq_kv = shapes[i][4]; d.head_dim = shapes[i][5]; d.causal = 1; d.algo = CLATTN_ALGO_FUSED;
        clattn_plan *plan = NULL;
        if (clattn_plan_create(ctx, &d, &plan)) continue; /* not served: nothing to tune */
        clattn_tuning t = CLATTN_TUNING_INIT;
        if (!strcmp(clattn_plan_tuning(plan, &t), "generic")) {
            const size_t len = strlen(generic);
            snprintf(generic + len, sizeof generic - len, "%s%s", n++ ? ", " : "", clattn_tuning_class(&d));
        }
        clattn_plan_destroy(plan);
    }
    if (n)
        printf("note: %s: the fused kernels run generic parameters (%s): nothing is tuned or shipped for this "
               "device and driver. `clattn tune --quick` (35 s on a 2-core PoCL) or `clattn tune` (the whole "
               "search) measures and stores tuned ones.\n", device_name, generic);
    return n;
}

int cli_select_devices(const char *cmd, const char *device, cl_device_id devs[CLI_MAX_DEVICES], int *first,
                       int *last)
{
    cl_uint n = 0;
    if (clattn_list_devices(devs, CLI_MAX_DEVICES, &n) || !n) return cli_error("%s: no OpenCL device found", cmd);
    const int ndev = n > CLI_MAX_DEVICES ? CLI_MAX_DEVICES : (int)n;
    *first = 0;
    *last = ndev - 1;
    if (device && !strcmp(device, "all")) return 0;
    clattn_context *probe; /* the library's own selection decides which device is meant */
    if (cli_open_context(device, &probe)) return 1;
    const cl_device_id want = clattn_context_device(probe);
    clattn_context_destroy(probe);
    for (int i = 0; i < ndev; i++)
        if (devs[i] == want) *first = *last = i;
    return 0;
}

/* The option an argument spells: "--name" of "--name=value", else the short option `c`. */
static void option_name(const char *arg, int c, char *buf, size_t size)
{
    if (!strncmp(arg, "--", 2)) snprintf(buf, size, "%.*s", (int)strcspn(arg, "="), arg);
    else snprintf(buf, size, "-%c", c);
}

/* Whether `name` ("--x") is a long option that takes no value. */
static bool is_flag(const struct option *longopts, const char *name)
{
    for (const struct option *o = longopts; o->name; o++)
        if (!strcmp(o->name, name + 2)) return o->has_arg == no_argument;
    return false;
}

int cli_next_option(const char *cmd, int argc, char **argv, const char *shortopts, const struct option *longopts)
{
    char spec[64];
    /* '+': stop at the first non-option instead of moving it to the end (it is refused below);
     * ':': a missing value returns ':' rather than '?'. */
    snprintf(spec, sizeof spec, "+:%s", shortopts);
    opterr = 0; /* getopt's own messages name the program, not the command: ours replace them */
    const int at = optind > 0 ? optind : 1; /* the argument this call reads (optind 0: a fresh parse) */
    int index = -1;
    const int c = getopt_long(argc, argv, spec, longopts, &index);
    if (c == -1) {
        if (optind < argc) return cli_error("%s: unexpected argument '%s'", cmd, argv[optind]), '?';
        return -1;
    }
    char name[128];
    option_name(argv[at], optopt, name, sizeof name);
    if (c == ':') return cli_error("%s: %s needs a value", cmd, name), '?';
    if (c == '?') {
        if (strchr(argv[at], '=') && !strncmp(argv[at], "--", 2) && is_flag(longopts, name))
            return cli_error("%s: %s takes no value", cmd, name), '?';
        return cli_error("%s: unknown option '%s'", cmd, name), '?';
    }
    /* getopt_long takes any unambiguous prefix ("--cas" for "--cases"): refused, so that a
     * script's abbreviation cannot change meaning when an option sharing it is added. */
    if (index >= 0 && strcmp(name + 2, longopts[index].name))
        return cli_error("%s: unknown option '%s'", cmd, name), '?';
    return c;
}

bool cli_parse_long(const char *text, long lo, long hi, long *out)
{
    if (!*text || isspace((unsigned char)*text)) return false; /* strtol would skip the space */
    char *end;
    errno = 0;
    const long x = strtol(text, &end, 10);
    if (*end || errno == ERANGE || x < lo || x > hi) return false;
    *out = x;
    return true;
}

bool cli_parse_double(const char *text, double *out)
{
    if (!*text || isspace((unsigned char)*text)) return false;
    char *end;
    errno = 0;
    const double x = strtod(text, &end);
    if (*end || errno == ERANGE || !isfinite(x)) return false;
    *out = x;
    return true;
}

bool cli_list_next(const char **rest, const char **item, size_t *len)
{
    if (!*rest) return false;
    const char *comma = strchr(*rest, ',');
    *item = *rest;
    *len = comma ? (size_t)(comma - *rest) : strlen(*rest);
    *rest = comma ? comma + 1 : NULL;
    return true;
}

bool cli_list_item_is(const char *item, size_t len, const char *name)
{
    return strlen(name) == len && !strncmp(item, name, len);
}

int cli_cmp_double(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double cli_median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cli_cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

double cli_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: clattn <command> [options]\n"
            "  devices          every OpenCL platform and device\n"
            "  check [--device ID|all] [--quick] [--dtype f32|f16|bf16]\n"
            "                   correctness sweep against the CPU reference\n"
            "  bench [--device ID|all] [--cases LIST] [--quick] [--shape BxHqxHkvxNqxNkxD ...]\n"
            "        [--causal] [--dtype f32|f16|bf16] [--algo LIST] [--budget-ms MS] [--splits N] [--peers]\n"
            "        [--json F] [--csv F] [--svg F] [--compare BASE.json] [--remeasure-peaks] [--keep-peaks]\n"
            "                   the numbered suite (or the shapes); fails when a row is wrong or none ran\n"
            "  tune [--device ID|all] [--classes LIST] [--quick] [--budget-ms MS] [--emit-c]\n"
            "       [--families LIST [--dtype f32|f16|bf16]]\n"
            "                   search the fused kernels' parameters, store the best per class; with\n"
            "                   --families, the fastest family too (auto takes it for the class)\n"
            "  report R1.json R2.json ... [--baseline DEVICE] [--md F] [--svg F] [--algo LIST]\n"
            "                   merge bench results of several machines: one table, one chart\n"
            "  run --q Q.npy --k K.npy --v V.npy --out O.npy [--lse L.npy]\n"
            "      [--layout bhsd|bshd] [--causal] [--causal-align bottom-right|top-left]\n"
            "      [--scale S] [--window L,R] [--softcap C] [--mask M.npy] [--alibi S.npy]\n"
            "      [--sinks S.npy] [--seqused-k L.npy] [--seqlens-q LQ.npy --seqlens-k LK.npy]\n"
            "      [--splits N] [--dtype f32|f16|bf16]\n"
            "      [--algo auto|fused|unfused|reference] [--device ID] [-v]\n"
            "      [--expect THEIRS.npy [--expect-lse L.npy] [--tol REL]]\n"
            "      [--do DO.npy --dq DQ.npy --dk DK.npy --dv DV.npy [--dsinks DS.npy]]\n"
            "                   with --do: the backward pass too (d_o shaped like o; dq, dk, dv like q, k, v)\n"
            "                   with --expect (--out optional): compare with another framework's output;\n"
            "                   exit 0 within the bound, 1 outside it, 2 when it cannot compare\n"
            "  ring --q Q.npy --k K.npy --v V.npy --out O.npy [--lse L.npy] [--causal]\n"
            "       [--layout bhsd|bshd] [--dtype f32|f16|bf16] [--scale S] [--softcap C] [--device ID]\n"
            "       [--bench [--repeat N]]\n"
            "                   under mpirun -np P: ring attention, each rank reading and writing its shard\n"
            "clattn %s\n",
            clattn_version_string());
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return cli_error("no command given");
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "-h") || !strcmp(cmd, "--help") || !strcmp(cmd, "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(cmd, "--version")) {
        printf("clattn %s\n", clattn_version_string());
        return 0;
    }
    /* argv[0] of a command is its name, as getopt_long expects */
    if (!strcmp(cmd, "run")) return cmd_run(argc - 1, argv + 1);
    if (!strcmp(cmd, "devices")) return cmd_devices(argc - 1, argv + 1);
    if (!strcmp(cmd, "bench")) return cmd_bench(argc - 1, argv + 1);
    if (!strcmp(cmd, "check")) return cmd_check(argc - 1, argv + 1);
    if (!strcmp(cmd, "tune")) return cmd_tune(argc - 1, argv + 1);
    if (!strcmp(cmd, "report")) return cmd_report(argc - 1, argv + 1);
#ifdef CLATTN_HAVE_MPI
    if (!strcmp(cmd, "ring")) return cmd_ring(argc - 1, argv + 1);
#else
    if (!strcmp(cmd, "ring")) return cli_error("ring: this clattn was built without MPI (install libopenmpi-dev, rebuild)");
#endif
    return cli_error("unknown command '%s' (try `clattn --help`)", cmd);
}
