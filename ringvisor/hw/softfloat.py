"""IEEE 754 binary floating point, computed exactly with Python integers.

Python's floats are the host's doubles: right for ``+ - * / sqrt`` in
round-to-nearest and nothing else (no other rounding modes, no exception
flags, no single or 80-bit extended precision).  The x87 and SSE units are
modelled here instead, on integers: a finite operand is ``sig * 2**exp``
exactly, an operation computes its exact result (or enough bits of it plus a
sticky bit), and :func:`round_pack` rounds once, the way the SDM describes
(Vol. 1 §4.8.4, §4.9): rounding control, x87 precision control, tininess
detected *after* rounding with unbounded exponent (§4.9.1.5), denormal
results, overflow to infinity or to the largest finite number, and the x87
"biased result" of an unmasked overflow or underflow (§8.5.4, §8.5.5).

Three formats: :data:`F32`, :data:`F64` and :data:`F80` (double extended,
explicit integer bit; pseudo-denormals are read as denormals, and the other
encodings the 387 stopped supporting — unnormals, pseudo-NaNs,
pseudo-infinities — are invalid operands, SDM Vol. 1 §8.2.2).

Every operation returns ``(bits, flags)``: the packed result and the
exception flags it raised, in the bit positions the x87 status word and
MXCSR share (IE DE ZE OE UE PE), plus :data:`C1_UP` (bit 9, where the x87
keeps C1) when the significand was rounded up in magnitude (SDM Vol. 1
§8.1.3.3).  NaN results follow SDM Vol. 1 Table 4-7, whose two columns are
the ``x87`` argument.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# exception flags: bit positions shared by the x87 status word and MXCSR
IE, DE, ZE, OE, UE, PE = 0x1, 0x2, 0x4, 0x8, 0x10, 0x20
C1_UP = 0x200                  # "the significand was rounded up" (x87 C1)

# rounding control: the same encoding in the x87 control word and in MXCSR
RN, RD, RU, RZ = 0, 1, 2, 3

# operand classes
ZERO, FINITE, INF, QNAN, SNAN, BAD = range(6)


@dataclass(frozen=True)
class Fmt:
    """A binary interchange format (or the x87's double extended one)."""

    name: str
    ebits: int           # exponent field width
    p: int               # significand precision, including the leading bit
    explicit: bool       # the leading bit is stored (double extended)

    @property
    def width(self) -> int:
        return 1 + self.ebits + self.p - (0 if self.explicit else 1)

    @property
    def bias(self) -> int:
        return (1 << (self.ebits - 1)) - 1

    @property
    def emin(self) -> int:             # exponent of the smallest normal number
        return 1 - self.bias

    @property
    def mbits(self) -> int:            # stored significand bits
        return self.p if self.explicit else self.p - 1


F32 = Fmt("single", 8, 24, False)
F64 = Fmt("double", 11, 53, False)
F80 = Fmt("extended", 15, 64, True)


class _Layout:
    """Precomputed masks of a format (plain attributes: the hot paths read them)."""

    def __init__(self, f: Fmt) -> None:
        self.f = f
        self.mbits = f.mbits
        self.sign = 1 << (f.width - 1)
        self.emask = (1 << f.ebits) - 1
        self.mmask = (1 << f.mbits) - 1
        self.quiet = 1 << (f.p - 2)          # the quiet bit: the fraction's top bit
        self.int_bit = 1 << (f.p - 1)        # the leading bit (stored only in F80)
        self.bias = f.bias
        self.emin = f.emin
        self.p = f.p
        self.explicit = f.explicit
        self.inf = self.emask << f.mbits | (self.int_bit if f.explicit else 0)
        # the default NaN ("real indefinite", SDM Vol. 1 §4.8.3.7): negative, quiet
        self.indefinite = self.sign | self.inf | self.quiet


L32, L64, L80 = _Layout(F32), _Layout(F64), _Layout(F80)
LAYOUT = {F32: L32, F64: L64, F80: L80}


def classify(L: _Layout, bits: int) -> tuple[int, int, int, int]:
    """``(class, sign, exp, sig)``: a finite value is ``(-1)**sign * sig * 2**exp``."""
    sign = 1 if bits & L.sign else 0
    e = (bits >> L.mbits) & L.emask
    m = bits & L.mmask
    if L.explicit:
        if e == 0:
            if m == 0:
                return ZERO, sign, 0, 0
            # a denormal, or a pseudo-denormal (integer bit set): both are read
            # with the smallest normal exponent
            return FINITE, sign, L.emin - (L.p - 1), m
        if e == L.emask:
            if not m & L.int_bit:
                return BAD, sign, 0, m             # pseudo-infinity / pseudo-NaN
            if m == L.int_bit:
                return INF, sign, 0, 0
            return (QNAN if m & L.quiet else SNAN), sign, 0, m
        if not m & L.int_bit:
            return BAD, sign, 0, m                 # unnormal
        return FINITE, sign, e - L.bias - (L.p - 1), m
    if e == 0:
        if m == 0:
            return ZERO, sign, 0, 0
        return FINITE, sign, L.emin - (L.p - 1), m
    if e == L.emask:
        if m == 0:
            return INF, sign, 0, 0
        return (QNAN if m & L.quiet else SNAN), sign, 0, m
    return FINITE, sign, e - L.bias - (L.p - 1), m | L.int_bit


def is_denormal(L: _Layout, bits: int) -> bool:
    """Exponent field zero, significand not zero (pseudo-denormals included)."""
    return not (bits >> L.mbits) & L.emask and bool(bits & L.mmask)


def is_nan(L: _Layout, bits: int) -> bool:
    return (bits >> L.mbits) & L.emask == L.emask and bits & L.mmask != (L.int_bit if L.explicit else 0)


def zero(L: _Layout, sign: int) -> int:
    return L.sign if sign else 0


def infinity(L: _Layout, sign: int) -> int:
    return (L.sign if sign else 0) | L.inf


def quiet(L: _Layout, bits: int) -> int:
    return bits | L.quiet


def largest(L: _Layout, sign: int, p: int) -> int:
    """The largest finite number with a ``p``-bit significand."""
    sig = ((1 << p) - 1) << (L.p - p)
    return (L.sign if sign else 0) | (L.emask - 1) << L.mbits | (sig & L.mmask) | \
        (L.int_bit if L.explicit else 0)


def convert_nan(Lsrc: _Layout, Ldst: _Layout, bits: int) -> int:
    """A NaN in another format: sign and the top of the payload kept, made quiet."""
    sign = Ldst.sign if bits & Lsrc.sign else 0
    frac = bits & (Lsrc.mmask if not Lsrc.explicit else Lsrc.mmask >> 1)
    fb_src, fb_dst = Lsrc.p - 1, Ldst.p - 1
    frac = frac << (fb_dst - fb_src) if fb_dst >= fb_src else frac >> (fb_src - fb_dst)
    return sign | Ldst.inf | frac | Ldst.quiet


# --- rounding ------------------------------------------------------------------------
def _round_bits(sig: int, shift: int, rc: int, sign: int) -> tuple[int, bool, bool]:
    """Drop ``shift`` low bits of ``sig`` by ``rc``: (kept, inexact, rounded up in magnitude)."""
    if shift <= 0:
        return sig << -shift, False, False
    kept = sig >> shift
    rem = sig & ((1 << shift) - 1)
    if not rem:
        return kept, False, False
    if rc == RN:
        half = 1 << (shift - 1)
        up = rem > half or (rem == half and kept & 1)
    elif rc == RZ:
        up = False
    elif rc == RD:
        up = bool(sign)
    else:
        up = not sign
    return kept + up, True, up


def round_pack(L: _Layout, sign: int, exp: int, sig: int, rc: int, p: int | None = None,
               ftz: bool = False, um: bool = True, om: bool = True, wrap: int = 0) -> tuple[int, int]:
    """Round ``(-1)**sign * sig * 2**exp`` (``sig > 0``) into format ``L``.

    ``p`` is the precision (x87 precision control; the format's own by default).
    ``um``/``om``: underflow/overflow masked.  With ``wrap`` (the x87's 24576, for
    a register destination) an unmasked overflow or underflow delivers the result
    with its exponent moved back into range by ``2**∓wrap`` (SDM Vol. 1 §8.5.4-5).
    ``ftz`` is MXCSR.FZ: a tiny result with underflow masked becomes zero.
    The caller supplies at least two bits below the rounding point, with any
    further nonzero bits ORed into the lowest (sticky) one.
    """
    if p is None:
        p = L.p
    n = sig.bit_length()
    E = exp + n - 1                              # exponent of the leading bit
    emin, emax = L.emin, L.bias
    flags = 0
    # tininess after rounding (SDM Vol. 1 §4.9.1.5): the result rounded to p bits
    # with an unbounded exponent is below the smallest normal number
    tiny = False
    if E < emin:
        if E < emin - 1:
            tiny = True
        else:
            k, _, _ = _round_bits(sig, n - p, rc, sign)
            tiny = k.bit_length() <= p           # no carry up to 2**emin
    if tiny:
        if not um:
            flags |= UE
            if wrap:
                return _wrapped(L, sign, exp + wrap, sig, rc, p, flags)
        elif ftz:
            return zero(L, sign), UE | PE
    q = max(E - p + 1, emin - p + 1)              # weight of the result's last bit
    kept, inexact, up = _round_bits(sig, q - exp, rc, sign)
    if inexact:
        flags |= PE | (C1_UP if up else 0)
        if tiny:
            flags |= UE
    if kept == 0:
        return zero(L, sign), flags
    if kept >> p:                                 # carried into a new leading bit
        kept >>= 1
        q += 1
    Er = q + kept.bit_length() - 1
    if Er > emax:
        if not om:
            flags |= OE
            if wrap:
                return _wrapped(L, sign, exp - wrap, sig, rc, p, flags & ~(PE | C1_UP | UE))
            return 0, flags
        flags |= OE | PE
        if rc == RN or (rc == RU and not sign) or (rc == RD and sign):
            return infinity(L, sign), flags | C1_UP
        return largest(L, sign, p), flags & ~C1_UP
    return _pack(L, sign, Er, kept, q), flags


def _wrapped(L, sign, exp, sig, rc, p, flags):
    """An unmasked x87 overflow/underflow: round to p bits, exponent brought into range."""
    n = sig.bit_length()
    kept, inexact, up = _round_bits(sig, n - p, rc, sign)
    q = exp + n - p
    if kept >> p:
        kept >>= 1
        q += 1
    if inexact:
        flags |= PE | (C1_UP if up else 0)
    Er = q + kept.bit_length() - 1
    return _pack(L, sign, Er, kept, q), flags


def _pack(L: _Layout, sign: int, Er: int, kept: int, q: int) -> int:
    """Pack ``kept * 2**q`` (leading bit at ``2**Er``) — normal or denormal."""
    s = L.sign if sign else 0
    if Er < L.emin:                                # denormal: exponent field 0
        return s | kept << (q - (L.emin - (L.p - 1)))
    m = kept << (L.p - kept.bit_length())          # left-justify in the p-bit significand
    if not L.explicit:
        m &= L.mmask
    return s | (Er + L.bias) << L.mbits | m


def pack_exact(L: _Layout, sign: int, exp: int, sig: int) -> int:
    """A value known to be representable (conversions to a wider format)."""
    if sig == 0:
        return zero(L, sign)
    bits, _ = round_pack(L, sign, exp, sig, RN)
    return bits


# --- operand screening -----------------------------------------------------------------
class Operand:
    """An unpacked operand (kept small: one per source of an operation)."""

    __slots__ = ("cls", "sign", "exp", "sig", "bits")

    def __init__(self, L: _Layout, bits: int, daz: bool = False) -> None:
        self.bits = bits
        self.cls, self.sign, self.exp, self.sig = classify(L, bits)
        if daz and self.cls == FINITE and is_denormal(L, bits):
            self.cls, self.sig = ZERO, 0


def denormal_flag(L: _Layout, *bits: int) -> int:
    mb, em, mm = L.mbits, L.emask, L.mmask
    for b in bits:
        if not (b >> mb) & em and b & mm:
            return DE
    return 0


def nan_result(L: _Layout, a: Operand, b: Operand | None, x87: bool) -> tuple[int, int]:
    """The result of an operation with a NaN (or invalid) operand: SDM Vol. 1 Table 4-7."""
    flags = 0
    ops = [o for o in (a, b) if o is not None]
    if any(o.cls == BAD for o in ops):
        return L.indefinite, IE
    if any(o.cls == SNAN for o in ops):
        flags = IE
    nans = [o for o in ops if o.cls in (QNAN, SNAN)]
    if len(nans) == 1 or not x87:
        return nans[0].bits | L.quiet, flags       # SSE: the first source that is a NaN
    x, y = nans
    if x.cls != y.cls:                               # x87: SNaN and QNaN -> the QNaN
        return (x if x.cls == QNAN else y).bits, flags
    mx, my = x.bits & L.mmask, y.bits & L.mmask      # x87: the larger significand
    if mx != my:
        return (x if mx > my else y).bits | L.quiet, flags
    # equal significands: the positive one (as QEMU's x87 picks)
    return (x if not x.sign else y).bits | L.quiet, flags


# --- arithmetic -------------------------------------------------------------------------
GUARD = 3            # extra low bits kept below the rounding point (round, guard, sticky)


def _sticky_div(num: int, den: int, bits: int) -> int:
    """``num / den`` as an integer with ``bits`` significant bits at least, sticky in bit 0."""
    shift = max(0, bits + den.bit_length() - num.bit_length() + 1)
    q, r = divmod(num << shift, den)
    return (q << 1 | (1 if r else 0)), -shift - 1


def add(L: _Layout, a: Operand, b: Operand, rc: int, x87: bool, negate_b: bool = False,
        p: int | None = None, ftz: bool = False, um: bool = True, om: bool = True,
        wrap: int = 0) -> tuple[int, int]:
    """``a + b`` (or ``a - b`` with ``negate_b``)."""
    bsign = b.sign ^ negate_b
    if a.cls >= QNAN or b.cls >= QNAN:
        return nan_result(L, a, b, x87)
    if a.cls == INF or b.cls == INF:
        if a.cls == INF and b.cls == INF and a.sign != bsign:
            return L.indefinite, IE
        return infinity(L, a.sign if a.cls == INF else bsign), 0
    if a.cls == ZERO and b.cls == ZERO:
        if a.sign == bsign:
            return zero(L, a.sign), 0
        return zero(L, 1 if rc == RD else 0), 0
    if b.cls == ZERO:
        return _reround(L, a.sign, a.exp, a.sig, rc, p, ftz, um, om, wrap)
    if a.cls == ZERO:
        return _reround(L, bsign, b.exp, b.sig, rc, p, ftz, um, om, wrap)
    ea, eb = a.exp, b.exp
    sa, sb = a.sig, b.sig
    # align: a distant smaller operand only matters as a sticky bit
    lead_a, lead_b = ea + sa.bit_length(), eb + sb.bit_length()
    limit = L.p + GUARD + 2
    if lead_a - limit > lead_b:
        sb, eb = 1, lead_a - limit - 2
    elif lead_b - limit > lead_a:
        sa, ea = 1, lead_b - limit - 2
    e = min(ea, eb)
    va = (sa << (ea - e)) * (-1 if a.sign else 1)
    vb = (sb << (eb - e)) * (-1 if bsign else 1)
    v = va + vb
    if v == 0:
        return zero(L, 1 if rc == RD else 0), 0
    return round_pack(L, 1 if v < 0 else 0, e, abs(v), rc, p, ftz, um, om, wrap)


def _reround(L, sign, exp, sig, rc, p, ftz, um, om, wrap):
    """A single finite operand passed through an operation (x + 0): rounded to precision."""
    return round_pack(L, sign, exp, sig, rc, p, ftz, um, om, wrap)


def mul(L: _Layout, a: Operand, b: Operand, rc: int, x87: bool, p: int | None = None,
        ftz: bool = False, um: bool = True, om: bool = True, wrap: int = 0) -> tuple[int, int]:
    if a.cls >= QNAN or b.cls >= QNAN:
        return nan_result(L, a, b, x87)
    sign = a.sign ^ b.sign
    if a.cls == INF or b.cls == INF:
        if a.cls == ZERO or b.cls == ZERO:
            return L.indefinite, IE
        return infinity(L, sign), 0
    if a.cls == ZERO or b.cls == ZERO:
        return zero(L, sign), 0
    return round_pack(L, sign, a.exp + b.exp, a.sig * b.sig, rc, p, ftz, um, om, wrap)


def div(L: _Layout, a: Operand, b: Operand, rc: int, x87: bool, p: int | None = None,
        ftz: bool = False, um: bool = True, om: bool = True, wrap: int = 0) -> tuple[int, int]:
    if a.cls >= QNAN or b.cls >= QNAN:
        return nan_result(L, a, b, x87)
    sign = a.sign ^ b.sign
    if a.cls == INF:
        if b.cls == INF:
            return L.indefinite, IE
        return infinity(L, sign), 0
    if b.cls == INF:
        return zero(L, sign), 0
    if b.cls == ZERO:
        if a.cls == ZERO:
            return L.indefinite, IE
        return infinity(L, sign), ZE
    if a.cls == ZERO:
        return zero(L, sign), 0
    q, e = _sticky_div(a.sig, b.sig, L.p + GUARD)
    return round_pack(L, sign, a.exp - b.exp + e, q, rc, p, ftz, um, om, wrap)


def isqrt_sticky(v: int) -> tuple[int, bool]:
    r = math.isqrt(v)
    return r, r * r != v


def sqrt(L: _Layout, a: Operand, rc: int, x87: bool, p: int | None = None, ftz: bool = False,
         um: bool = True, om: bool = True, wrap: int = 0) -> tuple[int, int]:
    if a.cls >= QNAN:
        return nan_result(L, a, None, x87)
    if a.cls == ZERO:
        return zero(L, a.sign), 0                 # sqrt(-0) = -0 (a DAZ denormal is a zero)
    if a.sign:
        return L.indefinite, IE
    if a.cls == INF:
        return a.bits, 0
    sig, exp = a.sig, a.exp
    # 2(p + GUARD) significant bits under the root, and an even exponent
    shift = max(0, 2 * (L.p + GUARD) - sig.bit_length())
    if (exp - shift) & 1:
        shift += 1
    r, inexact = isqrt_sticky(sig << shift)
    return round_pack(L, 0, (exp - shift) // 2 - 1, r << 1 | inexact, rc, p, ftz, um, om, wrap)


# --- comparison ---------------------------------------------------------------------------
LT, EQ, GT, UN = 0, 1, 2, 3


def compare(a: Operand, b: Operand, signal_qnan: bool) -> tuple[int, int]:
    """Relation of ``a`` to ``b`` and the flags: IE for an SNaN (any NaN if ``signal_qnan``)."""
    if a.cls >= QNAN or b.cls >= QNAN:
        sig = a.cls in (SNAN, BAD) or b.cls in (SNAN, BAD) or signal_qnan
        return UN, IE if sig else 0
    sa = 0 if a.cls == ZERO else (-1 if a.sign else 1)
    sb = 0 if b.cls == ZERO else (-1 if b.sign else 1)
    if sa != sb:
        return (LT if sa < sb else GT), 0
    if sa == 0:
        return EQ, 0
    if a.cls == INF or b.cls == INF:
        c = (a.cls == INF) - (b.cls == INF)
    else:
        c = compare_magnitude(a.exp, a.sig, b.exp, b.sig)
    if sa < 0:
        c = -c
    return (LT if c < 0 else GT if c > 0 else EQ), 0


def compare_magnitude(ea: int, sa: int, eb: int, sb: int) -> int:
    """-1, 0 or 1 as ``sa * 2**ea`` is below, equal to or above ``sb * 2**eb`` (both > 0)."""
    la, lb = ea + sa.bit_length(), eb + sb.bit_length()
    if la != lb:
        return -1 if la < lb else 1
    e = min(ea, eb)
    x, y = sa << (ea - e), sb << (eb - e)
    return (x > y) - (x < y)


# --- integers ---------------------------------------------------------------------------
def from_int(L: _Layout, v: int, rc: int, p: int | None = None) -> tuple[int, int]:
    if v == 0:
        return 0, 0
    return round_pack(L, 1 if v < 0 else 0, 0, abs(v), rc, p)


def to_int(a: Operand, bits: int, rc: int) -> tuple[int | None, int]:
    """Round to a signed ``bits``-bit integer: (value, flags); None when invalid (IE)."""
    if a.cls in (QNAN, SNAN, BAD, INF):
        return None, IE
    if a.cls == ZERO:
        return 0, 0
    v, inexact, _ = _round_bits(a.sig, -a.exp, rc, a.sign) if a.exp < 0 else (a.sig << a.exp, False, False)
    if a.sign:
        v = -v
    if not -(1 << (bits - 1)) <= v < (1 << (bits - 1)):
        return None, IE
    return v, PE if inexact else 0


def round_int(L: _Layout, a: Operand, rc: int, x87: bool) -> tuple[int, int]:
    """Round to an integral value in the same format (FRNDINT)."""
    if a.cls >= QNAN:
        return nan_result(L, a, None, x87)
    if a.cls in (ZERO, INF) or a.exp >= 0:
        return a.bits, 0
    v, inexact, up = _round_bits(a.sig, -a.exp, rc, a.sign)
    flags = (PE | (C1_UP if up else 0)) if inexact else 0
    if v == 0:
        return zero(L, a.sign), flags
    return pack_exact(L, a.sign, 0, v), flags


# --- format conversion ----------------------------------------------------------------------
def convert(Ls: _Layout, Ld: _Layout, bits: int, rc: int, x87: bool, daz: bool = False,
            ftz: bool = False, um: bool = True, om: bool = True) -> tuple[int, int]:
    """Convert between formats (rounding when narrowing)."""
    a = Operand(Ls, bits, daz)
    flags = 0
    if a.cls == BAD:
        return Ld.indefinite, IE
    if a.cls in (QNAN, SNAN):
        return convert_nan(Ls, Ld, bits), IE if a.cls == SNAN else 0
    if a.cls == INF:
        return infinity(Ld, a.sign), flags
    if a.cls == ZERO:
        return zero(Ld, a.sign), flags
    r, f = round_pack(Ld, a.sign, a.exp, a.sig, rc, None, ftz, um, om)
    return r, flags | f
