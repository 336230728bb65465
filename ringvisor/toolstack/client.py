"""``ringvisor xl``: Xen's ``xl``, talking to the toolstack of a running ``ringvisor xen``.

The client reads configuration files itself (a bad one is one line naming the
key and the problem, exit status 2), sends one request over the control
socket of the state directory, and prints the answer as ``xl`` does (tables;
``--json`` on the listing commands).  ``xl console NAME`` attaches the
terminal to the domain's console; ``Ctrl-]`` detaches.
"""

from __future__ import annotations

import json
import os
import select
import socket
import sys
from pathlib import Path

from ringvisor.errors import ConfigError, RingvisorError

from . import config
from .server import SOCKET, state_dir

DETACH = 0x1D          # Ctrl-]
QUIET_S = 1.0          # a non-terminal console ends when the domain is quiet this long
ANSWER_S = 10.0        # ... after it answered the script's input at all (a loaded host is slow)


class XlFailed(RingvisorError):
    """The toolstack refused the request (exit status 1, as xl's)."""

    exit_status = 1


def connect(sdir: Path) -> socket.socket:
    path = sdir / SOCKET
    s = socket.socket(socket.AF_UNIX)
    try:
        s.connect(str(path))
    except OSError:
        raise ConfigError(f"no `ringvisor xen` is running with state directory {sdir} "
                          "(start one, or give --state-dir / RINGVISOR_STATE_DIR)") from None
    return s


def request(sdir: Path, cmd: str, **args):
    s = connect(sdir)
    with s:
        s.sendall(json.dumps({"cmd": cmd, "args": args}).encode() + b"\n")
        reply = s.makefile("rb").readline()
    if not reply:
        raise XlFailed(f"xl {cmd}: the toolstack closed the connection")
    r = json.loads(reply)
    if not r["ok"]:
        raise XlFailed(r["error"])
    return r["result"]


def _table(rows: list[dict], cols: list[tuple[str, str, str]]) -> str:
    """``cols``: (heading, key, format)."""
    out = []
    cells = [[format(r[k], f) for _, k, f in cols] for r in rows]
    widths = [max([len(h)] + [len(c[i]) for c in cells]) for i, (h, _, _) in enumerate(cols)]
    fmt = lambda vals: " ".join(v.ljust(w) if i == 0 else v.rjust(w)         # noqa: E731
                                for i, (v, w) in enumerate(zip(vals, widths)))
    out.append(fmt([h for h, _, _ in cols]).rstrip())
    out += [fmt(c).rstrip() for c in cells]
    return "\n".join(out)


LIST_COLS = [("Name", "name", ""), ("ID", "id", "d"), ("Mem", "mem", "d"), ("VCPUs", "vcpus", "d"),
             ("State", "state", ""), ("Time(s)", "time", ".1f")]
LIST_VERBOSE = [("Type", "type", ""), ("UUID", "uuid", "")]     # xl list -v
VCPU_COLS = [("Name", "name", ""), ("ID", "id", "d"), ("VCPU", "vcpu", "d"), ("CPU", "cpu", ""),
             ("State", "state", ""), ("Time(s)", "time", ".1f"), ("Affinity (Hard / Soft)", "affinity", "")]
SCHED_COLS = [("Name", "name", ""), ("ID", "id", "d"), ("Weight", "weight", "d"), ("Cap", "cap", "d")]


def run_xl(args) -> int:
    sdir = state_dir(args.state_dir)
    cmd = args.xl_command
    as_json = getattr(args, "json", False)

    def show(rows, cols) -> None:
        print(json.dumps(rows, indent=2) if as_json else _table(rows, cols))

    if cmd == "create":
        try:
            cfg = config.load(args.config)
        except config.ConfigFileError as e:
            raise ConfigError(str(e)) from None
        if not Path(cfg.kernel).is_absolute() and Path(cfg.kernel).exists():
            cfg.kernel = str(Path(cfg.kernel).resolve())
        elif "/" in cfg.kernel:
            # a path relative to the configuration file, as xl resolves it
            rel = Path(args.config).resolve().parent / cfg.kernel
            cfg.kernel = str(rel)
        r = request(sdir, "create", config=cfg.to_dict(), paused=args.paused)
        print(f"Parsing config from {args.config}\nDomain {r['id']} ({cfg.name}) created")
        if args.console:
            return _console(sdir, cfg.name)
        return 0
    if cmd == "list":
        rows = request(sdir, "list")
        if args.domains:
            rows = [r for r in rows if r["name"] in args.domains or str(r["id"]) in args.domains]
        show(rows, LIST_COLS + (LIST_VERBOSE if args.verbose else []))
        return 0
    if cmd == "vcpu-list":
        show(request(sdir, "vcpu-list", names=args.domains), VCPU_COLS)
        return 0
    if cmd == "vcpu-pin":
        request(sdir, "vcpu-pin", name=args.domain, vcpu=args.vcpu, cpus=args.cpus)
        return 0
    if cmd in ("pause", "unpause", "destroy"):
        request(sdir, cmd, name=args.domain)
        return 0
    if cmd in ("shutdown", "reboot"):
        reason = "poweroff" if cmd == "shutdown" else "reboot"
        r = request(sdir, "shutdown", name=args.domain, reason=reason, wait=bool(getattr(args, "wait", False)))
        if getattr(args, "wait", False) and r:
            print(f"Domain {args.domain} is shut down" + (f" ({r['reason']})" if r.get("reason") else ""))
        return 0
    if cmd == "sched-credit":
        if args.domain is None and (args.weight is not None or args.cap is not None):
            raise ConfigError("xl sched-credit: -w and -c need -d DOMAIN (as xl's: the "
                              "domain to set)")
        rows = request(sdir, "sched-credit", name=args.domain, weight=args.weight, cap=args.cap)
        if args.weight is None and args.cap is None:
            if not as_json:
                print("Cpupool Pool-0: tslice=30ms ratelimit=1000us migration-delay=0us")
            show(rows, SCHED_COLS)
        return 0
    if cmd == "mem-set":
        request(sdir, "mem-set", name=args.domain, mb=args.memory)
        return 0
    if cmd == "info":
        r = request(sdir, "info")
        if as_json:
            print(json.dumps(r, indent=2))
        else:
            for k, v in r.items():
                print(f"{k:<22}: {v}")
        return 0
    if cmd == "dmesg":
        sys.stdout.write(request(sdir, "dmesg", clear=args.clear))
        return 0
    if cmd == "top":
        rows = request(sdir, "list")
        total = sum(r["time"] for r in rows) or 1.0
        for r in rows:
            r["cpu_pct"] = 100.0 * r["time"] / total
        show(rows, LIST_COLS[:2] + [("CPU(s)", "time", ".1f"), ("CPU(%)", "cpu_pct", ".1f"),
                                    ("MEM(M)", "mem", "d"), ("State", "state", "")])
        return 0
    if cmd == "console":
        return _console(sdir, args.domain)
    if cmd == "loadpolicy":
        try:
            text = Path(args.policy).read_text()
        except OSError as e:
            raise ConfigError(f"{args.policy}: cannot read: {e.strerror}") from None
        request(sdir, "loadpolicy", text=text)
        return 0
    if cmd == "save":
        path = str(Path(args.file).resolve())
        if not Path(path).parent.is_dir():
            raise ConfigError(f"xl save: {args.file}: no such directory")
        r = request(sdir, "save", name=args.domain, path=path, keep=args.keep)
        print(f"Saved domain {args.domain} to {args.file} ({r['bytes']:,} bytes)")
        return 0
    if cmd == "restore":
        from ringvisor.lifecycle.stream import read_file
        from ringvisor.toolstack.saverestore import parse_stream
        path = str(Path(args.file).resolve())
        parse_stream(read_file(path), args.file)      # a bad file: one line, exit status 2
        r = request(sdir, "restore", path=path, paused=args.paused)
        print(f"Domain {r['id']} restored from {args.file}")
        return 0
    if cmd == "migrate":
        host, port = _address(args.address, "xl migrate")
        r = request(sdir, "migrate", name=args.domain, host=host, port=port)
        print(f"Domain {args.domain} migrated to {host}:{port} (domain {r['remote_domid']} "
              f"there): {r['bytes']:,} bytes, paused for {r['downtime_ms']:.0f} ms")
        return 0
    if cmd == "migrate-receive":
        host, port = _address(args.address, "xl migrate-receive", default_host="127.0.0.1")
        r = request(sdir, "migrate-receive", host=host, port=port)
        print(f"Waiting for a domain on {host}:{r['port']}")
        return 0
    raise ConfigError(f"xl: unknown command {cmd!r}")


def _address(text: str, what: str, default_host: str | None = None) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep:
        host = ""
    host = host or default_host
    if not host:
        raise ConfigError(f"{what}: expected HOST:PORT, not {text!r}")
    try:
        n = int(port)
    except ValueError:
        raise ConfigError(f"{what}: bad port {port!r}") from None
    if not 0 <= n < 65536:
        raise ConfigError(f"{what}: port {n} is out of range")
    return host, n


def _console(sdir: Path, name: str) -> int:
    s = connect(sdir)
    s.sendall(json.dumps({"cmd": "console", "args": {"name": name}}).encode() + b"\n")
    f = s.makefile("rb", buffering=0)
    line = b""
    while not line.endswith(b"\n"):
        c = f.read(1)
        if not c:
            raise XlFailed(f"xl console: the toolstack closed the connection")
        line += c
    r = json.loads(line)
    if not r["ok"]:
        raise XlFailed(r["error"])
    tty = sys.stdin.isatty()
    saved = None
    if tty:
        import termios
        import tty as ttymod
        saved = termios.tcgetattr(0)
        ttymod.setraw(0)
    out = sys.stdout.buffer
    history = r["result"].get("history", 0)
    stdin_open = True
    answered = True            # the domain said something since the last input was sent
    try:
        while history > 0:                        # what it said before we came
            data = f.read(min(history, 65536))
            if not data:
                return 0
            history -= len(data)
            out.write(data.replace(b"\n", b"\r\n") if tty else data)
        out.flush()
        while True:
            # a script's input ends: go on showing what the domain says until it is quiet
            r, _, _ = select.select([s] + ([0] if stdin_open else []), [], [],
                                    None if stdin_open else QUIET_S if answered else ANSWER_S)
            if not r:
                break
            if s in r:
                data = s.recv(4096)
                if not data:
                    break
                answered = True
                out.write(data.replace(b"\n", b"\r\n") if tty else data)
                out.flush()
            if 0 in r:
                data = os.read(0, 1024)
                if tty and DETACH in data:
                    break
                if not data:
                    stdin_open = False
                    continue
                s.sendall(data)
                answered = False
    finally:
        if saved is not None:
            import termios
            termios.tcsetattr(0, termios.TCSADRAIN, saved)
        s.close()
    return 0
