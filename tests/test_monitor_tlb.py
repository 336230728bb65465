"""The monitor reads guest memory through the real TLB (``GuestMemory.use_tlb``): every
entry it may use must be what a walk of the guest's own page tables gives.

At every entry into the monitor and again before it resumes the guest, each page
the real TLB holds below the hypervisor region is walked in the guest's tables
(without setting a bit): the walk must allow the access the entry stands for
(a supervisor or user read, a supervisor write on a dirty page) and reach the
same machine address.  The guests change their mappings while they run: the
teaching kernel forks, faults pages in and rewrites PTEs (``ptemod``, ``pgfault``,
``forkwait``), and ``remap`` moves its own code pages under chained calls.
"""

from __future__ import annotations

import pytest

from hwtests import build_kernel
from ringvisor.guests.build import image_path
from ringvisor.hw.machine import read_image
from ringvisor.vmm import layout as L
from ringvisor.vmm.guestmem import GuestPageFault
from ringvisor.vmm.runner import create_vm

WORKLOADS = "run=syscall,pgfault,ptemod,forkwait iters=4"


def _check_tlb(mon, where: str, seen: list) -> None:
    mmu, gm = mon.cpu.mmu, mon.gm
    if mmu.state.cr3 & ~0xFFF != mon.shadow.root.pd or gm.tlb_stale:
        return
    for table, write, user in ((mmu.tr_s, False, False), (mmu.tr_u, False, True),
                               (mmu.tw_s, True, False)):
        for page, d in list(table.items()):
            if page >= L.MLIN or page in gm.fixed:
                continue
            try:
                m = gm.translate(page, write, user, set_bits=False)
            except GuestPageFault as e:
                raise AssertionError(f"{where}: the TLB maps {page:#010x} "
                                     f"(write={write}, user={user}); the guest's tables "
                                     f"refuse it: {e}") from None
            assert m.phys == page + d, (where, hex(page), hex(m.phys), hex(page + d))
            if write:
                assert m.dirty, (where, hex(page), "write entry for a clean page")
            seen.append(page)


def _run_checked(image: bytes, mode: str, cmdline: str) -> tuple[str, int]:
    out = bytearray()
    m, mon = create_vm(image, mode, cmdline, engine="jit", output=out.extend)
    seen: list[int] = []
    handle = mon.handle

    def checked(cpu, f=None):
        _check_tlb(mon, "entry", seen)
        f = handle(cpu, f)
        _check_tlb(mon, "resume", seen)
        return f

    mon.handle = checked
    stop = m.run(20_000_000)
    assert stop.status == 1 or stop.reason == "exit", stop.message
    assert seen, "the check saw no TLB entry at all"
    return out.decode(errors="replace"), mon.stats["reflected"]


@pytest.mark.parametrize("mode", ["trapemu", "bt", "paravirt"])
def test_teaching_kernel_tlb_matches_guest_tables(mode):
    text, reflected = _run_checked(read_image(image_path("kernel-pv" if mode == "paravirt"
                                                         else "kernel")), mode, WORKLOADS)
    for name in ("syscall", "pgfault", "ptemod", "forkwait"):
        assert f"{name}: iters=4" in text, text[-400:]
    assert reflected > 0


@pytest.mark.parametrize("mode", ["trapemu", "bt"])
def test_remapping_guest_tlb_matches_guest_tables(mode):
    text, _ = _run_checked(read_image(str(build_kernel("remap"))), mode, "")
    assert "remap: done" in text, text[-400:]
