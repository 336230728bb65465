"""The hypervisor: one per machine, owning it, running many domains.

What is machine-wide lives here (Xen's ``arch/x86``, ``common/schedule.c``,
``common/domain.c``): the hypervisor region (the real GDT, IDT and TSS, the
entry points, the stack) at the top of machine memory, the pool of machine
frames below it, the physical interrupts (routed to the domain allowed them)
and the physical timer (the domains' virtual timers and the scheduler's
deadlines multiplexed on it), the domain table, the credit scheduler, the
security module and the hypervisor's console.  What is per domain
(``Domain``, its ``DomainMonitor``) is its vCPUs with their saved state,
page tables and shadows, trap tables, callbacks, event channels, grant table
and P2M.

Every entry into the hypervisor comes through the real IDT of one of its
physical CPUs (``pcpus``: the machine's processors, ``--cpus N``) while some
domain's vCPU was on it (or the idle vCPU, when nothing could run): that
domain's monitor handles it (a hypercall, a fault to reflect, a page-table
store...), then that pCPU's scheduler decides which vCPU runs next there, and
the context switch (``switch``) saves the outgoing vCPU and loads the incoming.

A domain that breaks the rules is stopped alone (crashed, with a report in
the hypervisor's console); the machine stops only when Domain 0 does.
"""

from __future__ import annotations


from ringvisor.abi import (RV_MAX_VCPUS, VCPU_GUEST_CONTEXT, DomId, Errno, Shutdown,
                           Virq, pv_boot_context)
from ringvisor.errors import ConfigError
from ringvisor.hw.boot.multiboot import load_multiboot
from ringvisor.hw.faults import HAS_ERROR_CODE, TripleFault, UnsupportedFeature
from ringvisor.hw.machine import Machine, Stop
from ringvisor.vmm import layout as L
from ringvisor.vmm.frame import Frame
from ringvisor.vmm.errors import HypercallError
from ringvisor.vmm.region import build_region, pv_region
from ringvisor.vmm.platform import HypervisorTimer

from . import blkback, memory, pcpus, sched, stall, switch, vcpus
from .console import HypervisorConsole
from .domain import Domain, Runstate, State, Vcpu
from .evtchn import DomainEvents
from .frames import FrameAllocator, OutOfMemory
from .grant import GrantTable
from .btdomain import TC_PAGES, BtDomainMonitor
from .pvdomain import DomainMonitor, install_flat
from .stall import STALLED, Stalled
from .timers import DomainTimer
from .xsm import Denied, SecurityModule

SHADOW_PAGES = 512            # each domain's shadow page-table pool (Xen: shadow_op allocation)
ISA_IRQS = frozenset(range(16))


class PseudoPhysical:
    """A domain's pseudo-physical memory as the Multiboot loader writes it (``size``,
    ``write``): through its P2M, one frame at a time."""

    def __init__(self, mem, dom, size: int) -> None:
        self.mem, self.dom, self.size = mem, dom, size

    def write(self, addr: int, data: bytes) -> None:
        off = 0
        while off < len(data):
            a = addr + off
            n = min(len(data) - off, 0x1000 - (a & 0xFFF))
            self.mem.write((self.dom.p2m[a >> 12] << 12) | (a & 0xFFF), data[off:off + n])
            off += n


class Hypervisor:
    def __init__(self, mem_mb: int = 256, engine: str = "jit", output=None,
                 pace: bool = False, cpus: int = 1, cpu_hz: int = 100_000_000) -> None:
        self.machine = m = Machine(mem_mb, engine, cpu_hz, output=output, pace=pace, cpus=cpus)
        self.cpu, self.mem, self.clock = m.cpu, m.mem, m.clock
        self.ncpus = cpus
        self.pcpus = [pcpus.PCpu(i, c, smp=cpus > 1) for i, c in enumerate(m.cpus)]
        self.here = 0                           # the pCPU entering, or whose turn it is
        self.region_vcpu: Vcpu | None = None    # whose part of the region is installed
        self.region_saved: dict = {}            # vCPU -> the region its pCPU left (pcpus)
        self.base = self.mem.size - L.MONITOR_RAM
        if self.base < 16 << 20:
            raise ConfigError(f"{mem_mb} MiB is too little for the hypervisor and a domain")
        self.frames = FrameAllocator(self.mem, 0x100, self.base >> 12)
        self.domains: dict[int, Domain] = {}
        self.next_domid = 1
        self.caller: Domain | None = None       # Domain 0 while its toolstack calls
        self.console = HypervisorConsole()
        self.xsm = SecurityModule(self.printk)
        self.sched = sched.CreditScheduler(cpus)
        self.in_entry = False
        self.watch_stall = False                # run_until waits: stop if nothing can wake
        self.stalled_since: int | None = None   # ... since when nothing could (stall.watch)
        self.dying: list[Domain] = []
        self.blkbacks: dict = {}                # handle -> the in-hypervisor block back-ends
        self.next_blkback = 0                   # the last handle given out
        self.toolstack_wakeup = lambda: None    # set by the toolstack: events for it
        self.domain_changed = lambda: None      # ... and a domain stopped or went
        self.stats = {"entries": 0, "context_switches": 0, "idle_entries": 0, "kicks": 0,
                      "ipis": 0, "region_reloads": 0, "region_put_back": 0}
        build_region(self.mem, self.base)
        for c in m.cpus:
            c.native.bind(self.base + L.ENTRY, L.ENTRY_SIZE, self._entry, "hypervisor")
        for c in m.cpus[1:]:
            c.native.bind(pcpus.TRAMPOLINE, 0x1000, lambda cpu: pcpus.ap_start(self, cpu),
                          "hypervisor AP start-up")
        if m.smp is not None:
            m.smp.turn_hook = lambda cpu: pcpus.turn(self, cpu)
        pv_region(self.mem, self.base)
        install_flat(self.mem, self.base)
        self.kicker = HypervisorTimer(m, L.HV_TIMER)
        self.idle_pd = self.frames.alloc_xen(1)[0] << 12
        self.mem.write32(self.idle_pd + 1023 * 4, (self.base + L.MONITOR_PT) | 3)
        self.accounting()
        self.printk(f"ringvisor hypervisor: {self.mem.size >> 20} MiB machine, {cpus} "
                    f"CPU{'s' if cpus > 1 else ''}, {self.frames.total} frames for domains, "
                    "credit scheduler")

    # -- the pCPUs -----------------------------------------------------------------------
    @property
    def current(self) -> Vcpu | None:
        """The vCPU on the pCPU entering, or whose turn it is (None: idle)."""
        return self.pcpus[self.here].current

    def on_cpus(self, d: Domain) -> list[Vcpu]:
        """``d``'s vCPUs that are on a pCPU."""
        return [pc.current for pc in self.pcpus if pc.current is not None and pc.current.dom is d]

    def running(self, v: Vcpu) -> bool:
        return any(pc.current is v for pc in self.pcpus)

    def kick_domain(self, d: Domain) -> None:
        """Every pCPU that runs one of ``d``'s vCPUs enters the hypervisor."""
        for pc in self.pcpus:
            if pc.current is not None and pc.current.dom is d:
                self.kick(pc.index)

    def set_affinity(self, v: Vcpu, cpus) -> None:
        """xl vcpu-pin: ``v`` runs only on ``cpus`` from now on (ValueError: none is a pCPU)."""
        for p in self.sched.set_affinity(v, cpus):
            self.kick(p)

    # -- the console -------------------------------------------------------------------
    def printk(self, msg: str) -> None:
        self.console.write(f"(XEN) {msg}\n".encode())

    def guest_console(self, dom: Domain, data: bytes) -> None:
        """console_io from a guest: Domain 0's is the machine's console, a DomU's goes
        to the hypervisor's (as Xen's guest_console_write)."""
        if dom.privileged:
            self.machine.output(data)
            return
        dom.console += data
        # whole lines, each with the domain's tag (a line may come in several writes)
        while b"\n" in dom.console:
            line, _, rest = bytes(dom.console).partition(b"\n")
            dom.console = bytearray(rest)
            self.console.write(f"(d{dom.domid}) ".encode() + line[:1000] + b"\n")
        if len(dom.console) > 1000:
            self.console.write(f"(d{dom.domid}) ".encode() + bytes(dom.console[:1000]) + b"\n")
            dom.console.clear()

    # -- the domain table ----------------------------------------------------------------
    def lookup(self, which) -> Domain | None:
        if isinstance(which, Domain):
            return which if which.domid in self.domains else None
        return self.domains.get(which)

    def check(self, subject, target, cls: str, perm: str, log: bool = True) -> None:
        """The security module's check; a refusal is -EACCES for the caller."""
        if not log and not self.may(subject, target, cls, perm):
            raise HypercallError(Errno.EACCES)
        try:
            self.xsm.check(subject, target, cls, perm)
        except Denied:
            raise HypercallError(Errno.EACCES) from None

    def may(self, subject, target, cls: str, perm: str) -> bool:
        return self.xsm.allowed(subject.ssid, "xen_t" if target is None else target.ssid, cls, perm)

    def sid_of(self, type_: str) -> int:
        types = sorted(self.xsm.policy.types)
        return types.index(type_) + 1 if type_ in types else 0

    def type_of_sid(self, sid: int) -> str:
        types = sorted(self.xsm.policy.types)
        return types[sid - 1] if 1 <= sid <= len(types) else "domU_t"

    def create_domain(self, caller, domid: int = 0, *, ssid: str = "domU_t", uuid: bytes = b"",
                      kind: str = "pv", privileged: bool = False, name: str = "") -> Domain:
        """A new, paused, empty domain (domctl createdomain; Domain 0 at boot)."""
        if kind not in ("pv", "bt"):
            raise HypercallError(Errno.EOPNOTSUPP)
        if domid == 0 and self.domains:
            # the next id after the last one given, as Xen does (an id is not reused at once)
            domid = next(i for i in [*range(self.next_domid, DomId.FIRST_RESERVED),
                                     *range(1, self.next_domid)] if i not in self.domains)
        if domid in self.domains or domid >= DomId.FIRST_RESERVED:
            raise HypercallError(Errno.EEXIST)
        d = Domain(domid, name=name or f"d{domid}", privileged=privileged, ssid=ssid, kind=kind)
        if uuid.strip(b"\0"):
            d.uuid = uuid
        if caller is not None:
            self.check(caller, d, "domain", "create")
        if privileged:
            d.irqs, d.io_privileged = ISA_IRQS, True
        got: list[int] = []
        try:
            got += self.frames.alloc_xen(SHADOW_PAGES)
            got += self.frames.alloc_xen(3)
            if kind == "bt":
                got += self.frames.alloc_contiguous(DomId.XEN, TC_PAGES)
        except OutOfMemory:
            for mfn in got:
                self.frames.release(mfn)
            raise HypercallError(Errno.ENOMEM) from None
        pool, tc = got[:SHADOW_PAGES], got[SHADOW_PAGES + 3:]
        pages = dict(zip(("start_info", "shared_info", "boot_stack"),
                         (f << 12 for f in got[SHADOW_PAGES:SHADOW_PAGES + 3])))
        d.xen_frames = got
        self.domains[domid] = d
        self.next_domid = domid + 1
        d.events = DomainEvents(self, d, self.mem, pages["shared_info"])
        d.grants = GrantTable(self, d)
        v0 = d.vcpus[0]
        if kind == "bt":
            d.monitor = BtDomainMonitor(self, d, pages, pool, tc)
        else:
            v0.timer = self._vcpu_timer(v0)
            d.monitor = DomainMonitor(self, d, 0, "", pages, pool, v0.timer, d.events)
        self.sched.add(v0)
        self.printk(f"domain {domid} created ({ssid}{', binary translation' if kind == 'bt' else ''})")
        return d

    def build_dom0(self, image: bytes, cmdline: str, mem_mb: int, image_name: str,
                   max_vcpus: int = 1) -> Domain:
        """Domain 0, built by the hypervisor itself (Xen's construct_dom0): its memory, the
        kernel loaded as a Multiboot loader would, vCPU 0 at the entry point; of its
        ``max_vcpus`` (Xen's ``dom0_max_vcpus``) the kernel brings up the others."""
        from .interface import BUFFER_PAGES, WINDOW_GPFN
        if not 1 <= max_vcpus <= RV_MAX_VCPUS:
            raise ConfigError(f"Domain 0 may have 1 to {RV_MAX_VCPUS} vCPUs, not {max_vcpus}")
        d = self.create_domain(None, 0, ssid="dom0_t", privileged=True, name="Domain-0")
        vcpus.set_max_vcpus(self, d, max_vcpus)
        pages = mem_mb << 8
        d.nr_ram_pages = pages
        d.max_pages = pages + BUFFER_PAGES
        # its RAM, and the toolstack's buffers (Domain 0's user space: beyond what its
        # kernel is told it has)
        gpfns = list(range(pages)) + list(range(WINDOW_GPFN, WINDOW_GPFN + BUFFER_PAGES))
        if memory.populate(self, d, gpfns) != len(gpfns):
            raise ConfigError(f"no room for Domain 0's {mem_mb} MiB")
        info = load_multiboot(PseudoPhysical(self.mem, d, pages << 12), image, cmdline, [],
                              image_name)
        d.monitor.guest_ram = pages << 12
        d.monitor.cmdline = cmdline
        ctx = VCPU_GUEST_CONTEXT.unpack(VCPU_GUEST_CONTEXT.pack(
            pv_boot_context(info.entry, info.eax, info.ebx)))
        d.monitor.boot(ctx)
        vcpus.context_set(self, d.vcpus[0])
        # Domain 0's is the virtual PIC the machine's interrupts reach; the physical pair is
        # the hypervisor's, programmed to its vectors
        d.monitor.platform.take_over()
        self.unpause(d)
        return d

    def _vcpu_timer(self, v: Vcpu) -> DomainTimer:
        return DomainTimer(self.clock, lambda: self._timer_fired(v))

    # -- lifecycle --------------------------------------------------------------------------
    def on_cpu(self, d: Domain) -> bool:
        """One of ``d``'s vCPUs is on a pCPU."""
        return bool(self.on_cpus(d))

    def pause(self, d: Domain) -> None:
        d.paused += 1
        self.kick_domain(d)

    def unpause(self, d: Domain) -> None:
        d.paused = max(0, d.paused - 1)
        for v in d.vcpus:
            self.preempt_for(v)

    def shutdown(self, d: Domain, reason: int) -> None:
        if d.dead:
            return
        d.state, d.shutdown_reason = State.SHUTDOWN, int(reason)
        self._stopped(d, f"domain {d.domid} shut down ({Shutdown(reason).name})")

    def crash(self, d: Domain, report: str) -> None:
        if d.dead:
            return
        d.state, d.shutdown_reason, d.crash_report = State.CRASHED, int(Shutdown.crash), report
        self._stopped(d, f"domain {d.domid} crashed: {report}")

    def _stopped(self, d: Domain, msg: str) -> None:
        self.printk(msg)
        d.monitor.close()
        now = self.clock.now_ns()
        for v in d.vcpus:
            self.sched.stopped(v)                 # (no share of the next period's credit)
            if not self.running(v):
                v.set_runstate(v.off_cpu_runstate, now)    # (offline; else at the switch)
        if d.privileged:
            self.machine.stop = Stop("dom0", 0 if d.shutdown_reason == Shutdown.poweroff else 3,
                                     f"Domain 0 stopped the machine: {msg}")
            self.cpu.request_stop()
            return
        dom0 = self.domains.get(0)
        if dom0 is not None:
            dom0.events.raise_virq(Virq.DOM_EXC)
        self.kick_domain(d)
        self.domain_changed()

    def destroy(self, d: Domain) -> None:
        """Take the domain apart: every frame, port, grant and timer goes back."""
        if d.privileged:
            raise HypercallError(Errno.EINVAL)
        if d.state is not State.DYING:
            d.state = State.DYING
            d.monitor.close()
        if self.on_cpu(d):
            # it is on the CPU: it is taken apart once the CPU has left it
            if d not in self.dying:
                self.dying.append(d)
            self.kick_domain(d)
            return
        self.teardown(d)

    def teardown(self, d: Domain) -> None:
        blkback.release(self, d)
        d.events.close_all()
        d.grants.release_all()
        for v in d.vcpus:
            self.sched.remove(v)
        for other in self.domains.values():
            for gpfn, owner in list(other.foreign.items()):
                if owner == d.domid:
                    memory.clear_entry(self, other, gpfn)
        for gpfn in list(d.p2m):
            memory.clear_entry(self, d, gpfn)
        for mfn in d.xen_frames:
            self.frames.release(mfn)
        d.xen_frames = []
        del self.domains[d.domid]
        self.printk(f"domain {d.domid} destroyed")
        self.domain_changed()

    # -- events and timers -------------------------------------------------------------------
    def event_for(self, v: Vcpu, wake: bool = True) -> None:
        """Something is pending for vCPU ``v``: wake it, and take a pCPU for it if it
        should; if it is on a pCPU, that one enters the hypervisor to deliver it (Xen's
        vcpu_kick: the event-check IPI to another pCPU)."""
        if v.blocked:
            v.blocked = False
            if not self.running(v):
                v.set_runstate(Runstate.runnable, self.clock.now_ns())
            if wake:
                self.sched.wake(v)
        self.preempt_for(v)
        self.kick_domain_vcpu(v)

    def preempt_for(self, v: Vcpu) -> None:
        """``v`` may run: take the CPU for it if it should have it."""
        if v.runnable:
            for p in self.sched.tickle(v):
                self.kick(p)

    def device_interrupt(self, d: Domain) -> None:
        """A device of a bt domain raised its interrupt line: wake it, and if it is on the
        CPU, enter the hypervisor to deliver it (as a physical interrupt would)."""
        if d.dead:
            return
        self.event_for(d.vcpus[0])
        self.kick_domain(d)

    def toolstack_event(self) -> None:
        self.toolstack_wakeup()

    def _timer_fired(self, v: Vcpu) -> None:
        d = v.dom
        if d.events is not None and not d.dead:
            d.events.raise_virq(Virq.TIMER, v.vcpu_id)
            self.kick_domain_vcpu(v)     # to deliver it now: the guest may be in a loop

    def accounting(self) -> None:
        self.sched.account()
        self._acct = self.clock.schedule(self.clock.cycles() + self.clock.ns_to_cycles(sched.ACCT_NS),
                                         self.accounting)
        if sum(1 for v in self.sched.domains.values() if self.sched.eligible(v)) > 1:
            for pc in self.pcpus:         # priorities may have changed
                if pc.online:
                    self.kick(pc.index)

    def kick_domain_vcpu(self, v: Vcpu) -> None:
        """The pCPU ``v`` is on (if it is on one) enters the hypervisor."""
        for pc in self.pcpus:
            if pc.current is v:
                self.kick(pc.index)

    def kick(self, p: int | None = None) -> None:
        """Make pCPU ``p`` (by default the one entering, or whose turn it is) enter the
        hypervisor at its next instruction: the boot processor through its own timer line,
        an AP by an IPI (``pcpus``)."""
        p = self.here if p is None else p
        if self.in_entry and p == self.here:
            return
        self.stats["kicks"] += 1
        if p == 0:
            self.kicker.arm(self.clock.now_ns())
        elif self.pcpus[p].online:
            self.stats["ipis"] += 1
            pcpus.kick_ap(self, self.pcpus[p])

    def yield_cpu(self, d: Domain) -> None:
        """SCHEDOP_yield from the running vCPU: its slice ends (it goes behind its equals)."""
        self.pcpus[self.here].slice_end = 0

    def external(self, vector: int) -> bool:
        """A physical interrupt (to the domain that bound it) or the hypervisor's timer."""
        if L.PIC_BASE <= vector < L.PIC_BASE + 16:
            dom0 = self.domains.get(0)
            if dom0 is not None and not dom0.dead:
                m = dom0.monitor
                m.platform.physical_irq(vector)     # an edge on its virtual PIC ...
                m.take_pirqs()                      # ... an event, if its PIC lets it through
            return True
        if vector == L.HV_TIMER and self.here:
            pcpus.ack(self.pcpus[self.here])        # an AP's kick: its IPI is done
        return vector == L.HV_TIMER

    # -- counters ----------------------------------------------------------------------------
    def domain_counters(self) -> dict[int, dict[str, int]]:
        """Each domain's own counts, from its monitor: traps into the hypervisor, a bt
        domain's callouts and translations, a PV domain's hypercalls, CPU time."""
        out = {}
        for d in self.domains.values():
            m = d.monitor
            bt = d.kind == "bt"
            out[d.domid] = {"traps": sum(m.traps.values()),
                            "callouts": sum(m.emulated.values()) if bt else 0,
                            "translations": m.tc.stats["translations"] if bt else 0,
                            "tc_bytes": m.tc.stats["tc_bytes"] if bt else 0,
                            "hypercalls": 0 if bt else sum(m.hypercalls.values()),
                            "cpu_time_ns": d.cpu_time_ns}
        return out

    # -- memory ----------------------------------------------------------------------------
    def forget_mappings(self, d: Domain) -> None:
        """``d``'s physmap changed under existing mappings: its shadows start again."""
        if d.monitor is not None:
            d.monitor.physmap_changed()

    def guest_memory_written(self, ma: int, n: int) -> None:
        """The hypervisor wrote machine memory for a guest (a grant copy): any shadow
        built from those bytes goes."""
        for d in self.domains.values():
            if d.monitor is not None:
                d.monitor.guest_written(ma, n)

    # -- entries and the context switch ----------------------------------------------------
    def _entry(self, cpu) -> None:
        self.in_entry = True
        self.stats["entries"] += 1
        if self.ncpus > 1:
            self.here = self.machine.cpus.index(cpu)
        try:
            self._charge()
            d = self.current.dom if self.current is not None else None
            if d is None:
                f = self._idle_entry(cpu)
            else:
                try:
                    f = d.monitor.handle(cpu)
                except (UnsupportedFeature, TripleFault) as e:
                    f = d.monitor.frame
                    self.crash(d, str(e))
            self._schedule(f)
            if self.watch_stall:
                stall.watch(self)
        finally:
            self.in_entry = False

    def _idle_entry(self, cpu) -> Frame:
        vector = (cpu.state.eip - (L.MLIN + L.ENTRY)) // 8
        f = Frame(cpu, self.base, vector in HAS_ERROR_CODE)
        self.stats["idle_entries"] += 1
        if not self.external(vector):
            raise TripleFault(f"hypervisor: vector {vector:#x} while idle")
        return f

    def _charge(self) -> None:
        """The current vCPU ran since the last entry (unless it was halted, blocked): the
        pCPU's own time (``pcpus``)."""
        pc = self.pcpus[self.here]
        now = pc.now_ns(self.clock)
        v = pc.current
        if v is not None and not v.blocked and v.dom.state is State.RUNNABLE:
            ns = now - pc.last_ns
            v.cpu_time_ns += ns
            v.dom.cpu_time_ns += ns
            self.sched.charge(v, ns)
        pc.last_ns = now

    def _schedule(self, f: Frame) -> None:
        pc = self.pcpus[self.here]
        cur = pc.current
        now = pc.now_ns(self.clock)
        if cur is not None and not cur.dom.dead and cur.dom.monitor.halting:
            cur.blocked = True
        if cur is not None and cur.dom.monitor.step is not None and cur.online and \
                not cur.blocked and cur.dom.state is State.RUNNABLE:
            nxt = cur       # a single-stepped instruction is finished, even if just paused
        else:
            expired = now >= pc.slice_end
            if cur is not None and (expired or not cur.runnable or
                                    self.sched.cpu_of(cur) != self.here):
                self.sched.descheduled(cur, expired)
            nxt = self.sched.pick(cur, expired, self.here)
        if nxt is None:
            if cur is not None and cur.blocked and cur.online and cur.dom.state is State.RUNNABLE \
                    and not cur.dom.paused and cur.dom not in self.dying \
                    and self.sched.cpu_of(cur) == self.here:
                cur.dom.monitor.halting = True    # wait in its context for the next interrupt
                self.sched.running[self.here] = cur     # (still this pCPU's: not stolen)
                switch.set_runstate(self, cur, Runstate.blocked)   # (for Xen, a switch to idle)
                cur.dom.monitor.resume(f)
                return
            switch.switch(self, cur, None, f)
            if cur is not None and cur.runnable:
                self.preempt_for(cur)   # (left for another pCPU's queue, by a pin: it must look)
            return
        if nxt is not cur:
            switch.switch(self, cur, nxt, f)
            if cur is not None and cur.runnable:
                self.preempt_for(cur)         # (queued again: an idle pCPU may steal it)
            return
        switch.set_runstate(self, cur, Runstate.running)     # (back from waiting in its context)
        if now >= pc.slice_end:
            switch.arm_slice(self, now)
        elif self.ncpus > 1:
            switch.arm_slice(self, now, pc.slice_end)    # (its own time runs slower than the clock)
        cur.dom.monitor.resume(f)

    # -- running -----------------------------------------------------------------------------
    def start(self) -> None:
        """Put the CPU in the hypervisor's hands and enter the first domain to run; the
        APs are started (``pcpus``) and enter their schedulers when their turn comes."""
        self.here = 0
        f = pcpus.take_cpu(self, self.cpu)
        if self.ncpus > 1:
            pcpus.start_aps(self)
        switch.switch(self, None, self.sched.pick(None, True, 0), f)

    def run(self, max_instructions: int | None = None) -> Stop:
        return self.machine.run(max_instructions)

    def run_until(self, done, budget: int, step: int = 500_000, ns: int | None = None) -> bool:
        """Run until ``done()`` is true (checked every ``step`` instructions) or ``budget``
        instructions (or ``ns`` of virtual time) have run; whether it became true.  The
        machine stopping for another reason (Domain 0 stopped it) ends the wait too.
        Without ``ns``, a domain set that nothing can ever wake raises :class:`Stalled`
        (idle pCPUs retire almost nothing: the budget would take for ever to run out)."""
        spent = 0
        end = None if ns is None else self.clock.now_ns() + ns
        self.watch_stall, self.stalled_since = end is None, None
        try:
            return self._run_until(done, budget, step, end, spent)
        finally:
            self.watch_stall = False

    def _run_until(self, done, budget, step, end, spent) -> bool:
        while not done():
            if spent >= budget or (end is not None and self.clock.now_ns() >= end):
                return False
            if end is not None:
                step = min(step, max(1000, self.clock.ns_to_cycles(end - self.clock.now_ns())))
            stop = self.machine.run(min(step, budget - spent))
            spent += step
            if stop.reason == "paused" and self.machine.pause_reason == STALLED:
                if done():
                    return True
                raise Stalled("every domain is blocked with nothing pending (no timer, event "
                              "or input can wake a vCPU): nothing more will happen")
            if stop.reason != "limit":
                return done()
            self.machine.stop = None
        return True
