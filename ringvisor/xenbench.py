"""``ringvisor xenbench``: the Xen structure's figures, measured in one run.

- **Aggregate throughput**: N CPU-bound DomUs (the teaching kernel running a
  CPU workload) beside an idle Domain 0, N = 1, 2, 4, 8, 16; the share of a
  fixed span of virtual time the DomUs got together (guest cycles: what the
  hypervisor's own work and Domain 0 took from them shows here), and the
  DomUs' instructions per second of wall time (what context switches cost the
  host), each against one DomU alone.  Xen (SOSP 2003) lost about 7.5% with
  128 domains; the target here is at most 5% at 16.
- **Credit-scheduler fairness**: two CPU-bound DomUs of weights 256 and 512
  (1:2), and one DomU capped at 25% of the CPU.
- **Several physical CPUs** (``ringvisor xen --cpus N``): the aggregate of 1,
  2, 4, 8 CPU-bound DomUs on one pCPU and on two, side by side (the DomUs'
  share of the machine's CPU time -- its processors share one timeline,
  ``hw/smp.py``, so two pCPUs give the DomUs no more guest instructions a
  virtual second than one; what shows is what the second pCPU's scheduling,
  IPIs and turns cost, in guest cycles and in wall time), and three DomUs
  weighted 256:256:512 on two pCPUs (Xen gives them 1:1:2).
- **Block I/O, the chapter's three structures**: the same workload
  (``blkbench``: sequential 16 KiB writes, then reads, on ``xvda`` or the
  ATA disk) through blkfront to blkback in Domain 0 (Xen's split driver),
  through blkfront to the same back-end inside the hypervisor (the monolithic
  structure, ``backend=hypervisor``), and through the ATA disk the
  hypervisor emulates for a bt domain (the unmodified kernel under binary
  translation: the hosted structure), all three on the same hypervisor, with
  the bare machine's ATA disk as a reference: per request in guest cycles (the
  guest's TSC: what every layer under it cost) and wall time, and the
  throughput both give.
- **The inter-domain event-channel round trip**: two DomUs running ``evping``
  (``guests/evping``) bound by ``alloc_unbound``/``bind_interdomain``, sending
  an event back and forth, against the same round trip inside one domain
  (both ends its own: no domain switch), per round trip in guest cycles and
  wall time.
- **``xl create`` to the first console line**: the toolstack building,
  starting and serving a DomU until its first line reaches the console back
  end, in virtual and wall time (Firecracker's bar: 125 ms to init).

Everything runs on fresh machines, one after the other; wall times depend on
the host's load, the guest-cycle figures do not.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

from ringvisor.guests.build import image_path
from ringvisor.hw.clock import TSC_PER_CYCLE
from ringvisor.hypervisor.core import Hypervisor
from ringvisor.hypervisor.sched import ACCT_NS
from ringvisor.hypervisor.interface import HypercallInterface
from ringvisor.hypervisor.xsm import DEFAULT_POLICY
from ringvisor.toolstack.config import DomainConfig, Disk
from ringvisor.vmm import create_vm
from ringvisor.toolstack.xl import Toolstack

CPU_CMDLINE = "run=crc32 iters=100000000"
DOMU_MB = 16
XEN_SOSP_LOSS_128 = 7.5           # % lost with 128 domains (Barham et al., SOSP 2003, fig. 4)
FIRECRACKER_MS = 125


@dataclass
class Share:
    n: int
    share: float                   # of virtual time, the DomUs together
    ips: float                     # DomU instructions per wall second
    spread: float                  # max/min CPU time among the DomUs
    wall: float


class Bench:
    """One machine: Domain 0 idle, DomUs as asked."""

    def __init__(self, n_domus: int, tmp, cpus: int = 1) -> None:
        self.hv = Hypervisor(64 + n_domus * (DOMU_MB + 4), cpus=cpus)
        self.hv.build_dom0(image_path("kernel-pv").read_bytes(), "", 16, "kernel-pv")
        self.hv.start()
        self.ts = Toolstack(HypercallInterface(self.hv), tmp)
        self.out: dict[int, bytearray] = {}

    def create(self, name: str, cmdline: str, **kw) -> int:
        d = self.ts.create(DomainConfig(name=name, kernel="kernel-pv", cmdline=cmdline,
                                        memory=DOMU_MB, **kw))
        buf = self.out[d] = bytearray()
        self.ts.managed[d].listeners.append(buf.extend)
        return d

    def started(self, domids) -> bool:
        return all(b"init: started" in self.out[d] for d in domids)

    def window(self, domids, ns: int) -> tuple[dict[int, int], float]:
        """CPU time each got over ``ns`` of virtual time; the wall time it took."""
        doms = [self.hv.domains[d] for d in domids]
        before = [d.cpu_time_ns for d in doms]
        t0 = time.perf_counter()
        self.hv.run_until(lambda: False, 10 ** 12, ns=ns)
        wall = time.perf_counter() - t0
        return {d.domid: d.cpu_time_ns - b for d, b in zip(doms, before)}, wall


def aggregate(counts, window_ns: int, tmp, cpus: int = 1) -> list[Share]:
    out = []
    for n in counts:
        b = Bench(n, tmp / f"agg{n}-{cpus}", cpus)
        ids = [b.create(f"cpu{i}", CPU_CMDLINE) for i in range(n)]
        b.hv.run_until(lambda: b.started(ids), 10 ** 10, step=200_000)
        got, wall = b.window(ids, window_ns)
        total = sum(got.values())
        out.append(Share(n, total / window_ns, (total / 10) / wall,
                         max(got.values()) / max(1, min(got.values())), wall))
    return out


# Before a fairness window: five accounting periods, the time an idle Domain 0 takes to
# reach the bound on its credit (one time slice; till then it earns by its weight the
# credit it does not use, and the busy domains share less than the whole CPU)
WARMUP_NS = 5 * ACCT_NS


def fairness(window_ns: int, tmp) -> dict:
    b = Bench(2, tmp / "fair")
    a = b.create("w256", CPU_CMDLINE, weight=256)
    c = b.create("w512", CPU_CMDLINE, weight=512)
    b.hv.run_until(lambda: b.started([a, c]), 10 ** 10, step=200_000)
    b.window([a, c], WARMUP_NS)
    got, _ = b.window([a, c], window_ns)
    capped = Bench(1, tmp / "cap")
    d = capped.create("cap25", CPU_CMDLINE, cap=25)
    capped.hv.run_until(lambda: capped.started([d]), 10 ** 10, step=200_000)
    capped.window([d], WARMUP_NS)
    got_cap, _ = capped.window([d], window_ns)
    return {"ratio": got[c] / max(1, got[a]), "cap_share": got_cap[d] / window_ns}


def smp_fairness(window_ns: int, tmp) -> tuple[list[float], float]:
    """Three CPU-bound DomUs weighted 256:256:512 on two pCPUs: each one's share of the
    machine's CPU time; and a DomU capped at 50 (half of one pCPU) alone on two."""
    b = Bench(3, tmp / "fair-smp", cpus=2)
    ids = [b.create(f"w{w}-{i}", CPU_CMDLINE, weight=w) for i, w in enumerate((256, 256, 512))]
    b.hv.run_until(lambda: b.started(ids), 10 ** 10, step=200_000)
    b.window(ids, WARMUP_NS)
    got, _ = b.window(ids, window_ns)
    capped = Bench(1, tmp / "cap-smp", cpus=2)
    d = capped.create("cap50", CPU_CMDLINE, cap=50)
    capped.hv.run_until(lambda: capped.started([d]), 10 ** 10, step=200_000)
    capped.window([d], WARMUP_NS)
    got_cap, _ = capped.window([d], window_ns)
    return [got[d] / window_ns for d in ids], got_cap[d] / window_ns


def smp_section(say, counts, window_ms: int, fair_ms: int, tmp) -> None:
    say(f"several pCPUs (ringvisor xen --cpus N): N CPU-bound DomUs ({CPU_CMDLINE}), "
        f"{window_ms} ms of virtual time each, Domain 0 idle, on 1 and on 2 pCPUs")
    say(f"{'N':>3} {'pCPUs':>5} {'DomUs share':>12} {'instr/s (wall)':>15} {'vs 1 pCPU':>9} "
        f"{'max/min':>8} {'wall s':>7}")
    one = aggregate(counts, window_ms * 1_000_000, tmp, cpus=1)
    two = aggregate(counts, window_ms * 1_000_000, tmp, cpus=2)
    for a, b in zip(one, two):
        for cpus, r in ((1, a), (2, b)):
            say(f"{r.n:>3} {cpus:>5} {100 * r.share:>11.2f}% {r.ips / 1e6:>13.2f} M "
                f"{r.ips / a.ips:>8.2f}x {r.spread:>8.3f} {r.wall:>7.1f}")
    say("    (share: of the machine's CPU time, the sum of its processors' instructions; "
        "instr/s: the DomUs' guest instructions a second of wall time)")
    shares, cap = smp_fairness(fair_ms * 1_000_000, tmp)
    say(f"credit scheduler on 2 pCPUs over {fair_ms} ms: weights 256:256:512 -> "
        + ":".join(f"{100 * s:.2f}%" for s in shares)
        + f" of the machine (Xen: 25:25:50); 512/256 = {shares[2] / max(shares[0], 1e-9):.3f}; "
        f"cap 50 (half of one pCPU) alone -> {100 * cap:.2f}% (target 25)")


BLK_RE = re.compile(rb"blkbench: (write|read) \d+ x (\d+) B: (\d+) cycles/request")
BLK_SECTORS = 1024 + 32 * 4096          # room for up to 4096 requests (guests/user/blk.c)


@dataclass
class BlockPath:
    name: str
    cycles: dict                   # "write"/"read" -> guest cycles per request
    wall_us: dict                  # "write"/"read" -> wall microseconds per request
    size: int                      # bytes per request
    hz: int                        # the machine's clock rate (cycles per second)


class _Timed:
    """A console sink that notes the wall time of each blkbench line."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.marks: list[float] = []

    def __call__(self, chunk: bytes) -> None:
        self.data.extend(chunk)
        self.marks.extend(time.perf_counter() for _ in range(chunk.count(b"\n")))

    def at(self, line: bytes) -> float:
        """The wall time the first line starting with ``line`` came."""
        lines = bytes(self.data).split(b"\n")
        return next(self.marks[i] for i, l in enumerate(lines)
                    if l.startswith(line) and i < len(self.marks))

    def result(self, name: str, n: int, hz: int) -> BlockPath:
        lines = bytes(self.data).split(b"\n")
        at = {l.split(b" ")[1].decode(): self.marks[i] for i, l in enumerate(lines)
              if l.startswith(b"blkbench: ") and i < len(self.marks)}
        found = {m.group(1).decode(): (int(m.group(2)), int(m.group(3)))
                 for m in BLK_RE.finditer(self.data)}
        if set(found) != {"write", "read"} or not {"start", "write", "read"} <= set(at):
            raise RuntimeError(f"{name}: blkbench did not finish:\n{bytes(self.data).decode()}")
        # the wall time between the lines that end each phase
        wall = {"write": (at["write"] - at["start"]) / n * 1e6,
                "read": (at["read"] - at["write"]) / n * 1e6}
        # the guest printed TSC ticks; the table gives cycles of the machine's clock
        return BlockPath(name, {k: v[1] // TSC_PER_CYCLE for k, v in found.items()}, wall,
                         found["write"][0], hz)


def _image(tmp) -> str:
    tmp.mkdir(parents=True, exist_ok=True)
    path = tmp / "disk.img"
    with open(path, "wb") as f:
        f.truncate(BLK_SECTORS * 512)
    return str(path)


def block_io(tmp, requests: int) -> list[BlockPath]:
    cmdline = f"run=blkbench iters={requests}"
    out = []
    for name, type_, kernel, backend in (
            ("Dom0 blkback (Xen split driver)", "pv", "kernel-pv", "dom0"),
            ("blkback in the hypervisor (monolithic)", "pv", "kernel-pv", "hypervisor"),
            ("ATA disk of a bt domain (hosted)", "bt", "kernel", "dom0")):
        where = tmp / f"blk-{type_}-{backend}"
        b = Bench(1, where)
        sink = _Timed()
        d = b.ts.create(DomainConfig(name="blk", type=type_, kernel=kernel, cmdline=cmdline,
                                     memory=DOMU_MB, on_poweroff="preserve",
                                     disks=[Disk(_image(where), "raw", "xvda", "rw", backend)]))
        b.ts.managed[d].listeners.append(sink)
        b.hv.run_until(lambda: b"blkbench: done" in sink.data or
                       b.hv.domains[d].shutdown_reason is not None, 10 ** 12, step=50_000)
        out.append(sink.result(name, requests, b.hv.clock.cpu_hz))
    sink = _Timed()
    m, _ = create_vm(image_path("kernel").read_bytes(), "native", cmdline, 32, output=sink,
                     disk=_image(tmp / "ata-native"))
    m.run()
    out.append(sink.result("ATA disk, bare machine", requests, m.clock.cpu_hz))
    return out


# The default policy lets a DomU talk only to Domain 0; the ping-pong pair needs the
# rule Xen's FLASK policy would have for two DomUs meant to talk (as for a vchan).
PAIR_RULE = "allow domU_t domU_t:event { bind send };"
EVPING_RE = re.compile(rb"\[timing\] evping: (\d+) round trips, (\d+) cycles/round trip")


@dataclass
class RoundTrip:
    name: str
    cycles: int                    # guest cycles per round trip (from the pinging domain's TSC)
    wall_us: float                 # wall microseconds per round trip


def _evping(b: Bench, name: str, role: str, n: int) -> tuple[int, _Timed]:
    sink = _Timed()
    d = b.ts.create(DomainConfig(name=name, kernel="evping", cmdline=f"role={role} n={n}",
                                 memory=4, on_poweroff="preserve", on_crash="preserve"))
    b.ts.managed[d].listeners.append(sink)
    return d, sink


def _timed_trips(b: Bench, name: str, d: int, sink: _Timed, n: int) -> RoundTrip:
    b.hv.run_until(lambda: EVPING_RE.search(sink.data) is not None or
                   b.hv.domains[d].shutdown_reason is not None, 10 ** 12, step=50_000)
    m = EVPING_RE.search(sink.data)
    if m is None:
        raise RuntimeError(f"{name}: evping did not finish:\n{bytes(sink.data).decode()}"
                           + b.ts.dmesg())
    return RoundTrip(name, int(m.group(2)) // TSC_PER_CYCLE,
                     (sink.at(b"evping: done") - sink.at(b"evping: start")) / n * 1e6)


def pair(b: Bench, n: int) -> tuple[int, int, _Timed]:
    """Start a ping-pong pair of DomUs and introduce them through xenstore, as a
    toolstack does for two domains meant to talk: ping's peer is pong, ping allocates
    the port, and the toolstack tells pong the domain and the port (ping, pong, ping's
    console)."""
    pong, _ = _evping(b, "pong", "pong", n)
    ping, sink = _evping(b, "ping", "ping", n)
    b.ts.xs.write(f"/local/domain/{ping}/data/evping/peer", str(pong))
    port = f"/local/domain/{ping}/data/evping/port"
    b.hv.run_until(lambda: b.ts.xs.read(port) is not None or
                   b.hv.domains[ping].shutdown_reason is not None, 10 ** 12, step=50_000)
    if b.ts.xs.read(port) is not None:
        b.ts.xs.write(f"/local/domain/{pong}/data/evping/peer", str(ping))
        b.ts.xs.write(f"/local/domain/{pong}/data/evping/port", b.ts.xs.read(port))
    return ping, pong, sink


def event_round_trip(tmp, n: int) -> list[RoundTrip]:
    """The round trip inside one domain, then between two DomUs."""
    b = Bench(2, tmp / "evtchn")
    b.ts.load_policy(DEFAULT_POLICY.read_text() + "\n" + PAIR_RULE + "\n")
    d, sink = _evping(b, "loop", "loop", n)
    out = [_timed_trips(b, "one domain, both ends (no switch)", d, sink, n)]
    ping, _, sink = pair(b, n)
    out.append(_timed_trips(b, "two DomUs (bind_interdomain)", ping, sink, n))
    return out


def create_latency(tmp, repeat: int = 3) -> list[tuple[float, float]]:
    """(virtual ms, wall ms) from `xl create` to the DomU's first console line."""
    b = Bench(repeat, tmp / "create")
    out = []
    for i in range(repeat):
        seen = {}
        t0 = time.perf_counter()
        d = b.create(f"c{i}", "")
        m = b.ts.managed[d]
        m.listeners.append(lambda data: seen.setdefault("wall", time.perf_counter()))
        b.hv.run_until(lambda: m.first_output_ns is not None, 10 ** 9, step=5_000)
        out.append(((m.first_output_ns - m.created_ns) / 1e6, (seen["wall"] - t0) * 1e3))
    return out


def run(counts=(1, 2, 4, 8, 16), window_ms: int = 600, fair_ms: int = 1500, tmp=None,
        blk_requests: int = 64, evtchn_trips: int = 2000, smp_counts=(1, 2, 4, 8),
        smp_only: bool = False) -> str:
    import tempfile
    from pathlib import Path
    tmp = Path(tmp or tempfile.mkdtemp(prefix="rv-xenbench-"))
    lines = []
    def say(s: str = "") -> None:
        print(s, flush=True)
        lines.append(s)
    if smp_only:
        smp_section(say, smp_counts, window_ms, fair_ms, tmp)
        return "\n".join(lines)
    say(f"aggregate throughput: N CPU-bound DomUs ({CPU_CMDLINE}), {window_ms} ms of virtual "
        "time each, Domain 0 idle")
    say(f"{'N':>3} {'DomUs share':>12} {'lost':>7} {'instr/s (wall)':>15} {'lost':>7} "
        f"{'max/min':>8} {'wall s':>7}")
    rows = aggregate(counts, window_ms * 1_000_000, tmp)
    base = rows[0]
    for r in rows:
        say(f"{r.n:>3} {100 * r.share:>11.2f}% {100 * (1 - r.share / base.share):>6.2f}% "
            f"{r.ips / 1e6:>13.2f} M {100 * (1 - r.ips / base.ips):>6.2f}% {r.spread:>8.3f} "
            f"{r.wall:>7.1f}")
    say(f"    (Xen, SOSP 2003: about {XEN_SOSP_LOSS_128}% lost with 128 domains; "
        "target here: at most 5% at 16)")
    f = fairness(fair_ms * 1_000_000, tmp)
    say()
    say(f"credit scheduler over {fair_ms} ms: weights 256:512 -> CPU 1:{f['ratio']:.3f} "
        f"(off by {100 * abs(f['ratio'] - 2) / 2:.2f}%, target within 2%); "
        f"cap 25% -> {100 * f['cap_share']:.2f}% (target 25 +- 2)")
    say()
    smp_section(say, smp_counts, window_ms, fair_ms, tmp)
    blk = block_io(tmp, blk_requests)
    say()
    size = blk[0].size
    say(f"block I/O: {blk_requests} sequential {size // 1024} KiB writes, then reads "
        "(blkbench), per request")
    say(f"{'path':<40} {'op':<5} {'guest cycles':>12} {'MB/s (virt)':>11} "
        f"{'wall ms':>9} {'KB/s (wall)':>11} {'cycles':>7} {'wall':>6}")
    for p in blk:
        for op in ("write", "read"):
            c, w = p.cycles[op], p.wall_us[op]
            say(f"{p.name:<40} {op:<5} {c:>12,} {size * p.hz / c / 1e6:>11.1f} "
                f"{w / 1e3:>9.1f} {size * 1e3 / w:>11.1f} {c / blk[0].cycles[op]:>6.2f}x "
                f"{w / blk[0].wall_us[op]:>5.2f}x")
    say(f"    (against the Dom0 row. Guest cycles: the guest's TSC in cycles of the machine's "
        f"{blk[0].hz // 1_000_000} MHz clock, one instruction a cycle, counting every "
        "instruction any domain or the guest kernel ran for the request; work done in the "
        "host process -- the toolstack's blkback, the "
        "hypervisor's, the emulated ATA disk -- shows in wall time only)")
    trips = event_round_trip(tmp, evtchn_trips)
    say()
    say(f"event-channel round trip ({evtchn_trips} round trips of evping, EVTCHNOP_send each way, "
        "waiting with SCHEDOP_block)")
    say(f"{'path':<40} {'guest cycles':>12} {'wall us':>9} {'cycles':>7} {'wall':>6}")
    for t in trips:
        say(f"{t.name:<40} {t.cycles:>12,} {t.wall_us:>9.1f} {t.cycles / trips[0].cycles:>6.2f}x "
            f"{t.wall_us / trips[0].wall_us:>5.2f}x")
    say("    (against one domain. Guest cycles: the pinging domain's TSC, which counts the "
        "instructions of every domain that ran meanwhile -- the ponging one's too; the "
        "hypervisor's switch between domains is Python and shows in wall time only)")
    lat = create_latency(tmp)
    say()
    say("xl create -> first console line: " + ", ".join(f"{v:.1f} ms virtual / {w:.0f} ms wall"
                                                     for v, w in lat)
        + f"  (Firecracker's bar: {FIRECRACKER_MS} ms)")
    return "\n".join(lines)
