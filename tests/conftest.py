"""Session fixtures: real servers started once, isolated per test by names."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from hypothesis import settings

from devhost.azurite import Azurite

pytest_plugins = ["tests.dataverse_fixtures", "tests.marketo_fixtures"]

# Hypothesis' per-example deadline is a wall-clock window: on a loaded 2-core machine a slow
# example is not a failing one (pytest-timeout still stops a hung test).
settings.register_profile("leadsync", deadline=None)
settings.load_profile("leadsync")


@pytest.fixture(scope="session")
def azurite() -> Iterator[Azurite]:
    """One in-memory Azurite on free ports for the whole session."""
    with Azurite() as server:
        yield server


@pytest.fixture(scope="session")
def storage_connection_string(azurite: Azurite) -> str:
    return azurite.connection_string


@pytest.fixture
def name_prefix() -> str:
    """A table/queue name prefix unique to one test (letters and digits only, as tables need)."""
    return "t" + uuid.uuid4().hex[:10]
