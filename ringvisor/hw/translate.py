"""Translate a basic block of x86 code into a Python function.

The generated function keeps the general registers it touches in locals
(``r0``..``r7``), computes every arithmetic flag lazily — the translator knows
which instruction last wrote each flag, and turns a ``jcc`` into a direct
comparison of that instruction's operands — and reaches memory through the
TLB dictionaries of :mod:`ringvisor.hw.mmu`.

Exceptions are precise: an instruction performs all its checks and memory
accesses before it assigns a register, and the line a fault comes from says
which instruction was executing (no code on the fast path keeps count), so the
block's ``except`` clause can write back the registers and flags exactly as they
stood before the faulting instruction and point EIP at it.

Instructions that touch system state (control registers, interrupts, I/O,
far transfers...) are executed by Python *helpers* on the CPU object; such an
instruction always ends its block, after the block has written its state back.
Loads of the data segment registers run inside the block (``SEGLOAD``) and end
it only when the new segment changes the mode the block was translated for.

``dump`` mode keeps the generated source so a reader can see what a block
became (``ringvisor run --trace``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import iced_x86 as ix

from . import flags as F
from .faults import CpuFault

M32 = 0xFFFFFFFF
FLAG_BITS = {"cf": 0x1, "pf": 0x4, "af": 0x10, "zf": 0x40, "sf": 0x80, "of": 0x800}
ALL_FLAGS = ("cf", "pf", "af", "zf", "sf", "of")


# --- register table: iced register -> (index, size in bytes, high byte) --------
def _build_regs() -> dict[int, tuple[int, int, bool]]:
    R = ix.Register
    t: dict[int, tuple[int, int, bool]] = {}
    for i, n in enumerate(("EAX", "ECX", "EDX", "EBX", "ESP", "EBP", "ESI", "EDI")):
        t[getattr(R, n)] = (i, 4, False)
    for i, n in enumerate(("AX", "CX", "DX", "BX", "SP", "BP", "SI", "DI")):
        t[getattr(R, n)] = (i, 2, False)
    for i, n in enumerate(("AL", "CL", "DL", "BL")):
        t[getattr(R, n)] = (i, 1, False)
    for i, n in enumerate(("AH", "CH", "DH", "BH")):
        t[getattr(R, n)] = (i, 1, True)
    return t


GPR = _build_regs()
SREG = {ix.Register.ES: 0, ix.Register.CS: 1, ix.Register.SS: 2, ix.Register.DS: 3,
        ix.Register.FS: 4, ix.Register.GS: 5}
MASK = {1: 0xFF, 2: 0xFFFF, 4: M32}
# the accesses of a memory operand (iced-x86's InstructionInfo) that may store to it
WRITE_ACCESSES = frozenset((ix.OpAccess.WRITE, ix.OpAccess.READ_WRITE, ix.OpAccess.COND_WRITE,
                            ix.OpAccess.READ_COND_WRITE))
SIGN = {1: 0x80, 2: 0x8000, 4: 0x80000000}
ALIGN_KEY = {1: 0xFFFFF000, 2: 0xFFFFF001, 4: 0xFFFFF003}
VIEW = {1: ("M8", 0), 2: ("M16", 1), 4: ("M32", 2)}
# Appended to every store that leaves the RAM fast path (only there can a store reach
# MMIO: the write TLBs hold RAM pages alone).  A device written there may make an
# interrupt pending and lower the CPU's budget (``CPU.irq_check``); a fused loop, which
# read its bound once at entry, reads it again there so that it leaves at the end of
# the iteration (``CodeCache.assemble``); elsewhere the token is dropped.
RELIM = "; __RELIM__"



def registrar(table: dict):
    """A decorator factory: ``@registrar(table)(*mnemonics)`` files a function in
    ``table`` under each mnemonic (the translator's emitters, the helpers, a monitor's
    emulators)."""
    def register(*mnemonics):
        def deco(fn):
            for m in mnemonics:
                table[m] = fn
            return fn
        return deco
    return register

# the lowest segment limit under which user code checks the limit only on a TLB miss
# (a monitor's cut leaves the guest all but the top 4 MiB; a low limit, as a vm86 DS of
# 64 KiB, would keep most user pages out of the TLB)
USER_CUT_MIN = 0xBFFFFFFF


@dataclass
class Mode:
    """The CPU mode bits that change what a block of code means."""

    cpl: int
    cs32: bool
    ss32: bool
    df: bool
    flat: int          # bit s set: segment register s is flat (base 0, 4 GiB, usable, writable)
    cs_base: int = 0   # code is fetched at CS.base + EIP; EIP constants depend on it
    cs_limit: int = 0xFFFFFFFF
    flat_limit: int = 0xFFFFFFFF   # the limit of the flat segments (below 4 GiB: one compare per access)
    direct: bool = False   # paging off and no data breakpoint: loads index RAM by linear address
    real: bool = False     # CR0.PE clear: segment loads and far transfers of realmode.py
    vm86: bool = False     # EFLAGS.VM (and PE): real-mode segments at CPL 3, IOPL-sensitive
    key: int = field(init=False, compare=False)   # the code cache's key (computed once)

    def __post_init__(self) -> None:
        self.key = (self.cpl | self.cs32 << 2 | self.ss32 << 3 | self.df << 4 | self.flat << 5 |
                    self.direct << 11 | self.cs_base << 12 | self.flat_limit << 44 |
                    self.real << 76 | self.vm86 << 77)

    @property
    def user(self) -> bool:
        return self.cpl == 3


class Group:
    """The flags produced by one instruction of the block, kept symbolically."""

    __slots__ = ("kind", "size", "res", "a", "b")

    def __init__(self, kind: int, size: int, res: str, a: str, b: str) -> None:
        self.kind, self.size, self.res, self.a, self.b = kind, size, res, a, b


@dataclass
class Translation:
    """A translated block: its function, where it came from, and its source."""

    fn: object
    eip: int
    phys_pages: tuple[int, ...]
    n_insns: int
    source: str = ""
    size: int = 0
    ranges: tuple[tuple[int, int], ...] = ()    # physical byte ranges of its instructions
    # an instruction straddling into the next linear page: the physical page it
    # was fetched from there (checked against the current mapping before each run)
    next_page: int | None = None

    def overlaps(self, start: int, end: int) -> bool:
        return any(a < end and start < b for a, b in self.ranges)


class Unsupported(Exception):
    """No semantics for this instruction: it raises #UD when executed."""


@dataclass
class BlockBuilder:
    mode: Mode
    lines: list[str] = field(default_factory=list)
    ind: int = 2
    ntmp: int = 0
    used: set = field(default_factory=set)
    dirty: set = field(default_factory=set)
    # flag name -> ("entry",) | ("grp", Group) | ("var", name)
    fsrc: dict = field(default_factory=lambda: {f: ("entry",) for f in ALL_FLAGS})
    entry_flags_var: str | None = None
    snapshots: list = field(default_factory=list)   # (index, eip, fsrc copy)
    consts: list = field(default_factory=list)      # closure constants (instructions for helpers)
    ends: bool = False
    index: int = 0
    storing: bool = False          # generating flag stores (handler/tail), not body code
    insn_start: int = 0
    pending_snapshot: tuple | None = None
    body_entry_defined: bool = False
    targets: set = field(default_factory=set)   # static successors (for loop fusion)
    helper_const: str | None = None
    next_expr: str | None = None
    side_exits: bool = False       # may a forward branch leave the block mid-way?
    # may the block go on at a backward branch's target (``jcc``), leaving when it is
    # not taken?  (set by the translator: a target in the page not translated yet)
    back_ok: object = None
    follow: int | None = None      # where the translator goes on after this instruction
    # Copy propagation: a register written in the block lives in a fresh local
    # (or is a constant), named here, until the block writes it back.  The locals
    # ``r0``..``r7`` hold the values at block entry (in a fused loop: at the start
    # of the iteration) and are never reassigned in the body, so any name a flag
    # group keeps stays valid to the end of the block.
    cur: dict = field(default_factory=dict)        # register index -> local name or constant
    pinned: set = field(default_factory=set)       # names reassigned inside a REP loop
    wb_points: list = field(default_factory=list)  # register maps at side exits
    born: dict = field(default_factory=dict)       # temporary -> index of the instruction assigning it
    start: int = -1                                # the block's first EIP
    loop_points: list = field(default_factory=list)   # side exits back to the start (see side_exit)
    # a local known to be another plus a constant (mod 2^32), from ADD/SUB/INC/DEC with
    # an immediate, LEA, PUSH and POP: an address built on it starts from the other
    # (``add eax, 64`` then ``[eax-64]`` is ``[eax]`` before the add)
    offsets: dict = field(default_factory=dict)
    lazies: list = field(default_factory=list)     # CMP/TEST results not computed (lazy_result)
    cpu: object = None             # the CPU the block is for (FPU/SSE functions are bound to it)
    raw: bytes = b""               # the bytes of the instruction being translated
    may_fault: bool = False        # the instruction calls something that may raise a CpuFault
    seg_loaded: tuple | None = None   # (index, register) of the last data segment load
    indirect: str | None = None    # the target of the indirect transfer just emitted (speculate.py)
    learner: str | None = None     # the constant the block's exit tells its target (speculate.py)
    # a local loaded from memory by a byte or word access -> that size: its value fits
    # (every read path masks to the access size), so reading AL or AX of it needs no mask
    narrow: dict = field(default_factory=dict)
    # a flat address expression -> the local the body's top level computed it in: every
    # name in it is assigned once (outside a REP loop), so a later access to the same
    # expression reuses it (``[esp+8]`` stored, then loaded, in one iteration)
    addrs: dict = field(default_factory=dict)
    # the last store at the body's top level, for a load of the same address right after
    # it (``forward``): (address, size, value, its ``try`` line, the line's start)
    stored: tuple | None = None
    # user code under a segment limit below 4 GiB (a monitor's cut): an address local ->
    # (segment, limit) of the access just made through it, checked in its slow path only
    cut: dict = field(default_factory=dict)

    # -- emission ----------------------------------------------------------------
    def emit(self, line: str) -> None:
        self.lines.append("    " * self.ind + line)

    def tmp(self, prefix: str = "t") -> str:
        self.ntmp += 1
        name = f"{prefix}{self.ntmp}"
        self.born[name] = self.index    # a temporary is assigned by the instruction that made it
        return name

    def let(self, expr: str, prefix: str = "t") -> str:
        v = self.tmp(prefix)
        self.emit(f"{v} = {expr}")
        m = OFFSET.match(expr)
        if m and m.group(1) not in self.pinned:
            # v = x + c (mod 2^32): remembered as (what x is an offset of, offset)
            base, off = self.offsets.get(m.group(1), (m.group(1), 0))
            c = int(m.group(3), 0)
            self.offsets[v] = (base, (off + c if m.group(2) == "+" else off - c) & M32)
        return v

    def lazy_result(self, expr: str) -> str:
        """A flag group's result left as an expression (``lazy``); where the block's
        end stores or carries it anyway, ``settle_lazy`` computes it once, here."""
        self.emit(f"__LAZY__:{len(self.lazies)}")
        res = f"({expr})"
        self.lazies.append((res, self.index))
        return res

    def settle_lazy(self, stored: bool) -> None:
        """Compute in a local each lazy result that the block's end stores (``stored``:
        each time it runs; a fused loop stores its flags once, when it leaves) and
        the straight path reads too (it would be computed twice); drop the markers of
        the others.  (Equal expressions are equal values: every name in them is
        assigned once.)"""
        ending = {id(src[1]): src[1] for src in self.fsrc.values() if src[0] == "grp"}
        for k, (res, index) in enumerate(self.lazies):
            at = next(j for j, line in enumerate(self.lines) if line.strip() == f"__LAZY__:{k}")
            mine = [g for g in ending.values() if g.res == res]
            depth = len(self.lines[at]) - len(self.lines[at].lstrip())
            reads = sum(1 for line in self.lines[at + 1:]
                        if res in line and len(line) - len(line.lstrip()) <= depth)
            if not mine or reads + stored < 2:
                del self.lines[at]
                continue
            name = self.tmp("z")
            self.born[name] = index
            line = self.lines[at]
            self.lines[at] = line[:len(line) - len(line.lstrip())] + f"{name} = {res}"
            for j in range(at + 1, len(self.lines)):
                self.lines[j] = self.lines[j].replace(res, name)
            for g in mine:
                g.res = name
                if g.a == res:           # (a TEST's group: a = b = its result)
                    g.a = g.b = name
        self.lazies.clear()

    def const(self, obj: object) -> str:
        self.consts.append(obj)
        return f"K{len(self.consts) - 1}"

    # -- registers ---------------------------------------------------------------
    def reg(self, i: int) -> str:
        """The name holding register ``i``'s current value."""
        v = self.cur.get(i)
        if v is not None:
            return v
        self.used.add(i)
        return f"r{i}"

    def read_reg(self, r: int) -> str:
        i, size, high = GPR[r]
        v = self.reg(i)
        if size == 4:
            return v
        if high:
            return f"(({v} >> 8) & 0xFF)"
        if self.narrow.get(v, 4) <= size:
            return v
        return f"({v} & {MASK[size]:#x})"

    def write_reg(self, r: int, expr: str) -> None:
        """Assign an already-masked value to a register."""
        i, size, high = GPR[r]
        if size == 4:
            return self.set_reg32(i, expr)
        v = self.reg(i)
        if high:
            self.set_reg32(i, f"({v} & 0xFFFF00FF) | ({expr} << 8)")
        elif self.narrow.get(v, 4) <= size:
            # (no bits above the part written: the register becomes the value, which fits)
            self.set_reg32(i, expr)
            name = self.cur[i]
            if name.isidentifier() and name not in self.pinned and not REG_LOCAL.match(name):
                self.narrow[name] = size
        else:
            self.set_reg32(i, f"({v} & {M32 ^ MASK[size]:#x}) | {expr}")

    def set_reg32(self, i: int, expr: str) -> None:
        self.dirty.add(i)
        name = self.cur.get(i)
        if name in self.pinned:
            # inside a REP loop the register keeps one name across iterations
            self.emit(f"{name} = {expr}")
            return
        if is_atom(expr):
            self.cur[i] = expr
        else:
            self.cur[i] = self.let(expr, "v")

    def pin(self, regs) -> None:
        """Give registers names that a Python loop may reassign (REP string instructions)."""
        for i in regs:
            name = self.tmp("q")
            self.emit(f"{name} = {self.reg(i)}")
            self.dirty.add(i)
            self.cur[i] = name
            self.pinned.add(name)
            if self.pending_snapshot is not None:
                # a fault in a later iteration keeps the earlier ones' progress (SDM Vol. 2B
                # REP: the registers hold it when an iteration faults), as the icount does
                self.pending_snapshot[3][i] = name

    def unpin(self) -> None:
        self.pinned.clear()

    def regmap(self, everything: bool) -> dict:
        """Register -> name at this point: the renamed ones, or (``everything``, in a
        fused loop) every register the block writes."""
        m = {i: v for i, v in self.cur.items() if v != f"r{i}"}
        if everything:
            for i in self.dirty:
                m.setdefault(i, f"r{i}")
        return m

    # -- addresses and memory ----------------------------------------------------
    def ea(self, ins: ix.Instruction, esp: str | None = None) -> str:
        """The effective address (offset within the segment) of ``ins``'s memory operand
        (``esp``: the name to use for ESP, for POP whose address uses ESP after the pop)."""
        reg = (lambda i: esp if i == 4 and esp else self.reg(i))
        parts = []
        base, index = ins.memory_base, ins.memory_index
        a16 = False
        disp = ins.memory_displacement
        if base != ix.Register.NONE:
            i, size, _ = GPR[base]
            a16 = size == 2
            name = reg(i)
            # (only where the address is computed anyway: a bare name stays as it is)
            if not a16 and ins.memory_displ_size != 2 and name in self.offsets and (
                    disp or index != ix.Register.NONE):
                name, off = self.offsets[name]
                disp = (disp + off) & M32
            parts.append(name)
        if index != ix.Register.NONE:
            i, size, _ = GPR[index]
            a16 = size == 2
            sc = ins.memory_index_scale
            parts.append(reg(i) if sc == 1 else f"{reg(i)} * {sc}")
        if a16 or ins.memory_displ_size == 2:
            a16 = True
        mask = 0xFFFF if a16 else M32
        if a16 and parts:
            parts = [f"({p} & 0xFFFF)" if " " not in p else f"(({p}) & 0xFFFF)" for p in parts]
        disp &= mask
        if disp:
            parts.append(f"{disp:#x}")
        if not parts:
            return f"{disp:#x}"
        if len(parts) == 1 and " " not in parts[0]:
            # a bare register needs no mask; a scaled index (``r0 * 4``) does
            return parts[0]
        return f"(({' + '.join(parts)}) & {mask:#x})"

    def linear(self, seg: int, off: str, size: int, write: bool, store: bool = False) -> str:
        """A local holding the linear address of ``seg:off`` (checked if not flat;
        ``store``: the address is only stored to, by ``store``)."""
        if self.mode.flat >> seg & 1:
            limit = self.mode.flat_limit
            if limit == 0xFFFFFFFF:
                m = WRAPPED.match(off)
                if m and (store or not write) and self.mode.direct and \
                        not NEGATIVE.search(m.group(1)):
                    # a read indexes RAM by the address itself (``load``), and a store by
                    # it and the write TLB's delta, which is zero without paging: one that
                    # wrapped past 4 GiB is beyond RAM unmasked too, and the slow path,
                    # which masks it, reads or writes it (not a read-modify-write, whose
                    # probe does not catch that; and not with a negative displacement,
                    # which always wraps)
                    return self._address(m.group(1))
                return off if is_atom(off) else self._address(off)
            if self.mode.user and not self.mode.direct and not self.mode.vm86 and limit >= USER_CUT_MIN:
                # user code: no page that reaches past the limit is in the user TLB
                # (Mmu.lower_user_ceiling, when the mode was made), so an access that
                # hits it is within the limit; one that misses is checked in the slow
                # path (``checked``) before the page walk, as the processor checks the
                # limit before paging
                a = off if is_atom(off) else self._address(off)
                self.cut[a] = (seg, limit)
                return a
            # base 0 but cut short (a monitor's ring compression): past the limit
            # the checked path raises the fault
            a = self.let(off, "a")
            self.emit(f"if {a} > {limit - (size - 1)}: {a} = LIN({seg}, {a}, {size}, {int(write)})")
            return a
        return self.let(f"LIN({seg}, {off}, {size}, {int(write)})", "a")

    def _address(self, expr: str) -> str:
        """A local holding the flat address ``expr``: the one computed before where the
        body's top level did (it is assigned on every path that reaches here)."""
        if self.pinned:
            return self.let(expr, "a")
        a = self.addrs.get(expr)
        if a is None:
            a = self.let(expr, "a")
            if self.ind == 2:
                self.addrs[expr] = a
        return a

    def checked(self, lin: str, size: int, write: bool) -> str:
        """The linear address a slow path reads or writes: ``lin``, checked against the
        segment's limit where ``linear`` left that check to the slow path (the fault
        the segment raises, #GP(0) or #SS(0), comes before the walk)."""
        cut = self.cut.get(lin)
        if cut is None:
            return lin
        seg, limit = cut
        return f"(LIN({seg}, {lin}, {size}, {int(write)}) if {lin} > {limit - (size - 1):#x} else {lin})"

    def mem_linear(self, ins: ix.Instruction, size: int, write: bool, store: bool = False) -> str:
        return self.linear(SREG[ins.memory_segment], self.ea(ins), size, write, store)

    def _probe(self, lin: str, size: int, tlb: str) -> tuple[str, str]:
        """Read through TLB dictionary ``tlb``; returns (value, delta) locals."""
        view, sh = VIEW[size]
        d = self.tmp("d")
        v = self.tmp()
        if size < 4:
            self.narrow[v] = size
        idx = f"({lin} + {d})" if not sh else f"({lin} + {d}) >> {sh}"
        self.emit(f"{d} = {tlb}.get({lin} & {ALIGN_KEY[size]:#x})")
        self.emit(f"{v} = {view}[{idx}] if {d} is not None else "
                  f"RD({self.checked(lin, size, tlb[1] == 'W')}, {size}, {int(self.mode.user)})")
        return v, d

    def _put(self, lin: str, size: int, d: str, val: str) -> None:
        """Write through the delta ``d`` found by a write-TLB probe (slow path on a miss)."""
        view, sh = VIEW[size]
        idx = f"{lin} + {d}" if not sh else f"({lin} + {d}) >> {sh}"
        self.emit(f"if {d} is not None: {view}[{idx}] = {val}")
        self.emit(f"else: WR({lin}, {size}, {val}, {int(self.mode.user)}){RELIM}")

    # A TLB hit is a dictionary subscript; a miss raises KeyError, which costs
    # nothing until it happens (zero-cost exceptions) and sends the access to the
    # slow path.  This is cheaper than dict.get and a None test on every hit.
    def forward(self, lin: str, size: int) -> str | None:
        """A load of the address the last store wrote, with nothing between them that
        could write memory or reach a device (no call, no subscript, no attribute): the
        store, where it took the RAM fast path, keeps its value in a local, and the load
        takes that (the RAM holds it); where it took the slow path (a device, a code page,
        beyond RAM) the local is None and the load reads as before."""
        st = self.stored
        self.stored = None
        if st is None or st[0] != lin or st[1] != size or self.pinned:
            return None
        _, _, val, store, head = st
        # (found by its text: a marker may have been inserted before it since)
        at = len(self.lines) - 2
        while at >= 0 and self.lines[at] is not store:
            at -= 1
        if at < 0 or not all(QUIET.match(line) for line in self.lines[at + 2:]):
            return None
        fw = self.tmp("fw")
        pad = self.lines[at][:len(self.lines[at]) - len(self.lines[at].lstrip())]
        # (targets are assigned left to right: ``fw`` only once the RAM store is done)
        self.lines[at] = f"{pad}{head} = {fw} = {val}"
        miss = self.lines[at + 1]
        k = miss.index(": WR(")
        self.lines[at + 1] = f"{miss[:k]}: {fw} = None; {miss[k + 2:]}"
        v = self.tmp()
        if size < 4:
            self.narrow[v] = size
        self.emit(f"{v} = {fw} if {fw} is not None else RD({lin}, {size}, {int(self.mode.user)})")
        return v

    def load(self, lin: str, size: int) -> str:
        fwd = self.forward(lin, size) if self.stored is not None else None
        if fwd is not None:
            return fwd
        view, sh = VIEW[size]
        v = self.tmp()
        if size < 4:
            self.narrow[v] = size
        if self.mode.direct:
            # no paging: the linear address is the physical one, and RAM is one
            # array; unaligned accesses and addresses beyond RAM (IndexError) take
            # the slow path, which also reaches MMIO
            slow = f"RD({lin}, {size}, {int(self.mode.user)})"
            if is_const(lin) and not int(lin, 0) & (size - 1):     # a variable's address
                self.emit(f"try: {v} = {view}[{int(lin, 0) >> sh:#x}]")
            elif sh:
                self.emit(f"try: {v} = {view}[{lin} >> {sh}] if not {lin} & {size - 1} else {slow}")
            else:
                self.emit(f"try: {v} = {view}[{lin}]")
            self.emit(f"except IndexError: {v} = {slow}")
            return v
        tlb = "TRU" if self.mode.user else "TRS"
        idx = f"{lin} + {tlb}[{lin} & {ALIGN_KEY[size]:#x}]"
        self.emit(f"try: {v} = {view}[{idx if not sh else f'({idx}) >> {sh}'}]")
        self.emit(f"except KeyError: {v} = RD({self.checked(lin, size, False)}, {size}, {int(self.mode.user)})")
        return v

    def store(self, lin: str, size: int, val: str) -> None:
        view, sh = VIEW[size]
        tlb = "TWU" if self.mode.user else "TWS"
        idx = f"{lin} + {tlb}[{lin} & {ALIGN_KEY[size]:#x}]"
        head = f"try: {view}[{idx if not sh else f'({idx}) >> {sh}'}]"
        self.emit(f"{head} = {val}")
        # (without paging an address may be unmasked: beyond RAM, an IndexError)
        miss = "LookupError" if self.mode.direct else "KeyError"
        self.emit(f"except {miss}: WR({self.checked(lin, size, True)}, {size}, {val}, "
                  f"{int(self.mode.user)}){RELIM}")
        self.stored = (lin, size, val, self.lines[-2], head) \
            if self.ind == 2 and not self.pinned else None

    def rmw_begin(self, lin: str, size: int) -> tuple[str, str]:
        """Read for a read-modify-write: probes the write TLB so the write cannot miss."""
        return self._probe(lin, size, "TWU" if self.mode.user else "TWS")

    def rmw_end(self, lin: str, size: int, d: str, val: str) -> None:
        self._put(lin, size, d, val)

    # -- operands ------------------------------------------------------------------
    def op_size(self, ins: ix.Instruction, i: int) -> int:
        k = ins.op_kind(i)
        if k == ix.OpKind.REGISTER:
            return GPR[ins.op_register(i)][1]
        if k == ix.OpKind.MEMORY:
            return ins.memory_size and ix.MemorySizeExt.size(ins.memory_size) or 4
        raise Unsupported(f"operand size of kind {k}")

    def read_op(self, ins: ix.Instruction, i: int, size: int) -> str:
        k = ins.op_kind(i)
        if k == ix.OpKind.REGISTER:
            return self.read_reg(ins.op_register(i))
        if k == ix.OpKind.MEMORY:
            return self.load(self.mem_linear(ins, size, False), size)
        return f"{imm(ins, i, size):#x}"

    def stack_push(self, vals: list[str], size: int) -> None:
        """Push values (first pushed first). Memory is written before ESP changes."""
        sp = self.reg(4)
        if self.mode.ss32:
            new_sp = self.let(f"({sp} - {len(vals) * size}) & 0xFFFFFFFF", "s")
            whole = self._whole_frame(new_sp, len(vals), size, "TWU" if self.mode.user else "TWS")
            if whole:
                # PUSHAD: in one step where the frame lies in one page the write TLB holds
                self.emit(f"if {whole} is not None: PACK8(M8, {new_sp} + {whole}, "
                          f"{', '.join(reversed(vals))})")
                self.emit("else:")
                self.ind += 1
            for j, v in enumerate(vals):
                off = (len(vals) - 1 - j) * size
                a = new_sp if off == 0 else self.let(f"({new_sp} + {off}) & 0xFFFFFFFF", "s")
                lin = self.linear(2, a, size, True)
                self.store(lin, size, v)
            if whole:
                self.ind -= 1
            self.set_reg32(4, new_sp)
        else:
            new_sp = self.let(f"({sp} - {len(vals) * size}) & 0xFFFF", "s")
            for j, v in enumerate(vals):
                off = (len(vals) - 1 - j) * size
                a = self.let(f"({new_sp} + {off}) & 0xFFFF", "s")
                lin = self.linear(2, a, size, True)
                self.store(lin, size, v)
            self.set_reg32(4, f"({sp} & 0xFFFF0000) | {new_sp}")

    def _whole_frame(self, sp: str, count: int, size: int, tlb: str) -> str | None:
        """For PUSHAD and POPAD (eight dwords at ``sp`` on a flat 32-bit stack): a local
        holding the TLB's delta for the page if the frame is aligned and lies in it
        (None otherwise, and "" if the block cannot take that path): one store or load
        of the whole frame then stands for eight, none of which could fault."""
        mode = self.mode
        if not (count == 8 and size == 4 and mode.ss32 and mode.flat >> 2 & 1 and
                mode.flat_limit == 0xFFFFFFFF) or (tlb[:2] == "TR" and mode.direct):
            return ""
        d = self.tmp("d")
        self.emit(f"{d} = {tlb}.get({sp} & 0xfffff003) if {sp} & 0xFFF <= 0xFE0 else None")
        return d

    def stack_pop(self, count: int, size: int, extra: int = 0) -> list[str]:
        """Pop values (returns them in pop order); ESP is updated by the caller via pop_commit."""
        sp = self.reg(4)
        vals = []
        m = 0xFFFFFFFF if self.mode.ss32 else 0xFFFF
        whole = self._whole_frame(sp, count, size, "TRU" if self.mode.user else "TRS")
        if whole:
            self.emit(f"if {whole} is None:")
            self.ind += 1
        for j in range(count):
            a = sp if j == 0 and m == M32 else self.let(f"({sp} + {j * size}) & {m:#x}", "s")
            lin = self.linear(2, a, size, False)
            vals.append(self.load(lin, size))
        if whole:
            # POPAD: in one step where the frame lies in one page the read TLB holds
            self.ind -= 1
            self.emit(f"else: {', '.join(vals)} = UNPACK8(M8, {sp} + {whole})")
        self._pending_sp = (count * size + extra, m)
        return vals

    def pop_commit(self) -> None:
        n, m = self._pending_sp
        sp = self.reg(4)
        if m == M32:
            self.set_reg32(4, f"({sp} + {n}) & 0xFFFFFFFF")
        else:
            self.set_reg32(4, f"({sp} & 0xFFFF0000) | (({sp} + {n}) & 0xFFFF)")

    # -- flags -------------------------------------------------------------------
    def set_group(self, kind: int, size: int, res: str, a: str, b: str,
                  which: tuple[str, ...] = ALL_FLAGS) -> None:
        g = Group(kind, size, res, a, b)
        for f in which:
            self.fsrc[f] = ("grp", g)

    def set_flag_var(self, f: str, var: str) -> None:
        self.fsrc[f] = ("var", var)

    def entry_flags(self) -> str:
        """The name of a local holding the flags as they were at block entry.

        In the body it is computed once, at the start of the first instruction
        that needs it (``__ENTRY__`` becomes ``FL()``, or the loop-carried
        record in a fused loop); flag stores compute their own.
        """
        self.entry_flags_var = "ef"
        if not self.storing and not self.body_entry_defined:
            self.lines.insert(self.insn_start, "    " * 2 + "ef = __ENTRY__")
            self.body_entry_defined = True
        return "ef"

    def flag(self, f: str) -> str:
        """An expression that is truthy exactly when flag ``f`` is set."""
        src = self.fsrc[f]
        if src[0] == "entry" and f == "cf" and self.storing:
            return "__ENTRY_CF__"
        if src[0] == "entry":
            return f"({self.entry_flags()} & {FLAG_BITS[f]:#x})"
        if src[0] == "var":
            return src[1]
        return group_flag(src[1], f)

    def flag01(self, f: str) -> str:
        """An expression worth exactly 0 or 1."""
        src = self.fsrc[f]
        if src[0] == "var":
            return src[1]
        e = self.flag(f)
        return e if e == "__ENTRY_CF__" else f"(1 if {e} else 0)"

    def capture_flags(self, which=ALL_FLAGS) -> None:
        """Pin flags into 0/1 locals (before code that may or may not overwrite them)."""
        for f in which:
            if self.fsrc[f][0] != "var":
                self.fsrc[f] = ("var", self.let(self.flag01(f), "f"))

    def cond(self, cc: int) -> str:
        """A Python expression for x86 condition code ``cc`` (0..15)."""
        neg = cc & 1
        base = cc >> 1
        e = None
        srcs = {self.fsrc[f][0] == "grp" and self.fsrc[f][1] for f in ("cf", "zf", "sf", "of")}
        g = self.fsrc["zf"][1] if self.fsrc["zf"][0] == "grp" else None
        if g is not None and len(srcs) == 1:
            e = group_cond(g, base)
        if e is None:
            fl = self.flag
            e = {0: fl("of"), 1: fl("cf"), 2: fl("zf"), 3: f"({fl('cf')} or {fl('zf')})",
                 4: fl("sf"), 5: fl("pf"),
                 6: f"((not {fl('sf')}) != (not {fl('of')}))",
                 7: f"({fl('zf')} or ((not {fl('sf')}) != (not {fl('of')})))"}[base]
        return f"(not ({e}))" if neg else f"({e})"

    def flags_store_code(self, fsrc: dict, recompute_entry: bool = True) -> list[str]:
        """Statements writing the flags described by ``fsrc`` into the CPU's lazy record."""
        self.storing = True
        try:
            code = self._flags_store(fsrc)
        finally:
            self.storing = False
        if any("ef" in line for line in code) and recompute_entry:
            code.insert(0, "ef = __ENTRY__")
        return code

    def _flags_store(self, fsrc: dict) -> list[str]:
        kinds = {fsrc[f][0] for f in ALL_FLAGS}
        if kinds == {"entry"}:
            return ["__ENTRY_STORE__"]
        groups = {id(fsrc[f][1]) for f in ALL_FLAGS if fsrc[f][0] == "grp"}
        if kinds == {"grp"} and len(groups) == 1:
            g = fsrc["zf"][1]
            if g.kind == F.LOGIC and lazy(g.res):
                # (a TEST: its one value, computed once)
                return [f"S.lf_op = {F.op_code(g.kind, g.size * 8)}; "
                        f"S.lf_res = S.lf_a = S.lf_b = {g.res}"]
            return [f"S.lf_op = {F.op_code(g.kind, g.size * 8)}; S.lf_res = {g.res}; "
                    f"S.lf_a = {g.a}; S.lf_b = {g.b}"]
        saved = self.fsrc
        self.fsrc = fsrc
        try:
            g = fsrc["zf"][1] if fsrc["zf"][0] == "grp" else None
            if g is not None and g.kind in (F.INC, F.DEC) and \
                    all(fsrc[f][0] == "grp" and fsrc[f][1] is g for f in ALL_FLAGS if f != "cf"):
                # INC/DEC keep CF: the lazy record carries it in ``b``
                # CF is read first: it may come from the record being replaced
                return [f"S.lf_b = {self.flag01('cf')}; S.lf_op = {F.op_code(g.kind, g.size * 8)}; "
                        f"S.lf_res = {g.res}; S.lf_a = {g.a}"]
            bits = " | ".join(f"({FLAG_BITS[f]:#x} if {self.flag(f)} else 0)" for f in ALL_FLAGS)
        finally:
            self.fsrc = saved
        return [f"S.lf_res = {bits}; S.lf_op = 0"]

    def side_exit(self, cond: str, target: int | str, loop: bool = True) -> None:
        """Leave the block when ``cond`` holds; translation goes on along the fall-through.

        The exit writes back what the block has changed so far, exactly as the
        end of a block does (``__IC__`` becomes the loop counter in a fused loop).
        A branch to the block's own start (``loop``: a branch, not a segment load)
        makes the block a loop: there the exit starts the next iteration instead,
        while the instruction budget lasts (``__LOOP__``, settled at assembly).
        A target not known at translation (``str``: a name) is a guard's exit, after an
        indirect transfer predicted to go elsewhere (``speculate.py``).
        """
        self.emit(f"if {cond}:")
        self.ind += 1
        if loop and target == self.start:
            self.emit(f"__LOOP__:{len(self.loop_points)}")
            self.loop_points.append((self.index + 1, dict(self.cur), dict(self.fsrc),
                                     not self.body_entry_defined))
        # which registers to write back is settled at assembly: in a fused loop an
        # exit taken in a later iteration must write back everything the body changes
        self.emit(f"__WB__:{len(self.wb_points)}")
        self.wb_points.append(dict(self.cur))
        for line in self.flags_store_code(self.fsrc, not self.body_entry_defined):
            self.emit(line)
        self.emit(f"S.icount += __IC__{self.index + 1}")
        self.emit(f"return {target}" if isinstance(target, str) else f"return {target:#x}")
        self.ind -= 1

    # -- per-instruction bookkeeping ---------------------------------------------
    def begin_insn(self, index: int, eip: int) -> None:
        self.index = index
        self.may_fault = False
        self.indirect = None
        self.follow = None
        self.insn_start = len(self.lines)
        self.pending_snapshot = (index, eip, dict(self.fsrc), dict(self.cur))

    FAULT_TOKENS = ("RD(", "WR(", "LIN(", "DIV(", "AAM(", "SEGLOAD(", "SEGAGAIN(", "raise")

    def end_insn(self) -> None:
        """Only an instruction that can fault needs its index recorded for the handler."""
        added = "\n".join(self.lines[self.insn_start:])
        if self.may_fault or any(t in added for t in self.FAULT_TOKENS):
            # a marker, not code: the lines from here on are this instruction's, and
            # the unwinding finds it by the line a fault comes from (CodeCache.assemble)
            index = self.pending_snapshot[0]
            self.lines.insert(self.insn_start, "    " * 2 + f"__N__:{index}")
            self.snapshots.append(self.pending_snapshot)
        self.pending_snapshot = None


# ``(x + c) & 0xffffffff`` or ``(x - c) & 0xFFFFFFFF``, in parentheses or not
OFFSET = re.compile(r"^\(?\((\w+) ([+-]) (0x[0-9a-fA-F]+|\d+)\) & 0x(?:ffffffff|FFFFFFFF)\)?$")


WRAPPED = re.compile(r"^\(\((.*)\) & 0xffffffff\)$")   # an address as ``ea`` masks it
NEGATIVE = re.compile(r"\+ 0x[89a-f][0-9a-f]{7}$")   # a displacement of 2 GiB or more
REG_LOCAL = re.compile(r"^r[0-7]$")       # a register's value at block (or iteration) entry
# a line that can neither write memory nor reach a device: a local assigned arithmetic
# of locals and constants (no call, subscript or attribute), or a marker
QUIET = re.compile(r"^(?!.*\w\()\s*(?:__N__:\d+|__LAZY__:\d+|[a-z]\w* = [\w\s()+\-*&|^~<>]*)$")


def is_atom(expr: str) -> bool:
    """A local name or a constant: needs no temporary of its own."""
    return expr.isidentifier() or is_const(expr)


def lazy(res: str) -> bool:
    """A flag group's result kept as an expression (CMP, TEST), not computed in a local."""
    return res.startswith("(")


def is_const(expr: str) -> bool:
    try:
        int(expr, 0)
    except ValueError:
        return False
    return True


def imm(ins: ix.Instruction, i: int, size: int) -> int:
    k = ins.op_kind(i)
    OK = ix.OpKind
    if k == OK.IMMEDIATE8:
        return ins.immediate8
    if k == OK.IMMEDIATE16:
        return ins.immediate16
    if k == OK.IMMEDIATE32:
        return ins.immediate32
    if k in (OK.IMMEDIATE8TO16, OK.IMMEDIATE8TO32):
        return ins.immediate(i) & MASK[size]
    if k == OK.IMMEDIATE8_2ND:
        return ins.immediate8_2nd
    return ins.immediate(i) & MASK[size]


def group_flag(g: Group, f: str) -> str:
    """Truthy-when-set expression for flag ``f`` of group ``g``."""
    k, size, res, a, b = g.kind, g.size, g.res, g.a, g.b
    sign = SIGN[size]
    if f == "zf":
        return f"({a} == {b})" if k == F.SUB and lazy(res) else f"({res} == 0)"
    if f == "sf":
        return f"({res} & {sign:#x})"
    if f == "pf":
        return f"PAR[{res} & 0xFF]"
    if k == F.LOGIC:
        return "0" if f in ("cf", "of", "af") else None
    if f == "af":
        if k == F.INC:
            return f"(({res} & 0xF) == 0)"
        if k == F.DEC:
            return f"(({res} & 0xF) == 0xF)"
        if k == F.NEG:
            return f"(({a} ^ {res}) & 0x10)"
        return f"(({a} ^ {b} ^ {res}) & 0x10)"
    if f == "cf":
        if k == F.ADD:
            return f"({res} < {a})"
        if k == F.ADC:
            return f"({a} + {b} + 1 > {MASK[size]:#x})"
        if k == F.SUB:
            return f"({a} < {b})"
        if k == F.SBB:
            return f"({a} <= {b})"
        if k == F.NEG:
            return f"({a} != 0)"
        if k in (F.INC, F.DEC):
            return f"({b} & 1)"
    if f == "of":
        if k in (F.ADD, F.ADC):
            return f"(({a} ^ {res}) & ({b} ^ {res}) & {sign:#x})"
        if k in (F.SUB, F.SBB):
            return f"(({a} ^ {b}) & ({a} ^ {res}) & {sign:#x})"
        if k == F.INC:
            return f"({res} == {sign:#x})"
        if k == F.DEC:
            return f"({res} == {sign - 1:#x})"
        if k == F.NEG:
            return f"({res} == {sign:#x})"
    raise AssertionError((k, f))


def group_cond(g: Group, base: int) -> str | None:
    """Fast forms of conditions when CF/ZF/SF/OF all come from one group."""
    k, size, res, a, b = g.kind, g.size, g.res, g.a, g.b
    sign = SIGN[size]
    if base == 2:
        # a CMP's result is zero exactly when its (masked) operands are equal
        return f"{a} == {b}" if k == F.SUB and lazy(res) else f"{res} == 0"
    if base == 4:
        return f"{res} & {sign:#x}"
    if k == F.SUB:
        if base == 1:
            return f"{a} < {b}"
        if base == 3:
            return f"{a} <= {b}"
        if base == 6:
            return f"({a} ^ {sign:#x}) < ({b} ^ {sign:#x})"
        if base == 7:
            return f"({a} ^ {sign:#x}) <= ({b} ^ {sign:#x})"
    if k == F.LOGIC:
        if base in (0, 1):
            return "False"
        if base == 3:
            return f"{res} == 0"
        if base == 6:
            return f"{res} & {sign:#x}"
        if base == 7:
            return f"{res} == 0 or {res} & {sign:#x}"
    return None
