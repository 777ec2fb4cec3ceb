/* Tuning: parameters given to a plan are validated and used; the user's tuning file is
 * written atomically, read back by a new context and used by `auto`; malformed lines are
 * skipped; a preferred family is taken by auto for its class; the shipped table is consulted by
 * device, then vendor; every point of the tuner's
 * search space computes the right result on awkward shapes (both families). */
#include "harness.h"
#include "tuning_db.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

TestSuite(tuning, .fini = leak_check);

static clattn_context *context_in(const char *dir, clattn_kernel_family fam)
{
    cl_device_id dev;
    cl_uint n = 0;
    if (clattn_list_devices(&dev, 1, &n) != CLATTN_SUCCESS || n == 0) cr_skip_test("no OpenCL device");
    clattn_context_options o = CLATTN_CONTEXT_OPTIONS_INIT;
    o.cache_dir = dir;
    o.disable_disk_cache = dir == NULL;
    o.kernel_family = fam;
    clattn_context *ctx = NULL;
    cr_assert_eq(clattn_context_create(&o, &ctx), CLATTN_SUCCESS);
    return ctx;
}

static clattn_desc shape(int nq, int nk, int d)
{
    clattn_desc x = CLATTN_DESC_INIT;
    x.batch = 1; x.heads_q = 4; x.heads_kv = 2; x.seq_q = nq; x.seq_kv = nk; x.head_dim = d;
    x.algo = CLATTN_ALGO_FUSED;
    return x;
}

Test(tuning, classes)
{
    clattn_desc d = shape(300, 300, 64);
    cr_expect_str_eq(clattn_tuning_class(&d), "prefill-d64");
    d.head_dim = 65;
    cr_expect_str_eq(clattn_tuning_class(&d), "prefill-d128");
    d.seq_q = 16;
    cr_expect_str_eq(clattn_tuning_class(&d), "decode-d128");
    d.head_dim = 576;
    d.head_dim_v = 512;
    cr_expect_str_eq(clattn_tuning_class(&d), "decode-d576");
    d.head_dim = 0;
    cr_expect_null(clattn_tuning_class(&d));
}

Test(tuning, invalid_values_rejected)
{
    clattn_context *ctx = context_in(NULL, CLATTN_KERNELS_AUTO);
    const clattn_desc d = shape(40, 50, 64);
#define T(...) {.struct_size = sizeof(clattn_tuning), __VA_ARGS__}
    const clattn_tuning bad[] = {T(.rows = -1), T(.keys = 24), T(.vector_width = 3), T(.group_size = 1 << 30),
                                 T(.split_units = 1000), T(.threads_per_row = 3), T(.rows = 17, .keys = 16)};
#undef T
    const char *field[] = {"rows", "keys", "vector_width", "group_size", "split_units", "threads_per_row", "rows"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        clattn_plan *p = (clattn_plan *)0x1;
        cr_expect_eq(clattn_plan_create_tuned(ctx, &d, &bad[i], &p), CLATTN_INVALID_ARGUMENT, "case %zu", i);
        cr_expect_null(p);
        cr_expect(strstr(clattn_context_last_error(ctx), field[i]) != NULL, "message '%s' names %s",
                  clattn_context_last_error(ctx), field[i]);
    }
    cr_expect_eq(clattn_tuning_store(ctx, &d, &bad[0]), CLATTN_INVALID_ARGUMENT);
    /* refused on the unfused path too, which applies no tuning */
    clattn_desc du = d;
    du.algo = CLATTN_ALGO_UNFUSED;
    clattn_plan *p = NULL;
    cr_expect_eq(clattn_plan_create_tuned(ctx, &du, &bad[2], &p), CLATTN_INVALID_ARGUMENT);
    cr_expect_null(p);
    clattn_context_destroy(ctx);
    /* a $CLATTN_KERNELS that names no family is refused, as a wrong option is */
    setenv("CLATTN_KERNELS", "roWz", 1);
    clattn_context *bad_env = NULL;
    cr_expect_eq(clattn_context_create(NULL, &bad_env), CLATTN_INVALID_ARGUMENT);
    cr_expect_null(bad_env);
    setenv("CLATTN_KERNELS", "auto", 1);
    cr_expect_eq(clattn_context_create(NULL, &bad_env), CLATTN_SUCCESS);
    clattn_context_destroy(bad_env);
    setenv("CLATTN_KERNELS", "tiles", 1);
    cr_expect_eq(clattn_context_create(NULL, &bad_env), CLATTN_SUCCESS);
    cr_expect_eq(clattn_context_kernel_family(bad_env), CLATTN_KERNELS_TILES);
    clattn_context_destroy(bad_env);
    unsetenv("CLATTN_KERNELS");
}

Test(tuning, given_parameters_used)
{
    clattn_context *ctx = context_in(NULL, CLATTN_KERNELS_ROWS);
    clattn_desc d = shape(40, 50, 64);
    clattn_tuning t = {.struct_size = sizeof(clattn_tuning), .rows = 2, .keys = 32, .vector_width = 8};
    clattn_plan *p;
    cr_assert_eq(clattn_plan_create_tuned(ctx, &d, &t, &p), CLATTN_SUCCESS);
    clattn_tuning got = CLATTN_TUNING_INIT;
    cr_expect_str_eq(clattn_plan_tuning(p, &got), "given");
    cr_expect_eq(got.rows, 2);
    cr_expect_eq(got.keys, 32);
    cr_expect_eq(got.vector_width, 8);
    cr_expect_gt(got.group_size, 0, "unset fields are filled");
    cr_expect(strstr(clattn_plan_variant(p), "BM=2 BN=32") != NULL, "%s", clattn_plan_variant(p));
    clattn_plan_destroy(p);
    /* the unfused path has no tuning */
    d.algo = CLATTN_ALGO_UNFUSED;
    cr_assert_eq(clattn_plan_create_tuned(ctx, &d, &t, &p), CLATTN_SUCCESS);
    cr_expect_str_eq(clattn_plan_tuning(p, &got), "");
    cr_expect_eq(got.rows, 0);
    clattn_plan_destroy(p);
    clattn_context_destroy(ctx);
}

static void temp_dir(char *buf, size_t size)
{
    snprintf(buf, size, "/tmp/clattn-tuning-XXXXXX");
    cr_assert_not_null(mkdtemp(buf));
}

Test(tuning, user_file_round_trip, .timeout = 120)
{
    char dir[64];
    temp_dir(dir, sizeof dir);
    clattn_context *ctx = context_in(dir, CLATTN_KERNELS_ROWS);
    const char *path = clattn_tuning_file(ctx);
    cr_assert(strstr(path, dir) == path, "the file lives in the cache dir: %s", path);
    const clattn_desc prefill = shape(64, 80, 64), decode = shape(1, 600, 128);
    const clattn_tuning t = {.struct_size = sizeof(clattn_tuning), .rows = 8, .keys = 8, .vector_width = 8, .group_size = 4, .split_units = 3};
    cr_assert_eq(clattn_tuning_store(ctx, &prefill, &t), CLATTN_SUCCESS);
    cr_assert_eq(access(path, R_OK), 0, "%s written", path);
    clattn_context_destroy(ctx);

    ctx = context_in(dir, CLATTN_KERNELS_ROWS); /* a new context reads the file */
    clattn_plan *p;
    cr_assert_eq(clattn_plan_create(ctx, &prefill, &p), CLATTN_SUCCESS);
    clattn_tuning got = CLATTN_TUNING_INIT;
    cr_expect_str_eq(clattn_plan_tuning(p, &got), "user file");
    cr_expect(got.rows == 8 && got.keys == 8 && got.vector_width == 8 && got.group_size == 4 && got.split_units == 3,
              "%d %d %d %d %d", got.rows, got.keys, got.vector_width, got.group_size, got.split_units);
    clattn_plan_destroy(p);
    cr_assert_eq(clattn_plan_create(ctx, &decode, &p), CLATTN_SUCCESS); /* another class: untouched */
    cr_expect_str_neq(clattn_plan_tuning(p, &got), "user file");
    clattn_plan_destroy(p);
    /* and the tuned plan computes the right thing */
    run_opts o = {.seed = seed_for("user_file_round_trip")};
    run_result r = run_and_compare(ctx, &prefill, &o);
    expect_ok(&r, "tuned from the user file", o.seed);
    clattn_context_destroy(ctx);

    /* the tiles family has its own entries in the same file */
    ctx = context_in(dir, CLATTN_KERNELS_TILES);
    cr_assert_eq(clattn_plan_create(ctx, &prefill, &p), CLATTN_SUCCESS);
    cr_expect_str_neq(clattn_plan_tuning(p, &got), "user file");
    clattn_plan_destroy(p);
    clattn_context_destroy(ctx);
    remove(path);
    rmdir(dir);
}

/* A preferred family (clattn tune --families): auto takes it for its class, where it serves, in
 * this context and in a new one reading the file; other classes, descriptors it does not serve
 * and forced contexts keep their family; a family that does not serve is refused. */
Test(tuning, preferred_family, .timeout = 120)
{
    char dir[64];
    temp_dir(dir, sizeof dir);
    clattn_context *ctx = context_in(dir, CLATTN_KERNELS_AUTO);
    char path[1200]; /* the context that names it is destroyed below */
    snprintf(path, sizeof path, "%s", clattn_tuning_file(ctx));
    const clattn_desc decode = shape(1, 600, 128), prefill = shape(64, 80, 64);
    clattn_desc decode_f16 = decode, long_rows = shape(9, 600, 128);
    decode_f16.dtype = CLATTN_DTYPE_F16;
    long_rows.heads_q = 8; /* 4 query heads per KV head x 9 positions: past the decode family's 16 rows */
    const clattn_tuning t = {.struct_size = sizeof(clattn_tuning), .rows = 16, .keys = 32, .vector_width = 4,
                             .group_size = 64, .split_units = 2};
    cr_assert_eq(clattn_tuning_store_preferred(ctx, &decode, CLATTN_KERNELS_DECODE, &t), CLATTN_SUCCESS, "%s",
                 clattn_context_last_error(ctx));
    for (int pass = 0; pass < 2; pass++) { /* this context, then a new one reading the file */
        clattn_plan *p;
        clattn_tuning got = CLATTN_TUNING_INIT;
        cr_assert_eq(clattn_plan_create(ctx, &decode, &p), CLATTN_SUCCESS);
        cr_expect(!strncmp(clattn_plan_variant(p), "decode ", 7), "pass %d: %s", pass, clattn_plan_variant(p));
        cr_expect_eq(clattn_plan_kernel_family(p), CLATTN_KERNELS_DECODE); /* the context's stays the default */
        cr_expect_neq(clattn_context_kernel_family(ctx), CLATTN_KERNELS_DECODE);
        cr_expect_str_eq(clattn_plan_tuning(p, &got), "user file");
        cr_expect(got.keys == 32 && got.group_size == 64 && got.split_units == 2, "%d %d %d", got.keys,
                  got.group_size, got.split_units);
        clattn_plan_destroy(p);
        cr_assert_eq(clattn_plan_create(ctx, &decode_f16, &p), CLATTN_SUCCESS); /* any storage it serves */
        cr_expect(!strncmp(clattn_plan_variant(p), "decode ", 7), "%s", clattn_plan_variant(p));
        clattn_plan_destroy(p);
        cr_assert_eq(clattn_plan_create(ctx, &long_rows, &p), CLATTN_SUCCESS); /* not served: the table's choice */
        cr_expect(strncmp(clattn_plan_variant(p), "decode ", 7), "%s", clattn_plan_variant(p));
        clattn_plan_destroy(p);
        cr_assert_eq(clattn_plan_create(ctx, &prefill, &p), CLATTN_SUCCESS); /* another class */
        cr_expect(strncmp(clattn_plan_variant(p), "decode ", 7), "%s", clattn_plan_variant(p));
        cr_expect_eq(clattn_plan_kernel_family(p), clattn_context_kernel_family(ctx));
        clattn_plan_destroy(p);
        run_opts o = {.seed = seed_for("preferred_family")};
        run_result r = run_and_compare(ctx, &decode, &o);
        expect_ok(&r, "the preferred family", o.seed);
        clattn_context_destroy(ctx);
        ctx = context_in(dir, CLATTN_KERNELS_AUTO);
    }
    FILE *f = fopen(path, "r");
    char text[1024] = "";
    cr_assert_not_null(f);
    cr_expect(fread(text, 1, sizeof text - 1, f) > 0);
    fclose(f);
    cr_expect(strstr(text, "decode decode-d128 rows=16 keys=32 vw=4 group=64 split=2 tpr=0 use\n"), "%s", text);
    /* a forced context keeps its family */
    clattn_context *rows = context_in(dir, CLATTN_KERNELS_ROWS);
    clattn_plan *p;
    cr_assert_eq(clattn_plan_create(rows, &decode, &p), CLATTN_SUCCESS);
    cr_expect(!strncmp(clattn_plan_variant(p), "rows ", 5), "%s", clattn_plan_variant(p));
    cr_expect_eq(clattn_plan_kernel_family(p), CLATTN_KERNELS_ROWS);
    clattn_plan_destroy(p);
    clattn_context_destroy(rows);
    /* refusals: a family that does not serve the descriptor, one that does not exist */
    cr_expect_eq(clattn_tuning_store_preferred(ctx, &long_rows, CLATTN_KERNELS_DECODE, &t), CLATTN_UNSUPPORTED);
    cr_expect(strstr(clattn_context_last_error(ctx), "rows per KV head"), "%s", clattn_context_last_error(ctx));
    cr_expect_eq(clattn_tuning_store_preferred(ctx, &decode, (clattn_kernel_family)42, &t), CLATTN_INVALID_ARGUMENT);
    /* a new preference for the class replaces the old one */
    const clattn_tuning tt = {.struct_size = sizeof(clattn_tuning), .rows = 16, .keys = 16, .vector_width = 4,
                              .group_size = 64, .split_units = 2, .threads_per_row = 4};
    cr_assert_eq(clattn_tuning_store_preferred(ctx, &decode, CLATTN_KERNELS_TILES, &tt), CLATTN_SUCCESS);
    cr_assert_eq(clattn_plan_create(ctx, &decode, &p), CLATTN_SUCCESS);
    cr_expect(!strncmp(clattn_plan_variant(p), "tiles ", 6), "%s", clattn_plan_variant(p));
    cr_expect_eq(clattn_plan_kernel_family(p), CLATTN_KERNELS_TILES);
    clattn_plan_destroy(p);
    /* an unfused plan runs no family */
    clattn_desc unfused = decode;
    unfused.algo = CLATTN_ALGO_UNFUSED;
    cr_assert_eq(clattn_plan_create(ctx, &unfused, &p), CLATTN_SUCCESS, "%s", clattn_context_last_error(ctx));
    cr_expect_eq(clattn_plan_kernel_family(p), CLATTN_KERNELS_AUTO);
    clattn_plan_destroy(p);
    cr_expect_eq(clattn_plan_kernel_family(NULL), CLATTN_KERNELS_AUTO);
    clattn_context_destroy(ctx);
    remove(path);
    rmdir(dir);
}

Test(tuning, malformed_lines_skipped)
{
    char dir[64];
    temp_dir(dir, sizeof dir);
    clattn_context *ctx = context_in(dir, CLATTN_KERNELS_ROWS);
    char path[1200];
    snprintf(path, sizeof path, "%s", clattn_tuning_file(ctx));
    clattn_context_destroy(ctx);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fprintf(f, "# a comment\n"
               "garbage\n"
               "rows prefill-d999 rows=4 keys=16 vw=16 group=8 split=8\n"  /* unknown class */
               "rows decode-d64 rows=99 keys=16 vw=16 group=8 split=8\n"   /* invalid value */
               "cuda prefill-d64 rows=4 keys=16 vw=16 group=8 split=8\n"   /* unknown family */
               "rows decode-d128 rows=4294967300 keys=16 vw=16 group=8 split=8\n" /* past int */
               "rows prefill-d64 rows=2 keys=16 vw=16 group=2 split=5\n"); /* the one valid line */
    fclose(f);
    ctx = context_in(dir, CLATTN_KERNELS_ROWS);
    clattn_plan *p;
    clattn_tuning got = CLATTN_TUNING_INIT;
    const clattn_desc pre = shape(64, 64, 32), dec = shape(1, 64, 64);
    cr_assert_eq(clattn_plan_create(ctx, &pre, &p), CLATTN_SUCCESS);
    cr_expect_str_eq(clattn_plan_tuning(p, &got), "user file");
    cr_expect(got.rows == 2 && got.group_size == 2 && got.split_units == 5);
    clattn_plan_destroy(p);
    cr_assert_eq(clattn_plan_create(ctx, &dec, &p), CLATTN_SUCCESS);
    cr_expect_str_neq(clattn_plan_tuning(p, &got), "user file");
    clattn_plan_destroy(p);
    clattn_context_destroy(ctx);
    remove(path);
    rmdir(dir);
}

/* Without a user file, the source is the shipped device line when this device has one, else
 * a vendor line, else generic. */
Test(tuning, shipped_lookup)
{
    for (int fam = CLATTN_KERNELS_ROWS; fam <= CLATTN_KERNELS_TILES; fam++) {
        clattn_context *ctx = context_in(NULL, (clattn_kernel_family)fam);
        const clattn_desc d = shape(128, 128, 64);
        char name[256] = "";
        clGetDeviceInfo(clattn_context_device(ctx), CL_DEVICE_NAME, sizeof name - 1, name, NULL);
        char vendor[256] = "";
        clGetDeviceInfo(clattn_context_device(ctx), CL_DEVICE_VENDOR, sizeof vendor - 1, vendor, NULL);
        cl_device_type type = 0;
        clGetDeviceInfo(clattn_context_device(ctx), CL_DEVICE_TYPE, sizeof type, &type, NULL);
        /* the source a plan must name: worked out from the shipped table for this device */
        const char *want = "generic";
        for (int i = 0; i < clattn__shipped_count; i++) {
            const clattn_shipped *e = &clattn__shipped[i];
            if ((int)e->family != fam || strcmp(e->cls, "prefill-d64")) continue;
            if (e->device && !strcmp(e->device, name)) want = "shipped (device)";
            else if (!e->device && strstr(vendor, e->vendor) && (e->type & type) && strcmp(want, "shipped (device)"))
                want = "shipped (vendor)";
        }
        clattn_plan *p;
        cr_assert_eq(clattn_plan_create(ctx, &d, &p), CLATTN_SUCCESS);
        cr_expect_str_eq(clattn_plan_tuning(p, NULL), want, "device '%s' (%s)", name, vendor);
        clattn_plan_destroy(p);
        clattn_context_destroy(ctx);
    }
}

/* Prefill splits: with a high split target a prefill with few rows splits its keys, and the
 * result stays right (causal: late splits hold nothing for early rows). */
Test(tuning, prefill_split, .timeout = 120)
{
    for (int fam = CLATTN_KERNELS_ROWS; fam <= CLATTN_KERNELS_TILES; fam++) {
        clattn_context *ctx = context_in(NULL, (clattn_kernel_family)fam);
        clattn_desc d = shape(40, 1100, 64);
        d.heads_q = 2; d.heads_kv = 1; d.causal = 1;
        const clattn_tuning t = {.struct_size = sizeof(clattn_tuning), .rows = 4, .split_units = 256};
        clattn_plan *p;
        cr_assert_eq(clattn_plan_create_tuned(ctx, &d, &t, &p), CLATTN_SUCCESS);
        const char *sp = strstr(clattn_plan_variant(p), "splits=");
        cr_expect(sp && atoi(sp + 7) > 1, "%s", clattn_plan_variant(p));
        clattn_plan_destroy(p);
        run_opts o = {.seed = seed_for("prefill_split") + (uint64_t)fam, .tuning = &t};
        run_result r = run_and_compare(ctx, &d, &o);
        expect_ok(&r, "prefill split", o.seed);
        clattn_context_destroy(ctx);
    }
}

/* The tuner's search space, on an awkward shape of each class, both families. */
typedef struct space_case {
    int family;
    clattn_tuning t;
    int b, hq, hkv, nq, nk, d, dv, causal;
} space_case;

static space_case space[] = {
    {CLATTN_KERNELS_ROWS, {sizeof(clattn_tuning), 2, 8, 8, 8}, 2, 6, 2, 37, 53, 64, 0, 1},
    {CLATTN_KERNELS_ROWS, {sizeof(clattn_tuning), 8, 32, 16, 8}, 2, 6, 2, 37, 53, 64, 0, 1},
    {CLATTN_KERNELS_ROWS, {sizeof(clattn_tuning), 8, 8, 16, 4}, 1, 4, 1, 3, 301, 128, 0, 1},
    {CLATTN_KERNELS_ROWS, {sizeof(clattn_tuning), 2, 32, 8, 16}, 1, 3, 3, 29, 40, 40, 0, 0},
    {CLATTN_KERNELS_ROWS, {sizeof(clattn_tuning), 16, 16, 16, 8}, 1, 2, 1, 21, 33, 256, 64, 1},
    {CLATTN_KERNELS_TILES, {sizeof(clattn_tuning), 4, 16, 4, 0, 0, 4}, 2, 6, 2, 37, 53, 64, 0, 1},
    {CLATTN_KERNELS_TILES, {sizeof(clattn_tuning), 16, 32, 4, 0, 0, 2}, 1, 4, 1, 3, 301, 128, 0, 1},
    {CLATTN_KERNELS_TILES, {sizeof(clattn_tuning), 128, 16, 4, 0, 0, 1}, 1, 2, 2, 150, 70, 96, 0, 0},
    {CLATTN_KERNELS_TILES, {sizeof(clattn_tuning), 64, 16, 4, 0, 0, 4}, 1, 3, 3, 29, 40, 40, 0, 1},
    {CLATTN_KERNELS_TILES, {sizeof(clattn_tuning), 16, 8, 2, 0, 0, 8}, 1, 2, 1, 21, 33, 256, 64, 1},
    /* the shipped vendor-wide lines for large head dims */
    {CLATTN_KERNELS_TILES, {sizeof(clattn_tuning), 32, 16, 4, 0, 0, 4}, 1, 4, 2, 45, 50, 256, 0, 1},
    {CLATTN_KERNELS_TILES, {sizeof(clattn_tuning), 16, 8, 4, 0, 0, 8}, 1, 4, 1, 3, 70, 576, 512, 1},
    {CLATTN_KERNELS_TILES, {sizeof(clattn_tuning), 16, 16, 4, 0, 0, 8}, 2, 8, 2, 1, 300, 256, 0, 1},
};

ParameterizedTestParameters(tuning, search_space)
{
    return cr_make_param_array(space_case, space, sizeof space / sizeof space[0]);
}

ParameterizedTest(space_case *c, tuning, search_space, .timeout = 300)
{
    clattn_context *ctx = context_in(NULL, (clattn_kernel_family)c->family);
    for (int dt = 0; dt < 2; dt++) {
        clattn_desc d = CLATTN_DESC_INIT;
        d.batch = c->b; d.heads_q = c->hq; d.heads_kv = c->hkv; d.seq_q = c->nq; d.seq_kv = c->nk;
        d.head_dim = c->d; d.head_dim_v = c->dv; d.causal = c->causal; d.algo = CLATTN_ALGO_FUSED;
        d.dtype = dt ? CLATTN_DTYPE_F16 : CLATTN_DTYPE_F32;
        run_opts o = {.seed = seed_for("search_space") + (uint64_t)(c->t.rows * 131 + c->t.keys * 7 + dt),
                      .tuning = &c->t};
        run_result r = run_and_compare(ctx, &d, &o);
        char what[300];
        snprintf(what, sizeof what, "%s %s", r.variant, dt ? "f16" : "f32");
        expect_ok(&r, what, o.seed);
    }
    clattn_context_destroy(ctx);
}
