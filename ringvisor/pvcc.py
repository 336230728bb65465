"""pvcc: para-virtualization with compiler support.

``ringvisor pvcc`` is a gcc wrapper that turns an unmodified native guest
kernel into a para-virtual one: it compiles every C file to assembly
(``gcc -S``) and runs every ``.S`` file through the preprocessor only
(``gcc -E``), rewrites each privileged or sensitive instruction in that
assembly text into the Xen-style sequence of docs/paravirt.md (a store to the
shared-info page, a hypercall, or a call into the PV runtime), assembles the
result and links it with the PV runtime (``guests/pv``).  Every rewritten
site is reported.

The rewriter works on AT&T assembly text, one statement at a time.  Rules of
the replacement sequences:

* They preserve every register the original instruction did not write, and
  leave the stack pointer as the original would.
* Sites from assembly sources (``.S``/``.s``) also preserve EFLAGS: where a
  sequence needs an ALU instruction, the arithmetic flags are saved with
  ``lahf``/``seto`` around it and restored with ``addb $0x7f``/``sahf`` (no
  ``popf``: at ring 1 that is the instruction being removed).  Sites from C
  (inline ``asm``) do not: gcc treats every x86 ``asm`` statement as
  clobbering the flags, so no flag value is live across one -- pvcc assumes
  no ``asm`` template keeps a flag live *across* its own privileged
  instruction.
* They are position independent and call nothing in ``.text`` -- code in
  ``boot.S`` runs at physical addresses before paging is on -- except
  ``lgdt``/``lidt`` from C, which become calls to the runtime's
  ``pv_lgdt``/``pv_lidt`` (C runs in the higher half).  ``lgdt``/``lidt`` in
  an assembly source are refused.
* Local labels are numeric (``98761:`` ...), so sequences also work inside
  ``.macro``/``.irp`` bodies and never capture the source's own ``1f``/``1b``.

Any other instruction that faults at ring 1 (``lmsw``, ``clts``, ``wbinvd``,
``rdmsr``, ``mov`` to a debug register, ...; iced-x86's list of CPL-0
instructions) is an error naming ``file:line``.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from ringvisor.guests.toolchain import CFLAGS, LDFLAGS, BuildError, Target, _run, write_atomic
from ringvisor import abi
from ringvisor.abi import (
    DomId, Hypercall, Mmuext, RvMachineOp, SchedOp, VcpuOp, XenVer)

MASK = f"0x{abi.PV_UPCALL_MASK_VA:08x}"           # vcpu_info[0].evtchn_upcall_mask
PENDING = f"0x{abi.PV_UPCALL_PENDING_VA:08x}"     # vcpu_info[0].evtchn_upcall_pending
CR2 = f"0x{abi.PV_CR2_VA:08x}"                    # vcpu_info[0].arch.cr2
INT = f"int ${abi.HYPERCALL_VECTOR:#x}"
EFLAGS_IF = 0x200

RUNTIME_DIR = "pv"          # under the guest source directory


class PvccError(BuildError):
    """An instruction pvcc cannot para-virtualize (one line: file:line: why)."""


@dataclass(frozen=True)
class Site:
    """One rewritten instruction."""

    where: str          # file:line in the source the programmer wrote
    asm: str            # where the instruction text came from (an asm statement, a .S line)
    function: str       # the enclosing function or label
    instruction: str    # the original instruction
    kind: str           # what it became

    def __str__(self) -> str:
        extra = [f"asm at {self.asm}"] if self.asm and self.asm != self.where else []
        if self.function:
            extra.append(f"in {self.function}")
        return (f"{self.where}: {self.instruction} -> {self.kind}"
                + (f"  ({', '.join(extra)})" if extra else ""))


# ---------------------------------------------------------------------------
# Instruction facts
# ---------------------------------------------------------------------------

REG32 = ("eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi")
REG16 = {"ax": "eax", "cx": "ecx", "dx": "edx", "bx": "ebx", "sp": "esp", "bp": "ebp",
         "si": "esi", "di": "edi"}
REG8 = {"al": "eax", "cl": "ecx", "dl": "edx", "bl": "ebx", "ah": "eax", "ch": "ecx",
        "dh": "edx", "bh": "ebx"}

HANDLED = {
    "cli": "cli", "sti": "sti", "hlt": "hlt",
    "pushf": "pushf", "pushfl": "pushf", "popf": "popf", "popfl": "popf",
    "iret": "iret", "iretl": "iret", "iretd": "iret",
    "invlpg": "invlpg", "lgdt": "lgdt", "lgdtl": "lgdt", "lidt": "lidt", "lidtl": "lidt",
    "ltr": "ltr", "ltrw": "ltr", "lret": "lret", "lretl": "lret",
}
MOVES = ("mov", "movl", "movw")
# port I/O: in C, a call into the runtime (which does the real instruction only with
# I/O privilege); in assembly it stays (it traps, and the hypervisor emulates it)
PORT_IO = {"inb": ("in", 1), "inw": ("in", 2), "inl": ("in", 4),
           "outb": ("out", 1), "outw": ("out", 2), "outl": ("out", 4)}
ACC = {1: "%al", 2: "%ax", 4: "%eax"}
REFUSED = {
    "pushfw": "16-bit pushf is not supported", "popfw": "16-bit popf is not supported",
    "iretw": "16-bit iret is not supported", "lretw": "16-bit lret is not supported",
    "lgdtw": "16-bit lgdt is not supported", "lidtw": "16-bit lidt is not supported",
    "lss": "lss loads an RPL-0 stack selector at ring 1; use mov to %ss",
    "lssl": "lss loads an RPL-0 stack selector at ring 1; use mov to %ss",
    "lssw": "lss loads an RPL-0 stack selector at ring 1; use mov to %ss",
}
PREFIXES = {"lock", "rep", "repe", "repz", "repne", "repnz", "data16", "data32", "addr16",
            "addr32", "cs", "ds", "es", "fs", "gs", "ss", "notrack"}

_cpl0: set[str] | None = None


def cpl0_mnemonics() -> set[str]:
    """Mnemonics (lower case) of every instruction that only runs at CPL 0,
    from iced-x86's instruction tables."""
    global _cpl0
    if _cpl0 is None:
        import iced_x86 as ix
        names = {v: k.lower() for k, v in vars(ix.Mnemonic).items() if not k.startswith("_")}
        found = set()
        for code in {v for k, v in vars(ix.Code).items() if not k.startswith("_")}:
            try:
                info = ix.OpCodeInfo(code)
            except Exception:       # noqa: BLE001 -- pseudo codes (INVALID, ...) have no info
                continue
            if info.mode32 and info.must_be_cpl0:
                found.add(names[info.mnemonic])
        found.discard("mov")        # mov to/from control and debug registers: by operand
        _cpl0 = found
    return _cpl0


def privileged_mnemonic(m: str) -> bool:
    """Is the AT&T mnemonic ``m`` (perhaps with a size suffix) CPL-0 only?"""
    s = cpl0_mnemonics()
    return m in s or (m[-1:] in "bwlq" and m[:-1] in s)


# ---------------------------------------------------------------------------
# Operands
# ---------------------------------------------------------------------------

_MEM = re.compile(r"^(?P<seg>%[a-z]s:)?(?P<disp>[^(]*)\((?P<inside>[^)]*)\)$")


def split_operands(text: str) -> list[str]:
    ops, depth, cur = [], 0, ""
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            ops.append(cur.strip())
            cur = ""
        else:
            cur += ch
    if cur.strip():
        ops.append(cur.strip())
    return ops


def split_statements(line: str) -> list[str]:
    """``line`` cut at its comment (``#``) and split at ``;``, quotes respected."""
    parts, cur, quote = [], "", False
    for i, ch in enumerate(line):
        if ch == '"' and (i == 0 or line[i - 1] != "\\"):
            quote = not quote
        elif not quote and ch == "#":
            break
        elif not quote and ch == ";":
            parts.append(cur)
            cur = ""
            continue
        cur += ch
    parts.append(cur)
    return [p for p in parts if p.strip()]


def reg_name(op: str) -> str | None:
    """``%eax`` -> ``eax`` (any register), else None."""
    m = re.fullmatch(r"%([a-z]+[0-9]*)", op.strip())
    return m.group(1) if m else None


def gpr32(op: str) -> str | None:
    """The 32-bit general register an operand names (``%dx`` -> ``edx``)."""
    r = reg_name(op)
    if r in REG32:
        return r
    return REG16.get(r) or REG8.get(r)


def is_memory(op: str) -> bool:
    return not op.startswith(("%", "$")) and "\\" not in op


def deeper(op: str, pushed: int) -> str:
    """The memory operand ``op`` after ``pushed`` more bytes went on the stack:
    an ``%esp``-based address moves up by that much."""
    m = _MEM.match(op.strip())
    if not m or pushed == 0:
        return op
    base = m.group("inside").split(",")[0].strip()
    if base != "%esp":
        return op
    disp = m.group("disp").strip()
    disp = f"{disp}+{pushed}" if disp else str(pushed)
    return f"{m.group('seg') or ''}{disp}({m.group('inside')})"


# ---------------------------------------------------------------------------
# Replacement sequences
# ---------------------------------------------------------------------------

L1, L2, L3 = "98761", "98762", "98763"


def _push(*regs: str) -> list[str]:
    return [f"pushl %{r}" for r in regs]


def _pop(*regs: str) -> list[str]:
    return [f"popl %{r}" for r in reversed(regs)]


def _flags_save() -> list[str]:
    # (%esp) := AH = SF ZF AF PF CF, AL = OF; eax keeps its value
    return ["pushl %eax", "lahf", "seto %al", "xchgl %eax, (%esp)"]


def _flags_restore() -> list[str]:
    # OF := AL (1 + 0x7f overflows, 0 + 0x7f does not), then the rest from AH
    return ["xchgl %eax, (%esp)", "addb $0x7f, %al", "sahf", "popl %eax"]


def _keep_flags(body, keep: bool) -> list[str]:
    """``body(depth)`` between a flags save and restore when ``keep``;
    ``depth`` is how many bytes the wrapper pushed."""
    if not keep:
        return body(0)
    return _flags_save() + body(4) + _flags_restore()


def _deliver_pending() -> list[str]:
    """If an event is pending, make a hypercall: the hypervisor delivers
    pending events on the way back (xen_version is the cheapest)."""
    return [*_push("ecx"), f"movzbl {PENDING}, %ecx", f"jecxz {L2}f",
            *_push("eax", "ebx"), "movl $0, %ecx", f"movl ${XenVer.version}, %ebx",
            f"movl ${Hypercall.xen_version}, %eax", INT, *_pop("eax", "ebx"),
            f"{L2}:", *_pop("ecx")]


def seq_cli() -> list[str]:
    return [f"movb $1, {MASK}"]


def seq_sti() -> list[str]:
    return [f"movb $0, {MASK}"] + _deliver_pending()


def seq_safe_halt() -> list[str]:
    # sched_op(SCHEDOP_block) unmasks and blocks atomically (no lost wakeup)
    regs = ("eax", "ebx", "ecx")
    return [*_push(*regs), f"movl ${SchedOp.block}, %ebx", "movl $0, %ecx",
            f"movl ${Hypercall.sched_op}, %eax", INT, *_pop(*regs)]


def seq_hlt() -> list[str]:
    regs = ("eax", "ebx", "ecx", "edx")
    return [*_push(*regs), f"movzbl {MASK}, %ecx", "movl $0, %edx", f"jecxz {L1}f",
            # masked: nothing can wake it, as with cli; hlt
            f"movl ${VcpuOp.down}, %ebx", "movl $0, %ecx", f"movl ${Hypercall.vcpu_op}, %eax",
            f"jmp {L2}f",
            f"{L1}:", f"movl ${SchedOp.block}, %ebx", f"movl ${Hypercall.sched_op}, %eax",
            f"{L2}:", INT, *_pop(*regs)]


def seq_pushf(keep: bool) -> list[str]:
    def body(d: int) -> list[str]:
        at = f"{d + 4}(%esp)"           # the pushed flags, under eax
        return ["pushl %eax", f"movzbl {MASK}, %eax", f"orl ${EFLAGS_IF:#x}, {at}",
                "shll $9, %eax", f"xorl %eax, {at}", "popl %eax"]      # IF := !mask
    return ["pushfl"] + _keep_flags(body, keep)


def seq_popf() -> list[str]:
    return ["testb $2, 1(%esp)", f"jz {L1}f",                 # IF (bit 9) of the popped value
            f"movb $0, {MASK}", "popfl", *_deliver_pending(), f"jmp {L3}f",
            f"{L1}:", f"movb $1, {MASK}", "popfl", f"{L3}:"]


def seq_iret() -> list[str]:
    return ["pushl %eax", f"movl ${Hypercall.iret}, %eax", INT]


def _mmuext(load_arg1: list[str], cmd: int) -> list[str]:
    """mmuext_op({cmd, arg1 = eax after load_arg1}, 1, NULL, DOMID_SELF), the
    one-element array built on the stack."""
    regs = ("eax", "ebx", "ecx", "edx", "esi")
    return [*_push(*regs), *load_arg1, "pushl $0", "pushl %eax", f"pushl ${cmd}",
            "movl %esp, %ebx", "movl $1, %ecx", "movl $0, %edx", f"movl ${DomId.SELF:#x}, %esi",
            f"movl ${Hypercall.mmuext_op}, %eax", INT, "leal 12(%esp), %esp", *_pop(*regs)]


def seq_write_cr3(reg: str, keep: bool) -> list[str]:
    return _keep_flags(lambda d: _mmuext([f"movl %{reg}, %eax", "shrl $12, %eax"],
                                         Mmuext.NEW_BASEPTR), keep)


def seq_write_cr(n: int, reg: str) -> list[str]:
    regs = ("eax", "ebx", "ecx", "edx")
    return [*_push(*regs), f"movl %{reg}, %edx", f"movl ${RvMachineOp.WRITE_CR}, %ebx",
            f"movl ${n}, %ecx", f"movl ${Hypercall.rv_machine_op}, %eax", INT, *_pop(*regs)]


def seq_read_cr(n: int, reg: str) -> list[str]:
    if n == 2:
        return [f"movl {CR2}, %{reg}"]
    saved = [r for r in ("eax", "ebx", "ecx") if r != reg]
    out = [*_push(*saved), f"movl ${RvMachineOp.READ_CR}, %ebx", f"movl ${n}, %ecx",
           f"movl ${Hypercall.rv_machine_op}, %eax", INT]
    if reg != "eax":
        out.append(f"movl %eax, %{reg}")
    return out + _pop(*saved)


def seq_invlpg(mem: str) -> list[str]:
    return _mmuext([f"leal {deeper(mem, 20)}, %eax"], Mmuext.INVLPG_LOCAL)


def seq_runtime_call(func: str, mem: str) -> list[str]:
    regs = ("eax", "ecx", "edx")            # what a C function may clobber
    return [*_push(*regs), f"leal {deeper(mem, 12)}, %eax", "pushl %eax", f"call {func}",
            "leal 4(%esp), %esp", *_pop(*regs)]


def seq_port_io(kind: str, size: int, port: str) -> list[str]:
    """``in``/``out`` of ``size`` bytes at ``port`` (``%dx`` or ``$n``) as a call of the
    runtime's pv_in(size, port) / pv_out(size, port, value); every register but the
    destination of an ``in`` is kept."""
    load_port = ["movzwl %dx, %ecx"] if port == "%dx" else [f"movl {port}, %ecx"]
    if kind == "out":
        return [*_push("eax", "ecx", "edx"), "pushl %eax", *load_port, "pushl %ecx",
                f"pushl ${size}", "call pv_out", "addl $12, %esp", *_pop("eax", "ecx", "edx")]
    keep = [] if size == 4 else ["pushl %eax"]
    put = [] if size == 4 else [f"mov{'b' if size == 1 else 'w'} {ACC[size]}, (%esp)", "popl %eax"]
    return [*_push("ecx", "edx"), *keep, *load_port, "pushl %ecx", f"pushl ${size}",
            "call pv_in", "addl $8, %esp", *put, *_pop("ecx", "edx")]


def seq_ltr(op: str) -> list[str]:
    regs = ("eax", "ebx", "ecx")
    r = gpr32(op)
    src = f"%{[k for k, v in REG16.items() if v == r][0]}" if r else deeper(op, 12)
    return [*_push(*regs), f"movzwl {src}, %ecx", f"movl ${RvMachineOp.LTR}, %ebx",
            f"movl ${Hypercall.rv_machine_op}, %eax", INT, *_pop(*regs)]


def seq_load_ss(op: str, keep: bool) -> list[str]:
    r = gpr32(op)

    def body(d: int) -> list[str]:
        src = f"%{[k for k, v in REG16.items() if v == r][0]}" if r else deeper(op, 4 + d + 4)
        return ["pushl %eax", f"movzwl {src}, %eax", "orl $1, %eax",     # RPL 1
                f"movl %eax, {d + 4}(%esp)", "popl %eax"]
    # a slot for the selector, filled, then popped into SS last so the
    # one-instruction interrupt shadow still covers the source's next instruction
    return ["leal -4(%esp), %esp"] + _keep_flags(body, keep) + ["popl %ss"]


def seq_lret(original: str, keep: bool) -> list[str]:
    return _keep_flags(lambda d: [f"orl $1, {d + 4}(%esp)"], keep) + [original]   # CS RPL 1


# ---------------------------------------------------------------------------
# The rewriter
# ---------------------------------------------------------------------------

_LABEL = re.compile(r"^\s*((?:[A-Za-z_.$][\w.$]*|\d+)\s*:)")
_LINEMARK = re.compile(r'^#\s*(\d+)\s+"([^"]*)"')
_FILE = re.compile(r'^\s*\.file\s+(\d+)\s+"([^"]*)"(?:\s+"([^"]*)")?')
_LOC = re.compile(r"^\s*\.loc\s+(\d+)\s+(\d+)")
_FUNC = re.compile(r"^([A-Za-z_$][\w.$]*):")
_BLOCK = re.compile(r"^\.LB([BEI])(\d+):")


@dataclass
class _Stmt:
    labels: list[str]
    text: str               # the instruction, without labels or comment
    mnemonic: str
    operands: list[str]
    where: str
    asm: str
    function: str


@dataclass
class Rewriter:
    """Rewrites one assembly text.  ``origin`` is ``"c"`` (gcc -S output) or
    ``"asm"`` (a preprocessed .S or a .s); ``source`` names the file for
    messages, ``root`` shortens paths in them."""

    source: str
    origin: str
    root: Path | None = None
    sites: list[Site] = field(default_factory=list)

    def _short(self, path: str) -> str:
        """``path`` relative to ``root`` when it lies under it."""
        if self.root is None:
            return path
        try:
            return str(Path(path).resolve().relative_to(self.root.resolve()))
        except (OSError, ValueError):
            return path

    def rewrite(self, text: str) -> str:
        items = self._parse(text)
        out: list[str] = []
        i = 0
        while i < len(items):
            item = items[i]
            if isinstance(item, str):
                out.append(item)
                i += 1
                continue
            nxt = self._next_stmt(items, i)
            if item.mnemonic == "sti" and nxt is not None and items[nxt].mnemonic == "hlt" \
                    and not items[nxt].labels:
                out += item.labels
                self._emit(out, item, seq_safe_halt(), "sched_op(SCHEDOP_block)",
                           f"{item.text}; {items[nxt].text}")
                out += [x for x in items[i + 1:nxt]]
                i = nxt + 1
                continue
            out += item.labels
            replaced = self._rewrite_one(item)
            if replaced is None:
                out.append("\t" + item.text)
            else:
                self._emit(out, item, *replaced)
            i += 1
        return "\n".join(out) + "\n"

    @staticmethod
    def _next_stmt(items, i: int) -> int | None:
        for j in range(i + 1, len(items)):
            if isinstance(items[j], _Stmt):
                return j
            if items[j].strip() and not items[j].lstrip().startswith("#"):
                return None             # a directive in between: not a pair
        return None

    def _emit(self, out: list[str], st: _Stmt, lines: list[str], kind: str,
              original: str | None = None) -> None:
        original = original or st.text
        self.sites.append(Site(st.where, st.asm, st.function, original, kind))
        out.append(f"\t# pvcc: {original} -> {kind}")
        out += [ln if ln.endswith(":") else "\t" + ln for ln in lines]

    # -- parsing: raw lines stay strings, instructions become _Stmt -------

    def _parse(self, text: str) -> list:
        items: list = []
        files: dict[str, str] = {}
        primary = None                       # the .c file's own number in .file/.loc
        src_file, src_line = self.source, 0  # .S: from line markers
        c_loc = (self.source, 0)             # .c: the last .loc in the .c file itself
        app_loc: tuple[str, int] | None = None   # inside #APP: the asm statement
        # The site's C line: inside a function inlined from a header (the
        # last .loc is in another file), the last line of the .c file itself
        # -- the call, arch_cli() say.  When the inlined function is in the
        # .c file too, the call's line is found from the blocks gcc -g marks:
        # .LBB<n>/.LBE<n> bracket a block, .LBI<n> says it is an inlined
        # call, right after the .loc of that call.
        blocks: list[list] = []              # [n, call loc or None]
        in_primary = True                    # is the last .loc in the .c file?
        function = ""
        for raw in text.split("\n"):
            src_line += 1
            line = raw.rstrip()
            m = _LINEMARK.match(line)
            if m:
                if self.origin == "c":
                    app_loc = (m.group(2), int(m.group(1))) if m.group(2) else None
                else:
                    src_file, src_line = m.group(2), int(m.group(1)) - 1
                items.append(raw)
                continue
            if self.origin == "c":
                fm = _FILE.match(line)
                if fm:
                    name = fm.group(3) or fm.group(2)
                    files[fm.group(1)] = name
                    if fm.group(1) != "0" and primary is None:
                        primary = fm.group(1)
                lm = _LOC.match(line)
                if lm:
                    in_primary = lm.group(1) == primary
                if lm and in_primary:
                    c_loc = (files.get(primary, self.source), int(lm.group(2)))
                bm = _BLOCK.match(line)
                if bm and bm.group(1) == "B":
                    blocks.append([bm.group(2), None])
                elif bm and bm.group(1) == "I" and blocks and blocks[-1][0] == bm.group(2):
                    blocks[-1][1] = c_loc
                elif bm and bm.group(1) == "E":
                    blocks = [b for b in blocks if b[0] != bm.group(2)]
            fmatch = _FUNC.match(line)
            if fmatch and not fmatch.group(1).startswith(".L"):
                function = fmatch.group(1)
                blocks = []
            stmts = self._statements(line)
            if not stmts:
                items.append(raw)
                continue
            if self.origin == "c":
                call = c_loc
                if in_primary:
                    call = next((b[1] for b in reversed(blocks) if b[1] is not None), c_loc)
                if call[1] == 0:                 # no .loc (not from gcc -g): the text's line
                    call = (self.source, src_line)
                where = f"{self._short(call[0])}:{call[1]}"
                asm = f"{self._short(app_loc[0])}:{app_loc[1]}" if app_loc else where
            else:
                where = asm = f"{self._short(src_file)}:{src_line}"
            for labels, body in stmts:
                mnem, ops = self._split(body)
                items.append(_Stmt(labels, body, mnem, ops, where, asm, function))
        return items

    def _statements(self, line: str) -> list[tuple[list[str], str]] | None:
        """The instructions on ``line`` if any of them needs pvcc's attention
        (else None: the line is kept as it is)."""
        parts = split_statements(line)
        if not parts or parts[0].lstrip().startswith(".") and not _LABEL.match(parts[0]):
            return None
        result, interesting = [], False
        for part in parts:
            labels = []
            rest = part
            while True:
                m = _LABEL.match(rest)
                if not m:
                    break
                labels.append(m.group(1).replace(" ", ""))
                rest = rest[m.end():]
            body = rest.strip()
            if body.startswith("."):
                return None                 # a directive after a label: leave the line alone
            if body:
                mnem, ops = self._split(body)
                if self._attention(mnem, ops):
                    interesting = True
            result.append((labels, body))
        if not interesting:
            return None
        # labels without an instruction become their own entries
        return [(lbls, b) for lbls, b in result if b or lbls]

    @staticmethod
    def _split(body: str) -> tuple[str, list[str]]:
        words = body.split(None, 1)
        if not words:
            return "", []
        mnem = words[0].lower()
        ops = split_operands(words[1]) if len(words) > 1 else []
        return mnem, ops

    @staticmethod
    def _attention(mnem: str, ops: list[str]) -> bool:
        if mnem in PREFIXES and ops:
            inner = ops[0].split(None, 1)[0].lower()
            return inner in HANDLED or inner in REFUSED or privileged_mnemonic(inner)
        if mnem in HANDLED or mnem in REFUSED or mnem in PORT_IO or privileged_mnemonic(mnem):
            return True
        if mnem in MOVES or mnem.startswith(("pop", "mov")):
            return any(re.search(r"%(cr|db|dr|tr)\d|%ss\b", o) for o in ops)
        return False

    # -- one instruction ------------------------------------------------------

    def _fail(self, st: _Stmt, why: str):
        raise PvccError(f"{st.where}: {st.text}: {why}"
                        + (f" (asm at {st.asm})" if st.asm != st.where else ""))

    def _rewrite_one(self, st: _Stmt) -> tuple[list[str], str] | None:
        if not st.text:
            return None
        m, ops = st.mnemonic, st.operands
        if not self._attention(m, ops):
            return None
        keep = self.origin != "c"
        if m in PREFIXES:
            self._fail(st, "a prefixed privileged instruction; pvcc cannot para-virtualize it")
        if m in REFUSED:
            self._fail(st, REFUSED[m])
        if m not in HANDLED and (m in MOVES or m.startswith(("pop", "mov"))):
            return self._rewrite_mov(st, keep)
        if m in PORT_IO:
            return self._rewrite_port_io(st)
        kind = HANDLED.get(m)
        if kind is None:
            self._fail(st, "privileged instruction (faults at ring 1) that pvcc cannot "
                           "para-virtualize")
        if kind in ("cli", "sti", "hlt", "pushf", "popf", "iret") and ops:
            self._fail(st, f"unexpected operands for {m}")
        if kind == "cli":
            return seq_cli(), "evtchn_upcall_mask = 1"
        if kind == "sti":
            return seq_sti(), "evtchn_upcall_mask = 0; deliver pending (xen_version)"
        if kind == "hlt":
            return seq_hlt(), "sched_op(SCHEDOP_block), or vcpu_op(VCPUOP_down) if masked"
        if kind == "pushf":
            return seq_pushf(keep), "pushf; pushed IF = !evtchn_upcall_mask"
        if kind == "popf":
            return seq_popf(), "evtchn_upcall_mask = !IF; popf; deliver pending"
        if kind == "iret":
            return seq_iret(), "hypercall iret"
        if kind == "lret":
            return seq_lret(st.text, keep), "lret with CS RPL 1"
        if len(ops) != 1:
            self._fail(st, "expected one operand")
        op = ops[0]
        if "\\" in op:
            self._fail(st, "a macro argument as operand; pvcc needs it literally")
        if kind == "invlpg":
            if not is_memory(op):
                self._fail(st, "invlpg needs a memory operand")
            return seq_invlpg(op), "mmuext_op(MMUEXT_INVLPG_LOCAL)"
        if kind in ("lgdt", "lidt"):
            if self.origin != "c":
                self._fail(st, f"{kind} in an assembly source: the PV runtime's pv_{kind} "
                               "may only be called from C (paging on); move it to C")
            if not is_memory(op):
                self._fail(st, f"{kind} needs a memory operand")
            what = "set_gdt" if kind == "lgdt" else \
                "set_trap_table: every present gate, DPL 0 as the kernel's ring 1; " \
                "set_callbacks, bind_pirq"
            return seq_runtime_call(f"pv_{kind}", op), f"call pv_{kind} ({what})"
        if kind == "ltr":
            if reg_name(op) and gpr32(op) is None:
                self._fail(st, "ltr from a non-general register")
            return seq_ltr(op), "rv_machine_op(RV_LTR)"
        raise AssertionError(kind)

    def _rewrite_port_io(self, st: _Stmt) -> tuple[list[str], str] | None:
        if self.origin != "c":
            return None                   # assembly may run before paging: it traps instead
        kind, size = PORT_IO[st.mnemonic]
        ops = [o.strip() for o in st.operands]
        acc, port = (ops[1], ops[0]) if kind == "in" else (ops[0], ops[1])
        if len(ops) != 2 or acc != ACC[size] or not (port == "%dx" or re.fullmatch(r"\$\w+", port)):
            self._fail(st, f"{st.mnemonic} with operands pvcc does not know")
        return seq_port_io(kind, size, port), f"call pv_{kind} (port I/O)"

    def _rewrite_mov(self, st: _Stmt, keep: bool) -> tuple[list[str], str] | None:
        m, ops = st.mnemonic, st.operands
        if m.startswith("pop"):
            if any(reg_name(o) == "ss" for o in ops):
                self._fail(st, "pop to %ss would load an RPL-0 selector at ring 1; use mov")
            return None
        if len(ops) != 2:
            return None
        src, dst = ops
        for o in (src, dst):
            r = reg_name(o) or ""
            if re.fullmatch(r"(db|dr|tr)\d", r):
                self._fail(st, f"mov to or from %{r} is privileged and has no para-virtual form")
        if "\\" in src or "\\" in dst:
            self._fail(st, "a macro argument as operand; pvcc needs it literally")
        dr, sr = reg_name(dst) or "", reg_name(src) or ""
        if dr.startswith("cr"):
            n = int(dr[2:])
            reg = gpr32(src)
            if reg is None or reg == "esp" or reg_name(src) not in REG32:
                self._fail(st, "mov to a control register needs a 32-bit general register "
                               "other than %esp")
            if n == 3:
                return seq_write_cr3(reg, keep), "mmuext_op(MMUEXT_NEW_BASEPTR)"
            if n in (0, 4):
                return seq_write_cr(n, reg), f"rv_machine_op(RV_WRITE_CR, {n})"
            self._fail(st, f"mov to %cr{n} has no para-virtual form")
        if sr.startswith("cr"):
            n = int(sr[2:])
            reg = gpr32(dst)
            if reg is None or reg == "esp" or reg_name(dst) not in REG32:
                self._fail(st, "mov from a control register needs a 32-bit general register "
                               "other than %esp")
            if n == 2:
                return seq_read_cr(2, reg), "read vcpu_info[0].arch.cr2"
            if n in (0, 3, 4):
                return seq_read_cr(n, reg), f"rv_machine_op(RV_READ_CR, {n})"
            self._fail(st, f"mov from %cr{n} has no para-virtual form")
        if dr == "ss":
            if reg_name(src) and gpr32(src) is None:
                self._fail(st, "mov to %ss from a segment register is not supported")
            return seq_load_ss(src, keep), "mov to %ss with RPL 1"
        return None


def rewrite_asm(text: str, source: str, origin: str = "asm",
                root: Path | None = None) -> tuple[str, list[Site]]:
    """Rewrite one assembly text; return it and the sites rewritten."""
    rw = Rewriter(source, origin, root)
    return rw.rewrite(text), rw.sites


# ---------------------------------------------------------------------------
# Compiling and linking
# ---------------------------------------------------------------------------


@dataclass
class Report:
    """Every site pvcc rewrote in one build."""

    sites: list[Site] = field(default_factory=list)

    def text(self) -> str:
        return "".join(f"{s}\n" for s in self.sites)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for s in self.sites:
            key = s.instruction.split()[0] if ";" not in s.instruction else "sti; hlt"
            out[key] = out.get(key, 0) + 1
        return out


def _tool(name: str, default: str) -> str:
    return os.environ.get(name, default)


def runtime_sources(source_dir: Path) -> list[Path]:
    d = source_dir / RUNTIME_DIR
    return sorted(d.glob("*.S")) + sorted(d.glob("*.c"))


def compile_to_asm(src: Path, out: Path, target: Target, root: Path | None = None) -> list[Site]:
    """``src`` (.c, .S or .s) -> rewritten assembly in ``out``; the sites."""
    gcc = _tool("RINGVISOR_CC", "gcc")
    flags = [*CFLAGS, target.optimize, *target.cflags, *[f"-I{d}" for d in target.include_dirs]]
    raw = out.with_name(out.name + ".orig")
    if src.suffix == ".c":
        # -g only for the .loc lines that tie an instruction to its C line; it
        # changes no code, and the link strips the debug sections
        _run([gcc, *flags, "-g", "-S", str(src), "-o", str(raw)])
        origin = "c"
    elif src.suffix == ".S":
        _run([gcc, *flags, "-E", str(src), "-o", str(raw)])
        origin = "asm"
    elif src.suffix == ".s":
        raw = src
        origin = "asm"
    else:
        raise BuildError(f"{src}: pvcc compiles .c, .S and .s files")
    try:
        text = raw.read_text()
    except UnicodeDecodeError:
        raise BuildError(f"{src}: not a text file") from None
    new, sites = rewrite_asm(text, str(src), origin, root)
    out.write_text(new)
    return sites


def compile_object(src: Path, obj: Path, target: Target, root: Path | None = None) -> list[Site]:
    asm = obj.with_suffix(".pv.s")
    sites = compile_to_asm(src, asm, target, root)
    _run([_tool("RINGVISOR_CC", "gcc"), "-m32", "-c", "-x", "assembler", str(asm), "-o", str(obj)])
    return sites


def build(target: Target, out: Path, *, runtime: Path | None = None,
          root: Path | None = None, report_path: Path | None = None) -> Report:
    """Compile and link ``target`` through pvcc into the ELF ``out``
    (atomically), adding the PV runtime sources under ``runtime`` (a guest
    source directory holding ``pv/``) unless None.  Objects (.o) among the
    sources are linked as they are."""
    report = Report()
    sources = list(target.sources)
    includes = list(target.include_dirs)
    if runtime is not None:
        sources += runtime_sources(runtime)
        includes.append(runtime / "include")
    tgt = Target(target.name, sources, target.linker_script, target.cflags, includes,
                 target.optimize)
    with tempfile.TemporaryDirectory(prefix="rv-pvcc-") as tmp:
        objs = []
        for i, src in enumerate(sources):
            if src.suffix == ".o":
                objs.append(str(src))
                continue
            obj = Path(tmp) / f"{i}-{src.stem}.o"
            report.sites += compile_object(src, obj, tgt, root)
            objs.append(str(obj))
        linked = Path(tmp) / "image.elf"
        cmd = [_tool("RINGVISOR_LD", "ld"), *LDFLAGS, "--strip-debug"]
        if target.linker_script:
            cmd += ["-T", str(target.linker_script)]
        _run(cmd + ["-o", str(linked), *objs])
        write_atomic(out, linked.read_bytes())
    if report_path is not None:
        write_atomic(report_path, report.text().encode())
    return report


# ---------------------------------------------------------------------------
# Command line: ringvisor pvcc
# ---------------------------------------------------------------------------

USAGE = """usage: ringvisor pvcc [-c | -S] [-o OUT] [-T LINKER_SCRIPT] [-I DIR] [-D NAME[=V]]
                      [-O LEVEL] [--no-runtime] [--report] [--report-file FILE]
                      [other gcc flags] SOURCE...

Compile guest C and assembly sources for ringvisor's para-virtual mode: every
privileged or sensitive instruction becomes a hypercall, a shared-info access
or a call into the PV runtime (docs/paravirt.md).  Without -c or -S the objects
are linked, with the PV runtime, into OUT (an ELF image).
  -S             write the rewritten assembly (one source, or OUT as a directory)
  -c             write objects
  --no-runtime   do not link the PV runtime (guests/pv)
  --report       print every rewritten site (file:line: instruction -> replacement)
  --report-file  write that list to FILE
"""


@dataclass
class PvccArgs:
    mode: str = "link"
    output: Path | None = None
    linker_script: Path | None = None
    include_dirs: list[Path] = field(default_factory=list)
    cflags: list[str] = field(default_factory=list)
    optimize: str = "-O2"
    runtime: bool = True
    report: bool = False
    report_file: Path | None = None
    sources: list[Path] = field(default_factory=list)


def parse_args(argv: list[str]) -> PvccArgs:
    from ringvisor.errors import ConfigError
    a = PvccArgs()
    it = iter(argv)

    def value(opt: str) -> str:
        try:
            return next(it)
        except StopIteration:
            raise ConfigError(f"pvcc: {opt} needs an argument") from None
    for arg in it:
        if arg in ("-h", "--help"):
            a.mode = "help"
        elif arg == "-c":
            a.mode = "compile"
        elif arg == "-S":
            a.mode = "asm"
        elif arg == "-o":
            a.output = Path(value(arg))
        elif arg == "-T":
            a.linker_script = Path(value(arg))
        elif arg.startswith("-T"):
            a.linker_script = Path(arg[2:])
        elif arg == "-I":
            a.include_dirs.append(Path(value(arg)))
        elif arg.startswith("-I"):
            a.include_dirs.append(Path(arg[2:]))
        elif arg.startswith("-O"):
            a.optimize = arg
        elif arg == "--no-runtime":
            a.runtime = False
        elif arg == "--report":
            a.report = True
        elif arg == "--report-file":
            a.report_file = Path(value(arg))
        elif arg in ("-D", "-U"):
            a.cflags += [arg, value(arg)]
        elif arg.startswith("-"):
            a.cflags.append(arg)
        else:
            a.sources.append(Path(arg))
    if a.mode != "help":
        if not a.sources:
            raise ConfigError("pvcc: no source files (see ringvisor pvcc --help)")
        for s in a.sources:
            if not s.is_file():
                raise ConfigError(f"pvcc: {s}: no such file")
            if s.suffix not in (".c", ".S", ".s", ".o"):
                raise ConfigError(f"pvcc: {s}: not a .c, .S, .s or .o file")
        if a.mode == "link" and a.output is None:
            a.output = Path("a.elf")
    return a


def main(argv: list[str]) -> int:
    """``ringvisor pvcc``: errors are RingvisorErrors (one line, status 2)."""
    from ringvisor.guests.build import SOURCE_DIR
    a = parse_args(argv)
    if a.mode == "help":
        print(USAGE, end="")
        return 0
    target = Target("pvcc", a.sources, a.linker_script, a.cflags, a.include_dirs, a.optimize)
    runtime = SOURCE_DIR if a.runtime else None
    if runtime is not None and not (runtime / RUNTIME_DIR).is_dir():
        raise BuildError(f"the PV runtime sources are not in {runtime / RUNTIME_DIR} "
                         "(use --no-runtime)")
    root = Path.cwd()
    report = Report()
    if a.mode == "link":
        report = build(target, a.output, runtime=runtime, root=root)
    else:
        outdir = None
        if len(a.sources) > 1 or a.output is None:
            outdir = a.output or Path(".")
            outdir.mkdir(parents=True, exist_ok=True)
        for src in a.sources:
            suffix = ".s" if a.mode == "asm" else ".o"
            out = (outdir / (src.stem + suffix)) if outdir is not None else a.output
            with tempfile.TemporaryDirectory(prefix="rv-pvcc-") as tmp:
                t = Path(tmp) / (src.stem + suffix)
                if a.mode == "asm":
                    report.sites += compile_to_asm(src, t, target, root)
                else:
                    report.sites += compile_object(src, t, target, root)
                write_atomic(out, t.read_bytes())
    if a.report_file is not None:
        write_atomic(a.report_file, report.text().encode())
    if a.report:
        sys.stdout.write(report.text())
        counts = ", ".join(f"{k} {v}" for k, v in sorted(report.counts().items()))
        print(f"pvcc: {len(report.sites)} sites rewritten" + (f" ({counts})" if counts else ""),
              file=sys.stderr)
    return 0
