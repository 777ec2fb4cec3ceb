/* Seeded, reproducible random inputs (splitmix64), shared by the program and the tests. */
#ifndef CLATTN_RNG_H
#define CLATTN_RNG_H

#include <stddef.h>
#include <stdint.h>

static inline uint64_t clattn_rng_next(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Uniform in [-1, 1). */
static inline float clattn_rng_uniform(uint64_t *state)
{
    return (float)((double)(clattn_rng_next(state) >> 11) * (2.0 / 9007199254740992.0) - 1.0);
}

static inline void clattn_rng_fill(float *x, size_t n, uint64_t *state, float amplitude)
{
    for (size_t i = 0; i < n; i++) x[i] = amplitude * clattn_rng_uniform(state);
}

#endif
