/* osdev-sched: a round robin of three user tasks, each in an address space of its own
 * (a page directory per task: the same linear code, data and stack addresses on other
 * frames), switched in software on the PIT's IRQ 0 (the 8259A moved to 0x20, the PIT at
 * ~5 kHz): the interrupt frame saved on the task's own kernel stack, CR3 and the TSS's
 * ESP0 loaded for the next.  Each task spins until it has been preempted three times
 * (the kernel counts, in a page the task may only read), then exits by INT 0x80: what is
 * printed depends on the order of events, never on when the timer fires.  Expected
 * lines: tests/test_osdev.py. */
#ifdef PROG_SCHED
#include "kern.h"

#define NTASK 3
#define PG_P 1
#define PG_W 2
#define PG_U 4
#define USER 0x40000000u               /* code, then data, stack page and the counters */
#define PREEMPTS 3

struct task {
    struct regs *frame;                /* where its state is, on its kernel stack */
    u32 pd, alive, hellos;
};
static struct task tasks[NTASK];
static u32 pds[NTASK][1024] __attribute__((aligned(4096)));
static u32 pts[NTASK][1024] __attribute__((aligned(4096)));
static u32 kpt[1024] __attribute__((aligned(4096)));
static u8 frames[NTASK][2][4096] __attribute__((aligned(4096)));     /* data, stack */
static volatile u32 counters[1024] __attribute__((aligned(4096)));  /* preemptions, user r/o */
static u8 kstacks[NTASK][4096] __attribute__((aligned(16)));
static u32 cur, order[16], norder, ticks;
void leave_user(u32 v) __attribute__((noreturn));
u32 resume_frame(struct regs *f);

/* the tasks' code, at USER in each: count, read the counter, exit after PREEMPTS */
extern u8 task_code[];
__asm__(".section .text.pages, \"ax\"\n.balign 4096\ntask_code:\n\t"
        "movl $1, %eax\n\tint $0x80\n"                        /* hello */
        "1:\tmovl 0x40001000, %ebx\n\t"                         /* my id (own data page) */
        "incl 0x40001004\n\t"                                    /* work done */
        "cmpl $3, 0x40003000(,%ebx,4)\n\t"
        "jb 1b\n\t"
        "movl $2, %eax\n\tint $0x80\n"                        /* exit */
        ".balign 4096\n.text\n");

static struct regs *switch_to(u32 next)
{
    cur = next;
    order[norder < 16 ? norder++ : 15] = next;
    tss.esp0 = (u32)kstacks[next] + sizeof kstacks[next];
    setcr3(tasks[next].pd);
    return tasks[next].frame;
}

static u32 next_alive(void)
{
    for (u32 i = 1; i <= NTASK; i++)
        if (tasks[(cur + i) % NTASK].alive)
            return (cur + i) % NTASK;
    return NTASK;
}

static struct regs *timer(struct regs *r)
{
    outb(0x20, 0x20);
    ticks++;
    if (!(r->cs & 3))
        return r;                       /* (never: the kernel runs with IF clear) */
    counters[cur]++;
    tasks[cur].frame = r;
    return switch_to(next_alive());
}

/* what the tasks did, printed at the end (printing in the handlers would stretch them
 * against the timer) */
static u32 hello_data[NTASK], hello_esp[NTASK], hello_pd[NTASK], exits[NTASK], nexits;
static u32 exit_count[NTASK], exit_work[NTASK];

static struct regs *syscall(struct regs *r)
{
    if (r->eax == 1) {
        tasks[cur].hellos++;
        hello_data[cur] = *(volatile u32 *)(USER + 0x1000);
        hello_esp[cur] = r->esp;
        hello_pd[cur] = (getcr(3) - (u32)pds) >> 12;
        return r;
    }
    exit_count[cur] = counters[cur];
    exit_work[cur] = *(volatile u32 *)(USER + 0x1004);
    exits[nexits++] = cur;
    tasks[cur].alive = 0;
    u32 next = next_alive();
    if (next == NTASK)
        leave_user(0);
    return switch_to(next);
}

void prog_main(void)
{
    kprintf("osdev-sched: start\n");
    /* the kernel's 0..4 MiB, supervisor, in every address space; the counters' page
     * user read-only at USER + 0x3000; code, data and stack per task */
    for (u32 i = 0; i < 1024; i++)
        kpt[i] = i << 12 | PG_W | PG_P;
    for (u32 t = 0; t < NTASK; t++) {
        pds[t][0] = (u32)kpt | PG_W | PG_P;
        pds[t][USER >> 22] = (u32)pts[t] | PG_U | PG_W | PG_P;
        pts[t][0] = (u32)task_code | PG_U | PG_P;
        pts[t][1] = (u32)frames[t][0] | PG_U | PG_W | PG_P;
        pts[t][2] = (u32)frames[t][1] | PG_U | PG_W | PG_P;
        pts[t][3] = (u32)counters | PG_U | PG_P;
        *(u32 *)frames[t][0] = t;
        tasks[t].pd = (u32)pds[t];
        tasks[t].alive = 1;
        /* the frame an interrupt from it would have left on its kernel stack */
        struct regs *f = (struct regs *)(kstacks[t] + sizeof kstacks[t]) - 1;
        *f = (struct regs){ .es = UDATA, .ds = UDATA, .eip = USER, .cs = UCODE,
                            .eflags = 0x202, .esp = USER + 0x3000, .ss = UDATA };
        tasks[t].frame = f;
    }
    setcr3((u32)pds[0]);
    setcr0(getcr(0) | 0x80000000u);

    /* the 8259A pair at 0x20/0x28, only IRQ 0; the PIT's channel 0, mode 2, 239 */
    outb(0x20, 0x11); outb(0x21, 0x20); outb(0x21, 4); outb(0x21, 1); outb(0x21, 0xfe);
    outb(0xa0, 0x11); outb(0xa1, 0x28); outb(0xa1, 2); outb(0xa1, 1); outb(0xa1, 0xff);
    outb(0x43, 0x34); outb(0x40, 239); outb(0x40, 0);
    handlers[0x20] = timer;
    handlers[0x80] = syscall;
    set_idt(0x80, 0xee);

    /* into task 0 through its prepared frame: an IRET from its kernel stack */
    cur = 0;
    order[norder++] = 0;
    tss.esp0 = (u32)kstacks[0] + sizeof kstacks[0];
    resume_frame(tasks[0].frame);
    outb(0x21, 0xff);
    for (u32 t = 0; t < NTASK; t++)
        kprintf("task %u: hello, data page says %u, stack at %x, cr3=pd[%u]\n", t,
                hello_data[t], hello_esp[t], hello_pd[t]);
    for (u32 i = 0; i < nexits; i++)
        kprintf("exit %u: task %u after %u preemptions, worked %s\n", i, exits[i],
                exit_count[exits[i]], exit_work[exits[i]] > PREEMPTS ? "yes" : "no");
    kprintf("switches:");
    for (u32 i = 0; i < norder && i < 16; i++)
        kprintf(" %u", order[i]);
    kprintf("\nhellos: %u %u %u, ticks >= 9: %s\n", tasks[0].hellos, tasks[1].hellos,
            tasks[2].hellos, ticks >= 9 ? "yes" : "no");
    kprintf("osdev-sched: done\n");
}
#endif
