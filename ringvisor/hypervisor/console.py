"""The hypervisor's console: its own messages and the DomUs' ``console_io`` lines.

A ring of the last ``SIZE`` bytes, read by the toolstack with
``XEN_SYSCTL_readconsole`` (``xl dmesg``), incrementally by index as Xen's
``console_ring``: an index only grows, so a reader that keeps the last one it
got reads only what is new.
"""

from __future__ import annotations

SIZE = 64 * 1024


class HypervisorConsole:
    def __init__(self) -> None:
        self.buf = bytearray()
        self.start = 0            # the index of buf[0]
        self.listeners: list = []  # called with each write (the `xen` command's log)

    @property
    def end(self) -> int:
        return self.start + len(self.buf)

    def write(self, data: bytes) -> None:
        self.buf += data
        if len(self.buf) > SIZE:
            cut = len(self.buf) - SIZE
            del self.buf[:cut]
            self.start += cut
        for f in self.listeners:
            f(data)

    def read(self, index: int, count: int) -> tuple[bytes, int]:
        """Up to ``count`` bytes from ``index`` (or the oldest kept); (data, next index)."""
        i = max(index, self.start) - self.start
        data = bytes(self.buf[i:i + count])
        return data, self.start + i + len(data)

    def clear(self) -> None:
        self.start = self.end
        self.buf.clear()

    def text(self) -> str:
        return self.buf.decode("utf-8", "replace")
