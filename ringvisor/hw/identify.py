"""Identification, time and model-specific registers: CPUID, RDTSC/RDTSCP, RDPMC, RDMSR/WRMSR.

CPUID reports exactly what the model implements (a feature bit is a promise a
guest will rely on); the MSRs are those the PC's software touches, each with its
reserved bits (a WRMSR that sets one raises #GP(0), SDM Vol. 2 WRMSR) — and an
unknown MSR raises #GP(0) too, as on hardware.  ``msr_write_ok`` states that rule
once for the CPU and for the monitors that emulate WRMSR.
"""

from __future__ import annotations

import iced_x86 as ix

from .faults import GP, CpuFault
from .state import (CR4_TSD, MSR_APIC_BASE, MSR_BIOS_SIGN, MSR_EFER, MSR_MISC_ENABLE, MSR_PAT,
                    MSR_PLATFORM_ID, MSR_SYSENTER_CS, MSR_SYSENTER_EIP, MSR_SYSENTER_ESP, MSR_TSC,
                    MSR_TSC_AUX, MSR_TSC_DEADLINE)
from .system import helper, require_cpl0
from .vmcs import (CAPABILITY_MSRS, FC_LOCK, FC_VMX_OUTSIDE_SMX, MSR_FEATURE_CONTROL,
                   MSR_VMX_CR4_FIXED1)

M = ix.Mnemonic

# CPUID: a family-6 core that reports exactly what the model implements (SDM Vol. 2 CPUID).
CPUID_SIGNATURE = 0x00000633      # family 6, model 3, stepping 3
CPUID_MAX_BASIC, CPUID_MAX_EXTENDED = 7, 0x80000001
# leaf 1 EDX: FPU VME DE PSE TSC MSR PAE CX8 SEP PGE CMOV CLFSH MMX FXSR SSE SSE2 (VME: CR4.VME
# and CR4.PVI, hw/vme.py; PAE: hw/pae.py)
CPUID_FEATURES_EDX = sum(1 << b for b in (0, 1, 2, 3, 4, 5, 6, 8, 11, 13, 15, 19, 23, 24, 25, 26))
CPUID_FEATURES_ECX = 1 << 0 | 1 << 5   # SSE3 (not MONITOR/MWAIT, bit 3), VMX (hw/vmx.py)
CPUID_FEATURES_EBX = 8 << 8       # CLFLUSH line size: 8 * 8 = 64 bytes
CPUID_LEAF7_EBX = 1 << 7 | 1 << 20  # SMEP, SMAP
CPUID_LEAF7_ECX = 1 << 2          # UMIP
CPUID_EXT_FEATURES_EDX = 1 << 27  # RDTSCP (and IA32_TSC_AUX)
CPUID_APIC = 1 << 9               # leaf 1 EDX: an on-chip APIC (when the PC has one)
APIC_MSRS = (MSR_APIC_BASE, MSR_TSC_DEADLINE)   # the local APIC's (devices/lapic.py)
# CPUID faulting (Intel's "Virtualization Technology FlexMigration" application note; SDM
# Vol. 4 Table 2-12): MSR_PLATFORM_INFO bit 31 says the processor has it, and bit 0 of
# MSR_MISC_FEATURES_ENABLES makes CPUID at CPL > 0 raise #GP(0) -- how a monitor without
# hardware assist shows each virtual processor its own CPUID (Xen does for PV guests)
MSR_PLATFORM_INFO, MSR_MISC_FEATURES_ENABLES = 0xCE, 0x140
PLATFORM_INFO_CPUID_FAULTING = 1 << 31
CPUID_FAULTING = 1 << 0

KNOWN_MSRS = {MSR_SYSENTER_CS: 0, MSR_SYSENTER_ESP: 0, MSR_SYSENTER_EIP: 0,
              MSR_PLATFORM_ID: 0, MSR_BIOS_SIGN: 0, MSR_MISC_ENABLE: 1,
              MSR_PAT: 0x0007040600070406, MSR_EFER: 0, MSR_TSC_AUX: 0,
              # IA32_FEATURE_CONTROL: clear at reset; firmware (or the kernel) enables VMX
              # outside SMX and locks it (SDM Vol. 3C §23.7)
              MSR_FEATURE_CONTROL: 0,
              MSR_PLATFORM_INFO: PLATFORM_INFO_CPUID_FAULTING, MSR_MISC_FEATURES_ENABLES: 0}
# the VMX capability MSRs (hw/vmcs.py), read-only
VMX_CAPABILITY_MSRS = frozenset(CAPABILITY_MSRS) | {MSR_VMX_CR4_FIXED1}
# bits a WRMSR may set (the others are reserved: #GP(0)); MSRs not listed take any value
MSR_WRITABLE = {MSR_TSC_AUX: 0xFFFFFFFF,
                # no SMX: "enable VMX inside SMX" (bit 1) is reserved
                MSR_FEATURE_CONTROL: FC_LOCK | FC_VMX_OUTSIDE_SMX,
                # EFER: no long mode, no NX, no SYSCALL on this CPU, so every bit is reserved
                MSR_EFER: 0,
                MSR_MISC_FEATURES_ENABLES: CPUID_FAULTING}
READ_ONLY_MSRS = frozenset({MSR_PLATFORM_ID, MSR_PLATFORM_INFO})


def cpuid(leaf: int, sub: int = 0, apic=None) -> tuple[int, int, int, int]:
    """(EAX, EBX, ECX, EDX) of CPUID ``leaf``/``sub`` on this model with local APIC
    ``apic`` (or none): the one table the instruction and a KVM vCPU's KVM_SET_CPUID2
    report."""
    if leaf >= 0x80000000:
        if leaf > CPUID_MAX_EXTENDED:
            leaf = CPUID_MAX_BASIC        # beyond the extended range: the highest basic leaf
    elif leaf > CPUID_MAX_BASIC:
        leaf = CPUID_MAX_BASIC
    if leaf == 0:
        return (CPUID_MAX_BASIC, 0x756E6547, 0x6C65746E, 0x49656E69)   # "GenuineIntel"
    if leaf == 1:
        v = (CPUID_SIGNATURE, CPUID_FEATURES_EBX, CPUID_FEATURES_ECX, CPUID_FEATURES_EDX)
        if apic is not None:
            # the local APIC's initial ID, and the APIC feature while it is enabled (QEMU
            # clears the bit when IA32_APIC_BASE disables it: hw/intc/apic.c)
            v = (v[0], v[1] | apic.initial_id << 24, v[2],
                 v[3] | (CPUID_APIC if apic.enabled else 0))
        return v
    if leaf == 7:
        return (0, CPUID_LEAF7_EBX, CPUID_LEAF7_ECX, 0) if sub == 0 else (0, 0, 0, 0)
    if leaf == 0x80000000:
        return (CPUID_MAX_EXTENDED, 0, 0, 0)
    if leaf == 0x80000001:
        return (0, 0, 0, CPUID_EXT_FEATURES_EDX)
    return (0, 0, 0, 0)                   # leaves 2-6: no cache, MONITOR or power information


@helper(M.CPUID)
def h_cpuid(cpu, ins) -> int:
    st = cpu.state
    if st.msrs.get(MSR_MISC_FEATURES_ENABLES, 0) & CPUID_FAULTING and cpu.cpl:
        raise CpuFault(GP, 0)
    r = st.regs
    r[0], r[3], r[1], r[2] = cpuid(r[0], r[1], cpu.apic)
    return ins.next_ip32


def _rdtsc(cpu) -> int:
    if cpu.state.cr4 & CR4_TSD and cpu.cpl != 0:
        raise CpuFault(GP, 0)
    return read_tsc(cpu)


def read_tsc(cpu, offset: int = 0) -> int:
    """What RDTSC does once allowed: EDX:EAX = the time-stamp counter (plus ``offset``:
    a monitor's guest whose TSC was written)."""
    t = (cpu.tsc() + offset) & 0xFFFFFFFFFFFFFFFF
    if cpu.tsc_probe is not None:
        cpu.tsc_probe(t)
    cpu.state.regs[0] = t & 0xFFFFFFFF
    cpu.state.regs[2] = (t >> 32) & 0xFFFFFFFF
    return t


@helper(M.RDTSC)
def h_rdtsc(cpu, ins) -> int:
    _rdtsc(cpu)
    return ins.next_ip32


@helper(M.RDTSCP)
def h_rdtscp(cpu, ins) -> int:
    """RDTSC, and ECX = IA32_TSC_AUX (SDM Vol. 2 RDTSCP)."""
    _rdtsc(cpu)
    cpu.state.regs[1] = cpu.state.msrs.get(MSR_TSC_AUX, 0) & 0xFFFFFFFF
    return ins.next_ip32


@helper(M.RDPMC)
def h_rdpmc(cpu, ins) -> int:
    raise CpuFault(GP, 0)    # no performance counters


@helper(M.RDMSR)
def h_rdmsr(cpu, ins) -> int:
    require_cpl0(cpu)
    st = cpu.state
    n = st.regs[1]
    if n == MSR_TSC:
        v = cpu.tsc()
    elif n in APIC_MSRS and cpu.apic is not None:
        v = cpu.apic.read_msr(n)
    elif n in VMX_CAPABILITY_MSRS:
        v = cpu.vmx.capability(n)
    elif n in KNOWN_MSRS:
        v = st.msrs.get(n, KNOWN_MSRS[n])
    else:
        raise CpuFault(GP, 0)
    st.regs[0], st.regs[2] = v & 0xFFFFFFFF, (v >> 32) & 0xFFFFFFFF
    return ins.next_ip32


@helper(M.WRMSR)
def h_wrmsr(cpu, ins) -> int:
    require_cpl0(cpu)
    st = cpu.state
    n = st.regs[1]
    v = st.regs[0] | st.regs[2] << 32
    if n == MSR_TSC:
        st.tsc_offset = v - cpu.tsc_base()
    elif n in APIC_MSRS and cpu.apic is not None:
        if not cpu.apic.write_msr(n, v):
            raise CpuFault(GP, 0)     # a reserved bit of IA32_APIC_BASE
    elif n == MSR_FEATURE_CONTROL and st.msrs.get(n, 0) & FC_LOCK:
        raise CpuFault(GP, 0)         # locked until reset (SDM Vol. 3C §23.7)
    elif msr_write_ok(n, v):
        st.msrs[n] = v
    else:
        raise CpuFault(GP, 0)         # unknown, read-only, or a reserved bit set
    return ins.next_ip32


def msr_write_ok(n: int, value: int) -> bool:
    """May WRMSR put ``value`` in MSR ``n`` (known, writable, no reserved bit set)?"""
    if n not in KNOWN_MSRS or n in READ_ONLY_MSRS:
        return False
    return not value & ~MSR_WRITABLE.get(n, 0xFFFFFFFFFFFFFFFF)
