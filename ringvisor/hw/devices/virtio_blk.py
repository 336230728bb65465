"""virtio-blk: a block device on legacy virtio-pci (virtio 1.0 section 5.2; QEMU's
``hw/block/virtio-blk.c``), backed by the same raw image file as the ATA disk.

PCI 1af4:1001, subsystem 1af4:0002, class 01 00 00 (mass storage, SCSI: QEMU's), one
queue of 256 entries (QEMU 7.2's ``queue-size``).

Configuration space (after the transport's registers, at BAR + 0x14)
--------------------------------------------------------------------
    0x00  u64  capacity, in 512-byte sectors
    0x08  u32  size_max (0: not offered)
    0x0C  u32  seg_max: buffers per request besides the header and status (F_SEG_MAX)
    0x10  u16  geometry: cylinders, u8 heads, u8 sectors (F_GEOMETRY: QEMU's guess
               for a raw image, as the ATA disk reports)
    0x14  u32  blk_size: 512 (F_BLK_SIZE)

Features offered: SEG_MAX (2), GEOMETRY (4), RO (5, a read-only image), BLK_SIZE (6),
FLUSH (9).

A request is a chain: a driver-readable header ``{u32 type, u32 reserved, u64 sector}``,
the data (driver-readable for a write, device-writable for a read), and one
device-writable status byte: OK 0, IOERR 1, UNSUPP 2.  Types: IN 0 (read), OUT 1
(write), FLUSH 4 (fsync the image), GET_ID 8 (the serial number: an empty string, as QEMU
without ``serial=``).  As QEMU: data that are not whole sectors, or sectors past the
capacity, fail with IOERR; a write to a read-only image fails with IOERR; another type
is UNSUPP.  The used length is the chain's device-writable size (QEMU's ``in_len``).
"""

from __future__ import annotations

import struct

from .ata import SECTOR, DiskImage, guess_geometry
from .virtio import CLASS_STORAGE_SCSI, VirtioPci, VirtqueueError

F_SEG_MAX, F_GEOMETRY, F_RO, F_BLK_SIZE, F_FLUSH = 1 << 2, 1 << 4, 1 << 5, 1 << 6, 1 << 9
T_IN, T_OUT, T_FLUSH, T_GET_ID = 0, 1, 4, 8
S_OK, S_IOERR, S_UNSUPP = 0, 1, 2
QUEUE_SIZE = 256
ID_BYTES = 20


class VirtioBlk(VirtioPci):
    state_name = "virtio-blk"
    state_version = 1
    VIRTIO_ID, PCI_DEVICE, CLASS = 2, 0x1001, CLASS_STORAGE_SCSI
    QUEUE_SIZES = (QUEUE_SIZE,)

    def __init__(self, mem, image: DiskImage) -> None:
        self.image = image
        self.geometry = guess_geometry(image)      # blkconf_geometry, as the IDE disk's
        self.FEATURES = F_SEG_MAX | F_GEOMETRY | F_BLK_SIZE | F_FLUSH | (F_RO if image.readonly else 0)
        super().__init__(mem)
        self.stats.update(sectors_read=0, sectors_written=0, flushes=0, errors=0)

    def device_config(self) -> bytes:
        g = self.geometry
        return struct.pack("<QIIHBBI", self.image.sectors, 0, QUEUE_SIZE - 2, g.cylinders,
                           g.heads, g.sectors, SECTOR)

    def serve(self, index: int) -> None:
        q = self.queues[0]
        while q.pending():
            head, chain = q.pop()
            writable = [(a, n) for a, n, w in chain if w]
            if not writable or writable[-1][1] < 1:
                raise VirtqueueError("a request without a status byte")
            readable = q.gather(chain)
            if len(readable) < 16:
                raise VirtqueueError("a request header shorter than 16 bytes")
            kind, _, sector = struct.unpack_from("<IIQ", readable)
            room = sum(n for _, n in writable) - 1          # data bytes before the status
            status, data = self._request(kind, sector, readable[16:], room)
            if data:
                q.scatter(chain, data)
            addr, n = writable[-1]
            q._write(addr + n - 1, bytes([status]))
            if status != S_OK:
                self.stats["errors"] += 1
            # the used length is every device-writable byte, whatever the outcome, as
            # QEMU reports it (req->in_len in virtio_blk_req_complete)
            self.complete(0, head, room + 1)

    def _request(self, kind: int, sector: int, data: bytes, room: int) -> tuple[int, bytes]:
        """(status, bytes to return) of one request; ``data``: what the driver sent after
        the header, ``room``: the device-writable bytes before the status byte."""
        if kind == T_IN:
            if room % SECTOR or not self._in_range(sector, room // SECTOR):
                return S_IOERR, b""
            self.stats["sectors_read"] += room // SECTOR
            return S_OK, self.image.read(sector, room // SECTOR)
        if kind == T_OUT:
            if self.image.readonly or len(data) % SECTOR or not self._in_range(sector, len(data) // SECTOR):
                return S_IOERR, b""
            self.image.write(sector, data)
            self.stats["sectors_written"] += len(data) // SECTOR
            return S_OK, b""
        if kind == T_FLUSH:
            self.image.flush()
            self.stats["flushes"] += 1
            return S_OK, b""
        if kind == T_GET_ID:
            # QEMU copies the serial string and its NUL, at most 20 bytes: "" without serial=
            return S_OK, bytes(min(1, room, ID_BYTES))
        return S_UNSUPP, b""

    def _in_range(self, sector: int, count: int) -> bool:
        return sector + count <= self.image.sectors
