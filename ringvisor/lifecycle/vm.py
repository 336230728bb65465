"""A virtual machine as data: capture a running VM into sections, and back.

A VM is a machine (``ringvisor.hw``) and, unless it runs natively, the monitor
on it.  ``capture`` stops nothing: it is called between instructions (the
machine's run loop returns at exact instruction counts), and it reads

* ``META``: what the VM is (structure, memory sizes, the kernel it booted),
* one ``STATE`` section per component of the machine, in restore order,
* ``monitor``: the monitor's state, if there is one,
* ``RAM``: every page of machine memory that is not zero.

``restore`` builds a fresh machine of the same shape, has the monitor attach
itself to it (through a factory the caller passes: this package imports no
monitor), and loads every section.  What the machine derives -- translated
blocks, the TLB, decode caches -- is not in the image and is rebuilt as the
CPU runs.  The engine (``jit`` or ``interp``) is the host's choice, not the
VM's: an image saved under one restores under the other.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields
from typing import Callable

from ringvisor.errors import ConfigError
from ringvisor.hw.machine import COM, Machine

from . import codec, mapped as MAPPEDRAM, ram as RAMCODEC
from .stream import (META, RAM, RAMREF, STATE, BadImage, Section, SectionReader, open_file, pack_image,
                     write_atomic)

META_VERSION = 1
MONITOR_SECTION = "monitor"


@dataclass
class VmInfo:
    """What an image holds (its META section)."""

    mode: str = "native"
    guest_mb: int = 32              # the guest's RAM
    machine_mb: int = 32            # the machine's (guest RAM and the monitor's region)
    cpu_hz: int = 100_000_000
    image: str = ""                 # the kernel it booted
    cmdline: str = ""
    icount: int = 0                 # instructions retired when it was captured
    description: str = ""
    # the serial ports it has (2: COM2 too), said up front: a migration's destination
    # builds the machine before any device's state arrives (older images: counted)
    serial_ports: int = 1
    # the disks it has, by host path (a restore or a migration's destination attaches the
    # same image files: Xen's and QEMU's shared-storage model, the disk is not in the image)
    ata_disk: str = ""
    ata_disk_readonly: bool = False
    virtio_disk: str = ""
    virtio_disk_readonly: bool = False
    virtio_console: bool = False

    @classmethod
    def from_dict(cls, d: dict) -> "VmInfo":
        """The description ``d`` gives; a value of the wrong type (a forged or damaged
        image whose checksums are right) is a TypeError naming the key."""
        if not isinstance(d, dict):
            raise TypeError(f"expected an object, found {type(d).__name__}")
        kinds = {f.name: type(f.default) for f in fields(cls)}
        for k, v in d.items():
            kind = kinds.get(k)
            # exact types: bool is an int to Python, not to a description
            if kind is not None and type(v) is not kind:
                raise TypeError(f"{k}: expected {kind.__name__}, found {type(v).__name__}")
            if kind is int and v < 0:
                raise TypeError(f"{k}: {v} is negative")
        return cls(**{k: v for k, v in d.items() if k in kinds})


# a VM's disks: its description's key (and key + "_readonly"), the Machine's attribute
# holding the device, the Machine's method that attaches one
DISKS = (("ata_disk", "disk", "attach_disk"),
         ("virtio_disk", "virtio_disk", "attach_virtio_disk"))


def capture(machine: Machine, monitor=None, info: VmInfo | None = None,
            include_ram: bool = True) -> list[Section]:
    """The VM's sections (RAM last, unless ``include_ram`` is false)."""
    # the monitor first: one whose state cannot be saved refuses before anything is taken
    mon_state = None if monitor is None else monitor.get_state()
    info = VmInfo(**asdict(info)) if info else VmInfo()
    info.machine_mb = machine.mem.size >> 20
    info.cpu_hz = machine.clock.cpu_hz
    info.icount = machine.cpu.state.icount
    info.serial_ports = len(machine.uarts)
    for kind, attr, _ in DISKS:
        dev = getattr(machine, attr)
        path = os.path.abspath(dev.image.path) if dev is not None else ""
        setattr(info, kind, path)
        setattr(info, kind + "_readonly", bool(dev is not None and dev.image.readonly))
    info.virtio_console = machine.virtio_console is not None
    if monitor is None:
        info.mode, info.guest_mb = "native", info.machine_mb
    else:
        info.mode, info.guest_mb = monitor.name, monitor.guest_ram >> 20
    out = [Section(META, "vm", META_VERSION, codec.encode(asdict(info), "meta"))]
    for c in machine.components():
        out.append(Section(STATE, c.state_name, c.state_version,
                           codec.encode(c.get_state(), c.state_name)))
    if monitor is not None:
        out.append(Section(STATE, MONITOR_SECTION, monitor.state_version,
                           codec.encode(mon_state, MONITOR_SECTION)))
    if include_ram:
        out.append(Section(RAM, "ram", 1, RAMCODEC.encode(machine.mem.ram)))
    return out


def _check_shape(info: VmInfo, what: str) -> None:
    if not (isinstance(info.machine_mb, int) and 1 <= info.machine_mb <= 3584 and
            isinstance(info.cpu_hz, int) and info.cpu_hz > 0):
        raise BadImage(f"{what}: corrupt description (machine of {info.machine_mb!r} MiB "
                       f"at {info.cpu_hz!r} Hz)")


def read_info(sections: list[Section], what: str = "image") -> VmInfo:
    for s in sections:
        if s.kind == META and s.name == "vm":
            if s.version > META_VERSION:
                raise BadImage(f"{what}: made by a newer ringvisor (its description is "
                               f"version {s.version})")
            try:
                info = VmInfo.from_dict(codec.decode(s.payload))
            except (TypeError, AttributeError, codec.StateError) as e:
                raise BadImage(f"{what}: corrupt description ({e})") from None
            _check_shape(info, what)     # (before any reader sizes memory by it)
            return info
    raise BadImage(f"{what}: not a VM image (it has no description section)")


AttachMonitor = Callable[[str, Machine, int, VmInfo], object]


def restore(sections: list[Section], attach_monitor: AttachMonitor | None = None,
            engine: str = "jit", output=None, what: str = "image", load_ram=None,
            **machine_kw) -> tuple[Machine, object, VmInfo]:
    """A machine (and monitor) in the state ``sections`` describe.

    ``attach_monitor(mode, machine, guest_ram, info)`` makes the monitor for a
    non-native image, attached to the machine but not yet given its state.
    ``load_ram(machine)``, if given, fills memory instead of a RAM section
    (the snapshot store's page references).
    """
    info = read_info(sections, what)
    # as many serial ports as were saved (COM2 exists when the VM was given a second line)
    ports = sum(1 for s in sections if s.kind == STATE and s.name.startswith("uart@"))
    machine_kw.setdefault("serial_ports", min(max(ports, 1), len(COM)))
    # as many processors as were saved (the BSP is "cpu", the others "cpu1".. "cpu7")
    cpus = sum(1 for s in sections if s.kind == STATE and s.name.startswith("cpu"))
    machine_kw.setdefault("cpus", min(max(cpus, 1), 8))
    m, monitor = new_machine(info, attach_monitor, engine, output, what, **machine_kw)
    rams = [s for s in sections if s.kind == RAM]
    if load_ram is not None:
        load_ram(m)
    elif rams:
        RAMCODEC.decode_into(rams[0].payload, m.mem.ram, what)
    else:
        raise BadImage(f"{what}: has no memory section")
    load_states(m, monitor, sections, what)
    return m, monitor, info


def new_machine(info: VmInfo, attach_monitor: AttachMonitor | None = None, engine: str = "jit",
                output=None, what: str = "image", machine_cls: type[Machine] = Machine,
                **machine_kw) -> tuple[Machine, object]:
    """A machine of the shape ``info`` gives, its memory zero, with its monitor attached
    (the first half of a restore; a migration fills the memory as pages arrive).

    ``machine_cls``: the PC to restore into -- a bare machine's state (CPU, devices,
    RAM) is the same whatever runs its CPU, so a VM saved on the emulated CPU resumes
    on KVM (``vmm.kvm.KvmMachine``) and back, as QEMU's savevm ignores the accelerator."""
    _check_shape(info, what)
    if machine_cls is not Machine and info.mode != "native":
        raise BadImage(f"{what}: a VM under {info.mode!r} resumes under its monitor on the "
                       f"emulated CPU, not under {getattr(machine_cls, 'mode_name', '?')}")
    if not isinstance(info.serial_ports, int) or not 1 <= info.serial_ports <= len(COM):
        raise BadImage(f"{what}: corrupt description ({info.serial_ports!r} serial ports)")
    machine_kw.setdefault("serial_ports", info.serial_ports)
    m = machine_cls(info.machine_mb, engine, cpu_hz=info.cpu_hz, output=output, **machine_kw)
    _attach_devices(m, info, what)
    monitor = None
    if info.mode != "native":
        if attach_monitor is None:
            raise BadImage(f"{what}: a VM under {info.mode!r}, and no monitor to restore it with")
        try:
            monitor = attach_monitor(info.mode, m, info.guest_mb << 20, info)
        except ValueError as e:
            raise BadImage(f"{what}: cannot restore a VM under {info.mode!r} ({e})") from None
    return m, monitor


def writable_disk(machine: Machine) -> str | None:
    """The image file of a disk the VM writes (None: it has none), which a snapshot or a
    recording cannot hold: a revert or a replay would find the file as it is by then."""
    for _, attr, _ in DISKS:
        dev = getattr(machine, attr)
        if dev is not None and not dev.image.readonly:
            return dev.image.path
    return None


def _attach_devices(m: Machine, info: VmInfo, what: str) -> None:
    """The devices the description names beyond the fixed PC: its disks (the same image
    files) and the virtio console, before any device's state arrives."""
    for kind, _, attach in DISKS:
        path, readonly = getattr(info, kind), getattr(info, kind + "_readonly")
        if not isinstance(path, str) or not isinstance(readonly, bool):
            raise BadImage(f"{what}: corrupt description ({kind} {path!r})")
        if path:
            try:
                getattr(m, attach)(path, readonly)
            except ConfigError as e:
                raise BadImage(f"{what}: the VM's disk: {e}") from None
    if not isinstance(info.virtio_console, bool):
        raise BadImage(f"{what}: corrupt description (virtio_console {info.virtio_console!r})")
    if info.virtio_console:
        m.attach_virtio_console()


def load_states(m: Machine, monitor, sections: list[Section], what: str = "image") -> None:
    """Give every component of ``m`` (and the monitor) its state from ``sections``
    (the second half of a restore, once memory is in place)."""
    by_name: dict[str, Section] = {}
    for s in sections:
        if s.kind == STATE:
            if s.name in by_name:
                raise BadImage(f"{what}: corrupt (two sections named {s.name!r})")
            by_name[s.name] = s
    components = list(m.components()) + ([monitor] if monitor is not None else [])
    for c in components:
        name = MONITOR_SECTION if c is monitor else c.state_name
        s = by_name.pop(name, None)
        if s is None:
            raise BadImage(f"{what}: has no state for {name!r} (made by another ringvisor?)")
        if s.version > c.state_version:
            raise BadImage(f"{what}: the state of {name!r} is version {s.version}; this "
                           f"ringvisor reads version {c.state_version} and older")
        apply_state(c, decode_state(s, what), name, what)
    if by_name:
        raise BadImage(f"{what}: has state for {', '.join(sorted(by_name))}, which this "
                       f"machine does not have (made by another ringvisor?)")


def decode_state(section: Section, what: str = "image"):
    try:
        return codec.decode(section.payload)
    except codec.StateError as e:
        raise BadImage(f"{what}: corrupt state for {section.name!r} ({e})") from None


def apply_state(component, state, name: str, what: str = "image") -> None:
    try:
        component.set_state(state)
    except BadImage:
        raise
    except (KeyError, ValueError, TypeError, IndexError, AttributeError) as e:
        raise BadImage(f"{what}: corrupt state for {name!r} ({type(e).__name__}: {e})") from None


def save_file(path, machine: Machine, monitor=None, info: VmInfo | None = None,
              mapped: bool = False) -> int:
    """Save the VM to ``path`` (atomically); the image's size in bytes.  ``mapped``: its
    memory page for page, to be mapped on restore (``mapped.py``), not compressed."""
    if mapped:
        return MAPPEDRAM.save(path, capture(machine, monitor, info, include_ram=False),
                              machine.mem.ram)[0]
    data = pack_image(capture(machine, monitor, info))
    write_atomic(path, data)
    return len(data)


def load_file(path, attach_monitor: AttachMonitor | None = None, engine: str = "jit",
              output=None, verify: bool = True, **machine_kw) -> tuple[Machine, object, VmInfo]:
    """Restore the image at ``path``.  A mapped image's memory is mapped, not read (its
    stored pages checked against their checksums first unless ``verify`` is false)."""
    with open_file(path) as f:
        secs = list(SectionReader(f, str(path)))
        section = MAPPEDRAM.find(secs)
        if section is None:
            return restore(secs, attach_monitor, engine, output, str(path), **machine_kw)
        info = read_info(secs, str(path))
        size = MAPPEDRAM.parse(section, str(path))[0]
        if size != info.machine_mb << 20:
            raise BadImage(f"{path}: corrupt (mapped memory of {size:,} bytes for a machine "
                           f"of {info.machine_mb} MiB)")
        ram = MAPPEDRAM.map_ram(f, section, str(path), verify)
    return restore(secs, attach_monitor, engine, output, str(path), lambda m: None, ram=ram,
                   **machine_kw)


def read_image_file(path) -> tuple[list[Section], bytearray, VmInfo]:
    """An image's sections other than its memory, its memory (read, whatever its
    layout: compressed or mapped), and its description."""
    with open_file(path) as f:
        secs = list(SectionReader(f, str(path)))
        info = read_info(secs, str(path))
        ram = bytearray(info.machine_mb << 20)
        mem = [s for s in secs if s.kind in (RAM, MAPPEDRAM.MAPPED, RAMREF)]
        if mem and mem[0].kind == RAMREF:
            raise BadImage(f"{path}: refers to pages in another store (export it first)")
        if not mem:
            raise BadImage(f"{path}: has no memory section")
        if mem[0].kind == RAM:
            RAMCODEC.decode_into(mem[0].payload, ram, str(path))
        else:
            got = MAPPEDRAM.read_ram(f, mem[0], str(path))
            if len(got) != len(ram):
                raise BadImage(f"{path}: corrupt (mapped memory of {len(got):,} bytes for a "
                               f"machine of {info.machine_mb} MiB)")
            ram = got
    return [s for s in secs if s not in mem], ram, info


def clone_file(src, dst) -> tuple[int, int]:
    """Copy the VM saved in ``src`` to ``dst`` as a mapped image, the base that any
    number of restores share copy-on-write; (apparent size, bytes of pages stored)."""
    secs, ram, _ = read_image_file(src)
    return MAPPEDRAM.save(dst, secs, ram)


def clone(machine: Machine, monitor=None, info: VmInfo | None = None, count: int = 1,
          attach_monitor: AttachMonitor | None = None, engine: str = "jit",
          outputs=None) -> list[tuple[Machine, object, VmInfo]]:
    """``count`` copies of a running VM that share its memory copy-on-write.

    The VM is captured once, in the mapped layout, into an anonymous in-memory
    file (``memfd``), and each copy maps it privately: a page is shared by all the
    copies until one of them writes it.  The VM itself runs on, on its own memory.
    """
    secs = capture(machine, monitor, info, include_ram=False)
    write, section, _, _ = MAPPEDRAM.pack(secs, machine.mem.ram)
    out = []
    with os.fdopen(os.memfd_create("ringvisor-clone", os.MFD_CLOEXEC), "w+b") as f:
        write(f)
        for k in range(count):
            ram = MAPPEDRAM.map_ram(f, section, "clone", verify=False)
            out.append(restore(secs, attach_monitor, engine, outputs[k] if outputs else None,
                               "clone", lambda m: None, ram=ram))
    return out
