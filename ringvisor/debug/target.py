"""The register file gdb is told about: gdb's i386 target description, and its packing.

gdb's i386 architecture needs the feature ``org.gnu.gdb.i386.core``: the sixteen
general and segment registers and the x87 state, in that order (gdb's
``features/i386/32bit-core.xml``), then ``org.gnu.gdb.i386.sse``: XMM0-7 and
MXCSR (``32bit-sse.xml``) -- the machine's CPU has both.  The x87 registers are
shown as gdb expects them: ST(i) in stack order, the status word with TOP, the
full two-bit tag word (FSTENV's, SDM Vol. 1 8.1.7) computed from FXSAVE's
abridged tags.  gdb writes them as the guest's FXRSTOR would load them
(:func:`set_fpu_value`).  The control registers follow in a feature of our own (gdb shows registers of features it does not know as they
are, and ``info registers cr0`` works as under QEMU).
"""

from __future__ import annotations

from dataclasses import dataclass

from ringvisor.hw import state as S
from ringvisor.hw.x87 import abridge, full_tags, set_status_word, update_summary
from ringvisor.hw.x87control import MXCSR_MASK

def _fields(prefix: str, names: str) -> tuple[tuple[str, int], ...]:
    """(name, bit) of the flags ``hw.state`` names ``PREFIX + NAME`` (each fact named once)."""
    return tuple((n, getattr(S, prefix + n).bit_length() - 1) for n in names.split())


EFLAGS_FIELDS = _fields("", "CF PF AF ZF SF TF IF DF OF NT RF VM AC VIF VIP ID") + (("", 1),)
CR0_FIELDS = _fields("CR0_", "PE MP EM TS ET NE WP AM NW CD PG")
CR4_FIELDS = _fields("CR4_", "VME PVI TSD DE PSE PAE PGE OSFXSR")
# MXCSR's flags, masks and modes (SDM Vol. 1 Figure 10-3), as gdb's 32bit-sse.xml names them
MXCSR_FIELDS = tuple((n, b) for b, n in enumerate(
    "IE DE ZE OE UE PE DAZ IM DM ZM OM UM PM".split())) + (("FZ", 15),)


@dataclass(frozen=True)
class Reg:
    name: str
    bits: int
    type: str
    view: str                 # the value it shows (GuestView's, or fpu_values')
    group: str = ""
    fpu: bool = False         # an x87/SSE register (fpu_values, set_fpu_value)


_CORE = ([Reg(n, 32, t, n) for n, t in (
    ("eax", "int32"), ("ecx", "int32"), ("edx", "int32"), ("ebx", "int32"),
    ("esp", "data_ptr"), ("ebp", "data_ptr"), ("esi", "int32"), ("edi", "int32"),
    ("eip", "code_ptr"), ("eflags", "i386_eflags"),
    ("cs", "int32"), ("ss", "int32"), ("ds", "int32"), ("es", "int32"), ("fs", "int32"),
    ("gs", "int32"))]
    + [Reg(f"st{i}", 80, "i387_ext", f"st{i}", fpu=True) for i in range(8)]
    + [Reg(n, 32, "int", n, "float", fpu=True) for n in
       ("fctrl", "fstat", "ftag", "fiseg", "fioff", "foseg", "fooff", "fop")])
_SSE = ([Reg(f"xmm{i}", 128, "vec128", f"xmm{i}", fpu=True) for i in range(8)]
        + [Reg("mxcsr", 32, "i386_mxcsr", "mxcsr", "vector", fpu=True)])
_SYSTEM = [Reg("cr0", 32, "i386_cr0", "cr0"), Reg("cr2", 32, "int32", "cr2"),
           Reg("cr3", 32, "int32", "cr3"), Reg("cr4", 32, "i386_cr4", "cr4")]
REGS: list[Reg] = _CORE + _SSE + _SYSTEM


def fpu_values(fpu) -> dict[str, int]:
    """The x87 and SSE registers as gdb names them, from the FXSAVE-shaped state."""
    v = {f"st{i}": fpu.st[(fpu.top + i) & 7] for i in range(8)}
    v.update(fctrl=fpu.fcw, fstat=fpu.fsw | fpu.top << 11, ftag=full_tags(fpu),
             fiseg=fpu.fcs, fioff=fpu.fip, foseg=fpu.fds, fooff=fpu.fdp, fop=fpu.fop,
             mxcsr=fpu.mxcsr)
    v.update({f"xmm{i}": x for i, x in enumerate(fpu.xmm)})
    return v


# the widths of the x87 environment's fields (SDM Vol. 1 Figure 8-9, FXSAVE's Table 10-2)
_WIDTHS = {"fctrl": 16, "fstat": 16, "ftag": 16, "fiseg": 16, "fioff": 32, "foseg": 16,
           "fooff": 32, "fop": 11}


def set_fpu_value(fpu, name: str, value: int) -> None:
    """Write one register as gdb names it, as FXRSTOR (or FLDENV) would load it: ST(i)
    into the physical register TOP+i (its tag is left alone: ``ftag`` says which are
    empty), the status word with TOP, the full tag word abridged, the control word with
    its bit 6 reading as 1, ES and B following the flags the control word unmasks.  A
    value the register cannot hold is a ValueError (MXCSR's reserved bits: FXRSTOR's #GP)."""
    if name.startswith("st"):
        fpu.st[(fpu.top + int(name[2:])) & 7] = value
    elif name.startswith("xmm"):
        fpu.xmm[int(name[3:])] = value
    elif name == "mxcsr":
        if value & ~MXCSR_MASK:
            raise ValueError(f"mxcsr {value:#x}: reserved bits {value & ~MXCSR_MASK:#x}")
        fpu.mxcsr = value
    else:
        if value >> _WIDTHS[name]:
            raise ValueError(f"{name} holds {_WIDTHS[name]} bits, not {value:#x}")
        if name == "fctrl":
            fpu.fcw = value | 0x40
        elif name == "fstat":
            set_status_word(fpu, value)
        elif name == "ftag":
            fpu.ftw = abridge(value)
        else:
            setattr(fpu, {"fiseg": "fcs", "fioff": "fip", "foseg": "fds", "fooff": "fdp",
                          "fop": "fop"}[name], value)
        update_summary(fpu)


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
    '<feature name="org.gnu.gdb.i386.sse">'
    + "".join(f'<vector id="{i}" type="{t}" count="{n}"/>' for i, t, n in (
        ("v4f", "ieee_single", 4), ("v2d", "ieee_double", 2), ("v16i8", "int8", 16),
        ("v8i16", "int16", 8), ("v4i32", "int32", 4), ("v2i64", "int64", 2)))
    + '<union id="vec128">' + "".join(f'<field name="{n}" type="{t}"/>' for n, t in (
        ("v4_float", "v4f"), ("v2_double", "v2d"), ("v16_int8", "v16i8"),
        ("v8_int16", "v8i16"), ("v4_int32", "v4i32"), ("v2_int64", "v2i64"),
        ("uint128", "uint128"))) + '</union>'
    + _flags("i386_mxcsr", MXCSR_FIELDS) + _regs(_SSE, len(_CORE)) + '</feature>'
    '<feature name="org.ringvisor.i386.sys">' + _flags("i386_cr0", CR0_FIELDS)
    + _flags("i386_cr4", CR4_FIELDS) + _regs(_SYSTEM, len(_CORE) + len(_SSE))
    + '</feature></target>')


def encode(reg: Reg, values: dict[str, int]) -> str:
    """One register as the ``g``/``p`` packets carry it: little-endian hex."""
    n = reg.bits // 8
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
