"""Ring compression: the guest's descriptors, as the real GDT holds them.

The guest kernel's ring-0 segments become ring-1 segments (the guest kernel
runs at ring 1), and every code and data segment is cut short below the
hypervisor region, so no selector the guest can load reaches the monitor.
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
    expand_down = not access & 8 and access & 4
    if expand_down:
        # an expand-down segment covers (limit, top]; its top is 4 GiB or 64 KiB
        top = 0xFFFFFFFF if flags & 4 else 0xFFFF
        if base + top > L.GUEST_LIMIT:
            return 0               # would reach the monitor: refused outright
        return _pack(base, limit, access, flags)
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
