/* part=1: x87 instructions, each line one instruction's results printed raw.
 *
 * Status words are printed without C1 after arithmetic (the SDM's round-up bit, which
 * QEMU does not implement) and without TOP where it does not matter; the values are
 * 80-bit "sign+exponent:significand".  Transcendentals QEMU computes in double precision
 * (FSIN FCOS FSINCOS FPTAN) are printed to 40 significand bits, the others to 62.
 */
#include "fpu.h"

/* The exception flags, SF, ES and B; not C1 (the SDM's round-up bit after arithmetic,
 * which QEMU does not implement), not DE (QEMU raises no denormal-operand exception on
 * the x87), not C0 C2 C3 (undefined after most instructions) and not TOP. */
#define SW_NOC1(sw) ((sw) & 0x80fd)

static const f80 ONE = { 0x8000000000000000ull, 0x3fff };

static f80 from_double(double d)
{
    f80 r;
    __asm__ volatile("fldl %1; fstpt %0" : "=m"(r) : "m"(d) : "memory");
    return r;
}

/* one binary operation ST(0) = ST(0) op ST(1) with the given control word */
static void binop(const char *name, const char *insn_desc, void (*op)(void), const f80 *a, const f80 *b,
                  u16 cw)
{
    f80 r;
    fninit();
    fldcw(cw);
    fld80(b);
    fld80(a);
    op();
    u16 sw = fnstsw();
    fstp80(&r);
    fninit();
    kprintf("%s %s cw=%04x: ", name, insn_desc, cw);
    put80(&r);
    kprintf(" sw=%04x\n", SW_NOC1(sw));
}

static void op_fadd(void) { __asm__ volatile("fadd %st(1), %st"); }
static void op_fsub(void) { __asm__ volatile("fsub %st(1), %st"); }
static void op_fmul(void) { __asm__ volatile("fmul %st(1), %st"); }
static void op_fdiv(void) { __asm__ volatile("fdiv %st(1), %st"); }
static void op_fsqrt(void) { __asm__ volatile("fsqrt"); }
static void op_frndint(void) { __asm__ volatile("frndint"); }
static void op_fscale(void) { __asm__ volatile("fscale"); }
static void op_fprem(void) { __asm__ volatile("fprem"); }
static void op_fprem1(void) { __asm__ volatile("fprem1"); }

NOINL static void t_arith(void)
{
    static const double av[] = { 1.0, 3.0, 1e300, 1e-300, -2.5, 0.1 };
    static const double bv[] = { 3.0, 7.0, 1e300, 1e-10, 0.0, -0.3 };
    static const u16 cws[] = { 0x037f, 0x007f, 0x027f, 0x077f, 0x0b7f, 0x0f7f, 0x047f };
    for (u32 i = 0; i < sizeof av / sizeof av[0]; i++) {
        f80 a = from_double(av[i]), b = from_double(bv[i]);
        for (u32 k = 0; k < sizeof cws / sizeof cws[0]; k++) {
            binop("arith", "fadd", op_fadd, &a, &b, cws[k]);
            binop("arith", "fsub", op_fsub, &a, &b, cws[k]);
            binop("arith", "fmul", op_fmul, &a, &b, cws[k]);
            binop("arith", "fdiv", op_fdiv, &a, &b, cws[k]);
        }
    }
    /* denormals, overflow and underflow in extended range */
    static const f80 tiny = { 0x8000000000000000ull, 0x0001 }, den = { 0x0000000000000123ull, 0x0000 };
    static const f80 huge = { 0xffffffffffffffffull, 0x7ffe }, half = { 0x8000000000000000ull, 0x3ffe };
    binop("edge", "fmul", op_fmul, &tiny, &half, 0x037f);
    binop("edge", "fadd", op_fadd, &den, &den, 0x037f);
    binop("edge", "fmul", op_fmul, &huge, &huge, 0x037f);
    binop("edge", "fmul", op_fmul, &huge, &huge, 0x0f7f);
    binop("edge", "fdiv", op_fdiv, &tiny, &huge, 0x037f);
    binop("edge", "fmul", op_fmul, &den, &half, 0x007f);
}

NOINL static void t_unary(void)
{
    static const double v[] = { 2.0, 2.5, -2.5, 3.5, -0.5, 1e20, 0.0, -1.0, 1e-310 };
    static const u16 cws[] = { 0x037f, 0x077f, 0x0b7f, 0x0f7f };
    for (u32 i = 0; i < sizeof v / sizeof v[0]; i++) {
        f80 a = from_double(v[i]);
        for (u32 k = 0; k < 4; k++) {
            binop("frndint", "", op_frndint, &a, &ONE, cws[k]);
            binop("fsqrt", "", op_fsqrt, &a, &ONE, cws[k]);
        }
    }
}

NOINL static void t_scale_rem(void)
{
    static const double x[] = { 10.0, -10.0, 7.5, 1e300, 5.0, -1.0, 123456789.0, 0.0 };
    static const double y[] = { 3.0, 3.0, -2.0, 3.0, 2.5, 0.0, 0.001, 1.0 };
    for (u32 i = 0; i < sizeof x / sizeof x[0]; i++) {
        f80 a = from_double(x[i]), b = from_double(y[i]);
        binop("fscale", "", op_fscale, &a, &b, 0x037f);
        /* FPREM/FPREM1 define C0 C1 C3 (quotient bits) and C2: print the whole word */
        f80 r;
        for (int which = 0; which < 2; which++) {
            fninit();
            fld80(&b);
            fld80(&a);
            (which ? op_fprem1 : op_fprem)();
            u16 sw = fnstsw();
            fstp80(&r);
            kprintf("%s %u: ", which ? "fprem1" : "fprem", i);
            put80(&r);
            /* FPREM1's quotient bits (C0 C3 C1, SDM Vol. 2 FPREM1) are not set by QEMU */
            kprintf(" sw=%04x\n", sw & (which ? 0x04fd : 0x47fd));
        }
    }
    /* a partial remainder: exponents 100 apart (C2 = 1 until done) */
    f80 a = { 0xc90fdaa22168c234ull, 0x4063 }, b = from_double(3.0), r;
    fninit();
    fld80(&b);
    fld80(&a);
    int rounds = 0;
    u16 sw;
    do {
        __asm__ volatile("fprem");
        sw = fnstsw();
        rounds++;
    } while (sw & 0x400 && rounds < 10);
    fstp80(&r);
    kprintf("fprem partial: rounds=%d ", rounds);
    put80(&r);
    kprintf(" sw=%04x\n", sw & 0x47fd);
}

NOINL static void t_fxtract(void)
{
    static const double v[] = { 1.0, 10.0, -0.375, 1e-310, 1e300 };
    for (u32 i = 0; i < sizeof v / sizeof v[0]; i++) {
        f80 a = from_double(v[i]), s, e;
        fninit();
        fld80(&a);
        __asm__ volatile("fxtract");
        u16 sw = fnstsw();
        fstp80(&s);
        fstp80(&e);
        kprintf("fxtract %u: sig=", i);
        put80(&s);
        kprintf(" exp=");
        put80(&e);
        kprintf(" sw=%04x\n", SW_NOC1(sw));
    }
    f80 z = { 0, 0x8000 }, s, e;     /* -0: exponent -inf, divide-by-zero */
    fninit();
    fld80(&z);
    __asm__ volatile("fxtract");
    u16 sw = fnstsw();
    fstp80(&s);
    fstp80(&e);
    kprintf("fxtract -0: sig=");
    put80(&s);
    kprintf(" exp=");
    put80(&e);
    kprintf(" sw=%04x\n", SW_NOC1(sw));
}

NOINL static void t_constants(void)
{
    for (u32 rc = 0; rc < 4; rc++) {
        f80 v[7];
        fninit();
        fldcw((u16)(0x037f | rc << 10));
        __asm__ volatile("fld1; fstpt %0" : "=m"(v[0]));
        __asm__ volatile("fldz; fstpt %0" : "=m"(v[1]));
        __asm__ volatile("fldpi; fstpt %0" : "=m"(v[2]));
        __asm__ volatile("fldl2e; fstpt %0" : "=m"(v[3]));
        __asm__ volatile("fldl2t; fstpt %0" : "=m"(v[4]));
        __asm__ volatile("fldlg2; fstpt %0" : "=m"(v[5]));
        __asm__ volatile("fldln2; fstpt %0" : "=m"(v[6]));
        kprintf("constants rc=%u:", rc);
        for (int i = 0; i < 7; i++) {
            putch(' ');
            put80(&v[i]);
        }
        kprintf(" sw=%04x\n", SW_NOC1(fnstsw()));
    }
}

NOINL static void t_fxam(void)
{
    static const f80 v[] = {
        { 0, 0 }, { 0, 0x8000 }, { 0x8000000000000000ull, 0x3fff }, { 0x8000000000000000ull, 0xffff },
        { 0xc000000000000000ull, 0x7fff }, { 0x0000000000000001ull, 0x0000 },
        { 0x8000000000000000ull, 0x0000 },       /* pseudo-denormal */
        { 0x4000000000000000ull, 0x3fff },       /* unnormal */
    };
    for (u32 i = 0; i < sizeof v / sizeof v[0]; i++) {
        fninit();
        fld80(&v[i]);
        __asm__ volatile("fxam");
        kprintf("fxam %u: c3210=%04x\n", i, fnstsw() & 0x4700);
    }
    fninit();
    __asm__ volatile("fxam");                    /* an empty ST(0) */
    kprintf("fxam empty: c3210=%04x\n", fnstsw() & 0x4500);
}

NOINL static void t_compare(void)
{
    static const f80 v[] = { { 0x8000000000000000ull, 0x3fff }, { 0xc000000000000000ull, 0x4000 },
                             { 0xc000000000000000ull, 0x7fff }, { 0, 0x8000 }, { 0, 0 } };
    for (u32 i = 0; i < 5; i++) {
        for (u32 j = 0; j < 5; j++) {
            u16 sw1, sw2;
            u32 fl1, fl2;
            fninit();
            fld80(&v[j]);
            fld80(&v[i]);
            __asm__ volatile("fcom %st(1)");
            sw1 = fnstsw();
            fnclex();
            __asm__ volatile("fucom %st(1)");
            sw2 = fnstsw();
            fnclex();
            __asm__ volatile("fcomi %%st(1), %%st; pushfl; popl %0" : "=r"(fl1) :: "cc");
            __asm__ volatile("fucomi %%st(1), %%st; pushfl; popl %0" : "=r"(fl2) :: "cc");
            kprintf("compare %u %u: fcom=%04x fucom=%04x fcomi=%02x fucomi=%02x sw=%04x\n", i, j,
                    sw1 & 0x47ff & ~0x200, sw2 & 0x47ff & ~0x200, fl1 & 0x45, fl2 & 0x45,
                    SW_NOC1(fnstsw()));
        }
    }
}

NOINL static void t_integers(void)
{
    static const double v[] = { 1.5, 2.5, -2.5, 32767.5, 32768.0, -32768.0, 2147483648.0,
                                -2147483648.5, 9.3e18, 1e19, 0.0, -0.4 };
    for (u32 i = 0; i < sizeof v / sizeof v[0]; i++) {
        f80 a = from_double(v[i]);
        for (u32 rc = 0; rc < 4; rc += 3) {
            u16 s16;
            u32 s32;
            u64 s64, t64;
            u8 bcd[10];
            u32 t32;
            u16 sw;
            fninit();
            fldcw((u16)(0x037f | rc << 10));
            fld80(&a);
            __asm__ volatile("fists %0" : "=m"(s16));
            __asm__ volatile("fistl %0" : "=m"(s32));
            __asm__ volatile("fld %%st(0); fistpll %0" : "=m"(s64));
            __asm__ volatile("fld %%st(0); fisttpl %0" : "=m"(t32));
            __asm__ volatile("fld %%st(0); fisttpll %0" : "=m"(t64));
            __asm__ volatile("fbstp %0" : "=m"(bcd));
            sw = fnstsw();
            kprintf("fist %u rc=%u: %04x %08x ", i, rc, s16, s32);
            put64(s64);
            kprintf(" fisttp %08x ", t32);
            put64(t64);
            kprintf(" fbstp %02x%02x:", bcd[9], bcd[8]);
            put64(*(u64 *)bcd);
            kprintf(" sw=%04x\n", SW_NOC1(sw));
        }
    }
    static const u8 b[10] = { 0x89, 0x67, 0x45, 0x23, 0x01, 0x99, 0x00, 0x00, 0x00, 0x80 };
    f80 r;
    fninit();
    __asm__ volatile("fbld %0" :: "m"(b));
    fstp80(&r);
    kprintf("fbld -990123456789: ");
    put80(&r);
    kprintf("\n");
}

NOINL static void t_formats(void)
{
    /* loads and stores between single, double and extended, rounding and NaNs */
    static const u32 s[] = { 0x3f800000, 0x00000001, 0x807fffff, 0x7f800000, 0x7fc12345, 0x7f812345 };
    static const u64 d[] = { 0x3ff0000000000001ull, 0x0000000000000001ull, 0x7ff4000000000001ull,
                             0xfff0000000000000ull };
    for (u32 i = 0; i < 6; i++) {
        f80 r;
        fninit();
        __asm__ volatile("flds %0" :: "m"(s[i]));
        u16 sw = fnstsw();
        fstp80(&r);
        kprintf("fld m32 %08x: ", s[i]);
        put80(&r);
        kprintf(" sw=%04x\n", SW_NOC1(sw));
    }
    for (u32 i = 0; i < 4; i++) {
        f80 r;
        u32 out32;
        fninit();
        __asm__ volatile("fldl %0" :: "m"(d[i]));
        __asm__ volatile("fsts %0" : "=m"(out32));
        u16 sw = fnstsw();
        fstp80(&r);
        kprintf("fld m64 ");
        put64(d[i]);
        kprintf(": ");
        put80(&r);
        kprintf(" fst m32 %08x sw=%04x\n", out32, SW_NOC1(sw));
    }
    static const f80 e[] = { { 0x8000000000000400ull, 0x3fff }, { 0xffffffffffffffffull, 0x43fe },
                             { 0x8000000000000000ull, 0x3b00 }, { 0xa000000000000000ull, 0x7fff } };
    for (u32 i = 0; i < 4; i++) {
        for (u32 rc = 0; rc < 4; rc++) {
            u32 f;
            u64 g;
            fninit();
            fldcw((u16)(0x037f | rc << 10));
            fld80(&e[i]);
            __asm__ volatile("fsts %0" : "=m"(f));
            __asm__ volatile("fstl %0" : "=m"(g));
            kprintf("fst %u rc=%u: m32=%08x m64=", i, rc, f);
            put64(g);
            kprintf(" sw=%04x\n", SW_NOC1(fnstsw()));
        }
    }
}

/* transcendentals: QEMU's F2XM1 FYL2X FYL2XP1 FPATAN are accurate to the last bit or so,
 * its FSIN FCOS FSINCOS FPTAN go through double precision */
#define KEEP62 0xfffffffffffffffcull
#define KEEP40 0xffffffffff000000ull

NOINL static void t_transcendental(void)
{
    static const double x[] = { 0.5, -0.25, 0.001, 0.9, -0.75 };
    static const double y[] = { 3.0, 0.5, 10.0, -1.5, 7.0 };
    for (u32 i = 0; i < 5; i++) {
        f80 a = from_double(x[i]), b = from_double(y[i]), r;
        u16 sw;
        fninit();
        fld80(&a);
        __asm__ volatile("f2xm1");
        sw = fnstsw();
        fstp80(&r);
        kprintf("f2xm1 %u: ", i);
        put80_masked(&r, KEEP62);
        kprintf(" sw=%04x\n", SW_NOC1(sw));
        fninit();
        fld80(&b);
        fld80(&a);
        __asm__ volatile("fpatan");
        sw = fnstsw();
        fstp80(&r);
        kprintf("fpatan %u: ", i);
        put80_masked(&r, KEEP62);
        kprintf(" sw=%04x\n", SW_NOC1(sw));
        fninit();
        fld80(&a);
        fld80(&b);
        __asm__ volatile("fabs; fyl2x");
        sw = fnstsw();
        fstp80(&r);
        kprintf("fyl2x %u: ", i);
        put80_masked(&r, KEEP62);
        kprintf(" sw=%04x\n", SW_NOC1(sw));
        fninit();
        fld80(&b);
        fld80(&a);
        __asm__ volatile("fld1; fscale; fstp %st(1); fmul %st(0), %st; fyl2xp1");   /* x*x/4 */
        sw = fnstsw();
        fstp80(&r);
        kprintf("fyl2xp1 %u: ", i);
        put80_masked(&r, KEEP62);
        kprintf(" sw=%04x\n", SW_NOC1(sw));
        f80 s, c, t, one;
        fninit();
        fld80(&a);
        __asm__ volatile("fsin");
        fstp80(&s);
        fld80(&a);
        __asm__ volatile("fcos");
        fstp80(&c);
        fld80(&a);
        __asm__ volatile("fptan");
        fstp80(&one);
        fstp80(&t);
        kprintf("trig %u: sin=", i);
        put80_masked(&s, KEEP40);
        kprintf(" cos=");
        put80_masked(&c, KEEP40);
        kprintf(" tan=");
        put80_masked(&t, KEEP40);
        kprintf(" 1=");
        put80(&one);
        kprintf(" sw=%04x\n", SW_NOC1(fnstsw()) & ~0x20);
    }
    /* out of range: |x| >= 2**63 sets C2 and leaves ST(0) alone */
    f80 big = { 0x8000000000000000ull, 0x403f }, r;
    fninit();
    fld80(&big);
    __asm__ volatile("fsin");
    u16 sw = fnstsw();
    fstp80(&r);
    kprintf("fsin 2**64: ");
    put80(&r);
    kprintf(" c2=%u\n", (sw >> 10) & 1);
}

NOINL static void t_environment(void)
{
    /* FSTENV (32-bit image): control, status, tag words; FLDENV restores them */
    u32 env[7], env2[7];
    fninit();
    fldcw(0x0e7f);
    __asm__ volatile("fld1; fldz; fldpi; fld1; fchs");
    __asm__ volatile("fnstenv %0" : "=m"(env));
    u16 cw_after = fnstcw();
    kprintf("fstenv: cw=%04x sw=%04x tw=%04x\n", env[0] & 0xffff, env[1] & 0xffff, env[2] & 0xffff);
    kprintf("fstenv: cw after=%04x\n", cw_after);
    fninit();
    __asm__ volatile("fldenv %0" :: "m"(env));
    __asm__ volatile("fnstenv %0" : "=m"(env2));
    kprintf("fldenv: cw=%04x sw=%04x tw=%04x\n", env2[0] & 0xffff, env2[1] & 0xffff,
            env2[2] & 0xffff);
    /* FSAVE then FRSTOR: the registers come back, and FSAVE reinitialized the unit */
    u8 area[108];
    f80 r;
    fninit();
    __asm__ volatile("fldpi; fld1; fldl2t");
    __asm__ volatile("fnsave %0" : "=m"(area));
    kprintf("fsave: cw=%04x sw=%04x tw=%04x after: cw=%04x sw=%04x\n", *(u16 *)&area[0],
            *(u16 *)&area[4], *(u16 *)&area[8], fnstcw(), fnstsw());
    __asm__ volatile("fldz");
    __asm__ volatile("frstor %0" :: "m"(area));
    fstp80(&r);
    kprintf("frstor: st0=");
    put80(&r);
    fstp80(&r);
    kprintf(" st1=");
    put80(&r);
    kprintf(" sw=%04x\n", fnstsw());
}

NOINL static void t_stack(void)
{
    /* FXCH, FINCSTP/FDECSTP, FFREE, FLD ST(i), FST ST(i), FCMOVcc */
    f80 r0, r1, r2;
    fninit();
    __asm__ volatile("fld1; fldpi; fldz");      /* st0=0 st1=pi st2=1 */
    __asm__ volatile("fxch %st(2)");
    __asm__ volatile("fld %st(1); fstp %st(3)");
    u16 sw = fnstsw();
    fstp80(&r0);
    fstp80(&r1);
    fstp80(&r2);
    kprintf("stack: ");
    put80(&r0);
    putch(' ');
    put80(&r1);
    putch(' ');
    put80(&r2);
    kprintf(" sw=%04x\n", sw);
    fninit();
    __asm__ volatile("fld1; fldz; fincstp; fincstp; fdecstp");
    kprintf("fincstp/fdecstp: top=%u\n", (fnstsw() >> 11) & 7);
    fninit();
    __asm__ volatile("fld1; fldz; ffree %st(1)");
    u16 tw[14];
    __asm__ volatile("fnstenv %0" : "=m"(tw));
    kprintf("ffree: tw=%04x\n", tw[4]);
    for (u32 cc = 0; cc < 4; cc++) {
        u32 flags = cc == 0 ? 0x1 : cc == 1 ? 0x40 : cc == 2 ? 0x4 : 0;   /* CF, ZF, PF, none */
        u32 got = 0;
        fninit();
        __asm__ volatile("fldpi; fld1; pushl %1; popfl;"
                         "fcmovb %%st(1), %%st; fcmove %%st(1), %%st; fcmovu %%st(1), %%st;"
                         "fstps %0; fstp %%st(0)"
                         : "=m"(got) : "r"(flags) : "cc");
        kprintf("fcmov flags=%02x: %08x\n", flags, got);
    }
}

int part_x87(void)
{
    kprintf("fpu x87: start\n");
    t_constants();
    t_arith();
    t_unary();
    t_scale_rem();
    t_fxtract();
    t_fxam();
    t_compare();
    t_integers();
    t_formats();
    t_transcendental();
    t_environment();
    t_stack();
    kprintf("fpu x87: done\n");
    return 0;
}
