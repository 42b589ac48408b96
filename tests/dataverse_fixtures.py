"""Dataverse emulator fixtures for any test module.

Register with `pytest_plugins = ["tests.dataverse_fixtures"]`. Names:

- `dataverse_emulator` (session): a running `DataverseEmulator` over HTTPS with `base_url`,
  `authority`, `ca_path`, `tenant`, `client_id`, `client_secret`; every limit at its real value.
- `dataverse` (function): resets the emulator (data, faults, stats, limits, keys, metadata
  overrides) and returns `(emu, DataverseAdmin)`.
- `dataverse_client` (function): a `shared.clients.dataverse.DataverseClient` for the reset emulator,
  trusting its CA, with fast backoff (Retry-After capped at 2 s).
- `dataverse_client_factory` (function): `make(**overrides) -> DataverseClient` for the reset
  emulator (same defaults as `dataverse_client`; overrides go to the constructor); closes them after.
- `dataverse_token` (function): a bearer token string for raw HTTP tests.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterator

import httpx
import pytest

from devhost.emulators.dataverse import DataverseAdmin, DataverseEmulator
from shared.clients.dataverse import DataverseClient

TENANT = "contoso-test"
CLIENT_ID = "11111111-2222-3333-4444-555555555555"
CLIENT_SECRET = "test-secret-value"


@pytest.fixture(scope="session")
def dataverse_emulator() -> Iterator[DataverseEmulator]:
    with DataverseEmulator(tenant=TENANT, client_id=CLIENT_ID, client_secret=CLIENT_SECRET) as emu:
        yield emu


@pytest.fixture(scope="session")
def _dataverse_admin(dataverse_emulator: DataverseEmulator) -> Iterator[DataverseAdmin]:
    admin = DataverseAdmin(dataverse_emulator.base_url, dataverse_emulator.ca_path)
    yield admin
    admin.close()


@pytest.fixture
def dataverse(
    dataverse_emulator: DataverseEmulator, _dataverse_admin: DataverseAdmin
) -> tuple[DataverseEmulator, DataverseAdmin]:
    _dataverse_admin.reset()
    return dataverse_emulator, _dataverse_admin


def make_client(emu: DataverseEmulator, **overrides: object) -> DataverseClient:
    options: dict[str, object] = {
        "client_secret": emu.client_secret,
        "authority_host": emu.base_url,
        "ca_bundle": emu.ca_path,
        "backoff_initial": 0.01,
        "backoff_max": 0.05,
        "retry_after_max": 2.0,
        "timeout": 10.0,
    }
    options.update(overrides)
    return DataverseClient(emu.base_url, emu.tenant, emu.client_id, **options)  # type: ignore[arg-type]


@pytest.fixture
def dataverse_client(dataverse: tuple[DataverseEmulator, DataverseAdmin]) -> Iterator[DataverseClient]:
    client = make_client(dataverse[0])
    yield client
    client.close()


@pytest.fixture
def dataverse_client_factory(
    dataverse: tuple[DataverseEmulator, DataverseAdmin],
) -> Iterator[Callable[..., DataverseClient]]:
    made: list[DataverseClient] = []

    def make(**overrides: object) -> DataverseClient:
        client = make_client(dataverse[0], **overrides)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


@pytest.fixture
def dataverse_token(dataverse: tuple[DataverseEmulator, DataverseAdmin]) -> str:
    emu = dataverse[0]
    resp = httpx.post(
        f"{emu.authority}/oauth2/v2.0/token",
        data={"grant_type": "client_credentials", "client_id": emu.client_id,
              "client_secret": emu.client_secret or "", "scope": f"{emu.base_url}/.default"},
        verify=ssl.create_default_context(cafile=emu.ca_path),
    )
    resp.raise_for_status()
    return str(resp.json()["access_token"])
