"""Reflecting exceptions and interrupts into the guest's own handlers (SDM Vol. 3 §6.12).

The monitor enters the guest's handler exactly as the hardware would have:
the guest's IDT gate and the code segment it names are checked with the
hardware's own rules (``hw.transfers``, ``hw.segments``), the frame is pushed
on the guest's stack (switching to the stack in the guest's TSS from user
mode), and every fault raised on the way is what the hardware raises, with
its error code (the IDT and EXT bits) and the EIP it would save: a fault
while delivering ``int n`` is reported *at* the ``int``, not after it.
"""

from __future__ import annotations

import struct

from ringvisor.hw.faults import CONTRIBUTORY, GP, NAMES, PF, SS, TS, CpuFault, TripleFault
from ringvisor.hw.segments import INT_GATE16, INT_GATE32, TASK_GATE, TRAP_GATE16, Descriptor, \
    check_access, check_tss_stack, null_segment
from ringvisor.hw.state import ATTR_DB
from ringvisor.hw.transfers import check_gate, check_handler_cs, check_return_cs, check_return_ss

from . import tasks
from .errors import MonitorStop
from .frame import Frame
from .guestmem import GuestPageFault
from .layout import FIRST_RESERVED, MLIN
from .vm86 import frame_segments

TF, NT, RF, VM = 1 << 8, 1 << 14, 1 << 16, 1 << 17
ACCESSED = 1 << 40
_Q = struct.Struct("<Q").unpack_from

# The outcome of reading a guest gate, keyed by its eight bytes and what the checks
# depend on (vector, software or not, CPL): the IDT is read at every delivery, so
# a change to a gate is seen at once; only the decoding and the checks are cached.
_GATES: dict[tuple[int, int, bool, int], tuple[int, int, bool, int]] = {}
# The same for a whole delivery from ring 3 (``Delivery._deliver_known``), keyed by the
# gate's (or a trap table's entry), the handler's code descriptor's and the TSS stack
# segment's bytes, and whether the monitor sets the guest's accessed bits.
_KNOWN: dict[tuple, tuple | bool] = {}
# The same for a return to ring 3 (``Delivery.known_return``): keyed by the CS and SS
# selectors, their descriptors' bytes, the CPL and whether the monitor sets accessed
# bits, the CS's limit, or False if the long way must run (a check fails, or a bit is
# still to be set).
_RETURNS: dict[tuple, int | bool] = {}


def stack_image(vals: list[int], size: int) -> bytes:
    """The bytes of ``vals`` pushed in order (the first highest) as ``size``-byte values:
    a frame as the guest finds it on its stack, of dwords or, through a 16-bit gate,
    words."""
    pack = _IMAGES.get((len(vals), size))
    if pack is None:
        pack = _IMAGES[len(vals), size] = struct.Struct(f"<{len(vals)}{'I' if size == 4 else 'H'}").pack
    mask = 0xFFFFFFFF if size == 4 else 0xFFFF
    return pack(*[x & mask for x in vals[::-1]])


_IMAGES: dict[tuple[int, int], object] = {}       # (values, size) -> its Struct's pack


class Delivery:
    """Entering the guest's handlers (mixed into ``Monitor``)."""

    delivered = False            # the guest was sent to a handler during this entry

    def soft_interrupt(self, f: Frame, vector: int, length: int) -> None:
        """``int n`` executed by the guest (it trapped: every real gate but the callouts is DPL 0)."""
        self.traps[f"int {vector:#x}"] += 1
        at = self.guest_eip(f)
        self.deliver(f, vector, None, True, (at + length) & 0xFFFFFFFF, at)

    def soft_interrupt_after(self, f: Frame, vector: int, length: int) -> None:
        """``int n`` that reached the monitor through a gate it may use (the callout vectors
        are DPL 1): the frame's EIP is already past it."""
        self.traps[f"int {vector:#x}"] += 1
        ret = self.guest_eip(f)
        self.deliver(f, vector, None, True, ret, (ret - length) & 0xFFFFFFFF)

    def deliver(self, f: Frame, vector: int, err: int | None, soft: bool, ret: int,
                at: int | None = None) -> None:
        """Enter the guest's handler for ``vector`` as the hardware would have.

        ``ret`` is the EIP the frame holds; ``at`` the instruction's own, saved instead
        when delivering it faults (a software interrupt's; default ``ret``)."""
        if self.real.active:          # real-address mode: the IVT (``realmode``)
            self.real.deliver(f, vector, soft, ret)
            return
        first = vector
        for _ in range(3):
            try:
                self._deliver(f, vector, err, soft, ret)
                return
            except GuestPageFault as e:
                self.vcpu.cr2 = e.address
                nv, ne = PF, e.error_code
            except CpuFault as e:
                nv, ne = e.vector, e.error_code
            if vector == 8:
                raise TripleFault(f"the guest faulted ({NAMES.get(nv, nv)}) delivering #DF "
                                  f"under {self.name}; first: vector {first}")
            # SDM Vol. 3 Table 6-5: the double-fault rules
            if (vector in CONTRIBUTORY and nv in CONTRIBUTORY) or \
                    (vector == PF and nv in CONTRIBUTORY | {PF}):
                vector, err = 8, 0
            else:
                vector, err = nv, ne
            if at is not None:
                ret = at
            soft = False
        raise TripleFault(f"guest exception delivery loops under {self.name}")

    def _deliver(self, f: Frame, vector: int, err: int | None, soft: bool, ret: int) -> None:
        if f.cs & 3 == 3 and not f.eflags & VM and self.vcpu.cpl == 3 and \
                self._deliver_known(f, vector, err, soft, ret):
            return
        sel, offset, interrupt_gate, size = self.guest_gate(vector, soft)
        if offset is None:            # a task gate: a nested task switch (SDM Vol. 3 §6.12.2)
            tasks.switch(self, f, vector * 8, sel, tasks.T.CALL, ret, 0 if soft else 1, err)
            self.stats["reflected"] += 1
            self.delivered = True
            return
        self.enter_guest_handler(f, sel, offset, interrupt_gate, err, ret, 0 if soft else 1, size)

    def guest_gate(self, vector: int, soft: bool) -> tuple:
        """The guest's handler for ``vector``: (code selector, offset, clears IF, the size
        of the frame's values: 2 for a 16-bit gate), with the faults the hardware raises
        while reading its gate; for a task gate, (the gate's descriptor, None, False, 4)."""
        v = self.vcpu
        if vector * 8 + 7 > v.idt_limit:
            raise CpuFault(GP, vector * 8 + 2 + (0 if soft else 1))
        addr = (v.idt_base + vector * 8) & 0xFFFFFFFF
        raw = int.from_bytes(self.gm.read(addr, 8), "little")
        key = (raw, vector, soft, v.cpl)
        hit = _GATES.get(key)
        if hit is not None:
            return hit
        gate = Descriptor(raw, addr)
        check_gate(gate, vector, soft, v.cpl)
        if gate.type == TASK_GATE:
            return gate, None, False, 4
        if len(_GATES) > 4096:          # a guest writing random tables cannot grow it
            _GATES.clear()
        # a 16-bit gate: a 16-bit offset, and a frame of words (SDM Vol. 3 §6.12.1)
        gate16 = gate.type in (INT_GATE16, TRAP_GATE16)
        hit = _GATES[key] = (gate.gate_selector, gate.gate_offset & 0xFFFF if gate16 else gate.gate_offset,
                             gate.type in (INT_GATE16, INT_GATE32), 2 if gate16 else 4)
        return hit

    # -- from user mode, through a gate seen before -------------------------------------------
    def _peek8(self, a: int, b: int) -> tuple[int, int] | None:
        """The eight bytes a supervisor read at guest linear ``a``, and at ``b``, finds, if
        the real TLB holds their pages (a hit is what the guest's walk would find, its
        accessed bit already set: ``GuestMemory.use_tlb``); else None: the caller takes
        the long way, which walks (and fills the TLB)."""
        gm = self.gm
        mmu = gm.mmu
        if mmu is None or gm.tlb_stale or gm.p2m is not None or a >= MLIN or b >= MLIN or \
                a & 0xFFF > 0xFF8 or b & 0xFFF > 0xFF8 or \
                mmu.state.cr3 & 0xFFFFF000 != gm.shadow.root.pd:
            return None
        tr = mmu.tr_s
        da, db = tr.get(a & 0xFFFFF000), tr.get(b & 0xFFFFF000)
        if da is None or db is None:
            return None
        a += da
        b += db
        top = gm.ram_size - 8
        if a > top or b > top:
            return None
        ram = self.mem.ram
        return _Q(ram, a)[0], _Q(ram, b)[0]

    def _deliver_known(self, f: Frame, vector: int, err: int | None, soft: bool, ret: int) -> bool:
        """Deliver from ring 3 through a gate, a handler's code descriptor and a TSS stack
        segment whose bytes are those an earlier delivery checked (``_KNOWN``): the
        processor reads all three at every delivery (a kernel may rewrite its IDT, GDT or
        TSS between two traps, from user mode), and so do these reads, but through the
        real TLB in one step each; what the checks of ``check_gate``,
        ``check_handler_cs`` and ``check_tss_stack`` concluded from the same bytes is
        reused.  False (nothing done) where anything differs, a read would need a walk,
        or a check could fail: the long way then reads, checks and raises."""
        got = self.known_tables(vector)
        if got is None:
            return False
        gate, sel, esp0, ss0 = got
        got = self._gdt_pair(sel, ss0)
        if got is None:
            return False
        cd, sd = got
        v = self.vcpu
        key = (gate, vector, soft, cd, ss0, sd, self.gdt.tracking)
        known = _KNOWN.get(key)
        if known is None:
            known = self._know(key)
        if not known:
            return False
        offset, interrupt_gate, size, seg = known
        if not seg.attr & ATTR_DB:
            return False                # (a 16-bit stack: SP only, the long way)
        tail = [] if err is None else [err]
        vals = [f.ss, self.cpu.state.regs[4], v.eflags_view(f.eflags), f.cs, ret] + tail
        n = size * len(vals)
        new = (esp0 - n) & 0xFFFFFFFF
        check_access(seg, new, n, True, SS)
        self.gm.push_frame((seg.base + new) & 0xFFFFFFFF, stack_image(vals, size),
                           (self.gdt.frames, self.ldt.frames), size)
        self._entered(f, sel, offset, interrupt_gate, new, seg.selector, ss0 & ~3)
        return True

    def _gdt_pair(self, a: int, b: int) -> tuple[int, int] | None:
        """The bytes of the descriptors of selectors ``a`` and ``b`` where both are GDT
        selectors (an LDT's entries have bookkeeping of their own), not null, inside the
        guest's GDT and outside the monitor's slots, and ``known_descriptors`` reads
        them in one step; None otherwise."""
        limit = self.vcpu.gdt_limit
        if a & 4 or b & 4 or not a & 0xFFFC or not b & 0xFFFC or (a | 7) > limit \
                or (b | 7) > limit or a >> 3 >= FIRST_RESERVED or b >> 3 >= FIRST_RESERVED:
            return None
        return self.known_descriptors(a, b)

    def known_return(self, cs: int, ss: int) -> int | None:
        """For ``Monitor.return_to_user``: the limit of the guest's CS when the guest's
        GDT descriptors of ``cs`` and ``ss`` hold the bytes that passed its checks before
        (``check_return_cs`` at this CPL, ``check_return_ss`` at RPL 3) with nothing left
        to set accessed; the processor reads both at every return, and so does this,
        through the real TLB or the GDT frames as ``_deliver_known`` does.  None (nothing
        done) where anything differs: the long way then reads, checks and raises."""
        got = self._gdt_pair(cs, ss)
        if got is None:
            return None
        v = self.vcpu
        key = (cs, ss, got[0], got[1], v.cpl, self.gdt.tracking)
        known = _RETURNS.get(key)
        if known is None:
            cd, sd = Descriptor(got[0], 0), Descriptor(got[1], 0)
            try:
                check_return_cs(cd, cs, v.cpl)
                check_return_ss(sd, ss, 3)
                known = cd.limit if not self.gdt.tracking or got[0] & got[1] & ACCESSED else False
            except CpuFault:
                known = False
            if len(_RETURNS) > 1024:          # a guest writing random tables cannot grow it
                _RETURNS.clear()
            _RETURNS[key] = known
        return None if known is False else known

    def known_tables(self, vector: int) -> tuple | None:
        """For ``_deliver_known``: (the gate's bytes, its selector, ESP0, SS0) as a supervisor
        read finds them in the IDT and the TSS, when the real TLB holds both pages; else
        None."""
        v = self.vcpu
        if vector * 8 + 7 > v.idt_limit or v.tr_limit < 9:
            return None
        # (the TSS: ESP0, SS0 and the two bytes after)
        got = self._peek8((v.idt_base + vector * 8) & 0xFFFFFFFF, (v.tr_base + 4) & 0xFFFFFFFF)
        if got is None:
            return None
        gate, stack = got
        return gate, (gate >> 16) & 0xFFFF, stack & 0xFFFFFFFF, (stack >> 32) & 0xFFFF

    def known_descriptors(self, a: int, b: int) -> tuple[int, int] | None:
        """For ``_deliver_known``: the bytes of GDT selectors ``a`` and ``b`` (inside the
        table), or None where only the long way can read them."""
        base = self.vcpu.gdt_base
        return self._peek8((base + (a & ~7)) & 0xFFFFFFFF, (base + (b & ~7)) & 0xFFFFFFFF)

    def _know(self, key: tuple) -> tuple | bool:
        """Check a gate, its handler's code descriptor and the TSS's stack segment as the
        long way does (``guest_gate``, ``enter_guest_handler``) for a delivery from ring 3
        to ring 0: what the checks leave to each delivery, or False (kept too) if any
        check fails, a descriptor's accessed bit is still to be set, or the gate is a task
        gate: those take the long way every time."""
        gate, vector, soft, cd, ss0, sd, tracking = key
        v = self.vcpu
        try:
            sel, offset, interrupt_gate, size = self.guest_gate(vector, soft)
        except (CpuFault, GuestPageFault):
            return False
        if offset is None:              # a task gate
            _KNOWN[key] = False
            return False
        code = Descriptor(cd, v.gdt_base + (sel & ~7))
        stack = Descriptor(sd, v.gdt_base + (ss0 & ~7))
        known = (not tracking or cd & sd & ACCESSED) and \
            code.is_code and not code.conforming and code.dpl == 0 and offset <= code.limit
        if known:
            try:
                check_handler_cs(code, sel, 3, 0)
                check_tss_stack(stack, ss0, 0, 0)
            except CpuFault:
                known = False
        if len(_KNOWN) > 4096:          # a guest writing random tables cannot grow it
            _KNOWN.clear()
        _KNOWN[key] = known = known and (offset, interrupt_gate, size,
                                         stack.segment((ss0 & ~3) | 1))
        return known

    def soft_interrupt_length(self, f: Frame, vector: int) -> int:
        """The length of the INT n, INT3 or INTO at the frame's CS:EIP that raised
        #GP(``vector``, IDT) (its gate's DPL refused it): ``CD n``, ``CC`` and ``CE`` are
        read as they are (EIP is the instruction's first byte, so there is no prefix
        before them); anything else is decoded."""
        lin = (self.frame_code_base(f) + f.eip) & 0xFFFFFFFF
        gm = self.gm
        mmu = gm.mmu
        if mmu is not None and f.user and lin < MLIN and lin & 0xFFF != 0xFFF and \
                not gm.tlb_stale and gm.p2m is None and \
                mmu.state.cr3 & 0xFFFFF000 == gm.shadow.root.pd:
            # (``GuestMemory.read``'s user read where the real TLB holds the page: the
            # two bytes in one step)
            d = mmu.tr_u.get(lin & 0xFFFFF000)
            if d is not None and lin + d + 2 <= gm.ram_size:
                ram = self.mem.ram
                p = lin + d
                if ram[p] == 0xCD and ram[p + 1] == vector:
                    return 2
        try:
            b = gm.read(lin, 1 if lin & 0xFFF == 0xFFF else 2, f.user)
        except GuestPageFault:
            b = b""
        if len(b) == 2 and b[0] == 0xCD and b[1] == vector:
            return 2
        if b[:1] == b"\xCC" and vector == 3 or b[:1] == b"\xCE" and vector == 4:
            return 1
        return self.fetch(f).len

    def enter_guest_handler(self, f: Frame, sel: int, offset: int, interrupt_gate: bool,
                            err: int | None, ret: int, ext: int, size: int = 4) -> None:
        """Push the frame the hardware would (switching to the guest kernel's stack from
        user mode) and continue at ``sel:offset`` in the guest kernel; ``size``: the
        bytes of each value pushed (2 through a 16-bit gate, as ``hw.transfers.deliver``)."""
        v = self.vcpu
        if not sel & 0xFFFC:
            raise CpuFault(GP, ext)
        cd = self.guest_desc(sel, GP, ext)
        if not cd.is_code:
            raise CpuFault(GP, (sel & 0xFFFC) | ext)
        check_handler_cs(cd, sel, v.cpl, ext)
        vm86 = f.vm86
        if vm86 and (cd.conforming or cd.dpl != 0):
            # out of virtual-8086 mode only to a ring-0, non-conforming handler (SDM Vol. 2
            # INT n: INTER-PRIVILEGE-LEVEL-INTERRUPT with VM = 1)
            raise CpuFault(GP, (sel & 0xFFFC) | ext)
        if offset > cd.limit:
            raise CpuFault(GP, ext)
        new_cpl = v.cpl if cd.conforming else cd.dpl
        if new_cpl == 3 and v.cpl == 3 and not vm86:
            self._user_handler(f, cd, sel, offset, interrupt_gate, err, ret, size)
            return
        if new_cpl != 0 and not self.rings12:
            raise MonitorStop(f"{self.name}: a guest handler at {sel:#06x}:{offset:#010x} runs "
                              f"at ring {new_cpl} (only ring-0 handlers are virtualized)")
        geflags = v.eflags_view(f.eflags)
        tail = [] if err is None else [err]
        if new_cpl < v.cpl:
            # to an inner ring: its stack in the guest's TSS (rings 1 and 2: ``rings12``)
            ss0, esp0 = self.kernel_stack(ext, new_cpl) if new_cpl else self.kernel_stack(ext)
            ssd = self.guest_desc(ss0, TS, ext)
            check_tss_stack(ssd, ss0, new_cpl, ext)
            vals = [f.ss if v.cpl == 3 else v.ss, self.cpu.state.regs[4], geflags,
                    f.cs if v.cpl == 3 else self.kernel_cs_view(f), ret] + tail
            if vm86:
                # GS, FS, DS and ES above the usual frame (§20.3.1.1, Figure 20-2)
                vals = frame_segments(self.cpu.state) + vals
            ss_real, esp, ss_guest = (ss0 & ~3) | 1, esp0, ss0 & ~3 | new_cpl
        else:
            try:                      # (the cached SS: its descriptor as the guest has it)
                ssd = self.guest_desc(v.ss, GP, 0) if v.ss & 0xFFFC else None
            except (CpuFault, GuestPageFault):
                ssd = None
            vals = [geflags, self.kernel_cs_view(f), ret] + tail
            ss_real, esp, ss_guest = f.ss, self.cpu.state.regs[4], v.ss
        # the pushes: the stack segment's limit, then the guest's paging; through SP
        # alone on a 16-bit stack (B=0), the upper half of ESP kept (SDM Vol. 3 §6.12.1)
        m = 0xFFFFFFFF
        if ssd is not None:
            seg = ssd.segment(ss_real)
            if not seg.attr & ATTR_DB:
                m = 0xFFFF
            new = (esp - size * len(vals)) & m
            check_access(seg, new, size * len(vals), True, SS)
            base = seg.base
        else:
            new = (esp - size * len(vals)) & m
            base = self.real_descriptor_base(ss_real)
        self.gm.push_frame((base + new) & 0xFFFFFFFF, stack_image(vals, size),
                           (self.gdt.frames, self.ldt.frames), size)
        new |= esp & ~m & 0xFFFFFFFF
        # committed: the guest is in its handler
        self.gdt.set_accessed(cd)
        if new_cpl < v.cpl:
            self.gdt.set_accessed(ssd)
        if vm86:                       # ... and then null in the handler
            for i in (0, 3, 4, 5):
                self.cpu.state.segs[i] = null_segment(0)
            self.cpu.mode_changed()
        if new_cpl:
            self._entered_ring(f, sel, offset, interrupt_gate, new, ss_guest, new_cpl)
            return
        self._entered(f, sel, offset, interrupt_gate, new, ss_real, ss_guest)

    def _entered_ring(self, f: Frame, sel: int, offset: int, interrupt_gate: bool, esp: int,
                      ss: int, cpl: int) -> None:
        """``_entered`` for a handler at ring 1 or 2 (``rings12``)."""
        self.stats["reflected"] += 1
        self.delivered = True
        self.cpu.state.regs[4] = esp
        self.enter_ring(f, sel, offset, cpl, ss)
        f.eflags = self.real_eflags(f.eflags) & ~(TF | NT | RF | VM)
        if interrupt_gate:
            self.vcpu.vif = False

    def _user_handler(self, f: Frame, cd: Descriptor, sel: int, offset: int,
                      interrupt_gate: bool, err: int | None, ret: int, size: int) -> None:
        """A delivery from user code to a handler at ring 3 (a DPL-3 or conforming code
        segment): no privilege change, so EFLAGS, CS and EIP go on the user's own stack
        and the handler runs as user code does, directly (SDM Vol. 2 INT n:
        INTRA-PRIVILEGE-LEVEL-INTERRUPT)."""
        v = self.vcpu
        vals = [v.eflags_view(f.eflags), f.cs, ret] + ([] if err is None else [err])
        seg = self.guest_desc(f.ss, SS, 0).segment(f.ss)     # the user's SS, as it has it
        esp = self.cpu.state.regs[4]
        m = 0xFFFFFFFF if seg.attr & ATTR_DB else 0xFFFF     # (a 16-bit stack: SP)
        new = (esp - size * len(vals)) & m
        check_access(seg, new, size * len(vals), True, SS)
        self.gm.push_frame((self.real_descriptor_base(f.ss) + new) & 0xFFFFFFFF,
                           stack_image(vals, size), (self.gdt.frames, self.ldt.frames), size)
        new |= esp & ~m & 0xFFFFFFFF
        self.gdt.set_accessed(cd)
        self.stats["reflected"] += 1
        self.delivered = True
        self.cpu.state.regs[4] = new
        f.cs, f.eip = (sel & ~3) | 3, offset
        self.reloaded(f.cs)
        f.eflags = self.real_eflags(f.eflags) & ~(TF | NT | RF | VM)
        if interrupt_gate:
            v.vif = False

    def _entered(self, f: Frame, sel: int, offset: int, interrupt_gate: bool, esp: int,
                 ss_real: int, ss_guest: int) -> None:
        """The frame is pushed: the guest is in its handler at ``sel:offset`` (the real
        CS, SS and EIP for it in ``f``), on the stack ``ss_real:esp``, at CPL 0."""
        v = self.vcpu
        if self.ring_units:           # (bt: the units made for rings 1 and 2 go)
            self.code_ring(0)
        self.stats["reflected"] += 1
        self.delivered = True
        self.cpu.state.regs[4] = esp
        f.ss = ss_real
        f.cs = self.kernel_cs(sel)
        f.eip = self.kernel_entry(offset)
        self.reloaded(f.cs, f.ss)
        f.eflags = self.real_eflags(f.eflags) & ~(TF | NT | RF | VM)
        if interrupt_gate:
            v.vif = False
        v.cpl = 0
        v.cs, v.ss = sel & ~3, ss_guest

    def kernel_stack(self, ext: int, ring: int = 0) -> tuple[int, int]:
        """(SS, ESP) for entering the guest kernel from user mode: its TSS's ring-0 stack
        (``ring``: 1 or 2, that ring's), #TS if the TSS is too short or the selector
        null, as the hardware checks."""
        v = self.vcpu
        if v.tr_limit < 9 + 8 * ring:
            raise CpuFault(TS, (v.tr & 0xFFFC) | ext)
        # ESP0 and SS0 in one read (a fault in it is at the address either read
        # would have reported: the first byte of the page that refuses it)
        stack = self.gm.read_u(v.tr_base + 4 + 8 * ring, 6)
        esp0, ss0 = stack & 0xFFFFFFFF, stack >> 32
        if not ss0 & 0xFFFC:
            raise CpuFault(TS, ext)
        return ss0, esp0

    # -- virtual interrupts ------------------------------------------------------------------
    def interrupt_waiting(self) -> bool:
        """The guest's (virtual) interrupt controller asserts its output."""
        return self.platform.intr

    def deliver_interrupts(self, f: Frame) -> None:
        """Take the interrupts the guest's IF and PIC allow, as the processor takes INTR
        between instructions (a trap gate leaves IF set: the next one nests at once)."""
        v = self.vcpu
        vapic = self.platform.vapic
        if vapic is not None and vapic.nmi and not v.nmi_blocked:
            # an NMI, whatever IF says; the next one waits for the handler's IRET (SDM
            # Vol. 3 §6.7.1) -- where the monitor sees that IRET (``nmi_blocking``)
            vapic.nmi = False
            v.nmi_blocked = self.nmi_blocking
            self.stats["virtual NMIs"] += 1
            self.deliver(f, 2, None, False, self.guest_eip(f))
        for _ in range(16):
            if not (v.vif and self.platform.intr):
                return
            _, vector = self.platform.acknowledge()
            if vector is None:            # (its virtual APIC's priority rose meanwhile)
                return
            self.stats["virtual_interrupts"] += 1
            self.deliver(f, vector, None, False, self.guest_eip(f))
