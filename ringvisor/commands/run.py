"""``ringvisor run`` and ``ringvisor restore``: a VM booted (or restored, or received
by live migration) and run in the foreground, then stopped, saved, snapshotted,
recorded or migrated as its options ask.

Apart from the other commands because these are the one path a VM takes from
its options to a running machine; ``snapshot-revert`` and ``replay``
(``snapshots.py``) end on the same path (``run_and_keep``, ``keep_vm``).
"""

from __future__ import annotations

import os
import sys

from ringvisor.errors import ConfigError, RingvisorError
from ringvisor.lifecycle.stream import check_target

from .output import emit_json, print_monitor_stats, print_stats


def resolve_kernel(name: str) -> str:
    if os.path.exists(name) or os.sep in name:
        return name
    from ringvisor.guests.build import image_path
    try:
        return str(image_path(name))
    except RingvisorError:
        raise ConfigError(f"{name}: no such file, and no bundled image of that name") from None


def console(args):
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

    check_stop_args(args)
    if args.bios is not None or args.post_log is not None:
        return _run_bios(args)
    if args.incoming:
        return _run_incoming(args)
    if not args.kernel:
        raise ConfigError("run: the KERNEL argument is required (or --bios ROM)")
    kernel = resolve_kernel(args.kernel)
    if args.mode == "kvm":
        _check_kvm_args(args)
    con = console(args)
    with con.closed_on_error():
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
    return run_and_keep(args, con, m, mon, kernel, args.append)


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
        raise ConfigError("--post-log goes with --bios ROM" if args.bios is None else
                          "--bios: an empty file name")
    if args.kernel or args.append or args.module:
        raise ConfigError("--bios runs a ROM from RESET: no KERNEL, --append or --module with it")
    if args.incoming or args.stop_at or getattr(args, "migrate_to", None):
        raise ConfigError("--bios cannot be combined with --incoming, --stop-at or --migrate-to")
    if args.smp != 1 and args.mode != "native":
        raise ConfigError(f"--smp {args.smp}: the monitors run a uniprocessor guest "
                          f"(--mode native only)")
    if args.post_log is not None:    # (refused before the run, not after what it printed)
        check_target(args.post_log, "--post-log")
    from ringvisor.hw.boot.rom import ROM_MAX
    # (boot/rom.py says what sizes are ROMs; the bound keeps a device from being read for ever)
    image = read_image(args.bios, "ROM", ROM_MAX, "a ROM can be")
    con = console(args)
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


def check_stop_args(args) -> None:
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
    for option in ("save", "record"):
        if getattr(args, option, None) is not None:
            check_target(getattr(args, option), f"--{option}")


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

    con = console(args)
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
    return run_and_keep(args, con, m, mon, info.image, info.cmdline)


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


def run_and_keep(args, con, m, mon, image: str, cmdline: str) -> int:
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
    return keep_vm(args, m, mon, stop, image, cmdline)


def keep_vm(args, m, mon, stop, image: str, cmdline: str) -> int:
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

    check_stop_args(args)
    extra = {}
    if args.mode == "kvm":
        from ringvisor.vmm.kvm import KvmMachine
        _check_kvm_args(args)
        extra["machine_cls"] = KvmMachine
    con = console(args)
    with con.closed_on_error():
        m, mon, info = load_file(args.image, attach_monitor, args.engine, con.output,
                                 not args.lazy, pace=con.pace, keep_source=bool(con.trace),
                                 **extra)
    return run_and_keep(args, con, m, mon, info.image, info.cmdline)
