"""Shadow paging invariants, on a real machine's memory and TLB.

The guest's page tables are built by hand in guest RAM; the shadow is filled
the way the monitor fills it, and the real MMU (``cpu.translate``-free: we
read the shadow entries the hardware would walk) must never hold a writable
mapping of a guest page-table frame, nor a mapping the guest has changed.
"""

from __future__ import annotations

import pytest

from ringvisor.hw.machine import Machine
from ringvisor.vmm import layout as L
from ringvisor.vmm.shadow import NO_PAGING, ShadowPaging

RAM = 4 << 20
PD, PT, DATA = 0x10000, 0x11000, 0x20000


@pytest.fixture
def sp():
    m = Machine((RAM + L.MONITOR_RAM) >> 20)
    mem = m.mem
    mem.write32(PD + 0 * 4, PT | 7)
    for i in range(16):
        mem.write32(PT + i * 4, (DATA + i * 0x1000) | 7)
    mem.write32(PT + 16 * 4, PT | 7)          # the page table maps itself at 0x10000
    s = ShadowPaging(m.cpu, mem, RAM, max_roots=2)
    s.switch(PD >> 12)
    return s


def fill(s, lin):
    pte_addr = PT + (lin >> 12) * 4
    frame = s.mem.read32(pte_addr) & ~0xFFF
    s.install(lin, frame, True, True, PD, pte_addr)


def test_table_frames_are_read_only(sp):
    fill(sp, 0x10000)                          # the page table, through its own mapping
    assert sp.lookup(0x10000) & 2 == 0
    fill(sp, 0x1000)
    assert sp.lookup(0x1000) & 2


def test_writable_mapping_loses_w_when_frame_becomes_a_table(sp):
    sp.mem.write32(PD + 1 * 4, 0)
    # map the page table frame writable before anything was read from it
    sp.install(0x10000, PT, True, True)        # (paging-off style: no table sources)
    assert sp.lookup(0x10000) & 2
    fill(sp, 0x2000)                           # now PT is read as a table
    assert sp.lookup(0x10000) & 2 == 0


def test_trapped_store_drops_what_came_from_the_table(sp):
    fill(sp, 0x1000)
    fill(sp, 0x2000)
    sp.write_fault(PT >> 12)
    assert sp.lookup(0x1000) == 0 and sp.lookup(0x2000) == 0
    assert not sp.is_protected(PT >> 12)


def test_monitor_store_drops_one_entry_and_keeps_protection(sp):
    fill(sp, 0x1000)
    fill(sp, 0x2000)
    sp.written(PT + 2 * 4, 4)
    assert sp.lookup(0x2000) == 0 and sp.lookup(0x1000) != 0
    assert sp.is_protected(PT >> 12)


def test_directory_store_forgets_the_address_space(sp):
    fill(sp, 0x1000)
    sp.written(PD, 4)                          # PDE 0 changed
    assert sp.lookup(0x1000) == 0


def test_roots_are_kept_per_cr3_and_replaced_lru(sp):
    fill(sp, 0x1000)
    pd1 = sp.cr3
    sp.switch(NO_PAGING)
    assert sp.cr3 != pd1
    sp.switch(PD >> 12)
    assert sp.cr3 == pd1 and sp.lookup(0x1000) != 0
    sp.switch(NO_PAGING)
    sp.switch(0x30)                            # a third address space: PD's shadow goes (LRU)
    sp.switch(PD >> 12)
    assert sp.lookup(0x1000) == 0


def test_exhausted_pool_starts_again():
    m = Machine((RAM + L.MONITOR_RAM) >> 20)
    s = ShadowPaging(m.cpu, m.mem, RAM, pool_pages=4)
    for i in range(8):
        s.install(i << 22, DATA, False, True)  # a new shadow table each time
    assert s.stats["shadow_pool_resets"] >= 1
    assert s.lookup(7 << 22) != 0
