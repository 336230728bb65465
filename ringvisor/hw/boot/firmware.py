"""The PC as its firmware hands it to a Multiboot kernel: what SeaBIOS's POST and
QEMU's multiboot option ROM leave behind under ``qemu-system-i386 -kernel``.

This machine has no BIOS code.  Instead of running one, :func:`hand_off` puts
the machine in the state QEMU 7.2 (SeaBIOS 1.16, ``multiboot_dma.bin``, the
i440FX board with ``-nodefaults``) leaves it in when the kernel's first
instruction runs, so a kernel cannot tell the two apart.  Every value below was
read back on QEMU by ``tests/hwguests/handoff`` (checked on both by the suite).

Devices (programmed through their ports, as SeaBIOS does)
---------------------------------------------------------
    8259A pair  ICW1 0x11, ICW2 vector base 0x08 (master) / 0x70 (slave), ICW3
                cascade on IRQ 2, ICW4 0x01 (8086 mode, normal EOI); IMR 0xB8 /
                0x8E: IRQ 0 timer, 1 keyboard, 2 cascade, 6 floppy, 8 RTC,
                12 mouse, 13 FPU, 14 IDE unmasked, the rest masked; ELCR 0x00 /
                0x0C (the PCI interrupts 10 and 11 level-triggered)
    8254 PIT    channel 0: mode 2 (rate generator), LSB then MSB, count 0
                (65536): IRQ 0 at 18.2 Hz.  Channels 1 and 2 as at reset.
    16550A      COM1-COM4 probed as SeaBIOS's detect_serial does (IER = 0x02,
                read IER and IIR, IER = 0): a port that is there leaves the
                THR-empty edge it raised latched in the master's IRR (bit 4 for
                COM1, 3 for COM2), masked, and its base in the BDA
    CMOS        memory sizes for the RAM the kernel gets (QEMU's pc_cmos_init);
                the IDE drives' types, geometries and translations (its
                pc_cmos_init_late: devices/cmos.py)
    8042        status 0x1C: self test passed, keyboard not inhibited

So IRQ 0 is unmasked and the PIT is running: a kernel that sets IF before it
programs the PIC takes IRQ 0 at vector 8, exactly as on QEMU.

Memory
------
    0x0000-0x03FF   the real-mode IVT as SeaBIOS's ivt_init() and its device setup
                    leave it (``IVT``): every vector at an IRET, the PIC's vectors
                    at handlers that send EOI, IRQ 0's at the timer handler (BDA
                    tick count, INT 1Ch, EOI), INT 60h-66h and 79h zero.  The
                    handlers are small stubs of ours in the F segment (``BIOS_STUBS``),
                    at SeaBIOS's addresses where the IBM PC fixed them (F000:FF53,
                    F000:FEA5); the BIOS services (INT 10h, 13h, 15h...) are IRETs
    0x0400-0x04FF   the BIOS data area, the fields SeaBIOS sets (``BDA_FIELDS``,
                    the serial ports found and how many, the hard disks it found:
                    the IDE drives and a virtio disk)
    0x9FC00         the EBDA, 1 KiB (its first byte holds its size in KiB)
    0xF0000-0xFFFFF the BIOS ROM (reserved in the memory map; zero here but for
                    the interrupt stubs)

The memory map (INT 15h E820, which the option ROM copies into the Multiboot
information): RAM below the EBDA, the EBDA and the BIOS ROM reserved, RAM from
1 MiB up to the last 128 KiB below the top of low RAM (which SeaBIOS keeps for
its tables), the 256 KiB BIOS flash below 4 GiB reserved, and RAM above 4 GiB
if any: like QEMU's i440FX board, 3.5 GiB or more of RAM is split into 3 GiB
below 4 GiB and the rest above (which a kernel without PAE cannot use).

Registers at the kernel's entry
-------------------------------
The option ROM's last instructions read the entry point into ECX and the boot
information address into EBX (with port 0x511, fw_cfg's data port, in DX), so:

    EAX 0x2BADB002   EBX 0x9500        ECX entry point
    EDX (mem_upper & 0xFFFF0000) | 0x0511       (its upper half is left over
                     from the option ROM's mem_upper computation)
    ESI 0  EBP 0     EDI the image's lowest load address, byte-swapped (the
                     fw_cfg DMA descriptor is big-endian)
    ESP 0x6F08       SeaBIOS's stack
    EFLAGS 0x06      PF and the reserved bit, from the ROM's last ``shl``
    CR0 0x11 (PE, ET), CR2 = CR3 = CR4 = 0, DR6 0xFFFF0FF0, DR7 0x400
    GDTR 0xC02B8/0x27: the option ROM's GDT (null, 32-bit code 0x08, 32-bit
         data 0x10, 16-bit code 0x18, 16-bit data 0x20)
    IDTR 0/0x3FF: the real-mode IVT (the kernel must load its own IDT before
         it enables interrupts)
"""

from __future__ import annotations

import struct

from ringvisor.hw.bus import IoBus
from ringvisor.hw.memory import PhysicalMemory

KIB, MIB = 1 << 10, 1 << 20

# -- the memory map ------------------------------------------------------------------
E820_RAM, E820_RESERVED = 1, 2
EBDA_ADDR = 0x9FC00                 # segment 0x9FC0, as SeaBIOS places it
EBDA_KIB = 1
BIOS_ROM = (0xF0000, 0x10000)       # the F segment
BIOS_FLASH = (0xFFFC0000, 0x40000)  # bios-256k.bin mapped below 4 GiB
HIGH_TABLES = 128 * KIB             # SeaBIOS's tables at the top of low RAM
LOW_RAM_SPLIT = 0xE0000000          # i440FX: this much RAM or more is split...
LOW_RAM_MAX = 0xC0000000            # ...into 3 GiB below 4 GiB and the rest above
MEM_LOWER_KIB = EBDA_ADDR // KIB    # INT 12h: 639


def ram_split(ram_size: int) -> tuple[int, int]:
    """(RAM below 4 GiB, RAM above 4 GiB) as QEMU's i440FX board lays it out."""
    below = LOW_RAM_MAX if ram_size >= LOW_RAM_SPLIT else ram_size
    return below, ram_size - below


def e820_map(ram_size: int) -> list[tuple[int, int, int]]:
    """(base, length, type) entries, in SeaBIOS's order."""
    below, above = ram_split(ram_size)
    entries = [(0, min(below, EBDA_ADDR), E820_RAM),
               (EBDA_ADDR, EBDA_KIB * KIB, E820_RESERVED),
               (*BIOS_ROM, E820_RESERVED)]
    top = below - HIGH_TABLES
    if top > MIB:
        entries += [(MIB, top - MIB, E820_RAM), (top, HIGH_TABLES, E820_RESERVED)]
    entries.append((*BIOS_FLASH, E820_RESERVED))
    if above:
        entries.append((1 << 32, above, E820_RAM))
    return entries


def mem_lower_kib(entries: list[tuple[int, int, int]]) -> int:
    """INT 12h: KiB of RAM from address 0 (639 on any machine of 1 MiB or more)."""
    return entries[0][1] // KIB


def mem_upper_kib(entries: list[tuple[int, int, int]]) -> int:
    """KiB of RAM contiguous from 1 MiB, found in the map as the option ROM does."""
    end = MIB
    grew = True
    while grew:
        grew = False
        for base, length, kind in entries:
            if kind == E820_RAM and base <= end < base + length:
                end, grew = base + length, True
    return (end - MIB) // KIB


# -- registers at entry ------------------------------------------------------------------
ENTRY_ESP = 0x6F08
ENTRY_EFLAGS = 0x06
FW_CFG_DATA_PORT = 0x511
OPTION_ROM_GDT_ADDR = 0xC02B8
# the option ROM's GDT, as it sits in the ROM (the code descriptor's accessed bit
# stays clear: the ROM is read-only by the time the CPU loads it)
OPTION_ROM_GDT = (
    0x0000000000000000,
    0x00CF9A000000FFFF,  # 0x08 code: base 0, 4 GiB, 32-bit, execute/read, DPL 0
    0x00CF93000000FFFF,  # 0x10 data: base 0, 4 GiB, 32-bit, read/write, DPL 0
    0x00009E000000FFFF,  # 0x18 code: 16-bit, 64 KiB, conforming execute/read
    0x000092000000FFFF,  # 0x20 data: 16-bit, 64 KiB, read/write
)
REAL_MODE_IDT = (0, 0x3FF)


def entry_registers(entry: int, load_low: int, mem_upper: int) -> dict[str, int]:
    """The general registers and EFLAGS the option ROM leaves (see the module doc)."""
    return {"ecx": entry, "edx": (mem_upper & 0xFFFF0000) | FW_CFG_DATA_PORT,
            "esi": 0, "ebp": 0, "edi": int.from_bytes(load_low.to_bytes(4, "little"), "big"),
            "esp": ENTRY_ESP, "eflags": ENTRY_EFLAGS}


# -- the BIOS data area ----------------------------------------------------------------
# (offset from 0x400, size, value): what SeaBIOS stores, the rest is zero
BDA_FIELDS = (
    (0x0E, 2, EBDA_ADDR >> 4),   # EBDA segment
    (0x10, 2, 0x0006),           # equipment: PS/2 mouse, (bit 1) FPU; serial ports below
    (0x13, 2, MEM_LOWER_KIB),    # base memory in KiB (INT 12h)
    (0x1A, 2, 0x1E),             # keyboard buffer head
    (0x1C, 2, 0x1E),             # keyboard buffer tail
    (0x76, 1, 0xC0),             # hard disk control byte
    (0x80, 2, 0x1E),             # keyboard buffer start
    (0x82, 2, 0x3E),             # keyboard buffer end
    (0x96, 1, 0x10),             # keyboard: 101/102-key keyboard present
)
BDA_ADDR = 0x400
BDA_COM_PORTS = 0x00             # the serial ports found, in probe order (LPT: none)
BDA_COM_TIMEOUTS = 0x7C          # one byte each: 10
COM_TIMEOUT = 0x0A
EQUIPMENT_SERIAL_SHIFT = 9       # bits 11:9 of the equipment word: how many
BDA_TICKS = 0x6C                 # timer ticks since midnight (IRQ 0 counts them)
BDA_HARD_DISKS = 0x75            # hard disks found (SeaBIOS's hdcount: ATA, virtio-blk)
EQUIPMENT_FPU = 0x02
PIT_HZ, PIT_PERIOD = 1_193_182, 65536


def bda_bytes(seconds_since_midnight: int, fpu: bool, com_ports: list[int],
              hard_disks: int = 0) -> bytes:
    """The 256 bytes of the BIOS data area."""
    bda = bytearray(256)
    for off, size, value in BDA_FIELDS:
        if off == 0x10:
            value |= len(com_ports) << EQUIPMENT_SERIAL_SHIFT
            if not fpu:
                value &= ~EQUIPMENT_FPU
        bda[off:off + size] = value.to_bytes(size, "little")
    for i, port in enumerate(com_ports):
        struct.pack_into("<H", bda, BDA_COM_PORTS + 2 * i, port)
        bda[BDA_COM_TIMEOUTS + i] = COM_TIMEOUT
    ticks = seconds_since_midnight * PIT_HZ // PIT_PERIOD
    struct.pack_into("<I", bda, BDA_TICKS, ticks)
    bda[BDA_HARD_DISKS] = hard_disks
    return bytes(bda)


# -- device programming, as SeaBIOS does it --------------------------------------------
PIC_VECTOR_BASES = (0x08, 0x70)
PIC_IMR = (0xB8, 0x8E)
ELCR = (0x00, 0x0C)
PIT_MODE2_WORD = 0x34            # channel 0, LSB then MSB, mode 2, binary
SERIAL_PROBE_ORDER = (0x3F8, 0x2F8, 0x3E8, 0x2E8)   # COM1-COM4, as SeaBIOS looks
UART_IER, UART_IIR = 1, 2


def detect_serial(bus: IoBus, port: int) -> bool:
    """SeaBIOS's detect_serial(): a UART answers an IER write; the probe enables
    (and at once disables) its THR-empty interrupt."""
    bus.write(port + UART_IER, 1, 0x02)
    if bus.read(port + UART_IER, 1) != 0x02:
        return False
    bus.read(port + UART_IIR, 1)
    bus.write(port + UART_IER, 1, 0x00)
    return True


def program_devices(bus: IoBus) -> list[int]:
    """Program the PIC pair and the PIT through their ports, and probe the serial
    ports; returns the serial ports found."""
    for (cmd, data), base, wiring in zip(((0x20, 0x21), (0xA0, 0xA1)), PIC_VECTOR_BASES,
                                          (0x04, 0x02)):
        bus.write(cmd, 1, 0x11)          # ICW1: edge, cascade, ICW4 follows
        bus.write(data, 1, base)         # ICW2
        bus.write(data, 1, wiring)       # ICW3: slave on IRQ 2 / slave id 2
        bus.write(data, 1, 0x01)         # ICW4: 8086 mode
    bus.write(0x21, 1, PIC_IMR[0])
    bus.write(0xA1, 1, PIC_IMR[1])
    bus.write(0x4D0, 1, ELCR[0])
    bus.write(0x4D1, 1, ELCR[1])
    bus.write(0x43, 1, PIT_MODE2_WORD)
    bus.write(0x40, 1, 0)
    bus.write(0x40, 1, 0)
    return [port for port in SERIAL_PROBE_ORDER if detect_serial(bus, port)]


# -- the interrupt vector table, as SeaBIOS leaves it ----------------------------------
# A kernel that enables interrupts before loading its own IDT (in real mode, or with the
# IVT as its IDT) takes IRQ 0 through these, as under SeaBIOS, instead of jumping to
# 0000:0000.  Real-mode machine code, offsets in segment F000.
BIOS_SEG = 0xF000
IRET_OFF = 0xFF53          # SeaBIOS's entry_iret_official (the IBM PC's dummy IRET)
TIMER_OFF = 0xFEA5         # SeaBIOS's entry_08 (the IBM PC's INT 08h entry)
HWPIC1_OFF, HWPIC2_OFF = 0xFF40, 0xFF48
BIOS_STUBS = {
    IRET_OFF: bytes([0xCF]),                                        # iret
    # push ax; mov al, 20h; out 20h, al; pop ax; iret -- SeaBIOS's handle_hwpic1: EOI
    HWPIC1_OFF: bytes([0x50, 0xB0, 0x20, 0xE6, 0x20, 0x58, 0xCF]),
    # ... and to the slave, then the master (handle_hwpic2)
    HWPIC2_OFF: bytes([0x50, 0xB0, 0x20, 0xE6, 0xA0, 0xE6, 0x20, 0x58, 0xCF]),
    # SeaBIOS's handle_08: the BDA tick count (40:6C) goes up, past a day (0x1800B0
    # ticks) to 0 with the rollover flag (40:70) set; then INT 1Ch; then EOI
    TIMER_OFF: bytes([0x1E, 0x66, 0x50,                             # push ds; push eax
                      0x31, 0xC0, 0x8E, 0xD8,                       # xor ax, ax; mov ds, ax
                      0x66, 0xA1, 0x6C, 0x04, 0x66, 0x40,           # mov eax, [46Ch]; inc eax
                      0x66, 0x3D, 0xB0, 0x00, 0x18, 0x00,           # cmp eax, 1800B0h
                      0x72, 0x07,                                   # jb store
                      0x66, 0x31, 0xC0, 0xFE, 0x06, 0x70, 0x04,     # xor eax, eax; inc byte [470h]
                      0x66, 0xA3, 0x6C, 0x04,                       # store: mov [46Ch], eax
                      0xCD, 0x1C,                                   # int 1Ch
                      0xB0, 0x20, 0xE6, 0x20,                       # mov al, 20h; out 20h, al
                      0x66, 0x58, 0x1F, 0xCF]),                     # pop eax; pop ds; iret
}


def ivt_bytes() -> bytes:
    """The 1 KiB interrupt vector table SeaBIOS leaves (post.c ivt_init and the
    handlers its timer setup installs)."""
    vec = [IRET_OFF] * 256
    for i in range(8):
        vec[PIC_VECTOR_BASES[0] + i] = HWPIC1_OFF
        vec[PIC_VECTOR_BASES[1] + i] = HWPIC2_OFF
    vec[PIC_VECTOR_BASES[0]] = TIMER_OFF
    out = bytearray(b"".join(struct.pack("<HH", off, BIOS_SEG) for off in vec))
    for i in (*range(0x60, 0x67), 0x79):     # user vectors and 79h: zero, as SeaBIOS
        out[4 * i:4 * i + 4] = bytes(4)
    return bytes(out)


def hand_off(mem: PhysicalMemory, bus: IoBus, cmos, ram_size: int, fpu: bool = False,
             drives: tuple = (), other_disks: int = 0) -> None:
    """Leave the devices and low memory as SeaBIOS does for ``ram_size`` bytes of RAM.

    ``cmos`` is the machine's RTC/NVRAM (its memory bytes are set for the RAM
    the kernel gets, its disk bytes for ``drives``: the geometries of IDE drives
    0-3, None where there is none); ``other_disks`` the hard disks SeaBIOS finds
    besides them (a virtio disk); ``fpu`` says whether the CPU has an x87 (the
    equipment word tells the truth about the machine, as SeaBIOS's does).
    """
    below, above = ram_split(ram_size)
    cmos.set_ram_size(below, above)
    cmos.set_hard_disks(drives)
    com_ports = program_devices(bus)
    seconds = cmos.rtc_ns() // 1_000_000_000 % 86400
    hard_disks = sum(g is not None for g in drives) + other_disks
    mem.write(BDA_ADDR, bda_bytes(seconds, fpu, com_ports, hard_disks))
    ebda = bytearray(EBDA_KIB * KIB)
    ebda[0] = EBDA_KIB
    mem.write(EBDA_ADDR, bytes(ebda))
    mem.write(0, ivt_bytes())
    for off, code in BIOS_STUBS.items():
        mem.write((BIOS_SEG << 4) + off, code)
