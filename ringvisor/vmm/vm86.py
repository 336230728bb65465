"""Virtual-8086 mode under the monitors (SDM Vol. 3 ch. 20), for trapemu and bt.

A guest kernel enters virtual-8086 mode by an IRET at CPL 0 with EFLAGS.VM in the
image, or by a task switch to a TSS whose EFLAGS has VM set.  Both arrive in the
monitor (the kernel's IRET is emulated; task switches always are), which then
resumes the guest *in* virtual-8086 mode on the real processor: the 8086 code is
CPL 3 by construction, so it runs for real, with the monitor's real IOPL 0 and no
I/O bitmap in the real TSS.  Everything it may not do alone traps:

* exceptions and hardware interrupts leave through the real IDT with the
  virtual-8086 frame (``frame.Frame`` reads ES, DS, FS and GS back), and are
  reflected to the guest's handler with that frame on its ring-0 stack
  (``delivery.enter_guest_handler``), the data segments null, as the hardware does;
* the IOPL-sensitive instructions (CLI, STI, PUSHF, POPF, INT n, IRET) raise #GP(0)
  at the real IOPL 0: here they are done by the guest's rules -- its IOPL, and its
  CR4.VME with the interrupt redirection bitmap of its own TSS (``hw.vme``, the same
  rules the processor applies) -- or reflected to its #GP handler when the guest's
  processor would raise #GP(0) itself;
* port I/O consults the guest TSS's I/O bitmap alone, whatever the IOPL (§20.2.8.1);
* the guest's IF is the virtual CPU's (``vcpu.vif``); VIF and VIP are kept in the
  real EFLAGS image, which the real processor ignores (its CR4.VME is clear).

The guest's CR4.PVI (virtual interrupts at CPL 3 in protected mode) is applied to
the CLI and STI that trap from user code (``emulate.e_cli``).
"""

from __future__ import annotations

import iced_x86 as ix

from ringvisor.hw import vme
from ringvisor.hw.faults import GP, SS, CpuFault
from ringvisor.hw.realmode import IRET_MASK, vm86_segment
from ringvisor.hw.state import AC, CR4_VME, ID, IF, IOPL_MASK, RF, TF, VIF, VM

from .guestmem import GuestPageFault

M = ix.Mnemonic
ES, CS, SREG_SS, DS, FS, GS = range(6)
DATA_SEGS = (ES, DS, FS, GS)
# POPF at IOPL 3 in virtual-8086 mode: never IOPL, VM, RF, VIF or VIP (Vol. 2 POPF)
POPF_MASK = {2: vme.FLAGS16, 4: vme.FLAGS16 | AC | ID}
# IRET at IOPL 3: as in real mode, but IOPL stays (Vol. 2 IRET)
IRET_LOADS = IRET_MASK & ~IOPL_MASK
# what ends a virtual-8086 frame's IOPL-sensitive emulation: done, or the guest's #GP(0)
EMULATED, REFLECT = True, False


def enter(mon, f, eip: int, cs: int, eflags: int, esp: int, ss: int, segs) -> None:
    """The guest goes to virtual-8086 mode at ``cs:eip`` with EFLAGS ``eflags`` (VM set),
    SS:ESP and ES, DS, FS, GS ``segs``: every selector a paragraph, no descriptor
    (Vol. 2 IRET: RETURN-TO-VIRTUAL-8086-MODE; §20.2.5 for a task)."""
    v, st = mon.vcpu, mon.cpu.state
    v.iopl = (eflags & IOPL_MASK) >> 12
    v.vif = bool(eflags & IF)
    v.cpl = 3
    f.eflags = mon.real_eflags(eflags) | VM
    f.cs, f.eip, f.ss = cs & 0xFFFF, eip, ss & 0xFFFF
    st.regs[4] = esp & 0xFFFFFFFF
    for i, sel in zip(DATA_SEGS, segs):
        st.segs[i] = vm86_segment(sel)
    mon.stats["vm86 entries"] += 1
    mon.cpu.mode_changed()


def _set_flags(mon, f, value: int) -> None:
    """The guest's EFLAGS become ``value`` (still in virtual-8086 mode): IF on the virtual
    CPU, the rest in the real image."""
    mon.vcpu.vif = bool(value & IF)
    f.eflags = mon.real_eflags(value) | VM


# -- the 8086 program's stack (SS:SP, 16 bits, user-mode accesses) -----------------------
def _stack_slots(mon, f, offsets: list[int], size: int) -> list[int]:
    """Linear addresses of ``size``-byte stack slots at SP + each offset (wrapping at
    64 KiB); #SS(0) for one that crosses the 64 KiB limit (§20.1.1)."""
    sp = mon.cpu.state.regs[4] & 0xFFFF
    out = []
    for off in offsets:
        o = (sp + off) & 0xFFFF
        if o + size - 1 > 0xFFFF:
            raise CpuFault(SS, 0)
        out.append((f.ss << 4) + o)
    return out


def _push(mon, f, vals: list[int], size: int) -> None:
    """Push ``vals`` (first pushed first): every slot checked, then written, then SP."""
    n = len(vals)
    slots = _stack_slots(mon, f, [-(j + 1) * size for j in range(n)], size)
    for a, val in zip(slots, vals):
        mon.gm.write_u(a, size, val & ((1 << (8 * size)) - 1), True)
        mon.watch(a, size, True)            # (the guest's data breakpoints see it)
    _move_sp(mon, -n * size)


def _peek(mon, f, n: int, size: int) -> list[int]:
    out = []
    for a in _stack_slots(mon, f, [j * size for j in range(n)], size):
        out.append(mon.gm.read_u(a, size, True))
        mon.watch(a, size, False)
    return out


def _move_sp(mon, delta: int) -> None:
    regs = mon.cpu.state.regs
    regs[4] = (regs[4] & 0xFFFF0000) | ((regs[4] + delta) & 0xFFFF)


# -- the IOPL-sensitive instructions ----------------------------------------------------------
def general_protection(mon, f) -> None:
    """#GP(0) from virtual-8086 mode: an instruction the guest's processor would have run
    (done here by its rules), or the guest's own #GP(0), reflected to its handler."""
    from .emulate import ix_name          # (emulate enters VM86 through this module)
    eip = f.eip
    tf = bool(f.eflags & TF)
    mon.db_hits = 0
    try:
        ins = mon.fetch(f)
        fn = SENSITIVE.get(ins.mnemonic)
        if fn is not None and fn(mon, f, ins) is EMULATED:
            mon.traps["#GP (vm86 sensitive)"] += 1
            if fn is not _port_io:            # (``emulate`` did both for port I/O)
                mon.emulated[f"vm86 {ix_name(ins)}"] += 1
                # the traps owed after an instruction: single step, data breakpoints
                mon.completed(f, tf, fn is _iret)
            return
        mon.traps["#GP (guest)"] += 1
        mon.deliver(f, GP, 0, False, eip)
    except CpuFault as e:
        mon.traps["#GP (vm86 sensitive faulted)"] += 1
        mon.deliver(f, e.vector, e.error_code, False, eip)
    except GuestPageFault as e:
        mon.vcpu.cr2 = e.address
        mon.deliver(f, 14, e.error_code, False, eip)


def _guest_eflags(mon, f) -> int:
    return mon.vcpu.eflags_view(f.eflags)


def _next(f, ins) -> None:
    f.eip = (f.eip + ins.len) & 0xFFFF



def _cli_sti(mon, f, ins) -> bool:
    v = mon.vcpu
    rule = vme.interrupt_flag_rule(v.cr4, _guest_eflags(mon, f), True, 3)
    if rule == vme.FAULT:
        return REFLECT
    if rule == vme.VIRTUAL:
        f.eflags = f.eflags & ~VIF if ins.mnemonic == M.CLI else vme.sti_virtual(f.eflags)
    elif ins.mnemonic == M.CLI:
        v.vif = False
    elif not v.vif:
        v.vif = True
        mon.new_shadow = True          # no interrupt before the next instruction has run
    _next(f, ins)
    return EMULATED


def _flags_rule(mon, f, ins, wide) -> tuple[int, int, str]:
    """(operand size, the guest's EFLAGS, ``vme.flags_rule``) for PUSHF, POPF or IRET."""
    size = 4 if ins.mnemonic == wide else 2
    g = _guest_eflags(mon, f)
    return size, g, vme.flags_rule(mon.vcpu.cr4, g, size)


def _loaded(g: int, rule: str, value: int, mask: int) -> int:
    """EFLAGS after POPF or IRET popped ``value``: VME's virtual rule, or the bits of
    ``mask`` (IOPL 3)."""
    return vme.pop_virtual(g, value) if rule == vme.VIRTUAL else (g & ~mask) | (value & mask)


def _pushf(mon, f, ins) -> bool:
    size, g, rule = _flags_rule(mon, f, ins, M.PUSHFD)
    if rule == vme.FAULT:
        return REFLECT
    # the image has VM and RF clear (Vol. 2 PUSHF); under VME, IOPL 3 and IF = VIF
    _push(mon, f, [vme.flags_image(g) if rule == vme.VIRTUAL else g & ~(RF | VM)], size)
    _next(f, ins)
    return EMULATED


def _popf(mon, f, ins) -> bool:
    size, g, rule = _flags_rule(mon, f, ins, M.POPFD)
    if rule == vme.FAULT:
        return REFLECT
    (value,) = _peek(mon, f, 1, size)
    new = _loaded(g, rule, value, POPF_MASK[size])      # (#GP(0) before SP moves)
    _move_sp(mon, size)
    _set_flags(mon, f, new)
    _next(f, ins)
    return EMULATED


def _iret(mon, f, ins) -> bool:
    size, g, rule = _flags_rule(mon, f, ins, M.IRETD)
    if rule == vme.FAULT:
        return REFLECT
    ip, cs, value = _peek(mon, f, 3, size)
    if ip > 0xFFFF:
        raise CpuFault(GP, 0)
    new = _loaded(g, rule, value, IRET_LOADS if size == 4 else IRET_LOADS & 0xFFFF)
    mon.vcpu.nmi_blocked = False           # IRET ends NMI blocking (§6.7.1)
    _move_sp(mon, 3 * size)
    _set_flags(mon, f, new)
    f.cs, f.eip = cs & 0xFFFF, ip
    return EMULATED


def _int(mon, f, ins) -> bool:
    """INT n by Table 20-2: the guest's IDT, its 8086 vector table, or its #GP(0)."""
    v = mon.vcpu
    vector = ins.immediate8
    g = _guest_eflags(mon, f)
    redirected = False
    if v.cr4 & CR4_VME:
        if not v.tr & 0xFFFC:
            raise CpuFault(GP, 0)
        io_map = mon.gm.read_u((v.tr_base + 0x66) & 0xFFFFFFFF, 2)
        a = vme.redirection_bit_address(v.tr_base, v.tr_limit, io_map, vector)
        redirected = not mon.gm.read_u(a, 1) >> (vector & 7) & 1
    method = vme.int_method(v.cr4, g, redirected)
    if method == vme.FAULT:
        return REFLECT
    if method == vme.IDT:
        mon.soft_interrupt(f, vector, ins.len)
        return EMULATED
    # redirected to the 8086 program's handler (methods 5 and 6): its vector table at
    # linear 0
    entry = mon.gm.read_u(vme.ivt_entry_address(vector), 4)
    image, after = vme.ivt_frame(g)
    _push(mon, f, [image, f.cs, (f.eip + ins.len) & 0xFFFF], 2)
    _set_flags(mon, f, after)
    f.cs, f.eip = entry >> 16, entry & 0xFFFF
    mon.traps[f"int {vector:#x} (vm86 redirected)"] += 1
    return EMULATED


def _port_io(mon, f, ins) -> bool:
    """IN, OUT, INS, OUTS: the guest TSS's I/O bitmap decides (``emulate._io_allowed``)."""
    from .emulate import FAULTED, NEXT, emulate
    result = emulate(mon, f, ins, f.eip)
    if result == NEXT:
        _next(f, ins)
    elif result == FAULTED:
        mon.traps["#GP (vm86 I/O faulted)"] += 1
    return EMULATED


SENSITIVE = {M.CLI: _cli_sti, M.STI: _cli_sti, M.PUSHF: _pushf, M.PUSHFD: _pushf,
             M.POPF: _popf, M.POPFD: _popf, M.IRET: _iret, M.IRETD: _iret, M.INT: _int,
             M.IN: _port_io, M.OUT: _port_io, M.INSB: _port_io, M.INSW: _port_io,
             M.INSD: _port_io, M.OUTSB: _port_io, M.OUTSW: _port_io, M.OUTSD: _port_io}


def push_error_code(mon, f, error_code: int, size: int) -> None:
    """An exception's error code on a virtual-8086 task's stack (a task gate)."""
    _push(mon, f, [error_code], size)


def frame_segments(st) -> list[int]:
    """GS, FS, DS and ES as the hardware pushes them leaving virtual-8086 mode."""
    return [st.segs[i].selector for i in (GS, FS, DS, ES)]

