"""The PC's memory-mapped devices under trap-and-emulate and binary translation (and,
with the same emulators on the VMCS's guest state, under hardware assist: ``hvmmmio.py``).

Above its RAM the guest's physical address space holds what QEMU's PC has there:
the local APIC page (0xFEE00000), the IO-APIC (0xFEC00000), the HPET
(0xFED00000), the PCI devices' memory BARs (the pci-testdev's at 0xFEBFF000 as
the firmware placed it) and the pc-testdev's scratch memory (0xFF000000).  The
monitor treats them in two ways:

* **Trapped and emulated on a virtual device** -- the devices whose state is
  interrupt routing or time, which the monitor must own on the machine: the
  local APIC (``vapic.py``), the IO-APIC and the HPET (``platform.py`` holds the
  guest's instances of the machine's own models, ``hw.devices.ioapic`` and
  ``hw.devices.hpet``).  The shadow page tables never map these pages, so every
  access faults into the monitor, which decodes the instruction and performs it
  on the virtual device (:func:`mmio_fault`), as VMware's VMM and Xen's HVM
  emulate the IO-APIC and HPET pages (Xen's ``vioapic.c``, ``hpet.c``).
* **Mapped through** -- every other device region of the machine (the
  pci-testdev's BAR, the pc-testdev's memory, any BAR a device of the machine
  decodes): such a device has no interrupt or time state the monitor must own
  (its interrupts, if any, reach the physical 8259A, which the monitor owns and
  forwards to the guest's virtual lines), so the shadow maps its page to the
  machine's device and the guest's accesses reach it without a trap (a device
  assigned to the guest, as Xen's PCI pass-through maps a BAR).  The guest
  programs the BARs itself (its port I/O reaches the PCI host): a BAR it moves
  is found where it now decodes at the next fault.  Only a page above the
  machine's RAM is ever mapped through: a BAR the guest moves over RAM is
  shadowed by the RAM there, as on the PC, and the monitor's own memory above
  the guest's is never a device.

An access where nothing decodes (above the machine's RAM) reads open bus, all
ones, and a write there is dropped, as on the PC: such a page is trapped and
emulated too.

The emulated instructions are the ones kernels use on MMIO: MOV to and from it,
MOVZX/MOVSX from it, the arithmetic and logic read-modify-writes (ADD ADC SUB
SBB AND OR XOR INC DEC NEG NOT) on it, CMP and TEST of it, the ALU forms that
read it into a register, XCHG, and MOVS/STOS/LODS with or without REP (either
side may be RAM: the RAM side goes through the guest's memory with its paging
rules), MOVD/MOVQ between the device and an MMX, XMM or general register, the
16-byte SSE moves, CMPXCHG8B, and every x87, MMX and SSE instruction (the hardware's own
function on ``DeviceCpu``).  Each access is one access of the instruction's width on the device; a
misaligned one, or one straddling a device's page and another, is cut into the aligned
pieces the machine's bus makes of it (``hw.memory.split_load``), each reaching what
decodes it.
Every other memory operand, and the guest's paging rules on either side, raise
what the processor would (``emulate.emulate`` delivers them at the instruction);
an instruction not listed stops the run with one line naming it.
"""

from __future__ import annotations

import iced_x86 as ix

from ringvisor.hw.devices.hpet import HPET_BASE, HPET_SIZE
from ringvisor.hw.devices.ioapic import IOAPIC_BASE, IOAPIC_SIZE
from ringvisor.hw.devices.lapic import APIC_WINDOW
from ringvisor.hw import sse, x87
from ringvisor.hw.memory import SPLIT_SIZES, split_load, split_store
from ringvisor.hw.sse import MMX_EXPONENT, enter_mmx
from ringvisor.hw.system import ea, get_reg, set_reg
from ringvisor.hw.translate import SREG, registrar

from .emulate import DONE, NEXT, STRING_IO_SLICE, Context, emulate
from .errors import MonitorStop
from .stores import MASK, arith
from .vapic import APIC_PAGE

M = ix.Mnemonic
OK = ix.OpKind
R = ix.Register
PAGE = 0xFFFFF000
PF_I = 0x10
DF = 0x400
ZF = 0x40

MMIO_EMULATORS: dict = {}
mmio_emulates = registrar(MMIO_EMULATORS)


class GuestMmio:
    """The guest's physical address space above its RAM: which device answers where."""

    def __init__(self, machine, platform) -> None:
        self.mem = machine.mem
        p = platform
        # the virtual devices' windows, each as the machine maps its own (the local
        # APIC's is QEMU's 1 MiB "apic-msi" region; the HPET decodes 1 KiB of its page,
        # the rest of the page is open bus there as on the machine)
        # the APIC page through the guest's APIC bus: each virtual processor sees its own
        # there (``vcpus.py`` makes the running one current), as on the PC
        self.virtual = [(APIC_PAGE, APIC_WINDOW, p.vapic.apic.bus), (IOAPIC_BASE, IOAPIC_SIZE, p.vioapic),
                        (HPET_BASE, HPET_SIZE, p.vhpet)]

    def _virtual(self, addr: int, page: bool = False) -> tuple[int, object] | None:
        """(offset, device) of the virtual device decoding ``addr`` (with ``page``: whose
        window touches the page at ``addr``)."""
        for base, size, dev in self.virtual:
            end = (base + size + 0xFFF) & PAGE if page else base + size
            if base <= addr < end:
                return addr - base, dev
        return None

    def owns(self, frame: int) -> bool:
        """The monitor answers for the page at ``frame`` (machine RAM is never it)."""
        return frame >= self.mem.size or self._virtual(frame, True) is not None

    def passes_through(self, frame: int) -> bool:
        """A machine device decodes the page and is not one the monitor virtualizes."""
        return frame >= self.mem.size and self._virtual(frame, True) is None and \
            self.mem.device_at(frame) is not None

    def read(self, gpa: int, size: int) -> int:
        """One access of ``size`` bytes at ``gpa``, aligned to its size (``MmioContext``
        cuts a misaligned one first, as the machine's bus does)."""
        hit = self._virtual(gpa)
        if hit is not None:
            return hit[1].mmio_read(hit[0], size) & MASK[size]
        if self._virtual(gpa, True) is not None:
            return MASK[size]            # a virtual device's page, beyond what it decodes
        # a device of the machine's (or nothing: open bus, all ones)
        return self.mem._read_sized(gpa, size)

    def write(self, gpa: int, size: int, value: int) -> None:
        hit = self._virtual(gpa)
        if hit is not None:
            hit[1].mmio_write(hit[0], size, value & MASK[size])
        elif self._virtual(gpa, True) is None:
            self.mem._write_sized(gpa, size, value)


def mmio_fault(mon, f, m, lin: int, err: int) -> bool:
    """The guest's access at ``lin`` faulted in the shadow and its tables map it to ``m``
    above its RAM: map a pass-through device's page, or emulate the instruction on the
    device.  False if the page is not a device's the monitors give (the caller stops)."""
    mmio = mon.platform.mmio
    frame = m.phys & PAGE
    if mmio is None or not mmio.owns(frame) or err & PF_I:
        return False                    # (code is never fetched from a device)
    if mmio.passes_through(frame):
        mon.traps["#PF (device page mapped)"] += 1
        write = bool(err & 2)
        mon.shadow.install(lin, frame, m.user, m.writable and (m.dirty or write),
                           m.pde_addr, m.pte_addr)
        return True
    apic = is_apic(frame)
    mon.traps["#PF (APIC page)" if apic else "#PF (device page)"] += 1
    ins = mon.code_at(f)
    check_emulated(mon.name, ins, frame)
    if emulate(mon, f, ins, mon.guest_eip(f), (MMIO_EMULATORS,), MmioContext) == NEXT:
        f.eip = (f.eip + ins.len) & 0xFFFFFFFF
    mon.stats["apic_accesses" if apic else "mmio_accesses"] += 1
    mon.platform.vapic.check()
    return True


def is_apic(frame: int) -> bool:
    return APIC_PAGE <= frame < APIC_PAGE + APIC_WINDOW


def check_emulated(name: str, ins: ix.Instruction, frame: int) -> None:
    """Stop the run, with one line, on an instruction no monitor emulates on a device."""
    if ins.mnemonic not in MMIO_EMULATORS:
        raise MonitorStop(f"{name}: the guest's {ins} on the device page at "
                          f"{frame:#x} is not emulated (MOV, MOVZX/MOVSX, the ALU forms, "
                          f"XCHG, MOVS/STOS/LODS, CMPXCHG8B and the x87, MMX and SSE "
                          f"instructions are)")


class MmioContext(Context):
    """An emulation context whose memory accesses reach a device where the guest's tables
    map one (its paging rules checked first: a fault is the guest's, precise).

    What it asks of the monitor is the guest's memory (``mon.gm``: its own page tables,
    whether the processor runs on shadows of them or, under EPT, on them), its platform
    and ``user`` (CPL 3), ``seg_base`` and ``watch`` -- which a monitor without a frame of
    the guest's (``hvmmmio.py``) answers from its VMCS."""

    @property
    def user(self) -> bool:
        return self.v.cpl == 3

    def watch(self, lin: int, size: int, write: bool) -> None:
        self.mon.watch(lin, size, write)

    def _is_device(self, phys: int) -> bool:
        return phys >= self.mon.guest_ram and self.mon.platform.mmio.owns(phys & PAGE)

    def _device(self, lin: int, size: int, write: bool) -> int | None:
        if (lin ^ (lin + size - 1)) & PAGE:
            return None                  # (across pages, all RAM: RAM's rules)
        m = self.mon.gm.translate(lin, write, self.user)
        return m.phys if self._is_device(m.phys) else None

    def _split(self, lin: int, size: int, write: bool) -> bool:
        """A misaligned access with a device's page under either end: cut into pieces as
        the machine's bus cuts it (``hw.memory.split_load``/``split_store``), so that
        each device answers what it answers natively -- after both pages' checks, which
        the processor makes before the access."""
        if not lin & (size - 1) or size not in SPLIT_SIZES:
            return False
        # (a fault on the second page is at its first byte, as the processor reports it)
        second = (lin + size - 1) & PAGE
        pages = (lin,) if second == lin & PAGE else (lin, second)
        return any([self._is_device(self.mon.gm.translate(a, write, self.user).phys)
                    for a in pages])

    def _read_piece(self, lin: int, size: int) -> int:
        gpa = self._device(lin & 0xFFFFFFFF, size, False)
        if gpa is None:
            return self.mon.gm.read_u(lin & 0xFFFFFFFF, size, self.user)
        return self.mon.platform.mmio.read(gpa, size)

    def _write_piece(self, lin: int, size: int, value: int) -> None:
        gpa = self._device(lin & 0xFFFFFFFF, size, True)
        if gpa is None:
            self.mon.gm.write_u(lin & 0xFFFFFFFF, size, value, self.user)
        else:
            self.mon.platform.mmio.write(gpa, size, value)

    def read_at(self, lin: int, size: int) -> int:
        if self._split(lin, size, False):
            value = split_load(lin, size, self._read_piece)
        else:
            value = self._read_piece(lin, size)
        self.watch(lin, size, False)
        return value

    def write_at(self, lin: int, size: int, value: int) -> None:
        if self._split(lin, size, True):
            split_store(lin, size, value, self._write_piece)
        else:
            self._write_piece(lin, size, value)
        self.watch(lin, size, True)

    def access(self, lin: int, size: int, write: bool, value: int = 0) -> int:
        """One access of any width the processor makes (an x87 or SIMD operand, an FXSAVE
        area...), cut as the machine's MMU cuts it (``hw.mmu.MMU.read``/``write``): 1, 2,
        4 and 8 bytes as ``read_at``/``write_at``; 16 as two quadwords; any other width
        whole to a device that decodes all of it, and across a page boundary (both pages
        checked first) one part per page, a byte at a time on a device's."""
        lin &= 0xFFFFFFFF
        if size in (1, 2, 4, 8):
            if write:
                self.write_at(lin, size, value)
                return 0
            return self.read_at(lin, size)
        first = min(size, 0x1000 - (lin & 0xFFF))
        parts = [(lin, first)]
        if first < size:
            parts.append(((lin + first) & 0xFFFFFFFF, size - first))
        gm, user, mmio = self.mon.gm, self.user, self.mon.platform.mmio
        phys = [gm.translate(a, write, user).phys for a, _ in parts]
        if size == 16:
            if write:
                self.write_at(lin, 8, value & MASK[8])
                self.write_at((lin + 8) & 0xFFFFFFFF, 8, value >> 64 & MASK[8])
                return 0
            return self.read_at(lin, 8) | self.read_at((lin + 8) & 0xFFFFFFFF, 8) << 64
        out = shift = 0
        for (a, n), p in zip(parts, phys):
            if not self._is_device(p):
                if write:
                    gm.write_u(a, n, value >> shift, user)
                else:
                    out |= gm.read_u(a, n, user) << shift
                shift += 8 * n
                continue
            for q, k in [(p, n)] if len(parts) == 1 else [(p + i, 1) for i in range(n)]:
                if write:
                    mmio.write(q, k, value >> shift & ((1 << 8 * k) - 1))
                else:
                    out |= mmio.read(q, k) << shift
                shift += 8 * k
        self.watch(lin, size, write)
        return out

    def fp_state(self):
        """The processor state the guest's x87 and SIMD instruction ran with (the real one:
        the monitor changes none of what they read)."""
        return self.cpu.state

    def read(self, size: int, extra: int = 0) -> int:
        return self.read_at(self.linear(extra, size), size)

    def write(self, size: int, value: int, extra: int = 0) -> None:
        self.write_at(self.linear(extra, size, True), size, value & MASK[size])


def _size(c: Context) -> int:
    return ix.MemorySizeExt.size(c.ins.memory_size)


@mmio_emulates(M.MOV)
def e_mov(c: MmioContext) -> str:
    ins = c.ins
    if ins.op0_kind == OK.MEMORY:
        size = _size(c)
        c.write(size, c.op(1, size))
    else:
        set_reg(c.cpu, ins.op0_register, c.read(_size(c)))
    return NEXT


@mmio_emulates(M.MOVZX, M.MOVSX)
def e_movx(c: MmioContext) -> str:
    size = _size(c)
    v = c.read(size)
    if c.ins.mnemonic == M.MOVSX and v >> (8 * size - 1):
        v -= 1 << 8 * size
    set_reg(c.cpu, c.ins.op0_register, v & 0xFFFFFFFF)
    return NEXT


ALU = (M.ADD, M.ADC, M.SUB, M.SBB, M.AND, M.OR, M.XOR)


@mmio_emulates(*ALU, M.INC, M.DEC, M.NEG, M.NOT, M.CMP, M.TEST)
def e_alu(c: MmioContext) -> str:
    """Read-modify-write of the device register (one read, one write, as the processor's
    locked or unlocked RMW reaches the bus), or a register computed from it; the flags
    are the processor's (``stores.arith``)."""
    ins, f = c.ins, c.f
    size = _size(c)
    mem_dest = ins.op0_kind == OK.MEMORY
    if mem_dest:
        a = c.read(size)
        b = c.op(1, size) & MASK[size] if ins.op_count > 1 else 0
    else:
        a, b = get_reg(c.cpu, ins.op0_register), c.read(size)
    m = {M.CMP: M.SUB, M.TEST: M.AND}.get(ins.mnemonic, ins.mnemonic)
    res, f.eflags = arith(m, a, b, size, f.eflags)
    if ins.mnemonic in (M.CMP, M.TEST):
        return NEXT
    if mem_dest:
        c.write(size, res)
    else:
        set_reg(c.cpu, ins.op0_register, res)
    return NEXT


@mmio_emulates(M.XCHG)
def e_xchg(c: MmioContext) -> str:
    ins = c.ins
    size = _size(c)
    reg = ins.op1_register if ins.op0_kind == OK.MEMORY else ins.op0_register
    old = c.read(size)
    c.write(size, get_reg(c.cpu, reg))
    set_reg(c.cpu, reg, old)
    return NEXT


STRINGS = {M.MOVSB: 1, M.MOVSW: 2, M.MOVSD: 4, M.STOSB: 1, M.STOSW: 2, M.STOSD: 4,
           M.LODSB: 1, M.LODSW: 2, M.LODSD: 4}
ACC = {1: R.AL, 2: R.AX, 4: R.EAX}


@mmio_emulates(*STRINGS)
def e_string(c: MmioContext) -> str:
    """MOVS, STOS, LODS (REP: ECX times), one element at a time: ESI, EDI and ECX step
    after each, so a fault part-way leaves them where the processor would (SDM Vol. 2
    REP: the registers are updated per iteration, the fault reported at the instruction)."""
    ins, regs = c.ins, c.cpu.state.regs
    if ins.op_kind(0) in (OK.MEMORY_SEG_SI, OK.MEMORY_ESDI) or \
            ins.op_kind(ins.op_count - 1) in (OK.MEMORY_SEG_SI, OK.MEMORY_ESDI):
        raise MonitorStop(f"{c.mon.name}: the guest's {ins} on a device page uses 16-bit "
                          f"addressing, which the monitors do not emulate there")
    m = ins.mnemonic
    size = STRINGS[m]
    step = -size if c.f.eflags & DF else size
    rep = ins.has_rep_prefix or ins.has_repne_prefix
    src = c.seg_base(ins.memory_segment) if m not in (M.STOSB, M.STOSW, M.STOSD) else 0
    dst = c.seg_base(R.ES)
    budget = STRING_IO_SLICE
    while not rep or regs[1]:
        if not budget:
            # interruptible, as REP is: the frame stays at the instruction, which faults
            # again for the rest (ECX says how much)
            return DONE
        budget -= 1
        if m in (M.STOSB, M.STOSW, M.STOSD):
            c.write_at((dst + regs[7]) & 0xFFFFFFFF, size, get_reg(c.cpu, ACC[size]))
            regs[7] = (regs[7] + step) & 0xFFFFFFFF
        else:
            v = c.read_at((src + regs[6]) & 0xFFFFFFFF, size)
            if m in (M.LODSB, M.LODSW, M.LODSD):
                set_reg(c.cpu, ACC[size], v)
            else:
                c.write_at((dst + regs[7]) & 0xFFFFFFFF, size, v)
                regs[7] = (regs[7] + step) & 0xFFFFFFFF
            regs[6] = (regs[6] + step) & 0xFFFFFFFF
        if not rep:
            break
        regs[1] = (regs[1] - 1) & 0xFFFFFFFF
    return NEXT



MMX_REGS = {getattr(R, f"MM{i}"): i for i in range(8)}
XMM_REGS = {getattr(R, f"XMM{i}"): i for i in range(8)}


SSE_MOVES = (M.MOVDQU, M.MOVDQA, M.MOVUPS, M.MOVAPS, M.MOVUPD, M.MOVAPD)


@mmio_emulates(M.MOVD, M.MOVQ, *SSE_MOVES)
def e_movq(c: MmioContext) -> str | None:
    """MOVD and MOVQ between an MMX or XMM register (or, for MOVD, a general one) and the
    device: one access of 4 or 8 bytes (a misaligned quadword is two aligned ones, as
    the machine's bus cuts it).  The processor checked CR0.EM/TS and CR4.OSFXSR before
    the access faulted; an MMX form enters MMX state (SDM Vol. 1 §9.5.1), a load into
    an XMM register clears its upper bits.  A 16-byte move (MOVDQU & co., whose
    alignment the processor checked too) is two quadword accesses, the low one first,
    as the machine's bus makes it."""
    ins, fpu = c.ins, c.cpu.state.fpu
    size = _size(c)
    mask = (1 << 8 * size) - 1
    if size == 16:
        if ins.op0_kind == OK.MEMORY:
            value = fpu.xmm[XMM_REGS[ins.op1_register]]
            c.write(8, value & MASK[8])
            c.write(8, value >> 64, 8)
        else:
            fpu.xmm[XMM_REGS[ins.op0_register]] = c.read(8) | c.read(8, 8) << 64
        return NEXT
    if ins.op0_kind == OK.MEMORY:
        r = ins.op1_register
        if r in MMX_REGS:
            value = fpu.st[MMX_REGS[r]]
            enter_mmx(fpu)
        elif r in XMM_REGS:
            value = fpu.xmm[XMM_REGS[r]]
        else:
            value = get_reg(c.cpu, r)
        c.write(size, value & mask)
        return NEXT
    value = c.read(size) & mask
    r = ins.op0_register
    if r in MMX_REGS:
        enter_mmx(fpu)
        fpu.st[MMX_REGS[r]] = value | MMX_EXPONENT
    elif r in XMM_REGS:
        fpu.xmm[XMM_REGS[r]] = value
    else:
        set_reg(c.cpu, r, value)
    return NEXT


@mmio_emulates(M.CMPXCHG8B)
def e_cmpxchg8b(c: MmioContext) -> str:
    """One quadword read, and one quadword write of the new value or (when they differ)
    the old one back, as the processor (SDM Vol. 2 CMPXCHG8B) and QEMU make them."""
    regs, f = c.cpu.state.regs, c.f
    old = c.read(8)
    if old == (regs[0] | regs[2] << 32):
        c.write(8, regs[3] | regs[1] << 32)
        f.eflags |= ZF
    else:
        c.write(8, old)
        regs[0], regs[2] = old & 0xFFFFFFFF, old >> 32
        f.eflags &= ~ZF
    return NEXT


# -- x87, MMX and SSE instructions with a device operand -----------------------------------
SEG_REGS = {i: r for r, i in SREG.items()}
ARITH_FLAGS = 0x8D5                     # CF PF AF ZF SF OF


class _DeviceMmu:
    """The MMU the hardware's x87 and SIMD functions access memory through, for one
    emulated instruction: the guest's paging, its devices where its tables map them."""

    def __init__(self, c: MmioContext) -> None:
        self.c = c

    def walk(self, lin: int, write: bool, user: bool, *_args, **_kw) -> int:
        return self.c.mon.gm.translate(lin & 0xFFFFFFFF, write, user).phys

    def read(self, lin: int, size: int, user: bool) -> int:
        return self.c.access(lin, size, False)

    def write(self, lin: int, size: int, value: int, user: bool) -> None:
        self.c.access(lin, size, True, value)


class DeviceCpu:
    """The processor as ``hw.x87`` and ``hw.sse`` see it, for one instruction the monitor
    performs on a device page: the guest's registers, FPU, control registers and
    segments, and memory through ``MmioContext.access``.  The instruction is the
    hardware's own function, so it computes, faults (#MF, #XM, #GP on alignment...) and
    orders its accesses exactly as natively; the processor already made the checks it
    makes before any access (CR0.EM/TS, CR4.OSFXSR, the segment's limit)."""

    def __init__(self, c: MmioContext) -> None:
        self._c = c
        self.state = c.fp_state()
        self.mmu = _DeviceMmu(c)
        self.segmentation = self
        self.cpl = 3 if c.user else 0
        self.fpu_origin = c.cpu.fpu_origin

    def linear(self, seg: int, off: int, size: int, write: bool) -> int:
        r = SEG_REGS[seg]
        if r == R.CS:
            return self._c.code_segment(off & 0xFFFFFFFF, size, write)
        return (self._c.seg_base(r) + off) & 0xFFFFFFFF

    def __getattr__(self, name: str):
        return getattr(self._c.cpu, name)       # (FERR#: the machine's line, as natively)


def _raw(ins: ix.Instruction) -> bytes:
    """The instruction's bytes, for the opcode FSTENV and FXSAVE report (its escape byte
    and ModR/M: the encoder keeps the displacement's size)."""
    e = ix.Encoder(32)
    try:
        e.encode(ins, ins.ip)
    except ValueError:
        return b""
    return bytes(e.take_buffer())


@mmio_emulates(*(m for m in x87.X87 if m != M.WAIT))
def e_x87(c: MmioContext) -> str:
    """An x87 instruction with its memory operand on a device page (FILD, FISTP, FLD,
    FADD m32...): the hardware's function on ``DeviceCpu``."""
    ins = c.ins
    seg = SREG[ins.memory_segment]
    fn = x87.bind(DeviceCpu(c), ins, _raw(ins), seg)
    fn(ea(c.cpu, ins))
    return NEXT


def e_simd(c: MmioContext) -> str:
    """An MMX, SSE or SSE2 instruction with its memory operand on a device page (ADDSS,
    PADDD, CVTSI2SD, COMISS...): the hardware's function on ``DeviceCpu``, with the
    general register it reads or writes and the flags it sets."""
    ins = c.ins
    fn, gpr_in, gpr_out, eflags_out = sse.bind(DeviceCpu(c), ins, SREG[ins.memory_segment])
    if ins.op0_kind in (OK.MEMORY_SEG_EDI, OK.MEMORY_SEG_DI):      # MASKMOVQ/MASKMOVDQU
        args = [c.cpu.state.regs[7] & (0xFFFF if ins.op0_kind == OK.MEMORY_SEG_DI else 0xFFFFFFFF)]
    else:
        args = [ea(c.cpu, ins)]
    if gpr_in is not None:
        args.append(get_reg(c.cpu, gpr_in))
    if eflags_out:
        fl = fn(*args, c.f.eflags & ARITH_FLAGS)
        c.f.eflags = (c.f.eflags & ~ARITH_FLAGS) | (fl & ARITH_FLAGS)
        return NEXT
    r = fn(*args)
    if gpr_out is not None:
        set_reg(c.cpu, gpr_out, r)
    return NEXT


def _shared(string_emulator):
    """MOVSD and CMPSD name both a string instruction and an SSE2 one: by operands."""
    def emulate_(c: MmioContext) -> str:
        if any(c.ins.op_kind(k) == OK.REGISTER for k in range(c.ins.op_count)):
            return e_simd(c)
        if string_emulator is None:
            raise MonitorStop(f"{c.mon.name}: the guest's {c.ins} on a device page is not "
                              f"emulated")
        return string_emulator(c)
    return emulate_


for _m in sse.SIMD:
    if _m in (M.MOVD, M.MOVQ, *SSE_MOVES):
        continue                        # (e_movq: the moves kernels use on device registers)
    if _m in (M.MOVSD, M.CMPSD):
        MMIO_EMULATORS[_m] = _shared(MMIO_EMULATORS.get(_m))
    else:
        MMIO_EMULATORS[_m] = e_simd
