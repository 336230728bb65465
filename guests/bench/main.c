/* Standalone bench image: runs one workload (chosen at build time with
 * -DBENCH_WORKLOAD=wl_NAME) iters=N times, N from the Multiboot command
 * line, prints the checksum line and a [timing] line on COM1, and exits
 * through isa-debug-exit with 0 (QEMU status 1). */
#include "standalone.h"
#include "workloads.h"

#ifndef BENCH_WORKLOAD
#error "build with -DBENCH_WORKLOAD=wl_<name>"
#endif
extern const struct workload BENCH_WORKLOAD;

struct mb_info {
    uint32_t flags, mem_lower, mem_upper, boot_device, cmdline;
};

static inline uint64_t rdtsc(void)
{
    uint32_t lo, hi;
    __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
    return ((uint64_t)hi << 32) | lo;
}

void bench_main(uint32_t magic, const struct mb_info *mbi)
{
    const struct workload *wl = &BENCH_WORKLOAD;
    uint32_t iters = wl->default_iters;

    serial_init();

    if (magic != 0x2BADB002u) {
        print("%s: not started by a Multiboot loader\n", wl->name);
        finish(0x11);
    }
    char val[16];
    if ((mbi->flags & 4) && mbi->cmdline &&
        cmdline_get((const char *)mbi->cmdline, "iters", val, sizeof(val))) {
        const char *end;
        iters = parse_u32(val, &end);
        if (*end || iters == 0) {
            print("%s: bad iters=%s\n", wl->name, val);
            finish(0x02);
        }
    }
    uint64_t t0 = rdtsc();
    uint32_t chk = wl->run(iters);
    uint64_t t1 = rdtsc();
    print(WL_RESULT_FMT, wl->name, iters, chk);
    print(WL_TIMING_FMT, wl->name, (t1 - t0) / iters, iters, t1 - t0);
    finish(0);
}
