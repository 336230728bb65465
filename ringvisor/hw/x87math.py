"""Correctly rounded transcendental functions for the x87 (FSIN ... FYL2XP1, the constants).

The SDM promises these within an ulp or so of the true value (Vol. 1 §8.3.10,
Appendix?); the emulated unit delivers the true value rounded once by the
rounding control, which satisfies every such bound.  Values are computed in
fixed point on Python integers, with Ziv's strategy: evaluate at some
precision with a proven error bound, round both ends of the interval, and
evaluate again at twice the precision if they round differently.  The
results that are exactly representable (sin 0, log2 of a power of two...)
never reach that loop: the callers in ``x87arith.py`` handle them first.

Argument reduction for FSIN/FCOS/FSINCOS/FPTAN uses π to as many bits as the
argument needs (the real units use a 66-bit π, so their results for large
arguments differ from the true ones; QEMU computes these four in double
precision).
"""

from __future__ import annotations

from . import softfloat as sf
from .softfloat import L80, PE

PREC = 192                      # fraction bits of the constants below


# --- fixed-point series (value = v / 2**p) ---------------------------------------------------------
def _series_inv(n: int, p: int, alternating: bool) -> int:
    """atan(1/n) (alternating) or atanh(1/n) for an integer n > 1: the sum of
    ±1/(k n^k) over odd k, error below a few units."""
    x = (1 << p) // n
    n2 = n * n
    total, k, term = x, 1, x
    while term:
        term //= n2
        k += 2
        total += -(term // k) if alternating and k % 4 == 3 else term // k
    return total


def _atan_inv(n: int, p: int) -> int:
    return _series_inv(n, p, True)


def _atanh_inv(n: int, p: int) -> int:
    return _series_inv(n, p, False)


_CACHE: dict = {}


def pi_fixed(p: int) -> int:
    """π * 2**p (Machin's formula), error at most a few units."""
    key = ("pi", p)
    v = _CACHE.get(key)
    if v is None:
        g = p + 16
        v = (16 * _atan_inv(5, g) - 4 * _atan_inv(239, g)) >> 16
        _CACHE[key] = v
    return v


def ln2_fixed(p: int) -> int:
    key = ("ln2", p)
    v = _CACHE.get(key)
    if v is None:
        g = p + 16
        v = (2 * _atanh_inv(3, g)) >> 16                     # ln 2 = 2 atanh(1/3)
        _CACHE[key] = v
    return v


def _ln10_fixed(p: int) -> int:
    g = p + 16
    # ln 10 = 3 ln 2 + ln(5/4) and ln(5/4) = 2 atanh(1/9)
    return (3 * 2 * _atanh_inv(3, g) + 2 * _atanh_inv(9, g)) >> 16


def _constants():
    g = PREC + 32
    one = 1 << (2 * g)
    ln2, ln10 = ln2_fixed(g), _ln10_fixed(g)
    pi = pi_fixed(g)
    return (pi >> 32, ln2 >> 32, (one // ln2) >> 32, ((ln10 << g) // ln2) >> 32,
            ((ln2 << g) // ln10) >> 32)


# the x87's load-constant instructions (SDM Vol. 1 §8.3.8), each as value * 2**PREC
PI, LN2, LOG2_E, LOG2_10, LOG10_2 = _constants()


# --- Ziv rounding -----------------------------------------------------------------------------------
def ziv(evaluate, rc: int, um: bool = True, om: bool = True, wrap: int = 0) -> tuple[int, int]:
    """Round a transcendental value: ``evaluate(p)`` gives ``(v, err, scale)`` with the true
    value inside ``[(v - err) * 2**scale, (v + err) * 2**scale]`` and not zero."""
    p = 96
    while True:
        v, err, scale = evaluate(p)
        lo, hi = v - err, v + err
        if lo > 0 or hi < 0:
            sign = 1 if v < 0 else 0
            a = sf.round_pack(L80, sign, scale, abs(lo), rc, 64, False, um, om, wrap)
            b = sf.round_pack(L80, sign, scale, abs(hi), rc, 64, False, um, om, wrap)
            if a[0] == b[0] and (a[1] | PE) == (b[1] | PE):
                return a[0], a[1] | PE
        p *= 2
        if p > 1 << 17:
            raise ArithmeticError("transcendental rounding did not converge")


def _fixed(sig: int, exp: int, p: int) -> int:
    """sig * 2**exp as a fixed-point integer with p fraction bits (truncated)."""
    s = exp + p
    return sig << s if s >= 0 else sig >> -s


def _mag(sig: int, exp: int) -> int:
    """The exponent of the leading bit of sig * 2**exp."""
    return exp + sig.bit_length() - 1


# --- sine, cosine, tangent -------------------------------------------------------------------------
def _sin_cos_fixed(r: int, p: int) -> tuple[int, int]:
    """sin r and cos r for |r| <= ~0.8, fixed point with p bits (error a few units)."""
    one = 1 << p
    r2 = (r * r) >> p
    s, term, k = r, r, 1
    while term:
        term = -(term * r2 >> p) // ((k + 1) * (k + 2))
        s += term
        k += 2
    c, term, k = one, one, 0
    while term:
        term = -(term * r2 >> p) // ((k + 1) * (k + 2))
        c += term
        k += 2
    return s, c


def sin_cos(sign: int, sig: int, exp: int, which: str):
    """An evaluator for ``ziv``: sin, cos or tan of ``(-1)**sign * sig * 2**exp`` (|x| < 2**63)."""
    lead = _mag(sig, exp)

    def evaluate(p: int):
        # enough bits that the reduced argument keeps p significant bits even when x is
        # tiny (the series' absolute error is then small next to x)
        q = p + 24 + max(0, -lead)
        g = q + max(0, lead) + 8                # π's bits must cover x's integer part too
        half_pi = pi_fixed(g) >> 1              # error < 2 units of 2**-g
        x = _fixed(sig, exp, g)
        k = (2 * x + half_pi) // (2 * half_pi)   # nearest multiple of π/2
        r = (x - k * half_pi) >> (g - q)
        s, c = _sin_cos_fixed(r, q)
        # series truncation (a couple of units per term) + the reduction (k times π's error)
        err = 64 + q + (k * 2 >> (g - q))
        quadrant = k & 3
        if which == "tan":
            sn, cs = (s, c) if quadrant in (0, 2) else (c, -s)
            if abs(cs) <= 2 * err:
                return 0, 1, 0                   # too close to a pole: more bits
            t = (sn << q) // cs
            # error of a quotient: (e*|c| + e*|s|) / c**2, plus truncation
            terr = ((err * (abs(sn) + abs(cs))) << q) // (cs * cs - 2 * err * abs(cs)) + 2
            return (-t if sign else t), terr, -q
        v = {0: (s, c), 1: (c, -s), 2: (-s, -c), 3: (-c, s)}[quadrant][0 if which == "sin" else 1]
        if which == "sin" and sign:
            v = -v
        return v, err, -q
    return evaluate


# --- 2**x - 1 ---------------------------------------------------------------------------------------
def exp2m1(sign: int, sig: int, exp: int):
    """2**x - 1 for |x| <= 1 (F2XM1)."""
    lead = _mag(sig, exp)

    def evaluate(p: int):
        q = p + 24 + max(0, -lead)
        ln2 = ln2_fixed(q + 8) >> 8
        y = _fixed(sig, exp, q) * ln2 >> q          # x ln 2, |y| < 0.7
        if sign:
            y = -y
        total, term, k = 0, 1 << q, 0
        while True:
            k += 1
            term = term * y // (k << q)
            if term == 0:
                break
            total += term
        return total, 64 + q, -q
    return evaluate


# --- logarithms -------------------------------------------------------------------------------------
def _atanh_fixed(num: int, den: int, p: int) -> int:
    """atanh(num/den) for |num/den| <= 0.2, fixed point with p bits (odd: by |num|)."""
    if num < 0:
        return -_atanh_fixed(-num, den, p)
    t = (num << p) // den
    t2 = t * t >> p
    total, term, k = t, t, 1
    while term:
        term = term * t2 >> p
        k += 2
        total += term // k
    return total


def log2_times(x_sig: int, x_exp: int, y_sign: int, y_sig: int, y_exp: int, plus_one: bool):
    """y * log2(x) (FYL2X) or y * log2(1 + x) (FYL2XP1, x signed in ``x_sig``), x exact.

    log2(m * 2**k) = k + 2 atanh((m - 1)/(m + 1)) / ln 2 with m near 1, so no
    cancellation is lost: the atanh argument is formed exactly as a fraction.
    """
    def evaluate(p: int):
        # the fraction (m - 1) / (m + 1) with integers, x = x_sig * 2**x_exp
        if plus_one:
            k = 0
            if x_exp >= 0:
                num, den = x_sig << x_exp, 2 + (x_sig << x_exp)
            else:
                num, den = x_sig, (2 << -x_exp) + x_sig
        else:
            n = x_sig.bit_length()
            k = x_exp + n - 1                       # x = m * 2**k, m in [1, 2)
            # choose m in [sqrt(2)/2, sqrt(2)): m >= sqrt(2) means m^2 >= 2
            if x_sig * x_sig >= 2 << (2 * (n - 1)):
                k += 1
                mnum, mden = x_sig, 1 << n          # m = x_sig / 2**n
            else:
                mnum, mden = x_sig, 1 << (n - 1)
            num, den = mnum - mden, mnum + mden
        q = p + 24 + max(0, den.bit_length() - abs(num).bit_length())
        ln2 = ln2_fixed(q + 8) >> 8
        lg = ((2 * _atanh_fixed(num, den, q)) << q) // ln2 + (k << q)    # log2, fixed q
        prod = lg * y_sig
        scale = y_exp - q
        err = (64 + 2 * q + 2 * abs(k)) * y_sig
        return (-prod if y_sign else prod), err, scale
    return evaluate


# --- arctangent -------------------------------------------------------------------------------------
def _atan_fixed(t: int, p: int) -> int:
    """atan(t/2**p) for 0 <= t/2**p <= 1: halve the argument, then the series."""
    one = 1 << p
    halvings = 0
    while t > one >> 3:
        # atan(t) = 2 atan(t / (1 + sqrt(1 + t^2)))
        root = _isqrt_fixed(one + (t * t >> p), p)
        t = (t << p) // (one + root)
        halvings += 1
    t2 = t * t >> p
    total, term, k = t, t, 1
    while term:
        term = -(term * t2 >> p)
        k += 2
        total += term // k
    return total << halvings


def _isqrt_fixed(v: int, p: int) -> int:
    import math
    return math.isqrt(v << p)


def atan2(ys: int, ysig: int, yexp: int, xs: int, xsig: int, xexp: int):
    """atan2(y, x) for finite nonzero y and x (FPATAN: ST(1) is y, ST(0) is x)."""
    def evaluate(p: int):
        # |y|/|x| or |x|/|y|, whichever is at most 1, exactly as a fixed-point fraction
        swap = _mag(ysig, yexp) > _mag(xsig, xexp) or \
            (_mag(ysig, yexp) == _mag(xsig, xexp) and
             sf.compare_magnitude(yexp, ysig, xexp, xsig) > 0)
        nsig, nexp, dsig, dexp = (xsig, xexp, ysig, yexp) if swap else (ysig, yexp, xsig, xexp)
        ratio_lead = _mag(nsig, nexp) - _mag(dsig, dexp)
        q = p + 24 + max(0, -ratio_lead)
        e = nexp - dexp + q
        t = (nsig << e) // dsig if e >= 0 else (nsig // dsig) >> -e
        a = _atan_fixed(t, q)                       # atan of the ratio, in [0, π/4]
        pi = pi_fixed(q)
        if swap:
            a = (pi >> 1) - a                       # atan(y/x) = π/2 - atan(x/y)
        if xs:
            a = pi - a                              # left half-plane
        v = -a if ys else a
        return v, 1 << 12, -q
    return evaluate
