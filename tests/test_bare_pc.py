"""The bare PC against ``qemu-system-i386 -kernel``: the firmware hand-off, ELF
loading and CPU corner cases, with test kernels of their own (no shared
runtime: their own entry, descriptor tables and paging; tests/hwguests/).

Every guest runs on QEMU and on both engines and must print the same lines and
exit the same way.  The expected lines come from QEMU 7.2 (SeaBIOS 1.16,
multiboot_dma.bin: read back by the guests themselves) or from the Intel SDM,
as each block says.
"""

from __future__ import annotations

import functools
import shutil
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from hwtests import PC_KERNELS, build_kernel, output_lines, run_platform
from ringvisor.tools.qemu import find_qemu

ENGINES = ("jit", "interp")


def _need_toolchain() -> None:
    if shutil.which("gcc") is None or shutil.which("ld") is None:
        pytest.skip("guest toolchain (gcc, ld) not installed")


@functools.lru_cache(maxsize=None)
def _run(name: str, platform: str) -> tuple[str, int]:
    k = PC_KERNELS[name]
    return run_platform(platform, build_kernel(name), k.cmdline, k.stdin, k.mem_mb,
                        k.module_specs(), serial_ports=k.serial_ports)


@pytest.mark.qemu
@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("name", list(PC_KERNELS))
def test_matches_qemu(name: str, engine: str) -> None:
    """The same serial output, byte for byte, and the same exit code as QEMU."""
    _need_toolchain()
    if find_qemu() is None:
        pytest.skip("qemu-system-i386 not installed")
    ours, ref = _run(name, engine), _run(name, "qemu")
    assert ours == ref
    assert ref[1] == 0, ref[0]


def _lines(name: str) -> list[str]:
    _need_toolchain()
    out, code = _run(name, "jit")
    assert code == 0, out
    return output_lines(out)


# --------------------------------------------------------------------------
# the firmware hand-off (tests/hwguests/handoff; ringvisor/hw/boot/firmware.py)
# --------------------------------------------------------------------------

def handoff_expected(mem_mb: int, serial_ports: int) -> dict[str, str]:
    """Lines by their first word, as QEMU 7.2 leaves the PC for ``-m mem_mb`` and
    ``serial_ports`` times ``-serial``."""
    com2 = serial_ports > 1
    ram = mem_mb << 20
    top = ram - 0x20000                  # SeaBIOS keeps the last 128 KiB for its tables
    mem_upper = (top - 0x100000) // 1024
    return {
        # 16550A after reset (QEMU serial_reset): IIR no interrupt, MCR OUT2,
        # LSR THRE|TEMT, MSR DCD|DSR|CTS, divisor 12 (9600 baud)
        "uart:": "uart: 00 00 01 00 08 60 b0 00 divisor=000c",
        # the option ROM's last instructions: ECX entry, EBX the info at 0x9500,
        # DX the fw_cfg data port over mem_upper's upper half, EDI the load
        # address 0x100000 byte-swapped, SeaBIOS's stack, PF from its last shl
        "eax=2badb002": "eax=2badb002 ebx=00009500 ecx=entry "
                        f"edx={(mem_upper & 0xffff0000) | 0x511:08x} esi=00000000 "
                        "edi=00001000 ebp=00000000 esp=00006f08 ",
        "eflags=00000006": "eflags=00000006 cs=00000008 ds=00000010 es=00000010 fs=00000010 "
                           "gs=00000010 ss=00000010 ",
        # CR0 = PE | ET; DR6/DR7 at their reset values (SDM Vol. 3 §17.2)
        "cr0=00000011": "cr0=00000011 cr2=00000000 cr3=00000000 cr4=00000000 dr6=ffff0ff0 "
                        "dr7=00000400 ",
        # the GDT inside the option ROM (at 0xC0000 without a VGA BIOS), the
        # real-mode IVT as IDT
        "gdtr.base=000c02b8": "gdtr.base=000c02b8 gdtr.limit=00000027 idtr.base=00000000 "
                              "idtr.limit=000003ff ldtr=00000000 tr=00000000 ",
        "gdt:": "gdt: 0000000000000000 00cf9a000000ffff 00cf93000000ffff 00009e000000ffff "
                "000092000000ffff",
        "flags=0000024f": f"flags=0000024f mem_lower=0000027f mem_upper={mem_upper:08x} "
                          "boot_device=8000ffff ",
        "syms|drives|config|apm|vbe=00000000": "syms|drives|config|apm|vbe=00000000 ",
        "mmap_addr=00009000": "mmap_addr=00009000 mmap_length=00000090 ",
        "mmap:": [f"mmap: size 14 base {b:016x} length {n:016x} type {t}" for b, n, t in (
            (0, 0x9FC00, 1), (0x9FC00, 0x400, 2), (0xF0000, 0x10000, 2),
            (0x100000, top - 0x100000, 1), (top, 0x20000, 2), (0xFFFC0000, 0x40000, 2))],
        # the BIOS data area: COM1 0x3f8 (COM2 0x2f8), EBDA segment 0x9fc0,
        # equipment 0x0204 (serial ports in bits 11:9, PS/2 mouse; the FPU bit is
        # checked against CPUID), 639 KiB base memory, the keyboard buffer at
        # 0x1e-0x3e, the disk control byte, the ports' timeouts, a 101-key keyboard
        "bda 4": ["bda 400:f803" + ("f802" if com2 else "0000") + "00" * 10 + "c09f"
                  + ("0404" if com2 else "0402") + "007f0200000000001e001e000000",
                "bda 420:" + "00" * 32, "bda 440:" + "00" * 32,
                "bda 460:00000000000000000000000000000000000000000000c00000000000"
                + ("0a0a" if com2 else "0a00") + "0000",
                "bda 480:1e003e0000000000000000000000000000000000000010000000000000000000",
                "bda 4a0:" + "00" * 32, "bda 4c0:" + "00" * 32, "bda 4e0:" + "00" * 32],
        "ebda=0009fc00": "ebda=0009fc00 ebda[0]=00000001 ebda[1..]=00000000 ",
        # SeaBIOS's serial probe leaves each port's THR-empty edge latched (IRQ 4, 3)
        "pic": f"pic port 0x20={0x18 if com2 else 0x10:08x} imr=000000b8 imr2=0000008e "
               f"irr={0x18 if com2 else 0x10:08x} irr2=00000000 "
               "isr=00000000 isr2=00000000 elcr=00000000 elcr2=0000000c ",
        # channel 0 mode 2 LSB/MSB (0x34); 1 and 2 never programmed (mode 3)
        "pit status:": "pit status: 34 06 06 port61 low=00000000 port92=00000002 "
               "i8042 status=0000001c ",
        "first": "first interrupt: vector=00000008 isr=00000001 ",
        "unmasked": "unmasked IRQ 4: vector=0000000c ",
        "RTC": "RTC periodic interrupt: vector=00000070 ",
    }


def _cmos_rows(mem_mb: int) -> list[str]:
    """CMOS 0x0a-0x7f as QEMU's pc_cmos_init leaves it (time and UIP masked)."""
    ram = mem_mb << 20
    c = [0] * 128
    c[0x0A], c[0x0B], c[0x0D] = 0x26, 0x02, 0x80
    c[0x14] = 0x04                         # PS/2 mouse (FPU bit masked)
    c[0x15], c[0x16] = 0x80, 0x02          # 640 KiB base memory
    ext = min((ram >> 10) - 1024, 0xFFFF)
    c[0x17], c[0x18] = ext & 0xFF, ext >> 8
    c[0x30], c[0x31] = ext & 0xFF, ext >> 8
    c[0x32] = c[0x37] = 0x20               # century (BCD), twice
    above16 = max(ram - (16 << 20), 0) >> 16
    c[0x34], c[0x35] = above16 & 0xFF, above16 >> 8
    c[0x38], c[0x3D] = 0x30, 0x12          # boot order "cad"
    return [f"cmos {row:02x}:" + "".join(f"{v:02x}" for v in c[row:row + 32])
            for row in range(0, 128, 32)]


@pytest.mark.parametrize("name", ["handoff", "handoff-129m-com2"])
def test_handoff(name: str) -> None:
    k = PC_KERNELS[name]
    lines = _lines(name)
    assert lines[0] == "handoff: start" and lines[-1] == "handoff: done"
    exp = handoff_expected(k.mem_mb, k.serial_ports)
    for key, want in exp.items():
        got = [l for l in lines if l.startswith(key)]
        assert got == (want if isinstance(want, list) else [want]), key
    assert [l for l in lines if l.startswith(("cmos 0", "cmos 2", "cmos 4", "cmos 6"))] == _cmos_rows(k.mem_mb)
    assert "bda equipment FPU bit agrees with CPUID: yes" in lines
    assert "cmos equipment FPU bit agrees with CPUID: yes" in lines
    assert "a20: enabled" in lines and "pit channel 0 counting" in lines
    # QEMU's buffer after the image: module list, module strings, command line,
    # "qemu"; modules page aligned after it
    image = build_kernel(name)
    specs = k.module_specs()
    strings = 16 * len(specs) + sum(len(s) + 1 for s in specs)
    cmdline = f"{image} {k.cmdline}"
    assert f"cmdline at end+{strings:04x}: {image.name} {k.cmdline}" in lines
    loader = strings + len(cmdline) + 1
    assert f"boot_loader_name at end+{loader:04x}: qemu" in lines
    mods = [l for l in lines if l.startswith("module:")]
    assert len(mods) == len(specs)
    offset = (loader + len("qemu") + 1 + 0xFFF) & ~0xFFF
    string_at = 16 * len(specs)
    for line, spec in zip(mods, specs):
        path = spec.split(" ")[0]
        data = Path(path).read_bytes()
        h = 2166136261
        for b in data:
            h = ((h ^ b) * 16777619) & 0xFFFFFFFF
        assert line == (f"module: end+{offset:05x} length {len(data):05x} fnv {h:08x} "
                        f"string at end+{string_at:04x} '{Path(path).name}{spec[len(path):]}' "
                        "reserved=00000000")
        offset = (offset + len(data) + 0xFFF) & ~0xFFF
        string_at += len(spec) + 1


# --------------------------------------------------------------------------
# ELF and a.out-kludge loading (tests/hwguests/elfload)
# --------------------------------------------------------------------------

ELF_KERNELS = ["elf-ttext", "elf-higher-half", "elf-segments", "aout-kludge"]


def _load_segments(name: str) -> list[dict]:
    with open(build_kernel(name), "rb") as f:
        return [dict(s.header) for s in ELFFile(f).iter_segments() if s["p_type"] == "PT_LOAD"]


def test_elf_layouts_are_what_they_claim() -> None:
    """The link layouts really exercise the loader's rules."""
    _need_toolchain()
    ttext = _load_segments("elf-ttext")
    # ld -Ttext=0x100000: the ELF and program headers alone in a segment at 0xff000
    assert ttext[0]["p_paddr"] == 0xFF000 and ttext[0]["p_offset"] == 0
    assert not ttext[0]["p_flags"] & 1 and len(ttext) >= 3
    hh = _load_segments("elf-higher-half")
    assert all(s["p_vaddr"] - s["p_paddr"] == 0xC0000000 for s in hh)
    segs = _load_segments("elf-segments")
    assert [s["p_paddr"] for s in segs] == [0x100000, 0x300000, 0x500000]
    assert segs[2]["p_filesz"] == 0 and segs[2]["p_memsz"] >= 0x40000


@pytest.mark.parametrize("name", ELF_KERNELS)
def test_elf_loading(name: str) -> None:
    lines = _lines(name)
    low = {"elf-ttext": 0xFF000, "aout-kludge": 0x100800}.get(name, 0x100000)
    assert lines[0] == "elfload: start" and lines[-1] == "elfload: done"
    # QEMU enters at e_entry, translated to its physical address in a segment
    # whose p_vaddr differs from p_paddr (elf_ops.h); EDI holds the lowest
    # load address byte-swapped (multiboot_dma.bin's DMA descriptor)
    assert lines[1].startswith("eax=2badb002 entered at=") and \
        lines[1].endswith("= physical _start=00000001 ")
    assert lines[2] == (f"load address (EDI byte-swapped)={low:08x} = lowest segment=00000001 ")
    # the boot information right after the image rounded up to a page, counted
    # from the load address (multiboot.c: TARGET_PAGE_ALIGN(mb_kernel_size))
    assert lines[3] == "mods_addr - after image=00000000 cmdline - after image=00000000 "
    assert lines[4] == "rodata arrived"
    words = 0x10000 if name == "elf-segments" else 0x400
    assert lines[5] == f"data sum=aaaaaaaa bss=00000000 bss words={words:08x} "



# --------------------------------------------------------------------------
# single-stepping (tests/hwguests/tfstep): traps listed as +EIP/ECX
# --------------------------------------------------------------------------

EXPECTED_TFSTEP = [
    "tfstep: start",
    # SDM Vol. 3 §17.3.1.4: a REP string instruction traps after each iteration,
    # EIP at the instruction while iterations remain; no trap after the POPF
    # that set TF; the NOP after it traps too
    "rep movsb ecx=3: traps=4 +0/2 +0/1 +2/0 +3/0 bs=1",
    "copied: 01 08 0f 00",
    # a zero count runs no iteration: the instruction completes and traps once
    "rep stosd ecx=0: traps=2 +2/0 +3/0 bs=1",
    # REPE stops at the first difference (the third byte): ECX 6 -> 3
    "repe cmpsb ecx=6: traps=4 +0/5 +0/4 +2/3 +5/3 bs=1",
    "zf after: 0",
    # 16-bit addressing counts in CX; ECX's upper half (7) is untouched
    "rep lodsw a16 cx=2: traps=3 +0/458753 +4/458752 +5/458752 bs=1",
    "ax=1312",
    # INT n clears TF through the gate: no trap in the handler; the IRET back
    # restores TF and the instruction after the INT is the next to trap
    "int 0x41: traps=3 +1/0 +4/0 +5/0 bs=1",
    "handler ran: 1, returned to +3",
    "int3: traps=1 +2/0 bs=1",
    "handler ran: 1, returned to +1",
    # a faulting instruction does not complete: no single-step trap for it
    "ud2: traps=1 +3/0 bs=1",
    "handler ran: 1 at +0",
    # a data breakpoint (DR0 write, dst[1]) traps after the iteration that
    # wrote it, with the REP instruction still in progress (§17.3.1.2)
    "rep movsb watchpoint: traps=1 +0/2 b0=1",
    "tfstep: done",
]

# --------------------------------------------------------------------------
# an instruction straddling two pages (tests/hwguests/straddle)
# --------------------------------------------------------------------------

EXPECTED_STRADDLE = [
    "straddle: start",
    # mov $imm32, %eax: two immediate bytes from page L1 (0x11 0x22), two from L2
    "first run: eax=0xa3a22211",
    "second run: eax=0xa3a22211",
    "third run: eax=0xa3a22211",
    # SDM Vol. 3 §4.10.4.1: after INVLPG, or a CR3 load (§4.10.4.1 too), the
    # fetch uses the new translation of either page
    "second page remapped, invlpg: eax=0xb3b22211",
    "first page remapped, invlpg: eax=0xb3b26655",
    "both back, invlpg: eax=0xa3a22211",
    "cr3 switched: eax=0xb3b22211",
    "cr3 switched back: eax=0xa3a22211",
    # the instruction's fetch from the unmapped page faults: #PF at the
    # instruction itself, CR2 the first byte it needs there, error code 0
    # (not present, read, supervisor)
    "second page unmapped: #14 err=0x0 eip=+0 cr2=0x401000",
    "mapped again: eax=0xb3b22211",
    "first page unmapped: #14 err=0x0 eip=+0 cr2=0x400ffd",
    "straddle: done",
]

# --------------------------------------------------------------------------
# CR0.ET (tests/hwguests/cr0et)
# --------------------------------------------------------------------------

EXPECTED_CR0ET = [
    "cr0et: start",
    # SDM Vol. 3 §2.5: ET is hardwired to 1; the loader leaves PE | ET
    "at entry: cr0=0x00000011 et=1 smsw=0x0011 smsw16=0x0011",
    "mov cr0 with ET clear: cr0=0x00000011 et=1 smsw=0x0011 smsw16=0x0011",
    "mov cr0 MP|EM|TS, ET clear: cr0=0x0000001f et=1 smsw=0x001f smsw16=0x001f",
    "clts: cr0=0x00000017 et=1 smsw=0x0017 smsw16=0x0017",
    # SDM Vol. 2 LMSW: loads PE, MP, EM, TS only, and cannot clear PE
    "lmsw 0x0001: cr0=0x00000011 et=1 smsw=0x0011 smsw16=0x0011",
    "lmsw 0x000f: cr0=0x0000001f et=1 smsw=0x001f smsw16=0x001f",
    "lmsw 0x0000: cr0=0x00000011 et=1 smsw=0x0011 smsw16=0x0011",
    "lmsw 0xffe0: cr0=0x00000011 et=1 smsw=0x0011 smsw16=0x0011",
    "mov cr0 = PE: cr0=0x00000011 et=1 smsw=0x0011 smsw16=0x0011",
    "paging on, WP: cr0=0x80010011 et=1 smsw=0x0011 smsw16=0x0011",
    "paging on, mov cr0 with ET clear: cr0=0x80010011 et=1 smsw=0x0011 smsw16=0x0011",
    "restored: cr0=0x00000011 et=1 smsw=0x0011 smsw16=0x0011",
    "cr0et: done",
]

# rmivt (tests/hwguests/rmivt): the real-mode IVT a Multiboot kernel finds, as QEMU's
# SeaBIOS leaves it (post.c ivt_init; the timer setup's entry_08), checked on QEMU
EXPECTED_RMIVT = [
    # IRQ 0 at F000:FEA5 and the default IRET at F000:FF53 (the IBM PC's fixed
    # entry points, which SeaBIOS keeps); INT 60h-66h and 79h zero
    "ivt 08=f000:fea5 20=f000:ff53 60=0000:0000 79=0000:0000",
    # the other PIC vectors (master 08h-0Fh, slave 70h-77h) have handlers that EOI
    "pic vectors 0f,77 vs 20: other other",
    # STI; HLT in real mode: IRQ 0 ends the HLT (SDM Vol. 3 §6.8.3: HLT resumes on
    # an interrupt), its handler counts the tick at 40:6C, calls INT 1Ch and sends EOI
    "sti;hlt: ticks +0001 int1c calls 0001 master isr 0000",
    "int 20h returned",
    "rmivt: done",
]


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("name,expected", [("tfstep", EXPECTED_TFSTEP),
                                           ("straddle", EXPECTED_STRADDLE),
                                           ("cr0et", EXPECTED_CR0ET),
                                           ("rmivt", EXPECTED_RMIVT)])
def test_cpu_guest(name: str, expected: list[str], engine: str) -> None:
    _need_toolchain()
    out, code = _run(name, engine)
    assert output_lines(out) == expected, out
    assert code == 0
