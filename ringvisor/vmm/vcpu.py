"""The virtual CPU: what the guest kernel believes the processor holds.

Under a monitor the real CPU runs the guest de-privileged, with the monitor's
descriptor tables, TSS and page tables.  The guest's own values of everything
it cannot be allowed to hold for real live here, and the monitor presents them
whenever the guest reads them (or, under trap-and-emulate, fails to).
"""

from __future__ import annotations

from dataclasses import dataclass, field

CR0_PE, CR0_WP, CR0_PG = 1, 1 << 16, 1 << 31
CR4_PSE = 1 << 4
IF = 1 << 9
IOPL = 3 << 12


@dataclass
class VirtualCpu:
    cr0: int = 0x11
    cr2: int = 0
    cr3: int = 0
    cr4: int = 0
    gdt_base: int = 0
    gdt_limit: int = 0xFFFF
    idt_base: int = 0
    idt_limit: int = 0x3FF
    ldtr: int = 0                # LDTR's selector ...
    ldt_base: int = 0            # ... and the base and limit it cached at LLDT
    ldt_limit: int = 0
    tr: int = 0                  # the task register's selector ...
    tr_base: int = 0             # ... and its cached base and limit (the guest TSS)
    tr_limit: int = 0
    vif: bool = False            # the guest's EFLAGS.IF
    nmi_blocked: bool = False    # an NMI handler runs: the next NMI waits for its IRET
    tsc_offset: int = 0          # the guest's TSC less the real one (after its WRMSR to it)
    iopl: int = 0                # the guest's EFLAGS.IOPL
    cpl: int = 0                 # the guest's privilege level (0 kernel, 3 user; 1, 2 under bt)
    cs: int = 0x08               # the guest kernel's CS selector, as it loaded it (RPL = CPL)
    ss: int = 0x10               # the guest kernel's SS selector, as it loaded it
    # the PDPTE registers (PAE paging): loaded from the guest's PDPT at the MOVs to CR3,
    # CR0 and CR4 that the SDM says load them (Vol. 3A §4.4.1), read at every walk
    pdpte: list[int] = field(default_factory=lambda: [0, 0, 0, 0])
    msrs: dict[int, int] = field(default_factory=dict)
    dr: list[int] = field(default_factory=lambda: [0, 0, 0, 0, 0xFFFF0FF0, 0x400, 0xFFFF0FF0, 0x400])

    @property
    def paging(self) -> bool:
        return bool(self.cr0 & CR0_PG)

    def eflags_view(self, real: int) -> int:
        """The guest's EFLAGS: the real arithmetic flags with the virtual IF and IOPL."""
        return (real & ~(IF | IOPL)) | (IF if self.vif else 0) | (self.iopl << 12)
