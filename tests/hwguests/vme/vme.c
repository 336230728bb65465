/* vme: the virtual-8086 mode extensions (CR4.VME) and protected-mode virtual interrupts
 * (CR4.PVI), SDM Vol. 3 §20.3-20.4.  Real-mode code at 1234:0000 runs in virtual-8086
 * mode under a task state segment of our own whose interrupt redirection bitmap (the 32
 * bytes below the I/O map base) sends INT 0x40 back to the 8086 program's vector table
 * and every other vector to protected mode.
 *
 *   p  VME, IOPL 0: CLI, STI, PUSHF, POPF and IRET act on VIF (PUSHF shows IOPL 3 and
 *      IF = VIF); PUSHFD, a popped TF, and INT n whose bit is set raise #GP(0); INT 0x40
 *      goes through the IVT by method 6 (FLAGS pushed with IOPL 3 and IF = VIF, then VIF
 *      and TF clear), its 16-bit IRET loads VIF from the popped IF.
 *   q  VME, IOPL 0, VIP set: STI and a POPF that sets IF raise #GP(0); a POPF that
 *      leaves IF clear, and CLI, do not.
 *   r  VME, IOPL 3: INT 0x40 by method 5 (FLAGS as they are, IF and TF clear), INT 0x41
 *      through the IDT by method 4; CLI and STI act on IF, VIF stays.
 *   s  no VME, IOPL 0: INT 0x40 and CLI raise #GP(0) (methods 2; §20.2.7).
 *   t  PVI at CPL 3, IOPL 0: CLI and STI act on VIF (PUSHFD shows it, IF stays set);
 *      with VIP set STI raises #GP(0); without PVI, CLI raises #GP(0).
 *
 * QEMU's TCG does not implement VME or PVI (it drops CPUID.01H:EDX.VME with a warning):
 * on it the guest reports the feature absent and stops there.  The expected lines are
 * the SDM's, each with its rule, in tests/test_vme.py. */
#include "rt.h"

#define V86_CS      0x1234u
#define V86_CODE    (V86_CS << 4)
#define V86_DS      0x3000u
#define V86_DATA    ((volatile u8 *)(V86_DS << 4))
#define V86_SS      0x2000u
#define V86_SP      0x0800u
#define VM          0x20000u
#define VIF         0x80000u
#define VIP         0x100000u
#define IOPL3       0x3000u
#define CR4_VME     0x1u
#define CR4_PVI     0x2u

#define SEL_VTSS    0x58u               /* our TSS, with the redirection bitmap */
#define VTSS_ADDR   0x00210000u
#define VTSS_IOMAP  0x88u               /* 104 bytes, then the 32-byte redirection bitmap */

extern char v86_start[], v86_end[], v86_p[], v86_q[], v86_r[], v86_s[], v86_h40[];
extern void pvi_user(void), pvi_vip(void), pvi_off(void);
volatile u32 pvi_data[4];

#define OFF(label) ((u32)(label) - (u32)v86_start)
#define D16(off) (*(volatile u16 *)(V86_DATA + (off)))

__asm__(
    ".text\n"
    ".code16\n"
    ".macro ARM16 resume\n\t"
    "movw $(\\resume - v86_start), 0xfe\n"
    ".endm\n"
    "v86_start:\n"
    /* -- p: VME, IOPL 0, entered with IF and VIF set -- */
    "v86_p:\n\t"
    "cli\n\t"
    "pushfw\n\t"
    "popw 0x00\n\t"
    "sti\n\t"
    "pushfw\n\t"
    "popw 0x02\n\t"
    "pushw $0x0cd5\n\t"
    "popfw\n\t"
    "pushfw\n\t"
    "popw 0x04\n\t"
    "pushw $0x0200\n\t"
    "popfw\n\t"
    "pushfw\n\t"
    "popw 0x06\n\t"
    "ARM16 1f\n\t"
    "pushfl\n"
    "1:\n\t"
    "ARM16 1f\n\t"
    "pushw $0x0300\n\t"
    "popfw\n"
    "1:\n\t"
    "popw %ax\n\t"
    "int $0x40\n\t"
    "movw %bx, 0x08\n\t"
    "pushfw\n\t"
    "popw 0x0a\n\t"
    "ARM16 1f\n\t"
    "int $0x41\n"
    "1:\n\t"
    "ARM16 1f\n\t"
    "pushw $0x0100\n\t"
    "pushw %cs\n\t"
    "pushw $(2f - v86_start)\n\t"
    "iretw\n"
    "1:\n\t"
    "addw $6, %sp\n"
    "2:\n\t"
    "movw %sp, 0x10\n\t"
    "int $0xf0\n"
    /* -- q: VME, IOPL 0, entered with VIP set and VIF clear -- */
    "v86_q:\n\t"
    "ARM16 1f\n\t"
    "sti\n"
    "1:\n\t"
    "ARM16 1f\n\t"
    "pushw $0x0200\n\t"
    "popfw\n"
    "1:\n\t"
    "popw %ax\n\t"
    "pushw $0x0001\n\t"
    "popfw\n\t"
    "cli\n\t"
    "pushfw\n\t"
    "popw 0x12\n\t"
    "int $0xf0\n"
    /* -- r: VME, IOPL 3 -- */
    "v86_r:\n\t"
    "int $0x40\n\t"
    "movw %bx, 0x08\n\t"
    "int $0x41\n\t"
    "cli\n\t"
    "pushfl\n\t"
    "popl 0x14\n\t"
    "sti\n\t"
    "pushfl\n\t"
    "popl 0x18\n\t"
    "int $0xf0\n"
    /* -- s: no VME, IOPL 0 -- */
    "v86_s:\n\t"
    "ARM16 1f\n\t"
    "int $0x40\n"
    "1:\n\t"
    "ARM16 1f\n\t"
    "cli\n"
    "1:\n\t"
    "int $0xf0\n"
    /* the 8086 program's handler of INT 0x40: the FLAGS image it was given, its own */
    "v86_h40:\n\t"
    "movw %sp, %bp\n\t"
    "movw 4(%bp), %ax\n\t"
    "movw %ax, 0x0c\n\t"
    "pushfw\n\t"
    "popw 0x0e\n\t"
    "movw $0x4444, %bx\n\t"
    "iretw\n"
    "v86_end:\n"
    ".code32\n"
    /* -- t: ring 3 under PVI (and without it) -- */
    ".globl pvi_user, pvi_vip, pvi_off\n"
    "pvi_user:\n\t"
    "cli\n\t"
    "pushfl\n\t"
    "popl pvi_data\n\t"
    "sti\n\t"
    "pushfl\n\t"
    "popl pvi_data+4\n\t"
    "int $0xf0\n"
    "pvi_vip:\n\t"
    "sti\n\t"
    "cli\n\t"
    "pushfl\n\t"
    "popl pvi_data+8\n\t"
    "int $0xf0\n"
    "pvi_off:\n\t"
    "cli\n\t"
    "int $0xf0\n");

RT_DEFINE_VM86_ENTER;

static struct vframe last;

static void run(const char *entry, u32 eflags)
{
    u32 frame[9] = { OFF(entry), V86_CS, eflags, V86_SP, V86_SS, V86_DS, V86_DS, 0, 0 };
    v86_enter(frame);
}

static void unexpected(struct frame *f)
{
    kprintf("UNEXPECTED exception %u err=0x%x eip=0x%x cs=0x%x eflags=0x%x\n",
            f->vector, f->err, f->eip, f->cs & 0xffff, f->eflags);
    rt_exit(2);
}

static void leave(struct frame *f)
{
    last = *(struct vframe *)f;
    rt_ring_return();
}

/* #GP(0): from virtual-8086 mode resume where the code said (ds:0xfe); from ring 3 skip
 * the one-byte CLI or STI.  EFLAGS as the frame holds it (RF masked) shows VIF and VIP. */
static void on_gp(struct frame *f)
{
    u32 fl = f->eflags & ~EFLAGS_RF;
    if (f->eflags & VM) {
        u8 *ip = (u8 *)((f->cs << 4) + f->eip);
        if (ip[0] == 0xcd && ip[1] == 0xf0)
            leave(f);
        kprintf("gp: ip %04x err %x eflags %08x op %02x\n", f->eip, f->err, fl, ip[0]);
        f->eip = D16(0xfe);
        return;
    }
    if ((f->cs & 3) != 3)
        unexpected(f);
    kprintf("gp: ring 3 err %x eflags %08x op %02x\n", f->err, fl, *(u8 *)f->eip);
    f->eip += 1;
}

static u32 int41_eflags;

static void on_int41(struct frame *f)
{
    int41_eflags = f->eflags & ~EFLAGS_RF;
}

int main(void)
{
    u32 a, b, c, d;
    __asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(1), "c"(0));
    kprintf("cpuid: vme %u\n", (d >> 1) & 1);
    if (!(d & 2)) {
        kprintf("done\n");
        rt_exit(0);
    }
    memcpy((void *)V86_CODE, v86_start, (u32)(v86_end - v86_start));
    /* our TSS: the runtime's ring-0 stack; every redirection bit set but INT 0x40's */
    volatile struct tss *t = (volatile struct tss *)VTSS_ADDR;
    memset((void *)VTSS_ADDR, 0, VTSS_IOMAP);
    memset((void *)(VTSS_ADDR + VTSS_IOMAP - 32), 0xff, 32);
    *(volatile u8 *)(VTSS_ADDR + VTSS_IOMAP - 32 + 0x40 / 8) &= ~1u;
    t->ss0 = SEL_DATA0;
    t->esp0 = STACK0_TOP;
    t->iomap = VTSS_IOMAP;                      /* no I/O bitmap within the limit */
    gdt_set(SEL_VTSS >> 3, VTSS_ADDR, VTSS_IOMAP, 0x89, 0);
    __asm__ volatile("ltr %w0" :: "r"(SEL_VTSS));
    *(volatile u16 *)(0x40 * 4) = (u16)OFF(v86_h40);
    *(volatile u16 *)(0x40 * 4 + 2) = V86_CS;
    idt_set_default(0x40, 0xee);                /* (never used: INT 0x40 is redirected) */
    idt_set_default(0x41, 0xee);                /* trap gate, DPL 3 */
    idt_set_default(0xf0, 0xee);
    rt_isr[0xf0] = leave;
    rt_isr[13] = on_gp;
    rt_isr[0x41] = on_int41;
    rt_isr[0x40] = unexpected;

    write_cr4(read_cr4() | CR4_VME);
    kprintf("cr4 %x\n", read_cr4());

    /* p */
    run(v86_p, VM | VIF | EFLAGS_IF | 2);
    kprintf("p: pushf after cli %04x, after sti %04x, after popf of 0cd5 %04x, of 0200 %04x\n",
            D16(0x00), D16(0x02), D16(0x04), D16(0x06));
    kprintf("p: int 40 image %04x, in handler %04x, bx %04x, after its iret %04x; sp %04x\n",
            D16(0x0c), D16(0x0e), D16(0x08), D16(0x0a), D16(0x10));
    kprintf("p: leaving eflags %08x\n", last.f.eflags & ~EFLAGS_RF);

    /* q */
    run(v86_q, VM | VIP | EFLAGS_IF | 2);
    kprintf("q: pushf %04x; leaving eflags %08x\n", D16(0x12), last.f.eflags & ~EFLAGS_RF);

    /* r */
    D16(0x0c) = D16(0x0e) = D16(0x08) = 0;
    run(v86_r, VM | IOPL3 | VIF | EFLAGS_IF | 2);
    kprintf("r: int 40 image %04x, in handler %04x, bx %04x; int 41 frame eflags %08x\n",
            D16(0x0c), D16(0x0e), D16(0x08), int41_eflags);
    kprintf("r: pushfd after cli %08x, after sti %08x; leaving eflags %08x\n",
            *(volatile u32 *)(V86_DATA + 0x14), *(volatile u32 *)(V86_DATA + 0x18),
            last.f.eflags & ~EFLAGS_RF);

    /* s */
    write_cr4(read_cr4() & ~CR4_VME);
    run(v86_s, VM | VIF | EFLAGS_IF | 2);

    /* t */
    write_cr4(read_cr4() | CR4_PVI);
    rt_run_ring(pvi_user, SEL_CODE3, SEL_DATA3, USER_STACK_TOP, EFLAGS_IF | 2);
    kprintf("t: pushfd after cli %08x, after sti %08x; leaving eflags %08x\n",
            pvi_data[0], pvi_data[1], last.f.eflags & ~EFLAGS_RF);
    rt_run_ring(pvi_vip, SEL_CODE3, SEL_DATA3, USER_STACK_TOP, VIF | VIP | EFLAGS_IF | 2);
    kprintf("t: vip: pushfd after cli %08x\n", pvi_data[2]);
    write_cr4(read_cr4() & ~CR4_PVI);
    rt_run_ring(pvi_off, SEL_CODE3, SEL_DATA3, USER_STACK_TOP, EFLAGS_IF | 2);
    kprintf("done\n");
    rt_exit(0);
}
