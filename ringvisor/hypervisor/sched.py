"""Xen's credit scheduler (credit1) on the one physical CPU.

What it schedules are virtual CPUs (``domain.Vcpu``: anything with a ``key``,
its domain's ``domid``, ``weight`` and ``cap``, and ``runnable``).  Each
domain has a *weight* (default 256) and an optional *cap* (percent of one
CPU, 0 = none), which its vCPUs share as in Xen's ``csched_acct``: every
accounting period (30 ms of virtual time) the period's CPU time is handed
out as credit to the active vCPUs, a domain's share in proportion to its
weight times its number of active vCPUs (``weight_total += weight *
active_vcpu_count``), split evenly among them -- so each active vCPU earns
in proportion to its domain's weight -- and a domain's cap is divided among
its active vCPUs (``credit_cap / active_vcpu_count``); running consumes
credit, nanosecond for nanosecond.  Priorities follow:

- BOOST: a domain that wakes from blocking while it still has credit runs
  before the others (I/O-bound domains get low latency) until it is next
  descheduled;
- UNDER: credit left; OVER: credit spent.  The highest priority runs,
  round-robin within a priority, for a 30 ms time slice; a domain that leaves
  the CPU still runnable (its slice ended, or it was preempted) goes behind
  the others of its priority;
- a capped domain that has spent its credit is *parked*: not runnable until
  the next period gives it more, so it never takes more than its cap.

Blocked vCPUs consume nothing and earn nothing (they are not active).  (The
docstrings below say "domain" for what is scheduled: a vCPU.)
Credit is bounded by one time slice either way, as Xen's is, so a domain
cannot bank an idle spell.  (Xen's csched_acct, csched_vcpu_wake,
csched_schedule.)
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

TSLICE_NS = 30_000_000
ACCT_NS = 30_000_000
DEFAULT_WEIGHT = 256
MIN_SLICE_NS = 1_000_000        # no shorter slice than this (a domain with a crumb of credit)
MAX_WEIGHT = 65535


class Prio(IntEnum):
    BOOST = 0
    UNDER = 1
    OVER = 2


@dataclass
class Credit:
    credit: int = 0
    boost: bool = False
    parked: bool = False
    used: int = 0                  # ns run in this accounting period
    given: int = 0                 # credit given in this accounting (the cap's limit)
    order: int = 0                 # round-robin position (lower runs first)


class CreditScheduler:
    def __init__(self) -> None:
        self.info: dict[int, Credit] = {}
        self.domains: dict[int, object] = {}
        self._order = 0
        self.stats = {"accountings": 0, "switches": 0, "boosts": 0, "parks": 0}

    def _next_order(self) -> int:
        self._order += 1
        return self._order

    # -- membership -------------------------------------------------------------------
    def add(self, dom) -> None:
        self.domains[dom.key] = dom
        self.info[dom.key] = Credit(order=self._next_order())

    def remove(self, dom) -> None:
        self.domains.pop(dom.key, None)
        self.info.pop(dom.key, None)

    # -- time -------------------------------------------------------------------------
    def charge(self, dom, ns: int) -> None:
        """``dom`` ran for ``ns``."""
        c = self.info.get(dom.key)
        if c is None or ns <= 0:
            return
        c.credit = max(c.credit - ns, -TSLICE_NS)
        c.used += ns
        if dom.cap and c.credit < 0 and not c.parked:
            c.parked = True
            self.stats["parks"] += 1

    def account(self) -> None:
        """The period's credit, shared by weight among the active domains.

        What a domain cannot take -- it would pass the upper bound (it did not use what
        it had: an idle Domain 0), or its cap -- goes to the others, by weight, as
        Xen's csched_acct redistributes the credit of vCPUs it marks inactive; else
        the busy domains would all end up OVER and share the CPU equally."""
        self.stats["accountings"] += 1
        active = [d for d in self.domains.values()
                  if d.runnable or self.info[d.key].used]
        per_domain: dict[int, int] = {}       # domid -> its active vCPUs
        for d in active:
            per_domain[d.domid] = per_domain.get(d.domid, 0) + 1
        pool = ACCT_NS
        open_ = list(active)
        while open_ and pool > 0:
            total = sum(d.weight for d in open_)
            full = []
            for d in open_:
                c = self.info[d.key]
                room = TSLICE_NS - c.credit
                if d.cap:
                    # the domain's cap, shared by its active vCPUs
                    room = min(room, ACCT_NS * d.cap // 100 // per_domain[d.domid] - c.given)
                share = pool * d.weight // total
                if share >= room:
                    full.append((d, max(room, 0)))
            if not full:
                for d in open_:
                    c = self.info[d.key]
                    share = pool * d.weight // total
                    c.credit += share
                    c.given += share
                break
            for d, room in full:
                c = self.info[d.key]
                c.credit += room
                c.given += room
                pool -= room
                open_.remove(d)
        for d in active:
            c = self.info[d.key]
            c.used = c.given = 0
            if c.parked and c.credit > 0:
                c.parked = False

    # -- events -----------------------------------------------------------------------
    def wake(self, dom) -> None:
        """``dom`` was blocked and has an event: boost it if it has credit left."""
        c = self.info.get(dom.key)
        if c is not None and c.credit > 0 and not c.parked:
            c.boost = True
            self.stats["boosts"] += 1

    def descheduled(self, dom, expired: bool) -> None:
        """``dom`` leaves the CPU; at the end of its slice it goes behind its equals."""
        c = self.info.get(dom.key)
        if c is None:
            return
        c.boost = False
        if expired:
            c.order = self._next_order()

    # -- choice -----------------------------------------------------------------------
    def prio(self, dom) -> Prio:
        c = self.info[dom.key]
        if c.boost:
            return Prio.BOOST
        return Prio.UNDER if c.credit > 0 else Prio.OVER

    def eligible(self, dom) -> bool:
        c = self.info.get(dom.key)
        return c is not None and dom.runnable and not c.parked

    def pick(self, current, expired: bool):
        """The domain to run next (None: idle).  ``current`` keeps the CPU unless its
        slice ``expired`` or a domain of higher priority is ready."""
        ready = [d for d in self.domains.values() if self.eligible(d)]
        if not ready:
            return None
        best = min(ready, key=lambda d: (self.prio(d), self.info[d.key].order))
        if current is not None and self.eligible(current) and not expired and \
                self.prio(current) <= self.prio(best):
            return current
        if best is not current:
            self.stats["switches"] += 1
            if current is not None and self.eligible(current):
                # preempted (a woken domain was boosted past it, or one of a better
                # priority was ready): like a vCPU whose slice ended it goes behind its
                # equals, as Xen's __runq_insert puts it after every vCPU of its priority.
                # Left in front, it would win every tie against its equals after each of
                # Domain 0's 10 ms ticks and take the OVER time alone.
                c = self.info[current.key]
                c.boost = False
                c.order = self._next_order()
        return best

    def should_preempt(self, current, woken) -> bool:
        """A woken domain of higher priority than the running one takes the CPU now."""
        if current is None or not self.eligible(woken):
            return current is None
        return self.prio(woken) < self.prio(current)

    def slice_for(self, dom) -> int:
        """How long ``dom`` may run before the hypervisor looks again: a time slice, or
        less while it has credit, which may run out first (Xen notices at its next 10 ms
        tick that a vCPU has gone OVER and lets the UNDER ones run; the slice ends
        exactly there instead, so a light domain does not overrun its share by up to a
        tick each period, and a capped one is parked on time)."""
        c = self.info.get(dom.key)
        if c is None or (c.credit <= 0 and not dom.cap):
            return TSLICE_NS
        return max(MIN_SLICE_NS, min(TSLICE_NS, c.credit))

    def params(self, dom) -> dict:
        c = self.info[dom.key]
        return {"weight": dom.weight, "cap": dom.cap, "credit": c.credit, "prio": self.prio(dom).name,
                "parked": c.parked}
