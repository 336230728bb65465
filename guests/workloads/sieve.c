/* Sieve of Eratosthenes.  Iteration i sieves [2, n] with
 * n = 4096 + 256 * (i % 16) and folds the prime count and the sum of the
 * primes into the checksum: chk = chk * 31 + count * 65537 + sum. */
#include "workloads.h"

#define SIEVE_MAX (4096 + 256 * 15)

static uint8_t sieve_flags[SIEVE_MAX + 1];

static uint32_t sieve_run(uint32_t iters)
{
    uint32_t chk = 0;
    for (uint32_t it = 0; it < iters; it++) {
        uint32_t n = 4096 + 256 * (it % 16);
        uint32_t count = 0, sum = 0;
        for (uint32_t i = 2; i <= n; i++)
            sieve_flags[i] = 1;
        for (uint32_t i = 2; i <= n; i++) {
            if (!sieve_flags[i])
                continue;
            count++;
            sum += i;
            for (uint32_t j = i * i; j <= n; j += i)
                sieve_flags[j] = 0;
        }
        chk = chk * 31 + count * 65537 + sum;
    }
    return chk;
}

const struct workload wl_sieve = { "sieve", sieve_run, 20 };
