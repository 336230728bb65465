/* cowk: a hobby kernel in the usual style -- processes with a page directory and a
 * kernel stack each, a C scheduler switching them in software (swtch, TSS.ESP0 set for
 * the next), system calls by INT 0x80 (print, fork, yield, exit), and fork by
 * copy-on-write: the parent's writable user pages made read-only in both and counted,
 * the write fault copying the page while it is shared and giving it back writable when
 * it is not any more.  The user program writes its data page from the child and then the
 * parent, and its stack from the child after the parent exited.
 *
 * Expected lines: tests/test_osdev3.py (checked on QEMU). */

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;

struct frame {
    u32 edi, esi, ebp, esp_, ebx, edx, ecx, eax, num, err, eip, cs, eflags, esp, ss;
};

struct tss {
    u32 link, esp0, ss0, esp1, ss1, esp2, ss2, cr3, eip, eflags, eax, ecx, edx, ebx, esp,
        ebp, esi, edi, es, cs, ss, ds, fs, gs, ldt;
    u16 trap, iomap;
} __attribute__((packed));

enum { KCODE = 0x08, KDATA = 0x10, UCODE = 0x1b, UDATA = 0x23, TSSSEL = 0x28 };
enum { UNUSED, RUNNABLE, RUNNING, ZOMBIE };
#define USER 0x40000000u
#define COW 0x200                     /* an available PTE bit: copy on write */
#define NPROC 4

struct proc {
    int state, pid;
    u32 *pd, *pt;                     /* its page directory and its user page table */
    u8 *kstack;
    u32 esp;                          /* saved by swtch */
};

static u64 gdt[6];
static u64 idt[0x81];
static struct tss tss;
static struct proc procs[NPROC], *cur;
static u32 kpt[1024] __attribute__((aligned(4096)));      /* the kernel's 4 MiB, shared */
static u8 refs[1024];                 /* per frame below 4 MiB */
static u32 next_frame = 0x200000;
u8 boot_stack[4096] __attribute__((aligned(16)));
__asm__(".globl boot_stack_top\n.set boot_stack_top, boot_stack + 4096");
extern char user_page[];
extern void trapret(void), swtch(u32 *old, u32 new_esp), user_start(void);
extern void isr0(void), isr6(void), isr13(void), isr14(void), isr0x80(void);

static inline void outb(u16 port, u8 v) { __asm__ volatile("outb %0, %1" :: "a"(v), "Nd"(port)); }
static inline u8 inb(u16 port) { u8 v; __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port)); return v; }

static void putch(char c)
{
    if (c == '\n')
        putch('\r');
    while ((inb(0x3fd) & 0x20) == 0)
        ;
    outb(0x3f8, c);
}

static void print(const char *fmt, ...)
{
    __builtin_va_list ap;
    __builtin_va_start(ap, fmt);
    while (*fmt) {
        char c = *fmt++;
        if (c != '%') {
            putch(c);
            continue;
        }
        c = *fmt++;
        if (c == 's') {
            const char *s = __builtin_va_arg(ap, const char *);
            while (*s)
                putch(*s++);
            continue;
        }
        u32 v = __builtin_va_arg(ap, u32), base = c == 'd' ? 10 : 16;
        char buf[12];
        int n = 0;
        do {
            buf[n++] = "0123456789abcdef"[v % base];
            v /= base;
        } while (v);
        while (n)
            putch(buf[--n]);
    }
    __builtin_va_end(ap);
}

static void finish(u8 code)
{
    outb(0xf4, code);
    for (;;)
        __asm__ volatile("hlt");
}

static u32 alloc(void)
{
    u32 f = next_frame;
    next_frame += 0x1000;
    for (int i = 0; i < 1024; i++)
        ((u32 *)f)[i] = 0;
    refs[f >> 12] = 1;
    return f;
}

static void drop(u32 f)
{
    refs[f >> 12]--;
}

static u64 seg(u32 base, u32 limit, u32 access, u32 flags)
{
    return (u64)(limit & 0xffff) | (u64)(base & 0xffffff) << 16 | (u64)access << 40 |
           (u64)((limit >> 16) & 0xf) << 48 | (u64)flags << 52 | (u64)(base >> 24) << 56;
}

static void set_gate(int n, void (*fn)(void), int dpl, int type)
{
    u32 off = (u32)fn;
    idt[n] = (u64)(off & 0xffff) | (u64)KCODE << 16 | (u64)(0x80 | dpl << 5 | type) << 40 |
             (u64)(off >> 16) << 48;
}

struct dtr { u16 limit; u32 base; } __attribute__((packed));

static struct proc *newproc(void)
{
    static int nextpid = 1;
    for (int i = 0; i < NPROC; i++)
        if (procs[i].state == UNUSED) {
            struct proc *p = &procs[i];
            p->pid = nextpid++;
            p->pd = (u32 *)alloc();
            p->pt = (u32 *)alloc();
            p->kstack = (u8 *)alloc();
            p->pd[0] = (u32)kpt | 3;
            p->pd[USER >> 22] = (u32)p->pt | 7;
            return p;
        }
    return 0;
}

/* its kernel stack: a trap frame to return to user mode with, trapret below it, and
 * what swtch pops */
static void prepare(struct proc *p, struct frame *tf)
{
    u32 *sp = (u32 *)(p->kstack + 4096);
    sp -= sizeof *tf / 4;
    *(struct frame *)sp = *tf;
    *--sp = (u32)trapret;
    for (int i = 0; i < 4; i++)
        *--sp = 0;
    p->esp = (u32)sp;
    p->state = RUNNABLE;
}

static u32 cr3(void) { u32 v; __asm__ volatile("mov %%cr3, %0" : "=r"(v)); return v; }

static void run(struct proc *p)
{
    struct proc *old = cur;
    cur = p;
    p->state = RUNNING;
    tss.esp0 = (u32)p->kstack + 4096;
    __asm__ volatile("mov %0, %%cr3" :: "r"(p->pd) : "memory");
    static u32 dummy;
    swtch(old ? &old->esp : &dummy, p->esp);
}

/* the next runnable process after the current one, round robin */
static void schedule(void)
{
    int start = cur - procs;
    for (int k = 1; k <= NPROC; k++) {
        struct proc *p = &procs[(start + k) % NPROC];
        if (p->state == RUNNABLE || (p == cur && p->state == RUNNING)) {
            if (p == cur)
                return;
            if (cur->state == RUNNING)
                cur->state = RUNNABLE;
            run(p);
            return;
        }
    }
    print("all exited; frames in use %d\n", ({ int n = 0; for (int i = 0; i < 1024; i++) n += refs[i] != 0; n; }));
    finish(0);
}

static int fork(struct frame *tf)
{
    struct proc *c = newproc();
    for (int i = 0; i < 1024; i++) {
        u32 e = cur->pt[i];
        if (!(e & 1))
            continue;
        if (e & 2)
            e = (e & ~2u) | COW;
        cur->pt[i] = c->pt[i] = e;
        refs[e >> 12]++;
    }
    __asm__ volatile("mov %0, %%cr3" :: "r"(cr3()) : "memory");     /* the parent's, flushed */
    struct frame child = *tf;
    child.eax = 0;
    prepare(c, &child);
    return c->pid;
}

static void exitproc(void)
{
    for (int i = 0; i < 1024; i++)
        if (cur->pt[i] & 1)
            drop(cur->pt[i] & ~0xfffu);
    drop((u32)cur->pt);
    drop((u32)cur->pd);
    cur->state = ZOMBIE;          /* (its kernel stack is the one this runs on: kept) */
    schedule();
}

static void cow_fault(struct frame *tf, u32 addr)
{
    u32 *pte = &cur->pt[(addr >> 12) & 0x3ff];
    if ((tf->err & 7) != 7 || addr < USER || !(*pte & COW)) {
        print("pid %d: fault at %x err %x eip %x\n", cur->pid, addr, tf->err, tf->eip);
        finish(1);
    }
    u32 f = *pte & ~0xfffu;
    const char *how = "reused";
    if (refs[f >> 12] > 1) {
        u32 n = alloc();
        for (int i = 0; i < 1024; i++)
            ((u32 *)n)[i] = ((u32 *)f)[i];
        drop(f);
        f = n;
        how = "copied";
    }
    *pte = f | 7;
    __asm__ volatile("invlpg (%0)" :: "r"(addr) : "memory");
    print("cow: pid %d page %x %s (err %x)\n", cur->pid, addr & ~0xfffu, how, tf->err);
}

void trap(struct frame *tf)
{
    if (tf->num == 14) {
        u32 addr;
        __asm__ volatile("mov %%cr2, %0" : "=r"(addr));
        cow_fault(tf, addr);
        return;
    }
    if (tf->num != 0x80) {
        print("trap %x err %x at %x\n", tf->num, tf->err, tf->eip);
        finish(1);
    }
    /* the frame lies at the top of this process's kernel stack: TSS.ESP0 was its own */
    if ((u32)tf + sizeof *tf != (u32)cur->kstack + 4096)
        print("pid %d: frame not at its kernel stack's top\n", cur->pid);
    switch (tf->eax) {
    case 1:
        print("p%d: %x\n", cur->pid, tf->ebx);
        break;
    case 2:
        tf->eax = fork(tf);
        break;
    case 3:
        schedule();
        break;
    case 4:
        exitproc();
        break;
    }
}

void main(void)
{
    outb(0x21, 0xff);
    outb(0xa1, 0xff);
    print("cowk: start\n");
    gdt[1] = seg(0, 0xfffff, 0x9a, 0xc);
    gdt[2] = seg(0, 0xfffff, 0x92, 0xc);
    gdt[3] = seg(0, 0xfffff, 0xfa, 0xc);
    gdt[4] = seg(0, 0xfffff, 0xf2, 0xc);
    gdt[5] = seg((u32)&tss, sizeof tss - 1, 0x89, 0);
    struct dtr g = { sizeof gdt - 1, (u32)gdt }, i = { sizeof idt - 1, (u32)idt };
    __asm__ volatile("lgdt %0" :: "m"(g));
    __asm__ volatile("ljmp %0, $1f; 1: mov %1, %%ss; mov %2, %%ds; mov %2, %%es" ::
                     "i"(KCODE), "r"(KDATA), "r"(UDATA));
    set_gate(0, isr0, 0, 0xe);
    set_gate(6, isr6, 0, 0xe);
    set_gate(13, isr13, 0, 0xe);
    set_gate(14, isr14, 0, 0xe);
    set_gate(0x80, isr0x80, 3, 0xe);
    __asm__ volatile("lidt %0" :: "m"(i));
    tss.ss0 = KDATA;
    tss.iomap = sizeof tss;
    __asm__ volatile("ltr %w0" :: "r"(TSSSEL));
    for (u32 a = 0; a < 0x400000; a += 0x1000)
        kpt[a >> 12] = a | 3;
    /* the first process: its code (the kernel image's user page, shared read-only),
     * a data page holding 5, a stack page */
    struct proc *p = newproc();
    p->pt[0] = (u32)user_page | 5;
    refs[(u32)user_page >> 12] = 1;
    u32 data = alloc(), stack = alloc();
    *(u32 *)data = 5;
    p->pt[1] = data | 7;
    p->pt[2] = stack | 7;
    __asm__ volatile("mov %0, %%cr3" :: "r"(p->pd));
    u32 cr0;
    __asm__ volatile("mov %%cr0, %0" : "=r"(cr0));
    __asm__ volatile("mov %0, %%cr0" :: "r"(cr0 | 0x80010000u));
    struct frame tf = { 0 };
    tf.eip = USER;
    tf.cs = UCODE;
    tf.eflags = 0x2;
    tf.esp = USER + 0x3000;
    tf.ss = UDATA;
    prepare(p, &tf);
    cur = 0;
    run(p);
}
