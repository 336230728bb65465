"""x87 arithmetic, comparison and the transcendental instructions.

Each instruction reads its operands (an empty register is a stack underflow,
SDM Vol. 1 §8.5.1.1), raises DE for a denormal operand, computes with
:mod:`softfloat` (the precision control applies to + - * / and FSQRT only,
§8.1.5.2), and commits as ``x87.py`` describes.  The condition codes are set
as each instruction's "FPU Flags Affected" section says; where it says
"undefined" they are left alone.
"""

from __future__ import annotations

import iced_x86 as ix

from . import softfloat as sf
from . import x87math as xm
from .softfloat import IE, ZE, L80, UE, OE
from .state import FpuState
from .x87 import (C0, C1, C2, C3, FORMATS, INDEFINITE, OVERFLOW, WRAP, Insn, begin, blocked,
                  empty, get, int_to_extended, masked, note, pop, precision, push, put,
                  raise_flags, read, rounding, signed, to_extended, underflow, x87)

M = ix.Mnemonic
CF, PF, AF, ZF, SF_, OF = 0x1, 0x4, 0x10, 0x40, 0x80, 0x800
Op = sf.Operand

ONE = 0x3FFF_8000_0000_0000_0000


_CTL: dict = {}


def _ctl(fpu: FpuState, pc: bool = True) -> dict:
    """Rounding parameters for a register destination (one dict per control word)."""
    key = (fpu.fcw, pc)
    kw = _CTL.get(key)
    if kw is None:
        kw = _CTL[key] = {"p": precision(fpu) if pc else 64, "um": masked(fpu, UE),
                          "om": masked(fpu, OE), "wrap": WRAP}
    return kw


def denormals(*bits: int) -> int:
    return sf.denormal_flag(L80, *bits)


def _source(cpu, fpu: FpuState, d: Insn, off: int, integer: bool) -> tuple[int | None, int]:
    """The memory operand in register format (None for a register operand)."""
    if not d.mem:
        return None, 0
    raw = read(cpu, d, off, d.size)
    if integer:
        return int_to_extended(signed(raw, d.size)), 0
    return to_extended(FORMATS[d.size], raw)


# --- + - * / ------------------------------------------------------------------------------------
ARITH = {}
for _name, _fn, _rev in (("ADD", "add", False), ("SUB", "sub", False), ("SUBR", "sub", True),
                         ("MUL", "mul", False), ("DIV", "div", False), ("DIVR", "div", True)):
    ARITH[getattr(M, "F" + _name)] = (_fn, _rev, False, False)
    ARITH[getattr(M, "F" + _name + "P")] = (_fn, _rev, True, False)
    ARITH[getattr(M, "FI" + _name)] = (_fn, _rev, False, True)


def compute(fn: str, fpu: FpuState, x: int, y: int) -> tuple[int, int]:
    a, b = Op(L80, x), Op(L80, y)
    rc, kw = rounding(fpu), _ctl(fpu)
    if fn == "add":
        return sf.add(L80, a, b, rc, True, **kw)
    if fn == "sub":
        return sf.add(L80, a, b, rc, True, negate_b=True, **kw)
    if fn == "mul":
        return sf.mul(L80, a, b, rc, True, **kw)
    return sf.div(L80, a, b, rc, True, **kw)


@x87(*ARITH)
def farith(cpu, d: Insn, off: int = 0) -> None:
    fpu = begin(cpu)
    fn, rev, pops, integer = ARITH[d.mnemonic]
    src, flags = _source(cpu, fpu, d, off, integer)
    di, si = (d.i, 0) if d.dst else (0, d.i)
    if empty(fpu, di) or (src is None and empty(fpu, si)):
        result, flags = INDEFINITE, underflow(fpu)
    else:
        a = get(fpu, di)
        b = src if src is not None else get(fpu, si)
        x, y = (b, a) if rev else (a, b)
        flags |= denormals(a, b)
        if not blocked(fpu, flags):
            result, f = compute(fn, fpu, x, y)
            flags |= f
    note(fpu, cpu, d, off)
    if not blocked(fpu, flags):
        put(fpu, di, result)
        if pops:
            pop(fpu)
    raise_flags(fpu, flags)


# --- comparisons --------------------------------------------------------------------------------------
COMPARES = {M.FCOM: (True, 0), M.FCOMP: (True, 1), M.FCOMPP: (True, 2), M.FUCOM: (False, 0),
            M.FUCOMP: (False, 1), M.FUCOMPP: (False, 2), M.FICOM: (True, 0), M.FICOMP: (True, 1),
            M.FTST: (True, 0)}
CODES = {sf.GT: 0, sf.LT: C0, sf.EQ: C3, sf.UN: C0 | C2 | C3}
EFLAGS_CODES = {sf.GT: 0, sf.LT: CF, sf.EQ: ZF, sf.UN: ZF | PF | CF}


def _relation(cpu, fpu, d: Insn, off: int, signal: bool, b_index: int = 1):
    """Compare ST(0) with the operand: (relation, flags)."""
    integer = d.mnemonic in (M.FICOM, M.FICOMP)
    src, flags = _source(cpu, fpu, d, off, integer)
    if d.mnemonic == M.FTST:
        src = 0
    if empty(fpu, 0) or (src is None and empty(fpu, b_index)):
        return sf.UN, underflow(fpu)
    a = get(fpu, 0)
    b = src if src is not None else get(fpu, b_index)
    rel, f = sf.compare(Op(L80, a), Op(L80, b), signal)
    return rel, flags | f | denormals(a, b)


@x87(*COMPARES)
def fcom(cpu, d: Insn, off: int = 0) -> None:
    """C3 C2 C0 from the comparison, C1 = 0; unordered raises IE for FCOM, FTST (any NaN)."""
    fpu = begin(cpu)
    signal, pops = COMPARES[d.mnemonic]
    rel, flags = _relation(cpu, fpu, d, off, signal, d.i)
    note(fpu, cpu, d, off)
    if blocked(fpu, flags):
        raise_flags(fpu, flags)
        return
    fpu.fsw = fpu.fsw & ~(C0 | C1 | C2 | C3) | CODES[rel]
    pop(fpu, pops)
    raise_flags(fpu, flags)


@x87(M.FCOMI, M.FCOMIP, M.FUCOMI, M.FUCOMIP)
def fcomi(cpu, d: Insn, eflags: int) -> int:
    """ZF PF CF from the comparison, OF SF AF cleared (the block passes and takes EFLAGS)."""
    fpu = begin(cpu)
    signal = d.mnemonic in (M.FCOMI, M.FCOMIP)
    rel, flags = _relation(cpu, fpu, d, 0, signal, d.i)
    note(fpu, cpu, d)
    if blocked(fpu, flags):
        raise_flags(fpu, flags)
        return eflags & ~(OF | SF_ | AF)        # cleared even then (SDM Vol. 2 FCOMI)
    fpu.fsw &= ~C1
    if d.mnemonic in (M.FCOMIP, M.FUCOMIP):
        pop(fpu)
    raise_flags(fpu, flags)
    return eflags & ~(CF | PF | AF | ZF | SF_ | OF) | EFLAGS_CODES[rel]


@x87(M.FXAM)
def fxam(cpu, d: Insn) -> None:
    """Classify ST(0) into C3 C2 C0, its sign into C1 (SDM Vol. 2 FXAM, Table 3-?)."""
    fpu = begin(cpu)
    v = get(fpu, 0)
    cc = C1 if v >> 79 & 1 else 0
    if empty(fpu, 0):
        cc |= C3 | C0
    else:
        cls = Op(L80, v).cls
        cc |= {sf.BAD: 0, sf.QNAN: C0, sf.SNAN: C0, sf.INF: C2 | C0, sf.ZERO: C3}.get(cls, 0)
        if cls == sf.FINITE:
            cc |= C3 | C2 if sf.is_denormal(L80, v) else C2
    fpu.fsw = fpu.fsw & ~(C0 | C1 | C2 | C3) | cc
    note(fpu, cpu, d)


# --- one-operand instructions ---------------------------------------------------------------------------
def _unary(cpu, d: Insn, compute_fn, pc: bool = False) -> None:
    """ST(0) = f(ST(0)): ``compute_fn(fpu, value) -> (result, flags)``."""
    fpu = begin(cpu)
    if empty(fpu, 0):
        result, flags = INDEFINITE, underflow(fpu)
    else:
        v = get(fpu, 0)
        flags = 0
        result, flags = compute_fn(fpu, v)
    note(fpu, cpu, d)
    if not blocked(fpu, flags):
        put(fpu, 0, result)
    raise_flags(fpu, flags)


@x87(M.FCHS, M.FABS)
def fchs(cpu, d: Insn) -> None:
    """Only the sign changes, whatever the operand (no exception for an SNaN); C1 = 0."""
    if d.mnemonic == M.FCHS:
        _unary(cpu, d, lambda fpu, v: (v ^ (1 << 79), 0))
    else:
        _unary(cpu, d, lambda fpu, v: (v & ~(1 << 79), 0))


def _sqrt(fpu: FpuState, v: int) -> tuple[int, int]:
    flags = denormals(v)
    r, f = sf.sqrt(L80, Op(L80, v), rounding(fpu), True, **_ctl(fpu))
    return r, flags | f


@x87(M.FSQRT)
def fsqrt(cpu, d: Insn) -> None:
    _unary(cpu, d, _sqrt)


def _rndint(fpu: FpuState, v: int) -> tuple[int, int]:
    r, f = sf.round_int(L80, Op(L80, v), rounding(fpu), True)
    return r, f | denormals(v)


@x87(M.FRNDINT)
def frndint(cpu, d: Insn) -> None:
    _unary(cpu, d, _rndint)


def _f2xm1(fpu: FpuState, v: int) -> tuple[int, int]:
    a = Op(L80, v)
    if a.cls >= sf.QNAN:
        return sf.nan_result(L80, a, None, True)
    if a.cls == sf.ZERO:
        return v, 0
    # the SDM defines F2XM1 for -1 <= x <= +1 only; outside it (infinities included) the
    # result is undefined: treated as invalid, as QEMU does
    if a.cls == sf.INF or sf.compare(Op(L80, v & ~(1 << 79)), Op(L80, ONE), False)[0] == sf.GT:
        return INDEFINITE, IE
    flags = denormals(v)
    if sf.compare(Op(L80, v & ~(1 << 79)), Op(L80, ONE), False)[0] == sf.EQ:
        return (ONE if not a.sign else 0xBFFE_8000_0000_0000_0000), flags    # 1 or -1/2
    r, f = xm.ziv(xm.exp2m1(a.sign, a.sig, a.exp), rounding(fpu), masked(fpu, UE), True, WRAP)
    return r, flags | f


@x87(M.F2XM1)
def f2xm1(cpu, d: Insn) -> None:
    _unary(cpu, d, _f2xm1)


# --- two-operand instructions on ST(0) and ST(1) ------------------------------------------------------------
def _binary(cpu, d: Insn, compute_fn, pops: bool, clear_cc: bool = False) -> None:
    """ST(1) = f(ST(0), ST(1)) then pop (FYL2X, FYL2XP1, FPATAN), or ST(0) = f(...) (FSCALE,
    FPREM, FPREM1: ``pops`` False).  ``compute_fn(fpu, a, b, flags) -> (result, flags)``
    gets the operands unpacked, after the NaN and invalid-encoding cases and with DE."""
    fpu = begin(cpu)
    if clear_cc:
        fpu.fsw &= ~(C0 | C1 | C2 | C3)
    if empty(fpu, 0) or empty(fpu, 1):
        result, flags = INDEFINITE, underflow(fpu)
    else:
        st0, st1 = get(fpu, 0), get(fpu, 1)
        a, b = Op(L80, st0), Op(L80, st1)
        if a.cls >= sf.QNAN or b.cls >= sf.QNAN:
            result, flags = sf.nan_result(L80, a, b, True)
        else:
            result, flags = compute_fn(fpu, a, b, denormals(st0, st1))
    note(fpu, cpu, d)
    if not blocked(fpu, flags):
        if pops:
            put(fpu, 1, result)
            pop(fpu)
        else:
            put(fpu, 0, result)
    raise_flags(fpu, flags)


def _fscale(fpu: FpuState, a: Op, b: Op, flags: int) -> tuple[int, int]:
    """ST(0) * 2**trunc(ST(1)), rounded at full precision (PC does not apply)."""
    if b.cls == sf.INF:
        if b.sign:
            return (INDEFINITE, IE) if a.cls == sf.INF else (sf.zero(L80, a.sign), flags)
        return (INDEFINITE, IE) if a.cls == sf.ZERO else (sf.infinity(L80, a.sign), flags)
    if a.cls in (sf.ZERO, sf.INF):
        return a.bits, flags
    n = 0 if b.cls == sf.ZERO else sf.to_int(b, 80, sf.RZ)[0] if b.exp < 64 else None
    if n is None or abs(n) > 1 << 20:
        n = (1 << 20) * (-1 if b.sign else 1)           # far beyond any finite result
    res, f = sf.round_pack(L80, a.sign, a.exp + n, a.sig, rounding(fpu), 64, False,
                           masked(fpu, UE), masked(fpu, OE), WRAP)
    return res, flags | f


@x87(M.FSCALE)
def fscale(cpu, d: Insn) -> None:
    _binary(cpu, d, _fscale, False)


def _remainder(fpu: FpuState, a: Op, b: Op, flags: int, nearest: bool) -> tuple[int, int]:
    """FPREM (truncating quotient) / FPREM1 (IEEE, nearest): SDM Vol. 2 FPREM.

    A full remainder when the exponents differ by less than 64 (C2 = 0, and the
    quotient's low bits in C0 C3 C1); otherwise a partial one that takes off
    N = 32 + (D mod 32) bits of the quotient (C2 = 1), which is the AMD-specified
    choice Intel processors follow (and QEMU).
    """
    if a.cls == sf.INF or b.cls == sf.ZERO:
        return INDEFINITE, IE
    if a.cls == sf.ZERO or b.cls == sf.INF:
        return a.bits, flags
    ea = a.exp + a.sig.bit_length()
    eb = b.exp + b.sig.bit_length()
    D = ea - eb
    bexp = b.exp
    partial = D >= 64
    if partial:
        bexp += D - (32 + D % 32)
    e = min(a.exp, bexp)
    A, B = a.sig << (a.exp - e), b.sig << (bexp - e)
    q, rem = divmod(A, B)
    sign = a.sign
    if nearest and not partial and (2 * rem > B or (2 * rem == B and q & 1)):
        q += 1
        rem = B - rem
        sign ^= 1
    codes = C2 if partial else ((C0 if q & 4 else 0) | (C3 if q & 2 else 0))
    c1 = C1 if not partial and q & 1 else 0          # C1 travels with the flags (raise_flags)
    if rem == 0:
        res, f = sf.zero(L80, a.sign), 0
    else:
        res, f = sf.round_pack(L80, sign, e, rem, rounding(fpu), 64, False, masked(fpu, UE),
                               True, WRAP)
    fpu.fsw |= codes
    return res, flags | f | c1


@x87(M.FPREM, M.FPREM1)
def fprem(cpu, d: Insn) -> None:
    nearest = d.mnemonic == M.FPREM1
    _binary(cpu, d, lambda fpu, a, b, flags: _remainder(fpu, a, b, flags, nearest), False, True)


def _fyl2x(fpu: FpuState, x: Op, y: Op, flags: int) -> tuple[int, int]:
    """ST(1) * log2(ST(0)); the special operands of SDM Vol. 2 FYL2X's table."""
    st1 = y.bits
    if x.sign and x.cls != sf.ZERO:
        return INDEFINITE, IE
    below_one = x.cls == sf.ZERO or (x.cls == sf.FINITE and sf.compare(x, Op(L80, ONE), False)[0] == sf.LT)
    is_one = x.cls == sf.FINITE and x.sig & (x.sig - 1) == 0 and x.exp + x.sig.bit_length() - 1 == 0
    if y.cls == sf.INF:
        if is_one:
            return INDEFINITE, IE
        return (st1 ^ (1 << 79) if below_one else st1), flags
    if x.cls == sf.INF:
        if y.cls == sf.ZERO:
            return INDEFINITE, IE
        return sf.infinity(L80, y.sign), flags
    if x.cls == sf.ZERO:
        if y.cls == sf.ZERO:
            return INDEFINITE, IE
        return sf.infinity(L80, y.sign ^ 1), flags | ZE
    if y.cls == sf.ZERO:
        return (st1 ^ (1 << 79) if below_one else st1), flags
    rc = rounding(fpu)
    if x.sig & (x.sig - 1) == 0:
        # a power of two: log2 is the integer k and the product is rounded once
        k = x.exp + x.sig.bit_length() - 1
        if k == 0:
            return sf.zero(L80, y.sign), flags
        res, f = sf.mul(L80, Op(L80, int_to_extended(k)), y, rc, True, **_ctl(fpu, False))
        return res, flags | f
    res, f = xm.ziv(xm.log2_times(x.sig, x.exp, y.sign, y.sig, y.exp, False), rc,
                    masked(fpu, UE), masked(fpu, OE), WRAP)
    return res, flags | f


@x87(M.FYL2X)
def fyl2x(cpu, d: Insn) -> None:
    _binary(cpu, d, _fyl2x, True)


# |x| bounds of FYL2XP1: Intel documents |x| < 1 - sqrt(2)/2; AMD allows sqrt(2)/2 - 1 to
# sqrt(2) - 1 and QEMU follows AMD, as here (beyond: invalid)
_XP1_NEG = 0x3FFD_95F6_1998_0C43_36F7
_XP1_POS = 0x3FFD_D413_CCCF_E779_9211


def _fyl2xp1(fpu: FpuState, x: Op, y: Op, flags: int) -> tuple[int, int]:
    st0 = x.bits
    bound = Op(L80, _XP1_NEG if x.sign else _XP1_POS)
    if x.cls == sf.INF or (x.cls == sf.FINITE and
                           sf.compare(Op(L80, st0 & ~(1 << 79)), bound, False)[0] == sf.GT):
        return INDEFINITE, IE
    if x.cls == sf.ZERO or y.cls in (sf.ZERO, sf.INF):
        # the result is exactly that of x * y (log2(1 + x) has the sign of x)
        res, f = sf.mul(L80, x, y, rounding(fpu), True, **_ctl(fpu, False))
        return res, flags | f
    sig = -x.sig if x.sign else x.sig
    res, f = xm.ziv(xm.log2_times(sig, x.exp, y.sign, y.sig, y.exp, True), rounding(fpu),
                    masked(fpu, UE), masked(fpu, OE), WRAP)
    return res, flags | f


@x87(M.FYL2XP1)
def fyl2xp1(cpu, d: Insn) -> None:
    _binary(cpu, d, _fyl2xp1, True)


def _pi_multiple(num: int, den: int, sign: int, rc: int) -> int:
    """± num/den * π rounded (FPATAN's exact-angle cases)."""
    from .x87math import PI, PREC
    return sf.round_pack(L80, sign, -PREC - 1, ((PI * num) // den) << 1 | 1, rc)[0]


def _fpatan(fpu: FpuState, x: Op, y: Op, flags: int) -> tuple[int, int]:
    """atan2(ST(1), ST(0)): SDM Vol. 2 FPATAN's table for zeros and infinities."""
    st1 = y.bits
    rc = rounding(fpu)
    if y.cls == sf.ZERO:
        if not x.sign:
            return st1, flags
        return _pi_multiple(1, 1, y.sign, rc), flags | sf.PE
    if y.cls == sf.INF:
        if x.cls == sf.INF:
            return _pi_multiple(3 if x.sign else 1, 4, y.sign, rc), flags | sf.PE
        return _pi_multiple(1, 2, y.sign, rc), flags | sf.PE
    if x.cls == sf.ZERO:
        return _pi_multiple(1, 2, y.sign, rc), flags | sf.PE
    if x.cls == sf.INF:
        if not x.sign:
            return sf.zero(L80, y.sign), flags
        return _pi_multiple(1, 1, y.sign, rc), flags | sf.PE
    res, f = xm.ziv(xm.atan2(y.sign, y.sig, y.exp, x.sign, x.sig, x.exp), rc, masked(fpu, UE),
                    True, WRAP)
    return res, flags | f


@x87(M.FPATAN)
def fpatan(cpu, d: Insn) -> None:
    _binary(cpu, d, _fpatan, True)


# --- FXTRACT, FSIN, FCOS, FSINCOS, FPTAN: instructions that push ---------------------------------------------
@x87(M.FXTRACT)
def fxtract(cpu, d: Insn) -> None:
    """ST(0) becomes the exponent (in ST(1)) and the significand with exponent 0 (new ST(0))."""
    fpu = begin(cpu)
    exp_v = sig_v = None
    if empty(fpu, 0):
        exp_v = sig_v = INDEFINITE
        flags = underflow(fpu)
    elif not empty(fpu, 7):
        exp_v = sig_v = INDEFINITE
        flags = OVERFLOW
    else:
        v = get(fpu, 0)
        a = Op(L80, v)
        flags = denormals(v)
        if a.cls >= sf.QNAN:
            exp_v, flags = sf.nan_result(L80, a, None, True)
            sig_v = exp_v
        elif a.cls == sf.ZERO:
            exp_v, sig_v, flags = sf.infinity(L80, 1), v, flags | ZE
        elif a.cls == sf.INF:
            exp_v, sig_v = sf.infinity(L80, 0), v
        else:
            e = a.exp + a.sig.bit_length() - 1
            exp_v = int_to_extended(e)
            sig_v = sf.pack_exact(L80, a.sign, a.exp - e, a.sig)
    note(fpu, cpu, d)
    if not blocked(fpu, flags):
        put(fpu, 0, exp_v)
        push(fpu, sig_v)
    raise_flags(fpu, flags)


TRIG = {M.FSIN: ("sin",), M.FCOS: ("cos",), M.FSINCOS: ("sin", "cos"), M.FPTAN: ("tan", None)}
RANGE = 63                      # |x| >= 2**63: C2 = 1 and ST(0) unchanged (SDM Vol. 2 FSIN)


@x87(*TRIG)
def ftrig(cpu, d: Insn) -> None:
    fpu = begin(cpu)
    funcs = TRIG[d.mnemonic]
    pushes = len(funcs) == 2
    flags, results = 0, None
    if empty(fpu, 0):
        flags = underflow(fpu)
        results = [INDEFINITE] * len(funcs)
    elif pushes and not empty(fpu, 7):
        flags = OVERFLOW
        results = [INDEFINITE] * 2
    else:
        v = get(fpu, 0)
        a = Op(L80, v)
        flags = denormals(v)
        if a.cls >= sf.QNAN:
            nan, f = sf.nan_result(L80, a, None, True)
            results, flags = [nan] * len(funcs), flags | f
        elif a.cls == sf.INF:
            results, flags = [INDEFINITE] * len(funcs), flags | IE
        elif a.cls == sf.FINITE and a.exp + a.sig.bit_length() - 1 >= RANGE:
            fpu.fsw |= C2                        # out of range: nothing else happens
            note(fpu, cpu, d)
            return
        else:
            results = []
            for fn in funcs:
                if fn is None:
                    results.append(ONE)           # FPTAN pushes 1.0
                elif a.cls == sf.ZERO:
                    results.append(ONE if fn == "cos" else v)
                else:
                    r, f = xm.ziv(xm.sin_cos(a.sign, a.sig, a.exp, fn), rounding(fpu),
                                  masked(fpu, UE), True, WRAP)
                    results.append(r)
                    flags |= f
    note(fpu, cpu, d)
    if blocked(fpu, flags):
        raise_flags(fpu, flags)
        return
    fpu.fsw &= ~C2
    put(fpu, 0, results[0])
    if pushes:
        push(fpu, results[1])
    raise_flags(fpu, flags)
