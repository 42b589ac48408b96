"""The targets, the printed table and results.json (flat, plain dotted keys)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Target:
    key: str
    text: str
    ok: Callable[[float], bool]


def targets(results: dict[str, Any], big: str, small: str) -> list[Target]:
    found = []
    for d in ("d2m", "m2d"):
        found.append(Target(f"api_cost.{d}.bound_ratio", "<= 3x the lower bound", lambda v: v <= 3))
        found.append(Target(f"api_cost.{d}.naive_ratio", ">= 250x fewer than naive", lambda v: v >= 250))
    for poll in (30, 5):
        found.append(Target(f"latency.poll{poll}.p95_s", f"<= {poll + 5} s", _within(poll + 5)))
    found.append(Target(f"scale.initial_{big}_vs_rate_limit", "<= 1.5x forced", lambda v: v <= 1.5))
    found.append(Target(f"scale.rss_ratio_{big}_{small}", "<= 1.2", lambda v: v <= 1.2))
    found.append(Target("realtime.p95_ms_20_concurrent", "<= 250 ms", lambda v: v <= 250))
    found.append(Target("latency.events.p95_s", "<= 2 s", lambda v: v <= 2))
    found.append(Target("api_cost.events_burst_ratio", "<= 1.5x the polling path", lambda v: v <= 1.5))
    found.append(Target("latency.events_dropped20.lost", "= 0", lambda v: v == 0))
    found.append(Target("scale.instances4.vs_rate_limit", "<= 1.3x forced", lambda v: v <= 1.3))
    found.append(Target("scale.instances4.self_inflicted_limit_errors", "= 0", lambda v: v == 0))
    found.append(Target("budget.storage_share", "< 5 % of storage requests", lambda v: v < 0.05))
    found.append(Target("budget.competing.vs_rate_limit", "<= 1.3x forced by the 70 % left", lambda v: v <= 1.3))
    return [t for t in found if t.key in results]


def _within(limit: float) -> Callable[[float], bool]:
    return lambda v: v <= limit


def verdicts(results: dict[str, Any], found: list[Target]) -> dict[str, str]:
    out = {}
    for t in found:
        value = results.get(t.key)
        good = isinstance(value, int | float) and not math.isnan(value) and t.ok(value)
        out[t.key] = f"{'PASS' if good else 'FAIL'} ({t.text})"
    return out


def table(results: dict[str, Any], judged: dict[str, str]) -> str:
    width = max(len(k) for k in results)
    lines = []
    section = ""
    for key in results:
        head = key.split(".", 1)[0]
        if head != section:
            section = head
            lines.append(f"\n{section}")
        lines.append(f"  {key:<{width}}  {_fmt(results[key]):>14}  {judged.get(key, '')}".rstrip())
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:g}"
    return str(value)


def write(path: Path, results: dict[str, Any], judged: dict[str, str]) -> None:
    clean = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in results.items()}
    clean.update({f"target.{k}": v for k, v in judged.items()})
    path.write_text(json.dumps(clean, indent=1) + "\n")
