"""Multiboot v1 loader: put a kernel, its modules and the boot information in RAM.

This does what GRUB (or QEMU's ``-kernel``) does for a Multiboot kernel, so a
guest image boots the same here and on ``qemu-system-i386 -kernel``.

The image
---------
The Multiboot header lies 32-bit aligned in the first 8192 bytes (QEMU looks
for it at offsets below 8144, and so does this loader):

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

Without bit 16 the image must be an ELF32 i386 executable, loaded as QEMU's
ELF loader does (hw/core/loader.c, include/hw/elf_ops.h): every PT_LOAD segment
with a non-zero p_memsz goes to its physical address p_paddr, p_memsz - p_filesz
bytes of it zeroed; segments may leave gaps and come in any order, but may not
overlap.  The entry point e_entry is a virtual address; if it lies in the
file-backed part of an executable segment whose p_vaddr differs from p_paddr
(a higher-half kernel linked with ``AT()``) it is translated to the physical
address.  The image's load range runs from the lowest to the highest segment
address (QEMU's elf_low/elf_high).

On a PC the range 640 KiB - 1 MiB holds video memory and ROMs, which a loader
cannot write: bytes of a segment that fall there are dropped, as they are on
QEMU (``ld -Ttext=0x100000`` puts a segment holding only the ELF headers at
0xFF000; it is "loaded" there and nothing is lost).  An entry point there, or a
segment outside RAM, is refused.

Memory layout (QEMU's hw/i386/multiboot.c and multiboot_dma.bin)
------------------------------------------------------------------
    0x9000          memory map (mmap_addr), the firmware's E820 map  } the low boot
    0x9500          Multiboot information structure (EBX)             } page
    0xC02B8         the option ROM's GDT (firmware.py)
    kernel          where the image says
    load + size     module list, module strings, the kernel command line and
                    the boot loader name, at the load address plus the image
                    size rounded up to a page
    next pages      each module, at the load address plus a page-aligned offset

QEMU writes the low boot page first and the kernel over it; where the kernel or
a module would cover the low boot page this loader moves the map and the
structure above the modules instead, so the kernel still finds them.

Boot information: flags 0x24F = mem (bit 0) | boot_device (1) | cmdline (2) |
mods (3) | mmap (6) | boot_loader_name (9).  mem_lower = 639 (INT 12h: below
SeaBIOS's EBDA), mem_upper = the RAM contiguous from 1 MiB in the memory map,
boot_device 0x8000FFFF (BIOS disk 0x80, no partition) and the boot loader name
"qemu", exactly as QEMU fills them (firmware.py has the map).  Like QEMU, the
kernel command line is ``"<image_name> <cmdline>"`` and a module's string is
its name followed by its arguments.

Machine state at entry (what QEMU's option ROM leaves; firmware.py)
---------------------------------------------------------------------
    EAX = 0x2BADB002, EBX = physical address of the information structure,
    ECX = the entry point, EDX, EDI, ESP, EFLAGS as firmware.py says
    CS  = 0x08: base 0, limit 0xFFFFFFFF, 32-bit code, execute/read
    DS = ES = FS = GS = SS = 0x10: base 0, limit 0xFFFFFFFF, 32-bit data, read/write
    GDTR = the option ROM's GDT; IDTR = base 0 limit 0x3FF (the real-mode IVT:
           the kernel must load its own IDT before enabling interrupts)
    CR0 = PE | ET (0x11): protected mode, paging off; CR3 = CR4 = 0; A20 enabled
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

from . import firmware

HEADER_MAGIC = 0x1BADB002
BOOTLOADER_MAGIC = 0x2BADB002
SEARCH_LIMIT = 8192
SEARCH_END = SEARCH_LIMIT - 48   # QEMU looks for the magic at offsets below 8144
# images this loader recognizes only to refuse them by name: a Multiboot2 header
# (8-byte aligned in the first 32 KiB, the Multiboot2 specification 3.1.1) and a Linux
# kernel's setup header ("HdrS" at 0x202, the Linux x86 boot protocol)
MB2_MAGIC, SEARCH_END_MB2 = 0xE85250D6, 32768
LINUX_HDRS = 0x202

HDR_PAGE_ALIGN = 1 << 0
HDR_MEMORY_INFO = 1 << 1
HDR_VIDEO_MODE = 1 << 2
HDR_AOUT_KLUDGE = 1 << 16
HDR_KNOWN_REQUIRED = HDR_PAGE_ALIGN | HDR_MEMORY_INFO | HDR_VIDEO_MODE

INFO_MEMORY = 1 << 0
INFO_BOOTDEV = 1 << 1
INFO_CMDLINE = 1 << 2
INFO_MODS = 1 << 3
INFO_MMAP = 1 << 6
INFO_LOADER_NAME = 1 << 9
INFO_SIZE = 88
MOD_SIZE = 16
MMAP_ENTRY = 24  # the 4-byte size field + base, length, type (size = 20)

# QEMU's loader names itself; this loader is indistinguishable from it
BOOTLOADER_NAME = "qemu"
BOOT_DEVICE = 0x8000FFFF   # BIOS drive 0x80, no partition (QEMU's fixed value)

# fixed low addresses, as QEMU's loader uses them
MMAP_ADDR = 0x9000
INFO_ADDR = 0x9500

# the ISA hole: video memory and ROMs on a PC; a loader cannot write there
HOLE_START, HOLE_END = 0xA0000, 0x100000

GDT_ENTRIES = firmware.OPTION_ROM_GDT
GDT_ADDR = firmware.OPTION_ROM_GDT_ADDR
CS_SELECTOR = 0x08
DS_SELECTOR = 0x10
GDT_LIMIT = 8 * len(GDT_ENTRIES) - 1
CR0_AT_ENTRY = 0x11  # PE | ET

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
    load_low: int = 0                      # the lowest load address (QEMU's elf_low / load_addr)
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
        # the code descriptor is not marked accessed (type 0xA), as in the ROM
        return {
            "eax": self.eax, "ebx": self.ebx,
            **firmware.entry_registers(self.entry, self.load_low, self.mem_upper),
            "eip": self.entry,
            "cr0": CR0_AT_ENTRY, "cr2": 0, "cr3": 0, "cr4": 0,
            "cs": seg(self.cs, 0xA), "ds": dict(data), "es": dict(data),
            "fs": dict(data), "gs": dict(data), "ss": dict(data),
            "ldt": seg(0, 0x2, limit=0xFFFF, s=0, db=0, g=0),
            "tr": seg(0, 0xB, limit=0xFFFF, s=0, db=0, g=0),
            "gdt": {"base": self.gdt_base, "limit": self.gdt_limit},
            "idt": dict(zip(("base", "limit"), firmware.REAL_MODE_IDT)),
            "a20": True,
        }


# -- the header ----------------------------------------------------------------------


def check_header(image: bytes, name: str) -> None:
    """Refuse in one line an image no Multiboot loader would boot (``_find_header``'s
    reasons), as the loader itself would."""
    _find_header(image, name)


def _find_header(image: bytes, name: str) -> int:
    """Offset of a valid Multiboot header."""
    bad_checksum = None
    for off in range(0, min(SEARCH_END, len(image) - 11), 4):
        magic, flags, checksum = struct.unpack_from("<III", image, off)
        if magic != HEADER_MAGIC:
            continue
        if (magic + flags + checksum) & 0xFFFFFFFF == 0:
            return off
        if bad_checksum is None:
            bad_checksum = off
    if bad_checksum is not None:
        raise ImageError(f"{name}: Multiboot header at offset {bad_checksum:#x} has a bad checksum")
    if image[LINUX_HDRS:LINUX_HDRS + 4] == b"HdrS":
        raise ImageError(f"{name}: a Linux kernel (x86 boot protocol): ringvisor boots Multiboot "
                         "kernels only")
    for off in range(0, min(SEARCH_END_MB2, len(image) - 3), 8):
        if struct.unpack_from("<I", image, off)[0] == MB2_MAGIC:
            raise ImageError(f"{name}: a Multiboot2 kernel (header at offset {off:#x}): ringvisor, "
                             "like qemu -kernel, boots Multiboot 1 kernels only")
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


def _in_hole(addr: int) -> bool:
    return HOLE_START <= addr < HOLE_END


def _check_segments(segments: list[Segment], entry: int, mem_size: int, name: str) -> None:
    for seg in segments:
        if seg.end > mem_size:
            raise ImageError(f"{name}: segment at {seg.addr:#x}-{seg.end:#x} lies beyond the end "
                             f"of RAM ({mem_size:#x})")
    ordered = sorted(segments, key=lambda s: s.addr)
    for a, b in zip(ordered, ordered[1:]):
        if b.addr < a.end:
            raise ImageError(f"{name}: segments at {a.addr:#x} and {b.addr:#x} overlap")
    if not any(s.addr <= entry < s.end for s in segments):
        raise ImageError(f"{name}: entry point {entry:#x} is outside the loaded image")
    if _in_hole(entry):
        raise ImageError(f"{name}: entry point {entry:#x} is in the ROM and video area "
                         f"({HOLE_START:#x}-{HOLE_END:#x}), which a loader cannot write")


def _write_ram(mem, addr: int, data: bytes) -> None:
    """Write ``data`` except the bytes that fall into the ROM and video area."""
    end = addr + len(data)
    for start, stop in ((addr, min(end, HOLE_START)), (max(addr, HOLE_END), end)):
        if start < stop:
            mem.write(start, data[start - addr:stop - addr])


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
    load_low = min(s.addr for s in segments)
    load_size = max(s.end for s in segments) - load_low

    # QEMU's buffer after the image (multiboot.c): the module list, the module
    # strings, the kernel command line and the loader name at the load address
    # plus the image size rounded up to a page, then each module at the next
    # page-aligned offset; this loader never puts them into the ISA hole
    kernel_cmdline = _cstring(f"{image_name} {cmdline}", "command line", name)
    loader_name = _cstring(BOOTLOADER_NAME, "boot loader name", name)
    mod_strings = [_cstring(f"{m[0]} {m[2]}" if m[2] else m[0], f"module {m[0]!r} string", name)
                   for m in modules]

    def place(offset: int, size: int) -> int:
        addr = load_low + offset
        if addr < HOLE_END and addr + size > HOLE_START:
            addr = HOLE_END
        return addr

    strings_size = (MOD_SIZE * len(modules) + sum(map(len, mod_strings))
                    + len(kernel_cmdline) + len(loader_name))
    mods_addr = place(_page_up(load_size), strings_size)
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
        start = place(_page_up(cursor - load_low), len(data))
        mod_ranges.append((start, start + len(data)))
        cursor = start + len(data)

    # the fixed low page, unless the kernel or the modules are in the way
    ram = firmware.e820_map(mem.size)
    low = (MMAP_ADDR, INFO_ADDR + INFO_SIZE)
    if low[1] > mem.size or _overlaps(*low, loaded + mod_ranges + boot_data):
        base = place(_page_up(cursor - load_low), low[1] - low[0])
        mmap_addr, info_addr = base, base + INFO_ADDR - MMAP_ADDR
        cursor = base + low[1] - low[0]
    else:
        mmap_addr, info_addr = MMAP_ADDR, INFO_ADDR
    gdt_addr, gdt_size = GDT_ADDR, 8 * len(GDT_ENTRIES)
    if gdt_addr + gdt_size > mem.size:       # a machine smaller than 1 MiB has no ROM area
        gdt_addr, cursor = cursor, cursor + gdt_size
    boot_data += [(mmap_addr, mmap_addr + MMAP_ENTRY * len(ram)), (info_addr, info_addr + INFO_SIZE),
                  (gdt_addr, gdt_addr + gdt_size)]

    if cursor > mem.size:
        raise ImageError(f"{name}: kernel, modules and boot information need {cursor:#x} bytes "
                         f"of RAM, the machine has {mem.size:#x}")

    # -- everything checked: write memory -------------------------------------------
    for seg in segments:
        _write_ram(mem, seg.addr, seg.data + bytes(seg.memsz - len(seg.data)))
    for (start, _end), (_mname, data, _args) in zip(mod_ranges, modules):
        mem.write(start, data)
    for i, ((start, end), saddr) in enumerate(zip(mod_ranges, mod_string_addrs)):
        mem.write(mods_addr + i * MOD_SIZE, struct.pack("<4I", start, end, saddr, 0))
    for addr, s in zip(mod_string_addrs, mod_strings):
        mem.write(addr, s)
    mem.write(cmdline_addr, kernel_cmdline)
    mem.write(loader_addr, loader_name)
    mem.write(mmap_addr, b"".join(struct.pack("<IQQI", MMAP_ENTRY - 4, b, n, t) for b, n, t in ram))
    mem.write(gdt_addr, b"".join(struct.pack("<Q", d) for d in GDT_ENTRIES))

    mem_lower = firmware.mem_lower_kib(ram)
    mem_upper = firmware.mem_upper_kib(ram)
    info = bytearray(INFO_SIZE)
    struct.pack_into("<IIII", info, 0, INFO_MEMORY | INFO_BOOTDEV | INFO_CMDLINE | INFO_MODS
                     | INFO_MMAP | INFO_LOADER_NAME, mem_lower, mem_upper, BOOT_DEVICE)
    struct.pack_into("<III", info, 16, cmdline_addr, len(modules), mods_addr)
    struct.pack_into("<II", info, 44, MMAP_ENTRY * len(ram), mmap_addr)
    struct.pack_into("<I", info, 64, loader_addr)
    mem.write(info_addr, bytes(info))

    return BootInfo(entry=entry, ebx=info_addr, loaded=loaded, load_low=load_low,
                    modules=mod_ranges, boot_data=boot_data, cmdline=cmdline, header_flags=flags,
                    format=fmt, mem_lower=mem_lower, mem_upper=mem_upper, gdt_base=gdt_addr)
