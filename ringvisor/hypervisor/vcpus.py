"""A domain's vCPUs: how many it has, and bringing them up and down (Xen's
``common/domain.c``: ``XEN_DOMCTL_max_vcpus``, ``VCPUOP_up``, ``VCPUOP_down``).

A domain is created with vCPU 0; ``max_vcpus`` adds the others before it first
runs (never fewer than it has: Xen cannot take a vCPU away), each with its own
timers and, in the monitor, a slot for its own state (``pvdomain``).  A vCPU
runs once it has a context and is online: vCPU 0 from ``setvcpucontext`` with
``VGCF_online``, the others when the guest asks (``VCPUOP_initialise`` and
``VCPUOP_up``).  Down and blocked are apart, as Xen's ``VPF_down`` and
``VPF_blocked``: a vCPU taken down while it waited for an event still waits
when it comes back up, where it stopped.
"""

from __future__ import annotations

from ringvisor.abi import RV_MAX_VCPUS, Errno, Shutdown
from ringvisor.vmm.errors import HypercallError

from .domain import Domain, Runstate, Vcpu


def set_max_vcpus(hv, d: Domain, n: int) -> None:
    """domctl max_vcpus: ``d`` has vCPUs 0..n-1 (more can come, none can go: Xen)."""
    if not 1 <= n <= RV_MAX_VCPUS or n < len(d.vcpus) or (n > 1 and d.kind != "pv"):
        raise HypercallError(Errno.EINVAL)      # (a bt domain: one vCPU)
    for k in range(len(d.vcpus), n):
        v = Vcpu(d, k)
        v.timer = hv._vcpu_timer(v)
        v.slot = d.monitor.new_vcpu_slot(v.timer)
        d.vcpus.append(v)
        hv.sched.add(v)
    d.max_vcpus = n


def context_set(hv, v: Vcpu) -> None:
    """``v`` was given its context (setvcpucontext, a restore): its runstate starts."""
    v.set_runstate(v.off_cpu_runstate, hv.clock.now_ns())


def up(hv, v: Vcpu) -> None:
    """VCPUOP_up: an initialised vCPU may run (Xen's vcpu_wake)."""
    if v.online:
        return
    v.online = True
    v.set_runstate(v.off_cpu_runstate, hv.clock.now_ns())
    hv.preempt_for(v)


def down(hv, v: Vcpu) -> None:
    """VCPUOP_down: it stops until brought up again; the last one of a domain going down
    shuts the domain down (Xen's vcpu_down)."""
    d = v.dom
    if not v.online:
        return
    v.online = False
    if not hv.running(v):
        v.set_runstate(Runstate.offline, hv.clock.now_ns())   # (else at the switch)
    if not d.online_vcpus:
        hv.shutdown(d, Shutdown.poweroff)
    else:
        hv.kick_domain_vcpu(v)                   # its pCPU (within its own hypercall: at its end)
