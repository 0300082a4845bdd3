"""The chart's lifecycle on the real node: pods really start, the migration really runs, `helm test`
really asks the bridge through its Service, and upgrades and rollbacks keep every run.

Images are Foundry's own, built locally (foundry.dev.images) and imported under the chart's names,
so the chart's defaults name them unchanged. The node has no storage provisioner: the bundled
PostgreSQL gets an emptyDir, or a hostPath PersistentVolume made here (persistence.storageClass "-").
No pod talks to anything off this machine: without credentials the operator calls nothing, and where
credentials are given the Linear/GitHub URLs point at a closed local port.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from pathlib import Path

import pytest
import yaml
from kubernetes import client

from foundry.db import migrate
from foundry.kube.runs import TicketSnapshot, build_run_manifest
from tests.support.helm_node import (StandalonePostgres, init_logs, load_chart_images, previous_chart,
                                       query_database, wait_release_ready, wait_rows)
from tests.support.helmchart import CHART, run_tool, set_args

pytestmark = [pytest.mark.node, pytest.mark.slow]

# Nothing may leave the machine: a closed port on the pod's own loopback.
NOWHERE = {"linear": {"api_url": "http://127.0.0.1:9/graphql"}, "github": {"api_url": "http://127.0.0.1:9"}}
CREDENTIALS = {"linearApiKey": "lin_test", "githubToken": "ghp_test", "linearWebhookSecret": "whsec-linear",
               "githubWebhookSecret": "whsec-github"}


@pytest.fixture(scope="module")
def images(real_node):
    return load_chart_images(real_node)


@pytest.fixture
def api(real_node):
    with real_node.api_client() as api:
        yield api


@pytest.fixture
def core(api):
    return client.CoreV1Api(api)


@pytest.fixture
def apps(api):
    return client.AppsV1Api(api)


@pytest.fixture(scope="module")
def crds_installed(real_node):
    # The chart installs its CRDs itself (crds/); nothing to do but make sure nothing stale is around.
    return True


def helm(real_node, *args, timeout: float = 420, check: bool = True):
    return run_tool([real_node.helm, "--kubeconfig", real_node.kubeconfig, *args], timeout=timeout, check=check)


def install(real_node, chart: Path, release: str, namespace: str, values: dict, *, verb: str = "install"):
    return helm(real_node, verb, release, str(chart), "-n", namespace, "--wait", "--timeout", "300s",
                *set_args(values))


def uninstall(real_node, release: str, namespace: str) -> None:
    helm(real_node, "uninstall", release, "-n", namespace, "--wait", "--timeout", "120s", check=False)


def create_run(api, namespace: str, issue: str) -> dict:
    ticket = TicketSnapshot(tracker="linear", issue_id=f"issue-{issue}", issue_key=f"ACME-{issue}",
                            title="Greet the world", description="Please greet.", team_key="ACME",
                            updated_at="2026-01-01T00:00:00Z", labels=("foundry",))
    body = build_run_manifest(ticket, 1, namespace=namespace)
    return client.CustomObjectsApi(api).create_namespaced_custom_object("foundry.dev", "v1alpha1", namespace,
                                                                        "foundryruns", body)


def read_run(api, namespace: str, name: str) -> dict:
    return client.CustomObjectsApi(api).get_namespaced_custom_object("foundry.dev", "v1alpha1", namespace,
                                                                     "foundryruns", name)


def run_row_sql(name: str) -> str:
    return f"SELECT id, name, phase, issue_key FROM foundry_runs WHERE name = '{name}'"


def secret_value(core, namespace: str, name: str, key: str) -> str:
    import base64

    return base64.b64decode(core.read_namespaced_secret(name, namespace).data[key]).decode()


def job_created_events(core, namespace: str, job: str) -> int:
    events = core.list_namespaced_event(namespace, field_selector=f"involvedObject.kind=Job,involvedObject.name={job}")
    return sum(1 for e in events.items if e.reason == "SuccessfulCreate")


def wait_replaced_and_ready(core, namespace: str, name: str, old_uid: str, timeout: float = 180) -> None:
    """The StatefulSet's status can still say "ready" for the deleted pod: wait for its successor."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            p = core.read_namespaced_pod(name, namespace)
        except client.ApiException as err:
            if err.status != 404:
                raise
        else:
            if p.metadata.uid != old_uid and not p.metadata.deletion_timestamp and any(
                    c.type == "Ready" and c.status == "True" for c in p.status.conditions or []):
                return
        time.sleep(0.5)
    raise AssertionError(f"{namespace}/{name} was not replaced by a Ready pod in {timeout}s")


def helm_test(real_node, release: str, namespace: str) -> str:
    # The pod exits 0 only on /readyz 200 with every check "ok"; it is deleted when it succeeds, so
    # its log is not fetched (--logs would race the deletion).
    out = helm(real_node, "test", release, "-n", namespace, "--timeout", "180s").stdout
    assert f"TEST SUITE:     {release}-foundry-test-bridge-ready" in out and "Phase:          Succeeded" in out, out
    return out


# ---------------------------------------------------------------- defaults, then upgrade and rollback keep every run

@pytest.fixture
def host_volume(real_node, api, node_namespace):
    """A hostPath PersistentVolume for the bundled database, its directory owned by the postgres uid."""
    path = Path(os.environ.get("FOUNDRY_TEST_PV_ROOT", "/var/tmp")) / f"foundry-pv-{uuid.uuid4().hex[:8]}"
    path.mkdir(mode=0o700)
    os.chown(path, 999, 999)
    name = f"pv-{node_namespace}"
    core = client.CoreV1Api(api)
    core.create_persistent_volume(client.V1PersistentVolume(
        metadata=client.V1ObjectMeta(name=name, labels={"foundry.dev/pv": name}),
        spec=client.V1PersistentVolumeSpec(
            capacity={"storage": "1Gi"}, access_modes=["ReadWriteOnce"], storage_class_name="",
            persistent_volume_reclaim_policy="Retain",
            host_path=client.V1HostPathVolumeSource(path=str(path), type="Directory"))))
    yield {"postgresql": {"persistence": {"storageClass": "-", "size": "1Gi",
                                          "selector": {"matchLabels": {"foundry.dev/pv": name}}}}}
    try:
        core.delete_persistent_volume(name)
    except client.ApiException:
        pass
    shutil.rmtree(path, ignore_errors=True)


def test_install_with_defaults_then_upgrade_and_rollback_keep_the_run_its_row_and_the_password(
        real_node, images, api, core, apps, node_namespace, host_volume):
    # One release's life: installed with the defaults (but for the volume: the node has no storage
    # provisioner, so the bundled database's claim binds a hostPath volume made here), used, upgraded,
    # rolled back, its database pod replaced. One install serves it all: installs are what cost here.
    ns, release = node_namespace, "fd"
    values = {**host_volume}
    started = time.monotonic()
    install(real_node, CHART, release, ns, values)
    installed_in = time.monotonic() - started
    wait_release_ready(core, apps, ns, release)

    sts = apps.read_namespaced_stateful_set(f"{release}-foundry-postgresql", ns)
    assert sts.status.ready_replicas == 1
    assert sts.spec.template.spec.containers[0].image == "docker.io/library/postgres:15"
    for name in ("operator", "bridge"):
        dep = apps.read_namespaced_deployment(f"{release}-foundry-{name}", ns)
        assert dep.status.ready_replicas == dep.spec.replicas >= 1, name
    # The schema was made by the pods' init containers, once each, and reached the head.
    head = migrate.head_revision()
    logs = init_logs(core, ns, f"app.kubernetes.io/instance={release},app.kubernetes.io/component in (operator,bridge)",
                     "migrate")
    # Two operator replicas (leader election: one leads, one stands by, both ready) and two bridges.
    assert len(logs) == 4 and all(f"database at {head} (head)" in text for text in logs), logs
    db_secret = f"{release}-foundry-database"
    assert query_database(core, ns, db_secret, "database-url",
                          "SELECT version_num FROM alembic_version") == [{"version_num": head}]

    # Without credentials the operator runs, and says what it lacks.
    op_pod = core.list_namespaced_pod(ns, label_selector=f"app.kubernetes.io/instance={release},"
                                                         "app.kubernetes.io/component=operator").items[0]
    op_log = core.read_namespaced_pod_log(op_pod.metadata.name, ns, container="operator")
    assert "FOUNDRY_LINEAR_API_KEY is not set (chart value secrets.linearApiKey)" in op_log
    status = json.loads(helm(real_node, "status", release, "-n", ns, "-o", "json").stdout)
    assert status["info"]["status"] == "deployed"
    assert "  - secrets.linearApiKey" in status["info"]["notes"]
    helm_test(real_node, release, ns)
    print(f"\n[helm-node] defaults: install --wait {installed_in:.1f}s")

    password = secret_value(core, ns, db_secret, "password")
    webhook = secret_value(core, ns, f"{release}-foundry-secrets", "github-webhook-secret")
    run = create_run(api, ns, "4201")
    name = run["metadata"]["name"]
    # The operator claims the run in the database first (then waits for Linear credentials).
    (row,) = wait_rows(core, ns, db_secret, "database-url", run_row_sql(name))
    assert row["issue_key"] == "ACME-4201"

    # Upgrade with changed values: the migration hook runs (the database exists now), the pods roll.
    upgraded = {**values, "bridge": {"replicas": 1}, "config": NOWHERE}
    install(real_node, CHART, release, ns, upgraded, verb="upgrade")
    wait_release_ready(core, apps, ns, release)
    assert job_created_events(core, ns, f"{release}-foundry-migrate") == 1, "the pre-upgrade hook ran once"
    assert apps.read_namespaced_deployment(f"{release}-foundry-bridge", ns).spec.replicas == 1
    assert secret_value(core, ns, db_secret, "password") == password
    assert secret_value(core, ns, f"{release}-foundry-secrets", "github-webhook-secret") == webhook
    assert read_run(api, ns, name)["metadata"]["uid"] == run["metadata"]["uid"]
    assert [r["id"] for r in query_database(core, ns, db_secret, "database-url", run_row_sql(name))] == [row["id"]]

    helm(real_node, "rollback", release, "1", "-n", ns, "--wait", "--timeout", "300s")
    wait_release_ready(core, apps, ns, release)
    assert apps.read_namespaced_deployment(f"{release}-foundry-bridge", ns).spec.replicas == 2
    assert secret_value(core, ns, db_secret, "password") == password
    assert read_run(api, ns, name)["metadata"]["uid"] == run["metadata"]["uid"]

    # The rows live on the volume: a new database pod finds them.
    db_pod = f"{release}-foundry-postgresql-0"
    old_uid = core.read_namespaced_pod(db_pod, ns).metadata.uid
    core.delete_namespaced_pod(db_pod, ns)
    wait_replaced_and_ready(core, ns, db_pod, old_uid)
    wait_release_ready(core, apps, ns, release)
    assert [r["id"] for r in query_database(core, ns, db_secret, "database-url", run_row_sql(name))] == [row["id"]]
    history = json.loads(helm(real_node, "history", release, "-n", ns, "-o", "json").stdout)
    assert [h["status"] for h in history] == ["superseded", "superseded", "deployed"]
    uninstall(real_node, release, ns)


# ---------------------------------------------------------------- an external PostgreSQL, and the previous chart

@pytest.fixture
def external_pg(core, node_namespace, images):
    return StandalonePostgres(core, node_namespace).start()


def test_external_postgresql_gets_the_pre_install_hook_and_no_bundled_database(real_node, images, api, core, apps,
                                                                               node_namespace, external_pg):
    ns, release = node_namespace, "fx"
    values = {"externalDatabase": {"url": external_pg.url}, "secrets": CREDENTIALS, "config": NOWHERE}
    install(real_node, CHART, release, ns, values)
    wait_release_ready(core, apps, ns, release)
    assert not apps.list_namespaced_stateful_set(ns).items
    assert job_created_events(core, ns, f"{release}-foundry-migrate") == 1, "the pre-install hook ran"
    assert query_database(core, ns, f"{release}-foundry-database", "database-url",
                          "SELECT version_num FROM alembic_version") == [{"version_num": migrate.head_revision()}]
    status = json.loads(helm(real_node, "status", release, "-n", ns, "-o", "json").stdout)
    assert "WARNING" not in status["info"]["notes"]
    helm_test(real_node, release, ns)
    uninstall(real_node, release, ns)


def test_upgrade_from_the_previous_chart_version_then_rollback(real_node, images, api, core, apps, node_namespace,
                                                               external_pg, tmp_path):
    ns, release = node_namespace, "fp"
    old_chart, old_version, commit = previous_chart(tmp_path)
    new_version = yaml.safe_load((CHART / "Chart.yaml").read_text())["version"]
    assert old_version != new_version
    # The previous chart's values: the URL in secrets.databaseUrl, every credential given.
    values = {"secrets": {**CREDENTIALS, "databaseUrl": external_pg.url}, "config": NOWHERE}
    install(real_node, old_chart, release, ns, values)
    wait_release_ready(core, apps, ns, release)
    old_secret = f"{release}-foundry-secrets"  # where 0.1.0 kept the URL
    run = create_run(api, ns, "4202")
    name = run["metadata"]["name"]
    (row,) = wait_rows(core, ns, old_secret, "database-url", run_row_sql(name))

    # The same values on the new chart: secrets.databaseUrl still means that external database.
    install(real_node, CHART, release, ns, {**values, "bridge": {"replicas": 1}}, verb="upgrade")
    wait_release_ready(core, apps, ns, release)
    assert not apps.list_namespaced_stateful_set(ns).items, "no bundled database appeared"
    assert job_created_events(core, ns, f"{release}-foundry-migrate") == 2, "install and upgrade hooks"
    assert read_run(api, ns, name)["metadata"]["uid"] == run["metadata"]["uid"]
    assert [r["id"] for r in query_database(core, ns, f"{release}-foundry-database", "database-url",
                                            run_row_sql(name))] == [row["id"]]
    helm_test(real_node, release, ns)

    helm(real_node, "rollback", release, "1", "-n", ns, "--wait", "--timeout", "300s")
    wait_release_ready(core, apps, ns, release)
    history = json.loads(helm(real_node, "history", release, "-n", ns, "-o", "json").stdout)
    assert [(h["chart"], h["status"]) for h in history] == [
        (f"foundry-{old_version}", "superseded"), (f"foundry-{new_version}", "superseded"),
        (f"foundry-{old_version}", "deployed")], commit
    assert read_run(api, ns, name)["metadata"]["uid"] == run["metadata"]["uid"]
    assert [r["id"] for r in query_database(core, ns, old_secret, "database-url", run_row_sql(name))] == [row["id"]]
    uninstall(real_node, release, ns)
