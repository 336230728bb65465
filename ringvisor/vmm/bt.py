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
write to one invalidates its translations.
"""

from __future__ import annotations

from collections import Counter

import iced_x86 as ix

from ringvisor.hw.transfers import check_far_code
from ringvisor.hw.translate import GPR, registrar

from . import emulate as E
from . import layout as L
from .emulate import DONE, NEXT, Context, GuestFault
from .frame import Frame
from .guestmem import GuestPageFault
from .monitor import Monitor, MonitorStop
from .tcache import CHAIN_STUB, TranslationCache, Unit

M = ix.Mnemonic
FC = ix.FlowControl
OK = ix.OpKind
R = ix.Register
MAX_UNIT = 24
ADAPT_AFTER = 2        # page-table write traps at one guest EIP before it becomes a callout
ADAPT_CHECK = 32       # ... and store callouts after which it must have hit tables half the time
CALLOUT = b"\xCD" + bytes([L.CALLOUT])

# Sensitive but unprivileged (Robin & Irvine) plus privileged: always callouts.
SENSITIVE = {
    M.CLI, M.STI, M.HLT, M.IN, M.OUT, M.INSB, M.INSW, M.INSD, M.OUTSB, M.OUTSW, M.OUTSD,
    M.LGDT, M.LIDT, M.LLDT, M.LTR, M.SGDT, M.SIDT, M.SLDT, M.STR, M.SMSW, M.LMSW, M.CLTS,
    M.INVLPG, M.INVD, M.WBINVD, M.RDMSR, M.WRMSR, M.PUSHF, M.PUSHFD, M.POPF, M.POPFD,
    M.LAR, M.LSL, M.VERR, M.VERW, M.IRET, M.IRETD, M.RETF, M.LSS, M.INT, M.INT3, M.INTO,
    M.INT1, M.SYSENTER, M.SYSEXIT, M.UD0, M.LFS, M.LGS, M.LDS, M.LES,
}
BRANCH_REL8 = {M.LOOP, M.LOOPE, M.LOOPNE, M.JECXZ, M.JCXZ}


def _classify(ins: ix.Instruction) -> str:
    m = ins.mnemonic
    if m in SENSITIVE:
        return "callout"
    if ins.memory_segment == R.CS and ins.op_count and any(
            ins.op_kind(i) == OK.MEMORY for i in range(ins.op_count)):
        return "callout"        # a CS-relative access would see the translation cache
    for i in range(ins.op_count):
        if ins.op_kind(i) == OK.REGISTER and ins.op_register(i) in (R.CS, R.SS) or \
                ins.op_kind(i) == OK.REGISTER and R.CR0 <= ins.op_register(i) <= R.DR7:
            return "callout"
    if m == M.MOV and ins.op0_kind == OK.REGISTER and ins.op0_register == R.SS:
        return "callout"
    if m in (M.PUSH, M.POP) and ins.op0_kind == OK.REGISTER and ins.op0_register in (R.CS, R.SS):
        return "callout"
    fc = ins.flow_control
    if fc == FC.NEXT:
        return "ident"
    if fc == FC.UNCONDITIONAL_BRANCH and ins.op0_kind in (OK.NEAR_BRANCH32, OK.NEAR_BRANCH16):
        return "jmp"
    if fc == FC.CONDITIONAL_BRANCH:
        return "jcc"
    if fc == FC.CALL and ins.op0_kind in (OK.NEAR_BRANCH32, OK.NEAR_BRANCH16):
        return "call"
    return "callout"            # ret, indirect and far transfers, int, ...


class BinaryTranslation(Monitor):
    name = "bt"
    STATE = Monitor.STATE + ("tc", "table_write_traps", "adaptive", "adapt_after")
    # a host debugger's breakpoints are the debugger's, not the VM's: never saved
    TRANSIENT = Monitor.TRANSIENT + ("debug_breakpoints", "debug_tc")

    def __init__(self, machine, guest_ram: int, tc_size: int = L.TC_SIZE) -> None:
        super().__init__(machine, guest_ram)
        if not 0x1000 <= tc_size <= L.TC_SIZE:
            raise ValueError(f"translation cache size must be between 4 KiB and "
                             f"{L.TC_SIZE >> 10} KiB, not {tc_size}")
        self.tc = TranslationCache(self.mem, self.base, tc_size)
        self.table_write_traps: Counter[int] = Counter()    # guest EIP -> trapped table stores
        self.adaptive: dict[int, list[int]] = {}             # store callouts: guest EIP -> [stores, to tables]
        self.adapt_after: dict[int, int] = {}                # a site's threshold (doubles when it goes back)
        self.debug_breakpoints: set[int] = set()             # guest EIPs a debugger stops at ...
        self.debug_tc: set[int] = set()                      # ... and the units that start there

    # -- how guest kernel code runs ---------------------------------------------------
    def kernel_entry(self, eip: int) -> int:
        """Where translated code resumes guest ``eip``.

        An interrupted kernel resumes wherever the interrupt hit it, mostly in
        the middle of a translation unit: it continues there, at the
        instruction's place in the unit, rather than getting a unit of its own
        (every tick would otherwise translate code anew).
        """
        hit = self.tc.entries.get(eip)
        if hit is not None and eip not in self.tc.units:
            u, addr = hit
            if u.live and (eip ^ u.guest) >> 12 == 0:
                try:
                    phys = self.gm.translate(eip, False, False, set_bits=False).phys
                except GuestPageFault:
                    phys = None
                if phys == u.phys + (eip - u.guest):
                    self.tc.stats["mid-unit entries"] += 1
                    return addr
        return self.translation(eip).start

    def kernel_cs(self, sel: int) -> int:
        return L.SEL_TCODE

    def code_at(self, f: Frame) -> ix.Instruction:
        if f.cs != L.SEL_TCODE:
            return super().code_at(f)
        data = self.mem.read(self.tc.phys + (f.eip - self.tc.start), 15)
        return ix.Decoder(32, data, ip=f.eip).decode()

    def enters_monitor(self, f: Frame) -> bool:
        return f.cs == L.SEL_TCODE and (f.eip + 2) in self.tc.sites

    def kernel_cs_view(self, f: Frame) -> int:
        return self.vcpu.cs

    def guest_eip(self, f: Frame) -> int:
        if f.cs == L.SEL_TCODE:
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
            try:
                phys = self.gm.translate(eip, False, False, set_bits=False).phys
            except GuestPageFault:
                phys = None
            if phys == u.phys:
                tc.stats["hits"] += 1
                return u
            tc.invalidate_frame(u.phys >> 12)
        return self.translate(eip)

    # -- translating --------------------------------------------------------------------
    def _fetch(self, eip: int, frames: set[int]) -> tuple[ix.Instruction, bytes]:
        data = b""
        lin = eip
        while len(data) < 15:
            chunk = min(15 - len(data), 0x1000 - (lin & 0xFFF))
            try:
                phys = self.gm.phys(lin)
            except GuestPageFault:
                if not data:
                    raise
                break
            frames.add(phys >> 12)
            data += self.mem.read(phys, chunk)
            lin = (lin + chunk) & 0xFFFFFFFF
        ins = ix.Decoder(32, data, ip=eip).decode()
        return ins, data[:ins.len]

    def translate(self, eip: int) -> Unit:
        tc = self.tc
        if not tc.room(MAX_UNIT * 16 + 64):
            self.flush_translations()
        frames: set[int] = set()
        start = tc.top
        code = bytearray()
        tc_map: list[int] = []
        guest_map: list[int] = []
        sites: dict[int, tuple] = {}
        first_phys = self.gm.phys(eip)

        def here() -> int:
            return start + len(code)

        def mark(g: int) -> None:
            tc_map.append(here())
            guest_map.append(g)

        def stub(target: int) -> None:
            mark(target)
            u = tc.units.get(target)
            if u is not None and u.live:
                site = here()
                code.extend(b"\xE9" + ((u.start - (site + 5)) & 0xFFFFFFFF).to_bytes(4, "little"))
                u.incoming.append(site)
                sites[site + 2] = ("chain", target)     # for when it is un-chained
                tc.stats["chains"] += 1
            else:
                sites[here() + 2] = ("chain", target)
                code.extend(CHAIN_STUB)

        g = eip
        for n in range(MAX_UNIT):
            if n and g in self.debug_breakpoints:
                stub(g)                 # a debugger's breakpoint starts a unit of its own
                break
            try:
                ins, raw = self._fetch(g, frames)
            except GuestPageFault:
                if n == 0:
                    raise
                stub(g)
                break
            kind = _classify(ins) if not ins.is_invalid else "ident"
            if kind == "ident" and g in self.adaptive and _is_plain_store(ins):
                kind = "callout"
            if kind == "ident":
                mark(g)
                code.extend(raw)
            elif kind == "callout":
                mark(g)
                code.extend(CALLOUT)
                sites[here()] = ("callout", ins, g, raw)     # (raw: for a saved VM)
                if ins.flow_control != FC.NEXT or ins.mnemonic in (M.HLT, M.LSS):
                    # the emulation decides where the guest goes; the next
                    # instruction gets its own stub all the same (after a HLT
                    # or a callout that falls through)
                    stub(ins.next_ip32)
                    break
            elif kind == "jmp":
                stub(ins.near_branch32)
                break
            elif kind == "call":
                mark(g)
                code.extend(b"\x68" + ins.next_ip32.to_bytes(4, "little"))
                stub(ins.near_branch32)
                break
            elif kind == "jcc":
                mark(g)
                if ins.mnemonic in BRANCH_REL8:
                    if ins.code in (ix.Code.JCXZ_REL8_32, ix.Code.JCXZ_REL8_16,
                                                             ix.Code.LOOP_REL8_32_CX, ix.Code.LOOP_REL8_16_CX,
                                                             ix.Code.LOOPE_REL8_32_CX, ix.Code.LOOPE_REL8_16_CX,
                                                             ix.Code.LOOPNE_REL8_32_CX, ix.Code.LOOPNE_REL8_16_CX):
                        raise MonitorStop("bt: a CX-counted loop/jcxz in kernel code is not translated")
                    code.extend(raw[:-1] + b"\x05")         # taken: skip the fall-through stub
                else:
                    cc = ins.condition_code - 1            # iced: 1-based o, no, b, ...
                    code.extend(bytes([0x0F, 0x80 | cc]) + (5).to_bytes(4, "little"))
                stub(ins.next_ip32)
                stub(ins.near_branch32)
                break
            g = ins.next_ip32
        else:
            stub(g)
        unit = Unit(eip, first_phys, start, start + len(code), frames, tc_map, guest_map)
        tc.add(unit, bytes(code))
        for addr, g_ in zip(tc_map, guest_map):
            e = tc.entries.get(g_)
            if e is None or not e[0].live:
                tc.entries[g_] = (unit, addr)
        tc.sites.update(sites)
        for fr in frames:
            self.shadow.protect(fr)
        if eip in self.debug_breakpoints:
            self.debug_tc.add(unit.start)
            self.cpu.host.set_breakpoints(self.cpu.host.breakpoints | {unit.start})
            self.cpu.host_debug_changed()
        return unit

    def flush_translations(self) -> None:
        for fr in list(self.tc.by_frame):
            self.shadow.unprotect(fr)
        self.tc.flush()
        if self.debug_tc:                # the space is handed out again: forget those stops
            self.cpu.host.set_breakpoints(self.cpu.host.breakpoints - self.debug_tc)
            self.debug_tc.clear()
            self.cpu.host_debug_changed()

    # -- the guest view: guest addresses, not the translation cache's -----------------------
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

    # -- callouts ------------------------------------------------------------------------
    def callout(self, f: Frame, vector: int) -> None:
        site = self.tc.sites.get(f.eip) if f.cs == L.SEL_TCODE else None
        if site is None:
            # not from translated code: the guest executed INT n on one of these vectors
            self.soft_interrupt_after(f, vector, 2)
            return
        if site[0] == "chain":
            target = site[1]
            try:
                unit = self.translation(target)
            except GuestPageFault as e:
                # the jump landed on an unmapped page: the fetch there faults
                self.vcpu.cr2 = e.address
                self.traps["#PF (guest)"] += 1
                self.deliver(f, 14, e.error_code, False, target)
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
        if E.emulate(self, f, ins, g, (BT_EMULATORS, E.EMULATORS)) is None:
            # a sensitive instruction nobody emulates: what it does at ring 3, #GP
            self.deliver(f, 13, 0, False, g)

    def protected_write(self, f: Frame, ppn: int) -> None:
        if ppn in self.shadow.pinned:
            self.traps["#PF (translated code written)"] += 1
            self.tc.invalidate_frame(ppn)
            self.shadow.unprotect(ppn)
        if self.shadow.is_table(ppn) and f.cs == L.SEL_TCODE:
            self._adapt(f)
        super().protected_write(f, ppn)

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
            ins, _ = self._fetch(g, set())
        except GuestPageFault:
            return
        if not _is_plain_store(ins):
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


# -- the sensitive instructions only binary translation sees ---------------------------------
BT_EMULATORS: dict = {}
bt_emulates = registrar(BT_EMULATORS)


@bt_emulates(M.PUSHF, M.PUSHFD)
def b_pushf(c: Context) -> str:
    size = 2 if c.ins.mnemonic == M.PUSHF else 4
    c.push(c.v.eflags_view(c.f.eflags) & ~((1 << 16) | (1 << 17)), size)
    return NEXT


@bt_emulates(M.POPF, M.POPFD)
def b_popf(c: Context) -> str:
    size = 2 if c.ins.mnemonic == M.POPF else 4
    value = c.pop(size)
    c.cpu.state.regs[4] = (c.cpu.state.regs[4] + size) & 0xFFFFFFFF
    c.mon.set_guest_eflags(c.f, value, size)
    return NEXT


@bt_emulates(M.RET)
def b_ret(c: Context) -> str:
    imm = c.ins.immediate16 if c.ins.op_count else 0
    target = c.pop(4)
    c.cpu.state.regs[4] = (c.cpu.state.regs[4] + 4 + imm) & 0xFFFFFFFF
    c.f.eip = c.mon.kernel_entry(target)
    return DONE


@bt_emulates(M.JMP, M.CALL)
def b_jmp_call(c: Context) -> str:
    call = c.ins.mnemonic == M.CALL
    far = E.far_operand(c)
    if far is not None:
        return _far(c, *far, call=call)
    target = c.op(0, 4)
    if call:
        c.push(c.next_eip)
    c.f.eip = c.mon.kernel_entry(target)
    return DONE


def _far(c: Context, sel: int, off: int, call: bool) -> str:
    """A far JMP/CALL in kernel code, with the processor's checks (``hw.transfers``)."""
    if not sel & 0xFFFC:
        raise GuestFault(13, 0)
    d = c.mon.guest_desc(sel)
    if not d.s:
        raise MonitorStop(f"bt: far transfer to selector {sel:#x} (gates and tasks are not "
                          "virtualized)")
    if not d.is_code:
        raise GuestFault(13, sel & 0xFFFC)
    check_far_code(d, sel, c.v.cpl)
    if off > d.limit:
        raise GuestFault(13, 0)
    if call:
        c.push(c.v.cs)
        c.push(c.next_eip)
    c.mon.gdt.set_accessed(d)
    c.v.cs = sel & ~3
    c.f.eip = c.mon.kernel_entry(off)
    return DONE


@bt_emulates(M.INT, M.INT3, M.INTO, M.INT1)
def b_int(c: Context) -> str:
    m = c.ins.mnemonic
    if m == M.INTO and not c.f.eflags & 0x800:
        return NEXT
    vector = {M.INT3: 3, M.INTO: 4, M.INT1: 1}.get(m, c.ins.immediate8 if m == M.INT else 0)
    c.mon.traps[f"int {vector:#x}"] += 1
    # a fault on the way is reported at the instruction, as the hardware reports it
    c.mon.deliver(c.f, vector, None, m != M.INT1, c.next_eip, c.eip)
    return DONE


@bt_emulates(M.PUSH)
def b_push_sreg(c: Context) -> str:
    r = c.ins.op0_register
    c.push(c.v.cs if r == R.CS else c.v.ss, 4)
    return NEXT


@bt_emulates(M.LAR, M.LSL, M.VERR, M.VERW)
def b_descriptor_probe(c: Context) -> str:
    """LAR/LSL/VERR/VERW against the guest's own GDT, at the guest's privilege."""
    ins = c.ins
    m = ins.mnemonic
    src = 0 if m in (M.VERR, M.VERW) else 1
    sel = c.op(src, 2) & 0xFFFF
    raw = c.mon.guest_descriptor(sel) if sel & ~3 else None
    ok = False
    value = 0
    if raw is not None:
        access = (raw >> 40) & 0xFF
        dpl = (access >> 5) & 3
        s = access & 0x10
        typ = access & 0xF
        conforming = s and typ & 0xC == 0xC
        visible = conforming or dpl >= max(c.v.cpl, sel & 3)
        if m == M.LAR:
            ok = visible and (s or typ in (1, 2, 3, 4, 5, 9, 0xB, 0xC))
            value = raw >> 32 & 0x00F0FF00
        elif m == M.LSL:
            ok = visible and (s or typ in (1, 2, 3, 9, 0xB))
            limit = (raw & 0xFFFF) | ((raw >> 48) & 0xF) << 16
            value = (limit << 12 | 0xFFF) if raw >> 55 & 1 else limit
        elif m == M.VERR:
            ok = bool(s) and visible and (not typ & 8 or typ & 2)
        else:
            ok = bool(s) and visible and not typ & 8 and bool(typ & 2)
    if ok and m in (M.LAR, M.LSL):
        reg = ins.op0_register
        size = 2 if R.AX <= reg <= R.DI else 4
        c.set_op(0, size, value & (0xFFFF if size == 2 else 0xFFFFFFFF))
    c.f.eflags = (c.f.eflags & ~0x40) | (0x40 if ok else 0)
    return NEXT


@bt_emulates(M.MOV)
def b_mov(c: Context) -> str | None:
    if _is_plain_store(c.ins):           # an adaptive callout: a store to a page table
        c.mon.store_callout(c)
        return NEXT
    return E.e_mov(c)


def _is_plain_store(ins: ix.Instruction) -> bool:
    """``mov mem, reg/imm`` with an ordinary segment: what adaptive translation turns into a callout."""
    return (ins.mnemonic == M.MOV and ins.op0_kind == OK.MEMORY and ins.memory_segment != R.CS
            and (ins.op1_kind != OK.REGISTER or ins.op1_register in GPR))


@bt_emulates(M.SYSENTER, M.SYSEXIT, M.UD0)
def b_fault(c: Context) -> str:
    raise GuestFault(13 if c.ins.mnemonic != M.UD0 else 6, 0 if c.ins.mnemonic != M.UD0 else None)


@bt_emulates(M.LDS, M.LES, M.LFS, M.LGS)
def b_lxs(c: Context) -> str:
    off = c.read(4)
    sel = c.read(2, 4)
    i = {M.LDS: 3, M.LES: 0, M.LFS: 4, M.LGS: 5}[c.ins.mnemonic]
    c.mon.load_sreg(i, sel)
    from ringvisor.hw.system import set_reg
    set_reg(c.cpu, c.ins.op0_register, off)
    return NEXT

