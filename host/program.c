/* Program cache: kernels are built lazily per variant (-D defines), kept per context under
 * its lock, and their binaries cached on disk so that a new process does not recompile
 * (PoCL takes seconds per variant; Criterion runs each test in its own process). Any disk
 * failure silently falls back to building from source. */
#include "fault.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Bump when the cache file layout or anything outside the key changes what a binary means. */
#define CACHE_FORMAT "clattn-program-cache-1"

extern const clattn_embedded_source clattn__sources[];

const clattn_embedded_source *clattn__find_source(const char *name)
{
    for (const clattn_embedded_source *s = clattn__sources; s->name; s++)
        if (!strcmp(s->name, name)) return s;
    return NULL;
}

/* The "common" prelude then the variant's file, each behind a #line so that build logs
 * name the real file and line. */
static char *assemble_source(clattn_context *ctx, const char *name)
{
    const clattn_embedded_source *common = clattn__find_source("common");
    const clattn_embedded_source *main = clattn__find_source(name);
    if (!common || !main) return NULL;
    size_t cap = common->size + main->size + 256;
    char *src = clattn__calloc(ctx, cap, 1);
    if (!src) return NULL;
    int n = snprintf(src, cap, "#line 1 \"kernels/common.cl\"\n%.*s\n#line 1 \"kernels/%s.cl\"\n",
                     (int)common->size, (const char *)common->data, name);
    if (n < 0 || (size_t)n >= cap - main->size) {
        free(src);
        return NULL;
    }
    memcpy(src + n, main->data, main->size);
    src[n + main->size] = '\0';
    return src;
}

/* FNV-1a over each part with a separator; two seeds give a 128-bit key. */
uint64_t clattn__fnv1a(uint64_t h, const char *s)
{
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 0x100000001b3ull;
    }
    h ^= 0xff;
    return h * 0x100000001b3ull;
}

static void cache_path(const clattn_context *ctx, const char *source, const char *options,
                       char *path, size_t size)
{
    const char *parts[] = {CACHE_FORMAT, clattn_version_string(), source, options,
                           ctx->info.name, ctx->info.vendor, ctx->info.driver,
                           ctx->info.version, ctx->info.platform_version};
    uint64_t a = 0xcbf29ce484222325ull, b = 0x84222325cbf29ce4ull;
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++) {
        a = clattn__fnv1a(a, parts[i]);
        b = clattn__fnv1a(b ^ (uint64_t)(i + 1), parts[i]);
    }
    clattn__format(path, size, "%s/%016llx%016llx.bin", ctx->cache_dir, (unsigned long long)a,
                   (unsigned long long)b);
}

void clattn__make_dirs(const char *dir)
{
    char tmp[1024];
    clattn__format(tmp, sizeof tmp, "%s", dir);
    for (char *p = tmp + 1; *p; p++)
        if (*p == '/') {
            *p = '\0';
            mkdir(tmp, 0755);
            *p = '/';
        }
    mkdir(tmp, 0755);
}

static unsigned char *read_file(const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    unsigned char *data = NULL;
    long n = -1;
    if (fseek(f, 0, SEEK_END) == 0) n = ftell(f);
    if (n > 0 && fseek(f, 0, SEEK_SET) == 0 && (data = malloc((size_t)n)) &&
        fread(data, 1, (size_t)n, f) != (size_t)n) {
        free(data);
        data = NULL;
    }
    fclose(f);
    *size = data ? (size_t)n : 0;
    return data;
}

static cl_program load_binary(clattn_context *ctx, const char *path, const char *options)
{
    size_t size = 0;
    unsigned char *bin = read_file(path, &size);
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

/* Writes to a temporary file and renames it, so a reader never sees half a binary. */
static bool store_binary(clattn_context *ctx, cl_program p, const char *path)
{
    size_t size = 0;
    if (clGetProgramInfo(p, CL_PROGRAM_BINARY_SIZES, sizeof size, &size, NULL) || size == 0)
        return false;
    unsigned char *bin = malloc(size);
    if (!bin) return false;
    unsigned char *bins[1] = {bin};
    bool ok = !clGetProgramInfo(p, CL_PROGRAM_BINARIES, sizeof bins, bins, NULL);
    if (ok) {
        clattn__make_dirs(ctx->cache_dir);
        char tmp[1200];
        clattn__format(tmp, sizeof tmp, "%s.%ld.%p.tmp", path, (long)getpid(), (void *)p);
        FILE *f = fopen(tmp, "wb");
        ok = f && fwrite(bin, 1, size, f) == size;
        if (f && fclose(f)) ok = false;
        if (ok && rename(tmp, path)) ok = false;
        if (!ok) remove(tmp);
    }
    free(bin);
    return ok;
}

static clattn_status build_from_source(clattn_context *ctx, const char *src, const clattn_variant *v,
                                       cl_program *out)
{
    cl_int e;
    cl_program p = clattn__program_from_source(ctx, src, &e);
    if (e) {
        clattn__format(ctx->last_error, sizeof ctx->last_error,
                       "clCreateProgramWithSource failed (%d) for %s", e, v->name);
        return e;
    }
    e = clattn__build(ctx, p, v->options);
    if (e) {
        char log[CLATTN_MSG_SIZE - 512] = {0};
        clGetProgramBuildInfo(p, ctx->device, CL_PROGRAM_BUILD_LOG, sizeof log - 1, log, NULL);
        clattn__format(ctx->last_error, sizeof ctx->last_error,
                       "kernel build failed (%d) for %s [%s]:\n%s", e, v->name, v->options, log);
        clattn__release_program(ctx, p);
        return e == CL_BUILD_PROGRAM_FAILURE || e == CL_INVALID_BUILD_OPTIONS ? CLATTN_BUILD_FAILED : e;
    }
    *out = p;
    return CLATTN_SUCCESS;
}

clattn_status clattn__get_program(clattn_context *ctx, const clattn_variant *v, cl_program *out)
{
    char key[768];
    clattn__format(key, sizeof key, "%s|%s", v->source_name, v->options);
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
    src = assemble_source(ctx, v->source_name);
    if (entry && (entry->key = clattn__calloc(ctx, strlen(key) + 1, 1))) memcpy(entry->key, key, strlen(key));
    if (!entry || !src || !entry->key) {
        /* a missing embedded source is a bug; anything else is an allocation that failed */
        st = clattn__find_source(v->source_name) ? CLATTN_OUT_OF_HOST_MEMORY : CLATTN_INTERNAL_ERROR;
        clattn__format(ctx->last_error, sizeof ctx->last_error, "cannot assemble source '%s'",
                       v->source_name);
        goto done;
    }
    char path[1200] = "";
    if (ctx->cache_dir[0]) {
        cache_path(ctx, src, v->options, path, sizeof path);
        entry->program = load_binary(ctx, path, v->options);
    }
    if (entry->program) {
        ctx->stats.disk_hits++;
        clattn__format(logmsg, sizeof logmsg, "clattn: loaded %s from disk cache", v->name);
    } else {
        if ((st = build_from_source(ctx, src, v, &entry->program))) goto done;
        ctx->stats.source_builds++;
        clattn__format(logmsg, sizeof logmsg, "clattn: built %s from source", v->name);
        if (path[0] && store_binary(ctx, entry->program, path)) ctx->stats.disk_writes++;
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
