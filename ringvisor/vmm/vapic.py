"""The guest's local APIC under trap-and-emulate and binary translation (and under
hardware assist, where EPT never maps its page and its vectors are injected on VM
entry: ``hvmmmio.py``).

The monitor owns the physical local APIC (the 8259A's interrupts reach it
through LINT0, as the firmware left it) and gives the guest a *virtual* one:
the same model as the machine's (``hw.devices.lapic``), starting in exactly the
state the physical APIC was in at takeover, with the guest's virtual 8259A
pair behind its LINT0.  Nothing of the guest's reaches the physical APIC:

* **The APIC page.**  The shadow page tables never map the guest's APIC page
  (guest physical 0xFEE00000), so every access to it faults into the monitor,
  which decodes the instruction, performs the read or write on the virtual APIC
  and steps past it (``mmio.py``, with the guest's other device pages) --
  trap-and-emulate of MMIO, as VMware's VMM and Xen's HVM emulate the xAPIC page.
* **The MSRs.**  RDMSR/WRMSR of IA32_APIC_BASE and IA32_TSC_DEADLINE trap (they
  are privileged) and go to the virtual APIC.
* **Its timer** runs on the machine's virtual clock (one-shot, periodic,
  TSC-deadline with the guest's TSC, which is the real one).
* **Its interrupts.**  When the virtual APIC raises its output (a timer expiry,
  a self-IPI, the virtual 8259A through LINT0), the monitor must get control
  even if the guest is busy in code that never traps: the virtual APIC sends a
  self-IPI on the physical APIC at the monitor's vector ``APIC_NOTIFY`` (a
  notification vector, as KVM's posted interrupts have one).  The physical
  interrupt enters the monitor, which ends it on the physical APIC and delivers
  the virtual APIC's highest vector when the guest's virtual IF allows, through
  the guest's IDT, with the virtual ISR, TPR/PPR and EOI rules of the model.

An NMI the virtual APIC raises (a self-IPI in NMI mode, LINT1 or an LVT in NMI
mode) is held here until the monitor delivers it through the guest's IDT (vector
2, blocked until the guest's IRET: ``Delivery.deliver_interrupts``).

With ``--smp N`` each virtual processor has one of these (APIC IDs 0 to N-1) on
one APIC bus of the guest's, so IPIs, broadcasts and logical destinations reach
the others' as on the PC, and INIT and SIPI go to the scheduler's context of the
processor (``vcpus.py``); the notification is the same for all (it only makes the
monitor look).  With one virtual processor INIT and SIPI stop the run with one
line.  CPUID, which is not privileged, reports the physical processor's APIC
(present, ID 0) to a uniprocessor guest, even after it hardware-disables its
virtual one; with several, CPUID faults and reports each one's own
(``vcpus.py``).
"""

from __future__ import annotations

from ringvisor.hw.devices.lapic import APIC_DEFAULT_BASE, ApicBus, LocalApic

from .errors import MonitorStop

APIC_PAGE = APIC_DEFAULT_BASE           # QEMU's TCG does not relocate the APIC either
ICR_LO, EOI = 0x300, 0x0B0
ICR_SELF = 1 << 18                      # destination shorthand: self


class VirtualApic:
    """The guest's local APIC: the model, and the processor side it talks to (the monitor)."""

    STATE = ("apic", "level", "unsupported", "nmi")       # (vmm/state.py)
    WIRING = ("phys", "cpu", "notify_vector", "name", "vcpu", "processor")
    TRANSIENT = ("inside",)

    def __init__(self, machine, pic, notify_vector: int, name: str, bus: ApicBus | None = None,
                 apic_id: int = 0) -> None:
        """The BSP's (``apic_id`` 0) copies the physical APIC as the firmware left it;
        an application processor's (on the BSP's ``bus``) starts as RESET leaves one:
        waiting for a SIPI (SDM Vol. 3 §8.4.1)."""
        self.phys = machine.lapic           # the physical APIC, the monitor's
        self.cpu = machine.cpu
        self.notify_vector = notify_vector
        self.name = name
        self.level = False                  # the virtual APIC asks for the processor
        # the monitor is running (an entry): it delivers what is waiting before it returns
        # to the guest, so no notification is needed (the virtual PIC's edges come so)
        self.inside = False
        self.unsupported = ""               # what the guest asked that no monitor gives
        self.nmi = False                    # an NMI waits for the monitor to deliver it
        self.vcpu = None                    # the guest's virtual CPU (the monitor sets it)
        self.processor = None               # its context when there are several (``vcpus.py``)
        bsp = apic_id == 0
        self.apic = LocalApic(self, machine.clock, ApicBus() if bus is None else bus, apic_id,
                              bsp, pic if bsp else None)
        if bsp:
            # exactly what the physical APIC holds at takeover (what the firmware left)
            self._load(self.phys.get_state())

    def _load(self, state: dict) -> None:
        """The model's registers from ``state``: its output level follows, without a
        notification (the physical APIC's own state holds any that was pending)."""
        self.level = True
        self.apic.set_state(state)

    # -- the processor side of the model (hw.devices.lapic.LocalApic's ``cpu``) ----------
    def set_intr(self, level: bool) -> None:
        if level and not self.level and not self.inside:
            self._notify()
        self.level = level

    def raise_nmi(self) -> None:
        self.nmi = True
        if not self.inside:
            self._notify()

    def init(self) -> None:
        if self.processor is not None:
            self.processor.init()
        else:
            self._refuse("an INIT IPI (one virtual processor)")

    def startup(self, vector: int) -> None:
        if self.processor is not None:
            self.processor.startup(vector)
        else:
            self._refuse("a start-up IPI (one virtual processor)")

    def tsc(self) -> int:
        """The guest's TSC (the TSC-deadline timer's): the real one, moved by any WRMSR
        of the guest's to it."""
        return self.cpu.tsc() + (self.vcpu.tsc_offset if self.vcpu is not None else 0)

    def _refuse(self, what: str) -> None:
        # (a timer callback may get here, outside the monitor: the stop waits for the
        # entry the notification causes)
        self.unsupported = self.unsupported or f"{self.name}: the guest sent {what}"
        if not self.inside:
            self._notify()

    def _notify(self) -> None:
        """A self-IPI on the physical APIC at the monitor's vector."""
        self.phys.mmio_write(ICR_LO, 4, ICR_SELF | self.notify_vector)

    # -- the monitor's side -----------------------------------------------------------------
    def physical_irq(self, vector: int) -> bool:
        """The notification: end it on the physical APIC.  False if ``vector`` is not it."""
        if vector != self.notify_vector:
            return False
        self.phys.mmio_write(EOI, 4, 0)
        self.check()
        return True

    def check(self) -> None:
        if self.unsupported:
            raise MonitorStop(self.unsupported)

    @property
    def intr(self) -> bool:
        return self.level

    def acknowledge(self) -> int | None:
        """The guest's INTA cycle: the vector (an ExtINT from the virtual 8259A, or the
        APIC's highest one, or its spurious vector), None if the request went away."""
        v = self.apic.acknowledge()
        self.check()
        return v

    def get_state(self) -> dict:
        return {"apic": self.apic.get_state(), "level": self.level, "unsupported": self.unsupported,
                "nmi": self.nmi}

    def set_state(self, state: dict) -> None:
        self._load(state["apic"])
        self.level, self.unsupported = bool(state["level"]), str(state["unsupported"])
        self.nmi = bool(state.get("nmi", False))          # (monitor state 3 and older)

