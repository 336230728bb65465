"""The store of compiled blocks on disk (ringvisor/hw/blockstore.py): what one run
compiled, the next run loads; a corrupt, truncated or foreign entry is compiled
again; a directory that cannot be written only stops the storing; ``off`` stores
nothing.  The guest sees nothing of it: the output is the same every time."""

from __future__ import annotations

import os
import subprocess
import sys

from ringvisor.hw import blockstore
from ringvisor.hw.blockstore import BlockStore


def _run(cache: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "RINGVISOR_CACHE_DIR": cache}
    return subprocess.run([sys.executable, "-m", "ringvisor", "run", "kernel",
                           "--max-instructions", "150000"],
                          env=env, capture_output=True, timeout=300)


def test_a_second_run_loads_what_the_first_compiled_and_prints_the_same(tmp_path):
    cache = tmp_path / "cache"
    first = _run(str(cache))
    entries = sorted(p for p in cache.rglob("*") if p.is_file())
    assert first.returncode == 4 and len(entries) > 50        # (4: the instruction limit)
    # every entry damaged in a different way: each is compiled and stored again
    for i, p in enumerate(entries):
        p.write_bytes([b"", b"\x00garbage", b"\xe3" + os.urandom(40), b"N"][i % 4])
    second = _run(str(cache))
    assert second.stdout == first.stdout and second.returncode == first.returncode
    third_entries = sorted(p for p in cache.rglob("*") if p.is_file())
    assert third_entries == entries
    # (a digest, then marshal's code object)
    assert all(p.read_bytes()[blockstore.DIGEST:][:1] == b"\xe3" for p in entries)
    off = _run("off")
    assert off.stdout == first.stdout


def test_a_store_that_cannot_be_written_stops_storing(tmp_path):
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    store = BlockStore(blocked / "blocks")
    code = compile("x = 1", "<t>", "exec")
    store.store("ab" * 20, code)                 # no exception: the store turns itself off
    assert store.dir is None and store.load("ab" * 20) is None


def test_the_process_stores_a_bounded_number_of_blocks(tmp_path, monkeypatch):
    monkeypatch.setattr(blockstore, "STORE_LIMIT", 3)
    store = BlockStore(tmp_path / "blocks")
    code = compile("x = 1", "<t>", "exec")
    for i in range(5):
        store.store(f"{i:040x}", code)
    assert len([p for p in (tmp_path / "blocks").rglob("*") if p.is_file()]) == 3
    assert store.load(f"{0:040x}").co_filename == "<t>"
    assert store.load(f"{4:040x}") is None
