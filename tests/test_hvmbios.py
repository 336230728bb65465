"""hvm beyond the Multiboot hand-off: ``run --bios`` under VT-x (the reset vector in real
mode, an unrestricted guest on EPT), CR0.NE = 0 (the PC's FERR#/IRQ 13 instead of #MF)
and the report a monitor stop gives (the guest's state, not the host's).

The ROM is ``tests/roms/hvmreset.S`` (its comments cite the SDM rule behind each line);
it prints the same on ``qemu-system-i386 -bios``, on the bare PC and under hvm."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from hwtests import build_kernel
from test_realmode import EXPECTED as REALMODE_EXPECTED, POST_CODES, build_rom, qemu_bios
from ringvisor.hw import vmcs as V
from ringvisor.hw.state import ATTR_UNUSABLE
from ringvisor.hw.vmentry import check_guest
from ringvisor.vmm import create_bios_vm, run_vm
from ringvisor.vmm.hvm import entry_attr

EXPECTED = """\
reset: ip at 4 GiB 0007
cr0 60000010
edx = cpuid.1 0001
idtr ffff 0000 gdtr ffff 0000
rom both copies 53525652 53525652
low copy cs f000
ne=0: sw, irq13 before/after fwait, #MF count 8084 0000 0020 0000
tr ldtr, rom after store 00000000 00000000 53525652
irq13 taken in protected mode 00000001
done
"""
TR, LDTR = 7, 6


@pytest.fixture(scope="module")
def rom() -> Path:
    return build_rom("hvmreset")


def _run_rom(rom: Path, mode: str):
    out = bytearray()
    m, mon = create_bios_vm(rom.read_bytes(), mode, 32, "jit", str(rom), output=out.extend)
    stop = m.run(2_000_000)
    return out.decode("latin-1"), stop, m, mon


@pytest.fixture(scope="module")
def hvm_rom(rom):
    return _run_rom(rom, "hvm")


def test_rom_natively(rom):
    out, stop, _, _ = _run_rom(rom, "native")
    assert (out, stop.status) == (EXPECTED, 1)


def test_rom_on_qemu(rom):
    assert qemu_bios(rom) == (EXPECTED, 0)


def test_rom_under_hvm(hvm_rom):
    """From the reset vector in VMX non-root: the first instructions fetched from the
    ROM's copy at 4 GiB through EPT, real mode without an exit but for port I/O, CPUID
    and the MOV to CR0 setting PE; the x87 error with NE clear is FERR#, not #MF."""
    out, stop, _, mon = hvm_rom
    assert (out, stop.status) == (EXPECTED, 1), stop.message
    rep = mon.report()
    assert rep["exits"].get("CR access") == 1 and rep["to protected mode"] == 1
    assert rep["#MF as FERR# (NE=0)"] == 1 and "#MF reflected" not in rep
    assert rep["EPT regions mapped"] == 1      # guest RAM below 2 MiB; the ROM mapped at once


def test_realmode_rom_under_hvm():
    """tests/roms/realmode.S from RESET under hvm: its trips to protected mode and back,
    unreal mode, and IRQ 0 through the LINT0 it programs on its virtual local APIC
    (RESET's: masked until then) -- QEMU's lines, as natively (tests/test_realmode.py)."""
    out, stop, m, _ = _run_rom(build_rom("realmode"), "hvm")
    assert (out, stop.status) == (REALMODE_EXPECTED, 1), stop.message
    assert [(p, v) for _, p, v in m.post.codes] == [(0x80, c) for c in POST_CODES]


def test_reset_tr_ldtr_enter_as_vm_entry_requires(hvm_rom):
    """SDM Vol. 3C §26.3.1.2: TR must be a usable busy TSS (type 3 or 11, S clear) even
    for an unrestricted guest in real mode; LDTR, if usable, an LDT (type 2).  RESET's
    (Table 9-1: present, R/W) is held as TR 8BH and LDTR 82H here and enters unchanged;
    caches VM entry refuses are fixed up to what it accepts, and VM entry agrees."""
    _, _, m, _ = hvm_rom
    vmx = m.cpu.vmx
    fields = vmx.vmcs.fields
    saved = dict(fields)
    try:
        for i, bad in ((TR, 0x89), (TR, 0x81), (TR, 0x93), (TR, 0x0B), (LDTR, 0x93),
                       (LDTR, 0x02)):
            fields[V.GUEST_AR + 2 * i] = bad
            assert check_guest(vmx) is not None, (i, hex(bad))
            fields[V.GUEST_AR + 2 * i] = entry_attr(i, bad)
            assert check_guest(vmx) is None, (i, hex(bad))
            fields[V.GUEST_AR + 2 * i] = saved[V.GUEST_AR + 2 * i]
    finally:
        fields.clear()
        fields.update(saved)
    assert [entry_attr(TR, a) for a in (0x8B, 0x83, 0x89, 0x81, 0x93)] == \
        [0x8B, 0x83, 0x8B, 0x83, 0x8B]
    assert entry_attr(LDTR, 0x82) == 0x82 and entry_attr(LDTR, 0x93) == ATTR_UNUSABLE


@pytest.mark.parametrize("ept", [True, False], ids=["ept", "shadow"])
def test_ne_clear_gives_irq13_under_hvm(ept):
    """tests/hwguests/fpu part=3 ferr=1 (CR0.NE = 0, IRQ 13 taken through its IDT, the
    handler's port F0 write and FNCLEX): the same lines under hvm as on the bare PC."""
    img = build_kernel("fpu-387")
    native = run_vm(img, "native", cmdline="part=3 ferr=1", max_instructions=20_000_000)
    hvm = run_vm(img, "hvm", cmdline="part=3 ferr=1", max_instructions=20_000_000, ept=ept)
    assert b"FERR# IRQ 13: count=1 eip=+1 sw in handler=b084 sw after=3000" in native.output
    assert (hvm.output, hvm.status) == (native.output, native.status)
    mon = hvm.stats["monitor"]
    assert mon["#MF as FERR# (NE=0)"] == 1 and mon["interrupts injected"] == 1


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "ringvisor", "run", *args], capture_output=True,
                          cwd=cwd, env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})


def test_run_bios_mode_hvm_cli(rom):
    r = _cli("--bios", str(rom), "--mode", "hvm", "--stats")
    assert r.returncode == 1, r.stderr
    assert r.stdout.decode() == EXPECTED
    assert b"CR access" in r.stderr


def test_run_bios_mode_hvm_no_ept_refused(rom, tmp_path):
    r = _cli("--bios", str(rom), "--mode", "hvm", "--no-ept", cwd=tmp_path)
    assert r.returncode == 2
    err = r.stderr.decode().strip().splitlines()
    assert len(err) == 1 and "needs EPT" in err[0] and "unrestricted guest" in err[0], err
