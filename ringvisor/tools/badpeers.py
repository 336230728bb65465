"""The bad-input fuzzer's peers (``badinput``'s ``migration`` and ``xl`` targets): the
other end of a socket, misbehaving.

- ``migration``: live migration between two ringvisors, with one side replaced by a
  hostile one.  As the destination's source: a real pre-copy stream (recorded once)
  mutated -- sections forged and re-checksummed, bytes flipped, cut short, a section
  claiming gigabytes, garbage instead of a stream -- then the connection closed.  As
  the source's destination: nobody listening, a peer that hangs up at once, after a
  few bytes or after the whole stream, answers garbage or half an acknowledgement,
  or resets the connection.  Each side must end in one line (``BadImage`` on the
  destination, ``MigrationFailed`` on the source, no traceback), and the source's VM
  must be intact: dirty logging off, and, run on to a fixed instruction, the very
  state an unmigrated run has there.
- ``xl``: ``ringvisor xl`` against a state directory with no host, a stale socket, a
  socket path that is a directory or too long for AF_UNIX, a file for a directory, a
  host that dies before or during its answer, and hosts that answer garbage (mutated
  replies of the right and wrong shapes).  Exit status 1 or 2 with exactly one line.

Each case is seeded (``random.Random(f"{target}:{seed}")``); the peer runs on a thread
of this process and always closes its end, so no case waits on a timeout.
"""

from __future__ import annotations

import hashlib
import io
import json
import random
import socket
import struct
import threading
from pathlib import Path

from .mutate import mutate_bytes, mutate_image

MIG_KERNEL, MIG_MEM, MIG_AT, MIG_END = "bench-sieve", 8, 20_000, 400_000
LINK = 1_000_000        # Mbit/s: a few guest instructions a page, so rounds stay short
END_SIZE = 26           # the END record: kind, name length, version, length, count, crc


# -- migration ---------------------------------------------------------------------------
class MigrationCorpus:
    """A recorded pre-copy stream of ``bench-sieve`` at instruction MIG_AT, and the state an
    unmigrated run reaches at MIG_END (what an intact source must reach too)."""

    def __init__(self) -> None:
        from ringvisor.lifecycle import migrate as MIG
        m, mon = self.boot()
        got = bytearray()
        srv = socket.create_server(("127.0.0.1", 0))

        def record() -> None:
            conn, _ = srv.accept()
            with conn:
                while not _complete(got):
                    chunk = conn.recv(1 << 16)
                    if not chunk:
                        return
                    got.extend(chunk)
                conn.sendall(MIG.ACK)
        t = threading.Thread(target=record, daemon=True)
        t.start()
        MIG.migrate(m, mon, _info(), srv.getsockname()[:2], LINK)
        t.join(30)
        srv.close()
        self.stream = bytes(got)
        ref, _ = self.boot()
        ref.run(MIG_END - ref.cpu.state.icount)
        self.reference = fingerprint(ref)

    @staticmethod
    def boot():
        from ringvisor.guests.build import image_path
        from ringvisor.hw.machine import read_image
        from ringvisor.vmm import create_vm
        kernel = image_path(MIG_KERNEL)
        m, mon = create_vm(read_image(kernel), "native", "", MIG_MEM, output=lambda b: None,
                           image_name=str(kernel))
        m.run(MIG_AT)
        m.stop = None
        return m, mon


def _complete(data: bytearray) -> bool:
    """``data`` ends with the END record of a whole stream (the source then waits)."""
    from ringvisor.lifecycle.stream import SectionReader
    if len(data) < END_SIZE or data[-END_SIZE] != 0xFF or data[-END_SIZE + 1] != 0:
        return False
    try:
        r = SectionReader(io.BytesIO(bytes(data)))
        for _ in r:
            pass
        return r.done
    except Exception:                     # noqa: BLE001 -- not complete yet
        return False


def _info():
    from ringvisor.lifecycle.vm import VmInfo
    return VmInfo(image=MIG_KERNEL)


def fingerprint(m) -> str:
    st = m.cpu.state
    h = hashlib.sha256(bytes(m.mem.ram))
    h.update(repr((st.icount, list(st.regs), st.eip, m.cpu.get_eflags())).encode())
    return h.hexdigest()


def _serve_once(handler, srv=None) -> tuple[tuple[str, int], threading.Thread]:
    """A listening socket (by default on loopback) whose first connection goes to
    ``handler(conn)`` on a thread, then is closed."""
    srv = srv or socket.create_server(("127.0.0.1", 0))
    where = srv.getsockname()

    def run() -> None:
        try:
            conn, _ = srv.accept()
        finally:
            srv.close()
        try:
            handler(conn)
        except OSError:
            pass
        finally:
            conn.close()
    t = threading.Thread(target=run, daemon=True)

    def release() -> None:
        """A command that never connected (refused before asking): end the accept."""
        family = socket.AF_UNIX if isinstance(where, str) else srv.family
        try:
            with socket.socket(family) as c:
                c.connect(where)
        except OSError:
            pass
    t.release = release
    t.start()
    return (where if isinstance(where, str) else where[:2]), t


def _reset(conn) -> None:
    """Close with a TCP reset (SO_LINGER 0): the peer sees ECONNRESET, not an end."""
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def hostile_source(rng: random.Random, stream: bytes, others: list[bytes]) -> bytes:
    """What a hostile source sends a destination, from a valid stream."""
    from ringvisor.lifecycle.stream import SECTION_HEAD, SECTION_TAIL, pack_header, MIGRATION
    r = rng.random()
    if r < 0.45:
        return mutate_image(rng, stream, others)
    if r < 0.6:
        return mutate_bytes(rng, stream, others)
    if r < 0.7:
        return stream[:rng.randrange(len(stream))]                 # closes early
    if r < 0.8:                  # a section claiming more than any peer will send
        head = SECTION_HEAD.pack(rng.choice([1, 4, 5]), 1) + b"x" + SECTION_TAIL.pack(
            1, rng.choice([1 << 32, (1 << 34) - 1, 1 << 34, 1 << 40, 1 << 63]))
        return pack_header(MIGRATION) + head + rng.randbytes(rng.randrange(0, 4096))
    if r < 0.9:
        return rng.randbytes(rng.randrange(0, 2048))               # not a stream at all
    return pack_header(rng.choice([0, 1, 3, 0xFFFFFFFF]))[:rng.randrange(1, 17)]


def run_destination_case(corpus: MigrationCorpus, seed: int):
    """``Incoming.receive`` fed a hostile source's bytes: one line, or a VM that runs."""
    from ringvisor.lifecycle import migrate as MIG
    from ringvisor.lifecycle.stream import POSTCOPY, BadImage
    from ringvisor.vmm import attach_monitor
    rng = random.Random(f"migration:{seed}")
    data = hostile_source(rng, corpus.stream, [corpus.stream[:4096]])
    if len(data) >= 16 and data[:8] == b"RINGVSAV" and struct.unpack_from("<I", data, 12)[0] \
            & POSTCOPY:
        return None              # (post-copy forks a page server: not in this process)
    inc = MIG.Incoming(("127.0.0.1", 0))
    rst = rng.random() < 0.2

    def send() -> None:
        try:
            with socket.create_connection((inc.host, inc.port)) as s:
                s.sendall(data)
                if rst:
                    _reset(s)
        except OSError:
            pass
    t = threading.Thread(target=send, daemon=True)
    t.start()
    what = f"destination: {len(data)} bytes"
    try:
        m, mon, info = inc.receive(attach_monitor, "jit", lambda b: None)
    except BadImage as e:
        return _one_line("migration", seed, what, str(e))
    except Exception as e:                              # noqa: BLE001 -- the finding itself
        return _traceback("migration", seed, what, e)
    finally:
        inc.close()
        t.join(30)
    try:
        m.run(3000)                     # a forged VM that was taken runs, or stops cleanly
    except Exception as e:                              # noqa: BLE001 -- the finding itself
        return _traceback("migration", seed, what + ", then running it", e)
    return None


DESTINATIONS = ["nobody", "close", "some", "all-close", "garbage", "half-ack", "reset",
                "flood"]


def run_source_case(corpus: MigrationCorpus, seed: int):
    """``migrate`` towards a hostile destination: one line, and the VM intact."""
    from ringvisor.lifecycle import migrate as MIG
    rng = random.Random(f"migration-source:{seed}")
    kind = DESTINATIONS[seed % len(DESTINATIONS)]
    limit = rng.randrange(1, len(corpus.stream))

    def read(conn, n: int) -> None:
        while n > 0:
            chunk = conn.recv(min(n, 1 << 16))
            if not chunk:
                return
            n -= len(chunk)

    def handler(conn) -> None:
        if kind == "some":
            read(conn, limit)
        elif kind == "reset":
            read(conn, limit)
            _reset(conn)
        elif kind in ("all-close", "garbage", "half-ack", "ack-then-junk", "flood"):
            read(conn, len(corpus.stream) - 64)    # (the stream's end varies: not all of it)
            if kind == "garbage":
                conn.sendall(rng.randbytes(8))
            elif kind == "half-ack":
                conn.sendall(MIG.ACK[:rng.randrange(1, len(MIG.ACK))])
            elif kind == "flood":
                conn.sendall(rng.randbytes(1 << 16))
    if kind == "nobody":
        srv = socket.create_server(("127.0.0.1", 0))
        addr = srv.getsockname()[:2]
        srv.close()
        t = None
    else:
        addr, t = _serve_once(handler)
    m, mon = corpus.boot()
    what = f"source: a destination that is {kind!r}"
    try:
        MIG.migrate(m, mon, _info(), addr, LINK)
        return _finding("migration", seed, what, "the migration succeeded")
    except MIG.MigrationFailed as e:
        found = _one_line("migration", seed, what, str(e))
        if found:
            return found
    except Exception as e:                              # noqa: BLE001 -- the finding itself
        return _traceback("migration", seed, what, e)
    finally:
        if t is not None:
            t.join(30)
    if m.mem.dirty is not None or m.cpu.mmu.parked_s:
        return _finding("migration", seed, what, "dirty logging left on")
    m.run(MIG_END - m.cpu.state.icount)
    if fingerprint(m) != corpus.reference:
        return _finding("migration", seed, what, "the VM is not the unmigrated run's")
    return None


# -- xl ------------------------------------------------------------------------------------
REPLIES = {   # what the toolstack answers (server.py), for mutations to start from
    "list": [{"name": "Domain-0", "id": 0, "mem": 16, "vcpus": 1, "state": "r-----",
              "time": 1.5, "type": "pv", "uuid": "00000000-0000-0000-0000-000000000000"}],
    "info": {"host": "ringvisor", "nr_cpus": 1, "total_memory": 96},
    "dmesg": "(XEN) hello\n",
    "create": {"id": 1}, "save": {"bytes": 4096}, "restore": {"id": 2},
    "vcpu-list": [{"name": "a", "id": 1, "vcpu": 0, "cpu": 0, "state": "-b-", "time": 0.1,
                   "affinity": "all / all"}],
    "sched-credit": [{"name": "a", "id": 1, "weight": 256, "cap": 0}],
    "migrate": {"remote_domid": 3, "bytes": 10, "downtime_ms": 1.0},
    "migrate-receive": {"port": 4444}, "console": {"name": "a", "history": 3},
    "shutdown": {"reason": "poweroff"},
}
XL_ARGV = [["list"], ["list", "-v"], ["list", "--json"], ["info"], ["dmesg"],
           ["create", "{cfg}"], ["save", "a", "{out}"], ["restore", "{image}"],
           ["vcpu-list"], ["sched-credit"], ["migrate", "a", "127.0.0.1:9"],
           ["migrate-receive", "4444"], ["console", "a"], ["shutdown", "-w", "a"],
           ["pause", "a"], ["top"]]
HOSTS = ["none", "stale", "dir-socket", "long", "file-dir", "close", "read-close", "reset",
         "garbage", "mutated", "partial", "refusal"]


def _reply(rng: random.Random, cmd: str) -> bytes:
    ok = {"ok": True, "result": REPLIES.get(cmd)}
    from .mutate import _mutate_json
    r = rng.random()
    if r < 0.5:
        v = ok
        for _ in range(rng.randint(1, 3)):
            v = _mutate_json(rng, v)
        return json.dumps(v).encode() + b"\n"
    if r < 0.7:
        return json.dumps(rng.choice([[], 5, "ok", None, {"ok": 1}, {"ok": False},
                                      {"ok": False, "error": ["x"]},
                                      {"ok": False, "error": "a\nb"}, {"result": 1}])).encode() + b"\n"
    if r < 0.85:
        return mutate_bytes(rng, json.dumps(ok).encode() + b"\n", [b'{"ok": false}'])
    return rng.randbytes(rng.randrange(1, 200)) + b"\n"


def xl_case(seed: int, work: Path):
    """(argv, the host's thread or None) for ``ringvisor xl`` against a misbehaving host
    set up in ``work``."""
    rng = random.Random(f"xl:{seed}")
    kind = HOSTS[seed % len(HOSTS)]
    sdir = work / "state"
    sdir.mkdir()
    argv = [a.replace("{cfg}", str(work / "a.cfg")).replace("{out}", str(work / "saved.rv"))
            .replace("{image}", str(work / "image.rv")) for a in rng.choice(XL_ARGV)]
    (work / "a.cfg").write_text('name = "a"\nkernel = "kernel-pv"\nmemory = 8\n')
    path = sdir / "xl.sock"
    thread = None
    if kind == "stale":
        s = socket.socket(socket.AF_UNIX)
        s.bind(str(path))
        s.close()
    elif kind == "dir-socket":
        path.mkdir()
    elif kind == "long":
        sdir = work / ("d" * 120)
    elif kind == "file-dir":
        sdir = work / "afile"
        sdir.write_text("not a directory\n")
    elif kind != "none":
        srv = socket.socket(socket.AF_UNIX)
        srv.bind(str(path))
        srv.listen(1)
        cmd = argv[0]

        def host(conn) -> None:
            if kind != "close":
                conn.makefile("rb").readline()
            if kind == "reset":
                _reset(conn)
            elif kind == "partial":
                conn.sendall(json.dumps({"ok": True, "result": REPLIES.get(cmd)}).encode()
                             [:rng.randrange(1, 20)])
            elif kind == "refusal":
                conn.sendall(b'{"ok": false, "error": "no such domain"}\n')
            elif kind in ("garbage", "mutated"):
                conn.sendall(_reply(rng, cmd))
        thread = _serve_once(host, srv)[1]
    return ["xl", "--state-dir", str(sdir)] + argv, thread


# -- findings ------------------------------------------------------------------------------
def _finding(target: str, seed: int, what: str, detail: str):
    from .badinput import Finding
    return Finding(target, seed, what, [], detail)


def _one_line(target: str, seed: int, what: str, msg: str):
    if "\n" in msg or not msg.strip():
        return _finding(target, seed, f"{what}: not one line", repr(msg[:300]))
    return None


def _traceback(target: str, seed: int, what: str, e: BaseException):
    import traceback
    tb = "".join(traceback.format_exception(e, limit=-6)).strip()
    return _finding(target, seed, f"{what}: traceback", tb.splitlines()[-1] + "\n    "
                    + tb.replace("\n", "\n    "))


