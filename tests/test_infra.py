"""The Azure deployment (infra/, azure.yaml), checked without Azure.

The Bicep CLI cannot be installed on these machines, so every .bicep file is parsed with
pycep (the parser checkov uses) and the parsed templates are checked for what users of a
deployment depend on: storage reached only with the app's identity, secrets only through
Key Vault, the roles the app needs, app settings that LeadSync's own start-up check
accepts. Checkov then scans infra/ with the project's .checkov.yaml, and every finding must
be one that file accepts with a reason. Where the Bicep CLI exists,
`az bicep build --file infra/main.bicep` is the full compile (docs/deploy.md).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from pycep import BicepParser

from shared.config import Settings

ROOT = Path(__file__).resolve().parent.parent
INFRA = ROOT / "infra"
CHECKOV_CONFIG = ROOT / ".checkov.yaml"
BICEP_FILES = sorted(INFRA.rglob("*.bicep"))

# Built-in role definition ids.
STORAGE_BLOB_DATA_OWNER = "b7e6dc6d-f1e8-4753-8033-0f276bb0955b"
STORAGE_QUEUE_DATA_CONTRIBUTOR = "974c5e8b-45b9-4653-ba55-5f855dd0fb88"
STORAGE_TABLE_DATA_CONTRIBUTOR = "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3"
KEY_VAULT_SECRETS_USER = "4633458b-17de-408a-b874-0445c86b69e6"
MONITORING_METRICS_PUBLISHER = "3913510d-42f4-4e42-8a64-420c390055eb"

KEY_VAULT_REFERENCE = re.compile(r"^@Microsoft\.KeyVault\(SecretUri=\$\{(\w+)\}\)$")

# README "Configuration" settings the deployment deliberately does not set.
NOT_DEPLOYED = {
    "AzureWebJobsStorage": "replaced by the identity-based AzureWebJobsStorage__* settings",
    "DATAVERSE_CERTIFICATE_PATH": "the deployment authenticates with the client secret from Key Vault",
    "DATAVERSE_CERTIFICATE_THUMBPRINT": "as DATAVERSE_CERTIFICATE_PATH",
    "DATAVERSE_CA_BUNDLE": "only for a private endpoint or the emulator",
    "FUNCTIONS_WORKER_PROCESS_COUNT": "the host's own setting, left at 1: Flex Consumption adds instances instead",
    "MARKETO_CALLS_PER_20S": "an earlier version's per-instance cap, refused at start (LEADSYNC_MARKETO_SHARE_PCT)",
    "MARKETO_MAX_CONCURRENCY": "as MARKETO_CALLS_PER_20S",
}

# Settings LeadSync reads that the deployment leaves at their defaults.
DEFAULTED = {"MARKETO_DELETES_EVERY_S", "LEADSYNC_BATCH_SIZE"}

# Settings a Flex Consumption app rejects or ignores (the plan sets runtime and package itself).
NOT_ON_FLEX = {
    "FUNCTIONS_EXTENSION_VERSION",
    "FUNCTIONS_WORKER_RUNTIME",
    "FUNCTIONS_WORKER_RUNTIME_VERSION",
    "WEBSITE_RUN_FROM_PACKAGE",
    "WEBSITE_CONTENTSHARE",
    "WEBSITE_CONTENTAZUREFILECONNECTIONSTRING",
    "SCM_DO_BUILD_DURING_DEPLOYMENT",
    "ENABLE_ORYX_BUILD",
}

# Values a person supplies at deployment time (main.parameters.json / azd env).
SUPPLIED = {
    "environmentName": "prod",
    "location": "westeurope",
    "marketoBaseUrl": "https://123-ABC-456.mktorest.com",
    "marketoClientId": "mkto-client",
    "dataverseUrl": "https://contoso.crm.dynamics.com",
    "dataverseTenantId": "00000000-0000-0000-0000-000000000001",
    "dataverseClientId": "00000000-0000-0000-0000-000000000002",
}


# --- reading the parsed templates ------------------------------------------------------


@cache
def template(relative: str) -> dict[str, Any]:
    """pycep's JSON for infra/<relative>; raises on a syntax error."""
    parsed: dict[str, Any] = BicepParser().parse(file_path=INFRA / relative)
    return parsed


def dotted(node: Any) -> str | None:
    """`a.b.c` for a property-access chain (or a bare name); None for anything else."""
    if isinstance(node, str):
        return node
    if isinstance(node, dict) and node.get("operator", {}).get("type") == "property_accessor":
        operands = node["operator"]["operands"]
        left, right = dotted(operands["operand_1"]), dotted(operands["operand_2"])
        return f"{left}.{right}" if left and right else None
    return None


def walk(node: Any) -> Iterator[Any]:
    """Every node of a parsed template, depth first."""
    yield node
    children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
    for child in children:
        yield from walk(child)


def call(node: Any) -> tuple[str, dict[str, Any]] | None:
    """(function name, arguments) for a function call node."""
    if isinstance(node, dict) and "function" in node:
        return node["function"]["type"], node["function"]["parameters"]
    return None


def resources_of(relative: str, resource_type: str) -> dict[str, dict[str, Any]]:
    doc = template(relative)
    return {name: r for name, r in doc.get("resources", {}).items() if r["type"] == resource_type}


def only_resource(relative: str, resource_type: str) -> dict[str, Any]:
    found = resources_of(relative, resource_type)
    assert len(found) == 1, f"{relative}: expected one {resource_type}, found {sorted(found)}"
    resource: dict[str, Any] = next(iter(found.values()))["config"]
    return resource


def is_secure(param: dict[str, Any]) -> bool:
    return any(d["type"] == "secure" for d in param["decorators"])


def main_module(symbol: str) -> tuple[str, dict[str, Any]]:
    """(module file relative to infra/, params main.bicep passes) of a module in main.bicep."""
    module = template("main.bicep")["modules"][symbol]
    return module["detail"]["path"], module["config"]["params"]


def app_settings() -> dict[str, Any]:
    path, _ = main_module("appSettings")
    config = only_resource(path, "Microsoft.Web/sites/config")
    assert config["name"] == "appsettings"
    settings: dict[str, Any] = config["properties"]
    return settings


def resolved_app_settings() -> dict[str, str]:
    """The app settings as a deployment with the template's defaults would set them.

    Parameters follow main.bicep -> appsettings module; values only known in Azure
    (resource names, endpoints) become placeholders, Key Vault references the secret.
    """
    main = template("main.bicep")
    path, passed = main_module("appSettings")
    module_params = template(path)["parameters"]

    def main_value(name: str) -> str:
        param = main["parameters"][name]
        value = param["default"] if param["default"] is not None else SUPPLIED.get(name)
        assert value is not None, f"main.bicep param {name} has no default and no test value"
        return str(value)

    def module_param(name: str) -> str:
        source = passed[name]
        if isinstance(source, str) and source in main["parameters"]:
            return main_value(source)
        return f"<{dotted(source)}>"

    def resolve(value: Any) -> str:
        if isinstance(value, str):
            if KEY_VAULT_REFERENCE.match(value):
                return "secret-from-key-vault"
            return module_param(value) if value in module_params else value
        fn = call(value)
        if fn and fn[0] == "string":
            return resolve(fn[1]["value_to_convert"])
        raise AssertionError(f"cannot resolve app setting value {value!r}")

    return {name: resolve(value) for name, value in app_settings().items()}


def readme_settings() -> set[str]:
    """Setting names in the first column of README.md's Configuration table."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    names: set[str] = set()
    for line in section.splitlines():
        if not line.startswith("| `"):
            continue
        previous = ""
        for token in re.findall(r"`([A-Za-z_][A-Za-z0-9_]*)`", line.split("|")[1]):
            if token.islower():
                continue  # a field-map type (`string`, `lookup`) in the same section's other table
            # `DATAVERSE_CERTIFICATE_PATH` + `_THUMBPRINT` names DATAVERSE_CERTIFICATE_THUMBPRINT.
            name = previous.rsplit("_", 1)[0] + token if token.startswith("_") else token
            names.add(name)
            previous = name
    return names


# --- the templates parse ---------------------------------------------------------------


def test_infra_has_main_and_modules() -> None:
    names = {p.relative_to(INFRA).as_posix() for p in BICEP_FILES}
    assert "main.bicep" in names
    for symbol, module in template("main.bicep")["modules"].items():
        assert (INFRA / module["detail"]["path"]).is_file(), f"module {symbol}: {module['detail']['path']} missing"


@pytest.mark.parametrize("path", BICEP_FILES, ids=lambda p: p.relative_to(INFRA).as_posix())
def test_bicep_file_parses(path: Path) -> None:
    template(path.relative_to(INFRA).as_posix())


def test_modules_get_the_parameters_they_declare_and_outputs_exist() -> None:
    # What `az bicep build` would check and a parser does not: the wiring between files.
    main = template("main.bicep")
    for symbol, module in main["modules"].items():
        declared = template(module["detail"]["path"])["parameters"]
        passed = module["config"]["params"]
        assert set(passed) <= set(declared), f"module {symbol} gets undeclared {sorted(set(passed) - set(declared))}"
        required = {name for name, p in declared.items() if p["default"] is None}
        assert required <= set(passed), f"module {symbol} misses {sorted(required - set(passed))}"
    used = set()
    for node in walk(main):
        # Property-access chains, and `${module.outputs.name}` inside interpolated strings.
        text = node if isinstance(node, str) else dotted(node) or ""
        used |= set(re.findall(r"(?<![\w.])(\w+)\.outputs\.(\w+)", text))
    assert ("functionApp", "defaultHostName") in used
    for symbol, output in used:
        reference = f"{symbol}.outputs.{output}"
        outputs = template(main["modules"][symbol]["detail"]["path"]).get("outputs", {})
        assert output in outputs, f"main.bicep uses {reference}, which its module does not declare"


# --- hosting ---------------------------------------------------------------------------


def test_function_app_runs_python_311_on_flex_consumption() -> None:
    path, _ = main_module("functionApp")
    plan = only_resource(path, "Microsoft.Web/serverfarms")
    assert plan["sku"] == {"name": "FC1", "tier": "FlexConsumption"}
    assert plan["properties"]["reserved"] is True

    app = only_resource(path, "Microsoft.Web/sites")
    assert app["kind"] == "functionapp,linux"
    assert app["identity"] == {"type": "SystemAssigned"}
    assert app["properties"]["httpsOnly"] is True
    assert app["properties"]["siteConfig"]["minTlsVersion"] == "1.2"
    config = app["properties"]["functionAppConfig"]
    assert config["runtime"] == {"name": "python", "version": "3.11"}
    assert config["deployment"]["storage"]["type"] == "blobContainer"
    assert config["deployment"]["storage"]["authentication"] == {"type": "SystemAssignedIdentity"}
    assert set(config["scaleAndConcurrency"]) == {"maximumInstanceCount", "instanceMemoryMB"}
    # azd deploys the `api` service of azure.yaml to the app carrying this tag.
    assert call(app["tags"]) == ("union", {"arg_1": "tags", "arg_2": {"'azd-service-name'": "api"}})


def test_the_template_scales_out_on_one_shared_budget_not_per_instance_caps() -> None:
    # Every instance of every scale group draws on the one budget in storage: the template
    # sets LeadSync's share of the services' limits, and does not pin the instance count.
    params = template("main.bicep")["parameters"]
    assert "marketoCallsPer20s" not in params and "marketoMaxConcurrency" not in params
    assert params["maximumInstanceCount"]["default"] >= 40
    for name in ("marketoSharePercent", "dataverseSharePercent"):
        assert 1 <= params[name]["default"] <= 90  # headroom for the customer's other integrations
    settings = app_settings()
    assert "MARKETO_CALLS_PER_20S" not in settings and "MARKETO_MAX_CONCURRENCY" not in settings
    _, passed = main_module("appSettings")
    assert passed["marketoSharePercent"] == "marketoSharePercent"
    assert passed["dataverseSharePercent"] == "dataverseSharePercent"


# --- storage: identity only ------------------------------------------------------------


def test_storage_account_accepts_only_entra_id_over_tls12() -> None:
    path, _ = main_module("storage")
    props = only_resource(path, "Microsoft.Storage/storageAccounts")["properties"]
    assert props["allowSharedKeyAccess"] is False
    assert props["allowBlobPublicAccess"] is False
    assert props["minimumTlsVersion"] == "TLS1_2"
    assert props["supportsHttpsTrafficOnly"] is True


def test_app_settings_hold_no_storage_keys_or_connection_strings() -> None:
    settings = app_settings()
    assert "AzureWebJobsStorage" not in settings
    assert settings["AzureWebJobsStorage__accountName"] == "storageAccountName"
    for name in ("queueServiceUri", "tableServiceUri"):
        assert f"AzureWebJobsStorage__{name}" in settings
    connection_strings = {n for n in settings if "CONNECTIONSTRING" in n.upper().replace("_", "")}
    assert connection_strings == {"APPLICATIONINSIGHTS_CONNECTION_STRING"}
    text = json.dumps(settings)
    for marker in ("AccountKey", "SharedAccessSignature", "DefaultEndpointsProtocol", "listKeys", "listAccountSas"):
        assert marker not in text
    assert not NOT_ON_FLEX & set(settings)


def test_no_template_reads_storage_keys() -> None:
    for path in BICEP_FILES:
        text = path.read_text()
        for call_name in ("listKeys(", "listAccountSas(", "listServiceSas("):
            assert call_name not in text, f"{path.name} calls {call_name}"


# --- secrets: only through Key Vault ---------------------------------------------------


def test_key_vault_uses_rbac_with_soft_delete_and_purge_protection() -> None:
    path, _ = main_module("vault")
    props = only_resource(path, "Microsoft.KeyVault/vaults")["properties"]
    assert props["enableRbacAuthorization"] is True
    assert props["enableSoftDelete"] is True
    assert props["enablePurgeProtection"] is True
    assert "accessPolicies" not in props


def test_secret_parameters_go_only_to_key_vault() -> None:
    main = template("main.bicep")
    secure = {name for name, p in main["parameters"].items() if is_secure(p)}
    assert secure == {"marketoClientSecret", "dataverseClientSecret", "webhookSecret"}
    vault_path, vault_params = main_module("vault")
    vault_template = template(vault_path)
    for name in secure:
        users = [symbol for symbol, module in main["modules"].items()
                 if name in module["config"]["params"].values()]
        assert users == ["vault"], f"{name} is passed to {users}"
        receiving = next(p for p, v in vault_params.items() if v == name)
        assert is_secure(vault_template["parameters"][receiving]), f"keyvault.bicep {receiving} is not @secure()"
        for part in ("variables", "outputs"):
            assert name not in json.dumps(main.get(part, {})), f"{name} appears in main.bicep {part}"


def test_every_secret_setting_is_a_key_vault_reference_to_a_vault_secret() -> None:
    settings = app_settings()
    _, passed = main_module("appSettings")
    vault_path, _ = main_module("vault")
    vault_outputs = template(vault_path)["outputs"]
    secrets = resources_of(vault_path, "Microsoft.KeyVault/vaults/secrets")

    secret_like = {n for n in settings if re.search(r"SECRET|PASSWORD|_KEY$", n)}
    assert secret_like == {"MARKETO_CLIENT_SECRET", "DATAVERSE_CLIENT_SECRET", "LEADSYNC_WEBHOOK_SECRET"}
    referenced = set()
    for name in sorted(secret_like):
        match = KEY_VAULT_REFERENCE.match(settings[name])
        assert match, f"{name} is not a Key Vault reference: {settings[name]!r}"
        source = dotted(passed[match.group(1)])
        assert source and source.startswith("vault.outputs."), f"{name} comes from {source}"
        output = dotted(vault_outputs[source.removeprefix("vault.outputs.")]["value"])
        symbol, _, attribute = (output or "").partition(".")
        assert symbol in secrets and attribute == "properties.secretUri", f"{name} -> {output}"
        referenced.add(symbol)
    assert referenced == set(secrets), "every Key Vault secret is used by an app setting"


# --- what the app identity may do ------------------------------------------------------


def test_app_identity_has_the_roles_it_needs() -> None:
    path, passed = main_module("access")
    assert dotted(passed["principalId"]) == "functionApp.outputs.principalId"
    app_path, _ = main_module("functionApp")
    app_symbol = next(iter(resources_of(app_path, "Microsoft.Web/sites")))
    assert dotted(template(app_path)["outputs"]["principalId"]["value"]) == f"{app_symbol}.identity.principalId"

    access = template(path)
    variables = {name: v["value"] for name, v in access.get("variables", {}).items()}
    granted = set()
    for symbol, assignment in resources_of(path, "Microsoft.Authorization/roleAssignments").items():
        config = assignment["config"]
        props = config["properties"]
        assert props["principalId"] == "principalId", symbol
        assert props["principalType"] == "ServicePrincipal", symbol
        fn = call(props["roleDefinitionId"])
        assert fn and fn[0] == "subscription_resource_id", symbol
        role = fn[1]["resource_name_1"]
        scope = access["resources"][config["scope"]]["type"]
        granted.add((variables.get(role, role), scope))
    assert granted == {
        (STORAGE_BLOB_DATA_OWNER, "Microsoft.Storage/storageAccounts"),
        (STORAGE_QUEUE_DATA_CONTRIBUTOR, "Microsoft.Storage/storageAccounts"),
        (STORAGE_TABLE_DATA_CONTRIBUTOR, "Microsoft.Storage/storageAccounts"),
        (KEY_VAULT_SECRETS_USER, "Microsoft.KeyVault/vaults"),
        (MONITORING_METRICS_PUBLISHER, "Microsoft.Insights/components"),
    }


def test_app_settings_are_applied_after_the_roles() -> None:
    # So the first start already resolves its Key Vault references and reaches storage.
    assert template("main.bicep")["modules"]["appSettings"]["config"]["dependsOn"] == ["access"]


# --- the settings LeadSync reads -------------------------------------------------------


def test_app_settings_cover_the_readme_configuration_table() -> None:
    documented = readme_settings()
    assert "MARKETO_BASE_URL" in documented and "DATAVERSE_CERTIFICATE_THUMBPRINT" in documented
    missing = documented - set(NOT_DEPLOYED) - set(app_settings())
    assert not missing, f"README settings the deployment does not set: {sorted(missing)}"


def test_app_settings_cover_every_setting_leadsync_reads() -> None:
    # A setting added to shared/config.py (a new secret, say) must be deployed or declared here.
    source = (ROOT / "shared" / "config.py").read_text()
    read = set(re.findall(r'"([A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+|AzureWebJobsStorage\w*)"', source))
    assert {"MARKETO_BASE_URL", "LEADSYNC_WEBHOOK_SECRET", "MARKETO_POLL_SCHEDULE"} <= read
    missing = read - set(NOT_DEPLOYED) - DEFAULTED - set(app_settings())
    assert not missing, f"settings shared/config.py reads that the deployment does not set: {sorted(missing)}"


def test_default_deployment_settings_pass_leadsync_start_up_check() -> None:
    settings = Settings.from_env(resolved_app_settings())
    assert settings.marketo_client_secret.reveal() == "secret-from-key-vault"
    assert settings.dataverse_client_secret.reveal() == "secret-from-key-vault"
    assert settings.webhook_secret.reveal() == "secret-from-key-vault"
    assert settings.marketo_base_url == SUPPLIED["marketoBaseUrl"]
    assert settings.table_prefix == "leadsync"


def test_application_insights_is_workspace_based_and_identity_only() -> None:
    path, _ = main_module("monitoring")
    props = only_resource(path, "Microsoft.Insights/components")["properties"]
    workspaces = resources_of(path, "Microsoft.OperationalInsights/workspaces")
    assert dotted(props["WorkspaceResourceId"]) == f"{next(iter(workspaces))}.id"
    assert props["DisableLocalAuth"] is True
    settings = app_settings()
    assert settings["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"] == "Authorization=AAD"
    _, passed = main_module("appSettings")
    assert dotted(passed[settings["APPLICATIONINSIGHTS_CONNECTION_STRING"]]) == "monitoring.outputs.connectionString"


# --- azd -------------------------------------------------------------------------------


def test_azd_parameters_file_fills_every_required_parameter() -> None:
    parameters = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    declared = template("main.bicep")["parameters"]
    assert set(parameters) <= set(declared)
    required = {name for name, p in declared.items() if p["default"] is None}
    assert required <= set(parameters)
    assert parameters["environmentName"]["value"] == "${AZURE_ENV_NAME}"
    assert parameters["location"]["value"] == "${AZURE_LOCATION}"
    for name, entry in parameters.items():
        # Every value comes from the azd environment; none (least of all a secret) is written here.
        assert re.fullmatch(r"\$\{[A-Z][A-Z0-9_]*\}", entry["value"]), name


def test_azure_yaml_deploys_this_folder_as_the_api_function() -> None:
    text = (ROOT / "azure.yaml").read_text()
    service = text.split("services:", 1)[1]
    assert re.search(r"^  api:$", service, re.M)
    for line in ("project: .", "language: python", "host: function"):
        assert re.search(rf"^    {re.escape(line)}$", service, re.M), line


# --- checkov ---------------------------------------------------------------------------


def accepted_checks() -> dict[str, str]:
    """Check id -> reason, from the skip-check list of .checkov.yaml."""
    accepted: dict[str, str] = {}
    in_list = False
    for line in CHECKOV_CONFIG.read_text().splitlines():
        if re.match(r"^\S", line):
            in_list = line.startswith("skip-check:")
            continue
        entry = re.match(r"^\s+-\s+(\S+)\s*(?:#\s*(.*))?$", line)
        if in_list and entry:
            accepted[entry.group(1)] = (entry.group(2) or "").strip()
    return accepted


def checkov_command() -> str:
    installed = ROOT / ".venv/tools/checkov/bin/checkov"
    for candidate in (os.environ.get("CHECKOV"), str(installed), shutil.which("checkov")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    pytest.fail("checkov is not installed: `make setup` puts it in .venv/tools/checkov (or set CHECKOV=<path>)")


@pytest.fixture(scope="module")
def checkov_report() -> dict[str, Any]:
    # The project's config (directory, framework, no downloads), but with its skip-check list
    # overridden, so the report shows every finding, accepted ones included.
    result = subprocess.run(
        [checkov_command(), "--config-file", str(CHECKOV_CONFIG), "--output", "json",
         "--skip-check", "LEADSYNC_REPORT_EVERYTHING"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode in (0, 1), result.stderr[-3000:]
    reports = json.loads(result.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    assert [r["check_type"] for r in reports] == ["bicep"], result.stdout[:500]
    report: dict[str, Any] = reports[0]
    return report


def test_every_accepted_checkov_finding_has_a_reason() -> None:
    accepted = accepted_checks()
    assert accepted
    unexplained = sorted(check for check, reason in accepted.items() if len(reason) < 20)
    assert not unexplained, f"accepted without a reason in .checkov.yaml: {unexplained}"


def test_checkov_scans_every_template(checkov_report: dict[str, Any]) -> None:
    assert checkov_report["summary"]["parsing_errors"] == 0
    results = checkov_report["results"]
    scanned = {c["file_path"].lstrip("/") for c in results["passed_checks"] + results["failed_checks"]}
    # Checkov has no checks for some types (role assignments, Log Analytics); these it has.
    checked_types = {"Microsoft.Storage/storageAccounts", "Microsoft.KeyVault/vaults", "Microsoft.Web/sites"}
    expected = set()
    for path in (p.relative_to(INFRA).as_posix() for p in BICEP_FILES):
        declared = {r["type"] for r in template(path).get("resources", {}).values() if not r["existing"]}
        if checked_types & declared:
            expected.add(path)
    assert expected and expected <= scanned


def test_checkov_finds_only_accepted_failures(checkov_report: dict[str, Any]) -> None:
    failed: dict[str, list[str]] = {}
    for check in checkov_report["results"]["failed_checks"]:
        failed.setdefault(check["check_id"], []).append(
            f"{check['check_id']} {check['check_name']}: {check['file_path']} {check['resource']}")
    accepted = accepted_checks()
    unaccepted = [line for check, lines in sorted(failed.items()) if check not in accepted for line in lines]
    assert not unaccepted, "checkov failures not accepted in .checkov.yaml:\n" + "\n".join(unaccepted)
    stale = sorted(set(accepted) - set(failed))
    assert not stale, f".checkov.yaml accepts checks that no longer fail; remove them: {stale}"


# --- alerts ----------------------------------------------------------------------------


def alert_rules() -> dict[str, dict[str, Any]]:
    rules: list[dict[str, Any]] = template("modules/alerts.bicep")["variables"]["rules"]["value"]
    return {rule["name"]: rule for rule in rules}


def test_alerts_mail_the_operator_given_at_deployment() -> None:
    path, passed = main_module("alerts")
    assert path == "modules/alerts.bicep"
    assert passed["alertEmail"] == "alertEmail" and dotted(passed["workspaceId"]) == "monitoring.outputs.workspaceId"
    assert not template("main.bicep")["parameters"]["alertEmail"]["default"]  # no address is guessed
    group = only_resource(path, "Microsoft.Insights/actionGroups")
    assert [r["emailAddress"] for r in group["properties"]["emailReceivers"]] == ["alertEmail"]
    rules = only_resource(path, "Microsoft.Insights/scheduledQueryRules")["config"]  # one per rule: a loop
    assert [dotted(g) for g in rules["properties"]["actions"]["actionGroups"]] == ["actionGroup.id"]
    assert rules["properties"]["scopes"] == ["workspaceId"]


def test_each_alert_queries_a_signal_the_app_emits() -> None:
    from azure.functions.decorators.function_app import FunctionBuilder

    from functions import timers
    from shared import telemetry
    from shared.state import activity
    from shared.state.pause import Pause

    rules = alert_rules()
    assert set(rules) == {"poison-messages", "failure-spike", "poll-lag", "quota-paused", "function-failing"}
    # The pause's own words, as shared/state/pause.py logs them ("background sync %s").
    now = datetime.now(UTC)
    paused = "background sync " + Pause("607", "Marketo daily quota (607)", "", now, now, now).describe()
    assert rules["quota-paused"]["query"].split('"')[1] in paused
    assert f'Name == "{telemetry.records._name}"' in rules["failure-spike"]["query"]  # the instrument's name
    for kind in (activity.VALIDATION_FAILED, activity.REJECTED, activity.PARKED):
        assert f'"{kind}"' in rules["failure-spike"]["query"]
    pollers = {f._function.get_function_name() for f in vars(timers).values() if isinstance(f, FunctionBuilder)}
    assert pollers == set(re.findall(r"(poll_\w+)", template("modules/alerts.bicep")["variables"]["pollFunctions"]
                                     ["value"]))
    assert rules["poison-messages"]["query"].startswith("AppTraces | where SeverityLevel >= 3")
    assert rules["function-failing"]["query"].startswith("AppRequests | where Success == false")
