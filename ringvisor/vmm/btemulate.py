"""The sensitive instructions only binary translation sees (its callouts).

Trap-and-emulate never sees these: at ring 1 they run without trapping
(PUSHF/POPF, PUSH CS, LAR & co.: Robin & Irvine's list), or they are control
transfers that translated code cannot make as itself (RET, far JMP/CALL, INT n),
or reads through CS, which would see the translation cache.  Under binary
translation each is a callout (``bt.py``) emulated here on the virtual CPU, with
``emulate.EMULATORS`` for the rest.
"""

from __future__ import annotations

import iced_x86 as ix

from ringvisor.hw.transfers import check_far_code
from ringvisor.hw.translate import GPR, registrar

from . import emulate as E
from .emulate import DONE, NEXT, Context, GuestFault, far_to_system

M = ix.Mnemonic
OK = ix.OpKind
R = ix.Register


BT_EMULATORS: dict = {}
bt_emulates = registrar(BT_EMULATORS)


@bt_emulates(M.PUSHF, M.PUSHFD)
def b_pushf(c: Context) -> str:
    size = 2 if c.ins.mnemonic == M.PUSHF else 4
    c.push(c.v.eflags_view(c.f.eflags) & ~((1 << 16) | (1 << 17)), size)
    return NEXT


@bt_emulates(M.POPF, M.POPFD)
def b_popf(c: Context) -> str:
    size = 2 if c.ins.mnemonic == M.POPF else 4
    value = c.pop(size)
    c.cpu.state.regs[4] = (c.cpu.state.regs[4] + size) & 0xFFFFFFFF
    c.mon.set_guest_eflags(c.f, value, size)
    return NEXT


@bt_emulates(M.RET)
def b_ret(c: Context) -> str:
    imm = c.ins.immediate16 if c.ins.op_count else 0
    target = c.pop(4)
    c.cpu.state.regs[4] = (c.cpu.state.regs[4] + 4 + imm) & 0xFFFFFFFF
    c.f.eip = c.mon.kernel_entry(target)
    return DONE


@bt_emulates(M.JMP, M.CALL)
def b_jmp_call(c: Context) -> str:
    call = c.ins.mnemonic == M.CALL
    far = E.far_operand(c)
    if far is not None:
        return _far(c, *far, call=call)
    target = c.op(0, 4)
    if call:
        c.push(c.next_eip)
    c.f.eip = c.mon.kernel_entry(target)
    return DONE


def _far(c: Context, sel: int, off: int, call: bool) -> str:
    """A far JMP/CALL in kernel code, with the processor's checks (``hw.transfers``)."""
    if not sel & 0xFFFC:
        raise GuestFault(13, 0)
    d = c.mon.guest_desc(sel)
    if not d.s:
        done = far_to_system(c, sel, d, call)
        if done is None:
            raise GuestFault(13, sel & 0xFFFC)
        return done
    if not d.is_code:
        raise GuestFault(13, sel & 0xFFFC)
    check_far_code(d, sel, c.v.cpl)
    if off > d.limit:
        raise GuestFault(13, 0)
    if call:
        c.push(c.v.cs)
        c.push(c.next_eip)
    c.mon.gdt.set_accessed(d)
    c.v.cs = (sel & ~3) | c.v.cpl
    c.mon.kernel_cs(sel)                  # (its base: the code's linear addresses)
    c.f.eip = c.mon.kernel_entry(off)
    return DONE


@bt_emulates(M.INT, M.INT3, M.INTO, M.INT1)
def b_int(c: Context) -> str:
    m = c.ins.mnemonic
    if m == M.INTO and not c.f.eflags & 0x800:
        return NEXT
    vector = {M.INT3: 3, M.INTO: 4, M.INT1: 1}.get(m, c.ins.immediate8 if m == M.INT else 0)
    c.mon.traps[f"int {vector:#x}"] += 1
    # a fault on the way is reported at the instruction, as the hardware reports it
    c.mon.deliver(c.f, vector, None, m != M.INT1, c.next_eip, c.eip)
    return DONE


@bt_emulates(M.PUSH)
def b_push(c: Context) -> str | None:
    ins = c.ins
    if ins.op0_kind == OK.REGISTER:                 # PUSH CS/SS: the guest's selectors
        c.push(c.v.cs if ins.op0_register == R.CS else c.v.ss, 4)
        return NEXT
    if ins.op0_kind == OK.MEMORY and ins.memory_segment == R.CS:
        size = ix.MemorySizeExt.size(ins.memory_size)
        c.push(c.read(size), size)                  # through a CS that SS cannot stand for
        return NEXT
    return None


@bt_emulates(M.LAR, M.LSL, M.VERR, M.VERW)
def b_descriptor_probe(c: Context) -> str:
    """LAR/LSL/VERR/VERW against the guest's own GDT, at the guest's privilege."""
    ins = c.ins
    m = ins.mnemonic
    src = 0 if m in (M.VERR, M.VERW) else 1
    sel = c.op(src, 2) & 0xFFFF
    raw = c.mon.guest_descriptor(sel) if sel & ~3 else None
    ok = False
    value = 0
    if raw is not None:
        access = (raw >> 40) & 0xFF
        dpl = (access >> 5) & 3
        s = access & 0x10
        typ = access & 0xF
        conforming = s and typ & 0xC == 0xC
        visible = conforming or dpl >= max(c.v.cpl, sel & 3)
        if m == M.LAR:
            ok = visible and (s or typ in (1, 2, 3, 4, 5, 9, 0xB, 0xC))
            value = raw >> 32 & 0x00F0FF00
        elif m == M.LSL:
            ok = visible and (s or typ in (1, 2, 3, 9, 0xB))
            limit = (raw & 0xFFFF) | ((raw >> 48) & 0xF) << 16
            value = (limit << 12 | 0xFFF) if raw >> 55 & 1 else limit
        elif m == M.VERR:
            ok = bool(s) and visible and (not typ & 8 or typ & 2)
        else:
            ok = bool(s) and visible and not typ & 8 and bool(typ & 2)
    if ok and m in (M.LAR, M.LSL):
        reg = ins.op0_register
        size = 2 if R.AX <= reg <= R.DI else 4
        c.set_op(0, size, value & (0xFFFF if size == 2 else 0xFFFFFFFF))
    c.f.eflags = (c.f.eflags & ~0x40) | (0x40 if ok else 0)
    return NEXT


@bt_emulates(M.MOV)
def b_mov(c: Context) -> str | None:
    ins = c.ins
    if is_plain_store(ins):             # an adaptive callout: a store to a page table
        c.mon.store_callout(c)
        return NEXT
    if ins.memory_segment == R.CS and ins.op1_kind == OK.MEMORY and ins.op0_register in GPR:
        # a load through a CS that SS cannot stand for (or that refuses it)
        size = GPR[ins.op0_register][1]
        c.set_op(0, size, c.read(size))
        return NEXT
    return E.e_mov(c)


def is_plain_store(ins: ix.Instruction) -> bool:
    """``mov mem, reg/imm`` with an ordinary segment: what adaptive translation turns into a callout."""
    return (ins.mnemonic == M.MOV and ins.op0_kind == OK.MEMORY and ins.memory_segment != R.CS
            and (ins.op1_kind != OK.REGISTER or ins.op1_register in GPR))


@bt_emulates(M.UD0)
def b_fault(c: Context) -> str:
    raise GuestFault(6, None)


@bt_emulates(M.LDS, M.LES, M.LFS, M.LGS)
def b_lxs(c: Context) -> str:
    off = c.read(4)
    sel = c.read(2, 4)
    i = {M.LDS: 3, M.LES: 0, M.LFS: 4, M.LGS: 5}[c.ins.mnemonic]
    c.mon.load_sreg(i, sel)
    from ringvisor.hw.system import set_reg
    set_reg(c.cpu, c.ins.op0_register, off)
    return NEXT
