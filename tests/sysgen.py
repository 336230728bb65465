"""sysgen: random system-level test kernels, run on QEMU, natively and under the monitors.

``generate(seed)`` writes a small Multiboot kernel (``tests/sysgen/``: a runtime with its
own GDT, LDT, IDT, two TSSes and page tables, plus the generated ``steps.S``): a sequence
of steps drawn from ``random.Random(seed)``, each a system-level operation -- segment
loads of random descriptors (present or not, DPL/RPL, expand-down, conforming, limits,
bases that wrap around 4 GiB) and accesses through them; far JMP/CALL/RET and IRET across
rings 0-3 and through call gates; INT n through interrupt, trap and task gates of random
DPL and presence; IRET with NT; PTE changes followed by INVLPG or a CR3 reload, U/S, R/W,
WP, 4 MiB pages; stores into the code about to run; TF single-stepping; debug registers;
port I/O at IOPL 0 and 3 and through the I/O bitmap; CR0/CR4 bits; and Robin & Irvine's
sensitive instructions.  Every exception goes to one handler that prints the vector,
error code, saved CS:EIP, EFLAGS and registers, then returns (traps) or abandons the
operation; every step ends with a line of its registers, and the kernel with checksums of
its tables and memory.

``run_seed(seed)`` runs a kernel on ``qemu-system-i386 -kernel`` (the reference), on the
bare ringvisor PC and under ``trapemu`` and ``bt`` and returns the differences.  Under
trapemu, steps holding a sensitive instruction (marked ``*`` in the output, ``+`` if it
runs in user mode, where bt too runs it as itself and is compared without it: SGDT, SIDT,
SLDT, STR, SMSW, LAR, LSL, VERR, VERW, PUSHF, MOV/PUSH of CS and SS, and IRET to an outer
ring with IOPL or IF set, which trap-and-emulate loses) are left out of the comparison:
that is Robin & Irvine's list, documented in docs/virtualization.md.

    python tests/sysgen.py 0-299              # run seeds, print one line per seed
    python tests/sysgen.py 17 --show          # the kernel's output on every platform
    python tests/sysgen.py 17 --minimize      # the smallest set of steps that still differs
    python tests/sysgen.py 17 --steps 3,9 --asm   # print the generated steps.S
    python tests/sysgen.py 0-99 --sdm         # what QEMU does not check too, against native

Cases where QEMU's TCG departs from the SDM are not generated (each says why in
sysgen_ops.py), unless ``--sdm``: then the bare ringvisor PC is the reference.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ringvisor.guests.toolchain import CFLAGS, LDFLAGS, Target, build  # noqa: E402
from sysgen_ops import Gen  # noqa: E402

SYSGEN_DIR = Path(__file__).resolve().parent / "sysgen"
BUILD_DIR = Path(os.environ.get("RINGVISOR_SYSGEN_BUILD", SYSGEN_DIR / "build"))
PLATFORMS = ("qemu", "native", "trapemu", "bt")
MAX_INSTRUCTIONS = 20_000_000
MEM_MB = 32


def steps_source(seed: int, count: int = 40, keep: set[int] | None = None,
                 rings12: bool | None = None, avoid_gaps: bool = False,
                 sdm: bool = False) -> tuple[str, set[int]]:
    """steps.S of kernel ``seed`` (only the steps in ``keep``), and its sensitive steps."""
    g = Gen(seed, rings12, avoid_gaps, sdm)
    steps = g.steps(count)
    out = [f"# sysgen seed {seed}", ".data", ".globl cfg_paging", f"cfg_paging: .long {int(g.paging)}",
           ".text", ".globl steps_start", "steps_start:"]
    sensitive = set()
    for n, st in enumerate(steps):
        if keep is not None and n not in keep:
            continue
        sensitive |= {n} if st.sensitive else set()
        mark = 2 if st.sensitive and st.user else int(st.sensitive)
        out += [f"# step {n}", f"movl ${n}, cur_step", f"movl ${mark}, cur_mark",
                f"movl $.Lend{n}, resume", "movl $0, dbcount", "call step_reset",
                *st.lines, f".Lend{n}:", "call step_end"]
    out += ["call finish", ""]
    return "\n".join(out), sensitive


def build_kernel(seed: int, count: int = 40, keep: set[int] | None = None,
                 rings12: bool | None = None, avoid_gaps: bool = False,
                 sdm: bool = False) -> tuple[Path, set[int]]:
    src, sensitive = steps_source(seed, count, keep, rings12, avoid_gaps, sdm)
    return build_steps(src, f"sysgen-{seed}"), sensitive


def build_steps(src: str, name: str) -> Path:
    """The kernel of ``src`` (a steps.S: generated, or a fixed one such as
    tests/sysgen/regress.S), built once per content."""
    rt = [SYSGEN_DIR / "entry.S", SYSGEN_DIR / "rt.c"]
    h = hashlib.sha256(src.encode())
    for part in (*CFLAGS, *LDFLAGS, *(p.read_bytes() for p in rt), (SYSGEN_DIR / "link.ld").read_bytes()):
        h.update(part if isinstance(part, bytes) else part.encode())
    out = BUILD_DIR / f"{name}-{h.hexdigest()[:16]}.elf"
    if not out.exists():
        with tempfile.TemporaryDirectory(prefix="sysgen-") as tmp:
            steps = Path(tmp) / "steps.S"
            steps.write_text(src)
            build(Target(name=name, sources=[*rt, steps],
                         linker_script=SYSGEN_DIR / "link.ld", optimize="-O2"),
                  out.with_suffix(f".{os.getpid()}.tmp"))
            os.replace(out.with_suffix(f".{os.getpid()}.tmp"), out)
    return out


def fixed_steps(name: str) -> str:
    """A fixed steps file of tests/sysgen (regress.S, regress-sdm.S) after the prelude
    they share (fixed.inc: the STEP and END macros)."""
    return (SYSGEN_DIR / "fixed.inc").read_text() + (SYSGEN_DIR / name).read_text()


def run(platform: str, image: Path) -> list[str]:
    """The kernel's output lines on ``platform``; a stop other than the kernel's exit is
    the last line, in brackets."""
    if platform == "qemu":
        from ringvisor.tools.qemu import run_qemu
        res = run_qemu(image, mem_mb=MEM_MB, timeout=60)
        out, code = res.output, res.guest_exit_code
        tail = "" if code == 0 else f"[exit {code}]"
    else:
        from ringvisor.vmm.runner import run_vm
        r = run_vm(image, platform, "", MEM_MB, max_instructions=MAX_INSTRUCTIONS, quiet=True)
        out = r.output
        code = r.status >> 1 if r.stop.reason == "exit" else None
        tail = "" if code == 0 else f"[{(r.stop.message or r.stop.reason).splitlines()[0]}]"
    lines = out.decode("latin-1").replace("\r\n", "\n").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines + ([tail] if tail else [])


def comparable(lines: list[str], platform: str, sensitive: set[int]) -> list[str]:
    """The lines compared with QEMU's: under trapemu, without the steps that hold a
    sensitive instruction (``*``, ``+``); under bt, without those whose sensitive
    instruction runs in user mode (``+``), which bt runs as itself."""
    marks = {"trapemu": "*+", "bt": "+"}.get(platform, "")
    return [ln for ln in lines if not (ln.startswith("s") and ln[4:5] and ln[4:5] in marks)]


def differences(seed: int, platforms=PLATFORMS[1:], count: int = 40, keep=None,
                rings12: bool | None = None, show: bool = False,
                avoid_gaps: bool = False, sdm: bool = False) -> dict[str, tuple[int, str, str]]:
    """{platform: (line index, QEMU's line, the platform's line)} for each platform whose
    output differs from QEMU's (``sdm``: from the bare ringvisor PC's, QEMU not run)."""
    image, sensitive = build_kernel(seed, count, keep, rings12, avoid_gaps, sdm)
    reference = "native" if sdm else "qemu"
    platforms = [p for p in platforms if p != reference]
    ref = run(reference, image)
    if show:
        print(f"== {reference}", *ref, sep="\n")
    diffs = {}
    for p in platforms:
        got = run(p, image)
        if show:
            print(f"== {p}", *got, sep="\n")
        a, b = comparable(ref, p, sensitive), comparable(got, p, sensitive)
        if a != b:
            i = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
            diffs[p] = (i, a[i] if i < len(a) else "<end>", b[i] if i < len(b) else "<end>")
    return diffs


def step_of(line: str) -> int | None:
    return int(line[1:4], 16) if line.startswith("s") and line[1:4].isalnum() and line[1:4] != "ysg" else None


def minimize(seed: int, platform: str, count: int = 40, rings12=None, avoid_gaps=False,
             sdm=False) -> set[int]:
    """The smallest set of steps (greedy, one at a time) whose kernel still differs on
    ``platform``."""
    d = differences(seed, (platform,), count, None, rings12, avoid_gaps=avoid_gaps, sdm=sdm)
    if platform not in d:
        return set()
    first = [step_of(x) for x in d[platform][1:] if step_of(x) is not None]
    keep = set(range((max(first) + 1) if first else count))
    for n in sorted(keep, reverse=True):
        trial = keep - {n}
        if trial and platform in differences(seed, (platform,), count, trial, rings12,
                                             avoid_gaps=avoid_gaps, sdm=sdm):
            keep = trial
    return keep


def _seeds(spec: str) -> list[int]:
    """Seeds from "17", "0-299", "1,5,9" (argparse's type: a bad one is a usage error)."""
    out = []
    try:
        for part in spec.split(","):
            lo, _, hi = part.partition("-")
            out += range(int(lo), int(hi or lo) + 1)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not seeds: {spec!r} (e.g. 17, 0-299, 1,5,9)") from None
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="sysgen", description=__doc__.split("\n\n")[0])
    ap.add_argument("seeds", type=_seeds, help="seeds: 17, 0-299, 1,5,9")
    ap.add_argument("--platforms", default=",".join(PLATFORMS[1:]))
    ap.add_argument("--count", type=int, default=40, help="steps per kernel")
    ap.add_argument("--steps", help="keep only these steps (comma-separated)")
    ap.add_argument("--rings12", choices=("yes", "no"), help="default: even seeds only")
    ap.add_argument("--avoid-gaps", action="store_true",
                    help="leave out the monitors' known gaps (docs/debugging.md)")
    ap.add_argument("--sdm", action="store_true",
                    help="also what QEMU does not check (segment limits and types at each "
                         "access): the monitors against the bare ringvisor PC")
    ap.add_argument("--show", action="store_true", help="print every platform's output")
    ap.add_argument("--asm", action="store_true", help="print the generated steps.S")
    ap.add_argument("--minimize", action="store_true")
    a = ap.parse_args(argv)
    if a.steps and not all(x.strip().isdigit() for x in a.steps.split(",")):
        ap.error(f"--steps takes step numbers separated by commas, not {a.steps!r}")
    keep = {int(x) for x in a.steps.split(",")} if a.steps else None
    r12 = None if a.rings12 is None else a.rings12 == "yes"
    plats = tuple(a.platforms.split(","))
    if not set(plats) <= set(PLATFORMS[1:]):
        ap.error(f"--platforms: choose from {','.join(PLATFORMS[1:])}, not {a.platforms!r}")
    bad = 0
    for seed in a.seeds:
        if a.asm:
            print(steps_source(seed, a.count, keep, r12, a.avoid_gaps, a.sdm)[0])
            continue
        if a.minimize:
            for p in plats:
                k = minimize(seed, p, a.count, r12, a.avoid_gaps, a.sdm)
                print(f"seed {seed} {p}: " + (f"--steps {','.join(map(str, sorted(k)))}" if k else "same"))
            continue
        d = differences(seed, plats, a.count, keep, r12, a.show, a.avoid_gaps, a.sdm)
        bad += bool(d)
        print(f"seed {seed}: " + ("same" if not d else "; ".join(
            f"{p} line {i}: {'native' if a.sdm else 'qemu'} {q!r} / {g!r}"
            for p, (i, q, g) in d.items())), flush=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
