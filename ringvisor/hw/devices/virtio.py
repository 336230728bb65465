"""Legacy virtio-pci: the transport and the split virtqueue of virtio 0.9.5.

What a para-virtual device looks like to a guest (the virtio 1.0 specification's
"legacy interface", sections 4.1.4.8 and 2.4; QEMU's ``hw/virtio/virtio-pci.c`` with
``disable-modern=on`` and ``hw/virtio/virtio.c``).  A PCI function of vendor 0x1AF4,
device 0x1000 + the virtio device ID (subsystem device: the ID itself), revision 0,
with one I/O BAR holding the registers:

Register map (BAR 0, I/O; offsets from the BAR)
-----------------------------------------------
    0x00  R32  host features: what the device offers (bits 0-31)
    0x04  RW32 guest features: what the driver accepted (a subset of the offer)
    0x08  RW32 queue address: the selected queue's ring, as a 4 KiB page number
               (0: the queue is not in use)
    0x0C  R16  queue size: entries of the selected queue (0: no such queue)
    0x0E  RW16 queue select
    0x10  RW16 queue notify: the driver writes a queue's index after adding buffers
    0x12  RW8  device status: ACKNOWLEDGE 1, DRIVER 2, DRIVER_OK 4, FAILED 0x80;
               writing 0 resets the device
    0x13  R8   ISR status: bit 0 a queue's used ring moved, bit 1 the configuration
               changed; reading it clears it and lowers the INTx line
    0x14  ...  the device's configuration (no MSI-X: the guest never enables it here)

The queue in guest memory (legacy layout, page-aligned, ``size`` a power of two):

    descriptor table  size x {u64 addr, u32 len, u16 flags (NEXT 1, WRITE 2), u16 next}
    available ring    u16 flags (NO_INTERRUPT 1), u16 idx, u16 ring[size], u16 used_event
    (pad to 4 KiB)
    used ring         u16 flags, u16 idx, {u32 id, u32 len}[size], u16 avail_event

The device serves a queue when the driver notifies it (the queue notify register), at
once, as QEMU's devices do from the vCPU's exit: by the time the ``out`` returns the
used ring has moved, and the INTx line is up unless the driver set NO_INTERRUPT in the
available ring (QEMU's ``virtio_should_notify`` without EVENT_IDX and NOTIFY_ON_EMPTY).
A malformed chain (a loop, an address outside RAM, a write into a read-only buffer)
breaks the device as QEMU's ``virtio_error`` does: it serves nothing more until the
driver resets it, and ``broken`` says why.

The interrupt is INTx pin A; QEMU's PIIX3 routes slot s's pin A to PIRQ (s - 1) & 3,
which SeaBIOS sends to IRQ 10, 10, 11, 11 (``pci.i440fx_bus``): the line is shared, so
it is asserted while any function on it asserts it (:class:`SharedLine`).
"""

from __future__ import annotations

import struct

from .pci import BAR_IO, CMD_IO, PciFunction

VENDOR = 0x1AF4
CLASS_STORAGE_SCSI, CLASS_COMM_OTHER = 0x010000, 0x078000

# registers
HOST_FEATURES, GUEST_FEATURES, QUEUE_PFN, QUEUE_NUM, QUEUE_SEL, QUEUE_NOTIFY = 0, 4, 8, 12, 14, 16
STATUS, ISR, CONFIG = 18, 19, 20
# device status
S_ACKNOWLEDGE, S_DRIVER, S_DRIVER_OK, S_FAILED = 1, 2, 4, 0x80
ISR_QUEUE, ISR_CONFIG = 1, 2
# descriptors and rings
DESC_SIZE = 16
F_NEXT, F_WRITE, F_INDIRECT = 1, 2, 4
AVAIL_NO_INTERRUPT = 1
PAGE = 4096
CMD_MASTER = 4


class VirtqueueError(Exception):
    """The driver put something in a queue that no device can serve."""


def ring_layout(size: int) -> tuple[int, int, int]:
    """Offsets of the descriptor table, available ring and used ring in a legacy queue
    (virtio 1.0 section 2.4.2: the used ring starts at the next 4 KiB boundary)."""
    avail = DESC_SIZE * size
    used = (avail + 6 + 2 * size + PAGE - 1) & ~(PAGE - 1)
    return 0, avail, used


def ring_bytes(size: int) -> int:
    return ring_layout(size)[2] + ((6 + 8 * size + PAGE - 1) & ~(PAGE - 1))


class Virtqueue:
    """One split virtqueue: the device's side (it consumes the available ring and
    produces the used ring)."""

    def __init__(self, mem, size: int) -> None:
        self.mem, self.size = mem, size
        self.pfn = 0
        self.last_avail = 0           # the next available-ring entry the device takes
        self.used_idx = 0

    def reset(self) -> None:
        self.pfn = self.last_avail = self.used_idx = 0

    @property
    def base(self) -> int:
        return self.pfn * PAGE

    def _u16(self, addr: int) -> int:
        return struct.unpack("<H", self._read(addr, 2))[0]

    def _read(self, addr: int, n: int) -> bytes:
        if not self.mem.is_ram(addr) or not self.mem.is_ram(addr + n - 1):
            raise VirtqueueError(f"a ring or buffer at {addr:#x} is outside RAM")
        return self.mem.read(addr, n)

    def _write(self, addr: int, data: bytes) -> None:
        if not self.mem.is_ram(addr) or not self.mem.is_ram(addr + len(data) - 1):
            raise VirtqueueError(f"a ring or buffer at {addr:#x} is outside RAM")
        self.mem.write(addr, data)

    def pending(self) -> int:
        """Chains the driver made available that the device has not taken."""
        if not self.pfn:
            return 0
        _, avail, _ = ring_layout(self.size)
        n = (self._u16(self.base + avail + 2) - self.last_avail) & 0xFFFF
        if n > self.size:
            raise VirtqueueError(f"the available index ran {n} entries ahead of a "
                                 f"{self.size}-entry queue")
        return n

    def pop(self) -> tuple[int, list[tuple[int, int, bool]]]:
        """The next available chain: its head and its buffers (address, length, device
        writes it); read-only buffers come first, as the specification requires."""
        _, avail, _ = ring_layout(self.size)
        slot = self.base + avail + 4 + 2 * (self.last_avail % self.size)
        head = self._u16(slot)
        self.last_avail = (self.last_avail + 1) & 0xFFFF
        chain, i, seen_write = [], head, False
        for _ in range(self.size):
            if i >= self.size:
                raise VirtqueueError(f"descriptor {i} is past the end of a {self.size}-entry queue")
            addr, length, flags, nxt = struct.unpack("<QIHH", self._read(self.base + DESC_SIZE * i, 16))
            if flags & F_INDIRECT:
                raise VirtqueueError("an indirect descriptor, which the device did not offer")
            write = bool(flags & F_WRITE)
            if seen_write and not write:
                raise VirtqueueError("a read-only buffer after a device-writable one")
            seen_write |= write
            chain.append((addr, length, write))
            if not flags & F_NEXT:
                return head, chain
            i = nxt
        raise VirtqueueError(f"the chain from descriptor {head} loops")

    def push(self, head: int, written: int) -> None:
        """Return a chain in the used ring; ``written``: bytes the device wrote into it."""
        _, _, used = ring_layout(self.size)
        slot = self.base + used + 4 + 8 * (self.used_idx % self.size)
        self._write(slot, struct.pack("<II", head, written))
        self.used_idx = (self.used_idx + 1) & 0xFFFF
        self._write(self.base + used + 2, struct.pack("<H", self.used_idx))

    def wants_interrupt(self) -> bool:
        _, avail, _ = ring_layout(self.size)
        return not self._u16(self.base + avail) & AVAIL_NO_INTERRUPT

    # -- moving data in and out of a chain ---------------------------------------------------
    def gather(self, chain) -> bytes:
        """The driver-readable bytes of a chain."""
        return b"".join(self._read(addr, length) for addr, length, write in chain
                        if not write and length)

    def scatter(self, chain, data: bytes) -> int:
        """Write ``data`` into the device-writable buffers of a chain; bytes written."""
        done = 0
        for addr, length, write in chain:
            if not write or done >= len(data):
                continue
            piece = data[done:done + length]
            self._write(addr, piece)
            done += len(piece)
        return done

    def get_state(self) -> dict:
        return {"pfn": self.pfn, "last_avail": self.last_avail, "used_idx": self.used_idx}

    def set_state(self, st: dict) -> None:
        self.pfn = int(st["pfn"]) & 0xFFFFF
        self.last_avail = int(st["last_avail"]) & 0xFFFF
        self.used_idx = int(st["used_idx"]) & 0xFFFF


class SharedLine:
    """A level-triggered PCI interrupt line several functions may assert (wired-OR)."""

    def __init__(self, raise_irq, lower_irq) -> None:
        self.raise_irq, self.lower_irq = raise_irq, lower_irq
        self.asserted: set[int] = set()

    def set(self, who: int, level: bool) -> None:
        before = bool(self.asserted)
        if level:
            self.asserted.add(who)
        else:
            self.asserted.discard(who)
        if bool(self.asserted) != before:
            (self.raise_irq if self.asserted else self.lower_irq)()


def pirq_line(slot: int, pirq_route: bytes) -> int:
    """The ISA IRQ pin A of ``slot`` reaches on QEMU's PIIX3 (``pci_slot_get_pirq``)."""
    return pirq_route[(slot - 1) & 3]


class VirtioPci(PciFunction):
    """A legacy virtio-pci function; a device subclass names its ID, features, queues and
    configuration, and serves its queues in ``serve(index)``."""

    VIRTIO_ID = 0                     # the subsystem device ID (virtio 1.0 section 5)
    PCI_DEVICE = 0                    # the legacy PCI device ID (section 4.1.2.1): a table
    CLASS = CLASS_COMM_OTHER
    QUEUE_SIZES: tuple[int, ...] = ()
    FEATURES = 0

    def __init__(self, mem) -> None:
        self.config_len = len(self.device_config())
        size = 1 << (CONFIG + self.config_len - 1).bit_length()
        super().__init__(VENDOR, self.PCI_DEVICE, self.CLASS,
                         bars=((size, True, None),))
        self.bars = [(size, True, self)]
        struct.pack_into("<HH", self.config, 0x2C, VENDOR, self.VIRTIO_ID)
        self.config[0x3D] = 1                             # INTx pin A
        self.mem = mem
        self.queues = [Virtqueue(mem, n) for n in self.QUEUE_SIZES]
        self.line: SharedLine | None = None
        self.line_id = 0
        self.stats = {"notifies": 0, "requests": 0, "interrupts": 0}
        self.broken: str | None = None
        self.reset()

    def attach(self, line: SharedLine, line_id: int) -> None:
        self.line, self.line_id = line, line_id

    def reset(self) -> None:
        self.guest_features = 0
        self.status = 0
        self.isr = 0
        self.queue_sel = 0
        self.broken = None
        for q in self.queues:
            q.reset()
        if self.line is not None:
            self.line.set(self.line_id, False)

    # -- what a device defines ---------------------------------------------------------------
    def device_config(self) -> bytes:
        return b""

    def serve(self, index: int) -> None:
        raise NotImplementedError

    def device_reset(self) -> None:
        """What the device itself forgets on a reset (beyond the transport's registers)."""

    # -- the registers ---------------------------------------------------------------------------
    def mmio_read(self, offset: int, size: int) -> int:
        if offset >= CONFIG:
            cfg = self.device_config()
            at = offset - CONFIG
            return int.from_bytes(cfg[at:at + size].ljust(size, b"\xff"), "little")
        q = self._q()
        regs = struct.pack("<IIIHHHBB", self.FEATURES, self.guest_features, q.pfn if q else 0,
                           q.size if q else 0, self.queue_sel, 0, self.status, self.isr)
        value = int.from_bytes(regs[offset:offset + size], "little")
        if offset <= ISR < offset + size:
            self.isr = 0                      # reading the ISR acknowledges the interrupt
            self._update_line()
        return value

    def mmio_write(self, offset: int, size: int, value: int) -> None:
        if offset == GUEST_FEATURES and size == 4:
            self.guest_features = value & self.FEATURES
        elif offset == QUEUE_PFN and size == 4:
            q = self._q()
            if value == 0:
                # QEMU's legacy transport: a queue address of 0 resets the whole device
                self.reset()
                self.device_reset()
            elif q is not None:
                q.pfn, q.last_avail, q.used_idx = value & 0xFFFFF, 0, 0
        elif offset == QUEUE_SEL and size == 2:
            self.queue_sel = value
        elif offset == QUEUE_NOTIFY and size == 2:
            self.notify(value)
        elif offset == STATUS and size == 1:
            if value == 0:
                self.reset()
                self.device_reset()
                return
            self.status = value & 0xFF
            if value & S_DRIVER_OK and not self.read(4, 2) & CMD_MASTER:
                # QEMU (virtio_ioport_write): drivers before Linux 2.6.34 set DRIVER_OK
                # without enabling bus mastering; it is enabled for them
                struct.pack_into("<H", self.config, 4, self.read(4, 2) | CMD_MASTER)
            if value & S_DRIVER_OK:
                self.kick()
        # other offsets and widths: read-only or not a register (QEMU ignores them)

    def _q(self) -> Virtqueue | None:
        return self.queues[self.queue_sel] if self.queue_sel < len(self.queues) else None

    # -- queues and the interrupt ----------------------------------------------------------------
    def notify(self, index: int) -> None:
        self.stats["notifies"] += 1
        if index < len(self.queues) and self.queues[index].pfn and self.broken is None:
            self._serve(index)

    def kick(self) -> None:
        """Serve every live queue (after DRIVER_OK, or when the host has news)."""
        for i, q in enumerate(self.queues):
            if q.pfn and self.status & S_DRIVER_OK and self.broken is None:
                self._serve(i)

    def _serve(self, index: int) -> None:
        try:
            self.serve(index)
        except VirtqueueError as e:
            self.broken = f"queue {index}: {e}"

    def complete(self, index: int, head: int, written: int) -> None:
        """A request is done: into the used ring, and interrupt unless the driver said not to."""
        q = self.queues[index]
        q.push(head, written)
        self.stats["requests"] += 1
        if q.wants_interrupt():
            self.isr |= ISR_QUEUE
            self.stats["interrupts"] += 1
            self._update_line()

    def _update_line(self) -> None:
        if self.line is not None:
            self.line.set(self.line_id, bool(self.isr))

    # -- state -----------------------------------------------------------------------------------
    def get_state(self) -> dict:
        return {"guest_features": self.guest_features, "status": self.status, "isr": self.isr,
                "queue_sel": self.queue_sel, "queues": [q.get_state() for q in self.queues],
                "broken": self.broken}

    def set_state(self, st: dict) -> None:
        if len(st["queues"]) != len(self.queues):
            raise ValueError(f"{self.state_name}: the state has {len(st['queues'])} queues, "
                             f"the device {len(self.queues)}")
        self.guest_features = int(st["guest_features"]) & self.FEATURES
        self.status, self.isr = int(st["status"]) & 0xFF, int(st["isr"]) & 3
        self.queue_sel = int(st["queue_sel"]) & 0xFFFF
        for q, s in zip(self.queues, st["queues"]):
            q.set_state(s)
        self.broken = st.get("broken")
        self._update_line()


def place(host, function: VirtioPci, line_for, io_base: int) -> int:
    """Put a virtio function in the first free slot of bus 0, with its I/O BAR at
    ``io_base`` (aligned to its size) and its interrupt line as SeaBIOS programs it
    (``line_for(irq)``: the :class:`SharedLine` of that ISA IRQ); the next free I/O
    address."""
    slot = next(s for s in range(3, 32) if s << 3 not in host.functions)
    host.add(slot, 0, function)
    size = function.bars[0][0]
    base = (io_base + size - 1) & ~(size - 1)
    struct.pack_into("<I", function.config, 0x10, base | BAR_IO)
    irq = pirq_line(slot, bytes(host.functions[1 << 3].config[0x60:0x64]))
    function.config[0x3C] = irq
    struct.pack_into("<H", function.config, 4, CMD_IO | 0x100)
    function.attach(line_for(irq), slot)
    host.remap_all()
    return base + size
