"""Read the parts of host.json that devhost honours, with the Functions host's defaults.

Keys are matched case-insensitively, as the host's .NET configuration binder does.
Durations are .NET TimeSpan strings ("hh:mm:ss", "d.hh:mm:ss", "hh:mm:ss.fff").

Defaults when a key is missing (from the host.json reference and the queue trigger
reference pages of the Azure Functions docs):

=============================  =====================  ==================================
key                            default                notes
=============================  =====================  ==================================
functionTimeout                None (no limit here)   "-1" also means unlimited
extensions.http.routePrefix    "api"                  "" serves routes at the root
extensions.queues.batchSize    16                     1..32
  .newBatchThreshold           batchSize // 2         the real host uses N*batchSize/2
                                                      with N vCPUs (N=1 on Consumption)
  .maxDequeueCount             5
  .visibilityTimeout           00:00:00               delay before a failed message
                                                      is visible again
  .maxPollingInterval          00:01:00               at least 100 ms
  .messageEncoding             "base64"               or "none"
=============================  =====================  ==================================
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

MIN_POLLING_INTERVAL = timedelta(milliseconds=100)
MESSAGE_ENCODINGS = ("base64", "none")

_TIMESPAN = re.compile(r"^(-)?(?:(\d+)\.)?(\d{1,2}):(\d{1,2})(?::(\d{1,2})(?:\.(\d{1,7}))?)?$")


def parse_timespan(text: str) -> timedelta:
    """Parse a .NET TimeSpan string ("00:00:10", "1.02:03:04", "00:00:00.250").

    Raises ValueError naming the text when it is not a TimeSpan.
    """
    m = _TIMESPAN.match(text.strip())
    if not m:
        raise ValueError(f"not a TimeSpan (expected hh:mm:ss): {text!r}")
    sign, days, hours, minutes, seconds, fraction = m.groups()
    value = timedelta(
        days=int(days or 0),
        hours=int(hours),
        minutes=int(minutes),
        seconds=int(seconds or 0),
        microseconds=int((fraction or "0").ljust(7, "0")[:7]) // 10,
    )
    return -value if sign else value


@dataclass(frozen=True)
class QueueSettings:
    """`extensions.queues` of host.json (queue trigger reference, "host.json settings")."""

    batch_size: int = 16
    new_batch_threshold: int = 8
    max_dequeue_count: int = 5
    visibility_timeout: timedelta = timedelta(0)
    max_polling_interval: timedelta = timedelta(minutes=1)
    message_encoding: str = "base64"


@dataclass(frozen=True)
class HostSettings:
    """What devhost reads from host.json; everything else in the file is ignored."""

    version: str = "2.0"
    function_timeout: timedelta | None = None
    route_prefix: str = "api"
    queues: QueueSettings = field(default_factory=QueueSettings)


def read_host_json(source: Path | str | Mapping[str, Any]) -> HostSettings:
    """Read host.json from a path (or an already-parsed dict) into HostSettings.

    Raises ValueError naming the key when a value is out of range or malformed, so a
    bad host.json fails at start rather than at the first message.
    """
    if isinstance(source, Mapping):
        data: Mapping[str, Any] = source
    else:
        data = json.loads(Path(source).read_text(encoding="utf-8"))
    version = str(_get(data, "version", "2.0"))
    if version != "2.0":
        raise ValueError(f"host.json version must be \"2.0\", got {version!r}")

    timeout_text = _get(data, "functionTimeout", None)
    function_timeout = None
    if timeout_text is not None and str(timeout_text).strip() != "-1":
        function_timeout = _timespan(timeout_text, "functionTimeout")

    extensions = _get(data, "extensions", {}) or {}
    http = _get(extensions, "http", {}) or {}
    route_prefix = str(_get(http, "routePrefix", "api")).strip("/")

    q = _get(extensions, "queues", {}) or {}
    batch_size = int(_get(q, "batchSize", 16))
    if not 1 <= batch_size <= 32:
        raise ValueError(f"extensions.queues.batchSize must be 1..32, got {batch_size}")
    threshold = int(_get(q, "newBatchThreshold", batch_size // 2))
    if threshold < 0:
        raise ValueError(f"extensions.queues.newBatchThreshold must be >= 0, got {threshold}")
    max_dequeue = int(_get(q, "maxDequeueCount", 5))
    if max_dequeue < 1:
        raise ValueError(f"extensions.queues.maxDequeueCount must be >= 1, got {max_dequeue}")
    visibility = _timespan(_get(q, "visibilityTimeout", "00:00:00"), "extensions.queues.visibilityTimeout")
    polling = _timespan(_get(q, "maxPollingInterval", "00:01:00"), "extensions.queues.maxPollingInterval")
    if polling < MIN_POLLING_INTERVAL:
        raise ValueError(f"extensions.queues.maxPollingInterval must be at least 100 ms, got {polling}")
    encoding = str(_get(q, "messageEncoding", "base64")).lower()
    if encoding not in MESSAGE_ENCODINGS:
        raise ValueError(f"extensions.queues.messageEncoding must be one of {MESSAGE_ENCODINGS}, got {encoding!r}")

    return HostSettings(
        version=version,
        function_timeout=function_timeout,
        route_prefix=route_prefix,
        queues=QueueSettings(
            batch_size=batch_size,
            new_batch_threshold=threshold,
            max_dequeue_count=max_dequeue,
            visibility_timeout=visibility,
            max_polling_interval=polling,
            message_encoding=encoding,
        ),
    )


def _get(section: Mapping[str, Any], key: str, default: Any) -> Any:
    for k, v in section.items():
        if k.lower() == key.lower():
            return v
    return default


def _timespan(value: Any, key: str) -> timedelta:
    try:
        return parse_timespan(str(value))
    except ValueError as exc:
        raise ValueError(f"{key}: {exc}") from exc
