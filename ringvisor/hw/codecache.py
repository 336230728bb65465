"""The code cache: translated blocks keyed by physical address and CPU mode.

``lookup`` finds the function for a linear EIP: first through a per-mode jump
cache keyed by linear address (cleared whenever the TLB is, since linear
addresses may then map elsewhere), then through the physical-address cache,
and only then by translating.  Writes into a page that holds translated code
arrive at ``page_written`` (the MMU never lets them bypass the slow path) and
drop every block built from that page.  If the write hits the very block that
is executing, the write is refused with :class:`SmcRestart` before it happens;
the CPU then re-executes that instruction alone, so the rest of the block runs
from the new bytes, as on real hardware.
"""

from __future__ import annotations

import hashlib
import re
import struct
import sys

import iced_x86 as ix

from . import alu, flags as F
from .blockstore import STORE
from .faults import GP, UD, CpuFault
from .state import CR4_SMEP
from . import fpsem  # noqa: F401  (files the x87/SSE emitters in EMITTERS)
from .semantics import EMITTERS, LOCKABLE, helper as helper_emit
from .speculate import forget, speculate
from .system import fpu_class
from .translate import RELIM, BlockBuilder, Mode, Translation, Unsupported, is_const

# PUSHAD's and POPAD's eight dwords in one step (``BlockBuilder._whole_frame``)
_FRAME8 = struct.Struct("<8I")

PAGE = 0xFFFFF000
UNPACK_MIN = 3         # registers from which a block loads (and stores) all eight at once
IDENT = re.compile(r"\b[A-Za-z_]\w*")
# a conditional branch's target chosen in a local (semantics.jcc): ``j = A if C else B``
RECORD = re.compile(r"\bl[orab]\b")      # the carried flag record's locals
JCC_LINE = re.compile(r"^(\s*)(j\d+) = (0x[0-9a-f]+) if (.*) else (0x[0-9a-f]+)$")
# the words of a flag store that are not the block's locals
CARRY_WORDS = frozenset({"lo", "lr", "la", "lb", "PAR", "if", "else", "not", "and", "or"})
STRING_OPS = frozenset(getattr(ix.Mnemonic, f"{op}{s}") for op in ("MOVS", "STOS", "LODS", "CMPS", "SCAS")
                       for s in "BWD")

# Python's compile() of a block's source is the larger part of translating it.  The
# same source at the same address compiles to the same code object, which is
# immutable: a block made again (another machine booting the same kernel in this
# process, a restored VM re-translating, a flushed cache refilling) takes the code
# object made before -- from this process's memo, or from the block store on disk
# (hw/blockstore.py), which keeps blocks between runs.  Keyed by a digest of the
# source (the sources themselves would hold more memory than the code); the memo
# is bounded, oldest first out.
_CODE_MEMO: dict[str, object] = {}
CODE_MEMO_SIZE = 8192


def _compiled(source: str, filename: str):
    key = hashlib.blake2b(f"{filename}\0{source}".encode(), digest_size=20).hexdigest()
    code = _CODE_MEMO.get(key)
    if code is None:
        code = STORE.load(key)
        if code is None:
            code = compile(source, filename, "exec")
            STORE.store(key, code)
        if len(_CODE_MEMO) >= CODE_MEMO_SIZE:
            del _CODE_MEMO[next(iter(_CODE_MEMO))]
        _CODE_MEMO[key] = code
    return code


class SmcRestart(CpuFault):
    """A write into the executing block: restart the instruction on its own."""

    def __init__(self) -> None:
        super().__init__(-1)


def _renamer(renamed: dict[str, str]):
    """A function giving a text with each local named in ``renamed`` replaced by its
    new name."""
    names = re.compile(r"\b(?:" + "|".join(renamed) + r")\b")
    return lambda text: names.sub(lambda m: renamed[m.group()], text)


COPY_LINE = re.compile(r"^(\s*)(r\d(?:, r\d)*) = (.+)$")
REGNAME = re.compile(r"^r\d$")


def _def_line(line: str, name: str) -> bool:
    """Whether ``line`` is one plain assignment to ``name`` (after ``try:``, ``except
    X:`` or ``else:``): if it raises, ``name`` was not assigned."""
    s = line.strip()
    for p in ("try: ", "else: "):
        if s.startswith(p):
            s = s[len(p):]
    if s.startswith("except ") and ": " in s:
        s = s.split(": ", 1)[1]
    return ";" not in s and s.startswith(name + " = ") and not s.startswith(name + " == ")


CALL = re.compile(r"\b[A-Za-z_]\w*\(")


def _may_fault(line: str) -> bool:
    """Whether a CpuFault can come from ``line`` of a block: only a call (the slow
    paths, the helpers) or a ``raise`` makes one; arithmetic, compares and the RAM and
    TLB subscripts do not."""
    return "raise" in line or CALL.search(line) is not None


def _copies(line: str) -> list[tuple[str, str]] | None:
    """The (register, value) pairs of a back edge's parallel copy ``r0, r2 = t2, v4``;
    None for any other line."""
    m = COPY_LINE.match(line)
    if not m:
        return None
    left, right = m.group(2).split(", "), m.group(3).split(", ")
    if len(left) != len(right) or not all(IDENT.fullmatch(b) or b.startswith("0x") or b.isdigit()
                                          for b in right):
        return None
    return list(zip(left, right))


def _coalesce(body: list[str], owner: list, back: list[str], carried: dict[int, str],
              snaps: dict, tail: list[str]) -> dict[str, str]:
    """Registers of a fused loop written in place: where the local ``v`` that register
    ``k`` is carried from into the next iteration is assigned at a point after which
    nothing reads ``rk``'s entry value -- no line of the iteration's rest (a side exit, a
    flag record, the back edge) names it, nor does the state a fault in a later line
    would be rebuilt from (the snapshot of that line's instruction) -- ``v`` is renamed
    ``rk`` and the back edge's copy goes (``r0, r2 = t2, v4`` at the end of every
    iteration).  A line that assigns ``v`` alone may fault: ``v`` is not assigned then.
    Neither may the block's exit after the loop (``tail``) or another register's copy
    name ``rk`` (``r3 = r0``: the entry value of r0, which ``v`` would have overwritten).
    Returns the renaming (edits ``body`` and ``back`` in place: the copies dropped)."""
    counts: dict[str, int] = {}
    for v in carried.values():
        counts[v] = counts.get(v, 0) + 1
    late = set()                   # read after the iteration's end: by the exit, the copies
    for line in tail:
        late.update(IDENT.findall(line))
    late.update(carried.values())
    todo = [(k, v) for k, v in carried.items()
            if counts[v] == 1 and v.isidentifier() and not REGNAME.match(v) and
            not v.startswith("p_") and f"r{k}" not in late]
    if not todo:
        return {}
    words = [set(IDENT.findall(line)) for line in body]
    seen: dict[int, set] = {}      # a snapshot's names (its registers' locals, its flag code)
    end = len(back)
    renamed: dict[str, str] = {}
    for k, v in todo:
        rk = f"r{k}"
        d = next((j for j, w in enumerate(words) if v in w), None)
        if d is None or not _def_line(body[d], v):
            continue
        ok = True
        for j in range(d + 1, len(body)):
            line = body[j]
            if _def_line(line, v):
                continue
            pairs = _copies(line)
            if pairs is not None:
                if any((a == rk) != (b == v) or b == rk for a, b in pairs):
                    ok = False
                    break
            elif rk in words[j]:
                ok = False
                break
            i = owner[j] if j < len(owner) else None
            if i is not None and i in snaps and _may_fault(line):
                names = seen.get(i)
                if names is None:
                    _, code, rm = snaps[i]
                    names = seen[i] = set(IDENT.findall(code)) | set(rm.values())
                if rk in names:
                    ok = False
                    break
        if ok:
            for line in back[:end]:
                pairs = _copies(line)
                if pairs is not None:
                    if any((a == rk) != (b == v) or b == rk for a, b in pairs):
                        ok = False
                        break
                elif rk in IDENT.findall(line):
                    ok = False
                    break
        if ok:
            renamed[v] = rk
    if not renamed:
        return renamed
    for lines in (body, back):
        for j, line in enumerate(lines):
            every = _copies(line)
            if every is None:
                continue
            pairs = [(a, b) for a, b in every if renamed.get(b) != a]
            if len(pairs) == len(every):
                continue
            pad = line[:len(line) - len(line.lstrip())]
            lines[j] = (pad + ", ".join(a for a, _ in pairs) + " = " +
                        ", ".join(b for _, b in pairs)) if pairs else pad + "pass"
    return renamed


class Unwind:
    """Rebuild the architectural state when an instruction of a block faults.

    Registers are written back from the block's locals (each instruction's
    snapshot says which local held which register when it began); the lazy flags
    as they stood before the faulting instruction are stored by a small piece of
    code compiled the first time that instruction faults.
    """

    __slots__ = ("snaps", "fused", "env", "compiled", "carry", "lines")

    def __init__(self, snaps: dict, fused: bool, env: dict, carry=None) -> None:
        self.snaps, self.fused, self.env = snaps, fused, env
        self.compiled: dict[int, object] = {}
        # a fused loop that does not carry its flag record (CodeCache._carried_flags):
        # the code that rebuilds it from the previous iteration's locals
        self.carry = carry
        # line of the block's code -> the instruction it belongs to (set by assemble)
        self.lines: dict[int, int] = {}

    def run(self, local: dict) -> None:
        """Called by the block's ``except`` clause (``local``: its locals)."""
        # the traceback's first entry is the block's own frame, where the fault is
        # handled: its line is in the faulting instruction's code
        n = self.lines[sys.exc_info()[2].tb_lineno]
        env = self.env
        regs = env["R"]
        eip, code, regmap = self.snaps[n]
        for i, name in regmap.items():
            regs[i] = local[name] if name.isidentifier() else int(name, 0)
        st = env["S"]
        st.eip = eip
        if code:
            c = self.compiled.get(n)
            if c is None:
                entry = "MAT(lo, lr, la, lb)" if self.fused else "FL()"
                src = code.replace("__ENTRY_CF__", "CARRY(lo, lr, la, lb)" if self.fused else
                                   "CARRY(S.lf_op, S.lf_res, S.lf_a, S.lf_b)")
                src = src.replace("__ENTRY_STORE__",
                                   "S.lf_op = lo; S.lf_res = lr; S.lf_a = la; S.lf_b = lb"
                                   if self.fused else "").replace("__ENTRY__", entry)
                c = self.compiled[n] = compile(src, "<unwind>", "exec")
            loc = dict(local)
            if self.carry is not None:
                if loc["ic"]:
                    exec(self.carry, env, loc)
                else:       # (the first iteration: the record is still the entry's)
                    loc.update(lo=st.lf_op, lr=st.lf_res, la=st.lf_a, lb=st.lf_b)
            elif self.fused and "lo" not in loc:
                # a loop that sets its record before reading it (CodeCache._record_set_first)
                # faulted in its first iteration: the record is still the entry's
                loc.update(lo=st.lf_op, lr=st.lf_res, la=st.lf_a, lb=st.lf_b)
            exec(c, env, loc)
        st.icount += n + (local["ic"] + local.get("xc", 0) if self.fused else 0)


class CodeCache:
    def __init__(self, cpu, max_insns: int = 48, keep_source: bool = False) -> None:
        self.cpu = cpu
        self.max_insns = max_insns
        self.keep_source = keep_source
        self.blocks: dict[tuple[int, int, int], Translation] = {}
        self.by_page: dict[int, set[tuple[int, int, int]]] = {}
        self.jump: dict[int, dict[int, object]] = {}
        self.by_code: dict[object, Translation] = {}
        self.translations = 0
        self.invalidations = 0
        self.bytes = 0
        # physical page -> {an indirect transfer's site (physical address, mode key) ->
        # the target it is predicted to take, or None: never predicted} (hw/speculate.py)
        self.predicted: dict[int, dict[tuple[int, int], int | None]] = {}
        self.env = self._environment()
        cpu.mem.add_code_cache(self)

    def _environment(self) -> dict:
        cpu = self.cpu
        mmu, mem = cpu.mmu, cpu.mem
        return {
            "C": cpu, "S": cpu.state, "R": cpu.state.regs, "SEGS": cpu.state.segs,
            "M8": mem.m8, "M16": mem.m16, "M32": mem.m32,
            "TRS": mmu.tr_s, "TWS": mmu.tw_s, "TRU": mmu.tr_u, "TWU": mmu.tw_u,
            "RD": mmu.read, "WR": mmu.write, "LIN": cpu.segmentation.linear,
            "FL": cpu.arith_flags, "MAT": F.materialize, "CARRY": F.carry, "PAR": F.PARITY, "CpuFault": CpuFault,
            "ONCE": (0,), "HELP": cpu._run_helper, "SEGLOAD": cpu.segmentation.load,
            "SEGAGAIN": cpu.segmentation.load_again,
            "PACK8": _FRAME8.pack_into, "UNPACK8": _FRAME8.unpack_from,
            "SHIFT": alu.shift, "SHLD": alu.shld, "SHRD": alu.shrd, "MUL": alu.mul,
            "IMUL": alu.imul, "DIV": alu.div, "IDIV": alu.idiv, "BSF": alu.bsf, "BSR": alu.bsr,
            "DAA": alu.daa, "DAS": alu.das, "AAA": alu.aaa, "AAM": alu.aam, "AAD": alu.aad,
        }

    # -- lookup ------------------------------------------------------------------------
    def flush_jump_cache(self) -> None:
        for d in self.jump.values():
            d.clear()

    def lookup(self, eip: int, mode: Mode, single: bool = False):
        cpu = self.cpu
        mmu = cpu.mmu
        if eip > mode.cs_limit:
            raise CpuFault(GP, 0)          # fetch beyond the code segment's limit
        lin = (mode.cs_base + eip) & 0xFFFFFFFF
        d = (mmu.tr_u if mode.user else mmu.tr_s).get(lin & PAGE)
        if d is not None and cpu.state.cr4 & CR4_SMEP and not mode.user and lin & PAGE in mmu.tr_u:
            d = None                   # a user page: the walk decides (SMEP faults)
        phys = lin + d if d is not None else mmu.walk(lin, False, mode.user, fetch=True)
        if not single and cpu.host.pages and lin & PAGE in cpu.host.pages:
            # a page with a host debugger's breakpoint runs an instruction at a time
            # (Cpu.run steps through it): this "block" just ends the dispatch loop
            return self._to_step
        if cpu.native:
            hit = cpu.native.find(phys)
            if hit is not None:
                return self._native_entry(hit, mode)
        # (the EIP too: a block's exits and the EIPs it saves are the EIPs it was
        # translated at, so the same frame run through another linear page -- a JIT's
        # second mapping of its code -- or another CS base is another block, as QEMU's
        # tb_lookup matches the TB's pc as well as its physical address)
        key = (phys, mode.key | (1 << 20 if single else 0), eip)
        tr = self.blocks.get(key)
        if tr is not None and tr.next_page is not None:
            # the block's instruction straddles into the next page: it is valid only
            # while that page still maps the frame it was fetched from (after a PTE
            # change and INVLPG, or a CR3 load, it may not); an unmapped page is a
            # #PF on this fetch, at this instruction (SDM Vol. 3 §4.10.2)
            nxt = ((lin & PAGE) + 0x1000) & 0xFFFFFFFF
            d = (mmu.tr_u if mode.user else mmu.tr_s).get(nxt)
            now = nxt + d if d is not None else mmu.walk(nxt, False, mode.user, fetch=True)
            if now >> 12 != tr.next_page:
                self._drop(key)
                tr = None
        if tr is None:
            tr = self.translate(eip, phys, mode, single)
            if tr.phys_pages:
                self.blocks[key] = tr
                for ppn in tr.phys_pages:
                    if ppn not in cpu.mem.code_pages:
                        cpu.mem.code_pages.add(ppn)
                        for cache in cpu.mem.code_caches:   # every processor's TLB
                            cache.cpu.mmu.protect_code_page(ppn)
                    self.by_page.setdefault(ppn, set()).add(key)
        if not single and len(tr.phys_pages) == 1:
            self.jump.setdefault(mode.key, {})[eip] = tr.fn
        return tr.fn

    def _to_step(self) -> int:
        self.cpu.limit = 0
        return self.cpu.state.eip

    def _native_entry(self, hit, mode: Mode):
        """The "block" for an address inside a native-handler region."""
        cpu = self.cpu
        st = cpu.state
        start, handler, name = hit
        if mode.cpl != 0:
            def refuse():
                raise CpuFault(UD)
            return refuse

        def enter():
            st.icount += 1
            if cpu.trace:
                cpu.trace(f"[{st.icount}] native handler {name!r} at eip={st.eip:#010x}\n")
            handler(cpu)
            cpu.mode_changed()
            return st.eip
        return enter

    # -- invalidation ----------------------------------------------------------------
    def page_written(self, ppn: int, addr: int | None = None, n: int = 0) -> None:
        """Bytes ``[addr, addr + n)`` of page ``ppn`` were written (the whole page if no ``addr``).

        Only the blocks built from those bytes go: a page often holds code and
        data side by side (a translation cache patched in place, a kernel's
        data next to its text), and the rest of its blocks stay valid.
        """
        keys = self.by_page.get(ppn)
        if not keys:
            self.by_page.pop(ppn, None)
            self.cpu.mem.release_code_page(ppn, self)
            return
        if addr is None:
            doomed = keys
        else:
            end = addr + n
            blocks = self.blocks
            doomed = {k for k in keys
                      if (tr := blocks.get(k)) is None or len(tr.phys_pages) > 1
                      or tr.overlaps(addr, end)}
            if not doomed:
                return
        forget(self, ppn, addr, addr + n if addr is not None else 0)
        if doomed is keys or len(doomed) == len(keys):
            del self.by_page[ppn]
            self.cpu.mem.release_code_page(ppn, self)
        else:
            keys -= doomed
        for key in doomed:
            tr = self.blocks.pop(key, None)
            if tr is not None:
                self.invalidations += 1
                self.by_code.pop(tr.fn.__code__, None)
                self.bytes -= tr.size
        self.flush_jump_cache()

    def _drop(self, key: tuple[int, int, int], invalidated: bool = True) -> None:
        """Forget one block."""
        tr = self.blocks.pop(key)
        for ppn in tr.phys_pages:
            keys = self.by_page.get(ppn)
            if keys is not None:
                keys.discard(key)
        self.invalidations += invalidated
        self.by_code.pop(tr.fn.__code__, None)
        self.bytes -= tr.size

    def retranslate(self, key: tuple[int, int, int], eip: int) -> None:
        """Forget the block at ``key`` (entered at ``eip``) so that the next lookup
        translates it again, with what has been learned since (hw/speculate.py)."""
        tr = self.blocks.get(key)
        if tr is None:
            return
        self._drop(key, invalidated=False)
        for d in self.jump.values():
            if d.get(eip) is tr.fn:
                del d[eip]

    def check_smc(self, phys: int, size: int) -> None:
        """Called before a slow-path write to a code page: refuse writes into the running block."""
        frame = sys._getframe(2)
        for _ in range(4):
            if frame is None:
                return
            tr = self.by_code.get(frame.f_code)
            if tr is not None:
                if tr.n_insns > 1 and tr.overlaps(phys, phys + size):
                    self.page_written(phys >> 12, phys, size)
                    raise SmcRestart()
                return
            frame = frame.f_back

    def flush(self) -> None:
        self.blocks.clear()
        pages = list(self.by_page)
        self.by_page.clear()
        self.by_code.clear()
        mem = self.cpu.mem
        if len(mem.code_caches) == 1:
            mem.code_pages.clear()
        else:
            for ppn in pages:
                mem.release_code_page(ppn, self)
        self.flush_jump_cache()
        self.bytes = 0

    # -- translation -----------------------------------------------------------------
    def translate(self, eip: int, phys: int, mode: Mode, single: bool) -> Translation:
        """Decode and translate the block at ``eip``.

        The block follows direct JMPs and CALLs whose target lies in the same
        page (so one page mapping covers it all), and ends at any other control
        transfer, a helper instruction, the size limit or the page's end.
        """
        cpu = self.cpu
        user = mode.user
        bits = 32 if mode.cs32 else 16
        base = mode.cs_base
        # ``page`` and the offsets below are linear; the decoder works in EIP (offsets in CS)
        page = (base + eip) & PAGE
        data = cpu.mmu.read_bytes(page, 0x1000, user, fetch=True)
        decoder = ix.Decoder(bits, data, ip=eip)
        decoder.position = (base + eip) & 0xFFF
        buf = data                         # the decoder's buffer (for each instruction's bytes)
        bb = BlockBuilder(mode, start=eip, cpu=cpu)
        limit = 1 if single else self.max_insns
        pages = {phys >> 12}
        runs: list[list[int]] = []         # the byte ranges the instructions came from
        cs_end = mode.cs_limit
        visited = {eip}
        shadow: list[int] = []             # return addresses pushed by the calls followed
        done: set[int] = set()             # the instructions translated (their EIPs)
        next_page = None
        insns = []
        last_end = eip
        while len(insns) < limit:
            ins = decoder.decode()
            if ins.code == ix.Code.INVALID and decoder.last_error == ix.DecoderError.NO_MORE_BYTES:
                if insns:
                    break
                # the first instruction straddles a page boundary: fetch across it
                nxt = (page + 0x1000) & 0xFFFFFFFF
                next_page = cpu.mmu.walk(nxt, False, user, fetch=True) >> 12   # a fetch's faults
                pages.add(next_page)
                more = cpu.mmu.read_bytes(nxt, 15, user, fetch=True)
                buf = data[(base + eip) & 0xFFF:] + more
                decoder = ix.Decoder(bits, buf, ip=eip)
                ins = decoder.decode()
                limit = 1
            if ins.next_ip32 - 1 > cs_end and insns:
                break                      # the next block's fetch raises #GP
            insns.append(ins)
            # room for at least a few more instructions after a branch's side exit
            bb.side_exits = (not single and len(insns) < limit - 4 and
                             (base + ins.next_ip32) & PAGE == page)
            bb.back_ok = (lambda t: (base + t) & PAGE == page and t not in done and t <= cs_end) \
                if bb.side_exits else None
            bb.begin_insn(len(insns) - 1, ins.ip32)
            done.add(ins.ip32)
            bb.raw = buf[decoder.position - ins.len:decoder.position]
            try:
                self.emit(bb, ins)
            except Unsupported:
                bb.emit("raise CpuFault(6)")
                bb.ends = True
                bb.next_expr = "None"
            follow = bb.follow
            if bb.indirect is not None and not single and bb.helper_const is None and mode.cs32:
                follow = speculate(self, bb, ins, (phys & PAGE) + ((base + ins.ip32) & 0xFFF),
                                   shadow, (phys, eip), page, visited, len(insns) < limit)
            bb.end_insn()
            off = (base + ins.ip32 - page) & 0xFFFFFFFF
            if runs and runs[-1][1] == off:
                runs[-1][1] = off + ins.len
            else:
                runs.append([off, off + ins.len])
            last_end = ins.next_ip32
            if follow is not None:
                visited.add(follow)
                decoder.position = (base + follow) & 0xFFF
                decoder.ip = follow
                last_end = follow
                continue
            if not bb.ends:
                if (ins.has_rep_prefix or ins.has_repne_prefix) and ins.mnemonic in STRING_OPS:
                    break        # it retires once per iteration: it ends the block (Cpu.run)
                continue
            target = ins.near_branch_target if ins.op0_kind in (
                ix.OpKind.NEAR_BRANCH32, ix.OpKind.NEAR_BRANCH16) else None
            if (not single and bb.helper_const is None and target is not None and
                    ins.mnemonic in (ix.Mnemonic.JMP, ix.Mnemonic.CALL) and
                    (base + target) & PAGE == page and target not in visited and
                    target <= cs_end and len(insns) < limit):
                # keep going at the target: the block becomes a superblock
                if ins.mnemonic == ix.Mnemonic.CALL and mode.cs32:
                    shadow.append(ins.next_ip32)
                visited.add(target)
                bb.ends = False
                bb.next_expr = None
                bb.targets.discard(target)
                decoder.position = (base + target) & 0xFFF
                decoder.ip = target
                # if nothing at the target fits in this block (an instruction that
                # straddles the page end), the block must still exit *to the target*
                last_end = target
                continue
            break
        if bb.next_expr is None and bb.helper_const is None:
            bb.next_expr = f"{last_end:#x}"
        src = self.assemble(bb, insns, eip)
        fn = self.compile(src, bb.consts, eip)
        tr = Translation(fn, eip, tuple(sorted(pages)), len(insns),
                         src if self.keep_source else "", len(src), next_page=next_page)
        # the code bytes this block came from (for self-modifying code): a
        # superblock that followed jumps holds several runs of one page
        tr.ranges = tuple(((phys & PAGE) + a, (phys & PAGE) + b) for a, b in runs)
        self.translations += 1
        self.bytes += tr.size
        self.by_code[fn.__code__] = tr
        if cpu.trace:
            listing = "\n".join(f"  {x.ip32:08x}: {x}" for x in insns)
            cpu.trace(f"[{cpu.state.icount}] translate {eip:#010x} (phys {phys:#x}, mode {mode.key:#x}, "
                      f"{len(insns)} instructions)\n{listing}\n{src}\n")
        return tr

    def emit(self, bb: BlockBuilder, ins: ix.Instruction) -> None:
        if ins.code == ix.Code.INVALID:
            raise Unsupported("invalid")
        if ins.has_lock_prefix and (ins.mnemonic not in LOCKABLE or ins.op0_kind != ix.OpKind.MEMORY):
            raise Unsupported("lock prefix")
        fn = EMITTERS.get(ins.mnemonic)
        if fn is None:
            if fpu_class(ins):
                return helper_emit(bb, ins)
            raise Unsupported(str(ins))
        fn(bb, ins)

    def assemble(self, bb: BlockBuilder, insns: list, eip: int) -> str:
        """Wrap the body: register loads, the precise-exception handler, the exit.

        A block whose branch leads back to its own start is *fused*: the body
        runs in a ``while`` loop inside the one function, registers stay in
        locals, the lazy flag record is carried in locals (``lo``..``lb``), and
        the instruction budget is counted locally, so a tight guest loop costs
        no dispatch at all.
        """
        n = len(insns)
        fused = (bb.helper_const is None and (eip in bb.targets or bool(bb.loop_points)) and n > 0)
        # (a fused loop that carries its flag record stores it every iteration)
        carried_flags = self._carried_flags(bb, fused)
        carry, copies = carried_flags if carried_flags else (None, [])
        bb.settle_lazy(not fused or carry is None)
        ind = "    "

        def regmap(cur: dict) -> dict:
            # in a fused loop an exit taken in a later iteration must write back
            # everything the body changes: what is not renamed yet is in r0..r7
            m = {i: v for i, v in cur.items() if v != f"r{i}"}
            if fused:
                for i in bb.dirty:
                    m.setdefault(i, f"r{i}")
            return dict(sorted(m.items()))

        # The exception path is rare: one shared function rebuilds the state from
        # the block's locals, with per-instruction flag stores compiled on first use.
        snaps = {}
        for index, ieip, fsrc, cur in bb.snapshots:
            code = bb.flags_store_code(fsrc)
            snaps[index] = (ieip, "\n".join(code), regmap(cur))
        unwinder = Unwind(snaps, fused, self.env, compile(carry, "<carry>", "exec") if carry else None)
        unwind = bb.const(unwinder)
        handler = [ind + "except CpuFault:", ind + f"    {unwind}.run(locals())", ind + "    raise"]
        final = regmap(bb.cur)
        loaded = sorted(bb.used | bb.dirty) if fused else sorted(bb.used)
        # one UNPACK_SEQUENCE (or one slice store) costs less than three subscripts
        unpack = len(loaded) >= UNPACK_MIN
        if unpack and len(final) >= UNPACK_MIN:
            tail = ["    R[:] = " + ", ".join(final.get(i, f"r{i}") for i in range(8))]
        else:
            tail = [f"    R[{i}] = {v}" for i, v in final.items()]
        tail.extend("    " + s for s in bb.flags_store_code(bb.fsrc, not bb.body_entry_defined)
                    if fused or s != "__ENTRY_STORE__")
        if bb.helper_const is not None:
            tail += [f"    S.icount += {n - 1}", f"    S.eip = {insns[-1].ip32:#x}",
                     f"    nxt = HELP({bb.helper_const})", "    S.icount += 1", "    return nxt"]
        elif fused:
            tail += [f"    S.icount += ic{' + xc' if bb.loop_points else ''} + {n}",
                     f"    return {bb.next_expr}"]
        elif bb.learner is not None:
            tail += [f"    S.icount += {n}", f"    return {bb.learner}({bb.next_expr})"]
        else:
            tail += [f"    S.icount += {n}", f"    return {bb.next_expr}"]
        head = ["def blk():"]
        if unpack:
            head.append("    r0, r1, r2, r3, r4, r5, r6, r7 = R")
        else:
            head += [f"    r{i} = R[{i}]" for i in loaded]
        body = []
        owner = []        # the instruction each line of the body belongs to
        index = None
        for line in bb.lines or ["        pass"]:
            stripped = line.lstrip()
            pad = line[:len(line) - len(stripped)]
            if stripped.startswith("__N__:"):
                index = int(stripped[6:])
                continue
            if stripped.startswith("__LOOP__:"):
                more = [pad + l for l in self._loop_back(bb, int(stripped[9:]), n)] if fused else []
            elif stripped.startswith("__WB__:"):
                wb = regmap(bb.wb_points[int(stripped[7:])])
                if unpack and len(wb) > UNPACK_MIN:
                    more = [pad + "R[:] = " + ", ".join(wb.get(i, f"r{i}") for i in range(8))]
                else:
                    more = [f"{pad}R[{i}] = {v}" for i, v in wb.items()]
            elif stripped == "__ENTRY_STORE__" and not fused:
                more = []              # the record already holds the entry flags
            else:
                more = line.split("\n")
            body += more
            owner += [index] * len(more)
        if not fused:
            head.append("    try:")
        else:
            # The iterations are a ``for`` over the instruction budget: the loop variable
            # ``ic`` counts the instructions of the iterations before this one (less
            # ``xc``, what the iterations that went back early at a side exit left out,
            # where there are such exits), and the range ends where the next iteration
            # could not start before ``C.limit`` (the dispatch loop's rule: a block may
            # start while the count is below the limit); the first iteration always runs.
            # A store that may have reached a device (translate.RELIM) ends the range
            # there if it lowered the limit: the dispatch loop enters the block again,
            # with the new bound, or takes the interrupt the store made pending.
            relim = any(RELIM in line for line in body)
            rng = f"range(0, lim - S.icount, {n}) or ONCE"
            if carry is None and not self._record_set_first(bb, tail):
                head.append("    lo = S.lf_op; lr = S.lf_res; la = S.lf_a; lb = S.lf_b")
            head.append("    lim = C.limit")
            if relim:
                head.append(f"    it = iter({rng})")
            if bb.loop_points:
                head.append("    xc = 0")
            head += ["    try:", f"        for ic in {'it' if relim else rng}:"]
            body = ["    " + l for l in body]
        # body line j is line len(head) + j + 2 of the code ``compile`` makes (``def make``
        # comes first); lines that cannot fault belong to the instruction before them
        unwinder.lines = {len(head) + j + 2: i for j, i in enumerate(owner) if i is not None}
        if fused:
            back = self._back_edge(body, bb.next_expr, eip)
            if carry is None:
                back += ["            " + s for s in self._loop_flags(bb)]
            elif copies:
                back.append("            " + ", ".join(f"p_{w}" for w in copies) + " = " +
                            ", ".join(copies))
            # the next iteration starts from r0..r7 (one parallel assignment: a
            # register may have been renamed to another's entry value)
            carried = {i: v for i, v in final.items() if v != f"r{i}"}
            renamed = _coalesce(body, owner, back, carried, snaps, tail) if carried else {}
            rename = _renamer(renamed) if renamed else None
            if renamed:
                carried = {i: v for i, v in carried.items() if v not in renamed}
                if carry is not None:
                    carry = rename(carry)
                    unwinder.carry = compile(carry, "<carry>", "exec")
                for k, (ieip, code, rm) in list(snaps.items()):
                    snaps[k] = (ieip, rename(code) if code else code,
                                {i: renamed.get(v, v) for i, v in rm.items()})
            if carried:
                back.append("            " + ", ".join(f"r{i}" for i in carried) + " = " +
                            ", ".join(carried.values()))
            # the range ran out: the state is the next iteration's start, in r0..r7
            # and the carried record (or the locals it is made of)
            dirty = sorted(bb.dirty)
            if len(dirty) >= UNPACK_MIN:
                out = ["R[:] = " + ", ".join(f"r{i}" for i in range(8))]
            else:
                out = [f"R[{i}] = r{i}" for i in dirty]
            out.append(RECORD.sub(lambda m: "S.lf_" + {"lo": "op", "lr": "res"}.get(
                m.group(), m.group()[1]), carry) if carry is not None else
                       "S.lf_op = lo; S.lf_res = lr; S.lf_a = la; S.lf_b = lb")
            out += [f"S.icount += ic{' + xc' if bb.loop_points else ''} + {n}", f"return {eip:#x}"]
            back += ["        else:"] + ["            " + line for line in out]
            src = "\n".join(head + body + back + handler + tail) + "\n"
            if renamed:
                src = rename(src)
            src = src.replace("__ENTRY_STORE__", "S.lf_op = lo; S.lf_res = lr; S.lf_a = la; S.lf_b = lb")
            ic = "ic + xc + " if bb.loop_points else "ic + "
            src = src.replace("__ENTRY_CF__", "CARRY(lo, lr, la, lb)").replace("__IC__", ic)
            src = src.replace(RELIM, "; C.limit < lim and it.__setstate__(lim)")
            return src.replace("__ENTRY__", "MAT(lo, lr, la, lb)")
        src = "\n".join(head + body + handler + tail).replace(RELIM, "") + "\n"
        src = src.replace("__ENTRY_CF__", "CARRY(S.lf_op, S.lf_res, S.lf_a, S.lf_b)")
        return src.replace("__ENTRY__", "FL()").replace("__IC__", "")

    def _record_set_first(self, bb: BlockBuilder, tail: list[str]) -> bool:
        """Whether a fused loop that carries its flag record in ``lo``..``lb`` never reads
        the record it was entered with: no line of the body, its exits or the block's
        exit after the loop reads the entry flags (``__ENTRY``: the only way the code
        reads the record), and every way into the next iteration (the back edge, each
        side exit back to the start) assigns all four.  The block then does not load the
        record at its head: ``lo``..``lb`` are bound from the end of the first iteration
        on (the loop's ``else`` runs after one), and a fault in the first iteration
        finds them unbound and the entry record still in the CPU's state
        (``Unwind.run``)."""
        if any("__ENTRY" in line for line in bb.lines) or any("__ENTRY" in line for line in tail):
            return False
        ends = [self._loop_flags(bb)] + [self._loop_flags(bb, fsrc, entry)
                                         for _, _, fsrc, entry in bb.loop_points]
        for lines in ends:
            code = "; ".join(lines)
            if "__ENTRY" in code or not all(re.search(rf"\b{w} = ", code) for w in ("lo", "lr", "la", "lb")):
                return False
        return True

    @staticmethod
    def _loop_flags(bb: BlockBuilder, fsrc: dict | None = None, entry: bool | None = None) -> list[str]:
        """The statements carrying the flags into the next iteration of a fused loop
        (``fsrc``: as they are at a side exit back to the start; by default, at the end)."""
        if fsrc is None:
            fsrc, entry = bb.fsrc, not bb.body_entry_defined
        return [s.replace("S.lf_op", "lo").replace("S.lf_res", "lr").replace("S.lf_a", "la")
                .replace("S.lf_b", "lb")
                for s in bb.flags_store_code(fsrc, entry)
                if s != "__ENTRY_STORE__"]

    def _loop_back(self, bb: BlockBuilder, i: int, n: int) -> list[str]:
        """A side exit to the block's start inside a fused loop: the next iteration (the
        loop's range says whether the budget allows one: an iteration that went back
        early ran fewer instructions than the range counts, ``xc`` the difference)."""
        k, cur, fsrc, entry = bb.loop_points[i]
        lines = [f"xc -= {n - k}"] if n != k else []
        lines += self._loop_flags(bb, fsrc, entry)
        carried = {j: v for j, v in sorted(cur.items()) if v != f"r{j}"}
        if carried:
            lines.append(", ".join(f"r{j}" for j in carried) + " = " + ", ".join(carried.values()))
        lines.append("continue")
        return lines

    @staticmethod
    def _back_edge(body: list[str], nxt: str, eip: int) -> list[str]:
        """The test that ends an iteration of a fused loop, leaving it unless the block
        goes back to its start; where the body ends with the conditional branch that
        decides (``j = A if C else B``), the branch becomes the test, and the target
        local is assigned only when leaving."""
        pad = " " * 12
        m = JCC_LINE.match(body[-1]) if body else None
        if m and m.group(1) == pad and m.group(2) == nxt and eip in (int(m.group(3), 16),
                                                                      int(m.group(5), 16)):
            body.pop()
            _, j, a, c, b = m.groups()
            if int(a, 16) == eip:
                return [f"{pad}if not ({c}):", f"{pad}    {j} = {b}", f"{pad}    break"]
            return [f"{pad}if {c}:", f"{pad}    {j} = {a}", f"{pad}    break"]
        if is_const(nxt) and int(nxt, 0) == eip:
            return []
        return [f"{pad}if {nxt} != {eip:#x}: break"]

    def _carried_flags(self, bb: BlockBuilder, fused: bool) -> tuple[str, list[str]] | None:
        """In a fused loop, the flag record carried to the next iteration is needed only
        where the flags of the iteration's start are read: by the body, a side exit, or
        an instruction that faults before writing them.  When the body reads none, the
        loop does not carry the record: the unwind path rebuilds it from the locals it
        would be made of (returned: the code that does so, and the locals the back edge
        copies for it -- r0..r7 that the back edge reassigns, and those that an
        instruction faulting before the flags are written may already have reassigned
        in this iteration; the others still hold the previous iteration's values there,
        and when the loop's range runs out)."""
        if not fused or bb.loop_points or any(f[0] == "entry" for f in bb.fsrc.values()):
            return None
        if any("__ENTRY" in line for line in bb.lines):
            return None
        code = "\n".join(self._loop_flags(bb))
        names = {w for w in IDENT.findall(code) if w not in CARRY_WORDS}
        # r0..r7 are reassigned between iterations
        copied = {w for w in names if w[0] == "r" and w[1:].isdigit() and int(w[1:]) in bb.dirty}
        for index, _, fsrc, _ in bb.snapshots:
            if not any(f[0] == "entry" for f in fsrc.values()):
                continue
            for w in names:
                if not (w[0] == "r" and w[1:].isdigit()) and bb.born.get(w, -1) <= index:
                    copied.add(w)                # assigned before the fault: this iteration's
        if len(copied) > 3:
            return None                  # (four stores cost less than four copies)
        code = IDENT.sub(lambda m: f"p_{m.group()}" if m.group() in copied else m.group(), code)
        return code, sorted(copied)

    def compile(self, src: str, consts: list, eip: int):
        names = ", ".join(f"K{i}" for i in range(len(consts)))
        factory = f"def make({names}):\n" + "".join("    " + l + "\n" for l in src.splitlines()) + \
            "    return blk\n"
        code = _compiled(factory, f"<block {eip:#010x}>")
        ns: dict = {}
        exec(code, self.env, ns)
        return ns["make"](*consts)
