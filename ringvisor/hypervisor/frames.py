"""Machine memory as a pool of frames, and who owns each one (Xen's page_info and M2P).

The hypervisor owns every machine frame outside its own region and hands
them out: to domains (their pseudo-physical memory, through their P2M) and to
itself (shadow page tables, shared-info pages, grant tables: Xen's heap,
owner ``DOMID_XEN``).  The machine-to-phys table records, for a frame a
domain owns, which of its pseudo-physical frames it backs, so a frame is
never in two domains' memory unless one of them was *granted* it (and then
the grantee's P2M names it, not the M2P).

A frame given back is scrubbed (zeroed) before anyone else gets it: a
domain must never see what a destroyed one left behind.
"""

from __future__ import annotations

from ringvisor.abi import DomId

PAGE = 0x1000
INVALID = -1


class OutOfMemory(Exception):
    """The pool has fewer free frames than asked for."""


class FrameAllocator:
    def __init__(self, mem, first: int, end: int) -> None:
        """Frames ``[first, end)`` (frame numbers) of machine memory ``mem``."""
        self.mem = mem
        self.first, self.end = first, end
        self.free: list[int] = list(range(end - 1, first - 1, -1))    # pop() gives the lowest
        self.owner: dict[int, int] = {}            # mfn -> domid (DOMID_XEN for the hypervisor's)
        self.m2p: dict[int, int] = {}              # mfn -> gpfn in its owner's physmap

    @property
    def total(self) -> int:
        return self.end - self.first

    @property
    def nr_free(self) -> int:
        return len(self.free)

    def alloc(self, domid: int, n: int = 1) -> list[int]:
        """``n`` scrubbed frames for ``domid``, or OutOfMemory (nothing taken)."""
        if n > len(self.free):
            raise OutOfMemory(f"{n} frames asked for, {len(self.free)} free")
        out = [self.free.pop() for _ in range(n)]
        for mfn in out:
            self.owner[mfn] = domid
        return out

    def alloc_xen(self, n: int = 1) -> list[int]:
        return self.alloc(DomId.XEN, n)

    def alloc_contiguous(self, domid: int, n: int) -> list[int]:
        """``n`` frames in a row (a translation cache: code written by machine address),
        the lowest such run; OutOfMemory (nothing taken) if there is none."""
        run: list[int] = []
        for mfn in sorted(self.free):
            run = run + [mfn] if run and run[-1] == mfn - 1 else [mfn]
            if len(run) == n:
                taken = set(run)
                self.free = [m for m in self.free if m not in taken]
                for m in run:
                    self.owner[m] = domid
                return run
        raise OutOfMemory(f"no {n} contiguous free frames")

    def release(self, mfn: int) -> None:
        """Give one frame back to the pool (scrubbed)."""
        if self.owner.pop(mfn, None) is None:
            raise ValueError(f"frame {mfn:#x} is not allocated")
        self.m2p.pop(mfn, None)
        self.mem.write(mfn * PAGE, bytes(PAGE))
        self.free.append(mfn)

    def owned_by(self, domid: int) -> list[int]:
        return [m for m, d in self.owner.items() if d == domid]

    def is_free(self, mfn: int) -> bool:
        return self.first <= mfn < self.end and mfn not in self.owner
