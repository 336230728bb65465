"""The credit scheduler's shares, driven as the hypervisor drives it (hypervisor/core.py):
charge what ran, account every 30 ms, pick at each entry, wake and preempt for events.
What it schedules are vCPUs (``Dom`` here: one vCPU of domain ``domid``; several with
the same ``domid`` are one domain's).  A virtual CPU in a loop over virtual
nanoseconds; no guest.  The real guests' figures
come from `ringvisor xenbench` (docs/xen.md)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from ringvisor.hypervisor import sched as S

MS = 1_000_000


@dataclass
class Dom:
    domid: int
    weight: int = S.DEFAULT_WEIGHT
    cap: int = 0
    runnable: bool = True
    ran: int = 0
    vcpu_id: int = 0

    @property
    def key(self) -> tuple[int, int]:
        return (self.domid, self.vcpu_id)


class Cpu:
    """One physical CPU under the scheduler; Domain 0 (if idle_dom0) wakes every 10 ms for
    ``dom0_ns`` and blocks again, as the teaching kernel's idle timer tick does."""

    def __init__(self, doms: list[Dom], idle_dom0: bool = True, dom0_ns: int = 20_000) -> None:
        self.s = S.CreditScheduler()
        self.dom0 = Dom(0, runnable=False) if idle_dom0 else None
        self.doms = ([self.dom0] if self.dom0 else []) + doms
        for d in self.doms:
            self.s.add(d)
        self.dom0_ns = dom0_ns
        self.now = 0
        self.cur = self.s.pick(None, True)
        self.slice_end = self.s.slice_for(self.cur) if self.cur else S.TSLICE_NS

    def _switch_to(self, d) -> None:
        self.cur = d
        self.slice_end = self.now + (self.s.slice_for(d) if d is not None else S.TSLICE_NS)

    def run(self, ns: int) -> None:
        end = self.now + ns
        acct = (self.now // S.ACCT_NS + 1) * S.ACCT_NS
        tick = (self.now // (10 * MS) + 1) * 10 * MS
        dom0_off = None
        while self.now < end:
            t = min(end, acct, self.slice_end, tick if self.dom0 else end,
                    dom0_off if dom0_off is not None else end)
            if self.cur is not None:
                self.s.charge(self.cur, t - self.now)
                self.cur.ran += t - self.now
            self.now = t
            if t == acct:
                self.s.account()
                acct += S.ACCT_NS
                if self.cur is not None:                # priorities may have changed
                    nxt = self.s.pick(self.cur, t >= self.slice_end)
                    if nxt is not self.cur:
                        self._switch_to(nxt)
                        continue
            if self.dom0 is not None and t == tick:
                tick += 10 * MS
                self.dom0.runnable = True
                self.s.wake(self.dom0)
                dom0_off = t + self.dom0_ns
                if self.s.should_preempt(self.cur, self.dom0):
                    self._switch_to(self.s.pick(self.cur, False))
                continue
            if dom0_off is not None and t == dom0_off:
                dom0_off = None
                self.dom0.runnable = False
                if self.cur is self.dom0:
                    self.s.descheduled(self.dom0, False)
                    self._switch_to(self.s.pick(self.dom0, False))
                continue
            if self.cur is None:
                self._switch_to(self.s.pick(None, True))
            elif t >= self.slice_end:
                self.s.descheduled(self.cur, True)
                self._switch_to(self.s.pick(self.cur, True))

    def shares(self, doms, ns: int) -> list[int]:
        before = [d.ran for d in doms]
        self.run(ns)
        return [d.ran - b for d, b in zip(doms, before)]


def settled(cpu: Cpu, doms, ns: int = 3000 * MS) -> list[int]:
    cpu.run(5 * S.ACCT_NS)             # till the idle Domain 0's credit reaches its bound
    return cpu.shares(doms, ns)


@pytest.mark.parametrize("idle_dom0", [False, True])
def test_weights_share_the_cpu_in_proportion(idle_dom0):
    a, b = Dom(1, 256), Dom(2, 512)
    got = settled(Cpu([a, b], idle_dom0), [a, b])
    assert got[1] / got[0] == pytest.approx(2, rel=0.02)
    c, d, e = Dom(1), Dom(2), Dom(3, 1024)
    got = settled(Cpu([c, d, e], idle_dom0), [c, d, e])
    assert got[0] / got[1] == pytest.approx(1, rel=0.02)
    assert got[2] / got[0] == pytest.approx(4, rel=0.02)


def test_a_cap_holds_even_with_the_cpu_free():
    a, b = Dom(1, cap=25), Dom(2, cap=50)
    cpu = Cpu([a, b])
    got = settled(cpu, [a, b], 1500 * MS)
    assert got[0] / (1500 * MS) == pytest.approx(0.25, abs=0.02)
    assert got[1] / (1500 * MS) == pytest.approx(0.50, abs=0.02)
    assert cpu.s.stats["parks"] > 0


def test_blocked_domains_consume_nothing_and_a_woken_one_runs_first():
    a, b = Dom(1), Dom(2)
    cpu = Cpu([a, b], idle_dom0=False)
    cpu.run(S.ACCT_NS)                # a ran the first slice; the accounting gave b credit
    assert cpu.s.info[(2, 0)].credit > 0
    b.runnable = False                # ... and b blocks before it runs
    cpu.cur = a
    got = cpu.shares([a, b], 300 * MS)
    assert got == [300 * MS, 0]                 # alone, a domain may have the whole CPU
    assert cpu.s.info[(2, 0)].credit > 0             # a blocked domain neither earns nor spends
    b.runnable = True
    cpu.s.wake(b)
    assert cpu.s.prio(b) is S.Prio.BOOST and cpu.s.should_preempt(a, b)
    assert cpu.s.pick(a, False) is b
    assert cpu.s.prio(a) is not S.Prio.BOOST


def test_a_stopped_domain_takes_no_share_of_the_next_period():
    """A domain that ran in this period and then shut down earns nothing at the
    accounting: the period's credit goes to the live ones (here, all of it to one)."""
    a, b = Dom(1), Dom(2)
    s = S.CreditScheduler()
    s.add(a)
    s.add(b)
    s.charge(a, 5 * MS)
    s.charge(b, 5 * MS)
    b.runnable = False                            # (its domain shut down)
    s.stopped(b)
    s.account()
    assert s.info[(2, 0)].credit == -5 * MS       # (what it ran stays spent)
    assert s.info[(1, 0)].credit == S.ACCT_NS - 5 * MS       # (not half of it each)


def test_a_woken_domain_without_credit_is_not_boosted():
    a, b = Dom(1), Dom(2)
    s = S.CreditScheduler()
    s.add(a)
    s.add(b)
    s.charge(b, 5 * MS)                           # spent: OVER
    s.wake(b)
    assert s.prio(b) is S.Prio.OVER and not s.should_preempt(a, b)


def test_a_domains_vcpus_earn_by_its_weight_and_share_its_cap():
    """Xen's csched_acct: each active vCPU earns in proportion to its domain's weight
    (``weight_total += weight * active_vcpu_count``), so a busy domain of two vCPUs gets
    twice what a busy one-vCPU domain of the same weight gets, and a cap is the
    domain's, divided among its active vCPUs."""
    a0, a1, b = Dom(1), Dom(1, vcpu_id=1), Dom(2)
    got = settled(Cpu([a0, a1, b], idle_dom0=False), [a0, a1, b])
    assert (got[0] + got[1]) / got[2] == pytest.approx(2, rel=0.02)
    assert got[0] / got[1] == pytest.approx(1, rel=0.02)
    c0, c1, d = Dom(3, cap=50), Dom(3, cap=50, vcpu_id=1), Dom(4)
    got = settled(Cpu([c0, c1, d]), [c0, c1, d], 1500 * MS)
    assert (got[0] + got[1]) / (1500 * MS) == pytest.approx(0.50, abs=0.02)
    assert got[0] / got[1] == pytest.approx(1, rel=0.05)
    # a blocked vCPU is not active: the other one earns the domain's share alone
    c1.runnable = False
    got = settled(Cpu([c0, c1, d]), [c0, c1, d], 1500 * MS)
    assert got[1] == 0 and got[0] / (1500 * MS) == pytest.approx(0.50, abs=0.02)


# -- several physical CPUs ------------------------------------------------------------------
QUANTUM_NS = 4096 * 10          # hw/smp.py: a processor's turn, 4096 instructions at 100 MHz


class Pcpus:
    """``n`` physical CPUs under one scheduler, as the hypervisor drives them on the PC's
    processors (hw/smp.py): they take turns of one quantum, virtual time is the sum of
    their turns, each pCPU's own time (what a vCPU on it is charged, what its slice is
    measured in) only its own turns; every 30 ms of virtual time the accounting, after
    which every pCPU looks again, as the hypervisor kicks them all."""

    def __init__(self, n: int, doms: list[Dom]) -> None:
        self.s = S.CreditScheduler(n)
        for d in doms:
            self.s.add(d)
        self.n = n
        self.now = 0
        self.own = [0] * n
        self.slice_end = [0] * n
        self.cur = [None] * n
        for p in range(n):
            self._pick(p, True)

    def _pick(self, p: int, expired: bool) -> None:
        cur = self.cur[p]
        if cur is not None and (expired or not cur.runnable or self.s.cpu_of(cur) != p):
            self.s.descheduled(cur, expired)
        nxt = self.s.pick(cur, expired, p)
        if nxt is not cur or expired:
            self.slice_end[p] = self.own[p] + (self.s.slice_for(nxt) if nxt else S.TSLICE_NS)
        self.cur[p] = nxt

    def run(self, ns: int) -> None:
        end = self.now + ns
        acct = (self.now // S.ACCT_NS + 1) * S.ACCT_NS
        while self.now < end:
            for p in range(self.n):
                d = self.cur[p]
                if d is None:
                    continue
                t = min(QUANTUM_NS, self.slice_end[p] - self.own[p], acct - self.now)
                self.s.charge(d, t)
                d.ran += t
                self.own[p] += t
                self.now += t
                if self.now >= acct:
                    self.s.account()
                    acct += S.ACCT_NS
                    for q in range(self.n):
                        self._pick(q, self.own[q] >= self.slice_end[q])
                elif self.own[p] >= self.slice_end[p]:
                    self._pick(p, True)
            if all(c is None for c in self.cur):
                self.now = acct

    def shares(self, doms, ns: int) -> list[int]:
        before = [d.ran for d in doms]
        self.run(ns)
        return [d.ran - b for d, b in zip(doms, before)]


def test_weights_hold_across_two_pcpus():
    """Weights 256:256:512, three CPU-bound vCPUs, two pCPUs: Xen gives the 512 one a whole
    pCPU and the two others half of the other each -- 1:1:2 of the machine's CPU time.
    Per pCPU run queues, the 512 one alone on one of them: the 256 ones share the other,
    and the one that sits on the busy queue OVER is stolen by the other pCPU when its own
    vCPU is OVER and the first is UNDER, so the credit the accounting hands out by weight is
    what each gets.  Over 40 periods the shares are right to a slice in 1200 ms (2.5%)."""
    a, b, c = Dom(1), Dom(2), Dom(3, 512)
    m = Pcpus(2, [a, b, c])
    m.run(5 * S.ACCT_NS)
    got = m.shares([a, b, c], 40 * S.ACCT_NS)
    assert sum(got) == 40 * S.ACCT_NS
    assert m.s.stats["steals"] > 0
    assert got[2] / got[0] == pytest.approx(2, rel=0.02)
    assert got[1] / got[0] == pytest.approx(1, rel=0.02)


def test_a_vcpu_runs_on_one_pcpu_at_a_time_and_within_its_affinity():
    a, b, c, d = Dom(1), Dom(2), Dom(3), Dom(4)
    m = Pcpus(2, [a, b, c, d])
    with pytest.raises(ValueError):
        m.s.set_affinity(a, {5})                  # no such pCPU: Xen's -EINVAL
    assert m.s.affinity(a) == {0, 1}
    for d in (a, b):
        for p in m.s.set_affinity(d, {1}):       # the pCPUs that must look again
            m._pick(p, False)
    seen = set()
    for _ in range(400):
        m.run(QUANTUM_NS * 10)
        running = [x for x in m.cur if x is not None]
        assert len(running) == len(set(map(id, running)))     # never on two pCPUs at once
        for p, x in enumerate(m.cur):
            if x is not None:
                seen.add((x.domid, p))
                assert p in m.s.affinity(x)
    assert {p for dom, p in seen if dom in (1, 2)} == {1}
    assert {dom for dom, p in seen} == {1, 2, 3, 4}
