"""Virtual-8086 mode extensions (CR4.VME) and protected-mode virtual interrupts (CR4.PVI).

The IOPL-sensitive instructions of virtual-8086 mode (CLI, STI, PUSHF, POPF, INT n,
IRET) raise #GP(0) below IOPL 3 so that a virtual-8086 monitor can emulate them
(SDM Vol. 3 §20.2.7).  CR4.VME lets the processor do the common part itself, on a
virtual copy of the interrupt flag (EFLAGS.VIF) with a pending bit the monitor sets
(EFLAGS.VIP); CR4.PVI gives CLI and STI the same virtual flag at CPL 3 in protected
mode (§20.4).  Software interrupts are sent back to the 8086 program's own interrupt
vector table unless the interrupt redirection bitmap in the TSS (the 32 bytes below
the I/O map base) claims them for protected mode (Table 20-2).

These are the rules alone, on EFLAGS values: the processor (``system``,
``transfers``) and the monitors that virtualize virtual-8086 mode for a guest
(``ringvisor.vmm.vm86``) apply them with their own memory accesses.
"""

from __future__ import annotations

from .faults import GP, CpuFault
from .state import CR4_PVI, CR4_VME, IF, IOPL_MASK, RF, TF, VIF, VIP

# what an IOPL-sensitive instruction does under the rules: act on IF (or its real
# self), act on VIF, or raise #GP(0)
REAL, VIRTUAL, FAULT = "real", "virtual", "fault"
# where INT n in virtual-8086 mode goes (Table 20-2): the protected-mode IDT, the
# 8086 program's vector table at linear 0, or #GP(0)
IDT, IVT = "idt", "ivt"

# the FLAGS bits a 16-bit POPF or IRET in virtual-8086 mode loads (CF PF AF ZF SF TF
# IF DF OF NT): never IOPL (Vol. 2 POPF, IRET); under VME not IF either (it goes to VIF)
FLAGS16 = 0x4FD5
# a 16-bit IRET pops three words: IP, CS, FLAGS
IRET16_WORDS = 3


def _iopl3(eflags: int) -> bool:
    return eflags & IOPL_MASK == IOPL_MASK


def interrupt_flag_rule(cr4: int, eflags: int, vm86: bool, cpl: int) -> str:
    """CLI and STI (Vol. 2 CLI, STI; §20.4): IF when the IOPL allows it; VIF in
    virtual-8086 mode with VME, and at CPL 3 in protected mode with PVI; else #GP(0)."""
    iopl = (eflags & IOPL_MASK) >> 12
    if vm86:
        if iopl == 3:
            return REAL
        return VIRTUAL if cr4 & CR4_VME else FAULT
    if cpl <= iopl:
        return REAL
    return VIRTUAL if cpl == 3 and cr4 & CR4_PVI else FAULT


def sti_virtual(eflags: int) -> int:
    """STI on the virtual flag: VIF set, unless an interrupt is pending (VIP): #GP(0), for
    the monitor to deliver it (Vol. 2 STI)."""
    if eflags & VIP:
        raise CpuFault(GP, 0)
    return eflags | VIF


def flags_rule(cr4: int, eflags: int, size: int) -> str:
    """PUSHF, POPF and IRET in virtual-8086 mode: real at IOPL 3; below it, the 16-bit
    forms act on the virtual flags with VME, and everything else is #GP(0) (Vol. 2
    PUSHF, POPF, IRET)."""
    if _iopl3(eflags):
        return REAL
    return VIRTUAL if cr4 & CR4_VME and size == 2 else FAULT


def flags_image(eflags: int) -> int:
    """The FLAGS image PUSHF pushes, and INT n redirected by method 6 pushes, under VME
    below IOPL 3: IOPL reads 3 and IF is VIF (Vol. 2 PUSHF; Table 20-2, method 6)."""
    image = eflags & 0xFFFF & ~(IF | IOPL_MASK)
    return image | IOPL_MASK | (IF if eflags & VIF else 0)


def pop_virtual(eflags: int, popped: int) -> int:
    """EFLAGS after a 16-bit POPF or IRET under VME below IOPL 3: the popped IF goes to
    VIF, IF and IOPL stay; #GP(0) if it would set VIF with an interrupt pending (VIP) or
    set TF (Vol. 2 POPF, IRET)."""
    if popped & TF or (eflags & VIP and popped & IF):
        raise CpuFault(GP, 0)
    mask = FLAGS16 & ~IF
    new = (eflags & ~mask) | (popped & mask)
    return new | VIF if popped & IF else new & ~VIF


def int_method(cr4: int, eflags: int, redirected: bool) -> str:
    """Where INT n goes in virtual-8086 mode (SDM Vol. 3 Table 20-2): ``redirected`` is
    the vector's bit in the TSS's interrupt redirection bitmap being clear (read only with
    VME).  Methods 1 and 4: the IDT; 2 and 3: #GP(0); 5 and 6: the 8086 program's IVT."""
    if cr4 & CR4_VME and redirected:
        return IVT
    return IDT if _iopl3(eflags) else FAULT


def redirection_bit_address(tss_base: int, tss_limit: int, io_map_base: int, vector: int) -> int:
    """The linear address of the byte holding ``vector``'s bit in the interrupt
    redirection bitmap: the 32 bytes just below the I/O map base (§20.3.3.5, Figure
    20-5).  #GP(0) where the byte lies outside the TSS."""
    off = io_map_base - 32 + (vector >> 3)
    if tss_limit < 0x67 or off < 0 or off > tss_limit:
        raise CpuFault(GP, 0)
    return (tss_base + off) & 0xFFFFFFFF


def ivt_frame(eflags: int) -> tuple[int, int]:
    """(FLAGS image pushed, EFLAGS after) for INT n redirected to the 8086 program's
    handler: at IOPL 3 (method 5) FLAGS as they are, then IF and TF clear; below it
    (method 6) the virtual image (``flags_image``), then VIF and TF clear; RF clear
    either way (Bochs ``v86_redirect_interrupt`` does the same)."""
    if _iopl3(eflags):
        return eflags & 0xFFFF, eflags & ~(IF | TF | RF)
    return flags_image(eflags), eflags & ~(VIF | TF | RF)


def ivt_entry_address(vector: int) -> int:
    """Where the redirected vector's IP and CS are: the 8086 program's vector table at
    linear 0, read as a supervisor access (the processor's own, as Bochs reads it)."""
    return vector * 4
