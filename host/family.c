/* The kernel family table, and the choice of a family for a plan. */
#include "family.h"
#include "diag.h"

#include <string.h>

#define FAMILY_ENTRY(n) &clattn__family_##n,
static const clattn_family *const families[] = {CLATTN_FAMILIES(FAMILY_ENTRY)};
#undef FAMILY_ENTRY
#define NFAMILIES ((int)(sizeof families / sizeof families[0]))

const clattn_family *clattn__family_at(int i) { return i >= 0 && i < NFAMILIES ? families[i] : NULL; }

const clattn_family *clattn__family_by_id(clattn_kernel_family id)
{
    for (int i = 0; i < NFAMILIES; i++)
        if (families[i]->id == id) return families[i];
    return NULL;
}

const clattn_family *clattn__family_by_name(const char *name)
{
    for (int i = 0; i < NFAMILIES; i++)
        if (!strcmp(families[i]->name, name)) return families[i];
    return NULL;
}

const clattn_family *clattn__family_default(const clattn_device_info *dev)
{
    for (int i = 0; i < NFAMILIES; i++)
        if (!families[i]->manual && (families[i]->default_for & dev->type)) return families[i];
    for (int i = NFAMILIES - 1; i > 0; i--) /* the last that auto may pick */
        if (!families[i]->manual) return families[i];
    return families[0];
}

const clattn_family *clattn__family_pick(const clattn_context *ctx, const clattn_shape *s, char *why,
                                         size_t why_size)
{
    if (ctx->family != CLATTN_KERNELS_AUTO) {
        const clattn_family *f = clattn__family_by_id(ctx->family);
        return f && f->serves(&ctx->info, s, why, why_size) ? f : NULL;
    }
    /* made for the device first, then the others: a GPU family may serve a CPU device */
    for (int pass = 0; pass < 2; pass++)
        for (int i = 0; i < NFAMILIES; i++) {
            const bool made_for = (families[i]->default_for & ctx->info.type) != 0;
            if (made_for == (pass == 0) && !families[i]->manual && families[i]->serves(&ctx->info, s, why, why_size))
                return families[i];
        }
    return NULL;
}
