"""The toolstack's management logic: what ``xl`` asks for (Xen's libxl, in Domain 0).

One :class:`Toolstack` runs in Domain 0's user space beside the hypervisor:
it builds domains from configuration files, names them in xenstore, serves
their consoles (``console/NAME.log`` in the state directory, and whoever is
attached) and their xenstore rings, follows their lifecycle (on_poweroff,
on_reboot, on_crash), and answers the ``xl`` subcommands.  Every action is a
hypercall through the interface, with Domain 0's identity.
"""

from __future__ import annotations

import uuid as _uuid
from dataclasses import dataclass, field
from pathlib import Path

from ringvisor.abi import DomInfoFlag, Shutdown, XsType

from . import builder
from .config import DomainConfig
from .consoled import ConsoleBackend
from .xc import Xc, XcError
from .xenstore import Connection, Store, XsError
from .xsring import RingConnection

POLL_NS = 10_000_000            # how often the toolstack looks at its queue (virtual time)
SHUTDOWN_REASONS = {int(s): s.name for s in Shutdown}


class XlError(Exception):
    """A refused xl request: one line for the user (and Xen's errno when there is one)."""


@dataclass
class Managed:
    """A domain the toolstack created (or Domain 0)."""

    domid: int
    config: DomainConfig | None
    name: str
    created_ns: int = 0
    console: ConsoleBackend | None = None
    store: RingConnection | None = None
    log: object = None
    listeners: list = field(default_factory=list)     # attached consoles: callables
    first_output_ns: int | None = None
    waiters: list = field(default_factory=list)       # (callable) for xl shutdown -w
    handled: bool = False                             # its shutdown/crash was acted on


def resolve_kernel(kernel: str) -> bytes:
    """A path, or the name of a bundled guest image."""
    p = Path(kernel)
    if p.is_file():
        return p.read_bytes()
    from ringvisor.guests.build import IMAGE_NAMES, image_path
    if kernel in IMAGE_NAMES:
        return image_path(kernel).read_bytes()
    raise XlError(f"kernel {kernel!r}: no such file or bundled image")


class Toolstack:
    def __init__(self, iface, state_dir: Path, dom0_name: str = "Domain-0",
                 dom0_output=None) -> None:
        self.iface = iface
        self.xc = Xc(iface)
        self.store = Store()
        self.xs = Connection(self.store, 0, lambda path, token: None)
        self.state_dir = Path(state_dir)
        (self.state_dir / "console").mkdir(parents=True, exist_ok=True)
        self.managed: dict[int, Managed] = {0: Managed(0, None, dom0_name)}
        self.dmesg_index = 0
        self._scheduled = False
        self.requests_hook = lambda: None   # the control socket's queue (server.Server.drain)
        self.lifecycle_due = True
        self._ticks = 0
        iface.on_event = self.wake
        iface.on_domain_change = self._domain_changed
        for path, value in (("/local/domain/0/name", dom0_name), ("/local/domain/0/domid", "0")):
            self.xs.write(path, value)
        self.tick()

    # -- the event loop's side ---------------------------------------------------------
    def wake(self) -> None:
        """Something happened (an event on one of our ports, a domain stopped): look soon."""
        if not self._scheduled:
            self._scheduled = True
            self.iface.after(0, self._run)

    def _domain_changed(self) -> None:
        self.lifecycle_due = True
        self.wake()

    def _run(self) -> None:
        self._scheduled = False
        self.poll()

    def tick(self) -> None:
        self._ticks += 1
        if self._ticks % 100 == 0:
            self.lifecycle_due = True         # (once a second anyway)
        self.poll()
        self.iface.after(POLL_NS, self.tick)

    def poll(self) -> None:
        self.iface.events()
        for m in list(self.managed.values()):
            if m.console is not None:
                try:
                    m.console.poll()
                except XcError:
                    pass
            if m.store is not None:
                try:
                    m.store.poll()
                except XcError:
                    pass
        if self.lifecycle_due:
            self.lifecycle_due = False
            self._lifecycle()
        self.requests_hook()

    def _output(self, m: Managed, data: bytes) -> None:
        if m.first_output_ns is None:
            m.first_output_ns = self.iface.now_ns()
        if m.log is not None:
            m.log.write(data)
            m.log.flush()
        for f in list(m.listeners):
            f(data)

    # -- creating -------------------------------------------------------------------------
    def find(self, name: str) -> Managed:
        for m in self.managed.values():
            if m.name == name or str(m.domid) == name:
                return m
        raise XlError(f"no domain called {name!r}")

    def create(self, cfg: DomainConfig, paused: bool = False) -> int:
        if any(m.name == cfg.name for m in self.managed.values()):
            raise XlError(f"a domain called {cfg.name!r} exists already")
        if cfg.type != "pv":
            raise XlError(f"{cfg.source}: type: {cfg.type!r} domains are not supported by this "
                          "hypervisor yet (only pv)")
        if cfg.disks:
            raise XlError(f"{cfg.source}: disk: the block split driver (blkfront/blkback) is "
                          "not built yet")
        image = resolve_kernel(cfg.kernel)
        ssidref = self.xc.flask_context_to_sid(cfg.seclabel) if cfg.seclabel else 0
        handle = _uuid.uuid4().bytes
        t0 = self.iface.now_ns()
        try:
            b = builder.build(self.xc, image, name=cfg.name, cmdline=cfg.cmdline, mem_mb=cfg.memory,
                              maxmem_mb=cfg.maxmem, ssidref=ssidref, handle=handle)
        except XcError as e:
            raise XlError(f"{cfg.name}: cannot build the domain: {e}") from None
        except Exception as e:          # the loader's refusal of a bad image
            raise XlError(f"{cfg.name}: {e}") from None
        d = b.domid
        m = Managed(d, cfg, cfg.name, created_ns=t0)
        self.managed[d] = m
        try:
            self.xc.sched_credit(d, weight=cfg.weight, cap=cfg.cap)
            self._xenstore_entries(m, b, handle)
            m.log = open(self.state_dir / "console" / f"{cfg.name}.log", "wb")
            m.console = ConsoleBackend(self.xc, d, b.console_port, lambda data, m=m: self._output(m, data))
            m.store = RingConnection(self.xc, self.store, d, b.store_port)
            self.store.fire({"@introduceDomain"})
            if not paused:
                self.xc.unpause(d)
        except (XcError, XsError, OSError) as e:
            self._forget(m)
            try:
                self.xc.destroy(d)
            except XcError:
                pass
            raise XlError(f"{cfg.name}: cannot start the domain: {e}") from None
        return d

    def _xenstore_entries(self, m: Managed, b, handle: bytes) -> None:
        d, cfg = m.domid, m.config
        base = f"/local/domain/{d}"
        vm = f"/vm/{_uuid.UUID(bytes=handle)}"
        for path, value in ((f"{vm}/name", cfg.name), (f"{base}/name", cfg.name),
                            (f"{base}/domid", str(d)), (f"{base}/vm", vm),
                            (f"{base}/memory/target", str(cfg.memory << 10)),
                            (f"{base}/memory/static-max", str(cfg.maxmem << 10)),
                            (f"{base}/console/port", str(b.console_port)),
                            (f"{base}/console/ring-ref", "0"),
                            (f"{base}/console/type", "xenconsoled"),
                            (f"{base}/store/port", str(b.store_port)),
                            (f"{base}/store/ring-ref", "1")):
            self.xs.write(path, value)
        for path in (f"{base}/control", f"{base}/device", f"{base}/data"):
            self.xs.call(XsType.MKDIR, path)
        # the domain may read its own subtree; it owns device/ and data/ (its front-ends write
        # there); control/shutdown is the toolstack's to write
        self.xs.set_perms(base, "n0", f"r{d}")
        for sub in ("device", "data"):
            self.xs.set_perms(f"{base}/{sub}", f"n{d}")
        self.xs.set_perms(f"{base}/control", "n0", f"r{d}")

    # -- lifecycle --------------------------------------------------------------------------
    def _forget(self, m: Managed) -> None:
        for part in (m.console, m.store):
            if part is not None:
                part.close()
        if m.log is not None:
            m.log.close()
        self.managed.pop(m.domid, None)
        try:
            self.xs.rm(f"/local/domain/{m.domid}")
        except XsError:
            pass
        self.store.fire({"@releaseDomain"})

    def _lifecycle(self) -> None:
        """Act on domains that shut down or crashed (on_poweroff / on_reboot / on_crash)."""
        try:
            infos = {i["domain"]: i for i in self.xc.list_domains()}
        except XcError:
            return
        for m in list(self.managed.values()):
            if m.domid == 0:
                continue
            info = infos.get(m.domid)
            if info is None:
                for w in m.waiters:
                    w(None)
                self._forget(m)
                continue
            if info["flags"] & DomInfoFlag.shutdown and not m.handled:
                m.handled = True
                reason = (info["flags"] >> DomInfoFlag.shutdownshift) & DomInfoFlag.shutdownmask
                for w in m.waiters:
                    w(reason)
                m.waiters.clear()
                key = {Shutdown.poweroff: "on_poweroff", Shutdown.reboot: "on_reboot"}.get(
                    reason, "on_crash")
                action = getattr(m.config, key)
                if action == "preserve":
                    continue
                cfg = m.config
                self.destroy(m.name)
                if action == "restart":
                    self.create(cfg)

    def destroy(self, name: str) -> None:
        m = self.find(name)
        if m.domid == 0:
            raise XlError("Domain-0 cannot be destroyed")
        try:
            self.xc.destroy(m.domid)
        except XcError as e:
            raise XlError(f"destroy {m.name}: {e}") from None
        for w in m.waiters:
            w(None)
        self._forget(m)

    def pause(self, name: str) -> None:
        m = self.find(name)
        try:
            self.xc.pause(m.domid)
        except XcError as e:
            raise XlError(f"pause {m.name}: {e}") from None

    def unpause(self, name: str) -> None:
        m = self.find(name)
        try:
            self.xc.unpause(m.domid)
        except XcError as e:
            raise XlError(f"unpause {m.name}: {e}") from None

    def shutdown(self, name: str, reason: Shutdown = Shutdown.poweroff, waiter=None) -> None:
        """Ask the domain to shut down: through xenstore (control/shutdown) if its kernel
        listens there (it said so with control/feature-poweroff), else as Xen's xl does for
        a guest without PV drivers -- the hypervisor shuts it down (SCHEDOP_remote_shutdown)."""
        m = self.find(name)
        if m.domid == 0:
            raise XlError("Domain-0 is shut down from inside (or by stopping `ringvisor xen`)")
        word = {Shutdown.poweroff: "poweroff", Shutdown.reboot: "reboot"}[reason]
        base = f"/local/domain/{m.domid}/control"
        self.xs.write(f"{base}/shutdown", word)
        if waiter is not None:
            m.waiters.append(waiter)
        if self.xs.read(f"{base}/feature-{word}") != "1":
            from ringvisor.abi import SCHED_REMOTE_SHUTDOWN, Hypercall, SchedOp
            try:
                self.xc._struct_call(Hypercall.sched_op, SCHED_REMOTE_SHUTDOWN,
                                     {"domain_id": m.domid, "reason": reason},
                                     f"shutdown {m.name}", pre=(SchedOp.remote_shutdown,))
            except XcError as e:
                raise XlError(f"shutdown {m.name}: {e}") from None
        self.wake()

    def mem_set(self, name: str, mb: int) -> None:
        """Set the balloon target (memory/target); the guest's balloon driver follows it."""
        m = self.find(name)
        cfg_max = m.config.maxmem if m.config else mb
        if mb <= 0 or mb > cfg_max:
            raise XlError(f"mem-set {m.name}: {mb} MiB is outside 1..{cfg_max} (maxmem)")
        self.xs.write(f"/local/domain/{m.domid}/memory/target", str(mb << 10))

    def sched_credit(self, name: str | None, weight: int | None, cap: int | None) -> list[dict]:
        targets = [self.find(name)] if name else sorted(self.managed.values(), key=lambda m: m.domid)
        rows = []
        for m in targets:
            try:
                p = self.xc.sched_credit(m.domid, weight, cap)
            except XcError as e:
                raise XlError(f"sched-credit {m.name}: {e}") from None
            rows.append({"name": m.name, "id": m.domid, "weight": p["weight"], "cap": p["cap"]})
        return rows

    def load_policy(self, text: str) -> None:
        try:
            self.xc.flask_load(text)
        except XcError as e:
            raise XlError(f"loadpolicy: the hypervisor refused the policy ({e}); "
                          "see xl dmesg for the line") from None

    # -- reports ---------------------------------------------------------------------------
    def list(self) -> list[dict]:
        rows = []
        for info in self.xc.list_domains():
            m = self.managed.get(info["domain"])
            f = info["flags"]
            state = "".join(c if f & bit else "-" for c, bit in (
                ("r", DomInfoFlag.running), ("b", DomInfoFlag.blocked), ("p", DomInfoFlag.paused),
                ("s", DomInfoFlag.shutdown), ("c", 0), ("d", DomInfoFlag.dying)))
            reason = (f >> DomInfoFlag.shutdownshift) & DomInfoFlag.shutdownmask
            if f & DomInfoFlag.shutdown and reason == Shutdown.crash:
                state = state[:3] + "-c" + state[5]
            rows.append({"name": m.name if m else f"(d{info['domain']})", "id": info["domain"],
                         "mem": info["tot_pages"] >> 8, "vcpus": info["nr_online_vcpus"],
                         "state": state, "time": info["cpu_time"] / 1e9})
        return rows

    def vcpu_list(self) -> list[dict]:
        rows = []
        for m in sorted(self.managed.values(), key=lambda m: m.domid):
            try:
                v = self.xc.vcpu_info(m.domid)
            except XcError:
                continue
            state = ("r" if v["running"] else "-") + ("b" if v["blocked"] else "-")
            rows.append({"name": m.name, "id": m.domid, "vcpu": 0, "cpu": 0, "state": state,
                         "time": v["cpu_time"] / 1e9, "affinity": "all"})
        return rows

    def info(self) -> dict:
        p = self.xc.physinfo()
        return {"host": "ringvisor", "nr_cpus": p["nr_cpus"], "cpu_mhz": p["cpu_khz"] // 1000,
                "total_memory": p["total_pages"] >> 8, "free_memory": p["free_pages"] >> 8,
                "xen_version": "3.0-ringvisor", "xen_scheduler": "credit",
                "xen_commandline": "", "domains": len(self.managed)}

    def dmesg(self, clear: bool = False) -> str:
        data, _ = self.xc.read_console(0, False, 65536, clear)
        return data.decode("utf-8", "replace")

    def type_console(self, name: str, data: bytes) -> None:
        m = self.find(name)
        if m.console is None:
            raise XlError(f"{m.name}: its console is the hypervisor's (stdio of `ringvisor xen`)")
        m.console.type(data)
