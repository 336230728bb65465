/* Serial console (COM1, 16550A): output by polling the transmitter,
 * input interrupt-driven (IRQ4) into a ring buffer that read() drains.
 * When the ring is full the receive interrupt is switched off so the
 * UART (and the host behind it) holds the data back: no byte is lost.
 * With a virtio console on the PCI bus (vcons.c), the console is that
 * device instead, from the first line the kernel prints. */
#include "kernel.h"

#define COM1      0x3F8
#define UART_RBR  0   /* receive buffer (read) */
#define UART_THR  0   /* transmit holding (write) */
#define UART_IER  1
#define UART_FCR  2   /* write */
#define UART_IIR  2   /* read */
#define UART_LCR  3
#define UART_MCR  4
#define UART_LSR  5
#define LSR_DR    0x01
#define LSR_THRE  0x20

#define RX_SIZE 1024
static char rx_buf[RX_SIZE];
static volatile uint32_t rx_head, rx_tail;   /* head: next write, tail: next read */
static volatile int rx_irq_on;

void serial_init(void)
{
    outb(COM1 + UART_IER, 0x00);
    outb(COM1 + UART_LCR, 0x80);     /* DLAB */
    outb(COM1 + 0, 0x01);            /* divisor 1: 115200 baud */
    outb(COM1 + 1, 0x00);
    outb(COM1 + UART_LCR, 0x03);     /* 8N1 */
    /* Run as a plain 16450 (no FIFOs).  Switching the FIFOs on or off
     * clears them, so only touch FCR when they are on: a byte that arrived
     * before the kernel started stays in the receive buffer. */
    if (inb(COM1 + UART_IIR) & 0xC0)
        outb(COM1 + UART_FCR, 0x00);
    outb(COM1 + UART_MCR, 0x0B);     /* DTR, RTS, OUT2 (IRQ line enable) */
}

void serial_enable_rx_irq(void)
{
    if (vcons_present()) {
        vcons_start_rx();
        return;
    }
    rx_irq_on = 1;
    outb(COM1 + UART_IER, 0x01);     /* received data available */
}

/* IRQ4 (interrupts are off). */
void serial_irq(void)
{
    int got = 0;
    while (inb(COM1 + UART_LSR) & LSR_DR) {
        if (rx_head - rx_tail >= RX_SIZE) {
            rx_irq_on = 0;            /* full: leave the rest in the UART */
            outb(COM1 + UART_IER, 0x00);
            break;
        }
        rx_buf[rx_head % RX_SIZE] = (char)inb(COM1 + UART_RBR);
        rx_head++;
        got = 1;
    }
    if (got)
        wakeup(rx_buf);
}

/* Room in the input ring, and bytes into it (the virtio console's, interrupts off). */
uint32_t console_rx_room(void)
{
    return RX_SIZE - (rx_head - rx_tail);
}

void console_rx_push(const char *p, uint32_t n)
{
    for (uint32_t i = 0; i < n && rx_head - rx_tail < RX_SIZE; i++)
        rx_buf[rx_head++ % RX_SIZE] = p[i];
    if (n)
        wakeup(rx_buf);
}

int console_read(char *buf, uint32_t n)
{
    uint32_t flags = arch_irq_save();
    while (rx_head == rx_tail) {
        if (current->killed) {
            arch_irq_restore(flags);
            return -1;
        }
        sleep_on(rx_buf);
    }
    uint32_t i = 0;
    while (i < n && rx_tail != rx_head) {
        buf[i++] = rx_buf[rx_tail % RX_SIZE];
        rx_tail++;
    }
    if (vcons_present())
        vcons_refill();               /* buffers back to the device */
    else if (!rx_irq_on)
        serial_enable_rx_irq();       /* re-raises IRQ4 if data waits */
    arch_irq_restore(flags);
    return (int)i;
}

void console_putc(char c)
{
    if (vcons_present()) {
        vcons_putc(c);
        return;
    }
    while (!(inb(COM1 + UART_LSR) & LSR_THRE))
        ;
    outb(COM1 + UART_THR, (uint8_t)c);
}

void console_write(const char *s, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++)
        console_putc(s[i]);
    if (vcons_present())
        vcons_flush();
}

static void kputc(char c, void *ctx)
{
    (void)ctx;
    console_putc(c);
}

int kprintf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vformat(kputc, 0, fmt, ap);
    va_end(ap);
    if (vcons_present())
        vcons_flush();
    return n;
}

/* isa-debug-exit (port 0xf4): QEMU exits with status (v << 1) | 1. */
void machine_exit(uint32_t status)
{
    if (vcons_present())
        vcons_flush();
    arch_cli();
    outb(0xF4, (uint8_t)status);
    for (;;)
        arch_halt();
}

#define PANIC_EXIT 0x10

void kpanic_tf(const struct trapframe *tf, const char *fmt, ...)
{
    va_list ap;
    arch_cli();
    kprintf("\nPANIC: ");
    va_start(ap, fmt);
    vformat(kputc, 0, fmt, ap);
    va_end(ap);
    kprintf("\n");
    if (tf) {
        kprintf("  eax=%08x ebx=%08x ecx=%08x edx=%08x\n", tf->eax, tf->ebx, tf->ecx, tf->edx);
        kprintf("  esi=%08x edi=%08x ebp=%08x esp=%08x\n", tf->esi, tf->edi, tf->ebp,
                (tf->cs & 3) ? tf->esp : (uint32_t)&tf->esp);
        /* RF is masked: CPUs differ in whether they set it in the image. */
        kprintf("  eip=%08x cs=%04x eflags=%08x vector=%u error=%08x\n", tf->eip, tf->cs,
                tf->eflags & ~EFLAGS_RF, tf->vector, tf->err);
    }
    kprintf("  cr0=%08x cr2=%08x cr3=%08x\n", arch_read_cr0(), arch_read_cr2(), arch_read_cr3());
    if (current)
        kprintf("  current: pid %d (%s)\n", current->pid, current->name);
    machine_exit(PANIC_EXIT);
}
