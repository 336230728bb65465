"""AT&T operands as pvcc reads them: the general registers by name and size, a
statement split into its operands and a line into its statements, memory
operands (and how one moves when the sequence pushed something first).

The bottom of pvcc: the replacement sequences (``sequences``) and the rewriter
(``rewriter``) both read operands this way.
"""

from __future__ import annotations

import re

REG32 = ("eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi")
REG16 = {"ax": "eax", "cx": "ecx", "dx": "edx", "bx": "ebx", "sp": "esp", "bp": "ebp",
         "si": "esi", "di": "edi"}
REG8 = {"al": "eax", "cl": "ecx", "dl": "edx", "bl": "ebx", "ah": "eax", "ch": "ecx",
        "dh": "edx", "bh": "ebx"}

ACC = {1: "%al", 2: "%ax", 4: "%eax"}        # the accumulator by operand size


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
