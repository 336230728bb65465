"""The Xen structure: one hypervisor, Domain 0, DomUs built by the toolstack.

One machine is booted for the whole module (Domain 0, then DomUs created by
the toolstack through hypercalls), and the tests look at it from the
outside: consoles, xl's views, frames, ports and grants, and what the
security module refused."""

from __future__ import annotations

import re

import pytest

from ringvisor.abi import DOMCTL, DOMCTL_INTERFACE_VERSION, Domctl, Errno, Hypercall, Shutdown
from ringvisor.guests.build import image_path
from ringvisor.hypervisor.core import Hypervisor
from ringvisor.hypervisor.domain import State
from ringvisor.hypervisor.interface import HypercallInterface
from ringvisor.toolstack.config import DomainConfig
from ringvisor.toolstack.xl import Toolstack, XlError
from ringvisor.vmm import run_vm

TIMING = re.compile(rb"^\[timing\].*\n", re.M)
WORKLOADS = {"alpha": "run=syscall iters=50", "beta": "run=forkwait iters=3"}


class Host:
    def __init__(self, tmp) -> None:
        self.dom0_out = bytearray()
        self.hv = Hypervisor(192, output=self.dom0_out.extend)
        self.hv.build_dom0(image_path("kernel-pv").read_bytes(), "", 32, "kernel-pv")
        self.hv.start()
        self.ts = Toolstack(HypercallInterface(self.hv), tmp)
        self.free_at_start = self.hv.frames.nr_free
        self.consoles: dict[str, bytearray] = {}

    def create(self, name: str, cmdline: str, kernel: str = "kernel-pv", **kw) -> int:
        cfg = DomainConfig(name=name, kernel=kernel, cmdline=cmdline, memory=16, **kw)
        domid = self.ts.create(cfg)
        buf = self.consoles.setdefault(name, bytearray())
        self.ts.managed[domid].listeners.append(buf.extend)
        return domid

    def dom(self, name: str):
        return self.hv.domains[self.ts.find(name).domid]

    def run_until(self, done, budget: int = 40_000_000) -> bool:
        return self.hv.run_until(done, budget, step=20_000)


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    h = Host(tmp_path_factory.mktemp("xen"))
    for name in ("alpha", "beta"):
        h.create(name, WORKLOADS[name], on_poweroff="preserve")
    assert h.run_until(lambda: all(h.dom(n).state is State.SHUTDOWN for n in WORKLOADS))
    return h


def test_two_domus_print_what_they_print_alone(host):
    for name, cmdline in WORKLOADS.items():
        alone = run_vm(image_path("kernel-pv"), "paravirt", cmdline, mem_mb=16)
        assert alone.output.strip(), name
        assert TIMING.sub(b"", bytes(host.consoles[name])) == TIMING.sub(b"", alone.output), name
        log = (host.ts.state_dir / "console" / f"{name}.log").read_bytes()
        assert log == bytes(host.consoles[name])
        assert host.dom(name).shutdown_reason == Shutdown.poweroff


def test_xl_list_shows_every_domain(host):
    rows = {r["name"]: r for r in host.ts.list()}
    assert set(rows) == {"Domain-0", "alpha", "beta"}
    assert rows["Domain-0"]["id"] == 0 and rows["Domain-0"]["mem"] == 32
    assert rows["alpha"]["state"][3] == "s" and rows["alpha"]["mem"] == 16
    assert rows["alpha"]["time"] > 0
    assert b"ringvisor shell" in host.dom0_out       # Domain 0 is up, on the first console


def test_dmesg_has_the_hypervisors_story(host):
    text = host.ts.dmesg()
    assert "(XEN) domain 0 created (dom0_t)" in text
    assert "shut down (poweroff)" in text


def test_pause_holds_a_domain_and_unpause_lets_it_go(host):
    d = host.create("gamma", "")                     # the shell: it waits for its console
    host.run_until(lambda: b"$ " in host.consoles["gamma"])
    host.ts.pause("gamma")
    dom = host.dom("gamma")
    rows = {r["name"]: r for r in host.ts.list()}
    assert rows["gamma"]["state"][2] == "p"
    host.ts.type_console("gamma", b"echo hello\n")
    before = bytes(host.consoles["gamma"])
    host.hv.run_until(lambda: False, 3_000_000, ns=50_000_000)     # 50 ms
    assert bytes(host.consoles["gamma"]) == before      # paused: it did not answer
    assert not dom.runnable
    host.ts.unpause("gamma")
    assert host.run_until(lambda: b"hello" in host.consoles["gamma"][len(before):])
    assert d in host.hv.domains


def test_destroy_returns_frames_ports_and_grants(host):
    d = host.create("delta", "")
    host.run_until(lambda: b"$ " in host.consoles["delta"])
    dom = host.hv.domains[d]
    assert dom.tot_pages > 0 and dom.events.ports_in_use() >= 2
    dom0 = host.hv.domains[0]
    ports0 = dom0.events.ports_in_use()
    maps0 = len(dom0.grants.maptrack)
    free_before = host.hv.frames.nr_free
    owned = len(host.hv.frames.owned_by(d))
    host.ts.destroy("delta")
    host.run_until(lambda: d not in host.hv.domains, 2_000_000)
    assert d not in host.hv.domains
    assert host.hv.frames.owned_by(d) == []
    assert host.hv.frames.nr_free >= free_before + owned
    assert dom0.events.ports_in_use() == ports0 - 2       # its console and xenstore channels
    assert len(dom0.grants.maptrack) == maps0 - 2         # its console and xenstore rings
    assert not any(m.granter == d for m in dom0.grants.maptrack.values())
    with pytest.raises(XlError):
        host.ts.find("delta")


def test_a_domu_is_refused_what_domain0_may_do(host):
    """domctl from a DomU: the same validated path, the security module says no."""
    attacker = host.dom("beta")
    mon = attacker.monitor
    buf = host.ts.iface.memory                       # (any memory will do to carry the argument)
    va = host.ts.xc.va0 + 0x8000                     # (clear of the toolstack's scratch)
    buf.write(va, DOMCTL.pack(cmd=Domctl.pausedomain, interface_version=DOMCTL_INTERFACE_VERSION,
                              domain=0))
    assert mon.call(Hypercall.domctl, (va,), buf) == -Errno.EACCES
    assert f"avc:  denied  {{ pause }} for domid={attacker.domid} target=0" in host.ts.dmesg()
    # Domain 0, through the same path, may look at a DomU
    alpha = host.ts.find("alpha").domid
    buf.write(va, DOMCTL.pack(cmd=Domctl.getdomaininfo, interface_version=DOMCTL_INTERFACE_VERSION,
                              domain=alpha))
    assert host.hv.domains[0].monitor.call(Hypercall.domctl, (va,), buf) == 0
    info = DOMCTL.unpack(buf.read(va, DOMCTL.size))["u"]["getdomaininfo"]
    assert info["domain"] == alpha and info["tot_pages"] >= 16 << 8
    # a DomU asking for the same is refused and logged
    assert mon.call(Hypercall.domctl, (va,), buf) == -Errno.EACCES
