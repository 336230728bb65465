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
from .vcpu import IF

ARITH = 0x8D5 | 0x400 | TF          # CF PF AF ZF SF OF, DF, TF


class GuestReturns:
    """MOV/POP to a segment register, POPF/IRET's EFLAGS, IRET and far RET's returns."""

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
            self.frame.ss = (sel & ~3) | (1 if v.cpl == 0 else 3)
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
        """IRET or far RET to the guest kernel's ring, with the processor's checks."""
        if not cs & 0xFFFC:
            raise GuestFault(GP, 0)
        d = self.guest_desc(cs)
        check_return_cs(d, cs, self.vcpu.cpl)
        if cs & 3:
            raise MonitorStop(f"{self.name}: the guest returns to ring {cs & 3} "
                              f"({cs:#06x}:{eip:#010x}); only rings 0 and 3 are virtualized")
        if eip > d.limit:
            raise GuestFault(GP, 0)
        self.gdt.set_accessed(d)
        f.cs = self.kernel_cs(cs)
        f.eip = self.kernel_entry(eip)
        self.reloaded(f.cs)
        self.vcpu.cs = cs & ~3
        self.vcpu.cpl = 0

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

