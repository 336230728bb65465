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

/* 8-byte accesses: MMX MOVQ, x87 FILD/FISTP of a quadword, CMPXCHG8B */
static u32 q[2];
static u32 *ld64(u32 a)
{
    __asm__ volatile("movq (%0), %%mm0; movq %%mm0, (%1); emms" :: "r"(a), "r"(q) : "memory");
    return q;
}
static void st64(u32 a, u32 lo, u32 hi)
{
    q[0] = lo; q[1] = hi;
    __asm__ volatile("movq (%1), %%mm0; movq %%mm0, (%0); emms" :: "r"(a), "r"(q) : "memory");
}
static u32 *fild64(u32 a)
{
    __asm__ volatile("fildq (%0); fistpq (%1)" :: "r"(a), "r"(q) : "memory");
    return q;
}
static void fist64(u32 a, u32 lo, u32 hi)
{
    q[0] = lo; q[1] = hi;
    __asm__ volatile("fildq (%1); fistpq (%0)" :: "r"(a), "r"(q) : "memory");
}
/* CMPXCHG8B with EDX:EAX = cmp, ECX:EBX = new: ZF, and EDX:EAX after it in q */
static u32 cx8(u32 a, u32 cmplo, u32 cmphi, u32 newlo, u32 newhi)
{
    u8 z;
    __asm__ volatile("cmpxchg8b (%4); setz %2" : "+a"(cmplo), "+d"(cmphi), "=q"(z)
                     : "b"(newlo), "S"(a), "c"(newhi) : "memory", "cc");
    q[0] = cmplo; q[1] = cmphi;
    return z;
}
#define Q(p) (p)[1], (p)[0]
/* 16-byte SSE accesses (MOVDQU): QEMU's TCG makes them two quadword accesses */
static u32 o[4];
static u32 *ld128(u32 a)
{
    __asm__ volatile("movdqu (%0), %%xmm0; movdqu %%xmm0, (%1)" :: "r"(a), "r"(o) : "memory");
    return o;
}
static void st128(u32 a, u32 w0, u32 w1, u32 w2, u32 w3)
{
    o[0] = w0; o[1] = w1; o[2] = w2; o[3] = w3;
    __asm__ volatile("movdqu (%1), %%xmm0; movdqu %%xmm0, (%0)" :: "r"(a), "r"(o) : "memory");
}
#define O(p) (p)[3], (p)[2], (p)[1], (p)[0]

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

    /* 8-byte accesses: aligned and not, inside a device and straddling a page */
    kprintf("q hpet: +0=%08x%08x", Q(ld64(HPET)));
    kprintf(" +4=%08x%08x", Q(ld64(HPET + 4)));
    kprintf(" +1=%08x%08x", Q(ld64(HPET + 1)));
    kprintf(" +6=%08x%08x\n", Q(ld64(HPET + 6)));
    st64(HPET + 0x148, 0x55667788u, 0x11223344u);
    kprintf("q hpet stores: %08x %08x", ld32(HPET + 0x148), ld32(HPET + 0x14c));
    st64(HPET + 0x144, 0x99aabbccu, 0x01020304u);
    kprintf(" %08x %08x", ld32(HPET + 0x148), ld32(HPET + 0x14c));
    st64(HPET + 0x14a, 0xddeeff00u, 0x05060708u);
    kprintf(" %08x %08x\n", ld32(HPET + 0x148), ld32(HPET + 0x14c));
    kprintf("q apic: +30=%08x%08x", Q(ld64(APIC + 0x30)));
    kprintf(" +2c=%08x%08x", Q(ld64(APIC + 0x2c)));
    kprintf(" +32=%08x%08x\n", Q(ld64(APIC + 0x32)));
    st32(IOAPIC, 0x01);
    kprintf("q ioapic: +0=%08x%08x", Q(ld64(IOAPIC)));
    kprintf(" +10=%08x%08x", Q(ld64(IOAPIC + 0x10)));
    kprintf(" +c=%08x%08x", Q(ld64(IOAPIC + 0xc)));
    st64(IOAPIC, 0x02u, 0x11111111u);
    kprintf(" sel=%02x\n", ld32(IOAPIC));
    st32(IOAPIC, 0);
    kprintf("q ram|hpet: -4=%08x%08x", Q(ld64(W(1) - 4)));
    kprintf(" -2=%08x%08x", Q(ld64(W(1) - 2)));
    kprintf(" -7=%08x%08x\n", Q(ld64(W(1) - 7)));
    st64(W(7) + 8, 0x0a0b0c0du, 0x01020304u);
    st64(W(7) + 0x13, 0x1a1b1c1du, 0x11121314u);
    kprintf("q testmem: %08x %08x %08x %08x %08x", ld32(W(7) + 8), ld32(W(7) + 12),
            ld32(W(7) + 0x10), ld32(W(7) + 0x14), ld32(W(7) + 0x18));
    kprintf(" +9=%08x%08x", Q(ld64(W(7) + 9)));
    kprintf(" +13=%08x%08x\n", Q(ld64(W(7) + 0x13)));
    st64(W(7) - 5, 0x31323334u, 0x35363738u);
    kprintf("q ram|testmem: -4=%08x%08x", Q(ld64(W(7) - 4)));
    kprintf(" -3=%08x%08x", Q(ld64(W(7) - 3)));
    kprintf(" ram=%08x mem=%08x\n", ld32(W(7) - 8), ld32(W(7)));
    st32(W(9) - 4, 0x0d0c0b0au);
    kprintf("q testmem|nothing: -4=%08x%08x", Q(ld64(W(9) - 4)));
    kprintf(" -6=%08x%08x", Q(ld64(W(9) - 6)));
    st64(W(9) - 3, 0x41424344u, 0x45464748u);
    kprintf(" stored %08x\n", ld32(W(9) - 4));
    u32 x87 = 0;
    if (rt_arg("x87", &x87) && x87) {      /* (x87 on a device page: natively and on QEMU) */
        __asm__ volatile("fninit");
        kprintf("q fild: hpet=%08x%08x", Q(fild64(HPET)));
        kprintf(" +4=%08x%08x", Q(fild64(HPET + 4)));
        fist64(W(7) + 0x21, 0x76543210u, 0x00fedcbau);
        kprintf(" fistp=%08x %08x %08x", ld32(W(7) + 0x20), ld32(W(7) + 0x24), ld32(W(7) + 0x28));
        fist64(W(7) - 3, 0x89abcdefu, 0x00012345u);
        kprintf(" ram=%08x mem=%08x\n", ld32(W(7) - 4), ld32(W(7)));
    }
    st64(W(7) + 0x30, 0x01234567u, 0x89abcdefu);
    u32 z1 = cx8(W(7) + 0x31, 0xef012345u, 0x0089abcdu, 0xcafef00du, 0x00c0ffeeu);
    kprintf("q cmpxchg8b: z=%d %08x%08x mem=%08x %08x %08x", z1, Q(q),
            ld32(W(7) + 0x30), ld32(W(7) + 0x34), ld32(W(7) + 0x38));
    u32 z2 = cx8(W(7) + 0x31, 0, 0, 0x11111111u, 0x22222222u);
    kprintf(" z=%d %08x%08x", z2, Q(q));
    u32 z3 = cx8(HPET, 0, 0, 0x33333333u, 0x44444444u);
    kprintf(" hpet z=%d %08x%08x cap=%08x", z3, Q(q), ld32(HPET));
    u32 z4 = cx8(W(7) - 2, 0, 0, 0x55555555u, 0x66666666u);
    kprintf(" ram|mem z=%d %08x%08x", z4, Q(q));
    u32 z5 = cx8(APIC + 0x80, 0, 0, 0x20u, 0x30u);    /* the TPR: a quadword reads 0 */
    kprintf(" apic z=%d %08x%08x tpr=%02x\n", z5, Q(q), ld32(APIC + 0x80));
    st32(APIC + 0x80, 0);
    st32(W(10), 0);
    st32(IOAPIC, 0x3e);
    kprintf("q pcitest|ioapic: -4=%08x%08x", Q(ld64(W(11) - 4)));
    kprintf(" -1=%08x%08x\n", Q(ld64(W(11) - 1)));
    u32 cr4;
    __asm__ volatile("mov %%cr4, %0" : "=r"(cr4));
    __asm__ volatile("mov %0, %%cr4" :: "r"(cr4 | 0x200));          /* OSFXSR */
    kprintf("o hpet: +100=%08x%08x%08x%08x", O(ld128(HPET + 0x100)));
    kprintf(" +f8=%08x%08x%08x%08x", O(ld128(HPET + 0xf8)));
    kprintf(" +104=%08x%08x%08x%08x\n", O(ld128(HPET + 0x104)));
    /* (the quadword after timer 2's comparator is its FSB route, not modelled here) */
    st128(HPET + 0x148, 0x11111111u, 0x22222222u, 0x33333333u, 0x44444444u);
    kprintf("o hpet stores: %08x %08x", ld32(HPET + 0x148), ld32(HPET + 0x14c));
    st128(HPET + 0x144, 0x55555555u, 0x66666666u, 0x77777777u, 0x88888888u);
    kprintf(" %08x %08x", ld32(HPET + 0x148), ld32(HPET + 0x14c));
    st128(W(1) - 8, 0x99999999u, 0xaaaaaaaau, 0xbbbbbbbbu, 0xccccccccu);
    kprintf(" ram=%08x %08x", ld32(W(1) - 8), ld32(W(1) - 4));
    kprintf(" apic: +30=%08x%08x%08x%08x", O(ld128(APIC + 0x30)));
    st32(IOAPIC, 0x01);
    kprintf(" ioapic: +0=%08x%08x%08x%08x\n", O(ld128(IOAPIC)));
    st32(IOAPIC, 0);
    kprintf("o ram|hpet: -8=%08x%08x%08x%08x", O(ld128(W(1) - 8)));
    kprintf(" -5=%08x%08x%08x%08x\n", O(ld128(W(1) - 5)));
    if (x87) {
        /* x87, MMX and SSE arithmetic with an operand on a device (timer 2's comparator as
         * a 64-bit scratch register), and across RAM|HPET: each operand one access of its
         * width, as QEMU makes it (cpu_ldl/cpu_ldq/cpu_stq...) */
        static u32 r[4];
        u32 cmp = HPET + 0x148;
        st32(cmp, 0x40490fdbu);                  /* pi as a single */
        st32(cmp + 4, 0x40000000u);              /* 2.0 as a single; 0x40000000 as an int */
        u16 sw;
        __asm__ volatile("fninit; flds (%1); fadds 4(%1); fstps (%2); fildl 4(%1); fistpl 4(%2);"
                         "flds (%2); fcomps (%1); fnstsw %%ax; mov %%ax, %0; fstp %%st(0)"
                         : "=m"(sw) : "r"(cmp), "r"(r) : "eax", "memory");
        kprintf("x87 dev: fadds=%08x fildl=%08x fcomps sw=%04x", r[0], r[1], sw & 0x4700);
        __asm__ volatile("fldpi; fstpl (%0)" :: "r"(cmp) : "memory");
        kprintf(" fstpl=%08x%08x", ld32(cmp + 4), ld32(cmp));
        __asm__ volatile("fldl -4(%0); fstpl (%1)" :: "r"(W(1)), "r"(r) : "memory");
        kprintf(" ram|hpet fldl=%08x%08x\n", r[1], r[0]);
        st32(cmp, 0x3fc00000u);                  /* 1.5 */
        st32(cmp + 4, 7u);
        u32 t, zf;
        __asm__ volatile("mov $0x40000000, %%eax; movd %%eax, %%xmm1; addss (%2), %%xmm1;"
                         "movd %%xmm1, %0; cvttss2si (%2), %1" : "=r"(r[0]), "=r"(t)
                         : "r"(cmp) : "eax", "memory");
        __asm__ volatile("cvtsi2sd 4(%2), %%xmm2; movsd %%xmm2, (%3); comiss (%2), %%xmm1;"
                         "setz %%al; movzbl %%al, %0; mulss (%2), %%xmm1; movss %%xmm1, (%2);"
                         "movd %%xmm1, %1"
                         : "=r"(zf), "=r"(r[1]) : "r"(cmp), "r"(r + 2) : "eax", "memory", "cc");
        kprintf("sse dev: addss=%08x cvttss2si=%d cvtsi2sd=%08x%08x comiss zf=%d mulss=%08x"
                " movss=%08x", r[0], t, r[3], r[2], zf, r[1], ld32(cmp));
        st32(cmp, 0x00030002u);
        st32(cmp + 4, 0x00050004u);
        __asm__ volatile("mov $0x00010001, %%eax; movd %%eax, %%mm1; punpckldq %%mm1, %%mm1;"
                         "pmaddwd (%1), %%mm1; movq %%mm1, (%0); emms"
                         :: "r"(r), "r"(cmp) : "eax", "memory");
        kprintf(" pmaddwd=%08x %08x\n", r[0], r[1]);
    }
    kprintf("mmiosplit: done\n");
    return 0;
}
