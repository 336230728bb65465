"""The ``ringvisor`` command line: parse it (``cliargs``) and hand it to one command
(``ringvisor.commands``); argument parsing and dispatch only, no logic."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from ringvisor.cliargs import build_parser
from ringvisor.commands.measure import (cmd_bench, cmd_crosscheck, cmd_demo, cmd_lifebench, cmd_probe,
                                        cmd_vmbench, cmd_xenbench)
from ringvisor.commands.run import cmd_restore, cmd_run
from ringvisor.commands.snapshots import (cmd_clone, cmd_replay, cmd_snapshot_create,
                                          cmd_snapshot_current, cmd_snapshot_delete,
                                          cmd_snapshot_diff, cmd_snapshot_export,
                                          cmd_snapshot_list, cmd_snapshot_revert)
from ringvisor.errors import ConfigError, RingvisorError


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
        print(f"{e.diagnostics}ringvisor: {e}", file=sys.stderr)
        return e.exit_status
    except KeyboardInterrupt:
        print("ringvisor: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 1


def cmd_build_guests(args) -> int:
    from ringvisor.guests.build import build_all
    if args.out:                     # (before minutes of compiling, not after)
        out = Path(args.out)
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ConfigError(f"build-guests {out}: cannot make the directory: "
                              f"{e.strerror}") from None
        if not os.access(out, os.W_OK | os.X_OK):
            raise ConfigError(f"build-guests {out}: permission denied")
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
    from ringvisor.guests.toolchain import BuildError
    if args.output == "-":
        sys.stdout.write(c_header())
        return 0
    if args.output == "":            # (not the source tree's copy, which no --output means)
        raise ConfigError("--output: an empty file name")
    try:                             # (its directories are made: write_abi_header)
        print(write_abi_header(args.output and Path(args.output)))
    except OSError as e:
        raise ConfigError(f"--output {args.output}: cannot write: {e.strerror}") from None
    except BuildError as e:          # (write_atomic's refusal names the file already)
        raise ConfigError(f"--output {e}") from None
    return 0


def cmd_xen(args) -> int:
    from ringvisor.xenhost import run_xen
    return run_xen(args)


def cmd_xl(args) -> int:
    from ringvisor.toolstack.client import run_xl
    return run_xl(args)


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
