"""The ``ringvisor`` command line: argument parsing and output only, no logic."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from ringvisor.abi import RV_MAX_VCPUS
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


def port_number(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 < v < 65536:
        raise argparse.ArgumentTypeError(f"port {v} is out of range (1-65535)")
    return v


def _version() -> str:
    from ringvisor import __version__
    return __version__


def vcpu_count(text: str) -> int:
    """A domain's number of vCPUs: 1 to ringvisor's limit."""
    v = positive_int(text)
    if v > RV_MAX_VCPUS:
        raise argparse.ArgumentTypeError(f"at most {RV_MAX_VCPUS} vCPUs, not {v}")
    return v


def cpu_count(text: str) -> int:
    """The PC's number of processors: 1 to its limit (hw/smp.py)."""
    from ringvisor.hw.smp import MAX_CPUS
    v = positive_int(text)
    if v > MAX_CPUS:
        raise argparse.ArgumentTypeError(f"the PC has at most {MAX_CPUS} processors, not {v}")
    return v


def positive_int(text: str) -> int:
    try:
        v = int(text.replace("_", ""), 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
    return v


def _console_args(r) -> None:
    """The options of a VM run in the foreground on the console (run, restore)."""
    r.add_argument("--engine", choices=("jit", "interp"), default="jit",
                   help="translating engine (default) or the one-instruction interpreter")
    r.add_argument("--max-instructions", type=positive_int, metavar="N",
                   help="stop after N more guest instructions (exit status 4)")
    r.add_argument("--trace", metavar="FILE",
                   help="write every translation, exception and interrupt to FILE")
    r.add_argument("--stats", action="store_true", help="print execution statistics to stderr")
    r.add_argument("--json", action="store_true",
                   help="with --stats: one JSON document on stderr instead (docs/json.md)")
    r.add_argument("--pace", choices=("auto", "on", "off"), default="auto",
                   help="keep virtual time from running ahead of wall time (auto: on a terminal)")
    r.add_argument("--serial", action="append", metavar="DEV",
                   help="a serial port's host end, QEMU's spellings: stdio, mon:stdio, null, "
                        "file:PATH, tcp:[HOST]:PORT[,server][,nowait], unix:PATH[,server]"
                        "[,nowait]; the first is COM1, a second adds COM2 (default: stdio)")
    r.add_argument("--gdb", metavar="DEV", help="wait for gdb on tcp:[HOST]:PORT or unix:PATH")
    r.add_argument("-s", dest="gdb", action="store_const", const="tcp::1234",
                   help="shorthand for --gdb tcp::1234")
    r.add_argument("-S", dest="hold", action="store_true",
                   help="hold the guest before its first instruction until gdb (or the "
                        "monitor prompt's cont) continues it")
    r.add_argument("--web", type=port_number, metavar="PORT",
                   help="serve a live view of the VM's counters on http://127.0.0.1:PORT/")


def _stop_args(r) -> None:
    r.add_argument("--stop-at", type=positive_int, metavar="N",
                   help="stop when the guest has retired N instructions (counted from boot)")
    r.add_argument("--save", metavar="FILE",
                   help="with --stop-at: save the stopped VM to FILE (ringvisor restore FILE "
                        "resumes it)")
    r.add_argument("--mapped", action="store_true",
                   help="with --save: keep memory page for page (a sparse file), for restores "
                        "that map it lazily and share it copy-on-write (ringvisor clone)")


def _migrate_args(r) -> None:
    r.add_argument("--incoming", metavar="HOST:PORT",
                   help="do not boot: wait for a VM migrating to HOST:PORT and run it (port 0: "
                        "any free port, announced on stderr)")
    r.add_argument("--migrate-to", metavar="HOST:PORT",
                   help="with --migrate-at: live-migrate the VM to a 'ringvisor run --incoming' "
                        "(pre-copy)")
    r.add_argument("--migrate-at", type=positive_int, metavar="N",
                   help="start migrating when the guest has retired N instructions")
    r.add_argument("--postcopy", action="store_true",
                   help="with --migrate-to: post-copy (resume the VM on the destination at "
                        "once, its pages following on demand and in the background)")
    r.add_argument("--migrate-link", type=positive_int, default=1000, metavar="MBIT",
                   help="the link speed, in Mbit/s, that the guest's time is measured against "
                        "while pages are sent (default 1000)")


def _record_args(r) -> None:
    r.add_argument("--record", metavar="FILE",
                   help="log the host's input against instruction counts, with checkpoints, "
                        "to FILE (ringvisor replay FILE plays the run again)")
    r.add_argument("--checkpoint-every", type=positive_int, default=5_000_000, metavar="N",
                   help="with --record: keep the VM's state every N instructions, where "
                        "'replay --goto' starts from (default 5,000,000)")


def _store_arg(r) -> None:
    r.add_argument("--store", default=os.environ.get("RINGVISOR_STORE", "ringvisor-snapshots"),
                   metavar="DIR", help="the snapshot tree's directory (default: $RINGVISOR_STORE "
                                       "or ./ringvisor-snapshots)")


def _new_node_args(r) -> None:
    r.add_argument("--description", default="", metavar="TEXT")
    r.add_argument("--parent", metavar="NODE", help="default: the current node")
    _store_arg(r)


def _snapshot_out_args(r) -> None:
    r.add_argument("--snapshot", metavar="NAME",
                   help="with --stop-at: add the stopped VM to the snapshot tree as NAME (a child "
                        "of the current node)")
    r.add_argument("--description", default="", metavar="TEXT", help="the snapshot's description")
    _store_arg(r)


def build_parser() -> Parser:
    p = Parser(prog="ringvisor", description="Virtualization structures on an IA-32 PC in Python.")
    p.add_argument("--version", action="version", version=f"ringvisor {_version()}")
    sub = p.add_subparsers(dest="command", parser_class=Parser, metavar="COMMAND")
    sub.required = True

    r = sub.add_parser("run", help="boot a Multiboot kernel on the emulated PC")
    r.add_argument("kernel", metavar="KERNEL", nargs="?",
                   help="a Multiboot image (ELF32 or a.out kludge), or the name of a bundled "
                        "image: kernel, bench-sieve, bench-crc32, ...")
    r.add_argument("--bios", metavar="ROM",
                   help="instead of a kernel: a firmware ROM image (a multiple of 64 KiB), "
                        "started at the reset vector in real mode as qemu -bios does "
                        "(bare, or under --mode hvm)")
    r.add_argument("--post-log", metavar="FILE",
                   help="write every POST code (ports 0x80 and 0x190) to FILE: instruction "
                        "count, port, value")
    r.add_argument("--mode", choices=("native", "trapemu", "bt", "paravirt", "hvm", "kvm"),
                   default="native",
                   help="native: the bare hardware; trapemu: the kernel de-privileged to ring 1 "
                        "under trap-and-emulate; bt: binary translation of kernel code; "
                        "paravirt: a kernel built by pvcc, with hypercalls and event channels; "
                        "hvm: the kernel at ring 0 in VMX non-root operation (VT-x); "
                        "kvm: the host's processor through /dev/kvm, with ringvisor's devices")
    r.add_argument("--no-ept", dest="ept", action="store_false",
                   help="--mode hvm without EPT: the monitor keeps shadow page tables (the "
                        "first generation of VT-x, where the guest's CR3 loads, INVLPGs and "
                        "page faults exit); by default hvm maps guest-physical memory with EPT")
    r.add_argument("--mem", type=parse_size, default=32, metavar="SIZE",
                   help="guest RAM (default 32M)")
    r.add_argument("--smp", type=int, default=1, metavar="N",
                   help="processors (1-8, default 1): the others are started by the kernel "
                        "with INIT and SIPI, as on QEMU's -smp N")
    r.add_argument("--append", default="", metavar="CMDLINE", help="kernel command line")
    r.add_argument("--module", action="append", default=[], metavar="'FILE [ARGS]'",
                   help="a Multiboot module, with its string's arguments after a space as in "
                        "QEMU's -initrd (repeatable)")
    r.add_argument("--disk", metavar="PATH",
                   help="a raw disk image as the ATA disk on the primary IDE channel (QEMU's "
                        "-drive file=PATH,format=raw,if=ide)")
    r.add_argument("--disk-ro", action="store_true", help="the disk is read-only")
    r.add_argument("--virtio-disk", metavar="PATH",
                   help="a raw disk image as a legacy virtio-blk device on PCI bus 0 (QEMU's "
                        "-device virtio-blk-pci,disable-modern=on,drive=...); the teaching "
                        "kernel uses it instead of the ATA disk")
    r.add_argument("--virtio-disk-ro", action="store_true", help="the virtio disk is read-only")
    r.add_argument("--virtio-console", action="store_true",
                   help="a legacy virtio console on PCI bus 0 (QEMU's virtio-serial-pci with a "
                        "virtconsole): it shares COM1's terminal, and the teaching kernel's "
                        "console goes through it")
    _console_args(r)
    _stop_args(r)
    _record_args(r)

    _snapshot_out_args(r)
    _migrate_args(r)

    rs = sub.add_parser("restore", help="resume a VM saved by 'run --stop-at N --save FILE'")
    rs.add_argument("image", metavar="FILE", help="a saved VM")
    rs.add_argument("--lazy", action="store_true",
                    help="a mapped image: do not check its pages' checksums before resuming "
                         "(pages load on first touch; a damaged page goes unnoticed)")
    rs.add_argument("--mode", choices=("native", "kvm"),
                    help="what runs a VM saved from the bare machine: native (the emulated "
                         "CPU, the default) or kvm (the host's processor through /dev/kvm)")
    _console_args(rs)
    _stop_args(rs)
    _record_args(rs)
    _snapshot_out_args(rs)

    rp = sub.add_parser("replay", help="play a run recorded with --record again: the same "
                                       "input at the same instructions, the same output")
    rp.add_argument("recording", metavar="FILE")
    rp.add_argument("--goto", type=positive_int, metavar="N",
                    help="travel to instruction N (from the last checkpoint before it), show the "
                         "CPU there and stop; --save/--snapshot keep the VM")
    rp.add_argument("--engine", choices=("jit", "interp"), default="jit")
    rp.add_argument("--save", metavar="FILE", help="with --goto: save the VM at N to FILE")
    rp.add_argument("--mapped", action="store_true", help="with --save: a mapped image")
    _snapshot_out_args(rp)

    cl = sub.add_parser("clone", help="copy a saved VM (or a snapshot) to NEWIMAGE, a mapped "
                                      "image that any number of 'ringvisor restore NEWIMAGE' "
                                      "run from at once, sharing unchanged memory copy-on-write")
    cl.add_argument("source", metavar="IMAGE", help="a saved VM (or with --snapshot, a node's name)")
    cl.add_argument("new", metavar="NEWIMAGE")
    cl.add_argument("--snapshot", action="store_true", help="IMAGE names a node of the snapshot tree")
    _store_arg(cl)

    sc = sub.add_parser("snapshot-create", help="add a saved VM (FILE) to the snapshot tree")
    sc.add_argument("name", metavar="NAME")
    sc.add_argument("--from", dest="image", required=True, metavar="FILE",
                    help="the saved VM (run --save, snapshot-export)")
    _new_node_args(sc)
    sl = sub.add_parser("snapshot-list", help="the snapshot tree (* marks the current node)")
    _store_arg(sl)
    sv = sub.add_parser("snapshot-revert", help="resume the VM from a node of the tree, and run "
                                                 "a branch of its own")
    sv.add_argument("name", metavar="NAME")
    _console_args(sv)
    _stop_args(sv)
    _snapshot_out_args(sv)
    scu = sub.add_parser("snapshot-current", help="show the current node, or make NAME current")
    scu.add_argument("name", nargs="?", metavar="NAME")
    _store_arg(scu)
    sd = sub.add_parser("snapshot-delete", help="delete a node (its children move to its parent)")
    sd.add_argument("name", metavar="NAME")
    _store_arg(sd)
    sdf = sub.add_parser("snapshot-diff", help="what differs between two nodes: pages, "
                                                "registers, devices")
    sdf.add_argument("a", metavar="NAME1")
    sdf.add_argument("b", metavar="NAME2")
    _store_arg(sdf)
    se = sub.add_parser("snapshot-export", help="a node as a standalone image file")
    se.add_argument("name", metavar="NAME")
    se.add_argument("file", metavar="FILE")
    _store_arg(se)
    si = sub.add_parser("snapshot-import", help="an image file as a node")
    si.add_argument("image", metavar="FILE")
    si.add_argument("name", metavar="NAME")
    _new_node_args(si)

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
    b.add_argument("--json", action="store_true", help="one JSON document on stdout (docs/json.md)")

    c = sub.add_parser("crosscheck", help="run KERNEL on the translator and the interpreter in "
                                          "lockstep and report the first difference")
    c.add_argument("kernel", metavar="KERNEL")
    c.add_argument("--append", default="", metavar="CMDLINE")
    c.add_argument("--mem", type=parse_size, default=32, metavar="SIZE")
    c.add_argument("--max-instructions", type=positive_int, default=5_000_000, metavar="N")

    pr = sub.add_parser("probe", help="run the Robin & Irvine sensitive-instruction probes "
                                      "natively, under trap-and-emulate and under binary "
                                      "translation, and print the table")
    pr.add_argument("--mode", action="append", choices=("native", "trapemu", "bt", "hvm"),
                    help="only these modes (repeatable; default: all three)")
    pr.add_argument("--engine", choices=("jit", "interp"), default="jit")
    pr.add_argument("--json", action="store_true", help="one JSON document on stdout (docs/json.md)")

    vb = sub.add_parser("vmbench", help="cost per operation of every workload natively and "
                                         "under each monitor, with ratios to native")
    vb.add_argument("--mode", action="append",
                    choices=("trapemu", "bt", "paravirt", "hvm", "hvm+ept", "kvm"),
                    help="monitors to measure besides native (repeatable; default: trapemu, bt, "
                         "paravirt, hvm and hvm+ept; paravirt runs the pvcc build of the kernel; "
                         "hvm is VT-x with shadow page tables (run --no-ept), hvm+ept with EPT; "
                         "hvm, hvm+ept and kvm add exits per operation)")
    vb.add_argument("--workload", action="append", metavar="NAME", help="only this workload (repeatable)")
    vb.add_argument("--scale", type=float, default=1.0, help="multiply the iteration counts")
    vb.add_argument("--engine", choices=("jit", "interp"), default="jit")
    vb.add_argument("--repeat", type=int, default=2, help="boots per workload and mode; the fastest counts")
    vb.add_argument("--json", action="store_true", help="one JSON document on stdout (docs/json.md)")
    vb.add_argument("--devices", action="store_true",
                    help="instead: the emulated devices (ATA disk, 16550A UART) against the "
                         "virtio ones, per disk request and console line, natively and under "
                         "--mode hvm/kvm (default both)")

    lb = sub.add_parser("lifebench", help="what the VM lifecycle costs for a 32 MiB guest that "
                                           "writes: save, restore, 100 snapshots, live migration")
    lb.add_argument("--engine", choices=("jit", "interp"), default="jit")
    lb.add_argument("--snapshots", type=positive_int, default=100, metavar="N")
    lb.add_argument("--migrate-link", type=positive_int, default=1000, metavar="MBIT")
    x = sub.add_parser("xen", help="the Xen structure: the hypervisor and Domain 0 in the "
                                   "foreground (Domain 0's console here); manage domains with "
                                   "`ringvisor xl` (docs/xen.md)")
    x.add_argument("--dom0", default="kernel-pv", metavar="IMAGE",
                   help="Domain 0's kernel: a para-virtual image or a bundled name (default "
                        "kernel-pv)")
    x.add_argument("--dom0-mem", type=parse_size, default=32, metavar="SIZE",
                   help="Domain 0's memory (default 32M)")
    x.add_argument("--dom0-append", default="", metavar="CMDLINE", help="Domain 0's command line")
    x.add_argument("--dom0-max-vcpus", type=vcpu_count, default=1, metavar="N",
                   help="Domain 0's vCPUs, 1 to 8 (Xen's dom0_max_vcpus; default 1): its "
                        "kernel brings up all but vCPU 0 (the bundled kernel-pv uses one)")
    x.add_argument("--cpus", type=cpu_count, default=1, metavar="N",
                   help="the machine's processors, 1 to 8 (default 1): the hypervisor's "
                        "physical CPUs, each with its credit scheduler's run queue")
    x.add_argument("--mem", type=parse_size, default=512, metavar="SIZE",
                   help="the machine's memory, for the hypervisor and every domain (default 512M)")
    x.add_argument("--state-dir", metavar="DIR",
                   help="where the control socket and console logs live (default "
                        "$RINGVISOR_STATE_DIR, else $XDG_RUNTIME_DIR/ringvisor-UID or /tmp/...)")
    x.add_argument("--policy", metavar="FILE", help="a security policy to load at start")
    x.add_argument("--engine", choices=("jit", "interp"), default="jit")
    x.add_argument("--pace", choices=("auto", "on", "off"), default="auto")
    x.add_argument("--max-instructions", type=positive_int, metavar="N",
                   help="stop after N instructions (exit status 4)")
    x.add_argument("--web", type=port_number, metavar="PORT",
                   help="serve a live view of the host on http://127.0.0.1:PORT/: the "
                        "domains as xl list shows them and the hypervisor's counters")

    xl = sub.add_parser("xl", help="manage the domains of a running `ringvisor xen` (as Xen's xl)")
    xl.add_argument("--state-dir", metavar="DIR", help="as for `ringvisor xen`")
    xs = xl.add_subparsers(dest="xl_command", parser_class=Parser, metavar="SUBCOMMAND")
    xs.required = True
    c_ = xs.add_parser("create", help="build and start a domain from an xl.cfg-style file")
    c_.add_argument("config", metavar="CFG")
    c_.add_argument("-p", dest="paused", action="store_true", help="leave it paused")
    c_.add_argument("-c", dest="console", action="store_true", help="attach its console")
    ls = xs.add_parser("list", help="Name ID Mem VCPUs State Time(s)")
    ls.add_argument("domains", nargs="*", metavar="DOMAIN")
    ls.add_argument("-v", "--verbose", action="store_true",
                    help="also each domain's type (pv, bt) and UUID")
    ls.add_argument("--json", action="store_true")
    vl = xs.add_parser("vcpu-list", help="every vCPU: Name ID VCPU CPU State Time(s) Affinity "
                       "(State: r running, b blocked, p offline)")
    vl.add_argument("domains", nargs="*", metavar="DOMAIN", help="only these domains")
    vl.add_argument("--json", action="store_true")
    vp = xs.add_parser("vcpu-pin", help="let a domain's vCPU run only on these CPUs (its "
                       "hard affinity)")
    vp.add_argument("domain", metavar="DOMAIN")
    vp.add_argument("vcpu", metavar="VCPU", help="a vCPU number, or all")
    vp.add_argument("cpus", metavar="CPUS", help="a CPU list: all, 0-1, 0,2, ^1 ...")
    for name, what in (("pause", "pause a domain"), ("unpause", "let a paused domain run"),
                       ("destroy", "stop a domain at once and free everything it had"),
                       ("reboot", "ask a domain to reboot"),
                       ("console", "attach to a domain's console (Ctrl-] detaches)")):
        a = xs.add_parser(name, help=what)
        a.add_argument("domain", metavar="DOMAIN")
    sh = xs.add_parser("shutdown", help="ask a domain to shut down")
    sh.add_argument("domain", metavar="DOMAIN")
    sh.add_argument("-w", dest="wait", action="store_true", help="wait until it has")
    sc = xs.add_parser("sched-credit", help="the credit scheduler's weight and cap")
    sc.add_argument("-d", dest="domain", metavar="DOMAIN")
    sc.add_argument("-w", dest="weight", type=int, metavar="WEIGHT")
    sc.add_argument("-c", dest="cap", type=int, metavar="CAP")
    sc.add_argument("--json", action="store_true")
    ms = xs.add_parser("mem-set", help="set a domain's memory target (its balloon)")
    ms.add_argument("domain", metavar="DOMAIN")
    ms.add_argument("memory", type=parse_size, metavar="SIZE")
    inf = xs.add_parser("info", help="the host")
    inf.add_argument("--json", action="store_true")
    dm = xs.add_parser("dmesg", help="the hypervisor's console")
    dm.add_argument("-c", dest="clear", action="store_true", help="clear it after reading")
    tp = xs.add_parser("top", help="CPU time and memory per domain, once")
    tp.add_argument("--json", action="store_true")
    lp = xs.add_parser("loadpolicy", help="load a security policy into the hypervisor")
    lp.add_argument("policy", metavar="FILE")
    sv = xs.add_parser("save", help="save a domain to FILE and destroy it (-c: keep it running)")
    sv.add_argument("domain", metavar="DOMAIN")
    sv.add_argument("file", metavar="FILE")
    sv.add_argument("-c", dest="keep", action="store_true", help="leave the domain running")
    rs_ = xs.add_parser("restore", help="build a domain again from a file 'xl save' wrote")
    rs_.add_argument("file", metavar="FILE")
    rs_.add_argument("-p", dest="paused", action="store_true", help="leave it paused")
    mg = xs.add_parser("migrate", help="move a domain to the ringvisor host listening at "
                                       "HOST:PORT ('xl migrate-receive' there)")
    mg.add_argument("domain", metavar="DOMAIN")
    mg.add_argument("address", metavar="HOST:PORT")
    mr = xs.add_parser("migrate-receive", help="wait for one domain migrated to this host")
    mr.add_argument("address", metavar="[HOST:]PORT")

    xb = sub.add_parser("xenbench", help="the Xen structure's figures: aggregate throughput of "
                                         "1..16 DomUs, credit fairness and cap, block I/O "
                                         "through the three structures, the inter-domain "
                                         "event-channel round trip, xl create latency")
    xb.add_argument("--domains", type=positive_int, action="append", metavar="N",
                    help="DomU counts for the aggregate (repeatable; default 1 2 4 8 16)")
    xb.add_argument("--window", type=positive_int, default=600, metavar="MS",
                    help="virtual milliseconds measured per count (default 600)")
    xb.add_argument("--fair-window", type=positive_int, default=1500, metavar="MS",
                    help="virtual milliseconds for the fairness and cap runs (default 1500)")
    xb.add_argument("--blk-requests", type=positive_int, default=64, metavar="N",
                    help="16 KiB requests per direction in the block I/O comparison (default 64)")
    xb.add_argument("--evtchn-trips", type=positive_int, default=2000, metavar="N",
                    help="event-channel round trips per path (default 2000)")
    xb.add_argument("--smp-domains", type=positive_int, action="append", metavar="N",
                    help="DomU counts run on 1 and on 2 pCPUs (repeatable; default 1 2 4 8)")
    xb.add_argument("--smp-only", action="store_true",
                    help="only the several-pCPUs section (1 against 2 pCPUs, 256:256:512)")

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


def _console(args):
    """The host's side of a VM run in the foreground, from the console options."""
    from ringvisor.ui.session import ConsoleConfig, Foreground
    if args.json and not args.stats:
        raise ConfigError("--json writes the --stats report: give both")
    return Foreground(ConsoleConfig(serial=args.serial or ["stdio"], gdb=args.gdb,
                                    hold=args.hold, web=args.web, trace=args.trace,
                                    pace=args.pace, store=args.store))


def _stats(args, m, mon, stop, image: str, cmdline: str) -> None:
    if args.json:
        from ringvisor.ui.report import run_stats
        emit_json(run_stats(m, mon, stop, image, cmdline, args.engine), sys.stderr)
        return
    print_stats(m)
    if mon is not None:
        print_monitor_stats(mon)


def _finish(args, m, mon, stop, image: str, cmdline: str) -> int:
    if stop.message and not (args.stats and args.json):
        print(f"\nringvisor: {stop.message}", file=sys.stderr)
    if args.stats:
        _stats(args, m, mon, stop, image, cmdline)
    return stop.status


def cmd_run(args) -> int:
    from ringvisor.hw.machine import read_image, read_module
    from ringvisor.vmm import create_vm

    _check_stop_args(args)
    if args.bios or args.post_log:
        return _run_bios(args)
    if args.incoming:
        return _run_incoming(args)
    if not args.kernel:
        raise ConfigError("run: the KERNEL argument is required (or --bios ROM)")
    kernel = _resolve_kernel(args.kernel)
    if args.mode == "kvm":
        _check_kvm_args(args)
    con = _console(args)
    size = args.mem << 20
    image = read_image(kernel, max_bytes=size)
    mods = [read_module(p, size) for p in args.module]
    if args.smp != 1 and args.mode != "native":
        _check_smp_monitor_args(args)
    _check_device_args(args)
    m, mon = create_vm(image, args.mode, args.append, args.mem, args.engine, mods,
                       image_name=kernel, output=con.output, pace=con.pace,
                       keep_source=bool(con.trace), serial_ports=con.serial_ports,
                       disk=args.disk, disk_readonly=args.disk_ro, cpus=args.smp,
                       virtio_disk=args.virtio_disk, virtio_disk_readonly=args.virtio_disk_ro,
                       virtio_console=args.virtio_console, ept=args.ept)
    return _run_and_keep(args, con, m, mon, kernel, args.append)


def _check_smp_monitor_args(args) -> None:
    """--smp N under a monitor (vmm/vcpus.py): trapemu and bt only, and never saved."""
    from ringvisor.vmm.runner import SMP_MODES
    if args.mode not in SMP_MODES:
        raise ConfigError(f"--smp {args.smp}: --mode {args.mode} runs a uniprocessor guest "
                          f"(several processors: --mode native, {', '.join(SMP_MODES)})")
    kept = [o for o, v in (("--save", getattr(args, "save", None)),
                           ("--snapshot", getattr(args, "snapshot", None)),
                           ("--record", getattr(args, "record", None)),
                           ("--migrate-to", getattr(args, "migrate_to", None))) if v]
    if kept:
        raise ConfigError(f"--smp {args.smp} --mode {args.mode}: {kept[0]} cannot be used (a VM "
                          f"with several virtual processors under a monitor is not saved; "
                          f"--mode native saves one)")


def _check_device_args(args) -> None:
    """A VM's disks are image files beside it, not part of it (QEMU's raw drives): a saved
    or migrated VM finds them at the same path, but a recording replays, and a snapshot
    reverts, against whatever the image holds by then -- refused for a writable disk, as
    QEMU's savevm refuses a raw drive."""
    if args.virtio_disk_ro and not args.virtio_disk:
        raise ConfigError("--virtio-disk-ro goes with --virtio-disk PATH")
    writable = [o for o, path, ro in (("--disk", getattr(args, "disk", None), args.disk_ro),
                                     ("--virtio-disk", args.virtio_disk, args.virtio_disk_ro))
                if path and not ro]
    kept = [o for o, v in (("--record", getattr(args, "record", None)),
                           ("--snapshot", getattr(args, "snapshot", None))) if v]
    if writable and kept:
        raise ConfigError(f"{' and '.join(kept)} with a writable {writable[0]}: the image file "
                          f"changes as the VM runs (give {writable[0]}-ro, or leave the disk out)")


def _check_kvm_args(args) -> None:
    """What --mode kvm cannot do: count instructions (so no budgets or stop points), or
    trace the translator."""
    from ringvisor.vmm.kvm import NO_COUNT
    counted = [o for o, v in (("--max-instructions", args.max_instructions),
                              ("--stop-at", args.stop_at),
                              ("--migrate-at", getattr(args, "migrate_at", None)),
                              ("--record", getattr(args, "record", None))) if v]
    if counted:
        raise ConfigError(f"{NO_COUNT}: {', '.join(counted)} cannot be used")
    if args.trace:
        raise ConfigError("--mode kvm: no --trace (the host's CPU runs the guest: there are no "
                          "translations, and its exceptions and interrupts never reach ringvisor)")


def _run_bios(args) -> int:
    """run --bios ROM: the PC from RESET, with the ROM mapped (hw/boot/rom.py)."""
    from ringvisor.hw.machine import read_image
    from ringvisor.vmm import create_bios_vm
    if not args.bios:
        raise ConfigError("--post-log goes with --bios ROM")
    if args.kernel or args.append or args.module:
        raise ConfigError("--bios runs a ROM from RESET: no KERNEL, --append or --module with it")
    if args.incoming or args.stop_at or getattr(args, "migrate_to", None):
        raise ConfigError("--bios cannot be combined with --incoming, --stop-at or --migrate-to")
    if args.smp != 1 and args.mode != "native":
        raise ConfigError(f"--smp {args.smp}: the monitors run a uniprocessor guest "
                          f"(--mode native only)")
    image = read_image(args.bios, "ROM")           # (boot/rom.py says what sizes are ROMs)
    con = _console(args)
    m, mon = create_bios_vm(image, args.mode, args.mem, args.engine, args.bios,
                            output=con.output, ept=args.ept, pace=con.pace,
                            keep_source=bool(con.trace), serial_ports=con.serial_ports,
                            cpus=args.smp)
    try:
        stop = con.run(m, mon, args.max_instructions, args.bios)
    finally:
        if args.post_log:
            from ringvisor.lifecycle.stream import write_atomic
            write_atomic(args.post_log, m.post.log_text().encode())
    return _finish(args, m, mon, stop, args.bios, "")


def _check_stop_args(args) -> None:
    wants = getattr(args, "save", None) or getattr(args, "snapshot", None)
    if wants and not args.stop_at:
        raise ConfigError("--save and --snapshot need --stop-at N (where to stop the VM)")
    if getattr(args, "mapped", False) and not getattr(args, "save", None):
        raise ConfigError("--mapped says how --save FILE keeps memory; it needs --save")
    if getattr(args, "record", None) and getattr(args, "migrate_to", None):
        raise ConfigError("--record and --migrate-to cannot be combined")
    if getattr(args, "record", None) and getattr(args, "gdb", None):
        raise ConfigError("--record and --gdb cannot be combined (a debugger changes the guest "
                          "behind the recording's back)")
    to, at = getattr(args, "migrate_to", None), getattr(args, "migrate_at", None)
    if bool(to) != bool(at):
        raise ConfigError("--migrate-to HOST:PORT and --migrate-at N go together")
    if getattr(args, "postcopy", False) and not to:
        raise ConfigError("--postcopy says how --migrate-to moves the VM; it needs --migrate-to")
    if to and args.stop_at:
        raise ConfigError("--migrate-at and --stop-at cannot be combined")
    if getattr(args, "incoming", None) and (to or args.stop_at):
        raise ConfigError("--incoming receives a VM; it cannot also stop or migrate it")


def _run_incoming(args) -> int:
    """run --incoming HOST:PORT: wait for a migrating VM, then run it in the foreground."""
    from ringvisor.lifecycle.migrate import Incoming, parse_address
    from ringvisor.lifecycle.stream import BadImage
    from ringvisor.vmm import attach_monitor

    def expect(info) -> None:
        if info.mode != args.mode or info.guest_mb != args.mem:
            raise BadImage(f"the incoming VM runs under {info.mode} with {info.guest_mb} MiB; "
                           f"this side was started with --mode {args.mode} --mem {args.mem}M")
        if con.serial_ports > info.serial_ports:
            raise BadImage(f"the incoming VM has {info.serial_ports} serial port(s); this "
                           f"side was given {con.serial_ports} --serial")

    con = _console(args)
    incoming = Incoming(parse_address(args.incoming))
    print(f"ringvisor: waiting for a VM on {incoming.host}:{incoming.port}", file=sys.stderr,
          flush=True)
    try:
        m, mon, info = incoming.receive(attach_monitor, args.engine, con.output, expect,
                                        pace=con.pace, keep_source=bool(con.trace))
    finally:
        incoming.close()
    # one write: under post-copy the page server (another process) may print at once
    sys.stderr.write(f"ringvisor: received the VM at instruction {m.cpu.state.icount:,}; "
                     f"running it\n")
    sys.stderr.flush()
    return _run_and_keep(args, con, m, mon, info.image, info.cmdline)


def _migrate(args, con, m, mon, info):
    """At --migrate-at: move the VM; None once it has gone, else the Stop to finish with
    (the guest ended meanwhile) or the VM keeps running here (the destination failed)."""
    from ringvisor.lifecycle.migrate import MigrationFailed, migrate, parse_address
    address = parse_address(args.migrate_to)
    say = lambda text: print(f"ringvisor: {text}", file=sys.stderr, flush=True)
    try:
        with con.attached(m, mon, info.image, info.cmdline):
            r = migrate(m, mon, info, address, args.migrate_link, say, args.postcopy)
    except MigrationFailed as e:
        say(f"{e}; the VM keeps running here")
        return con.run(m, mon, args.max_instructions, info.image, info.cmdline)
    if r.stop is not None:
        say("the guest stopped during the migration; it ends here")
        return r.stop
    if r.postcopy:
        say(f"migrated to {args.migrate_to} at instruction {r.icount:,} (post-copy): downtime "
            f"{r.downtime * 1000:.1f} ms, {r.pages_sent:,} pages ({r.pushed:,} pushed, "
            f"{r.demanded:,} on demand; the destination's demand faults: {r.faults:,}), "
            f"{r.bytes_sent / 2**20:.1f} MiB in {r.seconds:.2f} s")
        return None
    say(f"migrated to {args.migrate_to} at instruction {r.icount:,}: {len(r.rounds)} rounds, "
        f"{r.pages_sent:,} pages ({r.final_pages:,} while paused), "
        f"{r.bytes_sent / 2**20:.1f} MiB in {r.seconds:.2f} s, downtime "
        f"{r.downtime * 1000:.1f} ms")
    return None


def _record(args, con, m, mon, image: str, cmdline: str, budget: int | None):
    """run/restore --record FILE: run in the foreground, logging the host's input."""
    from ringvisor.lifecycle.replay import record
    from ringvisor.lifecycle.vm import VmInfo
    with con.attached(m, mon, image, cmdline):
        try:
            stop, rec, size = record(m, mon, VmInfo(image=image, cmdline=cmdline), budget,
                                     args.checkpoint_every, con.pace, args.record,
                                     lambda n: con.run(m, mon, n, image, cmdline, last=False))
        finally:
            con.session.close()
    print(f"ringvisor: recorded {len(rec.events):,} input events and "
          f"{len(rec.checkpoints):,} checkpoints to {args.record} ({size:,} bytes)",
          file=sys.stderr)
    return stop


def _run_and_keep(args, con, m, mon, image: str, cmdline: str) -> int:
    """Run in the foreground; at --stop-at, save the VM and/or snapshot it."""
    from ringvisor.lifecycle.vm import VmInfo
    budget = args.max_instructions
    migrate_at = getattr(args, "migrate_at", None)
    if migrate_at:
        left = migrate_at - m.cpu.state.icount
        if left <= 0:
            raise ConfigError(f"the VM is at instruction {m.cpu.state.icount:,} already "
                              f"(--migrate-at {migrate_at:,})")
        stop = con.run(m, mon, left, image, cmdline, last=False)
        if stop.reason == "limit" and m.cpu.state.icount >= migrate_at:
            m.stop = None
            stop = _migrate(args, con, m, mon, VmInfo(image=image, cmdline=cmdline))
            if stop is None:
                return 0
        else:
            print(f"ringvisor: the VM stopped ({stop.reason}) before instruction "
                  f"{migrate_at:,}; not migrated", file=sys.stderr)
        return _finish(args, m, mon, stop, image, cmdline)
    if args.stop_at:
        left = args.stop_at - m.cpu.state.icount
        if left <= 0:
            raise ConfigError(f"the VM is at instruction {m.cpu.state.icount:,} already "
                              f"(--stop-at {args.stop_at:,})")
        budget = left if budget is None else min(budget, left)
    stop = (_record(args, con, m, mon, image, cmdline, budget) if getattr(args, "record", None)
            else con.run(m, mon, budget, image, cmdline))
    if not (args.stop_at and stop.reason == "limit" and m.cpu.state.icount >= args.stop_at):
        if getattr(args, "save", None) or getattr(args, "snapshot", None):
            print(f"ringvisor: the VM stopped ({stop.reason}) before instruction "
                  f"{args.stop_at:,}; nothing saved", file=sys.stderr)
        return _finish(args, m, mon, stop, image, cmdline)
    return _keep(args, m, mon, stop, image, cmdline)


def _keep(args, m, mon, stop, image: str, cmdline: str) -> int:
    """The VM stopped at --stop-at: save it and/or snapshot it."""
    from ringvisor.lifecycle.vm import VmInfo
    n = m.cpu.state.icount
    info = VmInfo(image=image, cmdline=cmdline, description=getattr(args, "description", ""))
    if args.save:
        from ringvisor.lifecycle.vm import save_file
        size = save_file(args.save, m, mon, info, mapped=args.mapped)
        print(f"ringvisor: saved the VM at instruction {n:,} to {args.save} ({size:,} bytes)",
              file=sys.stderr)
    if getattr(args, "snapshot", None):
        from ringvisor.lifecycle.snapshots import SnapshotTree
        tree = SnapshotTree(args.store)
        node = tree.create(args.snapshot, m, mon, info, args.description)
        where = f" (child of {node.parent})" if node.parent else ""
        print(f"ringvisor: snapshot {node.name} at instruction {n:,}{where}", file=sys.stderr)
    if not args.save and not getattr(args, "snapshot", None):
        print(f"ringvisor: stopped at instruction {n:,}", file=sys.stderr)
    if args.stats:
        _stats(args, m, mon, stop, image, cmdline)
    return 0


def cmd_restore(args) -> int:
    from ringvisor.lifecycle.vm import load_file
    from ringvisor.vmm import attach_monitor

    _check_stop_args(args)
    extra = {}
    if args.mode == "kvm":
        from ringvisor.vmm.kvm import KvmMachine
        _check_kvm_args(args)
        extra["machine_cls"] = KvmMachine
    con = _console(args)
    m, mon, info = load_file(args.image, attach_monitor, args.engine, con.output, not args.lazy,
                             pace=con.pace, keep_source=bool(con.trace), **extra)
    return _run_and_keep(args, con, m, mon, info.image, info.cmdline)


def _tree(args):
    from ringvisor.lifecycle.snapshots import SnapshotTree
    return SnapshotTree(args.store)


def cmd_snapshot_create(args) -> int:
    """snapshot-create NAME --from FILE, and snapshot-import FILE NAME."""
    node = _tree(args).import_image(args.image, args.name, args.description,
                                    ... if args.parent is None else args.parent)
    print(f"snapshot {node.name} created from {args.image} (instruction {node.icount:,}"
          + (f", child of {node.parent})" if node.parent else ")"))
    return 0


def cmd_snapshot_list(args) -> int:
    tree = _tree(args)
    lines = tree.tree_lines()
    print("\n".join(lines) if lines else f"{args.store}: no snapshots")
    return 0


def cmd_snapshot_revert(args) -> int:
    from ringvisor.vmm import attach_monitor
    _check_stop_args(args)
    tree = _tree(args)
    con = _console(args)
    m, mon, info = tree.revert(args.name, attach_monitor, args.engine, con.output, pace=con.pace,
                               keep_source=bool(con.trace))
    return _run_and_keep(args, con, m, mon, info.image, info.cmdline)


def cmd_snapshot_current(args) -> int:
    tree = _tree(args)
    if args.name:
        tree.set_current(args.name)
    print(tree.current or f"{args.store}: no current snapshot")
    return 0


def cmd_snapshot_delete(args) -> int:
    freed = _tree(args).delete(args.name)
    print(f"snapshot {args.name} deleted ({freed:,} bytes of pages freed)")
    return 0


def cmd_snapshot_diff(args) -> int:
    d = _tree(args).diff(args.a, args.b)
    ia, ib = d["icount"]
    pages = d["pages"]
    print(f"{args.a} (instruction {ia:,}) -> {args.b} (instruction {ib:,})")
    print(f"pages: {len(pages)} differ" + (": " + _ranges(pages) if pages else ""))
    for comp, changes in d["components"].items():
        print(f"{comp}: {len(changes)} field(s)")
        for path, x, y in changes[:40]:
            print(f"  {path}: {_show(x)} -> {_show(y)}")
        if len(changes) > 40:
            print(f"  ... and {len(changes) - 40} more")
    return 0


def _show(v) -> str:
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, int):
        return f"{v:#x}"
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


def _ranges(pages: list[int]) -> str:
    """Page numbers as address ranges: 0x1000-0x2fff, ..."""
    out, start, prev = [], None, None
    for p in pages + [None]:
        if start is not None and p != prev + 1:
            out.append(f"{start << 12:#x}-{((prev + 1) << 12) - 1:#x}")
            start = None
        if start is None and p is not None:
            start = p
        prev = p
    text = ", ".join(out[:12])
    return text + (f", ... ({len(out)} ranges)" if len(out) > 12 else "")


def cmd_replay(args) -> int:
    from ringvisor.lifecycle.replay import Recording, replay
    from ringvisor.vmm import attach_monitor
    if (args.save or args.snapshot) and not args.goto:
        raise ConfigError("--save and --snapshot need --goto N (where to stop the replay)")
    rec = Recording.load(args.recording)
    out = sys.stdout.buffer

    def show(data: bytes) -> None:
        out.write(data)
        out.flush()
    m, mon, info, stop, n0, outputs = replay(
        rec, attach_monitor, args.engine, None if args.goto else show, args.goto, args.recording)
    n = m.cpu.state.icount
    if args.goto:
        if n != args.goto:
            print(f"ringvisor: the guest stopped ({stop.reason}) at instruction {n:,}, before "
                  f"{args.goto:,}", file=sys.stderr)
            return 1
        print(f"ringvisor: at instruction {n:,} (replayed {n - n0:,} from the checkpoint at "
              f"{n0:,})\n{m.report()}", file=sys.stderr)
        args.stop_at, args.stats = n, False
        args.description = args.description or f"instruction {n:,} of {args.recording}"
        return _keep(args, m, mon, stop, info.image, info.cmdline)
    end = rec.end
    if (n, outputs) != (end["icount"], end["outputs"]):
        print(f"ringvisor: {args.recording}: the replay diverged from the recording (it ended "
              f"at instruction {n:,} with {_bytes(outputs)} of output; the recording at "
              f"{end['icount']:,} with {_bytes(end['outputs'])})", file=sys.stderr)
        return 2
    print(f"\nringvisor: replayed {n - n0:,} instructions and {len(rec.events):,} input events; "
          f"the output is the recording's", file=sys.stderr)
    return end["status"]


def _bytes(outputs) -> str:
    """Serial ports' output lengths, for a message: '1,234 bytes' or '1,234 + 56 bytes'."""
    return " + ".join(f"{n:,}" for n, _ in outputs) + " bytes"


def cmd_clone(args) -> int:
    from ringvisor.lifecycle.vm import clone_file
    if args.snapshot:
        size = _tree(args).export(args.source, args.new, mapped=True)
        stored = os.stat(args.new).st_blocks * 512
    else:
        size, stored = clone_file(args.source, args.new)
    print(f"cloned {args.source} to {args.new} ({size:,} bytes of which {stored:,} stored; "
          f"every 'ringvisor restore {args.new}' maps it and shares its unchanged pages)")
    return 0


def cmd_snapshot_export(args) -> int:
    n = _tree(args).export(args.name, args.file)
    print(f"snapshot {args.name} exported to {args.file} ({n:,} bytes)")
    return 0


def emit_json(doc: dict, stream=None) -> None:
    """One JSON document (docs/json.md): the version that wrote it goes in, and a value
    JSON cannot carry (NaN, infinity) goes out as null."""
    from ringvisor.ui.report import clean
    stream = stream or sys.stdout
    doc = {"schema": doc["schema"], "ringvisor": _version(), **doc}
    stream.write(json.dumps(clean(doc), indent=1) + "\n")
    stream.flush()


def print_monitor_stats(mon) -> None:
    r = mon.report()
    vcpus = r.pop("vcpus", ())
    lines = [f"monitor: {mon.name}"]
    for key in ("exits", "traps", "emulated", "callouts", "hypercalls"):
        if key in r and r[key]:
            items = sorted(r[key].items(), key=lambda kv: -kv[1])
            lines.append(f"{key}: " + ", ".join(f"{k} {v:,}" for k, v in items))
    rest = {k: v for k, v in r.items() if not isinstance(v, dict)}
    lines.append(", ".join(f"{k.replace('_', ' ')}: {v:,}" if isinstance(v, int) else
                           f"{k.replace('_', ' ')}: {v}" for k, v in rest.items()))
    for c in vcpus:
        lines.append(f"  vCPU {c['apic_id']}: {c['instructions']:,} instructions, {c['traps']:,} "
                     f"traps, {c['interrupts']:,} interrupts"
                     + ("" if c["started"] else " (never started: waiting for a SIPI)"))
    print("\n".join(lines), file=sys.stderr)


def print_stats(m) -> None:
    s = m.stats()
    if s["instructions"] is None:           # --mode kvm: the host's CPU counts nothing
        exits = ", ".join(f"{k} {v:,}" for k, v in s["kvm_exits"].items())
        print(f"wall time: {s['wall_seconds']:.2f} s\n"
              f"KVM exits: {exits or 'none'}\n"
              f"interrupts injected: {s['interrupts']:,}", file=sys.stderr)
        return
    print(f"instructions retired: {s['instructions']:,}\n"
          f"wall time: {s['wall_seconds']:.2f} s ({s['mips']:.2f} MIPS)\n"
          f"blocks translated: {s['blocks_translated']:,} "
          f"(code cache: {s['code_cache_blocks']:,} blocks, {s['code_cache_bytes'] // 1024:,} KiB of "
          f"generated source; {s['invalidations']:,} invalidated, "
          f"{s['smc_restarts']} self-modifying-code restarts)\n"
          f"exceptions: {s['exceptions']:,}  interrupts: {s['interrupts']:,}  "
          f"page walks: {s['tlb_walks']:,}", file=sys.stderr)
    for c in s.get("cpus", ()):
        print(f"  CPU {c['apic_id']}: {c['instructions']:,} instructions, {c['exceptions']:,} "
              f"exceptions, {c['interrupts']:,} interrupts, {c['blocks_translated']:,} blocks"
              + ("" if c["started"] else " (never started: waiting for a SIPI)"), file=sys.stderr)
    if s["post_writes"]:
        print(f"POST codes: {s['post_writes']:,} written, the last {s['post_last']:#04x}",
              file=sys.stderr)
    for name in ("virtio-blk", "virtio-console"):
        if name in s:
            d = dict(s[name])
            broken = d.pop("broken")
            print(f"{name}: " + ", ".join(f"{k.replace('_', ' ')} {v:,}" for k, v in d.items())
                  + (f" -- broken: {broken}" if broken else ""), file=sys.stderr)


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


def cmd_xen(args) -> int:
    from ringvisor.xenhost import run_xen
    return run_xen(args)


def cmd_xl(args) -> int:
    from ringvisor.toolstack.client import run_xl
    return run_xl(args)


def cmd_xenbench(args) -> int:
    from ringvisor import xenbench
    xenbench.run(tuple(args.domains or (1, 2, 4, 8, 16)), args.window, args.fair_window,
                 blk_requests=args.blk_requests, evtchn_trips=args.evtchn_trips,
                 smp_counts=tuple(args.smp_domains or (1, 2, 4, 8)), smp_only=args.smp_only)
    return 0


COMMANDS = {"xen": cmd_xen, "xl": cmd_xl, "xenbench": cmd_xenbench, "lifebench": cmd_lifebench,
            "run": cmd_run, "restore": cmd_restore, "clone": cmd_clone,
            "replay": cmd_replay,
            "snapshot-create": cmd_snapshot_create,
            "snapshot-list": cmd_snapshot_list, "snapshot-revert": cmd_snapshot_revert,
            "snapshot-current": cmd_snapshot_current, "snapshot-delete": cmd_snapshot_delete,
            "snapshot-diff": cmd_snapshot_diff, "snapshot-export": cmd_snapshot_export,
            "snapshot-import": cmd_snapshot_create, "demo": cmd_demo, "bench": cmd_bench, "crosscheck": cmd_crosscheck,
            "probe": cmd_probe, "vmbench": cmd_vmbench, "build-guests": cmd_build_guests,
            "pvabi-header": cmd_pvabi_header}
