"""The chart with no values: a bundled PostgreSQL, generated secrets, pods that can start; the
external-database variants; the schema refusing what cannot work, naming the value; the agent
namespace and NetworkPolicy. Rendered by the real helm; the lookups (a password kept across upgrade
and rollback, the migration hook on upgrade only) against the real API server."""

from __future__ import annotations

import base64
import json

import pytest
import yaml
from kubernetes import client

from foundry.agents.job_manifest import labels as agent_labels
from foundry.dev.binaries import control_plane_bin_dir
from tests.support.helmchart import (CHART, KUBE_VERSION, by_kind, one, pod_specs, render, render_notes, run_tool,
                                       set_args, template)

EXTERNAL_URL = "postgresql+psycopg://app:s3cret@db.example.com:5432/foundry"


@pytest.fixture(scope="module")
def helm():
    return control_plane_bin_dir(build=True) / "helm"


@pytest.fixture(scope="module")
def defaults(helm):
    return render(helm, release="rel", namespace="foundry")


def _env(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


def _secret_data(secret: dict) -> dict[str, str]:
    return dict(secret.get("stringData") or {})


# ---------------------------------------------------------------- defaults: bundled PostgreSQL

def test_defaults_run_a_bundled_postgresql(defaults):
    sts = one(defaults, "StatefulSet", "-postgresql")
    spec = sts["spec"]
    assert spec["replicas"] == 1 and spec["serviceName"] == "rel-foundry-postgresql-hl"
    (claim,) = spec["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "data" and claim["spec"]["resources"]["requests"]["storage"] == "8Gi"
    assert "storageClassName" not in claim["spec"], "the cluster's default StorageClass"
    assert spec["persistentVolumeClaimRetentionPolicy"] == {"whenDeleted": "Retain", "whenScaled": "Retain"}

    pod = spec["template"]["spec"]
    (pg,) = pod["containers"]
    assert pg["image"] == "docker.io/library/postgres:15"
    assert pg["readinessProbe"]["exec"]["command"][0] == "pg_isready"
    mounts = {m["mountPath"]: m["name"] for m in pg["volumeMounts"]}
    assert mounts["/var/lib/postgresql/data"] == "data"
    env = _env(pg)
    assert env["PGDATA"]["value"].startswith("/var/lib/postgresql/data/"), "a subdirectory of the volume"
    assert env["POSTGRES_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "rel-foundry-database", "key": "password"}
    # Restricted Pod Security: what the admission checks.
    psc, sc = pod["securityContext"], pg["securityContext"]
    assert psc["runAsNonRoot"] is True and psc["runAsUser"] == 999 and psc["fsGroup"] == 999
    assert psc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["readOnlyRootFilesystem"] is True and pod["automountServiceAccountToken"] is False

    services = {s["metadata"]["name"]: s["spec"] for s in by_kind(defaults, "Service")}
    assert services["rel-foundry-postgresql"]["type"] == "ClusterIP"
    assert services["rel-foundry-postgresql-hl"]["clusterIP"] == "None"
    for name in ("rel-foundry-postgresql", "rel-foundry-postgresql-hl"):
        assert services[name]["selector"] == spec["selector"]["matchLabels"]
        assert services[name]["ports"][0]["port"] == 5432

    secret = one(defaults, "Secret", "-database")
    data = _secret_data(secret)
    assert len(data["password"]) == 32 and data["password"].isalnum()
    assert data["database-url"] == f"postgresql+psycopg://foundry:{data['password']}@rel-foundry-postgresql:5432/foundry"
    assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"


def test_defaults_make_the_schema_in_the_pods_and_run_no_install_hook(defaults):
    # The database does not exist before the install: no pre-install hook could reach it.
    assert not by_kind(defaults, "Job")
    for name in ("-operator", "-bridge"):
        pod = one(defaults, "Deployment", name)["spec"]["template"]["spec"]
        (init,) = pod["initContainers"]
        assert init["name"] == "migrate" and init["args"] == ["db", "upgrade", "--wait", "300"]
        for c in (init, pod["containers"][0]):
            assert _env(c)["FOUNDRY_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {
                "name": "rel-foundry-database", "key": "database-url"}


def test_no_pod_can_be_stuck_on_a_missing_secret_key(defaults):
    """Every secretKeyRef that is not optional names a key the chart itself renders: nothing can end
    in CreateContainerConfigError with no values."""
    rendered = {(s["metadata"]["name"], key) for s in by_kind(defaults, "Secret") for key in _secret_data(s)}
    for where, spec in pod_specs(defaults).items():
        for c in spec.get("initContainers", []) + spec["containers"]:
            for e in c.get("env", []):
                ref = (e.get("valueFrom") or {}).get("secretKeyRef")
                if ref and not ref.get("optional"):
                    assert (ref["name"], ref["key"]) in rendered, (where, c["name"], e["name"])
    operator = one(defaults, "Deployment", "-operator")["spec"]["template"]["spec"]["containers"][0]
    for name in ("FOUNDRY_LINEAR_API_KEY", "FOUNDRY_GITHUB_TOKEN"):
        assert _env(operator)[name]["valueFrom"]["secretKeyRef"]["optional"] is True
    # The bridge needs one webhook secret: GitHub's is generated (GitHub lets you choose it); so is the audit key.
    generated = _secret_data(one(defaults, "Secret", "-secrets"))
    assert set(generated) == {"github-webhook-secret", "audit-key"} and len(generated["github-webhook-secret"]) == 40
    assert len(generated["audit-key"]) == 48
    assert _env(operator)["FOUNDRY_AUDIT_KEY"]["valueFrom"]["secretKeyRef"]["optional"] is True


def test_storage_for_a_cluster_without_a_provisioner(helm):
    objs = render(helm, values={"postgresql": {"persistence": {"enabled": False}}})
    spec = one(objs, "StatefulSet", "-postgresql")["spec"]
    assert "volumeClaimTemplates" not in spec and "persistentVolumeClaimRetentionPolicy" not in spec
    volumes = {v["name"]: v for v in spec["template"]["spec"]["volumes"]}
    assert volumes["data"] == {"name": "data", "emptyDir": {}}

    # A PersistentVolume made by hand (hostPath on a one-node test bed): no class, matched by label.
    objs = render(helm, values={"postgresql": {"persistence": {"storageClass": "-", "size": "1Gi",
                                                               "selector": {"matchLabels": {"pv": "foundry-db"}}}}})
    (claim,) = one(objs, "StatefulSet", "-postgresql")["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["storageClassName"] == "" and claim["spec"]["selector"] == {"matchLabels": {"pv": "foundry-db"}}
    assert claim["spec"]["resources"]["requests"]["storage"] == "1Gi"


# ---------------------------------------------------------------- external databases

@pytest.mark.parametrize("values", [{"externalDatabase": {"url": EXTERNAL_URL}}, {"secrets": {"databaseUrl": EXTERNAL_URL}}],
                         ids=["externalDatabase.url", "secrets.databaseUrl (0.1.0 spelling)"])
def test_an_external_url_turns_the_bundled_database_off(helm, values):
    objs = render(helm, values=values)
    assert not by_kind(objs, "StatefulSet")
    assert not [s for s in by_kind(objs, "Service") if "postgresql" in s["metadata"]["name"]]
    assert _secret_data(one(objs, "Secret", "-database")) == {"database-url": EXTERNAL_URL}
    job = one(objs, "Job", "-migrate")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    hook_secret = one(objs, "Secret", "-migration")
    assert _secret_data(hook_secret) == {"database-url": EXTERNAL_URL}
    assert _env(job["spec"]["template"]["spec"]["containers"][0])["FOUNDRY_DATABASE_URL"]["valueFrom"][
        "secretKeyRef"]["name"] == hook_secret["metadata"]["name"]
    for name in ("-operator", "-bridge"):
        pod = one(objs, "Deployment", name)["spec"]["template"]["spec"]
        assert "initContainers" not in pod, "the pre-install hook made the schema"


def test_an_external_secret_is_read_where_it_is(helm):
    objs = render(helm, values={"externalDatabase": {"existingSecret": "managed-pg", "existingSecretKey": "uri"}})
    assert not by_kind(objs, "StatefulSet")
    assert not [s for s in by_kind(objs, "Secret") if s["metadata"]["name"].endswith(("-database", "-migration"))]
    job = one(objs, "Job", "-migrate")
    refs = [_env(c)["FOUNDRY_DATABASE_URL"]["valueFrom"]["secretKeyRef"]
            for c in [job["spec"]["template"]["spec"]["containers"][0]]
            + [one(objs, "Deployment", n)["spec"]["template"]["spec"]["containers"][0] for n in ("-operator", "-bridge")]]
    assert refs == [{"name": "managed-pg", "key": "uri"}] * 3


def test_changing_the_database_restarts_the_pods(helm):
    def checksum(values):
        dep = one(render(helm, values=values), "Deployment", "-operator")
        return dep["spec"]["template"]["metadata"]["annotations"]["checksum/database"]

    bundled, a, b = checksum({}), checksum({"externalDatabase": {"url": EXTERNAL_URL}}), \
        checksum({"externalDatabase": {"url": EXTERNAL_URL.replace("s3cret", "rotated")}})
    assert len({bundled, a, b}) == 3
    assert checksum({}) == bundled, "the bundled database's checksum must not change with its random password"


# ---------------------------------------------------------------- the schema names what is missing or wrong

@pytest.mark.parametrize(
    ("values", "expected"),
    [
        # No database at all.
        ({"postgresql": {"enabled": False}}, ["/externalDatabase/url", "/externalDatabase/existingSecret"]),
        ({"externalDatabase": {"url": "mysql://db/foundry"}}, ["/externalDatabase/url"]),
        ({"externalDatabase": {"existingSecretKey": ""}}, ["/externalDatabase/existingSecretKey"]),
        ({"postgresql": {"podSecurityContext": {"runAsNonRoot": False, "runAsUser": 999}}},
         ["/postgresql/podSecurityContext/runAsNonRoot"]),
        ({"postgresql": {"persistence": {"size": "lots"}}}, ["/postgresql/persistence/size"]),
        ({"postgresql": {"image": {"tag": ""}}}, ["/postgresql/image/tag"]),
        ({"migration": {"waitSeconds": -1}}, ["/migration/waitSeconds"]),
        # A namespace to create needs its name (config.agent.namespace).
        ({"agent": {"createNamespace": True}}, ["/config", "agent"]),
        ({"agent": {"networkPolicy": {"gitHost": {"cidrs": ["github.com"], "ports": [443]}}}},
         ["/agent/networkPolicy/gitHost/cidrs/0"]),
        ({"agent": {"networkPolicy": {"modelApi": {"cidrs": ["10.0.0.1/32"], "ports": []}}}},
         ["/agent/networkPolicy/modelApi/ports"]),
    ],
)
def test_the_schema_refuses_naming_the_value(helm, values, expected):
    proc = template(helm, values=values, check=False)
    assert proc.returncode != 0, proc.stdout[:500]
    assert "values don't meet the specifications of the schema" in proc.stderr
    for text in expected:
        assert text in proc.stderr, proc.stderr


def test_an_agent_namespace_of_its_own_is_refused_when_it_is_runnamespace(helm):
    proc = template(helm, values={"agent": {"createNamespace": True}, "config": {"agent": {"namespace": "foundry"}}},
                    check=False)
    assert proc.returncode != 0 and "set config.agent.namespace to a namespace of the agents' own" in proc.stderr


def test_the_floor_is_the_tested_kubernetes(helm):
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["kubeVersion"] == ">=1.35.0-0" and KUBE_VERSION.startswith("1.35.")
    proc = run_tool([helm, "template", "rel", CHART, "--kube-version", "1.34.2"], check=False)
    assert proc.returncode != 0 and "incompatible with Kubernetes v1.34.2" in proc.stderr, proc.stderr


# ---------------------------------------------------------------- agent namespace and NetworkPolicy

AGENTS = {"config": {"agent": {"namespace": "foundry-agents"}}, "agent": {"createNamespace": True}}


def test_the_agent_namespace_enforces_restricted_pod_security(helm):
    objs = render(helm, values=AGENTS)
    ns = one(objs, "Namespace")
    assert ns["metadata"]["name"] == "foundry-agents"
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert ns["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    sa = one(objs, "ServiceAccount", "-agent")
    assert sa["metadata"]["namespace"] == "foundry-agents" and sa["automountServiceAccountToken"] is False


def test_the_network_policy_selects_the_agent_pods_and_allows_only_dns_git_and_model(helm):
    values = {**AGENTS, "agent": {"createNamespace": True, "networkPolicy": {
        "gitHost": {"cidrs": ["140.82.112.0/20"], "ports": [443, 22]},
        "modelApi": {"cidrs": ["160.79.104.0/23"], "ports": [443]}}}}
    policy = one(render(helm, values=values), "NetworkPolicy")
    spec = policy["spec"]
    assert policy["metadata"]["namespace"] == "foundry-agents"
    assert set(spec["policyTypes"]) == {"Ingress", "Egress"} and spec["ingress"] == []
    # The selector matches what the operator puts on every agent pod.
    run = {"metadata": {"name": "linear-acme-1-1", "namespace": "foundry", "uid": "u1", "labels": {}}}
    pod_labels = agent_labels(run, 1)
    assert spec["podSelector"]["matchLabels"].items() <= pod_labels.items()
    dns, *rest = spec["egress"]
    assert {(p["port"], p["protocol"]) for p in dns["ports"]} == {(53, "UDP"), (53, "TCP")}
    assert dns["to"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}}}]
    allowed = {(b["ipBlock"]["cidr"], p["port"]) for rule in rest for b in rule["to"] for p in rule["ports"]}
    assert allowed == {("140.82.112.0/20", 443), ("140.82.112.0/20", 22), ("160.79.104.0/23", 443)}
    assert all("except" not in b["ipBlock"] for rule in rest for b in rule["to"]), "except only narrows 0.0.0.0/0"


def test_by_default_agents_reach_https_on_public_addresses_only(defaults):
    spec = one(defaults, "NetworkPolicy")["spec"]
    for rule in spec["egress"][1:]:
        assert [p["port"] for p in rule["ports"]] == [443]
        (block,) = [b["ipBlock"] for b in rule["to"]]
        assert block["cidr"] == "0.0.0.0/0"
        assert {"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16"} <= set(block["except"])


# ---------------------------------------------------------------- NOTES

def test_notes_tell_the_next_steps_and_what_is_still_missing(helm):
    notes = render_notes(helm, release="rel", namespace="foundry")
    assert "the bundled PostgreSQL (StatefulSet rel-foundry-postgresql" in notes
    for value in ("secrets.linearApiKey", "secrets.githubToken", "secrets.linearWebhookSecret"):
        assert f"  - {value}" in notes
    assert "kubectl -n foundry port-forward svc/rel-foundry-bridge 8080:80" in notes
    assert "get secret rel-foundry-secrets -o jsonpath='{.data.github-webhook-secret}' | base64 -d" in notes
    assert "foundry approve RUN -n foundry" in notes
    assert "logs deploy/rel-foundry-operator" in notes and "helm test rel -n foundry" in notes

    full = render_notes(helm, release="rel", namespace="foundry", values={
        "externalDatabase": {"url": EXTERNAL_URL},
        "secrets": {"linearApiKey": "k", "githubToken": "t", "linearWebhookSecret": "w", "githubWebhookSecret": "g"}})
    assert "WARNING" not in full and "Database: external (externalDatabase.url)" in full
    assert "the value of secrets.githubWebhookSecret" in full and "base64 -d" not in full


# ---------------------------------------------------------------- lookups against the real API server

def _helm(control_plane, *args: str) -> str:
    return run_tool([control_plane.helm, "--kubeconfig", control_plane.kubeconfig, *args], timeout=300).stdout


def _secret(kube_client, namespace: str, name: str) -> dict[str, str]:
    data = client.CoreV1Api(kube_client).read_namespaced_secret(name, namespace).data or {}
    return {k: base64.b64decode(v).decode() for k, v in data.items()}


def _hook_names(control_plane, release: str, namespace: str) -> dict[str, str]:
    docs = [d for d in yaml.safe_load_all(_helm(control_plane, "get", "hooks", release, "-n", namespace)) if d]
    return {f"{d['kind']}/{d['metadata']['name']}": d["metadata"]["annotations"]["helm.sh/hook"] for d in docs}


@pytest.mark.kube
def test_generated_secrets_survive_upgrade_and_rollback_and_the_hook_appears_on_upgrade(
        control_plane, kube_client, crds, namespace):
    # No kubelet here: --no-hooks, so only what helm renders and stores is under test (tests/test_helm_node.py
    # runs the same lifecycle with pods).
    release = "gs"
    _helm(control_plane, "install", release, str(CHART), "-n", namespace, "--no-hooks")
    first_db = _secret(kube_client, namespace, f"{release}-foundry-database")
    first_hook = _secret(kube_client, namespace, f"{release}-foundry-secrets")["github-webhook-secret"]
    first_audit_key = _secret(kube_client, namespace, f"{release}-foundry-secrets")["audit-key"]
    assert _hook_names(control_plane, release, namespace).keys() == {f"Pod/{release}-foundry-test-bridge-ready"}

    _helm(control_plane, "upgrade", release, str(CHART), "-n", namespace, "--no-hooks",
          *set_args({"bridge": {"replicas": 3}}))
    assert _secret(kube_client, namespace, f"{release}-foundry-database") == first_db
    assert _secret(kube_client, namespace, f"{release}-foundry-secrets")["github-webhook-secret"] == first_hook
    assert _secret(kube_client, namespace, f"{release}-foundry-secrets")["audit-key"] == first_audit_key
    # The StatefulSet exists now, so the migration is a pre-upgrade hook again.
    assert _hook_names(control_plane, release, namespace)[f"Job/{release}-foundry-migrate"] == "pre-upgrade"

    _helm(control_plane, "rollback", release, "1", "-n", namespace, "--no-hooks")
    assert _secret(kube_client, namespace, f"{release}-foundry-database") == first_db
    assert _secret(kube_client, namespace, f"{release}-foundry-secrets")["github-webhook-secret"] == first_hook
    history = json.loads(_helm(control_plane, "history", release, "-n", namespace, "-o", "json"))
    assert [h["status"] for h in history] == ["superseded", "superseded", "deployed"]


@pytest.mark.kube
def test_a_credentials_secret_of_0_1_0_holding_the_database_url_is_not_silently_replaced(
        control_plane, kube_client, crds, namespace):
    core = client.CoreV1Api(kube_client)
    core.create_namespaced_secret(namespace, client.V1Secret(metadata=client.V1ObjectMeta(name="creds"), string_data={
        "database-url": EXTERNAL_URL, "linear-webhook-secret": "w"}))
    proc = run_tool([control_plane.helm, "--kubeconfig", control_plane.kubeconfig, "install", "old", str(CHART),
                     "-n", namespace, "--no-hooks", "--set", "secrets.existingSecret=creds"], check=False)
    assert proc.returncode != 0
    assert "set externalDatabase.existingSecret=creds to keep using that database" in proc.stderr, proc.stderr
    # Said so, it uses it.
    _helm(control_plane, "install", "old", str(CHART), "-n", namespace, "--no-hooks",
          "--set", "secrets.existingSecret=creds", "--set", "externalDatabase.existingSecret=creds")
    apps = client.AppsV1Api(kube_client)
    assert not apps.list_namespaced_stateful_set(namespace).items
    env = {e.name: e for e in apps.read_namespaced_deployment("old-foundry-operator", namespace)
           .spec.template.spec.containers[0].env}
    assert env["FOUNDRY_DATABASE_URL"].value_from.secret_key_ref.name == "creds"


@pytest.mark.kube
def test_an_existing_secret_without_any_webhook_secret_is_refused(control_plane, kube_client, crds, namespace):
    client.CoreV1Api(kube_client).create_namespaced_secret(namespace, client.V1Secret(
        metadata=client.V1ObjectMeta(name="creds"), string_data={"linear-api-key": "k"}))
    proc = run_tool([control_plane.helm, "--kubeconfig", control_plane.kubeconfig, "install", "nw", str(CHART),
                     "-n", namespace, "--no-hooks", "--set", "secrets.existingSecret=creds"], check=False)
    assert proc.returncode != 0
    assert "creds has neither linear-webhook-secret nor github-webhook-secret" in proc.stderr, proc.stderr


@pytest.mark.kube
def test_the_api_server_accepts_the_agent_objects_and_its_pod_security_refuses_a_privileged_pod(
        control_plane, kube_client, crds, namespace):
    agents_ns = f"{namespace}-agents"
    values = {"config": {"agent": {"namespace": agents_ns}}, "agent": {"createNamespace": True, "networkPolicy": {
        "gitHost": {"cidrs": ["10.1.2.3/32"], "ports": [8443]}}}}
    core = client.CoreV1Api(kube_client)
    try:
        _helm(control_plane, "install", "ag", str(CHART), "-n", namespace, "--no-hooks", *set_args(values))
        policy = client.NetworkingV1Api(kube_client).read_namespaced_network_policy("ag-foundry-agent", agents_ns)
        assert [b.ip_block.cidr for r in policy.spec.egress[1:] for b in r.to] == ["10.1.2.3/32", "0.0.0.0/0"]
        # As the chart's agent ServiceAccount (envtest has no controller making a default one).
        bad = client.V1Pod(metadata=client.V1ObjectMeta(name="root"), spec=client.V1PodSpec(
            service_account_name="ag-foundry-agent", automount_service_account_token=False, containers=[
            client.V1Container(name="c", image="busybox", security_context=client.V1SecurityContext(privileged=True))]))
        with pytest.raises(client.ApiException) as refused:
            core.create_namespaced_pod(agents_ns, bad)
        message = json.loads(refused.value.body)["message"]
        assert refused.value.status == 403 and 'violates PodSecurity "restricted:latest"' in message, message
    finally:
        run_tool([control_plane.helm, "--kubeconfig", control_plane.kubeconfig, "uninstall", "ag", "-n", namespace],
                 check=False)
        try:
            core.delete_namespace(agents_ns)  # kept by the chart on uninstall, by design
        except client.ApiException:
            pass
