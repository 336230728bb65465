"""gdb attaches to a running guest, in every mode, and sees the guest -- never the monitor.

Debian's gdb runs in batch mode against ``ringvisor run ... --gdb``: a breakpoint at
a kernel symbol of the teaching kernel, continue, registers (the guest's CS/SS
selectors and control registers, not the ring-1 ones or the monitor's), memory
through the guest's page tables, single steps of guest instructions (under bt:
guest instructions, not translated code), a hardware watchpoint, breakpoints
gdb plants itself as int3 bytes.  After gdb detaches, the guest runs on and its
output is that of an undisturbed run.  The protocol's corners (Ctrl-C, binary
writes, bad checksums, a connection that drops, a second debugger) are driven
by a small client of our own.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import sys
import time

import iced_x86 as ix
import pytest
from elftools.elf.elffile import ELFFile

from ringvisor.guests.build import image_path
from ringvisor.vmm import run_vm

pytestmark = pytest.mark.skipif(shutil.which("gdb") is None, reason="gdb is not installed")

WORKLOAD = "run=syscall iters=3"
STATUS = 1                           # init exits 0: isa-debug-exit status (0 << 1) | 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def symbol(path, name: str) -> int:
    return symbol_span(path, name)[0]


def symbol_span(path, name: str) -> tuple[int, int]:
    with open(path, "rb") as f:
        for s in ELFFile(f).get_section_by_name(".symtab").iter_symbols():
            if s.name == name:
                return s["st_value"], s["st_size"]
    raise KeyError(name)


def accessors(path, function: str, data: str) -> dict[int, int]:
    """The instructions of ``function`` that name ``data`` in a memory operand (its
    displacement within the object, decoded from the ELF): {where each ends: where it is}."""
    start, size = symbol_span(path, function)
    lo, length = symbol_span(path, data)
    with open(path, "rb") as f:
        text = ELFFile(f).get_section_by_name(".text")
        code = text.data()[start - text["sh_addr"]:][:size]
    return {ins.next_ip32: ins.ip32 for ins in ix.Decoder(32, code, ip=start)
            if any(ins.op_kind(i) == ix.OpKind.MEMORY for i in range(ins.op_count))
            and lo <= ins.memory_displacement < lo + length}


def instruction_ends(path, addr: int, n: int) -> list[int]:
    """Where the first ``n`` instructions from ``addr`` end, decoded from the ELF itself."""
    with open(path, "rb") as f:
        elf = ELFFile(f)
        text = elf.get_section_by_name(".text")
        data = text.data()[addr - text["sh_addr"]:][:15 * n]
    return [ins.next_ip32 for ins in list(ix.Decoder(32, data, ip=addr))[:n]]


def untimed(text: str) -> list[str]:
    return [l for l in text.splitlines() if not l.startswith("[timing]")]


@pytest.fixture(scope="module")
def reference() -> dict[str, list[str]]:
    """The workload's output undisturbed (identical in every mode, timing aside)."""
    out = {}
    for kernel in ("kernel", "kernel-pv"):
        r = run_vm(image_path(kernel), "native" if kernel == "kernel" else "paravirt", WORKLOAD)
        assert r.status == STATUS
        out[kernel] = untimed(r.output.decode())
    return out


def start(kernel: str, mode: str, port: int, *extra: str, cmdline: str = WORKLOAD,
          out=None, stdin=subprocess.DEVNULL) -> subprocess.Popen:
    args = [sys.executable, "-m", "ringvisor", "run", kernel, "--mode", mode,
            "--append", cmdline, "--gdb", f"tcp::{port}", *extra]
    return subprocess.Popen(args, stdin=stdin, stdout=out or subprocess.PIPE,
                            stderr=subprocess.PIPE)


def gdb(kernel: str, port: int, commands: str, tmp_path, timeout: float = 120) -> str:
    script = tmp_path / "script.gdb"
    script.write_text("set pagination off\nset confirm off\nset tcp connect-timeout 60\n"
                      f"target remote 127.0.0.1:{port}\n" + commands)
    p = subprocess.run(["gdb", "-q", "-nx", "-batch", "-x", str(script), str(image_path(kernel))],
                       stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
    return p.stdout.decode() + p.stderr.decode()


def register(out: str, name: str) -> int:
    m = re.search(rf"^{name}\s+(0x[0-9a-f]+)", out, re.M)
    assert m, f"no {name} in:\n{out}"
    return int(m.group(1), 16)


@pytest.mark.parametrize("mode", ["native", "trapemu", "bt", "paravirt", "hvm"])
def test_break_step_and_detach(mode, reference, tmp_path):
    kernel = "kernel-pv" if mode == "paravirt" else "kernel"
    path = image_path(kernel)
    entry = symbol(path, "syscall_dispatch")
    ends = instruction_ends(path, entry, 4)
    port = free_port()
    vm = start(kernel, mode, port, "-S")
    try:
        out = gdb(kernel, port, """
break syscall_dispatch
continue
info registers eip cs ss ds eflags cr0 cr3
x/2xw $esp
stepi
info registers eip
stepi
info registers eip
stepi
info registers eip
stepi
info registers eip
x/1i $pc
detach
""", tmp_path)
        stdout, stderr = vm.communicate(timeout=120)
    finally:
        vm.kill()
    assert "Breakpoint 1, " in out and "in syscall_dispatch ()" in out, out
    eips = [int(x, 16) for x in re.findall(r"^eip\s+(0x[0-9a-f]+)", out, re.M)]
    # the breakpoint, then one guest instruction per stepi (under bt: not the translation's;
    # the fourth is a store to kernel data, through a shadow page-table fill the first time)
    assert eips == [entry] + ends, out
    # the guest's own selectors (ring 0), not the ring-1 ones a monitor runs it with
    assert (register(out, "cs"), register(out, "ss"), register(out, "ds")) == (0x08, 0x10, 0x10)
    assert register(out, "cr0") & 0x80000001 == 0x80000001          # PG, PE
    cr3 = register(out, "cr3")
    assert cr3 < 32 << 20, "CR3 must be the guest's page directory, not a shadow's"
    # syscall_dispatch was called: the return address is in the kernel's text
    ret = int(re.search(r"^0x[0-9a-f]+(?: <[^>]*>)?:\s+(0x[0-9a-f]+)", out, re.M).group(1), 16)
    assert 0xC0100000 <= ret < symbol(path, "_kernel_end")
    # trap-and-emulate shows the guest's *virtual* IF: an IRET to user mode does not
    # trap at ring 1, so it still holds the kernel's cli (the chapter's failure, shown)
    assert bool(register(out, "eflags") & 0x200) == (mode != "trapemu")
    assert "detached" in out, out
    # the guest ran on, none the wiser
    assert vm.returncode == STATUS, stderr.decode()
    assert untimed(stdout.decode()) == reference[kernel]
    assert stderr.decode().strip() == "ringvisor: the debugger detached; the guest runs on"


WATCH_STOP = re.compile(r"^Hardware (read |access \(read/write\) |)watchpoint (\d+): .*\n\n"
                        r"(?:Value = (\d+)|Old value = (\d+)\nNew value = (\d+))\n"
                        r"(0x[0-9a-f]+) in (\w+) \(\)", re.M)


@pytest.mark.parametrize("mode", ["native", "trapemu", "bt", "paravirt", "hvm"])
def test_watchpoints_of_every_kind(mode, reference, tmp_path):
    """``rwatch``, ``watch`` and ``awatch`` on the kernel's syscall counter (kstats.syscalls,
    written by ``incl`` in syscall_dispatch, read by the stats syscall's copy of kstats):
    each stop is right after an instruction that reads (rwatch), writes (watch) or
    touches (awatch) it -- as an x86 data breakpoint's trap is (SDM Vol. 3 17.3.1.2: a
    data breakpoint is a trap, reported after the access) -- with the value gdb reads
    back through the guest's page tables; then gdb detaches and the guest's output is
    an undisturbed run's."""
    kernel = "kernel-pv" if mode == "paravirt" else "kernel"
    path = image_path(kernel)
    where = accessors(path, "syscall_dispatch", "kstats")
    counter = symbol(path, "kstats") + 8
    port = free_port()
    vm = start(kernel, mode, port, "-S")
    expr = "*(int *)((char *)&kstats + 8)"
    try:
        out = gdb(kernel, port, f"""
break syscall_dispatch
continue
delete
rwatch {expr}
continue
continue
delete
watch {expr}
continue
continue
delete
awatch {expr}
continue
continue
delete
x/1dw {counter:#x}
detach
""", tmp_path)
        stdout, stderr = vm.communicate(timeout=120)
    finally:
        vm.kill()
    stops = [(m.group(1).strip() or "write", int(m.group(2)), m.group(3), m.group(4),
              m.group(5), int(m.group(6), 16), m.group(7)) for m in WATCH_STOP.finditer(out)]
    kinds = [s[0] for s in stops]
    assert kinds == ["read"] * 2 + ["write"] * 2 + ["access (read/write)"] * 2, out
    for kind, number, value, old, new, eip, func in stops:
        # right after an instruction of syscall_dispatch that names kstats, never elsewhere
        assert func == "syscall_dispatch" and eip in where, (hex(eip), out)
        if kind == "write":
            assert int(new) == int(old) + 1, out      # kstats.syscalls++
    # the first read is the first syscall's increment (0 -> 1); the first syscall is the
    # workload's stats call, whose copy of kstats reads it next, unchanged
    incl = stops[0][5]
    assert stops[0][2] == "1" and stops[1][2] == "1" and stops[1][5] != incl, out
    # a write watchpoint passes over reads: both stops are increments, one after the other
    assert stops[2][5] == stops[3][5] == incl and int(stops[3][3]) == int(stops[2][4]), out
    # an access watchpoint takes the read-modify-write, with both values
    assert [s[5] for s in stops[4:]] == [incl] * 2 and stops[4][3] == stops[3][4], out
    assert re.search(rf"<kstats\+8>:\s+{stops[5][4]}\n", out), out   # x/1dw afterwards
    assert "detached" in out, out
    assert vm.returncode == STATUS, stderr.decode()
    assert untimed(stdout.decode()) == reference[kernel]
    assert stderr.decode().strip() == "ringvisor: the debugger detached; the guest runs on"


def test_watchpoint_and_planted_breakpoints(reference, tmp_path):
    """Under binary translation: a hardware breakpoint (Z1), then breakpoints gdb plants
    as int3 bytes itself (no Z0); the guest never executes them."""
    port = free_port()
    vm = start("kernel", "bt", port, "-S")
    try:
        out = gdb("kernel", port, """
hbreak syscall_dispatch
continue
delete
set remote software-breakpoint-packet off
break syscall_dispatch
continue
x/1xb syscall_dispatch
delete
detach
""", tmp_path)
        stdout, stderr = vm.communicate(timeout=120)
    finally:
        vm.kill()
    # a hardware breakpoint first: before paging is on, the kernel's address has no
    # memory for an int3 (on QEMU as here), then one planted as an int3 byte
    assert "Hardware assisted breakpoint 1 at" in out, out
    assert "Breakpoint 1, " in out and "Breakpoint 2, " in out, out
    # gdb lifts its int3 while the target is stopped: the original byte is back
    entry = symbol(image_path("kernel"), "syscall_dispatch")
    with open(image_path("kernel"), "rb") as f:
        text = ELFFile(f).get_section_by_name(".text")
        first = text.data()[entry - text["sh_addr"]]
    assert re.search(rf"<syscall_dispatch>:\s+0x{first:02x}", out), out
    assert vm.returncode == STATUS, stderr.decode()
    assert untimed(stdout.decode()) == reference["kernel"]


class Reader:
    """A process's standard output, read as it comes (to wait for a line)."""

    def __init__(self, stream) -> None:
        import threading
        self.data = b""
        self.cond = threading.Condition()
        self.thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self.thread.start()

    def _pump(self, stream) -> None:
        for chunk in iter(lambda: stream.read1(4096), b""):
            with self.cond:
                self.data += chunk
                self.cond.notify_all()

    def wait_for(self, marker: bytes, timeout: float = 60) -> None:
        with self.cond:
            assert self.cond.wait_for(lambda: marker in self.data, timeout), self.data[-300:]


def test_a_debugger_that_vanishes_mid_run(tmp_path):
    """gdb attaches to the shell under binary translation, continues it with a breakpoint
    at proc_fork and a watchpoint on kstats.forks set, and is killed while the guest runs:
    the connection closes mid-run, the stub forgets both -- the monitor too: proc_fork,
    translated only afterwards, must not get the breakpoint back -- the next fork stops
    nobody, and the shell's session is, timing aside, the one it has with nobody attached."""
    path = image_path("kernel")
    keys = [b"echo running\n", b"syscall iters=2\n", b"exit 3\n"]
    alone = subprocess.run([sys.executable, "-m", "ringvisor", "run", "kernel", "--mode", "bt"],
                           input=b"".join(keys), capture_output=True, timeout=120)
    assert alone.returncode == (3 << 1) | 1, alone.stderr.decode()
    port = free_port()
    vm = start("kernel", "bt", port, cmdline="", stdin=subprocess.PIPE)
    ready = tmp_path / "continuing"
    script = tmp_path / "script.gdb"
    forks = symbol(path, "kstats") + 20
    script.write_text(f"set pagination off\nset tcp connect-timeout 60\n"
                      f"target remote 127.0.0.1:{port}\nbreak proc_fork\n"
                      f"watch *(int *){forks:#x}\nshell touch {ready}\ncontinue\n")
    log = open(tmp_path / "gdb.log", "wb")
    out = Reader(vm.stdout)
    out.wait_for(b"type help\n$ ")                   # the shell waits for its input
    debugger = subprocess.Popen(["gdb", "-q", "-nx", "-batch", "-x", str(script), str(path)],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 120
        while not ready.exists():
            assert time.monotonic() < deadline and debugger.poll() is None, \
                (tmp_path / "gdb.log").read_text()
            time.sleep(0.05)
        # the shell answers: gdb's continue (after its Z packets) is in, the VM runs
        vm.stdin.write(keys[0])
        vm.stdin.flush()
        out.wait_for(b"running\n$ ")
        debugger.kill()                                # gone mid-run, without a word
        debugger.wait(timeout=60)
        vm.stdin.write(b"".join(keys[1:]))             # a fork: nobody to stop for
        vm.stdin.close()
        vm.wait(timeout=120)
        out.thread.join(timeout=60)
        stderr = vm.stderr.read().decode()
    finally:
        debugger.kill()
        vm.kill()
    assert vm.returncode == (3 << 1) | 1, stderr
    assert untimed(out.data.decode()) == untimed(alone.stdout.decode())
    assert b"syscall: iters=2 checksum=" in out.data
    assert stderr.strip() == ("ringvisor: the debugger went away; the guest runs on "
                              f"(waiting for another on tcp::{port})"), stderr


# -- the protocol, from a client of our own ------------------------------------------------

class Client:
    def __init__(self, port: int) -> None:
        deadline = time.monotonic() + 60
        while True:
            try:
                self.s = socket.create_connection(("127.0.0.1", port), timeout=60)
                break
            except ConnectionRefusedError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        self.buf = b""

    def _read(self) -> bytes:
        data = self.s.recv(65536)
        assert data, "the stub closed the connection"
        return data

    def raw(self, data: bytes) -> None:
        self.s.sendall(data)

    def packet(self) -> bytes:
        while True:
            self.buf = self.buf.lstrip(b"+")
            if self.buf.startswith(b"-"):
                return b"-"
            m = re.match(rb"\$([^#]*)#([0-9a-f]{2})", self.buf, re.S)
            if m:
                self.buf = self.buf[m.end():]
                assert int(m.group(2), 16) == sum(m.group(1)) & 0xFF
                self.raw(b"+")
                return m.group(1)
            self.buf += self._read()

    def ask(self, payload: bytes) -> bytes:
        self.raw(b"$" + payload + b"#%02x" % (sum(payload) & 0xFF))
        return self.packet()

    def close(self) -> None:
        self.s.close()


def test_interrupt_memory_and_a_dropped_connection():
    """The shell idles with its timer running; Ctrl-C stops it anywhere, memory reads and
    binary writes work through its page tables, a bad checksum is refused, and when the
    connection drops the guest runs on: a second debugger may come, and the shell answers."""
    port = free_port()
    vm = start("kernel", "trapemu", port, "--serial", "stdio", cmdline="",
               stdin=subprocess.PIPE)
    try:
        c = Client(port)
        assert c.ask(b"qSupported:swbreak+;hwbreak+").startswith(b"PacketSize=")
        assert c.ask(b"?").startswith(b"T05")
        regs = c.ask(b"g")
        assert len(regs) == 2 * (16 * 4 + 8 * 10 + 8 * 4 + 8 * 16 + 4 + 4 * 4)
        c.raw(b"$c#63")
        time.sleep(0.3)
        c.raw(b"\x03")                                      # Ctrl-C
        stop = c.packet()
        assert stop.startswith(b"T02"), stop
        eip = int.from_bytes(bytes.fromhex(c.ask(b"p8").decode()), "little")
        code = bytes.fromhex(c.ask(b"m%x,4" % eip).decode())
        assert len(code) == 4
        assert c.ask(b"m%x,4" % 0xBFFFF000).startswith(b"E")      # not mapped
        assert c.ask(b"m%x,4" % 0xFFC00000).startswith(b"E")      # the monitor's region
        # a binary write (with the escapes X needs) of the bytes already there
        esc = code.replace(b"}", b"}]").replace(b"#", b"}\x03").replace(b"$", b"}\x04")
        assert c.ask(b"X%x,4:" % eip + esc) == b"OK"
        assert bytes.fromhex(c.ask(b"m%x,4" % eip).decode()) == code
        # gdb's "monitor info status" (qRcmd): the monitor prompt's answer as console output
        assert c.ask(b"qRcmd," + b"info status".hex().encode()) == b"O" + \
            b"VM status: paused (by the debugger)\n".hex().encode()
        assert c.packet() == b"OK"
        c.raw(b"$g#00")                                     # wrong checksum
        assert c.packet() == b"-"
        c.close()                                           # gone without a word
        time.sleep(0.3)
        c2 = Client(port)                                   # another debugger may come
        assert c2.ask(b"?").startswith(b"T05")
        assert c2.ask(b"D") == b"OK"
        c2.close()
        stdout, stderr = vm.communicate(b"exit 3\n", timeout=120)
    finally:
        vm.kill()
    assert vm.returncode == (3 << 1) | 1, stderr.decode()
    assert b"$ " in stdout
    lines = stderr.decode().strip().splitlines()
    assert lines == ["ringvisor: the debugger went away; the guest runs on (waiting for "
                     f"another on tcp::{port})", "ringvisor: the debugger detached; the guest "
                     "runs on"], lines


def test_packets_sent_again_are_answered_once():
    """gdb sends a packet again when its '+' is two seconds late -- a VM still stopping for
    a new connection on a loaded host: the copies are acknowledged and dropped, never
    answered twice (gdb would take the second answer for its next packet's, and give up
    with "Remote replied unexpectedly").  The handshake is answered while the VM still
    runs; what needs the guest waits until it has stopped."""
    port = free_port()
    vm = start("kernel", "native", port, "--serial", "stdio", cmdline="", stdin=subprocess.PIPE)
    try:
        c = Client(port)
        query = b"qSupported:swbreak+;hwbreak+"
        again = b"$" + query + b"#%02x" % (sum(query) & 0xFF)
        c.raw(again * 3)
        assert c.packet().startswith(b"PacketSize=")
        c.raw(b"$?#3f$?#3f")                                 # needs the VM stopped
        assert c.packet().startswith(b"T05")
        assert c.ask(b"qC") == b"QC1"                        # the next answer is qC's
        assert c.ask(b"?").startswith(b"T05")                # asked again after the answer
        c.raw(b"$c#63")
        c.raw(b"\x03")
        assert c.packet().startswith(b"T02")
        assert c.ask(b"D") == b"OK"
        c.close()
        stdout, stderr = vm.communicate(b"exit 2\n", timeout=120)
    finally:
        vm.kill()
    assert vm.returncode == (2 << 1) | 1, stderr.decode()


def test_gdb_kill_ends_the_run():
    port = free_port()
    vm = start("kernel", "native", port, "-S")
    try:
        c = Client(port)
        c.ask(b"?")
        c.raw(b"$k#6b")
        stdout, stderr = vm.communicate(timeout=60)
    finally:
        vm.kill()
    assert vm.returncode == 0
    assert stderr.decode().strip() == "ringvisor: killed by the debugger"
