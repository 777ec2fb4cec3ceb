/* Programs: a kernel file (with the common prelude) built for one option string, kept per
 * context and cached on disk as a binary, so that a new process does not recompile. */
#ifndef CLATTN_PROGRAM_H
#define CLATTN_PROGRAM_H

#include "internal.h"

/* Embedded kernel sources (generated at build time from kernels/<name>.cl). */
typedef struct clattn_embedded_source {
    const char *name;
    const unsigned char *data;
    size_t size;
} clattn_embedded_source;
CLATTN_HIDDEN extern const clattn_embedded_source clattn__sources[]; /* ends with a NULL name */
CLATTN_HIDDEN const clattn_embedded_source *clattn__find_source(const char *name);

/* The built program of kernels/<file>.cl for `options`: from the context's cache, the disk
 * cache, or built from source (once per context, under its lock). `name` says what it is in
 * messages and logs. CLATTN_BUILD_FAILED puts the build log in the context's last error. */
CLATTN_HIDDEN clattn_status clattn__get_program(clattn_context *ctx, const char *file, const char *options,
                                                const char *name, cl_program *out);
CLATTN_HIDDEN void clattn__release_programs(clattn_context *ctx);

#endif
