/* bigpg: 4-MByte pages and global pages (SDM Vol. 3 §4.3, §4.10.2.4, §4.10.4.1):
 *
 *   - a 4-MByte page read and written: the PDE's accessed and dirty bits;
 *   - the PDE pointed elsewhere and INVLPG of an address inside the page (not its base):
 *     the whole page's translation goes; a 4-MByte PDE turned into one referencing a page
 *     table, and back;
 *   - CR4.PGE with global 4-MByte pages: INVLPG of a global page, and CR4.PGE cleared and
 *     set again, flush it; a non-global one goes with a CR3 load;
 *   - a 4-MByte PDE with reserved bit 21 set: #PF with RSVD in the error code;
 *   - CR4.PSE clear: the PDE's PS bit is ignored, its frame read as a page table;
 *   - a user access to a supervisor 4-MByte page, and a supervisor write to a read-only
 *     one with CR0.WP clear and set.
 *
 * Expected lines: tests/test_osdev3.py (checked on QEMU). */

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;

struct frame {
    u32 edi, esi, ebp, esp_, ebx, edx, ecx, eax, num, err, eip, cs, eflags;
};

static u64 gdt[3] = { 0, 0x00cf9a000000ffffull, 0x00cf92000000ffffull };
static u64 idt[32];
static u32 pd[1024] __attribute__((aligned(4096)));
static u32 pt0[1024] __attribute__((aligned(4096)));
static u32 ptl[1024] __attribute__((aligned(4096)));
u8 stack[8192] __attribute__((aligned(16)));
__asm__(".globl stack_top\n.set stack_top, stack + 8192");

#define L 0x00c00000u                 /* the 4-MByte window: PDE 3 */
#define PDE_L (((volatile u32 *)pd)[3])
#define PS 0x80
#define G 0x100

static inline void outb(u16 port, u8 v) { __asm__ volatile("outb %0, %1" :: "a"(v), "Nd"(port)); }
static inline u8 inb(u16 port) { u8 v; __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port)); return v; }

static void putch(char c)
{
    if (c == '\n')
        putch('\r');
    while ((inb(0x3fd) & 0x20) == 0)
        ;
    outb(0x3f8, c);
}

static void print(const char *fmt, ...)
{
    __builtin_va_list ap;
    __builtin_va_start(ap, fmt);
    while (*fmt) {
        char c = *fmt++;
        if (c != '%') {
            putch(c);
            continue;
        }
        c = *fmt++;
        u32 v = __builtin_va_arg(ap, u32), base = c == 'd' ? 10 : 16;
        char buf[12];
        int n = 0;
        do {
            buf[n++] = "0123456789abcdef"[v % base];
            v /= base;
        } while (v);
        while (n)
            putch(buf[--n]);
    }
    __builtin_va_end(ap);
}

static void finish(u8 code)
{
    outb(0xf4, code);
    for (;;)
        __asm__ volatile("hlt");
}

static volatile u32 last_num, last_err, last_cr2, resume, nfaults;

void trap(struct frame *f)
{
    u32 cr2;
    __asm__ volatile("mov %%cr2, %0" : "=r"(cr2));
    nfaults++;
    last_num = f->num;
    last_err = f->err;
    last_cr2 = cr2;
    if (resume) {
        f->eip = resume;
        resume = 0;
        return;
    }
    print("unexpected trap %x err %x at %x cr2 %x\n", f->num, f->err, f->eip, cr2);
    finish(1);
}

extern void isr0(void), isr6(void), isr8(void), isr13(void), isr14(void);

static void set_gate(int n, void (*fn)(void))
{
    u32 off = (u32)fn;
    idt[n] = (u64)(off & 0xffff) | (u64)0x08 << 16 | (u64)0x8e << 40 | (u64)(off >> 16) << 48;
}

struct dtr { u16 limit; u32 base; } __attribute__((packed));

static u32 cr(int n)
{
    u32 v;
    if (n == 0)
        __asm__ volatile("mov %%cr0, %0" : "=r"(v));
    else if (n == 3)
        __asm__ volatile("mov %%cr3, %0" : "=r"(v));
    else
        __asm__ volatile("mov %%cr4, %0" : "=r"(v));
    return v;
}

static void set_cr4(u32 v) { __asm__ volatile("mov %0, %%cr4" :: "r"(v) : "memory"); }
static void set_cr0(u32 v) { __asm__ volatile("mov %0, %%cr0" :: "r"(v) : "memory"); }
static void reload_cr3(void) { __asm__ volatile("mov %0, %%cr3" :: "r"(cr(3)) : "memory"); }
static void invlpg(u32 a) { __asm__ volatile("invlpg (%0)" :: "r"(a) : "memory"); }
static u32 rd(u32 a) { return *(volatile u32 *)a; }
static void wr(u32 a, u32 v) { *(volatile u32 *)a = v; }

static void tables(void)
{
    struct dtr g = { sizeof gdt - 1, (u32)gdt }, i = { sizeof idt - 1, (u32)idt };
    __asm__ volatile("lgdt %0" :: "m"(g));
    __asm__ volatile("ljmp $8, $1f; 1: mov %0, %%ds; mov %0, %%es; mov %0, %%ss" :: "r"(0x10));
    set_gate(0, isr0);
    set_gate(6, isr6);
    set_gate(8, isr8);
    set_gate(13, isr13);
    set_gate(14, isr14);
    __asm__ volatile("lidt %0" :: "m"(i));
    for (u32 a = 0; a < 0x400000; a += 0x1000)
        pt0[a >> 12] = a | 3;
    pd[0] = (u32)pt0 | 3;
    pd[1] = 0x400000 | PS | 3;                /* identity, 4-MByte pages */
    pd[2] = 0x800000 | PS | 3;
    set_cr4(cr(4) | 0x10);                    /* PSE */
    __asm__ volatile("mov %0, %%cr3" :: "r"(pd));
    set_cr0(cr(0) | 0x80010000u);             /* PG, WP */
}

/* the frames behind the window, each marked at +0x1234 and +0x3ff000 */
static void marks(void)
{
    for (u32 f = 0x400000; f < 0xc00000; f += 0x400000) {
        wr(f + 0x1234, 0xa0000000 | f >> 12);
        wr(f + 0x3ff000, 0xb0000000 | f >> 12);
    }
    for (u32 p = 0; p < 4; p++)
        wr(0x400000 + p * 0x1000 + 0x234, 0xc0000000 | p);
}

extern char rsvd_resume[], us_resume[], wp_resume[];

void main(void)
{
    outb(0x21, 0xff);
    outb(0xa1, 0xff);
    print("bigpg: start\n");
    tables();
    marks();
    PDE_L = 0x400000 | PS | 3;
    invlpg(L);
    u32 a = rd(L + 0x1234), b = rd(L + 0x3ff000);
    u32 ad1 = PDE_L & 0x60;
    wr(L + 0x10, 1);
    print("4M page: %x %x pde a/d after read %x after write %x\n", a, b, ad1, PDE_L & 0x60);

    /* elsewhere, INVLPG of an address inside the page */
    PDE_L = 0x800000 | PS | 3;
    invlpg(L + 0x2345);
    a = rd(L + 0x1234);
    b = rd(L + 0x3ff000);
    /* a page table instead, and back */
    for (int i = 0; i < 1024; i++)
        ptl[i] = (0x400000 + ((i * 0x1000) & 0x3fff)) | 3;
    PDE_L = (u32)ptl | 3;
    invlpg(L + 0x1000);
    invlpg(L + 0x3000);
    u32 c = rd(L + 0x1234), d = rd(L + 0x3234);
    PDE_L = 0x400000 | PS | 3;
    invlpg(L + 0x3000);
    print("invlpg inside: %x %x; page table: %x %x; back: %x\n", a, b, c, d, rd(L + 0x3234));

    /* global pages */
    set_cr4(cr(4) | 0x80);                    /* PGE */
    PDE_L = 0x400000 | PS | G | 3;
    invlpg(L);
    a = rd(L + 0x1234);
    PDE_L = 0x800000 | PS | G | 3;
    invlpg(L + 0x200000);                     /* INVLPG flushes a global page too */
    b = rd(L + 0x1234);
    PDE_L = 0x400000 | PS | G | 3;
    set_cr4(cr(4) & ~0x80);                   /* clearing PGE flushes everything */
    set_cr4(cr(4) | 0x80);
    c = rd(L + 0x1234);
    PDE_L = 0x800000 | PS | 3;                /* not global: invlpg, read, then CR3 */
    invlpg(L);
    d = rd(L + 0x1234);
    PDE_L = 0x400000 | PS | 3;
    reload_cr3();
    print("global: %x, invlpg %x, pge toggled %x; not global %x, cr3 load %x\n", a, b, c, d,
          rd(L + 0x1234));
    set_cr4(cr(4) & ~0x80);

    /* reserved bit 21 in a 4-MByte PDE */
    PDE_L = 0x400000 | 0x200000 | PS | 3;
    invlpg(L);
    resume = (u32)rsvd_resume;
    last_num = 0;
    __asm__ volatile("mov (%0), %%eax; rsvd_resume:" :: "r"(L + 0x1234) : "eax", "memory");
    print("pde bit 21: #%d err=%x cr2=%x", last_num, last_err, last_cr2);
    /* CR4.PSE clear: PS ignored, the PDE's frame a page table (ptl copied to 0x400000's
     * frame... the frame at 0x800000 as one) */
    u32 *asl = (u32 *)0x800000;
    u32 saved[4];
    for (int i = 0; i < 4; i++) {
        saved[i] = asl[i];
        asl[i] = (0x400000 + 0x1000 * (3 - i)) | 3;
    }
    PDE_L = 0x800000 | PS | 3;
    set_cr4(cr(4) & ~0x10);                   /* (a CR4.PSE change flushes the TLB) */
    a = rd(L + 0x234);
    b = rd(L + 0x1234);
    set_cr4(cr(4) | 0x10);
    c = rd(L + 0x1234);
    for (int i = 0; i < 4; i++)
        asl[i] = saved[i];
    print(" | pse off: %x %x, on: %x\n", a, b, c);

    /* protection: a user access to a supervisor page (from ring 0: a supervisor access
     * to a user page is fine), a write to a read-only page with WP clear and set */
    PDE_L = 0x400000 | PS | 1;                /* read-only, supervisor */
    invlpg(L);
    set_cr0(cr(0) & ~0x10000u);
    wr(L + 0x20, 0x5a5a);
    u32 w0 = rd(L + 0x20);
    set_cr0(cr(0) | 0x10000u);
    resume = (u32)wp_resume;
    last_num = 0;
    __asm__ volatile("movl $0x6b6b, (%0); wp_resume:" :: "r"(L + 0x20) : "memory");
    print("read-only 4M page: wp=0 wrote %x, wp=1 #%d err=%x cr2=%x mem=%x pde=%x\n", w0,
          last_num, last_err, last_cr2, rd(L + 0x20), PDE_L);
    print("bigpg: done\n");
    finish(0);
}
