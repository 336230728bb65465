"""A domain: one guest of the hypervisor, and everything that is its own.

Xen's ``struct domain``: an id, a name and UUID (the toolstack's), a
lifecycle state, memory (its P2M: pseudo-physical frame -> machine frame,
with ``max_pages`` as the ceiling a balloon may reach), its virtual CPUs
(:class:`Vcpu`, Xen's ``struct vcpu``: up to ``max_vcpus``, each with what
it left in the real processor when it was last descheduled,
:class:`VcpuContext`), event channels, a grant table, scheduler
parameters, its security label, and the monitor that runs it (``pv``: the
para-virtual one; ``bt``: binary translation).

The states are xl's: ``r`` running, ``b`` blocked, ``p`` paused, ``s`` shut
down, ``c`` crashed, ``d`` dying.  Running and blocked are the vCPUs'
(Xen's ``getdomaininfo``: running if one of them is on the CPU, blocked if
every online one waits for an event); the others are the domain's.
"""

from __future__ import annotations

import uuid as _uuid
from dataclasses import dataclass, field
from enum import Enum

from ringvisor.abi import Runstate


class State(Enum):
    RUNNABLE = "runnable"      # alive: its vCPUs run, wait for the CPU or block (r, b, -)
    SHUTDOWN = "shutdown"      # shut down with a reason (s)
    CRASHED = "crashed"        # the hypervisor stopped it, or it said so (c)
    DYING = "dying"            # being destroyed (d)


@dataclass
class VcpuContext:
    """The real processor state of a descheduled vCPU (what Xen's context switch saves).

    ``regs`` holds the guest's general registers (``regs[4]`` its ESP), the rest the
    interrupt frame the hardware pushed on entry and the data segment selectors; the
    monitor's own per-vCPU state (virtual CPU, shadow root) stays in the monitor."""

    regs: list[int] = field(default_factory=lambda: [0] * 8)
    eip: int = 0
    cs: int = 0
    eflags: int = 0x202
    ss: int = 0
    sregs: dict[int, int] = field(default_factory=dict)    # ES/DS/FS/GS index -> selector
    extra: dict = field(default_factory=dict)               # other per-CPU state (debug registers)


@dataclass(eq=False)
class Vcpu:
    """One virtual CPU of a domain (Xen's ``struct vcpu``): what the scheduler runs.

    vCPU 0 comes up when its context is set (``setvcpucontext`` with VGCF_online, as
    Xen's ``arch_set_info_guest``); the others are initialised and brought up by the
    guest (``VCPUOP_initialise``, ``VCPUOP_up``).  ``slot`` holds the monitor's
    per-vCPU state (virtual CPU, trap table, callbacks, GDT, kernel stack, timers)
    while another vCPU of the domain is loaded in the monitor (``pvdomain``)."""

    dom: "Domain"
    vcpu_id: int
    initialised: bool = False         # it was given a context
    online: bool = False              # not VPF_down: it may run
    blocked: bool = False             # waiting for an event (SCHEDOP_block, a halt)
    ctx: VcpuContext = field(default_factory=VcpuContext)
    cpu_time_ns: int = 0
    slot: dict | None = None
    timer: object = None              # its one-shot and periodic timers (timers.DomainTimer)
    runstate: int = Runstate.offline
    state_entry_ns: int = 0
    runstate_ns: list[int] = field(default_factory=lambda: [0, 0, 0, 0])
    # where the guest asked for its vcpu_info and runstate (hypervisor/vcpuinfo.py)
    vcpu_info_at: tuple[int, int] | None = None    # (gpfn, offset) it registered
    vcpu_info_ma: int | None = None                # ... as a machine address
    runstate_va: int = 0                           # its runstate area (0: none)

    key: tuple = ()                   # (domid, vcpu_id): the scheduler's name for it

    def __post_init__(self) -> None:
        self.key = (self.dom.domid, self.vcpu_id)

    # what the credit scheduler asks of what it schedules (sched.py)

    @property
    def domid(self) -> int:
        return self.dom.domid

    @property
    def weight(self) -> int:
        return self.dom.weight

    @property
    def cap(self) -> int:
        return self.dom.cap

    @property
    def runnable(self) -> bool:
        d = self.dom
        return self.online and not self.blocked and d.state is State.RUNNABLE and not d.paused

    @property
    def off_cpu_runstate(self) -> int:
        """Its runstate while no pCPU runs it: offline while it is down or its domain has
        stopped (Xen's domain_shutdown pauses every vCPU, and vcpu_sleep takes a queued
        one offline), blocked while it waits for an event, else runnable."""
        if not self.online or self.dom.dead:
            return Runstate.offline
        return Runstate.blocked if self.blocked else Runstate.runnable

    def set_runstate(self, state: int, now_ns: int) -> None:
        """Enter ``state`` at ``now_ns`` (Xen's vcpu_runstate_change): the time spent in
        the old one is added to its total."""
        if state == self.runstate:
            return
        self.runstate_ns[self.runstate] += max(0, now_ns - self.state_entry_ns)
        self.runstate, self.state_entry_ns = int(state), now_ns


@dataclass(eq=False)
class Domain:
    domid: int
    name: str = ""
    uuid: bytes = field(default_factory=lambda: _uuid.uuid4().bytes)
    privileged: bool = False
    kind: str = "pv"                  # pv or bt
    state: State = State.RUNNABLE
    paused: int = 1                   # pause count: created paused (Xen: domctl unpause starts it)
    shutdown_reason: int | None = None
    crash_report: str = ""
    ssid: str = "domU_t"              # the security label's type
    p2m: dict[int, int] = field(default_factory=dict)      # gpfn -> mfn
    rev: dict[int, int] = field(default_factory=dict)      # mfn -> gpfn (this physmap's inverse)
    foreign: dict[int, int] = field(default_factory=dict)  # gpfn -> owner of a frame not its own
    max_pages: int = 0
    max_vcpus: int = 1
    nr_ram_pages: int = 0             # what the guest was booted with (start_info.nr_pages)
    xen_frames: list[int] = field(default_factory=list)   # the hypervisor's frames for it
    vcpus: list[Vcpu] = field(default_factory=list)       # (vCPU 0 from the start)
    cpu_time_ns: int = 0              # its vCPUs' time, summed
    weight: int = 256
    cap: int = 0
    monitor: object = None            # the per-domain monitor (hypervisor.pvdomain)
    events: object = None             # its event channels (hypervisor.evtchn)
    grants: object = None             # its grant table (hypervisor.grant)
    console: bytearray = field(default_factory=bytearray)   # console_io output (DomU: dmesg)
    irqs: frozenset = frozenset()     # physical IRQs it may bind
    io_privileged: bool = False

    def __post_init__(self) -> None:
        if not self.vcpus:
            self.vcpus = [Vcpu(self, 0)]

    @property
    def ctx(self) -> VcpuContext:
        """vCPU 0's saved state (a bt domain has no other)."""
        return self.vcpus[0].ctx

    @ctx.setter
    def ctx(self, value: VcpuContext) -> None:
        self.vcpus[0].ctx = value

    @property
    def started(self) -> bool:
        """vCPU 0 was given a context: the domain can run."""
        return self.vcpus[0].initialised

    @property
    def online_vcpus(self) -> list[Vcpu]:
        return [v for v in self.vcpus if v.online]

    @property
    def blocked(self) -> bool:
        """Every online vCPU waits for an event (and one is online)."""
        on = self.online_vcpus
        return bool(on) and all(v.blocked for v in on) and self.state is State.RUNNABLE

    @property
    def tot_pages(self) -> int:
        """Frames it owns (its memory; mapped foreign frames are not counted)."""
        return len(self.p2m) - len(self.foreign)

    @property
    def dead(self) -> bool:
        return self.state in (State.SHUTDOWN, State.CRASHED, State.DYING)

    @property
    def runnable(self) -> bool:
        """One of its vCPUs could run."""
        return any(v.runnable for v in self.vcpus)

    def letter(self, running: bool) -> str:
        """The state column of ``xl list``: six positions, one letter set."""
        flags = ["-"] * 6
        if running:
            flags[0] = "r"
        if self.blocked:
            flags[1] = "b"
        if self.paused and not self.dead:
            flags[2] = "p"
        if self.state is State.SHUTDOWN:
            flags[3] = "s"
        if self.state is State.CRASHED:
            flags[4] = "c"
        if self.state is State.DYING:
            flags[5] = "d"
        return "".join(flags)
