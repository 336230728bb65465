"""The architectural state of the CPU as plain data.

Everything here is serializable and maps field for field onto KVM's
``kvm_regs``/``kvm_sregs`` (segment attributes use the VMX access-rights
layout, which is also how KVM's ``kvm_segment`` bits are derived), so a VM can
move between the Python engine and real KVM.  Derived state (TLBs, translated
code) lives elsewhere and can always be rebuilt.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

# General registers, in x86 encoding order.
EAX, ECX, EDX, EBX, ESP, EBP, ESI, EDI = range(8)
REG_NAMES = ("eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi")

# Segment registers, in x86 encoding order (the sreg field of ModRM).
ES, CS, SS, DS, FS, GS = range(6)
SEG_NAMES = ("es", "cs", "ss", "ds", "fs", "gs")

# EFLAGS bits.
CF, PF, AF, ZF, SF, TF, IF, DF, OF = 0x1, 0x4, 0x10, 0x40, 0x80, 0x100, 0x200, 0x400, 0x800
IOPL_MASK, NT, RF, VM, AC, VIF, VIP, ID = 0x3000, 0x4000, 0x10000, 0x20000, 0x40000, 0x80000, 0x100000, 0x200000
ARITH_FLAGS = CF | PF | AF | ZF | SF | OF
EFLAGS_FIXED = 0x2          # bit 1 always reads as 1

# CR0 / CR4 bits.
CR0_PE, CR0_MP, CR0_EM, CR0_TS, CR0_ET, CR0_NE = 1, 2, 4, 8, 0x10, 0x20
CR0_WP, CR0_AM, CR0_NW, CR0_CD, CR0_PG = 1 << 16, 1 << 18, 1 << 29, 1 << 30, 1 << 31
CR4_VME, CR4_PVI, CR4_TSD, CR4_DE, CR4_PSE, CR4_PAE = 1, 2, 4, 8, 0x10, 0x20
CR4_PGE, CR4_OSFXSR = 0x80, 0x200

# Segment attribute bits (VMX access-rights layout).
ATTR_TYPE = 0xF
ATTR_S = 1 << 4            # code/data (1) vs system (0)
ATTR_DPL_SHIFT = 5
ATTR_P = 1 << 7
ATTR_AVL = 1 << 12
ATTR_DB = 1 << 14
ATTR_G = 1 << 15
ATTR_UNUSABLE = 1 << 16    # null selector loaded


@dataclass
class Segment:
    """A segment register: the visible selector and its hidden descriptor cache."""

    selector: int = 0
    base: int = 0
    limit: int = 0xFFFF     # byte-granular (already scaled by G)
    attr: int = ATTR_P | ATTR_S | 0x3   # read/write data, accessed

    @property
    def dpl(self) -> int:
        return (self.attr >> ATTR_DPL_SHIFT) & 3

    @property
    def type(self) -> int:
        return self.attr & ATTR_TYPE

    @property
    def present(self) -> bool:
        return bool(self.attr & ATTR_P)

    @property
    def unusable(self) -> bool:
        return bool(self.attr & ATTR_UNUSABLE)

    @property
    def is_code(self) -> bool:
        return bool(self.attr & ATTR_S) and bool(self.attr & 8)

    @property
    def big(self) -> bool:
        return bool(self.attr & ATTR_DB)

    def copy(self) -> "Segment":
        return Segment(self.selector, self.base, self.limit, self.attr)

    @classmethod
    def from_kvm(cls, d: dict) -> "Segment":
        """From the fields of KVM's ``struct kvm_segment``."""
        attr = (d["type"] & 0xF) | d["s"] << 4 | (d["dpl"] & 3) << 5 | d["present"] << 7 | \
            d.get("avl", 0) << 12 | d.get("l", 0) << 13 | d["db"] << 14 | d["g"] << 15 | \
            d.get("unusable", 0) << 16
        return cls(d["selector"], d["base"], d["limit"], attr)

    def to_kvm(self) -> dict:
        a = self.attr
        return {"selector": self.selector, "base": self.base, "limit": self.limit,
                "type": a & 0xF, "s": a >> 4 & 1, "dpl": a >> 5 & 3, "present": a >> 7 & 1,
                "avl": a >> 12 & 1, "l": a >> 13 & 1, "db": a >> 14 & 1, "g": a >> 15 & 1,
                "unusable": a >> 16 & 1}


@dataclass
class DescriptorTable:
    base: int = 0
    limit: int = 0xFFFF


@dataclass
class CpuState:
    """All of the CPU's architectural state."""

    regs: list[int] = field(default_factory=lambda: [0] * 8)
    eip: int = 0xFFF0
    eflags: int = EFLAGS_FIXED
    segs: list[Segment] = field(default_factory=lambda: [Segment() for _ in range(6)])
    ldtr: Segment = field(default_factory=lambda: Segment(attr=ATTR_P | 0x2))
    tr: Segment = field(default_factory=lambda: Segment(attr=ATTR_P | 0xB))
    gdtr: DescriptorTable = field(default_factory=DescriptorTable)
    idtr: DescriptorTable = field(default_factory=DescriptorTable)
    cr0: int = CR0_ET | CR0_CD | CR0_NW
    cr2: int = 0
    cr3: int = 0
    cr4: int = 0
    dr: list[int] = field(default_factory=lambda: [0, 0, 0, 0, 0xFFFF0FF0, 0x400, 0xFFFF0FF0, 0x400])
    msrs: dict[int, int] = field(default_factory=dict)
    tsc_offset: int = 0
    icount: int = 0          # instructions retired (the virtual clock's source)
    halted: bool = False

    def to_dict(self) -> dict:
        return asdict(self)
