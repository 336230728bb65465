/* random=N seed=S: N random single-instruction cases, for a line-by-line comparison
 * with QEMU (whose x87 and SSE report their exception flags, unlike unicorn's).
 *
 * A case: a control word (every exception masked, random precision and rounding), an
 * MXCSR (masked, random rounding, DAZ, FTZ), three x87 registers, XMM0/XMM1, a 16-byte
 * memory operand at [EAX] and ECX, from an LCG that mixes every class of value.  The
 * instruction (from the table below) runs from a code buffer; the state after it is
 * printed raw.  Left out, where QEMU departs from the SDM: C1 (the round-up bit), the
 * x87's DE flag, MXCSR.DE, FPREM1's quotient bits, two NaNs in one SSE lane (QEMU uses the
 * x87's larger-significand rule), MINPS/MAXPS under DAZ, and the last bits of F2XM1, FYL2X,
 * FYL2XP1 and FPATAN (QEMU's are within an ulp, not always correctly rounded).
 */
#include "fpu.h"

enum { X87 = 1, SSE_F32 = 2, SSE_F64 = 4, NOC = 8, TRANS = 16, NODAZ = 32, QBITS = 64, PC = 128,
       PAIRS = 256 };

struct op {
    u8 len;
    u16 kind;
    u8 code[6];
    const char *name;
};

#define OP(name, kind, ...) { sizeof((u8[]){ __VA_ARGS__ }), kind, { __VA_ARGS__ }, name }

static const struct op ops[] = {
    OP("fadd st,st1", X87 | NOC | PC, 0xd8, 0xc1), OP("fsub st,st1", X87 | NOC | PC, 0xd8, 0xe1),
    OP("fsubr st,st1", X87 | NOC | PC, 0xd8, 0xe9), OP("fmul st,st1", X87 | NOC | PC, 0xd8, 0xc9),
    OP("fdiv st,st1", X87 | NOC | PC, 0xd8, 0xf1), OP("fdivr st,st1", X87 | NOC | PC, 0xd8, 0xf9),
    OP("fsub st1,st", X87 | NOC | PC, 0xdc, 0xe9), OP("fdivr st1,st", X87 | NOC | PC, 0xdc, 0xf1),
    OP("faddp", X87 | NOC | PC, 0xde, 0xc1), OP("fdivp", X87 | NOC | PC, 0xde, 0xf9),
    OP("fsqrt", X87 | NOC | PC, 0xd9, 0xfa), OP("frndint", X87 | NOC, 0xd9, 0xfc),
    OP("fscale", X87 | NOC, 0xd9, 0xfd), OP("fxtract", X87 | NOC, 0xd9, 0xf4),
    OP("fprem", X87, 0xd9, 0xf8), OP("fprem1", X87 | QBITS, 0xd9, 0xf5),
    OP("fchs", X87 | NOC, 0xd9, 0xe0), OP("fabs", X87 | NOC, 0xd9, 0xe1),
    OP("ftst", X87, 0xd9, 0xe4), OP("fxam", X87, 0xd9, 0xe5), OP("fcom st1", X87, 0xd8, 0xd1),
    OP("fucom st1", X87, 0xdd, 0xe1), OP("fcomi st1", X87 | NOC, 0xdb, 0xf1),
    OP("fucomi st1", X87 | NOC, 0xdb, 0xe9), OP("fcompp", X87, 0xde, 0xd9),
    OP("f2xm1", X87 | NOC | TRANS, 0xd9, 0xf0), OP("fyl2x", X87 | NOC | TRANS, 0xd9, 0xf1),
    OP("fyl2xp1", X87 | NOC | TRANS, 0xd9, 0xf9), OP("fpatan", X87 | NOC | TRANS, 0xd9, 0xf3),
    OP("fadd m32", X87 | NOC | PC, 0xd8, 0x00), OP("fdivr m64", X87 | NOC, 0xdc, 0x38),
    OP("fimul m16", X87 | NOC | PC, 0xde, 0x08), OP("fcom m64", X87, 0xdc, 0x10),
    OP("fld m32", X87 | NOC, 0xd9, 0x00), OP("fld m64", X87 | NOC, 0xdd, 0x00),
    OP("fstp m32", X87 | NOC, 0xd9, 0x18), OP("fstp m64", X87 | NOC, 0xdd, 0x18),
    OP("fistp m16", X87 | NOC, 0xdf, 0x18), OP("fist m32", X87 | NOC, 0xdb, 0x10),
    OP("fistp m64", X87 | NOC, 0xdf, 0x38), OP("fisttp m32", X87 | NOC, 0xdb, 0x08),
    OP("fbstp", X87 | NOC, 0xdf, 0x30), OP("fild m32", X87 | NOC, 0xdb, 0x00),
    OP("addps", SSE_F32, 0x0f, 0x58, 0xc1), OP("subss", SSE_F32, 0xf3, 0x0f, 0x5c, 0xc1),
    OP("mulps m", SSE_F32, 0x0f, 0x59, 0x00), OP("divss", SSE_F32, 0xf3, 0x0f, 0x5e, 0xc1),
    OP("sqrtps", SSE_F32, 0x0f, 0x51, 0xc1), OP("minps", SSE_F32 | NODAZ, 0x0f, 0x5d, 0xc1),
    OP("maxss", SSE_F32 | NODAZ, 0xf3, 0x0f, 0x5f, 0xc1),
    OP("cmpltps", SSE_F32, 0x0f, 0xc2, 0xc1, 1), OP("cmpunordss", SSE_F32, 0xf3, 0x0f, 0xc2, 0xc1, 3),
    OP("cmpnleps", SSE_F32, 0x0f, 0xc2, 0xc1, 6), OP("comiss", SSE_F32, 0x0f, 0x2f, 0xc1),
    OP("ucomiss", SSE_F32, 0x0f, 0x2e, 0xc1), OP("cvtss2sd", SSE_F32, 0xf3, 0x0f, 0x5a, 0xc1),
    OP("cvtps2pd", SSE_F32, 0x0f, 0x5a, 0xc1), OP("cvtss2si", SSE_F32, 0xf3, 0x0f, 0x2d, 0xc1),
    OP("cvttss2si", SSE_F32, 0xf3, 0x0f, 0x2c, 0xc1), OP("cvtps2dq", SSE_F32, 0x66, 0x0f, 0x5b, 0xc1),
    OP("cvttps2dq", SSE_F32, 0xf3, 0x0f, 0x5b, 0xc1), OP("cvtdq2ps", SSE_F32, 0x0f, 0x5b, 0xc1),
    OP("cvtsi2ss", SSE_F32, 0xf3, 0x0f, 0x2a, 0xc1),
    OP("addpd", SSE_F64, 0x66, 0x0f, 0x58, 0xc1), OP("subsd m", SSE_F64, 0xf2, 0x0f, 0x5c, 0x00),
    OP("mulpd", SSE_F64, 0x66, 0x0f, 0x59, 0xc1), OP("divsd", SSE_F64, 0xf2, 0x0f, 0x5e, 0xc1),
    OP("sqrtsd", SSE_F64, 0xf2, 0x0f, 0x51, 0xc1), OP("minpd", SSE_F64 | NODAZ, 0x66, 0x0f, 0x5d, 0xc1),
    OP("maxpd", SSE_F64 | NODAZ, 0x66, 0x0f, 0x5f, 0xc1),
    OP("cmplepd", SSE_F64, 0x66, 0x0f, 0xc2, 0xc1, 2), OP("cmpneqsd", SSE_F64, 0xf2, 0x0f, 0xc2, 0xc1, 4),
    OP("comisd", SSE_F64, 0x66, 0x0f, 0x2f, 0xc1), OP("ucomisd", SSE_F64, 0x66, 0x0f, 0x2e, 0xc1),
    OP("cvtsd2ss", SSE_F64, 0xf2, 0x0f, 0x5a, 0xc1), OP("cvtpd2ps", SSE_F64, 0x66, 0x0f, 0x5a, 0xc1),
    OP("cvtsd2si", SSE_F64, 0xf2, 0x0f, 0x2d, 0xc1), OP("cvttsd2si", SSE_F64, 0xf2, 0x0f, 0x2c, 0xc1),
    OP("cvtpd2dq", SSE_F64, 0xf2, 0x0f, 0xe6, 0xc1), OP("cvttpd2dq", SSE_F64, 0x66, 0x0f, 0xe6, 0xc1),
    OP("cvtsi2sd", SSE_F64, 0xf2, 0x0f, 0x2a, 0xc1),
    OP("addsubps", SSE_F32, 0xf2, 0x0f, 0xd0, 0xc1), OP("haddpd", SSE_F64 | PAIRS, 0x66, 0x0f, 0x7c, 0xc1),
    OP("hsubps", SSE_F32 | PAIRS, 0xf2, 0x0f, 0x7d, 0xc1), OP("movshdup", SSE_F32, 0xf3, 0x0f, 0x16, 0xc1),
    OP("movddup m", SSE_F64, 0xf2, 0x0f, 0x12, 0x00),
};

#define NOPS (sizeof ops / sizeof ops[0])

struct state {
    u32 mem[4];                             /* 0: the memory operand (16-byte aligned) */
    u32 x0[4], x1[4];                       /* 16, 32 */
    f80 st[3];                              /* 48, 58, 68 */
    u16 cw;                                 /* 78 */
    u32 mxcsr;                              /* 80 */
    u32 ecx;                                /* 84 */
    /* results */
    u32 eflags, eax, mxcsr_out;             /* 88, 92, 96 */
    u8 save[108];                           /* 100 */
    u32 y0[4], y1[4];                       /* 208, 224 */
} __attribute__((aligned(16)));

static struct state s __attribute__((aligned(16)));

/* the offsets the assembly below uses */
_Static_assert(__builtin_offsetof(struct state, x0) == 16, "x0");
_Static_assert(__builtin_offsetof(struct state, st) == 48, "st");
_Static_assert(__builtin_offsetof(struct state, cw) == 78, "cw");
_Static_assert(__builtin_offsetof(struct state, mxcsr) == 80, "mxcsr");
_Static_assert(__builtin_offsetof(struct state, eflags) == 88, "eflags");
_Static_assert(__builtin_offsetof(struct state, save) == 100, "save");
_Static_assert(__builtin_offsetof(struct state, y0) == 208, "y0");

static u8 codebuf[4096] __attribute__((aligned(4096)));   /* a page of its own */

/* a value of each IEEE class, in a format with ebits exponent and mbits stored bits */
static u64 rnd_float(int ebits, int mbits)
{
    u64 top = ((u64)1 << ebits) - 1, bias = top >> 1, e;
    u64 frac = ((u64)rng() << 32 | rng()) & (((u64)1 << mbits) - 1);
    switch (rng() % 10) {
    case 0: case 1: case 2: e = bias - 8 + rng() % 17; break;   /* near 1 */
    case 3: case 4: e = 1 + rng() % (u32)(top - 1); break;      /* anywhere */
    case 5: e = rng() & 1 ? 1 : top - 1; break;                 /* the ends */
    case 6: e = 0; break;                                       /* denormal */
    case 7: e = 0; frac = 0; break;                             /* zero */
    case 8: e = top; frac = 0; break;                           /* infinity */
    default: e = top; frac |= 1; break;                         /* NaN */
    }
    return (u64)(rng() & 1) << (ebits + mbits) | e << mbits | frac;
}

static void rnd_f80(f80 *v)
{
    u64 r = rnd_float(15, 63);              /* 15-bit exponent, 63 fraction bits */
    u16 e = (r >> 63) & 0x7fff;
    v->se = (u16)(e | (r >> 78 & 1) << 15);
    v->m = (r & 0x7fffffffffffffffull) | (e ? 1ull << 63 : 0);   /* the integer bit */
}

static int is_nan32(u32 v) { return (v & 0x7f800000) == 0x7f800000 && (v & 0x7fffff); }
static int is_nan64(u32 lo, u32 hi) { return (hi & 0x7ff00000) == 0x7ff00000 && ((hi & 0xfffff) | lo); }

static void fill(const struct op *op)
{
    /* precision control only for the instructions it affects (SDM Vol. 1 §8.1.5.2): QEMU
     * also rounds FLD m64, FPREM and the conversions of memory operands to it */
    u32 pc = op->kind & PC ? (rng() % 3 == 0 ? 0 : rng() & 1 ? 2 : 3) : 3;
    s.cw = (u16)(0x007f | pc << 8 | (rng() & 3) << 10);
    s.mxcsr = 0x1f80 | (rng() & 3) << 13;
    if (!(op->kind & NODAZ) && rng() % 3 == 0)
        s.mxcsr |= 0x40;
    if (rng() % 3 == 0)
        s.mxcsr |= 0x8000;
    if (rng() % 4 == 0)
        s.mxcsr |= 0x20;                    /* PE already set (the fast path) */
    for (int i = 0; i < 3; i++) {
        rnd_f80(&s.st[i]);
        /* QEMU's FYL2X family mis-scales denormal operands by a factor of two */
        while (op->kind & TRANS && (s.st[i].se & 0x7fff) == 0 && s.st[i].m)
            rnd_f80(&s.st[i]);
    }
    for (int i = 0; i < 4; i++) {
        if (op->kind & SSE_F64) {
            u64 a = rnd_float(11, 52), b = rnd_float(11, 52), m = rnd_float(11, 52);
            if (i & 1) {
                a >>= 32; b >>= 32; m >>= 32;
            }
            s.x0[i] = (u32)a;
            s.x1[i] = (u32)b;
            s.mem[i] = (u32)m;
        } else if (op->kind & SSE_F32 || rng() & 1) {
            s.x0[i] = (u32)rnd_float(8, 23);
            s.x1[i] = (u32)rnd_float(8, 23);
            s.mem[i] = (u32)rnd_float(8, 23);
        } else {
            s.x0[i] = rng();
            s.x1[i] = rng();
            s.mem[i] = rng() % 4 ? rng() : (u32)rnd_float(8, 23);
        }
    }
    if (op->kind & SSE_F64 && rng() & 1) {     /* a double from the register stack's values */
        s.mem[0] = (u32)(s.st[0].m >> 11);
        s.mem[1] = (u32)(s.st[0].m >> 43) | 0x3ff00000;
    }
    /* no lane with two NaNs (see above) */
    for (int i = 0; i < 4; i++) {
        if (op->kind & SSE_F32 && is_nan32(s.x0[i]) && is_nan32(s.x1[i]))
            s.x1[i] = 0x3f800000;
        if (op->kind & SSE_F32 && is_nan32(s.x0[i]) && is_nan32(s.mem[i]))
            s.mem[i] = 0x40000000;
    }
    /* HADDPS & co combine adjacent lanes of one operand: no two NaNs there either */
    for (int i = 0; op->kind & PAIRS && i < 4; i += 2) {
        u32 *vs[2] = { s.x0, s.x1 };
        for (int k = 0; k < 2; k++) {
            u32 *v = vs[k];
            if (op->kind & SSE_F32 && is_nan32(v[i]) && is_nan32(v[i + 1]))
                v[i + 1] = 0x3f800000;
        }
    }
    if (op->kind & PAIRS && op->kind & SSE_F64 && is_nan64(s.x0[0], s.x0[1]) && is_nan64(s.x0[2], s.x0[3]))
        s.x0[3] = 0x3ff00000, s.x0[2] = 0;
    if (op->kind & PAIRS && op->kind & SSE_F64 && is_nan64(s.x1[0], s.x1[1]) && is_nan64(s.x1[2], s.x1[3]))
        s.x1[3] = 0x3ff00000, s.x1[2] = 0;
    for (int i = 0; i < 4; i += 2) {
        if (op->kind & SSE_F64 && is_nan64(s.x0[i], s.x0[i + 1]) && is_nan64(s.x1[i], s.x1[i + 1]))
            s.x1[i + 1] = 0x3ff00000;
        if (op->kind & SSE_F64 && is_nan64(s.x0[i], s.x0[i + 1]) && is_nan64(s.mem[i], s.mem[i + 1]))
            s.mem[i + 1] = 0x40000000;
    }
    s.ecx = rng() % 4 ? rng() : rng() % 100000;
}

static void run_case(const struct op *op)
{
    memcpy(codebuf, op->code, op->len);
    codebuf[op->len] = 0xc3;                /* ret */
    __asm__ volatile(
        "fninit\n\t"
        "fldcw 78(%%esi)\n\t"
        "ldmxcsr 80(%%esi)\n\t"
        "fldt 68(%%esi)\n\tfldt 58(%%esi)\n\tfldt 48(%%esi)\n\t"
        "movups 16(%%esi), %%xmm0\n\tmovups 32(%%esi), %%xmm1\n\t"
        "movl %%esi, %%eax\n\tmovl 84(%%esi), %%ecx\n\t"
        "pushl %%esi\n\tcall *%1\n\tpopl %%esi\n\t"
        "pushfl\n\tpopl 88(%%esi)\n\tmovl %%eax, 92(%%esi)\n\t"
        "stmxcsr 96(%%esi)\n\tfnsave 100(%%esi)\n\t"
        "movups %%xmm0, 208(%%esi)\n\tmovups %%xmm1, 224(%%esi)\n\t"
        : : "S"(&s), "r"(codebuf) : "eax", "ecx", "edx", "memory", "cc", "xmm0", "xmm1");
}

/* each case's lines go to a buffer: printed whole with verbose=1, otherwise folded into
 * one FNV-1a hash per case (a mismatch names the case; the test reruns it verbosely) */
static char line[512];
static u32 pos;
static int verbose;

static void bputc(char c) { if (pos < sizeof line - 1) line[pos++] = c; }
static void bstr(const char *t) { while (*t) bputc(*t++); }
static void bhex(u64 v, int digits)
{
    for (int i = digits - 1; i >= 0; i--)
        bputc("0123456789abcdef"[(v >> (4 * i)) & 15]);
}
static void b80(const f80 *v, u64 keep)
{
    bhex(v->se, 4);
    bputc(':');
    bhex(v->m & keep, 16);
}
static void b128(const u32 *v)
{
    for (int i = 3; i >= 0; i--)
        bhex(v[i], 8);
}

static u32 flush(u32 h)
{
    line[pos] = 0;
    if (verbose)
        kprintf("%s\n", line);
    for (u32 i = 0; i < pos; i++)
        h = (h ^ (u8)line[i]) * 16777619u;
    pos = 0;
    return h;
}

int part_random(u32 n)
{
    u32 first = 0, v;
    if (rt_arg("verbose", &v))
        verbose = (int)v;
    if (rt_arg("first", &v))
        first = v;
    kprintf("fpu random: seed=%u n=%u\n", rng_seed, n);
    for (u32 i = 0; i < first + n; i++) {
        const struct op *op = &ops[rng() % NOPS];
        fill(op);
        if (i < first)
            continue;
        u32 h = 2166136261u;
        bhex(i, 4);
        bputc(' ');
        bstr(op->name);
        bstr(" cw=");
        bhex(s.cw, 4);
        bstr(" mx=");
        bhex(s.mxcsr, 4);
        if (op->kind & X87) {
            for (int k = 0; k < 3; k++) {
                bputc(' ');
                b80(&s.st[k], ~0ull);
            }
        } else {
            bstr(" x0=");
            b128(s.x0);
            bstr(" x1=");
            b128(s.x1);
        }
        bstr(" m=");
        b128(s.mem);
        bstr(" ecx=");
        bhex(s.ecx, 8);
        h = flush(h);
        run_case(op);
        u16 cw = *(u16 *)&s.save[0], sw = *(u16 *)&s.save[4], tw = *(u16 *)&s.save[8];
        u16 swmask = 0xf8fd & ~0x0200;               /* not C1, not DE */
        if (op->kind & NOC)
            swmask &= ~0x4500;                       /* C0 C2 C3 undefined */
        if (op->kind & QBITS)
            swmask &= ~0x4100;
        bstr("  -> cw=");
        bhex(cw, 4);
        bstr(" sw=");
        bhex(sw & swmask, 4);
        bstr(" tw=");
        bhex(tw, 4);
        for (int k = 0; k < 3; k++) {
            int phys = ((sw >> 11) + k) & 7;
            if (((tw >> (2 * phys)) & 3) == 3)
                continue;
            bputc(' ');
            b80((f80 *)&s.save[28 + 10 * k], op->kind & TRANS ? 0xfffffffffffffff0ull : ~0ull);
        }
        /* EFLAGS only where the instruction defines them (FCOMI, COMISS & co) */
        int sets_flags = (op->code[0] == 0xdb && (op->code[1] & 0xf0) >= 0xe0) ||
                         (op->code[op->len - 2] == 0x2f || op->code[op->len - 2] == 0x2e);
        bstr(" mx=");
        bhex(s.mxcsr_out & ~2u, 4);
        bstr(" eax=");
        bhex(s.eax, 8);
        bstr(" fl=");
        bhex(sets_flags ? s.eflags & 0x8d5 : 0, 3);
        bstr(op->kind & X87 ? " m=" : " x0=");
        b128(op->kind & X87 ? s.mem : s.y0);
        h = flush(h);
        if (!verbose)
            kprintf("%u %s %08x\n", i, op->name, h);
    }
    kprintf("fpu random: done\n");
    return 0;
}
