/* debugreg: a kernel's own breakpoints in the debug registers, CR4.DE and
 * CR4.TSD.
 *
 * SDM Vol. 3 §17.2.4-17.2.6 and §17.3.1: DR7.Ln enables DRn; R/W 00 is an
 * instruction breakpoint (a fault, before the instruction; the handler
 * sets EFLAGS.RF in the frame to run the instruction once without the
 * breakpoint), 01 a data write breakpoint and 11 a data read/write one
 * (traps, after the instruction, saved EIP = the next one), for LEN+1
 * bytes (LEN 11 = 4), aligned.  DR6.Bn says which; the processor never
 * clears DR6, the handler does (writing 0 reads back as 0xffff0ff0, the
 * reserved bits set; DR7 reads back with bit 10 set).  §17.2.2: with
 * CR4.DE clear DR4/DR5 are DR6/DR7, with it set they raise #UD.  Vol. 2
 * RDTSC: with CR4.TSD set RDTSC at CPL > 0 raises #GP(0). */
#include "rt.h"

extern u32 bp_loop(u32 n), bp_callout(void), read_word(volatile u16 *p);
extern void write_loop(volatile u32 *p, u32 n), store_ss(volatile u16 *p);
extern void reload_gdt(const void *desc);
extern char bp_insn[], bp_cli[], bp_movcr[], write_insn[], read_insn[], store_ss_insn[],
    lgdt_insn[], user_bp_code[], user_bp[], user_rdtsc_code[], user_rdtsc[];

#define MAXDB 16
static volatile u32 ndb, db_eip[MAXDB], db_dr6[MAXDB], db_cs[MAXDB];
static volatile int db_resume;          /* 1: set RF and keep the breakpoint; 0: disarm DR7 */

static u32 rd_dr6(void) { u32 v; __asm__ volatile("mov %%dr6, %0" : "=r"(v)); return v; }
static u32 rd_dr7(void) { u32 v; __asm__ volatile("mov %%dr7, %0" : "=r"(v)); return v; }
static void wr_dr6(u32 v) { __asm__ volatile("mov %0, %%dr6" :: "r"(v)); }
static void wr_dr7(u32 v) { __asm__ volatile("mov %0, %%dr7" :: "r"(v)); }

static void on_db(struct frame *f)
{
    if (ndb < MAXDB) {
        db_eip[ndb] = f->eip;
        db_dr6[ndb] = rd_dr6();
        db_cs[ndb] = f->cs & 0xffff;
    }
    ndb++;
    wr_dr6(0);
    if (db_resume)
        f->eflags |= EFLAGS_RF;
    else
        wr_dr7(0);
}

static void show(const char *name, u32 mark)
{
    kprintf("%s: count=%u", name, ndb);
    for (u32 i = 0; i < ndb && i < 4; i++) {
        s32 d = (s32)(db_eip[i] - mark);
        if (mark)
            kprintf(" [eip=%s%d", d >= 0 ? "+" : "", d);
        else
            kprintf(" [");
        /* user mode is RPL 3, as Linux's user_mode() tests it (under trapemu the
         * kernel's frames show RPL 1: ring compression, docs/virtualization.md) */
        kprintf(" dr6=0x%08x%s]", db_dr6[i], (db_cs[i] & 3) == 3 ? " user" : "");
    }
    putch('\n');
    ndb = 0;
}

static void arm(int n, u32 addr, u32 rw, u32 len, int resume)
{
    /* B0-B3 may report a match of a disabled breakpoint too (SDM Vol. 3
     * §17.2.3): keep the others away from anything the guest touches */
    __asm__ volatile("mov %0, %%dr0; mov %0, %%dr1; mov %0, %%dr2; mov %0, %%dr3"
                     :: "r"(0x00fff000u));
    switch (n) {
    case 0: __asm__ volatile("mov %0, %%dr0" :: "r"(addr)); break;
    case 1: __asm__ volatile("mov %0, %%dr1" :: "r"(addr)); break;
    case 2: __asm__ volatile("mov %0, %%dr2" :: "r"(addr)); break;
    default: __asm__ volatile("mov %0, %%dr3" :: "r"(addr)); break;
    }
    db_resume = resume;
    ndb = 0;
    wr_dr6(0);
    wr_dr7((1u << (2 * n)) | (rw << (16 + 4 * n)) | (len << (18 + 4 * n)));
}

extern void rt_ring_return(void) __attribute__((noreturn));

/* a fault in user code ends rt_run_user, with the fault's frame */
static void user_fault(struct frame *f)
{
    rt_ring_frame = *f;
    rt_ring_return();
}

static volatile u32 watched[4];
static volatile u16 halfs[4];
static struct __attribute__((packed)) { u16 limit; u32 base; } gdt_desc = { GDT_LIMIT, GDT_ADDR };

int main(void)
{
    kprintf("debugreg: start\n");
    rt_isr[1] = on_db;
    wr_dr6(0);
    wr_dr7(0);
    kprintf("dr6=0x%08x dr7=0x%08x\n", rd_dr6(), rd_dr7());

    /* an instruction breakpoint in a loop: the handler sets RF, so it
     * fires once per iteration */
    for (int round = 0; round < 2; round++) {
        arm(0, (u32)bp_insn, 0, 0, 1);
        u32 r = bp_loop(5);
        wr_dr7(0);
        kprintf("result %u; ", r);
        show("exec bp in a loop, RF", (u32)bp_insn);
    }
    arm(1, (u32)bp_insn, 0, 0, 0);
    u32 r = bp_loop(5);
    kprintf("result %u; ", r);
    show("exec bp, disarmed by the handler", (u32)bp_insn);
    arm(2, (u32)bp_cli, 0, 0, 1);
    r = bp_callout();
    wr_dr7(0);
    kprintf("result %u; ", r);
    show("exec bp on cli", (u32)bp_cli);
    arm(3, (u32)bp_movcr, 0, 0, 1);
    r = bp_callout();
    wr_dr7(0);
    kprintf("result %u; ", r);
    show("exec bp on mov from cr0", (u32)bp_movcr);

    /* data breakpoints */
    arm(1, (u32)&watched[1], 1, 3, 1);
    write_loop(&watched[1], 3);
    write_loop(&watched[2], 2);
    wr_dr7(0);
    show("write watchpoint, 4 bytes", (u32)write_insn);
    arm(3, (u32)&halfs[1] + 1, 1, 0, 1);
    write_loop((volatile u32 *)&halfs[2], 1);
    halfs[1] = 7;
    __asm__ volatile("" ::: "memory");
    u8 *b = (u8 *)&halfs[1];
    b[1] = 9;
    wr_dr7(0);
    kprintf("halfs[1]=0x%x; ", halfs[1]);
    show("write watchpoint, 1 byte", 0);
    arm(2, (u32)&halfs[2], 3, 1, 1);
    u32 w = read_word(&halfs[2]) + read_word(&halfs[3]);
    wr_dr7(0);
    kprintf("read %u; ", w);
    show("read/write watchpoint on a read", (u32)read_insn);
    arm(0, (u32)&halfs[0], 1, 1, 1);
    store_ss(&halfs[0]);
    wr_dr7(0);
    show("write watchpoint on mov %ss, mem", (u32)store_ss_insn);
    arm(1, (u32)&gdt_desc, 3, 3, 1);
    reload_gdt(&gdt_desc);
    wr_dr7(0);
    show("read/write watchpoint on lgdt", (u32)lgdt_insn);

    /* breakpoints in user code */
    arm(0, (u32)user_bp, 0, 0, 1);
    rt_run_user((void (*)(void))user_bp_code);
    wr_dr7(0);
    kprintf("user eax=%u; ", rt_ring_frame.eax);
    show("exec bp in user code", (u32)user_bp);
    arm(2, (u32)&watched[3], 1, 3, 1);
    rt_run_user((void (*)(void))user_bp_code);   /* no access: no #DB */
    wr_dr7(0);
    show("write watchpoint, untouched", 0);

    /* CR4.DE: DR4/DR5 alias DR6/DR7, or #UD */
    wr_dr7(0x00330000);
    wr_dr6(0x1);
    u32 d4, d5;
    __asm__ volatile("mov %%dr4, %0; mov %%dr5, %1" : "=r"(d4), "=r"(d5));
    kprintf("CR4.DE=0: dr4=0x%08x dr5=0x%08x\n", d4, d5);
    wr_dr7(0);
    wr_dr6(0);
    write_cr4(read_cr4() | 0x8);
    rt_expect_reset();
    __asm__ volatile(ARM(1f, 0f) "0: mov %%dr4, %%eax\n1:" ::: "eax", "memory");
    report_exc("CR4.DE=1 mov from dr4");
    rt_expect_reset();
    __asm__ volatile(ARM(1f, 0f) "0: mov %%eax, %%dr5\n1:" ::: "memory");
    report_exc("CR4.DE=1 mov to dr5");
    rt_expect_reset();
    __asm__ volatile(ARM(1f, 0f) "0: mov %%dr6, %%eax\n1:" ::: "eax", "memory");
    report_exc("CR4.DE=1 mov from dr6");
    write_cr4(read_cr4() & ~0x8u);

    /* CR4.TSD */
    rt_run_user((void (*)(void))user_rdtsc_code);
    kprintf("CR4.TSD=0 user rdtsc: frame eip=+%u\n", rt_ring_frame.eip - (u32)user_rdtsc);
    write_cr4(read_cr4() | 0x4);
    rt_isr[13] = user_fault;
    rt_run_user((void (*)(void))user_rdtsc_code);
    rt_isr[13] = 0;
    kprintf("CR4.TSD=1 user rdtsc: #%u err=0x%x eip=+%u\n", rt_ring_frame.vector,
            rt_ring_frame.err, rt_ring_frame.eip - (u32)user_rdtsc);
    u32 lo, hi;
    __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
    kprintf("CR4.TSD=1 kernel rdtsc: no fault\n");
    write_cr4(read_cr4() & ~0x4u);

    kprintf("debugreg: done\n");
    return 0;
}
