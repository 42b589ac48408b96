"""The start-up check with typed fields, against the emulators' describe and metadata: a map
whose pairs fit starts; a pair whose type, behaviour or options do not fit is refused by name."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from devhost.emulators.dataverse import DataverseAdmin, DataverseEmulator
from shared.clients.dataverse import DataverseClient
from shared.clients.marketo import MarketoClient
from shared.errors import ConfigError
from tests.test_fieldtypes_e2e import FIELD_MAP
from tests.test_startup import build


def test_a_map_of_every_type_fits_the_services(
    storage_connection_string: str, marketo_client: Callable[..., MarketoClient], dataverse_client: DataverseClient,
) -> None:
    build(storage_connection_string, marketo_client(), dataverse_client, field_map=FIELD_MAP).check_field_map()


def replaced(marketo: str, **entry: Any) -> dict[str, Any]:
    fmap = copy.deepcopy(FIELD_MAP)
    fmap["fields"] = [{**f, **entry} if f["marketo"] == marketo else f for f in fmap["fields"]]
    return fmap


@pytest.mark.parametrize(("fmap", "override", "named"), [
    (FIELD_MAP, ("estimatedclosedate", {"date_behavior": "UserLocal"}),
     "Dataverse lead.estimatedclosedate is a UserLocal date and time, the map says date"),
    (FIELD_MAP, ("new_score", {"precision": 2}), None),  # nothing wrong: the check passes
    (FIELD_MAP, ("new_interests", {"options": {"1": "Software", "2": "Hardware"}}),
     "Dataverse lead.new_interests has no option for ['Services', 'Training']"),
    (replaced("engagementScore", type="money", currency="USD"), None,
     "Marketo engagementScore is float, the map says money"),
    (replaced("budget", lead="leadsourcecode"), None, "Dataverse lead.leadsourcecode is Picklist, the map says money"),
    (replaced("lastWebVisit", contact="birthdate"), None,
     "Dataverse contact.birthdate holds a date only, the map says datetime: the time would be lost"),
    (replaced("campaignName", lookup={"target": "accounts", "key": "name"}), None,
     "Dataverse lead.campaignid points at ['campaign'], the map looks up accounts"),
])
def test_a_pair_that_does_not_fit_is_refused_at_start_by_name(
    storage_connection_string: str, marketo_client: Callable[..., MarketoClient], dataverse_client: DataverseClient,
    dataverse: tuple[DataverseEmulator, DataverseAdmin], fmap: dict[str, Any],
    override: tuple[str, dict[str, Any]] | None, named: str | None,
) -> None:
    if override is not None:
        dataverse[1].set_metadata("lead", override[0], **override[1])
    svc = build(storage_connection_string, marketo_client(), dataverse_client, field_map=fmap)
    if named is None:
        svc.check_field_map()
        return
    with pytest.raises(ConfigError) as caught:
        svc.check_field_map()
    assert named in str(caught.value) and "LEADSYNC_FIELD_MAP" in str(caught.value)
