/* osdev-pse: a kernel on 4 MiB pages (CR4.PSE) mixed with 4 KiB pages and global pages
 * (CR4.PGE), which runs from a higher-half alias of itself, moves its own code page and
 * stack page to other frames while running, and uses an LDT holding a user code and data
 * segment and a call gate.  Expected lines (SDM rules: tests/test_osdev.py). */
#ifdef PROG_PSE
#include "kern.h"

#define PG_P 1
#define PG_W 2
#define PG_U 4
#define PG_PS 0x80
#define PG_G 0x100
#define HIGH 0xc0000000u
#define FRAMES 0x00600000u            /* free frames for the moves (in the 4..8 MiB page) */

static u32 pd[1024] __attribute__((aligned(4096)));
static u32 pt0[1024] __attribute__((aligned(4096)));
static u64 ldt[4] __attribute__((aligned(8)));
extern u8 probe_page[];
extern u8 probe_imm[];
u32 enter_user(u32 eip, u32 cs, u32 esp, u32 ss, u32 eflags);
void leave_user(u32 v) __attribute__((noreturn));

static u32 __attribute__((noinline)) here(void)
{
    return (u32)__builtin_return_address(0);
}

/* called at the higher-half alias, on the alias of its stack */
static void __attribute__((noinline)) high_half(u32 *out)
{
    u32 local = 0x1234;
    out[0] = here() >> 22;
    out[1] = (u32)&local >> 22;
    out[2] = local;
}

static u32 read_phys(u32 pa) { return *(volatile u32 *)(HIGH + pa); }

/* ring 3: load the LDT's data segment, store through it, call the gate with two
 * parameters, and return what the gate computed through int 0x80 */
extern void user_ldt(void);
__asm__(".text\nuser_ldt:\n\t"
        "movw $0x07, %ax\n\tmovw %ax, %ds\n\t"
        "movl $0xfeedf00d, 0x10\n\t"
        "movl %ss, %eax\n\tmovw %ax, %ds\n\t"
        "pushl $7\n\tpushl $35\n\t"
        "lcall $0x0f, $0\n\t"
        "addl $8, %esp\n\t"
        "movl %eax, %ebx\n\tmovl $1, %eax\n\tint $0x80\n");

/* ring 3: a read of the supervisor 4 MiB page */
extern void user_read(void);
__asm__(".text\nuser_read:\n\tmovl %ss, %eax\n\tmovw %ax, %ds\n\tmovl 0x900000, %eax\n\tmovl $1, %eax\n\tint $0x80\n");

/* the call gate's target at ring 0: two parameters copied from the user stack */
extern void gate_entry(void);
u32 gate_cs, gate_ss, gate_p0, gate_p1, gate_rcs;
__asm__(".text\ngate_entry:\n\t"
        "movl %cs, %eax\n\tmovl %eax, gate_cs\n\tmovl %ss, %eax\n\tmovl %eax, gate_ss\n\t"
        "movl 4(%esp), %eax\n\tmovl %eax, gate_rcs\n\t"
        "movl 8(%esp), %eax\n\tmovl %eax, gate_p0\n\t"
        "movl 12(%esp), %eax\n\tmovl %eax, gate_p1\n\t"
        "imull 8(%esp), %eax\n\t"
        "lret $8\n");

static struct regs *syscall(struct regs *r)
{
    leave_user(r->ebx);
}

static u32 pf_cr2, pf_err;
static struct regs *user_pf(struct regs *r)
{
    pf_cr2 = cr2();
    pf_err = r->err;
    leave_user(0xdead);
}

void prog_main(void)
{
    kprintf("osdev-pse: start\n");
    /* 0..4 MiB in 4 KiB pages (the kernel's global), 4..8 MiB one user 4 MiB page,
     * 8..12 MiB a supervisor 4 MiB page, and 0..4 MiB again at 3 GiB (global) */
    for (u32 i = 0; i < 1024; i++)
        pt0[i] = i << 12 | PG_G | PG_U | PG_W | PG_P;
    pd[0] = (u32)pt0 | PG_U | PG_W | PG_P;
    pd[1] = 0x400000 | PG_PS | PG_U | PG_W | PG_P;
    pd[2] = 0x800000 | PG_PS | PG_W | PG_P;
    pd[HIGH >> 22] = 0 | PG_PS | PG_G | PG_W | PG_P;
    setcr4(getcr(4) | 0x10 | 0x80);
    setcr3((u32)pd);
    setcr0(getcr(0) | 0x80010000);
    kprintf("paging: cr0=%08x cr4=%08x\n", getcr(0) & 0x80010001, getcr(4));

    /* run from the alias: code and stack 3 GiB up */
    u32 out[3];
    void (*hi)(u32 *) = (void (*)(u32 *))((u32)high_half + HIGH);
    __asm__ volatile("addl %1, %%esp\n\tpushl %2\n\tcall *%0\n\t"
                     "addl $4, %%esp\n\tsubl %1, %%esp"
                     :: "r"(hi), "r"(HIGH), "r"((u32)out + HIGH) : "memory", "eax", "ecx", "edx");
    kprintf("alias: code in 4 MiB #%x, stack in #%x, local=%x\n", out[0], out[1], out[2]);

    /* the code page moved to another frame, patched there; INVLPG drops the global entry */
    u32 (*probe)(void) = (u32 (*)(void))probe_page;
    u32 before = probe();
    u8 *copy = (u8 *)FRAMES;
    for (u32 i = 0; i < 4096; i++)
        copy[i] = probe_page[i];
    *(u32 *)(copy + (probe_imm - probe_page)) = 0x2222;
    u32 slot = (u32)probe_page >> 12;
    pt0[slot] = FRAMES | PG_G | PG_U | PG_P;
    invlpg((u32)probe_page);
    u32 after = probe();
    kprintf("code page moved: %x then %x\n", before, after);

    /* the stack page under us moved to another frame: copied, remapped, INVLPG, in one
     * go (nothing may be pushed between the copy and the switch) */
    volatile u32 marker = 0x51ac;
    u32 sp;
    __asm__ volatile("movl %%esp, %0" : "=r"(sp));
    u32 spage = sp & ~0xfffu, old = spage, nw = FRAMES + 0x1000;
    u32 d0, d1, d2;
    __asm__ volatile("cld\n\trep movsl\n\tmovl %%eax, (%%edx)\n\tinvlpg (%%ebx)"
                     : "=S"(d0), "=D"(d1), "=c"(d2)
                     : "0"(spage), "1"(nw), "2"(1024), "a"(nw | PG_G | PG_U | PG_W | PG_P),
                       "d"(&pt0[spage >> 12]), "b"(spage) : "memory");
    marker = 0x5eed;
    u32 in_new = *(volatile u32 *)(nw + ((u32)&marker & 0xfff));
    u32 in_old = read_phys(old + ((u32)&marker & 0xfff));
    kprintf("stack page moved: new frame %x, old frame %x, marker %x\n", in_new, in_old, marker);

    /* a global page's PTE changed without INVLPG: CR4.PGE off and on drops it (SDM Vol. 3
     * §4.10.4.1); a MOV to CR3 need not, so nothing is read between */
    pt0[slot] = (u32)probe_page | PG_G | PG_U | PG_P;   /* (back to the original) */
    setcr4(getcr(4) & ~0x80u);
    setcr4(getcr(4) | 0x80u);
    kprintf("global flushed by PGE: %x\n", probe());

    /* LDT: user code, user data based at 5 MiB, a call gate to ring 0 with 2 parameters */
    u64 g;
    ldt[0] = 0x0fff | (u64)0x500000 << 16 | (u64)0xf2 << 40 | (u64)0x4 << 52;  /* data, byte limit */
    gate_desc(&g, KCODE, (u32)gate_entry, 0xec, 2);
    ldt[1] = g;
    ldt[2] = 0xffff | (u64)0xfa << 40 | (u64)0xcf << 48;                       /* flat code */
    seg_desc(6, (u32)ldt, sizeof ldt - 1, 0x82, 0);
    __asm__ volatile("lldt %w0" :: "r"(0x30));
    handlers[0x80] = syscall;
    set_idt(0x80, 0xee);
    *(volatile u32 *)0x500010 = 0;
    u32 v = enter_user((u32)user_ldt, 0x17, 0x7ff000, UDATA, 0x2);
    u16 ldtr;
    __asm__ volatile("sldt %0" : "=r"(ldtr));
    kprintf("ldt %x: stored %x, gate cs=%x ss=%x from cs=%x params %u %u -> %u\n", ldtr,
            *(volatile u32 *)0x500010, gate_cs & 0xffff, gate_ss & 0xffff, gate_rcs & 0xffff,
            gate_p0, gate_p1, v);

    /* U/S on the 4 MiB pages: a user read of the supervisor one faults (P=1, U=1) */
    handlers[14] = user_pf;
    v = enter_user((u32)user_read, UCODE, 0x7ff000, UDATA, 0x2);
    kprintf("user read of a supervisor 4 MiB page: %x cr2=%x err=%x\n", v, pf_cr2, pf_err);
    handlers[14] = 0;
    kprintf("osdev-pse: done\n");
}
#endif
