/* movss: debug traps held by MOV SS and POP SS, ICEBP, and I/O breakpoints
 * on REP INS/OUTS.
 *
 * SDM Vol. 3 §6.8.3: after MOV SS or POP SS the processor holds interrupts,
 * debug exceptions and the single-step trap until the boundary after the
 * next instruction; a data breakpoint the load itself hit (on the selector,
 * or for POP SS on the stack slot) is reported by one #DB after that next
 * instruction, with the next instruction's own data breakpoints (DR6 B0-B3
 * both), its saved EIP the instruction after.  What the hardware does with
 * the held trap when the next instruction is not an ordinary one (Linux's
 * tools/testing/selftests/x86/mov_ss_trap.c, kvm-unit-tests' x86/debug.c,
 * both written against the hardware): a fault drops it (the fault alone is
 * delivered); INT n and INT3 enter their handler and then deliver the #DB
 * (its EIP the handler's first instruction); ICEBP's own #DB is the only one
 * (DR6 carrying the held B0-B3); with TF set, ICEBP's #DB (no BS) comes first
 * and the single steps go on after it.  §17.3.1.2: a REP INS or OUTS whose
 * port an I/O breakpoint (R/W = 10, CR4.DE) covers traps after an iteration,
 * EIP at the instruction while iterations remain. */
#include "rt.h"

extern u32 movss_next(volatile u16 *), popss_next(volatile u32 *);
extern void movss_store(volatile u16 *, volatile u32 *), movss_ud(volatile u16 *),
    movss_icebp(volatile u16 *), movss_out(volatile u16 *), movss_int(volatile u16 *), movss_int3(volatile u16 *),
    tf_movss_icebp(void), rep_outsb(const u8 *, u32, u16), rep_insb(u8 *, u32, u16);
extern char movss_next_after[], popss_next_after[], movss_store_after[], movss_ud_insn[],
    movss_ud_resume[], movss_out_after[], movss_icebp_after[], movss_int_after[], movss_int3_after[],
    tf_icebp_after[], rep_outsb_insn[], rep_insb_insn[];

#define MAXDB 8
static volatile u32 ndb, db_eip[MAXDB], db_dr6[MAXDB];
static volatile u32 nint, int_eip, nbp, bp_eip;

static u32 rd_dr6(void) { u32 v; __asm__ volatile("mov %%dr6, %0" : "=r"(v)); return v; }
static void wr_dr6(u32 v) { __asm__ volatile("mov %0, %%dr6" :: "r"(v)); }
static void wr_dr7(u32 v) { __asm__ volatile("mov %0, %%dr7" :: "r"(v)); }

static void on_db(struct frame *f)
{
    if (ndb < MAXDB) {
        db_eip[ndb] = f->eip;
        db_dr6[ndb] = rd_dr6();
    }
    ndb++;
    wr_dr6(0);
}

static void on_int81(struct frame *f) { nint++; int_eip = f->eip; }
static void on_bp(struct frame *f) { nbp++; bp_eip = f->eip; }

static u32 gate_offset(int v)
{
    volatile u16 *g = (volatile u16 *)(IDT_ADDR + 8 * v);
    return g[0] | (u32)g[3] << 16;
}

static void show(const char *name, u32 mark)
{
    kprintf("%s: count=%u", name, ndb);
    for (u32 i = 0; i < ndb && i < MAXDB; i++) {
        s32 d = (s32)(db_eip[i] - mark);
        kprintf(" [eip=%s%d dr6=0x%08x]", d >= 0 ? "+" : "", d, db_dr6[i]);
    }
    putch('\n');
    ndb = 0;
}

static volatile u16 sel;               /* the selector MOV SS loads (DR0) */
static volatile u32 slot[4];           /* POP SS's stack */
static volatile u32 other;             /* the next instruction's store (DR1) */

/* DR0: read/write, 2 bytes, on sel (or 4 bytes on addr); DR1 a write one on other */
static void arm(u32 addr, u32 len, int second)
{
    __asm__ volatile("mov %0, %%dr0; mov %1, %%dr1; mov %2, %%dr2; mov %2, %%dr3"
                     :: "r"(addr), "r"(&other), "r"(0x00fff000u));
    ndb = 0;
    wr_dr6(0);
    wr_dr7(1u | (3u << 16) | (len << 18) | (second ? (1u << 2) | (1u << 20) | (3u << 22) : 0));
}

int main(void)
{
    kprintf("movss: start\n");
    rt_isr[1] = on_db;
    rt_isr[3] = on_bp;
    rt_isr[0x81] = on_int81;
    sel = read_ss();
    u32 io_only = 0;
    rt_arg("io", &io_only);            /* io=1: the I/O breakpoints only (QEMU: see below) */
    if (io_only)
        goto io;

    arm((u32)&sel, 1, 0);
    u32 r = movss_next(&sel);
    wr_dr7(0);
    kprintf("result %u; ", r);
    show("mov ss, inc", (u32)movss_next_after);

    slot[1] = read_ss();
    arm((u32)&slot[1], 3, 0);
    r = popss_next(&slot[1]);
    wr_dr7(0);
    kprintf("result %u; ", r);
    show("pop ss, mov esp", (u32)popss_next_after);

    /* an instruction breakpoint (DR1) on the instruction after MOV SS: not taken
     * (SDM Vol. 3 §17.3.1.1), the held trap alone after it */
    arm((u32)&sel, 1, 0);
    __asm__ volatile("mov %0, %%dr1" :: "r"(movss_next_after - 1));
    wr_dr7(1u | (3u << 16) | (1u << 18) | (1u << 2));
    r = movss_next(&sel);
    wr_dr7(0);
    kprintf("result %u; ", r);
    show("mov ss, exec breakpoint on the next", (u32)movss_next_after);

    arm((u32)&sel, 1, 1);
    movss_store(&sel, &other);
    wr_dr7(0);
    show("mov ss, a watched store", (u32)movss_store_after);

    arm((u32)&sel, 1, 0);
    rt_expect_reset();
    rt_resume = (u32)movss_ud_resume;
    rt_mark = (u32)movss_ud_insn;
    movss_ud(&sel);
    wr_dr7(0);
    report_exc("mov ss, ud2");
    show("mov ss, ud2", 0);

    arm((u32)&sel, 1, 0);
    movss_out(&sel);
    wr_dr7(0);
    show("mov ss, out", (u32)movss_out_after);

    arm((u32)&sel, 1, 0);
    movss_icebp(&sel);
    wr_dr7(0);
    show("mov ss, icebp", (u32)movss_icebp_after);

    arm((u32)&sel, 1, 0);
    nint = 0;
    movss_int(&sel);
    wr_dr7(0);
    kprintf("int 0x81: count=%u eip=+%d; ", nint, (s32)(int_eip - (u32)movss_int_after));
    show("mov ss, int 0x81", gate_offset(0x81));

    arm((u32)&sel, 1, 0);
    nbp = 0;
    movss_int3(&sel);
    wr_dr7(0);
    kprintf("#BP: count=%u eip=+%d; ", nbp, (s32)(bp_eip - (u32)movss_int3_after));
    show("mov ss, int3", gate_offset(3));

    ndb = 0;
    wr_dr6(0);
    tf_movss_icebp();
    show("tf, mov ss, icebp", (u32)tf_icebp_after);

    /* I/O breakpoints: DR2 on port 0x80, 1 byte, R/W = 10 under CR4.DE */
io:;
    static u8 buf[4] = {1, 2, 3, 4};
    write_cr4(read_cr4() | 8);
    __asm__ volatile("mov %0, %%dr2" :: "r"(0x80u));
    ndb = 0;
    wr_dr6(0);
    wr_dr7((1u << 4) | (2u << 24));
    rep_outsb(buf, 3, 0x80);
    rep_outsb(buf, 2, 0x84);
    rep_insb(buf, 2, 0x80);
    wr_dr7(0);
    write_cr4(read_cr4() & ~8u);
    show("rep outsb, rep insb, port 0x80", (u32)rep_outsb_insn);
    kprintf("rep insb at +%d\n", (s32)((u32)rep_insb_insn - (u32)rep_outsb_insn));
    kprintf("movss: done\n");
    return 0;
}
