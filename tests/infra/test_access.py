"""Access closed by default, read off the Terraform itself (issue 18.6): no wildcard action, no
public bucket or container, storage reachable over TLS only, no unauthenticated HTTP route, and
the model registry (``models/``) writable by the app's identity alone — the training job
writes only its staging prefix and the app registers a candidate after the gate.

The Terraform is parsed with python-hcl2 (no provider download, so it runs offline); each check
is also run on a broken copy of a real resource, so every check is shown to be able to fail.
The packaged AWS template has its own scan (tests/functions/aws/test_aws_template.py).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hcl2
import pytest

ROOT = Path(__file__).resolve().parents[2]
AZURE = ROOT / "infra" / "azure"
GCP = ROOT / "infra" / "gcp"
APP = ROOT / "functions" / "azure" / "function_app.py"

# Roles that can write blobs, and the scopes they may be granted on.
AZURE_BLOB_WRITERS = {"Storage Blob Data Contributor", "Storage Blob Data Owner"}
AZURE_BROAD_ROLES = {"Owner", "Contributor", "User Access Administrator"}
GCP_BROAD_ROLES = {"roles/owner", "roles/editor", "roles/storage.admin", "roles/iam.securityAdmin"}
GCP_OBJECT_WRITERS = {
    "roles/storage.objectUser",
    "roles/storage.objectAdmin",
    "roles/storage.objectCreator",
}
GCP_PUBLIC = {"allUsers", "allAuthenticatedUsers"}


def _plain(value: Any) -> Any:
    """python-hcl2 keeps string literals quoted: strip one pair of quotes, recursively."""
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {_plain(k): _plain(v) for k, v in value.items() if k != "__is_block__"}
    return value


@dataclass
class Resource:
    type: str
    name: str
    body: dict[str, Any]

    @property
    def address(self) -> str:
        return f"{self.type}.{self.name}"


def resources(directory: Path) -> list[Resource]:
    found = []
    for path in sorted(directory.glob("*.tf")):
        document = _plain(hcl2.loads(path.read_text()))
        for block in document.get("resource", []):
            for kind, named in block.items():
                for name, body in named.items():
                    found.append(Resource(kind, name, body))
    return found


def _first(value: Any) -> Any:
    return value[0] if isinstance(value, list) and value else value


# --------------------------------------------------------------------------------- Azure


def azure_findings(found: list[Resource]) -> Iterator[str]:
    for item in found:
        body = item.body
        if item.type == "azurerm_storage_account":
            if body.get("allow_nested_items_to_be_public") is not False:
                yield f"{item.address}: blobs can be made public"
            if body.get("https_traffic_only_enabled") is not True:
                yield f"{item.address}: accepts plain HTTP"
            if body.get("min_tls_version") != "TLS1_2":
                yield f"{item.address}: TLS below 1.2 accepted"
            if body.get("shared_access_key_enabled") is not False:
                yield f"{item.address}: account keys enabled"
        elif item.type == "azurerm_storage_container":
            if body.get("container_access_type", "private") != "private":
                yield f"{item.address}: public container"
        elif item.type in ("azurerm_function_app_flex_consumption", "azurerm_linux_function_app"):
            if body.get("https_only") is not True:
                yield f"{item.address}: HTTP allowed"
        elif item.type == "azurerm_role_definition":
            for permissions in body.get("permissions", []):
                for action in [
                    *permissions.get("actions", []),
                    *permissions.get("data_actions", []),
                ]:
                    if "*" in action:
                        yield f"{item.address}: wildcard action {action}"
        elif item.type == "azurerm_role_assignment":
            role = body.get("role_definition_name", "")
            scope = str(body.get("scope", ""))
            if role in AZURE_BROAD_ROLES:
                yield f"{item.address}: broad role {role}"
            if role in AZURE_BLOB_WRITERS and "storage_container.data" in scope:
                writer = str(body.get("principal_id", ""))
                if "identity.app" in writer:
                    continue  # the app: it gates and registers candidates
                condition = str(body.get("condition", ""))
                if not re.search(r"blobs:path\]\s+StringStartsWith\s+'[^']*staging/'", condition):
                    yield f"{item.address}: {writer} can write the registry (models/)"


def test_azure_terraform_is_closed_by_default() -> None:
    found = resources(AZURE)
    assert any(r.type == "azurerm_storage_account" for r in found), "no storage parsed"
    assert list(azure_findings(found)) == []


def test_azure_http_routes_need_a_function_key() -> None:
    """The app's default HTTP auth level is FUNCTION and no route lowers it to anonymous."""
    source = APP.read_text()
    assert "FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)" in source
    assert "AuthLevel.ANONYMOUS" not in source


def _broken(found: list[Resource], kind: str, change: dict[str, Any]) -> list[Resource]:
    """A copy of the real resources with the first ``kind`` changed."""
    changed = copy.deepcopy(found)
    target = next(r for r in changed if r.type == kind)
    target.body.update(change)
    return changed


@pytest.mark.parametrize(
    ("kind", "change", "finding"),
    [
        ("azurerm_storage_account", {"allow_nested_items_to_be_public": True}, "public"),
        ("azurerm_storage_account", {"https_traffic_only_enabled": False}, "plain HTTP"),
        ("azurerm_storage_container", {"container_access_type": "blob"}, "public container"),
        ("azurerm_role_assignment", {"role_definition_name": "Owner"}, "broad role"),
    ],
)
def test_each_azure_check_can_fail(kind: str, change: dict[str, Any], finding: str) -> None:
    findings = list(azure_findings(_broken(resources(AZURE), kind, change)))
    assert any(finding in f for f in findings), findings


def test_a_training_role_without_its_staging_condition_is_found() -> None:
    found = resources(AZURE)
    training = next(r for r in found if r.address == "azurerm_role_assignment.training_data")
    training.body.pop("condition")
    assert any("can write the registry" in f for f in azure_findings(found))


def test_a_wildcard_custom_role_is_found() -> None:
    role = Resource("azurerm_role_definition", "x", {"permissions": [{"actions": ["*"]}]})
    assert list(azure_findings([role])) == ["azurerm_role_definition.x: wildcard action *"]


def test_the_parser_sees_the_real_training_condition() -> None:
    found = resources(AZURE)
    training = next(r for r in found if r.address == "azurerm_role_assignment.training_data")
    assert "staging/" in _first(training.body["condition"])


# ---------------------------------------------------------------------------------- GCP


def gcp_findings(found: list[Resource]) -> Iterator[str]:
    for item in found:
        body = item.body
        if item.type == "google_storage_bucket":
            if body.get("public_access_prevention") != "enforced":
                yield f"{item.address}: public access not prevented"
            if body.get("uniform_bucket_level_access") is not True:
                yield f"{item.address}: object ACLs allowed"
        elif item.type.endswith(("_iam_member", "_iam_binding", "_iam_policy")):
            role = str(body.get("role", ""))
            members = body.get("members", [body.get("member", "")])
            if role in GCP_BROAD_ROLES or role.endswith(".*"):
                yield f"{item.address}: broad role {role}"
            if any(str(m) in GCP_PUBLIC for m in members):
                yield f"{item.address}: granted to {members}"
            if item.type == "google_storage_bucket_iam_member" and role in GCP_OBJECT_WRITERS:
                member = str(body.get("member", ""))
                if "service_account.functions" in member:
                    continue  # the functions: they gate and register candidates
                expression = str(_first(body.get("condition", [{}])).get("expression", ""))
                only_staging = re.fullmatch(
                    r'resource\.name\.startsWith\(\\?"[^"]*staging/\\?"\)', expression
                )
                if not only_staging:
                    yield f"{item.address}: {member} can write the registry (models/)"


def test_gcp_terraform_is_closed_by_default() -> None:
    found = resources(GCP)
    assert any(r.type == "google_storage_bucket" for r in found), "no bucket parsed"
    assert any(r.type == "google_storage_bucket_iam_member" for r in found)
    assert list(gcp_findings(found)) == []


def test_gcp_functions_are_private() -> None:
    """No function is invokable by allUsers: every invoker grant names a service account."""
    grants = [
        r for r in resources(GCP) if r.type.startswith("google_cloud_run") and "iam" in r.type
    ]
    assert grants, "no invoker grant parsed"
    for grant in grants:
        assert "service_account" in str(grant.body.get("member", "")), grant.address


@pytest.mark.parametrize(
    ("kind", "change", "finding"),
    [
        ("google_storage_bucket", {"public_access_prevention": "inherited"}, "public access"),
        ("google_storage_bucket", {"uniform_bucket_level_access": False}, "object ACLs"),
        ("google_project_iam_member", {"role": "roles/editor"}, "broad role"),
        ("google_cloud_run_service_iam_member", {"member": "allUsers"}, "granted to"),
    ],
)
def test_each_gcp_check_can_fail(kind: str, change: dict[str, Any], finding: str) -> None:
    findings = list(gcp_findings(_broken(resources(GCP), kind, change)))
    assert any(finding in f for f in findings), findings


def test_a_gcp_training_grant_on_the_whole_bucket_is_found() -> None:
    found = resources(GCP)
    write = next(r for r in found if r.address == "google_storage_bucket_iam_member.training_write")
    write.body.pop("condition")
    assert any("can write the registry" in f for f in gcp_findings(found))
