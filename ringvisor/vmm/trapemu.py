"""Classic trap-and-emulate (the chapter's section 2.1), and why it fails on x86.

The guest kernel runs directly on the processor at ring 1.  Every privileged
instruction it executes faults (#GP: CPL > 0), the monitor decodes it, emulates
it on the virtual CPU and resumes the guest after it.  Faults and interrupts
are reflected into the guest's own handlers.

What cannot work: x86 has sensitive instructions that do not trap at ring 1.
POPF silently leaves IF alone, so a guest that restores interrupts with
``push; popf`` (as Linux does) keeps its *virtual* IF clear and never receives
another virtual interrupt until it next executes a trapping STI; an IRET to
user mode likewise; SGDT/SIDT/SMSW return the monitor's values; PUSH CS shows
ring 1.  This monitor does not paper over any of that: it is the failure, shown.

Where the monitor *can* make the hardware's own checks hand it control, it
does: the frame it pushes for a handler entered from kernel code holds the
guest's CS as the guest loaded it (RPL 0, as the hardware pushes it:
``Monitor.kernel_cs_view``; the virtual CS is the real one's, read back at each
entry: ``cs_in_frame``), so the
handler's IRET to it is a return to a more privileged RPL than the real CPL 1
and faults (#GP, SDM Vol. 2 IRET: "return code segment selector RPL < CPL");
the monitor emulates that IRET, which restores the guest's virtual IF and ends
its NMI blocking -- a kernel that takes an interrupt in kernel code gets the
next one after the handler returns, as on the hardware.
"""

from __future__ import annotations

from ringvisor.hw.segments import Descriptor

from . import layout as L
from .emulate import FAULTED, NEXT, emulate
from .errors import MonitorStop
from .frame import Frame
from .guestmem import GuestBadFrame, GuestPageFault
from .monitor import Monitor


class TrapAndEmulate(Monitor):
    name = "trapemu"
    # a virtual NMI blocks the next one until the handler's IRET (SDM Vol. 3 §6.7.1):
    # the IRET to kernel code traps (see above), the one to user mode does not
    # -- but the guest is back in user code only once its handler has returned
    # (``deliver_interrupts``)
    nmi_blocking = True
    cs_in_frame = True

    def install(self) -> None:
        super().install()
        # no translated code here: the ring-1 code segment over the whole address space
        # (binary translation's) must not exist, or guest ring 1 could far-jump into it
        self.mem.write(self.base + L.GDT + (L.SEL_TCODE & ~7), bytes(8))

    def kernel_cs_loaded(self, f: Frame) -> None:
        """An entry from a CS the monitor did not load: the guest's far JMP, CALL, RETF or
        IRET at ring 1 loaded it without a trap.  The virtual CS follows -- unless the
        guest is now running at ring 1 or 2 (a non-conforming code segment of that DPL,
        or the real ring 2), which the monitor does not give a guest: its ring 1 is the
        guest kernel's, whose segments a guest ring-1 driver could load, and nothing of
        the monitor knows a CPL of 2.  One line, at the first entry from there."""
        ring = f.cs & 3
        if ring == 1:
            try:
                raw = self.guest_descriptor(f.cs)
            except (GuestPageFault, GuestBadFrame):
                raw = None
            d = Descriptor(raw, 0) if raw else None
            ring = d.dpl if d is not None and d.is_code and not d.conforming else 0
        if ring:
            raise MonitorStop(f"{self.name}: the guest runs at ring {ring} ({f.cs:#06x}:"
                              f"{f.eip:#010x}); only rings 0 and 3 are virtualized")
        self.vcpu.cs = f.cs & ~3

    def deliver_interrupts(self, f: Frame) -> None:
        if f.user:
            # the guest's NMI handler left for user code: by an IRET, which did not trap
            # (ring 1 to ring 3) and which ends the blocking on the hardware
            self.vcpu.nmi_blocked = False
        super().deliver_interrupts(f)

    def privileged_fault(self, f: Frame, err: int) -> None:
        if f.user:
            super().privileged_fault(f, err)
            return
        ins = self.fetch(f)
        result = emulate(self, f, ins, f.eip)
        if result is None:
            super().privileged_fault(f, err)
            return
        if result == FAULTED:           # delivered to the guest by the emulation
            return
        self.traps["#GP (privileged)"] += 1
        if result == NEXT:
            f.eip = (f.eip + ins.len) & 0xFFFFFFFF
