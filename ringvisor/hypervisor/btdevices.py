"""A bt domain's PC: the devices an unmodified kernel finds, served by the hypervisor.

An unmodified kernel talks to hardware: an 8259A pair, the 8254 timer, a
16550A on COM1, and QEMU's isa-debug-exit to end a run.  The machine's own
devices belong to the hypervisor and Domain 0, so a domain under binary
translation gets a set of its own (as Xen's HVM guests get theirs from the
device model), built from the same device models as the machine
(``ringvisor.hw.devices``) on a port bus of the domain's, programmed as
SeaBIOS leaves them (``firmware.program_devices``):

- the PIC pair is the monitor's virtual one (``vmm.platform``), which the
  other devices' lines reach;
- the PIT counts on the machine's virtual clock; its interrupt (a device
  line going up on the domain's PIC) wakes the domain and, when it is on the
  CPU, makes the hypervisor take it at once (``Hypervisor.kick``);
- the UART's transmitter writes into the domain's console ring, the page
  the toolstack's console back-end reads for every DomU (Xen's
  ``xencons_interface``, ``HVM_PARAM_CONSOLE_PFN``/``_EVTCHN``), and what
  the back-end puts in the ring's ``in`` half is the UART's receive line:
  ``xl console`` and ``console/NAME.log`` serve a bt domain as a PV one;
- a write to isa-debug-exit shuts the domain down: poweroff for status 0,
  a crash otherwise (as the PV runtime maps it, ``guests/pv/io.c``);
- a disk, if the toolstack gave it one (``RV_BLKBACK_attach_ata``): the PC's
  ATA disk on the primary IDE channel (IRQ 14) over a raw image file on the
  host, emulated in the hypervisor's process -- the chapter's hosted
  structure, as ``ringvisor run --disk`` gives a lone VM.
"""

from __future__ import annotations

import struct

from ringvisor.abi import (XENCONS_IN_SIZE, XENCONS_INTERFACE, XENCONS_OUT_SIZE, Shutdown,
                           ring_read, ring_write)
from ringvisor.hw.boot import firmware
from ringvisor.hw.bus import IoBus
from ringvisor.hw.devices.ata import AtaDisk
from ringvisor.hw.devices.debugexit import DebugExit
from ringvisor.hw.devices.pic import PicPair
from ringvisor.hw.devices.pit import Pit8254
from ringvisor.hw.devices.uart import Uart16550
from ringvisor.vmm.platform import VirtualPlatform

from .evtchn import EvtchnError

COM1, COM1_IRQ, PIT_IRQ, ATA_IRQ = 0x3F8, 4, 0, 14
PIT_CONTROL, PIT_CH0_ONESHOT_NO_COUNT = 0x43, 0x30     # channel 0 waits for a count: silent
O_IN, O_OUT = XENCONS_INTERFACE.offset("in"), XENCONS_INTERFACE.offset("out")
O_IDX = XENCONS_INTERFACE.offset("in_cons")          # in_cons, in_prod, out_cons, out_prod
MAX_PENDING = 1 << 20                                  # output held while the ring is full


class ConsoleRing:
    """The front-end half of a domain's console ring, written by the hypervisor for the
    domain's UART: output into ``out`` (what does not fit waits for the back-end to
    drain it), input from ``in``; the event channel tells the back-end."""

    def __init__(self, mem, dom, ring: int, port: int, receive) -> None:
        self.mem, self.dom, self.ring, self.port = mem, dom, ring, port
        self.receive = receive                 # the UART's receive line
        self.pending = bytearray()
        self.stats = {"bytes_out": 0, "bytes_in": 0, "dropped": 0}

    def _idx(self) -> tuple[int, int, int, int]:
        return struct.unpack("<4I", self.mem.read(self.ring + O_IDX, 16))

    def write(self, data: bytes) -> None:
        self.pending += data
        if len(self.pending) > MAX_PENDING:
            self.stats["dropped"] += len(self.pending) - MAX_PENDING
            del self.pending[:len(self.pending) - MAX_PENDING]
        self.push()

    def push(self) -> None:
        """Move what fits of the held output into the ring, and tell the back-end."""
        if not self.pending:
            return
        _, _, cons, prod = self._idx()
        room = XENCONS_OUT_SIZE - ((prod - cons) & 0xFFFFFFFF)
        n = min(max(room, 0), len(self.pending))
        ring_write(self.mem.write, self.ring + O_OUT, XENCONS_OUT_SIZE, prod, self.pending[:n])
        if n:
            self.mem.write(self.ring + O_IDX + 12, struct.pack("<I", (prod + n) & 0xFFFFFFFF))
            del self.pending[:n]
            self.stats["bytes_out"] += n
            self.notify()

    def event(self) -> None:
        """The back-end signalled the ring: it drained output, or typed input."""
        cons, prod, _, _ = self._idx()
        n = (prod - cons) & 0xFFFFFFFF
        if 0 < n <= XENCONS_IN_SIZE:
            data = ring_read(self.mem.read, self.ring + O_IN, XENCONS_IN_SIZE, cons, n)
            self.mem.write(self.ring + O_IDX, struct.pack("<I", prod))
            self.stats["bytes_in"] += n
            self.receive(data)
            self.notify()
        self.push()

    def notify(self) -> None:
        try:
            self.dom.events.send(self.port)
        except EvtchnError:
            pass                               # no back-end bound (yet, or any more)


class DomainDevices:
    """The devices of one bt domain, and its virtual platform (``platform``) over them."""

    def __init__(self, hv, dom, name: str) -> None:
        self.hv, self.dom = hv, dom
        clock = hv.clock
        self.bus = bus = IoBus()
        firmware_pic = PicPair(bus, lambda level: None)     # what the firmware programs
        self.pit = Pit8254(bus, clock, lambda: self._line(PIT_IRQ, True),
                           lambda: self._line(PIT_IRQ, False))
        self.uart = Uart16550(bus, COM1, lambda: self._line(COM1_IRQ, True),
                              lambda: self._line(COM1_IRQ, False), output=self._output,
                              clock=clock)
        DebugExit(bus, self._exit)
        self.platform = None
        firmware.program_devices(bus)
        # the guest's PIC pair starts as the firmware left the one on its bus
        self.platform = VirtualPlatform(bus, firmware_pic, None, name)
        self.console: ConsoleRing | None = None
        self.early = bytearray()               # printed before the ring was known
        self.disk: AtaDisk | None = None
        self.saved_disk: dict | None = None   # a restored domain's disk registers (btsave)
        self.closed = False

    def attach_disk(self, image) -> bool:
        """The ATA disk on the primary IDE channel (False: it has one already)."""
        if self.disk is not None:
            return False
        disk = AtaDisk(self.platform.bus, image, lambda: self._line(ATA_IRQ, True),
                       lambda: self._line(ATA_IRQ, False))
        if self.saved_disk is not None:
            # the disk a restored domain had: its registers, a transfer under way (a disk
            # of another size is refused: DiskError, and the domain has none)
            disk.set_state(self.saved_disk)
            self.saved_disk = None
        self.disk = disk
        return True

    def connect_console(self, ring: int, port: int) -> None:
        """The console ring (machine address) and the domain's port for it."""
        self.console = ConsoleRing(self.hv.mem, self.dom, ring, port, self.uart.feed)
        self.dom.events.kernel_ports[port] = self.console.event
        if self.early:
            self.console.write(bytes(self.early))
            self.early.clear()

    def _output(self, data: bytes) -> None:
        if self.console is not None:
            self.console.write(data)
        else:
            self.early += data[:MAX_PENDING - len(self.early)]

    def _line(self, irq: int, level: bool) -> None:
        p = self.platform
        if p is None or self.closed:
            return                             # (the firmware's programming)
        p.vpic.set_irq(irq, level)
        if level and p.intr:
            self.hv.device_interrupt(self.dom)

    def _exit(self, status: int) -> None:
        value = status >> 1
        self.hv.printk(f"domain {self.dom.domid} wrote {value:#x} to isa-debug-exit")
        self.hv.shutdown(self.dom, Shutdown.poweroff if value & 0xFF == 0 else Shutdown.crash)

    def close(self) -> None:
        """The domain stopped: its timer falls silent (nothing more is scheduled for it),
        its disk image is closed."""
        if self.closed:
            return
        self.closed = True
        self.bus.write(PIT_CONTROL, 1, PIT_CH0_ONESHOT_NO_COUNT)
        if self.disk is not None:
            self.disk.image.close()
