/* Program cache: kernels are built lazily per file and option string (-D switches), kept per
 * context under its lock, and their binaries cached on disk so that a new process does not recompile
 * (PoCL takes seconds per variant; Criterion runs each test in its own process). Any disk
 * failure silently falls back to building from source. */
#include "program.h"
#include "diag.h"
#include "disk.h"
#include "fault.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Bump when the cache file layout or anything outside the key changes what a binary means. */
#define CACHE_FORMAT "clattn-program-cache-1"

const clattn_embedded_source *clattn__find_source(const char *name)
{
    for (const clattn_embedded_source *s = clattn__sources; s->name; s++)
        if (!strcmp(s->name, name)) return s;
    return NULL;
}

/* Files a kernel file needs between the common prelude and itself: the warp layer under the
 * tensor-core family. */
static const char *prelude_of(const char *name) { return !strcmp(name, "fwd_mma") ? "warp" : NULL; }

/* The "common" prelude, the file's own prelude if it has one, then the variant's file, each
 * behind a #line so that build logs name the real file and line. */
static char *assemble_source(clattn_context *ctx, const char *name)
{
    const char *names[3] = {"common", prelude_of(name), name};
    const clattn_embedded_source *part[3] = {NULL, NULL, NULL};
    size_t cap = 1;
    for (int i = 0; i < 3; i++) {
        if (!names[i]) continue;
        if (!(part[i] = clattn__find_source(names[i]))) return NULL;
        cap += part[i]->size + strlen(names[i]) + 32;
    }
    char *src = clattn__calloc(ctx, cap, 1);
    if (!src) return NULL;
    size_t n = 0;
    for (int i = 0; i < 3; i++) {
        if (!part[i]) continue;
        n += (size_t)snprintf(src + n, cap - n, "#line 1 \"kernels/%s.cl\"\n", names[i]);
        memcpy(src + n, part[i]->data, part[i]->size);
        n += part[i]->size;
        src[n++] = '\n';
    }
    src[n] = '\0';
    return src;
}

static void cache_path(const clattn_context *ctx, const char *source, const char *options,
                       char *path, size_t size)
{
    const char *parts[] = {CACHE_FORMAT, clattn_version_string(), source, options,
                           ctx->info.name, ctx->info.vendor, ctx->info.driver,
                           ctx->info.version, ctx->info.platform_version};
    const clattn_digest d = clattn__digest(parts, sizeof parts / sizeof parts[0]);
    clattn__format(path, size, "%s/%016llx%016llx.bin", ctx->cache_dir, (unsigned long long)d.hi,
                   (unsigned long long)d.lo);
}

static cl_program load_binary(clattn_context *ctx, const char *path, const char *options)
{
    size_t size = 0;
    unsigned char *bin = clattn__read_file(path, &size);
    if (!bin) return NULL;
    cl_int e;
    cl_program p = clattn__program_from_binary(ctx, bin, size, &e);
    free(bin);
    if (e || clBuildProgram(p, 1, &ctx->device, options, NULL, NULL)) {
        clattn__release_program(ctx, p);
        return NULL;
    }
    return p;
}

/* The built binary on disk (atomically: a reader never sees half of one). */
static bool store_binary(cl_program p, const char *path)
{
    size_t size = 0;
    if (clGetProgramInfo(p, CL_PROGRAM_BINARY_SIZES, sizeof size, &size, NULL) || size == 0)
        return false;
    unsigned char *bin = malloc(size);
    if (!bin) return false;
    unsigned char *bins[1] = {bin};
    bool ok = !clGetProgramInfo(p, CL_PROGRAM_BINARIES, sizeof bins, bins, NULL) && !clattn__write_atomic(path, bin, size);
    free(bin);
    return ok;
}

static clattn_status build_from_source(clattn_context *ctx, const char *src, const char *options,
                                       const char *name, cl_program *out)
{
    cl_int e;
    cl_program p = clattn__program_from_source(ctx, src, &e);
    if (e) {
        clattn__format(ctx->last_error, sizeof ctx->last_error,
                       "clCreateProgramWithSource failed (%d) for %s", e, name);
        return e;
    }
    e = clattn__build(ctx, p, options);
    /* PoCL 3.x shares its own kernel cache between processes without a lock: two processes
     * building one source at once (MPI ranks, parallel tests) can fail one build with no
     * diagnostic ("pocl_remove(.../program.bc) failed"; pocl/pocl#1480). A second try finds the
     * other process's finished entry; a source that does not compile fails it again. (An
     * injected failure, tests/test_faults.c, stays a failure.) */
    for (int retry = 0; e == CL_BUILD_PROGRAM_FAILURE && !clattn__fault_fired(ctx) && retry < 2; retry++) {
        struct timespec pause = {0, 20000000L * (retry + 1)};
        nanosleep(&pause, NULL);
        e = clattn__build(ctx, p, options);
    }
    if (e) {
        char log[CLATTN_MSG_SIZE - 512] = {0};
        clGetProgramBuildInfo(p, ctx->device, CL_PROGRAM_BUILD_LOG, sizeof log - 1, log, NULL);
        clattn__format(ctx->last_error, sizeof ctx->last_error,
                       "kernel build failed (%d) for %s [%s]:\n%s", e, name, options, log);
        clattn__release_program(ctx, p);
        return e == CL_BUILD_PROGRAM_FAILURE || e == CL_INVALID_BUILD_OPTIONS ? CLATTN_BUILD_FAILED : e;
    }
    *out = p;
    return CLATTN_SUCCESS;
}

clattn_status clattn__get_program(clattn_context *ctx, const char *file, const char *options, const char *name,
                                  cl_program *out)
{
    char key[768];
    clattn__format(key, sizeof key, "%s|%s", file, options);
    clattn_status st = CLATTN_SUCCESS;
    char *src = NULL;
    char logmsg[256] = "";

    /* The build happens under the lock: two threads asking for one variant get one build. */
    pthread_mutex_lock(&ctx->lock);
    for (clattn_program_entry *e = ctx->programs; e; e = e->next)
        if (!strcmp(e->key, key)) {
            ctx->stats.memory_hits++;
            *out = e->program;
            pthread_mutex_unlock(&ctx->lock);
            return CLATTN_SUCCESS;
        }
    clattn_program_entry *entry = clattn__calloc(ctx, 1, sizeof *entry);
    src = assemble_source(ctx, file);
    if (entry && (entry->key = clattn__calloc(ctx, strlen(key) + 1, 1))) memcpy(entry->key, key, strlen(key));
    if (!entry || !src || !entry->key) {
        /* a missing embedded source is a bug; anything else is an allocation that failed */
        st = clattn__find_source(file) ? CLATTN_OUT_OF_HOST_MEMORY : CLATTN_INTERNAL_ERROR;
        clattn__format(ctx->last_error, sizeof ctx->last_error, "cannot assemble source '%s'", file);
        goto done;
    }
    char path[1200] = "";
    if (ctx->cache_dir[0]) {
        cache_path(ctx, src, options, path, sizeof path);
        entry->program = load_binary(ctx, path, options);
    }
    if (entry->program) {
        ctx->stats.disk_hits++;
        clattn__format(logmsg, sizeof logmsg, "clattn: loaded %s from disk cache", name);
    } else {
        if ((st = build_from_source(ctx, src, options, name, &entry->program))) goto done;
        ctx->stats.source_builds++;
        clattn__format(logmsg, sizeof logmsg, "clattn: built %s from source", name);
        if (path[0] && store_binary(entry->program, path)) ctx->stats.disk_writes++;
    }
    entry->next = ctx->programs;
    ctx->programs = entry;
    *out = entry->program;
    entry = NULL;
done:
    pthread_mutex_unlock(&ctx->lock);
    if (entry) {
        free(entry->key);
        free(entry);
    }
    free(src);
    if (st && ctx->log) ctx->log(ctx->log_user, ctx->last_error);
    if (logmsg[0]) clattn__logf(ctx, "%s", logmsg);
    return st;
}

void clattn__release_programs(clattn_context *ctx)
{
    clattn_program_entry *e = ctx->programs;
    while (e) {
        clattn_program_entry *next = e->next;
        clattn__release_program(ctx, e->program);
        free(e->key);
        free(e);
        e = next;
    }
    ctx->programs = NULL;
}
