"""``ringvisor vmbench --devices``: para-virtual devices against emulated ones.

The chapter calls KVM "a hardware-assisted para-virtualization tool": the CPU is
virtualized by hardware, the devices by para-virtual drivers.  This measures why, on
the teaching kernel, in one run per mode:

- a disk request (``blkbench``: 16 KiB sequential writes, then reads) on the emulated
  ATA disk (programmed I/O: a port access per 32-bit word, and the task file) and on
  virtio-blk (one notify per request, the data moved by the device);
- a console line (the shell: 40 characters typed, echoed and printed) on the 16550A
  UART (a port access or two per byte, an interrupt per received byte) and on the
  virtio console (a notify per write, input in 64-byte buffers with one interrupt).

Each figure is a difference of two runs of the same guest (N and 2N operations: N
disk requests each way, 4N console lines), so boot and set-up cancel out: guest instructions per operation, VM exits per operation
(hvm: the VMCS exits; kvm: KVM_RUN exits; none natively) and the host's CPU time per
operation (the process's, not wall time: the machines here are shared, and a loaded host
makes a difference of wall times meaningless; the KVM vCPU runs in this process, so its
time counts).  Under ``--mode kvm`` the teaching kernel needs paging, which some nested
KVMs cannot run: the mode is then skipped with KVM's reason.
"""

from __future__ import annotations

import gc
import os
import tempfile
import time
from dataclasses import dataclass

from ringvisor.guests.build import image_path
from ringvisor.hw.machine import read_image

SECTOR = 512
BENCH_SECTORS = 1024 + 2 * 64 * 32      # blkbench's BENCH_START and room for its requests
LINE = "x" * 40
MODES = ("native", "hvm", "kvm")
DEVICES = {"disk": ("ATA", "virtio-blk"), "console": ("16550A", "virtio-console")}


@dataclass
class Cost:
    op: str               # "disk" or "console"
    mode: str
    device: str
    instructions: float | None
    exits: float | None
    cpu_us: float


def _exits(m, mon) -> int | None:
    if mon is not None and hasattr(mon, "exits"):
        return sum(mon.exits.values())
    if hasattr(m, "exits"):
        return sum(m.exits.values())
    return None


def _run(mode: str, op: str, virtio: bool, n: int, tmp: str) -> tuple[int | None, int | None, float, bytes]:
    from ringvisor.vmm import create_vm
    out = bytearray()
    kw: dict = {}
    stdin = b""
    if op == "disk":
        path = os.path.join(tmp, f"{mode}-{virtio}-{n}.img")
        with open(path, "wb") as f:
            f.truncate(BENCH_SECTORS * SECTOR)
        kw["virtio_disk" if virtio else "disk"] = path
        cmdline = f"run=blkbench iters={n}"
    else:
        kw["virtio_console"] = virtio
        cmdline = ""
        stdin = ("".join(f"echo {LINE}\n" for _ in range(n)) + "exit\n").encode()
    m, mon = create_vm(read_image(image_path("kernel")), mode, cmdline, 32, output=out.extend, **kw)
    if mode == "kvm":
        m.wall_limit = 120.0
    if stdin:
        m.feed_input(stdin)
    gc.collect()                # (the previous machines' garbage is not this run's cost)
    gc.disable()
    try:
        t0 = time.process_time()
        stop = m.run()
        wall = time.process_time() - t0
    finally:
        gc.enable()
    if mode == "kvm":
        m.close()
    if stop.reason != "exit" or (op == "disk" and b"blkbench: done" not in out):
        raise RuntimeError(f"{mode} {op} ({'virtio' if virtio else 'emulated'}): the guest did not "
                           f"finish ({stop.message or stop.reason}):\n{bytes(out[-400:]).decode()}")
    ins = m.stats()["instructions"]
    return ins, _exits(m, mon), wall, bytes(out)


def _best(mode: str, op: str, virtio: bool, n: int, tmp: str, repeat: int):
    """The run with the least host CPU time of ``repeat`` (the first boots of a process
    pay for imports and warm-ups, and a shared host adds noise; the guest's own counts
    are the same every time)."""
    return min((_run(mode, op, virtio, n, tmp) for _ in range(repeat)), key=lambda r: r[2])


def measure(modes=MODES, n: int = 8, report=lambda s: None,
            repeat: int = 3) -> tuple[list[Cost], dict[str, str]]:
    """The costs per operation, and the modes skipped with why."""
    skipped: dict[str, str] = {}
    costs: list[Cost] = []
    with tempfile.TemporaryDirectory(prefix="rv-devbench-") as tmp:
        _run("native", "console", True, 1, tmp)          # imports and warm-up, not counted
        for mode in modes:
            if mode == "kvm":
                from ringvisor.hw import kvm as K
                why = K.unusable_reason() or K.limits().get("paging")
                if why:
                    skipped[mode] = why
                    report(f"  kvm: skipped: {why}")
                    continue
            for op, names in DEVICES.items():
                for virtio, device in ((False, names[0]), (True, names[1])):
                    # blkbench's n counts writes and reads: 2n requests; a console line is
                    # cheaper, so four times as many make the difference of CPU times clear
                    k = n if op == "disk" else 4 * n
                    a, b = (_best(mode, op, virtio, j, tmp, repeat) for j in (k, 2 * k))
                    ops = 2 * n if op == "disk" else k
                    c = Cost(op, mode, device,
                             None if a[0] is None else (b[0] - a[0]) / ops,
                             None if a[1] is None else (b[1] - a[1]) / ops,
                             (b[2] - a[2]) / ops * 1e6)
                    costs.append(c)
                    report(format_cost(c))
    return costs, skipped


def format_cost(c: Cost) -> str:
    ins = "-" if c.instructions is None else f"{c.instructions:12,.0f}"
    ex = "-" if c.exits is None else f"{c.exits:8,.1f}"
    return f"  {c.op:<8} {c.mode:<7} {c.device:<15} {ins:>12} {ex:>9} {c.cpu_us:11,.0f}"


HEADER = (f"  {'op':<8} {'mode':<7} {'device':<15} {'instr/op':>12} {'exits/op':>9} "
          f"{'cpu us/op':>11}")


def ratios(costs: list[Cost]) -> list[str]:
    """Emulated over virtio, per operation and mode, from the same run."""
    out = []
    by = {(c.op, c.mode, c.device): c for c in costs}
    for op, (emu, pv) in DEVICES.items():
        for mode in MODES:
            e, v = by.get((op, mode, emu)), by.get((op, mode, pv))
            if e is None or v is None:
                continue
            parts = []
            if e.instructions and v.instructions:
                parts.append(f"instructions x{e.instructions / v.instructions:.1f}")
            if e.exits is not None and v.exits:
                parts.append(f"exits x{e.exits / v.exits:.1f}")
            if v.cpu_us > 0:
                parts.append(f"host CPU x{e.cpu_us / v.cpu_us:.1f}")
            out.append(f"  {op:<8} {mode:<7} {emu} / {pv}: " + ", ".join(parts))
    return out


def to_json(costs: list[Cost], skipped: dict[str, str], n: int) -> dict:
    return {"schema": "ringvisor.devbench/1", "n": n, "skipped": skipped,
            "costs": [{"op": c.op, "mode": c.mode, "device": c.device,
                       "instructions_per_op": c.instructions, "exits_per_op": c.exits,
                       "cpu_us_per_op": c.cpu_us} for c in costs]}
