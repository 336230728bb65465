"""EPT: the extended page tables of VMX (Intel SDM Vol. 3C §28.3, the second generation
of VT-x).

With the "enable EPT" secondary control, every guest-physical address in VMX non-root
operation -- each guest page-table entry the MMU reads or updates during a walk, and
the final page -- is translated through a 4-level EPT hierarchy rooted at the EPTP
(§24.6.11, §28.3.2) into a host-physical address, with read, write and execute
permissions that AND across the levels.  An access the entries do not permit is an EPT
violation (basic exit reason 48, §28.3.3.2); an entry that is not legal is an EPT
misconfiguration (reason 49, §28.3.3.1).  Both are raised as ``EptExit``, a fault that
unwinds out of the instruction like any other and becomes a VM exit (``Vmx.ept_exit``).

The processor caches *guest-physical mappings* (§28.4.1: tagged by the EPTP, kept
across VM entries and exits, invalidated only by INVEPT) in ``Ept.cache``; the MMU's
TLB holds the *combined* linear-to-host-physical mappings (``mmu.py``), which VM entry
and exit flush because this processor has no VPID (§28.4.3.3).

Supported, and said so in IA32_VMX_EPT_VPID_CAP (Appendix A.10): 4-level walks, the UC
and WB memory types for the EPT structures, 2-MByte and 1-GByte pages, INVEPT with the
single-context and all-context types.  Not supported: execute-only translations, the
EPT accessed and dirty flags, #VE, mode-based execute control, the advanced VM-exit
information for EPT violations, VPID and INVVPID.
"""

from __future__ import annotations

from .faults import VmExitFault
from .pae import ADDR, MAXPHYADDR     # the processor's physical-address width (36: pae.py)

EPT_R, EPT_W, EPT_X = 1, 2, 4
EXIT_EPT_VIOLATION, EXIT_EPT_MISCONFIG, EXIT_INVEPT = 48, 49, 50
INVEPT_SINGLE, INVEPT_ALL = 1, 2
ADDR_RESERVED = ((1 << 52) - 1) & ~((1 << MAXPHYADDR) - 1)    # bits 51:MAXPHYADDR
EPTP_MT_UC, EPTP_MT_WB = 0, 6
LEAF_MT_BAD = frozenset({2, 3, 7})    # memory types an EPT leaf may not name (§28.3.3.1)

# IA32_VMX_EPT_VPID_CAP (SDM Vol. 3D Appendix A.10)
CAP_WALK_4, CAP_UC, CAP_WB = 1 << 6, 1 << 8, 1 << 14
CAP_2M, CAP_1G, CAP_INVEPT = 1 << 16, 1 << 17, 1 << 20
CAP_INVEPT_SINGLE, CAP_INVEPT_ALL = 1 << 25, 1 << 26
EPT_VPID_CAP = (CAP_WALK_4 | CAP_UC | CAP_WB | CAP_2M | CAP_1G | CAP_INVEPT |
                CAP_INVEPT_SINGLE | CAP_INVEPT_ALL)

# EPT-violation exit qualification (SDM Table 27-7)
Q_READ, Q_WRITE, Q_FETCH = 1, 2, 4
Q_LINEAR_VALID, Q_FINAL = 1 << 7, 1 << 8


def eptp_valid(eptp: int) -> bool:
    """The EPTP checks of VM entry (§26.2.1.1) and of single-context INVEPT: a memory
    type the capability MSR allows, a page-walk length of 4, the A/D enable clear (not
    supported), bits 11:7 and 63:MAXPHYADDR clear."""
    return (eptp & 7 in (EPTP_MT_UC, EPTP_MT_WB) and (eptp >> 3) & 7 == 3 and
            not eptp & 0x40 and not eptp & 0xF80 and not eptp >> MAXPHYADDR)


class EptExit(VmExitFault):
    """An EPT violation or misconfiguration: the access does not happen, the guest
    leaves (a VM exit, not an exception through the guest's IDT)."""

    __slots__ = ("reason", "qualification", "gpa", "linear")

    def __init__(self, reason: int, qualification: int, gpa: int, linear: int | None) -> None:
        super().__init__(-1)
        self.reason, self.qualification, self.gpa, self.linear = reason, qualification, gpa, linear

    def take(self, vmx) -> None:
        vmx.ept_exit(self)

    def __str__(self) -> str:
        what = "EPT violation" if self.reason == EXIT_EPT_VIOLATION else "EPT misconfiguration"
        return f"{what} at guest-physical {self.gpa:#x}"


class Ept:
    """One EPT hierarchy (an EPTP's) and the guest-physical mappings cached for it."""

    __slots__ = ("mem", "pml4", "cache")

    def __init__(self, mem, eptp: int) -> None:
        self.mem = mem
        self.pml4 = eptp & ADDR
        # guest-physical page -> (host-physical page, permissions R|W|X)
        self.cache: dict[int, tuple[int, int]] = {}

    def _entry(self, addr: int) -> int:
        return self.mem.read32(addr) | self.mem.read32(addr + 4) << 32

    def walk(self, gpa: int) -> tuple[int, int, int | None]:
        """(host-physical page, permissions, exit reason or None) for ``gpa``: the walk of
        §28.3.2 with the misconfiguration checks of §28.3.3.1.  On a violation the
        permissions are those of the entries walked (0 at a non-present one)."""
        table, combined = self.pml4, 7
        for level in (3, 2, 1, 0):
            e = self._entry(table + ((gpa >> (12 + 9 * level)) & 0x1FF) * 8)
            perm = e & 7
            combined &= perm
            if not perm:
                return 0, 0, EXIT_EPT_VIOLATION
            if perm in (2, 4, 6) or e & ADDR_RESERVED:     # W without R; execute-only
                return 0, 0, EXIT_EPT_MISCONFIG
            large = level in (1, 2) and e & 0x80
            if level == 0 or large:
                size = 1 << (12 + 9 * level)
                if (e >> 3) & 7 in LEAF_MT_BAD or e & (size - 1) & ~0xFFF:
                    return 0, 0, EXIT_EPT_MISCONFIG          # a bad type; reserved 29:12 / 20:12
                return (e & ADDR & ~(size - 1)) | (gpa & (size - 1) & ~0xFFF), combined, None
            if e & 0xF8:                                     # bits 7:3 of a non-leaf entry
                return 0, 0, EXIT_EPT_MISCONFIG
            table = e & ADDR
        raise AssertionError("unreachable")

    def translate(self, gpa: int, access: int, linear: int | None, final: bool) -> tuple[int, int]:
        """(host-physical address, permissions) of an access (``EPT_R``, ``EPT_W`` or
        ``EPT_X``) to ``gpa``; ``final``: the translation of ``linear`` itself, not a
        guest paging-structure entry.  Raises ``EptExit``."""
        page = gpa & 0xFFFFF000
        hit = self.cache.get(page)
        if hit is None or not hit[1] & access:
            # a miss, or a cached mapping that does not allow this access: walk again
            # (a mapping software made more permissive is seen without INVEPT)
            hpage, perm, reason = self.walk(gpa)
            if reason is None and perm & access:
                hit = self.cache[page] = (hpage, perm)
            else:
                self.cache.pop(page, None)
                reason = reason or EXIT_EPT_VIOLATION        # (the entries deny this access)
                qual = 0
                if reason == EXIT_EPT_VIOLATION:
                    qual = access | perm << 3
                    if linear is not None:
                        qual |= Q_LINEAR_VALID | (Q_FINAL if final else 0)
                raise EptExit(reason, qual, gpa, linear)
        return hit[0] | (gpa & 0xFFF), hit[1]

    def probe(self, gpa: int) -> int | None:
        """The host-physical address of ``gpa``, without side effects (debuggers, reports)."""
        hpage, _, reason = self.walk(gpa)
        return None if reason is not None else hpage | (gpa & 0xFFF)
