/* The firmware hand-off: everything a Multiboot kernel can observe about the
 * PC at its first instruction, as QEMU's SeaBIOS and multiboot option ROM
 * leave it.  No shared runtime: the guest touches nothing before it has read
 * the state (the UART registers are read before the first character is sent).
 *
 * Only values that do not depend on the host's clock are printed: the RTC's
 * time registers and flags (register C), the BIOS tick count and the 8254 OUT
 * pins are left out,
 * and IRQ 0's bit in the IRR (set or not depending on when the last tick was).
 * The FPU bits of the equipment words are printed as "agrees with CPUID": QEMU's
 * CPU has an x87, ringvisor's does not, and each firmware tells the truth. */
typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;

extern u32 entry_regs[21];
extern u8 entry_tables[24];
extern char vector_stubs[];
extern char _start[], __image_end[];
volatile u32 last_vector = 0xffffffff;

static inline void outb(u16 p, u8 v) { __asm__ volatile("outb %0,%1" :: "a"(v), "Nd"(p)); }
static inline u8 inb(u16 p) { u8 v; __asm__ volatile("inb %1,%0" : "=a"(v) : "Nd"(p)); return v; }

static void putc(char c)
{
    if (c == '\n')
        putc('\r');
    while (!(inb(0x3fd) & 0x20))
        ;
    outb(0x3f8, (u8)c);
}
static void puts(const char *s) { while (*s) putc(*s++); }
static void hex(u32 v, int digits)
{
    for (int i = digits - 1; i >= 0; i--)
        putc("0123456789abcdef"[(v >> (4 * i)) & 15]);
}
static void kv(const char *k, u32 v) { puts(k); putc('='); hex(v, 8); putc(' '); }
static void nl(void) { putc('\n'); }
static u8 cmos(u8 i) { outb(0x70, i); return inb(0x71); }
static u32 page_up(u32 a) { return (a + 0xfff) & ~0xfffu; }
static const char *basename(const char *s)
{
    const char *b = s;
    for (; *s; s++)
        if (*s == '/')
            b = s + 1;
    return b;
}
static u32 fnv(const u8 *p, u32 n)
{
    u32 h = 2166136261u;
    while (n--)
        h = (h ^ *p++) * 16777619u;
    return h;
}

static u32 cpuid_fpu(void)
{
    u32 a = 1, b, c, d;
    __asm__ volatile("cpuid" : "+a"(a), "=b"(b), "=c"(c), "=d"(d));
    return d & 1;
}

static void wait_interrupt(void)
{
    /* IF=1 only across the hlt: the interrupt ends it */
    last_vector = 0xffffffff;
    __asm__ volatile("sti; hlt; cli" ::: "memory");
}

static void eoi(u32 vector)
{
    if (vector >= 0x70 && vector < 0x78)
        outb(0xa0, 0x20);
    if ((vector >= 0x70 && vector < 0x78) || (vector >= 0x08 && vector < 0x10))
        outb(0x20, 0x20);
}

/* Take interrupts (timer ticks may come first: on a loaded host QEMU's
 * timers fire late and in bursts) until ``want``; the last vector. */
static u32 wait_vector(u32 want)
{
    u32 v = 0xffffffff;
    for (int i = 0; i < 64 && v != want; i++) {
        wait_interrupt();
        v = last_vector;
        eoi(v);
    }
    return v;
}

static u32 latch_count(void)
{
    outb(0x43, 0x00);                       /* latch channel 0 */
    u32 count = inb(0x40);
    return count | inb(0x40) << 8;
}

static u32 idt[512];

int main(void)
{
    u8 uart[8], dll, dlm;
    for (int i = 0; i < 8; i++)
        uart[i] = inb(0x3f8 + i);
    outb(0x3fb, uart[3] | 0x80);
    dll = inb(0x3f8);
    dlm = inb(0x3f9);
    outb(0x3fb, uart[3]);
    u8 pic_read0 = inb(0x20);           /* IRR or ISR, as the last OCW3 chose */

    puts("handoff: start\n");
    puts("uart:");
    for (int i = 0; i < 8; i++) {
        putc(' ');
        hex(uart[i], 2);
    }
    puts(" divisor="); hex(dlm << 8 | dll, 4); nl();

    /* registers at entry (SDM: none of this is architectural; QEMU's option ROM) */
    u32 *r = entry_regs;
    kv("eax", r[0]); kv("ebx", r[1]);
    puts(r[2] == (u32)_start ? "ecx=entry " : "ecx=other ");
    kv("edx", r[3]); kv("esi", r[4]); kv("edi", r[5]); kv("ebp", r[6]); kv("esp", r[7]); nl();
    kv("eflags", r[8]); kv("cs", r[9]); kv("ds", r[10]); kv("es", r[11]); kv("fs", r[12]);
    kv("gs", r[13]); kv("ss", r[14]); nl();
    kv("cr0", r[15]); kv("cr2", r[16]); kv("cr3", r[17]); kv("cr4", r[18]);
    kv("dr6", r[19]); kv("dr7", r[20]); nl();
    u8 *t = entry_tables;
    u32 gdt_base = t[2] | t[3] << 8 | t[4] << 16 | (u32)t[5] << 24, gdt_limit = t[0] | t[1] << 8;
    kv("gdtr.base", gdt_base); kv("gdtr.limit", gdt_limit);
    kv("idtr.base", t[10] | t[11] << 8 | t[12] << 16 | (u32)t[13] << 24);
    kv("idtr.limit", t[8] | t[9] << 8);
    kv("ldtr", t[16] | t[17] << 8); kv("tr", t[20] | t[21] << 8); nl();
    puts("gdt:");
    for (u32 i = 0; i * 8 < gdt_limit; i++) {
        u32 *d = (u32 *)(gdt_base + 8 * i);
        putc(' ');
        hex(d[1], 8);
        hex(d[0], 8);
    }
    nl();

    /* the Multiboot information (Multiboot spec 3.3, as QEMU fills it) */
    u32 *mbi = (u32 *)r[1];
    u32 kend = page_up((u32)__image_end);   /* the image starts on a page */
    kv("flags", mbi[0]); kv("mem_lower", mbi[1]); kv("mem_upper", mbi[2]);
    kv("boot_device", mbi[3]); nl();
    puts("cmdline at end+"); hex(mbi[4] - kend, 4); puts(": ");
    puts(basename((const char *)mbi[4])); nl();
    kv("mods_count", mbi[5]); puts("mods_addr=end+"); hex(mbi[6] - kend, 4); nl();
    u32 *mod = (u32 *)mbi[6];
    for (u32 i = 0; i < mbi[5]; i++, mod += 4) {
        puts("module: end+"); hex(mod[0] - kend, 5); puts(" length "); hex(mod[1] - mod[0], 5);
        puts(" fnv "); hex(fnv((const u8 *)mod[0], mod[1] - mod[0]), 8);
        puts(" string at end+"); hex(mod[2] - kend, 4); puts(" '");
        puts(basename((const char *)mod[2])); puts("' reserved="); hex(mod[3], 8); nl();
    }
    u32 other = 0;
    for (int i = 7; i < 11; i++)            /* syms */
        other |= mbi[i];
    for (int i = 13; i < 16; i++)           /* drives, config table */
        other |= mbi[i];
    for (int i = 17; i < 22; i++)           /* apm table, vbe */
        other |= mbi[i];
    kv("syms|drives|config|apm|vbe", other); nl();
    puts("boot_loader_name at end+"); hex(mbi[16] - kend, 4); puts(": ");
    puts((const char *)mbi[16]); nl();
    kv("mmap_addr", mbi[12]); kv("mmap_length", mbi[11]); nl();
    for (u32 p = mbi[12]; p < mbi[12] + mbi[11];) {
        u32 *e = (u32 *)p;
        puts("mmap: size "); hex(e[0], 2);
        puts(" base "); hex(e[2], 8); hex(e[1], 8);
        puts(" length "); hex(e[4], 8); hex(e[3], 8);
        puts(" type "); hex(e[5], 1); nl();
        p += e[0] + 4;
    }

    /* the BIOS data area and the EBDA */
    u32 fpu = cpuid_fpu();
    u8 bda[256];
    for (int i = 0; i < 256; i++)
        bda[i] = *(volatile u8 *)(0x400 + i);
    puts("bda equipment FPU bit agrees with CPUID: ");
    puts(((bda[0x10] >> 1) & 1) == fpu ? "yes" : "no");
    nl();
    bda[0x10] &= ~2;
    for (int i = 0x6c; i <= 0x70; i++)      /* ticks since midnight, midnight flag */
        bda[i] = 0;
    for (int row = 0; row < 256; row += 32) {
        puts("bda ");
        hex(0x400 + row, 3);
        putc(':');
        for (int i = row; i < row + 32; i++)
            hex(bda[i], 2);
        nl();
    }
    u32 ebda = *(volatile u16 *)0x40e << 4;
    u32 ebda_rest = 0;
    for (int i = 1; i < 1024; i++)
        ebda_rest |= *(volatile u8 *)(ebda + i);
    kv("ebda", ebda); kv("ebda[0]", *(volatile u8 *)ebda); kv("ebda[1..]", ebda_rest); nl();

    /* CMOS: everything but the clock (0x00-0x09) and UIP (0x0a bit 7) */
    u8 c14 = cmos(0x14);
    puts("cmos equipment FPU bit agrees with CPUID: ");
    puts(((c14 >> 1) & 1) == fpu ? "yes" : "no");
    nl();
    for (int row = 0; row < 128; row += 32) {
        puts("cmos ");
        hex(row, 2);
        putc(':');
        for (int i = row; i < row + 32; i++) {
            /* register C's flags (read: cleared) follow the clock on QEMU */
            u8 v = i < 10 || i == 0x0c ? 0 : cmos(i);
            if (i == 0x0a)
                v &= 0x7f;
            if (i == 0x14)
                v &= ~2;
            hex(v, 2);
        }
        nl();
    }

    /* 8259A: IRR read without OCW3 (the read register SeaBIOS left selected) */
    kv("pic port 0x20", pic_read0 & ~1); kv("imr", inb(0x21)); kv("imr2", inb(0xa1));
    outb(0x20, 0x0a); outb(0xa0, 0x0a);
    kv("irr", inb(0x20) & ~1); kv("irr2", inb(0xa0));
    outb(0x20, 0x0b); outb(0xa0, 0x0b);
    kv("isr", inb(0x20)); kv("isr2", inb(0xa0));
    outb(0x20, 0x0a); outb(0xa0, 0x0a);
    kv("elcr", inb(0x4d0)); kv("elcr2", inb(0x4d1)); nl();

    /* 8254: read-back status of all three channels, OUT (bit 7) masked */
    outb(0x43, 0xee);
    puts("pit status:");
    for (int i = 0; i < 3; i++) {
        putc(' ');
        hex(inb(0x40 + i) & 0x7f, 2);
    }
    /* port 0x61: gate 2 and speaker data (bits 4, 5 follow the clock) */
    kv(" port61 low", inb(0x61) & 0x0f);
    kv("port92", inb(0x92)); kv("i8042 status", inb(0x64)); nl();

    /* A20: 1 MiB apart are two different bytes */
    volatile u8 *lo = (volatile u8 *)0x500, *hi = (volatile u8 *)0x100500;
    u8 save = *lo;
    *lo = 0x5a;
    *hi = 0xa5;
    puts(*lo == 0x5a ? "a20: enabled\n" : "a20: disabled\n");
    *lo = save;

    /* interrupts: our own IDT; the PIC as the firmware left it */
    for (int i = 0; i < 256; i++) {
        u32 a = (u32)vector_stubs + 16 * i;
        idt[2 * i] = (a & 0xffff) | (0x08 << 16);
        idt[2 * i + 1] = (a & 0xffff0000) | 0x8e00;
    }
    struct { u16 limit; u32 base; } __attribute__((packed)) idtr = { sizeof(idt) - 1, (u32)idt };
    __asm__ volatile("lidt %0" :: "m"(idtr));

    /* IRQ 0 (the PIT, unmasked) arrives at the master's base 0x08 */
    wait_interrupt();
    outb(0x20, 0x0b);
    u8 isr = inb(0x20);
    outb(0x20, 0x0a);
    kv("first interrupt: vector", last_vector); kv("isr", isr); nl();
    eoi(last_vector);
    /* the counter is counting (its rate is the host's clock on QEMU: not printed) */
    u32 first = latch_count(), changed = 0;
    for (int i = 0; i < 100000 && !changed; i++)
        changed = latch_count() != first;
    puts(changed ? "pit channel 0 counting\n" : "pit channel 0 stopped\n");

    /* IRQ 4: the edge SeaBIOS's serial probe left in the IRR, once unmasked */
    outb(0x21, inb(0x21) & ~0x10);
    kv("unmasked IRQ 4: vector", wait_vector(0x0c)); nl();
    outb(0x21, inb(0x21) | 0x10);

    /* IRQ 8 (RTC periodic, unmasked on the slave) arrives at the slave's base 0x70 */
    outb(0x70, 0x0b);
    u8 b = inb(0x71);
    outb(0x70, 0x0b);
    outb(0x71, b | 0x40);
    kv("RTC periodic interrupt: vector", wait_vector(0x70)); nl();
    outb(0x70, 0x0b);
    outb(0x71, b);
    cmos(0x0c);

    puts("handoff: done\n");
    return 0;
}
