/* lnx: a kernel in the style of Linux/i386 (linked at 0xC0100000, Linux's
 * selectors 0x60/0x68/0x73/0x7b and its TSS at 0x80, 4 MiB boot pages then
 * 4 KiB page tables with a self-map as JOS keeps one), which does what such
 * kernels do before and after they own the interrupt controller:
 *
 *   - a long computation with interrupts off while the PIT (programmed here,
 *     the PIC not yet) keeps raising IRQ 0: the request waits in the PIC;
 *   - the PIC programmed, its registers read back, poll mode, EOIs;
 *   - the STI interrupt shadow, a PUSHF in it;
 *   - CR0.ET, CR0.WP clear and set, dirty bits;
 *   - one store straddling the live page directory and the page table after it.
 *
 * Every line it prints is the same on QEMU and on ringvisor, natively and
 * under every monitor.
 */
#include "frt.h"

#define PAGE_OFFSET 0xC0000000u
#define PA(x) ((uint32_t)(x) - PAGE_OFFSET)
#define VA(x) ((uint32_t)(x) + PAGE_OFFSET)
#define KCS 0x60
#define KDS 0x68
#define UCS 0x73
#define UDS 0x7b
#define TSS_SEL 0x80
#define UVPT 0xEF400000u                 /* the page tables, through the self-map */
#define UVPD (UVPT + (0x3BDu << 12))     /* the page directory itself */
#define TEST_VA 0xD0000000u

uint16_t frt_kdata = KDS;
static uint8_t gdt_page[4096] __attribute__((aligned(4096)));
#define GDT ((uint64_t *)(gdt_page + 0x6c4))    /* an odd place: 4-byte aligned only */
static uint64_t idt[256];
static uint32_t tss[26];
/* page pool: pd, then the kernel's page table right after it (both live) */
static uint32_t pool[8][1024] __attribute__((aligned(4096)));
static uint8_t test_frames[3][4096] __attribute__((aligned(4096)));

static volatile uint32_t ticks;
static volatile uint32_t recover_eip, fault_cr2, fault_err, fault_vec;

void trap(struct trapframe *tf)
{
    if (tf->trapno == 0x20) {
        ticks++;
        outb(0x20, 0x20);
        return;
    }
    if (recover_eip) {
        fault_vec = tf->trapno;
        fault_err = tf->err;
        fault_cr2 = rcr2();
        tf->eip = recover_eip;
        recover_eip = 0;
        return;
    }
    printf("unexpected trap %u err %x at %x\n", tf->trapno, tf->err, tf->eip);
    frt_exit(2);
}

/* a store that may fault: the trap handler resumes after it; the vector, or 0xff */
static uint32_t probe_store(volatile uint32_t *p, uint32_t v)
{
    fault_vec = 0xff;
    asm volatile("movl $1f, %[rec]\n\t"
                 "movl %[v], (%[p])\n\t"
                 "movl $0, %[rec]\n"
                 "1:" : [rec] "=m"(recover_eip) : [p] "r"(p), [v] "r"(v) : "memory");
    return fault_vec;
}

static uint32_t pic_read(uint16_t cmd, uint8_t ocw3)
{
    outb(cmd, ocw3);
    return inb(cmd);
}

static void setup_descriptors(void)
{
    GDT[0] = 0;
    for (int i = 1; i < 32; i++)
        GDT[i] = 0;
    GDT[KCS >> 3] = seg_desc(0, 0xfffff, 0x9a, 0xc);
    GDT[KDS >> 3] = seg_desc(0, 0xfffff, 0x92, 0xc);
    GDT[UCS >> 3] = seg_desc(0, 0xfffff, 0xfa, 0xc);
    GDT[UDS >> 3] = seg_desc(0, 0xfffff, 0xf2, 0xc);
    tss[2] = KDS;                                  /* ss0 */
    tss[25] = 104 << 16;                           /* no I/O bitmap */
    GDT[TSS_SEL >> 3] = seg_desc((uint32_t)tss, 103, 0x89, 0);
    struct pseudo_desc g = { 32 * 8 - 1, (uint32_t)GDT };
    asm volatile("lgdt %0\n\t"
                 "ljmp %1, $1f\n1:\n\t"
                 "movw %w2, %%ds\n\tmovw %w2, %%es\n\tmovw %w2, %%ss\n\t"
                 "xorl %%eax, %%eax\n\tmovw %%ax, %%fs\n\tmovw %%ax, %%gs"
                 :: "m"(g), "i"(KCS), "r"(KDS) : "eax", "memory");
    for (int v = 0; v < 256; v++)
        idt[v] = gate_desc(KCS, frt_vectors[v], 0x8e);
    struct pseudo_desc i = { sizeof(idt) - 1, (uint32_t)idt };
    asm volatile("lidt %0" :: "m"(i));
    asm volatile("ltr %w0" :: "r"(TSS_SEL));
}

static uint32_t *pd, *pt_kern;

static void setup_paging(void)
{
    pd = pool[0];
    pt_kern = pool[1];                             /* the page right after the directory */
    uint32_t *pt_kern2 = pool[2], *pt_test = pool[3];
    for (int i = 0; i < 1024; i++) {
        pt_kern[i] = (i << 12) | 3;                /* 0xC0000000.. -> 0.. (4 KiB pages) */
        pt_kern2[i] = ((1024 + i) << 12) | 3;
    }
    pd[0x300] = PA(pt_kern) | 3;
    pd[0x301] = PA(pt_kern2) | 3;
    pd[0x3BD] = PA(pd) | 1;                        /* read-only self-map */
    pd[TEST_VA >> 22] = PA(pt_test) | 7;
    pt_test[0] = PA(test_frames[0]) | 1;           /* supervisor, read-only */
    pt_test[1] = PA(test_frames[1]) | 5;           /* user, read-only */
    pt_test[2] = PA(test_frames[2]) | 3;
    lcr3(PA(pd));                                  /* no identity map any more */
}

static uint32_t crunch(uint32_t n)
{
    uint32_t h = 0x811c9dc5;
    for (uint32_t i = 0; i < n; i++)
        h = (h ^ (i & 0xff)) * 16777619u;
    return h;
}

/* Wait for IRQ 0's next request in the IRR.  It computes a little over one PIT period
 * first (ringvisor's clock is 100 MHz of retired instructions: 1193 PIT counts are
 * ~100,000 instructions, crunch() 6 per iteration), so that on ringvisor the request is
 * there by the first read or two -- each read is two port accesses, a trap apiece under
 * trap-and-emulate, and polling a whole period was ~10,000 of them per wait.  On QEMU,
 * where the PIT runs on host time, the computation is short and the loop still waits. */
static volatile uint32_t crunched;

static void wait_irq0_request(void)
{
    crunched = crunch(20000);
    while (!(pic_read(0x20, 0x0a) & 1))
        ;
}

static void pic_tests(void)
{
    /* the PIT at ~1 kHz (mode 2); the PIC is as the firmware left it */
    outb(0x43, 0x34);
    outb(0x40, 1193 & 0xff);
    outb(0x40, 1193 >> 8);
    printf("crunch: %x\n", crunch(60000));      /* ~3.5 PIT periods on ringvisor */
    uint32_t spins = 0;
    while (!(pic_read(0x20, 0x0a) & 1) && spins < 10000000)
        spins++;
    printf("IRQ 0 latched with interrupts off: irr bit %u, isr %x\n",
           pic_read(0x20, 0x0a) & 1, pic_read(0x20, 0x0b));
    /* now the kernel owns the PIC: vectors 0x20/0x28, only IRQ 0 */
    outb(0x20, 0x11); outb(0xa0, 0x11);
    outb(0x21, 0x20); outb(0xa1, 0x28);
    outb(0x21, 0x04); outb(0xa1, 0x02);
    outb(0x21, 0x01); outb(0xa1, 0x01);
    outb(0x21, 0xfe); outb(0xa1, 0xff);
    printf("imr %x %x, irr after ICW1 %x\n", inb(0x21), inb(0xa1), pic_read(0x20, 0x0a) & 0xfe);
    wait_irq0_request();
    uint32_t poll = pic_read(0x20, 0x0c);
    uint32_t isr = pic_read(0x20, 0x0b);
    outb(0x20, 0x20);
    printf("poll %x, isr then %x, after EOI %x\n", poll, isr, pic_read(0x20, 0x0b));
    /* STI shadow: the instruction after STI runs before the waiting interrupt */
    wait_irq0_request();
    uint32_t t0 = ticks, seen, flags;
    asm volatile("sti\n\tmovl %2, %0\n\tcli" : "=r"(seen), "=m"(ticks) : "m"(ticks));
    /* (QEMU's PIT runs on host time: more ticks may come after the first) */
    printf("sti shadow: read +%u, then %s\n", seen - t0, ticks != t0 ? "taken" : "not taken");
    wait_irq0_request();
    t0 = ticks;
    asm volatile("sti\n\tpushfl\n\tpopl %0\n\tcli" : "=r"(flags) :: "memory");
    printf("pushf in the shadow: tf %u if %u, interrupt %s\n", (flags >> 8) & 1, (flags >> 9) & 1,
           ticks != t0 ? "taken" : "not taken");
    t0 = ticks;
    while (ticks - t0 < 5)
        asm volatile("sti; hlt; cli");       /* Linux's safe_halt: IF only in the shadow */
    printf("hlt woken: ticks +%u\n", ticks - t0);
    outb(0x21, 0xff);                               /* quiet from here on */
}

static void cr_tests(void)
{
    lcr0(rcr0() & ~0x10u);
    printf("cr0 after clearing ET: et %u pg %u wp %u\n", (rcr0() >> 4) & 1, rcr0() >> 31,
           (rcr0() >> 16) & 1);
    volatile uint32_t *sro = (uint32_t *)TEST_VA, *uro = (uint32_t *)(TEST_VA + 0x1000);
    volatile uint32_t *uvpt = (uint32_t *)UVPT;
    /* WP clear: the kernel writes read-only pages, user or not; dirty bits as usual */
    uint32_t a = *sro, b = *uro;
    *sro = a + 0x1111;
    *uro = b + 0x2222;
    printf("wp=0: ro stores %x %x, ptes %x %x\n", *sro, *uro,
           uvpt[TEST_VA >> 12] & 0xfff, uvpt[(TEST_VA >> 12) + 1] & 0xfff);
    lcr0(rcr0() | 0x10000);
    uint32_t vec = probe_store(sro, 5);
    printf("wp=1: vector %u err %x cr2 %x, value %x\n", vec, fault_err, fault_cr2, *sro);
    lcr0(rcr0() & ~0x10000u);
    *uro = 0x33;
    printf("wp=0 again: %x\n", *uro);
    /* a remap, seen after INVLPG */
    volatile uint32_t *pt_test = (uint32_t *)(UVPT + ((TEST_VA >> 22) << 12));
    test_frames[2][0] = 0x5a;
    uint32_t old = pt_test[0];
    pt_test[0] = PA(test_frames[2]) | 1;
    invlpg(TEST_VA);
    printf("remapped through the self-map? %x\n", *(volatile uint8_t *)TEST_VA);
    pt_test[0] = old;
    invlpg(TEST_VA);
}

static void straddle_test(void)
{
    /* pool[0] is the live directory, pool[1] the live table of PAGE_OFFSET: one
     * unaligned store writes the high half of PDE 1023 and the low half of PTE 0 */
    volatile uint32_t *uvpd = (uint32_t *)UVPD;
    uint32_t before = *(volatile uint32_t *)((uint8_t *)pd + 0xffe);
    asm volatile("movl %1, (%0)" :: "r"((uint8_t *)pd + 0xffe), "r"(0x00071234u) : "memory");
    invlpg(PAGE_OFFSET);
    printf("straddling store: pde 1023 %x, pte 0 %x, via the self-map %x\n", pd[1023],
           pt_kern[0], ((volatile uint32_t *)UVPT)[PAGE_OFFSET >> 12] & 0xfff);
    *(volatile uint8_t *)(PAGE_OFFSET + 0xff0) = 0x77;      /* through the new PTE */
    printf("through it: %x\n", *(volatile uint8_t *)(PAGE_OFFSET + 0xff0));
    asm volatile("movl %1, (%0)" :: "r"((uint8_t *)pd + 0xffe), "r"(before) : "memory");
    invlpg(PAGE_OFFSET);
    printf("restored: pde 1023 %x, pte 0 %x, uvpd[0x300] flags %x\n", pd[1023], pt_kern[0],
           uvpd[0x300] & 0xfff);
}

void start_kernel(void)
{
    console_init();
    printf("lnx: higher half at %x, stack %s\n", (uint32_t)start_kernel,
           (uint32_t)&ticks > PAGE_OFFSET ? "high" : "low");
    setup_descriptors();
    setup_paging();
    printf("gdt at +%x in its page\n", (uint32_t)GDT & 0xfff);
    pic_tests();
    cr_tests();
    straddle_test();
    printf("lnx: done\n");
    frt_exit(0);
}
