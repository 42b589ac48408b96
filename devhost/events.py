"""Wire both emulators' change events to the app, as an admin would wire the real services.

Dataverse: `leadsync setup dataverse-webhook` does it through the Web API (the product's own
`shared.ops.webhooks.register_dataverse`). Marketo has no API for webhooks or campaigns, so
here the emulator's admin API creates the trigger campaign `leadsync setup marketo-webhook`
describes: "Data Value Changes" on the mapped fields, calling the Marketo receiver.
"""

from __future__ import annotations

from devhost.emulators.marketo import MarketoAdmin
from devhost.stack import Stack
from shared.config import Settings
from shared.ops import webhooks
from shared.runtime import Services

CAMPAIGN = "LeadSync: changes"


def wire(stack: Stack) -> None:
    """Register the app's receivers with both emulators (idempotent on the Dataverse side)."""
    wire_app(stack.env, stack.app_url, stack.config.function_key)


def wire_app(env: dict[str, str], app_url: str, key: str) -> None:
    """Register the app at `app_url` (settings `env`) with both emulators; again with a new URL
    replaces the Dataverse endpoint's URL and the Marketo campaign of the same name."""
    svc = Services.from_settings(Settings.from_env(env))
    try:
        webhooks.register_dataverse(svc.dataverse, svc.fields, f"{app_url}/api/events/dataverse", key=key,
                                    sync_filter_field=svc.settings.sync_filter_field)
        fields = [f for f in svc.fields.marketo_fields() if f != svc.fields.email.marketo]
    finally:
        svc.close()
    admin = MarketoAdmin(env["MARKETO_BASE_URL"])
    try:
        for campaign in admin.campaigns():
            if campaign.get("name") == CAMPAIGN:
                admin.delete_campaign(int(campaign["id"]))
        admin.add_campaign(CAMPAIGN, "Data Value Changes", fields=fields,
                           url=f"{app_url}/api/events/marketo", template='{"leadId": {{lead.Id}}}',
                           headers={"x-functions-key": key})
    finally:
        admin.close()
