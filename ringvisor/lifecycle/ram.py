"""Guest memory in an image, page by page.

A ``RAM`` section holds every page that is not all zero (most of a booted
guest's memory is): ::

    size u64 | page size u32 | flags u32 | bitmap of stored pages (1 bit a page)
    | length u64 | the stored pages, in order, as one zlib stream (flags bit 0)

A ``PAGES`` section holds the pages a list names, zero or not (a batch of a
live migration's round: the receiver's memory already holds the rest)::

    count u32 | page numbers u32 x count | flags u32 | the pages (zlib if flags bit 0)

Pages are the unit everything else in the lifecycle works in: the snapshot
store shares them by content, a diff counts them, migration sends them.
"""

from __future__ import annotations

import struct
import zlib

from .stream import BadImage

PAGE = 4096
ZERO = bytes(PAGE)
HEAD = struct.Struct("<QII")
COUNT = struct.Struct("<I")
COMPRESSED = 1


def nonzero_pages(ram) -> list[int]:
    """Page numbers of the pages of ``ram`` that hold anything but zeros."""
    out = []
    n = len(ram) // PAGE
    # a 64 KiB stretch of zeros is skipped with one comparison
    big = 16 * PAGE
    zero_big = bytes(big)
    for start in range(0, n, 16):
        a = start * PAGE
        if ram[a:a + big] == zero_big and start + 16 <= n:
            continue
        for i in range(start, min(start + 16, n)):
            if ram[i * PAGE:(i + 1) * PAGE] != ZERO:
                out.append(i)
    return out


def bitmap_pages(bitmap: bytes, n: int) -> list[int]:
    """The page numbers (below ``n``) whose bits are set in ``bitmap``."""
    return [k * 8 + b for k, byte in enumerate(bitmap) if byte for b in range(8)
            if byte >> b & 1 and k * 8 + b < n]


def page_bitmap(pages: list[int], n: int) -> bytes:
    """One bit per page of ``n``: set for the pages in ``pages``."""
    bitmap = bytearray((n + 7) // 8)
    for i in pages:
        bitmap[i >> 3] |= 1 << (i & 7)
    return bytes(bitmap)


def encode(ram, level: int = 1) -> bytes:
    pages = nonzero_pages(ram)
    comp = zlib.compressobj(level)
    parts = [comp.compress(ram[i * PAGE:(i + 1) * PAGE]) for i in pages]
    parts.append(comp.flush())
    data = b"".join(parts)
    return (HEAD.pack(len(ram), PAGE, COMPRESSED) + page_bitmap(pages, len(ram) // PAGE)
            + struct.pack("<Q", len(data)) + data)


def decode_into(payload: bytes, ram, what: str = "image") -> None:
    """Fill ``ram`` (zeroed, of the image's size) from a RAM section."""
    try:
        size, page, flags = HEAD.unpack_from(payload)
    except struct.error:
        raise BadImage(f"{what}: corrupt (the RAM section is too short)") from None
    if page != PAGE or size != len(ram) or size % PAGE:
        raise BadImage(f"{what}: corrupt (RAM of {size} bytes in {page}-byte pages; "
                       f"the machine has {len(ram)} bytes)")
    n = size // PAGE
    off = HEAD.size
    bitmap = payload[off:off + (n + 7) // 8]
    off += (n + 7) // 8
    try:
        (length,) = struct.unpack_from("<Q", payload, off)
    except struct.error:
        raise BadImage(f"{what}: corrupt (the RAM section is too short)") from None
    data = payload[off + 8:off + 8 + length]
    if len(data) != length:
        raise BadImage(f"{what}: corrupt (the RAM section is cut short)")
    if flags & COMPRESSED:
        try:
            data = zlib.decompress(data)
        except zlib.error:
            raise BadImage(f"{what}: corrupt (the RAM pages do not decompress)") from None
    pages = bitmap_pages(bitmap, n)
    if len(data) != len(pages) * PAGE:
        raise BadImage(f"{what}: corrupt (the RAM section holds {len(data)} bytes for "
                       f"{len(pages)} pages)")
    for k, i in enumerate(pages):
        ram[i * PAGE:(i + 1) * PAGE] = data[k * PAGE:(k + 1) * PAGE]


def encode_pages(ram, pages: list[int], level: int = 1) -> bytes:
    """A PAGES payload holding pages ``pages`` of ``ram``."""
    data = b"".join(ram[i * PAGE:(i + 1) * PAGE] for i in pages)
    if level:
        data = zlib.compress(data, level)
    return (COUNT.pack(len(pages)) + struct.pack(f"<{len(pages)}I", *pages)
            + COUNT.pack(COMPRESSED if level else 0) + data)


def decode_pages(payload: bytes, n: int, what: str = "stream") -> tuple[list[int], bytes]:
    """The page numbers of a PAGES payload and their bytes, one page after another, for
    a machine of ``n`` pages."""
    try:
        (count,) = COUNT.unpack_from(payload)
        pages = list(struct.unpack_from(f"<{count}I", payload, COUNT.size))
        off = COUNT.size * (count + 1)
        (flags,) = COUNT.unpack_from(payload, off)
    except struct.error:
        raise BadImage(f"{what}: corrupt (a batch of pages is cut short)") from None
    data = payload[off + COUNT.size:]
    if flags & COMPRESSED:
        try:
            data = zlib.decompress(data)
        except zlib.error:
            raise BadImage(f"{what}: corrupt (a batch of pages does not decompress)") from None
    if len(data) != count * PAGE or any(i >= n for i in pages):
        raise BadImage(f"{what}: corrupt (a batch of {count} pages holds {len(data)} bytes, "
                       f"or names a page beyond the machine's {n})")
    return pages, data


def decode_pages_into(payload: bytes, ram, what: str = "stream") -> list[int]:
    """Write the pages of a PAGES payload into ``ram``; their numbers."""
    pages, data = decode_pages(payload, len(ram) // PAGE, what)
    for k, i in enumerate(pages):
        ram[i * PAGE:(i + 1) * PAGE] = data[k * PAGE:(k + 1) * PAGE]
    return pages
