"""The block back-end inside the hypervisor: the chapter's monolithic structure.

In Xen the block back-end is a driver in Domain 0: every request crosses
from the DomU to Domain 0 and back.  In a monolithic hypervisor (VMware ESX's
vmkernel in the chapter) the hypervisor has the device drivers itself.  Here
the same request engine as Domain 0's blkback (``ringvisor.backend.blk``)
runs inside the hypervisor for the domains whose configuration says
``backend=hypervisor``: the toolstack still does the xenbus handshake (the
policy stays in Domain 0), binds the front-end's event channel, and then
hands the ring over with ``rv_blkback_op(RV_BLKBACK_attach)`` (ringvisor's
hypercall at ``__HYPERVISOR_arch_1``; privileged: the caller needs
``mmu map_write`` over the front-end's domain).  From then on the
front-end's notification is served synchronously, inside its own
``EVTCHNOP_send``: no domain switch, no Domain 0.

The grants are still honoured: the front-end granted its pages to the
back-end's domain (Domain 0, ``backend-id``), and every access to the ring
and to a segment checks the grant entry *at that moment*
(``GrantTable.granted_frame``), as ``GNTTABOP_copy`` would; a refused
grant is a ``BLKIF_RSP_ERROR``.
"""

from __future__ import annotations

from ringvisor.abi import BLKIF_RING_SIZE, RV_BLKBACK_OP, Errno, RvBlkbackOp
from ringvisor.backend.blk import BlockServer, GrantRefused
from ringvisor.hw.devices.ata import DiskError, DiskImage
from ringvisor.vmm.errors import HypercallError

from .grant import GrantFailure

MAX_PATH = 4096


class HypervisorChannel:
    """The front-end's ring and pages, reached by the hypervisor on the back-end's
    domain's grants."""

    def __init__(self, hv, front, back, ring_ref: int, back_port: int) -> None:
        self.hv, self.front, self.back = hv, front, back
        self.ring_ref, self.back_port = ring_ref, back_port

    def _frame(self, ref: int, write: bool) -> int:
        try:
            return self.front.grants.granted_frame(self.back, ref, write) << 12
        except GrantFailure as e:
            raise GrantRefused(e.status.name) from None

    def ring_read(self, offset: int, n: int) -> bytes:
        return self.hv.mem.read(self._frame(self.ring_ref, False) + offset, n)

    def ring_write(self, offset: int, data: bytes) -> None:
        ma = self._frame(self.ring_ref, True) + offset
        self.hv.mem.write(ma, data)
        self.hv.guest_memory_written(ma, len(data))

    def copy_from(self, pieces) -> bytes:
        return b"".join(self.hv.mem.read(self._frame(ref, False) + off, n) for ref, off, n in pieces)

    def copy_to(self, pieces, data: bytes) -> None:
        frames = [self._frame(ref, True) for ref, _, _ in pieces]    # all checked first
        at = 0
        for ma, (_, off, n) in zip(frames, pieces):
            self.hv.mem.write(ma + off, data[at:at + n])
            self.hv.guest_memory_written(ma + off, n)
            at += n

    def notify(self) -> None:
        p = self.back.events.ports[self.back_port]
        if self.front.events is not None and p.remote >= 0:
            self.front.events.set_pending(p.remote)


class HypervisorBackend:
    def __init__(self, hv, handle: int, front, back, ring_ref: int, port: int,
                 image: DiskImage) -> None:
        self.hv, self.handle, self.front, self.back, self.port = hv, handle, front, back, port
        self.server = BlockServer(image, HypervisorChannel(hv, front, back, ring_ref, port))
        self.reported = False

    def kick(self) -> None:
        """The front-end notified: serve its ring now (a ring's worth at most)."""
        try:
            n = self.server.serve()
        except GrantRefused:
            self.server.broken = "the ring page is no longer granted: shut"
            n = 0
        if self.server.broken and not self.reported:
            self.reported = True
            self.hv.printk(f"blkback d{self.front.domid}: {self.server.broken}")
        elif n == BLKIF_RING_SIZE:
            self.hv.clock.schedule(self.hv.clock.cycles(), self.kick)   # more: after others ran

    def close(self) -> None:
        self.back.events.kernel_ports.pop(self.port, None)
        self.server.image.close()


def blkback_op(mon, cmd: int, arg: int) -> int:
    hv = mon.hv
    if cmd not in set(RvBlkbackOp):
        raise HypercallError(Errno.ENOSYS)
    if mon.argmem is None:
        raise HypercallError(Errno.EPERM)          # the toolstack's, not a kernel's
    a = RV_BLKBACK_OP.unpack(mon._read(arg, RV_BLKBACK_OP.size))
    if cmd == RvBlkbackOp.attach_ata:
        front = hv.lookup(a["domid"])
        if front is None or front is mon.caller:
            raise HypercallError(Errno.ESRCH)
        hv.check(mon.caller, front, "mmu", "map_write")
        if front.kind != "bt" or not front.paused or front.dead:
            raise HypercallError(Errno.EINVAL)     # a paused bt domain's primary IDE channel
        image = _image(hv, front, mon, a)
        try:
            attached = front.monitor.devices.attach_disk(image)
        except DiskError:
            attached = None                        # not the disk its saved registers had
        if not attached:
            image.close()
            raise HypercallError(Errno.EEXIST if attached is False else Errno.EINVAL)
        a["sectors"] = image.sectors
        mon._write(arg, RV_BLKBACK_OP.pack(a))
        return 0
    if cmd == RvBlkbackOp.detach:
        b = hv.blkbacks.get(a["handle"])
        if b is None or b.back is not mon.caller:
            raise HypercallError(Errno.ENOENT)
        del hv.blkbacks[a["handle"]]
        b.close()
        return 0
    front = hv.lookup(a["domid"])
    if front is None or front is mon.caller:
        raise HypercallError(Errno.ESRCH)
    hv.check(mon.caller, front, "mmu", "map_write")
    back = mon.caller
    port = back.events.ports[a["port"]] if 0 < a["port"] < len(back.events.ports) else None
    if port is None or a["port"] not in back.events.user_ports or port.remote_dom != front.domid:
        raise HypercallError(Errno.EINVAL)         # a port bound to that front-end, by us
    image = _image(hv, front, mon, a)
    hv.next_blkback += 1
    b = HypervisorBackend(hv, hv.next_blkback, front, back, a["ring_ref"], a["port"], image)
    hv.blkbacks[b.handle] = b
    back.events.user_ports.discard(a["port"])      # its events are the hypervisor's now
    back.events.kernel_ports[a["port"]] = b.kick
    a["handle"], a["sectors"] = b.handle, image.sectors
    mon._write(arg, RV_BLKBACK_OP.pack(a))
    return 0


def _image(hv, front, mon, a: dict) -> DiskImage:
    """The image file the request names, opened (``-ENOENT`` with a line in the
    hypervisor's console if it cannot be)."""
    if not 0 < a["path_len"] <= MAX_PATH:
        raise HypercallError(Errno.EINVAL)
    path = mon._read(a["path"], a["path_len"]).decode("utf-8", "replace")
    try:
        return DiskImage(path, bool(a["readonly"]))
    except DiskError as e:
        hv.printk(f"blkback d{front.domid}: {e}")
        raise HypercallError(Errno.ENOENT) from None


def release(hv, dom) -> None:
    """A domain is going: the rings it served or was served by go with it."""
    for h, b in list(hv.blkbacks.items()):
        if dom in (b.front, b.back):
            del hv.blkbacks[h]
            b.close()
