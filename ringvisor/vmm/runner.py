"""Booting a guest under a monitor."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

from ringvisor.errors import ConfigError
from ringvisor.hw.machine import Machine, read_image
from ringvisor.hw.smp import MAX_CPUS

from . import layout as L

MODES = ("native", "trapemu", "bt", "paravirt", "hvm", "kvm")
SMP_MODES = ("trapemu", "bt")     # the monitors that give a guest several processors (vcpus.py)


def _monitor_class(mode: str):
    if mode == "trapemu":
        from .trapemu import TrapAndEmulate
        return TrapAndEmulate
    if mode == "bt":
        from .bt import BinaryTranslation
        return BinaryTranslation
    if mode == "paravirt":
        from .paravirt import ParaVirt
        return ParaVirt
    if mode == "hvm":
        from .hvm import HardwareAssisted
        return HardwareAssisted
    raise ValueError(f"unknown mode {mode!r} (choose from {', '.join(MODES)})")


def attach_monitor(mode: str, machine: Machine, guest_ram: int, info=None):
    """The monitor for a VM restored from an image, attached to its machine (the
    lifecycle's factory: it gives the monitor its state afterwards)."""
    cls = _monitor_class(mode)
    extra = {"cmdline": info.cmdline} if mode == "paravirt" and info is not None else {}
    mon = cls(machine, guest_ram, **extra)
    mon.attach()
    return mon


@dataclass
class VmResult:
    output: bytes
    status: int
    stop: object
    machine: Machine
    monitor: object = None
    stats: dict = field(default_factory=dict)


def create_vm(image: bytes, mode: str = "native", cmdline: str = "", mem_mb: int = 32,
              engine: str = "jit", modules=(), image_name: str = "kernel", output=None,
              tc_size: int | None = None, disk: str | None = None, disk_readonly: bool = False,
              virtio_disk: str | None = None, virtio_disk_readonly: bool = False,
              virtio_console: bool = False, ept: bool = True, **kw):
    """A machine with ``image`` booted under ``mode``; returns (machine, monitor or None).

    ``tc_size``: the translation cache's size in bytes (binary translation only);
    ``disk``: a raw image for the ATA disk on the primary IDE channel; ``virtio_disk``,
    ``virtio_console``: legacy virtio-pci devices on PCI bus 0; ``ept``: hvm with EPT
    (False: shadow page tables, as on the first VT-x processors)."""
    if tc_size is not None and mode != "bt":
        raise ValueError("a translation cache size only applies to --mode bt")
    if not ept and mode != "hvm":
        raise ConfigError("--no-ept only applies to --mode hvm (the other monitors have no EPT)")
    if mode == "paravirt" and (virtio_disk or virtio_console):
        raise ConfigError("--mode paravirt: no virtio devices (a para-virtual guest's "
                          "pseudo-physical addresses are not the bus addresses a device needs)")

    def devices(m) -> None:
        if disk:
            m.attach_disk(disk, disk_readonly)
        if virtio_disk:
            m.attach_virtio_disk(virtio_disk, virtio_disk_readonly)
        if virtio_console:
            m.attach_virtio_console()
    if mode in ("native", "kvm"):
        if mode == "kvm":
            from .kvm import KvmMachine
            m = KvmMachine(mem_mb, engine, output=output, **kw)
        else:
            m = Machine(mem_mb, engine, output=output, **kw)
        devices(m)
        m.boot_multiboot(image, cmdline, list(modules), image_name=image_name)
        return m, None
    cls = _monitor_class(mode)
    vcpus = kw.pop("cpus", 1)
    if vcpus != 1 and mode not in SMP_MODES:
        raise ConfigError(f"--smp {vcpus}: --mode {mode} runs a uniprocessor guest (several "
                          f"processors: --mode {', '.join(('native',) + SMP_MODES)})")
    if not 1 <= vcpus <= MAX_CPUS:
        raise ConfigError(f"the PC has 1 to {MAX_CPUS} processors, not {vcpus}")
    guest_ram = mem_mb << 20
    m = Machine((guest_ram + L.MONITOR_RAM) >> 20, engine, output=output, **kw)
    # the monitor's machine has one processor; the firmware the guest reads describes its
    # virtual ones (``vcpus.py``)
    m.firmware_cpus = vcpus
    devices(m)
    m.boot_multiboot(image, cmdline, list(modules), image_name=image_name, ram_size=guest_ram)
    extra = {"cmdline": cmdline} if mode == "paravirt" else {}
    if tc_size is not None:
        extra["tc_size"] = tc_size
    if mode == "hvm":
        extra["ept"] = ept
    mon = cls(m, guest_ram, **extra)
    mon.install()
    if vcpus > 1:
        from .vcpus import VirtualProcessors
        mon.vcpus = VirtualProcessors(mon, vcpus)
    return m, mon


def create_bios_vm(rom: bytes, mode: str = "native", mem_mb: int = 32, engine: str = "jit",
                   rom_name: str = "ROM", output=None, ept: bool = True, **kw):
    """A machine started from RESET with a firmware ROM mapped (``Machine.boot_bios``),
    bare or under ``hvm``; returns (machine, monitor or None).  Under hvm the monitor
    enters the reset state itself -- real mode at F000:FFF0 with CS base FFFF0000, as a
    VMM with "unrestricted guest" does -- with the ROM's copy at 4 GiB mapped through
    EPT beside guest RAM; the other monitors start from a Multiboot hand-off only."""
    if mode == "native":
        m = Machine(mem_mb, engine, output=output, **kw)
        m.boot_bios(rom, rom_name)
        return m, None
    if mode != "hvm":
        raise ConfigError(f"--bios runs on the bare machine or under --mode hvm, not under "
                          f"--mode {mode}")
    if not ept:
        raise ConfigError("--bios --mode hvm needs EPT: the CPU starts in real mode, which "
                          "VMX non-root runs only as an unrestricted guest (drop --no-ept)")
    guest_ram = mem_mb << 20
    m = Machine((guest_ram + L.MONITOR_RAM) >> 20, engine, output=output, **kw)
    m.cmos.set_ram_size(guest_ram, 0)         # the guest's RAM, not the monitor's region
    m.boot_bios(rom, rom_name)
    # the guest's virtual local APIC copies the physical one as RESET left it (LVTs masked,
    # software-disabled: SDM Vol. 3 §10.4.7.1), as the guest's processor would have it
    mon = _monitor_class(mode)(m, guest_ram, ept=True)
    # then the hypervisor's processor as its own firmware leaves it: the physical APIC
    # enabled, passing the 8259A's INTR on (LINT0 ExtINT), or no physical interrupt, and
    # no notification of the virtual APIC's, would ever reach the monitor
    m.firmware_apic()
    mon.install()
    return m, mon


def run_vm(path, mode: str = "native", cmdline: str = "", mem_mb: int = 32, stdin: bytes = b"",
           max_instructions: int | None = None, engine: str = "jit", quiet: bool = False,
           tsc_probe=None, tc_size: int | None = None, disk: str | None = None,
           ept: bool = True, **devices) -> VmResult:
    out = bytearray()
    image = read_image(path, max_bytes=mem_mb << 20)
    m, mon = create_vm(image, mode, cmdline, mem_mb, engine, image_name=str(path), output=out.extend,
                       tc_size=tc_size, disk=disk, ept=ept, **devices)
    m.cpu.tsc_probe = tsc_probe
    if stdin:
        m.feed_input(stdin)
    stop = m.run(max_instructions)
    if stop.reason != "exit" and stop.message and not quiet:
        print(f"ringvisor: {stop.message}", file=sys.stderr)
    stats = m.stats()
    if mon is not None:
        stats["monitor"] = mon.report()
    return VmResult(bytes(out), stop.status, stop, m, mon, stats)
