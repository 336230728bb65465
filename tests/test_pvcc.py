"""ringvisor pvcc: every privileged or sensitive instruction form is rewritten
into its para-virtual sequence (checked in the assembled object with
iced-x86, and run under unicorn against a stand-in hypervisor), the teaching
kernel builds para-virtualized from its unmodified sources, and what pvcc
cannot rewrite is a one-line error."""

from __future__ import annotations

import os
import random
import re
import shutil
import stat
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import iced_x86 as ix
import pytest
from elftools.elf.elffile import ELFFile

from ringvisor import pvcc
from ringvisor.pvcc import rewriter
from ringvisor.guests import build as guest_build
from ringvisor.guests.toolchain import CFLAGS, Target
from ringvisor import abi
from ringvisor.abi import Hypercall, Mmuext, RvMachineOp, SchedOp, VcpuOp

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc not installed")

SRC = guest_build.SOURCE_DIR
MASK, PENDING, CR2 = abi.PV_UPCALL_MASK_VA, abi.PV_UPCALL_PENDING_VA, abi.PV_CR2_VA
MNEMONIC = {v: k for k, v in vars(ix.Mnemonic).items() if not k.startswith("_")}
IF_SENSITIVE = {"CLI", "STI", "IRET", "IRETD", "POPF", "POPFD", "PUSHF", "PUSHFD"}


# ------------------------------------------------------------------ helpers

def assemble_text(tmp: Path, text: str) -> tuple[bytes, int]:
    """Assemble ``text``; the .text bytes and their address (0)."""
    s = tmp / "x.s"
    s.write_text(text)
    o = tmp / "x.o"
    subprocess.run(["gcc", "-m32", "-c", "-x", "assembler", str(s), "-o", str(o)], check=True,
                   capture_output=True)
    with open(o, "rb") as f:
        return ELFFile(f).get_section_by_name(".text").data(), 0


def decode(code: bytes, ip: int = 0) -> list[ix.Instruction]:
    return list(ix.Decoder(32, code, ip=ip))


def mnemonics(ins: list[ix.Instruction]) -> list[str]:
    return [MNEMONIC[i.mnemonic] for i in ins]


def forbidden(i: ix.Instruction) -> bool:
    """Would this instruction misbehave at ring 1 (fault, or silently ignore IF)?"""
    return ix.OpCodeInfo(i.code).must_be_cpl0 or MNEMONIC[i.mnemonic] in IF_SENSITIVE


def fmt(i: ix.Instruction) -> str:
    return ix.Formatter(ix.FormatterSyntax.GAS).format(i)


def rewrite(text: str, origin: str = "asm") -> tuple[str, list[rewriter.Site]]:
    return rewriter.rewrite_asm("\t.text\n" + text + "\n", "t.S", origin)


def hypercalls(ins: list[ix.Instruction]) -> list[int]:
    """The hypercall numbers loaded into eax right before each int $0x82."""
    out, eax = [], None
    for i in ins:
        if MNEMONIC[i.mnemonic] == "MOV" and i.op0_kind == ix.OpKind.REGISTER \
                and i.op0_register == ix.Register.EAX and i.op1_kind == ix.OpKind.IMMEDIATE32:
            eax = i.immediate32
        if MNEMONIC[i.mnemonic] == "INT" and i.immediate8 == 0x82:
            out.append(eax)
    return out


# ------------------------------------------------- each form, as assembled

FORMS = [
    # source, origin, hypercalls expected, other instructions that must be there
    ("cli", "asm", [], [f"movb $1,0x{MASK:X}"]),
    ("sti", "asm", [Hypercall.xen_version], [f"movb $0,0x{MASK:X}"]),
    ("sti\n\thlt", "asm", [Hypercall.sched_op], []),
    ("sti; hlt", "c", [Hypercall.sched_op], []),
    ("hlt", "asm", [Hypercall.sched_op], []),
    ("pushfl", "asm", [], ["pushf"]),
    ("pushf", "c", [], ["pushf"]),
    ("popfl", "asm", [Hypercall.xen_version], ["popf"]),
    ("popf", "c", [Hypercall.xen_version], ["popf"]),
    ("iret", "asm", [Hypercall.iret], []),
    ("iretl", "c", [Hypercall.iret], []),
    ("movl %edx, %cr3", "asm", [Hypercall.mmuext_op, Hypercall.sched_op], ["shr $0xC,%eax"]),
    ("mov %eax, %cr3", "c", [], ["push %eax", "call "]),        # pv_write_cr3(eax)
    ("movl %eax, %cr0", "asm", [Hypercall.rv_machine_op], []),
    ("movl %ecx, %cr4", "c", [Hypercall.rv_machine_op], []),
    ("movl %cr0, %ebx", "asm", [Hypercall.rv_machine_op], []),
    ("movl %cr3, %eax", "c", [Hypercall.rv_machine_op], []),
    ("movl %cr4, %esi", "c", [Hypercall.rv_machine_op], []),
    ("movl %cr2, %edi", "asm", [], [f"mov 0x{CR2:X},%edi"]),
    ("invlpg (%eax)", "c", [Hypercall.mmuext_op], ["lea (%eax),%eax"]),
    ("invlpg 8(%esp)", "asm", [Hypercall.mmuext_op], ["lea 0x1C(%esp),%eax"]),
    ("ltr %ax", "c", [Hypercall.rv_machine_op], ["movzwl %ax,%ecx"]),
    ("ltrw 6(%esp)", "asm", [Hypercall.rv_machine_op], ["movzwl 0x12(%esp),%ecx"]),
    ("lgdt 10(%esp)", "c", [], ["lea 0x16(%esp),%eax", "call "]),
    ("lidt (%eax)", "c", [], ["lea (%eax),%eax", "call "]),
    ("movw %dx, %ss", "c", [], ["or $1,%eax", "pop %ss"]),
    ("movl %eax, %ss", "asm", [], ["or $1,%eax", "pop %ss", "sahf"]),
    ("movw 4(%esp), %ss", "asm", [], ["movzwl 0x10(%esp),%eax"]),
    ("lret", "c", [], ["orl $1,4(%esp)", "lret"]),
    ("lret $8", "asm", [], ["orl $1,8(%esp)", "lret $8"]),
]


@pytest.mark.parametrize("src,origin,calls,present", FORMS,
                         ids=[f"{f[1]}:{f[0]}" for f in FORMS])
def test_each_form_is_rewritten(tmp_path, src, origin, calls, present):
    text, sites = rewrite(src, origin)
    assert len(sites) == 1 and sites[0].instruction.replace("\n\t", "; ") in (
        src.replace("\n\t", "; "), src)
    code, _ = assemble_text(tmp_path, text)
    ins = decode(code)
    left = [fmt(i) for i in ins if forbidden(i) and MNEMONIC[i.mnemonic] not in ("PUSHFD", "POPFD")]
    assert not left, f"privileged instructions remain: {left}"
    assert not any(MNEMONIC[i.mnemonic] == "MOV" and i.op0_kind == ix.OpKind.REGISTER
                   and i.op0_register == ix.Register.SS for i in ins)
    assert hypercalls(ins) == [int(c) for c in calls]
    listing = [fmt(i) for i in ins]
    for p in present:
        assert any(line.startswith(p) for line in listing), (p, listing)
    # the sequence is position independent: no absolute address into .text
    # (only the fixed shared-info addresses and, for lgdt/lidt, a relative call)
    for i in ins:
        if i.is_ip_rel_memory_operand:
            raise AssertionError(fmt(i))


def test_labels_and_local_jumps_survive(tmp_path):
    text, sites = rewrite("1:  cli\n\tjmp 1b\n\tjmp 2f\n2:\tsti; hlt\n\tjmp 1b")
    assert [s.kind.split()[0] for s in sites] == ["evtchn_upcall_mask", "sched_op(SCHEDOP_block)"]
    code, _ = assemble_text(tmp_path, text)
    ins = decode(code)
    assert fmt(ins[0]) == f"movb $1,0x{MASK:X}"
    # jmp 1b still goes to the rewritten cli
    assert [i.near_branch_target for i in ins if MNEMONIC[i.mnemonic] == "JMP"][-1] == 0


def test_macro_bodies_get_the_rewrite_at_each_expansion(tmp_path):
    text, sites = rewrite(".macro off\n\tsti\n.endm\n\toff\n\toff")
    assert len(sites) == 1
    code, _ = assemble_text(tmp_path, text)
    assert hypercalls(decode(code)) == [Hypercall.xen_version] * 2


def test_report_names_file_line_and_origin_of_c_sites(tmp_path):
    src = tmp_path / "k.c"
    src.write_text("static inline void off(void) { __asm__ volatile(\"cli\" ::: \"memory\"); }\n"
                   "int x;\n"
                   "void f(void)\n{\n    x = 1;\n    off();\n}\n")
    sites = pvcc.compile_to_asm(src, tmp_path / "k.s", Target("t", [src]), tmp_path)
    assert [(s.where, s.asm, s.function) for s in sites] == [("k.c:6", "k.c:1", "f")]
    assert str(sites[0]) == "k.c:6: cli -> evtchn_upcall_mask = 1  (asm at k.c:1, in f)"


# ------------------------------------------- run under a stand-in hypervisor

def _run(tmp_path, src: str, origin: str, regs: dict, stack: list[int], shared: dict,
         result: int = 0, count: int = 0):
    """Run the rewrite of ``src`` under unicorn; int $0x82 is answered by a
    stand-in that records each call.  Returns (registers after, eflags
    after, stack words, the calls, the shared page)."""
    uc_mod = pytest.importorskip("unicorn")
    from unicorn import x86_const as X
    text, _ = rewrite(src, origin)
    code, _ = assemble_text(tmp_path, text)
    uc = uc_mod.Uc(uc_mod.UC_ARCH_X86, uc_mod.UC_MODE_32)
    base, stack_top = 0x10000, 0x30000
    uc.mem_map(base, 0x10000)
    uc.mem_map(0x20000, 0x10000)
    uc.mem_map(abi.PV_SHARED_INFO_VA, 0x1000)
    uc.mem_write(base, code)
    for addr, byte in shared.items():
        uc.mem_write(addr, bytes([byte]))
    esp = stack_top - 0x100 - 4 * len(stack)
    for k, w in enumerate(stack):
        uc.mem_write(esp + 4 * k, w.to_bytes(4, "little"))
    names = ["eax", "ebx", "ecx", "edx", "esi", "edi", "ebp"]
    for n in names:
        uc.reg_write(getattr(X, f"UC_X86_REG_{n.upper()}"), regs[n])
    uc.reg_write(X.UC_X86_REG_ESP, esp)
    uc.reg_write(X.UC_X86_REG_EFLAGS, regs["eflags"])
    calls = []

    def hyper(uc, intno, _):
        assert intno == 0x82
        r = {n: uc.reg_read(getattr(X, f"UC_X86_REG_{n.upper()}")) for n in names + ["esp"]}
        r["mem"] = bytes(uc.mem_read(r["ebx"], 12)) if 0x20000 <= r["ebx"] < 0x30000 else b""
        r["top"] = int.from_bytes(uc.mem_read(r["esp"], 4), "little")
        calls.append(r)
        uc.reg_write(X.UC_X86_REG_EAX, result)
    uc.hook_add(uc_mod.UC_HOOK_INTR, hyper)
    uc.emu_start(base, base + len(code), count=count)
    after = {n: uc.reg_read(getattr(X, f"UC_X86_REG_{n.upper()}")) for n in names + ["esp"]}
    after["esp"] -= esp
    words = [int.from_bytes(uc.mem_read(esp - 8 + 4 * k, 4), "little") for k in range(6)]
    page = bytes(uc.mem_read(abi.PV_SHARED_INFO_VA, 64))
    return after, uc.reg_read(X.UC_X86_REG_EFLAGS), words, calls, page


ARITH = 0x8D5        # OF SF ZF AF PF CF


def _random_regs(rng: random.Random) -> dict:
    regs = {n: rng.getrandbits(32) for n in ("eax", "ebx", "ecx", "edx", "esi", "edi", "ebp")}
    regs["eflags"] = 0x2 | (rng.getrandbits(12) & ARITH)
    return regs


def _same(before: dict, after: dict, *, but=(), esp=0):
    for n in ("eax", "ebx", "ecx", "edx", "esi", "edi", "ebp"):
        if n not in but:
            assert after[n] == before[n], n
    assert after["esp"] == esp


@pytest.mark.parametrize("origin", ["asm", "c"])
@pytest.mark.parametrize("seed", range(3))
def test_sequences_keep_registers_and_flags(tmp_path, origin, seed):
    """Each sequence, run with random registers and flags: it makes the
    hypercall docs/paravirt.md names with the right arguments, writes only
    what the original wrote, and (from assembly) keeps the flags."""
    pytest.importorskip("unicorn")
    rng = random.Random(seed)
    keep_flags = origin == "asm"

    def check(src, *, but=(), esp=0, stack=(0, 0), shared=None, result=0):
        regs = _random_regs(rng)
        after, flags, words, calls, page = _run(tmp_path, src, origin, regs, list(stack),
                                                shared or {}, result)
        _same(regs, after, but=but, esp=esp)
        if keep_flags:
            assert flags & ARITH == regs["eflags"] & ARITH, src
        return regs, after, flags, words, calls, page

    # cli / sti
    *_, calls, page = check("cli", shared={MASK: 0})
    assert page[1] == 1 and calls == []
    *_, calls, page = check("sti", shared={MASK: 1, PENDING: 0})
    assert page[1] == 0 and calls == []
    *_, calls, page = check("sti", shared={MASK: 1, PENDING: 1})
    assert [c["eax"] for c in calls] == [Hypercall.xen_version]
    # hlt: block when unmasked, down when masked; sti; hlt: block
    *_, calls, _ = check("hlt", shared={MASK: 0})
    assert [(c["eax"], c["ebx"]) for c in calls] == [(Hypercall.sched_op, SchedOp.block)]
    *_, calls, _ = check("hlt", shared={MASK: 1})
    assert [(c["eax"], c["ebx"], c["ecx"]) for c in calls] == [(Hypercall.vcpu_op, VcpuOp.down, 0)]
    *_, calls, _ = check("sti; hlt", shared={MASK: 1})
    assert [(c["eax"], c["ebx"]) for c in calls] == [(Hypercall.sched_op, SchedOp.block)]
    # pushf: the pushed IF is the inverse of the mask, the rest is EFLAGS
    for mask in (0, 1):
        regs, _, flags, words, _, _ = check("pushfl", esp=-4, shared={MASK: mask})
        pushed = words[1]
        assert bool(pushed & 0x200) == (not mask)
        assert pushed & ARITH == regs["eflags"] & ARITH
    # popf: mask := !IF, flags := the popped value, pending delivered if unmasked
    for if_bit, pending in ((0x200, 1), (0x200, 0), (0, 1)):
        value = 0x2 | if_bit | (rng.getrandbits(12) & ARITH)
        regs = _random_regs(rng)
        after, flags, _, calls, page = _run(tmp_path, "popfl", origin, regs, [value],
                                            {MASK: 1 - bool(if_bit), PENDING: pending})
        _same(regs, after, esp=4)
        assert flags & ARITH == value & ARITH
        assert page[1] == (0 if if_bit else 1)
        assert len(calls) == (1 if if_bit and pending else 0)
    # iret: the hypercall with eax pushed on the frame
    regs, after, _, words, calls, _ = check("iret", but=("eax",), esp=-4, stack=(0x1234, 0x9))
    assert [c["eax"] for c in calls] == [Hypercall.iret] and calls[0]["top"] == regs["eax"]
    # mov to cr3 in assembly: mmuext_op({NEW_BASEPTR, mfn}, 1, NULL, DOMID_SELF) (from C,
    # a call of the runtime's pv_write_cr3: FORMS)
    if origin == "asm":
        regs, _, _, _, calls, _ = check("movl %edx, %cr3")
        (c,) = calls
        assert (c["eax"], c["ecx"], c["edx"], c["esi"]) == (Hypercall.mmuext_op, 1, 0,
                                                            abi.DomId.SELF)
        assert abi.MMUEXT_OP.unpack(c["mem"])["cmd"] == Mmuext.NEW_BASEPTR
        assert abi.MMUEXT_OP.unpack(c["mem"])["arg1"]["mfn"] == regs["edx"] >> 12
        # refused: the domain crashes (sched_op(SCHEDOP_shutdown, {SHUTDOWN_crash}), again
        # should that return) instead of going on on the tables it had
        *_, calls, _ = _run(tmp_path, "movl %edx, %cr3", origin, _random_regs(rng), [0, 0], {},
                            result=-22 & 0xFFFFFFFF, count=200)
        assert calls[0]["eax"] == Hypercall.mmuext_op and len(calls) > 2
        assert all((c["eax"], c["ebx"], c["top"]) == (Hypercall.sched_op, SchedOp.shutdown, 3)
                   for c in calls[1:])
    # invlpg: mmuext_op({INVLPG_LOCAL, linear_addr})
    regs, _, _, _, calls, _ = check("invlpg 0x10(%ecx,%esi,2)")
    op = abi.MMUEXT_OP.unpack(calls[0]["mem"])
    assert op["cmd"] == Mmuext.INVLPG_LOCAL
    assert op["arg1"]["linear_addr"] == (regs["ecx"] + 2 * regs["esi"] + 0x10) & 0xFFFFFFFF
    # control registers through rv_machine_op
    regs, _, _, _, calls, _ = check("movl %esi, %cr0")
    assert [(c["eax"], c["ebx"], c["ecx"], c["edx"]) for c in calls] == [
        (Hypercall.rv_machine_op, RvMachineOp.WRITE_CR, 0, regs["esi"])]
    regs, after, _, _, calls, _ = check("movl %cr4, %ecx", but=("ecx",), result=0x10)
    assert after["ecx"] == 0x10 and (calls[0]["ebx"], calls[0]["ecx"]) == (RvMachineOp.READ_CR, 4)
    regs, after, *_ = check("movl %cr2, %ebx", but=("ebx",), shared={CR2: 0x78})
    assert after["ebx"] & 0xFF == 0x78
    regs, _, _, _, calls, _ = check("ltr %ax")
    assert (calls[0]["ebx"], calls[0]["ecx"]) == (RvMachineOp.LTR, regs["eax"] & 0xFFFF)


# ----------------------------------------------------- refused instructions

BAD = [
    ("lmsw %ax", "asm"), ("clts", "asm"), ("wbinvd", "c"), ("rdmsr", "c"), ("wrmsr", "asm"),
    ("invd", "asm"), ("movl %eax, %db7", "asm"), ("movl %dr0, %eax", "c"), ("lldt %ax", "c"),
    ("lgdt (%eax)", "asm"), ("lidt (%eax)", "asm"), ("popw %ss", "asm"), ("lss (%eax), %esp", "c"),
    ("iretw", "asm"), ("movl %eax, %cr8", "asm"), ("movl %esp, %cr3", "c"), ("sysexit", "asm"),
    ("lock invlpg (%eax)", "asm"),
]


@pytest.mark.parametrize("src,origin", BAD, ids=[b[0] for b in BAD])
def test_unknown_privileged_instructions_are_refused(src, origin):
    with pytest.raises(rewriter.PvccError) as e:
        rewriter.rewrite_asm(f"\t.text\n\tnop\n\t{src}\n", "bad.S", origin)
    msg = str(e.value)
    assert msg.startswith("bad.S:3: ") and "\n" not in msg


def _pvcc_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    # run from another directory (paths in messages are relative to it)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(SRC.parent), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "ringvisor", "pvcc", *args], capture_output=True,
                          text=True, timeout=60, cwd=cwd, env=env)


def test_cli_reports_a_bad_instruction_in_one_line(tmp_path):
    good = tmp_path / "good.S"
    good.write_text("\t.text\n\tcli\n\tmovl %eax, %cr3\n")
    p = _pvcc_cli("-S", str(good), "-o", str(tmp_path / "good.s"), "--report", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines()[0].startswith("good.S:2: cli -> ")
    assert len(p.stdout.splitlines()) == 2
    bad = tmp_path / "bad.c"
    bad.write_text("void f(void)\n{\n    __asm__ volatile(\"nop\\n\\tclts\");\n}\n")
    p = _pvcc_cli("-c", str(bad), "-o", str(tmp_path / "bad.o"), cwd=tmp_path)
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in p.stderr
    assert re.match(r"ringvisor: bad\.c:3: clts: privileged instruction", lines[0]), lines[0]
    assert not (tmp_path / "bad.o").exists()


def test_an_output_pvcc_cannot_write_is_one_line(tmp_path):
    """-o naming a directory, or where no file can be made (under /proc), and a report
    file likewise: one line and status 2, nothing left beside it; a FIFO (a device) is
    written in place, never renamed over."""
    src = tmp_path / "x.S"
    src.write_text("\t.text\n\tcli\n")
    for args in (["-o", str(tmp_path)], ["-o", "/proc/x.s"],
                 ["-o", str(tmp_path / "x.s"), "--report-file", "/proc/r.txt"]):
        p = _pvcc_cli("-S", str(src), *args, cwd=tmp_path)
        lines = p.stderr.strip().splitlines()
        assert p.returncode == 2 and len(lines) == 1 and "Traceback" not in p.stderr, p.stderr
        assert lines[0].startswith("ringvisor: ") and "cannot write" in lines[0] or \
            "is a directory" in lines[0], lines[0]
    assert not list(tmp_path.glob("*.tmp"))
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    p = _pvcc_cli("-S", str(src), "-o", str(fifo), cwd=tmp_path)
    reader.join(60)
    assert p.returncode == 0, p.stderr
    assert stat.S_ISFIFO(fifo.stat().st_mode) and b"cli" in got[0]
    # build-guests into a file, or under /proc: refused before anything is compiled
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(SRC.parent), os.environ.get("PYTHONPATH", "")])}
    for out in (str(src), "/proc/guests"):
        p = subprocess.run([sys.executable, "-m", "ringvisor", "build-guests", out],
                           capture_output=True, text=True, timeout=60, cwd=tmp_path, env=env)
        assert p.returncode == 2 and p.stderr.count("\n") == 1, p.stderr
        assert p.stderr.startswith(f"ringvisor: build-guests {out}: cannot make"), p.stderr


# ------------------------------------------------- the para-virtual kernel

@pytest.fixture(scope="module")
def pv_kernel() -> tuple[Path, str]:
    # the shipped image and report: test_guest_kernel checks both are byte for byte what
    # pvcc and gcc make of the sources
    path = guest_build.image_path("kernel-pv")
    return path, path.with_name("kernel-pv" + guest_build.PV_REPORT_SUFFIX).read_text()


def _spans(path: Path):
    """(section, symbol, instructions) of every symbol in every executable
    section: decoding starts at symbols, so data in code sections (the
    Multiboot header) is not read as instructions."""
    with open(path, "rb") as f:
        elf = ELFFile(f)
        symtab = elf.get_section_by_name(".symtab")
        for sec in elf.iter_sections():
            if not sec["sh_flags"] & 0x4 or sec["sh_size"] == 0:
                continue
            lo, data = sec["sh_addr"], sec.data()
            starts = sorted({(s["st_value"], s.name) for s in symtab.iter_symbols()
                             if lo <= s["st_value"] < lo + len(data) and s.name
                             and s["st_info"]["type"] in ("STT_FUNC", "STT_NOTYPE")})
            for k, (addr, name) in enumerate(starts):
                end = starts[k + 1][0] if k + 1 < len(starts) else lo + len(data)
                if end > addr:
                    yield sec.name, name, decode(data[addr - lo:end - lo], addr)


def test_pv_kernel_has_no_privileged_instruction_left(pv_kernel):
    path, _ = pv_kernel
    problems, seen = [], Counter()
    for sec, sym, ins in _spans(path):
        for k, i in enumerate(ins):
            m = MNEMONIC[i.mnemonic]
            prev = fmt(ins[k - 1]) if k else ""
            if ix.OpCodeInfo(i.code).must_be_cpl0 or m in ("CLI", "STI", "IRET", "IRETD"):
                problems.append(f"{sym}+{i.ip:#x}: {fmt(i)}")
            elif m == "POPFD":
                # only inside a popf rewrite, right after the mask is set from IF
                seen[m] += 1
                if not re.fullmatch(rf"movb \$[01],0x{MASK:X}", prev):
                    problems.append(f"{sym}+{i.ip:#x}: popf after {prev!r}")
            elif m == "PUSHFD":
                # only inside a pushf rewrite, which then rewrites the pushed IF
                seen[m] += 1
                nxt = [fmt(x) for x in ins[k + 1:k + 8]]
                if not any(f"0x{MASK:X}" in x for x in nxt) or not any(x.startswith("xor %eax")
                                                                        for x in nxt):
                    problems.append(f"{sym}+{i.ip:#x}: pushf not followed by the IF rewrite")
            elif m == "RETF":
                seen[m] += 1
                if not re.fullmatch(r"orl \$1,(\d+)\(%esp\)", prev):
                    problems.append(f"{sym}+{i.ip:#x}: lret after {prev!r}")
            elif m == "MOV" and i.op0_kind == ix.OpKind.REGISTER and i.op0_register == ix.Register.SS:
                problems.append(f"{sym}+{i.ip:#x}: {fmt(i)}")
            elif m == "POP" and i.op0_kind == ix.OpKind.REGISTER and i.op0_register == ix.Register.SS:
                seen["POP SS"] += 1
                if not any(fmt(x) == "or $1,%eax" for x in ins[max(0, k - 4):k]):
                    problems.append(f"{sym}+{i.ip:#x}: pop %ss without RPL 1")
    assert not problems, "\n".join(problems)
    assert seen["POPFD"] and seen["PUSHFD"] and seen["RETF"] == 1 and seen["POP SS"] == 1


def _native_sites() -> Counter:
    """The privileged and sensitive instructions of the native kernel,
    counted in gcc's own assembly output and the preprocessed .S files
    (independently of pvcc's parser); port I/O only in C (in assembly it
    stays, and traps)."""
    pattern = re.compile(r"^\s*(cli|sti|hlt|pushfl?|popfl?|iretl?|lgdt|lidt|ltrw?|invlpg|lret)\b"
                         r"|^\s*movl?\s+%cr\d|^\s*movl?\s+%\w+,\s*%cr\d|^\s*movw?\s+\S+,\s*%ss\s*$")
    counts: Counter = Counter()
    flags = [*CFLAGS, "-O2", *guest_build.EXTRA_CFLAGS, f"-I{SRC / 'include'}",
             f"-I{SRC / 'kernel'}"]
    for src in sorted((SRC / "kernel").glob("*.[cS]")):
        mode = "-S" if src.suffix == ".c" else "-E"
        text = subprocess.run(["gcc", *flags, mode, str(src), "-o", "-"], check=True,
                              capture_output=True, text=True).stdout
        lines = [re.sub(r"^([\w.]+:\s*)+", "", ln.split("#")[0].strip())
                 for ln in text.splitlines()]
        for k, line in enumerate(lines):
            if src.suffix == ".c" and re.match(r"(in|out)[bwl]\s", line):
                counts[line.split()[0]] += 1       # port I/O in C: a call into the runtime
                continue
            m = pattern.match(line)
            if not m:
                continue
            word = line.split()[0]
            if word == "sti" and k + 1 < len(lines) and lines[k + 1] == "hlt":
                counts["sti; hlt"] += 1
            elif word == "hlt" and k and lines[k - 1] == "sti":
                continue
            elif "%cr" in line:
                counts["mov cr"] += 1
            elif line.endswith("%ss"):
                counts["mov ss"] += 1
            else:
                counts[word.rstrip("lw") if word not in ("ltrw",) else "ltr"] += 1
    return counts


def test_pv_kernel_report_lists_every_site(pv_kernel):
    _, report = pv_kernel
    lines = report.splitlines()
    got: Counter = Counter()
    for line in lines:
        m = re.match(r"(\S+):(\d+): (.+?) -> ", line)
        assert m, line
        file, instr = m.group(1), m.group(3)
        assert file.startswith("guests/kernel/") or file.startswith("guests/pv/"), line
        word = instr.split()[0]
        if instr == "sti; hlt":
            got["sti; hlt"] += 1
        elif "%cr" in instr:
            got["mov cr"] += 1
        elif instr.endswith("%ss"):
            got["mov ss"] += 1
        else:
            got[{"pushfl": "pushf", "popfl": "popf", "ltrw": "ltr"}.get(word, word)] += 1
    assert got == _native_sites()
    # a few sites everybody knows by heart
    assert any(re.match(r"guests/kernel/desc\.c:\d+: lgdt .* -> call pv_lgdt", ln) for ln in lines)
    assert any(re.match(r"guests/kernel/trap\.c:\d+: lidt .* -> call pv_lidt", ln) for ln in lines)
    assert any(re.match(r"guests/kernel/entry\.S:\d+: iret -> hypercall iret", ln) for ln in lines)
    assert any(re.match(r"guests/kernel/boot\.S:\d+: movl %edx, %cr3 -> mmuext_op", ln)
               for ln in lines)
    assert any(re.match(r"guests/kernel/proc\.c:\d+: sti; hlt -> sched_op", ln) for ln in lines)


def test_pv_kernel_is_a_multiboot_image_with_the_runtime(pv_kernel):
    path, _ = pv_kernel
    data = path.read_bytes()
    assert data[:4] == b"\x7fELF"
    with open(path, "rb") as f:
        elf = ELFFile(f)
        names = {s.name for s in elf.get_section_by_name(".symtab").iter_symbols()}
        assert not any(s.name.startswith(".debug") for s in elf.iter_sections())
    assert {"pv_lgdt", "pv_lidt", "pv_upcall", "pv_failsafe", "_start", "kmain"} <= names


def test_shipped_pv_kernel_and_report_exist():
    path = guest_build.image_path("kernel-pv")
    report = path.with_name("kernel-pv" + guest_build.PV_REPORT_SUFFIX)
    assert path.is_file() and report.is_file()
    assert "pv_lgdt" in report.read_text()
