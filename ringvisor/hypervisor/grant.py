"""Grant tables, version 1 (Xen's ``common/grant_table.c``): sharing by permission.

A domain's grant table is a few frames of ``grant_entry_v1`` (flags, domid,
frame) that the domain itself writes.  Entry *ref* with ``GTF_permit_access``
says: domain *domid* may use my frame *frame* (read only with
``GTF_readonly``).  The grantee asks the hypervisor, naming the granter and
the ref:

- ``map_grant_ref`` places the granter's frame at a free pseudo-physical
  frame of the grantee (``host_addr``: ringvisor's guests are
  auto-translated) and returns a handle; the hypervisor sets
  ``GTF_reading`` (and ``GTF_writing``) in the entry while the mapping
  exists, so the granter knows when it may take the frame back.  A read-only
  mapping is read-only in every shadow of the grantee.
- ``unmap_grant_ref`` undoes one mapping by its handle.
- ``copy`` copies bytes between two frames, either side named by a grant
  reference or (for the caller's own memory) a frame number.
- ``setup_table`` gives the table its frames (and returns them),
  ``query_size`` reports them.

Each request is checked against the entry *at that moment* (a domain maps
only what is granted to it, only while it is), and by the security module
(class ``grant``).  Results are per operation, in ``status`` (``GNTST_*``).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from ringvisor.abi import (GNTTAB_COPY, GNTTAB_MAP_GRANT_REF, GNTTAB_QUERY_SIZE, GNTTAB_SETUP_TABLE,
                           GNTTAB_UNMAP_GRANT_REF, GRANT_ENTRY_V1, DomId, Errno, Gntcopy, Gntmap,
                           GnttabOp, Gntst, Gtf)
from ringvisor.vmm.errors import HypercallError

from . import memory
from .xsm import Denied

ENTRIES_PER_FRAME = 0x1000 // GRANT_ENTRY_V1.size
MAX_FRAMES = 4                  # Xen's default max_grant_frames is larger; 2048 refs suffice
MAX_MAPTRACK = 1024             # mappings one domain may hold
MAX_OPS = 512                   # operations per hypercall


@dataclass
class Mapping:
    granter: int                # domid
    ref: int
    gpfn: int                   # where in the grantee's physmap
    mfn: int
    readonly: bool


class GrantFailure(Exception):
    def __init__(self, status: Gntst) -> None:
        super().__init__(status.name)
        self.status = status


class GrantTable:
    """One domain's table (its frames) and the mappings it holds of others' grants."""

    def __init__(self, hv, dom) -> None:
        self.hv = hv
        self.dom = dom
        self.frames: list[int] = []              # machine frames of the table
        self.maptrack: dict[int, Mapping] = {}   # handle -> mapping it holds
        self._handle = 0
        self.stats = {"maps": 0, "unmaps": 0, "copies": 0, "refused": 0}

    @property
    def nr_entries(self) -> int:
        return len(self.frames) * ENTRIES_PER_FRAME

    def grow(self, nr_frames: int) -> None:
        if nr_frames > MAX_FRAMES:
            raise GrantFailure(Gntst.general_error)
        while len(self.frames) < nr_frames:
            self.frames += self.hv.frames.alloc_xen(1)
            self.dom.xen_frames.append(self.frames[-1])

    def contents(self) -> list[bytes]:
        """Its frames' bytes (a save: the entries name pseudo-physical frames only)."""
        return [self.hv.mem.read(f << 12, 0x1000) for f in self.frames]

    def set_contents(self, pages: list) -> None:
        """A restore: as many frames as saved, with their bytes (too many: GrantFailure)."""
        if pages:
            self.grow(len(pages))
        for f, data in zip(self.frames, pages):
            self.hv.mem.write(f << 12, bytes(data).ljust(0x1000, b"\0")[:0x1000])

    def _entry_addr(self, ref: int) -> int:
        if not 0 <= ref < self.nr_entries:
            raise GrantFailure(Gntst.bad_gntref)
        return (self.frames[ref // ENTRIES_PER_FRAME] << 12) + (ref % ENTRIES_PER_FRAME) * 8

    def entry(self, ref: int) -> dict:
        return GRANT_ENTRY_V1.unpack(self.hv.mem.read(self._entry_addr(ref), 8))

    def write_entry(self, ref: int, flags: int, domid: int, frame: int) -> None:
        self.hv.mem.write(self._entry_addr(ref), GRANT_ENTRY_V1.pack(flags=flags, domid=domid,
                                                                     frame=frame))

    def _set_flags(self, ref: int, on: int, off: int) -> None:
        addr = self._entry_addr(ref)
        flags = self.hv.mem.read16(addr)
        self.hv.mem.write16(addr, (flags | on) & ~off & 0xFFFF)

    # -- what the grantee may use -------------------------------------------------------
    def granted_frame(self, grantee, ref: int, write: bool) -> int:
        """The machine frame behind ``ref`` if it is granted to ``grantee`` (for writing,
        if ``write``), checked now."""
        e = self.entry(ref)
        if e["flags"] & Gtf.type_mask != Gtf.permit_access or e["domid"] != grantee.domid:
            raise GrantFailure(Gntst.permission_denied)
        if write and e["flags"] & Gtf.readonly:
            raise GrantFailure(Gntst.permission_denied)
        mfn = self.dom.p2m.get(e["frame"])
        if mfn is None or e["frame"] in self.dom.foreign:
            raise GrantFailure(Gntst.bad_page)      # only frames the granter owns
        return mfn

    def mappers(self, ref: int) -> list[Mapping]:
        """Every mapping, in any domain, of this table's entry ``ref``."""
        out = []
        for d in self.hv.domains.values():
            if d.grants is not None:
                out += [m for m in d.grants.maptrack.values()
                        if m.granter == self.dom.domid and m.ref == ref]
        return out

    def refresh_flags(self, ref: int) -> None:
        ms = self.mappers(ref)
        on = (Gtf.reading if ms else 0) | (Gtf.writing if any(not m.readonly for m in ms) else 0)
        self._set_flags(ref, on, (Gtf.reading | Gtf.writing) & ~on)

    # -- the grantee's side ---------------------------------------------------------------
    def map(self, granter, ref: int, host_addr: int, flags: int) -> tuple[int, int]:
        """Map ``granter``'s ``ref`` at ``host_addr``; (handle, machine address)."""
        if not flags & Gntmap.host_map or flags & Gntmap.contains_pte:
            raise GrantFailure(Gntst.general_error)  # host mappings by frame only
        readonly = bool(flags & Gntmap.readonly)
        try:
            self.hv.xsm.check(self.hv.caller or self.dom, granter, "grant",
                              "map_read" if readonly else "map_write")
        except Denied:
            raise GrantFailure(Gntst.permission_denied) from None
        mfn = granter.grants.granted_frame(self.dom, ref, not readonly)
        if host_addr & 0xFFF:
            raise GrantFailure(Gntst.bad_virt_addr)
        gpfn = host_addr >> 12
        if gpfn >= memory.MAX_GPFN:
            raise GrantFailure(Gntst.address_too_big)
        if gpfn in self.dom.p2m:
            raise GrantFailure(Gntst.bad_virt_addr)  # only into a hole of the physmap
        if len(self.maptrack) >= MAX_MAPTRACK:
            raise GrantFailure(Gntst.no_device_space)
        memory.set_entry(self.hv, self.dom, gpfn, mfn, granter.domid)
        if readonly:
            self.dom.monitor.gm.readonly.add(mfn)
        self._handle += 1
        self.maptrack[self._handle] = Mapping(granter.domid, ref, gpfn, mfn, readonly)
        granter.grants.refresh_flags(ref)
        self.stats["maps"] += 1
        return self._handle, mfn << 12

    def unmap(self, handle: int, host_addr: int) -> None:
        m = self.maptrack.get(handle)
        if m is None:
            raise GrantFailure(Gntst.bad_handle)
        if host_addr and host_addr >> 12 != m.gpfn:
            raise GrantFailure(Gntst.bad_virt_addr)
        self._drop(handle)
        self.stats["unmaps"] += 1

    def _drop(self, handle: int) -> None:
        m = self.maptrack.pop(handle)
        if self.dom.p2m.get(m.gpfn) == m.mfn:
            memory.clear_entry(self.hv, self.dom, m.gpfn)
        if m.readonly and not any(o.mfn == m.mfn and o.readonly for o in self.maptrack.values()):
            self.dom.monitor.gm.readonly.discard(m.mfn)
        granter = self.hv.lookup(m.granter)
        if granter is not None and granter.grants is not None:
            granter.grants.refresh_flags(m.ref)

    def release_all(self) -> None:
        """The domain is going: its mappings of others' grants go, and every mapping
        another domain holds of its grants is taken away from that domain."""
        for h in list(self.maptrack):
            self._drop(h)
        for d in self.hv.domains.values():
            if d is not self.dom and d.grants is not None:
                for h, m in list(d.grants.maptrack.items()):
                    if m.granter == self.dom.domid:
                        d.grants._drop(h)


# -- the hypercall --------------------------------------------------------------------------
def grant_table_op(mon, cmd: int, uop: int, count: int) -> int:
    ops = {GnttabOp.map_grant_ref: (GNTTAB_MAP_GRANT_REF, _map),
           GnttabOp.unmap_grant_ref: (GNTTAB_UNMAP_GRANT_REF, _unmap),
           GnttabOp.copy: (GNTTAB_COPY, _copy),
           GnttabOp.setup_table: (GNTTAB_SETUP_TABLE, _setup),
           GnttabOp.query_size: (GNTTAB_QUERY_SIZE, _query)}
    if cmd not in ops:
        raise HypercallError(Errno.ENOSYS)
    if count > MAX_OPS:
        raise HypercallError(Errno.EINVAL)
    layout, op = ops[cmd]
    for i in range(count):
        addr = uop + i * layout.size
        d = layout.unpack(mon._read(addr, layout.size))
        try:
            op(mon, d)
            d["status"] = Gntst.okay
        except GrantFailure as e:
            d["status"] = e.status
            mon.dom.grants.stats["refused"] += 1
        mon._write(addr, layout.pack(d))
    return 0


def _domain(mon, domid: int):
    d = mon.hv.lookup(mon.dom if domid == DomId.SELF else domid)
    if d is None or d.grants is None:
        raise GrantFailure(Gntst.bad_domain)
    return d


def _allowed(mon, domid: int, perm: str):
    """The domain ``domid`` names, if the caller may ``perm`` its grant table."""
    dom = _domain(mon, domid)
    try:
        mon.hv.xsm.check(mon.caller, dom, "grant", perm)
    except Denied:
        raise GrantFailure(Gntst.permission_denied) from None
    return dom


def _map(mon, d: dict) -> None:
    granter = _domain(mon, d["dom"])
    d["handle"], d["dev_bus_addr"] = mon.dom.grants.map(granter, d["ref"], d["host_addr"], d["flags"])


def _unmap(mon, d: dict) -> None:
    mon.dom.grants.unmap(d["handle"], d["host_addr"])


def _copy_side(mon, p: dict, gref: bool, write: bool) -> int:
    """The machine address of one side of a copy."""
    me = mon.dom
    if gref:
        granter = _domain(mon, p["domid"])
        try:
            mon.hv.xsm.check(mon.caller, granter, "grant", "copy")
        except Denied:
            raise GrantFailure(Gntst.permission_denied) from None
        mfn = granter.grants.granted_frame(me, p["u"]["ref"], write)
    else:
        if p["domid"] not in (DomId.SELF, me.domid):
            raise GrantFailure(Gntst.permission_denied)
        gpfn = p["u"]["gmfn"]
        mfn = me.p2m.get(gpfn)
        if mfn is None:
            raise GrantFailure(Gntst.bad_page)
        if write and mfn in me.monitor.gm.readonly:
            raise GrantFailure(Gntst.permission_denied)
    return mfn << 12


def _copy(mon, d: dict) -> None:
    n = d["len"]
    src, dst = d["source"], d["dest"]
    if src["offset"] + n > 0x1000 or dst["offset"] + n > 0x1000:
        raise GrantFailure(Gntst.bad_copy_arg)
    s = _copy_side(mon, src, bool(d["flags"] & Gntcopy.source_gref), False) + src["offset"]
    t = _copy_side(mon, dst, bool(d["flags"] & Gntcopy.dest_gref), True) + dst["offset"]
    hv = mon.hv
    hv.mem.write(t, hv.mem.read(s, n))
    hv.guest_memory_written(t, n)
    mon.dom.grants.stats["copies"] += 1


def _setup(mon, d: dict) -> None:
    dom = _allowed(mon, d["dom"], "setup")
    n = d["nr_frames"]
    dom.grants.grow(n)
    if n:
        mon._write(d["frame_list"], struct.pack(f"<{n}I", *dom.grants.frames[:n]))


def _query(mon, d: dict) -> None:
    dom = _allowed(mon, d["dom"], "query")
    d["nr_frames"], d["max_nr_frames"] = len(dom.grants.frames), MAX_FRAMES
