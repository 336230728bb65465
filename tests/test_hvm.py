"""The HVM monitor (--mode hvm): the unmodified kernel at ring 0 in VMX non-root operation.

The reference for every run is the same image on the bare hardware (checked
against QEMU by test_guest_kernel, test_hw_guests and test_foreign): hardware
assistance is right when the guest cannot tell, and the probe table shows every
sensitive instruction with its native value -- the gap Popek and Goldberg's
theorem finds in x86, closed by the processor.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from foreign import build_kernel as build_foreign, run as run_foreign
from hwtests import KERNELS, PC_KERNELS, build_kernel as build_hw
from ringvisor import probe_table
from ringvisor.guests.build import image_path
from ringvisor.vmm import run_vm

LIMIT = 60_000_000


def untagged(out: bytes) -> list[str]:
    return [l for l in out.decode("utf-8", "replace").splitlines() if not l.startswith("[timing]")]


_native: dict = {}


def both(image, cmdline: str = "", stdin: bytes = b"", ept: bool = True):
    # the bare machine's run, once per guest for the module (the EPT and the shadow-paging
    # tests of a guest compare with the same one)
    key = (str(image), cmdline, stdin)
    if key not in _native:
        _native[key] = run_vm(image, "native", cmdline, stdin=stdin, max_instructions=LIMIT,
                              quiet=True)
    h = run_vm(image, "hvm", cmdline, stdin=stdin, max_instructions=LIMIT, quiet=True, ept=ept)
    return _native[key], h


@pytest.mark.parametrize("ept", [True, False], ids=["ept", "shadow"])
def test_teaching_kernel_output_is_native(ept):
    n, h = both(image_path("kernel"), "run=all-nano,all-lmbench,all-fault,hello iters=2", ept=ept)
    assert untagged(h.output) == untagged(n.output)
    assert h.status == n.status
    s = h.stats["monitor"]
    # the kernel ran in non-root operation: its port I/O and the timer's interrupts came
    # to the monitor as VM exits, and a CR0 write turned paging on
    for reason in ("CR access", "I/O instruction", "external interrupt"):
        assert s["exits"][reason] > 0, reason
    assert s["interrupts injected"] > 0
    if ept:
        # EPT: the guest's page faults, CR3 loads and INVLPGs never leave it; guest RAM is
        # mapped on EPT violations, one per 2 MiB region touched
        assert s["paging"] == "EPT"
        assert not {"exception or NMI", "INVLPG"} & set(s["exits"]), s["exits"]
        assert s["exits"]["CR access"] < 10 and "cr3 writes" in s     # (before paging: identity map)
        assert 0 < s["exits"]["EPT violation"] == s["EPT regions mapped"] <= 16
    else:
        # shadow paging: page faults (the shadow filled), CR3 loads and INVLPGs exit
        for reason in ("exception or NMI", "INVLPG"):
            assert s["exits"][reason] > 0, reason
        assert s["#PF (shadow)"] > 0 and "EPT violation" not in s["exits"]


def test_probe_table_is_native():
    """Every sensitive instruction, in the kernel and in user mode, as on the bare machine."""
    n, h = both(image_path("probe"))
    nat, hvm = (probe_table.parse(r.output.decode()) for r in (n, h))
    assert nat and hvm == nat


@pytest.mark.parametrize("name", ["privilege", "faults", "paging", "sysinsn", "cpufeat", "smap", "tfstep"])
def test_conformance_guest_is_native(name):
    k = KERNELS.get(name) or PC_KERNELS[name]
    n, h = both(build_hw(name), k.cmdline, k.stdin)
    assert h.output == n.output and h.status == n.status


@pytest.mark.parametrize("name", ["segs", "jos"])
def test_foreign_kernel_is_native(name):
    image = build_foreign(name)
    assert run_foreign("hvm", image) == run_foreign("jit", image)


def test_paging_guest_is_native_on_shadow_page_tables():
    """The conformance guest that remaps, write-protects and INVLPGs its own tables, on the
    first generation of VT-x (--no-ept) as well."""
    k = KERNELS["paging"]
    n, h = both(build_hw("paging"), k.cmdline, k.stdin, ept=False)
    assert h.output == n.output and h.status == n.status


def test_cli_stats_count_exits_by_reason():
    r = subprocess.run([sys.executable, "-m", "ringvisor", "run", str(image_path("kernel")),
                        "--mode", "hvm", "--append", "run=hello", "--stats"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 1, r.stderr
    assert "monitor: hvm" in r.stderr and "exits: I/O instruction " in r.stderr, r.stderr
    assert "EPT violation " in r.stderr and "paging: EPT" in r.stderr, r.stderr


def test_cli_no_ept_is_for_hvm_only():
    r = subprocess.run([sys.executable, "-m", "ringvisor", "run", "kernel", "--mode", "bt",
                        "--no-ept"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "--no-ept" in r.stderr




def ringvisor(*args, status: int = 1) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", "ringvisor", *args], capture_output=True, timeout=300)
    assert r.returncode == status and b"Traceback" not in r.stderr, r.stderr.decode()
    return r


def test_cli_save_restore_snapshot_and_replay_are_one_uninterrupted_run(tmp_path):
    """run --stop-at N --save FILE, then restore FILE (under the other engine); the same
    through the snapshot tree: what the two halves print is one uninterrupted run's, which
    was recorded (--record) and replays as it ran."""
    kernel, store = str(image_path("kernel")), str(tmp_path / "store")
    run = ("run", kernel, "--mode", "hvm", "--append", "run=hello")
    whole = ringvisor(*run, "--record", str(tmp_path / "r.rec"), "--checkpoint-every", "100000").stdout
    again = ringvisor("replay", str(tmp_path / "r.rec"))
    assert again.stdout == whole and b"the output is the recording's" in again.stderr
    first = ringvisor(*run, "--stop-at", "120000", "--save", str(tmp_path / "vm.rv"), status=0)
    assert b"saved the VM at instruction 120,000" in first.stderr
    rest = ringvisor("restore", str(tmp_path / "vm.rv"), "--engine", "interp")
    assert first.stdout + rest.stdout == whole
    first = ringvisor(*run, "--stop-at", "150000", "--snapshot", "s", "--store", store, status=0)
    assert b"snapshot s at instruction 150,000" in first.stderr, first.stderr
    rest = ringvisor("snapshot-revert", "s", "--store", store)
    assert first.stdout + rest.stdout == whole

def test_monitor_prompt_under_hvm(tmp_path):
    """Ctrl-A c under hvm: the guest's registers and code (held by -S at its entry, paging
    off), and savevm: the VM as it stands, held, into the snapshot tree."""
    keys = b"\x01cinfo registers\nx/2i $eip\nsavevm held\ninfo status\nquit\n"
    r = subprocess.run([sys.executable, "-m", "ringvisor", "run", "kernel", "--mode", "hvm",
                        "--serial", "mon:stdio", "-S", "--store", str(tmp_path / "store")],
                       input=keys, capture_output=True, timeout=120)
    out = r.stdout.decode()
    assert r.returncode == 0 and b"Traceback" not in r.stderr, r.stderr.decode()
    regs = out.split("guest registers (hvm):")[1]
    assert "EIP=0010000c" in regs and "CS =0008" in regs and "CR0=00000011" in regs, regs
    assert "0010000c:  fc               cld" in regs                  # x/2i $eip
    assert "snapshot held at instruction 0 in " in out
    assert "VM status: paused (-S: before the first instruction)" in out
    assert (tmp_path / "store" / "nodes" / "held.rv").exists()


def test_bench_image_is_native():
    n, h = both(image_path("bench-sieve"))
    assert h.output == n.output and h.status == n.status and h.stop.reason == "exit"


def test_saved_inside_a_one_store_window():
    """(Shadow paging.) A store to a page the shadow keeps read-only is let through once: the monitor opens
    the page and arms the monitor-trap flag (hvmexits.page_fault).  A VM saved inside that
    window -- the page open, MTF armed -- restores and runs on as one uninterrupted run
    (the remap guest makes such stores)."""
    from ringvisor.hw.machine import read_image
    from ringvisor.lifecycle import stream
    from ringvisor.lifecycle.vm import VmInfo, capture, restore
    from ringvisor.vmm import attach_monitor, create_vm
    image = read_image(build_hw("remap"))
    out = bytearray()
    m, mon = create_vm(image, "hvm", "", 32, output=out.extend, ept=False)
    windows = []
    regions = m.cpu.native.regions
    for i, (start, end, handler, name) in enumerate(regions):
        if handler == mon.exit:
            def on_exit(cpu, handler=handler):
                handler(cpu)
                if mon.step_page is not None:
                    windows.append(cpu.state.icount)
            regions[i] = (start, end, on_exit, name)
    m.cpu.cache.flush()
    end = m.run(LIMIT)
    assert end.reason == "exit" and windows, windows
    whole = bytes(out)
    for n in (windows[0], windows[-1]):
        out = bytearray()
        m, mon = create_vm(image, "hvm", "", 32, output=out.extend, ept=False)
        assert m.run(n).reason == "limit" and m.cpu.state.icount == n
        assert mon.step_page is not None and m.cpu.vmx.mtf and m.cpu.nonroot
        data = stream.pack_image(capture(m, mon, VmInfo()))
        rest = bytearray()
        m2, mon2, _ = restore(stream.read_sections(data), attach_monitor, "jit", rest.extend)
        assert mon2.step_page == mon.step_page
        assert m2.run(LIMIT) == end
        assert whole[:len(out)] + bytes(rest) == whole, f"restored at {n}"


# the nmiwait guest (tests/hwguests/nmiwait): two NMIs from the machine's NMI input, the
# second raised while the handler of the first runs.  Vol. 3 §6.7: IF does not mask NMIs
# (IF 0 in both frames: the guest waits with interrupts disabled); §6.7.1: NMIs are
# blocked from the delivery of one to the next IRET, so the second is taken only after
# the first handler returned
NMI_EXPECTED = ["waiting", "nmi handler", "nmis 2; in the first handler 1; if in frames 0 0",
                "done"]


@pytest.mark.parametrize("mode,ept", [("native", None), ("hvm", True), ("hvm", False)],
                         ids=["native", "hvm-ept", "hvm-shadow"])
def test_nmis_reach_the_guest_blocked_until_its_iret(mode, ept):
    """Under hvm an NMI exits (NMI exiting) and the monitor injects it as a virtual NMI
    (virtual NMIs): the guest's IRET ends virtual-NMI blocking, and the second NMI, held
    by the monitor until then, waits in an NMI-window exit (SDM Vol. 3C §24.6.1, §25.3)."""
    from hwtests import output_lines
    from ringvisor.hw.machine import read_image
    from ringvisor.vmm import create_vm
    out = bytearray()
    m, mon = create_vm(read_image(build_hw("nmiwait")), mode, "", 32, "jit", output=out.extend,
                       **({} if ept is None else {"ept": ept}))

    def run_until(text: bytes) -> None:            # (paused on the guest's output)
        while text not in out:
            assert m.run(5000).reason == "limit", bytes(out)
            m.stop = None

    run_until(b"waiting")
    m.cpu.raise_nmi()
    run_until(b"nmi handler")
    m.cpu.raise_nmi()
    assert m.run(LIMIT).reason == "exit"
    assert output_lines(out.decode("latin-1").replace("\r\n", "\n")) == NMI_EXPECTED
    if mode == "hvm":
        assert (mon.stats["NMIs"], mon.stats["NMIs injected"], mon.exits["NMI window"]) == (2, 2, 1)
