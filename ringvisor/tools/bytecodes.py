"""Python bytecodes executed per guest instruction: a measure of the translator that
does not depend on the machine's load.

``python -m ringvisor.tools.bytecodes [SCALE] [WORKLOAD...]`` runs the benchmark
images (``ringvisor bench``'s iterations times SCALE, default 0.01) with CPython's
opcode tracing switched on in the translated blocks and the dispatch loop only, and
prints the bytecodes each guest instruction cost there.  The count is exact and
repeatable, so two versions of the translator can be compared on a shared machine
where wall-clock ratios drift; it weighs a dictionary probe like a constant load,
so it complements the timings of ``ringvisor bench`` rather than replacing them.
"""

from __future__ import annotations

import math
import sys

from ringvisor.benchmark import FULL_ITERS, WORKLOADS
from ringvisor.guests.build import image_path
from ringvisor.hw.machine import Machine, read_image


def count(name: str, scale: float) -> float:
    """Bytecodes per guest instruction for benchmark ``name``."""
    m = Machine(32, "jit", output=lambda b: None)
    path = image_path(f"bench-{name}")
    m.boot_multiboot(read_image(path), f"iters={max(1, int(FULL_ITERS[name] * scale))}",
                     image_name=str(path))
    n = 0

    def local(frame, event, arg):
        nonlocal n
        if event == "opcode":
            n += 1
        return local

    def on_call(frame, event, arg):
        c = frame.f_code
        if c.co_filename.startswith("<block") or (c.co_name == "run" and
                                                  c.co_filename.endswith("cpu.py")):
            frame.f_trace_opcodes = True
            return local
        return None

    sys.settrace(on_call)
    try:
        m.run()
    finally:
        sys.settrace(None)
    return n / m.cpu.state.icount


def main(argv: list[str]) -> int:
    try:
        scale = float(argv[0]) if argv else 0.01
    except ValueError:
        print(f"bytecodes: the scale must be a number, not {argv[0]!r}", file=sys.stderr)
        return 2
    names = argv[1:] or list(WORKLOADS)
    bad = [x for x in names if x not in WORKLOADS]
    if bad:
        print(f"bytecodes: unknown workload {bad[0]!r} (choose from {', '.join(WORKLOADS)})",
              file=sys.stderr)
        return 2
    res = {x: count(x, scale) for x in names}
    gm = math.exp(sum(math.log(v) for v in res.values()) / len(res))
    print(" ".join(f"{k} {v:.1f}" for k, v in res.items()) +
          f"  geometric mean {gm:.1f} bytecodes per guest instruction")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
