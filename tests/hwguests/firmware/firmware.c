/* firmware: what QEMU's PC gives a -kernel image besides the CPU -- fw_cfg on ports
 * 0x510/0x511 (signature, interface ID, CPU count, RAM size, the file directory), the
 * ACPI tables SeaBIOS installs (the RSDP found by the standard scan of the BIOS area,
 * RSDT, FADT with the PM timer, MADT, HPET table; every checksum), the PM timer
 * counting, and the HPET (capabilities, main counter, a comparator).  Only fixed
 * values are printed: never addresses SeaBIOS picks nor counts against time. */
#include "rt.h"
static inline void outl(u16 port, u32 v) { __asm__ volatile("outl %0, %1" :: "a"(v), "Nd"(port)); }
static inline u32 inl(u16 port) { u32 v; __asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"(port)); return v; }

static void sel(u16 key) { outw(0x510, key); }
static u8 rd8(void) { return inb(0x511); }
static u32 rdn(int n) { u32 v = 0; for (int i = 0; i < n; i++) v |= (u32)rd8() << (8 * i); return v; }
static u32 be32(void) { u32 v = 0; for (int i = 0; i < 4; i++) v = v << 8 | rd8(); return v; }
static u16 be16(void) { u16 v = rd8(); return (u16)(v << 8 | rd8()); }

static int streq(const char *a, const char *b) { while (*a && *a == *b) a++, b++; return *a == *b; }
static u8 sum(const u8 *p, u32 n) { u8 s = 0; while (n--) s += *p++; return s; }
static void sig(const u8 *p, int n) { for (int i = 0; i < n; i++) putch(p[i] >= 32 && p[i] < 127 ? p[i] : '?'); }
static u32 r32(const u8 *p) { return p[0] | p[1] << 8 | p[2] << 16 | (u32)p[3] << 24; }
static u16 r16(const u8 *p) { return (u16)(p[0] | p[1] << 8); }

static volatile u32 hits[256];
static volatile u32 redir_in_handler;
static void irq_handler(struct frame *f)
{
    hits[f->vector]++;
    if (f->vector == 0x71) {                         /* the level line: lower it before the EOI */
        *(volatile u32 *)0xfec00000 = 0x10 + 2 * 10;
        redir_in_handler = *(volatile u32 *)0xfec00010;
        outb(0x2000 + 10, 0);
    }
    if (f->vector == 0x72 && hits[0x72] == 2)        /* line 14: kept high over the first EOI */
        outb(0x2000 + 14, 0);
    *(volatile u32 *)0xfee000b0 = 0;
}

int main(void)
{
    kprintf("firmware: start\n");
    sel(0x0000);
    kprintf("fw_cfg signature: "); for (int i = 0; i < 4; i++) putch(rd8()); kprintf("\n");
    sel(0x0001); kprintf("fw_cfg id: %x\n", rdn(4));
    sel(0x0005); kprintf("nb_cpus: %u\n", rdn(2));
    sel(0x000f); kprintf("max_cpus: %u\n", rdn(2));
    sel(0x0003); kprintf("ram_size: %x %x\n", rdn(4), rdn(4));
    sel(0x0004); kprintf("nographic: %u\n", rdn(2));
    sel(0x8002); kprintf("irq0 override: %u\n", rdn(4));
    sel(0x0005); rd8(); rd8(); kprintf("past the end: %x\n", rd8());
    sel(0x7777); kprintf("unknown key: %x\n", rd8());
    /* the file directory: the files a kernel of the PC finds (the others QEMU lists are
     * SeaBIOS's: option ROMs, SMBIOS, the table loader) */
    static const char *const wanted[] = { "etc/acpi/rsdp", "etc/e820" };
    for (int w = 0; w < 2; w++) {
        sel(0x0019);
        u32 n = be32(), found = 0, size = 0;
        u16 key = 0;
        for (u32 i = 0; i < n; i++) {
            u32 sz = be32(); u16 k = be16(); be16();
            char name[57];
            for (int j = 0; j < 56; j++) name[j] = rd8();
            name[56] = 0;
            if (streq(name, wanted[w]) && !found)
                found = 1, size = sz, key = k;
        }
        kprintf("file %s: found=%u size=%u", wanted[w], found, size);
        if (found && w == 1) {
            sel(key);
            u32 a0 = rdn(4), a1 = rdn(4), l0 = rdn(4), l1 = rdn(4), t = rdn(4);
            kprintf(" entry %x%08x+%x%08x type %u", a1, a0, l1, l0, t);
        }
        if (found && w == 0) {
            sel(key);
            u8 r[20];
            for (int j = 0; j < 20; j++) r[j] = rd8();
            kprintf(" checksum ok=%u", !sum(r, 20));
        }
        kprintf("\n");
    }

    /* ACPI: the RSDP on a 16-byte boundary in 0xE0000-0xFFFFF (ACPI 5.2.5.1) */
    const u8 *rsdp = 0;
    for (u32 a = 0xe0000; a < 0x100000; a += 16)
        if (!memcmp((void *)a, "RSD PTR ", 8) && !sum((void *)a, 20)) { rsdp = (const u8 *)a; break; }
    if (!rsdp) { kprintf("no RSDP\n"); return 1; }
    kprintf("rsdp: in F segment=%u oem=", (u32)rsdp >= 0xf0000); sig(rsdp + 9, 6);
    kprintf(" revision=%u\n", rsdp[15]);
    const u8 *rsdt = (const u8 *)r32(rsdp + 16);
    kprintf("rsdt: "); sig(rsdt, 4);
    kprintf(" rev=%u checksum ok=%u oem=", rsdt[8], !sum(rsdt, r32(rsdt + 4))); sig(rsdt + 10, 6);
    kprintf(" table="); sig(rsdt + 16, 8); kprintf(" oemrev=%x creator=", r32(rsdt + 24)); sig(rsdt + 28, 4);
    kprintf(" creatorrev=%x\n", r32(rsdt + 32));
    u32 nt = (r32(rsdt + 4) - 36) / 4;
    const u8 *fadt = 0, *madt = 0, *hpet = 0;
    for (u32 i = 0; i < nt; i++) {
        const u8 *t = (const u8 *)r32(rsdt + 36 + 4 * i);
        kprintf("  table "); sig(t, 4);
        kprintf(" len=%u rev=%u checksum ok=%u\n", r32(t + 4), t[8], !sum(t, r32(t + 4)));
        if (!memcmp(t, "FACP", 4)) fadt = t;
        if (!memcmp(t, "APIC", 4)) madt = t;
        if (!memcmp(t, "HPET", 4)) hpet = t;
    }
    if (fadt) {
        const u8 *dsdt = (const u8 *)r32(fadt + 40), *facs = (const u8 *)r32(fadt + 36);
        kprintf("fadt: sci=%u smi_cmd=%x enable=%x disable=%x pm1a_evt=%x pm1a_cnt=%x pm_tmr=%x gpe0=%x\n",
                r16(fadt + 46), r32(fadt + 48), fadt[52], fadt[53], r32(fadt + 56), r32(fadt + 64),
                r32(fadt + 76), r32(fadt + 80));
        kprintf("fadt: pm1_evt_len=%u pm1_cnt_len=%u pm_tmr_len=%u gpe0_len=%u flags=%x iapc_boot_arch=%x\n",
                fadt[88], fadt[89], fadt[91], fadt[92], r32(fadt + 112), r16(fadt + 109));
        kprintf("dsdt: "); sig(dsdt, 4); kprintf(" checksum ok=%u\n", !sum(dsdt, r32(dsdt + 4)));
        kprintf("facs: "); sig(facs, 4); kprintf(" len=%u\n", r32(facs + 4));
        /* the PM timer counts at 3.579545 MHz */
        u32 pm = r32(fadt + 76);
        u32 t0 = inl(pm);
        for (volatile int i = 0; i < 10000; i++) ;
        u32 t1 = inl(pm);
        kprintf("pm timer counting=%u\n", t1 != t0);
    }
    if (madt) {
        kprintf("madt: lapic=%x flags=%x\n", r32(madt + 36), r32(madt + 40));
        for (u32 off = 44; off < r32(madt + 4); off += madt[off + 1]) {
            const u8 *e = madt + off;
            if (e[0] == 0) kprintf("  cpu uid=%u apic=%u flags=%x\n", e[2], e[3], r32(e + 4));
            else if (e[0] == 1) kprintf("  ioapic id=%u addr=%x gsi_base=%u\n", e[2], r32(e + 4), r32(e + 8));
            else if (e[0] == 2) kprintf("  override bus=%u irq=%u gsi=%u flags=%x\n", e[2], e[3], r32(e + 4), r16(e + 8));
            else if (e[0] == 4) kprintf("  lapic nmi uid=%x flags=%x lint=%u\n", e[2], r16(e + 3), e[5]);
            else kprintf("  type %u len %u\n", e[0], e[1]);
        }
    }
    if (hpet) {
        kprintf("hpet table: id=%x addr space=%u addr=%x number=%u min_tick=%u flags=%x\n",
                r32(hpet + 36), hpet[40], r32(hpet + 44), hpet[52], r16(hpet + 53), hpet[55]);
        volatile u32 *h = (volatile u32 *)r32(hpet + 44);
        kprintf("hpet: cap=%x period=%u config=%x\n", h[0], h[1], h[4]);
        u32 c0 = h[0xf0 / 4];
        h[4] = 1;                                    /* ENABLE_CNF */
        for (volatile int i = 0; i < 10000; i++) ;
        u32 c1 = h[0xf0 / 4];
        kprintf("hpet counter: stopped=%u counting=%u\n", c0 == 0, c1 > c0);
        kprintf("hpet timer0: cap=%x.%x timer2: cap=%x\n", h[0x104 / 4], h[0x100 / 4], h[0x140 / 4]);
        h[4] = 0;
    }
    /* PCI configuration mechanism #1 (0xCF8/0xCFC): bus 0 as SeaBIOS left it */
    for (u32 dev = 0; dev < 32; dev++)
        for (u32 fn = 0; fn < 8; fn++) {
            u32 a = 0x80000000u | dev << 11 | fn << 8;
            outl(0xcf8, a);
            u32 id = inl(0xcfc);
            if (id == 0xffffffffu) { if (!fn) break; continue; }
            outl(0xcf8, a | 0x08); u32 cls = inl(0xcfc);
            outl(0xcf8, a | 0x0c); u32 hdr = inl(0xcfc);
            outl(0xcf8, a | 0x04); u32 cmd = inl(0xcfc);
            outl(0xcf8, a | 0x3c); u32 irq = inl(0xcfc);
            outl(0xcf8, a | 0x2c); u32 sub = inl(0xcfc);
            kprintf("pci %02x.%u id=%08x class=%08x hdr=%08x cmd=%08x irq=%08x sub=%08x\n", dev, fn, id, cls, hdr, cmd, irq, sub);
            for (u32 b = 0; b < 6; b++) {
                outl(0xcf8, a | (0x10 + 4 * b)); u32 bar = inl(0xcfc);
                if (bar) kprintf("   bar%u=%08x\n", b, bar);
            }
            if (!fn && !(hdr & 0x800000)) break;
        }
    outl(0xcf8, 0x80000000u | 0x40); kprintf("pci host 0x40=%08x\n", inl(0xcfc));
    outl(0xcf8, 0x80000000u | 0x58); kprintf("pci host 0x58 (pam)=%08x\n", inl(0xcfc));
    outl(0xcf8, 0x80000800u | 0x60); kprintf("piix3 0x60 (pirq)=%08x\n", inl(0xcfc));
    outl(0xcf8, 0x80000b00u | 0x40); kprintf("piix4pm 0x40 (pmbase)=%08x\n", inl(0xcfc));
    outl(0xcf8, 0x80000b00u | 0x80); kprintf("piix4pm 0x80 (pmregmisc)=%08x\n", inl(0xcfc));
    kprintf("cf8 readback=%08x\n", inl(0xcf8));
    /* pc-testdev: a data port at 0xe0 */
    outl(0xe0, 0x12345678); kprintf("testdev 0xe0=%08x byte=%02x\n", inl(0xe0), inb(0xe1));
    /* pci-testdev: each test of each BAR, 16 byte writes of its data at its offset */
    outl(0xcf8, 0x80001010); volatile u8 *mm = (volatile u8 *)(inl(0xcfc) & ~0xfu);
    outl(0xcf8, 0x80001014); u16 io = inl(0xcfc) & ~3u;
    for (u32 t = 0; t < 3; t++) {
        mm[0] = t;
        u32 off = mm[4] | mm[5] << 8, count0 = mm[12];
        for (int i = 0; i < 16; i++) mm[off] = mm[8];
        kprintf("pci-testdev mmio test %u: width=%u off=%u data=%02x count %u->%u name=", t, mm[1], off, mm[8], count0, mm[12]);
        for (int i = 16; mm[i]; i++) putch(mm[i]);
        outb(io, t);
        off = inb(io + 4);
        for (int i = 0; i < 16; i++) outb(io + off, inb(io + 8));
        kprintf(" portio: off=%u count=%u\n", off, inb(io + 12));
    }

    /* pc-testdev interrupt lines: line 10 -> IO-APIC pin 10 (level, as the PCI IRQs are) */
    for (int v = 0x20; v < 0x100; v++) rt_isr[v] = irq_handler;
    *(volatile u32 *)0xfec00000 = 0x10 + 2 * 10; *(volatile u32 *)0xfec00010 = 0x8071;
    outb(0x2000 + 10, 1);
    sti(); __asm__ volatile("nop"); cli();
    kprintf("testdev line 10 high: vector 0x71 hits=%u redir10 in handler=%x\n", hits[0x71], redir_in_handler);
    *(volatile u32 *)0xfec00000 = 0x10 + 2 * 10; kprintf("after eoi: redir10=%x\n", *(volatile u32 *)0xfec00010);
    *(volatile u32 *)0xfec00010 = 0x10000;
    /* line 14 (an ISA line the 8259A takes edge-triggered) into IO-APIC pin 14 programmed
       level: still high at the EOI, the remote IRR rule delivers it again (82093AA) */
    *(volatile u32 *)0xfec00000 = 0x10 + 2 * 14; *(volatile u32 *)0xfec00010 = 0x8072;
    outb(0x2000 + 14, 1);
    sti();
    for (int i = 0; i < 100000 && hits[0x72] < 2; i++) __asm__ volatile("nop");
    cli();
    *(volatile u32 *)0xfec00000 = 0x10 + 2 * 14;
    kprintf("testdev line 14 high over the eoi: vector 0x72 hits=%u redir14=%x\n", hits[0x72],
            *(volatile u32 *)0xfec00010);
    *(volatile u32 *)0xfec00010 = 0x10000;

    /* the HPET's timer 0 through IO-APIC pin 2: one-shot, then periodic */
    if (hpet) {
        volatile u32 *h = (volatile u32 *)r32(hpet + 44);
        /* pin 2 is also the PIT's (ISA IRQ 0's override): the PIT the firmware left
           running would tick there too, before the HPET on a slow host.  Mode 0 with a
           count of 1: one last edge, then OUT stays high (8254 data sheet) */
        outb(0x43, 0x30); outb(0x40, 1); outb(0x40, 0);
        /* wait for that edge (the read-back command's status: OUT in bit 7) before pin 2
           is unmasked, however late a loaded host's QEMU makes it */
        for (u32 i = 0; i < 100000000; i++) {
            outb(0x43, 0xe2);
            if (inb(0x40) & 0x80) break;
        }
        for (volatile int i = 0; i < 20000; i++) ;
        *(volatile u32 *)0xfec00000 = 0x14; *(volatile u32 *)0xfec00010 = 0x72;   /* pin 2, edge */
        outb(0x21, 0xff);
        sti(); __asm__ volatile("nop; nop"); cli();  /* that last edge, if it waited */
        hits[0x72] = 0;
        h[0x100 / 4] = (2 << 9) | 4;                 /* route 2, edge, enabled */
        h[0x108 / 4] = 100000; h[0x10c / 4] = 0;     /* 1 ms */
        h[4] = 1;
        /* a wake before the comparator is the PIT's last edge, which a loaded host's QEMU
         * can deliver on pin 2 even now (its timer runs in another thread): forgotten.
         * An HPET that fired early would leave this loop waiting for good. */
        while (!hits[0x72] || h[0xf0 / 4] < 100000) {
            if (h[0xf0 / 4] < 100000) hits[0x72] = 0;
            __asm__ volatile("sti; hlt; cli");
        }
        kprintf("hpet one-shot: fired=%u counter past comparator=%u\n", hits[0x72], h[0xf0 / 4] >= 100000);
        h[0x100 / 4] = (2 << 9) | 4 | 8 | 0x40;      /* periodic, VAL_SET */
        u32 now = h[0xf0 / 4];
        h[0x108 / 4] = now + 50000; h[0x10c / 4] = 0;
        h[0x108 / 4] = 50000;                        /* the period */
        while (hits[0x72] < 5) __asm__ volatile("sti; hlt; cli");
        kprintf("hpet periodic: 4 more, timer0 config=%x\n", h[0x100 / 4]);
        h[4] = 0;
        h[0x100 / 4] = 0;
    }
    kprintf("firmware: done\n");
    return 0;
}
