/* frt: console, formatter, descriptors, exit. */
#include "frt.h"

#define COM1 0x3f8

void console_init(void)
{
    outb(COM1 + 1, 0x00);      /* no UART interrupts */
    outb(COM1 + 3, 0x80);      /* DLAB */
    outb(COM1 + 0, 0x01);      /* 115200 */
    outb(COM1 + 1, 0x00);
    outb(COM1 + 3, 0x03);      /* 8N1 */
}

void putc(char c)
{
    if (c == '\n')
        putc('\r');
    while (!(inb(COM1 + 5) & 0x20))
        ;
    outb(COM1, c);
}

void puts(const char *s)
{
    while (*s)
        putc(*s++);
}

static void putnum(uint32_t v, unsigned base, int width, char pad)
{
    char buf[16];
    int n = 0;
    do {
        buf[n++] = "0123456789abcdef"[v % base];
        v /= base;
    } while (v);
    while (n < width--)
        putc(pad);
    while (n)
        putc(buf[--n]);
}

void printf(const char *fmt, ...)
{
    __builtin_va_list ap;
    __builtin_va_start(ap, fmt);
    for (; *fmt; fmt++) {
        if (*fmt != '%') {
            putc(*fmt);
            continue;
        }
        int width = 0;
        char pad = ' ';
        fmt++;
        if (*fmt == '0')
            pad = '0';
        while (*fmt >= '0' && *fmt <= '9')
            width = width * 10 + (*fmt++ - '0');
        switch (*fmt) {
        case 'd': {
            int v = __builtin_va_arg(ap, int);
            if (v < 0) {
                putc('-');
                v = -v;
            }
            putnum(v, 10, width, pad);
            break;
        }
        case 'u': putnum(__builtin_va_arg(ap, unsigned), 10, width, pad); break;
        case 'x': putnum(__builtin_va_arg(ap, unsigned), 16, width, pad); break;
        case 's': puts(__builtin_va_arg(ap, const char *)); break;
        case 'c': putc(__builtin_va_arg(ap, int)); break;
        default: putc(*fmt); break;
        }
    }
    __builtin_va_end(ap);
}

void frt_exit(uint8_t code)
{
    outb(0xf4, code);
    for (;;)
        asm volatile("cli; hlt");
}

uint64_t seg_desc(uint32_t base, uint32_t limit, uint8_t access, uint8_t flags)
{
    return (limit & 0xffff) | (uint64_t)(base & 0xffffff) << 16 | (uint64_t)access << 40 |
           (uint64_t)((limit >> 16) & 0xf) << 48 | (uint64_t)(flags & 0xf) << 52 |
           (uint64_t)(base >> 24) << 56;
}

uint64_t gate_desc(uint16_t sel, uint32_t off, uint8_t access)
{
    return (off & 0xffff) | (uint64_t)sel << 16 | (uint64_t)access << 40 |
           (uint64_t)(off >> 16) << 48;
}

void *memset(void *d, int c, size_t n)
{
    uint8_t *p = d;
    while (n--)
        *p++ = c;
    return d;
}

void *memcpy(void *d, const void *s, size_t n)
{
    uint8_t *p = d;
    const uint8_t *q = s;
    while (n--)
        *p++ = *q++;
    return d;
}
