"""Small statistics helpers: nearest-rank percentiles."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence


def percentiles(values: Iterable[float], ps: Sequence[float]) -> list[float]:
    """Nearest-rank percentiles (p in 0..100; 100 is the maximum); NaN for no values."""
    ordered = sorted(values)
    if not ordered:
        return [math.nan for _ in ps]
    return [ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)] for p in ps]
