"""A domain: one guest of the hypervisor, and everything that is its own.

Xen's ``struct domain``: an id, a name and UUID (the toolstack's), a
lifecycle state, memory (its P2M: pseudo-physical frame -> machine frame,
with ``max_pages`` as the ceiling a balloon may reach), its virtual CPU and
what it left in the real processor when it was last descheduled
(:class:`VcpuContext`), event channels, a grant table, scheduler
parameters, its security label, and the monitor that runs it (``pv``: the
para-virtual one; ``bt``: binary translation).

The states are xl's: ``r`` running, ``b`` blocked, ``p`` paused, ``s`` shut
down, ``c`` crashed, ``d`` dying.
"""

from __future__ import annotations

import uuid as _uuid
from dataclasses import dataclass, field
from enum import Enum


class State(Enum):
    RUNNABLE = "runnable"      # ready or running (xl: r, or - while waiting for the CPU)
    BLOCKED = "blocked"        # waiting for an event (b)
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


@dataclass
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
    ctx: VcpuContext = field(default_factory=VcpuContext)
    started: bool = False             # a vCPU context was set: it can run
    cpu_time_ns: int = 0
    weight: int = 256
    cap: int = 0
    monitor: object = None            # the per-domain monitor (hypervisor.pvdomain)
    events: object = None             # its event channels (hypervisor.evtchn)
    grants: object = None             # its grant table (hypervisor.grant)
    console: bytearray = field(default_factory=bytearray)   # console_io output (DomU: dmesg)
    irqs: frozenset = frozenset()     # physical IRQs it may bind
    io_privileged: bool = False

    @property
    def tot_pages(self) -> int:
        """Frames it owns (its memory; mapped foreign frames are not counted)."""
        return len(self.p2m) - len(self.foreign)

    @property
    def dead(self) -> bool:
        return self.state in (State.SHUTDOWN, State.CRASHED, State.DYING)

    @property
    def runnable(self) -> bool:
        return self.state is State.RUNNABLE and not self.paused and self.started

    def letter(self, running: bool) -> str:
        """The state column of ``xl list``: six positions, one letter set."""
        flags = ["-"] * 6
        if running:
            flags[0] = "r"
        if self.state is State.BLOCKED:
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
