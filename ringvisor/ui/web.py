"""``--web PORT``: a live view of a running VM, in the browser.

A small HTTP server (the standard library's, in a thread of its own, on the
loopback address only) serves one page and the JSON it polls twice a second,
``/live.json`` (schema ``ringvisor.live/1``, docs/json.md): instructions and MIPS,
the machine's counters, and the monitor's -- traps by cause, emulated
instructions or callouts, hypercalls, events, exits, translations,
translation-cache bytes.  Under ``ringvisor xen`` it lists the hypervisor's
domains as ``xl list`` does (``domains``) with the hypervisor's, scheduler's and
grant tables' counters; a run with a snapshot store (``--store``, where the
monitor prompt's ``savevm`` puts them) lists the snapshot tree (``snapshots``).

The counters are read from the server's thread while the VM runs: they are
plain dictionaries and integers copied under the interpreter lock, and a copy
that races with an insertion is simply taken again.
"""

from __future__ import annotations

import errno
import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from ringvisor import __version__
from ringvisor.errors import ConfigError
from ringvisor.lifecycle.snapshots import SnapshotTree
from ringvisor.lifecycle.stream import BadImage

SCHEMA = "ringvisor.live/1"

PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>ringvisor: live view</title>
<style>
 body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
 h1 { font-size: 1.3em; margin: 0 0 .2em; } h2 { font-size: 1.05em; margin: 1.2em 0 .3em; }
 .big { display: flex; gap: 2.5em; margin: .8em 0; }
 .big div span { display: block; font-size: 1.8em; font-variant-numeric: tabular-nums; }
 table { border-collapse: collapse; min-width: 22em; }
 td, th { padding: .1em .8em .1em 0; font-variant-numeric: tabular-nums; text-align: left; }
 td.n { text-align: right; } #status { color: #555; } .none { color: #888; }
 #groups { display: flex; flex-wrap: wrap; gap: 0 3em; }
</style></head>
<body>
<h1>ringvisor <span id="mode">-</span></h1>
<div id="status">connecting...</div>
<div class="big">
 <div>instructions<span id="instructions">-</span></div>
 <div>MIPS<span id="mips">-</span></div>
 <div>traps<span id="traps">-</span></div>
 <div>callouts<span id="callouts">-</span></div>
 <div>hypercalls<span id="hypercalls">-</span></div>
 <div>events<span id="events">-</span></div>
 <div>exits<span id="exits">-</span></div>
 <div>translations<span id="translations">-</span></div>
 <div>TC bytes<span id="tc_bytes">-</span></div>
</div>
<div id="groups"></div>
<h2>domains</h2><div id="domains" class="none">-</div>
<h2>snapshots</h2><div id="snapshots" class="none">-</div>
<script>
"use strict";
const fmt = v => v === null || v === undefined ? "-" :
  (typeof v === "number" ? (Number.isInteger(v) ? v.toLocaleString("en") : v.toFixed(3)) : String(v));
function table(title, values) {
  const sec = document.createElement("section");
  const h = document.createElement("h2"); h.textContent = title; sec.appendChild(h);
  const t = document.createElement("table");
  for (const [k, v] of Object.entries(values)) {
    const tr = t.insertRow(); tr.insertCell().textContent = k;
    const c = tr.insertCell(); c.className = "n"; c.textContent = fmt(v);
  }
  sec.appendChild(t); return sec;
}
function list(id, items, none) {
  const el = document.getElementById(id);
  if (!items || items.length === 0) { el.textContent = none; el.className = "none"; return; }
  const t = document.createElement("table");
  const keys = Object.keys(items[0]);
  const head = t.insertRow();
  for (const k of keys) { const c = document.createElement("th"); c.textContent = k; head.appendChild(c); }
  for (const d of items) {
    const tr = t.insertRow();
    for (const k of keys) {
      const c = tr.insertCell(); c.textContent = fmt(d[k]);
      if (typeof d[k] === "number") c.className = "n";
    }
  }
  el.className = ""; el.replaceChildren(t);
}
async function poll() {
  try {
    const r = await fetch("live.json", {cache: "no-store"});
    const d = await r.json();
    document.getElementById("mode").textContent = d.vm.mode + " - " + d.vm.image;
    document.getElementById("status").textContent = d.vm.status + " (updated " +
      new Date().toLocaleTimeString() + ")";
    for (const [k, v] of Object.entries(d.highlights))
      document.getElementById(k).textContent = fmt(v);
    const groups = document.getElementById("groups");
    groups.replaceChildren(...Object.entries(d.groups)
      .filter(([, v]) => Object.keys(v).length).map(([k, v]) => table(k, v)));
    list("domains", d.domains, d.vm.mode === "xen" ? "none" : "none: this VM runs on its own");
    list("snapshots", d.snapshots, "none");
  } catch (e) {
    document.getElementById("status").textContent = "the VM is gone (" + e + ")";
  }
  setTimeout(poll, 500);
}
poll();
</script>
</body></html>
"""


def _copy(d) -> dict:
    for _ in range(10):
        try:
            return dict(d)
        except RuntimeError:          # resized under us by the VM's thread: take it again
            continue
    return {}


def _total(d) -> int | None:
    return None if d is None else sum(v for v in d.values() if isinstance(v, int))


class LiveView:
    def __init__(self, port: int, session) -> None:
        self.session = session
        self.port = port
        self._last = (session.machine.cpu.state.icount, time.perf_counter())
        self._mips = 0.0
        self._lock = threading.Lock()
        view = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?")[0]
                if path in ("/", "/index.html"):
                    body, kind = PAGE.encode(), "text/html; charset=utf-8"
                elif path == "/live.json":
                    body, kind = json.dumps(view.sample()).encode(), "application/json"
                else:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass                  # the terminal is the guest's console

        try:
            self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        except OSError as e:
            why = "in use" if e.errno == errno.EADDRINUSE else (e.strerror or str(e))
            raise ConfigError(f"--web {port}: cannot listen: {why}") from None
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="ringvisor-web",
                                       daemon=True)

    def start(self) -> None:
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _rate(self, icount: int) -> float:
        with self._lock:
            n0, t0 = self._last
            now = time.perf_counter()
            if now - t0 >= 0.25:
                self._mips = (icount - n0) / (now - t0) / 1e6
                self._last = (icount, now)
            return self._mips

    def sample(self) -> dict:
        """The VM's counters now (schema ringvisor.live/1)."""
        s = self.session
        m, mon = s.machine, s.monitor
        icount = m.cpu.state.icount
        cache = m.cpu.cache
        machine = {"instructions": icount, "blocks_translated": cache.translations,
                   "code_cache_bytes": cache.bytes, "invalidations": cache.invalidations}
        machine.update(_copy(m.cpu.stats))
        groups = {"machine": machine}
        highlights = {"instructions": icount, "mips": round(self._rate(icount), 3),
                      "traps": None, "callouts": None, "hypercalls": None, "events": None,
                      "exits": None, "translations": None, "tc_bytes": None}
        if mon is not None:
            # each monitor has the tables of its technique: traps and emulated instructions
            # (trap-and-emulate), callouts (binary translation), hypercalls, exits (hvm)
            tables = {name: _copy(getattr(mon, name)) for name in
                      ("traps", "emulated", "hypercalls", "exits") if hasattr(mon, name)}
            scalars = _copy(mon.stats)
            scalars.update(_copy(mon.shadow.stats))
            tc = getattr(mon, "tc", None)
            if tc is not None:
                tables["callouts"] = tables.pop("emulated")
                scalars.update(_copy(tc.stats))
            groups.update({k: v for k, v in tables.items()})
            groups["monitor"] = scalars
            events = scalars.get("events_delivered", 0 if hasattr(mon, "events") else None)
            highlights.update(traps=_total(tables.get("traps")), callouts=_total(tables.get("callouts")),
                              hypercalls=_total(tables.get("hypercalls")), events=events,
                              exits=_total(tables.get("exits")),
                              translations=scalars.get("translations"),
                              tc_bytes=scalars.get("tc_bytes"))
        hv = getattr(s, "hypervisor", None)
        if hv is not None:
            groups["hypervisor"] = _copy(hv.stats)
            groups["scheduler"] = _copy(hv.sched.stats)
            for domid, counts in sorted(hv.domain_counters().items()):
                groups[f"domain {domid}"] = counts
        stop = m.stop
        status = s.status() if stop is None else f"ended: {stop.reason}"
        mode = s.structure or ("native" if mon is None else mon.name)
        return {"schema": SCHEMA, "ringvisor": __version__,
                "vm": {"mode": mode, "image": os.path.basename(s.image_path), "status": status},
                "highlights": highlights, "groups": groups,
                "domains": list(s.domains()) if s.domains is not None else [],
                "snapshots": snapshot_rows(s.store)}


def snapshot_rows(store) -> list[dict]:
    """The snapshot tree of ``store`` as rows, parents before children (empty if none)."""
    path = os.path.join(store, "tree.json")
    if not os.path.exists(path):
        return []
    try:
        tree = SnapshotTree(store)
    except (BadImage, ConfigError, OSError):
        return []
    rows = []

    def walk(name: str, depth: int) -> None:
        n = tree.nodes[name]
        rows.append({"name": "  " * depth + n.name, "parent": n.parent or "",
                     "instructions": n.icount, "mode": n.mode,
                     "current": "yes" if name == tree.current else "",
                     "description": n.description})
        for c in n.children:
            if c in tree.nodes:
                walk(c, depth + 1)

    for root in tree.roots():
        walk(root, 0)
    return rows
