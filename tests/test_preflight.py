"""The preflight's judgements (shared/ops/preflight.py), from service answers written as the services give them."""

from __future__ import annotations

from shared.clients.dataverse_models import AttributeMetadata, EntityMetadata
from shared.clients.marketo_models import FieldInfo
from shared.ops import preflight
from shared.ops.preflight import Severity
from shared.rules.fieldmap import parse

MESSAGE = ("Principal user (Id=0c3d, type=8, roleCount=1, privilegeCount=0, accessMode=4), is missing prvWriteContact "
           "privilege (Id=9d1f) on OTC=2 for entity 'contact'. context.Caller=0c3d")


def meta(entity: str, *attrs: AttributeMetadata) -> EntityMetadata:
    return EntityMetadata(entity, {a.logical_name: a for a in attrs})


def test_a_privilege_error_names_the_privilege_to_grant() -> None:
    finding = preflight.privilege_finding("update contacts", "0x80040220", MESSAGE)
    assert finding.fix == "grant prvWriteContact (organization level) to the application user's security role"
    # Another code is reported as it came, never guessed into a privilege.
    other = preflight.privilege_finding("read leads", "0x80040217", "not found prvReadLead")
    assert "prvReadLead" not in other.fix and "0x80040217" in other.problem


def test_types_and_lengths_of_mapped_fields() -> None:
    fmap = parse({"version": 1, "fields": [
        {"marketo": "email", "lead": "emailaddress1", "type": "email"},
        {"marketo": "score", "lead": "new_score", "type": "integer"},
        {"marketo": "leadSource", "lead": "leadsourcecode", "type": "choice", "choices": {"Web": 8}},
    ]})
    marketo = {"email": FieldInfo(1, "email", "Email", "email", 255, False),
               "score": FieldInfo(2, "score", "Score", "string", 255, False),
               "leadSource": FieldInfo(3, "leadSource", "Lead Source", "string", 255, False)}
    columns = {"lead": meta("lead", AttributeMetadata("emailaddress1", "String", "None", 100),
                            AttributeMetadata("new_score", "Integer", "None"),
                            AttributeMetadata("leadsourcecode", "String", "None", 255))}
    found = {(f.severity, f.problem) for f in preflight.field_findings(fmap, marketo, columns)}
    assert found == {
        (Severity.WARNING, "Dataverse lead.emailaddress1 holds 100 characters, Marketo email 255: a longer value "
                           "fails validation and is not written"),
        (Severity.PROBLEM, "Marketo score is string, the map says integer"),
        (Severity.PROBLEM, "Dataverse lead.leadsourcecode is String, the map says choice"),
    }


def test_the_activity_type_is_a_problem_only_once_the_app_uses_it() -> None:
    assert [f.severity for f in preflight.activity_type_findings([], "leadsyncEvent", in_use=False)] == \
        [Severity.WARNING]
    assert [f.severity for f in preflight.activity_type_findings([], "leadsyncEvent", in_use=True)] == \
        [Severity.PROBLEM]
    approved = [{"apiName": "leadsyncEvent", "status": "approved"}]
    assert preflight.activity_type_findings(approved, "leadsyncEvent", in_use=True) == []


def test_quota_and_change_tracking() -> None:
    assert preflight.quota_findings(49_999, 50_000) == []
    assert [f.check for f in preflight.quota_findings(50_000, 50_000)] == ["quota"]
    assert [f.problem for f in preflight.change_tracking_findings({"lead": True, "contact": False})] == \
        ["change tracking is off on contact"]


def test_a_report_fails_on_problems_only() -> None:
    report = preflight.Report(preflight.activity_type_findings([], "leadsyncEvent", in_use=False))
    assert report.ok and report.to_dict()["warnings"]
    report.findings += preflight.change_tracking_findings({"lead": False})
    assert not report.ok and [p["check"] for p in report.to_dict()["problems"]] == ["change-tracking"]
