"""Clones and lazy restore: memory mapped from an image, shared copy-on-write.

The sharing is measured by the host kernel (``/proc/self/smaps`` of each
clone's mapping), not by our own bookkeeping, and compared with the pages the
machine's write path logged (``Machine.log_dirty``): a clone owns a private copy
of exactly the pages it wrote, and shares the rest.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ringvisor.cli import main
from ringvisor.guests.build import image_path
from ringvisor.hw.machine import read_image
from ringvisor.lifecycle.mapped import sharing
from ringvisor.lifecycle.stream import BadImage
from ringvisor.lifecycle.vm import VmInfo, clone, load_file, save_file
from ringvisor.vmm import attach_monitor, create_vm

CMDLINE = "run=syscall,forkwait iters=3"
STOP = 120_000


def booted(mode="native", cmdline=CMDLINE, output=None):
    m, mon = create_vm(read_image(image_path("kernel-pv" if mode == "paravirt" else "kernel")),
                       mode, cmdline, 32, output=output)
    assert m.run(STOP).reason == "limit"
    m.stop = None
    return m, mon


def test_clones_of_a_running_vm_share_unwritten_pages():
    m, mon = booted("native", "")            # the shell: it waits for input
    before = bytes(m.mem.ram)
    copies = clone(m, mon, VmInfo(), 2, attach_monitor, outputs=[bytearray().extend] * 2)
    (a, _, _), (b, _, _) = copies
    assert sharing(a.mem.ram) == {"resident": 0, "copied": 0, "shared": 0}   # nothing loaded yet
    outs = []
    for c, script in ((a, b"hello\nexit 3\n"), (b, b"sieve 1\nuptime\nexit 4\n")):
        out = bytearray()
        c.output = out.extend
        c.log_dirty()                          # the pages the clone writes, from its write path
        c.feed_input(script)
        stop = c.run(30_000_000)
        outs.append(bytes(out))
        written = c.stop_dirty_log()
        seen = sharing(c.mem.ram)
        # the host copied exactly the pages the clone wrote; every other page it touched
        # is the image's, not a copy
        assert seen["copied"] == len(written), (seen, len(written))
        assert 0 < seen["copied"] < seen["resident"] < (32 << 20) // 4096
        c.status = stop.status
    assert (a.status, b.status) == (7, 9)      # exit 3, exit 4: the copies ran apart ...
    assert b"hello" in outs[0] and b"sieve" in outs[1] and b"sieve" not in outs[0]
    # ... and the pages both read and neither wrote are one page of host memory
    assert sharing(a.mem.ram)["shared"] > 0 and sharing(b.mem.ram)["shared"] > 0
    assert bytes(m.mem.ram) == before          # the original is untouched by its clones
    assert m.run(1000).reason == "limit"       # and runs on, on its own memory


@pytest.mark.parametrize("mode", ["native", "paravirt"])
def test_mapped_image_restores_lazily_and_runs_on(tmp_path, mode):
    out = bytearray()
    m, mon = booted(mode, output=out.extend)
    path = tmp_path / "vm.rv"
    size = save_file(path, m, mon, VmInfo(), mapped=True)
    assert size == path.stat().st_size > m.mem.size
    assert path.stat().st_blocks * 512 < 1 << 20         # zero pages are holes of the file
    at = len(out)
    assert m.run().reason == "exit"
    whole = bytes(out)
    for verify in ((True, False) if mode == "native" else (False,)):
        rest = bytearray()
        m2, _, info = load_file(path, attach_monitor, "interp" if verify else "jit", rest.extend,
                                verify)
        assert info.icount == STOP and info.mode == mode
        assert sharing(m2.mem.ram)["copied"] <= 1      # (paravirt: the shared-info page)
        assert m2.run().reason == "exit"
        assert whole[:at] + bytes(rest) == whole


def test_mapped_image_errors(tmp_path):
    m, _ = booted()
    path = tmp_path / "vm.rv"
    save_file(path, m, None, VmInfo(), mapped=True)
    data = path.read_bytes()
    cut = tmp_path / "cut.rv"
    cut.write_bytes(data[:len(data) - (8 << 20)])
    with pytest.raises(BadImage, match="truncated"):
        load_file(cut)
    page = next(i for i in range(0x100, 0x2000) if data[len(data) - m.mem.size + i * 4096:][:4096]
                != bytes(4096))
    bad = bytearray(data)
    bad[len(data) - m.mem.size + page * 4096 + 7] ^= 0x40
    (tmp_path / "bad.rv").write_bytes(bad)
    with pytest.raises(BadImage, match=f"page {page:#x} .*checksum mismatch"):
        load_file(tmp_path / "bad.rv")
    load_file(tmp_path / "bad.rv", verify=False)       # --lazy: Firecracker's trade


def test_clone_cli(tmp_path, capsys):
    rv = [sys.executable, "-m", "ringvisor"]
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))

    def run(*args, status=0):
        p = subprocess.run(rv + list(args), capture_output=True, cwd=tmp_path, env=env, timeout=120)
        assert p.returncode == status, p.stderr
        return p
    first = run("run", "kernel", "--append", CMDLINE, "--stop-at", str(STOP), "--snapshot", "s",
                "--store", "st", "--save", "s.rv")
    run("clone", "s", "base.rv", "--snapshot", "--store", "st")
    assert "cloned s.rv to again.rv" in run("clone", "s.rv", "again.rv").stdout.decode()
    assert (tmp_path / "again.rv").read_bytes() == (tmp_path / "base.rv").read_bytes()
    # several clones of one base, at once, each its own VM
    procs = [subprocess.Popen(rv + ["restore", "base.rv"] + (["--lazy"] if k else []),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path, env=env)
             for k in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [1, 1]      # the guest's halt(0)
    whole = run("run", "kernel", "--append", CMDLINE, status=1).stdout
    for o, _ in outs:
        assert first.stdout + o == whole
    assert main(["clone", str(tmp_path / "nosuch.rv"), str(tmp_path / "x.rv")]) == 2
    assert main(["run", "kernel", "--mapped"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 2 and "no such image" in err and "needs --save" in err
