"""Linear-to-physical translation: 32-bit paging (4 KiB and 4 MiB pages), PAE paging
(4 KiB and 2 MiB pages, ``pae.py``), the TLB.

The TLB is four dictionaries — reads and writes, supervisor and user — from a
linear page base to ``delta = physical page - linear page``.  Translated code
looks an access up with ``tlb.get(addr & PAGE_MASK_ALIGNED)``: the low bits of
the key carry the alignment, so one dictionary probe checks "mapped with the
right rights, and aligned".  A miss takes the slow path here, which walks the
page tables (setting accessed and dirty bits as the hardware does), raises
#PF, or fills the entry.

A write entry is made only once the dirty bit is set, and never for a page
that holds translated code: writes to such pages must reach
``PhysicalMemory`` so the stale translations can be dropped.

While memory writes are logged (``log_writes``, for live migration), write
entries are *parked*: set aside, not dropped, so the first write to a page
takes the slow path, which logs the page and puts the same entry back.  This is
QEMU's TLB_NOTDIRTY: the TLB holds exactly what it would have held, so the
guest sees the same translations (stale ones included) and the same timing.

In VMX non-root operation with EPT (``ept``, set by VM entry: ``ept.py``) the walk
translates every guest-physical address it uses -- the page-directory and page-table
entries it reads and updates, and the final page -- and the TLB caches the combined
linear-to-host-physical translation (SDM Vol. 3C §28.4.1), with the EPT permissions
ANDed in: a read entry only where EPT allows both reads and fetches (fetches look in
the read TLB), a write entry only where it allows writes.  Without EPT only the walk
tests ``ept``: the TLB hits cost the same.

PAE paging (CR4.PAE with CR0.PG) changes only the walk: its entries are the same TLB
entries, so the translator's fast paths, INVLPG, the code cache's physical-page tracking
and write logging are the same for both; a 32-bit walk pays one more bit test.
"""

from __future__ import annotations

from .ept import EPT_R, EPT_W, EPT_X
from .faults import GP, CpuFault, PageFault
from .memory import SPLIT_SIZES, PhysicalMemory, split_load
from .pae import ADDR, ADDR_2M, PDE_RESERVED_2M, PTE_RESERVED, pde_offset, pte_offset, read_pdptes
from .state import AC, CR0_PG, CR0_WP, CR4_PAE, CR4_PSE, CR4_SMAP, CR4_SMEP, CpuState

PTE_P, PTE_W, PTE_U, PTE_A, PTE_D, PTE_PS = 1, 2, 4, 0x20, 0x40, 0x80
PF_P, PF_W, PF_U, PF_RSVD, PF_I = 1, 2, 4, 8, 0x10
# a 4-MByte PDE's bits 21:13: bits 39:32 of the address with PSE-36, which this processor
# does not report (CPUID.1:EDX[17]: MAXPHYADDR 32), so all reserved (SDM Vol. 3A Table 4-4)
PSE_RESERVED = 0x003FE000
PAGE = 0xFFFFF000


def smap_blocks(cr4: int, eflags: int, user_page: bool, user: bool, fetch: bool) -> bool:
    """CR4.SMAP: a supervisor-mode data access to a user-mode page faults unless
    EFLAGS.AC is set (SDM Vol. 3 §4.6.1; the #PF has P=1 and U/S=0).  Fetches are
    SMEP's business.  (Implicit supervisor accesses at CPL 3 ignore AC; the CPU makes
    none to user pages.)"""
    return bool(user_page and cr4 & CR4_SMAP and not user and not fetch and not eflags & AC)


def fetch_fault(err: int, lin: int, code: int) -> bool:
    """Whether a #PF at ``lin`` came from fetching the instruction at linear ``code``.
    The error code says so only under SMEP (SDM Vol. 3 §4.7); otherwise a fault at
    the instruction's own bytes is its fetch (a monitor's test; a data access to
    those very bytes would pass for a fetch)."""
    return bool(err & PF_I) or (lin - code) & 0xFFFFFFFF < 16


class Mmu:
    def __init__(self, mem: PhysicalMemory, state: CpuState) -> None:
        self.mem = mem
        self.state = state
        # [user][write] -> {linear page: delta}
        self.tr_s: dict[int, int] = {}
        self.tw_s: dict[int, int] = {}
        self.tr_u: dict[int, int] = {}
        self.tw_u: dict[int, int] = {}
        self.stats_walks = 0
        # called with (physical address, size) before a slow-path write into a page
        # holding translated code (the code cache refuses writes into the running block)
        self.smc_hook = None
        # data breakpoints (DR0-DR3): (index, first, last, writes only); their pages stay
        # out of the TLB so every access to them comes through the slow paths below
        self.watch: list[tuple[int, int, int, bool]] = []
        self.watch_pages: set[int] = set()
        self.watch_hits = 0
        # write entries set aside while writes are logged ([user] -> {linear page: delta});
        # empty when they are not
        self.parked_s: dict[int, int] = {}
        self.parked_u: dict[int, int] = {}
        self.host = None       # the host debugger's watchpoints, when it has any (hostdebug.py)
        self.ept = None        # the EPT of a guest in VMX non-root operation (ept.Ept), or None
        # the 2 MiB regions (linear >> 21) where entries of a large page were filled: the
        # TLB holds a 4 MiB or 2 MiB page as 4 KiB entries, and an INVLPG anywhere in the
        # page must drop them all (SDM Vol. 3A §4.10.4.1); QEMU's tlb_flush_page flushes
        # everything for an address in its large-page region, and so does ``invlpg``
        self.large: set[int] = set()
        # the user TLB holds no page reaching past this address: user code under a
        # segment limit below 4 GiB (a monitor's cut) then checks the limit only on a
        # miss (translate.BlockBuilder.linear); lowered by ``lower_user_ceiling``
        self.user_ceiling = 0xFFFFFFFF

    # -- TLB management -------------------------------------------------------
    def flush(self) -> None:
        """Forget every translation (CR3 load, CR0/CR4 paging changes)."""
        self.tr_s.clear()
        self.tw_s.clear()
        self.tr_u.clear()
        self.tw_u.clear()
        self.parked_s.clear()
        self.parked_u.clear()
        self.large.clear()

    def invlpg(self, lin: int) -> None:
        if (lin & 0xFFFFFFFF) >> 21 in self.large:
            self.flush()
            return
        page = lin & PAGE
        for t in (self.tr_s, self.tw_s, self.tr_u, self.tw_u, self.parked_s, self.parked_u):
            t.pop(page, None)

    def lower_user_ceiling(self, limit: int) -> None:
        """From now on keep no user entry for a page reaching past ``limit`` (and drop
        those there are): a user access there takes the slow path."""
        if limit >= self.user_ceiling:
            return
        self.user_ceiling = limit
        for t in (self.tr_u, self.tw_u, self.parked_u):
            for page in [p for p in t if p | 0xFFF > limit]:
                del t[page]

    def log_writes(self, on: bool = True) -> None:
        """Start a round of write logging (park every write entry), or end logging
        (``on`` false: the parked entries go back).  ``mem.dirty`` is the log."""
        for tw, parked in ((self.tw_s, self.parked_s), (self.tw_u, self.parked_u)):
            if on:
                parked.update(tw)
                tw.clear()
            else:
                tw.update(parked)
                parked.clear()

    def _unpark(self, page: int, user: bool) -> int | None:
        """The parked write entry for ``page``, put back (the write about to use it is
        logged by the memory's slow path)."""
        d = (self.parked_u if user else self.parked_s).pop(page, None)
        if d is not None:
            (self.tw_u if user else self.tw_s)[page] = d
        return d

    def protect_code_page(self, ppn: int) -> None:
        """Drop write mappings of physical page ``ppn`` (it now holds translated code)."""
        target = ppn << 12
        for t in (self.tw_s, self.tw_u, self.parked_s, self.parked_u):
            stale = [lp for lp, d in t.items() if lp + d == target]
            for lp in stale:
                del t[lp]

    # -- the page walk ----------------------------------------------------------
    def walk(self, lin: int, write: bool, user: bool, fill: bool = True, fetch: bool = False) -> int:
        """Translate ``lin``; raise #PF on a violation; return the physical address.

        ``fetch``: an instruction fetch.  With CR4.SMEP a supervisor-mode fetch from
        a user-mode page faults, and every fetch fault reports I/D (SDM Vol. 3 §4.6, §4.7).
        """
        st = self.state
        lin &= 0xFFFFFFFF
        page = lin & PAGE
        ept = self.ept
        if not st.cr0 & CR0_PG:
            phys_page = page
            sup_w = user_w = user_ok = True
            smap = big = False
        else:
            self.stats_walks += 1
            mem = self.mem
            m32, size = mem.m32, mem.size
            err = (PF_W if write else 0) | (PF_U if user else 0)
            if fetch and st.cr4 & CR4_SMEP:
                err |= PF_I
            if st.cr4 & CR4_PAE:
                phys_page, rights, dirty = self._walk_pae(lin, write, user, err)
                big = 21 if rights & PTE_PS else 0    # (a PDE referencing a table has PS 0)
            else:
                big = 0
                pde_addr = gpde = (st.cr3 & PAGE) | ((lin >> 20) & 0xFFC)
                if ept is not None:               # the guest's page directory is guest-physical
                    pde_addr = ept.translate(gpde, EPT_R, lin, False)[0]
                pde = m32[pde_addr >> 2] if pde_addr < size else mem.read32(pde_addr)
                if not pde & PTE_P:
                    raise PageFault(lin, err)
                elif pde & PTE_PS and st.cr4 & CR4_PSE:
                    if pde & PSE_RESERVED:
                        raise PageFault(lin, err | PF_P | PF_RSVD)
                    big = 22
                    rights = pde
                    phys_page = (pde & 0xFFC00000) | (lin & 0x003FF000)
                    self._check(lin, rights, write, user, err)
                    new = pde | PTE_A | (PTE_D if write else 0)
                    if new != pde:
                        self._update(pde_addr, gpde, new, lin)
                    dirty = bool(new & PTE_D)
                else:
                    pte_addr = gpte = (pde & PAGE) | ((lin >> 10) & 0xFFC)
                    if ept is not None:
                        pte_addr = ept.translate(gpte, EPT_R, lin, False)[0]
                    pte = m32[pte_addr >> 2] if pte_addr < size else mem.read32(pte_addr)
                    if not pte & PTE_P:
                        raise PageFault(lin, err)
                    rights = pde & pte   # U/S and R/W are the AND of both levels
                    self._check(lin, rights, write, user, err)
                    if not pde & PTE_A:
                        self._update(pde_addr, gpde, pde | PTE_A, lin)
                    new = pte | PTE_A | (PTE_D if write else 0)
                    if new != pte:
                        self._update(pte_addr, gpte, new, lin)
                    dirty = bool(new & PTE_D)
                    phys_page = pte & PAGE
            user_ok = bool(rights & PTE_U)
            if fetch and not user and user_ok and st.cr4 & CR4_SMEP:
                raise PageFault(lin, err | PF_P)
            # under CR4.SMAP user pages get no supervisor TLB entries, so every ring-0
            # access comes here and sees the AC of the moment (STAC, CLAC and POPF
            # flush nothing)
            if smap_blocks(st.cr4, st.eflags, user_ok, user, fetch):
                raise PageFault(lin, err | PF_P)
            smap = user_ok and st.cr4 & CR4_SMAP
            sup_w = dirty and not smap and (bool(rights & PTE_W) or not st.cr0 & CR0_WP)
            user_w = dirty and user_ok and bool(rights & PTE_W)
        readable = True
        if ept is not None:                       # the final guest-physical page
            host, perm = ept.translate(phys_page | (lin & 0xFFF), EPT_X if fetch else
                                       EPT_W if write else EPT_R, lin, True)
            phys_page = host & ~0xFFF
            readable = perm & (EPT_R | EPT_X) == EPT_R | EPT_X
            if not perm & EPT_W:
                sup_w = user_w = False
        if fill and readable and self.mem.is_ram(phys_page) and page not in self.watch_pages:
            if big:
                self.large.add(lin >> 21)
                if big == 22:
                    self.large.add(lin >> 21 ^ 1)
            delta = phys_page - page
            if not smap:
                self.tr_s[page] = delta
            if page | 0xFFF > self.user_ceiling:
                user_ok = user_w = False
            if user_ok:
                self.tr_u[page] = delta
            if (phys_page >> 12) not in self.mem.code_pages:
                self._fill_write(page, delta, sup_w, user_w, write)
        return phys_page | (lin & 0xFFF)

    def _entry64(self, addr: int) -> int:
        """A 64-bit paging-structure entry (8-byte aligned) at host-physical ``addr``."""
        mem = self.mem
        if addr + 8 <= mem.size:
            m32 = mem.m32
            return m32[addr >> 2] | m32[(addr >> 2) + 1] << 32
        return mem.read32(addr) | mem.read32(addr + 4) << 32

    def _walk_pae(self, lin: int, write: bool, user: bool, err: int) -> tuple[int, int, bool]:
        """The PAE walk (SDM Vol. 3A §4.4.2): (physical page, combined rights, dirty).
        The PDPTE comes from the registers CR3's last load filled (``pae.py``); a PDE or
        PTE with a reserved bit is #PF with P and RSVD set (§4.7).  As QEMU does
        (target/i386/tcg/sysemu/excp_helper.c), a PDE's accessed bit is set when the walk
        uses it to reach the page table, before that table's entry is checked (§4.8)."""
        ept = self.ept
        pdpte = self.state.pdpte[lin >> 30]
        if not pdpte & PTE_P:
            raise PageFault(lin, err)
        pde_addr = gpde = (pdpte & ADDR) | pde_offset(lin)
        if ept is not None:
            pde_addr = ept.translate(gpde, EPT_R, lin, False)[0]
        pde = self._entry64(pde_addr)
        if not pde & PTE_P:
            raise PageFault(lin, err)
        if pde & PTE_PS:                          # a 2 MiB page, whatever CR4.PSE says
            if pde & PDE_RESERVED_2M:
                raise PageFault(lin, err | PF_P | PF_RSVD)
            self._check(lin, pde, write, user, err)
            new = pde | PTE_A | (PTE_D if write else 0)
            if new != pde:
                self._update(pde_addr, gpde, new & 0xFFFFFFFF, lin)
            return (pde & ADDR_2M) | (lin & 0x1FF000), pde, bool(new & PTE_D)
        if pde & PTE_RESERVED:
            raise PageFault(lin, err | PF_P | PF_RSVD)
        if not pde & PTE_A:
            self._update(pde_addr, gpde, (pde | PTE_A) & 0xFFFFFFFF, lin)
        pte_addr = gpte = (pde & ADDR) | pte_offset(lin)
        if ept is not None:
            pte_addr = ept.translate(gpte, EPT_R, lin, False)[0]
        pte = self._entry64(pte_addr)
        if not pte & PTE_P:
            raise PageFault(lin, err)
        if pte & PTE_RESERVED:
            raise PageFault(lin, err | PF_P | PF_RSVD)
        rights = pde & pte                        # U/S and R/W: the AND of both levels (§4.6)
        self._check(lin, rights, write, user, err)
        new = pte | PTE_A | (PTE_D if write else 0)
        if new != pte:
            self._update(pte_addr, gpte, new & 0xFFFFFFFF, lin)
        return pte & ADDR, rights, bool(new & PTE_D)

    def pdptes(self, cr3: int) -> list[int] | None:
        """The PDPTEs a load from ``cr3`` gives, or None (a reserved bit: #GP(0)).  In VMX
        non-root operation with EPT, CR3 is guest-physical (SDM Vol. 3C §28.3.1)."""
        ept = self.ept
        if ept is None:
            return read_pdptes(self._entry64, cr3)
        return read_pdptes(lambda gpa: self._entry64(ept.translate(gpa, EPT_R, None, False)[0]), cr3)

    def reload_pdptes(self, cr0: int, cr4: int, cr3: int) -> None:
        """With PAE paging in use under ``cr0``/``cr4``, load the four PDPTEs from ``cr3``
        (before the MOV or task switch commits): a present one with a reserved bit is
        #GP(0) and the registers keep their values (``pae.py``)."""
        if cr0 & CR0_PG and cr4 & CR4_PAE:
            pdptes = self.pdptes(cr3)
            if pdptes is None:
                raise CpuFault(GP, 0)
            self.state.pdpte[:] = pdptes

    def _update(self, addr: int, gpa: int, value: int, lin: int) -> None:
        """Set accessed/dirty bits in the guest paging-structure entry at ``addr``
        (guest-physical ``gpa``).  Under EPT the update is a write to that guest-physical
        address, which EPT must allow (SDM Vol. 3C §28.3.3.2)."""
        if self.ept is not None:
            self.ept.translate(gpa, EPT_W, lin, False)
        self.mem.write32(addr, value)

    def _fill_write(self, page: int, delta: int, sup_w: bool, user_w: bool, write: bool) -> None:
        dirty = self.mem.dirty
        if dirty is None or write:
            if sup_w:
                self.tw_s[page] = delta
            if user_w:
                self.tw_u[page] = delta
            if dirty is not None:
                dirty.add((page + delta) >> 12)
        else:
            # logging, and only read: the entry waits until a write comes this way
            if sup_w:
                self.parked_s[page] = delta
            if user_w:
                self.parked_u[page] = delta

    def _check(self, lin: int, rights: int, write: bool, user: bool, err: int) -> None:
        if user:
            if not rights & PTE_U or (write and not rights & PTE_W):
                raise PageFault(lin, err | PF_P)
        elif write and not rights & PTE_W and self.state.cr0 & CR0_WP:
            raise PageFault(lin, err | PF_P)

    def probe(self, lin: int) -> int | None:
        """Translate without side effects or faults (for debuggers and reports)."""
        st = self.state
        ept = self.ept
        phys = (lambda gpa: gpa) if ept is None else ept.probe
        if not st.cr0 & CR0_PG:
            return phys(lin)
        if st.cr4 & CR4_PAE:
            return self._probe_pae(lin, phys)
        pde_addr = phys((st.cr3 & PAGE) | ((lin >> 20) & 0xFFC))
        pde = 0 if pde_addr is None else self.mem.read32(pde_addr)
        if not pde & PTE_P:
            return None
        if pde & PTE_PS and st.cr4 & CR4_PSE:
            return phys((pde & 0xFFC00000) | (lin & 0x3FFFFF))
        pte_addr = phys((pde & PAGE) | ((lin >> 10) & 0xFFC))
        pte = 0 if pte_addr is None else self.mem.read32(pte_addr)
        if not pte & PTE_P:
            return None
        return phys((pte & PAGE) | (lin & 0xFFF))

    def _probe_pae(self, lin: int, phys) -> int | None:
        pdpte = self.state.pdpte[lin >> 30]
        if not pdpte & PTE_P:
            return None
        a = phys((pdpte & ADDR) | pde_offset(lin))
        pde = 0 if a is None else self._entry64(a)
        if not pde & PTE_P or pde & (PDE_RESERVED_2M if pde & PTE_PS else PTE_RESERVED):
            return None
        if pde & PTE_PS:
            return phys((pde & ADDR_2M) | (lin & 0x1FFFFF))
        a = phys((pde & ADDR) | pte_offset(lin))
        pte = 0 if a is None else self._entry64(a)
        if not pte & PTE_P or pte & PTE_RESERVED:
            return None
        return phys((pte & ADDR) | (lin & 0xFFF))

    # -- slow-path accesses (misses, unaligned, MMIO) --------------------------------
    def _watched(self, lin: int, size: int, write: bool) -> None:
        last = lin + size - 1
        for i, first, end, writes_only in self.watch:
            if lin <= end and first <= last and (write or not writes_only):
                self.watch_hits |= 1 << i
        if self.host is not None:
            self.host.watched(lin, size, write)

    def read(self, lin: int, size: int, user: bool) -> int:
        lin &= 0xFFFFFFFF
        if self.watch or self.host is not None:
            self._watched(lin, size, False)
        if (lin & 0xFFF) + size <= 0x1000:
            # implicit accesses (descriptor tables, the TSS, interrupt frames) use the
            # TLB like any other: an entry exists only where a walk allowed this kind
            # of access and set the accessed bit
            d = (self.tr_u if user else self.tr_s).get(lin & PAGE)
            if d is not None:
                return self.mem._read_sized(lin + d, size)
            return self.mem._read_sized(self.walk(lin, False, user), size)
        # crosses a page boundary: both pages are checked before the access
        first = 0x1000 - (lin & 0xFFF)
        p1 = self.walk(lin, False, user)
        p2 = self.walk((lin + first) & 0xFFFFFFFF, False, user)
        if size == 16:
            # two quadwords, each cut as it is (memory._read_sized; both pages checked first)
            return self.read(lin, 8, user) | self.read(lin + 8, 8, user) << 64
        if size in SPLIT_SIZES:
            # two aligned loads, one in each page (the same bytes from RAM; what a device
            # in either page answers: memory.split_load)
            low = lin & -size
            return split_load(lin, size, lambda a, n: self.mem._read_sized(
                p1 & -size if a == low else p2, n))
        lo = self.mem.read(p1, first)
        hi = self.mem.read(p2, size - first)
        return int.from_bytes(lo + hi, "little")

    def write(self, lin: int, size: int, value: int, user: bool) -> None:
        lin &= 0xFFFFFFFF
        if self.watch or self.host is not None:
            self._watched(lin, size, True)
        if (lin & 0xFFF) + size <= 0x1000:
            # write entries exist only for dirty, writable, non-code pages
            d = (self.tw_u if user else self.tw_s).get(lin & PAGE)
            if d is None and self.mem.dirty is not None:
                d = self._unpark(lin & PAGE, user)
            if d is not None:
                self.mem._write_sized(lin + d, size, value)
                return
            phys = self.walk(lin, True, user)
            if self.smc_hook is not None and (phys >> 12) in self.mem.code_pages:
                self.smc_hook(phys, size)
            self.mem._write_sized(phys, size, value)
            return
        first = 0x1000 - (lin & 0xFFF)
        p1 = self.walk(lin, True, user)
        p2 = self.walk((lin + first) & 0xFFFFFFFF, True, user)
        if size == 16:                  # (two quadwords: as read)
            self.write(lin, 8, value & ((1 << 64) - 1), user)
            self.write(lin + 8, 8, value >> 64, user)
            return
        if self.smc_hook is not None:
            for p, n in ((p1, first), (p2, size - first)):
                if (p >> 12) in self.mem.code_pages:
                    self.smc_hook(p, n)
        data = (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little")
        self.mem.write(p1, data[:first])
        self.mem.write(p2, data[first:])

    def read_bytes(self, lin: int, n: int, user: bool, fetch: bool = False) -> bytes:
        """``n`` bytes from ``lin``; ``fetch``: instruction bytes (SMAP, SMEP and the
        I/D bit treat them as fetches, not data reads)."""
        out = bytearray()
        while n > 0:
            chunk = min(n, 0x1000 - (lin & 0xFFF))
            out += self.mem.read(self.walk(lin, False, user, fetch=fetch), chunk)
            lin = (lin + chunk) & 0xFFFFFFFF
            n -= chunk
        return bytes(out)
