"""The ``ringvisor`` command line's grammar: every subcommand, its options and their
types, with one clear line and exit status 2 for a bad argument.

Apart from ``cli.py`` (which dispatches) and the commands (``ringvisor.commands``)
because it is one concept, what a user may type, and the biggest part of the
command line: the parser is built here in one place, as argparse wants it.
"""

from __future__ import annotations

import argparse
import os
import sys

from ringvisor import __version__


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


def _up_to(text: str, top: int, too_many: str) -> int:
    """A positive number no greater than ``top`` (``too_many``: what to say of one that is,
    with ``{v}`` and ``{top}``)."""
    v = positive_int(text)
    if v > top:
        raise argparse.ArgumentTypeError(too_many.format(v=v, top=top))
    return v


def vcpu_count(text: str) -> int:
    """A domain's number of vCPUs: 1 to ringvisor's limit."""
    from ringvisor.abi import RV_MAX_VCPUS    # (here: the ABI's import is 30 ms of every run)
    return _up_to(text, RV_MAX_VCPUS, "at most {top} vCPUs, not {v}")


def cpu_count(text: str) -> int:
    """The PC's number of processors: 1 to its limit (hw/smp.py)."""
    from ringvisor.hw.smp import MAX_CPUS
    return _up_to(text, MAX_CPUS, "the PC has at most {top} processors, not {v}")


def cpu_list(text: str) -> str:
    """xl's CPU list (``all``, ``0-1``, ``0,2``, ``^1``...), checked here and passed on as
    written: which CPUs the host has is the toolstack's to say (exit status 1)."""
    from ringvisor.toolstack.config import parse_cpulist
    try:
        parse_cpulist(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def vcpu_choice(text: str) -> str:
    """A vCPU number or ``all`` (which vCPUs the domain has is the toolstack's to say)."""
    if text != "all" and not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a vCPU number or 'all'")
    return text


def credit_weight(text: str) -> int:
    """A credit-scheduler weight: 1 to 65535, as in a domain's configuration file."""
    from ringvisor.hypervisor.sched import MAX_WEIGHT
    return _up_to(text, MAX_WEIGHT, "weight {v} is out of range (1 to {top})")


def credit_cap(text: str) -> int:
    """A cap in percent of one CPU, 0 (none) up to all of a domain's vCPUs' worth (whether
    the domain has that many is the hypervisor's to say)."""
    from ringvisor.abi import RV_MAX_VCPUS
    try:
        v = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 <= v <= 100 * RV_MAX_VCPUS:
        raise argparse.ArgumentTypeError(f"cap {v} is out of range (0 to {100 * RV_MAX_VCPUS}, "
                                         "percent of one CPU)")
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
    p.add_argument("--version", action="version", version=f"ringvisor {__version__}")
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
    vp.add_argument("vcpu", type=vcpu_choice, metavar="VCPU", help="a vCPU number, or all")
    vp.add_argument("cpus", type=cpu_list, metavar="CPUS", help="a CPU list: all, 0-1, 0,2, ^1 ...")
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
    sc.add_argument("-w", dest="weight", type=credit_weight, metavar="WEIGHT",
                    help="1 to 65535 (with -d)")
    sc.add_argument("-c", dest="cap", type=credit_cap, metavar="CAP",
                    help="percent of one CPU, 0 for none (with -d)")
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
