"""Record and replay: a run's host input logged against virtual time, played back exactly.

A VM is deterministic (virtual time is the instruction count) except for what
the host hands it: serial input on every port -- which bytes arrive, and at
which poll of the machine's loop -- and whether input arrived while the guest
was halted and the loop waited for it (a wait that ends early is a pacing
decision of the wall clock).  ``Recorder`` is the machine's input log
(``Machine.input_log``): it logs every byte a serial line brings, with its port,
and every wait of the halted guest that ended on input, with the instruction
count *and* the cycle count of the poll (the cycle count tells apart the polls
of a halted CPU, which retires nothing).  ``Player`` stands in for the host's
sources on replay and answers from the log: the bytes at the recorded
(instruction, cycle), the waits' ends as they were.  Everything else --
timers, devices, the monitors -- follows from the state and the instruction
count.  The monitor prompt's ``stop`` and ``cont`` are invisible to the guest;
its input while stopped is logged at the instruction it stopped at.  A
debugger can change the guest behind the log's back, so ``--record`` refuses
``--gdb``.

While recording, the run stops every ``interval`` instructions and keeps a
checkpoint (a whole image, and how far the log had got); ``goto(N)`` restores
the last checkpoint at or before N and replays from it to instruction N --
time travel for debugging a guest.  The replayed run stops wherever the next
event is due as well: stopping and going on is invisible to the guest
(``test_lifecycle.py``), so the replay polls at every point the recording did.

A recording is a file in the image format (``stream.py``), written atomically
when the run ends::

    META "recording"   canonical JSON: the start (instruction count, structure,
                       kernel, command line), the checkpoint interval, whether
                       the run was paced, the checkpoints ([instruction, events
                       before it]), and the end: instructions, stop reason and
                       status, and the length and BLAKE2b-128 digest of each
                       serial port's output and of the machine's console
    IMAGE "checkpoint" one per checkpoint, in order: a whole image (the first is
                       the VM when recording began)
    EVENTS "input"     count u32, then per event: instruction u64 | cycle u64 |
                       call u8 (1 bytes, 2 a wait ended on input) | port u8 |
                       length u32 | bytes
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, field

from . import codec
from .stream import EVENTS, IMAGE, META, BadImage, Section, pack_image, read_file, \
    read_sections, write_atomic
from .vm import VmInfo, capture, read_info, restore

RECORDING_VERSION = 1
READ, WAIT = 1, 2
EVENT = struct.Struct("<QQBBI")
INTERVAL = 5_000_000


@dataclass
class Event:
    icount: int
    cycles: int
    call: int
    port: int = 0
    data: bytes = b""


def _point(m) -> tuple[int, int]:
    return m.cpu.state.icount, m.clock.cycles()


class Recorder:
    """The machine's input log while recording: every byte and every wait that ended on
    input, at the (instruction, cycle) it came."""

    scripted = False

    def __init__(self, machine, events: list[Event]) -> None:
        self.m, self.events = machine, events

    def fed(self, port: int, data: bytes) -> None:
        self.events.append(Event(*_point(self.m), READ, port, data))

    def waited(self, ready: bool) -> bool:
        if ready:
            self.events.append(Event(*_point(self.m), WAIT))
        return ready


class Player:
    """The host on replay: a source that feeds the serial ports what the log says at the
    (instruction, cycle) it says, and the input log that ends the halted guest's waits as
    they ended.  ``scripted``: the machine asks it on every halt (the recording may have
    waited on the wall clock where the replay does not)."""

    scripted = True

    def __init__(self, machine, events: list[Event], at: int = 0) -> None:
        self.m, self.events, self.at = machine, events, at

    def _due(self, call: int) -> Event | None:
        if self.at < len(self.events):
            e = self.events[self.at]
            if e.call == call and (e.icount, e.cycles) == _point(self.m):
                return e
        return None

    # -- a source (Machine.sources) ---------------------------------------------------------
    def fileno(self) -> None:
        return None

    def poll(self) -> None:
        while (e := self._due(READ)) is not None:
            self.at += 1
            self.m.feed_serial(e.port, e.data)

    # -- the input log (Machine.input_log) --------------------------------------------------
    def fed(self, port: int, data: bytes) -> None:
        pass

    def waited(self, ready: bool) -> bool:
        if self._due(WAIT) is None:
            return False
        self.at += 1
        return True

    def next_icount(self) -> int | None:
        return self.events[self.at].icount if self.at < len(self.events) else None


class Outputs:
    """What a replay must reproduce: every serial port's output and the machine's console
    (``Machine.output``: a para-virtual guest's console_io), each passed on to its sink,
    counted and digested (BLAKE2b-128).  ``sinks``: one per serial port, then the console's
    (None: dropped); default, where they went before."""

    def __init__(self, m, sinks: list | None = None) -> None:
        self.m = m
        self.saved = [u.output for u in m.uarts] + [m.output]
        if sinks is None:        # a port with no backend of its own goes to the console
            sinks = [m.output if u.output == m._serial_out else u.output for u in m.uarts]
            sinks.append(m.output)
        self.digests = [hashlib.blake2b(digest_size=16) for _ in self.saved]
        self.lengths = [0] * len(self.saved)
        for i, u in enumerate(m.uarts):
            u.output = self._tee(i, sinks[i])
        m.output = self._tee(len(m.uarts), sinks[-1])

    def _tee(self, i: int, sink):
        def out(data: bytes) -> None:
            self.digests[i].update(data)
            self.lengths[i] += len(data)
            if sink is not None:
                sink(data)
        return out

    def detach(self) -> None:
        for u, out in zip(self.m.uarts, self.saved):
            u.output = out
        self.m.output = self.saved[-1]

    def summary(self) -> list[list]:
        return [[n, d.hexdigest()] for n, d in zip(self.lengths, self.digests)]


@dataclass
class Recording:
    start: dict
    interval: int = INTERVAL
    paced: bool = False
    checkpoints: list[tuple[int, int, bytes]] = field(default_factory=list)   # icount, event, image
    events: list[Event] = field(default_factory=list)
    end: dict = field(default_factory=dict)

    def save(self, path) -> int:
        meta = {"version": RECORDING_VERSION, "start": self.start, "interval": self.interval,
                "paced": self.paced, "end": self.end,
                "checkpoints": [[n, k] for n, k, _ in self.checkpoints]}
        secs = [Section(META, "recording", RECORDING_VERSION, codec.encode(meta, "recording"))]
        secs += [Section(IMAGE, "checkpoint", 1, img) for _, _, img in self.checkpoints]
        log = [struct.pack("<I", len(self.events))]
        for e in self.events:
            log.append(EVENT.pack(e.icount, e.cycles, e.call, e.port, len(e.data)) + e.data)
        secs.append(Section(EVENTS, "input", 1, b"".join(log)))
        data = pack_image(secs)
        write_atomic(path, data)
        return len(data)

    @classmethod
    def load(cls, path) -> "Recording":
        what = str(path)
        secs = read_sections(read_file(path), what)
        metas = [s for s in secs if s.kind == META and s.name == "recording"]
        if not metas:
            raise BadImage(f"{what}: not a recording (a saved VM? run it with ringvisor restore)")
        if metas[0].version > RECORDING_VERSION:
            raise BadImage(f"{what}: made by a newer ringvisor (recording version "
                           f"{metas[0].version})")
        images = [s.payload for s in secs if s.kind == IMAGE]
        logs = [s.payload for s in secs if s.kind == EVENTS]
        try:
            meta = codec.decode(metas[0].payload)
            marks = meta["checkpoints"]
            end = meta["end"]
            int(end["icount"]), int(end["status"]), str(end["reason"])
            if not all(isinstance(n, int) and isinstance(d, str) for n, d in end["outputs"]):
                raise ValueError("bad output digests")
            if len(marks) != len(images) or not images or len(logs) != 1:
                raise ValueError("checkpoints, images and the log do not match")
            rec = cls(meta["start"], int(meta["interval"]), bool(meta["paced"]), [(int(n), int(k), img) for (n, k), img
                                            in zip(marks, images)], _events(logs[0]),
                      meta["end"])
        except (codec.StateError, KeyError, TypeError, ValueError, struct.error) as e:
            raise BadImage(f"{what}: corrupt recording ({e})") from None
        if any(k > len(rec.events) for _, k, _ in rec.checkpoints):
            raise BadImage(f"{what}: corrupt recording (a checkpoint past the end of the log)")
        return rec


def _events(payload: bytes) -> list[Event]:
    (count,) = struct.unpack_from("<I", payload)
    off, out = 4, []
    for _ in range(count):
        n, c, call, port, length = EVENT.unpack_from(payload, off)
        off += EVENT.size
        data = payload[off:off + length]
        if len(data) != length or call not in (READ, WAIT):
            raise ValueError("an event is cut short or of an unknown kind")
        off += length
        out.append(Event(n, c, call, port, data))
    if off != len(payload):
        raise ValueError("bytes after the last event")
    return out


def record(m, monitor, info: VmInfo, budget: int | None = None, interval: int = INTERVAL,
           paced: bool = False, path=None, run=None):
    """Run the VM (its host's sources already attached) for at most ``budget``
    instructions, recording; (the Stop, the Recording, the file's size).  ``run(n)``
    runs it for n instructions (default ``m.run``; the CLI's session, so the monitor
    prompt stays live).  The run stops every ``interval`` instructions for a checkpoint
    and goes on, which the guest cannot tell.  The recording is saved to ``path`` (if
    given) however the run ends, Ctrl-C included."""
    run = run or m.run
    start = capture(m, monitor, info)
    rec = Recording(start={**read_info(start).__dict__}, interval=interval, paced=paced)
    rec.checkpoints.append((m.cpu.state.icount, 0, pack_image(start)))
    outputs = Outputs(m)
    m.input_log = Recorder(m, rec.events)
    limit = None if budget is None else m.cpu.state.icount + budget
    stop = None
    try:
        while True:
            n = m.cpu.state.icount
            until = (n // interval + 1) * interval
            stop = run((until if limit is None else min(until, limit)) - n)
            if stop.reason != "limit" or m.cpu.state.icount == limit:
                break
            m.stop = None
            rec.checkpoints.append((m.cpu.state.icount, len(rec.events),
                                    pack_image(capture(m, monitor, info))))
    finally:
        m.input_log = None
        outputs.detach()
        st = m.stop
        rec.end = {"icount": m.cpu.state.icount, "reason": st.reason if st else "interrupted",
                   "status": st.status if st else 130, "outputs": outputs.summary()}
        size = rec.save(path) if path is not None else 0
    return stop, rec, size


def replay(rec: Recording, attach_monitor=None, engine: str = "jit", output=None,
           to: int | None = None, what: str = "recording", **machine_kw):
    """Restore the last checkpoint at or before instruction ``to`` (the first if ``to``
    is None) and replay the log from there, to ``to`` or to the end; (machine, monitor,
    info, Stop, the checkpoint's instruction count, the outputs as [length, digest]:
    every serial port's, then the console's).  ``output`` gets COM1's."""
    if to is not None and to < rec.checkpoints[0][0]:
        raise BadImage(f"{what}: begins at instruction {rec.checkpoints[0][0]:,}; "
                       f"instruction {to:,} is before it")
    if to is not None and rec.end["reason"] in ("limit", "interrupted") and to > rec.end["icount"]:
        raise BadImage(f"{what}: the recorded run ends at instruction {rec.end['icount']:,}; "
                       f"instruction {to:,} is after it")
    n0, k, image = rec.checkpoints[0] if to is None else \
        [c for c in rec.checkpoints if c[0] <= to][-1]
    m, mon, info = restore(read_sections(image, what), attach_monitor, engine, None, what,
                           **machine_kw)
    if any(e.port >= len(m.uarts) for e in rec.events[k:]):
        raise BadImage(f"{what}: corrupt recording (input for a serial port the VM does not have)")
    outputs = Outputs(m, [output] + [None] * len(m.uarts))
    player = Player(m, rec.events, k)
    m.input_log = player
    m.sources.append(player)
    # a recording that ended without the guest stopping (a budget, --stop-at, the user's
    # quit, Ctrl-C) replays to where it ended
    end = to if to is not None else (rec.end["icount"] if rec.end["reason"] in
                                     ("limit", "quit", "interrupted") else None)
    stop = None
    while end is None or m.cpu.state.icount < end:
        n = m.cpu.state.icount
        until = (n // rec.interval + 1) * rec.interval
        nxt = player.next_icount()
        if nxt is not None and nxt > n:
            until = min(until, nxt)
        if end is not None:
            until = min(until, end)
        stop = m.run(until - n)
        if stop.reason != "limit":
            break
        m.stop = None
    m.input_log = None
    m.sources.remove(player)
    outputs.detach()
    return m, mon, info, stop, n0, outputs.summary()
