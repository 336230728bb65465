"""National Semiconductor 16550A UART (COM1 at 0x3F8, IRQ 4; COM2 at 0x2F8, IRQ 3).

Register map (offsets from ``base``; DLAB = LCR bit 7)
-------------------------------------------------------
    off  DLAB  R                         W
    0    0     RBR receive buffer        THR transmit holding
    0    1     DLL divisor latch low     DLL
    1    0     IER interrupt enable      IER: 0 RDI, 1 THRI, 2 RLSI, 3 MSI
    1    1     DLM divisor latch high    DLM
    2    -     IIR interrupt ident       FCR FIFO control: 0 enable, 1 clear RX,
                 bit 0 = 1: none pending     2 clear TX, 7:6 RX trigger 1/4/8/14
                 bits 3:1: 011 line status, 010 RX data, 110 RX timeout,
                 001 THR empty, 000 modem status; bits 7:6 = 11 with FIFOs on
    3    -     LCR line control          LCR (bit 7 DLAB, 6 break, 5:0 format)
    4    -     MCR modem control         MCR: 0 DTR, 1 RTS, 2 OUT1, 3 OUT2, 4 LOOP
    5    -     LSR line status: 0 DR, 1 OE, 4 BI, 5 THRE, 6 TEMT (OE/BI clear on read)
    6    -     MSR modem status: 4 CTS, 5 DSR, 7 DCD, 3:0 deltas (clear on read)
    7    -     SCR scratch               SCR

Behaviour follows QEMU's hw/char/serial.c (our reference hardware):

* Interrupt priority: line status > RX timeout > RX data (at the FIFO trigger
  level) > THR empty > modem status.  The IRQ line follows "anything pending"
  regardless of MCR.OUT2 -- QEMU does not gate it, so neither do we.
* THRE interrupt: pending when THR becomes empty, or when IER.THRI goes 0 -> 1
  while THR is empty; cleared by reading IIR while it is the reported source,
  or by writing THR.  Transmission is instantaneous: a THR write goes out
  through ``output`` at once and the THRE interrupt is raised again.
* Loopback (MCR.LOOP): transmitted bytes are received, MSR mirrors MCR.

Input: ``feed(data)`` appends to an unbounded host-side queue.  The host end
of the line behaves like a sender with flow control: it delivers into the
16-byte RX FIFO (or the single RBR with FIFOs off) only while there is room and
once the guest is listening -- it has read LSR or RBR, or enabled RX
interrupts -- and an RX FIFO reset hands unread host bytes back to the queue.
So piped input is neither overrun nor lost to a guest's UART initialization.
The RX timeout interrupt (a FIFO below its trigger level, unread for four
character times) is timed on the virtual clock if one is given, and is
immediate otherwise.
"""

from __future__ import annotations

from collections import deque
from dataclasses import asdict, dataclass, fields
from typing import Callable

from ringvisor.hw.bus import IoBus

FIFO_LEN = 16
BAUD_BASE = 115_200

IER_RDI, IER_THRI, IER_RLSI, IER_MSI = 0x01, 0x02, 0x04, 0x08
IIR_NO_INT, IIR_MSI, IIR_THRI, IIR_RDI, IIR_RLSI, IIR_CTI = 0x01, 0x00, 0x02, 0x04, 0x06, 0x0C
IIR_ID = 0x06
IIR_FIFO = 0xC0
LCR_DLAB = 0x80
MCR_OUT2, MCR_LOOP = 0x08, 0x10
LSR_DR, LSR_OE, LSR_BI, LSR_THRE, LSR_TEMT = 0x01, 0x02, 0x10, 0x20, 0x40
LSR_INT_ANY = 0x1E
MSR_CTS, MSR_DSR, MSR_DCD, MSR_ANY_DELTA = 0x10, 0x20, 0x80, 0x0F
FCR_FE, FCR_RFR, FCR_XFR = 0x01, 0x02, 0x04
_TRIGGER = {0x00: 1, 0x40: 4, 0x80: 8, 0xC0: 14}


@dataclass
class UartState:
    rbr: int = 0
    ier: int = 0
    iir: int = IIR_NO_INT
    lcr: int = 0
    mcr: int = MCR_OUT2
    lsr: int = LSR_TEMT | LSR_THRE
    msr: int = MSR_DCD | MSR_DSR | MSR_CTS
    scr: int = 0
    fcr: int = 0
    divider: int = 0x0C  # 9600 baud
    thr_ipending: int = 0
    timeout_ipending: int = 0


class Uart16550:
    """One 16550A on ``base``..``base+7``.

    RX FIFO entries (and ``rbr``) carry bit 8 when the byte came from the host
    queue rather than from loopback; it never reaches the guest.
    """

    def __init__(self, bus: IoBus, base: int = 0x3F8,
                 irq_raise: Callable[[], None] = lambda: None,
                 irq_lower: Callable[[], None] = lambda: None,
                 output: Callable[[bytes], None] = lambda data: None,
                 clock=None) -> None:
        self.base = base
        self.state_name = f"uart@{base:#x}"
        self.irq_raise = irq_raise
        self.irq_lower = irq_lower
        self.output = output
        self.clock = clock  # optional VirtualClock, for the RX timeout
        self.irq_level = False
        self.host_queue: deque[int] = deque()  # host side: unbounded
        self._timeout_timer = None
        self.reset()
        bus.register(base, 8, self._read, self._write, f"uart@{base:#x}", max_access=1, owner=self)

    # -- reset and state ---------------------------------------------------------
    def reset(self) -> None:
        """Power-on state.  Host input not yet delivered is kept."""
        self.s = UartState()
        self.rx: deque[int] = deque()
        self._cancel_timeout()
        self._set_irq(False)

    state_version = 1

    def get_state(self) -> dict:
        d = asdict(self.s)
        d["rx_fifo"] = list(self.rx)
        # input that reached the line but not yet the receiver is part of the VM
        d["host_queue"] = list(self.host_queue)
        t = self._timeout_timer
        d["timeout_at"] = t.cycle if t is not None and t.pending else -1
        return d

    def set_state(self, state: dict) -> None:
        names = {f.name for f in fields(UartState)}
        self.s = UartState(**{k: int(v) for k, v in state.items() if k in names})
        self.rx = deque(int(b) for b in state.get("rx_fifo", ()))
        self.host_queue = deque(int(b) & 0xFF for b in state.get("host_queue", ()))
        self._cancel_timeout()
        at = int(state.get("timeout_at", -1))
        if at >= 0 and self.clock is not None:
            # the RX timeout keeps its deadline: re-arming it "now" would move it
            self._timeout_timer = self.clock.schedule(at, self._on_timeout)
        elif self.rx:
            self._arm_timeout()
        self._update_irq()

    # -- interrupt logic -------------------------------------------------------
    @property
    def rx_trigger(self) -> int:
        return _TRIGGER[self.s.fcr & 0xC0]

    def _set_irq(self, level: bool) -> None:
        if level != self.irq_level:
            self.irq_level = level
            (self.irq_raise if level else self.irq_lower)()

    def _update_irq(self) -> None:
        s = self.s
        if s.ier & IER_RLSI and s.lsr & LSR_INT_ANY:
            iid = IIR_RLSI
        elif s.ier & IER_RDI and s.timeout_ipending:
            iid = IIR_CTI
        elif s.ier & IER_RDI and s.lsr & LSR_DR and (
                not s.fcr & FCR_FE or len(self.rx) >= self.rx_trigger):
            iid = IIR_RDI
        elif s.ier & IER_THRI and s.thr_ipending:
            iid = IIR_THRI
        elif s.ier & IER_MSI and s.msr & MSR_ANY_DELTA:
            iid = IIR_MSI
        else:
            iid = IIR_NO_INT
        s.iir = iid | (s.iir & 0xF0)
        self._set_irq(iid != IIR_NO_INT)

    # -- receive path -------------------------------------------------------------
    def char_time_ns(self) -> int:
        """Time on the wire for one character at the programmed format and rate."""
        lcr = self.s.lcr
        bits = 1 + (lcr & 3) + 5 + (2 if lcr & 0x04 else 1) + (1 if lcr & 0x08 else 0)
        return bits * (self.s.divider or 1) * 1_000_000_000 // BAUD_BASE

    def _cancel_timeout(self) -> None:
        if self._timeout_timer is not None and self.clock is not None:
            self.clock.cancel(self._timeout_timer)
        self._timeout_timer = None

    def _arm_timeout(self) -> None:
        """(Re)start the four-character RX timeout."""
        self._cancel_timeout()
        if self.clock is None:
            self.s.timeout_ipending = 1 if self.rx else 0
            return
        at = self.clock.cycles() + self.clock.ns_to_cycles(4 * self.char_time_ns())
        self._timeout_timer = self.clock.schedule(at, self._on_timeout)

    def _on_timeout(self) -> None:
        self._timeout_timer = None
        if self.rx:
            self.s.timeout_ipending = 1
            self._update_irq()

    def _receive(self, data: list[int]) -> None:
        """Characters arriving at the receiver (QEMU's serial_receive1)."""
        s = self.s
        if s.fcr & FCR_FE:
            for b in data:
                if len(self.rx) < FIFO_LEN:
                    self.rx.append(b)
                else:
                    s.lsr |= LSR_OE  # an overrun does not overwrite the FIFO
            s.lsr |= LSR_DR
            self._arm_timeout()
        else:
            if s.lsr & LSR_DR:
                s.lsr |= LSR_OE
            s.rbr = data[-1]
            s.lsr |= LSR_DR
        self._update_irq()

    def _pump(self) -> None:
        """Deliver host input while the receiver has room.

        The host side behaves like a sender with flow control: it sends only
        when the receiver has room, and only once the guest is listening
        (it reads LSR or RBR, or has enabled RX interrupts) -- so input that
        arrives before the guest has set up its UART is not lost.
        """
        s = self.s
        if not self.host_queue or s.mcr & MCR_LOOP:
            return  # in loopback the receiver is disconnected from the line
        if s.fcr & FCR_FE:
            n = min(FIFO_LEN - len(self.rx), len(self.host_queue))
        else:
            n = 0 if s.lsr & LSR_DR else 1
        if n:
            self._receive([self.host_queue.popleft() | 0x100 for _ in range(n)])

    def _give_back(self) -> None:
        """Return unread host bytes to the host queue (the RX FIFO is flushed)."""
        s = self.s
        if s.fcr & FCR_FE:
            back = [b & 0xFF for b in self.rx if b & 0x100]
        else:
            back = [s.rbr & 0xFF] if s.lsr & LSR_DR and s.rbr & 0x100 else []
        self.host_queue.extendleft(reversed(back))

    def feed(self, data: bytes) -> None:
        """Host input for the guest (e.g. from :class:`HostInput`)."""
        self.host_queue.extend(data)
        if self.s.ier & IER_RDI:
            self._pump()

    def has_pending_input(self) -> bool:
        """True while there is input the guest has not read yet."""
        return bool(self.host_queue) or bool(self.s.lsr & LSR_DR)

    # -- transmit path -------------------------------------------------------------
    def _transmit(self, byte: int) -> None:
        s = self.s
        s.lsr |= LSR_THRE
        s.thr_ipending = 1
        self._update_irq()
        if s.mcr & MCR_LOOP:
            self._receive([byte])
        else:
            self.output(bytes([byte]))
        s.lsr |= LSR_TEMT

    # -- ports ----------------------------------------------------------------------
    def _write(self, port: int, size: int, val: int) -> None:
        s = self.s
        off = port - self.base
        val &= 0xFF
        if off == 0:
            if s.lcr & LCR_DLAB:
                s.divider = (s.divider & 0xFF00) | val
            else:
                s.thr_ipending = 0
                s.lsr &= ~(LSR_THRE | LSR_TEMT)
                self._update_irq()
                self._transmit(val)
        elif off == 1:
            if s.lcr & LCR_DLAB:
                s.divider = (s.divider & 0x00FF) | (val << 8)
            else:
                changed = (s.ier ^ val) & 0x0F
                s.ier = val & 0x0F
                # Turning THRI on while THR is empty raises the THRE interrupt
                # even if an IIR read had cleared it (QEMU and Bochs do this;
                # Windows relies on it).
                if changed & IER_THRI:
                    s.thr_ipending = int(bool(s.ier & IER_THRI and s.lsr & LSR_THRE))
                if changed:
                    self._update_irq()
                if s.ier & IER_RDI:
                    self._pump()
        elif off == 2:
            if (val ^ s.fcr) & FCR_FE:  # toggling FIFO mode flushes both FIFOs
                val |= FCR_XFR | FCR_RFR
            if val & FCR_RFR:
                self._give_back()
                s.lsr &= ~(LSR_DR | LSR_BI)
                s.timeout_ipending = 0
                self._cancel_timeout()
                self.rx.clear()
            if val & FCR_XFR:
                s.lsr |= LSR_THRE
                s.thr_ipending = 1
            s.fcr = val & 0xC9
            if s.fcr & FCR_FE:
                s.iir |= IIR_FIFO
            else:
                s.iir &= ~IIR_FIFO
            self._update_irq()
            if s.ier & IER_RDI:
                self._pump()
        elif off == 3:
            s.lcr = val
        elif off == 4:
            old = s.mcr
            s.mcr = val & 0x1F
            if old & MCR_LOOP and not s.mcr & MCR_LOOP and s.ier & IER_RDI:
                self._pump()
        elif off == 7:
            s.scr = val
        # LSR and MSR writes are ignored (factory test registers)

    def _read(self, port: int, size: int) -> int:
        s = self.s
        off = port - self.base
        if off == 0:
            if s.lcr & LCR_DLAB:
                return s.divider & 0xFF
            if s.fcr & FCR_FE:
                ret = self.rx.popleft() if self.rx else 0
                if not self.rx:
                    s.lsr &= ~(LSR_DR | LSR_BI)
                    self._cancel_timeout()
                else:
                    self._arm_timeout()
                s.timeout_ipending = 0
            else:
                ret = s.rbr
                s.lsr &= ~(LSR_DR | LSR_BI)
            self._update_irq()
            self._pump()
            return ret & 0xFF
        if off == 1:
            return (s.divider >> 8) & 0xFF if s.lcr & LCR_DLAB else s.ier
        if off == 2:
            ret = s.iir
            if (ret & IIR_ID) == IIR_THRI:
                s.thr_ipending = 0
                self._update_irq()
            return ret
        if off == 3:
            return s.lcr
        if off == 4:
            return s.mcr
        if off == 5:
            self._pump()
            ret = s.lsr
            if s.lsr & (LSR_BI | LSR_OE):
                s.lsr &= ~(LSR_BI | LSR_OE)
                self._update_irq()
            return ret
        if off == 6:
            if s.mcr & MCR_LOOP:
                # the modem outputs are wired back to the inputs
                return ((s.mcr & 0x0C) << 4) | ((s.mcr & 0x02) << 3) | ((s.mcr & 0x01) << 5)
            ret = s.msr
            if s.msr & MSR_ANY_DELTA:
                s.msr &= 0xF0
                self._update_irq()
            return ret
        return s.scr
