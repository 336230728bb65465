/* Shared runtime: serial console, exit, descriptor tables, exception
 * dispatch, ring switching, paging setup, PIC. */
#include "rt.h"
#include <stdarg.h>

isr_fn rt_isr[256];
volatile u32 rt_resume;
volatile u32 rt_mark;
volatile struct exc_record rt_exc;
struct frame rt_ring_frame;

extern char rt_stubs[];
extern void rt_load_segments(void);
extern void rt_ring_return(void) __attribute__((noreturn));

/* ---- serial ---------------------------------------------------------- */

static void serial_init(void)
{
    outb(COM1 + 1, 0x00);      /* IER: no interrupts */
    outb(COM1 + 3, 0x80);      /* LCR: DLAB */
    outb(COM1 + 0, 0x01);      /* 115200 baud */
    outb(COM1 + 1, 0x00);
    outb(COM1 + 3, 0x03);      /* 8N1 */
    outb(COM1 + 2, 0x00);      /* FIFOs off */
    outb(COM1 + 4, 0x03);      /* DTR | RTS */
}

void putch(char c)
{
    if (c == '\n')
        putch('\r');
    while (!(inb(COM1 + 5) & 0x20))
        ;
    outb(COM1, (u8)c);
}

void puts(const char *s)
{
    while (*s)
        putch(*s++);
}

static void put_num(u32 v, unsigned base, int width, char pad, int neg)
{
    char buf[12];
    int n = 0;
    do {
        unsigned d = v % base;
        buf[n++] = (char)(d < 10 ? '0' + d : 'a' + d - 10);
        v /= base;
    } while (v);
    if (neg)
        buf[n++] = '-';
    while (n < width--)
        putch(pad);
    while (n)
        putch(buf[--n]);
}

void kprintf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    for (; *fmt; fmt++) {
        if (*fmt != '%') {
            putch(*fmt);
            continue;
        }
        fmt++;
        char pad = ' ';
        int width = 0;
        if (*fmt == '0') {
            pad = '0';
            fmt++;
        }
        while (*fmt >= '0' && *fmt <= '9')
            width = width * 10 + (*fmt++ - '0');
        switch (*fmt) {
        case 's': puts(va_arg(ap, const char *)); break;
        case 'c': putch((char)va_arg(ap, int)); break;
        case 'u': put_num(va_arg(ap, u32), 10, width, pad, 0); break;
        case 'x': put_num(va_arg(ap, u32), 16, width, pad, 0); break;
        case 'd': {
            s32 v = va_arg(ap, s32);
            put_num(v < 0 ? -(u32)v : (u32)v, 10, width, pad, v < 0);
            break;
        }
        case '%': putch('%'); break;
        default: putch('?'); break;
        }
    }
    va_end(ap);
}

u32 rt_mbi;

int rt_arg(const char *key, u32 *value)
{
    const u32 *mbi = (const u32 *)rt_mbi;
    if (!mbi || !(mbi[0] & 4))
        return 0;
    const char *c = (const char *)mbi[4];
    size_t n = 0;
    while (key[n])
        n++;
    for (const char *p = c; *p; p++) {
        if ((p == c || p[-1] == ' ') && !memcmp(p, key, n) && p[n] == '=') {
            u32 v = 0, base = 10;
            p += n + 1;
            if (p[0] == '0' && p[1] == 'x') {
                base = 16;
                p += 2;
            }
            for (; *p && *p != ' '; p++) {
                u32 d = *p >= 'a' ? (u32)(*p - 'a' + 10) : (u32)(*p - '0');
                v = v * base + d;
            }
            *value = v;
            return 1;
        }
    }
    return 0;
}

void rt_exit(u32 code)
{
    outb(0xf4, (u8)code);
    for (;;)
        __asm__ volatile("cli; hlt");
}

void fail(const char *what)
{
    kprintf("FAIL: %s\n", what);
    rt_exit(1);
}

/* ---- memory helpers (gcc may emit calls to these) -------------------- */

void *memcpy(void *d, const void *s, size_t n)
{
    u8 *dp = d;
    const u8 *sp = s;
    while (n--)
        *dp++ = *sp++;
    return d;
}

void *memmove(void *d, const void *s, size_t n)
{
    u8 *dp = d;
    const u8 *sp = s;
    if (dp < sp) {
        while (n--)
            *dp++ = *sp++;
    } else {
        while (n--)
            dp[n] = sp[n];
    }
    return d;
}

void *memset(void *d, int c, size_t n)
{
    u8 *dp = d;
    while (n--)
        *dp++ = (u8)c;
    return d;
}

int memcmp(const void *a, const void *b, size_t n)
{
    const u8 *x = a, *y = b;
    for (; n; n--, x++, y++)
        if (*x != *y)
            return *x < *y ? -1 : 1;
    return 0;
}

/* ---- descriptor tables ----------------------------------------------- */

u32 *gdt_entry(int idx)
{
    return (u32 *)(GDT_ADDR + 8 * idx);
}

void gdt_set(int idx, u32 base, u32 limit, u8 access, u8 flags)
{
    volatile u32 *e = gdt_entry(idx);
    e[0] = (limit & 0xffff) | (base << 16);
    e[1] = ((base >> 16) & 0xff) | ((u32)access << 8) | (limit & 0xf0000)
           | ((u32)(flags & 0xf) << 20) | (base & 0xff000000);
}

void gdt_set_gate(int idx, u16 sel, u32 offset, u8 access, u8 params)
{
    volatile u32 *e = gdt_entry(idx);
    e[0] = (offset & 0xffff) | ((u32)sel << 16);
    e[1] = (offset & 0xffff0000) | ((u32)access << 8) | (params & 0x1f);
}

void gdt_clear(int idx)
{
    volatile u32 *e = gdt_entry(idx);
    e[0] = 0;
    e[1] = 0;
}

void idt_set(int vec, u32 offset, u16 sel, u8 access)
{
    volatile u32 *e = (u32 *)(IDT_ADDR + 8 * vec);
    e[0] = (offset & 0xffff) | ((u32)sel << 16);
    e[1] = (offset & 0xffff0000) | ((u32)access << 8);
}

u32 rt_stub_addr(int vec)
{
    return (u32)rt_stubs + 16 * (u32)vec;
}

void idt_set_default(int vec, u8 access)
{
    idt_set(vec, rt_stub_addr(vec), SEL_CODE0, access);
}

void tss_set_io(u16 port, int allowed)
{
    volatile u8 *bm = (u8 *)(TSS_ADDR + 104);
    if (allowed)
        bm[port >> 3] &= (u8)~(1u << (port & 7));
    else
        bm[port >> 3] |= (u8)(1u << (port & 7));
}

struct __attribute__((packed)) dtr {
    u16 limit;
    u32 base;
};

static void tables_init(void)
{
    memset((void *)GDT_ADDR, 0, 0x800);
    gdt_set(1, 0, 0xfffff, ACC_CODE | ACC_DPL(0), FLG_4K32);
    gdt_set(2, 0, 0xfffff, ACC_DATA | ACC_DPL(0), FLG_4K32);
    gdt_set(3, 0, 0xfffff, ACC_CODE | ACC_DPL(3), FLG_4K32);
    gdt_set(4, 0, 0xfffff, ACC_DATA | ACC_DPL(3), FLG_4K32);
    gdt_set(5, TSS_ADDR, TSS_LIMIT, 0x89, 0);           /* 32-bit TSS, available */
    gdt_set(6, 0, 0xfffff, ACC_CODE | ACC_DPL(1), FLG_4K32);
    gdt_set(7, 0, 0xfffff, ACC_DATA | ACC_DPL(1), FLG_4K32);
    struct dtr g = { GDT_LIMIT, GDT_ADDR };
    __asm__ volatile("lgdt %0" :: "m"(g));
    rt_load_segments();

    memset((void *)TSS_ADDR, 0, 104);
    memset((void *)(TSS_ADDR + 104), 0xff, 8193);       /* all ports denied */
    TSS->ss0 = SEL_DATA0;
    TSS->esp0 = STACK0_TOP;
    TSS->ss1 = SEL_DATA1;
    TSS->esp1 = STACK1_TOP;
    TSS->iomap = 104;
    __asm__ volatile("ltr %w0" :: "r"(SEL_TSS));

    for (int v = 0; v < 256; v++)
        idt_set_default(v, 0x8e);                       /* interrupt gate, DPL 0 */
    idt_set_default(RT_RET_VEC, 0xee);                  /* DPL 3 */
    struct dtr i = { IDT_LIMIT, IDT_ADDR };
    __asm__ volatile("lidt %0" :: "m"(i));
}

/* ---- exceptions ------------------------------------------------------ */

static int has_error_code(u32 v)
{
    return v == 8 || (v >= 10 && v <= 14) || v == 17;
}

static void ring_ret_handler(struct frame *f)
{
    rt_ring_frame = *f;
    rt_ring_return();
}

void isr_dispatch(struct frame *f)
{
    u32 v = f->vector;
    if (rt_isr[v]) {
        rt_isr[v](f);
        return;
    }
    rt_exc.count++;
    rt_exc.vector = v;
    rt_exc.err = f->err;
    rt_exc.eip = f->eip;
    rt_exc.cs = f->cs & 0xffff;
    rt_exc.eflags = f->eflags;
    rt_exc.cr2 = v == 14 ? read_cr2() : 0;
    if ((f->cs & 3) != 0) {
        rt_exc.esp3 = f->esp3;
        rt_exc.ss3 = f->ss3 & 0xffff;
    } else {
        rt_exc.esp3 = rt_exc.ss3 = 0;
    }
    if (rt_resume) {
        f->eip = rt_resume;
        rt_resume = 0;
        return;
    }
    kprintf("UNEXPECTED exception %u err=0x%x eip=0x%x cs=0x%x cr2=0x%x\n",
            v, f->err, f->eip, f->cs & 0xffff, rt_exc.cr2);
    rt_exit(2);
}

void rt_expect_reset(void)
{
    rt_exc.count = 0;
    rt_exc.vector = 0xffffffff;
    rt_exc.err = 0;
    rt_exc.eip = 0;
    rt_exc.cr2 = 0;
}

void report_exc_noeip(const char *name)
{
    if (rt_exc.count == 0) {
        kprintf("%s: no exception\n", name);
        return;
    }
    kprintf("%s: #%u", name, rt_exc.vector);
    if (has_error_code(rt_exc.vector))
        kprintf(" err=0x%x", rt_exc.err);
    if (rt_exc.count != 1)
        kprintf(" count=%u", rt_exc.count);
    putch('\n');
}

void report_exc(const char *name)
{
    if (rt_exc.count == 0) {
        kprintf("%s: no exception\n", name);
        return;
    }
    kprintf("%s: #%u", name, rt_exc.vector);
    if (has_error_code(rt_exc.vector))
        kprintf(" err=0x%x", rt_exc.err);
    s32 d = (s32)(rt_exc.eip - rt_mark);
    kprintf(" eip=%s%d", d >= 0 ? "+" : "", d);
    if (rt_exc.vector == 14)
        kprintf(" cr2=0x%x", rt_exc.cr2);
    if (rt_exc.count != 1)
        kprintf(" count=%u", rt_exc.count);
    putch('\n');
}

/* ---- rings ----------------------------------------------------------- */

void rt_run_user(void (*fn)(void))
{
    rt_run_ring(fn, SEL_CODE3, SEL_DATA3, USER_STACK_TOP, 0x2);
}

/* ---- paging ---------------------------------------------------------- */

void rt_paging_init(void)
{
    volatile u32 *pd = PD, *pt0 = (u32 *)PT0_ADDR;
    for (int i = 0; i < 1024; i++) {
        pd[i] = 0;
        PT1[i] = 0;
        pt0[i] = ((u32)i << 12) | PTE_P | PTE_W | PTE_U;
    }
    pd[0] = PT0_ADDR | PTE_P | PTE_W | PTE_U;
    pd[1] = PT1_ADDR | PTE_P | PTE_W | PTE_U;
    for (int i = 2; i < 8; i++)
        pd[i] = ((u32)i << 22) | PDE_PS | PTE_P | PTE_W | PTE_U;
}

void rt_paging_on(int wp)
{
    write_cr4(read_cr4() | 0x10);           /* PSE */
    write_cr3(PD_ADDR);
    u32 cr0 = read_cr0() | 0x80000000u;
    cr0 = wp ? (cr0 | 0x10000) : (cr0 & ~0x10000u);
    write_cr0(cr0);
}

void rt_paging_off(void)
{
    write_cr0(read_cr0() & ~0x80010000u);
}

/* ---- PIC ------------------------------------------------------------- */

void pic_remap_mask_all(void)
{
    outb(0x20, 0x11);
    outb(0xa0, 0x11);
    outb(0x21, 0x20);          /* master vectors 0x20..0x27 */
    outb(0xa1, 0x28);          /* slave vectors 0x28..0x2f */
    outb(0x21, 0x04);
    outb(0xa1, 0x02);
    outb(0x21, 0x01);
    outb(0xa1, 0x01);
    outb(0x21, 0xff);
    outb(0xa1, 0xff);
}

void pic_eoi(int irq)
{
    if (irq >= 8)
        outb(0xa0, 0x20);
    outb(0x20, 0x20);
}

/* ---- init ------------------------------------------------------------ */

void rt_init(void)
{
    serial_init();
    write_cr0(0x00000011);     /* PE, ET; paging, WP, caching bits, TS/EM/MP clear */
    write_cr4(0);
    pic_remap_mask_all();
    tables_init();
    rt_isr[RT_RET_VEC] = ring_ret_handler;
    rt_expect_reset();
}
