/* lmbench-style operating-system benchmarks. */
#include "ulib.h"

int prog_null(const char *args)
{
    uint32_t n = get_iters(args, PROG_null), chk = 0;
    int me = getpid();
    uint64_t t0 = rdtsc();
    for (uint32_t i = 0; i < n; i++)
        chk += getpid() == me;
    uint64_t t1 = rdtsc();
    report("null", n, chk, t1 - t0, n);
    return 0;
}

/* Two processes yield to each other n times each: 2n switches. */
int prog_ctxsw(const char *args)
{
    uint32_t n = get_iters(args, PROG_ctxsw), chk = 0;
    uint64_t t0 = rdtsc();
    int pid = fork();
    if (pid < 0) {
        printf("ctxsw: fork failed\n");
        return 1;
    }
    if (pid == 0) {
        for (uint32_t i = 0; i < n; i++)
            yield();
        exit(0);
    }
    for (uint32_t i = 0; i < n; i++)
        chk += yield() == 0;
    int status = -1;
    wait(&status);
    uint64_t t1 = rdtsc();
    chk += (uint32_t)status;
    report("ctxsw", n, chk, t1 - t0, 2 * n);
    return 0;
}

/* Process creation: fork, the child exits at once, the parent waits. */
int prog_forkwait(const char *args)
{
    uint32_t n = get_iters(args, PROG_forkwait), chk = 0;
    uint64_t t0 = rdtsc();
    for (uint32_t i = 0; i < n; i++) {
        int pid = fork();
        if (pid < 0) {
            printf("forkwait: fork failed\n");
            return 1;
        }
        if (pid == 0)
            exit((int)(i & 63));
        int status = -1;
        if (wait(&status) != pid)
            chk += 0x10000;
        chk += (uint32_t)status;
    }
    uint64_t t1 = rdtsc();
    report("forkwait", n, chk, t1 - t0, n);
    return 0;
}

/* Copy-on-write fault latency: after fork the parent writes to 16 pages
 * it shares with the child; each write faults (copy, or reuse if the
 * child has exited already).  Iterations are rounded up to whole rounds
 * of 16 pages; only the write loop is timed. */
#define COW_PAGES 16

int prog_pagefault(const char *args)
{
    uint32_t n = get_iters(args, PROG_pagefault);
    uint32_t rounds = (n + COW_PAGES - 1) / COW_PAGES, chk = 0;
    uint64_t cycles = 0;
    volatile uint32_t *base = sbrk(COW_PAGES * 4096);
    if (base == (volatile uint32_t *)-1) {
        printf("pagefault: sbrk failed\n");
        return 1;
    }
    for (uint32_t k = 0; k < COW_PAGES; k++)
        base[k * 1024] = k;
    for (uint32_t r = 0; r < rounds; r++) {
        int pid = fork();
        if (pid < 0) {
            printf("pagefault: fork failed\n");
            return 1;
        }
        if (pid == 0)
            exit(0);
        uint64_t t0 = rdtsc();
        for (uint32_t k = 0; k < COW_PAGES; k++)
            base[k * 1024] += 1;
        uint64_t t1 = rdtsc();
        cycles += t1 - t0;
        wait(0);
    }
    for (uint32_t k = 0; k < COW_PAGES; k++)
        chk += base[k * 1024];
    sbrk(-(int32_t)(COW_PAGES * 4096));
    report("pagefault", rounds * COW_PAGES, chk, cycles, rounds * COW_PAGES);
    return 0;
}
