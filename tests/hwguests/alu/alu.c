/* alu: integer workloads as gcc compiles them (built at -O0, -O2 and -O3),
 * plus inline-asm checks of instructions gcc rarely emits.  Every line is a
 * checksum that tests/test_hw_guests.py recomputes in Python.  Only defined
 * results and flags are folded in (no undefined flags, no INT_MIN / -1).
 */
#include "rt.h"

#define NOINL __attribute__((noinline))

static u32 lcg_state;
static u32 lcg(void)
{
    lcg_state = lcg_state * 1103515245u + 12345u;
    return lcg_state;
}

static u32 rd(u32 x)            /* keeps constants opaque to the optimizer */
{
    __asm__ volatile("" : "+r"(x));
    return x;
}

/* ---- 64-bit arithmetic ---- */

NOINL static u64 t_mix64(void)
{
    u64 x = 0x0123456789abcdefULL, acc = 0;
    for (u32 i = 0; i < 200; i++) {
        x = x * 6364136223846793005ULL + 1442695040888963407ULL;
        acc ^= x >> (i % 61);
        acc += x << (i % 7);
        acc = (acc << 13) | (acc >> 51);
        if ((s64)x < 0)
            acc -= (u64)i * 0x9e3779b97f4a7c15ULL;
    }
    return acc;
}

NOINL static u64 t_div64(void)
{
    u64 x = 0x243f6a8885a308d3ULL, h = 0;
    for (u32 i = 0; i < 40; i++) {
        x = x * 6364136223846793005ULL + 1442695040888963407ULL;
        u64 d = (x >> (i % 40 + 3)) | 1;
        u64 q = x / d, r = x % d;
        s64 sn = (s64)x;
        s64 sd = (s64)((d >> 1) | 1);
        if (i & 1)
            sd = -sd;
        s64 sq = sn / sd, sr = sn % sd;
        h = h * 31 + (q ^ r) + (u64)sq + ((u64)sr << 7);
        h ^= x / rd(1000000007u);
    }
    return h;
}

/* ---- 32-bit division ---- */

NOINL static u32 t_div32(void)
{
    u32 h = 0;
    lcg_state = 42;
    for (u32 i = 1; i <= 150; i++) {
        u32 a = lcg(), b = (lcg() >> (i % 31)) | 1;
        s32 sa = (s32)a, sb = (s32)b;
        if (sb == -1)
            sb = 1;
        h = h * 33 + a / b + a % b;
        h ^= (u32)(sa / sb) + (u32)(sa % sb) * 7;
        h += a / 7 + a % 10 + (u32)(sa / 3) + (u32)(sa % -5) + (u32)(sa / 16) + (u32)(sa % 8);
    }
    return h;
}

/* ---- shifts and rotates ---- */

NOINL static u32 t_shifts(void)
{
    u32 h = 0;
    lcg_state = 7;
    for (u32 i = 0; i < 128; i++) {
        u32 v = lcg();
        u32 n = (lcg() >> 8) & 63;           /* 0..63: the hardware masks to 5 bits */
        u32 c = n & 31;
        h += v << c;
        h ^= v >> c;
        h += (u32)((s32)v >> c);
        h ^= (v << c) | (v >> ((32 - c) & 31));  /* rotate idiom -> rol */
        u32 r1 = v, r2 = v, r3 = v, r4 = v, r5 = v;
        __asm__("shll %%cl, %0" : "+r"(r1) : "c"(n) : "cc");
        __asm__("shrl %%cl, %0" : "+r"(r2) : "c"(n) : "cc");
        __asm__("sarl %%cl, %0" : "+r"(r3) : "c"(n) : "cc");
        __asm__("roll %%cl, %0" : "+r"(r4) : "c"(n) : "cc");
        __asm__("rorl %%cl, %0" : "+r"(r5) : "c"(n) : "cc");
        h = h * 3 + r1 + (r2 ^ r3) + r4 * 5 + (r5 ^ 0x5555aaaa);
        u32 hi = lcg(), d1 = v, d2 = v;
        __asm__("shldl %%cl, %2, %0" : "+r"(d1) : "c"(n), "r"(hi) : "cc");
        __asm__("shrdl %%cl, %2, %0" : "+r"(d2) : "c"(n), "r"(hi) : "cc");
        h ^= d1 + (d2 << 1);
        /* RCL/RCR: 33-bit rotates through CF; result and CF are defined */
        u32 k = n & 31, rc1 = v, rc2 = v;
        u8 cf1, cf2, cin = (u8)(i & 1);
        __asm__("btl $0, %k3\n\trcll %%cl, %0\n\tsetc %1"
                : "+r"(rc1), "=q"(cf1) : "c"(k), "r"((u32)cin) : "cc");
        __asm__("btl $0, %k3\n\trcrl %%cl, %0\n\tsetc %1"
                : "+r"(rc2), "=q"(cf2) : "c"(k), "r"((u32)cin) : "cc");
        h += rc1 ^ (rc2 >> 3) ^ ((u32)cf1 << 4) ^ ((u32)cf2 << 9);
        u64 w = ((u64)hi << 32) | v;
        h ^= (u32)(w >> (n & 63)) + (u32)((w << (n & 63)) >> 32);
    }
    return h;
}

/* ---- bit operations ---- */

static u32 popcount_sw(u32 x)
{
    x = x - ((x >> 1) & 0x55555555u);
    x = (x & 0x33333333u) + ((x >> 2) & 0x33333333u);
    x = (x + (x >> 4)) & 0x0f0f0f0fu;
    return (x * 0x01010101u) >> 24;
}

NOINL static u32 t_bits(void)
{
    u32 h = 0;
    u32 bitmap[8] = { 0 };
    lcg_state = 99;
    for (u32 i = 0; i < 120; i++) {
        u32 v = lcg() >> (i % 29);
        if (!v)
            v = 0x80000000u >> (i % 32);
        h += (u32)__builtin_ctz(v) * 3 + (u32)__builtin_clz(v) * 5;
        h ^= __builtin_bswap32(v);
        h += popcount_sw(v) << (i % 8);
        u32 bsf, bsr;
        __asm__("bsfl %1, %0" : "=r"(bsf) : "rm"(v) : "cc");
        __asm__("bsrl %1, %0" : "=r"(bsr) : "rm"(v) : "cc");
        h = h * 7 + bsf + (bsr << 5);
        u32 bitpos = lcg() % 256;
        u8 old;
        switch (i % 3) {
        case 0: __asm__("btsl %2, %1\n\tsetc %0" : "=q"(old), "+m"(bitmap) : "r"(bitpos) : "cc"); break;
        case 1: __asm__("btrl %2, %1\n\tsetc %0" : "=q"(old), "+m"(bitmap) : "r"(bitpos) : "cc"); break;
        default: __asm__("btcl %2, %1\n\tsetc %0" : "=q"(old), "+m"(bitmap) : "r"(bitpos) : "cc"); break;
        }
        h += old;
        u8 t;
        __asm__("btl %2, %1\n\tsetc %0" : "=q"(t) : "r"(v), "r"(i) : "cc");   /* reg: i mod 32 */
        h += (u32)t << 1;
    }
    for (int k = 0; k < 8; k++)
        h = h * 131 + bitmap[k];
    return h;
}

/* ---- compare, setcc, cmov, carries, multiplies ---- */

NOINL static u32 t_cmp(void)
{
    u32 h = 0, cnt_s = 0, cnt_u = 0;
    lcg_state = 1234;
    for (u32 i = 0; i < 150; i++) {
        u32 a = lcg(), b = lcg();
        if (i % 5 == 0)
            b = a;
        s32 sa = (s32)a, sb = (s32)b;
        cnt_s += sa < sb;
        cnt_u += a < b;
        s32 mn = sa < sb ? sa : sb;
        u32 mx = a > b ? a : b;
        s32 ab = sa < 0 ? -(s32)(sa & 0x7fffffff) : sa;
        h = h * 17 + (u32)mn + mx + (u32)ab + (sa >= sb) * 2 + (a <= b) * 4 + (a == b) * 8;
        u32 cm = a, s;
        __asm__("cmpl %2, %1\n\tcmovgl %2, %0" : "+r"(cm) : "r"(a), "r"(b) : "cc");
        u8 seta, setg, setbe;
        __asm__("cmpl %3, %4\n\tseta %0\n\tsetg %1\n\tsetbe %2"
                : "=q"(seta), "=q"(setg), "=q"(setbe) : "r"(b), "r"(a) : "cc");
        s = seta | (setg << 1) | (setbe << 2);
        h ^= cm + s;
        u64 pu = (u64)a * b;
        s64 ps = (s64)sa * sb;
        h += (u32)pu ^ (u32)(pu >> 32) ^ (u32)ps ^ (u32)((u64)ps >> 32);
        u32 lo3, imh;
        __asm__("imull $-77, %1, %0" : "=r"(lo3) : "r"(a) : "cc");
        s32 t = sa;
        __asm__("imull %2" : "=d"(imh), "+a"(t) : "r"(sb) : "cc");
        h += lo3 ^ imh;
        /* 96-bit add with ADC, 96-bit subtract with SBB */
        u32 x0 = a, x1 = b, x2 = i;
        __asm__("addl %3, %0\n\tadcl %4, %1\n\tadcl $0, %2"
                : "+&r"(x0), "+&r"(x1), "+&r"(x2) : "r"(b), "r"(a) : "cc");
        u32 y0 = a, y1 = b, y2 = i;
        __asm__("subl %3, %0\n\tsbbl %4, %1\n\tsbbl $0, %2"
                : "+&r"(y0), "+&r"(y1), "+&r"(y2) : "r"(b), "r"(a) : "cc");
        h ^= x0 + x1 * 3 + x2 * 5 + y0 * 7 + y1 * 11 + y2 * 13;
    }
    return h ^ (cnt_s << 16) ^ cnt_u;
}

/* ---- narrow types, sign extension, BCD, exchange ---- */

NOINL static u32 t_narrow(void)
{
    u32 h = 0;
    lcg_state = 555;
    for (u32 i = 0; i < 120; i++) {
        u32 v = lcg();
        s8 c = (s8)v;
        u8 uc = (u8)(v >> 8);
        s16 w = (s16)(v >> 3);
        u16 uw = (u16)(v >> 11);
        h += (u32)(s32)c + uc + (u32)(s32)w + uw;
        u16 m16 = (u16)(uw * 3 + (u16)c);
        s16 d16 = (s16)(w / (s16)((uc | 1)));
        h = h * 5 + m16 + (u16)d16;
        u32 cwde, cbw;
        __asm__("movl %1, %%eax\n\tcbw\n\tcwde\n\tmovl %%eax, %0" : "=r"(cbw) : "r"(v) : "eax");
        __asm__("movl %1, %%eax\n\tcltd\n\tmovl %%edx, %0" : "=r"(cwde) : "r"(v) : "eax", "edx");
        h ^= cbw + cwde;
        /* 16-bit multiply: DX:AX = AX * r16 */
        u32 ax = v & 0xffff, dx, r16 = (v >> 16) | 1;
        __asm__("mulw %w2" : "+a"(ax), "=d"(dx) : "r"(r16) : "cc");
        h += (ax & 0xffff) + ((dx & 0xffff) << 16);
        /* BCD: DAA after adding two packed-BCD bytes, DAS after subtracting */
        u32 b1 = ((i % 10) << 4) | ((i / 10) % 10), b2 = (((i * 7) % 10) << 4) | ((i * 3) % 10);
        u32 al = b1;
        u8 cf, af;
        __asm__("addb %b3, %b0\n\tdaa\n\tsetc %1\n\tlahf\n\tmovb %%ah, %2"
                : "+a"(al), "=q"(cf), "=m"(af) : "q"(b2) : "cc");
        h += (al & 0xff) + ((u32)cf << 8) + ((u32)(af & 0x10) << 5);
        al = b1;
        __asm__("subb %b3, %b0\n\tdas\n\tsetc %1\n\tlahf\n\tmovb %%ah, %2"
                : "+a"(al), "=q"(cf), "=m"(af) : "q"(b2) : "cc");
        h += (al & 0xff) * 3 + ((u32)cf << 10) + ((u32)(af & 0x10) << 7);
        u32 amv = v & 0xff, adv = v & 0xffff;
        __asm__("aam" : "+a"(amv) :: "cc");
        __asm__("aad" : "+a"(adv) :: "cc");
        h ^= (amv & 0xffff) + ((adv & 0xffff) << 16);
        /* XADD, CMPXCHG (success and failure), XCHG */
        u32 mem = v, add = i;
        __asm__("lock xaddl %0, %1" : "+r"(add), "+m"(mem) :: "cc");
        u32 expect = (i & 1) ? mem : mem + 1, newv = i * 3;
        u8 ok;
        __asm__("lock cmpxchgl %3, %1\n\tsetz %2" : "+a"(expect), "+m"(mem), "=q"(ok) : "r"(newv) : "cc");
        u32 xv = i;
        __asm__("xchgl %0, %1" : "+r"(xv), "+m"(mem));
        h += add + expect * 3 + ok * 5 + mem * 7 + xv;
    }
    return h;
}

/* ---- string instructions and copy loops ---- */

static u8 sbuf[512], dbuf[512];

static u32 fnv(const u8 *p, u32 n)
{
    u32 h = 2166136261u;
    for (u32 i = 0; i < n; i++)
        h = (h ^ p[i]) * 16777619u;
    return h;
}

NOINL static u32 t_strings(void)
{
    u32 h;
    for (u32 i = 0; i < 512; i++)
        sbuf[i] = (u8)(i * 7 + (i >> 3));
    /* rep stosl: fill dbuf[0..255] with a dword pattern */
    void *di = dbuf;
    u32 n = 64;
    __asm__ volatile("cld\n\trep stosl" : "+D"(di), "+c"(n) : "a"(0xa5c3e1f0) : "memory");
    /* rep movsb: sbuf[3..203) -> dbuf[256+5..] */
    void *si = sbuf + 3;
    di = dbuf + 261;
    n = 200;
    __asm__ volatile("rep movsb" : "+D"(di), "+S"(si), "+c"(n) :: "memory");
    u32 end_di = (u32)di - (u32)dbuf, end_si = (u32)si - (u32)sbuf;
    /* rep movsl */
    si = sbuf + 100;
    di = dbuf + 460;
    n = 12;
    __asm__ volatile("rep movsl" : "+D"(di), "+S"(si), "+c"(n) :: "memory");
    /* backwards overlapping copy with DF=1: memmove(dbuf+20, dbuf+10, 40) */
    si = dbuf + 49;
    di = dbuf + 59;
    n = 40;
    __asm__ volatile("std\n\trep movsb\n\tcld" : "+D"(di), "+S"(si), "+c"(n) :: "memory");
    /* C copy loop */
    for (u32 i = 0; i < 30; i++)
        dbuf[200 + i] = sbuf[i * 3];
    h = fnv(dbuf, 512);
    /* repne scasb: find the first byte 0x7f in sbuf */
    di = sbuf;
    n = 512;
    __asm__ volatile("repne scasb" : "+D"(di), "+c"(n) : "a"(0x7f) : "memory", "cc");
    u32 found = (u32)di - (u32)sbuf, left = n;
    /* repe cmpsb: compare sbuf and a copy with one byte changed */
    for (u32 i = 0; i < 300; i++)
        dbuf[i] = sbuf[i];
    dbuf[222] ^= 1;
    si = sbuf;
    di = dbuf;
    n = 300;
    __asm__ volatile("repe cmpsb" : "+D"(di), "+S"(si), "+c"(n) :: "memory", "cc");
    u32 diff = (u32)si - (u32)sbuf, left2 = n;
    /* lodsb / stosb loop: byte-wise transform */
    si = sbuf;
    di = dbuf;
    n = 64;
    __asm__ volatile("1: lodsb\n\txorb $0x5a, %%al\n\tstosb\n\tloop 1b"
                     : "+D"(di), "+S"(si), "+c"(n) :: "eax", "memory");
    h ^= fnv(dbuf, 64);
    return h + end_di * 3 + end_si * 5 + found * 7 + left * 11 + diff * 13 + left2 * 17;
}

/* ---- switch tables ---- */

NOINL static u32 sw(u32 k, u32 v)
{
    switch (k) {
    case 0: return v + 1;
    case 1: return v * 3;
    case 2: return v ^ 0xdeadbeef;
    case 3: return v >> 3;
    case 4: return v << 5;
    case 5: return ~v;
    case 6: return v - 12345;
    case 7: return v * v;
    case 8: return (v << 16) | (v >> 16);
    case 9: return v / 3;
    case 10: return v % 1000;
    case 11: return v & 0xff00ff;
    case 12: return v | 0x10101;
    case 13: return (u32)-(s32)v;
    case 14: return v + (v >> 1);
    case 15: return 0x12345678;
    default: return v;
    }
}

NOINL static u32 t_switch(void)
{
    u32 h = 1;
    lcg_state = 4321;
    for (u32 i = 0; i < 200; i++)
        h = h * 3 + sw(lcg() % 18, h);
    return h;
}

/* ---- recursion ---- */

NOINL static u32 fib(u32 n) { return n < 2 ? n : fib(n - 1) + fib(n - 2); }

NOINL static u32 ack(u32 m, u32 n)
{
    if (m == 0)
        return n + 1;
    if (n == 0)
        return ack(m - 1, 1);
    return ack(m - 1, ack(m, n - 1));
}

static u32 arr[64];
NOINL static u32 dsum(u32 lo, u32 hi)          /* divide-and-conquer hash */
{
    if (hi - lo == 1)
        return arr[lo];
    u32 mid = (lo + hi) / 2;
    u32 a = dsum(lo, mid), b = dsum(mid, hi);
    return a * 31 + b;
}

NOINL static u32 gcd(u32 a, u32 b) { return b ? gcd(b, a % b) : a; }

NOINL static u32 t_recursion(void)
{
    for (u32 i = 0; i < 64; i++)
        arr[i] = i * i + 1;
    u32 g = 0;
    for (u32 i = 1; i < 40; i++)
        g += gcd(i * 1071, 462 + i);
    return fib(15) * 1000003u + ack(2, 3) * 7919u + dsum(0, 64) + g;
}

int main(void)
{
    kprintf("alu: start\n");
    u64 m = t_mix64();
    kprintf("mix64: 0x%08x%08x\n", (u32)(m >> 32), (u32)m);
    u64 d = t_div64();
    kprintf("div64: 0x%08x%08x\n", (u32)(d >> 32), (u32)d);
    kprintf("div32: 0x%08x\n", t_div32());
    kprintf("shifts: 0x%08x\n", t_shifts());
    kprintf("bits: 0x%08x\n", t_bits());
    kprintf("cmp: 0x%08x\n", t_cmp());
    kprintf("narrow: 0x%08x\n", t_narrow());
    kprintf("strings: 0x%08x\n", t_strings());
    kprintf("switch: 0x%08x\n", t_switch());
    kprintf("recursion: 0x%08x\n", t_recursion());
    kprintf("alu: done\n");
    return 0;
}
