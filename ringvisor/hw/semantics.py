"""Instruction semantics, as emitters of Python source for the block translator.

Each emitter receives the :class:`~ringvisor.hw.translate.BlockBuilder` and an
iced-x86 instruction and appends the statements that execute it.  The rule
that keeps exceptions precise: read and check everything (and write memory)
*before* assigning any register.

Instructions that change system state are handed to a helper (see
:mod:`ringvisor.hw.system`): ``helper(bb, ins)`` ends the block and the helper
executes the instruction on the CPU's architectural state.
"""

from __future__ import annotations

import iced_x86 as ix

from . import flags as F
from .segments import MODE_ATTRS
from .translate import (ALL_FLAGS, FLAG_BITS, GPR, MASK, SIGN, SREG, BlockBuilder, Unsupported,
                        imm, is_atom, registrar)

M = ix.Mnemonic
OK = ix.OpKind
R = ix.Register
M32 = 0xFFFFFFFF

EMITTERS: dict[int, callable] = {}


sem = registrar(EMITTERS)


def is_mem(ins: ix.Instruction, i: int) -> bool:
    return ins.op_kind(i) == OK.MEMORY


def is_gpr(ins: ix.Instruction, i: int) -> bool:
    return ins.op_kind(i) == OK.REGISTER and ins.op_register(i) in GPR


def opsize(bb: BlockBuilder, ins: ix.Instruction) -> int:
    return bb.op_size(ins, 0)


def helper(bb: BlockBuilder, ins: ix.Instruction) -> None:
    """End the block; the CPU's helper executes this instruction."""
    bb.ends = True
    bb.helper_const = bb.const(ins)


def flags_bits(bb: BlockBuilder) -> str:
    """A local holding the current arithmetic flags as EFLAGS bits."""
    kinds = {bb.fsrc[f][0] for f in ALL_FLAGS}
    if kinds == {"entry"}:
        return bb.entry_flags()
    bits = " | ".join(f"({FLAG_BITS[f]:#x} if {bb.flag(f)} else 0)" for f in ALL_FLAGS)
    return bb.let(bits, "fb")


def set_flags_bits(bb: BlockBuilder, var: str, which=ALL_FLAGS) -> None:
    for f in which:
        bb.fsrc[f] = ("var", f"(({var} >> {FLAG_BITS[f].bit_length() - 1}) & 1)")


def stable(bb: BlockBuilder, expr: str) -> str:
    """A name whose value cannot change later in the block (for flag groups).

    Every local of a block is assigned once (registers are renamed on each write,
    see ``BlockBuilder.cur``), except the names a REP loop reassigns."""
    if is_atom(expr) and expr not in bb.pinned:
        return expr
    return bb.let(expr)


# --- data movement --------------------------------------------------------------
@sem(M.MOV)
def mov(bb: BlockBuilder, ins: ix.Instruction) -> None:
    k0, k1 = ins.op0_kind, ins.op1_kind
    if k0 == OK.REGISTER and ins.op0_register not in GPR or \
            k1 == OK.REGISTER and ins.op1_register not in GPR:
        if k1 == OK.REGISTER and ins.op1_register in SREG:
            s = SREG[ins.op1_register]
            v = bb.let(f"SEGS[{s}].selector")
            if k0 == OK.MEMORY:
                lin = bb.mem_linear(ins, 2, True)
                bb.store(lin, 2, v)
            else:
                i, size, _ = GPR[ins.op0_register]
                if size == 4:
                    bb.set_reg32(i, v)
                else:
                    bb.write_reg(ins.op0_register, v)
            return
        if k0 == OK.REGISTER and SREG.get(ins.op0_register) in DATA_SREGS:
            return seg_load(bb, ins, SREG[ins.op0_register], stable(bb, bb.read_op(ins, 1, 2)))
        return helper(bb, ins)   # mov to CS/SS, a control or a debug register
    size = opsize(bb, ins)
    if k0 == OK.MEMORY:
        v = bb.read_op(ins, 1, size)
        lin = bb.mem_linear(ins, size, True, store=True)
        bb.store(lin, size, v)
    else:
        v = bb.read_op(ins, 1, size)
        bb.write_reg(ins.op0_register, v)


DATA_SREGS = (0, 3, 4, 5)     # ES, DS, FS, GS: loads without an interrupt shadow


def seg_load(bb: BlockBuilder, ins: ix.Instruction, sreg: int, sel: str, walks: str = "") -> None:
    """Load a data segment register inside the block (all the checks of
    ``Segmentation.load``, which may fault); the block ends there only if the new
    segment changes the CPU mode its code was translated for.

    Right after another data segment load (a kernel's ``mov ds, ax; mov es, ax`` and
    ``pop gs; pop fs``), ``Segmentation.load_again`` copies that register if the
    selector is the same: nothing has written memory since its descriptor was read
    (``walks``: the page walks counted before a POP's stack read, which could set an
    accessed bit), so a second read would find the same bytes and pass the same checks."""
    prev = bb.seg_loaded
    if prev is not None and prev[0] == bb.index - 1 and not bb.mode.real and not bb.mode.vm86:
        # ``load_again``'s copy in line (its two Python calls cost more than the copy)
        new, old, changed = bb.tmp("k"), bb.tmp("k"), bb.tmp("k")
        same = f"{new}.selector == ({sel}) & 0xFFFF" + (
            f" and {walks} == C.mmu.stats_walks and C.mmu.ept is None" if walks else "")
        bb.emit(f"{new} = SEGS[{prev[1]}]")
        bb.emit(f"if {same}:")
        bb.emit(f"    {old} = SEGS[{sreg}]; SEGS[{sreg}] = {new}")
        bb.emit(f"    {changed} = {old} is not {new} and ({old}.base != {new}.base or "
                f"{old}.limit != {new}.limit or ({old}.attr ^ {new}.attr) & {MODE_ATTRS:#x})")
        bb.emit(f"    if {changed}: C.mode_changed()")
        bb.emit(f"else: {changed} = SEGAGAIN({sreg}, {sel}, {prev[1]}{', ' + walks if walks else ''})")
        call = changed
    else:
        call = f"SEGLOAD({sreg}, {sel})"
    bb.side_exit(call, ins.next_ip, loop=False)
    bb.seg_loaded = (bb.index, sreg)


def walks_before(bb: BlockBuilder) -> str:
    """The MMU's walk count, read before a POP's stack read if a data segment load came
    just before (``seg_load``); "" otherwise."""
    prev = bb.seg_loaded
    if prev is not None and prev[0] == bb.index - 1:
        return bb.let("C.mmu.stats_walks", "w")
    return ""


@sem(M.MOVZX, M.MOVSX)
def movx(bb: BlockBuilder, ins: ix.Instruction) -> None:
    dsize = opsize(bb, ins)
    ssize = bb.op_size(ins, 1)
    v = bb.read_op(ins, 1, ssize)
    if ins.mnemonic == M.MOVSX:
        s = SIGN[ssize]
        v = f"((({v}) ^ {s:#x}) - {s:#x}) & {MASK[dsize]:#x}"
    bb.write_reg(ins.op0_register, v if v.isidentifier() else f"({v})")


@sem(M.LEA)
def lea(bb: BlockBuilder, ins: ix.Instruction) -> None:
    size = opsize(bb, ins)
    e = bb.ea(ins)
    if size != 4:
        e = f"({e} & 0xFFFF)"
    bb.write_reg(ins.op0_register, e)


@sem(M.XCHG)
def xchg(bb: BlockBuilder, ins: ix.Instruction) -> None:
    size = opsize(bb, ins)
    if is_mem(ins, 0) or is_mem(ins, 1):
        mi, ri = (0, 1) if is_mem(ins, 0) else (1, 0)
        lin = bb.mem_linear(ins, size, True)
        old, d = bb.rmw_begin(lin, size)
        rv = stable(bb, bb.read_reg(ins.op_register(ri)))
        bb.rmw_end(lin, size, d, rv)
        bb.write_reg(ins.op_register(ri), old)
    else:
        a = stable(bb, bb.read_reg(ins.op0_register))
        b = stable(bb, bb.read_reg(ins.op1_register))
        bb.write_reg(ins.op0_register, b)
        bb.write_reg(ins.op1_register, a)


@sem(M.NOP, M.PAUSE)
def nop(bb: BlockBuilder, ins: ix.Instruction) -> None:
    pass


@sem(M.BSWAP)
def bswap(bb: BlockBuilder, ins: ix.Instruction) -> None:
    i, size, _ = GPR[ins.op0_register]
    v = bb.reg(i)
    if size != 4:   # undefined for 16-bit operands; real cores clear the word
        bb.write_reg(ins.op0_register, "0")
        return
    bb.set_reg32(i, f"int.from_bytes({v}.to_bytes(4, 'little'), 'big')")


@sem(M.CBW, M.CWDE)
def cbw(bb: BlockBuilder, ins: ix.Instruction) -> None:
    a = bb.reg(0)
    if ins.mnemonic == M.CBW:
        bb.set_reg32(0, f"({a} & 0xFFFF0000) | ((({a} & 0xFF) ^ 0x80) - 0x80) & 0xFFFF")
    else:
        bb.set_reg32(0, f"((({a} & 0xFFFF) ^ 0x8000) - 0x8000) & 0xFFFFFFFF")


@sem(M.CWD, M.CDQ)
def cwd(bb: BlockBuilder, ins: ix.Instruction) -> None:
    a, d = bb.reg(0), bb.reg(2)
    if ins.mnemonic == M.CWD:
        bb.set_reg32(2, f"({d} & 0xFFFF0000) | (0xFFFF if {a} & 0x8000 else 0)")
    else:
        bb.set_reg32(2, f"0xFFFFFFFF if {a} & 0x80000000 else 0")


@sem(M.XLATB)
def xlat(bb: BlockBuilder, ins: ix.Instruction) -> None:
    b, a = bb.reg(3), bb.reg(0)
    off = f"({b} + ({a} & 0xFF)) & 0xFFFFFFFF" if ins.memory_base == R.EBX else \
          f"(({b} & 0xFFFF) + ({a} & 0xFF)) & 0xFFFF"
    lin = bb.linear(SREG[ins.memory_segment], bb.let(off, "a"), 1, False)
    v = bb.load(lin, 1)
    bb.write_reg(R.AL, v)


@sem(M.CMOVO, M.CMOVNO, M.CMOVB, M.CMOVAE, M.CMOVE, M.CMOVNE, M.CMOVBE, M.CMOVA,
     M.CMOVS, M.CMOVNS, M.CMOVP, M.CMOVNP, M.CMOVL, M.CMOVGE, M.CMOVLE, M.CMOVG)
def cmov(bb: BlockBuilder, ins: ix.Instruction) -> None:
    size = opsize(bb, ins)
    src = bb.read_op(ins, 1, size)   # memory is read whatever the condition
    src = stable(bb, src)
    cond_ = bb.cond(ins.condition_code - 1)
    dst = bb.read_reg(ins.op0_register)
    bb.write_reg(ins.op0_register, f"({src} if {cond_} else {dst})")


@sem(M.SETO, M.SETNO, M.SETB, M.SETAE, M.SETE, M.SETNE, M.SETBE, M.SETA,
     M.SETS, M.SETNS, M.SETP, M.SETNP, M.SETL, M.SETGE, M.SETLE, M.SETG)
def setcc(bb: BlockBuilder, ins: ix.Instruction) -> None:
    v = bb.let(f"1 if {bb.cond(ins.condition_code - 1)} else 0")
    if is_mem(ins, 0):
        bb.store(bb.mem_linear(ins, 1, True), 1, v)
    else:
        bb.write_reg(ins.op0_register, v)


@sem(M.LAHF)
def lahf(bb: BlockBuilder, ins: ix.Instruction) -> None:
    fb = flags_bits(bb)
    bb.write_reg(R.AH, f"(({fb} & 0xD5) | 2)")


@sem(M.SAHF)
def sahf(bb: BlockBuilder, ins: ix.Instruction) -> None:
    v = bb.let(f"{bb.reg(0)} >> 8 & 0xD5")
    set_flags_bits(bb, v, ("cf", "pf", "af", "zf", "sf"))


@sem(M.SALC)
def salc(bb: BlockBuilder, ins: ix.Instruction) -> None:
    """D6, undocumented (the SDM's opcode map leaves it blank): AL = FFh if CF else 0,
    flags unchanged -- as Intel's processors, QEMU and unicorn execute it."""
    bb.write_reg(R.AL, f"(0xFF if {bb.flag('cf')} else 0)")


# --- stack ---------------------------------------------------------------------
def stack_size(ins: ix.Instruction) -> int:
    return abs(ins.stack_pointer_increment) or 4


@sem(M.PUSH)
def push(bb: BlockBuilder, ins: ix.Instruction) -> None:
    size = stack_size(ins)
    k = ins.op0_kind
    if k == OK.REGISTER and ins.op0_register in SREG:
        v = bb.let(f"SEGS[{SREG[ins.op0_register]}].selector")
    elif k == OK.REGISTER:
        v = stable(bb, bb.read_reg(ins.op0_register))
    elif k == OK.MEMORY:
        v = bb.read_op(ins, 0, size)
    else:
        v = f"{ins.immediate(0) & MASK[size]:#x}"
    bb.stack_push([v], size)


@sem(M.POP)
def pop(bb: BlockBuilder, ins: ix.Instruction) -> None:
    size = stack_size(ins)
    k = ins.op0_kind
    if k == OK.REGISTER and ins.op0_register in SREG:
        sreg = SREG[ins.op0_register]
        if sreg not in DATA_SREGS:
            return helper(bb, ins)          # POP SS opens an interrupt shadow
        walks = walks_before(bb)
        (v,) = bb.stack_pop(1, size)
        bb.pop_commit()                     # the fault path restores ESP from its snapshot
        return seg_load(bb, ins, sreg, v, walks)
    (v,) = bb.stack_pop(1, size)
    if k == OK.REGISTER:
        bb.pop_commit()
        bb.write_reg(ins.op0_register, v)   # pop esp: esp gets the popped value
    else:
        # the effective address uses ESP as it is *after* the pop
        n, m = bb._pending_sp
        new_sp = bb.let(f"({bb.reg(4)} + {n}) & {m:#x}" if m == M32 else
                        f"({bb.reg(4)} & 0xFFFF0000) | (({bb.reg(4)} + {n}) & 0xFFFF)", "s")
        e = bb.ea(ins, esp=new_sp)
        lin = bb.linear(SREG[ins.memory_segment], e, size, True)
        bb.store(lin, size, v)
        bb.set_reg32(4, new_sp)


@sem(M.PUSHAD, M.PUSHA)
def pusha(bb: BlockBuilder, ins: ix.Instruction) -> None:
    size = 4 if ins.mnemonic == M.PUSHAD else 2
    vals = [stable(bb, f"{bb.reg(i)} & {MASK[size]:#x}" if size == 2 else bb.reg(i)) for i in range(8)]
    bb.stack_push(vals, size)


@sem(M.POPAD, M.POPA)
def popa(bb: BlockBuilder, ins: ix.Instruction) -> None:
    size = 4 if ins.mnemonic == M.POPAD else 2
    vals = bb.stack_pop(8, size)
    bb.pop_commit()
    for i in (0, 1, 2, 3, 5, 6, 7):   # the saved ESP is skipped
        v = vals[7 - i]
        if size == 4:
            bb.set_reg32(i, v)
        else:
            bb.set_reg32(i, f"({bb.reg(i)} & 0xFFFF0000) | {v}")


@sem(M.PUSHFD, M.PUSHF)
def pushf(bb: BlockBuilder, ins: ix.Instruction) -> None:
    if bb.mode.vm86:
        return helper(bb, ins)              # IOPL-sensitive there (system.h_pushf)
    size = 4 if ins.mnemonic == M.PUSHFD else 2
    fb = flags_bits(bb)
    # the pushed image has RF and VM clear (SDM, PUSHF)
    v = bb.let(f"(S.eflags & 0x3C7700 | {fb} | 2) & {MASK[size]:#x}")
    bb.stack_push([v], size)


@sem(M.LEAVE)
def leave(bb: BlockBuilder, ins: ix.Instruction) -> None:
    # iced gives LEAVE no fixed stack increment: the operand size is in the code
    size = 2 if ins.code == ix.Code.LEAVEW else 4
    bp = bb.reg(5)
    if bb.mode.ss32:
        lin = bb.linear(2, bp, size, False)
        v = bb.load(lin, size)
        bb.set_reg32(4, f"({bp} + {size}) & 0xFFFFFFFF")
    else:
        a = bb.let(f"{bp} & 0xFFFF", "s")
        lin = bb.linear(2, a, size, False)
        v = bb.load(lin, size)
        bb.set_reg32(4, f"({bb.reg(4)} & 0xFFFF0000) | (({a} + {size}) & 0xFFFF)")
    if size == 4:
        bb.set_reg32(5, v)
    else:
        bb.set_reg32(5, f"({bp} & 0xFFFF0000) | {v}")


# --- arithmetic --------------------------------------------------------------
ALU_KIND = {M.ADD: F.ADD, M.SUB: F.SUB, M.CMP: F.SUB, M.AND: F.LOGIC, M.OR: F.LOGIC,
            M.XOR: F.LOGIC, M.TEST: F.LOGIC, M.ADC: F.ADD, M.SBB: F.SUB}


@sem(M.ADD, M.SUB, M.CMP, M.AND, M.OR, M.XOR, M.TEST, M.ADC, M.SBB)
def alu(bb: BlockBuilder, ins: ix.Instruction) -> None:
    m = ins.mnemonic
    size = opsize(bb, ins)
    mask = MASK[size]
    writes = m not in (M.CMP, M.TEST)
    # zeroing idiom: xor/sub reg, reg
    if m in (M.XOR, M.SUB) and is_gpr(ins, 0) and is_gpr(ins, 1) and \
            ins.op0_register == ins.op1_register:
        bb.write_reg(ins.op0_register, "0")
        bb.set_group(F.LOGIC if m == M.XOR else F.SUB, size, "0", "0", "0")
        return
    kind = ALU_KIND[m]
    # the logical group's flags depend on the result alone: its operands need no names
    keep = (lambda e: e) if kind == F.LOGIC else (lambda e: stable(bb, e))
    b = keep(bb.read_op(ins, 1, size))
    d = lin = None
    if is_mem(ins, 0):
        lin = bb.mem_linear(ins, size, writes)
        if writes:
            a, d = bb.rmw_begin(lin, size)
        else:
            a = bb.load(lin, size)
    else:
        a = keep(bb.read_reg(ins.op0_register))
    if m in (M.ADC, M.SBB):
        c = bb.flag01("cf")
        op = "+" if m == M.ADC else "-"
        wide = bb.let(f"{a} {op} {b} {op} {c}", "w")
        res = bb.let(f"{wide} & {mask:#x}", "v")
        cfv = f"({wide} >> {size * 8} & 1)" if m == M.ADC else f"(1 if {wide} < 0 else 0)"
        bb.set_group(kind, size, res, a, b, ("pf", "af", "zf", "sf", "of"))
        bb.set_flag_var("cf", cfv)
    else:
        expr = {M.ADD: f"({a} + {b}) & {mask:#x}", M.SUB: f"({a} - {b}) & {mask:#x}",
                M.CMP: f"({a} - {b}) & {mask:#x}", M.AND: f"{a} & {b}", M.TEST: f"{a} & {b}",
                M.OR: f"{a} | {b}", M.XOR: f"{a} ^ {b}"}[m]
        if writes:
            res = bb.let(expr, "v")
        else:
            # CMP and TEST keep their result as an expression over names that hold
            # still (their operands are stable): it is computed only where the flags
            # are read or stored, and a comparison that the next flag writer
            # overwrites costs nothing (JE/JNE after CMP compare the operands)
            res = bb.lazy_result(a if m == M.TEST and a == b else expr)
        if kind == F.LOGIC:
            a = b = res
        bb.set_group(kind, size, res, a, b)
    if writes:
        if d is not None:
            bb.rmw_end(lin, size, d, res)
        else:
            bb.write_reg(ins.op0_register, res)


@sem(M.INC, M.DEC, M.NEG, M.NOT)
def unary(bb: BlockBuilder, ins: ix.Instruction) -> None:
    m = ins.mnemonic
    size = opsize(bb, ins)
    mask = MASK[size]
    d = lin = None
    if is_mem(ins, 0):
        lin = bb.mem_linear(ins, size, True)
        a, d = bb.rmw_begin(lin, size)
    else:
        a = stable(bb, bb.read_reg(ins.op0_register))
    if m == M.INC:
        res = bb.let(f"({a} + 1) & {mask:#x}", "v")
        bb.set_group(F.INC, size, res, a, "1", ("pf", "af", "zf", "sf", "of"))
    elif m == M.DEC:
        res = bb.let(f"({a} - 1) & {mask:#x}", "v")
        bb.set_group(F.DEC, size, res, a, "1", ("pf", "af", "zf", "sf", "of"))
    elif m == M.NEG:
        res = bb.let(f"-{a} & {mask:#x}", "v")
        bb.set_group(F.NEG, size, res, a, "0")
    else:
        res = bb.let(f"{a} ^ {mask:#x}", "v")
    if d is not None:
        bb.rmw_end(lin, size, d, res)
    else:
        bb.write_reg(ins.op0_register, res)


@sem(M.MUL, M.IMUL)
def mul(bb: BlockBuilder, ins: ix.Instruction) -> None:
    size = opsize(bb, ins)
    fn = "MUL" if ins.mnemonic == M.MUL else "IMUL"
    s = SIGN[size]
    if ins.op_count == 1:
        # inline, with the flags of alu.mul and alu.imul kept lazily: SF, ZF and PF of
        # the low half, AF clear (a logical group), CF = OF = "the high half is
        # needed" — computed only if something reads them
        b = stable(bb, bb.read_op(ins, 0, size))
        a = stable(bb, bb.read_reg({1: R.AL, 2: R.AX, 4: R.EAX}[size]))
        bits, mask = size * 8, MASK[size]
        if fn == "MUL":
            p = bb.let(f"{a} * {b}", "w")
        else:
            p = bb.let(f"((({a}) ^ {s:#x}) - {s:#x}) * ((({b}) ^ {s:#x}) - {s:#x})", "w")
        lo = bb.let(f"{p} & {mask:#x}", "v")
        hi = bb.let(f"({p} >> {bits}) & {mask:#x}", "v")
        if size == 1:
            bb.write_reg(R.AX, f"({hi} << 8 | {lo})")
        else:
            bb.write_reg({2: R.AX, 4: R.EAX}[size], lo)
            bb.write_reg({2: R.DX, 4: R.EDX}[size], hi)
        ov = (f"(1 if {hi} else 0)" if fn == "MUL" else
              f"(1 if {p} != ((({lo}) ^ {s:#x}) - {s:#x}) else 0)")
        bb.set_group(F.LOGIC, size, lo, lo, lo, ("pf", "zf", "sf", "af"))
        bb.set_flag_var("cf", ov)
        bb.set_flag_var("of", ov)
        return
    # two- and three-operand IMUL: the destination is a register
    if ins.op_count == 2:
        a = stable(bb, bb.read_reg(ins.op0_register))
        b = stable(bb, bb.read_op(ins, 1, size))
    else:
        a = stable(bb, bb.read_op(ins, 1, size))
        b = f"{imm(ins, 2, size):#x}"
    # the low half of a product is the same signed or unsigned (two's complement)
    res = bb.let(f"({a} * {b}) & {MASK[size]:#x}", "v")
    # CF = OF = "the signed product does not fit" (SDM Vol. 2A IMUL): the signed
    # product is computed only if something reads them
    ov = (f"(1 if ((({a}) ^ {s:#x}) - {s:#x}) * ((({b}) ^ {s:#x}) - {s:#x}) != "
          f"((({res}) ^ {s:#x}) - {s:#x}) else 0)")
    bb.write_reg(ins.op0_register, res)
    bb.set_group(F.LOGIC, size, res, res, res, ("pf", "zf", "sf", "af"))
    bb.set_flag_var("cf", ov)
    bb.set_flag_var("of", ov)


@sem(M.DIV, M.IDIV)
def div(bb: BlockBuilder, ins: ix.Instruction) -> None:
    size = opsize(bb, ins)
    fn = "DIV" if ins.mnemonic == M.DIV else "IDIV"
    b = stable(bb, bb.read_op(ins, 0, size))
    if size == 1:
        ax = bb.let(f"{bb.reg(0)} & 0xFFFF")
        lo, hi = f"({ax} & 0xFF)", f"({ax} >> 8)"
    else:
        lo = stable(bb, bb.read_reg({2: R.AX, 4: R.EAX}[size]))
        hi = stable(bb, bb.read_reg({2: R.DX, 4: R.EDX}[size]))
    q, r = bb.tmp("v"), bb.tmp("v")
    bb.emit(f"{q}, {r} = {fn}({lo}, {hi}, {b}, {size})")
    if size == 1:
        bb.write_reg(R.AX, f"({r} << 8 | {q})")
    else:
        bb.write_reg({2: R.AX, 4: R.EAX}[size], q)
        bb.write_reg({2: R.DX, 4: R.EDX}[size], r)


SHIFT_NAMES = {M.SHL: "shl", M.SAL: "shl", M.SHR: "shr", M.SAR: "sar", M.ROL: "rol",
               M.ROR: "ror", M.RCL: "rcl", M.RCR: "rcr"}


@sem(M.SHL, M.SAL, M.SHR, M.SAR, M.ROL, M.ROR, M.RCL, M.RCR)
def shift(bb: BlockBuilder, ins: ix.Instruction) -> None:
    name = SHIFT_NAMES[ins.mnemonic]
    size = opsize(bb, ins)
    mask, bits = MASK[size], size * 8
    const = ins.op1_kind != OK.REGISTER
    count = (ins.immediate(1) & 0x1F) if const else None
    d = lin = None
    if const and count == 0:
        if is_mem(ins, 0):   # still a memory access for fault purposes
            bb.load(bb.mem_linear(ins, size, False), size)
        return
    if is_mem(ins, 0):
        lin = bb.mem_linear(ins, size, True)
        a, d = bb.rmw_begin(lin, size)
    else:
        a = stable(bb, bb.read_reg(ins.op0_register))
    if const and name in ("shl", "shr", "sar") and count < bits:
        c = count
        if name == "shl":
            res = bb.let(f"({a} << {c}) & {mask:#x}", "v")
            cf = f"(({a} >> {bits - c}) & 1)"
            of = f"((({res} >> {bits - 1}) ^ {cf}) & 1)"
        elif name == "shr":
            res = bb.let(f"{a} >> {c}", "v")
            cf = f"(({a} >> {c - 1}) & 1)"
            of = f"({a} >> {bits - 1})"
        else:
            s = SIGN[size]
            sa = bb.let(f"({a} ^ {s:#x}) - {s:#x}", "w")
            res = bb.let(f"({sa} >> {c}) & {mask:#x}", "v")
            cf = f"(({sa} >> {c - 1}) & 1)"
            of = "0"
        bb.set_group(F.LOGIC, size, res, res, res, ("pf", "zf", "sf", "af"))
        bb.set_flag_var("cf", cf)
        bb.set_flag_var("of", of)
    else:
        cnt = f"{count}" if const else f"({bb.reg(1)} & 0x1F)"
        fb = flags_bits(bb)
        res, fl = bb.tmp("v"), bb.tmp("fl")
        bb.emit(f"{res}, {fl} = SHIFT('{name}', {a}, {cnt}, {size}, {fb})")
        set_flags_bits(bb, fl)
    if d is not None:
        bb.rmw_end(lin, size, d, res)
    else:
        bb.write_reg(ins.op0_register, res)


@sem(M.SHLD, M.SHRD)
def shxd(bb: BlockBuilder, ins: ix.Instruction) -> None:
    size = opsize(bb, ins)
    fn = "SHLD" if ins.mnemonic == M.SHLD else "SHRD"
    src = stable(bb, bb.read_reg(ins.op1_register))
    cnt = f"{ins.immediate(2) & 0x1F}" if ins.op2_kind != OK.REGISTER else f"({bb.reg(1)} & 0x1F)"
    d = lin = None
    if is_mem(ins, 0):
        lin = bb.mem_linear(ins, size, True)
        a, d = bb.rmw_begin(lin, size)
    else:
        a = stable(bb, bb.read_reg(ins.op0_register))
    fb = flags_bits(bb)
    res, fl = bb.tmp("v"), bb.tmp("fl")
    bb.emit(f"{res}, {fl} = {fn}({a}, {src}, {cnt}, {size}, {fb})")
    set_flags_bits(bb, fl)
    if d is not None:
        bb.rmw_end(lin, size, d, res)
    else:
        bb.write_reg(ins.op0_register, res)


@sem(M.BT, M.BTS, M.BTR, M.BTC)
def bt(bb: BlockBuilder, ins: ix.Instruction) -> None:
    m = ins.mnemonic
    size = opsize(bb, ins)
    bits = size * 8
    writes = m != M.BT
    if ins.op1_kind == OK.REGISTER:
        off = stable(bb, bb.read_reg(ins.op1_register))
    else:
        off = None
        bitno = ins.immediate(1) & (bits - 1)
    d = lin = None
    if is_mem(ins, 0):
        if off is not None:
            # a register bit offset addresses a bit string: signed, beyond the operand
            s = SIGN[size]
            so = bb.let(f"({off} ^ {s:#x}) - {s:#x}")
            e = f"({bb.ea(ins)} + ({so} >> {bits.bit_length() - 1}) * {size}) & 0xFFFFFFFF"
            bit = bb.let(f"{so} & {bits - 1}")
            lin = bb.linear(SREG[ins.memory_segment], bb.let(e, "a"), size, writes)
        else:
            lin = bb.mem_linear(ins, size, writes)
            bit = f"{bitno}"
        if writes:
            a, d = bb.rmw_begin(lin, size)
        else:
            a = bb.load(lin, size)
    else:
        a = stable(bb, bb.read_reg(ins.op0_register))
        bit = f"({off} & {bits - 1})" if off is not None else f"{bitno}"
    bb.set_flag_var("cf", f"(({a} >> {bit}) & 1)")
    if not writes:
        return
    if m == M.BTS:
        res = bb.let(f"{a} | (1 << {bit})", "v")
    elif m == M.BTR:
        res = bb.let(f"{a} & ~(1 << {bit}) & {MASK[size]:#x}", "v")
    else:
        res = bb.let(f"{a} ^ (1 << {bit})", "v")
    if d is not None:
        bb.rmw_end(lin, size, d, res)
    else:
        bb.write_reg(ins.op0_register, res)


@sem(M.BSF, M.BSR)
def bsf(bb: BlockBuilder, ins: ix.Instruction) -> None:
    size = opsize(bb, ins)
    fn = "BSF" if ins.mnemonic == M.BSF else "BSR"
    src = stable(bb, bb.read_op(ins, 1, size))
    dst = stable(bb, bb.read_reg(ins.op0_register))
    fb = flags_bits(bb)
    res, fl = bb.tmp("v"), bb.tmp("fl")
    bb.emit(f"{res}, {fl} = {fn}({src}, {dst}, {size}, {fb})")
    set_flags_bits(bb, fl)
    bb.write_reg(ins.op0_register, res)


@sem(M.XADD)
def xadd(bb: BlockBuilder, ins: ix.Instruction) -> None:
    size = opsize(bb, ins)
    b = stable(bb, bb.read_reg(ins.op1_register))
    d = lin = None
    if is_mem(ins, 0):
        lin = bb.mem_linear(ins, size, True)
        a, d = bb.rmw_begin(lin, size)
    else:
        a = stable(bb, bb.read_reg(ins.op0_register))
    res = bb.let(f"({a} + {b}) & {MASK[size]:#x}", "v")
    bb.set_group(F.ADD, size, res, a, b)
    if d is not None:
        bb.rmw_end(lin, size, d, res)
        bb.write_reg(ins.op1_register, a)
    else:
        bb.write_reg(ins.op1_register, a)
        bb.write_reg(ins.op0_register, res)


@sem(M.CMPXCHG)
def cmpxchg(bb: BlockBuilder, ins: ix.Instruction) -> None:
    size = opsize(bb, ins)
    acc = {1: R.AL, 2: R.AX, 4: R.EAX}[size]
    src = stable(bb, bb.read_reg(ins.op1_register))
    a = stable(bb, bb.read_reg(acc))
    d = lin = None
    if is_mem(ins, 0):
        lin = bb.mem_linear(ins, size, True)
        dst, d = bb.rmw_begin(lin, size)
    else:
        dst = stable(bb, bb.read_reg(ins.op0_register))
    res = bb.let(f"({a} - {dst}) & {MASK[size]:#x}", "v")
    bb.set_group(F.SUB, size, res, a, dst)
    new = bb.let(f"{src} if {a} == {dst} else {dst}", "v")
    # The accumulator gets DEST on a mismatch (and keeps its value, equal to DEST, on a
    # match), so it is simply DEST.
    if d is not None:
        # the destination is written in both cases (with itself on failure), as the SDM
        # says; the store comes first, it may fault
        bb.rmw_end(lin, size, d, new)
        bb.write_reg(acc, dst)
    else:
        # a register destination is written last: when it is the accumulator itself
        # (``cmpxchg al, cl`` with AL equal to itself) it must end up holding SRC
        bb.write_reg(acc, dst)
        bb.write_reg(ins.op0_register, new)


@sem(M.CLC, M.STC, M.CMC)
def clc(bb: BlockBuilder, ins: ix.Instruction) -> None:
    if ins.mnemonic == M.CLC:
        bb.set_flag_var("cf", "0")
    elif ins.mnemonic == M.STC:
        bb.set_flag_var("cf", "1")
    else:
        bb.set_flag_var("cf", bb.let(f"0 if {bb.flag('cf')} else 1", "f"))


@sem(M.DAA, M.DAS)
def daa(bb: BlockBuilder, ins: ix.Instruction) -> None:
    fb = flags_bits(bb)
    res, fl = bb.tmp("v"), bb.tmp("fl")
    bb.emit(f"{res}, {fl} = {'DAA' if ins.mnemonic == M.DAA else 'DAS'}({bb.reg(0)} & 0xFF, {fb})")
    bb.write_reg(R.AL, res)
    set_flags_bits(bb, fl)


@sem(M.AAA, M.AAS)
def aaa(bb: BlockBuilder, ins: ix.Instruction) -> None:
    fb = flags_bits(bb)
    res, fl = bb.tmp("v"), bb.tmp("fl")
    bb.emit(f"{res}, {fl} = AAA({bb.reg(0)} & 0xFFFF, {fb}, {ins.mnemonic == M.AAS})")
    bb.write_reg(R.AX, res)
    set_flags_bits(bb, fl)


@sem(M.AAM, M.AAD)
def aam(bb: BlockBuilder, ins: ix.Instruction) -> None:
    fb = flags_bits(bb)
    res, fl = bb.tmp("v"), bb.tmp("fl")
    base = ins.immediate8
    if ins.mnemonic == M.AAM:
        bb.emit(f"{res}, {fl} = AAM({bb.reg(0)} & 0xFF, {base}, {fb})")
        bb.write_reg(R.AX, res)
    else:
        bb.emit(f"{res}, {fl} = AAD({bb.reg(0)} & 0xFFFF, {base}, {fb})")
        bb.write_reg(R.AX, res)
    set_flags_bits(bb, fl)


# --- control transfer -----------------------------------------------------------
def end(bb: BlockBuilder, nxt: str, *targets: int) -> None:
    bb.ends = True
    bb.next_expr = nxt
    bb.targets.update(targets)


@sem(M.JMP)
def jmp(bb: BlockBuilder, ins: ix.Instruction) -> None:
    k = ins.op0_kind
    if k in (OK.NEAR_BRANCH16, OK.NEAR_BRANCH32):
        return end(bb, f"{ins.near_branch_target:#x}", ins.near_branch_target)
    if k in (OK.FAR_BRANCH16, OK.FAR_BRANCH32) or ins.is_jmp_far_indirect:
        return helper(bb, ins)
    size = bb.op_size(ins, 0)
    t = stable(bb, bb.read_op(ins, 0, size))
    end(bb, t)
    bb.indirect = t


@sem(M.JO, M.JNO, M.JB, M.JAE, M.JE, M.JNE, M.JBE, M.JA, M.JS, M.JNS, M.JP, M.JNP,
     M.JL, M.JGE, M.JLE, M.JG)
def jcc(bb: BlockBuilder, ins: ix.Instruction) -> None:
    c = bb.cond(ins.condition_code - 1)
    if bb.side_exits and ins.near_branch_target > ins.ip:
        # a forward branch: taken is a side exit, the block goes on along the fall-through
        return bb.side_exit(c, ins.near_branch_target)
    t = ins.near_branch_target
    if t != bb.start and bb.back_ok is not None and bb.back_ok(t):
        # a backward branch (a loop's, mostly taken) to code this block has not
        # translated: not taken is a side exit, the block goes on at the target
        bb.side_exit(f"not {c}", ins.next_ip)
        bb.follow = t
        return
    end(bb, bb.let(f"{ins.near_branch_target:#x} if {c} else {ins.next_ip:#x}", "j"),
        ins.near_branch_target, ins.next_ip)


@sem(M.JCXZ, M.JECXZ)
def jecxz(bb: BlockBuilder, ins: ix.Instruction) -> None:
    c = bb.reg(1) if ins.mnemonic == M.JECXZ else f"({bb.reg(1)} & 0xFFFF)"
    end(bb, bb.let(f"{ins.near_branch_target:#x} if {c} == 0 else {ins.next_ip:#x}", "j"),
        ins.near_branch_target, ins.next_ip)


LOOP_CX_CODES = frozenset(getattr(ix.Code, f"{m}_REL8_{o}_CX") for m in ("LOOP", "LOOPE", "LOOPNE")
                          for o in (16, 32))


@sem(M.LOOP, M.LOOPE, M.LOOPNE)
def loop(bb: BlockBuilder, ins: ix.Instruction) -> None:
    c = bb.reg(1)
    # the address size decides whether ECX or CX counts (CX is implicit, not an operand)
    a32 = ins.code not in LOOP_CX_CODES
    if a32:
        nc = bb.let(f"({c} - 1) & 0xFFFFFFFF")
    else:
        nc = bb.let(f"({c} & 0xFFFF0000) | (({c} - 1) & 0xFFFF)")
    low = nc if a32 else f"({nc} & 0xFFFF)"
    cond = f"{low} != 0"
    if ins.mnemonic == M.LOOPE:
        cond += f" and {bb.flag('zf')}"
    elif ins.mnemonic == M.LOOPNE:
        cond += f" and not {bb.flag('zf')}"
    j = bb.let(f"{ins.near_branch_target:#x} if {cond} else {ins.next_ip:#x}", "j")
    bb.set_reg32(1, nc)
    end(bb, j, ins.near_branch_target, ins.next_ip)


@sem(M.CALL)
def call(bb: BlockBuilder, ins: ix.Instruction) -> None:
    k = ins.op0_kind
    if k in (OK.FAR_BRANCH16, OK.FAR_BRANCH32) or ins.is_call_far_indirect:
        return helper(bb, ins)
    size = stack_size(ins)
    if k in (OK.NEAR_BRANCH16, OK.NEAR_BRANCH32):
        t = f"{ins.near_branch_target:#x}"
    else:
        t = stable(bb, bb.read_op(ins, 0, bb.op_size(ins, 0)))
        bb.indirect = t
    bb.stack_push([f"{ins.next_ip & MASK[size]:#x}"], size)
    end(bb, t)


@sem(M.RET)
def ret(bb: BlockBuilder, ins: ix.Instruction) -> None:
    size = 2 if ins.code in (ix.Code.RETNW, ix.Code.RETNW_IMM16) else 4
    extra = ins.immediate16 if ins.op_count else 0
    (v,) = bb.stack_pop(1, size, extra)
    bb.pop_commit()
    end(bb, v)
    bb.indirect = v


@sem(M.CLD, M.STD)
def cld(bb: BlockBuilder, ins: ix.Instruction) -> None:
    """DF is part of the mode a block is translated for: setting it to the value it
    has is nothing at all (a kernel's CLD on every entry); changing it ends the block."""
    if (ins.mnemonic == M.STD) != bb.mode.df:
        helper(bb, ins)


# --- string instructions ----------------------------------------------------------
@sem(M.MOVSB, M.MOVSW, M.MOVSD, M.STOSB, M.STOSW, M.STOSD, M.LODSB, M.LODSW, M.LODSD,
     M.CMPSB, M.CMPSW, M.CMPSD, M.SCASB, M.SCASW, M.SCASD)
def string(bb: BlockBuilder, ins: ix.Instruction) -> None:
    m = ins.mnemonic
    kind = {M.MOVSB: "movs", M.MOVSW: "movs", M.MOVSD: "movs", M.STOSB: "stos", M.STOSW: "stos",
            M.STOSD: "stos", M.LODSB: "lods", M.LODSW: "lods", M.LODSD: "lods", M.CMPSB: "cmps",
            M.CMPSW: "cmps", M.CMPSD: "cmps", M.SCASB: "scas", M.SCASW: "scas",
            M.SCASD: "scas"}[m]
    size = {"B": 1, "W": 2, "D": 4}[_suffix(m)]
    a32 = _addr32(ins)
    am = M32 if a32 else 0xFFFF
    step = -size if bb.mode.df else size
    rep = ins.has_rep_prefix or ins.has_repne_prefix
    src_seg = SREG[ins.memory_segment] if kind in ("movs", "lods", "cmps") else None
    uses_si = kind in ("movs", "lods", "cmps")
    uses_di = kind in ("movs", "stos", "cmps", "scas")
    names = {f: f"sf_{f}_{bb.index}" for f in ALL_FLAGS}
    if rep and kind in ("cmps", "scas"):
        # with a zero count no iteration runs and the flags stay as they were
        bb.capture_flags()
        bb.emit("; ".join(f"{names[f]} = {bb.fsrc[f][1]}" for f in ALL_FLAGS))
    if rep:
        # the registers the loop changes keep one name across its iterations
        bb.pin([1] + [6] * uses_si + [7] * uses_di + [0] * (kind == "lods"))
    si, di, cx = bb.reg(6), bb.reg(7), bb.reg(1)
    if rep:
        # A repeated string instruction can be interrupted between iterations (SDM Vol. 2B
        # "REP/REPE/REPZ/REPNE/REPNZ": the registers then hold the progress and EIP the
        # instruction, which resumes).  Each iteration retires one instruction; at the
        # CPU's bound (Cpu.run) it stops with iterations left, so an interrupt or a stop
        # comes at an exact count.  The instruction itself counts once, when it completes
        # (the block's tail counts it: a suspended pass takes that one back), so where it
        # was suspended never changes the count.  It is the last of its block.
        cnt = cx if a32 else f"({cx} & 0xFFFF)"
        left, more = f"rl_{bb.index}", f"more_{bb.index}"
        bb.emit(f"{left} = C.limit - S.icount - {bb.index}; {more} = False")
        bb.emit(f"while {cnt}:")
        bb.ind += 1
    # one iteration
    if uses_si:
        sa = si if a32 else f"({si} & 0xFFFF)"
        lin_s = bb.linear(src_seg, sa, size, False)
        v = bb.load(lin_s, size)
    if kind in ("stos",):
        v = bb.read_reg({1: R.AL, 2: R.AX, 4: R.EAX}[size])
    if uses_di:
        da = di if a32 else f"({di} & 0xFFFF)"
        lin_d = bb.linear(0, da, size, kind in ("movs", "stos"))  # ES, no override
        if kind in ("movs", "stos"):
            bb.store(lin_d, size, v)
        else:
            dv = bb.load(lin_d, size)
    if kind in ("cmps", "scas"):
        a = v if kind == "cmps" else stable(bb, bb.read_reg({1: R.AL, 2: R.AX, 4: R.EAX}[size]))
        b = dv
        res = bb.tmp("v")
        bb.emit(f"{res} = ({a} - {b}) & {MASK[size]:#x}")
        # fixed names, so that the loop's last iteration defines them
        bb.emit(f"{names['cf']} = 1 if {a} < {b} else 0; {names['zf']} = 1 if {res} == 0 else 0")
        bb.emit(f"{names['sf']} = 1 if {res} & {SIGN[size]:#x} else 0; "
                f"{names['of']} = 1 if ({a} ^ {b}) & ({a} ^ {res}) & {SIGN[size]:#x} else 0")
        bb.emit(f"{names['pf']} = 1 if PAR[{res} & 0xFF] else 0; "
                f"{names['af']} = 1 if ({a} ^ {b} ^ {res}) & 0x10 else 0")
    if kind == "lods":
        bb.write_reg({1: R.AL, 2: R.AX, 4: R.EAX}[size], v)
    if uses_si:
        bb.set_reg32(6, f"({si} + {step}) & {am:#x}" if a32 else
                     f"({si} & 0xFFFF0000) | (({si} + {step}) & 0xFFFF)")
    if uses_di:
        bb.set_reg32(7, f"({di} + {step}) & {am:#x}" if a32 else
                     f"({di} & 0xFFFF0000) | (({di} + {step}) & 0xFFFF)")
    if rep:
        bb.set_reg32(1, f"({cx} - 1) & {am:#x}" if a32 else
                     f"({cx} & 0xFFFF0000) | (({cx} - 1) & 0xFFFF)")
        bb.emit("S.icount += 1")
        if kind in ("cmps", "scas"):
            zf = names["zf"]
            bb.emit(f"if {'not ' if ins.has_repe_prefix else ''}{zf}: break")
        bb.emit(f"{left} -= 1")
        bb.emit(f"if {left} <= 0 and {cnt}: {more} = True; S.icount -= 1; break")
        bb.ind -= 1
        bb.unpin()
        bb.next_expr = f"({ins.ip32:#x} if {more} else {ins.next_ip32:#x})"
    if kind in ("cmps", "scas"):
        for f in ALL_FLAGS:
            bb.set_flag_var(f, names[f])


def _suffix(m: int) -> str:
    for name in ("MOVS", "STOS", "LODS", "CMPS", "SCAS"):
        for s in "BWD":
            if getattr(M, name + s) == m:
                return s
    raise AssertionError(m)


def _addr32(ins: ix.Instruction) -> bool:
    for i in range(ins.op_count):
        k = ins.op_kind(i)
        if k in (OK.MEMORY_SEG_ESI, OK.MEMORY_ESEDI, OK.MEMORY_SEG_EDI):
            return True
        if k in (OK.MEMORY_SEG_SI, OK.MEMORY_ESDI, OK.MEMORY_SEG_DI):
            return False
    return True


# --- everything else is a helper or undefined ------------------------------------------
HELPER_MNEMONICS = (
    M.INT, M.INT3, M.INTO, M.INT1, M.IRET, M.IRETD, M.HLT, M.CLI, M.STI,
    M.POPF, M.POPFD, M.IN, M.OUT, M.INSB, M.INSW, M.INSD, M.OUTSB, M.OUTSW, M.OUTSD,
    M.CPUID, M.RDTSC, M.RDTSCP, M.RDMSR, M.WRMSR, M.RDPMC, M.LGDT, M.LIDT, M.LLDT, M.LTR, M.SGDT,
    M.SIDT, M.SLDT, M.STR, M.SMSW, M.LMSW, M.CLTS, M.INVLPG, M.INVD, M.WBINVD, M.LAR,
    M.LSL, M.VERR, M.VERW, M.ARPL, M.LDS, M.LES, M.LFS, M.LGS, M.LSS, M.ENTER,
    M.RETF, M.BOUND, M.CMPXCHG8B, M.UD0, M.UD1, M.UD2, M.SYSENTER, M.SYSEXIT,
    M.VMXON, M.VMXOFF, M.VMCLEAR, M.VMPTRLD, M.VMPTRST, M.VMREAD, M.VMWRITE, M.VMLAUNCH,
    M.VMRESUME, M.VMCALL, M.INVEPT, M.STAC, M.CLAC,
)
for _m in HELPER_MNEMONICS:
    EMITTERS[_m] = helper

LOCKABLE = frozenset({M.ADD, M.ADC, M.AND, M.BTC, M.BTR, M.BTS, M.CMPXCHG, M.CMPXCHG8B,
                      M.DEC, M.INC, M.NEG, M.NOT, M.OR, M.SBB, M.SUB, M.XOR, M.XADD, M.XCHG})
