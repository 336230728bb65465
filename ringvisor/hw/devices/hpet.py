"""The high precision event timer (IA-PC HPET specification 1.0a) at 0xFED00000.

Register map (MMIO, 32- or 64-bit accesses)
-------------------------------------------
    0x000  general capabilities and ID (RO): 0x8086A201 -- vendor 8086, legacy
           replacement capable, 64-bit counter, 3 timers, revision 1; bits 63:32 the
           counter period in femtoseconds (10 ns: 100 MHz)
    0x010  general configuration: bit 0 ENABLE_CNF (the counter runs), bit 1
           LEG_RT_CNF (timer 0 drives IRQ 0 and timer 1 IRQ 8)
    0x020  general interrupt status: bit n set by a level-triggered timer n; write 1
           to clear
    0x0F0  main counter (writable while halted)
    0x100 + 0x20 n   timer n configuration and capabilities:
           bit 1 level-triggered, 2 interrupt enable, 3 periodic, 4 periodic capable
           (RO), 5 64-bit capable (RO), 6 VAL_SET (the next comparator write sets the
           period's accumulator), 8 32-bit mode, 13:9 IO-APIC input; bits 63:32 the
           inputs it may use (RO: 0x4, input 2, as QEMU offers)
    0x108 + 0x20 n   timer n comparator

As QEMU's hw/timer/hpet.c: the counter counts while enabled (it starts halted at
0); a timer interrupts when the counter reaches its comparator (and, periodic,
adds its period each time); the interrupt goes to the IO-APIC input the timer
names, or with legacy replacement to IRQ 0 (timer 0) and IRQ 8 (timer 1).
"""

from __future__ import annotations

from dataclasses import dataclass, field

HPET_BASE = 0xFED00000
HPET_SIZE = 0x400
HPET_ID = 0x8086A201
NUM_TIMERS = 3
PERIOD_FS = 10_000_000                  # 10 ns
NS_PER_TICK = PERIOD_FS // 1_000_000
CAP = HPET_ID | PERIOD_FS << 32
CFG_ENABLE, CFG_LEGACY = 1, 2
TN_LEVEL, TN_ENABLE, TN_PERIODIC, TN_PERIODIC_CAP, TN_SIZE_CAP = 2, 4, 8, 0x10, 0x20
TN_SETVAL, TN_32BIT = 0x40, 0x100
TN_ROUTE_SHIFT, TN_ROUTE_MASK = 9, 0x1F << 9
TN_WRITABLE = TN_LEVEL | TN_ENABLE | TN_PERIODIC | TN_SETVAL | TN_32BIT | TN_ROUTE_MASK
INT_ROUTE_CAP = 0x4                     # IO-APIC input 2 (QEMU's default intcap)
TN_RESET = TN_PERIODIC_CAP | TN_SIZE_CAP | INT_ROUTE_CAP << 32
MASK64 = (1 << 64) - 1


@dataclass
class HpetState:
    config: int = 0
    isr: int = 0
    counter: int = 0            # the main counter while halted; its value at ``start_ns``
    start_ns: int = 0           # when it was last enabled (virtual ns)
    timer_config: list[int] = field(default_factory=lambda: [TN_RESET] * NUM_TIMERS)
    comparator: list[int] = field(default_factory=lambda: [MASK64] * NUM_TIMERS)
    period: list[int] = field(default_factory=lambda: [0] * NUM_TIMERS)


class Hpet:
    state_name = "hpet"
    state_version = 1

    def __init__(self, clock, irqs) -> None:
        self.clock = clock
        self.irqs = irqs                    # the PC's interrupt lines (devices/ioapic.IsaIrqs)
        self.s = HpetState()
        self._timers = [None] * NUM_TIMERS

    # -- the counter -----------------------------------------------------------------------
    def counter(self) -> int:
        s = self.s
        if not s.config & CFG_ENABLE:
            return s.counter
        return (s.counter + (self.clock.now_ns() - s.start_ns) // NS_PER_TICK) & MASK64

    def _set_config(self, value: int) -> None:
        s = self.s
        old = s.config
        now = self.counter()
        s.config = value & (CFG_ENABLE | CFG_LEGACY)
        if (old ^ s.config) & CFG_ENABLE:
            s.counter, s.start_ns = now, self.clock.now_ns()
        for n in range(NUM_TIMERS):
            self._arm(n)

    # -- timers ---------------------------------------------------------------------------
    def _arm(self, n: int) -> None:
        s = self.s
        if self._timers[n] is not None:
            self.clock.cancel(self._timers[n])
            self._timers[n] = None
        if not s.config & CFG_ENABLE or not s.timer_config[n] & TN_ENABLE:
            return
        mask = 0xFFFFFFFF if s.timer_config[n] & TN_32BIT else MASK64
        delta = (s.comparator[n] - self.counter()) & mask
        at_ns = self.clock.now_ns() + delta * NS_PER_TICK
        self._timers[n] = self.clock.schedule(self.clock.ns_to_cycles(at_ns),
                                              lambda n=n: self._fire(n))

    def _line(self, n: int) -> int:
        s = self.s
        if s.config & CFG_LEGACY and n < 2:
            return (0, 8)[n]                # ISA IRQs: 0 reaches IO-APIC input 2
        return -1 - ((s.timer_config[n] & TN_ROUTE_MASK) >> TN_ROUTE_SHIFT)

    def _fire(self, n: int) -> None:
        s = self.s
        self._timers[n] = None
        cfg = s.timer_config[n]
        line = self._line(n)
        if cfg & TN_LEVEL:
            s.isr |= 1 << n
            self._set_line(line, True)
        else:
            self._set_line(line, True)
            self._set_line(line, False)
        if cfg & TN_PERIODIC and s.period[n]:
            mask = 0xFFFFFFFF if cfg & TN_32BIT else MASK64
            now = self.counter()
            while (s.comparator[n] - now) & mask == 0 or (now - s.comparator[n]) & mask < 1 << 31:
                s.comparator[n] = (s.comparator[n] + s.period[n]) & mask
            self._arm(n)

    def _set_line(self, line: int, level: bool) -> None:
        if line >= 0:
            self.irqs.set_irq(line, level)
        elif self.irqs.ioapic is not None:
            self.irqs.ioapic.set_pin(-1 - line, level)

    # -- MMIO -----------------------------------------------------------------------------
    def _read64(self, reg: int) -> int:
        s = self.s
        if reg == 0x000:
            return CAP
        if reg == 0x010:
            return s.config
        if reg == 0x020:
            return s.isr
        if reg == 0x0F0:
            return self.counter()
        n, off = divmod(reg - 0x100, 0x20)
        if 0 <= n < NUM_TIMERS:
            if off == 0:
                return s.timer_config[n]
            if off == 8:
                return s.comparator[n]
        return 0

    def mmio_read(self, offset: int, size: int) -> int:
        if size < 4:
            # "32-bit or 64-bit accesses" only (HPET specification 1.0a §2.4); QEMU's
            # HPET (valid.min_access_size 4) reads anything narrower as 0, drops writes
            return 0
        v = self._read64(offset & ~7)
        return (v >> (8 * (offset & 7))) & ((1 << (8 * size)) - 1)

    def mmio_write(self, offset: int, size: int, value: int) -> None:
        if size < 4:
            return
        reg, shift = offset & ~7, 8 * (offset & 7)
        width = ((1 << (8 * size)) - 1) << shift
        old = self._read64(reg)
        new = (old & ~width) | (value << shift & width)
        s = self.s
        if reg == 0x010:
            self._set_config(new)
        elif reg == 0x020:
            cleared = (value << shift) & s.isr
            s.isr &= ~cleared
            for n in range(NUM_TIMERS):
                if cleared >> n & 1:
                    self._set_line(self._line(n), False)
        elif reg == 0x0F0:
            if not s.config & CFG_ENABLE:
                s.counter = new & MASK64
        else:
            n, off = divmod(reg - 0x100, 0x20)
            if not 0 <= n < NUM_TIMERS:
                return
            if off == 0:
                s.timer_config[n] = (s.timer_config[n] & ~TN_WRITABLE) | (new & TN_WRITABLE)
                if not s.timer_config[n] & TN_LEVEL and s.isr >> n & 1:
                    s.isr &= ~(1 << n)
                    self._set_line(self._line(n), False)
            elif off == 8:
                cfg = s.timer_config[n]
                if cfg & TN_32BIT:
                    new &= 0xFFFFFFFF
                # a periodic timer's write sets its period, and the comparator only with
                # VAL_SET (QEMU's hpet_ram_write)
                if not cfg & TN_PERIODIC or cfg & TN_SETVAL:
                    s.comparator[n] = new
                if cfg & TN_PERIODIC:
                    s.period[n] = new
                s.timer_config[n] &= ~TN_SETVAL
            self._arm(n)

    # -- state ------------------------------------------------------------------------------
    def get_state(self) -> dict:
        s = self.s
        return {"config": s.config, "isr": s.isr, "counter": self.counter(),
                "timer_config": list(s.timer_config), "comparator": list(s.comparator),
                "period": list(s.period)}

    def set_state(self, state: dict) -> None:
        lists = {k: [int(x) & MASK64 for x in state[k]] for k in ("timer_config", "comparator", "period")}
        if any(len(v) != NUM_TIMERS for v in lists.values()):
            raise ValueError(f"the HPET has {NUM_TIMERS} timers")
        self.s = HpetState(int(state["config"]) & 3, int(state["isr"]) & 7,
                           int(state["counter"]) & MASK64, self.clock.now_ns(), **lists)
        for n in range(NUM_TIMERS):
            self._arm(n)
