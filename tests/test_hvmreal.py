"""Real-address mode under hardware assistance: VMX's "unrestricted guest" (secondary
processor-based control bit 7, SDM Vol. 3C §26.8; it needs EPT, §26.2.1.1).

The ``hvmreal`` guest (tests/hwguests/hvmreal) leaves protected mode, runs real-mode
code -- its own IVT (INT n, #DE, IRQ 0), port I/O, a MOV to CR0 that sets CD, unreal
mode -- and returns; it prints the same on QEMU, natively and under ``--mode hvm``,
where all of it runs in VMX non-root and only the CR0.PE writes the CR0 guest/host
mask claims exit.  Without EPT the monitor refuses with one line.  The VM-entry checks
that let such a guest in are unit-tested below against the SDM's rules, on the VMCS
the monitor left at its last exit (one boot shared by those tests).
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from hwtests import build_kernel, guest_lines, output_lines
from ringvisor.hw import vmcs as V
from ringvisor.hw.state import (ATTR_P, ATTR_S, ATTR_UNUSABLE, CR0_CD, CR0_ET, CR0_NE, CR0_PE, CR0_PG,
                                FS)
from ringvisor.hw.vmentry import check_controls, check_guest
from ringvisor.vmm.runner import run_vm

LIMIT = 2_000_000            # the guest retires about 7,000 instructions

EXPECTED = [
    # CS as the far jump in real mode loaded it; CR0 = the hand-off's PE | ET with PE
    # cleared: MOV from CR0 and SMSW agree (under hvm: the read shadow, §25.3)
    "real mode: cs 0900 cr0 0010 smsw 0010",
    # INT n in real mode: FLAGS, CS, IP of the next instruction through the IVT at IDTR
    # (SDM Vol. 3 §20.1.4)
    "int 31h: ip +0000 cs 0900 ax 1234 -> 2468",
    # #DE is a fault: the saved IP is the DIV's own
    "#DE: ip +0000",
    # the master PIC's IMR reads back; REP OUTSB with 16-bit addressing steps SI, counts CX
    "imr a5 -> a5, rep outsb: [hello] si +0007 cx 0000",
    # IRQ 0 at vector 8 (the PIC base the firmware leaves) ends the HLT
    "irq 0 through the ivt: 01",
    # kvm-unit-tests' test_smsw: CR0.CD set and cleared in real mode (no fixed-1 PE or PG
    # for an unrestricted guest's MOV to CR0, §23.8 footnote)
    "cr0.cd set: cr0 high 4000, cleared: 0000",
    # a segment load in real mode keeps the 4-GiB limit a protected-mode load left (§9.9.2)
    "unreal mode: fs:300000 = 600dcafe",
    "protected mode again: cr0 00000011, unreal-mode store 12345678",
    "hvmreal: done",
]


@pytest.fixture(scope="module")
def image():
    return build_kernel("hvmreal")


@pytest.fixture(scope="module")
def hvm_run(image):
    """One boot under hvm with EPT, shared by the tests below."""
    return run_vm(image, "hvm", max_instructions=LIMIT, quiet=True)


@pytest.mark.parametrize("platform", ["qemu", "jit"])
def test_guest_on_qemu_and_natively(image, platform):
    assert guest_lines(platform, image) == (EXPECTED, 0)


def test_guest_under_hvm_runs_real_mode_in_non_root(hvm_run):
    r = hvm_run
    assert output_lines(r.output.decode("latin-1").replace("\r\n", "\n")) == EXPECTED
    assert r.stop.reason == "exit" and r.status == 1, r.stop
    mon = r.stats["monitor"]
    # the two trips to real mode and back: each PE write exits (CR0 guest/host mask), and
    # nothing else but what the controls ask for (I/O, HLT, the physical interrupt, EPT)
    assert mon["to real mode"] == 2 and mon["to protected mode"] == 2, mon
    assert mon["exits"]["CR access"] == 4, mon["exits"]
    assert set(mon["exits"]) <= {"CR access", "I/O instruction", "HLT", "external interrupt",
                                 "EPT violation"}, mon["exits"]
    # #DE and INT 31h went through the guest's IVT without the monitor
    assert not any("reflected" in k for k in mon), mon


def test_real_mode_reaches_guest_physical_memory_through_ept():
    """With paging off the processor used to index RAM by linear address directly
    (``Mode.direct``), EPT or not: an unrestricted guest's unreal-mode load beyond its
    32 MiB read the monitor's memory there.  Its addresses are guest-physical, and EPT
    translates them (SDM Vol. 3C §28.3.1): an EPT violation, and the monitor stops the VM
    with its report, as for any access beyond the guest's RAM."""
    r = run_vm(build_kernel("hvmreal-beyond"), "hvm", max_instructions=LIMIT, quiet=True)
    assert r.stop.reason == "unsupported", r.stop
    assert "beyond its 32 MiB" in r.stop.message and "EPT violation (reason 48" in r.stop.message
    assert "mov eax,fs:[2100000h]" in r.stop.message, r.stop.message


def test_no_ept_refuses_real_mode_with_one_line(image):
    r = subprocess.run([sys.executable, "-m", "ringvisor", "run", str(image), "--mode", "hvm",
                        "--no-ept"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 3, r.stderr
    first = r.stderr.strip().splitlines()[0]
    assert first == ("ringvisor: stopped: hvm --no-ept: the guest cleared CR0.PE at 0030:00000014: "
                     "real mode needs unrestricted guest, which needs EPT (run without --no-ept)")
    # the report is the guest's, from the VMCS guest-state area, with the exit that stopped
    # it -- not the monitor's registers at VMX root (its GDT in its region, its CR3)
    lines = r.stderr.strip().splitlines()
    assert lines[1] == "  VM exit: CR access (reason 28, qualification 0x0); the guest, in protected mode:"
    assert lines[3].startswith("  eip=00000014 ") and " cpl=0 cr0=00000011 " in lines[3]
    assert lines[4].startswith("  es=0020 cs=0030 ss=0020 ") and " ldtr=0000 tr=0000" in lines[4]
    assert lines[5:7] == ["  instructions at eip:", "    00000014: mov cr0,eax"]


# -- the VM-entry checks (SDM Vol. 3C §26.2.1, §26.3.1), on the monitor's VMCS ------------
REAL_CODE = ATTR_P | ATTR_S | 0x0B         # what the guest's 16-bit code descriptor left
REAL_DATA = ATTR_P | ATTR_S | 0x03


@pytest.fixture
def vmx(hvm_run):
    """The VMCS of the finished run (a valid 32-bit protected-mode guest at its last
    exit), restored after each test."""
    vmx = hvm_run.machine.cpu.vmx
    saved = dict(vmx.vmcs.fields)
    yield vmx
    vmx.vmcs.fields.clear()
    vmx.vmcs.fields.update(saved)


def put(vmx, **fields):
    for name, value in fields.items():
        vmx.vmcs.fields[getattr(V, name)] = value


def seg(vmx, i: int, selector: int, base: int, limit: int, attr: int) -> None:
    f = vmx.vmcs.fields
    f[V.GUEST_SEL + 2 * i], f[V.GUEST_BASE + 2 * i] = selector, base
    f[V.GUEST_LIMIT + 2 * i], f[V.GUEST_AR + 2 * i] = limit, attr


def real_mode(vmx, cr0: int = CR0_ET | CR0_NE) -> None:
    """The guest as the hvmreal guest's real mode leaves it: CR0.PE and PG clear, CS
    9000H from its 16-bit code descriptor, the data segments 64 KiB, DPL 0."""
    put(vmx, GUEST_CR0=cr0)
    seg(vmx, 1, 0x900, 0x9000, 0xFFFF, REAL_CODE)
    for i in (0, 2, 3, 4, 5):
        seg(vmx, i, 0, 0, 0xFFFF, REAL_DATA)


def unrestricted(vmx, on: bool) -> None:
    ctl = vmx.vmcs.fields[V.CPU_CONTROLS2]
    vmx.vmcs.fields[V.CPU_CONTROLS2] = ctl | V.CPU2_UNRESTRICTED if on else ctl & ~V.CPU2_UNRESTRICTED


def test_entry_checks_the_monitors_vmcs_passes(vmx):
    assert vmx.unrestricted() and check_controls(vmx) == 0 and check_guest(vmx) is None


def test_entry_checks_cr0_pe_and_pg(vmx):
    """§26.3.1.1: PE and PG are checked against IA32_VMX_CR0_FIXED0 unless "unrestricted
    guest" is 1; PG set with PE clear fails whatever the controls."""
    real_mode(vmx)
    assert check_guest(vmx) is None
    put(vmx, GUEST_CR0=CR0_ET | CR0_NE | CR0_PE)             # unpaged protected mode
    assert check_guest(vmx) is None
    put(vmx, GUEST_CR0=CR0_ET | CR0_NE | CR0_PG)
    assert check_guest(vmx) == 0
    put(vmx, GUEST_CR0=CR0_ET | CR0_PE | CR0_PG)             # NE stays fixed (FIXED0 bit 5)
    assert check_guest(vmx) == 0
    real_mode(vmx)
    unrestricted(vmx, False)
    assert check_guest(vmx) == 0


def test_entry_checks_real_mode_segments(vmx):
    """§26.3.1.2 with "unrestricted guest": CS may be type 3 (read/write accessed data)
    with DPL 0; SS.DPL is 0 when CR0.PE is clear; the DS-GS DPL/RPL rule is waived."""
    real_mode(vmx)
    seg(vmx, 1, 0x900, 0x9000, 0xFFFF, REAL_DATA)            # CS type 3
    assert check_guest(vmx) is None
    seg(vmx, 1, 0x900, 0x9000, 0xFFFF, REAL_DATA | 3 << 5)   # ... with DPL 3
    assert check_guest(vmx) == 0
    real_mode(vmx)
    seg(vmx, 2, 0, 0, 0xFFFF, REAL_DATA | 3 << 5)            # SS DPL 3, PE clear
    assert check_guest(vmx) == 0
    real_mode(vmx)
    seg(vmx, 3, 0x1233, 0x12330, 0xFFFF, REAL_DATA)          # DS DPL 0 < RPL 3
    assert check_guest(vmx) is None
    seg(vmx, 3, 0x1233, 0x12330, 0x1FFFFF, REAL_DATA)        # limit bits 31:20 set, G clear
    assert check_guest(vmx) == 0
    real_mode(vmx)
    seg(vmx, 3, 0x1233, 0x12330, 0x1FFFFF, ATTR_UNUSABLE)    # (not checked: unusable)
    assert check_guest(vmx) is None


def test_entry_checks_relaxed_only_with_unrestricted_guest(vmx):
    """The same relaxations in protected mode: without the control, CS type 3, SS.RPL
    unlike CS.RPL, and a data segment's DPL below its RPL each fail (§26.3.1.2)."""
    cases = [(1, 0x08, 0, 0xFFFFFFFF, REAL_DATA | 0xC000),
             (2, 0x13, 0, 0xFFFFFFFF, REAL_DATA | 0xC000),
             (3, 0x13, 0, 0xFFFFFFFF, REAL_DATA | 0xC000)]
    for i, sel, base, limit, attr in cases:
        for on, verdict in ((True, None), (False, 0)):
            saved = dict(vmx.vmcs.fields)
            seg(vmx, i, sel, base, limit, attr)
            unrestricted(vmx, on)
            assert check_guest(vmx) == verdict, (i, on)
            vmx.vmcs.fields.update(saved)


def test_entry_checks_controls_and_event_injection(vmx):
    """§26.2.1.1: "unrestricted guest" needs "enable EPT" (else VMfailValid 7);
    §26.2.1.3: an injected exception delivers an error code only if CR0.PE is 1."""
    unrestricted(vmx, True)
    put(vmx, CPU_CONTROLS2=vmx.vmcs.fields[V.CPU_CONTROLS2] & ~V.CPU2_EPT)
    assert check_controls(vmx) == V.ERR_BAD_CONTROLS
    unrestricted(vmx, False)
    assert check_controls(vmx) == 0
    unrestricted(vmx, True)
    put(vmx, CPU_CONTROLS2=vmx.vmcs.fields[V.CPU_CONTROLS2] | V.CPU2_EPT)
    gp = V.INTR_VALID | V.INTR_HW_EXCEPTION << 8 | 13
    put(vmx, ENTRY_INTR_INFO=gp | V.INTR_ERROR_VALID, ENTRY_EXCEPTION_ERROR=0)
    assert check_controls(vmx) == 0                          # protected mode: with it
    real_mode(vmx)
    assert check_controls(vmx) == V.ERR_BAD_CONTROLS
    put(vmx, ENTRY_INTR_INFO=gp)
    assert check_controls(vmx) == 0                          # real mode: without it


def test_vm_entry_without_unrestricted_guest_fails_as_the_sdm_says(vmx):
    """VMRESUME of a real-mode guest without the control: a VM exit with basic reason 33
    and the entry-failure bit (§26.8), the processor back at the host."""
    real_mode(vmx)
    unrestricted(vmx, False)
    put(vmx, ENTRY_INTR_INFO=0)
    assert vmx.vmresume() == 0
    assert vmx.read(V.EXIT_REASON) == V.EXIT_ENTRY_FAILURE | V.EXIT_BAD_GUEST
    assert not vmx.cpu.nonroot
    cr0 = vmx.cpu.state.cr0
    assert cr0 & CR0_PE and cr0 & CR0_PG and not cr0 & CR0_CD


def test_saved_in_real_mode_restores_as_one_run(image, hvm_run):
    """A VM saved while its guest runs real-mode code in VMX non-root (the real CR0.PE
    clear, the VMCS the processor's) restores and runs on as the one uninterrupted run:
    saved in each of its two trips to real mode."""
    from ringvisor.hw.machine import read_image
    from ringvisor.lifecycle import stream
    from ringvisor.lifecycle.vm import VmInfo, capture, restore
    from ringvisor.vmm import attach_monitor, create_vm
    whole = hvm_run.output
    out = bytearray()
    m, mon = create_vm(read_image(image), "hvm", "", 32, output=out.extend)
    # saved at the first stop in real mode, and at the first in unreal mode (the second
    # trip: FS's cache holds the 4-GiB limit)
    saved, unreal = [], [False, True]
    while m.run(97).reason == "limit":
        m.stop = None
        if unreal and m.cpu.nonroot and not m.cpu.state.cr0 & CR0_PE and \
                (m.cpu.state.segs[FS].limit == 0xFFFFFFFF) == unreal[0]:
            saved.append((len(out), m.cpu.state.icount, stream.pack_image(capture(m, mon, VmInfo()))))
            unreal.pop(0)
    assert len(saved) == 2 and bytes(out) == whole
    for before, n, data in saved:
        rest = bytearray()
        m2, _, _ = restore(stream.read_sections(data), attach_monitor, "jit", rest.extend)
        assert m2.cpu.state.icount == n and not m2.cpu.state.cr0 & CR0_PE
        assert (m2.cpu.state.segs[FS].limit == 0xFFFFFFFF) == (n == saved[-1][1])
        assert m2.run(LIMIT).reason == "exit"
        assert whole[:before] + bytes(rest) == whole, f"restored at {n}"
