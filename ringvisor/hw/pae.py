"""PAE paging's facts (SDM Vol. 3A §4.4): the entry formats, their reserved bits, and
the four PDPTE registers loaded from CR3.

With CR4.PAE and CR0.PG a linear address is split 2:9:9:12.  Bits 31:30 select one of
four page-directory-pointer-table entries, which the processor does not read during
the walk: it loads all four into internal registers when CR3 is written, and when a
MOV to CR0 or CR4 enables PAE paging or changes a bit that governs it (§4.4.1).  An
edit of the PDPT is therefore seen only at the next such load.  A present PDPTE with
a reserved bit makes the MOV raise #GP(0) and leaves the register unchanged.

The page-directory and page-table entries are 64 bits wide; a PDE with PS maps a
2 MiB page (CR4.PSE does not matter).  Their reserved bits give a #PF with the RSVD
bit (error-code bit 3) set.  MAXPHYADDR is 36: the CPU reports no CPUID leaf
80000008H, and then the width is 36 when CPUID.1:EDX reports PAE (§4.1.4) -- as
QEMU's qemu32 (``phys_bits = 36`` for a 32-bit CPU with PAE).  This CPU has no
execute-disable (EFER.NXE is reserved), so bit 63 is reserved too.  Bits 62:52 are
reserved as the SDM says (Tables 4-10 and 4-11); QEMU's TCG ignores them.  The PAT bit
(bit 7 of a PTE, bit 12 of a 2 MiB PDE), PWT and PCD are accepted: memory here has one
type.
"""

from __future__ import annotations

MAXPHYADDR = 36
_ABOVE_MAXPHYADDR = ((1 << 64) - 1) & ~((1 << MAXPHYADDR) - 1)     # bits 63:36
ADDR = ((1 << MAXPHYADDR) - 1) & ~0xFFF                          # bits 35:12
ADDR_2M = ((1 << MAXPHYADDR) - 1) & ~0x1FFFFF                    # bits 35:21
# a present PDPTE: bits 2:1 and 8:5 and 63:MAXPHYADDR (Table 4-8)
PDPTE_RESERVED = 0x6 | 0x1E0 | _ABOVE_MAXPHYADDR
# a present PDE referencing a page table, or PTE: bits 63:MAXPHYADDR (Tables 4-10, 4-11)
PTE_RESERVED = _ABOVE_MAXPHYADDR
# a present PDE mapping a 2 MiB page: also bits 20:13 (Table 4-9)
PDE_RESERVED_2M = _ABOVE_MAXPHYADDR | 0x1FE000
PDPT_ALIGN = 0xFFFFFFE0                                          # CR3 bits 31:5 (Figure 4-7)


def pdpte_index(lin: int) -> int:
    return lin >> 30 & 3


def pde_offset(lin: int) -> int:
    """Byte offset of ``lin``'s PDE in its page directory (bits 29:21, 8 bytes each)."""
    return lin >> 18 & 0xFF8


def pte_offset(lin: int) -> int:
    """Byte offset of ``lin``'s PTE in its page table (bits 20:12, 8 bytes each)."""
    return lin >> 9 & 0xFF8


def read_pdptes(read64, cr3: int) -> list[int] | None:
    """The four PDPTEs at CR3's 32-byte-aligned address (``read64`` reads guest-physical
    memory), or None when a present one sets a reserved bit (the MOV is #GP(0))."""
    base = cr3 & PDPT_ALIGN
    out = [read64(base + 8 * i) for i in range(4)]
    if any(e & 1 and e & PDPTE_RESERVED for e in out):
        return None
    return out
