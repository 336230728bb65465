"""The interrupt frame the hardware pushed on the monitor's stack.

Every entry into the monitor comes from guest ring 1 or ring 3 through an
interrupt gate to ring 0, so the hardware switched to the monitor's stack and
pushed SS, ESP, EFLAGS, CS, EIP and, for some exceptions, an error code.  While
the monitor works, the guest's ESP sits in the real ESP register (so the
hardware's own address arithmetic can serve the emulator); ``resume`` returns to
the guest with a real IRET through the frame.  An entry the hardware handed off
(``Monitor._handoff``) pushed no frame: ``Frame.taken`` reads the same values from
the registers.
"""

from __future__ import annotations

import struct

from . import layout as L

_FIVE, _SIX = struct.Struct("<5I"), struct.Struct("<6I")      # (error code first)


class Frame:
    __slots__ = ("cpu", "phys_top", "err", "eip", "cs", "eflags", "esp", "ss")

    def __init__(self, cpu, monitor_base: int, has_error: bool) -> None:
        self.cpu = cpu
        self.phys_top = monitor_base + L.STACK_TOP
        if has_error:
            (self.err, self.eip, self.cs, self.eflags, self.esp,
             self.ss) = _SIX.unpack(cpu.mem.read(self.phys_top - 24, 24))
        else:
            self.err = None
            self.eip, self.cs, self.eflags, self.esp, self.ss = \
                _FIVE.unpack(cpu.mem.read(self.phys_top - 20, 20))
        self.cs &= 0xFFFF
        self.ss &= 0xFFFF
        cpu.state.regs[4] = self.esp

    @classmethod
    def taken(cls, cpu, monitor_base: int, err: int | None) -> "Frame":
        """The frame the hardware would push for a fault at the CPU's current state,
        taken from the registers (the hand-off: ``Monitor._handoff``); the guest's ESP
        stays in the real ESP."""
        f = cls.__new__(cls)
        st = cpu.state
        f.cpu = cpu
        f.phys_top = monitor_base + L.STACK_TOP
        f.err = err
        f.eip, f.cs, f.eflags = st.eip, st.segs[1].selector, cpu.get_eflags()
        f.esp, f.ss = st.regs[4], st.segs[2].selector
        return f

    @property
    def user(self) -> bool:
        return self.cs & 3 == 3

    def resume(self) -> None:
        """The IRET back to the guest through this frame (the values handed to the CPU:
        the frame on the monitor's stack is the monitor's own, and never read again)."""
        cpu = self.cpu
        self.esp = cpu.state.regs[4]
        cpu.state.regs[4] = L.MLIN + L.STACK_TOP - 20
        cpu.iret((self.eip, self.cs, self.eflags, self.esp, self.ss))
