"""Lazy arithmetic flags.

Most instructions write CF/PF/AF/ZF/SF/OF and most of those values are never
read.  So the CPU records *how* the flags were last produced — an operation
code, the result and the two inputs — and computes a flag only when something
reads it.  Inside a translated block the translator does better still: it
knows statically which instruction produced the flags a ``jcc`` reads and
emits the condition directly (``cmp a, b; jb`` becomes ``a < b``).

The record is ``(op, res, a, b)`` with ``op = kind << 2 | size_index``.  For
``CONCRETE`` the flag bits themselves are in ``res``.  INC and DEC keep CF,
so the old CF travels in ``b``.
"""

from __future__ import annotations

from .state import AF, CF, OF, PF, SF, ZF

SIZE_INDEX = {8: 0, 16: 1, 32: 2}
SIZE_BITS = (8, 16, 32)
MASKS = (0xFF, 0xFFFF, 0xFFFFFFFF)
SIGNS = (0x80, 0x8000, 0x80000000)

CONCRETE, ADD, ADC, SUB, SBB, LOGIC, INC, DEC, NEG = range(9)
KIND_NAMES = ("CONCRETE", "ADD", "ADC", "SUB", "SBB", "LOGIC", "INC", "DEC", "NEG")

# PARITY[b] is PF for a result whose low byte is b (set when the number of 1 bits is even).
PARITY = tuple(PF if bin(i).count("1") % 2 == 0 else 0 for i in range(256))


def op_code(kind: int, bits: int) -> int:
    return kind << 2 | SIZE_INDEX[bits]


def _szp(res: int, sign: int) -> int:
    f = PARITY[res & 0xFF]
    if res == 0:
        f |= ZF
    if res & sign:
        f |= SF
    return f


def materialize(op: int, res: int, a: int, b: int) -> int:
    """The six arithmetic flags (as EFLAGS bits) described by a lazy record."""
    kind, si = op >> 2, op & 3
    if kind == CONCRETE:
        return res
    mask, sign = MASKS[si], SIGNS[si]
    f = _szp(res, sign)
    if kind == ADD or kind == ADC:
        cin = kind == ADC
        if a + b + cin > mask:
            f |= CF
        if (a ^ res) & (b ^ res) & sign:
            f |= OF
        f |= (a ^ b ^ res) & AF
    elif kind == SUB or kind == SBB:
        cin = kind == SBB
        if a < b + cin:
            f |= CF
        if (a ^ b) & (a ^ res) & sign:
            f |= OF
        f |= (a ^ b ^ res) & AF
    elif kind == LOGIC:
        pass
    elif kind == INC:
        f |= b & CF
        if res == sign:
            f |= OF
        if (res & 0xF) == 0:
            f |= AF
    elif kind == DEC:
        f |= b & CF
        if res == sign - 1:
            f |= OF
        if (res & 0xF) == 0xF:
            f |= AF
    elif kind == NEG:
        if a:
            f |= CF
        if res == sign:
            f |= OF
        f |= (a ^ res) & AF
    return f


def carry(op: int, res: int, a: int, b: int) -> int:
    """Just CF (0 or 1) of a lazy record: cheaper than :func:`materialize`."""
    kind, si = op >> 2, op & 3
    if kind == CONCRETE:
        return res & 1
    if kind == SUB:
        return 1 if a < b else 0
    if kind == ADD:
        return 1 if res < a else 0
    if kind == LOGIC:
        return 0
    if kind == INC or kind == DEC:
        return b & 1
    return materialize(op, res, a, b) & CF


# Condition codes in x86 encoding order (the low nibble of Jcc/SETcc/CMOVcc).
CC_NAMES = ("o", "no", "b", "ae", "e", "ne", "be", "a", "s", "ns", "p", "np", "l", "ge", "le", "g")


def condition(cc: int, flags: int) -> bool:
    """Evaluate condition code ``cc`` on concrete EFLAGS bits."""
    base = cc >> 1
    if base == 0:
        r = flags & OF
    elif base == 1:
        r = flags & CF
    elif base == 2:
        r = flags & ZF
    elif base == 3:
        r = flags & (CF | ZF)
    elif base == 4:
        r = flags & SF
    elif base == 5:
        r = flags & PF
    elif base == 6:
        r = bool(flags & SF) != bool(flags & OF)
    else:
        r = (flags & ZF) or (bool(flags & SF) != bool(flags & OF))
    r = bool(r)
    return (not r) if cc & 1 else r
