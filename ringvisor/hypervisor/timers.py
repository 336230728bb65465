"""Virtual timers of the domains, on the one physical timer of the hypervisor.

Each vCPU has a one-shot timer (``set_timer_op``, ``VCPUOP_set_singleshot_timer``)
and a periodic one (``VCPUOP_set_periodic_timer``); both raise ``VIRQ_TIMER``
on the domain's event channel, whether or not it is running.  The deadlines
are the virtual clock's own events; when one fires while the CPU is in some
guest, the hypervisor's timer interrupt (``HypervisorTimer``, vector
``HV_TIMER``) is raised so the hypervisor runs at once: to deliver the event
to the running domain or to reschedule for a woken one.
"""

from __future__ import annotations


class DomainTimer:
    """A vCPU's one-shot and periodic timers (the ``arm``/``cancel`` ParaVirt expects)."""

    def __init__(self, clock, fire) -> None:
        self.clock = clock
        self.fire = fire                     # called when a deadline passes
        self.handle = None
        self.periodic = None
        self.period_ns = 0

    def arm(self, at_ns: int) -> None:
        """The one-shot at virtual time ``at_ns`` (at once if it has passed)."""
        self.cancel()
        at = max(self.clock.ns_to_cycles(at_ns), self.clock.cycles())
        self.handle = self.clock.schedule(at, self._one_shot)

    def cancel(self) -> None:
        if self.handle is not None:
            self.clock.cancel(self.handle)
            self.handle = None

    def _one_shot(self) -> None:
        self.handle = None
        self.fire()

    def set_periodic(self, period_ns: int) -> None:
        """A ``VIRQ_TIMER`` every ``period_ns`` (0 stops it)."""
        self.stop_periodic()
        self.period_ns = period_ns
        if period_ns:
            self._next = self.clock.cycles() + self.clock.ns_to_cycles(period_ns)
            self.periodic = self.clock.schedule(self._next, self._tick)

    def stop_periodic(self) -> None:
        if self.periodic is not None:
            self.clock.cancel(self.periodic)
            self.periodic = None
        self.period_ns = 0

    def _tick(self) -> None:
        # from the deadline scheduled, not from now: the period does not drift
        self._next += self.clock.ns_to_cycles(self.period_ns)
        self.periodic = self.clock.schedule(self._next, self._tick)
        self.fire()

    # -- state (hypervisor/domsave.py): deadlines as time left, for a clock elsewhere --------
    def get_state(self) -> dict:
        now = self.clock.cycles()
        one = self.handle
        return {"one_shot_in": max(one.cycle - now, 0) if one is not None and one.pending else -1,
                "period_ns": self.period_ns,
                "periodic_in": max(self._next - now, 0) if self.periodic is not None else -1}

    def set_state(self, state: dict) -> None:
        self.close()
        now = self.clock.cycles()
        if state["one_shot_in"] >= 0:
            self.handle = self.clock.schedule(now + int(state["one_shot_in"]), self._one_shot)
        if state["periodic_in"] >= 0 and state["period_ns"] > 0:
            self.period_ns = int(state["period_ns"])
            self._next = now + int(state["periodic_in"])
            self.periodic = self.clock.schedule(self._next, self._tick)

    def close(self) -> None:
        self.cancel()
        self.stop_periodic()
