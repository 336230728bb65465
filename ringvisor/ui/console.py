"""The console: one terminal shared by COM1 and the monitor prompt, with QEMU's escape keys.

Like QEMU's multiplexed ``stdio`` (``-serial mon:stdio``, or ``-nographic``), the
terminal carries the guest's first serial line, and Ctrl-A starts a command:

    Ctrl-A h        this help
    Ctrl-A x        end the run
    Ctrl-A c        switch between the guest's console and the monitor prompt
    Ctrl-A Ctrl-A   a Ctrl-A for the guest

At the monitor prompt a line is read (backspace erases, Ctrl-U clears) and run
by ``hmp.execute``; the guest keeps running meanwhile unless told ``stop``, and
its output keeps coming.  The escapes are on when standard input is a terminal,
or always with ``--serial mon:stdio``.
"""

from __future__ import annotations

from ringvisor.hw.chardev import Chardev

from . import hmp

CTRL_A = 0x01
HELP = ("\nC-a h    print this help\nC-a x    exit ringvisor\n"
        "C-a c    switch between console and monitor\nC-a C-a  sends C-a\n")
PROMPT = b"(ringvisor) "


class Console(Chardev):
    """Wraps the terminal's backend: escape keys and the monitor prompt in, guest bytes out."""

    def __init__(self, backend: Chardev, session) -> None:
        self.backend = backend
        self.session = session
        self.spec = backend.spec
        self.escape = False
        self.monitor = False          # keys go to the monitor prompt
        self.line = bytearray()

    @property
    def eof(self) -> bool:
        return self.backend.eof

    def fileno(self) -> int | None:
        return self.backend.fileno()

    def write(self, data: bytes) -> None:
        self.backend.write(data)

    def _say(self, text: str | bytes) -> None:
        self.backend.write(text.encode() if isinstance(text, str) else text)

    def close(self) -> None:
        self.backend.close()

    def read(self) -> bytes:
        out = bytearray()
        for b in self.backend.read():
            if self.escape:
                self.escape = False
                if b in b"xX":
                    self._say("\nringvisor: quit (C-a x)\n")
                    self.session.quit("stopped by the user (Ctrl-A x)")
                    break
                if b in b"hH?":
                    self._say(HELP)
                elif b in b"cC":
                    self.monitor = not self.monitor
                    self.line.clear()
                    self._say(b"\n" + PROMPT if self.monitor else b"\n")
                elif b == CTRL_A:
                    self._key(CTRL_A, out)
                else:
                    self._key(CTRL_A, out)
                    self._key(b, out)
            elif b == CTRL_A:
                self.escape = True
            else:
                self._key(b, out)
        return bytes(out)

    def _key(self, b: int, out: bytearray) -> None:
        if not self.monitor:
            out.append(b)
            return
        if b in (0x0D, 0x0A):
            text = self.line.decode(errors="replace")
            self.line.clear()
            self._say("\n")
            reply = hmp.execute(text, self.session.view, self.session)
            if reply:
                self._say(reply)
            if self.monitor and self.session.machine.stop is None:
                self._say(PROMPT)
        elif b in (0x7F, 0x08):
            if self.line:
                self.line.pop()
                self._say(b"\b \b")
        elif b == 0x15:                 # Ctrl-U
            self._say(b"\b \b" * len(self.line))
            self.line.clear()
        elif 0x20 <= b < 0x7F:
            self.line.append(b)
            self._say(bytes([b]))
