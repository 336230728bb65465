"""Binary translation with direct execution (VMware's answer, the chapter's 2.2).

Guest kernel code (virtual CPL 0) never runs as itself: it runs as
translations in the translation cache, at ring 1.  A translation unit covers
up to ``MAX_UNIT`` guest instructions, or fewer up to a control transfer:

* IDENT instructions (almost all of them) are copied unchanged;
* privileged and sensitive instructions become callouts (``int CALLOUT``) into
  the monitor, which emulates them on the virtual CPU -- so PUSHF shows the
  virtual IF, POPF and IRET restore it, SGDT shows the guest's GDT, and
  ``mov ax, cs`` shows ring 0;
* control flow is rewritten: a direct jump or branch leaves through a stub
  that asks for the target's translation and is then patched into a direct
  jump (chaining); ``call`` pushes the *guest* return address, so nothing the
  guest can see reveals the translation; returns and indirect jumps look the
  target up through a callout.

Guest user code (CPL 3) runs directly on the hardware at ring 3: it cannot tell
(except by the sensitive instructions Robin & Irvine list, which it executes
for real: the Red Pill's SIDT shows the monitor's IDT).

Translated guest code frames are write-protected in the shadow page tables; a
write to one invalidates its translations (a store into the running unit, to
code after it, runs alone and the rest is translated again); a unit whose
linear pages map other frames after INVLPG or a CR3 load goes too.  While the
guest single-steps its kernel, the kernel runs one-instruction units; the
guest's instruction breakpoints are checks at the start of units.  The
translator is ``bttranslate.py``, the callouts only this monitor has
``btemulate.py``.
"""

from __future__ import annotations

from collections import Counter

import iced_x86 as ix

from ringvisor.hw.segments import Descriptor
from ringvisor.hw.state import CR4_PAE, CR4_PGE, CR4_SMEP, RF, TF

from . import descriptors as D
from . import emulate as E
from . import layout as L
from .btemulate import BT_EMULATORS, is_plain_store
from .bttranslate import CALLOUT, Translator, writes_memory
from .btreturn import quick_return
from .debug import EXEC, breakpoints
from .descriptors import compress, guest_descriptor_fields
from .emulate import NEXT, Context, GuestFault
from .frame import Frame
from .guestmem import GuestBadFrame, GuestPageFault
from .monitor import Monitor, MonitorStop
from .tcache import TranslationCache, Unit
from .vcpu import CR0_PG, CR4_PSE

M = ix.Mnemonic
R = ix.Register
ADAPT_AFTER = 2        # page-table write traps at one guest EIP before it becomes a callout
ADAPT_CHECK = 32       # ... and store callouts after which it must have hit tables half the time

class BinaryTranslation(Translator, Monitor):
    name = "bt"
    STATE = Monitor.STATE + ("tc", "table_write_traps", "adaptive", "adapt_after", "code_base",
                             "ring_units", "rstack")
    rings12 = True              # guest code at rings 1 and 2 runs translated (``code_ring``)
    # a host debugger's breakpoints are the debugger's, not the VM's: never saved
    TRANSIENT = Monitor.TRANSIENT + ("debug_breakpoints", "debug_tc", "checked_breaks", "entered")
    entered: tuple[int, int] | None = None  # the last kernel_entry: (real EIP, guest EIP)

    def __init__(self, machine, guest_ram: int, tc_size: int = L.TC_SIZE, *,
                 tc_phys: int | None = None, **region) -> None:
        """``tc_phys``, ``region`` (``base``, ``shadow_pool``: ``Monitor``): for a hypervisor
        running many guests, where this guest's translation cache lies in machine memory
        (mapped at the region's ``TC`` while the guest runs) and the shared region."""
        super().__init__(machine, guest_ram, **region)
        if not 0x1000 <= tc_size <= L.TC_SIZE:
            raise ValueError(f"translation cache size must be between 4 KiB and "
                             f"{L.TC_SIZE >> 10} KiB, not {tc_size}")
        self.tc = TranslationCache(self.mem, self.base, tc_size, phys=tc_phys)
        self.table_write_traps: Counter[int] = Counter()    # guest EIP -> trapped table stores
        self.adaptive: dict[int, list[int]] = {}             # store callouts: guest EIP -> [stores, to tables]
        self.adapt_after: dict[int, int] = {}                # a site's threshold (doubles when it goes back)
        self.debug_breakpoints: set[int] = set()             # guest EIPs a debugger stops at ...
        self.debug_tc: set[int] = set()                      # ... and the units that start there
        self.checked_breaks: frozenset[int] = frozenset()    # the guest's, as units were split
        self.code_base = 0            # the base of the guest kernel's CS: guest EIP + it = linear
        # translated x87 code records the guest's instruction as its last (FSTENV & co.)
        self.cpu.connect_fpu_origin(self.fpu_origin)

    # -- how guest kernel code runs ---------------------------------------------------
    def kernel_entry(self, eip: int) -> int:
        """Where translated code resumes guest ``eip``.

        An interrupted kernel resumes wherever the interrupt hit it, mostly in
        the middle of a translation unit: it continues there, at the
        instruction's place in the unit, rather than getting a unit of its own
        (every tick would otherwise translate code anew).
        """
        addr = self._unit_entry(eip)
        # the guest EIP of this entry, until the guest resumes: the address of a JMP
        # translated as a chain stub stands for the JMP's target (which a fault or an
        # interrupt there may well report) -- but an emulated RET, IRET or far transfer
        # to a JMP has not run the JMP yet: a #DB it owes, or the guest's single step,
        # must stop at the JMP
        self.entered = (addr, eip)     # (until the guest resumes: before_resume)
        return addr

    quick_kind = 1           # (``softint``)

    def quick_code(self, sel: int, cd: int) -> tuple[int, int | None] | None:
        # (``kernel_cs`` with nothing else to do: 32-bit code, at the translations' base)
        d = Descriptor(cd, 0)
        return (L.SEL_TCODE, D.base_of(cd)) if d.segment(sel).big else None

    def quick_entry(self, eip: int) -> tuple[int, tuple] | None:
        """For ``softint``: (the address ``kernel_entry`` resumes ``eip`` at, the counts
        its look-up makes) where the unit exists and still maps the frame it was made
        from, as the real TLB holds it (``btreturn``'s look-up); None otherwise."""
        glin = (eip + self.code_base) & 0xFFFFFFFF
        frame = self.gm.cached(glin)
        if frame is None:
            return None
        frame >>= 12
        tc = self.tc
        if tc.cs_units:                # (``before_resume`` has work: the long way)
            return None
        hit = tc.entries.get(eip)
        if hit is not None and eip not in tc.units:
            u, addr = hit
            if not (u.live and u.pages.get(glin >> 12) == frame):
                return None
            return addr, ("mid-unit entries",)
        u = tc.units.get(eip)
        if u is None or u.phys >> 12 != frame:
            return None
        return u.start, ("lookups", "hits")

    def _unit_entry(self, eip: int) -> int:
        hit = self.tc.entries.get(eip)
        if hit is not None and eip not in self.tc.units:
            u, addr = hit
            lin = self.lin(eip)
            if u.live and u.pages.get(lin >> 12) == self.frame_of(lin):
                self.tc.stats["mid-unit entries"] += 1
                return addr
        try:
            return self.translation(eip).start
        except GuestPageFault:
            return self.fault_stub(eip)

    def kernel_cs(self, sel: int) -> int:
        """Translated code runs in the monitor's flat ring-1 segment, whatever the guest's
        kernel CS: its base (cached at the load, as the processor caches it) is added
        to every guest EIP the translator fetches at; a kernel CS with another base
        (a far transfer to it) makes the translations of the old one stale."""
        try:
            raw = self.guest_descriptor(sel)
        except (GuestPageFault, GuestBadFrame):
            raw = None
        base = D.base_of(raw) if raw else 0
        if raw and not Descriptor(raw, 0).segment(sel).big:
            # 16-bit code: the translator's is 32-bit; the monitor's interpreter runs it
            # (``realmode``) until a far transfer loads a 32-bit CS again
            self.real.engaged = True
        if base != self.code_base:
            self.code_base = base
            self.drop_units(lambda u: True)
            self.checked_breaks = frozenset(self.guest_breaks())
        return L.SEL_TCODE

    def code_ring(self, cpl: int) -> None:
        """Guest code at virtual CPL ``cpl`` runs next.  Code at rings 1 and 2 runs
        translated as ring-0 code does, at the real ring 1, where the processor's checks of
        a segment load are not the guest's (a DPL-0 or DPL-1 descriptor is DPL 1 there,
        which ring 2 may not load, nor ring 1 a DPL-0 one): its units make every load of
        DS, ES, FS and GS a callout, checked at the virtual CPL (``load_sreg``).  The
        units of one kind are dropped when code of the other runs (units chain into
        each other, and code may be shared between the rings)."""
        ring = cpl != 0
        if ring != self.ring_units:
            self.ring_units = ring
            self.drop_units(lambda u: True)

    def direct_cs(self, cs) -> bool:
        return cs.big

    def lin(self, eip: int) -> int:
        """The linear address of guest kernel code at ``eip``."""
        return (eip + self.code_base) & 0xFFFFFFFF

    def set_state(self, state: dict) -> None:
        state = state if "code_base" in state else dict(state, code_base=0)
        super().set_state({"ring_units": False, "rstack": 0, **state})

    def code_at(self, f: Frame) -> ix.Instruction:
        if not self.in_tc(f):
            return super().code_at(f)
        data = self.mem.read(self.tc.phys + (f.eip - self.tc.start), 15)
        return ix.Decoder(32, data, ip=f.eip).decode()

    def enters_monitor(self, f: Frame) -> bool:
        return self.in_tc(f) and (f.eip + 2) in self.tc.sites

    def guest_eip(self, f: Frame) -> int:
        if self.in_tc(f):
            if self.entered and self.entered[0] == f.eip:
                return self.entered[1]
            g = self.tc.guest_eip(f.eip)
            if g is None:
                raise MonitorStop(f"bt: translated code at {f.eip:#010x} has no guest address")
            return g
        return f.eip

    def translation(self, eip: int) -> Unit:
        tc = self.tc
        tc.stats["lookups"] += 1
        u = tc.units.get(eip)
        if u is not None:
            lin = self.lin(eip)
            frame = self.frame_of(lin, fetch=True)
            if frame == u.phys >> 12:
                tc.stats["hits"] += 1
                return u
            tc.remapped(lin >> 12, frame)
        return self.translate(eip)

    # -- the guest's mappings -------------------------------------------------------------
    def invlpg(self, lin: int) -> None:
        shift = self.gm.page_shift(lin)        # (before the shadow forgets: the guest's PDE)
        super().invlpg(lin)
        if shift > 12:
            self.follow_mappings([p for p in self.tc.by_page if p >> (shift - 12) == lin >> shift])
        else:
            self.follow_mappings([lin >> 12])

    def set_cr(self, n: int, value: int) -> None:
        v = self.vcpu
        # a change of PGE flushes every TLB entry, the global ones too (SDM Vol. 3
        # §4.10.4.1): a global page remapped meanwhile runs its new frame's code
        rules = lambda: (v.cr0 & CR0_PG, v.cr4 & (CR4_PSE | CR4_PAE | CR4_PGE), tuple(v.pdpte))
        paging, smep = rules(), v.cr4 & CR4_SMEP
        super().set_cr(n, value)
        if n == 3 or paging != rules():
            self.follow_mappings(list(self.tc.by_page))
        if smep != v.cr4 & CR4_SMEP:
            # which kernel fetches fault changed: every unit is fetched again
            self.drop_units(lambda u: True)

    def task_cr3(self, value: int) -> bool:
        ok = super().task_cr3(value)
        if not ok:                            # (set_cr followed them when it loaded CR3)
            self.follow_mappings(list(self.tc.by_page))
        return ok

    def drop_units(self, doomed) -> None:
        """Invalidate the current units ``doomed(unit)`` picks (a callout running in
        one goes on from a fresh translation: ``callout``)."""
        tc = self.tc
        for u in list(tc.units.values()) + list(tc.singles.values()):
            if not u.gone and doomed(u):
                tc.invalidate_unit(u)

    def follow_mappings(self, pages: list[int]) -> None:
        """The guest flushed its TLB for ``pages`` (INVLPG, a CR3 load): translations
        made from frames those pages no longer map go, and the jumps chained into
        them become stubs again (SDM Vol. 3 §4.10.4: fetches use the new mapping).  Under
        the guest's SMEP a page that is now a user page is as good as unmapped: the
        kernel's next fetch from it must fault (``fetch_phys``), so its units go too."""
        v = self.vcpu
        smep = v.paging and v.cr4 & CR4_SMEP
        for page in pages:
            if page in self.tc.by_page:
                frame = self.frame_of(page << 12)
                if smep and frame is not None and \
                        self.gm.translate(page << 12, False, False, set_bits=False).user:
                    frame = None
                self.tc.remapped(page, frame)

    # -- reads through CS -----------------------------------------------------------------
    def cs_reads_through_ss(self) -> bool:
        """Can SS stand in for the guest kernel's CS in a data read?  It can when both
        (as the real GDT holds them) have one base and one limit, CS is readable and
        SS an expand-up data segment: then the read is made through SS, at full
        speed, and faults as it would through CS (``dispatch``)."""
        v = self.vcpu
        cs, ss = self.guest_descriptor(v.cs), self.guest_descriptor(v.ss)
        if cs is None or ss is None:
            return False
        cbase, climit, cacc, _ = guest_descriptor_fields(compress(cs))
        sbase, slimit, sacc, _ = guest_descriptor_fields(compress(ss))
        return (cacc & 0x8A == 0x8A and sacc & 0x8E == 0x82 and
                (cbase, climit) == (sbase, slimit))

    # a near ``ret``'s callout done in the hand-off where an entry has nothing else to do
    # (``btreturn``); False: every callout a whole entry
    quick_returns = True

    def _handoff(self, cpu, vector: int, err: int | None, soft: bool):
        h = super()._handoff(cpu, vector, err, soft)
        if h is not None and soft and vector == L.CALLOUT and self.quick_returns:
            return self._handed_callout
        return h

    def _handed_callout(self, cpu) -> None:
        if not quick_return(self, cpu):
            self._handed(cpu)

    def before_resume(self, f: Frame) -> None:
        tc = self.tc
        if tc.cs_units and self.in_tc(f) and not self.cs_reads_through_ss():
            # the guest's CS or SS changed: those reads become callouts again
            for u in tc.cs_units:
                if not u.gone:
                    tc.invalidate_unit(u)
            tc.cs_units.clear()
            here = tc.unit_at(f.eip)
            if here is not None and here.gone:
                f.eip = self.kernel_entry(self.guest_eip(f))
        if self.in_tc(f) and f.eflags & TF:
            # the guest single-steps its kernel: the hardware's trap after each real
            # instruction is the guest's only if each guest instruction is one real
            # instruction followed by stubs (a jump folded into a chained one would
            # go unseen): the kernel runs one-instruction translations meanwhile
            here = tc.unit_at(f.eip)
            if here is None or not (here.one and self.tc.guest_eip(f.eip) == here.guest):
                g = self.guest_eip(f)
                try:
                    f.eip = self.single(g).start
                except GuestPageFault:
                    f.eip = self.fault_stub(g)
        if self.in_tc(f) and f.eflags & RF and \
                self.tc.sites.get(f.eip + len(CALLOUT), ("",))[0] == "break":
            # RF spares the instruction it resumes at its breakpoint (SDM Vol. 3
            # §17.3.1.1), as the IRET that set it resumes past the check
            f.eip += len(CALLOUT)
        self.entered = None

    def privileged_fault(self, f: Frame, err: int) -> None:
        if self.in_tc(f) and err == 0:
            ins = self.code_at(f)
            if ins.mnemonic in (M.RDTSC, M.RDTSCP, M.CPUID):
                # translated as itself, it traps only under the guest's CR4.TSD
                # (``guestcr.GUEST_CR4``): the kernel may read the counter; CPUID only
                # where the monitor made it fault (several virtual processors: ``vcpus``)
                if E.emulate(self, f, ins, self.guest_eip(f)) == NEXT:
                    f.eip = (f.eip + ins.len) & 0xFFFFFFFF
                return
        if self.in_tc(f) and err & 0xFFFC and not err & 3:
            ins = self.code_at(f)
            if ins.mnemonic == M.MOV and ins.op0_kind == ix.OpKind.REGISTER and \
                    ins.op0_register in (R.DS, R.ES, R.FS, R.GS):
                # a load copied into the translation, on an entry the monitor keeps
                # poisoned and could not fill (``gdt.load_fault``: the guest's descriptor
                # unreadable, its page not present): the guest's own load decides, as
                # trapemu's emulation does -- a #PF on the descriptor's read, CR2 where it
                # faulted, at the MOV (osdev3-dtab: was #GP(selector))
                if E.emulate(self, f, ins, self.guest_eip(f)) == NEXT:
                    f.eip = (f.eip + ins.len) & 0xFFFFFFFF
                return
        super().privileged_fault(f, err)

    def dispatch(self, vector: int, f: Frame) -> None:
        if vector == 12 and self.in_tc(f) and self._beyond_cs(f):
            # a read through CS made through SS, past the limit both share: the
            # fault is the code segment's, #GP(0) (SDM Vol. 3 §5.3)
            self.traps["#GP (guest)"] += 1
            self.deliver(f, 13, 0, False, self.guest_eip(f))
            return
        super().dispatch(vector, f)

    def _beyond_cs(self, f: Frame) -> bool:
        try:
            ins = self.fetch_guest(self.guest_eip(f))
        except GuestPageFault:
            return False
        if ins.memory_segment != R.CS:
            return False
        try:
            E.Context(self, f, ins, 0).linear(0, ix.MemorySizeExt.size(ins.memory_size))
        except GuestFault:
            return True
        return False

    # -- the guest view: guest addresses, not the translation cache's -----------------------
    def fpu_origin(self, cs: int, eip: int) -> tuple[int, int]:
        """The x87's last-instruction pointer for code at ``cs:eip``: translated kernel
        code stands for the guest's instruction, in the guest's code segment."""
        if cs == L.SEL_TCODE:
            return self.vcpu.cs, self.view_eip(eip, cs)
        return cs, eip

    def view_eip(self, eip: int, cs: int) -> int:
        if cs == L.SEL_TCODE:
            g = self.tc.guest_eip(eip)
            return eip if g is None else g
        return eip

    def debug_addresses(self, addresses: set[int]) -> set[int]:
        """A breakpoint at guest X stops user code at X and kernel code where its
        translation starts: units are split so that X always begins one (here for the
        units already made, in ``translate`` for those to come)."""
        self.debug_breakpoints = set(addresses)
        tc = self.tc
        for u in list(tc.units.values()):
            if u.live and any(g in addresses for g in u.guest_map[1:]):
                tc.invalidate_unit(u)
        st = self.cpu.state
        if st.segs[1].selector == L.SEL_TCODE:
            # stopped inside a unit just dropped: go on from a fresh translation
            u = tc.unit_at(st.eip)
            if u is not None and not u.live:
                try:
                    st.eip = self.kernel_entry(self.view_eip(st.eip, L.SEL_TCODE))
                except GuestPageFault:
                    pass
        self.debug_tc = {u.start for u in tc.units.values() if u.live and u.guest in addresses}
        return set(addresses) | self.debug_tc

    # -- the guest's instruction breakpoints ----------------------------------------------
    def guest_breaks(self) -> dict[int, int]:
        """The guest's enabled instruction breakpoints: guest EIP -> their DR6 B bits."""
        dr = self.vcpu.dr
        if not dr[7] & 0xFF:
            return {}
        out: dict[int, int] = {}
        for i, addr, rw, _ in breakpoints(dr):
            if rw == EXEC:
                g = (addr - self.code_base) & 0xFFFFFFFF      # (DR0-DR3 hold linear addresses)
                out[g] = out.get(g, 0) | 1 << i
        return out

    def debug_changed(self) -> None:
        """Kernel code runs translated, where the real debug registers cannot watch it:
        each guest instruction breakpoint begins a unit with a check (``translate``), so
        the units that hold a breakpoint address set or cleared since are dropped."""
        now = frozenset(self.guest_breaks())
        changed = now ^ self.checked_breaks
        self.checked_breaks = now
        if not changed:
            return
        self.drop_units(lambda u: changed.intersection(u.guest_map))

    def break_check(self, f: Frame, g: int) -> None:
        """Translated kernel code reached guest ``g``, where the guest has set an
        instruction breakpoint: #DB before the instruction (a fault, EIP = ``g``),
        unless RF spares it (``before_resume``) or DR7 no longer enables it."""
        bits = self.guest_breaks().get(g, 0)
        if bits:
            self.debug_exception(f, bits)

    # -- callouts ------------------------------------------------------------------------
    def callout(self, f: Frame, vector: int) -> None:
        site = self.tc.sites.get(f.eip) if self.in_tc(f) else None
        if site is None:
            # not from translated code: the guest executed INT n on one of these vectors
            self.soft_interrupt_after(f, vector, 2)
            return
        if site[0] == "break":
            self.break_check(f, site[1])
            return
        if site[0] == "chain":
            target = site[1]
            try:
                unit = self.translation(target)
            except GuestPageFault as e:
                # the jump landed on an unmapped page: the fetch there faults
                self.guest_page_fault(f, e.address, e.error_code, target)
                return
            s = f.eip - 2
            here = self.tc.unit_at(s)
            if here is not None and here.live:
                self.tc.chain(s, unit)
            f.eip = unit.start
            self.traps["chain"] += 1
            return
        ins, g = site[1], site[2]
        self.traps["callout"] += 1
        here = self.tc.unit_at(f.eip)
        if E.emulate(self, f, ins, g, (BT_EMULATORS, E.EMULATORS)) is None:
            self.cs_fallback(f, ins, g)
        if self.in_tc(f) and here is not None and here.gone and \
                here.start <= f.eip < here.end:
            # the instruction rewrote the code after it in this very unit (a store
            # the monitor made for it): the rest runs from the new bytes
            f.eip = self.kernel_entry(self.guest_eip(f))

    def cs_fallback(self, f: Frame, ins: ix.Instruction, g: int) -> None:
        """A CS-relative access no emulator performs and SS cannot stand in for:
        the faults the guest's code segment raises, or a stop."""
        try:
            E.Context(self, f, ins, g).linear(0, ix.MemorySizeExt.size(ins.memory_size),
                                              writes_memory(ins))
        except GuestFault as e:
            self.traps["#GP (guest)"] += 1
            self.deliver(f, e.vector, e.error_code, False, g)
            return
        raise MonitorStop(f"bt: {ins} at {g:#010x} reads through a code segment that the "
                          "stack segment cannot stand in for (not virtualized)")

    def protected_write(self, f: Frame, ppn: int) -> None:
        if ppn in self.shadow.pinned:
            self.traps["#PF (translated code written)"] += 1
            running = self.tc.unit_at(f.eip) if self.in_tc(f) else None
            self.tc.invalidate_frame(ppn)
            self.shadow.unprotect(ppn)
            if running is not None and self._rewrites_ahead(f, running, ppn):
                # the store rewrites code the running unit holds after it: it runs
                # on its own, with its frame open, and the code after it is
                # translated again from the new bytes (SDM Vol. 3 §11.6)
                self.traps["stores into the running unit"] += 1
                f.eip = self.translate(self.guest_eip(f), "store").start
        if self.shadow.is_table(ppn) and self.in_tc(f):
            self._adapt(f)
        super().protected_write(f, ppn)

    def _rewrites_ahead(self, f: Frame, unit: Unit, ppn: int) -> bool:
        """May the faulting store (at CR2) write code ``unit`` holds after it?"""
        g = self.guest_eip(f)
        lo = self.cpu.state.cr2 & 0xFFF
        try:
            ins = self.fetch_guest(g)
        except GuestPageFault:
            return True
        if ins.has_rep_prefix or ins.has_repne_prefix or ins.is_string_instruction:
            lo, hi = 0, 0x1000                       # a string store runs on through the page
        else:
            hi = lo + 16                             # the widest store (and a push) fits
        return unit.code_after(g, ppn, lo, hi)

    def _adapt(self, f: Frame) -> None:
        """Adaptive translation: a kernel store that keeps hitting page tables becomes a callout.

        A trapped store costs a page fault, and the monitor must then drop every
        shadow entry that came from the table (it cannot see the guest's next
        stores).  As a callout the store is performed by the monitor, which
        drops only the one entry it changed and keeps the table protected.
        """
        g = self.guest_eip(f)
        self.table_write_traps[g] += 1
        u = self.tc.unit_at(f.eip)
        if u is None or not u.live:
            return
        if g in self.adaptive:
            # another unit overlapping the instruction still has it as a plain copy
            self.tc.invalidate_unit(u)
            return
        if self.table_write_traps[g] < self.adapt_after.get(g, ADAPT_AFTER):
            return
        try:
            ins = self.fetch_guest(g)
        except GuestPageFault:
            return
        if not is_plain_store(ins):
            return
        self.adaptive[g] = [0, 0]
        self.tc.invalidate_unit(u)       # the next entry retranslates it (this one finishes)
        self.stats["adaptive retranslations"] += 1

    def store_callout(self, c: Context) -> None:
        """Perform an adaptive store; a site that mostly writes ordinary data goes back to IDENT."""
        size = ix.MemorySizeExt.size(c.ins.memory_size)
        lin = c.linear()
        c.write(size, c.op(1, size))
        counts = self.adaptive.get(c.eip)
        if counts is None:
            return
        counts[0] += 1
        try:
            ppn = self.gm.translate(lin, True, False, set_bits=False).phys >> 12
        except GuestPageFault:
            ppn = None
        if ppn is not None and self.shadow.is_table(ppn):
            counts[1] += 1
        if counts[0] >= ADAPT_CHECK:
            if 2 * counts[1] < counts[0]:
                # a general-purpose store (memset, say) that sometimes hits a table:
                # cheaper as a plain store that traps now and then
                del self.adaptive[c.eip]
                self.adapt_after[c.eip] = 2 * self.adapt_after.get(c.eip, ADAPT_AFTER)
                self.table_write_traps[c.eip] = 0
                u = self.tc.unit_at(c.f.eip)
                if u is not None and u.live:
                    self.tc.invalidate_unit(u)
                self.stats["adaptive reversions"] += 1
            else:
                counts[0] = counts[1] = 0

    def guest_written(self, phys: int, n: int) -> None:
        for ppn in range(phys >> 12, ((phys + n - 1) >> 12) + 1):
            if ppn in self.shadow.pinned:
                self.tc.invalidate_frame(ppn)
                self.shadow.unprotect(ppn)
        super().guest_written(phys, n)

    def get_state(self) -> dict:
        out = super().get_state()
        # where the VM stands in guest terms (the CPU may be inside a translation)
        st = self.cpu.state
        in_tc = st.segs[1].selector == L.SEL_TCODE
        g = self.tc.guest_eip(st.eip) if in_tc else None
        out["guest_eip"] = st.eip if not in_tc else (-1 if g is None else g)
        return out

    def report(self) -> dict:
        out = super().report()
        out["callouts"] = out.pop("emulated")
        out.update(self.tc.stats)
        s = self.tc.stats
        out["tc_hit_rate"] = round(s["hits"] / s["lookups"], 4) if s["lookups"] else 0.0
        return out
