"""The Marketo emulator's typed lead fields (date, datetime, float, currency) as Marketo stores them."""

from __future__ import annotations

from tests.test_marketo_emulator import Rest, rest  # noqa: F401  (the bare REST caller and its fixture)


def test_typed_fields_store_marketo_forms_and_refuse_what_marketo_refuses(rest: Rest) -> None:  # noqa: F811
    fields = {f["rest"]["name"]: f["dataType"] for f in rest.get("/v1/leads/describe.json")["result"]}
    assert {k: fields[k] for k in ("expectedCloseDate", "lastWebVisit", "engagementScore", "budget")} == {
        "expectedCloseDate": "date", "lastWebVisit": "datetime", "engagementScore": "float", "budget": "currency"}
    [ok] = rest.sync([{"email": "typed@x.com", "expectedCloseDate": "2024-05-01", "engagementScore": "12.5",
                       "lastWebVisit": "2024-05-01T12:22:33+02:00", "budget": 99}])
    assert ok["status"] == "created"
    [lead] = rest.get("/v1/leads.json", filterType="id", filterValues=str(ok["id"]),
                      fields="expectedCloseDate,lastWebVisit,engagementScore,budget")["result"]
    assert {k: lead[k] for k in ("expectedCloseDate", "lastWebVisit", "engagementScore", "budget")} == {
        "expectedCloseDate": "2024-05-01", "lastWebVisit": "2024-05-01T10:22:33Z", "engagementScore": 12.5,
        "budget": 99.0}
    refused = rest.sync([
        {"email": "a@x.com", "expectedCloseDate": "2024-02-30"},  # the shape of a date, but no such day
        {"email": "b@x.com", "expectedCloseDate": "May 1st"},
        {"email": "c@x.com", "engagementScore": "twelve"},
        {"email": "d@x.com", "budget": True},
        {"email": "e@x.com", "lastWebVisit": "soon"},
    ])
    assert [(r["status"], r["reasons"][0]["code"]) for r in refused] == [("skipped", "1003")] * 5
