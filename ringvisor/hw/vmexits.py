"""Instructions in VMX non-root operation (SDM Vol. 3C chapter 25): which exit, with
which qualification, and what the ones that do not exit see.

One small function per instruction, registered by mnemonic.  Each returns the
host's RIP after a VM exit, the next EIP when it executed the instruction itself
(reads of CR0/CR4 through the read shadows), or None: the helper runs as in root
operation.  Faults with priority over the exit (SDM §25.1.1: #UD, privilege,
the I/O permission checks) are raised before it.
"""

from __future__ import annotations

import iced_x86 as ix

from .faults import BP, DB, GP, OF as OF_VEC, UD, CpuFault
from .state import CR0_PE, CR0_TS, CR4_DE, CR4_TSD, OF
from .controlregs import CR_REGS, DR_REGS, write_cr
from .desctables import check_umip
from .portio import io_permitted
from .system import ea, get_reg, require_cpl0, set_reg, write_mem
from .translate import GPR, SREG, registrar
from .vmcs import (CPU2_RDTSCP, CPU2_WBINVD, CPU_CONTROLS, CPU_CONTROLS2, CPU_CR3_LOAD,
                   CPU_CR3_STORE, CPU_HLT, CPU_INVLPG, CPU_IO, CPU_IO_BITMAPS, CPU_MOV_DR,
                   CPU_MSR_BITMAPS, CPU_RDPMC, CPU_RDTSC, CPU_SECONDARY, CR0_MASK, CR0_SHADOW,
                   CR3_TARGET, CR3_TARGET_COUNT, CR4_MASK, CR4_SHADOW, EXCEPTION_BITMAP, EXIT_CPUID,
                   EXIT_INSTRUCTION_INFO,
                   EXIT_CR, EXIT_DR, EXIT_EXCEPTION, EXIT_HLT, EXIT_INVD, EXIT_INVLPG, EXIT_IO,
                   EXIT_RDMSR, EXIT_RDPMC, EXIT_RDTSC, EXIT_RDTSCP, EXIT_WBINVD, EXIT_WRMSR,
                   INTR_PRIV_SOFT_EXC, INTR_SOFT_EXC, INTR_SOFT_INT, INTR_VALID,
                   IO_BITMAP_A, IO_BITMAP_B, MSR_BITMAP)

M = ix.Mnemonic
OK = ix.OpKind
INTERCEPTS: dict = {}
intercepts = registrar(INTERCEPTS)

# CR-access exit qualification (SDM Table 27-3)
CR_MOV_TO, CR_MOV_FROM, CR_CLTS, CR_LMSW = 0, 1, 2, 3


def _secondary(vmx) -> int:
    return vmx.read(CPU_CONTROLS2) if vmx.read(CPU_CONTROLS) & CPU_SECONDARY else 0


def _gpr(reg) -> int:
    return GPR[reg][0]


# -- unconditional and simply controlled exits ------------------------------------------------
@intercepts(M.CPUID)
def x_cpuid(vmx, ins):
    return vmx.instruction_exit(ins, EXIT_CPUID)


@intercepts(M.INVD)
def x_invd(vmx, ins):
    require_cpl0(vmx.cpu)
    return vmx.instruction_exit(ins, EXIT_INVD)


@intercepts(M.WBINVD)
def x_wbinvd(vmx, ins):
    require_cpl0(vmx.cpu)
    if _secondary(vmx) & CPU2_WBINVD:
        return vmx.instruction_exit(ins, EXIT_WBINVD)
    return None


@intercepts(M.HLT)
def x_hlt(vmx, ins):
    require_cpl0(vmx.cpu)
    if vmx.read(CPU_CONTROLS) & CPU_HLT:
        return vmx.instruction_exit(ins, EXIT_HLT)
    return None


@intercepts(M.INVLPG)
def x_invlpg(vmx, ins):
    cpu = vmx.cpu
    require_cpl0(cpu)
    if vmx.read(CPU_CONTROLS) & CPU_INVLPG:
        lin = (cpu.state.segs[SREG[ins.memory_segment]].base + ea(cpu, ins)) & 0xFFFFFFFF
        return vmx.instruction_exit(ins, EXIT_INVLPG, lin)
    return None


def _tsd(cpu) -> None:
    if cpu.state.cr4 & CR4_TSD and cpu.cpl != 0:
        raise CpuFault(GP, 0)


@intercepts(M.RDTSC)
def x_rdtsc(vmx, ins):
    _tsd(vmx.cpu)
    if vmx.read(CPU_CONTROLS) & CPU_RDTSC:
        return vmx.instruction_exit(ins, EXIT_RDTSC)
    return None             # (TSC offsetting: Cpu.tsc adds cpu.vmx_tsc)


@intercepts(M.RDTSCP)
def x_rdtscp(vmx, ins):
    if not _secondary(vmx) & CPU2_RDTSCP:
        raise CpuFault(UD)               # "enable RDTSCP" is 0 (SDM §25.3)
    _tsd(vmx.cpu)
    if vmx.read(CPU_CONTROLS) & CPU_RDTSC:
        return vmx.instruction_exit(ins, EXIT_RDTSCP)
    return None


@intercepts(M.RDPMC)
def x_rdpmc(vmx, ins):
    if vmx.read(CPU_CONTROLS) & CPU_RDPMC:
        return vmx.instruction_exit(ins, EXIT_RDPMC)
    return None


def _vmx_instruction(vmx, ins):
    from .vmx import VMX_REASONS
    return vmx.instruction_exit(ins, VMX_REASONS[ins.mnemonic])


for _m in (M.VMCALL, M.VMCLEAR, M.VMLAUNCH, M.VMPTRLD, M.VMPTRST, M.VMREAD, M.VMRESUME,
           M.VMWRITE, M.VMXOFF, M.VMXON, M.INVEPT):
    INTERCEPTS[_m] = _vmx_instruction


# -- control registers: guest/host masks, read shadows, CR3 targets (SDM §25.1.3, §25.3) -------
def _cr_exit(vmx, ins, cr: int, access: int, reg: int = 0, lmsw: int = 0, mem: bool = False):
    qual = cr | access << 4 | int(mem) << 6 | reg << 8 | (lmsw & 0xFFFF) << 16
    return vmx.instruction_exit(ins, EXIT_CR, qual)


def _cr_write_exits(vmx, n: int, value: int) -> bool:
    if n == 0 or n == 4:
        mask = vmx.read(CR0_MASK if n == 0 else CR4_MASK)
        return bool((value ^ vmx.read(CR0_SHADOW if n == 0 else CR4_SHADOW)) & mask)
    if n == 3 and vmx.read(CPU_CONTROLS) & CPU_CR3_LOAD:
        count = vmx.read(CR3_TARGET_COUNT)
        return value not in [vmx.read(CR3_TARGET + 2 * i) for i in range(count)]
    return False


def _mov_cr(vmx, ins):
    cpu = vmx.cpu
    r0, r1 = ins.op0_register, ins.op1_register
    require_cpl0(cpu)
    if r0 in CR_REGS:                       # MOV to CR
        n, value = CR_REGS[r0], get_reg(cpu, r1)
        if n not in (0, 2, 3, 4):
            raise CpuFault(UD)
        if _cr_write_exits(vmx, n, value):
            return _cr_exit(vmx, ins, n, CR_MOV_TO, _gpr(r1))
        if n in (0, 4):                     # the bits the host owns keep their real values
            mask = vmx.read(CR0_MASK if n == 0 else CR4_MASK)
            real = cpu.state.cr0 if n == 0 else cpu.state.cr4
            value = (value & ~mask) | (real & mask)
        write_cr(cpu, n, value)
        cpu.mode_changed()
        return ins.next_ip32
    n = CR_REGS[r1]                         # MOV from CR
    if n == 3 and vmx.read(CPU_CONTROLS) & CPU_CR3_STORE:
        return _cr_exit(vmx, ins, 3, CR_MOV_FROM, _gpr(r0))
    if n in (0, 4):
        set_reg(cpu, r0, vmx.guest_cr(n))
        return ins.next_ip32
    return None


def _mov_dr(vmx, ins):
    cpu = vmx.cpu
    r0, r1 = ins.op0_register, ins.op1_register
    require_cpl0(cpu)
    to = r0 in DR_REGS
    n = DR_REGS[r0 if to else r1]
    if n in (4, 5) and cpu.state.cr4 & CR4_DE:
        raise CpuFault(UD)
    if vmx.read(CPU_CONTROLS) & CPU_MOV_DR:
        qual = n | (0 if to else 1) << 4 | _gpr(r1 if to else r0) << 8
        return vmx.instruction_exit(ins, EXIT_DR, qual)
    return None


@intercepts(M.MOV)
def x_mov(vmx, ins):
    r0, r1 = ins.op0_register, ins.op1_register
    if r0 in CR_REGS or r1 in CR_REGS:
        return _mov_cr(vmx, ins)
    if r0 in DR_REGS or r1 in DR_REGS:
        return _mov_dr(vmx, ins)
    return None


@intercepts(M.CLTS)
def x_clts(vmx, ins):
    cpu = vmx.cpu
    require_cpl0(cpu)
    if vmx.read(CR0_MASK) & CR0_TS:
        if vmx.read(CR0_SHADOW) & CR0_TS:
            return _cr_exit(vmx, ins, 0, CR_CLTS)
        return ins.next_ip32                # the host owns TS and the guest sees it clear
    return None


@intercepts(M.LMSW)
def x_lmsw(vmx, ins):
    from .system import read_op
    cpu = vmx.cpu
    require_cpl0(cpu)
    src = read_op(cpu, ins, 0, 2)
    mask, shadow = vmx.read(CR0_MASK) & 0xF, vmx.read(CR0_SHADOW)
    if (src ^ shadow) & mask & 0xE or (mask & CR0_PE and not shadow & CR0_PE and src & CR0_PE):
        mem = ins.op0_kind == OK.MEMORY
        return _cr_exit(vmx, ins, 0, CR_LMSW, 0 if mem else _gpr(ins.op0_register), src, mem)
    st = cpu.state
    keep = mask | ~0xF
    st.cr0 = (st.cr0 & keep) | (src & 0xF & ~mask) | (st.cr0 & CR0_PE)   # (PE is never cleared)
    cpu.mode_changed()
    return ins.next_ip32


@intercepts(M.SMSW)
def x_smsw(vmx, ins):
    cpu = vmx.cpu
    check_umip(cpu)
    v = vmx.guest_cr(0)
    if ins.op0_kind == OK.REGISTER:
        set_reg(cpu, ins.op0_register, v)
    else:
        write_mem(cpu, ins, 2, v & 0xFFFF)
    return ins.next_ip32


# -- I/O (SDM §25.1.3: unconditional I/O exiting, the I/O bitmaps) ------------------------------
def _io_exits(vmx, port: int, size: int) -> bool:
    ctl = vmx.read(CPU_CONTROLS)
    if not ctl & CPU_IO_BITMAPS:
        return bool(ctl & CPU_IO)
    if port + size > 0x10000:
        return True                          # wraps around the I/O space
    mem = vmx.cpu.mem
    for p in range(port, port + size):
        bitmap = vmx.read(IO_BITMAP_A if p < 0x8000 else IO_BITMAP_B)
        if mem.read((bitmap + ((p & 0x7FFF) >> 3)) & 0xFFFFFFFF, 1)[0] >> (p & 7) & 1:
            return True
    return False


@intercepts(M.IN, M.OUT, M.INSB, M.INSW, M.INSD, M.OUTSB, M.OUTSW, M.OUTSD)
def x_io(vmx, ins):
    cpu = vmx.cpu
    m = ins.mnemonic
    string = m not in (M.IN, M.OUT)
    into = m in (M.IN, M.INSB, M.INSW, M.INSD)
    if string:
        size = {M.INSB: 1, M.OUTSB: 1, M.INSW: 2, M.OUTSW: 2}.get(m, 4)
        imm = False
    else:
        size = GPR[ins.op0_register if into else ins.op1_register][1]
        imm = (ins.op1_kind if into else ins.op0_kind) == OK.IMMEDIATE8
    port = ins.immediate8 if imm else cpu.state.regs[2] & 0xFFFF
    io_permitted(cpu, port, size)
    if not _io_exits(vmx, port, size):
        return None
    rep = string and (ins.has_rep_prefix or ins.has_repne_prefix)
    qual = (size - 1) | int(into) << 3 | int(string) << 4 | int(rep) << 5 | int(imm) << 6 | port << 16
    linear = None
    if string:
        # the guest-linear address of the string operand, with the instruction's address
        # size (16-bit addressing takes SI or DI alone), which the VM-exit
        # instruction-information field records in bits 9:7 with the segment in bits
        # 17:15 (SDM Vol. 3C §27.2.5, Table 27-8)
        st = cpu.state
        seg = 0 if into else SREG[ins.memory_segment]
        wide = (ins.op0_kind if into else ins.op1_kind) in (OK.MEMORY_ESEDI, OK.MEMORY_SEG_ESI)
        offset = st.regs[7 if into else 6] & (0xFFFFFFFF if wide else 0xFFFF)
        linear = (st.segs[seg].base + offset) & 0xFFFFFFFF
        vmx.vmcs.write(EXIT_INSTRUCTION_INFO, int(wide) << 7 | seg << 15)
    return vmx.instruction_exit(ins, EXIT_IO, qual, linear)


# -- MSRs (SDM §25.1.3, §24.6.9: the MSR bitmaps) ---------------------------------------------
def _msr_exits(vmx, n: int, write: bool) -> bool:
    if not vmx.read(CPU_CONTROLS) & CPU_MSR_BITMAPS:
        return True
    if n <= 0x1FFF:
        off = 0
    elif 0xC0000000 <= n <= 0xC0001FFF:
        off = 1024
    else:
        return True
    off += 2048 if write else 0
    bit = n & 0x1FFF
    return bool(vmx.cpu.mem.read(vmx.read(MSR_BITMAP) + off + (bit >> 3), 1)[0] >> (bit & 7) & 1)


@intercepts(M.RDMSR, M.WRMSR)
def x_msr(vmx, ins):
    cpu = vmx.cpu
    require_cpl0(cpu)
    write = ins.mnemonic == M.WRMSR
    if _msr_exits(vmx, cpu.state.regs[1], write):
        return vmx.instruction_exit(ins, EXIT_WRMSR if write else EXIT_RDMSR)
    return None


# -- software interrupts and exceptions (the exception bitmap; IDT-vectoring information) ----------
def _soft(vmx, ins, vector: int, typ: int):
    """INT3, INTO, INT1 (exceptions the bitmap may intercept) and INT n: the event is
    remembered while it is delivered, for the IDT-vectoring information of an exit
    its delivery causes."""
    if typ != INTR_SOFT_INT and vmx.read(EXCEPTION_BITMAP) >> vector & 1:
        info = INTR_VALID | typ << 8 | vector
        vmx.exit(EXIT_EXCEPTION, 0, ins.len, intr_info=info, rip=ins.ip32)
        return vmx.cpu.state.eip
    vmx.event = (vector, typ, None, ins.len)
    return None


@intercepts(M.INT3)
def x_int3(vmx, ins):
    return _soft(vmx, ins, BP, INTR_SOFT_EXC)


@intercepts(M.INTO)
def x_into(vmx, ins):
    if not vmx.cpu.get_eflags() & OF:
        return None
    return _soft(vmx, ins, OF_VEC, INTR_SOFT_EXC)


@intercepts(M.INT1)
def x_int1(vmx, ins):
    return _soft(vmx, ins, DB, INTR_PRIV_SOFT_EXC)


@intercepts(M.INT)
def x_int(vmx, ins):
    return _soft(vmx, ins, ins.immediate8, INTR_SOFT_INT)
