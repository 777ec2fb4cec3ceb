/* Tuning parameters of the fused kernels: shape classes, the user's tuning file (one per
 * device and driver, beside the kernel cache), the shipped defaults (tuning_db.c) and the
 * generic values, looked up in that order (as CLBlast's database falls back from device to
 * vendor to default). */
#include "tuning_db.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define TUNING_FORMAT "clattn-tuning 1"

static const char *class_names[2][4] = {
    {"prefill-d64", "prefill-d128", "prefill-d256", "prefill-d576"},
    {"decode-d64", "decode-d128", "decode-d256", "decode-d576"},
};

/* Decode: at most 16 query rows per sequence, where the keys dominate and splits matter. */
const char *clattn__tuning_class(const clattn_shape *s)
{
    const int d = s->head_dim > s->head_dim_v ? s->head_dim : s->head_dim_v;
    const int bucket = d <= 64 ? 0 : d <= 128 ? 1 : d <= 256 ? 2 : 3;
    return class_names[s->seq_q <= 16][bucket];
}

const char *clattn_tuning_class(const clattn_desc *desc)
{
    clattn_shape s;
    char msg[256];
    if (clattn__resolve(desc, &s, msg, sizeof msg)) return NULL;
    return clattn__tuning_class(&s);
}

static const char *family_name(clattn_kernel_family f) { return f == CLATTN_KERNELS_ROWS ? "rows" : "tiles"; }

/* Generic values: the first measurements on PoCL (rows) and a portable GPU shape (tiles). */
static clattn_tuning generic(clattn_kernel_family f)
{
    clattn_tuning t = {0};
    if (f == CLATTN_KERNELS_ROWS) t = (clattn_tuning){4, 16, 16, 8, 8, 1};
    else t = (clattn_tuning){64, 32, 4, 64, 8, 1};
    return t;
}

static bool pow2(int x) { return x > 0 && (x & (x - 1)) == 0; }

bool clattn__tuning_valid(const clattn_context *ctx, clattn_kernel_family family, const clattn_tuning *t, char *why,
                          size_t why_size)
{
    const bool rows = family == CLATTN_KERNELS_ROWS;
    /* rows: each work-item keeps rows x head dim of q and o in private memory */
    const int max_rows = rows ? 16 : (int)ctx->info.max_wg_size;
    if (t->rows < 0 || t->rows > max_rows || (!rows && t->rows && !pow2(t->rows)))
        clattn__format(why, why_size, "tuning rows %d outside 1..%d%s", t->rows, max_rows, rows ? "" : " (a power of 2)");
    else if (t->keys < 0 || t->keys > 64 || (t->keys && !pow2(t->keys)))
        clattn__format(why, why_size, "tuning keys %d is not a power of 2 up to 64", t->keys);
    else if (t->vector_width < 0 || t->vector_width > 16 || (t->vector_width && !pow2(t->vector_width)))
        clattn__format(why, why_size, "tuning vector_width %d is not 1, 2, 4, 8 or 16", t->vector_width);
    else if (t->group_size < 0 || (size_t)t->group_size > ctx->info.max_wg_size)
        clattn__format(why, why_size, "tuning group_size %d above the device's %zu work-items", t->group_size,
                       ctx->info.max_wg_size);
    else if (t->split_units < 0 || t->split_units > 256)
        clattn__format(why, why_size, "tuning split_units %d outside 0..256", t->split_units);
    else if (t->threads_per_row < 0 || t->threads_per_row > 8 || (t->threads_per_row && !pow2(t->threads_per_row)))
        clattn__format(why, why_size, "tuning threads_per_row %d is not 1, 2, 4 or 8", t->threads_per_row);
    else
        return true;
    return false;
}

static void file_path(clattn_context *ctx)
{
    ctx->tuning_path[0] = '\0';
    if (!ctx->cache_dir[0]) return;
    /* clattn's version is part of the key: a new release's kernels are tuned afresh (until
     * then its shipped defaults serve) */
    const char *parts[] = {clattn_version_string(), ctx->info.name, ctx->info.vendor, ctx->info.driver,
                           ctx->info.version, ctx->info.platform_version};
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++) h = clattn__fnv1a(h, parts[i]);
    clattn__format(ctx->tuning_path, sizeof ctx->tuning_path, "%s/tuning-%016llx.txt", ctx->cache_dir,
                   (unsigned long long)h);
}

/* Adds or replaces an entry (called with the lock held, or before the context is shared). */
static bool put(clattn_context *ctx, clattn_kernel_family f, const char *cls, const clattn_tuning *t)
{
    for (int i = 0; i < ctx->n_tuned; i++)
        if (ctx->tuned[i].family == f && !strcmp(ctx->tuned[i].cls, cls)) {
            ctx->tuned[i].t = *t;
            return true;
        }
    clattn_tuned *n = realloc(ctx->tuned, sizeof *n * (size_t)(ctx->n_tuned + 1));
    if (!n) return false;
    ctx->tuned = n;
    n[ctx->n_tuned].family = f;
    clattn__format(n[ctx->n_tuned].cls, sizeof n[ctx->n_tuned].cls, "%s", cls);
    n[ctx->n_tuned].t = *t;
    ctx->n_tuned++;
    return true;
}

static bool known_class(const char *cls)
{
    for (int p = 0; p < 2; p++)
        for (int b = 0; b < 4; b++)
            if (!strcmp(cls, class_names[p][b])) return true;
    return false;
}

/* Reads the user's file. A missing file is normal; a malformed line is skipped with a log
 * message (a file from a newer clattn must not break an older one). */
void clattn__tuning_load(clattn_context *ctx)
{
    file_path(ctx);
    if (!ctx->tuning_path[0]) return;
    FILE *f = fopen(ctx->tuning_path, "r");
    if (!f) return;
    char line[512];
    int lineno = 0;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        if (line[0] == '#' || line[0] == '\n') continue;
        char fam[16], cls[32];
        clattn_tuning t = {0};
        const int got = sscanf(line, "%15s %31s rows=%d keys=%d vw=%d group=%d split=%d tpr=%d", fam, cls, &t.rows,
                               &t.keys, &t.vector_width, &t.group_size, &t.split_units, &t.threads_per_row);
        if (got < 7 ||
            (strcmp(fam, "rows") && strcmp(fam, "tiles")) || !known_class(cls)) {
            clattn__logf(ctx, "clattn: %s:%d: not a tuning line, skipped", ctx->tuning_path, lineno);
            continue;
        }
        const clattn_kernel_family fam_id = !strcmp(fam, "rows") ? CLATTN_KERNELS_ROWS : CLATTN_KERNELS_TILES;
        char why[128];
        if (!clattn__tuning_valid(ctx, fam_id, &t, why, sizeof why)) {
            clattn__logf(ctx, "clattn: %s:%d: %s, skipped", ctx->tuning_path, lineno, why);
            continue;
        }
        put(ctx, fam_id, cls, &t);
    }
    fclose(f);
    clattn__logf(ctx, "clattn: %d tuning entries from %s", ctx->n_tuned, ctx->tuning_path);
}

void clattn__tuning_free(clattn_context *ctx)
{
    free(ctx->tuned);
    ctx->tuned = NULL;
    ctx->n_tuned = 0;
}

/* Copies src's nonzero fields over dst; true if there was any. */
static bool overlay(clattn_tuning *dst, const clattn_tuning *src)
{
    bool any = false;
    if (src->rows) dst->rows = src->rows, any = true;
    if (src->keys) dst->keys = src->keys, any = true;
    if (src->vector_width) dst->vector_width = src->vector_width, any = true;
    if (src->group_size) dst->group_size = src->group_size, any = true;
    if (src->split_units) dst->split_units = src->split_units, any = true;
    if (src->threads_per_row) dst->threads_per_row = src->threads_per_row, any = true;
    return any;
}

static const clattn_tuning *shipped(const clattn_context *ctx, const char *cls, bool device_level)
{
    for (int i = 0; i < clattn__shipped_count; i++) {
        const clattn_shipped *e = &clattn__shipped[i];
        if (!e->cls || e->family != ctx->family || strcmp(e->cls, cls)) continue;
        if (device_level ? e->device && !strcmp(e->device, ctx->info.name)
                         : !e->device && e->vendor && strstr(ctx->info.vendor, e->vendor) && (e->type & ctx->info.type))
            return &e->t;
    }
    return NULL;
}

const char *clattn__tuning_lookup(clattn_context *ctx, const clattn_shape *s, const clattn_tuning *given,
                                  clattn_tuning *out)
{
    const char *cls = clattn__tuning_class(s);
    const char *source = "generic";
    clattn_tuning found = {0};
    bool hit = false;
    pthread_mutex_lock(&ctx->lock);
    for (int i = 0; i < ctx->n_tuned && !hit; i++)
        if (ctx->tuned[i].family == ctx->family && !strcmp(ctx->tuned[i].cls, cls)) {
            found = ctx->tuned[i].t;
            hit = true;
            source = "user file";
        }
    pthread_mutex_unlock(&ctx->lock);
    const clattn_tuning *e;
    if (!hit && (e = shipped(ctx, cls, true))) found = *e, hit = true, source = "shipped (device)";
    if (!hit && (e = shipped(ctx, cls, false))) found = *e, hit = true, source = "shipped (vendor)";
    /* the generic values fill any field an entry leaves at zero; given fields win over all */
    *out = generic(ctx->family);
    overlay(out, &found);
    if (given && overlay(out, given)) source = "given";
    return source;
}

/* The whole table, rewritten through a temporary file and a rename: readers in other
 * processes see the old file or the new one, never half of it. Written from a snapshot taken
 * under the lock, so no error path runs with the lock held. */
static clattn_status write_file(clattn_context *ctx)
{
    pthread_mutex_lock(&ctx->lock);
    const int n = ctx->n_tuned;
    clattn_tuned *snap = malloc(sizeof *snap * (size_t)(n ? n : 1));
    if (snap) memcpy(snap, ctx->tuned, sizeof *snap * (size_t)n);
    pthread_mutex_unlock(&ctx->lock);
    if (!snap) return clattn__fail(ctx, CLATTN_OUT_OF_HOST_MEMORY, "out of host memory writing the tuning file");
    clattn__make_dirs(ctx->cache_dir);
    char tmp[1200];
    clattn__format(tmp, sizeof tmp, "%s.%ld.tmp", ctx->tuning_path, (long)getpid());
    FILE *f = fopen(tmp, "w");
    bool ok = f && fprintf(f, "# %s: device '%s' (%s), driver %s; written by clattn tune\n", TUNING_FORMAT,
                           ctx->info.name, ctx->info.vendor, ctx->info.driver) > 0;
    for (int i = 0; i < n && ok; i++) {
        const clattn_tuned *e = &snap[i];
        ok = fprintf(f, "%s %s rows=%d keys=%d vw=%d group=%d split=%d tpr=%d\n", family_name(e->family), e->cls,
                     e->t.rows, e->t.keys, e->t.vector_width, e->t.group_size, e->t.split_units,
                     e->t.threads_per_row) > 0;
    }
    free(snap);
    const int err = errno;
    if (f && fclose(f)) ok = false;
    if (ok && rename(tmp, ctx->tuning_path)) ok = false;
    if (!ok) {
        if (f) remove(tmp);
        return clattn__fail(ctx, CLATTN_IO_ERROR, "cannot write the tuning file %s: %s", ctx->tuning_path,
                            strerror(errno ? errno : err));
    }
    return CLATTN_SUCCESS;
}

clattn_status clattn_tuning_store(clattn_context *ctx, const clattn_desc *desc, const clattn_tuning *tuning)
{
    if (!ctx) return CLATTN_INVALID_ARGUMENT;
    if (!desc || !tuning) return clattn__fail(ctx, CLATTN_INVALID_ARGUMENT, "desc and tuning must not be NULL");
    clattn_shape s;
    char msg[512];
    clattn_status st = clattn__resolve(desc, &s, msg, sizeof msg);
    if (st) return clattn__fail(ctx, st, "%s", msg);
    if (!clattn__tuning_valid(ctx, ctx->family, tuning, msg, sizeof msg))
        return clattn__fail(ctx, CLATTN_INVALID_ARGUMENT, "%s", msg);
    pthread_mutex_lock(&ctx->lock);
    st = put(ctx, ctx->family, clattn__tuning_class(&s), tuning) ? CLATTN_SUCCESS : CLATTN_OUT_OF_HOST_MEMORY;
    pthread_mutex_unlock(&ctx->lock);
    if (st) return clattn__fail(ctx, st, "out of host memory for a tuning entry");
    if (!ctx->tuning_path[0]) return CLATTN_SUCCESS;
    return write_file(ctx);
}

const char *clattn_tuning_file(const clattn_context *ctx) { return ctx ? ctx->tuning_path : ""; }
