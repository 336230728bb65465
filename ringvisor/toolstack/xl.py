"""The toolstack's management logic: what ``xl`` asks for (Xen's libxl, in Domain 0).

One :class:`Toolstack` runs in Domain 0's user space beside the hypervisor:
it builds domains from configuration files, names them in xenstore, serves
their consoles (``console/NAME.log`` in the state directory, and whoever is
attached) and their xenstore rings, follows their lifecycle (on_poweroff,
on_reboot, on_crash), and answers the ``xl`` subcommands.  Every action is a
hypercall through the interface, with Domain 0's identity.
"""

from __future__ import annotations

import queue
import time
import uuid as _uuid
from dataclasses import dataclass, field
from pathlib import Path

from ringvisor.abi import DomInfoFlag, Shutdown, XsType
from ringvisor.errors import ConfigError

from . import builder, config, migration, saverestore
from .config import MIN_MEMORY, DomainConfig
from .blkback import VbdBackend
from .consoled import ConsoleBackend
from .xc import Xc, XcError
from .xenstore import Connection, Store, XsError
from .xsring import RingConnection

POLL_NS = 10_000_000            # how often the toolstack looks at its queue (virtual time)
OFF_CPU_NS = 100_000            # how often a save looks whether its paused domain left the CPU
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
    disks: list = field(default_factory=list)         # blkback.VbdBackend, one per disk
    first_output_ns: int | None = None
    waiters: list = field(default_factory=list)       # (callable) for xl shutdown -w
    handled: bool = False                             # its shutdown/crash was acted on


def _span(va: int, n: int) -> list[int]:
    return [va + i * 0x1000 for i in range(n)]


def resolve_kernel(kernel: str) -> bytes:
    """A path, or the name of a bundled guest image."""
    p = Path(kernel)
    if p.is_file():
        return p.read_bytes()
    from ringvisor.guests.build import IMAGE_NAMES, image_path
    if kernel in IMAGE_NAMES:
        return image_path(kernel).read_bytes()
    raise XlError(f"kernel {kernel!r}: no such file or bundled image")


def check_kernel_type(image: bytes, cfg: DomainConfig) -> None:
    """A para-virtual image for ``type = "pv"``, an unmodified one for ``type = "bt"``."""
    pv = builder.is_paravirtual(image)
    if cfg.type == "bt" and pv:
        raise XlError(f"{cfg.source}: kernel {cfg.kernel!r} is a para-virtual image (its "
                      "code makes Xen hypercalls); type = \"bt\" runs an unmodified kernel")
    if cfg.type == "pv" and not pv:
        raise XlError(f"{cfg.source}: kernel {cfg.kernel!r} is not a para-virtual image (its "
                      "code makes no Xen hypercall); type = \"pv\" needs one built by pvcc "
                      "(or use type = \"bt\")")


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
        self.backend_log: list[str] = []
        self._ticks = 0
        self.incoming: queue.SimpleQueue = queue.SimpleQueue()   # migrated domains arriving
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

    def quiet(self) -> bool:
        """Its periodic poll can wake nobody by itself: no migrated domain waits to be taken
        in (what else it moves -- console input, ring requests, a stopped domain's
        lifecycle -- it moves within a second, or for a domain that cannot run)."""
        return self.incoming.empty()

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
            for vbd in m.disks:
                if vbd.poll():
                    self.wake()             # a full ring's worth served: come back for more
        if self.lifecycle_due:
            self.lifecycle_due = False
            self._lifecycle()
        while not self.incoming.empty():
            data, answer = self.incoming.get()
            try:
                d = self.restore(data, "the migration stream")
            except XlError as e:
                answer(f"ERROR {e}")
            else:
                answer(f"OK {d}")
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
        image = resolve_kernel(cfg.kernel)
        check_kernel_type(image, cfg)
        try:
            ssidref = self.xc.flask_context_to_sid(cfg.seclabel) if cfg.seclabel else 0
        except XcError:
            raise XlError(f"seclabel = {cfg.seclabel!r}: not a security context of the loaded "
                          "policy (ringvisor xen --policy, xl loadpolicy)") from None
        # (the hypervisor's refusal would be a bare EINVAL or ENOMEM from the builder)
        phys = self.xc.physinfo()
        total, free = phys["total_pages"] >> 8, phys["free_pages"] >> 8
        if max(cfg.maxmem, cfg.memory) > total:
            raise XlError(f"{'maxmem' if cfg.maxmem > cfg.memory else 'memory'} = "
                          f"{max(cfg.maxmem, cfg.memory)}: more than this host's memory "
                          f"({total} MiB for domains)")
        if cfg.memory > free:
            raise XlError(f"memory = {cfg.memory}: this host has {free} MiB free "
                          "(xl list shows what the domains hold; xl mem-set can take some back)")
        if cfg.uuid:
            handle = _uuid.UUID(cfg.uuid).bytes
            # (its xenstore directory /vm/UUID is the domain's own: two cannot share it)
            if any(bytes(info["handle"]) == handle for info in self.xc.list_domains()):
                raise XlError(f"uuid = {cfg.uuid!r}: a domain with this UUID exists already")
        else:
            handle = _uuid.uuid4().bytes
        t0 = self.iface.now_ns()
        try:
            b = builder.build(self.xc, image, name=cfg.name, cmdline=cfg.cmdline, mem_mb=cfg.memory,
                              maxmem_mb=cfg.maxmem, ssidref=ssidref, handle=handle, kind=cfg.type,
                              vcpus=cfg.vcpus)
        except XcError as e:
            raise XlError(f"{cfg.name}: cannot build the domain: {e}") from None
        except Exception as e:          # the loader's refusal of a bad image
            raise XlError(f"{cfg.name}: {e}") from None
        return self._start(Managed(b.domid, cfg, cfg.name, created_ns=t0), b, handle, {},
                           paused, f"{cfg.name}: cannot start the domain")

    def _start(self, m: Managed, ports, handle: bytes, entries: dict[str, str], paused: bool,
               what: str, log_mode: str = "wb") -> int:
        """A built domain under management: its scheduler parameters, xenstore entries
        (``entries``: more below its /local/domain/N), console log and back-ends; unpaused
        unless ``paused``.  A failure destroys it."""
        d, cfg = m.domid, m.config
        self.managed[d] = m
        try:
            self.xc.sched_credit(d, weight=cfg.weight, cap=cfg.cap)
            for k, cpus in enumerate(cfg.cpus):
                try:
                    self.xc.vcpu_affinity(d, k, config.parse_cpulist(cpus))
                except XcError as e:
                    raise XlError(f"cpus = {cpus!r}: not a CPU of this host "
                                  f"(it has {self.xc.physinfo()['nr_cpus']}): {e}") from None
            self._xenstore_entries(m, ports, handle)
            for rel, value in sorted(entries.items()):
                self.xs.write(f"/local/domain/{d}/{rel}", str(value))
            m.log = open(self.state_dir / "console" / f"{cfg.name}.log", log_mode)
            m.console = ConsoleBackend(self.xc, d, ports.console_port,
                                       lambda data, m=m: self._output(m, data))
            m.store = RingConnection(self.xc, self.store, d, ports.store_port)
            for disk in cfg.disks:
                if cfg.type == "bt":           # the hosted structure: the hypervisor's ATA disk
                    self.xc.ata_attach(d, disk.target, disk.access == "ro")
                    continue
                vbd = VbdBackend(self.xc, self.store, d, disk, self._log)
                m.disks.append(vbd)
                vbd.publish()
            self.store.fire({"@introduceDomain"})
            if not paused:
                self.xc.unpause(d)
        except (XcError, XsError, XlError, OSError, ValueError, ConfigError) as e:
            self._forget(m)             # (XlError: a cpus = list this host cannot give)
            self.xc.destroy_quietly(d)
            raise XlError(f"{what}: {e}") from None
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
        # its balloon driver reads the target the toolstack sets (xl mem-set)
        for node in ("memory", "memory/target", "memory/static-max"):
            self.xs.set_perms(f"{base}/{node}", "n0", f"r{d}")

    # -- lifecycle --------------------------------------------------------------------------
    def _log(self, line: str) -> None:
        """A back-end's complaint: kept, and appended to ``STATE_DIR/backends.log`` (Xen's
        back-ends log to /var/log/xen)."""
        self.backend_log.append(line)
        with open(self.state_dir / "backends.log", "a") as f:
            f.write(line + "\n")

    def _forget(self, m: Managed) -> None:
        for part in (*m.disks, m.console, m.store):
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

    # -- save, restore (saverestore.py) -------------------------------------------------------
    def save(self, name: str, done) -> None:
        """Pause the domain and, once it is off the CPU, call ``done(stream, None)`` with
        its stream, or ``done(None, error)`` if that failed (the domain runs on).  What
        ``done`` returns says what becomes of the domain: "destroy" (``xl save``),
        "resume" (``xl save -c``, a migration that failed) or "hold" (paused, for a
        migration waiting for its destination: ``finish_hold``)."""
        m = self.find(name)
        if m.domid == 0 or m.config is None:
            raise XlError("Domain-0 cannot be saved")
        try:
            info = self.xc.domain_info(m.domid)
            if info["domain"] != m.domid or info["flags"] & (DomInfoFlag.shutdown |
                                                             DomInfoFlag.dying):
                raise XlError(f"save {m.name}: the domain is shut down or going")
            self.xc.pause(m.domid)
        except XcError as e:
            raise XlError(f"save {m.name}: {e}") from None
        self._when_off_cpu(m, lambda: self._saved(m, done))

    def finish_hold(self, name: str, gone: bool) -> None:
        """A held domain (see ``save``) went elsewhere (destroyed here) or did not (runs on)."""
        m = self.find(name)
        if gone:
            self.destroy(m.name)
        else:
            self._resume(m)

    def _when_off_cpu(self, m: Managed, then) -> None:
        try:
            running = self.xc.domain_info(m.domid)["flags"] & DomInfoFlag.running
        except XcError:
            running = 0
        if running:
            self.iface.after(OFF_CPU_NS, lambda: self._when_off_cpu(m, then))
        else:
            then()

    def _saved(self, m: Managed, done) -> None:
        d = m.domid
        try:
            self._drain_rings(m)
            base = f"/local/domain/{d}"
            info = self.xc.domain_info(d)
            cfg = m.config
            meta = {"config": cfg.to_dict(), "uuid": str(_uuid.UUID(bytes=bytes(info["handle"]))),
                    "max_pages": info["max_pages"],
                    "console_port": int(self.xs.read(f"{base}/console/port")),
                    "store_port": int(self.xs.read(f"{base}/store/port")),
                    "xenstore": self._guest_entries(base)}
            frames = self._frames(d, (max(cfg.memory, cfg.maxmem) << 8) + 2)
            stream = saverestore.save_stream(self.xc, d, meta, frames)
        except (XcError, XsError, TypeError, ValueError) as e:
            self._resume(m)
            done(None, f"save {m.name}: {e}")
            return
        then = done(stream, None)
        if then == "destroy":
            self.destroy(m.name)
        elif then != "hold":
            self._resume(m)

    def _resume(self, m: Managed) -> None:
        try:
            self.xc.unpause(m.domid)
        except XcError:
            pass

    def _drain_rings(self, m: Managed) -> None:
        """What the paused domain left in its rings is moved out before its memory is read
        (its console output reaches this host's log, not the next one's)."""
        for part in (m.console, m.store):
            if part is not None:
                part.poll()

    def _frames(self, domid: int, limit: int) -> list[int]:
        """The pseudo-physical frames the domain has, below ``limit`` (a ballooned-out
        frame is a hole a foreign mapping refuses)."""
        out = []
        for first in range(0, limit, saverestore.MAP_CHUNK):
            chunk = list(range(first, min(first + saverestore.MAP_CHUNK, limit)))
            try:
                self.xc.unmap(_span(self.xc.map_foreign(domid, chunk), len(chunk)))
                out += chunk
            except XcError:
                for g in chunk:
                    try:
                        self.xc.unmap([self.xc.map_foreign(domid, [g])])
                        out.append(g)
                    except XcError:
                        pass
        return out

    def _guest_entries(self, base: str) -> dict[str, str]:
        """The domain's xenstore entries that are not the toolstack's own, by path below
        ``base`` (what its front-ends and it wrote: device/, data/, control/...)."""
        out: dict[str, str] = {}

        def walk(rel: str) -> None:
            path = f"{base}/{rel}" if rel else base
            try:
                kids = [k for k in self.xs.call(XsType.DIRECTORY, path).decode().split("\0") if k]
            except XsError:
                return
            if rel:
                value = self.xs.read(path)
                if value:
                    out[rel] = value
            for k in kids:
                if rel or k not in saverestore.OWN_ENTRIES:
                    walk(f"{rel}/{k}" if rel else k)
        walk("")
        return out

    def restore(self, data: bytes, what: str, paused: bool = False) -> int:
        """Build the domain saved in ``data`` (a stream ``save`` made); its id."""
        from ringvisor.lifecycle.stream import BadImage
        try:
            meta, context, frames, memory, used = saverestore.parse_stream(data, what)
            cfg = DomainConfig.from_dict(meta["config"])
        except BadImage as e:
            raise XlError(str(e)) from None
        except TypeError as e:
            raise XlError(f"{what}: corrupt domain configuration ({e})") from None
        if any(m.name == cfg.name for m in self.managed.values()):
            raise XlError(f"a domain called {cfg.name!r} exists already")
        t0 = self.iface.now_ns()
        try:
            ssidref = self.xc.flask_context_to_sid(cfg.seclabel) if cfg.seclabel else 0
            d = saverestore.restore_stream(self.xc, meta, context, frames, memory, used, ssidref)
        except XcError as e:
            raise XlError(f"restore {cfg.name}: {e}") from None
        ports = builder.Built(d, 0, int(meta["console_port"]), 0, int(meta["store_port"]))
        return self._start(Managed(d, cfg, cfg.name, created_ns=t0), ports,
                           _uuid.UUID(meta["uuid"]).bytes, meta["xenstore"], paused,
                           f"restore {cfg.name}: cannot start the domain", log_mode="ab")

    # -- migration (migration.py) ----------------------------------------------------------
    def migrate_receive(self, address: tuple[str, int]) -> int:
        """Listen for one domain on ``address``; the port (0 takes a free one)."""
        try:
            lst = migration.Listener(address, lambda data, answer: self.incoming.put((data, answer)),
                                     self._say)
        except OSError as e:
            raise XlError(f"migrate-receive: cannot listen on {address[0]}:{address[1]}: "
                          f"{e.strerror or e}") from None
        return lst.port

    def migrate(self, name: str, address: tuple[str, int], reply) -> None:
        """Send the domain to the toolstack listening at ``address``; ``reply(error or
        None, report)`` when it runs there (and is gone here) or did not go (and runs on
        here)."""
        m = self.find(name)
        t0 = time.monotonic()

        def send(stream, err):
            if err:
                reply(err, None)
                return "resume"
            try:
                sender = migration.Sender(address, stream)
            except OSError as e:
                reply(f"migrate {m.name}: cannot reach {address[0]}:{address[1]} "
                      f"({e.strerror or e}); the domain keeps running here", None)
                return "resume"
            self._await(m, sender, reply, len(stream), t0)
            return "hold"
        self.save(name, send)

    def _await(self, m: Managed, sender, reply, size: int, t0: float) -> None:
        got = sender.poll()
        if got is None:
            self.iface.after(migration.POLL_NS, lambda: self._await(m, sender, reply, size, t0))
            return
        went, text = got
        self.finish_hold(m.name, went)
        if went:
            reply(None, {"bytes": size, "remote_domid": text,
                         "downtime_ms": (time.monotonic() - t0) * 1000})
        else:
            reply(f"migrate {m.name}: {text}; the domain keeps running here", None)

    def _say(self, msg: str) -> None:
        """The migration listener's news (a stream that broke off): on stderr, for whoever
        runs the toolstack; a back-end's complaint goes to :meth:`_log` instead."""
        import sys
        print(f"ringvisor: {msg}", file=sys.stderr, flush=True)

    def mem_set(self, name: str, mb: int) -> None:
        """Set the balloon target (memory/target); the guest's balloon driver follows it."""
        m = self.find(name)
        cfg_max = m.config.maxmem if m.config else mb
        # above maxmem the hypervisor would refuse the frames (libxl: "memory_dynamic_max
        # must be less than or equal to memory_static_max"); below the least a domain is
        # built with its kernel could not give the frames back and go on running
        if not MIN_MEMORY <= mb <= cfg_max:
            raise XlError(f"mem-set {m.name}: {mb} MiB is outside {MIN_MEMORY}..{cfg_max} "
                          "(the least a domain runs in .. its maxmem)")
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
                         "state": state, "time": info["cpu_time"] / 1e9,
                         "type": "bt" if f & DomInfoFlag.hvm_guest else "pv",
                         "uuid": str(_uuid.UUID(bytes=bytes(info["handle"])))})
        return rows

    def vcpu_list(self, names: list[str] | None = None) -> list[dict]:
        """Every vCPU of the domains (or of those named), as xl's vcpu-list prints them:
        State is r (running), b (blocked), p (offline: xl shows a vCPU that is down
        as paused), CPU is '-' for an offline vCPU."""
        doms = sorted(self.managed.values(), key=lambda m: m.domid)
        if names:
            doms = [self.find(n) for n in names]
        rows = []
        for m in doms:
            try:
                last = self.xc.domain_info(m.domid)["max_vcpu_id"]
                infos = [self.xc.vcpu_info(m.domid, k) for k in range(last + 1)]
            except XcError:
                continue
            for v in infos:
                state = ("r" if v["running"] else "-") + ("b" if v["blocked"] else "-") + \
                    ("-" if v["online"] else "p")
                hard = self.xc.vcpu_affinity(m.domid, v["vcpu"])
                rows.append({"name": m.name, "id": m.domid, "vcpu": v["vcpu"],
                             "cpu": v["cpu"] if v["online"] else "-", "state": state,
                             "time": v["cpu_time"] / 1e9,
                             "affinity": f"{self._cpulist(hard)} / all"})
        return rows

    def _cpulist(self, cpus) -> str:
        """A CPU set as xl prints it: ``all`` for every pCPU, else ranges (``0,2-3``)."""
        if cpus >= set(range(self.xc.physinfo()["nr_cpus"])):
            return "all"
        out, run = [], []
        for c in sorted(cpus):
            if run and c != run[-1] + 1:
                out.append(run)
                run = []
            run.append(c)
        out.append(run)
        return ",".join(f"{r[0]}-{r[-1]}" if len(r) > 1 else str(r[0]) for r in out)

    def vcpu_pin(self, name: str, vcpu: str, cpus: str) -> None:
        """xl vcpu-pin DOMAIN VCPU CPUS: VCPU a number or ``all``; CPUS a CPU list."""
        m = self.find(name)
        try:
            want = config.parse_cpulist(cpus)
        except ValueError as e:
            raise XlError(f"vcpu-pin: {e}") from None
        n = self.xc.domain_info(m.domid)["max_vcpu_id"] + 1
        if vcpu == "all":
            which = range(n)
        elif vcpu.isdigit() and int(vcpu) < n:
            which = [int(vcpu)]
        else:
            raise XlError(f"vcpu-pin: {m.name} has no vCPU {vcpu!r} (0 to {n - 1}, or all)")
        for k in which:
            try:
                self.xc.vcpu_affinity(m.domid, k, want)
            except XcError as e:
                raise XlError(f"vcpu-pin: {m.name} vCPU {k} to CPUs {cpus}: {e} (the host has "
                              f"{self.xc.physinfo()['nr_cpus']} CPUs)") from None

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
