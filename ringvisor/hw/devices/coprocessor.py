"""The PC's coprocessor error logic: FERR# to IRQ 13, and the port that clears it.

Register map
------------
    port   dir  register
    0xF0    W   any write: deassert IRQ 13 and assert IGNNE# (the FPU then
                ignores further unmasked exceptions until its exception flags
                are cleared, which deasserts FERR# and so IGNNE#)
            R   nothing is there: all ones

With CR0.NE = 0 (MS-DOS compatibility, SDM Vol. 1 Appendix D) an unmasked x87
exception found by a waiting instruction asserts FERR#, which the PC's chipset
routes to IRQ 13 through the slave 8259A; the IRQ 13 handler writes port 0xF0.
QEMU's PC does the same (hw/i386/pc.c: ``ioportF0_write``), raising IRQ 13 from
FWAIT and letting the instruction go on.
"""

from __future__ import annotations

from typing import Callable

from ringvisor.hw.bus import IoBus

PORT = 0xF0
IRQ = 13


class CoprocessorError:
    def __init__(self, bus: IoBus, cpu, raise_irq: Callable[[], None],
                 lower_irq: Callable[[], None]) -> None:
        self.cpu = cpu
        self.raise_irq, self.lower_irq = raise_irq, lower_irq
        self.ferr = False                 # the level of FERR# as last driven by the FPU
        cpu.ferr_line = self._ferr
        bus.register(PORT, 1, self._read, self._write, "coprocessor-error", owner=self)

    def _ferr(self, level: bool) -> None:
        self.ferr = level
        if level:
            self.raise_irq()
        else:
            self.lower_irq()

    def _read(self, port: int, size: int) -> int:
        return (1 << (8 * size)) - 1

    def _write(self, port: int, size: int, value: int) -> None:
        self.lower_irq()
        self.cpu.ignne = True

    def reset(self) -> None:
        self.ferr = False
        self.cpu.ignne = False

    state_name = "coprocessor-error"
    state_version = 1

    def get_state(self) -> dict:
        return {"ferr": self.ferr, "ignne": self.cpu.ignne}

    def set_state(self, state: dict) -> None:
        self.ferr = bool(state["ferr"])
        self.cpu.ignne = bool(state["ignne"])
