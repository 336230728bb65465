"""Binary translation's near returns taken in the hand-off itself.

A kernel's ``ret`` is a callout of translated code (``bttranslate``): its target is
a guest address, known only when it runs.  Handed off (``Monitor._handoff``), the
callout still made a whole entry of it -- the frame taken, ``handle``'s bookkeeping,
the emulation through ``emulate.Context``, ``resume``'s IRET as at CPL 0 -- about
2,500 Python bytecodes to pop four bytes and look a unit up; a system call of the
teaching kernel makes two such returns and an indirect jump's worth of them.

``quick_return`` does the same work directly where every part of an entry but the
emulation itself has nothing to do, and declines (the entry then goes the usual
way, nothing having changed) otherwise:

- the callout's site is a near ``ret`` (``ret imm16`` too) of the guest kernel;
- the monitor is in no state an entry must look at: no step of its own or
  interrupt shadow open (``stepping``), no virtual-8086 or real-mode emulation, no
  debug trap owed and no data breakpoint that the stack read could hit (``debug``),
  no second virtual processor to schedule, no real descriptor changed by the GDT's
  or LDT's entry work (``gdt.at_entry``, done here as ``handle`` does it: no dirty or
  remapped frame to copy, no relaxed frame whose descriptors changed), nothing pending that ``deliver_interrupts`` would deliver (an NMI, or an
  interrupt with the virtual IF set), no translated code reading through CS
  (``before_resume``'s check of CS and SS);
- the return address lies in one page the real TLB holds for the supervisor
  (``GuestMemory.cached``: no walk, no accessed bit to set), and its target's
  translation exists and still maps the frame it was made from (no translation,
  no walk).

Then the resume's IRET would reload the CS and SS the CPU holds from real GDT
entries nothing changed since the last resume loaded them (an SS entry the monitor
poisoned and does not hold, which that IRET takes from the guest's table as it is
now, must give the segment the CPU holds), restore the EFLAGS it
holds but RF (which an emulated instruction clears: ``debug.completed``), null no
data segment (the last IRET to ring 1 did), and end NMI blocking and the dispatch
loop; ``quick_return`` clears RF and ends NMI blocking, counts what the emulation counts
(the callout, the ``ret`` emulated, the look-up of the unit), pops the address and
jumps to the unit -- in the same dispatch loop: the mode is the same, so its jump
cache holds, and nothing the loop's top would look at can be there (a pending NMI or
interrupt, a bound or a stop end the loop themselves when they come; TF, the debug
registers and the host's breakpoints refuse the hand-off).  ``tests/test_monitor_handoff.py`` compares the CPU's whole state
after every entry, the counters, the console and the guest's RAM with the long way.
"""

from __future__ import annotations

import struct

import iced_x86 as ix

from ringvisor.hw.faults import CpuFault
from ringvisor.hw.segments import Descriptor, check_segment_load, null_segment
from ringvisor.hw.state import IF, NT, RF, VM
from ringvisor.hw.system import ea

from . import layout as L
from .descriptors import compress
from .frame import Frame
from .gdt import ACCESSED
from .segcut import DATA_SREGS

M = ix.Mnemonic
OK = ix.OpKind
R = ix.Register
_GPR32 = {r: i for i, r in enumerate((R.EAX, R.ECX, R.EDX, R.EBX, R.ESP, R.EBP, R.ESI, R.EDI))}
_SEGS = {R.ES: 0, R.SS: 2, R.DS: 3, R.FS: 4, R.GS: 5}
_NAME = {M.RET: "ret", M.JMP: "jmp", M.POP: "pop", M.MOV: "mov",
         M.IRETD: "iretd"}                  # (``emulate.ix_name``'s, as ``emulate`` counts)
_QUICK = frozenset(_NAME)
_Q = struct.Struct("<Q").unpack_from
_LOADS: dict[tuple, object] = {}          # (selector, descriptor bytes, tracking) -> Segment | False


def quick_return(mon, cpu) -> bool:
    """The callout at the CPU's EIP (just past its ``int``), done here if it is a near
    ``ret`` that needs no more (module doc); whether it was."""
    st = cpu.state
    tc = mon.tc
    site = tc.sites.get(st.eip)
    if site is None or site[0] != "callout" or site[1].mnemonic not in _QUICK \
            or st.segs[1].selector != L.SEL_TCODE or st.eflags & VM:
        return False
    v = mon.vcpu
    gdt, ldt = mon.gdt, mon.ldt
    vapic = mon.platform.vapic
    if (mon.step is not None or mon.shadow_at is not None or mon.db_owed or mon.watchpoints
            or mon.vcpus is not None or mon.real.active or mon.real.engaged or not v.cr0 & 1
            or tc.cs_units
            or gdt.dirty or gdt.remapped or ldt.dirty or ldt.remapped or v.cpl != 0
            or (vapic is not None and vapic.nmi and not v.nmi_blocked)
            or (v.vif and mon.interrupt_waiting())):
        return False
    # the entry's work on the tables, as ``handle`` begins it (done again there, with
    # nothing left to do, if this declines): a relaxed frame whose descriptors changed
    # has changed real entries, which the resume's IRET would load
    ss = st.segs[2].selector
    table = ldt if ss & 4 else gdt
    i = ss >> 3
    if ss not in table.held and i < table.MAX and not _Q(mon.mem.ram, table.real + i * 8)[0]:
        # SS's entry poisoned and not held: the IRET would load the guest's descriptor as
        # it is now (``gdt.unpoison``'s rule, read as it reads it): the same one only
        # if the guest did not edit it in place since
        raw = table._guest_raw(i) if i < table.n else None
        real = compress(raw) if raw else 0
        cur = st.segs[2]
        if not real:
            return False
        new = Descriptor(real | ACCESSED, 0).segment(ss)
        if (new.base, new.limit, new.attr) != (cur.base, cur.limit, cur.attr):
            return False
    # (``at_entry`` with no frame dirty or remapped: ``release`` only, nothing caught up)
    if gdt.held:
        gdt.release(L.SEL_TCODE, ss)
    if ldt.held:
        ldt.release(L.SEL_TCODE, ss)
    gdt.caught_up = ldt.caught_up = False
    ins = site[1]
    esp = st.regs[4]
    if ins.mnemonic in (M.POP, M.MOV):
        return _quick_load(mon, cpu, ins, esp)
    if ins.mnemonic == M.IRETD:
        return _quick_iret(mon, cpu, esp)
    if ins.mnemonic == M.RET:
        lin = st.segs[2].base + esp
        esp += 4 + (ins.immediate16 if ins.op_count else 0)
    elif ins.op0_kind == OK.REGISTER and ins.op0_register in _GPR32:
        lin = None
        target = st.regs[_GPR32[ins.op0_register]]
    elif ins.op0_kind == OK.MEMORY and ins.memory_size == ix.MemorySize.DWORD_OFFSET \
            and ins.memory_segment in _SEGS:
        # (``Context.linear``: a data segment's base is the one the CPU holds; SS's the
        # real descriptor's, which the CPU loaded and nothing changed since)
        lin = st.segs[_SEGS[ins.memory_segment]].base + ea(cpu, ins)
    else:
        return False                   # (a far JMP, a 16-bit one, or through CS)
    if lin is not None:
        lin &= 0xFFFFFFFF
        p = mon.gm.cached(lin) if mon.gm.p2m is None else None
        if p is None or lin & 0xFFF > 0xFFC or p + 4 > mon.guest_ram:
            return False
        target = int.from_bytes(mon.mem.ram[p:p + 4], "little")
    glin = mon.lin(target)
    frame = mon.gm.cached(glin)
    if frame is None:
        return False
    frame >>= 12
    # (``BinaryTranslation._unit_entry``'s look-up, without a translation)
    hit = tc.entries.get(target)
    if hit is not None and target not in tc.units:
        u, addr = hit
        if not (u.live and u.pages.get(glin >> 12) == frame):
            return False
        counted = ("mid-unit entries",)
    else:
        u = tc.units.get(target)
        if u is None or u.phys >> 12 != frame:
            return False
        addr = u.start
        counted = ("lookups", "hits")
    # committed: what ``handle``, the emulation and ``resume`` would have done
    mon.new_shadow = mon.halting = mon.delivered = False
    mon.traps["callout"] += 1
    mon.emulated[_NAME[ins.mnemonic]] += 1
    for k in counted:
        tc.stats[k] += 1
    mon.db_hits = 0
    mon.entered = None
    st.regs[4] = esp & 0xFFFFFFFF
    st.eip = addr
    st.eflags &= ~RF
    st.nmi_blocked = False             # (the IRET's: SDM Vol. 3 §6.7.1)
    # (the IRET's mode change would end the dispatch loop; here the mode is the same, so
    # its jump cache holds, and what the loop's top would look at cannot be there: an
    # NMI or INTR becoming pending, a bound or a stop set ``limit`` when they came, and
    # RF, TF, the debug registers and the host's breakpoints refused the hand-off)
    return True


def _quick_load(mon, cpu, ins, esp: int) -> bool:
    """A MOV or POP into DS, ES, FS or GS that translated code calls out for (its
    selector may have RPL 1, which the real ring 1 would let pass: ``bttranslate``),
    done here as ``Monitor.load_sreg`` does it at the guest's CPL 0, where the selector
    is null or a GDT selector whose descriptor a supervisor read finds through the real
    TLB (``Delivery._peek8``) and whose checks (``check_segment_load``, ring compression)
    pass with no accessed bit left to set; the load's result is kept by those bytes
    (``_LOADS``: the processor reads the descriptor at every load, and so does this).
    Anything else, and every load that faults, declines: the entry then goes the long
    way, which reads, checks and raises."""
    st = cpu.state
    if ins.op0_kind != OK.REGISTER or ins.op0_register not in DATA_SREGS:
        return False
    i = DATA_SREGS[ins.op0_register]
    if ins.mnemonic == M.POP:
        lin = (st.segs[2].base + esp) & 0xFFFFFFFF
        p = mon.gm.cached(lin) if mon.gm.p2m is None else None
        if p is None or lin & 0xFFF > 0xFFE or p + 2 > mon.guest_ram:
            return False
        sel = mon.mem.ram[p] | mon.mem.ram[p + 1] << 8
        esp += ins.stack_pointer_increment
    elif ins.op1_kind == OK.REGISTER:
        r = ix.RegisterExt.full_register32(ins.op1_register)
        if r not in _GPR32:
            return False
        sel = st.regs[_GPR32[r]] & 0xFFFF
    else:
        return False                   # (from memory: the long way)
    if sel & 0xFFFC:
        v = mon.vcpu
        if sel & 4 or (sel | 7) > v.gdt_limit or sel >> 3 >= L.FIRST_RESERVED:
            return False
        addr = (v.gdt_base + (sel & ~7)) & 0xFFFFFFFF
        got = mon._peek8(addr, addr)
        if got is None:
            return False
        tracking = mon.gdt.tracking
        key = (sel, got[0], tracking)
        seg = _LOADS.get(key)
        if seg is None:
            seg = _load_checked(sel, got[0], tracking)
            if len(_LOADS) > 1024:        # a guest writing random tables cannot grow it
                _LOADS.clear()
            _LOADS[key] = seg
        if seg is False:
            return False
    else:
        seg = null_segment(sel)
    # committed: what ``handle``, ``e_pop`` or ``e_mov`` and ``resume`` would have done
    mon.new_shadow = mon.halting = mon.delivered = False
    mon.traps["callout"] += 1
    mon.emulated[_NAME[ins.mnemonic]] += 1
    mon.db_hits = 0
    mon.entered = None
    st.segs[i] = seg
    cpu.mode_changed()
    st.regs[4] = esp & 0xFFFFFFFF
    st.eflags &= ~RF
    st.nmi_blocked = False
    cpu.limit = 0
    return True


def _load_checked(sel: int, raw: int, tracking: bool):
    """The segment a load of ``sel`` at CPL 0 gives from the guest's descriptor ``raw``
    (``Monitor.load_sreg``'s rules), or False where it faults, ring compression refuses
    it, or its accessed bit is still to be set."""
    d = Descriptor(raw, 0)
    try:
        check_segment_load(d, sel, False, 0)
    except CpuFault:
        return False
    real = compress(raw)
    if not real or tracking and d.s and not raw & ACCESSED:
        return False
    return Descriptor(real | ACCESSED, 0).segment(sel)


_IRET = struct.Struct("<5I")


def _quick_iret(mon, cpu, esp: int) -> bool:
    """The kernel's 32-bit IRET to user mode (``emulate.e_iret``'s RETURN-TO-OUTER-
    PRIVILEGE-LEVEL), done here where its five values lie in one page the real TLB holds
    for the supervisor, NT is clear, the image returns to ring 3 outside virtual-8086
    mode through CS and SS descriptors that passed the return's checks before
    (``Delivery.known_return``), EIP is inside CS, and nothing would be delivered after
    it (no virtual NMI; no interrupt waiting if the image sets IF).  Then what ``handle``
    does around the emulation has nothing to do, and the resume is ``Monitor.resume``'s
    own, on the frame the IRET leaves.  Anything else declines (the long way)."""
    st = cpu.state
    if st.eflags & NT:
        return False
    lin = (st.segs[2].base + esp) & 0xFFFFFFFF
    p = mon.gm.cached(lin) if mon.gm.p2m is None else None
    if p is None or lin & 0xFFF > 0xFEC or p + 20 > mon.guest_ram:
        return False
    eip, cs, eflags, uesp, ss = _IRET.unpack_from(mon.mem.ram, p)
    cs &= 0xFFFF
    ss &= 0xFFFF
    if eflags & VM or cs & 3 != 3:
        return False
    vapic = mon.platform.vapic
    if eflags & IF and mon.interrupt_waiting() or vapic is not None and vapic.nmi:
        return False
    limit = mon.known_return(cs, ss)
    if limit is None or eip > limit:
        return False
    # committed: what ``handle``, ``e_iret`` (``return_to_user``) and ``resume`` do
    f = Frame.taken(cpu, mon.base, L.CALLOUT, None)
    mon.frame = f
    mon.new_shadow = mon.halting = mon.delivered = False
    mon.traps["callout"] += 1
    mon.emulated["iretd"] += 1
    mon.db_hits = 0
    mon.entered = None
    v = mon.vcpu
    v.nmi_blocked = False
    mon.set_guest_eflags(f, eflags, 4, iret=True)
    f.eflags = (f.eflags & ~RF) | (eflags & RF)
    f.cs, f.eip, f.ss = cs, eip, ss
    mon.reloaded(cs, ss)
    st.regs[4] = uesp
    v.cpl = 3
    mon.resume(f)
    return True
