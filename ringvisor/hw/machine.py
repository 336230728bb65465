"""The PC: CPU, memory, bus and devices assembled in one place, and its main loop.

The main loop runs the CPU up to the next timer deadline, fires the timers,
polls the host's sources (the serial lines' backends, a debugger's connection)
and, when the CPU halts, skips virtual time forward to the next deadline (or
waits for the host's input) — so a run is deterministic and an idle guest
costs nothing.  A run ends with a :class:`Stop` saying why: the guest's
isa-debug-exit status, a reset request, a triple fault (with a CPU report), a
halt nothing can wake, or the instruction limit.  A run can also *pause*
(``Stop("paused")``: a host debugger's breakpoint, or :meth:`Machine.pause`
from a source) and be resumed by calling :meth:`Machine.run` again; the guest
cannot tell, as its time is the instruction count.
"""

from __future__ import annotations

import struct
import select
import sys
import time
from dataclasses import dataclass, field
from typing import Callable

import iced_x86 as ix

from ringvisor.errors import ConfigError

from .boot import acpi, firmware
from .boot.multiboot import load_multiboot
from .boot.rom import load_rom
from .bus import IoBus
from .clock import VirtualClock
from .cpu import Cpu
from .devices import fwcfg
from .devices.acpipm import AcpiPm
from .devices.ata import AtaDisk, DiskImage
from .devices.cmos import Cmos
from .devices.coprocessor import IRQ as FERR_IRQ, CoprocessorError
from .devices.debugexit import DebugExit
from .devices.fwcfg import FwCfg
from .devices.hpet import HPET_BASE, HPET_SIZE, Hpet
from .devices.ioapic import IOAPIC_BASE, IOAPIC_SIZE, IoApic, IsaIrqs
from .devices.lapic import APIC_DEFAULT_BASE, APIC_WINDOW, ApicBus, LocalApic
from .devices.pci import PciHost, i440fx_bus
from .devices.pic import PicPair
from .devices.testdev import IOMEM_BASE as TESTDEV_IOMEM, IOMEM_LEN as TESTDEV_IOMEM_LEN, PcTestDev
from .devices.pit import Pit8254
from .devices.post import PostPorts
from .devices.reset import ResetControl
from .chardev import Chardev
from .devices.uart import Uart16550
from .devices.virtio import SharedLine, place as place_virtio
from .devices.virtio_blk import VirtioBlk
from .devices.virtio_console import VirtioConsole
from .faults import TripleFault, UnsupportedFeature
from .images import read_image, read_module  # noqa: F401 (re-exported)
from .memory import PhysicalMemory
from .state import EDX, IF, REG_NAMES, SEG_NAMES, DescriptorTable, Segment, reset_state
from .identify import CPUID_SIGNATURE
from .smp import MAX_CPUS, Processors

MAX_MEM_MB = 3584          # below the 4 GiB hole (no RAM above 4 GiB, even for PAE's 36 bits)
ATA_IRQ = 14               # the primary IDE channel's line
VIRTIO_IO_BASE = 0xC200    # virtio functions' I/O BARs: above the ones i440fx_bus places
SLICE = 1_000_000          # instructions between polls of host input
IDLE_AFTER_INPUT = 10      # seconds of virtual time a guest may idle after its input ended
COM = ((0x3F8, 4), (0x2F8, 3))   # the PC's serial ports: (base, IRQ) of COM1, COM2


@dataclass
class Stop:
    """Why a run ended: ``status`` is the process exit status ringvisor reports."""

    reason: str            # "exit", "reset", "triple-fault", "halted", "limit", "quit", "paused",
    #                        "input-ended" (end_of_input)
    status: int
    message: str = ""


class Machine:
    def __init__(self, mem_mb: int = 32, engine: str = "jit", cpu_hz: int = 100_000_000,
                 output: Callable[[bytes], None] | None = None, pace: bool = False,
                 keep_source: bool = False, serial_ports: int = 1, ram=None,
                 cpus: int = 1) -> None:
        if not 1 <= mem_mb <= MAX_MEM_MB:
            raise ConfigError(f"memory size must be between 1 and {MAX_MEM_MB} MiB, not {mem_mb}")
        if not 1 <= cpus <= MAX_CPUS:
            raise ConfigError(f"the PC has 1 to {MAX_CPUS} processors, not {cpus}")
        # ``ram``: a buffer to use as RAM instead of a fresh one (memory.py: a private file
        # mapping, for lazy restore and copy-on-write clones)
        self.mem = PhysicalMemory(mem_mb << 20, ram)
        self.bus = IoBus()
        self.clock = VirtualClock(cpu_hz, pace=pace)
        self.cpus = [Cpu(self.mem, self.bus, engine, keep_source=keep_source) for _ in range(cpus)]
        self.cpu = self.cpus[0]            # the bootstrap processor
        # the processors fw_cfg and the MADT describe: this machine's, or the virtual ones a
        # monitor multiplexes on its one processor (vmm/vcpus.py)
        self.firmware_cpus = cpus
        self.output = output or (lambda b: None)
        # the interrupt architecture of QEMU's i440FX PC: the 8259A pair's INT output is the
        # BSP's local APIC's LINT0, the ISA lines also drive the IO-APIC (devices/ioapic.py)
        self.apic_bus = ApicBus()
        self.pic = PicPair(self.bus, self._pic_output)
        for i, cpu in enumerate(self.cpus):
            cpu.apic = LocalApic(cpu, self.clock, self.apic_bus, i, i == 0, self.pic if i == 0 else None)
            cpu.connect_interrupt_controller(cpu.apic.acknowledge)
            if i:
                cpu.state_name = f"cpu{i}"
        self.lapic = self.cpu.apic
        self.smp = Processors(self, CPUID_SIGNATURE) if cpus > 1 else None
        if self.smp is None:
            self.clock.attach(lambda: self.cpu.state.icount)
            self.clock.on_schedule = lambda cycle: self.cpu.shorten(cycle - self.clock.offset)
        else:
            self.clock.attach(self.smp.cycles)
            self.clock.on_schedule = self.smp.shorten
        for cpu in self.cpus:
            cpu.cycles = self.clock.cycles      # one time-stamp counter rate for them all
        self.ioapic = IoApic(self.apic_bus, self.pic)
        self.irqs = IsaIrqs(self.pic, self.ioapic)
        self.mem.add_mmio(APIC_DEFAULT_BASE, APIC_WINDOW, self.apic_bus)
        self.mem.add_mmio(IOAPIC_BASE, IOAPIC_SIZE, self.ioapic)
        self.pit = Pit8254(self.bus, self.clock, lambda: self.irqs.raise_irq(0),
                           lambda: self.irqs.lower_irq(0))
        if not 1 <= serial_ports <= len(COM):
            raise ConfigError(f"the PC has 1 to {len(COM)} serial ports, not {serial_ports}")
        # COM2 exists only when asked for, as on QEMU (one UART per -serial)
        self.uarts = [Uart16550(self.bus, base, lambda irq=irq: self.irqs.raise_irq(irq),
                                lambda irq=irq: self.irqs.lower_irq(irq), clock=self.clock)
                      for base, irq in COM[:serial_ports]]
        self.uart = self.uarts[0]
        self.uart.output = self._serial_out
        # the firmware interfaces of QEMU's PC: fw_cfg, the ACPI PM block, the HPET
        self.fw_cfg = FwCfg(self.bus, self.mem)
        self.acpi_pm = AcpiPm(self.bus, self.clock, self._on_poweroff)
        self.hpet = Hpet(self.clock, self.irqs)
        self.mem.add_mmio(HPET_BASE, HPET_SIZE, self.hpet)
        self.debug_exit = DebugExit(self.bus, self._on_exit)
        self.cmos = Cmos(self.bus, self.clock, self.mem.size,
                         irq_raise=lambda: self.irqs.raise_irq(8), irq_lower=lambda: self.irqs.lower_irq(8),
                         fpu=True)          # the x87 (hw/fpu.py): CPUID leaf 1 says so too
        # (0xCF9 lies inside the PCI host's ports, which hand it to the reset control)
        self.reset_control = ResetControl(self.bus, self._on_reset, cf9=False)
        self.pci = PciHost(self.bus, self.mem, self.reset_control)
        i440fx_bus(self.pci)
        self.testdev = PcTestDev(self.bus, self.irqs)
        self.mem.add_mmio(TESTDEV_IOMEM, TESTDEV_IOMEM_LEN, self.testdev)
        self.coprocessor = CoprocessorError(self.bus, self.cpu,
                                            lambda: self.irqs.raise_irq(FERR_IRQ),
                                            lambda: self.irqs.lower_irq(FERR_IRQ))
        # (a logic analyser on the POST ports: no state the guest can see, so not saved)
        self.post = PostPorts(self.bus, lambda: self.cpu.state.icount)
        # every device, by the name its state is saved under (ringvisor.lifecycle); the
        # interrupt controller last, so that restoring it settles the lines the others drive
        self.devices = {d.state_name: d for d in (self.pit, *self.uarts, self.cmos,
                                                  self.reset_control, self.debug_exit,
                                                  self.coprocessor, self.post, self.fw_cfg,
                                                  self.acpi_pm, self.hpet, self.pci, self.testdev,
                                                  self.ioapic, self.pic, self.apic_bus)}
        # the host's sources of events: objects with fileno() (None: nothing to wait on)
        # and poll(), polled between slices and waited on while the guest is idle
        self.disk = None           # an AtaDisk once attach_disk is called
        self.virtio_disk = self.virtio_console = None
        self._pci_lines: dict[int, SharedLine] = {}
        self._virtio_io = VIRTIO_IO_BASE
        self.sources: list = []
        # a log of the host's input (ringvisor.lifecycle.replay) or None: told of every
        # byte a serial line brings and of how each wait of the halted guest ended; a
        # replay's log (``scripted``) decides how the waits end, from the recording
        self.input_log = None
        # a piped session (``end_of_input``): pace virtual time while input may still come;
        # once it has ended, a guest halted and silent for IDLE_AFTER_INPUT ends the run
        self.pace_while_input = False
        self.input_ended = False
        self._quiet_cycles = 0
        self.slice = SLICE
        self.pause_reason: str | None = None
        self.stop: Stop | None = None
        self.wall_seconds = 0.0

    def attach_disk(self, path: str, readonly: bool = False):
        """An ATA disk on the primary IDE channel (IRQ 14), backed by a raw image file
        (QEMU's ``-drive file=PATH,format=raw,if=ide``)."""
        image = DiskImage(path, readonly)
        self.disk = AtaDisk(self.bus, image, lambda: self.irqs.raise_irq(ATA_IRQ),
                            lambda: self.irqs.lower_irq(ATA_IRQ))
        self._add_device(self.disk)
        return self.disk

    def _add_device(self, dev) -> None:
        # saved before the interrupt controllers, which settle the lines last
        last = [self.devices.pop(d.state_name) for d in (self.ioapic, self.pic, self.apic_bus)]
        self.devices[dev.state_name] = dev
        for d in last:
            self.devices[d.state_name] = d

    def attach_virtio_disk(self, path: str, readonly: bool = False) -> VirtioBlk:
        """A virtio-blk function on PCI bus 0 backed by a raw image file (QEMU's
        ``-device virtio-blk-pci,disable-modern=on,drive=...``)."""
        if self.virtio_disk is not None:
            raise ConfigError("the PC has one virtio disk")
        self.virtio_disk = self._add_virtio(VirtioBlk(self.mem, DiskImage(path, readonly)))
        return self.virtio_disk

    def attach_virtio_console(self) -> VirtioConsole:
        """A virtio console (one port) on PCI bus 0; it shares COM1's host side: its output
        goes where COM1's goes, and COM1's input comes to it instead (QEMU's
        ``-device virtio-serial-pci,disable-modern=on -device virtconsole``)."""
        if self.virtio_console is not None:
            raise ConfigError("the PC has one virtio console")
        self.virtio_console = self._add_virtio(VirtioConsole(self.mem, lambda b: self.uart.output(b)))
        return self.virtio_console

    def _add_virtio(self, dev):
        def line(irq: int) -> SharedLine:
            if irq not in self._pci_lines:
                self._pci_lines[irq] = SharedLine(lambda: self.irqs.raise_irq(irq),
                                                  lambda: self.irqs.lower_irq(irq))
            return self._pci_lines[irq]
        self._virtio_io = place_virtio(self.pci, dev, line, self._virtio_io)
        self._add_device(dev)
        return dev

    def components(self) -> list:
        """What a saved machine is made of, in the order it is restored: the CPU (its
        instruction counter drives the clock), the clock, then the devices (which
        re-arm their timers on it); the application processors after the BSP.  RAM is saved page by page beside them."""
        return [*self.cpus, self.clock, *self.devices.values()]

    # -- dirty logging (live migration) ------------------------------------------------
    def log_dirty(self) -> set[int]:
        """Log writes to RAM from now on; the physical pages written since the previous
        call (a round of pre-copy: Clark et al., NSDI 2005), empty the first time.

        Every write reaches RAM through the TLB (whatever page tables the CPU walks:
        the guest's own natively, the shadow tables under a monitor) or through the
        memory's slow path (page-walk A/D bits, devices, the monitors' own writes);
        ``Mmu.log_writes`` sends the first write to each page down the slow path."""
        pages = self.mem.dirty if self.mem.dirty is not None else set()
        self.mem.dirty = set()
        self.cpu.mmu.log_writes(True)
        return pages

    def stop_dirty_log(self) -> set[int]:
        """Stop logging; the pages written since the last ``log_dirty``."""
        pages = self.mem.dirty if self.mem.dirty is not None else set()
        self.mem.dirty = None
        self.cpu.mmu.log_writes(False)
        return pages

    # -- devices' callbacks ------------------------------------------------------------
    def _pic_output(self, level: bool) -> None:
        self.lapic.pic_output(level)

    def _serial_out(self, data: bytes) -> None:
        self.output(data)

    def _on_exit(self, status: int) -> None:
        self.stop = Stop("exit", status)
        self.cpu.request_stop()

    def _on_poweroff(self) -> None:
        self.stop = Stop("poweroff", 0, "the guest powered the machine off (ACPI S5)")
        self.cpu.request_stop()

    def _on_reset(self) -> None:
        self.stop = Stop("reset", 0, "the guest requested a system reset")
        self.cpu.request_stop()

    # -- boot ------------------------------------------------------------------------
    def boot_multiboot(self, image: bytes, cmdline: str = "",
                       modules: list[tuple[str, bytes, str]] | None = None,
                       image_name: str = "kernel", ram_size: int | None = None) -> None:
        """Hand the PC over as QEMU's firmware does (hw/boot/firmware.py), then load
        ``image`` as its Multiboot loader does, and set the CPU to the entry state."""
        ram = self.mem.size if ram_size is None else min(ram_size, self.mem.size)
        firmware.hand_off(self.mem, self.bus, self.cmos, ram, fpu=True,
                          drives=(self.disk.geometry,) if self.disk else (),
                          other_disks=int(self.virtio_disk is not None))
        info = load_multiboot(self.mem, image, cmdline, modules or [], image_name, ram)
        self.firmware_apic()
        self._firmware_tables(ram)
        ms = info.machine_state()
        st = self.cpu.state
        for i, name in enumerate(REG_NAMES):
            st.regs[i] = ms[name]
        st.eip = ms["eip"]
        for i, name in enumerate(SEG_NAMES):
            st.segs[i] = Segment.from_kvm(ms[name])
        st.ldtr = Segment.from_kvm(ms["ldt"])
        st.tr = Segment.from_kvm(ms["tr"])
        st.gdtr = DescriptorTable(ms["gdt"]["base"], ms["gdt"]["limit"])
        st.idtr = DescriptorTable(ms["idt"]["base"], ms["idt"]["limit"])
        st.cr0, st.cr2, st.cr3, st.cr4 = ms["cr0"], ms["cr2"], ms["cr3"], ms["cr4"]
        self.cpu.set_eflags(ms["eflags"])
        self.cpu.mode_changed()

    def firmware_apic(self) -> None:
        """The local APIC as SeaBIOS leaves it on QEMU (read back there by tests/hwguests/apic):
        software-enabled with spurious vector 0xFF, LINT0 ExtINT and LINT1 NMI, both
        level-triggered -- the 8259A's interrupts reach the processor through LINT0."""
        for offset, value in ((0xF0, 0x1FF), (0x350, 0x8700), (0x360, 0x8400)):
            self.lapic.mmio_write(offset, 4, value)

    def _firmware_tables(self, ram_size: int) -> None:
        """fw_cfg's items and the ACPI tables, as QEMU and SeaBIOS leave them for a kernel."""
        cpus = self.firmware_cpus
        f = self.fw_cfg
        f.add(fwcfg.RAM_SIZE, struct.pack("<Q", ram_size))
        f.add(fwcfg.NOGRAPHIC, struct.pack("<H", 0))
        f.add(fwcfg.NB_CPUS, struct.pack("<H", cpus))
        f.add(fwcfg.MAX_CPUS, struct.pack("<H", cpus))
        f.add(fwcfg.IRQ0_OVERRIDE, struct.pack("<I", 1))
        acpi.install(self.mem, ram_size, cpus)
        tables, rsdp = acpi.build(0, cpus, sealed=False)
        f.add_file("etc/acpi/rsdp", rsdp)
        f.add_file("etc/acpi/tables", tables)
        # QEMU's own E820 table: the RAM below 4 GiB, and above it what did not fit
        low, high = firmware.ram_split(ram_size)
        e820 = struct.pack("<QQI", 0, low, 1)
        if high:
            e820 += struct.pack("<QQI", 1 << 32, high, 1)
        f.add_file("etc/e820", e820)

    def boot_bios(self, rom: bytes, name: str = "ROM") -> None:
        """Map a firmware ROM (boot/rom.py) and start the CPU at the reset vector in real
        mode, as after RESET (SDM Vol. 3 Table 9-1; EDX holds the CPUID signature)."""
        load_rom(self.mem, rom, name)
        st = reset_state()
        st.regs[EDX] = CPUID_SIGNATURE
        self.cpu.set_state(st.to_dict())

    # -- the host's side -------------------------------------------------------------
    def feed_input(self, data: bytes) -> None:
        (self.virtio_console or self.uart).feed(data)

    def feed_serial(self, index: int, data: bytes) -> None:
        """Bytes from the host for serial port ``index`` (a backend's, or a replay's)."""
        if self.input_log is not None:
            self.input_log.fed(index, data)
        (self.virtio_console if index == 0 and self.virtio_console else self.uarts[index]).feed(data)

    def connect_serial(self, index: int, backend: Chardev) -> None:
        """Connect serial port ``index`` (0: COM1) to a host backend (chardev.py)."""
        uart = self.uarts[index]

        def write(data: bytes) -> None:
            self._quiet_cycles = 0              # the guest talks: it is not waiting idle
            backend.write(data)
        uart.output = write
        self.sources.append(_SerialLine(backend, self, index))

    def _input_live(self) -> bool:
        """May input still come on a serial line (a pipe or a terminal not at its end)?"""
        return any(isinstance(s, _SerialLine) and s.live and not s.backend.eof
                   for s in self.sources)

    def end_of_input(self) -> None:
        """A serial line's input ended (a script piped in): nothing more will come, so
        time is skipped freely again and a guest that waits for more, halted and silent,
        for IDLE_AFTER_INPUT of virtual time ends the run (``skip_to_next_event``) -- a
        shell at its prompt after the script's last line, which QEMU would keep for ever."""
        self.input_ended = True
        self._quiet_cycles = 0
        if self.pace_while_input:
            self.clock.pacing = False

    def quit(self, message: str = "stopped by the user") -> None:
        """End the run at the next instruction boundary (the user asked)."""
        self.stop = Stop("quit", 0, message)
        self.cpu.request_stop()

    def pause(self, reason: str) -> None:
        """Pause the run at the next instruction boundary (``run`` returns ``Stop("paused")``)."""
        self.pause_reason = reason
        self.cpu.limit = 0

    def _poll_host(self) -> None:
        for s in self.sources:
            s.poll()

    def wait_host(self, timeout: float | None, idle: bool = False) -> bool:
        """Wait until a source has something or ``timeout`` passes; poll the sources if
        one has.  True if one had (False too when there is nothing to wait on).
        ``idle``: the halted guest's wait, whose end the input log records (or decides)."""
        fds = [fd for fd in (s.fileno() for s in self.sources) if fd is not None]
        ready = False
        if fds:
            try:
                ready = bool(select.select(fds, [], [], timeout)[0])
            except (InterruptedError, OSError, ValueError):
                ready = True            # a closed descriptor: its poll finds out
        if idle and self.input_log is not None:
            ready = self.input_log.waited(ready)
        if ready:
            self._poll_host()
        return ready

    # -- running ----------------------------------------------------------------------
    def step(self) -> None:
        """Execute one instruction, taking no interrupt and firing no timer (a
        debugger's single step, as QEMU's gdbstub steps by default)."""
        try:
            self.cpu.step()
        except TripleFault as e:
            self.stop = Stop("triple-fault", 3, f"triple fault: {e}\n{self.report()}")
        except UnsupportedFeature as e:
            self.stop = Stop("unsupported", 3, f"stopped: {e}\n{self.report()}")

    def run(self, max_instructions: int | None = None) -> Stop:
        if self.smp is not None:
            return self._run_smp(max_instructions)
        cpu, clock = self.cpu, self.clock
        st = cpu.state
        limit = None if max_instructions is None else st.icount + max_instructions
        self.pause_reason = None
        cpu.host.event = None
        if self.pace_while_input and not clock.pacing and self._input_live():
            clock.pacing = True       # (its timers at their wall-clock times, as on QEMU)
        t0 = time.perf_counter()
        try:
            while self.stop is None:
                if self.pause_reason is not None or cpu.host.event is not None:
                    return Stop("paused", 0, self.pause_reason or cpu.host.event.kind)
                deadline = clock.next_deadline()
                # slices end at multiples of the slice, so a run restored from a save
                # polls at the same instructions as the run it continues
                until = (st.icount // self.slice + 1) * self.slice
                if deadline is not None:
                    until = min(until, max(deadline - clock.offset, st.icount + 1))
                if limit is not None:
                    if st.icount >= limit:
                        self.stop = Stop("limit", 4, f"stopped after {max_instructions} instructions")
                        break
                    until = min(until, limit)
                cpu.run(until)
                clock.run_due()
                self._poll_host()
                if st.halted and self.stop is None:
                    self._idle()
        except TripleFault as e:
            self.stop = Stop("triple-fault", 3, f"triple fault: {e}\n{self.report()}")
        except UnsupportedFeature as e:
            self.stop = Stop("unsupported", 3, f"stopped: {e}\n{self.report()}")
        finally:
            self.wall_seconds += time.perf_counter() - t0
        return self.stop

    def _run_smp(self, max_instructions: int | None) -> Stop:
        self.pause_reason = None
        t0 = time.perf_counter()
        try:
            return self.smp.run(max_instructions)
        finally:
            self.wall_seconds += time.perf_counter() - t0

    def _idle(self) -> None:
        """The CPU is halted: skip to the next event, or wait for the host's input."""
        cpu = self.cpu
        st = cpu.state
        if st.intr and (st.eflags & IF or cpu.intr_exits) or st.nmi_pending and not st.nmi_blocked:
            return
        if not st.eflags & IF and not cpu.intr_exits:
            self.stop = Stop("halted", 0, f"the guest halted with interrupts disabled at "
                                          f"eip={st.eip:#010x}")
            return
        self.skip_to_next_event("the guest halted and nothing can wake it")

    def skip_to_next_event(self, nothing: str) -> None:
        """Nothing can run: jump virtual time to the next timer, or wait for the host's
        input (pacing, or no timer at all); stop with ``nothing`` if nothing can come."""
        clock = self.clock
        deadline = clock.next_deadline()
        log = self.input_log
        # a replay's log is asked on every halt, since the run it replays may have waited
        # for input on the wall clock where the replay does not
        if deadline is None or clock.pacing or (log is not None and log.scripted):
            wait = None if deadline is None else clock.wall_delay(deadline)
            if self.wait_host(wait, idle=True):
                return
        if deadline is None:
            if any(u.has_pending_input() for u in self.uarts):
                return
            self.stop = Stop("halted", 0, nothing)
            return
        if self.input_ended and not any(u.has_pending_input() for u in self.uarts):
            self._quiet_cycles += max(0, deadline - clock.cycles())
            if self._quiet_cycles >= IDLE_AFTER_INPUT * clock.cpu_hz:
                self.stop = Stop("input-ended", 0, f"the input has ended and the guest has "
                                 f"waited {IDLE_AFTER_INPUT} s (virtual time) for more without "
                                 f"writing anything: stopped")
                return
        clock.advance_to(deadline)

    # -- reports --------------------------------------------------------------------------
    def report(self, cpu: Cpu | None = None) -> str:
        """A processor's state (the BSP's by default) and the recent history, for crash reports."""
        cpu = cpu or self.cpu
        st = cpu.state
        lines = []
        regs = " ".join(f"{n}={st.regs[i]:08x}" for i, n in enumerate(REG_NAMES))
        lines.append(f"  {regs}")
        lines.append(f"  eip={st.eip:08x} eflags={cpu.get_eflags():08x} cpl={cpu.cpl} "
                     f"cr0={st.cr0:08x} cr2={st.cr2:08x} cr3={st.cr3:08x} cr4={st.cr4:08x}")
        segs = " ".join(f"{n}={s.selector:04x}" for n, s in zip(SEG_NAMES, st.segs))
        lines.append(f"  {segs} gdt={st.gdtr.base:08x}/{st.gdtr.limit:x} "
                     f"idt={st.idtr.base:08x}/{st.idtr.limit:x} tr={st.tr.selector:04x}")
        if cpu.exceptions:
            lines.append("  exceptions: " + ", ".join(f"{e} at {a:08x}" for a, e in cpu.exceptions))
        lines.append("  instructions at eip:")
        lines.extend("    " + l for l in self.disassemble(st.eip, 6, cpu))
        for a in dict.fromkeys(a for a, _ in list(cpu.exceptions)[-3:]):
            if a != st.eip:
                lines.append(f"  instructions at {a:08x} (a recent exception):")
                lines.extend("    " + l for l in self.disassemble(a, 4, cpu))
        return "\n".join(lines)

    def disassemble(self, eip: int, count: int, cpu: Cpu | None = None) -> list[str]:
        cpu = cpu or self.cpu
        phys = cpu.mmu.probe(eip)
        if phys is None or not self.mem.is_ram(phys):
            return [f"{eip:08x}: <not mapped>"]
        data = self.mem.read(phys, 15 * count)
        dec = ix.Decoder(32 if cpu.mode.cs32 else 16, data, ip=eip)
        out = []
        for ins in dec:
            out.append(f"{ins.ip:08x}: {ins}")
            if len(out) >= count or ins.flow_control != ix.FlowControl.NEXT:
                break
        return out

    def stats(self) -> dict:
        """The machine's counters (summed over the processors, each one's under "cpus")."""
        cpus = self.cpus
        n = sum(c.state.icount for c in cpus)
        s = {
            "instructions": n,
            "wall_seconds": self.wall_seconds,
            "mips": n / self.wall_seconds / 1e6 if self.wall_seconds else 0.0,
            "blocks_translated": sum(c.cache.translations for c in cpus),
            "code_cache_blocks": sum(len(c.cache.blocks) for c in cpus),
            "code_cache_bytes": sum(c.cache.bytes for c in cpus),
            "invalidations": sum(c.cache.invalidations for c in cpus),
            "smc_restarts": sum(c.stats["smc_restarts"] for c in cpus),
            "exceptions": sum(c.stats["exceptions"] for c in cpus),
            "interrupts": sum(c.stats["interrupts"] for c in cpus),
            "tlb_walks": sum(c.mmu.stats_walks for c in cpus),
            "post_writes": self.post.writes,
            "post_last": self.post.last,
        }
        for dev in (self.virtio_disk, self.virtio_console):
            if dev is not None:
                s[dev.state_name] = {**dev.stats, "broken": dev.broken}
        if len(cpus) > 1:
            s["cpus"] = [{"apic_id": c.apic.initial_id, "instructions": c.state.icount,
                          "exceptions": c.stats["exceptions"], "interrupts": c.stats["interrupts"],
                          "blocks_translated": c.cache.translations,
                          "started": not c.apic.s.wait_for_sipi} for c in cpus]
        return s


class _SerialLine:
    """A serial port's backend as a source of host input for the main loop."""

    def __init__(self, backend: Chardev, machine: Machine, index: int) -> None:
        self.backend = backend
        self.machine = machine
        self.index = index
        # input that ends, after which nothing more can come: a script piped in, a file
        self.live = getattr(backend, "input_ends", False)

    def fileno(self) -> int | None:
        return None if self.backend.eof else self.backend.fileno()

    def poll(self) -> None:
        data = self.backend.read()
        if data:
            self.machine.feed_serial(self.index, data)
        if self.live and self.backend.eof and not self.machine.input_ended:
            self.machine.end_of_input()


def run_image(path, cmdline: str = "", mem_mb: int = 32, stdin: bytes = b"",
              max_instructions: int | None = None, engine: str = "jit",
              modules: list[str] | None = None, serial_ports: int = 1,
              cpus: int = 1) -> tuple[bytes, int]:
    """Boot a Multiboot image, feed ``stdin`` to COM1; return (serial output, exit status)."""
    out = bytearray()
    m = Machine(mem_mb, engine, output=out.extend, serial_ports=serial_ports, cpus=cpus)
    image = read_image(path, max_bytes=m.mem.size)
    mods = [read_module(str(p), m.mem.size) for p in (modules or [])]
    m.boot_multiboot(image, cmdline, mods, image_name=str(path))
    if stdin:
        m.feed_input(stdin)
    stop = m.run(max_instructions)
    if stop.reason != "exit" and stop.message:
        print(f"ringvisor: {stop.message}", file=sys.stderr)
    return bytes(out), stop.status
