"""C structures of the x86_32 ABI, described once as data.

A :class:`Struct` is a list of fields with C types; the i386 System V layout
rules give its offsets and size.  From the same description come Python
packing and unpacking and the C definition in the generated guest header
(``ringvisor.abi.header``); a test compiles that header with ``gcc -m32`` and
checks every offset with ``_Static_assert``.  This module imports nothing of
ringvisor: the ABI is a contract both sides depend on, not a part of either.
"""

from __future__ import annotations

import re
import struct as _struct
from dataclasses import dataclass
from typing import Union


@dataclass(frozen=True)
class Prim:
    """A C scalar type of the x86_32 ABI: its C spelling, size, :mod:`struct`
    format letter and alignment.  In a struct on i386 an 8-byte integer is
    aligned to 4 bytes only (System V i386 ABI); the tools' interfaces
    (domctl, sysctl) use ``uint64_aligned_t``, forced to 8, so that a 32-bit
    and a 64-bit caller lay them out alike."""

    c: str
    size: int
    fmt: str
    align: int = 0

    def __post_init__(self) -> None:
        if not self.align:
            object.__setattr__(self, "align", min(self.size, 4))


U8 = Prim("uint8_t", 1, "B")
I8 = Prim("int8_t", 1, "b")
CHAR = Prim("char", 1, "c")
U16 = Prim("uint16_t", 2, "H")
U32 = Prim("uint32_t", 4, "I")
I32 = Prim("int32_t", 4, "i")
INT = Prim("int", 4, "i")
UINT = Prim("unsigned int", 4, "I")
U64 = Prim("uint64_t", 8, "Q")
ULONG = Prim("unsigned long", 4, "I")          # x86_32: 4 bytes
XEN_ULONG = Prim("xen_ulong_t", 4, "I")         # unsigned long on x86
XEN_PFN = Prim("xen_pfn_t", 4, "I")             # unsigned long on x86
DOMID = Prim("domid_t", 2, "H")
PORT = Prim("evtchn_port_t", 4, "I")
PTR = Prim("uint32_t", 4, "I")                  # a guest pointer / guest handle (32-bit)
U64A = Prim("uint64_aligned_t", 8, "Q", 8)      # uint64_t __attribute__((aligned(8)))
I64A = Prim("int64_aligned_t", 8, "q", 8)
HANDLE64 = Prim("uint64_aligned_t", 8, "Q", 8)  # XEN_GUEST_HANDLE_64: a pointer in 8 aligned bytes
I16 = Prim("int16_t", 2, "h")
GREF = Prim("grant_ref_t", 4, "I")
GHANDLE = Prim("grant_handle_t", 4, "I")

# typedefs the header declares before the structures
TYPEDEFS = (("domid_t", "uint16_t"), ("evtchn_port_t", "uint32_t"),
            ("xen_pfn_t", "unsigned long"), ("xen_ulong_t", "unsigned long"),
            ("grant_ref_t", "uint32_t"), ("grant_handle_t", "uint32_t"),
            ("uint64_aligned_t", "uint64_t __attribute__((aligned(8)))"),
            ("int64_aligned_t", "int64_t __attribute__((aligned(8)))"))


@dataclass(frozen=True)
class Field:
    """One member: a scalar, a nested structure or union, or an array of
    either (``count`` elements)."""

    name: str
    type: Union[Prim, "Struct"]
    count: int | None = None
    comment: str = ""


class Struct:
    """A C structure (or union) of the x86_32 ABI, laid out as gcc -m32 does.

    ``inline`` types have no name of their own in C: they are written out in
    place where a field uses them (the anonymous unions of Xen's headers).
    """

    def __init__(self, name: str, fields: list[Field], *, union: bool = False,
                 inline: bool = False, comment: str = "") -> None:
        self.name = name
        self.fields = tuple(fields)
        self.union = union
        self.inline = inline
        self.comment = comment
        self.offsets: dict[str, int] = {}
        size = align = 0
        for f in self.fields:
            fsize = f.type.size * (f.count or 1)
            falign = f.type.align
            align = max(align, falign)
            if union:
                self.offsets[f.name] = 0
                size = max(size, fsize)
            else:
                size = (size + falign - 1) // falign * falign
                self.offsets[f.name] = size
                size += fsize
        self.align = max(align, 1)
        self.size = (size + self.align - 1) // self.align * self.align

    def __repr__(self) -> str:
        return f"<{'union' if self.union else 'struct'} {self.name}: {self.size} bytes>"

    @property
    def c_type(self) -> str:
        return f"{'union' if self.union else 'struct'} {self.name}"

    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(f"{self.name} has no field {name!r}")

    # -- paths: "vcpu_info[0].arch.cr2" ------------------------------------

    _STEP = re.compile(r"(\w+)(?:\[(\d+)\])?$")

    def resolve(self, path: str) -> tuple[int, Field, bool]:
        """``path`` -> (offset, field, indexed): the byte offset of the member a
        dotted path with optional ``[i]`` subscripts names."""
        struct_, off, field, indexed = self, 0, None, False
        for step in path.split("."):
            m = self._STEP.match(step)
            if struct_ is None or not m:
                raise KeyError(f"{path!r}: no member {step!r} there")
            field = struct_.field(m.group(1))
            off += struct_.offsets[field.name]
            indexed = m.group(2) is not None
            if indexed:
                i = int(m.group(2))
                if field.count is None or not 0 <= i < field.count:
                    raise KeyError(f"{path!r}: index {i} out of range for {field.name}")
                off += i * field.type.size
            whole = field.count is None or indexed
            struct_ = field.type if isinstance(field.type, Struct) and whole else None
        return off, field, indexed

    def offset(self, path: str) -> int:
        """Byte offset of a member: ``offset("arch.cr2")``."""
        return self.resolve(path)[0]

    def sizeof(self, path: str) -> int:
        """Size of a member (a whole array unless subscripted)."""
        _, f, indexed = self.resolve(path)
        return f.type.size * (1 if indexed or f.count is None else f.count)

    # -- values ------------------------------------------------------------

    def pack(self, values: dict | None = None, **kw) -> bytes:
        """The structure's bytes, little-endian; missing members are zero.
        Nested structures are dicts, arrays lists, ``char`` arrays bytes."""
        buf = bytearray(self.size)
        self._pack_into(buf, 0, {**(values or {}), **kw})
        return bytes(buf)

    def _pack_into(self, buf: bytearray, base: int, values: dict) -> None:
        for name, value in values.items():
            f = self.field(name)
            off = base + self.offsets[name]
            if f.count is None:
                _pack_one(f.type, buf, off, value)
            elif f.type is CHAR:
                data = bytes(value)
                if len(data) > f.count:
                    raise ValueError(f"{self.name}.{name}: {len(data)} bytes, room for {f.count}")
                buf[off:off + len(data)] = data
            else:
                if len(value) > f.count:
                    raise ValueError(f"{self.name}.{name}: {len(value)} elements, room for {f.count}")
                for i, v in enumerate(value):
                    _pack_one(f.type, buf, off + i * f.type.size, v)

    def unpack(self, data: bytes, base: int = 0) -> dict:
        """The members of the structure at ``data[base:]`` as a dict (every
        member of a union is decoded from the same bytes)."""
        if len(data) - base < self.size:
            raise ValueError(f"{self.name} needs {self.size} bytes, got {len(data) - base}")
        out = {}
        for f in self.fields:
            off = base + self.offsets[f.name]
            if f.count is None:
                out[f.name] = _unpack_one(f.type, data, off)
            elif f.type is CHAR:
                out[f.name] = bytes(data[off:off + f.count])
            else:
                out[f.name] = [_unpack_one(f.type, data, off + i * f.type.size)
                               for i in range(f.count)]
        return out

    # -- C -----------------------------------------------------------------

    def c_body(self, indent: str = "    ") -> list[str]:
        lines = []
        for f in self.fields:
            dim = f"[{f.count}]" if f.count is not None else ""
            note = f"  /* {f.comment} */" if f.comment else ""
            if isinstance(f.type, Struct) and f.type.inline:
                lines.append(f"{indent}{'union' if f.type.union else 'struct'} {{")
                lines += f.type.c_body(indent + "    ")
                lines.append(f"{indent}}} {f.name}{dim};{note}")
            else:
                ctype = f.type.c_type if isinstance(f.type, Struct) else f.type.c
                lines.append(f"{indent}{ctype} {f.name}{dim};{note}")
        return lines

    def c_definition(self) -> str:
        head = f"/* {self.comment} */\n" if self.comment else ""
        return (head + f"{self.c_type} {{\n" + "\n".join(self.c_body()) + "\n};\n"
                + f"typedef {self.c_type} {self.name}_t;\n")

    def member_paths(self) -> list[tuple[str, int]]:
        """(path, offset) of every member, descending into nested
        structures that are not arrays (what assembly code needs)."""
        out = []
        for f in self.fields:
            out.append((f.name, self.offsets[f.name]))
            if isinstance(f.type, Struct) and f.count is None:
                base = self.offsets[f.name]
                out += [(f"{f.name}.{p}", base + o) for p, o in f.type.member_paths()]
        return out


def _pack_one(t, buf: bytearray, off: int, value) -> None:
    if isinstance(t, Struct):
        t._pack_into(buf, off, value)
    else:
        _struct.pack_into("<" + t.fmt, buf, off, value)


def _unpack_one(t, data: bytes, off: int):
    if isinstance(t, Struct):
        return t.unpack(data, off)
    return _struct.unpack_from("<" + t.fmt, data, off)[0]
