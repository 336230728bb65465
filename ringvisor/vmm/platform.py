"""The virtual platform: the PC's devices as the guest kernel sees them.

The guest's port I/O traps (the real IOPL is 0 and the monitor's TSS has no
I/O bitmap), and the monitor performs it for the guest on an I/O bus of the
guest's own: every device of the machine, except the interrupt controllers.

The monitor owns the physical PICs from the moment it takes over.  Their
vector base must be the monitor's (``PIC_BASE``): left at the firmware's
(0x08, or 0 at power-on), the first timer tick would reach the monitor as a
processor exception.  So at takeover the monitor reprograms them to its own
vectors, all lines unmasked, and gives the guest a *virtual* 8259A pair
(the same model as the machine's, ``hw.devices.pic``) that starts in exactly
the state the hardware was in -- what the firmware left.  Every ICW, mask,
EOI, poll and register read of the guest goes to the virtual pair; every
physical interrupt is acknowledged and ended on the real PIC at once and
becomes an edge on the same line of the virtual pair, which then decides,
with the guest's own programming, whether and when the guest sees it (as
VMware's VMM and Xen's HVM emulate the PIC the guest programs).

What the guest cannot tell apart: its IRR shows a request from the moment the
device raised it (the real CPU always has interrupts on while a guest runs,
so the monitor hears of it at once), masked lines latch, the in-service
register and priorities follow its EOIs.  What it could: a line the guest
programs level-triggered (ELCR, ICW1.LTIM) still sees each physical
interrupt as an edge (the ISA devices of this PC are edge-triggered; the
PCI lines the firmware made level are below).

Under trap-and-emulate, binary translation and hardware assist the virtual
8259A's output goes to the guest's virtual local APIC (``vapic.py``), whose LINT0 it is, as on the
PC; the para-virtual monitor gives the guest no APIC, and the virtual PIC's
output is the guest's interrupt request itself.

The IO-APIC and the HPET (under trap-and-emulate, binary translation and hardware
assist): the
monitor owns the machine's -- at takeover it masks every redirection entry of the
physical IO-APIC and halts the physical HPET -- and gives the guest instances of
the same models (``hw.devices.ioapic``, ``hw.devices.hpet``: the rules are written
once, in hw), starting in the state the hardware held at takeover, whose MMIO
pages are trapped and emulated (``mmio.py``).  The guest's virtual IRQ lines are
wired as the PC's are (``IsaIrqs``: line n to the virtual 8259A and to virtual
IO-APIC pin n, IRQ 0 to pin 2), so a line the monitor raises for a physical
interrupt reaches both, and the guest's redirection entries decide: masking,
edge or level, remote IRR until the virtual local APIC's EOI broadcast (its
``ApicBus``, private to the guest, carries the IO-APIC's messages to it and its
EOIs back).  The virtual HPET runs on the machine's virtual clock, the guest's
time under these monitors (the monitors do not offset it; a guest's WRMSR to its
TSC moves only its TSC, as on the PC), and its timers raise the guest's virtual
lines or virtual IO-APIC pins; the virtual APIC then notifies the monitor as for
its own timer (``vapic.py``).

Level-triggered lines (the PCI INTx lines 10 and 11, which the firmware makes
level in the ELCR, as SeaBIOS does): the line stays up until the guest has
talked to the device (a virtio ISR read), so ending it on the real PIC at once
would interrupt the monitor again before the guest ran one instruction -- an
interrupt storm.  The monitor masks such a line on the real PIC and holds the
virtual line up instead; at each of the guest's writes to its PIC (its EOI) it
samples the real line: gone, the virtual line drops and the real one is
unmasked; still up, the guest is interrupted again by its own PIC (Xen masks a
level-triggered IO-APIC pin until the guest's EOI the same way; KVM's irqfd
"resample" is the same idea).  A guest that routes the line through its IO-APIC
ends it at its local APIC instead: the EOI broadcast samples the real lines
before the virtual IO-APIC sees it, so a line still up is delivered again by
the IO-APIC's own remote-IRR rule.  The IO-APIC's inputs 16-23, which no 8259A
line reaches, are held the same way: the
monitor programs those pins of the physical IO-APIC level-triggered at its own
vectors (``GSI_BASE``), masks a pin when it interrupts and raises the guest's
virtual pin, and at the guest's EOIs samples the physical input: low, the
virtual pin drops and the physical one is unmasked.  The pc-testdev's line ports
are the guest's own device: they drive the guest's virtual lines directly, at the
level written (``_testdev_line``).
"""

from __future__ import annotations

from ringvisor.hw.bus import IoBus
from ringvisor.hw.devices.hpet import CFG_ENABLE, Hpet
from ringvisor.hw.devices.ioapic import NUM_PINS, RED_LEVEL, RED_MASKED, IoApic, IsaIrqs
from ringvisor.hw.devices.testdev import IRQ_LINES as TESTDEV_IRQ_LINES
from ringvisor.hw.devices.pic import PicPair

from . import layout as L
from . import state as S

MASTER_CMD, MASTER_DATA, SLAVE_CMD, SLAVE_DATA = 0x20, 0x21, 0xA0, 0xA1
PIC_DEVICES = ("pic-master", "pic-slave", "elcr")
ICW1_ICW4, ICW4_8086 = 0x11, 0x01
OCW3_READ_ISR = 0x0B
SPECIFIC_EOI = 0x60
TESTDEV_IRQ_RANGE = "pc-testdev-irq"   # (hw/devices/testdev.py's port range)
GSI_FIRST = 16                   # IO-APIC inputs no 8259A line reaches (QEMU's PC: 16-23)
IOREGSEL, IOWIN, APIC_EOI = 0x00, 0x10, 0xB0


class VirtualPlatform:
    STATE = ("vpic", "vapic", "vioapic", "vhpet", "stats", "held")   # (vmm/state.py)
    WIRING = ("phys", "bus", "pic", "virqs", "mmio", "machine")

    def __init__(self, bus, pic, machine=None, name: str = "monitor") -> None:
        """``machine``: give the guest a virtual local APIC (``vapic.py``) in front of the
        virtual PIC, the monitor owning the machine's physical one."""
        self.phys = bus                      # the machine's I/O bus
        self.bus = IoBus()                   # the guest's: the machine's devices but the PICs
        for r in bus.ranges():
            if r.name not in PIC_DEVICES:
                # the pc-testdev's interrupt lines are the guest's own: they drive its
                # virtual lines at the level written (through the machine's lines, a line
                # of the 8259A's edge-triggered IRQs would reach the guest as one edge, and a
                # level-triggered IO-APIC pin kept high over the EOI was never delivered again)
                write = self._testdev_line if r.name == TESTDEV_IRQ_RANGE else r.write
                self.bus.register(r.first, r.count, r.read, write, r.name, r.max_access,
                                  owner=r.owner)
        self.vpic = PicPair(self.bus, lambda level: None)
        self.vpic.set_state(pic.get_state())  # exactly what the hardware holds at takeover
        self.vapic = self.vioapic = self.vhpet = self.mmio = None
        self.machine = machine
        if machine is not None:
            from .mmio import GuestMmio
            from .vapic import VirtualApic
            self.vapic = VirtualApic(machine, self.vpic, L.APIC_NOTIFY, name)
            self.vpic.set_intr = self.vapic.apic.pic_output
            apic_bus = self.vapic.apic.bus            # the guest's own APIC bus
            self.vioapic = IoApic(apic_bus, self.vpic)
            self.vioapic.set_state(machine.ioapic.get_state())
            # (first: a held level line the device lowered drops before the IO-APIC
            # looks at it again)
            apic_bus.eoi_listeners.insert(0, lambda vector: self.held and self._resample())
            self.virqs = IsaIrqs(self.vpic, self.vioapic)
            self.vhpet = Hpet(machine.clock, self.virqs)
            self.vhpet.set_state(machine.hpet.get_state())
            self.mmio = GuestMmio(machine, self)
        else:
            self.virqs = IsaIrqs(self.vpic, None)
        self.pic = pic                       # the machine's, to sample level-triggered lines
        self.held = 0                        # level lines held for the guest: PIC 0-15, IO-APIC 16-23
        self.stats = {"io": 0, "irqs": 0, "spurious": 0}

    def _testdev_line(self, port: int, size: int, value: int) -> None:
        self.virqs.set_gsi(port - TESTDEV_IRQ_LINES, bool(value))

    def get_state(self) -> dict:
        return S.get_attrs(self)

    def set_state(self, state: dict) -> None:
        if "held" not in state:              # saved before level-triggered lines were held
            state = {**state, "held": 0}
        # saved before the monitors had a virtual APIC, IO-APIC and HPET (none in the
        # state), or under hvm before it had them (None): the ones the monitor was built with
        for k in ("vapic", "vioapic", "vhpet"):
            if state.get(k) is None:
                state = {**state, k: S.get_attrs(self)[k]}
        S.set_attrs(self, state)

    def take_over(self) -> None:
        """Program the physical PICs to the monitor's vectors, every line open."""
        w = self.phys.write
        for cmd, data, base, wiring in ((MASTER_CMD, MASTER_DATA, L.PIC_BASE, 1 << 2),
                                        (SLAVE_CMD, SLAVE_DATA, L.PIC_BASE + 8, 2)):
            w(cmd, 1, ICW1_ICW4)
            w(data, 1, base)
            w(data, 1, wiring)
            w(data, 1, ICW4_8086)
            w(data, 1, 0)                    # OCW1: nothing masked (the guest's IMR is virtual)
            w(cmd, 1, OCW3_READ_ISR)         # reads of the command port show the ISR
        m = self.machine
        if m is not None:
            # the guest's IO-APIC and HPET are virtual: nothing of the machine's may
            # interrupt the monitor at a vector of the guest's choosing; the inputs only
            # the IO-APIC has come to the monitor's vectors (level: held, see above)
            for pin in range(NUM_PINS):
                self._ioapic_entry(pin, RED_MASKED if pin < GSI_FIRST else
                                   RED_LEVEL | (L.GSI_BASE + pin - GSI_FIRST), hi=0)
            m.hpet.mmio_write(0x010, 4, m.hpet.mmio_read(0x010, 4) & ~CFG_ENABLE)

    def _ioapic_entry(self, pin: int, lo: int, hi: int | None = None) -> None:
        """Program the physical IO-APIC's entry ``pin`` (low dword, and high if given)."""
        io = self.machine.ioapic
        if hi is not None:
            io.mmio_write(IOREGSEL, 4, 0x11 + 2 * pin)
            io.mmio_write(IOWIN, 4, hi)
        io.mmio_write(IOREGSEL, 4, 0x10 + 2 * pin)
        io.mmio_write(IOWIN, 4, lo)

    # -- physical interrupts -------------------------------------------------------------
    def physical_irq(self, real_vector: int) -> bool:
        """A real interrupt on ``real_vector``: end it on the real PIC and raise the line on
        the virtual one.  False if the vector is not a PIC's."""
        if self.vapic is not None and self.vapic.physical_irq(real_vector):
            self.stats["irqs"] += 1
            return True
        pin = real_vector - L.GSI_BASE + GSI_FIRST
        if self.machine is not None and GSI_FIRST <= pin < NUM_PINS:
            # an input only the IO-APIC has: held up for the guest, masked on the machine
            # until the device lowers it (``_resample``)
            self._ioapic_entry(pin, RED_MASKED | RED_LEVEL | real_vector)
            self.machine.lapic.mmio_write(APIC_EOI, 4, 0)
            self.stats["irqs"] += 1
            self.held |= 1 << pin
            self.virqs.set_gsi(pin, True)
            return True
        n = real_vector - L.PIC_BASE
        if not 0 <= n < 16:
            return False
        slave = n >= 8
        cmd = SLAVE_CMD if slave else MASTER_CMD
        real = bool(self.phys.read(cmd, 1) >> (n & 7) & 1)
        if real:
            self.phys.write(cmd, 1, SPECIFIC_EOI | (n & 7))
        if slave:
            self.phys.write(MASTER_CMD, 1, SPECIFIC_EOI | 2)   # the cascade input was taken
        if not real:
            # not in service: the 8259A's spurious IRQ 7/15 (the request went away before
            # the acknowledge); nothing happened on the line
            self.stats["spurious"] += 1
            return True
        self.stats["irqs"] += 1
        if self.pic.chips[n >> 3].s.elcr >> (n & 7) & 1:
            self._mask_real(n, True)
            self.held |= 1 << n
            self.virqs.set_irq(n, True)
        else:
            self.virqs.raise_irq(n)
            self.virqs.lower_irq(n)
        return True

    def _mask_real(self, n: int, masked: bool) -> None:
        port = SLAVE_DATA if n >= 8 else MASTER_DATA
        imr = self.phys.read(port, 1)
        bit = 1 << (n & 7)
        self.phys.write(port, 1, imr | bit if masked else imr & ~bit)

    def _resample(self) -> None:
        """The held level lines the devices have lowered: down on the virtual PIC, open
        again on the real one."""
        for n in range(16):
            if not self.held >> n & 1:
                continue
            bit = 1 << (n & 7)
            if not self.pic.chips[n >> 3].s.last_irr & bit:
                self.held &= ~(1 << n)
                self.virqs.set_irq(n, False)
                self._mask_real(n, False)
            else:
                v = self.vpic.chips[n >> 3].s
                if not (v.isr | v.irr) & bit:
                    # still up, and the guest is done with it: a new request, also where
                    # the guest programmed the line edge-triggered
                    self.vpic.set_irq(n, False)
                    self.vpic.set_irq(n, True)
        for pin in range(GSI_FIRST, NUM_PINS):
            if self.held >> pin & 1 and not self.machine.ioapic.s.irr >> pin & 1:
                self.held &= ~(1 << pin)
                self.virqs.set_gsi(pin, False)
                self._ioapic_entry(pin, RED_LEVEL | (L.GSI_BASE + pin - GSI_FIRST))

    @property
    def intr(self) -> bool:
        """An interrupt waits for the guest (the virtual APIC's output, or without one
        the virtual PIC's)."""
        return self.vapic.intr if self.vapic is not None else self.vpic.intr

    def acknowledge(self) -> tuple[int, int | None]:
        """The guest's INTA cycle: (IRQ, vector) of the highest-priority request, with the
        virtual PIC's in-service and request registers updated as the hardware does.
        Through a virtual APIC the IRQ is -1 and the vector None if the request went
        away (its TPR rose meanwhile)."""
        if self.vapic is not None:
            return -1, self.vapic.acknowledge()
        m, s = self.vpic.master, self.vpic.slave
        irq = m.pending_irq()
        if irq == 2:
            irq2 = s.pending_irq()
            irq = 8 + (irq2 if irq2 >= 0 else 7)
        elif irq < 0:
            irq = 7
        return irq, self.vpic.acknowledge()

    def irq_vector(self, irq: int) -> int:
        """The vector the guest's PIC programming gives ISA IRQ ``irq``."""
        return self.vpic.chips[irq >> 3].s.irq_base + (irq & 7)

    def end_of_interrupt(self, irq: int) -> None:
        """A specific EOI for ``irq`` on the virtual PIC (Xen's PHYSDEVOP_eoi)."""
        chip = self.vpic.chips[irq >> 3]
        if chip.s.isr >> (irq & 7) & 1:
            chip.write(0, SPECIFIC_EOI | (irq & 7))
            if irq >= 8:
                self.vpic.master.write(0, SPECIFIC_EOI | 2)

    # -- the guest's port I/O ------------------------------------------------------------
    def read(self, port: int, size: int) -> int:
        self.stats["io"] += 1
        return self.bus.read(port, size)

    def write(self, port: int, size: int, value: int) -> None:
        self.stats["io"] += 1
        self.bus.write(port, size, value)
        if self.held and port in (MASTER_CMD, SLAVE_CMD):
            self._resample()


class HypervisorTimer:
    """A one-shot timer interrupt of the hypervisor's own (the part a local APIC timer plays
    for Xen): the guest's ``set_timer_op`` must wake it even when the guest programmed no
    timer of its own, so the hypervisor needs an interrupt source the guest does not own.

    It is a second line into the CPU's INTR input beside the PIC's, with its own vector:
    the PIC's output is routed through here, and the interrupt acknowledge cycle answers
    with ``vector`` while the line is raised, otherwise asks the PIC.
    """

    STATE = ("pic_level", "line", "handle")        # (vmm/state.py)
    WIRING = ("cpu", "clock", "pic", "vector")

    def __init__(self, machine, vector: int) -> None:
        self.cpu, self.clock, self.pic = machine.cpu, machine.clock, machine.pic
        self.vector = vector
        self.pic_level = False
        self.line = False
        self.handle = None
        self.pic.connect_output(self._pic_output)
        self.cpu.connect_interrupt_controller(self._acknowledge)

    def _pic_output(self, level: bool) -> None:
        self.pic_level = level
        self.cpu.set_intr(level or self.line)

    def _acknowledge(self) -> int:
        if self.line:
            self.line = False
            self.cpu.set_intr(self.pic_level)
            return self.vector
        return self.pic.acknowledge()

    def get_state(self) -> dict:
        h = self.handle
        return {"pic_level": self.pic_level, "line": self.line,
                "at": h.cycle if h is not None and h.pending else -1}

    def set_state(self, state: dict) -> None:
        self.cancel()
        self.pic_level, self.line = bool(state["pic_level"]), bool(state["line"])
        if state["at"] >= 0:
            self.handle = self.clock.schedule(int(state["at"]), self._fire)
        self.cpu.set_intr(self.pic_level or self.line)

    def arm(self, at_ns: int) -> None:
        """Interrupt at virtual time ``at_ns`` (at once if it has passed)."""
        self.cancel()
        self.handle = self.clock.schedule(max(self.clock.ns_to_cycles(at_ns), self.clock.cycles()),
                                          self._fire)

    def cancel(self) -> None:
        if self.handle is not None:
            self.clock.cancel(self.handle)
            self.handle = None

    def _fire(self) -> None:
        self.handle = None
        self.line = True
        self.cpu.set_intr(True)
