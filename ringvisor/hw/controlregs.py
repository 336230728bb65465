"""Control and debug registers: MOV to and from CRn and DRn, LMSW, CLTS, INVLPG,
INVD/WBINVD, and MOV or POP to a segment register (MOV's one helper serves all of
its system forms).

``write_cr`` holds the processor's checks on a new CR0 or CR4 (reserved bits,
PG without PE, NW without CD, the bits fixed in VMX operation) and which writes
reload the PAE PDPTEs or flush the TLB: the monitors check a guest's MOV to a
control register against the same constants (``CR0_WRITABLE``,
``CR4_SUPPORTED``, ``CR0_PDPTE_RELOAD``), named once here.

Apart from ``system.py`` as Bochs keeps ``crregs.cc`` apart: the privileged
state the chapter's de-privileged kernel must not hold.  The helpers file
themselves in ``system.HELPERS``.
"""

from __future__ import annotations

import iced_x86 as ix

from . import transfers
from .faults import DB, GP, UD, CpuFault
from .state import (CR0_TRANSLATION, CR4_TRANSLATION, CR0_ET, CR0_NW, CR0_CD, CR0_PE, CR0_PG,
                    CR0_TS, CR3_MASK, CR4_DE, CR4_OSFXSR, CR4_OSXMMEXCPT, CR4_PAE, CR4_PCE, CR4_PGE,
                    CR4_PSE, CR4_SMAP, CR4_SMEP, CR4_PVI, CR4_TSD, CR4_UMIP, CR4_VME, CR4_VMXE, SS)
from .system import ea, get_reg, helper, read_op, require_cpl0, set_reg
from .translate import SREG

M = ix.Mnemonic
Rg = ix.Register

CR0_WRITABLE = 0xE005003F      # PG CD NW AM WP NE ET TS EM MP PE
CR4_SUPPORTED = (CR4_VME | CR4_PVI | CR4_TSD | CR4_DE | CR4_PSE | CR4_PAE | CR4_PGE | CR4_PCE | CR4_OSFXSR | CR4_OSXMMEXCPT |
                 CR4_UMIP | CR4_SMEP | CR4_SMAP | CR4_VMXE)
# in VMX operation CR0.PE, NE and PG stay set and CR4.VMXE cannot be cleared (SDM Vol. 3C §23.8;
# an unrestricted guest may clear PE and PG: Vmx.cr0_fixed)
VMX_CR0_FIXED = CR0_PE | 0x20 | CR0_PG


@helper(M.LMSW)
def h_lmsw(cpu, ins) -> int:
    require_cpl0(cpu)
    v = read_op(cpu, ins, 0, 2)
    cr0 = cpu.state.cr0
    # LMSW loads PE, MP, EM and TS; it can set PE but never clear it
    cpu.state.cr0 = (cr0 & ~0xE) | (v & 0xE) | (cr0 & 1) | (v & 1)
    if (cr0 ^ cpu.state.cr0) & CR0_PE:
        cpu.tlb_flush()
        cpu.mode_changed()
    return ins.next_ip32


@helper(M.CLTS)
def h_clts(cpu, ins) -> int:
    require_cpl0(cpu)
    cpu.state.cr0 &= ~CR0_TS
    return ins.next_ip32


# --- control and debug registers -------------------------------------------------------------
def cr0_refused(v: int) -> bool:
    """Does MOV to CR0 of ``v`` raise #GP(0) on any processor (SDM Vol. 2 MOV CRn): a
    reserved bit set, PG without PE, or NW without CD?  (The monitors' virtual CPUs ask
    too.)"""
    return bool(v & ~CR0_WRITABLE & 0xFFFFFFFF or (v & CR0_PG and not v & CR0_PE)
                or (v & CR0_NW and not v & CR0_CD))


def write_cr(cpu, n: int, v: int) -> None:
    st = cpu.state
    if n == 0:
        if cr0_refused(v):
            raise CpuFault(GP, 0)
        if cpu.vmx.on and v & (fixed := cpu.vmx.cr0_fixed()) != fixed:
            raise CpuFault(GP, 0)
        old = st.cr0
        v |= CR0_ET                 # ET is hardwired to 1 (SDM Vol. 3 §2.5)
        if (old ^ v) & CR0_PDPTE_RELOAD:
            cpu.mmu.reload_pdptes(v, st.cr4, st.cr3)
        st.cr0 = v
        if (old ^ st.cr0) & CR0_TRANSLATION:
            cpu.tlb_flush()
    elif n == 2:
        st.cr2 = v
    elif n == 3:
        cpu.mmu.reload_pdptes(st.cr0, st.cr4, v)
        st.cr3 = v & CR3_MASK
        cpu.tlb_flush()
    elif n == 4:
        if v & ~CR4_SUPPORTED or (cpu.vmx.on and not v & CR4_VMXE):
            raise CpuFault(GP, 0)
        old = st.cr4
        if (old ^ v) & CR4_PDPTE_RELOAD:
            cpu.mmu.reload_pdptes(st.cr0, v, st.cr3)
        st.cr4 = v
        if (old ^ v) & CR4_TRANSLATION:
            cpu.tlb_flush()
        if (old ^ v) & CR4_DE:
            cpu.update_debug()            # DR7's R/W = 10 entries become I/O breakpoints
    else:
        raise CpuFault(UD)


# the MOVs to CR0 and CR4 that load the PDPTEs when PAE paging is in use after them
# (SDM Vol. 3A §4.4.1); MOV to CR3 always does
CR0_PDPTE_RELOAD = CR0_PG | CR0_CD | CR0_NW
CR4_PDPTE_RELOAD = CR4_PAE | CR4_PGE | CR4_PSE | CR4_SMEP


def read_cr(cpu, n: int) -> int:
    st = cpu.state
    if n in (0, 2, 3, 4):
        return (st.cr0, 0, st.cr2, st.cr3, st.cr4)[n]
    raise CpuFault(UD)


CR_REGS = {getattr(Rg, f"CR{i}"): i for i in range(8) if hasattr(Rg, f"CR{i}")}
DR_REGS = {getattr(Rg, f"DR{i}"): i for i in range(8) if hasattr(Rg, f"DR{i}")}


def debug_register(cr4: int, n: int) -> int:
    """The debug register MOV DRn reaches: DR4/DR5 are DR6/DR7, unless CR4.DE makes
    them #UD (SDM Vol. 3 §17.2.2)."""
    if n in (4, 5):
        if cr4 & CR4_DE:
            raise CpuFault(UD)
        n += 2
    return n


DR7_GD = 1 << 13                 # general detect: MOV to or from any DRn is #DB first
DR6_BD = 1 << 13                 # ... and DR6 says so (SDM Vol. 3 §17.2.3-4)


def general_detect(dr: list[int]) -> bool:
    """MOV DRn with DR7.GD set (SDM Vol. 3 §17.2.4, Vol. 2 MOV DR): instead of the
    move, a #DB fault (EIP at the MOV) with DR6.BD set; GD is cleared so that the
    handler may use the debug registers.  True if that #DB is due (DR6 and DR7 updated
    here); the caller raises it.  (QEMU's TCG does not do this: tests/test_osdev2.py.)"""
    if not dr[7] & DR7_GD:
        return False
    dr[7] &= ~DR7_GD
    dr[6] |= DR6_BD
    return True


def debug_register_value(n: int, v: int) -> int:
    """What DRn holds after MOV of ``v`` to it: DR6 and DR7 keep their reserved bits
    (DR6 reads 0xffff0ff0 with no event, DR7 has bit 10 set; SDM Vol. 3 §17.2.3-4)."""
    if n == 6:
        return (v & 0x0000E00F) | 0xFFFF0FF0
    if n == 7:
        return (v & 0xFFFF2BFF) | 0x400
    return v


@helper(M.MOV)
def h_mov(cpu, ins) -> int:
    r0, r1 = ins.op0_register, ins.op1_register
    st = cpu.state
    if r0 in CR_REGS or r1 in CR_REGS:
        require_cpl0(cpu)
        if r0 in CR_REGS:
            write_cr(cpu, CR_REGS[r0], get_reg(cpu, r1))
            cpu.mode_changed()
        else:
            set_reg(cpu, r0, read_cr(cpu, CR_REGS[r1]))
        return ins.next_ip32
    if r0 in DR_REGS or r1 in DR_REGS:
        require_cpl0(cpu)
        debug_register(st.cr4, DR_REGS[r0 if r0 in DR_REGS else r1])   # DR4/DR5's #UD first
        if general_detect(st.dr):
            raise CpuFault(DB)
        if r0 in DR_REGS:
            n = debug_register(st.cr4, DR_REGS[r0])
            st.dr[n] = debug_register_value(n, get_reg(cpu, r1))
            if n in (0, 1, 2, 3, 7):
                cpu.update_debug()
        else:
            set_reg(cpu, r0, st.dr[debug_register(st.cr4, DR_REGS[r1])])
        return ins.next_ip32
    # mov sreg, r/m16
    s = SREG[r0]
    sel = read_op(cpu, ins, 1, 2)
    cpu.segmentation.load(s, sel)
    if s == SS:
        cpu.open_interrupt_shadow(stack=True)
    return ins.next_ip32


@helper(M.POP)
def h_pop_sreg(cpu, ins) -> int:
    st = cpu.state
    size = abs(ins.stack_pointer_increment) or 4
    (v,) = transfers._pop_values(cpu, 1, size)
    s = SREG[ins.op0_register]
    cpu.segmentation.load(s, v & 0xFFFF)
    transfers._set_esp(cpu, st.segs[SS], st.regs[4] + size)
    if s == SS:
        cpu.open_interrupt_shadow(stack=True)
    return ins.next_ip32


@helper(M.INVLPG)
def h_invlpg(cpu, ins) -> int:
    require_cpl0(cpu)
    s = cpu.state.segs[SREG[ins.memory_segment]]
    cpu.invlpg((s.base + ea(cpu, ins)) & 0xFFFFFFFF)
    return ins.next_ip32


@helper(M.INVD, M.WBINVD)
def h_invd(cpu, ins) -> int:
    require_cpl0(cpu)
    return ins.next_ip32


