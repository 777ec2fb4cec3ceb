/* Caller structs of any size (include/clattn.h, "Versioning and ABI"): every public function
 * that takes a struct by pointer copies it in through here first, and every one that fills a
 * struct writes it out through here, so no other code reads a caller's struct directly. */
#ifndef CLATTN_ABI_H
#define CLATTN_ABI_H

#include "internal.h"

/* Copies the caller's struct (its first member is struct_size) into *dst of dst_size bytes,
 * zeroing what the caller's struct lacks. Fails, with a message naming `name`, when
 * struct_size is unset or implausible, or when the caller set fields past what this library
 * knows. */
CLATTN_HIDDEN clattn_status clattn__struct_in(void *dst, size_t dst_size, const void *src, const char *name,
                                              char *msg, size_t msg_size);
/* Writes src (src_size bytes, its struct_size ignored) into the caller's *dst, no further
 * than dst->struct_size, keeping that size. */
CLATTN_HIDDEN clattn_status clattn__struct_out(void *dst, const void *src, size_t src_size, const char *name,
                                               char *msg, size_t msg_size);

#endif
