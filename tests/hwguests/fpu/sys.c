/* part=3: how the system sees the FPU: CR0.EM/MP/TS/NE, #NM, #MF, FERR# and IRQ 13,
 * FXSAVE/FXRSTOR, MXCSR checks, CPUID.  Saved EIPs are printed relative to the
 * instruction under test (rt_mark), as the other conformance guests do.
 */
#include "fpu.h"

static volatile u32 count, saved_eip;
static volatile u16 saved_sw;

/* #NM handler for lazy FPU switching: the OS clears TS and the instruction runs again */
static void nm_lazy(struct frame *f)
{
    count++;
    saved_eip = f->eip;
    __asm__ volatile("clts");
}

static void mf_handler(struct frame *f)
{
    count++;
    saved_eip = f->eip;
    saved_sw = fnstsw();
    fnclex();
}

/* IRQ 13 (slave PIC input 5, vector 0x2d): the MS-DOS compatible FPU error path */
static void irq13(struct frame *f)
{
    count++;
    saved_eip = f->eip;
    saved_sw = fnstsw();
    outb(0xf0, 0);                 /* clear the FERR# latch (asserts IGNNE#) */
    fnclex();
    pic_eoi(13);
}

static void set_cr0(u32 set, u32 clear)
{
    write_cr0((read_cr0() | set) & ~clear);
}

static const char *name(u32 v)
{
    return v == 6 ? "#UD" : v == 7 ? "#NM" : v == 13 ? "#GP" : v == 16 ? "#MF" : v == 19 ? "#XM" : "?";
}

/* run one instruction under test (between labels 2: and 1:) and print what it raised */
#define TRY(label, insn, ...)                                                        \
    do {                                                                            \
        rt_expect_reset();                                                          \
        __asm__ volatile(ARM(1f, 2f) "2: " insn "\n1:" :: __VA_ARGS__);             \
        if (rt_exc.count)                                                           \
            kprintf("%s: %s eip=+%u\n", label, name(rt_exc.vector), rt_exc.eip - rt_mark); \
        else                                                                        \
            kprintf("%s: no exception\n", label);                                   \
    } while (0)

static u8 fxarea[512 + 16] __attribute__((aligned(16)));
static const u32 mx_ok = 0x00001f80;

NOINL static void t_availability(void)
{
    /* SDM Vol. 3 Table 2-2 (x87) and Table 12-1 (SSE); MMX follows CR0.EM/TS only */
    static const struct { u32 set, clear; const char *what; } modes[] = {
        { 0, CR0_EM | CR0_TS | CR0_MP, "em=0 mp=0 ts=0" }, { CR0_TS, CR0_EM | CR0_MP, "em=0 mp=0 ts=1" },
        { CR0_MP | CR0_TS, CR0_EM, "em=0 mp=1 ts=1" }, { CR0_EM, CR0_TS | CR0_MP, "em=1 mp=0 ts=0" },
        { CR0_EM | CR0_MP, CR0_TS, "em=1 mp=1 ts=0" }, { CR0_EM | CR0_MP | CR0_TS, 0, "em=1 mp=1 ts=1" },
    };
    for (u32 i = 0; i < sizeof modes / sizeof modes[0]; i++) {
        kprintf("%s\n", modes[i].what);
        set_cr0(modes[i].set, modes[i].clear);
        TRY("  fld1", "fld1");
        TRY("  fwait", "fwait");
        TRY("  fnstsw", "fnstsw %%ax", : "eax");
        /* with both CR0.EM and CR0.TS set the SDM gives #UD (Table 12-1, and #UD before
         * #NM, Vol. 3 §6.9); QEMU checks TS first: not printed, tests/test_fpu_sdm.py has it */
        if ((modes[i].set & (CR0_EM | CR0_TS)) != (CR0_EM | CR0_TS)) {
            TRY("  addps", "addps %%xmm1, %%xmm0");
            TRY("  paddb mm", "paddb %%mm1, %%mm0");
        }
        TRY("  fxsave", "fxsave %0", "m"(fxarea));
        TRY("  ldmxcsr", "ldmxcsr %0", "m"(mx_ok));
        set_cr0(CR0_MP | CR0_NE, CR0_EM | CR0_TS);
        fninit();
    }
    write_cr4(read_cr4() & ~CR4_OSFXSR);
    kprintf("osfxsr=0\n");
    TRY("  addps", "addps %%xmm1, %%xmm0");
    TRY("  ldmxcsr", "ldmxcsr %0", "m"(mx_ok));
    TRY("  paddb mm", "paddb %%mm1, %%mm0");
    __asm__ volatile("emms");
    TRY("  fxsave", "fxsave %0", "m"(fxarea));
    write_cr4(read_cr4() | CR4_OSFXSR);
}

NOINL static void t_lazy_switch(void)
{
    f80 r;
    rt_isr[7] = nm_lazy;
    count = 0;
    fninit();
    set_cr0(CR0_TS, 0);
    __asm__ volatile("movl $2f, rt_mark\n2: fldpi" ::: "memory");
    fstp80(&r);
    rt_isr[7] = 0;
    kprintf("lazy switch: #NM count=%u eip=+%u ts=%u st0=", count, saved_eip - rt_mark,
            (read_cr0() >> 3) & 1);
    put80(&r);
    kprintf("\n");
}

NOINL static void t_mf(void)
{
    static const u16 cw_zm_clear = 0x037b;
    rt_isr[16] = mf_handler;
    count = 0;
    set_cr0(CR0_NE, 0);
    fninit();
    fldcw(cw_zm_clear);
    __asm__ volatile("fld1; fldz; fdivrp %%st, %%st(1)" ::: "memory");   /* 1/0: ZE pending */
    u16 sw = fnstsw();
    __asm__ volatile("movl $2f, rt_mark\n2: fwait" ::: "memory");
    /* TOP not printed: with ZE unmasked the SDM leaves the stack alone (Vol. 1 §8.5.3),
     * QEMU pops it */
    kprintf("#MF: sw before=%04x count=%u eip=+%u sw in handler=%04x sw after=%04x\n",
            sw & 0x87ff, count, saved_eip - rt_mark, saved_sw & 0x87ff, fnstsw() & 0x87ff);
    rt_isr[16] = 0;
    fninit();
}

NOINL static void t_ferr(void)
{
    static const u16 cw_zm_clear = 0x037b;
    rt_isr[0x2d] = irq13;
    count = 0;
    outb(0x21, 0xfb);                  /* master: only the cascade (IRQ 2) */
    outb(0xa1, 0xdf);                  /* slave: only IRQ 13 */
    set_cr0(0, CR0_NE);
    fninit();
    fldcw(cw_zm_clear);
    sti();
    __asm__ volatile("fld1; fldz; fdivrp %%st, %%st(1)" ::: "memory");
    __asm__ volatile("movl $2f, rt_mark\n2: fwait; nop; nop" ::: "memory");
    cli();
    kprintf("FERR# IRQ 13: count=%u eip=+%u sw in handler=%04x sw after=%04x\n", count,
            saved_eip - rt_mark, saved_sw & 0xbfff, fnstsw() & 0xbfff);
    outb(0x21, 0xff);
    outb(0xa1, 0xff);
    rt_isr[0x2d] = 0;
    set_cr0(CR0_NE, 0);
    fninit();
}

NOINL static void t_fxsave(void)
{
    static const u32 x0[4] __attribute__((aligned(16))) = { 0x11111111, 0x22222222, 0x33333333, 0x44444444 };
    u8 *a = fxarea;
    f80 r;
    fninit();
    fldcw(0x027f);
    __asm__ volatile("fldpi; fld1; fldz" ::: "memory");
    ldmxcsr(0x3f80);
    __asm__ volatile("movaps %0, %%xmm0" :: "m"(x0) : "xmm0");
    memset(fxarea, 0xcc, sizeof fxarea);
    __asm__ volatile("fxsave %0" : "=m"(fxarea));
    kprintf("fxsave: fcw=%04x fsw=%04x ftw=%02x mxcsr=%08x mask=%08x\n", *(u16 *)&a[0],
            *(u16 *)&a[2], a[4], *(u32 *)&a[24], *(u32 *)&a[28]);
    kprintf("fxsave: st0=");
    put80((f80 *)&a[32]);
    kprintf(" st1=");
    put80((f80 *)&a[48]);
    kprintf(" xmm0=");
    put128((u32 *)&a[160]);
    kprintf(" untouched=%02x\n", a[464]);
    fninit();
    ldmxcsr(0x1f80);
    __asm__ volatile("pxor %%xmm0, %%xmm0" ::: "xmm0");
    __asm__ volatile("fxrstor %0" :: "m"(fxarea));
    u32 back[4] __attribute__((aligned(16)));
    __asm__ volatile("movaps %%xmm0, %0" : "=m"(back));
    fstp80(&r);
    kprintf("fxrstor: fcw=%04x top=%u mxcsr=%08x st0=", fnstcw(), (fnstsw() >> 11) & 7, stmxcsr());
    put80(&r);
    kprintf(" xmm0=");
    put128(back);
    kprintf("\n");
    ldmxcsr(0x1f80);
    fninit();
    TRY("fxsave misaligned", "fxsave %0", "m"(fxarea[8]));
    /* (LDMXCSR with a reserved bit: #GP(0) by SDM Vol. 2 LDMXCSR, QEMU 7.2 takes it:
     * tests/test_fpu_sdm.py checks it) */
}

NOINL static void t_cpuid(void)
{
    u32 a, b, c, d;
    __asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(1));
    kprintf("cpuid.1: fpu=%u mmx=%u fxsr=%u sse=%u sse2=%u\n", d & 1, (d >> 23) & 1,
            (d >> 24) & 1, (d >> 25) & 1, (d >> 26) & 1);
}

int part_sys(void)
{
    kprintf("fpu sys: start\n");
    t_cpuid();
    t_availability();
    t_lazy_switch();
    t_mf();
    u32 v;
    /* QEMU 7.2 asserts (tcg_handle_interrupt) when FWAIT raises IRQ 13: ferr=1 is run on
     * ringvisor only, by tests/test_fpu_guest.py */
    if (rt_arg("ferr", &v) && v)
        t_ferr();
    t_fxsave();
    kprintf("fpu sys: done\n");
    return 0;
}
