"""Post-copy live migration: the VM moves first, its memory follows.

Hines & Gopalan ("Post-Copy Based Live Virtual Machine Migration Using
Adaptive Pre-Paging and Dynamic Self-Ballooning", VEE 2009): the source pauses
the VM and sends its CPU and device state only; the destination resumes it at
once, on memory that is still on the source.  A page the guest touches before
it has arrived is a *demand fault*: the destination asks the source for it,
and the guest waits for that page alone.  Meanwhile the source *pushes* the
other pages in the background (active push), a page asked for jumping the
queue, until every page is on the destination.  Each page crosses the link
once, and the downtime is the state's, whatever the guest writes -- against
pre-copy's rounds, which resend every page written meanwhile.

The price, as the paper says: until the last page has arrived the VM's
up-to-date state is split between the hosts -- its CPU and the pages it has
touched on the destination, the rest on the source -- so the death of
*either* host loses the VM, where a pre-copy migration survives the
destination's death (the source still holds it whole).  Here the source
reports a destination that dies after taking the VM, the destination a source
that dies before its last page, each in one line with exit status 2; a
destination that fails *before* taking the VM still costs the source nothing.

Catching the first touch: every path into guest memory (the CPU's fast paths,
the page walker, devices, the monitors) indexes one buffer, so the VM's RAM on
the destination is anonymous memory registered with Linux's userfaultfd
(``userfault.py``).  The guest's process cannot serve its own faults (the
thread that touched the page is stopped while holding the interpreter lock),
so the destination forks: the child builds and runs the VM -- it is what
``Incoming.receive`` returns to, and the VM runs in it as after a pre-copy
migration -- and the parent holds the userfaultfd and the connection to the
source, resolves faults, copies pushed pages in, and when the VM's process
ends exits with its status.  Zero pages (the page map says which) are mapped
zero at once without crossing the link.  Neither the guest nor its virtual
time sees any of this: output and ``[timing]`` are one uninterrupted run's.

The stream: the image header with the MIGRATION and POSTCOPY flags, ``META``,
``PAGEMAP`` (``npages u32`` and a bitmap of the pages the source holds that
are not zero), the ``STATE`` sections, ``END``; then, once the destination has
answered ``ACK`` (it holds the VM), ``PAGES`` sections (uncompressed, a batch
of pushed pages or the pages asked for) and a second ``END``.  The
destination's messages are eight bytes: ``ACK``, ``RVPG`` + page u32 (a
demand fault) and ``RVPD`` + its demand-fault count u32 (no more pages
needed: all arrived, or the VM ended).
"""

from __future__ import annotations

import os
import select
import signal
import socket
import struct
import sys
import time
from collections import deque

from . import ram as RAMCODEC, userfault
from .stream import (KIND_NAMES, MIGRATION, PAGEMAP, PAGES, POSTCOPY, STATE, BadImage, pack_end,
                     pack_header, pack_section)
from .vm import capture, load_states, new_machine
from .wire import (ACK, PAGES_VERSION, TIMEOUT, Migration, MigrationLost, Sender, describe)

PAGE = RAMCODEC.PAGE
PUSH = 32                       # pages per pushed batch: a demand waits behind one at most
MSG = struct.Struct("<4sI")     # destination -> source
DEMAND, DONE = b"RVPG", b"RVPD"
_KEEP: list = []                # the VM process's end of its line to the page server


# -- the source ------------------------------------------------------------------------------
def send_vm(machine, monitor, info, sock, out: Migration) -> list[int]:
    """The stream up to its first END: the VM without its memory; the pages not zero."""
    npages = machine.mem.size // PAGE
    nonzero = RAMCODEC.nonzero_pages(machine.mem.ram)
    secs = capture(machine, monitor, info, include_ram=False)
    parts = [pack_section(secs[0].kind, secs[0].name, secs[0].version, secs[0].payload),
             pack_section(PAGEMAP, "page-map", PAGES_VERSION,
                          RAMCODEC.COUNT.pack(npages) + RAMCODEC.page_bitmap(nonzero, npages))]
    states = [pack_section(s.kind, s.name, s.version, s.payload) for s in secs[1:]]
    data = b"".join([pack_header(MIGRATION | POSTCOPY), *parts, *states,
                     pack_end(len(parts) + len(states))])
    sock.sendall(data)
    out.bytes_sent += len(data)
    out.state_bytes = sum(map(len, states))
    return nonzero


def source(machine, monitor, info, sock, progress, t0) -> Migration:
    """Send the paused VM's state, then its pages as the destination runs it."""
    out = Migration(postcopy=True, icount=machine.cpu.state.icount)
    paused = time.perf_counter()
    nonzero = send_vm(machine, monitor, info, sock, out)
    npages = machine.mem.size // PAGE
    mem, send = machine.mem, Sender(sock, out)
    todo, sent = deque(nonzero), bytearray(npages)
    wanted: list[int] = []
    inbuf = b""
    acked = ended = False
    while True:
        try:
            ready = select.select([sock], [], [], 0 if acked and todo else TIMEOUT)[0]
            if ready:
                data = sock.recv(1 << 16)
                if not data:
                    raise ConnectionResetError(0, "the destination closed the connection")
                inbuf += data
            elif not (acked and todo):
                raise socket.timeout()
            while len(inbuf) >= MSG.size:
                msg, inbuf = inbuf[:MSG.size], inbuf[MSG.size:]
                tag, value = MSG.unpack(msg)
                if msg == ACK and not acked:
                    acked = True
                    out.downtime = time.perf_counter() - paused
                    progress(f"post-copy: the VM runs on the destination after "
                             f"{out.downtime * 1000:.1f} ms; sending its {len(nonzero):,} "
                             f"pages behind it")
                elif tag == DEMAND and value < npages:
                    wanted.append(value)
                elif tag == DONE and acked:
                    out.faults, out.seconds = value, time.perf_counter() - t0
                    return out
                else:
                    raise ConnectionResetError(0, "the destination sent something else "
                                                  "than a request for pages")
            batch = sorted({p for p in wanted if not sent[p]})
            wanted.clear()
            if batch:
                out.demanded += len(batch)
            elif acked:
                while todo and len(batch) < PUSH:
                    p = todo.popleft()
                    if not sent[p]:
                        batch.append(p)
                out.pushed += len(batch)
            if batch:
                for p in batch:
                    sent[p] = 1
                send(PAGES, "pages", PAGES_VERSION, RAMCODEC.encode_pages(mem.ram, batch, 0))
            if acked and not todo and not ended:
                send.end()
                ended = True
        except OSError as e:
            if not acked:           # the destination never took the VM: it is whole here
                raise
            raise MigrationLost(f"post-copy migration failed: the connection to the "
                                f"destination was lost ({describe(e)}) with "
                                f"{len(nonzero) - out.pushed - out.demanded:,} of "
                                f"{len(nonzero):,} pages not sent; the VM is lost (its CPU "
                                f"ran on there, part of its memory was here)") from None


# -- the destination ---------------------------------------------------------------------------
def receive(conn, reader, info, what, attach_monitor, engine, output, machine_kw):
    """After ``META``: take the state, fork; the child returns (machine, monitor, info)
    with the VM restored on memory still arriving, the parent serves its pages and ends
    with the child (it never returns)."""
    states, pagemap = [], None
    for s in reader:
        if s.kind == STATE:
            states.append(s)
        elif s.kind == PAGEMAP and pagemap is None:
            pagemap = s.payload
        else:
            raise BadImage(f"{what}: corrupt (a {KIND_NAMES[s.kind]} section before a post-copy VM's end)")
    npages = info.machine_mb << 8
    if (pagemap is None or len(pagemap) < RAMCODEC.COUNT.size
            or RAMCODEC.COUNT.unpack_from(pagemap)[0] != npages
            or len(pagemap) != RAMCODEC.COUNT.size + len(RAMCODEC.page_bitmap([], npages))):
        raise BadImage(f"{what}: corrupt (no page map of the VM's {npages:,} pages)")
    nonzero = RAMCODEC.bitmap_pages(pagemap[RAMCODEC.COUNT.size:], npages)
    try:
        userfault.check()
    except userfault.Unavailable as e:
        raise BadImage(f"{what}: this host cannot take a post-copy migration ({e}); "
                       f"pre-copy can (drop --postcopy on the source)") from None
    ctl, child_end = socket.socketpair()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        ctl.close()
        return _resume(child_end, info, states, what, attach_monitor, engine, output,
                       machine_kw)
    child_end.close()
    try:
        status = _serve(pid, conn, reader, ctl, nonzero, npages, what)
    except BaseException as e:         # nothing may unwind into the caller's code here
        _say(f"ringvisor: {what}: the page server failed ({type(e).__name__}: {e})")
        os.kill(pid, signal.SIGKILL)
        _wait(pid)
        status = 2
    os._exit(status)


def _resume(ctl, info, states, what, attach_monitor, engine, output, machine_kw):
    """The VM's process: its memory registered, handed to the parent, then restored."""
    ram = userfault.anonymous(info.machine_mb << 20)
    try:
        fd = userfault.register(ram)
    except userfault.Unavailable as e:
        raise BadImage(f"{what}: {e}") from None
    socket.send_fds(ctl, [struct.pack("<Q", userfault.address(ram))], [fd])
    os.close(fd)
    m, monitor = new_machine(info, attach_monitor, engine, output, what, ram=ram, **machine_kw)
    load_states(m, monitor, states, what)
    ctl.sendall(b"R")
    _KEEP.append(ctl)           # closed when this process ends: the page server's sign
    return m, monitor, info


def _say(line: str) -> None:
    """One line on stderr in one write: the VM's process shares it, and a line split in two
    writes may have the other's in the middle."""
    sys.stderr.flush()
    os.write(2, (line + "\n").encode())


def _wait(pid: int) -> int:
    code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    return code if code >= 0 else 128 - code


def _runs(pages: list[int]):
    """(index into ``pages``, first page, count) of each run of consecutive pages."""
    k = 0
    while k < len(pages):
        j = k + 1
        while j < len(pages) and pages[j] == pages[j - 1] + 1:
            j += 1
        yield k, pages[k], j - k
        k = j


def _serve(pid, conn, reader, ctl, nonzero, npages, what) -> int:
    """The page server: the VM process's exit status once it no longer needs any."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)    # Ctrl-C is the VM's; this one follows
    msg, fds, _, _ = socket.recv_fds(ctl, 8, 1)
    if not fds:
        return _wait(pid)                           # it failed before registering (said why)
    filler = userfault.Filler(fds[0], struct.unpack("<Q", msg)[0], npages)
    missing = bytearray(npages)
    for p in nonzero:
        missing[p] = 1
    zero = [p for p in range(npages) if not missing[p]]
    for _, first, count in _runs(zero):
        filler.zero(first, count)
    left, faults, requested, restored = len(nonzero), 0, set(), False
    reader.done, reader.count = False, 0            # the pages' part of the stream
    t0 = time.perf_counter()

    def lost(why: str) -> int:
        _say(f"ringvisor: {what} failed: the source is gone ({why}) with {left:,} of "
              f"{len(nonzero):,} pages still there; the VM cannot go on (under post-copy "
              f"it is split between the hosts until its last page arrives)")
        os.kill(pid, signal.SIGKILL)
        _wait(pid)
        return 2

    while left:
        try:
            ready = select.select([filler.fd, conn, ctl], [], [], TIMEOUT)[0]
            if not ready:
                return lost(f"no page for {TIMEOUT:.0f} s")
            if ctl in ready:
                got = ctl.recv(16)
                if not got:                         # the VM's process ended
                    break
                conn.sendall(ACK)
                restored = True
            if filler.fd in ready:
                for p in filler.faults():
                    if missing[p] and p not in requested:
                        requested.add(p)
                        faults += 1
                        conn.sendall(MSG.pack(DEMAND, p))
            if conn in ready:
                s = reader.next()
                if s is None or s.kind != PAGES:
                    raise BadImage(f"{what}: corrupt (the pages' part of the stream "
                                   f"ended early or holds something else)")
                pages, data = RAMCODEC.decode_pages(s.payload, npages, what)
                for k, first, count in _runs(pages):
                    if all(missing[first:first + count]):
                        filler.copy(first, data[k * PAGE:(k + count) * PAGE])
                    else:
                        for i in range(count):
                            if missing[first + i]:
                                filler.copy(first + i, data[(k + i) * PAGE:(k + i + 1) * PAGE])
                    for i in range(first, first + count):
                        left -= missing[i]
                        missing[i] = 0
        except BadImage as e:
            return lost(str(e).removeprefix(f"{what}: "))
        except OSError as e:
            return lost(describe(e))
    try:
        if restored:                                # (else the source keeps the VM)
            conn.sendall(MSG.pack(DONE, faults))
    except OSError:
        pass                                        # the source has what it needs to know
    conn.close()
    if not left:
        _say(f"ringvisor: post-copy: all {len(nonzero):,} pages are here "
              f"{time.perf_counter() - t0:.2f} s after the VM resumed ({faults:,} demand "
              f"faults)")
    return _wait(pid)
