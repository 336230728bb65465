// xv6ish: a small kernel in xv6's manner (x86 xv6, rev. 9): one file per concept is
// xv6's way, here one file for the whole kernel and entry.S for what needs assembly.
//
// It runs in the higher half (linked at 0x80100000, loaded at 1 MiB), entered through
// entrypgdir (4 MiB pages mapping 0 and KERNBASE to the first 4 MiB), then switches to
// its own 4 KiB page tables; builds its GDT with a per-CPU segment (SEG_KCPU: %gs:0 is
// the struct cpu, %gs:4 the running process) and reloads CS with a far jump; gives every
// process a page directory and a kernel stack of its own, enters the scheduler by
// swtch() and user code by trapret's IRET; fork copies the parent's pages (copyuvm), exec
// replaces them with one of the programs in the image, wait and exit reap zombies; system
// calls come by INT 0x40 through a DPL-3 trap gate, and the PIT's IRQ 0 preempts.
//
// Expected lines: tests/test_osdev2.py (checked on QEMU).

typedef unsigned int uint;
typedef unsigned short ushort;
typedef unsigned char uchar;
typedef uint pde_t;
typedef uint pte_t;

#define KERNBASE 0x80000000
#define PHYSTOP 0x400000                  // 4 MiB of physical memory used
#define V2P(a) (((uint)(a)) - KERNBASE)
#define P2V(a) ((void *)(((char *)(a)) + KERNBASE))
#define PGSIZE 4096
#define PGROUNDUP(sz) (((sz) + PGSIZE - 1) & ~(PGSIZE - 1))
#define PTE_P 0x001
#define PTE_W 0x002
#define PTE_U 0x004
#define PTE_PS 0x080
#define PDX(va) (((uint)(va) >> 22) & 0x3FF)
#define PTX(va) (((uint)(va) >> 12) & 0x3FF)
#define PTE_ADDR(pte) ((uint)(pte) & ~0xFFF)

#define SEG_KCODE 1
#define SEG_KDATA 2
#define SEG_UCODE 3
#define SEG_UDATA 4
#define SEG_TSS 5
#define SEG_KCPU 6
#define NSEGS 7
#define DPL_USER 3
#define T_SYSCALL 64
#define T_IRQ0 32
#define NPROC 8
#define USERSZ 0x4000                     // code, data, two stack pages

struct segdesc {
    uint lim_15_0 : 16, base_15_0 : 16;
    uint base_23_16 : 8, type : 4, s : 1, dpl : 2, p : 1;
    uint lim_19_16 : 4, avl : 1, rsv1 : 1, db : 1, g : 1, base_31_24 : 8;
};
#define SEG(type, base, lim, dpl) (struct segdesc) \
    { ((lim) >> 12) & 0xffff, (uint)(base) & 0xffff, ((uint)(base) >> 16) & 0xff, type, 1, dpl, 1, \
      (uint)(lim) >> 28, 0, 0, 1, 1, (uint)(base) >> 24 }
#define SEG16(type, base, lim, dpl) (struct segdesc) \
    { (lim) & 0xffff, (uint)(base) & 0xffff, ((uint)(base) >> 16) & 0xff, type, 1, dpl, 1, \
      (uint)(lim) >> 16, 0, 0, 1, 0, (uint)(base) >> 24 }
#define STA_X 0x8
#define STA_W 0x2
#define STA_R 0x2
#define STS_T32A 0x9

struct gatedesc {
    uint off_15_0 : 16, cs : 16, args : 5, rsv1 : 3, type : 4, s : 1, dpl : 2, p : 1, off_31_16 : 16;
};
#define SETGATE(gate, istrap, sel, off, d) { \
    (gate).off_15_0 = (uint)(off) & 0xffff; (gate).cs = (sel); (gate).args = 0; (gate).rsv1 = 0; \
    (gate).type = (istrap) ? 0xF : 0xE; (gate).s = 0; (gate).dpl = (d); (gate).p = 1; \
    (gate).off_31_16 = (uint)(off) >> 16; }

struct taskstate {
    uint link, esp0;
    ushort ss0, padding1;
    uint esp1, ss1, esp2, ss2, cr3, eip, eflags, eax, ecx, edx, ebx, esp, ebp, esi, edi;
    uint es, cs, ss, ds, fs, gs, ldt;
    ushort t, iomb;
};

struct trapframe {
    uint edi, esi, ebp, oesp, ebx, edx, ecx, eax;
    ushort gs, padding1, fs, padding2, es, padding3, ds, padding4;
    uint trapno, err, eip;
    ushort cs, padding5;
    uint eflags, esp;
    ushort ss, padding6;
};

struct context { uint edi, esi, ebx, ebp, eip; };

enum procstate { UNUSED, EMBRYO, SLEEPING, RUNNABLE, RUNNING, ZOMBIE };

struct proc {
    uint sz;
    pde_t *pgdir;
    char *kstack;
    enum procstate state;
    int pid;
    struct proc *parent;
    struct trapframe *tf;
    struct context *context;
    void *chan;
    int xstate;
    int quiet;                             // a spinner: its events are not printed
};

struct cpu {
    struct cpu *cpu;                       // %gs:0
    struct proc *proc;                     // %gs:4
    struct context *scheduler;
    struct taskstate ts;
    struct segdesc gdt[NSEGS];
    int ncli;
};

static struct cpu cpus[1];
static struct proc ptable[NPROC];
static int nextpid = 1;
static struct gatedesc idt[256];
extern uint vectors[];
extern char end[];
static pde_t *kpgdir;
static uint ticks, preempts, kpages;
static struct proc *initproc;

// %gs-relative per-CPU variables, as xv6 had them
static inline struct cpu *mycpu(void) { struct cpu *c; asm volatile("movl %%gs:0, %0" : "=r"(c)); return c; }
static inline struct proc *myproc(void) { struct proc *p; asm volatile("movl %%gs:4, %0" : "=r"(p)); return p; }
static inline void setproc(struct proc *p) { asm volatile("movl %0, %%gs:4" : : "r"(p) : "memory"); }

static inline uchar inb(ushort port) { uchar d; asm volatile("in %1,%0" : "=a"(d) : "d"(port)); return d; }
static inline void outb(ushort port, uchar d) { asm volatile("out %0,%1" : : "a"(d), "d"(port)); }
static inline void lcr3(uint v) { asm volatile("movl %0,%%cr3" : : "r"(v) : "memory"); }
static inline void cli(void) { asm volatile("cli"); }

// ---- console (uart.c, printf.c) ----
static void uartputc(int c)
{
    for (int i = 0; i < 100000 && !(inb(0x3f8 + 5) & 0x20); i++)
        ;
    outb(0x3f8 + 0, c);
}

static void consputc(int c)
{
    if (c == '\n')
        uartputc('\r');
    uartputc(c);
}

static void printint(uint x, int base)
{
    static char digits[] = "0123456789abcdef";
    char buf[16];
    int i = 0;
    do {
        buf[i++] = digits[x % base];
    } while ((x /= base) != 0);
    while (--i >= 0)
        consputc(buf[i]);
}

static void cprintf(char *fmt, ...)
{
    uint *argp = (uint *)(void *)(&fmt + 1);
    for (int i = 0; fmt[i]; i++) {
        if (fmt[i] != '%') {
            consputc(fmt[i]);
            continue;
        }
        switch (fmt[++i]) {
        case 'd': printint(*argp++, 10); break;
        case 'x': printint(*argp++, 16); break;
        case 's': for (char *s = (char *)*argp++; *s; s++) consputc(*s); break;
        default: consputc('%'); consputc(fmt[i]);
        }
    }
}

static void __attribute__((noreturn)) panic(char *s)
{
    cli();
    cprintf("panic: %s\n", s);
    outb(0xf4, 1);
    for (;;)
        ;
}

// ---- kalloc.c: a free list of pages ----
struct run { struct run *next; };
static struct run *freelist;

static void kfree(char *v)
{
    struct run *r = (struct run *)v;
    r->next = freelist;
    freelist = r;
}

static void freerange(void *vstart, void *vend)
{
    for (char *p = (char *)PGROUNDUP((uint)vstart); p + PGSIZE <= (char *)vend; p += PGSIZE)
        kfree(p);
}

static char *kalloc(void)
{
    struct run *r = freelist;
    if (r) {
        freelist = r->next;
        kpages++;
    }
    return (char *)r;
}

static void memset_(void *d, int c, uint n)
{
    uint w = (uchar)c * 0x01010101u, i = 0;
    for (; i + 4 <= n && !((uint)d & 3); i += 4)
        *(uint *)((char *)d + i) = w;
    for (; i < n; i++)
        ((char *)d)[i] = c;
}

static void memmove_(void *d, const void *s, uint n)
{
    uint i = 0;
    for (; i + 4 <= n && !(((uint)d | (uint)s) & 3); i += 4)
        *(uint *)((char *)d + i) = *(const uint *)((const char *)s + i);
    for (; i < n; i++)
        ((char *)d)[i] = ((const char *)s)[i];
}

// ---- vm.c ----
__attribute__((__aligned__(PGSIZE))) pde_t entrypgdir[1024] = {
    [0] = (0) | PTE_P | PTE_W | PTE_PS,
    [KERNBASE >> 22] = (0) | PTE_P | PTE_W | PTE_PS,
};

static void seginit(void)
{
    struct cpu *c = &cpus[0];
    c->gdt[SEG_KCODE] = SEG(STA_X | STA_R, 0, 0xffffffff, 0);
    c->gdt[SEG_KDATA] = SEG(STA_W, 0, 0xffffffff, 0);
    c->gdt[SEG_UCODE] = SEG(STA_X | STA_R, 0, 0xffffffff, DPL_USER);
    c->gdt[SEG_UDATA] = SEG(STA_W, 0, 0xffffffff, DPL_USER);
    // the per-CPU segment: 8 bytes at the struct cpu, byte-granular
    c->gdt[SEG_KCPU] = (struct segdesc){ 7, (uint)&c->cpu & 0xffff, ((uint)&c->cpu >> 16) & 0xff,
                                         STA_W, 1, 0, 1, 0, 0, 0, 1, 0, (uint)&c->cpu >> 24 };
    volatile ushort pd[3] = { sizeof(c->gdt) - 1, (uint)c->gdt, (uint)c->gdt >> 16 };
    asm volatile("lgdt (%0)" : : "r"(pd));
    asm volatile("ljmp %0, $1f\n1:" : : "i"(SEG_KCODE << 3));
    asm volatile("movw %0, %%ds; movw %0, %%es; movw %0, %%ss" : : "r"((ushort)(SEG_KDATA << 3)));
    asm volatile("movw %0, %%gs; movw %0, %%fs" : : "r"((ushort)(SEG_KCPU << 3)));
    c->cpu = c;
    setproc(0);
}


static pte_t *walkpgdir(pde_t *pgdir, const void *va, int alloc)
{
    pde_t *pde = &pgdir[PDX(va)];
    pte_t *pgtab;
    if (*pde & PTE_P) {
        pgtab = (pte_t *)P2V(PTE_ADDR(*pde));
    } else {
        if (!alloc || (pgtab = (pte_t *)kalloc()) == 0)
            return 0;
        memset_(pgtab, 0, PGSIZE);
        *pde = V2P(pgtab) | PTE_P | PTE_W | PTE_U;
    }
    return &pgtab[PTX(va)];
}

static int mappages(pde_t *pgdir, void *va, uint size, uint pa, int perm)
{
    char *a = (char *)((uint)va & ~0xFFF), *last = (char *)(((uint)va + size - 1) & ~0xFFF);
    for (;;) {
        pte_t *pte = walkpgdir(pgdir, a, 1);
        if (pte == 0)
            return -1;
        if (*pte & PTE_P)
            panic("remap");
        *pte = pa | perm | PTE_P;
        if (a == last)
            break;
        a += PGSIZE;
        pa += PGSIZE;
    }
    return 0;
}

static pde_t *setupkvm(void)
{
    pde_t *pgdir = (pde_t *)kalloc();
    if (!pgdir)
        return 0;
    memset_(pgdir, 0, PGSIZE);
    if (mappages(pgdir, P2V(0), PHYSTOP, 0, PTE_W) < 0)
        return 0;
    return pgdir;
}

static void switchkvm(void) { lcr3(V2P(kpgdir)); }

static void switchuvm(struct proc *p)
{
    struct cpu *c = mycpu();
    c->gdt[SEG_TSS] = SEG16(STS_T32A, &c->ts, sizeof(c->ts) - 1, 0);
    c->gdt[SEG_TSS].s = 0;
    c->ts.ss0 = SEG_KDATA << 3;
    c->ts.esp0 = (uint)p->kstack + PGSIZE;
    c->ts.iomb = (ushort)0xFFFF;
    asm volatile("ltr %0" : : "r"((ushort)(SEG_TSS << 3)));
    lcr3(V2P(p->pgdir));
}

static void freevm(pde_t *pgdir)
{
    for (uint i = 0; i < PDX(KERNBASE); i++) {
        if (pgdir[i] & PTE_P) {
            pte_t *pt = (pte_t *)P2V(PTE_ADDR(pgdir[i]));
            for (int j = 0; j < 1024; j++)
                if (pt[j] & PTE_P)
                    kfree(P2V(PTE_ADDR(pt[j])));
            kfree((char *)pt);
        }
    }
    kfree((char *)pgdir);
}

// a fresh user address space holding program bytes at 0
static pde_t *loaduvm(const char *code, uint n)
{
    pde_t *pgdir = setupkvm();
    for (uint a = 0; a < USERSZ; a += PGSIZE) {
        char *mem = kalloc();
        memset_(mem, 0, PGSIZE);
        if (a == 0)
            memmove_(mem, code, n);
        mappages(pgdir, (char *)a, PGSIZE, V2P(mem), PTE_W | PTE_U);
    }
    return pgdir;
}

static pde_t *copyuvm(pde_t *pgdir, uint sz)
{
    pde_t *d = setupkvm();
    for (uint i = 0; i < sz; i += PGSIZE) {
        pte_t *pte = walkpgdir(pgdir, (void *)i, 0);
        if (!pte || !(*pte & PTE_P))
            panic("copyuvm");
        char *mem = kalloc();
        memmove_(mem, P2V(PTE_ADDR(*pte)), PGSIZE);
        mappages(d, (void *)i, PGSIZE, V2P(mem), *pte & 0xFFF & ~PTE_P);
    }
    return d;
}

// ---- proc.c ----
extern void trapret(void);
extern void swtch(struct context **, struct context *);

static void forkret(void)
{
    // the first time a process runs: into trapret, and its IRET to user mode
}

static struct proc *allocproc(void)
{
    struct proc *p;
    for (p = ptable; p < &ptable[NPROC]; p++)
        if (p->state == UNUSED)
            goto found;
    return 0;
found:
    p->state = EMBRYO;
    p->pid = nextpid++;
    p->quiet = 0;
    if ((p->kstack = kalloc()) == 0) {
        p->state = UNUSED;
        return 0;
    }
    char *sp = p->kstack + PGSIZE;
    sp -= sizeof *p->tf;
    p->tf = (struct trapframe *)sp;
    sp -= 4;
    *(uint *)sp = (uint)trapret;
    sp -= sizeof *p->context;
    p->context = (struct context *)sp;
    memset_(p->context, 0, sizeof *p->context);
    p->context->eip = (uint)forkret;
    return p;
}

static void set_user_tf(struct proc *p)
{
    memset_(p->tf, 0, sizeof(*p->tf));
    p->tf->cs = (SEG_UCODE << 3) | DPL_USER;
    p->tf->ds = p->tf->es = p->tf->ss = p->tf->fs = p->tf->gs = (SEG_UDATA << 3) | DPL_USER;
    p->tf->eflags = 0x200;                 // FL_IF
    p->tf->esp = USERSZ;
    p->tf->eip = 0;
}

extern char prog_init[], prog_init_end[], prog_hello[], prog_hello_end[], prog_spin[], prog_spin_end[];
static char *progs[3][2] = {
    { prog_init, prog_init_end }, { prog_hello, prog_hello_end }, { prog_spin, prog_spin_end } };
static char *prog_names[3] = { "init", "hello", "spin" };

static void userinit(void)
{
    struct proc *p = allocproc();
    initproc = p;
    p->pgdir = loaduvm(progs[0][0], progs[0][1] - progs[0][0]);
    p->sz = USERSZ;
    set_user_tf(p);
    p->state = RUNNABLE;
}

static void sched(void)
{
    struct proc *p = myproc();
    swtch(&p->context, mycpu()->scheduler);
}

static void yield(void)
{
    myproc()->state = RUNNABLE;
    sched();
}

static void sleep(void *chan)
{
    struct proc *p = myproc();
    p->chan = chan;
    p->state = SLEEPING;
    sched();
    p->chan = 0;
}

static void wakeup(void *chan)
{
    for (struct proc *p = ptable; p < &ptable[NPROC]; p++)
        if (p->state == SLEEPING && p->chan == chan)
            p->state = RUNNABLE;
}

static int fork(void)
{
    struct proc *np, *cur = myproc();
    if ((np = allocproc()) == 0)
        return -1;
    np->pgdir = copyuvm(cur->pgdir, cur->sz);
    np->sz = cur->sz;
    np->parent = cur;
    *np->tf = *cur->tf;
    np->tf->eax = 0;                       // fork returns 0 in the child
    np->state = RUNNABLE;
    if (!cur->quiet)
        cprintf("fork: %d -> %d\n", cur->pid, np->pid);
    return np->pid;
}

static int exec(int n)
{
    struct proc *p = myproc();
    if (n < 0 || n > 2)
        return -1;
    pde_t *old = p->pgdir;
    p->pgdir = loaduvm(progs[n][0], progs[n][1] - progs[n][0]);
    p->sz = USERSZ;
    p->quiet = n == 2;
    if (!p->quiet)
        cprintf("exec: pid %d runs %s\n", p->pid, prog_names[n]);
    set_user_tf(p);
    switchuvm(p);
    freevm(old);
    return 0;
}

static void __attribute__((noreturn)) exit_(int status)
{
    struct proc *cur = myproc();
    if (cur == initproc) {
        cprintf("init exits %d: ticks %s, spinners preempted by the timer %s, %d pages allocated\n",
                status, ticks > 0 ? "yes" : "no", preempts > 0 ? "yes" : "no", kpages);
        outb(0xf4, 0);
        for (;;)
            ;
    }
    if (!cur->quiet)
        cprintf("exit: pid %d status %d\n", cur->pid, status);
    cur->xstate = status;
    wakeup(cur->parent);
    for (struct proc *p = ptable; p < &ptable[NPROC]; p++)
        if (p->parent == cur)
            p->parent = initproc;
    cur->state = ZOMBIE;
    sched();
    panic("zombie exit");
}

static int wait(void)
{
    struct proc *cur = myproc();
    for (;;) {
        int havekids = 0;
        for (struct proc *p = ptable; p < &ptable[NPROC]; p++) {
            if (p->parent != cur)
                continue;
            havekids = 1;
            if (p->state == ZOMBIE) {
                int pid = p->pid;
                if (!p->quiet)
                    cprintf("wait: pid %d reaps %d (status %d)\n", cur->pid, pid, p->xstate);
                kfree(p->kstack);
                freevm(p->pgdir);
                p->kstack = 0;
                p->pid = 0;
                p->parent = 0;
                p->state = UNUSED;
                return pid;
            }
        }
        if (!havekids)
            return -1;
        sleep(cur);
    }
}

static void scheduler(void)
{
    struct cpu *c = mycpu();
    c->proc = 0;
    for (;;) {
        asm volatile("sti; nop; cli");      // let the timer in between processes
        int ran = 0;
        for (struct proc *p = ptable; p < &ptable[NPROC]; p++) {
            if (p->state != RUNNABLE)
                continue;
            ran = 1;
            setproc(p);
            switchuvm(p);
            p->state = RUNNING;
            swtch(&c->scheduler, p->context);
            switchkvm();
            setproc(0);
        }
        if (!ran)
            asm volatile("sti; hlt; cli");
    }
}

// ---- syscall.c, trap.c ----
static void syscall(struct trapframe *tf)
{
    struct proc *p = myproc();
    switch (tf->eax) {
    case 1: tf->eax = fork(); break;
    case 2: exit_(tf->ebx);
    case 3: tf->eax = wait(); break;
    case 4: tf->eax = exec(tf->ebx); break;
    case 5: {
        char *s = (char *)tf->ebx;           // the user's own address space is current
        for (uint i = 0; i < tf->ecx && (uint)s + i < p->sz; i++)
            consputc(s[i]);
        tf->eax = tf->ecx;
        break;
    }
    case 6: tf->eax = p->pid; break;
    case 7: cprintf("pid %d shows %d\n", p->pid, tf->ebx); break;
    default: tf->eax = -1;
    }
}

void trap(struct trapframe *tf)
{
    if (tf->trapno == T_SYSCALL) {
        syscall(tf);
        return;
    }
    if (tf->trapno == T_IRQ0) {
        ticks++;
        outb(0x20, 0x20);
        struct proc *p = myproc();
        if (p && p->state == RUNNING && (tf->cs & 3) == DPL_USER) {
            if (p->quiet)
                preempts++;
            yield();
        }
        return;
    }
    cprintf("trap %d err %x eip %x cs %x cr2 ?\n", tf->trapno, tf->err, tf->eip, tf->cs);
    panic("trap");
}

static void tvinit(void)
{
    for (int i = 0; i < 64; i++)
        SETGATE(idt[i], 0, SEG_KCODE << 3, vectors[i], 0);
    SETGATE(idt[T_SYSCALL], 0, SEG_KCODE << 3, vectors[T_SYSCALL], DPL_USER);
    volatile ushort pd[3] = { sizeof(idt) - 1, (uint)idt, (uint)idt >> 16 };
    asm volatile("lidt (%0)" : : "r"(pd));
}

static void picinit(void)
{
    outb(0x20, 0x11); outb(0x21, T_IRQ0); outb(0x21, 4); outb(0x21, 1);
    outb(0xa0, 0x11); outb(0xa1, T_IRQ0 + 8); outb(0xa1, 2); outb(0xa1, 1);
    outb(0x21, 0xfe);                       // IRQ 0 only
    outb(0xa1, 0xff);
}

static void timerinit(void)
{
    uint div = 1193182 / 50000;             // 50 kHz: a spinner is preempted often
    outb(0x43, 0x34);
    outb(0x40, div & 0xff);
    outb(0x40, div >> 8);
}

int main(void)
{
    outb(0x3f8 + 1, 0);
    freerange(end, P2V(4 * 1024 * 1024));   // kinit1
    kpgdir = setupkvm();
    switchkvm();
    seginit();
    cprintf("xv6ish: struct cpu through gs %s, kernel at %x\n",
            mycpu() == &cpus[0] ? "yes" : "no", (uint)main);
    picinit();
    tvinit();
    timerinit();
    kpages = 0;
    userinit();
    scheduler();
    return 0;
}
