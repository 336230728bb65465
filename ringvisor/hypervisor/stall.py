"""Whether anything can ever run again: the hypervisor's test for a domain set that is
stuck for good.

Every pCPU idles (or waits in a blocked vCPU's context) and virtual time jumps from one
timer to the next; the hypervisor's own timers -- the physical PIT and LAPICs, credit
accounting, time slices -- fire for ever without waking anybody.  A vCPU can only be
woken by a domain's virtual timer (one-shot or periodic), a bt domain's emulated PIT, a
back-end's kick or a delayed toolstack operation (all events on the virtual clock), by
console input waiting on a serial line, or by the toolstack: its periodic poll moves
console input and ring requests (it says itself whether it has anything to do beyond
that: ``quiet``), and a request (unpause, create, destroy) from its caller.  When none of
those is there for a while, a caller waiting for a domain to do something
(``Hypervisor.run_until``) would wait for ever: it is told so (:class:`Stalled`).
"""

from __future__ import annotations

from ringvisor.errors import RingvisorError

from .domain import State


STALLED = "every domain is blocked with nothing pending"     # the machine's pause reason
GRACE_NS = 2_500_000_000                                      # 2.5 s of virtual time


class Stalled(RingvisorError):
    """Every domain is blocked, paused or stopped, and no timer, event or input can wake
    one: only the toolstack could (one line, exit status 1)."""

    exit_status = 1


def _asleep(d) -> list:
    """What of domain ``d`` fires without waking it: the timers of vCPUs that cannot run
    (the domain paused or stopped, the vCPU down), and a stopped bt domain's PIT."""
    out = []
    stopped = d.paused or d.state is not State.RUNNABLE
    for v in d.vcpus:
        if v.timer is not None and (stopped or not v.online):
            out.append(v.timer)
    devices = getattr(d.monitor, "devices", None)
    if stopped and devices is not None:
        out.append(devices.pit)
    return out


def nothing_can_wake(hv) -> bool:
    """No vCPU runnable, no domain being torn down, no input waiting, and nothing on the
    virtual clock but the hypervisor's own timers and those of domains that cannot run."""
    if hv.dying or any(v.runnable for d in hv.domains.values() for v in d.vcpus):
        return False
    m, dom0 = hv.machine, hv.domains.get(0)
    if dom0 is not None and not dom0.paused and dom0.state is State.RUNNABLE and \
            any(u.has_pending_input() for u in m.uarts):     # (Domain 0's console input)
        return False
    own = {id(c) for c in m.components()}          # the machine's devices: the hypervisor's
    own.update(id(o) for d in hv.domains.values() for o in _asleep(d))
    slices = [pc.slice_timer.callback for pc in hv.pcpus if pc.slice_timer is not None]
    for cb in hv.clock.pending():
        owner = getattr(cb, "__self__", None)
        if id(owner) in own or cb == hv.accounting or any(cb is s for s in slices):
            continue
        quiet = getattr(owner, "quiet", None)     # a poller (the toolstack) with nothing to do
        if callable(quiet) and quiet():
            continue
        return False
    return True


def watch(hv) -> None:
    """At an entry while ``run_until`` waits: pause the machine once nothing could wake a
    vCPU for GRACE_NS of virtual time (a poller -- the toolstack, every 10 ms; its domain
    lifecycle pass, every second -- would have woken one by then if it had work)."""
    if not nothing_can_wake(hv):
        hv.stalled_since = None
        return
    now = hv.clock.now_ns()
    if hv.stalled_since is None:
        hv.stalled_since = now
    elif now - hv.stalled_since >= GRACE_NS:
        hv.machine.pause(STALLED)
