"""The architectural state of the CPU as plain data.

Everything here is serializable and maps field for field onto KVM's
``kvm_regs``/``kvm_sregs``/``kvm_vcpu_events`` (segment attributes use the VMX
access-rights layout, which is also how KVM's ``kvm_segment`` bits are
derived), so a VM can move between the Python engine and real KVM.  Derived
state (TLBs, translated code) lives elsewhere and can always be rebuilt.

The arithmetic flags are kept lazily (``flags.py``): the translator stores how
they were last produced in ``lf_op``/``lf_res``/``lf_a``/``lf_b`` and ``eflags``
holds every other bit.  Both live here, so the state is complete; ``to_dict``
gives the architectural view (EFLAGS with its arithmetic flags materialized,
no lazy record), and ``from_dict`` takes it back.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

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
CR4_PGE, CR4_PCE, CR4_OSFXSR, CR4_OSXMMEXCPT, CR4_UMIP = 0x80, 0x100, 0x200, 0x400, 0x800
CR4_VMXE, CR4_SMEP, CR4_SMAP = 1 << 13, 1 << 20, 1 << 21
# CR3: bits 31:12 the page directory (31:5 the PDPT with PAE), PWT and PCD; bits 2:0 are
# ignored and read as 0 here (SDM Vol. 3A Figures 4-4 and 4-7)
CR3_MASK = 0xFFFFFFF8
# the bits whose change invalidates the TLB's translations (SDM Vol. 3 §4.10.4.1)
CR0_TRANSLATION = CR0_PG | CR0_WP | CR0_PE
CR4_TRANSLATION = CR4_PSE | CR4_PAE | CR4_PGE | CR4_SMEP | CR4_SMAP

# Model-specific registers (SDM Vol. 4).
MSR_TSC, MSR_APIC_BASE, MSR_SYSENTER_CS, MSR_SYSENTER_ESP, MSR_SYSENTER_EIP = (
    0x10, 0x1B, 0x174, 0x175, 0x176)
MSR_PLATFORM_ID, MSR_BIOS_SIGN, MSR_MISC_ENABLE, MSR_PAT = 0x17, 0x8B, 0x1A0, 0x277
MSR_EFER, MSR_TSC_AUX, MSR_TSC_DEADLINE = 0xC0000080, 0xC0000103, 0x6E0

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

    def to_dict(self) -> dict:
        return {"selector": self.selector, "base": self.base, "limit": self.limit, "attr": self.attr}

    @classmethod
    def from_dict(cls, d: dict) -> "Segment":
        return cls(int(d["selector"]), int(d["base"]), int(d["limit"]), int(d["attr"]))

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
class FpuState:
    """The x87, MMX and SSE state: what FXSAVE stores (and KVM's ``struct kvm_fpu`` holds).

    ``st`` holds the eight data registers R0-R7 in physical order (ST(i) is
    ``st[(top + i) & 7]``) as raw 80-bit values; MMX register MMi is the low 64
    bits of Ri.  ``ftw`` is the abridged tag of FXSAVE: bit i set when Ri is not
    empty (the full two-bit tags that FSTENV stores are computed from the
    contents, SDM Vol. 1 §8.1.7).  ``fsw`` is the status word without TOP, which
    is kept apart in ``top``.  The reset values are those of FNINIT and of
    MXCSR's power-up value, as QEMU's PC starts.
    """

    fcw: int = 0x037F
    fsw: int = 0
    top: int = 0
    ftw: int = 0
    st: list[int] = field(default_factory=lambda: [0] * 8)
    fop: int = 0              # last non-control instruction's opcode (11 bits)
    fip: int = 0              # its offset and code segment selector
    fcs: int = 0
    fdp: int = 0              # its memory operand's offset and segment selector
    fds: int = 0
    mxcsr: int = 0x1F80
    xmm: list[int] = field(default_factory=lambda: [0] * 8)

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, list) else v) for k, v in vars(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> "FpuState":
        f = cls(**{k: (list(v) if isinstance(v, list) else v) for k, v in d.items()})
        f.check()
        return f

    def check(self) -> None:
        """Refuse values no register can hold (a damaged or hand-made saved state)."""
        widths = {"fcw": 16, "fsw": 16, "top": 3, "ftw": 8, "fop": 11, "fip": 32, "fcs": 16,
                  "fdp": 32, "fds": 16, "mxcsr": 32}
        for name, bits in widths.items():
            v = getattr(self, name)
            if not isinstance(v, int) or not 0 <= v < 1 << bits:
                raise ValueError(f"FPU state: {name}={v!r} does not fit in {bits} bits")
        for name, n, bits in (("st", 8, 80), ("xmm", 8, 128)):
            regs = getattr(self, name)
            if len(regs) != n or any(not isinstance(v, int) or not 0 <= v < 1 << bits for v in regs):
                raise ValueError(f"FPU state: {name} must be {n} registers of {bits} bits")

    def load(self, other: "FpuState") -> None:
        """Take ``other``'s values in place (the CPU's helpers keep references to this object)."""
        for k, v in vars(other).items():
            setattr(self, k, list(v) if isinstance(v, list) else v)

    def to_kvm(self) -> dict:
        """The fields of KVM's ``struct kvm_fpu`` (``fpr`` in ST(i) order, as FXSAVE stores them)."""
        return {"fpr": [self.st[(self.top + i) & 7].to_bytes(16, "little") for i in range(8)],
                "fcw": self.fcw, "fsw": self.fsw | self.top << 11, "ftwx": self.ftw,
                "last_opcode": self.fop, "last_ip": self.fip | self.fcs << 32,
                "last_dp": self.fdp | self.fds << 32,
                "xmm": [v.to_bytes(16, "little") for v in self.xmm], "mxcsr": self.mxcsr}

    @classmethod
    def from_kvm(cls, d: dict) -> "FpuState":
        top = (d["fsw"] >> 11) & 7
        st = [0] * 8
        for i, raw in enumerate(d["fpr"]):
            st[(top + i) & 7] = int.from_bytes(bytes(raw)[:10], "little")
        f = cls(d["fcw"], d["fsw"] & ~0x3800, top, d["ftwx"], st, d["last_opcode"] & 0x7FF,
                d["last_ip"] & 0xFFFFFFFF, (d["last_ip"] >> 32) & 0xFFFF,
                d["last_dp"] & 0xFFFFFFFF, (d["last_dp"] >> 32) & 0xFFFF, d["mxcsr"],
                [int.from_bytes(bytes(x), "little") for x in d["xmm"][:8]])
        f.check()
        return f


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
    # the four PDPTE registers of PAE paging, loaded from CR3 by MOV to CR3/CR0/CR4
    # (SDM Vol. 3A §4.4.1; KVM's kvm_sregs2.pdptrs, the VMCS guest PDPTE fields)
    pdpte: list[int] = field(default_factory=lambda: [0] * 4)
    dr: list[int] = field(default_factory=lambda: [0, 0, 0, 0, 0xFFFF0FF0, 0x400, 0xFFFF0FF0, 0x400])
    msrs: dict[int, int] = field(default_factory=dict)
    tsc_offset: int = 0
    icount: int = 0          # instructions retired (the virtual clock's source)
    halted: bool = False
    # STI / MOV SS / POP SS just ran: the next instruction runs before any interrupt
    # (SDM Vol. 3 §6.8.3; KVM's kvm_vcpu_events.interrupt.shadow)
    interrupt_shadow: bool = False
    # the shadow is MOV SS's or POP SS's (blocking by MOV SS, SDM Vol. 3C §24.4.2): it
    # holds the debug traps too, and the next instruction's instruction breakpoint is not
    # taken (§17.3.1.1); and the B0-B3 bits of the data breakpoints that MOV SS or POP SS
    # matched, held until the next instruction completes (§6.8.3; the VMCS's pending
    # debug exceptions, Vol. 3C §24.4.2)
    stack_shadow: bool = False
    pending_db: int = 0
    intr: bool = False       # the level of the INTR input pin (the PIC's INT output)
    # an NMI waits for delivery; NMIs are blocked until the next IRET (SDM Vol. 3 §6.7.1;
    # KVM's kvm_vcpu_events.nmi.pending / .masked)
    nmi_pending: bool = False
    nmi_blocked: bool = False
    # the lazy arithmetic flags (flags.py): how CF PF AF ZF SF OF were last produced
    lf_op: int = 0
    lf_res: int = 0
    lf_a: int = 0
    lf_b: int = 0
    fpu: FpuState = field(default_factory=FpuState)     # x87, MMX, SSE (KVM's kvm_fpu)

    # -- EFLAGS ----------------------------------------------------------------------
    def arith_flags(self) -> int:
        # (flags.py names its bits from this module: bound at its first use, not imported
        # at every call -- an import statement costs a microsecond on each EFLAGS read)
        return _flags.materialize(self.lf_op, self.lf_res, self.lf_a, self.lf_b)

    def get_eflags(self) -> int:
        return (self.eflags & ~ARITH_FLAGS) | self.arith_flags() | EFLAGS_FIXED

    # EFLAGS loads that set RF as their image says (IRET, a task switch): how many so
    # far.  Not state: ``Cpu.step`` compares it around one instruction (RF is cleared
    # when an instruction completes, unless the instruction loaded it)
    rf_loads = 0

    def set_eflags(self, value: int, mask: int = 0xFFFFFFFF) -> None:
        if mask & RF:
            self.rf_loads += 1
        if mask & ARITH_FLAGS:
            # (all six replaced, as by POPF and IRET: the old ones need not be computed)
            cur = self.arith_flags() if ~mask & ARITH_FLAGS else 0
            self.lf_op = 0                  # CONCRETE: the flag bits themselves in lf_res
            self.lf_res = (cur & ~mask | value & mask) & ARITH_FLAGS
        other = mask & ~ARITH_FLAGS
        self.eflags = ((self.eflags & ~other) | (value & other)) & ~ARITH_FLAGS | EFLAGS_FIXED

    # -- as plain data ----------------------------------------------------------------
    def to_dict(self) -> dict:
        """The architectural state: EFLAGS whole, the lazy record folded into it."""
        d = {}
        for f in fields(self):
            if f.name in LAZY_FIELDS:
                continue
            v = getattr(self, f.name)
            if isinstance(v, Segment):
                v = v.to_dict()
            elif isinstance(v, FpuState):
                v = v.to_dict()
            elif isinstance(v, DescriptorTable):
                v = {"base": v.base, "limit": v.limit}
            elif f.name == "segs":
                v = [s.to_dict() for s in v]
            elif f.name == "msrs":
                v = {str(k): val for k, val in sorted(v.items())}
            elif isinstance(v, list):
                v = list(v)
            d[f.name] = v
        d["eflags"] = self.get_eflags()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "CpuState":
        """The inverse of :meth:`to_dict` (missing fields keep their reset values)."""
        st = cls()
        st.load(d)
        return st

    def load(self, d: dict) -> None:
        """Take the state :meth:`to_dict` gave, in place: the translator's code holds
        this object and its ``regs`` and ``segs`` lists."""
        st = CpuState()
        known = {f.name for f in fields(self)} - LAZY_FIELDS
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown CPU state fields: {', '.join(sorted(unknown))}")
        for name, v in d.items():
            if name in ("segs",):
                v = [Segment.from_dict(s) for s in v]
                if len(v) != 6:
                    raise ValueError("the CPU state needs six segment registers")
            elif name in ("ldtr", "tr"):
                v = Segment.from_dict(v)
            elif name in ("gdtr", "idtr"):
                v = DescriptorTable(int(v["base"]), int(v["limit"]))
            elif name == "regs":
                v = [int(x) & 0xFFFFFFFF for x in v]
                if len(v) != 8:
                    raise ValueError("the CPU state needs eight general registers")
            elif name == "pdpte":
                v = [int(x) for x in v]
                if len(v) != 4:
                    raise ValueError("the CPU state needs four PDPTE registers")
            elif name == "dr":
                v = [int(x) for x in v]
                if len(v) != 8:
                    raise ValueError("the CPU state needs eight debug registers")
            elif name == "msrs":
                v = {int(k): int(val) for k, val in v.items()}
            elif name in ("halted", "interrupt_shadow", "stack_shadow", "intr", "nmi_pending",
                          "nmi_blocked"):
                v = bool(v)
            elif name == "fpu":
                v = FpuState.from_dict(v)
            else:
                v = int(v)
            setattr(st, name, v)
        st.eflags = EFLAGS_FIXED
        st.set_eflags(int(d.get("eflags", EFLAGS_FIXED)))
        for f in fields(self):
            v = getattr(st, f.name)
            if f.name in ("regs", "segs"):
                getattr(self, f.name)[:] = v
            elif f.name == "fpu":
                self.fpu.load(v)
            else:
                setattr(self, f.name, v)


def reset_state() -> CpuState:
    """The state after RESET (SDM Vol. 3 Table 9-1): real mode, CS F000 with base
    FFFF0000 so the first fetch is at FFFFFFF0, the other segments at 0 with 64 KiB
    limits, CR0 60000010, IDTR 0/FFFF (the IVT)."""
    st = CpuState()
    for s in st.segs:
        s.attr = ATTR_P | ATTR_S | 0x3
    st.segs[CS] = Segment(0xF000, 0xFFFF0000, 0xFFFF, ATTR_P | ATTR_S | 0xB)
    st.eip = 0xFFF0
    st.cr0 = CR0_ET | CR0_CD | CR0_NW
    return st


LAZY_FIELDS = frozenset({"lf_op", "lf_res", "lf_a", "lf_b"})


# last: flags.py imports the bits above from this module (either may be imported first)
from . import flags as _flags  # noqa: E402
