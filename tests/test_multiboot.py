"""The Multiboot v1 loader: real gcc-built kernels, synthesized images, fuzzing,
and a cross-check of the boot information against qemu-system-i386 -kernel."""

from __future__ import annotations

import re
import shutil
import struct
import subprocess

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ringvisor.errors import ImageError
from ringvisor.guests.toolchain import Target, build
from ringvisor.hw.boot.multiboot import (BOOTLOADER_MAGIC, GDT_ADDR, GDT_ENTRIES, HEADER_MAGIC,
                                         BootInfo, load_multiboot)
from ringvisor.hw.memory import PhysicalMemory

MiB = 1 << 20

# -- a kernel that reports its boot information on COM1 (used under QEMU) -------------

KERNEL_C = r"""
typedef unsigned int u32;
__attribute__((section(".multiboot"), aligned(4), used))
static const u32 mbh[3] = {0x1BADB002, 0x3, (u32)-(0x1BADB002 + 0x3)};
static inline void outb(unsigned short p, unsigned char v)
{ __asm__ volatile("outb %0,%1" :: "a"(v), "Nd"(p)); }
static inline void outl(unsigned short p, u32 v)
{ __asm__ volatile("outl %0,%1" :: "a"(v), "Nd"(p)); }
static void puts(const char *s) { while (*s) outb(0x3f8, *s++); }
static void hex(u32 v) { for (int i = 28; i >= 0; i -= 4) outb(0x3f8, "0123456789abcdef"[(v >> i) & 15]); }
static void kv(const char *k, u32 v) { puts(k); puts("="); hex(v); puts("\n"); }
static void ks(const char *k, const char *v) { puts(k); puts("="); puts(v); puts("|\n"); }
u32 bss_probe[256];
u32 data_word = 0x600DF00D;
void kmain(u32 magic, u32 *mbi, u32 cs, u32 ds)
{
    u32 nz = 0;
    kv("magic", magic); kv("mbi", (u32)mbi); kv("cs", cs); kv("ds", ds);
    kv("flags", mbi[0]); kv("mem_lower", mbi[1]); kv("mem_upper", mbi[2]);
    ks("cmdline", (char *)mbi[4]);
    kv("mods_count", mbi[5]); kv("mods_addr", mbi[6]);
    u32 *m = (u32 *)mbi[6];
    for (u32 i = 0; i < mbi[5]; i++) {
        kv("mod_start", m[4 * i]); kv("mod_end", m[4 * i + 1]); ks("mod_string", (char *)m[4 * i + 2]);
    }
    for (int i = 0; i < 256; i++) nz |= bss_probe[i];
    kv("bss", nz);
    outl(0xf4, 0x10);
}
"""

START_S = r"""
.globl _start
.text
_start:
    mov $stack_top, %esp
    xor %edx, %edx
    mov %ds, %dx
    push %edx
    mov %cs, %dx
    push %edx
    push %ebx
    push %eax
    call kmain
1:  hlt
    jmp 1b
.bss
.space 4096
stack_top:
"""

LINKER_LD = r"""
ENTRY(_start)
SECTIONS {
    . = 0x100000;
    .text : { *(.multiboot) *(.text*) }
    .rodata : { *(.rodata*) }
    .data : { *(.data*) }
    .bss : { *(COMMON) *(.bss*) }
}
"""

# A "higher half" kernel: linked at 0xC0100000, loaded at 1 MiB (AT()).
HIGHER_HALF_LD = r"""
ENTRY(_start)
SECTIONS {
    . = 0xC0100000;
    .text : AT(0x100000) { *(.multiboot) *(.text*) }
    .rodata : AT(ADDR(.rodata) - 0xC0000000) { *(.rodata*) }
    .data : AT(ADDR(.data) - 0xC0000000) { *(.data*) }
    .bss : AT(ADDR(.bss) - 0xC0000000) { *(COMMON) *(.bss*) }
}
"""

need_gcc = pytest.mark.skipif(shutil.which("gcc") is None or shutil.which("ld") is None,
                              reason="gcc/ld not installed")


def _build(tmp_path_factory, name: str, linker: str) -> bytes:
    d = tmp_path_factory.mktemp(name)
    (d / "k.c").write_text(KERNEL_C)
    (d / "start.S").write_text(START_S)
    (d / "link.ld").write_text(linker)
    out = build(Target(name, [d / "start.S", d / "k.c"], d / "link.ld"), d / f"{name}.elf")
    return out.read_bytes()


@pytest.fixture(scope="module")
def kernel(tmp_path_factory) -> bytes:
    if shutil.which("gcc") is None:
        pytest.skip("gcc not installed")
    return _build(tmp_path_factory, "mbk", LINKER_LD)


@pytest.fixture(scope="module")
def higher_half_kernel(tmp_path_factory) -> bytes:
    if shutil.which("gcc") is None:
        pytest.skip("gcc not installed")
    return _build(tmp_path_factory, "mbhh", HIGHER_HALF_LD)


# -- helpers -------------------------------------------------------------------------


def u32(mem: PhysicalMemory, addr: int) -> int:
    return mem.read32(addr)


def cstr(mem: PhysicalMemory, addr: int) -> str:
    out = bytearray()
    while (b := mem.read8(addr)) != 0:
        out.append(b)
        addr += 1
    return out.decode()


def elf_load_segments(image: bytes) -> list[tuple[int, int, int, int, int, int]]:
    """(offset, vaddr, paddr, filesz, memsz, flags) of PT_LOAD headers, via pyelftools."""
    from io import BytesIO

    from elftools.elf.elffile import ELFFile
    elf = ELFFile(BytesIO(image))
    return [(s["p_offset"], s["p_vaddr"], s["p_paddr"], s["p_filesz"], s["p_memsz"], s["p_flags"])
            for s in elf.iter_segments() if s["p_type"] == "PT_LOAD"]


def mb_header(flags: int, extra: bytes = b"") -> bytes:
    return struct.pack("<III", HEADER_MAGIC, flags, (-(HEADER_MAGIC + flags)) & 0xFFFFFFFF) + extra


def aout_image(load=0x100000, code=b"\xf4" * 64, bss=0x1000, entry=None, header_at=0,
               load_end=None, flags=0x10003) -> bytes:
    """A flat binary whose Multiboot header carries the load addresses."""
    size = header_at + 32 + len(code)
    fields = struct.pack("<5I", load + header_at, load,
                         load + size if load_end is None else load_end,
                         load + size + bss if bss is not None else 0,
                         load + header_at + 32 if entry is None else entry)
    return bytes(header_at) + mb_header(flags, fields) + code


def elf32(segments, entry, machine=3, cls=1, etype=2, prefix_header=True, mb_flags=0x3) -> bytes:
    """A minimal ELF32 with the given (vaddr, paddr, data, memsz, flags) segments."""
    phoff, phnum = 52, len(segments)
    body_off = (phoff + 32 * phnum + 15) & ~15
    header = mb_header(mb_flags) if prefix_header else b""
    data_off = body_off + len(header)
    phdrs, blobs, off = b"", b"", data_off
    for vaddr, paddr, data, memsz, pflags in segments:
        phdrs += struct.pack("<8I", 1, off, vaddr, paddr, len(data), memsz, pflags, 0x1000)
        blobs += data
        off += len(data)
    ident = b"\x7fELF" + bytes([cls, 1, 1]) + bytes(9)
    ehdr = ident + struct.pack("<HHIIIIIHHHHHH", etype, machine, 1, entry, phoff, 0, 0, 52,
                               32, phnum, 40, 0, 0)
    image = ehdr + phdrs
    image += bytes(body_off - len(image)) + header + blobs
    return image


def fresh(size=32 * MiB, fill=0xAA) -> PhysicalMemory:
    mem = PhysicalMemory(size)
    if fill:
        mem.ram[:] = bytes([fill]) * size
    return mem


# =============================================================================
# gcc-built ELF kernels
# =============================================================================


@need_gcc
class TestElfKernel:
    def test_segments_entry_and_registers(self, kernel):
        mem = fresh()
        info = load_multiboot(mem, kernel, "console=ttyS0")
        assert isinstance(info, BootInfo) and info.format == "elf"
        segs = elf_load_segments(kernel)
        for off, vaddr, paddr, filesz, memsz, _ in segs:
            assert mem.read(paddr, filesz) == kernel[off:off + filesz]
            assert mem.read(paddr + filesz, memsz - filesz) == bytes(memsz - filesz)  # bss zeroed
        assert info.loaded == [(p, p + m) for _, _, p, _, m, _ in segs]
        from io import BytesIO

        from elftools.elf.elffile import ELFFile
        assert info.entry == ELFFile(BytesIO(kernel)).header["e_entry"]
        assert info.eax == BOOTLOADER_MAGIC == 0x2BADB002

    def test_boot_information_structure(self, kernel):
        mem = fresh(32 * MiB)
        info = load_multiboot(mem, kernel, "console=ttyS0 quiet", image_name="guest.elf")
        mbi = info.ebx
        flags = u32(mem, mbi)
        # QEMU's values (read back on QEMU 7.2 with -m 32): flags 0x24f,
        # 639 KiB below SeaBIOS's EBDA, RAM up to 128 KiB below the top
        assert flags == (1 << 0) | (1 << 1) | (1 << 2) | (1 << 3) | (1 << 6) | (1 << 9) == 0x24F
        assert u32(mem, mbi + 4) == 639
        assert u32(mem, mbi + 8) == 0x7B80
        assert u32(mem, mbi + 12) == 0x8000FFFF
        assert cstr(mem, u32(mem, mbi + 16)) == "guest.elf console=ttyS0 quiet"
        assert u32(mem, mbi + 20) == 0  # no modules
        assert cstr(mem, u32(mem, mbi + 64)) == "qemu"
        length, addr = u32(mem, mbi + 44), u32(mem, mbi + 48)
        entries = []
        p = addr
        while p < addr + length:
            size, base, ln, typ = struct.unpack("<IQQI", mem.read(p, 24))
            entries.append((base, ln, typ))
            p += size + 4
        assert entries == [(0, 0x9FC00, 1), (0x9FC00, 0x400, 2), (0xF0000, 0x10000, 2),
                           (MiB, 0x1EE0000, 1), (0x1FE0000, 0x20000, 2),
                           (0xFFFC0000, 0x40000, 2)]
        # nothing of the boot information overlaps the kernel
        for s, e in info.boot_data:
            assert all(e <= ks or s >= ke for ks, ke in info.loaded)

    def test_modules_page_aligned_after_kernel(self, kernel):
        mem = fresh()
        mods = [("initrd.img", bytes(range(256)) * 20, "root=/dev/ram"),
                ("empty", b"", ""), ("third", b"\x01\x02\x03", "x")]
        info = load_multiboot(mem, kernel, "", mods)
        mbi = info.ebx
        assert u32(mem, mbi + 20) == 3
        table = u32(mem, mbi + 24)
        kernel_end = max(e for _, e in info.loaded)
        prev_end = kernel_end
        for i, (name, data, args) in enumerate(mods):
            start, end, string, zero = struct.unpack("<4I", mem.read(table + 16 * i, 16))
            assert start % 4096 == 0 and start >= prev_end
            assert end - start == len(data)
            assert mem.read(start, len(data)) == data
            assert cstr(mem, string) == (f"{name} {args}" if args else name)
            assert zero == 0
            assert (start, end) == info.modules[i]
            prev_end = end
        ranges = info.ranges()
        for (s1, e1), (s2, e2) in zip(ranges, ranges[1:]):
            assert e1 <= s2, "loader placed two things on top of each other"

    def test_higher_half_entry_is_translated(self, higher_half_kernel):
        img = higher_half_kernel
        segs = elf_load_segments(img)
        assert all(v != p for _, v, p, *_ in segs)
        mem = fresh()
        info = load_multiboot(mem, img)
        assert 0x100000 <= info.entry < 0x200000  # physical, like QEMU
        e_entry = struct.unpack_from("<I", img, 24)[0]
        assert e_entry >= 0xC0100000
        off, vaddr, paddr, filesz, _, _ = next(s for s in segs if s[5] & 1)
        assert info.entry == e_entry - vaddr + paddr
        assert mem.read(info.entry, 8) == img[off + e_entry - vaddr:off + e_entry - vaddr + 8]

    def test_gdt_and_machine_state_agree(self, kernel):
        mem = fresh()
        info = load_multiboot(mem, kernel)
        state = info.machine_state()
        assert (info.cs, info.ds) == (0x08, 0x10)  # QEMU's multiboot.S selectors
        gdt = state["gdt"]
        assert gdt["limit"] == 8 * len(GDT_ENTRIES) - 1
        for seg, sel in (("cs", 0x08), ("ds", 0x10), ("ss", 0x10), ("es", 0x10),
                         ("fs", 0x10), ("gs", 0x10)):
            desc = struct.unpack("<Q", mem.read(gdt["base"] + sel, 8))[0]
            base = ((desc >> 16) & 0xFFFFFF) | ((desc >> 56) << 24)
            limit = (desc & 0xFFFF) | (((desc >> 48) & 0xF) << 16)
            if desc >> 55 & 1:
                limit = (limit << 12) | 0xFFF
            cache = state[seg]
            assert cache["selector"] == sel
            assert (cache["base"], cache["limit"]) == (base, limit) == (0, 0xFFFFFFFF)
            assert cache["type"] == (desc >> 40) & 0xF
            assert cache["s"] == 1 and cache["dpl"] == 0 and cache["db"] == 1 and cache["present"]
        assert state["cs"]["type"] & 0x8  # code
        assert not state["ds"]["type"] & 0x8 and state["ds"]["type"] & 0x2  # writable data
        assert state["cr0"] & 1 and not state["cr0"] & 0x80000000
        assert not state["eflags"] & (1 << 9) and not state["eflags"] & (1 << 17)
        assert (state["eax"], state["ebx"], state["eip"]) == (0x2BADB002, info.ebx, info.entry)
        assert state["a20"] is True

    def test_memory_untouched_on_error(self, kernel):
        mem = fresh(2 * MiB)
        before = bytes(mem.ram)
        with pytest.raises(ImageError):
            load_multiboot(mem, kernel, "", [("big", bytes(3 * MiB), "")])
        assert bytes(mem.ram) == before


# =============================================================================
# the a.out kludge and synthesized images
# =============================================================================


class TestAoutKludge:
    def test_flat_binary(self):
        code = bytes(range(200))
        img = aout_image(code=code, bss=0x2000, header_at=64)
        mem = fresh()
        info = load_multiboot(mem, img)
        assert info.format == "aout"
        assert mem.read(0x100000, len(img)) == img
        assert mem.read(0x100000 + len(img), 0x2000) == bytes(0x2000)
        assert info.entry == 0x100000 + 64 + 32
        assert info.loaded == [(0x100000, 0x100000 + len(img) + 0x2000)]

    def test_header_addr_offset_selects_the_file_start(self):
        # the header sits 0x40 into the file but header_addr says it is at
        # load_addr + 0x10: loading starts 0x30 bytes into the file
        body = bytes(range(256))
        fields = struct.pack("<5I", 0x200010, 0x200000, 0, 0, 0x200020)
        img = b"J" * 0x40 + mb_header(0x10000, fields) + body
        mem = fresh()
        info = load_multiboot(mem, img)
        assert mem.read(0x200000, len(img) - 0x30) == img[0x30:]
        assert info.entry == 0x200020

    def test_load_end_limits_and_bss_zeroes(self):
        img = aout_image(code=b"\x90" * 100, load_end=0x100000 + 40, bss=None)
        fields = bytearray(img)
        struct.pack_into("<I", fields, 24, 0x100000 + 0x1000)  # bss_end
        mem = fresh()
        info = load_multiboot(mem, bytes(fields))
        assert mem.read(0x100000, 40) == bytes(fields[:40])
        assert mem.read(0x100000 + 40, 0x1000 - 40) == bytes(0x1000 - 40)
        assert info.loaded == [(0x100000, 0x101000)]

    def test_aout_takes_precedence_over_elf(self):
        base = elf32([(0x100000, 0x100000, b"\xf4" * 16, 16, 5)], 0x100000, mb_flags=0x10000)
        # fill in the a.out fields of the header that elf32() put after the phdrs
        off = base.index(struct.pack("<I", HEADER_MAGIC))
        fields = struct.pack("<5I", 0x300000 + off, 0x300000, 0, 0, 0x300000)
        img = base[:off + 12] + fields + base[off + 12 + 20:]
        mem = fresh()
        info = load_multiboot(mem, img)
        assert info.format == "aout" and info.entry == 0x300000
        assert mem.read(0x300000, len(img)) == img

    def test_video_flag_is_ignored_gracefully(self):
        img = aout_image(flags=0x10007, code=bytes(16) + b"\xf4" * 64)
        info = load_multiboot(fresh(), img)
        assert info.header_flags & 4

    def test_kernel_over_the_low_boot_page_moves_it(self):
        img = aout_image(load=0x8000, code=b"\xf4" * 0x3000, bss=0)
        mem = fresh()
        info = load_multiboot(mem, img)
        k0, k1 = info.loaded[0]
        assert k0 <= 0x9000 < k1
        assert not any(s < k1 and k0 < e for s, e in info.boot_data)
        assert u32(mem, info.ebx + 4) == 639  # a valid structure where EBX points

    def test_low_kernel_data_stays_out_of_the_isa_hole(self):
        img = aout_image(load=0x90000, code=b"\xf4" * 0xF000, bss=0)
        mem = fresh()
        info = load_multiboot(mem, img, "", [("m", b"x" * 100, "")])
        for s, e in info.modules + info.boot_data:
            if s == GDT_ADDR:
                continue   # the option ROM's GDT: in the ROM area, as on QEMU
            assert e <= 0xA0000 or s >= 0x100000


# =============================================================================
# errors: every malformed input is one clear ImageError
# =============================================================================

GOOD_ELF = elf32([(0x100000, 0x100000, b"\xf4" * 64, 0x1000, 5)], 0x100000)


@pytest.mark.parametrize("image, message", [
    (b"", "no Multiboot header"),
    (b"\x7fELF" + bytes(100), "without a Multiboot header"),
    (bytes(0x202) + b"HdrS" + bytes(0x1000), "a Linux kernel (x86 boot protocol)"),
    (bytes(0x2000) + struct.pack("<IIII", 0xE85250D6, 0, 16, (-(0xE85250D6 + 16)) & 0xFFFFFFFF)
     + bytes(64), "a Multiboot2 kernel (header at offset 0x2000)"),
    (b"\x7fELF" + bytes(0x3C) + struct.pack("<I", 0xE85250D6) + bytes(64), "a Multiboot2 kernel"),
    (struct.pack("<III", HEADER_MAGIC, 0, 1) + bytes(64), "bad checksum"),
    (mb_header(0x3 | 0x10) + bytes(64), "unsupported features"),
    (mb_header(0x3) + bytes(64), "not an ELF file"),
    (elf32([(0x100000, 0x100000, b"x", 1, 5)], 0x100000, cls=2), "64-bit"),
    (elf32([(0x100000, 0x100000, b"x", 1, 5)], 0x100000, machine=62), "x86-64"),
    (elf32([(0x100000, 0x100000, b"x", 1, 5)], 0x100000, machine=40), "machine 40"),
    (elf32([(0x100000, 0x100000, b"x", 1, 5)], 0x100000, etype=3), "not an executable"),
    (elf32([], 0x100000), "no program headers"),
    (elf32([(0x100000, 0x100000, b"xy", 1, 5)], 0x100000), "p_filesz"),
    (elf32([(0x100000, 0x100000, b"x", 0x1000, 5)], 0x500000), "entry point"),
    (elf32([(0x1F00000, 0x1F00000, b"x", 0x200000, 5)], 0x1F00000), "beyond the end of RAM"),
    (elf32([(0xB8000, 0xB8000, b"x", 0x10, 5)], 0xB8000), "ROM and video area"),
    (elf32([(0x100000, 0x100000, b"x", 0x2000, 5), (0x101000, 0x101000, b"y", 0x10, 5)],
           0x100000), "overlap"),
    (GOOD_ELF[:-10], "truncated"),
    (aout_image()[:20], "cut short"),
    (aout_image(load_end=0x100000 + 0x10000), "truncated"),
    (aout_image(load_end=0x0F0000), "not above load_addr"),
    (aout_image(entry=0x400000), "entry point"),
])
def test_malformed_images(image, message):
    with pytest.raises(ImageError) as e:
        load_multiboot(fresh(32 * MiB, fill=0), image, image_name="bad.img")
    text = str(e.value)
    assert message in text and text.startswith("bad.img: ") and "\n" not in text


def test_header_addr_below_load_addr():
    img = bytearray(aout_image())
    struct.pack_into("<I", img, 12, 0x0FFFFF)
    with pytest.raises(ImageError, match="header_addr"):
        load_multiboot(fresh(fill=0), bytes(img))


def test_bss_end_below_load_end():
    img = bytearray(aout_image(bss=0))
    struct.pack_into("<I", img, 24, 0x100004)
    with pytest.raises(ImageError, match="bss_end_addr"):
        load_multiboot(fresh(fill=0), bytes(img))


def test_image_larger_than_memory():
    with pytest.raises(ImageError, match="larger than"):
        load_multiboot(PhysicalMemory(64 * 1024), GOOD_ELF + bytes(64 * 1024))


def test_modules_that_do_not_fit():
    with pytest.raises(ImageError, match="need"):
        load_multiboot(PhysicalMemory(2 * MiB), GOOD_ELF, "", [("m", bytes(MiB), "")])


def test_nul_in_command_line():
    with pytest.raises(ImageError, match="NUL"):
        load_multiboot(fresh(fill=0), GOOD_ELF, "a\0b")


def test_tiny_machine():
    """32 KiB of RAM: the low boot page at 0x9000 does not exist, so the boot
    data goes after the kernel; with 16 KiB nothing fits."""
    img = aout_image(load=0x1000, code=b"\xf4" * 0x100, bss=0)
    mem = PhysicalMemory(32 * 1024)
    info = load_multiboot(mem, img)
    assert all(e <= mem.size for _, e in info.ranges())
    assert u32(mem, info.ebx + 4) == 32   # the RAM there is
    with pytest.raises(ImageError, match="need"):
        load_multiboot(PhysicalMemory(16 * 1024), aout_image(load=0x1000, code=bytes(0x2800), bss=0))


def test_header_beyond_8192_bytes_is_not_seen():
    img = bytes(8192) + aout_image()
    with pytest.raises(ImageError, match="no Multiboot header"):
        load_multiboot(fresh(fill=0), img)


# =============================================================================
# fuzzing: ImageError or success, nothing else, for any bytes
# =============================================================================

FUZZ_MEM = PhysicalMemory(2 * MiB)
SEEDS = [GOOD_ELF, aout_image(), aout_image(header_at=128, bss=0x100),
         elf32([(0xC0100000, 0x100000, b"\xf4" * 32, 0x800, 5),
                (0xC0101000, 0x101000, b"d" * 16, 0x100, 6)], 0xC0100004)]


def _load_or_image_error(data: bytes) -> None:
    try:
        info = load_multiboot(FUZZ_MEM, data, "fuzz", [("m", b"mod", "a")])
    except ImageError as e:
        assert "\n" not in str(e)
        return
    for s, e in info.ranges():
        assert 0 <= s <= e <= FUZZ_MEM.size


fuzz_settings = settings(max_examples=300, deadline=None,
                         suppress_health_check=[HealthCheck.too_slow])


@fuzz_settings
@given(st.binary(max_size=2048))
def test_fuzz_random_bytes(data):
    _load_or_image_error(data)


@fuzz_settings
@given(st.sampled_from(SEEDS), st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)),
                                        max_size=8), st.integers(0, 600))
def test_fuzz_mutated_images(seed, flips, cut):
    data = bytearray(seed)
    for pos, val in flips:
        if pos < len(data):
            data[pos] = val
    if cut:
        data = data[:len(data) - cut] if cut < len(data) else data
    _load_or_image_error(bytes(data))


@fuzz_settings
@given(st.integers(0, 0xFFFFFFFF), st.lists(st.integers(0, 0xFFFFFFFF), min_size=5, max_size=5),
       st.binary(max_size=256))
def test_fuzz_valid_header_random_fields(flags, fields, tail):
    """A header with a correct checksum and arbitrary flags and addresses."""
    _load_or_image_error(mb_header(flags, struct.pack("<5I", *fields)) + tail)


@fuzz_settings
@given(st.lists(st.tuples(st.integers(0, 0xFFFFFFFF), st.integers(0, 0xFFFFFFFF),
                          st.integers(0, 0x3000), st.integers(0, 0x3FFFFF), st.integers(0, 7)),
                max_size=4),
       st.integers(0, 0xFFFFFFFF))
def test_fuzz_elf_program_headers(segs, entry):
    data = elf32([(v, p, b"\x90" * n, m, f) for v, p, n, m, f in segs], entry)
    _load_or_image_error(data)


# =============================================================================
# cross-check with the reference hardware
# =============================================================================


@pytest.mark.qemu
@need_gcc
@pytest.mark.skipif(shutil.which("qemu-system-i386") is None, reason="qemu-system-i386 not installed")
def test_boot_information_matches_qemu(kernel, tmp_path):
    """Boot the same kernel, command line and modules under QEMU's -kernel and
    compare what the kernel sees with what our loader wrote."""
    kpath = tmp_path / "k.elf"
    kpath.write_bytes(kernel)
    m1, m2 = tmp_path / "m1.bin", tmp_path / "m2.bin"
    m1.write_bytes(bytes(range(256)) * 21)
    m2.write_bytes(b"second module")
    proc = subprocess.run(
        ["qemu-system-i386", "-kernel", str(kpath), "-append", "hello  world",
         "-initrd", f"{m1} arg1 arg2,{m2}", "-m", "32", "-display", "none",
         "-serial", "stdio", "-monitor", "none", "-no-reboot",
         "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"],
        capture_output=True, timeout=60)
    assert proc.returncode == 0x21, proc.stderr.decode()
    text = proc.stdout.decode()
    q: dict[str, list[str]] = {}
    for k, v in re.findall(r"^(\w+)=(.*?)\|?$", text, re.M):
        q.setdefault(k, []).append(v)

    mem = fresh(32 * MiB)
    info = load_multiboot(mem, kernel, "hello  world",
                          [(str(m1), m1.read_bytes(), "arg1 arg2"), (str(m2), m2.read_bytes(), "")],
                          image_name=str(kpath))
    mbi = info.ebx
    hexv = lambda k: int(q[k][0], 16)  # noqa: E731
    assert hexv("magic") == info.eax
    assert hexv("mbi") == mbi  # QEMU also puts the structure at 0x9500
    assert (hexv("cs"), hexv("ds")) == (info.cs, info.ds)
    assert q["cmdline"][0] == cstr(mem, u32(mem, mbi + 16))
    assert hexv("mods_count") == 2 and hexv("mods_addr") == u32(mem, mbi + 24)
    ours = [(f"{s:08x}", f"{e:08x}") for s, e in info.modules]
    assert list(zip(q["mod_start"], q["mod_end"])) == ours  # same placement as QEMU
    table = u32(mem, mbi + 24)
    assert q["mod_string"] == [cstr(mem, u32(mem, table + 16 * i + 8)) for i in range(2)]
    assert hexv("bss") == 0
    assert hexv("flags") == u32(mem, mbi) == 0x24F
    assert hexv("mem_lower") == u32(mem, mbi + 4) == 639
    assert hexv("mem_upper") == u32(mem, mbi + 8)
