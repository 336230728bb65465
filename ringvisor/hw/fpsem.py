"""Emitters for the x87, MMX and SSE instructions: a call from the block, not a block end.

A floating-point instruction does not end its translated block (integer code
around it keeps its registers in locals and its flags symbolic): the block
calls a Python function bound at translation time to the CPU and to the
instruction (``x87.bind``, ``sse.bind``), passing the memory operand's
effective address and any general register or flag the instruction reads,
and puts back what it returns (AX for FNSTSW AX, a general register for
MOVD/CVTSS2SI/PMOVMSKB..., ZF PF CF for FCOMI/COMISS).  The function
raises #NM/#UD/#MF/#XM/#GP/#PF before changing anything, so the block's
precise-exception path covers it like any other instruction.

FWAIT is the exception: with CR0.NE=0 it may raise IRQ 13 (FERR#), which must
be taken right after it, so it ends the block (as QEMU treats it as I/O).
"""

from __future__ import annotations

import iced_x86 as ix

from . import sse, x87, x87arith, x87control  # noqa: F401  (they file functions in x87.X87)
from .semantics import EMITTERS, flags_bits, helper, set_flags_bits, sem
from .translate import GPR, RELIM, SREG, WRITE_ACCESSES, BlockBuilder

_INFO = ix.InstructionInfoFactory()


def _stores(ins: ix.Instruction) -> str:
    """RELIM after a call that writes memory (it may be MMIO: see translate.RELIM)."""
    return RELIM if any(m.access in WRITE_ACCESSES for m in _INFO.info(ins).used_memory()) else ""

M = ix.Mnemonic
OK = ix.OpKind
R = ix.Register

# FCMOVcc: the EFLAGS condition (x86 condition-code numbering) each one tests
FCMOV_CC = {M.FCMOVB: 2, M.FCMOVE: 4, M.FCMOVBE: 6, M.FCMOVU: 10, M.FCMOVNB: 3, M.FCMOVNE: 5,
            M.FCMOVNBE: 7, M.FCMOVNU: 11}
EFLAGS_OUT = {M.FCOMI, M.FCOMIP, M.FUCOMI, M.FUCOMIP}


IMPLICIT_DI = (OK.MEMORY_SEG_EDI, OK.MEMORY_SEG_DI)      # MASKMOVQ/MASKMOVDQU's DS:EDI


def _memory_segment(ins: ix.Instruction) -> int | None:
    for k in range(ins.op_count):
        if ins.op_kind(k) == OK.MEMORY or ins.op_kind(k) in IMPLICIT_DI:
            return SREG[ins.memory_segment]
    return None


def _offset(bb: BlockBuilder, ins: ix.Instruction) -> str:
    """The memory operand's offset: its effective address, or EDI/DI for MASKMOVQ/DQU."""
    if ins.op0_kind == OK.MEMORY_SEG_EDI:
        return bb.reg(7)
    if ins.op0_kind == OK.MEMORY_SEG_DI:
        return f"({bb.reg(7)} & 0xFFFF)"
    return bb.ea(ins)


def emit_x87(bb: BlockBuilder, ins: ix.Instruction) -> None:
    seg = _memory_segment(ins)
    fn = x87.bind(bb.cpu, ins, bb.raw, seg)
    k = bb.const(fn)
    bb.may_fault = True
    m = ins.mnemonic
    args = []
    if seg is not None:
        args.append(bb.ea(ins))
    if m in FCMOV_CC:
        args.append(f"1 if {bb.cond(FCMOV_CC[m])} else 0")
    if m in EFLAGS_OUT:
        args.append(flags_bits(bb))
        v = bb.let(f"{k}({', '.join(args)})", "fl")
        set_flags_bits(bb, v)
        return
    call = f"{k}({', '.join(args)})"
    if m in (M.FNSTSW, M.FSTSW) and seg is None:
        bb.write_reg(R.AX, bb.let(call, "v"))
        return
    bb.emit(call + (_stores(ins) if seg is not None else ""))


for _m in x87.X87:
    if _m != M.WAIT:
        sem(_m)(emit_x87)
sem(M.WAIT)(helper)


def emit_simd(bb: BlockBuilder, ins: ix.Instruction) -> None:
    """An MMX/SSE instruction: ``sse.bind`` says which general register it reads or writes."""
    seg = _memory_segment(ins)
    bound = sse.bind(bb.cpu, ins, seg)
    fn, gpr_in, gpr_out, eflags_out = bound
    k = bb.const(fn)
    bb.may_fault = True
    args = []
    if seg is not None:
        args.append(_offset(bb, ins))
    if gpr_in is not None:
        args.append(bb.read_reg(gpr_in))
    if eflags_out:
        args.append(flags_bits(bb))
        v = bb.let(f"{k}({', '.join(args)})", "fl")
        set_flags_bits(bb, v)
        return
    call = f"{k}({', '.join(args)})"
    if gpr_out is not None:
        bb.write_reg(gpr_out, bb.let(call, "v"))
        return
    bb.emit(call + (_stores(ins) if seg is not None else ""))


def _shared(string_emitter):
    """MOVSD and CMPSD name both a string instruction and an SSE2 one: dispatch by operands."""
    def emit(bb: BlockBuilder, ins: ix.Instruction) -> None:
        if any(ins.op_kind(k) == OK.REGISTER for k in range(ins.op_count)):
            return emit_simd(bb, ins)
        return string_emitter(bb, ins)
    return emit


for _m in sse.SIMD:
    if _m in EMITTERS:
        EMITTERS[_m] = _shared(EMITTERS[_m])
    else:
        sem(_m)(emit_simd)

__all__ = ["emit_x87", "emit_simd", "GPR"]
