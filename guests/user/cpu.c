/* The CPU-bound workloads as user programs (same sources as the bench
 * images). */
#include "ulib.h"
#include "workloads.h"

static int run_workload(const struct workload *wl, int prog, const char *args)
{
    uint32_t iters = get_iters(args, prog);
    if (iters == 0)
        iters = wl->default_iters;
    uint64_t t0 = rdtsc();
    uint32_t chk = wl->run(iters);
    uint64_t t1 = rdtsc();
    report(wl->name, iters, chk, t1 - t0, iters);
    return 0;
}

int prog_sieve(const char *a) { return run_workload(&wl_sieve, PROG_sieve, a); }
int prog_crc32(const char *a) { return run_workload(&wl_crc32, PROG_crc32, a); }
int prog_matmul(const char *a) { return run_workload(&wl_matmul, PROG_matmul, a); }
int prog_qsort(const char *a) { return run_workload(&wl_qsort, PROG_qsort, a); }
int prog_strings(const char *a) { return run_workload(&wl_strings, PROG_strings, a); }
int prog_dhrystone(const char *a) { return run_workload(&wl_dhrystone, PROG_dhrystone, a); }
