"""Segment register loads, EFLAGS and returns of the de-privileged guest (mixed into
``Monitor``).

What the emulators (``emulate``, ``btemulate``, ``vm86``) call when the guest
kernel loads a segment register, sets EFLAGS with POPF or IRET, or returns to
its own ring or to ring 3: the processor's checks on the guest's own
descriptors (SDM Vol. 2 MOV, IRET, RET), done by the monitor because the real
CPU runs the kernel at ring 1 on compressed descriptors (``descriptors.py``)
and would check the wrong ones.

Apart from ``monitor.py`` because these are the architectural rules of one
instruction group, shared by every execution strategy, and not the monitor's
entry and dispatch.
"""

from __future__ import annotations

from ringvisor.hw.faults import GP, UD
from ringvisor.hw.segments import Descriptor, check_segment_load, null_segment
from ringvisor.hw.state import AC, ID, IOPL_MASK, NT, TF, VIF, VIP
from ringvisor.hw.transfers import check_return_cs, check_return_ss

from . import descriptors as D
from .errors import GuestFault, MonitorStop
from .frame import Frame
from .gdt import ACCESSED
from . import layout as L
from .vcpu import IF

ARITH = 0x8D5 | 0x400 | TF          # CF PF AF ZF SF OF, DF, TF


class GuestReturns:
    """MOV/POP to a segment register, POPF/IRET's EFLAGS, IRET and far RET's returns."""

    # guest code at rings 1 and 2 (a virtual CPL of 1 or 2, ``vcpu.cpl``): binary
    # translation runs it translated, as ring-0 code; elsewhere a transfer to it stops
    rings12 = False
    rstack = 0               # the real descriptor in ``SEL_RSTACK`` (``real_ss``)
    ring_units = False       # bt: units may have been made for code at ring 1 or 2

    def outer_ring_stop(self, what: str) -> None:
        """A transfer to guest code at ring 1 or 2 (``what``): a stop where not virtualized."""
        if not self.rings12:
            raise MonitorStop(f"{self.name}: {what}; only rings 0 and 3 are virtualized")

    def code_ring(self, cpl: int) -> None:
        """Guest code at virtual CPL ``cpl`` (0-2) runs next (``bt``: its translations)."""

    def real_ss(self, sel: int, cpl: int) -> int:
        """The real SS selector standing for the guest's stack selector ``sel`` at virtual
        CPL ``cpl`` below 3, for code the real processor runs at ring 1: the guest's entry
        with RPL 1 -- a DPL-0 or DPL-1 descriptor is DPL 1 in the real table -- and for
        ring 2, whose stack descriptor is DPL 2 there (which ring 1 cannot load into SS),
        a copy with DPL 1 in the monitor's slot ``SEL_RSTACK``, written at each load (the
        guest's SS cache: the processor caches the descriptor when it loads it; the slot
        lies in machine memory, which a snapshot saves)."""
        if cpl < 2:
            return (sel & ~3) | 1
        raw = self.guest_descriptor(sel) or 0
        real = D.compress(raw)
        if not real:                   # (refused by the checks that follow)
            return (sel & ~3) | 1
        self.rstack = real = (real & ~(3 << 45)) | (1 << 45) | ACCESSED
        self.mem.write(self.gdt.real + (L.SEL_RSTACK & ~7), real.to_bytes(8, "little"))
        return L.SEL_RSTACK

    def enter_ring(self, f: Frame, cs: int, eip: int, cpl: int, ss: int | None = None) -> None:
        """Guest code at ``cs:eip`` runs next at virtual CPL ``cpl`` below 3 (translated
        under bt, at the real ring 1): the frame's real CS and EIP (and, given the guest's
        stack selector ``ss``, its SS) and the virtual CPU's CPL, CS (RPL = CPL) and SS."""
        v = self.vcpu
        v.cpl = cpl
        self.code_ring(cpl)
        f.cs = self.kernel_cs(cs)
        f.eip = self.kernel_entry(eip)
        v.cs = (cs & ~3) | cpl
        if ss is not None:
            f.ss = self.real_ss(ss, cpl)
            v.ss = ss
            self.reloaded(f.cs, f.ss)
        else:
            self.reloaded(f.cs)

    def null_outer_segments(self, cpl: int) -> None:
        """A return to the outer ring ``cpl`` (1 or 2) the real processor does not see
        (its ring stays 1): DS, ES, FS and GS whose guest descriptor's DPL is below the
        new CPL become null, conforming code excepted (SDM Vol. 2 IRET, RET)."""
        st = self.cpu.state
        for i in (0, 3, 4, 5):
            s = st.segs[i]
            if not s.selector & 0xFFFC:
                continue
            raw = self.guest_descriptor(s.selector)
            if raw is None:
                continue
            access = (raw >> 40) & 0xFF
            if access & 0x1C == 0x1C:            # conforming code
                continue
            if (access >> 5) & 3 < cpl:
                st.segs[i] = null_segment(0)
        self.cpu.mode_changed()

    def load_sreg(self, i: int, sel: int) -> None:
        """The guest loads segment register ``i`` (0 ES .. 5 GS) with ``sel``: the
        processor's checks on the guest's own descriptor (SDM Vol. 2 MOV)."""
        v, st = self.vcpu, self.cpu.state
        if i == 1:
            raise GuestFault(UD)
        sel &= 0xFFFF
        if not sel & 0xFFFC:
            if i == 2:
                raise GuestFault(GP, 0)
            st.segs[i] = null_segment(sel)
            self.cpu.mode_changed()
            return
        d = self.guest_desc(sel)
        check_segment_load(d, sel, i == 2, v.cpl)
        real = D.compress(d.raw)
        if not real:
            raise GuestFault(GP, sel & 0xFFFC)     # refused by ring compression
        self.gdt.set_accessed(d)
        if i == 2:
            self.frame.ss = (sel & ~3) | 3 if v.cpl == 3 else self.real_ss(sel, v.cpl)
            self.reloaded(self.frame.ss)
            v.ss = sel
            return
        st.segs[i] = Descriptor(real | ACCESSED, 0).segment(sel)
        self.cpu.mode_changed()

    def set_guest_eflags(self, f: Frame, value: int, size: int = 4, iret: bool = False) -> None:
        """POPF/IRET at (virtual) CPL 0: every flag the guest may set for real, IF and
        IOPL on the virtual CPU; a 32-bit IRET at CPL 0 loads VIF and VIP too (Vol. 2
        IRET; POPF never does), kept in the real image (the real CR4.VME and PVI are
        clear: the processor ignores them)."""
        v = self.vcpu
        mask = ARITH | NT | AC | ID
        if iret and v.cpl == 0:
            mask |= VIF | VIP
        if size == 2:
            mask &= 0xFFFF
        f.eflags = self.real_eflags((f.eflags & ~mask) | (value & mask))
        if v.cpl == 0:
            v.iopl = (value & IOPL_MASK) >> 12
        if v.cpl <= v.iopl:
            v.vif = bool(value & IF)

    def return_to_kernel(self, f: Frame, eip: int, cs: int) -> None:
        """IRET or far RET to the guest's own ring (0, 1 or 2), with the processor's checks."""
        if not cs & 0xFFFC:
            raise GuestFault(GP, 0)
        d = self.guest_desc(cs)
        cpl = self.vcpu.cpl
        check_return_cs(d, cs, cpl)
        if cs & 3:
            self.outer_ring_stop(f"the guest returns to ring {cs & 3} ({cs:#06x}:{eip:#010x})")
        if eip > d.limit:
            raise GuestFault(GP, 0)
        self.gdt.set_accessed(d)
        if cpl or self.ring_units:
            self.enter_ring(f, cs, eip, cpl)
            return
        f.cs = self.kernel_cs(cs)                 # (``enter_ring`` at CPL 0, inline)
        f.eip = self.kernel_entry(eip)
        self.reloaded(f.cs)
        self.vcpu.cs = cs & ~3

    def return_to_outer_ring(self, f: Frame, eip: int, cs: int, eflags: int | None, esp: int,
                             ss: int, size: int = 4) -> None:
        """IRET or far RET from ring 0 or 1 to ring 1 or 2 (SDM Vol. 2 IRET, RET:
        RETURN-TO-OUTER-PRIVILEGE-LEVEL), which the real processor never sees: the
        checks of CS and SS at the new CPL, EFLAGS at the old one, and the data
        segments the new CPL may not use made null."""
        rpl = cs & 3
        if not cs & 0xFFFC:
            raise GuestFault(GP, 0)
        d = self.guest_desc(cs)
        check_return_cs(d, cs, self.vcpu.cpl)
        self.outer_ring_stop(f"the guest returns to ring {rpl} ({cs:#06x}:{eip:#010x})")
        if not ss & 0xFFFC:
            raise GuestFault(GP, 0)
        sd = self.guest_desc(ss)
        check_return_ss(sd, ss, rpl)
        if eip > d.limit:
            raise GuestFault(GP, 0)
        if eflags is not None:
            self.set_guest_eflags(f, eflags, size, iret=True)
        self.gdt.set_accessed(d)
        self.gdt.set_accessed(sd)
        self.enter_ring(f, cs, eip, rpl, ss)
        self.cpu.state.regs[4] = esp if sd.segment(ss).big else \
            (self.cpu.state.regs[4] & 0xFFFF0000) | (esp & 0xFFFF)
        self.null_outer_segments(rpl)

    def return_to_user(self, f: Frame, eip: int, cs: int, eflags: int | None, esp: int,
                       ss: int, size: int = 4) -> None:
        """IRET or far RET to ring 3 (SDM Vol. 2 IRET: RETURN-TO-OUTER-PRIVILEGE-LEVEL);
        ``size``: the IRET's operand size (2: the EFLAGS image is FLAGS only)."""
        d = sd = None
        limit = self.known_return(cs, ss)        # (descriptors checked before: ``delivery``)
        if limit is None:
            if not cs & 0xFFFC:
                raise GuestFault(GP, 0)
            d = self.guest_desc(cs)
            check_return_cs(d, cs, self.vcpu.cpl)
            if not ss & 0xFFFC:
                raise GuestFault(GP, 0)
            sd = self.guest_desc(ss)
            check_return_ss(sd, ss, 3)
            limit = d.limit
        if eip > limit:
            raise GuestFault(GP, 0)
        if eflags is not None:
            self.set_guest_eflags(f, eflags, size, iret=True)
        if d is not None:                         # (known: nothing to set)
            self.gdt.set_accessed(d)
            self.gdt.set_accessed(sd)
        f.cs, f.eip, f.ss = cs, eip, ss
        self.reloaded(cs, ss)
        self.cpu.state.regs[4] = esp
        self.vcpu.cpl = 3

