"""The snapshot tree: create, list, revert and branch, current, delete, diff, export, import;
pages stored once by content."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ringvisor.guests.build import image_path
from ringvisor.hw.machine import read_image
from ringvisor.lifecycle import stream
from ringvisor.lifecycle.snapshots import SnapshotTree
from ringvisor.lifecycle.vm import VmInfo, load_file
from ringvisor.ui.web import snapshot_rows
from ringvisor.vmm import attach_monitor, create_vm

CMDLINE = "run=syscall,forkwait iters=12"


@pytest.fixture(scope="module")
def reference() -> bytes:
    out = bytearray()
    m, _ = create_vm(read_image(image_path("kernel")), "native", CMDLINE, 32, output=out.extend)
    assert m.run().reason == "exit"
    return bytes(out)


def run_to(m, n):
    m.stop = None
    stop = m.run(n - m.cpu.state.icount)
    assert stop.reason == "limit", stop
    m.stop = None


def test_tree_revert_branch_diff_export_delete(tmp_path, reference):
    tree = SnapshotTree(tmp_path / "store")
    out = bytearray()
    m, mon = create_vm(read_image(image_path("kernel")), "native", CMDLINE, 32, output=out.extend)
    run_to(m, 300_000)
    tree.create("boot", m, mon, VmInfo(cmdline=CMDLINE), "after boot")
    at_boot = len(out)
    before_pages = len(tree.pages.index)
    tree.create("boot-again", m, mon, VmInfo(), "the same state", parent=None)
    assert len(tree.pages.index) == before_pages          # nothing new: pages shared by content
    tree.delete("boot-again")
    assert tree.current is None          # the deleted node's parent (it had none)
    tree.set_current("boot")
    run_to(m, 700_000)
    tree.create("a", m, mon, VmInfo(), "branch a")
    assert tree.nodes["a"].parent == "boot" and tree.current == "a"

    # revert to boot and run another branch from it, under the other engine
    out2 = bytearray()
    m2, mon2, info = tree.revert("boot", attach_monitor, "interp", out2.extend)
    assert tree.current == "boot" and info.cmdline == CMDLINE
    run_to(m2, 500_000)
    tree.create("b", m2, mon2, VmInfo(), "branch b")
    assert tree.nodes["b"].parent == "boot"
    assert tree.tree_lines() == [
        "boot  [native, instruction 300,000]  after boot",
        "├─ a  [native, instruction 700,000]  branch a",
        "└─ b *  [native, instruction 500,000]  branch b",
    ]
    tree.set_current("a")
    assert SnapshotTree(tmp_path / "store").current == "a"          # kept on disk

    d = tree.diff("boot", "a")
    assert d["icount"] == (300_000, 700_000)
    assert d["pages"]                                                # the kernel wrote memory
    cpu = dict((p, (x, y)) for p, x, y in d["components"]["cpu"])
    assert cpu["icount"] == (300_000, 700_000) and "eip" in cpu
    assert not tree.diff("a", "a")["pages"] and not tree.diff("a", "a")["components"]

    # an exported node is a standalone image; it runs on as the uninterrupted run does
    size = tree.export("b", tmp_path / "b.rv")
    assert size == (tmp_path / "b.rv").stat().st_size
    rest = bytearray()
    m3, _, _ = load_file(tmp_path / "b.rv", attach_monitor, "jit", rest.extend)
    assert m3.run().reason == "exit"
    assert bytes(out2[:0]) + reference[:at_boot] + bytes(out2) + bytes(rest) == reference
    tree.import_image(tmp_path / "b.rv", "b-copy", parent="a")
    assert tree.nodes["b-copy"].parent == "a" and tree.diff("b", "b-copy")["pages"] == []

    # deleting boot re-parents its children; pages only it held are dropped
    freed = tree.delete("boot")
    assert {n: tree.nodes[n].parent for n in tree.nodes} == {"a": None, "b": None, "b-copy": "a"}
    assert freed >= 0
    m4, _, _ = tree.revert("a", attach_monitor)            # still whole after compaction
    # the live view's rows (--web): parents first, depth by indentation, the current marked
    rows = snapshot_rows(str(tmp_path / "store"))
    assert [(r["name"], r["parent"], r["current"]) for r in rows] == [
        ("a", "", "yes"), ("  b-copy", "a", ""), ("b", "", "")]
    assert rows[0]["instructions"] == 700_000 and rows[2]["description"] == "branch b"
    assert m4.cpu.state.icount == 700_000
    with pytest.raises(Exception, match="no snapshot named"):
        tree.revert("boot", attach_monitor)
    with pytest.raises(Exception, match="exists already"):
        tree.create("a", m4)
    with pytest.raises(Exception, match="bad snapshot name"):
        tree.create("../x", m4)


def test_snapshot_cli(tmp_path):
    store = str(tmp_path / "s")
    rv = [sys.executable, "-m", "ringvisor"]

    def run(*args, status=0):
        p = subprocess.run(rv + list(args), capture_output=True, text=True, timeout=120)
        assert p.returncode == status, p.stderr
        return p
    cmd = "run=syscall,forkwait iters=3"
    first = run("run", "kernel", "--append", cmd, "--stop-at", "120000",
                "--snapshot", "s1", "--description", "first", "--store", store)
    assert "snapshot s1 at instruction 120,000" in first.stderr
    second = run("snapshot-revert", "s1", "--stop-at", "180000", "--snapshot", "s2", "--store", store)
    assert "child of s1" in second.stderr
    listing = run("snapshot-list", "--store", store).stdout.splitlines()
    assert listing[0].startswith("s1  [native, instruction 120,000]  first")
    assert listing[1].startswith("└─ s2 *")
    diff = run("snapshot-diff", "s1", "s2", "--store", store).stdout
    assert "pages:" in diff and "icount: 0x1d4c0 -> 0x2bf20" in diff
    finish = run("snapshot-revert", "s2", "--store", store, status=1)   # the guest's halt(0)
    whole = run("run", "kernel", "--append", cmd, status=1)
    assert first.stdout + second.stdout + finish.stdout == whole.stdout
    bad = run("snapshot-revert", "nosuch", "--store", store, status=2)
    assert "no snapshot named 'nosuch'" in bad.stderr
    assert bad.stderr.count("\n") == 1


@pytest.mark.parametrize("mode", ["native", "paravirt", "hvm"])
def test_loadvm_puts_the_running_vm_back_in_place(mode, tmp_path):
    """The monitor prompt's loadvm: the VM that runs is given a node's state -- the same
    memory, CPU, devices and monitor as when savevm took it -- and runs on from there as it
    did then (the same input, the same output)."""
    from ringvisor.hw.machine import Machine
    from ringvisor.lifecycle.vm import capture
    from ringvisor.ui.hmp import execute
    from ringvisor.ui.session import Session
    out = bytearray()
    m, mon = create_vm(read_image(image_path("kernel-pv" if mode == "paravirt" else "kernel")),
                       mode, "", 32, output=out.extend)
    s = Session(m, mon)
    hmp = lambda line: execute(line, s.view, s)           # noqa: E731 -- the monitor prompt
    s.store = str(tmp_path / "tree")
    m.run(400_000)
    m.stop = None
    assert "snapshot a at instruction 400,000" in hmp("savevm a before the sieve")
    at = capture(m, mon)
    # (hvm, the slowest structure here, runs a shorter command)
    command, budget = (b"uptime\n", 300_000) if mode == "hvm" else (b"sieve 1\n", 2_000_000)

    def run_command() -> tuple[bytes, int]:
        """Type the command and run until the shell's next prompt (the budget bounds
        it): the output and the instructions it took.  (Running out the budget instead
        spent ~90% of the CPU on the idle shell, which prints nothing.)"""
        start, mark = m.cpu.state.icount, len(out)
        m.feed_input(command)
        while m.cpu.state.icount - start < budget and not out[mark:].endswith(b"$ "):
            m.stop = None
            m.run(10_000)
        m.stop = None
        return bytes(out[mark:]), m.cpu.state.icount - start
    first, took = run_command()
    assert first.endswith(b"$ "), first
    assert (b"uptime: " if mode == "hvm" else b"sieve: iters=1") in first, first
    m.input_log = object()                         # a run being recorded: refused
    assert hmp("loadvm a").startswith("loadvm: not while the run is recorded")
    m.input_log = None
    reply = hmp("loadvm a")
    assert reply == "the VM is at snapshot a (instruction 400,000) and runs on\n"
    assert capture(m, mon) == at
    assert run_command() == (first, took)
    assert hmp("loadvm nosuch").startswith("loadvm: ") and hmp("loadvm") == "loadvm NAME\n"
    SnapshotTree(s.store).create("bare", Machine(4), None, VmInfo())
    expect = ("has 4 MiB of memory; this VM has" if mode == "native" else
              f"is a VM under native; this one runs under {mode}")
    assert expect in hmp("loadvm bare")
    assert capture(m, mon) != at                   # (refused: nothing was touched)
