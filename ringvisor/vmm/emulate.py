"""Emulating the guest kernel's privileged and sensitive instructions.

One function per instruction, run on the virtual CPU with the guest's
registers (the real ones: the hardware left them alone on the way into the
monitor) and the interrupt frame (the guest's CS, EIP, EFLAGS, SS).  Both
monitors use it: trap-and-emulate when the instruction faulted at ring 1,
binary translation when translated code called out for it.

Each returns ``NEXT`` (the guest continues after the instruction) or ``DONE``
(the function set the guest's next EIP itself); ``emulate`` returns ``FAULTED``
when the instruction raised an exception that it delivered to the guest.  An instruction the guest may
not execute raises ``GuestFault`` with what the hardware would raise.
"""

from __future__ import annotations

import iced_x86 as ix

from ringvisor.hw import vme
from ringvisor.hw.faults import NAMES, CpuFault, PageFault
from ringvisor.hw.identify import (APIC_MSRS, CPUID_FAULTING, KNOWN_MSRS, MSR_MISC_FEATURES_ENABLES,
                                  cpuid, msr_write_ok, read_tsc)
from ringvisor.hw.segments import (CALL_GATE16, CALL_GATE32, TASK_GATE, TSS16_AVAIL, TSS16_BUSY, TSS32_AVAIL,
                                   TSS32_BUSY, Descriptor)
from ringvisor.hw.state import (ATTR_DB, CR4_TSD, MSR_SYSENTER_CS, MSR_SYSENTER_EIP, MSR_SYSENTER_ESP,
                                MSR_TSC, MSR_TSC_AUX, NT, RF, TF, VIF, VM)
from ringvisor.hw.portio import io_bitmap_permits
from ringvisor.hw.system import ea, get_reg, set_reg
from ringvisor.hw.transfers import check_task_return
from ringvisor.hw.translate import GPR, SREG, registrar

from .descriptors import compress, guest_descriptor_fields
from .guestmem import GuestPageFault
from . import tasks, vm86
from .callgates import through_gate
from .errors import GuestFault

M = ix.Mnemonic
OK = ix.OpKind
R = ix.Register
NEXT, DONE, FAULTED = "next", "done", "faulted"
STRING_IO_SLICE = 4096          # REP INS/OUTS iterations per trap
GP, UD, TS, NP = 13, 6, 10, 11
TSS_AVAILABLE, TSS_BUSY = 0x9, 0xB

EMULATORS: dict = {}
TASK_TARGETS = (TASK_GATE, TSS16_AVAIL, TSS16_BUSY, TSS32_AVAIL, TSS32_BUSY)


emulates = registrar(EMULATORS)


class Context:
    """What an emulator function works on: the monitor, the frame and the instruction."""

    def __init__(self, mon, f, ins: ix.Instruction, eip: int) -> None:
        self.mon, self.f, self.ins, self.eip = mon, f, ins, eip
        self.cpu = mon.cpu
        self.v = mon.vcpu

    @property
    def next_eip(self) -> int:
        return (self.eip + self.ins.len) & 0xFFFFFFFF

    def seg_base(self, sreg: int) -> int:
        i = SREG[sreg]
        if i in (1, 2) and self.f.vm86:
            return (self.f.cs if i == 1 else self.f.ss) << 4
        if i == 1:
            return self.mon.real_descriptor_base(self.f.cs)
        if i == 2:
            return self.mon.real_descriptor_base(self.f.ss)
        return self.cpu.state.segs[i].base

    def linear(self, extra: int = 0, size: int = 1, write: bool = False) -> int:
        off = (ea(self.cpu, self.ins) + extra) & 0xFFFFFFFF
        if self.ins.memory_segment == R.CS:
            return self.code_segment(off, size, write)
        return (self.seg_base(self.ins.memory_segment) + off) & 0xFFFFFFFF

    def code_segment(self, off: int, size: int, write: bool) -> int:
        """A data access through the guest's CS (SDM Vol. 3 §5.5): code segments are
        never writable, and must be readable and hold the bytes accessed."""
        v = self.v
        sel = v.cs if v.cpl != 3 else self.f.cs
        raw = self.mon.guest_descriptor(sel)
        if raw is None or write:
            raise GuestFault(GP, 0)
        base, limit, access, _ = guest_descriptor_fields(compress(raw))
        if not access & 0x2 or off + size - 1 > limit:
            raise GuestFault(GP, 0)
        return (base + off) & 0xFFFFFFFF

    # the instruction's own reads and writes: a data breakpoint may be watching them
    def read(self, size: int, extra: int = 0) -> int:
        lin = self.linear(extra, size)
        value = self.mon.gm.read_u(lin, size, self.v.cpl == 3)
        self.mon.watch(lin, size, False)
        return value

    def write(self, size: int, value: int, extra: int = 0) -> None:
        lin = self.linear(extra, size, True)
        self.mon.gm.write_u(lin, size, value, self.v.cpl == 3)
        self.mon.watch(lin, size, True)

    def op(self, i: int, size: int) -> int:
        k = self.ins.op_kind(i)
        if k == OK.REGISTER:
            return get_reg(self.cpu, self.ins.op_register(i))
        if k == OK.MEMORY:
            return self.read(size)
        return self.ins.immediate(i)

    def set_op(self, i: int, size: int, value: int) -> None:
        if self.ins.op_kind(i) == OK.REGISTER:
            set_reg(self.cpu, self.ins.op_register(i), value)
        else:
            self.write(size, value)

    def sp_mask(self) -> int:
        """SP alone is the stack pointer on a 16-bit stack (SS's B bit clear: the real SS
        has the guest's), the upper half of ESP kept (SDM Vol. 3 §6.2.3)."""
        return 0xFFFFFFFF if self.cpu.state.segs[2].attr & ATTR_DB else 0xFFFF

    def release(self, n: int) -> None:
        """ESP past ``n`` bytes of the stack (SP only on a 16-bit one)."""
        regs, m = self.cpu.state.regs, self.sp_mask()
        regs[4] = (regs[4] & ~m & 0xFFFFFFFF) | ((regs[4] + n) & m)

    def push(self, value: int, size: int = 4) -> None:
        st = self.cpu.state
        m = self.sp_mask()
        sp = (st.regs[4] - size) & m
        lin = (self.seg_base(R.SS) + sp) & 0xFFFFFFFF
        self.mon.gm.write_u(lin, size, value, self.v.cpl == 3)
        self.mon.watch(lin, size, True)
        st.regs[4] = (st.regs[4] & ~m & 0xFFFFFFFF) | sp

    def pop(self, size: int = 4, skip: int = 0) -> int:
        st = self.cpu.state
        lin = (self.seg_base(R.SS) + ((st.regs[4] + skip) & self.sp_mask())) & 0xFFFFFFFF
        value = self.mon.gm.read_u(lin, size, self.v.cpl == 3)
        self.mon.watch(lin, size, False)
        return value

    def kernel_only(self) -> None:
        if self.v.cpl != 0:
            raise GuestFault(GP, 0)


def emulate(mon, f, ins: ix.Instruction, eip: int, tables=(EMULATORS,),
            context: type = None) -> str | None:
    """Emulate ``ins`` (at guest ``eip``) with the first of ``tables`` that has it, on a
    ``context`` (a :class:`Context`, or one whose accesses reach devices: ``mmio.py``).

    None if no table has it.  An exception the instruction raises for the guest is
    delivered to it (the result is then ``FAULTED``: the guest is in its handler).
    """
    for table in tables:
        fn = table.get(ins.mnemonic)
        if fn is not None:
            break
    else:
        return None
    mon.emulated[ix_name(ins)] += 1
    tf = bool(f.eflags & TF)               # (the monitor's own TF is never in the frame)
    mon.db_hits = 0
    try:
        result = fn((context or Context)(mon, f, ins, eip))
        if result is not None:
            # (MOV SS and POP SS hold their single-step trap until after the next
            # instruction, SDM Vol. 3 §6.8.3: that one's step, with TF still set, is the #DB)
            mon.completed(f, tf and not (ins.mnemonic in (M.MOV, M.POP) and ins.op0_register == R.SS),
                          ins.mnemonic in (M.IRET, M.IRETD))
        return result
    except CpuFault as e:           # GuestFault, or the hardware's own rules (hw.segments, ...)
        mon.traps[f"{NAMES.get(e.vector, e.vector)} (guest)"] += 1
        if isinstance(e, PageFault):    # (an access the emulation made on the real MMU)
            mon.vcpu.cr2 = e.address
        mon.deliver(f, e.vector, e.error_code, False, eip)
    except GuestPageFault as e:
        mon.vcpu.cr2 = e.address
        mon.deliver(f, 14, e.error_code, False, eip)
    return FAULTED


_NAMES = {v: k.lower() for k, v in vars(M).items() if not k.startswith("_") and isinstance(v, int)}


def ix_name(ins: ix.Instruction) -> str:
    return _NAMES.get(ins.mnemonic, str(ins.mnemonic))


# -- the interrupt flag and halting -------------------------------------------------------
def _interrupt_flag_rule(c: Context) -> str:
    """CLI and STI in protected mode (``hw.vme``): IF when CPL <= IOPL; VIF at CPL 3 with
    the guest's CR4.PVI (kept in the real EFLAGS image); else #GP(0)."""
    v = c.v
    rule = vme.interrupt_flag_rule(v.cr4, v.eflags_view(c.f.eflags), False, v.cpl)
    if rule == vme.FAULT:
        raise GuestFault(GP, 0)
    return rule


@emulates(M.CLI)
def e_cli(c: Context) -> str:
    if _interrupt_flag_rule(c) == vme.VIRTUAL:
        c.f.eflags &= ~VIF
        return NEXT
    c.v.vif = False
    return NEXT


@emulates(M.STI)
def e_sti(c: Context) -> str:
    if _interrupt_flag_rule(c) == vme.VIRTUAL:
        c.f.eflags = vme.sti_virtual(c.f.eflags)
        return NEXT
    if not c.v.vif:
        c.v.vif = True
        c.mon.new_shadow = True     # no interrupt before the next instruction has run
    return NEXT


@emulates(M.HLT)
def e_hlt(c: Context) -> str:
    c.kernel_only()
    c.mon.halt(c.f)
    return NEXT


# -- port I/O -------------------------------------------------------------------------------
def _io_allowed(c: Context, port: int, size: int) -> None:
    """IOPL, then the I/O permission bitmap of the guest's own TSS (SDM Vol. 1 §19.5)."""
    v = c.v
    if v.cpl <= v.iopl and not c.f.vm86:      # (in virtual-8086 mode the bitmap alone: §20.2.8.1)
        return
    if not v.tr & 0xFFFC or not io_bitmap_permits(lambda a, n: c.mon.gm.read_u(a, n), v.tr_base,
                                                   v.tr_limit, port, size):
        raise GuestFault(GP, 0)


def _port(c: Context, kind: int) -> int:
    """The port operand: DX, or the immediate."""
    return c.cpu.state.regs[2] & 0xFFFF if kind == OK.REGISTER else c.ins.immediate8


@emulates(M.IN)
def e_in(c: Context) -> str:
    ins = c.ins
    size, port = GPR[ins.op0_register][1], _port(c, ins.op1_kind)
    _io_allowed(c, port, size)
    set_reg(c.cpu, ins.op0_register, c.mon.platform.read(port, size))
    c.mon.watch_port(port, size)
    return NEXT


@emulates(M.OUT)
def e_out(c: Context) -> str:
    ins = c.ins
    size, port = GPR[ins.op1_register][1], _port(c, ins.op0_kind)
    _io_allowed(c, port, size)
    c.mon.platform.write(port, size, get_reg(c.cpu, ins.op1_register))
    c.mon.watch_port(port, size)
    return NEXT


@emulates(M.INSB, M.INSW, M.INSD, M.OUTSB, M.OUTSW, M.OUTSD)
def e_string_io(c: Context) -> str:
    ins, regs = c.ins, c.cpu.state.regs
    m = ins.mnemonic
    size = {M.INSB: 1, M.OUTSB: 1, M.INSW: 2, M.OUTSW: 2}.get(m, 4)
    outs = m in (M.OUTSB, M.OUTSW, M.OUTSD)
    step = -size if c.f.eflags & 0x400 else size
    rep = ins.has_rep_prefix or ins.has_repne_prefix
    port = regs[2] & 0xFFFF
    _io_allowed(c, port, size)
    # 16-bit addressing (virtual-8086 mode, without an address-size prefix): SI, DI and
    # CX, wrapping at 64 KiB, the upper halves of ESI, EDI and ECX untouched
    a16 = (ins.op1_kind if outs else ins.op0_kind) in (OK.MEMORY_SEG_SI, OK.MEMORY_ESDI)
    m = 0xFFFF if a16 else 0xFFFFFFFF
    count = regs[1] & m if rep else 1
    user = c.v.cpl == 3
    # a REP string instruction is interruptible: a slice at a time, then the guest
    # executes it again (so a count of 4 G cannot hold the monitor)
    budget = STRING_IO_SLICE
    while count:
        if not budget:               # resume at the instruction itself; ECX says what is left
            c.f.eip = c.eip if user else c.mon.kernel_entry(c.eip)
            return DONE
        budget -= 1
        if outs:
            base = c.seg_base(ins.memory_segment)
            value = c.mon.gm.read_u((base + (regs[6] & m)) & 0xFFFFFFFF, size, user)
            c.mon.platform.write(port, size, value)
            regs[6] = (regs[6] & ~m) | ((regs[6] + step) & m)
        else:
            value = c.mon.platform.read(port, size)
            c.mon.gm.write_u((c.cpu.state.segs[0].base + (regs[7] & m)) & 0xFFFFFFFF, size,
                             value, user)
            regs[7] = (regs[7] & ~m) | ((regs[7] + step) & m)
        count -= 1
        if rep:
            regs[1] = (regs[1] & ~m) | count
        c.mon.watch_port(port, size)
        if count and c.mon.db_hits:
            # an I/O breakpoint on the port: its trap after this iteration, EIP at the
            # instruction while iterations remain (SDM Vol. 3 §17.3.1.2, as natively)
            c.f.eip = c.eip if user else c.mon.kernel_entry(c.eip)
            return DONE
    return NEXT


# -- descriptor tables --------------------------------------------------------------------
@emulates(M.LGDT, M.LIDT)
def e_lgdt(c: Context) -> str:
    c.kernel_only()
    limit = c.read(2)
    base = c.read(4, 2)
    if c.ins.code in (ix.Code.LGDT_M1632_16, ix.Code.LIDT_M1632_16):
        base &= 0xFFFFFF
    if c.ins.mnemonic == M.LGDT:
        c.mon.load_gdt(base, limit)
    else:
        c.v.idt_base, c.v.idt_limit = base, limit
    return NEXT


@emulates(M.SGDT, M.SIDT)
def e_sgdt(c: Context) -> str:
    v = c.v
    base, limit = (v.gdt_base, v.gdt_limit) if c.ins.mnemonic == M.SGDT else (v.idt_base, v.idt_limit)
    c.write(2, limit)
    c.write(4, base, 2)
    return NEXT


@emulates(M.LLDT)
def e_lldt(c: Context) -> str:
    c.kernel_only()
    c.mon.ldt.load(c.op(0, 2) & 0xFFFF)
    return NEXT


@emulates(M.SLDT)
def e_sldt(c: Context) -> str:
    c.set_op(0, 2 if c.ins.op0_kind == OK.MEMORY else 4, c.v.ldtr)
    return NEXT


@emulates(M.STR)
def e_str(c: Context) -> str:
    c.set_op(0, 2 if c.ins.op0_kind == OK.MEMORY else 4, c.v.tr)
    return NEXT


@emulates(M.LTR)
def e_ltr(c: Context) -> str:
    c.kernel_only()
    sel = c.op(0, 2) & 0xFFFF
    raw = c.mon.guest_descriptor(sel)
    if not sel & ~3 or raw is None:
        raise GuestFault(GP, sel & 0xFFFC)
    base, limit, access, _ = guest_descriptor_fields(raw)
    if access & 0x1F != TSS_AVAILABLE:
        raise GuestFault(GP, sel & 0xFFFC)
    if not access & 0x80:
        raise GuestFault(11, sel & 0xFFFC)
    # mark it busy in the guest's GDT, as the processor does
    c.mon.gm.write_u(c.v.gdt_base + (sel & ~7) + 5, 1, access | 2)
    c.v.tr, c.v.tr_base, c.v.tr_limit = sel, base, limit
    return NEXT


# -- control and debug registers, the TLB, MSRs --------------------------------------------
@emulates(M.MOV)
def e_mov(c: Context) -> str | None:
    ins = c.ins
    k0, k1 = ins.op0_kind, ins.op1_kind
    r0 = ins.op0_register if k0 == OK.REGISTER else R.NONE
    r1 = ins.op1_register if k1 == OK.REGISTER else R.NONE
    if R.CR0 <= r0 <= R.CR15:
        c.kernel_only()
        c.mon.set_cr(r0 - R.CR0, get_reg(c.cpu, r1))
        return NEXT
    if R.CR0 <= r1 <= R.CR15:
        c.kernel_only()
        set_reg(c.cpu, r0, c.mon.get_cr(r1 - R.CR0))
        return NEXT
    if R.DR0 <= r0 <= R.DR7:
        c.kernel_only()
        c.mon.general_detect(r0 - R.DR0)
        c.mon.write_dr(r0 - R.DR0, get_reg(c.cpu, r1))
        return NEXT
    if R.DR0 <= r1 <= R.DR7:
        c.kernel_only()
        c.mon.general_detect(r1 - R.DR0)
        set_reg(c.cpu, r0, c.mon.read_dr(r1 - R.DR0))
        return NEXT
    if r0 in SREG:
        c.mon.load_sreg(SREG[r0], c.op(1, 2) & 0xFFFF)     # "mov ss, eax" uses AX
        if r0 == R.SS:
            c.mon.new_shadow = True          # no interrupt before the next instruction
        return NEXT
    if r1 in SREG:
        return _store_sreg(c, SREG[r1])
    return None


def _store_sreg(c: Context, i: int) -> str:
    """``mov r/m, sreg``: the guest sees the selector it loaded (CS and SS as its own)."""
    v = c.v
    if i == 1:
        sel = v.cs if v.cpl != 3 else c.f.cs
    elif i == 2:
        sel = v.ss if v.cpl != 3 else c.f.ss
    else:
        sel = c.cpu.state.segs[i].selector
    reg = c.ins.op0_kind == OK.REGISTER
    c.set_op(0, GPR[c.ins.op0_register][1] if reg else 2, sel)
    return NEXT


@emulates(M.CLTS)
def e_clts(c: Context) -> str:
    c.kernel_only()
    c.v.cr0 &= ~8
    return NEXT


@emulates(M.LMSW)
def e_lmsw(c: Context) -> str:
    c.kernel_only()
    value = c.op(0, 2)
    c.mon.set_cr(0, (c.v.cr0 & ~0xE) | (value & 0xF) | (c.v.cr0 & 1))
    return NEXT


@emulates(M.SMSW)
def e_smsw(c: Context) -> str:
    if c.ins.op0_kind == OK.REGISTER:
        set_reg(c.cpu, c.ins.op0_register, c.v.cr0)
    else:
        c.write(2, c.v.cr0 & 0xFFFF)
    return NEXT


@emulates(M.INVLPG)
def e_invlpg(c: Context) -> str:
    c.kernel_only()
    c.mon.invlpg(c.linear())
    return NEXT


@emulates(M.INVD, M.WBINVD)
def e_cache(c: Context) -> str:
    c.kernel_only()
    return NEXT


@emulates(M.RDMSR, M.WRMSR)
def e_msr(c: Context) -> str:
    c.kernel_only()
    regs = c.cpu.state.regs
    n = regs[1]
    vapic = c.mon.platform.vapic
    if n in APIC_MSRS and vapic is not None:       # the guest's local APIC's (vapic.py)
        if c.ins.mnemonic == M.RDMSR:
            value = vapic.apic.read_msr(n)
            regs[0], regs[2] = value & 0xFFFFFFFF, value >> 32
        elif not vapic.apic.write_msr(n, regs[0] | regs[2] << 32):
            raise GuestFault(GP, 0)
        vapic.check()
        return NEXT
    if n != MSR_TSC and n not in KNOWN_MSRS:
        raise GuestFault(GP, 0)
    if c.ins.mnemonic == M.RDMSR:
        value = c.mon.guest_tsc() if n == MSR_TSC else c.v.msrs.get(n, KNOWN_MSRS.get(n, 0))
        regs[0], regs[2] = value & 0xFFFFFFFF, value >> 32
    else:
        value = regs[0] | regs[2] << 32
        if n == MSR_TSC:
            # the guest's TSC runs on from the value (SDM Vol. 3 §17.17): an offset to
            # the real one, and RDTSC traps from now on (``Monitor.real_control``)
            c.v.tsc_offset = value - c.cpu.tsc()
            return NEXT
        if not msr_write_ok(n, value):
            raise GuestFault(GP, 0)
        c.v.msrs[n] = value
        if n == MSR_TSC_AUX:
            # the guest's own RDTSCP reads it from the real MSR (SDM Vol. 2 RDTSCP)
            c.cpu.state.msrs[MSR_TSC_AUX] = value
    return NEXT


@emulates(M.CPUID)
def e_cpuid(c: Context) -> str:
    """CPUID where the monitor makes the real one fault (several virtual processors:
    ``vcpus.py``): the model's table with the running virtual processor's local APIC --
    or #GP(0) above CPL 0 if the guest enabled CPUID faulting itself."""
    if c.v.msrs.get(MSR_MISC_FEATURES_ENABLES, 0) & CPUID_FAULTING and c.f.user:
        raise GuestFault(GP, 0)
    regs = c.cpu.state.regs
    vapic = c.mon.platform.vapic
    regs[0], regs[3], regs[1], regs[2] = cpuid(regs[0], regs[1],
                                               vapic.apic if vapic is not None else None)
    return NEXT


@emulates(M.RDTSC, M.RDTSCP)
def e_rdtsc(c: Context) -> str:
    # it traps because the real CR4.TSD is the guest's (``guestcr.GUEST_CR4``), or is
    # set for a guest whose TSC was written: at (virtual) CPL 0, or with the guest's
    # TSD clear, the guest reads its counter (SDM Vol. 2 RDTSC, RDTSCP)
    if c.v.cpl != 0 and c.v.cr4 & CR4_TSD:
        raise GuestFault(GP, 0)
    read_tsc(c.cpu, c.v.tsc_offset)
    if c.ins.mnemonic == M.RDTSCP:
        c.cpu.state.regs[1] = c.v.msrs.get(MSR_TSC_AUX, 0) & 0xFFFFFFFF
    return NEXT


# -- segment registers and far transfers -------------------------------------------------
def far_operand(c: Context) -> tuple[int, int] | None:
    """(selector, offset) of a far JMP/CALL, direct or through memory; None if near."""
    ins = c.ins
    if ins.op0_kind in (OK.FAR_BRANCH32, OK.FAR_BRANCH16):
        return ins.far_branch_selector, ins.far_branch32
    if ins.op0_kind == OK.MEMORY and ins.memory_size in (ix.MemorySize.SEG_PTR32, ix.MemorySize.SEG_PTR16):
        off = c.read(4)
        return c.read(2, 4), off
    return None


@emulates(M.JMP, M.CALL)
def e_far_task(c: Context) -> str | None:
    """A far JMP/CALL the processor refused (#GP: system descriptors never reach the real
    GDT): ``far_to_system``; anything else is reflected as the #GP it is."""
    far = far_operand(c)
    if far is None or not far[0] & 0xFFFC:
        return None
    try:
        d = c.mon.guest_desc(far[0])
    except GuestFault:
        return None                       # (beyond the table: the guest's #GP)
    return None if d.s else far_to_system(c, far[0], d, c.ins.mnemonic == M.CALL)


def far_to_system(c: Context, sel: int, d: Descriptor, call: bool) -> str | None:
    """A far JMP/CALL to the guest's system descriptor ``d``: through a call gate
    (``callgates.py``), or to a TSS or task gate (a task switch, ``tasks.py``); None
    for any other (the #GP it is)."""
    if d.type in (CALL_GATE16, CALL_GATE32):
        through_gate(c, sel, d, call)
        return DONE
    if d.type in TASK_TARGETS:
        return far_to_task(c, sel, d)
    return None


def far_to_task(c: Context, sel: int, d: Descriptor) -> str:
    """A far JMP/CALL to a TSS descriptor or task gate (SDM Vol. 2 JMP/CALL: TASK-GATE,
    TASK-STATE-SEGMENT): as privileged as CPL and RPL, a TSS in the GDT only and not
    busy; then the switch."""
    if d.dpl < c.v.cpl or d.dpl < sel & 3 or (sel & 4 and d.type != TASK_GATE) or \
            d.type in (TSS16_BUSY, TSS32_BUSY):
        raise GuestFault(GP, sel & 0xFFFC)
    tasks.switch(c.mon, c.f, sel, d, tasks.T.CALL if c.ins.mnemonic == M.CALL else tasks.T.JMP,
                 c.next_eip)
    return DONE


@emulates(M.SYSENTER)
def e_sysenter(c: Context) -> str:
    """SYSENTER (SDM Vol. 2): into the kernel at IA32_SYSENTER_EIP with the flat ring-0
    CS of IA32_SYSENTER_CS, SS the selector after it, ESP IA32_SYSENTER_ESP; IF, VM and
    RF cleared.  The real processor's IA32_SYSENTER_CS is 0, so the guest's SYSENTER
    is its #GP(0), from user or kernel code; the guest's MSRs decide here."""
    v, f = c.v, c.f
    cs = v.msrs.get(MSR_SYSENTER_CS, 0) & 0xFFFC
    if not cs:
        raise GuestFault(GP, 0)
    v.cpl = 0
    v.vif = False
    v.cs, v.ss = cs, cs + 8
    f.cs, f.ss = c.mon.kernel_cs(cs), (cs + 8) | 1
    f.eflags &= ~(VM | RF)
    c.cpu.state.regs[4] = v.msrs.get(MSR_SYSENTER_ESP, 0) & 0xFFFFFFFF
    f.eip = c.mon.kernel_entry(v.msrs.get(MSR_SYSENTER_EIP, 0) & 0xFFFFFFFF)
    c.mon.reloaded(f.cs, f.ss)
    return DONE


@emulates(M.SYSEXIT)
def e_sysexit(c: Context) -> str:
    """SYSEXIT (SDM Vol. 2): from ring 0 to ring 3 at EDX with ESP = ECX, CS and SS the
    selectors 16 and 24 after IA32_SYSENTER_CS, with RPL 3."""
    v, f, regs = c.v, c.f, c.cpu.state.regs
    cs = v.msrs.get(MSR_SYSENTER_CS, 0) & 0xFFFC
    if v.cpl != 0 or not cs:
        raise GuestFault(GP, 0)
    f.cs, f.ss, f.eip = (cs + 16) | 3, (cs + 24) | 3, regs[2]
    regs[4] = regs[1]
    v.cpl = 3
    c.mon.reloaded(f.cs, f.ss)
    return DONE


@emulates(M.POP)
def e_pop(c: Context) -> str | None:
    r = c.ins.op0_register if c.ins.op0_kind == OK.REGISTER else R.NONE
    if r not in SREG or r == R.CS:
        return None
    sel = c.pop(2)
    c.mon.load_sreg(SREG[r], sel)
    c.cpu.state.regs[4] = (c.cpu.state.regs[4] + c.ins.stack_pointer_increment) & 0xFFFFFFFF
    if r == R.SS:
        c.mon.new_shadow = True              # no interrupt before the next instruction
    return NEXT


@emulates(M.LSS)
def e_lss(c: Context) -> str:
    off = c.read(4)
    sel = c.read(2, 4)
    c.mon.load_sreg(2, sel)
    set_reg(c.cpu, c.ins.op0_register, off)
    return NEXT


@emulates(M.RETF)
def e_retf(c: Context) -> str:
    imm = c.ins.immediate16 if c.ins.op_count else 0
    # RETF with a 16-bit operand (66 CB, 66 CA: a 16-bit call gate's return) pops IP, CS,
    # and from an outer ring SP and SS, as words (SDM Vol. 2 RET)
    n = 2 if c.ins.code in (ix.Code.RETFW, ix.Code.RETFW_IMM16) else 4
    eip = c.pop(n)
    cs = c.pop(2, n)
    if cs & 3 > c.v.cpl:
        esp = c.pop(n, 2 * n + imm)
        ss = c.pop(2, 3 * n + imm)
        # the immediate releases the parameters on both stacks (SDM Vol. 2 RET:
        # RETURN-TO-OUTER-PRIVILEGE-LEVEL)
        if cs & 3 == 3:
            c.mon.return_to_user(c.f, eip, cs, None, (esp + imm) & 0xFFFFFFFF, ss)
        else:
            c.mon.return_to_outer_ring(c.f, eip, cs, None, (esp + imm) & 0xFFFFFFFF, ss, n)
        return DONE
    # the checks first: a return that faults leaves ESP as it was (SDM Vol. 2 RET)
    c.mon.return_to_kernel(c.f, eip, cs)
    c.release(2 * n + imm)
    return DONE


@emulates(M.IRET, M.IRETD)
def e_iret(c: Context) -> str:
    c.v.nmi_blocked = False                # IRET ends NMI blocking (SDM Vol. 3 §6.7.1)
    if c.f.eflags & NT:
        # a return to the task in the back link of the guest's TSS (SDM Vol. 2 IRET:
        # TASK-RETURN): its checks, then the switch
        link = c.mon.gm.read_u(c.v.tr_base, 2)
        d = check_task_return(link, lambda sel: c.mon.guest_desc(sel, TS))
        tasks.switch(c.mon, c.f, link, d, tasks.T.IRET, c.next_eip)
        return DONE
    if c.v.cpl == 3:
        raise GuestFault(GP, 0)
    # a 16-bit IRET (66 CF: a 16-bit gate's return) pops IP, CS and FLAGS, and from an
    # outer ring SP and SS, as words; the upper half of EFLAGS stays (SDM Vol. 2 IRET)
    n = 2 if c.ins.mnemonic == M.IRET else 4
    eip = c.pop(n)
    cs = c.pop(2, n)
    eflags = c.pop(n, 2 * n)
    if n == 4 and eflags & VM and c.v.cpl == 0:
        # at CPL 0 this IRET enters virtual-8086 mode (SDM Vol. 2 IRET:
        # RETURN-TO-VIRTUAL-8086-MODE): ESP, SS, ES, DS, FS and GS follow; EFLAGS is
        # loaded whole, EIP as 16 bits (QEMU helper_iret_protected)
        esp, ss, es, ds, fs, gs = (c.pop(4, 12 + 4 * i) for i in range(6))
        vm86.enter(c.mon, c.f, eip & 0xFFFF, cs, eflags, esp, ss, (es, ds, fs, gs))
        return DONE
    if cs & 3 > c.v.cpl:
        esp = c.pop(n, 3 * n)
        ss = c.pop(2, 4 * n)
        if cs & 3 == 3:
            c.mon.return_to_user(c.f, eip, cs, eflags, esp, ss, n)
        else:
            c.mon.return_to_outer_ring(c.f, eip, cs, eflags, esp, ss, n)
    else:
        # the checks first: an IRET that faults leaves EFLAGS and ESP as they were
        c.mon.return_to_kernel(c.f, eip, cs)
        c.release(3 * n)
        c.mon.set_guest_eflags(c.f, eflags, n, iret=True)
    if n == 4:
        # RF is the image's: it spares the first instruction there a breakpoint
        c.f.eflags = (c.f.eflags & ~RF) | (eflags & RF)
    return DONE

