"""The HVM monitor's extended page tables: guest-physical memory mapped by EPT
(Intel SDM Vol. 3C §28.3), instead of shadow page tables.

With EPT the guest's own page tables translate linear to guest-physical
addresses on the processor, and the monitor's EPT translates those to machine
addresses: the guest loads CR3, edits its page tables and executes INVLPG
without a VM exit, and its page faults go straight to its own IDT.  What is left
for the monitor is guest-physical memory itself.  As KVM does, the EPT starts
empty and is filled on EPT violations: the first access to a 2-MByte region of
guest RAM exits once and maps the region 1:1 (read/write/execute, write-back),
in a 2-MByte page -- or in 4-KByte pages where guest RAM ends inside the region.
An access beyond guest RAM stops the VM, as under shadow paging.

Without "unrestricted guest" VMX needs CR0.PG set in non-root operation, so a
guest with paging off runs on an identity page directory of 4-MByte pages (with
accessed and dirty set: the processor never writes it), at a guest-physical
address in the monitor's region that EPT maps read-only -- KVM's "EPT identity
map" (``ept_identity_map_addr``) -- with CR3 load and store exiting until the
guest turns paging on.

Device pages above the guest's RAM are never mapped, except those of the
machine's devices the monitor passes through (``hvmmmio.py``): each is mapped
1:1, uncacheable, in a 4-KByte page at its first access, from up to three page
tables of their own (``map_device``: a 2-MByte region each).

The tables live in the monitor's region (``layout.HVM_EPT``...): PML4, one PDPT,
four page directories (one per GiB of the 32-bit guest-physical space), two
page tables and the device pages' three; everything about them is in machine memory, so a saved VM carries
them, and ``mapped`` is read back from them.
"""

from __future__ import annotations

import struct

from ringvisor.hw.ept import EPT_R, EPT_W, EPT_X

from . import layout as L
from .errors import MonitorStop

REGION = 1 << 21                  # what one EPT page-directory entry maps
WB = 6 << 3                       # the write-back memory type, in a leaf entry (bits 5:3)
UC = 0 << 3                       # uncacheable: a device's page
LEAF_2M = 1 << 7
RWX = EPT_R | EPT_W | EPT_X
EPTP_WB_WALK4 = 6 | 3 << 3        # EPTP: write-back structures, a 4-level walk (§24.6.11)
IDMAP_PDE = 0xE7                  # P, R/W, U/S, A, D, PS: 4 MiB, nothing left to set


class MonitorEpt:
    def __init__(self, mem, base: int, guest_ram: int) -> None:
        self.mem = mem
        self.base = base
        self.guest_ram = guest_ram
        self.pml4 = base + L.HVM_EPT_PML4
        self.idmap = base + L.HVM_EPT_IDMAP          # guest-physical = machine address

    @property
    def eptp(self) -> int:
        return self.pml4 | EPTP_WB_WALK4

    def _w64(self, addr: int, value: int) -> None:
        self.mem.write(addr, struct.pack("<Q", value))

    def _r64(self, addr: int) -> int:
        return struct.unpack("<Q", self.mem.read(addr, 8))[0]

    def _pde_addr(self, gpa: int) -> int:
        return self.base + L.HVM_EPT_PD + (gpa >> 30) * 0x1000 + ((gpa >> 21) & 0x1FF) * 8

    def _pt_for(self, gpa: int) -> int:
        """The page table of ``gpa``'s region (only the region where guest RAM ends and the
        identity map's region have one)."""
        region = gpa // REGION
        slot = 0 if region == (self.guest_ram - 1) // REGION and self.guest_ram % REGION else 1
        return self.base + L.HVM_EPT_PT + slot * 0x1000

    def build(self) -> None:
        """Empty EPT: the PML4 and PDPT entries, no mapping but the identity map's page."""
        mem, b = self.mem, self.base
        end = L.HVM_EPT_DEVICE_PT + 0x1000 * L.HVM_EPT_DEVICE_PTS
        mem.write(b + L.HVM_EPT_PML4, bytes(end - L.HVM_EPT_PML4))
        self._w64(self.pml4, (b + L.HVM_EPT_PDPT) | RWX)
        for i in range(4):
            self._w64(b + L.HVM_EPT_PDPT + 8 * i, (b + L.HVM_EPT_PD + 0x1000 * i) | RWX)
        mem.write(self.idmap, b"".join(struct.pack("<I", i << 22 | IDMAP_PDE) for i in range(1024)))
        self._link_pt(self.idmap)
        pt = self._pt_for(self.idmap)
        self._w64(pt + ((self.idmap >> 12) & 0x1FF) * 8, self.idmap | WB | EPT_R)

    def map_rom(self, start: int, end: int) -> None:
        """A firmware ROM at the top of the 4 GiB space (``run --bios``): guest-physical
        = machine address, the processor's reset fetch at FFFFFFF0 and every read of the
        high copy reach the machine's ROM region, as KVM maps a read-only memory slot.
        Mapped at once (an access there is not a RAM region an EPT violation could
        fill): 2-MByte pages where the ROM covers the region, 4-KByte pages in the ROM's
        own page table for the one region it starts inside (a ROM is a multiple of 64
        KiB, so only its lowest region can be partial).  Writable in EPT as in the
        machine: the ROM region drops writes, as the hardware's ROM ignores them."""
        for region in range(start & ~(REGION - 1), end, REGION):
            pde = self._pde_addr(region)
            if start <= region and region + REGION <= end:
                self._w64(pde, region | LEAF_2M | WB | RWX)
                continue
            pt = self.base + L.HVM_EPT_ROM_PT
            self.mem.write(pt, bytes(0x1000))
            self._w64(pde, pt | RWX)
            for page in range(max(start, region), min(end, region + REGION), 0x1000):
                self._w64(pt + ((page >> 12) & 0x1FF) * 8, page | WB | RWX)

    def _link_pt(self, gpa: int) -> None:
        pde = self._pde_addr(gpa)
        if not self._r64(pde) & 7:
            self._w64(pde, self._pt_for(gpa) | RWX)

    def mapped(self, gpa: int) -> bool:
        pde = self._r64(self._pde_addr(gpa))
        return bool(pde & 7) and (bool(pde & LEAF_2M) or
                                  bool(self._r64((pde & ~0xFFF) + ((gpa >> 12) & 0x1FF) * 8) & 7))

    def map_region(self, gpa: int) -> None:
        """Map the 2-MByte region of guest RAM holding ``gpa`` 1:1 (the EPT-violation
        handler): one large page, or 4-KByte pages up to the end of guest RAM."""
        start = gpa & ~(REGION - 1)
        if start + REGION <= self.guest_ram:
            self._w64(self._pde_addr(gpa), start | LEAF_2M | WB | RWX)
            return
        self._link_pt(gpa)
        pt = self._pt_for(gpa)
        for page in range(start, self.guest_ram, 0x1000):
            self._w64(pt + ((page >> 12) & 0x1FF) * 8, page | WB | RWX)

    def map_device(self, frame: int) -> None:
        """Map the machine device's page at ``frame`` (above all RAM) 1:1, uncacheable:
        the guest's accesses reach the device without an exit."""
        pde = self._pde_addr(frame)
        entry = self._r64(pde)
        if not entry & 7:
            pts = [self.base + L.HVM_EPT_DEVICE_PT + 0x1000 * i for i in range(L.HVM_EPT_DEVICE_PTS)]
            free = [pt for pt in pts if pt not in self._device_tables_used()]
            if not free:
                raise MonitorStop(f"hvm: the guest reached device pages in more than "
                                  f"{L.HVM_EPT_DEVICE_PTS} 2-MByte regions (at {frame:#x}); "
                                  f"the monitor maps devices in that many")
            entry = free[0] | RWX
            self._w64(pde, entry)
        self._w64((entry & ~0xFFF) + ((frame >> 12) & 0x1FF) * 8, frame | UC | RWX)

    def _device_tables_used(self) -> set[int]:
        """The device page tables some page-directory entry points to (read back from the
        tables: a saved VM carries them)."""
        first = self.base + L.HVM_EPT_DEVICE_PT
        last = first + 0x1000 * L.HVM_EPT_DEVICE_PTS
        used = set()
        for gib in range(4):
            pd = self.mem.read(self.base + L.HVM_EPT_PD + gib * 0x1000, 0x1000)
            for e in struct.unpack("<512Q", pd):
                if e & 7 and not e & LEAF_2M and first <= e & ~0xFFF < last:
                    used.add(e & ~0xFFF)
        return used
