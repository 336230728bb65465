"""isa-debug-exit: a port that ends the emulation with a status the guest chose.

Register map
------------
    port              dir  register
    iobase..+iosize-1  W   any write of value v (1, 2 or 4 bytes, v masked to
                           the access size) calls ``on_exit((v << 1) | 1)``
                       R   nothing is there: all ones

This is QEMU's ``-device isa-debug-exit,iobase=0xf4,iosize=0x04``
(hw/misc/debugexit.c): its write handler calls ``exit((val << 1) | 1)``, so the
status is always odd and a guest cannot fake a clean exit 0.  QEMU's process
status is that value modulo 256; ``on_exit`` receives it unreduced, and the
machine decides how to report it.
"""

from __future__ import annotations

from typing import Callable

from ringvisor.hw.bus import IoBus


class DebugExit:
    def __init__(self, bus: IoBus, on_exit: Callable[[int], None],
                 iobase: int = 0xF4, iosize: int = 4) -> None:
        self.on_exit = on_exit
        self.iobase = iobase
        self.iosize = iosize
        bus.register(iobase, iosize, self._read, self._write, "isa-debug-exit", owner=self)

    def _read(self, port: int, size: int) -> int:
        return (1 << (8 * size)) - 1

    def _write(self, port: int, size: int, value: int) -> None:
        value &= (1 << (8 * size)) - 1
        self.on_exit((value << 1) | 1)

    def reset(self) -> None:
        pass

    state_name = "debug-exit"
    state_version = 1

    def get_state(self) -> dict:
        return {}

    def set_state(self, state: dict) -> None:
        pass
