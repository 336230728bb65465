/* tasks: hardware task switching (SDM Vol. 3 ch. 7) with TSSes of our own: a far CALL
 * to a TSS and IRET back (NT, the back link, the busy bits, CR0.TS, the saved EIP and
 * registers), a second CALL resuming the task where it left off, a JMP through a task
 * gate in the GDT and a JMP back, a 16-bit TSS, a double fault handled by a task
 * through a task gate in the IDT (the error code on the new task's stack), and the
 * faults of a switch with their error codes: before the commit point (busy TSS, TSS
 * not present, TSS limit too small, IRET to a task that is not busy) in the old task,
 * after it (a bad data selector in the new TSS) in the new one.  Expected values are
 * in tests/test_tasks.py. */
#include "rt.h"

#define SEL_TSS_B   0x48   /* 32-bit TSS, the "coroutine" task */
#define SEL_TSS_DF  0x50   /* 32-bit TSS of the double-fault task */
#define SEL_GATE_B  0x58   /* task gate in the GDT -> SEL_TSS_B */
#define SEL_TSS_C   0x60   /* 16-bit TSS */
#define SEL_TSS_E   0x68   /* 32-bit TSS whose DS selector names a TSS: #TS after commit */
#define SEL_TSS_NP  0x70   /* not present */
#define SEL_TSS_SH  0x78   /* limit 0x60 < 0x67 */

#define TSS_B_ADDR  0x00206000u
#define TSS_DF_ADDR 0x00206100u
#define TSS_C_ADDR  0x00206200u
#define TSS_E_ADDR  0x00206300u
#define CODE16_ADDR 0x00008000u   /* the 16-bit TSS's task: its IP is 16 bits */
#define C16_OUT     0x00009000u

struct tss16 {
    u16 link, sp0, ss0, sp1, ss1, sp2, ss2, ip, flags;
    u16 ax, cx, dx, bx, sp, bp, si, di, es, cs, ss, ds, ldt;
};

static u8 stack_b[4096] __attribute__((aligned(16)));
static u8 stack_df[4096] __attribute__((aligned(16)));
static u8 stack_e[4096] __attribute__((aligned(16)));

volatile u32 b_count, b_mode, b_eax0, b_eflags, b_link, b_tr, b_cr0, b_type_main, b_type_b;
volatile u32 df_err, df_link, df_eflags, df_saved_eip, df_tr, df_count;
volatile u32 ts_err, ts_eip, ts_tr, ts_eflags, ts_count, ts_type_main;
volatile u32 ts_resume;

extern void task_b_entry(void), task_df_entry(void), task_e_entry(void), to_main(void);
extern char c16_start[], c16_end[], c16_after_iret[];

static u32 desc_type(u16 sel)
{
    return (gdt_entry(sel >> 3)[1] >> 8) & 0xf;
}

static u16 str(void)
{
    u16 v;
    __asm__ volatile("str %0" : "=r"(v));
    return v;
}

static void clts(void) { __asm__ volatile("clts"); }

/* ---- the tasks ---- */
__asm__(
    ".text\n"
    "task_b_entry:\n\t"
    "movl %eax, b_eax0\n\t"
    "jmp task_b\n"
    "task_df_entry:\n\t"
    "popl df_err\n\t"                 /* the error code #DF pushed on this task's stack */
    "jmp task_df\n"
    "task_e_entry:\n\t"
    "hlt\n"                           /* never runs: its DS faults first */
    "to_main:\n\t"
    "ljmp $0x28, $0\n\t"
    "hlt\n"
    /* the 16-bit TSS's task, copied to CODE16_ADDR (absolute stores only) */
    "c16_start:\n\t"
    "movw %ax, 0x9000\n\t"
    "pushfl\n\t"
    "popl %ecx\n\t"
    "movl %ecx, 0x9004\n\t"
    "str 0x9008\n\t"
    "iret\n"
    "c16_after_iret:\n\t"
    "jmp c16_start\n"
    "c16_end:\n");

void task_b(void)
{
    for (;;) {
        b_count++;
        b_eflags = read_eflags();
        b_link = ((volatile struct tss *)TSS_B_ADDR)->link;
        b_tr = str();
        b_cr0 = read_cr0();
        b_type_main = desc_type(SEL_TSS);
        b_type_b = desc_type(SEL_TSS_B);
        if (b_mode == 0)
            __asm__ volatile("iret" ::: "memory");
        else
            __asm__ volatile("ljmp $0x28, $0" ::: "memory");
    }
}

static u32 saved_idt13[2];

void task_df(void)
{
    for (;;) {
        df_count++;
        df_eflags = read_eflags();
        df_link = ((volatile struct tss *)TSS_DF_ADDR)->link;
        df_tr = str();
        df_saved_eip = TSS->eip;
        /* repair the #GP gate and resume the interrupted task past its fault */
        ((volatile u32 *)IDT_ADDR)[26] = saved_idt13[0];
        ((volatile u32 *)IDT_ADDR)[27] = saved_idt13[1];
        TSS->eip = ts_resume;
        __asm__ volatile("iret" ::: "memory");
    }
}

/* #TS: recorded; the data segments are made usable and NT is cleared so that the
 * runtime's IRET returns normally, to ts_resume (in whichever task took it) */
static void ts_handler(struct frame *f)
{
    ts_count++;
    ts_err = f->err;
    ts_eip = f->eip;
    ts_eflags = f->eflags;
    ts_tr = str();
    ts_type_main = desc_type(SEL_TSS);
    f->ds = f->es = f->fs = f->gs = SEL_DATA0;
    f->eflags &= ~EFLAGS_NT;
    f->eip = ts_resume;
}

static void tss32_init(u32 addr, void (*entry)(void), u8 *stack)
{
    volatile struct tss *t = (volatile struct tss *)addr;
    memset((void *)addr, 0, 104);
    t->eip = (u32)entry;
    t->eflags = 0x2;
    t->esp = (u32)(stack + 4096);
    t->cs = SEL_CODE0;
    t->ss = t->ds = t->es = t->fs = t->gs = SEL_DATA0;
    t->cr3 = read_cr3();
    t->iomap = 104;
}

/* far pointers for the faulting cases */
static void call_task(u16 sel)
{
    static volatile struct { u32 off; u16 sel; } __attribute__((packed)) fp;
    fp.off = 0;
    fp.sel = sel;
    __asm__ volatile(ARM(1f, 0f) "0: lcall *%0\n1:" :: "m"(fp) : "memory", "cc");
}

int main(void)
{
    volatile struct tss *tb = (volatile struct tss *)TSS_B_ADDR;
    volatile struct tss16 *tc = (volatile struct tss16 *)TSS_C_ADDR;
    u32 ebx, after;

    tss32_init(TSS_B_ADDR, task_b_entry, stack_b);
    tb->eax = 0x11111111;
    tss32_init(TSS_DF_ADDR, task_df_entry, stack_df);
    tss32_init(TSS_E_ADDR, task_e_entry, stack_e);
    ((volatile struct tss *)TSS_E_ADDR)->ds = SEL_TSS_B;
    gdt_set(SEL_TSS_B >> 3, TSS_B_ADDR, 0x67, 0x89, 0);
    gdt_set(SEL_TSS_DF >> 3, TSS_DF_ADDR, 0x67, 0x89, 0);
    gdt_set_gate(SEL_GATE_B >> 3, SEL_TSS_B, 0, 0x85, 0);
    gdt_set(SEL_TSS_C >> 3, TSS_C_ADDR, 0x2b, 0x81, 0);
    gdt_set(SEL_TSS_E >> 3, TSS_E_ADDR, 0x67, 0x89, 0);
    gdt_set(SEL_TSS_NP >> 3, TSS_E_ADDR, 0x67, 0x09, 0);
    gdt_set(SEL_TSS_SH >> 3, TSS_E_ADDR, 0x60, 0x89, 0);
    rt_isr[10] = ts_handler;

    /* 1. CALL to a TSS: the task runs with NT set, its back link naming us, both busy */
    clts();
    __asm__ volatile("movl $0xcafe0001, %%ebx\n\t"
                     "lcall $0x48, $0\n"
                     "2:\n\t"
                     "movl %%ebx, %0\n\t"
                     "movl $2b, %1" : "=r"(ebx), "=r"(after) :: "memory", "cc");
    kprintf("call: count %u eax %x nt %u link %x tr %x ts %u busy main %x b %x\n",
            b_count, b_eax0, (b_eflags >> 14) & 1, b_link, b_tr, (b_cr0 >> 3) & 1,
            b_type_main, b_type_b);
    kprintf("iret: nt %u ebx %x saved eip %s tr %x busy main %x b %x\n",
            (read_eflags() >> 14) & 1, ebx, TSS->eip == after ? "ok" : "wrong", str(),
            desc_type(SEL_TSS), desc_type(SEL_TSS_B));

    /* 2. the task resumes after its IRET */
    __asm__ volatile("lcall $0x48, $0" ::: "memory", "cc");
    kprintf("call again: count %u b eip after iret %s\n", b_count,
            tb->eip != (u32)task_b_entry ? "yes" : "no");

    /* 3. JMP through a task gate in the GDT, and the task JMPs back */
    b_mode = 1;
    tb->link = 0;
    __asm__ volatile("ljmp $0x58, $0" ::: "memory", "cc");
    kprintf("jmp: count %u nt %u link %x busy main %x b %x; back: busy main %x b %x tr %x\n",
            b_count, (b_eflags >> 14) & 1, b_link, b_type_main, b_type_b,
            desc_type(SEL_TSS), desc_type(SEL_TSS_B), str());

    /* 4. a 16-bit TSS */
    memcpy((void *)CODE16_ADDR, c16_start, c16_end - c16_start);
    memset((void *)TSS_C_ADDR, 0, 0x2c);
    tc->ip = CODE16_ADDR;
    tc->flags = 0x2;
    tc->ax = 0x1616;
    tc->sp = 0x7000;
    tc->cs = SEL_CODE0;
    tc->ss = tc->ds = tc->es = SEL_DATA0;
    __asm__ volatile("lcall $0x60, $0" ::: "memory", "cc", "eax", "ecx");
    kprintf("tss16: ax %x nt %u tr %x link %x ip %s busy c %x\n",
            *(volatile u16 *)C16_OUT, (*(volatile u32 *)(C16_OUT + 4) >> 14) & 1,
            *(volatile u16 *)(C16_OUT + 8), tc->link,
            tc->ip == CODE16_ADDR + (c16_after_iret - c16_start) ? "after iret" : "wrong",
            desc_type(SEL_TSS_C));

    /* 5. a double fault through a task gate: #GP with a not-present #GP gate */
    saved_idt13[0] = ((volatile u32 *)IDT_ADDR)[26];
    saved_idt13[1] = ((volatile u32 *)IDT_ADDR)[27];
    ((volatile u32 *)IDT_ADDR)[27] &= ~0x8000u;
    idt_set(8, 0, SEL_TSS_DF, 0x85);
    __asm__ volatile("movl $1f, ts_resume\n\t"
                     "movl $0f, %0\n\t"
                     "movw $0x7f8, %%ax\n"
                     "0: movw %%ax, %%ds\n"
                     "1:" : "=m"(after) :: "eax", "memory", "cc");
    kprintf("#DF task: count %u err %x nt %u link %x tr %x saved eip %s; back: tr %x busy df %x\n",
            df_count, df_err, (df_eflags >> 14) & 1, df_link, df_tr,
            df_saved_eip == after ? "at the fault" : "wrong", str(), desc_type(SEL_TSS_DF));

    /* 6. faults before the commit point: the old task takes them */
    rt_expect_reset();
    call_task(SEL_TSS);
    report_exc("call busy tss");
    rt_expect_reset();
    call_task(SEL_TSS_NP);
    report_exc("call tss not present");
    ts_count = 0;
    __asm__ volatile("movl $1f, ts_resume\n\t"
                     "lcall $0x78, $0\n1:" ::: "memory", "cc");
    kprintf("call short tss: #TS count %u err %x tr %x\n", ts_count, ts_err, ts_tr);
    TSS->link = SEL_TSS_B;                       /* available, not busy */
    ts_count = 0;
    __asm__ volatile("movl $1f, ts_resume\n\t"
                     "movl $0f, %0\n\t"
                     "pushfl\n\t"
                     "orl $0x4000, (%%esp)\n\t"
                     "popfl\n"
                     "0: iret\n"
                     "1:" : "=m"(after) :: "memory", "cc");
    kprintf("iret to a free tss: #TS count %u err %x at iret %s nt %u tr %x\n", ts_count,
            ts_err, ts_eip == after ? "yes" : "no", (ts_eflags >> 14) & 1, ts_tr);
    TSS->link = 0;

    /* 7. a fault after the commit point: delivered in the new task */
    ts_count = 0;
    __asm__ volatile("movl $to_main, ts_resume\n\t"
                     "ljmp $0x68, $0" ::: "memory", "cc");
    /* (not printed: the EIP of that frame.  The SDM has the new task's first instruction;
     * QEMU 7.2 restores the JMP's own EIP when it raises the exception) */
    kprintf("jmp bad ds: #TS count %u err %x tr %x busy main %x; back: tr %x busy e %x\n",
            ts_count, ts_err, ts_tr, ts_type_main, str(), desc_type(SEL_TSS_E));
    kprintf("cr0.ts %u\n", (read_cr0() >> 3) & 1);
    clts();
    puts("done\n");
    return 0;
}
