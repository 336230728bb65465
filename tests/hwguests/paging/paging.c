/* paging: 4 KiB and 4 MiB pages, accessed/dirty bits, INVLPG and CR3
 * reloads, aliases, page-crossing accesses, CR0.WP and the combination of
 * U/S and R/W over the PDE and PTE.  Expected values and their
 * justification are in tests/test_hw_guests.py. */
#include "rt.h"

#define PHYS(a) ((volatile u32 *)(a))   /* 8..32 MiB are identity mapped */
#define VIRT(a) ((volatile u32 *)(a))
#define PT2_ADDR 0x00303000u
#define PT3_ADDR 0x00304000u
#define PT2 ((volatile u32 *)PT2_ADDR)
#define PT3 ((volatile u32 *)PT3_ADDR)

static volatile u32 u_val;

static void u_read_pde_super(void)
{
    __asm__ volatile(ARM(1f, 2f) "2: movl 0x2400010, %%eax\n1:" ::: "eax", "memory");
}

static void u_write_pde_ro(void)
{
    __asm__ volatile(ARM(1f, 2f) "2: movl %%eax, 0x2800010\n1:" ::: "memory");
}

static void u_read_pde_ro(void)
{
    u32 v;
    __asm__ volatile("movl 0x2800014, %0" : "=r"(v) :: "memory");
    u_val = v;
}

int main(void)
{
    kprintf("paging: start\n");
    rt_paging_init();
    for (u32 a = 0x00a00000; a < 0x00a10000; a += 4)
        *PHYS(a) = 0;
    PT1[0x100] = 0x00a00000 | PTE_P | PTE_W;      /* 0x500000 */
    PT1[0x101] = 0x00a01000 | PTE_P | PTE_W;      /* 0x501000 */
    PT1[0x102] = 0x00a03000 | PTE_P | PTE_W;      /* 0x502000 alias */
    PT1[0x103] = 0x00a03000 | PTE_P | PTE_W;      /* 0x503000 alias */
    PT1[0x104] = 0x00a04000 | PTE_P;              /* 0x504000 read-only */
    PT1[0x106] = 0x00a07000 | PTE_P | PTE_W;      /* 0x506000 */
    PT1[0x107] = 0x00a09000 | PTE_P | PTE_W;      /* 0x507000: not the next frame */
    PD[8] = 0x00c00000 | PDE_PS | PTE_P | PTE_W;  /* 0x2000000: 4 MiB page */
    PD[9] = PT2_ADDR | PTE_P | PTE_W;             /* supervisor PDE */
    PD[10] = PT3_ADDR | PTE_P | PTE_U;            /* read-only PDE */
    for (int i = 0; i < 1024; i++)
        PT2[i] = PT3[i] = 0;
    PT2[0] = 0x00a05000 | PTE_P | PTE_W | PTE_U;
    PT3[0] = 0x00a06000 | PTE_P | PTE_W | PTE_U;
    *PHYS(0x00a00000) = 0xa0a0a0a0;
    *PHYS(0x00a01000) = 0x11111111;
    *PHYS(0x00a02000) = 0x22222222;
    *PHYS(0x00a06014) = 0x66666666;
    *PHYS(0x00c01234) = 0xc4c4c4c4;
    rt_paging_on(0);
    kprintf("cr0.pg=%u cr4.pse=%u cr3=0x%x\n", read_cr0() >> 31, (read_cr4() >> 4) & 1, read_cr3());

    /* accessed / dirty, 4 KiB page */
    kprintf("4K pte before: 0x%03x pde: 0x%03x\n", PT1[0x100] & 0xfff, PD[1] & 0xfff);
    u32 v = *VIRT(0x500000);
    kprintf("4K read 0x500000: 0x%x pte: 0x%03x pde: 0x%03x\n", v, PT1[0x100] & 0xfff, PD[1] & 0xfff);
    *VIRT(0x500004) = 0x12345678;
    kprintf("4K write 0x500004: phys 0xa00004=0x%x pte: 0x%03x pde: 0x%03x\n",
            *PHYS(0x00a00004), PT1[0x100] & 0xfff, PD[1] & 0xfff);

    /* accessed / dirty, 4 MiB page */
    kprintf("4M pde before: 0x%03x\n", PD[8] & 0xfff);
    v = *VIRT(0x02001234);
    kprintf("4M read 0x2001234: 0x%x pde: 0x%03x\n", v, PD[8] & 0xfff);
    *VIRT(0x02002000) = 0x44444444;
    kprintf("4M write 0x2002000: phys 0xc02000=0x%x pde: 0x%03x\n", *PHYS(0x00c02000), PD[8] & 0xfff);

    /* INVLPG and CR3 reload */
    v = *VIRT(0x501000);
    PT1[0x101] = 0x00a02000 | PTE_P | PTE_W;
    invlpg(0x501000);
    u32 v2 = *VIRT(0x501000);
    PT1[0x101] = 0x00a01000 | PTE_P | PTE_W;
    write_cr3(read_cr3());
    u32 v3 = *VIRT(0x501000);
    kprintf("remap 0x501000: before=0x%x after invlpg=0x%x after cr3 reload=0x%x\n", v, v2, v3);

    /* aliases */
    *VIRT(0x502010) = 0xdeadbeef;
    v = *VIRT(0x503010);
    *VIRT(0x503010) = 0xfeedface;
    v2 = *VIRT(0x502010);
    kprintf("alias 0x502000/0x503000: 0x%x 0x%x phys=0x%x\n", v, v2, *PHYS(0x00a03010));

    /* page-crossing accesses: 0x506ffe..0x507001 spans frames 0xa07000 and 0xa09000 */
    *PHYS(0x00a07ffc) = 0x4433aabb;
    *PHYS(0x00a09000) = 0xeeff2211;
    v = *(volatile u32 *)0x506ffe;
    u16 h = *(volatile u16 *)0x506fff;
    *(volatile u32 *)0x506ffd = 0x55667788;
    kprintf("cross-page read32=0x%x read16=0x%x; after write32 at 0x506ffd: 0x%x 0x%x\n",
            v, h, *PHYS(0x00a07ffc), *PHYS(0x00a09000));

    /* CR0.WP and a read-only supervisor page */
    rt_paging_on(1);
    rt_expect_reset();
    __asm__ volatile(ARM(1f, 2f) "2: movl $0x77777777, 0x504008\n1:" ::: "memory");
    report_exc("WP=1 supervisor write to read-only page");
    kprintf("  value=0x%x pte.D=%u\n", *PHYS(0x00a04008), (PT1[0x104] >> 6) & 1);
    rt_paging_on(0);
    rt_expect_reset();
    __asm__ volatile(ARM(1f, 2f) "2: movl $0x88888888, 0x504008\n1:" ::: "memory");
    report_exc("WP=0 supervisor write to read-only page");
    kprintf("  value=0x%x pte.D=%u\n", *PHYS(0x00a04008), (PT1[0x104] >> 6) & 1);

    /* U/S and R/W are combined over the PDE and the PTE */
    rt_expect_reset();
    rt_run_user(u_read_pde_super);
    report_exc("user read, PDE U=0 PTE U=1");
    rt_expect_reset();
    rt_run_user(u_write_pde_ro);
    report_exc("user write, PDE R/W=0 PTE R/W=1");
    rt_expect_reset();
    rt_run_user(u_read_pde_ro);
    report_exc("user read, PDE R/W=0 PTE R/W=1");
    kprintf("  value=0x%x\n", u_val);
    rt_expect_reset();
    __asm__ volatile("movl $0x99999999, 0x2800018" ::: "memory");
    report_exc("supervisor write, PDE R/W=0, WP=0");
    kprintf("  value=0x%x\n", *PHYS(0x00a06018));
    rt_paging_on(1);
    rt_expect_reset();
    __asm__ volatile(ARM(1f, 2f) "2: movl $0xaaaaaaaa, 0x280001c\n1:" ::: "memory");
    report_exc("supervisor write, PDE R/W=0, WP=1");

    rt_paging_off();
    kprintf("paging off: cr0=0x%x\n", read_cr0());
    kprintf("paging: done\n");
    return 0;
}
