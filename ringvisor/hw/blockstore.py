"""Compiled blocks kept on disk between runs, as CPython keeps ``__pycache__``.

Compiling a translated block's Python source is the larger part of translating it,
and a kernel boots through the same blocks every time.  A block's code object is
stored under a digest of its source and its address (the source says everything
the code does: a changed translator makes other sources, so nothing goes stale),
in a directory named for the interpreter's bytecode version (``marshal``'s format
is that version's) and for the format of the entries.  The store is a cache: a missing, unreadable or corrupt entry
is compiled again, and a full disk or a read-only directory only stops storing.
Each entry begins with a digest of the marshal data after it, checked before that
data is read: ``marshal`` is not made for damaged input (random bytes after a code
object's type byte can claim a size of gigabytes: a MemoryError, or minutes of
allocating), so only what this store wrote reaches it.

Where: ``$RINGVISOR_CACHE_DIR``, else ``$XDG_CACHE_HOME/ringvisor``, else
``~/.cache/ringvisor``; ``RINGVISOR_CACHE_DIR=off`` turns it off.  Each process
stores at most ``STORE_LIMIT`` new blocks (a long benchmark does not fill the
disk), and the directory is emptied when it holds more than ``DIR_LIMIT``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import marshal
import os
import shutil
import sys
import tempfile
from pathlib import Path
from types import CodeType

STORE_LIMIT = 4096
DIR_LIMIT = 200_000
DIGEST = 16            # bytes of the digest an entry begins with


def _digest(body: bytes) -> bytes:
    return hashlib.blake2b(body, digest_size=DIGEST).digest()


def _directory() -> Path | None:
    where = os.environ.get("RINGVISOR_CACHE_DIR")
    if where is not None and where.strip().lower() in ("", "off", "0", "no"):
        return None
    if where is None:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        where = os.path.join(base, "ringvisor")
    tag = sys.implementation.cache_tag or "python"
    # ("v2": entries with a digest; a version that reads entries without one, whose
    # marshal would take ours for damaged data, keeps to its own directory)
    return Path(where) / f"blocks-v2-{tag}-{importlib.util.MAGIC_NUMBER.hex()}"


class BlockStore:
    def __init__(self, directory: Path | None) -> None:
        self.dir = directory
        self.stored = 0
        self.checked = False

    def _path(self, key: str) -> Path:
        return self.dir / key[:2] / key[2:]

    def load(self, key: str):
        """The code object stored under ``key``, or None."""
        if self.dir is None:
            return None
        try:
            data = self._path(key).read_bytes()
        except OSError:
            return None
        body = data[DIGEST:]
        if data[:DIGEST] != _digest(body):
            return None
        try:
            code = marshal.loads(body)
        except (ValueError, EOFError, TypeError):
            return None
        return code if isinstance(code, CodeType) else None

    def store(self, key: str, code) -> None:
        if self.dir is None or self.stored >= STORE_LIMIT:
            return
        self.stored += 1
        try:
            if not self.checked:
                self.checked = True
                self._trim()
            path = self._path(key)
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
            try:
                with os.fdopen(fd, "wb") as f:
                    body = marshal.dumps(code)
                    f.write(_digest(body) + body)
                os.replace(tmp, path)
            except BaseException:
                os.unlink(tmp)
                raise
        except OSError:
            self.dir = None            # read-only, full, or gone: stop trying

    def _trim(self) -> None:
        if not self.dir.is_dir():
            return
        n = sum(len(os.listdir(d)) for d in self.dir.iterdir() if d.is_dir())
        if n > DIR_LIMIT:
            shutil.rmtree(self.dir, ignore_errors=True)


STORE = BlockStore(_directory())
