"""The consoles: QEMU's ``-serial`` backends, the escape keys and the monitor prompt, and
one clear line for every backend that cannot be opened."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time

import pytest

from ringvisor import cli


def rv(*args: str, stdin: bytes = b"", timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ringvisor", *args], input=stdin,
                          capture_output=True, timeout=timeout)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_until(s: socket.socket, marker: bytes) -> bytes:
    data = b""
    while marker not in data:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def unix_client(path, vm: subprocess.Popen) -> socket.socket:
    """Connect to the server ``vm`` makes at ``path`` once it is there."""
    deadline = time.monotonic() + 60
    while True:
        s = socket.socket(socket.AF_UNIX)
        try:
            s.connect(str(path))                # the file may be there before listen()
            return s
        except (FileNotFoundError, ConnectionRefusedError):
            s.close()
            assert time.monotonic() < deadline and vm.poll() is None, "no socket"
            time.sleep(0.05)


def test_escape_keys_and_the_monitor_prompt(tmp_path):
    """Ctrl-A h, Ctrl-A c and the monitor's commands on the guest under binary translation,
    then back to the guest's shell, which exits with the status it is given."""
    keys = (b"\x01h\x01c"
            b"info status\ninfo registers\nx/3i $eip\nx/4xw $esp\nx/2c $esp\ncont\n"
            b"info status\nstop\ninfo status\nsavevm held the VM stopped\ncont\nsavevm\n"
            b"loadvm held\nbogus\nx/2q 0\n\x01c"
            b"exit 4\n")
    # -S: held before the first instruction until the monitor's cont, as on QEMU
    store = tmp_path / "snapshots"
    p = rv("run", "kernel", "--mode", "bt", "--serial", "mon:stdio", "-S", "--store", str(store),
           stdin=keys)
    out = p.stdout.decode()
    assert p.returncode == (4 << 1) | 1, p.stderr.decode()
    assert "C-a x    exit ringvisor" in out and "C-a c    switch between console and monitor" in out
    assert out.count("(ringvisor) ") >= 10
    assert "VM status: paused (-S: before the first instruction)" in out
    # the kernel's entry point (its ELF entry), the guest's own selectors, paging off
    regs = out.split("guest registers (bt):")[1]
    assert "EIP=0010000c" in regs and "CS =0008" in regs and "CR0=00000011" in regs, regs
    assert "0010000c:  " in regs                         # x/3i $eip
    assert "VM status: paused (stop)" in out and "VM status: running" in out
    # savevm: the stopped VM as a node of the snapshot tree, which snapshot-revert resumes
    from ringvisor.lifecycle.snapshots import SnapshotTree
    node = SnapshotTree(store).node("held")
    assert f"snapshot held at instruction {node.icount:,} in {store}" in out
    assert node.mode == "bt" and node.description == "the VM stopped"
    assert "savevm NAME [DESCRIPTION]" in out
    # loadvm: back to the stopped VM's state, in place; it runs on from there
    assert f"the VM is at snapshot held (instruction {node.icount:,}) and runs on" in out
    assert "unknown command 'bogus'" in out and "bad format /2q" in out
    # the guest's own console came back: its shell read (and echoed) the command
    assert "exit 4\nkernel: halt (status 4)" in out.split("bad format")[-1]


def test_ctrl_a_x_quits():
    p = rv("run", "kernel", "--serial", "mon:stdio", stdin=b"\x01x")
    assert p.returncode == 0
    assert p.stderr.decode().strip() == "ringvisor: stopped by the user (Ctrl-A x)"


def test_file_and_tcp_server_consoles(tmp_path):
    """COM1 on a TCP server (QEMU's ``tcp::PORT,server,nowait``): a client that leaves can
    be followed by another, which types to the shell; a second port logs to a file."""
    port = free_port()
    log = tmp_path / "com2.log"
    vm = subprocess.Popen([sys.executable, "-m", "ringvisor", "run", "kernel",
                           "--serial", f"tcp::{port},server,nowait", "--serial", f"file:{log}"],
                          stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        def connect() -> socket.socket:
            deadline = time.monotonic() + 60
            while True:
                try:
                    return socket.create_connection(("127.0.0.1", port), timeout=60)
                except ConnectionRefusedError:
                    assert time.monotonic() < deadline
                    time.sleep(0.05)

        first = connect()
        first.close()                          # gone: the line waits for the next one
        second = connect()
        second.sendall(b"echo over tcp\n")
        got = read_until(second, b"over tcp\n")
        second.sendall(b"exit 6\n")
        stdout, stderr = vm.communicate(timeout=120)
        second.close()
    finally:
        vm.kill()
    assert vm.returncode == (6 << 1) | 1, stderr.decode()
    assert b"over tcp" in got
    assert stdout == b""                       # nothing on the terminal: COM1 is the socket
    assert log.read_bytes() == b""             # the teaching kernel never writes to COM2


def test_unix_server_waits_for_its_client(tmp_path):
    path = tmp_path / "console.sock"
    vm = subprocess.Popen([sys.executable, "-m", "ringvisor", "run", "kernel",
                           "--append", "run=syscall iters=2", "--serial", f"unix:{path},server"],
                          stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        s = unix_client(path, vm)
        data = read_until(s, b"kernel: halt")
        s.close()
        vm.communicate(timeout=120)
    finally:
        vm.kill()
    # nothing was lost to the wait: the boot banner is the first thing on the line
    assert data.startswith(b"ringvisor teaching kernel"), data[:80]
    assert b"syscall: iters=2 checksum=" in data
    assert not path.exists()                   # the socket file is cleaned up


@pytest.mark.parametrize("args,expect", [
    (["--serial", "file:/nonexistent-dir/x.log"], "--serial file:/nonexistent-dir/x.log: cannot write"),
    (["--serial", "bogus:1"], "unknown backend"),
    (["--serial", "stdoi"], "--serial stdoi: unknown backend (stdio, mon:stdio, null, file:PATH"),
    (["--serial", "file:"], "--serial file:: expected file:PATH"),
    (["--serial", "unix:,server"], "--serial unix:,server: expected unix:PATH"),
    (["--serial", "tcp:"], "--serial tcp:: expected tcp:[HOST]:PORT"),
    (["--serial", "tcp:localhost"], "--serial tcp:localhost: expected tcp:[HOST]:PORT"),
    (["--serial", "tcp::http"], "--serial tcp::http: bad port 'http'"),
    (["--serial", "file:/proc/nonexistent-dir/x"], "cannot write"),
    (["--serial", "tcp::{port}"], "cannot connect"),
    (["--serial", "tcp::{busy},server,nowait"], "cannot listen: in use"),
    (["--serial", "tcp::99999,server"], "out of range"),
    (["--serial", "tcp::1,server,bogus"], "unknown option 'bogus'"),
    (["--serial", "null", "--serial", "null", "--serial", "null"], "has 2 serial ports"),
    (["--serial", "stdio", "--serial", "mon:stdio"], "one serial port only"),
    (["--gdb", "tcp::{busy}"], "--gdb tcp::{busy}: cannot listen: in use"),
    (["--gdb", "udp::5"], "expected tcp:[HOST]:PORT or unix:PATH"),
    (["--gdb", "1234"], "--gdb 1234: expected tcp:[HOST]:PORT or unix:PATH"),
    (["--gdb", "unix:"], "--gdb unix:: expected tcp:[HOST]:PORT or unix:PATH"),
    (["--gdb", "tcp:"], "--gdb tcp:: expected tcp:[HOST]:PORT"),
    (["--gdb", "tcp::0x10"], "--gdb tcp::0x10: bad port '0x10'"),
    (["--gdb", "tcp::70000"], "--gdb tcp::70000: port 70000 is out of range"),
    (["--gdb", "unix:/nonexistent-dir/gdb.sock"], "--gdb unix:/nonexistent-dir/gdb.sock: "
                                                  "cannot listen"),
    (["--web", "{busy}"], "--web {busy}: cannot listen: in use"),
])
def test_bad_backends_are_one_line(args, expect, capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        b = busy.getsockname()[1]
        args = [a.format(port=free_port(), busy=b) for a in args]
        status = cli.main(["run", "kernel", "--max-instructions", "1000", *args])
    err = capsys.readouterr().err
    assert status == 2
    assert "Traceback" not in err
    lines = [l for l in err.splitlines() if l.strip()]
    assert len(lines) == 1 and expect.format(busy=b) in lines[0], err


# -- COM2, against QEMU ----------------------------------------------------------------------

def _com2_image():
    from hwtests import build_kernel
    if shutil.which("gcc") is None or shutil.which("ld") is None:
        pytest.skip("guest toolchain (gcc, ld) not installed")
    return build_kernel("com2")


def _on_ringvisor(image, ports: int) -> str:
    from ringvisor.hw.machine import Machine, read_image
    out = bytearray()
    m = Machine(32, output=out.extend, serial_ports=ports)   # COM2 with nothing attached: null
    m.boot_multiboot(read_image(image), image_name=str(image))
    stop = m.run(50_000_000)
    assert stop.reason == "exit" and stop.status == 1, stop
    return out.decode("latin-1").replace("\r\n", "\n")


@pytest.mark.qemu
def test_com2_as_on_qemu():
    from ringvisor.tools.qemu import find_qemu, run_qemu
    if find_qemu() is None:
        pytest.skip("qemu-system-i386 is not installed")
    image = _com2_image()
    for ports, extra in ((1, ()), (2, ("-serial", "null"))):
        q = run_qemu(image, timeout=60, extra_args=extra)
        ours = _on_ringvisor(image, ports)
        assert ours == q.output.decode("latin-1").replace("\r\n", "\n"), (ports, ours)
        assert ("com2: absent" in ours) == (ports == 1)
    assert "loopback: 4 bytes on 4 IRQ3s, IIR in the handler 0x04: com2" in ours
    assert "reset: LSR=0x60 IIR=0x01 IER=0x00 LCR=0x00" in ours


def test_com2_talks_to_a_unix_socket(tmp_path):
    image = _com2_image()
    path, log = tmp_path / "com2.sock", tmp_path / "com1.log"
    vm = subprocess.Popen([sys.executable, "-m", "ringvisor", "run", str(image),
                           "--serial", f"file:{log}", "--serial", f"unix:{path},server"],
                          stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        s = unix_client(path, vm)
        s.sendall(b"hi there\n")            # there before the guest starts: nothing is lost
        got = read_until(s, b"\n")
        vm.communicate(timeout=120)
        s.close()
    finally:
        vm.kill()
    assert vm.returncode == 1
    assert got == b"HI THERE\n"
    assert "from the host: 9 bytes" in log.read_text()


def test_com2_travels_with_the_vm():
    """COM2's state -- its registers, its interrupt, and input the host sent that the guest
    has not read yet (held back while the guest keeps the line in loopback) -- is part of
    the VM: saved and restored, and carried by a live migration to a destination that
    builds the machine before any device's state arrives.  Either way the guest's output,
    on both ports, is that of a run never interrupted."""
    import threading

    from ringvisor.hw.machine import Machine, read_image
    from ringvisor.lifecycle import migrate as MIG
    from ringvisor.lifecycle.stream import BadImage
    from ringvisor.lifecycle.vm import VmInfo, capture, restore

    image = read_image(_com2_image())

    def midway():
        com1, com2 = bytearray(), bytearray()
        m = Machine(32, output=com1.extend, serial_ports=2)
        m.uarts[1].output = com2.extend
        m.boot_multiboot(image)
        while not m.uarts[1].s.mcr & 0x10:              # until the guest turns loopback on
            assert m.run(500).reason == "limit"
            m.stop = None
        m.feed_serial(1, b"hi there\n")                 # held back until loopback ends
        assert m.uarts[1].has_pending_input()
        return m, com1, com2

    m, com1, com2 = midway()
    assert m.run(50_000_000).reason == "exit"
    whole = (bytes(com1), bytes(com2))
    assert b"from the host: 9 bytes" in whole[0] and whole[1] == b"HI THERE\n", whole

    def finish(m2, com1, com2):
        out1 = bytearray()
        m2.output = out1.extend
        m2.uarts[0].output = out1.extend
        m2.uarts[1].output = com2.extend
        assert m2.run(50_000_000).reason == "exit"
        return bytes(com1) + bytes(out1), bytes(com2)

    m, com1, com2 = midway()
    m2, _, _ = restore(capture(m, None, VmInfo()))
    assert len(m2.uarts) == 2
    assert finish(m2, com1, com2) == whole

    m, com1, com2 = midway()
    inc = MIG.Incoming(("127.0.0.1", 0))
    got: dict = {}

    def serve():
        try:
            got["vm"] = inc.receive()
        except BadImage as e:
            got["error"] = str(e)
    t = threading.Thread(target=serve, daemon=True)
    t.start()
    # a fast link: the rounds cost the guest next to no time, and it is still midway
    r = MIG.migrate(m, None, VmInfo(), (inc.host, inc.port), link_mbit=10**9)
    t.join(60)
    assert r.stop is None and "error" not in got, got
    m2, _, info = got["vm"]
    assert info.serial_ports == 2 and len(m2.uarts) == 2
    assert finish(m2, com1, com2) == whole


def test_savevm_refuses_a_writable_disk(tmp_path):
    """The image file is not part of a snapshot: savevm and loadvm refuse a VM that writes a
    disk (as QEMU's savevm refuses raw drives), and the guest runs on."""
    img = tmp_path / "disk.img"
    img.write_bytes(bytes(2048 * 512))
    keys = b"\x01csavevm held\nloadvm held\ncont\n\x01cexit 3\n"
    p = rv("run", "kernel", "--disk", str(img), "--serial", "mon:stdio", "-S",
           "--store", str(tmp_path / "snapshots"), stdin=keys)
    out = p.stdout.decode()
    assert p.returncode == (3 << 1) | 1, p.stderr.decode()
    for cmd in ("savevm", "loadvm"):
        assert f"{cmd}: not with a writable disk ({img}" in out, out
    assert not (tmp_path / "snapshots").exists()


def test_a_vm_held_with_nothing_to_resume_it_is_an_error():
    """-S without a debugger, and a console whose input ends without `cont`: nothing can
    ever resume the VM -- one line and exit status 2, not a silent success."""
    p = rv("run", "kernel", "-S", stdin=b"")
    err = p.stderr.decode().strip()
    assert p.returncode == 2 and len(err.splitlines()) == 1, err
    assert "paused with nothing left that could resume it" in err
