"""virtio-console: a console on legacy virtio-pci, one port (virtio 1.0 section 5.3;
QEMU's ``hw/char/virtio-serial-bus.c`` with a ``virtconsole`` at port 0).

PCI 1af4:1003, subsystem 1af4:0003, class 07 80 00 (communication, other).  Without
VIRTIO_CONSOLE_F_MULTIPORT (not offered here; QEMU offers it and serves port 0 on the
same two queues when the driver does not accept it) the device has two queues of 128
entries: 0 the receive queue (the host's input, into buffers the driver made
device-writable), 1 the transmit queue (the driver's output).

Configuration space (after the transport's registers): u16 cols, u16 rows (F_SIZE, not
offered: 0), u32 max_nr_ports (1), u32 emerg_wr (F_EMERG_WRITE, not offered).

Output goes to ``output`` as each transmit chain is served.  Input waits in the device
until the driver posts receive buffers (the driver's flow control: a full guest simply
stops posting); it is part of the saved state, as the UART's receive FIFO is.
"""

from __future__ import annotations

import struct
from typing import Callable

from .virtio import CLASS_COMM_OTHER, S_DRIVER_OK, VirtioPci

RECEIVEQ, TRANSMITQ = 0, 1
QUEUE_SIZE = 128


class VirtioConsole(VirtioPci):
    state_name = "virtio-console"
    state_version = 1
    VIRTIO_ID, PCI_DEVICE, CLASS = 3, 0x1003, CLASS_COMM_OTHER
    QUEUE_SIZES = (QUEUE_SIZE, QUEUE_SIZE)

    def __init__(self, mem, output: Callable[[bytes], None]) -> None:
        self.output = output
        self.input = bytearray()
        super().__init__(mem)
        self.stats.update(bytes_out=0, bytes_in=0)

    def device_config(self) -> bytes:
        return struct.pack("<HHII", 0, 0, 1, 0)

    def feed(self, data: bytes) -> None:
        """The host's input for the port."""
        self.input += data
        if self.status & S_DRIVER_OK and self.queues[RECEIVEQ].pfn:
            self._serve(RECEIVEQ)

    def pending_input(self) -> int:
        return len(self.input)

    def serve(self, index: int) -> None:
        q = self.queues[index]
        if index == TRANSMITQ:
            while q.pending():
                head, chain = q.pop()
                data = q.gather(chain)
                self.stats["bytes_out"] += len(data)
                self.output(data)
                self.complete(TRANSMITQ, head, 0)
        elif index == RECEIVEQ:
            while self.input and q.pending():
                head, chain = q.pop()
                n = q.scatter(chain, bytes(self.input))
                del self.input[:n]
                self.stats["bytes_in"] += n
                self.complete(RECEIVEQ, head, n)

    def get_state(self) -> dict:
        return {**super().get_state(), "input": bytes(self.input)}

    def set_state(self, st: dict) -> None:
        super().set_state(st)
        self.input = bytearray(bytes(st.get("input", b"")))
