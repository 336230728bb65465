/* apictimer: the local APIC as a kernel drives its clock with it -- the timer
 * periodic and one-shot (halted and busy), the TPR holding a class back,
 * self-IPIs with their ISR/PPR and priority order, EOI, the 8259A through
 * LINT0, and NMI IPIs with their blocking -- written to print the same lines natively, on QEMU, and under the
 * monitors (--mode trapemu and bt), which give the guest a virtual APIC: every
 * access to the APIC page below traps and is emulated there.  Only values the
 * SDM (Vol. 3 ch. 10) or QEMU's model fix are printed, never measured counts.
 * Expected lines are in tests/test_vapic.py. */
#include "rt.h"

#define APIC 0xfee00000u
#define MSR_APIC_BASE 0x1b

enum { ID = 0x20, VER = 0x30, TPR = 0x80, PPR = 0xa0, EOI = 0xb0, SVR = 0xf0, ISR = 0x100,
       IRR = 0x200, ICR = 0x300, ICR2 = 0x310, LVTT = 0x320, LVT0 = 0x350, TICR = 0x380,
       TCCR = 0x390, TDCR = 0x3e0 };

static u32 ar(u32 r) { return *(volatile u32 *)(APIC + r); }
static void aw(u32 r, u32 v) { *(volatile u32 *)(APIC + r) = v; }
static int bit(u32 base, int v) { return (ar(base + (v >> 5) * 0x10) >> (v & 31)) & 1; }

static volatile u32 hits[256];
static volatile u32 order[8], norder, isr_in, ppr_in;

static void tick(struct frame *f)
{
    u32 v = f->vector;
    hits[v]++;
    if (norder < 8)
        order[norder++] = v;
    isr_in = bit(ISR, v);
    ppr_in = ar(PPR);
    aw(EOI, 0);
}

static void pic_tick(struct frame *f)
{
    hits[f->vector]++;
    outb(0x20, 0x20);           /* an ExtINT vector is not in the APIC's ISR: no APIC EOI */
}

static void self_ipi(u32 vec) { aw(ICR2, 0); aw(ICR, 0x40000 | vec); }
static void spin(u32 n) { for (volatile u32 i = 0; i < n; i++) ; }
/* an NMI IPI to APIC ID 0, this processor (delivery mode NMI, assert: SDM §10.6.1) */
static void nmi_to_self(void) { aw(ICR2, 0); aw(ICR, 0x4400); }

static volatile u32 nmis, nmis_in_handler, nmi_if;

static void nmi(struct frame *f)
{
    nmis++;
    nmi_if = (f->eflags >> 9) & 1;
    if (nmis == 2) {
        nmi_to_self();          /* blocked until this handler's IRET (§6.7.1) */
        spin(10);
        nmis_in_handler = nmis;
    }
}
#define WAIT_FOR(cond) do { while (!(cond)) __asm__ volatile("sti; hlt; cli" ::: "memory"); } while (0)

int main(void)
{
    u32 a, b, c, d;
    kprintf("apictimer: start\n");
    for (int v = 0x30; v < 0x100; v++)
        rt_isr[v] = tick;
    pic_remap_mask_all();
    rt_isr[0x20] = pic_tick;

    __asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(1), "c"(0));
    __asm__ volatile("rdmsr" : "=a"(a), "=d"(c) : "c"(MSR_APIC_BASE));
    kprintf("cpuid apic=%u id=%u base=%08x\n", (d >> 9) & 1, b >> 24, a);
    kprintf("id=%08x version=%08x svr=%08x lint0=%08x\n", ar(ID), ar(VER), ar(SVR), ar(LVT0));

    /* periodic, divide by 1 (SDM Vol. 3 §10.5.4): the processor waits in HLT */
    aw(TDCR, 0xb);
    aw(LVTT, 0x20040);
    aw(TICR, 100000);
    WAIT_FOR(hits[0x40] >= 5);
    u32 p = ar(TCCR);
    aw(LVTT, 0x30040);
    kprintf("periodic (halted): ticks=5 reloaded=%u lvt=%08x\n", p > 0 && p <= 100000, ar(LVTT));

    /* periodic while the processor computes: the interrupt must come without a trap of
     * the guest's */
    aw(LVTT, 0x20041);
    aw(TICR, 50000);
    sti();
    u32 guard = 0;
    while (!hits[0x41] && guard < 20000000)
        guard++;
    cli();
    aw(LVTT, 0x30041);
    kprintf("periodic (busy): ticked=%u\n", hits[0x41] >= 1);

    /* one-shot: counts down to 0 once */
    aw(LVTT, 0x42);
    aw(TICR, 300000);
    u32 c1 = ar(TCCR);
    spin(100);                  /* (two reads in one translated block see one time) */
    u32 c2 = ar(TCCR);
    kprintf("one-shot: counting down=%u\n", c1 <= 300000 && c2 < c1);
    WAIT_FOR(hits[0x42]);
    sti();
    spin(20000);
    cli();
    kprintf("one-shot: fired=%u tccr=%u\n", hits[0x42], ar(TCCR));

    /* TPR 0x50 holds back class 4 (§10.8.3.1): the expiry waits in IRR */
    aw(TPR, 0x50);
    aw(LVTT, 0x43);
    aw(TICR, 2000);
    sti();
    for (guard = 0; guard < 10000000 && !bit(IRR, 0x43); guard++)
        ;
    cli();
    kprintf("tpr=50: held in irr=%u delivered=%u ppr=%02x\n", bit(IRR, 0x43), hits[0x43], ar(PPR));
    aw(TPR, 0);
    WAIT_FOR(hits[0x43]);
    kprintf("tpr=0: delivered=%u irr=%u\n", hits[0x43], bit(IRR, 0x43));

    /* self-IPIs (§10.6.1): IRR until IF allows, the highest first, ISR and PPR in the handler */
    norder = 0;
    self_ipi(0x52);
    self_ipi(0x71);
    self_ipi(0x66);
    kprintf("self-ipi pending: irr 0x52=%u 0x71=%u 0x66=%u\n", bit(IRR, 0x52), bit(IRR, 0x71), bit(IRR, 0x66));
    WAIT_FOR(norder == 3);
    kprintf("self-ipi order: %02x %02x %02x isr-in-handler=%u ppr-in-handler=%02x isr-after=%u\n",
            order[0], order[1], order[2], isr_in, ppr_in, bit(ISR, 0x52));

    /* two self-IPIs with IF clear, then IF set for one instruction: the higher is taken
     * after the NOP (STI's shadow, SDM Vol. 3 §6.8.3); its handler's EOI lowers the PPR
     * (§10.8.3.1) and its IRET restores IF (SDM Vol. 2 IRET), so the lower one is taken
     * at once, before the CLI */
    norder = 0;
    self_ipi(0x60);
    self_ipi(0x61);
    __asm__ volatile("sti; nop; cli" ::: "memory");
    kprintf("after the handler's iret: taken=%u order %02x %02x\n", norder, order[0], order[1]);

    /* with IF set, a vector the TPR held back is taken once the TPR is lowered (§10.8.3.1:
     * the PPR follows the TPR), without a HLT or an STI */
    aw(TPR, 0x60);
    self_ipi(0x62);
    sti();
    spin(100);
    u32 held = hits[0x62];
    aw(TPR, 0);
    spin(100);
    cli();
    kprintf("tpr lowered with IF set: held=%u then taken=%u\n", held, hits[0x62]);

    /* the 8259A through LINT0 (ExtINT, as the firmware left it): PIT IRQ 0 at vector 0x20 */
    outb(0x43, 0x34); outb(0x40, 0x00); outb(0x40, 0x10);   /* mode 2, 4096 */
    outb(0x21, 0xfe);
    WAIT_FOR(hits[0x20] >= 2);
    outb(0x21, 0xff);
    kprintf("pic irq0 through lint0: ticks>=2 apic isr 0x20=%u\n", bit(ISR, 0x20));

    /* NMIs: taken with IF clear; another one raised in the handler waits for its IRET */
    rt_isr[2] = nmi;
    cli();
    nmi_to_self();
    spin(10);
    kprintf("nmi with IF clear: taken=%u if-in-frame=%u\n", nmis, nmi_if);
    nmi_to_self();
    spin(10);
    kprintf("nmi raised in its handler: in handler %u, after its iret %u\n", nmis_in_handler, nmis);

    kprintf("apictimer: done\n");
    return 0;
}
