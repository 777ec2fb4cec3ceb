/* A small GPU application that links clattn: it owns its cl_context, queue and buffers,
 * hands them to clattn, runs causal attention and checks the result with the reference.
 * Build it with CMake (find_package(clattn)) or with pkg-config: see README.md here. */
#include <clattn.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#define CHECK_CL(call)                                                                 \
    do {                                                                               \
        cl_int err_ = (call);                                                          \
        if (err_ != CL_SUCCESS) {                                                      \
            fprintf(stderr, "%s failed: %s (%d)\n", #call, clattn_status_string(err_), err_); \
            return 1;                                                                  \
        }                                                                              \
    } while (0)

int main(void)
{
    /* The application's own OpenCL objects: the first GPU, else the first device. */
    cl_platform_id plat;
    cl_device_id dev;
    cl_int e;
    CHECK_CL(clGetPlatformIDs(1, &plat, NULL));
    if (clGetDeviceIDs(plat, CL_DEVICE_TYPE_GPU, 1, &dev, NULL) != CL_SUCCESS)
        CHECK_CL(clGetDeviceIDs(plat, CL_DEVICE_TYPE_ALL, 1, &dev, NULL));
    cl_context cl = clCreateContext(NULL, 1, &dev, NULL, NULL, &e);
    CHECK_CL(e);
    cl_command_queue queue = clCreateCommandQueue(cl, dev, 0, &e);
    CHECK_CL(e);

    clattn_context *ctx;
    CHECK_CL(clattn_context_create_from_cl(cl, dev, NULL, &ctx));

    clattn_desc d = CLATTN_DESC_INIT; /* zero means default: f32, BHSD, scale 1/sqrt(d), fused if possible */
    d.batch = 1; d.heads_q = 8; d.heads_kv = 2; d.seq_q = 100; d.seq_kv = 100; d.head_dim = 64;
    d.causal = 1;
    clattn_tensor_sizes n = CLATTN_TENSOR_SIZES_INIT;
    CHECK_CL(clattn_desc_tensor_sizes(&d, &n));
    float *q = malloc(n.q * 4), *k = malloc(n.k * 4), *v = malloc(n.v * 4);
    float *o = malloc(n.o * 4), *ref = malloc(n.o * 4);
    srand(1);
    for (size_t i = 0; i < n.q; i++) q[i] = (float)rand() / RAND_MAX - 0.5f;
    for (size_t i = 0; i < n.k; i++) k[i] = (float)rand() / RAND_MAX - 0.5f;
    for (size_t i = 0; i < n.v; i++) v[i] = (float)rand() / RAND_MAX - 0.5f;

    cl_mem qm = clCreateBuffer(cl, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR, n.q * 4, q, &e);
    CHECK_CL(e);
    cl_mem km = clCreateBuffer(cl, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR, n.k * 4, k, &e);
    CHECK_CL(e);
    cl_mem vm = clCreateBuffer(cl, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR, n.v * 4, v, &e);
    CHECK_CL(e);
    cl_mem om = clCreateBuffer(cl, CL_MEM_WRITE_ONLY, n.o * 4, NULL, &e);
    CHECK_CL(e);

    clattn_plan *plan;
    clattn_status st = clattn_plan_create(ctx, &d, &plan);
    if (st) {
        fprintf(stderr, "plan: %s: %s\n", clattn_status_string(st), clattn_context_last_error(ctx));
        return 1;
    }
    clattn_buffers bufs = CLATTN_BUFFERS_INIT;
    bufs.q = qm; bufs.k = km; bufs.v = vm; bufs.o = om;
    cl_event done;
    CHECK_CL(clattn_plan_execute(plan, queue, &bufs, 0, NULL, &done));
    CHECK_CL(clEnqueueReadBuffer(queue, om, CL_TRUE, 0, n.o * 4, o, 1, &done, NULL));
    clReleaseEvent(done);

    clattn_host_tensors t = CLATTN_HOST_TENSORS_INIT;
    t.q = q; t.k = k; t.v = v; t.o = ref;
    t.q_len = n.q; t.k_len = n.k; t.v_len = n.v; t.o_len = n.o;
    CHECK_CL(clattn_reference_forward(&d, &t, NULL, 0));
    double num = 0, den = 0;
    for (size_t i = 0; i < n.o; i++) {
        num += (o[i] - ref[i]) * (double)(o[i] - ref[i]);
        den += ref[i] * (double)ref[i];
    }
    const double err = sqrt(num / den);
    printf("clattn %s, variant %s: relative L2 error vs reference %.2e\n", clattn_version_string(),
           clattn_plan_variant(plan), err);

    clattn_plan_destroy(plan);
    clattn_context_destroy(ctx);
    clReleaseMemObject(qm); clReleaseMemObject(km); clReleaseMemObject(vm); clReleaseMemObject(om);
    clReleaseCommandQueue(queue);
    clReleaseContext(cl);
    free(q); free(k); free(v); free(o); free(ref);
    return err <= 1e-5 ? 0 : 1;
}
