/* kernelisms: what ordinary kernels do that a monitor must not notice.
 *
 * - Reads through CS (SDM Vol. 3 §5.5: a readable code segment may be read
 *   with a CS override; a write through CS, a read of an execute-only
 *   segment or beyond the limit is #GP(0)).
 * - EFLAGS.NT through PUSHF/POPF (Vol. 2 POPF: NT is loaded at any CPL).
 * - The instructions that raise #UD, at their own EIP (Vol. 3 §6.15 int 6).
 * - CR0.TS/EM/MP governing x87, MMX and SSE instructions (Vol. 3 §2.5,
 *   §9.2 table 9-1/9-2, §13.1; Vol. 2 each instruction's exceptions): with
 *   EM or TS set an x87 instruction raises #NM; WAIT raises #NM only with
 *   MP and TS; MMX with EM raises #UD, with TS #NM; SSE with CR4.OSFXSR
 *   clear raises #UD.  (Only cases whose outcome does not depend on an
 *   FPU being present are printed; not EMMS, nor MMX with both EM and TS,
 *   where QEMU raises no exception and #NM instead of the SDM's #UD.)
 * Expected outputs: tests/test_monitor_guests.py, checked on QEMU. */
#include "rt.h"

extern u32 cs_reads(u32 i), cs_limit_read(u32 off), cs_xo_read(void), nt_roundtrip(void);
extern void cs_write(void), probe_call(void (*fn)(void));
extern char cs_write_insn[], cs_limit_insn[], cs_xo_insn[], user_fnop[], user_fnop_insn[];
extern void (*const ud_table[])(void);
extern void (*const fpu_table[])(void);
extern void rt_ring_return(void) __attribute__((noreturn));

static const char *const ud_names[] = {
    "ud2", "ud1", "ud0", "lock nop", "lock add reg", "mov to cs", "lea reg", "cmpxchg8b reg",
    "far jmp reg",
};
static const char *const fpu_names[] = { "fnop", "fninit", "fwait", "movd mm0", "xorps" };

static void user_fault(struct frame *f)
{
    rt_ring_frame = *f;
    rt_ring_return();
}

/* call fn; an exception in it is recorded and fn is abandoned */
static void probe_at(const char *name, void (*fn)(void), u32 mark)
{
    rt_expect_reset();
    rt_mark = mark;
    probe_call(fn);
    report_exc(name);
}

static void probe(const char *name, void (*fn)(void))
{
    probe_at(name, fn, (u32)fn);
}

#ifdef SEGMENT_CHECKS
static u32 limit_arg;
static void cs_limit_probe(void) { cs_limit_read(limit_arg); }
static void cs_xo_probe(void) { cs_xo_read(); }
#endif

static void fpu_row(const char *what, u32 cr0_bits)
{
    write_cr0((read_cr0() & ~0xeu) | cr0_bits);
    kprintf("%s (cr0 & 0xe = 0x%x):\n", what, read_cr0() & 0xe);
    for (int i = 0; fpu_table[i]; i++) {
        kprintf("  ");
        probe(fpu_names[i], fpu_table[i]);
    }
}

/* FSTENV's last-instruction pointer (SDM Vol. 1 §8.1.8, figure 8-9): the address of
 * the last non-control x87 instruction and the CS it ran in */
static void fip_check(void)
{
    u32 env[7], at;
    u16 cs;
    __asm__ volatile("fninit\n\t"
                     "movl $fip%=, %1\n"
                     "fip%=:\tfld1\n\t"
                     "fnstenv %0\n\t"
                     "fstp %%st(0)" : "=m"(env), "=r"(at) :: "memory");
    __asm__ volatile("mov %%cs, %0" : "=r"(cs));
    kprintf("fnstenv after fld1: fip=+%u fcs=%s\n", env[3] - at,
            (u16)env[4] == cs ? "cs" : "not cs");
}

int main(void)
{
    kprintf("kernelisms: start\n");

    u32 h = 0;
    for (u32 i = 0; i < 8; i++)
        h = h * 31 + cs_reads(i);
    kprintf("cs reads: 0x%08x 0x%08x hash=0x%08x\n", cs_reads(0), cs_reads(5), h);
#ifdef SEGMENT_CHECKS
    /* QEMU does not check data accesses against segment types and limits
     * (tests/test_hw_guests.py, QEMU_DEVIATIONS): this part is checked
     * against the SDM only */
    probe("cs write", cs_write);
    gdt_set(8, 0, 0x3ff, ACC_CODE | ACC_DPL(0), FLG_4K32);       /* 0x40: limit 4 MiB - 1 */
    gdt_set(9, 0, 0xfffff, 0x99, FLG_4K32);                       /* 0x48: execute-only */
    kprintf("cs limit read below: 0x%08x\n", cs_limit_read(0x100000));
    limit_arg = 0x3ffffe;
    probe_at("cs limit read across the limit", cs_limit_probe, (u32)cs_limit_insn);
    probe_at("cs read, execute-only segment", cs_xo_probe, (u32)cs_xo_insn);
#endif

    kprintf("nt through pushf/popf: 0x%x\n", nt_roundtrip());

    for (int i = 0; ud_table[i]; i++)
        probe(ud_names[i], ud_table[i]);

    fpu_row("TS", 0x8);
    fpu_row("EM", 0x4);
    fpu_row("MP TS", 0xa);
    write_cr0(read_cr0() | 0xe);
    __asm__ volatile("clts");
    kprintf("after clts: cr0 & 0xe = 0x%x\n", read_cr0() & 0xe);
    u16 msw = 0x8 | 0x1;
    __asm__ volatile("lmsw %0" :: "r"(msw));
    kprintf("after lmsw: cr0 & 0xe = 0x%x\n", read_cr0() & 0xe);
    probe("fnop after lmsw", fpu_table[0]);
    rt_isr[7] = user_fault;
    rt_run_user((void (*)(void))user_fnop);
    rt_isr[7] = 0;
    kprintf("user fnop with TS: #%u eip=+%u\n", rt_ring_frame.vector,
            rt_ring_frame.eip - (u32)user_fnop_insn);
    write_cr0(read_cr0() & ~0xeu);
    fip_check();

    kprintf("kernelisms: done\n");
    return 0;
}
