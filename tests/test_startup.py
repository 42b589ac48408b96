"""Start-up checks against the real services: a field map naming fields that don't exist is refused."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from shared.clients.dataverse import DataverseClient
from shared.clients.marketo import MarketoClient
from shared.config import Settings
from shared.errors import ConfigError
from shared.runtime import Services


def settings(storage: str, field_map: dict[str, object] | None = None, **extra: str) -> Settings:
    env = {
        "AzureWebJobsStorage": storage, "MARKETO_BASE_URL": "http://127.0.0.1:1", "MARKETO_CLIENT_ID": "x",
        "MARKETO_CLIENT_SECRET": "y", "DATAVERSE_URL": "https://127.0.0.1:1", "DATAVERSE_TENANT_ID": "t",
        "DATAVERSE_CLIENT_ID": "c", "DATAVERSE_CLIENT_SECRET": "s", **extra,
    }
    if field_map is not None:
        env["LEADSYNC_FIELD_MAP"] = json.dumps(field_map)
    return Settings.from_env(env)


def build(storage: str, marketo: MarketoClient, dataverse: DataverseClient, **kw: Any) -> Services:
    return Services.from_settings(settings(storage, **kw), marketo=marketo, dataverse=dataverse)


def test_the_default_field_map_matches_both_services(
    storage_connection_string: str, marketo_client: Callable[..., MarketoClient], dataverse_client: DataverseClient,
) -> None:
    build(storage_connection_string, marketo_client(), dataverse_client).check_field_map()


@pytest.mark.parametrize(("entry", "named"), [
    ({"marketo": "favouriteColour", "lead": "firstname"}, "Marketo has no field 'favouriteColour'"),
    ({"marketo": "title", "contact": "new_favouritecolour"}, "Dataverse contact has no column 'new_favouritecolour'"),
])
def test_a_field_map_naming_unknown_fields_is_refused_at_start(
    storage_connection_string: str, marketo_client: Callable[..., MarketoClient], dataverse_client: DataverseClient,
    entry: dict[str, str], named: str,
) -> None:
    fmap = {"version": 1, "fields": [{"marketo": "email", "lead": "emailaddress1", "type": "email"}, entry]}
    svc = build(storage_connection_string, marketo_client(), dataverse_client, field_map=fmap)
    with pytest.raises(ConfigError) as caught:
        svc.check_field_map()
    assert named in str(caught.value) and "LEADSYNC_FIELD_MAP" in str(caught.value)


def test_a_missing_sync_filter_column_is_refused_at_start(
    storage_connection_string: str, marketo_client: Callable[..., MarketoClient], dataverse_client: DataverseClient,
) -> None:
    svc = build(storage_connection_string, marketo_client(), dataverse_client,
                DATAVERSE_SYNC_FILTER_FIELD="new_nosuchflag")
    with pytest.raises(ConfigError, match="DATAVERSE_SYNC_FILTER_FIELD"):
        svc.check_field_map()
