"""sysgen's generator: the system-level operations a step is drawn from (``tests/sysgen.py``
builds, runs and compares the kernels).

Each ``op_*`` method of :class:`Gen` appends one operation's assembly (AT&T syntax, for
the runtime in ``tests/sysgen/``: its selectors, tables and stacks) to a :class:`Step`,
from the generator's seeded ``random.Random``; a step that holds one of Robin & Irvine's
sensitive instructions says so (``sensitive``, ``user``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

KCODE, KDATA, TSS_SEL, LDT_SEL, KCONF, TSSB_SEL = 0x08, 0x10, 0x18, 0x20, 0x58, 0x60
CS = {0: 0x08, 1: 0x29, 2: 0x3a, 3: 0x4b}
SS = {0: 0x10, 1: 0x31, 2: 0x42, 3: 0x53}
SCRATCH = 0x500000              # 0x3000 bytes that random segments and stores reach
FARPTR = SCRATCH + 0x2ff0       # a far pointer for LDS & co. (in the scratch area)
PLAY_VIRT, PLAY_PHYS = 0xc00000, 0x600000   # 16 pages whose PTEs the steps rewrite
PSE_ALIAS = 0x1000000           # 4 MiB page at physical 4 MiB (the play frames at +2 MiB)
CODE_ALIAS = 0x1400000          # 4 MiB page at physical 0 (the kernel's code at +2 MiB)
GDT_SLOTS = range(16, 32)       # descriptors the steps rewrite
LDT_SLOTS = range(0, 8)
SOFT = range(0x40, 0x48)        # vectors whose gates the steps rewrite
IOPORT = 0x3ff                  # COM1's scratch register: reads back what was written


@dataclass
class Step:
    lines: list[str] = field(default_factory=list)
    sensitive: bool = False     # holds a sensitive instruction (Robin & Irvine) ...
    user: bool = False          # ... that runs at an outer ring (bt runs it as itself too)


class Gen:
    """The steps of one kernel, drawn from ``seed``."""

    def __init__(self, seed: int, rings12: bool | None = None, avoid_gaps: bool = False,
                 sdm: bool = False):
        self.rng = random.Random(seed)
        self.paging = self.rng.random() < 0.7
        # avoid_gaps: nothing the monitors are known to refuse or to get wrong (code at
        # rings 1 and 2, kernel segment loads with RPL 1: without it, those are left out
        # under trapemu only, as sensitive steps are)
        self.avoid_gaps = avoid_gaps
        # sdm: also what QEMU does not check (accesses across a segment's limit, stores
        # through read-only and code segments): for ringvisor alone, native the reference
        self.sdm = sdm
        self.rings12 = False if avoid_gaps else (seed % 2 == 0) if rings12 is None else rings12
        self.n = 0
        self.label = 0

    # -- helpers ----------------------------------------------------------------------
    def L(self) -> str:
        self.label += 1
        return f".Ls{self.n}_{self.label}"

    def ring(self, zero_bias: float = 0.4) -> int:
        if self.rng.random() < zero_bias:
            return 0
        return self.rng.choice((1, 2, 3, 3, 3) if self.rings12 else (3,))

    def enter(self, st: Step, ring: int, eflags: int = 2) -> None:
        """Continue at ``ring`` (an IRET from ring 0), with ``eflags``."""
        if ring == 0:
            return
        if eflags & 0x3200:     # IF or IOPL through an IRET to an outer ring: lost under trapemu
            st.sensitive = True
        lab = self.L()
        # data segments of the new ring (an IRET outward nulls those of a lower DPL)
        st.lines += [f"pushl ${SS[ring]:#x}", "pop %ds", f"pushl ${SS[ring]:#x}", "pop %es"]
        st.lines += [f"pushl ${SS[ring]:#x}", f"pushl $xstack_top{ring}", f"pushl ${eflags:#x}",
                     f"pushl ${CS[ring]:#x}", f"pushl ${lab}", "iret", f"{lab}:"]

    def leave(self, st: Step, ring: int) -> None:
        if ring:
            st.lines.append("int $0x3f")

    def rand_regs(self, st: Step) -> None:
        for r in ("eax", "ecx", "edx", "ebx", "esi", "edi", "ebp"):
            st.lines.append(f"mov ${self.rng.getrandbits(32):#x}, %{r}")

    def slot(self) -> tuple[int, str]:
        """A descriptor slot the step may rewrite: (selector without RPL, its address)."""
        if self.rng.random() < 0.75:
            i = self.rng.choice(GDT_SLOTS)
            return i * 8, f"gdt+{i * 8}"
        i = self.rng.choice(LDT_SLOTS)
        return i * 8 | 4, f"ldt+{i * 8}"

    @staticmethod
    def desc(base: int, limit: int, access: int, flags: int) -> tuple[int, int]:
        lo = (limit & 0xffff) | ((base & 0xffff) << 16)
        hi = ((base >> 16) & 0xff) | (access << 8) | (((limit >> 16) & 0xf) << 16) \
            | (flags << 20) | (base & 0xff000000)
        return lo, hi

    def write_desc(self, st: Step, addr: str, lo: int, hi: int) -> None:
        st.lines += [f"movl ${lo:#x}, {addr}", f"movl ${hi:#x}, {addr}+4"]

    @staticmethod
    def write_gate(st: Step, addr: str, sel: int, offset: str, gtype: int, dpl: int,
                   present: bool, params: int = 0) -> None:
        """A gate at ``addr`` (the offset a symbol: written at run time, clobbers EAX)."""
        acc = gtype | (dpl << 5) | (0x80 if present else 0)
        st.lines += [f"mov ${offset}, %eax", f"movw %ax, {addr}", f"movw ${sel:#x}, {addr}+2",
                     f"movb ${params}, {addr}+4", f"movb ${acc:#x}, {addr}+5", "shr $16, %eax",
                     f"movw %ax, {addr}+6"]

    # -- operations -------------------------------------------------------------------
    def op_segment(self, st: Step) -> None:
        rng = self.rng
        ring = self.ring()
        sel, addr = self.slot()
        dpl = rng.randrange(4)
        present = rng.random() < 0.85
        big = rng.random() < 0.8                # D/B
        kind = rng.choice(("data", "data", "data", "down", "code", "conf", "sys"))
        if kind == "data":
            typ = rng.choice((0x0, 0x2, 0x1, 0x3))
        elif kind == "down":
            typ = rng.choice((0x4, 0x6, 0x7))
        elif kind == "code":
            typ = rng.choice((0x8, 0xa, 0xb))
        elif kind == "conf":
            typ = rng.choice((0xc, 0xe, 0xf))
        else:
            typ = rng.choice((0x2, 0x0, 0x4, 0xc))  # LDT, reserved, call gate 16: as segments
        access = typ | (0x10 if kind != "sys" else 0) | (dpl << 5) | (0x80 if present else 0)
        gran = rng.random() < 0.4
        raw_limit = rng.choice((0, 1, 0xf, 0xff, 0xfff, 0xffff, 0xfffff, rng.randrange(0x100000)))
        limit = ((raw_limit << 12) | 0xfff) if gran else raw_limit
        size = rng.choice((1, 2, 4))
        upper = 0xffffffff if big else 0xffff
        # Only offsets inside the limit: QEMU's TCG checks no segment limit on data
        # accesses in protected mode (SDM Vol. 3 §5.3 wants #GP/#SS), so an access beyond
        # it has no reference here (the limit checks are in tests/hwguests/kernelisms-sdm).
        lo_ok, hi_ok = (limit + 1, upper - size + 1) if kind == "down" else (0, limit - size + 1)
        if self.sdm:            # across the limit too: #GP, or #SS through SS
            lo_ok, hi_ok = min(lo_ok, hi_ok), max(lo_ok, hi_ok)
            off = rng.choice((lo_ok, hi_ok, hi_ok + 1, hi_ok + size - 1, lo_ok - 1,
                              rng.randrange(lo_ok, hi_ok + 1)))
        elif lo_ok > hi_ok:
            size = 0            # no valid offset: the load alone
            off = 0
        else:
            off = rng.choice((lo_ok, hi_ok, rng.randrange(lo_ok, hi_ok + 1),
                              rng.randrange(lo_ok, hi_ok + 1)))
        off &= 0xffffffff
        target = SCRATCH + rng.randrange(0, 0x2f00)
        base = (target - off) & 0xffffffff     # large offsets wrap around 4 GiB
        lo, hi = self.desc(base, raw_limit, access, (0x8 if gran else 0) | (0x4 if big else 0))
        self.write_desc(st, addr, lo, hi)
        rpl = rng.randrange(4) if rng.random() < 0.5 else ring
        rpl1 = False
        if ring == 0 and rpl == 1:
            # trapemu runs the kernel at ring 1 with its DPL-0 descriptors made DPL 1: a
            # load with RPL 1, #GP on the hardware, succeeds there (ring compression,
            # docs/virtualization.md); bt checks it as the hardware does
            if self.avoid_gaps:
                rpl = 0
            else:
                st.sensitive = rpl1 = True
                # ... and a load that succeeds there must not leave a trace the kernel's
                # last lines would show: the descriptor is accessed already (sysgen seed
                # 7177: trapemu's LDT checksum, the accessed bit its load set)
                if kind != "sys":
                    del st.lines[-2:]
                    lo, hi = self.desc(base, raw_limit, access | 1,
                                       (0x8 if gran else 0) | (0x4 if big else 0))
                    self.write_desc(st, addr, lo, hi)
        s = sel | rpl
        # SS only at an outer ring: a fault at ring 0 pushes its frame on the current stack
        seg = rng.choice(("ds", "es", "fs", "gs", "ss") if ring else ("ds", "es", "fs", "gs"))
        how = rng.choice(("mov", "pop", "lxs"))
        self.rand_regs(st)
        if how == "lxs":
            st.lines += [f"movl ${rng.getrandbits(32):#x}, {FARPTR:#x}", f"movw ${s:#x}, {FARPTR + 4:#x}"]
        self.enter(st, ring)
        reg = {1: "%al", 2: "%ax", 4: "%eax", 0: ""}[size]
        sfx = {1: "b", 2: "w", 4: "l", 0: ""}[size]
        if how == "mov":
            st.lines += [f"mov ${s:#x}, %ebx", f"mov %bx, %{seg}"]
        elif how == "pop":
            st.lines += [f"pushl ${s:#x}", f"pop %{seg}"]
        else:
            st.lines += [f"l{seg} {FARPTR:#x}, %ebx"]
        if size:
            st.lines.append(f"mov{sfx} %{seg}:{off:#x}, {reg}")
        # stores only through writable data segments: QEMU's TCG checks the type at the
        # load, not at the access (a read-only or code segment in DS takes the store)
        if size and (self.sdm or kind in ("data", "down") and typ & 2) and rng.random() < 0.5:
            value = rng.getrandbits(32)
            # (not after an RPL-1 load: one that succeeds under trapemu alone would leave
            # its store in the scratch checksum -- sysgen seed 7281)
            if not rpl1:
                st.lines += [f"mov ${value:#x}, %edx",
                             f"mov{sfx} {reg.replace('a', 'd')}, %{seg}:{off:#x}"]
        if seg == "ss":     # never leave a random stack: back to this ring's own
            st.lines += [f"mov ${SS[ring]:#x}, %ecx", "mov %cx, %ss"]
        self.leave(st, ring)

    def op_far(self, st: Step) -> None:
        rng = self.rng
        ring = self.ring()
        how = rng.choice(("ljmp", "lcall", "lcall", "lret", "iret"))
        target, back = self.L(), self.L()
        choice = rng.random()
        rpl = rng.randrange(4) if self.rings12 else rng.choice((0, 3))   # a return's new CPL
        params = 0
        if choice < 0.35:       # a fixed code segment of some ring
            t = rng.choice([r for r in CS if self.rings12 or r in (0, 3)])
            sel = (CS[t] & ~3) | rpl
            if rng.random() < 0.2:
                sel = KCONF | rpl
        else:
            s, addr = self.slot()
            sel = s | rpl
            if choice < 0.7 and how in ("ljmp", "lcall"):   # a call gate
                t = rng.choice([r for r in CS if self.rings12 or r in (0, 3)])
                tsel = rng.choice((CS[t], CS[t] & ~3, KCONF, KDATA, 0))
                params = rng.randrange(4)
                self.write_gate(st, addr, tsel, target, 0xc, rng.randrange(4), rng.random() < 0.9,
                                params)
            else:               # a code descriptor, base 0, accessed (see rt.c: QEMU sets no
                typ = rng.choice((0xb, 0x9, 0xf, 0xd, 0x3))     # accessed bit on CS loads)
                dpl = rng.randrange(4) if self.rings12 else rng.choice((0, 3))
                acc = 0x10 | typ | (dpl << 5) | (0x80 if rng.random() < 0.9 else 0)
                lo, hi = self.desc(0, 0xfffff, acc, 0xc)
                self.write_desc(st, addr, lo, hi)
        gate = choice >= 0.35 and choice < 0.7 and how in ("ljmp", "lcall")
        if ring == 0 and rpl == 1 and not gate:
            # the kernel's far transfer to a code selector of RPL 1: at trapemu's real
            # ring 1 it passes the checks the guest's ring 0 must fail (a RETF or IRET to a
            # DPL-0 code segment, #GP(selector) on the hardware, is a same-ring return
            # there: sysgen seed 7270), as the RPL-1 loads (docs/virtualization.md)
            st.sensitive = True
        self.rand_regs(st)
        self.enter(st, ring)
        if how == "ljmp":
            st.lines += [f"ljmp ${sel:#x}, ${target}"]
        elif how == "lcall":
            for _ in range(3):
                st.lines.append(f"pushl ${rng.getrandbits(32):#x}")
            st.lines += [f"lcall ${sel:#x}, ${target}", f"{back}:"]
            self.leave(st, ring)
            st.lines.append(f"jmp {back}_end")
        else:
            out = rng.choice([r for r in CS if r >= ring and (self.rings12 or r in (0, 3))])
            ssel = rng.choice((SS[out], SS[out], SS[out] & ~3, KDATA | out, CS[out]))
            st.lines += [f"pushl ${ssel:#x}", f"pushl $xstack_top{max(out, 1)}"]
            if how == "iret":
                fl = 2 | rng.choice((0, 0, 0x400, 0x1, 0x80, 0x800))
                st.lines.append(f"pushl ${fl:#x}")
            st.lines += [f"pushl ${sel:#x}", f"pushl ${target}", how]
        # the target: reads what the transfer left on its stack, returns or comes back
        st.lines.append(f"{target}:")
        if how == "lcall":
            st.lines += ["mov 0(%esp), %esi", "mov 8(%esp), %edi", "mov 12(%esp), %ebp",
                         f"lret ${4 * rng.choice((0, params))}"]
        else:
            st.lines.append("int $0x3f")
        st.lines.append(f"{back}_end:")

    def op_int(self, st: Step) -> None:
        rng = self.rng
        ring = self.ring()
        vec = rng.choice(SOFT)
        # no 16-bit gates (type 6, 7): their offset is 16 bits (SDM Vol. 3 §6.11) and QEMU
        # takes all 32 (tests/hwguests/gates16 runs handlers below 64 KiB)
        gtype = rng.choice((0xe, 0xe, 0xf, 0xf, 0x5, 0xc, 0x1))
        dpl = rng.randrange(4)
        present = rng.random() < 0.85
        if gtype == 0x5:
            sel = rng.choice((TSSB_SEL, TSSB_SEL, TSS_SEL, KCODE))
        else:
            sel = rng.choice((KCODE, KCODE, KCODE, KCONF, KDATA, 0, CS[3]) +
                             ((CS[1], CS[2]) if self.rings12 else ()))
        self.write_gate(st, f"idt+{vec * 8}", sel, f"stub_{vec}", gtype, dpl, present)
        self.rand_regs(st)
        self.enter(st, ring)
        what = rng.choice(("int", "int", "int", "int3", "into"))
        if what == "int":
            st.lines.append(f"int ${vec:#x}")
        elif what == "int3":
            st.lines.append("int3")
        else:
            st.lines += ["mov $0x7fffffff, %eax", "add $1, %eax", "into"]
        st.lines.append("add $1, %ebx")
        self.leave(st, ring)

    def op_iret_nt(self, st: Step) -> None:
        rng = self.rng
        # not the running TSS: QEMU reads the new image before it saves the old one, so a
        # switch to itself resumes a stale state
        link = rng.choice((TSSB_SEL, 0, KDATA, self.slot()[0]))
        st.lines.append(f"movw ${link:#x}, tss")
        ring = self.ring(0.6)
        self.rand_regs(st)
        self.enter(st, ring, 2 | 0x4000)
        lab = self.L()
        st.lines += ["pushl $0x4002", "popf", "iret", f"{lab}:"] if ring == 0 else ["iret"]
        self.leave(st, ring)

    def op_pte(self, st: Step) -> None:
        rng = self.rng
        if not self.paging:
            return self.op_segment(st)
        for _ in range(rng.randrange(1, 3)):
            page = rng.randrange(16)
            pte = (PLAY_PHYS + 0x1000 * rng.randrange(16)) | (1 if rng.random() < 0.8 else 0) \
                | rng.choice((0, 2)) | rng.choice((0, 4)) | rng.choice((0, 0, 0x20, 0x40, 0x60))
            st.lines.append(f"movl ${pte:#x}, play_pt+{4 * page}")
            if rng.random() < 0.6:
                st.lines.append(f"invlpg {PLAY_VIRT + 0x1000 * page:#x}")
            else:
                st.lines += ["mov %cr3, %eax", "mov %eax, %cr3"]
        if rng.random() < 0.3:
            bit = "or" if rng.random() < 0.5 else "and"
            mask = 0x10000 if bit == "or" else 0xfffeffff
            st.lines += ["mov %cr0, %eax", f"{bit} ${mask:#x}, %eax", "mov %eax, %cr0"]
        self.rand_regs(st)
        ring = self.ring(0.5)
        self.enter(st, ring)
        for _ in range(rng.randrange(1, 4)):
            page = rng.randrange(16)
            off = rng.choice((0, rng.randrange(0x1000), 0xffe, 0xffd, 0xfff))
            va = PLAY_VIRT + 0x1000 * page + off
            if page == 15 and off > 0xffc:
                off = 0
            if rng.random() < 0.2:
                va = PSE_ALIAS + 0x200000 + rng.randrange(0x10000 - 4)
            r = rng.choice(("%esi", "%edi", "%ebp"))
            if rng.random() < 0.5:
                st.lines.append(f"mov {va:#x}, {r}")
            else:
                st.lines.append(f"mov {r}, {va:#x}")
        self.leave(st, ring)

    def op_smc(self, st: Step) -> None:
        rng = self.rng
        self.rand_regs(st)
        lab = self.L()
        base = lab
        if self.paging and rng.random() < 0.3:
            base = f"({lab}+{CODE_ALIAS:#x})"     # the same code through another mapping
        form = rng.randrange(4)
        filler = [rng.choice(("add $3, %ebx", "inc %edx", "nop", "mov %eax, %ecx"))
                  for _ in range(rng.randrange(0, 4))]
        imm = rng.getrandbits(8)
        if form == 0:       # the immediate of an instruction ahead
            st.lines += [f"movb ${imm:#x}, {base}+1", *filler, f"{lab}: mov $0x11223344, %eax"]
        elif form == 1:     # two NOPs ahead become INC EAX; INC ECX
            st.lines += [f"movw $0x4140, {base}", *filler, f"{lab}: nop", "nop"]
        elif form == 2:     # REP STOSB over the bytes ahead (NOPs -> INC EAX)
            st.lines += [f"lea {base}, %edi", "mov $0x40, %al", "mov $3, %ecx", "rep stosb",
                         *filler, f"{lab}: nop", "nop", "nop"]
        else:               # the next instruction, stored by the one before it
            # (ADD EAX, 5 and a NOP: the four bytes the store replaces, two INC EBX, two NOPs)
            st.lines += [f"movl $0x90904343, {base}", f"{lab}: add $0x5, %eax", "nop"]
        if rng.random() < 0.3:      # single-stepped
            st.lines[0:0] = ["pushl $0x102", "popf"]
            st.lines += ["pushl $2", "popf"]

    def op_tf(self, st: Step) -> None:
        rng = self.rng
        ring = self.ring(0.6)
        self.rand_regs(st)
        st.lines += [f"mov $0x{SCRATCH + 0x100:x}, %esi", f"mov $0x{SCRATCH + 0x200:x}, %edi",
                     f"mov $0x{KDATA:x}, %ecx", "mov %cx, %es"]
        if ring == 0:
            st.lines += ["pushl $0x102", "popf"]
        else:
            st.lines += [f"mov ${SS[ring]:#x}, %ecx", "mov %cx, %ds", "mov %cx, %es"]
            self.enter(st, ring, 0x102)
        body = []
        for _ in range(rng.randrange(2, 9)):
            k = rng.randrange(10)
            if k == 0:
                body += [f"mov ${rng.randrange(1, 5)}, %ecx", "rep movsb"]
            elif k == 1:
                lab = self.L()
                body += [f"call {lab}", f"jmp {lab}_e", f"{lab}: add $7, %edx", "ret", f"{lab}_e:"]
            elif k == 2:
                body += ["push %eax", "pop %ebx"]
            elif k == 3:
                body += [f"int ${rng.choice(SOFT):#x}"]
            elif k == 4 and ring == 0:
                body += [f"mov ${IOPORT:#x}, %dx", "out %al, (%dx)", "in (%dx), %al"]
            elif k == 5:
                body += [f"mov %cs:{SCRATCH + rng.randrange(0x100):#x}, %ebx"]
            elif k == 6:
                lab = self.L()
                body += ["mov $2, %ecx", f"{lab}: add $1, %eax", f"loop {lab}"]
            else:
                body.append(rng.choice(("add $0x11, %eax", "inc %ebp", "sub %eax, %ebx", "nop",
                                        "lea 4(%esi), %esi", "neg %edx")))
        st.lines += body
        if ring == 0:
            st.lines += ["pushl $2", "popf"]
        self.leave(st, ring)

    def op_debug(self, st: Step) -> None:
        rng = self.rng
        n = rng.randrange(4)
        ring = self.ring(0.5)
        lab = self.L()
        if rng.random() < 0.4:      # an instruction breakpoint on code ahead
            st.lines += [f"mov ${lab}, %eax", f"mov %eax, %dr{n}"]
            dr7 = (1 << (2 * n)) | 0x100
        else:
            length = rng.choice((0, 1, 3))
            addr = SCRATCH + 0x400 + rng.randrange(0x40) * 4
            st.lines += [f"mov ${addr:#x}, %eax", f"mov %eax, %dr{n}"]
            rw = rng.choice((1, 3))
            dr7 = (rng.choice((1, 2, 3)) << (2 * n)) | (rw << (16 + 4 * n)) | (length << (18 + 4 * n))
        if rng.random() < 0.1 and self.sdm:
            # GD: the next debug-register access is #DB (SDM Vol. 3 §17.2.4); QEMU's TCG
            # has no general detect (docs/hardware.md), so only against the bare PC
            dr7 |= 0x2000
        if rng.random() < 0.2:
            de = rng.choice(("or $8, %eax", "and $0xfffffff7, %eax"))
            st.lines += ["mov %cr4, %eax", de, "mov %eax, %cr4"]
        st.lines += ["xor %eax, %eax", "mov %eax, %dr6", f"mov ${dr7:#x}, %eax"]
        self.rand_regs(st)
        st.lines += [f"mov ${dr7:#x}, %eax", "mov %eax, %dr7", f"mov ${SCRATCH + 0x400:#x}, %esi"]
        if ring == 0 and rng.random() < 0.3:
            insn = rng.choice(("mov %dr0, %ebx", "mov %dr4, %ebx", "mov %dr5, %ebx",
                               "mov %ebx, %dr5"))
            if insn == "mov %ebx, %dr5" and not self.sdm:
                # (DR7 without CR4.DE: not its GD bit, which QEMU does not model -- seed 7263)
                st.lines.append("and $0xffffdfff, %ebx")
            st.lines.append(insn)
        self.enter(st, ring)
        body = [f"mov {rng.randrange(0x40) * 4}(%esi), %ebx",
                f"mov %edx, {rng.randrange(0x40) * 4}(%esi)",
                f"movw %dx, {rng.randrange(0x80) * 2}(%esi)"]
        rng.shuffle(body)
        st.lines += body[:2] + [f"{lab}: add $5, %ebp", "nop"]
        self.leave(st, ring)
        st.lines += ["mov %dr6, %edi", "xor %eax, %eax", "mov %eax, %dr7"]

    def op_io(self, st: Step) -> None:
        rng = self.rng
        ring = self.ring(0.3)
        iopl = rng.choice((0, 0, 3, 1))
        st.lines += [f"mov ${IOPORT:#x}, %dx", f"mov ${rng.getrandbits(8):#x}, %al", "out %al, (%dx)"]
        bits = rng.getrandbits(8)
        st.lines += [f"movb ${bits:#x}, tss+104+0x7f", f"movb ${rng.getrandbits(8):#x}, tss+104+0x10"]
        st.lines.append(f"movw ${rng.choice((104, 104, 104, 0xffff, 104 + 8190)):#x}, tss+102")
        self.rand_regs(st)
        st.lines += [f"mov ${IOPORT:#x}, %edx", f"mov ${SCRATCH + 0x800:#x}, %edi",
                     f"mov ${SCRATCH + 0x900:#x}, %esi", "mov $2, %ecx"]
        if ring:
            st.lines += [f"mov ${SS[ring]:#x}, %eax", "mov %ax, %es", "mov %ax, %ds"]
        self.enter(st, ring, 2 | (iopl << 12))
        forms = ["out %al, (%dx)", "in (%dx), %al", "out %al, $0x80", "cli", "sti; nop; cli",
                 "outsb", "mov $0x3fe, %dx; outw %ax, (%dx); mov $0x3ff, %dx", "add $1, %eax"]
        if not st.sensitive:    # (what INS stores would outlive a step left out under trapemu)
            forms += ["insb", "rep insb"]
        for _ in range(rng.randrange(1, 5)):
            st.lines.append(rng.choice(forms))
        self.leave(st, ring)

    def op_cr(self, st: Step) -> None:
        rng = self.rng
        k = rng.randrange(6)
        if k == 0:      # CR0.WP, then a ring-0 store to a play page (read-only or not)
            if not self.paging:
                return self.op_segment(st)
            st.lines += ["mov %cr0, %eax", rng.choice(("xor $0x10000, %eax", "or $0x10000, %eax")),
                         "mov %eax, %cr0", f"movl $7, {PLAY_VIRT + 0x1000 * rng.randrange(16):#x}"]
        elif k == 1:    # CR0.TS / EM / MP, then an x87 instruction
            bits = rng.choice((0x8, 0x4, 0x2, 0xa, 0x0))
            st.lines += ["mov %cr0, %eax", "and $0xfffffff1, %eax", f"or ${bits:#x}, %eax",
                         "mov %eax, %cr0", rng.choice(("fnop", "fwait", "fninit")), "clts",
                         "mov %cr0, %eax", "and $0xfffffff1, %eax", "or $0x2, %eax", "mov %eax, %cr0"]
        elif k == 2:    # CR4.TSD, then RDTSC at ring 3 (the value itself is not printed)
            st.lines += ["mov %cr4, %eax", rng.choice(("or $4, %eax", "and $0xfffffffb, %eax")),
                         "mov %eax, %cr4"]
            self.enter(st, 3)
            st.lines += ["rdtsc", "xor %eax, %eax", "xor %edx, %edx"]
            self.leave(st, 3)
        elif k == 3:    # CR0.ET is hardwired to 1
            st.lines += ["mov %cr0, %eax", "and $0xffffffef, %eax", "mov %eax, %cr0", "mov %cr0, %ebx"]
        elif k == 4:    # CR4.PGE toggled (flushes everything)
            st.lines += ["mov %cr4, %eax", "xor $0x80, %eax", "mov %eax, %cr4", "mov %cr4, %esi"]
        else:           # CR0.AM: QEMU's TCG never raises #AC, so no AC is set anywhere
            st.lines += ["mov %cr0, %eax", "xor $0x40000, %eax", "mov %eax, %cr0", "mov %cr0, %edi"]

    def op_sensitive(self, st: Step) -> None:
        rng = self.rng
        st.sensitive = True
        sel = rng.choice((KCODE, KDATA, TSS_SEL, LDT_SEL, CS[3], SS[3], TSSB_SEL,
                          self.slot()[0] | rng.randrange(4), 0x1f8, 0x200))
        ring = self.ring(0.6)
        st.user = ring > 0
        self.rand_regs(st)
        self.enter(st, ring)
        tmp = SCRATCH + 0x2f80      # stored, read back into a register, cleared again
        st.lines.append(rng.choice((
            f"sgdt {tmp:#x}; mov {tmp + 2:#x}, %ebx", f"sidt {tmp:#x}; mov {tmp:#x}, %ebx",
            "sldt %ebx", "str %ebx", "smsw %ebx", f"mov ${sel:#x}, %ecx; lar %ecx, %ebx",
            f"mov ${sel:#x}, %ecx; lsl %ecx, %ebx", f"mov ${sel:#x}, %ecx; verr %cx",
            f"mov ${sel:#x}, %ecx; verw %cx", "pushf; pop %ebx", "mov %cs, %ebx",
            "mov %ss, %ebx", "push %cs; pop %ebx")))
        st.lines.append(f"movl $0, {tmp:#x}; movl $0, {tmp + 4:#x}")
        self.leave(st, ring)

    OPS = (("op_segment", 5), ("op_far", 4), ("op_int", 3), ("op_iret_nt", 1), ("op_pte", 3),
           ("op_smc", 2), ("op_tf", 2), ("op_debug", 2), ("op_io", 2), ("op_cr", 2),
           ("op_sensitive", 1))

    def steps(self, count: int) -> list[Step]:
        names = [n for n, w in self.OPS for _ in range(w)]
        out = []
        for self.n in range(count):
            st = Step()
            getattr(self, self.rng.choice(names))(st)
            out.append(st)
        return out
