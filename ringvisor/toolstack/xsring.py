"""xenstored's side of a domain's xenstore ring (``io/xs_wire.h``).

The domain writes requests (``xsd_sockmsg`` header + payload) into ``req``
and advances ``req_prod``; xenstored, told by the ring's event channel,
takes whole messages, answers each in ``rsp`` (the same ``req_id`` and
``tx_id``; ``XS_ERROR`` with the errno name on failure) and sends watch
events there too.  Indexes are free-running; a domain that breaks the
ring's rules (a length over the payload limit, indexes further apart than
the ring) gets its connection closed -- not xenstored stopped.
"""

from __future__ import annotations

import struct

from ringvisor.abi import (XENSTORE_DOMAIN_INTERFACE, XENSTORE_PAYLOAD_MAX, XENSTORE_RING_SIZE,
                           XSD_SOCKMSG, GnttabReserved, XsType, ring_read, ring_write)

from .xc import Xc, XcError
from .xenstore import Connection, Store, XsError

O_REQ = XENSTORE_DOMAIN_INTERFACE.offset("req")
O_RSP = XENSTORE_DOMAIN_INTERFACE.offset("rsp")
O_IDX = XENSTORE_DOMAIN_INTERFACE.offset("req_cons")   # req_cons, req_prod, rsp_cons, rsp_prod
HDR = XSD_SOCKMSG.size


class RingConnection:
    def __init__(self, xc: Xc, store: Store, domid: int, remote_port: int) -> None:
        self.xc, self.domid = xc, domid
        self.handle, self.va = xc.grant_map(domid, GnttabReserved.XENSTORE)
        self.port = xc.evtchn_bind_interdomain(domid, remote_port)
        self.conn = Connection(store, domid, self._watch_event)
        self.out = bytearray()              # replies waiting for room in rsp
        self.broken = ""

    def _idx(self) -> list[int]:
        return list(struct.unpack("<4I", self.xc.iface.read(self.va + O_IDX, 16)))

    def _ring_read(self, start: int, n: int) -> bytes:
        return ring_read(self.xc.iface.read, self.va + O_REQ, XENSTORE_RING_SIZE, start, n)

    def _reply(self, kind: int, req_id: int, tx: int, payload: bytes) -> None:
        self.out += XSD_SOCKMSG.pack(type=kind, req_id=req_id, tx_id=tx, len=len(payload)) + payload

    def _watch_event(self, path: str, token: str) -> None:
        self._reply(XsType.WATCH_EVENT, 0, 0, path.encode() + b"\0" + token.encode() + b"\0")

    def poll(self) -> None:
        if self.broken:
            return
        req_cons, req_prod, _, _ = self._idx()
        avail = (req_prod - req_cons) & 0xFFFFFFFF
        if avail > XENSTORE_RING_SIZE:
            return self._break("request indexes further apart than the ring")
        while avail >= HDR:
            h = XSD_SOCKMSG.unpack(self._ring_read(req_cons, HDR))
            if h["len"] > XENSTORE_PAYLOAD_MAX:
                return self._break(f"a request of {h['len']} bytes")
            if avail < HDR + h["len"]:
                break                                  # the rest is still being written
            payload = self._ring_read(req_cons + HDR, h["len"])
            req_cons = (req_cons + HDR + h["len"]) & 0xFFFFFFFF
            avail -= HDR + h["len"]
            try:
                reply = self.conn.request(h["type"], h["tx_id"], payload)
                kind = h["type"]
            except XsError as e:
                self.conn.store.stats["errors"] += 1
                reply, kind = e.name.encode() + b"\0", XsType.ERROR
            self._reply(kind, h["req_id"], h["tx_id"], reply)
        self.xc.iface.write(self.va + O_IDX, struct.pack("<I", req_cons))
        self._flush()

    def _flush(self) -> None:
        if not self.out:
            return
        _, _, rsp_cons, rsp_prod = self._idx()
        room = XENSTORE_RING_SIZE - ((rsp_prod - rsp_cons) & 0xFFFFFFFF)
        n = min(max(room, 0), len(self.out))
        ring_write(self.xc.iface.write, self.va + O_RSP, XENSTORE_RING_SIZE, rsp_prod,
                   self.out[:n])
        del self.out[:n]
        if n:
            self.xc.iface.write(self.va + O_IDX + 12, struct.pack("<I", (rsp_prod + n) & 0xFFFFFFFF))
            self.xc.evtchn_send(self.port)

    def _break(self, why: str) -> None:
        self.broken = why
        self.conn.close()

    def close(self) -> None:
        self.conn.close()
        for undo in (lambda: self.xc.evtchn_close(self.port),
                     lambda: self.xc.grant_unmap(self.handle, self.va)):
            try:
                undo()
            except XcError:
                pass
