/* Single-stepping (EFLAGS.TF) through REP string instructions and software
 * interrupts.
 *
 * SDM Vol. 3 §17.3.1.4: a single-step #DB is a trap taken after the
 * instruction; for a REP-prefixed string instruction it is taken after each
 * iteration, with EIP still at the instruction while iterations remain (the
 * instruction resumes where it stopped).  INT n, INT3 and an exception clear TF
 * on the way into the handler, so nothing traps inside it; the IRET back
 * restores TF, and the next trap comes after the instruction that follows.
 * Each line lists the traps as (EIP relative to the first stepped instruction,
 * ECX), then DR6.BS of the first trap. */
#include "rt.h"

#define NOINL __attribute__((noinline))
#define MAXT 16

static u32 t_eip[MAXT], t_ecx[MAXT], t_n, t_dr6;
static u32 stop_at;
static u32 int_seen, int_eip;

static void on_db(struct frame *f)
{
    u32 dr6;
    __asm__ volatile("mov %%dr6, %0" : "=r"(dr6));
    if (t_n == 0)
        t_dr6 = dr6;
    if (t_n < MAXT) {
        t_eip[t_n] = f->eip;
        t_ecx[t_n] = f->ecx;
    }
    t_n++;
    __asm__ volatile("mov %0, %%dr6" :: "r"(0));
    if (f->eip == stop_at || t_n >= MAXT)
        f->eflags &= ~EFLAGS_TF;
}

static void on_soft(struct frame *f)
{
    int_seen++;
    int_eip = f->eip;
}

static void reset(u32 stop)
{
    t_n = 0;
    t_dr6 = 0;
    stop_at = stop;
    int_seen = 0;
    __asm__ volatile("mov %0, %%dr6" :: "r"(0));
}

static void report(const char *name, const char *base)
{
    kprintf("%s: traps=%u", name, t_n);
    for (u32 i = 0; i < t_n && i < MAXT; i++) {
        u32 off = t_eip[i] - (u32)base;
        if (off < 0x100)
            kprintf(" +%u/%u", off, t_ecx[i]);
        else
            kprintf(" %s/%u", t_eip[i] == rt_stub_addr(0x41) ? "int-handler" :
                    t_eip[i] == rt_stub_addr(3) ? "bp-handler" :
                    t_eip[i] == rt_stub_addr(6) ? "ud-handler" : "elsewhere", t_ecx[i]);
    }
    kprintf(" bs=%u\n", (t_dr6 >> 14) & 1);
}

static u8 src[64], dst[64];
extern char rm_start[], rm_end[], rz_start[], rz_end[], re_start[], re_end[];
extern char rl_start[], rl_end[], in_start[], in_end[], i3_start[], i3_end[];
extern char ud_start[], ud_end[], rw_start[], rw_end[];

NOINL static void rep_movsb(void)
{
    for (int i = 0; i < 64; i++)
        src[i] = (u8)(i * 7 + 1);
    reset((u32)rm_end);
    __asm__ volatile("pushfl; orl $0x100, (%%esp); popfl\n\t"
                     ".globl rm_start\nrm_start:\n\t"
                     "rep movsb\n\t"            /* 2 bytes, 3 iterations */
                     "nop\n\t"
                     ".globl rm_end\nrm_end:\n\t"
                     :: "S"(src), "D"(dst), "c"(3) : "memory", "cc");
    report("rep movsb ecx=3", rm_start);
    kprintf("copied: %02x %02x %02x %02x\n", dst[0], dst[1], dst[2], dst[3]);
}

NOINL static void rep_stosd_zero(void)
{
    reset((u32)rz_end);
    __asm__ volatile("pushfl; orl $0x100, (%%esp); popfl\n\t"
                     ".globl rz_start\nrz_start:\n\t"
                     "rep stosl\n\t"            /* ECX = 0: no iteration, one trap */
                     "nop\n\t"
                     ".globl rz_end\nrz_end:\n\t"
                     :: "D"(dst), "c"(0), "a"(0x55aa55aa) : "memory", "cc");
    report("rep stosd ecx=0", rz_start);
}

NOINL static void repe_cmpsb(void)
{
    for (int i = 0; i < 8; i++)
        src[i] = dst[i] = (u8)i;
    dst[2] = 0xff;                              /* third byte differs */
    reset((u32)re_end);
    u32 zf;
    __asm__ volatile("pushfl; orl $0x100, (%%esp); popfl\n\t"
                     ".globl re_start\nre_start:\n\t"
                     "repe cmpsb\n\t"           /* stops after the third compare */
                     "setz %%al\n\t"
                     ".globl re_end\nre_end:\n\t"
                     : "=a"(zf) : "S"(src), "D"(dst), "c"(6), "a"(0) : "memory", "cc");
    report("repe cmpsb ecx=6", re_start);
    kprintf("zf after: %u\n", zf & 1);
}

NOINL static void rep_lodsw_a16(void)
{
    /* 16-bit addressing: the count is CX (ECX's upper half stays) and the
     * source DS:SI, in a buffer of our own below 64 KiB */
    volatile u8 *low = (volatile u8 *)0x7000;
    for (int i = 0; i < 8; i++)
        low[i] = (u8)(0x10 + i);
    u32 ax;
    reset((u32)rl_end);
    __asm__ volatile("pushfl; orl $0x100, (%%esp); popfl\n\t"
                     ".globl rl_start\nrl_start:\n\t"
                     "addr16 rep lodsw\n\t"     /* 3 bytes */
                     "nop\n\t"
                     ".globl rl_end\nrl_end:\n\t"
                     : "=a"(ax) : "S"(0x7000), "c"(0x70002), "a"(0) : "memory", "cc");
    report("rep lodsw a16 cx=2", rl_start);
    kprintf("ax=%04x\n", ax & 0xffff);
}

NOINL static void int_n(void)
{
    rt_isr[0x41] = on_soft;
    idt_set_default(0x41, 0x8e);
    reset((u32)in_end);
    __asm__ volatile("pushfl; orl $0x100, (%%esp); popfl\n\t"
                     ".globl in_start\nin_start:\n\t"
                     "nop\n\t"                  /* 1 byte */
                     "int $0x41\n\t"            /* 2 bytes: the handler runs with TF=0 */
                     "nop\n\t"
                     "nop\n\t"
                     ".globl in_end\nin_end:\n\t"
                     ::: "memory", "cc");
    report("int 0x41", in_start);
    kprintf("handler ran: %u, returned to +%u\n", int_seen, int_eip - (u32)in_start);
}

NOINL static void int3(void)
{
    rt_isr[3] = on_soft;
    reset((u32)i3_end);
    __asm__ volatile("pushfl; orl $0x100, (%%esp); popfl\n\t"
                     ".globl i3_start\ni3_start:\n\t"
                     "int3\n\t"                 /* 1 byte */
                     "nop\n\t"
                     ".globl i3_end\ni3_end:\n\t"
                     ::: "memory", "cc");
    rt_isr[3] = 0;
    report("int3", i3_start);
    kprintf("handler ran: %u, returned to +%u\n", int_seen, int_eip - (u32)i3_start);
}

static void on_ud(struct frame *f)
{
    int_seen++;
    int_eip = f->eip;
    f->eip += 2;                                /* skip the ud2 */
}

NOINL static void fault(void)
{
    rt_isr[6] = on_ud;
    reset((u32)ud_end);
    __asm__ volatile("pushfl; orl $0x100, (%%esp); popfl\n\t"
                     ".globl ud_start\nud_start:\n\t"
                     "ud2\n\t"                  /* a fault: no trap for it */
                     "nop\n\t"
                     ".globl ud_end\nud_end:\n\t"
                     ::: "memory", "cc");
    rt_isr[6] = 0;
    report("ud2", ud_start);
    kprintf("handler ran: %u at +%u\n", int_seen, int_eip - (u32)ud_start);
}

NOINL static void rep_with_watchpoint(void)
{
    /* a data breakpoint on dst[1] (DR0, write, 1 byte) with TF clear: the
     * trap comes after the iteration that wrote it (SDM §17.3.1.2), EIP at
     * the REP instruction with ECX counting what remains */
    reset(0);
    rt_isr[1] = on_db;
    __asm__ volatile("mov %0, %%dr0" :: "r"(&dst[1]));
    __asm__ volatile("mov %0, %%dr7" :: "r"(0x10001));   /* L0, R/W0 = 01, LEN0 = 00 */
    __asm__ volatile(".globl rw_start\nrw_start:\n\t"
                     "rep movsb\n\t"
                     ".globl rw_end\nrw_end:\n\t"
                     :: "S"(src), "D"(dst), "c"(4) : "memory", "cc");
    __asm__ volatile("mov %0, %%dr7" :: "r"(0));
    kprintf("rep movsb watchpoint: traps=%u", t_n);
    for (u32 i = 0; i < t_n && i < MAXT; i++)
        kprintf(" +%u/%u", t_eip[i] - (u32)rw_start, t_ecx[i]);
    kprintf(" b0=%u\n", t_dr6 & 1);
}

int main(void)
{
    kprintf("tfstep: start\n");
    rt_isr[1] = on_db;
    rep_movsb();
    rep_stosd_zero();
    repe_cmpsb();
    rep_lodsw_a16();
    int_n();
    int3();
    fault();
    rep_with_watchpoint();
    rt_isr[1] = 0;
    kprintf("tfstep: done\n");
    return 0;
}
