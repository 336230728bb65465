"""The GDB remote serial protocol, as QEMU's gdbstub speaks it.

``ringvisor run KERNEL --gdb tcp::1234`` (``-s``) listens for gdb; ``-S`` holds the
guest before its first instruction until gdb says ``continue``.  What gdb sees is
the guest, through the VM's guest view (``ringvisor.vmm.guestview``), in every
mode: registers with gdb's i386 target description (``target.py``), memory by
guest virtual address through the guest's page tables, breakpoints (``Z0`` and,
should gdb fall back to planting ``int3`` bytes itself, those too), hardware
breakpoints and watchpoints (``Z1``-``Z4``), single steps of guest instructions,
``continue``, Ctrl-C, detach and kill.  The protocol is the one in gdb's manual
(Appendix E, "GDB Remote Serial Protocol"); the choices where it leaves room are
QEMU's: one thread, all-stop, stops reported as ``T05``/``T02`` with
``swbreak``/``hwbreak``/``watch`` when gdb asked for them, a connection stops
the VM, a detach or a vanished connection lets it run on as if nothing had
happened -- the guest cannot tell it was ever looked at.

The stub is one of the machine's host sources: it is polled between slices of
guest execution (Ctrl-C) and waited on while the VM is paused.  It drives the
VM through a small controller (``ringvisor.ui.session.Session``): ``pause``,
``resume``, ``kill``, ``debugger_left`` and ``monitor`` (gdb's ``monitor``
command runs the console's monitor commands).
"""

from __future__ import annotations

import copy
import socket
import sys

from ringvisor.errors import ConfigError
from ringvisor.hw.chardev import SocketChardev, parse_port
from ringvisor.vmm.guestview import ViewError

from .target import REGS, TARGET_XML, decode_all, encode, fpu_values, set_fpu_value

PACKET_SIZE = 0x4000
SIGINT, SIGTRAP = 2, 5
INT3 = 0xCC
WATCH_KINDS = {2: "write", 3: "read", 4: "access"}
STOP_WORDS = {"write": "watch", "read": "rwatch", "access": "awatch"}


def parse_spec(spec: str) -> tuple[int, object]:
    """``tcp:[HOST]:PORT`` or ``unix:PATH``, as QEMU's ``-gdb`` spells them."""
    kind, _, rest = spec.partition(":")
    if kind == "tcp":
        host, sep, port = rest.rpartition(":")
        if not sep:
            raise ConfigError(f"--gdb {spec}: expected tcp:[HOST]:PORT")
        return socket.AF_INET, (host or "127.0.0.1", parse_port(port.split(",")[0], f"--gdb {spec}"))
    if kind == "unix" and rest.split(",")[0]:
        return socket.AF_UNIX, rest.split(",")[0]
    raise ConfigError(f"--gdb {spec}: expected tcp:[HOST]:PORT or unix:PATH")


def checksum(data: bytes) -> int:
    return sum(data) & 0xFF


def unescape(data: bytes) -> bytes:
    """The binary data of an ``X`` packet: ``}`` escapes the next byte (xor 0x20)."""
    out, i = bytearray(), 0
    while i < len(data):
        if data[i] == 0x7D and i + 1 < len(data):
            out.append(data[i + 1] ^ 0x20)
            i += 2
        else:
            out.append(data[i])
            i += 1
    return bytes(out)


def needs_stop(payload: bytes) -> bool:
    """Whether a packet touches the guest (registers, memory, breakpoints, resumption):
    those wait until the VM has stopped; the rest of a connection's handshake (features,
    the target description, threads) is answered at once."""
    if payload[:1] in (b"q", b"Q"):
        return payload.startswith(b"qRcmd,")
    if payload[:1] == b"v":
        return payload.startswith(b"vCont;")
    return payload[:1] not in (b"H", b"T")


class GdbStub:
    def __init__(self, spec: str, view, machine, control, log=None) -> None:
        self.spec = spec
        self.view = view
        self.machine = machine
        self.control = control
        self.log = log or (lambda msg: print(f"ringvisor: {msg}", file=sys.stderr))
        family, address = parse_spec(spec)
        self.line = SocketChardev(spec, family, address, server=True, wait=False,
                                  what=f"--gdb {spec}")
        self.line.on_connect = self._connected
        self.line.on_disconnect = lambda: self._gone("the debugger went away")
        self.buf = bytearray()
        self.base = 0                 # where buf[0] is in the connection's byte stream
        self.answering = b""          # the packet being answered (a resume: until its stop)
        self.answered = (b"", 0)      # the last packet answered, and how far the stream was
                                      # in when its answer went out
        self.ack = True
        self.head_acked = False       # the packet at the head of buf has had its '+'
        self.stopped = False          # gdb believes the target stopped (it may send packets)
        self.busy = False             # inside a packet's work (a step may poll us again)
        self.owe_stop = False         # gdb waits for a stop reply
        self.features: set[str] = set()
        self.sw: set[int] = set()     # Z0 breakpoints (guest addresses)
        self.hw: set[int] = set()     # Z1 breakpoints
        self.patched: dict[int, int] = {}   # int3 bytes gdb wrote itself: address -> old byte
        self.watch: dict[tuple[int, int, str], int] = {}   # (addr, len, kind) -> references
        self.last_signal = SIGTRAP
        self._last = b""

    # -- the connection (a server line, hw/chardev.py) -----------------------------------------
    @property
    def attached(self) -> bool:
        return self.line.conn is not None

    def fileno(self) -> int | None:
        return self.line.fileno()

    def poll(self) -> None:
        data = self.line.read()             # accepts a debugger when none is attached
        if data:
            self.buf += data
            self._process()

    def _connected(self) -> None:
        self.buf.clear()
        self.base = 0
        self.answering = b""
        self.answered = (b"", 0)
        self.ack = True
        self.head_acked = False
        self.features.clear()
        self.stopped = False
        self.owe_stop = False         # gdb asks with "?" why the target stopped
        self.last_signal = SIGTRAP
        # a debugger that connects stops the VM, as on QEMU
        self.control.pause("debugger")

    def _send_raw(self, data: bytes) -> None:
        self.line.write(data)               # a connection that broke calls _gone

    def send(self, payload: str | bytes) -> None:
        if isinstance(payload, str):
            payload = payload.encode("latin-1")
        self._last = b"$" + payload + b"#%02x" % checksum(payload)
        self.answered = (self.answering, self.base + len(self.buf))
        self._send_raw(self._last)

    def close(self) -> None:
        self.line.on_disconnect = None
        self.line.close()

    # -- the session tells us -------------------------------------------------------------------
    def paused(self, reason: str) -> None:
        """The VM stopped running: a breakpoint or watchpoint, Ctrl-C, a connection,
        the console's ``stop``."""
        if not self.attached:
            return
        self.stopped = True
        if self.owe_stop:
            self.owe_stop = False
            if reason != "debugger" or self.view.event() is not None:
                self.last_signal = SIGTRAP if self.view.event() is not None else SIGINT
            self.send(self.stop_reply(self.view.event()))
        self._process()

    def ended(self, stop) -> None:
        """The VM is gone (the guest exited, a triple fault, the user quit)."""
        if self.attached and self.owe_stop:
            self.send(f"W{stop.status & 0xFF:02x}")
        self.close()

    def _gone(self, why: str) -> None:
        """The connection closed: forget everything gdb set, and let the guest run on."""
        self._forget()
        self.log(f"{why}; the guest runs on (waiting for another on {self.spec})")
        self.control.debugger_left()

    def _forget(self) -> None:
        for addr, old in self.patched.items():
            try:
                if self.view.read(addr, 1)[0] == INT3:
                    self.view.write(addr, bytes([old]))
            except ViewError:
                pass
        self.patched.clear()
        self.sw.clear()
        self.hw.clear()
        self.watch.clear()
        self.view.clear()
        self.stopped = False
        self.owe_stop = False

    # -- packets ------------------------------------------------------------------------------
    def _process(self) -> None:
        buf = self.buf
        while buf and self.attached:
            if buf[0] == 0x03:                       # Ctrl-C
                self._consume(1)
                if not self.stopped or self.busy:     # running, or a step waiting for a wake-up
                    self.last_signal = SIGINT
                    self.owe_stop = not self.stopped
                    self.control.pause("debugger")
                continue
            if buf[0] in b"+-":
                if buf[0] == ord("-") and self._last:
                    self._send_raw(self._last)
                self._consume(1)
                continue
            if buf[0] != ord("$"):
                self._consume(1)                      # noise between packets
                continue
            end = self._packet_end(buf)
            if end is None or end + 2 >= len(buf):
                return                                # incomplete
            payload = bytes(buf[1:end])
            sum_text = bytes(buf[end + 1:end + 3])
            if payload == self.answered[0] and self.base + end + 3 <= self.answered[1]:
                # the same packet again, sent before gdb could have seen the answer: gdb
                # sends a packet again when our '+' is late (a VM still stopping on a
                # loaded host), and never a new one before it has the answer -- so this
                # is that copy, already answered
                if self.ack:
                    self._send_raw(b"+")
                self._consume(end + 3)
                continue
            if self.ack and not self.head_acked:
                # acknowledged on arrival, as QEMU does: gdb sends a packet again when its
                # '+' is two seconds late (remotetimeout), and a VM that is still stopping
                # (a connection, a long slice under a loaded host) would then answer twice
                try:
                    good = int(sum_text, 16) == checksum(payload)
                except ValueError:
                    good = False
                self._send_raw(b"+" if good else b"-")
                if not good:
                    self._consume(end + 3)
                    continue
                self.head_acked = True
            if (not self.stopped or self.busy) and needs_stop(payload):
                return                                # gdb waits; answer once stopped
            self._consume(end + 3)
            self.head_acked = False
            self.answering = payload
            busy, self.busy = self.busy, True      # (a handshake packet may come mid-step)
            try:
                reply = self.handle(payload)
            finally:
                self.busy = busy
            if reply is not None:
                self.send(reply)

    def _consume(self, n: int) -> None:
        del self.buf[:n]
        self.base += n

    @staticmethod
    def _packet_end(buf: bytearray) -> int | None:
        i = 1
        while i < len(buf):
            c = buf[i]
            if c == 0x7D:
                i += 2
                continue
            if c == ord("#"):
                return i
            i += 1
        return None

    def handle(self, pkt: bytes) -> str | bytes | None:
        """One packet; the reply (None: it was a resume and the reply comes at the next stop)."""
        if pkt.startswith(b"X"):
            return self.write_binary(pkt)
        p = pkt.decode("latin-1")
        c = p[:1]
        try:
            if c == "?":
                return self.stop_reply(self.view.event())
            if c == "g":
                values = self._values()
                return "".join(encode(r, values) for r in REGS)
            if c == "G":
                return self.write_registers(p[1:])
            if c == "p":
                n = int(p[1:], 16)
                return encode(REGS[n], self._values()) if n < len(REGS) else "E45"
            if c == "P":
                return self.write_register(p[1:])
            if c == "m":
                addr, length = (int(x, 16) for x in p[1:].split(","))
                return self.view.read(addr, min(length, PACKET_SIZE // 2)).hex()
            if c == "M":
                where, _, data = p[1:].partition(":")
                addr, length = (int(x, 16) for x in where.split(","))
                return self.write_memory(addr, bytes.fromhex(data)[:length])
            if c in "Zz":
                return self.breakpoint(c == "Z", p[1:])
            if c in "cC":
                return self.resume(step=False)
            if c in "sS":
                return self.resume(step=True)
            if c == "v":
                return self.v_packet(p)
            if c == "q" or c == "Q":
                return self.query(p)
            if c == "H" or c == "T":
                return "OK"
            if c == "D":
                self.send("OK")
                self._forget()
                self.log("the debugger detached; the guest runs on")
                self.control.debugger_left()
                self.line.hang_up()
                return None
            if c == "k":
                self.control.kill()
                return None
        except ViewError:
            return "E0e"
        except (ValueError, IndexError):
            return "E16"
        return ""                                     # not supported

    # -- stops and resumption ---------------------------------------------------------------------
    def stop_reply(self, event) -> str:
        if self.machine.stop is not None:
            return f"W{self.machine.stop.status & 0xFF:02x}"
        extra = ""
        if event is not None and event.kind in STOP_WORDS:
            extra = f"{STOP_WORDS[event.kind]}:{event.address:x};"
        elif event is not None and event.kind == "breakpoint":
            eip = self.view.registers()["eip"]
            if eip in self.hw and "hwbreak" in self.features:
                extra = "hwbreak:;"
            elif "swbreak" in self.features and eip in (self.sw | set(self.patched)):
                extra = "swbreak:;"
        sig = self.last_signal if event is None else SIGTRAP
        self.last_signal = SIGTRAP
        return f"T{sig:02x}{extra}thread:01;"

    def resume(self, step: bool) -> str | None:
        if step:
            self.view.step()
            event = self.view.event()
            return self.stop_reply(event if event is not None and event.kind in STOP_WORDS
                                   else None)
        self.last_signal = SIGTRAP
        self.view.resume()
        self.stopped = False
        self.owe_stop = True
        self.control.resume()
        return None

    def v_packet(self, p: str) -> str | None:
        if p == "vCont?":
            return "vCont;c;C;s;S"
        if p.startswith("vCont;"):
            for action in p[6:].split(";"):
                verb, _, thread = action.partition(":")
                if thread in ("", "-1", "1", "01", "p1.1", "p1.-1"):
                    return self.resume(step=verb[:1] in ("s", "S"))
            return "E16"
        if p.startswith("vKill"):
            self.control.kill()
            return "OK"
        return ""

    def query(self, p: str) -> str:
        if p.startswith("qSupported"):
            asked = p.partition(":")[2].split(";")
            self.features = {f.rstrip("+") for f in asked if f.endswith("+")}
            return (f"PacketSize={PACKET_SIZE:x};qXfer:features:read+;swbreak+;hwbreak+;"
                    "QStartNoAckMode+;vContSupported+")
        if p == "QStartNoAckMode":
            self.send("OK")
            self.ack = False
            return None
        if p.startswith("qXfer:features:read:"):
            annex, _, span = p[len("qXfer:features:read:"):].partition(":")
            if annex != "target.xml":
                return "E00"
            off, length = (int(x, 16) for x in span.split(","))
            chunk = TARGET_XML[off:off + length]
            return ("l" if off + length >= len(TARGET_XML) else "m") + chunk
        if p == "qAttached":
            return "1"
        if p == "qC":
            return "QC1"
        if p == "qfThreadInfo":
            return "m1"
        if p == "qsThreadInfo":
            return "l"
        if p.startswith("qSymbol"):
            return "OK"
        if p.startswith("qRcmd,"):
            text = bytes.fromhex(p[6:]).decode(errors="replace")
            out = self.control.monitor_command(text)
            if out:
                self.send("O" + out.encode().hex())
            return "OK"
        return ""

    # -- registers and memory -----------------------------------------------------------------------
    def _values(self) -> dict[str, int]:
        """Every register gdb is told of: the guest view's, and its x87/SSE state."""
        return {**self.view.registers(), **fpu_values(self.view.fpu_shown())}

    def write_registers(self, hexdata: str) -> str:
        current = self._values()
        changed = [(reg, value) for reg, value in zip(REGS, decode_all(hexdata))
                   if value is not None and value != current[reg.view]]
        fpu = self.view.fpu()
        for reg, value in changed:         # the x87/SSE values first: all of them, or none
            if reg.fpu:
                set_fpu_value(copy.deepcopy(fpu), reg.view, value)
        for reg, value in changed:
            self._set(reg, value)
        return "OK"

    def write_register(self, text: str) -> str:
        num, _, hexval = text.partition("=")
        reg = REGS[int(num, 16)]
        if "x" in hexval:
            return "E16"
        value = int.from_bytes(bytes.fromhex(hexval), "little")
        if value != self._values()[reg.view]:
            self._set(reg, value)
        return "OK"

    def _set(self, reg, value: int) -> None:
        if reg.fpu:
            set_fpu_value(self.view.fpu(), reg.view, value)
            self.view.fpu_written()
        else:
            self.view.set_register(reg.view, value)

    def write_binary(self, pkt: bytes) -> str:
        head, _, data = pkt[1:].partition(b":")
        addr, length = (int(x, 16) for x in head.split(b","))
        return self.write_memory(addr, unescape(data)[:length])

    def write_memory(self, addr: int, data: bytes) -> str:
        if not data:
            return "OK"
        if len(data) == 1:
            # gdb plants and lifts its own breakpoints this way when it cannot use Z0:
            # the guest must never execute the int3, so it becomes a stop here
            old = self.view.read(addr, 1)[0]
            if data[0] == INT3 and old != INT3:
                self.patched[addr] = old
            elif data[0] != INT3:
                self.patched.pop(addr, None)
        self.view.write(addr, data)
        self._apply_breakpoints()
        return "OK"

    def breakpoint(self, insert: bool, args: str) -> str:
        kind, addr_text, length_text = (args.split(";")[0].split(",") + ["1"])[:3]
        kind, addr, length = int(kind), int(addr_text, 16), int(length_text, 16)
        if kind in (0, 1):
            target = self.sw if kind == 0 else self.hw
            before = set(target)
            if insert:
                target.add(addr)
            else:
                target.discard(addr)
            try:
                self._apply_breakpoints()
            except ViewError as e:            # (under kvm: more than the debug registers hold)
                target.clear()
                target.update(before)
                self.log(f"breakpoint at {addr:#x} refused: {e}")
                raise
            return "OK"
        if kind in WATCH_KINDS:
            key = (addr, max(length, 1), WATCH_KINDS[kind])
            before = dict(self.watch)
            if insert:
                self.watch[key] = self.watch.get(key, 0) + 1
            elif key in self.watch:
                self.watch[key] -= 1
                if not self.watch[key]:
                    del self.watch[key]
            try:
                self.view.set_watchpoints(list(self.watch))
            except ViewError as e:
                self.watch = before
                self.log(f"watchpoint at {addr:#x} refused: {e}")
                raise
            return "OK"
        return ""

    def _apply_breakpoints(self) -> None:
        self.view.set_breakpoints(self.sw | self.hw | set(self.patched))
