/* Diagnostics: formatting, the context's last error and its log callback. The lowest layer:
 * every other module reports through it, and it calls none of them. */
#ifndef CLATTN_DIAG_H
#define CLATTN_DIAG_H

#include "internal.h"

#include <stdarg.h>

/* snprintf that never fails the caller: a formatting error leaves "". */
CLATTN_HIDDEN void clattn__vformat(char *buf, size_t size, const char *fmt, va_list ap);
CLATTN_HIDDEN void clattn__format(char *buf, size_t size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Records a message as the context's last error (under its lock), passes it to the log
 * callback, and returns `st`: `return clattn__fail(ctx, CLATTN_..., "what: %d", x);`. */
CLATTN_HIDDEN clattn_status clattn__fail(clattn_context *ctx, clattn_status st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
CLATTN_HIDDEN void clattn__set_error(clattn_context *ctx, const char *msg);
/* A diagnostic for the log callback only (no error). */
CLATTN_HIDDEN void clattn__logf(clattn_context *ctx, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#endif
