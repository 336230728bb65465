"""A hostile DomU on `ringvisor xen`: it attacks grants, event channels, memory_op and
its xenstore ring, deliberately and at random (tests/pvguests/xenfuzz).  It gets error
codes, or is stopped with a report; the other domains go on; the hypervisor's books
(frames, P2Ms, shadows) stay right; destroying it gives everything back."""

from __future__ import annotations

import pytest

from ringvisor.abi import DomId
from ringvisor.hypervisor.domain import State
from ringvisor.toolstack.config import DomainConfig
from test_paravirt import build_pv_guest
from test_xen import Host

VICTIM_TEXT = range(0x100, 0x110)          # the victim kernel's code frames (1 MiB up)


@pytest.fixture(scope="module")
def fuzzer(tmp_path_factory):
    return build_pv_guest("xenfuzz", tmp_path_factory.mktemp("xenfuzz"))


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    h = Host(tmp_path_factory.mktemp("xensafe"))
    h.create("victim", "")
    assert h.run_until(lambda: b"$ " in h.consoles["victim"])
    return h


def text_of(h, dom) -> bytes:
    return b"".join(h.hv.mem.read(dom.p2m[g] << 12, 0x1000) for g in VICTIM_TEXT)


def check_books(hv) -> None:
    """Every frame in a physmap is the domain's own, or a mapping it is entitled to; every
    shadow entry maps a frame of the domain's physmap, its fixed pages or the region."""
    f = hv.frames
    for d in hv.domains.values():
        for gpfn, mfn in d.p2m.items():
            owner = d.foreign.get(gpfn, d.domid)
            if owner == DomId.XEN:
                assert f.owner.get(mfn) == DomId.XEN
                continue
            assert f.owner.get(mfn) == owner, (d.domid, gpfn)
            if owner != d.domid:
                granted = any(m.gpfn == gpfn for m in d.grants.maptrack.values())
                assert granted or d.privileged, (d.domid, gpfn, owner)
        m = d.monitor
        allowed = set(d.p2m.values()) | {fr >> 12 for fr, _ in m.fixed.values()}
        for root in m.shadow.roots.values():
            for i, (table, _) in root.tables.items():
                for k in range(1024):
                    e = hv.mem.read32(table + 4 * k)
                    if e & 1:
                        assert e >> 12 in allowed, (d.domid, hex((i << 22) | (k << 12)), hex(e))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_hostile_domu_reaches_nothing(host, fuzzer, seed):
    h = host
    victim = h.dom("victim")
    vport = h.ts.managed[victim.domid].console.port   # (Domain 0's end; the victim's is
    vport = next(p for p in range(1, 64)                # the one bound to Domain 0)
                 if victim.events.ports[p].state == 2 and victim.events.ports[p].remote_dom == 0)
    text = text_of(h, victim)
    free = h.hv.frames.nr_free
    name = f"fuzz{seed}"
    cfg = DomainConfig(name=name, kernel=str(fuzzer), memory=4, on_poweroff="preserve",
                       on_crash="preserve",
                       cmdline=f"victim={victim.domid} vport={vport} vgpfn=256 seed={seed} calls=200")
    domid = h.ts.create(cfg)
    out = h.consoles.setdefault(name, bytearray())
    h.ts.managed[domid].listeners.append(out.extend)
    d = h.hv.domains[domid]
    assert h.run_until(lambda: d.dead, 30_000_000), "the fuzzer never finished"
    console = h.ts.dmesg()
    lines = [l.split(") ", 1)[1] for l in console.splitlines() if l.startswith(f"(d{domid}) ")]
    assert lines[0] == "xenfuzz: start"
    answers = dict(l.rsplit(" ", 1) for l in lines[1:10])
    assert answers == {
        "foreign map of the victim": "-13", "grant map of the victim's ref 0": "-8",
        "grant copy from the victim": "-8", "bind the victim's port": "-22",
        "alloc_unbound in the victim": "-13", "decrease the victim's reservation": "-13",
        "domctl pause of the victim": "-13", "populate beyond maxmem": "0",
        "give back my console ring": "0"}
    assert d.state is State.SHUTDOWN or "crashed" in console      # ended, one way or the other
    assert "avc:  denied" in console
    # the victim: untouched, and still answering
    assert text_of(h, victim) == text
    assert not victim.paused and not victim.dead
    n = len(h.consoles["victim"])
    h.ts.type_console("victim", f"echo alive{seed}\n".encode())
    assert h.run_until(lambda: f"alive{seed}\n".encode() in h.consoles["victim"][n:])
    check_books(h.hv)
    # destroyed: every frame comes back
    h.ts.destroy(name)
    h.run_until(lambda: domid not in h.hv.domains, 2_000_000)
    assert domid not in h.hv.domains and h.hv.frames.owned_by(domid) == []
    assert h.hv.frames.nr_free == free
    check_books(h.hv)


@pytest.mark.parametrize("how", [1, 2], ids=["woken", "while-running"])
def test_an_event_it_cannot_take_crashes_only_that_domain(host, fuzzer, how):
    """Its stack unmapped when its timer's event comes: the event's frame cannot be
    written (Xen: a bounce frame that faults crashes the domain), whether the event
    is delivered as it wakes (it had blocked) or while it runs."""
    h = host
    name = f"badstack{how}"
    cfg = DomainConfig(name=name, kernel=str(fuzzer), memory=4, on_crash="preserve",
                       cmdline=f"badstack={how}")
    domid = h.ts.create(cfg)
    d = h.hv.domains[domid]
    assert h.run_until(lambda: d.state is State.CRASHED, 5_000_000)
    lines = [l.split(") ", 1)[1] for l in h.ts.dmesg().splitlines() if l.startswith(f"(d{domid}) ")]
    # Xen's flat selectors, which it started the domain on, are the kernel's to name
    assert lines == ["xenfuzz: start", "set_callbacks 0", "set_trap_table 0", "stack_switch 0",
                     "bind_virq timer 0", "set_timer_op 0"]
    assert "0xdeacfff4 is not backed" in d.crash_report, d.crash_report   # (its frame: 3 words)
    victim = h.dom("victim")
    n = len(h.consoles["victim"])
    h.ts.type_console("victim", f"echo after{how}\n".encode())
    assert h.run_until(lambda: f"after{how}\n".encode() in h.consoles["victim"][n:])
    h.ts.destroy(name)
    h.run_until(lambda: domid not in h.hv.domains, 2_000_000)
    assert h.hv.frames.owned_by(domid) == [] and not victim.dead
    check_books(h.hv)
