"""SSE and SSE2 floating point: arithmetic, comparisons, conversions, on IEEE lanes.

Each packed instruction computes every lane with :mod:`softfloat` under
MXCSR (rounding control, DAZ, FTZ, the masks), gathers the flags of all the
lanes and hands them to ``sse.signal`` before anything is written (SDM Vol. 1
§11.5.2).  Denormal operands raise DE unless DAZ turns them into zeros;
NaN results follow the SSE column of SDM Vol. 1 Table 4-7 (the first operand
that is a NaN, quieted).  MINPS/MAXPS/CMPPS/COMISS have their own NaN rules,
given where they are defined.
"""

from __future__ import annotations

import math
import operator
import struct
from functools import partial

import iced_x86 as ix

from . import softfloat as sf
from .softfloat import DE, IE, L32, L64, PE
from .sse import EFLAGS_OUT, M32, M64, SIMD, Ctx, env, join, signal, simd, split

M = ix.Mnemonic
Op = sf.Operand
CF, PF, AF, ZF, SF_, OF = 0x1, 0x4, 0x10, 0x40, 0x80, 0x800

LAYOUTS = {4: L32, 8: L64}


def _denormals(e, L, *bits: int) -> int:
    return 0 if e.daz else sf.denormal_flag(L, *bits)


def _arith(kind: str):
    def lane(e, L, x: int, y: int) -> tuple[int, int]:
        a, b = Op(L, x, e.daz), Op(L, y, e.daz)
        kw = {"ftz": e.ftz, "um": e.um, "om": e.om}
        if kind == "add":
            r, f = sf.add(L, a, b, e.rc, False, **kw)
        elif kind == "sub":
            r, f = sf.add(L, a, b, e.rc, False, negate_b=True, **kw)
        elif kind == "mul":
            r, f = sf.mul(L, a, b, e.rc, False, **kw)
        else:
            r, f = sf.div(L, a, b, e.rc, False, **kw)
        return r, f | _denormals(e, L, x, y)
    return lane


def _sqrt_lane(e, L, x: int, y: int) -> tuple[int, int]:
    r, f = sf.sqrt(L, Op(L, y, e.daz), e.rc, False, ftz=e.ftz, um=e.um, om=e.om)
    return r, f | _denormals(e, L, y)


def _minmax(is_max: bool):
    """MINPS/MAXPS: a NaN in either operand, or two zeros, give the second (source) operand
    unchanged; a NaN raises IE, QNaN included (SDM Vol. 2 MINPS)."""
    def lane(e, L, x: int, y: int) -> tuple[int, int]:
        a, b = Op(L, x, e.daz), Op(L, y, e.daz)
        flags = _denormals(e, L, x, y)
        if a.cls >= sf.QNAN or b.cls >= sf.QNAN:
            return y, flags | IE
        if a.cls == sf.ZERO and b.cls == sf.ZERO:
            return y, flags
        rel, _ = sf.compare(a, b, False)
        pick_a = rel == (sf.GT if is_max else sf.LT)
        # DAZ makes a denormal operand count as zero; the result is then that zero
        if pick_a:
            return (sf.zero(L, a.sign) if a.cls == sf.ZERO else x), flags
        return (sf.zero(L, b.sign) if b.cls == sf.ZERO else y), flags
    return lane


# CMPPS predicates (imm8 & 7): which relations are true, and whether a QNaN signals
PREDICATES = {0: ({sf.EQ}, False), 1: ({sf.LT}, True), 2: ({sf.LT, sf.EQ}, True),
              3: ({sf.UN}, False), 4: ({sf.LT, sf.GT, sf.UN}, False),
              5: ({sf.GT, sf.EQ, sf.UN}, True), 6: ({sf.GT, sf.UN}, True),
              7: ({sf.LT, sf.GT, sf.EQ}, False)}


def _cmp_lane(imm: int):
    true_set, signals = PREDICATES[imm & 7]

    def lane(e, L, x: int, y: int) -> tuple[int, int]:
        rel, f = sf.compare(Op(L, x, e.daz), Op(L, y, e.daz), signals)
        ones = (1 << (8 * (4 if L is L32 else 8))) - 1
        return (ones if rel in true_set else 0), f | _denormals(e, L, x, y)
    return lane


# --- the fast path ---------------------------------------------------------------------------
# With every exception masked, round to nearest, no DAZ/FTZ and PE already set (the usual
# state of a program's MXCSR after its first inexact result), a lane whose operands and
# result are normal numbers needs no flag at all; its value is the host's IEEE double
# result (exact rounding for + - * / sqrt), narrowed for singles (a double rounding that
# is exact for these five operations, as their results need 2p + 2 bits at most).
FAST_MXCSR_MASK, FAST_MXCSR = 0xFFC0 | PE, 0x1F80 | PE
_D, _F = struct.Struct("<d"), struct.Struct("<f")
_HOST = {"add": operator.add, "sub": operator.sub, "mul": operator.mul, "div": operator.truediv}


def _fast64(op):
    def lane(x: int, y: int) -> int | None:
        if not 0 < (x >> 52) & 0x7FF < 0x7FF or not 0 < (y >> 52) & 0x7FF < 0x7FF:
            return None
        r = int.from_bytes(_D.pack(op(_D.unpack(x.to_bytes(8, "little"))[0],
                                      _D.unpack(y.to_bytes(8, "little"))[0])), "little")
        return r if 0 < (r >> 52) & 0x7FF < 0x7FF else None
    return lane


def _fast32(op):
    def lane(x: int, y: int) -> int | None:
        if not 0 < (x >> 23) & 0xFF < 0xFF or not 0 < (y >> 23) & 0xFF < 0xFF:
            return None
        try:
            r = int.from_bytes(_F.pack(op(_F.unpack(x.to_bytes(4, "little"))[0],
                                          _F.unpack(y.to_bytes(4, "little"))[0])), "little")
        except OverflowError:
            return None
        return r if 0 < (r >> 23) & 0xFF < 0xFF else None
    return lane


def _fast_sqrt(size: int):
    """SQRTPS/PD: the source (``y``) only; a positive normal has a normal root."""
    fmt, shift, emax, n = (_F, 23, 0xFF, 4) if size == 4 else (_D, 52, 0x7FF, 8)

    def lane(x: int, y: int) -> int | None:
        if y >> (8 * n - 1) or not 0 < (y >> shift) & emax < emax:
            return None
        return int.from_bytes(fmt.pack(math.sqrt(fmt.unpack(y.to_bytes(n, "little"))[0])), "little")
    return lane


def _vector(c: Ctx, a: int, b: int, size: int, scalar: bool, lane, fast) -> int:
    """Apply ``lane`` to the lanes (or the low lane, keeping the others of ``a``)."""
    e = env(c.fpu)
    L = LAYOUTS[size]
    if scalar:
        m = (1 << (8 * size)) - 1
        x, y = a & m, b & m
        if fast is not None and e.mxcsr & FAST_MXCSR_MASK == FAST_MXCSR:
            r = fast(x, y)
            if r is not None:
                return (a & ~m) | r
        r, f = lane(e, L, x, y)
        signal(c.cpu, c.fpu, f)
        return (a & ~m) | r
    n = 16 // size
    xs, ys = split(a, size, n), split(b, size, n)
    out, flags = [], 0
    if fast is not None and e.mxcsr & FAST_MXCSR_MASK == FAST_MXCSR:
        for x, y in zip(xs, ys):
            r = fast(x, y)
            if r is None:
                r, f = lane(e, L, x, y)
                flags |= f
            out.append(r)
    else:
        for x, y in zip(xs, ys):
            r, f = lane(e, L, x, y)
            out.append(r)
            flags |= f
    signal(c.cpu, c.fpu, flags)
    return join(out, size)


def _register(ops, lane_factory, host=None):
    for m, size, scalar in ops:
        if host == "sqrt":
            fast = _fast_sqrt(size)
        else:
            fast = None if host is None else (_fast32 if size == 4 else _fast64)(host)
        SIMD[m] = partial(_vector_op, size, scalar, lane_factory, fast)


def _vector_op(size: int, scalar: bool, factory, fast, c: Ctx, a, b):
    return _vector(c, a, b, size, scalar, factory(c), fast)


def _forms(name: str):
    return [(getattr(M, name + "PS"), 4, False), (getattr(M, name + "SS"), 4, True),
            (getattr(M, name + "PD"), 8, False), (getattr(M, name + "SD"), 8, True)]


for _name, _kind in (("ADD", "add"), ("SUB", "sub"), ("MUL", "mul"), ("DIV", "div")):
    _register(_forms(_name), (lambda lane: lambda c: lane)(_arith(_kind)), _HOST[_kind])
_register(_forms("SQRT"), lambda c: _sqrt_lane, "sqrt")
_register(_forms("MIN"), (lambda lane: lambda c: lane)(_minmax(False)))
_register(_forms("MAX"), (lambda lane: lambda c: lane)(_minmax(True)))
_register([(M.CMPPS, 4, False), (M.CMPSS, 4, True), (M.CMPPD, 8, False), (M.CMPSD, 8, True)],
          lambda c: _cmp_lane(c.imm))


def _reciprocal(sqrt_first: bool):
    """RCPPS/RSQRTPS: the SDM gives only a relative error bound (1.5 * 2**-12) and no
    exception flags; the value is 1/x (1/sqrt(x)) rounded as QEMU computes it."""
    def lane(e, L, x: int, y: int) -> tuple[int, int]:
        one = Op(L, 0x3F800000)
        v = Op(L, y, e.daz)
        if sqrt_first:
            s, _ = sf.sqrt(L, v, sf.RN, False)
            v = Op(L, s)
        r, _ = sf.div(L, one, v, sf.RN, False)
        return r, 0
    return lane


_register([(M.RCPPS, 4, False), (M.RCPSS, 4, True)], lambda c: _reciprocal(False))
_register([(M.RSQRTPS, 4, False), (M.RSQRTSS, 4, True)], lambda c: _reciprocal(True))


# --- COMISS / UCOMISS -------------------------------------------------------------------------------------
EFLAGS_CODES = {sf.GT: 0, sf.LT: CF, sf.EQ: ZF, sf.UN: ZF | PF | CF}


@simd(M.COMISS, M.UCOMISS, M.COMISD, M.UCOMISD)
def comiss(c: Ctx, a, b, eflags: int) -> int:
    """ZF PF CF from the comparison, OF SF AF cleared; COMISS signals on any NaN."""
    m = c.d.mnemonic
    L = L32 if m in (M.COMISS, M.UCOMISS) else L64
    mask = M32 if L is L32 else M64
    e = env(c.fpu)
    x, y = a & mask, b & mask
    rel, f = sf.compare(Op(L, x, e.daz), Op(L, y, e.daz), m in (M.COMISS, M.COMISD))
    signal(c.cpu, c.fpu, f | _denormals(e, L, x, y))
    return eflags & ~(CF | PF | AF | ZF | SF_ | OF) | EFLAGS_CODES[rel]


EFLAGS_OUT.update({M.COMISS, M.UCOMISS, M.COMISD, M.UCOMISD})


# --- conversions ------------------------------------------------------------------------------------------
INT_INDEFINITE = 0x80000000


def _to_int32(e, L, x: int, truncate: bool) -> tuple[int, int]:
    """Float lane to int32: the integer indefinite 80000000H when invalid (SDM Vol. 1 §4.8.3.?)."""
    a = Op(L, x, e.daz)
    v, f = sf.to_int(a, 32, sf.RZ if truncate else e.rc)
    f |= _denormals(e, L, x)
    if v is None:
        return INT_INDEFINITE, f
    return v & M32, f


def _from_int32(e, L, v: int) -> tuple[int, int]:
    v = (v ^ 0x80000000) - 0x80000000
    return sf.from_int(L, v, e.rc)


def _convert(e, Ls, Ld, x: int) -> tuple[int, int]:
    r, f = sf.convert(Ls, Ld, x, e.rc, False, e.daz, e.ftz, e.um, e.om)
    return r, f | _denormals(e, Ls, x)


def _lanes_to_int(c: Ctx, b: int, size: int, n: int, truncate: bool) -> tuple[list[int], int]:
    e = env(c.fpu)
    out, flags = [], 0
    for x in split(b, size, n):
        r, f = _to_int32(e, sf.LAYOUT[sf.F32 if size == 4 else sf.F64], x, truncate)
        out.append(r)
        flags |= f
    signal(c.cpu, c.fpu, flags)
    return out, flags


@simd(M.CVTSS2SI, M.CVTTSS2SI, M.CVTSD2SI, M.CVTTSD2SI)
def cvtss2si(c: Ctx, a, b):
    m = c.d.mnemonic
    size = 4 if m in (M.CVTSS2SI, M.CVTTSS2SI) else 8
    out, _ = _lanes_to_int(c, b, size, 1, m in (M.CVTTSS2SI, M.CVTTSD2SI))
    return out[0]


@simd(M.CVTPS2DQ, M.CVTTPS2DQ)
def cvtps2dq(c: Ctx, a, b):
    out, _ = _lanes_to_int(c, b, 4, 4, c.d.mnemonic == M.CVTTPS2DQ)
    return join(out, 4)


@simd(M.CVTPS2PI, M.CVTTPS2PI)
def cvtps2pi(c: Ctx, a, b):
    out, _ = _lanes_to_int(c, b, 4, 2, c.d.mnemonic == M.CVTTPS2PI)
    return join(out, 4)


@simd(M.CVTPD2DQ, M.CVTTPD2DQ, M.CVTPD2PI, M.CVTTPD2PI)
def cvtpd2dq(c: Ctx, a, b):
    out, _ = _lanes_to_int(c, b, 8, 2, c.d.mnemonic in (M.CVTTPD2DQ, M.CVTTPD2PI))
    return join(out, 4)                   # CVTPD2DQ clears bits 127:64


def _ints_to_float(c: Ctx, ints: list[int], L) -> tuple[list[int], int]:
    e = env(c.fpu)
    out, flags = [], 0
    for v in ints:
        r, f = _from_int32(e, L, v)
        out.append(r)
        flags |= f
    signal(c.cpu, c.fpu, flags)
    return out, flags


@simd(M.CVTSI2SS, M.CVTSI2SD)
def cvtsi2ss(c: Ctx, a, b):
    L, size = (L32, 4) if c.d.mnemonic == M.CVTSI2SS else (L64, 8)
    out, _ = _ints_to_float(c, [b & M32], L)
    m = (1 << (8 * size)) - 1
    return (a & ~m) | out[0]


@simd(M.CVTDQ2PS)
def cvtdq2ps(c: Ctx, a, b):
    return join(_ints_to_float(c, split(b, 4, 4), L32)[0], 4)


@simd(M.CVTDQ2PD, M.CVTPI2PD)
def cvtdq2pd(c: Ctx, a, b):
    return join(_ints_to_float(c, split(b, 4, 2), L64)[0], 8)


@simd(M.CVTPI2PS)
def cvtpi2ps(c: Ctx, a, b):
    out, _ = _ints_to_float(c, split(b, 4, 2), L32)
    return (a & ~M64) | join(out, 4)      # the upper two lanes are kept


def _widths(c: Ctx, b: int, Ls, Ld, n: int) -> list[int]:
    e = env(c.fpu)
    out, flags = [], 0
    ssize = 4 if Ls is L32 else 8
    for x in split(b, ssize, n):
        r, f = _convert(e, Ls, Ld, x)
        out.append(r)
        flags |= f
    signal(c.cpu, c.fpu, flags)
    return out


@simd(M.CVTPS2PD)
def cvtps2pd(c: Ctx, a, b):
    return join(_widths(c, b, L32, L64, 2), 8)


@simd(M.CVTPD2PS)
def cvtpd2ps(c: Ctx, a, b):
    return join(_widths(c, b, L64, L32, 2), 4)     # bits 127:64 cleared


@simd(M.CVTSS2SD)
def cvtss2sd(c: Ctx, a, b):
    return (a & ~M64) | _widths(c, b, L32, L64, 1)[0]


@simd(M.CVTSD2SS)
def cvtsd2ss(c: Ctx, a, b):
    return (a & ~M32) | _widths(c, b, L64, L32, 1)[0]


__all__ = ["PE", "DE"]


# --- SSE3: alternating and horizontal arithmetic, duplicating moves ----------------------------------
def _pairwise(c: Ctx, pairs, size: int) -> int:
    """Lanes ``op(x, y)`` for each ``(kind, x, y)`` in ``pairs``, flags gathered first."""
    e = env(c.fpu)
    L = LAYOUTS[size]
    out, flags = [], 0
    for kind, x, y in pairs:
        r, f = _LANES[kind](e, L, x, y)
        out.append(r)
        flags |= f
    signal(c.cpu, c.fpu, flags)
    return join(out, size)


_LANES = {"add": _arith("add"), "sub": _arith("sub")}


@simd(M.ADDSUBPS, M.ADDSUBPD)
def addsub(c: Ctx, a, b):
    """Even lanes a - b, odd lanes a + b (SDM Vol. 2 ADDSUBPS)."""
    size = 4 if c.d.mnemonic == M.ADDSUBPS else 8
    n = 16 // size
    xs, ys = split(a, size, n), split(b, size, n)
    return _pairwise(c, [("sub" if i % 2 == 0 else "add", xs[i], ys[i]) for i in range(n)], size)


@simd(M.HADDPS, M.HSUBPS, M.HADDPD, M.HSUBPD)
def horizontal(c: Ctx, a, b):
    """Adjacent lanes of the destination, then of the source (SDM Vol. 2 HADDPS)."""
    m = c.d.mnemonic
    size = 4 if m in (M.HADDPS, M.HSUBPS) else 8
    kind = "add" if m in (M.HADDPS, M.HADDPD) else "sub"
    n = 16 // size
    xs, ys = split(a, size, n), split(b, size, n)
    return _pairwise(c, [(kind, v[i], v[i + 1]) for v in (xs, ys) for i in range(0, n, 2)], size)


@simd(M.MOVSLDUP, M.MOVSHDUP)
def movsldup(c: Ctx, a, b):
    x = split(b, 4, 4)
    k = 0 if c.d.mnemonic == M.MOVSLDUP else 1
    return join([x[k], x[k], x[k + 2], x[k + 2]], 4)


@simd(M.MOVDDUP)
def movddup(c: Ctx, a, b):
    return (b & M64) | (b & M64) << 64
