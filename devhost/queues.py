"""Queue triggers, as described on the Azure Functions "Azure Queue storage trigger"
reference page (polling, concurrency, poison messages) and host.json `extensions.queues`.

What a caller can rely on:

- Polling: an empty queue is polled again after 100 ms, doubling (with a little jitter)
  up to `maxPollingInterval`; a non-empty receive resets the delay.
- Concurrency: messages are received in batches of `batchSize` and each runs on a thread
  of its own; a new batch is fetched whenever the number in flight drops to
  `newBatchThreshold` or below. As in the real host, at most batchSize + newBatchThreshold
  messages of one queue run at once (batchSize when newBatchThreshold is 0).
- Receiving hides a message for MESSAGE_LEASE (10 min, as the host does) and the lease is
  renewed at half-time while the function runs.
- Success deletes the message. Failure (the function raises) makes the message visible
  again after `visibilityTimeout`, unless its dequeue count has reached `maxDequeueCount`:
  then it is copied, body unchanged, to `<queue>-poison` and deleted from the queue. A
  message received with a dequeue count already above maxDequeueCount (its host died
  mid-run) and a body that cannot be decoded per `messageEncoding` go to the poison queue
  without running the function.
- The function receives `azure.functions.queue.QueueMessage` (the worker's concrete
  `func.QueueMessage`, with dequeue count and times) whose body is the decoded bytes.
"""

from __future__ import annotations

import base64
import binascii
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import azure.functions as func
from azure.core.exceptions import AzureError, ResourceExistsError
from azure.functions.queue import QueueMessage as FunctionMessage
from azure.storage.queue import QueueClient
from azure.storage.queue import QueueMessage as StoredMessage

from devhost.hostjson import MIN_POLLING_INTERVAL, QueueSettings

# A private generator: background threads must not move the global random state that
# tests (hypothesis) and callers rely on.
_jitter = random.Random()
MESSAGE_LEASE = timedelta(minutes=10)
POISON_SUFFIX = "-poison"


@dataclass
class _InFlight:
    """A received message whose run has not finished; `lock` guards the pop receipt."""

    message: StoredMessage
    pop_receipt: str
    renew_at: float
    lock: threading.Lock = field(default_factory=threading.Lock)
    done: bool = False


class QueueListener:
    """Polls one queue for one function. start() creates the queue and its poison queue."""

    def __init__(
        self,
        name: str,
        *,
        connection_string: str,
        queue_name: str,
        settings: QueueSettings,
        invoke: Callable[[func.QueueMessage], Any],
        log: Callable[[str], None],
        lease: timedelta = MESSAGE_LEASE,
    ) -> None:
        self.name = name
        self.queue_name = queue_name
        self.poison_queue_name = queue_name + POISON_SUFFIX
        self.settings = settings
        self._invoke = invoke
        self._log = log
        self._lease = lease
        self._queue = QueueClient.from_connection_string(connection_string, queue_name)
        self._poison = QueueClient.from_connection_string(connection_string, self.poison_queue_name)
        self._stop = threading.Event()
        self._cv = threading.Condition()
        self._in_flight: dict[str, _InFlight] = {}
        self._futures: set[Future[None]] = set()
        self._executor = ThreadPoolExecutor(
            max_workers=settings.batch_size + settings.new_batch_threshold,
            thread_name_prefix=f"queue-{name}",
        )
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        for client in (self._queue, self._poison):
            try:
                client.create_queue()
            except ResourceExistsError:
                pass
        self._thread = threading.Thread(target=self._poll, name=f"poll-{self.name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop receiving; runs in progress go on (see join)."""
        self._stop.set()
        with self._cv:
            self._cv.notify_all()

    def join(self, timeout: float | None) -> bool:
        """Wait for the poller and the runs in flight, up to `timeout` s; True if all ended.

        Messages still running after the timeout stay invisible until their lease ends,
        then another receiver gets them again (as after a host crash).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        if self._thread is not None:
            self._thread.join(timeout)
        with self._cv:
            pending = set(self._futures)
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        _, not_done = wait(pending, timeout=remaining)
        self._executor.shutdown(wait=False, cancel_futures=True)
        finished = not not_done and (self._thread is None or not self._thread.is_alive())
        if finished:  # a run still going would need the clients to settle its message
            self._queue.close()
            self._poison.close()
        return finished

    # -- polling -------------------------------------------------------------------

    def _poll(self) -> None:
        delay = MIN_POLLING_INTERVAL.total_seconds()
        max_delay = self.settings.max_polling_interval.total_seconds()
        while not self._stop.is_set():
            self._renew_leases()
            with self._cv:
                if len(self._in_flight) > self.settings.new_batch_threshold:
                    self._cv.wait(min(1.0, self._until_next_renewal()))
                    continue
            try:
                messages = self._receive(self.settings.batch_size)
            except AzureError as exc:
                self._log(f"queue  {self.name}  receive from {self.queue_name} failed ({_describe(exc)})")
                messages = []
            if not messages:
                self._stop.wait(min(delay * _jitter.uniform(0.9, 1.1), self._until_next_renewal()))
                delay = min(delay * 2, max_delay)
                continue
            delay = MIN_POLLING_INTERVAL.total_seconds()
            for message in messages:
                self._dispatch(message)

    def _receive(self, count: int) -> list[StoredMessage]:
        pages = self._queue.receive_messages(
            messages_per_page=count,
            visibility_timeout=int(self._lease.total_seconds()),
        ).by_page()
        return list(next(pages, []))

    def _dispatch(self, message: StoredMessage) -> None:
        record = _InFlight(
            message=message,
            pop_receipt=message.pop_receipt or "",
            renew_at=time.monotonic() + self._lease.total_seconds() / 2,
        )
        with self._cv:
            self._in_flight[message.id] = record
            future = self._executor.submit(self._process, record)
            self._futures.add(future)
        future.add_done_callback(self._forget)

    def _forget(self, future: Future[None]) -> None:
        with self._cv:
            self._futures.discard(future)

    def _until_next_renewal(self) -> float:
        with self._cv:
            due = min((r.renew_at for r in self._in_flight.values()), default=float("inf"))
        return max(0.05, due - time.monotonic())

    def _renew_leases(self) -> None:
        now = time.monotonic()
        with self._cv:
            due = [r for r in self._in_flight.values() if r.renew_at <= now]
        for record in due:
            with record.lock:
                if record.done:
                    continue
                try:
                    updated = self._queue.update_message(
                        record.message.id,
                        pop_receipt=record.pop_receipt,
                        visibility_timeout=int(self._lease.total_seconds()),
                    )
                except AzureError as exc:
                    self._log(f"queue  {self.name}  msg={_short(record.message.id)}  lease renewal failed "
                              f"({_describe(exc)})")
                    record.renew_at = now + 5
                    continue
                record.pop_receipt = updated.pop_receipt or record.pop_receipt
                record.renew_at = now + self._lease.total_seconds() / 2

    # -- one message -----------------------------------------------------------------

    def _process(self, record: _InFlight) -> None:
        message = record.message
        started = time.perf_counter()
        head = f"queue  {self.name}  msg={_short(message.id)} dequeue={message.dequeue_count}"
        try:
            if message.dequeue_count > self.settings.max_dequeue_count:
                reason = (f"dequeue count {message.dequeue_count} is above "
                          f"maxDequeueCount {self.settings.max_dequeue_count}")
                self._log(f"{head}  not run: {reason}")
                self._settle(record, poison_reason=reason)
                return
            try:
                body = self._decode(message.content)
            except ValueError as exc:
                reason = f"body is not valid for messageEncoding {self.settings.message_encoding!r} ({exc})"
                self._log(f"{head}  not run: {reason}")
                self._settle(record, poison_reason=reason)
                return
            request = FunctionMessage(
                id=message.id,
                body=body,
                dequeue_count=message.dequeue_count,
                expiration_time=message.expires_on,
                insertion_time=message.inserted_on,
                time_next_visible=message.next_visible_on,
                pop_receipt=record.pop_receipt,
            )
            try:
                self._invoke(request)
            except Exception as exc:  # the host boundary: the queue decides retry or poison
                failure = _describe(exc)
                if message.dequeue_count >= self.settings.max_dequeue_count:
                    reason = (f"failed {message.dequeue_count} time(s), maxDequeueCount is "
                              f"{self.settings.max_dequeue_count}; last error {failure}")
                    self._log(f"{head}  FAILED ({failure})  {_ms(started)}  -> {self.poison_queue_name}")
                    self._settle(record, poison_reason=reason)
                else:
                    retry = self.settings.visibility_timeout.total_seconds()
                    self._log(f"{head}  FAILED ({failure})  {_ms(started)}  retry in {retry:g} s")
                    self._settle(record, retry_after=self.settings.visibility_timeout)
                return
            self._log(f"{head}  ok  {_ms(started)}")
            self._settle(record)
        finally:
            with self._cv:
                self._in_flight.pop(message.id, None)
                self._cv.notify_all()

    def _decode(self, content: Any) -> bytes:
        text = content if isinstance(content, str) else bytes(content).decode("utf-8")
        if self.settings.message_encoding == "base64":
            try:
                return base64.b64decode(text, validate=True)
            except binascii.Error as exc:
                raise ValueError(str(exc)) from exc
        return text.encode("utf-8")

    def _settle(
        self,
        record: _InFlight,
        *,
        poison_reason: str | None = None,
        retry_after: timedelta | None = None,
    ) -> None:
        """Delete, poison or release the message; storage errors are logged, not raised
        (the message then reappears after its lease, as after a host crash)."""
        message = record.message
        with record.lock:
            record.done = True
            try:
                if retry_after is not None:
                    self._queue.update_message(
                        message.id,
                        pop_receipt=record.pop_receipt,
                        visibility_timeout=int(retry_after.total_seconds()),
                    )
                    return
                if poison_reason is not None:
                    # The body is copied exactly as stored (no re-encoding).
                    self._poison.send_message(message.content)
                    self._log(f"queue  {self.name}  msg={_short(message.id)} moved to "
                              f"{self.poison_queue_name}: {poison_reason}")
                self._queue.delete_message(message.id, pop_receipt=record.pop_receipt)
            except AzureError as exc:
                self._log(f"queue  {self.name}  msg={_short(message.id)}  could not settle ({_describe(exc)}); "
                          "it reappears when its lease ends")


def _short(message_id: str) -> str:
    return message_id[:8]


def _ms(started: float) -> str:
    return f"{(time.perf_counter() - started) * 1000:.0f} ms"


def _describe(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0][:200]}" if lines else type(exc).__name__
