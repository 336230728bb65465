"""The guest's view of memory, walked in software by the monitor.

The monitor reads and writes guest memory by guest *linear* address (a
descriptor table, an interrupt frame, an instruction to emulate) exactly as the
guest's own page tables say, with the guest's protection rules and accessed and
dirty bits, and never touches memory outside the guest's RAM.
"""

from __future__ import annotations

from dataclasses import dataclass

from ringvisor.hw.pae import (ADDR as PAE_ADDR, ADDR_2M, PDE_RESERVED_2M, PTE_RESERVED, pde_offset,
                              pte_offset, read_pdptes)
from ringvisor.hw.state import CR4_PAE, CR4_SMAP
from ringvisor.hw.mmu import PSE_RESERVED

from .layout import MLIN
from .vcpu import CR0_WP, CR4_PSE, VirtualCpu

P, W, U, RSVD, A, D, PS = 1, 2, 4, 8, 0x20, 0x40, 0x80
PAGE = 0xFFFFF000


class GuestPageFault(Exception):
    """The guest's own page tables refuse an access: a #PF for the guest."""

    def __init__(self, address: int, error_code: int) -> None:
        super().__init__(f"guest #PF at {address:#010x} (error {error_code:#x})")
        self.address = address
        self.error_code = error_code


class GuestBadFrame(Exception):
    """A guest mapping names physical memory the guest does not have."""


@dataclass
class Mapping:
    phys: int          # guest physical address of the byte asked for
    user: bool         # user-accessible at both levels
    writable: bool     # writable at both levels
    dirty: bool        # the guest PTE's dirty bit (after this access)
    large: bool        # a 4 MiB page
    pde_addr: int | None = None   # where the guest's entries were read (None: paging off)
    pte_addr: int | None = None


class GuestMemory:
    def __init__(self, mem, vcpu: VirtualCpu, ram_size: int) -> None:
        self.mem = mem
        self.vcpu = vcpu
        self.ram_size = ram_size
        # pseudo-physical frame -> machine frame, for a domain of a hypervisor whose memory
        # is frames from a pool (Xen's P2M); None: guest physical is machine physical
        self.p2m: dict[int, int] | None = None
        self.written_hook = lambda phys, n: None     # the monitor's: code and table frames
        # pages the monitor itself places at fixed linear addresses (para-virtualization's
        # start_info and shared_info): linear page -> (machine address, writable)
        self.fixed: dict[int, tuple[int, bool]] = {}
        # the real MMU and the shadow paging whose tables it walks, when the monitor runs
        # the guest on shadows (``use_tlb``): the real TLB answers for a page first
        self.mmu = None
        self.shadow = None
        self.tlb_stale = False    # a single-stepped store may have changed a guest table
        # the guest's PDPTE registers, for a monitor whose guest may use PAE paging
        self.pdptes = lambda: [0, 0, 0, 0]

    def use_tlb(self, mmu, shadow) -> None:
        """Look guest pages up in the real TLB before walking the guest's tables.

        An entry there came from the current shadow, and a shadow entry exists only
        once a walk of the guest's tables allowed that kind of access and set the
        accessed bit (and, for a write entry, the dirty bit); every store to a guest
        table drops the shadow entries it defined and their TLB entries with them.
        So a hit is what the walk would find, without the walk, as the processor's own
        implicit accesses (its IDT, GDT, TSS reads and frame pushes) use its TLB (SDM
        Vol. 3 §4.10.2).  Only while the current shadow is the one loaded: a
        hypervisor may reach a guest whose address space is not."""
        self.mmu, self.shadow = mmu, shadow

    @property
    def translated(self) -> bool:
        return self.p2m is not None

    def machine(self, gpa: int) -> int:
        """The machine address of guest physical ``gpa`` (the P2M's; identity without one)."""
        if self.p2m is None:
            return gpa
        mfn = self.p2m.get(gpa >> 12)
        if mfn is None:
            raise GuestBadFrame(f"guest physical {gpa:#x} is not backed by a frame of the "
                                f"domain (its P2M has no entry for frame {gpa >> 12:#x})")
        return mfn << 12 | (gpa & 0xFFF)

    # -- page walks -------------------------------------------------------------------
    def translate(self, lin: int, write: bool, user: bool, set_bits: bool = True) -> Mapping:
        """Walk the guest's tables for one access; raise GuestPageFault as the guest's MMU would.

        The addresses in the result are machine addresses (with a P2M, every guest
        physical address the walk meets is translated)."""
        v = self.vcpu
        lin &= 0xFFFFFFFF
        if not v.paging:
            return Mapping(self.machine(lin), True, True, True, False)
        err = (2 if write else 0) | (4 if user else 0)
        if v.cr4 & CR4_PAE:
            entries, phys, rights, large = self._walk_pae(lin, err)
        else:
            entries, phys, rights, large = self._walk_32(lin, err)
        if user and not rights & U:
            raise GuestPageFault(lin, err | 1)
        if write and not rights & W and (user or v.cr0 & CR0_WP):
            raise GuestPageFault(lin, err | 1)
        last_addr, last = entries[-1]
        if set_bits:
            for addr, e in entries[:-1]:
                if not e & A:
                    self.mem.write32(addr, (e | A) & 0xFFFFFFFF)
            new = last | A | (D if write else 0)
            if new != last:
                self.mem.write32(last_addr, new & 0xFFFFFFFF)
                last = new
        return Mapping(phys, bool(rights & U), bool(rights & W), bool(last & D), large,
                       entries[0][0], None if large else entries[1][0])

    def read_pdptes(self, cr3: int) -> list[int] | None:
        """The four PDPTEs a MOV to CR3 = ``cr3`` loads from guest-physical memory, or None
        when a present one sets a reserved bit (the MOV is #GP(0), SDM Vol. 3A §4.4.1).
        A PDPT beyond the guest's RAM reads all ones, as open bus does on the bare PC
        (present, reserved bits: #GP): never the monitor's memory above it."""
        def entry(gpa: int) -> int:
            if self.p2m is None and gpa + 8 > self.ram_size:
                return (1 << 64) - 1
            return self.mem.read32(self.machine(gpa)) | self.mem.read32(self.machine(gpa + 4)) << 32
        return read_pdptes(entry, cr3)

    def page_shift(self, lin: int) -> int:
        """log2 of the size of the guest page that maps ``lin`` (22: 4 MiB, 21: 2 MiB;
        12 otherwise, unmapped too): what a guest INVLPG of ``lin`` invalidates."""
        v = self.vcpu
        if not v.paging:
            return 12
        try:
            if v.cr4 & CR4_PAE:
                pdpte = self.pdptes()[lin >> 30]
                if not pdpte & P:
                    return 12
                pde = self._read_table(self.machine((pdpte & PAE_ADDR) | pde_offset(lin)))
                return 21 if pde & (PS | P) == PS | P else 12
            if not v.cr4 & CR4_PSE:
                return 12
            pde = self._read_table(self.machine(v.cr3 & PAGE) + (lin >> 22) * 4)
        except GuestBadFrame:
            return 12
        return 22 if pde & (PS | P) == PS | P else 12

    def _walk_pae(self, lin: int, err: int) -> tuple[list, int, int, bool]:
        """PAE paging (hw/pae.py): the PDPTEs are the guest's registers (``pdptes``),
        the entries 64-bit."""
        pdpte = self.pdptes()[lin >> 30]
        if not pdpte & P:
            raise GuestPageFault(lin, err)
        pde_addr = self.machine((pdpte & PAE_ADDR) | pde_offset(lin))
        pde = self._read_table(pde_addr) | self._read_table(pde_addr + 4) << 32
        if not pde & P:
            raise GuestPageFault(lin, err)
        if pde & PS:
            if pde & PDE_RESERVED_2M:
                raise GuestPageFault(lin, err | 1 | RSVD)
            return [(pde_addr, pde)], self.machine((pde & ADDR_2M) | (lin & 0x1FFFFF)), pde, True
        if pde & PTE_RESERVED:
            raise GuestPageFault(lin, err | 1 | RSVD)
        pte_addr = self.machine((pde & PAE_ADDR) | pte_offset(lin))
        pte = self._read_table(pte_addr) | self._read_table(pte_addr + 4) << 32
        if not pte & P:
            raise GuestPageFault(lin, err)
        if pte & PTE_RESERVED:
            raise GuestPageFault(lin, err | 1 | RSVD)
        return ([(pde_addr, pde), (pte_addr, pte)], self.machine((pte & PAE_ADDR) | (lin & 0xFFF)),
                pde & pte, False)

    def _walk_32(self, lin: int, err: int) -> tuple[list, int, int, bool]:
        v = self.vcpu
        pde_addr = self.machine(v.cr3 & 0xFFFFF000) + (lin >> 22) * 4
        pde = self._read_table(pde_addr)
        if not pde & P:
            raise GuestPageFault(lin, err)
        if pde & PS and v.cr4 & CR4_PSE:
            if pde & PSE_RESERVED:          # (hw.mmu: no PSE-36, bits 21:13 reserved)
                raise GuestPageFault(lin, err | 1 | 8)
            rights = pde
            entries = [(pde_addr, pde)]
            phys = self.machine((pde & 0xFFC00000) | (lin & 0x3FFFFF))
            large = True
        else:
            pte_addr = self.machine(pde & 0xFFFFF000) + ((lin >> 12) & 0x3FF) * 4
            pte = self._read_table(pte_addr)
            if not pte & P:
                raise GuestPageFault(lin, err)
            rights = pde & pte
            entries = [(pde_addr, pde), (pte_addr, pte)]
            phys = self.machine((pte & 0xFFFFF000) | (lin & 0xFFF))
            large = False
        return entries, phys, rights, large

    def _read_table(self, addr: int) -> int:
        if self.p2m is None and addr + 4 > self.ram_size:
            raise GuestBadFrame(f"a guest page table entry at {addr:#x} lies outside "
                                f"the guest's {self.ram_size >> 20} MiB")
        return self.mem.read32(addr)

    def phys(self, lin: int, write: bool = False, user: bool = False) -> int:
        mmu = self.mmu
        if mmu is not None and lin < MLIN and not (write and user) and not self.tlb_stale \
                and mmu.state.cr3 & PAGE == self.shadow.root.pd:
            # (not a user write: while the monitor single-steps a kernel store into a page
            # it keeps read-only, the shadow entry is writable for that one instruction,
            # and a user write entry can come of it)
            d = (mmu.tw_s if write else mmu.tr_u if user else mmu.tr_s).get(lin & PAGE)
            if d is not None:
                return lin + d
        hit = self.fixed.get(lin & 0xFFFFF000) if self.fixed else None
        if hit is not None:
            if user or (write and not hit[1]):
                raise GuestPageFault(lin, (2 if write else 0) | (4 if user else 0) | 1)
            return hit[0] + (lin & 0xFFF)
        m = self.translate(lin, write, user)
        p = m.phys
        if self.p2m is None and p >= self.ram_size:
            raise GuestBadFrame(f"guest linear {lin:#010x} maps physical {p:#x}, beyond the "
                                f"guest's {self.ram_size >> 20} MiB")
        if mmu is not None and not write and lin < MLIN and not self.tlb_stale and \
                mmu.state.cr3 & PAGE == self.shadow.root.pd:
            self._fill(lin, m)
        return p

    def _fill(self, lin: int, m: Mapping) -> None:
        """After a walk for a read: the shadow entry (as a guest read there would have
        made it) and the real TLB entry, so that the next read of the page is a hit.
        Pages the guest's code never touches itself (its IDT, its TSS) are read at
        every entry into the monitor."""
        writable = (m.writable or (not self.vcpu.cr0 & CR0_WP and not m.user)) and m.dirty
        self.shadow.install(lin, m.phys & PAGE, m.user, writable, m.pde_addr, m.pte_addr)
        if m.user and self.mmu.state.cr4 & CR4_SMAP:
            return      # under the guest's SMAP the real TLB keeps no ring-0 entry for it
        self.mmu.walk(lin, False, False)

    def cached(self, lin: int) -> int | None:
        """The machine address a supervisor read at ``lin`` would reach, if the real TLB
        holds the page (``use_tlb``), without a walk or any accessed bit; else None."""
        mmu = self.mmu
        if mmu is not None and lin < MLIN and not self.tlb_stale and \
                mmu.state.cr3 & PAGE == self.shadow.root.pd:
            d = mmu.tr_s.get(lin & PAGE)
            if d is not None:
                return lin + d
        return None

    def peek(self, lin: int) -> int:
        """The guest physical address of ``lin`` as the guest's tables map it, for a
        debugger: no accessed or dirty bits set, no protection checked (a debugger
        writes breakpoints into read-only code); GuestPageFault if not mapped."""
        hit = self.fixed.get(lin & 0xFFFFF000) if self.fixed else None
        if hit is not None:
            return hit[0] + (lin & 0xFFF)
        p = self.translate(lin, False, False, set_bits=False).phys
        if p >= self.ram_size:
            raise GuestBadFrame(f"guest linear {lin:#010x} maps physical {p:#x}, beyond the "
                                f"guest's {self.ram_size >> 20} MiB")
        return p

    # -- accesses ------------------------------------------------------------------------
    def read(self, lin: int, n: int, user: bool = False) -> bytes:
        if (lin & 0xFFF) + n <= 0x1000:
            p = self.phys(lin, False, user)
            if p + n <= self.ram_size and self.p2m is None:
                return bytes(self.mem.ram[p:p + n])        # (``mem.read``'s RAM case)
            return self.mem.read(p, n)
        out = bytearray()
        while n:
            chunk = min(n, 0x1000 - (lin & 0xFFF))
            out += self.mem.read(self.phys(lin, False, user), chunk)
            lin = (lin + chunk) & 0xFFFFFFFF
            n -= chunk
        return bytes(out)

    def write(self, lin: int, data: bytes, user: bool = False) -> None:
        # translate every page first: a fault leaves memory untouched
        parts, off = [], 0
        while off < len(data):
            chunk = min(len(data) - off, 0x1000 - ((lin + off) & 0xFFF))
            parts.append((self.phys((lin + off) & 0xFFFFFFFF, True, user), data[off:off + chunk]))
            off += chunk
        for p, d in parts:
            self.mem.write(p, d)
            self.written_hook(p, len(d))

    def push_frame(self, lin: int, data: bytes, tables: tuple[set, set], size: int = 4) -> None:
        """Write a frame on the guest kernel's stack (an exception or interrupt delivered
        through its gate): in one step where the real TLB holds the page writable for the
        supervisor and it holds none of the frames in ``tables`` (the guest's GDT's and
        LDT's, as the monitor keeps them), as ``read_u`` reads.  Such an entry comes from
        a shadow entry made writable after a walk that allowed the write and set the dirty
        bit, and the shadow never maps writable what the monitor must see written (the
        guest's page tables, the frames of translated code, the GDT and LDT frames it
        keeps read-only), so the bookkeeping ``write`` calls after a write
        (``written_hook``) has nothing to do -- except for a GDT or LDT frame the monitor
        left writable (hot data beside the table), which is excluded.  Elsewhere
        ``write``, which walks; if that faults, the values (``size`` bytes each) are
        pushed one at a time from the top, as the processor pushes them, so that the
        fault and CR2 are the first push's that cannot be written (not the frame's
        lowest address: a kernel stack overflowing into its guard page, osdev2-tss)
        and the values above it are written."""
        mmu = self.mmu
        n = len(data)
        if mmu is not None and not self.tlb_stale and self.p2m is None and lin < MLIN and \
                (lin & 0xFFF) + n <= 0x1000 and mmu.state.cr3 & PAGE == self.shadow.root.pd:
            d = mmu.tw_s.get(lin & PAGE)
            if d is not None:
                p = lin + d
                gdt, ldt = tables
                if p + n <= self.ram_size and p >> 12 not in gdt and p >> 12 not in ldt:
                    self.mem.write(p, data)
                    return
        try:
            self.write(lin, data)
        except GuestPageFault:
            for off in range(n - size, -1, -size):
                self.write((lin + off) & 0xFFFFFFFF, data[off:off + size])

    def read32(self, lin: int, user: bool = False) -> int:
        return int.from_bytes(self.read(lin, 4, user), "little")

    def read_u(self, lin: int, size: int, user: bool = False) -> int:
        # a value within one page the real TLB holds (``phys``'s first case, in line: an
        # emulated RET or POP reads the guest's stack at every callout)
        mmu = self.mmu
        if mmu is not None and lin < MLIN and (lin & 0xFFF) + size <= 0x1000 and \
                self.p2m is None and not self.tlb_stale and mmu.state.cr3 & PAGE == self.shadow.root.pd:
            d = (mmu.tr_u if user else mmu.tr_s).get(lin & PAGE)
            if d is not None and lin + d + size <= self.ram_size:
                p = lin + d
                return int.from_bytes(self.mem.ram[p:p + size], "little")
        return int.from_bytes(self.read(lin, size, user), "little")

    def write_u(self, lin: int, size: int, value: int, user: bool = False) -> None:
        self.write(lin, (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little"), user)
