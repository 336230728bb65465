"""A guest's ``int n`` from user mode taken in the hand-off itself.

Every real gate but the monitor's callouts is DPL 0, so a user ``int 0x80`` is a #GP(n
* 8 + 2) that the hand-off gave the monitor as a whole entry: the frame taken,
``handle``'s bookkeeping, ``dispatch``, ``general_protection``, the instruction's length
read back, the delivery through the guest's gate (``Delivery._deliver_known``), and
``resume``'s IRET as at CPL 0 -- some 2,500 Python bytecodes around a frame push and two
segment loads.  ``quick_int`` does the same work directly where every part of that
entry but the delivery has nothing to do, and declines (the entry then goes the long
way, nothing having changed) otherwise:

- the monitor is in no state an entry must look at: no step of its own or interrupt
  shadow open, no debug trap owed and no data breakpoint of the guest's (the push
  could hit it), no second virtual processor, no real-mode emulation, no CS-read units
  under bt, no GDT or LDT frame dirty or remapped and no CS or SS held across an LGDT
  (``gdt.at_entry`` and ``unpoison`` have nothing to do);
- the gate, the TSS's ESP0 and SS0, and the handler's code and stack descriptors are
  read through the real TLB (a supervisor read, no walk, no accessed bit: as
  ``_deliver_known`` reads them), and their bytes are those of a delivery whose checks
  passed before (``_KNOWN``'s rules: a changed gate, descriptor or TSS is checked again
  at the next ``int``, and one that fails takes the long way, which raises);
- the frame's five values go where the real TLB holds the stack page writable for the
  supervisor, inside the stack segment, outside the GDT and LDT frames (as
  ``GuestMemory.push_frame``'s first case writes them);
- the resume's IRET would load CS and SS from real GDT entries in place (not
  poisoned), accessed, that passed its checks before (kept by their bytes), EIP inside
  CS, a 32-bit SS;
- nothing would be delivered after it: no virtual NMI, no interrupt (or, under
  para-virtualization, no event or physical interrupt) the handler's IF lets in;
- under bt, the handler's translation exists and still maps the frame it was made from
  (``btreturn``'s look-up), and the kernel CS keeps the translations' code base.

Then it counts what the long way counts (the CPU's #GP and its delivery, the monitor's
``int n`` and reflection, bt's look-up), pushes the frame, updates the virtual CPU, and
loads what the IRET would load.  ``tests/test_monitor_handoff.py`` compares the CPU's
whole state after every entry, the counters, the console and the guest's RAM with the
long way.
"""

from __future__ import annotations

import struct

from ringvisor.hw.faults import GP, CpuFault
from ringvisor.hw.state import ATTR_DB, ATTR_UNUSABLE, IF, IOPL_MASK, NT, RF, TF, VM
from ringvisor.hw.transfers import _IRET_MASKS, _check_return_cs, _check_return_ss

from .delivery import _KNOWN
from .layout import FIRST_RESERVED, MLIN

_Q = struct.Struct("<Q").unpack_from
_FRAME = struct.Struct("<5I").pack            # (a 32-bit gate's frame from user mode)
PAGE = 0xFFFFF000
ACCESSED = 1 << 40
_MASK = _IRET_MASKS[True][0][True]            # a 32-bit IRET's at CPL 0
_KEEP = ~(TF | NT | RF | VM | IOPL_MASK)      # (``real_eflags``, then the gate's clearing)
# (monitor class, gate, vector, code descriptor, SS0, stack descriptor, tracking) ->
# (offset, interrupt gate, stack base, the highest offset the frame may start at, real CS,
# code base or None) or False
_GATES: dict[tuple, tuple | bool] = {}
# (real CS, its real entry, real SS, its real entry) -> the (CS, SS) the IRET loads, or False
_SEGS: dict[tuple, tuple | bool] = {}
_NAMES: dict[int, str] = {}                   # vector -> how ``traps`` counts it
_REFUSED: dict[int, CpuFault] = {}            # vector -> the #GP its DPL-0 real gate raises


def refused(vector: int) -> CpuFault:
    """The #GP(vector * 8 + 2) a user ``int vector`` raises at the real gate (one object
    per vector, never raised: the CPU's record of recent exceptions keeps it)."""
    f = _REFUSED.get(vector)
    if f is None:
        f = _REFUSED[vector] = CpuFault(GP, vector * 8 + 2)
    return f


def quick_int(mon, cpu, vector: int, at: int) -> bool:
    """The user ``int vector`` at ``at`` (EIP is past it), delivered here if the entry
    needs no more (module doc); whether it was."""
    st = cpu.state
    v = mon.vcpu
    gdt, ldt = mon.gdt, mon.ldt
    gm = mon.gm
    mmu = gm.mmu
    if (mon.step is not None or mon.shadow_at is not None or mon.db_owed or mon.watchpoints
            or mon.vcpus is not None or mon.real.active or mon.real.engaged or mon.guest_halted
            or gdt.held or gdt.dirty or gdt.remapped or ldt.held or ldt.dirty or ldt.remapped
            or mmu is None or gm.tlb_stale or gm.p2m is not None
            or mmu.state.cr3 & PAGE != gm.shadow.root.pd):
        return False
    v.cpl = 3                                    # (``handle``'s first step; the checks' CPL)
    kind = mon.quick_kind
    if kind == 2:
        v.vif = not mon.events.upcall_mask       # (``ParaVirt.dispatch``'s first step)
    ram = mon.mem.ram
    tr = mmu.tr_s
    top = gm.ram_size - 8
    if kind == 2:
        got = mon.known_tables(vector)
        if got is None:
            return False
        gate, sel, esp0, ss0 = got
        got = mon._gdt_pair(sel, ss0)
        if got is None:
            return False
        cd, sd = got
    else:
        # (``known_tables`` and ``known_descriptors``: four reads through the real TLB)
        if vector * 8 + 7 > v.idt_limit or v.tr_limit < 9:
            return False
        a = (v.idt_base + vector * 8) & 0xFFFFFFFF
        b = (v.tr_base + 4) & 0xFFFFFFFF
        if a >= MLIN or b >= MLIN or a & 0xFFF > 0xFF8 or b & 0xFFF > 0xFF8:
            return False
        da, db = tr.get(a & PAGE), tr.get(b & PAGE)
        if da is None or db is None or a + da > top or b + db > top:
            return False
        gate, stack = _Q(ram, a + da)[0], _Q(ram, b + db)[0]
        sel, esp0, ss0 = (gate >> 16) & 0xFFFF, stack & 0xFFFFFFFF, (stack >> 32) & 0xFFFF
        # (``_gdt_pair``: GDT selectors, not null, inside the table, not the monitor's)
        limit = v.gdt_limit
        if sel & 4 or ss0 & 4 or not sel & 0xFFFC or not ss0 & 0xFFFC or (sel | 7) > limit \
                or (ss0 | 7) > limit or sel >> 3 >= FIRST_RESERVED or ss0 >> 3 >= FIRST_RESERVED:
            return False
        a = (v.gdt_base + (sel & ~7)) & 0xFFFFFFFF
        b = (v.gdt_base + (ss0 & ~7)) & 0xFFFFFFFF
        if a >= MLIN or b >= MLIN or a & 0xFFF > 0xFF8 or b & 0xFFF > 0xFF8:
            return False
        da, db = tr.get(a & PAGE), tr.get(b & PAGE)
        if da is None or db is None or a + da > top or b + db > top:
            return False
        cd, sd = _Q(ram, a + da)[0], _Q(ram, b + db)[0]
    key = (mon.__class__, gate, vector, cd, ss0, sd, gdt.tracking)
    known = _GATES.get(key)
    if known is None:
        known = _learn(mon, key, sel)
    if not known:
        return False
    offset, interrupt_gate, sbase, slimit, kcs, base = known
    if base is not None and base != mon.code_base:
        return False
    # the resume's IRET: CS and SS from real entries in place, checked before
    kss = (ss0 & ~3) | 1
    r = gdt.real
    rcs, rss = _Q(ram, r + (kcs & ~7))[0], _Q(ram, r + (kss & ~7))[0]
    segs = _SEGS.get((kcs, rcs, kss, rss))
    if segs is None:
        segs = _learn_segs(cpu, kcs, rcs, kss, rss)
    if not segs:
        return False
    if kind == 1:
        got = mon.quick_entry(offset)
        if got is None:
            return False
        eip, counted = got
    else:
        eip = offset
    new_cs, new_ss = segs
    if eip > new_cs.limit:
        return False
    # the frame, inside the stack segment (``check_access``), where the real TLB holds the
    # page writable (``push_frame``'s first case)
    new = (esp0 - 20) & 0xFFFFFFFF
    if new > slimit:
        return False
    lin = (sbase + new) & 0xFFFFFFFF
    d = mmu.tw_s.get(lin & PAGE)
    if d is None or lin >= MLIN or lin & 0xFFF > 0xFEC:
        return False
    p = lin + d
    if p + 20 > gm.ram_size or p >> 12 in gdt.frames or p >> 12 in ldt.frames:
        return False
    # nothing delivered after it (``deliver_interrupts``; para-virtualization's events)
    vif = v.vif and not interrupt_gate
    if vif and mon.interrupt_waiting():
        return False
    if kind == 2:
        if mon.platform.intr:
            return False
    else:
        vapic = mon.platform.vapic
        if vapic is not None and vapic.nmi and not v.nmi_blocked:
            return False
    # committed: what ``handle``, the delivery and ``resume`` would have done
    segs = st.segs
    eflags = cpu.get_eflags()
    name = _NAMES.get(vector)
    if name is None:
        name = _NAMES[vector] = f"int {vector:#x}"
    mon.traps[name] += 1
    mon.mem.write(p, _FRAME(st.eip, segs[1].selector, v.eflags_view(eflags), st.regs[4],
                            segs[2].selector))
    mon.stats["reflected"] += 1
    mon.halting = mon.new_shadow = False
    mon.delivered = True
    mon.db_hits = 0
    gdt.caught_up = ldt.caught_up = False
    gdt._round()                         # (``reloaded``: the monitor loaded CS and SS)
    v.cpl = 0
    v.cs, v.ss = sel & ~3, ss0 & ~3
    v.vif = vif
    if kind == 2:
        if mon.events.upcall_mask == vif:
            mon.events.upcall_mask = not vif
    elif kind == 1:
        stats = mon.tc.stats
        for k in counted:
            stats[k] += 1
        mon.entered = None
    st.nmi_blocked = False               # (the IRET's: SDM Vol. 3 §6.7.1)
    st.set_eflags((eflags & _KEEP) | IF | 2, _MASK)
    segs[1] = new_cs
    segs[2] = new_ss
    st.eip = eip
    st.regs[4] = new
    cpu.segmentation.null_outer_data_segments(1)
    cpu.mode_changed()
    return True


def _learn(mon, key: tuple, sel: int) -> tuple | bool:
    """What the long way's checks conclude for ``key`` (``Delivery._know``), with the real
    CS the monitor runs the handler in (``quick_code``); False if the quick path cannot
    take it."""
    _, gate, vector, cd, ss0, sd, tracking = key
    known = _KNOWN.get((gate, vector, True, cd, ss0, sd, tracking))
    if known is None:
        known = mon._know((gate, vector, True, cd, ss0, sd, tracking))
    code = mon.quick_code(sel, cd) if known else None
    out = False
    if code is not None and known[2] == 4:
        # (a 32-bit gate; the frame's offsets the stack's limit allows, where
        # ``check_access`` checks no more: a usable, writable, expand-up data segment)
        seg = known[3]
        plain = not seg.attr & (ATTR_UNUSABLE | 0xC) and seg.attr & 2
        out = (known[0], known[1], seg.base, seg.limit - 19 if plain else -1) + code
    if len(_GATES) > 4096:               # a guest writing random tables cannot grow it
        _GATES.clear()
    _GATES[key] = out
    return out


def _learn_segs(cpu, kcs: int, rcs: int, kss: int, rss: int) -> tuple | bool:
    """The CS and SS the resume's IRET (at CPL 0, to ring 1) loads from real entries
    ``rcs`` and ``rss``, or False where it would fault, set an accessed bit or load a
    16-bit SS."""
    out = False
    if rcs & rss & ACCESSED:
        try:
            new_cs, d = _check_return_cs(cpu, kcs, 0)
            new_ss = _check_return_ss(cpu, kss, kcs & 3)
            if d is None and new_ss.attr & ATTR_DB:
                out = (new_cs, new_ss)
        except CpuFault:
            pass
    if len(_SEGS) > 1024:
        _SEGS.clear()
    _SEGS[(kcs, rcs, kss, rss)] = out
    return out
