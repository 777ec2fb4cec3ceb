/* Tuning parameters of the kernel families per device and shape class: the user's tuning file
 * (one per device and driver, beside the kernel cache), the shipped defaults (tuning_db.c),
 * then the family's generic values, looked up in that order (as CLBlast's database falls back
 * from device to vendor to default). */
#ifndef CLATTN_TUNING_H
#define CLATTN_TUNING_H

#include "family.h"

/* The shape class: "prefill-d64" .. "decode-d576" (static strings). */
CLATTN_HIDDEN const char *clattn__tuning_class(const clattn_shape *s);
/* Reads the user's file into the context (at creation); frees it (at destruction). */
CLATTN_HIDDEN void clattn__tuning_load(clattn_context *ctx);
CLATTN_HIDDEN void clattn__tuning_free(clattn_context *ctx);
/* Fills every field of *out for the shape and family on ctx: `given` fields (nonzero) first,
 * the rest from the most specific source; returns that source's name. */
CLATTN_HIDDEN const char *clattn__tuning_lookup(clattn_context *ctx, const clattn_family *family,
                                                const clattn_shape *s, const clattn_tuning *given,
                                                clattn_tuning *out);

/* The family a plan on ctx uses for the shape: the context's forced one; else, on auto, the
 * family stored as preferred for the shape's class if it serves the shape; else the family
 * table's choice (clattn__family_pick). NULL, with why, when none serves. */
CLATTN_HIDDEN const clattn_family *clattn__tuning_pick_family(const clattn_context *ctx, const clattn_shape *s, char *why,
                                                             size_t why_size);

#endif
