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


def answers(h, line: bytes, reply: bytes) -> bool:
    before = len(h.consoles["u"])
    h.ts.type_console("u", line + b"\n")
    return h.run_until(lambda: reply in h.consoles["u"][before:], 200_000_000)


def test_mem_set_down_gives_frames_back(host):
    dom = host.dom("u")
    start, free0 = dom.tot_pages, host.hv.frames.nr_free
    assert mem(host) == 16
    host.ts.mem_set("u", 12)
    assert host.hv.run_until(lambda: dom.tot_pages == 12 * MB, 10 ** 10, step=20_000)
    assert mem(host) == 12
    assert host.hv.frames.nr_free == free0 + (start - 12 * MB)    # back in the pool
    assert len(dom.p2m) >= dom.tot_pages
    # the kernel goes on in what it kept: fork, copy-on-write, sbrk
    assert answers(host, b"forkwait 3", b"forkwait: iters=3")
    assert answers(host, b"pgfault 64", b"pgfault: iters=64")


def test_mem_set_up_takes_them_again(host):
    dom = host.dom("u")
    host.ts.mem_set("u", 16)
    assert host.hv.run_until(lambda: dom.tot_pages >= 16 * MB, 10 ** 10, step=20_000)
    assert mem(host) == 16
    assert answers(host, b"pgfault 400", b"pgfault: iters=400")


def test_mem_set_beyond_maxmem_is_refused(host):
    with pytest.raises(XlError, match="outside 1..16"):
        host.ts.mem_set("u", 17)
