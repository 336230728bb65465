"""``ringvisor xen``: a Xen host in one process -- the hypervisor, Domain 0, its toolstack.

The hypervisor boots Domain 0 (by default the bundled para-virtual teaching
kernel) in the foreground with its console on this terminal, as a Xen host's
first console; the toolstack runs beside it as Domain 0's user space and
listens for ``ringvisor xl`` on the control socket of the state directory
(every DomU's console goes to ``console/NAME.log`` there, Domain 0's to
``console/Domain-0.log``).  This module only assembles the parts.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from ringvisor.errors import ConfigError
from ringvisor.toolstack.server import SOCKET, Server, state_dir
from ringvisor.toolstack.xl import Toolstack, XlError, resolve_kernel


def run_xen(args) -> int:
    """The ``ringvisor xen`` command."""
    from ringvisor.hw.chardev import StdioChardev
    from ringvisor.hypervisor.core import Hypervisor
    from ringvisor.ui.session import Session
    from ringvisor.hypervisor.interface import HypercallInterface

    sdir = state_dir(args.state_dir)
    sdir.mkdir(parents=True, exist_ok=True)
    (sdir / "console").mkdir(exist_ok=True)
    image = _kernel(args.dom0)
    policy = None
    if args.policy:
        try:
            policy = Path(args.policy).read_text()
        except OSError as e:
            raise ConfigError(f"{args.policy}: cannot read the policy: {e.strerror}") from None
    interactive = sys.stdin.isatty()
    stdout = sys.stdout.buffer
    log = open(sdir / "console" / "Domain-0.log", "wb")

    def output(data: bytes) -> None:
        stdout.write(data)
        stdout.flush()

    class Dom0Console(StdioChardev):
        """The terminal, with everything Domain 0 prints also logged (as xenconsoled does)."""

        def write(self, data: bytes) -> None:
            log.write(data)
            log.flush()
            super().write(data)

    pace = interactive if args.pace == "auto" else args.pace == "on"
    hv = Hypervisor(args.mem, args.engine, output=output, pace=pace, cpus=args.cpus)
    hv.build_dom0(image, args.dom0_append, args.dom0_mem, args.dom0, args.dom0_max_vcpus)
    hv.start()
    ts = Toolstack(HypercallInterface(hv), sdir)
    if policy is not None:
        try:
            ts.load_policy(policy)
        except XlError as e:
            raise ConfigError(str(e)) from None
    try:
        server = Server(ts, sdir / SOCKET)
    except XlError as e:
        raise ConfigError(str(e)) from None
    session = Session(hv.machine, max_instructions=args.max_instructions)
    session.image_path = args.dom0
    try:
        if args.web is not None:
            _live_view(session, hv, ts, args.web)
        # Domain 0's console is the machine's first serial line, with QEMU's escape keys
        # (Ctrl-A x ends the host) on a terminal
        session.attach_serial(0, Dom0Console(raw=interactive, out=output), escapes=interactive)
        stop = session.run()
    finally:
        session.close()
        server.close()
        log.close()
    if stop.message:
        print(f"\nringvisor: {stop.message}", file=sys.stderr)
    return stop.status


def _live_view(session, hv, ts: Toolstack, port: int) -> None:
    """``--web PORT``: the live view with the domains as ``xl list`` shows them, taken in
    the machine's loop (where the toolstack may call the hypervisor) at most four times a
    second, and handed to the server's thread as one finished list."""
    rows: list[list[dict]] = [[]]
    last = [0.0]
    drain = ts.requests_hook

    def hook() -> None:
        drain()
        now = time.perf_counter()
        if now - last[0] >= 0.25:
            last[0] = now
            rows[0] = ts.list()

    ts.requests_hook = hook
    session.domains = lambda: rows[0]
    session.hypervisor = hv
    session.structure = "xen"
    session.attach_web(port)


def _kernel(name: str) -> bytes:
    try:
        return resolve_kernel(name)
    except XlError as e:
        raise ConfigError(f"--dom0: {e}") from None
