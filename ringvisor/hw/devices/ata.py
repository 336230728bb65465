"""An ATA hard disk on the PC's primary IDE channel, programmed I/O only.

Register map (the ATA/ATAPI-6 task file; QEMU's ``hw/ide/core.c``)
------------------------------------------------------------------
    port   dir  register
    0x1F0  R/W  data: 16-bit (or 32-bit) words of the sector buffer
    0x1F1  R    error: ABRT 0x04 (command aborted), IDNF 0x10 (no such sector)
           W    features (kept, no effect)
    0x1F2  R/W  sector count (0 means 256); counts down as sectors complete
    0x1F3  R/W  sector number / LBA 7:0
    0x1F4  R/W  cylinder low / LBA 15:8
    0x1F5  R/W  cylinder high / LBA 23:16
    0x1F6  R/W  device/head: bit 4 selects the device (1: the absent slave),
                bit 6 LBA addressing, bits 3:0 head / LBA 27:24
    0x1F7  R    status: BSY 0x80, DRDY 0x40, DF 0x20, DSC 0x10, DRQ 0x08,
                ERR 0x01; reading it lowers IRQ 14
           W    command
    0x3F6  R    alternate status (the same, IRQ untouched)
           W    device control: nIEN 0x02 (no interrupts), SRST 0x04 (reset)

Commands: IDENTIFY DEVICE (0xEC), READ SECTORS (0x20, 0x21), WRITE SECTORS
(0x30, 0x31), FLUSH CACHE (0xE7, 0xEA), INITIALIZE DEVICE PARAMETERS (0x91),
SET FEATURES (0xEF), READ VERIFY SECTORS (0x40, 0x41); anything else is
aborted (status DRDY|ERR, error ABRT), as QEMU does.  Addresses are LBA28 or
CHS with QEMU's guessed geometry for a raw image (``guess_geometry``: the
one its MS-DOS partition table was made for, else 16 heads and 63 sectors
per track; the firmware tells the kernel the same in CMOS).  What QEMU does and this device copies: reset leaves DRDY|DSC
(0x50) and the signature (count 1, sector 1, cylinder 0); a read command
makes each sector ready with DRQ and an interrupt; a write command asks for
the first sector at once (DRQ, no interrupt) and interrupts after each one;
an address past the end aborts; the absent slave reads status 0.  The data
reach the image file as each sector completes (a crash loses nothing written
before it; FLUSH CACHE also fsyncs).

The image is the disk: it is not part of the saved state (as QEMU's
``savevm`` does not copy a raw drive); the task file and the sector buffer
are.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from typing import Callable

from ringvisor.errors import ConfigError
from ringvisor.hw.bus import IoBus

SECTOR = 512
BSY, DRDY, DF, DSC, DRQ, ERR = 0x80, 0x40, 0x20, 0x10, 0x08, 0x01
ABRT, IDNF = 0x04, 0x10
NIEN, SRST = 0x02, 0x04
MULT_MAX = 16                       # MAX_MULT_SECTORS (IDENTIFY word 47)
LBA28_MAX = 0x0FFFFFFF
CMD_READ, CMD_WRITE, CMD_IDENTIFY, CMD_FLUSH = (0x20, 0x21), (0x30, 0x31), 0xEC, (0xE7, 0xEA)
CMD_VERIFY, CMD_INIT_PARAMS, CMD_SET_FEATURES = (0x40, 0x41), 0x91, 0xEF


class DiskError(ConfigError):
    """The image cannot be used (one line for the user)."""


class DiskImage:
    """A raw image file, sector by sector."""

    def __init__(self, path: str, readonly: bool = False) -> None:
        try:
            self.fd = os.open(path, os.O_RDONLY if readonly else os.O_RDWR)
        except OSError as e:
            raise DiskError(f"{path}: cannot open the disk image: {e.strerror}") from None
        size = os.fstat(self.fd).st_size
        if size < SECTOR or size % SECTOR:
            os.close(self.fd)
            raise DiskError(f"{path}: a disk image must be whole 512-byte sectors, at least one "
                            f"({size} bytes)")
        self.path, self.readonly, self.sectors = path, readonly, size // SECTOR

    def read(self, sector: int, count: int) -> bytes:
        return os.pread(self.fd, count * SECTOR, sector * SECTOR)

    def write(self, sector: int, data: bytes) -> None:
        os.pwrite(self.fd, data, sector * SECTOR)

    def flush(self) -> None:
        os.fsync(self.fd)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


# -- the geometry ---------------------------------------------------------------------------
# The BIOS translation of a drive, as CMOS byte 0x39 has it (2 bits a drive): QEMU's
# BIOS_ATA_TRANSLATION_* (hw/block/block.h) less one.
TRANSLATION_NONE, TRANSLATION_LBA, TRANSLATION_LARGE = 0, 1, 2
MBR_SIGNATURE, MBR_PARTITIONS = b"\x55\xaa", 0x1BE
CHS_MAX_CYLINDERS = 16383


@dataclass(frozen=True)
class Geometry:
    """A drive's physical geometry and the BIOS translation its firmware is told of."""

    cylinders: int
    heads: int
    sectors: int
    translation: int = TRANSLATION_NONE


def _chs_for_size(total: int) -> tuple[int, int, int]:
    """QEMU's guess_chs_for_size: 16 heads, 63 sectors, as many cylinders as fit (2..16383)."""
    return max(2, min(total // (16 * 63), CHS_MAX_CYLINDERS)), 16, 63


def _lchs_from_mbr(total: int, sector0: bytes) -> tuple[int, int, int] | None:
    """QEMU's guess_disk_lchs: the geometry an MS-DOS partition table was made for (the
    first entry with sectors and an end head; cylinders the size allows, 1..16383)."""
    if len(sector0) < SECTOR or sector0[510:512] != MBR_SIGNATURE:
        return None
    for i in range(4):
        entry = sector0[MBR_PARTITIONS + 16 * i:MBR_PARTITIONS + 16 * (i + 1)]
        end_head, end_sector = entry[5], entry[6] & 63
        nr_sects, = struct.unpack_from("<I", entry, 12)
        if not nr_sects or not end_head or not end_sector:
            continue
        heads = end_head + 1
        cylinders = total // (heads * end_sector)
        if 1 <= cylinders <= CHS_MAX_CYLINDERS:
            return cylinders, heads, end_sector
    return None


def guess_geometry(image: "DiskImage") -> Geometry:
    """QEMU's hd_geometry_guess (hw/block/hd-geometry.c) for a raw image: the geometry its
    partition table was made for, if it has one with at most 16 heads; else 16 heads and
    63 sectors per track, translated (LBA, or "large" where cylinders x heads fit in
    131072) beyond what the BIOS's CHS reaches (1024 cylinders)."""
    total = image.sectors
    lchs = _lchs_from_mbr(total, image.read(0, 1))
    if lchs is not None and lchs[1] <= 16:
        return Geometry(*lchs, TRANSLATION_NONE)
    cyls, heads, secs = _chs_for_size(total)
    if lchs is not None:            # a partition table for more than 16 heads: translated
        trans = TRANSLATION_LARGE if cyls * heads <= 131072 else TRANSLATION_LBA
    else:                           # hd_bios_chs_auto_trans
        trans = TRANSLATION_NONE if cyls <= 1024 else TRANSLATION_LBA
    return Geometry(cyls, heads, secs, trans)


def _ata_string(text: str, words: int) -> list[int]:
    """An IDENTIFY string: space-padded, two characters per word, first in the high byte."""
    b = text.encode().ljust(2 * words)[:2 * words]
    return [b[i] << 8 | b[i + 1] for i in range(0, len(b), 2)]


class AtaDisk:
    def __init__(self, bus: IoBus, image: DiskImage, raise_irq: Callable[[], None],
                 lower_irq: Callable[[], None], base: int = 0x1F0, ctl: int = 0x3F6) -> None:
        self.image = image
        self.raise_irq, self.lower_irq = raise_irq, lower_irq
        self.geometry = guess_geometry(image)
        bus.register(base, 8, self._read, self._write, "ata", max_access=4, owner=self)
        bus.register(ctl, 1, self._ctl_read, self._ctl_write, "ata-ctl", max_access=1, owner=self)
        self.base = base
        self.stats = {"commands": 0, "sectors_read": 0, "sectors_written": 0, "errors": 0}
        self.reset()

    def reset(self) -> None:
        self.control = 0
        self.irq = False
        self._signature()
        self.select = 0xA0
        self.features = 0
        self.cmd = 0
        self.buf = b""
        self.pos = 0
        self.remaining = 0             # sectors of the command still to transfer

    def _signature(self) -> None:
        self.status, self.error = DRDY | DSC, 0x01      # diagnostic: device 0 passed
        self.nsector, self.sector, self.lcyl, self.hcyl = 1, 1, 0, 0
        self.buf, self.pos, self.remaining = b"", 0, 0

    # -- the interrupt line ----------------------------------------------------------------
    def _set_irq(self) -> None:
        self.irq = True
        if not self.control & NIEN:
            self.raise_irq()

    def _clear_irq(self) -> None:
        self.irq = False
        self.lower_irq()

    # -- addresses ----------------------------------------------------------------------------
    def _lba(self) -> int:
        if self.select & 0x40:
            return (self.select & 0x0F) << 24 | self.hcyl << 16 | self.lcyl << 8 | self.sector
        cyl = self.hcyl << 8 | self.lcyl
        g = self.geometry
        return (cyl * g.heads + (self.select & 0x0F)) * g.sectors + self.sector - 1

    def _set_lba(self, lba: int) -> None:
        """The task file after a sector completes: the next address (QEMU's ide_set_sector)."""
        if self.select & 0x40:
            self.select = (self.select & 0xF0) | (lba >> 24 & 0x0F)
            self.hcyl, self.lcyl, self.sector = lba >> 16 & 0xFF, lba >> 8 & 0xFF, lba & 0xFF
        else:
            g = self.geometry
            cyl, r = divmod(lba, g.heads * g.sectors)
            head, sect = divmod(r, g.sectors)
            self.hcyl, self.lcyl = cyl >> 8 & 0xFF, cyl & 0xFF
            self.select = (self.select & 0xF0) | head
            self.sector = sect + 1

    def _abort(self, error: int = ABRT) -> None:
        self.status, self.error = DRDY | ERR, error
        self.buf, self.pos, self.remaining = b"", 0, 0
        self.stats["errors"] += 1
        self._set_irq()

    # -- commands --------------------------------------------------------------------------
    def _command(self, cmd: int) -> None:
        self.cmd = cmd
        self.stats["commands"] += 1
        self._clear_irq()
        count = self.nsector or 256
        if cmd == CMD_IDENTIFY:
            self.buf, self.pos, self.remaining = self._identify(), 0, 1
            self.status, self.error = DRDY | DSC | DRQ, 0
            self._set_irq()
        elif cmd in CMD_READ or cmd in CMD_VERIFY:
            if not self._in_range(count):
                return
            self.remaining = count
            if cmd in CMD_VERIFY:
                self._set_lba(self._lba() + count - 1)
                self.nsector, self.remaining = 0, 0
                self.status, self.error = DRDY | DSC, 0
                self._set_irq()
                return
            self._next_read()
        elif cmd in CMD_WRITE:
            if self.image.readonly:
                self._abort()
                return
            if not self._in_range(count):
                return
            self.remaining = count
            self.buf, self.pos = bytearray(SECTOR), 0
            self.status, self.error = DRDY | DSC | DRQ, 0    # QEMU: the first sector, no IRQ
        elif cmd in CMD_FLUSH:
            if not self.image.readonly:
                self.image.flush()
            self.status, self.error = DRDY | DSC, 0
            self._set_irq()
        elif cmd in (CMD_INIT_PARAMS, CMD_SET_FEATURES):
            self.status, self.error = DRDY | DSC, 0
            self._set_irq()
        else:
            self._abort()

    def _in_range(self, count: int) -> bool:
        lba = self._lba()
        if lba < 0 or lba + count > min(self.image.sectors, LBA28_MAX + 1):
            self._abort()                 # QEMU: ide_sect_range_ok fails -> ABRT
            return False
        return True

    def _next_read(self) -> None:
        lba = self._lba()
        self.buf, self.pos = self.image.read(lba, 1), 0
        self.stats["sectors_read"] += 1
        self.status, self.error = DRDY | DSC | DRQ, 0
        self._set_irq()

    def _data_done(self) -> None:
        """The host moved the whole buffer."""
        if self.cmd == CMD_IDENTIFY:
            self.remaining, self.buf = 0, b""
            self.status = DRDY | DSC
            return
        lba = self._lba()
        if self.cmd in CMD_WRITE:
            self.image.write(lba, bytes(self.buf))
            self.stats["sectors_written"] += 1
        self._set_lba(lba + 1)
        self.remaining -= 1
        self.nsector = (self.nsector - 1) & 0xFF
        if self.remaining == 0:
            self.buf, self.pos = b"", 0
            self.status = DRDY | DSC
            if self.cmd in CMD_WRITE:
                self._set_irq()
        elif self.cmd in CMD_READ:
            self._next_read()
        else:
            self.buf, self.pos = bytearray(SECTOR), 0
            self.status = DRDY | DSC | DRQ
            self._set_irq()

    def _identify(self) -> bytes:
        """IDENTIFY DEVICE's 256 words, as QEMU's ide_identify fills them for a hard disk."""
        w = [0] * 256
        total = self.image.sectors
        g = self.geometry
        chs = g.cylinders * g.heads * g.sectors
        lba28 = min(total, LBA28_MAX)
        w[0] = 0x0040
        w[1], w[3], w[4], w[5], w[6] = g.cylinders, g.heads, SECTOR * g.sectors, SECTOR, g.sectors
        w[10:20] = _ata_string("QM00001", 10)
        w[20], w[21], w[22] = 3, 512, 4
        w[23:27] = _ata_string("2.5+", 4)
        w[27:47] = _ata_string("QEMU HARDDISK", 20)
        w[47] = 0x8000 | MULT_MAX
        w[48] = 1
        w[49] = 1 << 11 | 1 << 9 | 1 << 8
        w[51], w[52], w[53] = 0x200, 0x200, 1 | 2 | 4
        w[54], w[55], w[56] = g.cylinders, g.heads, g.sectors
        w[57], w[58] = chs & 0xFFFF, chs >> 16
        w[60], w[61] = lba28 & 0xFFFF, lba28 >> 16
        w[62], w[63], w[64] = 0x07, 0x07, 0x03
        w[65:69] = [120, 120, 120, 120]
        w[80], w[81] = 0xF0, 0x16
        w[82], w[83], w[84] = 1 << 14 | 1 << 5 | 1, 1 << 14 | 1 << 13 | 1 << 12, 1 << 14
        w[85], w[86], w[87] = 1 << 14 | 1 << 5 | 1, 1 << 13 | 1 << 12, 1 << 14
        w[93] = 1 | 1 << 14 | 0x2000
        w[100:104] = [total & 0xFFFF, total >> 16 & 0xFFFF, total >> 32 & 0xFFFF, 0]
        return struct.pack("<256H", *w)

    # -- the ports --------------------------------------------------------------------------
    def _present(self) -> bool:
        return not self.select & 0x10          # only the master exists

    def _read(self, port: int, size: int) -> int:
        reg = port - self.base
        if reg == 0:
            return self._data_in(size)
        if not self._present():
            return 0                           # QEMU: an absent device's registers read 0
        if reg == 7:
            self._clear_irq()
            return self.status
        return (self.error, self.nsector, self.sector, self.lcyl, self.hcyl, self.select)[reg - 1] \
            if reg < 7 else 0

    def _data_in(self, size: int) -> int:
        if not self.status & DRQ or self.cmd in CMD_WRITE or not self._present():
            return 0
        chunk = self.buf[self.pos:self.pos + size]
        self.pos += size
        value = int.from_bytes(chunk.ljust(size, b"\0"), "little")
        if self.pos >= len(self.buf):
            self._data_done()
        return value

    def _write(self, port: int, size: int, value: int) -> None:
        reg = port - self.base
        if reg == 0:
            if self.status & DRQ and self.cmd in CMD_WRITE and self._present():
                self.buf[self.pos:self.pos + size] = (value & ((1 << 8 * size) - 1)).to_bytes(size, "little")
                self.pos += size
                if self.pos >= SECTOR:
                    self._data_done()
            return
        value &= 0xFF
        if reg == 1:
            self.features = value
        elif reg == 2:
            self.nsector = value
        elif reg == 3:
            self.sector = value
        elif reg == 4:
            self.lcyl = value
        elif reg == 5:
            self.hcyl = value
        elif reg == 6:
            self.select = value | 0xA0
        elif reg == 7:
            if self._present() and not self.status & BSY:
                self._command(value)

    def _ctl_read(self, port: int, size: int) -> int:
        return self.status if self._present() else 0

    def _ctl_write(self, port: int, size: int, value: int) -> None:
        if value & SRST and not self.control & SRST:
            self.status = BSY | DSC            # held in reset until SRST clears
        elif self.control & SRST and not value & SRST:
            self._signature()
            self.select = 0xA0
            self.cmd = 0
        self.control = value & 0xFF
        if self.irq and not self.control & NIEN:
            self.raise_irq()
        elif self.control & NIEN:
            self.lower_irq()

    # -- saved state ----------------------------------------------------------------------
    state_name = "ata"
    state_version = 1
    REGS = ("status", "error", "features", "nsector", "sector", "lcyl", "hcyl", "select",
            "control", "cmd", "pos", "remaining")

    def get_state(self) -> dict:
        out = {k: getattr(self, k) for k in self.REGS}
        out.update(irq=self.irq, buf=bytes(self.buf), sectors=self.image.sectors)
        return out

    def set_state(self, state: dict) -> None:
        if state["sectors"] != self.image.sectors:
            raise DiskError(f"{self.image.path}: the saved machine had a disk of "
                            f"{state['sectors']} sectors, this one has {self.image.sectors}")
        for k in self.REGS:
            setattr(self, k, int(state[k]))
        self.buf = bytearray(state["buf"]) if self.cmd in CMD_WRITE else bytes(state["buf"])
        self.irq = bool(state["irq"])
        if self.irq and not self.control & NIEN:
            self.raise_irq()
        else:
            self.lower_irq()
