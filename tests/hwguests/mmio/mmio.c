/* mmio: the instruction forms a kernel uses on memory-mapped device registers, on the
 * PC's HPET, IO-APIC and local APIC and where nothing decodes -- written to print the
 * same lines natively, on QEMU and under the monitors (--mode trapemu and bt), where
 * each of these accesses traps and is emulated on a virtual device (vmm/mmio.py).
 * The HPET's timer 2 comparator (halted counter, timer disabled: no side effects) is
 * the scratch register; values printed are the devices' (their specs, QEMU) and the
 * flags the SDM gives each instruction.  Expected lines: tests/test_mmio.py. */
#include "rt.h"

#define HPET 0xfed00000u
#define CMP2 (HPET + 0x148)                  /* timer 2's comparator, low dword */
#define IOAPIC 0xfec00000u
#define APIC 0xfee00000u
#define FLAGS (0x8d5)                        /* OF SF ZF AF PF CF */

static volatile u32 *const cmp2 = (volatile u32 *)CMP2;
static u32 buf[4] __attribute__((aligned(16)));

#define OP(insn, init, operand) ({ u32 fl; *cmp2 = (init);                           \
        __asm__ volatile(insn " %1, %2\n\tpushfl\n\tpopl %0"                             \
                         : "=r"(fl) : "ir"(operand), "m"(*cmp2) : "memory", "cc");       \
        fl & FLAGS; })
#define OP1(insn, init) ({ u32 fl; *cmp2 = (init);                                    \
        __asm__ volatile(insn " %1\n\tpushfl\n\tpopl %0"                                 \
                         : "=r"(fl) : "m"(*cmp2) : "memory", "cc");                      \
        fl & FLAGS; })

static volatile u32 hits, redir_in_handler, lower_at;
static void level_irq(struct frame *f)
{
    (void)f;
    hits++;
    *(volatile u32 *)IOAPIC = 0x10 + 2 * 17;
    redir_in_handler = *(volatile u32 *)(IOAPIC + 0x10);
    if (hits >= lower_at)
        outb(0x2000 + 17, 0);                /* the pc-testdev's line 17 down */
    *(volatile u32 *)(APIC + 0xb0) = 0;      /* EOI: broadcast to the IO-APIC (level) */
}

int main(void)
{
    kprintf("mmio: start\n");
    /* 4 MiB identity page for 0xfec00000-0xfeffffff: the IO-APIC, HPET and local APIC */
    rt_paging_init();
    PD[0xfec00000u >> 22] = 0xfec00000u | PDE_PS | PTE_W | PTE_P;
    rt_paging_on(1);

    volatile u32 *h = (volatile u32 *)HPET;
    kprintf("mov: cap=%08x period=%u\n", h[0], h[1]);
    u32 zb, zw, sb, sw;
    *(volatile u32 *)IOAPIC = 0xfe;              /* IOREGSEL: an index, read back */
    __asm__ volatile("movzbl %4, %0; movzwl %5, %1; movsbl %4, %2; movswl %5, %3"
                     : "=&r"(zb), "=&r"(zw), "=&r"(sb), "=&r"(sw)
                     : "m"(*(volatile u8 *)IOAPIC), "m"(*(volatile u16 *)IOAPIC));
    kprintf("movzx: byte=%x word=%x movsx: byte=%x word=%x\n", zb, zw, sb, sw);

    /* read-modify-writes: one read, the result written back, the flags of the ALU op */
    u32 f;
    f = OP("addl", 0xfffffff0u, 0x20u);  kprintf("add: %08x flags=%03x\n", *cmp2, f);
    f = OP("orl", 0x12340000u, 0x5678u); kprintf("or: %08x flags=%03x\n", *cmp2, f);
    f = OP("andl", 0xff00ff00u, 0x0ff00ff0u); kprintf("and: %08x flags=%03x\n", *cmp2, f);
    f = OP("xorl", 0x80000001u, 0x80000001u); kprintf("xor: %08x flags=%03x\n", *cmp2, f);
    f = OP("subl", 5u, 7u);              kprintf("sub: %08x flags=%03x\n", *cmp2, f);
    f = OP1("incl", 0x7fffffffu);        kprintf("inc: %08x flags=%03x\n", *cmp2, f);
    f = OP1("decl", 0u);                 kprintf("dec: %08x flags=%03x\n", *cmp2, f);
    f = OP1("negl", 1u);                 kprintf("neg: %08x flags=%03x\n", *cmp2, f);
    f = OP1("notl", 0x0f0f0f0fu);        kprintf("not: %08x\n", *cmp2);
    f = OP("cmpl", 3u, 4u);              kprintf("cmp: %08x flags=%03x\n", *cmp2, f);
    f = OP("testl", 0xf0u, 0x0fu);       kprintf("test: %08x flags=%03x\n", *cmp2, f);

    /* a register computed from the device: add from it, xchg with it */
    u32 r = 0x10;
    *cmp2 = 0x22;
    __asm__ volatile("addl %1, %0" : "+r"(r) : "m"(*cmp2) : "cc");
    u32 x = 0xabcd;
    __asm__ volatile("xchgl %0, %1" : "+r"(x), "+m"(*cmp2));
    kprintf("add from it: %x xchg: old=%x now=%x\n", r, x, *cmp2);

    /* string moves: the device to RAM, RAM to the device, device to device */
    u32 esi = HPET, edi = (u32)buf, ecx = 2;
    __asm__ volatile("cld; rep movsl" : "+S"(esi), "+D"(edi), "+c"(ecx) :: "memory");
    kprintf("rep movsl from it: %08x %08x esi=+%x edi=+%x ecx=%u\n", buf[0], buf[1],
            esi - HPET, edi - (u32)buf, ecx);
    buf[2] = 0x600df00d;
    esi = (u32)&buf[2]; edi = CMP2;
    __asm__ volatile("movsl" : "+S"(esi), "+D"(edi) :: "memory");
    kprintf("movsl to it: %08x\n", *cmp2);
    esi = HPET; edi = CMP2;
    __asm__ volatile("movsl" : "+S"(esi), "+D"(edi) :: "memory");
    kprintf("movsl device to device: %08x\n", *cmp2);
    edi = CMP2;
    __asm__ volatile("stosl" : "+D"(edi) : "a"(0x5105u) : "memory");
    u32 a;
    esi = CMP2;
    __asm__ volatile("lodsl" : "=a"(a), "+S"(esi) :: "memory");
    kprintf("stosl: %08x lodsl: %08x\n", *cmp2, a);

    /* a fault part-way through REP MOVS: 0x400000 is not present (rt's PDE1).  The
       registers show the two elements moved, the fault is at the instruction */
    esi = HPET; edi = 0x3ffff8; ecx = 4;
    __asm__ volatile(ARM(1f, 2f) "cld\n2: rep movsl\n1:"
                     : "+S"(esi), "+D"(edi), "+c"(ecx) :: "memory");
    kprintf("rep movsl fault: vector=%u err=%x cr2=%x at mark=%u ecx=%u esi=+%x edi=%x copied=%08x\n",
            rt_exc.vector, rt_exc.err, rt_exc.cr2, rt_exc.eip == rt_mark, ecx, esi - HPET, edi,
            *(volatile u32 *)0x3ffffc);

    /* the IO-APIC through its index register, the local APIC's version register */
    *(volatile u32 *)IOAPIC = 1;
    kprintf("ioapic version: %08x apic version: %08x\n", *(volatile u32 *)(IOAPIC + 0x10),
            *(volatile u32 *)(APIC + 0x30));

    /* an input only the IO-APIC has (pc-testdev line 17), level-triggered: remote IRR
       while in service; a line still high at the EOI is delivered again (82093AA) */
    pic_remap_mask_all();
    rt_isr[0x79] = level_irq;
    *(volatile u32 *)IOAPIC = 0x10 + 2 * 17; *(volatile u32 *)(IOAPIC + 0x10) = 0x8079;
    lower_at = 2;
    outb(0x2000 + 17, 1);
    for (u32 i = 0; i < 100000 && hits < 2; i++) { sti(); __asm__ volatile("nop"); cli(); }
    kprintf("gsi 17 level: hits=%u redir17 in handler=%x\n", hits, redir_in_handler);
    *(volatile u32 *)IOAPIC = 0x10 + 2 * 17;
    kprintf("after eoi: redir17=%x\n", *(volatile u32 *)(IOAPIC + 0x10));
    *(volatile u32 *)(IOAPIC + 0x10) = 0x10000;

    /* where nothing decodes: the rest of the HPET's page, between the devices */
    kprintf("open bus: hpet+0x800=%08x fed01000=%08x\n", *(volatile u32 *)(HPET + 0x800),
            *(volatile u32 *)0xfed01000u);
    *(volatile u32 *)0xfed01000u = 0;
    kprintf("written: %08x\n", *(volatile u32 *)0xfed01000u);
    kprintf("mmio: done\n");
    return 0;
}
