"""The interrupt frame the hardware pushed on the monitor's stack.

Every entry into the monitor comes from guest ring 1 or ring 3 through an
interrupt gate to ring 0, so the hardware switched to the monitor's stack and
pushed SS, ESP, EFLAGS, CS, EIP and, for some exceptions, an error code.  While
the monitor works, the guest's ESP sits in the real ESP register (so the
hardware's own address arithmetic can serve the emulator); ``resume`` writes the
frame back and returns to the guest with a real IRET.
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

    @property
    def user(self) -> bool:
        return self.cs & 3 == 3

    def resume(self) -> None:
        cpu = self.cpu
        self.esp = cpu.state.regs[4]
        cpu.mem.write(self.phys_top - 20, _FIVE.pack(self.eip, self.cs, self.eflags,
                                                     self.esp, self.ss))
        cpu.state.regs[4] = L.MLIN + L.STACK_TOP - 20
        cpu.iret()
