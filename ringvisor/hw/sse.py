"""The SIMD unit: MMX, SSE and SSE2 registers, availability, MXCSR, #XM, operand plumbing.

Every MMX/SSE/SSE2 instruction is one *lane function* ``fn(ctx, a, b) -> result``
filed in :data:`SIMD` (here, in ``ssefloat.py`` and in ``simdint.py``) and run
by :func:`execute`: ``a`` is the destination register's old value (None when
the destination is memory or a general register), ``b`` the source (a
register, the memory operand at its architectural size, a general register
or the immediate), and the result goes to the destination — after every
check, so that a fault leaves the machine as it was.

Availability is SDM Vol. 3 Table 12-1 for instructions on XMM registers
(CR0.EM or CR4.OSFXSR clear: #UD; CR0.TS: #NM) and Table 12-? for MMX ones
(CR0.EM: #UD, CR0.TS: #NM, a pending x87 exception: #MF).  An MMX
instruction puts the x87 unit in MMX state (TOP = 0, every register valid),
and writing MMi sets bits 79:64 of Ri (SDM Vol. 1 §9.5).  A legacy SSE
instruction with a 16-byte memory operand needs it 16-byte aligned (#GP(0)),
except the unaligned moves.

The fences, PREFETCHh, CLFLUSH, MOVNTI and PAUSE do not touch the SIMD
registers and are not subject to CR0.EM/TS or CR4.OSFXSR.
"""

from __future__ import annotations

from functools import partial

import iced_x86 as ix

from . import x87
from .faults import GP, NM, UD, XM, CpuFault
from .state import CR0_EM, CR0_TS, CR4_OSFXSR, CR4_OSXMMEXCPT, FpuState
from .translate import GPR, registrar
from .x87control import MXCSR_MASK

M = ix.Mnemonic
OK = ix.OpKind
R = ix.Register
M32, M64, M128 = (1 << 32) - 1, (1 << 64) - 1, (1 << 128) - 1
MMX_EXPONENT = 0xFFFF << 64

SIMD: dict[int, object] = {}             # mnemonic -> lane function
simd = registrar(SIMD)

# what, besides the lane function, an instruction needs (filled by the modules defining them)
EFLAGS_OUT: set[int] = set()             # COMISS & co: ZF PF CF
NO_CHECKS: set[int] = set()              # fences, CLFLUSH, PREFETCH, MOVNTI: no CR0/CR4 rules
LOADS_AT_OP0 = frozenset({M.LDMXCSR, M.CLFLUSH, M.PREFETCHNTA, M.PREFETCHT0, M.PREFETCHT1,
                          M.PREFETCHT2})          # a lone memory operand that is read
MASKMOV = (M.MASKMOVQ, M.MASKMOVDQU)
NO_ACCESS = frozenset({M.PREFETCHNTA, M.PREFETCHT0, M.PREFETCHT1, M.PREFETCHT2})
UNALIGNED: set[int] = {M.MOVUPS, M.MOVUPD, M.MOVDQU, M.MASKMOVDQU, M.LDDQU}
MXCSR_FLAGS = 0x3F


class Sinsn:
    """The operands of one SIMD instruction, fixed at translation time."""

    __slots__ = ("mnemonic", "fn", "dst", "dst_mmx", "src", "src_mmx", "src_gpr", "dst_gpr",
                 "mem", "seg", "size", "align", "imm", "width", "mmx", "xmm", "store", "code",
                 "data", "eflags")

    def __init__(self, ins: ix.Instruction, seg: int | None) -> None:
        self.mnemonic = ins.mnemonic
        self.code = ins.code
        self.fn = SIMD[ins.mnemonic]
        self.eflags = ins.mnemonic in EFLAGS_OUT
        self.seg = seg
        self.mem = seg is not None
        self.size = ix.MemorySizeExt.size(ins.memory_size) if self.mem else 0
        self.imm = None
        self.dst = self.src = self.data = None
        self.dst_mmx = self.src_mmx = False
        self.dst_gpr = self.src_gpr = None
        self.store = False
        self.mmx = self.xmm = False
        for k in range(ins.op_count):
            kind = ins.op_kind(k)
            if kind == OK.REGISTER:
                r = ins.op_register(k)
                if R.XMM0 <= r <= R.XMM7:
                    idx, is_mmx = r - R.XMM0, False
                    self.xmm = True
                elif R.MM0 <= r <= R.MM7:
                    idx, is_mmx = r - R.MM0, True
                    self.mmx = True
                elif r in GPR:
                    if k == 0:
                        self.dst_gpr = r
                    else:
                        self.src_gpr = r
                    continue
                else:
                    raise ValueError(f"unexpected register in {ins}")
                if k == 0:
                    self.dst, self.dst_mmx = idx, is_mmx
                elif self.src is None and not (ins.mnemonic in MASKMOV and k == 1):
                    self.src, self.src_mmx = idx, is_mmx
                else:
                    self.data = idx        # MASKMOVQ/DQU: the data register (the mask is src)
            elif kind == OK.MEMORY:
                if k == 0 and ins.mnemonic not in LOADS_AT_OP0:
                    self.store = True
            elif kind in (OK.MEMORY_SEG_EDI, OK.MEMORY_SEG_DI):
                # MASKMOVQ/MASKMOVDQU: DS:EDI (or DI), a byte-masked store
                self.size = 8 if ins.mnemonic == M.MASKMOVQ else 16
                self.store = True
            elif kind in (OK.IMMEDIATE8, OK.IMMEDIATE8_2ND):
                self.imm = ins.immediate(k)
        if ins.mnemonic in (M.EMMS, M.CVTPI2PS):
            # EMMS has no operands; CVTPI2PS enters MMX state even from memory (SDM Vol. 2)
            self.mmx = True
        # the vector width the lanes span: that of the register operands
        self.width = 8 if (self.dst_mmx if self.dst is not None else self.src_mmx) else 16
        self.align = self.size == 16 and ins.mnemonic not in UNALIGNED


# --- availability -----------------------------------------------------------------------------------
def check(cpu, d: Sinsn) -> FpuState:
    st = cpu.state
    if d.mnemonic in NO_CHECKS:
        return st.fpu
    cr0 = st.cr0
    if cr0 & CR0_EM:
        raise CpuFault(UD)
    if d.xmm or not d.mmx:
        if not st.cr4 & CR4_OSFXSR:
            raise CpuFault(UD)
    if cr0 & CR0_TS:
        raise CpuFault(NM)
    fpu = st.fpu
    if d.mmx and fpu.fsw & x87.ES:
        x87.signal_pending(cpu)          # MMX instructions are waiting x87 instructions
    return fpu


def enter_mmx(fpu: FpuState) -> None:
    """Any MMX instruction but EMMS: TOP = 0 and all eight tags valid (SDM Vol. 1 §9.5.1)."""
    fpu.top = 0
    fpu.ftw = 0xFF


# --- MXCSR and #XM ----------------------------------------------------------------------------------
class Env:
    """The MXCSR fields the float lanes use (rebuilt when MXCSR changes)."""

    __slots__ = ("mxcsr", "rc", "daz", "ftz", "um", "om", "masks")

    def __init__(self, mxcsr: int) -> None:
        self.mxcsr = mxcsr
        self.rc = (mxcsr >> 13) & 3
        self.daz = bool(mxcsr & 0x40)
        self.ftz = bool(mxcsr & 0x8000)
        self.masks = (mxcsr >> 7) & 0x3F
        self.um = bool(self.masks & 0x10)
        self.om = bool(self.masks & 0x8)


_ENVS: dict[int, Env] = {}


def env(fpu: FpuState) -> Env:
    e = _ENVS.get(fpu.mxcsr)
    if e is None:
        e = _ENVS[fpu.mxcsr] = Env(fpu.mxcsr)
    return e


PRE = 0x7                                # IE DE ZE: detected before the computation


def signal(cpu, fpu: FpuState, flags: int) -> None:
    """Record SIMD exception flags; an unmasked one raises #XM (or #UD without OSXMMEXCPT)
    and then the destination is not written (SDM Vol. 1 §11.5.2, Vol. 3 §6.15 int 19).

    An unmasked exception detected before the computation (invalid, denormal, divide
    by zero) means the post-computation ones are not reported at all.
    """
    if not flags:
        return
    unmasked = flags & ~(fpu.mxcsr >> 7)
    if unmasked & PRE:
        flags &= PRE
    fpu.mxcsr |= flags & MXCSR_FLAGS
    if unmasked & MXCSR_FLAGS:
        raise CpuFault(XM if cpu.state.cr4 & CR4_OSXMMEXCPT else UD)


# --- execution --------------------------------------------------------------------------------------
class Ctx:
    """What a lane function may use: the CPU, the FPU state, the instruction, the immediate."""

    __slots__ = ("cpu", "fpu", "d", "imm", "lin")


def read_reg(fpu: FpuState, idx: int, mmx: bool) -> int:
    return fpu.st[idx] & M64 if mmx else fpu.xmm[idx]


def execute(cpu, d: Sinsn, c: Ctx, x: int = 0, y: int = 0, z: int = 0) -> int | None:
    """Run one SIMD instruction.  The block passes, in order, the memory operand's offset
    (if it has one), the general register it reads (if any), and EFLAGS (COMISS & co)."""
    fpu = check(cpu, d)
    if d.mnemonic in NO_ACCESS:
        return None                     # a prefetch never faults, not even on its address
    lin = None
    if d.mem:
        lin = cpu.segmentation.linear(d.seg, x, d.size, d.store)
        if d.align and lin & 15:
            raise CpuFault(GP, 0)
        x, y = y, z
    a = (fpu.st[d.dst] & M64 if d.dst_mmx else fpu.xmm[d.dst]) if d.dst is not None else None
    if d.src is not None:
        b = fpu.st[d.src] & M64 if d.src_mmx else fpu.xmm[d.src]
    elif lin is not None and not d.store:
        b = cpu.mmu.read(lin, d.size, cpu.cpl == 3)
    elif d.src_gpr is not None:
        b = x
        x = y
    else:
        b = d.imm
    c.cpu, c.fpu, c.lin = cpu, fpu, lin
    if d.eflags:
        return d.fn(c, a, b, x)
    r = d.fn(c, a, b)
    if r is None:                       # fences, PREFETCH, EMMS, LDMXCSR: nothing to write
        return None
    if d.store:
        cpu.mmu.write(lin, d.size, r & ((1 << (8 * d.size)) - 1), cpu.cpl == 3)
    if d.mmx:
        enter_mmx(fpu)
    if d.dst is not None:
        if d.dst_mmx:
            fpu.st[d.dst] = (r & M64) | MMX_EXPONENT
        else:
            fpu.xmm[d.dst] = r & M128
        return None
    if d.dst_gpr is not None:
        return r & M32
    return None


def bind(cpu, ins: ix.Instruction, seg: int | None):
    """(function for the block to call, GPR it reads, GPR it writes, writes EFLAGS)."""
    d = Sinsn(ins, seg)
    c = Ctx()
    c.d, c.imm = d, d.imm
    return (partial(execute, cpu, d, c), d.src_gpr, d.dst_gpr, d.eflags)


# --- lanes --------------------------------------------------------------------------------------------
def split(v: int, size: int, n: int) -> list[int]:
    bits = 8 * size
    m = (1 << bits) - 1
    return [(v >> (bits * i)) & m for i in range(n)]


def join(lanes: list[int], size: int) -> int:
    bits = 8 * size
    m = (1 << bits) - 1
    v = 0
    for i, x in enumerate(lanes):
        v |= (x & m) << (bits * i)
    return v


# --- moves, logic, shuffles ------------------------------------------------------------------------------
@simd(M.MOVAPS, M.MOVUPS, M.MOVAPD, M.MOVUPD, M.MOVDQA, M.MOVDQU, M.MOVNTPS, M.MOVNTPD,
      M.MOVNTDQ, M.MOVNTQ, M.MOVQ2DQ, M.MOVDQ2Q, M.LDDQU)
def mov_full(c: Ctx, a, b):
    return b


@simd(M.MOVD)
def movd(c: Ctx, a, b):
    return b & M32                       # into a register: zero-extended to its width


@simd(M.MOVQ)
def movq(c: Ctx, a, b):
    return b & M64                       # MOVQ xmm, xmm/m64 clears bits 127:64


@simd(M.MOVSS)
def movss(c: Ctx, a, b):
    d = c.d
    if a is None or d.mem:               # to memory, or from memory (upper lanes cleared)
        return b & M32
    return (a & ~M32) | (b & M32)        # register to register: the low lane only


@simd(M.MOVSD)
def movsd(c: Ctx, a, b):
    d = c.d
    if a is None or d.mem:
        return b & M64
    return (a & ~M64) | (b & M64)


@simd(M.MOVLPS, M.MOVLPD)
def movlps(c: Ctx, a, b):
    if a is None:
        return b & M64                   # store the low quadword
    return (a & ~M64) | (b & M64)


@simd(M.MOVHPS, M.MOVHPD)
def movhps(c: Ctx, a, b):
    if a is None:
        return b >> 64                   # store the high quadword
    return (a & M64) | ((b & M64) << 64)


@simd(M.MOVHLPS)
def movhlps(c: Ctx, a, b):
    return (a & ~M64) | (b >> 64)


@simd(M.MOVLHPS)
def movlhps(c: Ctx, a, b):
    return (a & M64) | ((b & M64) << 64)


@simd(M.ANDPS, M.ANDPD, M.PAND)
def andps(c: Ctx, a, b):
    return a & b


@simd(M.ANDNPS, M.ANDNPD, M.PANDN)
def andnps(c: Ctx, a, b):
    return ~a & b


@simd(M.ORPS, M.ORPD, M.POR)
def orps(c: Ctx, a, b):
    return a | b


@simd(M.XORPS, M.XORPD, M.PXOR)
def xorps(c: Ctx, a, b):
    return a ^ b


@simd(M.SHUFPS)
def shufps(c: Ctx, a, b):
    x, y, i = split(a, 4, 4), split(b, 4, 4), c.imm
    return join([x[i & 3], x[(i >> 2) & 3], y[(i >> 4) & 3], y[(i >> 6) & 3]], 4)


@simd(M.SHUFPD)
def shufpd(c: Ctx, a, b):
    x, y, i = split(a, 8, 2), split(b, 8, 2), c.imm
    return join([x[i & 1], y[(i >> 1) & 1]], 8)


def _unpack(a: int, b: int, size: int, width: int, high: bool) -> int:
    n = width // size
    x, y = split(a, size, n), split(b, size, n)
    half = n // 2
    pick = range(half, n) if high else range(half)
    out = []
    for k in pick:
        out += [x[k], y[k]]
    return join(out, size)


for _m, _size, _high in ((M.UNPCKLPS, 4, False), (M.UNPCKHPS, 4, True), (M.UNPCKLPD, 8, False),
                         (M.UNPCKHPD, 8, True), (M.PUNPCKLBW, 1, False), (M.PUNPCKHBW, 1, True),
                         (M.PUNPCKLWD, 2, False), (M.PUNPCKHWD, 2, True), (M.PUNPCKLDQ, 4, False),
                         (M.PUNPCKHDQ, 4, True), (M.PUNPCKLQDQ, 8, False), (M.PUNPCKHQDQ, 8, True)):
    SIMD[_m] = (lambda size, high: lambda c, a, b: _unpack(a, b, size, c.d.width, high))(_size, _high)


@simd(M.MOVMSKPS)
def movmskps(c: Ctx, a, b):
    return sum(((b >> (32 * i + 31)) & 1) << i for i in range(4))


@simd(M.MOVMSKPD)
def movmskpd(c: Ctx, a, b):
    return ((b >> 63) & 1) | ((b >> 127) & 1) << 1


# --- MXCSR, EMMS, fences, cache control --------------------------------------------------------------------
@simd(M.LDMXCSR)
def ldmxcsr(c: Ctx, a, b):
    if b & ~MXCSR_MASK:
        raise CpuFault(GP, 0)           # reserved bits (SDM Vol. 2 LDMXCSR)
    c.fpu.mxcsr = b
    return None


@simd(M.STMXCSR)
def stmxcsr(c: Ctx, a, b):
    return c.fpu.mxcsr


@simd(M.EMMS)
def emms(c: Ctx, a, b):
    c.fpu.ftw = 0                        # every x87 register empty again
    return None


@simd(M.SFENCE, M.LFENCE, M.MFENCE, M.PREFETCHNTA, M.PREFETCHT0, M.PREFETCHT1, M.PREFETCHT2)
def fence(c: Ctx, a, b):
    return None                          # one CPU, strongly ordered memory: nothing to wait for


@simd(M.CLFLUSH)
def clflush(c: Ctx, a, b):
    return None                          # the operand was read (its faults taken); no caches


@simd(M.MOVNTI)
def movnti(c: Ctx, a, b):
    return b


@simd(M.MASKMOVQ, M.MASKMOVDQU)
def maskmov(c: Ctx, a, b):
    """Store the bytes of the first operand whose mask byte (second operand) has bit 7 set.

    The destination is read and written back whole (the unselected bytes unchanged);
    the SDM allows the access to fault even when no byte is selected.
    """
    d = c.d
    data = read_reg(c.fpu, d.data, d.src_mmx)
    old = c.cpu.mmu.read(c.lin, d.size, c.cpu.cpl == 3)
    out = old
    for i in range(d.size):
        if (b >> (8 * i + 7)) & 1:
            out = (out & ~(0xFF << (8 * i))) | (data & (0xFF << (8 * i)))
    return out


NO_CHECKS.update({M.SFENCE, M.LFENCE, M.MFENCE, M.PREFETCHNTA, M.PREFETCHT0, M.PREFETCHT1,
                  M.PREFETCHT2, M.CLFLUSH, M.MOVNTI})


def _late_imports() -> None:
    """The lane functions living in their own modules file themselves here."""
    from . import simdint, ssefloat  # noqa: F401


_late_imports()
