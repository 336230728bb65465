"""Binary translation's translator: guest kernel code made into units of the
translation cache (``bt.py`` is the monitor that runs them).

A unit covers up to ``MAX_UNIT`` guest instructions, or fewer up to a control
transfer: IDENT instructions are copied (a read through CS is copied with an SS
override when SS can stand for CS), sensitive and privileged ones become
callouts, jumps and calls leave through chain stubs.  Besides those, units made
for one occasion: a single guest instruction (stepped under the guest's TF, or a
store that rewrites the code after it), and the stub that stands for a target
whose fetch faults.  Each unit records the linear pages and frames its code came
from, so that it goes when the guest writes that code or remaps those pages.
"""

from __future__ import annotations

import iced_x86 as ix

from ringvisor.hw.mmu import PF_I
from ringvisor.hw.state import CR4_SMEP

from . import emulate as E
from . import layout as L
from .btemulate import BT_EMULATORS, is_plain_store
from .guestmem import GuestBadFrame, GuestPageFault
from .monitor import MonitorStop
from .segcut import DATA_SREGS
from .tcache import CHAIN_STUB, Unit

M = ix.Mnemonic
FC = ix.FlowControl
OK = ix.OpKind
R = ix.Register
MAX_UNIT = 24
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
        # a CS-relative access would see the translation cache: a read that
        # transfers nothing can be made through another segment
        if ins.flow_control == FC.NEXT and not writes_memory(ins):
            return "csread"
        return "callout"
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


_INFO = ix.InstructionInfoFactory()


def writes_memory(ins: ix.Instruction) -> bool:
    """Does ``ins`` write through its CS-relative operand?"""
    return any(m.segment == R.CS and m.access not in (ix.OpAccess.READ, ix.OpAccess.COND_READ)
               for m in _INFO.info(ins).used_memory())


def _through_ss(ins: ix.Instruction) -> bytes:
    """``ins`` (a read through CS) encoded with an SS override instead."""
    copy = ins.copy()
    copy.segment_prefix = R.SS
    enc = ix.Encoder(32)
    enc.encode(copy, ins.ip32)
    return bytes(enc.take_buffer())


SET_IMM = (ix.Code.MOV_R32_IMM32, ix.Code.MOV_R16_IMM16, ix.Code.MOV_RM32_IMM32,
           ix.Code.MOV_RM16_IMM16)
WRITES = (ix.OpAccess.WRITE, ix.OpAccess.READ_WRITE, ix.OpAccess.COND_WRITE,
          ix.OpAccess.READ_COND_WRITE)
RPL1 = 1


def _sreg_load_exact(ins: ix.Instruction, known: dict[int, int], ring12: bool = False) -> bool:
    """Does the real processor check a MOV or POP into DS, ES, FS or GS in kernel code
    as the guest's would?  At the real ring 1 a selector of RPL 1 passes the check of a
    DPL-0 descriptor (real DPL 1) that the guest's ring 0 fails (max(CPL, RPL) > DPL:
    SDM Vol. 3 §5.7); every other RPL is judged the same.  Exact when the selector is
    known at translation time (a register set from an immediate earlier in the unit,
    ``known``: the kernel's ``mov $KDATA, %eax; mov %ax, %ds``) and its RPL is not 1;
    any other load is a callout, checked on the guest's descriptor (``load_sreg``).
    In units for code at rings 1 and 2 (``ring12``: ``bt.code_ring``) none is exact."""
    if not (ins.op_count and ins.op0_kind == OK.REGISTER and ins.op0_register in DATA_SREGS
            and ins.mnemonic in (M.MOV, M.POP)):
        return True
    if ring12:
        return False
    if ins.mnemonic == M.MOV and ins.op1_kind == OK.REGISTER:
        value = known.get(ix.RegisterExt.full_register32(ins.op1_register))
        # (and never one of the monitor's slots, which the real GDT holds beyond the
        # guest's entries: ``SEL_RSTACK`` is a DPL-1 data segment, loadable at ring 1)
        return value is not None and value & 3 != RPL1 and \
            (value & 0xFFFF) >> 3 < L.FIRST_RESERVED
    return False


def _track(ins: ix.Instruction, known: dict[int, int]) -> None:
    """What ``ins`` leaves in the registers whose values ``known`` holds."""
    if ins.code in SET_IMM and ins.op0_kind == OK.REGISTER:
        known[ix.RegisterExt.full_register32(ins.op0_register)] = ins.immediate(1)
    elif known:
        for r in _INFO.info(ins).used_registers():
            if r.access in WRITES:
                known.pop(ix.RegisterExt.full_register32(r.register), None)


def _emulated(ins: ix.Instruction) -> bool:
    return ins.mnemonic in BT_EMULATORS or ins.mnemonic in E.EMULATORS


class Translator:
    """Making units (mixed into ``BinaryTranslation``)."""

    def frame_of(self, lin: int, fetch: bool = False) -> int | None:
        """The guest frame linear ``lin`` maps now (None: not present), as a fetch would
        find it, without setting accessed bits -- unless ``fetch``: the guest is about
        to run there, and the walk is the fetch's (accessed bits set, the page then in
        the real TLB, where the next look finds it)."""
        p = self.gm.cached(lin)
        if p is not None:
            return p >> 12
        try:
            if fetch:
                return self.gm.phys(lin) >> 12
            return self.gm.translate(lin, False, False, set_bits=False).phys >> 12
        except (GuestPageFault, GuestBadFrame):
            return None

    def fault_stub(self, eip: int) -> int:
        """A stand-in for code at ``eip`` that cannot be fetched now: a stub that asks
        for its translation when it runs, so that the fetch faults then, at ``eip``,
        after whatever transfer led there has completed (as the hardware's fetch at
        the target faults)."""
        tc = self.tc
        if not tc.room(len(CHAIN_STUB)):
            self.flush_translations()
        start = tc.top
        tc.add(Unit(eip, -1, start, start + len(CHAIN_STUB), set(), [start], [eip], live=False,
                    lengths=[0], one=True), CHAIN_STUB, tracked=False)
        tc.sites[start + 2] = ("chain", eip)
        tc.stats["fault stubs"] += 1
        return start

    def single(self, eip: int) -> Unit:
        """The one-instruction unit of guest ``eip`` (for stepping it)."""
        u = self.tc.singles.get(eip)
        if u is not None and self.frame_of(self.lin(eip)) == u.phys >> 12:
            return u
        u = self.translate(eip, "step")
        self.tc.singles[eip] = u
        return u

    def fetch_phys(self, lin: int) -> int:
        """Where the guest kernel's fetch at ``lin`` reads; under the guest's CR4.SMEP a
        user page is #PF(P, I/D) (SDM Vol. 3 §4.6.1), and every fetch fault reports
        I/D (§4.7)."""
        v = self.vcpu
        smep = v.cr4 & CR4_SMEP and v.paging
        try:
            phys = self.gm.phys(lin)
        except GuestPageFault as e:
            if smep:
                raise GuestPageFault(e.address, e.error_code | PF_I) from None
            raise
        if smep and self.gm.translate(lin, False, False, set_bits=False).user:
            raise GuestPageFault(lin, PF_I | 1)
        return phys

    def _fetch(self, eip: int, pages: dict[int, int]) -> tuple[ix.Instruction, bytes]:
        """The guest instruction at ``eip``; ``pages`` gets the linear pages it lies in
        and their frames.  An instruction that runs on into a page that is not there
        faults on that page (CR2 = its first byte), as the hardware's fetch does."""
        data = b""
        lin = first = self.lin(eip)
        missing = None
        while len(data) < 15:
            chunk = min(15 - len(data), 0x1000 - (lin & 0xFFF))
            try:
                phys = self.fetch_phys(lin)
            except GuestPageFault as e:
                if not data:
                    raise
                missing = e
                break
            data += self.mem.read(phys, chunk)
            lin = (lin + chunk) & 0xFFFFFFFF
        decoder = ix.Decoder(32, data, ip=eip)
        ins = decoder.decode()
        if missing is not None and ins.is_invalid and \
                decoder.last_error == ix.DecoderError.NO_MORE_BYTES:
            raise missing
        n = max(ins.len, 1)
        for page in {first >> 12, ((first + n - 1) & 0xFFFFFFFF) >> 12}:
            pages[page] = self.gm.phys(page << 12) >> 12
        return ins, data[:ins.len]

    def translate(self, eip: int, single: str | None = None) -> Unit:
        """Translate the unit at guest ``eip``.

        ``single`` makes a unit of exactly one guest instruction, each part of which
        is one instruction of translated code followed only by stubs (so a trap
        after it is a trap after the guest instruction), never looked up nor chained
        into: ``"step"`` for stepping it, ``"store"`` for a store that must run once
        before the code it rewrites is translated again (its frame stays writable)."""
        tc = self.tc
        if not tc.room(MAX_UNIT * 16 + 64):
            self.flush_translations()
        pages: dict[int, int] = {}
        start = tc.top
        code = bytearray()
        tc_map: list[int] = []
        guest_map: list[int] = []
        lengths: list[int] = []
        sites: dict[int, tuple] = {}
        first_phys = self.fetch_phys(self.lin(eip))
        cs_reads = False
        known: dict[int, int] = {}      # full register -> value set from an immediate

        def here() -> int:
            return start + len(code)

        def mark(g: int, n: int = 0) -> None:
            tc_map.append(here())
            guest_map.append(g)
            lengths.append(n)

        def stub(target: int, at: int | None = None, n: int = 0) -> None:
            mark(target if at is None else at, n)
            u = tc.units.get(target) if single is None else None
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
        breaks = self.guest_breaks()
        if eip in breaks:
            # the guest's own instruction breakpoint: a fault before the instruction,
            # checked by the monitor (``break_check``)
            mark(eip)
            code.extend(CALLOUT)
            sites[here()] = ("break", eip)
        for n in range(1 if single else MAX_UNIT):
            if n and (g in self.debug_breakpoints or g in breaks):
                stub(g)                 # a debugger's or the guest's breakpoint starts a unit
                break
            try:
                ins, raw = self._fetch(g, pages)
            except GuestPageFault:
                if n == 0:
                    raise
                stub(g)
                break
            kind = _classify(ins) if not ins.is_invalid else "ident"
            if kind == "ident" and not _sreg_load_exact(ins, known, self.ring_units):
                kind = "callout"
            if kind == "ident" and g in self.adaptive and is_plain_store(ins) and not single:
                kind = "callout"
            if kind == "csread":
                if self.cs_reads_through_ss():
                    raw = _through_ss(ins)
                    kind = cs_reads = "ident"
                else:
                    kind = "callout"
            if kind == "callout" and not _emulated(ins):
                # nothing to emulate: what the instruction does at ring 1 is what it
                # does at ring 0 (#UD for UD2 and its kind)
                kind = "ident"
            if kind == "ident":
                _track(ins, known)
                mark(g, ins.len)
                code.extend(raw)
                if ins.flow_control != FC.NEXT:
                    stub(ins.next_ip32)
                    break
            elif kind == "callout":
                known.clear()
                mark(g, ins.len)
                code.extend(CALLOUT)
                sites[here()] = ("callout", ins, g, raw)     # (raw: for a saved VM)
                if ins.flow_control != FC.NEXT or ins.mnemonic in (M.HLT, M.LSS):
                    # the emulation decides where the guest goes; the next
                    # instruction gets its own stub all the same (after a HLT
                    # or a callout that falls through)
                    stub(ins.next_ip32)
                    break
            elif kind == "jmp":
                if single:
                    # a jump of its own, so that stepping it traps after it
                    mark(g, ins.len)
                    code.extend(b"\xE9" + bytes(4))
                    stub(ins.near_branch32)
                else:
                    # the jump is the stub: it stands for the JMP, not for its target, so
                    # that a trap after the instruction before it (a data breakpoint the
                    # hardware raises there) reports the JMP's EIP, as it has not run
                    stub(ins.near_branch32, g, ins.len)
                break
            elif kind == "call":
                mark(g, ins.len)
                code.extend(b"\x68" + ins.next_ip32.to_bytes(4, "little"))
                stub(ins.near_branch32)
                break
            elif kind == "jcc":
                mark(g, ins.len)
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
        frames = set(pages.values())
        unit = Unit(eip, first_phys, start, start + len(code), frames, tc_map, guest_map,
                    live=single is None, pages=pages, lengths=lengths, cs_reads=bool(cs_reads),
                    one=single is not None)
        tc.add(unit, bytes(code), tracked=single != "store")
        if single is None:
            for addr, g_ in zip(tc_map, guest_map):
                e = tc.entries.get(g_)
                if e is None or not e[0].live:
                    tc.entries[g_] = (unit, addr)
        tc.sites.update(sites)
        if cs_reads:
            tc.cs_units.append(unit)
        if single != "store":
            for fr in frames:
                self.shadow.protect(fr)
        if eip in self.debug_breakpoints:
            self.debug_tc.add(unit.start)
            self.cpu.host.set_breakpoints(self.cpu.host.breakpoints | {unit.start})
            self.cpu.host_debug_changed()
        return unit

    def fetch_guest(self, g: int) -> ix.Instruction:
        """The guest kernel instruction at ``g`` as it is now."""
        ins, _ = self._fetch(g, {})
        return ins

    def flush_translations(self) -> None:
        for fr in list(self.tc.by_frame):
            self.shadow.unprotect(fr)
        self.tc.flush()
        if self.debug_tc:                # the space is handed out again: forget those stops
            self.cpu.host.set_breakpoints(self.cpu.host.breakpoints - self.debug_tc)
            self.debug_tc.clear()
            self.cpu.host_debug_changed()
