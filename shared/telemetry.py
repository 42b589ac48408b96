"""Logs and metrics: an operation id on every line, counts and durations as metrics, no PII.

- Every LeadSync log record carries `operation_id` (and `source`/`kind` where known) as
  structured fields (`extra=`), which Application Insights stores as customDimensions, so
  one batch or one webhook call can be followed across functions.
- Metrics go through the OpenTelemetry API: `leadsync.records` (count, by outcome and
  direction), `leadsync.changes_seen` (by feed), `leadsync.batch.duration` and
  `leadsync.poll.duration` (ms). Without a configured SDK they cost nothing; when
  `APPLICATIONINSIGHTS_CONNECTION_STRING` is set, `setup()` routes traces, logs and
  metrics to Application Insights with azure-monitor-opentelemetry.
- PII: LeadSync never logs field values (names, emails, phones); log lines name people by
  key (m1042, lead:<guid>). As a second line of defence a filter on every handler
  redacts anything shaped like an email address, from our records and the host's alike
  (exception messages from a service can quote a query). Secrets are kept in
  `config.Secret` and never reach a log.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Collection, Mapping
from typing import Any

from opentelemetry import metrics

from shared.config import app_env

log = logging.getLogger("leadsync")
_EMAIL = re.compile(r"[A-Za-z0-9._%+\-']+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}")
REDACTED = "<email>"

_meter = metrics.get_meter("leadsync")
records = _meter.create_counter("leadsync.records", unit="1", description="record outcomes by kind and direction")
changes_seen = _meter.create_counter("leadsync.changes_seen", unit="1", description="changes read from a feed")
batch_duration = _meter.create_histogram("leadsync.batch.duration", unit="ms", description="one work message")
poll_duration = _meter.create_histogram("leadsync.poll.duration", unit="ms", description="one poll of a side")

_setup_lock = threading.Lock()
_done = False


_QUOTED = re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"")
QUOTED = "[value]"


def redact(text: str, *, quoted: bool = False, keep: Collection[str] = ()) -> str:
    """`text` with email addresses replaced; with `quoted`, quoted values too (services'
    error messages quote the value they refused), except the words in `keep`."""
    if quoted:
        text = _QUOTED.sub(lambda m: m.group() if m.group()[1:-1] in keep else QUOTED, text)
    return _EMAIL.sub(REDACTED, text)


_GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def redact_body(text: str) -> str:
    """A message body we could not interpret, with every value that could name a person
    masked: in JSON, each string (GUIDs kept, keys kept with emails masked); any other
    text as a whole, since nothing says which part of it is a name."""
    try:
        document = json.loads(text)
    except (ValueError, RecursionError):
        return f"[{len(text)} characters, not JSON]"
    try:
        return json.dumps(_masked(document), ensure_ascii=False)
    except RecursionError:
        return f"[{len(text)} characters of JSON, nested too deep to show]"


def _masked(value: Any) -> Any:
    if isinstance(value, str):
        return value if _GUID.fullmatch(value) else QUOTED
    if isinstance(value, list):
        return [_masked(v) for v in value]
    if isinstance(value, dict):
        return {redact(k): _masked(v) for k, v in value.items()}
    return value  # numbers, booleans and null name nobody


class RedactingFilter(logging.Filter):
    """Replaces email addresses in the formatted message (and exception text) of a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, ()
        if record.exc_info and record.exc_info[1] is not None:
            text = str(record.exc_info[1])
            if _EMAIL.search(text):
                record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        return True


def setup(env: Mapping[str, str] | None = None) -> None:
    """Install the PII filter on every root handler and, if configured, Azure Monitor. Idempotent."""
    global _done
    e = app_env() if env is None else env
    with _setup_lock:
        if _done:
            return
        _done = True
        connection = e.get("APPLICATIONINSIGHTS_CONNECTION_STRING", "").strip()
        if connection:
            from azure.monitor.opentelemetry import configure_azure_monitor

            configure_azure_monitor(connection_string=connection, logger_name="leadsync")
        install_filter()


def install_filter(logger: logging.Logger | None = None) -> None:
    target = logger or logging.getLogger()
    redacting = RedactingFilter()
    for handler in target.handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(redacting)
    # Our own records are redacted at the source too, whatever handlers exist later.
    ours = logging.getLogger("leadsync")
    if not any(isinstance(f, RedactingFilter) for f in ours.filters):
        ours.addFilter(redacting)


def op(operation_id: str, **fields: Any) -> dict[str, Any]:
    """`extra=` for a log call: the operation id plus any structured fields."""
    return {"operation_id": operation_id, **fields}
