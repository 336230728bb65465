"""The host ends of the PC's serial lines: QEMU's character devices, by QEMU's spellings.

A UART's transmitter writes to its backend; the machine's main loop polls every
backend for input between slices of guest execution and waits on them while
the guest is idle (``Machine.sources``).  The backends, as ``-serial`` spells
them in QEMU (``docs/consoles.md``):

    stdio                         the terminal (raw, unechoed keys when it is one)
    file:PATH                     output to PATH (created or truncated), no input
    null                          output dropped, no input
    tcp:[HOST]:PORT               connect to a listening HOST:PORT
    tcp:[HOST]:PORT,server        listen; a client that goes away can be replaced by another;
                                  like QEMU, wait for the first client before the guest starts
                                  unless ``nowait`` (or ``wait=off``) is given
    unix:PATH[,server][,nowait]   the same over a Unix socket

An empty HOST is the loopback address, for a server too (QEMU listens on every
interface; a guest's console should not be open to the network unless asked:
give ``0.0.0.0`` for that).

A backend that cannot be opened (a port in use, an unwritable file, nobody
listening) is a :class:`ConfigError`: one line for the user, never a traceback.
Output to a peer that went away is dropped, as a UART's line with nobody on the
other end; the guest never notices.
"""

from __future__ import annotations

import errno
import os
import select
import socket
import stat
from typing import Callable

from ringvisor.errors import ConfigError

BACKLOG = 1


class HostInput:
    """Non-blocking reader of a host file descriptor (stdin: a tty or a pipe).

    ``read()`` returns whatever is available now (b"" if nothing);
    ``wait(timeout)`` blocks until input is available, EOF is reached or the
    timeout passes, and says whether input (or EOF) is there.  After EOF,
    ``eof`` is True, ``read()`` returns b"" and ``wait`` returns at once.
    ``raw=True`` puts a tty into raw mode (restored by ``close()``), so keys
    reach the guest one at a time and unechoed, as on a serial terminal.
    Built on select(), so there is no thread to stop.
    """

    def __init__(self, fd: int = 0, raw: bool = False) -> None:
        self.fd = fd
        self.eof = False
        self._saved_tty = None
        if raw and os.isatty(fd):
            import termios
            import tty
            self._saved_tty = termios.tcgetattr(fd)
            tty.setraw(fd)

    @property
    def raw(self) -> bool:
        return self._saved_tty is not None

    def _readable(self, timeout: float | None) -> bool:
        try:
            r, _, _ = select.select([self.fd], [], [], timeout)
        except (OSError, ValueError):  # closed descriptor
            self.eof = True
            return True
        return bool(r)

    def read(self, limit: int = 4096) -> bytes:
        if self.eof or not self._readable(0):
            return b""
        try:
            data = os.read(self.fd, limit)
        except BlockingIOError:
            return b""
        except OSError:
            data = b""
        if not data:
            self.eof = True
        return data

    def wait(self, timeout: float | None = None) -> bool:
        if self.eof:
            return True
        return self._readable(timeout)

    def close(self) -> None:
        if self._saved_tty is not None:
            import termios
            termios.tcsetattr(self.fd, termios.TCSADRAIN, self._saved_tty)
            self._saved_tty = None

    def __enter__(self) -> "HostInput":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Chardev:
    """A backend: ``write`` for the UART's output, ``read``/``fileno`` for its input.

    ``fileno()`` is what the machine waits on (None: nothing to wait for now);
    ``eof`` says no input will ever come again (a file, null, a closed pipe).
    """

    spec = "null"
    eof = True

    def write(self, data: bytes) -> None:
        pass

    def fileno(self) -> int | None:
        return None

    def read(self) -> bytes:
        return b""

    def close(self) -> None:
        pass


class NullChardev(Chardev):
    pass


class FileChardev(Chardev):
    def __init__(self, path: str) -> None:
        self.spec = f"file:{path}"
        try:
            self.f = open(path, "wb", buffering=0)
        except IsADirectoryError:
            raise ConfigError(f"--serial {self.spec}: is a directory") from None
        except OSError as e:
            raise ConfigError(f"--serial {self.spec}: cannot write: {e.strerror}") from None

    def write(self, data: bytes) -> None:
        try:
            self.f.write(data)
        except OSError as e:            # the disk filled up: one line, then the run stops
            raise ConfigError(f"--serial {self.spec}: cannot write: {e.strerror}") from None

    def close(self) -> None:
        self.f.close()


def _drop_stdout() -> None:
    """Forget what stdout still buffers, so that Python's own flush at exit (which would
    fail the same way) prints nothing after ringvisor's one line."""
    import sys
    try:
        sys.stdout = open(os.devnull, "w")
    except OSError:
        pass


class StdioChardev(Chardev):
    """The terminal: stdin in raw mode when it is one (keys one at a time, unechoed)."""

    spec = "stdio"

    def __init__(self, raw: bool | None = None, out: Callable[[bytes], None] | None = None) -> None:
        raw = os.isatty(0) if raw is None else raw
        self.input = HostInput(0, raw=raw)
        # a pipe, a socket or a file on stdin: its end is the end of the input (a terminal's
        # Ctrl-D is not, nor /dev/null's nothing): Machine.end_of_input
        try:
            mode = os.fstat(0).st_mode
            self.input_ends = stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or stat.S_ISREG(mode)
        except OSError:
            self.input_ends = False
        self._crlf = self.input.raw and os.isatty(1)
        self._out = out

    @property
    def eof(self) -> bool:
        return self.input.eof

    def write(self, data: bytes) -> None:
        if self._crlf:       # a raw terminal does not turn \n into \r\n by itself
            data = data.replace(b"\n", b"\r\n")
        if self._out is not None:
            self._out(data)
            return
        import sys
        try:
            sys.stdout.buffer.write(data)
            sys.stdout.flush()
        except BrokenPipeError:
            raise                # (a reader that went away: ends quietly, as Unix tools do)
        except OSError as e:     # a full device, a closed descriptor: the run ends, one line
            _drop_stdout()
            raise ConfigError(f"standard output: cannot write: {e.strerror or e}") from None

    def fileno(self) -> int | None:
        return None if self.input.eof else self.input.fd

    def read(self) -> bytes:
        return self.input.read()

    def close(self) -> None:
        self.input.close()


class SocketChardev(Chardev):
    """A TCP or Unix socket, as a client or as a server that takes a new client after one leaves."""

    def __init__(self, spec: str, family: int, address, server: bool, wait: bool,
                 what: str | None = None) -> None:
        self.spec = spec
        self.what = what or f"--serial {spec}"    # how error messages name it
        self.family = family
        self.address = address
        self.server = server
        self.listener: socket.socket | None = None
        self.conn: socket.socket | None = None
        self._unlink: str | None = None
        # told when a client comes and when it goes (the gdb stub stops and forgets)
        self.on_connect: Callable[[], None] | None = None
        self.on_disconnect: Callable[[], None] | None = None
        if server:
            self._listen()
            if wait:
                self._accept(block=True)
        else:
            s = socket.socket(family, socket.SOCK_STREAM)
            try:
                s.connect(address)
            except OSError as e:
                s.close()
                raise ConfigError(f"{self.what}: cannot connect: {e.strerror or e}") from None
            s.setblocking(False)
            self.conn = s

    def _listen(self) -> None:
        self.listener = listen(self.family, self.address, self.what)
        if self.family == socket.AF_UNIX:
            self._unlink = self.address

    def _accept(self, block: bool = False) -> None:
        self.listener.setblocking(block)
        try:
            conn, _ = self.listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        conn.setblocking(False)
        if conn.family == socket.AF_INET:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.conn = conn
        if self.on_connect is not None:
            self.on_connect()

    def _drop(self, notify: bool = True) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None
            if notify and self.on_disconnect is not None:
                self.on_disconnect()

    def hang_up(self) -> None:
        """Close the current connection (a server then waits for the next client)."""
        self._drop(notify=False)

    @property
    def eof(self) -> bool:
        return self.conn is None and self.listener is None

    def write(self, data: bytes) -> None:
        if self.conn is None:
            return                      # nobody on the line: the bytes are gone, as on a wire
        try:
            self.conn.setblocking(True)
            self.conn.sendall(data)
            self.conn.setblocking(False)
        except OSError:
            self._drop()
            if not self.server:
                self.listener = None

    def fileno(self) -> int | None:
        if self.conn is not None:
            return self.conn.fileno()
        return self.listener.fileno() if self.listener is not None else None

    def read(self) -> bytes:
        if self.conn is None:
            if self.listener is not None:
                self._accept()
            return b""
        try:
            data = self.conn.recv(4096)
        except (BlockingIOError, InterruptedError):
            return b""
        except OSError:
            data = b""
        if not data:                    # the peer went away; a server waits for the next one
            self._drop()
        return data

    def close(self) -> None:
        self._drop()
        if self.listener is not None:
            self.listener.close()
            self.listener = None
        if self._unlink is not None:
            remove_socket_file(self._unlink)
            self._unlink = None


def listen(family: int, address, what: str) -> socket.socket:
    """A listening socket (TCP or Unix); a failure is one line naming ``what``."""
    s = socket.socket(family, socket.SOCK_STREAM)
    try:
        if family == socket.AF_INET:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(address)
        s.listen(BACKLOG)
    except OSError as e:
        s.close()
        why = "in use" if e.errno == errno.EADDRINUSE else (e.strerror or str(e))
        raise ConfigError(f"{what}: cannot listen: {why}") from None
    return s


def remove_socket_file(path: str) -> None:
    """Remove the Unix socket a server made (and nothing else that took its name)."""
    try:
        if stat.S_ISSOCK(os.stat(path).st_mode):
            os.unlink(path)
    except OSError:
        pass


def parse_port(text: str, what: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise ConfigError(f"{what}: bad port {text!r}") from None
    if not 0 < port < 65536:
        raise ConfigError(f"{what}: port {port} is out of range (1-65535)")
    return port


def parse_options(spec: str, opts: list[str]) -> tuple[bool, bool]:
    """QEMU's socket options: (server, wait)."""
    server, wait = False, True
    for o in opts:
        key, _, value = o.partition("=")
        on = value in ("", "on", "yes", "true")
        if value not in ("", "on", "off", "yes", "no", "true", "false"):
            raise ConfigError(f"--serial {spec}: bad value {value!r} for {key}")
        if key == "server":
            server = on
        elif key == "wait":
            wait = on
        elif key == "nowait":
            wait = False
        elif key == "nodelay":
            pass
        else:
            raise ConfigError(f"--serial {spec}: unknown option {key!r} "
                              "(server, wait, nowait)")
    return server, wait


def open_chardev(spec: str, stdio: Callable[[], Chardev] | None = None) -> Chardev:
    """Open the backend ``spec`` (QEMU's ``-serial`` spelling)."""
    kind, _, rest = spec.partition(":")
    if spec in ("stdio", "mon:stdio"):
        return stdio() if stdio is not None else StdioChardev()
    if spec == "null":
        return NullChardev()
    forms = {"file": "file:PATH", "tcp": "tcp:[HOST]:PORT[,server][,nowait]",
             "unix": "unix:PATH[,server][,nowait]"}
    if kind in forms and not rest.split(",")[0]:
        raise ConfigError(f"--serial {spec}: expected {forms[kind]}")
    if kind == "file":
        return FileChardev(rest)
    if kind == "tcp":
        host, sep, tail = rest.partition(":")
        if not sep:
            raise ConfigError(f"--serial {spec}: expected {forms['tcp']}")
        port_text, *opts = tail.split(",")
        port = parse_port(port_text, f"--serial {spec}")
        server, wait = parse_options(spec, opts)
        host = host or "127.0.0.1"
        return SocketChardev(spec, socket.AF_INET, (host, port), server, wait)
    if kind == "unix":
        path, *opts = rest.split(",")
        server, wait = parse_options(spec, opts)
        return SocketChardev(spec, socket.AF_UNIX, path, server, wait)
    raise ConfigError(f"--serial {spec}: unknown backend (stdio, mon:stdio, null, "
                      + ", ".join(forms.values()) + ")")
