"""The commands on saved VMs: the snapshot tree (``snapshot-create``, ``-list``,
``-revert``, ``-current``, ``-delete``, ``-diff``, ``-export``, ``-import``),
``replay`` of a recording and ``clone`` of an image.

Apart from ``run.py`` because they work on images a run left behind
(``ringvisor.lifecycle``), and only two of them run a VM, through ``run.py``.
"""

from __future__ import annotations

import os
import sys

from ringvisor.errors import ConfigError
from ringvisor.lifecycle.stream import check_target

from .run import check_stop_args, console, keep_vm, run_and_keep


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
    check_stop_args(args)
    tree = _tree(args)
    con = console(args)
    m, mon, info = tree.revert(args.name, attach_monitor, args.engine, con.output, pace=con.pace,
                               keep_source=bool(con.trace))
    return run_and_keep(args, con, m, mon, info.image, info.cmdline)


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
    if args.save is not None:
        check_target(args.save, "--save")
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
        return keep_vm(args, m, mon, stop, info.image, info.cmdline)
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
    check_target(args.new, "clone")
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
