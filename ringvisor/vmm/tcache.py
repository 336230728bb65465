"""The translation cache: translated guest kernel code, in the hypervisor region.

Translations are x86 code in machine memory (``layout.TC``), executed by the
real CPU at ring 1.  Space is handed out sequentially; when it runs out, the
whole cache is flushed (VMware's first policy, and the simplest that is
correct: chained jumps between translations never dangle).  A translation whose
guest code changes is invalidated on its own, and the jumps chained into it are
turned back into "translate this" stubs; so is one whose linear pages no longer
map the frames its code came from (the guest changed a mapping and flushed it
from its TLB, ``remapped``), so that chained jumps follow the guest's mappings.

Besides the units that lookups find and jumps chain into, the cache holds
units made for one occasion, never looked up nor chained into (``live`` is
False from the start): a single guest instruction (a store that rewrites the
code after it, an instruction stepped under the guest's TF), and the stub that
stands for a target whose fetch faults.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from . import layout as L

CHAIN_STUB = b"\xCD" + bytes([L.CHAIN]) + b"\x90\x90\x90"


@dataclass(eq=False)
class Unit:
    guest: int                     # guest linear EIP of the first instruction
    phys: int                      # guest physical address of the first byte
    start: int                     # linear address in the translation cache
    end: int
    frames: set[int]               # guest page frames its code came from
    tc_map: list[int]              # translation-cache addresses ...
    guest_map: list[int]           # ... and the guest EIP each stands for
    incoming: list[int] = field(default_factory=list)   # chained jump sites into it
    live: bool = True
    pages: dict[int, int] = field(default_factory=dict)  # linear page -> frame, as translated
    lengths: list[int] = field(default_factory=list)     # each guest instruction's length
    cs_reads: bool = False         # reads through CS made through SS (``BinaryTranslation``)
    gone: bool = False             # invalidated
    tracked: bool = True           # goes when its frames are written or its pages remapped
    one: bool = False              # made for one occasion (a single instruction, a fault stub)
    def code_after(self, eip: int, frame: int, lo: int, hi: int) -> bool:
        """Does it hold code that follows guest ``eip`` in bytes ``[lo, hi)`` of ``frame``?"""
        for g, n in zip(self.guest_map, self.lengths):
            if g > eip and n:
                for b in range(g, g + n):
                    if self.pages.get(b >> 12) == frame and lo <= (b & 0xFFF) < hi:
                        return True
        return False


class TranslationCache:
    # (vmm/state.py) the translated code itself is in the monitor's region of machine memory
    STATE = ("top", "units", "by_frame", "starts", "all_units", "sites", "entries", "stats",
             "by_page", "page_frame", "singles", "cs_units")
    WIRING = ("mem", "phys", "start", "size")

    def __init__(self, mem, base: int, size: int = L.TC_SIZE, phys: int | None = None) -> None:
        self.mem = mem
        self.phys = base + L.TC if phys is None else phys    # (a domain's own: hypervisor)
        self.start = L.MLIN + L.TC
        self.size = size
        self.top = self.start
        self.units: dict[int, Unit] = {}        # guest EIP -> live unit
        self.by_frame: dict[int, set[int]] = {} # guest frame -> guest EIPs of units from it
        self.starts: list[int] = []             # TC start of every unit since the last flush
        self.all_units: list[Unit] = []
        self.sites: dict[int, tuple] = {}       # return address of a callout -> what it stands for
        self.entries: dict[int, tuple[Unit, int]] = {}   # guest EIP -> a unit holding it, and where
        self.by_page: dict[int, set[Unit]] = {}  # guest linear page -> units whose code it holds
        self.page_frame: dict[int, int] = {}     # ... and the frame it mapped for all of them
        self.singles: dict[int, Unit] = {}       # guest EIP -> its one-instruction unit (kept)
        self.cs_units: list[Unit] = []           # units that read through SS for CS
        self.stats = {"translations": 0, "guest_instructions": 0, "tc_bytes": 0, "lookups": 0,
                      "hits": 0, "chains": 0, "flushes": 0, "invalidations": 0, "mid-unit entries": 0,
                      "fault stubs": 0}

    # -- state (vmm/state.py) ------------------------------------------------------------
    def get_state(self) -> dict:
        """Every unit since the last flush (live or not: a thread may still be inside a
        dead one), which is current for each guest EIP, and what each callout site
        stands for (an instruction as its bytes, decoded again on restore)."""
        index = {id(u): k for k, u in enumerate(self.all_units)}
        sites = []
        for addr, site in self.sites.items():
            if site[0] in ("chain", "break"):
                sites.append([addr, site[0], site[1]])
            else:
                sites.append([addr, "callout", site[3], site[2]])
        return {
            "size": self.size,
            "top": self.top,
            "units": [[u.guest, u.phys, u.start, u.end, set(u.frames), list(u.tc_map),
                       list(u.guest_map), list(u.incoming), u.live, dict(u.pages),
                       list(u.lengths), u.cs_reads, u.gone, u.tracked, u.one] for u in self.all_units],
            "current": {g: index[id(u)] for g, u in self.units.items()},
            "singles": {g: index[id(u)] for g, u in self.singles.items()},
            "cs_units": [index[id(u)] for u in self.cs_units],
            "by_frame": {fr: set(gs) for fr, gs in self.by_frame.items()},
            "entries": {g: [index[id(u)], addr] for g, (u, addr) in self.entries.items()
                        if id(u) in index},
            "sites": sites,
            "stats": dict(self.stats),
        }

    def set_state(self, state: dict) -> None:
        import iced_x86 as ix
        self.flush()
        self.stats.clear()
        self.stats.update(state["stats"])
        if not 0x1000 <= state["size"] <= L.TC_SIZE:
            raise ValueError(f"a translation cache of {state['size']} bytes")
        self.size = int(state["size"])
        self.top = int(state["top"])
        for (guest, phys, start, end, frames, tc_map, guest_map, incoming, live, pages, lengths,
             cs_reads, gone, tracked, one) in state["units"]:
            u = Unit(guest, phys, start, end, set(frames), list(tc_map), list(guest_map),
                     list(incoming), bool(live), {int(p): int(fr) for p, fr in pages.items()},
                     list(lengths), bool(cs_reads), bool(gone), bool(tracked), bool(one))
            self.all_units.append(u)
            self.starts.append(u.start)
            if u.tracked and not u.gone:
                for page, frame in u.pages.items():
                    self.by_page.setdefault(page, set()).add(u)
                    self.page_frame[page] = frame
        for g, k in state["current"].items():
            self.units[g] = self.all_units[k]
        for g, k in state["singles"].items():
            self.singles[g] = self.all_units[k]
        self.cs_units[:] = [self.all_units[k] for k in state["cs_units"]]
        for fr, gs in state["by_frame"].items():
            self.by_frame[fr] = set(gs)
        for g, (k, addr) in state["entries"].items():
            self.entries[g] = (self.all_units[k], addr)
        for site in state["sites"]:
            if site[1] in ("chain", "break"):
                self.sites[site[0]] = (site[1], site[2])
            else:
                raw, g = site[2], site[3]
                self.sites[site[0]] = ("callout", ix.Decoder(32, raw, ip=g).decode(), g, raw)

    def room(self, n: int) -> bool:
        return self.top + n <= self.start + self.size

    def flush(self) -> None:
        self.units.clear()
        self.by_frame.clear()
        self.starts.clear()
        self.all_units.clear()
        self.sites.clear()
        self.entries.clear()
        self.by_page.clear()
        self.page_frame.clear()
        self.singles.clear()
        self.cs_units.clear()
        self.top = self.start
        self.stats["flushes"] += 1

    def write(self, lin: int, data: bytes) -> None:
        self.mem.write(self.phys + (lin - self.start), data)

    def add(self, unit: Unit, code: bytes, tracked: bool = True) -> None:
        """Place ``unit``; unless it is ``live``, lookups and chains never find it.
        ``tracked``: it goes when its frames are written or its pages remapped."""
        self.write(unit.start, code)
        self.top = unit.end
        unit.tracked = tracked
        if unit.live:
            self.units[unit.guest] = unit
        if tracked:
            for fr in unit.frames:
                self.by_frame.setdefault(fr, set()).add(unit.guest)
            for page, frame in unit.pages.items():
                self.remapped(page, frame)
                self.by_page.setdefault(page, set()).add(unit)
                self.page_frame[page] = frame
        self.starts.append(unit.start)
        self.all_units.append(unit)
        self.stats["translations"] += 1
        self.stats["guest_instructions"] += len(unit.guest_map)
        self.stats["tc_bytes"] = self.top - self.start

    def unit_at(self, lin: int) -> Unit | None:
        i = bisect.bisect_right(self.starts, lin) - 1
        if i < 0:
            return None
        u = self.all_units[i]
        return u if u.start <= lin < u.end else None

    def guest_eip(self, lin: int) -> int | None:
        """The guest EIP that translation-cache address ``lin`` stands for."""
        u = self.unit_at(lin)
        if u is None:
            return None
        i = bisect.bisect_right(u.tc_map, lin) - 1
        return u.guest_map[max(i, 0)]

    def chain(self, site: int, unit: Unit) -> None:
        """Patch the stub at ``site`` into a direct jump to ``unit``."""
        rel = (unit.start - (site + 5)) & 0xFFFFFFFF
        self.write(site, b"\xE9" + rel.to_bytes(4, "little"))
        unit.incoming.append(site)
        self.stats["chains"] += 1

    def invalidate_frame(self, frame: int) -> int:
        """Drop every translation made from guest frame ``frame``; the number dropped."""
        n = 0
        for g in self.by_frame.pop(frame, ()):
            for u in (self.units.get(g), self.singles.get(g)):
                if u is not None and frame in u.frames:
                    self.invalidate_unit(u)
                    n += 1
        return n

    def remapped(self, page: int, frame: int | None) -> int:
        """Guest linear page ``page`` now maps ``frame`` (None: nothing): drop the
        translations made from what it mapped before; the number dropped."""
        if self.page_frame.get(page, frame) == frame:
            return 0
        doomed = list(self.by_page[page])
        for u in doomed:
            self.invalidate_unit(u)
        return len(doomed)

    def invalidate_unit(self, u: Unit) -> None:
        """Drop one translation: lookups miss it, jumps chained into it become stubs again.

        Its code stays where it is until the next flush (a thread may be inside it)."""
        if self.units.get(u.guest) is u:
            del self.units[u.guest]
        if self.singles.get(u.guest) is u:
            del self.singles[u.guest]
        for page in u.pages:
            users = self.by_page.get(page)
            if users is not None:
                users.discard(u)
                if not users:
                    del self.by_page[page]
                    del self.page_frame[page]
        u.live = False
        u.gone = True
        for site in u.incoming:
            self.write(site, CHAIN_STUB)
        u.incoming.clear()
        self.stats["invalidations"] += 1
