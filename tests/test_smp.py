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
    for bad in (["--smp", "9"], ["--smp", "0"], ["--smp", "2", "--mode", "paravirt"],
                ["--smp", "9", "--mode", "bt"],
                ["--smp", "2", "--mode", "bt", "--stop-at", "1000", "--save", str(tmp_path / "s")]):
        p = subprocess.run([sys.executable, "-m", "ringvisor", "run", img, *bad],
                           capture_output=True, text=True, timeout=60)
        assert p.returncode == 2 and p.stderr.count("\n") == 1, p.stderr
    assert not (tmp_path / "s").exists()


# -- under the monitors: N virtual processors multiplexed on the one physical (vmm/vcpus.py) --

def test_smp_guest_under_trapemu_cli():
    """trapemu --smp 2: the same lines as QEMU -smp 2 and the bare PC; --stats --json
    lists each virtual processor (docs/json.md)."""
    img = str(build_kernel("smp"))
    p = subprocess.run([sys.executable, "-m", "ringvisor", "run", img, "--smp", "2", "--mode",
                        "trapemu", "--stats", "--json"], capture_output=True, text=True,
                       timeout=600)
    assert output_lines(p.stdout.replace("\r\n", "\n")) == expected(2), p.stdout + p.stderr
    assert p.returncode == 1
    doc = json.loads(p.stderr)
    vcpus = doc["monitor"]["vcpus"]
    assert [c["apic_id"] for c in vcpus] == [0, 1] and all(c["started"] for c in vcpus)
    # the AP: its ten thousand locked increments, its traps (real mode, its APIC page,
    # CPUID), and the IPIs it took: the fixed, the broadcast and the logical ones
    assert vcpus[1]["instructions"] > 20000 and vcpus[1]["traps"] > 10
    assert vcpus[1]["interrupts"] >= 4
    assert doc["monitor"]["counters"]["vcpu switches"] > 0


def _monitor_run(mode: str, n: int, limit: int = EMULATOR_MAX_INSTRUCTIONS):
    from ringvisor.vmm.runner import run_vm
    return run_vm(build_kernel("smp"), mode, mem_mb=MEM_MB, max_instructions=limit, quiet=True,
                  cpus=n)


def test_smp_guest_under_bt_four():
    r = _monitor_run("bt", 4)
    assert output_lines(r.output.decode("latin-1").replace("\r\n", "\n")) == expected(4)
    vcpus = r.stats["monitor"]["vcpus"]
    assert [c["apic_id"] for c in vcpus] == [0, 1, 2, 3]
    assert all(c["started"] and c["instructions"] > 20000 and c["interrupts"] >= 3
               for c in vcpus[1:])
    assert vcpus[1]["interrupts"] >= 4                   # (the logical IPI to APIC 1 alone)


def test_monitor_interleaving_is_deterministic():
    """The same inputs, the same interleaving: every virtual processor retires the same
    instructions and takes the same traps and interrupts, twice."""
    results = [_monitor_run("trapemu", 3, 400_000) for _ in range(2)]
    runs = [r.stats["monitor"]["vcpus"] for r in results]
    assert runs[0] == runs[1]
    assert all(c["started"] for c in runs[0])
    # such a VM is not saved (refused with one line: the CLI's test above)
    from ringvisor.errors import ConfigError
    with pytest.raises(ConfigError, match="several virtual processors"):
        capture(results[0].machine, results[0].monitor, VmInfo(description="smp"))


# -- tests/hwguests/smptlb: one page directory, a #PF, an IPI and its own APIC timer on each
#    AP, a spinlock, a TLB shootdown, INIT and SIPI to a running AP (read on QEMU 7.2; SDM
#    Vol. 3 §4.10.5, §8.1.2.1, §10.5.4: a one-shot timer's current count stays 0 after it
#    fired; §8.4.1, §10.4.7.3: INIT leaves paging off and the APIC's SVR at 0xff) ---------

def expected_tlb(n: int) -> list[str]:
    return (["smptlb: start", f"cpus: {n}"] +
            [f"cpu {i}: paging=1 fault cr2={0x400000 + (i << 12):08x} faults=1 stored={i}42 "
             f"timer=1 left=0 hello=1 shootdown=1 before=a0a0 after=b0b0" for i in range(1, n)] +
            ["cpu 1 after INIT and SIPI: paging=0 svr=ff",
             f"bsp: before=a0a0 after=b0b0 count={3000 * n} of {3000 * n} timer=0",
             "smptlb: done"])


@pytest.mark.parametrize("platform,n", [pytest.param("qemu", 2, marks=pytest.mark.qemu),
                                        pytest.param("qemu", 4, marks=pytest.mark.qemu),
                                        ("jit", 4), ("trapemu", 2), ("bt", 3)])
def test_smptlb_guest(platform, n):
    """The shadow page tables are one for every virtual processor on the same CR3: an AP's
    page-table store in its #PF handler, the BSP's remap and each AP's INVLPG reach them all."""
    if platform in ("trapemu", "bt"):
        from ringvisor.vmm.runner import run_vm
        r = run_vm(build_kernel("smptlb"), platform, mem_mb=MEM_MB, quiet=True,
                   max_instructions=EMULATOR_MAX_INSTRUCTIONS, cpus=n)
        out, code = r.output.decode("latin-1").replace("\r\n", "\n"), r.status >> 1
        assert r.stop.reason == "exit", r.stop
        assert r.monitor.traps["#PF (page table written)"] >= n   # (each AP's store, the remap)
    else:
        out, code = run_platform(platform, build_kernel("smptlb"), smp=n)
    assert output_lines(out) == expected_tlb(n), out
    assert code == 0


def test_every_virtual_processor_halted_stops_the_run():
    """The BSP halts with IF clear and the AP never got a SIPI: nothing can wake either,
    and the run ends as a uniprocessor's does (natively: one processor halted so)."""
    from ringvisor.vmm.runner import run_vm
    r = run_vm(build_kernel("hang"), "trapemu", mem_mb=MEM_MB, quiet=True,
               max_instructions=EMULATOR_MAX_INSTRUCTIONS, cpus=2)
    assert r.stop.reason == "halted" and r.output == b"hang: start\r\n"
    assert r.stop.message == "every virtual processor halted with interrupts disabled (trapemu)"
    assert [c["started"] for c in r.stats["monitor"]["vcpus"]] == [True, False]


def test_init_to_the_bsp_stops_with_one_line():
    """An INIT IPI reaching the bootstrap processor (the monitors restart application
    processors only): the run stops at the next entry with one line."""
    from ringvisor.vmm.runner import create_vm
    m, mon = create_vm(read_image(build_kernel("smp")), "bt", mem_mb=MEM_MB, cpus=2)
    assert m.run(100_000).reason == "limit"
    bsp = mon.vcpus.contexts[0].vapic.apic
    bsp.receive(5, 0, False)                         # delivery mode INIT (SDM Table 10-1)
    m.stop = None
    stop = m.run(EMULATOR_MAX_INSTRUCTIONS)
    assert stop.reason == "unsupported" and stop.message.splitlines()[0] == (
        "stopped: bt: the guest sent an INIT IPI to the bootstrap processor (the monitors restart "
        "application processors only)")


def test_short_runs_interleave_as_one_long_run():
    """A machine run in many short runs (a debugger stepping, a hypervisor's slices) gives
    every processor its turn exactly as one long run does: the same instructions retired by
    each processor, the same interrupts, the same output.  (Each run used to start a new
    round with the BSP: in runs shorter than a quantum no AP ever ran.)"""
    def go(step):
        out = bytearray()
        m = Machine(MEM_MB, output=out.extend, cpus=3)
        m.boot_multiboot(read_image(build_kernel("smp")))
        for _ in range(EMULATOR_MAX_INSTRUCTIONS // step + 1):
            m.stop = None
            if m.run(step).reason != "limit":
                break
        # (blocks translated differ: a run's end cuts the block it stops in)
        cpus = [{k: v for k, v in c.items() if k != "blocks_translated"} for c in m.stats()["cpus"]]
        return m.stop.reason, cpus, bytes(out)
    whole = go(EMULATOR_MAX_INSTRUCTIONS)
    assert whole[0] == "exit" and b"smp: done" in whole[2]
    assert go(1000) == whole
    assert go(3001) == whole
