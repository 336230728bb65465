"""The translation cache: its size limit, its flush policy, its statistics.

Binary translation keeps translated kernel code in a fixed region of the
hypervisor area (``layout.TC``, 2 MiB).  Space is handed out sequentially;
when a translation no longer fits, the whole cache is flushed and translation
starts again (``tcache.py``).  The teaching kernel runs here under a cache a
few pages small, so that it fills and flushes many times over -- across
interrupts, preemption, faults and chained jumps -- and its serial output must
still be native's.  The bookkeeping (allocation, chaining, invalidation,
flush) is unit-tested on a bare ``TranslationCache``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ringvisor.guests import build as guest_build
from ringvisor.hw.machine import read_image
from ringvisor.hw.memory import PhysicalMemory
from ringvisor.vmm import layout as L
from ringvisor.vmm import run_vm
from ringvisor.vmm.runner import create_vm
from ringvisor.vmm.tcache import CHAIN_STUB, TranslationCache, Unit

LIMIT = 60_000_000


@pytest.fixture(scope="module")
def kernel() -> Path:
    # the shipped image: test_guest_kernel checks it is what the sources build
    return guest_build.image_path("kernel")


def untagged(out: bytes) -> list[str]:
    return [l for l in out.decode("utf-8", "replace").splitlines() if not l.startswith("[timing]")]


# -- the teaching kernel under a small cache --------------------------------------------------
@pytest.mark.parametrize("cmdline,size", [("run=selftest", 6 << 10),
                                          ("run=all-fault,hello", 4 << 10)])
def test_small_cache_flushes_and_output_is_native(kernel, cmdline, size):
    ref = run_vm(kernel, "native", cmdline, max_instructions=LIMIT, quiet=True)
    out = bytearray()
    m, mon = create_vm(read_image(kernel), "bt", cmdline, output=out.extend, tc_size=size)
    tc = mon.tc
    assert tc.size == size
    highest = [0]
    add = tc.add

    def checked_add(unit, code, **kw):
        # every translation lies inside the cache's size, from its start
        assert tc.start <= unit.start and unit.end <= tc.start + size
        assert unit.end - unit.start == len(code)
        highest[0] = max(highest[0], unit.end - tc.start)
        add(unit, code, **kw)

    tc.add = checked_add
    stop = m.run(LIMIT)
    assert untagged(bytes(out)) == untagged(ref.output)
    assert stop.status == ref.status
    s = mon.report()
    assert s["flushes"] >= 3, s
    assert highest[0] > size - 1024          # it really filled up before flushing
    assert s["tc_bytes"] <= size
    # a flush forgets everything: more translations than distinct code, and only
    # what was translated since the last flush is still looked up
    assert s["translations"] > 1000 and s["chains"] > 0
    assert len(tc.all_units) <= size // 16
    assert s["hits"] <= s["lookups"] and 0 < s["tc_hit_rate"] < 1


def test_default_cache_does_not_flush(kernel):
    r = run_vm(kernel, "bt", "run=all-fault,hello", max_instructions=LIMIT, quiet=True)
    s = r.stats["monitor"]
    assert s["flushes"] == 0 and 0 < s["tc_bytes"] < L.TC_SIZE


def test_cache_size_is_checked(kernel):
    image = read_image(kernel)
    for bad in (0, 0x800, L.TC_SIZE + 0x1000):
        with pytest.raises(ValueError):
            create_vm(image, "bt", tc_size=bad)
    with pytest.raises(ValueError):
        create_vm(image, "trapemu", tc_size=0x4000)


# -- bookkeeping on a bare cache ----------------------------------------------------------------
BASE = 1 << 20                      # the "monitor's" physical base in a small memory
SIZE = 0x1000


@pytest.fixture
def tc():
    mem = PhysicalMemory(BASE + L.TC + L.TC_SIZE)
    return TranslationCache(mem, BASE, SIZE)


def make_unit(tc: TranslationCache, guest: int, n: int, frames=None, length: int = 0x40) -> tuple[Unit, bytes]:
    start = tc.top
    code = bytes([0x90]) * length
    step = length // n
    u = Unit(guest, guest, start, start + length, set(frames or {guest >> 12}),
             [start + i * step for i in range(n)], [guest + 2 * i for i in range(n)])
    return u, code


def read_tc(tc: TranslationCache, lin: int, n: int) -> bytes:
    return tc.mem.read(tc.phys + (lin - tc.start), n)


def test_allocation_is_sequential_and_counted(tc):
    assert tc.start == L.MLIN + L.TC and tc.phys == BASE + L.TC and tc.top == tc.start
    assert tc.room(SIZE) and not tc.room(SIZE + 1)
    a, code_a = make_unit(tc, 0x1000, 4)
    tc.add(a, code_a)
    b, code_b = make_unit(tc, 0x2000, 8, length=0x80)
    tc.add(b, code_b)
    assert (a.start, b.start, tc.top) == (tc.start, tc.start + 0x40, tc.start + 0xC0)
    assert read_tc(tc, b.start, 0x80) == code_b
    assert tc.units == {0x1000: a, 0x2000: b}
    assert tc.by_frame == {1: {0x1000}, 2: {0x2000}}
    assert tc.starts == [a.start, b.start] and tc.all_units == [a, b]
    s = tc.stats
    assert (s["translations"], s["guest_instructions"], s["tc_bytes"]) == (2, 12, 0xC0)
    assert tc.room(SIZE - 0xC0) and not tc.room(SIZE - 0xC0 + 1)


def test_addresses_map_back_to_guest_instructions(tc):
    a, code = make_unit(tc, 0x1000, 4)          # 4 instructions, 0x10 bytes each
    tc.add(a, code)
    b, code = make_unit(tc, 0x5000, 2)
    tc.add(b, code)
    assert tc.unit_at(a.start) is a and tc.unit_at(a.end - 1) is a and tc.unit_at(b.start) is b
    assert tc.unit_at(tc.start - 1) is None and tc.unit_at(b.end) is None
    assert [tc.guest_eip(a.start + off) for off in (0, 0xF, 0x10, 0x25, 0x3F)] == \
        [0x1000, 0x1000, 0x1002, 0x1004, 0x1006]
    assert tc.guest_eip(b.start + 0x20) == 0x5002
    assert tc.guest_eip(b.end + 4) is None


def test_chain_patches_a_direct_jump_and_remembers_it(tc):
    a, code = make_unit(tc, 0x1000, 4)
    tc.add(a, code)
    b, code = make_unit(tc, 0x2000, 4)
    tc.add(b, code)
    site = a.start + 0x30
    tc.write(site, CHAIN_STUB)
    tc.chain(site, b)
    rel = int.from_bytes(read_tc(tc, site + 1, 4), "little")
    assert read_tc(tc, site, 1) == b"\xE9" and (site + 5 + rel) & 0xFFFFFFFF == b.start
    back = a.start + 0x10                       # a backward jump: negative displacement
    tc.chain(back + 0x30, a)
    rel = int.from_bytes(read_tc(tc, back + 0x31, 4), "little")
    assert (back + 0x35 + rel) & 0xFFFFFFFF == a.start
    assert b.incoming == [site] and a.incoming == [back + 0x30]
    assert tc.stats["chains"] == 2


def test_invalidating_a_frame_unchains_its_units_only(tc):
    a, code = make_unit(tc, 0x1000, 4)
    tc.add(a, code)
    b, code = make_unit(tc, 0x1800, 4)          # same frame as a
    tc.add(b, code)
    c, code = make_unit(tc, 0x2FF0, 4, frames={2, 3})   # straddles frames 2 and 3
    tc.add(c, code)
    sa, sc = c.start + 0x30, a.start + 0x30
    tc.chain(sa, a)
    tc.chain(sc, c)
    assert tc.invalidate_frame(1) == 2
    assert not a.live and not b.live and c.live
    assert a.incoming == [] and read_tc(tc, sa, 5) == CHAIN_STUB
    assert set(tc.units) == {0x2FF0} and 1 not in tc.by_frame
    assert tc.stats["invalidations"] == 2
    # the code of an invalidated unit stays until the next flush (a thread may be in it)
    assert tc.unit_at(a.start) is a and tc.guest_eip(a.start) == 0x1000
    assert tc.invalidate_frame(1) == 0
    # a unit built from two frames goes with either
    assert tc.invalidate_frame(3) == 1 and not c.live and read_tc(tc, sc, 5) == CHAIN_STUB
    assert tc.invalidate_frame(2) == 0
    assert tc.units == {} and tc.stats["invalidations"] == 3


def test_invalidating_a_replaced_unit_keeps_its_successor(tc):
    old, code = make_unit(tc, 0x1000, 4)
    tc.add(old, code)
    tc.invalidate_unit(old)
    new, code = make_unit(tc, 0x1000, 4)
    tc.add(new, code)
    tc.invalidate_unit(old)                     # again, late: must not drop the new one
    assert tc.units == {0x1000: new} and new.live


def test_flush_empties_the_cache_and_counts(tc):
    a, code = make_unit(tc, 0x1000, 4)
    tc.add(a, code)
    tc.sites[a.start + 2] = ("chain", 0x2000)
    tc.entries[0x1000] = (a, a.start)
    while tc.room(0x40):
        u, code = make_unit(tc, 0x10000 + tc.top - tc.start, 4)
        tc.add(u, code)
    assert tc.top == tc.start + SIZE and tc.stats["translations"] == SIZE // 0x40
    tc.flush()
    assert tc.top == tc.start and tc.room(SIZE)
    assert not (tc.units or tc.by_frame or tc.starts or tc.all_units or tc.sites or tc.entries)
    assert tc.unit_at(a.start) is None and tc.guest_eip(a.start) is None
    assert tc.stats["flushes"] == 1 and tc.stats["translations"] == SIZE // 0x40
    b, code = make_unit(tc, 0x3000, 4)
    tc.add(b, code)
    assert b.start == tc.start and tc.stats["tc_bytes"] == 0x40
