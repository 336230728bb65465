"""Control transfers that cross segments or privilege levels.

Interrupt and exception delivery through IDT gates (with the TSS stack switch),
IRET, far CALL/JMP (to code segments and through call gates) and far RET —
the machinery of SDM Vol. 3 §5.8 and §6.12 that decides what a ring may do.
Each function checks everything first, then pushes, then commits registers,
so a fault leaves the CPU as it was before the instruction.
"""

from __future__ import annotations

import struct

from . import realmode, tasks, vme
from .faults import GP, NP, SS, TS, CpuFault
from .segments import (CALL_GATE16, CALL_GATE32, INT_GATE16, INT_GATE32, TASK_GATE, TRAP_GATE16,
                       TSS16_AVAIL, TSS16_BUSY, TSS32_AVAIL, TSS32_BUSY, Descriptor,
                       TRAP_GATE32, check_access, null_segment)
from .state import ATTR_DB, ATTR_S, ATTR_UNUSABLE, CS, DS, ES, FS, GS, IF, IOPL_MASK, NT, RF, SS as SREG_SS, TF, VM, Segment

AC, ID, VIF, VIP = 0x40000, 0x200000, 0x80000, 0x100000
# usable, expand-up, writable data: an access within the limit passes ``check_access``
_EXPAND_UP_RW = ATTR_UNUSABLE | ATTR_S | 0xE
_EXPAND_UP_RW_DATA = ATTR_S | 0x2
_EXPAND_UP_RW_BIG = _EXPAND_UP_RW | ATTR_DB       # ... and 32-bit (B: ESP, 4 GiB wrap)
_EXPAND_UP_RW_DATA_BIG = _EXPAND_UP_RW_DATA | ATTR_DB
EFLAGS_DEFINED = 0x3F7FD5     # every EFLAGS bit that is not reserved (SDM Vol. 1 §3.4.3)


# a 32-bit frame of n values, as ``_push_frame`` stores it in one step
_FRAMES = {n: struct.Struct("<" + "I" * n) for n in range(1, 40)}
_FRAMES16 = {n: struct.Struct("<" + "H" * n) for n in range(1, 40)}


def _push_frame(cpu, ss: Segment, esp: int, vals, size: int, user: bool) -> int:
    """Write ``vals`` (first pushed first) below ``esp`` on stack ``ss``; return the new ESP."""
    n = len(vals)
    total = size * n
    attr = ss.attr
    if size == 4 and attr & _EXPAND_UP_RW_BIG == _EXPAND_UP_RW_DATA_BIG:
        # a 32-bit frame on a 32-bit expand-up writable stack (a kernel's): within the
        # limit and in one page whose write entry is in the TLB, no write can fault
        # and it is stored in one step (``check_access``'s rules, in line)
        new = (esp - total) & 0xFFFFFFFF
        if new + total - 1 <= ss.limit and new + total <= 0x100000000:
            lin = (ss.base + new) & 0xFFFFFFFF
            mmu = cpu.mmu
            if (lin & 0xFFF) + total <= 0x1000 and not mmu.watch:
                d = (mmu.tw_u if user else mmu.tw_s).get(lin & 0xFFFFF000)
                if d is not None:
                    a = lin + d
                    try:
                        cpu.mem.ram[a:a + total] = _FRAMES[n].pack(*reversed(vals))
                    except struct.error:        # (a value wider than 32 bits: its low half)
                        cpu.mem.ram[a:a + total] = _FRAMES[n].pack(
                            *(v & 0xFFFFFFFF for v in reversed(vals)))
                    return new
    big = attr & ATTR_DB
    m = 0xFFFFFFFF if big else 0xFFFF
    new = (esp - total) & m
    if new + total <= m + 1:
        # the frame is one run of bytes: one segment check covers it (the checks of
        # each value are the same test), and if it lies in one page whose write
        # entry is in the TLB, no write can fault and it is stored in one step
        lin = check_access(ss, new, total, True, SS)
        if (lin & 0xFFF) + total <= 0x1000 and not cpu.mmu.watch:
            d = (cpu.mmu.tw_u if user else cpu.mmu.tw_s).get(lin & 0xFFFFF000)
            if d is not None:
                mask = (1 << (8 * size)) - 1
                a = lin + d
                cpu.mem.ram[a:a + total] = struct.pack("<" + ("I" if size == 4 else "H") * n,
                                                       *(v & mask for v in reversed(vals)))
                return (esp & ~m & 0xFFFFFFFF) | new if not big else new
    addrs = []
    for j in range(n):
        off = (new + (n - 1 - j) * size) & m
        addrs.append(check_access(ss, off, size, True, SS))
    for a, v in zip(addrs, vals):
        cpu.mmu.write(a, size, v & ((1 << (8 * size)) - 1), user)
    return (esp & ~m & 0xFFFFFFFF) | new if not big else new


def _pop_values(cpu, n: int, size: int, skip: int = 0) -> list[int]:
    """Read ``n`` stack values starting ``skip`` bytes above ESP (no ESP change)."""
    vals = _peek_values(cpu, n, size, skip)
    if vals is not None:
        return vals
    st = cpu.state
    ss = st.segs[SREG_SS]
    m = 0xFFFFFFFF if ss.big else 0xFFFF
    out = []
    for j in range(n):
        off = (st.regs[4] + skip + j * size) & m
        out.append(cpu.mmu.read(check_access(ss, off, size, False, SS), size, cpu.cpl == 3))
    return out


def _peek_values(cpu, n: int, size: int, skip: int = 0) -> list[int] | None:
    """``_pop_values`` in one step if the values lie, within the stack's limits, in one
    page whose read entry is in the TLB (no read can fault); None otherwise."""
    st = cpu.state
    ss = st.segs[SREG_SS]
    m = 0xFFFFFFFF if ss.big else 0xFFFF
    start = (st.regs[4] + skip) & m
    total = n * size
    if start + total > m + 1:
        return None
    attr = ss.attr
    if attr & _EXPAND_UP_RW == _EXPAND_UP_RW_DATA:
        if start + total - 1 > ss.limit:
            return None
        lin = (ss.base + start) & 0xFFFFFFFF       # (check_access's rules, passed)
    else:
        try:
            lin = check_access(ss, start, total, False, SS)
        except CpuFault:
            return None
    mmu = cpu.mmu
    if (lin & 0xFFF) + total > 0x1000 or mmu.watch:
        return None
    d = (mmu.tr_u if cpu.cpl == 3 else mmu.tr_s).get(lin & 0xFFFFF000)
    if d is None:
        return None
    a = lin + d
    return (_FRAMES[n] if size == 4 else _FRAMES16[n]).unpack_from(cpu.mem.ram, a)


def _set_esp(cpu, ss: Segment, value: int) -> None:
    st = cpu.state
    if ss.big:
        st.regs[4] = value & 0xFFFFFFFF
    else:
        st.regs[4] = (st.regs[4] & 0xFFFF0000) | (value & 0xFFFF)


# The outcome of a delivery's checks, keyed by all it depends on: the gate's eight bytes,
# the vector, whether INT n raised it and the CPL; the value holds the code segment's
# eight bytes it was checked against, which are read at every delivery (as the gate's
# are), so a changed IDT or GDT entry is seen at once.  Only interrupt and trap gates
# to an accessed code segment are kept (using them again writes nothing); the stack of
# a privilege change is read from the TSS and checked (``check_new_ss``'s cache) each
# time.  A kernel's system call and its timer interrupt take the same few each time.
_DELIVERIES: dict[tuple[int, int, bool, int], tuple] = {}


def deliver(cpu, vector: int, error_code: int | None, soft: bool, return_eip: int) -> None:
    """Enter the handler for ``vector`` through the IDT (or, in real mode, the IVT)."""
    mode = cpu.mode
    if mode.real:
        return realmode.deliver(cpu, vector, return_eip)
    st = cpu.state
    seg = cpu.segmentation
    ext = 0 if soft else 1
    if vector * 8 + 7 > st.idtr.limit:
        raise CpuFault(GP, vector * 8 + 2 + ext)
    raw = seg.raw_at((st.idtr.base + vector * 8) & 0xFFFFFFFF)
    cpl = cpu.cpl
    hit = _DELIVERIES.get((raw, vector, soft, cpl))
    if hit is not None and not mode.vm86:
        sel, craw, offset, size, new_cpl, new_cs, clear = hit
        # (the gate passed its checks: the code segment's descriptor is read next)
        if (seg.gdt_raw(sel) or seg.entry(sel, GP, ext)[1]) == craw:
            eflags = st.get_eflags()
            segs = st.segs
            if new_cpl != cpl:
                ss_sel, new_esp = seg.load_tss_stack(new_cpl, ext)
                new_ss = seg.check_new_ss(ss_sel, new_cpl, ext)
                frame = (segs[SREG_SS].selector, st.regs[4], eflags, segs[CS].selector, return_eip)
                st.regs[4] = _push_frame(cpu, new_ss, new_esp, frame if error_code is None
                                         else frame + (error_code,), size, new_cpl == 3)
                segs[SREG_SS] = new_ss
            else:
                new_ss = segs[SREG_SS]
                frame = (eflags, segs[CS].selector, return_eip)
                _set_esp(cpu, new_ss, _push_frame(cpu, new_ss, st.regs[4], frame if error_code
                                                  is None else frame + (error_code,), size, cpl == 3))
            segs[CS] = new_cs
            st.eflags &= clear
            st.eip = offset
            cpu.deliveries += 1
            cpu.mode_changed()
            return
    gate = cpu.segmentation.read_at((st.idtr.base + vector * 8) & 0xFFFFFFFF)
    check_gate(gate, vector, soft, cpl)
    if gate.type == TASK_GATE:
        return _deliver_to_task(cpu, vector, gate, error_code, return_eip, ext)
    sel = gate.gate_selector
    cd = seg.check_code_target(sel, ext)
    check_handler_cs(cd, sel, cpl, ext)
    vm86 = mode.vm86
    if vm86 and (cd.conforming or cd.dpl != 0):
        # out of virtual-8086 mode only to a ring-0, non-conforming handler (SDM Vol. 2
        # INT n: INTER-PRIVILEGE-LEVEL-INTERRUPT with VM = 1)
        raise CpuFault(GP, (sel & 0xFFFC) | ext)
    gate32 = bool(gate.type & 8)
    size = 4 if gate32 else 2
    offset = gate.gate_offset if gate32 else gate.gate_offset & 0xFFFF
    if offset > cd.limit:
        raise CpuFault(GP, ext)
    new_cpl = cd.dpl if not cd.conforming and cd.dpl < cpl else cpl
    clear = TF | NT | RF | VM
    if gate.type in (INT_GATE16, INT_GATE32):
        clear |= IF
    if not vm86 and cd.raw >> 40 & 1:
        if len(_DELIVERIES) > 1024:       # a guest writing random tables cannot grow it
            _DELIVERIES.clear()
        _DELIVERIES[(gate.raw, vector, soft, cpl)] = (sel, cd.raw, offset, size, new_cpl,
                                                      cd.segment((sel & 0xFFFC) | new_cpl),
                                                      ~clear & 0xFFFFFFFF)
    eflags = cpu.get_eflags()
    old_cs = st.segs[CS].selector
    err = [] if error_code is None else [error_code]
    if new_cpl != cpl:
        ss_sel, new_esp = seg.load_tss_stack(new_cpl, ext)
        new_ss = seg.check_new_ss(ss_sel, new_cpl, ext)
        vals = [st.segs[SREG_SS].selector, st.regs[4], eflags, old_cs, return_eip] + err
        if vm86:
            # INTERRUPT-FROM-VIRTUAL-8086-MODE: GS, FS, DS and ES go on the ring-0 stack
            # above the usual frame, and are then null (§20.3.1.1, Figure 20-2)
            vals = [st.segs[i].selector for i in (GS, FS, DS, ES)] + vals
        esp = _push_frame(cpu, new_ss, new_esp, vals, size, new_cpl == 3)
        if vm86:
            for i in (ES, DS, FS, GS):
                st.segs[i] = null_segment(0)
    else:
        new_ss = st.segs[SREG_SS]
        esp = _push_frame(cpu, new_ss, st.regs[4], [eflags, old_cs, return_eip] + err, size,
                          cpl == 3)
    seg.set_accessed(cd)
    st.segs[CS] = cd.segment((sel & 0xFFFC) | new_cpl)
    if new_ss is not st.segs[SREG_SS]:
        st.segs[SREG_SS] = new_ss
        st.regs[4] = esp
    else:
        _set_esp(cpu, new_ss, esp)
    st.eflags &= ~clear
    st.eip = offset
    cpu.deliveries += 1
    cpu.mode_changed()


def _deliver_to_task(cpu, vector: int, gate: Descriptor, error_code: int | None,
                     return_eip: int, ext: int) -> None:
    """An interrupt or exception through a task gate: a nested task switch (SDM Vol. 3
    §6.12.2), then the error code, if any, pushed on the new task's stack in the size
    of its TSS."""
    big = tasks.switch(cpu, vector * 8, gate, tasks.CALL, return_eip, ext, idt=True)
    # a gate transfer like the others: INT n through a task gate with TF set owes no
    # single-step trap in the new task (as QEMU: the INT n rule, SDM Vol. 3 §17.3.1.4)
    cpu.deliveries += 1
    if error_code is not None:
        st = cpu.state
        try:
            esp = _push_frame(cpu, st.segs[SREG_SS], st.regs[4], [error_code], 4 if big else 2,
                              cpu.cpl == 3)
        except CpuFault as f:
            f.in_new_task = True
            raise
        _set_esp(cpu, st.segs[SREG_SS], esp)


# -- the rules, on descriptors already read (the monitors apply them to their guests') -----
def check_gate(gate: Descriptor, vector: int, soft: bool, cpl: int) -> None:
    """An IDT gate for ``vector`` (SDM Vol. 3 §6.12.1.1; error codes per §6.13: the IDT
    bit, and EXT unless INT n/INT3/INTO raised it)."""
    idt_err = vector * 8 + 2 + (0 if soft else 1)
    if gate.s or gate.type not in (INT_GATE16, TRAP_GATE16, INT_GATE32, TRAP_GATE32, TASK_GATE):
        raise CpuFault(GP, idt_err)
    if soft and gate.dpl < cpl:
        raise CpuFault(GP, vector * 8 + 2)
    if not gate.present:
        raise CpuFault(NP, idt_err)


def check_handler_cs(cd: Descriptor, sel: int, cpl: int, ext: int) -> None:
    """The code segment a gate leads to (after ``check_code_target``)."""
    if cd.dpl > cpl:
        raise CpuFault(GP, (sel & 0xFFFC) | ext)
    if not cd.present:
        raise CpuFault(NP, (sel & 0xFFFC) | ext)


def check_far_code(d: Descriptor, sel: int, cpl: int) -> None:
    """A far JMP or CALL straight to a code segment (SDM Vol. 3 §5.8.1)."""
    err = sel & 0xFFFC
    if d.conforming:
        if d.dpl > cpl:
            raise CpuFault(GP, err)
    elif (sel & 3) > cpl or d.dpl != cpl:
        raise CpuFault(GP, err)
    if not d.present:
        raise CpuFault(NP, err)


def check_return_cs(d: Descriptor, sel: int, cpl: int) -> None:
    """The CS an IRET or far RET returns to (SDM Vol. 2 IRET, RET)."""
    err = sel & 0xFFFC
    rpl = sel & 3
    if not d.is_code or rpl < cpl:
        raise CpuFault(GP, err)
    if d.conforming and d.dpl > rpl:
        raise CpuFault(GP, err)
    if not d.conforming and d.dpl != rpl:
        raise CpuFault(GP, err)
    if not d.present:
        raise CpuFault(NP, err)


def check_return_ss(d: Descriptor, sel: int, rpl_cs: int) -> None:
    """The SS an IRET or far RET to an outer ring loads."""
    err = sel & 0xFFFC
    if sel & 3 != rpl_cs or not d.writable or d.dpl != rpl_cs:
        raise CpuFault(GP, err)
    if not d.present:
        raise CpuFault(SS, err)


# The outcome of a return's checks on a CS or SS descriptor, keyed by all it depends
# on (which register, the selector, the descriptor's eight bytes, the CPL or the CS's
# RPL): the bytes are read at every return, so a changed table is seen at once; only
# descriptors already accessed are kept (loading them again writes nothing).  An
# IRET to user mode and a monitor's return to its guest check the same few each time.
_RETURNS: dict[tuple[bool, int, int, int], Segment] = {}


def _check_return_cs(cpu, sel: int, level: int) -> tuple[Segment, Descriptor | None]:
    """The CS a return at CPL ``level`` loads, and its descriptor if loading it sets
    the accessed bit (at the commit: ``_commit_cs``)."""
    if (sel & 0xFFFC) == 0:
        raise CpuFault(GP, 0)
    seg = cpu.segmentation
    raw = seg.gdt_raw(sel)
    if raw is None:
        raw = seg.entry(sel)[1]
    hit = _RETURNS.get((False, sel, raw, level))
    if hit is not None:
        return hit, None
    d = Descriptor(raw, seg.table_address(sel))
    check_return_cs(d, sel, level)
    if not raw >> 40 & 1:
        return d.segment(sel), d
    return _keep((False, sel, raw, level), d.segment(sel)), None


def _commit_cs(cpu, new_cs: Segment, d: Descriptor | None) -> Segment:
    """The CS segment to load: ``new_cs``, or, if its descriptor's accessed bit was
    clear, the descriptor's with the bit now set in the table and in the cache."""
    if d is None:
        return new_cs
    cpu.segmentation.set_accessed(d)
    return d.segment(new_cs.selector)


def _check_return_ss(cpu, sel: int, rpl_cs: int) -> Segment:
    if (sel & 0xFFFC) == 0:
        raise CpuFault(GP, 0)
    seg = cpu.segmentation
    raw = seg.gdt_raw(sel)
    if raw is None:
        raw = seg.entry(sel)[1]
    hit = _RETURNS.get((True, sel, raw, rpl_cs))
    if hit is not None:
        return hit
    d = Descriptor(raw, seg.table_address(sel))
    check_return_ss(d, sel, rpl_cs)
    if raw >> 40 & 1:
        return _keep((True, sel, raw, rpl_cs), d.segment(sel))
    seg.set_accessed(d)
    return d.segment(sel)


def _keep(key: tuple[bool, int, int, int], new: Segment) -> Segment:
    # (the Segment itself, shared: nothing changes a Segment in place)
    if len(_RETURNS) > 1024:          # a guest writing random tables cannot grow it
        _RETURNS.clear()
    _RETURNS[key] = new
    return new


def check_task_return(link: int, read_descriptor) -> Descriptor:
    """IRET with NT set returns to the task in the TSS back link ``link`` (SDM Vol. 2
    IRET: TASK-RETURN): it must be a busy TSS in the GDT (#TS(link) otherwise).  Its
    descriptor; ``read_descriptor(sel)`` reads a GDT entry (the monitors pass the
    guest's GDT)."""
    if link & 4:
        raise CpuFault(TS, link & 0xFFFC)
    d = read_descriptor(link)
    if d.s or d.type not in (TSS16_BUSY, TSS32_BUSY):
        raise CpuFault(TS, link & 0xFFFC)
    return d


def task_return(cpu, next_eip: int) -> None:
    """IRET with NT set: the checks, then the switch to the task in the back link."""
    link = cpu.mmu.read(cpu.state.tr.base, 2, False)
    d = check_task_return(link, lambda sel: cpu.segmentation.read_descriptor(sel, TS))
    tasks.switch(cpu, link, d, tasks.IRET, next_eip)


def _iret_mask(size: int, cpl: int, if_allowed: bool) -> int:
    """The EFLAGS bits an IRET of ``size`` at ``cpl`` loads (SDM Vol. 2 IRET: IF only at
    CPL <= IOPL, IOPL, VIF and VIP only at CPL 0, RF, AC and ID only in 32 bits)."""
    mask = 0x1 | 0x4 | 0x10 | 0x40 | 0x80 | TF | 0x400 | 0x800 | NT
    if size == 4:
        mask |= RF | AC | ID
    if if_allowed:
        mask |= IF
    if cpl == 0:
        mask |= IOPL_MASK
        if size == 4:
            mask |= VIF | VIP
    return mask


# [32-bit][CPL][CPL <= IOPL]
_IRET_MASKS = tuple(tuple(tuple(_iret_mask(4 if big else 2, cpl, ok) for ok in (False, True))
                          for cpl in range(4)) for big in (False, True))


def iret(cpu, size: int, next_eip: int | None = None, frame: tuple | None = None,
         ring0: bool = False) -> None:
    """IRET (same privilege or to an outer ring, or a task return; or in real mode).
    ``next_eip`` is the address after the IRET (saved in the TSS by a task return).
    ``frame``: the values on the stack (EIP, CS, EFLAGS, ESP, SS), given by ring-0
    software returning from its own stack, whose reads cannot fault (``Cpu.iret``);
    ``ring0``: executed by such software for a processor whose gate was handed off
    without entering ring 0 (native.py): as at CPL 0 with NT clear (the gate cleared
    it), on a ``frame`` without VM."""
    if not (cpu.nonroot and cpu.vmx.iret_unblocks()):
        cpu.state.nmi_blocked = False     # IRET ends NMI blocking (SDM Vol. 3 §6.7.1)
        if cpu.state.nmi_pending:
            cpu.limit = 0
    st = cpu.state
    if not ring0:
        mode = cpu.mode
        if mode.real:
            return realmode.iret(cpu, size)
        if mode.vm86:
            # IOPL-sensitive in virtual-8086 mode; at IOPL 3 a real-mode IRET that leaves
            # IOPL (and VM) as they are (SDM Vol. 2 IRET, §20.2.7); below it, with
            # CR4.VME, a 16-bit IRET on the virtual interrupt flag
            rule = vme.flags_rule(st.cr4, st.eflags, size)
            if rule == vme.FAULT:
                raise CpuFault(GP, 0)
            if rule == vme.VIRTUAL:
                return realmode.iret_virtual(cpu)
            return realmode.iret(cpu, size, realmode.VM86_IRET_MASK)
        if st.eflags & NT:
            return task_return(cpu, st.eip if next_eip is None else next_eip)
    if frame is None:
        # the five values of a return to an outer ring in one read, if they lie in one
        # page the TLB holds and within the stack's limit (reading more than a return
        # to the same ring pops has no effect then); otherwise three, and two later
        frame = _peek_values(cpu, 5, size) or _pop_values(cpu, 3, size)
    eip, cs_sel, fl = frame[:3]
    cs_sel &= 0xFFFF
    old_cpl = 0 if ring0 else cpu.cpl
    if size == 4 and fl & VM and old_cpl == 0:
        return _return_to_vm86(cpu, eip, cs_sel, fl)
    new_cs, d = _check_return_cs(cpu, cs_sel, old_cpl)
    rpl = cs_sel & 3
    outer = rpl > old_cpl
    if outer:
        new_esp, ss_sel = frame[3:5] if len(frame) == 5 else _pop_values(cpu, 2, size, 3 * size)
        new_ss = _check_return_ss(cpu, ss_sel & 0xFFFF, rpl)
    if eip > new_cs.limit:
        raise CpuFault(GP, 0)
    # commit
    st.set_eflags(fl, _IRET_MASKS[size == 4][old_cpl][old_cpl <= (st.eflags & IOPL_MASK) >> 12])
    segs = st.segs
    segs[CS] = new_cs if d is None else _commit_cs(cpu, new_cs, d)
    st.eip = eip if size == 4 else eip & 0xFFFF
    if outer:
        segs[SREG_SS] = new_ss
        if new_ss.attr & ATTR_DB:
            st.regs[4] = new_esp & 0xFFFFFFFF
        else:
            _set_esp(cpu, new_ss, new_esp)
        cpu.segmentation.null_outer_data_segments(rpl)
    else:
        _set_esp(cpu, segs[SREG_SS], st.regs[4] + 3 * size)
    cpu.mode_changed()


def _return_to_vm86(cpu, eip: int, cs_sel: int, fl: int) -> None:
    """IRET at CPL 0 with VM set in the popped EFLAGS (SDM Vol. 2 IRET:
    RETURN-TO-VIRTUAL-8086-MODE): ESP, SS, ES, DS, FS and GS follow on the stack, all
    six segment registers are loaded as in real mode, and EFLAGS is loaded whole."""
    st = cpu.state
    esp, ss, es, ds, fs, gs = _pop_values(cpu, 6, 4, 12)
    cpu.set_eflags(fl, EFLAGS_DEFINED)
    for i, v in ((CS, cs_sel), (SREG_SS, ss), (ES, es), (DS, ds), (FS, fs), (GS, gs)):
        st.segs[i] = realmode.vm86_segment(v)
    st.eip = eip & 0xFFFF      # (QEMU helper_iret_protected: new_eip & 0xffff)
    st.regs[4] = esp
    cpu.irq_check()
    cpu.mode_changed()


def far_return(cpu, size: int, imm: int) -> None:
    """RETF [imm16]."""
    if cpu.mode.real or cpu.mode.vm86:
        return realmode.far_return(cpu, size, imm)
    st = cpu.state
    eip, cs_sel = _pop_values(cpu, 2, size)
    cs_sel &= 0xFFFF
    old_cpl = cpu.cpl
    new_cs, d = _check_return_cs(cpu, cs_sel, old_cpl)
    rpl = cs_sel & 3
    outer = rpl > old_cpl
    if outer:
        new_esp, ss_sel = _pop_values(cpu, 2, size, 2 * size + imm)
        new_ss = _check_return_ss(cpu, ss_sel & 0xFFFF, rpl)
    if eip > new_cs.limit:
        raise CpuFault(GP, 0)
    st.segs[CS] = _commit_cs(cpu, new_cs, d)
    st.eip = eip if size == 4 else eip & 0xFFFF
    if outer:
        st.segs[SREG_SS] = new_ss
        _set_esp(cpu, new_ss, new_esp + imm)
        cpu.segmentation.null_outer_data_segments(rpl)
    else:
        _set_esp(cpu, st.segs[SREG_SS], st.regs[4] + 2 * size + imm)
    cpu.mode_changed()


def far_transfer(cpu, sel: int, offset: int, size: int, call: bool, return_eip: int) -> None:
    """Far JMP or CALL to ``sel:offset``: a code segment or a call gate."""
    if cpu.mode.real or cpu.mode.vm86:
        return realmode.far_transfer(cpu, sel, offset, size, call, return_eip)
    st = cpu.state
    seg = cpu.segmentation
    cpl = cpu.cpl
    sel &= 0xFFFF
    if (sel & 0xFFFC) == 0:
        raise CpuFault(GP, 0)
    d = seg.read_descriptor(sel)
    err = sel & 0xFFFC
    rpl = sel & 3
    if d.is_code:
        check_far_code(d, sel, cpl)
        if size == 2:
            offset &= 0xFFFF
        if offset > d.limit:
            raise CpuFault(GP, 0)
        return _same_level(cpu, d, sel, offset, size, call, return_eip)
    if not d.s and d.type in (TASK_GATE, TSS16_AVAIL, TSS32_AVAIL):
        # a task switch (SDM Vol. 3 §7.3): the TSS or gate must be as privileged as the
        # caller and the selector's RPL (a busy TSS is no target: #GP below)
        if d.dpl < cpl or d.dpl < rpl or (sel & 4 and d.type != TASK_GATE):
            raise CpuFault(GP, err)      # (a TSS descriptor lives in the GDT only)
        tasks.switch(cpu, sel, d, tasks.CALL if call else tasks.JMP, return_eip)
        return
    if d.s or d.type not in (CALL_GATE16, CALL_GATE32):
        raise CpuFault(GP, err)
    # through a call gate
    if d.dpl < cpl or d.dpl < rpl:
        raise CpuFault(GP, err)
    if not d.present:
        raise CpuFault(NP, err)
    gsel = d.gate_selector
    cd = seg.check_code_target(gsel)
    gerr = gsel & 0xFFFC
    if cd.dpl > cpl:
        raise CpuFault(GP, gerr)
    if not call and ((not cd.conforming and cd.dpl != cpl)):
        raise CpuFault(GP, gerr)
    if not cd.present:
        raise CpuFault(NP, gerr)
    gsize = 4 if d.type == CALL_GATE32 else 2
    target = d.gate_offset if gsize == 4 else d.gate_offset & 0xFFFF
    if target > cd.limit:
        raise CpuFault(GP, 0)
    if call and not cd.conforming and cd.dpl < cpl:
        new_cpl = cd.dpl
        ss_sel, new_esp = seg.load_tss_stack(new_cpl, 0)
        new_ss = seg.check_new_ss(ss_sel, new_cpl, 0)
        nparams = d.gate_params
        # parameters keep their order on the new stack: the one at the old ESP ends up lowest
        params = _pop_values(cpu, nparams, gsize) if nparams else []
        vals = [st.segs[SREG_SS].selector, st.regs[4]] + list(params[::-1]) + \
            [st.segs[CS].selector, return_eip]
        esp = _push_frame(cpu, new_ss, new_esp, vals, gsize, new_cpl == 3)
        seg.set_accessed(cd)
        st.segs[CS] = cd.segment((gsel & 0xFFFC) | new_cpl)
        st.segs[SREG_SS] = new_ss
        st.regs[4] = esp
    else:
        return _same_level(cpu, cd, gsel, target, gsize, call, return_eip)
    st.eip = target
    cpu.mode_changed()


def _same_level(cpu, d: Descriptor, sel: int, offset: int, size: int, call: bool,
                return_eip: int) -> None:
    """Enter code segment ``d`` at the current privilege level (pushing CS:EIP for a CALL)."""
    st = cpu.state
    cpl = cpu.cpl
    if call:
        esp = _push_frame(cpu, st.segs[SREG_SS], st.regs[4],
                          [st.segs[CS].selector, return_eip], size, cpl == 3)
        _set_esp(cpu, st.segs[SREG_SS], esp)
    cpu.segmentation.set_accessed(d)
    st.segs[CS] = d.segment((sel & 0xFFFC) | cpl)
    st.eip = offset
    cpu.mode_changed()
