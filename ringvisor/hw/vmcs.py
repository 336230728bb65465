"""The VMCS: field encodings, the VMX capability MSRs, and where a VMCS's data lives.

Names and numbers are the Intel SDM's (Vol. 3C Appendix B for the field
encodings, Appendix A for the capability MSRs, Appendix C for the basic exit
reasons, §31.4 for the VM-instruction error numbers).  A field encoding is
``access type (bit 0) | index (bits 9:1) | type (bits 11:10: control, read-only
data, guest state, host state) | width (bits 14:13: 16-bit, 64-bit, 32-bit,
natural)``; a 64-bit field's high half has access type 1.

The VMCS *layout* in memory is implementation-specific (SDM §24.2: only the
revision identifier at offset 0 and the VMX-abort indicator at offset 4 are
architectural).  This processor keeps the data of an active VMCS in a Python
structure keyed by its physical address (a cache, as hardware keeps active
VMCSs on-chip), and VMCLEAR writes it to the region as a list of
``(encoding: u32, value: u64)`` records from offset 8, ending with encoding
0xFFFFFFFF, plus the launch state; VMPTRLD of a region not in the cache reads
that list back.  Software must not read or write the region while it is
active (SDM §24.11.1), so it never sees the difference.
"""

from __future__ import annotations

import struct
from collections import defaultdict

from .ept import EPT_VPID_CAP, EXIT_EPT_MISCONFIG, EXIT_EPT_VIOLATION, EXIT_INVEPT  # noqa: F401

# -- the capability MSRs (SDM Vol. 3D Appendix A; Vol. 4 Table 2-2) -----------------------
MSR_FEATURE_CONTROL = 0x3A
FC_LOCK, FC_VMX_IN_SMX, FC_VMX_OUTSIDE_SMX = 1, 2, 4
MSR_VMX_BASIC, MSR_VMX_PINBASED_CTLS, MSR_VMX_PROCBASED_CTLS = 0x480, 0x481, 0x482
MSR_VMX_EXIT_CTLS, MSR_VMX_ENTRY_CTLS, MSR_VMX_MISC = 0x483, 0x484, 0x485
MSR_VMX_CR0_FIXED0, MSR_VMX_CR0_FIXED1 = 0x486, 0x487
MSR_VMX_CR4_FIXED0, MSR_VMX_CR4_FIXED1 = 0x488, 0x489
MSR_VMX_VMCS_ENUM, MSR_VMX_PROCBASED_CTLS2, MSR_VMX_EPT_VPID_CAP = 0x48A, 0x48B, 0x48C
MSR_VMX_TRUE_PINBASED, MSR_VMX_TRUE_PROCBASED = 0x48D, 0x48E
MSR_VMX_TRUE_EXIT, MSR_VMX_TRUE_ENTRY = 0x48F, 0x490

VMCS_REVISION = 0x00000001        # this processor's VMCS revision identifier
VMCS_SIZE = 0x1000
CR4_VMXE = 1 << 13

# Pin-based VM-execution controls (SDM Table 24-5).
PIN_EXT_INT = 1 << 0
PIN_NMI = 1 << 3
PIN_VIRTUAL_NMI = 1 << 5
# Primary processor-based controls (Table 24-6).
CPU_INTR_WINDOW, CPU_TSC_OFFSET, CPU_HLT, CPU_INVLPG = 1 << 2, 1 << 3, 1 << 7, 1 << 9
CPU_RDPMC, CPU_RDTSC, CPU_CR3_LOAD, CPU_CR3_STORE = 1 << 11, 1 << 12, 1 << 15, 1 << 16
CPU_MOV_DR, CPU_IO, CPU_IO_BITMAPS, CPU_MTF = 1 << 23, 1 << 24, 1 << 25, 1 << 27
CPU_MSR_BITMAPS, CPU_SECONDARY, CPU_NMI_WINDOW = 1 << 28, 1 << 31, 1 << 22
# Secondary processor-based controls (Table 24-7).
CPU2_EPT, CPU2_RDTSCP, CPU2_WBINVD, CPU2_UNRESTRICTED = 1 << 1, 1 << 3, 1 << 6, 1 << 7
# VM-exit controls (Table 24-11) and VM-entry controls (Table 24-13).
EXIT_HOST_64, EXIT_ACK_INT = 1 << 9, 1 << 15
ENTRY_LOAD_DEBUG, ENTRY_IA32E = 1 << 2, 1 << 9

# (allowed-0, allowed-1): a bit set in allowed-0 must be 1, a bit clear in allowed-1 must be 0.
# The "default1" classes are those of SDM Appendix A.2-A.5; this processor implements
# only what is listed in allowed-1 (NMI exiting, virtual NMIs and NMI-window exiting among
# them; no preemption timer, no TPR shadow,
# no MONITOR/MWAIT/PAUSE, no 64-bit host or guest: it is an IA-32 processor).
PIN_DEFAULT1 = 0x00000016
PROC_DEFAULT1 = 0x0401E172
EXIT_DEFAULT1 = 0x00036DFF
ENTRY_DEFAULT1 = 0x000011FF
PIN_ALLOWED1 = PIN_DEFAULT1 | PIN_EXT_INT | PIN_NMI | PIN_VIRTUAL_NMI
PROC_ALLOWED1 = (PROC_DEFAULT1 | CPU_INTR_WINDOW | CPU_TSC_OFFSET | CPU_HLT | CPU_INVLPG |
                 CPU_RDPMC | CPU_RDTSC | CPU_CR3_LOAD | CPU_CR3_STORE | CPU_MOV_DR | CPU_IO |
                 CPU_IO_BITMAPS | CPU_MTF | CPU_MSR_BITMAPS | CPU_SECONDARY | CPU_NMI_WINDOW)
PROC2_ALLOWED1 = CPU2_EPT | CPU2_RDTSCP | CPU2_WBINVD | CPU2_UNRESTRICTED
EXIT_ALLOWED1 = EXIT_DEFAULT1 | EXIT_ACK_INT
ENTRY_ALLOWED1 = ENTRY_DEFAULT1
# the TRUE controls (BASIC bit 55): CR3-load/store exiting and the debug-control
# load/save may be 0 (SDM Appendix A.3.1, A.4, A.5)
TRUE_PROC_DEFAULT1 = PROC_DEFAULT1 & ~(CPU_CR3_LOAD | CPU_CR3_STORE)
TRUE_EXIT_DEFAULT1 = EXIT_DEFAULT1 & ~(1 << 2)
TRUE_ENTRY_DEFAULT1 = ENTRY_DEFAULT1 & ~ENTRY_LOAD_DEBUG

# CR0/CR4 in VMX operation: PE, NE and PG must be 1 (no unrestricted guest); CR4.VMXE must be 1
CR0_FIXED0 = 0x80000021
CR0_FIXED1 = 0xFFFFFFFF
CR4_FIXED0 = CR4_VMXE

# -- field encodings (SDM Appendix B) ------------------------------------------------------
VPID = 0x0000
GUEST_SEL = 0x0800                 # + 2 * segment (ES CS SS DS FS GS LDTR TR)
HOST_SEL = 0x0C00                  # + 2 * segment (ES CS SS DS FS GS TR)
IO_BITMAP_A, IO_BITMAP_B, MSR_BITMAP = 0x2000, 0x2002, 0x2004
EXIT_MSR_STORE_ADDR, EXIT_MSR_LOAD_ADDR, ENTRY_MSR_LOAD_ADDR = 0x2006, 0x2008, 0x200A
EXECUTIVE_VMCS, TSC_OFFSET, EPTP = 0x200C, 0x2010, 0x201A
GUEST_PHYS_ADDR = 0x2400
VMCS_LINK, GUEST_DEBUGCTL, GUEST_PAT, GUEST_EFER = 0x2800, 0x2802, 0x2804, 0x2806
GUEST_PDPTE = 0x280A               # + 2 * i: PDPTE0-3 of a PAE guest under EPT (§24.4.2)
HOST_PAT, HOST_EFER = 0x2C00, 0x2C02
PIN_CONTROLS, CPU_CONTROLS, EXCEPTION_BITMAP = 0x4000, 0x4002, 0x4004
PF_ERROR_MASK, PF_ERROR_MATCH, CR3_TARGET_COUNT = 0x4006, 0x4008, 0x400A
EXIT_CONTROLS, EXIT_MSR_STORE_COUNT, EXIT_MSR_LOAD_COUNT = 0x400C, 0x400E, 0x4010
ENTRY_CONTROLS, ENTRY_MSR_LOAD_COUNT, ENTRY_INTR_INFO = 0x4012, 0x4014, 0x4016
ENTRY_EXCEPTION_ERROR, ENTRY_INSTRUCTION_LEN, TPR_THRESHOLD = 0x4018, 0x401A, 0x401C
CPU_CONTROLS2 = 0x401E
VM_INSTRUCTION_ERROR, EXIT_REASON, EXIT_INTR_INFO, EXIT_INTR_ERROR = 0x4400, 0x4402, 0x4404, 0x4406
IDT_VECTORING_INFO, IDT_VECTORING_ERROR = 0x4408, 0x440A
EXIT_INSTRUCTION_LEN, EXIT_INSTRUCTION_INFO = 0x440C, 0x440E
GUEST_LIMIT = 0x4800               # + 2 * segment (ES .. GS, LDTR, TR)
GUEST_GDTR_LIMIT, GUEST_IDTR_LIMIT = 0x4810, 0x4812
GUEST_AR = 0x4814                  # + 2 * segment
GUEST_INTERRUPTIBILITY, GUEST_ACTIVITY, GUEST_SMBASE, GUEST_SYSENTER_CS = 0x4824, 0x4826, 0x4828, 0x482A
HOST_SYSENTER_CS = 0x4C00
CR0_MASK, CR4_MASK, CR0_SHADOW, CR4_SHADOW = 0x6000, 0x6002, 0x6004, 0x6006
CR3_TARGET = 0x6008                # + 2 * n, n < 4
EXIT_QUALIFICATION, IO_RCX, IO_RSI, IO_RDI, IO_RIP = 0x6400, 0x6402, 0x6404, 0x6406, 0x6408
GUEST_LINEAR_ADDR = 0x640A
GUEST_CR0, GUEST_CR3, GUEST_CR4 = 0x6800, 0x6802, 0x6804
GUEST_BASE = 0x6806                # + 2 * segment (ES .. GS, LDTR, TR)
GUEST_GDTR_BASE, GUEST_IDTR_BASE, GUEST_DR7 = 0x6816, 0x6818, 0x681A
GUEST_RSP, GUEST_RIP, GUEST_RFLAGS, GUEST_PENDING_DBG = 0x681C, 0x681E, 0x6820, 0x6822
GUEST_SYSENTER_ESP, GUEST_SYSENTER_EIP = 0x6824, 0x6826
HOST_CR0, HOST_CR3, HOST_CR4, HOST_FS_BASE, HOST_GS_BASE = 0x6C00, 0x6C02, 0x6C04, 0x6C06, 0x6C08
HOST_TR_BASE, HOST_GDTR_BASE, HOST_IDTR_BASE = 0x6C0A, 0x6C0C, 0x6C0E
HOST_SYSENTER_ESP, HOST_SYSENTER_EIP, HOST_RSP, HOST_RIP = 0x6C10, 0x6C12, 0x6C14, 0x6C16

FIELDS = frozenset(
    [VPID] + [GUEST_SEL + 2 * i for i in range(8)] + [HOST_SEL + 2 * i for i in range(7)] +
    [IO_BITMAP_A, IO_BITMAP_B, MSR_BITMAP, EXIT_MSR_STORE_ADDR, EXIT_MSR_LOAD_ADDR,
     ENTRY_MSR_LOAD_ADDR, EXECUTIVE_VMCS, TSC_OFFSET, EPTP, GUEST_PHYS_ADDR, VMCS_LINK,
     GUEST_DEBUGCTL, GUEST_PAT, GUEST_EFER, HOST_PAT, HOST_EFER] +
    [GUEST_PDPTE + 2 * i for i in range(4)] +
    list(range(PIN_CONTROLS, CPU_CONTROLS2 + 2, 2)) +
    list(range(VM_INSTRUCTION_ERROR, EXIT_INSTRUCTION_INFO + 2, 2)) +
    list(range(GUEST_LIMIT, GUEST_SYSENTER_CS + 2, 2)) + [HOST_SYSENTER_CS] +
    list(range(CR0_MASK, CR3_TARGET + 8, 2)) + list(range(EXIT_QUALIFICATION, GUEST_LINEAR_ADDR + 2, 2)) +
    list(range(GUEST_CR0, GUEST_SYSENTER_EIP + 2, 2)) + list(range(HOST_CR0, HOST_RIP + 2, 2)))


def field_width(enc: int) -> int:
    """The field's width in bits: 16, 64, 32, or natural (32 on this IA-32 processor)."""
    return (16, 64, 32, 32)[(enc >> 13) & 3]


def is_read_only(enc: int) -> bool:
    """The VM-exit information fields (type 1): VMWRITE fails on them (IA32_VMX_MISC bit 29 is 0)."""
    return (enc >> 10) & 3 == 1


def supported(enc: int) -> bool:
    """Does this processor have field ``enc`` (the high half of a 64-bit field too)?"""
    if enc & ~0x7FFF:
        return False
    if enc & 1:
        return (enc >> 13) & 3 == 1 and enc & ~1 in FIELDS
    return enc in FIELDS


# IA32_VMX_VMCS_ENUM: the highest index of any field encoding, in bits 9:1
VMCS_ENUM = max((e >> 1) & 0x1FF for e in FIELDS) << 1

# IA32_VMX_MISC: activity state HLT supported (bit 6), 4 CR3-target values (bits 24:16),
# MSR lists of up to 512 entries (bits 27:25 = 0)
VMX_MISC = (1 << 6) | (4 << 16)
# IA32_VMX_BASIC: revision, region size (bits 44:32), 32-bit physical addresses for the
# VMXON region, VMCS and the structures it points to (bit 48: this processor has no
# Intel 64), write-back memory type (bits 53:50 = 6), TRUE controls (bit 55)
VMX_BASIC = VMCS_REVISION | VMCS_SIZE << 32 | 1 << 48 | 6 << 50 | 1 << 55


def _ctls(default1: int, allowed1: int) -> int:
    return default1 | allowed1 << 32


CAPABILITY_MSRS = {
    MSR_VMX_BASIC: VMX_BASIC,
    MSR_VMX_PINBASED_CTLS: _ctls(PIN_DEFAULT1, PIN_ALLOWED1),
    MSR_VMX_PROCBASED_CTLS: _ctls(PROC_DEFAULT1, PROC_ALLOWED1),
    MSR_VMX_EXIT_CTLS: _ctls(EXIT_DEFAULT1, EXIT_ALLOWED1),
    MSR_VMX_ENTRY_CTLS: _ctls(ENTRY_DEFAULT1, ENTRY_ALLOWED1),
    MSR_VMX_MISC: VMX_MISC,
    MSR_VMX_CR0_FIXED0: CR0_FIXED0,
    MSR_VMX_CR0_FIXED1: CR0_FIXED1,
    MSR_VMX_CR4_FIXED0: CR4_FIXED0,
    # MSR_VMX_CR4_FIXED1 is the CPU's supported CR4 bits with VMXE (``vmx.cr4_fixed1``)
    MSR_VMX_VMCS_ENUM: VMCS_ENUM,
    MSR_VMX_PROCBASED_CTLS2: _ctls(0, PROC2_ALLOWED1),
    MSR_VMX_EPT_VPID_CAP: EPT_VPID_CAP,        # (what ept.py implements: no A/D flags, no VPID)
    MSR_VMX_TRUE_PINBASED: _ctls(PIN_DEFAULT1, PIN_ALLOWED1),
    MSR_VMX_TRUE_PROCBASED: _ctls(TRUE_PROC_DEFAULT1, PROC_ALLOWED1),
    MSR_VMX_TRUE_EXIT: _ctls(TRUE_EXIT_DEFAULT1, EXIT_ALLOWED1),
    MSR_VMX_TRUE_ENTRY: _ctls(TRUE_ENTRY_DEFAULT1, ENTRY_ALLOWED1),
}

# -- basic exit reasons (SDM Appendix C) -----------------------------------------------------
EXIT_REASONS = {
    0: "exception or NMI", 1: "external interrupt", 2: "triple fault", 7: "interrupt window",
    8: "NMI window",
    9: "task switch",
    10: "CPUID", 12: "HLT", 13: "INVD", 14: "INVLPG", 15: "RDPMC", 16: "RDTSC", 18: "VMCALL",
    19: "VMCLEAR", 20: "VMLAUNCH", 21: "VMPTRLD", 22: "VMPTRST", 23: "VMREAD", 24: "VMRESUME",
    25: "VMWRITE", 26: "VMXOFF", 27: "VMXON", 28: "CR access", 29: "MOV DR", 30: "I/O instruction",
    31: "RDMSR", 32: "WRMSR", 33: "VM-entry failure (guest state)",
    34: "VM-entry failure (MSR loading)", 37: "monitor trap flag", 48: "EPT violation",
    49: "EPT misconfiguration", 50: "INVEPT", 51: "RDTSCP", 54: "WBINVD",
}
(EXIT_EXCEPTION, EXIT_EXT_INT, EXIT_TRIPLE_FAULT, EXIT_INTR_WINDOW, EXIT_CPUID, EXIT_HLT,
 EXIT_INVD, EXIT_INVLPG, EXIT_RDPMC, EXIT_RDTSC, EXIT_VMCALL) = 0, 1, 2, 7, 10, 12, 13, 14, 15, 16, 18
EXIT_CR, EXIT_DR, EXIT_IO, EXIT_RDMSR, EXIT_WRMSR = 28, 29, 30, 31, 32
EXIT_TASK_SWITCH, EXIT_NMI_WINDOW = 9, 8
# guest interruptibility state (SDM Table 24-3): blocking by STI, MOV SS, NMI
BLOCK_STI, BLOCK_MOV_SS, BLOCK_NMI = 1, 2, 8
# the task-switch exit qualification (SDM Vol. 3C Table 27-2): bits 15:0 the selector of
# the TSS the guest tried to switch to, bits 31:30 the source
TS_SOURCE_CALL, TS_SOURCE_IRET, TS_SOURCE_JMP, TS_SOURCE_IDT = 0, 1, 2, 3
EXIT_BAD_GUEST, EXIT_BAD_MSR_LOAD, EXIT_MTF, EXIT_RDTSCP, EXIT_WBINVD = 33, 34, 37, 51, 54
EXIT_ENTRY_FAILURE = 1 << 31

# VM-instruction error numbers (SDM §31.4)
ERR_VMCALL_ROOT, ERR_VMCLEAR_ADDR, ERR_VMCLEAR_VMXON = 1, 2, 3
ERR_VMLAUNCH_NOT_CLEAR, ERR_VMRESUME_NOT_LAUNCHED = 4, 5
ERR_BAD_CONTROLS, ERR_BAD_HOST = 7, 8
ERR_VMPTRLD_ADDR, ERR_VMPTRLD_VMXON, ERR_VMPTRLD_REVISION = 9, 10, 11
ERR_UNSUPPORTED_FIELD, ERR_READ_ONLY_FIELD, ERR_VMXON_IN_ROOT = 12, 13, 15
ERR_INVEPT_OPERAND = 28             # invalid operand to INVEPT/INVVPID
ERR_MOV_SS_BLOCKING = 26

# interruption-information types (SDM Table 24-15, 24-17)
INTR_EXTERNAL, INTR_NMI, INTR_HW_EXCEPTION, INTR_SOFT_INT = 0, 2, 3, 4
INTR_PRIV_SOFT_EXC, INTR_SOFT_EXC = 5, 6
INTR_VALID, INTR_ERROR_VALID = 1 << 31, 1 << 11


class Vmcs:
    """One VMCS's data (SDM §24.1): its fields and its launch state."""

    __slots__ = ("fields", "launched")

    def __init__(self, fields: dict[int, int] | None = None, launched: bool = False) -> None:
        # a field never written reads 0 (VM entry and exit index this directly)
        self.fields = defaultdict(int, fields or {})
        self.launched = launched

    def read(self, enc: int) -> int:
        if enc & 1:                            # the high half of a 64-bit field
            return self.fields.get(enc & ~1, 0) >> 32
        return self.fields.get(enc, 0)

    def write(self, enc: int, value: int) -> None:
        f = self.fields
        if enc & 1:
            f[enc & ~1] = (f.get(enc & ~1, 0) & 0xFFFFFFFF) | (value & 0xFFFFFFFF) << 32
        else:
            bits = field_width(enc)
            if bits == 64:                     # a 32-bit VMWRITE sets the low half, clears the high
                value &= 0xFFFFFFFF
            f[enc] = value & ((1 << bits) - 1)

    # -- the region in memory (the layout is this processor's: see the module docstring) --
    def pack(self, revision: int) -> bytes:
        out = bytearray(struct.pack("<IIB", revision, 0, int(self.launched)))
        for enc, value in sorted(self.fields.items()):
            out += struct.pack("<IQ", enc, value)
        out += struct.pack("<I", 0xFFFFFFFF)
        if len(out) > VMCS_SIZE:
            raise AssertionError("the VMCS data outgrew its region")
        return bytes(out)

    @classmethod
    def unpack(cls, data: bytes) -> "Vmcs":
        """A VMCS from its region: what VMCLEAR stored there, or (a region software has only
        given a revision identifier) every field zero and the launch state clear."""
        vmcs = cls(launched=bool(data[8]))
        off = 9
        while off + 4 <= len(data):
            (enc,) = struct.unpack_from("<I", data, off)
            if enc == 0xFFFFFFFF or enc not in FIELDS or off + 12 > len(data):
                break
            (value,) = struct.unpack_from("<Q", data, off + 4)
            vmcs.fields[enc] = value
            off += 12
        return vmcs
