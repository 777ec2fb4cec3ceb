/* libFuzzer target: the .npy parser of `clattn run` on arbitrary bytes must return a status,
 * never crash or read out of bounds, and a parsed array must hold exactly its declared size. */
#include "npy.h"

#include <stdint.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    npy_array a;
    char err[256];
    if (npy_parse(data, size, &a, err, sizeof err) == 0) {
        size_t n = 1;
        for (int i = 0; i < a.ndim; i++) n *= (size_t)a.shape[i];
        if (n != a.count) abort();
        volatile unsigned char sink = 0;
        for (size_t i = 0; i < a.count * npy_type_size(a.type); i++) sink ^= ((unsigned char *)a.data)[i];
        (void)sink;
        npy_free(&a);
    }
    return 0;
}
