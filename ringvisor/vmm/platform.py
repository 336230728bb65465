"""The virtual platform: the PC's devices as the guest kernel sees them.

The guest's port I/O traps (the real IOPL is 0 and the monitor's TSS has no
I/O bitmap), and the monitor performs it on the machine's devices for the
guest, with one exception: the interrupt vectors.  The real PICs must deliver
to the monitor's own IDT vectors, so the vector base the guest programs in
ICW2 is remembered and replaced by the monitor's; an interrupt that reaches the
monitor on vector ``PIC_BASE + n`` is a virtual interrupt on the guest's
``base + n``.
"""

from __future__ import annotations

from . import layout as L
from . import state as S

MASTER_CMD, MASTER_DATA, SLAVE_CMD, SLAVE_DATA = 0x20, 0x21, 0xA0, 0xA1


class VirtualPlatform:
    STATE = ("guest_base", "_icw", "stats")       # (vmm/state.py)
    WIRING = ("bus",)

    def __init__(self, bus) -> None:
        self.bus = bus
        self.guest_base = [0x08, 0x70]       # the vector bases the guest programmed (BIOS defaults)
        self._icw = [0, 0]                   # initialisation-word state per PIC (0: none)
        self.stats = {"io": 0}

    def get_state(self) -> dict:
        return S.get_attrs(self)

    def set_state(self, state: dict) -> None:
        S.set_attrs(self, state)

    def guest_vector(self, real_vector: int) -> int | None:
        n = real_vector - L.PIC_BASE
        if not 0 <= n < 16:
            return None
        return self.guest_base[n >> 3] + (n & 7)

    def read(self, port: int, size: int) -> int:
        self.stats["io"] += 1
        return self.bus.read(port, size)

    def write(self, port: int, size: int, value: int) -> None:
        self.stats["io"] += 1
        if size > 1 and port in (MASTER_CMD, MASTER_DATA, SLAVE_CMD, SLAVE_DATA):
            # the PICs take bytes: a wider write reaches them split (``outw`` to 0x20 is
            # ICW1 then ICW2), so split it here, where ICW2 is watched
            for i in range(size):
                self.write(port + i, 1, (value >> (8 * i)) & 0xFF)
            self.stats["io"] -= size
            return
        if port in (MASTER_CMD, SLAVE_CMD) and size == 1 and value & 0x10:
            self._icw[port == SLAVE_CMD] = 2        # ICW1 given: ICW2 comes next
        elif port in (MASTER_DATA, SLAVE_DATA) and size == 1 and self._icw[port == SLAVE_DATA] == 2:
            which = port == SLAVE_DATA
            self._icw[which] = 0
            self.guest_base[which] = value & 0xF8
            value = L.PIC_BASE + 8 * which
        self.bus.write(port, size, value)


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
        self.pic.set_intr = self._pic_output
        self.cpu.acknowledge = self._acknowledge

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
