"""Two (or more) versions of ringvisor measured alternately, in CPU time.

``python -m ringvisor.tools.alternate TREE[,TREE...] [WORKLOAD] [ITERS] [ROUNDS] [MODE...]``
runs, ROUNDS times, each source tree in turn (a ``git worktree add`` of the older
commit, say), each in its own interpreter with ``PYTHONPATH`` at that tree, on the
``ringvisor vmbench`` workload (``syscall``, 2000 iterations, 3 rounds, native,
trapemu, bt and paravirt by default), and prints the CPU time of the guest's timed
loop per operation (vmbench's bracket of its RDTSC reads, with the process's CPU time
for the wall clock: on a shared machine wall time drifts by 30%, CPU time less).
Keep the best of each; the rounds show the spread.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

_CHILD = r'''
import json, sys, time
import ringvisor.vmbench as vb
class _Clock:
    perf_counter = staticmethod(time.process_time)
vb.time = _Clock
name, iters, modes = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(",")
out = {}
for mode in modes:
    r = vb._run(vb._kernel(mode), mode, name, iters, "jit")
    out[mode] = [r["wall_us"], r["cycles"]] if r["ok"] else None
print(json.dumps(out))
'''


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    trees = argv[0].split(",")
    name = argv[1] if len(argv) > 1 else "syscall"
    try:
        iters = int(argv[2]) if len(argv) > 2 else 2000
        rounds = int(argv[3]) if len(argv) > 3 else 3
    except ValueError:
        print("alternate: ITERS and ROUNDS are numbers", file=sys.stderr)
        return 2
    modes = argv[4:] or ["native", "trapemu", "bt", "paravirt"]
    missing = [t for t in trees if not os.path.isdir(os.path.join(t, "ringvisor"))]
    if missing:
        print(f"alternate: not a ringvisor source tree: {missing[0]}", file=sys.stderr)
        return 2
    for _ in range(rounds):
        for tree in trees:
            env = dict(os.environ, PYTHONPATH=os.path.abspath(tree))
            p = subprocess.run([sys.executable, "-c", _CHILD, name, str(iters), ",".join(modes)],
                               cwd=tree, env=env, capture_output=True, text=True)
            if p.returncode:
                print(f"alternate: {tree}: {p.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
                return 1
            res = json.loads(p.stdout.strip().splitlines()[-1])
            base = res.get("native")
            cells = []
            for mode in modes:
                r = res.get(mode)
                if r is None:
                    cells.append(f"{mode} failed")
                    continue
                ratio = f" ({r[0] / base[0]:.2f}x)" if base and mode != "native" else ""
                cells.append(f"{mode} {r[0]:.1f} us{ratio}")
            print(f"{os.path.basename(os.path.abspath(tree))}: " + ", ".join(cells), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
