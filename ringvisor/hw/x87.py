"""The x87 floating-point unit: availability, exceptions, the register stack, loads and stores.

An x87 instruction runs as a Python function bound at translation time to
the CPU and to the decoded facts of the instruction (:class:`Insn`); the
translated block calls it without ending (see ``fpsem.py``).  Every function
first asks :func:`begin` whether the unit may run it — CR0.EM/TS give #NM
(SDM Vol. 3 Table 2-2), and a *waiting* instruction finds a pending unmasked
exception left by an earlier one: #MF with CR0.NE=1, FERR# (IRQ 13 through the
PIC, as QEMU's PC wires it) with NE=0 (SDM Vol. 1 §8.6, Vol. 3 §6.15 int 16).
Then it reads its memory operand, computes, writes memory, and only then
changes the FPU state: a fault on the way leaves everything as it was.

Exception responses follow SDM Vol. 1 §8.5: a masked exception delivers the
default result (the real indefinite, infinity, a denormal...); an unmasked
invalid-operation, denormal-operand or divide-by-zero exception leaves the
destination and TOP alone; an unmasked overflow or underflow stores the
biased result in a register (nothing in memory); ES and B are set whenever a
flag is set whose exception is unmasked.  C1 is the stack-fault direction
(1 = overflow) or the round-up bit.

This module holds the unit's mechanics, data transfer and constants; the control
instructions, environments and FXSAVE are in ``x87control.py``, arithmetic and
comparisons in ``x87arith.py``.
"""

from __future__ import annotations

from functools import partial

import iced_x86 as ix

from . import softfloat as sf
from .faults import MF, NM, CpuFault
from .softfloat import IE, DE, UE, OE, ZE, L32, L64, L80
from .state import CR0_EM, CR0_NE, CR0_TS, CS, FpuState
from .translate import registrar

M = ix.Mnemonic

# status word (SDM Vol. 1 Figure 8-4); TOP (bits 11-13) lives in FpuState.top
SF, ES, C0, C1, C2, C3, BUSY = 0x40, 0x80, 0x100, 0x200, 0x400, 0x4000, 0x8000
EXC = 0x3F
CC = C0 | C1 | C2 | C3
# control word (Figure 8-6): exception masks, precision control, rounding control
PREC_BITS = (24, 24, 53, 64)            # PC 01 is reserved; hardware treats it as single
WRAP = 24576                            # unmasked overflow/underflow bias (§8.5.4)
EMPTY = 3                               # the two-bit tag of an empty register
INDEFINITE = L80.indefinite
INT_INDEFINITE = {2: 0x8000, 4: 0x80000000, 8: 0x8000000000000000}

X87: dict[int, object] = {}             # mnemonic -> function(cpu, Insn, *args)
x87 = registrar(X87)

FORMATS = {4: L32, 8: L64, 10: L80}


class Insn:
    """What an x87 function needs to know about its instruction (fixed at translation)."""

    __slots__ = ("eip", "fop", "seg", "size", "i", "dst", "mem", "mnemonic", "op16", "control")

    def __init__(self, ins: ix.Instruction, raw: bytes, seg: int | None) -> None:
        self.eip = ins.ip32
        self.mnemonic = ins.mnemonic
        # the opcode FSTENV/FXSAVE report: the low 3 bits of the escape byte and the ModR/M
        # byte (SDM Vol. 1 §8.1.9); prefixes come first in ``raw``
        esc = next((i for i, b in enumerate(raw) if 0xD8 <= b <= 0xDF), None)
        self.fop = ((raw[esc] & 7) << 8 | raw[esc + 1]) if esc is not None and esc + 1 < len(raw) else 0
        self.seg = seg                                     # segment register of the memory operand
        self.mem = seg is not None
        self.size = ix.MemorySizeExt.size(ins.memory_size) if self.mem else 0
        regs = [ins.op_register(k) - ix.Register.ST0 for k in range(ins.op_count)
                if ins.op_kind(k) == ix.OpKind.REGISTER and ix.Register.ST0 <= ins.op_register(k) <= ix.Register.ST7]
        # the ST(i) operand other than ST(0), and whether it is the destination
        self.i = next((r for r in regs if r), regs[1] if len(regs) > 1 else 1 if not regs else regs[0])
        self.dst = len(regs) == 2 and regs[0] != 0
        self.op16 = ins.code in _OP16_CODES
        self.control = False


_OP16_CODES = frozenset(getattr(ix.Code, n) for n in dir(ix.Code)
                        if n.endswith("_M14BYTE") or n.endswith("_M94BYTE"))


# --- availability and pending exceptions --------------------------------------------------------
def check_nm(cpu) -> None:
    """SDM Vol. 3 Table 2-2: x87 instructions raise #NM when CR0.EM or CR0.TS is set."""
    if cpu.state.cr0 & (CR0_EM | CR0_TS):
        raise CpuFault(NM)


def signal_pending(cpu) -> None:
    """A waiting instruction found ES set: #MF (CR0.NE=1) or FERR# (NE=0, MS-DOS style).

    With NE=0 the PC's chipset turns FERR# into IRQ 13 unless IGNNE# is asserted (a
    write to port 0xF0 asserts it); the instruction then goes on, as on QEMU.
    """
    if cpu.state.cr0 & CR0_NE:
        raise CpuFault(MF)
    cpu.assert_ferr()


def begin(cpu, waiting: bool = True) -> FpuState:
    cr0 = cpu.state.cr0
    if cr0 & (CR0_EM | CR0_TS):
        raise CpuFault(NM)
    fpu = cpu.state.fpu
    if waiting and fpu.fsw & ES:
        signal_pending(cpu)
    return fpu


def note(fpu: FpuState, cpu, d: Insn, off: int = 0) -> None:
    """Record the last non-control instruction and its operand (FSTENV/FXSAVE report them)."""
    if cpu.fpu_origin is None:
        fpu.fip, fpu.fcs = d.eip, cpu.state.segs[CS].selector
    else:
        fpu.fcs, fpu.fip = cpu.fpu_origin(cpu.state.segs[CS].selector, d.eip)
    fpu.fop = d.fop
    if d.mem:
        fpu.fdp = off
        fpu.fds = cpu.state.segs[d.seg].selector


def raise_flags(fpu: FpuState, flags: int) -> None:
    """Set exception flags (and C1 from the rounding); ES and B when one is unmasked."""
    fsw = fpu.fsw & ~C1 | (flags & (EXC | SF | C1))
    if fsw & ~fpu.fcw & EXC:
        fsw |= ES | BUSY
    fpu.fsw = fsw


def update_summary(fpu: FpuState) -> None:
    """After loading CW or SW: an exception flag whose mask is now clear is pending (FLDCW)."""
    if fpu.fsw & ~fpu.fcw & EXC:
        fpu.fsw |= ES | BUSY
    else:
        fpu.fsw &= ~(ES | BUSY)


def blocked(fpu: FpuState, flags: int) -> bool:
    """An unmasked invalid, denormal or zero-divide exception: the result is not delivered."""
    return bool(flags & ~fpu.fcw & (IE | DE | ZE))


def rounding(fpu: FpuState) -> int:
    return (fpu.fcw >> 10) & 3


def precision(fpu: FpuState) -> int:
    return PREC_BITS[(fpu.fcw >> 8) & 3]


def masked(fpu: FpuState, flag: int) -> bool:
    return bool(fpu.fcw & flag)


# --- the register stack -----------------------------------------------------------------------
def empty(fpu: FpuState, i: int) -> bool:
    return not fpu.ftw >> ((fpu.top + i) & 7) & 1


def get(fpu: FpuState, i: int) -> int:
    return fpu.st[(fpu.top + i) & 7]


def put(fpu: FpuState, i: int, value: int) -> None:
    r = (fpu.top + i) & 7
    fpu.st[r] = value
    fpu.ftw |= 1 << r


def push(fpu: FpuState, value: int) -> None:
    fpu.top = (fpu.top - 1) & 7
    fpu.st[fpu.top] = value
    fpu.ftw |= 1 << fpu.top


def pop(fpu: FpuState, n: int = 1) -> None:
    for _ in range(n):
        fpu.ftw &= ~(1 << fpu.top)
        fpu.top = (fpu.top + 1) & 7


def underflow(fpu: FpuState) -> int:
    """Stack underflow: IE with SF, C1=0 (SDM Vol. 1 §8.5.1.1)."""
    return IE | SF


OVERFLOW = IE | SF | C1


def tag(value: int) -> int:
    """The two-bit tag of a non-empty register: valid, zero or special (SDM Vol. 1 §8.1.7)."""
    e = (value >> 64) & 0x7FFF
    m = value & 0xFFFFFFFFFFFFFFFF
    if e == 0:
        return 1 if m == 0 else 2
    if e == 0x7FFF or not m >> 63:
        return 2
    return 0


def full_tags(fpu: FpuState) -> int:
    t = 0
    for r in range(7, -1, -1):
        t = t << 2 | (tag(fpu.st[r]) if fpu.ftw >> r & 1 else EMPTY)
    return t


def abridge(tags: int) -> int:
    return sum(1 << r for r in range(8) if (tags >> 2 * r) & 3 != EMPTY)


def status_word(fpu: FpuState) -> int:
    return fpu.fsw | fpu.top << 11


def set_status_word(fpu: FpuState, sw: int) -> None:
    fpu.fsw = sw & ~0x3800
    fpu.top = (sw >> 11) & 7


# --- memory -------------------------------------------------------------------------------------
def linear(cpu, d: Insn, off: int, size: int, write: bool) -> int:
    return cpu.segmentation.linear(d.seg, off, size, write)


def read(cpu, d: Insn, off: int, size: int) -> int:
    return cpu.mmu.read(cpu.segmentation.linear(d.seg, off, size, False), size, cpu.cpl == 3)


def write(cpu, d: Insn, off: int, size: int, value: int) -> None:
    cpu.mmu.write(cpu.segmentation.linear(d.seg, off, size, True), size, value, cpu.cpl == 3)


def to_extended(L, raw: int) -> tuple[int, int]:
    """A single or double operand widened to the register format: (bits, flags).

    Exact, except that an SNaN becomes quiet with IE; a denormal source raises DE.
    """
    if L is L80:
        return raw, 0
    bits, flags = sf.convert(L, L80, raw, sf.RN, True)
    return bits, flags | sf.denormal_flag(L, raw)


def int_to_extended(v: int) -> int:
    return sf.from_int(L80, v, sf.RN)[0]


def signed(raw: int, size: int) -> int:
    bit = 1 << (8 * size - 1)
    return (raw ^ bit) - bit


# --- data transfer ----------------------------------------------------------------------------
def load(cpu, fpu: FpuState, d: Insn, off: int, value: int, flags: int = 0) -> None:
    """Push a loaded value: onto a full stack it is an overflow (the indefinite when masked)."""
    if not empty(fpu, 7):
        value, flags = INDEFINITE, OVERFLOW
    note(fpu, cpu, d, off)
    if not blocked(fpu, flags):
        push(fpu, value)
    raise_flags(fpu, flags)


@x87(M.FLD)
def fld(cpu, d: Insn, off: int = 0) -> None:
    fpu = begin(cpu)
    flags = 0
    if d.mem:
        value, flags = to_extended(FORMATS[d.size], read(cpu, d, off, d.size))
    elif empty(fpu, d.i):
        value, flags = INDEFINITE, underflow(fpu)
    else:
        value = get(fpu, d.i)
    load(cpu, fpu, d, off, value, flags)


@x87(M.FILD)
def fild(cpu, d: Insn, off: int) -> None:
    fpu = begin(cpu)
    load(cpu, fpu, d, off, int_to_extended(signed(read(cpu, d, off, d.size), d.size)))


@x87(M.FBLD)
def fbld(cpu, d: Insn, off: int) -> None:
    """Packed BCD: 18 digits, sign in bit 79 (SDM Vol. 1 §4.7).  Invalid digits are undefined."""
    fpu = begin(cpu)
    raw = read(cpu, d, off, 10)
    v = 0
    for k in range(8, -1, -1):
        byte = (raw >> (8 * k)) & 0xFF
        v = v * 100 + (byte >> 4) * 10 + (byte & 0xF)
    value = int_to_extended(v)
    if raw >> 79:
        value |= 1 << 79                          # -0 stays -0
    load(cpu, fpu, d, off, value)


def _store_value(fpu: FpuState, L, src: int) -> tuple[int | None, int, bool]:
    """ST(0) rounded for a memory destination: (bits or None if not stored, flags, pop allowed)."""
    if L is L80:
        return src, 0, True
    a = sf.Operand(L80, src)
    if a.cls == sf.BAD:
        bits, flags = L.indefinite, IE
    elif a.cls in (sf.QNAN, sf.SNAN):
        bits, flags = sf.convert_nan(L80, L, src), IE if a.cls == sf.SNAN else 0
    elif a.cls == sf.INF:
        bits, flags = sf.infinity(L, a.sign), 0
    elif a.cls == sf.ZERO:
        bits, flags = sf.zero(L, a.sign), 0
    else:
        bits, flags = sf.round_pack(L, a.sign, a.exp, a.sig, rounding(fpu), None, False,
                                    masked(fpu, UE), masked(fpu, OE))
        flags |= sf.denormal_flag(L80, src)
    # an unmasked overflow or underflow stores nothing to memory (§8.5.4, §8.5.5)
    if flags & ~fpu.fcw & (IE | DE | OE | UE):
        return None, flags, False
    return bits, flags, True


@x87(M.FST, M.FSTP, M.FSTPNCE)
def fst(cpu, d: Insn, off: int = 0) -> None:
    fpu = begin(cpu)
    pops = d.mnemonic != M.FST
    if d.mem:
        L = FORMATS[d.size]
        if empty(fpu, 0):
            bits, flags, ok = L.indefinite, underflow(fpu), masked(fpu, IE)
            bits = bits if ok else None
        else:
            bits, flags, ok = _store_value(fpu, L, get(fpu, 0))
        if bits is not None:
            write(cpu, d, off, d.size, bits)
        note(fpu, cpu, d, off)
    else:
        flags, ok = 0, True
        if empty(fpu, 0):
            flags = underflow(fpu)
            ok = masked(fpu, IE)
            if ok:
                put(fpu, d.i, INDEFINITE)
        else:
            put(fpu, d.i, get(fpu, 0))
        note(fpu, cpu, d)
    if pops and ok:
        pop(fpu)
    raise_flags(fpu, flags)


def _integer_store(cpu, d: Insn, off: int, rc: int | None) -> None:
    """FIST/FISTP (rounding control) and FISTTP (truncation, ``rc`` = RZ)."""
    fpu = begin(cpu)
    pops = d.mnemonic != M.FIST
    size = d.size
    if empty(fpu, 0):
        v, flags = None, underflow(fpu)
    else:
        a = sf.Operand(L80, get(fpu, 0))
        v, flags = sf.to_int(a, 8 * size, rounding(fpu) if rc is None else rc)
        flags |= sf.denormal_flag(L80, a.bits)
    if v is None:
        v = INT_INDEFINITE[size] if masked(fpu, IE) else None
    elif blocked(fpu, flags):
        v = None
    if v is not None:
        write(cpu, d, off, size, v & ((1 << (8 * size)) - 1))
    note(fpu, cpu, d, off)
    if pops and v is not None:
        pop(fpu)
    raise_flags(fpu, flags)


@x87(M.FIST, M.FISTP)
def fist(cpu, d: Insn, off: int) -> None:
    _integer_store(cpu, d, off, None)


@x87(M.FISTTP)
def fisttp(cpu, d: Insn, off: int) -> None:
    _integer_store(cpu, d, off, sf.RZ)


BCD_INDEFINITE = 0xFFFF_C000_0000_0000_0000


@x87(M.FBSTP)
def fbstp(cpu, d: Insn, off: int) -> None:
    """Round ST(0) to an integer (RC), store 18 BCD digits; beyond ±(10^18 - 1) is invalid."""
    fpu = begin(cpu)
    if empty(fpu, 0):
        v, flags = None, underflow(fpu)
    else:
        a = sf.Operand(L80, get(fpu, 0))
        v, flags = sf.to_int(a, 80, rounding(fpu))
        if v is not None and abs(v) >= 10 ** 18:
            v, flags = None, IE
        sign = a.sign
    if v is None:
        raw = BCD_INDEFINITE if masked(fpu, IE) else None
    else:
        digits = abs(v)
        raw = 0
        for k in range(9):
            digits, two = divmod(digits, 100)
            raw |= ((two // 10) << 4 | two % 10) << (8 * k)
        raw |= sign << 79
    if raw is not None:
        write(cpu, d, off, 10, raw)
    note(fpu, cpu, d, off)
    if raw is not None:
        pop(fpu)
    raise_flags(fpu, flags)


@x87(M.FXCH)
def fxch(cpu, d: Insn) -> None:
    fpu = begin(cpu)
    flags = 0
    a = INDEFINITE if empty(fpu, 0) else get(fpu, 0)
    b = INDEFINITE if empty(fpu, d.i) else get(fpu, d.i)
    if empty(fpu, 0) or empty(fpu, d.i):
        flags = underflow(fpu)
    note(fpu, cpu, d)
    if not blocked(fpu, flags):
        put(fpu, 0, b)
        put(fpu, d.i, a)
    raise_flags(fpu, flags)


CMOV_CONDITIONS = (M.FCMOVB, M.FCMOVE, M.FCMOVBE, M.FCMOVU, M.FCMOVNB, M.FCMOVNE, M.FCMOVNBE,
                   M.FCMOVNU)


@x87(*CMOV_CONDITIONS)
def fcmov(cpu, d: Insn, cond: int) -> None:
    """FCMOVcc: the block evaluates the EFLAGS condition and passes it in."""
    fpu = begin(cpu)
    flags = 0
    if cond:
        if empty(fpu, d.i):
            value, flags = INDEFINITE, underflow(fpu)
        else:
            value = get(fpu, d.i)
    note(fpu, cpu, d)
    if cond and not blocked(fpu, flags):
        put(fpu, 0, value)
    raise_flags(fpu, flags)


# --- constants ----------------------------------------------------------------------------------
def _hi_precision():
    from .x87math import LN2, LOG2_10, LOG2_E, LOG10_2, PI, PREC
    # LOG2_10 etc. are fixed point with PREC fraction bits; keep a sticky bit for the tail
    return {M.FLDPI: PI, M.FLDL2E: LOG2_E, M.FLDL2T: LOG2_10, M.FLDLG2: LOG10_2,
            M.FLDLN2: LN2}, PREC


_CONSTANTS: dict = {}


def constant(m: int, rc: int) -> int:
    key = (m, rc)
    v = _CONSTANTS.get(key)
    if v is None:
        if m == M.FLD1:
            v = 0x3FFF_8000_0000_0000_0000
        elif m == M.FLDZ:
            v = 0
        else:
            table, prec = _hi_precision()
            v = sf.round_pack(L80, 0, -prec - 1, table[m] << 1 | 1, rc)[0]
        _CONSTANTS[key] = v
    return v


@x87(M.FLD1, M.FLDZ, M.FLDPI, M.FLDL2E, M.FLDL2T, M.FLDLG2, M.FLDLN2)
def fldconst(cpu, d: Insn) -> None:
    fpu = begin(cpu)
    load(cpu, fpu, d, 0, constant(d.mnemonic, rounding(fpu)))


def bind(cpu, ins: ix.Instruction, raw: bytes, seg: int | None):
    """The function the block calls for this x87 instruction (None: not an x87 instruction)."""
    fn = X87.get(ins.mnemonic)
    if fn is None:
        return None
    return partial(fn, cpu, Insn(ins, raw, seg))
