"""Side-by-side timing helpers shared by the benchmark scripts."""

from __future__ import annotations

import statistics
import time
from typing import Callable, Sequence


def interleaved_medians(functions: Sequence[Callable[[], object]], repeats: int, warmup: int = 1) -> list[float]:
    """Median seconds of each function, timed in turns (a, b, a, b, ...) so both see the same machine load."""
    for _ in range(warmup):
        for fn in functions:
            fn()
    times: list[list[float]] = [[] for _ in functions]
    for _ in range(repeats):
        for i, fn in enumerate(functions):
            start = time.perf_counter()
            fn()
            times[i].append(time.perf_counter() - start)
    return [statistics.median(t) for t in times]


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)
