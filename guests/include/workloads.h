/* CPU-bound workloads shared by the user programs of the teaching kernel
 * and by the standalone bench images.  Each run(iters) is pure computation
 * (no system calls, no timing) and returns a 32-bit checksum that depends
 * only on iters, so it is identical on every platform.  tests/ recomputes
 * the checksums independently in Python. */
#ifndef RV_WORKLOADS_H
#define RV_WORKLOADS_H

#include <stdint.h>

struct workload {
    const char *name;
    uint32_t (*run)(uint32_t iters);
    uint32_t default_iters;   /* ~2 M instructions */
};

extern const struct workload wl_sieve, wl_crc32, wl_matmul, wl_qsort,
    wl_strings, wl_dhrystone;

/* Numerical Recipes LCG: the tests replay it in Python. */
static inline uint32_t lcg_next(uint32_t *state)
{
    *state = *state * 1664525u + 1013904223u;
    return *state;
}

/* Output lines, identical for the kernel's user programs and the bench
 * images: one untagged result line and one [timing] line. */
#define WL_RESULT_FMT "%s: iters=%u checksum=0x%08x\n"
#define WL_TIMING_FMT "[timing] %s: %llu cycles/op (iters=%u, cycles=%llu)\n"

#endif
