"""A progress line for long measurements: what runs now, and about how long is left.

``bench`` and ``vmbench`` run for minutes.  On a terminal, standard error shows
one line, rewritten in place: the step, what it runs, and an estimate of the
time left.  Piped or redirected, nothing is written (the output stays clean for
a file or a program).  The estimate learns as it goes: each step has a *kind*
(vmbench: the mode -- a boot under binary translation costs alike wherever it
comes), and a step still to come is expected to take the mean of the finished
steps of its kind, or of all finished steps while its kind has none.
"""

from __future__ import annotations

import sys
import time


def duration(seconds: float) -> str:
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class Progress:
    """``steps``: (label, kind) for every step, in order; ``start(i)``, ``done(i)``."""

    def __init__(self, steps: list[tuple[str, str]], stream=None, enabled: bool | None = None,
                 clock=time.monotonic) -> None:
        self.steps = steps
        self.stream = stream if stream is not None else sys.stderr
        if enabled is None:
            try:
                enabled = self.stream.isatty()
            except (AttributeError, ValueError):
                enabled = False
        self.enabled = enabled
        self.clock = clock
        self.taken: dict[int, float] = {}
        self._began: dict[int, float] = {}
        self._width = 0

    def estimate(self, after: int) -> float | None:
        """Seconds left for the steps from ``after`` on (None until one step finished)."""
        if not self.taken:
            return None
        overall = sum(self.taken.values()) / len(self.taken)
        by_kind: dict[str, list[float]] = {}
        for i, t in self.taken.items():
            by_kind.setdefault(self.steps[i][1], []).append(t)
        left = 0.0
        for label, kind in self.steps[after:]:
            ts = by_kind.get(kind)
            left += sum(ts) / len(ts) if ts else overall
        return left

    def start(self, i: int, label: str | None = None) -> None:
        if label is not None:
            self.steps[i] = (label, self.steps[i][1])
        self._began[i] = self.clock()
        if not self.enabled:
            return
        left = self.estimate(i)
        eta = "estimating the time left" if left is None else f"about {duration(left)} left"
        self._show(f"[{i + 1}/{len(self.steps)}] {self.steps[i][0]} ... {eta}")

    def done(self, i: int) -> None:
        self.taken[i] = self.clock() - self._began.pop(i, self.clock())
        if self.enabled and i == len(self.steps) - 1:
            self.clear()

    def _show(self, text: str) -> None:
        pad = " " * max(0, self._width - len(text))
        self.stream.write("\r" + text + pad)
        self.stream.flush()
        self._width = len(text)

    def clear(self) -> None:
        """Take the line away (before other output, and at the end)."""
        if self.enabled and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()
            self._width = 0
