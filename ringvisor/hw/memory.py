"""Physical memory: RAM as one bytearray, plus MMIO regions and code-page tracking.

The CPU's fast paths index RAM directly through the typed views ``m8``/``m16``/
``m32`` (aligned accesses only); everything else (unaligned, MMIO, beyond RAM)
comes through the ``read*``/``write*`` slow paths here.

Self-modifying code: pages that hold translated code are marked in
``code_pages``.  The CPU never caches a write mapping for such a page, so every
write to it arrives here and ``on_code_write`` (set by the code cache) drops
the translations built from it.

RAM is a ``bytearray`` unless the caller hands in a ``backing`` buffer of the
same size: a writable private file mapping (``mmap`` with ``MAP_PRIVATE``) is
how a restored VM loads its memory lazily and how clones share it copy-on-write
-- the host kernel reads a page from the file on its first touch and copies it
on its first write, so every path here and in the CPU works on it unchanged.

Dirty logging (live migration): while ``dirty`` is a set, every slow-path
write adds its page numbers to it.  Fast-path writes bypass this module, so
the MMU keeps write entries out of its TLB while the log is on until a write
has come this way first (``Mmu.log_writes``).
"""

from __future__ import annotations

from typing import Callable, Protocol

from ringvisor.errors import ImageError

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT
# the widths whose misaligned accesses are cut into pieces before they reach a device
# (8: MOVQ, FILD/FISTP of a quadword, CMPXCHG8B -- two aligned quadword loads, as QEMU 7.2
# cuts them: tests/hwguests/mmiosplit)
SPLIT_SIZES = (2, 4, 8)


def split_load(addr: int, size: int, load: Callable[[int, int], int]) -> int:
    """A misaligned load of ``size`` bytes (2, 4 or 8) at ``addr`` as the PC's bus makes it
    when it is not all RAM: two aligned loads of that width, from ``addr`` rounded down
    and from the next aligned address, put together.  ``load(address, size)`` makes one
    (the caller wraps a linear address at 4 GiB).  The SDM leaves the cut of a misaligned
    uncacheable access to the platform (Vol. 3 §11.3); this is QEMU's (softmmu's
    load_helper, "slow unaligned access"), which kernels have been checked against, and
    each piece reaches whatever decodes its address -- RAM, a device, or nothing."""
    first = addr & -size
    shift = 8 * (addr - first)
    value = load(first, size) >> shift | load(first + size, size) << (8 * size - shift)
    return value & ((1 << (8 * size)) - 1)


def split_store(addr: int, size: int, value: int, store: Callable[[int, int, int], None]) -> None:
    """A misaligned store's counterpart of :func:`split_load`: one byte store at a time,
    lowest address first (QEMU's store_helper_unaligned), each reaching what decodes it."""
    for i in range(size):
        store(addr + i, 1, value >> (8 * i) & 0xFF)


class MmioDevice(Protocol):
    def mmio_read(self, offset: int, size: int) -> int: ...
    def mmio_write(self, offset: int, size: int, value: int) -> None: ...


class PhysicalMemory:
    """RAM of ``size`` bytes at physical address 0, and MMIO regions above it."""

    def __init__(self, size: int, backing=None) -> None:
        if size <= 0 or size % PAGE_SIZE:
            raise ValueError("memory size must be a positive multiple of 4 KiB")
        if backing is not None and len(backing) != size:
            raise ValueError(f"RAM backing of {len(backing)} bytes for {size} bytes of memory")
        self.size = size
        try:
            self.ram = bytearray(size) if backing is None else backing
        except MemoryError:     # (the host's limit: overcommit off, ulimit -v, a cgroup)
            raise ImageError(f"the host cannot give the machine {size >> 20} MiB of memory "
                             f"(give a smaller --mem)") from None
        self.m8 = memoryview(self.ram)
        self.m16 = self.m8.cast("H")
        self.m32 = self.m8.cast("I")
        self._mmio: list[tuple[int, int, MmioDevice]] = []
        # the device whose state covers each region, where it is not the region's handler
        # (a PCI BAR's window belongs to the PCI host): what the lifecycle tests check
        self.mmio_owners: dict[int, object] = {}
        # physical page number -> True while translated code comes from it
        self.code_pages: set[int] = set()
        self.on_code_write: Callable[[int, int, int], None] = lambda ppn, addr, n: None
        # every processor's code cache (several with --smp): all hear of writes to code
        self.code_caches: list = []
        # physical pages written since the log was last read, or None when not logging
        self.dirty: set[int] | None = None

    # -- translated code of several processors ----------------------------------------
    def add_code_cache(self, cache) -> None:
        """A processor's code cache: written code pages are reported to it (with one
        processor, directly; with several, to each in turn)."""
        self.code_caches.append(cache)
        self.on_code_write = (cache.page_written if len(self.code_caches) == 1
                              else self._code_written)

    def _code_written(self, ppn: int, addr: int, n: int) -> None:
        for cache in self.code_caches:
            cache.page_written(ppn, addr, n)

    def release_code_page(self, ppn: int, cache) -> None:
        """``cache`` holds no block of page ``ppn`` any more: the page stops being code
        once no processor's cache holds one."""
        if not any(c is not cache and ppn in c.by_page for c in self.code_caches):
            self.code_pages.discard(ppn)

    # -- MMIO --------------------------------------------------------------
    def add_mmio(self, start: int, length: int, device: MmioDevice, owner: object = None) -> None:
        if start < self.size:
            raise ValueError("MMIO region overlaps RAM")
        self._mmio.append((start, start + length, device))
        if owner is not None:
            self.mmio_owners[id(device)] = owner

    def mmio_regions(self) -> list[tuple[int, int, object]]:
        """(start, end, the device whose state it is) of every MMIO region."""
        return [(s, e, self.mmio_owners.get(id(d), d)) for s, e, d in self._mmio]

    def remove_mmio(self, device: MmioDevice) -> None:
        """Unmap ``device``'s regions (a PCI BAR that moves or stops decoding)."""
        self._mmio = [r for r in self._mmio if r[2] is not device]
        self.mmio_owners.pop(id(device), None)

    def _mmio_at(self, addr: int) -> tuple[int, MmioDevice] | None:
        for start, end, dev in self._mmio:
            if start <= addr < end:
                return start, dev
        return None

    def device_at(self, addr: int) -> str | None:
        """The name of the device whose MMIO region holds ``addr`` (its state's name)."""
        hit = self._mmio_at(addr)
        if hit is None:
            return None
        dev = self.mmio_owners.get(id(hit[1]), hit[1])
        return getattr(dev, "state_name", "") or type(dev).__name__

    def is_ram(self, addr: int) -> bool:
        return 0 <= addr < self.size

    # -- byte-granular slow paths ----------------------------------------------
    def read(self, addr: int, n: int) -> bytes:
        """Read ``n`` bytes; bytes outside RAM and MMIO read as 0xFF (open bus)."""
        if 0 <= addr and addr + n <= self.size:
            return bytes(self.ram[addr:addr + n])
        return bytes(self.read8(addr + i) for i in range(n))

    def write(self, addr: int, data: bytes) -> None:
        n = len(data)
        if 0 <= addr and addr + n <= self.size:
            self.ram[addr:addr + n] = data
            if self.dirty is not None and n:
                self.dirty.update(range(addr >> PAGE_SHIFT, ((addr + n - 1) >> PAGE_SHIFT) + 1))
            self._check_code(addr, n)
            return
        for i, b in enumerate(data):
            self.write8(addr + i, b)

    def _check_code(self, addr: int, n: int) -> None:
        if self.code_pages:
            first, last = addr >> PAGE_SHIFT, (addr + n - 1) >> PAGE_SHIFT
            for ppn in range(first, last + 1):
                if ppn in self.code_pages:
                    self.on_code_write(ppn, addr, n)

    def _read_sized(self, addr: int, size: int) -> int:
        if addr >> 32:
            # at or above 4 GiB (a PAE translation reaches 36 bits): nothing on this bus
            return (1 << (8 * size)) - 1
        if addr + size <= self.size:
            return int.from_bytes(self.ram[addr:addr + size], "little")
        if size == 16:
            # an SSE access is two quadword accesses, the low one first (QEMU's TCG makes
            # it so: tests/hwguests/mmiosplit), each cut as a quadword is
            return self._read_sized(addr, 8) | self._read_sized(addr + 8, 8) << 64
        if addr & (size - 1) and size in SPLIT_SIZES:
            # a device never sees a misaligned access: it gets the aligned pieces
            return split_load(addr, size, self._read_sized)
        hit = self._mmio_at(addr)
        if hit is not None:
            start, dev = hit
            return dev.mmio_read(addr - start, size) & ((1 << (8 * size)) - 1)
        if addr < self.size:  # straddles the end of RAM
            return int.from_bytes(self.read(addr, size), "little")
        return (1 << (8 * size)) - 1

    def _write_sized(self, addr: int, size: int, value: int) -> None:
        if addr >> 32:
            return
        if addr + size <= self.size:
            self.ram[addr:addr + size] = (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little")
            if self.dirty is not None:
                self.dirty.add(addr >> PAGE_SHIFT)
                self.dirty.add((addr + size - 1) >> PAGE_SHIFT)
            if self.code_pages:
                self._check_code(addr, size)
            return
        if size == 16:                  # (two quadwords: as _read_sized)
            self._write_sized(addr, 8, value & ((1 << 64) - 1))
            self._write_sized(addr + 8, 8, value >> 64)
            return
        if addr & (size - 1) and size in SPLIT_SIZES:
            split_store(addr, size, value, self._write_sized)
            return
        hit = self._mmio_at(addr)
        if hit is not None:
            start, dev = hit
            dev.mmio_write(addr - start, size, value & ((1 << (8 * size)) - 1))
            return
        if addr < self.size:
            self.write(addr, (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little"))
        # writes beyond RAM and MMIO are dropped, as on a PC bus

    def read8(self, addr: int) -> int:
        return self._read_sized(addr, 1)

    def read16(self, addr: int) -> int:
        return self._read_sized(addr, 2)

    def read32(self, addr: int) -> int:
        return self._read_sized(addr, 4)

    def write8(self, addr: int, value: int) -> None:
        self._write_sized(addr, 1, value)

    def write16(self, addr: int, value: int) -> None:
        self._write_sized(addr, 2, value)

    def write32(self, addr: int, value: int) -> None:
        self._write_sized(addr, 4, value)
