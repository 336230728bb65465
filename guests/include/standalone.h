/* What the standalone guests (the bench images, the probe) share: port I/O,
 * COM1 as a polled console, and leaving through isa-debug-exit.  The teaching
 * kernel has its own, interrupt-driven console. */
#ifndef RV_STANDALONE_H
#define RV_STANDALONE_H

#include "rvlib.h"

#define COM1 0x3F8

static inline void outb(uint16_t port, uint8_t v)
{
    __asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port));
}

static inline uint8_t inb(uint16_t port)
{
    uint8_t v;
    __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
    return v;
}

/* 115200 baud, 8N1, no UART interrupts */
static inline void serial_init(void)
{
    outb(COM1 + 1, 0x00);
    outb(COM1 + 3, 0x80);
    outb(COM1 + 0, 0x01);
    outb(COM1 + 1, 0x00);
    outb(COM1 + 3, 0x03);
}

static void putc_serial(char c, void *ctx)
{
    (void)ctx;
    while (!(inb(COM1 + 5) & 0x20))
        ;
    outb(COM1, (uint8_t)c);
}

static void print(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vformat(putc_serial, 0, fmt, ap);
    va_end(ap);
}

/* isa-debug-exit: QEMU and ringvisor stop with status (status << 1) | 1 */
static void __attribute__((noreturn)) finish(uint8_t status)
{
    outb(0xF4, status);
    for (;;)
        __asm__ volatile("cli; hlt");
}

#endif
