"""A content-addressed page store: memory shared by content across snapshots and clones.

A page is stored once, under its BLAKE2b-128 digest, however many snapshots
hold it (git's objects, restic's and Firecracker's diff snapshots work the same
way).  A snapshot's memory is then a ``RAMREF`` section: the digest of each
page that is not all zero.  So a hundred snapshots of a 32 MiB guest cost the
pages that differed between them plus 16 bytes per non-zero page per
snapshot, not a hundred times 32 MiB.

On disk, in the store's directory::

    pages.pack   the pages, each zlib-compressed, one after the other (append only)
    pages.idx    digest (16) | offset u64 | length u32, one record per page (append only)

A record is appended to the index only after its page is in the pack, and
both are flushed and fsynced together before a snapshot that refers to them
is written: a crash leaves at worst pages nobody refers to, which the next
compaction drops.

``RAMREF`` payload: size u64 | page size u32 | bitmap (one bit per page: set
for a stored page) | the digests of the stored pages, in order.
"""

from __future__ import annotations

import hashlib
import os
import struct
import zlib
from pathlib import Path

from . import ram as RAM
from .stream import BadImage

DIGEST = 16
IDX = struct.Struct("<16sQI")
HEAD = struct.Struct("<QI")
PAGE = RAM.PAGE


def digest(page) -> bytes:
    return hashlib.blake2b(page, digest_size=DIGEST).digest()


class PageStore:
    def __init__(self, directory: str | os.PathLike) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.pack_path = self.dir / "pages.pack"
        self.idx_path = self.dir / "pages.idx"
        self.index: dict[bytes, tuple[int, int]] = {}
        self._load_index()
        self._pack = None

    def _load_index(self) -> None:
        if not self.idx_path.exists():
            return
        raw = self.idx_path.read_bytes()
        size = self.pack_path.stat().st_size if self.pack_path.exists() else 0
        for off in range(0, len(raw) - IDX.size + 1, IDX.size):
            d, at, n = IDX.unpack_from(raw, off)
            if at + n <= size:             # (a record past the pack's end: a crash; ignore)
                self.index[d] = (at, n)

    # -- writing -------------------------------------------------------------------------
    def put_pages(self, ram, pages: list[int]) -> list[bytes]:
        """Store pages ``pages`` of ``ram`` (those not yet stored); their digests."""
        out = []
        new = []
        for i in pages:
            page = ram[i * PAGE:(i + 1) * PAGE]
            d = digest(page)
            out.append(d)
            if d not in self.index:
                self.index[d] = (-1, 0)
                new.append((d, page))
        if new:
            with open(self.pack_path, "ab") as pack, open(self.idx_path, "ab") as idx:
                at = pack.tell()
                recs = []
                for d, page in new:
                    blob = zlib.compress(page, 1)
                    pack.write(blob)
                    self.index[d] = (at, len(blob))
                    recs.append(IDX.pack(d, at, len(blob)))
                    at += len(blob)
                pack.flush()
                os.fsync(pack.fileno())
                idx.write(b"".join(recs))
                idx.flush()
                os.fsync(idx.fileno())
        return out

    def ramref(self, ram) -> bytes:
        """The RAMREF payload for ``ram``, storing whatever pages are new."""
        pages = RAM.nonzero_pages(ram)
        digests = self.put_pages(ram, pages)
        return HEAD.pack(len(ram), PAGE) + RAM.page_bitmap(pages, len(ram) // PAGE) + b"".join(digests)

    # -- reading -------------------------------------------------------------------------
    def get(self, d: bytes) -> bytes:
        loc = self.index.get(d)
        if loc is None or loc[0] < 0:
            raise BadImage(f"{self.dir}: page {d.hex()} is missing from the store")
        if self._pack is None:
            self._pack = open(self.pack_path, "rb")
        self._pack.seek(loc[0])
        try:
            page = zlib.decompress(self._pack.read(loc[1]))
        except zlib.error:
            raise BadImage(f"{self.dir}: page {d.hex()} is damaged in the store") from None
        if len(page) != PAGE or digest(page) != d:
            raise BadImage(f"{self.dir}: page {d.hex()} is damaged in the store")
        return page

    def close(self) -> None:
        if self._pack is not None:
            self._pack.close()
            self._pack = None

    def bytes_on_disk(self) -> int:
        return sum(p.stat().st_size for p in (self.pack_path, self.idx_path) if p.exists())

    def compact(self, live: set[bytes]) -> int:
        """Rewrite the pack with only the pages in ``live``; the bytes freed."""
        before = self.bytes_on_disk()
        tmp_pack, tmp_idx = self.dir / "pages.pack.new", self.dir / "pages.idx.new"
        index = {}
        with open(tmp_pack, "wb") as pack, open(tmp_idx, "wb") as idx:
            at = 0
            for d in sorted(live):
                if d not in self.index:
                    continue
                blob = zlib.compress(self.get(d), 1)
                pack.write(blob)
                idx.write(IDX.pack(d, at, len(blob)))
                index[d] = (at, len(blob))
                at += len(blob)
            for f in (pack, idx):
                f.flush()
                os.fsync(f.fileno())
        self.close()
        os.replace(tmp_pack, self.pack_path)
        os.replace(tmp_idx, self.idx_path)
        self.index = index
        return before - self.bytes_on_disk()


def parse_ramref(payload: bytes, what: str = "snapshot") -> tuple[int, list[tuple[int, bytes]]]:
    """(RAM size, [(page number, digest)]) of a RAMREF payload."""
    try:
        size, page = HEAD.unpack_from(payload)
    except struct.error:
        raise BadImage(f"{what}: corrupt (memory references cut short)") from None
    if page != PAGE or size % PAGE or size > (4 << 30):
        raise BadImage(f"{what}: corrupt (memory of {size} bytes in {page}-byte pages)")
    n = size // PAGE
    off = HEAD.size
    bitmap = payload[off:off + (n + 7) // 8]
    off += (n + 7) // 8
    pages = RAM.bitmap_pages(bitmap, n) if len(bitmap) == (n + 7) // 8 else None
    if pages is None or len(payload) != off + DIGEST * len(pages):
        raise BadImage(f"{what}: corrupt (memory references do not match their bitmap)")
    return size, [(i, payload[off + k * DIGEST:off + (k + 1) * DIGEST]) for k, i in enumerate(pages)]
