/* cpufeat: CPUID leaf 7 and 80000001H, CR4.UMIP, CR4.SMEP, RDTSCP with IA32_TSC_AUX.
 * QEMU runs it with -cpu qemu32,+smep,+umip,+rdtscp (tests/hwtests.py).  Saved EIPs
 * are relative to the instruction under test; expected values are in
 * tests/test_hw_guests.py.
 */
#include "rt.h"

#define CR4_UMIP 0x800u
#define CR4_SMEP 0x100000u
#define MSR_TSC_AUX 0xc0000103u

struct __attribute__((packed)) dtr {
    u16 limit;
    u32 base;
};

static void cpuid(u32 leaf, u32 sub, u32 *a, u32 *b, u32 *c, u32 *d)
{
    __asm__ volatile("cpuid" : "=a"(*a), "=b"(*b), "=c"(*c), "=d"(*d) : "a"(leaf), "c"(sub));
}

static struct dtr u_gdtr;
static volatile u32 u_msw;

static void u_sgdt(void) { __asm__ volatile(ARM(1f, 2f) "2: sgdt %0\n1:" : "=m"(u_gdtr) :: "memory"); }
static void u_sidt(void) { __asm__ volatile(ARM(1f, 2f) "2: sidt %0\n1:" : "=m"(u_gdtr) :: "memory"); }
static void u_smsw(void) { __asm__ volatile(ARM(1f, 2f) "2: smsw %%eax\n1: movl %%eax, u_msw" ::: "eax", "memory"); }
static void u_str(void) { __asm__ volatile(ARM(1f, 2f) "2: str %%eax\n1:" ::: "eax", "memory"); }
static void u_sldt(void) { __asm__ volatile(ARM(1f, 2f) "2: sldt %%eax\n1:" ::: "eax", "memory"); }

static void t_umip(void)
{
    static const struct { const char *name; void (*fn)(void); } tests[] = {
        { "sgdt", u_sgdt }, { "sidt", u_sidt }, { "smsw", u_smsw }, { "str", u_str },
        { "sldt", u_sldt } };
    for (int umip = 0; umip < 2; umip++) {
        write_cr4(umip ? read_cr4() | CR4_UMIP : read_cr4() & ~CR4_UMIP);
        for (u32 i = 0; i < 5; i++) {
            char label[32] = "umip=0 ring 3 ";
            label[5] = (char)('0' + umip);
            memcpy(label + 14, tests[i].name, 5);
            rt_expect_reset();
            rt_run_user(tests[i].fn);
            report_exc(label);
        }
        struct dtr d;
        rt_expect_reset();
        __asm__ volatile(ARM(1f, 2f) "2: sgdt %0\n1:" : "=m"(d) :: "memory");
        kprintf("umip=%d ring 0 sgdt: %s base=0x%x\n", umip,
                rt_exc.count ? "fault" : "no exception", d.base);
    }
    write_cr4(read_cr4() & ~CR4_UMIP);
}

#define USER_PAGE 0x00410000u
#define KERNEL_CODE_PAGE 0x00411000u

static void t_smep(void)
{
    volatile u32 *pt0 = (u32 *)PT0_ADDR;
    *(volatile u8 *)USER_PAGE = 0xc3;            /* ret */
    rt_paging_init();
    for (int i = 0; i < 1024; i++)
        pt0[i] &= ~PTE_U;                           /* the kernel: supervisor pages */
    PT1[0x10] = USER_PAGE | PTE_P | PTE_W | PTE_U;  /* one user page holding code */
    rt_paging_on(0);
    for (int smep = 0; smep < 2; smep++) {
        write_cr4(smep ? read_cr4() | CR4_SMEP : read_cr4() & ~CR4_SMEP);
        rt_expect_reset();
        __asm__ volatile("movl $2f, rt_resume\n\tmovl $0x410000, rt_mark\n\t"
                         "call *%0\n2:" :: "r"(USER_PAGE) : "memory");
        if (rt_exc.count)    /* the fault left a return address on the stack */
            __asm__ volatile("addl $4, %%esp" ::: "memory");
        report_exc(smep ? "smep=1 ring 0 fetch from a user page" : "smep=0 ring 0 fetch from a user page");
        u32 v = *(volatile u32 *)USER_PAGE;
        kprintf("smep=%d ring 0 read of a user page: 0x%x\n", smep, v & 0xff);
    }
    /* A kernel page that becomes a user page: after INVLPG the next fetch uses the new
     * entry (SDM Vol. 3 4.10.4.1), so under SMEP the same call now faults; made a
     * supervisor page again, it runs again.  (A monitor that translated the code
     * must notice the U bit, not only the frame.) */
    PT1[0x11] = KERNEL_CODE_PAGE | PTE_P | PTE_W;
    __asm__ volatile("invlpg (%0)" :: "r"(KERNEL_CODE_PAGE) : "memory");
    *(volatile u8 *)KERNEL_CODE_PAGE = 0xc3;        /* ret */
    static const char *const what[4] = {
        "smep=1 ring 0 fetch from a supervisor page",
        "smep=1 ring 0 fetch after the page became a user page",
        "smep=1 ring 0 fetch after the page went away",
        "smep=1 ring 0 fetch from a supervisor page" };
    for (int step = 0; step < 4; step++) {
        PT1[0x11] = step == 2 ? 0 : KERNEL_CODE_PAGE | PTE_P | PTE_W | (step == 1 ? PTE_U : 0);
        __asm__ volatile("invlpg (%0)" :: "r"(KERNEL_CODE_PAGE) : "memory");
        rt_expect_reset();
        __asm__ volatile("movl $2f, rt_resume\n\tmovl $0x411000, rt_mark\n\t"
                         "call *%0\n2:" :: "r"(KERNEL_CODE_PAGE) : "memory");
        if (rt_exc.count)
            __asm__ volatile("addl $4, %%esp" ::: "memory");
        report_exc(what[step]);
    }
    write_cr4(read_cr4() & ~CR4_SMEP);
    rt_paging_off();
}

static void t_rdtscp(void)
{
    u32 lo1, hi1, lo2, hi2, aux;
    __asm__ volatile("wrmsr" :: "c"(MSR_TSC_AUX), "a"(0x1234), "d"(0));
    __asm__ volatile("rdtsc" : "=a"(lo1), "=d"(hi1));
    __asm__ volatile("rdtscp" : "=a"(lo2), "=d"(hi2), "=c"(aux));
    u64 t1 = (u64)hi1 << 32 | lo1, t2 = (u64)hi2 << 32 | lo2;
    /* (RDMSR of IA32_TSC_AUX reads 0 on QEMU 7.2 after this WRMSR: not printed) */
    kprintf("rdtscp: ecx=0x%x later=%s\n", aux, t2 > t1 ? "yes" : "no");
}

int main(void)
{
    u32 a, b, c, d;
    kprintf("cpufeat: start\n");
    cpuid(0, 0, &a, &b, &c, &d);
    u32 max = a;
    cpuid(7, 0, &a, &b, &c, &d);
    kprintf("cpuid max>=7: %s leaf 7: smep=%u umip=%u\n", max >= 7 ? "yes" : "no",
            (b >> 7) & 1, (c >> 2) & 1);
    cpuid(0x80000001, 0, &a, &b, &c, &d);
    kprintf("cpuid 80000001: rdtscp=%u\n", (d >> 27) & 1);
    t_umip();
    t_smep();
    t_rdtscp();
    kprintf("cpufeat: done\n");
    return 0;
}
