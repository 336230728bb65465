"""The monitors: trap-and-emulate and binary translation, on the unmodified guest kernel.

The reference for every virtualized run is the same image on the bare
hardware (and that, in turn, is checked against QEMU in test_guest_kernel):
a monitor is right when the guest cannot tell -- or, for trap-and-emulate,
when it fails exactly where the chapter says it must.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ringvisor import probe_table
from ringvisor.guests import build as guest_build
from ringvisor.vmm import run_vm

LIMIT = 60_000_000


# the shipped images: test_guest_kernel checks they are what the sources build
@pytest.fixture(scope="module")
def kernel() -> Path:
    return guest_build.image_path("kernel")


@pytest.fixture(scope="module")
def probe() -> Path:
    return guest_build.image_path("probe")


def untagged(out: bytes) -> list[str]:
    return [l for l in out.decode("utf-8", "replace").splitlines() if not l.startswith("[timing]")]


_native_cache: dict = {}


def native(kernel: Path, cmdline: str):
    key = (str(kernel), cmdline)
    if key not in _native_cache:
        _native_cache[key] = run_vm(kernel, "native", cmdline, max_instructions=LIMIT, quiet=True)
    return _native_cache[key]


@pytest.mark.parametrize("cmdline", ["run=all-nano,all-lmbench iters=20", "run=all-cpu iters=3",
                                     "run=all-fault,hello"])
def test_bt_output_is_native(kernel, cmdline):
    ref = native(kernel, cmdline)
    r = run_vm(kernel, "bt", cmdline, max_instructions=LIMIT, quiet=True)
    assert untagged(r.output) == untagged(ref.output)
    assert r.status == ref.status
    s = r.stats["monitor"]
    # the kernel really ran as translations, with its sensitive instructions as callouts
    assert s["translations"] > 100 and s["callouts"]["popfd"] > 0 and s["callouts"]["iretd"] > 0


def test_bt_selftest_preempts(kernel):
    """Preemption needs virtual interrupts after popf re-enables them: bt gets it right."""
    ref = native(kernel, "run=selftest")
    r = run_vm(kernel, "bt", "run=selftest", max_instructions=LIMIT, quiet=True)
    assert "selftest: preemption of a spinning child ok" in untagged(r.output)
    assert untagged(r.output) == untagged(ref.output) and r.status == ref.status


def test_trapemu_runs_what_needs_no_popf(kernel):
    cmdline = "run=all-nano,all-lmbench iters=20"
    ref = native(kernel, cmdline)
    r = run_vm(kernel, "trapemu", cmdline, max_instructions=LIMIT, quiet=True)
    assert untagged(r.output) == untagged(ref.output) and r.status == ref.status
    s = r.stats["monitor"]
    assert s["traps"]["#GP (privileged)"] > 100 and s["emulated"]["cli"] > 0


def test_trapemu_popf_failure_stalls_preemption(kernel):
    """Popek-Goldberg, shown: popf at ring 1 silently keeps IF, so the virtual IF the
    monitor keeps stays clear after the kernel's irq_restore; timer interrupts stay
    pending and the spinning child is never preempted."""
    ref = untagged(native(kernel, "run=selftest").output)
    r = run_vm(kernel, "trapemu", "run=selftest", max_instructions=20_000_000, quiet=True)
    out = untagged(r.output)
    stall = ref.index("selftest: preemption of a spinning child ok")
    assert out == ref[:stall]
    assert r.stop.reason == "limit"
    assert r.monitor.vcpu.vif is False and r.monitor.platform.intr


def test_probe_table(probe):
    res = {}
    for mode in ("native", "trapemu", "bt"):
        r = run_vm(probe, mode, max_instructions=LIMIT, quiet=True)
        res[mode] = probe_table.parse(r.output.decode())
    nat, te, bt = res["native"], res["trapemu"], res["bt"]
    # binary translation hides the monitor from kernel code ...
    assert {k: v[0] for k, v in bt.items()} == {k: v[0] for k, v in nat.items()}
    # ... while trap-and-emulate shows it through every sensitive unprivileged instruction
    for name in ("SGDT", "SIDT", "STR", "PUSHF", "POPF", "IRET", "LAR", "LSL",
                 "PUSH_CS", "PUSH_SS", "MOV_CS", "MOV_SS"):
        assert te[name][0] != nat[name][0], name
    # ... but the CS in a handler's frame: the monitor pushes the guest's (RPL 0), so that
    # the handler's IRET to it traps (vmm/trapemu.py)
    assert te["INT"][0] == nat["INT"][0]
    # ... but SMSW: the real CR0's MSW bits are the guest's (PE, MP, EM, TS, ET, NE:
    # vmm/guestcr.py GUEST_CR0), so it reads what it reads natively
    assert te["SMSW"][0] == nat["SMSW"][0]
    # user code runs directly under both: the Red Pill sees the monitor's IDT
    for mode in (te, bt):
        assert mode["SIDT"][1] != nat["SIDT"][1] and mode["SIDT"][1].startswith("ffc1")
    # ring compression: no segment reaches the hypervisor region
    assert bt["LSL"][1].endswith("ffbfffff")
    assert "*" in probe_table.table(res)


def test_cli_mode_and_stats(kernel):
    p = subprocess.run([sys.executable, "-m", "ringvisor", "run", str(kernel), "--mode", "bt",
                        "--append", "run=syscall iters=5", "--stats"], capture_output=True,
                       timeout=300)
    assert p.returncode == 1, p.stderr
    assert b"syscall: iters=5" in p.stdout
    assert b"monitor: bt" in p.stderr and b"callouts:" in p.stderr and b"tc hit rate" in p.stderr


def test_cli_bad_mode():
    p = subprocess.run([sys.executable, "-m", "ringvisor", "run", "kernel", "--mode", "vmx"],
                       capture_output=True, timeout=60)
    assert p.returncode == 2 and b"Traceback" not in p.stderr
    assert len(p.stderr.strip().splitlines()) <= 3


def test_vmbench_bad_workload():
    p = subprocess.run([sys.executable, "-m", "ringvisor", "vmbench", "--workload", "nosuch"],
                       capture_output=True, timeout=60)
    assert p.returncode == 2 and b"unknown workload" in p.stderr and b"Traceback" not in p.stderr


def test_guest_page_tables_are_write_protected(kernel):
    """fork, exec, exit and context switches rewrite page tables while other address
    spaces' shadows are kept: the output stays native only if every such store is seen."""
    cmdline = "run=forkwait,ctxsw,ptemod,pagefault iters=6"
    ref = native(kernel, cmdline)
    for mode in ("trapemu", "bt"):
        r = run_vm(kernel, mode, cmdline, max_instructions=LIMIT, quiet=True)
        assert untagged(r.output) == untagged(ref.output), mode
        s = r.stats["monitor"]
        assert s["table_write_faults"] > 0 and s["traps"]["#PF (page table written)"] > 0
        # shadows survive CR3 loads: switching back finds the address space still shadowed
        assert s["shadow_root_hits"] > s["shadow_roots_made"] and s["shadow_flushes"] <= 1


def test_bt_adaptive_translation_of_page_table_stores(kernel):
    cmdline = "run=ptemod,forkwait iters=30"
    ref = native(kernel, cmdline)
    r = run_vm(kernel, "bt", cmdline, max_instructions=LIMIT, quiet=True)
    assert untagged(r.output) == untagged(ref.output)
    s = r.stats["monitor"]
    mon = r.monitor
    assert s["adaptive retranslations"] > 0 and mon.adaptive
    # the stores now run as callouts, seen by the monitor without a trap
    assert s["table_writes_seen"] > 0
    # a PTE store traps only until it is retranslated (once more per other unit
    # that holds a copy of it); rep stos (memset) is never a callout and traps on
    hot = {site: c for site, c in mon.adaptive.items() if c[0] >= 10}
    assert hot
    for site, (stores, to_tables) in hot.items():
        assert mon.table_write_traps[site] <= 4 and to_tables == stores
