"""Interleaved timing and a small progress bar.

``measure`` times several zero-argument callables (each runs once and waits
for its result) round-robin: every repetition runs each implementation once,
starting from a different one each time, so a burst of machine noise hits all
of them alike. After warm-up, each sample is a batch of ``inner`` calls long
enough to dwarf the timer's resolution (``inner`` is 1 for anything slower
than ``min_sample_s``); the result per implementation is every sample in
seconds per call. With ``settle``, each sample is preceded by one untimed
call of the same implementation, so no sample pays for what the previous
implementation left behind (PyTorch's OpenMP threads keep spinning for a
while after a call, slowing whatever runs next on a 2-core machine).
"""

from __future__ import annotations

import math
import statistics
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any, TextIO


def measure(
    calls: Mapping[str, Callable[[], Any]],
    *,
    reps: int,
    warmup: int = 1,
    min_sample_s: float = 0.005,
    on_rep: Callable[[], None] | None = None,
    settle: bool = False,
) -> dict[str, list[float]]:
    """Seconds per call of each callable, ``reps`` interleaved samples each."""
    if reps < 1:
        raise ValueError(f"reps must be >= 1, got {reps}")
    names = list(calls)
    inner = {}
    for name in names:
        fastest = math.inf
        for _ in range(max(1, warmup)):
            t0 = time.perf_counter()
            calls[name]()
            fastest = min(fastest, time.perf_counter() - t0)
        inner[name] = max(1, min(1000, math.ceil(min_sample_s / max(fastest, 1e-9))))
    samples: dict[str, list[float]] = {name: [] for name in names}
    for rep in range(reps):
        k = rep % len(names)
        for name in names[k:] + names[:k]:
            fn, n = calls[name], inner[name]
            if settle:
                fn()
            t0 = time.perf_counter()
            for _ in range(n):
                fn()
            samples[name].append((time.perf_counter() - t0) / n)
        if on_rep is not None:
            on_rep()
    return samples


def summarize(samples: list[float]) -> dict:
    """Median, min and max in milliseconds, and the raw samples."""
    return {
        "median_ms": 1e3 * statistics.median(samples),
        "min_ms": 1e3 * min(samples),
        "max_ms": 1e3 * max(samples),
        "samples_ms": [1e3 * s for s in samples],
    }


def geomean(values) -> float | None:
    values = [v for v in values if v is not None and v > 0]
    if not values:
        return None
    return math.exp(sum(math.log(v) for v in values) / len(values))


class Progress:
    """``[#####.....] 5/13 label`` on a stream (stderr), redrawn in place on a terminal."""

    def __init__(self, total: int, *, stream: TextIO | None = None, enabled: bool = True, width: int = 28):
        self.total, self.done, self.width = max(total, 1), 0, width
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.tty = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.t0 = time.perf_counter()
        self.label = ""

    def _draw(self, final: bool = False) -> None:
        if not self.enabled:
            return
        filled = int(self.width * min(self.done, self.total) / self.total)
        bar = "#" * filled + "." * (self.width - filled)
        line = f"[{bar}] {self.done}/{self.total} {time.perf_counter() - self.t0:6.1f}s {self.label}"
        if self.tty:
            self.stream.write("\r\x1b[2K" + line[:160] + ("\n" if final else ""))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def set(self, label: str) -> None:
        self.label = label
        if self.tty:
            self._draw()

    def advance(self, n: int = 1) -> None:
        self.done += n
        if self.tty:
            self._draw()

    def step_done(self, label: str | None = None) -> None:
        """Mark a coarse step finished (printed once per step when not on a terminal)."""
        if label is not None:
            self.label = label
        if not self.tty:
            self._draw()

    def close(self) -> None:
        if self.tty:
            self.done = self.total
            self._draw(final=True)
