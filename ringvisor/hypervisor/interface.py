"""The door from Domain 0's user space into the hypervisor: the toolstack's only one.

In Xen the toolstack is a set of programs in Domain 0's user space; it
reaches the hypervisor through Domain 0's kernel (Linux's ``privcmd``, which
issues a hypercall on the program's behalf with pointers into the program's
memory; ``evtchn``, which hands it the events of the ports it bound).  Here
the toolstack is Python, and this module is that path:

- ``call(nr, *args)`` issues hypercall ``nr`` with Domain 0's identity,
  through the same dispatcher, validation and security checks as a hypercall
  Domain 0's kernel makes with ``int $0x82`` (``DomainMonitor.call``);
- pointer arguments are addresses in the toolstack's own memory
  (:class:`ToolstackMemory`): a window of Domain 0's pseudo-physical frames
  beyond what its kernel was told it has, partly backed by Domain 0's own
  frames (the buffers), the rest holes where the toolstack maps frames of
  other domains -- foreign (``XENMAPSPACE_gmfn_foreign``) or granted
  (``GNTTABOP_map_grant_ref``) -- exactly as it would into a process of
  Domain 0;
- ``events()`` returns the ports bound through it that were signalled.

Nothing else of the hypervisor is reachable from the toolstack: it imports
``ringvisor.abi`` and this module only (a test checks the import graph).
"""

from __future__ import annotations

from ringvisor.vmm.guestmem import GuestPageFault

WINDOW_GPFN = 0x80000           # Domain 0's pseudo-physical frames from 2 GiB up
WINDOW_VA = 0x40000000          # where they appear in the toolstack's address space
WINDOW_PAGES = 4096             # 16 MiB of address space
BUFFER_PAGES = 64               # of which the first are the toolstack's own memory


class ToolstackMemory:
    """The toolstack's address space: ``WINDOW_VA + 4 KiB * i`` is Domain 0's frame
    ``WINDOW_GPFN + i`` (whatever its P2M holds there now)."""

    def __init__(self, mem, dom0) -> None:
        self.mem, self.dom0 = mem, dom0

    def _machine(self, va: int, write: bool) -> int:
        i = (va - WINDOW_VA) >> 12
        mfn = self.dom0.p2m.get(WINDOW_GPFN + i) if 0 <= i < WINDOW_PAGES else None
        if mfn is None or (write and mfn in self.dom0.monitor.gm.readonly):
            raise GuestPageFault(va, 6 if write else 4)
        return mfn << 12 | (va & 0xFFF)

    def read(self, va: int, n: int) -> bytes:
        out = bytearray()
        while n:
            chunk = min(n, 0x1000 - (va & 0xFFF))
            out += self.mem.read(self._machine(va, False), chunk)
            va, n = va + chunk, n - chunk
        return bytes(out)

    def write(self, va: int, data: bytes) -> None:
        parts, off = [], 0
        while off < len(data):
            chunk = min(len(data) - off, 0x1000 - ((va + off) & 0xFFF))
            parts.append((self._machine(va + off, True), data[off:off + chunk]))
            off += chunk
        for ma, d in parts:
            self.mem.write(ma, d)
            self.dom0.monitor.hv.guest_memory_written(ma, len(d))


class HypercallInterface:
    def __init__(self, hv) -> None:
        dom0 = hv.domains[0]
        self._dom0 = dom0
        self.memory = ToolstackMemory(hv.mem, dom0)
        self.window = (WINDOW_VA, WINDOW_GPFN, WINDOW_PAGES, BUFFER_PAGES)
        hv.toolstack_wakeup = self._wakeup
        hv.domain_changed = self._changed
        self.on_event = lambda: None            # a port of the toolstack's was signalled
        self.on_domain_change = lambda: None    # a domain shut down, crashed or went
        self._hv = hv

    def call(self, nr: int, *args: int) -> int:
        a = (list(args) + [0] * 5)[:5]
        return self._dom0.monitor.call(nr, tuple(x & 0xFFFFFFFF for x in a), self.memory)

    def read(self, va: int, n: int) -> bytes:
        return self.memory.read(va, n)

    def write(self, va: int, data: bytes) -> None:
        self.memory.write(va, data)

    def events(self) -> list[int]:
        """The toolstack's ports that were signalled since the last call."""
        return self._dom0.events.read_user()

    def _wakeup(self) -> None:
        self.on_event()

    def _changed(self) -> None:
        self.on_domain_change()

    def now_ns(self) -> int:
        """Virtual time (the toolstack's clock: what it measures, it measures in it)."""
        return self._hv.clock.now_ns()

    def after(self, delay_ns: int, fn) -> None:
        """Run ``fn`` once ``delay_ns`` of virtual time from now, between two of the CPU's
        steps (Domain 0's user space gets the CPU: never inside a hypercall)."""
        clock = self._hv.clock
        clock.schedule(clock.cycles() + clock.ns_to_cycles(delay_ns), fn)
