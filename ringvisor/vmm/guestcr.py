"""The guest's control registers, virtual and real (mixed into ``Monitor``).

The guest's CR0, CR2, CR3 and CR4 live on the virtual CPU: a MOV to one of
them traps at ring 1 and is checked here as the processor checks it
(``hw.controlregs``' rules), loading the PDPTE registers where PAE paging asks for
it and moving the guest onto the shadow of its new address space.  The real
CR0 and CR4 the guest's code runs under are the monitor's, but for the bits
that govern instructions the guest executes itself (``real_control``).

Apart from ``monitor.py`` because it is one concept the chapter names on its
own -- the privileged state a de-privileged kernel must not hold -- and
because ``pagefault.py`` and the execution strategies reach it through these
few methods only.
"""

from __future__ import annotations

from ringvisor.hw.faults import GP, UD
from ringvisor.hw.state import (CR0_PE, CR0_EM, CR0_ET, CR0_MP, CR0_NE, CR0_TS,
                                CR3_MASK, CR4_DE, CR4_OSFXSR, CR4_PAE, CR4_OSXMMEXCPT, CR4_PCE,
                                CR4_SMAP, CR4_SMEP, CR4_TSD, CR4_UMIP)
from ringvisor.hw.controlregs import CR0_PDPTE_RELOAD, cr0_refused, CR4_PDPTE_RELOAD, CR4_SUPPORTED

from .errors import GuestFault, MonitorStop, pae_refused
from .shadow import PAE_KEY, address_space
from .vcpu import CR0_PG, CR0_WP, CR4_PSE

# The real CR0 and CR4 are the monitor's (paging on its shadow tables, WP so that
# ring 1 cannot write what the shadows keep read-only), except for the bits that
# govern instructions the guest's code executes itself: those are the guest's, so
# that x87/MMX/SSE instructions raise #NM and #UD as natively (SDM Vol. 3 §2.5,
# §9.2, §13.1) and the FPU reports errors as the guest chose (NE).
MONITOR_CR0 = (1 << 31) | (1 << 16) | CR0_ET | 1          # PG, WP, ET, PE
GUEST_CR0 = CR0_MP | CR0_EM | CR0_TS | CR0_NE
# TSD and UMIP too, though they restrict CPL 3 only: guest user code may enter ring 3
# by an IRET the monitor never sees, so they are always in force, and what the
# kernel's ring 1 then cannot do (RDTSC; SGDT, SIDT, SLDT, STR, SMSW) traps and is
# emulated.  SMEP: a fetch from a user page by the kernel's ring 1 faults as at ring 0.
GUEST_CR4 = (CR4_DE | CR4_PCE | CR4_OSFXSR | CR4_OSXMMEXCPT | CR4_TSD | CR4_UMIP | CR4_SMEP |
             CR4_SMAP)


class GuestControlRegisters:
    """CR0, CR2, CR3 and CR4 of the virtual CPU, and the real ones under guest code."""

    def real_control(self) -> None:
        """The real CR0 and CR4 for guest code (``MONITOR_CR0``, ``GUEST_CR4``)."""
        v = self.vcpu
        # in real mode UMIP too: the 8086 program's SGDT, SIDT, SMSW, SLDT and STR (CPL 3 in
        # virtual-8086 mode, unprivileged) trap and show the guest's registers
        self.cpu.load_control(MONITOR_CR0 | (v.cr0 & GUEST_CR0),
                              v.cr4 & GUEST_CR4 | (CR4_TSD if v.tsc_offset else 0) |
                              (CR4_UMIP if self.real.active else 0))

    def shadow_key(self) -> int:
        """Which shadow directory stands for the guest's current address space."""
        return address_space(self.vcpu)[0]

    def switch_shadow(self) -> None:
        """Run the guest on the shadow of its current address space (with PAE paging,
        one filled from the PDPTEs it loaded last)."""
        key = self.shadow_key()
        self.shadow.switch(key, self.vcpu.pdpte if key >= PAE_KEY else None)

    def load_pdptes(self, cr0: int, cr4: int, cr3: int) -> bool:
        """A MOV to a control register that leaves PAE paging in use under ``cr0``/``cr4``
        loads the PDPTE registers from ``cr3`` (SDM Vol. 3A §4.4.1), checked before the
        MOV changes anything: a present PDPTE with a reserved bit is #GP(0) and the
        registers keep their values.  True if they were loaded."""
        if not (cr0 & CR0_PG and cr4 & CR4_PAE):
            return False
        pdptes = self.gm.read_pdptes(cr3)
        if pdptes is None:
            raise GuestFault(GP, 0)
        self.vcpu.pdpte[:] = pdptes
        return True

    # -- control registers -----------------------------------------------------------------
    def set_cr(self, n: int, value: int) -> None:
        """MOV to CR0/CR2/CR3/CR4 on the virtual CPU, with the checks of ``hw.controlregs``."""
        v = self.vcpu
        if n == 0:
            if cr0_refused(value):
                raise GuestFault(GP, 0)
            if not value & CR0_PE and not self.real_mode:
                raise MonitorStop(f"{self.name}: the guest left protected mode (real mode is "
                                  "not virtualized)")
            value |= CR0_ET                   # hardwired to 1 (SDM Vol. 3 §2.5)
            changed = v.cr0 ^ value
            loaded = bool(changed & CR0_PDPTE_RELOAD) and self.load_pdptes(value, v.cr4, v.cr3)
            v.cr0 = value
            if changed & CR0_WP:              # what a kernel store may do changed
                self.shadow.flush()
            if changed & CR0_PG or loaded:
                self.paging_changed()
        elif n == 2:
            v.cr2 = value
        elif n == 3:
            # every change to the guest's tables was seen (they are write-protected),
            # so the shadow of this address space, if there is one, is still right (with
            # PAE, if filled from the PDPTEs this MOV loads)
            self.load_pdptes(v.cr0, v.cr4, value)
            v.cr3 = value & CR3_MASK
            self.paging_changed()
        elif n == 4:
            if value & ~CR4_SUPPORTED:
                raise GuestFault(GP, 0)
            if value & CR4_PAE and not self.pae:
                raise MonitorStop(pae_refused(self.name))
            loaded = bool((v.cr4 ^ value) & CR4_PDPTE_RELOAD) and \
                self.load_pdptes(v.cr0, value, v.cr3)
            old, v.cr4 = v.cr4, value
            if (old ^ value) & CR4_PSE:
                self.shadow.flush()
            if (old ^ value) & (CR4_PSE | CR4_PAE) or loaded:
                self.paging_changed()       # (PAE: another shadow, or other PDPTEs)
        else:
            raise GuestFault(UD)
        self.stats[f"cr{n} writes"] += 1

    def task_cr3(self, value: int) -> bool:
        """A task switch loads CR3 past its commit point: as a MOV to CR3, except that a
        PDPTE with a reserved bit leaves CR3 loaded and the PDPTE registers as they were,
        and the #GP(0) is the new task's (SDM Vol. 3A §4.4.1, §7.3; ``hw/tasks.py``):
        False then."""
        try:
            self.set_cr(3, value)
            return True
        except GuestFault:
            self.vcpu.cr3 = value & CR3_MASK
            self.paging_changed()
            return False

    def paging_changed(self) -> None:
        self.switch_shadow()
        for table in (self.gdt, self.ldt):
            if table.moved():
                # the table's pages moved (or went: a kernel's own tables need not map
                # the loader's GDT); the loaded CS and SS are cached, as after LGDT
                table.hold()
                table.reload()

    def get_cr(self, n: int) -> int:
        v = self.vcpu
        if n in (1, 5, 6, 7) or n > 7:
            raise GuestFault(UD)
        return {0: v.cr0, 2: v.cr2, 3: v.cr3, 4: v.cr4}[n]

    def invlpg(self, lin: int) -> None:
        if self.gm.page_shift(lin) > 12:      # a large page: all of it (the shadow splits it)
            self.shadow.invalidate_region(lin)
        else:
            self.shadow.invalidate(lin)

