/* sysgen runtime, C part: descriptor tables, TSSes and page tables of its
 * own, the one exception handler (prints vector, error code, saved CS:EIP,
 * EFLAGS and registers, then continues or abandons the operation), the
 * per-step register line and the final memory checksums.  The operations
 * themselves are generated (tests/sysgen.py writes steps.S). */
typedef unsigned int u32;
typedef unsigned short u16;
typedef unsigned char u8;

#define KCODE 0x08
#define KDATA 0x10
#define TSS_SEL 0x18
#define LDT_SEL 0x20
#define TSSB_SEL 0x60
#define EFL_MASK 0x47fd5u   /* CF PF AF ZF SF TF IF DF OF IOPL NT AC (not RF) */
#define PLAY_PHYS 0x600000u
#define SCRATCH 0x500000u    /* what random segments and stores reach: 0x3000 bytes */

/* configuration and state shared with the generated steps.S */
extern u32 cfg_paging, cfg_nsteps;
extern char kstack_top[];
extern void task_entry(void);
u32 cur_step, cur_mark, resume, dbcount, nfaults;
u32 rs_regs[8];             /* the interrupted context's registers, for resume */
u32 last_segs[4], last_valid;   /* its data segments, shown in the step's line */

/* tables: at odd places of their pages, like kernels from elsewhere */
struct tss { u16 link, r0; u32 esp0; u16 ss0, r1; u32 esp1; u16 ss1, r2; u32 esp2; u16 ss2, r3;
             u32 cr3, eip, eflags, eax, ecx, edx, ebx, esp, ebp, esi, edi;
             u16 es, r4, cs, r5, ss, r6, ds, r7, fs, r8, gs, r9, ldt, r10, trap, iomap; };
struct bigtss { struct tss t; u8 iobitmap[8192 + 1]; };
struct layout {
    u8 pad0[0x128];
    u32 gdt[64];            /* 32 descriptors */
    u8 pad1[0x48];
    u32 idt[512];
    u32 ldt[16];            /* 8 descriptors */
    struct bigtss tss;
    struct tss tssb;
} __attribute__((aligned(4096)));
struct layout L;
u32 pd[1024] __attribute__((aligned(4096)));
u32 pt_id[2][1024] __attribute__((aligned(4096)));
u32 play_pt[1024] __attribute__((aligned(4096)));
u8 rstack[4][2048] __attribute__((aligned(16)));    /* TSS stacks for rings 0-2, task B */
u8 xstack[4][2048] __attribute__((aligned(16)));    /* execution stacks at rings 1-3 */
u8 kstack[8192] __attribute__((aligned(16)));
__asm__(".globl kstack_top\n.set kstack_top, kstack+8192");

static inline void outb(u16 p, u8 v) { __asm__ volatile("outb %0,%1" :: "a"(v), "Nd"(p)); }
static inline u8 inb(u16 p) { u8 v; __asm__ volatile("inb %1,%0" : "=a"(v) : "Nd"(p)); return v; }

static void putc(char c) { while (!(inb(0x3fd) & 0x20)) {} outb(0x3f8, (u8)c); }
static void puts(const char *s) { while (*s) putc(*s++); }
static void hex(u32 v, int digits)
{
    for (int i = digits - 1; i >= 0; i--) putc("0123456789abcdef"[(v >> (4 * i)) & 15]);
}
static void field(const char *name, u32 v, int digits) { putc(' '); puts(name); hex(v, digits); }
static void step_tag(void)
{
    putc('s'); hex(cur_step, 3);
    /* a step with a sensitive instruction (Robin & Irvine), '+' where it runs in user mode */
    if (cur_mark) putc(cur_mark == 2 ? '+' : '*');
}

static void set_desc(u32 *slot, u32 base, u32 limit, u32 access, u32 flags)
{
    slot[0] = (limit & 0xffff) | (base << 16);
    slot[1] = ((base >> 16) & 0xff) | (access << 8) | (((limit >> 16) & 0xf) << 16)
            | (flags << 20) | (base & 0xff000000);
}

void set_gate(u32 vec, void *handler, u32 sel, u32 type_dpl)
{
    u32 off = (u32)handler;
    L.idt[2 * vec] = (off & 0xffff) | (sel << 16);
    L.idt[2 * vec + 1] = (off & 0xffff0000) | (type_dpl << 8);
}

extern void *stub_table[256];     /* entry.S */
#define stub_addr(v) stub_table[v]

/* the tables' addresses, for steps.S */
#define SYM(name, expr) __asm__(".globl " #name "\n.set " #name ", " #expr)
_Static_assert(__builtin_offsetof(struct layout, gdt) == 0x128, "gdt");
_Static_assert(__builtin_offsetof(struct layout, idt) == 0x270, "idt");
_Static_assert(__builtin_offsetof(struct layout, ldt) == 0xa70, "ldt");
_Static_assert(__builtin_offsetof(struct layout, tss) == 0xab0, "tss");
SYM(gdt, L+0x128);
SYM(idt, L+0x270);
SYM(ldt, L+0xa70);
SYM(tss, L+0xab0);
SYM(xstack_top1, xstack+2048*2);
SYM(xstack_top2, xstack+2048*3);
SYM(xstack_top3, xstack+2048*4);

void rt_init(void)
{
    /* mask both PICs: the firmware's IRQ 0 would arrive at vector 8 */
    outb(0x21, 0xff);
    outb(0xa1, 0xff);
    for (u32 *p = (u32 *)SCRATCH; p < (u32 *)(SCRATCH + 0x3000); p++) *p = 0;
    for (u32 *p = (u32 *)PLAY_PHYS; p < (u32 *)(PLAY_PHYS + 0x10000); p++) *p = (u32)p * 2654435761u;
    u32 *g = L.gdt;
    /* code descriptors are made accessed (type bit 0): QEMU's TCG sets the accessed bit
     * when it loads DS..GS and SS but not CS (SDM Vol. 3 §3.4.5.1 wants it on every load) */
    set_desc(g + 2, 0, 0xfffff, 0x9b, 0xc);         /* 0x08 ring-0 code */
    set_desc(g + 4, 0, 0xfffff, 0x92, 0xc);         /* 0x10 ring-0 data */
    set_desc(g + 6, (u32)&L.tss, sizeof(struct bigtss) - 1, 0x89, 0);   /* 0x18 TSS */
    set_desc(g + 8, (u32)L.ldt, sizeof L.ldt - 1, 0x82, 0);            /* 0x20 LDT */
    for (u32 r = 1; r <= 3; r++) {                  /* 0x28.. ring r code, data */
        set_desc(g + 2 * (3 + 2 * r), 0, 0xfffff, 0x9b | (r << 5), 0xc);
        set_desc(g + 2 * (4 + 2 * r), 0, 0xfffff, 0x92 | (r << 5), 0xc);
    }
    set_desc(g + 22, 0, 0xfffff, 0x9f, 0xc);        /* 0x58 conforming ring-0 code */
    set_desc(g + 24, (u32)&L.tssb, sizeof(struct tss) - 1, 0x89, 0);    /* 0x60 task B */
    struct tss *t = &L.tss.t;
    t->esp0 = (u32)rstack[0] + 2048; t->ss0 = KDATA;
    t->esp1 = (u32)rstack[1] + 2048; t->ss1 = 0x31;
    t->esp2 = (u32)rstack[2] + 2048; t->ss2 = 0x42;
    t->iomap = sizeof(struct tss);
    L.tss.iobitmap[8192] = 0xff;
    struct tss *b = &L.tssb;
    b->eip = (u32)task_entry; b->eflags = 2; b->cs = KCODE;
    b->ss = b->ds = b->es = b->fs = b->gs = KDATA;
    b->esp = (u32)rstack[3] + 2048; b->ldt = LDT_SEL; b->iomap = 0xffff;
    for (u32 v = 0; v < 256; v++) {
        void *h = stub_addr(v);
        if (h) set_gate(v, h, KCODE, (v == 3 || v == 4 || v >= 63) ? 0xee : 0x8e);
    }
    struct { u16 limit; u32 base; } __attribute__((packed)) gd = { 255, (u32)L.gdt },
                                                              id = { 2047, (u32)L.idt };
    __asm__ volatile("lgdt %0; lidt %1" :: "m"(gd), "m"(id));
    __asm__ volatile("ltr %w0; lldt %w1" :: "r"(TSS_SEL), "r"(LDT_SEL));
    for (u32 i = 0; i < 16; i++) play_pt[i] = (PLAY_PHYS + 0x1000 * i) | 7;
    if (cfg_paging) {
        for (u32 i = 0; i < 2048; i++) pt_id[i >> 10][i & 1023] = (i << 12) | 7;
        pd[0] = (u32)pt_id[0] | 7;
        pd[1] = (u32)pt_id[1] | 7;
        pd[3] = (u32)play_pt | 7;                   /* 0xc00000: the play pages */
        pd[4] = 0x400000 | 0x87;                    /* 0x1000000: 4 MiB at 4 MiB (PSE) */
        pd[5] = 0x000000 | 0x87;                    /* 0x1400000: 4 MiB at 0 (code alias) */
        b->cr3 = t->cr3 = (u32)pd;     /* loaded by every task switch */
        __asm__ volatile("mov %%cr4,%%eax; or $0x10,%%eax; mov %%eax,%%cr4;"
                         "mov %0,%%cr3; mov %%cr0,%%eax; or $0x80000000,%%eax; mov %%eax,%%cr0"
                         :: "r"(pd) : "eax", "memory");
    }
    puts("sysgen: start\n");
}

struct frame { u32 gs, fs, es, ds, edi, esi, ebp, esp0, ebx, edx, ecx, eax,
               vec, err, eip, cs, eflags, esp, ss; };

/* The one handler.  Traps (#DB, #BP, #OF, the soft vectors 0x40-0x47) print and
 * return; vector 0x3f is the way back from an outer ring (no line); every
 * other vector abandons the operation (resume_step). */
u32 trap(struct frame *f)
{
    for (int i = 0; i < 8; i++) rs_regs[i] = (&f->edi)[i];
    last_segs[0] = f->ds; last_segs[1] = f->es; last_segs[2] = f->fs; last_segs[3] = f->gs;
    last_valid = 1;
    if (f->vec == 63) return 1;
    if (++nfaults > 200) { puts("sysgen: too many exceptions\n"); outb(0xf4, 1); }
    step_tag();
    field("v=", f->vec, 2);
    field("e=", f->err, 4);
    field("at=", f->cs & 0xffff, 4); putc(':'); hex(f->eip, 8);
    field("fl=", f->eflags & EFL_MASK, 5);
    if ((f->cs & 3) != 0) { field("ss=", f->ss & 0xffff, 4); field("sp=", f->esp, 8); }
    else field("sp=", (u32)&f->esp, 8);     /* where ESP was: the frame is pushed below it */
    if (f->vec == 14) { u32 cr2; __asm__ volatile("mov %%cr2,%0" : "=r"(cr2)); field("cr2=", cr2, 8); }
    if (f->vec == 1) {
        u32 dr6;
        __asm__ volatile("mov %%dr6,%0" : "=r"(dr6));
        field("dr6=", dr6, 8);
        __asm__ volatile("mov %0,%%dr6" :: "r"(0));
    }
    field("a=", f->eax, 8); field("c=", f->ecx, 8); field("d=", f->edx, 8);
    field("b=", f->ebx, 8); field("si=", f->esi, 8); field("di=", f->edi, 8);
    field("ds=", f->ds & 0xffff, 4); field("es=", f->es & 0xffff, 4);
    field("fs=", f->fs & 0xffff, 4); field("gs=", f->gs & 0xffff, 4);
    putc('\n');
    if (f->vec == 1) {
        f->eflags |= 0x10000;                   /* RF: past an instruction breakpoint */
        if (++dbcount > 40) f->eflags &= ~0x100u;
        return 0;
    }
    if (f->vec == 3 || f->vec == 4 || (f->vec >= 64 && f->vec < 72)) return 0;
    return 1;
}

void task_note(void)
{
    step_tag();
    field("task link=", L.tssb.link, 4);
    field("eip=", L.tss.t.eip, 8);
    field("cs=", L.tss.t.cs, 4);
    putc('\n');
}

/* the step's registers: segments (gs, fs, es, ds), flags (AH = SF ZF AF PF CF, AL = OF),
 * then EDI..EAX as PUSHAL stored them */
void step_done(u32 *r)
{
    step_tag();
    u32 fl = r[4];
    field("f=", ((fl >> 8) & 0xc5) | ((fl & 1) << 11), 3);      /* AF left out: undefined after logic ops */
    static const char *names[8] = {"di=", "si=", "bp=", "sp=", "b=", "d=", "c=", "a="};
    for (int i = 7; i >= 0; i--) if (i != 3) field(names[i], r[5 + i], 8);
    for (int i = 3; i >= 0; i--) field(i == 3 ? "ds=" : i == 2 ? "es=" : i == 1 ? "fs=" : "gs=",
                                        r[i] & 0xffff, 4);
    if (last_valid) {
        field("xds=", last_segs[0] & 0xffff, 4); field("xes=", last_segs[1] & 0xffff, 4);
        field("xfs=", last_segs[2] & 0xffff, 4); field("xgs=", last_segs[3] & 0xffff, 4);
    }
    putc('\n');
    last_valid = 0;
    nfaults = 0;
}

static u32 fnv(const void *p, u32 n)
{
    const u8 *b = p;
    u32 h = 2166136261u;
    while (n--) h = (h ^ *b++) * 16777619u;
    return h;
}

void finish(void)
{
    u32 cr0, cr4;
    __asm__ volatile("mov %%cr0,%0; mov %%cr4,%1" : "=r"(cr0), "=r"(cr4));
    puts("end");
    field("cr0=", cr0, 8); field("cr4=", cr4, 8);
    field("gdt=", fnv(L.gdt, sizeof L.gdt), 8);
    field("ldt=", fnv(L.ldt, sizeof L.ldt), 8);
    puts("\ndescriptors (high words):");      /* where the accessed and busy bits show */
    for (int i = 0; i < 32; i++) field("", L.gdt[2 * i + 1], 8);
    for (int i = 0; i < 8; i++) field("", L.ldt[2 * i + 1], 8);
    putc('\n');
    puts("tss:");                               /* what task switches saved there */
    for (int i = 0; i < 26; i++) field("", ((u32 *)&L.tss.t)[i], 8);
    putc('\n');
    field("idt=", fnv(L.idt, sizeof L.idt), 8);
    field("tss=", fnv(&L.tss, sizeof L.tss), 8);
    field("tssb=", fnv(&L.tssb.link, 2), 4);
    field("scratch=", fnv((void *)SCRATCH, 0x3000), 8);
    field("play=", fnv((void *)PLAY_PHYS, 0x10000), 8);
    field("pte=", fnv(play_pt, 16 * 4), 8);
    putc('\n');
    outb(0xf4, 0);
    for (;;) __asm__ volatile("hlt");
}
