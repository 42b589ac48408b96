"""The PII filter and the webhook secret check: pure, no services."""

from __future__ import annotations

import logging

import pytest

from shared import telemetry
from shared.config import Secret
from shared.sync.realtime import webhook_secret_ok


@pytest.fixture
def logger(caplog: pytest.LogCaptureFixture) -> logging.Logger:
    log = logging.getLogger("leadsync.test-telemetry")
    log.addFilter(telemetry.RedactingFilter())
    caplog.set_level("INFO", logger=log.name)
    return log


def test_emails_in_a_message_are_redacted(logger: logging.Logger, caplog: pytest.LogCaptureFixture) -> None:
    logger.info("lookup of %s failed, also o'brien+tag@sub.example.co.uk", "Ada.Lovelace@Example.com")
    (record,) = caplog.records
    assert record.getMessage() == f"lookup of {telemetry.REDACTED} failed, also {telemetry.REDACTED}"


def test_emails_in_an_exception_are_redacted(logger: logging.Logger, caplog: pytest.LogCaptureFixture) -> None:
    try:
        raise ValueError("Dataverse said: no lead with emailaddress1 eq 'grace@navy.mil'")
    except ValueError:
        logger.exception("apply failed")
    handler = logging.StreamHandler()
    text = handler.format(caplog.records[0])
    assert "grace@navy.mil" not in text and telemetry.REDACTED in text


def test_text_without_emails_is_left_alone(logger: logging.Logger, caplog: pytest.LogCaptureFixture) -> None:
    logger.info("op=%s lead %s at 2026-11-25 17:05:28 user@host", "ab12", "6dddedb6-bc98-48a6-94c9-202998ab1ecb")
    assert caplog.records[0].getMessage() == (
        "op=ab12 lead 6dddedb6-bc98-48a6-94c9-202998ab1ecb at 2026-11-25 17:05:28 user@host")


def test_the_webhook_secret_is_optional_and_compared_exactly() -> None:
    assert webhook_secret_ok(Secret(""), None)
    assert webhook_secret_ok(Secret(""), "anything")
    assert webhook_secret_ok(Secret("s3cret"), "s3cret")
    assert not webhook_secret_ok(Secret("s3cret"), None)
    assert not webhook_secret_ok(Secret("s3cret"), "s3cret ")
    assert not webhook_secret_ok(Secret("s3cret"), "S3CRET")


def test_setup_without_application_insights_only_installs_the_filter() -> None:
    root = logging.getLogger()
    handler = logging.StreamHandler()
    root.addHandler(handler)
    try:
        telemetry.install_filter()
        assert any(isinstance(f, telemetry.RedactingFilter) for f in handler.filters)
        telemetry.install_filter()  # idempotent
        assert sum(isinstance(f, telemetry.RedactingFilter) for f in handler.filters) == 1
    finally:
        root.removeHandler(handler)


def test_a_message_body_keeps_its_shape_and_loses_every_text_value() -> None:
    guid = "0f8fad5b-d9cb-469f-a165-70867728950e"
    body = '{"v": 1, "source": "Ann Lee", "ids": [7, "Bob", "' + guid + '"], "x": {"ann@example.com": "Zoë"}}'
    assert telemetry.redact_body(body) == ('{"v": 1, "source": "[value]", "ids": [7, "[value]", "' + guid + '"], '
                                           '"x": {"<email>": "[value]"}}')
    assert telemetry.redact_body("Ann Lee, ann@example.com") == "[24 characters, not JSON]"


def test_quoted_values_are_redacted_except_the_words_kept() -> None:
    text = "source 'Ann Lee' is not 'marketo' or 'dynamics'"
    assert telemetry.redact(text, quoted=True, keep={"marketo", "dynamics"}) == (
        "source [value] is not 'marketo' or 'dynamics'")
    assert telemetry.redact(text, quoted=True) == "source [value] is not [value] or [value]"
