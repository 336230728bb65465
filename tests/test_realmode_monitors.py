"""Real-address mode under the monitors (ringvisor/vmm/realmode.py): the ``realmon``
guest (tests/hwguests/realmon), a protected-mode kernel that clears CR0.PE, runs
real-mode code through its own interrupt vector table (LIDT in real mode, at a000h),
its own PIC and PIT programming, an "unreal" FS, and comes back to protected mode,
twice -- on ``qemu-system-i386 -kernel``, on the bare ringvisor PC, and under
``trapemu`` and ``bt``, where the real-mode code runs in virtual-8086 mode and in the
monitor's interpreter.  Every run of the guest is shared by the tests that read it.

The IPs printed are offsets in the 16-bit block (CS 0800h); "at +N" is the saved IP
less the faulting instruction's own offset.
"""

from __future__ import annotations

import functools

import pytest

from hwtests import build_kernel, guest_lines, output_lines
from ringvisor.vmm.realmode import SLICE
from ringvisor.vmm.runner import run_vm

LIMIT = 2_000_000            # the guest retires about 60 000 instructions natively

# a #GP(0) for an access beyond a 64 KiB real-mode limit, through the IVT (vector 0dh,
# no error code): SDM Vol. 3 §20.1.1 ("interrupt 13" for an offset beyond FFFFH), §20.1.4
GP_LINE = "2: vector 000d at +0000 cs 0800"

EXPECTED = [
    "realmon: real mode, cs 0800, ivt at a000",
    # INT n in real mode (SDM Vol. 3 §20.1.4; Vol. 2 INT n, REAL-ADDRESS-MODE): FLAGS, CS
    # and the IP after the INT pushed on the guest's stack, the handler from the IVT at
    # the IDTR base its LIDT loaded; IF and TF clear in the handler; IRET pops all three
    "1: int 30 frame ip cs flags 007c 0800 0ad7, flags inside 08d7",
    "1: after iret ax 600d flags 0ad7",
    # real mode is CPL 0: POPF loads IOPL (Vol. 2 POPF, "real-address mode"), STI and CLI
    # set and clear IF whatever IOPL is
    "1: popf 3002 then sti, cli: 3002 3202 3002",
    # exceptions through the IVT save the IP of the faulting instruction and push no
    # error code (§20.1.4): #DE (DIV by 0), #UD (UD2), #GP (a word at FFFFh: its last
    # byte is beyond the 64 KiB limit)
    "2: vector 0000 at +0000 cs 0800",
    "2: vector 0006 at +0000 cs 0800",
    GP_LINE,
    # IRQ 0 of the PIC the guest programmed (vectors 50h-57h) through its IVT: HLT ends
    # and the saved IP is the instruction after it (§6.8.3 -- ours: 0107h), IF set in
    # the image; its EOI left nothing in service (8259A OCW3)
    "3: irq 0 at vector 50: ip cs if 0107 0800 0200, isr after eoi 0000",
    # unreal mode (§9.9.2: "the segment limits ... remain in effect"): FS loaded in
    # protected mode (base 0, 4 GiB), PE cleared with no far jump; a 32-bit address
    # beyond 1 MiB through FS; FS shows the selector loaded then (0010h); a real-mode
    # load of FS sets base 0 and keeps the 4 GiB limit; the same kind of offset through
    # DS (64 KiB) is #GP through the IVT
    "4: unreal fs:200000 12345678, fs shows 0010 9abcdef0",
    GP_LINE,
    # MOV CR0 setting PE, then a far JMP to a 32-bit code segment: protected mode again,
    # where the stores made through the unreal FS are read back
    "5: back in protected mode: unreal stores 12345678 9abcdef0",
    "5: real mode again",
    "1: int 30 frame ip cs flags 01ea 0800 0002, flags inside 0002",
    "1: after iret ax 600d",
    "5: back in protected mode again",
    "realmon: done",
]


@functools.lru_cache(maxsize=None)
def _run(mode: str):
    """(output lines, exit code, the monitor's report or None), one run per mode."""
    image = build_kernel("realmon")
    if mode == "qemu":
        lines, code = guest_lines("qemu", image)
        return lines, code, None
    r = run_vm(image, mode, max_instructions=LIMIT, quiet=True)
    code = r.status >> 1 if r.status & 1 else -1
    report = r.monitor.report() if r.monitor is not None else None
    return output_lines(r.output.decode("latin-1").replace("\r\n", "\n")), code, report


@pytest.mark.qemu
def test_realmon_on_qemu():
    """QEMU's TCG does not check real-mode segment limits (its loads and stores add
    the base and nothing else): the two #GP lines are the SDM's alone; every other line
    is QEMU's."""
    assert _run("qemu")[:2] == ([x for x in EXPECTED if x != GP_LINE], 0)


@pytest.mark.parametrize("mode", ["native", "trapemu", "bt"])
def test_realmon(mode):
    lines, code, _ = _run(mode)
    assert (lines, code) == (EXPECTED, 0)


@pytest.mark.parametrize("mode", ["trapemu", "bt"])
def test_realmon_runs_in_vm86_and_in_the_interpreter(mode):
    """Under the monitor the plain real-mode code ran in virtual-8086 mode on the real
    CPU (its port I/O, PUSHF, POPF, CLI, STI, INT and IRET trapped there: #GP(0)), its
    #DE and #UD came from there too, and both trips out of protected mode (and the unreal
    stretch) went through the interpreter."""
    _, _, report = _run(mode)
    traps = report["traps"]
    assert traps["real mode (13)"] > 100
    assert traps["real mode (0)"] == traps["real mode (6)"] == 1
    assert report["interpreter entries"] == report["interpreter exits"] == 2
    assert report["interpreted instructions"] > 0


def test_realmon_saved_in_real_mode_and_restored():
    """A VM saved while its guest is in real mode under trapemu (the real CPU in
    virtual-8086 mode, the guest's segment caches in the monitor's state) and restored on
    another machine goes on as if never stopped."""
    from ringvisor.hw.machine import read_image
    from ringvisor.lifecycle import stream
    from ringvisor.lifecycle.vm import VmInfo, capture, restore
    from ringvisor.vmm import attach_monitor, create_vm

    out = bytearray()
    m, mon = create_vm(read_image(build_kernel("realmon")), "trapemu", "", 32, "jit",
                       output=out.extend)
    while b"3:" not in out:                 # (in real mode, after its IRQ 0)
        assert m.run(2000).reason == "limit"
        m.stop = None
    assert mon.real.active
    before, data = len(out), stream.pack_image(capture(m, mon, VmInfo()))
    rest = bytearray()
    m2, _, _ = restore(stream.read_sections(data), attach_monitor, "jit", rest.extend)
    # ... in runs of 1,000 instructions, each of which ends near its bound even in the
    # interpreter (it gives the processor back at the bound: one slice at most past it)
    while True:
        start = m2.cpu.state.icount
        reason = m2.run(1000).reason
        assert m2.cpu.state.icount - start <= 1000 + SLICE + 64
        if reason != "limit":
            break
        m2.stop = None
    assert reason == "exit"
    assert output_lines((out[:before] + rest).decode("latin-1").replace("\r\n", "\n")) == EXPECTED
