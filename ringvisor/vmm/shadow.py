"""Shadow page tables: the page tables the real MMU walks while a guest runs.

The guest's page tables map guest linear addresses to guest physical frames;
the real CR3 points at a shadow page directory owned by the monitor, filled on
demand from the guest's tables: a real #PF on a missing entry makes the monitor
walk the guest's tables (setting the guest's accessed bit) and install the
entry.

The guest's own tables are write-protected.  Every guest frame the monitor
has read as a page directory or a page table while filling is mapped
read-only in every shadow, so the guest cannot change a mapping behind the
monitor's back.  Because the monitor sees every change, a shadow stays valid
after the guest leaves its address space: one shadow directory is kept per
guest CR3 (up to ``max_roots``, least recently used replaced), and a guest
``mov cr3`` only selects one -- a context switch back to a process finds its
mappings still there.

When the guest writes one of its tables:

- through a trapped store (a real #PF on the read-only mapping): everything
  derived from that frame is dropped and the frame is unprotected, so the
  guest's next stores to it (a loop filling a new table, say) run at full
  speed; the next fill that reads the frame protects it again
  (``write_fault``);
- through the monitor (an emulated store, the adaptive callout of binary
  translation): only the entries derived from the bytes written are dropped,
  and the frame stays protected (``written``).

Dirty bits are reflected back: a page is shadowed read-only until the guest
first writes it; that write faults, the monitor sets the guest PTE's dirty bit
and makes the shadow entry writable.  Frames the monitor pins for reasons of
its own (translated code under binary translation, ``protect``; the guest's
GDT, ``watch``) also stay read-only in every shadow mapping.

The last PDE of every shadow directory maps the hypervisor region (supervisor
pages; the guest's segments stop below it).

A guest with PAE paging (SDM Vol. 3A §4.4) is shadowed the same way: the shadow
stays a 32-bit page directory with 4 KiB page tables, the real CPU keeps 32-bit
paging, and each shadow entry is filled from the guest's 64-bit entries.  That
suffices because a guest here has no physical memory at or above 4 GiB (its RAM
starts at 0 and is smaller than the hypervisor region's linear base), and it
keeps one shadow format, one fill and one protection scheme: a guest 2 MiB page
becomes 4 KiB shadow entries as a 4 MiB page does, and a shadow page table
(4 MiB) stands for two guest page tables (2 MiB each), one per half
(``Root.halves``).  The root of a PAE address space is keyed by its PDPT's
address (CR3 bits 31:5) and holds the four PDPTEs the guest's last MOV to CR3,
CR0 or CR4 loaded (§4.4.1): the guest's page directories are those the PDPTEs
name, write-protected and tracked as a 32-bit page directory is; the PDPT itself
is not, as the processor reads it only at those loads -- a root whose PDPTEs
differ from the ones just loaded is emptied (``switch``).
"""

from __future__ import annotations

from collections import OrderedDict

from ringvisor.hw.pae import ADDR as PAE_ADDR, PDPT_ALIGN
from ringvisor.hw.state import CR4_PAE

from . import layout as L
from .guestmem import P, U, W, A, D

PAGE = 0x1000
NO_PAGING = -1                   # the key of the shadow used while guest paging is off
PAE_KEY = 1 << 32                # a PAE address space's key: this bit | its PDPT's address


def address_space(vcpu) -> tuple[int, list[int] | None]:
    """The key of the shadow that stands for ``vcpu``'s current address space, and with
    PAE paging the PDPTE registers it is filled from (``ShadowPaging.switch``)."""
    if not vcpu.paging:
        return NO_PAGING, None
    if vcpu.cr4 & CR4_PAE:
        return PAE_KEY | (vcpu.cr3 & PDPT_ALIGN), vcpu.pdpte
    return vcpu.cr3 >> 12, None


class Root:
    """One shadow page directory, standing for one guest CR3."""

    __slots__ = ("key", "pd", "tables", "tracked", "pdptes", "halves")

    def __init__(self, key: int, pd: int, pdptes: list[int] | None = None) -> None:
        self.key = key            # the guest page directory's frame number, NO_PAGING, or
                                  # PAE_KEY | the guest PDPT's address
        self.pd = pd              # machine address of the shadow directory
        self.tables: dict[int, tuple[int, int | None]] = {}   # pde index -> (shadow table, guest table ppn)
        self.tracked = False      # the guest directory frames are write-protected for it
        self.pdptes = pdptes      # PAE: the four PDPTEs it was filled from (None: 32-bit)
        # PAE: 2 MiB index (linear >> 21) -> the guest page table its half of a shadow
        # table was filled from (None: a 2 MiB page); ``tables`` then holds no source
        self.halves: dict[int, int | None] = {}

    def directories(self) -> list[int]:
        """The frames of the guest page directories this address space walks."""
        if self.pdptes is not None:
            return sorted({(e & PAE_ADDR) >> 12 for e in self.pdptes if e & P})
        return [] if self.key == NO_PAGING else [self.key]

    def sources(self, i: int) -> set[int]:
        """The guest page tables shadow table ``i`` was filled from."""
        if self.pdptes is None:
            src = self.tables[i][1]
            return set() if src is None else {src}
        return {s for h in (2 * i, 2 * i + 1) if (s := self.halves.get(h)) is not None}


class ShadowPaging:
    # (vmm/state.py) the tables themselves are in the monitor's region of machine memory
    STATE = ("roots", "root", "free", "pinned", "watched", "watched_ldt", "l1_users", "l2_users", "rmap", "stats")
    WIRING = ("cpu", "mem", "base", "pool", "max_roots", "region", "top")

    def __init__(self, cpu, mem, base: int, max_roots: int = 8, pool_pages: int = L.POOL_PAGES,
                 frames: list[int] | None = None, region: bool = True) -> None:
        """``frames``: the machine frame numbers of this shadow's pool (by default
        ``pool_pages`` pages at the region's ``POOL``; a hypervisor gives each domain
        frames of its own).  ``region``: the last PDE maps the hypervisor region (not
        under hardware-assisted virtualization, where the monitor runs in another
        address space and the guest owns all 4 GiB of its linear space)."""
        self.cpu = cpu
        self.mem = mem
        self.region = region
        self.top = L.MLIN if region else 1 << 32   # guest linear addresses end here
        self.base = base                           # the monitor's physical base
        self.pool = base + L.POOL
        self.max_roots = max_roots
        if frames is None:
            frames = [((base + L.POOL) >> 12) + i for i in range(pool_pages)]
        self.free = [f << 12 for f in reversed(frames)]
        self.roots: OrderedDict[int, Root] = OrderedDict()
        self.pinned: set[int] = set()              # frames kept read-only for the monitor
        self.watched: set[int] = set()             # frames of the guest's GDT (``gdt``)
        self.watched_ldt: set[int] = set()         # ... and of its LDT (each table its own:
                                                   # the two often share a frame)
        self.l1_users: dict[int, set[tuple[Root, int]]] = {}   # guest page table -> (root, pde index)
        self.l2_users: dict[int, set[Root]] = {}                # guest page directory -> roots
        self.rmap: dict[int, set[tuple[Root, int]]] = {}        # guest frame -> writable (root, linear page)
        self.stats = {"shadow_fills": 0, "shadow_flushes": 0, "dirty_faults": 0,
                      "shadow_pool_resets": 0, "shadow_roots_made": 0, "shadow_root_hits": 0,
                      "table_write_faults": 0, "table_writes_seen": 0}
        self.root = self._new_root(NO_PAGING)

    @property
    def cr3(self) -> int:
        return self.root.pd

    # -- state (vmm/state.py) ------------------------------------------------------------
    def get_state(self) -> dict:
        """Which shadow directory stands for which guest CR3 (least recently used first),
        where its tables are and which guest tables they came from, which frames are
        read-only, and the free pool; the entries themselves are in machine memory."""
        return {
            "roots": [[r.key, r.pd, r.tracked, [[i, t, -1 if s is None else s]
                                                for i, (t, s) in r.tables.items()]]
                      + ([] if r.pdptes is None else
                         [list(r.pdptes), [[h, -1 if s is None else s] for h, s in r.halves.items()]])
                      for r in self.roots.values()],
            "current": self.root.key,
            "free": list(self.free),
            "pinned": set(self.pinned),
            "watched": set(self.watched),
            "watched_ldt": set(self.watched_ldt),
            "rmap": {ppn: sorted([r.key, lin] for r, lin in users)
                     for ppn, users in self.rmap.items() if users},
            "stats": dict(self.stats),
        }

    def set_state(self, state: dict) -> None:
        self.roots.clear()
        self.l1_users.clear()
        self.l2_users.clear()
        for key, pd, tracked, tables, *pae in state["roots"]:
            root = Root(int(key), int(pd), [int(e) for e in pae[0]] if pae else None)
            root.tracked = bool(tracked)
            for h, src in pae[1] if pae else ():
                root.halves[int(h)] = None if src < 0 else int(src)
            for i, t, src in tables:
                root.tables[int(i)] = (int(t), None if src < 0 else int(src))
                for s in root.sources(int(i)):
                    self.l1_users.setdefault(s, set()).add((root, int(i)))
            if root.tracked:
                for ppn in root.directories():
                    self.l2_users.setdefault(ppn, set()).add(root)
            self.roots[root.key] = root
        self.root = self.roots[int(state["current"])]
        self.free = [int(p) for p in state["free"]]
        self.pinned = {int(p) for p in state["pinned"]}
        self.watched = {int(p) for p in state["watched"]}
        self.watched_ldt = {int(p) for p in state.get("watched_ldt", ())}   # (monitor state 2)
        self.rmap = {int(ppn): {(self.roots[k], int(lin)) for k, lin in users if k in self.roots}
                     for ppn, users in state["rmap"].items()}
        self.stats.update(state["stats"])

    # -- which frames are read-only -------------------------------------------------------
    def is_protected(self, ppn: int) -> bool:
        return ppn in self.l1_users or ppn in self.l2_users or ppn in self.pinned or \
            ppn in self.watched or ppn in self.watched_ldt

    def protect(self, ppn: int) -> None:
        """Keep guest frame ``ppn`` read-only in every shadow mapping until ``unprotect``."""
        self.pinned.add(ppn)
        self._write_protect(ppn)

    def unprotect(self, ppn: int) -> None:
        self.pinned.discard(ppn)

    def watch(self, ppn: int, ldt: bool = False) -> None:
        """Keep a frame of the guest's GDT (or LDT) read-only until ``unwatch`` (see ``gdt``)."""
        (self.watched_ldt if ldt else self.watched).add(ppn)
        self._write_protect(ppn)

    def unwatch(self, ppn: int, ldt: bool = False) -> None:
        (self.watched_ldt if ldt else self.watched).discard(ppn)

    def _write_protect(self, ppn: int) -> None:
        for root, lin in self.rmap.pop(ppn, ()):
            addr = self._entry_addr(root, lin)
            if addr is None:
                continue
            e = self.mem.read32(addr)
            if e & P and e >> 12 == ppn:
                self.mem.write32(addr, e & ~W)
                if root is self.root:
                    self.cpu.invlpg(lin)

    def _entry_addr(self, root: Root, lin: int) -> int | None:
        t = root.tables.get(lin >> 22)
        return None if t is None else t[0] + ((lin >> 12) & 0x3FF) * 4

    # -- shadow directories ---------------------------------------------------------------
    def _alloc(self) -> int:
        if not self.free:
            self._reset_pool()
        page = self.free.pop()
        self.mem.write(page, bytes(PAGE))
        return page

    def _new_root(self, key: int, pdptes: list[int] | None = None) -> Root:
        if len(self.roots) >= self.max_roots:
            _, old = self.roots.popitem(last=False)
            self._free_root(old)
        root = Root(key, self._alloc(), pdptes)
        if self.region:
            self.mem.write32(root.pd + 1023 * 4, (self.base + L.MONITOR_PT) | P | W)
        self.roots[key] = root
        self.stats["shadow_roots_made"] += 1
        return root

    def _clear_root(self, root: Root) -> None:
        """Empty a shadow directory (its tables go back to the pool)."""
        for i, (table, _) in root.tables.items():
            self.mem.write32(root.pd + i * 4, 0)
            self.free.append(table)
            for src in root.sources(i):
                self._untrack(self.l1_users, src, (root, i))
        root.tables.clear()
        root.halves.clear()
        if root.tracked:
            for ppn in root.directories():
                self._untrack(self.l2_users, ppn, root)
            root.tracked = False
        if root is self.root:
            self.cpu.tlb_flush()

    def _free_root(self, root: Root) -> None:
        self._clear_root(root)
        self.free.append(root.pd)

    @staticmethod
    def _untrack(users: dict, ppn: int, who) -> None:
        s = users.get(ppn)
        if s is not None:
            s.discard(who)
            if not s:
                del users[ppn]

    def _reset_pool(self) -> None:
        """Out of shadow pages: empty every shadow (the guest refaults what it uses)."""
        self.stats["shadow_pool_resets"] += 1
        for key in [k for k, r in self.roots.items() if r is not self.root]:
            self._free_root(self.roots.pop(key))
        self._clear_root(self.root)
        self.rmap.clear()

    def switch(self, key: int, pdptes: list[int] | None = None) -> None:
        """The guest loaded CR3 (or turned paging on or off, or loaded its PDPTEs):
        select its shadow.  ``pdptes``: with PAE paging, the four PDPTEs just loaded;
        a shadow of the same PDPT filled from other ones starts again (§4.4.1: an edit
        of the PDPT counts from the next load)."""
        root = self.roots.get(key)
        if root is None:
            root = self._new_root(key, None if pdptes is None else list(pdptes))
        else:
            self.roots.move_to_end(key)
            self.stats["shadow_root_hits"] += 1
            if pdptes is not None and root.pdptes != list(pdptes):
                self._clear_root(root)
                root.pdptes = list(pdptes)
        self.root = root
        self.cpu.load_cr3(root.pd)

    def flush(self) -> None:
        """Forget every guest mapping in every shadow (paging rules changed: WP, PSE)."""
        for root in self.roots.values():
            self._clear_root(root)
        self.rmap.clear()
        self.stats["shadow_flushes"] += 1
        self.cpu.tlb_flush()

    # -- filling ---------------------------------------------------------------------------
    def install(self, lin: int, frame: int, user: bool, writable: bool,
                pde_addr: int | None = None, pte_addr: int | None = None) -> None:
        """Map guest linear page ``lin`` to machine frame ``frame``.

        ``pde_addr``/``pte_addr`` are where the guest's entries for it were read
        (None with paging off, ``pte_addr`` None for a 4 MiB page): those frames
        become write-protected.
        """
        lin &= ~0xFFF
        i = lin >> 22
        src = None if pte_addr is None else pte_addr >> 12
        root = self.root
        pae = root.pdptes is not None
        t = root.tables.get(i)
        if t is not None and (root.halves.get(lin >> 21, src) if pae else t[1]) != src:
            # the slot (PAE: its half) was filled from another guest table (a large
            # page before, say): start it again
            self._drop_table(root, i)
            t = None
        if t is None:
            table = self._alloc()
            root = self.root                      # (an exhausted pool emptied it)
            root.tables[i] = (table, None if pae else src)
            self.mem.write32(root.pd + i * 4, table | P | W | U)
        else:
            table = t[0]
        if pae:
            root.halves[lin >> 21] = src
        if src is not None and (root, i) not in self.l1_users.get(src, ()):
            self.l1_users.setdefault(src, set()).add((root, i))
            self._write_protect(src)
        if pde_addr is not None and not root.tracked:
            root.tracked = True
            for ppn in root.directories():
                self.l2_users.setdefault(ppn, set()).add(root)
                self._write_protect(ppn)
        if self.is_protected(frame >> 12):
            writable = False
        flags = P | A | (U if user else 0) | ((W | D) if writable else 0)
        self.mem.write32(table + ((lin >> 12) & 0x3FF) * 4, frame | flags)
        if writable:
            self.rmap.setdefault(frame >> 12, set()).add((root, lin))
        self.stats["shadow_fills"] += 1
        self.cpu.invlpg(lin)

    def install_fixed(self, lin: int, frame: int, writable: bool) -> None:
        """Map a page the monitor gives the guest at a fixed address (para-virtualization's
        start_info and shared_info), whatever the guest's tables say; supervisor only."""
        lin &= ~0xFFF
        i = lin >> 22
        t = self.root.tables.get(i)
        if t is None:
            table = self._alloc()
            self.root.tables[i] = (table, None)
            self.mem.write32(self.root.pd + i * 4, table | P | W | U)
        else:
            table = t[0]
        self.mem.write32(table + ((lin >> 12) & 0x3FF) * 4, frame | P | A | ((W | D) if writable else 0))
        self.cpu.invlpg(lin)

    def set_writable(self, lin: int, on: bool) -> None:
        """Open or close the current shadow's mapping of ``lin`` for writing (one step)."""
        addr = self._entry_addr(self.root, lin)
        if addr is not None:
            e = self.mem.read32(addr)
            if e & P:
                self.mem.write32(addr, e | W | D if on else e & ~W)
                self.cpu.invlpg(lin)

    def lookup(self, lin: int) -> int:
        """The current shadow's PTE for ``lin`` (0 if none)."""
        addr = self._entry_addr(self.root, lin)
        return 0 if addr is None else self.mem.read32(addr)

    # -- forgetting --------------------------------------------------------------------------
    def _drop_table(self, root: Root, i: int) -> None:
        for src in root.sources(i):
            self._untrack(self.l1_users, src, (root, i))
        table, _ = root.tables.pop(i)
        root.halves.pop(2 * i, None)
        root.halves.pop(2 * i + 1, None)
        self.mem.write32(root.pd + i * 4, 0)
        self.free.append(table)
        if root is self.root:
            self.cpu.tlb_flush()

    def _drop_entry(self, root: Root, lin: int) -> None:
        addr = self._entry_addr(root, lin)
        if addr is not None:
            self.mem.write32(addr, 0)
            if root is self.root:
                self.cpu.invlpg(lin)

    def invalidate(self, lin: int) -> None:
        """Forget the current shadow's mapping of one guest page (a guest INVLPG)."""
        if lin < self.top:
            self._drop_entry(self.root, lin & ~0xFFF)
        self.cpu.invlpg(lin)

    def invalidate_region(self, lin: int) -> None:
        """Forget a whole 4 MiB region (a guest INVLPG of a large page)."""
        if lin < self.top and lin >> 22 in self.root.tables:
            self._drop_table(self.root, lin >> 22)
        self.cpu.tlb_flush()

    def write_fault(self, ppn: int) -> None:
        """The guest's store to its table frame ``ppn`` trapped: drop what came from it."""
        self.stats["table_write_faults"] += 1
        for root, i in list(self.l1_users.pop(ppn, ())):
            if i in root.tables:
                self._drop_table(root, i)
        for root in list(self.l2_users.pop(ppn, ())):
            self._clear_root(root)

    def is_table(self, ppn: int) -> bool:
        return ppn in self.l1_users or ppn in self.l2_users

    def written(self, phys: int, n: int) -> None:
        """The monitor wrote guest memory: drop the shadow entries those bytes defined."""
        end = phys + n
        for ppn in range(phys >> 12, ((end - 1) >> 12) + 1):
            lo = max(phys, ppn << 12) & 0xFFF
            hi = min(end, (ppn + 1) << 12) - (ppn << 12)
            slots = range(lo >> 2, ((hi - 1) >> 2) + 1)
            wide = range(lo >> 3, ((hi - 1) >> 3) + 1)      # PAE: 8-byte entries
            users = self.l1_users.get(ppn)
            if users:
                self.stats["table_writes_seen"] += 1
                for root, i in list(users):
                    if root.pdptes is None:
                        lins = [(i << 22) | (k << 12) for k in slots]
                    else:                 # the half (or halves) filled from this table
                        lins = [(h << 21) | (k << 12) for h in (2 * i, 2 * i + 1)
                                if root.halves.get(h, -1) == ppn for k in wide]
                    for lin in lins:
                        self._drop_entry(root, lin)
            roots = self.l2_users.get(ppn)
            if roots:
                self.stats["table_writes_seen"] += 1
                for root in list(roots):
                    if root.pdptes is None:
                        pdes = slots
                    else:                 # each quarter whose page directory this is
                        pdes = {(q << 8) | (k >> 1) for q, e in enumerate(root.pdptes)
                                if e & P and (e & PAE_ADDR) >> 12 == ppn for k in wide}
                    for k in pdes:
                        if k in root.tables:
                            self._drop_table(root, k)
