"""The PC's bus, virtual clock and devices, tested against datasheet/QEMU behaviour."""

from __future__ import annotations

import json
import os
import time

import pytest

from ringvisor.hw.bus import IoBus
from ringvisor.hw.clock import VirtualClock
from ringvisor.hw.devices.cmos import Cmos
from ringvisor.hw.devices.debugexit import DebugExit
from ringvisor.hw.devices.pic import PicPair
from ringvisor.hw.devices.pit import PIT_HZ, Pit8254
from ringvisor.hw.devices.reset import ResetControl
from ringvisor.hw.chardev import HostInput
from ringvisor.hw.devices.uart import Uart16550

HZ = 100_000_000


class Counter:
    """A stand-in for the CPU's retired-instruction counter."""

    def __init__(self) -> None:
        self.n = 0

    def __call__(self) -> int:
        return self.n


def make_clock(hz: int = HZ) -> tuple[VirtualClock, Counter]:
    clock = VirtualClock(hz)
    counter = Counter()
    clock.attach(counter)
    return clock, counter


def run_until(clock: VirtualClock, counter: Counter, cycle: int) -> None:
    """Run 'the CPU' to ``cycle``, firing timers at their deadlines."""
    while True:
        d = clock.next_deadline()
        if d is None or d > cycle:
            break
        counter.n += d - clock.cycles()
        clock.run_due()
    counter.n += cycle - clock.cycles()
    clock.run_due()


def roundtrip(state: dict) -> dict:
    return json.loads(json.dumps(state))


# =============================================================================
# I/O bus
# =============================================================================


class TestIoBus:
    def test_unclaimed_ports_float_high_and_ignore_writes(self):
        bus = IoBus()
        assert bus.read(0x80, 1) == 0xFF
        assert bus.read(0x80, 2) == 0xFFFF
        assert bus.read(0x80, 4) == 0xFFFFFFFF
        bus.write(0x80, 4, 0x12345678)  # nothing happens

    def test_handlers_get_absolute_port_size_and_masked_value(self):
        bus = IoBus()
        seen = []
        bus.register(0x300, 4, lambda p, s: 0x1FF00 + p,
                     lambda p, s, v: seen.append((p, s, v)), "dev")
        assert bus.read(0x302, 1) == 0x02  # masked to the size
        bus.write(0x301, 2, 0xABCDEF)
        assert seen == [(0x301, 2, 0xCDEF)]

    def test_overlapping_registration_is_refused(self):
        bus = IoBus()
        bus.register(0x40, 4, lambda p, s: 0, lambda p, s, v: None, "a")
        with pytest.raises(ValueError):
            bus.register(0x43, 2, lambda p, s: 0, lambda p, s, v: None, "b")
        bus.register(0x44, 1, lambda p, s: 0, lambda p, s, v: None, "c")  # adjacent is fine

    def test_wide_access_to_byte_device_is_split_little_endian(self):
        bus = IoBus()
        regs = {0x20: 0x11, 0x21: 0x22}
        writes = []
        bus.register(0x20, 2, lambda p, s: regs[p], lambda p, s, v: writes.append((p, s, v)),
                     "byte-dev", max_access=1)
        assert bus.read(0x20, 2) == 0x2211
        assert bus.read(0x21, 2) == 0xFF22  # the byte at 0x22 is unclaimed
        bus.write(0x20, 2, 0xBBAA)
        assert writes == [(0x20, 1, 0xAA), (0x21, 1, 0xBB)]

    def test_first_byte_decides_the_owner(self):
        """outl to 0xCF8 (nothing there) must not leak a byte into 0xCF9 (reset)."""
        bus = IoBus()
        resets = []
        ResetControl(bus, lambda: resets.append(1))
        bus.write(0xCF8, 4, 0x80000400)  # byte 1 has bit 2 set
        assert resets == []
        assert bus.read(0xCF8, 4) == 0xFFFFFFFF


# =============================================================================
# virtual clock
# =============================================================================


class TestVirtualClock:
    def test_time_is_instruction_count_at_cpu_hz(self):
        clock, counter = make_clock(100_000_000)
        counter.n = 250_000_000
        assert clock.cycles() == 250_000_000
        assert clock.now_ns() == 2_500_000_000
        clock = VirtualClock(3)  # integer math, rounds down
        c = Counter()
        clock.attach(c)
        c.n = 1
        assert clock.now_ns() == 333_333_333

    def test_attach_does_not_make_time_jump(self):
        clock, counter = make_clock()
        counter.n = 1000
        other = Counter()
        other.n = 5
        clock.attach(other)
        assert clock.cycles() == 1000
        other.n += 10
        assert clock.cycles() == 1010

    def test_timers_fire_in_deadline_then_scheduling_order(self):
        clock, counter = make_clock()
        fired = []
        clock.schedule(300, lambda: fired.append("c"))
        clock.schedule(100, lambda: fired.append("a"))
        clock.schedule(100, lambda: fired.append("b"))
        h = clock.schedule(200, lambda: fired.append("x"))
        clock.cancel(h)
        assert clock.next_deadline() == 100
        counter.n = 99
        assert clock.run_due() == 0
        counter.n = 250
        clock.run_due()
        assert fired == ["a", "b"]
        assert clock.next_deadline() == 300
        counter.n = 300
        clock.run_due()
        assert fired == ["a", "b", "c"]
        assert clock.next_deadline() is None

    def test_callback_may_schedule_more(self):
        clock, counter = make_clock()
        fired = []

        def tick():
            fired.append(clock.cycles())
            if len(fired) < 3:
                clock.schedule(clock.cycles() + 10, tick)

        clock.schedule(10, tick)
        run_until(clock, counter, 1000)
        assert fired == [10, 20, 30]

    def test_skip_to_while_halted(self):
        clock, counter = make_clock()
        counter.n = 500
        fired = []
        clock.schedule(10_000, lambda: fired.append(clock.cycles()))
        clock.advance_to(clock.next_deadline())  # the CPU is halted: jump
        assert fired == [10_000]
        assert clock.cycles() == 10_000 and counter.n == 500
        assert clock.offset == 9_500
        counter.n += 5  # the CPU resumes; time continues from the deadline
        assert clock.cycles() == 10_005
        clock.skip_to(7)  # never backwards
        assert clock.cycles() == 10_005

    def test_state_restores_time_under_another_counter(self):
        clock, counter = make_clock()
        counter.n = 1234
        clock.skip_to(5000)
        state = roundtrip(clock.get_state())
        clock2, counter2 = make_clock()
        counter2.n = 77
        clock2.set_state(state)
        assert clock2.cycles() == 5000

    def test_pacing_holds_virtual_time_to_wall_time(self):
        clock, counter = make_clock()
        clock.pacing = True
        t0 = time.monotonic()
        clock.advance_to(clock.cycles() + HZ // 20)  # 50 ms of virtual time
        assert time.monotonic() - t0 >= 0.045
        clock.pacing = False
        t0 = time.monotonic()
        clock.advance_to(clock.cycles() + HZ)  # a whole second, instantly
        assert time.monotonic() - t0 < 0.5


# =============================================================================
# 8259A PIC pair
# =============================================================================


class PicRig:
    def __init__(self, init: bool = True) -> None:
        self.bus = IoBus()
        self.intr_calls: list[bool] = []
        self.pic = PicPair(self.bus, self.intr_calls.append)
        if init:  # the standard PC remap: 0x20-0x27, 0x28-0x2F
            for port, val in ((0x20, 0x11), (0x21, 0x20), (0x21, 0x04), (0x21, 0x01),
                              (0xA0, 0x11), (0xA1, 0x28), (0xA1, 0x02), (0xA1, 0x01)):
                self.bus.write(port, 1, val)

    def out(self, port, val):
        self.bus.write(port, 1, val)

    def inb(self, port):
        return self.bus.read(port, 1)

    def isr(self, master=True):
        base = 0x20 if master else 0xA0
        self.out(base, 0x0B)
        v = self.inb(base)
        self.out(base, 0x0A)
        return v

    def irr(self, master=True):
        base = 0x20 if master else 0xA0
        self.out(base, 0x0A)
        return self.inb(base)

    def eoi(self, slave=False):
        if slave:
            self.out(0xA0, 0x20)
        self.out(0x20, 0x20)


class TestPic:
    def test_reset_state_matches_qemu(self):
        r = PicRig(init=False)
        assert r.inb(0x21) == 0 and r.inb(0xA1) == 0  # IMR clear
        r.pic.raise_irq(0)
        assert r.pic.intr
        assert r.pic.acknowledge() == 0  # vector base 0 until programmed

    def test_irq_delivery_and_eoi(self):
        r = PicRig()
        r.pic.raise_irq(1)
        assert r.intr_calls == [True]
        assert r.pic.acknowledge() == 0x21
        assert r.intr_calls == [True, False]
        assert r.isr() == 0x02 and r.irr() == 0
        r.eoi()
        assert r.isr() == 0

    def test_priority_and_nesting(self):
        r = PicRig()
        r.pic.raise_irq(3)
        r.pic.raise_irq(0)
        assert r.pic.acknowledge() == 0x20  # IRQ0 has the highest priority
        assert not r.pic.intr  # IRQ3 waits while IRQ0 is in service
        r.eoi()
        assert r.pic.intr
        assert r.pic.acknowledge() == 0x23
        r.pic.raise_irq(1)  # higher than IRQ3 in service: nests
        assert r.pic.intr
        assert r.pic.acknowledge() == 0x21
        assert r.isr() == 0x0A
        r.eoi()  # non-specific EOI ends the highest priority one: IRQ1
        assert r.isr() == 0x08

    def test_mask(self):
        r = PicRig()
        r.out(0x21, 0xFF & ~0x04)
        assert r.inb(0x21) == 0xFB
        r.pic.raise_irq(5)
        assert not r.pic.intr
        assert r.irr() == 0x20
        r.out(0x21, 0x00)
        assert r.pic.intr
        assert r.pic.acknowledge() == 0x25

    def test_edge_detection(self):
        r = PicRig()
        r.pic.raise_irq(4)
        r.pic.raise_irq(4)  # still high: no new edge
        assert r.pic.acknowledge() == 0x24
        r.eoi()
        assert not r.pic.intr
        r.pic.lower_irq(4)
        r.pic.raise_irq(4)  # a new edge
        assert r.pic.intr

    def test_cascade(self):
        r = PicRig()
        r.pic.raise_irq(12)
        assert r.pic.intr
        assert r.pic.acknowledge() == 0x2C
        assert r.isr(master=True) == 0x04 and r.isr(master=False) == 0x10
        r.eoi(slave=True)
        assert r.isr(master=True) == 0 and r.isr(master=False) == 0

    def test_spurious_master(self):
        r = PicRig()
        r.pic.raise_irq(5)
        assert r.pic.intr
        r.out(0x21, 0x20)  # masked before the CPU's INTA
        assert not r.pic.intr
        assert r.pic.acknowledge() == 0x27
        assert r.isr() == 0  # no in-service bit for a spurious IRQ 7

    def test_spurious_slave(self):
        r = PicRig()
        r.pic.raise_irq(10)
        r.out(0xA1, 0x04)  # the slave's request disappears; the master latched the edge
        assert r.pic.acknowledge() == 0x2F
        assert r.isr(master=True) == 0x04 and r.isr(master=False) == 0

    def test_auto_eoi(self):
        r = PicRig(init=False)
        for port, val in ((0x20, 0x11), (0x21, 0x30), (0x21, 0x04), (0x21, 0x03)):
            r.out(port, val)
        r.pic.raise_irq(2 + 1)
        assert r.pic.acknowledge() == 0x33
        assert r.isr() == 0

    def test_specific_eoi_and_rotation(self):
        r = PicRig()
        r.pic.raise_irq(0)
        r.pic.raise_irq(1)
        assert r.pic.acknowledge() == 0x20
        r.out(0x20, 0xA0)  # rotate on non-specific EOI: IRQ0 becomes lowest
        r.pic.lower_irq(0)
        r.pic.raise_irq(0)
        assert r.pic.acknowledge() == 0x21  # IRQ1 now beats IRQ0
        r.out(0x20, 0x61)  # specific EOI for IRQ1
        assert r.isr() == 0
        r.out(0x20, 0xC4)  # set priority: IRQ4 lowest, so IRQ5 highest
        r.pic.raise_irq(5)
        assert r.pic.acknowledge() == 0x25

    def test_poll_mode(self):
        r = PicRig()
        r.pic.raise_irq(6)
        r.out(0x20, 0x0C)  # OCW3 poll
        assert r.inb(0x20) == 0x86
        assert r.isr() == 0x40
        r.out(0x20, 0x0C)
        assert r.inb(0x20) == 0x00  # nothing (else) pending

    def test_level_triggered_via_elcr(self):
        r = PicRig()
        r.out(0x4D1, 0xFF)
        assert r.inb(0x4D1) == 0xDE  # IRQ 8 and 13 cannot be level triggered
        r.pic.raise_irq(11)
        assert r.pic.acknowledge() == 0x2B
        r.eoi(slave=True)
        assert r.pic.intr  # the line is still high: requested again
        r.pic.lower_irq(11)
        assert r.irr(master=False) == 0
        # the master latched the cascade edge; with the request gone at INTA
        # time the slave answers with its spurious vector (IRQ 15)
        assert r.pic.acknowledge() == 0x2F

    def test_intr_callback_only_on_changes(self):
        r = PicRig()
        r.pic.raise_irq(3)
        r.pic.raise_irq(4)
        assert r.intr_calls == [True]

    def test_state_roundtrip(self):
        r = PicRig()
        r.pic.raise_irq(9)
        r.pic.raise_irq(3)
        state = roundtrip(r.pic.get_state())
        r2 = PicRig(init=False)
        r2.pic.set_state(state)
        assert r2.intr_calls[-1] is True
        assert r2.pic.acknowledge() == 0x29  # the cascade (IRQ2) outranks IRQ3
        r2.eoi(slave=True)
        assert r2.pic.acknowledge() == 0x23


# =============================================================================
# 8254 PIT
# =============================================================================


class PitRig:
    def __init__(self) -> None:
        self.bus = IoBus()
        self.clock, self.counter = make_clock()
        self.edges: list[int] = []
        self.level = 0

        def up():
            self.level = 1
            self.edges.append(self.clock.cycles())

        def down():
            self.level = 0

        self.pit = Pit8254(self.bus, self.clock, up, down)

    def program(self, channel, mode, count, access=3):
        self.bus.write(0x43, 1, (channel << 6) | (access << 4) | (mode << 1))
        if access in (1, 3):
            self.bus.write(0x40 + channel, 1, count & 0xFF)
        if access in (2, 3):
            self.bus.write(0x40 + channel, 1, (count >> 8) & 0xFF)

    def cycle_of_tick(self, load, ticks):
        return load + -(-ticks * HZ // PIT_HZ)


class TestPit:
    def test_mode2_rate_generator_period(self):
        r = PitRig()
        r.counter.n = 12345
        r.program(0, 2, 11932)  # ~100 Hz
        load = r.clock.cycles()
        run_until(r.clock, r.counter, r.cycle_of_tick(load, 10 * 11932))  # ~100 ms
        expect = [r.cycle_of_tick(load, k * 11932) for k in range(1, 11)]
        assert r.edges == expect

    def test_reload_zero_is_65536(self):
        r = PitRig()
        r.program(0, 2, 0)
        load = r.clock.cycles()
        run_until(r.clock, r.counter, load + HZ // 5)
        assert r.edges[:3] == [r.cycle_of_tick(load, k * 65536) for k in (1, 2, 3)]

    def test_mode0_one_shot(self):
        r = PitRig()
        r.program(0, 0, 1000)
        load = r.clock.cycles()
        assert r.level == 0
        run_until(r.clock, r.counter, r.cycle_of_tick(load, 999))
        assert r.level == 0
        run_until(r.clock, r.counter, load + HZ)
        assert r.edges == [r.cycle_of_tick(load, 1000)]  # exactly one edge
        assert r.level == 1

    def test_mode3_square_wave_edges(self):
        r = PitRig()
        r.program(0, 3, 1000)
        load = r.clock.cycles()
        run_until(r.clock, r.counter, r.cycle_of_tick(load, 3500))
        # OUT goes high when the count is loaded (an edge from the low reset
        # level, as in QEMU), then rises at the start of every period
        assert r.edges == [load] + [r.cycle_of_tick(load, k * 1000) for k in (1, 2, 3)]
        assert r.level == 0  # second half of the period

    def test_reset_runs_channel0_in_mode3_at_18hz(self):
        r = PitRig()
        run_until(r.clock, r.counter, HZ // 5)
        assert r.edges[:2] == [r.cycle_of_tick(0, 65536), r.cycle_of_tick(0, 131072)]

    def test_counter_reads_and_latch(self):
        r = PitRig()
        r.program(0, 2, 50000)
        load = r.clock.cycles()
        r.counter.n += r.cycle_of_tick(load, 1000) - r.clock.cycles()
        r.bus.write(0x43, 1, 0x00)  # latch channel 0
        r.counter.n += 10_000  # time passes; the latch holds
        lo, hi = r.bus.read(0x40, 1), r.bus.read(0x40, 1)
        assert (hi << 8) | lo == 49000
        lo, hi = r.bus.read(0x40, 1), r.bus.read(0x40, 1)  # live count again
        assert (hi << 8) | lo < 49000

    def test_lobyte_only_access(self):
        r = PitRig()
        r.program(1, 0, 0x80, access=1)
        assert r.pit.channels[1].count == 0x80
        assert r.bus.read(0x41, 1) == 0x80
        r.program(1, 0, 0x1200, access=2)
        assert r.pit.channels[1].count == 0x1200

    def test_read_back_status(self):
        r = PitRig()
        r.bus.write(0x43, 1, 0b10_11_010_0)  # channel 2, lohi, mode 2
        r.bus.write(0x43, 1, 0xC0 | 0x20 | 0x08)  # read back status of channel 2
        assert r.bus.read(0x42, 1) == 0b0_1_11_010_0  # null count: no count written yet
        r.bus.write(0x42, 1, 0x10)
        r.bus.write(0x42, 1, 0x00)
        r.bus.write(0x43, 1, 0xC0 | 0x08)  # count and status
        assert r.bus.read(0x42, 1) == 0b0_0_11_010_0
        assert r.bus.read(0x42, 1) == 0x10 and r.bus.read(0x42, 1) == 0x00

    def test_channel2_gate_and_out_on_port61(self):
        r = PitRig()
        r.bus.write(0x61, 1, 0x01)  # gate 2 on, speaker off
        r.program(2, 0, 100)  # how kernels calibrate delay loops
        load = r.clock.cycles()
        assert r.bus.read(0x61, 1) & 0x21 == 0x01
        r.counter.n += r.cycle_of_tick(load, 100) - r.clock.cycles()
        assert r.bus.read(0x61, 1) & 0x20  # OUT2 went high
        assert r.bus.read(0x61, 1) & 0x03 == 0x01

    def test_port61_refresh_bit_toggles(self):
        r = PitRig()
        a, b = r.bus.read(0x61, 1), r.bus.read(0x61, 1)
        assert (a ^ b) & 0x10

    def test_state_roundtrip_keeps_the_period(self):
        r = PitRig()
        r.program(0, 2, 5000)
        load = r.clock.cycles()
        run_until(r.clock, r.counter, r.cycle_of_tick(load, 7000))
        state = roundtrip(r.pit.get_state())
        clock_state = r.clock.get_state()
        r2 = PitRig()
        r2.clock.set_state(clock_state)
        r2.pit.set_state(state)
        r2.edges.clear()
        run_until(r2.clock, r2.counter, r.cycle_of_tick(load, 16000))
        assert r2.edges == [r.cycle_of_tick(load, 10000), r.cycle_of_tick(load, 15000)]


# =============================================================================
# 16550A UART
# =============================================================================

THR, IER, IIR, FCR, LCR, MCR, LSR, MSR, SCR = 0, 1, 2, 2, 3, 4, 5, 6, 7


class UartRig:
    def __init__(self, clock=None) -> None:
        self.bus = IoBus()
        self.out = bytearray()
        self.irq = 0
        self.raises = 0

        def up():
            self.irq = 1
            self.raises += 1

        def down():
            self.irq = 0

        self.uart = Uart16550(self.bus, 0x3F8, up, down, self.out.extend, clock=clock)

    def w(self, reg, val):
        self.bus.write(0x3F8 + reg, 1, val)

    def r(self, reg):
        return self.bus.read(0x3F8 + reg, 1)


class TestUart:
    def test_reset_values(self):
        u = UartRig()
        assert u.r(IIR) == 0x01
        assert u.r(LSR) == 0x60
        assert u.r(MSR) == 0xB0
        assert u.r(MCR) == 0x08  # OUT2
        assert u.r(LCR) == 0

    def test_transmit_is_instant(self):
        u = UartRig()
        for c in b"hi\n":
            u.w(THR, c)
        assert bytes(u.out) == b"hi\n"
        assert u.r(LSR) & 0x60 == 0x60

    def test_divisor_latch(self):
        u = UartRig()
        u.w(IER, 0x05)
        u.w(LCR, 0x83)
        u.w(0, 0x01)
        u.w(1, 0x00)
        assert u.r(0) == 0x01 and u.r(1) == 0x00
        u.w(LCR, 0x03)
        assert u.r(IER) == 0x05
        assert u.uart.s.divider == 1
        assert bytes(u.out) == b""  # DLL writes do not transmit

    def test_thre_interrupt_semantics(self):
        u = UartRig()
        u.w(IER, 0x02)  # THRI on with THR empty: interrupt at once
        assert u.irq and u.r(IIR) == 0x02
        assert not u.irq and u.r(IIR) == 0x01  # the IIR read cleared it
        u.w(THR, ord("x"))  # transmitted instantly: THR empty again
        assert u.irq and u.r(IIR) == 0x02
        u.r(IIR)
        u.w(IER, 0x00)
        u.w(IER, 0x02)  # re-enabling THRI re-raises (QEMU/Bochs behaviour)
        assert u.irq

    def test_irq_does_not_depend_on_out2(self):
        u = UartRig()
        u.w(MCR, 0x00)
        u.w(IER, 0x02)
        assert u.irq  # QEMU does not gate the line with OUT2

    def test_iir_priorities(self):
        u = UartRig()
        u.w(IER, 0x0F)
        assert u.r(IIR) == 0x02  # THRE alone
        u.w(IER, 0x00)
        u.uart.feed(b"a")  # guest not listening yet: stays on the host side
        assert not u.uart.s.lsr & 0x01
        u.w(IER, 0x0F)
        assert u.r(IIR) == 0x04  # RX data beats THRE
        u.w(MCR, 0x10)  # loopback: a second byte overruns the RBR
        u.w(THR, ord("b"))
        assert u.r(IIR) == 0x06  # line status beats RX data
        assert u.r(LSR) & 0x03 == 0x03  # DR and OE; reading LSR clears OE
        assert u.r(IIR) == 0x04
        assert u.r(THR) == ord("b")
        assert u.r(IIR) == 0x02  # the THRE interrupt was still pending
        assert u.r(IIR) == 0x01

    def test_non_fifo_polling_reads_everything_in_order(self):
        u = UartRig()
        u.uart.feed(b"hello")
        got = bytearray()
        while u.r(LSR) & 0x01:
            got.append(u.r(0))
        assert bytes(got) == b"hello"
        assert not u.uart.has_pending_input()

    def test_fifo_mode_no_input_lost(self):
        u = UartRig()
        data = bytes(range(40))
        u.uart.feed(data)
        u.w(FCR, 0xC7)  # enable and clear FIFOs, trigger 14
        assert u.r(IIR) & 0xC0 == 0xC0
        got = bytearray()
        while u.r(LSR) & 0x01:
            got.append(u.r(0))
        assert bytes(got) == data
        assert not u.r(LSR) & 0x02  # no overrun

    def test_fifo_trigger_level_and_timeout(self):
        clock, counter = make_clock()
        u = UartRig(clock)
        u.w(FCR, 0xC1)  # FIFO, trigger level 14
        u.w(IER, 0x01)
        u.uart.feed(b"abc")
        assert u.r(IIR) == 0xC1  # 3 < 14: no RX data interrupt yet
        char_ns = u.uart.char_time_ns()
        run_until(clock, counter, clock.ns_to_cycles(3 * char_ns))
        assert not u.irq
        run_until(clock, counter, clock.ns_to_cycles(5 * char_ns))
        assert u.irq and u.r(IIR) == 0xCC  # character timeout
        assert u.r(0) == ord("a")
        assert u.r(IIR) == 0xC1  # reading RBR clears the timeout
        u.uart.feed(bytes(20))
        assert u.r(IIR) == 0xC4  # at the trigger level
        assert len(u.uart.rx) == 16

    def test_fifo_flush_gives_unread_input_back(self):
        u = UartRig()
        u.uart.feed(b"xyz")
        assert u.r(LSR) & 0x01  # the guest looked: 'x' is in the RBR
        u.w(FCR, 0x07)  # the guest initializes its FIFOs
        assert not u.r(IIR) & 0x0E
        got = bytearray()
        while u.r(LSR) & 0x01:
            got.append(u.r(0))
        assert bytes(got) == b"xyz"

    def test_loopback(self):
        u = UartRig()
        u.w(MCR, 0x10 | 0x0B)
        assert u.r(MSR) == 0xB0  # DTR->DSR, RTS->CTS, OUT2->DCD
        u.w(THR, ord("q"))
        assert bytes(u.out) == b""
        assert u.r(LSR) & 0x01 and u.r(0) == ord("q")

    def test_scratch(self):
        u = UartRig()
        u.w(SCR, 0x5A)
        assert u.r(SCR) == 0x5A

    def test_state_roundtrip(self):
        u = UartRig()
        u.w(FCR, 0x01)
        u.w(IER, 0x01)
        u.uart.feed(b"ab")
        state = roundtrip(u.uart.get_state())
        v = UartRig()
        v.uart.set_state(state)
        assert v.irq
        assert v.r(0) == ord("a") and v.r(0) == ord("b")


class TestHostInput:
    def test_pipe_data_and_eof(self):
        rfd, wfd = os.pipe()
        try:
            hi = HostInput(rfd)
            assert hi.read() == b""
            assert not hi.wait(0.01)
            os.write(wfd, b"key")
            assert hi.wait(1.0)
            assert hi.read() == b"key"
            os.close(wfd)
            wfd = -1
            assert hi.wait(1.0)
            assert hi.read() == b""
            assert hi.eof
            t0 = time.monotonic()
            assert hi.wait(5.0) and time.monotonic() - t0 < 1.0
        finally:
            os.close(rfd)
            if wfd >= 0:
                os.close(wfd)


# =============================================================================
# isa-debug-exit
# =============================================================================


def test_debug_exit_status_like_qemu():
    bus = IoBus()
    codes = []
    DebugExit(bus, codes.append)
    bus.write(0xF4, 1, 0x00)
    bus.write(0xF4, 1, 0x10)
    bus.write(0xF4, 2, 0x1234)
    bus.write(0xF4, 4, 0x80000001)
    bus.write(0xF7, 1, 0x01)
    assert codes == [1, 0x21, 0x2469, (0x80000001 << 1) | 1, 3]


# =============================================================================
# CMOS / RTC
# =============================================================================


class CmosRig:
    def __init__(self, mem=64 << 20, start=None) -> None:
        self.bus = IoBus()
        self.clock, self.counter = make_clock()
        self.irq = 0
        self.cmos = Cmos(self.bus, self.clock, mem, start,
                         irq_raise=lambda: setattr(self, "irq", 1),
                         irq_lower=lambda: setattr(self, "irq", 0))

    def r(self, idx):
        self.bus.write(0x70, 1, idx)
        return self.bus.read(0x71, 1)

    def w(self, idx, val):
        self.bus.write(0x70, 1, idx)
        self.bus.write(0x71, 1, val)

    def at_seconds(self, s):
        self.counter.n = int(s * HZ) - self.clock.offset


class TestCmos:
    def test_default_time_is_2026_in_bcd(self):
        c = CmosRig()
        assert [c.r(i) for i in (0, 2, 4, 6, 7, 8, 9, 0x32)] == \
            [0x00, 0x00, 0x00, 0x05, 0x01, 0x01, 0x26, 0x20]  # Thursday = 5
        assert c.r(0x0A) == 0x26 and c.r(0x0B) == 0x02 and c.r(0x0D) == 0x80

    def test_time_advances_with_virtual_time(self):
        c = CmosRig()
        c.at_seconds(13 * 3600 + 61.5)
        assert (c.r(4), c.r(2), c.r(0)) == (0x13, 0x01, 0x01)
        c.w(0x0B, 0x02 | 0x04)  # binary
        assert (c.r(4), c.r(2), c.r(0)) == (13, 1, 1)
        c.w(0x0B, 0x00)  # BCD, 12-hour
        assert c.r(4) == 0x81  # 1 PM

    def test_host_start_time(self):
        c = CmosRig(start=951782400)  # 2000-02-29 00:00:00
        assert (c.r(9), c.r(8), c.r(7), c.r(0x32)) == (0x00, 0x02, 0x29, 0x20)

    def test_memory_size_registers(self):
        c = CmosRig(64 << 20)
        assert (c.r(0x15), c.r(0x16)) == (0x80, 0x02)  # 640 KiB
        assert (c.r(0x17), c.r(0x18)) == (0x00, 0xFC)  # 63 MiB = 64512 KiB
        assert (c.r(0x30), c.r(0x31)) == (0x00, 0xFC)
        assert (c.r(0x34), c.r(0x35)) == (0x00, 0x03)  # 48 MiB / 64 KiB
        big = CmosRig(256 << 20)
        assert (big.r(0x17), big.r(0x18)) == (0xFF, 0xFF)  # capped
        small = CmosRig(512 << 10)
        assert (small.r(0x15), small.r(0x16)) == (0x00, 0x02)
        assert small.r(0x17) == 0 and small.r(0x34) == 0

    def test_index_ignores_nmi_bit_and_port70_reads_ff(self):
        c = CmosRig()
        assert c.r(0x80 | 0x0D) == 0x80
        assert c.bus.read(0x70, 1) == 0xFF
        c.w(0x80 | 0x40, 0x5A)
        assert c.r(0x40) == 0x5A

    def test_update_in_progress_window(self):
        c = CmosRig()
        c.at_seconds(5.5)
        assert not c.r(0x0A) & 0x80
        c.at_seconds(5.9999)  # within 244 us of the update
        assert c.r(0x0A) & 0x80

    def test_set_time(self):
        c = CmosRig()
        c.w(0x0B, 0x82)  # SET
        c.at_seconds(100)
        assert c.r(0) == 0x00  # frozen
        for idx, val in ((0, 0x30), (2, 0x45), (4, 0x23), (7, 0x31), (8, 0x12), (9, 0x99),
                         (0x32, 0x19)):
            c.w(idx, val)
        c.w(0x0B, 0x02)  # run from 1999-12-31 23:45:30
        c.at_seconds(100 + 30)
        assert (c.r(9), c.r(8), c.r(7), c.r(4), c.r(2), c.r(0)) == (0x99, 0x12, 0x31, 0x23, 0x46, 0x00)
        c.at_seconds(100 + 30 + 14 * 60)
        assert (c.r(0x32), c.r(9), c.r(8), c.r(7), c.r(4)) == (0x20, 0x00, 0x01, 0x01, 0x00)

    def test_periodic_interrupt_and_register_c(self):
        c = CmosRig()
        c.w(0x0A, 0x26)  # 1024 Hz
        c.w(0x0B, 0x42)  # PIE
        run_until(c.clock, c.counter, c.clock.ns_to_cycles(900_000))
        assert not c.irq
        run_until(c.clock, c.counter, c.clock.ns_to_cycles(1_000_000))
        assert c.irq
        assert c.r(0x0C) == 0xC0  # IRQF | PF
        assert not c.irq and c.r(0x0C) == 0x00

    def test_update_and_alarm_interrupts(self):
        c = CmosRig()
        c.w(0x01, 0x02)
        c.w(0x03, 0xC0)  # don't care
        c.w(0x05, 0xC0)
        c.w(0x0B, 0x22)  # AIE
        run_until(c.clock, c.counter, int(1.5 * HZ))
        assert not c.irq
        run_until(c.clock, c.counter, int(2.5 * HZ))
        assert c.irq and c.r(0x0C) & 0xA0 == 0xA0

    def test_state_roundtrip(self):
        c = CmosRig()
        c.w(0x0B, 0x06)
        c.w(0x50, 0x77)
        c.at_seconds(42)
        state = roundtrip(c.cmos.get_state())
        clock_state = c.clock.get_state()
        d = CmosRig()
        d.clock.set_state(clock_state)
        d.cmos.set_state(state)
        assert d.r(0) == 42 and d.r(0x50) == 0x77


# =============================================================================
# reset paths
# =============================================================================


class TestReset:
    def make(self):
        bus = IoBus()
        resets = []
        ResetControl(bus, lambda: resets.append(1))
        return bus, resets

    def test_8042_status_and_pulse(self):
        bus, resets = self.make()
        assert bus.read(0x64, 1) & 0x07 == 0x04  # system flag, buffers empty
        bus.write(0x64, 1, 0xFE)
        assert resets == [1]
        bus.write(0x64, 1, 0xFF)  # pulses no line
        assert resets == [1]

    def test_8042_commands(self):
        bus, resets = self.make()
        bus.write(0x64, 1, 0xAA)
        assert bus.read(0x64, 1) & 0x01
        assert bus.read(0x60, 1) == 0x55
        assert not bus.read(0x64, 1) & 0x01
        bus.write(0x64, 1, 0x60)
        bus.write(0x60, 1, 0x45)
        bus.write(0x64, 1, 0x20)
        assert bus.read(0x60, 1) == 0x45
        bus.write(0x64, 1, 0xD1)
        bus.write(0x60, 1, 0xDF)  # A20 on, not in reset
        assert resets == []
        bus.write(0x64, 1, 0xD1)
        bus.write(0x60, 1, 0xDE)  # bit 0 low: reset
        assert resets == [1]

    def test_port92(self):
        bus, resets = self.make()
        assert bus.read(0x92, 1) & 0x02  # A20 on
        bus.write(0x92, 1, 0x00)
        assert bus.read(0x92, 1) == 0x00  # reads back what was written
        bus.write(0x92, 1, 0x03)
        assert resets == [1]

    def test_cf9(self):
        bus, resets = self.make()
        bus.write(0xCF9, 1, 0x02)
        assert resets == [] and bus.read(0xCF9, 1) == 0x02
        bus.write(0xCF9, 1, 0x06)
        bus.write(0xCF9, 1, 0x0E)
        assert resets == [1, 1]
