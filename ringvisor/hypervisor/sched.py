"""Xen's credit scheduler (credit1) on the machine's physical CPUs.

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

Blocked vCPUs, and those of a domain that shut down or crashed, consume nothing and
earn nothing (they are not active).  (The
docstrings below say "domain" for what is scheduled: a vCPU.)
Credit is bounded by one time slice either way, as Xen's is, so a domain
cannot bank an idle spell.  (Xen's csched_acct, csched_vcpu_wake,
csched_schedule.)

Several physical CPUs (``ncpus``): as in credit1, each pCPU has its own run
queue -- a vCPU belongs to one pCPU's (``Credit.cpu``) and runs only there,
one pCPU at a time --, each pCPU picks from its own, and a pCPU whose best is
OVER or that would idle *steals* the best waiting (not running) vCPU of a
strictly better priority from its peers, looking at them in turn from the
next one up (``csched_load_balance``, ``csched_runq_steal``).  A vCPU that
wakes stays on its pCPU's queue and *tickles*: its pCPU if it beats what runs
there, else an idle pCPU that may steal it (``__runq_tickle``).  Each vCPU
has a hard *affinity*, the pCPUs it may run on (``xl vcpu-pin``): it is never
queued on, stolen to or kept on another.  Credit is shared out over the
whole machine, so weights hold across pCPUs; the PC's processors share one
timeline (``hw/smp.py``: virtual time is the sum of the instructions they
retire), so a period's CPU time is the period, and one pCPU's worth of it,
what a cap is a percentage of, is ``1/ncpus`` of it (with one pCPU: all of
it, as before).
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
    cpu: int = 0                   # the pCPU whose run queue it is on
    affinity: frozenset = frozenset({0})   # the pCPUs it may run on (hard affinity)


class CreditScheduler:
    def __init__(self, ncpus: int = 1) -> None:
        self.ncpus = ncpus
        self.all_cpus = frozenset(range(ncpus))
        self.info: dict[int, Credit] = {}
        self.domains: dict[int, object] = {}
        self.running: list = [None] * ncpus    # what each pCPU runs (the hypervisor's current)
        self._order = 0
        self.stats = {"accountings": 0, "switches": 0, "boosts": 0, "parks": 0, "steals": 0}

    def _next_order(self) -> int:
        self._order += 1
        return self._order

    # -- membership -------------------------------------------------------------------
    def add(self, dom) -> None:
        """A new vCPU, on the queue of pCPU ``(domid + vcpu_id) mod ncpus``: a domain's
        vCPUs spread over the pCPUs, and domains' first vCPUs too (Xen cycles a new
        vCPU's processor through the online ones)."""
        self.domains[dom.key] = dom
        self.info[dom.key] = Credit(order=self._next_order(), cpu=sum(dom.key) % self.ncpus,
                                    affinity=self.all_cpus)

    def remove(self, dom) -> None:
        self.domains.pop(dom.key, None)
        self.info.pop(dom.key, None)
        self.running = [None if r is dom else r for r in self.running]

    # -- where vCPUs run ----------------------------------------------------------------
    def cpu_of(self, dom) -> int:
        """The pCPU ``dom`` runs on, or whose queue it waits on."""
        return self.info[dom.key].cpu

    def affinity(self, dom) -> frozenset:
        return self.info[dom.key].affinity

    def set_affinity(self, dom, cpus) -> list[int]:
        """``dom`` may run only on ``cpus`` (Xen's vcpu_set_hard_affinity: -EINVAL, as a
        ValueError here, when none of them is a pCPU).  A vCPU queued elsewhere moves to
        the first of them; the pCPUs that must look again are returned (the one it runs
        on, if it may no longer)."""
        cpus = frozenset(cpus) & self.all_cpus
        if not cpus:
            raise ValueError("no such pCPU")
        c = self.info[dom.key]
        c.affinity = cpus
        kick = [p for p, r in enumerate(self.running) if r is dom and p not in cpus]
        if c.cpu not in cpus:
            c.cpu = min(cpus)
            kick.append(c.cpu)
        return kick

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
                    # the domain's cap (a percentage of one pCPU's worth), shared by its
                    # active vCPUs
                    room = min(room, ACCT_NS * d.cap // 100 // self.ncpus // per_domain[d.domid]
                               - c.given)
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

    def stopped(self, dom) -> None:
        """``dom``'s domain shut down or crashed: it is never runnable again (until a
        restore makes a new domain of it), so what it ran in this period takes it into no
        accounting -- it would be given a share of the credit the live ones earn -- and a
        boost it had goes."""
        c = self.info.get(dom.key)
        if c is not None:
            c.used = c.given = 0
            c.boost = False

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

    def _rank(self, dom) -> tuple[int, int]:
        return self.prio(dom), self.info[dom.key].order

    def on_a_cpu(self, dom) -> bool:
        return any(r is dom for r in self.running)

    def _queued(self, cpu: int) -> list:
        """The eligible vCPUs waiting on ``cpu``'s queue (not running on any pCPU)."""
        return [d for d in self.domains.values()
                if self.info[d.key].cpu == cpu and self.eligible(d) and not self.on_a_cpu(d)]

    def pick(self, current, expired: bool, cpu: int = 0):
        """The domain pCPU ``cpu`` runs next (None: idle).  ``current`` keeps it unless
        its slice ``expired`` or a domain of higher priority is ready; a pCPU left with
        only OVER work, or none, steals from its peers (module doc)."""
        keep = current is not None and self.eligible(current) and \
            self.info[current.key].cpu == cpu
        ready = self._queued(cpu) + ([current] if keep else [])
        best = min(ready, key=self._rank, default=None)
        if best is None or self.prio(best) is Prio.OVER:
            stolen = self._steal(cpu, best)
            if stolen is not None:
                best = stolen
        if best is None:
            self.running[cpu] = None
            return None
        if keep and not expired and self.prio(current) <= self.prio(best):
            return current
        if best is not current:
            self.stats["switches"] += 1
            if keep:
                # preempted (a woken domain was boosted past it, or one of a better
                # priority was ready): like a vCPU whose slice ended it goes behind its
                # equals, as Xen's __runq_insert puts it after every vCPU of its priority.
                # Left in front, it would win every tie against its equals after each of
                # Domain 0's 10 ms ticks and take the OVER time alone.
                c = self.info[current.key]
                c.boost = False
                c.order = self._next_order()
        self.running[cpu] = best
        return best

    def _steal(self, cpu: int, local):
        """The best waiting vCPU of a peer that may run on ``cpu`` and has a strictly
        better priority than ``local`` (None: any), taken onto ``cpu``'s queue."""
        for k in range(1, self.ncpus):
            peer = (cpu + k) % self.ncpus
            cand = [d for d in self._queued(peer) if cpu in self.info[d.key].affinity]
            d = min(cand, key=self._rank, default=None)
            if d is not None and (local is None or self.prio(d) < self.prio(local)):
                self.info[d.key].cpu = cpu
                self.stats["steals"] += 1
                return d
        return None

    def should_preempt(self, current, woken) -> bool:
        """A woken domain of higher priority than the running one takes the CPU now."""
        if current is None or not self.eligible(woken):
            return current is None
        return self.prio(woken) < self.prio(current)

    def tickle(self, woken) -> list[int]:
        """The pCPUs that should look again because ``woken`` may run (Xen's
        __runq_tickle): its own if it beats what runs there, else the first idle one it
        may run on, which will steal it."""
        if not self.eligible(woken) or self.on_a_cpu(woken):
            return []
        c = self.info[woken.key]
        if self.should_preempt(self.running[c.cpu], woken):
            return [c.cpu]
        idle = [p for p in sorted(c.affinity) if self.running[p] is None]
        return idle[:1]

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
