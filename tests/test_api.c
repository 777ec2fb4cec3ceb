/* The API contract: every invalid descriptor field gives its exact status and a message
 * naming it; bad buffers are refused before anything is launched or written; ownership of
 * the application's OpenCL objects; status strings; version. */
#include "harness.h"
#include "internal.h"

#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

TestSuite(api, .fini = leak_check);

static clattn_desc good(void)
{
    clattn_desc d = {0};
    d.batch = 2; d.heads_q = 4; d.heads_kv = 2; d.seq_q = 5; d.seq_kv = 7; d.head_dim = 32;
    return d;
}

typedef struct bad_case {
    char what[32];      /* substring the message must contain (inline: see test_reference.c) */
    int field;
    int64_t value;
    clattn_status want;
} bad_case;

enum { F_BATCH, F_HQ, F_HKV, F_NQ, F_NK, F_D, F_DV, F_DTYPE, F_LAYOUT, F_ALIGN, F_ALGO, F_SCALE_NAN,
       F_SOFTCAP, F_WL, F_WR, F_QSTRIDE, F_OSTRIDE_OVERLAP, F_HUGE };

static void apply(clattn_desc *d, const bad_case *c)
{
    switch (c->field) {
    case F_BATCH: d->batch = (int)c->value; break;
    case F_HQ: d->heads_q = (int)c->value; break;
    case F_HKV: d->heads_kv = (int)c->value; break;
    case F_NQ: d->seq_q = (int)c->value; break;
    case F_NK: d->seq_kv = (int)c->value; break;
    case F_D: d->head_dim = (int)c->value; break;
    case F_DV: d->head_dim_v = (int)c->value; break;
    case F_DTYPE: d->dtype = (clattn_dtype)c->value; break;
    case F_LAYOUT: d->layout = (clattn_layout)c->value; break;
    case F_ALIGN: d->causal_align = (clattn_causal_align)c->value; break;
    case F_ALGO: d->algo = (clattn_algo)c->value; break;
    case F_SCALE_NAN: d->scale = NAN; break;
    case F_SOFTCAP: d->softcap = (float)c->value; break;
    case F_WL: d->use_window = 1; d->window_left = (int)c->value; break;
    case F_WR: d->use_window = 1; d->window_right = (int)c->value; break;
    case F_QSTRIDE:
        d->layout = CLATTN_LAYOUT_STRIDED;
        d->q_strides = (clattn_strides){-1, 1, 1};
        break;
    case F_OSTRIDE_OVERLAP:
        d->layout = CLATTN_LAYOUT_STRIDED;
        d->q_strides = d->k_strides = d->v_strides = (clattn_strides){4 * 7 * 32, 7 * 32, 32};
        d->o_strides = (clattn_strides){4 * 5 * 32, 5 * 32, 16}; /* rows overlap */
        break;
    case F_HUGE:
        d->batch = INT_MAX; d->heads_q = INT_MAX; d->heads_kv = INT_MAX; d->seq_q = INT_MAX; d->head_dim = 512;
        break;
    }
}

ParameterizedTestParameters(api, invalid_descriptor)
{
    static bad_case cases[] = {
        {"batch", F_BATCH, 0, CLATTN_INVALID_SHAPE},
        {"batch", F_BATCH, -3, CLATTN_INVALID_SHAPE},
        {"heads_q", F_HQ, 0, CLATTN_INVALID_SHAPE},
        {"heads_kv", F_HKV, -1, CLATTN_INVALID_SHAPE},
        {"multiple of heads_kv", F_HKV, 3, CLATTN_INVALID_SHAPE},
        {"seq_q", F_NQ, 0, CLATTN_INVALID_SHAPE},
        {"seq_kv", F_NK, 0, CLATTN_INVALID_SHAPE},
        {"head_dim", F_D, 0, CLATTN_INVALID_SHAPE},
        {"head_dim", F_D, 1025, CLATTN_INVALID_SHAPE},
        {"head_dim_v", F_DV, 2000, CLATTN_INVALID_SHAPE},
        {"dtype", F_DTYPE, 7, CLATTN_INVALID_ARGUMENT},
        {"layout", F_LAYOUT, 9, CLATTN_INVALID_ARGUMENT},
        {"causal_align", F_ALIGN, 5, CLATTN_INVALID_ARGUMENT},
        {"algo", F_ALGO, 42, CLATTN_INVALID_ARGUMENT},
        {"scale", F_SCALE_NAN, 0, CLATTN_INVALID_ARGUMENT},
        {"softcap", F_SOFTCAP, -1, CLATTN_INVALID_ARGUMENT},
        {"window", F_WL, -2, CLATTN_INVALID_ARGUMENT},
        {"window", F_WR, -5, CLATTN_INVALID_ARGUMENT},
        {"q_strides", F_QSTRIDE, 0, CLATTN_INVALID_STRIDES},
        {"overlap", F_OSTRIDE_OVERLAP, 0, CLATTN_INVALID_STRIDES},
        {"overflow", F_HUGE, 0, CLATTN_SIZE_OVERFLOW},
    };
    return cr_make_param_array(bad_case, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(bad_case *c, api, invalid_descriptor)
{
    clattn_desc d = good();
    apply(&d, c);
    char msg[256] = "";
    clattn_status st = clattn_desc_validate(&d, msg, sizeof msg);
    cr_expect_eq(st, c->want, "%s: got %d (%s), want %d: %s", c->what, st, clattn_status_string(st), c->want, msg);
    cr_expect(strstr(msg, c->what) != NULL, "message '%s' does not name '%s'", msg, c->what);
    /* The same refusal through the reference and through plan creation on a device. */
    clattn_host_tensors t = {0};
    cr_expect_eq(clattn_reference_forward(&d, &t, NULL, 0), c->want);
    clattn_context *ctx = test_context();
    clattn_plan *plan = (clattn_plan *)0x1;
    cr_expect_eq(clattn_plan_create(ctx, &d, &plan), c->want);
    cr_expect_null(plan, "plan must be NULL on failure");
    cr_expect(strstr(clattn_context_last_error(ctx), c->what) != NULL, "last error '%s'", clattn_context_last_error(ctx));
    clattn_context_destroy(ctx);
}

Test(api, null_arguments)
{
    cr_expect_eq(clattn_desc_validate(NULL, NULL, 0), CLATTN_INVALID_ARGUMENT);
    cr_expect_eq(clattn_plan_create(NULL, NULL, NULL), CLATTN_INVALID_ARGUMENT);
    cr_expect_eq(clattn_context_create(NULL, NULL), CLATTN_INVALID_ARGUMENT);
    cr_expect_eq(clattn_context_create_from_cl(NULL, NULL, NULL, NULL), CLATTN_INVALID_ARGUMENT);
    cr_expect_eq(clattn_plan_execute(NULL, NULL, NULL, 0, NULL, NULL), CLATTN_INVALID_ARGUMENT);
    clattn_context_destroy(NULL);
    clattn_plan_destroy(NULL);
    clattn_desc d = good();
    clattn_host_tensors t = {0};
    char msg[128];
    cr_expect_eq(clattn_reference_forward(&d, &t, msg, sizeof msg), CLATTN_INVALID_ARGUMENT);
    cr_expect(strstr(msg, "q is NULL"), "%s", msg);
}

Test(api, host_arrays_too_small)
{
    clattn_desc d = good();
    clattn_tensor_sizes n;
    clattn_desc_tensor_sizes(&d, &n);
    float *q = calloc(n.q, 4), *k = calloc(n.k, 4), *v = calloc(n.v, 4), *o = calloc(n.o, 4);
    clattn_host_tensors t = {q, k, v, o, NULL, NULL, NULL, NULL, NULL, n.q, n.k - 1, n.v, n.o, 0, 0};
    char msg[256];
    cr_expect_eq(clattn_reference_forward(&d, &t, msg, sizeof msg), CLATTN_BUFFER_TOO_SMALL);
    cr_expect(strstr(msg, "k holds"), "%s", msg);
    free(q); free(k); free(v); free(o);
}

Test(api, status_strings)
{
    const clattn_status all[] = {CLATTN_SUCCESS, CLATTN_INVALID_ARGUMENT, CLATTN_INVALID_SHAPE,
                                 CLATTN_INVALID_STRIDES, CLATTN_BUFFER_TOO_SMALL, CLATTN_UNSUPPORTED,
                                 CLATTN_OUT_OF_HOST_MEMORY, CLATTN_NO_DEVICE, CLATTN_BUILD_FAILED,
                                 CLATTN_SIZE_OVERFLOW, CLATTN_INTERNAL_ERROR};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
        cr_expect(clattn_status_string(all[i]) && clattn_status_string(all[i])[0]);
        for (size_t j = 0; j < i; j++) cr_expect_str_neq(clattn_status_string(all[i]), clattn_status_string(all[j]));
    }
    cr_expect_str_eq(clattn_status_string(CL_OUT_OF_RESOURCES), "OpenCL: out of resources");
    cr_expect_str_eq(clattn_status_string(12345), "unknown status");
    /* OpenCL's codes keep their numbers: clattn's own band does not collide with them */
    cr_expect(CLATTN_INVALID_ARGUMENT < -1100);
}

Test(api, version)
{
    char want[32];
    snprintf(want, sizeof want, "%d.%d.%d", CLATTN_VERSION_MAJOR, CLATTN_VERSION_MINOR, CLATTN_VERSION_PATCH);
    cr_expect_str_eq(clattn_version_string(), want);
    cr_expect_eq(clattn_version_number(), CLATTN_VERSION_NUMBER);
}

static cl_uint refcount(cl_context c)
{
    cl_uint n = 0;
    clGetContextInfo(c, CL_CONTEXT_REFERENCE_COUNT, sizeof n, &n, NULL);
    return n;
}

Test(api, application_context_is_retained_and_released)
{
    cl_device_id dev;
    cl_uint n = 0;
    if (clattn_list_devices(&dev, 1, &n) || !n) cr_skip_test("no OpenCL device");
    cl_int e;
    cl_context cl = clCreateContext(NULL, 1, &dev, NULL, NULL, &e);
    cr_assert_eq(e, CL_SUCCESS);
    cl_command_queue q = clCreateCommandQueue(cl, dev, 0, &e);
    const cl_uint before = refcount(cl);
    clattn_context *ctx = NULL;
    cr_assert_eq(clattn_context_create_from_cl(cl, dev, NULL, &ctx), CLATTN_SUCCESS);
    cr_expect_eq(refcount(cl), before + 1);
    cr_expect_eq(clattn_context_cl_context(ctx), cl);
    cr_expect_eq(clattn_context_device(ctx), dev);
    /* A plan and an execution on the application's own queue and buffers. */
    clattn_desc d = good();
    run_opts opts = {seed_for("app_ctx"), false, false, NULL};
    opts.queue = q;
    run_result r = run_and_compare(ctx, &d, &opts);
    expect_ok(&r, "application context", opts.seed);
    clattn_context_destroy(ctx);
    cr_expect_eq(refcount(cl), before, "destroy must release exactly what it retained");
    clReleaseCommandQueue(q);
    clReleaseContext(cl);
}

Test(api, device_selection)
{
    cl_device_id dev;
    cl_uint n = 0;
    if (clattn_list_devices(&dev, 1, &n) || !n) cr_skip_test("no OpenCL device");
    char name[256] = "";
    clGetDeviceInfo(dev, CL_DEVICE_NAME, sizeof name - 1, name, NULL);
    clattn_context *ctx = NULL;
    clattn_context_options o = {0};
    o.device = "no-such-device-anywhere";
    cr_expect_eq(clattn_context_create(&o, &ctx), CLATTN_NO_DEVICE);
    cr_expect_null(ctx);
    o.device = "999";
    cr_expect_eq(clattn_context_create(&o, &ctx), CLATTN_NO_DEVICE);
    o.device = "0";
    cr_assert_eq(clattn_context_create(&o, &ctx), CLATTN_SUCCESS);
    cr_expect_eq(clattn_context_device(ctx), dev);
    clattn_context_destroy(ctx);
    /* a name substring, case-insensitive, through the environment */
    char sub[8] = {0};
    for (int i = 0; i < 4 && name[i]; i++) sub[i] = (char)(name[i] >= 'a' && name[i] <= 'z' ? name[i] - 32 : name[i]);
    setenv("CLATTN_DEVICE", sub, 1);
    cr_assert_eq(clattn_context_create(NULL, &ctx), CLATTN_SUCCESS, "selector '%s'", sub);
    cr_expect_eq(clattn_context_device(ctx), dev);
    clattn_context_destroy(ctx);
    setenv("CLATTN_DEVICE", "nothing-matches-this", 1);
    cr_expect_eq(clattn_context_create(NULL, &ctx), CLATTN_NO_DEVICE);
    unsetenv("CLATTN_DEVICE");
}

/* Buffers that cannot hold their tensor are refused before launch; nothing is written. */
Test(api, bad_buffers_refused_and_untouched)
{
    clattn_context *ctx = test_context();
    clattn_desc d = good();
    clattn_tensor_sizes n;
    clattn_desc_tensor_sizes(&d, &n);
    cl_context cl = clattn_context_cl_context(ctx);
    cl_int e;
    cl_command_queue q = clCreateCommandQueue(cl, clattn_context_device(ctx), 0, &e);
    float *host = malloc((n.q + n.k + n.v + n.o) * 4);
    uint64_t rng = 5;
    clattn_rng_fill(host, n.q + n.k + n.v + n.o, &rng, 1.0f);
    cl_mem qm = clCreateBuffer(cl, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR, n.q * 4, host, &e);
    cl_mem km = clCreateBuffer(cl, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR, n.k * 4, host, &e);
    cl_mem small = clCreateBuffer(cl, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR, (n.v - 1) * 4, host, &e);
    cl_mem vm = clCreateBuffer(cl, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR, n.v * 4, host, &e);
    cl_mem om = clCreateBuffer(cl, CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR, n.o * 4, host + n.q + n.k + n.v, &e);
    cl_mem ro = clCreateBuffer(cl, CL_MEM_READ_ONLY, n.o * 4, NULL, &e);
    cl_mem small_rw = clCreateBuffer(cl, CL_MEM_READ_WRITE, 4, NULL, &e);
    cr_assert_eq(e, CL_SUCCESS);
    clattn_plan *plan;
    cr_assert_eq(clattn_plan_create(ctx, &d, &plan), CLATTN_SUCCESS, "%s", clattn_context_last_error(ctx));

    struct { const char *what; clattn_buffers b; clattn_status want; } cases[] = {
        {"v holds", {qm, km, small, om}, CLATTN_BUFFER_TOO_SMALL},
        {"q is NULL", {NULL, km, vm, om}, CLATTN_INVALID_ARGUMENT},
        {"read-only", {qm, km, vm, ro}, CLATTN_INVALID_ARGUMENT},
        {"o holds", {qm, km, vm, om, .o_offset = 1}, CLATTN_BUFFER_TOO_SMALL},
        {"lse holds", {qm, km, vm, om, .lse = small_rw}, CLATTN_BUFFER_TOO_SMALL},
        {"offset + size overflows", {qm, km, vm, om, .q_offset = SIZE_MAX - 3}, CLATTN_SIZE_OVERFLOW},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        cl_event ev = (cl_event)0x1;
        clattn_status st = clattn_plan_execute(plan, q, &cases[i].b, 0, NULL, &ev);
        cr_expect_eq(st, cases[i].want, "%s: got %d", cases[i].what, st);
        cr_expect_null(ev, "%s: no event on failure", cases[i].what);
        cr_expect(strstr(clattn_context_last_error(ctx), cases[i].what), "%s: message '%s'", cases[i].what,
                  clattn_context_last_error(ctx));
    }
    /* wait list inconsistent */
    clattn_buffers ok = {qm, km, vm, om};
    cr_expect_eq(clattn_plan_execute(plan, q, &ok, 1, NULL, NULL), CL_INVALID_EVENT_WAIT_LIST);
    /* a queue of another context */
    cl_context other = clCreateContext(NULL, 1, (cl_device_id[]){clattn_context_device(ctx)}, NULL, NULL, &e);
    cl_command_queue oq = clCreateCommandQueue(other, clattn_context_device(ctx), 0, &e);
    cr_expect_eq(clattn_plan_execute(plan, oq, &ok, 0, NULL, NULL), CL_INVALID_COMMAND_QUEUE);
    clReleaseCommandQueue(oq);
    clReleaseContext(other);

    float *back = malloc(n.o * 4);
    cr_assert_eq(clEnqueueReadBuffer(q, om, CL_TRUE, 0, n.o * 4, back, 0, NULL, NULL), CL_SUCCESS);
    cr_expect(!memcmp(back, host + n.q + n.k + n.v, n.o * 4), "o was written by a refused call");
    clattn_plan_destroy(plan);
    cl_mem all[] = {qm, km, small, vm, om, ro, small_rw};
    for (int i = 0; i < 7; i++) clReleaseMemObject(all[i]);
    clReleaseCommandQueue(q);
    free(host); free(back);
    clattn_context_destroy(ctx);
}

/* Tensors larger than one device allocation are refused before anything is allocated. */
Test(api, tensors_above_max_alloc)
{
    clattn_context *ctx = test_context();
    cl_ulong max_alloc = 0;
    clGetDeviceInfo(clattn_context_device(ctx), CL_DEVICE_MAX_MEM_ALLOC_SIZE, sizeof max_alloc, &max_alloc, NULL);
    clattn_desc d = {0};
    d.batch = 1; d.heads_q = 1; d.seq_kv = 4; d.head_dim = 1024;
    d.seq_q = (int)(max_alloc / (1024 * 4) + 1); /* q is one row more than the device can hold */
    float small[16] = {0};
    clattn_tensor_sizes n;
    cr_assert_eq(clattn_desc_tensor_sizes(&d, &n), CLATTN_SUCCESS);
    clattn_host_tensors t = {0};
    t.q = small; t.k = small; t.v = small; t.o = small;  /* never read: refused first */
    t.q_len = n.q; t.k_len = n.k; t.v_len = n.v; t.o_len = n.o;
    cr_expect_eq(clattn_forward_host(ctx, &d, &t), CLATTN_SIZE_OVERFLOW);
    cr_expect(strstr(clattn_context_last_error(ctx), "max allocation"), "%s", clattn_context_last_error(ctx));
    clattn_context_destroy(ctx);
}

Test(api, unsupported_is_reported_with_reason)
{
    cl_device_id dev;
    cl_uint n = 0;
    if (clattn_list_devices(&dev, 1, &n) || !n) cr_skip_test("no OpenCL device");
    clattn_context_options o = {0};
    o.scratch_limit = 256; /* 64 keys of scores */
    clattn_context *ctx;
    cr_assert_eq(clattn_context_create(&o, &ctx), CLATTN_SUCCESS);
    clattn_desc d = good();
    d.head_dim = 640; /* beyond the fused kernels */
    d.algo = CLATTN_ALGO_FUSED;
    clattn_plan *plan = NULL;
    cr_expect_eq(clattn_plan_create(ctx, &d, &plan), CLATTN_UNSUPPORTED);
    cr_expect(strstr(clattn_context_last_error(ctx), "fused: head dims above 576"), "%s", clattn_context_last_error(ctx));
    d.seq_kv = 100; /* and one row of scores above the scratch limit */
    d.algo = CLATTN_ALGO_UNFUSED;
    cr_expect_eq(clattn_plan_create(ctx, &d, &plan), CLATTN_UNSUPPORTED);
    cr_expect(strstr(clattn_context_last_error(ctx), "unfused: one row of scores"), "%s", clattn_context_last_error(ctx));
    d.algo = CLATTN_ALGO_AUTO;
    cr_expect_eq(clattn_plan_create(ctx, &d, &plan), CLATTN_UNSUPPORTED);
    cr_expect(strstr(clattn_context_last_error(ctx), "no path serves"), "%s", clattn_context_last_error(ctx));
    /* the capability check used by dispatch agrees */
    clattn_shape s;
    cr_assert_eq(clattn__resolve(&d, &s, NULL, 0), CLATTN_SUCCESS);
    char why[128];
    cr_expect(!clattn__fused_supports(ctx, &s, why, sizeof why));
    s.head_dim = s.head_dim_v = 64;
    cr_expect(clattn__fused_supports(ctx, &s, why, sizeof why));
    clattn_context_destroy(ctx);
}

/* More than 65535 KV heads or batch entries do not fit a GPU grid dimension: the fused path
 * declines with that reason and auto falls back to the unfused path. */
Test(api, grid_limits_fall_back)
{
    clattn_context *ctx = test_context();
    clattn_desc d = {0};
    d.batch = 65536; d.heads_q = 1; d.seq_q = 2; d.seq_kv = 3; d.head_dim = 8;
    d.algo = CLATTN_ALGO_FUSED;
    clattn_plan *plan = NULL;
    cr_expect_eq(clattn_plan_create(ctx, &d, &plan), CLATTN_UNSUPPORTED);
    cr_expect(strstr(clattn_context_last_error(ctx), "65535"), "%s", clattn_context_last_error(ctx));
    d.algo = CLATTN_ALGO_AUTO;
    cr_assert_eq(clattn_plan_create(ctx, &d, &plan), CLATTN_SUCCESS);
    cr_expect_eq(clattn_plan_algo(plan), CLATTN_ALGO_UNFUSED);
    cr_expect(strstr(clattn_plan_reason(plan), "65535"), "%s", clattn_plan_reason(plan));
    clattn_plan_destroy(plan);
    d.batch = 1; d.heads_q = d.heads_kv = 70000; /* the same for KV heads */
    d.algo = CLATTN_ALGO_FUSED;
    cr_expect_eq(clattn_plan_create(ctx, &d, &plan), CLATTN_UNSUPPORTED);
    clattn_context_destroy(ctx);
}

/* A kernel that fails to build: the status says so and last_error carries the build log. */
Test(api, build_failure_carries_log)
{
    clattn_context *ctx = test_context();
    clattn_variant v;
    memset(&v, 0, sizeof v);
    v.source_name = "fwd_rows";
    v.kernel_name = "clattn_fwd_rows";
    snprintf(v.options, sizeof v.options, "-D D=64 -D DV=64 -D VW=3 -D BM=1 -D BN=4");
    snprintf(v.name, sizeof v.name, "broken variant");
    cl_program p = NULL;
    clattn_status st = clattn__get_program(ctx, &v, &p);
    cr_expect_eq(st, CLATTN_BUILD_FAILED, "got %d", st);
    cr_expect(strstr(clattn_context_last_error(ctx), "VW must be"), "log missing: %s", clattn_context_last_error(ctx));
    cr_expect(strstr(clattn_context_last_error(ctx), "kernels/common.cl"), "#line file name missing");
    clattn_context_destroy(ctx);
}
