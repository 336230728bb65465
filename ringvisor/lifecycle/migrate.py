"""Live migration: a running VM moved to another ringvisor process over TCP.

Pre-copy, as Clark et al. built it for Xen ("Live Migration of Virtual
Machines", NSDI 2005; ``xc_domain_save``): the source sends every page while
the guest keeps running, then, round after round, the pages the guest wrote
while the previous round was on the wire.  Rounds stop on Xen's conditions --
29 rounds, fewer than 50 pages left dirty, or three times the memory sent --
and then the VM is paused, the last dirty pages and every component's state
go over (stop-and-copy), and the destination resumes it.  The source keeps
the VM until the destination acknowledges that it holds it (Xen's commit):
a destination that is refused, dies, or rejects the stream costs the source
nothing, and it runs on.

Dirty pages come from the machine's own write path (``Machine.log_dirty``):
the TLB's write entries are parked at the start of each round, so the first
write to a page takes the slow path and is logged.  That covers the guest
natively, the guest under a monitor (the CPU walks the shadow tables, so
their writable entries are what the TLB caches), the monitors' own writes
(``mmu_update``, the shadow tables, the shared info page: all through the
memory's slow path) and the page walker's accessed and dirty bits.
Write-protecting shadow entries instead, as Xen's log-dirty shadow mode does,
would trap into the monitor, and a trap retires virtual time the guest sees:
the migrated run would no longer be the uninterrupted one.

The guest and the link share one host thread, so they take turns: after each
batch of pages the guest runs for as long as the batch takes on a link of
``link_mbit`` (virtual time: at 100 MHz and 1 Gbit/s, ~3,300 instructions a
page, Clark et al.'s gigabit testbed).  Rounds, pages and downtime are then a
property of the guest's write rate, and the same on every run.

The stream is the image format (``stream.py``) with the MIGRATION flag in its
header: ``META``, then ``PAGES`` sections round after round, then one
``STATE`` section per component, then ``END``.  The destination answers
``ACK`` once the VM is restored, and runs it.
"""

from __future__ import annotations

import socket
import time

from ringvisor.errors import ConfigError

from . import postcopy as POST, ram as RAMCODEC
from .stream import (KIND_NAMES, META, MIGRATION, PAGES, POSTCOPY, STATE, BadImage, Section,
                     SectionReader, pack_header)
from .vm import VmInfo, capture, load_states, new_machine, read_info
from .wire import (ACK, PAGES_VERSION, TIMEOUT, Migration, MigrationFailed, MigrationLost,
                   Round, Sender, describe)

__all__ = ["ACK", "TIMEOUT", "Incoming", "Migration", "MigrationFailed", "MigrationLost",
           "Round", "migrate", "parse_address"]

MAX_ROUNDS = 29        # Xen's max_iters
FEW_DIRTY = 50         # stop when a round leaves fewer dirty pages than this
MAX_FACTOR = 3         # Xen's max_factor: stop once three times the memory has gone
BATCH = 256            # pages per PAGES section (1 MiB)
LINK_MBIT = 1000       # the link the guest's time is measured against
def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (an IPv6 host in brackets) as (host, port)."""
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    try:
        p = int(port)
    except ValueError:
        p = -1
    if not sep or not host or not 0 <= p <= 65535:
        raise ConfigError(f"bad address {text!r} (use HOST:PORT, e.g. 127.0.0.1:4444)")
    return host, p


# -- the source ------------------------------------------------------------------------
def migrate(machine, monitor, info: VmInfo, address: tuple[str, int],
            link_mbit: int = LINK_MBIT, progress=None, postcopy: bool = False) -> Migration:
    """Move the VM to ``address`` (pre-copy, or ``postcopy``: ``postcopy.py``).  Raises
    :class:`MigrationFailed` with the VM intact and running here, or, once a post-copy
    destination has taken the VM, :class:`MigrationLost`; returns with ``stop`` set if
    the guest ended during pre-copy."""
    where = f"{address[0]}:{address[1]}"
    t0 = time.perf_counter()
    try:
        sock = socket.create_connection(address, timeout=TIMEOUT)
    except OSError as e:
        raise MigrationFailed(f"migration to {where} failed: {describe(e)}") from None
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        progress = progress or (lambda s: None)
        if postcopy:
            return POST.source(machine, monitor, info, sock, progress, t0)
        return _precopy(machine, monitor, info, sock, link_mbit, progress, t0)
    except OSError as e:
        raise MigrationFailed(f"migration to {where} failed: the connection was lost "
                              f"({describe(e)})") from None
    except MigrationFailed as e:
        raise MigrationFailed(f"migration to {where} failed: {e}") from None
    finally:
        if machine.mem.dirty is not None:
            machine.stop_dirty_log()
        sock.close()


def _precopy(machine, monitor, info, sock, link_mbit, progress, t0) -> Migration:
    mem, st = machine.mem, machine.cpu.state
    npages = mem.size // RAMCODEC.PAGE
    # guest instructions per page on the wire
    per_page = RAMCODEC.PAGE * 8 * machine.clock.cpu_hz / (link_mbit * 1_000_000)
    out = Migration()
    send = Sender(sock, out)

    sock.sendall(pack_header(MIGRATION))
    meta = capture(machine, monitor, info, include_ram=False)
    send(META, meta[0].name, meta[0].version, meta[0].payload)
    machine.log_dirty()
    pending = RAMCODEC.nonzero_pages(mem.ram)        # the destination's memory starts zero
    while True:
        start = st.icount
        for k in range(0, len(pending), BATCH):
            batch = pending[k:k + BATCH]
            send(PAGES, "pages", PAGES_VERSION, RAMCODEC.encode_pages(mem.ram, batch))
            stop = machine.run(max(1, round(len(batch) * per_page)))
            if stop.reason != "limit":
                out.stop = stop
                return out
            machine.stop = None
        dirty = machine.log_dirty()
        ran = st.icount - start
        out.rounds.append(Round(len(pending), len(dirty), ran))
        rate = len(dirty) * RAMCODEC.PAGE / (ran / machine.clock.cpu_hz) / 2**20 if ran else 0.0
        progress(f"migration round {len(out.rounds)}: {len(pending):,} pages sent, "
                 f"{len(dirty):,} dirtied meanwhile ({rate:.1f} MiB/s of guest time)")
        total = sum(r.pages for r in out.rounds)
        if len(out.rounds) >= MAX_ROUNDS or len(dirty) < FEW_DIRTY or total > MAX_FACTOR * npages:
            break
        pending = sorted(dirty)
    # stop-and-copy: the VM is paused (nothing runs between here and the acknowledgement)
    paused = time.perf_counter()
    final = sorted(machine.stop_dirty_log() | dirty)
    for k in range(0, len(final), BATCH):
        send(PAGES, "pages", PAGES_VERSION, RAMCODEC.encode_pages(mem.ram, final[k:k + BATCH]))
    before = out.bytes_sent
    for s in capture(machine, monitor, info, include_ram=False)[1:]:
        send(s.kind, s.name, s.version, s.payload)
    out.state_bytes = out.bytes_sent - before
    send.end()
    reply = b""
    while len(reply) < len(ACK):
        chunk = sock.recv(len(ACK) - len(reply))
        if not chunk:
            raise MigrationFailed("the destination closed the connection before taking the VM")
        reply += chunk
    if reply != ACK:
        raise MigrationFailed("the destination answered with something other than its "
                              "acknowledgement")
    now = time.perf_counter()
    out.final_pages, out.icount = len(final), st.icount
    out.downtime, out.seconds = now - paused, now - t0
    return out


# -- the destination ---------------------------------------------------------------------
class Incoming:
    """A socket waiting for one migrating VM (``ringvisor run ... --incoming HOST:PORT``)."""

    def __init__(self, address: tuple[str, int]) -> None:
        try:
            self.server = socket.create_server(address)
        except OSError as e:
            raise ConfigError(f"cannot listen on {address[0]}:{address[1]}: "
                              f"{describe(e)}") from None
        self.host, self.port = self.server.getsockname()[:2]

    def close(self) -> None:
        self.server.close()

    def receive(self, attach_monitor=None, engine: str = "jit", output=None, expect=None,
                **machine_kw):
        """Accept the source, build the VM from its stream, acknowledge it; (machine,
        monitor, info).  ``expect(info)`` may refuse a VM (raising a one-line error)."""
        conn, peer = self.server.accept()
        self.close()
        what = f"migration from {peer[0]}:{peer[1]}"
        try:
            conn.settimeout(TIMEOUT)
            # unbuffered: a post-copy destination waits on the socket itself for pages
            reader = SectionReader(conn.makefile("rb", buffering=0), what)
            if not reader.flags & MIGRATION:
                raise BadImage(f"{what}: not a migration stream (a saved image? ringvisor "
                               f"restore reads those)")
            first = reader.next()
            if first is None or first.kind != META:
                raise BadImage(f"{what}: corrupt (the stream does not start with the VM's "
                               f"description)")
            info = read_info([first], what)
            if expect is not None:
                expect(info)
            if reader.flags & POSTCOPY:
                return POST.receive(conn, reader, info, what, attach_monitor, engine, output,
                                    machine_kw)
            result = _receive(reader, info, what, attach_monitor, engine, output, machine_kw)
            conn.sendall(ACK)
            return result
        except OSError as e:
            raise BadImage(f"{what}: the connection was lost ({describe(e)})") from None
        finally:
            conn.close()


def _receive(reader, info, what, attach_monitor, engine, output, machine_kw):
    m, monitor = new_machine(info, attach_monitor, engine, output, what, **machine_kw)
    states: list[Section] = []
    for s in reader:
        if s.kind == PAGES:
            if s.version > PAGES_VERSION:
                raise BadImage(f"{what}: made by a newer ringvisor (pages in layout "
                               f"{s.version})")
            RAMCODEC.decode_pages_into(s.payload, m.mem.ram, what)
        elif s.kind == STATE:
            states.append(s)
        else:
            raise BadImage(f"{what}: corrupt (a {KIND_NAMES[s.kind]} section in a "
                           f"migration stream)")
    load_states(m, monitor, states, what)
    return m, monitor, info
