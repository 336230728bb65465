/* apic: the local APIC (xAPIC MMIO at 0xFEE00000) and the IO-APIC (0xFEC00000)
 * of QEMU's i440FX PC, as a kernel booted by -kernel finds them: the state at
 * entry, TPR/PPR, self-IPIs (ISR/IRR/TMR, EOI, priorities), the spurious vector,
 * the timer (one-shot, periodic, divide configuration, current count), LINT0
 * ExtINT from the 8259A, NMI, error status, and PIT IRQ 0 through IO-APIC pin 2.
 * Only values fixed by the SDM or by QEMU's model are printed, never counts
 * measured against time.  Expected lines are in tests/test_apic.py. */
#include "rt.h"

#define APIC 0xfee00000u
#define IOAPIC 0xfec00000u
#define MSR_APIC_BASE 0x1b

enum { ID = 0x20, VER = 0x30, TPR = 0x80, PPR = 0xa0, EOI = 0xb0, LDR = 0xd0, DFR = 0xe0,
       SVR = 0xf0, ISR = 0x100, TMR = 0x180, IRR = 0x200, ESR = 0x280, ICR = 0x300,
       ICR2 = 0x310, LVTT = 0x320, LVT0 = 0x350, LVT1 = 0x360, LVTE = 0x370,
       TICR = 0x380, TCCR = 0x390, TDCR = 0x3e0 };

static u32 ar(u32 r) { return *(volatile u32 *)(APIC + r); }
static void aw(u32 r, u32 v) { *(volatile u32 *)(APIC + r) = v; }
static u32 ior(u32 r) { *(volatile u32 *)IOAPIC = r; return *(volatile u32 *)(IOAPIC + 0x10); }
static void iow(u32 r, u32 v) { *(volatile u32 *)IOAPIC = r; *(volatile u32 *)(IOAPIC + 0x10) = v; }
static u64 rdmsr(u32 n) { u32 lo, hi; __asm__ volatile("rdmsr" : "=a"(lo), "=d"(hi) : "c"(n)); return ((u64)hi << 32) | lo; }
static void cpuid(u32 leaf, u32 *a, u32 *b, u32 *c, u32 *d)
{ __asm__ volatile("cpuid" : "=a"(*a), "=b"(*b), "=c"(*c), "=d"(*d) : "a"(leaf), "c"(0)); }
static int bit(u32 base, int v) { return (ar(base + (v >> 5) * 0x10) >> (v & 31)) & 1; }

static volatile u32 hits[256];
static volatile u32 order[16], norder;
static volatile u32 isr_seen, tmr_seen, ppr_seen;
static volatile int do_eoi = 1;

static void record(struct frame *f)
{
    u32 v = f->vector;
    hits[v]++;
    if (norder < 16)
        order[norder++] = v;
    isr_seen = bit(ISR, v);
    tmr_seen = bit(TMR, v);
    ppr_seen = ar(PPR);
    if (do_eoi && v != 2)
        aw(EOI, 0);
}

static void self_ipi(u32 vec) { aw(ICR2, 0); aw(ICR, 0x40000 | vec); }
static void reset_log(void) { for (int i = 0; i < 256; i++) hits[i] = 0; norder = 0; }
static void print_order(const char *what)
{
    kprintf("%s:", what);
    for (u32 i = 0; i < norder; i++)
        kprintf(" 0x%02x", order[i]);
    kprintf("\n");
}
static void spin(u32 n) { for (volatile u32 i = 0; i < n; i++) ; }
/* wait with IF=0 between the test and HLT: STI's shadow makes "sti; hlt" one step */
#define WAIT_FOR(cond) do { while (!(cond)) __asm__ volatile("sti; hlt; cli" ::: "memory"); } while (0)

int main(void)
{
    u32 a, b, c, d;
    kprintf("apic: start\n");
    for (int v = 0x20; v < 0x100; v++)
        rt_isr[v] = record;
    rt_isr[2] = record;

    cpuid(1, &a, &b, &c, &d);
    kprintf("cpuid.1 edx.apic=%u apic id=%u\n", (d >> 9) & 1, b >> 24);
    u64 base = rdmsr(MSR_APIC_BASE);
    kprintf("APIC_BASE=%08x bsp=%u enable=%u\n", (u32)base, (u32)(base >> 8) & 1, (u32)(base >> 11) & 1);
    kprintf("id=%08x version=%08x\n", ar(ID), ar(VER));
    kprintf("entry: tpr=%x svr=%08x ldr=%08x dfr=%08x\n", ar(TPR), ar(SVR), ar(LDR), ar(DFR));
    kprintf("entry: lvt timer=%08x lint0=%08x lint1=%08x error=%08x\n", ar(LVTT), ar(LVT0), ar(LVT1), ar(LVTE));
    kprintf("entry: ticr=%x tdcr=%x esr=%x\n", ar(TICR), ar(TDCR), ar(ESR));
    kprintf("ioapic: id=%08x ver=%08x arb=%08x\n", ior(0), ior(1), ior(2));
    kprintf("ioapic: redir0=%08x.%08x redir2=%08x.%08x redir23=%08x.%08x\n",
            ior(0x11), ior(0x10), ior(0x15), ior(0x14), ior(0x3f), ior(0x3e));
    /* the arbitration ID follows the ID and is read-only (82093AA) */
    iow(0, 0x0f000000);
    iow(2, 0);
    kprintf("ioapic: after id=0f000000: id=%08x arb=%08x\n", ior(0), ior(2));
    iow(0, 0);
    kprintf("ioapic: after id=0: arb=%08x\n", ior(2));

    /* TPR and PPR (SDM Vol. 3 §10.8.3.1) */
    aw(TPR, 0x2f);
    kprintf("tpr=%x ppr=%x\n", ar(TPR), ar(PPR));
    aw(TPR, 0);

    /* a fixed self-IPI waits in IRR while IF=0, is in ISR in its handler, leaves on EOI */
    self_ipi(0x40);
    kprintf("self-ipi 0x40 pending: irr=%u isr=%u\n", bit(IRR, 0x40), bit(ISR, 0x40));
    sti(); __asm__ volatile("nop"); cli();
    kprintf("self-ipi 0x40: hits=%u isr-in-handler=%u tmr=%u ppr-in-handler=%x isr-after=%u\n",
            hits[0x40], isr_seen, tmr_seen, ppr_seen, bit(ISR, 0x40));

    /* priority: the highest vector first */
    reset_log();
    self_ipi(0x31); self_ipi(0x61); self_ipi(0x52); self_ipi(0x5f);
    sti(); __asm__ volatile("nop"); cli();
    print_order("priority order");

    /* TPR holds back a class at or below it */
    reset_log();
    aw(TPR, 0x50);
    self_ipi(0x45); self_ipi(0x50); self_ipi(0x65);
    sti(); spin(100); cli();
    print_order("tpr=0x50 delivered");
    kprintf("held in irr: 0x45=%u 0x50=%u\n", bit(IRR, 0x45), bit(IRR, 0x50));
    aw(TPR, 0);
    sti(); spin(100); cli();
    print_order("tpr=0 delivered");

    /* an in-service vector holds back its class until EOI */
    reset_log();
    do_eoi = 0;
    self_ipi(0x70);
    sti(); spin(100); cli();
    self_ipi(0x72); self_ipi(0x61);
    sti(); spin(100); cli();
    print_order("without eoi");
    kprintf("isr 0x70=%u ppr=%x irr 0x72=%u 0x61=%u\n", bit(ISR, 0x70), ar(PPR), bit(IRR, 0x72), bit(IRR, 0x61));
    do_eoi = 1;
    aw(EOI, 0);
    sti(); spin(100); cli();
    print_order("after eoi");

    /* destinations: physical, broadcast, logical flat, shorthands */
    reset_log();
    aw(ICR2, 0x00000000); aw(ICR, 0x41);             /* physical 0: this CPU */
    aw(ICR2, 0x05000000); aw(ICR, 0x42);             /* physical 5: nobody */
    aw(ICR2, 0xff000000); aw(ICR, 0x43);             /* physical broadcast */
    aw(LDR, 0x02000000);
    aw(ICR2, 0x02000000); aw(ICR, 0x844);            /* logical 0x02: this CPU */
    aw(ICR2, 0x01000000); aw(ICR, 0x845);            /* logical 0x01: nobody */
    aw(ICR2, 0x03000000); aw(ICR, 0x946);            /* lowest priority, logical 0x03 */
    aw(ICR2, 0); aw(ICR, 0x80047);                   /* all including self */
    aw(ICR, 0xc0048);                                /* all excluding self: nobody here */
    sti(); spin(100); cli();
    print_order("destinations");
    kprintf("ldr=%08x icr=%08x icr2=%08x\n", ar(LDR), ar(ICR), ar(ICR2));
    aw(LDR, 0);

    /* NMI by IPI: vector 2, whatever IF says */
    reset_log();
    aw(ICR, 0x40400);
    spin(100);
    print_order("nmi ipi (IF=0)");

    /* software disable: nothing is delivered, requests wait in IRR */
    reset_log();
    aw(SVR, 0xff);
    self_ipi(0x55);
    sti(); spin(100); cli();
    kprintf("disabled: svr=%x hits=%u irr=%u\n", ar(SVR), hits[0x55], bit(IRR, 0x55));
    aw(SVR, 0x1ff);
    sti(); spin(100); cli();
    kprintf("enabled again: hits=%u\n", hits[0x55]);

    /* error status: an unknown register */
    aw(ESR, 0);
    (void)ar(0x3f0);
    kprintf("esr after a read of 0x3f0: %x\n", ar(ESR));
    aw(ESR, 0);
    kprintf("esr after a write: %x\n", ar(ESR));

    /* the timer: divide configuration, one-shot, periodic */
    aw(TDCR, 0xf);
    kprintf("tdcr=%x\n", ar(TDCR));
    aw(TDCR, 0x9);                                   /* divide by 64 */
    reset_log();
    aw(LVTT, 0x50);
    aw(TICR, 1000000);
    u32 c1 = ar(TCCR);
    spin(1000);
    u32 c2 = ar(TCCR);
    kprintf("one-shot: ticr=%u counting down=%u\n", ar(TICR), c1 <= 1000000 && c2 < c1);
    WAIT_FOR(hits[0x50]);
    kprintf("one-shot fired: hits=%u tccr=%u\n", hits[0x50], ar(TCCR));
    aw(TDCR, 0xb);                                   /* divide by 1 */
    aw(TICR, 1000);
    WAIT_FOR(hits[0x50] == 2);
    kprintf("one-shot again: hits=%u\n", hits[0x50]);
    reset_log();
    aw(LVTT, 0x20051);                               /* periodic */
    aw(TICR, 200000);
    WAIT_FOR(hits[0x51] >= 5);
    u32 p = ar(TCCR);
    kprintf("periodic: 5 ticks, reloaded=%u lvt=%08x\n", p > 0 && p <= 200000, ar(LVTT));
    aw(LVTT, 0x30051);                               /* masked: no more */
    /* a tick accepted into IRR before the mask is still delivered (the mask stops
       new ones only, SDM Vol. 3 §10.5.1): let it in before counting */
    sti(); spin(1000); cli();
    u32 h = hits[0x51];
    sti(); spin(50000); cli();
    kprintf("masked: more=%u\n", hits[0x51] - h);
    aw(TICR, 0);
    aw(LVTT, 0x10000);

    /* LINT0 ExtINT: the 8259A's IRQ 0 at its own vector; masked LINT0 holds it back */
    reset_log();
    outb(0x43, 0x34); outb(0x40, 0x00); outb(0x40, 0x10);   /* PIT mode 2, 4096 */
    outb(0x21, 0xfe);
    WAIT_FOR(hits[0x20]);
    kprintf("pic irq0 through lint0: vector 0x20 hits=%u\n", hits[0x20] ? 1 : 0);
    outb(0x20, 0x20);
    aw(LVT0, 0x18700);
    h = hits[0x20];
    /* the next request of the PIT; polled between short spins, not back to back: each
       port access is a trap under a monitor (tests/test_apic.py runs it under two) */
    for (u32 guard = 0; guard < 1000000 && !((outb(0x20, 0x0a), inb(0x20)) & 1); guard++) {
        sti();
        spin(300);
    }
    cli();
    kprintf("lint0 masked: delivered=%u pic irr0=%u\n", hits[0x20] - h, (outb(0x20, 0x0a), inb(0x20)) & 1);
    aw(LVT0, 0x8700);
    sti(); __asm__ volatile("nop"); cli();
    kprintf("lint0 unmasked: delivered=%u\n", hits[0x20] - h);
    outb(0x21, 0xff);
    outb(0x20, 0x20);

    /* the IO-APIC: PIT IRQ 0 arrives on pin 2 (edge), pin 0 stays quiet */
    reset_log();
    iow(0x10, 0x10066);                          /* pin 0: masked */
    iow(0x15, 0); iow(0x14, 0x67);               /* pin 2: vector 0x67, edge, physical 0 */
    WAIT_FOR(hits[0x67] >= 3);
    kprintf("ioapic pin 2 edge: hits>=3 vector 0x66 hits=%u\n", hits[0x66]);
    iow(0x14, 0x10067);
    /* level-triggered: remote IRR set while in service, TMR set, cleared by EOI */
    reset_log();
    do_eoi = 0;
    iow(0x14, 0x8068);
    WAIT_FOR(hits[0x68]);
    iow(0x14, ior(0x14) | 0x10000);              /* masked before the EOI: no storm */
    kprintf("ioapic level: remote irr=%u tmr=%u\n", (ior(0x14) >> 14) & 1, bit(TMR, 0x68));
    aw(EOI, 0);
    do_eoi = 1;
    kprintf("after eoi: remote irr=%u redir2=%08x\n", (ior(0x14) >> 14) & 1, ior(0x14));
    iow(0x14, 0x10000);
    kprintf("apic: done\n");
    return 0;
}
