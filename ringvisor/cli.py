"""The ``ringvisor`` command line: argument parsing and output only, no logic."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ringvisor.errors import ConfigError, RingvisorError

EXIT_USAGE = 2


class Parser(argparse.ArgumentParser):
    """argparse, but a bad argument is one line on stderr and exit status 2."""

    def error(self, message: str) -> None:
        print(f"{self.prog}: error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(EXIT_USAGE)


def parse_size(text: str) -> int:
    """A memory size in MiB: ``64``, ``64M``, ``64MiB``, ``1G``."""
    t = text.strip().upper().removesuffix("IB").removesuffix("B")
    mult = 1
    if t.endswith("G"):
        mult, t = 1024, t[:-1]
    elif t.endswith("M"):
        t = t[:-1]
    elif t.endswith("K"):
        raise argparse.ArgumentTypeError(f"memory size {text!r} is below 1 MiB")
    try:
        value = int(t) * mult
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad memory size {text!r} (use e.g. 32M or 1G)") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"memory size must be positive, not {text!r}")
    return value


def positive_int(text: str) -> int:
    try:
        v = int(text.replace("_", ""), 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
    return v


def build_parser() -> Parser:
    p = Parser(prog="ringvisor", description="Virtualization structures on an IA-32 PC in Python.")
    sub = p.add_subparsers(dest="command", parser_class=Parser, metavar="COMMAND")
    sub.required = True

    r = sub.add_parser("run", help="boot a Multiboot kernel on the emulated PC")
    r.add_argument("kernel", metavar="KERNEL",
                   help="a Multiboot image (ELF32 or a.out kludge), or the name of a bundled "
                        "image: kernel, bench-sieve, bench-crc32, ...")
    r.add_argument("--mode", choices=("native", "trapemu", "bt", "paravirt"), default="native",
                   help="native: the bare hardware; trapemu: the kernel de-privileged to ring 1 "
                        "under trap-and-emulate; bt: binary translation of kernel code; "
                        "paravirt: a kernel built by pvcc, with hypercalls and event channels")
    r.add_argument("--mem", type=parse_size, default=32, metavar="SIZE",
                   help="guest RAM (default 32M)")
    r.add_argument("--append", default="", metavar="CMDLINE", help="kernel command line")
    r.add_argument("--module", action="append", default=[], metavar="FILE",
                   help="a Multiboot module (repeatable)")
    r.add_argument("--engine", choices=("jit", "interp"), default="jit",
                   help="translating engine (default) or the one-instruction interpreter")
    r.add_argument("--max-instructions", type=positive_int, metavar="N",
                   help="stop after N guest instructions (exit status 4)")
    r.add_argument("--trace", metavar="FILE",
                   help="write every translation, exception and interrupt to FILE")
    r.add_argument("--stats", action="store_true", help="print execution statistics to stderr")
    r.add_argument("--pace", choices=("auto", "on", "off"), default="auto",
                   help="keep virtual time from running ahead of wall time (auto: on a terminal)")

    d = sub.add_parser("demo", help="boot the bundled teaching kernel, run workloads, print measurements")
    d.add_argument("--engine", choices=("jit", "interp"), default="jit")
    d.add_argument("--append", default="run=all-nano,sieve,crc32 iters=20",
                   metavar="CMDLINE", help="kernel command line (default: %(default)s)")
    d.add_argument("--native-only", action="store_true",
                   help="skip the comparison of the virtualization structures")

    b = sub.add_parser("bench", help="the CPU-bound benchmark suite, beside qemu-system-i386")
    b.add_argument("--engine", choices=("jit", "interp"), default="jit")
    b.add_argument("--scale", type=float, default=1.0,
                   help="multiply every workload's iteration count (default 1.0: ~20 M instructions each)")
    b.add_argument("--workload", action="append", metavar="NAME",
                   help="run only this workload (repeatable)")
    b.add_argument("--no-qemu", action="store_true", help="do not run qemu-system-i386 for comparison")

    c = sub.add_parser("crosscheck", help="run KERNEL on the translator and the interpreter in "
                                          "lockstep and report the first difference")
    c.add_argument("kernel", metavar="KERNEL")
    c.add_argument("--append", default="", metavar="CMDLINE")
    c.add_argument("--mem", type=parse_size, default=32, metavar="SIZE")
    c.add_argument("--max-instructions", type=positive_int, default=5_000_000, metavar="N")

    pr = sub.add_parser("probe", help="run the Robin & Irvine sensitive-instruction probes "
                                      "natively, under trap-and-emulate and under binary "
                                      "translation, and print the table")
    pr.add_argument("--mode", action="append", choices=("native", "trapemu", "bt"),
                    help="only these modes (repeatable; default: all three)")
    pr.add_argument("--engine", choices=("jit", "interp"), default="jit")

    vb = sub.add_parser("vmbench", help="cost per operation of every workload natively and "
                                         "under each monitor, with ratios to native")
    vb.add_argument("--mode", action="append", choices=("trapemu", "bt", "paravirt"),
                    help="monitors to measure besides native (repeatable; default: all three; "
                         "paravirt runs the pvcc build of the kernel)")
    vb.add_argument("--workload", action="append", metavar="NAME", help="only this workload (repeatable)")
    vb.add_argument("--scale", type=float, default=1.0, help="multiply the iteration counts")
    vb.add_argument("--engine", choices=("jit", "interp"), default="jit")
    vb.add_argument("--repeat", type=int, default=2, help="boots per workload and mode; the fastest counts")

    g = sub.add_parser("build-guests", help="rebuild the bundled guest images from guests/")
    g.add_argument("out", nargs="?", help="output directory (default: the package's images)")
    g.add_argument("--opt", choices=("-O0", "-O1", "-O2", "-O3", "-Os"), default=None)

    h = sub.add_parser("pvabi-header", help="regenerate the C header of the para-virtual ABI "
                                            "(guests/include/pv/xen_abi.h) from ringvisor.abi")
    h.add_argument("--output", metavar="FILE",
                   help="where to write it ('-': standard output; default: the source tree's copy)")

    pv = sub.add_parser("pvcc", add_help=False,
                        help="compile guest C/assembly for para-virtualization: privileged "
                             "instructions become hypercalls (ringvisor pvcc --help)")
    pv.add_argument("gcc_args", nargs=argparse.REMAINDER)
    return p



def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["pvcc"]:
        # gcc-style arguments (-c, -S, -I...): handed over as they are
        return _run_command(cmd_pvcc, argv[1:])
    args = build_parser().parse_args(argv)
    return _run_command(COMMANDS[args.command], args)


def _run_command(command, args) -> int:
    try:
        return command(args)
    except RingvisorError as e:
        print(f"ringvisor: {e}", file=sys.stderr)
        return e.exit_status
    except KeyboardInterrupt:
        print("ringvisor: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 1


def _resolve_kernel(name: str) -> str:
    if os.path.exists(name) or os.sep in name:
        return name
    from ringvisor.guests.build import image_path
    try:
        return str(image_path(name))
    except RingvisorError:
        raise ConfigError(f"{name}: no such file, and no bundled image of that name") from None


def cmd_run(args) -> int:
    from ringvisor.hw.devices.uart import HostInput
    from ringvisor.hw.machine import read_image
    from ringvisor.vmm import create_vm

    kernel = _resolve_kernel(args.kernel)
    interactive = sys.stdin.isatty()
    out_tty = sys.stdout.isatty()
    stdout = sys.stdout.buffer

    def output(data: bytes) -> None:
        stdout.write(data.replace(b"\n", b"\r\n") if interactive and out_tty else data)
        stdout.flush()

    pace = interactive if args.pace == "auto" else args.pace == "on"
    trace = open(args.trace, "w") if args.trace else None
    try:
        size = args.mem << 20
        image = read_image(kernel, max_bytes=size)
        mods = [(p, read_image(p, "module", size), p) for p in args.module]
        m, mon = create_vm(image, args.mode, args.append, args.mem, args.engine, mods,
                           image_name=kernel, output=output, pace=pace, keep_source=bool(trace))
        if trace:
            m.cpu.trace = trace.write
        with HostInput(0, raw=interactive) as host:
            m.host_input = host
            m.quit_key = interactive
            stop = m.run(args.max_instructions)
    finally:
        if trace:
            trace.close()
    if stop.message:
        print(f"\nringvisor: {stop.message}", file=sys.stderr)
    if args.stats:
        print_stats(m)
        if mon is not None:
            print_monitor_stats(mon)
    return stop.status


def print_monitor_stats(mon) -> None:
    r = mon.report()
    lines = [f"monitor: {mon.name}"]
    for key in ("traps", "emulated", "callouts", "hypercalls"):
        if key in r and r[key]:
            items = sorted(r[key].items(), key=lambda kv: -kv[1])
            lines.append(f"{key}: " + ", ".join(f"{k} {v:,}" for k, v in items))
    rest = {k: v for k, v in r.items() if not isinstance(v, dict)}
    lines.append(", ".join(f"{k.replace('_', ' ')}: {v:,}" if isinstance(v, int) else
                           f"{k.replace('_', ' ')}: {v}" for k, v in rest.items()))
    print("\n".join(lines), file=sys.stderr)


def print_stats(m) -> None:
    s = m.stats()
    print(f"instructions retired: {s['instructions']:,}\n"
          f"wall time: {s['wall_seconds']:.2f} s ({s['mips']:.2f} MIPS)\n"
          f"blocks translated: {s['blocks_translated']:,} "
          f"(code cache: {s['code_cache_blocks']:,} blocks, {s['code_cache_bytes'] // 1024:,} KiB of "
          f"generated source; {s['invalidations']:,} invalidated, "
          f"{s['smc_restarts']} self-modifying-code restarts)\n"
          f"exceptions: {s['exceptions']:,}  interrupts: {s['interrupts']:,}  "
          f"page walks: {s['tlb_walks']:,}", file=sys.stderr)


def cmd_demo(args) -> int:
    from ringvisor.guests.build import image_path
    from ringvisor.hw.machine import Machine, read_image

    path = image_path("kernel")
    print(f"booting {path.name} with '{args.append}' on ringvisor's IA-32 PC ({args.engine} engine)\n")
    m = Machine(32, args.engine, output=lambda b: (sys.stdout.buffer.write(b), sys.stdout.flush()))
    m.boot_multiboot(read_image(path), args.append, image_name=str(path))
    stop = m.run()
    print()
    if stop.message:
        print(f"ringvisor: {stop.message}")
    s = m.stats()
    print(f"guest exit status {stop.status}; {s['instructions']:,} instructions in "
          f"{s['wall_seconds']:.2f} s = {s['mips']:.2f} MIPS; {s['blocks_translated']:,} blocks "
          f"translated; {s['exceptions']:,} exceptions, {s['interrupts']:,} interrupts delivered")
    ok = stop.reason == "exit" and stop.status == 1
    if ok and not args.native_only:
        from ringvisor import vmbench
        print("\nthe same kernel under each virtualization structure: native, trap-and-emulate, "
              "binary translation, para-virtualization (kernel-pv, built by pvcc)\n"
              "cycles = guest rdtsc per operation; wall = host time of the guest's timed loop")
        results = vmbench.measure(("native", "trapemu", "bt", "paravirt"),
                                  ["syscall", "pgfault", "ctxsw"], 0.1, args.engine, 1)
        ok = all(c["ok"] for row in results.values() for c in row.values())
    return 0 if ok else 1


def cmd_bench(args) -> int:
    from ringvisor import benchmark
    names = args.workload or list(benchmark.WORKLOADS)
    bad = [n for n in names if n not in benchmark.WORKLOADS]
    if bad:
        raise ConfigError(f"unknown workload {bad[0]!r} (choose from {', '.join(benchmark.WORKLOADS)})")
    if args.scale <= 0:
        raise ConfigError("--scale must be positive")
    print(f"engine: {args.engine}")
    print(benchmark.HEADER)
    results = benchmark.run_suite(args.engine, args.scale, names, not args.no_qemu,
                                  echo=lambda s: print(s, flush=True))
    for line in benchmark.summary(results):
        print(line)
    return 0


def cmd_crosscheck(args) -> int:
    from ringvisor.hw.crosscheck import crosscheck
    from ringvisor.hw.machine import read_image
    kernel = _resolve_kernel(args.kernel)
    r = crosscheck(read_image(kernel, max_bytes=args.mem << 20), args.append,
                   args.max_instructions, args.mem)
    print(f"{'agree' if r.ok else 'DIFFER'}: {r.instructions:,} instructions, {r.blocks:,} blocks; "
          f"{r.message}")
    return 0 if r.ok else 1


def cmd_build_guests(args) -> int:
    from pathlib import Path
    from ringvisor.guests.build import build_all
    built = build_all(Path(args.out) if args.out else None, opt=args.opt)
    for name, path in built.items():
        print(f"{name}: {path}")
    return 0


def cmd_pvcc(argv: list[str]) -> int:
    from ringvisor import pvcc
    return pvcc.main(argv)


def cmd_pvabi_header(args) -> int:
    from ringvisor.abi.header import c_header
    from ringvisor.guests.build import write_abi_header
    if args.output == "-":
        sys.stdout.write(c_header())
    else:
        print(write_abi_header(args.output and Path(args.output)))
    return 0


def cmd_probe(args) -> int:
    from ringvisor import probe_table
    from ringvisor.guests.build import image_path
    from ringvisor.vmm import run_vm

    modes = args.mode or ["native", "trapemu", "bt"]
    if "native" not in modes:
        modes = ["native"] + modes
    results = {}
    for mode in modes:
        r = run_vm(image_path("probe"), mode, engine=args.engine, max_instructions=50_000_000,
                   quiet=True)
        try:
            results[mode] = probe_table.parse(r.output.decode(errors="replace"))
        except ValueError as e:
            msg = r.stop.message or f"exit status {r.status}"
            raise ConfigError(f"the probe guest failed under {mode}: {e} ({msg.splitlines()[0]})") from None
    print(probe_table.table(results))
    return 0


def cmd_vmbench(args) -> int:
    from ringvisor import vmbench
    names = args.workload or vmbench.NANO + vmbench.LMBENCH + vmbench.CPU
    bad = [n for n in names if n not in vmbench.ITERS]
    if bad:
        raise ConfigError(f"unknown workload {bad[0]!r} (choose from {', '.join(vmbench.ITERS)})")
    if args.scale <= 0:
        raise ConfigError("--scale must be positive")
    if args.repeat < 1:
        raise ConfigError("--repeat must be at least 1")
    modes = ["native"] + (args.mode or ["trapemu", "bt", "paravirt"])
    print(f"cycles = guest rdtsc per operation (instructions retired; a trap into the monitor "
          f"counts one); wall = host time per operation of the guest's timed loop (fastest of "
          f"{args.repeat}); engine {args.engine}")
    vmbench.measure(modes, names, args.scale, args.engine, args.repeat)
    return 0


COMMANDS = {"run": cmd_run, "demo": cmd_demo, "bench": cmd_bench, "crosscheck": cmd_crosscheck,
            "probe": cmd_probe, "vmbench": cmd_vmbench, "build-guests": cmd_build_guests,
            "pvabi-header": cmd_pvabi_header}
