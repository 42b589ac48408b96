"""Timer triggers, as described on the Azure Functions "Timer trigger" reference page.

- A schedule is a six-field NCRONTAB expression, `{second} {minute} {hour} {day} {month}
  {day-of-week}` (evaluated in UTC, as the host does without WEBSITE_TIME_ZONE), or a
  TimeSpan "hh:mm:ss" meaning "every interval, first one interval after start".
- `runOnStartup` runs the function once as soon as the host starts.
- One invocation at a time per function: each timer has one thread, so a tick that comes
  due while the previous run is still going is not started alongside it. All ticks missed
  that way are merged into one run that starts as soon as the previous one ends, with
  `past_due=True` (it started later than scheduled by more than PAST_DUE_TOLERANCE).
- The function receives `azure.functions.timer.TimerRequest` (the worker's concrete
  `func.TimerRequest`), whose `schedule_status` holds `Last`,
  `Next` and `LastUpdated` (ISO 8601), as the host's does.

Deviation: the real host keeps the schedule status in storage so a tick missed while the
app was down runs past due at the next start; devhost keeps it in memory only.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import azure.functions as func
from azure.functions.timer import TimerRequest
from croniter import croniter

from devhost.failures import describe
from devhost.hostjson import parse_timespan

PAST_DUE_TOLERANCE = timedelta(milliseconds=250)
_TIMESPAN_SCHEDULE = re.compile(r"^\s*(\d+\.)?\d{1,2}:\d{1,2}(:\d{1,2})?\s*$")


class Schedule(Protocol):
    def next_after(self, moment: datetime) -> datetime:
        """The first occurrence strictly after `moment` (aware UTC datetimes)."""
        ...


class CronSchedule:
    """A six-field NCRONTAB schedule (seconds first)."""

    def __init__(self, expression: str) -> None:
        fields = expression.split()
        if len(fields) != 6:
            raise ValueError(
                f"timer schedule {expression!r} must have six fields: "
                "{second} {minute} {hour} {day} {month} {day-of-week}"
            )
        if not croniter.is_valid(expression, second_at_beginning=True):
            raise ValueError(f"timer schedule {expression!r} is not a valid NCRONTAB expression")
        self.expression = expression

    def next_after(self, moment: datetime) -> datetime:
        it = croniter(self.expression, moment, second_at_beginning=True)
        nxt: datetime = it.get_next(datetime)
        return nxt

    def __repr__(self) -> str:
        return f"CronSchedule({self.expression!r})"


class IntervalSchedule:
    """A TimeSpan schedule: every `interval`, counted from the previous occurrence."""

    def __init__(self, interval: timedelta) -> None:
        if interval <= timedelta(0):
            raise ValueError(f"timer interval must be positive, got {interval}")
        self.interval = interval

    def next_after(self, moment: datetime) -> datetime:
        return moment + self.interval

    def __repr__(self) -> str:
        return f"IntervalSchedule({self.interval})"


def parse_schedule(text: str) -> Schedule:
    """A TimeSpan ("00:05:00") or a six-field NCRONTAB expression; ValueError otherwise."""
    if _TIMESPAN_SCHEDULE.match(text):
        return IntervalSchedule(parse_timespan(text))
    return CronSchedule(text)


def _utcnow() -> datetime:
    return datetime.now(UTC)


class TimerRunner:
    """Drives one timer-triggered function on its own thread.

    `invoke(timer_request)` runs the user function (and raises what it raises);
    `log` receives one line per invocation.
    """

    def __init__(
        self,
        name: str,
        schedule: Schedule,
        *,
        run_on_startup: bool,
        invoke: Callable[[func.TimerRequest], Any],
        log: Callable[[str], None],
    ) -> None:
        self.name = name
        self.schedule = schedule
        self.run_on_startup = run_on_startup
        self._invoke = invoke
        self._log = log
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last: datetime | None = None
        # Manual runs (the host's POST /admin/functions/{name}) are queued to this thread,
        # so they never overlap a scheduled run either.
        self._wake = threading.Condition()
        self._requested = 0
        self._served = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name=f"timer-{self.name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop scheduling new runs; a run in progress finishes (see join)."""
        self._stop.set()
        with self._wake:
            self._wake.notify_all()

    def run_now(self, wait: float | None = None) -> bool:
        """Ask for one extra run as soon as the current one (if any) ends.

        With `wait`, block up to that many seconds for the run to finish; True if it did.
        """
        with self._wake:
            self._requested += 1
            mine = self._requested
            self._wake.notify_all()
            if wait is None:
                return True
            return self._wake.wait_for(lambda: self._served >= mine or self._stop.is_set(), wait) and \
                self._served >= mine

    def join(self, timeout: float | None) -> bool:
        """Wait for the thread (and so any run in progress); True if it ended."""
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _loop(self) -> None:
        next_due = self.schedule.next_after(_utcnow())
        if self.run_on_startup and not self._stop.is_set():
            self._run(scheduled=_utcnow(), past_due=False, next_due=next_due)
        while not self._stop.is_set():
            with self._wake:
                wanted = self._requested
            if wanted > self._served:
                self._run(scheduled=_utcnow(), past_due=False, next_due=next_due)
                with self._wake:
                    self._served = wanted
                    self._wake.notify_all()
                continue
            now = _utcnow()
            if next_due > now:
                # Wake at most every second so a changed wall clock is noticed.
                with self._wake:
                    if self._requested == self._served and not self._stop.is_set():
                        self._wake.wait(min((next_due - now).total_seconds(), 1.0))
                continue
            late = now - next_due
            latest = next_due
            for _ in range(100_000):  # merge every tick missed while the last run went on
                following = self.schedule.next_after(latest)
                if following > now:
                    break
                latest = following
            next_due = self.schedule.next_after(latest)
            self._run(scheduled=latest, past_due=late > PAST_DUE_TOLERANCE, next_due=next_due)

    def _run(self, *, scheduled: datetime, past_due: bool, next_due: datetime) -> None:
        now = _utcnow()
        request = TimerRequest(
            past_due=past_due,
            schedule_status={
                "Last": (self._last or scheduled).isoformat(),
                "Next": next_due.isoformat(),
                "LastUpdated": now.isoformat(),
            },
            schedule={"AdjustForDST": True},
        )
        self._last = scheduled
        started = time.perf_counter()
        try:
            self._invoke(request)
        except Exception as exc:  # the host boundary: report it (host logs the traceback) and keep the schedule
            self._log(f"timer  {self.name}  past_due={past_due}  FAILED ({describe(exc)})  {_ms(started)}")
        else:
            self._log(f"timer  {self.name}  past_due={past_due}  ok  {_ms(started)}")


def _ms(started: float) -> str:
    return f"{(time.perf_counter() - started) * 1000:.0f} ms"


