"""A domain's pseudo-physical memory (its P2M) and ``memory_op``.

A domain's memory is a set of machine frames from the hypervisor's pool,
placed at pseudo-physical frame numbers by its P2M.  The guest's page tables
hold pseudo-physical numbers; the shadow page tables the real MMU walks hold
machine numbers (the shadow code translates through the P2M).  Besides its
own frames, a physmap may hold frames of another domain: granted to it
(``GNTTABOP_map_grant_ref``) or, for a privileged domain, mapped foreign
(``XENMAPSPACE_gmfn_foreign``: how Domain 0's domain builder loads a kernel
into a new domain).  Those are *foreign* entries: never counted as the
domain's memory, never freed with it.

``memory_op`` (Xen's ``common/memory.c``): ``populate_physmap`` (and
``increase_reservation``, the same for a translated guest) takes frames from
the pool up to ``max_pages``; ``decrease_reservation`` gives them back (a
balloon inflating); ``add_to_physmap``/``remove_from_physmap`` place and
remove single frames; the reservation queries report the figures.  Every
operation on another domain's memory is checked by the security module
(class ``mmu``).
"""

from __future__ import annotations

import struct

from ringvisor.abi import (XEN_ADD_TO_PHYSMAP, XEN_ADD_TO_PHYSMAP_BATCHED, XEN_MEMORY_RESERVATION,
                           XEN_REMOVE_FROM_PHYSMAP, DomId, Errno, MapSpace, MemOp)

from ringvisor.vmm.errors import HypercallError

from .frames import OutOfMemory

MAX_GPFN = 1 << 20            # pseudo-physical space: 4 GiB of 4 KiB frames
MAX_EXTENTS = 1024            # per call (then the caller continues, as Xen's preemption)


# -- the physmap ------------------------------------------------------------------------
def set_entry(hv, dom, gpfn: int, mfn: int, owner: int | None = None) -> None:
    """Place machine frame ``mfn`` at ``gpfn`` in ``dom``'s physmap (``owner``: whose
    frame it is, when not ``dom``'s own)."""
    dom.p2m[gpfn] = mfn
    dom.rev[mfn] = gpfn
    if owner is not None and owner != dom.domid:
        dom.foreign[gpfn] = owner
    else:
        hv.frames.m2p[mfn] = gpfn


def clear_entry(hv, dom, gpfn: int) -> int | None:
    """Remove ``gpfn`` from ``dom``'s physmap; the machine frame it held (freed if it was
    ``dom``'s own).  Its shadows forget the old frame."""
    mfn = dom.p2m.pop(gpfn, None)
    if mfn is None:
        return None
    if dom.rev.get(mfn) == gpfn:
        del dom.rev[mfn]
    if dom.foreign.pop(gpfn, None) is None:
        hv.frames.release(mfn)
    if dom.monitor is not None:
        dom.monitor.gm.readonly.discard(mfn)
        hv.forget_mappings(dom)
    return mfn


def removable(dom, gpfn: int) -> None:
    """-EBUSY if the hypervisor uses that frame for the domain (its GDT, its rings)."""
    if dom.monitor is not None and gpfn in dom.monitor.pinned_gfns():
        raise HypercallError(Errno.EBUSY)


def populate(hv, dom, gpfns: list[int]) -> int:
    """Back each free ``gpfn`` with a new frame, up to ``max_pages``; how many were."""
    done = 0
    for gpfn in gpfns:
        if not 0 <= gpfn < MAX_GPFN or gpfn in dom.p2m:
            break
        if dom.tot_pages >= dom.max_pages:
            break
        try:
            (mfn,) = hv.frames.alloc(dom.domid)
        except OutOfMemory:
            break
        set_entry(hv, dom, gpfn, mfn)
        done += 1
    return done


# -- memory_op ----------------------------------------------------------------------------
def _target(mon, domid: int, perm: str):
    hv, caller = mon.hv, mon.caller
    dom = hv.lookup(caller if domid == DomId.SELF else domid)
    if dom is None:
        raise HypercallError(Errno.ESRCH)
    hv.check(caller, dom, "mmu", perm)
    return dom


def memory_op(mon, cmd: int, arg: int) -> int:
    cmd &= 0xF_FFFF                        # the upper bits carry the continuation start
    if cmd in (MemOp.increase_reservation, MemOp.populate_physmap, MemOp.decrease_reservation):
        return _reservation(mon, cmd, arg)
    if cmd in (MemOp.current_reservation, MemOp.maximum_reservation, MemOp.maximum_gpfn):
        (domid,) = struct.unpack("<H", mon._read(arg, 2))
        dom = _target(mon, domid, "stat")
        if cmd == MemOp.current_reservation:
            return dom.tot_pages
        if cmd == MemOp.maximum_reservation:
            return dom.max_pages
        return max(dom.p2m, default=0)
    if cmd == MemOp.maximum_ram_page:
        return mon.hv.frames.end - 1
    if cmd == MemOp.add_to_physmap:
        a = XEN_ADD_TO_PHYSMAP.unpack(mon._read(arg, XEN_ADD_TO_PHYSMAP.size))
        add_to_physmap(mon, a["domid"], a["space"], a["idx"], a["gpfn"])
        return 0
    if cmd == MemOp.add_to_physmap_batched:
        return _add_batched(mon, arg)
    if cmd == MemOp.remove_from_physmap:
        r = XEN_REMOVE_FROM_PHYSMAP.unpack(mon._read(arg, XEN_REMOVE_FROM_PHYSMAP.size))
        dom = _target(mon, r["domid"], "physmap")
        if r["gpfn"] not in dom.p2m:
            raise HypercallError(Errno.ENOENT)
        removable(dom, r["gpfn"])
        clear_entry(mon.hv, dom, r["gpfn"])
        return 0
    raise HypercallError(Errno.ENOSYS)


def _reservation(mon, cmd: int, arg: int) -> int:
    r = XEN_MEMORY_RESERVATION.unpack(mon._read(arg, XEN_MEMORY_RESERVATION.size))
    if r["extent_order"] != 0:
        raise HypercallError(Errno.EINVAL)        # single frames only (no superpages here)
    n = r["nr_extents"]
    if n > MAX_EXTENTS:
        raise HypercallError(Errno.EINVAL)
    dom = _target(mon, r["domid"], "adjust")
    gpfns = list(struct.unpack(f"<{n}I", mon._read(r["extent_start"], 4 * n))) if n else []
    hv = mon.hv
    if cmd == MemOp.decrease_reservation:
        done = 0
        for gpfn in gpfns:
            if gpfn not in dom.p2m or gpfn in dom.foreign:
                break                        # not its own frame: nothing to give back
            if dom.monitor is not None and gpfn in dom.monitor.pinned_gfns():
                break
            clear_entry(hv, dom, gpfn)
            done += 1
        return done
    return populate(hv, dom, gpfns)


def add_to_physmap(mon, domid: int, space: int, idx: int, gpfn: int, foreign: int = DomId.INVALID):
    hv = mon.hv
    dom = _target(mon, domid, "physmap")
    if not 0 <= gpfn < MAX_GPFN:
        raise HypercallError(Errno.EINVAL)
    if space == MapSpace.grant_table:
        if dom.grants is None or not 0 <= idx < len(dom.grants.frames):
            raise HypercallError(Errno.EINVAL)
        mfn, owner = dom.grants.frames[idx], DomId.XEN
    elif space == MapSpace.shared_info:
        if idx != 0:
            raise HypercallError(Errno.EINVAL)
        mfn, owner = dom.monitor.si_phys >> 12, DomId.XEN
    elif space == MapSpace.gmfn_foreign:
        src = hv.lookup(foreign)
        if src is None or src is dom:
            raise HypercallError(Errno.ESRCH)
        hv.check(mon.caller, src, "mmu", "map_write")
        mfn = src.p2m.get(idx)
        grant_frame = mfn is not None and src.grants is not None and mfn in src.grants.frames
        if mfn is None or (idx in src.foreign and not grant_frame):
            raise HypercallError(Errno.EINVAL)     # only frames it owns (no transitive mapping)
        owner = DomId.XEN if grant_frame else src.domid
    elif space == MapSpace.gmfn:
        mfn = dom.p2m.get(idx)
        if mfn is None or idx in dom.foreign:
            raise HypercallError(Errno.EINVAL)
        removable(dom, idx)
        dom.p2m.pop(idx)                     # a move within its own physmap
        dom.rev.pop(mfn, None)
        owner = None
    else:
        raise HypercallError(Errno.EINVAL)
    if gpfn in dom.p2m:
        removable(dom, gpfn)
        clear_entry(hv, dom, gpfn)           # what was there goes (Xen frees it)
    set_entry(hv, dom, gpfn, mfn, owner)
    hv.forget_mappings(dom)


def _add_batched(mon, arg: int) -> int:
    a = XEN_ADD_TO_PHYSMAP_BATCHED.unpack(mon._read(arg, XEN_ADD_TO_PHYSMAP_BATCHED.size))
    n = a["size"]
    if n > MAX_EXTENTS:
        raise HypercallError(Errno.EINVAL)
    idxs = struct.unpack(f"<{n}I", mon._read(a["idxs"], 4 * n)) if n else ()
    gpfns = struct.unpack(f"<{n}I", mon._read(a["gpfns"], 4 * n)) if n else ()
    errs = []
    for idx, gpfn in zip(idxs, gpfns):
        try:
            add_to_physmap(mon, a["domid"], a["space"], idx, gpfn, a["foreign_domid"])
            errs.append(0)
        except HypercallError as e:
            errs.append(-e.errno)
    if n:
        mon._write(a["errs"], struct.pack(f"<{n}i", *errs))
    return 0
