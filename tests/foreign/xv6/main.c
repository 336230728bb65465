/* xv6: a kernel in the style of MIT's xv6 (KERNBASE 0x80000000, entrypgdir with a
 * 4 MiB page, SEG_KCODE..SEG_TSS selectors, struct proc with a kernel stack, a
 * trapframe and a context, swtch(), a scheduler loop), preemptive: several user
 * processes, each with its own page directory, run in turn on the PIT's interrupt
 * and by yielding.  What a monitor must keep exactly as the hardware does:
 *
 *   - a CR3 switch at every context switch, with the kernel's pages global
 *     (CR4.PGE, PTE.G) and shared by every page directory;
 *   - TSS.ESP0 and IA32_SYSENTER_ESP moved to the next process's kernel stack;
 *   - system calls by INT 0x40 through a DPL-3 gate and by SYSENTER/SYSEXIT;
 *   - lazy x87 state: CR0.TS set at each switch, #NM on the first FPU instruction,
 *     FNSAVE/FRSTOR of the state of the process that owned the FPU;
 *   - a user stack grown on demand by the page-fault handler; INT3 from ring 3;
 *     a process killed by #DE and one by a store to its read-only code page.
 *
 * Everything printed is independent of where the timer interrupts fall (which
 * differs between QEMU and ringvisor): per-process results, in pid order. */
#include "frt.h"

#define KERNBASE 0x80000000u
#define V2P(x) ((uint32_t)(x) - KERNBASE)
#define P2V(x) ((void *)((uint32_t)(x) + KERNBASE))
#define PHYSTOP (8u << 20)
#define PTE_P 0x001
#define PTE_W 0x002
#define PTE_U 0x004
#define PTE_PS 0x080
#define PTE_G 0x100
#define SEG_KCODE 1
#define SEG_KDATA 2
#define SEG_UCODE 3
#define SEG_UDATA 4
#define SEG_TSS 5
#define T_SYSCALL 64
#define T_IRQ0 32
#define USTACKTOP 0x100000u
#define NPROC 5
#define MSR_SYSENTER_CS 0x174
#define MSR_SYSENTER_ESP 0x175
#define MSR_SYSENTER_EIP 0x176

uint16_t frt_kdata = SEG_KDATA << 3;
__attribute__((aligned(4096))) uint32_t entrypgdir[1024] = {
    [0] = PTE_P | PTE_W | PTE_PS,
    [KERNBASE >> 22] = PTE_P | PTE_W | PTE_PS,
};
__attribute__((aligned(16))) uint8_t stack[4096];

extern char end[], ucode_kva[], ucode_size[];
extern void swtch(void *old, void *new_);
extern void sysenter_entry(void), user_enter(void);
/* the user programs (user.c), at their own addresses */
extern void uprog_count(void), uprog_fpu(void), uprog_grow(void), uprog_bad(void);

struct context { uint32_t edi, esi, ebx, ebp, eip; };
enum state { UNUSED, RUNNABLE, RUNNING, ZOMBIE };
struct proc {
    enum state state;
    int pid;
    uint32_t *pgdir;
    uint8_t *kstack;
    struct trapframe *tf;
    struct context *context;
    uint8_t fpu[108];                /* FNSAVE image */
    int fpu_saved;
    int exitcode;                    /* the status, or 128 + the trap that killed it */
    uint32_t report[4];
    int nreport;
};
static struct proc procs[NPROC];
static struct proc *curproc, *fpu_owner;
static struct context *scheduler_ctx;
static uint64_t gdt[6];
static uint64_t idt[256];
static uint32_t ts[26];
static uint32_t *kpgdir_tables;       /* the kernel's page tables, shared by all */
static uint32_t demand_faults, breakpoints, nm_traps;

static inline void wrmsr(uint32_t msr, uint32_t lo, uint32_t hi)
{
    asm volatile("wrmsr" :: "c"(msr), "a"(lo), "d"(hi));
}

/* kalloc: pages after the kernel, handed out in order */
static uint32_t next_free;
static void *kalloc(void)
{
    if (!next_free)
        next_free = ((uint32_t)end + 0xfff) & ~0xfffu;
    if (V2P(next_free) >= PHYSTOP) {
        printf("out of memory\n");
        frt_exit(2);
    }
    void *p = (void *)next_free;
    next_free += 4096;
    memset(p, 0, 4096);
    return p;
}

static uint32_t *walkpgdir(uint32_t *pgdir, uint32_t va, int alloc)
{
    uint32_t *pde = &pgdir[va >> 22];
    if (!(*pde & PTE_P)) {
        if (!alloc)
            return 0;
        *pde = V2P(kalloc()) | PTE_P | PTE_W | PTE_U;
    }
    return &((uint32_t *)P2V(*pde & ~0xfffu))[(va >> 12) & 0x3ff];
}

static void kvminit(void)
{
    /* the kernel's half: PHYSTOP of RAM at KERNBASE, 4 KiB pages, global */
    kpgdir_tables = kalloc();
    kalloc();                                       /* (two tables: 8 MiB) */
    for (uint32_t pa = 0; pa < PHYSTOP; pa += 4096)
        kpgdir_tables[pa >> 12] = pa | PTE_P | PTE_W | PTE_G;
}

static uint32_t *setupkvm(void)
{
    uint32_t *pgdir = kalloc();
    for (uint32_t i = 0; i < PHYSTOP >> 22; i++)
        pgdir[(KERNBASE >> 22) + i] = V2P(&kpgdir_tables[i * 1024]) | PTE_P | PTE_W;
    return pgdir;
}

static void seginit(void)
{
    gdt[SEG_KCODE] = seg_desc(0, 0xfffff, 0x9a, 0xc);
    gdt[SEG_KDATA] = seg_desc(0, 0xfffff, 0x92, 0xc);
    gdt[SEG_UCODE] = seg_desc(0, 0xfffff, 0xfa, 0xc);
    gdt[SEG_UDATA] = seg_desc(0, 0xfffff, 0xf2, 0xc);
    gdt[SEG_TSS] = seg_desc((uint32_t)ts, sizeof(ts) - 1, 0x89, 0x0);
    struct pseudo_desc gd = { sizeof(gdt) - 1, (uint32_t)gdt };
    asm volatile("lgdt %0" :: "m"(gd));
    asm volatile("movw %w0, %%ds; movw %w0, %%es; movw %w0, %%ss; movw %w1, %%fs; movw %w1, %%gs"
                 :: "r"(SEG_KDATA << 3), "r"(0));
    asm volatile("ljmp %0, $1f\n1:" :: "i"(SEG_KCODE << 3));
    ts[2] = SEG_KDATA << 3;
    ts[25] = 0xffffu << 16;                         /* no I/O bitmap */
    asm volatile("ltr %w0" :: "r"(SEG_TSS << 3));
}

static void tvinit(void)
{
    for (int i = 0; i < 256; i++)
        idt[i] = gate_desc(SEG_KCODE << 3, frt_vectors[i], 0x8e);
    idt[T_SYSCALL] = gate_desc(SEG_KCODE << 3, frt_vectors[T_SYSCALL], 0xee);
    idt[3] = gate_desc(SEG_KCODE << 3, frt_vectors[3], 0xee);
    struct pseudo_desc id = { sizeof(idt) - 1, (uint32_t)idt };
    asm volatile("lidt %0" :: "m"(id));
    wrmsr(MSR_SYSENTER_CS, SEG_KCODE << 3, 0);
    wrmsr(MSR_SYSENTER_EIP, (uint32_t)sysenter_entry, 0);
}

static void timerinit(void)
{
    outb(0x20, 0x11); outb(0x21, T_IRQ0); outb(0x21, 4); outb(0x21, 1);
    outb(0xa0, 0x11); outb(0xa1, T_IRQ0 + 8); outb(0xa1, 2); outb(0xa1, 1);
    outb(0x21, 0xfe);                               /* IRQ 0 only */
    outb(0xa1, 0xff);
    outb(0x43, 0x34);                               /* ~1 kHz, mode 2 */
    outb(0x40, 1193 & 0xff);
    outb(0x40, 1193 >> 8);
}

static void userinit(void (*prog)(void))
{
    static int nextpid = 1;
    struct proc *p = &procs[nextpid - 1];
    p->pid = nextpid++;
    p->pgdir = setupkvm();
    /* the program's pages, read-only */
    uint32_t size = (uint32_t)ucode_size;
    for (uint32_t off = 0; off < size; off += 4096) {
        uint8_t *page = kalloc();
        memcpy(page, ucode_kva + off, size - off < 4096 ? size - off : 4096);
        *walkpgdir(p->pgdir, 0x1000 + off, 1) = V2P(page) | PTE_P | PTE_U;
    }
    /* one stack page; the rest comes on demand */
    *walkpgdir(p->pgdir, USTACKTOP - 4096, 1) = V2P(kalloc()) | PTE_P | PTE_W | PTE_U;
    p->kstack = kalloc();
    uint8_t *sp = p->kstack + 4096 - sizeof(struct trapframe);
    p->tf = (struct trapframe *)sp;
    memset(p->tf, 0, sizeof(*p->tf));
    p->tf->cs = (SEG_UCODE << 3) | 3;
    p->tf->ds = p->tf->es = p->tf->ss = (SEG_UDATA << 3) | 3;
    p->tf->eflags = 0x202;
    p->tf->esp = USTACKTOP;
    p->tf->eip = (uint32_t)prog;
    sp -= sizeof(struct context);
    p->context = (struct context *)sp;
    memset(p->context, 0, sizeof(*p->context));
    p->context->eip = (uint32_t)user_enter;
    p->state = RUNNABLE;
}

static void switchuvm(struct proc *p)
{
    ts[1] = (uint32_t)p->kstack + 4096;
    wrmsr(MSR_SYSENTER_ESP, (uint32_t)p->kstack + 4096, 0);
    lcr3(V2P(p->pgdir));
    lcr0(rcr0() | 0x8);                             /* TS: the FPU is someone else's */
}

static void sched(void)
{
    swtch(&curproc->context, scheduler_ctx);
}

static void yield(void)
{
    curproc->state = RUNNABLE;
    sched();
}

static void exit_proc(int code)
{
    curproc->exitcode = code;
    curproc->state = ZOMBIE;
    if (fpu_owner == curproc)
        fpu_owner = 0;
    sched();
}

static void scheduler(void)
{
    for (;;) {
        int alive = 0;
        for (struct proc *p = procs; p < &procs[NPROC]; p++) {
            if (p->state == UNUSED || p->state == ZOMBIE)
                continue;
            alive = 1;
            curproc = p;
            switchuvm(p);
            p->state = RUNNING;
            swtch(&scheduler_ctx, p->context);
            curproc = 0;
        }
        if (!alive)
            return;
    }
}

/* the fast call: SYSENTER's, on the process's kernel stack */
uint32_t sys_fast(uint32_t n)
{
    return n == 1 ? (uint32_t)curproc->pid * 100 : 0xffffffffu;
}

static void syscall(struct trapframe *tf)
{
    switch (tf->eax) {
    case 1:                                         /* report(value) */
        if (curproc->nreport < 4)
            curproc->report[curproc->nreport++] = tf->ebx;
        tf->eax = 0;
        break;
    case 2:                                         /* yield() */
        tf->eax = 0;
        yield();
        break;
    case 3:                                         /* exit(code) */
        exit_proc(tf->ebx);
        break;
    default:
        tf->eax = 0xffffffffu;
    }
}

void trap(struct trapframe *tf)
{
    if (tf->trapno == T_SYSCALL) {
        syscall(tf);
        return;
    }
    if (tf->trapno == T_IRQ0) {
        outb(0x20, 0x20);
        if (curproc && (tf->cs & 3) == 3)
            yield();                                /* preempted */
        return;
    }
    if (tf->trapno == 7) {                          /* #NM: hand the FPU over */
        nm_traps++;
        asm volatile("clts");
        if (fpu_owner == curproc)
            return;                                 /* its state is still in the FPU */
        if (fpu_owner) {
            asm volatile("fnsave %0" : "=m"(fpu_owner->fpu));
            fpu_owner->fpu_saved = 1;
        }
        if (curproc->fpu_saved)
            asm volatile("frstor %0" :: "m"(curproc->fpu));
        else
            asm volatile("fninit");
        fpu_owner = curproc;
        return;
    }
    if (tf->trapno == 3 && (tf->cs & 3) == 3) {
        breakpoints++;
        return;
    }
    if (tf->trapno == 14 && (tf->cs & 3) == 3) {
        uint32_t va = rcr2();
        /* the stack grows down on demand, up to 16 pages; anything else kills */
        if (!(tf->err & 1) && va < USTACKTOP && va >= USTACKTOP - 16 * 4096) {
            *walkpgdir(curproc->pgdir, va & ~0xfffu, 1) = V2P(kalloc()) | PTE_P | PTE_W | PTE_U;
            demand_faults++;
            return;
        }
        printf("pid %d: page fault at %x err %x\n", curproc->pid, va, tf->err);
    }
    if ((tf->cs & 3) == 3) {
        exit_proc(128 + tf->trapno);
        return;
    }
    printf("kernel trap %u err %x at %x\n", tf->trapno, tf->err, tf->eip);
    frt_exit(2);
}

void main(void)
{
    console_init();
    printf("xv6: start\n");
    seginit();
    tvinit();
    kvminit();
    lcr4(rcr4() | 0x80);                            /* PGE */
    uint32_t *kpgdir = setupkvm();
    lcr3(V2P(kpgdir));                              /* VA 0 is no longer mapped */
    lcr0(rcr0() | 0x22);                            /* NE, MP */
    printf("paging: own page directories, kernel pages global\n");
    timerinit();
    userinit(uprog_count);
    userinit(uprog_fpu);
    userinit(uprog_fpu);
    userinit(uprog_grow);
    userinit(uprog_bad);
    scheduler();
    lcr3(V2P(kpgdir));
    for (struct proc *p = procs; p < &procs[NPROC]; p++) {
        printf("pid %d: exit %d reports", p->pid, p->exitcode);
        for (int i = 0; i < p->nreport; i++)
            printf(" %x", p->report[i]);
        printf("\n");
    }
    printf("stack pages on demand: %u, breakpoints: %u, fpu handed over: %s\n",
           demand_faults, breakpoints, nm_traps >= 2 ? "yes" : "no");
    printf("xv6: done\n");
    frt_exit(0);
}
