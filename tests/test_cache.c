/* The program cache: built once per context, loaded from disk by a new context (a new
 * process does the same), and any disk failure falls back to a source build. */
#include "harness.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

TestSuite(cache, .fini = leak_check);

static clattn_desc small_desc(void)
{
    clattn_desc d = CLATTN_DESC_INIT;
    /* a short query (decode class): one program per plan, no K transpose, so the counts below
     * are exact */
    d.batch = 1; d.heads_q = 2; d.seq_q = 9; d.seq_kv = 23; d.head_dim = 48; d.causal = 1;
    return d;
}

static clattn_context *open_with(const char *dir, int disable)
{
    cl_device_id dev;
    cl_uint n = 0;
    if (clattn_list_devices(&dev, 1, &n) || !n) cr_skip_test("no OpenCL device");
    clattn_context_options o = CLATTN_CONTEXT_OPTIONS_INIT;
    o.cache_dir = dir;
    o.disable_disk_cache = disable;
    clattn_context *ctx = NULL;
    cr_assert_eq(clattn_context_create(&o, &ctx), CLATTN_SUCCESS);
    return ctx;
}

static void plan_and_check(clattn_context *ctx, const char *name)
{
    clattn_desc d = small_desc();
    run_opts opts = {seed_for(name), false, false, NULL};
    run_result r = run_and_compare(ctx, &d, &opts);
    expect_ok(&r, name, opts.seed);
}

static int count_files(const char *dir, const char *suffix)
{
    DIR *dp = opendir(dir);
    if (!dp) return 0;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(dp))) {
        size_t l = strlen(e->d_name), s = strlen(suffix);
        if (l > s && !strcmp(e->d_name + l - s, suffix)) n++;
    }
    closedir(dp);
    return n;
}

static char *fresh_dir(void)
{
    static char dir[64];
    snprintf(dir, sizeof dir, "/tmp/clattn-cache-test-XXXXXX");
    cr_assert(mkdtemp(dir));
    return dir;
}

Test(cache, second_context_loads_from_disk, .timeout = 120)
{
    const char *dir = fresh_dir();
    clattn_cache_stats s = CLATTN_CACHE_STATS_INIT;
    clattn_context *a = open_with(dir, 0);
    plan_and_check(a, "cold");
    plan_and_check(a, "memory"); /* same variant again: memory hit */
    clattn_context_cache_stats(a, &s);
    cr_expect_eq(s.source_builds, 1);
    cr_expect_eq(s.disk_writes, 1);
    cr_expect_eq(s.memory_hits, 1);
    clattn_context_destroy(a);
    cr_expect_eq(count_files(dir, ".bin"), 1);
    cr_expect_eq(count_files(dir, ".tmp"), 0, "temporary file left behind");

    clattn_context *b = open_with(dir, 0);
    plan_and_check(b, "warm");
    clattn_context_cache_stats(b, &s);
    cr_expect_eq(s.disk_hits, 1);
    cr_expect_eq(s.source_builds, 0, "a warm cache must not recompile");
    clattn_context_destroy(b);
}

Test(cache, corrupt_binary_falls_back_to_source, .timeout = 120)
{
    const char *dir = fresh_dir();
    clattn_context *a = open_with(dir, 0);
    plan_and_check(a, "fill");
    clattn_context_destroy(a);
    DIR *dp = opendir(dir);
    struct dirent *e;
    char path[512] = "";
    while ((e = readdir(dp)))
        if (strstr(e->d_name, ".bin")) snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
    closedir(dp);
    cr_assert(path[0]);
    FILE *f = fopen(path, "wb");
    fputs("this is not a program binary", f);
    fclose(f);
    clattn_context *b = open_with(dir, 0);
    plan_and_check(b, "after corruption");
    clattn_cache_stats s = CLATTN_CACHE_STATS_INIT;
    clattn_context_cache_stats(b, &s);
    cr_expect_eq(s.disk_hits, 0);
    cr_expect_eq(s.source_builds, 1);
    cr_expect_eq(s.disk_writes, 1, "the good binary replaces the corrupt one");
    clattn_context_destroy(b);
}

Test(cache, unusable_directory_still_works, .timeout = 120)
{
    /* a path under a regular file can never be created */
    char file[] = "/tmp/clattn-cache-file-XXXXXX";
    int fd = mkstemp(file);
    close(fd);
    char dir[128];
    snprintf(dir, sizeof dir, "%s/sub", file);
    clattn_context *a = open_with(dir, 0);
    plan_and_check(a, "unwritable");
    clattn_cache_stats s = CLATTN_CACHE_STATS_INIT;
    clattn_context_cache_stats(a, &s);
    cr_expect_eq(s.source_builds, 1);
    cr_expect_eq(s.disk_writes, 0);
    clattn_context_destroy(a);
    remove(file);
}

Test(cache, disabled_writes_nothing, .timeout = 120)
{
    const char *dir = fresh_dir();
    clattn_context *a = open_with(dir, 1);
    plan_and_check(a, "disabled");
    clattn_cache_stats s = CLATTN_CACHE_STATS_INIT;
    clattn_context_cache_stats(a, &s);
    cr_expect_eq(s.disk_writes, 0);
    cr_expect_eq(count_files(dir, ".bin"), 0);
    clattn_context_destroy(a);
}
