"""``ringvisor xen --cpus 2``: the hypervisor on a PC of two processors.

One machine of two pCPUs is booted for the module (Domain 0, then DomUs built by the
toolstack), and the tests look at it from the outside: each DomU's console against the
same kernel run alone, where xl says vCPUs are and may be, a domain of two vCPUs
pinned to different pCPUs (tests/pvguests/smpvcpu: IPIs over event channels between
them), its save and restore, and the hypervisor's answer to a pin it cannot do.  A
second host, on a slower clock, runs three CPU-bound DomUs for the credit scheduler's
weights and a cap across two pCPUs (tests/test_credit.py drives the scheduler alone,
closer; ``ringvisor xenbench`` has the teaching kernel's figures, docs/xen.md)."""

from __future__ import annotations

import pytest

from ringvisor.abi import HYPERCALL_VECTOR, Errno
from ringvisor.hypervisor.core import Hypervisor
from ringvisor.hypervisor.domain import State
from ringvisor.hypervisor.interface import HypercallInterface
from ringvisor.hypervisor.sched import ACCT_NS
from ringvisor.toolstack.config import ConfigFileError, DomainConfig, parse
from ringvisor.toolstack.xc import XcError
from ringvisor.toolstack.xl import Toolstack, XlError
from test_paravirt import build_pv_guest
from test_xen import (SMP_PHASE_1, Host, answers, consoles_are_as_alone, said,
                      save_restore_and_finish)


def said_by(ts, domid: int) -> list[str]:
    tag = f"(d{domid}) "
    return [l[len(tag):] for l in ts.dmesg().splitlines() if l.startswith(tag)]

WORKLOADS = {"alpha": "run=syscall iters=5", "beta": "run=forkwait iters=1"}


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    h = Host(tmp_path_factory.mktemp("xensmp"), cpus=2)
    for name in WORKLOADS:
        h.create(name, WORKLOADS[name], on_poweroff="preserve")
    h.placed = set()                 # (domid, pCPU) seen running

    def done() -> bool:
        h.placed.update((pc.current.domid, pc.index) for pc in h.hv.pcpus if pc.current)
        return all(h.dom(n).state is State.SHUTDOWN for n in WORKLOADS)
    assert h.run_until(done)
    return h


def test_each_domus_console_is_what_it_prints_alone(host):
    consoles_are_as_alone(host, WORKLOADS)
    assert b"ringvisor shell" in host.dom0_out               # Domain 0 too
    # both pCPUs ran DomUs (their first vCPUs are queued on different pCPUs)
    assert {p for d, p in host.placed if d} == {0, 1}
    assert host.hv.stats["ipis"] > 0


def test_xl_info_and_vcpu_list_say_where(host):
    assert host.ts.info()["nr_cpus"] == 2
    p = host.ts.xc.physinfo()
    assert (p["nr_cpus"], p["max_cpu_id"]) == (2, 1)
    rows = {r["name"]: r for r in host.ts.vcpu_list()}
    assert rows["Domain-0"]["cpu"] in (0, 1) and rows["Domain-0"]["affinity"] == "all / all"


def test_a_pin_to_a_cpu_the_host_lacks_is_einval(host):
    d = host.ts.find("alpha").domid
    with pytest.raises(XcError) as e:
        host.ts.xc.vcpu_affinity(d, 0, {2})
    assert e.value.errno == Errno.EINVAL                     # Xen's vcpu_set_hard_affinity
    with pytest.raises(XlError) as e:
        host.ts.vcpu_pin("alpha", "0", "2")
    assert "\n" not in str(e.value) and "EINVAL" in str(e.value) and "2 CPUs" in str(e.value)
    with pytest.raises(XlError, match="no vCPU '1'"):
        host.ts.vcpu_pin("alpha", "1", "0")
    with pytest.raises(XlError, match="not a CPU"):
        host.ts.vcpu_pin("alpha", "0", "one")
    host.ts.vcpu_pin("alpha", "all", "1")
    assert host.ts.xc.vcpu_affinity(d, 0) == {1}
    assert host.hv.sched.cpu_of(host.dom("alpha").vcpus[0]) == 1
    assert [r["affinity"] for r in host.ts.vcpu_list(["alpha"])] == ["1 / all"]
    host.ts.vcpu_pin("alpha", "0", "all")
    assert [r["affinity"] for r in host.ts.vcpu_list(["alpha"])] == ["all / all"]


def test_a_running_domain_moves_where_it_is_pinned(host):
    """Domain 0 pinned to the pCPU it is not on goes there (a vCPU queued elsewhere moves
    to its queue, one running elsewhere leaves at its pCPU's next entry) and runs there."""
    v = host.hv.domains[0].vcpus[0]
    # pinned while it runs (not while it waits for its next tick): the pCPU it leaves may
    # find nothing else to run, and the one it goes to must still be told
    assert host.run_until(lambda: any(pc.current is v for pc in host.hv.pcpus)
                          and not v.dom.monitor.halting, 4_000_000)
    other = 1 - host.hv.sched.cpu_of(v)
    host.ts.vcpu_pin("Domain-0", "0", str(other))
    try:
        assert host.hv.sched.cpu_of(v) == other
        assert host.run_until(lambda: host.hv.pcpus[other].current is v, 4_000_000)
        assert not any(pc.current is v for pc in host.hv.pcpus if pc.index != other)
        assert host.ts.vcpu_list(["Domain-0"])[0]["cpu"] == other
    finally:
        host.ts.vcpu_pin("Domain-0", "0", "all")


def test_the_cpus_key_of_a_domain_config():
    cfg = parse('name = "x"\nkernel = "kernel-pv"\nvcpus = 2\ncpus = ["0", "1"]\n', "x.cfg")
    assert cfg.cpus == ["0", "1"]
    assert parse('name = "x"\nkernel = "k"\ncpus = "0-3,^1"\n', "x.cfg").cpus == ["0-3,^1"]
    for bad, why in (('"0-"', "not a CPU"), ('"3-1"', "not a range"), ('"^0"', "names no CPU"),
                     ('["0", "1"]', "2 CPU lists for 1 vCPUs"), ("3", "expected a string")):
        with pytest.raises(ConfigFileError, match=why) as e:
            parse(f'name = "x"\nkernel = "k"\ncpus = {bad}\n', "x.cfg")
        assert str(e.value).startswith("x.cfg:3: cpus: ")


@pytest.fixture(scope="module")
def pinned(host, tmp_path_factory):
    """smpvcpu's two vCPUs pinned to pCPUs 0 and 1, run to the end of its first phase
    (held there, as test_xen.py's fixture does)."""
    image = build_pv_guest("smpvcpu", tmp_path_factory.mktemp("smpvcpu"))
    cfg = DomainConfig(name="smp", kernel=str(image), memory=4, vcpus=2, cmdline="rounds=8",
                       on_poweroff="preserve", cpus=["0", "1"])
    hv = host.hv
    console = hv.guest_console
    together = []

    def pause_at_phase_1(dom, data: bytes) -> None:
        console(dom, data)
        if b"smpvcpu: phase 1" in data:
            hv.pause(dom)

    def both_on() -> bool:
        on = [(pc.index, pc.current.vcpu_id) for pc in hv.pcpus
              if pc.current is not None and pc.current.domid == domid]
        if len(on) == 2:
            together.append(sorted(on))
        return "smpvcpu: phase 1" in said(host, domid)
    hv.guest_console = pause_at_phase_1
    try:
        domid = host.ts.create(cfg)
        assert host.run_until(both_on), said(host, domid)
    finally:
        hv.guest_console = console
    return domid, together


def test_two_vcpus_pinned_apart_both_progress(host, pinned):
    """On pCPUs of their own the vCPUs run at once: every answer is Xen's, as on one pCPU
    (tests/test_xen.py), but for the one that needs them to share a CPU -- vCPU 0's
    yields hand nothing over, so it sees vCPU 1 count without taking turns."""
    domid, together = pinned
    lines = said(host, domid)
    assert lines[0] == "smpvcpu: start" and lines[-1] == "smpvcpu: phase 1"
    got = answers(lines)
    assert got["took turns"] == 0
    assert {k: v for k, v in got.items() if k != "took turns"} == \
        {k: v for k, v in SMP_PHASE_1.items() if k != "took turns"}
    assert [(0, 0), (1, 1)] in together            # each on its own pCPU, at the same time
    rows = host.ts.vcpu_list(["smp"])
    assert [r["affinity"] for r in rows] == ["0 / all", "1 / all"]
    assert [r["cpu"] for r in rows] == [0, 1]


def test_save_and_restore_on_two_pcpus(host, pinned):
    """The pCPU a vCPU is on is not part of its saved state: the restored domain's vCPUs are
    placed again, pinned as its configuration says, and the second phase runs."""
    def pinned_again(d) -> None:
        assert [host.hv.sched.affinity(v) for v in d.vcpus] == [{0}, {1}]
    save_restore_and_finish(host, pinned[0], pinned_again)


def test_saving_a_domain_that_waits_on_a_pcpu(host):
    """A blocked vCPU waits in its context on the pCPU it last had.  ``xl save`` pauses
    its domain and reads the context once the domain is off every CPU -- Xen's
    domain_pause returns only then -- so the "running" flag it waits on must stay set
    until that pCPU has switched the vCPU out, not read EBUSY from gethvmcontext."""
    domid = host.create("idle", "", cpus=["1"])
    v = host.hv.domains[domid].vcpus[0]
    assert host.run_until(lambda: v.blocked and host.hv.pcpus[1].current is v
                          and b"$ " in host.consoles["idle"])
    saved = []
    host.ts.save("idle", lambda data, err: saved.append(data or err) or "destroy")
    assert host.run_until(lambda: saved)
    assert isinstance(saved[0], bytes), saved[0]
    assert all(m.name != "idle" for m in host.ts.managed.values())


def test_a_turn_that_ends_between_an_entry_and_its_handler(tmp_path):
    """Each pCPU enters the hypervisor on a ring-0 stack of its own (pcpus.own_tss), as
    Xen's CPUs do.  Here every hypercall is the last instruction of its pCPU's turn
    (hw/smp) -- its frame pushed, its handler not yet run, as the end of a quantum leaves
    it now and then -- so the other pCPU runs, and enters the hypervisor, before that
    handler does.  On one shared stack the other's frame took the place of the first's,
    whose vCPU was resumed at the other vCPU's EIP: smpvcpu's two vCPUs, pinned apart,
    both ran vCPU 0's loop and stalled (docs/xen.md).  Each must go on where it was:
    smpvcpu runs to its end with Xen's answers (Domain 0 blocks forever: a cheap host)."""
    spin, smp = build_pv_guest("spin", tmp_path), build_pv_guest("smpvcpu", tmp_path)
    hv = Hypervisor(64, cpus=2)
    hv.build_dom0(spin.read_bytes(), "idle=1", 4, "spin")
    hv.start()
    ts = Toolstack(HypercallInterface(hv), tmp_path)
    ended = []

    def end_turn_at(cpu, vector: int, err, soft: bool):
        if soft and vector == HYPERCALL_VECTOR:
            cpu.shorten(cpu.state.icount + 1)  # the INT retires last; its handler waits
            ended.append(cpu.state.eip)
        return None                            # (delivered as ever)
    for cpu in hv.machine.cpus:
        assert cpu.native.handoff is None      # (every entry is a delivery on its stack)
        cpu.native.handoff = end_turn_at
    hv.domain_changed = lambda: hv.machine.pause("a domain changed")
    domid = ts.create(DomainConfig(name="smp", kernel=str(smp), memory=4, vcpus=2,
                                   cmdline="rounds=8", cpus=["0", "1"]))
    d = hv.domains[domid]
    # (it takes some 25,000 instructions; the stall spun through all of the budget)
    assert hv.run_until(lambda: d.dead, 1_000_000, step=100_000), said_by(ts, domid)[-3:]
    lines = said_by(ts, domid)
    assert d.state is State.SHUTDOWN and lines[-1] == "smpvcpu: done"
    # (but for what depends on how the two interleave: whether vCPU 1 was seen taking
    # turns, running or waiting)
    timing = {"took turns", "vcpu 1 runstate", "vcpu 1 has waited", "runstate area 1 has run"}
    got = answers(lines)
    assert {k: v for k, v in got.items() if k not in timing} == {
        **{k: v for k, v in SMP_PHASE_1.items() if k not in timing},
        "ipi rounds after": 1, "runstate areas after": 1, "down 1 at the end": 0,
        "vcpu 1 counted in all": 16}
    assert len(ended) > 200                    # (smpvcpu's hypercalls, on both)


# -- the credit scheduler's shares, on real guests ------------------------------------------
SLOW_HZ = 5_000_000     # the machine's clock for these: every scheduling constant is in ns,
                        # so a 30 ms period is 150,000 guest instructions instead of 3,000,000
PERIODS = 30


@pytest.fixture(scope="module")
def spinners(tmp_path_factory):
    """A host of two pCPUs at SLOW_HZ whose Domain 0 blocks forever (tests/pvguests/spin
    idle=1: no load), and three CPU-bound DomUs (spin) weighted 256:256:512."""
    tmp = tmp_path_factory.mktemp("spin")
    image = build_pv_guest("spin", tmp)
    hv = Hypervisor(64, cpus=2, cpu_hz=SLOW_HZ)
    hv.build_dom0(image.read_bytes(), "idle=1", 4, "spin")
    hv.start()
    ts = Toolstack(HypercallInterface(hv), tmp)
    ids = [ts.create(DomainConfig(name=f"w{i}", kernel=str(image), memory=4, weight=w))
           for i, w in enumerate((256, 256, 512))]
    return hv, ts, [hv.domains[d] for d in ids]


def shares(hv, doms, periods: int) -> list[float]:
    """Each domain's CPU time (its guest instructions, as a pCPU's own time) over about
    ``periods`` accounting periods, as a part of the machine's (the virtual time that
    passed: when every pCPU idles, it jumps to the next timer)."""
    before, t0 = [d.cpu_time_ns for d in doms], hv.clock.now_ns()
    hv.run_until(lambda: False, 10 ** 12, ns=periods * ACCT_NS)
    span = hv.clock.now_ns() - t0
    return [(d.cpu_time_ns - b) / span for d, b in zip(doms, before)]


def test_weights_and_a_cap_hold_across_two_pcpus(spinners):
    """Weights 256:256:512, three CPU-bound domains, two pCPUs: Xen's credit1 gives them
    25:25:50 of the machine (the 512 one a pCPU, the others half of the other each).
    Within 3 points over 30 periods: one domain's 30 ms slice is 3.3% of the 900 ms, and
    the window's two edges may each cut a slice.  Then a cap of 50 -- half of one pCPU --
    is a quarter of the machine, alone on it (parked when its credit is spent): it runs
    about 15 ms of each 30 ms period, and each edge of a 20-period window may cut such a
    run -- 15 ms of one pCPU in 600 ms of the machine's two, 1.25 points each."""
    hv, ts, (a, b, c) = spinners
    shares(hv, [a, b, c], 5)                        # (from the start: credit to settle)
    got = shares(hv, [a, b, c], PERIODS)
    assert got == pytest.approx([0.25, 0.25, 0.50], abs=0.03), got
    assert hv.sched.stats["steals"] > 0
    ts.destroy("w0")
    ts.destroy("w1")
    ts.sched_credit("w2", None, 50)
    shares(hv, [c], 3)
    assert shares(hv, [c], 20) == pytest.approx([0.25], abs=0.025)
    assert hv.sched.stats["parks"] > 0
