/* pic_pit: 8259A PIC (remap, IMR, IRR/ISR reads, masking, EOI) and 8254 PIT
 * channel 0 (mode 2 and 3, counter latch, read-back).  Only fixed or
 * architecturally defined values are printed: never tick counts measured
 * against wall-clock time.  Expected values are in tests/test_hw_guests.py. */
#include "rt.h"

#define DIVISOR 1193            /* ~1 kHz: keeps busy waits short */

static volatile u32 ticks;
static volatile int send_eoi = 1;
static volatile u32 isr_in_handler = 0xff;

static void irq0(struct frame *f)
{
    (void)f;
    if (ticks == 0) {
        outb(0x20, 0x0b);            /* OCW3: read ISR */
        isr_in_handler = inb(0x20);
    }
    ticks++;
    if (send_eoi)
        outb(0x20, 0x20);            /* non-specific EOI */
}

static u8 read_isr(void) { outb(0x20, 0x0b); return inb(0x20); }
static u8 read_irr(void) { outb(0x20, 0x0a); return inb(0x20); }

static u16 pit_latch(void)
{
    outb(0x43, 0x00);                /* counter latch, channel 0 */
    u8 lo = inb(0x40);
    u8 hi = inb(0x40);
    return (u16)(lo | (hi << 8));
}

/* Busy-wait (interrupts as they are) until IRQ0 is requested in IRR.  The
 * PIT must produce a rising edge within a few periods; the guard allows
 * ~2000 counter reloads (2 s) for slow hosts. */
static int wait_irr0(void)
{
    u16 prev = pit_latch();
    for (u32 reloads = 0, guard = 0; reloads < 2000 && guard < 50000000; guard++) {
        if (read_irr() & 1)
            return 1;
        u16 c = pit_latch();
        if (c > prev)
            reloads++;
        prev = c;
    }
    return 0;
}

/* Wait (hlt) until ticks reaches target. */
static void wait_ticks(u32 target)
{
    while (ticks < target)
        __asm__ volatile("sti; hlt; cli" ::: "memory");
}

static void pit_program(u8 cmd, u16 divisor)
{
    outb(0x43, cmd);
    outb(0x40, divisor & 0xff);
    outb(0x40, divisor >> 8);
}

int main(void)
{
    kprintf("pic_pit: start\n");
    rt_isr[0x20] = irq0;

    outb(0xa1, 0xa5);
    kprintf("slave IMR readback: 0x%02x\n", inb(0xa1));
    outb(0xa1, 0xff);

    pit_program(0x34, DIVISOR);      /* ch0, lo/hi, mode 2, binary */
    outb(0x43, 0xe2);                /* read-back: status only, channel 0 */
    kprintf("PIT ch0 status (mode 2): 0x%02x\n", inb(0x40) & 0x3f);

    /* counter decreasing: wait for the first change of the latched value */
    int decreasing = 0;
    for (int attempt = 0; attempt < 5 && !decreasing; attempt++) {
        u16 a = pit_latch(), b = a;
        for (long guard = 0; b == a && guard < 1000000; guard++)
            b = pit_latch();
        if (b < a)
            decreasing = 1;
    }
    kprintf("PIT counter decreasing: %s\n", decreasing ? "yes" : "no");

    outb(0x43, 0xd2);                /* read-back: count only, channel 0 */
    u8 lo = inb(0x40), hi = inb(0x40);
    u16 rb = (u16)(lo | (hi << 8));
    kprintf("PIT read-back count within 1..divisor: %s\n", rb >= 1 && rb <= DIVISOR ? "yes" : "no");

    /* unmask IRQ0 and count timer interrupts */
    outb(0x21, 0xfe);
    kprintf("master IMR: 0x%02x\n", inb(0x21));
    wait_ticks(5);
    kprintf("got %u ticks\n", ticks);
    kprintf("ISR in handler: 0x%02x, ISR after EOI: 0x%02x\n", isr_in_handler, read_isr());

    /* masked: the request is latched in IRR but not delivered */
    outb(0x21, 0xff);
    u32 t0 = ticks;
    sti();
    int irr = wait_irr0();
    cli();
    kprintf("masked: IRR bit0 set=%s, ticks while masked=%u\n", irr ? "yes" : "no", ticks - t0);
    outb(0x21, 0xfe);
    __asm__ volatile("sti; nop; cli" ::: "memory");
    kprintf("unmasked: pending interrupt delivered: %s\n", ticks - t0 >= 1 ? "yes" : "no");

    /* no EOI: IRQ0 stays in service and blocks the next IRQ0 */
    send_eoi = 0;
    t0 = ticks;
    wait_ticks(t0 + 1);
    sti();
    irr = wait_irr0();
    cli();
    kprintf("without EOI: IRR bit0 set=%s, further ticks=%u, ISR=0x%02x\n", irr ? "yes" : "no",
            ticks - t0 - 1, read_isr());
    send_eoi = 1;
    outb(0x20, 0x60);                /* specific EOI, IRQ0 */
    __asm__ volatile("sti; nop; cli" ::: "memory");
    kprintf("after specific EOI: pending interrupt delivered: %s, ISR=0x%02x\n",
            ticks - t0 >= 2 ? "yes" : "no", read_isr());

    /* mode 3 */
    outb(0x21, 0xff);
    pit_program(0x36, DIVISOR);      /* ch0, lo/hi, mode 3 */
    outb(0x43, 0xe2);
    kprintf("PIT ch0 status (mode 3): 0x%02x\n", inb(0x40) & 0x3f);
    t0 = ticks;
    outb(0x21, 0xfe);
    wait_ticks(t0 + 3);
    kprintf("mode 3: got %u more ticks\n", ticks - t0);
    outb(0x21, 0xff);

    kprintf("pic_pit: done\n");
    return 0;
}
