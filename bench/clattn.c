/* The clattn program: cross-vendor benchmarking and correctness comparison. */
#include "cli.h"

#include <stdarg.h>
#include <stdio.h>
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
    clattn_context_options opt = {0};
    opt.device = selector;
    clattn_status st = clattn_context_create(&opt, ctx);
    if (st == CLATTN_NO_DEVICE && selector)
        return cli_error("no OpenCL device matches '%s' (see `clattn devices`)", selector);
    if (st) return cli_error("cannot open an OpenCL device: %s (%d)", clattn_status_string(st), st);
    return 0;
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
            "  check [--device ID|all] [--quick]\n"
            "                   correctness sweep against the CPU reference\n"
            "  bench [--device ID|all] [--cases LIST] [--quick] [--shape BxHqxHkvxNqxNkxD ...]\n"
            "        [--causal] [--dtype T] [--algo LIST] [--budget-ms MS] [--splits N]\n"
            "        [--json F] [--csv F] [--svg F] [--compare BASE.json] [--remeasure-peaks]\n"
            "  tune [--device ID|all] [--classes LIST] [--quick] [--budget-ms MS] [--emit-c]\n"
            "                   search the fused kernels' parameters, store the best per class\n"
            "  run --q Q.npy --k K.npy --v V.npy --out O.npy [--lse L.npy]\n"
            "      [--layout bhsd|bshd] [--causal] [--causal-align bottom-right|top-left]\n"
            "      [--scale S] [--window L,R] [--softcap C] [--mask M.npy] [--alibi S.npy]\n"
            "      [--sinks S.npy] [--seqused-k L.npy] [--seqlens-q LQ.npy --seqlens-k LK.npy]\n"
            "      [--splits N] [--dtype f32|f16|bf16]\n"
            "      [--algo auto|fused|unfused|reference] [--device ID] [-v]\n"
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
    if (!strcmp(cmd, "run")) return cmd_run(argc - 2, argv + 2);
    if (!strcmp(cmd, "devices")) return cmd_devices(argc - 2, argv + 2);
    if (!strcmp(cmd, "bench")) return cmd_bench(argc - 2, argv + 2);
    if (!strcmp(cmd, "check")) return cmd_check(argc - 2, argv + 2);
    if (!strcmp(cmd, "tune")) return cmd_tune(argc - 2, argv + 2);
    return cli_error("unknown command '%s' (try `clattn --help`)", cmd);
}
