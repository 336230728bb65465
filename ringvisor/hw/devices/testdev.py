"""QEMU's pc-testdev (hw/misc/pc-testdev.c), which conformance suites (kvm-unit-tests) use.

Register map
------------
    0xE0-0xE3      R/W   a 32-bit scratch register, any width at any byte
    0xE4-0xE7      W     flush page: QEMU re-protects the host page behind the address
                         written (it tests KVM's dirty tracking); nothing to do here
    0xE8-0xEB      R/W   the same scratch register, byte by byte
    0x2000-0x2017  W8    interrupt line n: a write sets it to (value != 0) -- lines 0-15
                         are the ISA IRQs (the 8259A and the IO-APIC), 16-23 IO-APIC
                         inputs
    0xFF000000     R/W   64 KiB of scratch memory (MMIO)
"""

from __future__ import annotations

from ringvisor.hw.bus import IoBus

IOPORT, FLUSH, IOPORT_BYTE, IRQ_LINES = 0xE0, 0xE4, 0xE8, 0x2000
NUM_LINES = 24
IOMEM_BASE, IOMEM_LEN = 0xFF000000, 0x10000


class PcTestDev:
    state_name = "pc-testdev"
    state_version = 1

    def __init__(self, bus: IoBus, irqs) -> None:
        self.irqs = irqs
        self.data = 0
        self.iomem = bytearray(IOMEM_LEN)
        bus.register(IOPORT, 4, self._read, self._write, "pc-testdev", max_access=4, owner=self)
        bus.register(FLUSH, 4, lambda p, s: 0xFFFFFFFF, lambda p, s, v: None, "pc-testdev-flush",
                     max_access=4, owner=self)
        bus.register(IOPORT_BYTE, 4, self._read, self._write, "pc-testdev-byte", max_access=1,
                     owner=self)
        bus.register(IRQ_LINES, NUM_LINES, lambda p, s: 0xFF, self._irq, "pc-testdev-irq",
                     max_access=1, owner=self)

    def _read(self, port: int, size: int) -> int:
        return (self.data >> (8 * (port & 3))) & ((1 << (8 * size)) - 1)

    def _write(self, port: int, size: int, value: int) -> None:
        shift, mask = 8 * (port & 3), (1 << (8 * size)) - 1
        self.data = (self.data & ~(mask << shift) | (value & mask) << shift) & 0xFFFFFFFF

    def _irq(self, port: int, size: int, value: int) -> None:
        self.irqs.set_gsi(port - IRQ_LINES, bool(value))

    def mmio_read(self, offset: int, size: int) -> int:
        return int.from_bytes(self.iomem[offset:offset + size].ljust(size, b"\0"), "little")

    def mmio_write(self, offset: int, size: int, value: int) -> None:
        n = min(size, IOMEM_LEN - offset)
        self.iomem[offset:offset + n] = value.to_bytes(size, "little")[:n]

    def get_state(self) -> dict:
        return {"data": self.data, "iomem": bytes(self.iomem)}

    def set_state(self, state: dict) -> None:
        iomem = bytes(state["iomem"])
        if len(iomem) != IOMEM_LEN:
            raise ValueError("pc-testdev: the scratch memory is 64 KiB")
        self.data = int(state["data"]) & 0xFFFFFFFF
        self.iomem = bytearray(iomem)
