/* The few libgcc helpers gcc emits calls to on i386 (no libgcc is linked). */
#include "rt.h"

u64 __udivmoddi4(u64 n, u64 d, u64 *rem)
{
    u64 q = 0, r = 0;
    if (d == 0) {
        /* like the hardware: divide by zero (raises #DE) */
        volatile u32 z = 0;
        return (u32)n / z;
    }
    if ((d >> 32) == 0 && (n >> 32) == 0) {
        u32 nn = (u32)n, dd = (u32)d;
        if (rem)
            *rem = nn % dd;
        return nn / dd;
    }
    for (int i = 63; i >= 0; i--) {
        u64 top = r >> 63;                 /* r may exceed 2^63 when d does */
        r = (r << 1) | ((n >> i) & 1);
        if (top || r >= d) {
            r -= d;
            q |= (u64)1 << i;
        }
    }
    if (rem)
        *rem = r;
    return q;
}

u64 __udivdi3(u64 n, u64 d) { return __udivmoddi4(n, d, 0); }

u64 __umoddi3(u64 n, u64 d)
{
    u64 r = 0;
    __udivmoddi4(n, d, &r);
    return r;
}

s64 __divmoddi4(s64 n, s64 d, s64 *rem)
{
    int nneg = n < 0, dneg = d < 0;
    u64 un = nneg ? -(u64)n : (u64)n;
    u64 ud = dneg ? -(u64)d : (u64)d;
    u64 ur = 0;
    u64 uq = __udivmoddi4(un, ud, &ur);
    if (rem)
        *rem = nneg ? (s64)(0 - ur) : (s64)ur;
    return (nneg ^ dneg) ? (s64)(0 - uq) : (s64)uq;
}

s64 __divdi3(s64 n, s64 d) { return __divmoddi4(n, d, 0); }

s64 __moddi3(s64 n, s64 d)
{
    s64 r = 0;
    __divmoddi4(n, d, &r);
    return r;
}

int __popcountsi2(u32 x)
{
    int c = 0;
    for (; x; x >>= 1)
        c += (int)(x & 1);
    return c;
}

int __popcountdi2(u64 x)
{
    return __popcountsi2((u32)x) + __popcountsi2((u32)(x >> 32));
}
