"""Event channels: Xen's replacement for interrupts (two-level ABI, one vCPU).

A port is a numbered channel; the hypervisor signals one by setting its bit in
``shared_info.evtchn_pending``.  If the port's bit in ``evtchn_mask`` is clear,
the bit of its pending *word* is set in ``vcpu_info.evtchn_pending_sel`` and
``vcpu_info.evtchn_upcall_pending`` becomes 1: the guest has something to do.
The guest takes an upcall when ``evtchn_upcall_mask`` (its virtual interrupt
flag, inverted) is clear.  All of this lives in the shared-info page, which the
guest reads and writes without asking; the hypervisor only ever sets bits
there and reads the masks (Xen's ``evtchn_set_pending`` and ``evtchn_unmask``).

Ports are bound to what raises them: a physical IRQ (``bind_pirq``), a virtual
IRQ of the hypervisor (``bind_virq``: the one-shot timer), or another port
(``alloc_unbound`` + ``bind_interdomain``; a domain may connect two of its own
ports, a loopback, which is how the tests exercise ``send``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ringvisor.abi import SHARED_INFO, DomId, Errno, EvtchnStat, Misc, Virq

NR_PORTS = 32 * 32              # 2-level: a 32-bit selector word over 32-bit pending words
NR_PIRQS = 16                   # the ISA interrupts of the PC
VIRQS = frozenset(int(v) for v in Virq)


class EvtchnError(Exception):
    def __init__(self, errno: Errno) -> None:
        super().__init__(errno.name)
        self.errno = errno


@dataclass
class Port:
    state: int = EvtchnStat.closed
    pirq: int = -1
    virq: int = -1
    remote: int = -1             # interdomain: the peer port; unbound: -1
    remote_dom: int = DomId.SELF
    vcpu: int = 0                # the vCPU notified (a hypervisor's domain: ``bind_vcpu``)


class EventChannels:
    STATE = ("ports", "by_pirq", "by_virq", "early_pirqs", "stats")    # (vmm/state.py)
    WIRING = ("mem", "si", "domid", "o_pending", "o_mask", "o_sel", "o_upcall", "o_upcall_mask")

    def get_state(self) -> dict:
        """The ports and their bindings; the pending and mask bitmaps are in the
        shared-info page, in the monitor's region of machine memory."""
        return {"ports": [asdict(p) for p in self.ports], "by_pirq": dict(self.by_pirq),
                "by_virq": dict(self.by_virq), "early_pirqs": set(self.early_pirqs),
                "stats": dict(self.stats)}

    def set_state(self, state: dict) -> None:
        ports = [Port(**p) for p in state["ports"]]
        if len(ports) != NR_PORTS:
            raise ValueError(f"{len(ports)} event channels, not {NR_PORTS}")
        self.ports = ports
        self.by_pirq = {int(k): int(v) for k, v in state["by_pirq"].items()}
        self.by_virq = {int(k): int(v) for k, v in state["by_virq"].items()}
        self.early_pirqs = {int(p) for p in state["early_pirqs"]}
        self.stats.update(state["stats"])

    def __init__(self, mem, shared_info_phys: int, domid: int = 0) -> None:
        self.mem = mem
        self.si = shared_info_phys
        self.domid = domid
        self.ports = [Port() for _ in range(NR_PORTS)]
        self.by_pirq: dict[int, int] = {}
        self.by_virq: dict[int, int] = {}
        self.early_pirqs: set[int] = set()   # raised before anything was bound to them
        self.stats = {"events_raised": 0, "events_dropped": 0}
        o = SHARED_INFO.offset
        self.o_pending = self.si + o("evtchn_pending")
        self.o_mask = self.si + o("evtchn_mask")
        self.o_sel = self.si + o("vcpu_info[0].evtchn_pending_sel")
        self.o_upcall = self.si + o("vcpu_info[0].evtchn_upcall_pending")
        self.o_upcall_mask = self.si + o("vcpu_info[0].evtchn_upcall_mask")
        assert Misc.EVTCHN_2L_NR_CHANNELS >= NR_PORTS

    # -- the shared bitmaps --------------------------------------------------------------
    def _bit(self, base: int, port: int) -> bool:
        return bool(self.mem.read32(base + (port >> 5) * 4) >> (port & 31) & 1)

    def _set_bit(self, base: int, port: int, on: bool = True) -> None:
        addr = base + (port >> 5) * 4
        w = self.mem.read32(addr)
        self.mem.write32(addr, w | 1 << (port & 31) if on else w & ~(1 << (port & 31)))

    @property
    def upcall_mask(self) -> bool:
        # (a byte of the shared-info page, in RAM: read as ``read8`` reads RAM, in line --
        # every system call and return under paravirt reads it)
        try:
            return bool(self.mem.ram[self.o_upcall_mask])
        except (AttributeError, IndexError):      # (not RAM: the bus's, or a test's memory)
            return bool(self.mem.read8(self.o_upcall_mask))

    @upcall_mask.setter
    def upcall_mask(self, on: bool) -> None:
        self.mem.write8(self.o_upcall_mask, 1 if on else 0)

    @property
    def upcall_pending(self) -> bool:
        try:
            return bool(self.mem.ram[self.o_upcall])
        except (AttributeError, IndexError):
            return bool(self.mem.read8(self.o_upcall))

    def set_pending(self, port: int) -> None:
        """Signal ``port`` (Xen's evtchn_set_pending)."""
        self.stats["events_raised"] += 1
        if self._bit(self.o_pending, port):
            return                                   # already pending: events coalesce
        self._set_bit(self.o_pending, port)
        if not self._bit(self.o_mask, port):
            self._notify(port)

    def _notify(self, port: int) -> None:
        sel = self.mem.read32(self.o_sel)
        self.mem.write32(self.o_sel, sel | 1 << (port >> 5))
        self.mem.write8(self.o_upcall, 1)

    # -- raised by the hypervisor -----------------------------------------------------------
    def raise_pirq(self, irq: int) -> None:
        port = self.by_pirq.get(irq)
        if port is None:
            # like a PIC line held until someone listens: delivered once bound
            self.early_pirqs.add(irq)
            return
        self.set_pending(port)

    def raise_virq(self, virq: int) -> None:
        port = self.by_virq.get(virq)
        if port is None:
            self.stats["events_dropped"] += 1
            return
        self.set_pending(port)

    # -- the guest's operations (EVTCHNOP_*) ---------------------------------------------------
    def _port(self, port: int) -> Port:
        if not 0 < port < NR_PORTS:
            raise EvtchnError(Errno.EINVAL)
        return self.ports[port]

    def _alloc(self) -> int:
        for i in range(1, NR_PORTS):                 # port 0 is never used (as in Xen)
            if self.ports[i].state == EvtchnStat.closed:
                return i
        raise EvtchnError(Errno.ENOSPC)

    def _self(self, dom: int) -> None:
        if dom not in (DomId.SELF, self.domid):
            raise EvtchnError(Errno.ESRCH)           # a single-domain machine

    def alloc_unbound(self, dom: int, remote_dom: int) -> int:
        self._self(dom)
        self._self(remote_dom)
        port = self._alloc()
        self.ports[port] = Port(EvtchnStat.unbound, remote_dom=remote_dom)
        return port

    def bind_interdomain(self, remote_dom: int, remote_port: int) -> int:
        self._self(remote_dom)
        peer = self._port(remote_port)
        if peer.state != EvtchnStat.unbound:
            raise EvtchnError(Errno.EINVAL)
        port = self._alloc()
        self.ports[port] = Port(EvtchnStat.interdomain, remote=remote_port)
        peer.state, peer.remote = EvtchnStat.interdomain, port
        return port

    def bind_virq(self, virq: int, vcpu: int) -> int:
        if virq not in VIRQS:
            raise EvtchnError(Errno.EINVAL)
        if vcpu != 0:
            raise EvtchnError(Errno.ENOENT)
        if virq in self.by_virq:
            raise EvtchnError(Errno.EEXIST)
        port = self._alloc()
        self.ports[port] = Port(EvtchnStat.virq, virq=virq)
        self.by_virq[virq] = port
        return port

    def bind_pirq(self, pirq: int) -> int:
        if not 0 <= pirq < NR_PIRQS:
            raise EvtchnError(Errno.EINVAL)
        if pirq in self.by_pirq:
            raise EvtchnError(Errno.EEXIST)
        port = self._alloc()
        self.ports[port] = Port(EvtchnStat.pirq, pirq=pirq)
        self.by_pirq[pirq] = port
        if pirq in self.early_pirqs:
            self.early_pirqs.discard(pirq)
            self.set_pending(port)
        return port

    def bind_ipi(self, vcpu: int) -> int:
        if vcpu != 0:
            raise EvtchnError(Errno.ENOENT)
        port = self._alloc()
        self.ports[port] = Port(EvtchnStat.ipi)
        return port

    def close(self, port: int) -> None:
        p = self._port(port)
        if p.state == EvtchnStat.closed:
            raise EvtchnError(Errno.EINVAL)
        if p.state == EvtchnStat.pirq:
            del self.by_pirq[p.pirq]
        elif p.state == EvtchnStat.virq:
            del self.by_virq[p.virq]
        elif p.state == EvtchnStat.interdomain:
            peer = self.ports[p.remote]
            peer.state, peer.remote = EvtchnStat.unbound, -1
        self.ports[port] = Port()
        self._set_bit(self.o_pending, port, False)

    def send(self, port: int) -> None:
        p = self._port(port)
        if p.state == EvtchnStat.interdomain:
            self.set_pending(p.remote)
        elif p.state == EvtchnStat.ipi:
            self.set_pending(port)
        elif p.state != EvtchnStat.unbound:          # unbound: nobody listens yet, dropped
            raise EvtchnError(Errno.EINVAL)

    def unmask(self, port: int) -> None:
        self._port(port)
        self._set_bit(self.o_mask, port, False)
        if self._bit(self.o_pending, port):
            self._notify(port)

    def status(self, port: int) -> dict:
        p = self._port(port)
        out = {"status": int(p.state), "vcpu": 0}
        if p.state == EvtchnStat.pirq:
            out["u"] = {"pirq": p.pirq}
        elif p.state == EvtchnStat.virq:
            out["u"] = {"virq": p.virq}
        elif p.state == EvtchnStat.interdomain:
            out["u"] = {"interdomain": {"dom": self.domid, "port": p.remote}}
        elif p.state == EvtchnStat.unbound:
            out["u"] = {"unbound": {"dom": self.domid}}
        return out
