/* uart: 16550A registers of COM1 (LSR, IIR, IER, LCR, scratch, divisor
 * latch, FIFO control, modem control loopback) and interrupt-driven receive
 * of the bytes the test feeds on stdin (IRQ4).  Expected values are in
 * tests/test_hw_guests.py.
 *
 * Order matters: the receive test runs before anything touches the FIFO
 * control register (enabling or disabling the FIFOs clears them, and with a
 * FIFO a byte could arrive while in loopback). */
#include "rt.h"

#define RBR (COM1 + 0)
#define IER (COM1 + 1)
#define IIR (COM1 + 2)
#define FCR (COM1 + 2)
#define LCR (COM1 + 3)
#define MCR (COM1 + 4)
#define LSR (COM1 + 5)
#define MSR (COM1 + 6)
#define SCR (COM1 + 7)

static volatile u32 ticks;
static volatile u32 nrx;
static volatile u8 rx[64];
static volatile u8 iir_in_handler = 0xff;
static volatile u32 irq4_count;

static void irq0(struct frame *f)
{
    (void)f;
    ticks++;
    pic_eoi(0);
}

static void irq4(struct frame *f)
{
    (void)f;
    u8 iir = inb(IIR);
    if (irq4_count++ == 0)
        iir_in_handler = iir;
    while (inb(LSR) & 0x01) {
        u8 c = inb(RBR);
        if (nrx < sizeof rx)
            rx[nrx++] = c;
    }
    pic_eoi(4);
}

static int got_newline(void)
{
    for (u32 i = 0; i < nrx; i++)
        if (rx[i] == '\n')
            return 1;
    return 0;
}

int main(void)
{
    kprintf("uart: start\n");

    /* registers after the runtime's init (IER=0, LCR=3, FIFOs off) */
    kprintf("LSR & (THRE|TEMT): 0x%02x\n", inb(LSR) & 0x60);
    kprintf("IIR: 0x%02x IER: 0x%02x LCR: 0x%02x\n", inb(IIR), inb(IER), inb(LCR));
    outb(SCR, 0x5a);
    u8 s1 = inb(SCR);
    outb(SCR, 0xa5);
    kprintf("scratch: 0x%02x 0x%02x\n", s1, inb(SCR));

    outb(LCR, 0x83);                         /* DLAB */
    outb(COM1 + 0, 0x0c);
    outb(COM1 + 1, 0x02);
    u8 dll = inb(COM1 + 0), dlm = inb(COM1 + 1);
    outb(COM1 + 0, 0x01);                    /* back to 115200 */
    outb(COM1 + 1, 0x00);
    u8 dll2 = inb(COM1 + 0);
    outb(LCR, 0x03);
    kprintf("divisor latch: DLL=0x%02x DLM=0x%02x, restored DLL=0x%02x, LCR=0x%02x\n",
            dll, dlm, dll2, inb(LCR));

    /* interrupt-driven receive: RDA interrupt on IRQ4, PIT as a timeout */
    rt_isr[0x20] = irq0;
    rt_isr[0x24] = irq4;
    outb(0x43, 0x34);
    outb(0x40, 11932 & 0xff);                /* ~100 Hz */
    outb(0x40, 11932 >> 8);
    outb(MCR, 0x0b);                         /* DTR RTS OUT2 (OUT2 gates the IRQ line on a PC) */
    outb(IER, 0x01);                         /* ERBFI */
    outb(0x21, 0xee);                        /* unmask IRQ0 and IRQ4 */
    while (!got_newline() && ticks < 500)
        __asm__ volatile("sti; hlt; cli" ::: "memory");
    outb(0x21, 0xff);
    outb(IER, 0x00);
    kprintf("received %u bytes: ", nrx);
    for (u32 i = 0; i < nrx; i++)
        if (rx[i] >= 0x20 && rx[i] < 0x7f)
            putch((char)rx[i]);
        else
            kprintf("\\x%02x", rx[i]);
    kprintf("\nIIR in the IRQ4 handler: 0x%02x\n", iir_in_handler);
    kprintf("IIR after receive: 0x%02x\n", inb(IIR));

    /* THRE interrupt identification: set when ETBEI is enabled with THR
     * empty, cleared by reading IIR */
    outb(IER, 0x02);
    u8 i1 = inb(IIR);
    u8 i2 = inb(IIR);
    outb(IER, 0x00);
    kprintf("ETBEI: IIR=0x%02x then 0x%02x\n", i1, i2);

    /* FIFOs */
    outb(FCR, 0x07);                         /* enable, clear RX and TX */
    u8 f1 = inb(IIR);
    outb(FCR, 0x00);
    u8 f2 = inb(IIR);
    kprintf("FIFO enabled IIR=0x%02x, disabled IIR=0x%02x\n", f1, f2);

    /* loopback: no output possible while it is on, print afterwards */
    u8 msr_all, msr_none, msr_bits[4], got[3], lsr_before, lsr_after;
    static const u8 sent[3] = { 0x5a, 0x00, 0xff };
    outb(MCR, 0x1f);
    msr_all = inb(MSR) & 0xf0;
    outb(MCR, 0x10);
    msr_none = inb(MSR) & 0xf0;
    for (int b = 0; b < 4; b++) {
        outb(MCR, (u8)(0x10 | (1 << b)));
        msr_bits[b] = inb(MSR) & 0xf0;
    }
    outb(MCR, 0x10);
    lsr_before = inb(LSR) & 0x01;
    lsr_after = 0;
    for (int k = 0; k < 3; k++) {
        outb(COM1, sent[k]);
        int guard = 100000;
        while (!(inb(LSR) & 0x01) && --guard)
            ;
        lsr_after |= (u8)(inb(LSR) & 0x01) << k;
        got[k] = inb(RBR);
    }
    u8 lsr_end = inb(LSR) & 0x01;
    outb(MCR, 0x03);
    kprintf("loopback MSR: all=0x%02x none=0x%02x DTR->0x%02x RTS->0x%02x OUT1->0x%02x OUT2->0x%02x\n",
            msr_all, msr_none, msr_bits[0], msr_bits[1], msr_bits[2], msr_bits[3]);
    kprintf("loopback data: DR before=%u, got 0x%02x 0x%02x 0x%02x (DR each time: 0x%x), DR after=%u\n",
            lsr_before, got[0], got[1], got[2], lsr_after, lsr_end);
    kprintf("uart: done\n");
    return 0;
}
