"""VMX on ringvisor's CPU, checked by a tiny hypervisor of our own (tests/hwguests/vmx).

QEMU's TCG implements no VMX, so this guest cannot run on the reference; every
expected line below comes from the Intel SDM (Vol. 3C; section numbers of the
combined manual) and says which rule it checks.  The capability values the
guest prints are this processor's (hw/vmcs.py); the guest derives its controls
from the TRUE capability MSRs as SDM Appendix A.2 tells software to.
"""

from __future__ import annotations

import pytest

from hwtests import build_kernel, output_lines, run_platform

# (line, the rule it checks)
EXPECTED = [
    ("cpuid.1:ecx.vmx=1", "CPUID.1:ECX[5] reports VMX (§23.6)"),
    ("vmxon with CR4.VMXE=0: #6 eip=+0", "VMXON: #UD if CR4.VMXE = 0 (§30.3 VMXON)"),
    ("feature control=0x0", "IA32_FEATURE_CONTROL is clear after reset (§23.7)"),
    ("vmxon unlocked: #13 err=0x0 eip=+0", "VMXON: #GP(0) if IA32_FEATURE_CONTROL is not locked"),
    ("wrmsr locked: #13 err=0x0 eip=+0", "a locked IA32_FEATURE_CONTROL cannot be written (#GP, §23.7)"),
    ("vmxon paging off: #13 err=0x0 eip=+0", "VMXON: #GP(0) if CR0 breaks IA32_VMX_CR0_FIXED0 (PG, §23.8)"),
    ("vmxon unaligned: VMfailInvalid", "VMXON: an address not 4-KiB aligned is VMfailInvalid"),
    ("vmxon bad revision: VMfailInvalid", "VMXON: a wrong revision identifier is VMfailInvalid"),
    ("vmxon: VMsucceed", "VMXON enters VMX root operation (CF = ZF = 0, §30.2)"),
    ("vmxon again: VMfailInvalid", "VMXON in root with no current VMCS: VMfail(15) is VMfailInvalid"),
    ("vmread no vmcs: VMfailInvalid", "VMREAD with no current VMCS: VMfailInvalid"),
    ("vmptrst: 0xffffffffffffffff", "VMPTRST with no current VMCS stores FFFFFFFF_FFFFFFFFH"),
    ("clear CR4.VMXE: #13 err=0x0 eip=+0", "CR4.VMXE cannot be cleared in VMX operation (§23.8)"),
    ("vmclear: VMsucceed", "VMCLEAR of a valid region"),
    ("vmptrld: VMsucceed", "VMPTRLD makes it current"),
    ("vmptrst = vmcs: 1", "VMPTRST stores the current-VMCS pointer"),
    ("vmclear unaligned: VMfailValid error=2", "VM-instruction error 2 (§31.4)"),
    ("vmclear vmxon region: VMfailValid error=3", "error 3: VMCLEAR with the VMXON pointer"),
    ("vmptrld unaligned: VMfailValid error=9", "error 9: VMPTRLD with an invalid address"),
    ("vmptrld vmxon region: VMfailValid error=10", "error 10: VMPTRLD with the VMXON pointer"),
    ("vmptrld bad revision: VMfailValid error=11", "error 11: incorrect VMCS revision identifier"),
    ("vmxon in root: VMfailValid error=15", "error 15: VMXON in VMX root operation"),
    ("vmread unsupported: VMfailValid error=12", "error 12: unsupported VMCS component"),
    ("vmwrite read-only: VMfailValid error=13", "error 13: VMWRITE to a read-only component"),
    ("vmcall in root: VMfailValid error=1", "error 1: VMCALL in VMX root operation"),
    ("vmwrite/vmread 64-bit high: VMsucceed low=0x0 high=0xabcd",
     "access type 1 is the high 32 bits of a 64-bit field (§24.11.2)"),
    ("vmresume clear vmcs: VMfailValid error=5", "error 5: VMRESUME with a non-launched VMCS"),
    ("bad pin controls: VMfailValid error=7", "§26.2.1.1: reserved controls must follow the allowed-0 settings"),
    ("null host TR: VMfailValid error=8", "§26.2.3: the host TR selector cannot be 0000H"),
    ("guest RFLAGS bit 1 clear: reason=33 qual=0x0 len=0 rip=+0 entry-failure",
     "§26.3.1.4: RFLAGS bit 1 must be 1; a guest-state failure is exit 33 with bit 31 (§26.8)"),
    ("vmcs link pointer 0: reason=33 qual=0x4 len=0 rip=+0 entry-failure",
     "§26.3.1.5 / §26.8: a bad VMCS link pointer is qualification 4"),
    ("inject error code > 16 bits: VMfailValid error=7", "§26.2.1.3: an injected error code has bits 31:16 clear"),
    ("vmcall: reason=18 qual=0x0 len=3 rip=+0", "VMCALL in non-root always exits (§25.1.2), RIP at it (§27.3.3)"),
    ("vmlaunch launched vmcs: VMfailValid error=4", "error 4: VMLAUNCH with a non-clear VMCS"),
    ("cpuid: reason=10 qual=0x0 len=2 rip=+2", "CPUID exits unconditionally (§25.1.2)"),
    ("hlt: reason=12 qual=0x0 len=1 rip=+0", "HLT exiting (Table 24-6)"),
    ("out imm8: reason=30 qual=0x800040 len=2 rip=+2",
     "I/O bitmap A bit set (§24.6.4); qualification: size-1, OUT, immediate, port (Table 27-5)"),
    ("in dx: reason=30 qual=0x800009 len=2 rip=+4", "IN, 2 bytes, DX: bits 2:0 = 1, bit 3 = 1"),
    ("out bitmap clear: reason=18 qual=0x0 len=3 rip=+4", "a port whose bitmap bit is clear does not exit"),
    ("rep insb: reason=30 qual=0x800038 len=2 rip=+15", "string (bit 4) and REP (bit 5) in the qualification"),
    ("  guest-linear=1", "the guest-linear address of INS is ES:EDI (§27.2.1)"),
    ("mov from cr3: reason=28 qual=0x13 len=3 rip=+0", "CR3-store exiting; Table 27-3: CR 3, MOV from CR, EAX"),
    ("mov to cr3 target: reason=18 qual=0x0 len=3 rip=+6", "a CR3-target value does not exit (§25.1.3)"),
    ("mov to cr3 other: reason=28 qual=0x603 len=3 rip=+5", "CR3-load exiting: MOV to CR3 from ESI (GPR 6)"),
    ("read cr0 smsw cr4: reason=18 qual=0x0 len=3 rip=+26", "reads of CR0/CR4 and SMSW do not exit"),
    ("  cr0=0x80000039 smsw=0x80000039 cr4=0x10 (real cr0=0x80000031 cr4=0x2010)",
     "§25.3: host-owned bits read from the read shadows (TS set, VMXE clear)"),
    ("mov to cr0 TS: reason=28 qual=0x200 len=3 rip=+6", "a MOV to CR0 changing a host-owned bit exits (EDX = 2)"),
    ("clts: reason=28 qual=0x20 len=2 rip=+0", "CLTS exits when TS is owned and its shadow is 1 (access type 2)"),
    ("lmsw: reason=28 qual=0x30030 len=3 rip=+5", "LMSW changing an owned bit: access type 3, source data in 31:16"),
    ("mov cr4 keep: reason=18 qual=0x0 len=3 rip=+15",
     "a MOV to CR4 equal to the shadow in the owned bits does not exit"),
    ("  cr4 read=0x10 real=0x2010", "... and leaves the owned bits (VMXE) of the real CR4 alone"),
    ("mov from dr7 (no exiting): reason=31 qual=0x0 len=2 rip=+8",
     "without MOV-DR exiting the guest reads DR7 and runs on to the next exit"),
    ("mov from dr7: reason=29 qual=0x17 len=3 rip=+0", "Table 27-4: DR 7, MOV from DR (bit 4), EAX"),
    ("rdmsr tsc: reason=31 qual=0x0 len=2 rip=+5", "MSR read bitmap bit set for MSR 10H (§24.6.9)"),
    ("rdmsr bitmap clear: reason=18 qual=0x0 len=3 rip=+14", "clear bits: low and high MSR ranges do not exit"),
    ("wrmsr sysenter_cs: reason=32 qual=0x0 len=2 rip=+9", "the write bitmap for low MSRs starts at byte 2048"),
    ("rdtsc offset: reason=18 qual=0x0 len=3 rip=+8", "RDTSC without exiting runs"),
    ("  tsc high >= 0x10000: 1", "use TSC offsetting adds the TSC offset (§25.3)"),
    ("rdtsc exiting: reason=16 qual=0x0 len=2 rip=+0", "RDTSC exiting"),
    ("invlpg: reason=14 qual=0x12345678 len=7 rip=+0", "INVLPG exiting: the qualification is the linear address"),
    ("vmxon in guest: reason=27 qual=0x0 len=8 rip=+0", "VMX instructions in non-root exit (§25.1.2)"),
    ("ud2: reason=0 qual=0x0 len=0 rip=+0 info=0x80000306", "exception bitmap bit 6: hardware exception, type 3"),
    ("int3: reason=0 qual=0x0 len=1 rip=+0 info=0x80000603", "INT3 is a software exception, type 6, with its length"),
    ("#PF: reason=0 qual=0x400000 len=0 rip=+0 info=0x80000b0e err=0x0",
     "#PF: qualification = linear address, error code valid (§27.2.1, §27.2.2)"),
    ("#PF mask/match: reason=0 qual=0x400000 len=0 rip=+0 info=0x80000b0e err=0x0",
     "§25.2: bit 14 clear and PFEC & MASK != MATCH: the #PF exits"),
    ("inject int 0x40: reason=18 qual=0x0 len=3 rip=+28", "a software interrupt injected on entry (§26.6)"),
    ("  pushed eip=+2", "... pushes RIP + VM-entry instruction length"),
    ("inject #GP: reason=18 qual=0x0 len=3 rip=+48", "a hardware exception injected with an error code"),
    ("  error=0x1234 pushed eip=+0", "... pushes the error code and RIP itself"),
    ("inject external 0x41: reason=18 qual=0x0 len=3 rip=+59", "an external interrupt injected"),
    ("  pushed eip=+0", "... returns to RIP"),
    ("inject into a missing gate: reason=0 qual=0x0 len=0 rip=+0 info=0x80000b0b err=0x213 idt=0x80000042",
     "#NP(0x42*8+3) during delivery exits with the interrupt in IDT-vectoring information (§27.2.4)"),
    ("interrupt window: reason=7 qual=0x0 len=0 rip=+2", "interrupt-window exit after STI's blocking ends (§25.2)"),
    ("external interrupt: reason=1 qual=0x0 len=0 rip=+0 info=0x80000020",
     "external-interrupt exiting with IF=0, acknowledged on exit: the vector (§25.2, §27.2.2)"),
    ("triple fault: reason=2 qual=0x0 len=0 rip=+0 idt=0x80000b08 idt-err=0x0",
     "a triple fault exits (§25.2), while the #DF was being delivered (§27.2.4)"),
    # task switches (SDM Vol. 3C §25.4.2): every one exits (reason 9), fault-like: RIP at
    # the instruction, nothing of the switch done; the qualification is the TSS selector
    # with the source in bits 31:30 (Table 27-2: 0 CALL, 1 IRET, 2 JMP, 3 IDT) and the
    # instruction length is saved (§27.2.5)
    ("lcall tss: reason=9 qual=0x48 len=7 rip=+0", "a far CALL to a TSS: source 0"),
    ("  tr=0x28 tss a type=9 guest cr0.ts=0",
     "the exit comes before the switch: old TR, the new TSS not busy, CR0.TS clear"),
    ("ljmp tss: reason=9 qual=0x80000048 len=7 rip=+0", "a far JMP to a TSS: source 2"),
    ("int task gate: reason=9 qual=0xc0000048 len=2 rip=+0 idt=0x80000443",
     "INT n through a task gate in the IDT: source 3, the gate's TSS selector, the "
     "software interrupt in the IDT-vectoring information (§27.2.4)"),
    ("lcall busy tss: reason=0 qual=0x0 len=0 rip=+0 info=0x80000b0d err=0x28",
     "the TSS descriptor's checks come before the exit (§25.4.2 step 4): a busy TSS is "
     "#GP(selector), which the exception bitmap intercepts"),
    ("iret nt: reason=9 qual=0x40000050 len=1 rip=+0",
     "IRET with NT set: source 1, the back link's selector"),
    # NMIs (SDM Vol. 3C §26.2.1.1: virtual NMIs need NMI exiting, NMI-window exiting needs
    # virtual NMIs; error 7, invalid control fields)
    ("virtual nmis alone: VMfailValid error=7", "virtual NMIs need NMI exiting"),
    ("nmi window alone: VMfailValid error=7", "NMI-window exiting needs virtual NMIs"),
    ("nmi exiting: reason=0 qual=0x0 len=0 rip=+20 info=0x80000202",
     "with NMI exiting an NMI exits (§25.2): exception or NMI, type 2, vector 2 (§27.2.2), "
     "RIP at the instruction it interrupted (the spin after the ICR write)"),
    ("  guest nmi handler ran=0", "the NMI does not reach the guest's IDT"),
    ("inject nmi: reason=18 qual=0x0 len=3 rip=+9",
     "an injected NMI is delivered through the guest's vector 2 (§26.6.1.2)"),
    ("  in handler=1 blocking by nmi=1",
     "with virtual NMIs its delivery sets virtual-NMI blocking, saved as interruptibility "
     "bit 3 (§26.6.1.2, §27.3.4)"),
    ("  after its iret: reason=18 at g_nmi_after=1 blocking by nmi=0",
     "the guest's IRET ends virtual-NMI blocking (§25.3)"),
    ("inject nmi while blocked: reason=33 qual=0x0 len=3 rip=+0 entry-failure",
     "no NMI injection under virtual-NMI blocking (§26.3.1.5): a VM-entry failure, the "
     "other exit fields unmodified (§26.8)"),
    ("nmi window: reason=8 qual=0x0 len=0 rip=+8",
     "NMI-window exiting: an exit before the first instruction without virtual-NMI "
     "blocking (§25.2), right after the IRET that ended it"),
    # EPT (SDM Vol. 3C §28.3; the capability MSR is Appendix A.10's layout of what hw/ept.py does)
    ("ept/vpid cap=0x6134140 high=0x0 proc2 ept allowed=1",
     "A.10: walk length 4 (bit 6), UC/WB (8, 14), 2M/1G pages (16, 17), INVEPT (20) single/all "
     "(25, 26); no execute-only (0), no A/D (21), no INVVPID (32); A.3.3: enable EPT may be 1"),
    ("ept eptp walk length 3: VMfailValid error=7", "§26.2.1.1: EPTP bits 5:3 must be 3 (a 4-level walk)"),
    ("ept eptp a/d: VMfailValid error=7", "§26.2.1.1: EPTP bit 6 must be 0 if A.10 bit 21 is 0"),
    ("ept read unmapped: reason=48 qual=0x181 len=0 rip=+0",
     "§28.3.3.2 / Table 27-7: a read (bit 0) of a not-present page: permissions 5:3 all 0, "
     "guest-linear valid (7), the final translation (8); RIP at the instruction"),
    ("  gpa=+0x0 high=0x0 gla=+0x0", "§27.2.1: guest-physical and guest-linear address fields"),
    ("ept write read-only: reason=48 qual=0x18a len=0 rip=+10",
     "§28.4.3.1: the violation dropped the mapping, the read now succeeds; the write (bit 1) "
     "sees the AND of the entries' permissions: read only (bit 3)"),
    ("  gpa=+0x0 high=0x0 gla=+0x0", "§27.2.1"),
    ("  read=0x1234abcd", "the read completed before the write faulted"),
    ("ept write mapped: reason=18 qual=0x0 len=3 rip=+20",
     "§28.4.3.3: a more permissive entry needs no INVEPT; the write is done, VMCALL exits"),
    ("  target=0x5a5a", "the guest's store reached the page"),
    ("ept fetch not executable: reason=48 qual=0x19c len=0 rip=+0",
     "an instruction fetch (bit 2) from a read/write page (bits 3, 4), final translation"),
    ("  gpa=+0x0 high=0x0 gla=+0x0", "§27.2.1"),
    ("invept single: VMsucceed", "INVEPT type 1 with a valid EPTP (ch. 30, INVEPT)"),
    ("ept fetch mapped: reason=18 qual=0x0 len=3 rip=+0", "executable now: the VMCALL in the page runs"),
    ("ept guest page table: reason=48 qual=0x81 len=0 rip=+0",
     "§28.3.1: the guest's page-table entry is read through EPT; bit 8 clear: an access to a "
     "guest paging-structure entry, not the final translation"),
    ("  gpa=pte 1 gla=+0x0", "the guest-physical address is the PTE's, the linear one the fetch's"),
    ("ept misconfiguration: reason=49 qual=0x0 len=0 rip=+0",
     "§28.3.3.1: write without read is a misconfiguration (reason 49, no qualification)"),
    ("  gpa=+0x0", "§27.2.1: the guest-physical address field"),
    ("ept remapped: reason=18 qual=0x0 len=3 rip=+10", "after INVEPT the guest sees the new frame"),
    ("  read=0x77777777", "... of the page the entry now names"),
    ("ept 2-MiB page: reason=18 qual=0x0 len=3 rip=+10", "§28.3.2: a PDE with bit 7 maps 2 MiB"),
    ("  read=0xb16b00b5", ""),
    ("invept type 3: VMfailValid error=28", "INVEPT: an unsupported type is error 28 (§31.4)"),
    ("invept single bad eptp: VMfailValid error=28",
     "INVEPT type 1 with an EPTP VM entry would refuse (bit 7 reserved) is error 28"),
    ("invept all: VMsucceed", "INVEPT type 2"),
    ("invept in guest: reason=50 qual=0x0 len=9 rip=+0", "INVEPT in non-root always exits (§25.1.2)"),
    ("ept 1-GiB page: reason=18 qual=0x0 len=3 rip=+10", "§28.3.2: a PDPTE with bit 7 maps 1 GiB"),
    ("  read=0xc1010f", "... identity: the page's real contents (the VMCALL the host wrote there)"),
    ("ept 1-GiB reserved bit: reason=49 qual=0x0 len=0 rip=+0",
     "§28.3.3.1: bits 29:12 of a 1-GiB page are reserved: a misconfiguration"),
    ("vmxoff: VMsucceed", "VMXOFF leaves VMX operation"),
    ("vmread after vmxoff: #6 eip=+0", "VMX instructions outside VMX operation are #UD"),
    ("done", ""),
]


@pytest.fixture(scope="module")
def image():
    return build_kernel("vmx")


@pytest.mark.parametrize("platform", ["jit", "interp"])
def test_vmx_guest(image, platform):
    out, code = run_platform(platform, image)
    lines = output_lines(out)
    for got, (want, rule) in zip(lines, EXPECTED):
        assert got == want, f"{rule}: got {got!r}"
    assert len(lines) == len(EXPECTED)
    assert code == 0


def test_capability_msrs_follow_the_sdm():
    """Appendix A: the TRUE controls may only relax default1 bits; CR4 fixed bits hold VMXE."""
    from ringvisor.hw import vmcs as V
    from ringvisor.hw.vmx import cr4_fixed1
    caps = V.CAPABILITY_MSRS
    for plain, true in ((V.MSR_VMX_PINBASED_CTLS, V.MSR_VMX_TRUE_PINBASED),
                        (V.MSR_VMX_PROCBASED_CTLS, V.MSR_VMX_TRUE_PROCBASED),
                        (V.MSR_VMX_EXIT_CTLS, V.MSR_VMX_TRUE_EXIT),
                        (V.MSR_VMX_ENTRY_CTLS, V.MSR_VMX_TRUE_ENTRY)):
        assert caps[true] >> 32 == caps[plain] >> 32
        assert caps[true] & 0xFFFFFFFF & ~caps[plain] == 0
        assert caps[plain] & 0xFFFFFFFF & ~(caps[plain] >> 32) == 0   # allowed-0 within allowed-1
    assert caps[V.MSR_VMX_BASIC] >> 55 & 1 and caps[V.MSR_VMX_BASIC] >> 32 & 0x1FFF == 4096
    assert V.CR4_VMXE & cr4_fixed1() and V.CR4_VMXE & caps[V.MSR_VMX_CR4_FIXED0]
    # every field encoding has a valid width/type and VMCS_ENUM covers the highest index
    assert all((e >> 1) & 0x1FF <= caps[V.MSR_VMX_VMCS_ENUM] >> 1 for e in V.FIELDS)


def test_saved_and_restored_in_vmx_operation(image):
    """The VMX state is part of the CPU's (hw/vmx.py ``get_state``): the guest stopped in VMX
    root and in non-root operation, with its own VMCS current, saved and restored (under
    either engine), prints exactly what one uninterrupted run prints."""
    from hwtests import MEM_MB
    from ringvisor.hw.machine import Machine, read_image
    from ringvisor.lifecycle import stream
    from ringvisor.lifecycle.vm import VmInfo, capture, restore

    def boot(out: bytearray, engine: str = "jit") -> Machine:
        m = Machine(MEM_MB, engine, output=out.extend)
        m.boot_multiboot(read_image(image), "")
        return m
    whole = bytearray()
    end = boot(whole).run(10_000_000)
    assert end.reason == "exit"
    out, images, kinds = bytearray(), [], set()
    m, chunks = boot(out), 0
    while (stop := m.run(997)).reason == "limit":    # (an odd step: stops land all over)
        m.stop = None
        chunks += 1
        if m.cpu.vmx.on and chunks % 40 == 0:
            kinds.add("non-root" if m.cpu.nonroot else "root")
            images.append((len(out), m.cpu.state.icount, stream.pack_image(capture(m, None, VmInfo()))))
    assert bytes(out) == bytes(whole) and kinds == {"root", "non-root"}, kinds
    for k, (before, n, data) in enumerate(images):
        rest = bytearray()
        m2, _, _ = restore(stream.read_sections(data), None, "interp" if k % 2 else "jit", rest.extend)
        assert m2.cpu.state.icount == n
        assert m2.run(10_000_000) == end
        assert bytes(whole[:before]) + bytes(rest) == bytes(whole), f"restored at {n}"
