"""The para-virtualized guest's memory-management hypercalls (mixed into ``ParaVirt``).

Xen's "explicit" page-table interface: ``mmu_update`` (batched page-table
entry stores and M2P updates), ``mmuext_op`` (pinning, a new base pointer,
TLB flushes, page clears and copies) and ``update_va_mapping`` (one PTE for a
linear address, with its flush).  Every request names machine frames, and
each must be the guest's own (``-EPERM``), map nothing beyond its memory, and
never make one of its GDT frames writable (``gdttype``).  Hypervisor domains
(``ringvisor.hypervisor``) override the frame checks (``_frame``,
``_check_pte``, ``_guest_address``, ``_gfn``) for their P2M.

Apart from ``paravirt.py`` as Xen keeps ``pv/mm.c`` apart from the hypercall
entry: the rules of the guest's memory, not the hypercall machinery.
"""

from __future__ import annotations

import struct

from ringvisor.abi import MMU_UPDATE, MMUEXT_OP, DomId, Errno, Mmu, Mmuext, Uvmf

from . import gdttype
from . import layout as L
from .errors import fail

MAX_BATCH = 1024                 # entries per mmu_update / mmuext_op call


class PvMemory:
    """mmu_update, mmuext_op, update_va_mapping and the frame checks they share."""

    def _frame(self, mfn: int) -> int:
        """The machine address of one of the guest's own frames (or -EPERM)."""
        if not 0 <= mfn < self.guest_ram >> 12:
            fail(Errno.EPERM)
        return mfn << 12

    def _check_pte(self, val: int) -> None:
        """A page-table entry the guest may write: it maps nothing beyond its RAM."""
        if val & 1 and (val & 0xFFFFF000) >= self.guest_ram:
            fail(Errno.EPERM)

    def _guest_address(self, gpa: int) -> int:
        """The machine address of a guest physical address the guest passed (or -EINVAL)."""
        if not 0 <= gpa < self.guest_ram:
            fail(Errno.EINVAL)
        return gpa

    def _gfn(self, ma: int) -> int:
        """The guest's frame number for machine address ``ma`` (what RV_VA_TO_MFN returns)."""
        return ma >> 12

    def _write_table_entry(self, ma: int, val: int) -> None:
        if ma & 3:
            fail(Errno.EINVAL)
        ma = self._guest_address(ma)
        self._check_pte(val)
        if gdttype.entry_refused(self, ma, val):
            fail(Errno.EINVAL)               # a GDT frame mapped writable (Xen's mod_l1_entry)
        self.mem.write32(ma, val & 0xFFFFFFFF)
        self.guest_written(ma, 4)

    def _batch(self, items: int, count: int, done_ptr: int, dom: int, layout, op) -> int:
        """Apply ``op`` to ``count`` structures at ``items``, stopping at the first refusal;
        how many were done goes to ``done_ptr`` (Xen's batched MMU interface)."""
        self._own(dom)
        if count > MAX_BATCH:
            fail(Errno.EINVAL)
        done = 0
        try:
            for i in range(count):
                op(layout.unpack(self._read(items + i * layout.size, layout.size)))
                done += 1
        finally:
            if done_ptr:
                self._write(done_ptr, struct.pack("<I", done))
        return 0

    def hc_mmu_update(self, f, reqs, count, done_ptr, dom, *_):
        return self._batch(reqs, count, done_ptr, dom, MMU_UPDATE, self._mmu_update)

    def _mmu_update(self, e: dict) -> None:
        cmd, ma, val = e["ptr"] & 3, e["ptr"] & ~3, e["val"]
        if ma >> 32 or val >> 32:
            fail(Errno.EINVAL)
        if cmd in (Mmu.NORMAL_PT_UPDATE, Mmu.PT_UPDATE_PRESERVE_AD):
            if cmd == Mmu.PT_UPDATE_PRESERVE_AD and not ma & 3:
                val = (val & ~0x60) | (self.mem.read32(self._guest_address(ma)) & 0x60)
            self._write_table_entry(ma, val)
        elif cmd == Mmu.MACHPHYS_UPDATE:
            self._machphys_update(ma >> 12, val)
        else:
            fail(Errno.ENOSYS)

    def _machphys_update(self, mfn: int, gfn: int) -> None:
        # pseudo-physical = machine here: the only valid entry is the identity
        if mfn != gfn or mfn >= self.guest_ram >> 12:
            fail(Errno.EINVAL)

    def hc_mmuext_op(self, f, ops, count, done_ptr, dom, *_):
        return self._batch(ops, count, done_ptr, dom, MMUEXT_OP,
                           lambda op: self._mmuext(op["cmd"], op["arg1"], op["arg2"]))

    def _mmuext(self, cmd: int, arg1: dict, arg2: dict) -> None:
        if cmd in (Mmuext.PIN_L1_TABLE, Mmuext.PIN_L2_TABLE):
            ppn = self._frame(arg1["mfn"]) >> 12
            level = 1 if cmd == Mmuext.PIN_L1_TABLE else 2
            if ppn in self.pinned or gdttype.table_refused(self, arg1["mfn"], level):
                fail(Errno.EINVAL)               # (Xen: pinned already, or validation fails)
            self.pinned.add(ppn)
        elif cmd == Mmuext.UNPIN_TABLE:
            ppn = self._frame(arg1["mfn"]) >> 12
            if ppn not in self.pinned:
                fail(Errno.EINVAL)
            self.pinned.discard(ppn)
        elif cmd == Mmuext.NEW_BASEPTR:
            self._frame(arg1["mfn"])                 # the guest's own frame (-EPERM otherwise)
            if gdttype.table_refused(self, arg1["mfn"], 2):
                fail(Errno.EINVAL)                   # it would bring a GDT frame in writable
            self.set_cr(3, arg1["mfn"] << 12)
        elif cmd in (Mmuext.TLB_FLUSH_LOCAL, Mmuext.TLB_FLUSH_MULTI, Mmuext.TLB_FLUSH_ALL):
            self.cpu.tlb_flush()       # the shadows saw every table store: nothing stale
        elif cmd in (Mmuext.INVLPG_LOCAL, Mmuext.INVLPG_MULTI, Mmuext.INVLPG_ALL):
            self.invlpg(arg1["linear_addr"] & 0xFFFFFFFF)
        elif cmd in (Mmuext.FLUSH_CACHE, Mmuext.FLUSH_CACHE_GLOBAL):
            pass
        elif cmd == Mmuext.CLEAR_PAGE:
            ma = self._frame(arg1["mfn"])
            self.mem.write(ma, bytes(0x1000))
            self.guest_written(ma, 0x1000)
        elif cmd == Mmuext.COPY_PAGE:
            dst, src = self._frame(arg1["mfn"]), self._frame(arg2["src_mfn"])
            self.mem.write(dst, self.mem.read(src, 0x1000))
            self.guest_written(dst, 0x1000)
        else:
            fail(Errno.ENOSYS)

    def _own(self, dom: int) -> None:
        if dom not in (DomId.SELF, 0):
            fail(Errno.ESRCH)

    def hc_update_va_mapping(self, f, va, lo, hi, flags, *_):
        v = self.vcpu
        if hi or va >= L.MLIN or va & ~0xFFF in self.fixed or not v.paging:
            fail(Errno.EINVAL)
        pde = self.mem.read32(self._frame(v.cr3 >> 12) + (va >> 22) * 4)
        if not pde & 1 or pde & 0x80:
            fail(Errno.EINVAL)
        self._frame(pde >> 12)
        self._write_table_entry((pde & 0xFFFFF000) + ((va >> 12) & 0x3FF) * 4, lo)
        kind = flags & Uvmf.FLUSHTYPE_MASK
        if kind == Uvmf.INVLPG:
            self.invlpg(va)
        elif kind == Uvmf.TLB_FLUSH:
            self.cpu.tlb_flush()
        return 0

