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

import iced_x86 as ix

from .emulate import DONE, NEXT, emulate
from .frame import Frame
from .guestmem import GuestPageFault
from .monitor import GuestFault, Monitor

SOFT_INT_LENGTH = {0xCD: 2, 0xCC: 1, 0xCE: 1, 0xF1: 1}


class TrapAndEmulate(Monitor):
    name = "trapemu"

    def fetch(self, f: Frame) -> ix.Instruction:
        lin = (self.real_descriptor_base(f.cs) + f.eip) & 0xFFFFFFFF
        first = min(15, 0x1000 - (lin & 0xFFF))
        data = self.gm.read(lin, first)
        if first < 15:
            try:
                data += self.gm.read((lin + first) & 0xFFFFFFFF, 15 - first)
            except GuestPageFault:
                pass
        return ix.Decoder(32, data, ip=f.eip).decode()

    def general_protection(self, f: Frame) -> None:
        err = f.err or 0
        if err & 3 == 2:
            # INT n through a gate of lower privilege: every real gate is DPL 0, so every
            # software interrupt the guest executes arrives here (the guest's gate decides)
            op = self.fetch(f)
            self.soft_interrupt(f, err >> 3, op.len)
            return
        if f.user:
            self.traps["#GP (guest)"] += 1
            self.deliver(f, 13, err, False, f.eip)
            return
        ins = self.fetch(f)
        try:
            result = emulate(self, f, ins, f.eip)
        except GuestFault as e:
            self.traps["#GP (guest)"] += 1
            self.deliver(f, e.vector, e.error_code, False, f.eip)
            return
        except GuestPageFault as e:
            self.vcpu.cr2 = e.address
            self.deliver(f, 14, e.error_code, False, f.eip)
            return
        if result is None:
            self.traps["#GP (guest)"] += 1
            self.deliver(f, 13, err, False, f.eip)
            return
        self.traps["#GP (privileged)"] += 1
        if result == NEXT:
            f.eip = (f.eip + ins.len) & 0xFFFFFFFF
        else:
            assert result == DONE
