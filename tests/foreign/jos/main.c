/* jos: a kernel in the style of MIT's JOS (KERNBASE 0xF0000000, entry_pgdir
 * then kern_pgdir with every page of RAM mapped at KERNBASE and the page
 * tables at UVPT through a self-map the user can read, its GDT with
 * GD_KT/GD_KD/GD_UT/GD_UD/GD_TSS0 and FS/GS holding the user data segment in
 * the kernel, its trapframe and env_pop_tf), running one user environment
 * that faults in a page, hits a breakpoint, makes system calls with int 0x30
 * and stores to its read-only code.
 */
#define FRT_OWN_TRAP          /* JOS's trapentry.S and Trapframe, not frt's */
#include "frt.h"

#define KERNBASE 0xF0000000u
#define PADDR(x) ((uint32_t)(x) - KERNBASE)
#define UVPT 0xEF400000u
#define UTEXT 0x00800000u
#define USTACKTOP 0xEEBFE000u
#define DEMAND 0x00a00000u
#define PTE_P 1
#define PTE_W 2
#define PTE_U 4
#define GD_KT 0x08
#define GD_KD 0x10
#define GD_UT 0x18
#define GD_UD 0x20
#define GD_TSS0 0x28
#define NPAGES (32 * 256)

uint16_t frt_kdata = GD_KD;      /* (frt's stubs are linked but no gate leads there) */

/* entrypgdir.c */
__attribute__((aligned(4096))) uint32_t entry_pgtable[1024];
__attribute__((aligned(4096))) uint32_t entry_pgdir[1024] = {
    [0] = (uint32_t)entry_pgtable - KERNBASE + PTE_P,
    [KERNBASE >> 22] = (uint32_t)entry_pgtable - KERNBASE + PTE_P + PTE_W,
};

struct PushRegs { uint32_t edi, esi, ebp, oesp, ebx, edx, ecx, eax; };
struct Trapframe {
    struct PushRegs regs;
    uint16_t es, pad1, ds, pad2;
    uint32_t trapno, err, eip;
    uint16_t cs, pad3;
    uint32_t eflags, esp;
    uint16_t ss, pad4;
} __attribute__((packed));

extern void th_divide(void), th_brkpt(void), th_gpflt(void), th_pgflt(void), th_syscall(void);
extern void env_pop_tf(struct Trapframe *tf) __attribute__((noreturn));
extern char user_start[], user_end[], bootstacktop[];

static uint64_t gdt[6] = {
    0,
    0x00cf9a000000ffffull,       /* GD_KT */
    0x00cf92000000ffffull,       /* GD_KD */
    0x00cffa000000ffffull,       /* GD_UT */
    0x00cff2000000ffffull,       /* GD_UD */
    0,                           /* GD_TSS0, filled in */
};
static uint64_t idt[256];
static uint32_t ts[26];
static uint32_t *kern_pgdir, *env_pgdir;
static struct Trapframe env_tf;

/* pages after the kernel, handed out in order (JOS's boot_alloc) */
extern char end[];
static uint32_t next_free;
static void *alloc_page(void)
{
    if (!next_free)
        next_free = ((uint32_t)end + 0xfff) & ~0xfffu;
    void *p = (void *)next_free;
    next_free += 4096;
    memset(p, 0, 4096);
    return p;
}

static uint32_t *pgdir_walk(uint32_t *pgdir, uint32_t va)
{
    uint32_t *pde = &pgdir[va >> 22];
    if (!(*pde & PTE_P))
        *pde = PADDR(alloc_page()) | PTE_P | PTE_W | PTE_U;
    uint32_t *pt = (uint32_t *)((*pde & ~0xfffu) + KERNBASE);
    return &pt[(va >> 12) & 0x3ff];
}

static void page_insert(uint32_t *pgdir, void *page, uint32_t va, uint32_t perm)
{
    *pgdir_walk(pgdir, va) = PADDR(page) | perm | PTE_P;
}

static void mem_init(void)
{
    kern_pgdir = alloc_page();
    for (uint32_t pa = 0; pa < NPAGES * 4096u; pa += 4096)
        *pgdir_walk(kern_pgdir, KERNBASE + pa) = pa | PTE_W | PTE_P;
    for (int i = KERNBASE >> 22; i < 1024; i++)   /* the kernel's tables: supervisor only */
        kern_pgdir[i] &= ~PTE_U;
    kern_pgdir[UVPT >> 22] = PADDR(kern_pgdir) | PTE_U | PTE_P;
    lcr3(PADDR(kern_pgdir));
    lcr0(rcr0() | 0x10000 | 0x20 | 0x2);           /* WP NE MP, as JOS sets */
}

static void trap_init(void)
{
    idt[0] = gate_desc(GD_KT, (uint32_t)th_divide, 0x8e);
    idt[3] = gate_desc(GD_KT, (uint32_t)th_brkpt, 0xee);        /* DPL 3 */
    idt[13] = gate_desc(GD_KT, (uint32_t)th_gpflt, 0x8e);
    idt[14] = gate_desc(GD_KT, (uint32_t)th_pgflt, 0x8e);
    idt[48] = gate_desc(GD_KT, (uint32_t)th_syscall, 0xee);
    struct pseudo_desc gd = { sizeof(gdt) - 1, (uint32_t)gdt };
    asm volatile("lgdt %0" :: "m"(gd));
    /* env.c: env_init_percpu */
    asm volatile("movw %%ax, %%gs" :: "a"(GD_UD | 3));
    asm volatile("movw %%ax, %%fs" :: "a"(GD_UD | 3));
    asm volatile("movw %%ax, %%es" :: "a"(GD_KD));
    asm volatile("movw %%ax, %%ds" :: "a"(GD_KD));
    asm volatile("movw %%ax, %%ss" :: "a"(GD_KD));
    asm volatile("ljmp %0, $1f\n 1:\n" :: "i"(GD_KT));
    asm volatile("lldt %w0" :: "r"(0));
    /* trap.c: trap_init_percpu */
    ts[1] = (uint32_t)bootstacktop;
    ts[2] = GD_KD;
    ts[25] = sizeof(ts) << 16;
    gdt[GD_TSS0 >> 3] = seg_desc((uint32_t)ts, sizeof(ts) - 1, 0x89, 0x4);
    asm volatile("ltr %w0" :: "r"(GD_TSS0));
    struct pseudo_desc id = { sizeof(idt) - 1, (uint32_t)idt };
    asm volatile("lidt %0" :: "m"(id));
}

static void env_create(void)
{
    env_pgdir = alloc_page();
    for (int i = UVPT >> 22; i < 1024; i++)
        env_pgdir[i] = kern_pgdir[i];
    env_pgdir[UVPT >> 22] = PADDR(env_pgdir) | PTE_U | PTE_P;
    uint8_t *text = alloc_page();
    memcpy(text, user_start, user_end - user_start);
    page_insert(env_pgdir, text, UTEXT, PTE_U);                 /* read-only code */
    page_insert(env_pgdir, alloc_page(), USTACKTOP - 4096, PTE_U | PTE_W);
    memset(&env_tf, 0, sizeof(env_tf));
    env_tf.ds = env_tf.es = env_tf.ss = GD_UD | 3;
    env_tf.cs = GD_UT | 3;
    env_tf.esp = USTACKTOP;
    env_tf.eip = UTEXT;
    env_tf.eflags = 0x2;
}

static void env_run(void)
{
    lcr3(PADDR(env_pgdir));
    env_pop_tf(&env_tf);
}

void trap(struct Trapframe *tf)
{
    if ((tf->cs & 3) == 3)
        env_tf = *tf;                       /* curenv->env_tf = *tf, as JOS does */
    else {
        printf("kernel trap %u at %x\n", tf->trapno, tf->eip);
        frt_exit(2);
    }
    struct Trapframe *t = &env_tf;
    switch (t->trapno) {
    case 14: {
        uint32_t va = rcr2();
        if ((va & ~0xfffu) == DEMAND && !(t->err & 1)) {
            page_insert(env_pgdir, alloc_page(), DEMAND, PTE_U | PTE_W);
            printf("kernel: mapped %x for the fault at +%x\n", va, t->eip - UTEXT);
            break;
        }
        printf("kernel: user fault va %x err %x at +%x\n", va, t->err, t->eip - UTEXT);
        printf("jos: done\n");
        frt_exit(0);
    }
    case 3:
        printf("kernel: breakpoint at +%x\n", t->eip - UTEXT);
        break;
    case 48:
        if (t->regs.eax == 1) {
            const char *s = (const char *)t->regs.edx;       /* user memory, as JOS reads it */
            for (uint32_t i = 0; i < t->regs.ecx; i++)
                putc(s[i]);
        } else if (t->regs.eax == 2) {
            printf("user: %x\n", t->regs.edx);
        } else {
            printf("user exits\n");
            printf("jos: done\n");
            frt_exit(0);
        }
        t->regs.eax = 0;
        break;
    default:
        printf("user trap %u err %x at +%x\n", t->trapno, t->err, t->eip - UTEXT);
        frt_exit(2);
    }
    env_run();
}

void i386_init(void)
{
    console_init();
    printf("jos: KERNBASE %x, end %x\n", KERNBASE, (uint32_t)end);
    mem_init();
    volatile uint32_t *uvpt = (uint32_t *)UVPT;
    /* (the accessed bit of a page the kernel only executes is left out: binary
     * translation runs it from its translation cache) */
    printf("kern_pgdir through UVPT: pde[KERNBASE] %x, pte[KERNBASE+1M] %x\n",
           uvpt[(UVPT >> 12) + (KERNBASE >> 22)] & 0xfff, uvpt[(KERNBASE + 0x100000) >> 12] & 0xfdf);
    trap_init();
    env_create();
    env_run();
}
