"""The measuring commands: ``demo``, ``bench``, ``crosscheck``, ``probe``,
``vmbench`` (with ``--devices``), ``lifebench`` and ``xenbench``.

Each parses nothing and decides nothing of its own: it checks its options, runs
the measurement its module holds (``benchmark``, ``vmbench``, ``devbench``,
``probe_table``, ``lifebench``, ``xenbench``, ``hw.crosscheck``) and prints the
result.  Apart from the VM-running commands because none of them keeps a VM.
"""

from __future__ import annotations

import sys

from ringvisor.errors import ConfigError

from .output import emit_json
from .run import resolve_kernel


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
    from ringvisor.ui.progress import Progress
    progress = Progress([(f"bench: {n}", "bench") for n in names])
    echo = (lambda s: None) if args.json else (lambda s: (progress.clear(), print(s, flush=True)))
    echo(f"engine: {args.engine}")
    echo(benchmark.HEADER)
    results = benchmark.run_suite(args.engine, args.scale, names, not args.no_qemu,
                                  echo=echo, progress=progress)
    progress.clear()
    if args.json:
        emit_json(benchmark.to_json(results, args.engine, args.scale))
        return 0
    for line in benchmark.summary(results):
        print(line)
    return 0


def cmd_crosscheck(args) -> int:
    from ringvisor.hw.crosscheck import crosscheck
    from ringvisor.hw.machine import read_image
    kernel = resolve_kernel(args.kernel)
    r = crosscheck(read_image(kernel, max_bytes=args.mem << 20), args.append,
                   args.max_instructions, args.mem)
    print(f"{'agree' if r.ok else 'DIFFER'}: {r.instructions:,} instructions, {r.blocks:,} blocks; "
          f"{r.message}")
    return 0 if r.ok else 1


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
    if args.json:
        emit_json(probe_table.to_json(results, args.engine))
    else:
        print(probe_table.table(results))
    return 0


def cmd_vmbench(args) -> int:
    if args.devices:
        return _devbench(args)
    from ringvisor import vmbench
    names = args.workload or vmbench.NANO + vmbench.LMBENCH + vmbench.CPU
    bad = [n for n in names if n not in vmbench.ITERS]
    if bad:
        raise ConfigError(f"unknown workload {bad[0]!r} (choose from {', '.join(vmbench.ITERS)})")
    if args.scale <= 0:
        raise ConfigError("--scale must be positive")
    if args.repeat < 1:
        raise ConfigError("--repeat must be at least 1")
    modes = ["native"] + (args.mode or ["trapemu", "bt", "paravirt", "hvm", "hvm+ept"])
    from ringvisor.ui.progress import Progress
    progress = Progress(vmbench.plan(modes, names, args.repeat))
    report = (lambda s: None) if args.json else (lambda s: (progress.clear(), print(s, flush=True)))
    report(f"cycles = guest rdtsc per operation (instructions retired; a trap into the monitor "
           f"counts one); wall = host time per operation of the guest's timed loop (fastest of "
           f"{args.repeat}); engine {args.engine}")
    results = vmbench.measure(modes, names, args.scale, args.engine, args.repeat, report=report,
                              progress=progress)
    progress.clear()
    if args.json:
        emit_json(vmbench.to_json(results, modes, args.scale, args.engine, args.repeat))
    return 0


def _devbench(args) -> int:
    from ringvisor import devbench
    other = [m for m in (args.mode or []) if m not in ("hvm", "kvm")]
    if other or args.workload:
        raise ConfigError("vmbench --devices measures native, hvm and kvm (no --workload, no --mode "
                          + (other[0] if other else "") + ")")
    if args.scale <= 0:
        raise ConfigError("--scale must be positive")
    n = max(1, round(16 * args.scale))
    modes = ["native"] + (args.mode or ["hvm", "kvm"])
    report = (lambda s: None) if args.json else (lambda s: print(s, flush=True))
    report(f"devices: per operation, the difference of two runs ({2 * n} and {4 * n} disk "
           f"requests, {4 * n} and {8 * n} console lines; host CPU time: the least of "
           f"{args.repeat} runs each); a disk request is 16 KiB (blkbench), a console line 40 "
           f"characters typed, echoed and printed (the shell)")
    report(devbench.HEADER)
    if args.repeat < 1:
        raise ConfigError("--repeat must be at least 1")
    costs, skipped = devbench.measure(modes, n, report, repeat=args.repeat)
    if args.json:
        emit_json(devbench.to_json(costs, skipped, n))
    else:
        print("emulated / virtio, same run:")
        for line in devbench.ratios(costs):
            print(line)
    return 0


def cmd_lifebench(args) -> int:
    from ringvisor import lifebench
    lifebench.measure(args.engine, args.snapshots, args.migrate_link,
                      echo=lambda s: print(s, flush=True))
    return 0


def cmd_xenbench(args) -> int:
    from ringvisor import xenbench
    xenbench.run(tuple(args.domains or (1, 2, 4, 8, 16)), args.window, args.fair_window,
                 blk_requests=args.blk_requests, evtchn_trips=args.evtchn_trips,
                 smp_counts=tuple(args.smp_domains or (1, 2, 4, 8)), smp_only=args.smp_only)
    return 0
