/* The API contract: every invalid descriptor field gives its exact status and a message
 * naming it; bad buffers are refused before anything is launched or written; ownership of
 * the application's OpenCL objects; status strings; version. */
#include "harness.h"
#include "kernel.h"
#include "path.h"
#include "program.h"
#include "shape.h"

#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

TestSuite(api, .fini = leak_check);

static clattn_desc good(void)
{
    clattn_desc d = CLATTN_DESC_INIT;
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
    clattn_host_tensors t = CLATTN_HOST_TENSORS_INIT;
    cr_expect_eq(clattn_reference_forward(&d, &t, NULL, 0), c->want);
    clattn_context *ctx = test_context();
    clattn_plan *plan = (clattn_plan *)0x1;
    cr_expect_eq(clattn_plan_create(ctx, &d, &plan), c->want);
    cr_expect_null(plan, "plan must be NULL on failure");
    cr_expect(strstr(clattn_context_last_error(ctx), c->what) != NULL, "last error '%s'", clattn_context_last_error(ctx));
    clattn_context_destroy(ctx);
}

/* The unfused path's GEMMs (CLBlast) index with 32-bit ints: a descriptor whose tensors reach
 * 2^31 elements is refused there when the plan is made, before anything is allocated. */
Test(api, unfused_refuses_past_32_bit_indices)
{
    clattn_context *ctx = test_context();
    clattn_desc d = CLATTN_DESC_INIT;
    d.batch = 1; d.heads_q = 64; d.seq_q = 1 << 20; d.seq_kv = 1 << 20; d.head_dim = 64; /* q: 2^32 elements */
    d.algo = CLATTN_ALGO_UNFUSED;
    clattn_plan *p = NULL;
    cr_expect_eq(clattn_plan_create(ctx, &d, &p), CLATTN_UNSUPPORTED);
    cr_expect_null(p);
    cr_expect(strstr(clattn_context_last_error(ctx), "32-bit"), "%s", clattn_context_last_error(ctx));
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
    clattn_host_tensors t = CLATTN_HOST_TENSORS_INIT;
    char msg[128];
    cr_expect_eq(clattn_reference_forward(&d, &t, msg, sizeof msg), CLATTN_INVALID_ARGUMENT);
    cr_expect(strstr(msg, "q is NULL"), "%s", msg);
}

Test(api, host_arrays_too_small)
{
    clattn_desc d = good();
    clattn_tensor_sizes n = CLATTN_TENSOR_SIZES_INIT;
    clattn_desc_tensor_sizes(&d, &n);
    float *q = calloc(n.q, 4), *k = calloc(n.k, 4), *v = calloc(n.v, 4), *o = calloc(n.o, 4);
    clattn_host_tensors t = {sizeof(clattn_host_tensors), q, k, v, o, NULL, NULL, NULL, NULL, NULL, n.q, n.k - 1, n.v, n.o, 0, 0};
    char msg[256];
    cr_expect_eq(clattn_reference_forward(&d, &t, msg, sizeof msg), CLATTN_BUFFER_TOO_SMALL);
    cr_expect(strstr(msg, "k holds"), "%s", msg);
    free(q); free(k); free(v); free(o);
}

/* OpenCL's codes keep their numbers: clattn's own band (-2000..-2029) stays clear of them and
 * of CLBlast's (-1007..-1024, -2039..-2050). Constants: checked when the test compiles. */
_Static_assert(CLATTN_INVALID_ARGUMENT == -2000 && CLATTN_COMM_ERROR >= -2029, "clattn's status band moved");

/* Every code of clattn's band has its own description, and the list below is every code the
 * library has: a code added to the header without a string, or without a line here, fails. */
Test(api, status_strings)
{
    const clattn_status all[] = {CLATTN_SUCCESS, CLATTN_INVALID_ARGUMENT, CLATTN_INVALID_SHAPE,
                                 CLATTN_INVALID_STRIDES, CLATTN_BUFFER_TOO_SMALL, CLATTN_UNSUPPORTED,
                                 CLATTN_OUT_OF_HOST_MEMORY, CLATTN_NO_DEVICE, CLATTN_BUILD_FAILED,
                                 CLATTN_SIZE_OVERFLOW, CLATTN_INTERNAL_ERROR, CLATTN_BLAS_ERROR,
                                 CLATTN_IO_ERROR, CLATTN_BUFFERS_OVERLAP, CLATTN_PEER_FAILED,
                                 CLATTN_COMM_ERROR};
    const size_t n = sizeof all / sizeof all[0];
    for (size_t i = 0; i < n; i++) {
        const char *s = clattn_status_string(all[i]);
        cr_expect(s && s[0] && strcmp(s, "unknown status"), "status %d has no description", all[i]);
        for (size_t j = 0; j < i; j++) cr_expect_str_neq(s, clattn_status_string(all[j]));
    }
    for (clattn_status st = -2029; st <= -2000; st++) {
        bool listed = false;
        for (size_t i = 0; i < n; i++) listed = listed || all[i] == st;
        if (!listed)
            cr_expect_str_eq(clattn_status_string(st), "unknown status", "status %d has a description but is not "
                             "in this test's list", st);
    }
    cr_expect_str_eq(clattn_status_string(CL_OUT_OF_RESOURCES), "OpenCL: out of resources");
    cr_expect_str_eq(clattn_status_string(12345), "unknown status");
}

/* The library's version is CMake's project version (both read from the header's macros: a
 * change of their format that CMake's regex misses would show here), and the number agrees
 * with the string. */
Test(api, version)
{
    cr_expect_str_eq(clattn_version_string(), CLATTN_CMAKE_VERSION);
    int a = -1, b = -1, c = -1, end = 0;
    cr_assert_eq(sscanf(clattn_version_string(), "%d.%d.%d%n", &a, &b, &c, &end), 3);
    cr_expect_eq((size_t)end, strlen(clattn_version_string()));
    cr_expect_eq(clattn_version_number(), (unsigned)(a * 10000 + b * 100 + c));
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
    clattn_context_options o = CLATTN_CONTEXT_OPTIONS_INIT;
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
    clattn_tensor_sizes n = CLATTN_TENSOR_SIZES_INIT;
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
        {"v holds", {sizeof(clattn_buffers), qm, km, small, om}, CLATTN_BUFFER_TOO_SMALL},
        {"q is NULL", {sizeof(clattn_buffers), NULL, km, vm, om}, CLATTN_INVALID_ARGUMENT},
        {"read-only", {sizeof(clattn_buffers), qm, km, vm, ro}, CLATTN_INVALID_ARGUMENT},
        {"o holds", {sizeof(clattn_buffers), qm, km, vm, om, .o_offset = 1}, CLATTN_BUFFER_TOO_SMALL},
        {"lse holds", {sizeof(clattn_buffers), qm, km, vm, om, .lse = small_rw}, CLATTN_BUFFER_TOO_SMALL},
        {"offset + size overflows", {sizeof(clattn_buffers), qm, km, vm, om, .q_offset = SIZE_MAX - 3}, CLATTN_SIZE_OVERFLOW},
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
    clattn_buffers ok = {sizeof(clattn_buffers), qm, km, vm, om};
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
    clattn_desc d = CLATTN_DESC_INIT;
    d.batch = 1; d.heads_q = 1; d.seq_kv = 4; d.head_dim = 1024;
    d.seq_q = (int)(max_alloc / (1024 * 4) + 1); /* q is one row more than the device can hold */
    float small[16] = {0};
    clattn_tensor_sizes n = CLATTN_TENSOR_SIZES_INIT;
    cr_assert_eq(clattn_desc_tensor_sizes(&d, &n), CLATTN_SUCCESS);
    clattn_host_tensors t = CLATTN_HOST_TENSORS_INIT;
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
    clattn_context_options o = CLATTN_CONTEXT_OPTIONS_INIT;
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
    cr_expect(!clattn__path_fused.supports(ctx, &s, why, sizeof why));
    s.head_dim = s.head_dim_v = 64;
    cr_expect(clattn__path_fused.supports(ctx, &s, why, sizeof why));
    clattn_context_destroy(ctx);
}

/* More than 65535 KV heads or batch entries do not fit a GPU grid dimension: the fused path
 * declines with that reason and auto falls back to the unfused path. */
Test(api, grid_limits_fall_back)
{
    clattn_context *ctx = test_context();
    clattn_desc d = CLATTN_DESC_INIT;
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
    cl_program p = NULL;
    clattn_status st = clattn__get_program(ctx, "fwd_rows", "-D D=64 -D DV=64 -D VW=3 -D BM=1 -D BN=4",
                                           "broken variant", &p);
    cr_expect_eq(st, CLATTN_BUILD_FAILED, "got %d", st);
    cr_expect(strstr(clattn_context_last_error(ctx), "VW must be"), "log missing: %s", clattn_context_last_error(ctx));
    cr_expect(strstr(clattn_context_last_error(ctx), "kernels/common.cl"), "#line file name missing");
    clattn_context_destroy(ctx);
}

/* Each kernel file gets exactly the switches its header names (host/kernel.c's table), and
 * names every switch its own preprocessor lines test: a switch the table omits would be
 * silently 0 in that file. */
Test(api, kernel_switches)
{
    const char *files[] = {"fwd_rows", "fwd_tiles", "combine", "convert", "softmax", "bwd_prep", "bwd_rows", "bwd_softmax",
                           "bwd_tiles", "paged", "fwd_mma", "fwd_decode", "fwd_rtile"};
    for (size_t f = 0; f < sizeof files / sizeof files[0]; f++) {
        const clattn_embedded_source *src = clattn__find_source(files[f]);
        cr_assert(src, "no embedded source %s", files[f]);
        char *text = strndup((const char *)src->data, src->size);
        const char *doc = strstr(text, "Switches (-D):");
        cr_assert(doc, "kernels/%s.cl names no switches", files[f]);
        const char *doc_end = strchr(doc, '.');
        const unsigned table = clattn__file_switches(files[f]);
        for (unsigned bit = 1; bit <= CLATTN_SW_PAGED; bit <<= 1) {
            const char *name = clattn__switch_name(bit);
            const char *at = strstr(doc, name);
            const bool documented = at && at < doc_end;
            cr_expect_eq(documented, (table & bit) != 0, "kernels/%s.cl: %s is %sin its header but %sin the table",
                         files[f], name, documented ? "" : "not ", table & bit ? "" : "not ");
            /* its own #if / #elif lines */
            for (const char *line = text; line; line = strchr(line + 1, '\n')) {
                const char *l = line + (*line == '\n');
                while (*l == ' ') l++;
                if (strncmp(l, "#if", 3) && strncmp(l, "#elif", 5)) continue;
                const char *eol = strchr(l, '\n');
                const char *use = strstr(l, name);
                cr_expect(!(use && (!eol || use < eol)) || (table & bit), "kernels/%s.cl tests %s, which it is not given",
                          files[f], name);
            }
        }
        free(text);
    }
}

/* The options of a file hold only its switches, in one order: the fused path's combine and
 * clattn_merge's name one program. */
Test(api, kernel_options_per_file)
{
    const clattn_switches all = {2, true, true, true, true, true, true, true}, none = {0};
    clattn_kernel_spec a = {.file = "softmax"}, b = {.file = "softmax"};
    clattn__kernel_options(&a, "-D SMW=1", &all);
    cr_expect_str_eq(a.options, CLATTN_CL_STD " -D SMW=1 -D SEQUSED=1 -D VARLEN=1 -D PAGED=1");
    clattn_switches merge_like = {0};
    merge_like.softcap = merge_like.alibi = merge_like.mask = merge_like.seqused = true; /* combine ignores them */
    a.file = b.file = "combine";
    clattn__kernel_options(&a, "-D DV=64", &merge_like);
    clattn__kernel_options(&b, "-D DV=64", &none);
    cr_expect_str_eq(a.options, b.options);
    cr_expect_str_eq(b.options, CLATTN_CL_STD " -D DV=64 -D DTYPE=0 -D SINKS=0 -D VARLEN=0");
}

/* A kernel whose setter sets a different number of arguments than the kernel takes is refused
 * when the plan is made, with a message naming both counts. */
Test(api, kernel_argument_count)
{
    clattn_context *ctx = test_context();
    clattn_kernel_spec k = {.file = "combine", .function = "clattn_combine"};
    const clattn_switches sw = {0};
    clattn__kernel_options(&k, "-D DV=8", &sw);
    snprintf(k.name, sizeof k.name, "combine with one argument too many");
    k.num_args = 21; /* the kernel takes 20 */
    cl_kernel kern = NULL;
    cr_expect_eq(clattn__make_kernel(ctx, &k, &kern), CLATTN_INTERNAL_ERROR);
    cr_expect_null(kern);
    cr_expect(strstr(clattn_context_last_error(ctx), "takes 20 arguments but its setter sets 21"), "%s",
              clattn_context_last_error(ctx));
    k.num_args = 20;
    cr_expect_eq(clattn__make_kernel(ctx, &k, &kern), CLATTN_SUCCESS, "%s", clattn_context_last_error(ctx));
    if (kern) clReleaseKernel(kern);
    clattn_context_destroy(ctx);
}

/* After a failure every out pointer is NULL, the event included, whatever the failure. */
Test(api, event_null_after_failure)
{
    cl_event ev = (cl_event)0x1;
    cr_expect_eq(clattn_plan_execute(NULL, NULL, NULL, 0, NULL, &ev), CLATTN_INVALID_ARGUMENT);
    cr_expect_null(ev, "clattn_plan_execute(NULL, ...) left the event");
    ev = (cl_event)0x1;
    const clattn_merge_desc md = {sizeof(clattn_merge_desc), 2, 3, 4};
    cr_expect_eq(clattn_merge(NULL, NULL, &md, NULL, NULL, NULL, NULL, 0, NULL, &ev), CLATTN_INVALID_ARGUMENT);
    cr_expect_null(ev, "clattn_merge(NULL, ...) left the event");
}

/* The queries whose pointers the header calls optional accept NULL. */
Test(api, optional_pointers_may_be_null)
{
    cl_device_id id = NULL;
    cl_uint n = 0;
    cr_expect_eq(clattn_list_devices(&id, 1, NULL), CLATTN_SUCCESS);
    cr_expect_eq(clattn_list_devices(NULL, 0, &n), CLATTN_SUCCESS);
    cl_uint m = 12345;
    cr_expect_eq(clattn_list_devices(NULL, 4, &m), CLATTN_SUCCESS, "no array: only counted");
    cr_expect_eq(m, n);
    const clattn_desc d = good();
    cr_expect_eq(clattn_desc_tensor_sizes(&d, NULL), CLATTN_SUCCESS);
    clattn_desc bad = good();
    bad.batch = 0;
    cr_expect_eq(clattn_desc_tensor_sizes(&bad, NULL), CLATTN_INVALID_SHAPE);
}

/* Sizes past 2^32 are computed in size_t: a split plan over 2^32 rows is refused with its true
 * scratch size (it was computed in int and came out 0), and messages print true numbers. */
Test(api, sizes_past_32_bits)
{
    clattn_context *ctx = test_context();
    clattn_desc d = CLATTN_DESC_INIT;
    d.batch = 16384; d.heads_q = 1; d.seq_q = 262144; d.seq_kv = 512; d.head_dim = 8;
    d.num_splits = 2; d.algo = CLATTN_ALGO_FUSED;
    clattn_plan *plan = NULL;
    /* 2 splits x 2^32 rows x (8 + 1) floats */
    cr_expect_eq(clattn_plan_create(ctx, &d, &plan), CLATTN_SIZE_OVERFLOW, "%s", clattn_context_last_error(ctx));
    cr_expect(strstr(clattn_context_last_error(ctx), "309237645312 bytes"), "%s", clattn_context_last_error(ctx));
    clattn_plan_destroy(plan);
    d.batch = 8192; d.seq_q = 262145; /* 2147491840 rows: past INT_MAX */
    cr_expect_eq(clattn_plan_create(ctx, &d, &plan), CLATTN_SIZE_OVERFLOW, "%s", clattn_context_last_error(ctx));
    cr_expect(strstr(clattn_context_last_error(ctx), "154619412480 bytes"), "%s", clattn_context_last_error(ctx));
    clattn_context_destroy(ctx);
}

/* An output sharing memory with an input or another output is refused before anything runs:
 * the same cl_mem, or two sub-buffers of one parent; disjoint parts of one buffer are fine. */
Test(api, overlapping_outputs_refused)
{
    clattn_context *ctx = test_context();
    const clattn_desc d = good();
    clattn_tensor_sizes n = CLATTN_TENSOR_SIZES_INIT;
    clattn_desc_tensor_sizes(&d, &n);
    cl_context cl = clattn_context_cl_context(ctx);
    cl_device_id dev = clattn_context_device(ctx);
    cl_int e;
    cl_command_queue q = clCreateCommandQueue(cl, dev, 0, &e);
    cl_uint align_bits = 1024;
    clGetDeviceInfo(dev, CL_DEVICE_MEM_BASE_ADDR_ALIGN, sizeof align_bits, &align_bits, NULL);
    const size_t al = align_bits / 8, total = n.q + n.k + n.v + n.o + n.lse;
    const size_t bytes = (total + n.o) * 4 + 4 * al;
    float *host = malloc(bytes);
    uint64_t rng = 17;
    clattn_rng_fill(host, bytes / 4, &rng, 1.0f);
    cl_mem big = clCreateBuffer(cl, CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR, bytes, host, &e);
    cr_assert_eq(e, CL_SUCCESS);
    /* two sub-buffers of `big` that overlap: [0, k bytes) and [al, al + o bytes) */
    cl_buffer_region rk = {0, n.k * 4}, ro = {al, n.o * 4}, rfar = {(total * 4 / al + 1) * al, n.o * 4};
    cl_mem sub_k = clCreateSubBuffer(big, CL_MEM_READ_WRITE, CL_BUFFER_CREATE_TYPE_REGION, &rk, &e);
    cl_mem sub_o = clCreateSubBuffer(big, CL_MEM_READ_WRITE, CL_BUFFER_CREATE_TYPE_REGION, &ro, &e);
    cl_mem sub_far = clCreateSubBuffer(big, CL_MEM_READ_WRITE, CL_BUFFER_CREATE_TYPE_REGION, &rfar, &e);
    cr_assert_eq(e, CL_SUCCESS);
    clattn_plan *plan;
    cr_assert_eq(clattn_plan_create(ctx, &d, &plan), CLATTN_SUCCESS, "%s", clattn_context_last_error(ctx));
    const size_t oq = 0, ok = n.q, ov = n.q + n.k, oo = n.q + n.k + n.v, ol = oo + n.o;
    struct { const char *what; clattn_buffers b; } cases[] = {
        {"output o overlaps k", {.struct_size = sizeof(clattn_buffers), .q = big, .k = big, .v = big, .o = big, .q_offset = oq, .k_offset = ok,
                                 .v_offset = ov, .o_offset = ok}},
        {"output o overlaps q", {.struct_size = sizeof(clattn_buffers), .q = big, .k = big, .v = big, .o = big, .q_offset = oq, .k_offset = ok,
                                 .v_offset = ov, .o_offset = oq + 3}},
        {"output o overlaps lse", {.struct_size = sizeof(clattn_buffers), .q = big, .k = big, .v = big, .o = big, .lse = big, .q_offset = oq,
                                   .k_offset = ok, .v_offset = ov, .o_offset = oo, .lse_offset = oo + n.o - 1}},
        {"output o overlaps k", {.struct_size = sizeof(clattn_buffers), .q = big, .k = sub_k, .v = big, .o = sub_o, .q_offset = oo, .v_offset = ov}},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        cl_event ev = (cl_event)0x1;
        const clattn_status st = clattn_plan_execute(plan, q, &cases[i].b, 0, NULL, &ev);
        cr_expect_eq(st, CLATTN_BUFFERS_OVERLAP, "case %zu: got %d (%s)", i, st, clattn_context_last_error(ctx));
        cr_expect_null(ev);
        cr_expect(strstr(clattn_context_last_error(ctx), cases[i].what), "case %zu: '%s' lacks '%s'", i,
                  clattn_context_last_error(ctx), cases[i].what);
    }
    float *back = malloc(bytes);
    cr_assert_eq(clEnqueueReadBuffer(q, big, CL_TRUE, 0, bytes, back, 0, NULL, NULL), CL_SUCCESS);
    cr_expect(!memcmp(back, host, bytes), "a refused call wrote the buffer");
    /* disjoint parts of one buffer, and a sub-buffer past the inputs: served */
    const clattn_buffers fine = {.struct_size = sizeof(clattn_buffers), .q = big, .k = big, .v = big, .o = big, .lse = big, .q_offset = oq,
                                 .k_offset = ok, .v_offset = ov, .o_offset = oo, .lse_offset = ol};
    cr_expect_eq(clattn_plan_execute(plan, q, &fine, 0, NULL, NULL), CLATTN_SUCCESS, "%s",
                 clattn_context_last_error(ctx));
    const clattn_buffers far = {.struct_size = sizeof(clattn_buffers), .q = big, .k = big, .v = big, .o = sub_far, .k_offset = ok, .v_offset = ov};
    cr_expect_eq(clattn_plan_execute(plan, q, &far, 0, NULL, NULL), CLATTN_SUCCESS, "%s",
                 clattn_context_last_error(ctx));
    clFinish(q);
    /* host arrays: the reference refuses o overlapping k */
    clattn_host_tensors t = CLATTN_HOST_TENSORS_INIT;
    t.q = host; t.k = host + n.q; t.v = host + n.q + n.k; t.o = host + n.q + 1;
    t.q_len = n.q; t.k_len = n.k; t.v_len = n.v; t.o_len = n.o;
    char msg[256];
    cr_expect_eq(clattn_reference_forward(&d, &t, msg, sizeof msg), CLATTN_BUFFERS_OVERLAP);
    cr_expect(strstr(msg, "output o overlaps k"), "%s", msg);
    clattn_plan_destroy(plan);
    clReleaseMemObject(sub_k); clReleaseMemObject(sub_o); clReleaseMemObject(sub_far); clReleaseMemObject(big);
    clReleaseCommandQueue(q);
    free(host); free(back);
    clattn_context_destroy(ctx);
}

/* The ABI rule (include/clattn.h): struct_size says how much of a struct the caller has. */
Test(api, struct_size_rule)
{
    char msg[256] = "";
    /* zeroed instead of initialised: refused, and the message says what to do */
    clattn_desc zeroed;
    memset(&zeroed, 0, sizeof zeroed);
    zeroed.batch = zeroed.heads_q = zeroed.seq_q = zeroed.seq_kv = 1;
    zeroed.head_dim = 8;
    cr_expect_eq(clattn_desc_validate(&zeroed, msg, sizeof msg), CLATTN_INVALID_ARGUMENT);
    cr_expect(strstr(msg, "clattn_desc.struct_size is 0") && strstr(msg, "_INIT"), "%s", msg);
    /* an older header's smaller struct: the fields it lacks are defaults */
    clattn_desc d = good();
    d.algo = CLATTN_ALGO_UNFUSED; /* past the older struct's end: must be ignored */
    d.struct_size = offsetof(clattn_desc, num_splits);
    clattn_context *ctx = test_context();
    clattn_plan *plan;
    cr_assert_eq(clattn_plan_create(ctx, &d, &plan), CLATTN_SUCCESS, "%s", clattn_context_last_error(ctx));
    cr_expect_str_eq(clattn_plan_reason(plan), "auto: fused, the fused kernel serves this descriptor", "%s",
                     clattn_plan_reason(plan));
    clattn_plan_destroy(plan);
    /* a newer header's larger struct: fine while its extra fields are zero, refused otherwise */
    struct { clattn_desc d; int64_t future_field; } newer;
    memset(&newer, 0, sizeof newer); /* as a newer header's _INIT macro would */
    newer.d = good();
    newer.d.struct_size = sizeof newer;
    cr_expect_eq(clattn_desc_validate(&newer.d, msg, sizeof msg), CLATTN_SUCCESS, "%s", msg);
    newer.future_field = 1;
    cr_expect_eq(clattn_plan_create(ctx, &newer.d, &plan), CLATTN_UNSUPPORTED);
    cr_expect(strstr(clattn_context_last_error(ctx), "newer header"), "%s", clattn_context_last_error(ctx));
    /* an output struct is written no further than its struct_size */
    struct { clattn_tensor_sizes n; unsigned char canary[64]; } out;
    memset(&out, 0x5a, sizeof out);
    out.n.struct_size = offsetof(clattn_tensor_sizes, v); /* an older caller knowing q and k only */
    const clattn_desc g = good();
    cr_assert_eq(clattn_desc_tensor_sizes(&g, &out.n), CLATTN_SUCCESS);
    cr_expect_eq(out.n.q, 2 * 4 * 5 * 32);
    cr_expect_eq(out.n.k, 2 * 2 * 7 * 32);
    const unsigned char *past = (const unsigned char *)&out.n + offsetof(clattn_tensor_sizes, v);
    for (size_t i = 0; i < sizeof out - offsetof(clattn_tensor_sizes, v); i++)
        cr_expect_eq(past[i], 0x5a, "byte %zu past struct_size written", i);
    /* garbage sizes: refused, nothing written */
    clattn_cache_stats stats;
    memset(&stats, 0x33, sizeof stats);
    cr_expect_eq(clattn_context_cache_stats(ctx, &stats), CLATTN_INVALID_ARGUMENT);
    cr_expect_eq(stats.memory_hits, 0x3333333333333333ull);
    clattn_context_destroy(ctx);
}
