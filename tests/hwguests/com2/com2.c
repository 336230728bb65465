/* com2: the PC's second serial port (0x2F8, IRQ 3), present when the machine is given a
 * second serial line (QEMU: a second -serial; ringvisor: a second --serial).  Checked
 * against QEMU by tests/test_console.py:
 *   - without it, the ports read as an empty ISA bus (0xff), so the scratch register
 *     keeps nothing;
 *   - with it, the 16550A's reset state (LSR THRE|TEMT, IIR "no interrupt", IER 0,
 *     LCR 0: National Semiconductor PC16550D data sheet, table "UART reset
 *     configuration");
 *   - loopback (MCR bit 4): each transmitted byte is received, and with IER.ERBFI the
 *     received-data interrupt arrives on IRQ 3 (IIR 0x04 in the handler);
 *   - then, with loopback off, whatever the host's end of the line sends within
 *     half a second of virtual time is echoed back upper-cased (nothing from null). */
#include "rt.h"

#define COM2 0x2F8
#define RBR (COM2 + 0)
#define IER (COM2 + 1)
#define IIR (COM2 + 2)
#define LCR (COM2 + 3)
#define MCR (COM2 + 4)
#define LSR (COM2 + 5)
#define SCR (COM2 + 7)

static volatile u32 ticks, nirq3, nrx;
static volatile u8 rx[64];
static volatile u8 iir_in_handler = 0xff;

static void irq0(struct frame *f)
{
    (void)f;
    ticks++;
    pic_eoi(0);
}

static void irq3(struct frame *f)
{
    (void)f;
    u8 iir = inb(IIR);
    if (nirq3++ == 0)
        iir_in_handler = iir;
    while (inb(LSR) & 0x01) {
        u8 c = inb(RBR);
        if (nrx < sizeof rx)
            rx[nrx++] = c;
    }
    pic_eoi(3);
}

static void wait_for(u32 n, u32 max_ticks)
{
    u32 until = ticks + max_ticks;
    while (nrx < n && ticks < until)
        __asm__ volatile("sti; hlt; cli" ::: "memory");
}

int main(void)
{
    kprintf("com2: start\n");
    outb(SCR, 0x5a);
    u8 s1 = inb(SCR);
    outb(SCR, 0xa5);
    u8 s2 = inb(SCR);
    kprintf("scratch: 0x%02x 0x%02x\n", s1, s2);
    if (s1 != 0x5a || s2 != 0xa5) {
        kprintf("com2: absent\n");
        rt_exit(0);
    }
    kprintf("reset: LSR=0x%02x IIR=0x%02x IER=0x%02x LCR=0x%02x\n",
            inb(LSR) & 0x60, inb(IIR), inb(IER), inb(LCR));

    outb(LCR, 0x83);                         /* 115200 baud, 8N1 */
    outb(COM2 + 0, 0x01);
    outb(COM2 + 1, 0x00);
    outb(LCR, 0x03);
    rt_isr[0x20] = irq0;
    rt_isr[0x23] = irq3;
    outb(0x43, 0x34);
    outb(0x40, 11932 & 0xff);                /* ~100 Hz */
    outb(0x40, 11932 >> 8);
    outb(0x21, 0xf6);                        /* unmask IRQ0 and IRQ3 */

    outb(MCR, 0x18);                         /* loopback, OUT2 */
    outb(IER, 0x01);                         /* ERBFI */
    static const char word[] = "com2";
    for (u32 i = 0; word[i]; i++) {
        outb(COM2, (u8)word[i]);
        wait_for(i + 1, 50);
    }
    kprintf("loopback: %u bytes on %u IRQ3s, IIR in the handler 0x%02x: ", nrx, nirq3,
            iir_in_handler);
    for (u32 i = 0; i < nrx; i++)
        putch((char)rx[i]);
    kprintf("\n");

    outb(MCR, 0x08);                         /* the line again: OUT2 only */
    nrx = 0;
    wait_for(sizeof rx, 50);
    kprintf("from the host: %u bytes\n", nrx);
    for (u32 i = 0; i < nrx; i++) {
        u8 c = rx[i];
        if (c >= 'a' && c <= 'z')
            c = (u8)(c - 'a' + 'A');
        while (!(inb(LSR) & 0x20))
            ;
        outb(COM2, c);
    }
    outb(0x21, 0xff);
    outb(IER, 0x00);
    kprintf("com2: done\n");
    rt_exit(0);
}
