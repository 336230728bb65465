"""The ACPI tables QEMU's i440FX PC gives a kernel (through SeaBIOS), built as data.

What a kernel finds (read back on QEMU 7.2 by ``tests/hwguests/firmware``):

    RSDP  revision 0 (ACPI 1.0), OEM "BOCHS ", on a 16-byte boundary in the F segment,
          where the standard scan (ACPI 5.2.5.1: 0xE0000-0xFFFFF) finds it
    RSDT  revision 1, pointing at FACP, APIC, HPET, WAET in that order
    FACP  revision 1 (116 bytes): SCI 9, SMI command port 0xB2 (enable 0xF1, disable
          0xF0), PM1a event block 0x600 (4 bytes), PM1a control 0x604 (2), the PM timer
          at 0x608 (4 bytes, 24 bits: flag TMR_VAL_EXT clear), GPE0 at 0xAFE0 (4), flags
          0x80A5, century at CMOS 0x32; FACS (64 bytes) and DSDT beside it
    APIC  (the MADT) local APIC at 0xFEE00000, PC/AT-compatible 8259As (flag 1); one
          processor entry per CPU (UID = APIC ID = its number, enabled); the IO-APIC
          (ID 0, 0xFEC00000, GSI base 0); interrupt source overrides ISA IRQ 0 -> GSI 2
          (bus defaults) and the PCI interrupts 5, 9, 10, 11 level-triggered, active
          high (flags 0xD); LINT1 is NMI on every processor (UID 0xFF)
    HPET  event timer block ID 0x8086A201 at 0xFED00000 (system memory), number 0
    WAET  "the PM timer is good" (one read suffices)

Every header is OEM "BOCHS ", table ID "BXPC    ", OEM revision 1, creator "BXPC"
revision 1, with its checksum.  The DSDT holds no AML here (a header only): the
devices it would describe are the fixed PC devices above.
"""

from __future__ import annotations

import struct

from ..devices.hpet import HPET_BASE, HPET_ID
from ..devices.ioapic import IOAPIC_BASE
from ..devices.lapic import APIC_DEFAULT_BASE
from .firmware import HIGH_TABLES, ram_split

OEM_ID, OEM_TABLE_ID, CREATOR = b"BOCHS ", b"BXPC    ", b"BXPC"
RSDP_ADDR = 0xF5A10                 # in the F segment, 16-byte aligned
RSDP_SCAN = (0xE0000, 0x100000)     # where the standard scan looks (ACPI 5.2.5.1)
PM_BASE, PM_TIMER_PORT, GPE0_BLK, SMI_CMD_PORT = 0x600, 0x608, 0xAFE0, 0xB2
ACPI_ENABLE, ACPI_DISABLE = 0xF1, 0xF0
SCI_IRQ = 9
FADT_FLAGS = 0x80A5                 # WBINVD, PROC_C1, SLP_BUTTON, RTC_S4, USE_PLATFORM_CLOCK
RTC_CENTURY = 0x32
MADT_PCAT_COMPAT = 1
# (ISA IRQ, GSI, MPS INTI flags): QEMU's overrides
OVERRIDES = ((0, 2, 0), (5, 5, 0xD), (9, 9, 0xD), (10, 10, 0xD), (11, 11, 0xD))
WAET_PM_TIMER_GOOD = 1 << 1


def checksum(data: bytes) -> int:
    """The byte that makes ``data`` sum to 0 modulo 256."""
    return -sum(data) & 0xFF


def table(signature: bytes, body: bytes, revision: int = 1, sealed: bool = True) -> bytes:
    """A system description table: the 36-byte header (ACPI 5.2.6) and ``body``; its
    checksum is left 0 unless ``sealed`` (for QEMU's table loader to fill in)."""
    head = struct.pack("<4sIBB6s8sI4sI", signature, 36 + len(body), revision, 0, OEM_ID,
                       OEM_TABLE_ID, 1, CREATOR, 1)
    t = bytearray(head + body)
    if sealed:
        t[9] = checksum(t)
    return bytes(t)


def facs() -> bytes:
    return struct.pack("<4sI", b"FACS", 64).ljust(64, b"\0")


def fadt(facs_addr: int, dsdt_addr: int, sealed: bool = True) -> bytes:
    body = struct.pack("<IIBBHIBBBBIIIIIIII", facs_addr, dsdt_addr, 1, 0, SCI_IRQ,
                       SMI_CMD_PORT, ACPI_ENABLE, ACPI_DISABLE, 0, 0,
                       PM_BASE, 0, PM_BASE + 4, 0, 0, PM_TIMER_PORT, GPE0_BLK, 0)
    body += struct.pack("<BBBBBBBB", 4, 2, 0, 4, 4, 0, 0, 0)
    body += struct.pack("<HHHHBBBBBHBI", 0xFFF, 0xFFF, 0, 0, 0, 0, 0, 0, RTC_CENTURY, 0, 0,
                        FADT_FLAGS)
    return table(b"FACP", body, sealed=sealed)


def madt(cpus: int, sealed: bool = True) -> bytes:
    body = bytearray(struct.pack("<II", APIC_DEFAULT_BASE, MADT_PCAT_COMPAT))
    for n in range(cpus):
        body += struct.pack("<BBBBI", 0, 8, n, n, 1)
    body += struct.pack("<BBBBII", 1, 12, 0, 0, IOAPIC_BASE, 0)
    for irq, gsi, flags in OVERRIDES:
        body += struct.pack("<BBBBIH", 2, 10, 0, irq, gsi, flags)
    body += struct.pack("<BBBHB", 4, 6, 0xFF, 0, 1)
    return table(b"APIC", bytes(body), sealed=sealed)


def hpet_table(sealed: bool = True) -> bytes:
    body = struct.pack("<IBBBBQBHB", HPET_ID, 0, 0, 0, 0, HPET_BASE, 0, 0, 0)
    return table(b"HPET", body, sealed=sealed)


def build(base: int, cpus: int, sealed: bool = True) -> tuple[bytes, bytes]:
    """(the tables, laid out from physical address ``base``; the RSDP pointing at them).

    Unsealed is how QEMU hands them to the firmware in fw_cfg ("etc/acpi/tables",
    "etc/acpi/rsdp"): pointers relative to the blob (``base`` 0) and checksums 0, for
    SeaBIOS's table loader to relocate and sum."""
    blob = bytearray()

    def place(data: bytes, align: int = 4) -> int:
        blob.extend(b"\0" * (-len(blob) % align))
        addr = base + len(blob)
        blob.extend(data)
        return addr

    facs_addr = place(facs(), 64)
    dsdt_addr = place(table(b"DSDT", b"", sealed=sealed))
    pointers = [place(fadt(facs_addr, dsdt_addr, sealed)), place(madt(cpus, sealed)),
                place(hpet_table(sealed)),
                place(table(b"WAET", struct.pack("<I", WAET_PM_TIMER_GOOD), sealed=sealed))]
    rsdt_addr = place(table(b"RSDT", struct.pack(f"<{len(pointers)}I", *pointers), sealed=sealed))
    rsdp = bytearray(struct.pack("<8sB6sBI", b"RSD PTR ", 0, OEM_ID, 0, rsdt_addr))
    if sealed:
        rsdp[8] = checksum(rsdp)
    return bytes(blob), bytes(rsdp)


def tables_base(ram_size: int) -> int:
    """Where SeaBIOS puts the tables: the last 128 KiB below the top of the RAM below
    4 GiB (the firmware's reserved high tables), or the F segment's end when the machine
    has too little RAM for that."""
    low, _ = ram_split(ram_size)
    return low - HIGH_TABLES if low >= 0x200000 else 0xF6000


def install(mem, ram_size: int, cpus: int) -> None:
    """Write the tables and the RSDP into RAM, as SeaBIOS's loader leaves them."""
    base = tables_base(ram_size)
    blob, rsdp = build(base, cpus)
    mem.write(base, blob)
    mem.write(RSDP_ADDR, rsdp)
