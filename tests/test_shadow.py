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
from ringvisor.vmm.shadow import NO_PAGING, PAE_KEY, ShadowPaging

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


# -- PAE address spaces in the 32-bit shadow ---------------------------------------------------
# PDPTE 1 -> PAE_PD; PAE_PD[0] -> PT_LO (0x40000000..), PAE_PD[1] -> PT_HI (0x40200000..):
# one shadow table (4 MiB) stands for the two guest page tables, one per 2 MiB half
PAE_PD, PT_LO, PT_HI = 0x12000, 0x13000, 0x14000
PDPTES = [0, PAE_PD | 1, 0, 0]
LO, HI = 0x40000000, 0x40200000


@pytest.fixture
def pae():
    m = Machine((RAM + L.MONITOR_RAM) >> 20)
    s = ShadowPaging(m.cpu, m.mem, RAM, max_roots=2)
    s.switch(PAE_KEY | 0x20, PDPTES)
    return s


def pae_fill(s, lin, table):
    pte_addr = table + ((lin >> 12) & 0x1FF) * 8
    s.install(lin, DATA + ((lin >> 12) & 0xF) * 0x1000, True, True,
              PAE_PD + ((lin >> 21) & 0x1FF) * 8, pte_addr)


def test_pae_halves_of_one_shadow_table_come_from_two_guest_tables(pae):
    pae_fill(pae, LO + 0x1000, PT_LO)
    pae_fill(pae, HI + 0x1000, PT_HI)           # no thrash: the other half stays
    assert pae.lookup(LO + 0x1000) and pae.lookup(HI + 0x1000)
    assert all(pae.is_protected(f >> 12) for f in (PAE_PD, PT_LO, PT_HI))
    pae.written(PT_HI + 8, 8)                    # PT_HI's entry 1: only HI + 0x1000
    assert pae.lookup(HI + 0x1000) == 0 and pae.lookup(LO + 0x1000)
    pae.written(PT_LO + 8 + 4, 4)                # the high dword of PT_LO's entry 1
    assert pae.lookup(LO + 0x1000) == 0
    pae_fill(pae, LO + 0x2000, PT_LO)
    pae.install(HI, DATA, True, True, PAE_PD + 8, None)   # HI is now a 2 MiB page: the
    assert pae.lookup(HI) and pae.lookup(LO + 0x2000) == 0   # shadow table starts over
    assert not pae.is_protected(PT_HI >> 12)
    pae_fill(pae, LO + 0x2000, PT_LO)            # the 2 MiB page in the other half stays
    assert pae.lookup(HI) and pae.lookup(LO + 0x2000)
    pae_fill(pae, HI + 0x1000, PT_HI)            # a table again in that half: start over
    assert pae.lookup(HI) == 0 and pae.lookup(HI + 0x1000)


def test_pae_directory_store_drops_the_quarter_it_maps(pae):
    pae_fill(pae, LO + 0x1000, PT_LO)
    pae.written(PAE_PD + 8 * 8, 8)               # PDE 8 (0x41000000): another shadow table
    assert pae.lookup(LO + 0x1000)
    pae.written(PAE_PD + 8, 8)                   # PDE 1 (HI): the same shadow table as LO
    assert pae.lookup(LO + 0x1000) == 0


def test_pae_root_starts_again_when_its_pdptes_change(pae):
    pae_fill(pae, LO + 0x1000, PT_LO)
    pd = pae.cr3
    pae.switch(NO_PAGING)
    pae.switch(PAE_KEY | 0x20, PDPTES)           # the same PDPTEs: kept
    assert pae.cr3 == pd and pae.lookup(LO + 0x1000)
    pae.switch(PAE_KEY | 0x20, [0, PAE_PD | 1, PAE_PD | 1, 0])   # reloaded, other values
    assert pae.cr3 == pd and pae.lookup(LO + 0x1000) == 0
    assert not pae.is_protected(PT_LO >> 12)


def test_pae_roots_are_state(pae):
    pae_fill(pae, LO + 0x1000, PT_LO)
    pae_fill(pae, HI + 0x1000, PT_HI)
    state = pae.get_state()
    m2 = Machine((RAM + L.MONITOR_RAM) >> 20)
    m2.mem.write(0, pae.mem.read(0, m2.mem.size))
    s2 = ShadowPaging(m2.cpu, m2.mem, RAM, max_roots=2)
    s2.set_state(state)
    assert s2.get_state() == state
    assert s2.root.pdptes == PDPTES and s2.root.halves == pae.root.halves
    s2.written(PT_HI + 8, 8)
    assert s2.lookup(HI + 0x1000) == 0 and s2.lookup(LO + 0x1000)
    s2.write_fault(PAE_PD >> 12)
    assert s2.lookup(LO + 0x1000) == 0 and not s2.is_protected(PAE_PD >> 12)
