"""The HVM monitor's VM-exit handlers, one per basic exit reason (SDM Vol. 3C
Appendix C), with the exit qualifications of §27.2.1.

The guest's general registers are in the processor's register file (a VM exit
leaves them alone); ESP, EIP and EFLAGS are in the VMCS.
"""

from __future__ import annotations

from ringvisor.hw.faults import GP, MF, PF, UD
from ringvisor.hw.identify import cpuid as processor_cpuid
from ringvisor.hw.machine import Stop
from ringvisor.hw.mmu import fetch_fault, smap_blocks
from ringvisor.hw.state import (CR0_ET, CR0_PE, CR0_PG, CR0_WP, CR3_MASK, CR4_PAE,
                                CR4_PSE, CR4_SMEP, CS, IF)
from ringvisor.hw.controlregs import CR0_PDPTE_RELOAD, cr0_refused, CR4_PDPTE_RELOAD, CR4_SUPPORTED
from ringvisor.hw import vmcs as V
from ringvisor.hw.ept import Q_LINEAR_VALID as EPT_Q_LINEAR_VALID
from ringvisor.hw.x87 import BUSY, ES, update_summary

from .errors import MonitorStop
from .guestmem import W, GuestPageFault
from .hvmmmio import apic_msr, device_access, ept_device_access

HANDLERS: dict = {}
CPUID_VMX = 1 << 5            # CPUID.1:ECX: this monitor offers no nested VMX
PF_FETCH = 1 << 4             # #PF error code: an instruction fetch
CR4_GUEST_SUPPORTED = CR4_SUPPORTED & ~V.CR4_VMXE


def handles(*reasons):
    def wrap(fn):
        for r in reasons:
            HANDLERS[r] = fn
        return fn
    return wrap


# -- interrupts -------------------------------------------------------------------------------
@handles(V.EXIT_EXT_INT)
def external_interrupt(mon) -> None:
    """A physical interrupt (acknowledged on exit): an edge on the virtual PIC."""
    info = mon.read(V.EXIT_INTR_INFO)
    if info & V.INTR_VALID:
        mon.platform.physical_irq(info & 0xFF)


@handles(V.EXIT_INTR_WINDOW)
def interrupt_window(mon) -> None:
    """The guest can take an interrupt now (``inject_pending`` does it)."""


@handles(V.EXIT_NMI_WINDOW)
def nmi_window(mon) -> None:
    """The guest can take an NMI now (``inject_pending`` does it)."""


def nmi(mon) -> None:
    """A physical NMI exited (NMI exiting): it becomes the guest's, injected as a virtual
    NMI when its virtual-NMI blocking allows.  The processor blocks NMIs until the host's
    handler returns with IRET (SDM Vol. 3C §27.2.2, Vol. 3 §6.7.1): this monitor's
    handler is the exit handler, and its return unblocks them."""
    mon.nmi = True
    mon.cpu.state.nmi_blocked = False
    mon.stats["NMIs"] += 1


@handles(V.EXIT_HLT)
def hlt(mon) -> None:
    mon.skip()
    mon.stats["halts"] += 1
    if not mon.read(V.GUEST_RFLAGS) & IF:
        mon.stop(Stop("halted", 0, f"the guest halted with interrupts disabled at "
                                   f"eip={mon.read(V.GUEST_RIP) - 1:#010x} (hvm)"))
        return
    if not mon.platform.intr:
        mon.write(V.GUEST_ACTIVITY, 1)        # the processor waits, in the guest, for an interrupt


@handles(V.EXIT_TRIPLE_FAULT)
def triple_fault(mon) -> None:
    mon.stop(Stop("triple-fault", 3, f"triple fault in the guest at eip={mon.read(V.GUEST_RIP):#010x} (hvm)"))


# -- exceptions: the shadow page tables ---------------------------------------------------------
@handles(V.EXIT_EXCEPTION)
def exception(mon) -> None:
    info = mon.read(V.EXIT_INTR_INFO)
    vector = info & 0xFF
    if (info >> 8) & 7 == V.INTR_NMI:
        nmi(mon)
        return
    if vector == MF:
        fpu_error(mon)
        return
    if vector != PF:
        raise MonitorStop(f"hvm: unexpected exception exit, vector {vector}")
    page_fault(mon, mon.read(V.EXIT_QUALIFICATION), mon.read(V.EXIT_INTR_ERROR))


def fpu_error(mon) -> None:
    """#MF while the guest's CR0.NE is clear (the exception bitmap has it only then): the
    guest chose the PC's legacy x87 error reporting (SDM Vol. 1 §8.7, Vol. 3 §2.5), which
    the processor's NE, fixed to 1 in VMX operation, does not give.  As with NE clear on
    the bare PC (``hw/x87.py`` signal_pending), the machine's FERR# is asserted -- IRQ 13,
    unless IGNNE# holds (a write to port F0: ``hw/cpu.py``) -- and the waiting instruction
    goes on: it runs once under the monitor trap flag with the error summary (ES, B)
    cleared, which ``monitor_trap`` recomputes from the flags and masks it leaves."""
    mon.cpu.assert_ferr()
    mon.cpu.state.fpu.fsw &= ~(ES | BUSY)
    mon.fpu_step = True
    mon.write(V.CPU_CONTROLS, mon.read(V.CPU_CONTROLS) | V.CPU_MTF)
    mon.stats["#MF as FERR# (NE=0)"] += 1


def guest_page_fault(mon, lin: int, err: int) -> None:
    mon.stats["#PF (guest)"] += 1
    mon.cpu.state.cr2 = lin                   # CR2 is the guest's (a VM exit does not load it)
    mon.inject_exception(PF, err)


def page_fault(mon, lin: int, err: int) -> None:
    """A real #PF on the shadow tables: the guest's own fault (reflected, with CR2), or
    a shadow entry to fill from the guest's tables (as under trap-and-emulate)."""
    write, user = bool(err & 2), bool(err & 4)
    try:
        m = mon.gm.translate(lin, write, user)
    except GuestPageFault as e:
        guest_page_fault(mon, e.address, e.error_code | (err & PF_FETCH))
        return
    if err & PF_FETCH and m.user and not user and mon.vcpu.cr4 & CR4_SMEP:
        # a supervisor fetch from a user page under the guest's SMEP (SDM Vol. 3 §4.6):
        # the guest's own fault, whatever the shadow holds
        guest_page_fault(mon, lin, err | 1)
        return
    code = (mon.read(V.GUEST_BASE + 2 * CS) + mon.read(V.GUEST_RIP)) & 0xFFFFFFFF
    if smap_blocks(mon.vcpu.cr4, mon.read(V.GUEST_RFLAGS), m.user, user,
                   fetch_fault(err & PF_FETCH, lin, code)):
        # a supervisor data access to a user page under the guest's SMAP, AC clear
        guest_page_fault(mon, lin, (err & 2) | 1)
        return
    mon.stats["#PF (shadow)"] += 1
    frame = m.phys & ~0xFFF
    shadow = mon.shadow
    if frame >= mon.guest_ram and device_access(
            mon, frame, err & PF_FETCH,
            lambda f: shadow.install(lin, f, m.user, m.writable and (m.dirty or write), m.pde_addr, m.pte_addr)):
        return                                # a device's page (``hvmmmio.py``)
    if frame >= mon.guest_ram:
        raise MonitorStop(f"hvm: the guest mapped linear {lin:#010x} to physical {frame:#x}, "
                          f"beyond its {mon.guest_ram >> 20} MiB")
    ppn = frame >> 12
    own_table = ppn in {a >> 12 for a in (m.pde_addr, m.pte_addr) if a is not None}
    if write and shadow.is_table(ppn) and not own_table:
        shadow.stats["table_write_faults"] += 0        # (counted by write_fault)
        shadow.write_fault(ppn)
    elif write and err & 1 and not own_table:
        shadow.stats["dirty_faults"] += 1
    # with CR0.WP clear a supervisor store ignores R/W (SDM Vol. 3 §4.6.1)
    writable = m.writable or (not mon.vcpu.cr0 & CR0_WP and not m.user)
    shadow.install(lin, frame, m.user, writable and (m.dirty or write), m.pde_addr, m.pte_addr)
    if write and not shadow.lookup(lin) & W:
        # the store must happen and the page must stay read-only (a table mapped through
        # itself, a user page the kernel writes with WP clear): open it for exactly one
        # instruction, with the monitor trap flag; what it wrote into a table is seen then
        shadow.set_writable(lin, True)
        before = mon.mem.read(frame, 0x1000) if shadow.is_table(ppn) else None
        mon.step_page = (lin & ~0xFFF, frame, before)
        mon.write(V.CPU_CONTROLS, mon.read(V.CPU_CONTROLS) | V.CPU_MTF)
        mon.stats["#PF (one-step store)"] += 1


# -- EPT: guest-physical memory (hvmept.py) ------------------------------------------------------
@handles(V.EXIT_EPT_VIOLATION)
def ept_violation(mon) -> None:
    """The first access to a region of guest RAM: map it, and the guest retries the
    access; a device page above it is mapped through or emulated; an access beyond
    both stops the VM (as under shadow paging)."""
    gpa = mon.read(V.GUEST_PHYS_ADDR)
    if gpa >= mon.guest_ram and ept_device_access(mon, gpa, mon.read(V.EXIT_QUALIFICATION)):
        return                                # a device's page (``hvmmmio.py``)
    if gpa >= mon.guest_ram or mon.eptmap.mapped(gpa):
        where = ""
        if mon.read(V.EXIT_QUALIFICATION) & EPT_Q_LINEAR_VALID:
            where = f" linear {mon.read(V.GUEST_LINEAR_ADDR):#010x} to"
        raise MonitorStop(f"hvm: the guest mapped{where} physical {gpa:#x}, beyond its "
                          f"{mon.guest_ram >> 20} MiB")
    mon.eptmap.map_region(gpa)
    mon.stats["EPT regions mapped"] += 1


@handles(V.EXIT_EPT_MISCONFIG)
def ept_misconfiguration(mon) -> None:
    raise MonitorStop(f"hvm: EPT misconfiguration at guest-physical {mon.read(V.GUEST_PHYS_ADDR):#x} "
                      f"(the monitor's tables are wrong)")


@handles(V.EXIT_MTF)
def monitor_trap(mon) -> None:
    mon.write(V.CPU_CONTROLS, mon.read(V.CPU_CONTROLS) & ~V.CPU_MTF)
    if mon.fpu_step:                          # (the x87 instruction after FERR#: fpu_error)
        mon.fpu_step = False
        update_summary(mon.cpu.state.fpu)
    if mon.step_page is None:
        return
    page, frame, before = mon.step_page
    mon.step_page = None
    mon.shadow.set_writable(page, False)
    if before is not None:
        after = mon.mem.read(frame, 0x1000)
        for off in range(0, 0x1000, 4):
            if after[off:off + 4] != before[off:off + 4]:
                mon.shadow.written(frame + off, 4)     # drop what the old entry defined


# -- instructions ---------------------------------------------------------------------------------
@handles(V.EXIT_CPUID)
def cpuid(mon) -> None:
    r = mon.cpu.state.regs
    a, b, c, d = processor_cpuid(r[0], r[1], mon.platform.vapic.apic)   # (the guest's APIC)
    if r[0] == 1:
        c &= ~CPUID_VMX
    r[0], r[3], r[1], r[2] = a, b, c, d
    mon.skip()


@handles(V.EXIT_INVD)
def invd(mon) -> None:
    mon.skip()


@handles(V.EXIT_INVLPG)
def invlpg(mon) -> None:
    lin = mon.read(V.EXIT_QUALIFICATION)
    if mon.gm.page_shift(lin) > 12:          # a large page: all of it (the shadow splits it)
        mon.shadow.invalidate_region(lin)
    else:
        mon.shadow.invalidate(lin)
    mon.skip()


@handles(V.EXIT_VMCALL, 19, 20, 21, 22, 23, 24, 25, 26, 27)
def vmx_instruction(mon) -> None:
    """No nested VMX: the guest's VMX instructions are #UD, as if VMX were absent."""
    mon.inject_exception(UD)


@handles(V.EXIT_RDMSR, V.EXIT_WRMSR)
def msr(mon) -> None:
    """The local APIC's MSRs are the virtual APIC's; the VMX MSRs (the only others the
    MSR bitmaps intercept) are not this guest's."""
    if not apic_msr(mon, mon.read(V.EXIT_REASON) & 0xFFFF == V.EXIT_WRMSR):
        mon.inject_exception(GP, 0)


@handles(V.EXIT_CR)
def cr_access(mon) -> None:
    q = mon.read(V.EXIT_QUALIFICATION)
    n, access, reg = q & 0xF, (q >> 4) & 3, (q >> 8) & 0xF
    regs = mon.cpu.state.regs
    value = mon.read(V.GUEST_RSP) if reg == 4 else regs[reg]
    if access == 0:                          # MOV to CR
        if not set_cr(mon, n, value):
            return
    elif access == 1:                        # MOV from CR (CR3-store exiting)
        if reg == 4:
            mon.write(V.GUEST_RSP, mon.vcpu.cr3)
        else:
            regs[reg] = mon.vcpu.cr3
    elif access == 3:                        # LMSW: PE, MP, EM, TS (PE cannot be cleared)
        src = q >> 16
        if not set_cr(mon, 0, (mon.vcpu.cr0 & ~0xE) | (src & 0xF) | (mon.vcpu.cr0 & 1)):
            return
    else:                                    # CLTS (TS is not owned: never here)
        set_cr(mon, 0, mon.vcpu.cr0 & ~8)
    mon.stats[f"cr{n} {'writes' if access != 1 else 'reads'}"] += 1
    mon.skip()


def load_pdptes(mon, cr0: int, cr4: int, cr3: int) -> bool:
    """A MOV to CR0/CR3/CR4 the monitor emulates that leaves the guest with PAE paging
    loads its PDPTEs (SDM Vol. 3A §4.4.1) -- into the VMCS, where VM entry under EPT
    takes them (§26.3.2.4), as KVM's ept_load_pdptrs does.  False: a present one sets a
    reserved bit, #GP(0) injected and nothing changed."""
    if not (cr0 & CR0_PG and cr4 & CR4_PAE):
        return True
    pdptes = mon.gm.read_pdptes(cr3)
    if pdptes is None:
        mon.inject_exception(GP, 0)
        return False
    mon.vcpu.pdpte[:] = pdptes                # (what the shadow tables are filled from)
    for i, e in enumerate(pdptes):            # (a VMWRITE is 32 bits: both halves)
        mon.write(V.GUEST_PDPTE + 2 * i, e & 0xFFFFFFFF)
        mon.write(V.GUEST_PDPTE + 2 * i + 1, e >> 32)
    return True


def set_cr(mon, n: int, value: int) -> bool:
    """MOV to CR0/CR3/CR4 with the processor's checks; False if it faulted (#GP injected)."""
    v = mon.vcpu
    if n == 0:
        if cr0_refused(value):
            mon.inject_exception(GP, 0)
            return False
        if not value & CR0_PE and not mon.ept:
            # real mode in VMX non-root needs "unrestricted guest", and that needs EPT
            # (SDM Vol. 3C §26.2.1.1); without it VM entry refuses CR0.PE clear (§26.3.1.1)
            raise MonitorStop(f"hvm --no-ept: the guest cleared CR0.PE at "
                              f"{mon.read(V.GUEST_SEL + 2 * CS):04x}:{mon.read(V.GUEST_RIP):08x}: "
                              f"real mode needs unrestricted "
                              f"guest, which needs EPT (run without --no-ept)")
        value |= CR0_ET
        changed = v.cr0 ^ value
        if changed & CR0_PDPTE_RELOAD and not load_pdptes(mon, value, v.cr4, v.cr3):
            return False
        if changed & CR0_PE:                  # (shown by --stats: the guest's mode switches)
            mon.stats["to real mode" if v.cr0 & CR0_PE else "to protected mode"] += 1
        v.cr0 = value
        mon._set_cr0_views()
        if changed & CR0_WP and not mon.ept:
            mon.shadow.flush()
        if changed & CR0_PG or (changed & CR0_PDPTE_RELOAD and value & CR0_PG and
                                v.cr4 & CR4_PAE and not mon.ept):
            mon._paging_changed()             # (shadow tables: perhaps other PDPTEs)
    elif n == 3:
        if not load_pdptes(mon, v.cr0, v.cr4, value):
            return False
        v.cr3 = value & CR3_MASK
        mon._paging_changed()
    elif n == 4:
        if value & ~CR4_GUEST_SUPPORTED:
            mon.inject_exception(GP, 0)
            return False
        if (v.cr4 ^ value) & CR4_PDPTE_RELOAD and not load_pdptes(mon, v.cr0, value, v.cr3):
            return False
        old, v.cr4 = v.cr4, value
        mon._set_cr4_views()
        if (old ^ value) & CR4_PSE and not mon.ept:
            mon.shadow.flush()
        if (old ^ value) & CR4_PDPTE_RELOAD and not mon.ept:
            mon._paging_changed()             # (PAE: another shadow, or other PDPTEs)
    return True


@handles(V.EXIT_IO)
def io(mon) -> None:
    q = mon.read(V.EXIT_QUALIFICATION)
    size, into, port = (q & 7) + 1, bool(q >> 3 & 1), q >> 16
    regs = mon.cpu.state.regs
    if not q & (1 << 4):
        mask = (1 << (8 * size)) - 1
        if into:
            regs[0] = (regs[0] & ~mask & 0xFFFFFFFF) | mon.platform.read(port, size)
        else:
            mon.platform.write(port, size, regs[0] & mask)
        mon.skip(hits=mon.io_breakpoints(port, size))
        return
    string_io(mon, q, size, into, port)


def string_io(mon, q: int, size: int, into: bool, port: int) -> None:
    """INS/OUTS (REP: a slice at a time, then the guest executes it again), through the
    guest's page tables; the address comes from the exit's guest-linear address and
    advances with EFLAGS.DF."""
    from .hvm import IO_STRING_SLICE
    regs = mon.cpu.state.regs
    rep = bool(q >> 5 & 1)
    step = -size if mon.read(V.GUEST_RFLAGS) & 0x400 else size
    user = mon.read(V.GUEST_SEL + 2 * 2) & 3 == 3      # CPL: SS.RPL
    lin = mon.read(V.GUEST_LINEAR_ADDR)
    # the address size (the instruction-information field, bits 9:7): 16-bit addressing
    # steps SI or DI and counts CX, the upper halves untouched (Vol. 2 INS/OUTS, REP)
    mask = 0xFFFFFFFF if mon.read(V.EXIT_INSTRUCTION_INFO) >> 7 & 7 else 0xFFFF
    count = regs[1] & mask if rep else 1
    ri = 7 if into else 6
    done = 0
    # an I/O breakpoint on the port (or the guest's TF) traps after each iteration, EIP at
    # the instruction while iterations remain (SDM Vol. 3 §17.3.1.2, §17.3.1.4, as natively)
    hits = mon.io_breakpoints(port, size)
    tf = mon.read(V.GUEST_RFLAGS) & 0x100
    while count and done < IO_STRING_SLICE:
        if done and (hits or tf):
            dr = mon.cpu.state.dr
            dr[6] = (dr[6] & ~0xF) | hits | (0x4000 if tf else 0)
            mon.inject_exception(1)
            return
        if into:
            mon.gm.write_u(lin, size, mon.platform.read(port, size), user)
        else:
            mon.platform.write(port, size, mon.gm.read_u(lin, size, user))
        base = (lin - (regs[ri] & mask)) & 0xFFFFFFFF
        regs[ri] = (regs[ri] & ~mask) | ((regs[ri] + step) & mask)
        lin = (base + (regs[ri] & mask)) & 0xFFFFFFFF
        count -= 1
        done += 1
        if rep:
            regs[1] = (regs[1] & ~mask) | count
    if not count:
        mon.skip(hits=hits)
