/* part=2: SSE, SSE2 and MMX instructions, printed raw.
 *
 * MXCSR is printed without DE (QEMU does not report denormal SSE operands; SDM Vol. 1
 * §11.5.2.2 says it should).  Every exception stays masked here: QEMU raises no #XM.
 */
#include "fpu.h"

typedef u32 v4[4] __attribute__((aligned(16)));

#define MX(m) ((m) & ~0x2u)

static void show(const char *what, const v4 r, u32 mxcsr)
{
    kprintf("%s: ", what);
    put128(r);
    kprintf(" mxcsr=%08x\n", MX(mxcsr));
}

/* r = op(a, b) under the given MXCSR (flags cleared first) */
#define SSE_OP(name, insn, a, b, mx)                                              \
    do {                                                                          \
        v4 r_;                                                                    \
        u32 m_ = (mx), out_;                                                      \
        ldmxcsr(m_);                                                              \
        __asm__ volatile("movaps %2, %%xmm0; " insn " %3, %%xmm0; movaps %%xmm0, %0; " \
                         "stmxcsr %1"                                             \
                         : "=m"(r_), "=m"(out_) : "m"(*(a)), "m"(*(b)) : "xmm0", "memory"); \
        show(name, r_, out_);                                                     \
    } while (0)

NOINL static void t_arith(void)
{
    static const v4 a = { 0x3f800000, 0x40400000, 0x7f7fffff, 0x00800000 };   /* 1 3 max min */
    static const v4 b = { 0x40400000, 0x40e00000, 0x7f7fffff, 0x3f000000 };   /* 3 7 max 0.5 */
    static const v4 da = { 0x00000000, 0x3ff00000, 0x9999999a, 0x3fb99999 };  /* 1.0, 0.1 */
    static const v4 db = { 0x00000000, 0x40080000, 0x33333333, 0xbfd33333 };  /* 3.0, -0.3 */
    for (u32 rc = 0; rc < 4; rc++) {
        u32 mx = 0x1f80 | rc << 13;
        kprintf("rc=%u\n", rc);
        SSE_OP("addps", "addps", &a, &b, mx);
        SSE_OP("subps", "subps", &a, &b, mx);
        SSE_OP("mulps", "mulps", &a, &b, mx);
        SSE_OP("divps", "divps", &a, &b, mx);
        SSE_OP("sqrtps", "sqrtps", &a, &b, mx);
        SSE_OP("addss", "addss", &a, &b, mx);
        SSE_OP("divss", "divss", &a, &b, mx);
        SSE_OP("addpd", "addpd", &da, &db, mx);
        SSE_OP("mulpd", "mulpd", &da, &db, mx);
        SSE_OP("divpd", "divpd", &da, &db, mx);
        SSE_OP("sqrtpd", "sqrtpd", &da, &db, mx);
        SSE_OP("divsd", "divsd", &da, &db, mx);
    }
}

NOINL static void t_daz_ftz(void)
{
    static const v4 den = { 0x00000001, 0x80400000, 0x00800000, 0x3f800000 };
    static const v4 half = { 0x3f000000, 0x3f000000, 0x3f000000, 0x3f000000 };
    static const v4 tiny = { 0x00800001, 0x00ffffff, 0x01000000, 0x80800000 };
    for (u32 mode = 0; mode < 4; mode++) {
        u32 mx = 0x1f80 | (mode & 1 ? 0x40 : 0) | (mode & 2 ? 0x8000 : 0);   /* DAZ, FTZ */
        kprintf("daz=%u ftz=%u\n", mode & 1, mode >> 1);
        SSE_OP("den*0.5", "mulps", &den, &half, mx);
        SSE_OP("den+den", "addps", &den, &den, mx);
        SSE_OP("tiny*0.5", "mulps", &tiny, &half, mx);
        /* (MINPS with DAZ is left out: QEMU returns the denormal itself, where SDM Vol. 1
         * §10.2.3.4 turns it into a zero first; tests/test_fpu_sdm.py checks it) */
        if (!(mode & 1))
            SSE_OP("min(den,half)", "minps", &den, &half, mx);
    }
}

NOINL static void t_specials(void)
{
    /* NaN operands, infinities, zeros: SDM Vol. 1 Table 4-7 and each instruction's rules.
     * No lane holds two NaNs: SSE returns the first operand's, QEMU the one with the larger
     * significand (the x87 rule); tests/test_fpu_sdm.py checks that case. */
    static const v4 a = { 0x7fc00001, 0x7f800001, 0xff800000, 0x00000000 };
    static const v4 b = { 0x3f800000, 0x3f800000, 0x7f800000, 0x80000000 };
    static const v4 c = { 0x7f800002, 0x7fc00003, 0x3f800000, 0x7f800000 };
    SSE_OP("add qnan/snan", "addps", &a, &b, 0x1f80);
    SSE_OP("add b,c", "addps", &b, &c, 0x1f80);
    SSE_OP("mul c,b", "mulps", &c, &b, 0x1f80);
    SSE_OP("min a,b", "minps", &a, &b, 0x1f80);
    SSE_OP("max a,b", "maxps", &a, &b, 0x1f80);
    SSE_OP("min b,a", "minps", &b, &a, 0x1f80);
    SSE_OP("div 0/-0", "divps", &b, &b, 0x1f80);
    SSE_OP("sqrt -inf", "sqrtps", &a, &a, 0x1f80);
#define CMPPS(k)                                                                    \
    do {                                                                            \
        v4 r;                                                                       \
        u32 mx;                                                                     \
        ldmxcsr(0x1f80);                                                            \
        __asm__ volatile("movaps %2, %%xmm0; cmpps $" #k ", %3, %%xmm0; movaps %%xmm0, %0;" \
                         "stmxcsr %1" : "=m"(r), "=m"(mx) : "m"(a), "m"(b) : "xmm0", "memory"); \
        kprintf("cmpps " #k ": ");                                                  \
        put128(r);                                                                  \
        kprintf(" mxcsr=%08x\n", MX(mx));                                           \
    } while (0)
    CMPPS(0); CMPPS(1); CMPPS(2); CMPPS(3); CMPPS(4); CMPPS(5); CMPPS(6); CMPPS(7);
    static const u32 pairs[][2] = { { 0x3f800000, 0x40000000 }, { 0x40000000, 0x3f800000 },
                                    { 0x3f800000, 0x3f800000 }, { 0x7fc00000, 0x3f800000 },
                                    { 0x7f800001, 0x3f800000 }, { 0x80000000, 0x00000000 } };
    for (u32 i = 0; i < 6; i++) {
        u32 f1, f2, m1, m2;
        ldmxcsr(0x1f80);
        __asm__ volatile("movd %3, %%xmm0; movd %4, %%xmm1; comiss %%xmm1, %%xmm0; pushfl; popl %0;"
                         "stmxcsr %1"
                         : "=r"(f1), "=m"(m1) : "m"(m1), "m"(pairs[i][0]), "m"(pairs[i][1])
                         : "xmm0", "xmm1", "cc", "memory");
        ldmxcsr(0x1f80);
        __asm__ volatile("movd %3, %%xmm0; movd %4, %%xmm1; ucomiss %%xmm1, %%xmm0; pushfl; popl %0;"
                         "stmxcsr %1"
                         : "=r"(f2), "=m"(m2) : "m"(m2), "m"(pairs[i][0]), "m"(pairs[i][1])
                         : "xmm0", "xmm1", "cc", "memory");
        kprintf("comiss %u: eflags=%03x mxcsr=%08x ucomiss: eflags=%03x mxcsr=%08x\n", i,
                f1 & 0x8d5, MX(m1), f2 & 0x8d5, MX(m2));
    }
}

NOINL static void t_convert(void)
{
    static const u32 f[] = { 0x3fc00000, 0x40200000, 0xc0200000, 0x4f000000, 0xcf000000,
                             0x7fc00000, 0x4effffff, 0x3f000001 };
    static const u32 d[][2] = { { 0x00000000, 0x3ff80000 }, { 0x00000000, 0xc0040000 },
                                { 0xffc00000, 0x41dfffff }, { 0x00000000, 0x41e00000 },
                                { 0x12345678, 0x3ff12345 } };
    for (u32 rc = 0; rc < 4; rc++) {
        ldmxcsr(0x1f80 | rc << 13);
        kprintf("cvt rc=%u:", rc);
        for (u32 i = 0; i < 8; i++) {
            u32 r, t;
            __asm__ volatile("cvtss2si %2, %0; cvttss2si %2, %1" : "=r"(r), "=r"(t) : "m"(f[i]));
            kprintf(" %08x/%08x", r, t);
        }
        for (u32 i = 0; i < 5; i++) {
            u32 r, t, s;
            __asm__ volatile("cvtsd2si %3, %0; cvttsd2si %3, %1; cvtsd2ss %3, %%xmm0; movd %%xmm0, %2"
                             : "=r"(r), "=r"(t), "=r"(s) : "m"(d[i]) : "xmm0");
            kprintf(" %08x/%08x/%08x", r, t, s);
        }
        static const s32 ints[] = { 16777217, -16777219, 2147483647, 7 };
        for (u32 i = 0; i < 4; i++) {
            u32 s, lo, hi;
            __asm__ volatile("cvtsi2ss %3, %%xmm0; movd %%xmm0, %0; cvtsi2sd %3, %%xmm1;"
                             "movd %%xmm1, %1; psrlq $32, %%xmm1; movd %%xmm1, %2"
                             : "=r"(s), "=r"(lo), "=r"(hi) : "m"(ints[i]) : "xmm0", "xmm1");
            kprintf(" %08x/%08x%08x", s, hi, lo);
        }
        kprintf(" mxcsr=%08x\n", MX(stmxcsr()));
    }
    static const v4 p = { 0x3fc00000, 0xc0200000, 0x7fc00000, 0x4f800000 };
    v4 r1, r2, r3;
    ldmxcsr(0x1f80);
    __asm__ volatile("cvtps2dq %3, %%xmm0; movaps %%xmm0, %0; cvtps2pd %3, %%xmm1; movaps %%xmm1, %1;"
                     "cvtpd2ps %%xmm1, %%xmm2; movaps %%xmm2, %2"
                     : "=m"(r1), "=m"(r2), "=m"(r3) : "m"(p) : "xmm0", "xmm1", "xmm2");
    kprintf("cvtps2dq: ");
    put128(r1);
    kprintf(" cvtps2pd: ");
    put128(r2);
    kprintf(" cvtpd2ps: ");
    put128(r3);
    kprintf(" mxcsr=%08x\n", MX(stmxcsr()));
}

NOINL static void t_integer(void)
{
    static const v4 a = { 0x80017fff, 0x00ff7f80, 0xffffffff, 0x12345678 };
    static const v4 b = { 0x7fff8001, 0x01018080, 0x00000001, 0x9abcdef0 };
    v4 r[12];
    __asm__ volatile("movdqa %12, %%xmm0; movdqa %13, %%xmm1;"
                     "movdqa %%xmm0, %%xmm2; paddsw %%xmm1, %%xmm2; movdqa %%xmm2, %0;"
                     "movdqa %%xmm0, %%xmm2; psubusb %%xmm1, %%xmm2; movdqa %%xmm2, %1;"
                     "movdqa %%xmm0, %%xmm2; pmulhw %%xmm1, %%xmm2; movdqa %%xmm2, %2;"
                     "movdqa %%xmm0, %%xmm2; pmaddwd %%xmm1, %%xmm2; movdqa %%xmm2, %3;"
                     "movdqa %%xmm0, %%xmm2; packsswb %%xmm1, %%xmm2; movdqa %%xmm2, %4;"
                     "movdqa %%xmm0, %%xmm2; punpcklbw %%xmm1, %%xmm2; movdqa %%xmm2, %5;"
                     "movdqa %%xmm0, %%xmm2; pcmpgtd %%xmm1, %%xmm2; movdqa %%xmm2, %6;"
                     "movdqa %%xmm0, %%xmm2; psadbw %%xmm1, %%xmm2; movdqa %%xmm2, %7;"
                     "pshufd $0x1b, %%xmm0, %%xmm2; movdqa %%xmm2, %8;"
                     "movdqa %%xmm0, %%xmm2; psraw $3, %%xmm2; movdqa %%xmm2, %9;"
                     "movdqa %%xmm0, %%xmm2; pslldq $5, %%xmm2; movdqa %%xmm2, %10;"
                     "movdqa %%xmm0, %%xmm2; pmuludq %%xmm1, %%xmm2; movdqa %%xmm2, %11"
                     : "=m"(r[0]), "=m"(r[1]), "=m"(r[2]), "=m"(r[3]), "=m"(r[4]), "=m"(r[5]),
                       "=m"(r[6]), "=m"(r[7]), "=m"(r[8]), "=m"(r[9]), "=m"(r[10]), "=m"(r[11])
                     : "m"(a), "m"(b) : "xmm0", "xmm1", "xmm2", "memory");
    static const char *names[] = { "paddsw", "psubusb", "pmulhw", "pmaddwd", "packsswb",
                                   "punpcklbw", "pcmpgtd", "psadbw", "pshufd", "psraw",
                                   "pslldq", "pmuludq" };
    for (int i = 0; i < 12; i++) {
        kprintf("%s: ", names[i]);
        put128(r[i]);
        kprintf("\n");
    }
    u32 mask, w;
    __asm__ volatile("pmovmskb %%xmm0, %0; pextrw $5, %%xmm0, %1" : "=r"(mask), "=r"(w)
                     :: "xmm0");
    kprintf("pmovmskb=%04x pextrw=%04x\n", mask, w);
}

NOINL static void t_mmx(void)
{
    /* MMX: the x87 registers' significands; TOP = 0 and all tags valid until EMMS */
    static const u64 a = 0x8001fffe7f7f0102ull, b = 0x7fff000281010304ull;
    u64 r1, r2;
    u16 env[14];
    fninit();
    __asm__ volatile("fld1");
    __asm__ volatile("movq %2, %%mm0; movq %3, %%mm1; paddusb %%mm1, %%mm0; movq %%mm0, %0;"
                     "pmullw %%mm1, %%mm0; movq %%mm0, %1"
                     : "=m"(r1), "=m"(r2) : "m"(a), "m"(b) : "mm0", "mm1", "memory");
    __asm__ volatile("fnstenv %0" : "=m"(env));
    kprintf("mmx: paddusb=");
    put64(r1);
    kprintf(" pmullw=");
    put64(r2);
    kprintf(" top=%u\n", (env[2] >> 11) & 7);
    __asm__ volatile("emms; fnstenv %0" : "=m"(env));
    kprintf("emms: tw=%04x\n", env[4]);
}

int part_sse(void)
{
    kprintf("fpu sse: start\n");
    t_arith();
    t_daz_ftz();
    t_specials();
    t_convert();
    t_integer();
    t_mmx();
    ldmxcsr(0x1f80);
    kprintf("fpu sse: done\n");
    return 0;
}
