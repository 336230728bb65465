"""Memory mapped from an image: restore in milliseconds, clones that share their pages.

An image saved *mapped* (``run --stop-at N --save FILE --mapped``, ``ringvisor
clone``) keeps the machine's memory as it is, page for page, after its END
record, and a ``MAPPED`` section in place of ``RAM`` says where::

    MAPPED payload   size u64 | page size u32 | offset u64 | bitmap (1 bit a page: stored)
                     | crc32 u32 of each stored page, in page order
    after END        zero padding to ``offset`` (a multiple of 4096), then page i at
                     offset + 4096 * i; the pages not in the bitmap are holes of the
                     file (all zero; they take no disk)

Restoring maps that region of the file ``MAP_PRIVATE`` as the machine's RAM
(``PhysicalMemory``'s backing) instead of reading it: the host kernel loads a
page on the guest's first touch and copies it on its first write -- what
Firecracker's snapshot restore does with its memory file.  So a restore costs
the states and one ``mmap`` call, whatever the memory's size, and any number
of VMs restored from one image share every page none of them has written
(``ringvisor clone``; ``vm.clone`` for a running VM).  ``sharing()``
reads the kernel's own accounting (``/proc/self/smaps``) of a mapping: pages
resident, pages copied on write, pages shared with another mapping.

Checks: the section's CRC covers the layout and every stored page's CRC32;
``verify`` (the default) reads each stored page with ``pread`` -- not through
the mapping, so the mapping stays untouched and lazily loaded -- and compares.
``verify=False`` (``restore --lazy``) skips that, as Firecracker does: a
damaged page then reaches the guest unnoticed.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import struct
import zlib

from . import ram as RAMCODEC
from .stream import MAPPED, BadImage, Section, pack_image, write_atomic

PAGE = RAMCODEC.PAGE
HEAD = struct.Struct("<QIQ")
MAPPED_VERSION = 1


def _align(n: int) -> int:
    return -(-n // PAGE) * PAGE


def _layout(ram, offset: int) -> tuple[list[int], bytes]:
    pages = RAMCODEC.nonzero_pages(ram)
    bitmap = RAMCODEC.page_bitmap(pages, len(ram) // PAGE)
    crcs = struct.pack(f"<{len(pages)}I", *(zlib.crc32(ram[i * PAGE:(i + 1) * PAGE]) for i in pages))
    return pages, HEAD.pack(len(ram), PAGE, offset) + bitmap + crcs


def pack(sections: list[Section], ram):
    """(a function writing the mapped image to an open file, its MAPPED section, the
    number of stored pages, its apparent size) for ``sections`` (without memory)."""
    pages, payload = _layout(ram, 0)
    prefix = pack_image(sections + [Section(MAPPED, "ram", MAPPED_VERSION, payload)])
    offset = _align(len(prefix))           # the payload's length does not depend on it
    mapped = Section(MAPPED, "ram", MAPPED_VERSION,
                     HEAD.pack(len(ram), PAGE, offset) + payload[HEAD.size:])
    prefix = pack_image(sections + [mapped])

    def write(f) -> None:
        f.write(prefix)
        f.flush()
        fd = f.fileno()
        for i in pages:
            os.pwrite(fd, ram[i * PAGE:(i + 1) * PAGE], offset + i * PAGE)
        os.ftruncate(fd, offset + len(ram))
    return write, mapped, len(pages), offset + len(ram)


def save(path, sections: list[Section], ram) -> tuple[int, int]:
    """Write a mapped image atomically; (apparent size, bytes of pages stored)."""
    write, _, n, size = pack(sections, ram)
    write_atomic(path, write)
    return size, n * PAGE


def parse(section: Section, what: str = "image") -> tuple[int, int, list[int], tuple]:
    """(size, offset, stored page numbers, their CRC32s) of a MAPPED section."""
    if section.version > MAPPED_VERSION:
        raise BadImage(f"{what}: made by a newer ringvisor (mapped memory version "
                       f"{section.version})")
    p = section.payload
    try:
        size, page, offset = HEAD.unpack_from(p)
    except struct.error:
        raise BadImage(f"{what}: corrupt (the mapped memory's layout is cut short)") from None
    if page != PAGE or size % PAGE or not 0 < size <= (4 << 30) or offset % PAGE:
        raise BadImage(f"{what}: corrupt (mapped memory of {size} bytes in {page}-byte pages "
                       f"at offset {offset})")
    n = size // PAGE
    bitmap = p[HEAD.size:HEAD.size + (n + 7) // 8]
    pages = RAMCODEC.bitmap_pages(bitmap, n) if len(bitmap) == (n + 7) // 8 else None
    crc_at = HEAD.size + (n + 7) // 8
    if pages is None or len(p) != crc_at + 4 * len(pages):
        raise BadImage(f"{what}: corrupt (the mapped memory's bitmap and checksums disagree)")
    return size, offset, pages, struct.unpack_from(f"<{len(pages)}I", p, crc_at)


def map_ram(f, section: Section, what: str = "image", verify: bool = True) -> mmap.mmap:
    """The memory of a mapped image (open file ``f``), mapped copy-on-write."""
    size, offset, pages, crcs = parse(section, what)
    fd = f.fileno()
    if os.fstat(fd).st_size < offset + size:
        raise BadImage(f"{what}: truncated (its memory ends at byte {os.fstat(fd).st_size:,} "
                       f"of {offset + size:,})")
    if verify:
        for i, page in _stored(fd, offset, pages):
            if zlib.crc32(page) != crcs[i]:
                raise BadImage(f"{what}: corrupt (page {pages[i]:#x} of its memory: checksum "
                               f"mismatch)")
    return mmap.mmap(fd, size, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ | mmap.PROT_WRITE,
                     offset=offset)


def _stored(fd: int, offset: int, pages: list[int]):
    """(index in ``pages``, contents) of each stored page, read a run of consecutive
    pages at a time (one system call for a run, not one a page)."""
    k = 0
    while k < len(pages):
        j = k
        while j + 1 < len(pages) and pages[j + 1] == pages[j] + 1 and j - k < 255:
            j += 1
        data = memoryview(os.pread(fd, (j - k + 1) * PAGE, offset + pages[k] * PAGE))
        for x in range(j - k + 1):
            yield k + x, data[x * PAGE:(x + 1) * PAGE]
        k = j + 1


def read_ram(f, section: Section, what: str = "image") -> bytearray:
    """The memory of a mapped image (open file ``f``), read and checked, as a bytearray."""
    size, offset, pages, crcs = parse(section, what)
    fd = f.fileno()
    if os.fstat(fd).st_size < offset + size:
        raise BadImage(f"{what}: truncated (its memory ends at byte {os.fstat(fd).st_size:,} "
                       f"of {offset + size:,})")
    buf = bytearray(size)
    for k, page in _stored(fd, offset, pages):
        if zlib.crc32(page) != crcs[k]:
            raise BadImage(f"{what}: corrupt (page {pages[k]:#x} of its memory: checksum "
                           f"mismatch)")
        buf[pages[k] * PAGE:(pages[k] + 1) * PAGE] = page
    return buf


def find(sections: list[Section]) -> Section | None:
    return next((s for s in sections if s.kind == MAPPED), None)


def sharing(buf) -> dict[str, int]:
    """The host kernel's view of the mapping behind ``buf`` (an ``mmap``), in pages:
    ``resident`` (loaded), ``copied`` (written: private anonymous copies) and
    ``shared`` (resident pages another mapping uses too).  Linux only."""
    c = ctypes.c_char.from_buffer(buf)
    start = ctypes.addressof(c)
    del c
    fields: dict[str, int] = {}
    with open("/proc/self/smaps") as f:
        inside = False
        for line in f:
            head = line.split(None, 1)[0]
            if "-" in head and not head.endswith(":"):
                lo, hi = (int(x, 16) for x in head.split("-"))
                inside = lo <= start < hi
            elif inside and head.endswith(":"):
                parts = line.split()
                if len(parts) >= 3 and parts[2] == "kB":
                    fields[head[:-1]] = int(parts[1]) // 4
    if not fields:
        raise RuntimeError("the mapping is not in /proc/self/smaps")
    return {"resident": fields.get("Rss", 0), "copied": fields.get("Anonymous", 0),
            "shared": fields.get("Shared_Clean", 0) + fields.get("Shared_Dirty", 0)}
