/* osdev-demand: a kernel that pages its user program in on demand -- the program's
 * heap has no frames until it touches them: a read maps a shared zero page read-only, a
 * write a fresh frame (a write to the zero page copies it: copy-on-write) -- and then
 * single-steps a user function (EFLAGS.TF), counting the steps and summing where each
 * landed: a loop, REP MOVSB (a step per iteration, SDM Vol. 3 §17.3.1.4), a fault taken
 * while stepping (no step for the faulting attempt: the #PF comes first, the retried
 * instruction then steps), PUSHF/POPF keeping TF, and the POPF that clears TF, which
 * still steps.  Expected lines: tests/test_osdev.py. */
#ifdef PROG_DEMAND
#include "kern.h"

#define PG_P 1
#define PG_W 2
#define PG_U 4
#define HEAP 0x80000000u
#define POOL 0x00800000u               /* frames handed out, 8 MiB up */

static u32 pd[1024] __attribute__((aligned(4096)));
static u32 pt_low[2][1024] __attribute__((aligned(4096)));
static u32 pt_heap[1024] __attribute__((aligned(4096)));
static u32 next_frame = POOL + 0x1000, zero_page = POOL;
static u32 nfaults;
u32 enter_user(u32 eip, u32 cs, u32 esp, u32 ss, u32 eflags);
void leave_user(u32 v) __attribute__((noreturn));

static u32 alloc(void)
{
    u32 f = next_frame;
    next_frame += 0x1000;
    for (u32 i = 0; i < 1024; i++)
        ((volatile u32 *)f)[i] = 0;
    return f;
}

static struct regs *page_fault(struct regs *r)
{
    u32 a = cr2(), *pte = &pt_heap[(a >> 12) & 1023];
    const char *what;
    if ((a >> 22) != (HEAP >> 22) || !(r->err & PG_U)) {
        kprintf("fault outside the heap: cr2=%x err=%x eip=%x\n", a, r->err, r->eip);
        halt_exit(1);
    }
    if (!(r->err & PG_P) && !(r->err & PG_W)) {
        *pte = zero_page | PG_U | PG_P;
        what = "zero page";
    } else if (!(r->err & PG_P)) {
        *pte = alloc() | PG_U | PG_W | PG_P;
        what = "new frame";
    } else {
        u32 f = alloc();                /* copy of the zero page: zeros already */
        *pte = f | PG_U | PG_W | PG_P;
        invlpg(a);
        what = "copied";
    }
    if (nfaults++ < 12)
        kprintf("#PF %u: cr2=%x err=%x eip=user+%x -> %s %x\n", nfaults, a, r->err,
                r->eip - 0x1000, what, (*pte & ~0xfffu) - POOL);
    return r;
}

static u32 steps, eip_sum, eips[48];
static struct regs *debug(struct regs *r)
{
    u32 dr6;
    __asm__ volatile("mov %%dr6, %0" : "=r"(dr6));
    if (!(dr6 & 0x4000)) {
        kprintf("#DB without BS: dr6=%x\n", dr6);
        halt_exit(1);
    }
    __asm__ volatile("mov %0, %%dr6" :: "r"(0));
    if (steps < 48)
        eips[steps] = r->eip - 0x1000;
    steps++;
    eip_sum = eip_sum * 31 + r->eip;
    return r;
}

static struct regs *syscall(struct regs *r)
{
    leave_user(r->ebx);
}

/* the user program, at linear 0x1000 (its own page of the kernel's image) */
extern u8 user_prog[], user_step[];
__asm__(".section .text.pages, \"ax\"\n.balign 4096\nuser_prog:\n\t"
        "movl $0x23, %eax\n\tmovw %ax, %ds\n\tmovw %ax, %es\n\t"
        "movl 0x80000010, %ebx\n\t"             /* read: the zero page */
        "movl $0x11, 0x80001ffe\n\t"            /* a write across two untouched pages */
        "addl 0x80001ffe, %ebx\n\t"
        "movl $0x22, 0x80000020\n\t"            /* a write to the zero page: copied */
        "addl 0x80000020, %ebx\n\t"
        "addl 0x80000010, %ebx\n\t"
        "movl $1, %eax\n\tint $0x80\n"
        /* single-stepped from here (0x1000 + user_step - user_prog) */
        "user_step:\n\t"
        "movl $0x23, %eax\n\tmovw %ax, %ds\n\tmovw %ax, %es\n\t"
        "movl $3, %ecx\n"
        "1:\taddl %ecx, %ebx\n\tloop 1b\n\t"
        "movl $0x80000100, %esi\n\tmovl $0x80004000, %edi\n\tmovl $4, %ecx\n\t"
        "cld\n\trep movsb\n\t"                     /* faults on its first store, then steps */
        "pushfl\n\tpopfl\n\t"
        "pushfl\n\tandl $~0x100, (%esp)\n\tpopfl\n\t"   /* TF cleared: POPF still steps */
        "movl 0x80004000, %eax\n\taddl %eax, %ebx\n\t"
        "movl $1, %eax\n\tint $0x80\n"
        ".balign 4096\n.text\n");

void prog_main(void)
{
    kprintf("osdev-demand: start\n");
    /* the kernel's 0..8 MiB supervisor; user_prog's page also user, at 0x1000 */
    for (u32 i = 0; i < 2048; i++)
        pt_low[i >> 10][i & 1023] = i << 12 | PG_W | PG_P;
    pt_low[0][1] = (u32)user_prog | PG_U | PG_P;
    pt_low[0][2] = 0x7f000 | PG_U | PG_W | PG_P;            /* user stack page */
    pd[0] = (u32)pt_low[0] | PG_U | PG_W | PG_P;
    pd[1] = (u32)pt_low[1] | PG_W | PG_P;
    pd[2] = POOL | 0x80 | PG_W | PG_P;                      /* the pool: a 4 MiB page */
    pd[HEAP >> 22] = (u32)pt_heap | PG_U | PG_W | PG_P;
    setcr4(getcr(4) | 0x10);
    setcr3((u32)pd);
    setcr0(getcr(0) | 0x80010000u);
    for (u32 i = 0; i < 1024; i++)
        ((volatile u32 *)zero_page)[i] = 0;
    handlers[14] = page_fault;
    handlers[1] = debug;
    handlers[0x80] = syscall;
    set_idt(0x80, 0xee);

    u32 v = enter_user(0x1000, UCODE, 0x3000, UDATA, 0x2);
    kprintf("demand paged: sum %x, %u faults, frames used %u\n", v, nfaults,
            (next_frame - POOL) >> 12);
    u32 start = 0x1000 + (u32)(user_step - user_prog);
    v = enter_user(start, UCODE, 0x3000, UDATA, 0x102);
    kprintf("stepped: sum %x, %u steps, %u faults, hash %x\nsteps at:", v, steps, nfaults,
            eip_sum);
    for (u32 i = 0; i < steps && i < 48; i++)
        kprintf(" %x", eips[i]);
    kprintf("\nosdev-demand: done\n");
}
#endif
