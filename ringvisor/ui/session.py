"""Running one VM in the foreground, with its consoles, a debugger and a live view attached.

The machine's own loop (``Machine.run``) runs the guest and polls the host's
sources between slices; a session adds what a person at the keyboard needs
around it: the VM can be *paused* -- by gdb (a breakpoint, Ctrl-C, a new
connection, ``-S`` before the first instruction) or by the monitor prompt's
``stop`` -- and while it is, the session keeps waiting on the same sources, so
the console, the monitor prompt and the debugger all stay live.  The guest
cannot tell: its time is the instruction count, which stands still while it is
paused.

The session is the controller the gdb stub and the monitor prompt talk to
(``pause``, ``resume``, ``kill``, ``quit``, ``debugger_left``, ``monitor_command``).
"""

from __future__ import annotations

import contextlib
import os
import stat
import sys
from dataclasses import dataclass, field

from ringvisor.errors import ConfigError
from ringvisor.hw.chardev import open_chardev
from ringvisor.hw.machine import COM, Stop
from ringvisor.vmm.guestview import view_of

from . import hmp
from .console import Console

DEBUG_SLICE = 100_000       # instructions between polls while a debugger may press Ctrl-C
STDIO = ("stdio", "mon:stdio")


class Session:
    def __init__(self, machine, monitor=None, max_instructions: int | None = None,
                 log=None) -> None:
        self.machine = machine
        self.monitor = monitor
        self.view = view_of(machine, monitor)
        self.max_instructions = max_instructions
        self.image_path = ""                  # the kernel it booted, and its command line
        self.cmdline = ""
        self.store = "ringvisor-snapshots"    # where savevm puts snapshots
        self.log = log or (lambda msg: print(f"ringvisor: {msg}", file=sys.stderr, flush=True))
        self.debugger = None
        self.paused_by: str | None = None     # None: running
        self.running = False                  # inside Machine.run
        self._closers: list = []
        # what the live view shows beside the counters: the hypervisor's domains
        # (``ringvisor xen`` sets a callable returning xl list's rows), and its name
        self.domains = None
        self.structure: str | None = None

    # -- attaching things -------------------------------------------------------------------
    def attach_serial(self, index: int, backend, escapes: bool = False) -> None:
        """Serial port ``index`` on ``backend``; ``escapes``: the Ctrl-A keys and the
        monitor prompt on it (the terminal)."""
        dev = Console(backend, self) if escapes else backend
        self.machine.connect_serial(index, dev)
        self._closers.append(dev.close)

    def attach_debugger(self, spec: str) -> None:
        from ringvisor.debug.gdbstub import GdbStub
        self.debugger = GdbStub(spec, self.view, self.machine, self, log=self.log)
        self.machine.sources.append(self.debugger)
        self.machine.slice = min(self.machine.slice, DEBUG_SLICE)
        self._closers.append(self.debugger.close)

    def hold(self) -> None:
        """-S: the guest waits before its first instruction for gdb's continue or the
        monitor prompt's ``cont``."""
        self.paused_by = "start"
        if sys.stderr.isatty():
            how = f"gdb on {self.debugger.spec}" if self.debugger else "the monitor's cont"
            self.log(f"the guest waits before its first instruction for {how}")

    def attach_web(self, port: int) -> None:
        from .web import LiveView
        web = LiveView(port, self)
        web.start()
        self._closers.append(web.close)

    def close(self) -> None:
        while self._closers:
            self._closers.pop()()

    # -- running ----------------------------------------------------------------------------
    def run(self, close: bool = True) -> Stop:
        """Run to the end (or the instruction budget); ``close``: detach everything then."""
        m = self.machine
        st = m.cpu.state
        end = None if self.max_instructions is None else st.icount + self.max_instructions
        try:
            while True:
                if self.paused_by is not None:
                    self._wait_paused()
                    if m.stop is not None:
                        stop = m.stop
                        break
                    continue
                budget = None if end is None else end - st.icount
                if budget is not None and budget <= 0:
                    stop = m.stop = Stop("limit", 4, f"stopped after {self.max_instructions} "
                                                      "instructions")
                    break
                self.running = True
                try:
                    stop = m.run(budget)
                finally:
                    self.running = False
                if stop.reason == "limit":
                    stop.message = f"stopped after {self.max_instructions} instructions"
                if stop.reason != "paused":
                    break
                self.paused_by = self.paused_by or m.pause_reason or "debugger"
                self.view.settle()
                if m.stop is not None:
                    stop = m.stop
                    break
                if self.debugger is not None:
                    self.debugger.paused(self.paused_by)
            if self.debugger is not None and (close or stop.reason != "limit"):
                self.debugger.ended(stop)
            return stop
        finally:
            if close:
                self.close()

    def _wait_paused(self) -> None:
        m = self.machine
        while self.paused_by is not None and m.stop is None:
            if not m.wait_host(None):
                # nothing could ever resume the VM (no console input, no debugger): an
                # error for whoever ran it (-S without --gdb and a console that ended)
                m.stop = Stop("stalled", 2, "the VM is paused with nothing left that could "
                                            "resume it (no debugger, and the console's input "
                                            "ended)")
                m.cpu.request_stop()

    # -- the controller the debugger and the monitor prompt use ---------------------------------
    def pause(self, reason: str) -> None:
        if self.paused_by is None:
            self.paused_by = reason
        if self.running:
            self.machine.pause(reason)          # Session.run tells the debugger when it stops
        elif self.debugger is not None:
            self.debugger.paused(self.paused_by)

    def resume(self) -> None:
        self.paused_by = None
        self.machine.pause_reason = None        # a pause asked for but not yet taken

    def settle(self) -> None:
        """Before showing guest state while the VM runs: stand between guest instructions."""
        self.view.settle()

    def quit(self, message: str) -> None:
        self.machine.quit(message)

    def kill(self) -> None:
        self.machine.quit("killed by the debugger")

    def debugger_left(self) -> None:
        """gdb detached or went away: the VM runs on, as QEMU lets it (the console's stop
        still holds it)."""
        if self.paused_by in ("debugger", "start"):
            self.resume()

    def monitor_command(self, text: str) -> str:
        """A line of the monitor prompt (gdb's ``monitor CMD``); the answer."""
        return hmp.execute(text, self.view, self)

    def status(self) -> str:
        return {None: "running", "debugger": "paused (by the debugger)",
                "start": "paused (-S: before the first instruction)"}.get(self.paused_by,
                                                                           "paused (stop)")

    def user_stop(self) -> str:
        if self.paused_by is not None:
            return "the VM is already paused\n"
        self.pause("user")
        return ""

    def user_cont(self) -> str:
        if self.paused_by is None:
            return "the VM is running\n"
        if self.debugger is not None and self.debugger.attached and self.debugger.stopped:
            return "the debugger holds the VM: continue it from gdb\n"
        if not self.running:
            self.view.resume()
        self.resume()
        return ""

    def lifecycle(self, cmd: str, args: str) -> str:
        """``savevm NAME [DESCRIPTION]``: the VM as it stands, as a node of the snapshot tree
        (``ringvisor snapshot-revert NAME`` resumes it); ``loadvm NAME``: the VM goes back
        (or forward) to node NAME in place and runs on from there, as QEMU's."""
        from ringvisor.errors import RingvisorError
        from ringvisor.lifecycle.snapshots import SnapshotTree
        name, _, description = args.strip().partition(" ")
        if not name:
            return f"{cmd} NAME" + (" [DESCRIPTION]\n" if cmd == "savevm" else "\n")
        self.view.settle()                  # between two guest instructions
        m = self.machine
        from ringvisor.lifecycle.vm import writable_disk
        disk = writable_disk(m)
        if disk is not None:
            return (f"{cmd}: not with a writable disk ({disk}: the image file is not part of "
                    f"a snapshot, as QEMU's savevm refuses raw drives)\n")
        try:
            tree = SnapshotTree(self.store)
            if cmd == "loadvm":
                if m.input_log is not None:
                    return "loadvm: not while the run is recorded (the recording would not know)\n"
                node = tree.load_into(name, m, self.monitor)
                self.view.settle()
                return (f"the VM is at snapshot {node.name} (instruction {node.icount:,}) "
                        f"and {'runs on' if self.paused_by is None else 'stays paused'}\n")
            from ringvisor.lifecycle.vm import VmInfo
            node = tree.create(name, m, self.monitor,
                               VmInfo(image=self.image_path, cmdline=self.cmdline),
                               description.strip())
        except RingvisorError as e:
            return f"{cmd}: {e}\n"
        return (f"snapshot {node.name} at instruction {node.icount:,} in {self.store} "
                f"(ringvisor snapshot-revert {node.name} resumes it)\n")


@dataclass
class ConsoleConfig:
    """What a VM run in the foreground has attached (``run``, ``restore``, ``snapshot-revert``)."""

    serial: list[str] = field(default_factory=lambda: ["stdio"])
    gdb: str | None = None            # tcp:[HOST]:PORT or unix:PATH
    hold: bool = False                # -S: hold the guest until gdb or the monitor continues it
    web: int | None = None            # a port for the live view
    trace: str | None = None          # a file for every translation, exception, interrupt
    pace: str = "auto"                # auto: on when the console is a terminal
    store: str = "ringvisor-snapshots"   # the snapshot tree the monitor's savevm adds to


class Foreground:
    """The host's side of a VM run in the foreground, opened before the VM exists (so a
    port in use or an unwritable file is one line before anything boots): the serial
    lines' backends and the trace; ``run`` attaches them, a debugger and a live view."""

    output = None                     # the machine's COM1 output until a backend is attached

    def __init__(self, cfg: ConsoleConfig) -> None:
        if len(cfg.serial) > len(COM):
            raise ConfigError(f"--serial: the PC has {len(COM)} serial ports (COM1, COM2), "
                              f"not {len(cfg.serial)}")
        if sum(spec in STDIO for spec in cfg.serial) > 1:
            raise ConfigError("--serial: stdio can be used by one serial port only")
        self.cfg = cfg
        terminal = os.isatty(0) and any(spec in STDIO for spec in cfg.serial)
        self.pace = terminal if cfg.pace == "auto" else cfg.pace == "on"
        self.serial_ports = max(1, len(cfg.serial))
        self.session: Session | None = None
        self.backends: list = []
        self.trace = None
        try:
            for spec in cfg.serial:
                self.backends.append((spec, open_chardev(spec)))
            if cfg.trace:
                try:
                    # opened to append, and emptied only when the VM runs: a run refused for
                    # another bad argument leaves an earlier trace as it was
                    self._trace_new = not os.path.exists(cfg.trace)
                    self.trace = open(cfg.trace, "a")
                except OSError as e:
                    raise ConfigError(f"--trace {cfg.trace}: cannot write: {e.strerror}") from None
        except BaseException:
            self.close()
            raise

    @contextlib.contextmanager
    def closed_on_error(self):
        """Close everything opened (a listening socket, a trace file created for the run)
        if making the VM fails: ``run`` never comes."""
        try:
            yield self
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        for _, b in self.backends:
            b.close()
        self.backends = []
        if self.trace is not None:           # never attached: nothing was traced
            self.trace.close()
            if self._trace_new:
                with contextlib.suppress(OSError):
                    os.unlink(self.trace.name)
            self.trace = None

    def run(self, machine, monitor, max_instructions: int | None, image: str,
            cmdline: str = "", last: bool = True) -> Stop:
        """Run the VM with everything attached; the stop.  ``last=False``: the run goes
        on afterwards (a migration stops it halfway), everything stays attached."""
        session = self._attach(machine, monitor, image, cmdline)
        session.max_instructions = max_instructions
        return session.run(close=last)

    @contextlib.contextmanager
    def attached(self, machine, monitor, image: str = "", cmdline: str = ""):
        """Everything attached while someone else runs the machine (a migration's rounds)."""
        self._attach(machine, monitor, image, cmdline)
        yield

    def _attach(self, machine, monitor, image: str, cmdline: str) -> Session:
        if self.session is not None:
            return self.session
        session = Session(machine, monitor)
        session.image_path, session.cmdline, session.store = image, cmdline, self.cfg.store
        try:
            if len(self.backends) > len(machine.uarts):
                raise ConfigError(f"--serial: this VM has {len(machine.uarts)} serial port(s)")
            for i, (spec, backend) in enumerate(self.backends):
                session.attach_serial(i, backend, escapes=spec == "mon:stdio" or
                                      (spec == "stdio" and os.isatty(0)))
            self.backends = []
            # --pace auto and a script piped in: paced while more may come (end_of_input)
            machine.pace_while_input = self.cfg.pace == "auto" and _piped(0) and \
                any(spec in STDIO for spec in self.cfg.serial)
            if self.trace is not None:
                if os.path.isfile(self.trace.name):     # (not /dev/stdout, a pipe)
                    self.trace.truncate(0)
                machine.cpu.trace, close = _guarded(self.trace, f"--trace {self.cfg.trace}")
                session._closers.append(close)
                self.trace = None
            if self.cfg.gdb is not None:
                session.attach_debugger(self.cfg.gdb)
            if self.cfg.hold:
                session.hold()
            if self.cfg.web is not None:
                session.attach_web(self.cfg.web)
        except BaseException:
            session.close()
            self.close()
            raise
        self.session = session
        return session


def _guarded(f, what: str):
    """(write, close) of a file the run writes as it goes, a full device or a lost disk
    ending the run in one line naming ``what`` (no traceback from the middle of a block)."""
    def write(text: str) -> None:
        try:
            f.write(text)
        except OSError as e:
            _discard(f)
            raise ConfigError(f"{what}: cannot write: {e.strerror or e}") from None

    def close() -> None:
        try:
            f.close()
        except OSError as e:
            _discard(f)
            raise ConfigError(f"{what}: cannot write: {e.strerror or e}") from None
    return write, close


def _discard(f) -> None:
    """Close ``f`` without writing what it buffers (that write failed already)."""
    try:
        os.close(f.fileno())
    except (OSError, ValueError):
        pass
    try:
        f.close()
    except (OSError, ValueError):
        pass


def _piped(fd: int) -> bool:
    """``fd`` is a pipe or a socket: input that may come later, at the writer's pace."""
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)
