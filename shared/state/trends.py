"""Hourly samples for the health page's trends: API calls, queue backlog and poll lag per hour.

Table `<prefix>trends`, partition "hour", one row per hour and process:

    RK "<yyyymmddhh>-<instance>"   marketo_calls, dataverse_calls   requests this process sent in the hour
                                   backlog   the largest work-queue depth it saw (-1: never looked)
                                   lag       {feed: the longest gap between two polls it ran}, as JSON

Why a row per process: many instances run at once and each only knows its own calls, so each
writes only its own row (no ETag race, no lost update) and a reader merges the rows of an
hour: calls summed, backlog and lag by their maximum. The last 24 hours are one RowKey range
of one partition: one query.

Why a `Recorder` that writes at most every few minutes: the clients already count their
requests in memory, so an hour's row costs its first write plus one every `every_s` (and a
last one when the hour turns), about seven requests an hour per process, however busy it is.
Calls made after a process's last write are lost if it stops; the page says "at least".
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from azure.data.tables import UpdateMode

from shared.state.storage import Storage

PARTITION = "hour"
WRITE_EVERY_S = 600.0


def hour_of(at: datetime) -> datetime:
    """The start of `at`'s hour, in UTC."""
    return at.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def _hour_key(hour: datetime) -> str:
    return hour.astimezone(UTC).strftime("%Y%m%d%H")


@dataclass(frozen=True)
class HourSample:
    """One hour as one process (or, merged, every process) saw it."""

    hour: datetime  # start of the hour, UTC
    marketo_calls: int = 0
    dataverse_calls: int = 0
    backlog: int | None = None  # None: nobody looked at the queues this hour
    lag: Mapping[str, float] = field(default_factory=dict)  # feed -> longest gap between polls, seconds

    def merged(self, other: HourSample) -> HourSample:
        """Both processes' view of the same hour: calls add up, backlog and lag take the worst."""
        backlogs = [b for b in (self.backlog, other.backlog) if b is not None]
        lag = dict(self.lag)
        for feed, seconds in other.lag.items():
            lag[feed] = max(seconds, lag.get(feed, 0.0))
        return HourSample(self.hour, self.marketo_calls + other.marketo_calls,
                          self.dataverse_calls + other.dataverse_calls, max(backlogs) if backlogs else None, lag)


def merge(samples: Iterable[HourSample]) -> dict[datetime, HourSample]:
    """`samples` by hour, each hour's rows merged (`HourSample.merged`)."""
    out: dict[datetime, HourSample] = {}
    for s in samples:
        out[s.hour] = out[s.hour].merged(s) if s.hour in out else s
    return out


class TrendStore:
    def __init__(self, storage: Storage) -> None:
        self._table = storage.table("trends")

    def write(self, sample: HourSample, instance: str) -> None:
        """Replace `instance`'s row for the sample's hour (only that process writes it)."""
        self._table.upsert_entity({
            "PartitionKey": PARTITION, "RowKey": f"{_hour_key(sample.hour)}-{instance}", "hour": sample.hour,
            "marketo_calls": sample.marketo_calls, "dataverse_calls": sample.dataverse_calls,
            "backlog": -1 if sample.backlog is None else sample.backlog,
            "lag": json.dumps(dict(sample.lag), sort_keys=True),
        }, mode=UpdateMode.REPLACE)

    def hours(self, start: datetime, end: datetime) -> dict[datetime, HourSample]:
        """The merged samples of the hours from `start`'s up to and including `end`'s: one query."""
        low, high = _hour_key(hour_of(start)), _hour_key(hour_of(end) + timedelta(hours=1))
        rows = self._table.query_entities(
            f"PartitionKey eq '{PARTITION}' and RowKey ge '{low}' and RowKey lt '{high}'")
        return merge(_from_entity(e) for e in rows)


def _from_entity(e: Mapping[str, object]) -> HourSample:
    backlog = int(str(e.get("backlog", -1)))
    lag = json.loads(str(e.get("lag") or "{}"))
    hour = e["hour"]
    if not isinstance(hour, datetime):
        raise ValueError(f"trend row {e.get('RowKey')} has no hour")
    return HourSample(hour_of(hour), int(str(e.get("marketo_calls", 0))), int(str(e.get("dataverse_calls", 0))),
                      None if backlog < 0 else backlog, {str(k): float(v) for k, v in lag.items()})


@dataclass(frozen=True)
class Counters:
    """What a process has sent so far (the clients' own running totals)."""

    marketo_calls: int
    dataverse_calls: int


class Recorder:
    """This process's sample of the current hour, written to its row now and then.

    Thread-safe. `note` takes the clients' running totals; the hour's calls are the growth
    since the hour began (or since the process started, in its first hour).
    """

    def __init__(self, store: TrendStore, *, instance: str | None = None, every_s: float = WRITE_EVERY_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._store = store
        self.instance = instance or uuid.uuid4().hex[:12]
        self._every_s = every_s
        self._clock = clock
        self._lock = threading.Lock()
        self._hour: datetime | None = None
        self._base = self._written = Counters(0, 0)
        self._backlog: int | None = None
        self._lag: dict[str, float] = {}
        self._written_at: float | None = None
        self._dirty = False
        self._last_poll: dict[str, datetime] = {}

    def last_poll(self, feed: str) -> datetime | None:
        """When this process last polled `feed` (None: not since it started)."""
        with self._lock:
            return self._last_poll.get(feed)

    def polled(self, feed: str, at: datetime) -> None:
        """This process polled `feed` at `at`."""
        with self._lock:
            self._last_poll[feed] = at

    def _due(self, hour: datetime) -> bool:
        if self._hour != hour or self._written_at is None:
            return True
        return self._dirty and self._clock() - self._written_at >= self._every_s

    def note(self, now: datetime, counters: Counters, *, backlog: Callable[[], int] | None = None,
             lag: Mapping[str, float] | None = None) -> bool:
        """Take the process's totals at `now` and poll gaps (seconds by feed); writes the row when
        due, with the work-queue depth `backlog()` read just before (only then: it costs requests).

        Returns whether it wrote. At the turn of the hour the old hour's row is written one last
        time with every call up to now, and the new hour starts from these totals.
        """
        with self._lock:
            hour = hour_of(now)
            if self._hour is None:
                self._start(hour, Counters(0, 0))
            elif hour < self._hour:
                hour = self._hour  # a clock that stepped back: keep counting into the newer hour
            if self._hour != hour:
                self._write(counters)
                self._start(hour, counters)
            for feed, seconds in (lag or {}).items():
                self._lag[feed] = max(seconds, self._lag.get(feed, 0.0))
                self._dirty = True
            if counters != self._written:
                self._dirty = True
            if not self._due(hour):
                return False
            if backlog is not None:
                depth = backlog()
                self._backlog = depth if self._backlog is None else max(depth, self._backlog)
            self._write(counters)
            return True

    def _start(self, hour: datetime, base: Counters) -> None:
        self._hour, self._base, self._written, self._backlog, self._lag = hour, base, base, None, {}
        self._written_at, self._dirty = None, False

    def _write(self, counters: Counters) -> None:
        assert self._hour is not None
        sample = HourSample(self._hour, counters.marketo_calls - self._base.marketo_calls,
                            counters.dataverse_calls - self._base.dataverse_calls, self._backlog, dict(self._lag))
        self._store.write(sample, self.instance)
        self._written, self._written_at, self._dirty = counters, self._clock(), False
