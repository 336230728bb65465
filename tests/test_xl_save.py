"""xl save, xl restore and xl migrate: a DomU leaves its host as data and runs on.

Two hosts (hypervisor, Domain 0, toolstack) in one process.  A DomU runs a
list of programs; it is saved (or migrated) halfway, built again from the
stream, and its console output before and after together is the output of
the same kernel run alone without a stop -- [timing] figures aside: a DomU's
TSC counts the cycles other domains ran, which differ from host to host."""

from __future__ import annotations

import os
import re
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from ringvisor.abi import Errno, XenbusState
from ringvisor.guests.build import image_path
from ringvisor.hypervisor.core import Hypervisor
from ringvisor.hypervisor.domain import State
from ringvisor.hypervisor.interface import HypercallInterface
from ringvisor.lifecycle import stream
from ringvisor.lifecycle.stream import read_file, write_atomic
from ringvisor.toolstack.config import DomainConfig, Disk
from ringvisor.toolstack.saverestore import parse_stream
from ringvisor.toolstack.xc import XcError
from ringvisor.toolstack.xl import Toolstack, XlError
from ringvisor.vmm import run_vm

TIMING = re.compile(rb"^\[timing\].*\n", re.M)
PROGRAMS = "run=syscall:100,sieve:1,syscall:100"


class Host:
    def __init__(self, tmp: Path) -> None:
        self.hv = Hypervisor(160)
        self.hv.build_dom0(image_path("kernel-pv").read_bytes(), "", 16, "kernel-pv")
        self.hv.start()
        self.ts = Toolstack(HypercallInterface(self.hv), tmp)
        self.out: dict[str, bytearray] = {}

    def create(self, name: str, paused: bool = False, cmdline: str = PROGRAMS,
               disks: tuple = ()) -> int:
        cfg = DomainConfig(name=name, kernel="kernel-pv", cmdline=cmdline, memory=8,
                           on_poweroff="preserve", disks=list(disks))
        return self.listen(self.ts.create(cfg, paused=paused))

    def listen(self, domid: int) -> int:
        m = self.ts.managed[domid]
        m.listeners.append(self.out.setdefault(m.name, bytearray()).extend)
        return domid

    def dom(self, name: str):
        return self.hv.domains[self.ts.find(name).domid]

    def run(self, done, budget: int = 40_000_000) -> bool:
        return self.hv.run_until(done, budget, step=20_000)

    def halfway(self, name: str) -> None:
        assert self.run(lambda: len(self.out.get(name, b"")) >= 150)

    def finish(self, name: str) -> None:
        assert self.run(lambda: self.dom(name).state is State.SHUTDOWN)


def both(a: Host, b: Host, done, rounds: int = 400) -> None:
    """Run two hosts by turns (the source waits for the destination's answer)."""
    for _ in range(rounds):
        if done():
            return
        a.hv.run_until(done, 100_000, step=20_000)
        b.hv.run_until(done, 100_000, step=20_000)
    assert done()


@pytest.fixture(scope="module")
def alone() -> bytes:
    out = run_vm(image_path("kernel-pv"), "paravirt", PROGRAMS, mem_mb=8).output
    assert b"init: 3 programs run, 0 failed" in out
    return TIMING.sub(b"", out)


def test_save_and_restore_continue_the_console(alone, tmp_path):
    a = Host(tmp_path / "host")
    a.create("alpha")
    a.halfway("alpha")
    free = a.hv.frames.nr_free
    path = tmp_path / "alpha.save"
    said = []

    def write(data, err):
        assert err is None
        write_atomic(path, data)
        said.append(len(data))
        return "destroy"
    a.ts.save("alpha", write)
    assert a.run(lambda: said)
    assert all(m.name != "alpha" for m in a.ts.managed.values())
    assert a.hv.frames.nr_free > free + 8 * 256           # its memory went back
    before = bytes(a.out.pop("alpha"))
    # the host goes on for 50 ms of its time (its_time_continues needs no more; a budget
    # of instructions instead ran it for seconds of idle virtual time)
    assert not a.hv.run_until(lambda: False, 5_000_000, step=20_000, ns=50_000_000)
    a.listen(a.ts.restore(read_file(path), str(path)))
    its_time_continues(a, "alpha", read_file(path))
    a.finish("alpha")
    assert TIMING.sub(b"", before + bytes(a.out["alpha"])) == alone
    log = (a.ts.state_dir / "console" / "alpha.log").read_bytes()
    assert log == before + bytes(a.out["alpha"])             # one log, continued
    with pytest.raises(XlError, match="exists already"):
        a.ts.restore(read_file(path), str(path))
    only_a_paused_domu_gives_its_context(a)
    bad_streams_are_one_line(read_file(path), tmp_path)


def test_migrate_to_another_host_and_back_when_it_fails(alone, tmp_path):
    a, b = Host(tmp_path / "a"), Host(tmp_path / "b")
    a.create("beta")
    a.halfway("beta")
    # nobody listening: the domain runs on here
    res: dict = {}
    a.ts.migrate("beta", ("127.0.0.1", 9), lambda err, r: res.update(err=err, r=r))
    assert a.run(lambda: res, 2_000_000)
    assert "cannot reach 127.0.0.1:9" in res["err"] and "keeps running here" in res["err"]
    assert not a.dom("beta").paused
    # the destination refuses (a domain of that name): the domain runs on here
    b.create("beta", paused=True)
    res.clear()
    a.ts.migrate("beta", ("127.0.0.1", b.ts.migrate_receive(("127.0.0.1", 0))),
                 lambda err, r: res.update(err=err, r=r))
    both(a, b, lambda: res)
    assert "exists already" in res["err"] and not a.dom("beta").paused
    b.ts.destroy("beta")
    b.out.pop("beta")
    # and now it goes
    res.clear()
    a.ts.migrate("beta", ("127.0.0.1", b.ts.migrate_receive(("127.0.0.1", 0))),
                 lambda err, r: res.update(err=err, r=r))
    both(a, b, lambda: res)
    assert res["err"] is None and res["r"]["bytes"] > 0
    assert all(m.name != "beta" for m in a.ts.managed.values())
    b.listen(b.ts.find("beta").domid)
    b.finish("beta")
    assert TIMING.sub(b"", bytes(a.out["beta"]) + bytes(b.out["beta"])) == alone


@pytest.mark.parametrize("how,backend", [("restore", "dom0"), ("migrate", "hypervisor")])
def test_a_domain_with_a_disk_reconnects_it_after_restore_and_migration(how, backend, tmp_path):
    """blk writes generation 1 and reads it back; the domain is saved (restored on this
    host) or migrated (to another) halfway through syscall:200; the next blk, on the
    new back-end, finds generation 1 on the disk -- its first request went to the old
    ring, got no answer, and blkfront connected to the new back-end and asked again.
    Its second disk, xvdb (served the other way), reconnects the same way: disks reads
    it before and after."""
    img = tmp_path / "xvda.img"
    img.write_bytes(bytes(2048 * 512))
    second = tmp_path / "xvdb.img"
    second.write_bytes(b"xvdb stays".ljust(512 * 512, b"\0"))
    other = "dom0" if backend == "hypervisor" else "hypervisor"
    disks = (Disk(str(img), "raw", "xvda", "rw", backend),
             Disk(str(second), "raw", "xvdb", "ro", other))
    a = Host(tmp_path / "a")
    a.create("delta", cmdline="run=blk,disks,syscall:200,blk,disks", disks=disks)
    assert a.run(lambda: b"disks: 2 found" in a.out.get("delta", b""))
    before = bytes(a.out.pop("delta"))
    assert b"blk: wrote generation 1, read it back" in before
    xvdb = b'disks: disk 1: 512 sectors, sector 0 begins "xvdb stays"\ndisks: 2 found\n'
    assert xvdb in before
    if how == "restore":
        saved = []
        a.ts.save("delta", lambda data, err: saved.append(data or err) or "destroy")
        assert a.run(lambda: saved)
        b = a
        assert isinstance(saved[0], bytes), saved
        b.listen(b.ts.restore(saved[0], "delta.save"))
    else:
        b = Host(tmp_path / "b")
        res: dict = {}
        a.ts.migrate("delta", ("127.0.0.1", b.ts.migrate_receive(("127.0.0.1", 0))),
                     lambda err, r: res.update(err=err, r=r))
        both(a, b, lambda: res)
        assert res["err"] is None
        b.listen(b.ts.find("delta").domid)
    b.finish("delta")
    after = bytes(b.out["delta"])
    assert b"blk: generation 1 found and verified (40 sectors)\nblk: wrote generation 2" in after
    assert xvdb in after
    assert b"init: 5 programs run, 0 failed" in after, after
    for vbd in b.ts.find("delta").disks:
        assert vbd.state == XenbusState.Connected
        assert b.ts.xs.read(f"{vbd.front}/state") == str(int(XenbusState.Connected))


def its_time_continues(a: Host, name: str, saved: bytes) -> None:
    """The restored domain's system time and TSC are where they were at the save, not
    the host's (which went on for 50 ms meanwhile): Xen's save records the time base."""
    from ringvisor.abi import SHARED_INFO
    from ringvisor.lifecycle.codec import decode
    at_save = decode(parse_stream(saved, "saved")[1])["time"]
    m = a.dom(name).monitor
    o = m.si_phys + SHARED_INFO.offset("vcpu_info[0].time")
    _, _, tsc, system_ns = struct.unpack("<IIQQ", a.hv.mem.read(o, 24))
    assert (system_ns, tsc) == (at_save["system_ns"], at_save["tsc"])
    assert m.system_ns() == at_save["system_ns"] and m.guest_tsc() == at_save["tsc"]
    assert a.hv.clock.now_ns() - system_ns >= 50_000_000     # it would have jumped so far


def test_the_context_covers_the_monitors_state():
    from ringvisor.hypervisor import domsave
    from ringvisor.hypervisor.pvdomain import DomainMonitor
    parts = domsave.MONITOR_FIELDS + domsave.TRANSLATED + domsave.REBUILT
    assert sorted(parts) == sorted(DomainMonitor.STATE)
    from ringvisor.hypervisor import btsave
    from ringvisor.hypervisor.btdomain import BtDomainMonitor
    parts = btsave.MONITOR_FIELDS + btsave.REBUILT + btsave.BY_RULE
    assert sorted(parts) == sorted(BtDomainMonitor.STATE)


def only_a_paused_domu_gives_its_context(a: Host) -> None:
    d = a.create("gamma", paused=True)
    with pytest.raises(XcError) as e:
        a.ts.xc.set_context(d, a.ts.xc.get_context(d))   # it has started: built, given a vCPU
    assert e.value.errno == Errno.EINVAL
    a.ts.unpause("gamma")
    with pytest.raises(XcError) as e:
        a.ts.xc.get_context(d)                  # running: pause it first
    assert e.value.errno == Errno.EINVAL
    with pytest.raises(XcError) as e:
        a.ts.xc.get_context(0)
    assert e.value.errno == Errno.EINVAL
    fresh = a.ts.xc.create()
    with pytest.raises(XcError) as e:
        a.ts.xc.set_context(fresh, b"{}")        # not a context
    assert e.value.errno == Errno.EINVAL
    a.ts.xc.destroy(fresh)
    with pytest.raises(XlError, match="Domain-0 cannot be saved"):
        a.ts.save("Domain-0", lambda data, err: "resume")
    a.ts.destroy("gamma")


def bad_streams_are_one_line(data: bytes, tmp_path: Path) -> None:
    path = tmp_path / "bad.save"
    parse_stream(data, "ok")
    cases = {"cut": data[:len(data) // 2], "flip": data[:600] + bytes([data[600] ^ 4]) + data[601:],
             "vm": stream.pack_image([stream.Section(stream.META, "vm", 1, b"{}")]),
             "junk": b"hello"}
    for name, bad in cases.items():
        with pytest.raises(stream.BadImage):
            parse_stream(bad, name)
    path.write_bytes(cases["flip"])
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]),
               RINGVISOR_STATE_DIR=str(tmp_path))
    p = subprocess.run([sys.executable, "-m", "ringvisor", "xl", "restore", str(path)],
                       capture_output=True, text=True, env=env, timeout=60)
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "checksum" in p.stderr, p.stderr
    path.write_bytes(cases["vm"])
    p = subprocess.run([sys.executable, "-m", "ringvisor", "xl", "restore", str(path)],
                       capture_output=True, text=True, env=env, timeout=60)
    assert p.returncode == 2 and "a saved VM, not a domain" in p.stderr, p.stderr
