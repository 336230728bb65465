"""The I/O APIC (82093AA) at 0xFEC00000, and the PC's interrupt lines into it and the 8259A.

Register map (MMIO, 32-bit accesses)
------------------------------------
    0x00  IOREGSEL   index of the register IOWIN shows
    0x10  IOWIN      the selected register
    0x40  EOI        (version 0x20) a write of a vector ends it as a local APIC EOI would

Indirect registers (IOREGSEL)
-----------------------------
    0x00  ID (bits 27:24)
    0x01  version: 0x00170020 (version 0x20, 24 redirection entries)
    0x02  arbitration ID (bits 27:24): the ID, read-only (82093AA: loaded from the ID
          register; QEMU returns the ID)
    0x10 + 2n, 0x11 + 2n   redirection entry n, low and high dword:
          7:0 vector  10:8 delivery mode  11 destination mode (1 logical)
          12 delivery status (RO)  13 polarity (1 low)  14 remote IRR (RO)
          15 trigger (1 level)  16 mask  63:56 destination

Behaviour is QEMU's (hw/intc/ioapic.c): an edge on a masked pin is lost; a
level pin whose remote IRR is set is not delivered again until the local APIC's
EOI for its vector comes back on the APIC bus (or through the EOI register),
when a line still high is delivered anew; the polarity bit is stored, the
line's logical level is what counts (QEMU's i440FX wires the ISA lines active
high).  ExtINT entries take their vector from the 8259A.

QEMU's PC wires the ISA IRQ lines both to the 8259A pair and to the IO-APIC,
IRQ n to pin n except IRQ 0 (the PIT), which goes to pin 2 -- the interrupt
source override its MADT announces.  :class:`IsaIrqs` is that wiring.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .lapic import DM_EXTINT, ApicBus

IOAPIC_BASE = 0xFEC00000
IOAPIC_SIZE = 0x1000
NUM_PINS = 24
IOAPIC_VERSION = 0x20 | (NUM_PINS - 1) << 16
RED_MASKED, RED_LEVEL, RED_REMOTE_IRR, RED_DELIVERY_STATUS = 1 << 16, 1 << 15, 1 << 14, 1 << 12
RED_LOGICAL = 1 << 11
RED_RO = RED_REMOTE_IRR | RED_DELIVERY_STATUS
# the bits a redirection entry keeps (QEMU: vector, delivery/destination mode, polarity,
# trigger, mask, destination)
RED_WRITABLE = 0xFF00000000000000 | 0x1ABFF
ISA_PIN = {0: 2}          # ISA IRQ -> IO-APIC pin, where they differ (QEMU's pc_gsi)


@dataclass
class IoApicState:
    id: int = 0
    ioregsel: int = 0
    irr: int = 0                                   # pins requesting (bit n = pin n)
    redir: list[int] = field(default_factory=lambda: [RED_MASKED] * NUM_PINS)


class IoApic:
    state_name = "ioapic"
    state_version = 1

    def __init__(self, bus: ApicBus, pic=None) -> None:
        self.bus = bus
        self.pic = pic                             # for ExtINT entries
        self.s = IoApicState()
        bus.eoi_listeners.append(self.eoi)

    def reset(self) -> None:
        self.s = IoApicState()

    # -- the pins --------------------------------------------------------------------------
    def set_pin(self, pin: int, level: bool) -> None:
        s = self.s
        if not 0 <= pin < NUM_PINS:
            return
        mask = 1 << pin
        entry = s.redir[pin]
        if entry & RED_LEVEL:
            if level:
                s.irr |= mask
                if not entry & RED_REMOTE_IRR:
                    self._service()
            else:
                s.irr &= ~mask
        elif level and not entry & RED_MASKED:     # an edge on a masked pin is lost
            s.irr |= mask
            self._service()

    def _service(self) -> None:
        s = self.s
        for pin in range(NUM_PINS):
            mask = 1 << pin
            entry = s.redir[pin]
            if not s.irr & mask or entry & RED_MASKED:
                continue
            if entry & RED_LEVEL:
                if entry & RED_REMOTE_IRR:
                    continue
                s.redir[pin] = entry | RED_REMOTE_IRR
            else:
                s.irr &= ~mask
            mode = (entry >> 8) & 7
            vector = entry & 0xFF
            if mode == DM_EXTINT:
                if self.pic is None:
                    continue
                vector = self.pic.acknowledge()
            self.bus.message(entry >> 56, bool(entry & RED_LOGICAL), mode, vector,
                             bool(entry & RED_LEVEL))

    def eoi(self, vector: int) -> None:
        """A local APIC ended a level-triggered ``vector``: clear remote IRR where it matches."""
        s = self.s
        again = False
        for pin in range(NUM_PINS):
            entry = s.redir[pin]
            if entry & RED_LEVEL and entry & 0xFF == vector and entry & RED_REMOTE_IRR:
                s.redir[pin] = entry & ~RED_REMOTE_IRR
                again |= bool(s.irr >> pin & 1)
        if again:
            self._service()

    # -- MMIO ------------------------------------------------------------------------------
    def _reg_read(self, index: int) -> int:
        s = self.s
        if index == 0:
            return (s.id & 0xF) << 24
        if index == 1:
            return IOAPIC_VERSION
        if index == 2:
            return (s.id & 0xF) << 24
        n = (index - 0x10) >> 1
        if 0 <= n < NUM_PINS:
            return (s.redir[n] >> (32 * (index & 1))) & 0xFFFFFFFF
        return 0

    def _reg_write(self, index: int, value: int) -> None:
        s = self.s
        if index == 0:
            s.id = (value >> 24) & 0xF
            return
        n = (index - 0x10) >> 1
        if not 0 <= n < NUM_PINS:
            return
        old = s.redir[n]
        if index & 1:
            new = (old & 0xFFFFFFFF) | value << 32
        else:
            new = (old & ~0xFFFFFFFF) | value
        new = (new & RED_WRITABLE) | (old & RED_RO)
        if not new & RED_LEVEL:
            new &= ~RED_REMOTE_IRR                 # an edge entry has no remote IRR
        s.redir[n] = new
        self._service()

    def mmio_read(self, offset: int, size: int) -> int:
        if size == 8:
            # a quadword access is two doublewords, the low one first (QEMU's memory core
            # cuts it so for the IO-APIC's 32-bit implementation: tests/hwguests/mmiosplit)
            return self.mmio_read(offset, 4) | self.mmio_read(offset + 4, 4) << 32
        if offset == 0x00:
            return self.s.ioregsel
        if offset == 0x10 and size == 4:
            return self._reg_read(self.s.ioregsel)
        return 0

    def mmio_write(self, offset: int, size: int, value: int) -> None:
        if size == 8:
            self.mmio_write(offset, 4, value & 0xFFFFFFFF)
            self.mmio_write(offset + 4, 4, value >> 32)
            return
        if offset == 0x00:
            self.s.ioregsel = value & 0xFF
        elif offset == 0x10 and size == 4:
            self._reg_write(self.s.ioregsel, value)
        elif offset == 0x40:
            self.eoi(value & 0xFF)

    # -- state -----------------------------------------------------------------------------
    def get_state(self) -> dict:
        s = self.s
        return {"id": s.id, "ioregsel": s.ioregsel, "irr": s.irr, "redir": list(s.redir)}

    def set_state(self, state: dict) -> None:
        redir = [int(x) & 0xFFFFFFFFFFFFFFFF for x in state["redir"]]
        if len(redir) != NUM_PINS:
            raise ValueError(f"the IO-APIC has {NUM_PINS} redirection entries")
        self.s = IoApicState(int(state["id"]) & 0xF, int(state["ioregsel"]) & 0xFF,
                             int(state["irr"]) & ((1 << NUM_PINS) - 1), redir)


class IsaIrqs:
    """The PC's ISA interrupt lines: each drives the 8259A pair and the IO-APIC (QEMU's
    gsi_handler), IRQ 0 into pin 2."""

    def __init__(self, pic, ioapic: IoApic | None) -> None:
        self.pic = pic
        self.ioapic = ioapic

    def set_irq(self, n: int, level: bool) -> None:
        self.pic.set_irq(n, level)
        if self.ioapic is not None:
            self.ioapic.set_pin(ISA_PIN.get(n, n), level)

    def set_gsi(self, n: int, level: bool) -> None:
        """Global system interrupt ``n``: the ISA IRQs below 16, IO-APIC inputs above."""
        if n < 16:
            self.set_irq(n, level)
        elif self.ioapic is not None:
            self.ioapic.set_pin(n, level)

    def raise_irq(self, n: int) -> None:
        self.set_irq(n, True)

    def lower_irq(self, n: int) -> None:
        self.set_irq(n, False)
