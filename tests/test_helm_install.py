"""`helm install` and `helm upgrade` of the chart into the real API server.

The local control plane has no kubelet: Deployments get no pods and the
migration hook Job would never run. tests.support.helmchart.HookPlayer plays
the kubelet for the hook: it runs the Job's own args with the real `foundry`
command against the real PostgreSQL (the URL read from the hook's Secret through
the API) and writes the Job's status, so helm waits for the hook exactly as in
a cluster. The same tests run against a real cluster (FOUNDRY_TEST_KUBECONFIG,
tools/kind-e2e.sh), where the Job runs for real and the player stays out.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid

import pytest
import yaml
from kubernetes import client

from foundry.db import migrate
from foundry.dev.controlplane import ControlPlane
from tests.support.helmchart import CHART, FIXTURES, HookPlayer, run_tool, set_args

pytestmark = [pytest.mark.kube, pytest.mark.postgres, pytest.mark.slow]

PREVIOUS = FIXTURES / "foundry-0.0.9"
# The schema head of the image that chart 0.0.9 shipped (Foundry 0.0.9).
PREVIOUS_HEAD = "0001_tables"


def _local(control_plane) -> bool:
    return isinstance(control_plane, ControlPlane)


def _database_url(control_plane, pg_url: str) -> str:
    """The URL the pods use. In a real cluster (tools/kind-e2e.sh) PostgreSQL runs inside it: the tests
    reach it through a port-forward, the pods by the in-cluster host:port in FOUNDRY_E2E_DATABASE_HOST."""
    if _local(control_plane):
        return pg_url
    from sqlalchemy.engine import make_url

    host, _, port = os.environ["FOUNDRY_E2E_DATABASE_HOST"].partition(":")
    return make_url(pg_url).set(host=host, port=int(port or 5432)).render_as_string(hide_password=False)


def _values(control_plane, pg_url: str) -> dict:
    values = {"secrets": {"databaseUrl": _database_url(control_plane, pg_url), "linearApiKey": "lin_test",
                          "githubToken": "ghp_test", "linearWebhookSecret": "whsec-linear",
                          "githubWebhookSecret": "whsec-github"}}
    if os.environ.get("FOUNDRY_E2E_IMAGE"):
        repo, tag = os.environ["FOUNDRY_E2E_IMAGE"].rsplit(":", 1)
        values["image"] = {"repository": repo, "tag": tag, "pullPolicy": "Never"}
    return values


def _helm(control_plane, *args) -> subprocess.CompletedProcess:
    return run_tool([control_plane.helm, "--kubeconfig", control_plane.kubeconfig, *args], timeout=300)


def _manifest_objects(control_plane, release: str, namespace: str) -> list[dict]:
    out = _helm(control_plane, "get", "manifest", release, "-n", namespace).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def _exists(control_plane, obj: dict, namespace: str) -> bool:
    kind = obj["kind"]
    args = [control_plane.kubectl, "--kubeconfig", control_plane.kubeconfig, "get", kind, obj["metadata"]["name"], "-o", "name"]
    if obj["metadata"].get("namespace"):
        args += ["-n", obj["metadata"]["namespace"]]
    return run_tool(args, check=False).returncode == 0


def _tables(url: str) -> set[str]:
    from sqlalchemy import create_engine, inspect

    engine = create_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def _install(control_plane, kube_client, chart, release, namespace, values, tmp_path, **player):
    args = ["upgrade", "--install", release, chart, "-n", namespace, "--timeout", "120s", *set_args(values)]
    if not _local(control_plane):
        _helm(control_plane, *args, "--wait")
        return None
    with HookPlayer(kube_client, namespace, tmp_path, **player) as hooks:
        _helm(control_plane, *args)
    return hooks


def test_install_creates_every_object_and_the_crds_are_established(control_plane, kube_client, namespace, pg_url,
                                                                   tmp_path):
    release = "fi"
    hooks = _install(control_plane, kube_client, CHART, release, namespace, _values(control_plane, pg_url), tmp_path)
    if hooks is not None:
        assert [h["args"][:2] for h in hooks.ran] == [["db", "upgrade"]], hooks.ran
        assert hooks.ran[0]["returncode"] == 0, hooks.ran[0]["output"]
    assert migrate.current_revision(pg_url) == migrate.head_revision()

    status = json.loads(_helm(control_plane, "status", release, "-n", namespace, "-o", "json").stdout)
    assert status["info"]["status"] == "deployed"
    assert "WARNING" not in status["info"]["notes"]  # every credential was given
    objects = _manifest_objects(control_plane, release, namespace)
    kinds = {o["kind"] for o in objects}
    assert {"Deployment", "Service", "ServiceAccount", "Role", "RoleBinding", "ConfigMap", "Secret",
            "PodDisruptionBudget", "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"} <= kinds
    missing = [f"{o['kind']}/{o['metadata']['name']}" for o in objects if not _exists(control_plane, o, namespace)]
    assert not missing, f"not created: {missing}"

    # The hook's own objects are gone after success (hook-delete-policy hook-succeeded).
    batch = client.BatchV1Api(kube_client)
    deadline = time.monotonic() + 20
    while batch.list_namespaced_job(namespace).items and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [j.metadata.name for j in batch.list_namespaced_job(namespace).items if not j.metadata.deletion_timestamp]

    ext = client.ApiextensionsV1Api(kube_client)
    for path in sorted((CHART / "crds").glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        live = ext.read_custom_resource_definition(crd["metadata"]["name"])
        conditions = {c.type: c.status for c in live.status.conditions}
        assert conditions.get("Established") == "True", (crd["metadata"]["name"], conditions)
        served = kube_client.sanitize_for_serialization(live.spec.versions)
        assert [v["schema"] for v in served] == [v["schema"] for v in crd["spec"]["versions"]]


def test_upgrade_from_previous_chart_runs_the_migration_once_before_the_new_pods(
        control_plane, kube_client, namespace, pg_url, tmp_path):
    release = "fu"
    values = _values(control_plane, pg_url)
    apps = client.AppsV1Api(kube_client)

    first = _install(control_plane, kube_client, PREVIOUS, release, namespace, values, tmp_path / "first",
                     pinned={"0.0.9": PREVIOUS_HEAD})
    if first is None:
        pytest.skip("the previous image is not available to a real cluster; the upgrade is proven locally")
    assert [h["returncode"] for h in first.ran] == [0]
    assert migrate.current_revision(pg_url) == PREVIOUS_HEAD

    # Data written by the old version must survive the migration.
    before = _tables(pg_url)

    templates_when_hook_ran = []

    def observe(job: dict) -> None:
        for name in (f"{release}-foundry-operator", f"{release}-foundry-bridge"):
            dep = apps.read_namespaced_deployment(name, namespace)
            templates_when_hook_ran.append(dep.spec.template.metadata.labels["app.kubernetes.io/version"])

    second = _install(control_plane, kube_client, CHART, release, namespace, values, tmp_path / "second",
                      on_job=observe)
    # The hook ran once, with the new image's command, before the Deployments changed.
    assert len(second.ran) == 1 and second.ran[0]["args"][:2] == ["db", "upgrade"], second.ran
    assert second.ran[0]["returncode"] == 0, second.ran[0]["output"]
    assert templates_when_hook_ran == ["0.0.9", "0.0.9"]
    assert migrate.current_revision(pg_url) == migrate.head_revision() != PREVIOUS_HEAD
    assert before <= _tables(pg_url)

    for name in (f"{release}-foundry-operator", f"{release}-foundry-bridge"):
        dep = apps.read_namespaced_deployment(name, namespace)
        assert dep.spec.template.metadata.labels["app.kubernetes.io/version"] == "0.1.0"
        assert dep.spec.template.spec.containers[0].image.endswith(":0.1.0")
    history = json.loads(_helm(control_plane, "history", release, "-n", namespace, "-o", "json").stdout)
    chart_version = yaml.safe_load((CHART / "Chart.yaml").read_text())["version"]
    assert [(h["chart"], h["status"]) for h in history] == [("foundry-0.0.9", "superseded"),
                                                             (f"foundry-{chart_version}", "deployed")]
    # What 0.1.0 added exists now (the admission policy is cluster-scoped).
    policies = client.AdmissionregistrationV1Api(kube_client).list_validating_admission_policy().items
    assert f"{release}-foundry-{namespace}-approver-identity" in {p.metadata.name for p in policies}


def test_failed_migration_fails_the_upgrade_and_keeps_the_old_pods(control_plane, kube_client, namespace, pg_url,
                                                                   tmp_path):
    if not _local(control_plane):
        pytest.skip("needs the hook player to break the database URL")
    release = "ff"
    values = _values(control_plane, pg_url)
    _install(control_plane, kube_client, CHART, release, namespace, values, tmp_path / "ok")
    broken = json.loads(json.dumps(values))
    # A database that refuses the connection: the migration exits non-zero.
    broken["secrets"]["databaseUrl"] = f"postgresql+psycopg://nobody:wrong@127.0.0.1:1/{uuid.uuid4().hex[:8]}"
    broken["bridge"] = {"replicas": 3}
    # It waits for a database that refuses connections (one still starting), then gives up.
    broken["migration"] = {"waitSeconds": 5}
    with HookPlayer(kube_client, namespace, tmp_path / "bad") as hooks:
        proc = run_tool([control_plane.helm, "--kubeconfig", control_plane.kubeconfig, "upgrade", release, CHART,
                         "-n", namespace, "--timeout", "60s", *set_args(broken)], check=False, timeout=120)
    assert proc.returncode != 0 and "pre-upgrade hooks failed" in proc.stderr, proc.stderr
    assert hooks.ran[0]["returncode"] != 0 and "cannot use the database" in hooks.ran[0]["output"]
    # The release's Deployments were not touched.
    dep = client.AppsV1Api(kube_client).read_namespaced_deployment(f"{release}-foundry-bridge", namespace)
    assert dep.spec.replicas == 2
