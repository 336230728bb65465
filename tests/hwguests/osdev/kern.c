/* osdev: console, descriptor tables and the trap dispatcher shared by the programs. */
#include "kern.h"

u64 gdt[16] __attribute__((aligned(8)));
static u64 idt[256] __attribute__((aligned(8)));
struct tss32 tss __attribute__((aligned(128)));
handler_t handlers[256];
extern u32 vectors[256];
static u8 kstack[4096] __attribute__((aligned(16)));

static void putc(char c)
{
    if (c == '\n')
        putc('\r');
    while (!(inb(0x3fd) & 0x20))
        ;
    outb(0x3f8, c);
}

static void putnum(u32 v, int base, int width, char pad)
{
    char buf[12];
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

void kprintf(const char *fmt, ...)
{
    __builtin_va_list ap;
    __builtin_va_start(ap, fmt);
    for (; *fmt; fmt++) {
        if (*fmt != '%') {
            putc(*fmt);
            continue;
        }
        char pad = ' ';
        int width = 0;
        if (*++fmt == '0')
            pad = '0';
        while (*fmt >= '0' && *fmt <= '9')
            width = width * 10 + *fmt++ - '0';
        switch (*fmt) {
        case 'x': putnum(__builtin_va_arg(ap, u32), 16, width, pad); break;
        case 'u': putnum(__builtin_va_arg(ap, u32), 10, width, pad); break;
        case 's': for (const char *s = __builtin_va_arg(ap, const char *); *s; s++) putc(*s); break;
        case 'c': putc((char)__builtin_va_arg(ap, int)); break;
        default: putc(*fmt);
        }
    }
    __builtin_va_end(ap);
}

void halt_exit(u32 code)
{
    outb(0xf4, code);
    for (;;)
        __asm__ volatile("cli; hlt");
}

void seg_desc(int i, u32 base, u32 limit, u8 access, u8 flags)
{
    gdt[i] = (limit & 0xffff) | (u64)(base & 0xffffff) << 16 | (u64)access << 40 |
             (u64)((limit >> 16) & 0xf) << 48 | (u64)(flags & 0xf) << 52 | (u64)(base >> 24) << 56;
}

void gate_desc(u64 *slot, u16 sel, u32 off, u8 access, u8 params)
{
    *slot = (off & 0xffff) | (u64)sel << 16 | (u64)params << 32 | (u64)access << 40 |
            (u64)(off >> 16) << 48;
}

void set_idt(int vec, u8 access)
{
    gate_desc(&idt[vec], KCODE, vectors[vec], access, 0);
}

struct regs *trap(struct regs *r)
{
    if (handlers[r->vec])
        return handlers[r->vec](r);
    kprintf("unexpected trap %u err=%x at %x:%x cr2=%x\n", r->vec, r->err, r->cs, r->eip, cr2());
    halt_exit(2);
}

void tables_init(void)
{
    struct { u16 limit; u32 base; } __attribute__((packed)) gp = { sizeof gdt - 1, (u32)gdt },
                                                             ip = { sizeof idt - 1, (u32)idt };
    seg_desc(1, 0, 0xfffff, 0x9a, 0xc);
    seg_desc(2, 0, 0xfffff, 0x92, 0xc);
    seg_desc(3, 0, 0xfffff, 0xfa, 0xc);
    seg_desc(4, 0, 0xfffff, 0xf2, 0xc);
    seg_desc(5, (u32)&tss, sizeof tss - 1, 0x89, 0);
    for (int v = 0; v < 256; v++)
        set_idt(v, 0x8e);
    tss.ss0 = KDATA;
    tss.esp0 = (u32)kstack + sizeof kstack;
    tss.iomap = sizeof tss;
    __asm__ volatile("lgdt %0\n\tlidt %1\n\t"
                     "ljmp $0x08, $1f\n1:\tmovw $0x10, %%ax\n\tmovw %%ax, %%ds\n\tmovw %%ax, %%es\n\t"
                     "movw %%ax, %%ss\n\txorl %%eax, %%eax\n\tmovw %%ax, %%fs\n\tmovw %%ax, %%gs\n\t"
                     "movw $0x28, %%ax\n\tltr %%ax" :: "m"(gp), "m"(ip) : "eax", "memory");
}

void kmain(void)
{
    outb(0x3f9, 0);                 /* COM1: no interrupts, polled */
    tables_init();
    prog_main();
    halt_exit(0);
}
