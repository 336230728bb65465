"""xenstored: the hierarchical store domains and the toolstack share (Xen's ``tools/xenstore``).

A tree of nodes (``/local/domain/3/name``...), each with a value and
permissions; watches (a client asks to be told when a subtree changes);
transactions (a client's changes apply all at once, or not at all if
something they read changed meanwhile: ``EAGAIN``, try again).  Guests speak
to it over their xenstore ring (``io/xs_wire.h``: a 16-byte header, the
payload, requests in ``req``, replies and watch events in ``rsp``, an event
channel each way); the toolstack calls it directly, as Domain 0.

Permissions are Xen's: a node's list starts with its owner (who may do
anything, and whose letter is what every other domain gets) followed by
per-domain entries: ``n`` none, ``r`` read, ``w`` write, ``b`` both.
Domain 0 may do anything.  A new node inherits its parent's permissions,
owned by its creator (Domain 0 creating on behalf of a domain gives it to
that domain with ``set_perms``).  Errors are the errno names of
``xsd_errors`` (``EACCES``, ``ENOENT``...).  Quotas keep a domain from
filling the store: nodes, watches, transactions and request sizes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ringvisor.abi import XENSTORE_PAYLOAD_MAX, XSD_ERRORS, XsType

MAX_NODES_PER_DOMAIN = 1000
MAX_WATCHES = 128
MAX_TRANSACTIONS = 10
MAX_PATH = 3072
PATH_RE = re.compile(r"(/|(/[A-Za-z0-9_@.:-]+)+|@[A-Za-z]+)")


# requests whose first argument is a path, which may be relative to /local/domain/DOMID
RELATIVE_OK = frozenset({XsType.READ, XsType.WRITE, XsType.MKDIR, XsType.RM, XsType.DIRECTORY,
                         XsType.DIRECTORY_PART, XsType.GET_PERMS, XsType.SET_PERMS, XsType.WATCH,
                         XsType.UNWATCH})


class XsError(Exception):
    def __init__(self, name: str) -> None:
        assert name in XSD_ERRORS, name
        super().__init__(name)
        self.name = name


@dataclass
class Node:
    value: bytes = b""
    perms: list[tuple[int, str]] = field(default_factory=lambda: [(0, "n")])
    gen: int = 0                  # changed at every write (transactions compare it)


def parse_perms(items: list[str]) -> list[tuple[int, str]]:
    out = []
    for it in items:
        if not it or it[0] not in "nrwb" or not it[1:].isdigit():
            raise XsError("EINVAL")
        out.append((int(it[1:]), it[0]))
    if not out:
        raise XsError("EINVAL")
    return out


def format_perms(perms: list[tuple[int, str]]) -> list[str]:
    return [f"{p}{d}" for d, p in perms]


class Store:
    def __init__(self) -> None:
        self.nodes: dict[str, Node] = {"/": Node(), "/local": Node(), "/local/domain": Node(),
                                       "/vm": Node(), "/tool": Node()}
        self.gen = 0
        self.watches: list[tuple[int, str, str, object]] = []    # (domid, path, token, conn)
        self.stats = {"requests": 0, "errors": 0, "watch_events": 0, "transactions": 0,
                      "conflicts": 0}

    # -- permissions --------------------------------------------------------------------
    @staticmethod
    def _access(node: Node, domid: int) -> str:
        if domid == 0:
            return "b"
        owner, default = node.perms[0]
        if owner == domid:
            return "b"
        for d, p in node.perms[1:]:
            if d == domid:
                return p
        return default

    def _check(self, nodes: dict, path: str, domid: int, want: str) -> Node:
        node = nodes.get(path)
        if node is None:
            raise XsError("ENOENT")
        a = self._access(node, domid)
        if (want == "r" and a not in "rb") or (want == "w" and a not in "wb"):
            raise XsError("EACCES")
        return node

    @staticmethod
    def check_path(path: str) -> str:
        if len(path) > MAX_PATH or not PATH_RE.fullmatch(path):
            raise XsError("EINVAL")
        return path.rstrip("/") or "/"

    @staticmethod
    def parent(path: str) -> str:
        return path.rsplit("/", 1)[0] or "/"

    @staticmethod
    def children(nodes: dict, path: str) -> list[str]:
        prefix = path.rstrip("/") + "/"
        return sorted({p[len(prefix):].split("/", 1)[0] for p in nodes if p.startswith(prefix)
                       and p != prefix})

    def owned(self, nodes: dict, domid: int) -> int:
        return sum(1 for n in nodes.values() if n.perms[0][0] == domid)

    # -- operations on a view (the store, or a transaction's copy) ---------------------------
    def read(self, nodes: dict, path: str, domid: int) -> bytes:
        return self._check(nodes, self.check_path(path), domid, "r").value

    def directory(self, nodes: dict, path: str, domid: int) -> list[str]:
        path = self.check_path(path)
        self._check(nodes, path, domid, "r")
        return self.children(nodes, path)

    def write(self, nodes: dict, path: str, value: bytes, domid: int, changed: set) -> None:
        path = self.check_path(path)
        if path.startswith("@"):
            raise XsError("EINVAL")
        node = nodes.get(path)
        if node is not None:
            self._check(nodes, path, domid, "w")
            node.value = value
        else:
            self._create(nodes, path, domid, changed)
            nodes[path].value = value
        self._touch(nodes, path, changed)

    def _create(self, nodes: dict, path: str, domid: int, changed: set) -> None:
        missing = []
        p = path
        while p not in nodes:
            missing.append(p)
            p = self.parent(p)
        self._check(nodes, p, domid, "w")
        if domid and self.owned(nodes, domid) + len(missing) > MAX_NODES_PER_DOMAIN:
            raise XsError("ENOSPC")
        parent_perms = nodes[p].perms
        for q in reversed(missing):
            perms = list(parent_perms)
            if domid:
                perms[0] = (domid, perms[0][1])
            nodes[q] = Node(perms=perms)
            self._touch(nodes, q, changed)

    def mkdir(self, nodes: dict, path: str, domid: int, changed: set) -> None:
        path = self.check_path(path)
        if path not in nodes:
            self._create(nodes, path, domid, changed)

    def rm(self, nodes: dict, path: str, domid: int, changed: set) -> None:
        path = self.check_path(path)
        if path == "/":
            raise XsError("EINVAL")
        if path not in nodes:
            if self.parent(path) not in nodes:
                raise XsError("ENOENT")
            return                                  # Xen: removing a missing leaf is fine
        self._check(nodes, self.parent(path), domid, "w")
        self._check(nodes, path, domid, "w")
        for p in [q for q in nodes if q == path or q.startswith(path + "/")]:
            del nodes[p]
            changed.add(p)
        self._touch(nodes, self.parent(path), changed)

    def get_perms(self, nodes: dict, path: str, domid: int) -> list[str]:
        node = self._check(nodes, self.check_path(path), domid, "r")
        return format_perms(node.perms)

    def set_perms(self, nodes: dict, path: str, perms: list[str], domid: int, changed: set) -> None:
        path = self.check_path(path)
        node = nodes.get(path)
        if node is None:
            raise XsError("ENOENT")
        if domid and node.perms[0][0] != domid:
            raise XsError("EACCES")                 # only the owner (or Domain 0)
        node.perms = parse_perms(perms)
        self._touch(nodes, path, changed)

    def _touch(self, nodes: dict, path: str, changed: set) -> None:
        self.gen += 1
        nodes[path].gen = self.gen
        changed.add(path)

    # -- watches ---------------------------------------------------------------------------
    def watch(self, conn, domid: int, path: str, token: str) -> None:
        if not path.startswith("@"):
            path = self.check_path(path)
        mine = [w for w in self.watches if w[3] is conn]
        if any(w[1] == path and w[2] == token for w in mine):
            raise XsError("EEXIST")
        if domid and len(mine) >= MAX_WATCHES:
            raise XsError("E2BIG")
        self.watches.append((domid, path, token, conn))
        conn.watch_event(path, token)               # Xen fires a new watch once at once

    def unwatch(self, conn, path: str, token: str) -> None:
        for i, w in enumerate(self.watches):
            if w[3] is conn and w[1] == path and w[2] == token:
                del self.watches[i]
                return
        raise XsError("ENOENT")

    def fire(self, changed: set) -> None:
        """Tell every watcher of a changed path (or an ancestor of one) that may read it."""
        for domid, wpath, token, conn in list(self.watches):
            for p in sorted(changed):
                special = p.startswith("@")
                hit = p == wpath if special or wpath.startswith("@") else \
                    (p == wpath or p.startswith(wpath.rstrip("/") + "/"))
                if not hit:
                    continue
                node = self.nodes.get(p)
                if node is not None and not special and self._access(node, domid) not in "rb":
                    continue
                self.stats["watch_events"] += 1
                conn.watch_event(p, token)

    def drop_connection(self, conn) -> None:
        self.watches = [w for w in self.watches if w[3] is not conn]


class Connection:
    """One client of the store: a domain over its ring, or the toolstack directly."""

    def __init__(self, store: Store, domid: int, send_event) -> None:
        self.store, self.domid = store, domid
        self.send_event = send_event               # (path, token) -> deliver a WATCH_EVENT
        self.transactions: dict[int, tuple[dict, set, set, int]] = {}
        self._tx = 0

    def watch_event(self, path: str, token: str) -> None:
        self.send_event(path, token)

    def _view(self, tx: int) -> tuple[dict, set]:
        if tx == 0:
            return self.store.nodes, set()
        t = self.transactions.get(tx)
        if t is None:
            raise XsError("ENOENT")
        return t[0], t[1]

    def request(self, kind: int, tx: int, payload: bytes) -> bytes:
        """Do one request; its reply payload (XsError: the error name)."""
        st = self.store
        st.stats["requests"] += 1
        if len(payload) > XENSTORE_PAYLOAD_MAX:
            raise XsError("E2BIG")
        args = payload.split(b"\0")
        if args and args[-1] == b"" and kind not in (XsType.WRITE,):
            args = args[:-1]
        s = [a.decode("utf-8", "replace") for a in args]
        if kind in RELATIVE_OK and s and s[0] and s[0][0] not in "/@":
            s[0] = f"/local/domain/{self.domid}/{s[0]}"   # xenstored: relative to the domain's home

        def need(n: int) -> None:
            if len(s) < n:
                raise XsError("EINVAL")

        if kind == XsType.TRANSACTION_START:
            if tx:
                raise XsError("EBUSY")
            if len(self.transactions) >= MAX_TRANSACTIONS and self.domid:
                raise XsError("ENOSPC")
            self._tx += 1
            copy = {p: Node(n.value, list(n.perms), n.gen) for p, n in st.nodes.items()}
            self.transactions[self._tx] = (copy, set(), set(), st.gen)
            st.stats["transactions"] += 1
            return str(self._tx).encode() + b"\0"
        if kind == XsType.TRANSACTION_END:
            need(1)
            t = self.transactions.pop(tx, None)
            if t is None:
                raise XsError("ENOENT")
            if s[0] == "T":
                return self._commit(t)
            return b"OK\0"
        nodes, changed = self._view(tx)
        reads = self.transactions[tx][2] if tx else None
        if kind == XsType.READ:
            need(1)
            if reads is not None:
                reads.add(st.check_path(s[0]))
            return st.read(nodes, s[0], self.domid)
        if kind in (XsType.DIRECTORY, XsType.DIRECTORY_PART):
            need(1)
            if reads is not None:
                reads.add(st.check_path(s[0]))
            return b"".join(c.encode() + b"\0" for c in st.directory(nodes, s[0], self.domid))
        if kind == XsType.GET_PERMS:
            need(1)
            return b"".join(p.encode() + b"\0" for p in st.get_perms(nodes, s[0], self.domid))
        if kind == XsType.GET_DOMAIN_PATH:
            need(1)
            if not s[0].isdigit():
                raise XsError("EINVAL")
            return f"/local/domain/{int(s[0])}".encode() + b"\0"
        if kind == XsType.WATCH:
            need(2)
            st.watch(self, self.domid, s[0], s[1])
            return b"OK\0"
        if kind == XsType.UNWATCH:
            need(2)
            st.unwatch(self, s[0], s[1])
            return b"OK\0"
        if kind == XsType.RESET_WATCHES:
            st.drop_connection(self)
            return b"OK\0"
        if kind in (XsType.WRITE, XsType.MKDIR, XsType.RM, XsType.SET_PERMS):
            local = changed if tx else set()
            if kind == XsType.WRITE:
                _, _, value = payload.partition(b"\0")
                need(1)
                st.write(nodes, s[0], value, self.domid, local)
            elif kind == XsType.MKDIR:
                need(1)
                st.mkdir(nodes, s[0], self.domid, local)
            elif kind == XsType.RM:
                need(1)
                st.rm(nodes, s[0], self.domid, local)
            else:
                need(2)
                st.set_perms(nodes, s[0], s[1:], self.domid, local)
            if not tx:
                st.fire(local)
            return b"OK\0"
        if kind in (XsType.INTRODUCE, XsType.RELEASE, XsType.IS_DOMAIN_INTRODUCED, XsType.RESUME,
                    XsType.SET_TARGET, XsType.CONTROL):
            raise XsError("EACCES")                 # the toolstack's, not a guest's
        raise XsError("EINVAL")

    def _commit(self, t: tuple[dict, set, set, int]) -> bytes:
        st = self.store
        copy, changed, reads, start_gen = t
        # a conflict: a node this transaction read or wrote changed since it began
        for p in reads | changed:
            now = st.nodes.get(p)
            if (now is not None and now.gen > start_gen) or (now is None and p in reads and
                                                             p in copy):
                st.stats["conflicts"] += 1
                raise XsError("EAGAIN")
        for p in changed:
            if p in copy:
                st.nodes[p] = copy[p]
            else:
                st.nodes.pop(p, None)
        if changed:
            st.gen += 1
            for p in changed:
                if p in st.nodes:
                    st.nodes[p].gen = st.gen
        st.fire(changed)
        return b"OK\0"

    def close(self) -> None:
        self.store.drop_connection(self)
        self.transactions.clear()

    # -- the toolstack's conveniences ------------------------------------------------------
    def call(self, kind: XsType, *args: str | bytes, tx: int = 0) -> bytes:
        payload = b"\0".join(a if isinstance(a, bytes) else a.encode() for a in args)
        if kind != XsType.WRITE:
            payload += b"\0"
        return self.request(kind, tx, payload)

    def read(self, path: str) -> str | None:
        try:
            return self.call(XsType.READ, path).decode()
        except XsError:
            return None

    def write(self, path: str, value: str) -> None:
        self.call(XsType.WRITE, path, value.encode())

    def rm(self, path: str) -> None:
        self.call(XsType.RM, path)

    def set_perms(self, path: str, *perms: str) -> None:
        self.call(XsType.SET_PERMS, path, *perms)
