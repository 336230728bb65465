"""The HVM monitor's task switches: exit reason 9 (SDM Vol. 3C §25.4.2, §27.2.1).

No task switch runs in VMX non-root operation: once the gate and the new TSS's
descriptor pass their checks (type, busy, P, limit -- faults the guest takes
itself), the processor exits with the TSS selector and the source (CALL, IRET,
JMP, or a task gate in the IDT, whose event is in the IDT-vectoring information)
in the qualification, the guest's state still the one before the switch.  This
monitor then performs the switch on the guest's state, as the processor would
(the rules are ``hw.tasks``'s: what the TSSes hold, the busy bits, the back link,
NT, the checks of Table 7-1): the outgoing state into the guest's current TSS,
the incoming one into the VMCS and the register file, CR0.TS, CR3 through EPT or
the shadow tables (``set_cr``), LDTR, TR -- as KVM's ``handle_task_switch`` does.

A fault before the commit point (a page of either TSS or of a busy bit not
present) is the old task's, at the switching instruction; one after it (the LDT,
a segment of the new task, EIP beyond CS, the T bit's #DB) is injected in the new
task.  A data segment register that was not loaded when the fault came is left
unusable (the processor leaves an empty cache); a fault loading CS or SS leaves
the old task's CS and SS caches, with which VM entry's checks pass.
"""

from __future__ import annotations

import struct

from ringvisor.hw import tasks as T
from ringvisor.hw import vmcs as V
from ringvisor.hw.faults import DB, GP, TS, CpuFault
from ringvisor.hw.realmode import vm86_segment
from ringvisor.hw.segments import LDT, Descriptor, null_segment
from ringvisor.hw.state import ATTR_UNUSABLE, CR0_PG, CR0_TS, CR3_MASK, CR4_PAE, NT, RF, VM, Segment
from ringvisor.hw.vmentry import RFLAGS_RESERVED

from .guestmem import GuestPageFault
from .hvmexits import guest_page_fault, handles, set_cr
from .tasks import reach_before_commit, set_busy

ES, CS, SREG_SS, DS, FS, GS, LDTR, TR = range(8)
M32 = 0xFFFFFFFF
SOURCES = {V.TS_SOURCE_CALL: T.CALL, V.TS_SOURCE_IRET: T.IRET, V.TS_SOURCE_JMP: T.JMP,
           V.TS_SOURCE_IDT: T.CALL}          # (an event through a task gate nests, as a CALL)
SOFTWARE = (V.INTR_SOFT_INT, V.INTR_SOFT_EXC)   # INT n, INT3, INTO: EXT clear, EIP after them


class _GuestTables:
    """The guest's GDT and LDT as the VMCS describes them (what ``hw.tasks`` reads
    descriptors through)."""

    def __init__(self, mon) -> None:
        self.mon = mon
        self.segmentation = self

    def read_descriptor(self, sel: int, vector: int = GP, ext: int = 0) -> Descriptor:
        mon = self.mon
        if sel & 4:
            if mon.read(V.GUEST_AR + 2 * LDTR) & ATTR_UNUSABLE:
                raise CpuFault(vector, (sel & 0xFFFC) | ext)
            base, limit = mon.read(V.GUEST_BASE + 2 * LDTR), mon.read(V.GUEST_LIMIT + 2 * LDTR)
        else:
            base, limit = mon.read(V.GUEST_GDTR_BASE), mon.read(V.GUEST_GDTR_LIMIT)
        if (sel | 7) > limit:
            raise CpuFault(vector, (sel & 0xFFFC) | ext)
        addr = (base + (sel & ~7)) & M32
        return Descriptor(int.from_bytes(mon.gm.read(addr, 8), "little"), addr)


def _put(mon, i: int, s: Segment) -> None:
    mon.write(V.GUEST_SEL + 2 * i, s.selector)
    mon.write(V.GUEST_BASE + 2 * i, s.base)
    mon.write(V.GUEST_LIMIT + 2 * i, s.limit)
    mon.write(V.GUEST_AR + 2 * i, s.attr)


@handles(V.EXIT_TASK_SWITCH)
def task_switch(mon) -> None:
    q = mon.read(V.EXIT_QUALIFICATION)
    sel, src = q & 0xFFFF, q >> 30 & 3
    rip = mon.read(V.GUEST_RIP)
    error_code, ext = None, 0
    length = mon.read(V.EXIT_INSTRUCTION_LEN)
    next_eip = (rip + length) & M32
    if src == V.TS_SOURCE_IDT:
        # the event whose delivery reached the task gate is consumed by the switch (the
        # monitor did not re-inject it): an exception's error code goes on the new stack
        info = mon.read(V.IDT_VECTORING_INFO)
        typ = info >> 8 & 7
        if info & V.INTR_ERROR_VALID:
            error_code = mon.read(V.IDT_VECTORING_ERROR)
        ext = 0 if typ in SOFTWARE else 1
        if typ not in SOFTWARE + (V.INTR_PRIV_SOFT_EXC,):
            next_eip = rip                   # a fault or an interrupt: back to where it came
    mon.stats["task switches"] += 1
    try:
        _switch(mon, sel, SOURCES[src], next_eip, ext, error_code)
    except GuestPageFault as e:              # before the commit point: the old task's
        guest_page_fault(mon, e.address, e.error_code)
    except CpuFault as e:
        mon.inject_exception(e.vector, e.error_code)


def _switch(mon, sel: int, source: str, next_eip: int, ext: int, error_code) -> None:
    gm, regs = mon.gm, mon.cpu.state.regs
    d = _GuestTables(mon).read_descriptor(sel, GP, ext)
    T.check_busy(d, source, (sel & 0xFFFC) | ext)     # (checked by the processor already)
    new_cr3, new_eip, new_eflags, new_regs, new_segs, new_ldt, trap = T.incoming(
        d, lambda off, n: gm.read_u((d.base + off) & M32, n))
    tr_sel, tr_base = mon.read(V.GUEST_SEL + 2 * TR), mon.read(V.GUEST_BASE + 2 * TR)
    old = T.layout(mon.read(V.GUEST_AR + 2 * TR) & 0xF)
    old_desc = (mon.read(V.GUEST_GDTR_BASE) + (tr_sel & 0xFFF8)) & M32
    reach_before_commit(gm, tr_base, old, d, source, old_desc)

    # -- the outgoing task ----------------------------------------------------------------
    if source in (T.JMP, T.IRET):
        set_busy(mon, old_desc, False)
    old_eflags = mon.read(V.GUEST_RFLAGS)
    if source == T.IRET:
        old_eflags &= ~NT
    cur = list(regs)
    cur[4] = mon.read(V.GUEST_RSP)

    def wr(off: int, n: int, value: int) -> None:
        gm.write_u((tr_base + off) & M32, n, value & ((1 << (8 * n)) - 1))

    T.outgoing(old, wr, next_eip, old_eflags, cur, [mon.read(V.GUEST_SEL + 2 * i) for i in range(6)])
    if source == T.CALL:
        gm.write_u(d.base, 2, tr_sel)
        new_eflags |= NT
    if source in (T.JMP, T.CALL):
        set_busy(mon, d.addr, True)

    # -- the commit point: from here on a fault belongs to the new task ---------------------
    v = mon.vcpu
    v.cr0 |= CR0_TS                          # (TS is the guest's: no read shadow for it)
    mon.write(V.GUEST_CR0, mon.read(V.GUEST_CR0) | CR0_TS)
    _put(mon, TR, Segment(sel, d.base, d.limit, d.attr | T.BUSY))
    bad_pdpte = False
    if new_cr3 is not None and v.cr0 & CR0_PG:
        if v.cr4 & CR4_PAE and mon.gm.read_pdptes(new_cr3) is None:
            # a PDPTE with a reserved bit: CR3 is loaded, the PDPTE registers keep their
            # values, and the #GP(0) is the new task's, after its segments (§4.4.1, §7.3)
            bad_pdpte = True
            v.cr3 = new_cr3 & CR3_MASK
            mon._paging_changed()
        else:
            set_cr(mon, 3, new_cr3)          # (the TLB: VM entry flushes it, no VPID)
    if T.layout(d.type)["size"] == 2:
        new_regs = [(r & 0xFFFF0000) | n for r, n in zip(cur, new_regs)]
        new_eflags |= old_eflags & 0xFFFF0000
    regs[:] = new_regs
    mon.write(V.GUEST_RSP, new_regs[4])
    mon.write(V.GUEST_RIP, new_eip)
    mon.write(V.GUEST_RFLAGS, (new_eflags & ~RFLAGS_RESERVED & ~RF) | 2)
    mon.write(V.GUEST_INTERRUPTIBILITY,
              mon.read(V.GUEST_INTERRUPTIBILITY) & ~(V.BLOCK_STI | V.BLOCK_MOV_SS))
    dr7 = mon.read(V.GUEST_DR7)
    mon.write(V.GUEST_DR7, dr7 & ~T.DR7_LOCAL)
    try:
        _load_new_task(mon, new_eip, new_eflags, new_segs, new_ldt, ext)
        if bad_pdpte:
            raise CpuFault(GP, 0)
        if trap:                             # the T bit: #DB once the switch is done
            mon.cpu.state.dr[6] |= T.DR6_BT
            raise CpuFault(DB)
        if error_code is not None:
            _push_error_code(mon, error_code, T.layout(d.type)["size"])
    except GuestPageFault as e:
        guest_page_fault(mon, e.address, e.error_code)
    except CpuFault as e:
        mon.inject_exception(e.vector, e.error_code)


def _load_new_task(mon, eip: int, eflags: int, sels: list, ldt: int, ext: int) -> None:
    """LDTR and the six segment registers of the new task with Table 7-1's checks
    (``hw.tasks.task_segment``), then EIP against CS's limit."""
    tables = _GuestTables(mon)
    # every data register first as the processor leaves it before its load: an empty
    # cache, unusable until loaded
    for i in (ES, DS, FS, GS):
        _put(mon, i, null_segment(sels[i]))
    _put(mon, LDTR, null_segment(ldt & ~4))
    if ldt & 4:
        raise CpuFault(TS, (ldt & 0xFFFC) | ext)
    if ldt & 0xFFFC:
        d = tables.read_descriptor(ldt, TS, ext)
        if d.s or d.type != LDT or not d.present:
            raise CpuFault(TS, (ldt & 0xFFFC) | ext)
        _put(mon, LDTR, d.segment(ldt))
    if eflags & VM:
        # a 32-bit TSS with VM set: a virtual-8086 task, its six selectors paragraphs,
        # unchecked (SDM Vol. 3 §20.2.5)
        for i in range(6):
            _put(mon, i, vm86_segment(sels[i]))
        if eip > 0xFFFF:
            raise CpuFault(GP, ext)
        return
    cpl = sels[CS] & 3
    for i in (CS, SREG_SS, ES, DS, FS, GS):
        d = T.task_segment(tables.read_descriptor, i, sels[i], cpl, ext)
        if d is None:
            continue                         # (a null data selector: unusable, as put)
        if not d.raw >> 40 & 1:              # loading a segment sets its accessed bit
            mon.gm.write_u((d.addr + 5) & M32, 1, (d.raw >> 40 & 0xFF) | 1)
            d.raw |= 1 << 40
        _put(mon, i, d.segment(sels[i]))
    if eip > mon.read(V.GUEST_LIMIT + 2 * CS):
        raise CpuFault(GP, ext)


def _push_error_code(mon, error_code: int, size: int) -> None:
    """An exception's error code on the new task's stack, in its TSS's size (§6.12.2)."""
    esp = (mon.read(V.GUEST_RSP) - size) & M32
    base = mon.read(V.GUEST_BASE + 2 * SREG_SS)
    mon.gm.write((base + esp) & M32, struct.pack("<I" if size == 4 else "<H", error_code))
    mon.write(V.GUEST_RSP, esp)
