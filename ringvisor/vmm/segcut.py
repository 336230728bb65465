"""Guest data segments the hardware cannot hold whole: their other offsets, emulated.

Ring compression keeps the hypervisor region (the top 4 MiB of every address space)
out of each segment the guest loads.  A data segment that reaches it -- a flat one up
to 4 GiB, every 32-bit expand-down segment (its offsets run to 4 GiB), one whose base
lies in the region, one that wraps around 4 GiB -- is held by the hardware as the
largest run of its offsets that stays out of the region and that one descriptor can
bound (``descriptors.compress``: same base, from offset 0 up, or down from the top;
an expand-down segment that holds nothing when no such run is left).  The guest loads
it as on the hardware, and an access within that run costs nothing.

An access beyond it faults on the real processor -- #GP(0), or #SS(0) through SS --
and comes here before the monitor reflects the fault.  If the guest's own segment
allows every access of the instruction (the limit and expand-down rules, a write only
to a writable segment: SDM Vol. 3 §5.3), it is legal on the hardware, and the
instruction is emulated through the guest's page tables (``mmio.MmioContext``: its
paging rules, its devices, and its own mappings of the addresses the region covers,
which the real address space does not show it).  Otherwise the fault is the guest's,
as the hardware raises it.  VMware's VMM did the same with the segments it truncated
(Adams & Agesen, "A Comparison of Software and Hardware Techniques for x86
Virtualization", §3.2: truncated segments, whose accesses beyond the cut are emulated).

The emulated instructions are the ones device pages have (MOV, MOVZX/MOVSX, the ALU
forms, XCHG, MOVS/STOS/LODS without REP) and the stack's (PUSH and POP of registers,
DS, ES, FS, GS, immediates and memory, PUSHAD, POPAD, near CALL and RET, LEAVE: a 32-bit expand-down
stack segment with base 0 holds no offset on the hardware, so each of them traps);
another instruction making such an access stops the run with one line naming it.  A code segment is only cut short, from offset 0
(a CS load of one based in the region is refused): the guest's code must lie below the
region; a readable one loaded into a data register is read beyond the cut as above (one
that cannot be held as code at all is held as read-only data: ``descriptors.compress``).
"""

from __future__ import annotations

import iced_x86 as ix

from ringvisor.hw.segments import Descriptor
from ringvisor.hw.system import get_reg
from ringvisor.hw.translate import GPR, SREG, WRITE_ACCESSES

from . import descriptors as D
from .emulate import DONE, EMULATORS, NEXT, emulate, registrar
from .errors import MonitorStop
from .guestmem import GuestBadFrame, GuestPageFault
from .mmio import MMIO_EMULATORS, MmioContext

M = ix.Mnemonic
OK = ix.OpKind
R = ix.Register
M32 = 0xFFFFFFFF
_INFO = ix.InstructionInfoFactory()


def _inside(spans: list[tuple[int, int]], off: int, size: int) -> bool:
    last = off + size - 1
    return any(lo <= off and last <= hi for lo, hi in spans)


def _fields(raw: int) -> tuple[list[tuple[int, int]], bool]:
    """The offsets a data descriptor (or a readable code one) allows, and whether it is
    writable (a code segment never is; its bit 2 is the conforming bit)."""
    base, limit, access, flags = D.guest_descriptor_fields(raw)
    code = bool(access & 8)
    return (D.allowed_offsets(base, limit, not code and bool(access & 4), bool(flags & 4)),
            not code and bool(access & 2))


def _segment(mon, f, i: int) -> tuple[int, int] | None:
    """(guest descriptor, real descriptor) of the segment in data register ``i`` (a data
    segment, or a readable code one), or None."""
    cpu = mon.cpu
    sel = f.ss if i == 2 else cpu.state.segs[i].selector
    if i == 1 or not sel & 0xFFFC:
        return None
    try:
        raw = mon.guest_descriptor(sel)
    except (GuestPageFault, GuestBadFrame):
        return None
    if not raw:
        return None
    if not Descriptor(raw, 0).s:
        return None
    real = D.compress(raw)
    if not real or i != 2 and D.base_of(real) != cpu.state.segs[i].base:
        return None                 # (edited in place since the load: the hardware's cache rules)
    return raw, real


# -- the stack operations: through an SS the hardware cannot hold whole --------------------
STACK_EMULATORS: dict = {}
stack_emulates = registrar(STACK_EMULATORS)


class StackContext(MmioContext):
    """MmioContext with the stack's own accesses: ESP (SP under a 16-bit SS) moves as the
    processor moves it, and what is pushed or popped goes through the guest's tables."""

    def sp_mask(self) -> int:
        raw = self.mon.guest_descriptor(self.f.ss) or 0
        return M32 if raw >> 54 & 1 else 0xFFFF

    def push_value(self, value: int, size: int) -> None:
        st, mask = self.cpu.state, self.sp_mask()
        sp = (st.regs[4] - size) & mask
        self.write_at((self.seg_base(R.SS) + sp) & M32, size, value & ((1 << 8 * size) - 1))
        st.regs[4] = (st.regs[4] & ~mask) | sp

    def pop_value(self, size: int) -> int:
        st, mask = self.cpu.state, self.sp_mask()
        value = self.read_at((self.seg_base(R.SS) + (st.regs[4] & mask)) & M32, size)
        st.regs[4] = (st.regs[4] & ~mask) | ((st.regs[4] + size) & mask)
        return value

    def go(self, target: int) -> str:
        """A near transfer to ``target`` (the guest's EIP; translated code's entry for it)."""
        self.f.eip = target if self.f.user else self.mon.kernel_entry(target)
        return DONE


def _gpr_or_value(c: StackContext) -> bool:
    return c.ins.op0_kind != OK.REGISTER or c.ins.op0_register in GPR


DATA_SREGS = {r: i for r, i in SREG.items() if r not in (R.CS, R.SS)}


@stack_emulates(M.PUSH)
def e_push(c: StackContext) -> str | None:
    size = -c.ins.stack_pointer_increment
    if c.ins.op0_kind == OK.REGISTER and c.ins.op0_register in DATA_SREGS:
        # the selector, zero-extended to the operand size (as hw.semantics pushes it)
        c.push_value(c.cpu.state.segs[DATA_SREGS[c.ins.op0_register]].selector, size)
        return NEXT
    if not _gpr_or_value(c):
        return None                 # (CS, SS: sensitive, emulated elsewhere or shown)
    c.push_value(c.op(0, size), size)
    return NEXT


@stack_emulates(M.POP)
def e_pop(c: StackContext) -> str | None:
    size = c.ins.stack_pointer_increment
    if c.ins.op0_kind == OK.REGISTER and c.ins.op0_register in DATA_SREGS:
        st, mask = c.cpu.state, c.sp_mask()
        sel = c.read_at((c.seg_base(R.SS) + (st.regs[4] & mask)) & M32, size) & 0xFFFF
        c.mon.load_sreg(DATA_SREGS[c.ins.op0_register], sel)    # (a fault leaves ESP)
        st.regs[4] = (st.regs[4] & ~mask) | ((st.regs[4] + size) & mask)
        return NEXT
    if not _gpr_or_value(c):
        return None
    value = c.pop_value(size)
    # a POP to memory addresses it with ESP as it is after the pop (SDM Vol. 2 POP)
    c.set_op(0, size, value)
    return NEXT


@stack_emulates(M.PUSHAD, M.PUSHA)
def e_pusha(c: StackContext) -> str:
    size = -c.ins.stack_pointer_increment // 8
    regs = list(c.cpu.state.regs)
    for v in regs:                  # EAX ECX EDX EBX, ESP as it was, EBP ESI EDI
        c.push_value(v, size)
    return NEXT


@stack_emulates(M.POPAD, M.POPA)
def e_popa(c: StackContext) -> str:
    size = c.ins.stack_pointer_increment // 8
    st = c.cpu.state
    for i in (7, 6, 5, 4, 3, 2, 1, 0):
        v = c.pop_value(size)
        if i != 4:                  # (the ESP image is skipped)
            st.regs[i] = v if size == 4 else (st.regs[i] & ~0xFFFF) | v
    return NEXT


@stack_emulates(M.CALL)
def e_call(c: StackContext) -> str | None:
    ins = c.ins
    if ins.op0_kind == OK.NEAR_BRANCH32:
        target = ins.near_branch32
    elif ins.op0_kind in (OK.REGISTER, OK.MEMORY) and ins.op_count == 1 and \
            ins.code in (ix.Code.CALL_RM32,):
        target = c.op(0, 4)
    else:
        return None                 # (far and 16-bit calls: not emulated here)
    c.push_value(c.next_eip, 4)
    return c.go(target)


@stack_emulates(M.RET)
def e_ret(c: StackContext) -> str | None:
    if c.ins.code not in (ix.Code.RETND, ix.Code.RETND_IMM16):
        return None
    target = c.pop_value(4)
    if c.ins.op_count:
        st, mask = c.cpu.state, c.sp_mask()
        st.regs[4] = (st.regs[4] & ~mask) | ((st.regs[4] + c.ins.immediate16) & mask)
    return c.go(target)


@stack_emulates(M.LEAVE)
def e_leave(c: StackContext) -> str:
    st, mask = c.cpu.state, c.sp_mask()
    st.regs[4] = (st.regs[4] & ~mask) | (st.regs[5] & mask)
    size = 2 if c.ins.code == ix.Code.LEAVEW else 4
    v = c.pop_value(size)
    st.regs[5] = v if size == 4 else (st.regs[5] & ~0xFFFF) | v
    return NEXT


def cut_access(mon, f) -> bool:
    """A #GP(0) or #SS(0) from guest code: emulate the instruction if it is an access the
    guest's segments allow and the real ones, cut by ring compression, do not."""
    if f.vm86:
        return False
    try:
        ins = mon.code_at(f)
    except (GuestPageFault, GuestBadFrame):
        return False
    info = _INFO.info(ins)
    beyond = False
    for mem in info.used_memory():
        i = SREG.get(mem.segment)
        if i is None:
            return False
        seg = _segment(mon, f, i)
        if seg is None:
            return False
        off = mem.displacement
        if mem.base != R.NONE:
            off += get_reg(mon.cpu, mem.base)
        if mem.index != R.NONE:
            off += get_reg(mon.cpu, mem.index) * mem.scale
        off &= 0xFFFFFFFF
        size = ix.MemorySizeExt.size(mem.memory_size)
        write = mem.access in WRITE_ACCESSES
        spans, writable = _fields(seg[0])
        if not _inside(spans, off, size) or write and not writable:
            return False                # the guest's own fault
        beyond = beyond or not _inside(_fields(seg[1])[0], off, size)
    if not beyond:
        return False
    result = None
    if not (ins.has_rep_prefix or ins.has_repne_prefix):
        mon.traps["#GP (cut segment)"] += 1
        # (and what the monitor emulates anyway: an IRET whose frame lies beyond the cut
        # raised #SS before the #GP that brings it to the monitor)
        result = emulate(mon, f, ins, mon.guest_eip(f),
                         (STACK_EMULATORS, MMIO_EMULATORS, EMULATORS), StackContext)
    if result is None:
        raise MonitorStop(f"{mon.name}: the guest's {ins} at {mon.guest_eip(f):#010x} reaches "
                          f"past what the hardware holds of its segment, and is not emulated "
                          f"(MOV, MOVZX/MOVSX, the ALU forms, XCHG, MOVS/STOS/LODS, PUSH, POP, "
                          f"PUSHAD, POPAD, near CALL and RET, LEAVE are)")
    if result == NEXT:
        f.eip = (f.eip + ins.len) & 0xFFFFFFFF
    return True
