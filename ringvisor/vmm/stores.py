"""Guest stores the monitor performs itself, on pages it keeps write-protected.

A guest kernel's GDT often shares its page with data the kernel writes all the
time (the TSS, counters: the teaching kernel counts its system calls next to
its GDT).  The page stays write-protected (``gdt``), so each such store traps;
rather than let it through (opening the page, which then has to be closed
and the descriptors it holds copied again at the next segment load), the
monitor performs the common ones itself, on the guest's memory with the
guest's paging rules, with the flags the processor would set (``hw.flags``),
and continues after the instruction: one trap, the page protected throughout,
and a store into the GDT itself copied at once (Xen emulates writes to a
guest's write-protected page tables the same way, ``ptwr_emulated_update``).

Only plain one-destination forms: MOV, and the arithmetic and logic
read-modify-writes (ADD ADC SUB SBB AND OR XOR INC DEC NEG NOT) with a memory
destination; anything else (string instructions, XCHG, bit operations...) is
let through the way the monitor lets any store through.
"""

from __future__ import annotations

import iced_x86 as ix

from ringvisor.hw import flags as F
from ringvisor.hw.state import CF, TF

from .emulate import Context
from .frame import Frame

M = ix.Mnemonic
OK = ix.OpKind
R = ix.Register
MASK = {1: 0xFF, 2: 0xFFFF, 4: 0xFFFFFFFF, 8: (1 << 64) - 1}
ARITH_FLAGS = 0x8D5
KIND = {M.ADD: F.ADD, M.ADC: F.ADC, M.SUB: F.SUB, M.SBB: F.SBB, M.AND: F.LOGIC, M.OR: F.LOGIC,
        M.XOR: F.LOGIC, M.INC: F.INC, M.DEC: F.DEC, M.NEG: F.NEG}
PLAIN = {M.MOV, M.NOT}


def emulate_store(mon, f: Frame, ins: ix.Instruction) -> bool:
    """Perform the store ``ins`` (the instruction at the frame's EIP) for the guest and step
    past it; False if it is not one of the forms done here (nothing happened then)."""
    m = ins.mnemonic
    if m not in KIND and m not in PLAIN or ins.op_count == 0 or ins.op0_kind != OK.MEMORY \
            or ins.memory_segment == R.CS or ins.has_rep_prefix or ins.has_repne_prefix:
        return False
    size = ix.MemorySizeExt.size(ins.memory_size)
    if size not in MASK or (ins.op_count > 1 and ins.op1_kind == OK.REGISTER and
                            not R.AL <= ins.op1_register <= R.EDI):
        return False
    c = Context(mon, f, ins, f.eip)
    tf = bool(f.eflags & TF)
    mon.db_hits = 0
    mask = MASK[size]
    b = c.op(1, size) & mask if ins.op_count > 1 else 0
    if m == M.MOV:
        c.write(size, b)
    else:
        res, f.eflags = arith(m, c.read(size), b, size, f.eflags)
        c.write(size, res)
    f.eip = (f.eip + ins.len) & 0xFFFFFFFF
    mon.completed(f, tf)
    mon.stats["stores emulated"] += 1
    return True


def arith(m: int, a: int, b: int, size: int, eflags: int) -> tuple[int, int]:
    """The result of arithmetic or logic instruction ``m`` on ``a`` (its destination) and
    ``b`` (its source), and EFLAGS after it (the processor's, ``hw.flags``)."""
    mask = MASK[size]
    cf = eflags & CF
    if m == M.NOT:
        return ~a & mask, eflags
    if m in (M.ADD, M.ADC):
        res = (a + b + (cf if m == M.ADC else 0)) & mask
    elif m in (M.SUB, M.SBB):
        res = (a - b - (cf if m == M.SBB else 0)) & mask
    elif m == M.AND:
        res = a & b
    elif m == M.OR:
        res = a | b
    elif m == M.XOR:
        res = a ^ b
    elif m == M.INC:
        res, b = (a + 1) & mask, cf
    elif m == M.DEC:
        res, b = (a - 1) & mask, cf
    else:                                   # NEG
        res = -a & mask
    kind = KIND[m]
    if kind in (F.ADC, F.SBB) and not cf:
        kind = F.ADD if kind == F.ADC else F.SUB    # (the records' ADC/SBB carry in 1)
    fl = F.materialize(F.op_code(kind, 8 * size), res, a, b)
    return res, (eflags & ~ARITH_FLAGS) | fl
