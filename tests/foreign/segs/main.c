/* segs: every way a segment load or an interrupt delivery can fault, in-place
 * GDT edits (with hot data in the GDT's page), and user mode at IOPL 3 and
 * through the TSS I/O bitmap.  No paging; its own GDT with kernel selectors
 * 0x18/0x20, user 0x2b/0x33, TSS 0x38, test descriptors above.
 *
 * Each faulting case prints the vector, the error code and where the saved
 * EIP points relative to the instruction (+0: at it), as the SDM rules for
 * MOV/POP/LxS, far JMP/CALL/RET and INT n give them (Vol. 2, and Vol. 3
 * §6.12-6.13 for the IDT and EXT bits of the error code).
 */
#include "frt.h"

#define KCS 0x18
#define KDS 0x20
#define UCS 0x2b
#define UDS 0x33
#define TSS_SEL 0x38

extern char t_ds_np[], t_ds_np_i[];
extern char t_ss_np[], t_ss_np_i[];
extern char t_ss_null[], t_ss_null_i[];
extern char t_ss_dpl3[], t_ss_dpl3_i[];
extern char t_ds_exec[], t_ds_exec_i[];
extern char t_ds_limit[], t_ds_limit_i[];
extern char t_fs_rpl[], t_fs_rpl_i[];
extern char t_gs_tss[], t_gs_tss_i[];
extern char t_pop_es[], t_pop_es_i[];
extern char t_lds[], t_lds_i[];
extern char t_lss[], t_lss_i[];
extern char t_ljmp[], t_ljmp_i[];
extern char t_lcall[], t_lcall_i[];
extern char t_lret[], t_lret_i[];
extern char t_int_np[], t_int_np_i[];
extern char t_int_type[], t_int_type_i[];
extern char t_int_limit[], t_int_limit_i[];
extern char t_int_cs[], t_int_cs_i[];
extern char t_int_csnp[], t_int_csnp_i[];
extern char t_int3_np[], t_int3_np_i[];
extern char t_nm_ds[], t_nm_ds_i[];
extern char t_fs_read[], probe_resume[];
extern uint32_t t_fs_again(void);
extern uint32_t probe(void (*fn)(void));

uint16_t frt_kdata = KDS;

/* the GDT shares its page with data the kernel writes all the time */
static struct {
    uint64_t gdt[16];
    volatile uint32_t counter;
    uint32_t pad;
} hot __attribute__((aligned(4096)));
#define GDT hot.gdt
static uint64_t idt[256];
static struct {
    uint32_t words[26];
    uint8_t iomap[8192 + 1];
} __attribute__((packed, aligned(16))) tss;
static uint32_t area1[4] = { 0x11111111 }, area2[4] = { 0x22222222 }, area3[4] = { 0x33333333 };
static uint8_t user_stack[4096] __attribute__((aligned(16)));

static volatile uint32_t t_vec, t_err, t_eip, user_test;

void trap(struct trapframe *tf)
{
    if (tf->trapno == 0x80 && (tf->cs & 3) == 3 && tf->eax == 0) {
        t_vec = 0x80;                      /* the user part is done */
    } else {
        t_vec = tf->trapno;
        t_err = tf->err;
        t_eip = tf->eip;
    }
    /* back into probe() in the kernel, whatever ring this came from */
    tf->eip = (uint32_t)probe_resume;
    tf->cs = KCS;
    tf->eflags = 0x2;
    tf->ds = tf->es = KDS;
    tf->fs = tf->gs = 0;
}

static void show(const char *name, void (*fn)(void), const char *insn)
{
    t_vec = 0xff;
    probe(fn);
    asm volatile("movw %w0, %%ds; movw %w0, %%es; movw %w0, %%ss" :: "r"(KDS));
    if (t_vec == 0xff)
        printf("%s: no fault\n", name);
    else
        printf("%s: vector %u err %x at %s%d\n", name, t_vec, t_err,
               (int)(t_eip - (uint32_t)insn) >= 0 ? "+" : "", (int)(t_eip - (uint32_t)insn));
}
#define SHOW(name) show(#name, (void (*)(void))name, name##_i)

static void set_gate(int v, uint32_t off, uint16_t sel, uint8_t access)
{
    idt[v] = gate_desc(sel, off, access);
}

static void lidt_limit(uint16_t limit)
{
    struct pseudo_desc d = { limit, (uint32_t)idt };
    asm volatile("lidt %0" :: "m"(d));
}

static void segment_faults(void)
{
    SHOW(t_ds_np);
    SHOW(t_ss_np);
    SHOW(t_ss_null);
    SHOW(t_ss_dpl3);
    SHOW(t_ds_exec);
    SHOW(t_ds_limit);
    SHOW(t_fs_rpl);
    SHOW(t_gs_tss);
    SHOW(t_pop_es);
    SHOW(t_lds);
    SHOW(t_lss);
    SHOW(t_ljmp);
    SHOW(t_lcall);
    SHOW(t_lret);
}

static void delivery_faults(void)
{
    set_gate(0x41, 0, KCS, 0x0e);                      /* not present */
    set_gate(0x43, 0, KCS, 0x81);                      /* not a gate: a 16-bit TSS */
    set_gate(0x44, 0, KDS, 0x8e);                      /* to a data segment */
    set_gate(0x45, 0, 0x70, 0x8e);                     /* to a code segment not present */
    SHOW(t_int_np);
    SHOW(t_int_type);
    SHOW(t_int_cs);
    SHOW(t_int_csnp);
    lidt_limit(0x8f * 8 + 7);
    SHOW(t_int_limit);
    lidt_limit(sizeof(idt) - 1);
    uint64_t bp = idt[3];
    idt[3] &= ~(1ull << 47);
    SHOW(t_int3_np);
    idt[3] = bp;
}

static void gdt_edits(void)
{
    GDT[8] = seg_desc((uint32_t)area1, 0xfff, 0x92, 0x4);   /* accessed bit clear */
    printf("gdt edit: accessed before %u\n", (unsigned)(GDT[8] >> 40) & 1);
    probe((void (*)(void))t_fs_read);
    uint32_t a = t_fs_again();
    printf("gdt edit: fs:0 %x, accessed after the load %u\n", a, (unsigned)(GDT[8] >> 40) & 1);
    GDT[8] = seg_desc((uint32_t)area2, 0xfff, 0x92, 0x4);   /* in place, no LGDT */
    uint32_t cached = t_fs_again();
    probe((void (*)(void))t_fs_read);
    printf("gdt edit: before reload %x, after %x, accessed %u\n", cached, t_fs_again(),
           (unsigned)(GDT[8] >> 40) & 1);
    GDT[9] = seg_desc((uint32_t)area1, 0xfff, 0x93, 0x4);
    GDT[9] &= ~(1ull << 47);                                 /* present bit cleared in place */
    SHOW(t_nm_ds);
    GDT[9] |= 1ull << 47;
    SHOW(t_nm_ds);
    uint32_t sum = 0;
    for (int i = 0; i < 3000; i++) {
        hot.counter++;
        if (i % 300 == 0) {
            GDT[8] = seg_desc((i / 300) & 1 ? (uint32_t)area1 : (uint32_t)area2, 0xfff, 0x93, 0x4);
            probe((void (*)(void))t_fs_read);
            sum += t_fs_again();
        }
    }
    printf("hot page: counter %u, sum %x\n", hot.counter, sum);
    for (int i = 0; i < 64; i++)
        hot.counter++;
    GDT[8] = seg_desc((uint32_t)area3, 0xfff, 0x93, 0x4);
    probe((void (*)(void))t_fs_read);
    printf("hot page, then an edit: fs:0 %x\n", t_fs_again());
}

/* ---- user mode ---- */
static void uputs(const char *s)
{
    for (; *s; s++) {
        while (!(inb(0x3fd) & 0x20))
            ;
        outb(0x3f8, *s);
    }
}

void user_main(void)
{
    switch (user_test) {
    case 1:
        uputs("user: ring 3 prints for itself at IOPL 3\n");
        asm volatile("cli; sti");
        uputs("user: cli and sti at IOPL 3\n");
        break;
    case 2:
        uputs("user: the TSS I/O bitmap lets me print\n");
        outb(0x80, 0);
        break;
    case 3:
        asm volatile("cli");
        break;
    case 4:
        asm volatile("int $0x42");
        break;
    }
    asm volatile("int $0x80" :: "a"(0));
}

static void enter_user(void)
{
    uint32_t eflags = user_test == 1 ? 0x3002 : 0x0002;
    /* IOPL from ring 0 by an IRET to itself (the IRET to ring 3 carries it too) */
    asm volatile("pushl %0; pushl %1; pushl $1f; iret\n1:" :: "r"(eflags), "i"(KCS) : "memory");
    asm volatile("movw %w0, %%ds; movw %w0, %%es\n\t"
                 "pushl %0; pushl %1; pushl %2; pushl %3; pushl %4; iret"
                 :: "r"((uint32_t)UDS), "r"((uint32_t)user_stack + sizeof(user_stack)),
                    "r"(eflags), "r"((uint32_t)UCS), "r"((uint32_t)user_main));
}

static void user_tests(void)
{
    for (int t = 1; t <= 4; t++) {
        user_test = t;
        t_vec = 0xff;
        probe(enter_user);
        if (t_vec == 0x80)
            printf("user test %d: back by int 0x80\n", t);
        else
            printf("user test %d: vector %u err %x\n", t, t_vec, t_err);
    }
}

void kmain(void)
{
    console_init();
    printf("segs: own GDT, no paging\n");
    GDT[0] = 0;
    GDT[KCS >> 3] = seg_desc(0, 0xfffff, 0x9a, 0xc);
    GDT[KDS >> 3] = seg_desc(0, 0xfffff, 0x92, 0xc);
    GDT[UCS >> 3] = seg_desc(0, 0xfffff, 0xfa, 0xc);
    GDT[UDS >> 3] = seg_desc(0, 0xfffff, 0xf2, 0xc);
    GDT[TSS_SEL >> 3] = seg_desc((uint32_t)&tss, sizeof(tss) - 1, 0x89, 0);
    GDT[11] = seg_desc(0, 0xfffff, 0x12, 0xc);     /* 0x58: data, not present */
    GDT[12] = seg_desc(0, 0xfffff, 0x12, 0xc);     /* 0x60: writable data, not present */
    GDT[13] = seg_desc(0, 0xfffff, 0x98, 0xc);     /* 0x68: execute-only code */
    GDT[14] = seg_desc(0, 0xfffff, 0x1a, 0xc);     /* 0x70: code, not present */
    tss.words[1] = 0x1ff000;                       /* esp0 */
    tss.words[2] = KDS;
    tss.words[25] = 104 << 16;                     /* the I/O bitmap follows */
    memset(tss.iomap, 0xff, sizeof(tss.iomap));
    tss.iomap[0x3f8 >> 3] = 0;                     /* COM1 only */
    struct pseudo_desc g = { 16 * 8 - 1, (uint32_t)GDT };
    asm volatile("lgdt %0\n\tljmp %1, $1f\n1:\n\t"
                 "movw %w2, %%ds\n\tmovw %w2, %%es\n\tmovw %w2, %%ss"
                 :: "m"(g), "i"(KCS), "r"(KDS) : "memory");
    for (int v = 0; v < 256; v++)
        set_gate(v, frt_vectors[v], KCS, 0x8e);
    set_gate(0x80, frt_vectors[0x80], KCS, 0xef);  /* DPL 3 trap gate */
    lidt_limit(sizeof(idt) - 1);
    asm volatile("ltr %w0" :: "r"(TSS_SEL));
    /* the PIC at 0x20/0x28, everything masked: user code below enables interrupts */
    outb(0x20, 0x11); outb(0xa0, 0x11);
    outb(0x21, 0x20); outb(0xa1, 0x28);
    outb(0x21, 0x04); outb(0xa1, 0x02);
    outb(0x21, 0x01); outb(0xa1, 0x01);
    outb(0x21, 0xff); outb(0xa1, 0xff);
    segment_faults();
    delivery_faults();
    gdt_edits();
    user_tests();
    printf("segs: done\n");
    frt_exit(0);
}
