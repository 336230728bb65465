"""A paused domain's context as data: what ``xl save`` carries besides its memory.

Xen's toolstack saves a domain from Domain 0 with hypercalls: its memory
through foreign mappings of its pseudo-physical frames, and the rest through
``XEN_DOMCTL_gethvmcontext`` (and puts it back with ``sethvmcontext``).  Here
that context is ringvisor's own record (``CONTEXT_VERSION``, canonical JSON
through ``lifecycle.codec``): everything of the domain that is not in its
memory --

- every vCPU (``vcpus``, version 2: one record each) as a context switch
  leaves it (``VcpuContext``: registers, the interrupt frame, segment
  selectors, debug registers, the x87/MMX/SSE state) and the monitor's
  virtual CPU (virtual IF, IOPL, CR0-CR4, the GDT and IDT it gave, the
  interrupt shadow, a halt), its trap table, callbacks, kernel stack, GDT
  frames, timers, whether it is initialised, online, blocked, its CPU time
  and runstate, where it registered its vcpu_info (a pseudo-physical frame
  and offset) and its runstate area (version 3); the domain's pinned
  tables, virtual PIC and counters;
- the start-of-day pages the hypervisor keeps for it (start_info,
  shared_info with the event channels' pending and mask bits and the time,
  the boot stack) and its grant table's frames, and where it placed the
  grant table's or the shared info's frames in its physmap (a front-end's
  ``XENMEM_add_to_physmap``: put back at the same frames on restore);
- its event channels (ports and bindings), its one-shot and periodic timers
  (as time left, since virtual time differs on another host), its system
  time and TSC (a restore sets the domain's offsets from the machine's clock
  so that both continue from there, instead of jumping to this host's), its ring
  parameters (``HVM_PARAM_*``), its memory figures and scheduler state.

A bt domain's record is ``btsave``'s (its vCPU in the guest's terms, its devices),
with its event channels and grant table frames as here.

No machine frame number leaves: a frame is named by its pseudo-physical
number (the guests are auto-translated, so their own page tables already
are), and a restore on any host maps them through the new P2M.  Dropped and
rebuilt, as after any change of a physmap: the shadow page tables and the
real GDT's copy of the guest's descriptors (the next context switch reloads
both).  An inter-domain channel cannot follow its peer to another host: its
port is saved *unbound*, waiting for the same peer domain, and the toolstack
binds its back-ends again (xenconsoled, xenstored) on restore; a front-end
connects to its new back-end itself (blkfront: ``guests/pv/blkfront.c``).  A
domain that holds mappings of other domains' grants or frames cannot be
saved (``-EBUSY``): they name frames of domains that do not move with it.
"""

from __future__ import annotations

from ringvisor.abi import PV_BOOT_STACK_VA, DomId, Errno, EvtchnStat, MapSpace
from ringvisor.hw.state import FpuState
from ringvisor.lifecycle import codec
from ringvisor.vmm import state as S
from ringvisor.vmm.errors import HypercallError, fail

from . import btsave, vcpuinfo, vcpus
from .domain import VcpuContext
from .grant import GrantFailure
from .memory import clear_entry, set_entry

CONTEXT_VERSION = 3        # 3: registered vcpu_info and runstate areas, bt domains
                           # (btsave); 2: every vCPU (1: vCPU 0 alone); 1 and 2 restore
# the monitor's own state that names no machine frame (the rest is below, translated):
# each vCPU's, and the domain's
VCPU_MONITOR_FIELDS = ("vcpu", "step_state", "shadow_at", "guest_halted", "trap_table",
                       "callbacks", "kstack", "time_version")
DOMAIN_MONITOR_FIELDS = ("platform", "traps", "emulated", "stats", "hypercalls", "watchpoints")
MONITOR_FIELDS = VCPU_MONITOR_FIELDS + DOMAIN_MONITOR_FIELDS
# ... and the rest of the monitor's state, each carried in its own way below (or, the
# shadows and the real GDT's and LDT's copies, rebuilt: the tables at every switch to the
# domain, from the vCPU's GDTR and LDTR); a test checks these cover the monitor's STATE
TRANSLATED = ("events", "gdt_frames", "pinned", "timer", "time_offset_ns", "tsc_offset")
REBUILT = ("shadow", "gdt", "ldt")
PAGE = 0x1000


def _pages(m) -> dict[str, int]:
    """The hypervisor's start-of-day pages of the domain, by name: machine addresses."""
    return {"start_info": m.start_info_phys, "shared_info": m.si_phys,
            "boot_stack": m.fixed[PV_BOOT_STACK_VA][0]}


def _xen_placed(d, m) -> list[list] | None:
    """Where the domain placed frames of its own that Xen keeps -- its grant table's
    (a front-end's ``XENMEM_add_to_physmap``), its shared info -- as [gpfn, space,
    index]; None if it holds another domain's frame (those do not move with it)."""
    out = []
    for gpfn, owner in sorted(d.foreign.items()):
        mfn = d.p2m[gpfn]
        if owner == DomId.XEN and mfn in d.grants.frames:
            out.append([gpfn, int(MapSpace.grant_table), d.grants.frames.index(mfn)])
        elif owner == DomId.XEN and mfn == m.si_phys >> 12:
            out.append([gpfn, int(MapSpace.shared_info), 0])
        else:
            return None
    return out


def _place(hv, d, m, placed) -> None:
    """Put the Xen frames back where the domain had placed them (over whatever frame
    the toolstack populated there), as its physmap had them."""
    for gpfn, space, idx in placed:
        if space == MapSpace.grant_table:
            mfn = d.grants.frames[int(idx)]
        elif space == MapSpace.shared_info:
            mfn = m.si_phys >> 12
        else:
            raise ValueError("a placed frame of an unknown space")
        clear_entry(hv, d, int(gpfn))
        set_entry(hv, d, int(gpfn), mfn, DomId.XEN)


def set_grant_frames(d, pages: list) -> None:
    """The grant table's frames as saved (more than a table may have: -EINVAL)."""
    try:
        d.grants.set_contents(pages)
    except GrantFailure:
        fail(Errno.EINVAL)


def get_context(hv, d) -> bytes:
    """The context of paused domain ``d`` (gethvmcontext)."""
    if not d.paused or not d.started or d.dead or d.privileged:
        fail(Errno.EINVAL)
    if hv.on_cpu(d):
        fail(Errno.EBUSY)                 # (a paused domain leaves the CPU at the next entry)
    m, mem = d.monitor, hv.mem
    placed = _xen_placed(d, m)
    if placed is None or d.grants.maptrack:
        fail(Errno.EBUSY)
    ports = []
    for p in d.events.get_state()["ports"]:
        if p["state"] == EvtchnStat.interdomain:      # the peer does not come along
            p = {**p, "state": int(EvtchnStat.unbound), "remote": -1}
        ports.append(p)
    if d.kind == "bt":
        if placed:
            fail(Errno.EBUSY)             # (a bt domain places no Xen frame of its own)
        return codec.encode({"version": CONTEXT_VERSION, **btsave.context(hv, d, ports),
                             "grant_frames": d.grants.contents()}, "context")
    state = {
        "version": CONTEXT_VERSION,
        "monitor": S.get_attrs(_DomainFields(m)),
        "vcpus": [_vcpu_record(m, v) for v in d.vcpus],
        "pinned_gfns": sorted(m._gfn(f << 12) for f in m.pinned),
        "params": dict(m.params), "cmdline": m.cmdline, "guest_ram": m.guest_ram,
        "events": {**d.events.get_state(), "ports": ports},
        # its clock as it read at the save: a restore continues it (Xen's save records
        # the time base), where the machine's clock there may be anywhere
        "time": {"system_ns": m.system_ns(), "tsc": m.guest_tsc()},
        "pages": {name: mem.read(addr, PAGE) for name, addr in _pages(m).items()},
        "grant_frames": d.grants.contents(),
        "xen_placed": placed,
        "domain": {"nr_ram_pages": d.nr_ram_pages, "max_pages": d.max_pages,
                   "cpu_time_ns": d.cpu_time_ns},
    }
    return codec.encode(state, "context")


def _vcpu_record(m, v) -> dict:
    """vCPU ``v``'s part of the context."""
    c = v.ctx
    fpu = c.extra.get("fpu")
    with m.on_vcpu(v.vcpu_id):
        return {"monitor": S.get_attrs(_VcpuFields(m)),
                "gdt_gfns": [m._gfn(f << 12) for f in m.gdt_frames],
                "timer": v.timer.get_state(),
                "regs": {"regs": list(c.regs), "eip": c.eip, "cs": c.cs, "eflags": c.eflags,
                         "ss": c.ss, "sregs": dict(c.sregs), "dr": list(c.extra.get("dr", [])),
                         "fpu": fpu.to_dict() if fpu is not None else None},
                "initialised": v.initialised, "online": v.online, "blocked": v.blocked,
                "cpu_time_ns": v.cpu_time_ns,
                "runstate": [v.runstate, *v.runstate_ns], **vcpuinfo.saved(v)}


def _version_1(st: dict) -> dict:
    """A version-1 context (vCPU 0 alone, at the top level) in version 2's shape."""
    mon = st["monitor"]
    st["vcpus"] = [{"monitor": {k: mon[k] for k in VCPU_MONITOR_FIELDS},
                    "gdt_gfns": st["gdt_gfns"], "timer": st["timer"], "regs": st["vcpu"],
                    "initialised": True, "online": True, "blocked": st["domain"]["blocked"],
                    "cpu_time_ns": st["domain"]["cpu_time_ns"]}]
    return st


def set_context(hv, d, blob: bytes) -> None:
    """Give new, paused, never started domain ``d`` -- its memory already in place at
    the same pseudo-physical frames -- the context ``blob`` (sethvmcontext)."""
    if not d.paused or d.started or d.dead or d.privileged:
        fail(Errno.EINVAL)
    try:
        st = codec.decode(blob)
        if st["version"] > CONTEXT_VERSION:
            fail(Errno.EOPNOTSUPP)
        if st.get("kind", "pv") != d.kind:
            fail(Errno.EINVAL)            # a bt domain's context for a PV domain, or back
        if d.kind == "bt":
            set_grant_frames(d, st["grant_frames"])
            btsave.apply(hv, d, st)
            return
        if st["version"] == 1:
            st = _version_1(st)
        if len(st["vcpus"]) != len(d.vcpus):
            fail(Errno.EINVAL)            # (the toolstack sets max_vcpus from the stream)
        _apply(hv, d, st)
    except HypercallError:
        raise
    except (codec.StateError, KeyError, TypeError, ValueError, IndexError, AttributeError):
        fail(Errno.EINVAL)


def _apply(hv, d, st: dict) -> None:
    m, mem = d.monitor, hv.mem
    pages = st["pages"]
    if set(pages) != set(_pages(m)) or any(len(v) != PAGE for v in pages.values()):
        raise ValueError("start-of-day pages")
    # everything that names a frame first: a frame the domain does not have is -EPERM
    gdt_frames = [[m._frame(g) >> 12 for g in rec["gdt_gfns"]] for rec in st["vcpus"]]
    pinned = {m._frame(g) >> 12 for g in st["pinned_gfns"]}
    params = {int(k): int(v) for k, v in st["params"].items()}
    set_grant_frames(d, st["grant_frames"])
    _place(hv, d, m, st.get("xen_placed", []))
    S.set_attrs(_DomainFields(m), st["monitor"])
    m.pinned, m.params = pinned, params
    m.cmdline, m.guest_ram = str(st["cmdline"]), int(st["guest_ram"])
    m.map_rings()
    for name, addr in _pages(m).items():
        mem.write(addr, bytes(pages[name]))
    d.events.set_state(st["events"])
    t = st.get("time")
    if t is not None:
        m.time_offset_ns = hv.clock.now_ns() - int(t["system_ns"])
        m.tsc_offset = int(t["tsc"]) - (hv.cpu.tsc() - hv.cpu.state.tsc_offset)
    for v, rec in zip(d.vcpus, st["vcpus"]):
        vcpuinfo.restored(m, v, rec)       # (before its time is written in its vcpu_info)
    for v, rec, frames in zip(d.vcpus, st["vcpus"], gdt_frames):
        with m.on_vcpu(v.vcpu_id):
            S.set_attrs(_VcpuFields(m), rec["monitor"])
            m.gdt_frames = frames
            m.update_time()                # its own time (above) in its vcpu_info
        _apply_vcpu(hv, v, rec)
    dom = st["domain"]
    d.nr_ram_pages, d.max_pages = int(dom["nr_ram_pages"]), int(dom["max_pages"])
    d.cpu_time_ns = int(dom["cpu_time_ns"])
    hv.forget_mappings(d)
    if not d.vcpus[0].initialised:
        raise ValueError("vCPU 0 without a context")


def _apply_vcpu(hv, v, rec: dict) -> None:
    v.timer.set_state(rec["timer"])
    r = rec["regs"]
    extra = {"dr": [int(x) for x in r["dr"]]} if r["dr"] else {}
    if r["fpu"] is not None:
        extra["fpu"] = FpuState.from_dict(r["fpu"])
    v.ctx = VcpuContext(regs=[int(x) for x in r["regs"]][:8], eip=int(r["eip"]),
                        cs=int(r["cs"]), eflags=int(r["eflags"]), ss=int(r["ss"]),
                        sregs={int(k): int(s) for k, s in r["sregs"].items()}, extra=extra)
    if len(v.ctx.regs) != 8:
        raise ValueError("registers")
    v.initialised, v.online = bool(rec["initialised"]), bool(rec["online"])
    v.blocked, v.cpu_time_ns = bool(rec["blocked"]), int(rec["cpu_time_ns"])
    vcpus.context_set(hv, v)
    if "runstate" in rec:
        v.runstate_ns = [int(x) for x in rec["runstate"][1:5]]


class _VcpuFields(S.View):
    STATE = VCPU_MONITOR_FIELDS


class _DomainFields(S.View):
    STATE = DOMAIN_MONITOR_FIELDS
