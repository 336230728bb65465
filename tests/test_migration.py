"""Live migration: the output of the source up to the migration followed by the
destination's is one uninterrupted run's, whatever happens to the destination.

The reference is the same guest run without migrating.  Dirty logging is checked
on its own first (every way a write reaches RAM is logged, and logging changes
nothing the guest can see), then migration on loopback: in-process with the
destination on a thread (natively and under trap-and-emulate, with a slow link so
that there are several rounds), through the command line (two processes), and
with destinations that refuse, die mid-way, or are not ringvisor at all.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading

import pytest

from ringvisor.guests.build import image_path
from ringvisor.hw.machine import read_image
from ringvisor.lifecycle import migrate as MIG
from ringvisor.lifecycle.stream import BadImage, pack_header, pack_section, META
from ringvisor.lifecycle.vm import VmInfo
from ringvisor.vmm import attach_monitor, create_vm, run_vm

from test_codecache import flat_machine

# (gdt=shared: the kernel's GDT beside its counters, so that a monitor's adaptive state for
# such a page goes along too)
CMDLINE = "run=pgfault,syscall iters=300 gdt=shared"
AT = 300_000


class Reference:
    """The uninterrupted runs, by mode: ``ref(mode)`` its output, ``ref.icount(mode)`` the
    instructions it retired (virtual time: the monitors' entries are in it, so a VM that
    arrives without a monitor's state that decides them ends at another count)."""

    def __init__(self) -> None:
        self.runs: dict[str, tuple[bytes, int]] = {}

    def _run(self, mode: str) -> tuple[bytes, int]:
        if mode not in self.runs:
            r = run_vm(image_path("kernel"), mode, CMDLINE, max_instructions=20_000_000)
            assert r.stop.reason == "exit", r.stop
            self.runs[mode] = (r.output, r.machine.cpu.state.icount)
        return self.runs[mode]

    def __call__(self, mode: str) -> bytes:
        return self._run(mode)[0]

    def icount(self, mode: str) -> int:
        return self._run(mode)[1]


@pytest.fixture(scope="module")
def reference():
    return Reference()


def boot(mode: str, out: bytearray):
    kernel = image_path("kernel")
    m, mon = create_vm(read_image(kernel), mode, CMDLINE, 32, output=out.extend,
                       image_name=str(kernel))
    stop = m.run(AT)
    assert stop.reason == "limit"
    m.stop = None
    return m, mon


def receiving():
    """A destination on a thread: (address, thread, result dict)."""
    inc = MIG.Incoming(("127.0.0.1", 0))
    result: dict = {"out": bytearray()}

    def serve():
        try:
            result["vm"] = inc.receive(attach_monitor, "jit", result["out"].extend)
        except BadImage as e:
            result["error"] = str(e)
    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return (inc.host, inc.port), t, result


# -- dirty logging --------------------------------------------------------------------------
@pytest.mark.parametrize("engine", ["jit", "interp"])
def test_dirty_log_sees_fast_path_stores_and_changes_nothing(engine):
    """A loop storing into three pages: the first round logs them (through the TLB's
    parked write entries), the second logs only what was written since, and the run
    ends exactly as it does without logging (registers, memory, count)."""
    code = (b"\xB9\x03\x00\x00\x00"          # mov ecx, 3
            b"\xBF\x00\x50\x00\x00"          # mov edi, 0x5000
            b"\x89\x07"                      # top: mov [edi], eax
            b"\x81\xC7\x00\x10\x00\x00"      # add edi, 0x1000
            b"\x40" b"\xE2\xF5"              # inc eax; loop top
            b"\xA3\x00\x90\x00\x00"          # mov [0x9000], eax
            b"\xF4")

    def machine():
        m = flat_machine(engine)
        m.mem.write(0x1000, code)
        m.cpu.state.eip = 0x1000
        return m
    plain, logged = machine(), machine()
    # warm the TLB with write entries for the pages, so logging has entries to park
    plain.mem.write32(0x5000, 0)
    logged.mem.write32(0x5000, 0)
    for m in (plain, logged):
        m.cpu.mmu.walk(0x5000, True, False)
    assert logged.log_dirty() == set()
    logged.cpu.run(5)                                    # mov, mov, store to 0x5000, add, inc
    assert logged.log_dirty() == {5}
    logged.cpu.run(100)
    plain.cpu.run(100)
    assert logged.stop_dirty_log() == {6, 7, 9}
    assert logged.mem.ram == plain.mem.ram
    assert logged.cpu.state.regs == plain.cpu.state.regs
    assert logged.cpu.state.icount == plain.cpu.state.icount
    # the parked entries went back: the TLB holds what it would have held
    assert logged.cpu.mmu.tw_s == plain.cpu.mmu.tw_s and not logged.cpu.mmu.parked_s


def test_dirty_log_sees_the_slow_paths():
    """Writes that never use the TLB -- a device's or a monitor's, a page walk's
    accessed bit -- are logged too, page by page, straddles included."""
    m = flat_machine("jit")
    m.log_dirty()
    m.mem.write(0x3FFE, b"abcd")
    m.mem.write32(0x7FFE, 1)
    m.mem.write8(0x1234, 1)
    assert m.log_dirty() == {3, 4, 7, 8, 1}


# -- migration in one process ---------------------------------------------------------------
def sweeper(pages: int):
    """A 1 MiB machine whose CPU writes ``pages`` pages from 64 KiB on, round and round."""
    m = flat_machine("jit")
    m.mem.write(0x1000, b"\xBF\x00\x00\x01\x00"              # top: mov edi, 0x10000
                        + b"\xB9" + pages.to_bytes(4, "little")  # mov ecx, pages
                        + b"\x89\x07\x81\xC7\x00\x10\x00\x00\x40"  # l: mov [edi], eax; add edi, 4096; inc eax
                        + b"\xE2\xF5\xEB\xE9")                   # loop l; jmp top
    m.cpu.state.eip = 0x1000
    m.run(10_000)
    m.stop = None
    return m


@pytest.mark.parametrize("pages, rounds", [(192, 4), (10, 1)])
def test_rounds_stop_on_xens_conditions(pages, rounds):
    """Writing 192 of 256 pages all the time, rounds go on until three times the memory
    has been sent (193 + 192 + 192 + 192 > 768); writing 10, the first round leaves
    fewer than 50 dirty.  The destination then holds exactly the source's VM."""
    m = sweeper(pages)
    addr, t, dest = receiving()
    r = MIG.migrate(m, None, VmInfo(), addr)
    t.join(60)
    assert "error" not in dest and r.stop is None
    assert len(r.rounds) == rounds, r.rounds
    assert [x.dirtied for x in r.rounds[1:]] == [pages] * (rounds - 1) or rounds == 1
    assert r.final_pages == r.rounds[-1].dirtied == pages
    m2, _, info = dest["vm"]
    assert m2.mem.ram == m.mem.ram and m2.cpu.state.regs == m.cpu.state.regs
    assert m2.cpu.state.icount == m.cpu.state.icount == r.icount
    for x in (m, m2):
        x.run(5_000)
    assert m2.mem.ram == m.mem.ram and m2.cpu.state.regs == m.cpu.state.regs


@pytest.mark.parametrize("mode", ["native", "trapemu", "hvm"])
def test_precopy_is_one_uninterrupted_run(mode, reference):
    out = bytearray()
    m, mon = boot(mode, out)
    addr, t, dest = receiving()
    r = MIG.migrate(m, mon, VmInfo(cmdline=CMDLINE), addr)
    t.join(60)
    assert r.stop is None and "error" not in dest
    assert r.rounds and r.rounds[0].pages >= 50
    assert r.downtime > 0 and r.pages_sent == sum(x.pages for x in r.rounds) + r.final_pages
    m2, mon2, info = dest["vm"]
    assert m2.cpu.state.icount == r.icount and info.mode == mode
    stop = m2.run(20_000_000)
    assert stop.reason == "exit"
    assert bytes(out) + bytes(dest["out"]) == reference(mode)
    assert m2.cpu.state.icount == reference.icount(mode)


def test_a_destination_that_dies_midway_costs_the_source_nothing(reference):
    """It reads the first sections and hangs up: the source says why and runs on."""
    srv = socket.create_server(("127.0.0.1", 0))

    def die():
        conn, _ = srv.accept()
        conn.recv(10_000)
        conn.close()
        srv.close()
    t = threading.Thread(target=die, daemon=True)
    t.start()
    out = bytearray()
    m, mon = boot("native", out)
    with pytest.raises(MIG.MigrationFailed, match="connection was lost|closed the connection"):
        MIG.migrate(m, mon, VmInfo(), srv.getsockname()[:2])
    t.join(10)
    assert m.mem.dirty is None and not m.cpu.mmu.parked_s
    assert m.run(20_000_000).reason == "exit"
    assert bytes(out) == reference("native")


def test_a_destination_that_refuses_the_stream_and_one_that_is_not_there(reference):
    addr, t, dest = receiving()
    with socket.create_connection(addr) as s:
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
    t.join(10)
    assert "not a ringvisor image" in dest["error"]
    addr, t, dest = receiving()
    with socket.create_connection(addr) as s:        # a saved image, not a migration
        s.sendall(pack_header() + pack_section(META, "vm", 1, b"{}"))
    t.join(10)
    assert "not a migration stream" in dest["error"]
    # nobody listens there any more: refused
    m, mon = boot("native", bytearray())
    with pytest.raises(MIG.MigrationFailed, match="refused"):
        MIG.migrate(m, mon, VmInfo(), addr)


def test_addresses():
    assert MIG.parse_address("127.0.0.1:4444") == ("127.0.0.1", 4444)
    assert MIG.parse_address("[::1]:0") == ("::1", 0)
    for bad in ("4444", "host:", "host:99999", ":80"):
        with pytest.raises(Exception, match="bad address"):
            MIG.parse_address(bad)


# -- the command line: two processes -----------------------------------------------------------
def _rv(*args, **kw):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    return subprocess.Popen([sys.executable, "-m", "ringvisor", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


def _wait_port(p) -> int:
    line = p.stderr.readline().decode()
    assert "waiting for a VM on 127.0.0.1:" in line, line
    return int(line.rsplit(":", 1)[1])


def test_cli_migration_and_a_foreign_stream(reference):
    dst = _rv("run", "kernel", "--incoming", "127.0.0.1:0")
    port = _wait_port(dst)
    src = _rv("run", "kernel", "--append", CMDLINE, "--migrate-to", f"127.0.0.1:{port}",
              "--migrate-at", str(AT))
    s_out, s_err = src.communicate(timeout=300)
    d_out, d_err = dst.communicate(timeout=300)
    assert src.returncode == 0, s_err
    assert dst.returncode == 1, d_err                 # the kernel's own exit status
    assert b"migration round 1:" in s_err and b"downtime" in s_err
    assert s_out + d_out == reference("native")
    # a destination fed something else: one line, exit status 2
    dst = _rv("run", "kernel", "--incoming", "127.0.0.1:0")
    port = _wait_port(dst)
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"RINGVSAV" + bytes(12))          # a header whose checksum is wrong
    _, err = dst.communicate(timeout=60)
    assert dst.returncode == 2 and err.decode().count("\n") == 1 and "corrupt" in err.decode(), err


def test_cli_source_runs_on_when_nobody_listens(reference):
    srv = socket.create_server(("127.0.0.1", 0))
    port = srv.getsockname()[1]
    srv.close()
    src = _rv("run", "kernel", "--append", CMDLINE, "--migrate-to", f"127.0.0.1:{port}",
              "--migrate-at", str(AT))
    out, err = src.communicate(timeout=300)
    assert src.returncode == 1
    lines = err.decode().splitlines()
    assert len(lines) == 1 and "refused" in lines[0] and "keeps running here" in lines[0], lines
    assert out == reference("native")
