"""Debug traps held by MOV SS and POP SS, ICEBP after them, and I/O breakpoints on
REP INS/OUTS (tests/hwguests/movss; the rules are in its source).

The expected lines are the SDM's and the hardware's (Linux's selftests/x86/
mov_ss_trap.c and kvm-unit-tests' x86/debug.c, both written against real
processors), not QEMU's: QEMU's TCG reports a data breakpoint on MOV SS at once,
after the MOV SS (EIP -1 below), and an I/O breakpoint on a REP INS/OUTS once,
after the last iteration; it runs the I/O part (``io=1``) with that difference
checked here too (docs/hardware.md, where QEMU departs from the SDM).
"""

from __future__ import annotations

import subprocess

import pytest

from hwtests import build_kernel, output_lines, run_platform
from ringvisor.hw.machine import Machine, read_image
from ringvisor.lifecycle import stream
from ringvisor.lifecycle.vm import capture, restore
from ringvisor.tools.qemu import find_qemu

_IO = [
    # port 0x80 (DR2): a #DB after each iteration of REP OUTSB (3) and REP INSB (2), EIP at
    # the instruction while iterations remain (SDM Vol. 3 §17.3.1.2); none for port 0x84
    "rep outsb, rep insb, port 0x80: count=5 [eip=+0 dr6=0xffff0ff4] [eip=+0 dr6=0xffff0ff4] "
    "[eip=+2 dr6=0xffff0ff4] [eip=+32 dr6=0xffff0ff4] [eip=+34 dr6=0xffff0ff4]",
    "rep insb at +32",
    "movss: done",
]
EXPECTED = [
    "movss: start",
    # one #DB, after the instruction that follows the load, B0 (DR0 on the selector / slot)
    "result 2; mov ss, inc: count=1 [eip=+0 dr6=0xffff0ff1]",
    "result 1; pop ss, mov esp: count=1 [eip=+0 dr6=0xffff0ff1]",
    # an instruction breakpoint on the next instruction is not taken (§17.3.1.1)
    "result 2; mov ss, exec breakpoint on the next: count=1 [eip=+0 dr6=0xffff0ff1]",
    # the next instruction's own data breakpoint (DR1) goes with it: B0 and B1 in one #DB
    "mov ss, a watched store: count=1 [eip=+0 dr6=0xffff0ff3]",
    # a fault in the next instruction: the fault alone, the held trap dropped
    "mov ss, ud2: #6 eip=+0",
    "mov ss, ud2: count=0",
    # an instruction a monitor emulates (OUT) is an ordinary one
    "mov ss, out: count=1 [eip=+0 dr6=0xffff0ff1]",
    # ICEBP's #DB is the only one, with the held B0
    "mov ss, icebp: count=1 [eip=+0 dr6=0xffff0ff1]",
    # INT n and INT3 enter their handler, then the #DB (EIP: the handler's first instruction)
    "int 0x81: count=1 eip=+0; mov ss, int 0x81: count=1 [eip=+0 dr6=0xffff0ff1]",
    "#BP: count=1 eip=+0; mov ss, int3: count=1 [eip=+0 dr6=0xffff0ff1]",
    # TF, MOV SS, ICEBP: ICEBP's #DB (no BS), then the steps of AND (5 bytes), PUSH, POPF
    "tf, mov ss, icebp: count=4 [eip=+0 dr6=0xffff0ff0] [eip=+5 dr6=0xffff4ff0] "
    "[eip=+6 dr6=0xffff4ff0] [eip=+7 dr6=0xffff4ff0]",
    *_IO,
]
# QEMU 7.2's TCG on the I/O part: one #DB per REP instruction, after its last iteration
QEMU_IO = ["movss: start",
           "rep outsb, rep insb, port 0x80: count=2 [eip=+2 dr6=0xffff0ff4] [eip=+34 dr6=0xffff0ff4]",
           *_IO[1:]]


@pytest.fixture(scope="module")
def image():
    return build_kernel("movss")


def test_natively(image):
    out, code = run_platform("jit", image)
    assert (output_lines(out), code) == (EXPECTED, 0)


def test_io_breakpoints_natively_and_on_qemu(image):
    out, code = run_platform("jit", image, cmdline="io=1")
    assert (output_lines(out), code) == (["movss: start", *_IO], 0)
    if find_qemu() is None:
        pytest.skip("qemu-system-i386 is not installed")
    out, code = run_platform("qemu", image, cmdline="io=1")
    assert (output_lines(out), code) == (QEMU_IO, 0)


def _symbol(image, name: str) -> int:
    for line in subprocess.run(["nm", str(image)], capture_output=True, text=True,
                               check=True).stdout.splitlines():
        addr, _, sym = line.split()
        if sym == name:
            return int(addr, 16)
    raise KeyError(name)


def test_a_held_trap_survives_save_and_restore(image):
    """Saved between MOV SS and the instruction after it, the VM restores with the trap
    still held: the same lines as a run that was never saved."""
    out = bytearray()
    m = Machine(32, output=out.extend)
    m.boot_multiboot(read_image(image, max_bytes=m.mem.size), "", [], image_name=str(image))
    st = m.cpu.state
    start, after = _symbol(image, "movss_next"), _symbol(image, "movss_next_after")
    m.cpu.host.set_breakpoints([start])
    m.cpu.host_debug_changed()
    assert m.run(5_000_000).reason == "paused" and st.eip == start
    m.cpu.host.set_breakpoints([])
    m.cpu.host_debug_changed()
    for _ in range(3):                      # movl, xorl, movw (%edx),%ss
        m.stop = None
        m.run(1)
    assert (st.eip, st.interrupt_shadow, st.pending_db) == (after - 1, True, 1)
    saved = stream.pack_image(capture(m, None))
    rest = bytearray()
    m2, _, _ = restore(stream.read_sections(saved, "x"), None, "jit", rest.extend, "x")
    stop = m2.run(50_000_000)
    lines = output_lines((bytes(out) + bytes(rest)).decode("latin-1").replace("\r\n", "\n"))
    assert (lines, stop.status >> 1) == (EXPECTED, 0)


@pytest.mark.parametrize("mode", ["hvm", "trapemu"])
def test_under_a_monitor(image, mode):
    """hvm: in VMX non-root operation the processor holds them as natively (a VM exit in
    between keeps them in the VMCS's pending debug exceptions, SDM Vol. 3C §24.4.2).
    trapemu: the kernel's MOV SS runs on the processor, which holds them; an instruction
    after it that faults into the monitor (OUT, INT n and INT3 through DPL-0 gates) is
    given them as the processor would have (``GuestDebug.held_debug``).  Either way the
    REP INS/OUTS the monitor emulates stops after each iteration the I/O breakpoint
    matches.  (bt reports a MOV SS's data breakpoint at once: docs/virtualization.md.)"""
    from hwtests import monitor_output, run_monitor
    out, code = monitor_output(run_monitor(mode, image))
    assert (output_lines(out), code) == (EXPECTED, 0)


@pytest.mark.parametrize("mode", ["trapemu", "bt"])
def test_io_breakpoints_under_the_monitors(image, mode):
    """The monitors emulate the guest's REP INS/OUTS: with an I/O breakpoint on the port
    they stop after each iteration, as the processor does (natively, above)."""
    from hwtests import monitor_output
    from ringvisor.vmm.runner import run_vm
    r = run_vm(image, mode, "io=1", 32, b"", max_instructions=3_000_000, quiet=True)
    out, code = monitor_output(r)
    assert (output_lines(out), code) == (["movss: start", *_IO], 0)
