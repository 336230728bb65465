"""The POST-code ports: where firmware and CPU test ROMs report their progress.

Register map
------------
    port   dir  register
    0x80    W   a POST code (the diagnostic port every PC BIOS writes)
    0x190   W   a POST code (the port CPU test ROMs such as test386.asm use)
    both    R   all ones (QEMU's ioport80 reads nothing back)

Each write is kept as ``(instruction count, port, value)`` in ``codes`` (the
last 4096 of them): a logic analyser on the bus, with no effect on the guest.
"""

from __future__ import annotations

from collections import deque

from ringvisor.hw.bus import IoBus

POST_PORTS = (0x80, 0x190)
KEEP = 4096


class PostPorts:
    def __init__(self, bus: IoBus, icount=lambda: 0) -> None:
        self.icount = icount
        self.codes: deque[tuple[int, int, int]] = deque(maxlen=KEEP)
        self.writes = 0
        for port in POST_PORTS:
            bus.register(port, 1, self._read, self._write, "post", max_access=1, owner=self)

    def _read(self, port: int, size: int) -> int:
        return 0xFF

    def _write(self, port: int, size: int, value: int) -> None:
        self.writes += 1
        self.codes.append((self.icount(), port, value & 0xFF))

    @property
    def last(self) -> int | None:
        return self.codes[-1][2] if self.codes else None

    def log_text(self) -> str:
        """One line a code: instruction count, port, value (what ``--post-log`` writes)."""
        return "".join(f"{n} {port:#x} {v:#04x}\n" for n, port, v in self.codes)

    # -- state (ringvisor.lifecycle): the analyser's record travels with the machine ----
    state_name = "post"
    state_version = 1

    def get_state(self) -> dict:
        return {"writes": self.writes, "codes": [list(c) for c in self.codes]}

    def set_state(self, state: dict) -> None:
        self.writes = state["writes"]
        self.codes = deque((tuple(c) for c in state["codes"]), maxlen=KEEP)
