/* 64-bit division helpers that gcc calls on IA-32 (normally from libgcc,
 * which this build does not link).  The fast path uses one or two 32-bit
 * divl instructions; the general case (divisor above 32 bits) is a
 * shift-and-subtract loop. */
#include "rvlib.h"

static uint64_t udivmod64(uint64_t n, uint64_t d, uint64_t *rem)
{
    if (d == 0) {
        /* Division by zero: raise #DE like the hardware would. */
        volatile uint32_t zero = 0;
        return (uint32_t)n / zero;
    }
    if ((d >> 32) == 0) {
        uint32_t dl = (uint32_t)d;
        uint32_t nh = (uint32_t)(n >> 32), nl = (uint32_t)n;
        uint32_t qh = 0, ql, r;
        if (nh >= dl) {
            qh = nh / dl;
            nh = nh % dl;
        }
        /* nh < dl, so the quotient of (nh:nl)/dl fits in 32 bits. */
        __asm__("divl %4" : "=a"(ql), "=d"(r) : "a"(nl), "d"(nh), "rm"(dl) : "cc");
        if (rem)
            *rem = r;
        return ((uint64_t)qh << 32) | ql;
    }
    uint64_t q = 0, r = 0;
    for (int i = 63; i >= 0; i--) {
        r = (r << 1) | ((n >> i) & 1);
        if (r >= d) {
            r -= d;
            q |= (uint64_t)1 << i;
        }
    }
    if (rem)
        *rem = r;
    return q;
}

uint64_t __udivdi3(uint64_t n, uint64_t d)
{
    return udivmod64(n, d, 0);
}

uint64_t __umoddi3(uint64_t n, uint64_t d)
{
    uint64_t r;
    udivmod64(n, d, &r);
    return r;
}

int64_t __divdi3(int64_t n, int64_t d)
{
    int neg = (n < 0) != (d < 0);
    uint64_t un = n < 0 ? (uint64_t)0 - (uint64_t)n : (uint64_t)n;
    uint64_t ud = d < 0 ? (uint64_t)0 - (uint64_t)d : (uint64_t)d;
    uint64_t q = udivmod64(un, ud, 0);
    return neg ? (int64_t)((uint64_t)0 - q) : (int64_t)q;
}

int64_t __moddi3(int64_t n, int64_t d)
{
    uint64_t un = n < 0 ? (uint64_t)0 - (uint64_t)n : (uint64_t)n;
    uint64_t ud = d < 0 ? (uint64_t)0 - (uint64_t)d : (uint64_t)d;
    uint64_t r;
    udivmod64(un, ud, &r);
    return n < 0 ? (int64_t)((uint64_t)0 - r) : (int64_t)r;
}

/* gcc combines a / and a % of the same operands into these. */
uint64_t __udivmoddi4(uint64_t n, uint64_t d, uint64_t *rem)
{
    uint64_t r;
    uint64_t q = udivmod64(n, d, &r);
    if (rem)
        *rem = r;
    return q;
}

int64_t __divmoddi4(int64_t n, int64_t d, int64_t *rem)
{
    int64_t q = __divdi3(n, d);
    if (rem)
        *rem = (int64_t)((uint64_t)n - (uint64_t)q * (uint64_t)d);
    return q;
}
