"""The toolstack's control socket: where ``ringvisor xl`` reaches it.

A Unix socket in the state directory (``xl.sock``).  The socket speaks one JSON request per line (``{"cmd": ..., "args": {...}}``)
and answers one JSON line (``{"ok": true, "result": ...}`` or ``{"ok": false,
"error": "..."}``); ``console`` then turns the connection into the domain's
console, both ways, until the client goes.  Requests are taken by a thread
and carried out by the toolstack between two steps of the CPU.
"""

from __future__ import annotations

import json
import os
import queue
import socket
import threading
import traceback
from pathlib import Path

from ringvisor.abi import Shutdown
from ringvisor.errors import ImageError, RingvisorError

from .config import ConfigFileError, DomainConfig
from .xl import Toolstack, XlError

SOCKET = "xl.sock"


def state_dir(arg: str | None) -> Path:
    d = arg or os.environ.get("RINGVISOR_STATE_DIR") or \
        os.path.join(os.environ.get("XDG_RUNTIME_DIR") or "/tmp", f"ringvisor-{os.getuid()}")
    return Path(d)


class Server:
    def __init__(self, ts: Toolstack, path: Path) -> None:
        self.ts = ts
        self.path = path
        self.inbox: queue.Queue = queue.Queue()
        if path.exists():
            probe = socket.socket(socket.AF_UNIX)
            try:
                probe.connect(str(path))
            except OSError:
                path.unlink()                       # left by a run that is gone
            else:
                raise XlError(f"{path}: another `ringvisor xen` is using this state directory")
            finally:
                probe.close()
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.bind(str(path))
        self.sock.listen(16)
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()
        ts.requests_hook = self.drain

    def _accept(self) -> None:
        while not self.closed:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn: socket.socket) -> None:
        f = conn.makefile("rb")
        line = f.readline()
        try:
            req = json.loads(line)
        except ValueError:
            self._send(conn, {"ok": False, "error": "a bad request"})
            conn.close()
            return
        done = threading.Event()
        self.inbox.put((req, conn, done))
        if req.get("cmd") == "console":
            done.wait()
            while True:
                data = f.read1(4096) if hasattr(f, "read1") else f.read(1)
                if not data:
                    break
                self.inbox.put(({"cmd": "_type", "args": {"name": req["args"]["name"],
                                                        "data": data.hex()}}, None, None))
            self.inbox.put(({"cmd": "_detach", "args": {"conn": id(conn)}}, conn, None))

    @staticmethod
    def _send(conn, obj) -> bool:
        if conn is None:
            return False
        try:
            conn.sendall(json.dumps(obj).encode() + b"\n")
            return True
        except OSError:
            return False

    def drain(self) -> None:
        """Carry out the queued requests (called by the toolstack, in the machine's loop)."""
        while True:
            try:
                req, conn, done = self.inbox.get_nowait()
            except queue.Empty:
                return
            self._do(req, conn, done)

    def _do(self, req: dict, conn, done) -> None:
        cmd, args = req.get("cmd"), req.get("args") or {}
        ts = self.ts
        keep = False                    # the connection stays: a console, or a wait
        try:
            if cmd == "_type":
                ts.type_console(args["name"], bytes.fromhex(args["data"]))
            elif cmd == "_detach":
                for m in ts.managed.values():
                    m.listeners = [f for f in m.listeners if getattr(f, "conn", None) is not conn]
            elif cmd == "console":
                m = ts.find(args["name"])
                if m.console is None:
                    raise XlError(f"{m.name}: its console is the terminal of `ringvisor xen`")

                def out(data: bytes, conn=conn) -> None:
                    try:
                        conn.sendall(data)
                    except OSError:
                        pass
                out.conn = conn
                log = ts.state_dir / "console" / f"{m.name}.log"
                history = log.read_bytes() if log.exists() else b""
                # how much is history tells a script's client where the domain's answers begin
                self._send(conn, {"ok": True, "result": {"name": m.name, "history": len(history)}})
                out(history)
                m.listeners.append(out)
                keep = True
            elif cmd in ("save", "migrate"):
                self._save(cmd, args, conn)
                keep = True
            elif cmd == "shutdown" and args.get("wait"):
                def waiter(reason, conn=conn) -> None:
                    self._send(conn, {"ok": True, "result": {
                        "reason": None if reason is None else Shutdown(reason).name}})
                    conn.close()
                ts.shutdown(args["name"], Shutdown[args.get("reason", "poweroff")], waiter)
                keep = True
            else:
                self._send(conn, {"ok": True, "result": self.dispatch(cmd, args)})
        except (XlError, ConfigFileError, RingvisorError) as e:
            # (any refusal is the client's to print: raised here, in the machine's loop, it
            # would end the host)
            self._send(conn, {"ok": False, "error": str(e)})
        except (KeyError, TypeError, ValueError) as e:
            self._send(conn, {"ok": False, "error": f"a bad {cmd!r} request ({e})"})
        except Exception as e:
            # A fault of the toolstack itself: raised in the machine's loop it would end the
            # host and every domain with it (xend logged such a request and served on).
            # The traceback goes to the state directory's log, one line to the client.
            log = self.ts.state_dir / "toolstack-errors.log"
            try:
                with open(log, "a") as f:
                    f.write(f"request {cmd!r}:\n{traceback.format_exc()}\n")
            except OSError:
                pass
            self._send(conn, {"ok": False, "error": f"the toolstack failed on {cmd!r} "
                              f"({type(e).__name__}: {e}; traceback in {log}); the host goes on"})
        finally:
            if done is not None:
                done.set()
            if conn is not None and not keep and cmd != "_type":
                conn.close()

    def _save(self, cmd: str, args: dict, conn) -> None:
        """save and migrate answer once the domain is saved, or gone, or back."""
        def answer(err, result=None, conn=conn) -> None:
            self._send(conn, {"ok": False, "error": err} if err else {"ok": True, "result": result})
            conn.close()
        if cmd == "migrate":
            self.ts.migrate(args["name"], (args["host"], int(args["port"])), answer)
            return
        from ringvisor.lifecycle.stream import write_atomic

        def write(stream, err):
            if err:
                answer(err)
                return "resume"
            try:
                write_atomic(args["path"], stream)
            except ImageError as e:
                # (a refusal for the client: in the machine's loop it would end the host)
                answer(f"save {args['name']}: {e}")
                return "resume"
            except OSError as e:
                answer(f"save {args['name']}: cannot write {args['path']}: {e.strerror or e}")
                return "resume"
            answer(None, {"bytes": len(stream)})
            return "resume" if args.get("keep") else "destroy"
        self.ts.save(args["name"], write)

    def dispatch(self, cmd: str, args: dict):
        ts = self.ts
        if cmd == "create":
            cfg = DomainConfig.from_dict(args["config"])
            return {"id": ts.create(cfg, paused=bool(args.get("paused")))}
        if cmd == "list":
            return ts.list()
        if cmd == "pause":
            return ts.pause(args["name"])
        if cmd == "unpause":
            return ts.unpause(args["name"])
        if cmd == "destroy":
            return ts.destroy(args["name"])
        if cmd == "shutdown":
            return ts.shutdown(args["name"], Shutdown[args.get("reason", "poweroff")])
        if cmd == "vcpu-list":
            return ts.vcpu_list(list(args.get("names") or []))
        if cmd == "vcpu-pin":
            return ts.vcpu_pin(args["name"], str(args["vcpu"]), str(args["cpus"]))
        if cmd == "sched-credit":
            return ts.sched_credit(args.get("name"), args.get("weight"), args.get("cap"))
        if cmd == "mem-set":
            return ts.mem_set(args["name"], int(args["mb"]))
        if cmd == "info":
            return ts.info()
        if cmd == "dmesg":
            return ts.dmesg(bool(args.get("clear")))
        if cmd == "loadpolicy":
            return ts.load_policy(args["text"])
        if cmd == "restore":
            from ringvisor.lifecycle.stream import BadImage, read_file
            try:
                data = read_file(args["path"])
            except BadImage as e:
                raise XlError(str(e)) from None
            return {"id": ts.restore(data, args["path"], paused=bool(args.get("paused")))}
        if cmd == "migrate-receive":
            return {"port": ts.migrate_receive((args["host"], int(args["port"])))}
        if cmd == "first-output":
            m = ts.find(args["name"])
            return None if m.first_output_ns is None else (m.first_output_ns - m.created_ns)
        raise XlError(f"unknown command {cmd!r}")

    def close(self) -> None:
        self.closed = True
        try:
            self.sock.close()
        finally:
            try:
                self.path.unlink()
            except OSError:
                pass
