"""Domain configuration files, in the style of Xen's ``xl.cfg``.

::

    name = "web"
    type = "pv"                     # pv: a para-virtualized kernel (pvcc); bt: an unmodified one
    kernel = "kernel-pv"            # a path, or the name of a bundled image
    cmdline = "run=syscall iters=100"   # (or: extra = ...)
    memory = 32                     # MiB
    maxmem = 48                     # MiB it may balloon up to (default: memory)
    vcpus = 1
    disk = ['/var/img/web.img,raw,xvda,rw', '/var/img/data.img,raw,xvdb,ro']
                                    # xvda..xvdd; rw or ro; ',backend=hypervisor': the
                                    # monolithic structure (blkback inside the hypervisor)
    on_poweroff = "destroy"         # destroy | restart | preserve
    on_reboot = "restart"
    on_crash = "destroy"
    seclabel = "system_u:system_r:domU_t"
    weight = 256                    # credit scheduler (xl's sched-credit in the file)
    cap = 0

Lines are ``key = value`` with Python-like literals (strings in single or
double quotes, integers, lists in brackets); ``#`` starts a comment.  A bad
file gets one :class:`ConfigFileError` naming the line, the key and the
problem.
"""

from __future__ import annotations

import ast
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

ACTIONS = ("destroy", "restart", "preserve")
BACKENDS = ("dom0", "hypervisor")
KEYS = {"name", "type", "kernel", "cmdline", "extra", "memory", "maxmem", "vcpus", "disk",
        "on_poweroff", "on_reboot", "on_crash", "seclabel", "weight", "cap", "uuid"}
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
VDEVS = ("xvda", "xvdb", "xvdc", "xvdd")   # the IDE drives blkfront stands behind
MIN_MEMORY = 4                    # MiB: the least a domain is built with, or ballooned to
MAX_MEMORY = 2048


class ConfigFileError(Exception):
    """One line: which file, which key, what is wrong."""


@dataclass
class Disk:
    target: str
    format: str
    vdev: str
    access: str
    backend: str = "dom0"           # dom0: blkback in the toolstack; hypervisor: in the hypervisor


@dataclass
class DomainConfig:
    name: str
    kernel: str
    type: str = "pv"
    cmdline: str = ""
    memory: int = 32
    maxmem: int = 0
    vcpus: int = 1
    disks: list[Disk] = field(default_factory=list)
    on_poweroff: str = "destroy"
    on_reboot: str = "restart"
    on_crash: str = "destroy"
    seclabel: str = ""
    weight: int = 256
    cap: int = 0
    source: str = ""

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        d["disks"] = [x.__dict__ for x in self.disks]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "DomainConfig":
        d = dict(d)
        d["disks"] = [Disk(**x) for x in d.get("disks", [])]
        return cls(**d)


def _strip_comment(line: str) -> str:
    """The line without a ``#`` comment (a ``#`` inside quotes is kept)."""
    quote = None
    for i, c in enumerate(line):
        if quote:
            if c == quote:
                quote = None
        elif c in "'\"":
            quote = c
        elif c == "#":
            return line[:i]
    return line


def _literal(text: str, where: str, key: str):
    try:
        with warnings.catch_warnings():
            # Python's tokenizer warns on stderr about text like '1and 2' before it fails:
            # the user gets the one line below instead
            warnings.simplefilter("ignore", SyntaxWarning)
            return ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        raise ConfigFileError(f"{where}: {key}: cannot read the value {text.strip()!r} "
                              "(strings need quotes)") from None


def parse(text: str, source: str = "config") -> DomainConfig:
    values: dict[str, tuple[object, str]] = {}
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = _strip_comment(raw).strip()
        if not line:
            continue
        where = f"{source}:{lineno}"
        if "=" not in line:
            raise ConfigFileError(f"{where}: expected 'key = value', found {line!r}")
        key, _, value = line.partition("=")
        key = key.strip()
        if key not in KEYS:
            raise ConfigFileError(f"{where}: unknown key {key!r} "
                                  f"(known: {', '.join(sorted(KEYS))})")
        if key in values:
            raise ConfigFileError(f"{where}: {key}: given twice")
        values[key] = (_literal(value, where, key), where)
    return _check(values, source)


def _check(values: dict, source: str) -> DomainConfig:
    def get(key: str, kind, default=None):
        if key not in values:
            return default
        v, where = values[key]
        if kind is int and (isinstance(v, bool) or not isinstance(v, int)):
            raise ConfigFileError(f"{where}: {key}: expected a number, found {v!r}")
        if kind is str and not isinstance(v, str):
            raise ConfigFileError(f"{where}: {key}: expected a string in quotes, found {v!r}")
        if kind is list and not (isinstance(v, list) and all(isinstance(x, str) for x in v)):
            raise ConfigFileError(f"{where}: {key}: expected a list of strings, found {v!r}")
        return v

    def where(key: str) -> str:
        return values[key][1] if key in values else source

    name = get("name", str)
    if name is None:
        raise ConfigFileError(f"{source}: name: missing (every domain needs a name)")
    if not NAME.fullmatch(name) or name == "Domain-0":
        raise ConfigFileError(f"{where('name')}: name: {name!r} is not a valid domain name")
    kernel = get("kernel", str)
    if not kernel:
        raise ConfigFileError(f"{source}: kernel: missing (a path or a bundled image name)")
    type_ = get("type", str, "pv")
    if type_ not in ("pv", "bt"):
        raise ConfigFileError(f"{where('type')}: type: {type_!r} is not pv or bt")
    if "cmdline" in values and "extra" in values:
        raise ConfigFileError(f"{where('extra')}: extra: give cmdline or extra, not both")
    cmdline = get("cmdline", str) if "cmdline" in values else get("extra", str, "")
    memory = get("memory", int, 32)
    if not MIN_MEMORY <= memory <= MAX_MEMORY:
        raise ConfigFileError(f"{where('memory')}: memory: {memory} MiB is out of range "
                              f"({MIN_MEMORY} to {MAX_MEMORY})")
    maxmem = get("maxmem", int, memory)
    if maxmem < memory or maxmem > MAX_MEMORY:
        raise ConfigFileError(f"{where('maxmem')}: maxmem: {maxmem} MiB must be between memory "
                              f"({memory}) and {MAX_MEMORY}")
    vcpus = get("vcpus", int, 1)
    if vcpus != 1:
        raise ConfigFileError(f"{where('vcpus')}: vcpus: {vcpus}: ringvisor's machine has one "
                              "CPU and runs one vCPU per domain")
    disks = []
    for spec in get("disk", list, []):
        parts = [p.strip() for p in str(spec).split(",")]
        backend = "dom0"
        if len(parts) == 5 and parts[4].startswith("backend="):
            backend = parts.pop()[len("backend="):]
            # xl's backend= names the back-end's domain: Domain 0 by its id or name too
            backend = "dom0" if backend in ("0", "Domain-0") else backend
        if len(parts) != 4 or parts[1] != "raw" or parts[3] not in ("r", "rw", "ro", "w") \
                or not re.fullmatch(r"xvd[a-z]", parts[2]) or not parts[0]:
            raise ConfigFileError(f"{where('disk')}: disk: {spec!r} is not "
                                  "'PATH,raw,xvdX,rw' (or ro; optionally ,backend=dom0|hypervisor)")
        if backend not in BACKENDS:
            raise ConfigFileError(f"{where('disk')}: disk: backend={backend!r} is not one of "
                                  f"{', '.join(BACKENDS)}")
        if parts[2] not in VDEVS:
            raise ConfigFileError(f"{where('disk')}: disk: {spec!r}: {parts[2]} is not one of "
                                  f"{', '.join(VDEVS)} (the guest's front-end stands behind the "
                                  "two IDE channels' four drives)")
        if any(d.vdev == parts[2] for d in disks):
            raise ConfigFileError(f"{where('disk')}: disk: {spec!r}: {parts[2]} is given twice")
        disks.append(Disk(os.path.abspath(parts[0]), parts[1], parts[2],
                          "ro" if parts[3] in ("r", "ro") else "rw", backend))
    if type_ == "bt" and (any(d.backend != "dom0" for d in disks) or
                          [d.vdev for d in disks] not in ([], ["xvda"])):
        raise ConfigFileError(f"{where('disk')}: disk: a bt domain has one disk, xvda, the ATA "
                              "disk the hypervisor emulates (the hosted structure): no backend=")
    actions = {}
    for key, default in (("on_poweroff", "destroy"), ("on_reboot", "restart"),
                         ("on_crash", "destroy")):
        a = get(key, str, default)
        if a not in ACTIONS:
            raise ConfigFileError(f"{where(key)}: {key}: {a!r} is not one of {', '.join(ACTIONS)}")
        actions[key] = a
    weight = get("weight", int, 256)
    if not 1 <= weight <= 65535:
        raise ConfigFileError(f"{where('weight')}: weight: {weight} is out of range (1 to 65535)")
    cap = get("cap", int, 0)
    if not 0 <= cap <= 100:
        raise ConfigFileError(f"{where('cap')}: cap: {cap} is out of range (0 to 100, percent)")
    seclabel = get("seclabel", str, "")
    if seclabel and seclabel.count(":") != 2:
        raise ConfigFileError(f"{where('seclabel')}: seclabel: {seclabel!r} is not user:role:type")
    return DomainConfig(name=name, kernel=kernel, type=type_, cmdline=cmdline, memory=memory,
                        maxmem=maxmem, vcpus=vcpus, disks=disks, seclabel=seclabel, weight=weight,
                        cap=cap, source=source, **actions)


def load(path: str | Path) -> DomainConfig:
    p = Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise ConfigFileError(f"{p}: no such configuration file") from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as e:
        raise ConfigFileError(f"{p}: cannot read: {e}") from None
    return parse(text, str(p))
