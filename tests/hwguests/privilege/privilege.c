/* privilege: ring transitions through iret, interrupt/trap gates and call
 * gates; stack switching from the TSS; segment nulling on return to an
 * outer ring; privilege checks on INT n and far calls.  Expected values and
 * their justification are in tests/test_hw_guests.py. */
#include "rt.h"

#define SEL_GATE3   0x40   /* call gate, DPL 3 -> 0x08:cg_target, 2 params */
#define SEL_GATE1   0x48   /* call gate, DPL 3 -> 0x30:cg1_target */
#define SEL_GATE0   0x50   /* call gate, DPL 0 -> 0x08:cg_target */
#define SEL_CONF    0x58   /* conforming readable code, DPL 0 */

extern void u_int80(void), u_int81(void), u_callgate(void), u_callgate1(void);
extern void u_int31(void), u_int3(void), u_into(void);
extern void u_call_dpl0_gate(void), u_call_code0(void);
extern void cg_target(void), cg1_target(void);
extern char u_int80_insn[], u_callgate_ret[];
extern u32 cg_esp, cg_stack[8], cg_cs, cg_ss, cg_user_esp_after, cg_user_es_after;

/* ---- segment registers after iret to ring 3 ---- */

static volatile u32 seen[6];

static void u_read_segs(void)
{
    seen[0] = read_ds();
    seen[1] = read_es();
    seen[2] = read_fs();
    seen[3] = read_gs();
    seen[4] = read_cs();
    seen[5] = read_ss();
}

static void seg_trip(const char *name, u16 ds, u16 es, u16 fs, u16 gs)
{
    rt_ring_segs[0] = ds;
    rt_ring_segs[1] = es;
    rt_ring_segs[2] = fs;
    rt_ring_segs[3] = gs;
    rt_ring_segs_on = 1;
    rt_run_user(u_read_segs);
    kprintf("%s: ds=0x%x es=0x%x fs=0x%x gs=0x%x -> ring 3 ds=0x%x es=0x%x fs=0x%x gs=0x%x cs=0x%x ss=0x%x\n",
            name, ds, es, fs, gs, seen[0], seen[1], seen[2], seen[3], seen[4], seen[5]);
}

/* ---- interrupt gates ---- */

static struct { u32 n, esp0, eip, cs, eflags, esp, ss, hcs, hss, hflags; } ih;

static void int_handler(struct frame *f)
{
    ih.n++;
    ih.esp0 = (u32)&f->eip;          /* ESP when the handler was entered (no error code) */
    ih.eip = f->eip;
    ih.cs = f->cs & 0xffff;
    ih.eflags = f->eflags;
    ih.esp = f->esp3;
    ih.ss = f->ss3 & 0xffff;
    ih.hcs = read_cs();
    ih.hss = read_ss();
    ih.hflags = read_eflags();
}

static void print_int(const char *name)
{
    kprintf("%s: count=%u ring0 esp=0x%x handler cs=0x%x ss=0x%x IF=%u; frame eip=+%u cs=0x%x eflags=0x%x esp=0x%x ss=0x%x\n",
            name, ih.n, ih.esp0, ih.hcs, ih.hss, (ih.hflags >> 9) & 1,
            ih.eip - (u32)u_int80_insn, ih.cs, ih.eflags, ih.esp, ih.ss);
}

int main(void)
{
    kprintf("privilege: start\n");
    gdt_set_gate(SEL_GATE3 >> 3, SEL_CODE0, (u32)cg_target, 0xec, 2);
    gdt_set_gate(SEL_GATE1 >> 3, SEL_CODE1 & ~3, (u32)cg1_target, 0xec, 0);
    gdt_set_gate(SEL_GATE0 >> 3, SEL_CODE0, (u32)cg_target, 0x8c, 0);
    gdt_set(SEL_CONF >> 3, 0, 0xfffff, 0x9f, FLG_4K32);
    idt_set_default(0x80, 0xee);     /* interrupt gate, DPL 3 */
    idt_set_default(0x81, 0xef);     /* trap gate, DPL 3 */
    rt_isr[0x80] = int_handler;
    rt_isr[0x81] = int_handler;

    kprintf("TSS ss0:esp0=0x%x:0x%x ss1:esp1=0x%x:0x%x\n", TSS->ss0, TSS->esp0, TSS->ss1, TSS->esp1);

    seg_trip("iret to ring 3", SEL_DATA3, SEL_DATA0, SEL_CODE0, SEL_DATA3 & ~3);
    seg_trip("iret to ring 3", SEL_DATA3, SEL_CONF, SEL_DATA1, SEL_DATA0);

    /* int 0x80 from ring 3 (EFLAGS IF=1 via the iret) */
    rt_run_ring(u_int80, SEL_CODE3, SEL_DATA3, USER_STACK_TOP, 0x202);
    print_int("int 0x80 (interrupt gate) from ring 3");

    ih.n = 0;
    rt_run_ring(u_int81, SEL_CODE3, SEL_DATA3, USER_STACK_TOP, 0x202);
    kprintf("int 0x81 (trap gate) from ring 3: count=%u handler IF=%u frame eflags=0x%x\n",
            ih.n, (ih.hflags >> 9) & 1, ih.eflags);

    /* int 0x80 from ring 1 */
    ih.n = 0;
    rt_run_ring(u_int80, SEL_CODE1, SEL_DATA1, 0x0029f000, 0x202);
    print_int("int 0x80 (interrupt gate) from ring 1");

    /* call gate with 2 parameters, ring 3 -> ring 0 */
    rt_run_ring(u_callgate, SEL_CODE3, SEL_DATA3, USER_STACK_TOP, 0x2);
    kprintf("call gate ring 3 -> 0: cs=0x%x ss=0x%x esp=0x%x stack: eip=+%u cs=0x%x params=0x%x,0x%x esp=0x%x ss=0x%x\n",
            cg_cs & 0xffff, cg_ss & 0xffff, cg_esp, cg_stack[0] - (u32)u_callgate_ret,
            cg_stack[1] & 0xffff, cg_stack[2], cg_stack[3], cg_stack[4], cg_stack[5] & 0xffff);
    kprintf("lret 8 to ring 3: esp=0x%x es=0x%x\n", cg_user_esp_after, cg_user_es_after & 0xffff);

    /* call gate ring 3 -> ring 1, stack from SS1:ESP1 */
    memset(cg_stack, 0, sizeof cg_stack);
    rt_run_ring(u_callgate1, SEL_CODE3, SEL_DATA3, USER_STACK_TOP, 0x2);
    kprintf("call gate ring 3 -> 1: cs=0x%x ss=0x%x esp=0x%x stack: cs=0x%x esp=0x%x ss=0x%x\n",
            cg_cs & 0xffff, cg_ss & 0xffff, cg_esp, cg_stack[1] & 0xffff, cg_stack[2],
            cg_stack[3] & 0xffff);

    /* privilege violations */
    rt_expect_reset();
    rt_run_user(u_int31);
    report_exc("ring 3 int 0x31 (DPL 0 gate)");
    rt_expect_reset();
    rt_run_user(u_int3);
    report_exc("ring 3 int3 (DPL 0 gate)");
    rt_expect_reset();
    rt_run_user(u_into);
    report_exc("ring 3 into OF=1 (DPL 0 gate)");
    rt_expect_reset();
    rt_run_user(u_call_dpl0_gate);
    report_exc("ring 3 lcall DPL 0 call gate");
    rt_expect_reset();
    rt_run_user(u_call_code0);
    report_exc("ring 3 lcall ring 0 code segment");
    kprintf("exception frame from ring 3: cs=0x%x ss=0x%x esp=0x%x\n",
            rt_exc.cs, rt_exc.ss3, rt_exc.esp3);

    kprintf("privilege: done\n");
    return 0;
}
