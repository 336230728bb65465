"""The inter-domain event-channel round trip (`ringvisor xenbench`, docs/xen.md): two
DomUs running `evping` (guests/evping) meet through xenstore, bind a channel with
alloc_unbound/bind_interdomain and send events back and forth; the security policy
decides whether two DomUs may talk at all."""

from __future__ import annotations

import re

import pytest

from ringvisor import xenbench
from ringvisor.abi import EvtchnStat, Shutdown
from ringvisor.hypervisor.domain import State
from ringvisor.toolstack.config import DomainConfig

N = 5


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    return xenbench.Bench(2, tmp_path_factory.mktemp("evping"))


def test_two_domus_are_refused_by_the_default_policy(bench):
    """Xen's default policy: a DomU talks to Domain 0, not to another DomU.  ping's
    alloc_unbound for its peer gets FLASK's -EACCES; the denial is an AVC record."""
    ping, pong, sink = xenbench.pair(bench, N)
    hv = bench.hv
    assert hv.run_until(lambda: hv.domains[ping].shutdown_reason is not None, 10 ** 11,
                        step=50_000)
    assert b"evping: alloc_unbound for the peer: -13\n" in sink.data
    assert hv.domains[ping].shutdown_reason == Shutdown.crash
    assert re.search(rf"avc:  denied  {{ bind }} for domid={ping} target={pong} "
                     r"scontext=system_u:system_r:domU_t tcontext=system_u:system_r:domU_t "
                     r"tclass=event", bench.ts.dmesg())
    for d in (ping, pong):
        bench.ts.destroy(str(d))


def test_a_pair_the_policy_allows_sends_events_both_ways(bench):
    bench.ts.load_policy(xenbench.DEFAULT_POLICY.read_text() + "\n" + xenbench.PAIR_RULE)
    ping, pong, sink = xenbench.pair(bench, N)
    hv = bench.hv
    pong_out = bytearray()
    bench.ts.managed[pong].listeners.append(pong_out.extend)
    # while it runs, each end of the channel names the other (EVTCHNOP_status's view)
    assert hv.run_until(lambda: b"evping: start" in sink.data, 10 ** 11, step=20_000)
    ends = {d: [(p, e.remote_dom) for p, e in enumerate(hv.domains[d].events.ports)
                if e.state == EvtchnStat.interdomain and e.remote_dom in (ping, pong)]
            for d in (ping, pong)}
    assert len(ends[ping]) == len(ends[pong]) == 1, ends
    (pp, pr), (qp, qr) = ends[ping][0], ends[pong][0]
    assert (pr, qr) == (pong, ping)
    assert hv.domains[ping].events.ports[pp].remote == qp
    assert hv.run_until(lambda: all(hv.domains[d].shutdown_reason is not None
                                    for d in (ping, pong)), 10 ** 11, step=50_000)
    assert bytes(sink.data).startswith(
        f"evping: bound to domain {pong}\nevping: start\nevping: done\n".encode())
    m = xenbench.EVPING_RE.search(sink.data)
    assert m and int(m.group(1)) == N and int(m.group(2)) > 0
    assert bytes(pong_out).endswith(b"evping: done\n")
    assert {hv.domains[d].state for d in (ping, pong)} == {State.SHUTDOWN}
    for d in (ping, pong):
        bench.ts.destroy(str(d))


def test_the_benchmark_measures_both_paths(tmp_path):
    trips = xenbench.event_round_trip(tmp_path, 3)
    assert [t.name for t in trips] == ["one domain, both ends (no switch)",
                                       "two DomUs (bind_interdomain)"]
    assert all(t.cycles > 0 and t.wall_us > 0 for t in trips)


def test_evping_without_a_role_says_how_to_run_it(bench):
    d = bench.ts.create(DomainConfig(name="bad", kernel="evping", cmdline="role=ring n=0",
                                     memory=4, on_crash="preserve"))
    out = bytearray()
    bench.ts.managed[d].listeners.append(out.extend)
    hv = bench.hv
    assert hv.run_until(lambda: hv.domains[d].shutdown_reason is not None, 10 ** 11,
                        step=50_000)
    assert b"evping: usage: role=ping|pong|loop n=N (N > 0)" in out
    bench.ts.destroy(str(d))
