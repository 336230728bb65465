"""Hardware task switching under the monitors (SDM Vol. 3 ch. 7), on the virtual CPU.

A far JMP or CALL to one of the guest's TSS descriptors or task gates, an
interrupt or exception through a task gate in its IDT, and its IRET with NT set
switch tasks.  None of them can run on the real processor: its TR is the
monitor's TSS, and the guest's system descriptors never reach the real GDT.
They all arrive in the monitor (a #GP or #TS of the real processor, or a guest
gate the monitor reads while delivering), which performs the switch as the
processor would (``hw.tasks``): the outgoing state saved into the guest's
current TSS, the incoming one loaded from the new TSS, the busy bits, the back
link and NT -- and then runs the new task as it runs any guest code: its kernel
at ring 1 (or translated), its user code at ring 3, its CR3 through the shadow
page tables, its LDT through ``ldt.py``.

As on the processor, everything that can fault before the commit point (the
descriptor, the TSS's limit, the pages of both TSSes and of both descriptors'
busy bits) faults in the old task; the loads after it (LDT, segment registers,
EIP within CS) fault in the new task, with #TS(selector) for the type and
privilege rules of Table 7-1 and #NP or #SS(selector) for absent segments.
The new task's code may run at rings 1 and 2 under bt (``GuestReturns.rings12``;
elsewhere rings 0 and 3 only, as everywhere under the monitors); a TSS whose EFLAGS has VM set starts a virtual-8086 task, its
selectors paragraphs (``vm86.enter``), and switching away from one saves them.
"""

from __future__ import annotations

import struct

from ringvisor.hw import tasks as T
from ringvisor.hw.faults import DB, GP, SS, TS, CpuFault
from ringvisor.hw.segments import Descriptor, null_segment
from ringvisor.hw.state import CR0_PG, CR0_TS, IF, NT, RF, VM

from .descriptors import compress
from .errors import MonitorStop
from .gdt import ACCESSED
from .guestmem import GuestPageFault
from .ldt import LDT_TYPE
from . import vm86

ES, CS, SREG_SS, DS, FS, GS = range(6)
M32 = 0xFFFFFFFF


class _GuestTables:
    """What ``hw.tasks.target_tss`` reads descriptors through: the guest's tables."""

    def __init__(self, mon) -> None:
        self.segmentation = self
        self.mon = mon

    def read_descriptor(self, sel: int, vector: int = GP, ext: int = 0) -> Descriptor:
        return self.mon.guest_desc(sel, vector, ext)


def switch(mon, f, sel: int, d: Descriptor, source: str, next_eip: int, ext: int = 0,
           error_code: int | None = None) -> None:
    """Switch the guest to task ``sel``/``d`` (a TSS descriptor or task gate, its DPL
    already checked).  ``next_eip`` is saved in the outgoing TSS; ``error_code`` (an
    exception through a task gate) is pushed on the new task's stack.  A fault before
    the commit point is raised (the old task's); one after it is delivered in the new
    task here."""
    v, st, gm = mon.vcpu, mon.cpu.state, mon.gm
    sel, d = T.target_tss(_GuestTables(mon), sel, d, ext)
    T.check_busy(d, source, (sel & 0xFFFC) | ext)
    size = T.layout(d.type)["size"]

    # -- the incoming state (a fault here is the old task's) ---------------------------
    new_cr3, new_eip, new_eflags, new_regs, new_segs, new_ldt, trap = T.incoming(
        d, lambda off, n: gm.read_u((d.base + off) & M32, n))
    old_raw = mon.guest_descriptor(v.tr) if v.tr & 0xFFFC and not v.tr & 4 else None
    old = T.layout(Descriptor(old_raw, 0).type if old_raw is not None else T.TSS32_BUSY)
    old_desc = (v.gdt_base + (v.tr & 0xFFF8)) & M32 if old_raw is not None else None
    reach_before_commit(gm, v.tr_base, old, d, source, old_desc)

    # -- the outgoing task ----------------------------------------------------------------
    if source in (T.JMP, T.IRET) and old_desc is not None:
        set_busy(mon, old_desc, False)
    old_eflags = v.eflags_view(f.eflags)
    if source == T.IRET:
        old_eflags &= ~NT

    def wr(off: int, n: int, value: int) -> None:
        gm.write_u((v.tr_base + off) & M32, n, value & ((1 << (8 * n)) - 1))

    segs = [st.segs[i].selector for i in range(6)]
    segs[CS] = f.cs if f.user else (mon.kernel_cs_view(f) & ~3) | v.cpl
    segs[SREG_SS] = f.ss if f.user else v.ss
    T.outgoing(old, wr, next_eip, old_eflags, st.regs, segs)
    if source == T.CALL:
        gm.write_u(d.base, 2, v.tr)
        new_eflags |= NT
    if source in (T.JMP, T.CALL):
        set_busy(mon, d.addr, True)

    # -- the commit point: from here on a fault belongs to the new task -------------------
    mon.stats["task switches"] += 1
    v.cr0 |= CR0_TS
    v.tr, v.tr_base, v.tr_limit = sel, d.base, d.limit
    # (PAE: a PDPTE with a reserved bit is the new task's #GP(0), after its segments)
    bad_pdpte = new_cr3 is not None and v.cr0 & CR0_PG and not mon.task_cr3(new_cr3)
    if size == 2:
        new_regs = [(r & 0xFFFF0000) | n for r, n in zip(st.regs, new_regs)]
        new_eflags = (v.eflags_view(f.eflags) & 0xFFFF0000) | new_eflags
    st.regs[:] = new_regs
    if new_eflags & VM:
        # a 32-bit TSS with VM set: a virtual-8086 task, its six selectors paragraphs,
        # unchecked (SDM Vol. 3 §20.2.5); its LDT is loaded all the same (Table 7-1)
        vm86.enter(mon, f, new_eip, new_segs[CS], new_eflags & ~RF, new_regs[4],
                   new_segs[SREG_SS], [new_segs[i] for i in (ES, DS, FS, GS)])
        if v.dr[7] & T.DR7_LOCAL:
            v.dr[7] &= ~T.DR7_LOCAL
            mon.load_debug()
        try:
            _load_ldt(mon, new_ldt, ext)
            if bad_pdpte:
                raise CpuFault(GP, 0)
            if new_eip > 0xFFFF:
                raise CpuFault(GP, ext)
            if trap:
                v.dr[6] |= T.DR6_BT
                raise CpuFault(DB)
            if error_code is not None:
                vm86.push_error_code(mon, f, error_code, size)
        except CpuFault as e:
            mon.deliver(f, e.vector, e.error_code, False, new_eip)
        except GuestPageFault as e:
            v.cr2 = e.address
            mon.deliver(f, 14, e.error_code, False, new_eip)
        return
    v.iopl, v.vif = (new_eflags >> 12) & 3, bool(new_eflags & IF)
    f.eflags = mon.real_eflags(new_eflags & ~RF)
    if v.dr[7] & T.DR7_LOCAL:
        v.dr[7] &= ~T.DR7_LOCAL
        mon.load_debug()
    cs, ss = new_segs[CS], new_segs[SREG_SS]
    cpl = cs & 3
    if cpl in (1, 2):
        mon.outer_ring_stop(f"task {sel:#06x} runs at ring {cpl} ({cs:#06x}:{new_eip:#010x})")
    # the new task's CS, SS and EIP first: a fault in the loads below is delivered in it
    v.cpl = cpl
    if cpl != 3:
        mon.code_ring(cpl)
        f.cs, v.cs, v.ss = mon.kernel_cs(cs), (cs & ~3) | cpl, ss
        f.ss = (ss & ~3) | 1
    else:
        f.cs, f.ss = cs, ss
    try:
        if cpl == 2:
            f.ss = mon.real_ss(ss, cpl)     # (a descriptor the loads below check)
        f.eip = mon.kernel_entry(new_eip) if cpl != 3 else new_eip
        _load_ldt(mon, new_ldt, ext)
        for i in (CS, SREG_SS, ES, DS, FS, GS):
            _load_segment(mon, f, i, new_segs[i], cpl, ext)
        if bad_pdpte:
            raise CpuFault(GP, 0)
        if new_eip > mon.guest_desc(cs).limit:
            raise CpuFault(GP, ext)
        if trap:                                   # the T bit: #DB once the switch is done
            v.dr[6] |= T.DR6_BT
            raise CpuFault(DB)
        if error_code is not None:
            _push_error_code(mon, f, error_code, size)
    except CpuFault as e:
        mon.cpu.mode_changed()
        mon.deliver(f, e.vector, e.error_code, False, new_eip)
        return
    except GuestPageFault as e:
        mon.cpu.mode_changed()
        v.cr2 = e.address
        mon.deliver(f, 14, e.error_code, False, new_eip)
        return
    mon.cpu.mode_changed()


def reach_before_commit(gm, tr_base: int, old: dict, d: Descriptor, source: str,
                        old_desc: int | None) -> None:
    """Every page the switch writes, made to fault now, in the old task: the outgoing
    TSS (its first and last bytes of ``old`` layout), the new TSS's back link (a CALL),
    and the busy bytes of both descriptors (``old_desc`` None: the old TR has none)."""
    for off in (0, old["min_limit"]):
        gm.translate((tr_base + off) & M32, True, False)
    if source == T.CALL:
        gm.translate(d.base, True, False)
    for a in (old_desc, d.addr):
        if a is not None:
            gm.translate((a + 5) & M32, True, False)


def set_busy(mon, desc_addr: int, busy: bool) -> None:
    a = (desc_addr + 5) & M32
    b = mon.gm.read_u(a, 1)
    mon.gm.write_u(a, 1, (b | T.BUSY) if busy else (b & ~T.BUSY))


def _load_ldt(mon, sel: int, ext: int) -> None:
    """The new task's LDTR (Table 7-1: every failure is #TS(LDT selector), and leaves
    no LDT)."""
    if sel & 0xFFFC and not sel & 4:
        d = mon.guest_desc(sel, TS, ext)
        if not d.s and d.type == LDT_TYPE and d.present:
            mon.ldt.enter(sel, d.base, d.limit)
            return
    mon.ldt.enter(0, 0, 0)
    if sel & 0xFFFC:
        raise CpuFault(TS, (sel & 0xFFFC) | ext)


def _load_segment(mon, f, sreg: int, sel: int, cpl: int, ext: int) -> None:
    """One of the new task's segment registers with the checks of Table 7-1
    (``hw.tasks.task_segment``) on the guest's descriptor; the real register gets its
    compressed copy (CS and SS are the frame's)."""
    st = mon.cpu.state
    d = T.task_segment(mon.guest_desc, sreg, sel, cpl, ext)
    if d is None:
        st.segs[sreg] = null_segment(sel)
        return
    real = compress(d.raw)
    if not real:
        raise CpuFault(TS, (sel & 0xFFFC) | ext)     # refused by ring compression
    mon.gdt.set_accessed(d)
    if sreg in (CS, SREG_SS):
        mon.reloaded(f.cs if sreg == CS else f.ss)
        return
    st.segs[sreg] = Descriptor(real | ACCESSED, 0).segment(sel)


def _push_error_code(mon, f, error_code: int, size: int) -> None:
    """An exception's error code on the new task's stack, in its TSS's size (§6.12.2)."""
    st = mon.cpu.state
    ss = f.ss if f.user else mon.vcpu.ss
    base = mon.guest_desc(ss, SS).base
    esp = (st.regs[4] - size) & M32
    mon.gm.write((base + esp) & M32, struct.pack("<I" if size == 4 else "<H", error_code))
    st.regs[4] = esp
