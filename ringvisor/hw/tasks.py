"""Hardware task switching (SDM Vol. 3 ch. 7).

A far JMP or CALL to a TSS descriptor or a task gate, an interrupt or exception
through a task gate in the IDT, and IRET with EFLAGS.NT set switch tasks: the
outgoing state is saved into the current TSS, the incoming one is loaded from
the new TSS, and the busy bits, the back link and NT record the nesting.

Everything that can fault before the *commit point* (the TSS descriptor, its
limit, the pages of both TSSes) is checked first, so such a fault leaves the
old task as it was.  After the commit point (the new TR, CR3, EFLAGS, EIP and
registers are in place), the LDT and segment-register loads of the new task
can still fault: those exceptions are delivered in the new task's context
(``CpuFault.in_new_task``), as the SDM's Table 7-1 describes.  The order of the
checks and their error codes follow the SDM and QEMU's ``switch_tss_ra``.
"""

from __future__ import annotations

from . import realmode
from .faults import DB, GP, NP, SS, TS, CpuFault, VmExitFault
from .segments import (LDT, TASK_GATE, TSS16_AVAIL, TSS16_BUSY, TSS32_AVAIL, TSS32_BUSY,
                       Descriptor, null_segment)
from .state import (CR0_PG, CR3_MASK, CR0_TS, CS, DS, ES, FS, GS, NT, SS as SREG_SS, VM, Segment)
from .vmcs import (EXIT_TASK_SWITCH, TS_SOURCE_CALL, TS_SOURCE_IDT, TS_SOURCE_IRET,
                   TS_SOURCE_JMP)

JMP, CALL, IRET = "jmp", "call", "iret"   # what started the switch (an interrupt is a CALL)
BUSY = 2                                   # the busy bit in a TSS descriptor's type
TSS_TYPES = (TSS16_AVAIL, TSS16_BUSY, TSS32_AVAIL, TSS32_BUSY)
DR6_BT = 0x8000
DR7_LOCAL = 0x55                           # L0..L3: cleared by a task switch (SDM §17.2.4)

# the layouts (SDM Vol. 3 Fig. 7-2 and 7-11): offsets of EIP, EFLAGS, the eight
# general registers, the segment selectors (ES CS SS DS [FS GS]) and the LDT selector
TSS32 = {"eip": 0x20, "eflags": 0x24, "regs": 0x28, "segs": 0x48, "ldt": 0x60, "size": 4,
         "seg_step": 4, "nsegs": 6, "min_limit": 0x67}
TSS16 = {"eip": 0x0E, "eflags": 0x10, "regs": 0x12, "segs": 0x22, "ldt": 0x2A, "size": 2,
         "seg_step": 2, "nsegs": 4, "min_limit": 0x2B}


class TaskSwitchExit(VmExitFault):
    """A task switch attempted in VMX non-root operation: a VM exit (reason 9), fault-like
    (the guest's state is the one before the switch), with the TSS selector and the
    source in the qualification and the instruction's length (for an event through a
    task gate, the IDT-vectoring information says which; SDM Vol. 3C §25.4.2, §27.2.1)."""

    __slots__ = ("qualification", "length")

    def __init__(self, sel: int, source: str, idt: bool, length: int) -> None:
        super().__init__(-1)
        src = TS_SOURCE_IDT if idt else {CALL: TS_SOURCE_CALL, IRET: TS_SOURCE_IRET,
                                         JMP: TS_SOURCE_JMP}[source]
        self.qualification = (sel & 0xFFFF) | src << 30
        self.length = 0 if idt else length & 0xF

    def take(self, vmx) -> None:
        vmx.exit(EXIT_TASK_SWITCH, self.qualification, self.length)

    def __str__(self) -> str:
        return f"task switch to {self.qualification & 0xFFFF:#06x} (a VM exit)"


def layout(tss_type: int) -> dict:
    return TSS32 if tss_type & 8 else TSS16


def target_tss(cpu, sel: int, d: Descriptor, ext: int) -> tuple[int, Descriptor]:
    """The TSS a switch to ``sel`` (a TSS descriptor or a task gate) goes to, with the
    checks of SDM Vol. 3 §7.3 steps 1-3 (the DPL rules are the caller's)."""
    if d.type == TASK_GATE:
        if not d.present:
            raise CpuFault(NP, (sel & 0xFFFC) | ext)
        tss_sel = d.gate_selector
        if tss_sel & 4:                              # a TSS lives in the GDT only
            raise CpuFault(TS, (tss_sel & 0xFFFC) | ext)
        d = cpu.segmentation.read_descriptor(tss_sel, GP, ext)
        if d.s or d.type not in TSS_TYPES:
            raise CpuFault(GP, (tss_sel & 0xFFFC) | ext)
        sel = tss_sel
    if not d.present:
        raise CpuFault(NP, (sel & 0xFFFC) | ext)
    if d.limit < layout(d.type)["min_limit"]:
        raise CpuFault(TS, (sel & 0xFFFC) | ext)
    return sel, d


def check_busy(d: Descriptor, source: str, err: int) -> None:
    """IRET returns to a busy task; anything else goes to an available one (a task cannot
    be re-entered: SDM Vol. 3 §7.2.1, §7.3 step 3)."""
    busy = bool(d.type & BUSY)
    if source == IRET and not busy:
        raise CpuFault(TS, err)
    if source != IRET and busy:
        raise CpuFault(GP, err)


def incoming(d: Descriptor, read) -> tuple:
    """The new task's state from its TSS ``d`` (``read(offset, size)``): CR3 (None in a
    16-bit TSS), EIP, EFLAGS, the eight registers, the six selectors (ES CS SS DS FS GS:
    FS and GS 0 in a 16-bit TSS), the LDT selector and the T bit."""
    new = layout(d.type)
    size = new["size"]
    return (read(0x1C, 4) if d.type & 8 else None, read(new["eip"], size),
            read(new["eflags"], size), [read(new["regs"] + i * size, size) for i in range(8)],
            [read(new["segs"] + i * new["seg_step"], 2) for i in range(new["nsegs"])]
            + [0] * (6 - new["nsegs"]),
            read(new["ldt"], 2), read(0x64, 2) & 1 if d.type & 8 else 0)


def outgoing(old: dict, write, eip: int, eflags: int, regs, selectors) -> None:
    """The outgoing task's state into its TSS (layout ``old``; ``write(offset, size,
    value)``): EIP, EFLAGS, the eight registers, the selectors its layout holds."""
    osize = old["size"]
    write(old["eip"], osize, eip)
    write(old["eflags"], osize, eflags)
    for i in range(8):
        write(old["regs"] + i * osize, osize, regs[i])
    for i in range(old["nsegs"]):
        write(old["segs"] + i * old["seg_step"], 2, selectors[i])


def switch(cpu, sel: int, d: Descriptor, source: str, next_eip: int, ext: int = 0,
           idt: bool = False) -> bool:
    """Switch to the task ``sel``/``d`` (a TSS descriptor or task gate already read and
    checked for privilege).  ``next_eip`` is the EIP saved in the outgoing TSS; ``idt``:
    an event through a task gate in the IDT (a CALL otherwise).  Returns whether the
    new TSS is a 32-bit one (an exception's error code is pushed in its size)."""
    st = cpu.state
    mmu = cpu.mmu
    sel, d = target_tss(cpu, sel, d, ext)
    check_busy(d, source, (sel & 0xFFFC) | ext)
    if cpu.nonroot:
        # in VMX non-root operation a task switch exits once the gate and the TSS
        # descriptor passed their checks (type, busy, P, limit: SDM Vol. 3C §25.4.2);
        # whether page faults on the TSSes come first is implementation-specific:
        # here the exit does, and the monitor finds them
        raise TaskSwitchExit(sel, source, idt, next_eip - st.eip)
    size = layout(d.type)["size"]

    # -- read the whole incoming state (a fault here is the old task's) ---------------
    new_cr3, new_eip, new_eflags, new_regs, new_segs, new_ldt, trap = incoming(
        d, lambda off, n: mmu.read((d.base + off) & 0xFFFFFFFF, n, False))
    # the outgoing TSS must be writable where the state goes, and the descriptors whose
    # busy bits change must be reachable: page faults come now, not half-way
    old_tr = st.tr
    old = layout(old_tr.type)
    for off in (0, old["min_limit"]):
        mmu.walk((old_tr.base + off) & 0xFFFFFFFF, True, False)
    if source == CALL:
        mmu.walk(d.base, True, False)
    gdt = st.gdtr.base
    old_desc = (gdt + (old_tr.selector & 0xFFF8)) & 0xFFFFFFFF
    for a in (old_desc, d.addr):
        mmu.walk((a + 5) & 0xFFFFFFFF, True, False)

    # -- the outgoing task --------------------------------------------------------------
    if source in (JMP, IRET):
        _set_busy(cpu, old_desc, False)
    old_eflags = cpu.get_eflags()
    if source == IRET:
        old_eflags &= ~NT

    def wr(off: int, n: int, v: int) -> None:
        mmu.write((old_tr.base + off) & 0xFFFFFFFF, n, v & ((1 << (8 * n)) - 1), False)

    outgoing(old, wr, next_eip, old_eflags, st.regs, [s.selector for s in st.segs])
    if source == CALL:
        mmu.write(d.base, 2, old_tr.selector, False)
        new_eflags |= NT
    if source in (JMP, CALL):
        _set_busy(cpu, d.addr, True)

    # -- the commit point: from here on a fault belongs to the new task ----------------
    st.cr0 |= CR0_TS
    st.tr = Segment(sel, d.base, d.limit, d.attr | BUSY)
    bad_pdpte = False
    if new_cr3 is not None and st.cr0 & CR0_PG:
        try:                              # PAE: the PDPTEs load with CR3 (SDM Vol. 3A §4.4.1)
            mmu.reload_pdptes(st.cr0, st.cr4, new_cr3)
        except CpuFault:
            bad_pdpte = True              # a reserved bit: #GP(0), in the new task
        st.cr3 = new_cr3 & CR3_MASK
        cpu.tlb_flush()
    st.eip = new_eip
    if size == 4:
        cpu.set_eflags(new_eflags)
        st.regs[:] = new_regs
    else:
        cpu.set_eflags(new_eflags, 0xFFFF)
        st.regs[:] = [(r & 0xFFFF0000) | v for r, v in zip(st.regs, new_regs)]
    # the selectors first, with empty caches (QEMU does the same): a fault while
    # loading them leaves the rest of the new task's selectors visible to its handler
    for i in range(6):
        st.segs[i] = Segment(new_segs[i], 0, 0, 0)
    st.ldtr = null_segment(new_ldt & ~4)
    if st.dr[7] & DR7_LOCAL:
        st.dr[7] &= ~DR7_LOCAL
        cpu.update_debug()
    try:
        _load_ldt(cpu, new_ldt, ext)
        if st.eflags & VM:
            # a 32-bit TSS whose EFLAGS has VM set: the task runs in virtual-8086 mode,
            # its six selectors taken as real-mode paragraphs, unchecked (SDM Vol. 3
            # §20.2.5; QEMU switch_tss_ra: load_seg_vm)
            for i in range(6):
                st.segs[i] = realmode.vm86_segment(new_segs[i])
        else:
            cpl = new_segs[CS] & 3
            for i in (CS, SREG_SS, ES, DS, FS, GS):
                _load_segment(cpu, i, new_segs[i], cpl, ext)
        if bad_pdpte:                    # (its handler runs on the new task's segments)
            raise CpuFault(GP, 0)
        if new_eip > st.segs[CS].limit:
            raise CpuFault(GP, ext)
        if trap:                                 # the T bit: #DB once the switch is done
            st.dr[6] |= DR6_BT
            raise CpuFault(DB)
    except CpuFault as f:
        f.in_new_task = True
        cpu.mode_changed()
        raise
    cpu.mode_changed()
    return bool(d.type & 8)


def _set_busy(cpu, desc_addr: int, busy: bool) -> None:
    a = (desc_addr + 5) & 0xFFFFFFFF
    b = cpu.mmu.read(a, 1, False)
    cpu.mmu.write(a, 1, (b | BUSY) if busy else (b & ~BUSY), False)


def _load_ldt(cpu, sel: int, ext: int) -> None:
    """The new task's LDTR (SDM Table 7-1: every failure is #TS(LDT selector))."""
    if sel & 4:
        raise CpuFault(TS, (sel & 0xFFFC) | ext)
    if not sel & 0xFFFC:
        return
    d = cpu.segmentation.read_descriptor(sel, TS, ext)
    if d.s or d.type != LDT or not d.present:
        raise CpuFault(TS, (sel & 0xFFFC) | ext)
    cpu.state.ldtr = d.segment(sel)


def _load_segment(cpu, sreg: int, sel: int, cpl: int, ext: int) -> None:
    """A segment register of the new task, with the checks of SDM Vol. 3 Table 7-1:
    #TS(selector) for the type and privilege rules, #NP or #SS(selector) if absent."""
    st = cpu.state
    seg = cpu.segmentation
    d = task_segment(seg.read_descriptor, sreg, sel, cpl, ext)
    if d is None:
        st.segs[sreg] = null_segment(sel)
        return
    seg.set_accessed(d)
    st.segs[sreg] = d.segment(sel)


def task_segment(read_descriptor, sreg: int, sel: int, cpl: int, ext: int) -> Descriptor | None:
    """Table 7-1's checks of the new task's ``sel`` for segment register ``sreg``, its
    descriptor read by ``read_descriptor(sel, TS, ext)``: #TS(selector) for a null CS or
    SS and for the type and privilege rules, #NP or #SS(selector) if absent.  The
    descriptor, or None for a null selector in a data segment register.  (The monitors'
    task switches use them too.)"""
    err = (sel & 0xFFFC) | ext
    if not sel & 0xFFFC:
        if sreg in (CS, SREG_SS):
            raise CpuFault(TS, err)
        return None
    d = read_descriptor(sel, TS, ext)
    rpl = sel & 3
    if not d.s:
        raise CpuFault(TS, err)
    if sreg == CS:
        if not d.is_code or (d.dpl > rpl if d.conforming else d.dpl != rpl):
            raise CpuFault(TS, err)
    elif sreg == SREG_SS:
        if not d.writable or d.dpl != cpl or rpl != cpl:
            raise CpuFault(TS, err)
    else:
        if d.is_code and not d.readable:
            raise CpuFault(TS, err)
        if (d.is_data or not d.conforming) and (d.dpl < cpl or d.dpl < rpl):
            raise CpuFault(TS, err)
    if not d.present:
        raise CpuFault(SS if sreg == SREG_SS else NP, err)
    return d
