/* paeshadow: a PAE kernel that keeps changing its mappings -- what a monitor's shadow
 * page tables must follow (SDM Vol. 3A §4.4, §4.10).  Two PDPTs in one page (CR3 bits
 * 31:5), sharing the identity map (4 KiB pages below 2 MiB, 2 MiB pages above) and each
 * with a page directory of its own for 1..2 GiB; a page table that maps itself (its
 * entries written through that window); a 4 MiB region half 4 KiB pages, half a 2 MiB
 * page; a page written as data and then used as a page table; a global page under
 * CR4.PGE; a task switch to the other address space and back; PAE turned off and on
 * again, with edits made meanwhile (pdptes=1, ringvisor only: a task switch to a PDPT
 * with a reserved bit, #GP(0) in the new task).  Every change is
 * followed by INVLPG or a CR3 load before the next access, as §4.10.4 requires, so the
 * results do not depend on what a TLB keeps.  Expected lines: tests/test_pae.py. */
#include "rt.h"

typedef volatile u64 pte_t;
#define PDPT_A_ADDR 0x00320040u        /* two PDPTs in one page */
#define PDPT_B_ADDR 0x00320060u
#define PD0_ADDR    0x00321000u        /* 0..1 GiB: identity (both) */
#define PT0_ADDR    0x00322000u        /* 0..2 MiB: 4 KiB pages */
#define PD_A_ADDR   0x00323000u        /* 1..2 GiB under A */
#define PT_A_ADDR   0x00324000u        /* 0x40000000..: A's test pages and its own window */
#define PT_C_ADDR   0x00325000u        /* 0x40400000..: 4 KiB pages (half of a 4 MiB region) */
#define PD_B_ADDR   0x00326000u        /* 1..2 GiB under B */
#define PT_B_ADDR   0x00327000u
#define T_ADDR      0x00328000u        /* written as data, then a page table */
#define PD32_ADDR   0x00329000u        /* 32-bit paging: the page directory ... */
#define PT32_ADDR   0x0032a000u        /* ... identity 0..4 MiB ... */
#define PT32B_ADDR  0x0032b000u        /* ... and 0x40000000.. */
#define WINDOW      0x40010000u        /* PT_A, through PT_A[16] */
#define TSS_T_ADDR  0x00206000u        /* the task whose CR3 is B's PDPT */
#define SEL_TSS_T   0x48
#define TSS_U_ADDR  0x00206100u        /* pdptes=1: a task whose PDPT has a reserved bit */
#define SEL_TSS_U   0x50
#define PDPT_BAD_ADDR 0x00320080u
#define X1 0x00a00000u
#define X2 0x00a01000u
#define X3 0x00a02000u
#define ZZ 0x00a03000u
#define WW 0x00a05000u
#define C1 0x00a06000u
#define C2 0x00a07000u
#define PDPT_A ((pte_t *)PDPT_A_ADDR)
#define PDPT_B ((pte_t *)PDPT_B_ADDR)
#define PDPT_BAD ((pte_t *)PDPT_BAD_ADDR)
#define PD0  ((pte_t *)PD0_ADDR)
#define PD_A ((pte_t *)PD_A_ADDR)
#define PT_A ((pte_t *)PT_A_ADDR)
#define PD_B ((pte_t *)PD_B_ADDR)
#define PT_B ((pte_t *)PT_B_ADDR)
#define T    ((pte_t *)T_ADDR)
#define WIN  ((volatile u32 *)WINDOW)  /* PT_A as 32-bit words */
#define AT(a) (*(volatile u32 *)(a))
#define PS 0x80ull
#define G 0x100ull
#define RW (PTE_P | PTE_W)

static void probe_read(const char *what, u32 lin)
{
    rt_expect_reset();
    u32 v = 0;
    __asm__ volatile(ARM(1f, 2f) "2: movl (%1), %0\n1:" : "+r"(v) : "r"(lin) : "memory");
    report_exc(what);
}

static void paging_off(void)
{
    write_cr0(read_cr0() & ~0x80000000u);
}

static void pae_on(u32 pdpt)
{
    write_cr3(pdpt);
    write_cr4(read_cr4() | 0x20);
    write_cr0(read_cr0() | 0x80000000u);
}

static u32 call(u32 lin)
{
    return ((u32 (*)(void))lin)();
}

/* a task on B's address space: a task switch loads CR3, and with it the PDPTEs (§4.4.1,
 * §7.3); its IRET goes back to the runtime's task, whose TSS names A's PDPT */
static u8 stack_t[4096] __attribute__((aligned(16)));
static volatile u32 t_val, t_cr3;

static void task_t(void)
{
    for (;;) {
        t_val = AT(0x40000000);
        t_cr3 = read_cr3();
        __asm__ volatile("iret" ::: "memory");
    }
}

static void task_init(u32 addr, void (*entry)(void), u32 cr3)
{
    volatile struct tss *t = (volatile struct tss *)addr;
    memset((void *)addr, 0, 104);
    t->eip = (u32)entry;
    t->eflags = 0x2;
    t->esp = (u32)(stack_t + sizeof stack_t);
    t->cs = SEL_CODE0;
    t->ss = t->ds = t->es = t->fs = t->gs = SEL_DATA0;
    t->cr3 = cr3;
    t->iomap = 104;
}

/* pdptes=1 (not on QEMU, whose TCG loads no PDPTE registers and never raises #GP for
 * one): a task switch to a CR3 whose PDPT has a reserved bit commits, then raises
 * #GP(0) in the new task at its first instruction, the PDPTE registers unchanged
 * (§4.4.1, §7.3); the handler goes back to the old task with the new one's IRET */
extern void task_u(void), task_u_back(void);
__asm__(".text\ntask_u: hlt\ntask_u_back: iret\n");
static volatile u32 u_err, u_eip, u_link, u_cr3, u_val;

static void gp_in_task_u(struct frame *f)
{
    u_err = f->err;
    u_eip = f->eip;
    u_link = ((volatile struct tss *)TSS_U_ADDR)->link;   /* (STR would show trapemu) */
    u_cr3 = read_cr3();
    u_val = AT(0x40000000);
    f->eip = (u32)task_u_back;                  /* NT is set in the frame: a task return */
}

int main(void)
{
    kprintf("paeshadow: start\n");
    memset((void *)0x00320000, 0, 0xc000);
    for (u32 i = 0; i < 512; i++)
        ((pte_t *)PT0_ADDR)[i] = (u64)(i << 12) | RW;
    PD0[0] = PT0_ADDR | RW;
    for (u32 i = 1; i < 16; i++)                      /* 2..32 MiB: 2 MiB pages */
        PD0[i] = (u64)(i << 21) | PS | RW;
    PDPT_A[0] = PD0_ADDR | PTE_P;
    PDPT_A[1] = PD_A_ADDR | PTE_P;
    PDPT_B[0] = PD0_ADDR | PTE_P;
    PDPT_B[1] = PD_B_ADDR | PTE_P;
    PD_A[0] = PT_A_ADDR | RW;
    PT_A[0] = X1 | RW;                                /* 0x40000000 */
    PT_A[3] = C1 | RW;                                /* 0x40003000: code */
    PT_A[16] = PT_A_ADDR | RW;                        /* WINDOW: PT_A itself */
    PD_A[2] = PT_C_ADDR | RW;                         /* 0x40400000: 4 KiB pages */
    ((pte_t *)PT_C_ADDR)[0] = X3 | RW;
    PD_A[3] = 0x00c00000 | PS | RW;                   /* 0x40600000: a 2 MiB page */
    PD_B[0] = PT_B_ADDR | RW;
    PT_B[0] = WW | RW;
    for (u32 p = 0x00a00000; p < 0x00a08000; p += 0x1000)
        AT(p) = 0;
    AT(X1) = 0x11111111; AT(X2) = 0x22222222; AT(X3) = 0x33333333;
    AT(ZZ) = 0x44444444; AT(WW) = 0x55555555;
    AT(0x00c00010) = 0xc0c0c0c0; AT(0x00e00010) = 0xe0e0e0e0;
    /* mov $imm32, %eax; ret */
    *(volatile u8 *)C1 = 0xb8; AT(C1 + 1) = 1; *(volatile u8 *)(C1 + 5) = 0xc3;
    *(volatile u8 *)C2 = 0xb8; AT(C2 + 1) = 2; *(volatile u8 *)(C2 + 5) = 0xc3;

    pae_on(PDPT_A_ADDR);
    kprintf("A: cr3=0x%x 0x40000000=0x%x\n", read_cr3(), AT(0x40000000));

    /* a PTE changed through the identity map (the 2 MiB page over the tables) */
    PT_A[0] = X2 | RW;
    invlpg(0x40000000);
    kprintf("remap, invlpg: 0x%x\n", AT(0x40000000));

    /* through the table's own window: the store changes the mapping it goes through */
    WIN[0] = X3 | RW;
    invlpg(0x40000000);
    u32 v = AT(0x40000000);
    kprintf("own window: 0x%x pte: 0x%03x", v, WIN[0] & 0xfff);
    AT(0x40000004) = 7;
    kprintf(" after write: 0x%03x window pte: 0x%03x\n", WIN[0] & 0xfff, WIN[32] & 0xfff);
    WIN[0] = 0;
    invlpg(0x40000000);
    probe_read("unmapped through the window", 0x40000000);

    /* code on a remapped page runs from the new frame (§4.10.4.1) */
    u32 r1 = call(0x40003000);
    PT_A[3] = C2 | RW;
    invlpg(0x40003000);
    kprintf("code remap: %u %u\n", r1, call(0x40003000));

    /* one 4 MiB region: 4 KiB pages in its first half, a 2 MiB page in its second */
    u32 sum = 0;
    for (u32 i = 0; i < 4; i++)
        sum += AT(0x40400000) + AT(0x40600010);
    kprintf("halves: 0x%x 0x%x sum=0x%x\n", AT(0x40400000), AT(0x40600010), sum);
    PD_A[3] = 0x00e00000 | PS | RW;
    invlpg(0x40712345);                               /* anywhere in the 2 MiB page */
    u32 big = AT(0x40600010), small = AT(0x40400000);
    kprintf("2M remap: 0x%x 4K half: 0x%x pde: 0x%03x\n", big, small, (u32)PD_A[3] & 0xfff);

    /* two address spaces: a CR3 load selects the other PDPT; edits to the one not
     * loaded count when it is loaded again */
    write_cr3(PDPT_B_ADDR);
    kprintf("B: cr3=0x%x 0x40000000=0x%x\n", read_cr3(), AT(0x40000000));
    PT_A[0] = X1 | RW;
    write_cr3(PDPT_A_ADDR);
    kprintf("A after an edit on B: 0x%x\n", AT(0x40000000));
    PT_B[0] = ZZ | RW;
    write_cr3(PDPT_B_ADDR);
    kprintf("B after an edit on A: 0x%x\n", AT(0x40000000));
    write_cr3(PDPT_A_ADDR);
    task_init(TSS_T_ADDR, task_t, PDPT_B_ADDR);
    TSS->cr3 = PDPT_A_ADDR;
    gdt_set(SEL_TSS_T >> 3, TSS_T_ADDR, 0x67, 0x89, 0);
    __asm__ volatile("lcall $0x48, $0" ::: "memory", "cc");
    __asm__ volatile("clts");
    u32 back = AT(0x40000000);
    kprintf("task: cr3=0x%x 0x40000000=0x%x back: cr3=0x%x 0x%x\n", t_cr3, t_val, read_cr3(), back);
    u32 arg;
    if (rt_arg("pdptes", &arg)) {
        PDPT_BAD[0] = PD0_ADDR | PTE_P;
        PDPT_BAD[1] = PD_B_ADDR | PTE_P | 0x2;       /* bit 1: reserved (Table 4-8) */
        task_init(TSS_U_ADDR, task_u, PDPT_BAD_ADDR);
        gdt_set(SEL_TSS_U >> 3, TSS_U_ADDR, 0x67, 0x89, 0);
        rt_isr[13] = gp_in_task_u;
        __asm__ volatile("lcall $0x50, $0" ::: "memory", "cc");
        __asm__ volatile("clts");
        rt_isr[13] = 0;
        back = AT(0x40000000);
        kprintf("bad PDPT task: #GP err=0x%x at entry=%u link=0x%x cr3=0x%x 0x40000000=0x%x "
                "back: cr3=0x%x 0x%x\n", u_err, u_eip == (u32)task_u, u_link, u_cr3, u_val,
                read_cr3(), back);
    }

    /* a page written as data, then a page table, then written as data again */
    T[0] = X2 | RW;
    PD_A[4] = T_ADDR | RW;                            /* 0x40800000 */
    u32 t1 = AT(0x40800000);
    T[0] = X1 | RW;
    invlpg(0x40800000);
    kprintf("data page as a table: 0x%x then 0x%x\n", t1, AT(0x40800000));

    /* a global page: INVLPG drops it too (§4.10.4.1) */
    write_cr4(read_cr4() | 0x80);
    PT_A[1] = X1 | RW | G;
    u32 g1 = AT(0x40001000);
    PT_A[1] = X2 | RW | G;
    invlpg(0x40001000);
    kprintf("global page: 0x%x then 0x%x\n", g1, AT(0x40001000));
    write_cr4(read_cr4() & ~0x80u);

    /* PAE off: 32-bit paging on tables of its own; the PAE tables and the PDPT are
     * edited meanwhile, and the PDPTEs load when paging comes back with PAE (§4.4.1) */
    paging_off();
    write_cr4(read_cr4() & ~0x20u);
    for (u32 i = 0; i < 1024; i++)
        ((volatile u32 *)PT32_ADDR)[i] = (i << 12) | RW;
    ((volatile u32 *)PD32_ADDR)[0] = PT32_ADDR | RW;
    ((volatile u32 *)PD32_ADDR)[256] = PT32B_ADDR | RW;
    ((volatile u32 *)PT32B_ADDR)[0] = WW | RW;
    write_cr3(PD32_ADDR);
    write_cr0(read_cr0() | 0x80000000u);
    kprintf("32-bit: cr4=0x%x 0x40000000=0x%x\n", read_cr4(), AT(0x40000000));
    PT_A[0] = X3 | RW;
    PDPT_A[1] = PD_B_ADDR | PTE_P;
    paging_off();
    pae_on(PDPT_A_ADDR);
    kprintf("PAE again: cr4=0x%x 0x40000000=0x%x\n", read_cr4(), AT(0x40000000));
    PDPT_A[1] = PD_A_ADDR | PTE_P;
    write_cr3(PDPT_A_ADDR);
    kprintf("PDPT restored: 0x%x\n", AT(0x40000000));

    /* a reserved bit set in an entry already used: #PF with RSVD at the next walk */
    PT_A[2] = X1 | RW;
    u32 r = AT(0x40002000);
    WIN[5] = 0x100;                                   /* PT_A[2] bit 40 */
    invlpg(0x40002000);
    kprintf("before: 0x%x\n", r);
    probe_read("reserved bit 40", 0x40002000);

    paging_off();
    write_cr4(read_cr4() & ~0x20u);
    kprintf("paeshadow: done\n");
    return 0;
}
