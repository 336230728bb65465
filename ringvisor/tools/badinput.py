"""A seeded mutation fuzzer for everything a user hands ringvisor: saved images, configs,
kernels and command lines.

The project's promise on bad input is one clear line on stderr and exit status 2,
never a Python traceback, and a saved file never left half-written.  This tool takes
valid inputs that ringvisor itself produces or ships -- a saved VM (``run --stop-at
--save``), a mapped one (``--mapped``), a recording (``--record``), a snapshot node
(``snapshot-export``), xl.cfg files (``examples/xen`` and the syntax variants of
xl.cfg(5)), the bundled Multiboot ELF kernels, and command lines -- mutates them
(truncate, flip, splice, grow; and, knowing each format, forge the fields its
checksums do not guard: re-checksummed sections with changed versions, names, lengths
and JSON values; ELF header and program-header fields) and runs the real command on
each, in this process (``cli.main(argv)``); the mutations are ``mutate.py``.  A case fails when:

- anything escapes as an exception (a traceback a user would see);
- the exit status is not one the command documents (2: bad input; 3: triple fault;
  4: ``--max-instructions`` ran out; 0; a guest's isa-debug-exit status, odd);
- status 2 comes with anything but exactly one line on stderr starting ``ringvisor``;
- a file the command was asked to save is left changed after a refusal (status 2), or
  a temporary file is left beside it.

Hangs are bounded by the guest's instruction budget (every run gets
``--max-instructions``); the many-seeds command also has a wall-clock alarm per case,
reported as a hang.  Deterministic: the same seed gives the same cases.

    python -m ringvisor.tools.badinput --seeds 2000              # every target
    python -m ringvisor.tools.badinput --target elf --seeds 500 --first 1000
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import random
import signal
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from .mutate import mutate_argv, mutate_bytes, mutate_config, mutate_elf, mutate_image

BUDGET = "3000"                          # guest instructions per run: the hang bound
OK_STATUSES = {0, 2, 3, 4}               # plus odd guest exit statuses (isa-debug-exit)


# -- the corpus: valid inputs, made by ringvisor itself ------------------------------------
CONFIG_VARIANTS = [
    # xl.cfg(5): quoting styles, lists over lines, comments, ';', empty values, suffixes
    'name = "a"\nkernel = "kernel-pv"\nmemory = 16\n',
    "name='b'; kernel='kernel-pv'; memory=16; vcpus=2 # two\n",
    'name = "c"\nkernel = "kernel-pv"\nextra = "run=syscall"\nroot = "/dev/xvda1"\n',
    'name="d"\nkernel="kernel-pv"\nmemory=32\nmaxmem=64\ncpus=["0","1"]\nvcpus=2\n',
    'name = "e"\nkernel = "kernel-pv"\ndisk = [ \'/tmp/d.img,raw,xvda,rw\',\n'
    "         'format=raw, vdev=xvdb, access=ro, target=/tmp/e.img' ,\n]\n",
    'name = "f"\nkernel = "kernel-pv"\non_crash = "preserve"\non_reboot="restart"\n'
    'cpu_weight = 512\ncap = 25\nvif = []\npci = []\n',
    'name = "g"\ntype = "bt"\nkernel = "kernel"\ndisk = ["phy:/tmp/g.img,xvda,w"]\n',
    'name = "h"\nbuilder = "generic"\nkernel = "kernel-pv"\nseclabel = "system_u:system_r:domU_t"\n'
    'uuid = "6f3b4c1e-0000-4000-8000-000000000001"\n',
    '# only a comment\nname = "i" # trailing\n\nkernel = "kernel-pv"\ncmdline = ""\n',
]
NEVER = {"-S", "-s", "--gdb", "--incoming", "--migrate-to", "--web", "--postcopy"}


@dataclass
class Corpus:
    dir: Path
    image: bytes          # a saved VM
    mapped: bytes         # a mapped image (--save --mapped)
    recording: bytes      # run --record
    node: bytes           # snapshot-export of a snapshot-tree node
    elves: list[bytes]    # bundled Multiboot ELF kernels
    configs: list[str]
    monitored: list[bytes]  # VMs saved under the monitors (MONITORED)
    roms: list[bytes] = field(default_factory=list)   # BIOS ROMs (``tiny_rom``)
    x64_object: bytes = b""  # an x86-64 relocatable object (pvcc: ld -m elf_i386 refuses it)
    _migration: object = None

    def migration(self):
        """The recorded migration stream and its reference (made on first use)."""
        if self._migration is None:
            from .badpeers import MigrationCorpus
            self._migration = MigrationCorpus()
        return self._migration


def tiny_rom() -> bytes:
    """A 64 KiB ROM: at the reset vector (F000:FFF0) a far jump to F000:0000, which prints
    'k' on COM1 and halts (real-mode code, by hand: mov dx,0x3f8; mov al,'k'; out dx,al;
    cli; hlt)."""
    rom = bytearray(b"\xff" * 0x10000)
    code = bytes.fromhex("baf803b06beefaf4")
    rom[:len(code)] = code
    rom[0xFFF0:0xFFF5] = bytes.fromhex("ea000000f0")
    return bytes(rom)


def _quiet(fn, *a):
    with contextlib.redirect_stdout(_Sink()), contextlib.redirect_stderr(io.StringIO()):
        return fn(*a)


class _Sink(io.TextIOWrapper):
    """A text stream with a ``buffer`` (the serial console writes bytes to stdout)."""

    def __init__(self) -> None:
        super().__init__(io.BytesIO(), encoding="utf-8", errors="replace")

    def text(self) -> str:
        self.flush()
        return self.buffer.getvalue().decode("utf-8", "replace")


MONITORED = [("paravirt", "kernel-pv"), ("bt", "kernel"), ("hvm", "kernel"),
             ("trapemu", "kernel")]


def make_corpus(directory: Path, monitors: int = len(MONITORED)) -> Corpus:
    from ringvisor.cli import main
    from ringvisor.guests.build import image_path
    d = Path(directory)
    run = ["run", "bench-sieve", "--mem", "8", "--serial", "null", "--pace", "off"]
    _quiet(main, run + ["--stop-at", "30000", "--save", str(d / "vm.rv")])
    monitored = []           # the monitors' state sections: much of what a forgery can reach
    for mode, kernel in MONITORED[:monitors]:
        p = d / f"{mode}.rv"
        _quiet(main, ["run", kernel, "--mode", mode, "--mem", "8", "--serial", "null", "--pace",
                      "off", "--stop-at", "60000", "--save", str(p)])
        monitored.append(p.read_bytes())
    _quiet(main, run + ["--stop-at", "30000", "--save", str(d / "mapped.rv"), "--mapped"])
    _quiet(main, run + ["--record", str(d / "r.rec"), "--max-instructions", "40000",
                        "--checkpoint-every", "20000"])
    store = str(d / "store")
    _quiet(main, run + ["--stop-at", "30000", "--snapshot", "n", "--store", store])
    _quiet(main, ["snapshot-export", "n", str(d / "node.rv"), "--store", store])
    examples = Path(__file__).resolve().parents[2] / "examples" / "xen"
    configs = [p.read_text() for p in sorted(examples.glob("*.cfg"))] + CONFIG_VARIANTS
    elves = [Path(image_path(n)).read_bytes() for n in ("bench-sieve", "probe")]
    return Corpus(d, *(Path(d / n).read_bytes() for n in ("vm.rv", "mapped.rv", "r.rec",
                                                          "node.rv")), elves, configs, monitored,
                  [tiny_rom()], _x64_object(d))


def _x64_object(d: Path) -> bytes:
    """``extern int y; int f(void) { return y; }`` built for x86-64 (R_X86_64_PC32)."""
    import subprocess
    (d / "x64.c").write_text("extern int y; int f(void) { return y; }\n")
    try:
        subprocess.run(["gcc", "-m64", "-c", str(d / "x64.c"), "-o", str(d / "x64.o")],
                       check=True, capture_output=True)
        return (d / "x64.o").read_bytes()
    except (OSError, subprocess.CalledProcessError):
        return b"\x7fELF\x02\x01\x01" + bytes(57)      # (an ELF64 header, no more)


ARGV_TEMPLATES = [
    ["run", "{elf}", "--mem", "8", "--max-instructions", BUDGET],
    ["run", "bench-sieve", "--mem", "8", "--mode", "bt", "--max-instructions", BUDGET],
    ["run", "bench-sieve", "--mem", "8", "--append", "x=1", "--module", "{cfg} a b",
     "--max-instructions", BUDGET],
    ["run", "bench-sieve", "--mem", "8", "--stop-at", "2000", "--save", "{out}"],
    ["run", "bench-sieve", "--mem", "8", "--stop-at", "2000", "--snapshot", "s",
     "--store", "{store}"],
    ["run", "bench-sieve", "--mem", "8", "--record", "{out}", "--checkpoint-every", "1000",
     "--max-instructions", BUDGET],
    ["run", "bench-sieve", "--mem", "8", "--trace", "{out}", "--stats", "--json",
     "--max-instructions", "200"],
    ["run", "bench-sieve", "--mem", "8", "--disk", "{cfg}", "--disk-ro",
     "--max-instructions", BUDGET],
    ["restore", "{image}", "--max-instructions", BUDGET, "--engine", "interp"],
    ["restore", "{image}", "--lazy", "--max-instructions", BUDGET],
    ["replay", "{recording}", "--goto", "30000", "--save", "{out}"],
    ["clone", "{image}", "{out}"],
    ["snapshot-create", "x", "--from", "{image}", "--store", "{store}"],
    ["snapshot-import", "{image}", "y", "--store", "{store}"],
    ["snapshot-export", "n", "{out}", "--store", "{store}"],
    ["snapshot-list", "--store", "{store}"],
    ["snapshot-diff", "n", "n", "--store", "{store}"],
    ["snapshot-current", "n", "--store", "{store}"],
    ["snapshot-delete", "zz", "--store", "{store}"],
    ["snapshot-revert", "n", "--max-instructions", BUDGET, "--store", "{store}"],
    ["pvabi-header", "--output", "{out}"],
]


# -- running a case --------------------------------------------------------------------------
@dataclass
class Finding:
    target: str
    seed: int
    what: str
    argv: list[str]
    detail: str

    def __str__(self) -> str:
        return (f"[{self.target} seed {self.seed}] {self.what}: ringvisor "
                f"{' '.join(self.argv)}\n    {self.detail}")


class Hang(Exception):
    pass


def run_cli(argv: list[str], alarm: int = 0) -> tuple[int | None, str, str | None]:
    """(exit status, stderr, traceback or None), ringvisor's ``main`` run in this process."""
    import traceback
    from ringvisor.cli import main
    out, err = _Sink(), io.StringIO()
    tb = None
    if alarm:
        def on_alarm(*_):
            raise Hang(f"no answer after {alarm} s")
        old = signal.signal(signal.SIGALRM, on_alarm)
        signal.alarm(alarm)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                status = main(argv)
            except SystemExit as e:
                status = e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    except BaseException:                               # noqa: BLE001 -- the finding itself
        status, tb = None, traceback.format_exc(limit=-6)
    finally:
        if alarm:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, old)
    return status, err.getvalue(), tb


def _listing(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in d.iterdir() if p.is_file()}


def check_cli(target: str, seed: int, argv: list[str], work: Path, saved: Path | None,
              alarm: int = 0, refusals=(2,)) -> Finding | None:
    """``refusals``: the exit statuses that must come with one line (xl's refusals are 1)."""
    before = _listing(work)
    cwd = os.getcwd()
    os.chdir(work)                   # a mutated relative path lands in the case's directory
    try:
        status, err, tb = run_cli(argv, alarm)
    finally:
        os.chdir(cwd)

    def found(what, detail):
        return Finding(target, seed, what, argv, detail)

    if tb is not None:
        return found("hang" if "Hang:" in tb else "traceback", tb.strip().splitlines()[-1]
                     + "\n    " + tb.strip().replace("\n", "\n    "))
    if "Traceback (most recent call last)" in err:
        return found("traceback on stderr", err.strip()[-600:])
    if status not in OK_STATUSES and not (isinstance(status, int) and status & 1):
        return found(f"exit status {status}", err.strip()[-300:])
    if status in refusals:
        lines = err.strip("\n").split("\n")
        if lines[-1].endswith(" more lines above)") and len(lines) - 1 <= 40:
            lines = lines[-1:]       # a compiler's own diagnostics, then ringvisor's line
        if len(lines) != 1 or not lines[0].startswith("ringvisor") or not lines[0].strip():
            return found("not one line for bad input", repr(err[:400]))
    after = _listing(work)
    leftovers = [n for n in after if n not in before and n.endswith(".tmp")]
    if leftovers:
        return found("temporary file left behind", ", ".join(leftovers))
    # (a run that stops on its own -- a budget, a triple fault -- has written its --trace)
    if status == 2 and saved is not None and before.get(saved.name) != after.get(saved.name):
        return found("saved file changed by a failed command", str(saved))
    return None


def check_config(seed: int, text: str) -> Finding | None:
    import traceback
    from ringvisor.toolstack import config
    try:
        config.parse(text, "f.cfg")
    except config.ConfigFileError as e:
        msg = str(e)
        if "\n" in msg or not msg.startswith("f.cfg"):
            return Finding("config", seed, "not one line naming the file", [], repr(msg[:300]))
    except Exception:                                    # noqa: BLE001 -- the finding itself
        return Finding("config", seed, "traceback", [], repr(text[:300]) + "\n    "
                       + traceback.format_exc(limit=-4).strip().replace("\n", "\n    "))
    return None


class XenHost:
    """A hypervisor with Domain 0 and its toolstack in this process (as ``ringvisor xen``
    runs them), and one DomU's ``xl save`` stream: the ``domain`` target restores mutated
    streams (``xl restore``) and creates domains from mutated configurations (``xl
    create``), and checks that every failure is one line and leaves no domain and no
    frame behind, and that a restored domain runs without bringing the hypervisor down."""

    def __init__(self, directory: Path) -> None:
        from ringvisor.guests.build import image_path
        from ringvisor.hypervisor.core import Hypervisor
        from ringvisor.hypervisor.interface import HypercallInterface
        from ringvisor.toolstack.config import DomainConfig
        from ringvisor.toolstack.xl import Toolstack
        self.hv = hv = Hypervisor(96)
        hv.build_dom0(image_path("kernel-pv").read_bytes(), "", 16, "kernel-pv")
        hv.start()
        self.ts = Toolstack(HypercallInterface(hv), directory)
        self.ts.create(DomainConfig(name="a", kernel="kernel-pv", cmdline="run=syscall:5",
                                    memory=8, on_poweroff="preserve"))
        self.run(100_000)
        got: list = []
        self.ts.save("a", lambda data, err: (got.append(data or err), "destroy")[1])
        hv.run_until(lambda: bool(got), 4_000_000, step=20_000)
        if not isinstance(got[0], bytes):
            raise RuntimeError(f"xl save failed: {got[0]}")
        self.stream = got[0]
        self.settle()
        self.free = hv.frames.nr_free

    def run(self, budget: int) -> None:
        """Let the domains run for ``budget`` instructions, or until nothing can wake one."""
        from ringvisor.hypervisor.stall import Stalled
        try:
            self.hv.run_until(lambda: False, budget, step=20_000)
        except Stalled:
            pass

    def settle(self) -> None:
        self.run(40_000)

    def case(self, seed: int, what: str, action) -> Finding | None:
        import traceback
        from ringvisor.toolstack.config import ConfigFileError
        from ringvisor.toolstack.xl import XlError
        hv, ts = self.hv, self.ts
        found = None
        try:
            try:
                action()
            except (XlError, ConfigFileError) as e:
                if "\n" in str(e) or not str(e).strip():
                    found = Finding("domain", seed, f"{what}: not one line", [], repr(str(e)))
            else:
                self.run(60_000)                                   # a forged domain runs
                for m in [m for m in ts.managed.values() if m.domid != 0]:
                    ts.destroy(m.name)        # (on_crash = "restart" gives it a new id)
            self.settle()
        except Exception:                               # noqa: BLE001 -- the finding itself
            tb = traceback.format_exc(limit=-6).strip()
            found = Finding("domain", seed, f"{what}: traceback", [],
                            tb.splitlines()[-1] + "\n    " + tb.replace("\n", "\n    "))
        left = [d for d in hv.domains if d != 0]
        if found is None and (left or hv.frames.nr_free != self.free):
            found = Finding("domain", seed, f"{what}: left behind", [],
                            f"domains {left}, {hv.frames.nr_free} free frames, not {self.free}")
        if left or hv.frames.nr_free != self.free:       # the next case starts clean
            for d in left:
                ts.managed.pop(d, None)
                ts.xc.destroy_quietly(d)
            self.settle()
            self.free = hv.frames.nr_free
        return found


def run_domain_case(corpus: Corpus, host: XenHost, seed: int) -> Finding | None:
    from ringvisor.toolstack import config
    rng = random.Random(f"domain:{seed}")
    if rng.random() < 0.7:
        data = mutate_image(rng, host.stream, [corpus.image])
        return host.case(seed, "xl restore", lambda: host.ts.restore(data, "f.save",
                                                                     rng.random() < 0.3))
    text = mutate_config(rng, rng.choice(corpus.configs), corpus.configs)
    return host.case(seed, "xl create", lambda: host.ts.create(config.parse(text, "f.cfg"),
                                                               rng.random() < 0.3))


TARGETS = ("config", "elf", "image", "mapped", "recording", "node", "argv", "domain",
           "migration", "xl", "bios", "pvcc")


def run_case(corpus: Corpus, target: str, seed: int, alarm: int = 0) -> Finding | None:
    rng = random.Random(f"{target}:{seed}")
    if target == "config":
        return check_config(seed, mutate_config(rng, rng.choice(corpus.configs), corpus.configs))
    if target == "migration":        # both ends: a hostile source, then a hostile destination
        from .badpeers import run_destination_case, run_source_case
        return (run_destination_case(corpus.migration(), seed)
                or run_source_case(corpus.migration(), seed))
    work = Path(tempfile.mkdtemp(prefix="case.", dir=corpus.dir))
    try:
        return _run_file_case(corpus, target, seed, rng, work, alarm)
    finally:
        import shutil
        shutil.rmtree(work, ignore_errors=True)


def _run_file_case(corpus, target, seed, rng, work: Path, alarm) -> Finding | None:
    blobs = [corpus.image, corpus.recording, corpus.node] + corpus.elves
    inp = work / "input"
    out = work / "saved.rv"
    out.write_bytes(b"a file the user saved before\n")
    budget = ["--max-instructions", BUDGET, "--serial", "null", "--pace", "off"]
    if target == "elf":
        inp.write_bytes(mutate_elf(rng, rng.choice(corpus.elves), blobs))
        argv = ["run", str(inp), "--mem", "8"] + budget
        if rng.random() < 0.2:
            argv[3:3] = ["--mode", rng.choice(["bt", "trapemu", "hvm"])]
    elif target in ("image", "mapped", "node"):
        src = {"image": rng.choice([corpus.image] + corpus.monitored), "mapped": corpus.mapped,
               "node": corpus.node}[target]
        inp.write_bytes(mutate_image(rng, src, blobs))
        argv = rng.choice([["restore", str(inp)] + budget,
                           ["restore", str(inp), "--lazy"] + budget,
                           ["clone", str(inp), str(out)],
                           ["snapshot-create", "x", "--from", str(inp), "--store",
                            str(work / "store")]])
        if target == "mapped" and rng.random() < 0.5:
            argv = ["restore", str(inp), "--lazy"] + budget
    elif target == "xl":
        from .badpeers import xl_case
        (work / "image.rv").write_bytes(corpus.image)
        argv, host = xl_case(seed, work)
        try:
            return check_cli(target, seed, argv, work, out, alarm, refusals=(1, 2))
        finally:
            if host is not None:
                host.join(1)
                if host.is_alive():          # (never asked: a refusal before connecting)
                    host.release()
                host.join(30)
    elif target == "bios":
        argv = bios_case(rng, work, inp, corpus)
    elif target == "pvcc":
        argv = pvcc_case(rng, work, out, corpus.x64_object)
    elif target == "recording":
        inp.write_bytes(mutate_image(rng, corpus.recording, blobs))
        argv = rng.choice([["replay", str(inp)], ["replay", str(inp), "--goto", "25000",
                                                   "--save", str(out)]])
    else:
        template = rng.choice(ARGV_TEMPLATES)
        _copy_store(corpus, work / "store")
        (work / "image.rv").write_bytes(corpus.image)
        (work / "rec.rec").write_bytes(corpus.recording)
        (work / "cfg").write_bytes(b"\0" * 1024)
        elf = work / "k.elf"
        elf.write_bytes(corpus.elves[0])
        subst = {"{elf}": str(elf), "{out}": str(out), "{store}": str(work / "store"),
                 "{image}": str(work / "image.rv"), "{recording}": str(work / "rec.rec"),
                 "{cfg}": str(work / "cfg")}
        argv = [subst.get(a, a).replace("{cfg}", str(work / "cfg")) for a in template]
        argv = mutate_argv(rng, argv)
        argv = [a for a in argv if a not in NEVER and not a.startswith(("tcp:", "unix:"))]
        if argv and argv[0] in ("run", "restore", "snapshot-revert") and "--stop-at" not in argv:
            argv += ["--max-instructions", BUDGET]
        if argv and argv[0] in ("run", "restore", "snapshot-revert"):
            argv += ["--serial", "null", "--pace", "off"]
    return check_cli(target, seed, argv, work, out, alarm)


def bios_case(rng: random.Random, work: Path, inp: Path, corpus: Corpus) -> list[str]:
    """run --bios: ROMs empty, oversized, of a size no ROM has, garbage, a directory,
    missing, a device that never ends; --post-log where it cannot be written."""
    from ringvisor.hw.boot.rom import ROM_MAX, ROM_UNIT
    r = rng.random()
    rom = str(inp)
    if r < 0.1:
        inp.write_bytes(b"")
    elif r < 0.2:
        with open(inp, "wb") as f:                  # sparse: no 16 MiB written
            f.truncate(ROM_MAX + rng.choice([ROM_UNIT, 1, 1 << 20]))
    elif r < 0.3:
        inp.write_bytes(rng.randbytes(rng.choice([1, 4095, ROM_UNIT - 1, ROM_UNIT + 1])))
    elif r < 0.4:
        rom = rng.choice([str(work), str(work / "missing.rom"), "/dev/zero", "/dev/null", ""])
    else:                 # a ROM's size: garbage, or a real ROM's code mutated
        base = corpus.roms[rng.randrange(len(corpus.roms))] if corpus.roms and \
            rng.random() < 0.6 else rng.randbytes(ROM_UNIT)
        data = mutate_bytes(rng, base, corpus.roms)
        inp.write_bytes(data[:len(base)].ljust(len(base), b"\xff"))
    argv = ["run", "--bios", rom, "--mem", "8", "--max-instructions", "500",
            "--serial", "null", "--pace", "off"]
    if rng.random() < 0.3:
        argv += ["--mode", rng.choice(["native", "hvm", "bt", "kvm"])]
    if rng.random() < 0.3:
        argv += ["--post-log", rng.choice([str(work / "saved.rv"), str(work),
                                           str(work / "no" / "log"), "", "x" * 300])]
    return mutate_argv(rng, argv) if rng.random() < 0.2 else argv


PVCC_SOURCES = {
    "ok.c": '__attribute__((section(".multiboot"), used)) static const unsigned mb[3] = '
            '{0x1BADB002, 0, -(0x1BADB002)};\nvoid _start(void) { for (;;) '
            'asm volatile("hlt"); }\n',
    "nomb.c": "void _start(void) { for (;;); }\n",
    "bad.c": "int f( { return 0 }\n",
    "priv.s": ".text\n.globl _start\n_start: cli\n lgdt (%eax)\n mov %eax, %cr0\n clts\n hlt\n",
    "macro.S": "#define X(r) mov r, %cr3\n.text\n.globl _start\n_start: X(%eax)\n"
               ".macro m a\n mov \\a, %ss\n.endm\n m %ax\n",
    "bad.s": ".text\n foo %eax, %ebx\n .byte 1,\n",
    "bin.c": "\x00\xff\xfe garbage \x80\n",
    "x.txt": "not a source\n",
}


def pvcc_case(rng: random.Random, work: Path, out: Path, x64_object: bytes) -> list[str]:
    """ringvisor pvcc and pvabi-header: missing flags and values, linker scripts that
    are missing, garbage or directories, sources that do not compile, an object of
    another machine (x86-64 relocations ld -m elf_i386 refuses), huge inputs, outputs
    that cannot be written."""
    for name, text in PVCC_SOURCES.items():
        (work / name).write_bytes(text.encode("latin-1"))
    (work / "good.ld").write_text("ENTRY(_start)\nSECTIONS { . = 0x100000; "
                                  ".text : { *(.multiboot) *(.text*) } }\n")
    (work / "bad.ld").write_text("SECTIONS { .text : { *(.text) \n")
    (work / "x64.o").write_bytes(x64_object)
    (work / "cut.o").write_bytes(x64_object[:rng.randrange(1, 200)])
    if rng.random() < 0.15:   # a huge input: many megabytes of assembly
        (work / "huge.s").write_text(".text\n" + " nop\n" * rng.choice([200_000, 600_000]))
    if rng.random() < 0.1:
        return ["pvabi-header", "--output", rng.choice([str(out), str(work), str(work / "n" / "h.h"),
                                                        "-", "", str(work / "ok.c") + "/x"])]
    srcs = rng.sample(sorted(p.name for p in work.iterdir() if p.suffix in
                             (".c", ".s", ".S", ".o", ".txt")), rng.randint(1, 2))
    argv = ["pvcc", *[str(work / s) for s in srcs]]
    for _ in range(rng.randint(0, 3)):
        argv += rng.choice([["-c"], ["-S"], ["-o", str(out)], ["-o", str(work)],
                            ["-o", str(work / "new" / "k.elf")], ["-T", str(work / "good.ld")],
                            ["-T", str(work / "bad.ld")], ["-T", str(work)], ["-T"], ["-o"],
                            ["-I"], ["-D"], ["-Tmissing.ld"], ["--no-runtime"], ["--report"],
                            ["--report-file", str(out)], ["--report-file", str(work)],
                            ["-O7"], ["-mfoo"], ["-x", "c"], ["-I", str(work / "none")],
                            ["-DX=1"], ["--report-file"]])
    return mutate_argv(rng, argv) if rng.random() < 0.2 else argv


def _copy_store(corpus: Corpus, dest: Path) -> None:
    import shutil
    shutil.copytree(corpus.dir / "store", dest, dirs_exist_ok=True)


def fuzz(targets, seeds: int, first: int = 0, alarm: int = 0, directory: Path | None = None,
         on_finding=None) -> list[Finding]:
    own = directory is None
    d = Path(tempfile.mkdtemp(prefix="rv-badinput.")) if own else Path(directory)
    try:
        corpus = make_corpus(d)
        host = XenHost(d) if "domain" in targets else None
        findings = []
        for target in targets:
            for seed in range(first, first + seeds):
                if target == "domain":
                    f = run_domain_case(corpus, host, seed)
                else:
                    f = run_case(corpus, target, seed, alarm)
                if f is not None:
                    findings.append(f)
                    if on_finding:
                        on_finding(f)
        return findings
    finally:
        if own:
            import shutil
            shutil.rmtree(d, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ringvisor.tools.badinput",
                                description="Mutation-fuzz ringvisor's inputs (see the module).")
    p.add_argument("--target", action="append", choices=TARGETS,
                   help="what to fuzz (repeatable; default: all)")
    p.add_argument("--seeds", type=int, default=200, help="cases per target (default 200)")
    p.add_argument("--first", type=int, default=0, help="the first seed (default 0)")
    p.add_argument("--alarm", type=int, default=60,
                   help="report a case still running after this many seconds as a hang")
    args = p.parse_args(argv)
    os.environ.setdefault("RINGVISOR_CACHE_DIR", "off")
    fd = os.open(os.devnull, os.O_RDONLY)          # no case may wait on a terminal
    os.dup2(fd, 0)
    found = fuzz(args.target or TARGETS, args.seeds, args.first, args.alarm,
                 on_finding=lambda f: print(f, flush=True))
    print(f"{len(found)} finding(s) in {args.seeds} seed(s) of {', '.join(args.target or TARGETS)}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
