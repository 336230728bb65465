"""Real-address mode: segment*16 addressing and its control transfers.

With CR0.PE clear the CPU runs 8086 code: a segment register load sets the
selector and ``base = selector << 4`` and nothing else, so the limit and the
attributes a protected-mode descriptor left in the hidden cache stay in force
("unreal" or "big real" mode, SDM Vol. 3 §9.9.2; QEMU's TCG does the same in
``gen_op_movl_seg_real``).  Interrupts and exceptions go through the interrupt
vector table at IDTR (four bytes a vector: IP then CS), pushing FLAGS, CS and
IP (SDM Vol. 3 §20.1.4).  No privilege or descriptor checks apply: only the
segment limits are checked (#GP, or #SS for the stack).

Virtual-8086 mode (EFLAGS.VM with CR0.PE, SDM Vol. 3 ch. 20) addresses memory
the same way, at CPL 3: its segment loads, far JMP/CALL/RET and (at IOPL 3) IRET
are these, with user-mode memory accesses; its interrupts and exceptions leave it
through the protected-mode IDT (transfers.py).  With CR4.VME (vme.py) a 16-bit IRET
below IOPL 3 acts on VIF (``iret_virtual``), and INT n whose redirection bit is clear
goes back to the 8086 program's own vector table (``redirect``).

The CPU's mode says which of these rules are in force (``Mode.real``,
``Mode.vm86``); these functions are called only in those modes.
"""

from __future__ import annotations

from . import vme
from .faults import GP, SS, CpuFault
from .state import (ATTR_P, ATTR_S, AC, CS, ID, IF, IOPL_MASK, NT, RF, SS as SREG_SS, TF, VIF,
                    Segment)

# the EFLAGS bits a real-mode IRET (and POPF) loads besides the arithmetic flags and DF
# (QEMU helper_iret_real); a 16-bit IRET loads only the low word of them
IRET_MASK = TF | AC | ID | IF | IOPL_MASK | RF | NT | 0xCD5
# in virtual-8086 mode IRET and POPF leave IOPL alone (SDM Vol. 2 IRET, POPF; QEMU
# helper_iret_real with VM set)
VM86_IRET_MASK = IRET_MASK & ~IOPL_MASK
SP16 = 0xFFFF
# what entering virtual-8086 mode puts in each segment cache (SDM Vol. 3 §20.2.1: 64 KiB,
# read/write, DPL 3; QEMU load_seg_vm, KVM's VM86 segments): accessed read/write data
VM86_ATTR = ATTR_P | ATTR_S | (3 << 5) | 0x3


def vm86_segment(selector: int) -> Segment:
    """A segment register as IRET or a task switch into virtual-8086 mode loads it."""
    selector &= 0xFFFF
    return Segment(selector, selector << 4, 0xFFFF, VM86_ATTR)


def load_segment(cpu, sreg: int, selector: int) -> Segment:
    """A segment register load in real mode: selector and base; the cache keeps the rest."""
    selector &= 0xFFFF
    old = cpu.state.segs[sreg]
    return Segment(selector, selector << 4, old.limit, old.attr)


def check_limit(seg: Segment, off: int, size: int, vec: int = GP) -> int:
    """A real-mode access: the limit is checked (expand-down honoured), never the type."""
    last = off + size - 1
    if not seg.attr & 8 and seg.attr & 4:      # an expand-down data segment left in the cache
        if off <= seg.limit or last > (0xFFFFFFFF if seg.attr & (1 << 14) else 0xFFFF):
            raise CpuFault(vec, 0)
    elif last > seg.limit:
        raise CpuFault(vec, 0)
    return (seg.base + off) & 0xFFFFFFFF


def push16(cpu, vals: list[int], size: int = 2) -> None:
    """Push ``vals`` (first pushed first) with SP wrapping at 64 KiB, as QEMU's real-mode
    interrupts and far calls do; memory is written before SP changes (as a user-mode
    access in virtual-8086 mode)."""
    st = cpu.state
    ss = st.segs[SREG_SS]
    mask = 0xFFFFFFFF if ss.big else SP16
    sp = st.regs[4]
    addrs = []
    for j in range(len(vals)):
        off = (sp - (j + 1) * size) & mask
        addrs.append(check_limit(ss, off, size, SS))
    for a, v in zip(addrs, vals):
        cpu.mmu.write(a, size, v & ((1 << (8 * size)) - 1), cpu.cpl == 3)
    new = (sp - len(vals) * size) & mask
    st.regs[4] = new if mask == 0xFFFFFFFF else (sp & 0xFFFF0000) | new


def pop16(cpu, n: int, size: int) -> list[int]:
    """Read ``n`` values from the stack (no SP change)."""
    st = cpu.state
    ss = st.segs[SREG_SS]
    mask = 0xFFFFFFFF if ss.big else SP16
    sp = st.regs[4]
    user = cpu.cpl == 3
    return [cpu.mmu.read(check_limit(ss, (sp + j * size) & mask, size, SS), size, user)
            for j in range(n)]


def _drop(cpu, nbytes: int) -> None:
    st = cpu.state
    mask = 0xFFFFFFFF if st.segs[SREG_SS].big else SP16
    sp = st.regs[4]
    st.regs[4] = (sp & ~mask & 0xFFFFFFFF) | ((sp + nbytes) & mask)


def _load_cs(cpu, selector: int, ip: int) -> None:
    st = cpu.state
    st.segs[CS] = load_segment(cpu, CS, selector)
    st.eip = ip
    cpu.mode_changed()


def deliver(cpu, vector: int, return_eip: int) -> None:
    """An interrupt or exception in real mode, through the IVT (no error code is pushed)."""
    st = cpu.state
    if vector * 4 + 3 > st.idtr.limit:
        raise CpuFault(GP, vector * 8 + 2)
    entry = cpu.mmu.read((st.idtr.base + vector * 4) & 0xFFFFFFFF, 4, False)
    push16(cpu, [cpu.get_eflags(), st.segs[CS].selector, return_eip])
    st.eflags &= ~(IF | TF | AC | RF)
    _load_cs(cpu, entry >> 16, entry & 0xFFFF)


def redirect(cpu, vector: int, return_ip: int, image: int, eflags: int) -> None:
    """INT n in virtual-8086 mode sent back to the 8086 program's own handler by CR4.VME
    (SDM Vol. 3 Table 20-2, methods 5 and 6): its entry in the vector table at linear 0
    (``vme.ivt_entry_address``), FLAGS ``image``, CS and IP pushed on its stack, then
    EFLAGS ``eflags`` (``vme.ivt_frame``)."""
    st = cpu.state
    entry = cpu.mmu.read(vme.ivt_entry_address(vector), 4, False)
    push16(cpu, [image, st.segs[CS].selector, return_ip])
    cpu.set_eflags(eflags, IF | TF | VIF | RF)
    _load_cs(cpu, entry >> 16, entry & 0xFFFF)


def iret_virtual(cpu) -> None:
    """A 16-bit IRET in virtual-8086 mode below IOPL 3 under CR4.VME: IP, CS and FLAGS,
    the popped IF going to VIF (``vme.pop_virtual``: #GP(0) for TF, or IF with VIP)."""
    ip, cs, fl = pop16(cpu, vme.IRET16_WORDS, 2)
    if ip > cpu.state.segs[CS].limit:
        raise CpuFault(GP, 0)
    new = vme.pop_virtual(cpu.get_eflags(), fl)
    _drop(cpu, 3 * 2)
    cpu.set_eflags(new, vme.FLAGS16 | VIF)
    _load_cs(cpu, cs & 0xFFFF, ip)


def iret(cpu, size: int, mask: int = IRET_MASK) -> None:
    """IRET in real mode: IP, CS, FLAGS (EIP, CS, EFLAGS with an operand-size prefix);
    ``mask``: the EFLAGS bits besides the arithmetic ones it loads."""
    eip, cs, fl = pop16(cpu, 3, size)
    if eip > cpu.state.segs[CS].limit:
        raise CpuFault(GP, 0)
    if size == 2:
        mask &= 0xFFFF
    _drop(cpu, 3 * size)
    cpu.set_eflags(fl, mask)
    cpu.irq_check()
    _load_cs(cpu, cs & 0xFFFF, eip)


def far_transfer(cpu, sel: int, offset: int, size: int, call: bool, return_eip: int) -> None:
    """Far JMP or CALL in real mode: no descriptor, CS = sel, base sel * 16."""
    st = cpu.state
    if size == 2:
        offset &= 0xFFFF
    if offset > st.segs[CS].limit:
        raise CpuFault(GP, 0)
    if call:
        push16(cpu, [st.segs[CS].selector, return_eip], size)
    _load_cs(cpu, sel & 0xFFFF, offset)


def far_return(cpu, size: int, imm: int) -> None:
    """RETF [imm16] in real mode."""
    eip, cs = pop16(cpu, 2, size)
    if size == 2:
        eip &= 0xFFFF
    if eip > cpu.state.segs[CS].limit:
        raise CpuFault(GP, 0)
    _drop(cpu, 2 * size + imm)
    _load_cs(cpu, cs & 0xFFFF, eip)
