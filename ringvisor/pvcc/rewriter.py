"""pvcc's rewriter: AT&T assembly text in, para-virtualized assembly text out, one
statement at a time, with a ``Site`` for every instruction it rewrote.

It knows which instructions are privileged (iced-x86's CPL-0 list, and the moves
to and from control, debug and segment registers), parses their operands, keeps
track of where each line came from (gcc's ``.loc``/``.file`` and the
preprocessor's line markers) and puts the replacement sequence in place
(``sequences``); an instruction it cannot para-virtualize is a ``PvccError``
naming ``file:line``.  Apart from the compiler driver (``ringvisor.pvcc``)
because it is pure text processing, testable without a toolchain.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from ringvisor.guests.toolchain import BuildError

from .operands import ACC, REG32, gpr32, is_memory, reg_name, split_operands, split_statements
from .sequences import (seq_cli, seq_hlt, seq_invlpg, seq_iret, seq_load_ss, seq_lret, seq_ltr,
                        seq_popf, seq_port_io, seq_pushf, seq_read_cr, seq_runtime_call,
                        seq_runtime_value_call, seq_safe_halt, seq_sti, seq_write_cr,
                        seq_write_cr3)


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
            if n == 3 and self.origin == "c":
                return seq_runtime_value_call("pv_write_cr3", reg), \
                    "call pv_write_cr3 (mmuext_op(MMUEXT_NEW_BASEPTR))"
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
