"""Para-virtualization's ``iret`` hypercall to user mode taken in the hand-off itself.

A PV kernel returns to user mode through the ``iret`` hypercall (Xen's
``HYPERVISOR_iret``: its stack holds EAX, EIP, CS, EFLAGS, ESP and SS).  Handed off
(``Monitor._handoff``), the hypercall still made a whole entry -- the frame taken,
``handle``'s bookkeeping, ``dispatch``'s event mask, the hypercall table -- around
``ParaVirt.hc_iret``.  ``quick_iret`` does the same work directly where every part of
the entry but the return itself has nothing to do, and declines (the entry then goes
the usual way, nothing having changed) otherwise:

- the monitor is in no state an entry must look at: no step of its own or interrupt
  shadow open, no debug trap owed and no data breakpoint, no second virtual processor,
  no domain of a hypervisor (a pseudo-physical map), no physical interrupt the guest's
  PIC asserts (``take_pirqs`` would raise its event), no GDT or LDT frame changed
  (``gdt.at_entry``, done here as ``handle`` does it);
- the six values lie in one page the real TLB holds for the supervisor, the return is
  to ring 3 through CS and SS descriptors that passed the return's checks before
  (``Delivery.known_return``), EIP is inside CS, and no event would be delivered after
  it (none pending, or the frame's IF clear).

Then ``hc_iret``'s work (``return_to_user``, the virtual IF from the frame's IF, EAX),
``dispatch``'s event mask and ``Monitor.resume``'s resume are done here.
``tests/test_monitor_handoff.py`` compares the CPU's whole state after every entry, the
counters, the console and the guest's RAM with the long way.
"""

from __future__ import annotations

import struct

from ringvisor.abi import HYPERCALL_VECTOR, Hypercall
from ringvisor.hw.state import IF, VM

from .frame import Frame

_SIX = struct.Struct("<6I")
IRET = int(Hypercall.iret)


def quick_iret(mon, cpu) -> bool:
    """The ``iret`` hypercall at the CPU's state, done here if it returns to user mode
    and needs no more (module doc); whether it was."""
    st = cpu.state
    v = mon.vcpu
    gdt, ldt = mon.gdt, mon.ldt
    if (st.eflags & VM or st.segs[1].selector & 3 != 1 or v.cpl != 0
            or mon.step is not None or mon.shadow_at is not None or mon.db_owed
            or mon.watchpoints or mon.vcpus is not None or mon.gm.p2m is not None
            or mon.guest_halted or mon.platform.intr
            or gdt.dirty or gdt.remapped or ldt.dirty or ldt.remapped):
        return False
    kcs, kss = st.segs[1].selector, st.segs[2].selector
    # (``at_entry`` with no frame dirty or remapped: ``release`` only, nothing caught up)
    if gdt.held:
        gdt.release(kcs, kss)
    if ldt.held:
        ldt.release(kcs, kss)
    gdt.caught_up = ldt.caught_up = False
    lin = (mon.real_descriptor_base(kss) + st.regs[4]) & 0xFFFFFFFF
    p = mon.gm.cached(lin)
    if p is None or lin & 0xFFF > 0xFE8 or p + 24 > mon.guest_ram:
        return False
    eax, eip, cs, eflags, esp, ss = _SIX.unpack_from(mon.mem.ram, p)
    if cs & 3 != 3 or eflags & IF and mon.events.upcall_pending:
        return False
    cs &= 0xFFFF
    ss &= 0xFFFF
    limit = mon.known_return(cs, ss)
    if limit is None or eip > limit:
        return False
    # committed: what ``handle``, ``dispatch``, ``hc_iret`` and ``resume`` would have done
    f = Frame.taken(cpu, mon.base, HYPERCALL_VECTOR, None)
    mon.frame = f
    mon.new_shadow = mon.halting = mon.delivered = False
    v.vif = not mon.events.upcall_mask
    mon.hypercalls[mon.hypercall_name(IRET)] += 1
    mon.set_guest_eflags(f, eflags, 4, iret=True)
    f.cs, f.eip, f.ss = cs, eip, ss
    mon.reloaded(cs, ss)
    st.regs[4] = esp
    v.cpl = 3
    v.vif = bool(eflags & IF)
    st.regs[0] = eax
    if mon.events.upcall_mask == v.vif:
        mon.events.upcall_mask = not v.vif
    mon.resume(f)
    return True
