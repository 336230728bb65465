/* mmiosplit: accesses a kernel can make that are not one aligned access to one device --
 * unaligned 2- and 4-byte loads and stores inside a device's registers, and ones that
 * straddle a page boundary, half in RAM and half in a device's page (the HPET, the local
 * APIC, the IO-APIC, the pc-testdev's memory), half in one device and half in another
 * (the pci-testdev's BAR and the IO-APIC) or half in a device and half where nothing
 * decodes.  The SDM leaves these to the platform (Vol. 3 §11.3: uncacheable accesses
 * are made as the program orders them, with no rule for how a misaligned one is cut;
 * the local APIC's registers "must be accessed using 128-bit aligned 32-bit loads or
 * stores", §10.4.1); QEMU's answer, which this guest prints, is: an unaligned load is
 * two aligned loads of its width, from the address rounded down and the next one, put
 * together, each going to whatever decodes there; an unaligned store is a store of each
 * byte, lowest first.  Each device then answers those pieces as it answers any access
 * of their width (the HPET and the local APIC ignore anything narrower than 32 bits).
 * Expected lines: tests/test_mmio.py. */
#include "rt.h"

#define HPET 0xfed00000u
#define IOAPIC 0xfec00000u
#define APIC 0xfee00000u
#define TESTMEM 0xff000000u           /* pc-testdev's 64 KiB of memory */
#define PCITEST 0xfebff000u           /* pci-testdev's BAR 0, where SeaBIOS puts it */

/* linear window 0x400000-0x40bfff (PT1): pairs of pages, each access straddling one pair */
#define W(n) (0x400000u + 0x1000u * (n))
static const u32 window[] = {
    0x900000, HPET,                   /* 0,1: RAM then the HPET */
    IOAPIC, 0x901000,                 /* 2,3: the IO-APIC then RAM */
    0x902000, APIC,                   /* 4,5: RAM then the local APIC */
    0x903000, TESTMEM,                /* 6,7: RAM then the pc-testdev's memory */
    TESTMEM + 0xf000, TESTMEM + 0x10000,   /* 8,9: its last page, then nothing */
    PCITEST, IOAPIC,                  /* 10,11: the pci-testdev's BAR then the IO-APIC */
};

static u32 ld32(u32 a) { u32 v; __asm__ volatile("movl (%1), %0" : "=r"(v) : "r"(a) : "memory"); return v; }
static u32 ld16(u32 a) { u32 v; __asm__ volatile("movzwl (%1), %0" : "=r"(v) : "r"(a) : "memory"); return v; }
static void st32(u32 a, u32 v) { __asm__ volatile("movl %1, (%0)" :: "r"(a), "r"(v) : "memory"); }
static void st16(u32 a, u32 v) { __asm__ volatile("movw %w1, (%0)" :: "r"(a), "r"(v) : "memory"); }

int main(void)
{
    kprintf("mmiosplit: start\n");
    rt_paging_init();
    PD[0xfec00000u >> 22] = 0xfec00000u | PDE_PS | PTE_W | PTE_P;
    for (u32 i = 0; i < sizeof window / sizeof window[0]; i++)
        PT1[i] = window[i] | PTE_W | PTE_P;
    rt_paging_on(1);
    for (u32 i = 0; i < 4; i++)
        for (u32 b = 0; b < 0x1000; b += 4)
            *(volatile u32 *)(0x900000u + 0x1000u * i + b) = 0xa0b0c0d0u + i * 0x01010101u;

    /* inside the HPET's registers: capabilities 8086a201, period 00989680 at +4 */
    kprintf("hpet: +1=%08x +2=%08x +3=%08x +6=%08x w+1=%04x w+3=%04x w+4=%04x\n",
            ld32(HPET + 1), ld32(HPET + 2), ld32(HPET + 3), ld32(HPET + 6),
            ld16(HPET + 1), ld16(HPET + 3), ld16(HPET + 4));
    st32(HPET + 0x148, 0x11223344u);              /* timer 2's comparator (timer off) */
    st32(HPET + 0x14a, 0xaabbccddu);
    st16(HPET + 0x148, 0x5566u);
    st16(HPET + 0x14b, 0x7788u);
    kprintf("hpet stores: cmp2=%08x %08x\n", ld32(HPET + 0x148), ld32(HPET + 0x14c));

    /* inside the local APIC's: version 00050014 at 0x30, ID at 0x20, TPR at 0x80 */
    kprintf("apic: +32=%08x +2e=%08x +31=%08x w+30=%04x\n", ld32(APIC + 0x32),
            ld32(APIC + 0x2e), ld32(APIC + 0x31), ld16(APIC + 0x30));
    st32(APIC + 0x81, 0x20202020u);
    u32 tpr1 = ld32(APIC + 0x80);
    st32(APIC + 0x80, 0x30u);
    st16(APIC + 0x80, 0x40u);
    kprintf("apic stores: tpr=%02x %02x\n", tpr1, ld32(APIC + 0x80));
    st32(APIC + 0x80, 0);

    /* inside the IO-APIC's: IOREGSEL at 0, IOWIN at 0x10 */
    st32(IOAPIC, 0x01);
    kprintf("ioapic: +e=%08x +f=%08x w+10=%04x", ld32(IOAPIC + 0xe), ld32(IOAPIC + 0xf),
            ld16(IOAPIC + 0x10));
    st32(IOAPIC + 0xe, 0x00120000u);
    kprintf(" sel=%02x", ld32(IOAPIC));
    st16(IOAPIC, 0x0010u);
    kprintf(" sel=%02x\n", ld32(IOAPIC));
    st32(IOAPIC, 0);

    /* across a page boundary */
    kprintf("ram|hpet: %08x %08x %08x w=%04x\n", ld32(W(1) - 2), ld32(W(1) - 1), ld32(W(1) - 3),
            ld16(W(1) - 1));
    st32(W(1) - 2, 0x55667788u);
    kprintf("  stored: ram=%08x hpet=%08x\n", ld32(W(1) - 4), ld32(W(1)));
    st32(IOAPIC, 0x10);
    kprintf("ioapic|ram: %08x %08x w=%04x\n", ld32(W(3) - 2), ld32(W(3) - 3), ld16(W(3) - 1));
    st32(W(3) - 1, 0x01020304u);
    kprintf("  stored: ram=%08x sel=%02x\n", ld32(W(3)), ld32(IOAPIC));
    kprintf("ram|apic: %08x w=%04x", ld32(W(5) - 2), ld16(W(5) - 1));
    st32(W(5) - 2, 0x99887766u);
    kprintf(" stored: ram=%08x\n", ld32(W(5) - 4));
    st32(W(7), 0x04030201u);
    kprintf("ram|testmem: %08x %08x", ld32(W(7) - 2), ld32(W(7) - 3));
    st32(W(7) - 1, 0xddccbbaau);
    kprintf(" stored: ram=%08x mem=%08x\n", ld32(W(7) - 4), ld32(W(7)));
    st32(W(9) - 4, 0x0d0c0b0au);
    st32(W(9) - 2, 0x44332211u);
    kprintf("testmem|nothing: stored %08x, loaded %08x\n", ld32(W(9) - 4), ld32(W(9) - 3));
    st32(W(10), 0);                               /* the pci-testdev's test 0 */
    st32(IOAPIC, 0x3e);
    kprintf("pcitest|ioapic: %08x %08x", ld32(W(11) - 2), ld32(W(11) - 1));
    st32(W(11) - 3, 0x00050000u);
    kprintf(" stored: sel=%02x hdr=%08x\n", ld32(IOAPIC), ld32(W(10)));
    kprintf("mmiosplit: done\n");
    return 0;
}
