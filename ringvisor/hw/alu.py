"""Arithmetic with awkward flag rules, as plain functions.

Translated blocks call these inline (the instruction does not end the block):
each takes the operands and the current arithmetic flags as EFLAGS bits and
returns ``(result, new_flags)``.  Flags the SDM calls undefined get the values
a real Intel core produces where that is well known, otherwise they are left
as they were; differential tests compare only defined flags.
"""

from __future__ import annotations

from .faults import DE, CpuFault
from .flags import PARITY
from .state import AF, CF, OF, PF, SF, ZF

MASK = {1: 0xFF, 2: 0xFFFF, 4: 0xFFFFFFFF}
BITS = {1: 8, 2: 16, 4: 32}
ARITH = CF | PF | AF | ZF | SF | OF


def szp(res: int, size: int) -> int:
    f = PARITY[res & 0xFF]
    if res == 0:
        f |= ZF
    if res >> (BITS[size] - 1):
        f |= SF
    return f


def signed(v: int, size: int) -> int:
    s = 1 << (BITS[size] - 1)
    return (v ^ s) - s


def shift(kind: str, a: int, count: int, size: int, fl: int) -> tuple[int, int]:
    """SHL/SHR/SAR/ROL/ROR/RCL/RCR with the count already read from the instruction."""
    bits, mask = BITS[size], MASK[size]
    c = count & 0x1F
    msb = bits - 1
    if kind in ("shl", "shr", "sar"):
        if c == 0:
            return a, fl
        if kind == "shl":
            wide = a << c
            res = wide & mask
            cf = (wide >> bits) & 1
            of = (res >> msb) ^ cf
        elif kind == "shr":
            res = a >> c
            cf = (a >> (c - 1)) & 1 if c <= bits else 0
            of = a >> msb
        else:
            sa = signed(a, size)
            res = (sa >> c) & mask
            cf = (sa >> (c - 1)) & 1 if c <= bits else (sa < 0)
            of = 0
        f = szp(res, size) | (CF if cf else 0) | (OF if of & 1 else 0)
        # AF is undefined; Intel cores leave it clear after shifts by a nonzero count.
        return res, (fl & ~ARITH) | f
    if kind in ("rol", "ror"):
        if c == 0:
            return a, fl
        r = c % bits
        if kind == "rol":
            res = ((a << r) | (a >> (bits - r))) & mask if r else a
            cf = res & 1
            of = (res >> msb) ^ cf
        else:
            res = ((a >> r) | (a << (bits - r))) & mask if r else a
            cf = res >> msb
            of = (res >> msb) ^ ((res >> (msb - 1)) & 1)
        f = (fl & ~(CF | OF)) | (CF if cf else 0) | (OF if of else 0)
        return res, f
    # rcl / rcr rotate through CF: a (bits+1)-bit rotation
    r = c % (bits + 1)
    if c == 0:
        return a, fl
    cin = fl & CF
    v = a | (cin << bits)
    w = bits + 1
    if kind == "rcl":
        v = ((v << r) | (v >> (w - r))) & ((1 << w) - 1) if r else v
        res, cf = v & mask, v >> bits
        of = (res >> msb) ^ cf
    else:
        v = ((v >> r) | (v << (w - r))) & ((1 << w) - 1) if r else v
        res, cf = v & mask, v >> bits
        of = (res >> msb) ^ ((res >> (msb - 1)) & 1)
    f = (fl & ~(CF | OF)) | (CF if cf else 0) | (OF if of else 0)
    return res, f


def shld(dst: int, src: int, count: int, size: int, fl: int) -> tuple[int, int]:
    bits, mask = BITS[size], MASK[size]
    c = count & 0x1F
    if c == 0:
        return dst, fl
    if c > bits:   # undefined result (16-bit forms); keep the operand
        return dst, fl
    wide = (dst << bits) | src
    res = (wide >> (bits - c)) & mask
    cf = (dst >> (bits - c)) & 1
    of = ((res ^ dst) >> (bits - 1)) & 1
    return res, (fl & ~ARITH) | szp(res, size) | (CF if cf else 0) | (OF if of else 0)


def shrd(dst: int, src: int, count: int, size: int, fl: int) -> tuple[int, int]:
    bits, mask = BITS[size], MASK[size]
    c = count & 0x1F
    if c == 0:
        return dst, fl
    if c > bits:
        return dst, fl
    wide = (src << bits) | dst
    res = (wide >> c) & mask
    cf = (dst >> (c - 1)) & 1
    of = ((res ^ dst) >> (bits - 1)) & 1
    return res, (fl & ~ARITH) | szp(res, size) | (CF if cf else 0) | (OF if of else 0)


def mul(a: int, b: int, size: int, fl: int) -> tuple[int, int, int]:
    """Unsigned MUL: returns (low, high, flags); CF=OF=1 when the high half is not zero."""
    bits, mask = BITS[size], MASK[size]
    p = a * b
    lo, hi = p & mask, p >> bits
    f = (fl & ~ARITH) | szp(lo, size) | ((CF | OF) if hi else 0)
    return lo, hi, f


def imul(a: int, b: int, size: int, fl: int) -> tuple[int, int, int]:
    """Signed multiply: returns (low, high, flags); CF=OF=1 when the result does not fit."""
    bits, mask = BITS[size], MASK[size]
    p = signed(a, size) * signed(b, size)
    lo = p & mask
    hi = (p >> bits) & mask
    f = (fl & ~ARITH) | szp(lo, size) | ((CF | OF) if p != signed(lo, size) else 0)
    return lo, hi, f


def div(lo: int, hi: int, b: int, size: int) -> tuple[int, int]:
    """Unsigned DIV of hi:lo by b: (quotient, remainder), #DE on zero or overflow."""
    bits, mask = BITS[size], MASK[size]
    if b == 0:
        raise CpuFault(DE)
    n = (hi << bits) | lo
    q, r = divmod(n, b)
    if q > mask:
        raise CpuFault(DE)
    return q, r


def idiv(lo: int, hi: int, b: int, size: int) -> tuple[int, int]:
    """Signed IDIV, truncating toward zero; #DE on zero or a quotient that does not fit."""
    bits, mask = BITS[size], MASK[size]
    if b == 0:
        raise CpuFault(DE)
    wide = (hi << bits) | lo
    top = 1 << (2 * bits - 1)
    n = (wide ^ top) - top       # the double-width dividend, signed
    d = signed(b, size)
    q = abs(n) // abs(d)
    if (n < 0) != (d < 0):
        q = -q
    r = n - q * d
    lim = 1 << (bits - 1)
    if q >= lim or q < -lim:
        raise CpuFault(DE)
    return q & mask, r & mask


def bsf(src: int, dst: int, size: int, fl: int) -> tuple[int, int]:
    if src == 0:   # destination unchanged (as Intel and AMD cores do)
        return dst, (fl & ~ARITH) | ZF
    res = (src & -src).bit_length() - 1
    return res, (fl & ~ARITH)


def bsr(src: int, dst: int, size: int, fl: int) -> tuple[int, int]:
    if src == 0:
        return dst, (fl & ~ARITH) | ZF
    return src.bit_length() - 1, (fl & ~ARITH)


def daa(al: int, fl: int) -> tuple[int, int]:
    old_al, old_cf = al, fl & CF
    cf = 0
    af = 0
    if (al & 0xF) > 9 or fl & AF:
        al = (al + 6) & 0xFF
        cf = old_cf or (old_al + 6 > 0xFF)
        af = 1
    if old_al > 0x99 or old_cf:
        al = (al + 0x60) & 0xFF
        cf = 1
    return al, (fl & ~ARITH) | szp(al, 1) | (CF if cf else 0) | (AF if af else 0)


def das(al: int, fl: int) -> tuple[int, int]:
    old_al, old_cf = al, fl & CF
    cf = 0
    af = 0
    if (al & 0xF) > 9 or fl & AF:
        cf = old_cf or old_al < 6
        al = (al - 6) & 0xFF
        af = 1
    if old_al > 0x99 or old_cf:
        al = (al - 0x60) & 0xFF
        cf = 1
    return al, (fl & ~ARITH) | szp(al, 1) | (CF if cf else 0) | (AF if af else 0)


def aaa(ax: int, fl: int, sub: bool) -> tuple[int, int]:
    """AAA / AAS.  The SDM adjusts the whole of AX (AAA: ``AX ← AX + 106H``; AAS:
    ``AX ← AX – 6; AH ← AH – 1``), so a carry or borrow out of AL reaches AH."""
    if (ax & 0xF) > 9 or fl & AF:
        ax = (ax - 0x106) & 0xFFFF if sub else (ax + 0x106) & 0xFFFF
        f = AF | CF
    else:
        f = 0
    ax &= 0xFF0F
    return ax, (fl & ~ARITH) | f | szp(ax & 0xFF, 1)


def aam(al: int, base: int, fl: int) -> tuple[int, int]:
    if base == 0:
        raise CpuFault(DE)
    ah, al = divmod(al, base)
    return (ah << 8) | al, (fl & ~ARITH) | szp(al, 1)


def aad(ax: int, base: int, fl: int) -> tuple[int, int]:
    al = ((ax & 0xFF) + (ax >> 8) * base) & 0xFF
    return al, (fl & ~ARITH) | szp(al, 1)
