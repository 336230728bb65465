/* dtab: a kernel that moves its descriptor tables while it runs and walks their edges
 * (SDM Vol. 3 §3.5.1, §6.10, §6.11; Vol. 2 LGDT/LIDT):
 *
 *   - the GDT copied elsewhere and loaded there: the old copy edited afterwards is not
 *     what segment loads read;
 *   - the GDT's limit: a selector whose descriptor ends exactly at the limit loads, one
 *     byte less is #GP(selector);
 *   - a GDT whose descriptor straddles into a not-present page: the segment load's #PF
 *     (CR2 the second page), mapped by the handler, the load restarted and its accessed
 *     bit set in the second page;
 *   - the IDT's limit: INT n through a gate ending at the limit, one byte less is
 *     #GP(n*8+2); with the limit below #GP's gate, the #GP cannot be delivered: #DF,
 *     through a task gate to a TSS of its own, which sends the faulting task on;
 *   - an IDT straddling into a not-present page: INT n's gate read faults (#PF at the
 *     INT, CR2 the gate's address), the handler maps it, the INT runs again;
 *   - LGDT and LIDT with a 16-bit operand size: a 24-bit base (the high byte zero) --
 *     tables at both addresses, told apart by what loads through them.
 *
 * Expected lines: tests/test_osdev3.py (checked on QEMU). */

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;

struct frame {
    u32 edi, esi, ebp, esp_, ebx, edx, ecx, eax, num, err, eip, cs, eflags;
};

struct tss {
    u16 link, _0;
    u32 esp0; u16 ss0, _1;
    u32 esp1; u16 ss1, _2;
    u32 esp2; u16 ss2, _3;
    u32 cr3, eip, eflags, eax, ecx, edx, ebx, esp, ebp, esi, edi;
    u16 es, _4, cs, _5, ss, _6, ds, _7, fs, _8, gs, _9, ldt, _10;
    u16 trap, iomap;
} __attribute__((packed));

enum { KCODE = 0x08, KDATA = 0x10, SEL3 = 0x18, SEL4 = 0x20, T_MAIN = 0x28, T_DF = 0x30, NGDT = 8 };

static u64 gdt0[NGDT] __attribute__((aligned(8)));   /* the boot-time GDT */
static u64 idt0[0x40] __attribute__((aligned(8)));
static struct tss main_tss, df_tss;
static u32 pd[1024] __attribute__((aligned(4096)));
static u32 pt0[1024] __attribute__((aligned(4096)));
static u32 pt_hi[1024] __attribute__((aligned(4096)));
u8 stack[8192] __attribute__((aligned(16)));
static u8 df_stack[4096] __attribute__((aligned(16)));
__asm__(".globl stack_top\n.set stack_top, stack + 8192");

#define GA 0x00200000u                /* the relocated GDT's page */
#define GSTRAD (0x00202000u - 0x1c)   /* a GDT whose entry 3 straddles 0x202000 */
#define ISTRAD (0x00204000u - 0x100)  /* an IDT whose vectors from 0x20 are in 0x204000 */
#define LOW_IDT 0x00205000u           /* o16 LIDT: the 24-bit base */
#define LOW_GDT 0x00206000u           /* o16 LGDT: the 24-bit base */
#define HIGH 0xab000000u              /* ... and the same with the high byte */
#define HIGH_IDT_PHYS 0x00207000u
#define HIGH_GDT_PHYS 0x00208000u
#define MARK 0x00300000u

/* ---- console ---- */
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

/* ---- descriptors ---- */
static u64 seg(u32 base, u32 limit, u32 access, u32 flags)
{
    return (u64)(limit & 0xffff) | (u64)(base & 0xffffff) << 16 | (u64)access << 40 |
           (u64)((limit >> 16) & 0xf) << 48 | (u64)flags << 52 | (u64)(base >> 24) << 56;
}

static u64 gate(u16 sel, u32 off, u32 type)
{
    return (u64)(off & 0xffff) | (u64)sel << 16 | (u64)type << 40 | (u64)(off >> 16) << 48;
}

struct dtr { u16 limit; u32 base; } __attribute__((packed));

static void lgdt(u32 base, u16 limit)
{
    struct dtr d = { limit, base };
    __asm__ volatile("lgdt %0" :: "m"(d) : "memory");
}

static void lidt(u32 base, u16 limit)
{
    struct dtr d = { limit, base };
    __asm__ volatile("lidt %0" :: "m"(d) : "memory");
}

static u16 tss_type(u64 *g, int sel) { return (g[sel >> 3] >> 40) & 0xf; }

/* ---- paging ---- */
static void set_pte(u32 lin, u32 phys_flags)
{
    u32 *pt = lin >= HIGH ? pt_hi : pt0;
    pt[(lin >> 12) & 0x3ff] = phys_flags;
    __asm__ volatile("invlpg (%0)" :: "r"(lin) : "memory");
}

/* ---- traps ---- */
static volatile u32 last_num, last_err, last_eip, last_cr2, resume, fix_pte, fix_flags;
static volatile u32 count[0x40], pf_err;
volatile u32 df_err;

void trap(struct frame *f)
{
    u32 cr2;
    __asm__ volatile("mov %%cr2, %0" : "=r"(cr2));
    count[f->num]++;
    last_num = f->num;
    last_err = f->err;
    last_eip = f->eip;
    if (f->num == 14)
        last_cr2 = cr2, pf_err = f->err;
    if (f->num == 14 && fix_pte) {
        set_pte(fix_pte, fix_flags);
        fix_pte = 0;
        return;
    }
    if (f->num >= 0x20 || f->num == 3)
        return;
    if (resume) {
        f->eip = resume;
        resume = 0;
        return;
    }
    print("unexpected trap %x err %x at %x cr2 %x\n", f->num, f->err, f->eip, cr2);
    finish(1);
}

extern char df_back[];
static volatile u32 df_link, df_busy_main, df_busy_df, ndf;

void double_fault(void)
{
    /* the faulting task is the back link; it goes on at df_back (its saved CS:EIP are
     * undefined after a #DF, SDM Vol. 3 §6.15 interrupt 8) */
    ndf++;
    df_link = df_tss.link;
    df_busy_main = tss_type(gdt0, T_MAIN);
    df_busy_df = tss_type(gdt0, T_DF);
    main_tss.eip = (u32)df_back;
}

extern void isr0(void), isr3(void), isr6(void), isr10(void), isr11(void), isr12(void),
    isr13(void), isr14(void), isr0x20(void), isr0x21(void), isr0x30(void), isr0x31(void),
    df_task(void);

static void build_idt(u64 *idt, void (*v30)(void))
{
    void (*isrs[15])(void) = { isr0, 0, 0, isr3, 0, 0, isr6, 0, 0, 0, isr10, isr11, isr12,
                               isr13, isr14 };
    for (int n = 0; n < 0x40; n++)
        idt[n] = 0;
    for (int n = 0; n < 15; n++)
        if (isrs[n])
            idt[n] = gate(KCODE, (u32)isrs[n], 0x8e);
    idt[8] = gate(T_DF, 0, 0x85);                  /* #DF: a task gate */
    idt[0x20] = gate(KCODE, (u32)isr0x20, 0x8e);
    idt[0x21] = gate(KCODE, (u32)isr0x21, 0x8e);
    idt[0x30] = gate(KCODE, (u32)v30, 0x8e);
}

static void build_gdt(u64 *g)
{
    g[0] = 0;
    g[1] = seg(0, 0xfffff, 0x9a, 0xc);
    g[2] = seg(0, 0xfffff, 0x92, 0xc);
    g[3] = seg(0, 0xfffff, 0x92, 0xc);
    g[4] = seg(0, 0xfffff, 0x92, 0xc);
    g[5] = seg((u32)&main_tss, sizeof main_tss - 1, 0x89, 0);
    g[6] = seg((u32)&df_tss, sizeof df_tss - 1, 0x89, 0);
    g[7] = 0;
}

static void reload(void)
{
    __asm__ volatile("ljmp %0, $1f; 1: mov %1, %%ds; mov %1, %%es; mov %1, %%ss" ::
                     "i"(KCODE), "r"(KDATA) : "memory");
}

static void tables(void)
{
    build_gdt(gdt0);
    lgdt((u32)gdt0, sizeof gdt0 - 1);
    reload();
    __asm__ volatile("xor %%eax, %%eax; mov %%ax, %%fs; mov %%ax, %%gs" ::: "eax");
    build_idt(idt0, isr0x30);
    lidt((u32)idt0, sizeof idt0 - 1);
    __asm__ volatile("ltr %w0" :: "r"(T_MAIN));
    for (u32 a = 0; a < 0x400000; a += 0x1000)
        pt0[a >> 12] = a | 3;
    pd[0] = (u32)pt0 | 3;
    pd[HIGH >> 22] = (u32)pt_hi | 3;
    __asm__ volatile("mov %0, %%cr3" :: "r"(pd));
    main_tss.cr3 = df_tss.cr3 = (u32)pd;
    df_tss.eip = (u32)df_task;
    df_tss.esp = (u32)df_stack + sizeof df_stack;
    df_tss.eflags = 2;
    df_tss.cs = KCODE;
    df_tss.ss = df_tss.ds = df_tss.es = KDATA;
    df_tss.iomap = main_tss.iomap = sizeof(struct tss);
    u32 cr0;
    __asm__ volatile("mov %%cr0, %0" : "=r"(cr0));
    __asm__ volatile("mov %0, %%cr0" :: "r"(cr0 | 0x80010000u));
}

extern char fs_at[], fs_resume[], int_resume[];

/* ---- the GDT moved, and its limit ---- */
__attribute__((noinline)) static void gdt_moves(void)
{
    u64 *ga = (u64 *)GA;
    for (int i = 0; i < NGDT; i++)
        ga[i] = gdt0[i];
    ga[4] = seg(MARK, 0xfff, 0x92, 0);         /* the moved copy: base MARK */
    lgdt(GA, NGDT * 8 - 1);
    reload();
    gdt0[4] = seg(MARK + 0x1000, 0xfff, 0x92, 0);   /* the old copy: another base */
    *(volatile u32 *)MARK = 0x11110000;
    *(volatile u32 *)(MARK + 0x1000) = 0x22220000;
    u32 v;
    __asm__ volatile("mov %1, %%fs; mov %%fs:0, %0; mov %2, %%fs" : "=r"(v) : "r"(SEL4), "r"(0));
    print("moved gdt: fs:0=%x", v);
    /* the limit: entry 4's last byte is 0x27 */
    lgdt(GA, 0x27);
    __asm__ volatile("mov %1, %%fs; mov %%fs:0, %0; mov %2, %%fs" : "=r"(v) : "r"(SEL4), "r"(0));
    print(" limit 27: %x", v);
    lgdt(GA, 0x26);
    resume = (u32)fs_resume;
    last_num = 0;
    __asm__ volatile("fs_at: mov %0, %%fs; fs_resume:" :: "r"(SEL4) : "memory");
    print(" limit 26: #%d err=%x at=%d\n", last_num, last_err, last_eip == (u32)fs_at);
    lgdt(GA, NGDT * 8 - 1);
    __asm__ volatile("mov %0, %%fs" :: "r"(0));
}

/* ---- a GDT straddling into a not-present page ---- */
static void gdt_straddle(void)
{
    u64 *gs = (u64 *)GSTRAD;
    for (int i = 0; i < NGDT; i++)
        gs[i] = gdt0[i];
    gs[3] = seg(MARK, 0xfff, 0x92, 0) & ~(1ull << 40);     /* not accessed yet */
    lgdt(GSTRAD, NGDT * 8 - 1);
    reload();
    set_pte(0x202000, 0);
    fix_pte = 0x202000, fix_flags = 0x202000 | 3;
    last_num = 0;
    u32 v;
    __asm__ volatile("mov %1, %%fs; mov %%fs:0, %0; mov %2, %%fs" : "=r"(v) : "r"(SEL3), "r"(0)
                     : "memory");
    print("straddling gdt: #%d err=%x cr2=%x then fs:0=%x access=%x\n", last_num, last_err,
          last_cr2, v, (u32)(gs[3] >> 40) & 0xff);
    lgdt((u32)gdt0, NGDT * 8 - 1);
    gdt0[4] = seg(0, 0xfffff, 0x92, 0xc);
    reload();
}

/* ---- the IDT's limit, and the double fault it can cause ---- */
__attribute__((noinline)) static void idt_limits(void)
{
    lidt((u32)idt0, 0x107);                   /* vector 0x20's gate ends at 0x107 */
    count[0x20] = 0;
    __asm__ volatile("int $0x20");
    print("idt limit 107: int 20 x%d", count[0x20]);
    lidt((u32)idt0, 0x106);
    resume = (u32)int_resume;
    __asm__ volatile("int $0x20; int_resume:");
    print(" limit 106: #%d err=%x", last_num, last_err);
    /* #GP's gate (0x68..0x6f) beyond the limit too: #DF, through the task gate at 8 */
    lidt((u32)idt0, 0x47);
    __asm__ volatile("int $0x20; df_back:" ::: "memory");
    lidt((u32)idt0, sizeof idt0 - 1);
    print(" limit 47: #DF x%d err=%x link=%x busy main=%x df=%x now df=%x\n", ndf, df_err,
          df_link, df_busy_main, df_busy_df, tss_type(gdt0, T_DF));
}

/* ---- an IDT straddling into a not-present page ---- */
static void idt_straddle(void)
{
    u64 *is = (u64 *)ISTRAD;
    build_idt(is, isr0x30);
    lidt(ISTRAD, 0x1ff);
    set_pte(0x204000, 0);
    fix_pte = 0x204000, fix_flags = 0x204000 | 3;
    count[0x21] = count[14] = 0;
    __asm__ volatile("int $0x21");
    print("straddling idt: #PF x%d err=%x cr2=%x then int 21 x%d\n", count[14], pf_err,
          last_cr2, count[0x21]);
    lidt((u32)idt0, sizeof idt0 - 1);
}

/* ---- LGDT and LIDT with a 16-bit operand: 24 bits of base ---- */
static void o16(void)
{
    u64 *li = (u64 *)LOW_IDT, *hi = (u64 *)HIGH_IDT_PHYS;
    build_idt(li, isr0x30);
    build_idt(hi, isr0x31);                    /* through the full base: vector 0x31's stub */
    set_pte(HIGH | LOW_IDT, HIGH_IDT_PHYS | 3);
    set_pte(HIGH | LOW_GDT, HIGH_GDT_PHYS | 3);
    struct dtr d = { 0x1ff, HIGH | LOW_IDT };
    count[0x30] = count[0x31] = 0;
    __asm__ volatile("data16 lidt %0; int $0x30" :: "m"(d) : "memory");
    u32 low = count[0x30], high = count[0x31];
    lidt((u32)idt0, sizeof idt0 - 1);
    u64 *lg = (u64 *)LOW_GDT, *hg = (u64 *)HIGH_GDT_PHYS;
    for (int i = 0; i < NGDT; i++)
        lg[i] = hg[i] = gdt0[i];
    lg[4] = seg(MARK, 0xfff, 0x92, 0);
    hg[4] = seg(MARK + 0x1000, 0xfff, 0x92, 0);
    struct dtr g = { NGDT * 8 - 1, HIGH | LOW_GDT };
    u32 v;
    __asm__ volatile("data16 lgdt %1; mov %2, %%fs; mov %%fs:0, %0; mov %3, %%fs"
                     : "=r"(v) : "m"(g), "r"(SEL4), "r"(0) : "memory");
    lgdt((u32)gdt0, NGDT * 8 - 1);
    reload();
    print("o16 lidt: int 30 through the low copy x%d, the high x%d; o16 lgdt: fs:0=%x\n",
          low, high, v);
}

void main(void)
{
    outb(0x21, 0xff);
    outb(0xa1, 0xff);
    print("dtab: start\n");
    tables();
    gdt_moves();
    gdt_straddle();
    idt_limits();
    idt_straddle();
    o16();
    print("dtab: done\n");
    finish(0);
}
