/*
 * sysk: a kernel of the SYSENTER era.  Two user threads enter it by SYSENTER (and INT
 * 0x80, the slow path) and yield to each other; the FPU follows them lazily (CR0.TS,
 * #NM, FXSAVE/FXRSTOR: SDM Vol. 3 §13.4), each with its own x87 control word, MXCSR,
 * x87 stack and XMM registers; paging is PAE (2 MiB pages and 4 KiB ones) when CPUID
 * says the processor has it.  On the way:
 *
 *  - SYSENTER with TF set: it does not clear TF, so the single-step trap comes at the
 *    kernel's entry point, at ring 0 (SDM Vol. 2 SYSENTER; Linux's entry_SYSENTER_32
 *    debug fixup); SYSEXIT at ring 3 and SYSENTER with IA32_SYSENTER_CS = 0 are #GP(0);
 *  - RDTSC at ring 3 under CR4.TSD is #GP(0), and counts on once TSD is clear;
 *  - debug registers on user code and data: an execution breakpoint (fault, RF to go
 *    on), a write breakpoint on a user variable hit by the user and by the kernel
 *    (inside a system call), a 2-byte read/write breakpoint, two breakpoints matched by
 *    one access (an 8-byte FSTP: DR6 B1|B2), and an I/O breakpoint (CR4.DE, R/W = 10) on the port the
 *    kernel writes (SDM Vol. 3 §17.2.4-5);
 *  - the FXSAVE image a thread's state leaves: FCW, FSW, abridged FTW, MXCSR, the last
 *    x87 instruction's opcode and CS.
 *
 * Expected lines: tests/test_osdev2.py (checked on QEMU, against the SDM where QEMU's TCG
 * does not do what it says).
 */
typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;

#define UTEXT __attribute__((section(".utext"), noinline))
#define UDATA __attribute__((section(".udata")))

struct trapframe {
    u32 edi, esi, ebp, esp0, ebx, edx, ecx, eax;
    u32 trapno, err, eip, cs, eflags, esp, ss;
};

struct sysargs { u32 eax, ebx, edx, ecx; };

/* ---------------------------------------------------------------- console */
static inline void outb(u16 port, u8 val) { asm volatile("outb %0, %1" : : "a"(val), "Nd"(port)); }
static inline u8 inb(u16 port) { u8 r; asm volatile("inb %1, %0" : "=a"(r) : "Nd"(port)); return r; }

static void serial_putc(char c)
{
    while (!(inb(0x3f8 + 5) & 0x20))
        ;
    outb(0x3f8, (u8)c);
}

static void kputs(const char *s)
{
    for (; *s; s++) {
        if (*s == '\n')
            serial_putc('\r');
        serial_putc(*s);
    }
}

static void kputhex(u32 v)
{
    char buf[9];
    int i = 8;
    buf[8] = 0;
    do {
        buf[--i] = "0123456789abcdef"[v & 15];
        v >>= 4;
    } while (v);
    kputs(buf + i);
}

/* printk: %x and %s */
static void printk(const char *fmt, ...)
{
    __builtin_va_list ap;
    __builtin_va_start(ap, fmt);
    char one[2] = {0, 0};
    for (const char *p = fmt; *p; p++) {
        if (*p == '%' && p[1] == 'x') {
            kputhex(__builtin_va_arg(ap, u32));
            p++;
        } else if (*p == '%' && p[1] == 's') {
            kputs(__builtin_va_arg(ap, const char *));
            p++;
        } else {
            one[0] = *p;
            kputs(one);
        }
    }
    __builtin_va_end(ap);
}

static void __attribute__((noreturn)) poweroff(u8 code)
{
    outb(0xf4, code);
    for (;;)
        asm volatile("cli; hlt");
}

/* ---------------------------------------------------------------- cpu helpers */
static inline void wrmsr(u32 msr, u32 lo) { asm volatile("wrmsr" : : "c"(msr), "a"(lo), "d"(0)); }
static inline u32 read_cr0(void) { u32 v; asm volatile("mov %%cr0, %0" : "=r"(v)); return v; }
static inline u32 read_cr4(void) { u32 v; asm volatile("mov %%cr4, %0" : "=r"(v)); return v; }
static inline void write_cr0(u32 v) { asm volatile("mov %0, %%cr0" : : "r"(v) : "memory"); }
static inline void write_cr4(u32 v) { asm volatile("mov %0, %%cr4" : : "r"(v) : "memory"); }
static inline void set_dr(int n, u32 v)
{
    switch (n) {
    case 0: asm volatile("mov %0, %%dr0" : : "r"(v) : "memory"); break;
    case 1: asm volatile("mov %0, %%dr1" : : "r"(v) : "memory"); break;
    case 2: asm volatile("mov %0, %%dr2" : : "r"(v) : "memory"); break;
    case 3: asm volatile("mov %0, %%dr3" : : "r"(v) : "memory"); break;
    case 6: asm volatile("mov %0, %%dr6" : : "r"(v) : "memory"); break;
    case 7: asm volatile("mov %0, %%dr7" : : "r"(v) : "memory"); break;
    }
}
static inline u32 get_dr6(void) { u32 v; asm volatile("mov %%dr6, %0" : "=r"(v)); return v; }

#define CR0_MP 0x2
#define CR0_TS 0x8
#define CR0_NE 0x20
#define CR4_TSD 0x4
#define CR4_DE 0x8
#define CR4_PAE 0x20
#define CR4_OSFXSR 0x200
#define CR4_OSXMMEXCPT 0x400

/* ---------------------------------------------------------------- descriptors */
static u64 gdt[6] __attribute__((aligned(8)));
static u64 idt[256] __attribute__((aligned(8)));
static u32 tss[26] __attribute__((aligned(16)));
extern char kstack_top[];
extern void trap1(void), trap3(void), trap6(void), trap7(void), trap13(void), trap14(void),
    trap16(void), trap19(void), trap128(void), sysenter_entry(void);
void enter_ring3(u32 eip, u32 esp) __attribute__((noreturn));

static u64 mkseg(u32 type_dpl)
{
    return 0x0000ffffull | (u64)type_dpl << 40 | 0xcfull << 48;
}

static void mkgate(int v, void (*fn)(void), int dpl)
{
    u32 off = (u32)fn;
    idt[v] = (off & 0xffff) | 0x08u << 16 | (u64)(0x8e | dpl << 5) << 40 | (u64)(off >> 16) << 48;
}

static void gdt_idt_init(void)
{
    gdt[1] = mkseg(0x9a);                   /* SYSENTER_CS: ring-0 code, SS the next one */
    gdt[2] = mkseg(0x92);
    gdt[3] = mkseg(0xfa);                   /* SYSEXIT: SYSENTER_CS+16 and +24, RPL 3 */
    gdt[4] = mkseg(0xf2);
    u32 t = (u32)tss;
    gdt[5] = (sizeof tss - 1) | (u64)(t & 0xffffff) << 16 | 0x89ull << 40 | (u64)(t >> 24) << 56;
    tss[1] = (u32)kstack_top;
    tss[2] = 0x10;
    tss[25] = sizeof tss << 16;
    mkgate(1, trap1, 0);
    mkgate(3, trap3, 3);
    mkgate(6, trap6, 0);
    mkgate(7, trap7, 0);
    mkgate(13, trap13, 0);
    mkgate(14, trap14, 0);
    mkgate(16, trap16, 0);
    mkgate(19, trap19, 0);
    mkgate(0x80, trap128, 3);
    struct { u16 l; u32 b; } __attribute__((packed)) g = { sizeof gdt - 1, (u32)gdt },
                                                     i = { sizeof idt - 1, (u32)idt };
    asm volatile("lgdt %0; lidt %1; ljmp $8, $1f; 1: mov $0x10, %%ax; mov %%ax, %%ds;"
                 "mov %%ax, %%es; mov %%ax, %%ss; mov $0x23, %%ax; mov %%ax, %%fs; mov %%ax, %%gs;"
                 "mov $0x28, %%ax; ltr %%ax" : : "m"(g), "m"(i) : "eax", "memory");
    wrmsr(0x174, 0x08);                     /* IA32_SYSENTER_CS */
    wrmsr(0x175, (u32)kstack_top);          /* IA32_SYSENTER_ESP */
    wrmsr(0x176, (u32)sysenter_entry);      /* IA32_SYSENTER_EIP */
}

/* ---------------------------------------------------------------- paging (PAE) */
static u64 pdpt[4] __attribute__((aligned(32)));
static u64 pd0[512] __attribute__((aligned(4096)));
static u64 pt0[512] __attribute__((aligned(4096)));
static u32 pd32[1024] __attribute__((aligned(4096)));
static u32 pt32[1024] __attribute__((aligned(4096)));
extern char __utext_start[], __utext_end[], __udata_start[], __udata_end[];
static int pae;

static void paging_init(void)
{
    u32 a, b, c, d;
    asm volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(1));
    pae = (d >> 6) & 1;
    for (u32 i = 0; i < 512; i++)
        pt0[i] = (u64)i << 12 | 3;
    for (u32 i = 0; i < 1024; i++)
        pt32[i] = i << 12 | 3;
    for (u32 p = (u32)__utext_start; p < (u32)__udata_end; p += 4096) {
        pt0[p >> 12] |= 4;                  /* the user pages */
        pt32[p >> 12] |= 4;
    }
    pd0[0] = (u32)pt0 | 7;
    for (u32 i = 1; i < 4; i++)
        pd0[i] = (u64)i << 21 | 0x83;       /* 2 MiB pages, supervisor */
    pdpt[0] = (u32)pd0 | 1;
    pd32[0] = (u32)pt32 | 7;
    pd32[1] = 0x400000 | 0x83;              /* (the 32-bit fallback: one 4 MiB page) */
    if (pae) {
        write_cr4(read_cr4() | CR4_PAE);
        asm volatile("mov %0, %%cr3" : : "r"(pdpt) : "memory");
    } else {
        write_cr4(read_cr4() | 0x10);
        asm volatile("mov %0, %%cr3" : : "r"(pd32) : "memory");
    }
    write_cr0(read_cr0() | 0x80000000u);
}

/* ---------------------------------------------------------------- user threads */
struct uthread_result {
    u32 x87[2];                             /* st(0) stored as a double */
    u32 xmm[4];
    u32 mxcsr, fcw;
    u32 tsc_ok;
};
UDATA struct uthread_result res[2];
/* DR1 watches w (writes, 4 bytes), DR2 rw[0] (reads and writes, 2 bytes) */
UDATA struct { volatile u32 w; volatile u16 rw[2]; } wv = { 0x1111, { 0x22, 0x33 } };
UDATA float vin[2][4] = { { 1, 2, 3, 4 }, { 10, 20, 30, 40 } };
UDATA u32 ucw[2] = { 0x0f7f, 0x037f };      /* x87 control words: round toward 0, nearest */
UDATA u32 umx[2] = { 0x3f80, 0x1f80 };      /* MXCSR: round down, nearest */
UDATA u8 ustack[2][2048] __attribute__((aligned(16)));

/* a system call: everything the thread keeps in registers is on its own stack meanwhile */
static inline __attribute__((always_inline)) u32 usys(u32 n, u32 arg)
{
    u32 r;
    asm volatile("push %%ebp; push %%esi; push %%edi; mov %%esp, %%ecx; mov $1f, %%edx;"
                 "sysenter; 1: pop %%edi; pop %%esi; pop %%ebp"
                 : "=a"(r), "+b"(arg) : "a"(n) : "ecx", "edx", "memory", "cc");
    return r;
}

enum { SYS_YIELD = 1, SYS_EXIT, SYS_TSD_OFF, SYS_POKE, SYS_NOCS, SYS_IO };

UDATA u32 bp_site_addr;
UTEXT void thread_main(u32 me)
{
    /* x87 and SSE state of this thread's own */
    asm volatile("fldcw %0; ldmxcsr %1" : : "m"(ucw[me]), "m"(umx[me]));
    if (me == 0)
        asm volatile("fldpi; fld1; faddp" ::: "memory");
    else
        asm volatile("fldl2e; fldlg2; fsubrp" ::: "memory");
    asm volatile("movups %0, %%xmm1" : : "m"(vin[me][0]));
    usys(SYS_YIELD, 0);
    asm volatile("addps %%xmm1, %%xmm1; movups %%xmm1, %0" : "=m"(res[me].xmm[0]) :: "memory");
    usys(SYS_YIELD, 0);
    asm volatile("fstpl %0; stmxcsr %1; fnstcw %2"
                 : "=m"(res[me].x87[0]), "=m"(res[me].mxcsr), "=m"(res[me].fcw) :: "memory");
    if (me == 1)
        usys(SYS_EXIT, 0);

    /* thread 0 alone from here: RDTSC under CR4.TSD, then without */
    u32 lo1, hi1, lo2, hi2;
    asm volatile("rdtsc" : "=a"(lo1), "=d"(hi1));          /* #GP(0): skipped */
    usys(SYS_TSD_OFF, 0);
    asm volatile("rdtsc" : "=a"(lo1), "=d"(hi1));
    asm volatile("rdtsc" : "=a"(lo2), "=d"(hi2));
    res[0].tsc_ok = hi2 > hi1 || (hi2 == hi1 && lo2 > lo1);

    /* breakpoints: an instruction (DR0), a write (DR1), a 2-byte read/write (DR2) */
    asm volatile(".globl bp_site; bp_site: nop");
    wv.w = 0x4444;                           /* DR1 */
    (void)wv.rw[1];                          /* the 2 bytes after DR2's: no hit */
    wv.rw[0] = 0x55;                         /* DR2 */
    asm volatile("fld1; fstpl %0" : "=m"(wv) :: "memory");   /* 8 bytes: DR1 and DR2 at once */
    usys(SYS_POKE, 0);                       /* the kernel writes wv.w: DR1 at ring 0 */
    usys(SYS_IO, 0);                         /* the kernel writes port 0x80: DR3 (I/O) */

    /* SYSENTER with TF set: the trap comes at the kernel's entry */
    asm volatile("pushf; orl $0x100, (%%esp); popf; push %%ebp; push %%esi; push %%edi;"
                 "mov %%esp, %%ecx; mov $1f, %%edx; mov %0, %%eax; sysenter;"
                 "1: pop %%edi; pop %%esi; pop %%ebp"
                 : : "i"(SYS_YIELD), "b"(0) : "eax", "ecx", "edx", "memory", "cc");
    asm volatile("sysexit");                 /* at ring 3: #GP(0), skipped */
    asm volatile("int $0x80" : : "a"(SYS_NOCS) : "memory");   /* IA32_SYSENTER_CS = 0 ... */
    asm volatile("sysenter");                /* ... #GP(0), skipped (the kernel restores it) */
    usys(SYS_EXIT, 0);
}

UTEXT void thread_entry(void)
{
    u32 sp;
    asm volatile("mov %%esp, %0" : "=r"(sp));
    thread_main(sp >= (u32)ustack[1]);      /* which thread: by its stack */
}

/* ---------------------------------------------------------------- scheduler, lazy FPU */
struct thread {
    u32 eip, esp;
    int live;
    u32 nm;                                  /* its #NM faults */
    u8 fx[512] __attribute__((aligned(16)));
};
static struct thread threads[2];
static int cur, fpu_owner = -1, fpu_used[2];
static u32 nm_total;

static void fpu_switch(void)
{
    asm volatile("clts");
    if (fpu_owner == cur)
        return;
    if (fpu_owner >= 0)
        asm volatile("fxsave %0" : "=m"(threads[fpu_owner].fx) :: "memory");
    if (fpu_used[cur]) {
        asm volatile("fxrstor %0" : : "m"(threads[cur].fx) : "memory");
    } else {
        u32 mx = 0x1f80;
        asm volatile("fninit; ldmxcsr %0" : : "m"(mx));
        fpu_used[cur] = 1;
    }
    fpu_owner = cur;
}

static void switch_to(int next, struct sysargs *a)
{
    threads[cur].eip = a->edx;
    threads[cur].esp = a->ecx;
    cur = next;
    a->edx = threads[cur].eip;
    a->ecx = threads[cur].esp;
    write_cr0(read_cr0() | CR0_TS);          /* the FPU follows on first use */
}

static void report(void);

static u32 db_n, db_eip[20], db_dr6[20], db_cs[20], sys_tf_hits;
static u32 gp_n, gp_eip[8], gp_err[8];

void sys_dispatch(struct sysargs *a)
{
    switch (a->eax) {
    case SYS_YIELD:
        if (threads[cur ^ 1].live)
            switch_to(cur ^ 1, a);
        break;
    case SYS_EXIT:
        threads[cur].live = 0;
        if (!threads[cur ^ 1].live)
            report();
        switch_to(cur ^ 1, a);
        break;
    case SYS_TSD_OFF:
        write_cr4(read_cr4() & ~CR4_TSD);
        break;
    case SYS_POKE:
        wv.w = 0x8888;
        break;
    case SYS_IO:
        outb(0x80, 0x42);
        break;
    }
    a->eax = 0;
}

void trap_dispatch(struct trapframe *tf)
{
    extern char bp_site[];
    switch (tf->trapno) {
    case 7:                                  /* #NM: this thread's FPU state, lazily */
        threads[cur].nm++;
        nm_total++;
        fpu_switch();
        return;
    case 1: {
        u32 dr6 = get_dr6();
        if (db_n < 20) {
            db_eip[db_n] = tf->eip;
            db_dr6[db_n] = dr6;
            db_cs[db_n] = tf->cs;
        }
        db_n++;
        set_dr(6, 0);
        if (dr6 & 1)                         /* the instruction breakpoint: go on with RF */
            tf->eflags |= 0x10000;
        if (tf->eip == (u32)sysenter_entry) {
            sys_tf_hits++;
            tf->eflags &= ~0x100u;           /* (the user's TF came in with SYSENTER) */
        }
        return;
    }
    case 13:
        if (gp_n < 8) {
            gp_eip[gp_n] = tf->eip;
            gp_err[gp_n] = tf->err;
        }
        gp_n++;
        if ((tf->cs & 3) == 3) {
            tf->eip += 2;                    /* RDTSC, SYSEXIT, SYSENTER: two bytes each */
            wrmsr(0x174, 0x08);
            return;
        }
        break;
    case 0x80:
        if (tf->eax == SYS_NOCS)
            wrmsr(0x174, 0);
        return;
    }
    printk("unexpected trap %x err %x at %x:%x (bp_site %x)\n", tf->trapno, tf->err, tf->cs,
           tf->eip, (u32)bp_site);
    poweroff(2);
}

static u32 rel(u32 eip)
{
    extern char bp_site[];
    return eip - (u32)bp_site;
}

static void report(void)
{
    extern char bp_site[];
    write_cr0(read_cr0() & ~CR0_TS);
    printk("threads done: #NM %x (thread 0 %x, thread 1 %x)\n", nm_total, threads[0].nm, threads[1].nm);
    for (int t = 0; t < 2; t++)
        printk("thread %x: st0 %x:%x xmm1 %x %x %x %x mxcsr %x fcw %x\n", t, res[t].x87[1],
               res[t].x87[0], res[t].xmm[0], res[t].xmm[1], res[t].xmm[2], res[t].xmm[3],
               res[t].mxcsr, res[t].fcw);
    u8 *fx = threads[1].fx;                  /* thread 1's state as saved at the last switch */
    printk("fxsave of thread 1: fcw %x fsw %x ftw %x fop %x fcs %x mxcsr %x\n", *(u16 *)fx,
           *(u16 *)(fx + 2), fx[4], *(u16 *)(fx + 6), *(u16 *)(fx + 12), *(u32 *)(fx + 24));
    printk("rdtsc: #GP %x at ring 3 under TSD, then counts %x\n", gp_err[0], res[0].tsc_ok);
    printk("breakpoints: %x #DB:", db_n);
    for (u32 i = 0; i < db_n && i < 20; i++)
        printk(" [%s+%x cs %x dr6 %x]", db_cs[i] == 8 ? "k" : "u",
               db_cs[i] == 8 ? db_eip[i] - (u32)sysenter_entry : rel(db_eip[i]), db_cs[i], db_dr6[i]);
    printk("\nwatched: %x %x %x\n", wv.w, wv.rw[0], wv.rw[1]);
    printk("sysenter with tf: #DB at the entry %x; #GP:", sys_tf_hits);
    for (u32 i = 1; i < gp_n && i < 8; i++)
        printk(" %x at +%x", gp_err[i], rel(gp_eip[i]));
    printk("\nsysk: done\n");
    poweroff(0);
}

void kernel_main(void)
{
    extern char bp_site[];
    outb(0x21, 0xff);
    outb(0xa1, 0xff);
    outb(0x3f8 + 1, 0);
    gdt_idt_init();
    paging_init();
    printk("sysk: start, pae %x\n", pae);
    write_cr0((read_cr0() | CR0_MP | CR0_NE | CR0_TS) & ~0x4u);
    write_cr4(read_cr4() | CR4_OSFXSR | CR4_OSXMMEXCPT | CR4_TSD | CR4_DE);

    set_dr(0, (u32)bp_site);
    set_dr(1, (u32)&wv.w);
    set_dr(2, (u32)&wv.rw[0]);
    set_dr(3, 0x80);
    /* L0 exec; L1 write 4 bytes; L2 read/write 2 bytes; L3 I/O 1 byte */
    set_dr(7, 0x1 | 0x4 | 0x10 | 0x40 | (0x0u << 16) | (0xdu << 20) | (0x7u << 24) | (0x2u << 28));
    set_dr(6, 0);

    for (int t = 0; t < 2; t++) {
        threads[t].live = 1;
        threads[t].eip = (u32)thread_entry;
        threads[t].esp = (u32)ustack[t] + sizeof ustack[t] - 16;
    }
    cur = 0;                                 /* thread 1 starts at thread 0's first yield */
    enter_ring3(threads[0].eip, threads[0].esp);
}
