"""Virtual time, derived from the number of instructions the CPU has retired.

One retired instruction is one cycle of a ``cpu_hz`` clock (100 MHz by
default), so a run is a pure function of its inputs: the same guest with the
same input sees the same timer interrupts at the same instructions.

The contract between the clock, the CPU and the machine loop
-------------------------------------------------------------

``cycles() == icount() + offset``

* ``attach(icount)`` hands the clock the CPU's retired-instruction counter.
  Attaching never makes time jump: ``offset`` is adjusted so ``cycles()`` goes
  on from where it was (a fresh clock starts at cycle 0).
* While the CPU runs, time advances with its counter.  The machine runs the
  CPU until ``next_deadline()`` (or a little past it: a basic block may
  overshoot) and then calls ``run_due()``, which fires every timer whose cycle
  is <= ``cycles()``, in order of (cycle, scheduling order).
* While the CPU is halted (HLT with interrupts enabled) no instruction
  retires, so nothing would ever happen.  The machine then calls
  ``skip_to(next_deadline())``: the cycles the CPU would have idled are added
  to ``offset`` and ``cycles()`` becomes exactly that deadline; the CPU's
  counter is untouched.  ``advance_to(cycle)`` is ``skip_to`` followed by
  ``run_due``.  Skipping backwards is a no-op: time never goes back.
* Timer callbacks run with ``cycles()`` >= their deadline.  A device that
  needs the exact deadline (the PIT does, so its period does not drift)
  remembers the cycle it scheduled for.

``now_ns() == cycles() * 10**9 // cpu_hz`` (integer arithmetic, no floats).

Save/restore: ``get_state()`` records ``cycles()``; ``set_state()`` sets
``offset`` so that ``cycles()`` equals it again under whatever counter is
attached -- restore the CPU's counter first, then the clock, then the devices
(which reschedule their own timers; timers are derived state).

Wall-clock pacing (``pacing = True``): the emulated CPU is far slower than
100 MHz, so virtual time normally lags wall time and pacing does nothing --
except while the guest is halted, when skipping ahead would let virtual time
race past the wall clock.  ``pace()`` sleeps until wall time has caught up
with virtual time; ``run_due()`` calls it when pacing is on.
"""

from __future__ import annotations

import heapq
import itertools
import time
from typing import Callable

NS_PER_S = 1_000_000_000
# The time-stamp counter runs at a nominal 3.2 GHz, 32 ticks per cycle of the 100 MHz
# instruction clock: a real TSC runs at the processor's nominal rate whatever the
# instructions retire (SDM Vol. 3 §17.17), as QEMU's does under TCG (the host's TSC rate,
# a few GHz); 3.2 GHz is a common nominal rate (the Pentium 4 of Adams and Agesen's
# measurements, vmbench's), and a tick is exactly 5/16 ns, so para-virtual time scales
# exactly (tsc_shift -1).  A kernel that calibrates it against the PIT finds 3.2 GHz.  At
# one tick per instruction, a test that loops until 2^30 ticks have passed (the
# kvm-unit-tests vmexit benchmarks) needed 2^31 instructions, half an hour here; at 32,
# 2^26.  (It ran at 1.6 GHz for a while: at 3.2 GHz a pinned two-vCPU Xen domain stalled,
# whose cause was the hypervisor's pCPUs sharing one ring-0 stack -- docs/xen.md.)
TSC_PER_CYCLE = 32


class TimerHandle:
    """A scheduled callback; pass it to :meth:`VirtualClock.cancel`."""

    __slots__ = ("cycle", "seq", "callback")

    def __init__(self, cycle: int, seq: int, callback: Callable[[], None] | None) -> None:
        self.cycle = cycle
        self.seq = seq
        self.callback = callback

    def __lt__(self, other: "TimerHandle") -> bool:
        return (self.cycle, self.seq) < (other.cycle, other.seq)

    @property
    def pending(self) -> bool:
        return self.callback is not None


class VirtualClock:
    """Cycle counter, timers on it, and optional pacing against the wall clock."""

    def __init__(self, cpu_hz: int = 100_000_000, pace: bool = False) -> None:
        if cpu_hz <= 0:
            raise ValueError("cpu_hz must be positive")
        self.cpu_hz = cpu_hz
        self._icount: Callable[[], int] = lambda: 0
        self.offset = 0  # cycles skipped while halted (and attach/restore shifts)
        self._heap: list[TimerHandle] = []
        # told of each new timer's cycle, so a CPU running towards a later bound can stop
        # in time (the machine sets it)
        self.on_schedule: Callable[[int], None] | None = None
        self._seq = itertools.count()
        self._pacing = False
        self._wall_anchor = 0
        self._virt_anchor = 0
        self.pacing = pace

    # -- time --------------------------------------------------------------
    def attach(self, icount: Callable[[], int]) -> None:
        now = self.cycles()
        self._icount = icount
        self.offset = now - icount()

    def cycles(self) -> int:
        return self._icount() + self.offset

    @property
    def tsc_hz(self) -> int:
        """The time-stamp counter's rate."""
        return self.cpu_hz * TSC_PER_CYCLE

    def now_ns(self) -> int:
        return self.cycles() * NS_PER_S // self.cpu_hz

    def ns_to_cycles(self, ns: int) -> int:
        """Cycles in ``ns`` nanoseconds, rounded up (a deadline is never early)."""
        return -(-ns * self.cpu_hz // NS_PER_S)

    def skip_to(self, cycle: int) -> None:
        """Jump time forward to ``cycle`` without the CPU retiring anything."""
        now = self.cycles()
        if cycle > now:
            self.offset += cycle - now

    def advance_to(self, cycle: int) -> None:
        """``skip_to(cycle)`` then fire whatever became due."""
        self.skip_to(cycle)
        self.run_due()

    # -- timers ------------------------------------------------------------
    def schedule(self, at_cycle: int, callback: Callable[[], None]) -> TimerHandle:
        handle = TimerHandle(at_cycle, next(self._seq), callback)
        heapq.heappush(self._heap, handle)
        if self.on_schedule is not None:
            self.on_schedule(at_cycle)
        return handle

    def cancel(self, handle: TimerHandle | None) -> None:
        if handle is not None:
            handle.callback = None  # dropped lazily when it reaches the top

    def pending(self) -> list[Callable[[], None]]:
        """The callbacks still scheduled, in no order (what could yet happen)."""
        return [h.callback for h in self._heap if h.callback is not None]

    def next_deadline(self) -> int | None:
        heap = self._heap
        while heap and heap[0].callback is None:
            heapq.heappop(heap)
        return heap[0].cycle if heap else None

    def run_due(self) -> int:
        """Fire every timer due by now, in order; returns how many fired."""
        if self._pacing:
            self.pace()
        fired = 0
        heap = self._heap
        while heap:
            top = heap[0]
            if top.callback is None:
                heapq.heappop(heap)
                continue
            if top.cycle > self.cycles():
                break
            heapq.heappop(heap)
            cb, top.callback = top.callback, None
            cb()
            fired += 1
        return fired

    # -- pacing ------------------------------------------------------------
    @property
    def pacing(self) -> bool:
        return self._pacing

    @pacing.setter
    def pacing(self, on: bool) -> None:
        self._pacing = bool(on)
        self._wall_anchor = time.monotonic_ns()
        self._virt_anchor = self.now_ns()

    def wall_delay(self, cycle: int) -> float:
        """Wall seconds until virtual ``cycle`` is due (0.0 when not pacing)."""
        if not self._pacing:
            return 0.0
        virt = cycle * NS_PER_S // self.cpu_hz - self._virt_anchor
        wall = time.monotonic_ns() - self._wall_anchor
        return max(0.0, (virt - wall) / NS_PER_S)

    def pace(self) -> None:
        """Sleep until the wall clock has caught up with virtual time."""
        if self._pacing:
            delay = self.wall_delay(self.cycles())
            if delay > 0:
                time.sleep(delay)

    # -- state -------------------------------------------------------------
    state_name = "clock"
    state_version = 1

    def get_state(self) -> dict:
        return {"cpu_hz": self.cpu_hz, "cycles": self.cycles()}

    def set_state(self, state: dict) -> None:
        self.cpu_hz = int(state["cpu_hz"])
        self.offset = int(state["cycles"]) - self._icount()
        self.pacing = self._pacing  # re-anchor wall time
