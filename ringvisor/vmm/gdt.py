"""The guest's GDT in the real one, kept in step with the guest's own stores.

On the hardware, a segment load reads the descriptor from memory *then*: a
kernel that edits a descriptor in place sees the edit at its next load, and
the processor sets the descriptor's accessed bit when it loads it.  Under a
monitor the real GDT holds compressed copies (``descriptors.compress``) that
the real processor loads without asking, so the monitor must know when a copy
goes stale, and when the guest loads one for the first time:

- The frames that hold the guest's GDT are write-protected in the shadow page
  tables, as its page tables are.  A guest store to one (a real #PF) does not
  resynchronize at once: the GDT often shares its page with hot data (the TSS,
  the kernel's own variables), so the frame is made writable and every real
  entry it backs is *poisoned* (zeroed).  The next load of any of them faults
  with #GP(selector) into the monitor, which copies that page again, protects
  it again and lets the load run.  A page full of hot data costs one write
  fault and one load fault per round, not a fault per store.
- A code or data descriptor whose accessed bit is clear is poisoned too.  Its
  first load faults; the monitor puts the copy in place with the bit clear and
  single-steps the load.  If the real processor set the bit in the copy, the
  load happened, and the monitor sets it in the guest's descriptor -- exactly
  when the hardware would have.
- A frame whose stores keep leaving the descriptors alone (the GDT shares its page
  with hot data) is *relaxed*: writable, its entries poisoned, for as long as the
  guest loads none of them.  The first load faults, finds the descriptors as they
  are then, and protects the frame again: a store and a later load of a descriptor
  in place always have a trap between them, as they must under trapemu, where the
  guest's segment loads run on the real processor (and under bt, whose translated
  loads do too).
- The monitor's own IRET back into the guest loads CS and SS: a poisoned entry
  is put in place for the length of that IRET only.

The frames follow the guest's page tables: the walk that found them is kept,
and a store to one of those tables poisons everything too.
"""

from __future__ import annotations

import struct

from ringvisor.hw.segments import Descriptor

from . import layout as L
from . import state as S
from .descriptors import compress
from .guestmem import GuestBadFrame, GuestPageFault

ACCESSED = 1 << 40
PAGE = 0x1000
HOT_AFTER = 8           # stores that leave the descriptors alone before a frame is relaxed
SAMPLE = 8              # rounds relaxed at their first store between two that emulate it
ROUNDS = {"run": 0, "bursts": False, "sampling": False, "skipped": 0}   # (``ripe``) at start


class GuestGdt:
    NAME, TI = "gdt", 0                   # the table selectors with TI = 0 index
    REAL, MAX = L.GDT, L.FIRST_RESERVED   # the real copy; entries the guest may have there
    # (vmm/state.py) The rounds (``run``, ``bursts``, ``sampling``, ``skipped``) outlive an
    # entry into the monitor: they decide whether the next store is emulated or relaxes the
    # frame, and a relaxed round costs one more entry (the poisoned load's #GP), which is an
    # instruction of virtual time -- a VM restored without them retired a few instructions
    # more or fewer than the run it continues.
    STATE = ("tracking", "n", "pages", "frames", "walk", "dirty", "remapped", "unaccessed",
             "held", "hot", "hot_after", "relaxed", "run", "bursts", "sampling", "skipped",
             "stats")
    WIRING = ("mon", "mem", "real")
    TRANSIENT = ("caught_up", "changed", "spans", "source")

    def __init__(self, mon) -> None:
        self.mon = mon
        self.mem = mon.mem
        self.real = mon.base + self.REAL      # machine address of the real table
        self.tracking = True                  # para-virtualization gives its GDT by hypercall
        self.n = 0                            # guest entries the real GDT holds
        self.pages: list[int | None] = []     # GDT page i -> guest frame (None: unmapped)
        self.frames: dict[int, list[int]] = {}   # guest frame -> the GDT pages it holds
        self.walk: set[int] = set()           # guest table frames those pages were found through
        self.dirty: set[int] = set()          # frames stored to since their entries were copied
        self.remapped = False                 # a table on the walk was stored to
        self.unaccessed: set[int] = set()     # entries poisoned until their first load
        self.held: dict[int, bytes] = {}      # CS/SS selector -> the entry it was loaded from
        self.caught_up = False                # entries were copied again at this entry into the monitor
        self.changed = False                  # ``written`` changed a real entry
        self.hot: dict[int, int] = {}         # frame -> stores in a row that left the GDT alone
        self.hot_after: dict[int, int] = {}   # frame -> how many make it relaxed
        self.relaxed: dict[int, bytes] = {}   # writable frames, entries poisoned -> GDT bytes then
        self.spans: dict[int, list] = {}      # (their GDT bytes: physical spans)
        self.run = 0                          # stores trapped since a segment load seen (``ripe``)
        self.bursts = False                   # ... rounds have more than one store
        self.sampling = False                 # this round's first store was emulated to see
        self.skipped = 0                      # rounds relaxed at once since the last sample
        # the guest table (base, limit) the real one was copied from: with several virtual
        # processors, the one that loaded it last (``vcpus.py``)
        self.source: tuple[int, int] | None = None
        self.stats = {f"{self.NAME}_{k}": 0 for k in
                      ("syncs", "write_faults", "load_faults", "frames_relaxed")}
        if not self.TI:
            self.stats["accessed_bits_set"] = 0     # (every table's: ``set_accessed``)

    def table(self) -> tuple[int, int]:
        """The guest table's linear base and limit (GDTR's)."""
        v = self.mon.vcpu
        return v.gdt_base, v.gdt_limit

    def guest_bytes(self, offset: int, n: int) -> bytes:
        return self.mon.guest_gdt_bytes(offset, n)

    def get_state(self) -> dict:
        return S.get_attrs(self)

    def set_state(self, state: dict) -> None:
        # an image older than the monitor's state version 6 has no rounds: a fresh table's
        # (its restored run may then differ from the one it continues by a few entries)
        S.set_attrs(self, {**ROUNDS, **state})

    # -- building the real table --------------------------------------------------------
    def reload(self) -> None:
        """LGDT, or the GDT's pages may have moved: map them again and copy everything."""
        mon = self.mon
        base, limit = self.source = self.table()
        self.n = min((limit + 1) // 8, self.MAX)
        for ppn in self.frames:
            mon.shadow.unwatch(ppn, self.TI)
        self.pages, self.frames, self.walk = [], {}, set()
        self.dirty.clear()
        self.hot.clear()
        self.relaxed.clear()
        self.spans.clear()
        self.unaccessed.clear()
        self.remapped = False
        if self.tracking:
            first, last = base >> 12, (base + self.n * 8 - 1) >> 12 if self.n else -1
            for i, page in enumerate(range(first, last + 1)):
                try:
                    m = mon.gm.translate(page << 12, False, False, set_bits=False)
                    ppn = m.phys >> 12 if mon.gm.translated or m.phys < mon.guest_ram else None
                except (GuestPageFault, GuestBadFrame):
                    m, ppn = None, None
                self.pages.append(ppn)
                if ppn is not None:
                    self.frames.setdefault(ppn, []).append(i)
                    self.walk.update(a >> 12 for a in (m.pde_addr, m.pte_addr) if a is not None)
            for ppn in self.frames:
                mon.shadow.watch(ppn, self.TI)
        table = bytearray(self.MAX * 8)
        table[:self.n * 8] = self._copy(0, self.n)
        self.mem.write(self.real, bytes(table))
        self.stats[self.NAME + "_syncs"] += 1

    def moved(self) -> bool:
        """Paging changed (CR3, CR0.PG, CR4.PSE): are the GDT's pages still the same frames?"""
        if not self.tracking:
            return False
        base = self.table()[0]
        for i, ppn in enumerate(self.pages):
            try:
                p = self.mon.gm.translate(((base >> 12) + i) << 12, False, False,
                                          set_bits=False).phys >> 12
            except (GuestPageFault, GuestBadFrame):
                p = None
            if p != ppn:
                return True
        return False

    def _copy(self, first: int, last: int) -> bytes:
        """Real entries ``first`` .. ``last - 1`` from the guest's table as it is now."""
        out = []
        for i in range(first, last):
            raw = self._guest_raw(i)
            real = 0 if raw is None else compress(raw)
            if self.tracking and real and raw is not None and raw >> 44 & 1 and \
                    not raw & ACCESSED and raw >> 47 & 1:
                self.unaccessed.add(i)
                real = 0                      # poisoned until its first load
            else:
                self.unaccessed.discard(i)
            out.append(real)
        return struct.pack(f"<{len(out)}Q", *out)

    def _guest_raw(self, i: int) -> int | None:
        try:
            return int.from_bytes(self.guest_bytes(i * 8, 8), "little")
        except (GuestPageFault, GuestBadFrame):
            return None

    def _frame_raw(self, i: int) -> int | None:
        """Entry ``i`` read from the frames the GDT was in at the last reload: after a
        CR3 load the guest's paging need not map its GDT any more (a kernel's own tables
        rarely map the loader's), yet its CS and SS keep the descriptors they were loaded
        from, as the processor's segment caches do."""
        a = (self.table()[0] & 0xFFF) + 8 * i
        out = b""
        for lo in (a, (a | 0xFFF) + 1):
            if lo >= a + 8:
                break
            idx, n = lo >> 12, min(a + 8, (lo | 0xFFF) + 1) - lo
            ppn = self.pages[idx] if idx < len(self.pages) else None
            if ppn is None:
                return None
            out += self.mem.read((ppn << 12) | (lo & 0xFFF), n)
        return int.from_bytes(out, "little")

    def _entries(self, page: int, lo: int = 0, hi: int = PAGE - 1) -> range:
        """The entries with a byte at offsets ``lo`` .. ``hi`` of GDT page ``page``."""
        b = self.table()[0] & 0xFFF
        first = max(0, (page * PAGE + lo - b) // 8)
        last = min(self.n, (page * PAGE + hi - b) // 8 + 1)
        return range(first, max(first, last))

    def _pages(self, i: int) -> set[int]:
        b = self.table()[0] & 0xFFF
        return {(b + 8 * i) >> 12, (b + 8 * i + 7) >> 12}

    def _sync(self, entries: range) -> bool:
        """Copy ``entries`` again; True if a real entry changed."""
        if not entries:
            return False
        new = self._copy(entries.start, entries.stop)
        at = self.real + entries.start * 8
        if self.mem.read(at, len(new)) == new:
            return False
        self.mem.write(at, new)
        return True

    def _poison(self, entries: range) -> None:
        if entries:
            self.mem.write(self.real + entries.start * 8, bytes(8 * len(entries)))

    # -- the guest's stores ------------------------------------------------------------
    def stored(self, ppn: int) -> None:
        """The guest's store to frame ``ppn`` trapped (it is about to happen)."""
        if ppn in self.frames and ppn not in self.dirty and ppn not in self.relaxed:
            self.stats[self.NAME + "_write_faults"] += 1
            self.dirty.add(ppn)
            self.mon.shadow.unwatch(ppn, self.TI)
            for page in self.frames[ppn]:
                self._poison(self._entries(page))
        if ppn in self.walk and not self.remapped:
            self.remapped = True
            self._poison(range(self.n))

    # -- pages shared with hot data ---------------------------------------------------------
    def monitor_store(self, ppn: int) -> None:
        """The monitor performed a guest store to frame ``ppn`` (``stores``); ``changed``
        says whether it changed a real descriptor.  A frame whose stores keep leaving the
        descriptors alone holds hot data beside the GDT (the teaching kernel's counters,
        xv6's ``struct cpu``): after ``HOT_AFTER`` in a row it is ``ripe``."""
        self.hot[ppn] = 0 if self.changed else self.hot.get(ppn, 0) + 1

    def ripe(self, ppn: int) -> bool:
        """Should the store that trapped on hot frame ``ppn`` relax it rather than be
        emulated?  A *round* is what the guest does between two segment loads the
        monitor sees (its own: deliveries and emulated returns, ``reloaded``; a fault on
        a poisoned entry); relaxed, a round costs a store fault and a load fault.  A
        round of one store (a system call's counter, between the monitor's delivery of
        the call and the kernel's loads on its way out) is cheaper emulated: one trap.
        So the second store of a round relaxes the frame, and once a round had a
        second, the first of the next rounds does -- but one round in ``SAMPLE``
        emulates its first store again, to find out whether rounds are still bursts."""
        self.run += 1
        if self.hot.get(ppn, 0) < self.hot_after.get(ppn, HOT_AFTER):
            return False
        if self.run > 1:
            self.bursts = True
            return True
        if self.bursts and self.skipped < SAMPLE:
            self.skipped += 1
            return True
        self.skipped, self.sampling = 0, True
        return False

    def _round(self) -> None:
        """The monitor saw a segment load: a round of stores ends (``ripe``)."""
        if self.sampling and self.run == 1:
            self.bursts = False                 # a lone store: emulate them again
        self.sampling = False
        self.run = 0

    def relax(self, ppn: int) -> None:
        """Make frame ``ppn`` writable, its real entries poisoned until the guest loads one
        of them (``load_fault``: ``protect``): its stores cost nothing meanwhile."""
        self.spans[ppn] = self._spans(ppn)
        self.relaxed[ppn] = self._snapshot(ppn)
        self.mon.shadow.unwatch(ppn, self.TI)
        for page in self.frames[ppn]:
            self._poison(self._entries(page))
        self.stats[self.NAME + "_frames_relaxed"] += 1

    def protect(self, ppn: int) -> None:
        """A load of a relaxed frame's entry faulted: copy the frame's descriptors as they
        are now and protect the frame again.  Its next store relaxes it again at once if
        the guest edited no descriptor meanwhile (a round costs a store fault and a load
        fault); an edit doubles the stores it takes (a kernel that keeps editing its GDT
        in place ends up with it protected, each store emulated)."""
        if self._snapshot(ppn) != self.relaxed.pop(ppn):
            self.hot_after[ppn] = 2 * self.hot_after.get(ppn, HOT_AFTER)
            self.hot[ppn] = 0
        else:
            self.hot[ppn] = self.hot_after.get(ppn, HOT_AFTER)
        self._round()
        for page in self.frames[ppn]:
            self._sync(self._entries(page))
        self.mon.shadow.watch(ppn, self.TI)

    def _spans(self, ppn: int) -> list[tuple[int, int]]:
        """(physical address, length) of the GDT's bytes in frame ``ppn``."""
        b = self.table()[0] & 0xFFF
        out = []
        for page in self.frames[ppn]:
            lo = max(0, b - page * PAGE)
            hi = min(PAGE, b + self.n * 8 - page * PAGE)
            if hi > lo:
                out.append(((ppn << 12) + lo, hi - lo))
        return out

    def _snapshot(self, ppn: int) -> bytes:
        spans = self.spans.get(ppn)
        if spans is None:
            spans = self.spans[ppn] = self._spans(ppn)
        if len(spans) == 1:
            return self.mem.read(*spans[0])
        return b"".join(self.mem.read(a, n) for a, n in spans)

    def at_entry(self, cs: int, ss: int) -> None:
        """At each entry into the monitor: what the guest stored since, copied."""
        self.release(cs, ss)
        self.caught_up = False
        if self.dirty or self.remapped:
            self.catch_up()

    def catch_up(self) -> None:
        """At the next entry into the monitor, the stores that made frames writable are
        done: copy those frames again and protect them again."""
        self.caught_up = True
        if self.remapped:
            self.reload()
            return
        for ppn in self.dirty:
            for page in self.frames[ppn]:
                self._sync(self._entries(page))
            self.mon.shadow.watch(ppn, self.TI)
        self.dirty.clear()

    def written(self, phys: int, n: int) -> None:
        """The monitor wrote guest memory (it is done): copy what it changed."""
        for ppn in range(phys >> 12, ((phys + n - 1) >> 12) + 1):
            if ppn in self.walk:
                self.reload()
                return
            if ppn in self.relaxed:
                # poisoned until the next load: the monitor's own store (an accessed
                # bit) is no edit of the guest's
                self.relaxed[ppn] = self._snapshot(ppn)
                continue
            if ppn not in self.frames or ppn in self.dirty:
                continue
            lo = max(phys, ppn << 12) - (ppn << 12)
            hi = min(phys + n, (ppn + 1) << 12) - 1 - (ppn << 12)
            for page in self.frames[ppn]:
                self.changed |= self._sync(self._entries(page, lo, hi))

    # -- the guest's loads ---------------------------------------------------------------
    def load_fault(self, sel: int) -> str | None:
        """A segment load faulted on ``sel``.  "retry" if the entry was stale (now copied),
        "step" if it is a first load (the entry is in place with its accessed bit clear),
        None if the fault is the guest's own."""
        i = sel >> 3
        if sel & 4 != self.TI or i >= self.n:
            return None
        if self.mem.read(self.real + i * 8, 8) != bytes(8):
            # the entry is in place: the guest's own fault -- unless it was put back at
            # this very entry (``catch_up``): then the load has not seen it yet
            return "retry" if self.caught_up else None
        if self.remapped:
            self.reload()
            self.stats[self.NAME + "_load_faults"] += 1
        else:
            frames = {self.pages[p] for p in self._pages(i) if p < len(self.pages)}
            stale = frames & self.dirty
            for ppn in stale:
                self.dirty.discard(ppn)
                for page in self.frames[ppn]:
                    self._sync(self._entries(page))
                self.mon.shadow.watch(ppn, self.TI)
            for ppn in frames & self.relaxed.keys():
                self.protect(ppn)
                stale.add(ppn)
            if stale:
                self.stats[self.NAME + "_load_faults"] += 1
            elif i not in self.unaccessed:
                return None
        if i not in self.unaccessed:
            return "retry"
        raw = self._guest_raw(i)
        if raw is None:
            return None
        self.mem.write(self.real + i * 8, struct.pack("<Q", compress(raw) & ~ACCESSED))
        self.stats[self.NAME + "_load_faults"] += 1
        return "step"

    def loaded(self, sel: int) -> None:
        """After a single-stepped first load: if the real processor set the copy's accessed
        bit, set the guest's (the write syncs the entry); otherwise poison it again."""
        i = sel >> 3
        if i not in self.unaccessed:
            return
        if self.mem.read32(self.real + i * 8 + 4) & (ACCESSED >> 32):
            raw = self._guest_raw(i)
            if raw is not None:
                self.set_accessed(Descriptor(raw, self.table()[0] + i * 8))
                return
        self.mem.write(self.real + i * 8, bytes(8))

    def set_accessed(self, d: Descriptor) -> None:
        """The processor marks a descriptor it loads accessed (SDM Vol. 3 §3.4.5)."""
        if self.tracking and not d.raw & ACCESSED and d.s:
            d.raw |= ACCESSED
            self.mon.gm.write_u(d.addr + 5, 1, (d.raw >> 40) & 0xFF)
            self.mon.gdt.stats["accessed_bits_set"] += 1     # (every table's, counted once)

    # -- the monitor's own IRET ----------------------------------------------------------
    def hold(self) -> None:
        """Before LGDT: the guest's CS and SS keep the descriptors they were loaded from
        until it loads them again (after LGDT a kernel far-jumps to its new CS), so the
        monitor's IRET back into the guest must not read them from the new table."""
        f = self.mon.frame
        if f is None:
            return
        for sel in (f.cs, f.ss):
            i = sel >> 3
            if sel & 4 != self.TI or i >= self.MAX or sel in self.held:
                continue
            now = self.mem.read(self.real + i * 8, 8)
            if now == bytes(8) and i < self.n:            # poisoned: as the guest had it
                raw = self._guest_raw(i)
                if raw is None:
                    raw = self._frame_raw(i)
                now = struct.pack("<Q", (compress(raw) | ACCESSED) if raw is not None else 0)
            self.held[sel] = now

    def release(self, cs: int, ss: int) -> None:
        """At entry: a held CS or SS the guest has since loaded anew is its own again."""
        if self.held:
            for sel in list(self.held):
                if sel not in (cs, ss):
                    del self.held[sel]

    def reloaded(self, sel: int) -> None:
        """The monitor loaded ``sel`` into CS or SS for the guest."""
        self.held.pop(sel, None)
        self._round()

    def unpoison(self, *sels: int) -> list[tuple[int, bytes]]:
        """Put the entries of ``sels`` in place for one real IRET (as they were when the
        guest loaded them, or its descriptor now); what to put back after."""
        undo = []
        if not (self.held or self.unaccessed or self.dirty or self.remapped or self.relaxed):
            return undo                       # nothing is poisoned
        for sel in sels:
            i = sel >> 3
            if sel & 4 != self.TI or i >= self.MAX:
                continue
            now = self.mem.read(self.real + i * 8, 8)
            want = self.held.get(sel)
            if want is None:
                if now != bytes(8) or i >= self.n:
                    continue
                raw = self._guest_raw(i)
                real = 0 if raw is None else compress(raw)
                if not real:
                    continue
                want = struct.pack("<Q", real | ACCESSED)
            if want != now:
                undo.append((i, now))
                self.mem.write(self.real + i * 8, want)
        return undo

    def repoison(self, undo: list[tuple[int, bytes]]) -> None:
        for i, old in undo:
            self.mem.write(self.real + i * 8, old)
