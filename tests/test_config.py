"""Settings: a misconfigured app stops at start with one line naming the setting; secrets never print."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.config import DEFAULT_POLL_SCHEDULE, ClosedLeadAction, OwnerRef, Secret, Settings, poll_schedule
from shared.errors import ConfigError

ACCOUNT_KEY = "c3VwZXItc2VjcmV0LWFjY291bnQta2V5LWZvci10ZXN0cw=="
MARKETO_SECRET = "mkto-client-secret-4f9a"
DATAVERSE_SECRET = "dv-client-secret-8c1e"
SECRETS = (ACCOUNT_KEY, MARKETO_SECRET, DATAVERSE_SECRET)

ENV = {
    "AzureWebJobsStorage": f"DefaultEndpointsProtocol=https;AccountName=leadsync;AccountKey={ACCOUNT_KEY};",
    "MARKETO_BASE_URL": "https://123-ABC-456.mktorest.com/",
    "MARKETO_CLIENT_ID": "mkto-client",
    "MARKETO_CLIENT_SECRET": MARKETO_SECRET,
    "DATAVERSE_URL": "https://contoso.crm.dynamics.com",
    "DATAVERSE_TENANT_ID": "00000000-0000-0000-0000-000000000001",
    "DATAVERSE_CLIENT_ID": "00000000-0000-0000-0000-000000000002",
    "DATAVERSE_CLIENT_SECRET": DATAVERSE_SECRET,
}
REQUIRED = list(ENV)


def env(**changes: str | None) -> dict[str, str]:
    e = dict(ENV)
    for k, v in changes.items():
        if v is None:
            e.pop(k, None)
        else:
            e[k] = v
    return e


def refused(environment: dict[str, str]) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(environment)
    return caught.value


def assert_names(error: ConfigError, setting: str) -> None:
    text = str(error)
    assert error.setting == setting
    assert setting in text
    assert "\n" not in text and text.strip() == text
    assert not any(s in text for s in SECRETS)


# -- a good configuration --------------------------------------------------------------
def test_complete_settings_load_with_defaults() -> None:
    s = Settings.from_env(ENV)
    assert s.marketo_base_url == "https://123-ABC-456.mktorest.com"  # trailing slash dropped
    assert s.dataverse_url == "https://contoso.crm.dynamics.com"
    assert s.marketo_client_secret.reveal() == MARKETO_SECRET
    assert s.dataverse_client_secret.reveal() == DATAVERSE_SECRET
    assert s.storage_connection.reveal() == ENV["AzureWebJobsStorage"]
    assert (s.marketo_share_pct, s.dataverse_share_pct, s.batch_size) == (90, 90, 300)
    assert s.table_prefix == "leadsync"
    assert s.dataverse_authority_host == "https://login.microsoftonline.com"
    assert s.field_map is None and s.dataverse_ca_bundle is None


def test_identity_based_storage_connection_is_enough() -> None:
    s = Settings.from_env(env(AzureWebJobsStorage=None, AzureWebJobsStorage__accountName="leadsync"))
    assert s.storage_connection.reveal() == ""


def test_certificate_instead_of_client_secret() -> None:
    s = Settings.from_env(env(DATAVERSE_CLIENT_SECRET=None, DATAVERSE_CERTIFICATE_PATH="/certs/dv.pem",
                              DATAVERSE_CERTIFICATE_THUMBPRINT="AB12"))
    assert s.dataverse_certificate_path == "/certs/dv.pem" and s.dataverse_client_secret.reveal() == ""


def test_http_marketo_url_is_allowed_for_the_emulator() -> None:
    assert Settings.from_env(env(MARKETO_BASE_URL="http://127.0.0.1:7071")).marketo_base_url == "http://127.0.0.1:7071"


def test_integer_settings_at_their_limits() -> None:
    s = Settings.from_env(env(LEADSYNC_MARKETO_SHARE_PCT="100", LEADSYNC_DATAVERSE_SHARE_PCT="1",
                              LEADSYNC_BATCH_SIZE=" 300 "))
    assert (s.marketo_share_pct, s.dataverse_share_pct, s.batch_size) == (100, 1, 300)


def test_the_events_coalescing_window() -> None:
    assert Settings.from_env(ENV).events_coalesce_s == 1
    assert Settings.from_env(env(LEADSYNC_EVENTS_COALESCE_S="0")).events_coalesce_s == 0
    assert Settings.from_env(ENV).events_max_window_s == 30
    assert Settings.from_env(env(LEADSYNC_EVENTS_MAX_WINDOW_S="30")).events_max_window_s == 30


def test_the_shares_are_of_each_services_limits_for_every_instance_together() -> None:
    # Worker processes and instances no longer divide the share: they draw on one budget.
    for workers in ("1", "10"):
        s = Settings.from_env(env(FUNCTIONS_WORKER_PROCESS_COUNT=workers))
        assert s.marketo_budget() == (90, 9) and s.dataverse_budget() == (5400, 46)
    low = Settings.from_env(env(LEADSYNC_MARKETO_SHARE_PCT="5", LEADSYNC_DATAVERSE_SHARE_PCT="1"))
    assert low.marketo_budget() == (5, 1)  # never below one call in flight: the sync must move
    assert low.dataverse_budget() == (60, 1)
    with pytest.raises(ConfigError, match="FUNCTIONS_WORKER_PROCESS_COUNT"):
        Settings.from_env(env(FUNCTIONS_WORKER_PROCESS_COUNT="11"))


@pytest.mark.parametrize("old", ["MARKETO_CALLS_PER_20S", "MARKETO_MAX_CONCURRENCY"])
def test_the_per_instance_caps_of_earlier_versions_are_refused_with_their_replacement(old: str) -> None:
    assert str(refused(env(**{old: "18"}))) == (
        f"setting {old}: is replaced by LEADSYNC_MARKETO_SHARE_PCT: one budget for every instance, "
        "not a cap per instance")
    assert Settings.from_env(env(**{old: " "})).marketo_share_pct == 90


@pytest.mark.parametrize(("name", "value"), [
    ("DATAVERSE_URL", "http://contoso.crm.dynamics.com"),
    ("DATAVERSE_URL", "contoso.crm.dynamics.com"),
    ("DATAVERSE_URL", "https://"),
    ("MARKETO_BASE_URL", "123-ABC-456.mktorest.com"),
    ("MARKETO_BASE_URL", "ftp://123-ABC-456.mktorest.com"),
    ("DATAVERSE_AUTHORITY_HOST", "http://login.microsoftonline.com"),
    ("LEADSYNC_MARKETO_SHARE_PCT", "ninety"),
    ("LEADSYNC_MARKETO_SHARE_PCT", "9.5"),
    ("LEADSYNC_MARKETO_SHARE_PCT", "0"),
    ("LEADSYNC_MARKETO_SHARE_PCT", "101"),
    ("LEADSYNC_MARKETO_SHARE_PCT", "-5"),
    ("LEADSYNC_DATAVERSE_SHARE_PCT", "101"),
    ("LEADSYNC_BATCH_SIZE", "301"),
    ("MARKETO_POLL_SCHEDULE", "*/30 * * * *"),
    ("DATAVERSE_POLL_SCHEDULE", "every 30 seconds"),
    ("DATAVERSE_POLL_SCHEDULE", "30s"),
    ("LEADSYNC_TABLE_PREFIX", "lead-sync"),
    ("LEADSYNC_TABLE_PREFIX", "1leadsync"),
    ("LEADSYNC_BACKGROUND_PAUSED", "yes"),
    ("LEADSYNC_DAILY_CAP_PCT", "101"),
    ("MARKETO_DAILY_QUOTA", "0"),
    ("LEADSYNC_EVENTS_COALESCE_S", "61"),
    ("LEADSYNC_EVENTS_COALESCE_S", "-1"),
    ("LEADSYNC_EVENTS_MAX_WINDOW_S", "301"),
])
def test_malformed_setting_is_named(name: str, value: str) -> None:
    error = refused(env(**{name: value}))
    assert_names(error, name)
    assert value.strip() in str(error) or "between" in str(error) or "letters and digits" in str(error)


def test_the_real_time_reserve_must_fit_inside_the_cap() -> None:
    assert str(refused(env(LEADSYNC_DAILY_CAP_PCT="10", LEADSYNC_REALTIME_RESERVE_PCT="10"))) == (
        "setting LEADSYNC_REALTIME_RESERVE_PCT: must be below LEADSYNC_DAILY_CAP_PCT (10), got 10")


@pytest.mark.parametrize(("raw", "paused"), [("true", True), ("TRUE", True), ("1", True), ("false", False),
                                             ("0", False), ("", False)])
def test_the_background_pause_setting(raw: str, paused: bool) -> None:
    assert Settings.from_env(env(LEADSYNC_BACKGROUND_PAUSED=raw)).background_paused is paused


def test_out_of_range_says_the_range() -> None:
    assert str(refused(env(LEADSYNC_MARKETO_SHARE_PCT="101"))) == (
        "setting LEADSYNC_MARKETO_SHARE_PCT: must be between 1 and 100, got 101")


def test_missing_ca_bundle_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pem"
    error = refused(env(DATAVERSE_CA_BUNDLE=str(missing)))
    assert_names(error, "DATAVERSE_CA_BUNDLE")
    assert str(missing) in str(error)


@pytest.mark.parametrize("name", ["DATAVERSE_URL", "MARKETO_BASE_URL", "DATAVERSE_AUTHORITY_HOST"])
@pytest.mark.parametrize("value", ["https://[contoso.crm.dynamics.com", "https://contoso]",
                                   "https://contoso\uff0fcrm.dynamics.com"])
def test_unparseable_url_is_named(name: str, value: str) -> None:
    assert_names(refused(env(**{name: value})), name)


# printable ASCII without brackets: the characters urlsplit itself refuses are covered above
@given(value=st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E, blacklist_characters="[]"),
                     max_size=60))
def test_any_dataverse_url_is_accepted_as_https_or_refused_in_one_line(value: str) -> None:
    try:
        s = Settings.from_env(env(DATAVERSE_URL=value))
    except ConfigError as error:
        assert error.setting == "DATAVERSE_URL" and "\n" not in str(error)
    else:
        assert s.dataverse_url.startswith("https://")


# -- secrets ---------------------------------------------------------------------------
def test_secrets_never_appear_in_repr_or_str() -> None:
    s = Settings.from_env(ENV)
    for text in (repr(s), str(s), f"{s}", f"{s!r}"):
        assert not any(secret in text for secret in SECRETS)
        assert "Secret('***')" in text
    assert "marketo_client_id='mkto-client'" in repr(s)  # still useful in a log


def test_secrets_never_reach_a_log_record(caplog: pytest.LogCaptureFixture) -> None:
    s = Settings.from_env(ENV)
    log = logging.getLogger("leadsync.test")
    with caplog.at_level(logging.DEBUG, logger="leadsync.test"):
        log.info("settings: %s", s)
        log.info("settings: %r", s)
        log.info(s)
        log.info("secret: %s", s.marketo_client_secret)
        log.warning("settings %s", s, extra={"settings": s})
    assert len(caplog.records) == 5
    for record in caplog.records:
        assert not any(secret in record.getMessage() for secret in SECRETS)
    assert not any(secret in caplog.text for secret in SECRETS)


def test_secret_masks_itself_but_compares_by_value() -> None:
    assert repr(Secret("hunter2")) == str(Secret("hunter2")) == "Secret('***')"
    assert Secret("a") == Secret("a") and Secret("a") != Secret("b")
    assert Settings.from_env(ENV) == Settings.from_env(dict(ENV))


# -- timer schedules -------------------------------------------------------------------
def test_poll_schedule_defaults_to_every_30_seconds() -> None:
    assert poll_schedule("MARKETO_POLL_SCHEDULE", {}) == DEFAULT_POLL_SCHEDULE == "*/30 * * * * *"
    assert poll_schedule("MARKETO_POLL_SCHEDULE", {"MARKETO_POLL_SCHEDULE": "  "}) == DEFAULT_POLL_SCHEDULE


@pytest.mark.parametrize("value", ["0 */5 * * * *", "*/10 * * * * *", "00:00:30", "01:00:00"])
def test_poll_schedule_accepts_ncrontab_and_timespans(value: str) -> None:
    assert poll_schedule("DATAVERSE_POLL_SCHEDULE", {"DATAVERSE_POLL_SCHEDULE": value}) == value


@pytest.mark.parametrize("value", ["*/5 * * * *", "0 0 * * * * *", "30", "0:30", "hourly"])
def test_poll_schedule_refuses_anything_else(value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        poll_schedule("DATAVERSE_POLL_SCHEDULE", {"DATAVERSE_POLL_SCHEDULE": value})
    assert_names(caught.value, "DATAVERSE_POLL_SCHEDULE")
    assert "six-field NCRONTAB" in str(caught.value)


# -- owners, closed leads, partition (issue #18) -----------------------------------------------
@pytest.mark.parametrize(("raw", "expected"), [
    ("systemuser:4A1B2C3D-0000-4000-8000-00000000000A",
     OwnerRef("systemuser", "id", "4a1b2c3d-0000-4000-8000-00000000000a")),
    ("systemuser:grace@contoso.com", OwnerRef("systemuser", "email", "grace@contoso.com")),
    ("grace@contoso.com", OwnerRef("systemuser", "email", "grace@contoso.com")),
    ("team:Inside Sales", OwnerRef("team", "name", "Inside Sales")),
    ("Team: 4a1b2c3d-0000-4000-8000-00000000000a", OwnerRef("team", "id", "4a1b2c3d-0000-4000-8000-00000000000a")),
])
def test_a_lead_owner_is_a_user_or_team_by_id_email_or_name(raw: str, expected: OwnerRef) -> None:
    assert Settings.from_env(env(LEADSYNC_LEAD_OWNER=raw)).lead_owner == expected


@pytest.mark.parametrize("raw", ["queue:Support", "systemuser:Grace Hopper", "team:", "grace", "systemuser:"])
def test_a_lead_owner_that_names_nothing_usable_is_refused_at_start(raw: str) -> None:
    assert_names(refused(env(LEADSYNC_LEAD_OWNER=raw)), "LEADSYNC_LEAD_OWNER")


def test_owner_closed_lead_and_partition_settings_default_to_doing_nothing() -> None:
    s = Settings.from_env(env())
    assert (s.lead_owner, s.lead_owner_field, s.owner_email_field, s.marketo_partition) == (None, None, None, None)
    assert s.closed_lead_action == ClosedLeadAction("keep") and s.duplicate_detection is True


@pytest.mark.parametrize(("raw", "expected"), [
    ("keep", ClosedLeadAction("keep")), ("KEEP", ClosedLeadAction("keep")),
    ("mark:leadStatus", ClosedLeadAction("mark", "leadStatus")),
])
def test_closed_lead_action(raw: str, expected: ClosedLeadAction) -> None:
    assert Settings.from_env(env(LEADSYNC_CLOSED_LEAD_ACTION=raw)).closed_lead_action == expected


@pytest.mark.parametrize(("name", "raw"), [("LEADSYNC_CLOSED_LEAD_ACTION", "mark"),
                                           ("LEADSYNC_CLOSED_LEAD_ACTION", "delete"),
                                           ("DATAVERSE_DUPLICATE_DETECTION", "yes")])
def test_malformed_issue_18_settings_are_named(name: str, raw: str) -> None:
    assert_names(refused(env(**{name: raw})), name)
