/* Nanobenchmarks after Adams & Agesen (ASPLOS 2006).
 *
 * syscall, callret, pgfault and divzero run in user mode.  in, crwr and
 * ptemod are privileged, so one system call (kbench) runs N of them in a
 * kernel-mode loop and reports the loop's own cycles. */
#include "ulib.h"

/* callret: call + ret of an empty leaf (5 instructions per iteration). */
uint32_t callret_loop(uint32_t n);
__asm__(".text\n"
        "callret_leaf:\n"
        "    incl %eax\n"
        "    ret\n"
        ".globl callret_loop\n"
        "callret_loop:\n"
        "    movl 4(%esp), %ecx\n"
        "    xorl %eax, %eax\n"
        "    testl %ecx, %ecx\n"
        "    jz 2f\n"
        "1:  call callret_leaf\n"
        "    decl %ecx\n"
        "    jnz 1b\n"
        "2:  ret\n");

/* divzero: divl %ecx (2 bytes, F7 F1) with ecx = 0.  The kernel delivers
 * the #DE to divz_handler, which counts it and resumes after the div. */
uint32_t divz_loop(uint32_t n);
void divz_handler(void);
volatile uint32_t divz_count;
__asm__(".text\n"
        ".globl divz_loop\n"
        "divz_loop:\n"
        "    pushl %ebx\n"
        "    movl 8(%esp), %ebx\n"
        "    testl %ebx, %ebx\n"
        "    jz 2f\n"
        "1:  xorl %edx, %edx\n"
        "    movl $1, %eax\n"
        "    xorl %ecx, %ecx\n"
        "    .byte 0xF7, 0xF1\n"            /* divl %ecx */
        "    decl %ebx\n"
        "    jnz 1b\n"
        "2:  movl divz_count, %eax\n"
        "    popl %ebx\n"
        "    ret\n"
        ".globl divz_handler\n"
        "divz_handler:\n"                  /* [esp] vector, cr2, eip */
        "    incl divz_count\n"
        "    addl $2, 8(%esp)\n"
        "    leal 8(%esp), %esp\n"
        "    ret\n");

int prog_syscall(const char *args)
{
    uint32_t n = get_iters(args, PROG_syscall), chk = 0;
    uint64_t t0 = rdtsc();
    for (uint32_t i = 0; i < n; i++)
        chk += (uint32_t)syscall3(SYS_nop, 0, 0, 0) + 1;
    uint64_t t1 = rdtsc();
    report("syscall", n, chk, t1 - t0, n);
    return 0;
}

static int kernel_loop(const char *name, uint32_t op, int prog, const char *args)
{
    uint32_t n = get_iters(args, prog);
    uint64_t cycles = 0;
    int32_t chk = kbench(op, n, &cycles);
    report(name, n, (uint32_t)chk, cycles, n);
    return 0;
}

int prog_in(const char *args)
{
    return kernel_loop("in", KB_IN, PROG_in, args);
}

int prog_crwr(const char *args)
{
    return kernel_loop("crwr", KB_CRWR, PROG_crwr, args);
}

int prog_ptemod(const char *args)
{
    return kernel_loop("ptemod", KB_PTEMOD, PROG_ptemod, args);
}

int prog_callret(const char *args)
{
    uint32_t n = get_iters(args, PROG_callret);
    uint64_t t0 = rdtsc();
    uint32_t chk = callret_loop(n);
    uint64_t t1 = rdtsc();
    report("callret", n, chk, t1 - t0, n);
    return 0;
}

#define PGF_PAGES 16

int prog_pgfault(const char *args)
{
    uint32_t n = get_iters(args, PROG_pgfault), chk = 0;
    char *base = 0;
    uint64_t t0 = rdtsc();
    for (uint32_t i = 0; i < n; i++) {
        uint32_t k = i % PGF_PAGES;
        if (k == 0) {
            if (base)
                sbrk(-(int32_t)(PGF_PAGES * 4096));
            base = sbrk(PGF_PAGES * 4096);
            if (base == (char *)-1) {
                printf("pgfault: sbrk failed\n");
                return 1;
            }
        }
        volatile uint32_t *p = (volatile uint32_t *)(base + k * 4096 + (i & 1023) * 4);
        chk += *p == 0;           /* demand-zero fault on the read */
        *p = i;
    }
    uint64_t t1 = rdtsc();
    if (base)
        sbrk(-(int32_t)(PGF_PAGES * 4096));
    report("pgfault", n, chk, t1 - t0, n);
    return 0;
}

int prog_divzero(const char *args)
{
    uint32_t n = get_iters(args, PROG_divzero);
    divz_count = 0;
    set_fault_handler(divz_handler);
    uint64_t t0 = rdtsc();
    uint32_t chk = divz_loop(n);
    uint64_t t1 = rdtsc();
    set_fault_handler(0);
    report("divzero", n, chk, t1 - t0, n);
    return 0;
}
