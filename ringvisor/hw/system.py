"""Helpers: instructions executed in Python on the CPU's architectural state.

System and sensitive instructions (and a few rare, awkward ones) end their
translated block; the block writes its registers and flags back, and the helper
here executes the instruction with every privilege check of the SDM, returning
the address of the next instruction.  This is also where a virtual machine
monitor's story begins: these are the instructions that must trap, or must be
translated, when a guest kernel runs de-privileged.
"""

from __future__ import annotations

import iced_x86 as ix

from . import realmode, transfers, vme, x87control
from .faults import BP, BR, DB, GP, NM, OF as OF_VEC, UD, CpuFault
from .state import (ATTR_DB, ATTR_G, ATTR_P, ATTR_S, ATTR_UNUSABLE, Segment, CR0_EM, CR0_MP, CR0_TS,
                    CR4_OSFXSR, CR4_VME, CS, DF, IF, IOPL_MASK, MSR_SYSENTER_CS, MSR_SYSENTER_EIP,
                    MSR_SYSENTER_ESP, AC, OF, RF, SS, VIF, VM, ZF)
from .translate import GPR, SREG, registrar

M = ix.Mnemonic
OK = ix.OpKind
Rg = ix.Register

HELPERS: dict[int, callable] = {}

helper = registrar(HELPERS)


# --- operand access from Python --------------------------------------------------
def ea(cpu, ins: ix.Instruction) -> int:
    regs = cpu.state.regs
    a16 = False
    v = ins.memory_displacement
    if ins.memory_base != Rg.NONE:
        i, size, _ = GPR[ins.memory_base]
        a16 = size == 2
        v += regs[i] & (0xFFFF if a16 else 0xFFFFFFFF)
    if ins.memory_index != Rg.NONE:
        i, size, _ = GPR[ins.memory_index]
        a16 = size == 2
        v += (regs[i] & (0xFFFF if a16 else 0xFFFFFFFF)) * ins.memory_index_scale
    if ins.memory_displ_size == 2:
        a16 = True
    return v & (0xFFFF if a16 else 0xFFFFFFFF)


def mem_linear(cpu, ins: ix.Instruction, size: int, write: bool, extra: int = 0) -> int:
    s = SREG[ins.memory_segment]
    return cpu.segmentation.linear(s, (ea(cpu, ins) + extra) & 0xFFFFFFFF, size, write)


def read_mem(cpu, ins, size, extra=0) -> int:
    return cpu.mmu.read(mem_linear(cpu, ins, size, False, extra), size, cpu.cpl == 3)


def write_mem(cpu, ins, size, value, extra=0) -> None:
    cpu.mmu.write(mem_linear(cpu, ins, size, True, extra), size, value, cpu.cpl == 3)


def get_reg(cpu, r: int) -> int:
    i, size, high = GPR[r]
    v = cpu.state.regs[i]
    if size == 4:
        return v
    return (v >> 8) & 0xFF if high else v & (0xFF if size == 1 else 0xFFFF)


def set_reg(cpu, r: int, value: int) -> None:
    i, size, high = GPR[r]
    regs = cpu.state.regs
    if size == 4:
        regs[i] = value & 0xFFFFFFFF
    elif high:
        regs[i] = (regs[i] & 0xFFFF00FF) | ((value & 0xFF) << 8)
    else:
        m = 0xFF if size == 1 else 0xFFFF
        regs[i] = (regs[i] & ~m & 0xFFFFFFFF) | (value & m)


def read_op(cpu, ins, i: int, size: int) -> int:
    k = ins.op_kind(i)
    if k == OK.REGISTER:
        return get_reg(cpu, ins.op_register(i))
    if k == OK.MEMORY:
        return read_mem(cpu, ins, size)
    return ins.immediate(i) & ((1 << (8 * size)) - 1)


def write_op(cpu, ins, i: int, size: int, value: int) -> None:
    if ins.op_kind(i) == OK.REGISTER:
        set_reg(cpu, ins.op_register(i), value)
    else:
        write_mem(cpu, ins, size, value)


_CODE16_CACHE: dict[int, bool] = {}


def ix_code_is_16(code: int) -> bool:
    r = _CODE16_CACHE.get(code)
    if r is None:
        info = ix.OpCodeInfo(code)
        r = info.operand_size == 16
        _CODE16_CACHE[code] = r
    return r


def require_protected(cpu) -> None:
    """LLDT, LTR, SLDT, STR, LAR, LSL, VERR, VERW and ARPL are #UD in real and
    virtual-8086 mode (SDM Vol. 2: "Real-Address Mode" and "Virtual-8086 Mode Exceptions")."""
    if cpu.mode.real or cpu.mode.vm86:
        raise CpuFault(UD)


def vm86_flags_rule(cpu, size: int) -> str:
    """PUSHF and POPF are IOPL-sensitive in virtual-8086 mode (SDM Vol. 3 §20.2.7): below
    IOPL 3 #GP(0) for a monitor to emulate, or, with CR4.VME and 16 bits, on the virtual
    interrupt flag (``vme.flags_rule``); REAL outside virtual-8086 mode."""
    if not cpu.mode.vm86:
        return vme.REAL
    rule = vme.flags_rule(cpu.state.cr4, cpu.state.eflags, size)
    if rule == vme.FAULT:
        raise CpuFault(GP, 0)
    return rule


def vm86_int_method(cpu, vector: int) -> str:
    """Where INT n goes in virtual-8086 mode (Table 20-2, ``vme.int_method``): with
    CR4.VME the vector's bit in the TSS's interrupt redirection bitmap decides."""
    st = cpu.state
    redirected = False
    if st.cr4 & CR4_VME:
        tr = st.tr
        if tr.attr & ATTR_UNUSABLE or tr.type not in (9, 0xB):
            raise CpuFault(GP, 0)
        read = lambda a, n: cpu.mmu.read(a, n, False)      # noqa: E731 (the TSS, as the CPU reads it)
        a = vme.redirection_bit_address(tr.base, tr.limit, read(tr.base + 0x66, 2), vector)
        redirected = not read(a, 1) >> (vector & 7) & 1
    method = vme.int_method(st.cr4, cpu.get_eflags(), redirected)
    if method == vme.FAULT:
        raise CpuFault(GP, 0)
    return method


def require_cpl0(cpu) -> None:
    if cpu.cpl != 0:
        raise CpuFault(GP, 0)


def push(cpu, value: int, size: int) -> None:
    transfers._set_esp(cpu, cpu.state.segs[SS],
                       transfers._push_frame(cpu, cpu.state.segs[SS], cpu.state.regs[4], [value],
                                             size, cpu.cpl == 3))


def set_zf(cpu, on: bool) -> None:
    cpu.set_eflags(ZF if on else 0, ZF)


# --- interrupts and flags ------------------------------------------------------------
@helper(M.INT)
def h_int(cpu, ins) -> int:
    vector = ins.immediate8
    # (INT3 and INTO are not IOPL-sensitive, nor redirected: Table 20-2 is INT n's)
    if cpu.mode.vm86 and vm86_int_method(cpu, vector) == vme.IVT:
        image, after = vme.ivt_frame(cpu.get_eflags())
        realmode.redirect(cpu, vector, ins.next_ip32, image, after)
        return cpu.state.eip
    if cpu.native.handoff is None or not cpu.may_hand_off(1):
        transfers.deliver(cpu, vector, None, True, ins.next_ip32)
        return cpu.state.eip
    try:
        if not cpu.hand_off(vector, None, True, ins.next_ip32, None, True):
            transfers.deliver(cpu, vector, None, True, ins.next_ip32)
    except CpuFault as e:
        # (a gate that refuses it -- #GP(vector, IDT) at the INT, raised by the delivery
        # or by the owner of the gates, who knows its own: native.py -- handed off from
        # here, the block having stored the state as a fault finds it)
        if not cpu.hand_off_fault(e, True):
            raise
        cpu.state.icount -= 1              # (the block counts the INT when this returns)
    return cpu.state.eip


@helper(M.INT3)
def h_int3(cpu, ins) -> int:
    transfers.deliver(cpu, BP, None, True, ins.next_ip32)
    return cpu.state.eip


@helper(M.INTO)
def h_into(cpu, ins) -> int:
    if cpu.get_eflags() & OF:
        transfers.deliver(cpu, OF_VEC, None, True, ins.next_ip32)
        return cpu.state.eip
    return ins.next_ip32


@helper(M.INT1)
def h_int1(cpu, ins) -> int:
    st = cpu.state
    if st.pending_db:
        # right after MOV SS or POP SS: ICEBP's #DB is the one that reports the data
        # breakpoints they held (one #DB, not two: kvm-unit-tests' debug "MOV SS +
        # watchpoint + ICEBP", written against the hardware)
        st.dr[6] = (st.dr[6] & ~0xF) | st.pending_db
        st.pending_db = 0
    transfers.deliver(cpu, DB, None, False, ins.next_ip32)
    return cpu.state.eip


@helper(M.IRET, M.IRETD)
def h_iret(cpu, ins) -> int:
    transfers.iret(cpu, 4 if ins.mnemonic == M.IRETD else 2, ins.next_ip32)
    return cpu.state.eip


@helper(M.HLT)
def h_hlt(cpu, ins) -> int:
    require_cpl0(cpu)
    cpu.state.halted = True
    cpu.limit = 0
    return ins.next_ip32


def iopl(cpu) -> int:
    return (cpu.state.eflags & IOPL_MASK) >> 12


@helper(M.CLI, M.STI)
def h_cli(cpu, ins) -> int:
    st = cpu.state
    rule = vme.interrupt_flag_rule(st.cr4, st.eflags, cpu.mode.vm86, cpu.cpl)
    if rule == vme.FAULT:
        raise CpuFault(GP, 0)
    if rule == vme.VIRTUAL:
        # (VIF is only a flag to the processor: nothing becomes deliverable)
        st.eflags = st.eflags & ~VIF if ins.mnemonic == M.CLI else vme.sti_virtual(st.eflags)
        return ins.next_ip32
    if ins.mnemonic == M.CLI:
        st.eflags &= ~IF
    else:
        if not st.eflags & IF:
            cpu.open_interrupt_shadow()     # interrupts wait until after the next instruction
        st.eflags |= IF
        cpu.irq_check()
    return ins.next_ip32


@helper(M.CLD, M.STD)
def h_cld(cpu, ins) -> int:
    if ins.mnemonic == M.CLD:
        cpu.state.eflags &= ~DF
    else:
        cpu.state.eflags |= DF
    cpu.mode_changed()
    return ins.next_ip32


@helper(M.POPF, M.POPFD)
def h_popf(cpu, ins) -> int:
    size = 4 if ins.mnemonic == M.POPFD else 2
    st = cpu.state
    rule = vm86_flags_rule(cpu, size)
    (v,) = transfers._pop_values(cpu, 1, size)
    if rule == vme.VIRTUAL:
        new = vme.pop_virtual(cpu.get_eflags(), v)
        transfers._set_esp(cpu, st.segs[SS], st.regs[4] + size)
        cpu.set_eflags(new, vme.FLAGS16 | VIF)
        st.eflags &= ~RF
        cpu.mode_changed()
        return ins.next_ip32
    cpl = cpu.cpl
    # Arithmetic flags, TF, DF, NT always; AC and ID with 32 bits; IOPL only at CPL 0;
    # IF only when CPL <= IOPL.  Anything else is silently kept — the reason POPF
    # cannot be virtualized by trapping (Robin & Irvine).
    mask = 0x1 | 0x4 | 0x10 | 0x40 | 0x80 | 0x100 | 0x400 | 0x800 | 0x4000
    if size == 4:
        mask |= 0x40000 | 0x200000
    if cpl == 0:
        mask |= IOPL_MASK
    if cpl <= iopl(cpu):
        mask |= IF
    was_if = st.eflags & IF
    transfers._set_esp(cpu, st.segs[SS], st.regs[4] + size)
    cpu.set_eflags(v, mask)
    st.eflags &= ~RF
    if st.eflags & IF and not was_if:
        cpu.irq_check()
    cpu.mode_changed()
    return ins.next_ip32


@helper(M.PUSHF, M.PUSHFD)
def h_pushf(cpu, ins) -> int:
    """PUSHF in virtual-8086 mode (translated inline elsewhere: semantics.pushf)."""
    size = 4 if ins.mnemonic == M.PUSHFD else 2
    if vm86_flags_rule(cpu, size) == vme.VIRTUAL:
        push(cpu, vme.flags_image(cpu.get_eflags()), size)
        return ins.next_ip32
    # the pushed image has RF and VM clear (SDM Vol. 2 PUSHF)
    push(cpu, cpu.get_eflags() & ~(RF | VM), size)
    return ins.next_ip32


@helper(M.STAC, M.CLAC)
def h_stac(cpu, ins) -> int:
    """Set or clear EFLAGS.AC, which lets ring 0 reach user pages under CR4.SMAP
    (the MMU reads it at each such access).  #UD at CPL > 0 (SDM Vol. 2 STAC, CLAC)."""
    if cpu.cpl > 0:
        raise CpuFault(UD)
    if ins.mnemonic == M.STAC:
        cpu.state.eflags |= AC
    else:
        cpu.state.eflags &= ~AC
    return ins.next_ip32


# --- #UD and fast system calls -----------------------------------------------------------
@helper(M.UD0, M.UD1, M.UD2)
def h_ud(cpu, ins) -> int:
    raise CpuFault(UD)


def _flat(selector: int, code: bool, dpl: int) -> Segment:
    attr = ATTR_P | ATTR_S | ATTR_DB | ATTR_G | (dpl << 5) | (0xB if code else 0x3)
    return Segment(selector, 0, 0xFFFFFFFF, attr)


@helper(M.SYSENTER)
def h_sysenter(cpu, ins) -> int:
    """Fast system call: flat ring-0 CS/SS from IA32_SYSENTER_CS, ESP/EIP from the MSRs."""
    if cpu.mode.real:
        raise CpuFault(GP, 0)       # SDM Vol. 2 SYSENTER/SYSEXIT
    st = cpu.state
    cs = st.msrs.get(MSR_SYSENTER_CS, 0)
    if cs & 0xFFFC == 0:
        raise CpuFault(GP, 0)
    st.eflags &= ~(VM | IF | RF)
    st.segs[CS] = _flat(cs & 0xFFFC, True, 0)
    st.segs[SS] = _flat((cs + 8) & 0xFFFC, False, 0)
    st.regs[4] = st.msrs.get(MSR_SYSENTER_ESP, 0) & 0xFFFFFFFF
    cpu.mode_changed()
    return st.msrs.get(MSR_SYSENTER_EIP, 0) & 0xFFFFFFFF


@helper(M.SYSEXIT)
def h_sysexit(cpu, ins) -> int:
    """Return to ring 3: flat CS/SS at IA32_SYSENTER_CS + 16/24, ESP = ECX, EIP = EDX."""
    if cpu.mode.real:
        raise CpuFault(GP, 0)       # SDM Vol. 2 SYSENTER/SYSEXIT
    st = cpu.state
    cs = st.msrs.get(MSR_SYSENTER_CS, 0)
    if cs & 0xFFFC == 0 or cpu.cpl != 0:
        raise CpuFault(GP, 0)
    st.segs[CS] = _flat(((cs + 16) & 0xFFFC) | 3, True, 3)
    st.segs[SS] = _flat(((cs + 24) & 0xFFFC) | 3, False, 3)
    st.regs[4] = st.regs[1]
    cpu.mode_changed()
    return st.regs[2]


# --- far pointers and far transfers --------------------------------------------------------------
@helper(M.LDS, M.LES, M.LFS, M.LGS, M.LSS)
def h_lds(cpu, ins) -> int:
    size = GPR[ins.op0_register][1]
    off = read_mem(cpu, ins, size)
    sel = read_mem(cpu, ins, 2, size)
    s = {M.LDS: 3, M.LES: 0, M.LFS: 4, M.LGS: 5, M.LSS: 2}[ins.mnemonic]
    cpu.segmentation.load(s, sel)
    set_reg(cpu, ins.op0_register, off)
    return ins.next_ip32


def _far_target(cpu, ins) -> tuple[int, int, int]:
    k = ins.op0_kind
    if k in (OK.FAR_BRANCH16, OK.FAR_BRANCH32):
        size = 4 if k == OK.FAR_BRANCH32 else 2
        off = ins.far_branch32 if size == 4 else ins.far_branch16
        return ins.far_branch_selector, off, size
    size = 2 if ix_code_is_16(ins.code) else 4
    off = read_mem(cpu, ins, size)
    sel = read_mem(cpu, ins, 2, size)
    return sel, off, size


@helper(M.JMP)
def h_far_jmp(cpu, ins) -> int:
    sel, off, size = _far_target(cpu, ins)
    transfers.far_transfer(cpu, sel, off, size, False, ins.next_ip32)
    return cpu.state.eip


@helper(M.CALL)
def h_far_call(cpu, ins) -> int:
    sel, off, size = _far_target(cpu, ins)
    transfers.far_transfer(cpu, sel, off, size, True, ins.next_ip32)
    return cpu.state.eip


@helper(M.RETF)
def h_retf(cpu, ins) -> int:
    size = 2 if ix_code_is_16(ins.code) else 4
    transfers.far_return(cpu, size, ins.immediate16 if ins.op_count else 0)
    return cpu.state.eip


@helper(M.ENTER)
def h_enter(cpu, ins) -> int:
    st = cpu.state
    size = 2 if ix_code_is_16(ins.code) else 4
    alloc = ins.immediate16
    level = ins.immediate8_2nd & 31
    ss = st.segs[SS]
    big = ss.big
    m = 0xFFFFFFFF if big else 0xFFFF
    esp, ebp = st.regs[4], st.regs[5]
    vals = [ebp & ((1 << (8 * size)) - 1)]
    frame = (esp - size) & m
    # The outer frame pointers are read after EBP (and each earlier copy) is pushed, so
    # a read that overlaps the new frame sees the pushed bytes (the SDM's sequential
    # Push/Push([EBP]) order); nothing is written until every read has succeeded.
    pushed = {}

    def note(value, slot):
        for k in range(size):
            pushed[(esp - (slot + 1) * size + k) & m] = value >> (8 * k) & 0xFF

    note(vals[0], 0)
    user = cpu.cpl == 3
    for i in range(1, level):
        off = (ebp - i * size) & m
        if any((off + k) & m in pushed for k in range(size)):
            v = 0
            for k in range(size):
                o = (off + k) & m
                b = pushed.get(o)
                if b is None:
                    b = cpu.mmu.read(cpu.segmentation.linear(SS, o, 1, False), 1, user)
                v |= b << (8 * k)
        else:
            v = cpu.mmu.read(cpu.segmentation.linear(SS, off, size, False), size, user)
        vals.append(v)
        note(v, i)
    if level:
        vals.append(frame)
    new_esp = transfers._push_frame(cpu, ss, esp, vals, size, cpu.cpl == 3)
    final = (new_esp - alloc) & m
    # the final stack pointer must be usable (a fault here leaves registers alone)
    cpu.segmentation.linear(SS, final, 1, True)
    # the stack size, not the operand size, picks EBP or BP
    st.regs[5] = frame if big else (ebp & 0xFFFF0000) | (frame & 0xFFFF)
    transfers._set_esp(cpu, ss, final)
    return ins.next_ip32


@helper(M.BOUND)
def h_bound(cpu, ins) -> int:
    size = GPR[ins.op0_register][1]
    s = 1 << (8 * size - 1)
    idx = (get_reg(cpu, ins.op0_register) ^ s) - s
    lo = (read_mem(cpu, ins, size) ^ s) - s
    hi = (read_mem(cpu, ins, size, size) ^ s) - s
    if idx < lo or idx > hi:
        raise CpuFault(BR)
    return ins.next_ip32


@helper(M.CMPXCHG8B)
def h_cmpxchg8b(cpu, ins) -> int:
    if ins.op0_kind != OK.MEMORY:
        raise CpuFault(UD)
    r = cpu.state.regs
    lin = mem_linear(cpu, ins, 8, True)
    user = cpu.cpl == 3
    cpu.mmu.walk(lin, True, user)
    cpu.mmu.walk(lin + 7, True, user)
    # one quadword read and one quadword write, the old value written back when they
    # differ (SDM Vol. 2 CMPXCHG8B); on a device a quadword access is not two doublewords
    # (QEMU's helper_cmpxchg8b_unlocked: tests/hwguests/mmiosplit)
    old = cpu.mmu.read(lin, 8, user)
    if old == (r[0] | r[2] << 32):
        cpu.mmu.write(lin, 8, r[3] | r[1] << 32, user)
        set_zf(cpu, True)
    else:
        cpu.mmu.write(lin, 8, old, user)
        r[0], r[2] = old & 0xFFFFFFFF, old >> 32
        set_zf(cpu, False)
    return ins.next_ip32


@helper(M.WAIT)
def h_wait(cpu, ins) -> int:
    """FWAIT ends its block: with CR0.NE=0 the IRQ 13 it may raise is taken right after it."""
    x87control.fwait(cpu, None)
    return ins.next_ip32


# --- x87 / MMX / SSE: there is no FPU ----------------------------------------------------------
def h_fpu(cpu, ins) -> int:
    """No floating point unit: #NM or #UD exactly as CR0.EM/TS (and CR4.OSFXSR) direct."""
    cr0, cr4 = cpu.state.cr0, cpu.state.cr4
    feats = set(ins.cpuid_features())
    F = ix.CpuidFeature
    if ins.mnemonic in (M.WAIT,):       # FWAIT: #NM only when both MP and TS are set
        if cr0 & CR0_MP and cr0 & CR0_TS:
            raise CpuFault(NM)
        return ins.next_ip32
    if F.FPU in feats or F.FPU287 in feats or F.FPU387 in feats:
        if cr0 & (CR0_EM | CR0_TS):
            raise CpuFault(NM)
        raise CpuFault(UD)
    # MMX / SSE
    if cr0 & CR0_EM:
        raise CpuFault(UD)
    sse = any(f in feats for f in (F.SSE, F.SSE2, F.SSE3, F.SSSE3, F.SSE4_1, F.SSE4_2, F.FXSR))
    if sse and not cr4 & CR4_OSFXSR:
        raise CpuFault(UD)
    if cr0 & CR0_TS:
        raise CpuFault(NM)
    raise CpuFault(UD)


def fpu_class(ins: ix.Instruction) -> bool:
    F = ix.CpuidFeature
    feats = set(ins.cpuid_features())
    return bool(feats & {F.FPU, F.FPU287, F.FPU387, F.MMX, F.SSE, F.SSE2, F.SSE3, F.SSSE3,
                         F.SSE4_1, F.SSE4_2, F.FXSR}) or ins.mnemonic == M.WAIT


def run_helper(cpu, ins: ix.Instruction) -> int:
    fn = HELPERS.get(ins.mnemonic)
    if fn is None:
        if fpu_class(ins):
            return h_fpu(cpu, ins)
        raise CpuFault(UD)
    if cpu.nonroot:
        # VMX non-root operation: the instruction may cause a VM exit (hw/vmexits.py)
        r = cpu.vmx.intercept(ins)
        if r is not None:
            return r
        r = fn(cpu, ins)
        cpu.vmx.event = None            # an INT n delivered without incident
        return r
    return fn(cpu, ins)
