"""Record and replay: host input logged against virtual time and played back exactly, and
time travel to an instruction from the nearest checkpoint.

The host here is deliberately erratic: a seeded generator decides at each poll
whether the next piece of input has arrived and whether a wait of the halted
machine ends on input (as a wall clock would) -- so two recordings of the same
script differ, and only the log can make a run repeat."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from ringvisor.guests.build import image_path
from ringvisor.hw.chardev import Chardev
from ringvisor.hw.machine import read_image
from ringvisor.lifecycle import stream
from ringvisor.lifecycle.replay import WAIT, Recording, record, replay
from ringvisor.lifecycle.vm import VmInfo, capture
from ringvisor.vmm import attach_monitor, create_vm

SCRIPT = [b"hel", b"lo\n", b"sieve 1\n", b"upt", b"ime\n", b"exit 5\n"]


class ErraticLine(Chardev):
    """A serial backend whose timing is chance: what a terminal or a pipe looks like.  Its
    descriptor is always readable, and it offers it to the machine's wait with a chance
    (a wait that ends on input) while any of the script is left."""

    def __init__(self, seed: int, out: bytearray) -> None:
        self.rng = random.Random(seed)
        self.chunks = list(SCRIPT)
        self.out = out
        self.rfd, self.wfd = os.pipe()
        os.write(self.wfd, b"x")

    @property
    def eof(self) -> bool:
        return not self.chunks

    def fileno(self) -> int | None:
        return self.rfd if self.chunks and self.rng.random() < 0.4 else None

    def read(self) -> bytes:
        if self.chunks and self.rng.random() < 0.3:
            return self.chunks.pop(0)
        return b""

    def write(self, data: bytes) -> None:
        self.out.extend(data)

    def close(self) -> None:
        os.close(self.rfd)
        os.close(self.wfd)


def recorded(mode: str, seed: int, tmp_path: Path, interval: int = 100_000):
    out = bytearray()
    m, mon = create_vm(read_image(image_path("kernel-pv" if mode == "paravirt" else "kernel")),
                       mode, "", 32)
    m.clock.pacing = True             # waits while halted may end early, on input ...
    m.clock.pace = lambda: None       # ... but the test does not sleep
    line = ErraticLine(seed, out)
    m.connect_serial(0, line)
    path = tmp_path / f"{mode}-{seed}.rec"
    try:
        stop, rec, size = record(m, mon, VmInfo(), 40_000_000, interval, True, path)
    finally:
        line.close()
    assert (stop.reason, stop.status) == ("exit", 11) and size == path.stat().st_size
    return bytes(out), rec, path, m


# seeds whose host timing has input arrive during a wait (which seeds do depends on the
# guest image's code: seed 2 stopped doing so for kernel-pv when blkfront joined it)
@pytest.mark.parametrize("mode,seed", [("native", 2), ("paravirt", 4)])
def test_replay_repeats_an_erratic_run(mode, seed, tmp_path):
    out, rec, path, m = recorded(mode, seed, tmp_path)
    assert any(e.call == WAIT for e in rec.events)        # input arrived during a wait
    assert len(rec.checkpoints) > 3
    other = recorded(mode, seed + 1, tmp_path)[3]
    assert other.cpu.state.icount != m.cpu.state.icount   # the host's timing shows
    got = bytearray()
    m2, _, _, stop, n0, outputs = replay(Recording.load(path), attach_monitor, "jit",
                                                  got.extend)
    assert bytes(got) == out and (stop.reason, stop.status) == ("exit", 11)
    assert m2.cpu.state.icount == m.cpu.state.icount == rec.end["icount"]
    assert outputs == rec.end["outputs"] and outputs[0][0] == len(out)
    assert m2.cpu.get_state() == m.cpu.get_state() and bytes(m2.mem.ram) == bytes(m.mem.ram)
    if mode == "native":
        # time travel: from the last checkpoint before N is the same as from the start
        first = Recording.load(path)
        first.checkpoints = first.checkpoints[:1]
        ends = rec.end["icount"]
        for n in (rec.checkpoints[2][0] + 12_345, ends - 1000):
            a, _, _, _, start, _ = replay(rec, attach_monitor, "interp", None, n)
            b, _, _, _, _, _ = replay(first, attach_monitor, "jit", None, n)
            assert a.cpu.state.icount == b.cpu.state.icount == n and start > 0
            assert capture(a) == capture(b)


def test_corrupt_recordings(tmp_path):
    _, rec, path, m = recorded("native", 3, tmp_path, interval=1_000_000)
    data = path.read_bytes()
    for k, bad in enumerate((data[:len(data) // 2], data[:999] + bytes([data[999] ^ 1]) + data[1000:])):
        p = tmp_path / f"bad{k}.rec"
        p.write_bytes(bad)
        with pytest.raises(stream.BadImage, match="truncated|checksum mismatch"):
            Recording.load(p)
    img = tmp_path / "vm.rv"
    img.write_bytes(stream.pack_image(capture(m)))
    with pytest.raises(stream.BadImage, match="not a recording"):
        Recording.load(img)
    rec.end["reason"] = "interrupted"                     # as after Ctrl-C
    with pytest.raises(stream.BadImage, match="ends at instruction .* is after it"):
        replay(rec, attach_monitor, to=rec.end["icount"] + 1)


def test_record_replay_goto_cli(tmp_path):
    rv = [sys.executable, "-m", "ringvisor"]
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))

    def run(*args, status=0, stdin=b""):
        p = subprocess.run(rv + list(args), input=stdin, capture_output=True, cwd=tmp_path,
                           env=env, timeout=120)
        assert p.returncode == status, p.stderr
        return p
    live = run("run", "kernel", "--record", "r.rec", "--checkpoint-every", "100000",
               stdin=b"hello\nsieve 1\nexit 5\n", status=11)
    assert "recorded" in live.stderr.decode()
    again = run("replay", "r.rec", status=11)
    assert again.stdout == live.stdout and "the output is the recording's" in again.stderr.decode()
    at = run("replay", "r.rec", "--goto", "250000", "--save", "g.rv")
    assert "at instruction 250,000 (replayed 50,000 from the checkpoint at 200,000)" in \
        at.stderr.decode() and "eip=" in at.stderr.decode()
    rest = run("restore", "g.rv", status=11)        # the input is in the saved UART already
    assert live.stdout.endswith(rest.stdout) and rest.stdout
    bad = run("replay", "g.rv", status=2)
    assert bad.stderr.decode() == "ringvisor: g.rv: not a recording (a saved VM? run it with " \
                                  "ringvisor restore)\n"


def test_record_replay_with_two_processors(tmp_path):
    """--smp 2: the log's points (the boot processor's instruction count, the machine's
    cycle count) are as exact with two processors taking turns."""
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    rv = [sys.executable, "-m", "ringvisor"]
    live = subprocess.run(rv + ["run", "kernel", "--smp", "2", "--record", "r.rec"],
                          input=b"sieve 1\nexit 5\n", capture_output=True, cwd=tmp_path, env=env,
                          timeout=180)
    assert live.returncode == 11 and b"sieve: iters=1" in live.stdout, live.stderr
    again = subprocess.run(rv + ["replay", "r.rec"], capture_output=True, cwd=tmp_path, env=env,
                           timeout=180)
    assert again.returncode == 11 and again.stdout == live.stdout, again.stderr
