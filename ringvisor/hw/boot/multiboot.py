"""Multiboot v1 loader: put a kernel, its modules and the boot information in RAM.

This does what GRUB (or QEMU's ``-kernel``) does for a Multiboot kernel, so a
guest image boots the same here and on ``qemu-system-i386 -kernel``.

The image
---------
The Multiboot header lies 32-bit aligned in the first 8192 bytes:

    offset  field            used when
    0       magic 0x1BADB002
    4       flags            bits 0-15 "required": 0 page-align modules, 1 memory
                             information, 2 video mode (ignored, as QEMU does);
                             any other required bit -> the image is refused
    8       checksum         magic + flags + checksum == 0 (mod 2**32)
    12      header_addr      flags bit 16 (the "a.out kludge"): these fields say
    16      load_addr        where to load the file, and take precedence over an
    20      load_end_addr    ELF header (the spec and QEMU agree).  The file from
    24      bss_end_addr     offset  header_offset - (header_addr - load_addr)
    28      entry_addr       goes to load_addr, up to load_end_addr (0 = to EOF),
                             then zeros up to bss_end_addr (0 = no bss)
    32..44  video mode       flags bit 2 (ignored)

Without bit 16 the image must be an ELF32 i386 executable: every PT_LOAD
segment goes to its physical address p_paddr, p_memsz - p_filesz bytes of it
zeroed.  The entry point e_entry is a virtual address; if it lies in an
executable segment whose p_vaddr differs from p_paddr it is translated to the
physical address, as QEMU's ELF loader does (hw/core/loader, elf_ops.h).

Memory layout (mirrors QEMU's hw/i386/multiboot.c)
---------------------------------------------------
    0x9000          memory map (mmap_addr)               \\ the low boot page;
    0x9500          Multiboot information structure (EBX)  } moved above the
    0x9600          a flat GDT, like QEMU's option ROM's   / kernel if it overlaps
    kernel          where the image says (outside 640 KiB - 1 MiB, inside RAM)
    page after it   module list, command lines, boot loader name
    next pages      each module, page aligned (satisfies flags bit 0 always)

Boot information: flags = mem (bit 0) | cmdline (2) | mods (3) | mmap (6) |
boot_loader_name (9).  mem_lower = 640 and the map says RAM below 640 KiB,
reserved 640 KiB - 1 MiB, RAM above (this PC has no BIOS and so no EBDA:
QEMU reports 639 and a reserved EBDA).  No boot device is claimed (we have no
disk).  Like QEMU, the kernel command line is ``"<image_name> <cmdline>"`` and
a module's string is its name followed by its arguments.

Machine state at entry (the spec, and what QEMU's multiboot.S leaves)
--------------------------------------------------------------------
    EAX = 0x2BADB002, EBX = physical address of the information structure
    CS  = 0x08: base 0, limit 0xFFFFFFFF, 32-bit code, execute/read
    DS = ES = FS = GS = SS = 0x10: base 0, limit 0xFFFFFFFF, 32-bit data, read/write
    GDTR = the GDT above (5 entries as QEMU's: null, code32, data32, code16,
           data16); IDTR = base 0 limit 0xFFFF (its reset value, as under QEMU;
           the kernel must load its own before enabling interrupts)
    CR0 = PE | ET (0x11): protected mode, paging off; CR3 = CR4 = 0
    EFLAGS = 0x2: IF = 0, VM = 0; A20 enabled
    ESP: undefined by the spec; we point it at the low boot page (0x9000) when
         the 4 KiB below it are free, so a careless kernel still has a stack
:meth:`BootInfo.machine_state` gives all of that as plain data, with segment
descriptor caches in the field names of KVM's ``struct kvm_segment``.

Every malformed input raises :class:`ringvisor.errors.ImageError` with one
line naming the problem, before anything is written to memory.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from ringvisor.errors import ImageError
from ringvisor.hw.memory import PAGE_SIZE, PhysicalMemory

HEADER_MAGIC = 0x1BADB002
BOOTLOADER_MAGIC = 0x2BADB002
SEARCH_LIMIT = 8192

HDR_PAGE_ALIGN = 1 << 0
HDR_MEMORY_INFO = 1 << 1
HDR_VIDEO_MODE = 1 << 2
HDR_AOUT_KLUDGE = 1 << 16
HDR_KNOWN_REQUIRED = HDR_PAGE_ALIGN | HDR_MEMORY_INFO | HDR_VIDEO_MODE

INFO_MEMORY = 1 << 0
INFO_CMDLINE = 1 << 2
INFO_MODS = 1 << 3
INFO_MMAP = 1 << 6
INFO_LOADER_NAME = 1 << 9
INFO_SIZE = 88
MOD_SIZE = 16
MMAP_ENTRY = 24  # the 4-byte size field + base, length, type (size = 20)

BOOTLOADER_NAME = "ringvisor"

# fixed low addresses, as QEMU's loader uses them
MMAP_ADDR = 0x9000
INFO_ADDR = 0x9500
GDT_ADDR = 0x9600

# the ISA hole: VGA memory and ROMs on a PC, reserved in the memory map
HOLE_START, HOLE_END = 0xA0000, 0x100000

# the flat GDT of QEMU's multiboot option ROM; 0x08 and 0x10 have the accessed
# bit set because the loader (CPU) has loaded them
GDT_ENTRIES = (
    0x0000000000000000,
    0x00CF9B000000FFFF,  # 0x08 code: base 0, 4 GiB, 32-bit, execute/read, DPL 0
    0x00CF93000000FFFF,  # 0x10 data: base 0, 4 GiB, 32-bit, read/write, DPL 0
    0x00009E000000FFFF,  # 0x18 code: 16-bit, 64 KiB, conforming execute/read
    0x000092000000FFFF,  # 0x20 data: 16-bit, 64 KiB, read/write
)
CS_SELECTOR = 0x08
DS_SELECTOR = 0x10
GDT_LIMIT = 8 * len(GDT_ENTRIES) - 1
CR0_AT_ENTRY = 0x11  # PE | ET
EFLAGS_AT_ENTRY = 0x2

ELF_MAGIC = b"\x7fELF"
EM_386, EM_X86_64 = 3, 62
ET_EXEC = 2
PT_LOAD = 1
PF_X = 1


@dataclass
class Segment:
    """A piece of the kernel image: ``data`` at ``addr``, zero-filled to ``memsz``."""

    addr: int
    data: bytes
    memsz: int

    @property
    def end(self) -> int:
        return self.addr + self.memsz


@dataclass
class BootInfo:
    """Where everything went, and the register values the kernel must start with."""

    entry: int
    ebx: int
    loaded: list[tuple[int, int]]          # kernel [start, end) ranges
    modules: list[tuple[int, int]] = field(default_factory=list)
    boot_data: list[tuple[int, int]] = field(default_factory=list)  # mmap, info, GDT, strings
    cmdline: str = ""
    header_flags: int = 0
    format: str = "elf"                    # "elf" or "aout" (the a.out kludge)
    mem_lower: int = 0
    mem_upper: int = 0
    gdt_base: int = GDT_ADDR
    gdt_limit: int = GDT_LIMIT
    cs: int = CS_SELECTOR
    ds: int = DS_SELECTOR
    esp: int = 0
    eax: int = BOOTLOADER_MAGIC

    def ranges(self) -> list[tuple[int, int]]:
        """Every [start, end) range the loader wrote."""
        return sorted(self.loaded + self.modules + self.boot_data)

    def machine_state(self) -> dict:
        """The CPU state at the kernel's entry, as plain data (see module doc)."""
        def seg(selector: int, type_: int, base: int = 0, limit: int = 0xFFFFFFFF,
                s: int = 1, db: int = 1, g: int = 1) -> dict:
            return {"selector": selector, "base": base, "limit": limit, "type": type_,
                    "present": 1, "dpl": 0, "db": db, "s": s, "l": 0, "g": g,
                    "avl": 0, "unusable": 0}

        data = seg(self.ds, 0x3)
        return {
            "eax": self.eax, "ebx": self.ebx, "ecx": 0, "edx": 0,
            "esi": 0, "edi": 0, "ebp": 0, "esp": self.esp,
            "eip": self.entry, "eflags": EFLAGS_AT_ENTRY,
            "cr0": CR0_AT_ENTRY, "cr2": 0, "cr3": 0, "cr4": 0,
            "cs": seg(self.cs, 0xB), "ds": dict(data), "es": dict(data),
            "fs": dict(data), "gs": dict(data), "ss": dict(data),
            "ldt": seg(0, 0x2, limit=0xFFFF, s=0, db=0, g=0),
            "tr": seg(0, 0xB, limit=0xFFFF, s=0, db=0, g=0),
            "gdt": {"base": self.gdt_base, "limit": self.gdt_limit},
            "idt": {"base": 0, "limit": 0xFFFF},
            "a20": True,
        }


# -- the header ----------------------------------------------------------------------


def _find_header(image: bytes, name: str) -> int:
    """Offset of a valid Multiboot header."""
    limit = min(len(image), SEARCH_LIMIT)
    bad_checksum = None
    for off in range(0, limit - 11, 4):
        magic, flags, checksum = struct.unpack_from("<III", image, off)
        if magic != HEADER_MAGIC:
            continue
        if (magic + flags + checksum) & 0xFFFFFFFF == 0:
            return off
        if bad_checksum is None:
            bad_checksum = off
    if bad_checksum is not None:
        raise ImageError(f"{name}: Multiboot header at offset {bad_checksum:#x} has a bad checksum")
    if image[:4] == ELF_MAGIC:
        raise ImageError(f"{name}: ELF file without a Multiboot header in its first 8192 bytes")
    raise ImageError(f"{name}: not a Multiboot kernel (no Multiboot header in the first 8192 bytes)")


def _aout_segments(image: bytes, off: int, name: str) -> tuple[list[Segment], int]:
    """Segments and entry point from the a.out kludge fields of the header."""
    if off + 32 > SEARCH_LIMIT or off + 32 > len(image):
        raise ImageError(f"{name}: Multiboot header at offset {off:#x} is cut short "
                         "(the address fields of flags bit 16 are missing)")
    header_addr, load_addr, load_end, bss_end, entry = struct.unpack_from("<5I", image, off + 12)
    if header_addr < load_addr:
        raise ImageError(f"{name}: Multiboot header_addr {header_addr:#x} is below load_addr {load_addr:#x}")
    file_start = off - (header_addr - load_addr)
    if file_start < 0:
        raise ImageError(f"{name}: Multiboot header_addr - load_addr ({header_addr - load_addr:#x}) "
                         f"reaches before the start of the file")
    if load_end:
        if load_end <= load_addr:
            raise ImageError(f"{name}: Multiboot load_end_addr {load_end:#x} is not above "
                             f"load_addr {load_addr:#x}")
        load_size = load_end - load_addr
        if file_start + load_size > len(image):
            raise ImageError(f"{name}: truncated: load_end_addr asks for {load_size} bytes from file "
                             f"offset {file_start:#x}, the file has {len(image)}")
    else:
        load_size = len(image) - file_start
    memsz = load_size
    if bss_end:
        if bss_end < load_addr + load_size:
            raise ImageError(f"{name}: Multiboot bss_end_addr {bss_end:#x} is below the end of the "
                             f"loaded data {load_addr + load_size:#x}")
        memsz = bss_end - load_addr
    if memsz == 0:
        raise ImageError(f"{name}: the Multiboot address fields describe an empty image")
    return [Segment(load_addr, image[file_start:file_start + load_size], memsz)], entry


def _elf_segments(image: bytes, name: str) -> tuple[list[Segment], int]:
    """PT_LOAD segments (at their physical addresses) and the physical entry point."""
    if image[:4] != ELF_MAGIC:
        raise ImageError(f"{name}: not an ELF file, and its Multiboot header has no load "
                         "addresses (flags bit 16 clear)")
    if len(image) < 52:
        raise ImageError(f"{name}: truncated ELF header ({len(image)} bytes)")
    ei_class, ei_data = image[4], image[5]
    if ei_class == 2:
        raise ImageError(f"{name}: 64-bit ELF; a Multiboot kernel must be a 32-bit (ELFCLASS32) image")
    if ei_class != 1:
        raise ImageError(f"{name}: bad ELF class {ei_class}")
    if ei_data != 1:
        raise ImageError(f"{name}: ELF is not little-endian")
    (e_type, e_machine, _version, e_entry, e_phoff, _shoff, _flags, _ehsize,
     e_phentsize, e_phnum) = struct.unpack_from("<HHIIIIIHHH", image, 16)
    if e_machine != EM_386:
        what = "x86-64" if e_machine == EM_X86_64 else f"machine {e_machine}"
        raise ImageError(f"{name}: ELF for {what}, not i386 (EM_386)")
    if e_type != ET_EXEC:
        raise ImageError(f"{name}: ELF type {e_type} is not an executable (ET_EXEC)")
    if e_phnum == 0:
        raise ImageError(f"{name}: ELF has no program headers")
    if e_phentsize < 32:
        raise ImageError(f"{name}: ELF program header size {e_phentsize} is too small")
    if e_phoff + e_phnum * e_phentsize > len(image):
        raise ImageError(f"{name}: truncated: ELF program headers end beyond the file")
    segments: list[Segment] = []
    entry = e_entry
    for i in range(e_phnum):
        (p_type, p_offset, p_vaddr, p_paddr, p_filesz, p_memsz, p_flags,
         _align) = struct.unpack_from("<8I", image, e_phoff + i * e_phentsize)
        if p_type != PT_LOAD:
            continue
        if p_filesz > p_memsz:
            raise ImageError(f"{name}: ELF segment {i} has p_filesz {p_filesz:#x} > p_memsz {p_memsz:#x}")
        if p_offset + p_filesz > len(image):
            raise ImageError(f"{name}: truncated: ELF segment {i} ends at file offset "
                             f"{p_offset + p_filesz:#x}, the file has {len(image):#x} bytes")
        if p_memsz == 0:
            continue
        if (p_vaddr != p_paddr and p_flags & PF_X
                and p_vaddr <= e_entry < p_vaddr + p_filesz):
            entry = e_entry - p_vaddr + p_paddr
        segments.append(Segment(p_paddr, image[p_offset:p_offset + p_filesz], p_memsz))
    if not segments:
        raise ImageError(f"{name}: ELF has no loadable (PT_LOAD) segments")
    return segments, entry


def _check_segments(segments: list[Segment], entry: int, mem_size: int, name: str) -> None:
    for seg in segments:
        where = f"{name}: segment at {seg.addr:#x}-{seg.end:#x}"
        if seg.end > mem_size:
            raise ImageError(f"{where} lies beyond the end of RAM ({mem_size:#x})")
        if seg.addr < HOLE_END and seg.end > HOLE_START:
            raise ImageError(f"{where} overlaps the reserved 640 KiB-1 MiB area")
    ordered = sorted(segments, key=lambda s: s.addr)
    for a, b in zip(ordered, ordered[1:]):
        if b.addr < a.end:
            raise ImageError(f"{name}: segments at {a.addr:#x} and {b.addr:#x} overlap")
    if not any(s.addr <= entry < s.end for s in segments):
        raise ImageError(f"{name}: entry point {entry:#x} is outside the loaded image")


# -- boot information -----------------------------------------------------------------


def _cstring(text: str, what: str, name: str) -> bytes:
    raw = text.encode("utf-8", "surrogateescape")
    if b"\0" in raw:
        raise ImageError(f"{name}: the {what} contains a NUL character")
    return raw + b"\0"


def _page_up(addr: int) -> int:
    return (addr + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)


def _overlaps(start: int, end: int, ranges: list[tuple[int, int]]) -> bool:
    return any(start < e and s < end for s, e in ranges)


def _memory_map(mem_size: int) -> list[tuple[int, int, int]]:
    """(base, length, type) entries: 1 = RAM, 2 = reserved."""
    entries = [(0, min(mem_size, HOLE_START), 1), (HOLE_START, HOLE_END - HOLE_START, 2)]
    if mem_size > HOLE_END:
        entries.append((HOLE_END, mem_size - HOLE_END, 1))
    return entries


class _Window:
    """The first ``size`` bytes of physical memory, as the loader sees them."""

    def __init__(self, mem: PhysicalMemory, size: int) -> None:
        self.size = size
        self.write = mem.write


def load_multiboot(mem: PhysicalMemory, image: bytes, cmdline: str = "",
                   modules: list[tuple[str, bytes, str]] = [],  # noqa: B006 (never mutated)
                   image_name: str = "kernel", ram_size: int | None = None) -> BootInfo:
    """Load a Multiboot v1 ``image`` (and ``modules``: (name, data, args)) into ``mem``.

    ``ram_size`` limits the RAM the kernel is told about and may be loaded into
    (a monitor keeps the rest of the machine's memory for itself).
    """
    name = image_name
    size = mem.size if ram_size is None else min(ram_size, mem.size)
    mem = _Window(mem, size)
    image = bytes(image)
    if len(image) > mem.size:
        raise ImageError(f"{name}: image of {len(image)} bytes is larger than the machine's "
                         f"{mem.size} bytes of RAM")
    off = _find_header(image, name)
    flags = struct.unpack_from("<I", image, off + 4)[0]
    unknown = flags & 0xFFFF & ~HDR_KNOWN_REQUIRED
    if unknown:
        raise ImageError(f"{name}: Multiboot header requires unsupported features "
                         f"(flags {unknown:#06x})")
    if flags & HDR_AOUT_KLUDGE:
        segments, entry = _aout_segments(image, off, name)
        fmt = "aout"
    else:
        segments, entry = _elf_segments(image, name)
        fmt = "elf"
    _check_segments(segments, entry, mem.size, name)
    loaded = [(s.addr, s.end) for s in segments]

    # strings and the module list go on the page after the kernel, then the
    # modules, each page aligned (QEMU's layout); never into the ISA hole
    kernel_cmdline = _cstring(f"{image_name} {cmdline}", "command line", name)
    loader_name = _cstring(BOOTLOADER_NAME, "boot loader name", name)
    mod_strings = [_cstring(f"{m[0]} {m[2]}" if m[2] else m[0], f"module {m[0]!r} string", name)
                   for m in modules]

    def place(addr: int, size: int) -> int:
        if addr < HOLE_END and addr + size > HOLE_START:
            addr = HOLE_END
        return addr

    strings_size = (MOD_SIZE * len(modules) + sum(map(len, mod_strings))
                    + len(kernel_cmdline) + len(loader_name))
    area = place(_page_up(max(e for _, e in loaded)), strings_size)
    mods_addr = area
    cursor = mods_addr + MOD_SIZE * len(modules)
    mod_string_addrs = []
    for s in mod_strings:
        mod_string_addrs.append(cursor)
        cursor += len(s)
    cmdline_addr = cursor
    loader_addr = cmdline_addr + len(kernel_cmdline)
    cursor = loader_addr + len(loader_name)
    boot_data = [(mods_addr, cursor)]
    mod_ranges = []
    for _mname, data, _args in modules:
        start = place(_page_up(cursor), len(data))
        mod_ranges.append((start, start + len(data)))
        cursor = start + max(len(data), 1)

    # the fixed low page, unless the kernel or the modules are in the way
    mmap = _memory_map(mem.size)
    low = (MMAP_ADDR, GDT_ADDR + 8 * len(GDT_ENTRIES))
    if low[1] > mem.size or _overlaps(*low, loaded + mod_ranges + boot_data):
        base = place(_page_up(cursor), low[1] - low[0])
        mmap_addr, info_addr, gdt_addr = (base + a - MMAP_ADDR for a in (MMAP_ADDR, INFO_ADDR, GDT_ADDR))
        cursor = base + low[1] - low[0]
        esp = 0
    else:
        mmap_addr, info_addr, gdt_addr = MMAP_ADDR, INFO_ADDR, GDT_ADDR
        esp = MMAP_ADDR if not _overlaps(MMAP_ADDR - PAGE_SIZE, MMAP_ADDR, loaded + mod_ranges) else 0
    boot_data.append((mmap_addr, gdt_addr + 8 * len(GDT_ENTRIES)))

    if cursor > mem.size:
        raise ImageError(f"{name}: kernel, modules and boot information need {cursor:#x} bytes "
                         f"of RAM, the machine has {mem.size:#x}")

    # -- everything checked: write memory -------------------------------------------
    for seg in segments:
        mem.write(seg.addr, seg.data)
        if seg.memsz > len(seg.data):
            mem.write(seg.addr + len(seg.data), bytes(seg.memsz - len(seg.data)))
    for (start, _end), (_mname, data, _args) in zip(mod_ranges, modules):
        mem.write(start, data)
    for i, ((start, end), saddr) in enumerate(zip(mod_ranges, mod_string_addrs)):
        mem.write(mods_addr + i * MOD_SIZE, struct.pack("<4I", start, end, saddr, 0))
    for addr, s in zip(mod_string_addrs, mod_strings):
        mem.write(addr, s)
    mem.write(cmdline_addr, kernel_cmdline)
    mem.write(loader_addr, loader_name)
    mem.write(mmap_addr, b"".join(struct.pack("<IQQI", MMAP_ENTRY - 4, b, n, t) for b, n, t in mmap))
    mem.write(gdt_addr, b"".join(struct.pack("<Q", d) for d in GDT_ENTRIES))

    mem_lower = min(mem.size, HOLE_START) // 1024
    mem_upper = max(0, min(mem.size, 1 << 32) - HOLE_END) // 1024
    info = bytearray(INFO_SIZE)
    struct.pack_into("<III", info, 0, INFO_MEMORY | INFO_CMDLINE | INFO_MODS | INFO_MMAP
                     | INFO_LOADER_NAME, mem_lower, mem_upper)
    struct.pack_into("<III", info, 16, cmdline_addr, len(modules), mods_addr)
    struct.pack_into("<II", info, 44, MMAP_ENTRY * len(mmap), mmap_addr)
    struct.pack_into("<I", info, 64, loader_addr)
    mem.write(info_addr, bytes(info))

    return BootInfo(entry=entry, ebx=info_addr, loaded=loaded, modules=mod_ranges,
                    boot_data=boot_data, cmdline=cmdline, header_flags=flags, format=fmt,
                    mem_lower=mem_lower, mem_upper=mem_upper, gdt_base=gdt_addr,
                    esp=esp)
