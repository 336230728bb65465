/* pae: PAE paging (SDM Vol. 3A §4.4) -- its own PDPT (32-byte aligned, not page
 * aligned), 64-bit page directories and tables, 2 MiB and 4 KiB pages, #PF on
 * not-present and reserved-bit entries (error codes, CR2), A/D bits, CR0.WP, U/S and
 * R/W over the PDE and PTE, PDPTE loads at MOV CR3 and MOV CR4, self-modifying code on
 * a PAE-mapped page.  Expected lines and their rules: tests/test_pae.py.  Its own
 * tables live at 0x310000 (the runtime's 32-bit ones at 0x300000 are not used). */
#include "rt.h"

typedef volatile u64 pte_t;
#define PDPT_ADDR 0x00310020u          /* CR3 bits 31:5: the PDPT need not be page aligned */
#define PD0_ADDR  0x00311000u          /* 0..1 GiB: identity, 4 KiB pages below 4 MiB */
#define PT0_ADDR  0x00312000u
#define PT1_ADDR_ 0x00313000u
#define PD1_ADDR  0x00314000u          /* 1..2 GiB: the test mappings */
#define PTT_ADDR  0x00315000u
#define PTS_ADDR  0x00316000u
#define PTR_ADDR  0x00317000u
#define PDPT ((pte_t *)PDPT_ADDR)
#define PD0  ((pte_t *)PD0_ADDR)
#define PD1  ((pte_t *)PD1_ADDR)
#define PTT  ((pte_t *)PTT_ADDR)
#define PHYS(a) ((volatile u32 *)(a))
#define LIN(a) ((volatile u32 *)(a))
#define PS 0x80ull
#define RSVD40 (1ull << 40)
#define XD (1ull << 63)

static volatile u32 u_val;

static void u_read_super(void)
{
    __asm__ volatile(ARM(1f, 2f) "2: movl 0x40600010, %%eax\n1:" ::: "eax", "memory");
}

static void u_write_ro(void)
{
    __asm__ volatile(ARM(1f, 2f) "2: movl %%eax, 0x40800010\n1:" ::: "memory");
}

static void u_read_ro(void)
{
    u32 v;
    __asm__ volatile("movl 0x40800014, %0" : "=r"(v) :: "memory");
    u_val = v;
}

static void u_read_rsvd(void)
{
    __asm__ volatile(ARM(1f, 2f) "2: movl 0x40002000, %%eax\n1:" ::: "eax", "memory");
}

static void probe_read(const char *what, u32 lin)
{
    rt_expect_reset();
    u32 v = 0;
    __asm__ volatile(ARM(1f, 2f) "2: movl (%1), %0\n1:" : "+r"(v) : "r"(lin) : "memory");
    report_exc(what);
}

static void probe_write(const char *what, u32 lin, u32 value)
{
    rt_expect_reset();
    __asm__ volatile(ARM(1f, 2f) "2: movl %1, (%0)\n1:" :: "r"(lin), "r"(value) : "memory");
    report_exc(what);
}

static u32 low(pte_t *e) { return (u32)*e & 0xfff; }

int main(void)
{
    kprintf("pae: start\n");
    u32 a, b, c, d;
    __asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(1), "c"(0));
    kprintf("cpuid.1:edx.pae=%u\n", (d >> 6) & 1);

    memset((void *)0x00310000, 0, 0x8000);
    for (u32 i = 0; i < 512; i++) {
        ((pte_t *)PT0_ADDR)[i] = (u64)(i << 12) | PTE_P | PTE_W | PTE_U;
        ((pte_t *)PT1_ADDR_)[i] = (u64)(0x200000 + (i << 12)) | PTE_P | PTE_W | PTE_U;
    }
    PD0[0] = PT0_ADDR | PTE_P | PTE_W | PTE_U;
    PD0[1] = PT1_ADDR_ | PTE_P | PTE_W | PTE_U;
    for (u32 i = 2; i < 16; i++)                     /* 4..32 MiB: 2 MiB pages */
        PD0[i] = (u64)(i << 21) | PS | PTE_P | PTE_W | PTE_U;
    PDPT[0] = PD0_ADDR | PTE_P;
    PDPT[1] = PD1_ADDR | PTE_P | 0x18;               /* PCD and PWT are allowed */
    PD1[0] = PTT_ADDR | PTE_P | PTE_W;
    PTT[0] = 0x00a00000 | PTE_P | PTE_W;             /* 0x40000000 */
    /* PTT[1] not present: 0x40001000 */
    PTT[2] = 0x00a01000 | PTE_P | PTE_W | RSVD40;    /* 0x40002000: bit 40 > MAXPHYADDR */
    PTT[3] = 0x00a02000 | PTE_P;                     /* 0x40003000: read-only */
    PTT[4] = 0x00a03000 | PTE_P | PTE_W | 0x98;      /* 0x40004000: PAT, PCD, PWT */
    PTT[5] = 0x00a04000 | PTE_P | PTE_W;             /* 0x40005000: code */
    PTT[6] = 0x00a04000 | PTE_P | PTE_W;             /* 0x40006000: its alias */
    PTT[7] = 0x00a05000 | PTE_P | PTE_W | XD;        /* 0x40007000: XD without EFER.NXE */
    PD1[1] = 0x00c00000 | PS | PTE_P | PTE_W;        /* 0x40200000: 2 MiB page */
    PD1[2] = 0x00e00000 | PS | PTE_P | PTE_W | 0x2000;   /* bit 13: reserved in a 2 MiB PDE */
    PD1[3] = PTS_ADDR | PTE_P | PTE_W;               /* 0x40600000: supervisor PDE */
    ((pte_t *)PTS_ADDR)[0] = 0x00a06000 | PTE_P | PTE_W | PTE_U;
    PD1[4] = PTR_ADDR | PTE_P | PTE_U;               /* 0x40800000: read-only PDE */
    ((pte_t *)PTR_ADDR)[0] = 0x00a07000 | PTE_P | PTE_W | PTE_U;
    PD1[5] = 0x01000000 | PS | PTE_P | PTE_W | PTE_U | 0x1000;  /* PAT bit of a 2 MiB PDE */
    /* PDPT[2], PDPT[3]: not present */
    for (u32 p = 0x00a00000; p < 0x00a08000; p += 4)
        *PHYS(p) = 0;
    *PHYS(0x00a00000) = 0xa0a0a0a0;
    *PHYS(0x00a03010) = 0xa3a3a3a3;
    *PHYS(0x00c01234) = 0xc4c4c4c4;
    *PHYS(0x00a07014) = 0x77777777;
    *PHYS(0x01000020) = 0x10101010;

    write_cr3(PDPT_ADDR);
    write_cr4(read_cr4() | 0x20);
    write_cr0(read_cr0() | 0x80000000u);
    kprintf("cr0.pg=%u cr4.pae=%u cr3=0x%x\n", read_cr0() >> 31, (read_cr4() >> 5) & 1, read_cr3());

    /* 4 KiB page: A on a read, D on a write, in the PTE; A in the PDE (§4.8) */
    kprintf("4K pte before: 0x%03x pde: 0x%03x\n", low(&PTT[0]), low(&PD1[0]));
    u32 v = *LIN(0x40000000);
    kprintf("4K read: 0x%x pte: 0x%03x pde: 0x%03x\n", v, low(&PTT[0]), low(&PD1[0]));
    *LIN(0x40000004) = 0x12345678;
    kprintf("4K write: phys=0x%x pte: 0x%03x pde: 0x%03x\n", *PHYS(0x00a00004), low(&PTT[0]), low(&PD1[0]));
    kprintf("pte high dword after A/D: 0x%x\n", (u32)(PTT[0] >> 32));

    /* 2 MiB page */
    kprintf("2M pde before: 0x%03x\n", low(&PD1[1]));
    v = *LIN(0x40201234);
    kprintf("2M read: 0x%x pde: 0x%03x\n", v, low(&PD1[1]));
    *LIN(0x40302000) = 0x44444444;
    kprintf("2M write: phys 0xd02000=0x%x pde: 0x%03x\n", *PHYS(0x00d02000), low(&PD1[1]));
    kprintf("2M PAT bit: 0x%x; PAT/PCD/PWT 4K: 0x%x\n", *LIN(0x40a00020), *LIN(0x40004010));

    /* a string instruction reading through PAE (under hvm, the monitor emulates it) */
    static const char line[] = "rep outsb from a PAE page\n";
    memcpy((void *)0x00a03100, line, sizeof line - 1);
    u32 si = 0x40004100, cx = sizeof line - 1;
    __asm__ volatile("cld; rep outsb" : "+S"(si), "+c"(cx) : "d"(COM1) : "memory");

    /* not present: at the PTE, at the PDE, at the PDPTE */
    probe_read("read not-present PTE", 0x40001008);
    probe_write("write not-present PTE", 0x4000100c, 1);
    probe_read("read not-present PDE", 0x40c00000);
    probe_read("read not-present PDPTE", 0x80000010);
    probe_write("write not-present PDPTE", 0xc0000020, 2);

    /* reserved bits: #PF with P and RSVD (bit 3) (§4.7) */
    probe_read("read PTE bit 40", 0x40002004);
    probe_write("write PTE bit 40", 0x40002008, 3);
    probe_read("read 2M PDE bit 13", 0x40400000);
    probe_read("read PTE XD without NXE", 0x40007000);
    rt_expect_reset();
    rt_run_user(u_read_rsvd);
    report_exc("user read PTE bit 40");
    kprintf("rsvd pte untouched: 0x%03x\n", low(&PTT[2]));

    /* CR0.WP and a read-only page at ring 0 */
    write_cr0(read_cr0() | 0x10000);
    probe_write("WP=1 supervisor write to read-only page", 0x40003008, 0x55555555);
    kprintf("  value=0x%x pte: 0x%03x\n", *PHYS(0x00a02008), low(&PTT[3]));
    write_cr0(read_cr0() & ~0x10000u);
    probe_write("WP=0 supervisor write to read-only page", 0x40003008, 0x66666666);
    kprintf("  value=0x%x pte: 0x%03x\n", *PHYS(0x00a02008), low(&PTT[3]));

    /* U/S and R/W combined over the PDE and the PTE (§4.6) */
    rt_expect_reset();
    rt_run_user(u_read_super);
    report_exc("user read, PDE U=0 PTE U=1");
    rt_expect_reset();
    rt_run_user(u_write_ro);
    report_exc("user write, PDE R/W=0 PTE R/W=1");
    rt_expect_reset();
    rt_run_user(u_read_ro);
    report_exc("user read, PDE R/W=0 PTE R/W=1");
    kprintf("  value=0x%x\n", u_val);

    /* PDPTE loads (§4.4.1): an edited PDPTE is used once CR3 or a CR4 paging bit is
     * written again */
    *PHYS(0x00a00100) = 0xfeedf00d;
    PDPT[2] = PD1_ADDR | PTE_P;
    write_cr3(read_cr3());
    kprintf("PDPTE 2 after MOV CR3: 0x%x\n", *LIN(0x80000100));
    PDPT[3] = PD1_ADDR | PTE_P;
    write_cr4(read_cr4() ^ 0x80);                    /* PGE on: the PDPTEs load again */
    kprintf("PDPTE 3 after MOV CR4 (PGE=%u): 0x%x\n", (read_cr4() >> 7) & 1, *LIN(0xc0000100));
    PDPT[3] = 0;
    write_cr4(read_cr4() ^ 0x80);
    probe_read("PDPTE 3 cleared, MOV CR4", 0xc0000100);

    /* pdptes=1 (not on QEMU, whose TCG re-reads the PDPT at every walk and never raises
     * #GP for it): the PDPTE registers keep what they loaded, and a MOV that would load
     * a PDPTE with a reserved bit is #GP(0) and changes nothing (§4.4.1) */
    u32 arg;
    if (rt_arg("pdptes", &arg)) {
        PDPT[2] = 0;
        invlpg(0x80000100);
        kprintf("PDPTE 2 cleared, INVLPG only: 0x%x\n", *LIN(0x80000100));
        PDPT[2] = PD1_ADDR | PTE_P | 0x2;            /* bit 1: reserved */
        rt_expect_reset();
        __asm__ volatile(ARM(1f, 2f) "2: mov %0, %%cr3\n1:" :: "r"(read_cr3()) : "memory");
        report_exc("MOV CR3, PDPTE 2 bit 1");
        invlpg(0x80000100);
        kprintf("  cr3=0x%x 0x80000100: 0x%x\n", read_cr3(), *LIN(0x80000100));
        rt_expect_reset();
        __asm__ volatile(ARM(1f, 2f) "2: mov %0, %%cr4\n1:" :: "r"(read_cr4() ^ 0x80) : "memory");
        report_exc("MOV CR4 (PGE), PDPTE 2 bit 1");
        kprintf("  cr4=0x%x\n", read_cr4());
        PDPT[2] = 0;
        write_cr3(read_cr3());
        probe_read("PDPTE 2 cleared, MOV CR3", 0x80000100);
    }

    /* self-modifying code on a PAE-mapped page: mov $imm32, %eax; ret */
    volatile u8 *code = (volatile u8 *)0x40005000;
    code[0] = 0xb8; *(volatile u32 *)(code + 1) = 0x11111111; code[5] = 0xc3;
    u32 (*fn)(void) = (u32 (*)(void))0x40005000;
    u32 r1 = fn();
    *(volatile u32 *)(code + 1) = 0x22222222;
    u32 r2 = fn();
    *(volatile u32 *)0x40006001 = 0x33333333;        /* through the alias */
    u32 r3 = fn();
    kprintf("smc: 0x%x 0x%x 0x%x\n", r1, r2, r3);

    write_cr0(read_cr0() & ~0x80000000u);
    write_cr4(read_cr4() & ~0xa0u);
    kprintf("paging off: cr0=0x%x cr4=0x%x\n", read_cr0(), read_cr4());
    kprintf("pae: done\n");
    return 0;
}
