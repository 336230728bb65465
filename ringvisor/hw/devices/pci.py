"""PCI: configuration mechanism #1 on ports 0xCF8/0xCFC and bus 0 of QEMU's i440FX PC.

Register map (I/O ports)
------------------------
    0xCF8  R/W32  CONFIG_ADDRESS: bit 31 enable, 23:16 bus, 15:11 device, 10:8
                  function, 7:2 register (other widths are not the address register)
    0xCF9  R/W8   the PIIX3's reset control register (devices/reset.py): it sits inside
                  the host's range, so the host hands byte accesses there to it
    0xCFC-0xCFF   CONFIG_DATA: the addressed dword, any width; all ones where no
                  function answers

Bus 0 as QEMU 7.2 enumerates it (``-nodefaults``, and with QEMU's test devices) and
SeaBIOS leaves it for a kernel (read back there by ``tests/hwguests/firmware``):

    00.0  8086:1237 i440FX host bridge, rev 02 (PAM registers 0x59-0x5F as SeaBIOS
          sets them; memory is not remapped by them here)
    01.0  8086:7000 PIIX3 ISA bridge, multi-function; PIRQA-D routed to IRQ 10, 10, 11, 11
    01.1  8086:7010 PIIX3 IDE (no drives, as with -nodefaults: its configuration space
          and bus-master BAR only)
    01.3  8086:7113 PIIX4 ACPI, rev 03: PM base 0x600 (registers 0x40, 0x80), interrupt
          pin A on IRQ 9 (the SCI)
    02.0  1b36:0005 pci-testdev: BAR 0 memory (4 KiB), BAR 1 I/O (256 bytes)

Every function has subsystem 1af4:1100 and command 0x0103 (I/O, memory, SERR#) as
SeaBIOS leaves it.  A BAR decodes while its command bit is set: writes of all ones
read back its size mask; a new address moves the device's registers there.

A device for others to add: subclass :class:`PciFunction`, fill ``config``, list its
BARs (size, I/O or memory, the object with ``mmio_read``/``mmio_write`` that answers
there), and ``PciHost.add(slot, fn, device)``.
"""

from __future__ import annotations

import struct

from ringvisor.hw.bus import IoBus

CONFIG_ADDRESS, CONFIG_DATA = 0xCF8, 0xCFC
RESET_CONTROL = 0xCF9
CMD_IO, CMD_MEM, CMD_SERR = 1, 2, 0x100
SUBSYSTEM = (0x1AF4, 0x1100)
BAR_IO = 1


class PciFunction:
    """One function's 256-byte configuration space; ``wmask`` says which bits a write sets."""

    state_name = ""                           # saved by the host, with the others

    def __init__(self, vendor: int, device: int, cls: int, revision: int = 0,
                 header: int = 0, bars: tuple = ()) -> None:
        self.config = bytearray(256)
        self.wmask = bytearray(256)
        struct.pack_into("<HH", self.config, 0, vendor, device)
        struct.pack_into("<I", self.config, 8, cls << 8 | revision)
        self.config[0x0E] = header
        struct.pack_into("<HH", self.config, 0x2C, *SUBSYSTEM)
        struct.pack_into("<H", self.wmask, 4, 0x0547)     # command: I/O, memory, master, ...
        self.wmask[0x3C] = 0xFF                           # interrupt line
        # (size, is_io, device answering there or None)
        self.bars = list(bars)
        for i, (size, io, _) in enumerate(self.bars):
            if size:
                struct.pack_into("<I", self.wmask, 0x10 + 4 * i, ~(size - 1) & 0xFFFFFFFF & ~(3 if io else 0xF))
                self.config[0x10 + 4 * i] = BAR_IO if io else 0

    def read(self, reg: int, size: int) -> int:
        return int.from_bytes(self.config[reg:reg + size], "little")

    def write(self, reg: int, size: int, value: int) -> None:
        for i in range(size):
            b, m = (value >> (8 * i)) & 0xFF, self.wmask[reg + i]
            self.config[reg + i] = (self.config[reg + i] & ~m) | (b & m)

    def bar(self, i: int) -> int:
        v = struct.unpack_from("<I", self.config, 0x10 + 4 * i)[0]
        return v & ~3 if self.bars[i][1] else v & ~0xF


class PciTestDev(PciFunction):
    """QEMU's pci-testdev (hw/misc/pci-testdev.c): per BAR, three tests a guest selects
    by writing its number at offset 0; the header then reads back (test, width, the
    offset to write, the data to match, the count of matching writes, the name), and
    each byte write of the data at that offset counts ("wildcard" counts any byte)."""

    TESTS = ("no-eventfd", "wildcard-eventfd", "datamatch-eventfd")
    DATAMATCH, NOMATCH = 0xFA, 0xCE
    SIZES = (2048, 128)                        # memory, port I/O

    def __init__(self) -> None:
        super().__init__(0x1B36, 0x0005, 0x00FF00, bars=((4096, False, None), (256, True, None)))
        self.bars = [(4096, False, _TestDevWindow(self, 0)), (256, True, _TestDevWindow(self, 1))]
        self.current = -1
        self.counts = [0] * 6

    def _header(self, t: int) -> bytes:
        kind = t // 3
        name = f"{('mmio', 'portio')[kind]}-{self.TESTS[t % 3]}".encode() + b"\0"
        match = t % 3 != 1
        return struct.pack("<BBxxIBxxxI", t, 1, self.SIZES[kind] + t, self.DATAMATCH if match
                           else self.NOMATCH, self.counts[t]) + name

    def access(self, kind: int, offset: int, write: bool, value: int = 0) -> int:
        if write:
            if offset == 0:
                self.current = -1
                if value < 3:
                    self.current = kind * 3 + value
                    self.counts[self.current] = 0
                return 0
            t = self.current
            if t < 0 or offset != self.SIZES[t // 3] + t:
                return 0
            # the eventfd tests' writes go to an event notifier, not to the device, on
            # QEMU without KVM too (memory_region_add_eventfd): only "no-eventfd" counts
            if t % 3 == 0 and value == self.DATAMATCH:
                self.counts[t] += 1
            return 0
        if self.current < 0:
            return 0
        hdr = self._header(self.current)
        return hdr[offset] if offset + 1 < len(hdr) else 0


class _TestDevWindow:
    """One BAR of the pci-testdev: byte-wide accesses, as QEMU's ops declare."""

    def __init__(self, dev: PciTestDev, kind: int) -> None:
        self.dev, self.kind = dev, kind

    def mmio_read(self, offset: int, size: int) -> int:
        return sum(self.dev.access(self.kind, offset + i, False) << (8 * i) for i in range(size))

    def mmio_write(self, offset: int, size: int, value: int) -> None:
        for i in range(size):
            self.dev.access(self.kind, offset + i, True, (value >> (8 * i)) & 0xFF)


class PciHost:
    """The i440FX's configuration mechanism and bus 0; maps the functions' BARs."""

    state_name = "pci"
    state_version = 1

    def __init__(self, bus: IoBus, mem, reset_control) -> None:
        self.io, self.mem, self.reset_control = bus, mem, reset_control
        self.address = 0
        self.functions: dict[int, PciFunction] = {}          # devfn -> function
        self._mapped: dict[tuple[int, int], object] = {}      # (devfn, bar) -> mapping
        bus.register(CONFIG_ADDRESS, 8, self._read, self._write, "pci-host", max_access=4,
                     owner=self)

    def add(self, slot: int, fn: int, function: PciFunction) -> None:
        self.functions[slot << 3 | fn] = function

    # -- ports ----------------------------------------------------------------------------
    def _read(self, port: int, size: int) -> int:
        if port == RESET_CONTROL and size == 1:
            return self.reset_control._readcf9(port, 1)
        if port == CONFIG_ADDRESS:
            return self.address if size == 4 else 0xFFFFFFFF
        if port < CONFIG_DATA:
            return 0xFFFFFFFF
        f, reg = self._target(port)
        if f is None:
            return 0xFFFFFFFF
        return f.read(reg, min(size, 256 - reg))

    def _write(self, port: int, size: int, value: int) -> None:
        if port == RESET_CONTROL and size == 1:
            self.reset_control._writecf9(port, 1, value)
        elif port == CONFIG_ADDRESS and size == 4:
            self.address = value & 0x80FFFFFC
        elif port >= CONFIG_DATA:
            f, reg = self._target(port)
            if f is not None:
                f.write(reg, min(size, 256 - reg), value)
                self._remap(self.address >> 8 & 0xFF)

    def _target(self, port: int) -> tuple[PciFunction | None, int]:
        a = self.address
        if not a & 0x80000000 or a >> 16 & 0xFF:
            return None, 0
        return self.functions.get(a >> 8 & 0xFF), (a & 0xFC) + (port - CONFIG_DATA)

    # -- BARs -----------------------------------------------------------------------------
    def _remap(self, devfn: int) -> None:
        f = self.functions.get(devfn)
        cmd = f.read(4, 2)
        for i, (size, io, dev) in enumerate(f.bars):
            if dev is None:
                continue
            enabled = cmd & (CMD_IO if io else CMD_MEM)
            base = f.bar(i)
            want = (io, base, size) if enabled and base and base + size <= (0x10000 if io else 1 << 32) else None
            key = (devfn, i)
            old = self._mapped.get(key)
            if old is not None and old[0] == want:
                continue
            if old is not None:
                self._unmap(old)
                del self._mapped[key]
            if want is not None:
                self._mapped[key] = (want, self._map(want, dev))

    def _map(self, want, dev):
        io, base, size = want
        if io:
            return self.io.register(base, size, lambda p, s: dev.mmio_read(p - base, s),
                                    lambda p, s, v: dev.mmio_write(p - base, s, v),
                                    "pci-bar", max_access=4, owner=self)
        self.mem.add_mmio(base, size, dev, owner=self)
        return dev

    def _unmap(self, mapping) -> None:
        (io, _, _), handle = mapping
        if io:
            self.io.unregister(handle)
        else:
            self.mem.remove_mmio(handle)

    def remap_all(self) -> None:
        for devfn in sorted(self.functions):
            self._remap(devfn)

    # -- state ------------------------------------------------------------------------------
    def get_state(self) -> dict:
        st = {"address": self.address,
              "config": {devfn: bytes(f.config) for devfn, f in self.functions.items()}}
        tdev = [f for f in self.functions.values() if isinstance(f, PciTestDev)]
        if tdev:
            st["testdev"] = {"current": tdev[0].current, "counts": list(tdev[0].counts)}
        return st

    def set_state(self, state: dict) -> None:
        self.address = int(state["address"]) & 0x80FFFFFC
        for devfn, data in state["config"].items():
            f = self.functions.get(int(devfn))
            if f is None or len(bytes(data)) != 256:
                raise ValueError(f"no PCI function {int(devfn):#x} of this layout on this machine")
            f.config[:] = bytes(data)
        for f in self.functions.values():
            if isinstance(f, PciTestDev) and "testdev" in state:
                f.current = int(state["testdev"]["current"])
                f.counts = [int(c) for c in state["testdev"]["counts"]][:6]
        self.remap_all()


def i440fx_bus(host: PciHost) -> None:
    """Bus 0 of QEMU's PC, programmed as SeaBIOS leaves it (see the module doc)."""
    hb = PciFunction(0x8086, 0x1237, 0x060000, revision=2)
    for reg in range(0x59, 0x60):
        hb.wmask[reg] = 0xFF                              # PAM0-6
    hb.config[0x59:0x60] = bytes([0x10, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11])
    isa = PciFunction(0x8086, 0x7000, 0x060100, header=0x80)
    isa.wmask[0x60:0x64] = b"\xff" * 4                    # PIRQ route control
    isa.config[0x60:0x64] = bytes([0x0A, 0x0A, 0x0B, 0x0B])
    struct.pack_into("<H", isa.config, 6, 0x0200)
    ide = PciFunction(0x8086, 0x7010, 0x010180, bars=((0, False, None),) * 4 + ((16, True, None),))
    struct.pack_into("<H", ide.config, 6, 0x0280)
    pm = PciFunction(0x8086, 0x7113, 0x068000, revision=3)
    struct.pack_into("<H", pm.config, 6, 0x0280)
    pm.config[0x3D] = 1                                   # INTA#
    struct.pack_into("<I", pm.config, 0x40, 0x601)        # PM base 0x600 (I/O)
    pm.config[0x80] = 1                                   # PMIOSE: the PM block decodes
    tdev = PciTestDev()
    for slot, fn, f in ((0, 0, hb), (1, 0, isa), (1, 1, ide), (1, 3, pm), (2, 0, tdev)):
        host.add(slot, fn, f)
        struct.pack_into("<H", f.config, 4, CMD_IO | CMD_MEM | CMD_SERR)
    # SeaBIOS's allocation: I/O from 0xC000 and memory down from 0xFEC00000, larger first
    struct.pack_into("<I", tdev.config, 0x10, 0xFEBFF000)
    struct.pack_into("<I", tdev.config, 0x14, 0xC000 | BAR_IO)
    struct.pack_into("<I", ide.config, 0x20, 0xC100 | BAR_IO)
    pm.config[0x3C] = 9
    host.remap_all()
