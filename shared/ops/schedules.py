"""Timer schedules read as the Functions host reads them (six-field NCRONTAB or hh:mm:ss).

Why: the health page judges a poller late against its schedule, so it needs the longest gap
between two runs; croniter parses the expression, so its ranges, steps and names mean here
what they mean to the timer.
"""

from __future__ import annotations

import re
from datetime import timedelta

from croniter import CroniterError, croniter

__all__ = ["schedule_interval"]

_TIMESPAN = re.compile(r"^(\d{1,2}):(\d{2}):(\d{2})$")
_DAY = 86_400


def schedule_interval(schedule: str) -> timedelta | None:
    """The longest gap between two runs of a timer schedule (NCRONTAB or hh:mm:ss).

    None when the schedule restricts days, months or weekdays (it runs at most daily and
    its lag is not judged) or cannot be read.
    """
    text = schedule.strip()
    span = _TIMESPAN.match(text)
    if span:
        h, m, s = (int(g) for g in span.groups())
        gap = timedelta(hours=h, minutes=m, seconds=s)
        return gap if gap > timedelta(0) else None
    if len(text.split()) != 6:
        return None
    try:
        # croniter's order with seconds first: minute, hour, day, month, weekday, second.
        (minutes, hours, days, months, weekdays, seconds), _ = croniter.expand(text, second_at_beginning=True)
    except (CroniterError, ValueError):
        return None
    if any(field != ["*"] for field in (days, months, weekdays)):
        return None
    times = sorted(h * 3600 + m * 60 + s for h in _values(hours, 24) for m in _values(minutes, 60)
                   for s in _values(seconds, 60))
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)] + [times[0] + _DAY - times[-1]]
    return timedelta(seconds=max(gaps))


def _values(field: list[int | str], size: int) -> list[int]:
    return list(range(size)) if field == ["*"] else [int(v) for v in field]
