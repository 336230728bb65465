"""Differential testing of ringvisor's CPU against unicorn (QEMU's TCG engine).

A *case* is a short piece of IA-32 code (the instructions under test) plus the
registers, EFLAGS and memory it starts from.  :func:`check` runs it on

* unicorn, once as ``body; hlt`` and once as ``body; followers; hlt``;
* ringvisor's ``interp`` engine (one instruction per block), ``body; hlt``;
* ringvisor's ``jit`` engine, ``body; hlt`` (the flags leave the block through
  ``flags_store_code``) and ``body; followers; hlt``.

The *followers* read the flags the body left, inside the same translated block
(``setcc`` for all 16 conditions, ``lahf``, ``pushfd``, optionally an ``adc``/``sbb``
on memory, and a final ``jcc``), so the translator's in-block lazy-flag paths
(``BlockBuilder.cond``, group flags, ``flags_bits``) are compared too.  They write
only to the scratch area, and restore EAX/ESP, so the registers they leave are the
body's.

Only architecturally *defined* results are compared: while unicorn executes the
body, a code hook looks at every instruction with its operands' values and works
out (:func:`effect`, with the SDM's rules) which flags and destinations it leaves
undefined.  A run in which an instruction *reads* something undefined (a ``jo``
after ``shrd ax, ax, 31``) proves nothing and is discarded (``assume``).

Exceptions go through a real IDT on ringvisor (every vector's handler is a ``hlt``)
and stop unicorn from its interrupt hook; the state compared is the one at the
faulting instruction, EFLAGS included (from the exception frame).

Unicorn's lazy flags have quirks of their own (see :class:`Unicorn`): its EFLAGS
are read architecturally (an epilogue with ``pushfd``) and taken from the engine
whose flags are right in each situation.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import iced_x86 as ix
from hypothesis import assume
from unicorn import UC_ARCH_X86, UC_HOOK_CODE, UC_HOOK_INTR, UC_MODE_32, Uc, UcError
from unicorn import x86_const as U

from ringvisor.hw.cpu import Cpu
from ringvisor.hw.faults import TripleFault
from ringvisor.hw.memory import PhysicalMemory
from ringvisor.hw.state import (ATTR_DB, ATTR_G, ATTR_P, ATTR_S, CR0_PE, CR4_OSFXSR,
                                 CR4_OSXMMEXCPT, FpuState, Segment)

# --- EFLAGS ------------------------------------------------------------------------------
CF, PF, AF, ZF, SF, TF, IF, DF, OF = 0x1, 0x4, 0x10, 0x40, 0x80, 0x100, 0x200, 0x400, 0x800
IOPL, NT, AC, ID = 0x3000, 0x4000, 0x40000, 0x200000
ARITH = CF | PF | AF | ZF | SF | OF
CC_NAMES = ("o", "no", "b", "ae", "e", "ne", "be", "a", "s", "ns", "p", "np", "l", "ge", "le", "g")
# the flags each condition (cc >> 1) reads
CC_DEPS = (OF, CF, ZF, CF | ZF, SF, PF, SF | OF, ZF | SF | OF)


# --- memory layout (identical on both emulators) -----------------------------------------
RAM = 4 << 20
LOW = 0x000000        # 64 KiB of data reachable with 16-bit addresses
DATA = 0x200000       # 64 KiB data window: memory operands, string buffers, bit strings
STACK = 0x2F0000      # 64 KiB stack window
STACK_TOP = 0x2F8000
SCRATCH = 0x300000    # follower slots (zeroed for every run)
CODE = 0x100000
GDT = 0x380000
IDT = 0x381000
HANDLERS = 0x382000   # vector v's handler is a hlt at HANDLERS + v
REGIONS = {"low": (LOW, 0x10000), "data": (DATA, 0x10000), "stack": (STACK, 0x10000),
           "scratch": (SCRATCH, 0x1000)}
MAX_STEPS = 20000

REG_NAMES = ("eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi")
UC_REGS = (U.UC_X86_REG_EAX, U.UC_X86_REG_ECX, U.UC_X86_REG_EDX, U.UC_X86_REG_EBX,
           U.UC_X86_REG_ESP, U.UC_X86_REG_EBP, U.UC_X86_REG_ESI, U.UC_X86_REG_EDI)


class NullBus:
    def read(self, port, size):
        return (1 << (8 * size)) - 1

    def write(self, port, size, value):
        pass


# --- the case ---------------------------------------------------------------------------
@dataclass
class Case:
    """Code under test (assembler items, see :func:`assemble`) and its starting state."""

    body: list
    regs: list[int]
    eflags: int = 0x2
    seed: int = 0                     # fills the low/data/stack windows
    patches: list = field(default_factory=list)   # (address, bytes) written after the fill
    follow: str = "flags"             # "flags", "adc", "sbb" or "none"
    jcc: int = 4                      # condition of the followers' final jcc
    extra_flags: int = 0              # non-arithmetic EFLAGS bits to compare too (always DF)
    cr0: int = CR0_PE | 0x10          # ringvisor only (unicorn keeps its own)
    cr4: int = CR4_OSFXSR | CR4_OSXMMEXCPT

    def __repr__(self) -> str:
        code, _ = assemble(self.body, CODE)
        regs = " ".join(f"{n}={v:#x}" for n, v in zip(REG_NAMES, self.regs))
        return (f"Case(\n  {disasm(code)}  [{code.hex()}]\n  {regs} eflags={self.eflags:#x}\n"
                f"  seed={self.seed} patches={[(hex(a), b.hex()) for a, b in self.patches]}"
                f" follow={self.follow} jcc=j{CC_NAMES[self.jcc]})")


# --- a tiny two-pass assembler -----------------------------------------------------------
_ENC = ix.Encoder(32)


def encode(ins: ix.Instruction, ip: int = CODE) -> bytes:
    _ENC.encode(ins, ip)
    return bytes(_ENC.take_buffer())


def assemble(items: list, base: int) -> tuple[bytes, dict]:
    """Items: bytes, iced Instructions (position independent), ("label", name),
    ("jcc", cc, name), ("jmp", name) and ("call", name) (rel32), ("rel8", opcode bytes, name)."""
    def size(it) -> int:
        if isinstance(it, (bytes, bytearray)):
            return len(it)
        if isinstance(it, ix.Instruction):
            return len(encode(it))
        if it[0] == "label":
            return 0
        if it[0] == "jcc":
            return 6
        if it[0] in ("jmp", "call"):
            return 5
        if it[0] == "rel8":
            return len(it[1]) + 1
        raise ValueError(it)

    labels, pc = {}, base
    for it in items:
        if isinstance(it, tuple) and it[0] == "label":
            labels[it[1]] = pc
        pc += size(it)
    out, pc = bytearray(), base
    for it in items:
        n = size(it)
        if isinstance(it, (bytes, bytearray)):
            out += it
        elif isinstance(it, ix.Instruction):
            out += encode(it, pc)
        elif it[0] == "jcc":
            out += bytes((0x0F, 0x80 | it[1])) + ((labels[it[2]] - pc - n) & 0xFFFFFFFF).to_bytes(4, "little")
        elif it[0] in ("jmp", "call"):
            out += (b"\xE9" if it[0] == "jmp" else b"\xE8") + \
                ((labels[it[1]] - pc - n) & 0xFFFFFFFF).to_bytes(4, "little")
        elif it[0] == "rel8":
            rel = labels[it[2]] - pc - n
            assert -128 <= rel < 128, rel
            out += bytes(it[1]) + (rel & 0xFF).to_bytes(1, "little")
        pc += n
    return bytes(out), labels


_FMT = ix.Formatter(ix.FormatterSyntax.NASM)


def disasm(code: bytes, ip: int = CODE) -> str:
    return "; ".join(_FMT.format(i) for i in ix.Decoder(32, code, ip=ip))


def s32(a: int) -> bytes:
    return (a & 0xFFFFFFFF).to_bytes(4, "little")


# Followers: read the flags left by the body, inside the same translated block.
FOLLOW_SETCC = 0x00      # 16 bytes: setcc for each condition
FOLLOW_EAX = 0x20
FOLLOW_LAHF = 0x24       # the EAX image after lahf (AH)
FOLLOW_ESP = 0x28
FOLLOW_PUSHF = 0x2C      # pushfd image
FOLLOW_JCC = 0x30        # 1: not taken, 2: taken
FOLLOW_ADC = 0x34        # adc/sbb dword [slot], imm
FOLLOW_STACK = 0x800
ADC_IMM = 0x7FFFFFFF


def followers(kind: str, cc: int) -> list:
    S = SCRATCH
    items: list = []
    if kind in ("adc", "sbb"):
        # 81 /2 (adc) or /3 (sbb) dword [disp32], imm32: reads CF of the body in-block
        items.append(bytes((0x81, 0x15 if kind == "adc" else 0x1D)) + s32(S + FOLLOW_ADC) + s32(ADC_IMM))
    for c in range(16):
        items.append(bytes((0x0F, 0x90 | c, 0x05)) + s32(S + FOLLOW_SETCC + c))
    items += [b"\xA3" + s32(S + FOLLOW_EAX), b"\x9F", b"\xA3" + s32(S + FOLLOW_LAHF),
              b"\xA1" + s32(S + FOLLOW_EAX),
              b"\x89\x25" + s32(S + FOLLOW_ESP), b"\xBC" + s32(S + FOLLOW_STACK), b"\x9C",
              b"\x8F\x05" + s32(S + FOLLOW_PUSHF), b"\x8B\x25" + s32(S + FOLLOW_ESP),
              ("jcc", cc, "_f_taken"),
              b"\xC6\x05" + s32(S + FOLLOW_JCC) + b"\x01", ("jmp", "_f_end"),
              ("label", "_f_taken"), b"\xC6\x05" + s32(S + FOLLOW_JCC) + b"\x02",
              ("label", "_f_end")]
    return items


# --- results -----------------------------------------------------------------------------
@dataclass
class Final:
    regs: list[int]
    eip: int                 # where execution stopped (the final hlt), or the faulting EIP
    eflags: int
    fault: int | None        # exception vector, or None
    mem: dict                # region name -> bytes
    note: str = ""


_IMAGES: dict[int, dict] = {}


def _image(seed: int) -> dict:
    """Pseudo-random contents for the compared windows (the scratch area starts zeroed)."""
    img = _IMAGES.get(seed)
    if img is None:
        r = random.Random(seed)
        img = {name: bytes(r.randbytes(n)) for name, (a, n) in REGIONS.items() if name != "scratch"}
        img["scratch"] = bytes(REGIONS["scratch"][1])
        _IMAGES[seed] = img
    return {k: bytearray(v) for k, v in img.items()}


def _apply_patches(img: dict, patches) -> None:
    for addr, data in patches:
        for name, (a, n) in REGIONS.items():
            if a <= addr and addr + len(data) <= a + n:
                img[name][addr - a:addr - a + len(data)] = data
                break
        else:
            raise ValueError(f"patch at {addr:#x} outside the compared regions")


def initial_image(case: Case) -> dict:
    img = _image(case.seed)
    _apply_patches(img, case.patches)
    return img


# --- ringvisor ---------------------------------------------------------------------------
def _descriptor(base: int, limit: int, typ: int, s: int = 1, dpl: int = 0, db: int = 1, g: int = 1) -> int:
    return (limit & 0xFFFF) | (base & 0xFFFFFF) << 16 | typ << 40 | s << 44 | dpl << 45 | 1 << 47 | \
        ((limit >> 16) & 0xF) << 48 | db << 54 | g << 55 | (base >> 24) << 56


class Ringvisor:
    """One CPU per engine, reused for every case (code-page writes drop stale blocks)."""

    def __init__(self, engine: str) -> None:
        self.engine = engine
        self.mem = PhysicalMemory(RAM)
        self.cpu = Cpu(self.mem, NullBus(), engine=engine)
        gdt = [0, _descriptor(0, 0xFFFFF, 0xB), _descriptor(0, 0xFFFFF, 0x3)]
        idt = b""
        for v in range(32):
            off = HANDLERS + v
            idt += ((off & 0xFFFF) | 0x08 << 16 | 0x8E << 40 | (off >> 16) << 48).to_bytes(8, "little")
        # GDT, IDT and one hlt per vector; rewritten for every run (a stray exception
        # frame pushed at a random ESP may land anywhere)
        self.tables = [(GDT, b"".join(d.to_bytes(8, "little") for d in gdt)), (IDT, idt),
                       (HANDLERS, b"\xF4" * 32)]

    def run(self, code: bytes, case: Case, img: dict) -> Final:
        cpu, st, mem = self.cpu, self.cpu.state, self.mem
        for name, (a, n) in REGIONS.items():
            mem.ram[a:a + n] = img[name]
        for a, data in self.tables:
            mem.write(a, data)
        mem.write(CODE, code.ljust(0x1000 - (CODE & 0xFFF) if len(code) < 0x1000 else len(code), b"\xCC"))
        code_seg = Segment(0x08, 0, 0xFFFFFFFF, ATTR_P | ATTR_S | 0xB | ATTR_DB | ATTR_G)
        data_seg = Segment(0x10, 0, 0xFFFFFFFF, ATTR_P | ATTR_S | 0x3 | ATTR_DB | ATTR_G)
        st.segs[:] = [data_seg.copy(), code_seg, data_seg.copy(), data_seg.copy(), data_seg.copy(),
                      data_seg.copy()]
        st.cr0 = case.cr0
        st.cr4 = case.cr4                  # SSE enabled by default, as unicorn starts
        st.fpu.load(FpuState())
        st.gdtr.base, st.gdtr.limit = GDT, 3 * 8 - 1
        st.idtr.base, st.idtr.limit = IDT, 32 * 8 - 1
        st.regs[:] = list(case.regs)
        st.eflags = 0x2
        cpu.set_eflags(case.eflags)
        st.halted = False
        cpu.state.interrupt_shadow = False
        cpu.state.intr = False
        cpu.mode_changed()
        cpu.tlb_flush()
        st.eip = CODE
        note = ""
        try:
            cpu.run(st.icount + MAX_STEPS)
        except TripleFault as e:
            return Final(list(st.regs), st.eip, cpu.get_eflags(), -1, {}, f"triple fault: {e}")
        if not st.halted:
            note = "did not halt"
        regs = list(st.regs)
        eip = (st.eip - 1) & 0xFFFFFFFF
        eflags = cpu.get_eflags()
        fault = None
        mems = {name: bytes(mem.ram[a:a + n]) for name, (a, n) in REGIONS.items()}
        if HANDLERS <= eip < HANDLERS + 32:
            fault = eip - HANDLERS
            esp = regs[4]
            frame = mem.read(esp, 12)
            eip = int.from_bytes(frame[0:4], "little")
            eflags = int.from_bytes(frame[8:12], "little")
            regs[4] = (esp + 12) & 0xFFFFFFFF
            # forget the exception frame: unicorn does not push one
            for name, (a, n) in REGIONS.items():
                lo, hi = max(a, esp), min(a + n, esp + 12)
                if lo < hi:
                    m = bytearray(mems[name])
                    m[lo - a:hi - a] = img[name][lo - a:hi - a]
                    mems[name] = bytes(m)
        return Final(regs, eip, eflags, fault, mems, note)


# --- unicorn -----------------------------------------------------------------------------
class Pre:
    """Values visible to :func:`effect` before an instruction executes."""

    def __init__(self, uc: Uc) -> None:
        self.uc = uc

    def reg(self, i: int) -> int:
        return self.uc.reg_read(UC_REGS[i])

    def mem(self, addr: int, size: int) -> int:
        return int.from_bytes(self.uc.mem_read(addr & 0xFFFFFFFF, size), "little")


@dataclass
class Undefined:
    """What the executed instructions left architecturally undefined."""

    flags: int = 0                 # EFLAGS bits currently undefined
    regs: dict = field(default_factory=dict)     # register index -> undefined bit mask
    mem: set = field(default_factory=set)        # undefined byte addresses
    tainted: str = ""              # an instruction read something undefined (the run is moot)


# The reference program ends with an epilogue that stores EFLAGS architecturally (pushfd
# on a scratch stack, ESP restored) rather than trusting reg_read after the stop.
EPI_AREA = 0xF00          # scratch bytes from here on belong to the epilogue
EPI_ESP, EPI_FLAGS, EPI_STACK = 0xF00, 0xF04, 0xFF0
EPILOGUE = (b"\x89\x25" + (SCRATCH + EPI_ESP).to_bytes(4, "little") +       # mov [esp save], esp
            b"\xBC" + (SCRATCH + EPI_STACK).to_bytes(4, "little") +          # mov esp, scratch stack
            b"\x9C" +                                                        # pushfd
            b"\x8F\x05" + (SCRATCH + EPI_FLAGS).to_bytes(4, "little") +     # pop dword [flags]
            b"\x8B\x25" + (SCRATCH + EPI_ESP).to_bytes(4, "little"))        # mov esp, [esp save]


class Unicorn:
    """One unicorn engine.  ``trace``: a code hook works out what the body leaves undefined.

    Unicorn's lazy flags (QEMU's ``cc_op``) go wrong in two ways, depending on whether a
    code hook is installed (``emu_start(count=...)`` installs one too):

    QUIRK 1, without a code hook: a LOOPcc whose count reaches zero leaves ``cc_op``
    stale for the rest of the block, and the flags are garbage architecturally
    (``lea edi,[edi+1]; cmp edi,1; loope top`` with ECX=1: pushfd sees 0x3, not 0x46);
    SDM LOOPcc: "Flags Affected: None".  With a hook, QEMU syncs ``cc_op`` per
    instruction and gets it right.

    QUIRK 2, with a code hook on a faulting instruction: the EFLAGS reported at the
    exception are wrong (``add [m],al; div byte [m]`` with zeros: 0x57 instead of 0x46;
    right without the hook).

    So :func:`reference` takes the traced (hooked) run, except at an exception, where it
    takes the state from an engine without any code hook.
    """

    def __init__(self, trace: bool) -> None:
        self.uc = uc = Uc(UC_ARCH_X86, UC_MODE_32)
        uc.mem_map(0, RAM)
        self.fault = None
        self.insns: dict[int, ix.Instruction] = {}
        self.undef = Undefined()
        self.pending = None
        self.body_end = CODE
        self.trace = trace
        uc.hook_add(UC_HOOK_INTR, self._intr)
        if trace:
            uc.hook_add(UC_HOOK_CODE, self._code)

    def _intr(self, uc, intno, _ud) -> None:
        self.fault = intno
        uc.emu_stop()

    def _code(self, uc, addr, size, _ud) -> None:
        # the previous instruction has completed: its effect counts only now (an
        # instruction that faults changes nothing, flags included)
        self._settle()
        if not CODE <= addr < self.body_end:
            return
        ins = self.insns.get(addr)
        if ins is None:
            return
        pre = Pre(uc)
        u = self.undef
        if not u.tainted:
            u.tainted = reads_undefined(ins, u)
        self.pending = effect(ins, pre)

    def _settle(self) -> None:
        if self.pending is None:
            return
        affected, defined, dests = self.pending
        self.pending = None
        u = self.undef
        u.flags = (u.flags & ~affected) | (affected & ~defined)
        for kind, where, mask in dests:
            if kind == "reg":
                u.regs[where] = u.regs.get(where, 0) | mask
            else:
                u.mem.update(range(where, where + mask))

    def run(self, code: bytes, body_len: int, case: Case, img: dict) -> tuple[Final, Undefined]:
        """Run ``code`` (which ends with its hlt), with EPILOGUE inserted before the hlt."""
        uc = self.uc
        stop = CODE + len(code) - 1           # the hlt both emulators stop at
        code = code[:-1] + EPILOGUE + code[-1:]
        for name, (a, n) in REGIONS.items():
            uc.mem_write(a, bytes(img[name]))
        uc.mem_write(CODE, code.ljust(0x1000 - (CODE & 0xFFF) if len(code) < 0x1000 else len(code), b"\xCC"))
        uc.ctl_remove_cache(CODE, CODE + max(0x1000, len(code)))
        for i, v in enumerate(case.regs):
            uc.reg_write(UC_REGS[i], v)
        uc.reg_write(U.UC_X86_REG_EFLAGS, case.eflags | 2)
        self.fault = None
        self.undef = Undefined()
        self.pending = None
        self.body_end = CODE + body_len
        self.insns = {i.ip32: i for i in ix.Decoder(32, code[:body_len], ip=CODE)}
        end = CODE + len(code) - 1            # the final hlt
        note = ""
        try:
            if self.trace:
                uc.emu_start(CODE, end, count=MAX_STEPS)
            else:   # ``count`` is implemented with a code hook: see QUIRK 2
                uc.emu_start(CODE, end, timeout=2_000_000)
        except UcError as e:
            note = f"unicorn: {e}"
            if e.errno == 10:     # UC_ERR_INSN_INVALID
                self.fault = 6
        if self.fault is None:
            self._settle()
        regs = [uc.reg_read(r) for r in UC_REGS]
        eip = uc.reg_read(U.UC_X86_REG_EIP)
        if self.fault is None and eip != end and not note:
            note = f"unicorn stopped at {eip:#x}"
        mems = {name: bytes(uc.mem_read(a, n)) for name, (a, n) in REGIONS.items()}
        eflags = uc.reg_read(U.UC_X86_REG_EFLAGS)
        if self.fault is None and eip == end:
            eflags = int.from_bytes(uc.mem_read(SCRATCH + EPI_FLAGS, 4), "little")
            eip = stop
            mems["scratch"] = mems["scratch"][:EPI_AREA] + bytes(len(mems["scratch"]) - EPI_AREA)
        return Final(regs, eip, eflags, self.fault, mems, note), self.undef


# --- what is defined ---------------------------------------------------------------------
def reg_size(r: int) -> int:
    return ix.RegisterInfo(r).size


def op_size(ins: ix.Instruction, i: int = 0) -> int:
    k = ins.op_kind(i)
    if k == ix.OpKind.REGISTER:
        return reg_size(ins.op_register(i))
    return ix.MemorySizeExt.size(ins.memory_size)


_GPR_INDEX = {}
for _i, _n in enumerate(("EAX", "ECX", "EDX", "EBX", "ESP", "EBP", "ESI", "EDI")):
    _GPR_INDEX[getattr(ix.Register, _n)] = (_i, 0xFFFFFFFF, 0)
for _i, _n in enumerate(("AX", "CX", "DX", "BX", "SP", "BP", "SI", "DI")):
    _GPR_INDEX[getattr(ix.Register, _n)] = (_i, 0xFFFF, 0)
for _i, _n in enumerate(("AL", "CL", "DL", "BL")):
    _GPR_INDEX[getattr(ix.Register, _n)] = (_i, 0xFF, 0)
for _i, _n in enumerate(("AH", "CH", "DH", "BH")):
    _GPR_INDEX[getattr(ix.Register, _n)] = (_i, 0xFF, 8)


def read_reg(pre, r: int) -> int:
    i, m, sh = _GPR_INDEX[r]
    return (pre.reg(i) >> sh) & m


def effective_address(ins: ix.Instruction, regval) -> int:
    """Offset of ins's memory operand (flat segments); regval(index) gives 32-bit registers."""
    a16 = ins.memory_displ_size == 2
    v = ins.memory_displacement
    for r, sc in ((ins.memory_base, 1), (ins.memory_index, ins.memory_index_scale)):
        if r != ix.Register.NONE:
            i, m, _ = _GPR_INDEX[r]
            a16 = a16 or m == 0xFFFF
            v += (regval(i) & m) * sc
    return v & (0xFFFF if a16 else 0xFFFFFFFF)


def read_operand(ins: ix.Instruction, i: int, pre) -> int:
    k = ins.op_kind(i)
    if k == ix.OpKind.REGISTER:
        return read_reg(pre, ins.op_register(i))
    if k == ix.OpKind.MEMORY:
        return pre.mem(effective_address(ins, pre.reg), op_size(ins, i))
    return ins.immediate(i)


def _dest(ins: ix.Instruction, pre, size: int) -> list:
    if ins.op0_kind == ix.OpKind.REGISTER:
        i, m, sh = _GPR_INDEX[ins.op0_register]
        return [("reg", i, m << sh)]
    return [("mem", effective_address(ins, pre.reg), size)]


M = ix.Mnemonic
_ALL = (M.ADD, M.ADC, M.SUB, M.SBB, M.CMP, M.NEG, M.XADD, M.CMPXCHG, M.CMPSB, M.CMPSW, M.CMPSD,
        M.SCASB, M.SCASW, M.SCASD)
_LOGIC = (M.AND, M.OR, M.XOR, M.TEST)
_NONE = (M.NOT, M.MOV, M.CALL, M.RET, M.UD2, M.MOVZX, M.MOVSX, M.LEA, M.XCHG, M.BSWAP,
         M.CBW, M.CWDE, M.CWD, M.CDQ, M.XLATB, M.LAHF, M.SALC, M.PUSH, M.POP, M.PUSHAD, M.POPAD,
         M.PUSHA, M.POPA, M.PUSHFD, M.PUSHF,
         M.ENTER, M.LEAVE, M.JMP, M.LOOP, M.JECXZ, M.JCXZ, M.NOP, M.CLD, M.STD,
         M.MOVSB, M.MOVSW, M.MOVSD, M.STOSB, M.STOSW, M.STOSD, M.LODSB, M.LODSW, M.LODSD)
_STRINGS = (M.CMPSB, M.CMPSW, M.CMPSD, M.SCASB, M.SCASW, M.SCASD, M.MOVSB, M.MOVSW, M.MOVSD,
            M.STOSB, M.STOSW, M.STOSD, M.LODSB, M.LODSW, M.LODSD)
_SETCC = tuple(getattr(M, "SET" + n.upper()) for n in CC_NAMES)
_CMOVCC = tuple(getattr(M, "CMOV" + n.upper()) for n in CC_NAMES)
_JCC = tuple(getattr(M, "J" + n.upper()) for n in CC_NAMES)
_LOOPCC = (M.LOOPE, M.LOOPNE)
_LOOP_CX = frozenset(getattr(ix.Code, f"{m}_REL8_{o}_CX") for m in ("LOOP", "LOOPE", "LOOPNE")
                     for o in (16, 32))


def effect(ins: ix.Instruction, pre) -> tuple[int, int, list]:
    """(flags affected, flags defined afterwards, undefined destinations) of one instruction.

    FLAG_RULES — the "Flags Affected" sections of SDM Vol. 2:
      ADD ADC SUB SBB CMP NEG XADD CMPXCHG CMPS SCAS: OF SF ZF AF CF PF set by the result.
      AND OR XOR TEST: OF=CF=0; SF ZF PF by the result; AF undefined.
      INC DEC: CF not affected; the others by the result.
      NOT, moves, LEA, XCHG, BSWAP, CBW.., XLAT, LAHF, stack ops, jumps, LOOP, JECXZ,
        SETcc, CMOVcc, MOVS STOS LODS: no flags.
      SHL SAL SHR SAR: count (masked to 5 bits) 0: no flags affected; else CF = last bit
        shifted out (undefined for SHL/SHR when count >= operand width), OF only for a
        count of 1 (undefined otherwise), SF ZF PF by the result, AF undefined.
      ROL ROR RCL RCR: masked count 0: no flags; else CF = bit rotated in/out; OF only for
        a masked count of 1 (undefined otherwise); SF ZF AF PF not affected.
      SHLD SHRD: count 0: nothing; count > operand size: result and flags undefined; else
        CF SF ZF PF by the result, OF only for count 1, AF undefined.
      MUL IMUL: CF and OF; SF ZF AF PF undefined.     DIV IDIV: all six undefined.
      BT BTS BTR BTC: CF = the bit; ZF not affected; OF SF AF PF undefined.
      BSF BSR: ZF; the others undefined (the destination too when the source is 0).
      DAA DAS: CF AF SF ZF PF; OF undefined.   AAA AAS: AF CF; OF SF ZF PF undefined.
      AAM AAD: SF ZF PF; OF AF CF undefined.
      SAHF: SF ZF AF PF CF from AH (OF not affected).   CLC STC CMC: CF only.
      CMPXCHG8B: ZF only.   POPF: everything it may load.
      BSWAP r16: the result is undefined.
    """
    m = ins.mnemonic
    if m in _STRINGS and (ins.has_rep_prefix or ins.has_repne_prefix):
        a16 = any(ins.op_kind(i) in (ix.OpKind.MEMORY_SEG_SI, ix.OpKind.MEMORY_ESDI,
                                     ix.OpKind.MEMORY_SEG_DI) for i in range(ins.op_count))
        if pre.reg(1) & (0xFFFF if a16 else 0xFFFFFFFF) == 0:
            return 0, 0, []          # no iteration: nothing happens at all
    if m in _LOOPCC:
        cx = ins.code in _LOOP_CX
        if pre.reg(1) & (0xFFFF if cx else 0xFFFFFFFF) == 1:
            # QUIRK: when LOOPE/LOOPNE's count reaches zero, unicorn corrupts the flags
            # the instructions before it produced (``cmp edi,3; loope`` with ECX=1 leaves
            # AF clear with a code hook, garbage without one); SDM LOOPcc: "Flags
            # Affected: None".  Those flags are not compared.
            return ARITH, 0, []
    if m in _ALL:
        return ARITH, ARITH, []
    if m in _LOGIC:
        return ARITH, ARITH & ~AF, []
    if m in (M.INC, M.DEC):
        return ARITH & ~CF, ARITH & ~CF, []
    if m in _NONE or m in _SETCC or m in _CMOVCC or m in _JCC or m in _LOOPCC:
        if m == M.BSWAP and reg_size(ins.op0_register) == 2:
            return 0, 0, _dest(ins, pre, 2)
        return 0, 0, []
    if m in (M.SHL, M.SAL, M.SHR, M.SAR, M.ROL, M.ROR, M.RCL, M.RCR):
        size = op_size(ins)
        cnt = read_operand(ins, 1, pre) & 0x1F
        if cnt == 0:
            return 0, 0, []
        if m in (M.ROL, M.ROR, M.RCL, M.RCR):
            return CF | OF, CF | (OF if cnt == 1 else 0), []
        d = CF | SF | ZF | PF | (OF if cnt == 1 else 0)
        if m in (M.SHL, M.SAL, M.SHR) and cnt >= size * 8:
            d &= ~CF
        return ARITH, d, []
    if m in (M.SHLD, M.SHRD):
        size = op_size(ins)
        cnt = read_operand(ins, 2, pre) & 0x1F
        if cnt == 0:
            return 0, 0, []
        if cnt > size * 8:
            return ARITH, 0, _dest(ins, pre, size)
        return ARITH, CF | SF | ZF | PF | (OF if cnt == 1 else 0), []
    if m in (M.MUL, M.IMUL):
        return ARITH, CF | OF, []
    if m in (M.DIV, M.IDIV):
        return ARITH, 0, []
    if m in (M.BT, M.BTS, M.BTR, M.BTC):
        return ARITH & ~ZF, CF, []
    if m in (M.BSF, M.BSR):
        if read_operand(ins, 1, pre) == 0:
            return ARITH, ZF, _dest(ins, pre, op_size(ins))
        return ARITH, ZF, []
    if m in (M.DAA, M.DAS):
        return ARITH, ARITH & ~OF, []
    if m in (M.AAA, M.AAS):
        return ARITH, AF | CF, []
    if m in (M.AAM, M.AAD):
        return ARITH, SF | ZF | PF, []
    if m == M.SAHF:
        return ARITH & ~OF, ARITH & ~OF, []
    if m in (M.CLC, M.STC, M.CMC):
        return CF, CF, []
    if m == M.CMPXCHG8B:
        return ZF, ZF, []
    if m in (M.POPFD, M.POPF):
        return ARITH, ARITH, []
    if m in _FP_EFLAGS:
        return ARITH, ARITH, []
    if is_fp(ins):
        return 0, 0, []
    raise NotImplementedError(f"no flag rule for {ins}")


# FP_RULES: FCOMI FCOMIP FUCOMI FUCOMIP COMISS UCOMISS COMISD UCOMISD set ZF PF CF and
# clear OF SF AF; every other x87, MMX and SSE instruction leaves EFLAGS alone.
_FP_EFLAGS = (M.FCOMI, M.FCOMIP, M.FUCOMI, M.FUCOMIP, M.COMISS, M.UCOMISS, M.COMISD, M.UCOMISD)
_FP_FEATURES = frozenset((ix.CpuidFeature.FPU, ix.CpuidFeature.FPU287, ix.CpuidFeature.FPU387, ix.CpuidFeature.CMOV,
                          ix.CpuidFeature.MMX, ix.CpuidFeature.SSE, ix.CpuidFeature.SSE2,
                          ix.CpuidFeature.FXSR, ix.CpuidFeature.SSE3))


def is_fp(ins: ix.Instruction) -> bool:
    feats = set(ins.cpuid_features())
    if ix.CpuidFeature.CMOV in feats:       # FCMOVcc is FPU+CMOV; integer CMOVcc is CMOV only
        return ix.CpuidFeature.FPU in feats
    return bool(feats & _FP_FEATURES) or ins.mnemonic == M.WAIT


_RFLAGS = ((ix.RflagsBits.OF, OF), (ix.RflagsBits.SF, SF), (ix.RflagsBits.ZF, ZF),
           (ix.RflagsBits.AF, AF), (ix.RflagsBits.CF, CF), (ix.RflagsBits.PF, PF))
_READS = (ix.OpAccess.READ, ix.OpAccess.COND_READ, ix.OpAccess.READ_WRITE,
          ix.OpAccess.READ_COND_WRITE)
_INFO = ix.InstructionInfoFactory()


def reads_undefined(ins: ix.Instruction, u: Undefined) -> str:
    """Why ``ins`` depends on a value an earlier instruction left undefined ('' if it does not).

    Such a run proves nothing (a Jcc on an undefined OF may go either way), so
    :func:`check` discards it.
    """
    rd = ins.rflags_read
    fl = 0
    for b, f in _RFLAGS:
        if rd & b:
            fl |= f
    if fl & u.flags:
        return f"{ins} reads undefined flags {fl & u.flags:#x}"
    for ur in _INFO.info(ins).used_registers():
        if ur.access in _READS and ur.register in _GPR_INDEX:
            i, m, sh = _GPR_INDEX[ur.register]
            if u.regs.get(i, 0) & (m << sh):
                return f"{ins} reads undefined bits of {REG_NAMES[i]}"
    return ""


# --- comparison --------------------------------------------------------------------------
class Mismatch(AssertionError):
    pass


def _cmp_final(label: str, ref: Final, got: Final, undef: Undefined, flag_mask: int,
               slot_masks: dict | None) -> list[str]:
    errs = []
    if ref.note and ref.fault is None:
        errs.append(f"reference problem: {ref.note}")
    if got.note:
        errs.append(f"{label}: {got.note}")
    if ref.fault != got.fault:
        errs.append(f"{label}: fault {got.fault} != unicorn {ref.fault}")
        return errs
    if ref.eip != got.eip:
        errs.append(f"{label}: eip {got.eip:#x} != unicorn {ref.eip:#x}")
    for i in range(8):
        m = 0xFFFFFFFF & ~undef.regs.get(i, 0)
        if (ref.regs[i] ^ got.regs[i]) & m:
            errs.append(f"{label}: {REG_NAMES[i]} {got.regs[i]:#010x} != unicorn {ref.regs[i]:#010x}"
                        + (f" (compared bits {m:#x})" if m != 0xFFFFFFFF else ""))
    if (ref.eflags ^ got.eflags) & flag_mask:
        diff = (ref.eflags ^ got.eflags) & flag_mask
        names = [n for n, b in (("CF", CF), ("PF", PF), ("AF", AF), ("ZF", ZF), ("SF", SF),
                                ("DF", DF), ("OF", OF), ("IF", IF), ("IOPL", IOPL), ("NT", NT),
                                ("AC", AC), ("ID", ID)) if diff & b]
        errs.append(f"{label}: eflags {got.eflags:#x} != unicorn {ref.eflags:#x} "
                    f"(differ in {' '.join(names)}; compared {flag_mask:#x})")
    for name, (a, n) in REGIONS.items():
        r, g = ref.mem[name], got.mem[name]
        if r == g:
            continue
        bad = []
        for off in range(n):
            if r[off] == g[off]:
                continue
            addr = a + off
            if addr in undef.mem:
                continue
            if name == "scratch" and slot_masks is not None:
                mk = slot_masks.get(off, 0xFF)
                if not (r[off] ^ g[off]) & mk:
                    continue
            bad.append(addr)
        if bad:
            shown = ", ".join(f"[{x:#x}] {g[x - a]:#04x} != {r[x - a]:#04x}" for x in bad[:6])
            errs.append(f"{label}: memory differs in {len(bad)} byte(s): {shown}")
    return errs


def slot_masks_for(defined: int, kind: str, undef_regs: dict) -> tuple[dict, int]:
    """Which bits of the follower slots are defined, given the flags the body defined
    (and the register bits it left undefined: the followers store EAX and ESP)."""
    if kind in ("adc", "sbb"):
        cf_ok = bool(defined & CF)
        d = ARITH if cf_ok else 0
        masks = {FOLLOW_ADC + i: 0xFF if cf_ok else 0 for i in range(4)}
    else:
        d = defined
        masks = {}
    for c in range(16):
        masks[FOLLOW_SETCC + c] = 0xFF if (CC_DEPS[c >> 1] & ~d) == 0 else 0
    ua, us = undef_regs.get(0, 0), undef_regs.get(4, 0)
    for i in range(4):
        masks[FOLLOW_EAX + i] = masks[FOLLOW_LAHF + i] = ~(ua >> (8 * i)) & 0xFF
        masks[FOLLOW_ESP + i] = ~(us >> (8 * i)) & 0xFF
    masks[FOLLOW_LAHF + 1] = (d & 0xD5) | 0x2A        # AH: SF ZF - AF - PF 1 CF
    pushf = (d | DF | IF | IOPL | NT | AC | ID | TF | 0x2 | 0x8 | 0x20 | 0x8000)
    for i in range(4):
        masks[FOLLOW_PUSHF + i] = (pushf >> (8 * i)) & 0xFF
        masks[FOLLOW_STACK - 4 + i] = (pushf >> (8 * i)) & 0xFF   # the pushed copy
    return masks, d


_RV: dict[str, Ringvisor] = {}
_UC: dict[bool, Unicorn] = {}


def ringvisor(engine: str) -> Ringvisor:
    if engine not in _RV:
        _RV[engine] = Ringvisor(engine)
    return _RV[engine]


def unicorn(trace: bool) -> Unicorn:
    # An exception stops unicorn from its interrupt hook, before QEMU has delivered it:
    # QEMU's ``old_exception`` stays set and the next #DE would become a #DF.  So a
    # fresh engine after any exception.
    u = _UC.get(trace)
    if u is None or u.fault is not None:
        u = _UC[trace] = Unicorn(trace)
    return u


def reference(code: bytes, body_len: int, case: Case, img: dict) -> tuple[Final, Undefined]:
    """Unicorn's final state for ``code``, and what the body left undefined."""
    ref, undef = unicorn(True).run(code, body_len, case, img)
    if ref.fault is not None:       # QUIRK 2 (see Unicorn)
        ref, _ = unicorn(False).run(code, body_len, case, img)
    return ref, undef


def check(case: Case, engines=("interp", "jit")) -> None:
    """Run ``case`` everywhere and raise :class:`Mismatch` listing every difference."""
    img = initial_image(case)
    body, _ = assemble(case.body, CODE)
    p1 = body + b"\xF4"
    ref1, undef1 = reference(p1, len(body), case, img)
    # a run that consumed an undefined value proves nothing: let hypothesis draw another
    if undef1.tainted:
        assume(False)
    base_mask = case.extra_flags | DF
    mask1 = (ARITH & ~undef1.flags) | base_mask
    errs = []
    for eng in engines:
        got = ringvisor(eng).run(p1, case, img)
        errs += _cmp_final(f"{eng}", ref1, got, undef1, mask1, None)
    if case.follow != "none" and "jit" in engines:
        p2, _ = assemble(case.body + followers(case.follow, case.jcc) + [b"\xF4"], CODE)
        ref2, undef2 = reference(p2, len(body), case, img)
        if undef2.tainted:
            assume(False)
        masks, d = slot_masks_for(ARITH & ~undef2.flags, case.follow, undef2.regs)
        if ref2.fault is not None:      # the followers never ran: the body's flags
            d = ARITH & ~undef2.flags
        elif CC_DEPS[case.jcc >> 1] & ~d:
            masks[FOLLOW_JCC] = 0
        mask2 = (d & ARITH) | base_mask
        got = ringvisor("jit").run(p2, case, img)
        errs += _cmp_final("jit+followers", ref2, got, undef2, mask2, masks)
    if errs:
        raise Mismatch(f"{case!r}\n" + "\n".join(errs))
