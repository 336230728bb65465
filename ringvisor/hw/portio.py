"""Port I/O instructions: IN, OUT, INS and OUTS, and the I/O permission check.

The check is the processor's (SDM Vol. 1 §19.5): IOPL first, then the I/O
permission bitmap of the current 32-bit TSS (in virtual-8086 mode the bitmap
alone, SDM Vol. 3 §20.2.8.1).  It is named once here: a monitor that emulates
a guest's port I/O asks the same rule of the guest's own TSS
(``io_bitmap_permits``), and VMX's I/O exits check it before they exit.  The
I/O breakpoints (DR7 R/W = 10 under CR4.DE) are matched here too (``io_breakpoint``).

Apart from ``system.py`` because it is one of the sensitive instruction groups
the chapter names (an I/O instruction must trap under any monitor), as Bochs
keeps ``io.cc`` apart.  The helpers file themselves in ``system.HELPERS``.
"""

from __future__ import annotations

import iced_x86 as ix

from .faults import GP, CpuFault
from .state import ATTR_UNUSABLE, DF
from .system import get_reg, helper, iopl, set_reg
from .translate import GPR, SREG

M = ix.Mnemonic
OK = ix.OpKind


# --- I/O -----------------------------------------------------------------------------
def io_permitted(cpu, port: int, size: int) -> None:
    """IOPL, then the TSS I/O permission bitmap (SDM Vol. 1 §19.5); in virtual-8086 mode
    the bitmap alone, whatever IOPL (SDM Vol. 3 §20.2.8.1)."""
    if cpu.cpl <= iopl(cpu) and not cpu.mode.vm86:
        return
    tr = cpu.state.tr
    if tr.attr & ATTR_UNUSABLE or tr.type not in (9, 0xB) or \
            not io_bitmap_permits(lambda a, n: cpu.mmu.read(a, n, False), tr.base, tr.limit,
                                  port, size):
        raise CpuFault(GP, 0)


def io_breakpoint(cpu, port: int, size: int) -> None:
    """An access to ``size`` ports at ``port``: the I/O breakpoints it matches trap after
    the instruction (B0-B3, as a data breakpoint's: ``Cpu.step``)."""
    for i, lo, hi in cpu.io_breakpoints:
        if port <= hi and lo <= port + size - 1:
            cpu.mmu.watch_hits |= 1 << i


def io_bitmap_permits(read, tss_base: int, tss_limit: int, port: int, size: int) -> bool:
    """Does the I/O permission bitmap of the 32-bit TSS at ``tss_base`` allow ``size``
    bytes at ``port``?  ``read(linear, n)`` reads the TSS.  The processor reads two
    bytes at the map base + port / 8; both must lie within the TSS limit."""
    if tss_limit < 0x67:
        return False
    byte = read(tss_base + 0x66, 2) + (port >> 3)
    if byte + 1 > tss_limit:
        return False
    return not (read(tss_base + byte, 2) >> (port & 7)) & ((1 << size) - 1)


def _acc_size(ins, i: int) -> int:
    return GPR[ins.op_register(i)][1]


@helper(M.IN)
def h_in(cpu, ins) -> int:
    size = _acc_size(ins, 0)
    port = ins.immediate8 if ins.op1_kind == OK.IMMEDIATE8 else cpu.state.regs[2] & 0xFFFF
    io_permitted(cpu, port, size)
    set_reg(cpu, ins.op0_register, cpu.bus.read(port, size))
    if cpu.io_breakpoints:
        io_breakpoint(cpu, port, size)
    return ins.next_ip32


@helper(M.OUT)
def h_out(cpu, ins) -> int:
    size = _acc_size(ins, 1)
    port = ins.immediate8 if ins.op0_kind == OK.IMMEDIATE8 else cpu.state.regs[2] & 0xFFFF
    io_permitted(cpu, port, size)
    cpu.bus.write(port, size, get_reg(cpu, ins.op1_register))
    if cpu.io_breakpoints:
        io_breakpoint(cpu, port, size)
    return ins.next_ip32


def _string_io(cpu, ins, size: int, out: bool) -> int:
    st = cpu.state
    port = st.regs[2] & 0xFFFF
    io_permitted(cpu, port, size)
    a32 = ins.op_kind(0 if not out else 1) in (OK.MEMORY_ESEDI, OK.MEMORY_SEG_ESI)
    am = 0xFFFFFFFF if a32 else 0xFFFF
    step = -size if st.eflags & DF else size
    rep = ins.has_rep_prefix or ins.has_repne_prefix
    ri = 6 if out else 7
    while True:
        if rep and not st.regs[1] & am:
            break
        off = st.regs[ri] & am
        if out:
            lin = cpu.segmentation.linear(SREG[ins.memory_segment], off, size, False)
            cpu.bus.write(port, size, cpu.mmu.read(lin, size, cpu.cpl == 3))
        else:
            lin = cpu.segmentation.linear(0, off, size, True)
            # the destination is checked before the port is read
            cpu.mmu.walk(lin, True, cpu.cpl == 3)
            cpu.mmu.write(lin, size, cpu.bus.read(port, size), cpu.cpl == 3)
        st.regs[ri] = (st.regs[ri] & ~am & 0xFFFFFFFF) | ((off + step) & am)
        if cpu.io_breakpoints:
            io_breakpoint(cpu, port, size)
        if not rep:
            break
        st.regs[1] = (st.regs[1] & ~am & 0xFFFFFFFF) | (((st.regs[1] & am) - 1) & am)
        st.icount += 1
        if st.icount >= cpu.limit and st.regs[1] & am:
            # suspended between iterations at the CPU's bound, as the translated
            # string instructions are (semantics.string); the block's tail counts
            # this instruction once more, so take that back
            st.icount -= 1
            return ins.ip32
    return ins.next_ip32


@helper(M.INSB, M.INSW, M.INSD)
def h_ins(cpu, ins) -> int:
    return _string_io(cpu, ins, {M.INSB: 1, M.INSW: 2, M.INSD: 4}[ins.mnemonic], False)


@helper(M.OUTSB, M.OUTSW, M.OUTSD)
def h_outs(cpu, ins) -> int:
    return _string_io(cpu, ins, {M.OUTSB: 1, M.OUTSW: 2, M.OUTSD: 4}[ins.mnemonic], True)


