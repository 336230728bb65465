"""Shadow page tables: the page tables the real MMU walks while a guest runs.

The guest's page tables map guest linear addresses to guest physical frames;
the real CR3 points at a shadow page directory owned by the monitor, filled on
demand from the guest's tables.  The shadow acts as a (large) TLB for the
guest: it starts empty, a real #PF on a missing entry makes the monitor walk the
guest's tables (setting the guest's accessed bit) and install the entry, a
guest ``mov cr3`` empties it, a guest ``invlpg`` drops one entry — exactly the
events after which a real TLB may differ from the page tables, so the guest
cannot tell.

Dirty bits are reflected back: a page is shadowed read-only until the guest
first writes it; that write faults, the monitor sets the guest PTE's dirty bit
and makes the shadow entry writable.  Frames the monitor must see written
(translated code under binary translation) stay read-only in every shadow
mapping (``protect``), so the first write to one traps.

The last PDE maps the hypervisor region (supervisor pages; the guest's
segments stop below it).
"""

from __future__ import annotations

from . import layout as L
from .guestmem import P, U, W, A, D

PAGE = 0x1000


class ShadowPaging:
    def __init__(self, cpu, mem, base: int) -> None:
        self.cpu = cpu
        self.mem = mem
        self.base = base                       # the monitor's physical base
        self.pool = base + L.POOL
        self.pd = self.pool                    # page 0 of the pool: the shadow directory
        self.next_free = 1
        self.protected: set[int] = set()       # guest frames kept read-only
        self.rmap: dict[int, set[int]] = {}    # guest frame -> linear pages mapping it writable
        self.stats = {"shadow_fills": 0, "shadow_flushes": 0, "dirty_faults": 0,
                      "shadow_pool_resets": 0}
        self.mem.write32(self.pd + 1023 * 4, (base + L.MONITOR_PT) | P | W)

    @property
    def cr3(self) -> int:
        return self.pd

    # -- emptying --------------------------------------------------------------------
    def flush(self) -> None:
        """Forget every guest mapping (a guest CR3 load)."""
        self.mem.write(self.pd, bytes(1023 * 4))
        self.next_free = 1
        self.rmap.clear()
        self.stats["shadow_flushes"] += 1
        self.cpu.tlb_flush()

    def invalidate(self, lin: int) -> None:
        """Forget the mapping of one guest page (a guest INVLPG)."""
        pde = self.mem.read32(self.pd + (lin >> 22) * 4)
        if pde & P and lin < L.MLIN:
            self.mem.write32((pde & ~0xFFF) + ((lin >> 12) & 0x3FF) * 4, 0)
        self.cpu.invlpg(lin)

    def invalidate_region(self, lin: int) -> None:
        """Forget a whole 4 MiB region (a guest INVLPG of a large page)."""
        if lin >= L.MLIN:
            return
        pde_addr = self.pd + (lin >> 22) * 4
        pde = self.mem.read32(pde_addr)
        if pde & P:
            self.mem.write(pde & ~0xFFF, bytes(PAGE))
        self.cpu.tlb_flush()

    # -- filling -------------------------------------------------------------------------
    def _table(self, lin: int) -> int:
        pde_addr = self.pd + (lin >> 22) * 4
        pde = self.mem.read32(pde_addr)
        if pde & P:
            return pde & ~0xFFF
        if self.next_free >= L.POOL_PAGES:
            # out of shadow tables: start again (the guest refaults what it uses)
            self.stats["shadow_pool_resets"] += 1
            self.flush()
            pde_addr = self.pd + (lin >> 22) * 4
        table = self.pool + self.next_free * PAGE
        self.next_free += 1
        self.mem.write(table, bytes(PAGE))
        self.mem.write32(pde_addr, table | P | W | U)
        return table

    def install(self, lin: int, frame: int, user: bool, writable: bool) -> None:
        """Map guest linear page ``lin`` to machine frame ``frame``."""
        lin &= ~0xFFF
        if frame >> 12 in self.protected:
            writable = False
        table = self._table(lin)
        flags = P | A | (U if user else 0) | ((W | D) if writable else 0)
        self.mem.write32(table + ((lin >> 12) & 0x3FF) * 4, frame | flags)
        if writable:
            self.rmap.setdefault(frame >> 12, set()).add(lin)
        self.stats["shadow_fills"] += 1
        self.cpu.invlpg(lin)

    def lookup(self, lin: int) -> int:
        """The shadow PTE for ``lin`` (0 if none)."""
        pde = self.mem.read32(self.pd + (lin >> 22) * 4)
        if not pde & P:
            return 0
        return self.mem.read32((pde & ~0xFFF) + ((lin >> 12) & 0x3FF) * 4)

    # -- write protection ------------------------------------------------------------------
    def protect(self, ppn: int) -> None:
        """Keep guest frame ``ppn`` read-only in every shadow mapping from now on."""
        if ppn in self.protected:
            return
        self.protected.add(ppn)
        for lin in self.rmap.pop(ppn, ()):
            pde = self.mem.read32(self.pd + (lin >> 22) * 4)
            if not pde & P:
                continue
            addr = (pde & ~0xFFF) + ((lin >> 12) & 0x3FF) * 4
            e = self.mem.read32(addr)
            if e & P and e >> 12 == ppn:
                self.mem.write32(addr, e & ~W)
                self.cpu.invlpg(lin)

    def unprotect(self, ppn: int) -> None:
        self.protected.discard(ppn)
