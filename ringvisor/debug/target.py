"""The register file gdb is told about: gdb's i386 target description, and its packing.

gdb's i386 architecture needs the feature ``org.gnu.gdb.i386.core``: the sixteen
general and segment registers and the x87 state, in that order (gdb's
``features/i386/32bit-core.xml``); without ``org.gnu.gdb.i386.sse`` it assumes an
x87-only processor, which is what this PC is.  The control registers follow in a
feature of our own (gdb shows registers of features it does not know as they
are, and ``info registers cr0`` works as under QEMU).  The machine has no FPU,
so the x87 registers are reported *unavailable* (``xx`` in the ``g`` packet,
gdb prints ``<unavailable>``) rather than invented.
"""

from __future__ import annotations

from dataclasses import dataclass

from ringvisor.hw import state as S

def _fields(prefix: str, names: str) -> tuple[tuple[str, int], ...]:
    """(name, bit) of the flags ``hw.state`` names ``PREFIX + NAME`` (each fact named once)."""
    return tuple((n, getattr(S, prefix + n).bit_length() - 1) for n in names.split())


EFLAGS_FIELDS = _fields("", "CF PF AF ZF SF TF IF DF OF NT RF VM AC VIF VIP ID") + (("", 1),)
CR0_FIELDS = _fields("CR0_", "PE MP EM TS ET NE WP AM NW CD PG")
CR4_FIELDS = _fields("CR4_", "VME PVI TSD DE PSE PAE PGE OSFXSR")


@dataclass(frozen=True)
class Reg:
    name: str
    bits: int
    type: str
    view: str | None          # the GuestView register it shows (None: unavailable)
    group: str = ""


_CORE = ([Reg(n, 32, t, n) for n, t in (
    ("eax", "int32"), ("ecx", "int32"), ("edx", "int32"), ("ebx", "int32"),
    ("esp", "data_ptr"), ("ebp", "data_ptr"), ("esi", "int32"), ("edi", "int32"),
    ("eip", "code_ptr"), ("eflags", "i386_eflags"),
    ("cs", "int32"), ("ss", "int32"), ("ds", "int32"), ("es", "int32"), ("fs", "int32"),
    ("gs", "int32"))]
    + [Reg(f"st{i}", 80, "i387_ext", None) for i in range(8)]
    + [Reg(n, 32, "int", None, "float") for n in
       ("fctrl", "fstat", "ftag", "fiseg", "fioff", "foseg", "fooff", "fop")])
_SYSTEM = [Reg("cr0", 32, "i386_cr0", "cr0"), Reg("cr2", 32, "int32", "cr2"),
           Reg("cr3", 32, "int32", "cr3"), Reg("cr4", 32, "i386_cr4", "cr4")]
REGS: list[Reg] = _CORE + _SYSTEM


def _flags(name: str, fields) -> str:
    body = "".join(f'<field name="{n}" start="{b}" end="{b}"/>' for n, b in fields)
    return f'<flags id="{name}" size="4">{body}</flags>'


def _regs(regs: list[Reg], first: int) -> str:
    out = []
    for i, r in enumerate(regs):
        group = f' group="{r.group}"' if r.group else ""
        out.append(f'<reg name="{r.name}" bitsize="{r.bits}" type="{r.type}" '
                   f'regnum="{first + i}"{group}/>')
    return "".join(out)


TARGET_XML = (
    '<?xml version="1.0"?><!DOCTYPE target SYSTEM "gdb-target.dtd">'
    '<target version="1.0"><architecture>i386</architecture>'
    '<feature name="org.gnu.gdb.i386.core">' + _flags("i386_eflags", EFLAGS_FIELDS)
    + _regs(_CORE, 0) + '</feature>'
    '<feature name="org.ringvisor.i386.sys">' + _flags("i386_cr0", CR0_FIELDS)
    + _flags("i386_cr4", CR4_FIELDS) + _regs(_SYSTEM, len(_CORE)) + '</feature></target>')


def encode(reg: Reg, values: dict[str, int]) -> str:
    """One register as the ``g``/``p`` packets carry it: little-endian hex, or ``xx``s."""
    n = reg.bits // 8
    if reg.view is None:
        return "xx" * n
    return (values[reg.view] & ((1 << reg.bits) - 1)).to_bytes(n, "little").hex()


def decode_all(hexdata: str) -> list[int | None]:
    """The values a ``G`` packet carries, in REGS order (None: not given or ``xx``)."""
    out, pos = [], 0
    for reg in REGS:
        n = 2 * (reg.bits // 8)
        chunk = hexdata[pos:pos + n]
        pos += n
        if len(chunk) < n or "x" in chunk:
            out.append(None)
        else:
            out.append(int.from_bytes(bytes.fromhex(chunk), "little"))
    return out
