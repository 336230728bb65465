"""Event channels between domains (Xen's ``common/event_channel.c``).

Each domain has its own table of ports in its own shared-info page
(``ringvisor.vmm.evtchn``); here the tables are connected.  A port bound
*interdomain* names a port of another domain: ``send`` on one side sets the
other side's port pending (and wakes that domain).  The two steps of the
handshake are Xen's: one side allocates an *unbound* port that only a given
remote domain may bind (``alloc_unbound``; Domain 0 may allocate one in
another domain's table, as the toolstack does for a new domain's xenstore and
console channels), the other side binds it (``bind_interdomain``).  Closing
one end leaves the other unbound, as does destroying a domain.

Physical IRQs go only to domains allowed them (Domain 0: the ISA interrupts);
a virtual IRQ is per domain.

A domain with several vCPUs (Xen's ``event_channel.h``): every port notifies
one vCPU -- its ``vcpu_info`` slot in the shared-info page gets the selector
bit and ``evtchn_upcall_pending``, and that vCPU is woken.  ``bind_ipi``
binds a port to a vCPU (a send on it wakes that vCPU), ``bind_virq`` binds a
per-vCPU VIRQ (``VIRQ_TIMER``, ``VIRQ_DEBUG``, ...: one port per vCPU) or a
global one (vCPU 0 only), and ``bind_vcpu`` moves an unbound, inter-domain,
physical-IRQ or global-VIRQ port to another vCPU (the per-vCPU ones and IPIs
stay where they were bound: -EINVAL), as Xen's ``evtchn_bind_vcpu``; a port
moved while pending and unmasked is signalled to its new vCPU at once.  A
vCPU's ``vcpu_info`` is its slot in the shared-info page until it registers
one of its own (``info``, ``hypervisor.vcpuinfo``).  The vCPU the domain's
monitor has loaded is the one whose mask and pending flag
``upcall_mask``/``upcall_pending`` read (``select``).  Every inter-domain step is checked by the
security module (class ``event``: create, bind, send, status).

Ports the toolstack binds (Domain 0's user space, through its hypercall
interface) are not signalled in Domain 0's shared-info page -- Domain 0's
kernel would take them as its own interrupts -- but queued for the toolstack,
which is what Linux's ``/dev/xen/evtchn`` driver does inside Domain 0's
kernel.
"""

from __future__ import annotations

from collections import deque

from ringvisor.abi import SHARED_INFO, VCPU_INFO, DomId, Errno, EvtchnStat, Virq
from ringvisor.vmm.evtchn import VIRQS, EvtchnError, EventChannels, Port

from .xsm import Denied

# Xen's virq_is_global: these are per vCPU, the others the domain's (bound on vCPU 0)
PER_VCPU_VIRQS = frozenset({Virq.TIMER, Virq.DEBUG, Virq.XENOPROF, Virq.XENPMU})
PORT_STATES_MOVABLE = (EvtchnStat.unbound, EvtchnStat.interdomain, EvtchnStat.pirq)


def virq_key(virq: int, vcpu: int) -> int:
    """``by_virq``'s key: the VIRQ for vCPU 0 (and for a global one, whichever vCPU it
    notifies), above it the vCPU's number (Xen's per-vCPU ``virq_to_evtchn``)."""
    return virq | (vcpu << 8 if virq in PER_VCPU_VIRQS else 0)


class DomainEvents(EventChannels):
    def __init__(self, hv, dom, mem, shared_info_phys: int) -> None:
        super().__init__(mem, shared_info_phys, dom.domid)
        self.hv = hv
        self.dom = dom
        self.user_ports: set[int] = set()        # bound by the toolstack
        self.user_pending: deque[int] = deque()   # signalled, for the toolstack to read
        self.kernel_ports: dict = {}               # served inside the hypervisor: port -> fn
        o = SHARED_INFO.offset
        self.o_info0 = self.si + o("vcpu_info[0]")
        # each field's place in a vcpu_info slot
        self.r_sel, self.r_upcall, self.r_mask = (
            o(f"vcpu_info[0].{f}") - o("vcpu_info[0]")
            for f in ("evtchn_pending_sel", "evtchn_upcall_pending", "evtchn_upcall_mask"))
        self.selected = 0

    # -- the vCPUs' slots in the shared-info page ----------------------------------------
    def info(self, vcpu: int) -> int:
        """The machine address of ``vcpu``'s vcpu_info: where it registered one
        (VCPUOP_register_vcpu_info, ``vcpuinfo``), else its slot in the shared-info page."""
        ma = self.dom.vcpus[vcpu].vcpu_info_ma
        return self.o_info0 + vcpu * VCPU_INFO.size if ma is None else ma

    def select(self, vcpu: int) -> None:
        """The monitor loaded ``vcpu``: its mask and pending flag are the ones read."""
        self.selected = vcpu
        base = self.info(vcpu)
        self.o_sel, self.o_upcall, self.o_upcall_mask = (
            base + self.r_sel, base + self.r_upcall, base + self.r_mask)

    def _vcpu(self, vcpu: int):
        if not 0 <= vcpu < len(self.dom.vcpus):
            raise EvtchnError(Errno.ENOENT)
        return self.dom.vcpus[vcpu]

    # -- signalling ---------------------------------------------------------------------
    def set_pending(self, port: int) -> None:
        if port in self.kernel_ports:
            self.stats["events_raised"] += 1
            self.kernel_ports[port]()
            return
        if port in self.user_ports:
            self.stats["events_raised"] += 1
            if port not in self.user_pending:
                self.user_pending.append(port)
            self.hv.toolstack_event()
            return
        super().set_pending(port)

    def _notify(self, port: int) -> None:
        """Mark the port's vCPU: its selector bit, its upcall pending; wake it."""
        k = self.ports[port].vcpu
        base = self.info(k)
        self.mem.write32(base + self.r_sel, self.mem.read32(base + self.r_sel) | 1 << (port >> 5))
        self.mem.write8(base + self.r_upcall, 1)
        self.hv.event_for(self.dom.vcpus[k])

    def vcpu_masked(self, vcpu: int, on: bool) -> None:
        """Set ``vcpu``'s upcall mask (a new vCPU starts with events masked)."""
        self.mem.write8(self.info(vcpu) + self.r_mask, int(on))

    def raise_virq(self, virq: int, vcpu: int = 0) -> None:
        port = self.by_virq.get(virq_key(virq, vcpu))
        if port is None:
            self.stats["events_dropped"] += 1
            return
        self.set_pending(port)

    # -- checks -------------------------------------------------------------------------
    def _check(self, target, perm: str) -> None:
        try:
            self.hv.xsm.check(self.caller, target, "event", perm)
        except Denied:
            raise EvtchnError(Errno.EACCES) from None

    @property
    def caller(self):
        """The domain making the request (the toolstack acts as Domain 0)."""
        return self.hv.caller or self.dom

    def _domain(self, domid: int):
        d = self.hv.lookup(self.dom if domid == DomId.SELF else domid)
        if d is None:
            raise EvtchnError(Errno.ESRCH)
        return d

    # -- operations ---------------------------------------------------------------------
    def alloc_unbound(self, dom: int, remote_dom: int) -> int:
        owner = self._domain(dom)
        remote = self._domain(remote_dom)
        if owner is not self.dom:
            # a port in another domain's table: Domain 0 setting up a new domain
            return owner.events._alloc_for(self.caller, remote)
        port = self._alloc_for(self.caller, remote)
        if self.hv.caller is not None:
            self.user_ports.add(port)
        return port

    def _alloc_for(self, caller, remote) -> int:
        try:
            self.hv.xsm.check(caller, self.dom, "event", "create")
            self.hv.xsm.check(self.dom, remote, "event", "bind")
        except Denied:
            raise EvtchnError(Errno.EACCES) from None
        port = self._alloc()
        self.ports[port] = Port(EvtchnStat.unbound, remote_dom=remote.domid)
        return port

    def bind_interdomain(self, remote_dom: int, remote_port: int) -> int:
        remote = self._domain(remote_dom)
        peer = remote.events._port(remote_port)
        if peer.state != EvtchnStat.unbound or peer.remote_dom not in (self.dom.domid, DomId.SELF):
            raise EvtchnError(Errno.EINVAL)
        self._check(remote, "bind")
        port = self._alloc()
        self.ports[port] = Port(EvtchnStat.interdomain, remote=remote_port,
                                remote_dom=remote.domid)
        peer.state, peer.remote, peer.remote_dom = EvtchnStat.interdomain, port, self.dom.domid
        if self.hv.caller is not None:
            self.user_ports.add(port)
        return port

    def bind_virq(self, virq: int, vcpu: int) -> int:
        if virq not in VIRQS:
            raise EvtchnError(Errno.EINVAL)
        self._vcpu(vcpu)
        if virq not in PER_VCPU_VIRQS and vcpu != 0:
            raise EvtchnError(Errno.EINVAL)          # a global VIRQ is bound on vCPU 0
        key = virq_key(virq, vcpu)
        if key in self.by_virq:
            raise EvtchnError(Errno.EEXIST)
        port = self._alloc()
        self.ports[port] = Port(EvtchnStat.virq, virq=virq, vcpu=vcpu)
        self.by_virq[key] = port
        return port

    def bind_ipi(self, vcpu: int) -> int:
        self._vcpu(vcpu)
        port = self._alloc()
        self.ports[port] = Port(EvtchnStat.ipi, vcpu=vcpu)
        return port

    def bind_vcpu(self, port: int, vcpu: int) -> None:
        """Notify ``vcpu`` for ``port`` from now on (EVTCHNOP_bind_vcpu)."""
        p = self._port(port)
        self._vcpu(vcpu)
        if p.state in PORT_STATES_MOVABLE or (p.state == EvtchnStat.virq and
                                              p.virq not in PER_VCPU_VIRQS):
            p.vcpu = vcpu
        else:
            raise EvtchnError(Errno.EINVAL)
        # an event already pending (and unmasked) is the new vCPU's to take: its selector
        # and upcall flag are set now, as Xen re-evaluates a pending port when it is moved
        # (the old vCPU's selector bit may stay: a spurious scan, which guests cope with)
        if self._bit(self.o_pending, port) and not self._bit(self.o_mask, port):
            self._notify(port)

    def bind_pirq(self, pirq: int) -> int:
        if pirq not in self.dom.irqs:
            raise EvtchnError(Errno.EPERM)           # not this domain's to have
        return super().bind_pirq(pirq)

    def close(self, port: int) -> None:
        p = self._port(port)
        if p.state == EvtchnStat.interdomain:
            remote = self.hv.lookup(p.remote_dom)
            if remote is not None and remote.events is not None:
                peer = remote.events.ports[p.remote]
                peer.state, peer.remote, peer.remote_dom = EvtchnStat.unbound, -1, self.dom.domid
            self.ports[port] = Port()
            self._set_bit(self.o_pending, port, False)
        elif p.state == EvtchnStat.virq:
            del self.by_virq[virq_key(p.virq, p.vcpu)]
            self.ports[port] = Port()
            self._set_bit(self.o_pending, port, False)
        else:
            super().close(port)
        self.user_ports.discard(port)
        self.kernel_ports.pop(port, None)

    def send(self, port: int) -> None:
        p = self._port(port)
        if p.state == EvtchnStat.interdomain:
            remote = self.hv.lookup(p.remote_dom)
            if remote is None or remote.events is None:
                return                                 # the peer is gone: dropped
            self._check(remote, "send")
            remote.events.set_pending(p.remote)
        else:
            super().send(port)

    def status(self, port: int) -> dict:
        out = super().status(port)
        p = self.ports[port]
        out["vcpu"] = p.vcpu
        if p.state == EvtchnStat.interdomain:
            out["u"] = {"interdomain": {"dom": p.remote_dom, "port": p.remote}}
        elif p.state == EvtchnStat.unbound:
            out["u"] = {"unbound": {"dom": p.remote_dom}}
        return out

    # -- the end ------------------------------------------------------------------------
    def close_all(self) -> None:
        """The domain is being destroyed: every port closed, peers left unbound."""
        for port in range(1, len(self.ports)):
            if self.ports[port].state != EvtchnStat.closed:
                self.close(port)

    def ports_in_use(self) -> int:
        return sum(1 for p in self.ports[1:] if p.state != EvtchnStat.closed)

    def read_user(self) -> list[int]:
        """The toolstack's pending ports (and they are no longer pending)."""
        out = list(self.user_pending)
        self.user_pending.clear()
        return out
