"""LeadSync's sync core, in layers that import only downwards:

    sync/, ops/      what runs (pollers, appliers, real-time create) and what operators use
    runtime          the composition root: builds `Services` once per process from `config`
    state/ clients/  storage rows and queues; the Marketo and Dataverse clients
    rules/           pure field map, merge, validation, eligibility, email matching
    errors, config, telemetry, jsonable   used by every layer

Nothing in here knows about the Functions host; `functions/` adapts triggers to it. The
import contract (`.importlinter`) is checked by `make lint`.
"""
