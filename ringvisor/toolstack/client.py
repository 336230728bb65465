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
UNIX_PATH_MAX = 108    # sun_path, with its terminating NUL (unix(7))
MAX_REPLY = 64 << 20   # an answer longer than this is not the toolstack's


class XlFailed(RingvisorError):
    """The toolstack refused the request (exit status 1, as xl's)."""

    exit_status = 1


def connect(sdir: Path) -> socket.socket:
    """The control socket of the ``ringvisor xen`` with state directory ``sdir``, or one
    line saying why there is none to talk to."""
    path = sdir / SOCKET
    start = "(start one, or give --state-dir / RINGVISOR_STATE_DIR)"
    if len(os.fsencode(path)) >= UNIX_PATH_MAX:
        raise ConfigError(f"state directory {sdir}: its control socket's path is "
                          f"{len(os.fsencode(path))} bytes, longer than a Unix socket's "
                          f"{UNIX_PATH_MAX - 1} (give a shorter --state-dir)")
    s = socket.socket(socket.AF_UNIX)
    try:
        s.connect(str(path))
    except OSError as e:
        s.close()
        if isinstance(e, ConnectionRefusedError) and path.is_dir():
            why = f"{path} is a directory, not a control socket"
        elif isinstance(e, ConnectionRefusedError):
            why = f"{path} is left from one that is no longer running"
        elif isinstance(e, NotADirectoryError):
            why = f"state directory {sdir}: not a directory"
        elif isinstance(e, FileNotFoundError):
            why = f"no `ringvisor xen` is running with state directory {sdir}"
        else:
            why = f"{path}: {e.strerror or e}"
        raise ConfigError(f"{why} {start}" if "ringvisor xen" in why else
                          f"no `ringvisor xen` to talk to: {why} {start}") from None
    return s


def _answer(cmd: str, line: bytes, shape=None):
    """The result of the toolstack's one-line answer to ``cmd`` (its refusal: XlFailed),
    checked against ``shape`` (``_fits``): an answer that is not one is a host fault."""
    if not line:
        raise XlFailed(f"xl {cmd}: the toolstack closed the connection without answering "
                       f"(did `ringvisor xen` stop?)")
    try:
        r = json.loads(line)
    except (ValueError, RecursionError):
        r = None
    if not _fits(r, {"ok": bool}) or not r["ok"] and not isinstance(r.get("error"), str) \
            or r["ok"] and shape is not None and not _fits(r.get("result"), shape):
        raise XlFailed(f"xl {cmd}: the toolstack's answer is not one it gives "
                       f"({line[:40]!r}...)")
    if not r["ok"]:
        raise XlFailed(r["error"].splitlines()[0] if r["error"].strip() else
                       f"xl {cmd}: refused")
    return r.get("result")


def _fits(value, shape) -> bool:
    """``value`` has ``shape``: a type (int: not bool), a dict of key -> shape (the keys it
    must have), a one-item list [shape] (a list of those), or a tuple of alternatives."""
    if isinstance(shape, tuple):
        return any(_fits(value, s) for s in shape)
    if isinstance(shape, dict):
        return isinstance(value, dict) and all(k in value and _fits(value[k], v)
                                               for k, v in shape.items())
    if isinstance(shape, list):
        return isinstance(value, list) and all(_fits(v, shape[0]) for v in value)
    if shape is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if shape is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, shape)


def request(sdir: Path, cmd: str, shape=None, **args):
    s = connect(sdir)
    try:
        with s:
            s.sendall(json.dumps({"cmd": cmd, "args": args}).encode() + b"\n")
            reply = s.makefile("rb").readline(MAX_REPLY)
    except OSError as e:        # (it died mid-request: a reset, a broken pipe)
        raise XlFailed(f"xl {cmd}: the connection to the toolstack was lost "
                       f"({e.strerror or e}; did `ringvisor xen` stop?)") from None
    return _answer(cmd, reply, shape)


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
_TYPES = {"": (str, int, float), "d": int, ".1f": float}


def _rows(*cols) -> list:
    """The shape of a table's rows: every column's key, of its format's type."""
    return [{k: _TYPES[f] for c in cols for _, k, f in c}]


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
        r = request(sdir, "create", {"id": int}, config=cfg.to_dict(), paused=args.paused)
        print(f"Parsing config from {args.config}\nDomain {r['id']} ({cfg.name}) created")
        if args.console:
            return _console(sdir, cfg.name)
        return 0
    if cmd == "list":
        rows = request(sdir, "list", _rows(LIST_COLS, LIST_VERBOSE))
        if args.domains:
            rows = [r for r in rows if r["name"] in args.domains or str(r["id"]) in args.domains]
        show(rows, LIST_COLS + (LIST_VERBOSE if args.verbose else []))
        return 0
    if cmd == "vcpu-list":
        show(request(sdir, "vcpu-list", _rows(VCPU_COLS), names=args.domains), VCPU_COLS)
        return 0
    if cmd == "vcpu-pin":
        request(sdir, "vcpu-pin", name=args.domain, vcpu=args.vcpu, cpus=args.cpus)
        return 0
    if cmd in ("pause", "unpause", "destroy"):
        request(sdir, cmd, name=args.domain)
        return 0
    if cmd in ("shutdown", "reboot"):
        reason = "poweroff" if cmd == "shutdown" else "reboot"
        wait = bool(getattr(args, "wait", False))
        r = request(sdir, "shutdown", {"reason": (str, type(None))} if wait else None,
                    name=args.domain, reason=reason, wait=wait)
        if getattr(args, "wait", False) and r:
            print(f"Domain {args.domain} is shut down" + (f" ({r['reason']})" if r.get("reason") else ""))
        return 0
    if cmd == "sched-credit":
        if args.domain is None and (args.weight is not None or args.cap is not None):
            raise ConfigError("xl sched-credit: -w and -c need -d DOMAIN (as xl's: the "
                              "domain to set)")
        rows = request(sdir, "sched-credit", (_rows(SCHED_COLS), type(None)), name=args.domain,
                       weight=args.weight, cap=args.cap)
        if args.weight is None and args.cap is None:
            if not as_json:
                print("Cpupool Pool-0: tslice=30ms ratelimit=1000us migration-delay=0us")
            show(rows, SCHED_COLS)
        return 0
    if cmd == "mem-set":
        request(sdir, "mem-set", name=args.domain, mb=args.memory)
        return 0
    if cmd == "info":
        r = request(sdir, "info", dict)
        if as_json:
            print(json.dumps(r, indent=2))
        else:
            for k, v in r.items():
                print(f"{k:<22}: {v}")
        return 0
    if cmd == "dmesg":
        sys.stdout.write(request(sdir, "dmesg", str, clear=args.clear))
        return 0
    if cmd == "top":
        rows = request(sdir, "list", _rows(LIST_COLS))
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
        r = request(sdir, "save", {"bytes": int}, name=args.domain, path=path, keep=args.keep)
        print(f"Saved domain {args.domain} to {args.file} ({r['bytes']:,} bytes)")
        return 0
    if cmd == "restore":
        from ringvisor.lifecycle.stream import read_file
        from ringvisor.toolstack.saverestore import parse_stream
        path = str(Path(args.file).resolve())
        parse_stream(read_file(path), args.file)      # a bad file: one line, exit status 2
        r = request(sdir, "restore", {"id": int}, path=path, paused=args.paused)
        print(f"Domain {r['id']} restored from {args.file}")
        return 0
    if cmd == "migrate":
        host, port = _address(args.address, "xl migrate")
        r = request(sdir, "migrate", {"remote_domid": int, "bytes": int, "downtime_ms": float},
                    name=args.domain, host=host, port=port)
        print(f"Domain {args.domain} migrated to {host}:{port} (domain {r['remote_domid']} "
              f"there): {r['bytes']:,} bytes, paused for {r['downtime_ms']:.0f} ms")
        return 0
    if cmd == "migrate-receive":
        host, port = _address(args.address, "xl migrate-receive", default_host="127.0.0.1")
        r = request(sdir, "migrate-receive", {"port": int}, host=host, port=port)
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


def _open_fd(fd: int) -> bool:
    try:
        os.fstat(fd)
        return True
    except OSError:
        return False


def _console(sdir: Path, name: str) -> int:
    s = connect(sdir)
    f = s.makefile("rb", buffering=0)
    line = b""
    try:
        s.sendall(json.dumps({"cmd": "console", "args": {"name": name}}).encode() + b"\n")
        while not line.endswith(b"\n") and len(line) < MAX_REPLY:
            c = f.read(1)              # (one byte at a time: what follows is the console's)
            if not c:
                break
            line += c
    except OSError as e:
        s.close()
        raise XlFailed(f"xl console: the connection to the toolstack was lost "
                       f"({e.strerror or e}; did `ringvisor xen` stop?)") from None
    try:
        r = _answer("console", line, {"history": int})
    except XlFailed:
        s.close()
        raise
    tty = _open_fd(0) and os.isatty(0)
    saved = None
    if tty:
        import termios
        import tty as ttymod
        saved = termios.tcgetattr(0)
        ttymod.setraw(0)
    out = sys.stdout.buffer
    history = r["history"]
    stdin_open = _open_fd(0)   # (a closed standard input: only what the domain says)
    answered = True            # the domain said something since the last input was sent

    def lost(e: OSError):
        return XlFailed(f"xl console: the connection to the toolstack was lost "
                        f"({e.strerror or e}; did `ringvisor xen` stop?)")
    try:
        while history > 0:                        # what it said before we came
            try:
                data = f.read(min(history, 65536))
            except OSError as e:
                raise lost(e) from None
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
                try:
                    data = s.recv(4096)
                except OSError as e:
                    raise lost(e) from None
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
                try:
                    s.sendall(data)
                except OSError as e:
                    raise lost(e) from None
                answered = False
    finally:
        if saved is not None:
            import termios
            termios.tcsetattr(0, termios.TCSADRAIN, saved)
        s.close()
    return 0
