/* smap: CR4.SMAP and EFLAGS.AC -- ring 0 data accesses to a user page, STAC and
 * CLAC at ring 0 and ring 3, POPF of AC, fetches (which SMAP leaves alone, also as the
 * first access to a page, which a monitor's shadow fill must tell apart), and a
 * fault after an allowed access to the same page (no stale permission).  QEMU
 * runs it with -cpu qemu32,+smap (tests/hwtests.py); expected values are in
 * tests/test_hw_guests.py.
 */
#include "rt.h"

#define CR4_SMAP 0x200000u
#define EFLAGS_AC 0x40000u
#define USER_PAGE 0x00410000u
#define USER_CODE 0x00410800u          /* a "ret" in the same user page */
#define USER_CODE2 0x00411000u         /* a "ret" in a user page nothing reads first */

static u32 flags(void)
{
    u32 f;
    __asm__ volatile("pushfl; popl %0" : "=r"(f));
    return f;
}

static void u_stac(void) { __asm__ volatile(ARM(1f, 2f) "2: stac\n1:" ::: "memory"); }
static void u_clac(void) { __asm__ volatile(ARM(1f, 2f) "2: clac\n1:" ::: "memory"); }

static u32 seen;

static void touch(const char *label, int write)
{
    rt_expect_reset();
    if (write)
        __asm__ volatile(ARM(1f, 2f) "2: movl $0x5a5a0000, 0x410004\n1:" ::: "memory");
    else
        __asm__ volatile(ARM(1f, 2f) "2: movl 0x410004, %%eax\n1: movl %%eax, seen"
                         ::: "eax", "memory");
    report_exc(label);
}

static void fetch(const char *label, u32 code)
{
    rt_expect_reset();
    rt_mark = code;
    __asm__ volatile("movl $2f, rt_resume\n\t"
                     "call *%0\n2:" :: "r"(code) : "memory");
    if (rt_exc.count)
        __asm__ volatile("addl $4, %%esp" ::: "memory");
    report_exc(label);
}

int main(void)
{
    u32 a, b, c, d;
    volatile u32 *pt0 = (u32 *)PT0_ADDR;

    kprintf("smap: start\n");
    __asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(7), "c"(0));
    kprintf("cpuid leaf 7: smap=%u\n", (b >> 20) & 1);

    /* ring 3: both instructions are #UD whatever CR4.SMAP says */
    rt_expect_reset();
    rt_run_user(u_stac);
    report_exc("ring 3 stac");
    rt_expect_reset();
    rt_run_user(u_clac);
    report_exc("ring 3 clac");

    __asm__ volatile("stac" ::: "memory");
    kprintf("ring 0 stac: ac=%u\n", (flags() & EFLAGS_AC) != 0);
    __asm__ volatile("clac" ::: "memory");
    kprintf("ring 0 clac: ac=%u\n", (flags() & EFLAGS_AC) != 0);

    *(volatile u32 *)(USER_PAGE + 4) = 0x1234;
    *(volatile u8 *)USER_CODE = 0xc3;                 /* ret */
    *(volatile u8 *)USER_CODE2 = 0xc3;
    rt_paging_init();
    for (int i = 0; i < 1024; i++)
        pt0[i] &= ~PTE_U;                             /* the kernel: supervisor pages */
    PT1[0x10] = USER_PAGE | PTE_P | PTE_W | PTE_U;    /* two user pages */
    PT1[0x11] = USER_CODE2 | PTE_P | PTE_W | PTE_U;
    rt_paging_on(1);

    touch("smap=0 ac=0 read", 0);
    kprintf("read: 0x%x\n", seen);
    touch("smap=0 ac=0 write", 1);

    write_cr4(read_cr4() | CR4_SMAP);
    touch("smap=1 ac=0 read", 0);
    touch("smap=1 ac=0 write", 1);
    fetch("smap=1 ac=0 fetch", USER_CODE);
    fetch("smap=1 ac=0 fetch, first touch", USER_CODE2);
    __asm__ volatile("stac" ::: "memory");
    seen = 0;
    touch("smap=1 ac=1 read", 0);
    kprintf("read: 0x%x\n", seen);
    touch("smap=1 ac=1 write", 1);
    __asm__ volatile("clac" ::: "memory");
    /* the same page again, right after accesses that were allowed */
    touch("smap=1 ac=0 again read", 0);
    touch("smap=1 ac=0 again write", 1);
    /* POPF sets AC at ring 0 as STAC does */
    __asm__ volatile("pushfl; orl $0x40000, (%%esp); popfl" ::: "memory", "cc");
    touch("smap=1 popf ac=1 write", 1);
    __asm__ volatile("pushfl; andl $~0x40000, (%%esp); popfl" ::: "memory", "cc");
    touch("smap=1 popf ac=0 write", 1);
    write_cr4(read_cr4() & ~CR4_SMAP);
    touch("smap=0 ac=0 read again", 0);
    kprintf("read: 0x%x\n", seen);
    rt_paging_off();
    kprintf("smap: done\n");
    return 0;
}
