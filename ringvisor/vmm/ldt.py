"""The guest's LDT in a real one, kept in step as its GDT is (``gdt.py``).

LLDT is privileged, so the monitor sees every one (it emulates it: ``load``).  The
selector it loads names an LDT descriptor in the guest's GDT; the processor caches
that descriptor's base and limit in LDTR, and a later edit of the descriptor means
nothing until the next LLDT (SDM Vol. 3 §2.4.2) -- the virtual CPU caches them
the same way (``ldt_base``, ``ldt_limit``).  The monitor loads the real LDTR itself
(``install``): the guest's selector -- so that SLDT, which does not trap, reads what
the guest loaded -- cached with the base and limit of a real table of compressed
copies at ``L.LDT`` in the hypervisor region, where a guest selector with TI set
indexes the same entry as in the guest's own LDT.

Keeping the copies current is the GDT's problem again -- in-place edits, accessed
bits, the CS and SS a guest keeps after LLDT -- and is solved the same way, by the
same code: :class:`GuestLdt` is :class:`GuestGdt` over another table.  The frames
of each table are watched separately (the two often share one), and a store into
a frame of the LDT is not emulated in place as the GDT's hot frames are: it makes
the frame writable and poisons its entries until the next entry into the monitor.
"""

from __future__ import annotations

from ringvisor.hw.faults import GP, NP
from ringvisor.hw.segments import Descriptor, null_segment

from . import layout as L
from .errors import GuestFault
from .gdt import GuestGdt

LDT_TYPE = 0x2                  # a system descriptor of type 2: an LDT (SDM Vol. 3 Table 3-2)


class GuestLdt(GuestGdt):
    NAME, TI = "ldt", 4
    REAL, MAX = L.LDT, L.LDT_ENTRIES

    def table(self) -> tuple[int, int]:
        """LDTR's cached base and limit; no table (limit -1) while LDTR is null."""
        v = self.mon.vcpu
        if not v.ldtr & 0xFFFC:
            return 0, -1
        return v.ldt_base, v.ldt_limit

    def guest_bytes(self, offset: int, n: int) -> bytes:
        return self.mon.gm.read(self.mon.vcpu.ldt_base + offset, n)

    def entry(self, sel: int) -> int | None:
        """The guest's raw descriptor for ``sel`` (TI set): None beyond the limit, or
        with no LDT loaded (the processor's #GP(selector))."""
        base, limit = self.table()
        if (sel | 7) > limit:
            return None
        return int.from_bytes(self.guest_bytes(sel & ~7, 8), "little")

    # -- LLDT --------------------------------------------------------------------------
    def load(self, sel: int) -> None:
        """LLDT ``sel`` as the processor performs it (SDM Vol. 2 LLDT): a null selector
        leaves no LDT; otherwise the selector must name a present LDT descriptor in the
        GDT -- #GP(selector) if it points into the LDT, beyond the GDT or at anything
        else, #NP(selector) if not present."""
        if not sel & 0xFFFC:
            self.enter(sel, 0, 0)
            return
        err = sel & 0xFFFC
        if sel & 4:
            raise GuestFault(GP, err)
        d = self.mon.guest_desc(sel)              # (#GP(selector) beyond the GDT)
        if d.s or d.type != LDT_TYPE:
            raise GuestFault(GP, err)
        if not d.present:
            raise GuestFault(NP, err)
        self.enter(sel, d.base, d.limit)

    def enter(self, sel: int, base: int, limit: int) -> None:
        """LDTR becomes ``sel`` with ``base`` and ``limit`` (checked by the caller: LLDT,
        or a task switch by Table 7-1's rules)."""
        v = self.mon.vcpu
        self.hold()
        v.ldtr, v.ldt_base, v.ldt_limit = sel, base, limit
        self.reload()
        self.install()

    def install(self) -> None:
        """Point the real LDTR at the real table (or at nothing, as the guest's)."""
        v, st = self.mon.vcpu, self.mon.cpu.state
        if v.ldtr & 0xFFFC:
            limit = min(v.ldt_limit, L.LDT_ENTRIES * 8 - 1)
            st.ldtr = Descriptor(ldt_descriptor(L.MLIN + L.LDT, limit), 0).segment(v.ldtr)
        else:
            st.ldtr = null_segment(v.ldtr)


def ldt_descriptor(base: int, limit: int) -> int:
    """A present LDT descriptor, DPL 0, byte-granular (``limit`` < 64 KiB)."""
    return ((limit & 0xFFFF) | (base & 0xFFFFFF) << 16 | (0x80 | LDT_TYPE) << 40 |
            (base >> 24 & 0xFF) << 56)
