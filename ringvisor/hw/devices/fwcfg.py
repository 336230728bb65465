"""QEMU's firmware configuration device (fw_cfg) on the PC's I/O ports.

Register map
------------
    0x510  W16  selector: the item the data port reads from (its offset goes back to 0)
    0x511  R8   data: the selected item's next byte; 0 past its end or for an unknown key
    0x514  R    DMA: the signature "QEMU CFG" (big-endian, as QEMU answers)
    0x514  W32  DMA address, high half (big-endian)
    0x518  W32  DMA address, low half: the write starts the transfer

DMA descriptor in guest memory (all big-endian): u32 control, u32 length, u64
address.  Control bits: 0x01 error, 0x02 read, 0x04 skip, 0x08 select (the key in
bits 31:16), 0x10 write (refused: every item here is read-only, so it sets the
error bit).  When the transfer is done the control word is 0 (or 0x01).

Items (QEMU docs/specs/fw_cfg.txt; values as QEMU 7.2's PC gives them):

    0x0000 signature "QEMU"      0x0001 interface ID (1 port I/O | 2 DMA)
    0x0003 RAM size (u64)        0x0004 nographic (u16)   0x0005 CPUs at boot (u16)
    0x000F maximum CPUs (u16)    0x0019 the file directory (big-endian: u32 count,
    then per file u32 size, u16 key, u16 reserved, 56-byte name)   0x8002 IRQ 0
    override (u32 1: IRQ 0 is IO-APIC pin 2)
    files from key 0x0020, sorted by name (QEMU's order for current machine types).
"""

from __future__ import annotations

import struct

from ringvisor.hw.bus import IoBus

FW_CFG_PORT = 0x510
FW_CFG_DMA_PORT = 0x514
SIGNATURE, ID, UUID, RAM_SIZE, NOGRAPHIC, NB_CPUS = 0x00, 0x01, 0x02, 0x03, 0x04, 0x05
MAX_CPUS, FILE_DIR, IRQ0_OVERRIDE = 0x0F, 0x19, 0x8002
FILE_FIRST = 0x20
ID_TRADITIONAL, ID_DMA = 1, 2
DMA_SIGNATURE = b"QEMU CFG"
DMA_ERROR, DMA_READ, DMA_SKIP, DMA_SELECT, DMA_WRITE = 0x01, 0x02, 0x04, 0x08, 0x10
FILE_NAME_MAX = 56


class FwCfg:
    """The items are the machine's configuration, set once at boot (``add``, ``add_file``)."""

    state_name = "fw_cfg"
    state_version = 1

    def __init__(self, bus: IoBus, mem) -> None:
        self.mem = mem
        self.items: dict[int, bytes] = {}
        self.files: dict[str, bytes] = {}
        self.key = 0
        self.offset = 0
        self.dma_high = 0
        bus.register(FW_CFG_PORT, 2, self._read, self._write, "fw_cfg", max_access=2, owner=self)
        bus.register(FW_CFG_DMA_PORT, 8, self._dma_read, self._dma_write, "fw_cfg-dma",
                     max_access=4, owner=self)
        self.add(SIGNATURE, b"QEMU")
        self.add(ID, struct.pack("<I", ID_TRADITIONAL | ID_DMA))

    # -- configuration -------------------------------------------------------------------
    def add(self, key: int, data: bytes) -> None:
        self.items[key] = bytes(data)

    def add_file(self, name: str, data: bytes) -> None:
        if len(name.encode()) >= FILE_NAME_MAX:
            raise ValueError(f"fw_cfg file name too long: {name}")
        self.files[name] = bytes(data)
        self._directory()

    def _directory(self) -> None:
        names = sorted(self.files)
        d = bytearray(struct.pack(">I", len(names)))
        for i, name in enumerate(names):
            d += struct.pack(">IHH56s", len(self.files[name]), FILE_FIRST + i, 0, name.encode())
            self.items[FILE_FIRST + i] = self.files[name]
        self.items[FILE_DIR] = bytes(d)

    # -- port I/O ------------------------------------------------------------------------
    def _read(self, port: int, size: int) -> int:
        if port == FW_CFG_PORT:
            return 0                  # the selector is write-only (QEMU reads it as 0)
        value = 0
        for i in range(size):
            value |= self._next() << (8 * i)
        return value

    def _next(self) -> int:
        data = self.items.get(self.key, b"")
        if self.offset < len(data):
            b = data[self.offset]
            self.offset += 1
            return b
        return 0

    def _write(self, port: int, size: int, value: int) -> None:
        if port == FW_CFG_PORT:
            self.key = value & 0xFFFF
            self.offset = 0
        # writes to the data port are ignored (QEMU 2.4 and later)

    def _dma_read(self, port: int, size: int) -> int:
        off = port - FW_CFG_DMA_PORT
        return int.from_bytes(DMA_SIGNATURE[off:off + size], "big")

    def _dma_write(self, port: int, size: int, value: int) -> None:
        off = port - FW_CFG_DMA_PORT
        value = int.from_bytes(value.to_bytes(size, "little"), "big")   # the guest writes BE
        if off == 0 and size == 4:
            self.dma_high = value
        elif off == 4 and size == 4:
            self._dma((self.dma_high << 32) | value)

    def _dma(self, addr: int) -> None:
        control, length, target = struct.unpack(">IIQ", self.mem.read(addr, 16))
        if control & DMA_SELECT:
            self.key, self.offset = control >> 16, 0
        status = 0
        if control & DMA_WRITE:
            status = DMA_ERROR
        elif control & (DMA_READ | DMA_SKIP):
            data = self.items.get(self.key, b"")
            chunk = data[self.offset:self.offset + length]
            if control & DMA_READ:
                self.mem.write(target, chunk.ljust(length, b"\0"))
            self.offset += length
        self.mem.write(addr, struct.pack(">I", status))

    # -- state ----------------------------------------------------------------------------
    def get_state(self) -> dict:
        return {"key": self.key, "offset": self.offset, "dma_high": self.dma_high,
                "items": {k: v for k, v in self.items.items() if k < FILE_FIRST or k >= 0x8000},
                "files": dict(self.files)}

    def set_state(self, state: dict) -> None:
        self.items = {int(k): bytes(v) for k, v in state["items"].items()}
        self.files = {str(k): bytes(v) for k, v in state["files"].items()}
        self._directory()
        self.key = int(state["key"]) & 0xFFFF
        self.offset = int(state["offset"])
        self.dma_high = int(state["dma_high"]) & 0xFFFFFFFF
