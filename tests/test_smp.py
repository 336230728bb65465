"""Several processors: QEMU's -smp N as a kernel finds it, and a deterministic interleaving.

``tests/hwguests/smp`` starts the application processors with INIT and SIPI through
a real-mode trampoline and exchanges IPIs with them; it prints the same lines on
``qemu-system-i386 -smp N`` and on ringvisor (read on QEMU 7.2; SDM Vol. 3 §8.4 for
the protocol, §10.6 for the IPIs).
"""

from __future__ import annotations

import functools
import json
import subprocess
import sys

import pytest

from hwtests import EMULATOR_MAX_INSTRUCTIONS, MEM_MB, build_kernel, output_lines, run_platform
from ringvisor.hw.machine import Machine, read_image
from ringvisor.lifecycle import stream
from ringvisor.lifecycle.vm import VmInfo, capture, restore


def expected(n: int) -> list[str]:
    lines = ["smp: start", f"fw_cfg cpus: {n}", f"madt enabled processors: {n}",
             f"online APs: {n - 1} counter: {10000 * (n - 1)}", f"APs through the trampoline: {n - 1}"]
    for i in range(1, n):
        lines.append(f"cpu {i}: apic id={i} cpuid id={i} svr at start=ff apic base=fee00800 ipi=1 "
                     f"reply=1 broadcast=1 logical=1 logical-one={int(i == 1)}")
    return lines + ["bsp: apic id=0 base=fee00900", "smp: done"]


@functools.lru_cache(maxsize=None)
def _run(platform: str, n: int) -> tuple[str, int]:
    return run_platform(platform, build_kernel("smp"), smp=n)


@pytest.mark.parametrize("n", [2, 4])
@pytest.mark.parametrize("platform", [pytest.param("qemu", marks=pytest.mark.qemu), "jit"])
def test_smp_guest(platform, n):
    out, code = _run(platform, n)
    assert output_lines(out) == expected(n), out
    assert code == 0


def _machine(n: int) -> Machine:
    m = Machine(MEM_MB, cpus=n)
    m.boot_multiboot(read_image(build_kernel("smp")))
    return m


def test_interleaving_is_deterministic_and_counted_per_cpu():
    """The same run twice: every processor retires the same instructions, takes the
    same interrupts; --stats lists each processor."""
    runs = []
    for _ in range(2):
        m = _machine(4)
        assert m.run(EMULATOR_MAX_INSTRUCTIONS).reason == "exit"
        runs.append(m.stats()["cpus"])
    assert runs[0] == runs[1]
    assert [c["apic_id"] for c in runs[0]] == [0, 1, 2, 3]
    assert all(c["started"] and c["instructions"] > 10000 and c["interrupts"] >= 3
               for c in runs[0][1:])


def test_application_processors_wait_for_sipi():
    """At power-on the APs are halted in wait-for-SIPI (SDM Vol. 3 §8.4.1); a SIPI starts
    one at vector << 12 in real mode; a second SIPI to a started AP is ignored; INIT puts
    it back (§8.4.3)."""
    m = Machine(2, cpus=3)
    ap = m.cpus[1]
    assert ap.state.halted and ap.apic.s.wait_for_sipi and ap.apic.read_msr(0x1B) == 0xFEE00800
    ap.startup(0x9A)
    st = ap.state
    assert not st.halted and st.segs[1].selector == 0x9A00 and st.segs[1].base == 0x9A000
    assert st.eip == 0 and not st.cr0 & 1
    st.eip = 0x123
    ap.startup(0x10)                                   # not waiting: ignored
    assert st.eip == 0x123
    ap.init()
    assert ap.state.halted and ap.apic.s.wait_for_sipi
    assert m.cpus[2].state.halted                      # the other AP never started


def test_save_and_restore_keep_every_processor(tmp_path):
    """A saved 2-processor machine restores with both, and goes on to the same output."""
    out = bytearray()
    m = Machine(MEM_MB, output=out.extend, cpus=2)
    m.boot_multiboot(read_image(build_kernel("smp")))
    m.run(600_000)
    image = stream.pack_image(capture(m, None, VmInfo(description="smp")))
    before = bytes(out)
    m.stop = None
    m.run(EMULATOR_MAX_INSTRUCTIONS)
    r, _, _ = restore(stream.read_sections(image, "x"), None, "jit", None, "x")
    assert len(r.cpus) == 2
    more = bytearray()
    r.output = more.extend
    r.uart.output = r._serial_out
    r.run(EMULATOR_MAX_INSTRUCTIONS)
    assert bytes(out) == before + bytes(more) and b"smp: done" in more


def test_cli_smp(tmp_path):
    img = str(build_kernel("smp"))
    p = subprocess.run([sys.executable, "-m", "ringvisor", "run", img, "--smp", "2", "--stats",
                        "--json"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 1 and "smp: done" in p.stdout
    doc = json.loads(p.stderr)
    assert [c["apic_id"] for c in doc["machine"]["cpus"]] == [0, 1]
    for bad in (["--smp", "9"], ["--smp", "0"], ["--smp", "2", "--mode", "bt"]):
        p = subprocess.run([sys.executable, "-m", "ringvisor", "run", img, *bad],
                           capture_output=True, text=True, timeout=60)
        assert p.returncode == 2 and p.stderr.count("\n") == 1, p.stderr
