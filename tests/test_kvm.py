"""``--mode kvm``: the same guest images on the host's /dev/kvm, with ringvisor's devices.

The reference is the emulated PC itself: a guest prints the same under KVM as
natively (``[timing]`` lines aside: KVM's TSC is the host's), and stops the
same way.  What this host's KVM cannot run at all (``hw.kvm.limits``: a
software KVM such as kvm-pvm cannot page or deliver interrupts for a 32-bit
guest) is probed with two tiny guests, and the tests that need it skip with
that reason.  Every test skips, with one reason line, where /dev/kvm is absent
or unusable.
"""

from __future__ import annotations

import ctypes
import subprocess
import sys
from pathlib import Path

import pytest

from ringvisor.guests.build import image_path
from ringvisor.hw import kvm as K
from ringvisor.hw.machine import read_image, read_module, run_image

sys.path.insert(0, str(Path(__file__).parent))
UNUSABLE = K.unusable_reason()
pytestmark = pytest.mark.skipif(UNUSABLE is not None, reason=UNUSABLE or "")
WALL_LIMIT = 60.0


@pytest.fixture(scope="module")
def limits() -> dict[str, str]:
    return K.limits()


def run_kvm(image: Path, cmdline: str = "", modules=(), stdin: bytes = b""):
    """(output, status, machine) of a run under --mode kvm, as run_image reports them."""
    from ringvisor.vmm import create_vm
    out = bytearray()
    m, _ = create_vm(read_image(image), "kvm", cmdline, 32, image_name=str(image),
                     modules=[read_module(str(p)) for p in modules], output=out.extend)
    m.wall_limit = WALL_LIMIT
    if stdin:
        m.feed_input(stdin)
    stop = m.run()
    m.close()
    return bytes(out).decode("latin-1"), stop.status, m, stop


def untagged(text: str) -> list[str]:
    return [line for line in text.split("\n") if not line.startswith("[timing] ")]


def test_structures_match_linux_kvm_h():
    """Sizes and ioctl numbers as <linux/kvm.h> defines them for x86 (a mismatch would
    make every ioctl fail with ENOTTY or, worse, move the wrong bytes)."""
    sizes = {K.kvm_regs: 144, K.kvm_sregs: 312, K.kvm_sregs2: 320, K.kvm_fpu: 416, K.kvm_vcpu_events: 64,
             K.kvm_debugregs: 128, K.kvm_userspace_memory_region: 32, K.kvm_segment: 24,
             K.kvm_cpuid_entry2: 40, K.kvm_dirty_log: 16}
    for t, n in sizes.items():
        assert ctypes.sizeof(t) == n, t.__name__
    assert ctypes.sizeof(K.kvm_guest_debug) == 72 and ctypes.sizeof(K.kvm_debug_exit_arch) == 32
    assert K.KVM_SET_GUEST_DEBUG == 0x4048AE9B
    assert K.kvm_run.exit.offset == 32 and K.kvm_run.exit_reason.offset == 8
    assert (K.KVM_RUN, K.KVM_GET_SREGS, K.KVM_SET_USER_MEMORY_REGION, K.KVM_SET_CPUID2,
            K.KVM_GET_VCPU_EVENTS, K.KVM_INTERRUPT) == (
        0xAE80, 0x8138AE83, 0x4020AE46, 0x4008AE90, 0x8040AE9F, 0x4004AE86)


@pytest.mark.parametrize("name,iters", [("sieve", 2), ("crc32", 10), ("strings", 4)])
def test_bench_images_print_what_they_print_natively(name, iters):
    image = image_path(f"bench-{name}")
    native, nstatus = run_image(image, cmdline=f"iters={iters}", max_instructions=100_000_000)
    out, status, m, _ = run_kvm(image, f"iters={iters}")
    assert untagged(out) == untagged(native.decode("latin-1"))
    assert status == nstatus == 1                  # the guest wrote 0 to isa-debug-exit
    assert any(line.startswith(f"[timing] {name}:") for line in out.split("\n"))
    assert m.stats()["kvm_exits"]["io"] > 0


def test_handoff_is_the_emulated_pcs(limits):
    """The firmware hand-off under KVM is the emulated PC's (hw/boot/firmware.py): the
    handoff guest reads back registers, descriptor tables, the Multiboot information,
    BDA, CMOS, PIC and PIT and prints the same lines; then it takes interrupts, which
    must go the same way where this host's KVM can deliver them."""
    from hwtests import PC_KERNELS, build_kernel
    k = PC_KERNELS["handoff"]
    image = build_kernel("handoff")
    native, _ = run_image(image, cmdline=k.cmdline, modules=k.module_specs(),
                          max_instructions=50_000_000)
    native = native.decode("latin-1").split("\n")
    out, status, _, stop = run_kvm(image, k.cmdline, k.module_specs())
    lines = out.split("\n")
    first_irq = next(i for i, l in enumerate(native) if l.startswith("first interrupt"))
    assert lines[:first_irq] == native[:first_irq]
    assert any(l.startswith("eax=2badb002") for l in lines[:first_irq])
    if "interrupts" in limits:
        assert stop.reason in ("unsupported", "triple-fault")
        assert limits["interrupts"] in stop.message
        pytest.skip(limits["interrupts"])
    assert lines == native


CPU_WORKLOADS = "run=sieve:1,crc32:2,qsort:1,selftest"


def test_teaching_kernel_workloads(limits):
    if limits:
        pytest.skip("; ".join(limits.values()))
    image = image_path("kernel")
    native, nstatus = run_image(image, cmdline=CPU_WORKLOADS, max_instructions=200_000_000)
    out, status, m, _ = run_kvm(image, CPU_WORKLOADS)
    assert untagged(out) == untagged(native.decode("latin-1"))
    assert status == nstatus
    assert m.stats()["interrupts"] > 0              # the PIT's ticks went in by KVM_INTERRUPT


def test_what_the_host_cannot_run_stops_with_its_reason(limits):
    """A guest this host's KVM cannot run ends with a report naming the limit, never a hang."""
    if "paging" not in limits:
        pytest.skip("this host's KVM runs paged 32-bit guests")
    out, status, _, stop = run_kvm(image_path("kernel"), "run=hello")
    assert status == 3 and stop.reason == "triple-fault"
    assert "mov cr0,eax" in stop.message and limits["paging"] in stop.message


def test_state_goes_to_the_vcpu_and_back_unchanged():
    """cpu.state -> KVM_SET_REGS/SREGS/FPU/DEBUGREGS/VCPU_EVENTS/MSRS -> back: the same
    architectural state (the hand-off, with x87/SSE values and an interrupt shadow)."""
    from ringvisor.vmm import create_vm
    m, _ = create_vm(read_image(image_path("bench-sieve")), "kvm", "", 32)
    st = m.cpu.state
    st.fpu.fcw, st.fpu.mxcsr, st.fpu.xmm[3] = 0x027F, 0x1FA0, 0x0123456789ABCDEF0011223344556677
    st.fpu.st[0], st.fpu.ftw, st.fpu.top = 0x4000C90FDAA22168C235, 0x01, 0
    st.interrupt_shadow = True
    st.dr[0], st.dr[7] = 0x1234, 0x400
    st.msrs[0x174] = 0x08
    before = m.cpu.get_state()
    m._push_state()
    m._pull_state()
    after = m.cpu.get_state()
    m.close()
    # (the TSC goes on counting meanwhile; kvm-pvm even ignores a write to IA32_TSC, so
    # a guest's TSC there is always the host's)
    after.pop("tsc_offset"), before.pop("tsc_offset")
    assert after == before


def test_pae_pdptes_go_to_the_vcpu_and_back(limits):
    """CR4.PAE with CR0.PG travels in kvm_sregs, and the PDPTE registers in kvm_sregs2
    (KVM_CAP_SREGS2): the ones the CPU holds, not what the PDPT in memory says now
    (SDM Vol. 3A §4.4.1: an edited PDPT is seen only at the next load)."""
    from ringvisor.hw.state import CR0_PE, CR0_PG, CR4_PAE
    from ringvisor.vmm import create_vm
    if "paging" in limits:
        pytest.skip(limits["paging"])
    m, _ = create_vm(read_image(image_path("bench-sieve")), "kvm", "", 32)
    if not m.vcpu.vm.system.has(K.KVM_CAP_SREGS2):
        m.close()
        pytest.skip("this host's KVM has no KVM_CAP_SREGS2")
    st = m.cpu.state
    m.mem.write(0x9000, (0x0A001).to_bytes(8, "little") + bytes(24))   # PDPT: one PDPTE
    st.cr3, st.cr4, st.cr0 = 0x9000, CR4_PAE, st.cr0 | CR0_PE | CR0_PG
    st.pdpte = [0x0B001, 0, 0x0C001, 0]               # loaded before the PDPT was edited
    m._push_state()
    m._pull_state()
    pulled = list(m.cpu.state.pdpte)
    m.close()
    assert pulled == [0x0B001, 0, 0x0C001, 0]


def rv(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ringvisor", *args], capture_output=True,
                          timeout=120)


def test_cli_refuses_what_kvm_cannot_do():
    for extra in (["--max-instructions", "1000"], ["--stop-at", "5"], ["--trace", "/dev/null"]):
        p = rv("run", "--mode", "kvm", "bench-sieve", *extra)
        err = p.stderr.decode()
        assert p.returncode == 2 and len(err.strip().splitlines()) == 1, err
        assert "kvm" in err and "Traceback" not in err


def test_without_kvm_one_line_and_status_2(monkeypatch):
    from ringvisor.errors import ConfigError
    from ringvisor.vmm.kvm import KvmMachine
    monkeypatch.setattr(K, "KVM_PATH", "/nonexistent/kvm")
    with pytest.raises(ConfigError, match=r"--mode kvm: /nonexistent/kvm is absent"):
        KvmMachine(4)


def test_json_stats_validate():
    from test_json import validate
    p = rv("run", "--mode", "kvm", "bench-crc32", "--append", "iters=2", "--stats", "--json")
    doc = __import__("json").loads(p.stderr)
    validate(doc, "run-stats")
    assert doc["mode"] == "kvm" and doc["machine"]["instructions"] is None
    assert doc["machine"]["kvm_exits"]["io"] > 0 and doc["stop"]["status"] == 1


def test_a_saved_vm_moves_from_the_emulator_to_kvm(tmp_path):
    """Stopped and saved on the emulated CPU, resumed on KVM (restore --mode kvm): the
    two halves of the output are the whole native output."""
    saved = tmp_path / "crc.vm"
    whole = rv("run", "bench-crc32", "--append", "iters=60")
    first = rv("run", "bench-crc32", "--append", "iters=60", "--stop-at", "300000",
               "--save", str(saved))
    assert first.returncode == 0, first.stderr
    second = rv("restore", str(saved), "--mode", "kvm")
    assert second.returncode == whole.returncode == 1, second.stderr
    both = first.stdout.decode() + second.stdout.decode()
    assert first.stdout == b""       # the checksum comes at the end: half its work on each CPU
    assert untagged(both) == untagged(whole.stdout.decode())


def test_a_vm_run_on_kvm_resumes_on_the_emulator(tmp_path):
    """And back: paused on KVM partway (inside its printing loop, at the first byte of
    output, whatever the host's KVM speed: a wall-time limit raced a fast KVM), saved,
    resumed on the emulated CPU: the same output as one native run."""
    from ringvisor.hw.machine import Machine
    from ringvisor.lifecycle.vm import load_file, save_file
    image = image_path("bench-sieve")
    whole, _ = run_image(image, cmdline="iters=6", max_instructions=100_000_000)
    from ringvisor.vmm import create_vm
    out = bytearray()
    box = []

    def output(data):
        out.extend(data)
        if box:
            box.pop().pause("the first byte is out")

    m, _ = create_vm(read_image(image), "kvm", "iters=6", 32, image_name=str(image),
                     output=output)
    box.append(m)
    m.wall_limit = 60
    assert m.run().reason == "paused"
    assert len(out) == 1                   # the rest is the emulator's to print
    save_file(tmp_path / "sieve.vm", m)
    m.close()
    m2, mon, info = load_file(tmp_path / "sieve.vm", output=out.extend)
    assert type(m2) is Machine and mon is None and info.mode == "native"
    stop = m2.run(100_000_000)
    assert stop.reason == "exit" and stop.status == 1
    assert untagged(out.decode()) == untagged(whole.decode())


def test_restore_under_kvm_refuses_a_monitor_vm(tmp_path):
    saved = tmp_path / "bt.vm"
    p = rv("run", "kernel", "--mode", "bt", "--append", "run=hello", "--stop-at", "50000",
           "--save", str(saved))
    assert p.returncode == 0, p.stderr
    p = rv("restore", str(saved), "--mode", "kvm")
    err = p.stderr.decode()
    assert p.returncode == 2 and len(err.strip().splitlines()) == 1, err
    assert "resumes under its monitor" in err


def test_vmbench_kvm_column(limits):
    """vmbench's kvm column: where this host's KVM runs the kernel, an `in` is one IO exit
    per operation; where it cannot, the cell says why.  Adams & Agesen's hardware-VMM
    figures are beside their software-VMM ones."""
    import json
    p = rv("vmbench", "--mode", "kvm", "--workload", "in", "--scale", "0.05", "--repeat", "1",
           "--json")
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    from test_json import validate
    validate(doc, "vmbench")
    row = doc["workloads"][0]
    assert row["published"]["hardware_vmm"] == 15826 and row["published"]["native"] == 3209
    cell = row["results"]["kvm"]
    if limits:
        assert cell == {"ok": False, "why": next(iter(limits.values()))}
    else:
        assert cell["ok"] and cell["instructions"] is None and cell["cycles_ratio"] is None
        assert 1.0 <= cell["exits_per_op"] < 1.5


def test_vmbench_compares_hardware_with_binary_translation():
    p = rv("vmbench", "--mode", "bt", "--mode", "kvm", "--workload", "divzero", "--scale", "0.05",
           "--repeat", "1")
    out = p.stdout.decode()
    assert p.returncode == 0, p.stderr
    assert "Hardware assist against binary translation" in out
    assert "divzero  theirs: 3,223 / 1,014, hardware wins; ours: bt x" in out
    assert "hardware VMM 1,014" in out
