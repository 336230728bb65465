"""Classic trap-and-emulate (the chapter's section 2.1), and why it fails on x86.

The guest kernel runs directly on the processor at ring 1.  Every privileged
instruction it executes faults (#GP: CPL > 0), the monitor decodes it, emulates
it on the virtual CPU and resumes the guest after it.  Faults and interrupts
are reflected into the guest's own handlers.

What cannot work: x86 has sensitive instructions that do not trap at ring 1.
POPF silently leaves IF alone, so a guest that restores interrupts with
``push; popf`` (as Linux does) keeps its *virtual* IF clear and never receives
another virtual interrupt until it next executes a trapping STI; IRET
likewise; SGDT/SIDT/SMSW return the monitor's values; PUSH CS shows ring 1.
This monitor does not paper over any of that: it is the failure, shown.
"""

from __future__ import annotations

from . import layout as L
from .emulate import FAULTED, NEXT, emulate
from .frame import Frame
from .monitor import Monitor


class TrapAndEmulate(Monitor):
    name = "trapemu"
    # the guest kernel's IRET does not trap (ring 1 to ring 1 or 3): the end of an NMI
    # handler is invisible, so a virtual NMI does not block the next one (the chapter's
    # IRET failure again)
    nmi_blocking = False

    def install(self) -> None:
        super().install()
        # no translated code here: the ring-1 code segment over the whole address space
        # (binary translation's) must not exist, or guest ring 1 could far-jump into it
        self.mem.write(self.base + L.GDT + (L.SEL_TCODE & ~7), bytes(8))

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
