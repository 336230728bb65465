"""domctl, sysctl and xsm_op: the management hypercalls (Xen's ``common/domctl.c``,
``common/sysctl.c``, ``xsm/flask/flask_op.c``).

Domain 0's toolstack builds, starts, inspects and destroys domains with these;
every one is checked by the security module before anything happens (the
privilege is in that check: the same call from a DomU is refused with
``-EACCES`` and logged), and the interface version must be Xen's.
"""

from __future__ import annotations

from ringvisor.abi import (CONTEXT_MAX, DOMCTL, DOMCTL_GETDOMAININFO, DOMCTL_INTERFACE_VERSION,
                           FLASK_INTERFACE_VERSION, FLASK_OP, SYSCTL, SYSCTL_INTERFACE_VERSION,
                           VCPU_GUEST_CONTEXT, CreateFlag, DomId, DomInfoFlag, Domctl, Errno,
                           FlaskOp, SchedCmd, Scheduler, Sysctl, VcpuAffinity)
from ringvisor.vmm.errors import HypercallError, fail

from . import domsave, vcpus, xsm
from .domain import State

MAX_POLICY = 64 * 1024
MAX_CONTEXT = 192 * 1024       # a domain's context records (they fit the toolstack's buffers)
MAX_DOMID = DomId.FIRST_RESERVED - 1


def domaininfo(hv, d) -> dict:
    """getdomaininfo's fields for domain ``d``."""
    flags = 0
    if d.state is State.DYING:
        flags |= DomInfoFlag.dying
    if d.state in (State.SHUTDOWN, State.CRASHED):
        flags |= DomInfoFlag.shutdown
        flags |= (d.shutdown_reason or 0) << DomInfoFlag.shutdownshift
    if d.paused and not d.dead:
        flags |= DomInfoFlag.paused
    if d.blocked:
        flags |= DomInfoFlag.blocked      # (every online vCPU waits for an event)
    if any(not v.blocked or d.paused for v in hv.on_cpus(d)):
        # A blocked vCPU waits on the CPU it last had (Xen would show it off the CPU);
        # once its domain is paused it is "running" until that CPU has switched it out,
        # as Xen's domain_pause returns only then (vcpu_sleep_sync): a toolstack that
        # waits for the flag to clear before it reads the context finds it off the CPU.
        flags |= DomInfoFlag.running
    if d.kind == "bt":
        flags |= DomInfoFlag.hvm_guest
    return {"domain": d.domid, "flags": flags, "tot_pages": d.tot_pages,
            "max_pages": d.max_pages, "shared_info_frame": d.monitor.si_phys >> 12 if d.monitor else 0,
            "cpu_time": d.cpu_time_ns, "nr_online_vcpus": len(d.online_vcpus),
            "max_vcpu_id": len(d.vcpus) - 1, "ssidref": hv.sid_of(d.ssid), "handle": list(d.uuid), "cpupool": 0}


def _vcpu_of(d, vcpu: int) -> int:
    """A vCPU ``d`` has (Xen's domctl: -EINVAL past ``max_vcpus``)."""
    if not 0 <= vcpu < len(d.vcpus):
        fail(Errno.EINVAL)
    return vcpu


def _target(mon, domid: int, perm: str):
    d = mon.hv.lookup(domid)
    if d is None:
        fail(Errno.ESRCH)
    mon.hv.check(mon.caller, d, "domain", perm)
    return d


def domctl(mon, ptr: int) -> int:
    hv = mon.hv
    op = DOMCTL.unpack(mon._read(ptr, DOMCTL.size))
    if op["interface_version"] != DOMCTL_INTERFACE_VERSION:
        fail(Errno.EACCES)
    cmd, domid, u = op["cmd"], op["domain"], op["u"]
    out = None                                        # (union member, its new value)
    if cmd == Domctl.createdomain:
        c = u["createdomain"]
        d = hv.create_domain(mon.caller, domid, ssid=hv.type_of_sid(c["ssidref"]),
                             uuid=bytes(c["handle"]),
                             kind="bt" if c["flags"] & CreateFlag.hvm_guest else "pv")
        op["domain"] = d.domid
        mon._write(ptr, DOMCTL.pack(op))
        return 0
    if cmd == Domctl.getdomaininfo:
        for d in sorted(hv.domains.values(), key=lambda d: d.domid):
            if d.domid >= domid:
                hv.check(mon.caller, d, "domain", "getdomaininfo")
                op["domain"] = d.domid
                out = ("getdomaininfo", domaininfo(hv, d))
                break
        else:
            fail(Errno.ESRCH)
    elif cmd == Domctl.destroydomain:
        hv.destroy(_target(mon, domid, "destroy"))
    elif cmd == Domctl.pausedomain:
        d = _target(mon, domid, "pause")
        if d is mon.dom or d.dead:
            fail(Errno.EINVAL)
        hv.pause(d)
    elif cmd == Domctl.unpausedomain:
        d = _target(mon, domid, "unpause")
        if not d.paused or d.dead:
            fail(Errno.EINVAL)
        hv.unpause(d)
    elif cmd == Domctl.max_mem:
        d = _target(mon, domid, "setdomainmaxmem")
        kb = u["max_mem"]["max_memkb"]
        if kb >> 2 > hv.frames.total:
            fail(Errno.EINVAL)
        d.max_pages = kb >> 2
    elif cmd == Domctl.max_vcpus:
        d = _target(mon, domid, "max_vcpus")
        if d is mon.dom or d.started:
            fail(Errno.EINVAL)                      # (not its own; before it runs)
        vcpus.set_max_vcpus(hv, d, u["max_vcpus"]["max"])
    elif cmd in (Domctl.setvcpucontext, Domctl.getvcpucontext):
        set_ = cmd == Domctl.setvcpucontext
        d = _target(mon, domid, "setvcpucontext" if set_ else "getvcpucontext")
        vc = u["vcpucontext"]
        k = _vcpu_of(d, vc["vcpu"])
        if not d.paused or d.monitor is None:
            fail(Errno.EINVAL)                      # only a paused domain's vCPU
        addr = vc["ctxt"] & 0xFFFFFFFF
        if set_:
            ctx = VCPU_GUEST_CONTEXT.unpack(mon._read(addr, VCPU_GUEST_CONTEXT.size))
            if k == 0:
                d.monitor.boot(ctx)
            elif d.kind == "pv":
                d.monitor.boot(ctx, k)
            vcpus.context_set(hv, d.vcpus[k])
        else:
            if not d.vcpus[k].initialised:
                fail(Errno.ENODATA)
            with d.monitor.on_vcpu(k):
                ctx = d.monitor.context()
            mon._write(addr, VCPU_GUEST_CONTEXT.pack(ctx))
    elif cmd == Domctl.getvcpuinfo:
        d = _target(mon, domid, "getvcpuinfo")
        v = d.vcpus[_vcpu_of(d, u["getvcpuinfo"]["vcpu"])]
        out = ("getvcpuinfo", {"vcpu": v.vcpu_id, "online": int(v.online),
                               "blocked": int(v.blocked),
                               "running": int(hv.running(v) and not v.blocked),
                               "cpu_time": v.cpu_time_ns, "cpu": hv.sched.cpu_of(v)})
    elif cmd in (Domctl.setvcpuaffinity, Domctl.getvcpuaffinity):
        out = _vcpuaffinity(mon, cmd == Domctl.setvcpuaffinity, domid, u["vcpuaffinity"])
    elif cmd == Domctl.scheduler_op:
        d = _target(mon, domid, "scheduler")
        s = u["scheduler_op"]
        if s["sched_id"] != Scheduler.credit:
            fail(Errno.EINVAL)
        if s["cmd"] == SchedCmd.putinfo:
            w, cap = s["u"]["credit"]["weight"], s["u"]["credit"]["cap"]
            if w:
                d.weight = w
            # percent of one CPU: up to all of its vCPUs' worth (Xen's cap)
            d.cap = cap if cap <= 100 * len(d.vcpus) else fail(Errno.EINVAL)
        elif s["cmd"] == SchedCmd.getinfo:
            s["u"] = {"credit": {"weight": d.weight, "cap": d.cap}}
            out = ("scheduler_op", s)
        else:
            fail(Errno.EINVAL)
    elif cmd == Domctl.setdomainhandle:
        _target(mon, domid, "setdomainhandle").uuid = bytes(u["setdomainhandle"]["handle"])
    elif cmd == Domctl.settimeoffset:
        _target(mon, domid, "settime")
    elif cmd in (Domctl.gethvmcontext, Domctl.sethvmcontext):
        out = _hvmcontext(mon, cmd == Domctl.sethvmcontext, domid, u["hvmcontext"])
    else:
        fail(Errno.ENOSYS)
    if out is not None:
        op["u"] = {out[0]: out[1]}
        mon._write(ptr, DOMCTL.pack(op))
    return 0


def _vcpuaffinity(mon, set_: bool, domid: int, a: dict):
    """A vCPU's hard affinity as a CPU bitmap (Xen's vcpu_affinity_domctl): set -- -EINVAL
    when it names no pCPU the machine has, or a soft affinity is asked for (credit here
    has none) -- or read back, as many bytes as the caller's ``nr_bits`` hold."""
    hv = mon.hv
    d = _target(mon, domid, "setvcpuaffinity" if set_ else "getvcpuaffinity")
    v = d.vcpus[_vcpu_of(d, a["vcpu"])]
    if a["flags"] & ~(VcpuAffinity.hard | VcpuAffinity.force) or not a["flags"] & VcpuAffinity.hard:
        fail(Errno.EINVAL)
    bm = a["cpumap_hard"]
    # (ringvisor's pCPUs fit in the first bytes: 32 of them, 256 CPUs, are read or written)
    buf, nbits = bm["bitmap"] & 0xFFFFFFFF, min(bm["nr_bits"], 256)
    if not buf or not nbits:
        fail(Errno.EINVAL)
    nbytes = (nbits + 7) // 8
    if set_:
        bits = int.from_bytes(mon._read(buf, nbytes), "little") & ((1 << nbits) - 1)
        try:
            hv.set_affinity(v, {c for c in range(bits.bit_length()) if bits >> c & 1})
        except ValueError:
            fail(Errno.EINVAL)
    bits = sum(1 << c for c in hv.sched.affinity(v) if c < nbits)
    mon._write(buf, bits.to_bytes(nbytes, "little"))
    return None


def _hvmcontext(mon, set_: bool, domid: int, hc: dict):
    """A paused domain's context records (domsave.py): read (a null buffer asks for the
    size; too small a buffer is -ENOSPC) or given to a new domain."""
    d = _target(mon, domid, "setvcpucontext" if set_ else "getvcpucontext")
    if d.monitor is None:
        fail(Errno.EINVAL)
    buf, size = hc["buffer"] & 0xFFFFFFFF, hc["size"]
    if set_:
        if not buf or size > MAX_CONTEXT:
            fail(Errno.EINVAL)
        domsave.set_context(mon.hv, d, mon._read(buf, size))
        return None
    blob = domsave.get_context(mon.hv, d)
    if buf:
        if size < len(blob):
            fail(Errno.ENOSPC)
        mon._write(buf, blob)
    return ("hvmcontext", {"size": len(blob), "buffer": hc["buffer"]})


def sysctl(mon, ptr: int) -> int:
    hv = mon.hv
    op = SYSCTL.unpack(mon._read(ptr, SYSCTL.size))
    if op["interface_version"] != SYSCTL_INTERFACE_VERSION:
        fail(Errno.EACCES)
    cmd, u = op["cmd"], op["u"]
    if cmd == Sysctl.physinfo:
        hv.check(mon.caller, None, "xen", "physinfo")
        f = hv.frames
        out = {"threads_per_core": 1, "cores_per_socket": hv.ncpus, "nr_cpus": hv.ncpus,
               "max_cpu_id": hv.ncpus - 1,
               "nr_nodes": 1, "max_node_id": 0, "cpu_khz": hv.machine.clock.tsc_hz // 1000,
               "capabilities": 0, "total_pages": f.total, "free_pages": f.nr_free,
               "max_mfn": f.end - 1}
        op["u"] = {"physinfo": out}
    elif cmd == Sysctl.sched_id:
        hv.check(mon.caller, None, "xen", "sched_id")
        op["u"] = {"sched_id": {"sched_id": Scheduler.credit}}
    elif cmd == Sysctl.readconsole:
        hv.check(mon.caller, None, "xen", "readconsole")
        rc = u["readconsole"]
        data, index = hv.console.read(rc["index"] if rc["incremental"] else 0, rc["count"])
        mon._write(rc["buffer"] & 0xFFFFFFFF, data)
        if rc["clear"]:
            hv.console.clear()
        rc["count"], rc["index"] = len(data), index
        op["u"] = {"readconsole": rc}
    elif cmd == Sysctl.getdomaininfolist:
        g = u["getdomaininfolist"]
        n = 0
        base = g["buffer"] & 0xFFFFFFFF
        for d in sorted(hv.domains.values(), key=lambda d: d.domid):
            if n >= g["max_domains"]:
                break
            if d.domid < g["first_domain"]:
                continue
            try:
                hv.check(mon.caller, d, "domain", "getdomaininfo", log=False)
            except HypercallError:
                continue                             # what it may not see is left out
            mon._write(base + n * DOMCTL_GETDOMAININFO.size,
                       DOMCTL_GETDOMAININFO.pack(domaininfo(hv, d)))
            n += 1
        if n == 0 and not hv.may(mon.caller, None, "xen", "getdomaininfo"):
            hv.check(mon.caller, None, "xen", "getdomaininfo")     # refused: logged
        g["num_domains"] = n
        op["u"] = {"getdomaininfolist": g}
    else:
        fail(Errno.ENOSYS)
    mon._write(ptr, SYSCTL.pack(op))
    return 0


def xsm_op(mon, ptr: int) -> int:
    hv = mon.hv
    op = FLASK_OP.unpack(mon._read(ptr, FLASK_OP.size))
    if op["interface_version"] != FLASK_INTERFACE_VERSION:
        fail(Errno.EACCES)
    cmd, u = op["cmd"], op["u"]
    if cmd == FlaskOp.load:
        hv.check(mon.caller, None, "security", "load_policy")
        size = u["load"]["size"]
        if size > MAX_POLICY:
            fail(Errno.EINVAL)
        text = mon._read(u["load"]["buffer"], size).decode("utf-8", "replace")
        try:
            hv.xsm.load(text)
        except xsm.PolicyError as e:
            hv.printk(f"xsm: policy refused: {e}")
            fail(Errno.EINVAL)
        return 0
    if cmd == FlaskOp.getenforce:
        return int(hv.xsm.enforcing)
    if cmd == FlaskOp.setenforce:
        hv.check(mon.caller, None, "security", "setenforce")
        hv.xsm.enforcing = bool(u["enforce"]["enforcing"])
        return 0
    if cmd in (FlaskOp.context_to_sid, FlaskOp.sid_to_context):
        sc = u["sid_context"]
        if cmd == FlaskOp.context_to_sid:
            if sc["size"] > CONTEXT_MAX:
                fail(Errno.EINVAL)
            ctx = mon._read(sc["context"], sc["size"]).decode(errors="replace").rstrip("\0")
            sc["sid"] = hv.sid_of(ctx.rsplit(":", 1)[-1]) or fail(Errno.EINVAL)
        else:
            t = hv.type_of_sid(sc["sid"])
            text = xsm.CONTEXT.format(t).encode()
            if sc["size"] < len(text):
                fail(Errno.ERANGE)
            mon._write(sc["context"], text)
            sc["size"] = len(text)
        op["u"] = {"sid_context": sc}
        mon._write(ptr, FLASK_OP.pack(op))
        return 0
    if cmd == FlaskOp.access:
        hv.check(mon.caller, None, "security", "compute_av")
        a = u["access"]
        classes = list(xsm.CLASSES)
        if not 1 <= a["tclass"] <= len(classes):
            fail(Errno.EINVAL)
        cls = classes[a["tclass"] - 1]
        perms = sorted(xsm.CLASSES[cls])
        src, tgt = hv.type_of_sid(a["ssid"]), hv.type_of_sid(a["tsid"])
        a["allowed"] = sum(1 << i for i, p in enumerate(perms)
                           if hv.xsm.allowed(src, tgt, cls, p))
        op["u"] = {"access": a}
        mon._write(ptr, FLASK_OP.pack(op))
        return 0
    fail(Errno.ENOSYS)

