"""Ring compression: the guest's descriptors, as the real GDT holds them.

The guest kernel's ring-0 segments become ring-1 segments (the guest kernel
runs at ring 1), and every code and data segment is kept out of the
hypervisor region, so no selector the guest can load reaches the monitor: a
code segment cut short below it, a data segment reduced to the largest run of
its offsets one descriptor can bound there (the rest is emulated: ``segcut.py``).
System descriptors (TSS, LDT, gates) are not given to the hardware: the
monitor emulates LTR/LLDT and far transfers through gates itself.
"""

from __future__ import annotations

import struct

from . import layout as L


def base_of(raw: int) -> int:
    """The base address of descriptor ``raw``."""
    return ((raw >> 16) & 0xFFFFFF) | ((raw >> 56) & 0xFF) << 24


def _fields(raw: int) -> tuple[int, int, int, int]:
    base = base_of(raw)
    limit = (raw & 0xFFFF) | ((raw >> 48) & 0xF) << 16
    access = (raw >> 40) & 0xFF
    flags = (raw >> 52) & 0xF
    return base, limit, access, flags


def _pack(base: int, limit: int, access: int, flags: int) -> int:
    return ((limit & 0xFFFF) | (base & 0xFFFFFF) << 16 | access << 40 |
            ((limit >> 16) & 0xF) << 48 | (flags & 0xF) << 52 | (base >> 24 & 0xFF) << 56)


def compress(raw: int) -> int:
    """The real descriptor standing for guest descriptor ``raw`` (0: none)."""
    base, limit, access, flags = _fields(raw)
    if not access & 0x10:          # system descriptor: TSS, LDT, gates
        return 0
    dpl = (access >> 5) & 3
    if dpl == 0:
        access = (access & ~0x60) | (1 << 5)
    if not access & 0x80:
        # kept not present (type and DPL only: the rest is the guest's to use), so that
        # a load raises what the hardware raises, #NP or #SS(selector), after the same
        # type and privilege checks
        return _pack(0, 0, access, flags & 4)
    gran = flags & 8
    size = ((limit << 12) | 0xFFF) if gran else limit
    if not access & 8:
        return _data_segment(base, size, access, flags)
    code = _code_segment(base, size, access, flags)
    if code or not access & 2:
        return code
    # A readable code segment of which nothing can be held as code (its base lies in the
    # region, or what is left below it is shorter than its granularity): no CS may hold
    # it -- the guest's code must lie below the region -- but the guest may load it into
    # a data register and read through it as natively (SDM Vol. 3 §5.6; Vol. 2 MOV:
    # "readable code segment").  The hardware holds it as a read-only data segment,
    # its offsets cut as a data segment's are (the reads beyond emulated: ``segcut.py``),
    # which a far transfer, IRET or gate cannot load into CS (#GP(selector), as the null
    # entry it used to be).  A conforming one is loaded into DS at any CPL and RPL
    # (no DPL check, Vol. 2 MOV), so its stand-in is DPL 3.
    dpl = 3 if access & 4 else (access >> 5) & 3
    return _data_segment(base, size, 0x90 | dpl << 5 | (access & 1), flags)


def _code_segment(base: int, size: int, access: int, flags: int) -> int:
    """A code segment (``size``: its byte-granular limit) cut short below the region from
    offset 0, or 0 if nothing is left."""
    gran = flags & 8
    if base > L.GUEST_LIMIT:
        return 0
    end = min(base + size, L.GUEST_LIMIT)
    size = end - base
    if gran:
        limit = (size + 1 >> 12) - 1 if size != 0xFFFFFFFF else 0xFFFFF
        if limit < 0:
            return 0
    else:
        limit = size
        if limit > 0xFFFFF:
            limit, flags = (size + 1 >> 12) - 1, flags | 8
    return _pack(base, limit, access, flags)


def allowed_offsets(base: int, limit: int, expand_down: bool, big: bool,
                    region: bool = False) -> list[tuple[int, int]]:
    """The offsets a data segment allows (``limit`` byte-granular), as intervals: all of
    them, or (``region``) those that do not reach the hypervisor region."""
    top = 0xFFFFFFFF if big or not expand_down else 0xFFFF
    spans = [(limit + 1, top)] if expand_down else [(0, limit)]
    spans = [(lo, hi) for lo, hi in spans if lo <= hi]
    if not region:
        return spans
    # the offsets that reach the region: [m, m + its size) modulo 4 GiB
    m = (L.MLIN - base) & 0xFFFFFFFF
    size = 0x100000000 - L.MLIN
    cut = [(m, min(m + size, 0x100000000) - 1)]
    if m + size > 0x100000000:
        cut.append((0, m + size - 0x100000000 - 1))
    for clo, chi in cut:
        spans = [piece for lo, hi in spans
                 for piece in ((lo, min(hi, clo - 1)), (max(lo, chi + 1), hi)) if piece[0] <= piece[1]]
    return spans


def _data_segment(base: int, limit: int, access: int, flags: int) -> int:
    """A data segment (``limit`` byte-granular) as the hardware may hold it: the same base,
    and the largest run of the guest's offsets that stays out of the hypervisor region
    and that a descriptor can bound -- from 0 (expand-up) or up to the top (expand-down).
    The guest's other offsets fault and are emulated (``segcut.py``); a segment with none
    left is an expand-down one that holds no offset at all.  Its base and size (D/B) are
    the guest's, so the addresses and a stack's width are."""
    big = bool(flags & 4)
    top = 0xFFFFFFFF if big else 0xFFFF
    keep = flags & 5                        # AVL, D/B
    best, real = -1, _pack(base, 0xFFFFF if big else 0xFFFF, access | 4, keep | (8 if big else 0))
    for lo, hi in allowed_offsets(base, limit, bool(access & 4), big, region=True):
        if lo == 0:                         # expand-up [0, hi]
            if hi > 0xFFFFF:
                hi = ((hi + 1) & ~0xFFF) - 1
                cand = _pack(base, hi >> 12, access & ~4, keep | 8)
            else:
                cand = _pack(base, hi, access & ~4, keep)
            if hi + 1 > best:
                best, real = hi + 1, cand
        if hi == top:                       # expand-down (low, top]
            low = max(lo - 1, 0)
            if low > 0xFFFFF:
                low |= 0xFFF
                cand = _pack(base, low >> 12, access | 4, keep | 8)
            else:
                cand = _pack(base, low, access | 4, keep)
            if top - low > best:
                best, real = top - low, cand
    return real


def monitor_descriptors() -> dict[int, int]:
    """The monitor's own GDT entries, by selector."""
    return {
        L.SEL_MCODE: _pack(0, 0xFFFFF, 0x9A, 0xC),
        L.SEL_MDATA: _pack(0, 0xFFFFF, 0x92, 0xC),
        # DPL 1, execute-only: translated code runs in it, but guest ring 1 cannot load
        # it into a data segment register and read the monitor through it
        L.SEL_TCODE & ~3: _pack(0, 0xFFFFF, 0xB8, 0xC),
    }


def tss_descriptor(base: int, limit: int) -> int:
    return _pack(base, limit, 0x89, 0)


def build_gdt(guest_table: bytes) -> bytes:
    """The guest part of the real GDT from the guest's table bytes."""
    n = min(len(guest_table) // 8, L.FIRST_RESERVED)
    raws = struct.unpack_from(f"<{n}Q", guest_table)
    return struct.pack(f"<{n}Q", *(compress(r) for r in raws))


def guest_descriptor_fields(raw: int) -> tuple[int, int, int, int]:
    """(base, byte-granular limit, access byte, flags) of a guest descriptor."""
    base, limit, access, flags = _fields(raw)
    if flags & 8:
        limit = (limit << 12) | 0xFFF
    return base, limit, access, flags
