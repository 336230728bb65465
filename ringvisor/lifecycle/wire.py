"""What both kinds of live migration (``migrate.py``: pre-copy, ``postcopy.py``) share:
the acknowledgement, the patience, the outcomes and the figures reported."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field

from ringvisor.errors import RingvisorError

from .stream import pack_end, pack_section

PAGES_VERSION = 1
ACK = b"RVMIGOK\n"     # destination -> source: the VM is restored, the source may let go
TIMEOUT = 30.0         # seconds without progress on the socket before giving up


class MigrationFailed(RingvisorError):
    """The migration did not complete; the VM is intact on the source."""


class MigrationLost(RingvisorError):
    """A post-copy migration broke after the destination took the VM: neither side has
    all of it any more (its CPU ran on there, part of its memory was here)."""


@dataclass
class Round:
    pages: int          # pages sent in the round
    dirtied: int        # pages written while it was on the wire (the next round's)
    instructions: int   # guest instructions retired meanwhile


@dataclass
class Migration:
    rounds: list[Round] = field(default_factory=list)
    final_pages: int = 0        # sent while paused (stop-and-copy)
    state_bytes: int = 0        # the components' state sections
    bytes_sent: int = 0
    icount: int = 0             # where the VM left the source
    downtime: float = 0.0       # paused until the destination acknowledged (s)
    seconds: float = 0.0        # connection to acknowledgement (post-copy: to the last page)
    stop: object = None         # the guest's Stop, if it ended on the source mid-way
    postcopy: bool = False
    pushed: int = 0             # post-copy: pages sent in the background
    demanded: int = 0           # post-copy: pages sent because the destination faulted on them
    faults: int = 0             # post-copy: the destination's demand faults (its count)

    @property
    def pages_sent(self) -> int:
        return sum(r.pages for r in self.rounds) + self.final_pages + self.pushed + self.demanded


def describe(e: OSError) -> str:
    if isinstance(e, socket.timeout):
        return f"no progress for {TIMEOUT:.0f} s"
    return e.strerror or str(e) or type(e).__name__


class Sender:
    """Sections onto the socket, each counted (for the END record) and measured."""

    def __init__(self, sock, out: Migration) -> None:
        self.sock, self.out, self.sections = sock, out, 0

    def __call__(self, kind: int, name: str, version: int, payload: bytes) -> None:
        data = pack_section(kind, name, version, payload)
        self.sock.sendall(data)
        self.out.bytes_sent += len(data)
        self.sections += 1

    def end(self) -> None:
        """The END record of the sections sent since the last one."""
        self.sock.sendall(pack_end(self.sections))
        self.sections = 0
