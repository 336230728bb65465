/* ELF and a.out-kludge loading as QEMU's -kernel does it (hw/i386/multiboot.c,
 * include/hw/elf_ops.h), one image per link layout (tests/hwtests.py):
 *
 *   elf-ttext        ld's default script with -Ttext=0x100000: a segment holding
 *                    only the ELF headers at 0xff000, then text, rodata, data+bss
 *   elf-higher-half  linked at 0xC0100000, loaded at 1 MiB with AT(): e_entry is
 *                    virtual and the loader enters at its physical address
 *   elf-segments     text at 1 MiB, data at 3 MiB, a 256 KiB bss after it at
 *                    5 MiB (p_filesz < p_memsz): gaps between segments
 *   aout-kludge      the a.out kludge, loaded at 0x100800 (not page aligned)
 *
 * Each prints where it was entered, what the loader says about where it put
 * the image (EDI holds the byte-swapped load address on QEMU), where the boot
 * information went relative to the image, and whether its data arrived. */
typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;

#ifdef HIGHER_HALF
#define KERNEL_BASE 0xc0000000u
#else
#define KERNEL_BASE 0u
#endif
#define PHYS(p) ((u32)(p) - KERNEL_BASE)
#define VIRT(a) ((void *)((u32)(a) + KERNEL_BASE))

extern u32 boot_eax, boot_ebx, boot_edi, boot_eip;
extern char _start[], __image_low[], __image_high[];

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
static void hex(u32 v) { for (int i = 28; i >= 0; i -= 4) putc("0123456789abcdef"[(v >> i) & 15]); }
static void kv(const char *k, u32 v) { puts(k); putc('='); hex(v); putc(' '); }

const char greeting[] = "rodata arrived";
volatile u32 data_words[4] = { 0x11111111, 0x22222222, 0x33333333, 0x44444444 };
#ifdef BIG_BSS
static volatile u32 bss_words[65536];
#else
static volatile u32 bss_words[1024];
#endif

int main(void)
{
    u32 *mbi = VIRT(boot_ebx);
    u32 low = __builtin_bswap32(boot_edi);
    puts("elfload: start\n");
    kv("eax", boot_eax);
    kv("entered at", boot_eip);
    kv("= physical _start", boot_eip == PHYS(_start));
    putc('\n');
    kv("load address (EDI byte-swapped)", low);
    kv("= lowest segment", low == PHYS(__image_low));
    putc('\n');
    /* QEMU: the strings at the load address + the image size rounded up to a page */
    u32 after = low + ((PHYS(__image_high) - low + 0xfff) & ~0xfffu);
    kv("mods_addr - after image", mbi[6] - after);
    kv("cmdline - after image", mbi[4] - after);
    putc('\n');
    puts(greeting);
    putc('\n');
    u32 sum = 0, bss = 0;
    for (int i = 0; i < 4; i++)
        sum += data_words[i];
    for (u32 i = 0; i < sizeof(bss_words) / 4; i++)
        bss |= bss_words[i];
    kv("data sum", sum);
    kv("bss", bss);
    kv("bss words", sizeof(bss_words) / 4);
    putc('\n');
    puts("elfload: done\n");
    return 0;
}
