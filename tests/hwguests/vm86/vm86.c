/* vm86: virtual-8086 mode (SDM Vol. 3 ch. 20) with a monitor of our own.  A block of
 * 16-bit real-mode code is copied to 1234:0000 (linear 0x12340) and entered by a
 * 32-bit IRET with EFLAGS.VM set; it leaves through interrupts and exceptions, which
 * the CPU delivers through 32-bit IDT gates to ring 0 with GS, FS, DS and ES on the
 * ring-0 stack (Figure 20-2).
 *
 *   a  IOPL 3: the state IRET loaded (PUSHFD shows IOPL 3, VM and RF clear), segment
 *      arithmetic (selector * 16) through ES and FS, a far CALL/RET, LES, POPF and a
 *      real-mode IRET that cannot change IOPL, output through COM1 from the real-mode
 *      code (ports allowed by the TSS I/O bitmap), and INT 0x30 through a DPL-3 gate:
 *      the frame, the data segments null in the handler, and IRET back to VM86.
 *   b  IOPL 0: CLI, STI, PUSHF, POPF, INT n and IRET raise #GP(0), and the #GP
 *      handler emulates them (a virtual IF; INT 0x21 reflected to a real-mode
 *      handler through the interrupt vector table at linear 0); INT3 is not
 *      IOPL-sensitive and goes through the IDT.
 *   c  IOPL 3 faults: #DE (its whole frame), INT n through a DPL-0 gate, INT n to a
 *      handler that is not ring 0, a port the bitmap denies (IOPL does not grant
 *      I/O in VM86), SLDT and ARPL (#UD), HLT and MOV from CR0 (#GP(0)).
 *   d  paging: VM86 accesses are user-mode accesses (#PF error codes with U set).
 *   e  a task whose 32-bit TSS has EFLAGS.VM set, entered by a far CALL: it runs in
 *      VM86 with its selectors as paragraphs; its INT 0xf0 handler returns to the
 *      caller by IRET with NT set (a task return).
 *   f  a hardware interrupt (the PIT's IRQ 0) taken in VM86 at IOPL 0: not
 *      IOPL-sensitive, it leaves through the IDT like an exception.
 *   g  INT n from VM86 through a task gate: the VM86 state saved in the old TSS (VM
 *      in its EFLAGS), and the new task's IRET returns to VM86 (a task switch that
 *      loads the selectors as paragraphs).
 *
 * Expected values (from the SDM, and QEMU's output) are in tests/test_vm86.py. */
#include "rt.h"

#define V86_CS      0x1234u
#define V86_CODE    (V86_CS << 4)
#define V86_DS      0x3000u
#define V86_DATA    ((volatile u8 *)(V86_DS << 4))
#define V86_SS      0x2000u
#define V86_SP      0x0800u
#define VM          0x20000u
#define IOPL3       0x3000u

#define SEL_TSS_V   0x48u          /* the VM86 task's 32-bit TSS */
#define TSS_V_ADDR  0x00206000u
#define SEL_TSS_G   0x50u          /* the task INT 0x33 switches to */
#define TSS_G_ADDR  0x00206100u

extern char v86_start[], v86_end[], v86_a[], v86_b[], v86_c[], v86_d[], v86_e[], v86_f[],
    v86_g[], v86_h21[], v86_msg2[];
extern void task_g_entry(void);

#define OFF(label) ((u32)(label) - (u32)v86_start)
#define D16(off) (*(volatile u16 *)(V86_DATA + (off)))
#define D32(off) (*(volatile u32 *)(V86_DATA + (off)))

/* ---- the real-mode code (copied to V86_CS:0; offsets are relative to v86_start) ---- */
__asm__(
    ".text\n"
    ".code16\n"
    /* the IP to resume at after a fault the kernel records (data word ds:0xfe) */
    ".macro ARM16 resume\n\t"
    "movw $(\\resume - v86_start), 0xfe\n"
    ".endm\n"
    "v86_start:\n"
    /* -- a: IOPL 3 -- */
    "v86_a:\n\t"
    "pushfl\n\t"
    "popl %eax\n\t"
    "movl %eax, 0x00\n\t"
    "movw %cs, 0x04\n\t"
    "movw %ss, 0x06\n\t"
    "movw %sp, 0x08\n\t"
    "movw %es, 0x0a\n\t"
    "movw %fs, 0x0c\n\t"
    "movw %gs, 0x0e\n\t"
    "movl $0xfeedface, %es:0x5\n\t"     /* 3123:0005 = linear 0x31235 */
    "movw $0x4d4d, %fs:0x2\n\t"         /* 4000:0002 = linear 0x40002 */
    "lcall $0x1234, $(v86_farfn - v86_start)\n\t"
    "lesw 0x40, %di\n\t"
    "movw %es, 0x14\n\t"
    "movw %di, 0x16\n\t"
    "pushw $0\n\t"
    "popfw\n\t"                         /* IOPL stays 3; IF is cleared (CPL <= IOPL) */
    "pushfw\n\t"
    "popw 0x18\n\t"
    "pushw $0x08c5\n\t"                 /* OF SF ZF PF CF, IOPL 0 */
    "pushw %cs\n\t"
    "pushw $(1f - v86_start)\n\t"
    "iretw\n"
    "1:\n\t"
    "pushfw\n\t"
    "popw 0x1a\n\t"
    "movw $(v86_msg - v86_start), %si\n\t"
    "call v86_puts\n\t"
    "int $0x30\n\t"
    "movw %ax, 0x1c\n\t"
    "int $0xf0\n"
    "v86_farfn:\n\t"
    "movw %cs, 0x12\n\t"
    "lretw\n"
    "v86_puts:\n\t"                     /* CS:SI, NUL-terminated, to COM1 */
    "movb %cs:(%si), %ah\n\t"
    "testb %ah, %ah\n\t"
    "jz 3f\n\t"
    "movw $0x3fd, %dx\n"
    "2:\n\t"
    "inb %dx, %al\n\t"
    "testb $0x20, %al\n\t"
    "jz 2b\n\t"
    "movw $0x3f8, %dx\n\t"
    "movb %ah, %al\n\t"
    "outb %al, %dx\n\t"
    "incw %si\n\t"
    "jmp v86_puts\n"
    "3:\n\t"
    "ret\n"
    "v86_msg:\n\t"
    ".asciz \"real-mode code in vm86: hello through COM1\\r\\n\"\n"
    /* -- b: IOPL 0, every IOPL-sensitive instruction emulated by the #GP handler -- */
    "v86_b:\n\t"
    "cli\n\t"
    "pushfw\n\t"
    "popw 0x20\n\t"
    "sti\n\t"
    "pushfw\n\t"
    "popw 0x22\n\t"
    "pushw $0x0001\n\t"
    "popfw\n\t"
    "setc 0x26\n\t"
    "movw $5, %bx\n\t"
    "int $0x21\n\t"
    "movw %bx, 0x24\n\t"
    "int3\n\t"
    "int $0xf0\n"
    "v86_h21:\n\t"                      /* the real-mode handler of INT 0x21 */
    "addw $0x100, %bx\n\t"
    "pushfw\n\t"
    "popw 0x28\n\t"
    "iretw\n"
    /* -- c: IOPL 3 faults -- */
    "v86_c:\n\t"
    "ARM16 1f\n\t"
    "movb $0, %bl\n\t"
    "divb %bl\n"
    "1:\n\t"
    "ARM16 1f\n\t"
    "int $0x31\n"
    "1:\n\t"
    "ARM16 1f\n\t"
    "int $0x32\n"
    "1:\n\t"
    "ARM16 1f\n\t"
    "outb %al, $0x80\n"
    "1:\n\t"
    "ARM16 1f\n\t"
    "sldt %ax\n"
    "1:\n\t"
    "ARM16 1f\n\t"
    "arpl %ax, %bx\n"
    "1:\n\t"
    "ARM16 1f\n\t"
    "hlt\n"
    "1:\n\t"
    "ARM16 1f\n\t"
    "movl %cr0, %eax\n"
    "1:\n\t"
    "int $0xf0\n"
    /* -- d: paging (user-mode accesses) -- */
    "v86_d:\n\t"
    "movw $0x1111, 0x50\n\t"            /* 3000:0050, its page made supervisor-only */
    "movw %fs:0x4, %ax\n\t"             /* 6000:0004, its page not present */
    "movw %ax, 0x52\n\t"
    "int $0xf0\n"
    /* -- e: the VM86 task -- */
    "v86_e:\n\t"
    "pushfl\n\t"
    "popl 0x60\n\t"
    "movw %cs, 0x64\n\t"
    "movw %ss, 0x66\n\t"
    "movw %fs, 0x68\n\t"
    "movw %sp, 0x6a\n\t"
    "int $0xf0\n"
    /* -- f: wait for IRQ 0 -- */
    "v86_f:\n\t"
    "cmpw $0, 0x70\n\t"
    "je v86_f\n\t"
    "int $0xf0\n"
    /* -- g: INT 0x33 through a task gate -- */
    "v86_g:\n\t"
    "movw $0x1357, %bx\n\t"
    "int $0x33\n\t"
    "pushfl\n\t"
    "popl 0x80\n\t"
    "movw %cs, 0x84\n\t"
    "movw %bx, 0x86\n\t"
    /* string output with 16-bit addressing: SI and CX count and step, the upper
     * halves of ESI and ECX stay */
    "movl $0x12340000, %esi\n\t"
    "movw $(v86_msg2 - v86_start), %si\n\t"
    "movl $0xabcd0000, %ecx\n\t"
    "movw $(v86_msg2_end - v86_msg2), %cx\n\t"
    "movw $0x3f8, %dx\n\t"
    "rep outsb %cs:(%si), (%dx)\n\t"
    "movl %ecx, 0x88\n\t"
    "movl %esi, 0x8c\n\t"
    "int $0xf0\n"
    "v86_msg2:\n\t"
    ".ascii \"real-mode code in vm86: rep outsb through COM1\\r\\n\"\n"
    "v86_msg2_end:\n"
    "v86_end:\n"
    ".code32\n"
    /* the task INT 0x33 switches to: its IRET (NT set) is a task return */
    "task_g_entry:\n\t"
    "call g_task\n\t"
    "iret\n\t"
    "jmp task_g_entry\n");

RT_DEFINE_VM86_ENTER;

static struct vframe last;      /* the frame of the last INT 0xf0 or INT 0x30 */
static u32 handler_eflags;
static int vif;                 /* the monitor's virtual IF (part b) */

static u8 *lin(u32 seg, u32 off) { return (u8 *)((seg << 4) + (off & 0xffff)); }

static void run(const char *entry, u32 eflags, u16 es, u16 ds, u16 fs, u16 gs)
{
    u32 frame[9] = { OFF(entry), V86_CS, eflags, V86_SP, V86_SS, es, ds, fs, gs };
    v86_enter(frame);
}

static void unexpected(struct frame *f)
{
    kprintf("UNEXPECTED exception %u err=0x%x eip=0x%x cs=0x%x eflags=0x%x\n",
            f->vector, f->err, f->eip, f->cs & 0xffff, f->eflags);
    rt_exit(2);
}

static void leave_vm86(struct frame *f)
{
    last = *(struct vframe *)f;
    rt_ring_return();
}

static void on_int30(struct frame *f)
{
    if (!(f->eflags & VM))
        unexpected(f);
    last = *(struct vframe *)f;
    handler_eflags = read_eflags();
    f->eax = 0x600d;
}

static void print_frame(const char *what, struct vframe *v)
{
    kprintf("%s: ip %04x cs %04x eflags %08x sp %04x ss %04x es %04x ds %04x fs %04x gs %04x\n",
            what, v->f.eip, v->f.cs & 0xffff, v->f.eflags & ~EFLAGS_RF, v->f.esp3,
            v->f.ss3 & 0xffff, v->es & 0xffff, v->ds & 0xffff, v->fs & 0xffff, v->gs & 0xffff);
}

/* faults from part c (and d): record, then resume where the code said (ds:0xfe) */
static void on_fault(struct frame *f)
{
    struct vframe *v = (struct vframe *)f;
    if (!(f->eflags & VM))
        unexpected(f);
    if (f->vector == 0) {
        print_frame("#DE frame", v);
        /* the CPU nulled the data segment registers on the way out (§20.3.1.1) */
        kprintf("#DE in handler: ds %04x es %04x fs %04x gs %04x\n",
                f->ds & 0xffff, f->es & 0xffff, f->fs & 0xffff, f->gs & 0xffff);
    }
    if (f->vector == 14) {
        u32 cr2 = read_cr2();
        kprintf("#PF err %x cr2 %08x ip %04x\n", f->err, cr2, f->eip);
        ((volatile u32 *)PT0_ADDR)[cr2 >> 12] |= PTE_P | PTE_U;
        invlpg(cr2);
        return;                                         /* retried */
    }
    if (f->vector == 3) {
        kprintf("#BP ip %04x (after int3)\n", f->eip);
        return;                                         /* a trap: EIP is past it */
    }
    kprintf("#%u err %x ip %04x\n", f->vector, f->err, f->eip);
    f->eip = D16(0xfe);
}

/* part e: the VM86 task leaves; its ring-0 handler returns to the caller's task */
static u32 e_tr, e_link, e_busy;

static u16 str(void)
{
    u16 v;
    __asm__ volatile("str %0" : "=r"(v));
    return v;
}

static void on_task_leave(struct frame *f)
{
    last = *(struct vframe *)f;
    e_tr = str();
    e_link = *(volatile u16 *)TSS_V_ADDR;
    e_busy = (gdt_entry(SEL_TSS_V >> 3)[1] >> 8) & 0xf;
    __asm__ volatile("pushfl\n\torl $0x4000, (%%esp)\n\tpopfl\n\tiret" ::: "memory");
    unexpected(f);
}

/* part f: IRQ 0 */
static struct vframe irq_frame;
static u32 irq_kds;

static void on_irq0(struct frame *f)
{
    irq_frame = *(struct vframe *)f;
    irq_kds = f->ds;
    D16(0x70) = 1;
    outb(0x21, 0xff);
    pic_eoi(0);
}

/* part g: the task behind the task gate of INT 0x33 */
static u32 g_tr, g_link, g_eflags, g_saved_eflags, g_saved_cs, g_saved_ip, g_saved_ds,
    g_saved_ebx;

void g_task(void)
{
    volatile struct tss *old = (volatile struct tss *)TSS_ADDR;
    g_tr = str();
    g_link = *(volatile u16 *)TSS_G_ADDR;
    g_eflags = read_eflags();
    g_saved_eflags = old->eflags;
    g_saved_cs = old->cs;
    g_saved_ip = old->eip;
    g_saved_ds = old->ds;
    g_saved_ebx = old->ebx;
    old->ebx = 0x2468;                          /* the VM86 task resumes with this BX */
}

/* ---- part b's monitor: #GP from virtual-8086 mode at IOPL 0 ---- */
static u16 pop16(struct vframe *v)
{
    u16 x = *(u16 *)lin(v->f.ss3, v->f.esp3);
    v->f.esp3 = (v->f.esp3 & 0xffff0000u) | ((v->f.esp3 + 2) & 0xffff);
    return x;
}

static void push16(struct vframe *v, u16 x)
{
    v->f.esp3 = (v->f.esp3 & 0xffff0000u) | ((v->f.esp3 - 2) & 0xffff);
    *(u16 *)lin(v->f.ss3, v->f.esp3) = x;
}

static u16 virtual_flags(struct vframe *v)
{
    return (u16)((v->f.eflags & ~EFLAGS_IF & 0xffff) | (vif ? EFLAGS_IF : 0));
}

static void set_virtual_flags(struct vframe *v, u16 x)
{
    /* the arithmetic flags, DF, OF from the image; IF virtual; IOPL, TF left alone */
    v->f.eflags = (v->f.eflags & ~0x0cd5u) | (x & 0x0cd5u);
    vif = !!(x & EFLAGS_IF);
}

static void on_gp(struct frame *f)
{
    struct vframe *v = (struct vframe *)f;
    if (!(f->eflags & VM))
        unexpected(f);
    if ((f->eflags & 0x3000) == IOPL3) {
        on_fault(f);
        return;
    }
    u8 *ip = lin(f->cs, f->eip);
    const char *name = "?";
    u32 len = 1;
    switch (ip[0]) {
    case 0xfa: name = "cli"; vif = 0; break;
    case 0xfb: name = "sti"; vif = 1; break;
    case 0x9c: name = "pushf"; push16(v, virtual_flags(v)); break;
    case 0x9d: name = "popf"; set_virtual_flags(v, pop16(v)); break;
    case 0xcf: {
        name = "iret";
        u16 nip = pop16(v), ncs = pop16(v);
        set_virtual_flags(v, pop16(v));
        kprintf("gp: ip %04x err %x %s\n", f->eip, f->err, name);
        f->eip = nip;
        f->cs = ncs;
        return;
    }
    case 0xcd:
        if (ip[1] == 0xf0) {
            kprintf("gp: ip %04x err %x int f0 (leave)\n", f->eip, f->err);
            leave_vm86(f);
        }
        /* reflect through the real-mode interrupt vector table at linear 0 */
        kprintf("gp: ip %04x err %x int %x -> ivt\n", f->eip, f->err, ip[1]);
        push16(v, virtual_flags(v));
        push16(v, (u16)f->cs);
        push16(v, (u16)(f->eip + 2));
        vif = 0;
        f->eip = ((volatile u16 *)0)[ip[1] * 2];
        f->cs = ((volatile u16 *)0)[ip[1] * 2 + 1];
        return;
    default:
        unexpected(f);
    }
    kprintf("gp: ip %04x err %x %s\n", f->eip, f->err, name);
    f->eip += len;
}

int main(void)
{
    memcpy((void *)V86_CODE, v86_start, (u32)(v86_end - v86_start));
    for (u16 p = 0x3f8; p <= 0x3fd; p++)
        tss_set_io(p, 1);
    idt_set_default(0x30, 0xef);                /* trap gate, DPL 3 */
    idt_set_default(0x31, 0x8e);                /* DPL 0: INT 0x31 from ring 3 is #GP */
    idt_set(0x32, rt_stub_addr(0x32), SEL_CODE3, 0xee);    /* to a ring-3 handler */
    idt_set_default(3, 0xee);                   /* INT3 from ring 3 */
    idt_set_default(0xf0, 0xee);
    rt_isr[0xf0] = leave_vm86;
    rt_isr[0x30] = on_int30;
    rt_isr[13] = on_gp;
    rt_isr[0] = rt_isr[3] = rt_isr[6] = rt_isr[14] = on_fault;
    D32(0x40) = 0x5000abcdu;                    /* far pointer 5000:abcd for LES */

    /* a */
    run(v86_a, VM | IOPL3 | EFLAGS_IF | 2, 0x3123, V86_DS, 0x4000, 0x5000);
    print_frame("a: int f0", &last);
    kprintf("a: pushfd %08x cs %04x ss %04x sp %04x es %04x fs %04x gs %04x\n", D32(0x00),
            D16(0x04), D16(0x06), D16(0x08), D16(0x0a), D16(0x0c), D16(0x0e));
    kprintf("a: linear 31235 %08x 40002 %04x; far call cs %04x; les %04x:%04x\n",
            *(volatile u32 *)0x31235, *(volatile u16 *)0x40002, D16(0x12), D16(0x14), D16(0x16));
    kprintf("a: flags after popf 0 %04x, after iret of 08c5 %04x\n", D16(0x18), D16(0x1a));
    kprintf("a: int 30 handler eflags %08x, ax after iret to vm86 %04x\n", handler_eflags,
            D16(0x1c));

    /* b */
    vif = 1;
    *(volatile u16 *)(0x21 * 4) = (u16)OFF(v86_h21);
    *(volatile u16 *)(0x21 * 4 + 2) = V86_CS;
    run(v86_b, VM | EFLAGS_IF | 2, V86_DS, V86_DS, 0, 0);
    kprintf("b: pushf after cli %04x, after sti %04x; cf after popf %x; bx %04x; "
            "flags in int 21 %04x; vif %u\n", D16(0x20), D16(0x22), V86_DATA[0x26], D16(0x24),
            D16(0x28), vif);
    print_frame("b: int f0", &last);

    /* c */
    run(v86_c, VM | IOPL3 | 2, V86_DS, V86_DS, 0, 0);

    /* d */
    rt_paging_init();
    ((volatile u32 *)PT0_ADDR)[0x30] &= ~PTE_U;
    ((volatile u32 *)PT0_ADDR)[0x60] &= ~PTE_P;
    *(volatile u16 *)0x60004 = 0x6004;
    rt_paging_on(0);
    run(v86_d, VM | IOPL3 | 2, V86_DS, V86_DS, 0x6000, 0);
    rt_paging_off();
    kprintf("d: %04x %04x\n", D16(0x50), D16(0x52));

    /* e */
    static u8 stack_v[4096] __attribute__((aligned(16)));
    volatile struct tss *t = (volatile struct tss *)TSS_V_ADDR;
    memset((void *)TSS_V_ADDR, 0, sizeof(struct tss));
    t->eip = OFF(v86_e);
    t->eflags = VM | IOPL3 | 2;
    t->cs = V86_CS;
    t->ss = V86_SS;
    t->esp = 0x0700;
    t->ds = t->es = V86_DS;
    t->fs = 0x7000;
    t->gs = 0x0123;
    t->ss0 = SEL_DATA0;
    t->esp0 = (u32)stack_v + sizeof stack_v;
    t->iomap = 0xffff;                          /* no I/O bitmap */
    gdt_set(SEL_TSS_V >> 3, TSS_V_ADDR, 0x67, 0x89, 0);
    rt_isr[0xf0] = on_task_leave;
    __asm__ volatile("lcall $0x48, $0" ::: "memory", "eax", "ecx", "edx", "ebx", "esi", "edi");
    print_frame("e: int f0", &last);
    kprintf("e: pushfd %08x cs %04x ss %04x fs %04x sp %04x; tr %x link %x busy %x; "
            "back: tr %x, vm86 tss type %x\n", D32(0x60), D16(0x64), D16(0x66), D16(0x68),
            D16(0x6a), e_tr, e_link, e_busy, str(), (gdt_entry(SEL_TSS_V >> 3)[1] >> 8) & 0xf);

    /* f */
    vif = 1;
    rt_isr[0xf0] = leave_vm86;
    rt_isr[0x20] = on_irq0;
    D16(0x70) = 0;
    outb(0x43, 0x30);                           /* PIT channel 0, mode 0, lo/hi */
    outb(0x40, 0x00);
    outb(0x40, 0x04);                           /* 1024 ticks: under 1 ms */
    outb(0x21, 0xfe);                           /* IRQ 0 only */
    run(v86_f, VM | EFLAGS_IF | 2, V86_DS, V86_DS, 0, 0);
    kprintf("f: irq 0 in vm86: cs %04x vm %u if %u iopl %u ss %04x sp %04x es %04x ds %04x; "
            "handler ds %x\n", irq_frame.f.cs & 0xffff, !!(irq_frame.f.eflags & VM),
            !!(irq_frame.f.eflags & EFLAGS_IF), (irq_frame.f.eflags >> 12) & 3,
            irq_frame.f.ss3 & 0xffff, irq_frame.f.esp3, irq_frame.es & 0xffff,
            irq_frame.ds & 0xffff, irq_kds & 0xffff);

    /* g */
    static u8 stack_g[4096] __attribute__((aligned(16)));
    volatile struct tss *g = (volatile struct tss *)TSS_G_ADDR;
    memset((void *)TSS_G_ADDR, 0, sizeof(struct tss));
    g->eip = (u32)task_g_entry;
    g->eflags = 2;
    g->cs = SEL_CODE0;
    g->ss = g->ds = g->es = g->fs = g->gs = SEL_DATA0;
    g->esp = (u32)stack_g + sizeof stack_g;
    g->iomap = 0xffff;
    gdt_set(SEL_TSS_G >> 3, TSS_G_ADDR, 0x67, 0x89, 0);
    idt_set(0x33, 0, SEL_TSS_G, 0xe5);          /* task gate, DPL 3 */
    run(v86_g, VM | IOPL3 | 2, V86_DS, V86_DS, 0, 0);
    kprintf("g: int 33 through a task gate: tr %x link %x eflags %08x; tss 28 holds eflags "
            "%08x cs %04x ip %04x ds %04x bx %04x\n", g_tr, g_link, g_eflags, g_saved_eflags,
            g_saved_cs, g_saved_ip, g_saved_ds, g_saved_ebx);
    kprintf("g: back in vm86: pushfd %08x cs %04x bx %04x; tr %x\n", D32(0x80), D16(0x84),
            D16(0x86), str());
    kprintf("g: after rep outsb: ecx %08x esi %08x (message at %04x)\n", D32(0x88), D32(0x8c),
            OFF(v86_msg2));
    kprintf("done\n");
    rt_exit(0);
}
