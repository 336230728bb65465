"""blkback: the block split driver's back-end, in Domain 0's user space.

For each ``disk =`` of a domain's configuration the toolstack creates the
two xenstore directories of Xen's xenbus protocol -- the front-end's
``/local/domain/D/device/vbd/DEV`` (owned by the DomU, ``backend`` and
``backend-id`` pointing here) and the back-end's
``/local/domain/0/backend/vbd/D/DEV`` (``params``, ``mode``, ``frontend``)
-- opens the raw image on the host, publishes ``sectors``, ``info``,
``sector-size`` and ``feature-flush-cache``, and says InitWait.  It watches
the front-end's ``state``: at Initialised it reads ``ring-ref`` and
``event-channel``, maps the ring (``GNTTABOP_map_grant_ref``), binds the
channel (``EVTCHNOP_bind_interdomain``) and says Connected; at Closing it
lets go and says Closed.  Requests are then served by the engine of
``ringvisor.backend.blk`` whenever the channel is signalled, the data moved
with ``GNTTABOP_copy`` between the front-end's granted pages and the
toolstack's buffers -- every step a hypercall with Domain 0's identity.

With ``backend=hypervisor`` in the disk's spec the handshake is the same
and the ring, once negotiated, is handed to the hypervisor's own back-end
(``Xc.blkback_attach``: the monolithic structure, docs/xen.md).
"""

from __future__ import annotations

from ringvisor.abi import BLKIF_RING_SIZE, DomId, Gntcopy, Gntst, XenbusState, XsType, vbd_device
from ringvisor.backend.blk import BlockServer, GrantRefused, backend_info
from ringvisor.hw.devices.ata import DiskImage

from .xc import PAGE, Xc, XcError
from .xenstore import Connection, Store, XsError


class Dom0Channel:
    """The front-end's ring (mapped) and pages (copied), as Domain 0 reaches them."""

    def __init__(self, xc: Xc, domid: int, ring_va: int, port: int) -> None:
        self.xc, self.domid, self.ring_va, self.port = xc, domid, ring_va, port
        self.copies = 0

    def ring_read(self, offset: int, n: int) -> bytes:
        return self.xc.iface.read(self.ring_va + offset, n)

    def ring_write(self, offset: int, data: bytes) -> None:
        self.xc.iface.write(self.ring_va + offset, data)

    def _ops(self, pieces, buf: int, to_guest: bool) -> list[dict]:
        """One GNTTABOP_copy per piece and per page of our buffer it crosses."""
        ops, at = [], buf
        for ref, off, n in pieces:
            while n:
                chunk = min(n, PAGE - (at & 0xFFF))
                local = {"u": {"gmfn": self.xc.local_frame(at)}, "domid": DomId.SELF,
                         "offset": at & 0xFFF}
                remote = {"u": {"ref": ref}, "domid": self.domid, "offset": off}
                ops.append({"source": local, "dest": remote, "len": chunk,
                            "flags": Gntcopy.dest_gref} if to_guest else
                           {"source": remote, "dest": local, "len": chunk,
                            "flags": Gntcopy.source_gref})
                at, off, n = at + chunk, off + chunk, n - chunk
        return ops

    def _buffer(self, n: int) -> int:
        return (self.xc._scratch(n + PAGE) + PAGE - 1) & ~(PAGE - 1)

    def _copy(self, ops) -> None:
        self.copies += len(ops)
        statuses = self.xc.grant_copy(ops)
        bad = next((s for s in statuses if s != Gntst.okay), None)
        if bad is not None:
            raise GrantRefused(Gntst(bad).name)

    def copy_from(self, pieces) -> bytes:
        total = sum(n for _, _, n in pieces)
        buf = self._buffer(total)
        self._copy(self._ops(pieces, buf, False))
        return self.xc.iface.read(buf, total)

    def copy_to(self, pieces, data: bytes) -> None:
        buf = self._buffer(len(data))
        self.xc.iface.write(buf, data)
        self._copy(self._ops(pieces, buf, True))

    def notify(self) -> None:
        self.xc.evtchn_send(self.port)


class VbdBackend:
    """One virtual disk of one domain."""

    def __init__(self, xc: Xc, store: Store, domid: int, disk, log) -> None:
        self.xc, self.domid, self.disk, self.log = xc, domid, disk, log
        self.dev = vbd_device(disk.vdev)
        self.front = f"/local/domain/{domid}/device/vbd/{self.dev}"
        self.back = f"/local/domain/0/backend/vbd/{domid}/{self.dev}"
        self.image = DiskImage(disk.target, disk.access == "ro")      # DiskError: one line
        self.events: list[str] = []
        self.xs = Connection(store, 0, lambda path, token: self.events.append(path))
        self.server: BlockServer | None = None
        self.ring: tuple[int, int] | None = None        # (grant handle, address) of the ring
        self.port = 0
        self.hv_handle = 0                               # the hypervisor's back-end, if there
        self.state = XenbusState.Initialising

    # -- the handshake --------------------------------------------------------------------
    def publish(self) -> None:
        d, xs = self.domid, self.xs
        # the permissions first: a node takes its parent's when it is made (as libxl
        # makes the directories with theirs before it fills them). The front-end's
        # directory is the domain's to write; the back-end's only for it to read.
        for path, perms in ((self.front, (f"n{d}", "r0")),
                            (f"/local/domain/0/backend/vbd/{d}", ("n0", f"r{d}"))):
            xs.call(XsType.MKDIR, path)
            xs.set_perms(path, *perms)
        for path, value in ((f"{self.back}/frontend", self.front), (f"{self.back}/frontend-id", str(d)),
                            (f"{self.back}/params", self.disk.target),
                            (f"{self.back}/mode", "r" if self.image.readonly else "w"),
                            (f"{self.back}/type", "file"), (f"{self.back}/dev", self.disk.vdev),
                            (f"{self.back}/backend-kind", self.disk.backend),
                            (f"{self.back}/online", "1")):
            xs.write(path, value)
        for k, v in backend_info(self.image).items():
            xs.write(f"{self.back}/{k}", v)
        for path, value in ((f"{self.front}/backend", self.back), (f"{self.front}/backend-id", "0"),
                            (f"{self.front}/virtual-device", str(self.dev)),
                            (f"{self.front}/device-type", "disk"),
                            (f"{self.front}/state", str(int(XenbusState.Initialising)))):
            xs.write(path, value)
        self._set_state(XenbusState.InitWait)
        self.xs.call(XsType.WATCH, f"{self.front}/state", "blkback")
        self.events.clear()

    def _set_state(self, s: XenbusState) -> None:
        self.state = s
        self.xs.write(f"{self.back}/state", str(int(s)))

    def _front_state(self) -> int:
        v = self.xs.read(f"{self.front}/state")
        return int(v) if v and v.isdigit() else XenbusState.Unknown

    def _handshake(self) -> None:
        fs = self._front_state()
        if fs in (XenbusState.Initialised, XenbusState.Connected) and self.state == XenbusState.InitWait:
            try:
                self._connect()
            except (XcError, ValueError, XsError) as e:
                self.log(f"blkback d{self.domid} {self.disk.vdev}: cannot connect: {e}")
                self.xs.write(f"{self.back}/error", str(e))
                self._disconnect()
                self._set_state(XenbusState.Closed)
        elif fs in (XenbusState.Closing, XenbusState.Closed) and \
                self.state not in (XenbusState.Closed, XenbusState.InitWait):
            self._set_state(XenbusState.Closing)
            self._disconnect()
            self._set_state(XenbusState.Closed)

    def _connect(self) -> None:
        ref = int(self.xs.read(f"{self.front}/ring-ref") or "x")
        remote_port = int(self.xs.read(f"{self.front}/event-channel") or "x")
        proto = self.xs.read(f"{self.front}/protocol") or "x86_32-abi"
        if proto != "x86_32-abi":
            raise ValueError(f"protocol {proto!r} is not x86_32-abi")
        self.port = self.xc.evtchn_bind_interdomain(self.domid, remote_port)
        if self.disk.backend == "hypervisor":
            self.hv_handle, _ = self.xc.blkback_attach(self.domid, ref, self.port, self.disk.target,
                                                       self.image.readonly)
        else:
            self.ring = self.xc.grant_map(self.domid, ref)
            self.server = BlockServer(self.image, Dom0Channel(self.xc, self.domid, self.ring[1],
                                                              self.port))
        self._set_state(XenbusState.Connected)

    def _disconnect(self) -> None:
        undo = []
        if self.hv_handle:
            undo.append(lambda h=self.hv_handle: self.xc.blkback_detach(h))
        if self.ring is not None:
            undo.append(lambda r=self.ring: self.xc.grant_unmap(*r))
        if self.port:
            undo.append(lambda p=self.port: self.xc.evtchn_close(p))
        for f in undo:
            try:
                f()
            except XcError:
                pass                    # the domain is already gone: so are they
        self.hv_handle, self.ring, self.port, self.server = 0, None, 0, None

    # -- the event loop's side ------------------------------------------------------------------
    def poll(self) -> bool:
        """Follow the handshake, serve the ring; True if there is more to do at once."""
        if self.events:
            self.events.clear()
            self._handshake()
        if self.server is None:
            return False
        try:
            n = self.server.serve()
        except (XcError, GrantRefused) as e:
            self.server.broken = f"the ring cannot be reached ({e}): shut"
            n = 0
        if self.server.broken:
            self.log(f"blkback d{self.domid} {self.disk.vdev}: {self.server.broken}")
            self.server = None
            return False
        return n == BLKIF_RING_SIZE

    def stats(self) -> dict:
        s = self.server.stats.__dict__ if self.server is not None else {}
        return {"state": self.state.name, "backend": self.disk.backend, **s}

    def close(self) -> None:
        """The domain is going (or gone): let go of everything, remove the directories."""
        self._disconnect()
        self.xs.close()
        self.image.close()
        for path in (self.back, self.front):
            try:
                self.xs.rm(path)
            except XsError:
                pass
