"""``xl migrate``: a DomU to the toolstack of another ringvisor host, over TCP.

Xen's ``xl migrate DOM HOST`` runs ``xl migrate-receive`` on the other host
and sends the domain's save stream through it.  Here the destination is told
first (``xl migrate-receive [HOST:]PORT``: its toolstack listens for one
domain); the source pauses the domain, waits for it to leave the CPU, sends
its stream (``saverestore.py``) preceded by its length, and holds the domain
paused until the destination answers one line: ``OK DOMID`` once it has built
the domain and let it run -- the source then destroys its copy -- or ``ERROR
text`` (a damaged stream, no memory, a name in use), or nothing (the
destination died): then the domain is resumed on the source, nothing lost.
This is a stop-and-copy migration (Xen's non-live ``xl migrate``); the
whole VM's pre-copy is ``ringvisor.lifecycle.migrate``.

The source's wait for the answer does not block its machine: the toolstack
looks at the socket between steps of the CPU, so both ends may even be in one
process (the tests).
"""

from __future__ import annotations

import socket
import struct
import threading
import time

LENGTH = struct.Struct("<Q")
MAX_STREAM = 1 << 32            # 4 GiB: no DomU here has more memory
ANSWER_S = 120.0                # how long the source waits for the destination's answer
POLL_NS = 1_000_000             # how often (virtual time) the source looks for it


class Listener:
    """The destination's side: accept one stream, hand it to ``take(data) -> answer``
    (run in the toolstack's loop by ``submit``), send the answer back."""

    def __init__(self, address: tuple[str, int], submit, log=lambda msg: None) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(address)
        self.sock.listen(1)
        self.port = self.sock.getsockname()[1]
        self.submit, self.log = submit, log
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        try:
            conn, peer = self.sock.accept()
        except OSError:
            return
        finally:
            self.sock.close()           # one domain per migrate-receive, as xl's
        with conn:
            try:
                head = _recv_exact(conn, LENGTH.size)
                (n,) = LENGTH.unpack(head)
                if n > MAX_STREAM:
                    raise ValueError(f"a stream of {n:,} bytes")
                data = _recv_exact(conn, n)
            except (OSError, ValueError) as e:
                self.log(f"migrate-receive: the stream from {peer[0]} broke off ({e})")
                return
            done = threading.Event()
            answer: list[str] = []
            self.submit(data, lambda text: (answer.append(text), done.set()))
            done.wait()
            try:
                conn.sendall(answer[0].encode() + b"\n")
            except OSError:
                pass

    def close(self) -> None:
        self.sock.close()


def _recv_exact(conn: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = conn.recv(min(1 << 20, n - len(buf)))
        if not chunk:
            raise ValueError(f"cut short after {len(buf):,} of {n:,} bytes")
        buf += chunk
    return bytes(buf)


class Sender:
    """The source's side: send the stream, then look for the answer between steps of the
    CPU (``poll``: None while waiting, else (went, text))."""

    def __init__(self, address: tuple[str, int], stream: bytes) -> None:
        self.sock = socket.create_connection(address, timeout=10)
        self.sock.sendall(LENGTH.pack(len(stream)) + stream)
        self.sock.setblocking(False)
        self.deadline = time.monotonic() + ANSWER_S
        self.buf = bytearray()

    def poll(self) -> tuple[bool, str] | None:
        try:
            chunk = self.sock.recv(4096)
        except (BlockingIOError, InterruptedError):
            if time.monotonic() < self.deadline:
                return None
            return self._end(False, "the destination did not answer")
        except OSError as e:
            return self._end(False, f"the destination went away ({e.strerror or e})")
        if not chunk:
            if self.buf.endswith(b"\n"):
                return self._answer()
            return self._end(False, "the destination went away before answering")
        self.buf += chunk
        return self._answer() if self.buf.endswith(b"\n") else None

    def _answer(self) -> tuple[bool, str]:
        text = self.buf.decode(errors="replace").strip()
        if text.startswith("OK"):
            return self._end(True, text[2:].strip())
        return self._end(False, text.removeprefix("ERROR").strip() or "refused")

    def _end(self, went: bool, text: str) -> tuple[bool, str]:
        self.sock.close()
        return went, text
