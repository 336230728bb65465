"""``ringvisor vmbench``: what each virtualization structure costs, measured side by side.

Every workload of the teaching kernel runs on the bare hardware and under each
monitor, in one process, one after the other.  Per workload and mode it reports

- the guest's own cost per operation, in cycles of the machine's clock from its
  ``rdtsc`` readings (the TSC ticks ``TSC_PER_CYCLE`` times a cycle): on this machine
  guest instructions retired, with each trap into the monitor counting as one,
  so the figure is exact and repeatable;
- the host's wall time per operation: a probe on RDTSC (``cpu.tsc_probe``)
  notes the host clock at every value the guest reads, and the two reads that
  bracket the guest's own timed loop (their difference is the ``cycles=`` the
  guest prints) give the wall time of exactly that loop -- booting, start-up
  and printing do not count.  The workload runs twice per boot and the second,
  warm run counts (the first pays for translating code).  Each run is repeated, the
  modes taking turns so that a change in the machine's load falls on all of them, and
  the fastest is kept, as these machines are shared and noisy; beside it the spread of
  the repeats (half the range, relative to the fastest) says how far it can be trusted.
  The CPU-bound workloads, whose ratios to native are close to 1 and so drown in a
  shared machine's noise, run in every mode at once instead: one boot per mode, the
  machines taking turns every ``TURN`` guest instructions (a few milliseconds), each
  turn's host time charged to its own machine, so that whatever the machine's load does
  falls on every mode alike within each timed loop; each round's ratio to native is
  taken within the round, and the ratio printed is the median of the rounds with their
  spread (half the range of the rounds' ratios, as ±%), in wall and in CPU time;

and the ratio of both to native.  ``paravirt`` runs the pvcc build of the
kernel (``kernel-pv``), the others the unmodified one.  Beside the
nanobenchmarks it prints the
figures Adams and Agesen published for their software and hardware VMMs
(ASPLOS 2006, section 6.2 and Figure 4: Pentium 4 cycles, as quoted in their
text), and after the CPU-bound suite the throughput of each monitor relative to
native, and Xen's published figures when paravirt was measured.

``kvm`` runs the teaching kernel on the host's processor (vmm/kvm.py).  KVM
counts no instructions and has no probe on RDTSC: its cycles are the host's
real TSC cycles per operation (the guest's own figure), its wall time those
cycles at the TSC's rate (``KVM_GET_TSC_KHZ``), and beside them the KVM exits
per operation of the warm run (the exits between the guest's two ``[timing]``
lines, less those serving the serial console and the timer's kicks).  Where
this host's KVM cannot run the kernel (``hw.kvm.limits``) the column says so.
"""

from __future__ import annotations

import math
import re
import time

from ringvisor.guests.build import image_path
from ringvisor.hw import kvm as K
from ringvisor.hw.clock import TSC_PER_CYCLE
from ringvisor.hw.machine import read_image
from ringvisor.vmm.runner import create_vm

NANO = ["syscall", "in", "crwr", "callret", "pgfault", "divzero", "ptemod"]
LMBENCH = ["null", "ctxsw", "forkwait", "pagefault"]
CPU = ["sieve", "crc32", "matmul", "qsort", "strings", "dhrystone"]
# (the CPU-bound loops run 2-3 M guest instructions: some 50 turns of ``TURN`` each)
ITERS = {"syscall": 400, "in": 2000, "crwr": 2000, "callret": 4000, "pgfault": 200,
         "divzero": 400, "ptemod": 2000, "null": 400, "ctxsw": 100, "forkwait": 10,
         "pagefault": 200, "sieve": 30, "crc32": 250, "matmul": 60, "qsort": 40, "strings": 400,
         "dhrystone": 1500}
TURN = 50_000              # guest instructions per turn of the interleaved CPU-bound runs
TIMING = re.compile(r"\[timing\] (\S+): (\d+) cycles/op \(iters=(\d+), cycles=(\d+)\)")

# Adams & Agesen, "A Comparison of Software and Hardware Techniques for x86
# Virtualization" (ASPLOS 2006), section 6.2, Pentium 4 cycles: (native, software
# VMM).  None where the text gives no figure; their cr8wr writes CR8, our crwr CR0.
PUBLISHED = {
    "syscall": (None, "native + ~2000"),
    "in": (3209, "~214 (15x faster than native)"),
    "crwr": (None, "35 (cr8wr, ~4x faster than native)"),
    "callret": (11, "51"),
    "pgfault": (1093, "3927"),
    "divzero": (889, "3223"),
    "ptemod": (1, "391 (native: one store)"),
}


def _kernel(mode: str):
    """The teaching kernel as each mode runs it: para-virtualization needs the pvcc build."""
    return image_path("kernel-pv" if mode == "paravirt" else "kernel")


# Their hardware VMM (first-generation VT-x), the same section: cycles per operation.
# Hardware assist wins where the software VMM pays for traced page tables and
# I/O, loses where every exit is a VM exit/entry round trip of thousands of cycles.
HW_PUBLISHED = {"pgfault": 11242, "ptemod": 12733, "in": 15826, "divzero": 1014, "callret": 11}
SW_CYCLES = {"pgfault": 3927, "ptemod": 391, "in": 214, "divzero": 3223, "callret": 51}

XEN_SOSP03 = "a Linux build 3% slower than native, SPECweb99 within 1% of native"


def _run(kernel, mode: str, name: str, iters: int, engine: str) -> dict:
    """One boot running ``name``; the guest's figures and the wall time of its timed loop."""
    if mode == "kvm":
        return _run_kvm(kernel, name, iters, engine)
    reads: list[tuple[int, float, int]] = []
    out = bytearray()
    # the workload runs twice in the one boot and the second run counts: the
    # first pays for translating the code (the engine's and binary translation's)
    m, mon = create_vm(read_image(kernel), "hvm" if mode in HVM_MODES else mode,
                       f"run={name},{name} iters={iters}", engine=engine, output=out.extend,
                       ept=mode != "hvm")
    exits = m.cpu.vmx.exits            # VM exits so far (hardware-assisted modes)
    m.cpu.tsc_probe = lambda t: reads.append((t, time.perf_counter(), sum(exits.values())))
    stop = m.run(2_000_000_000)
    found = [x for x in TIMING.findall(out.decode(errors="replace")) if x[0] == name]
    if stop.status != 1 or not found:
        return {"ok": False}
    n, total = int(found[-1][2]), int(found[-1][3])
    b = _bracket(reads, total)
    wall, nexits = b if b is not None else (None, 0)
    # the guest's TSC runs at TSC_PER_CYCLE ticks per cycle of the machine's clock: the
    # figure is given in those cycles (instructions retired), as the guest's own per-op
    # figure would be at one tick per cycle
    return {"ok": wall is not None, "cycles": total // (TSC_PER_CYCLE * n), "iters": n,
            "wall_us": (wall or 0.0) / n * 1e6, "instructions": m.stats()["instructions"],
            "exits_per_op": nexits / n if mode in HVM_MODES else None}


def _interleaved(modes, name: str, iters: int, engine: str) -> dict:
    """One boot per mode of ``name``, run in turns of ``TURN`` guest instructions (module
    doc); per mode the figures ``_run`` gives, with the CPU time of the timed loop
    (``cpu_us``) beside its wall time, each counting only that machine's turns."""
    vms = {}
    for mode in modes:
        out = bytearray()
        m, _ = create_vm(read_image(_kernel(mode)), "hvm" if mode in HVM_MODES else mode,
                         f"run={name},{name} iters={iters}", engine=engine, output=out.extend,
                         ept=mode != "hvm")
        vm = {"m": m, "out": out, "reads": [], "spent": [0.0, 0.0], "turn": [0.0, 0.0]}

        def probe(t, vm=vm, exits=m.cpu.vmx.exits):
            (w0, c0), (w, c) = vm["turn"], vm["spent"]
            vm["reads"].append((t, w + time.perf_counter() - w0, c + time.process_time() - c0,
                                sum(exits.values())))
        m.cpu.tsc_probe = probe
        vms[mode] = vm
    running = list(modes)
    budget = 2_000_000_000
    while running:
        for mode in list(running):
            vm = vms[mode]
            m = vm["m"]
            vm["turn"] = [time.perf_counter(), time.process_time()]
            stop = m.run(TURN)
            vm["spent"][0] += time.perf_counter() - vm["turn"][0]
            vm["spent"][1] += time.process_time() - vm["turn"][1]
            budget -= TURN
            if stop.reason == "limit" and budget > 0:
                m.stop = None            # (its turn ended: it goes on at the next)
            else:
                vm["stop"] = stop
                running.remove(mode)
    res = {}
    for mode, vm in vms.items():
        found = [x for x in TIMING.findall(vm["out"].decode(errors="replace")) if x[0] == name]
        if vm["stop"].status != 1 or not found:
            res[mode] = {"ok": False}
            continue
        n, total = int(found[-1][2]), int(found[-1][3])
        wall = _bracket([(t, w, x) for t, w, _, x in vm["reads"]], total)
        cpu = _bracket([(t, c, 0) for t, _, c, _ in vm["reads"]], total)
        res[mode] = {"ok": wall is not None, "cycles": total // (TSC_PER_CYCLE * n), "iters": n,
                     "wall_us": (wall[0] if wall else 0.0) / n * 1e6,
                     "cpu_us": (cpu[0] if cpu else 0.0) / n * 1e6,
                     "instructions": vm["m"].stats()["instructions"],
                     "exits_per_op": wall[1] / n if wall and mode in HVM_MODES else None}
    return res


REAL_TSC = ("kvm",)        # modes whose rdtsc is the host's clock, not retired instructions
# --mode hvm on ringvisor's VT-x: "hvm" with shadow page tables (the first generation,
# which Adams & Agesen measured: run --no-ept), "hvm+ept" with EPT (run's default)
HVM_MODES = ("hvm", "hvm+ept")
KVM_WALL_LIMIT = 600.0     # seconds a kvm boot may take (it counts no instructions)


def _run_kvm(kernel, name: str, iters: int, engine: str) -> dict:
    """One boot under --mode kvm (see the module's doc)."""
    from ringvisor.hw.machine import read_image
    from ringvisor.vmm import create_vm
    why = _kvm_limit()
    if why is not None:
        return {"ok": False, "why": why}
    text = bytearray()
    marks: list[int] = []                 # exits counted when each [timing] line ended
    m = None

    def output(data: bytes) -> None:
        text.extend(data)
        if b"\n" in data and text.rstrip(b"\n").rsplit(b"\n", 1)[-1].startswith(b"[timing] "):
            marks.append(_counted_exits(m))
    image = read_image(kernel)
    m, _ = create_vm(image, "kvm", f"run={name},{name} iters={iters}", 32, engine,
                     image_name=str(kernel), output=output)
    m.wall_limit = KVM_WALL_LIMIT
    stop = m.run()
    khz = m.vcpu.tsc_khz()
    m.close()
    found = [x for x in TIMING.findall(text.decode(errors="replace")) if x[0] == name]
    if stop.status != 1 or not found or len(marks) < 2:
        return {"ok": False, "why": stop.message.splitlines()[0] if stop.message else "no figures"}
    per_op, n = int(found[-1][1]), int(found[-1][2])
    return {"ok": True, "cycles": per_op, "iters": n, "wall_us": per_op / khz * 1e3,
            "instructions": None, "exits_per_op": (marks[-1] - marks[-2]) / n}


_kvm_limits: dict = {}


def _kvm_limit() -> str | None:
    """Why the teaching kernel cannot run on this host's KVM (cached), or None."""
    if "why" not in _kvm_limits:
        why = K.unusable_reason()
        _kvm_limits["why"] = why if why is not None else next(iter(K.limits().values()), None)
    return _kvm_limits["why"]


def _counted_exits(m) -> int:
    """KVM exits so far that the workload caused: not the serial console's (a line of
    output is dozens of port accesses) nor the timer's kicks of the vCPU."""
    return sum(m.exits.values()) - m.exits[K.EXIT_INTR] - m.console_exits


def _bracket(reads: list[tuple[int, float, int]], total: int) -> tuple[float, int] | None:
    """Host seconds (and VM exits) of the guest's timed code: the last two reads ``total``
    cycles apart, or else (a workload that adds up several timed pieces, each between two
    consecutive reads) the last run of consecutive pairs whose pieces add up to ``total``."""
    seen: dict[int, tuple[float, int]] = {}
    found = None
    for t, host, ex in reads:
        if t - total in seen:
            h0, e0 = seen[t - total]
            found = (host - h0, ex - e0)
        seen.setdefault(t, (host, ex))
    if found is not None:
        return found
    for start in range(len(reads) - 2, -1, -1):
        cyc, sec, ex = 0, 0.0, 0
        for i in range(start, len(reads) - 1, 2):
            cyc += reads[i + 1][0] - reads[i][0]
            sec += reads[i + 1][1] - reads[i][1]
            ex += reads[i + 1][2] - reads[i][2]
            if cyc >= total:
                break
        if cyc == total:
            return sec, ex
    return None


def _turns(modes) -> list[str]:
    """The modes a CPU-bound workload runs in turns (kvm's runs on the host's processor
    count no instructions: alone, as for the other workloads)."""
    return [m for m in modes if m != "kvm"]


def plan(modes, workloads, repeat: int) -> list[tuple[str, str]]:
    """Every boot ``measure`` makes, in order, as (label, kind) for a progress line;
    a mode's boots cost alike, so the mode is the kind an estimate learns from (the
    CPU-bound workloads' boots in turns: one step for all of a round's)."""
    out = []
    for name in workloads:
        for k in range(repeat):
            run = f" (run {k + 1}/{repeat})" if repeat > 1 else ""
            if name in CPU and len(_turns(modes)) > 1:
                out.append((f"vmbench: {name} under {', '.join(_turns(modes))} in turns{run}",
                            "turns"))
                out += [(f"vmbench: {name} under {m}{run}", m) for m in modes if m == "kvm"]
            else:
                out += [(f"vmbench: {name} under {mode}{run}", mode) for mode in modes]
    return out


def measure(modes=("native", "trapemu", "bt", "paravirt", "hvm", "hvm+ept"), workloads=None, scale: float = 1.0,
            engine: str = "jit", repeat: int = 2, report=print, progress=None) -> dict:
    """Measure; ``report`` gets each row as text, ``progress`` (ui.progress.Progress over
    ``plan``) hears of each boot."""
    names = workloads or NANO + LMBENCH + CPU
    if "kvm" in modes and _kvm_limit() is not None:
        report(f"kvm: not run on this host: {_kvm_limit()}")
    results: dict = {}
    step = 0
    for name in names:
        iters = max(1, int(ITERS.get(name, 10) * scale))
        # the modes take turns (native, trapemu, ..., native, trapemu, ...), so a change
        # in the machine's load hits them alike; the fastest boot of each counts, and
        # the spread of its boots says how far its figure can be trusted
        samples: dict[str, list] = {mode: [] for mode in modes}
        failed: dict[str, dict] = {}
        turns = _turns(modes) if name in CPU and len(_turns(modes)) > 1 else []
        rounds = []                 # (CPU-bound) each round's figures, mode by mode
        for _ in range(repeat):
            if turns:
                step += 1
                if progress is not None:
                    progress.start(step - 1)
                got = _interleaved(turns, name, iters, engine)
                if progress is not None:
                    progress.done(step - 1)
                rounds.append(got)
            for mode in modes:
                if mode in turns:
                    c = got[mode]
                else:
                    step += 1
                    if mode in failed:
                        continue
                    if progress is not None:
                        progress.start(step - 1)
                    c = _run(_kernel(mode), mode, name, iters, engine)
                    if progress is not None:
                        progress.done(step - 1)
                if c["ok"]:
                    samples[mode].append(c)
                else:
                    failed[mode] = c
        row = {}
        for mode in modes:
            if mode in failed:
                row[mode] = failed[mode]
                continue
            walls = [c["wall_us"] for c in samples[mode]]
            row[mode] = dict(min(samples[mode], key=lambda c: c["wall_us"]),
                             spread=max(walls) / min(walls) - 1 if min(walls) else 0.0)
            if turns and mode in turns and mode != "native" and "native" not in failed:
                # the ratios taken within each round (the same turns of the same load)
                row[mode]["rounds"] = [(r[mode]["wall_us"] / r["native"]["wall_us"],
                                        r[mode]["cpu_us"] / r["native"]["cpu_us"])
                                       for r in rounds if r[mode]["ok"] and r["native"]["ok"]
                                       and r["native"]["wall_us"] and r["native"]["cpu_us"]]
        results[name] = row
        report(_line(name, iters, row, modes))
    if any(n in HW_PUBLISHED for n in names) and {"kvm", *HVM_MODES} & set(modes):
        report("\n".join(hardware_vs_bt(results, modes)))
    cpu = [n for n in names if n in CPU]
    if cpu and "native" in modes:
        report(_throughput(cpu, results, modes))
    return results


def _ratio(a, b) -> float:
    return a / b if b else float("nan")


def _line(name: str, iters: int, row: dict, modes) -> str:
    nat = row.get("native")
    parts = [f"{name:10s} x{iters:<5d}"]
    for mode in modes:
        c = row[mode]
        if not c["ok"]:
            parts.append(f"{mode}: {'not run here' if c.get('why') and mode == 'kvm' else 'failed'}")
            continue
        txt = f"{mode}: {c['cycles']:>7,} cyc {c['wall_us']:>9.1f} us (±{50 * c['spread']:.0f}%)"
        if c.get("exits_per_op") is not None:
            txt += f" {c['exits_per_op']:.2f} exits/op"
        if mode != "native" and nat and nat["ok"]:
            # (kvm's cycles are the host's TSC, not retired instructions: no cycle ratio)
            cyc = "" if mode in REAL_TSC else f"x{_ratio(c['cycles'], nat['cycles']):.2f} cyc, "
            if c.get("rounds"):
                (w, ws), (u, us) = (_median_spread([r[i] for r in c["rounds"]]) for i in (0, 1))
                txt += f" ({cyc}x{w:.3f} wall ±{100 * ws:.1f}%, x{u:.3f} cpu ±{100 * us:.1f}%)"
            else:
                txt += f" ({cyc}x{_ratio(c['wall_us'], nat['wall_us']):.2f} wall)"
        parts.append(txt)
    if name in PUBLISHED:
        native, vmm = PUBLISHED[name]
        parts.append(f"| A&A 2006: native {native if native is not None else '?'}, software VMM {vmm}"
                     + (f", hardware VMM {HW_PUBLISHED[name]:,}" if name in HW_PUBLISHED else ""))
    return "  ".join(parts)


def _median_spread(xs) -> tuple[float, float]:
    """The median of ``xs`` and half their range relative to it."""
    xs = sorted(xs)
    k = len(xs) // 2
    med = xs[k] if len(xs) % 2 else (xs[k - 1] + xs[k]) / 2
    return med, (xs[-1] - xs[0]) / 2 / med if med else 0.0


def _geomean(xs) -> float:
    return math.exp(sum(math.log(x) for x in xs) / len(xs))


def throughput(names, results, modes) -> dict:
    """The CPU-bound suite's throughput under each monitor relative to native, in percent
    (geometric mean of the per-workload ratios): mode -> (guest cycles, wall time), and
    where the workloads ran in turns, per round (the round's geometric mean, each
    workload's ratio taken within the round): mode -> (..., wall's spread, CPU time, its
    spread), median and half the range of the rounds."""
    out = {}
    for mode in modes:
        if mode == "native":
            continue
        cyc, wall, per_round = [], [], []
        for n in names:
            nat, c = results[n]["native"], results[n][mode]
            if nat["ok"] and c["ok"]:
                cyc.append(_ratio(nat["cycles"], c["cycles"]))
                wall.append(_ratio(nat["wall_us"], c["wall_us"]))
                per_round.append(c.get("rounds") or [])
        if not wall:
            continue
        out[mode] = (None if mode in REAL_TSC else 100 * _geomean(cyc), 100 * _geomean(wall))
        k = min(len(r) for r in per_round)
        if k:
            w = _median_spread([100 / _geomean([r[i][0] for r in per_round]) for i in range(k)])
            u = _median_spread([100 / _geomean([r[i][1] for r in per_round]) for i in range(k)])
            out[mode] = (out[mode][0], w[0], w[1], u[0], u[1])
    return out


def hardware_vs_bt(results: dict, modes) -> list[str]:
    """Adams & Agesen's question per operation: does hardware assist (their VT-x VMM;
    here kvm, and hvm where measured: with shadow paging as theirs, and with EPT) or binary
    translation win?  Their cycles, and ringvisor's wall ratios to native with the
    hardware side's exits per operation."""
    hw_modes = [m for m in (*HVM_MODES, "kvm") if m in modes]
    lines = ["Hardware assist against binary translation (Adams & Agesen, ASPLOS 2006: "
             "Pentium 4 cycles, software VMM / hardware VMM):"]
    for name, hw in HW_PUBLISHED.items():
        sw = SW_CYCLES[name]
        theirs = "hardware wins" if hw < sw else "binary translation wins"
        parts = [f"  {name:8s} theirs: {sw:,} / {hw:,}, {theirs}"]
        row = results.get(name)
        nat = row.get("native") if row else None
        if row and nat and nat["ok"]:
            bt = row.get("bt")
            if bt and bt["ok"]:
                parts.append(f"ours: bt x{_ratio(bt['wall_us'], nat['wall_us']):.2f} wall")
            for m in hw_modes:
                c = row.get(m)
                if c and c["ok"]:
                    parts.append(f"{m} x{_ratio(c['wall_us'], nat['wall_us']):.2f} wall, "
                                 f"{c['exits_per_op']:.2f} exits/op")
                elif c:
                    parts.append(f"{m}: {c.get('why') or 'failed'}")
        lines.append("; ".join(parts))
    return lines


def _throughput(names, results, modes) -> str:
    out = ["CPU-bound suite throughput relative to native (geometric mean over "
           f"{', '.join(names)}):"]
    for mode, (cyc, wall, *rounds) in throughput(names, results, modes).items():
        cycles = "host TSC cycles, not comparable" if cyc is None else f"{cyc:.1f}% in guest cycles"
        if rounds:
            ws, cpu, cs = rounds
            out.append(f"  {mode}: {cycles}, {wall:.1f}% in wall time (±{100 * ws:.1f}%), "
                       f"{cpu:.1f}% in CPU time (±{100 * cs:.1f}%): medians of the rounds "
                       f"run in turns, with half their range")
        else:
            out.append(f"  {mode}: {cycles}, {wall:.1f}% in wall time")
    if "paravirt" in modes:
        out.append(f"  published for Xen (Barham et al., SOSP 2003): {XEN_SOSP03}")
    return "\n".join(out)


def to_json(results: dict, modes, scale: float, engine: str, repeat: int) -> dict:
    """A ``measure`` run as a ``ringvisor.vmbench/1`` document (docs/json.md)."""
    rows = []
    for name, row in results.items():
        nat = row.get("native")
        cells = {}
        for mode in modes:
            c = dict(row[mode])
            rounds = c.pop("rounds", None)
            if mode != "native" and c["ok"] and nat and nat["ok"]:
                c["cycles_ratio"] = None if mode in REAL_TSC else _ratio(c["cycles"], nat["cycles"])
                c["wall_ratio"] = _ratio(c["wall_us"], nat["wall_us"])
                if rounds:
                    (c["wall_ratio"], c["wall_ratio_spread"]), (c["cpu_ratio"], c["cpu_ratio_spread"]) \
                        = (_median_spread([r[i] for r in rounds]) for i in (0, 1))
            cells[mode] = c
        published = None
        if name in PUBLISHED:
            published = {"native": PUBLISHED[name][0], "software_vmm": PUBLISHED[name][1],
                         "hardware_vmm": HW_PUBLISHED.get(name),
                         "source": "Adams & Agesen, ASPLOS 2006, section 6.2 (Pentium 4 cycles)"}
        rows.append({"name": name, "iters": next((c["iters"] for c in cells.values()
                                                 if c.get("iters")), None),
                     "results": cells, "published": published})
    cpu = [n for n in results if n in CPU]
    tp = throughput(cpu, results, modes) if cpu and "native" in modes else {}
    return {"schema": "ringvisor.vmbench/1", "engine": engine, "scale": scale, "repeat": repeat,
            "modes": list(modes), "workloads": rows,
            "throughput": {m: _throughput_json(t) for m, t in tp.items()}}


def _throughput_json(t: tuple) -> dict:
    out = {"cycles_percent": t[0], "wall_percent": t[1]}
    if len(t) > 2:
        out.update(wall_spread=t[2], cpu_percent=t[3], cpu_spread=t[4])
    return out
