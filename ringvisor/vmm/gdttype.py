"""A para-virtual guest's GDT frames are typed, as Xen types them.

Xen gives every frame one type at a time (xen/arch/x86/mm.c, "TYPE_COUNT"): a
frame a guest hands over as its GDT (``set_gdt``, or a vCPU context's
``gdt_frames``) takes ``PGT_seg_desc_page``, which a frame mapped writable
(``PGT_writable_page``) cannot take; so ``set_gdt`` of a frame the guest maps
writable fails with -EINVAL (``arch_set_info_guest`` likewise), and while the
type holds, an ``mmu_update`` that would map the frame writable fails with
-EINVAL (``mod_l1_entry``: ``get_page_from_l1e``), and so does a direct store
into a page table that would (``ptwr_emulated_update`` refuses the new entry;
the guest then gets its own page fault, ``pv_ro_page_fault``).  Otherwise the
guest could edit its descriptors behind the copy the monitor validated.

The type lasts while a vCPU names the frame: a ``set_gdt`` elsewhere (or a new
vCPU context) releases the old frames; a vCPU that goes down keeps its GDT
(Xen's ``VCPUOP_down`` only deschedules it), so its frames stay typed.

Here the check is made where a mapping is made, over the guest's page tables as
they stand: an entry written into an L1 (or a 4 MiB entry), a directory entry
that brings in an L1 holding such a mapping, a frame that becomes a table (pinned,
or a directory loaded by ``NEW_BASEPTR`` or made live by turning paging on: its
entries as it holds them), and, at ``set_gdt``, the tables of every vCPU's address
space.  Frame numbers are the guest's (pseudo-physical in a
hypervisor domain); the monitor answers ``gdt_typed`` (those of its GDT frames)
and ``address_spaces`` (its vCPUs' CR3s).
"""

from __future__ import annotations

import re
import struct

import iced_x86 as ix

from .emulate import Context
from .frame import Frame
from .guestmem import GuestBadFrame, GuestPageFault
from .layout import MLIN

P, RW, PS = 0x1, 0x2, 0x80
L1_SPAN = 1024                       # 4 KiB frames under one directory entry
M = ix.Mnemonic
OK = ix.OpKind
# the store forms whose new value a page-table write trap can compute (as Xen's
# emulator would): a plain store, an exchange, and the logical/arithmetic updates
COMBINE = {M.MOV: lambda old, v: v, M.XCHG: lambda old, v: v, M.CMPXCHG: lambda old, v: v,
           M.OR: lambda old, v: old | v, M.AND: lambda old, v: old & v,
           M.XOR: lambda old, v: old ^ v, M.ADD: lambda old, v: old + v,
           M.SUB: lambda old, v: old - v}


def _machine(mon, gfn: int) -> int | None:
    """The machine address of the guest's frame ``gfn`` (None: not one of its frames)."""
    try:
        ma = mon.gm.machine(gfn << 12)
    except GuestBadFrame:
        return None
    return ma if ma + 0x1000 <= len(mon.mem.ram) else None


def _table(mon, gfn: int) -> bytes | None:
    """The 1024 entries of the guest's frame ``gfn``, as bytes (None: not its frame)."""
    ma = _machine(mon, gfn)
    return None if ma is None else mon.mem.read(ma, 0x1000)


# A table is searched, not looped over: a directory's present entries are the odd low
# bytes of its words, and an entry mapping frame g has g >> 4 in its upper half; both
# found at C speed (a NEW_BASEPTR validates a whole tree: one page-table walk per CR3
# load of a kernel that does not pin, as Xen does for it).
_PRESENT = re.compile(b"[" + b"".join(re.escape(bytes([b])) for b in range(1, 256, 2)) + b"]")


def _writable_entry(raw: bytes, gfn: int) -> bool:
    """Does the table ``raw`` hold a present, writable entry mapping frame ``gfn``?"""
    upper = struct.pack("<H", (gfn >> 4) & 0xFFFF)
    at = raw.find(upper, 2)
    while at >= 0:
        if at & 3 == 2:
            e = int.from_bytes(raw[at - 2:at + 2], "little")
            if e & 3 == 3 and e >> 12 == gfn:
                return True
        at = raw.find(upper, at + 1)
    return False


def _l1_maps(mon, l1_gfn: int, gfns: set[int]) -> bool:
    raw = _table(mon, l1_gfn)
    return raw is not None and any(_writable_entry(raw, g) for g in gfns)


def _pde_maps(mon, pde: int, gfns: set[int]) -> bool:
    """Does directory entry ``pde`` bring in a writable mapping of one of ``gfns``?"""
    if not pde & P:
        return False
    if pde & PS:                       # a 4 MiB page: writable if its entry is
        base = (pde >> 12) & ~(L1_SPAN - 1)
        return bool(pde & RW) and any(base <= g < base + L1_SPAN for g in gfns)
    return _l1_maps(mon, pde >> 12, gfns)


def _directory_maps(mon, pd_gfn: int, gfns: set[int]) -> bool:
    raw = _table(mon, pd_gfn)
    return raw is not None and any(
        _pde_maps(mon, int.from_bytes(raw[4 * i:4 * i + 4], "little"), gfns)
        for i in (m.start() for m in _PRESENT.finditer(raw[::4])))


def mapped_writable(mon, gfns: set[int]) -> bool:
    """Does any address space of the guest map one of ``gfns`` writable?"""
    return any(_directory_maps(mon, cr3 >> 12, gfns) for cr3 in set(mon.address_spaces()))


def table_refused(mon, gfn: int, level: int, gfns: set[int] | None = None) -> bool:
    """May frame ``gfn`` not become a page table of ``level`` (1 or 2)?  A frame takes
    the L2 type when the guest pins it or loads it into CR3 (``MMUEXT_PIN_L2_TABLE``,
    ``MMUEXT_NEW_BASEPTR``), the L1 type when pinned (``MMUEXT_PIN_L1_TABLE``) or
    brought in by such a directory, and Xen validates every entry then
    (``promote_l2_table``/``promote_l1_table``: an L1 entry mapping a
    ``PGT_seg_desc_page`` frame writable fails ``get_page_from_l1e``), so a table the
    guest filled by plain stores while it was an ordinary page cannot bring its GDT in
    writable.  (``gfns``: the GDT frames to check against, if not the guest's now.)"""
    gfns = mon.gdt_typed() if gfns is None else gfns
    if not gfns:
        return False
    return _directory_maps(mon, gfn, gfns) if level == 2 else _l1_maps(mon, gfn, gfns)


def entry_refused(mon, ma: int, val: int) -> bool:
    """Would writing ``val`` at machine address ``ma`` of a page table map a typed GDT
    frame writable?  (``ma``'s frame is a directory when a vCPU's CR3 names it.)"""
    if not val & P:
        return False
    gfns = mon.gdt_typed()
    if not gfns:
        return False
    roots = {_machine(mon, cr3 >> 12) for cr3 in mon.address_spaces()}
    if ma & ~0xFFF in roots:
        return _pde_maps(mon, val, gfns)
    return val & RW != 0 and val >> 12 in gfns


def table_store_refused(mon, f: Frame, lin: int) -> bool:
    """The guest's store at ``lin`` faulted: is it a store into one of its page tables
    that would map a GDT frame writable?  (Then it is not done: the guest takes its page
    fault, present and write, at the store, as Xen's ptwr emulation leaves it.)"""
    if lin >= MLIN:
        return False
    try:
        m = mon.gm.translate(lin, True, bool(f.err & 4), set_bits=False)
    except GuestPageFault:
        return False
    return mon.shadow.is_table(m.phys >> 12) and store_refused(mon, f, m.phys)


def store_refused(mon, f: Frame, ma: int) -> bool:
    """A store at machine address ``ma``, in one of the guest's page tables, trapped:
    would the entry it leaves map a typed GDT frame writable?  Forms whose value cannot
    be computed here go on as any table store does."""
    ins = mon.code_at(f)
    combine = COMBINE.get(ins.mnemonic)
    if combine is None or ins.op_count < 2 or ins.op0_kind != OK.MEMORY:
        return False
    size = ix.MemorySizeExt.size(ins.memory_size)
    if size not in (1, 2, 4):
        return False
    try:
        value = Context(mon, f, ins, f.eip).op(1, size) & ((1 << 8 * size) - 1)
    except (GuestPageFault, GuestBadFrame):
        return False
    # the whole entry the store leaves (a narrower store changes part of it: Xen's
    # ptwr_emulated_update widens it the same way)
    aligned = ma & ~3
    old = mon.mem.read32(aligned)
    shift = (ma & 3) * 8
    if shift + size * 8 > 32:
        return False
    mask = ((1 << 8 * size) - 1) << shift
    part = combine((old & mask) >> shift, value) & ((1 << 8 * size) - 1)
    return entry_refused(mon, aligned, (old & ~mask) | (part << shift))
