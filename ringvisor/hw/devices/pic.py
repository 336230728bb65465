"""Two cascaded Intel 8259A programmable interrupt controllers (the PC/AT pair).

Register map
------------
    port   dir  register
    0x20   W    ICW1 (bit 4 = 1) | OCW2 (bits 4:3 = 00) | OCW3 (bits 4:3 = 01)  master
    0x20   R    IRR or ISR (chosen by OCW3 RR/RIS), or the poll byte after OCW3 P
    0x21   W    ICW2 (vector base), ICW3, ICW4 during initialization; else OCW1 = IMR
    0x21   R    IMR
    0xA0/0xA1   the same for the slave, whose INT output drives master IRQ 2
    0x4D0/0x4D1 ELCR: per-IRQ edge(0)/level(1) trigger select (PIIX), masks F8/DE

Command words
-------------
    ICW1  bit0 IC4 (ICW4 follows), bit1 SNGL, bit3 LTIM (all level), bit4 = 1
    ICW2  vector base (bits 7:3)
    ICW3  cascade wiring (accepted, the PC wiring is fixed)
    ICW4  bit1 AEOI, bit4 SFNM (special fully nested)
    OCW2  R SL EOI | 0 0 | L2..L0:
          001 non-specific EOI     011 specific EOI (L)    101 rotate on non-specific EOI
          100/000 set/clear rotate in AEOI mode            111 rotate on specific EOI
          110 set priority (L becomes lowest)              010 no-op
    OCW3  bit0 RIS, bit1 RR (read ISR/IRR), bit2 P (poll), bit5 SMM, bit6 ESMM

Behaviour follows QEMU's i8259 (hw/intc/i8259.c), the reference hardware:
after reset IMR = 0 and the vector base is 0 (a guest must program it, as
every OS does); a request whose line is no longer visible at INTA time gives
the spurious vector of IRQ 7 (or 15 via the slave, with IRQ 2 in service on
the master); priorities rotate via ``priority_add``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Callable

from ringvisor.hw.bus import IoBus


@dataclass
class I8259State:
    """One chip's guest-visible registers and latches (names as in QEMU)."""

    last_irr: int = 0      # input line levels seen (for edge detection)
    irr: int = 0           # interrupt request register
    imr: int = 0           # interrupt mask register
    isr: int = 0           # in-service register
    priority_add: int = 0  # IRQ with the highest priority (rotation)
    irq_base: int = 0      # ICW2
    read_reg_select: int = 0  # OCW3 RIS: 0 = IRR, 1 = ISR
    poll: int = 0
    special_mask: int = 0
    init_state: int = 0    # 0 ready, 1 expect ICW2, 2 expect ICW3, 3 expect ICW4
    auto_eoi: int = 0
    rotate_on_auto_eoi: int = 0
    special_fully_nested_mode: int = 0
    init4: int = 0
    single_mode: int = 0
    elcr: int = 0          # not reset by ICW1
    ltim: int = 0          # ICW1 LTIM: every input level-triggered


class I8259:
    """One 8259A.  ``on_output(level)`` is its INT pin."""

    def __init__(self, master: bool, elcr_mask: int, on_output: Callable[[bool], None]) -> None:
        self.master = master
        self.elcr_mask = elcr_mask
        self.on_output = on_output
        self.s = I8259State()
        self.output = False

    # -- priority logic ----------------------------------------------------
    def _priority(self, mask: int) -> int:
        """Highest priority in ``mask`` as 0..7 relative to priority_add; 8 if none."""
        if mask == 0:
            return 8
        p = 0
        while not mask & (1 << ((p + self.s.priority_add) & 7)):
            p += 1
        return p

    def pending_irq(self) -> int:
        """The IRQ (0-7) this chip would present now, or -1."""
        s = self.s
        prio = self._priority(s.irr & ~s.imr)
        if prio == 8:
            return -1
        # in special mask mode masked in-service levels do not block others;
        # in special fully nested mode the cascade input does not block itself
        mask = s.isr
        if s.special_mask:
            mask &= ~s.imr
        if s.special_fully_nested_mode and self.master:
            mask &= ~(1 << 2)
        if prio < self._priority(mask):
            return (prio + s.priority_add) & 7
        return -1

    def update(self) -> None:
        out = self.pending_irq() >= 0
        if out != self.output:
            self.output = out
            self.on_output(out)

    def set_irq(self, irq: int, level: bool) -> None:
        s = self.s
        mask = 1 << irq
        if s.ltim or s.elcr & mask:
            if level:
                s.irr |= mask
                s.last_irr |= mask
            else:
                s.irr &= ~mask
                s.last_irr &= ~mask
        else:
            if level:
                if not s.last_irr & mask:  # rising edge
                    s.irr |= mask
                s.last_irr |= mask
            else:
                s.last_irr &= ~mask
        self.update()

    def intack(self, irq: int) -> None:
        s = self.s
        if s.auto_eoi:
            if s.rotate_on_auto_eoi:
                s.priority_add = (irq + 1) & 7
        else:
            s.isr |= 1 << irq
        if not (s.ltim or s.elcr & (1 << irq)):  # a level request stays asserted
            s.irr &= ~(1 << irq)
        self.update()

    # -- reset -------------------------------------------------------------
    def init_reset(self) -> None:
        """What ICW1 (and power-on) clears; ELCR and LTIM survive."""
        s = self.s
        keep_elcr, keep_ltim = s.elcr, s.ltim
        irr = s.irr & s.elcr
        self.s = I8259State(irr=irr, elcr=keep_elcr, ltim=keep_ltim)
        self.update()

    def reset(self) -> None:
        self.s.elcr = 0
        self.init_reset()

    # -- ports -------------------------------------------------------------
    def write(self, addr: int, val: int) -> None:
        s = self.s
        if addr == 0:
            if val & 0x10:  # ICW1
                self.init_reset()
                s = self.s
                s.init_state = 1
                s.init4 = val & 1
                s.single_mode = (val >> 1) & 1
                s.ltim = (val >> 3) & 1
                self.update()
            elif val & 0x08:  # OCW3
                if val & 0x04:
                    s.poll = 1
                if val & 0x02:
                    s.read_reg_select = val & 1
                if val & 0x40:
                    s.special_mask = (val >> 5) & 1
                    self.update()
            else:  # OCW2
                cmd = val >> 5
                if cmd in (0, 4):
                    s.rotate_on_auto_eoi = cmd >> 2
                elif cmd in (1, 5):  # non-specific EOI (and rotate)
                    prio = self._priority(s.isr)
                    if prio != 8:
                        irq = (prio + s.priority_add) & 7
                        s.isr &= ~(1 << irq)
                        if cmd == 5:
                            s.priority_add = (irq + 1) & 7
                        self.update()
                elif cmd == 3:  # specific EOI
                    s.isr &= ~(1 << (val & 7))
                    self.update()
                elif cmd == 6:  # set priority
                    s.priority_add = (val + 1) & 7
                    self.update()
                elif cmd == 7:  # rotate on specific EOI
                    irq = val & 7
                    s.isr &= ~(1 << irq)
                    s.priority_add = (irq + 1) & 7
                    self.update()
        else:
            if s.init_state == 0:  # OCW1
                s.imr = val
                self.update()
            elif s.init_state == 1:  # ICW2
                s.irq_base = val & 0xF8
                s.init_state = (3 if s.init4 else 0) if s.single_mode else 2
            elif s.init_state == 2:  # ICW3
                s.init_state = 3 if s.init4 else 0
            else:  # ICW4
                s.special_fully_nested_mode = (val >> 4) & 1
                s.auto_eoi = (val >> 1) & 1
                s.init_state = 0

    def read(self, addr: int) -> int:
        s = self.s
        if s.poll:
            s.poll = 0
            irq = self.pending_irq()
            if irq >= 0:
                self.intack(irq)
                return irq | 0x80
            return 0
        if addr == 0:
            return s.isr if s.read_reg_select else s.irr
        return s.imr


class PicPair:
    """Master (0x20) and slave (0xA0) 8259A, slave cascaded on master IRQ 2.

    ``raise_irq(n)`` / ``lower_irq(n)`` drive ISA IRQ line n (0-15);
    ``set_intr(level)`` is called whenever the master's INT output changes;
    ``acknowledge()`` is the CPU's INTA cycle and returns the vector.
    """

    def __init__(self, bus: IoBus, set_intr: Callable[[bool], None]) -> None:
        self.set_intr = set_intr
        self.master = I8259(True, 0xF8, self._master_output)
        self.slave = I8259(False, 0xDE, lambda level: self.master.set_irq(2, level))
        self.chips = (self.master, self.slave)
        for base, chip in ((0x20, self.master), (0xA0, self.slave)):
            bus.register(base, 2, self._reader(chip, base), self._writer(chip, base),
                         f"pic-{'master' if chip.master else 'slave'}", max_access=1, owner=self)
        bus.register(0x4D0, 2, self._elcr_read, self._elcr_write, "elcr", max_access=1, owner=self)

    def _master_output(self, level: bool) -> None:
        self.set_intr(level)

    def connect_output(self, set_intr: Callable[[bool], None]) -> None:
        """Wire the master's INT output to ``set_intr`` (the CPU's INTR pin, or a monitor
        that routes it: vmm/platform.py)."""
        self.set_intr = set_intr

    @staticmethod
    def _reader(chip: I8259, base: int):
        return lambda port, size: chip.read(port - base)

    @staticmethod
    def _writer(chip: I8259, base: int):
        return lambda port, size, value: chip.write(port - base, value & 0xFF)

    def _elcr_read(self, port: int, size: int) -> int:
        return self.chips[port - 0x4D0].s.elcr

    def _elcr_write(self, port: int, size: int, value: int) -> None:
        chip = self.chips[port - 0x4D0]
        chip.s.elcr = value & chip.elcr_mask

    # -- interrupt lines -----------------------------------------------------
    def set_irq(self, n: int, level: bool) -> None:
        chip = self.master if n < 8 else self.slave
        chip.set_irq(n & 7, level)

    def raise_irq(self, n: int) -> None:
        self.set_irq(n, True)

    def lower_irq(self, n: int) -> None:
        self.set_irq(n, False)

    def pulse_irq(self, n: int) -> None:
        """An edge: raise then lower (for sources that only signal events)."""
        self.set_irq(n, True)
        self.set_irq(n, False)

    @property
    def intr(self) -> bool:
        """The level of the INTR pin into the CPU."""
        return self.master.output

    def acknowledge(self) -> int:
        """INTA: the vector for the highest-priority request; updates ISR/IRR."""
        m, sl = self.master, self.slave
        irq = m.pending_irq()
        if irq >= 0:
            if irq == 2:
                irq2 = sl.pending_irq()
                if irq2 >= 0:
                    sl.intack(irq2)
                else:
                    irq2 = 7  # spurious on the slave
                vector = sl.s.irq_base + irq2
            else:
                vector = m.s.irq_base + irq
            m.intack(irq)
        else:
            vector = m.s.irq_base + 7  # spurious on the master
        return vector

    # -- reset and state ---------------------------------------------------------
    def reset(self) -> None:
        for chip in self.chips:
            chip.reset()

    state_name = "pic"
    state_version = 1

    def get_state(self) -> dict:
        return {"master": asdict(self.master.s), "slave": asdict(self.slave.s)}

    def set_state(self, state: dict) -> None:
        names = {f.name for f in fields(I8259State)}
        for key, chip in (("master", self.master), ("slave", self.slave)):
            chip.s = I8259State(**{k: int(v) for k, v in state[key].items() if k in names})
        # recompute outputs without emitting edges into restored latches
        self.slave.output = self.slave.pending_irq() >= 0
        self.master.output = self.master.pending_irq() >= 0
        self.set_intr(self.master.output)
