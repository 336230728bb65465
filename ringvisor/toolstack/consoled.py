"""xenconsoled: the back-end of every DomU's console (Xen's ``tools/console/daemon``).

For each domain it maps the console ring (grant ``GNTTAB_RESERVED_CONSOLE``),
binds the ring's event channel, and on each event moves what the guest wrote
(``out``) to the domain's log file (``console/NAME.log``) and to whoever is
attached (``xl console``), and what was typed (``in``) into the ring.
"""

from __future__ import annotations

import struct

from ringvisor.abi import (XENCONS_IN_SIZE, XENCONS_INTERFACE, XENCONS_OUT_SIZE, GnttabReserved,
                           ring_read, ring_write)

from .xc import Xc, XcError

O_IN, O_OUT = XENCONS_INTERFACE.offset("in"), XENCONS_INTERFACE.offset("out")
O_IDX = XENCONS_INTERFACE.offset("in_cons")       # in_cons, in_prod, out_cons, out_prod


class ConsoleBackend:
    """One domain's console ring, as Domain 0 sees it."""

    def __init__(self, xc: Xc, domid: int, remote_port: int, sink) -> None:
        self.xc, self.domid = xc, domid
        self.handle, self.va = xc.grant_map(domid, GnttabReserved.CONSOLE)
        self.port = xc.evtchn_bind_interdomain(domid, remote_port)
        self.sink = sink                       # called with each chunk of output
        self.pending_input = bytearray()
        self.bytes_out = 0

    def _idx(self) -> tuple[int, int, int, int]:
        return struct.unpack("<4I", self.xc.iface.read(self.va + O_IDX, 16))

    def poll(self) -> bool:
        """Move output out and input in; True if anything moved."""
        in_cons, in_prod, out_cons, out_prod = self._idx()
        moved = False
        n = (out_prod - out_cons) & 0xFFFFFFFF
        if 0 < n <= XENCONS_OUT_SIZE:
            data = ring_read(self.xc.iface.read, self.va + O_OUT, XENCONS_OUT_SIZE, out_cons, n)
            self.xc.iface.write(self.va + O_IDX + 8, struct.pack("<I", out_prod))
            self.bytes_out += len(data)
            self.sink(data)
            moved = True
        elif n:
            # a guest that broke the ring's invariant: its output is dropped
            self.xc.iface.write(self.va + O_IDX + 8, struct.pack("<I", out_prod))
        if self.pending_input:
            room = XENCONS_IN_SIZE - ((in_prod - in_cons) & 0xFFFFFFFF)
            data = bytes(self.pending_input[:max(0, room)])
            ring_write(self.xc.iface.write, self.va + O_IN, XENCONS_IN_SIZE, in_prod, data)
            if data:
                self.xc.iface.write(self.va + O_IDX + 4, struct.pack("<I", (in_prod + len(data)) & 0xFFFFFFFF))
                del self.pending_input[:len(data)]
                moved = True
        if moved:
            self.xc.evtchn_send(self.port)
        return moved

    def type(self, data: bytes) -> None:
        self.pending_input += data
        self.poll()

    def close(self) -> None:
        for undo in (lambda: self.xc.evtchn_close(self.port),
                     lambda: self.xc.grant_unmap(self.handle, self.va)):
            try:
                undo()
            except XcError:
                pass                    # the domain is already gone: so are they
