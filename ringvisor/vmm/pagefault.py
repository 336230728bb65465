"""The #PF path of shadow paging (mixed into ``Monitor``).

Every page fault the guest takes while running on the monitor's shadow page
tables enters here, and is sorted out as the chapter's section 2.1 has it:
a fault the guest's own tables call for is reflected into the guest (its CR2,
its #PF handler); a fault only the shadow caused (an entry not filled yet, a
store into a page the monitor keeps read-only: a page table, a GDT or LDT
page, a device's page) is handled and the guest resumes, none the wiser.

Apart from ``monitor.py`` because it is the one handler that decides between
the guest's faults and the monitor's; the shadow tables themselves are
``shadow.py``, the guest's tables as the monitor reads them ``guestmem.py``.
"""

from __future__ import annotations

from ringvisor.hw.mmu import PF_I, fetch_fault, smap_blocks
from ringvisor.hw.state import CR4_SMEP

from . import layout as L
from .errors import MonitorStop
from .frame import Frame
from .guestmem import W, GuestPageFault
from .mmio import mmio_fault
from .vcpu import CR0_WP


class ShadowFaults:
    """The page-fault handler of the monitor core."""

    def page_fault(self, f: Frame) -> None:
        st = self.cpu.state
        lin, err = st.cr2, f.err
        write, user = bool(err & 2), bool(err & 4)
        if lin >= L.MLIN:
            # the guest reached for the hypervisor region: as if nothing were mapped there
            self.guest_page_fault(f, lin, err & ~1)
            return
        try:
            m = self.gm.translate(lin, write, user)
        except GuestPageFault as e:
            # (I/D as the real fault has it: the real CR4 carries the guest's SMEP)
            self.guest_page_fault(f, e.address, e.error_code | (err & PF_I))
            return
        if err & PF_I and not user and m.user and self.vcpu.cr4 & CR4_SMEP:
            # the kernel fetched from a user page under its own SMEP (the real CR4 carries
            # it): the guest's fault, P and I/D (SDM Vol. 3 §4.6.1, §4.7) -- P even when
            # the real fault was the shadow's not-present entry: the guest's is present
            self.guest_page_fault(f, lin, PF_I | 1)
            return
        code = (self.frame_code_base(f) + f.eip) & 0xFFFFFFFF
        if smap_blocks(self.vcpu.cr4, f.eflags, m.user, user, fetch_fault(err, lin, code)):
            # the kernel (at the real ring 1, supervisor too) touched a user page under
            # its own SMAP with AC clear (the real CR4 and EFLAGS.AC are the guest's)
            self.guest_page_fault(f, lin, (err & 2) | 1)
            return
        frame = m.phys & ~0xFFF
        if not self.gm.translated and frame >= self.guest_ram and mmio_fault(self, f, m, lin, err):
            return                      # a device's page (``mmio.py``)
        self.traps["#PF (shadow)"] += 1
        if not self.gm.translated and frame >= self.guest_ram:
            device = self.machine.mem.device_at(frame)
            if device is not None:
                raise MonitorStop(f"{self.name}: the guest reached for the machine's "
                                  f"{device} at {m.phys:#x}, which {self.name} does not give a "
                                  f"guest")
            raise MonitorStop(f"{self.name}: the guest mapped linear {lin:#010x} to physical "
                              f"{frame:#x}, beyond its {self.guest_ram >> 20} MiB")
        ppn = frame >> 12
        # a store into a table its own mapping comes from (the live page directory, a
        # self-mapped table): unprotecting cannot let it through, as the fill that
        # follows protects the frame again
        own_table = ppn in {a >> 12 for a in (m.pde_addr, m.pte_addr) if a is not None}
        if write and ppn in self.gdt.frames and ppn not in self.gdt.relaxed and not own_table \
                and ppn not in self.ldt.frames and self.gdt_store(f, lin, m):
            return
        if write and self.shadow.is_protected(ppn):
            if own_table:
                self.gdt.stored(ppn)
                self.ldt.stored(ppn)
            else:
                self.protected_write(f, ppn)
        elif write and err & 1 and not own_table:
            self.shadow.stats["dirty_faults"] += 1
        self.shadow.install(lin, frame, m.user, self.shadow_writable(m) and (m.dirty or write),
                            m.pde_addr, m.pte_addr)
        if write and not self.shadow.lookup(lin) & W:
            # the store must happen and the page must stay read-only (a table it maps
            # itself through; a user page the kernel writes with WP clear): one step
            self.open_page(f, lin, frame, self.shadow.is_table(ppn) or ppn in self.gdt.frames
                           or ppn in self.ldt.frames)

    def guest_page_fault(self, f: Frame, address: int, error_code: int,
                         eip: int | None = None) -> None:
        """The fault is the guest's own: its CR2 and its #PF handler, at the guest
        instruction ``f`` stands for (or at ``eip``)."""
        self.traps["#PF (guest)"] += 1
        self.vcpu.cr2 = address
        self.deliver(f, 14, error_code, False, self.guest_eip(f) if eip is None else eip)

    def gdt_store(self, f: Frame, lin: int, m) -> bool:
        """A store into a page holding the guest's GDT (and maybe hot data): done by the
        monitor if it can (``stores``), the page staying protected."""
        ppn = m.phys >> 12
        if f.user or self.shadow.is_table(ppn) or ppn in self.shadow.pinned:
            return False
        from .stores import emulate_store
        ripe = self.gdt.ripe(ppn)
        self.gdt.changed = False
        if not emulate_store(self, f, self.code_at(f)):
            return False
        self.traps["#PF (GDT page store emulated)"] += 1
        self.gdt.monitor_store(ppn)
        writable = False
        if ripe and not self.gdt.changed:
            # hot data: the page writable from here on, its descriptors poisoned (the
            # store is done already: a retry would be seen twice by a watchpoint)
            self.gdt.relax(ppn)
            self.traps["#PF (GDT page relaxed)"] += 1
            writable = self.shadow_writable(m)
        # (after the store: its own read and write found the page in the real TLB)
        self.shadow.install(lin, m.phys & ~0xFFF, m.user, writable, m.pde_addr, m.pte_addr)
        return True

    def shadow_writable(self, m) -> bool:
        """May the shadow map the guest's mapping ``m`` writable?  With CR0.WP clear a
        supervisor store ignores R/W (SDM Vol. 3 §4.6.1): a page only the kernel
        reaches can be writable in the shadow."""
        return m.writable or (not self.vcpu.cr0 & CR0_WP and not m.user)

    def protected_write(self, f: Frame, ppn: int) -> None:
        """The guest stores to a frame the monitor keeps read-only."""
        if self.shadow.is_table(ppn):
            self.traps["#PF (page table written)"] += 1
            self.shadow.write_fault(ppn)
        if ppn in self.gdt.frames:
            self.traps["#PF (GDT written)"] += 1
            self.gdt.stored(ppn)
        if ppn in self.ldt.frames:
            self.traps["#PF (LDT written)"] += 1
            self.ldt.stored(ppn)

