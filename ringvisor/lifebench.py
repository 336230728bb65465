"""``ringvisor lifebench``: what the VM lifecycle costs, for a 32 MiB guest that writes.

The guest is a machine of its own, not the teaching kernel (whose workloads
dirty a few dozen pages): 28 MiB of its memory hold incompressible data (as a
loaded application's would; the bench fills it from a fixed seed), and its CPU,
in flat protected mode, writes a hot set of 256 pages round and round with a
2,000-iteration delay loop between writes -- one page written every ~4,000
instructions, ~100 MiB/s of guest time, against a link of ~120 MiB/s: pre-copy
converges over several rounds instead of in one.  One run measures, side by side:

* live migration on loopback (``migrate.py``, destination on a thread of the
  same process): total time, rounds, pages per round, pages sent, downtime;
  then post-copy (``postcopy.py``, destination in a process of its own, which
  runs the guest on): downtime, pages sent (pushed, on demand), demand faults,
  time to the last page;
* a save to a file (the image format) and a restore from it;
* a save in the mapped layout (``mapped.py``), the time from restoring it to the
  guest's first instruction (lazily, and with the pages' checksums checked),
  and four copy-on-write clones: the pages each copied and each keeps resident;
* the snapshot tree (``snapshots.py``): 100 snapshots, the guest running 200,000
  instructions between two, and the bytes the content-addressed store takes.
"""

from __future__ import annotations

import hashlib
import os
import random
import tempfile
import threading
import time
from pathlib import Path

from ringvisor.hw.machine import Machine
from ringvisor.hw.state import ATTR_DB, ATTR_G, ATTR_P, ATTR_S, CR0_PE, Segment

from .lifecycle import migrate as MIG
from .lifecycle.snapshots import SnapshotTree
from .lifecycle.mapped import sharing
from .lifecycle.vm import VmInfo, clone, load_file, save_file

MB = 32
DATA_AT, DATA_MB = 1 << 20, 28
HOT_PAGES, DELAY = 256, 2000
POST_RUN = 3_000_000      # instructions the post-copy destination runs (and the source after)
CODE = 0x1000


def _code(hot: int, delay: int) -> bytes:
    return (b"\xBF" + DATA_AT.to_bytes(4, "little")        # top: mov edi, DATA_AT
            + b"\xB9" + hot.to_bytes(4, "little")          # mov ecx, hot
            + b"\x89\x07"                                  # l: mov [edi], eax
            + b"\x81\xC7\x00\x10\x00\x00" + b"\x40"        # add edi, 4096; inc eax
            + b"\xBA" + delay.to_bytes(4, "little")        # mov edx, delay
            + b"\x4A\x75\xFD"                              # d: dec edx; jnz d
            + b"\xE2\xED" + b"\xEB\xE1")                   # loop l; jmp top


def guest(engine: str = "jit") -> Machine:
    m = Machine(MB, engine)
    st = m.cpu.state
    code = Segment(0x08, 0, 0xFFFFFFFF, ATTR_P | ATTR_S | ATTR_DB | ATTR_G | 0xB)
    data = Segment(0x10, 0, 0xFFFFFFFF, ATTR_P | ATTR_S | ATTR_DB | ATTR_G | 0x3)
    st.segs = [data.copy(), code, data.copy(), data.copy(), data.copy(), data.copy()]
    st.cr0 |= CR0_PE
    st.regs[4] = 0x8000
    m.cpu.mode_changed()
    m.mem.ram[DATA_AT:DATA_AT + (DATA_MB << 20)] = random.Random(12).randbytes(DATA_MB << 20)
    m.mem.write(CODE, _code(HOT_PAGES, DELAY))
    st.eip = CODE
    return m


def _run(m: Machine, n: int) -> None:
    stop = m.run(n)
    assert stop.reason == "limit", stop
    m.stop = None


def _first_instruction(path, engine: str, verify: bool) -> float:
    """Seconds from restoring ``path`` to the guest's first instruction retired."""
    t = time.perf_counter()
    m, _, _ = load_file(path, engine=engine, verify=verify)
    m.run(1)
    return time.perf_counter() - t


def measure(engine: str = "jit", snapshots: int = 100, link_mbit: int = MIG.LINK_MBIT,
            echo=print) -> dict:
    out: dict = {}
    m = guest(engine)
    _run(m, 1_000_000)
    echo(f"guest: {MB} MiB, {DATA_MB} MiB of data, writing {HOT_PAGES} hot pages "
         f"(one every ~{2 * DELAY + 6:,} instructions); engine {engine}")

    # -- save and restore -------------------------------------------------------------
    with tempfile.TemporaryDirectory(prefix="lifebench-") as tmp:
        path = Path(tmp) / "vm.rv"
        t = time.perf_counter()
        size = save_file(path, m, None, VmInfo(description="lifebench"))
        out["save_s"], out["save_bytes"] = time.perf_counter() - t, size
        t = time.perf_counter()
        m2, _, _ = load_file(path, engine=engine)
        out["restore_s"] = time.perf_counter() - t
        assert m2.mem.ram == m.mem.ram
        del m2
    echo(f"save:    {out['save_s'] * 1000:8.1f} ms, {size / 2**20:.1f} MiB image "
         f"(every non-zero page, zlib level 1)")
    echo(f"restore: {out['restore_s'] * 1000:8.1f} ms, memory loaded eagerly "
         f"(Firecracker's bar: under 8 ms, with memory loaded lazily)")

    # -- mapped: lazy restore and copy-on-write clones ------------------------------------
    with tempfile.TemporaryDirectory(prefix="lifebench-") as tmp:
        path = Path(tmp) / "vm.rv"
        t = time.perf_counter()
        size = save_file(path, m, None, VmInfo(), mapped=True)
        out["save_mapped_s"] = time.perf_counter() - t
        out["restore_lazy_s"] = min(_first_instruction(path, engine, False) for _ in range(5))
        out["restore_verified_s"] = min(_first_instruction(path, engine, True) for _ in range(3))
        echo(f"save mapped: {out['save_mapped_s'] * 1000:8.1f} ms, {size / 2**20:.1f} MiB "
             f"(every page as it is: the file is mapped, not read)")
        echo(f"restore mapped, to the first instruction: {out['restore_lazy_s'] * 1000:.1f} ms "
             f"lazily (--lazy), {out['restore_verified_s'] * 1000:.1f} ms with every stored "
             f"page's checksum checked (Firecracker's bar: under 8 ms)")
        clones = clone(m, None, VmInfo(), 4, engine=engine)
        for c, _, _ in clones:
            _run(c, 1_000_000)
        seen = [sharing(c.mem.ram) for c, _, _ in clones]
        out["clones"] = seen
        echo(f"4 clones, 1,000,000 instructions each: pages copied on write "
             f"{', '.join(str(x['copied']) for x in seen)}; resident "
             f"{', '.join(str(x['resident']) for x in seen)} (of {MB << 8:,} each); private "
             f"memory {sum(x['copied'] for x in seen) * 4096 / 2**20:.1f} MiB for 4 x {MB} MiB")
        del clones

    # -- the snapshot tree ------------------------------------------------------------------
    with tempfile.TemporaryDirectory(prefix="lifebench-") as tmp:
        tree = SnapshotTree(Path(tmp) / "store")
        t = time.perf_counter()
        for i in range(snapshots):
            tree.create(f"s{i}", m, None, VmInfo(), "")
            _run(m, 200_000)
        out["tree_s"] = time.perf_counter() - t
        out["tree_bytes"] = sum(p.stat().st_size for p in Path(tmp).rglob("*") if p.is_file())
    echo(f"snapshot tree: {snapshots} snapshots in {out['tree_s']:.1f} s "
         f"({out['tree_s'] / snapshots * 1000:.0f} ms each), store {out['tree_bytes'] / 2**20:.1f} "
         f"MiB = {out['tree_bytes'] / (MB << 20):.2f} x the guest's {MB} MiB "
         f"({snapshots} full images: {snapshots * MB} MiB)")

    # -- live migration ---------------------------------------------------------------------
    inc = MIG.Incoming(("127.0.0.1", 0))
    got: dict = {}

    def serve():
        try:
            got["vm"] = inc.receive(engine=engine)
        except Exception as e:          # reported below
            got["error"] = e
    th = threading.Thread(target=serve, daemon=True)
    th.start()
    r = MIG.migrate(m, None, VmInfo(), (inc.host, inc.port), link_mbit,
                    progress=lambda s: echo("  " + s))
    th.join(60)
    if "error" in got:
        raise got["error"]
    m2 = got["vm"][0]
    assert m2.mem.ram == m.mem.ram and m2.cpu.state.regs == m.cpu.state.regs
    out["migration"] = r
    per_round = ", ".join(f"{x.pages:,}" for x in r.rounds)
    echo(f"migration ({link_mbit:,} Mbit/s link in guest time, loopback TCP): "
         f"{r.seconds:.2f} s, {len(r.rounds)} rounds ({per_round} pages) + "
         f"{r.final_pages:,} pages stopped, {r.pages_sent:,} pages = "
         f"{r.bytes_sent / 2**20:.1f} MiB sent; downtime {r.downtime * 1000:.1f} ms "
         f"(target 60 ms; Clark et al.: 60 ms Quake 3, 210 ms SPECweb)")
    out["postcopy"] = _postcopy(m, engine, echo)
    return out


def _digest(m: Machine) -> bytes:
    st = m.cpu.state
    return hashlib.blake2b(bytes(m.mem.ram) + repr((st.regs, st.eip, st.icount)).encode(),
                           digest_size=16).digest()


def _postcopy(m: Machine, engine: str, echo) -> MIG.Migration:
    """The same VM moved by post-copy to another process (the destination forks its
    page server), which runs it for POST_RUN instructions; the source runs its own
    paused copy as far, and the two must agree."""
    inc = MIG.Incoming(("127.0.0.1", 0))
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:                                    # the destination (two processes)
        os.close(rfd)
        code = 1
        try:
            m2, _, _ = inc.receive(engine=engine)
            _run(m2, POST_RUN)
            os.write(wfd, _digest(m2))
            code = 0
        finally:
            os._exit(code)
    inc.close()
    os.close(wfd)
    r = MIG.migrate(m, None, VmInfo(), (inc.host, inc.port), postcopy=True,
                    progress=lambda s: echo("  " + s))
    status = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    with os.fdopen(rfd, "rb") as f:
        theirs = f.read()
    _run(m, POST_RUN)
    assert status == 0 and theirs == _digest(m), "the post-copy destination diverged"
    echo(f"post-copy (Hines & Gopalan; loopback TCP, pages pushed as fast as the host goes): "
         f"downtime {r.downtime * 1000:.1f} ms; {r.pages_sent:,} pages = "
         f"{r.bytes_sent / 2**20:.1f} MiB sent ({r.pushed:,} pushed, {r.demanded:,} on "
         f"demand), {r.faults:,} demand faults; the last page {r.seconds:.2f} s after the "
         f"start, while the destination ran {POST_RUN:,} instructions")
    return r
