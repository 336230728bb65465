"""blkback's request engine: a blkif shared ring served from a raw image file.

The host of the back-end gives a :class:`Channel`: how to read and write the
mapped ring page, how to move a segment's bytes to or from a page the
front-end granted (by grant reference: ``GNTTABOP_copy`` from Domain 0, a
checked machine access from the hypervisor), and how to notify the
front-end.  :meth:`BlockServer.serve` then does what Linux's
``xen-blkback`` does in ``__do_block_io_op``: take every request between
``req_cons`` and ``req_prod``, check it, do it, answer it, and push the
responses with ``RING_PUSH_RESPONSES_AND_CHECK_NOTIFY``.

A front-end cannot use the protocol to reach beyond its image or its own
grants: an operation other than read, write, flush or barrier is answered
``BLKIF_RSP_EOPNOTSUPP``; a read or write with no segments or more than 11,
a segment whose sectors are not ``first_sect <= last_sect <= 7``, a range
past the end of the image, a write to a read-only disk, or a grant the
hypervisor refuses is answered ``BLKIF_RSP_ERROR`` without touching the
image (writes are gathered whole before any of them reaches it).  A ring
whose indexes break the ring's invariant (more requests outstanding than
slots: ``RING_REQUEST_CONS_OVERFLOW``) is shut: the back-end stops serving
it, says why once, and the domain is left to the toolstack (Linux's
"Frontend provided bogus ring requests").  Work per call is bounded by the
ring's size, so a flood of requests costs the back-end no more than a full
ring per notification.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Protocol

from ringvisor.abi import (BLKIF_MAX_SEGMENTS_PER_REQUEST, BLKIF_REQUEST, BLKIF_RESPONSE,
                           BLKIF_RING_SIZE, SECTOR_SIZE, SECTORS_PER_PAGE, BlkifOp, BlkifRsp,
                           needs_notify, slot_offset)
from ringvisor.hw.devices.ata import DiskImage

O_REQ_PROD, O_REQ_EVENT, O_RSP_PROD, O_RSP_EVENT = 0, 4, 8, 12
VDISK_READONLY = 4                          # the ``info`` bits (io/blkif.h's VDISK_*)


class GrantRefused(Exception):
    """The hypervisor refused a segment's grant (its GNTST_* name)."""


class Channel(Protocol):
    def ring_read(self, offset: int, n: int) -> bytes: ...
    def ring_write(self, offset: int, data: bytes) -> None: ...
    def copy_from(self, segs: list[tuple[int, int, int]]) -> bytes:
        """The bytes of (gref, offset, length) pieces of granted pages, in order."""
    def copy_to(self, segs: list[tuple[int, int, int]], data: bytes) -> None:
        """Write ``data`` across (gref, offset, length) pieces of granted pages."""
    def notify(self) -> None: ...


@dataclass
class Stats:
    requests: int = 0
    sectors_read: int = 0
    sectors_written: int = 0
    flushes: int = 0
    errors: int = 0
    unsupported: int = 0
    by_status: dict = field(default_factory=dict)


class BlockServer:
    def __init__(self, image: DiskImage, channel: Channel) -> None:
        self.image, self.ch = image, channel
        self.req_cons = 0
        self.rsp_prod = 0
        self.broken = ""                    # why the ring was shut ("" while it serves)
        self.stats = Stats()

    @property
    def readonly(self) -> bool:
        return self.image.readonly

    def _u32(self, off: int) -> int:
        return struct.unpack("<I", self.ch.ring_read(off, 4))[0]

    def serve(self) -> int:
        """Answer what the front-end queued (at most a ring's worth); how many."""
        if self.broken:
            return 0
        done = 0
        while done < BLKIF_RING_SIZE:
            req_prod = self._u32(O_REQ_PROD)
            if (req_prod - self.req_cons) & 0xFFFFFFFF > BLKIF_RING_SIZE:
                self.broken = (f"the front-end's ring is inconsistent (req_prod {req_prod}, "
                               f"{self.req_cons} consumed): shut")
                break
            if self.req_cons == req_prod:
                # RING_FINAL_CHECK_FOR_REQUESTS: ask for an event at the next request, look again
                self.ch.ring_write(O_REQ_EVENT, struct.pack("<I", (self.req_cons + 1) & 0xFFFFFFFF))
                if self._u32(O_REQ_PROD) == req_prod:
                    break
                continue
            raw = self.ch.ring_read(slot_offset(self.req_cons), BLKIF_REQUEST.size)
            self.req_cons = (self.req_cons + 1) & 0xFFFFFFFF
            req = BLKIF_REQUEST.unpack(raw)
            status = self._do(req)
            self.stats.requests += 1
            self.stats.by_status[status.name] = self.stats.by_status.get(status.name, 0) + 1
            self._respond(req, status)
            done += 1
        return done

    def _respond(self, req: dict, status: BlkifRsp) -> None:
        self.ch.ring_write(slot_offset(self.rsp_prod), BLKIF_RESPONSE.pack(
            id=req["id"], operation=req["operation"], status=int(status)))
        old, self.rsp_prod = self.rsp_prod, (self.rsp_prod + 1) & 0xFFFFFFFF
        self.ch.ring_write(O_RSP_PROD, struct.pack("<I", self.rsp_prod))
        if needs_notify(old, self.rsp_prod, self._u32(O_RSP_EVENT)):
            self.ch.notify()

    # -- one request ----------------------------------------------------------------------
    def _do(self, req: dict) -> BlkifRsp:
        op = req["operation"]
        if op in (BlkifOp.flush_diskcache, BlkifOp.write_barrier):
            if req["nr_segments"] == 0 or op == BlkifOp.flush_diskcache:
                if not self.readonly:
                    self.image.flush()
                self.stats.flushes += 1
                return BlkifRsp.OKAY
            # a barrier with data: the data, then the flush
            status = self._rw(req, write=True)
            if status == BlkifRsp.OKAY:
                self.image.flush()
                self.stats.flushes += 1
            return status
        if op in (BlkifOp.read, BlkifOp.write):
            return self._rw(req, write=op == BlkifOp.write)
        self.stats.unsupported += 1
        return BlkifRsp.EOPNOTSUPP

    def _rw(self, req: dict, write: bool) -> BlkifRsp:
        n = req["nr_segments"]
        if not 1 <= n <= BLKIF_MAX_SEGMENTS_PER_REQUEST:
            return self._error()
        pieces, sectors = [], 0
        for seg in req["seg"][:n]:
            first, last = seg["first_sect"], seg["last_sect"]
            if not first <= last < SECTORS_PER_PAGE:
                return self._error()
            pieces.append((seg["gref"], first * SECTOR_SIZE, (last - first + 1) * SECTOR_SIZE))
            sectors += last - first + 1
        start = req["sector_number"]
        if start + sectors > self.image.sectors or (write and self.readonly):
            return self._error()
        try:
            if write:
                data = self.ch.copy_from(pieces)
                self.image.write(start, data)
                self.stats.sectors_written += sectors
            else:
                self.ch.copy_to(pieces, self.image.read(start, sectors))
                self.stats.sectors_read += sectors
        except GrantRefused:
            return self._error()
        return BlkifRsp.OKAY

    def _error(self) -> BlkifRsp:
        self.stats.errors += 1
        return BlkifRsp.ERROR


def backend_info(image: DiskImage) -> dict[str, str]:
    """What blkback publishes under ``backend/vbd/DOMID/DEV`` before InitWait."""
    return {"sectors": str(image.sectors), "sector-size": str(SECTOR_SIZE),
            "info": str(VDISK_READONLY if image.readonly else 0),
            "feature-flush-cache": "1", "feature-barrier": "1"}
