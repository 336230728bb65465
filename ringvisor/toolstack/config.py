"""Domain configuration files, in the style of Xen's ``xl.cfg``.

::

    name = "web"
    type = "pv"                     # pv: a para-virtualized kernel (pvcc); bt: an unmodified one
    kernel = "kernel-pv"            # a path, or the name of a bundled image
    cmdline = "run=syscall iters=100"   # (or: extra = ...)
    memory = 32                     # MiB
    maxmem = 48                     # MiB it may balloon up to (default: memory)
    vcpus = 1                       # virtual CPUs, 1 to 8 (vCPU 0 starts; the guest brings
                                    # up the others: VCPUOP_initialise/up); bt: one
    disk = ['/var/img/web.img,raw,xvda,rw', '/var/img/data.img,raw,xvdb,ro']
                                    # xvda..xvdd; rw or ro; ',backend=hypervisor': the
                                    # monolithic structure (blkback inside the hypervisor)
    on_poweroff = "destroy"         # destroy | restart | preserve
    on_reboot = "restart"
    on_crash = "destroy"
    seclabel = "system_u:system_r:domU_t"
    uuid = "5d1c6a62-8b1e-4c2a-9f61-0b7e2d3c4a55"   # its handle (default: a new random one)
    cpu_weight = 256                # credit scheduler (xl's sched-credit in the file;
    cap = 0                         #  ringvisor's older name ``weight`` is taken too)
    cpus = "0-1"                    # the pCPUs its vCPUs may run on (hard affinity): a
                                    # CPU list ("all", "0-3,5", "^1" takes one out), or a
                                    # list of them, one per vCPU (the others: all)

Settings are ``key = value`` with xl's literals (strings in single or double
quotes, integers, lists in brackets that may run over several lines), ended
by a newline or ``;``; ``#`` starts a comment.  A disk is any form of
xl-disk-configuration(5): positional ``target,format,vdev,access`` (empty
fields take the defaults, raw and rw), ``key=value`` parameters
(``target=`` last: it takes the rest), or the deprecated
``phy:/path,xvda,w``.  xl's ``root`` goes in front of the command line as
``root=...``, as xl does.  Xen's keys for what ringvisor has not (network
interfaces, frame buffers, PCI devices, a ramdisk, a boot loader) are refused
by name unless empty.  A bad file gets one :class:`ConfigFileError` naming
the line, the key and the problem.
"""

from __future__ import annotations

import ast
import os
import re
import uuid as _uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from ringvisor.abi import RV_MAX_VCPUS

ACTIONS = ("destroy", "restart", "preserve")
BACKENDS = ("dom0", "hypervisor")
KEYS = {"name", "type", "kernel", "cmdline", "extra", "root", "memory", "maxmem", "vcpus", "disk",
        "on_poweroff", "on_reboot", "on_crash", "seclabel", "weight", "cpu_weight", "cap", "uuid",
        "builder", "cpus"}
# xl.cfg keys for what ringvisor does not have: taken only when empty
ABSENT = {"vif": "network interfaces", "vfb": "a virtual frame buffer", "vkb": "a virtual keyboard",
          "pci": "PCI pass-through", "usbctrl": "USB", "usbdev": "USB", "channel": "channels",
          "p9": "9pfs shares", "vtpm": "a virtual TPM", "ramdisk": "an initial ramdisk",
          "bootloader": "a boot loader (give the kernel itself)", "irqs": "IRQ pass-through",
          "iomem": "I/O memory pass-through", "ioports": "I/O port pass-through"}
DISK_PREFIXES = ("tap2:", "tap:", "aio:", "file:", "phy:", "raw:", "qcow2:", "qcow:", "vhd:")
KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
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
    cpus: list[str] = field(default_factory=list)   # hard affinity: [all vCPUs'] or per vCPU
    uuid: str = ""                  # canonical form; "": a random one at creation
    source: str = ""

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        d["disks"] = [x.__dict__ for x in self.disks]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "DomainConfig":
        """The configuration ``to_dict`` gave (a saved domain's), checked as a file's is:
        a damaged or forged one is a ValueError naming the key, never a domain built from
        values no configuration file could give."""
        if not isinstance(d, dict) or not all(isinstance(x, dict) for x in d.get("disks", [])):
            raise ValueError("not a configuration")
        d = dict(d)
        d["disks"] = [Disk(**x) for x in d.get("disks", [])]
        cfg = cls(**d)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        """ValueError naming the first value no configuration file could have given."""
        kinds = {"name": str, "kernel": str, "type": str, "cmdline": str, "memory": int,
                 "maxmem": int, "vcpus": int, "on_poweroff": str, "on_reboot": str,
                 "on_crash": str, "seclabel": str, "weight": int, "cap": int, "uuid": str,
                 "source": str}
        for key, kind in kinds.items():
            if type(getattr(self, key)) is not kind:
                raise ValueError(f"{key}: expected {kind.__name__}, found "
                                 f"{type(getattr(self, key)).__name__}")
        checks = [("name", NAME.fullmatch(self.name) and self.name != "Domain-0"),
                  ("kernel", self.kernel), ("type", self.type in ("pv", "bt")),
                  ("memory", MIN_MEMORY <= self.memory <= MAX_MEMORY),
                  ("maxmem", self.maxmem == 0 or self.memory <= self.maxmem <= MAX_MEMORY),
                  ("vcpus", 1 <= self.vcpus <= RV_MAX_VCPUS and
                   (self.vcpus == 1 or self.type == "pv")),
                  ("on_poweroff", self.on_poweroff in ACTIONS),
                  ("on_reboot", self.on_reboot in ACTIONS), ("on_crash", self.on_crash in ACTIONS),
                  ("seclabel", not self.seclabel or self.seclabel.count(":") == 2),
                  ("weight", 1 <= self.weight <= 65535), ("cap", 0 <= self.cap <= 100),
                  ("uuid", not self.uuid or _canonical_uuid(self.uuid) == self.uuid),
                  ("cpus", isinstance(self.cpus, list) and len(self.cpus) <= self.vcpus and
                   all(isinstance(c, str) for c in self.cpus)),
                  ("disk", len(self.disks) <= len(VDEVS) and
                   len({x.vdev for x in self.disks}) == len(self.disks) and
                   all(isinstance(x.target, str) and x.target and x.format == "raw" and
                       x.vdev in VDEVS and x.access in ("ro", "rw") and x.backend in BACKENDS
                       for x in self.disks))]
        for key, ok in checks:
            if not ok:
                raise ValueError(f"{key}: not a value a configuration file can give")
        for c in self.cpus:
            parse_cpulist(c)


def _canonical_uuid(text: str) -> str | None:
    """xl's UUID, 32 hexadecimal digits grouped 8-4-4-4-12, in lower case; "" for the nil
    UUID, which asks for a random one as libxl takes it; None if ``text`` is not one."""
    if not re.fullmatch(r"[0-9A-Fa-f]{8}(-[0-9A-Fa-f]{4}){3}-[0-9A-Fa-f]{12}", text):
        return None
    u = _uuid.UUID(text)
    return "" if u.int == 0 else str(u)


MAX_CPU = 255                     # (a CPU list names CPUs 0..255; the host says which exist)


def parse_cpulist(text: str) -> frozenset[int]:
    """xl's CPU list: ``all``, or CPUs and ranges (``0-3,5``), ``^N``/``^N-M`` taking some
    out again; ValueError (saying why) if it is not one or names no CPU."""
    cpus: set[int] = set()
    for part in text.replace(" ", "").split(","):
        neg = part.startswith("^")
        part = part[1:] if neg else part
        if part == "all" and not neg:
            cpus |= set(range(MAX_CPU + 1))
            continue
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if m is None:
            raise ValueError(f"{part or text!r} is not a CPU, a range or 'all'")
        lo, hi = int(m[1]), int(m[2] or m[1])
        if lo > hi or hi > MAX_CPU:
            raise ValueError(f"{part!r} is not a range of CPUs 0 to {MAX_CPU}")
        (cpus.difference_update if neg else cpus.update)(range(lo, hi + 1))
    if not cpus:
        raise ValueError(f"{text!r} names no CPU")
    return frozenset(cpus)


def _statements(text: str, source: str):
    """``(line, key, value text)`` for each setting: a setting ends at a newline or ``;``
    outside quotes and brackets (a list may run over several lines); ``#`` outside
    quotes starts a comment to the end of the line."""
    line, start, buf = 1, None, []          # start: the line of the setting's first character
    quote, depth, comment = None, 0, False

    def put(ch: str) -> None:
        nonlocal start
        if start is None and not ch.isspace():
            start = line
        buf.append(ch)

    def flush():
        nonlocal start
        stmt = "".join(buf).strip()
        where = f"{source}:{start}"
        buf.clear()
        start = None
        if not stmt:
            return None
        if "=" not in stmt:
            raise ConfigFileError(f"{where}: expected 'key = value', found {stmt!r}")
        key, _, value = stmt.partition("=")
        if not KEY.fullmatch(key.strip()):        # (xl's keys are C identifiers)
            raise ConfigFileError(f"{where}: expected 'key = value', found {stmt!r}")
        return where, key.strip(), value

    for c in text + "\n":
        if comment:
            if c != "\n":
                continue
            comment = False
        if quote:
            put(c)
            if c == quote or c == "\n":      # (a quote left open: the value will not read)
                quote = None
        elif c in "'\"":
            quote = c
            put(c)
        elif c == "#":
            comment = True
            continue
        elif c in "[(":
            depth += 1
            put(c)
        elif c in "])":
            depth = max(0, depth - 1)
            put(c)
        elif c in "\n;" and depth == 0:
            got = flush()
            if got:
                yield got
        else:
            put(" " if c == "\n" else c)
        if c == "\n":
            line += 1
    if depth:
        got = flush()
        raise ConfigFileError(f"{got[0] if got else source}: {got[1] if got else 'value'}: "
                              "a list whose ']' never comes")


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
    for where, key, value in _statements(text, source):
        if key not in KEYS and key not in ABSENT:
            raise ConfigFileError(f"{where}: unknown key {key!r} "
                                  f"(known: {', '.join(sorted(KEYS))})")
        if key in values:
            raise ConfigFileError(f"{where}: {key}: given twice")
        v = _literal(value, where, key)
        if key in ABSENT:
            if v not in ([], "", 0):
                raise ConfigFileError(f"{where}: {key}: ringvisor's domains have no "
                                      f"{ABSENT[key]}")
            continue
        values[key] = (v, where)
    return _check(values, source)


def _disk(spec: str, where: str) -> Disk:
    """One DISKSPEC of xl-disk-configuration(5), as far as ringvisor's disks go."""
    fields: dict[str, str] = {}

    def bad(why: str):
        raise ConfigFileError(f"{where}: disk: {spec!r}: {why}")

    def put(name: str, value: str) -> None:
        if name in fields:
            bad(f"{name} is given twice")
        fields[name] = value

    rest, positional = spec, []
    while rest:
        part, comma, rest = rest.partition(",")
        part = part.strip()
        if part.startswith("target="):
            put("target", (part + comma + rest)[len("target="):].strip())  # the rest, commas too
            break
        if "=" in part:
            k, _, v = part.partition("=")
            k, v = k.strip(), v.strip()
            if k not in ("format", "vdev", "access", "backend", "devtype", "backendtype"):
                bad(f"{k}= is not a disk parameter ringvisor knows (format, vdev, access, "
                    "target, backend, devtype)")
            put(k, v)
        elif part == "cdrom":
            put("devtype", "cdrom")
        else:
            positional.append(part)
    legacy = bool(positional) and positional[0].startswith(DISK_PREFIXES)
    if legacy:
        # the deprecated form: [prefix:]target,vdev[:devtype],access; the prefix says the format
        target = positional[0]
        fmt = "raw"
        while target.startswith(DISK_PREFIXES):
            prefix, _, target = target.partition(":")
            if prefix in ("qcow2", "qcow", "vhd"):
                fmt = prefix
        positional[0] = target
        if len(positional) > 1 and ":" in positional[1]:
            positional[1], _, devtype = positional[1].partition(":")
            put("devtype", devtype)
        names = ("target", "vdev", "access")
        fields.setdefault("format", fmt)
    else:
        names = ("target", "format", "vdev", "access")
    if len(positional) > len(names):
        bad(f"more positional parameters than {', '.join(names)}")
    for name, value in zip(names, positional):
        if value:                                 # (empty: the default)
            put(name, value)
    if fields.get("devtype", "disk") != "disk":
        bad(f"devtype {fields['devtype']}: ringvisor's disks are disks (no CD-ROM)")
    if fields.get("backendtype", "phy") not in ("phy", "qdisk"):
        bad(f"backendtype {fields['backendtype']}: ringvisor's back-end reads a raw image file")
    if fields.get("format", "raw") != "raw":
        bad(f"format {fields['format']}: ringvisor reads raw images only")
    target, vdev = fields.get("target", ""), fields.get("vdev", "")
    if not target:
        bad("no target (the image's path)")
    if not vdev:
        bad("no vdev (xvda..xvdd)")
    if vdev not in VDEVS:
        bad(f"{vdev} is not one of {', '.join(VDEVS)} (the guest's front-end stands behind the "
            "two IDE channels' four drives)")
    access = fields.get("access", "rw")
    if access not in ("r", "ro", "rw", "w"):
        bad(f"access {access}: rw (w) or ro (r)")
    backend = fields.get("backend", "dom0")
    # xl's backend= names the back-end's domain: Domain 0 by its id or name too
    backend = "dom0" if backend in ("0", "Domain-0") else backend
    if backend not in BACKENDS:
        bad(f"backend={backend}: not one of {', '.join(BACKENDS)}")
    return Disk(os.path.abspath(target), "raw", vdev, "ro" if access in ("r", "ro") else "rw",
                backend)


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
        if kind == (str, list) and not (isinstance(v, str) or isinstance(v, list) and
                                        all(isinstance(x, str) for x in v)):
            raise ConfigFileError(f"{where}: {key}: expected a string or a list of strings, "
                                  f"found {v!r}")
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
    root = get("root", str, "")
    if root:                            # xl: "root=ROOT EXTRA"
        cmdline = f"root={root} {cmdline}".rstrip()
    builder = get("builder", str, "generic")
    if builder != "generic":            # (xl's old name for type = "pv")
        raise ConfigFileError(f"{where('builder')}: builder: {builder!r}: ringvisor builds "
                              "para-virtual ('generic') and bt domains (type = ...)")
    memory = get("memory", int, 32)
    if not MIN_MEMORY <= memory <= MAX_MEMORY:
        raise ConfigFileError(f"{where('memory')}: memory: {memory} MiB is out of range "
                              f"({MIN_MEMORY} to {MAX_MEMORY})")
    maxmem = get("maxmem", int, memory)
    if maxmem < memory or maxmem > MAX_MEMORY:
        raise ConfigFileError(f"{where('maxmem')}: maxmem: {maxmem} MiB must be between memory "
                              f"({memory}) and {MAX_MEMORY}")
    vcpus = get("vcpus", int, 1)
    if not 1 <= vcpus <= RV_MAX_VCPUS:
        raise ConfigFileError(f"{where('vcpus')}: vcpus: {vcpus} is out of range (1 to "
                              f"{RV_MAX_VCPUS})")
    if vcpus > 1 and type_ == "bt":
        raise ConfigFileError(f"{where('vcpus')}: vcpus: a bt domain has one vCPU (its kernel "
                              "runs as on a uniprocessor PC)")
    disks = []
    for spec in get("disk", list, []):
        disk = _disk(str(spec), where("disk"))
        if any(d.vdev == disk.vdev for d in disks):
            raise ConfigFileError(f"{where('disk')}: disk: {spec!r}: {disk.vdev} is given twice")
        disks.append(disk)
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
    if "weight" in values and "cpu_weight" in values:
        raise ConfigFileError(f"{where('cpu_weight')}: cpu_weight: give cpu_weight or weight, "
                              "not both")
    wkey = "weight" if "weight" in values else "cpu_weight"
    weight = get(wkey, int, 256)
    if not 1 <= weight <= 65535:
        raise ConfigFileError(f"{where(wkey)}: {wkey}: {weight} is out of range (1 to 65535)")
    cap = get("cap", int, 0)
    if not 0 <= cap <= 100:
        raise ConfigFileError(f"{where('cap')}: cap: {cap} is out of range (0 to 100, percent)")
    cpus = get("cpus", (str, list), None)
    cpus = [] if cpus is None else [cpus] if isinstance(cpus, str) else cpus
    if len(cpus) > vcpus:
        raise ConfigFileError(f"{where('cpus')}: cpus: {len(cpus)} CPU lists for {vcpus} vCPUs")
    for c in cpus:
        try:
            parse_cpulist(c)
        except ValueError as e:
            raise ConfigFileError(f"{where('cpus')}: cpus: {e}") from None
    seclabel = get("seclabel", str, "")
    if seclabel and seclabel.count(":") != 2:
        raise ConfigFileError(f"{where('seclabel')}: seclabel: {seclabel!r} is not user:role:type")
    uuid = get("uuid", str, "")
    if uuid:
        canonical = _canonical_uuid(uuid)
        if canonical is None:
            raise ConfigFileError(f"{where('uuid')}: uuid: {uuid!r} is not a UUID "
                                  "(xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx, hexadecimal)")
        uuid = canonical
    return DomainConfig(name=name, kernel=kernel, type=type_, cmdline=cmdline, memory=memory,
                        maxmem=maxmem, vcpus=vcpus, disks=disks, seclabel=seclabel, weight=weight,
                        cap=cap, cpus=cpus, uuid=uuid, source=source, **actions)


def load(path: str | Path) -> DomainConfig:
    p = Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise ConfigFileError(f"{p}: no such configuration file") from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as e:
        raise ConfigFileError(f"{p}: cannot read: {e}") from None
    return parse(text, str(p))
