"""Post-copy live migration: the destination runs the VM before its memory is there,
and the output is still one uninterrupted run's; the death of either side after the
switch loses the VM, and each side says so in one line with exit status 2.

The reference is the same guest run without migrating (``test_migration.py``'s).
The two sides are two processes (the destination forks a page server of its own);
where a side must misbehave, the test plays it on a socket with the real stream.
"""

from __future__ import annotations

import os
import select
import socket
import threading

import pytest

from ringvisor.lifecycle import migrate as MIG, postcopy as POST, userfault
from ringvisor.lifecycle.stream import SectionReader
from ringvisor.lifecycle.vm import VmInfo
from ringvisor.lifecycle.wire import Migration

from test_migration import AT, CMDLINE, _rv, _wait_port, boot, reference  # noqa: F401



def _userfaultfd_refused() -> str:
    """Why this host gives no userfaultfd ('' where it does): a container's seccomp
    profile or vm.unprivileged_userfaultfd may refuse it where the syscall exists."""
    try:
        userfault.check()
    except userfault.Unavailable as e:
        return str(e)
    return ""


_REFUSED = _userfaultfd_refused()
pytestmark = pytest.mark.skipif(bool(_REFUSED), reason=_REFUSED or "userfaultfd works")


def test_missing_pages_are_supplied_by_another_process():
    """The mechanism alone: a child touches pages of registered memory; each read waits
    for the page the parent supplies (or maps zero), a write lands on the supplied page."""
    a, b = socket.socketpair()
    pid = os.fork()
    if pid == 0:                                    # pragma: no cover (the child)
        a.close()
        mem = userfault.anonymous(8 * 4096)
        fd = userfault.register(mem)
        socket.send_fds(b, [userfault.address(mem).to_bytes(8, "little")], [fd])
        os.close(fd)
        mem[6 * 4096 + 1] = 0xEE
        ok = (mem[5 * 4096:5 * 4096 + 2] == b"\x05\x05" and mem[3 * 4096] == 0
              and mem[6 * 4096:6 * 4096 + 3] == b"\x06\xEE\x06")
        os._exit(0 if ok else 1)
    b.close()
    msg, fds, _, _ = socket.recv_fds(a, 8, 1)
    filler = userfault.Filler(fds[0], int.from_bytes(msg, "little"), 8)
    seen = []
    while len(seen) < 3:
        assert select.select([filler.fd], [], [], 30)[0], seen
        for p in filler.faults():
            seen.append(p)
            if p == 3:
                filler.zero(3, 1)
            else:
                filler.copy(p, bytes([p]) * 4096)
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
    assert seen == [6, 5, 3]                        # in the order the child touched them


@pytest.mark.parametrize("mode", ["native", "trapemu"])
def test_cli_postcopy_is_one_uninterrupted_run(mode, reference):  # noqa: F811
    dst = _rv("run", "kernel", "--mode", mode, "--incoming", "127.0.0.1:0", "--stats")
    port = _wait_port(dst)
    src = _rv("run", "kernel", "--mode", mode, "--append", CMDLINE, "--migrate-to",
              f"127.0.0.1:{port}", "--migrate-at", str(AT), "--postcopy")
    s_out, s_err = src.communicate(timeout=300)
    d_out, d_err = dst.communicate(timeout=300)
    assert src.returncode == 0, s_err
    assert dst.returncode == 1, d_err               # the kernel's own exit status
    assert b"(post-copy): downtime" in s_err and b"on demand" in s_err, s_err
    assert b"post-copy: all" in d_err, d_err
    assert s_out + d_out == reference(mode)
    # and at the same instruction (the monitor's state came along: its entries are time)
    assert f"instructions retired: {reference.icount(mode):,}\n".encode() in d_err, d_err


def test_a_source_that_dies_after_the_switch_loses_the_vm():
    """The 'source' sends the VM's state, takes the acknowledgement and hangs up with
    every page still on it: the destination cannot go on -- one line, exit status 2."""
    dst = _rv("run", "kernel", "--incoming", "127.0.0.1:0")
    port = _wait_port(dst)
    m, mon = boot("native", bytearray())
    with socket.create_connection(("127.0.0.1", port)) as s:
        POST.send_vm(m, mon, VmInfo(cmdline=CMDLINE), s, Migration())
        s.settimeout(60)
        got = b""
        while MIG.ACK not in got:                   # demand faults, then the ACK
            chunk = s.recv(64)
            assert chunk, got
            got += chunk
    out, err = dst.communicate(timeout=60)
    assert dst.returncode == 2, err
    lines = [x for x in err.decode().splitlines() if "received the VM" not in x]
    assert len(lines) == 1 and "the source is gone" in lines[0], lines
    assert "cannot go on" in lines[0] and "pages still there" in lines[0]


def test_a_destination_that_dies_after_the_switch_loses_the_vm():
    """It takes the VM (reads the state, acknowledges) and hangs up: the source cannot
    run it on (the VM ran on there) and says the VM is lost."""
    srv = socket.create_server(("127.0.0.1", 0))

    def take_and_die():
        conn, _ = srv.accept()
        list(SectionReader(conn.makefile("rb", buffering=0)))
        conn.sendall(MIG.ACK)
        conn.close()
        srv.close()
    t = threading.Thread(target=take_and_die, daemon=True)
    t.start()
    m, mon = boot("native", bytearray())
    with pytest.raises(MIG.MigrationLost, match="the VM is lost"):
        MIG.migrate(m, mon, VmInfo(), srv.getsockname()[:2], postcopy=True)
    t.join(10)


def test_a_destination_that_refuses_the_vm_costs_the_source_nothing(reference):  # noqa: F811
    """Refused before the switch (another structure): the source runs the VM on."""
    dst = _rv("run", "kernel", "--mode", "trapemu", "--incoming", "127.0.0.1:0")
    port = _wait_port(dst)
    src = _rv("run", "kernel", "--append", CMDLINE, "--migrate-to", f"127.0.0.1:{port}",
              "--migrate-at", str(AT), "--postcopy")
    s_out, s_err = src.communicate(timeout=300)
    _, d_err = dst.communicate(timeout=60)
    assert dst.returncode == 2 and b"runs under native" in d_err, d_err
    assert src.returncode == 1 and b"keeps running here" in s_err, s_err
    assert s_out == reference("native")


def test_postcopy_needs_a_migration():
    p = _rv("run", "kernel", "--postcopy")
    _, err = p.communicate(timeout=60)
    assert p.returncode == 2 and err.decode().count("\n") == 1 and "--migrate-to" in err.decode()
