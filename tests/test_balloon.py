"""The balloon driver of the para-virtual teaching kernel (guests/kernel/balloon.c,
guests/pv/balloon.c): `xl mem-set` writes the domain's memory/target in xenstore;
the kernel gives frames back to the hypervisor (decrease_reservation) down to it and
takes them again (populate_physmap) when it rises; `xl list`'s Mem follows."""

from __future__ import annotations

import pytest

from ringvisor.toolstack.xl import XlError
from test_xen import Host

MB = 256                                   # pages per MiB


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    h = Host(tmp_path_factory.mktemp("balloon"))
    h.create("u", "", maxmem=16)
    assert h.run_until(lambda: b"$ " in h.consoles["u"])
    return h


def mem(h) -> int:
    return {r["name"]: r for r in h.ts.list()}["u"]["mem"]


def settles(h, cond) -> bool:
    """The balloon looks once a second of the guest's time: give it a minute of it (the
    machine's clock is the guest's, so the bound does not depend on the host's speed)."""
    return h.hv.run_until(cond, 10 ** 10, step=20_000, ns=60 * 10 ** 9)


def answers(h, line: bytes, reply: bytes) -> bool:
    before = len(h.consoles["u"])
    h.ts.type_console("u", line + b"\n")
    return h.run_until(lambda: reply in h.consoles["u"][before:], 200_000_000)


def test_the_balloon_follows_mem_set_and_outlives_a_save(host):
    """One story (the steps depend on each other, so they are one test: pytest-xdist
    may give a module's tests to different workers)."""
    dom = host.dom("u")
    start, free0 = dom.tot_pages, host.hv.frames.nr_free
    assert dom.nr_ram_pages == 16 * MB              # start_info.nr_pages: its kernel's RAM
    assert mem(host) == 16
    host.ts.mem_set("u", 14)
    # the kernel's RAM goes down to the target; the domain's other pages (its console
    # and xenstore rings) stay
    assert settles(host, lambda: dom.tot_pages == start - 2 * MB)
    assert mem(host) == 14
    assert host.hv.frames.nr_free == free0 + 2 * MB                # back in the pool
    assert len(dom.p2m) >= dom.tot_pages
    # the kernel goes on in what it kept: fork, copy-on-write, sbrk
    assert answers(host, b"forkwait 3", b"forkwait: iters=3")
    assert answers(host, b"pgfault 64", b"pgfault: iters=64")
    # saved and restored with its holes: the restored domain has what it had, and its
    # start_info still counts the RAM it was booted with
    saved = []
    host.ts.save("u", lambda data, err: saved.append(data or err) or "destroy")
    assert host.run_until(lambda: saved) and isinstance(saved[0], bytes), saved
    domid = host.ts.restore(saved[0], "u.save")
    host.ts.managed[domid].listeners.append(host.consoles["u"].extend)
    dom = host.dom("u")
    assert dom.tot_pages == start - 2 * MB and dom.nr_ram_pages == 16 * MB
    assert answers(host, b"pgfault 16", b"pgfault: iters=16")
    # and the target up again: it takes the frames back and uses them
    free1 = host.hv.frames.nr_free
    host.ts.mem_set("u", 16)
    assert settles(host, lambda: host.hv.frames.nr_free == free1 - 2 * MB)
    assert dom.tot_pages == start and mem(host) == 16
    assert answers(host, b"pgfault 200", b"pgfault: iters=200")


def test_mem_set_beyond_maxmem_or_below_the_least_is_refused(host):
    for mb in (17, 3):
        with pytest.raises(XlError, match=r"outside 4\.\.16 "):
            host.ts.mem_set("u", mb)
