"""The CRDs: well-formed and documented (pure), then installed on the real API server."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any, Iterator

import pytest
from kubernetes import client

from foundry.domain.phases import Phase
from foundry.kube.crds import CrdError, default_crd_dir, install_crds, load_crds
from foundry.kube.runs import TicketSnapshot, Trigger, build_run_manifest, create_or_attach

REPO = Path(__file__).resolve().parents[1]


def _by_kind() -> dict[str, dict[str, Any]]:
    return {crd["spec"]["names"]["kind"]: crd for crd in load_crds(REPO / "crds")}


def _schema(kind: str) -> dict[str, Any]:
    (version,) = _by_kind()[kind]["spec"]["versions"]
    return version["schema"]["openAPIV3Schema"]


def _walk(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path or "<root>", schema
    for name, sub in (schema.get("properties") or {}).items():
        yield from _walk(sub, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        yield from _walk(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from _walk(schema["additionalProperties"], f"{path}{{*}}")


def _at(schema: dict[str, Any], json_path: str) -> dict[str, Any] | None:
    node: dict[str, Any] | None = schema
    for part in json_path.strip(".").split("."):
        node = (node or {}).get("properties", {}).get(part)
        if node is None:
            return None
    return node


# --- pure: the YAML itself ---------------------------------------------------


def test_default_crd_dir_is_the_repository_crds():
    assert default_crd_dir() == REPO / "crds"


def test_load_crds_rejects_a_non_crd_file(tmp_path):
    (tmp_path / "x.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n")
    with pytest.raises(CrdError, match="only CustomResourceDefinition"):
        load_crds(tmp_path)
    with pytest.raises(CrdError, match="no \\*.yaml"):
        load_crds(tmp_path / "empty-missing")


def test_names_group_and_scope():
    crds = _by_kind()
    assert set(crds) == {"FoundryRun", "FoundryApproval"}
    run, approval = crds["FoundryRun"], crds["FoundryApproval"]
    for crd in crds.values():
        assert crd["spec"]["group"] == "foundry.dev"
        assert crd["spec"]["scope"] == "Namespaced"
        assert crd["spec"]["names"]["categories"] == ["foundry"]
        (version,) = crd["spec"]["versions"]
        assert version["name"] == "v1alpha1" and version["served"] and version["storage"]
        assert version["subresources"] == {"status": {}}
    assert run["spec"]["names"]["plural"] == "foundryruns"
    assert run["spec"]["names"]["shortNames"] == ["fr", "frun"]
    assert approval["spec"]["names"]["plural"] == "foundryapprovals"
    assert approval["spec"]["names"]["shortNames"] == ["fa"]


@pytest.mark.parametrize("kind", ["FoundryRun", "FoundryApproval"])
def test_every_field_is_described(kind):
    undocumented = [path for path, node in _walk(_schema(kind)) if not str(node.get("description", "")).strip()]
    assert undocumented == []


@pytest.mark.parametrize("kind", ["FoundryRun", "FoundryApproval"])
def test_schema_is_structural(kind):
    # Every node has a type, and open maps are typed: no unknown-field escape hatches.
    for path, node in _walk(_schema(kind)):
        assert "type" in node, path
        assert not node.get("x-kubernetes-preserve-unknown-fields"), path
        bounded_by_server = path in (".apiVersion", ".kind") or "enum" in node or "format" in node
        if node["type"] == "string" and not bounded_by_server:
            assert "maxLength" in node, f"{path}: unbounded string"
        if node["type"] == "array":
            assert "maxItems" in node, f"{path}: unbounded list"


def test_status_phase_enum_is_exactly_the_domain_phases():
    enum = _at(_schema("FoundryRun"), "status.phase")["enum"]
    assert enum == [p.value for p in Phase]


@pytest.mark.parametrize("kind", ["FoundryRun", "FoundryApproval"])
def test_printer_columns_point_at_schema_fields(kind):
    (version,) = _by_kind()[kind]["spec"]["versions"]
    schema = _schema(kind)
    for column in version["additionalPrinterColumns"]:
        if column["jsonPath"].startswith(".metadata."):
            continue
        node = _at(schema, column["jsonPath"])
        assert node is not None, column
        assert node["type"] == column["type"], column


def test_run_identity_fields_are_immutable_by_cel():
    spec = _at(_schema("FoundryRun"), "spec")
    for field in ("tracker", "issueId", "attempt"):
        rules = spec["properties"][field]["x-kubernetes-validations"]
        assert {"rule": "self == oldSelf", "message": f"spec.{field} is immutable; it is part of the run's identity"} in rules
    # Keys change when issues move teams, so the key is validated but mutable.
    key_rules = [r["rule"] for r in spec["properties"]["issueKey"]["x-kubernetes-validations"]]
    assert "self == oldSelf" not in key_rules


def test_approval_spec_is_immutable_by_cel():
    rules = _at(_schema("FoundryApproval"), "spec")["x-kubernetes-validations"]
    assert [r["rule"] for r in rules] == ["self == oldSelf", "self.source != 'linear' || has(self.commentId)"]


def test_the_chart_can_ship_the_same_bytes():
    # The YAML is plain (no templating) so the Helm chart can copy it verbatim.
    for path in (REPO / "crds").glob("*.yaml"):
        assert "{{" not in path.read_text()


# --- against the real API server ---------------------------------------------

def _kubectl(control_plane, *args: str) -> str:
    proc = subprocess.run(
        [str(control_plane.kubectl), f"--kubeconfig={control_plane.kubeconfig}", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.mark.kube
def test_crds_are_established(kube_client, crds):
    assert sorted(crds) == ["foundryapprovals.foundry.dev", "foundryruns.foundry.dev"]
    api = client.ApiextensionsV1Api(kube_client)
    for name in crds:
        conditions = {c.type: c.status for c in api.read_custom_resource_definition(name).status.conditions}
        assert conditions["Established"] == "True"
        assert conditions["NamesAccepted"] == "True"
    # Applying again is a no-op, not an error (every replica may install at start).
    assert install_crds(kube_client, timeout=30) == crds


@pytest.mark.kube
def test_kubectl_get_prints_columns_with_values(control_plane, kube_client, crds, namespace):
    ticket = TicketSnapshot("linear", "0a7c4a52-3c55-4f0e-a3f1-6f5d2f1d9b11", "ACME-42", title="Add retries")
    result = create_or_attach(kube_client, namespace, build_run_manifest(ticket, 3, Trigger("webhook")))
    status = {
        "phase": "PROpen",
        "reason": "PullRequestOpened",
        "repo": "acme/payments",
        "approvals": {"required": 2, "received": 1, "summary": "1/2"},
        "pr": {"number": 1234, "url": "https://github.com/acme/payments/pull/1234"},
    }
    client.CustomObjectsApi(kube_client).patch_namespaced_custom_object_status(
        "foundry.dev", "v1alpha1", namespace, "foundryruns", result.name, {"status": status}
    )

    # The short names and the category all reach the resource (listing a
    # category prefixes each name with kind.group/).
    for resource, shown_name in [
        ("foundryruns", result.name),
        ("fr", result.name),
        ("frun", result.name),
        ("foundry", f"foundryrun.foundry.dev/{result.name}"),
    ]:
        lines = _kubectl(control_plane, "get", resource, "-n", namespace).splitlines()
        header, row = lines[0].split(), lines[1].split()
        assert header[:7] == ["NAME", "ISSUE", "PHASE", "REPO", "APPROVALS", "PR", "AGE"]
        assert row[:6] == [shown_name, "ACME-42", "PROpen", "acme/payments", "1/2", "1234"]

    wide = _kubectl(control_plane, "get", "fr", "-n", namespace, "-o", "wide").splitlines()
    columns = dict(zip(wide[0].split(), wide[1].split()))
    assert columns["ATTEMPT"] == "3" and columns["REASON"] == "PullRequestOpened"
    assert columns["PR-URL"] == "https://github.com/acme/payments/pull/1234"


@pytest.mark.kube
def test_kubectl_explain_shows_descriptions(control_plane, crds):
    spec = _kubectl(control_plane, "explain", "foundryrun.spec")
    assert "The issue this run works on" in spec
    assert "The human-readable issue key" in spec  # a field's description, not only the object's
    assert "stable, never-reused id of the issue" in spec
    field = _kubectl(control_plane, "explain", "foundryrun.spec.ticket.updatedAt")
    assert "When the tracker last changed the ticket" in field
    approval = _kubectl(control_plane, "explain", "fa.spec.decision")
    assert "approve counts towards the run's required approvals" in approval
