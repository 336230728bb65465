/* An instruction that straddles two pages, run again after either page is
 * remapped.
 *
 * `mov $imm32, %eax` starts 3 bytes before the end of linear page L1, so two
 * bytes of its immediate come from page L2 (a `ret` follows them there).  The
 * fetch translates both linear addresses every time (SDM Vol. 3 §4.10.2: after
 * INVLPG or a CR3 load no stale translation of that page may be used), so the
 * new bytes run after a remap, and when L2 is unmapped the instruction itself
 * raises #PF with CR2 = L2 (the fetch of its second part), not the one after. */
#include "rt.h"

#define L1 0x00400000u                  /* PT1[0], PT1[1]: linear 4 MiB + 0/4 KiB */
#define L2 0x00401000u
#define F1  0x00800000u                 /* frames (identity mapped by 4 MiB pages) */
#define F1B 0x00801000u
#define F2A 0x00802000u
#define F2B 0x00803000u
#define PD2 ((volatile u32 *)0x00305000u)     /* a second address space */
#define PT1B ((volatile u32 *)0x00306000u)

static void put_code(u32 f1, u8 b0, u8 b1)
{
    volatile u8 *p = (volatile u8 *)f1;
    p[0xffd] = 0xb8;                    /* mov $imm32, %eax */
    p[0xffe] = b0;
    p[0xfff] = b1;
}

static void put_tail(u32 f2, u8 b2, u8 b3)
{
    volatile u8 *p = (volatile u8 *)f2;
    p[0] = b2;
    p[1] = b3;
    p[2] = 0xc3;                        /* ret */
}

/* Call the straddling instruction; a #PF resumes after the call. */
static u32 run(const char *what)
{
    u32 eax = 0;
    rt_expect_reset();
    __asm__ volatile("movl $1f, rt_resume\n\t"
                     "movl %1, rt_mark\n\t"
                     "call *%1\n\t"
                     "jmp 2f\n"
                     "1:\taddl $4, %%esp\n"     /* the faulting call's return address */
                     "2:\tmovl $0, rt_resume"
                     : "=a"(eax) : "r"(L1 + 0xffd), "a"(0) : "memory", "cc");
    if (rt_exc.count)
        report_exc(what);
    else
        kprintf("%s: eax=0x%08x\n", what, eax);
    return eax;
}

static void set_pte(volatile u32 *pt, int i, u32 frame)
{
    pt[i] = frame ? frame | PTE_P | PTE_W : 0;
}

int main(void)
{
    kprintf("straddle: start\n");
    put_code(F1, 0x11, 0x22);
    put_code(F1B, 0x55, 0x66);
    put_tail(F2A, 0xa2, 0xa3);
    put_tail(F2B, 0xb2, 0xb3);
    rt_paging_init();
    set_pte(PT1, 0, F1);
    set_pte(PT1, 1, F2A);
    for (int i = 0; i < 1024; i++)
        PD2[i] = PD[i];
    PD2[1] = (u32)PT1B | PTE_P | PTE_W;
    for (int i = 0; i < 1024; i++)
        PT1B[i] = 0;
    set_pte(PT1B, 0, F1);
    set_pte(PT1B, 1, F2B);
    rt_paging_on(0);

    run("first run");
    run("second run");
    run("third run");

    set_pte(PT1, 1, F2B);               /* remap the second page */
    invlpg(L2);
    run("second page remapped, invlpg");

    set_pte(PT1, 0, F1B);               /* remap the first page */
    invlpg(L1);
    run("first page remapped, invlpg");
    set_pte(PT1, 0, F1);
    invlpg(L1);
    set_pte(PT1, 1, F2A);
    invlpg(L2);
    run("both back, invlpg");

    write_cr3((u32)PD2);                /* L2 -> F2B in the other address space */
    run("cr3 switched");
    write_cr3(PD_ADDR);
    run("cr3 switched back");

    set_pte(PT1, 1, 0);                 /* unmap the second page */
    invlpg(L2);
    run("second page unmapped");
    set_pte(PT1, 1, F2B);
    invlpg(L2);
    run("mapped again");

    set_pte(PT1, 0, 0);                 /* unmap the first page */
    invlpg(L1);
    run("first page unmapped");

    rt_paging_off();
    kprintf("straddle: done\n");
    return 0;
}
