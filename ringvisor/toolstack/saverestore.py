"""Saving a DomU to a stream and building it again from one (libxc's ``xc_domain_save`` /
``xc_domain_restore``; ``xl save``, ``xl restore``, ``xl migrate``).

Done from Domain 0 with hypercalls only, as Xen's toolstack does: the domain
is paused and off the CPU; its memory is read through foreign mappings of its
pseudo-physical frames (its P2M: which frames it has); everything else of it
comes from ``gethvmcontext`` (``hypervisor/domsave.py``: the vCPU, the
start-of-day pages, event channels, grant table, timers; for a bt domain
``hypervisor/btsave.py``: its vCPU in guest terms, its devices).  A restore builds
the domain as the builder does -- createdomain, max_mem, the same frames by
``populate_physmap`` -- writes the memory through foreign mappings, gives it
the context with ``sethvmcontext``, then the toolstack connects its console
and xenstore back-ends again and writes its xenstore entries.

The stream is the image format of ``ringvisor.lifecycle.stream`` (Xen's
migration stream v2 is the model: a versioned header, typed records, here
each with its own CRC-32, an END record), with the header flag ``DOMAIN``::

    META  "domain"   canonical JSON: version, the domain's configuration (xl.cfg
                     keys), its UUID, its frames ([first, count] runs of
                     pseudo-physical numbers), max_pages, its console and
                     xenstore ports, and the xenstore entries under its
                     /local/domain/N that are not the toolstack's own
    STATE "context"  the hypervisor's context records, as gethvmcontext gave them
    PAGES "memory"   the frames that are not zero, by index into the frame list
                     (``lifecycle/ram.py``, zlib-compressed)
    END

A truncated, corrupt, foreign or future-version stream is :class:`BadImage`
(one line, exit status 2); files are written atomically.
"""

from __future__ import annotations

import uuid as _uuid

from ringvisor.abi import CreateFlag
from ringvisor.lifecycle.codec import StateError, decode, encode
from ringvisor.lifecycle.ram import decode_pages_into, encode_pages, nonzero_pages
from ringvisor.lifecycle.stream import (META, PAGES, STATE, BadImage, Section, pack_end,
                                        pack_header, pack_section, read_sections)

from .builder import EXTRA_PAGES
from .config import DomainConfig
from .xc import PAGE, Xc, XcError

DOMAIN = 2                      # header flag: a DomU's stream (not a whole machine's)
DOMAIN_VERSION = 3         # 3: bt domains, registered vcpu_infos (domsave CONTEXT_VERSION 3);
                           # 2: the context carries every vCPU
MAP_CHUNK = 256                 # frames mapped at once
# xenstore entries the toolstack writes itself for every domain (xl.py): not saved
OWN_ENTRIES = ("name", "domid", "vm", "memory", "console", "store")


def runs(numbers: list[int]) -> list[list[int]]:
    """Sorted numbers as [first, count] runs."""
    out: list[list[int]] = []
    for n in numbers:
        if out and out[-1][0] + out[-1][1] == n:
            out[-1][1] += 1
        else:
            out.append([n, 1])
    return out


def _read_frames(xc: Xc, domid: int, gpfns: list[int]) -> bytearray:
    buf = bytearray(len(gpfns) * PAGE)
    for k in range(0, len(gpfns), MAP_CHUNK):
        chunk = gpfns[k:k + MAP_CHUNK]
        va = xc.map_foreign(domid, chunk)
        try:
            buf[k * PAGE:(k + len(chunk)) * PAGE] = xc.iface.read(va, len(chunk) * PAGE)
        finally:
            xc.unmap([va + i * PAGE for i in range(len(chunk))])
    return buf


def _write_frames(xc: Xc, domid: int, gpfns: list[int], buf, which: list[int]) -> None:
    """Write the frames at indexes ``which`` (sorted) of ``gpfns`` from ``buf``."""
    for k in range(0, len(which), MAP_CHUNK):
        idx = which[k:k + MAP_CHUNK]
        va = xc.map_foreign(domid, [gpfns[i] for i in idx])
        try:
            for j, i in enumerate(idx):
                xc.iface.write(va + j * PAGE, bytes(buf[i * PAGE:(i + 1) * PAGE]))
        finally:
            xc.unmap([va + j * PAGE for j in range(len(idx))])


def save_stream(xc: Xc, domid: int, meta: dict, gpfns: list[int]) -> bytes:
    """The stream of paused, descheduled domain ``domid`` whose frames are ``gpfns``."""
    context = xc.get_context(domid)
    memory = _read_frames(xc, domid, gpfns)
    used = nonzero_pages(memory)
    meta = {**meta, "version": DOMAIN_VERSION, "frames": runs(gpfns)}
    parts = [pack_header(DOMAIN),
             pack_section(META, "domain", DOMAIN_VERSION, encode(meta, "domain")),
             pack_section(STATE, "context", 1, context),
             pack_section(PAGES, "memory", 1, encode_pages(memory, used)),
             pack_end(3)]
    return b"".join(parts)


def parse_stream(data: bytes, what: str) -> tuple[dict, bytes, list[int], bytearray, list[int]]:
    """(meta, context, frames, their contents, indexes of the frames that are not zero)."""
    secs = read_sections(data, what)
    by_kind: dict[tuple[int, str], Section] = {(s.kind, s.name): s for s in secs}
    meta_s = by_kind.get((META, "domain"))
    if meta_s is None:
        if any(s.kind == META and s.name == "vm" for s in secs):
            raise BadImage(f"{what}: a saved VM, not a domain (run it with ringvisor restore)")
        raise BadImage(f"{what}: not a saved domain (no domain description)")
    if meta_s.version > DOMAIN_VERSION:
        raise BadImage(f"{what}: made by a newer ringvisor (domain stream version "
                       f"{meta_s.version})")
    ctx, mem = by_kind.get((STATE, "context")), by_kind.get((PAGES, "memory"))
    if ctx is None or mem is None:
        raise BadImage(f"{what}: corrupt (no {'context' if ctx is None else 'memory'} section)")
    try:
        meta = decode(meta_s.payload)
        cfg = DomainConfig.from_dict(meta["config"])
        # the frame list is checked against what the configuration allows before anything
        # is allocated for it: a forged run of 2**40 frames is a corrupt stream, not 4 TiB
        limit = min(meta["max_pages"], (max(cfg.maxmem, cfg.memory) << 8) + EXTRA_PAGES)
        runs = meta["frames"]
        if (not isinstance(runs, list) or not all(
                isinstance(r, list) and len(r) == 2 and all(type(x) is int and x >= 0 for x in r)
                for r in runs) or sum(n for _, n in runs) > limit):
            raise ValueError("its frame list")
        gpfns = [g for first, n in runs for g in range(first, first + n)]
        _uuid.UUID(meta["uuid"])
        for key in ("max_pages", "console_port", "store_port"):
            if type(meta[key]) is not int or not 0 <= meta[key] < 1 << 32:
                raise ValueError(f"{key}: {meta[key]!r}")
        store = meta["xenstore"]
        if not isinstance(store, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                  for k, v in store.items()):
            raise ValueError("its xenstore entries are not text")
    except (StateError, KeyError, TypeError, ValueError, AttributeError) as e:
        raise BadImage(f"{what}: corrupt domain description ({e})") from None
    if not gpfns or len(set(gpfns)) != len(gpfns):
        raise BadImage(f"{what}: corrupt domain description (its frame list)")
    memory = bytearray(len(gpfns) * PAGE)
    used = decode_pages_into(mem.payload, memory, what)
    return meta, ctx.payload, gpfns, memory, sorted(used)


def restore_stream(xc: Xc, meta: dict, context: bytes, gpfns: list[int], memory,
                   used: list[int], ssidref: int) -> int:
    """Build the domain the stream describes (paused); its new id."""
    bt = meta["config"].get("type", "pv") == "bt"        # (under binary translation)
    domid = xc.create(ssidref, _uuid.UUID(meta["uuid"]).bytes, CreateFlag.hvm_guest if bt else 0)
    try:
        xc.max_vcpus(domid, int(meta["config"].get("vcpus", 1)))
        xc.max_mem(domid, int(meta["max_pages"]) * 4)
        if xc.populate_physmap(domid, gpfns) != len(gpfns):
            raise XcError(12, f"not enough free memory for {len(gpfns) * PAGE >> 20} MiB")
        _write_frames(xc, domid, gpfns, memory, used)
        xc.set_context(domid, context)
    except BaseException:
        xc.destroy_quietly(domid)
        raise
    return domid

