"""The hypercalls of the toolstack, as functions (Xen's libxc, ``tools/libs/ctrl``).

Every function packs its arguments with the ABI's structure descriptions into
the toolstack's own memory, issues the hypercall through the interface and
unpacks what came back; a refusal is an :class:`XcError` carrying Xen's
errno.  Foreign and granted frames are mapped into holes of the toolstack's
address space and read or written there.
"""

from __future__ import annotations

import struct

from ringvisor.abi import (DOMCTL, DOMCTL_GETDOMAININFO, DOMCTL_INTERFACE_VERSION, EVTCHN_ALLOC_UNBOUND,
                           EVTCHN_BIND_INTERDOMAIN, EVTCHN_CLOSE, EVTCHN_SEND, FLASK_INTERFACE_VERSION,
                           FLASK_OP, GNTTAB_COPY, GNTTAB_MAP_GRANT_REF, RV_BLKBACK_OP, RvBlkbackOp, GNTTAB_UNMAP_GRANT_REF, SYSCTL,
                           SYSCTL_INTERFACE_VERSION, VCPU_GUEST_CONTEXT, XEN_ADD_TO_PHYSMAP,
                           XEN_ADD_TO_PHYSMAP_BATCHED, XEN_MEMORY_RESERVATION,
                           XEN_REMOVE_FROM_PHYSMAP, DomId, Domctl, Errno, EvtchnOp, FlaskOp,
                           Gntmap, GnttabOp, Gntst, Hypercall, MapSpace, MemOp, SchedCmd,
                           Scheduler, Sysctl, VcpuAffinity)

PAGE = 0x1000


class XcError(Exception):
    def __init__(self, errno: int, what: str) -> None:
        try:
            name = Errno(errno).name
        except ValueError:
            name = f"errno {errno}"
        super().__init__(f"{what}: {name}")
        self.errno = errno


class Xc:
    def __init__(self, iface) -> None:
        self.iface = iface
        va, gpfn, pages, buffers = iface.window
        self.va0, self.gpfn0 = va, gpfn
        self.buf_end = va + buffers * PAGE
        self.holes = set(range(buffers, pages))     # window pages free for mappings
        self._top = va

    # -- scratch memory and the call -----------------------------------------------------
    def _scratch(self, data: bytes | int) -> int:
        """Room in the toolstack's buffers for ``data`` (or that many zero bytes)."""
        n = data if isinstance(data, int) else len(data)
        if self._top + n > self.buf_end:
            raise XcError(Errno.ENOMEM, "toolstack buffer")
        va = self._top
        self._top = (self._top + n + 7) & ~7
        if not isinstance(data, int):
            self.iface.write(va, data)
        return va

    def hypercall(self, nr: int, *args: int, what: str = "") -> int:
        try:
            rc = self.iface.call(nr, *args)
        finally:
            self._top = self.va0
        if rc < 0:
            raise XcError(-rc, what or Hypercall(nr).name)
        return rc

    def _struct_call(self, nr: int, layout, value: dict, what: str, pre=(), post=()) -> dict:
        """Hypercall ``nr`` with one structure (between ``pre`` and ``post`` arguments);
        the structure as the hypervisor left it."""
        va = self._scratch(layout.pack(value))
        try:
            rc = self.iface.call(nr, *pre, va, *post)
            out = layout.unpack(self.iface.read(va, layout.size))
        finally:
            self._top = self.va0
        if rc < 0:
            raise XcError(-rc, what)
        out["_rc"] = rc
        return out

    # -- domctl ------------------------------------------------------------------------
    def domctl(self, cmd: Domctl, domid: int, **u) -> dict:
        op = {"cmd": cmd, "interface_version": DOMCTL_INTERFACE_VERSION, "domain": domid, "u": u}
        return self._struct_call(Hypercall.domctl, DOMCTL, op, f"domctl {cmd.name} d{domid}")

    def create(self, ssidref: int = 0, handle: bytes = bytes(16), flags: int = 0) -> int:
        out = self.domctl(Domctl.createdomain, 0,
                          createdomain={"ssidref": ssidref, "handle": list(handle), "flags": flags})
        return out["domain"]

    def destroy(self, domid: int) -> None:
        self.domctl(Domctl.destroydomain, domid)

    def destroy_quietly(self, domid: int) -> None:
        """Destroy a domain being built that failed (gone already: nothing to do)."""
        try:
            self.destroy(domid)
        except XcError:
            pass

    def pause(self, domid: int) -> None:
        self.domctl(Domctl.pausedomain, domid)

    def unpause(self, domid: int) -> None:
        self.domctl(Domctl.unpausedomain, domid)

    def max_mem(self, domid: int, kb: int) -> None:
        self.domctl(Domctl.max_mem, domid, max_mem={"max_memkb": kb})

    def max_vcpus(self, domid: int, n: int) -> None:
        self.domctl(Domctl.max_vcpus, domid, max_vcpus={"max": n})

    def domain_info(self, domid: int) -> dict:
        """getdomaininfo of the first domain with an id >= ``domid``."""
        return self.domctl(Domctl.getdomaininfo, domid)["u"]["getdomaininfo"]

    def vcpu_info(self, domid: int, vcpu: int = 0) -> dict:
        return self.domctl(Domctl.getvcpuinfo, domid, getvcpuinfo={"vcpu": vcpu})["u"]["getvcpuinfo"]

    def set_vcpu_context(self, domid: int, ctx: dict, vcpu: int = 0) -> None:
        va = self._scratch(VCPU_GUEST_CONTEXT.pack(ctx))
        op = {"cmd": Domctl.setvcpucontext, "interface_version": DOMCTL_INTERFACE_VERSION,
              "domain": domid, "u": {"vcpucontext": {"vcpu": vcpu, "ctxt": va}}}
        dva = self._scratch(DOMCTL.pack(op))
        self.hypercall(Hypercall.domctl, dva, what=f"setvcpucontext d{domid}")

    def get_vcpu_context(self, domid: int, vcpu: int = 0) -> dict:
        va = self._scratch(VCPU_GUEST_CONTEXT.size)
        op = {"cmd": Domctl.getvcpucontext, "interface_version": DOMCTL_INTERFACE_VERSION,
              "domain": domid, "u": {"vcpucontext": {"vcpu": vcpu, "ctxt": va}}}
        dva = self._scratch(DOMCTL.pack(op))
        try:
            rc = self.iface.call(Hypercall.domctl, dva)
            out = VCPU_GUEST_CONTEXT.unpack(self.iface.read(va, VCPU_GUEST_CONTEXT.size))
        finally:
            self._top = self.va0
        if rc < 0:
            raise XcError(-rc, f"getvcpucontext d{domid}")
        return out

    def get_context(self, domid: int) -> bytes:
        """A paused domain's context records (gethvmcontext: the size, then the records)."""
        size = self.domctl(Domctl.gethvmcontext, domid,
                           hvmcontext={"size": 0, "buffer": 0})["u"]["hvmcontext"]["size"]
        va = self._scratch(size)
        op = {"cmd": Domctl.gethvmcontext, "interface_version": DOMCTL_INTERFACE_VERSION,
              "domain": domid, "u": {"hvmcontext": {"size": size, "buffer": va}}}
        dva = self._scratch(DOMCTL.pack(op))
        try:
            rc = self.iface.call(Hypercall.domctl, dva)
            out = self.iface.read(va, size)
        finally:
            self._top = self.va0
        if rc < 0:
            raise XcError(-rc, f"gethvmcontext d{domid}")
        return out

    def set_context(self, domid: int, blob: bytes) -> None:
        va = self._scratch(blob)
        op = {"cmd": Domctl.sethvmcontext, "interface_version": DOMCTL_INTERFACE_VERSION,
              "domain": domid, "u": {"hvmcontext": {"size": len(blob), "buffer": va}}}
        dva = self._scratch(DOMCTL.pack(op))
        self.hypercall(Hypercall.domctl, dva, what=f"sethvmcontext d{domid}")

    def sched_credit(self, domid: int, weight: int | None = None, cap: int | None = None) -> dict:
        """Get (and with ``weight``/``cap``, first set) the credit scheduler's parameters."""
        if weight is not None or cap is not None:
            cur = self.sched_credit(domid)
            self.domctl(Domctl.scheduler_op, domid, scheduler_op={
                "sched_id": Scheduler.credit, "cmd": SchedCmd.putinfo,
                "u": {"credit": {"weight": cur["weight"] if weight is None else weight,
                                 "cap": cur["cap"] if cap is None else cap}}})
        out = self.domctl(Domctl.scheduler_op, domid, scheduler_op={
            "sched_id": Scheduler.credit, "cmd": SchedCmd.getinfo})
        return out["u"]["scheduler_op"]["u"]["credit"]

    # -- sysctl ------------------------------------------------------------------------
    def sysctl(self, cmd: Sysctl, **u) -> dict:
        op = {"cmd": cmd, "interface_version": SYSCTL_INTERFACE_VERSION, "u": u}
        return self._struct_call(Hypercall.sysctl, SYSCTL, op, f"sysctl {cmd.name}")["u"]

    def vcpu_affinity(self, domid: int, vcpu: int, cpus=None, nr_bits: int = 256) -> frozenset:
        """A vCPU's hard affinity (first set to ``cpus``, if given): the pCPUs it may run
        on."""
        nbytes = (nr_bits + 7) // 8
        bits = sum(1 << c for c in cpus) if cpus is not None else 0
        va = self._scratch(bits.to_bytes(nbytes, "little"))
        cmd = Domctl.setvcpuaffinity if cpus is not None else Domctl.getvcpuaffinity
        op = {"cmd": cmd, "interface_version": DOMCTL_INTERFACE_VERSION, "domain": domid,
              "u": {"vcpuaffinity": {"vcpu": vcpu, "flags": VcpuAffinity.hard,
                                     "cpumap_hard": {"bitmap": va, "nr_bits": nr_bits},
                                     "cpumap_soft": {"bitmap": 0, "nr_bits": 0}}}}
        dva = self._scratch(DOMCTL.pack(op))
        try:
            rc = self.iface.call(Hypercall.domctl, dva)
            out = int.from_bytes(self.iface.read(va, nbytes), "little")
        finally:
            self._top = self.va0
        if rc < 0:
            raise XcError(-rc, f"{cmd.name} d{domid} vCPU {vcpu}")
        return frozenset(c for c in range(nr_bits) if out >> c & 1)

    def physinfo(self) -> dict:
        return self.sysctl(Sysctl.physinfo)["physinfo"]

    def list_domains(self, first: int = 0, max_domains: int = 256) -> list[dict]:
        size = DOMCTL_GETDOMAININFO.size
        buf = self._scratch(size * max_domains)
        op = {"cmd": Sysctl.getdomaininfolist, "interface_version": SYSCTL_INTERFACE_VERSION,
              "u": {"getdomaininfolist": {"first_domain": first, "max_domains": max_domains,
                                          "buffer": buf}}}
        va = self._scratch(SYSCTL.pack(op))
        try:
            rc = self.iface.call(Hypercall.sysctl, va)
            if rc < 0:
                raise XcError(-rc, "sysctl getdomaininfolist")
            n = SYSCTL.unpack(self.iface.read(va, SYSCTL.size))["u"]["getdomaininfolist"]["num_domains"]
            data = self.iface.read(buf, size * n) if n else b""
        finally:
            self._top = self.va0
        return [DOMCTL_GETDOMAININFO.unpack(data, i * size) for i in range(n)]

    def read_console(self, index: int = 0, incremental: bool = True, count: int = 16384,
                     clear: bool = False) -> tuple[bytes, int]:
        buf = self._scratch(count)
        op = {"cmd": Sysctl.readconsole, "interface_version": SYSCTL_INTERFACE_VERSION,
              "u": {"readconsole": {"clear": int(clear), "incremental": int(incremental),
                                    "index": index, "buffer": buf, "count": count}}}
        va = self._scratch(SYSCTL.pack(op))
        try:
            rc = self.iface.call(Hypercall.sysctl, va)
            if rc < 0:
                raise XcError(-rc, "sysctl readconsole")
            rcd = SYSCTL.unpack(self.iface.read(va, SYSCTL.size))["u"]["readconsole"]
            data = self.iface.read(buf, rcd["count"]) if rcd["count"] else b""
        finally:
            self._top = self.va0
        return data, rcd["index"]

    # -- memory ------------------------------------------------------------------------
    def _reservation(self, cmd: MemOp, domid: int, gpfns: list[int]) -> int:
        done = 0
        for i in range(0, len(gpfns), 512):
            part = gpfns[i:i + 512]
            lst = self._scratch(struct.pack(f"<{len(part)}I", *part))
            r = self._scratch(XEN_MEMORY_RESERVATION.pack(
                extent_start=lst, nr_extents=len(part), extent_order=0, domid=domid))
            n = self.hypercall(Hypercall.memory_op, cmd, r, what=f"memory_op {cmd.name} d{domid}")
            done += n
            if n < len(part):
                break
        return done

    def populate_physmap(self, domid: int, gpfns: list[int]) -> int:
        return self._reservation(MemOp.populate_physmap, domid, gpfns)

    def decrease_reservation(self, domid: int, gpfns: list[int]) -> int:
        return self._reservation(MemOp.decrease_reservation, domid, gpfns)

    def current_reservation(self, domid: int) -> int:
        va = self._scratch(struct.pack("<H", domid))
        return self.hypercall(Hypercall.memory_op, MemOp.current_reservation, va)

    def add_to_physmap(self, domid: int, space: MapSpace, idx: int, gpfn: int) -> None:
        va = self._scratch(XEN_ADD_TO_PHYSMAP.pack(domid=domid, space=space, idx=idx, gpfn=gpfn))
        self.hypercall(Hypercall.memory_op, MemOp.add_to_physmap, va,
                       what=f"add_to_physmap d{domid} {space.name}")

    def remove_from_physmap(self, domid: int, gpfn: int) -> None:
        va = self._scratch(XEN_REMOVE_FROM_PHYSMAP.pack(domid=domid, gpfn=gpfn))
        self.hypercall(Hypercall.memory_op, MemOp.remove_from_physmap, va)

    def _holes(self, n: int) -> list[int]:
        """``n`` consecutive free pages of the window (their indexes)."""
        for start in sorted(self.holes):
            run = list(range(start, start + n))
            if all(i in self.holes for i in run):
                self.holes.difference_update(run)
                return run
        raise XcError(Errno.ENOMEM, "toolstack address space")

    def map_foreign(self, domid: int, gpfns: list[int]) -> int:
        """Map frames of domain ``domid`` (privileged); the address of the first."""
        idx = self._holes(len(gpfns))
        lst = self._scratch(struct.pack(f"<{len(gpfns)}I", *gpfns))
        dst = self._scratch(struct.pack(f"<{len(idx)}I", *(self.gpfn0 + i for i in idx)))
        errs = self._scratch(4 * len(gpfns))
        batch = self._scratch(XEN_ADD_TO_PHYSMAP_BATCHED.pack(
            domid=DomId.SELF, space=MapSpace.gmfn_foreign, size=len(gpfns), foreign_domid=domid,
            idxs=lst, gpfns=dst, errs=errs))
        try:
            rc = self.iface.call(Hypercall.memory_op, MemOp.add_to_physmap_batched, batch)
            results = struct.unpack(f"<{len(gpfns)}i", self.iface.read(errs, 4 * len(gpfns)))
        finally:
            self._top = self.va0
        bad = next((e for e in results if e < 0), 0) if rc >= 0 else rc
        if bad < 0:
            self.unmap([self.va0 + i * PAGE for i, e in zip(idx, results) if e == 0])
            self.holes.update(idx)
            raise XcError(-bad, f"map foreign frames of d{domid}")
        return self.va0 + idx[0] * PAGE

    def unmap(self, vas: list[int]) -> None:
        """Take mapped foreign frames out of the toolstack's address space."""
        for va in vas:
            i = (va - self.va0) // PAGE
            self.remove_from_physmap(DomId.SELF, self.gpfn0 + i)
            self.holes.add(i)

    # -- event channels ------------------------------------------------------------------
    def evtchn_alloc_unbound(self, dom: int, remote_dom: int) -> int:
        out = self._struct_call(Hypercall.event_channel_op, EVTCHN_ALLOC_UNBOUND,
                                {"dom": dom, "remote_dom": remote_dom},
                                f"evtchn alloc_unbound d{dom} for d{remote_dom}",
                                pre=(EvtchnOp.alloc_unbound,))
        return out["port"]

    def evtchn_bind_interdomain(self, remote_dom: int, remote_port: int) -> int:
        out = self._struct_call(Hypercall.event_channel_op, EVTCHN_BIND_INTERDOMAIN,
                                {"remote_dom": remote_dom, "remote_port": remote_port},
                                f"evtchn bind d{remote_dom}:{remote_port}",
                                pre=(EvtchnOp.bind_interdomain,))
        return out["local_port"]

    def evtchn_send(self, port: int) -> None:
        self._struct_call(Hypercall.event_channel_op, EVTCHN_SEND, {"port": port},
                          f"evtchn send {port}", pre=(EvtchnOp.send,))

    def evtchn_close(self, port: int) -> None:
        self._struct_call(Hypercall.event_channel_op, EVTCHN_CLOSE, {"port": port},
                          f"evtchn close {port}", pre=(EvtchnOp.close,))

    # -- grants ------------------------------------------------------------------------
    def grant_map(self, granter: int, ref: int, readonly: bool = False) -> tuple[int, int]:
        """Map ``granter``'s grant ``ref``: (handle, address in the toolstack)."""
        (i,) = self._holes(1)
        flags = Gntmap.host_map | (Gntmap.readonly if readonly else 0)
        try:
            out = self._struct_call(Hypercall.grant_table_op, GNTTAB_MAP_GRANT_REF,
                                    {"host_addr": (self.gpfn0 + i) << 12, "flags": flags,
                                     "ref": ref, "dom": granter},
                                    f"grant map d{granter}:{ref}", pre=(GnttabOp.map_grant_ref,),
                                    post=(1,))
        except XcError:
            self.holes.add(i)
            raise
        if out["status"] != Gntst.okay:
            self.holes.add(i)
            raise XcError(Errno.EACCES if out["status"] == Gntst.permission_denied else Errno.EINVAL,
                          f"grant map d{granter}:{ref} ({Gntst(out['status']).name})")
        return out["handle"], self.va0 + i * PAGE

    def grant_unmap(self, handle: int, va: int) -> None:
        i = (va - self.va0) // PAGE
        out = self._struct_call(Hypercall.grant_table_op, GNTTAB_UNMAP_GRANT_REF,
                                {"host_addr": (self.gpfn0 + i) << 12, "handle": handle},
                                "grant unmap", pre=(GnttabOp.unmap_grant_ref,), post=(1,))
        self.holes.add(i)
        if out["status"] != Gntst.okay:
            raise XcError(Errno.EINVAL, f"grant unmap ({Gntst(out['status']).name})")

    def grant_copy(self, ops: list[dict]) -> list[int]:
        """``GNTTABOP_copy`` of a batch; each operation's ``GNTST_*`` status."""
        if not ops:
            return []
        va = self._scratch(b"".join(GNTTAB_COPY.pack(op) for op in ops))
        try:
            rc = self.iface.call(Hypercall.grant_table_op, GnttabOp.copy, va, len(ops))
            raw = self.iface.read(va, GNTTAB_COPY.size * len(ops))
        finally:
            self._top = self.va0
        if rc < 0:
            raise XcError(-rc, "grant copy")
        return [GNTTAB_COPY.unpack(raw, i * GNTTAB_COPY.size)["status"] for i in range(len(ops))]

    def local_frame(self, va: int) -> int:
        """The pseudo-physical frame of Domain 0 behind an address of the toolstack."""
        return self.gpfn0 + ((va - self.va0) >> 12)

    # -- the in-hypervisor block back-end (ringvisor's) ----------------------------------
    def blkback_attach(self, domid: int, ring_ref: int, port: int, path: str,
                       readonly: bool) -> tuple[int, int]:
        """Hand a negotiated blkif ring to the hypervisor's back-end: (handle, sectors)."""
        data = path.encode()
        buf = self._scratch(data)
        out = self._struct_call(Hypercall.rv_blkback_op, RV_BLKBACK_OP,
                                {"domid": domid, "readonly": int(readonly), "ring_ref": ring_ref,
                                 "port": port, "path": buf, "path_len": len(data)},
                                f"blkback attach d{domid}", pre=(RvBlkbackOp.attach,))
        return out["handle"], out["sectors"]

    def ata_attach(self, domid: int, path: str, readonly: bool) -> int:
        """Give a paused bt domain the hypervisor's emulated ATA disk over ``path`` (the
        hosted structure): its size in sectors."""
        data = path.encode()
        out = self._struct_call(Hypercall.rv_blkback_op, RV_BLKBACK_OP,
                                {"domid": domid, "readonly": int(readonly),
                                 "path": self._scratch(data), "path_len": len(data)},
                                f"ata attach d{domid}", pre=(RvBlkbackOp.attach_ata,))
        return out["sectors"]

    def blkback_detach(self, handle: int) -> None:
        self._struct_call(Hypercall.rv_blkback_op, RV_BLKBACK_OP, {"handle": handle},
                          "blkback detach", pre=(RvBlkbackOp.detach,))

    # -- the security module --------------------------------------------------------------
    def flask_load(self, text: str) -> None:
        data = text.encode()
        buf = self._scratch(data)
        op = {"cmd": FlaskOp.load, "interface_version": FLASK_INTERFACE_VERSION,
              "u": {"load": {"buffer": buf, "size": len(data)}}}
        va = self._scratch(FLASK_OP.pack(op))
        self.hypercall(Hypercall.xsm_op, va, what="xsm load policy")

    def flask_context_to_sid(self, context: str) -> int:
        data = context.encode()
        buf = self._scratch(data)
        op = {"cmd": FlaskOp.context_to_sid, "interface_version": FLASK_INTERFACE_VERSION,
              "u": {"sid_context": {"size": len(data), "context": buf}}}
        va = self._scratch(FLASK_OP.pack(op))
        try:
            rc = self.iface.call(Hypercall.xsm_op, va)
            out = FLASK_OP.unpack(self.iface.read(va, FLASK_OP.size))
        finally:
            self._top = self.va0
        if rc < 0:
            raise XcError(-rc, f"security context {context!r}")
        return out["u"]["sid_context"]["sid"]
