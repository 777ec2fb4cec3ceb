/* Diagnostics: formatting, the context's last error and its log callback. */
#include "diag.h"

#include <stdio.h>

void clattn__vformat(char *buf, size_t size, const char *fmt, va_list ap)
{
    if (!buf || size == 0) return;
    int n = vsnprintf(buf, size, fmt, ap);
    if (n < 0) buf[0] = '\0';
}

void clattn__format(char *buf, size_t size, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    clattn__vformat(buf, size, fmt, ap);
    va_end(ap);
}

void clattn__set_error(clattn_context *ctx, const char *msg)
{
    if (!ctx) return;
    pthread_mutex_lock(&ctx->lock);
    clattn__format(ctx->last_error, sizeof ctx->last_error, "%s", msg);
    pthread_mutex_unlock(&ctx->lock);
    if (ctx->log) ctx->log(ctx->log_user, msg);
}

clattn_status clattn__fail(clattn_context *ctx, clattn_status st, const char *fmt, ...)
{
    char buf[CLATTN_MSG_SIZE];
    va_list ap;
    va_start(ap, fmt);
    clattn__vformat(buf, sizeof buf, fmt, ap);
    va_end(ap);
    clattn__set_error(ctx, buf);
    return st;
}

void clattn__logf(clattn_context *ctx, const char *fmt, ...)
{
    if (!ctx || !ctx->log) return;
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    clattn__vformat(buf, sizeof buf, fmt, ap);
    va_end(ap);
    ctx->log(ctx->log_user, buf);
}
