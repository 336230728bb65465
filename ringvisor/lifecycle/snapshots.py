"""The snapshot tree: named states of a VM, each the child of the state it was taken from.

Like libvirt's ``virsh snapshot-*``, with diffs and re-runnable branches: revert
to any node, run a different branch from it, snapshot that, compare two nodes.
A store is a directory::

    tree.json          the nodes (name, parent, description, instruction count,
                       structure, when) and which one is current
    nodes/NAME.rv      a node: the image format of stream.py with a RAMREF
                       section (page digests) instead of the pages
    pages.pack/.idx    the pages, by content (store.py)

Every node is complete in itself (its page references name every page), so
reverting is one read and deleting a node never rewrites its children: its
pages that nobody else refers to are dropped by compaction.  ``tree.json`` and
node files are written atomically.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import codec, mapped as MAPPEDRAM
from .store import PageStore, parse_ramref
from .stream import RAM, RAMREF, STATE, BadImage, Section, pack_image, read_file, \
    read_sections, write_atomic
from .vm import VmInfo, capture, load_states, read_image_file, read_info, restore
from ringvisor.errors import ConfigError

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
TREE_VERSION = 1


@dataclass
class Node:
    name: str
    parent: str | None
    description: str = ""
    icount: int = 0
    mode: str = "native"
    created: float = 0.0
    children: list[str] = field(default_factory=list)


class SnapshotTree:
    def __init__(self, directory) -> None:
        self.dir = Path(directory)
        self.tree_path = self.dir / "tree.json"
        self.nodes: dict[str, Node] = {}
        self.current: str | None = None
        try:
            if self.dir.exists() and not self.dir.is_dir():
                raise BadImage(f"{self.dir}: not a snapshot store (a file, not a directory)")
            if self.tree_path.exists():
                self._load()
        except OSError as e:             # a name too long, a tree.json that is unreadable
            raise BadImage(f"{self.dir}: not a snapshot store ({e.strerror})") from None

    # -- the tree file -----------------------------------------------------------------------
    def _load(self) -> None:
        try:
            d = json.loads(self.tree_path.read_text())
            if d.get("version", 0) > TREE_VERSION:
                raise BadImage(f"{self.tree_path}: made by a newer ringvisor")
            self.nodes = {n["name"]: Node(**n) for n in d["nodes"]}
            self.current = d.get("current")
        except (ValueError, KeyError, TypeError) as e:
            raise BadImage(f"{self.tree_path}: not a snapshot tree ({e})") from None

    def _save(self) -> None:
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:             # a file of that name, no permission
            raise BadImage(f"{self.dir}: cannot make the snapshot store ({e.strerror})") from None
        d = {"version": TREE_VERSION, "current": self.current,
             "nodes": [asdict(n) for n in self.nodes.values()]}
        write_atomic(self.tree_path, json.dumps(d, indent=1).encode())

    def _file(self, name: str) -> Path:
        return self.dir / "nodes" / f"{name}.rv"

    def node(self, name: str) -> Node:
        n = self.nodes.get(name)
        if n is None:
            raise ConfigError(f"{self.dir}: no snapshot named {name!r}")
        return n

    @property
    def pages(self) -> PageStore:
        if not hasattr(self, "_pages"):
            self._pages = PageStore(self.dir)
        return self._pages

    # -- making nodes --------------------------------------------------------------------
    def _add(self, name: str, sections: list[Section], info: VmInfo, description: str,
             parent: str | None) -> Node:
        if not NAME.match(name):
            raise ConfigError(f"bad snapshot name {name!r} (letters, digits, '.', '_', '-'; "
                              "at most 64)")
        if name in self.nodes:
            raise ConfigError(f"{self.dir}: a snapshot named {name!r} exists already")
        if parent is not None:
            self.node(parent)
        (self.dir / "nodes").mkdir(parents=True, exist_ok=True)
        write_atomic(self._file(name), pack_image(sections))
        node = Node(name, parent, description, info.icount, info.mode, time.time())
        self.nodes[name] = node
        if parent is not None:
            self.nodes[parent].children.append(name)
        self.current = name
        self._save()
        return node

    def create(self, name: str, machine, monitor=None, info: VmInfo | None = None,
               description: str = "", parent: str | None = ...) -> Node:
        """Snapshot a running VM as a child of ``parent`` (default: the current node)."""
        info = info or VmInfo()
        info.description = description
        secs = capture(machine, monitor, info, include_ram=False)
        secs.append(Section(RAMREF, "ram", 1, self.pages.ramref(machine.mem.ram)))
        return self._add(name, secs, read_info(secs), description,
                         self.current if parent is ... else parent)

    def import_image(self, path, name: str, description: str = "",
                     parent: str | None = ...) -> Node:
        """A saved image (``run --save``, ``snapshot-export``) as a node."""
        secs, ram, info = read_image_file(path)
        out = secs + [Section(RAMREF, "ram", 1, self.pages.ramref(ram))]
        return self._add(name, out, info, description or info.description,
                         self.current if parent is ... else parent)

    # -- reading nodes -------------------------------------------------------------------
    def sections(self, name: str) -> list[Section]:
        self.node(name)
        return read_sections(read_file(self._file(name)), f"snapshot {name!r}")

    def _ram_refs(self, secs: list[Section], name: str) -> tuple[int, list[tuple[int, bytes]]]:
        for s in secs:
            if s.kind == RAMREF:
                return parse_ramref(s.payload, f"snapshot {name!r}")
        raise BadImage(f"snapshot {name!r}: has no memory references")

    def load_ram_into(self, buf, refs) -> None:
        pages = self.pages
        for i, d in refs:
            buf[i * 4096:(i + 1) * 4096] = pages.get(d)

    def revert(self, name: str, attach_monitor=None, engine: str = "jit", output=None,
               **machine_kw):
        """A machine (and monitor) in node ``name``'s state; ``name`` becomes current."""
        secs = self.sections(name)
        size, refs = self._ram_refs(secs, name)

        def load_ram(m):
            if m.mem.size != size:
                raise BadImage(f"snapshot {name!r}: memory of {size} bytes for a machine of "
                               f"{m.mem.size}")
            self.load_ram_into(m.mem.ram, refs)
        vm = restore(secs, attach_monitor, engine, output, f"snapshot {name!r}", load_ram,
                     **machine_kw)
        self.current = name
        self._save()
        return vm

    def load_into(self, name: str, machine, monitor=None) -> Node:
        """Node ``name``'s state in place of the running ``machine``'s (and its monitor's):
        the monitor prompt's ``loadvm``, as QEMU's.  The VM must be of the node's shape
        (its structure, memory and serial ports); ``name`` becomes current."""
        what = f"snapshot {name!r}"
        secs = self.sections(name)
        info = read_info(secs, what)
        mode = "native" if monitor is None else monitor.name
        if info.mode != mode:
            raise BadImage(f"{what} is a VM under {info.mode}; this one runs under {mode}")
        size, refs = self._ram_refs(secs, name)
        if size != machine.mem.size:
            raise BadImage(f"{what} has {size >> 20} MiB of memory; this VM has "
                           f"{machine.mem.size >> 20} MiB")
        ports = sum(1 for s in secs if s.kind == STATE and s.name.startswith("uart@"))
        if ports != len(machine.uarts):
            raise BadImage(f"{what} has {ports} serial port(s); this VM has {len(machine.uarts)}")
        ram = machine.mem.ram
        ram[:] = bytes(size)                  # (the store keeps the pages that are not zero)
        self.load_ram_into(ram, refs)
        load_states(machine, monitor, secs, what)
        self.current = name
        self._save()
        return self.node(name)

    def export(self, name: str, path, mapped: bool = False) -> int:
        """Node ``name`` as a standalone image (pages included); its size.  ``mapped``: in
        the layout restores map copy-on-write (``mapped.py``: ``ringvisor clone``)."""
        from . import ram as RAMCODEC
        secs = self.sections(name)
        size, refs = self._ram_refs(secs, name)
        buf = bytearray(size)
        self.load_ram_into(buf, refs)
        if mapped:
            return MAPPEDRAM.save(path, [s for s in secs if s.kind != RAMREF], buf)[0]
        out = [s if s.kind != RAMREF else Section(RAM, "ram", 1, RAMCODEC.encode(buf)) for s in secs]
        data = pack_image(out)
        write_atomic(path, data)
        return len(data)

    # -- the tree ------------------------------------------------------------------------
    def set_current(self, name: str) -> None:
        self.node(name)
        self.current = name
        self._save()

    def roots(self) -> list[str]:
        return [n.name for n in self.nodes.values() if n.parent is None]

    def tree_lines(self) -> list[str]:
        """The tree, drawn as ``virsh snapshot-list --tree`` does, with details."""
        out = []

        def walk(name: str, prefix: str, last: bool, top: bool) -> None:
            n = self.nodes[name]
            mark = " *" if name == self.current else ""
            head = "" if top else prefix + ("└─ " if last else "├─ ")
            desc = f"  {n.description}" if n.description else ""
            out.append(f"{head}{name}{mark}  [{n.mode}, instruction {n.icount:,}]{desc}")
            kids = n.children
            for k, c in enumerate(kids):
                walk(c, "" if top else prefix + ("   " if last else "│  "), k == len(kids) - 1, False)
        for r in self.roots():
            walk(r, "", True, True)
        return out

    def delete(self, name: str) -> int:
        """Remove node ``name``; its children become children of its parent (their state is
        whole in themselves: nothing to merge but the tree).  The bytes freed."""
        n = self.node(name)
        parent = n.parent
        for c in n.children:
            self.nodes[c].parent = parent
            if parent is not None:
                self.nodes[parent].children.append(c)
        if parent is not None:
            self.nodes[parent].children.remove(name)
        del self.nodes[name]
        if self.current == name:
            self.current = parent
        self._save()
        self._file(name).unlink(missing_ok=True)
        live = set()
        for other in self.nodes:
            live.update(d for _, d in self._ram_refs(self.sections(other), other)[1])
        return self.pages.compact(live)

    def storage(self) -> int:
        """Bytes the store takes on disk."""
        return sum(p.stat().st_size for p in self.dir.rglob("*") if p.is_file())

    # -- comparing -----------------------------------------------------------------------
    def diff(self, a: str, b: str) -> dict:
        """What differs between nodes ``a`` and ``b``: pages, registers, devices."""
        sa, sb = self.sections(a), self.sections(b)
        _, ra = self._ram_refs(sa, a)
        _, rb = self._ram_refs(sb, b)
        da, db = dict(ra), dict(rb)
        pages = sorted(i for i in set(da) | set(db) if da.get(i) != db.get(i))
        state_a = {s.name: codec.decode(s.payload) for s in sa if s.kind == STATE}
        state_b = {s.name: codec.decode(s.payload) for s in sb if s.kind == STATE}
        comps = {}
        for name in sorted(set(state_a) | set(state_b)):
            d = _diff(state_a.get(name), state_b.get(name))
            if d:
                comps[name] = d
        return {"pages": pages, "components": comps,
                "icount": (read_info(sa).icount, read_info(sb).icount)}


def _diff(x, y, path: str = "") -> list[tuple[str, object, object]]:
    """Leaf-by-leaf differences between two plain values."""
    if isinstance(x, dict) and isinstance(y, dict):
        out = []
        for k in sorted(set(x) | set(y), key=repr):
            out += _diff(x.get(k), y.get(k), f"{path}.{k}" if path else str(k))
        return out
    if isinstance(x, list) and isinstance(y, list) and len(x) == len(y) and len(x) <= 64:
        out = []
        for i, (p, q) in enumerate(zip(x, y)):
            out += _diff(p, q, f"{path}[{i}]")
        return out
    return [] if x == y else [(path, x, y)]
