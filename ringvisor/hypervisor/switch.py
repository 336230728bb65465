"""The context switch on a pCPU (Xen's ``context_switch`` and ``schedule`` tail): the
outgoing vCPU's registers and interrupt frame saved, its runstate moved on; the
incoming vCPU's state loaded in its domain's monitor (``pcpus.install``: its GDT
into the real one, its LDT, its part of the region), its shadow page directory into
CR3, its registers, its pending events delivered, its slice armed, and a real IRET
to it -- or the idle vCPU, halted on flat ring-1 segments and an empty address space.
"""

from __future__ import annotations

import copy
import dataclasses

from ringvisor.abi import FlatSel
from ringvisor.hw.faults import TripleFault, UnsupportedFeature
from ringvisor.vmm.frame import Frame

from . import pcpus, sched, vcpuinfo
from .domain import Runstate, Vcpu
from .pvdomain import install_flat

ES, DS, FS, GS = 0, 3, 4, 5
IF = 1 << 9


def set_runstate(hv, v: Vcpu, state: int) -> None:
    """``v`` enters runstate ``state`` (if it is not in it), its registered area too."""
    if v.runstate != state:
        v.set_runstate(state, hv.clock.now_ns())
        if v.runstate_va:
            vcpuinfo.update_runstate_area(v)


def save(hv, v: Vcpu, f: Frame) -> None:
    """What ``v`` leaves in the processor of the pCPU entering: registers, frame, data
    segments, debug registers, x87/SSE state."""
    c, st = v.ctx, hv.pcpus[hv.here].cpu.state
    c.regs = list(st.regs)
    c.eip, c.cs, c.eflags, c.ss = f.eip, f.cs, f.eflags, f.ss
    c.sregs = {i: st.segs[i].selector for i in (ES, DS, FS, GS)}
    c.extra = {"dr": list(st.dr)}
    if hasattr(st, "fpu"):
        c.extra["fpu"] = copy.deepcopy(st.fpu)    # x87/MMX/SSE: each vCPU has its own


def switch(hv, cur: Vcpu | None, nxt: Vcpu | None, f: Frame) -> None:
    """The pCPU entering leaves ``cur`` (None: idle) for ``nxt`` (None: idle); ``f`` is
    the frame it returns through."""
    pc = hv.pcpus[hv.here]
    st, cpu = pc.cpu.state, pc.cpu
    now = hv.clock.now_ns()
    if cur is not None and not cur.dom.dead:
        save(hv, cur, f)
    if cur is not None:
        cur.dom.monitor.halting = cur.dom.monitor.guest_halted = False
        cur.set_runstate(cur.off_cpu_runstate, now)
        if cur.runstate_va:
            vcpuinfo.update_runstate_area(cur)    # (Xen: at every context switch)
    nd = nxt.dom if nxt is not None else None
    pc.current = hv.sched.running[hv.here] = nxt
    hv.region_saved.pop(cur, None)                # (what its pCPU left is gone with it)
    for d in hv.dying:
        if not hv.on_cpu(d):
            hv.teardown(d)
    hv.dying = [d for d in hv.dying if d.domid in hv.domains]
    hv.stats["context_switches"] += 1
    # RDTSC reads the running domain's TSC (a restored one continues its own)
    st.tsc_offset = nd.monitor.tsc_offset if nd is not None else 0
    if nxt is None:
        # the idle vCPU: flat ring-1 segments, an empty address space, halted
        install_flat(hv.mem, hv.base)
        st.cr3 = hv.idle_pd
        cpu.tlb_flush()
        for i in (ES, DS, FS, GS):
            cpu.segmentation.load(i, 0)
        f.eip, f.cs, f.ss, f.eflags = 0, FlatSel.RING1_CS, FlatSel.RING1_DS, IF | 2
        st.regs[4] = 0
        f.resume()
        st.halted = True
        cpu.limit = 0
        return
    m = nd.monitor
    pcpus.install(hv, nxt)                        # its state in the monitor, its region
    nxt.set_runstate(Runstate.running, now)
    if nxt.runstate_va:
        vcpuinfo.update_runstate_area(nxt)
    c = nxt.ctx
    m.switch_shadow()                         # CR3: its shadow of its address space
    st.regs[:] = c.regs
    if "dr" in c.extra:
        st.dr[:] = c.extra["dr"]
    if hasattr(st, "fpu"):
        # into the CPU's own object (translated code may hold it): a new vCPU's is reset
        fresh = c.extra.get("fpu") or type(st.fpu)()
        for fld in dataclasses.fields(fresh):
            setattr(st.fpu, fld.name, copy.deepcopy(getattr(fresh, fld.name)))
    for i, sel in c.sregs.items():
        try:
            cpu.segmentation.load(i, sel)
        except Exception:                      # noqa: BLE001 -- a stale selector: null
            cpu.segmentation.load(i, 0)
    f.eip, f.cs, f.eflags, f.ss = c.eip, c.cs, c.eflags, c.ss
    m.frame = f
    m.vcpu.cpl = 3 if f.user else 0
    m.halting = m.guest_halted = False
    try:
        m.switched_in(f)                      # what became pending while it was off
    except (UnsupportedFeature, TripleFault) as e:
        hv.crash(nd, str(e))
        switch(hv, None, hv.sched.pick(None, True, hv.here), f)
        return
    pc.last_ns = pc.now_ns(hv.clock)
    arm_slice(hv, pc.last_ns)
    m.resume(f)


def arm_slice(hv, now: int, end: int | None = None) -> None:
    """The pCPU's slice ends at ``end`` of its own time (by default a slice from now):
    a kick when the machine's clock gets there (on one processor, exactly then; with
    several, its own time runs slower, and the entry looks again)."""
    pc = hv.pcpus[hv.here]
    v = pc.current
    pc.slice_end = end if end is not None else \
        now + (hv.sched.slice_for(v) if v is not None else sched.TSLICE_NS)
    hv.clock.cancel(pc.slice_timer)
    at = hv.clock.cycles() + hv.clock.ns_to_cycles(pc.slice_end - now) if pc.smp else \
        hv.clock.ns_to_cycles(pc.slice_end)
    pc.slice_timer = hv.clock.schedule(at, lambda p=hv.here: hv.kick(p))
