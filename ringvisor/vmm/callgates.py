"""Far CALL and JMP through the guest's call gates, under the monitors.

A call gate is a system descriptor, and system descriptors never reach the real
GDT (ring compression: ``descriptors.compress``), so the real processor refuses
every far transfer through one with #GP(selector) -- from the guest's kernel
(emulated, or a callout under bt) and from its user code alike.  The monitor
performs it on the guest's descriptors as the processor would (SDM Vol. 2 CALL,
JMP: "CALL-GATE"; ``hw.transfers`` is the same on the emulated processor): the
gate's DPL against CPL and RPL, the target code segment's, and for a CALL to a
more privileged, non-conforming segment the switch to the stack the guest's TSS
names, with the gate's parameters copied over: from user code to the kernel
(rings 3 to 0), and under bt into and out of rings 1 and 2 too
(``GuestReturns.rings12``); the RETF with an immediate returns
(``emulate.e_retf``).
"""

from __future__ import annotations

from ringvisor.hw.faults import GP, NP, SS as SS_FAULT, TS
from ringvisor.hw.segments import CALL_GATE32, Descriptor, check_access, check_tss_stack

from .delivery import stack_image
from .errors import GuestFault

M32 = 0xFFFFFFFF


def through_gate(c, sel: int, gate: Descriptor, call: bool) -> None:
    """The far CALL/JMP of ``c`` to ``sel``, a call gate ``gate``; the frame and the
    virtual CPU are left at the target (``c.f``)."""
    mon, v, f = c.mon, c.v, c.f
    err = sel & 0xFFFC
    if gate.dpl < v.cpl or gate.dpl < sel & 3:
        raise GuestFault(GP, err)
    if not gate.present:
        raise GuestFault(NP, err)
    # a 16-bit gate: a 16-bit offset, and the parameters, CS and IP (SS and SP) as words
    n = 4 if gate.type == CALL_GATE32 else 2
    dest, target = gate.gate_selector, gate.gate_offset & ((1 << 8 * n) - 1)
    if not dest & 0xFFFC:
        raise GuestFault(GP, 0)
    cd = mon.guest_desc(dest)
    derr = dest & 0xFFFC
    if not cd.is_code or cd.dpl > v.cpl:
        raise GuestFault(GP, derr)
    if not call and not cd.conforming and cd.dpl != v.cpl:
        raise GuestFault(GP, derr)
    if not cd.present:
        raise GuestFault(NP, derr)
    if target > cd.limit:
        raise GuestFault(GP, 0)
    st = mon.cpu.state
    cpl = v.cpl
    if call and not cd.conforming and cd.dpl < cpl:
        ring = cd.dpl
        if ring:
            mon.outer_ring_stop(f"a call gate ({sel:#06x}) into ring {ring}")
        # to the inner ring's stack in the guest's TSS, the parameters copied over in order
        ss0, esp0 = mon.kernel_stack(0, ring) if ring else mon.kernel_stack(0)
        ssd = mon.guest_desc(ss0, TS)
        check_tss_stack(ssd, ss0, ring, 0)
        old_ss = f.ss if cpl == 3 else v.ss
        old_base = mon.guest_desc(old_ss, SS_FAULT).base
        params = [mon.gm.read_u((old_base + st.regs[4] + n * i) & M32, n, cpl == 3)
                  for i in range(gate.gate_params)]
        vals = [old_ss, st.regs[4]] + params[::-1] + \
            [f.cs if cpl == 3 else (mon.kernel_cs_view(f) & ~3) | cpl, c.next_eip]
        esp = (esp0 - n * len(vals)) & M32
        check_access(ssd.segment((ss0 & ~3) | 1), esp, n * len(vals), True, SS_FAULT)
        mon.gm.write((ssd.base + esp) & M32, stack_image(vals, n))
        mon.gdt.set_accessed(ssd)
        st.regs[4] = esp
        if ring:
            mon.gdt.set_accessed(cd)
            mon.enter_ring(f, dest, target, ring, (ss0 & ~3) | ring)
            return
        f.ss, v.ss = (ss0 & ~3) | 1, ss0 & ~3
        mon.reloaded(f.ss)
        v.cpl = 0
    elif call:
        c.push(f.cs if cpl == 3 else (mon.kernel_cs_view(f) & ~3) | cpl, n)
        c.push(c.next_eip & ((1 << 8 * n) - 1), n)
    mon.gdt.set_accessed(cd)
    if v.cpl != 3:
        mon.enter_ring(f, dest, target, v.cpl)
    else:
        f.cs, f.eip = (dest & ~3) | 3, target
        mon.reloaded(f.cs)
