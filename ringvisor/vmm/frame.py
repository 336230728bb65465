"""The interrupt frame the hardware pushed on the monitor's stack.

Every entry into the monitor comes from guest ring 1 or ring 3 through an
interrupt gate to ring 0, so the hardware switched to the monitor's stack and
pushed SS, ESP, EFLAGS, CS, EIP and, for some exceptions, an error code.  While
the monitor works, the guest's ESP sits in the real ESP register (so the
hardware's own address arithmetic can serve the emulator); ``resume`` returns to
the guest with a real IRET through the frame.  An entry the hardware handed off
(``Monitor._handoff``) pushed no frame and never entered ring 0: ``Frame.taken``
reads the same values from the registers, the CPU keeps the guest's state while the
monitor works, and the IRET that resumes it executes as at CPL 0, where the gate
would have put it (``Cpu.iret``'s ``ring0``); the monitor's ring-0 state is built
only for an IRET that must read its frame from the monitor's stack (a return to
virtual-8086 mode: ``enter_ring0``).

From virtual-8086 mode the hardware pushed ES, DS, FS and GS too, above SS, and
nulled those registers (SDM Vol. 3 §20.3.1.1, Figure 20-2): they are put back,
as virtual-8086 segments, for the monitor to work with the guest's registers, and
the IRET that resumes such a frame returns to virtual-8086 mode with all six.

The frame is at the top of the stack the processor's TSS names (its ESP0, read
where the delivery read it): a monitor's one stack, or, on a hypervisor of several
processors, the processor's own (``hypervisor/pcpus.py``: each has a TSS and a
stack of its own, as each of Xen's CPUs has, so the frame one processor's delivery
pushed is still there when its handler runs, whatever another ran in between).
"""

from __future__ import annotations

import struct

from ringvisor.hw.realmode import vm86_segment
from ringvisor.hw.state import IF, NT, RF, SS, TF

from . import layout as L

_FIVE, _SIX = struct.Struct("<5I"), struct.Struct("<6I")      # (error code first)
_VM86_SEGS = struct.Struct("<4I")                              # ES, DS, FS, GS
VM = 1 << 17
ES, DS, FS, GS = 0, 3, 4, 5


def stack_top(cpu, monitor_base: int) -> int:
    """The linear top of ``cpu``'s ring-0 stack: ESP0 of the TSS its task register holds
    (SDM Vol. 3 Figure 7-2: offset 4), in the region at ``monitor_base``."""
    return cpu.mem.read32(monitor_base + cpu.state.tr.base - L.MLIN + 4)


def enter_ring0(cpu, monitor_base: int, vector: int, err: int | None) -> None:
    """What the monitor's gate for ``vector`` gives the CPU (SDM Vol. 3 §6.12.1): CS
    and SS loaded from the monitor's GDT as a delivery loads them, IF, TF, NT, RF and
    VM clear, ESP below a frame of five values (six with an error code) at the top of
    the TSS's stack, EIP at the vector's entry point."""
    st = cpu.state
    seg = cpu.segmentation
    cd = seg.read_descriptor(L.SEL_MCODE)
    sd = seg.read_descriptor(L.SEL_MDATA)
    seg.set_accessed(cd)
    seg.set_accessed(sd)
    st.segs[1] = cd.segment(L.SEL_MCODE & 0xFFFC)
    st.segs[2] = sd.segment(L.SEL_MDATA)
    st.eflags &= ~(TF | NT | RF | VM | IF)
    st.regs[4] = stack_top(cpu, monitor_base) - (20 if err is None else 24)
    st.eip = L.MLIN + L.ENTRY + 8 * vector
    cpu.mode_changed()


class Frame:
    __slots__ = ("cpu", "phys_top", "top", "err", "eip", "cs", "eflags", "esp", "ss",
                 "handed", "vector", "base")

    def __init__(self, cpu, monitor_base: int, has_error: bool) -> None:
        self.cpu = cpu
        self.handed = False
        self.top = stack_top(cpu, monitor_base)
        self.phys_top = top = monitor_base + self.top - L.MLIN
        if self.top - cpu.state.regs[4] == (40 if has_error else 36):
            # from virtual-8086 mode: four selectors more, above the usual frame
            top -= 16
            segs = _VM86_SEGS.unpack(cpu.mem.read(top, 16))
            for i, sel in zip((ES, DS, FS, GS), segs):
                cpu.state.segs[i] = vm86_segment(sel)
        if has_error:
            (self.err, self.eip, self.cs, self.eflags, self.esp,
             self.ss) = _SIX.unpack(cpu.mem.read(top - 24, 24))
        else:
            self.err = None
            self.eip, self.cs, self.eflags, self.esp, self.ss = \
                _FIVE.unpack(cpu.mem.read(top - 20, 20))
        self.cs &= 0xFFFF
        self.ss &= 0xFFFF
        cpu.state.regs[4] = self.esp

    @classmethod
    def taken(cls, cpu, monitor_base: int, vector: int, err: int | None) -> "Frame":
        """The frame the hardware would push for a fault at the CPU's current state,
        taken from the registers (the hand-off: ``Monitor._handoff``); the guest's ESP
        stays in the real ESP, and the CPU in the guest's state (``resume``)."""
        f = cls.__new__(cls)
        st = cpu.state
        f.cpu = cpu
        f.handed, f.vector, f.base = True, vector, monitor_base
        f.err = err
        f.eip, f.cs, f.eflags = st.eip, st.segs[1].selector, cpu.get_eflags()
        f.esp, f.ss = st.regs[4], st.segs[2].selector
        return f

    @property
    def user(self) -> bool:
        """Guest code at CPL 3: ring 3, or virtual-8086 mode."""
        return self.cs & 3 == 3 or bool(self.eflags & VM)

    @property
    def vm86(self) -> bool:
        return bool(self.eflags & VM)

    def resume(self) -> None:
        """The IRET back to the guest through this frame (the values handed to the CPU:
        the frame on the monitor's stack is the monitor's own, and never read again)."""
        cpu = self.cpu
        st = cpu.state
        self.esp = st.regs[4]
        if self.handed:
            if not self.eflags & VM and self.cs & 3:
                # the IRET the monitor's ring 0 would execute, from the state the
                # hand-off left: the same checks and the same result
                cpu.iret((self.eip, self.cs, self.eflags, self.esp, self.ss), ring0=True)
                return
            # (into virtual-8086 mode, the IRET reads nine values from the stack: the
            # monitor's ring 0 and its stack as the gate would have left them)
            enter_ring0(cpu, self.base, self.vector, self.err)
            self.handed = False
            self.top = stack_top(cpu, self.base)
            self.phys_top = self.base + self.top - L.MLIN
            st.regs[4] = self.esp
        if self.eflags & VM:
            # IRET to virtual-8086 mode reads its nine values from the stack (SDM Vol. 2
            # IRET: RETURN-TO-VIRTUAL-8086-MODE): written where the hardware put them
            vals = (self.eip, self.cs, self.eflags, self.esp, self.ss,
                    *(st.segs[i].selector for i in (ES, DS, FS, GS)))
            cpu.mem.write(self.phys_top - 36, struct.pack("<9I", *vals))
            st.regs[4] = self.top - 36
            cpu.iret()
            return
        st.regs[4] = self.top - 20
        cpu.iret((self.eip, self.cs, self.eflags, self.esp, self.ss))
        if not st.segs[SS].big:
            # an IRET to a 16-bit stack loads only SP and keeps the high half of the
            # IRETting ESP (SDM Vol. 2 IRET) -- here the monitor's stack, which the guest
            # never had (the leak Linux's espfix closes): its ESP is the frame's, whole
            st.regs[4] = self.esp & 0xFFFFFFFF
