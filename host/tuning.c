/* Tuning parameters: shape classes, the user's tuning file, the shipped defaults, lookup. */
#include "tuning.h"
#include "abi.h"
#include "diag.h"
#include "disk.h"
#include "shape.h"
#include "tuning_db.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TUNING_FORMAT "clattn-tuning 1"

static const char *class_names[2][4] = {
    {"prefill-d64", "prefill-d128", "prefill-d256", "prefill-d576"},
    {"decode-d64", "decode-d128", "decode-d256", "decode-d576"},
};

/* Decode: few query rows per sequence, where the keys dominate and splits matter. */
const char *clattn__tuning_class(const clattn_shape *s)
{
    const int d = s->head_dim > s->head_dim_v ? s->head_dim : s->head_dim_v;
    const int bucket = d <= 64 ? 0 : d <= 128 ? 1 : d <= 256 ? 2 : 3;
    return class_names[s->seq_q <= CLATTN_DECODE_MAX_ROWS][bucket];
}

const char *clattn_tuning_class(const clattn_desc *desc)
{
    clattn_shape s;
    char msg[256];
    if (clattn__resolve(desc, &s, msg, sizeof msg)) return NULL;
    return clattn__tuning_class(&s);
}

static void file_path(clattn_context *ctx)
{
    ctx->tuning_path[0] = '\0';
    if (!ctx->cache_dir[0]) return;
    /* clattn's version is part of the key: a new release's kernels are tuned afresh (until
     * then its shipped defaults serve) */
    const char *parts[] = {clattn_version_string(), ctx->info.name, ctx->info.vendor, ctx->info.driver,
                           ctx->info.version, ctx->info.platform_version};
    const clattn_digest d = clattn__digest(parts, sizeof parts / sizeof parts[0]);
    clattn__format(ctx->tuning_path, sizeof ctx->tuning_path, "%s/tuning-%016llx.txt", ctx->cache_dir,
                   (unsigned long long)d.hi);
}

/* Adds or replaces an entry (called with the lock held, or before the context is shared). A
 * preferred entry takes the preference of its class from any other family's. */
static bool put(clattn_context *ctx, clattn_kernel_family f, const char *cls, const clattn_tuning *t, bool preferred)
{
    if (preferred)
        for (int i = 0; i < ctx->n_tuned; i++)
            if (!strcmp(ctx->tuned[i].cls, cls)) ctx->tuned[i].preferred = false;
    for (int i = 0; i < ctx->n_tuned; i++)
        if (ctx->tuned[i].family == f && !strcmp(ctx->tuned[i].cls, cls)) {
            ctx->tuned[i].t = *t;
            ctx->tuned[i].preferred = ctx->tuned[i].preferred || preferred;
            return true;
        }
    clattn_tuned *n = realloc(ctx->tuned, sizeof *n * (size_t)(ctx->n_tuned + 1));
    if (!n) return false;
    ctx->tuned = n;
    n[ctx->n_tuned].family = f;
    clattn__format(n[ctx->n_tuned].cls, sizeof n[ctx->n_tuned].cls, "%s", cls);
    n[ctx->n_tuned].t = *t;
    n[ctx->n_tuned].preferred = preferred;
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
        int run = 0, longest = 0; /* a number past int's range would be undefined for sscanf's %d */
        for (const char *c = line; *c; c++) {
            run = *c >= '0' && *c <= '9' ? run + 1 : 0;
            if (run > longest) longest = run;
        }
        if (longest > 9) {
            clattn__logf(ctx, "clattn: %s:%d: a number out of range, skipped", ctx->tuning_path, lineno);
            continue;
        }
        char fam[16], cls[32], use[8] = "";
        clattn_tuning t = {0};
        /* "use" last: auto takes this family for the class (an older clattn ignores the word) */
        const int got = sscanf(line, "%15s %31s rows=%d keys=%d vw=%d group=%d split=%d tpr=%d %7s", fam, cls, &t.rows,
                               &t.keys, &t.vector_width, &t.group_size, &t.split_units, &t.threads_per_row, use);
        const clattn_family *family = got >= 7 ? clattn__family_by_name(fam) : NULL;
        if (!family || !known_class(cls)) {
            clattn__logf(ctx, "clattn: %s:%d: not a tuning line, skipped", ctx->tuning_path, lineno);
            continue;
        }
        char why[128];
        if (!family->valid(&ctx->info, &t, why, sizeof why)) {
            clattn__logf(ctx, "clattn: %s:%d: %s, skipped", ctx->tuning_path, lineno, why);
            continue;
        }
        put(ctx, family->id, cls, &t, !strcmp(use, "use"));
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

static const clattn_tuning *shipped(const clattn_context *ctx, const clattn_family *family, const char *cls,
                                    bool device_level)
{
    for (int i = 0; i < clattn__shipped_count; i++) {
        const clattn_shipped *e = &clattn__shipped[i];
        if (!e->cls || e->family != family->id || strcmp(e->cls, cls)) continue;
        if (device_level ? e->device && !strcmp(e->device, ctx->info.name)
                         : !e->device && e->vendor && strstr(ctx->info.vendor, e->vendor) && (e->type & ctx->info.type))
            return &e->t;
    }
    return NULL;
}

const char *clattn__tuning_lookup(clattn_context *ctx, const clattn_family *family, const clattn_shape *s,
                                  const clattn_tuning *given, clattn_tuning *out)
{
    const char *cls = clattn__tuning_class(s);
    const char *source = "generic";
    clattn_tuning found = {0};
    bool hit = false;
    pthread_mutex_lock(&ctx->lock);
    for (int i = 0; i < ctx->n_tuned && !hit; i++)
        if (ctx->tuned[i].family == family->id && !strcmp(ctx->tuned[i].cls, cls)) {
            found = ctx->tuned[i].t;
            hit = true;
            source = "user file";
        }
    pthread_mutex_unlock(&ctx->lock);
    const clattn_tuning *e;
    if (!hit && (e = shipped(ctx, family, cls, true))) found = *e, hit = true, source = "shipped (device)";
    if (!hit && (e = shipped(ctx, family, cls, false))) found = *e, hit = true, source = "shipped (vendor)";
    /* the generic values fill any field an entry leaves at zero; given fields win over all */
    *out = family->generic;
    overlay(out, &found);
    if (given && overlay(out, given)) source = "given";
    return source;
}

/* The whole table, rewritten atomically (disk.c): readers in other processes see the old
 * file or the new one, never half of it. Formatted from a snapshot taken under the lock, so no
 * error path runs with the lock held. */
static clattn_status write_file(clattn_context *ctx)
{
    pthread_mutex_lock(&ctx->lock);
    const int n = ctx->n_tuned;
    const size_t cap = 512 + (size_t)n * 160;
    char *text = malloc(cap);
    size_t len = 0;
    if (text) {
        clattn__format(text, cap, "# %s: device '%s' (%s), driver %s; written by clattn tune\n", TUNING_FORMAT,
                       ctx->info.name, ctx->info.vendor, ctx->info.driver);
        len = strlen(text);
        for (int i = 0; i < n; i++) {
            const clattn_tuned *e = &ctx->tuned[i];
            clattn__format(text + len, cap - len, "%s %s rows=%d keys=%d vw=%d group=%d split=%d tpr=%d%s\n",
                           clattn__family_by_id(e->family)->name, e->cls, e->t.rows, e->t.keys, e->t.vector_width,
                           e->t.group_size, e->t.split_units, e->t.threads_per_row, e->preferred ? " use" : "");
            len += strlen(text + len);
        }
    }
    pthread_mutex_unlock(&ctx->lock);
    if (!text) return clattn__fail(ctx, CLATTN_OUT_OF_HOST_MEMORY, "out of host memory writing the tuning file");
    const int err = clattn__write_atomic(ctx->tuning_path, text, len);
    free(text);
    if (err) return clattn__fail(ctx, CLATTN_IO_ERROR, "cannot write the tuning file %s: %s", ctx->tuning_path, strerror(err));
    return CLATTN_SUCCESS;
}

/* Stores the caller's parameters for the descriptor's class: for `given` (which must serve the
 * descriptor) and as the class's preferred family, or, with given NULL, for the family a plan of
 * the descriptor uses. In the context at once, in the user's file when the disk cache is on. */
static clattn_status store(clattn_context *ctx, const clattn_desc *desc, const clattn_tuning *caller,
                           const clattn_family *given)
{
    if (!desc || !caller) return clattn__fail(ctx, CLATTN_INVALID_ARGUMENT, "desc and tuning must not be NULL");
    clattn_shape s;
    char msg[512];
    clattn_status st = clattn__resolve(desc, &s, msg, sizeof msg);
    if (st) return clattn__fail(ctx, st, "%s", msg);
    clattn_tuning copy;
    if ((st = clattn__struct_in(&copy, sizeof copy, caller, "clattn_tuning", msg, sizeof msg)))
        return clattn__fail(ctx, st, "%s", msg);
    const clattn_family *family = given;
    if (given && !given->serves(&ctx->info, &s, msg, sizeof msg))
        return clattn__fail(ctx, CLATTN_UNSUPPORTED, "the %s family does not serve this descriptor: %s", given->name, msg);
    if (!given && !(family = clattn__tuning_pick_family(ctx, &s, msg, sizeof msg)))
        return clattn__fail(ctx, CLATTN_UNSUPPORTED, "no kernel family serves this descriptor: %s", msg);
    if (!family->valid(&ctx->info, &copy, msg, sizeof msg)) return clattn__fail(ctx, CLATTN_INVALID_ARGUMENT, "%s", msg);
    pthread_mutex_lock(&ctx->lock);
    st = put(ctx, family->id, clattn__tuning_class(&s), &copy, given != NULL) ? CLATTN_SUCCESS
                                                                             : CLATTN_OUT_OF_HOST_MEMORY;
    pthread_mutex_unlock(&ctx->lock);
    if (st) return clattn__fail(ctx, st, "out of host memory for a tuning entry");
    if (!ctx->tuning_path[0]) return CLATTN_SUCCESS;
    return write_file(ctx);
}

clattn_status clattn_tuning_store(clattn_context *ctx, const clattn_desc *desc, const clattn_tuning *caller)
{
    return ctx ? store(ctx, desc, caller, NULL) : CLATTN_INVALID_ARGUMENT;
}

const char *clattn_tuning_file(const clattn_context *ctx) { return ctx ? ctx->tuning_path : ""; }

clattn_status clattn_tuning_store_preferred(clattn_context *ctx, const clattn_desc *desc, clattn_kernel_family family,
                                            const clattn_tuning *caller)
{
    if (!ctx) return CLATTN_INVALID_ARGUMENT;
    const clattn_family *fam = clattn__family_by_id(family);
    if (!fam) return clattn__fail(ctx, CLATTN_INVALID_ARGUMENT, "kernel family %d is not one of clattn's", (int)family);
    return store(ctx, desc, caller, fam);
}

const clattn_family *clattn__tuning_pick_family(const clattn_context *ctx, const clattn_shape *s, char *why,
                                                size_t why_size)
{
    if (ctx->family == CLATTN_KERNELS_AUTO) {
        const char *cls = clattn__tuning_class(s);
        clattn_kernel_family preferred = CLATTN_KERNELS_AUTO;
        pthread_mutex_t *lock = (pthread_mutex_t *)&ctx->lock; /* the entries change under it; ctx does not */
        pthread_mutex_lock(lock);
        for (int i = 0; i < ctx->n_tuned; i++)
            if (ctx->tuned[i].preferred && !strcmp(ctx->tuned[i].cls, cls)) preferred = ctx->tuned[i].family;
        pthread_mutex_unlock(lock);
        const clattn_family *f = clattn__family_by_id(preferred);
        if (f && f->serves(&ctx->info, s, why, why_size)) return f;
    }
    return clattn__family_pick(ctx, s, why, why_size);
}
