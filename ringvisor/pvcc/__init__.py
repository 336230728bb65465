"""pvcc: para-virtualization with compiler support.

``ringvisor pvcc`` is a gcc wrapper that turns an unmodified native guest
kernel into a para-virtual one: it compiles every C file to assembly
(``gcc -S``) and runs every ``.S`` file through the preprocessor only
(``gcc -E``), rewrites each privileged or sensitive instruction in that
assembly text into the Xen-style sequence of docs/paravirt.md (a store to the
shared-info page, a hypercall, or a call into the PV runtime), assembles the
result and links it with the PV runtime (``guests/pv``).  Every rewritten
site is reported.

The rewriter works on AT&T assembly text, one statement at a time.  Rules of
the replacement sequences:

* They preserve every register the original instruction did not write, and
  leave the stack pointer as the original would.
* Sites from assembly sources (``.S``/``.s``) also preserve EFLAGS: where a
  sequence needs an ALU instruction, the arithmetic flags are saved with
  ``lahf``/``seto`` around it and restored with ``addb $0x7f``/``sahf`` (no
  ``popf``: at ring 1 that is the instruction being removed).  Sites from C
  (inline ``asm``) do not: gcc treats every x86 ``asm`` statement as
  clobbering the flags, so no flag value is live across one -- pvcc assumes
  no ``asm`` template keeps a flag live *across* its own privileged
  instruction.
* They are position independent and call nothing in ``.text`` -- code in
  ``boot.S`` runs at physical addresses before paging is on -- except
  ``lgdt``/``lidt`` and ``mov`` to ``%cr3`` from C, which become calls to the
  runtime's ``pv_lgdt``/``pv_lidt``/``pv_write_cr3`` (C runs in the higher
  half).  ``lgdt``/``lidt`` in an assembly source are refused; ``mov`` to
  ``%cr3`` there stays the hypercall, which crashes the domain if refused
  (``boot.S`` loads its first directory before any GDT is the hypervisor's).
* Local labels are numeric (``98761:`` ...), so sequences also work inside
  ``.macro``/``.irp`` bodies and never capture the source's own ``1f``/``1b``.

Any other instruction that faults at ring 1 (``lmsw``, ``clts``, ``wbinvd``,
``rdmsr``, ``mov`` to a debug register, ...; iced-x86's list of CPL-0
instructions) is an error naming ``file:line``.

The package, bottom up: ``operands`` (AT&T operands and registers),
``sequences`` (the replacement sequences), ``rewriter`` (the assembly text
rewriter and its reports); this module is the compiler driver (gcc, the
rewriter, gas, ld) and the ``ringvisor pvcc`` command line.
"""

from __future__ import annotations

import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from ringvisor.errors import ImageError
from ringvisor.guests.toolchain import CFLAGS, LDFLAGS, BuildError, Target, _run, write_atomic
from ringvisor.hw.boot.multiboot import check_header

from .rewriter import Site, rewrite_asm

RUNTIME_DIR = "pv"          # under the guest source directory


# ---------------------------------------------------------------------------
# Compiling and linking
# ---------------------------------------------------------------------------


@dataclass
class Report:
    """Every site pvcc rewrote in one build."""

    sites: list[Site] = field(default_factory=list)

    def text(self) -> str:
        return "".join(f"{s}\n" for s in self.sites)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for s in self.sites:
            key = s.instruction.split()[0] if ";" not in s.instruction else "sti; hlt"
            out[key] = out.get(key, 0) + 1
        return out


def _tool(name: str, default: str) -> str:
    return os.environ.get(name, default)


def runtime_sources(source_dir: Path) -> list[Path]:
    d = source_dir / RUNTIME_DIR
    return sorted(d.glob("*.S")) + sorted(d.glob("*.c"))


def compile_to_asm(src: Path, out: Path, target: Target, root: Path | None = None) -> list[Site]:
    """``src`` (.c, .S or .s) -> rewritten assembly in ``out``; the sites."""
    gcc = _tool("RINGVISOR_CC", "gcc")
    flags = [*CFLAGS, target.optimize, *target.cflags, *[f"-I{d}" for d in target.include_dirs]]
    raw = out.with_name(out.name + ".orig")
    if src.suffix == ".c":
        # -g only for the .loc lines that tie an instruction to its C line; it
        # changes no code, and the link strips the debug sections
        _run([gcc, *flags, "-g", "-S", str(src), "-o", str(raw)])
        origin = "c"
    elif src.suffix == ".S":
        _run([gcc, *flags, "-E", str(src), "-o", str(raw)])
        origin = "asm"
    elif src.suffix == ".s":
        raw = src
        origin = "asm"
    else:
        raise BuildError(f"{src}: pvcc compiles .c, .S and .s files")
    try:
        text = raw.read_text()
    except UnicodeDecodeError:
        raise BuildError(f"{src}: not a text file") from None
    new, sites = rewrite_asm(text, str(src), origin, root)
    out.write_text(new)
    return sites


def compile_object(src: Path, obj: Path, target: Target, root: Path | None = None) -> list[Site]:
    asm = obj.with_suffix(".pv.s")
    sites = compile_to_asm(src, asm, target, root)
    _run([_tool("RINGVISOR_CC", "gcc"), "-m32", "-c", "-x", "assembler", str(asm), "-o", str(obj)])
    return sites


# The link without -T: a Multiboot kernel at 1 MiB, loaded where it is linked (ld's own
# default, 0x08048000, is beyond a small machine's RAM and puts the Multiboot header
# wherever an orphan section lands).  The kernel brings its Multiboot header (a
# .multiboot section, or the first bytes of .text) and _start.
DEFAULT_LINKER_SCRIPT = """\
/* ringvisor pvcc's default link: a Multiboot kernel loaded at 1 MiB */
ENTRY(_start)
SECTIONS
{
    . = 0x100000;
    .text : { KEEP(*(.multiboot)) *(.text.multiboot) *(.text .text.*) }
    .rodata : { *(.rodata .rodata.*) }
    .data : { *(.data .data.*) }
    .bss : { *(.bss .bss.*) *(COMMON) }
    /DISCARD/ : { *(.comment) *(.note*) *(.eh_frame*) }
}
"""


def build(target: Target, out: Path, *, runtime: Path | None = None,
          root: Path | None = None, report_path: Path | None = None) -> Report:
    """Compile and link ``target`` through pvcc into the ELF ``out``
    (atomically), adding the PV runtime sources under ``runtime`` (a guest
    source directory holding ``pv/``) unless None.  Objects (.o) among the
    sources are linked as they are."""
    report = Report()
    sources = list(target.sources)
    includes = list(target.include_dirs)
    if runtime is not None:
        sources += runtime_sources(runtime)
        includes.append(runtime / "include")
    tgt = Target(target.name, sources, target.linker_script, target.cflags, includes,
                 target.optimize)
    with tempfile.TemporaryDirectory(prefix="rv-pvcc-") as tmp:
        objs = []
        for i, src in enumerate(sources):
            if src.suffix == ".o":
                objs.append(str(src))
                continue
            obj = Path(tmp) / f"{i}-{src.stem}.o"
            report.sites += compile_object(src, obj, tgt, root)
            objs.append(str(obj))
        linked = Path(tmp) / "image.elf"
        cmd = [_tool("RINGVISOR_LD", "ld"), *LDFLAGS, "--strip-debug"]
        script = target.linker_script
        if not script:
            script = Path(tmp) / "default.lds"
            script.write_text(DEFAULT_LINKER_SCRIPT)
        _run(cmd + ["-T", str(script), "-o", str(linked), *objs])
        image = linked.read_bytes()
        if not target.linker_script:
            try:
                check_header(image, str(out))
            except ImageError as e:
                raise BuildError(f"pvcc: {e}: give the kernel one (a .multiboot section: "
                                 "0x1BADB002, flags, checksum), or link with -T SCRIPT") from None
        write_atomic(out, image)
    if report_path is not None:
        write_atomic(report_path, report.text().encode())
    return report


# ---------------------------------------------------------------------------
# Command line: ringvisor pvcc
# ---------------------------------------------------------------------------

USAGE = """usage: ringvisor pvcc [-c | -S] [-o OUT] [-T LINKER_SCRIPT] [-I DIR] [-D NAME[=V]]
                      [-O LEVEL] [--no-runtime] [--report] [--report-file FILE]
                      [other gcc flags] SOURCE...

Compile guest C and assembly sources for ringvisor's para-virtual mode: every
privileged or sensitive instruction becomes a hypercall, a shared-info access
or a call into the PV runtime (docs/paravirt.md).  Without -c or -S the objects
are linked, with the PV runtime, into OUT (an ELF image; default a.elf): with
-T SCRIPT as the script says, otherwise as a Multiboot kernel at 1 MiB (the
kernel's .multiboot section first; its entry point _start).
  -S             write the rewritten assembly (one source, or OUT as a directory)
  -c             write objects
  --no-runtime   do not link the PV runtime (guests/pv)
  --report       print every rewritten site (file:line: instruction -> replacement)
  --report-file  write that list to FILE
"""


@dataclass
class PvccArgs:
    mode: str = "link"
    output: Path | None = None
    linker_script: Path | None = None
    include_dirs: list[Path] = field(default_factory=list)
    cflags: list[str] = field(default_factory=list)
    optimize: str = "-O2"
    runtime: bool = True
    report: bool = False
    report_file: Path | None = None
    sources: list[Path] = field(default_factory=list)


def parse_args(argv: list[str]) -> PvccArgs:
    from ringvisor.errors import ConfigError
    a = PvccArgs()
    it = iter(argv)

    def value(opt: str) -> str:
        try:
            return next(it)
        except StopIteration:
            raise ConfigError(f"pvcc: {opt} needs an argument") from None
    for arg in it:
        if arg in ("-h", "--help"):
            a.mode = "help"
        elif arg == "-c":
            a.mode = "compile"
        elif arg == "-S":
            a.mode = "asm"
        elif arg == "-o":
            a.output = Path(value(arg))
        elif arg == "-T":
            a.linker_script = Path(value(arg))
        elif arg.startswith("-T"):
            a.linker_script = Path(arg[2:])
        elif arg == "-I":
            a.include_dirs.append(Path(value(arg)))
        elif arg.startswith("-I"):
            a.include_dirs.append(Path(arg[2:]))
        elif arg.startswith("-O"):
            a.optimize = arg
        elif arg == "--no-runtime":
            a.runtime = False
        elif arg == "--report":
            a.report = True
        elif arg == "--report-file":
            a.report_file = Path(value(arg))
        elif arg in ("-D", "-U"):
            a.cflags += [arg, value(arg)]
        elif arg.startswith("-"):
            a.cflags.append(arg)
        else:
            a.sources.append(Path(arg))
    if a.mode != "help":
        if not a.sources:
            raise ConfigError("pvcc: no source files (see ringvisor pvcc --help)")
        for s in a.sources:
            if not s.is_file():
                raise ConfigError(f"pvcc: {s}: " + ("not a file" if s.exists() else
                                                    "no such file"))
            if s.suffix not in (".c", ".S", ".s", ".o"):
                raise ConfigError(f"pvcc: {s}: not a .c, .S, .s or .o file")
        if a.mode == "link" and a.output is None:
            a.output = Path("a.elf")
    return a


def main(argv: list[str]) -> int:
    """``ringvisor pvcc``: errors are RingvisorErrors (one line, status 2)."""
    from ringvisor.guests.build import SOURCE_DIR
    a = parse_args(argv)
    if a.mode == "help":
        print(USAGE, end="")
        return 0
    target = Target("pvcc", a.sources, a.linker_script, a.cflags, a.include_dirs, a.optimize)
    runtime = SOURCE_DIR if a.runtime else None
    if runtime is not None and not (runtime / RUNTIME_DIR).is_dir():
        raise BuildError(f"the PV runtime sources are not in {runtime / RUNTIME_DIR} "
                         "(use --no-runtime)")
    root = Path.cwd()
    report = Report()
    if a.mode == "link":
        report = build(target, a.output, runtime=runtime, root=root)
    else:
        outdir = None
        if len(a.sources) > 1 or a.output is None:
            outdir = a.output or Path(".")
            try:
                outdir.mkdir(parents=True, exist_ok=True)
            except OSError as e:      # a file there, a directory that cannot be made
                raise BuildError(f"pvcc: -o {outdir}: cannot make the directory for "
                                 f"{len(a.sources)} outputs: {e.strerror}") from None
        for src in a.sources:
            suffix = ".s" if a.mode == "asm" else ".o"
            out = (outdir / (src.stem + suffix)) if outdir is not None else a.output
            with tempfile.TemporaryDirectory(prefix="rv-pvcc-") as tmp:
                t = Path(tmp) / (src.stem + suffix)
                if a.mode == "asm":
                    report.sites += compile_to_asm(src, t, target, root)
                else:
                    report.sites += compile_object(src, t, target, root)
                write_atomic(out, t.read_bytes())
    if a.report_file is not None:
        write_atomic(a.report_file, report.text().encode())
    if a.report:
        sys.stdout.write(report.text())
        counts = ", ".join(f"{k} {v}" for k, v in sorted(report.counts().items()))
        print(f"pvcc: {len(report.sites)} sites rewritten" + (f" ({counts})" if counts else ""),
              file=sys.stderr)
    return 0
