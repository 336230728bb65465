"""The Xen structure: one hypervisor, Domain 0, DomUs built by the toolstack.

One machine is booted for the whole module (Domain 0, then DomUs created by
the toolstack through hypercalls), and the tests look at it from the
outside: consoles, xl's views, frames, ports and grants, what the security
module refused, and a DomU of two vCPUs (tests/pvguests/smpvcpu)."""

from __future__ import annotations

import re

import pytest

from elftools.elf.elffile import ELFFile

from ringvisor.errors import ConfigError
from ringvisor.abi import (DOMCTL, DOMCTL_INTERFACE_VERSION, Domctl, Errno, Hypercall, Runstate,
                           Shutdown)
from ringvisor.guests.build import image_path
from ringvisor.hypervisor.core import Hypervisor
from ringvisor.hypervisor.domain import State
from ringvisor.hypervisor.interface import HypercallInterface
from ringvisor.hypervisor.sched import ACCT_NS
from ringvisor.hypervisor.vcpuinfo import runstate_info
from ringvisor.lifecycle import codec
from ringvisor.toolstack import saverestore
from ringvisor.toolstack.config import DomainConfig
from ringvisor.toolstack.xc import XcError
from ringvisor.toolstack.xl import Toolstack, XlError
from ringvisor.vmm import run_vm
from test_paravirt import GDTGUARD, GDTGUARD_SMP, build_pv_guest

TIMING = re.compile(rb"^\[timing\].*\n", re.M)
WORKLOADS = {"alpha": "run=syscall iters=50", "beta": "run=forkwait iters=3"}


class Host:
    def __init__(self, tmp, cpus: int = 1) -> None:
        self.dom0_out = bytearray()
        self.hv = Hypervisor(192, output=self.dom0_out.extend, cpus=cpus)
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


def consoles_are_as_alone(host, workloads: dict[str, str]) -> None:
    """Each DomU printed (to its console and its log) what the same kernel prints alone
    under --mode paravirt, and powered off."""
    for name, cmdline in workloads.items():
        alone = run_vm(image_path("kernel-pv"), "paravirt", cmdline, mem_mb=16)
        assert alone.output.strip(), name
        assert TIMING.sub(b"", bytes(host.consoles[name])) == TIMING.sub(b"", alone.output), name
        log = (host.ts.state_dir / "console" / f"{name}.log").read_bytes()
        assert log == bytes(host.consoles[name])
        assert host.dom(name).shutdown_reason == Shutdown.poweroff


def test_two_domus_print_what_they_print_alone(host):
    consoles_are_as_alone(host, WORKLOADS)


def test_xl_list_shows_every_domain(host):
    rows = {r["name"]: r for r in host.ts.list()}
    assert set(rows) == {"Domain-0", "alpha", "beta"}
    assert rows["Domain-0"]["id"] == 0 and rows["Domain-0"]["mem"] == 32
    assert rows["alpha"]["state"][3] == "s" and rows["alpha"]["mem"] == 16
    assert rows["alpha"]["time"] > 0
    assert b"ringvisor shell" in host.dom0_out       # Domain 0 is up, on the first console


def test_a_shut_down_domains_vcpus_are_offline_and_charged_nothing(host):
    """Xen's domain_shutdown pauses every vCPU of the domain: off the CPU they are
    RUNSTATE_offline (not runnable, as one waiting for the CPU is), and while Domain 0
    runs on they are neither scheduled, charged nor given credit."""
    hv = host.hv
    vs = [v for n in WORKLOADS for v in host.dom(n).vcpus]

    def seen():
        return [(v.runstate, runstate_info(v, hv.clock.now_ns(), 0)["time"][:Runstate.offline],
                 v.cpu_time_ns, hv.sched.info[v.key].credit) for v in vs]
    before = seen()
    assert {b[0] for b in before} == {Runstate.offline}
    n = hv.sched.stats["accountings"]
    assert hv.run_until(lambda: hv.sched.stats["accountings"] > n, 3_000_000, step=20_000)
    assert seen() == before and not any(hv.sched.eligible(v) for v in vs)


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


def test_run_until_stops_when_nothing_can_wake_any_domain():
    """Domain 0 paused at its shell prompt, the only domain: every pCPU idles and only the
    hypervisor's own timers fire, so a wait for anything skipped virtual time for ever,
    retiring almost nothing, until its instruction budget ran out (one 500,000-instruction
    step took four minutes).  It stops within a step with one line; unpaused, Domain 0
    answers input typed meanwhile (a serial line's waiting input wakes it)."""
    import itertools
    from ringvisor.hypervisor.stall import Stalled
    out = bytearray()
    hv = Hypervisor(64, output=out.extend)
    hv.build_dom0(image_path("kernel-pv").read_bytes(), "", 16, "kernel-pv")
    hv.start()
    assert hv.run_until(lambda: b"$ " in out, 40_000_000, step=20_000)
    hv.pause(hv.domains[0])
    polls = itertools.count()         # (without the check: true after 40 idle steps)
    with pytest.raises(Stalled) as e:
        hv.run_until(lambda: next(polls) > 40, 10 ** 12, step=1000)
    assert str(e.value) == ("every domain is blocked with nothing pending (no timer, event or "
                            "input can wake a vCPU): nothing more will happen")
    assert next(polls) < 10 and e.value.exit_status == 1
    hv.machine.feed_input(b"echo woken\n")
    hv.unpause(hv.domains[0])
    assert hv.run_until(lambda: b"woken\n" in out.split(b"echo woken")[-1], 40_000_000,
                        step=20_000)


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


# -- a domain of several vCPUs ------------------------------------------------------------------
# What smpvcpu prints up to "smpvcpu: phase 1".  Xen's answers (common/domain.c
# do_vcpu_op, common/event_channel.c): a vCPU the domain does not have is -ENOENT,
# VCPUOP_up before VCPUOP_initialise -EINVAL, initialise twice -EEXIST, a global VIRQ
# on a vCPU other than 0 -EINVAL, a VIRQ bound twice on a vCPU -EEXIST, bind_vcpu of an
# IPI -EINVAL, a one-shot timer for another vCPU -EINVAL; domctl on Domain 0 from a
# DomU: the security module's -EACCES.
SMP_PHASE_1 = {
    "is_up 1": 0, "up 1 before initialise": -22, "is_up 2": -2, "initialise 2": -2,
    "domctl getvcpuinfo of Domain 0": -13, "domctl max_vcpus of Domain 0": -13,
    # public/vcpu.h, common/domain.c map_vcpu_info: the slot within one page, in a frame
    # of its own, once per vCPU, by itself or for a vCPU that is down (-EINVAL each);
    # everything pending after the move; the runstate area below the hypervisor (-EFAULT),
    # written at once (RUNSTATE_running 0, RUNSTATE_offline 3)
    "vcpu_info across a page": -22, "vcpu_info of vcpu 2": -2,
    "vcpu_info in a frame not its own": -22, "vcpu_info 0": 0, "vcpu_info 0 all pending": 1,
    "vcpu_info 0 again": -22, "vcpu_info 1 while down": 0,
    "vcpu_info page given back": 0,                    # (extents done: none)
    "runstate area in the hypervisor": -14, "runstate area 0": 0, "runstate area 1": 0,
    "runstate 0 now": 0, "runstate 1 now": 3,
    "bind_ipi 0": 0, "bind_ipi 1": 0, "bind_ipi 2": -2,
    "bind_virq timer 1": 0, "bind_virq timer 1 again": -17, "bind_virq global on 1": -22,
    "bind_virq timer 0": 0, "bind_vcpu loopback to 1": 0, "bind_vcpu of an ipi": -22,
    "bind_vcpu to 2": -2, "status vcpu": 1,
    "initialise 1": 0, "initialise 1 again": -17, "is_up 1 after initialise": 0, "up 1": 0,
    "is_up 1 after up": 1, "vcpu 1 gdt page given back": 0, "vcpu_info 1 while up": -22, "ipi rounds": 1, "vcpu 1 counted": 8, "upcalls on vcpu 1": 1,
    "both counted": 1, "took turns": 1, "vcpu 1 timer": 1, "singleshot on another vcpu": -22,
    "vcpu_info 1 again by itself": -22,
    "loopback on vcpu 1": 1, "loopback on vcpu 0": 0,
    # a port moved while pending reaches its new vCPU (common/event_channel.c)
    "bind_vcpu of a pending port": 0, "pending port taken on vcpu 1": 1,
    "vcpu 1 runstate": 2, "vcpu 1 has run": 1, "vcpu 1 has waited": 1,       # (RUNSTATE_blocked)
    "runstate area 0 running": 0, "runstate area 1 agrees": 1, "runstate area 1 has run": 1,
    "down 1": 0, "is_up 1 after down": 0, "up 1 again": 0,
    # its GDT page keeps PGT_seg_desc_page: no writable mapping (xen/arch/x86/mm.c)
    "vcpu 1's gdt mapped writable while down": -22, "vcpu 1's gdt mapped read-only while down": 0,
}


def said(host, domid: int) -> list[str]:
    """What domain ``domid`` wrote with console_io (the hypervisor's console)."""
    tag = f"(d{domid}) "
    return [l[len(tag):] for l in host.ts.dmesg().splitlines() if l.startswith(tag)]


def answers(lines: list[str]) -> dict[str, int]:
    return {k: int(v) for k, v in (l.rsplit(" ", 1) for l in lines if not l.startswith("smpvcpu:"))}


@pytest.fixture(scope="module")
def smp(host, tmp_path_factory):
    """smpvcpu in a domain of two vCPUs, run to the end of its first phase."""
    image = build_pv_guest("smpvcpu", tmp_path_factory.mktemp("smpvcpu"))
    cfg = DomainConfig(name="smp", kernel=str(image), memory=4, vcpus=2, cmdline="rounds=8",
                       on_poweroff="preserve")
    hv = host.hv
    console = hv.guest_console

    def pause_at_phase_1(dom, data: bytes) -> None:
        console(dom, data)
        if b"smpvcpu: phase 1" in data:
            hv.pause(dom)                 # held there, whatever the clock does meanwhile
    hv.guest_console = pause_at_phase_1
    try:
        domid = host.ts.create(cfg)
        assert host.run_until(lambda: "smpvcpu: phase 1" in said(host, domid)), said(host, domid)
    finally:
        hv.guest_console = console
    return image, domid


def test_a_domain_brings_up_its_second_vcpu_and_they_exchange_ipis(host, smp):
    _, domid = smp
    lines = said(host, domid)
    assert lines[0] == "smpvcpu: start" and lines[-1] == "smpvcpu: phase 1"
    assert answers(lines) == SMP_PHASE_1


def test_a_domains_gdt_frames_are_typed_as_in_xen(host, tmp_path):
    """gdtguard as a DomU: the same answers as under --mode paravirt (test_paravirt.py),
    with the domain's pseudo-physical frames (mmu_update, update_va_mapping, set_gdt and
    the trapped direct store all check the type), and with a second vCPU, a context's
    directory validated as a NEW_BASEPTR's (Xen's arch_set_info_guest)."""
    image = build_pv_guest("gdtguard", tmp_path)
    domid = host.ts.create(DomainConfig(name="gdtguard", kernel=str(image), memory=4,
                                        vcpus=2, on_poweroff="preserve"))
    assert host.run_until(lambda: "gdtguard: done" in said(host, domid)), said(host, domid)
    lines = said(host, domid)
    assert lines[0] == "gdtguard: start", lines
    assert dict(l.rsplit(" ", 1) for l in lines[1:-1]) == {**GDTGUARD, **GDTGUARD_SMP}


def test_xl_shows_each_vcpu(host, smp):
    image, domid = smp
    rows = host.ts.vcpu_list(["smp"])
    assert [(r["name"], r["id"], r["vcpu"]) for r in rows] == [("smp", domid, 0), ("smp", domid, 1)]
    assert all(r["state"][2] == "-" and r["cpu"] == 0 for r in rows)      # both online
    assert rows[1]["state"] == "-b-" and rows[1]["time"] > 0             # vCPU 1 waits
    listed = {r["name"]: r for r in host.ts.list()}
    assert listed["smp"]["vcpus"] == 2 and listed["alpha"]["vcpus"] == 1
    info = host.ts.xc.domain_info(domid)
    assert info["nr_online_vcpus"] == 2 and info["max_vcpu_id"] == 1
    # vCPU 1's context: in the guest's ap code, on its own stack (the ELF's symbols)
    with open(image, "rb") as f:
        syms = {s.name: s["st_value"] for s in ELFFile(f).get_section_by_name(".symtab").iter_symbols()}
    host.ts.pause("smp")
    host.run_until(lambda: not host.hv.on_cpu(host.hv.domains[domid]), 1_000_000)
    try:
        ctx = host.ts.xc.get_vcpu_context(domid, 1)
        assert syms["ap_stack"] < ctx["user_regs"]["esp"] <= syms["ap_stack"] + 8192
        assert ctx["event_callback_eip"] == syms["upcall1"]
        assert host.ts.xc.get_vcpu_context(domid, 0)["event_callback_eip"] == syms["upcall0"]
        with pytest.raises(XcError, match="EINVAL|22"):
            host.ts.xc.get_vcpu_context(domid, 2)
    finally:
        host.ts.unpause("smp")


def save_restore_and_finish(host, domid: int, check=lambda d: None) -> None:
    """smpvcpu held at its phase 1: saved (and destroyed), restored, ``check``-ed, run to
    its end (``check``: of the restored domain, before it runs again)."""
    saved = []
    host.ts.save("smp", lambda data, err: saved.append((data, err)) or "destroy")
    assert host.run_until(lambda: saved) and saved[0][1] is None
    assert domid not in host.hv.domains
    new = host.ts.restore(saved[0][0], "smp.save")
    d = host.hv.domains[new]
    assert [v.online for v in d.vcpus] == [True, True]
    check(d)
    assert host.run_until(lambda: d.dead), said(host, new)
    lines = said(host, new)
    # (its vcpu_info and runstate areas where it registered them: the rounds need both)
    assert lines == ["ipi rounds after 1", "runstate areas after 1", "down 1 at the end 0",
                     "vcpu 1 counted in all 16", "smpvcpu: done"]
    assert d.shutdown_reason == Shutdown.poweroff
    host.ts.destroy("smp")


def test_save_and_restore_carry_every_vcpu(host, smp, tmp_path):
    save_restore_and_finish(host, smp[1])


def as_version_1(blob: bytes) -> bytes:
    """A version-2 context of a one-vCPU domain in version 1's layout (before domains had
    several vCPUs: vCPU 0's records at the top level)."""
    st = codec.decode(blob)
    v = st.pop("vcpus")
    assert len(v) == 1
    st["version"] = 1
    st["monitor"].update(v[0]["monitor"])
    st["gdt_gfns"], st["timer"], st["vcpu"] = v[0]["gdt_gfns"], v[0]["timer"], v[0]["regs"]
    st["domain"]["blocked"] = v[0]["blocked"]
    return codec.encode(st, "context")


def test_a_version_1_context_still_restores(host, smp):
    """An image saved before vCPUs were several (context version 1) restores as it was
    (of a guest of that time: its vcpu_info in the shared-info page)."""
    image, _ = smp
    cfg = DomainConfig(name="uni", kernel=str(image), memory=4, vcpus=1, cmdline="legacy=1",
                       on_poweroff="preserve")
    domid = host.ts.create(cfg)
    assert host.run_until(lambda: "initialise 1 -2" in said(host, domid))   # no vCPU 1
    host.run_until(lambda: host.hv.domains[domid].blocked, 2_000_000)
    host.ts.pause("uni")
    host.run_until(lambda: not host.hv.on_cpu(host.hv.domains[domid]), 1_000_000)
    before = host.ts.xc.get_vcpu_context(domid)
    saved = []
    host.ts.save("uni", lambda data, err: saved.append(data) or "destroy")
    assert host.run_until(lambda: saved)
    meta, context, frames, memory, used = saverestore.parse_stream(saved[0], "uni.save")
    new = saverestore.restore_stream(host.ts.xc, meta, as_version_1(context), frames, memory,
                                     used, 0)
    try:
        assert host.ts.xc.get_vcpu_context(new) == before
        assert host.ts.xc.domain_info(new)["nr_online_vcpus"] == 1
    finally:
        host.ts.xc.destroy(new)


def test_domain_0_of_two_vcpus(smp):
    """Domain 0 with ``dom0_max_vcpus`` 2 (``ringvisor xen --dom0-max-vcpus 2``): smpvcpu
    as Domain 0 brings its vCPU 1 up and the two exchange IPIs as in a DomU; the
    privileged domain may ask the domctls a DomU is refused; its shutdown stops the
    machine.  (The bundled kernel-pv is uniprocessor: docs/xen.md.)"""
    image, _ = smp
    out = bytearray()
    hv = Hypervisor(64, output=out.extend)
    with pytest.raises(ConfigError, match="1 to 8 vCPUs"):
        hv.build_dom0(image.read_bytes(), "", 4, "smpvcpu", max_vcpus=9)
    hv = Hypervisor(64, output=out.extend)
    hv.build_dom0(image.read_bytes(), "rounds=2", 4, "smpvcpu", max_vcpus=2)
    d = hv.domains[0]
    assert [(v.initialised, v.online) for v in d.vcpus] == [(True, True), (False, False)]
    hv.start()
    hv.run_until(lambda: False, 60_000_000, step=200_000)      # until Domain 0 stops it
    assert hv.machine.stop is not None and hv.machine.stop.reason == "dom0", hv.machine.stop
    lines = out.decode().splitlines()
    assert lines[0] == "smpvcpu: start" and lines[-1] == "smpvcpu: done", lines
    got = answers(lines)
    expect = {**SMP_PHASE_1, "vcpu 1 counted": 2, "ipi rounds after": 1,
              "runstate areas after": 1, "down 1 at the end": 0, "vcpu 1 counted in all": 4,
              # Domain 0's own vCPUs are its to ask about (default.policy: dom0_t self
              # getvcpuinfo), not to add to once it runs (no max_vcpus on self: -EACCES)
              "domctl getvcpuinfo of Domain 0": 0, "domctl max_vcpus of Domain 0": -13}
    assert got == expect
    assert d.shutdown_reason == Shutdown.poweroff


def test_vcpus_beyond_the_limit_are_refused(host):
    xc = host.ts.xc
    domid = xc.create(0, bytes(16), 0)
    try:
        with pytest.raises(XcError):
            xc.max_vcpus(domid, 9)                    # ringvisor's limit is 8
        xc.max_vcpus(domid, 3)
        with pytest.raises(XcError):
            xc.max_vcpus(domid, 2)                    # Xen: vCPUs never go away
        assert xc.domain_info(domid)["max_vcpu_id"] == 2
        assert [xc.vcpu_info(domid, k)["online"] for k in range(3)] == [0, 0, 0]
    finally:
        xc.destroy(domid)
