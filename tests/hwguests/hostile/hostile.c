/* hostile: a guest kernel that attacks the monitor's region.
 *
 * Under ringvisor's monitors (--mode trapemu|bt) the top 4 MiB of every
 * address space (0xFFC00000, ringvisor/vmm/layout.py) hold the monitor: the
 * real GDT (0xFFC00000), IDT (0xFFC10000), TSS, native entry points
 * (0xFFC12000 + 8 * vector), stack and translation cache.  The monitor's own
 * descriptors sit in the last GDT slots (selectors 0xFFC0..0xFFD8), and its
 * machine memory lies just above the guest's RAM (32 MiB here).  This guest,
 * running at (virtual) CPL 0, tries to reach all of that, one attack at a
 * time, and prints one line per attack:
 *
 *   attack <id>: stage=<n> read 0x<value>     the access completed
 *   attack <id>: stage=<n> ok                 (a write or transfer completed)
 *   attack <id>: stage=<n> #<vector> err=0x<e> [cr2=0x<a>]   it faulted
 *
 * stage 0: the segment load (or transfer) itself; 1: the access after it.
 * On bare hardware the region is whatever the guest maps there; under a
 * monitor every attack must end in a fault delivered to the guest (or the
 * same result as on bare hardware when the guest only reaches its own
 * memory), never in monitor data.  Attacks that end the machine even on bare
 * hardware (or that a monitor must refuse by stopping the VM) run only when
 * named on the command line, one per boot: attack=<name>.
 *
 * Memory (besides rt.h's map): PT_A maps PDE 1022 (0xFF800000) to frames
 * 0x800000.., PT_B maps PDE 1023 (0xFFC00000) to frames 0xC00000.. when an
 * attack installs it; those frames hold the pattern 0x5A000000 | phys.
 * BIG_GDT is a 64 KiB GDT whose last slots hold the guest's own descriptors.
 */
#include "rt.h"

#define PT_A_ADDR   0x00310000u
#define PT_B_ADDR   0x00311000u
#define FRAMES_A    0x00800000u     /* behind PDE 1022 */
#define FRAMES_B    0x00C00000u     /* behind PDE 1023 */
#define BIG_GDT     0x01000000u
#define MLIN        0xFFC00000u
#define PATTERN(p)  (0x5A000000u | ((p) & 0x00FFFFFFu))

#define SEL_MCODE   0xFFC0u         /* the monitor's descriptors (layout.py) */
#define SEL_MDATA   0xFFC8u
#define SEL_MTSS    0xFFD0u
#define SEL_TCODE   0xFFD8u

/* test descriptors (rt.h leaves 8.. free) */
#define SEL_HIGH        0x48    /* data, base 0xFFC00000, limit 0xFFF */
#define SEL_FLAT        0x50    /* data, flat 4 GiB */
#define SEL_EXPDOWN     0x58    /* data, expand-down, base 0, limit 0xFFF, B=1 (0x1000..4 GiB) */
#define SEL_EXPDOWN16   0x60    /* data, expand-down, 16-bit, base 0xFFBF8000, limit 0xFFF */
#define SEL_DATA16      0x68    /* data, 16-bit, base 0xFFBF8000, limit 0xFFFF */
#define SEL_CODE_HIGH   0x70    /* readable code, base 0xFFC00000, limit 4 MiB */
#define SEL_CODE_FLAT   0x78    /* readable code, flat 4 GiB */
#define SEL_CODE_SMALL  0x80    /* code, base 0xFFC00000, limit 0xFFF */

extern u32 hx_mbi, hx_sel, hx_addr, hx_val, hx_out, hx_stage, hx_irq_count, hx_irq_bad;
extern u32 hx_farptr[2];
extern int hx_try(void (*fn)(void));
extern void hx_es_read(void), hx_ds_read(void), hx_fs_read(void), hx_gs_read(void),
    hx_ss_read(void), hx_es_write(void), hx_ljmp(void), hx_iret_to(void), hx_cs_target(void),
    hx_int3(void), hx_int81(void), hx_int82(void), hx_jmp_unmapped(void),
    hx_call_unmapped(void), hx_ret_unmapped(void), hx_user_read(void), hx_user_load_ds(void),
    hx_user_int_f1(void), hx_user_ljmp(void), hx_irq8(void), rt_ring_exit_stub(void);
extern char hx_done[];

/* ---- catching exceptions ------------------------------------------------ */

static struct { u32 count, vector, err, cr2; } exc;
extern u32 hx_resume;

static int has_err(u32 v)
{
    return v == 8 || (v >= 10 && v <= 14) || v == 17;
}

static void catch_isr(struct frame *f)
{
    exc.count++;
    exc.vector = f->vector;
    exc.err = has_err(f->vector) ? f->err : 0;
    exc.cr2 = f->vector == 14 ? read_cr2() : 0;
    if ((f->cs & 3) == 3) {                 /* from ring 3: leave rt_run_user */
        f->eip = (u32)rt_ring_exit_stub;
        f->ds = f->es = f->fs = f->gs = SEL_DATA3;
        return;
    }
    if (hx_resume) {
        f->eip = hx_resume;
        f->cs = SEL_CODE0;
        f->ds = f->es = f->fs = f->gs = SEL_DATA0;
        hx_resume = 0;
        return;
    }
    if (f->vector == 3 || f->vector >= 0x80)  /* an expected software interrupt */
        return;
    kprintf("UNEXPECTED exception %u err=0x%x eip=0x%x cs=0x%x\n", f->vector, f->err,
            f->eip, f->cs & 0xffff);
    rt_exit(2);
}

static void catch_all(void)
{
    for (int v = 0; v < 32; v++)
        rt_isr[v] = catch_isr;
    rt_isr[0x81] = catch_isr;
    rt_isr[0x82] = catch_isr;
    rt_isr[0xf1] = catch_isr;
}

/* ---- running and reporting ---------------------------------------------- */

enum { READ, WRITE, NOVALUE };

/* Run one attack at ring 0 (or ring 3) and print what it got: the exception
 * the guest took, or the value it read. */
static void attempt_at(const char *id, void (*fn)(void), int kind, int user)
{
    exc.count = 0;
    hx_stage = 0;
    hx_out = 0;
    if (user)
        rt_run_user(fn);
    else
        hx_try(fn);
    kprintf("attack %s: %sstage=%u", id, user ? "ring3 " : "", hx_stage);
    if (exc.count) {
        kprintf(" #%u", exc.vector);
        if (has_err(exc.vector))
            kprintf(" err=0x%x", exc.err);
        if (exc.vector == 14)
            kprintf(" cr2=0x%08x", exc.cr2);
    } else if (kind == READ) {
        kprintf(" read 0x%08x", hx_out);
    } else {
        kprintf(" ok");
    }
    putch('\n');
}

static void attempt(const char *id, void (*fn)(void), int kind) { attempt_at(id, fn, kind, 0); }
static void attempt_user(const char *id, void (*fn)(void), int kind) { attempt_at(id, fn, kind, 1); }

static void seg_read(const char *id, void (*fn)(void), u32 sel, u32 addr)
{
    hx_sel = sel;
    hx_addr = addr;
    attempt(id, fn, READ);
}

static void far_to(const char *id, void (*fn)(void), u32 sel, u32 off, u32 addr)
{
    hx_farptr[0] = off;
    hx_farptr[1] = sel;
    hx_addr = addr;
    attempt(id, fn, READ);
}

/* ---- memory and tables ---------------------------------------------------- */

struct __attribute__((packed)) dtr { u16 limit; u32 base; };

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

static void fill(u32 phys, u32 bytes)
{
    volatile u32 *p = (u32 *)phys;
    for (u32 i = 0; i < bytes / 4; i++)
        p[i] = PATTERN(phys + 4 * i);
}

static void flush_tlb(void)
{
    write_cr3(read_cr3());
}

/* Page directory entries are changed with paging off: a store to the live
 * directory through the identity map is an attack of its own (pd-selfwrite). */
static void set_pde(int i, u32 value)
{
    rt_paging_off();
    PD[i] = value;
    rt_paging_on(0);
}

static void map_pde1023(int present, int user)
{
    set_pde(1023, present ? (PT_B_ADDR | PTE_P | PTE_W | (user ? PTE_U : 0)) : 0);
}

static void setup_paging(void)
{
    rt_paging_init();
    volatile u32 *a = (u32 *)PT_A_ADDR, *b = (u32 *)PT_B_ADDR;
    for (u32 i = 0; i < 1024; i++) {
        a[i] = (FRAMES_A + (i << 12)) | PTE_P | PTE_W | PTE_U;
        b[i] = (FRAMES_B + (i << 12)) | PTE_P | PTE_W | PTE_U;
    }
    PD[1022] = PT_A_ADDR | PTE_P | PTE_W | PTE_U;
    PD[1023] = 0;
    fill(FRAMES_A + 0x3FF000, 0x1000);      /* 0xFFBFF000 */
    fill(FRAMES_A + 0x3F8000, 0x1000);      /* 0xFFBF8000 */
    fill(FRAMES_B, 0x1000);                 /* 0xFFC00000 */
    fill(FRAMES_B + 0x10000, 0x1000);       /* 0xFFC10000 */
    fill(FRAMES_B + 0x12000, 0x1000);       /* 0xFFC12000 */
    fill(FRAMES_B + 0x3FF000, 0x1000);      /* 0xFFFFF000 */
    rt_paging_on(0);
}

static void setup_descriptors(void)
{
    gdt_set(9, MLIN, 0xFFF, ACC_DATA, FLG_BYTE32);
    gdt_set(10, 0, 0xFFFFF, ACC_DATA, FLG_4K32);
    gdt_set(11, 0, 0xFFF, 0x97, FLG_BYTE32);                /* expand-down, B=1 */
    gdt_set(12, 0xFFBF8000u, 0xFFF, 0x97, 0);               /* expand-down, 16-bit */
    gdt_set(13, 0xFFBF8000u, 0xFFFF, ACC_DATA, 0);          /* 16-bit */
    gdt_set(14, MLIN, 0x3FF, ACC_CODE, FLG_4K32);
    gdt_set(15, 0, 0xFFFFF, ACC_CODE, FLG_4K32);
    gdt_set(16, MLIN, 0xFFF, ACC_CODE, FLG_BYTE32);
    lgdt(GDT_ADDR, GDT_LIMIT);              /* a monitor may only look at LGDT */
}

/* ---- the attacks ------------------------------------------------------------ */

/* (a) flat segments straight at the region */
static void attacks_flat(void)
{
    seg_read("a1-read-gdt", hx_ds_read, SEL_DATA0, MLIN);
    hx_sel = SEL_DATA0; hx_addr = 0xFFFFF000u; hx_val = 0xBADC0DE1u;
    attempt("a2-write-top", hx_es_write, WRITE);
    seg_read("a3-read-idt", hx_es_read, SEL_DATA0, MLIN + 0x10000);
    seg_read("a4-straddle", hx_es_read, SEL_DATA0, MLIN - 2);
    seg_read("a5-read-below", hx_es_read, SEL_DATA0, MLIN - 0x1000);
}

/* (b) descriptors whose base/limit cover the region */
static void attacks_descriptors(void)
{
    seg_read("b1-base-high", hx_es_read, SEL_HIGH, 0);
    seg_read("b2-flat-new", hx_es_read, SEL_FLAT, MLIN + 0x10000);
    seg_read("b3-expdown-ds", hx_ds_read, SEL_EXPDOWN, MLIN);
    seg_read("b4-expdown16", hx_es_read, SEL_EXPDOWN16, 0xFFF0);
    seg_read("b5-data16-in", hx_es_read, SEL_DATA16, 0x7FFC);
    seg_read("b6-data16-out", hx_es_read, SEL_DATA16, 0x8000);
    seg_read("b7-flat-ss", hx_ss_read, SEL_FLAT, MLIN);
    seg_read("b8-expdown-ss", hx_ss_read, SEL_EXPDOWN, MLIN);
    seg_read("b9-code-high-fs", hx_fs_read, SEL_CODE_HIGH, 0x10000);
    seg_read("b10-code-flat-gs", hx_gs_read, SEL_CODE_FLAT, MLIN + 0x10000);
    /* a far jump to the monitor's entry point for vector 3 */
    far_to("b12-jmp-entry", hx_ljmp, SEL_CODE_FLAT, MLIN + 0x12000 + 8 * 3, 0);
}

/* (c) the guest's own page directory entries 1022 and 1023 */
static void attacks_paging(void)
{
    seg_read("c1-pde1022", hx_es_read, SEL_DATA0, 0xFFBFF000u);
    hx_sel = SEL_DATA0; hx_addr = 0xFFBFF010u; hx_val = 0x600DF00Du;
    attempt("c1-pde1022-write", hx_es_write, WRITE);
    seg_read("c1-pde1022-back", hx_es_read, SEL_DATA0, 0xFFBFF010u);

    map_pde1023(1, 0);
    seg_read("c2-pde1023-read", hx_es_read, SEL_DATA0, MLIN);
    seg_read("c2-pde1023-idt", hx_es_read, SEL_DATA0, MLIN + 0x10000);
    hx_sel = SEL_DATA0; hx_addr = 0xFFFFF000u; hx_val = 0xBADC0DE2u;
    attempt("c3-pde1023-write", hx_es_write, WRITE);
    kprintf("attack c3-landed: frame holds 0x%08x\n", *(volatile u32 *)(FRAMES_B + 0x3FF000));
    *(volatile u32 *)(FRAMES_B + 0x3FF000) = PATTERN(FRAMES_B + 0x3FF000);

    /* code in the guest's own frame at the monitor's entry point for vector 3 */
    volatile u8 *code = (u8 *)(FRAMES_B + 0x12018);
    code[0] = 0xEA;                                     /* ljmp $0x08, $hx_done */
    *(volatile u32 *)(code + 1) = (u32)hx_done;
    code[5] = 0x08; code[6] = 0x00;
    far_to("c4-exec-entry", hx_ljmp, SEL_CODE_FLAT, MLIN + 0x12018, 0);
    fill(FRAMES_B + 0x12000, 0x1000);
    map_pde1023(0, 0);

    set_pde(1023, FRAMES_B | PDE_PS | PTE_P | PTE_W);   /* a 4 MiB page */
    seg_read("c5-bigpage", hx_es_read, SEL_DATA0, MLIN + 0x10000);
    map_pde1023(0, 0);

    invlpg(MLIN);
    invlpg(0xFFFFF000u);
    invlpg(0xFFC10000u);
    seg_read("c6-after-invlpg", hx_es_read, SEL_DATA0, 0xFFBFF000u);
}

/* (d) the IDT: in the guest's own frames at the monitor's addresses, and gates
 * whose handler is the monitor's entry point */
static void attacks_idt(void)
{
    map_pde1023(1, 0);
    memcpy((void *)(FRAMES_B + 0x10000), (void *)IDT_ADDR, IDT_LIMIT + 1);
    lidt(MLIN + 0x10000, IDT_LIMIT);
    attempt("d2-idt-own-copy", hx_int3, NOVALUE);
    lidt(IDT_ADDR, IDT_LIMIT);
    fill(FRAMES_B + 0x10000, 0x1000);
    map_pde1023(0, 0);
}

static void attack_gate_entry(int mapped)
{
    if (mapped) {
        map_pde1023(1, 0);
        volatile u8 *code = (u8 *)(FRAMES_B + 0x12018);
        code[0] = 0xEA;
        *(volatile u32 *)(code + 1) = (u32)hx_done;
        code[5] = 0x08; code[6] = 0x00;
    }
    idt_set(0x81, MLIN + 0x12000 + 8 * 3, SEL_CODE0, 0x8e);
    attempt(mapped ? "d7-gate-entry-mapped" : "d6-gate-entry", hx_int81, NOVALUE);
    idt_set_default(0x81, 0x8e);
    fill(FRAMES_B + 0x12000, 0x1000);
    map_pde1023(0, 0);
}

/* (e) the GDT at the region's address, in the guest's own frames */
static void attacks_gdt(void)
{
    map_pde1023(1, 0);
    memcpy((void *)FRAMES_B, (void *)GDT_ADDR, GDT_LIMIT + 1);
    lgdt(MLIN, GDT_LIMIT);
    seg_read("e1-gdt-own-copy", hx_ds_read, SEL_DATA0, 0xFFBFF000u);
    seg_read("e1-gdt-own-copy-read", hx_es_read, SEL_FLAT, MLIN + 0x10);
    lgdt(GDT_ADDR, GDT_LIMIT);
    fill(FRAMES_B, 0x1000);
    map_pde1023(0, 0);
}

/* (g) SGDT/SIDT from kernel mode, then write or read what they show */
static void attacks_sgdt(void)
{
    struct dtr g, i;
    __asm__ volatile("sgdt %0" : "=m"(g));
    __asm__ volatile("sidt %0" : "=m"(i));
    kprintf("attack g1-sgdt: base=0x%08x limit=0x%x\n", g.base, g.limit);
    hx_sel = SEL_DATA0; hx_addr = g.base + 8 * 255; hx_val = 0;   /* an unused slot */
    attempt("g1-sgdt-write", hx_es_write, WRITE);
    kprintf("attack g2-sidt: base=0x%08x limit=0x%x\n", i.base, i.limit);
    seg_read("g2-sidt-read", hx_es_read, SEL_DATA0, i.base + 8 * 0x40 + 4);
    hx_sel = SEL_DATA0; hx_addr = i.base + 8 * 0xff; hx_val = 0;
    attempt("g2-sidt-write", hx_es_write, WRITE);
    idt_set_default(0xff, 0x8e);
}

/* (h) ring 3 */
static void attacks_user(void)
{
    hx_addr = MLIN;
    attempt_user("h1-user-read", hx_user_read, READ);
    map_pde1023(1, 1);
    hx_addr = MLIN + 0x10000;
    attempt_user("h2-user-read-mapped", hx_user_read, READ);
    map_pde1023(0, 0);
    hx_sel = SEL_TCODE | 3; hx_addr = 0xFFBFF000u;
    attempt_user("h3-user-ds-tcode", hx_user_load_ds, READ);
    hx_sel = SEL_MDATA | 3;
    attempt_user("h3-user-ds-mdata", hx_user_load_ds, READ);
    attempt_user("h4-user-int-f1", hx_user_int_f1, NOVALUE);
    hx_farptr[0] = (u32)hx_cs_target; hx_farptr[1] = SEL_TCODE | 3; hx_addr = MLIN + 0x10000;
    attempt_user("h5-user-ljmp-tcode", hx_user_ljmp, READ);
    hx_farptr[1] = SEL_MCODE | 3;
    attempt_user("h5-user-ljmp-mcode", hx_user_ljmp, READ);
}

/* (i) the monitor's own selectors, and the guest's descriptors in their slots */
static void attacks_selectors(void)
{
    seg_read("i1-ds-tcode", hx_ds_read, SEL_TCODE | 1, MLIN + 0x10000);
    seg_read("i2-es-tcode-rpl0", hx_es_read, SEL_TCODE, MLIN);
    seg_read("i3-es-mdata", hx_es_read, SEL_MDATA, MLIN);
    seg_read("i3-es-mcode", hx_es_read, SEL_MCODE, MLIN);
    seg_read("i3-es-mtss", hx_es_read, SEL_MTSS, 0);
    seg_read("i4-ss-mdata", hx_ss_read, SEL_MDATA, MLIN);
    seg_read("i4-ss-tcode", hx_ss_read, SEL_TCODE | 1, MLIN);
    far_to("i5-ljmp-tcode", hx_ljmp, SEL_TCODE, (u32)hx_cs_target, MLIN + 0x10000);
    far_to("i5-ljmp-tcode-rpl1", hx_ljmp, SEL_TCODE | 1, (u32)hx_cs_target, MLIN + 0x10000);
    far_to("i5-ljmp-mcode", hx_ljmp, SEL_MCODE, (u32)hx_cs_target, MLIN + 0x10000);
    far_to("i5-iret-tcode", hx_iret_to, SEL_TCODE, (u32)hx_cs_target, MLIN + 0x10000);
    far_to("i5-iret-tcode-rpl1", hx_iret_to, SEL_TCODE | 1, (u32)hx_cs_target, MLIN + 0x10000);

    /* a 64 KiB GDT: the guest's own flat descriptors in the monitor's slots */
    memset((void *)BIG_GDT, 0, 0x10000);
    memcpy((void *)BIG_GDT, (void *)GDT_ADDR, GDT_LIMIT + 1);
    volatile u32 *big = (u32 *)BIG_GDT;
    for (int idx = 8184; idx < 8192; idx++) {
        int code = idx == 8184 || idx == 8187;
        u32 access = code ? ACC_CODE : ACC_DATA;
        big[2 * idx] = 0x0000ffffu;
        big[2 * idx + 1] = 0x00cf0000u | (access << 8);
    }
    lgdt(BIG_GDT, 0xFFFF);
    seg_read("i6-ds-own-8185", hx_ds_read, SEL_MDATA, 0xFFBFF000u);
    seg_read("i6-ss-own-8185", hx_ss_read, SEL_MDATA, 0xFFBFF000u);
    seg_read("i6-es-own-8187", hx_es_read, SEL_TCODE, MLIN + 0x10000);
    idt_set(0x82, (u32)hx_cs_target, SEL_TCODE, 0x8e);
    hx_addr = MLIN + 0x10000;
    attempt("i6-gate-own-8187", hx_int82, READ);
    idt_set(0x82, (u32)hx_cs_target, SEL_MCODE, 0x8e);
    attempt("i6-gate-own-8184", hx_int82, READ);
    idt_set_default(0x82, 0x8e);
    far_to("i6-iret-own-8187", hx_iret_to, SEL_TCODE, (u32)hx_cs_target, MLIN + 0x10000);
    far_to("i6-ljmp-own-8187", hx_ljmp, SEL_TCODE, (u32)hx_cs_target, MLIN + 0x10000);
    far_to("i6-ljmp-own-8184", hx_ljmp, SEL_MCODE, (u32)hx_cs_target, MLIN + 0x10000);
    lgdt(GDT_ADDR, GDT_LIMIT);
}

/* (j) the PIC's vector base set by a 16-bit write (ICW1 then ICW2 through the
 * byte split), to vector 8, where the CPU's #DF lives */
static void attack_pic(void)
{
    idt_set(8, (u32)hx_irq8, SEL_CODE0, 0x8e);
    outw(0x20, 0x0811);             /* ICW1 to 0x20, ICW2 = 0x08 to 0x21 */
    outb(0x21, 0x04);               /* ICW3: slave on IRQ2 */
    outb(0x21, 0x01);               /* ICW4: 8086 mode */
    outb(0x21, 0xfe);               /* only IRQ 0 */
    outb(0x43, 0x34);               /* PIT channel 0, mode 2 */
    outb(0x40, 0x00);
    outb(0x40, 0x20);               /* 0x2000 ticks */
    hx_irq_count = hx_irq_bad = 0;
    __asm__ volatile("sti");
    for (int n = 0; n < 100 && hx_irq_count < 3; n++)
        __asm__ volatile("hlt");
    __asm__ volatile("cli");
    outb(0x43, 0x30);               /* stop: mode 0, no count */
    pic_remap_mask_all();
    rt_isr[8] = catch_isr;
    idt_set_default(8, 0x8e);
    kprintf("attack j1-pic-word: irqs on vector 8 %s, frames %s\n",
            hx_irq_count >= 3 ? "arrived" : "missing", hx_irq_bad ? "BAD" : "ok");
}

/* (l) a REP OUTS long enough to hold a monitor that emulates it in one go: it
 * must finish, with the registers of the native run, port 0x80 being a sink */
static void attack_rep_outs(void)
{
    u32 ecx = 300000, esi = 0x00100000;
    __asm__ volatile("cld; rep outsb" : "+c"(ecx), "+S"(esi) : "d"(0x80) : "memory");
    kprintf("attack l1-rep-outs: ecx=%u esi=+%u\n", ecx, esi - 0x00100000);
}

/* (k) kernel control transfers to an unmapped page */
static void attacks_unmapped(void)
{
    attempt("k1-jmp-unmapped", hx_jmp_unmapped, NOVALUE);
    attempt("k2-call-unmapped", hx_call_unmapped, NOVALUE);
    attempt("k3-ret-unmapped", hx_ret_unmapped, NOVALUE);
}

/* without paging: physical addresses at the region (nothing there natively) */
static void attacks_nopaging(void)
{
    rt_paging_off();
    seg_read("p1-nopaging-gdt", hx_es_read, SEL_DATA0, MLIN);
    seg_read("p1-nopaging-idt", hx_es_read, SEL_DATA0, MLIN + 0x10000);
    rt_paging_on(0);
}

/* ---- attacks that end the machine (one per boot, by name) ------------------- */

static void fatal(const char *name)
{
    kprintf("attack %s: start\n", name);
    if (!memcmp(name, "idt-unmapped", 13)) {
        lidt(MLIN, IDT_LIMIT);
        attempt(name, hx_int3, NOVALUE);
    } else if (!memcmp(name, "idt-nophys", 11)) {
        rt_paging_off();
        lidt(MLIN, IDT_LIMIT);
        attempt(name, hx_int3, NOVALUE);
    } else if (!memcmp(name, "gdt-unmapped", 13)) {
        lgdt(MLIN, GDT_LIMIT);
        seg_read(name, hx_ds_read, SEL_DATA0, 0);
    } else if (!memcmp(name, "gdt-nophys", 11)) {
        rt_paging_off();
        lgdt(MLIN, GDT_LIMIT);
        seg_read(name, hx_ds_read, SEL_DATA0, 0);
    } else if (!memcmp(name, "pte-beyond", 11)) {
        ((volatile u32 *)PT_A_ADDR)[0] = 0x02000000u | PTE_P | PTE_W;
        flush_tlb();
        seg_read(name, hx_es_read, SEL_DATA0, 0xFF800000u);
    } else if (!memcmp(name, "pte-beyond-write", 17)) {
        ((volatile u32 *)PT_A_ADDR)[0] = 0x02000000u | PTE_P | PTE_W;
        flush_tlb();
        hx_sel = SEL_DATA0; hx_addr = 0xFF800000u; hx_val = 0;
        attempt(name, hx_es_write, WRITE);
    } else if (!memcmp(name, "pde-beyond", 11)) {
        set_pde(1021, 0x02000000u | PTE_P | PTE_W);
        seg_read(name, hx_es_read, SEL_DATA0, 0xFF400000u);
    } else if (!memcmp(name, "bigpage-beyond", 15)) {
        set_pde(1021, 0x02000000u | PDE_PS | PTE_P | PTE_W);
        seg_read(name, hx_es_read, SEL_DATA0, 0xFF400000u);
    } else if (!memcmp(name, "phys-beyond", 12)) {
        rt_paging_off();
        seg_read(name, hx_es_read, SEL_DATA0, 0x02000000u);
    } else if (!memcmp(name, "cr3-beyond", 11)) {
        hx_addr = 0x02400000u;                  /* the monitor's shadow page directory */
        __asm__ volatile("mov %0, %%cr3\n\t"
                         "invlpg (%1)\n\t"
                         "movl (%1), %%eax\n\t"
                         "mov %2, %%cr3"
                         :: "r"(hx_addr), "r"(0x1000u), "r"(PD_ADDR) : "eax", "memory");
    } else if (!memcmp(name, "pd-selfwrite", 13)) {
        PD[1000] = 0;                           /* the live directory, through the identity map */
        flush_tlb();
    } else if (!memcmp(name, "farjmp-base", 12)) {
        far_to(name, hx_ljmp, SEL_CODE_SMALL, 0x10, 0);
    } else if (!memcmp(name, "gate-entry", 11)) {
        attack_gate_entry(0);
    } else if (!memcmp(name, "gate-entry-mapped", 18)) {
        attack_gate_entry(1);
    } else {
        kprintf("hostile: unknown attack %s\n", name);
        rt_exit(3);
    }
    kprintf("attack %s: survived\n", name);
}

/* ---- main ------------------------------------------------------------------- */

static char attack_name[64];

static void read_cmdline(void)
{
    const u32 *mbi = (const u32 *)hx_mbi;
    if (!mbi || !(mbi[0] & 4))
        return;
    const char *c = (const char *)mbi[4];
    for (; *c; c++) {
        if ((c == (const char *)mbi[4] || c[-1] == ' ') && !memcmp(c, "attack=", 7)) {
            int n = 0;
            for (c += 7; *c && *c != ' ' && n < 63; c++)
                attack_name[n++] = *c;
            attack_name[n] = 0;
            return;
        }
    }
}

int hostile_main(void)
{
    read_cmdline();
    catch_all();
    kprintf("hostile: start\n");
    setup_descriptors();
    setup_paging();
    if (attack_name[0]) {
        fatal(attack_name);
    } else {
        attacks_flat();
        attacks_descriptors();
        attacks_paging();
        attacks_idt();
        attacks_gdt();
        attacks_sgdt();
        attacks_user();
        attacks_selectors();
        attack_pic();
        attacks_unmapped();
        attack_rep_outs();
        attacks_nopaging();
    }
    kprintf("hostile: done\n");
    return 0;
}
