/* Caller structs of any size. */
#include "abi.h"
#include "diag.h"

#include <string.h>

/* No struct of the API comes near this: a larger struct_size is garbage (an uninitialised
 * struct), not a newer header. */
#define STRUCT_SIZE_MAX 4096

static clattn_status size_of(const void *p, const char *name, size_t *size, char *msg, size_t msg_size)
{
    memcpy(size, p, sizeof *size);
    if (*size < sizeof(size_t) || *size > STRUCT_SIZE_MAX) {
        clattn__format(msg, msg_size, "%s.struct_size is %zu: initialise the struct with its _INIT macro "
                       "(it sets struct_size to sizeof(%s))", name, *size, name);
        return CLATTN_INVALID_ARGUMENT;
    }
    return CLATTN_SUCCESS;
}

clattn_status clattn__struct_in(void *dst, size_t dst_size, const void *src, const char *name, char *msg,
                                size_t msg_size)
{
    size_t size;
    clattn_status st = size_of(src, name, &size, msg, msg_size);
    if (st) return st;
    /* a newer header's fields this library does not know: harmless only while zero */
    for (size_t i = dst_size; i < size; i++)
        if (((const unsigned char *)src)[i]) {
            clattn__format(msg, msg_size, "%s has a field at byte %zu that this clattn (%s, %zu-byte %s) does not "
                           "know: the application was built against a newer header", name, i,
                           clattn_version_string(), dst_size, name);
            return CLATTN_UNSUPPORTED;
        }
    memset(dst, 0, dst_size);
    memcpy(dst, src, size < dst_size ? size : dst_size);
    memcpy(dst, &dst_size, sizeof dst_size); /* the library's copy is whole */
    return CLATTN_SUCCESS;
}

clattn_status clattn__struct_out(void *dst, const void *src, size_t src_size, const char *name, char *msg,
                                 size_t msg_size)
{
    size_t size;
    clattn_status st = size_of(dst, name, &size, msg, msg_size);
    if (st) return st;
    if (size > sizeof size) /* past struct_size: the fields, as many as the caller has */
        memcpy((unsigned char *)dst + sizeof size, (const unsigned char *)src + sizeof size,
               (size < src_size ? size : src_size) - sizeof size);
    if (size > src_size) memset((unsigned char *)dst + src_size, 0, size - src_size);
    return CLATTN_SUCCESS;
}
