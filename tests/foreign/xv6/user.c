/* xv6's user programs, linked at 0x1000 (xv6.ld's .user) and copied into each
 * process: nothing here may touch the kernel's pages (no string literals, no
 * library calls), as a user program cannot. */
#include "frt.h"

#define UTEXT __attribute__((section(".utext"), noinline))
#define USTACKTOP 0x100000u

#define SYSCALL(n, arg) ({ uint32_t r_; \
    asm volatile("int $64" : "=a"(r_) : "a"(n), "b"(arg) : "memory"); r_; })
#define report(v) SYSCALL(1, (v))
#define yield() SYSCALL(2, 0)
#define exit(c) SYSCALL(3, (c))
/* the fast call by SYSENTER: EDX = where SYSEXIT resumes, ECX = the stack */
#define fast_getpid() ({ uint32_t r_; \
    asm volatile("movl %%esp, %%ecx\n\tmovl $1f, %%edx\n\tsysenter\n1:" \
                 : "=a"(r_) : "a"(1) : "ecx", "edx", "memory"); r_; })

UTEXT void uprog_count(void)
{
    uint32_t s = 0;
    for (uint32_t i = 1; i <= 30000; i++) {
        s = s * 31 + (i ^ (i >> 3));
        if ((i & 0x1fff) == 0)
            yield();
    }
    report(s);
    report(fast_getpid());
    exit(0);
}

/* x87 sums kept in the FPU's registers across yields and preemptions; the second
 * instance rounds toward zero (its own control word) */
UTEXT void uprog_fpu(void)
{
    uint32_t pid = fast_getpid();
    uint16_t cw;
    int32_t k, part, seven = 7;
    uint32_t h = 0;
    asm volatile("fninit");
    if (pid == 300) {
        asm volatile("fnstcw %0" : "=m"(cw));
        cw |= 0xc00;                                /* RC = toward zero */
        asm volatile("fldcw %0" :: "m"(cw));
    }
    for (int round = 0; round < 12; round++) {
        asm volatile("fldz" ::: "memory");
        for (k = 1; k <= 1500; k++) {
            asm volatile("fildl %0\n\tfmul %%st(0), %%st(0)\n\tfaddp %%st(0), %%st(1)"
                         :: "m"(k) : "memory");
            if ((k & 0x1ff) == 0)
                yield();
        }
        asm volatile("fildl %1\n\tfdivrp %%st(0), %%st(1)\n\tfistpl %0"
                     : "=m"(part) : "m"(seven) : "memory");   /* (sum of k^2) / 7 */
        h = h * 33 + (uint32_t)part + round;
    }
    asm volatile("fnstcw %0" : "=m"(cw));
    report(h);
    report(cw);
    exit(0);
}

UTEXT void uprog_grow(void)
{
    uint32_t s = 0;
    for (uint32_t k = 2; k <= 6; k++)               /* five pages below the first */
        *(volatile uint32_t *)(USTACKTOP - k * 4096 + 8) = k * k;
    for (uint32_t k = 2; k <= 6; k++)
        s += *(volatile uint32_t *)(USTACKTOP - k * 4096 + 8);
    asm volatile("int3");
    report(s);
    uint32_t q, zero = 0;
    asm volatile("divl %2" : "=a"(q) : "a"(1), "r"(zero), "d"(0));
    report(q);                                      /* (never: #DE kills it) */
    exit(0);
}

UTEXT void uprog_bad(void)
{
    report(fast_getpid());
    *(volatile uint32_t *)(void *)uprog_bad = 0;    /* its code is read-only */
    exit(0);
}
