/* Paths: the implementations a plan can take. Each is one file that fills one table; plan.c
 * walks the list below in order and the first path that supports the descriptor serves it
 * (or the one the descriptor forces). A path keeps what it needs in its own state behind
 * plan->state; nothing outside its file knows its fields. DESIGN.md, "Adding a path", shows
 * a new one. */
#ifndef CLATTN_PATH_H
#define CLATTN_PATH_H

#include "internal.h"

/* One execution as plan.c hands it to a path: every buffer already checked (present, in the
 * context, large enough), the scratch allocated, the plan's lock held. */
typedef struct clattn_launch {
    cl_command_queue queue;
    const clattn_buffers *buffers;
    cl_mem scratch; /* plan->scratch_bytes bytes (the caller's or the plan's); NULL when 0 */
    cl_uint num_wait;
    const cl_event *wait;
    cl_event *event; /* may be NULL; else one event that covers every command enqueued */
} clattn_launch;

typedef struct clattn_path {
    const char *name;  /* "fused", "unfused backward": in reasons and messages */
    clattn_algo algo;  /* the descriptor's value that forces this path */
    clattn_pass pass;  /* the pass it computes: plan.c offers it only descriptors of that pass */
    /* Whether the path serves the shape on the context; `why` either way (for the reason). */
    bool (*supports)(const clattn_context *ctx, const clattn_shape *s, char *why, size_t why_size);
    /* Chooses the variant: sets plan->variant, plan->scratch_bytes (and plan->tuning with its
     * source when the path has parameters) and its own plan->state. Creates no OpenCL object,
     * so plan.c can refuse the variant (its scratch) before anything is built. `given`: the
     * caller's parameters (clattn_plan_create_tuned), or NULL. */
    clattn_status (*prepare)(clattn_plan *plan, const clattn_tuning *given);
    /* Builds the programs and creates the kernels the variant needs. */
    clattn_status (*build)(clattn_plan *plan);
    /* Sets the arguments and enqueues everything after l->wait. */
    clattn_status (*enqueue)(const clattn_plan *plan, const clattn_launch *l);
    /* Releases plan->state and what it holds, however far prepare and build got (NULL is fine). */
    void (*release)(clattn_plan *plan);
} clattn_path;

/* The paths in the order plan creation tries them; one line per path, one file each
 * (path_<name>.c defining clattn__path_<name>). */
#define CLATTN_PATHS(X) \
    X(fused)            \
    X(unfused)          \
    X(fused_backward)   \
    X(unfused_backward)
#define CLATTN_DECLARE_PATH(n) CLATTN_HIDDEN extern const clattn_path clattn__path_##n;
CLATTN_PATHS(CLATTN_DECLARE_PATH)
#undef CLATTN_DECLARE_PATH

#endif
