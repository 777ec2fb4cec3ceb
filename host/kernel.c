/* Kernels: compile options per file, creation with checks, arguments. */
#include "kernel.h"
#include "diag.h"
#include "fault.h"
#include "program.h"

#include <string.h>

clattn_switches clattn__switches(const clattn_shape *s)
{
    clattn_switches w = {(int)s->dtype, s->softcap > 0, s->has_alibi, s->has_mask, s->has_sinks, s->has_seqused_k,
                         s->varlen, s->paged};
    return w;
}

/* Which switches each kernel file reads (its header comment lists them too). A file gets
 * only these: a switch it ignores would only split its program cache into copies. The
 * suite checks this table against the sources (tests/test_api.c, kernel_switches). */
static const struct {
    const char *file;
    unsigned reads;
} file_switches[] = {
    {"fwd_rows", CLATTN_SW_DTYPE | CLATTN_SW_SOFTCAP | CLATTN_SW_ALIBI | CLATTN_SW_MASK | CLATTN_SW_SINKS |
                     CLATTN_SW_SEQUSED | CLATTN_SW_VARLEN | CLATTN_SW_PAGED},
    {"fwd_tiles", CLATTN_SW_DTYPE | CLATTN_SW_SOFTCAP | CLATTN_SW_ALIBI | CLATTN_SW_MASK | CLATTN_SW_SINKS |
                      CLATTN_SW_SEQUSED | CLATTN_SW_VARLEN | CLATTN_SW_PAGED},
    {"fwd_decode", CLATTN_SW_DTYPE | CLATTN_SW_SOFTCAP | CLATTN_SW_ALIBI | CLATTN_SW_MASK | CLATTN_SW_SINKS |
                       CLATTN_SW_SEQUSED | CLATTN_SW_VARLEN | CLATTN_SW_PAGED},
    {"fwd_rtile", CLATTN_SW_DTYPE | CLATTN_SW_SOFTCAP | CLATTN_SW_ALIBI | CLATTN_SW_MASK | CLATTN_SW_SINKS |
                      CLATTN_SW_SEQUSED | CLATTN_SW_VARLEN | CLATTN_SW_PAGED},
    {"fwd_mma", CLATTN_SW_DTYPE | CLATTN_SW_SOFTCAP | CLATTN_SW_ALIBI | CLATTN_SW_MASK | CLATTN_SW_SINKS |
                    CLATTN_SW_SEQUSED | CLATTN_SW_VARLEN | CLATTN_SW_PAGED},
    {"paged", CLATTN_SW_DTYPE},
    {"combine", CLATTN_SW_DTYPE | CLATTN_SW_SINKS | CLATTN_SW_VARLEN},
    {"convert", CLATTN_SW_DTYPE | CLATTN_SW_VARLEN},
    {"softmax", CLATTN_SW_SEQUSED | CLATTN_SW_VARLEN | CLATTN_SW_PAGED},
    {"bwd_prep", CLATTN_SW_DTYPE | CLATTN_SW_VARLEN},
    {"bwd_rows", CLATTN_SW_DTYPE | CLATTN_SW_SOFTCAP | CLATTN_SW_ALIBI | CLATTN_SW_MASK | CLATTN_SW_SEQUSED |
                     CLATTN_SW_VARLEN},
    {"bwd_softmax", CLATTN_SW_SEQUSED | CLATTN_SW_VARLEN},
    {"bwd_tiles", CLATTN_SW_DTYPE | CLATTN_SW_SOFTCAP | CLATTN_SW_ALIBI | CLATTN_SW_MASK | CLATTN_SW_SEQUSED |
                      CLATTN_SW_VARLEN},
};

unsigned clattn__file_switches(const char *file)
{
    for (size_t i = 0; i < sizeof file_switches / sizeof file_switches[0]; i++)
        if (!strcmp(file_switches[i].file, file)) return file_switches[i].reads;
    return 0;
}

const char *clattn__switch_name(unsigned bit)
{
    switch (bit) {
    case CLATTN_SW_DTYPE: return "DTYPE";
    case CLATTN_SW_SOFTCAP: return "SOFTCAP";
    case CLATTN_SW_ALIBI: return "ALIBI";
    case CLATTN_SW_MASK: return "MASK";
    case CLATTN_SW_SINKS: return "SINKS";
    case CLATTN_SW_SEQUSED: return "SEQUSED";
    case CLATTN_SW_VARLEN: return "VARLEN";
    case CLATTN_SW_PAGED: return "PAGED";
    default: return "";
    }
}

void clattn__kernel_options(clattn_kernel_spec *spec, const char *params, const clattn_switches *sw)
{
    const unsigned reads = clattn__file_switches(spec->file);
    const int value[] = {sw->dtype, sw->softcap, sw->alibi, sw->mask, sw->sinks, sw->seqused, sw->varlen, sw->paged};
    size_t n = 0;
    char *o = spec->options;
    const size_t cap = sizeof spec->options;
    clattn__format(o, cap, "%s%s%s", CLATTN_CL_STD, params[0] ? " " : "", params);
    for (unsigned i = 0; i < sizeof value / sizeof value[0]; i++) {
        n = strlen(o);
        if (reads & (1u << i)) clattn__format(o + n, cap - n, " -D %s=%d", clattn__switch_name(1u << i), value[i]);
    }
}

clattn_status clattn__make_kernel(clattn_context *ctx, const clattn_kernel_spec *spec, cl_kernel *out)
{
    *out = NULL;
    cl_program prog;
    clattn_status st = clattn__get_program(ctx, spec->file, spec->options, spec->name, &prog);
    if (st) return st;
    cl_int e;
    cl_kernel k = clattn__create_kernel(ctx, prog, spec->function, &e);
    if (e) return clattn__fail(ctx, e, "clCreateKernel(%s) failed (%d)", spec->function, e);
    size_t wg = 0;
    cl_ulong priv = 0, local_mem = 0;
    cl_uint nargs = 0;
    e = clGetKernelWorkGroupInfo(k, ctx->device, CL_KERNEL_WORK_GROUP_SIZE, sizeof wg, &wg, NULL);
    if (!e) e = clGetKernelWorkGroupInfo(k, ctx->device, CL_KERNEL_PRIVATE_MEM_SIZE, sizeof priv, &priv, NULL);
    if (!e) e = clGetKernelWorkGroupInfo(k, ctx->device, CL_KERNEL_LOCAL_MEM_SIZE, sizeof local_mem, &local_mem, NULL);
    if (!e) e = clGetKernelInfo(k, CL_KERNEL_NUM_ARGS, sizeof nargs, &nargs, NULL);
    if (e) st = clattn__fail(ctx, e, "querying kernel %s failed (%d)", spec->function, e);
    else if (nargs != spec->num_args)
        /* a positional mismatch would otherwise run and compute garbage */
        st = clattn__fail(ctx, CLATTN_INTERNAL_ERROR, "kernel %s takes %u arguments but its setter sets %u",
                          spec->function, nargs, spec->num_args);
    else if (spec->local_size > wg)
        st = clattn__fail(ctx, CLATTN_UNSUPPORTED, "variant %s needs %zu work-items, the kernel allows %zu",
                          spec->name, spec->local_size, wg);
    else if (local_mem > ctx->info.local_mem)
        st = clattn__fail(ctx, CLATTN_UNSUPPORTED, "variant %s needs %llu bytes of local memory, device has %llu",
                          spec->name, (unsigned long long)local_mem, (unsigned long long)ctx->info.local_mem);
    if (st) {
        clattn__release_kernel(ctx, k);
        return st;
    }
    clattn__logf(ctx, "clattn: kernel %s (%s), private memory %llu bytes", spec->function, spec->name,
                 (unsigned long long)priv);
    *out = k;
    return CLATTN_SUCCESS;
}

void clattn__arg(clattn_args *a, size_t size, const void *value)
{
    if (a->kernel && !a->err) a->err = clSetKernelArg(a->kernel, a->n, size, value);
    a->n++;
}
