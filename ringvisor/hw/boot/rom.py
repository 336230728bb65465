"""Booting from a firmware ROM image, as ``qemu-system-i386 -bios ROM`` does.

The image is mapped twice (QEMU hw/i386/x86-common.c ``x86_bios_rom_init``):
whole, read-only, just below 4 GiB, where the CPU's first fetch after RESET
lands (CS base FFFF0000 + EIP FFF0 = FFFFFFF0, SDM Vol. 3 §9.1.4); and its last
128 KiB (all of it, if smaller) at the top of the first megabyte, where the code
runs once its first far jump has loaded CS with a real-mode segment (F000 for a
64 KiB ROM, E000 for 128 KiB).  The low copy is in RAM (a PC's shadowed BIOS);
QEMU's PAM leaves it read-only at RESET, so a ROM that writes into its own low
copy sees its write here and not there.

QEMU takes any multiple of 64 KiB; so does this, up to 16 MiB.
"""

from __future__ import annotations

from ringvisor.errors import ImageError

from ..memory import PhysicalMemory

ROM_UNIT = 64 << 10
ROM_MAX = 16 << 20
ISA_BIOS_MAX = 128 << 10          # the part of the ROM mapped below 1 MiB
FOUR_GIB = 1 << 32


class RomRegion:
    """The ROM at the top of the 4 GiB space: reads see the image, writes are dropped."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def mmio_read(self, offset: int, size: int) -> int:
        return int.from_bytes(self.data[offset:offset + size].ljust(size, b"\xff"), "little")

    def mmio_write(self, offset: int, size: int, value: int) -> None:
        pass


def check_rom(image: bytes, name: str = "ROM") -> None:
    """One clear reason if ``image`` cannot be a BIOS ROM."""
    n = len(image)
    if n == 0 or n % ROM_UNIT or n > ROM_MAX:
        raise ImageError(f"{name}: a ROM image must be a multiple of 64 KiB up to 16 MiB, "
                         f"not {n} bytes")


def load_rom(mem: PhysicalMemory, image: bytes, name: str = "ROM") -> None:
    """Map ``image`` at 4 GiB - size and its last 128 KiB below 1 MiB."""
    check_rom(image, name)
    if mem.size < 1 << 20:
        raise ImageError(f"{name}: booting from a ROM needs at least 1 MiB of RAM")
    low = image[-ISA_BIOS_MAX:]
    mem.write((1 << 20) - len(low), low)
    mem.add_mmio(FOUR_GIB - len(image), len(image), RomRegion(bytes(image)))
