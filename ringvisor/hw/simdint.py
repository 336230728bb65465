"""MMX and SSE2 packed integers: the same lane functions on 64-bit MM and 128-bit XMM registers.

Lane widths and semantics are those of SDM Vol. 2 for each mnemonic (wrap-around
and saturating add/subtract, compares giving all-ones or zero, packs with
saturation, multiplies, averages, sums of absolute differences, shifts whose
count beyond the lane width clears the lane, or fills it with the sign for
arithmetic right shifts).  ``c.d.width`` is 8 for MMX, 16 for XMM.
"""

from __future__ import annotations

import iced_x86 as ix

from .sse import M32, M64, SIMD, Ctx, join, simd, split

M = ix.Mnemonic


def _signed(v: int, bits: int) -> int:
    s = 1 << (bits - 1)
    return (v ^ s) - s


def _sat(v: int, lo: int, hi: int) -> int:
    return lo if v < lo else hi if v > hi else v


def _lanewise(size: int, f):
    def fn(c: Ctx, a, b):
        n = c.d.width // size
        return join([f(x, y) for x, y in zip(split(a, size, n), split(b, size, n))], size)
    return fn


def _define(table):
    for m, size, f in table:
        SIMD[m] = _lanewise(size, f)


def _add_sat(bits: int, signed: bool, sub: bool):
    if signed:
        lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
        return lambda x, y: _sat(_signed(x, bits) + (-1 if sub else 1) * _signed(y, bits), lo, hi)
    return lambda x, y: _sat(x - y if sub else x + y, 0, (1 << bits) - 1)


_define([
    (M.PADDB, 1, lambda x, y: x + y), (M.PADDW, 2, lambda x, y: x + y),
    (M.PADDD, 4, lambda x, y: x + y), (M.PADDQ, 8, lambda x, y: x + y),
    (M.PSUBB, 1, lambda x, y: x - y), (M.PSUBW, 2, lambda x, y: x - y),
    (M.PSUBD, 4, lambda x, y: x - y), (M.PSUBQ, 8, lambda x, y: x - y),
    (M.PADDSB, 1, _add_sat(8, True, False)), (M.PADDSW, 2, _add_sat(16, True, False)),
    (M.PADDUSB, 1, _add_sat(8, False, False)), (M.PADDUSW, 2, _add_sat(16, False, False)),
    (M.PSUBSB, 1, _add_sat(8, True, True)), (M.PSUBSW, 2, _add_sat(16, True, True)),
    (M.PSUBUSB, 1, _add_sat(8, False, True)), (M.PSUBUSW, 2, _add_sat(16, False, True)),
    (M.PCMPEQB, 1, lambda x, y: -(x == y)), (M.PCMPEQW, 2, lambda x, y: -(x == y)),
    (M.PCMPEQD, 4, lambda x, y: -(x == y)),
    (M.PCMPGTB, 1, lambda x, y: -(_signed(x, 8) > _signed(y, 8))),
    (M.PCMPGTW, 2, lambda x, y: -(_signed(x, 16) > _signed(y, 16))),
    (M.PCMPGTD, 4, lambda x, y: -(_signed(x, 32) > _signed(y, 32))),
    (M.PMULLW, 2, lambda x, y: x * y),
    (M.PMULHW, 2, lambda x, y: (_signed(x, 16) * _signed(y, 16)) >> 16),
    (M.PMULHUW, 2, lambda x, y: (x * y) >> 16),
    (M.PAVGB, 1, lambda x, y: (x + y + 1) >> 1), (M.PAVGW, 2, lambda x, y: (x + y + 1) >> 1),
    (M.PMINUB, 1, min), (M.PMAXUB, 1, max),
    (M.PMINSW, 2, lambda x, y: x if _signed(x, 16) < _signed(y, 16) else y),
    (M.PMAXSW, 2, lambda x, y: x if _signed(x, 16) > _signed(y, 16) else y),
])


@simd(M.PMULUDQ)
def pmuludq(c: Ctx, a, b):
    """The low dword of each quadword, multiplied into a quadword."""
    n = c.d.width // 8
    return join([(x & M32) * (y & M32) for x, y in zip(split(a, 8, n), split(b, 8, n))], 8)


@simd(M.PMADDWD)
def pmaddwd(c: Ctx, a, b):
    n = c.d.width // 2
    x, y = [_signed(v, 16) for v in split(a, 2, n)], [_signed(v, 16) for v in split(b, 2, n)]
    return join([x[i] * y[i] + x[i + 1] * y[i + 1] for i in range(0, n, 2)], 4)


@simd(M.PSADBW)
def psadbw(c: Ctx, a, b):
    """Per quadword: the sum of the eight absolute byte differences in its low word."""
    n = c.d.width // 8
    out = []
    for q in range(n):
        xs, ys = split(a >> (64 * q), 1, 8), split(b >> (64 * q), 1, 8)
        out.append(sum(abs(x - y) for x, y in zip(xs, ys)))
    return join(out, 8)


def _pack(size_in: int, signed_out: bool):
    bits_out = 4 * size_in
    lo, hi = (-(1 << (bits_out - 1)), (1 << (bits_out - 1)) - 1) if signed_out else (0, (1 << bits_out) - 1)

    def fn(c: Ctx, a, b):
        n = c.d.width // size_in
        lanes = [_sat(_signed(v, 8 * size_in), lo, hi)
                 for v in split(a, size_in, n) + split(b, size_in, n)]
        return join(lanes, size_in // 2)
    return fn


SIMD[M.PACKSSWB] = _pack(2, True)
SIMD[M.PACKSSDW] = _pack(4, True)
SIMD[M.PACKUSWB] = _pack(2, False)


# --- shifts -------------------------------------------------------------------------------------------
def _shift(size: int, kind: str):
    bits = 8 * size

    def fn(c: Ctx, a, b):
        count = b & M64             # the source's whole low quadword, or the imm8
        n = c.d.width // size
        out = []
        for x in split(a, size, n):
            if kind == "sra":
                out.append(_signed(x, bits) >> min(count, bits - 1))
            elif count >= bits:
                out.append(0)
            else:
                out.append(x << count if kind == "sll" else x >> count)
        return join(out, size)
    return fn


for _name, _size in (("W", 2), ("D", 4), ("Q", 8)):
    SIMD[getattr(M, "PSLL" + _name)] = _shift(_size, "sll")
    SIMD[getattr(M, "PSRL" + _name)] = _shift(_size, "srl")
    if _size < 8:
        SIMD[getattr(M, "PSRA" + _name)] = _shift(_size, "sra")


@simd(M.PSLLDQ, M.PSRLDQ)
def pslldq(c: Ctx, a, b):
    n = min(c.imm, 16) * 8
    return (a << n) if c.d.mnemonic == M.PSLLDQ else (a >> n)


# --- shuffles, inserts, extracts, masks ------------------------------------------------------------------
@simd(M.PSHUFD)
def pshufd(c: Ctx, a, b):
    x, i = split(b, 4, 4), c.imm
    return join([x[(i >> (2 * k)) & 3] for k in range(4)], 4)


@simd(M.PSHUFW)
def pshufw(c: Ctx, a, b):
    x, i = split(b, 2, 4), c.imm
    return join([x[(i >> (2 * k)) & 3] for k in range(4)], 2)


@simd(M.PSHUFLW, M.PSHUFHW)
def pshuflw(c: Ctx, a, b):
    i = c.imm
    if c.d.mnemonic == M.PSHUFLW:
        x = split(b & M64, 2, 4)
        return (b & ~M64) | join([x[(i >> (2 * k)) & 3] for k in range(4)], 2)
    x = split(b >> 64, 2, 4)
    return (b & M64) | join([x[(i >> (2 * k)) & 3] for k in range(4)], 2) << 64


@simd(M.PINSRW)
def pinsrw(c: Ctx, a, b):
    k = c.imm & (c.d.width // 2 - 1)
    return (a & ~(0xFFFF << (16 * k))) | (b & 0xFFFF) << (16 * k)


@simd(M.PEXTRW)
def pextrw(c: Ctx, a, b):
    k = c.imm & (c.d.width // 2 - 1)
    return (b >> (16 * k)) & 0xFFFF


@simd(M.PMOVMSKB)
def pmovmskb(c: Ctx, a, b):
    return sum(((b >> (8 * i + 7)) & 1) << i for i in range(c.d.width))


__all__ = ["M64"]
