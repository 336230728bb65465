"""Descriptor-table instructions: LGDT/LIDT, LLDT, LTR (privileged); SGDT/SIDT,
SLDT, STR, SMSW (sensitive but unprivileged unless CR4.UMIP); LAR, LSL, VERR/VERW
and ARPL (unprivileged descriptor inspection).

These are the instructions that make IA-32 not classically virtualizable (the
chapter's section 2.1): the stores and the inspections run at any CPL and show
a de-privileged kernel the real tables and its real ring.  The LAR/LSL type
rules (``LAR_TYPES``, ``LSL_TYPES``) are named once here.

Apart from ``system.py`` as Bochs keeps ``protect_ctrl.cc`` apart.  The helpers
file themselves in ``system.HELPERS``.
"""

from __future__ import annotations

import iced_x86 as ix

from .faults import GP, NP, CpuFault
from .ept import EptExit
from .segments import LDT, TSS16_AVAIL, TSS32_AVAIL, Descriptor, null_segment
from .state import CR4_UMIP
from .system import (get_reg, helper, ix_code_is_16, mem_linear, read_mem, read_op, require_cpl0,
                     require_protected, set_reg, set_zf, write_mem, write_op)
from .translate import GPR

M = ix.Mnemonic
OK = ix.OpKind


# --- descriptor tables ------------------------------------------------------------------
@helper(M.LGDT, M.LIDT)
def h_lgdt(cpu, ins) -> int:
    require_cpl0(cpu)
    limit = read_mem(cpu, ins, 2)
    base = read_mem(cpu, ins, 4, 2)
    if ix_code_is_16(ins.code):
        base &= 0xFFFFFF
    t = cpu.state.gdtr if ins.mnemonic == M.LGDT else cpu.state.idtr
    t.base, t.limit = base, limit
    return ins.next_ip32


def check_umip(cpu) -> None:
    """CR4.UMIP: SGDT, SIDT, SLDT, SMSW and STR at CPL > 0 raise #GP(0) (SDM Vol. 3 §2.5)."""
    if cpu.state.cr4 & CR4_UMIP and cpu.cpl > 0:
        raise CpuFault(GP, 0)


@helper(M.SGDT, M.SIDT)
def h_sgdt(cpu, ins) -> int:
    # Not privileged: ring 3 reads the real table addresses (the "Red Pill"), unless UMIP.
    check_umip(cpu)
    t = cpu.state.gdtr if ins.mnemonic == M.SGDT else cpu.state.idtr
    base = t.base & (0xFFFFFF if ix_code_is_16(ins.code) else 0xFFFFFFFF)
    lin0 = mem_linear(cpu, ins, 2, True)
    lin1 = mem_linear(cpu, ins, 4, True, 2)
    cpu.mmu.walk(lin1, True, cpu.cpl == 3)
    cpu.mmu.write(lin0, 2, t.limit, cpu.cpl == 3)
    cpu.mmu.write(lin1, 4, base, cpu.cpl == 3)
    return ins.next_ip32


def _store_selector(cpu, ins, value: int) -> None:
    if ins.op0_kind == OK.REGISTER:
        set_reg(cpu, ins.op0_register, value)   # zero-extended into a 32-bit register
    else:
        write_mem(cpu, ins, 2, value)


@helper(M.SLDT)
def h_sldt(cpu, ins) -> int:
    require_protected(cpu)
    check_umip(cpu)
    _store_selector(cpu, ins, cpu.state.ldtr.selector)
    return ins.next_ip32


@helper(M.STR)
def h_str(cpu, ins) -> int:
    require_protected(cpu)
    check_umip(cpu)
    _store_selector(cpu, ins, cpu.state.tr.selector)
    return ins.next_ip32


@helper(M.SMSW)
def h_smsw(cpu, ins) -> int:
    check_umip(cpu)
    if ins.op0_kind == OK.REGISTER:
        set_reg(cpu, ins.op0_register, cpu.state.cr0)
    else:
        write_mem(cpu, ins, 2, cpu.state.cr0 & 0xFFFF)
    return ins.next_ip32


@helper(M.LLDT)
def h_lldt(cpu, ins) -> int:
    require_protected(cpu)
    require_cpl0(cpu)
    sel = read_op(cpu, ins, 0, 2) & 0xFFFF   # "ltr ax" names EAX; the selector is 16 bits
    st = cpu.state
    if (sel & 0xFFFC) == 0:
        st.ldtr = null_segment(sel)
        return ins.next_ip32
    if sel & 4:
        raise CpuFault(GP, sel & 0xFFFC)
    d = cpu.segmentation.read_descriptor(sel)
    if d.s or d.type != LDT:
        raise CpuFault(GP, sel & 0xFFFC)
    if not d.present:
        raise CpuFault(NP, sel & 0xFFFC)
    st.ldtr = d.segment(sel)
    return ins.next_ip32


@helper(M.LTR)
def h_ltr(cpu, ins) -> int:
    require_protected(cpu)
    require_cpl0(cpu)
    sel = read_op(cpu, ins, 0, 2) & 0xFFFF
    if (sel & 0xFFFC) == 0:
        raise CpuFault(GP, 0)
    if sel & 4:
        raise CpuFault(GP, sel & 0xFFFC)
    d = cpu.segmentation.read_descriptor(sel)
    if d.s or d.type not in (TSS16_AVAIL, TSS32_AVAIL):
        raise CpuFault(GP, sel & 0xFFFC)
    if not d.present:
        raise CpuFault(NP, sel & 0xFFFC)
    # mark the TSS busy in the GDT
    b = cpu.mmu.read(d.addr + 5, 1, False)
    cpu.mmu.write(d.addr + 5, 1, b | 2, False)
    # (a new object: descriptors read from the tables may be shared, see Segmentation.read_at)
    cpu.state.tr = Descriptor(d.raw | 2 << 40, d.addr).segment(sel)
    return ins.next_ip32


# --- descriptor inspection (unprivileged, and sensitive) ----------------------------------------
LAR_TYPES = {1, 2, 3, 4, 5, 9, 0xB, 0xC}
LSL_TYPES = {1, 2, 3, 9, 0xB}


def _inspect(cpu, sel: int, valid_system: set):
    if (sel & 0xFFFC) == 0:
        return None
    try:
        d = cpu.segmentation.read_descriptor(sel)
    except EptExit:
        raise                           # the guest leaves: not an unusable selector
    except CpuFault:
        return None
    if not d.s and d.type not in valid_system:
        return None
    if not d.conforming:
        if d.dpl < cpu.cpl or d.dpl < (sel & 3):
            return None
    return d


@helper(M.LAR, M.LSL)
def h_lar(cpu, ins) -> int:
    require_protected(cpu)
    sel = read_op(cpu, ins, 1, 2)
    lar = ins.mnemonic == M.LAR
    d = _inspect(cpu, sel, LAR_TYPES if lar else LSL_TYPES)
    if d is None:
        set_zf(cpu, False)
        return ins.next_ip32
    size = GPR[ins.op0_register][1]
    if lar:
        v = (d.raw >> 32) & (0x00F0FF00 if size == 4 else 0xFF00)
    else:
        v = d.limit & (0xFFFFFFFF if size == 4 else 0xFFFF)
    set_reg(cpu, ins.op0_register, v)
    set_zf(cpu, True)
    return ins.next_ip32


@helper(M.VERR, M.VERW)
def h_verr(cpu, ins) -> int:
    require_protected(cpu)
    sel = read_op(cpu, ins, 0, 2)
    d = _inspect(cpu, sel, set())
    ok = d is not None and d.s
    if ok:
        ok = d.readable if ins.mnemonic == M.VERR else d.writable
    set_zf(cpu, bool(ok))
    return ins.next_ip32


@helper(M.ARPL)
def h_arpl(cpu, ins) -> int:
    require_protected(cpu)
    dst = read_op(cpu, ins, 0, 2)
    src = get_reg(cpu, ins.op1_register)
    if dst & 3 < src & 3:
        write_op(cpu, ins, 0, 2, (dst & ~3) | (src & 3))
        set_zf(cpu, True)
    else:
        set_zf(cpu, False)
    return ins.next_ip32


