"""The PC's I/O port bus: 65536 byte-wide ports, each owned by at most one device.

Dispatch rules (an ISA-style decoder, as QEMU's ioport layer behaves for the
devices we model):

* An access of ``size`` bytes (1, 2 or 4) at ``port`` goes to the device that
  owns ``port`` -- the *first* byte decides.  If nothing owns it, reads return
  all ones for the size (an undriven bus floats high) and writes vanish.
* If the owner accepts accesses that wide (``max_access``) and owns all the
  bytes touched, it gets one call with the full size.
* Otherwise the access is split into byte accesses, little-endian, each sent to
  whoever owns that byte (unowned bytes read 0xFF).  This is what QEMU does for
  regions whose ``impl.max_access_size`` is 1, e.g. ``outw %ax, $0x20`` writes
  the PIC's command port and then its data port.

Deciding by the first byte matters: a guest probing PCI with ``outl`` to 0xCF8
(nothing here) must not reach the reset register at 0xCF9 through a split.

Handlers receive the absolute port number: ``read(port, size) -> int`` and
``write(port, size, value)``; values are already masked to the size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

ReadFn = Callable[[int, int], int]
WriteFn = Callable[[int, int, int], None]

NUM_PORTS = 0x10000
_MASK = {1: 0xFF, 2: 0xFFFF, 4: 0xFFFFFFFF}


@dataclass(frozen=True)
class PortRange:
    """One device's claim on ``count`` consecutive ports."""

    first: int
    count: int
    read: ReadFn
    write: WriteFn
    name: str
    max_access: int = 4
    owner: object = None     # the device (its state is saved and restored: ringvisor.lifecycle)

    @property
    def end(self) -> int:
        return self.first + self.count


class IoBus:
    """Port I/O dispatch through a flat table indexed by port number."""

    def __init__(self) -> None:
        self._owner: list[PortRange | None] = [None] * NUM_PORTS
        self._ranges: list[PortRange] = []

    # -- wiring ------------------------------------------------------------
    def register(self, first_port: int, count: int, read: ReadFn, write: WriteFn,
                 name: str, max_access: int = 4, owner: object = None) -> PortRange:
        """Claim ports ``first_port .. first_port+count-1`` for a device.

        ``max_access`` is the widest access the handlers understand; wider
        ones are split into bytes (1 for the 8-bit ISA devices of a PC).
        ``owner`` is the device object: a machine's devices are found through it
        when the machine is saved.
        Raises ValueError if any of the ports is already claimed.
        """
        if count <= 0 or first_port < 0 or first_port + count > NUM_PORTS:
            raise ValueError(f"{name}: bad port range {first_port:#x}+{count}")
        if max_access not in (1, 2, 4):
            raise ValueError(f"{name}: max_access must be 1, 2 or 4")
        for p in range(first_port, first_port + count):
            other = self._owner[p]
            if other is not None:
                raise ValueError(f"{name}: port {p:#x} already belongs to {other.name}")
        rng = PortRange(first_port, count, read, write, name, max_access, owner)
        for p in range(first_port, first_port + count):
            self._owner[p] = rng
        self._ranges.append(rng)
        return rng

    def unregister(self, rng: PortRange) -> None:
        """Release a range returned by :meth:`register`."""
        self._ranges.remove(rng)
        for p in range(rng.first, rng.end):
            self._owner[p] = None

    def owner(self, port: int) -> str | None:
        """Name of the device owning ``port`` (for debugging and tests)."""
        rng = self._owner[port & 0xFFFF]
        return rng.name if rng else None

    def ranges(self) -> list[PortRange]:
        return sorted(self._ranges, key=lambda r: r.first)

    # -- accesses ----------------------------------------------------------
    def read(self, port: int, size: int) -> int:
        port &= 0xFFFF
        rng = self._owner[port]
        if rng is None:
            return _MASK[size]
        if size == 1 or (size <= rng.max_access and port + size <= rng.end):
            return rng.read(port, size) & _MASK[size]
        value = 0
        for i in range(size):
            p = port + i
            r = self._owner[p] if p < NUM_PORTS else None
            byte = r.read(p, 1) & 0xFF if r is not None else 0xFF
            value |= byte << (8 * i)
        return value

    def write(self, port: int, size: int, value: int) -> None:
        port &= 0xFFFF
        rng = self._owner[port]
        if rng is None:
            return
        value &= _MASK[size]
        if size == 1 or (size <= rng.max_access and port + size <= rng.end):
            rng.write(port, size, value)
            return
        for i in range(size):
            p = port + i
            r = self._owner[p] if p < NUM_PORTS else None
            if r is not None:
                r.write(p, 1, (value >> (8 * i)) & 0xFF)
