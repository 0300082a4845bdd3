"""The chart without a cluster: the real helm binary lints and renders it, the schema
refuses bad values, and the chart's CRDs are the same bytes as crds/."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from foundry.config import LeaderElection, parse_config
from foundry.paths import REPO_ROOT
from foundry.dev.binaries import control_plane_bin_dir
from tests.support.helmchart import CHART, FIXTURES, KUBE_VERSION, by_kind, one, pod_specs, render, run_tool, template

MAXIMAL = FIXTURES / "values-maximal.yaml"
# What the chart's operator.leaderElection values become in the config file.
LEADER_ELECTION = {"enabled": True, "lease_duration_seconds": 15, "renew_deadline_seconds": 10,
                   "retry_period_seconds": 2}
EXAMPLE_CONFIG = yaml.safe_load((REPO_ROOT / "docs" / "examples" / "config.yaml").read_text())


@pytest.fixture(scope="module")
def helm() -> Path:
    return control_plane_bin_dir(build=True) / "helm"


@pytest.fixture(scope="module")
def default_objects(helm):
    return render(helm)


@pytest.fixture(scope="module")
def maximal_objects(helm):
    return render(helm, values_files=[MAXIMAL], values={"config": EXAMPLE_CONFIG})


# ---------------------------------------------------------------- CRDs

def test_chart_crds_are_byte_identical_to_crds_folder():
    source = {p.name: p.read_bytes() for p in (REPO_ROOT / "crds").glob("*.yaml")}
    shipped = {p.name: p.read_bytes() for p in (CHART / "crds").glob("*.yaml")}
    assert source, "crds/ holds no CRDs"
    assert shipped.keys() == source.keys(), "run tools/sync-crds.sh"
    for name in source:
        assert shipped[name] == source[name], f"helm/foundry/crds/{name} differs from crds/{name}: run tools/sync-crds.sh"


def test_sync_script_detects_and_repairs_drift(tmp_path):
    # A copy of the layout the script works on, so the real tree is untouched.
    (tmp_path / "tools").mkdir()
    shutil.copy(REPO_ROOT / "tools" / "sync-crds.sh", tmp_path / "tools")
    shutil.copytree(REPO_ROOT / "crds", tmp_path / "crds")
    shutil.copytree(CHART / "crds", tmp_path / "helm" / "foundry" / "crds")
    script = ["bash", str(tmp_path / "tools" / "sync-crds.sh")]
    assert subprocess.run(script + ["--check"]).returncode == 0

    edited = next((tmp_path / "crds").glob("*.yaml"))
    edited.write_bytes(edited.read_bytes() + b"# edited\n")
    (tmp_path / "helm" / "foundry" / "crds" / "stale.yaml").write_text("kind: Gone\n")
    check = subprocess.run(script + ["--check"], capture_output=True, text=True)
    assert check.returncode == 1
    assert f"out of date: helm/foundry/crds/{edited.name}" in check.stderr and "stale.yaml" in check.stderr

    subprocess.run(script, check=True)
    assert subprocess.run(script + ["--check"]).returncode == 0
    assert (tmp_path / "helm" / "foundry" / "crds" / edited.name).read_bytes() == edited.read_bytes()
    assert not (tmp_path / "helm" / "foundry" / "crds" / "stale.yaml").exists()


# ---------------------------------------------------------------- lint and render

@pytest.mark.parametrize("extra", [[], ["--values", str(MAXIMAL)]], ids=["default", "maximal"])
def test_helm_lint_strict_is_clean(helm, extra):
    proc = run_tool([helm, "lint", CHART, "--strict", "--kube-version", KUBE_VERSION, *extra])
    assert "1 chart(s) linted, 0 chart(s) failed" in proc.stdout
    assert "[WARNING]" not in proc.stdout and "[ERROR]" not in proc.stdout, proc.stdout


def test_default_render(helm, default_objects):
    objs = default_objects
    operator = one(objs, "Deployment", "-operator")
    # Two replicas under leader election: an upgrade rolls (the new pod is a ready standby
    # before the old one releases the Lease), and a drain keeps one.
    assert operator["spec"]["replicas"] == 2
    assert operator["spec"]["strategy"] == {"type": "RollingUpdate",
                                            "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    assert one(objs, "PodDisruptionBudget", "-operator")["spec"]["minAvailable"] == 1
    op = operator["spec"]["template"]["spec"]["containers"][0]
    assert op["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "readiness"}
    assert op["args"][op["args"].index("--readiness-port") + 1] == "8082"
    downward = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in op["env"] if "fieldRef" in e.get("valueFrom", {})}
    assert downward == {"POD_NAME": "metadata.name", "POD_NAMESPACE": "metadata.namespace"}
    leader = one(objs, "Role", "-operator-leader")
    assert leader["metadata"]["namespace"] == "foundry"
    assert {res: set(rule["verbs"]) for rule in leader["rules"] for res in rule["resources"]} == {
        "leases": {"get", "create", "update"}, "events": {"create"}}
    assert op["args"][:3] == ["operator", "--namespace", "foundry"]
    assert op["args"][op["args"].index("--liveness") + 1] == "http://0.0.0.0:8081/healthz"
    assert op["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert op["resources"]["requests"] and op["resources"]["limits"]

    bridge = one(objs, "Deployment", "-bridge")
    assert bridge["spec"]["replicas"] == 2
    br = bridge["spec"]["template"]["spec"]["containers"][0]
    assert br["args"][:3] == ["bridge", "--port", "8080"]
    assert br["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert br["livenessProbe"]["httpGet"]["path"] == "/healthz"
    env = {e["name"]: e for e in br["env"]}
    assert env["FOUNDRY_NAMESPACE"]["value"] == "foundry"
    assert env["FOUNDRY_DATABASE_URL"]["valueFrom"]["secretKeyRef"]["key"] == "database-url"

    assert one(objs, "PodDisruptionBudget", "-bridge")["spec"]["maxUnavailable"] == 1
    assert one(objs, "Service", "-bridge")["spec"]["selector"] == bridge["spec"]["selector"]["matchLabels"]
    assert not by_kind(objs, "HorizontalPodAutoscaler") and not by_kind(objs, "Ingress")
    # Namespace-scoped by default: no cluster-wide grant at all.
    assert not by_kind(objs, "ClusterRole") and not by_kind(objs, "ClusterRoleBinding")
    assert {r["metadata"]["namespace"] for r in by_kind(objs, "Role")} == {"foundry"}

    # The bundled database does not exist before the install: the schema is made by the pods' init
    # container, and the migration hook appears only on upgrade (tests/test_helm_chart_defaults.py).
    assert not by_kind(objs, "Job")
    external = render(helm, values={"externalDatabase": {"url": "postgresql+psycopg://u:p@db:5432/foundry"}})
    job = one(external, "Job", "-migrate")
    ann = job["metadata"]["annotations"]
    assert ann["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert set(ann["helm.sh/hook-delete-policy"].split(",")) == {"before-hook-creation", "hook-succeeded"}
    assert job["spec"]["template"]["spec"]["containers"][0]["args"] == ["db", "upgrade", "--wait", "300"]
    assert job["spec"]["template"]["spec"]["automountServiceAccountToken"] is False
    # The hook's Secret exists before the Job (lower weight) since hooks run before the release's objects.
    hook_secret = next(s for s in by_kind(external, "Secret") if "helm.sh/hook" in (s["metadata"].get("annotations") or {}))
    assert int(hook_secret["metadata"]["annotations"]["helm.sh/hook-weight"]) < int(ann["helm.sh/hook-weight"])

    test_pod = one(objs, "Pod")
    assert test_pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert "/readyz" in test_pod["spec"]["containers"][0]["command"][-1]


def test_every_pod_is_locked_down(default_objects, maximal_objects):
    for objs in (default_objects, maximal_objects):
        for where, spec in pod_specs(objs).items():
            database = where.startswith("StatefulSet/")
            psc = spec["securityContext"]
            # The bundled PostgreSQL runs as the postgres image's user.
            assert psc["runAsNonRoot"] is True and psc["runAsUser"] == (999 if database else 10001), where
            assert psc["seccompProfile"] == {"type": "RuntimeDefault"}, where
            for c in spec.get("initContainers", []) + spec["containers"]:
                sc = c["securityContext"]
                assert sc["allowPrivilegeEscalation"] is False, where
                assert sc["readOnlyRootFilesystem"] is True, where
                assert sc["capabilities"] == {"drop": ["ALL"]}, where
                assert sc["seccompProfile"] == {"type": "RuntimeDefault"}, where
                # A read-only root needs a writable /tmp (HOME points there), except the one-shot test pod.
                if not where.startswith("Pod/"):
                    assert any(m["mountPath"] == "/tmp" for m in c["volumeMounts"]), where
                    if not database:
                        assert {"name": "HOME", "value": "/tmp"} in c["env"], where
            # Only the two long-running processes get an API token.
            wants_token = where.endswith("-operator") or where.endswith("-bridge")
            assert spec["automountServiceAccountToken"] is wants_token, where


def test_maximal_render(maximal_objects):
    objs = maximal_objects
    image = "registry.example.com/platform/foundry@sha256:" + "0123456789abcdef" * 4
    for where, spec in pod_specs(objs).items():
        assert {c["image"] for c in spec["containers"]} == {image}, where
        assert spec.get("imagePullSecrets", [{"name": "registry-credentials"}]) == [{"name": "registry-credentials"}]

    # existingSecret: the chart creates no Secret at all and every reference names the user's.
    assert not by_kind(objs, "Secret")
    refs = {e["valueFrom"]["secretKeyRef"]["name"] for spec in pod_specs(objs).values() for c in spec["containers"]
            for e in c.get("env", []) if "valueFrom" in e and "secretKeyRef" in e["valueFrom"]}
    assert refs == {"foundry-credentials"}

    bridge = one(objs, "Deployment", "-bridge")
    assert "replicas" not in bridge["spec"], "the HPA owns the replica count"
    hpa = one(objs, "HorizontalPodAutoscaler")
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 10)
    assert hpa["spec"]["scaleTargetRef"]["name"] == bridge["metadata"]["name"]

    ingress = one(objs, "Ingress")
    paths = [p["path"] for r in ingress["spec"]["rules"] for p in r["http"]["paths"]]
    assert sorted(paths) == ["/webhooks/github", "/webhooks/linear"], "only the webhooks are exposed"
    assert ingress["spec"]["tls"] == [{"hosts": ["foundry.example.com"], "secretName": "foundry-tls"}]

    # clusterWide: the operator's grant becomes a ClusterRole; the bridge stays namespaced in runNamespace.
    op = one(objs, "Deployment", "-operator")["spec"]["template"]["spec"]["containers"][0]
    assert "--all-namespaces" in op["args"] and "--namespace" not in op["args"]
    assert one(objs, "ClusterRoleBinding")["subjects"] == [
        {"kind": "ServiceAccount", "name": "foundry-operator-sa", "namespace": "foundry"}]
    bridge_role = one(objs, "Role", "-bridge")
    assert bridge_role["metadata"]["namespace"] == "foundry-runs"
    approver_binding = one(objs, "RoleBinding", "-approver")
    assert {s["name"] for s in approver_binding["subjects"]} == {"alice", "release-managers", "release-bot"}
    for binding in by_kind(objs, "ValidatingAdmissionPolicyBinding"):
        assert not binding["spec"].get("matchResources"), "cluster-wide"
    policy = one(objs, "ValidatingAdmissionPolicy", "-approver-identity")
    assert "'system:serviceaccount:foundry:foundry-bridge-sa'" in str(policy["spec"]["variables"])


def test_config_values_become_a_valid_config_file(maximal_objects):
    cm = one(maximal_objects, "ConfigMap", "-config")
    rendered = yaml.safe_load(cm["data"]["config.yaml"])
    assert rendered.pop("operator") == {**EXAMPLE_CONFIG.get("operator", {}), "leader_election": LEADER_ELECTION}
    assert rendered == {k: v for k, v in EXAMPLE_CONFIG.items() if k != "operator"}
    parsed = parse_config(yaml.safe_load(cm["data"]["config.yaml"]))  # what the operator and bridge do at start
    assert parsed.operator.leader_election.enabled
    assert list(parsed.repositories) == ["web", "api"]


def test_default_config_file_means_defaults(default_objects):
    cm = one(default_objects, "ConfigMap", "-config")
    # All defaults, but the agent pods run as the chart's own token-less ServiceAccount.
    rendered = yaml.safe_load(cm["data"]["config.yaml"])
    sa = one(default_objects, "ServiceAccount", "-agent")
    assert rendered == {"agent": {"service_account": sa["metadata"]["name"]},
                        "operator": {"leader_election": LEADER_ELECTION}}
    assert sa["automountServiceAccountToken"] is False
    parsed = parse_config(rendered)
    assert parsed.agent.service_account == sa["metadata"]["name"]
    # The chart's replicas hold the Lease with client-go's defaults.
    assert parsed.operator.leader_election == LeaderElection(enabled=True)


def test_one_operator_without_election_or_two_with(helm):
    alone = render(helm, values={"operator": {"replicas": 1, "leaderElection": {"enabled": False}}})
    cm = one(alone, "ConfigMap", "-config")
    assert parse_config(yaml.safe_load(cm["data"]["config.yaml"])).operator.leader_election.enabled is False
    assert not [r for r in by_kind(alone, "Role") if r["metadata"]["name"].endswith("-operator-leader")]
    assert not [p for p in by_kind(alone, "PodDisruptionBudget") if p["metadata"]["name"].endswith("-operator")]
    # Two replicas that would both act are refused at install.
    proc = template(helm, values={"operator": {"replicas": 2, "leaderElection": {"enabled": False}}}, check=False)
    assert proc.returncode != 0 and "needs operator.leaderElection.enabled" in proc.stderr
    # The config's own leader_election wins over the chart's values.
    own = render(helm, values={"config": {"operator": {"leader_election": {"enabled": True, "lease_name": "x"}}}})
    cm = one(own, "ConfigMap", "-config")
    assert yaml.safe_load(cm["data"]["config.yaml"])["operator"] == {"leader_election": {"enabled": True,
                                                                                          "lease_name": "x"}}


def test_a_dedicated_agent_namespace_gets_the_operators_agent_grant(helm):
    objs = render(helm, values={"config": {"agent": {"namespace": "foundry-agents"}}})
    roles = {(r["metadata"]["namespace"], r["metadata"]["name"]): r for r in by_kind(objs, "Role")}
    agents = next(r for (ns, name), r in roles.items() if ns == "foundry-agents")
    granted = {res: set(rule["verbs"]) for rule in agents["rules"] for res in rule["resources"]}
    assert granted == {"jobs": {"get", "list", "watch", "create", "delete"}, "configmaps": {"get", "create"},
                       "secrets": {"get", "create", "patch", "delete"}, "pods": {"get", "list"},
                       "events": {"create", "list"}}
    operator = next(r for (ns, name), r in roles.items() if name.endswith("-operator"))
    home = {res: set(rule["verbs"]) for rule in operator["rules"] for res in rule["resources"]}
    assert "secrets" not in home and "pods" not in home and home["jobs"] == {"list", "watch"}
    assert one(objs, "ServiceAccount", "-agent")["metadata"]["namespace"] == "foundry-agents"


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"bridge": {"replicas": 0}}, "/bridge/replicas"),
        ({"bridge": {"replica": 3}}, "'replica' not allowed"),
        ({"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy"),
        ({"podSecurityContext": {"runAsNonRoot": False}}, "/podSecurityContext/runAsNonRoot"),
        ({"containerSecurityContext": {"allowPrivilegeEscalation": True}}, "/containerSecurityContext/allowPrivilegeEscalation"),
        ({"secrets": {"databaseUrl": "mysql://db/foundry"}}, "/secrets/databaseUrl"),
        ({"bridge": {"ingress": {"enabled": True}}}, "/bridge/ingress/host"),
        ({"runNamespace": "Not_A_Namespace"}, "/runNamespace"),
        ({"operator": {"workers": "many"}}, "/operator/workers"),
        ({"rbac": {"approvers": [{"kind": "Robot", "name": "x"}]}}, "/rbac/approvers/0/kind"),
    ],
)
def test_bad_values_are_refused_by_the_schema(helm, values, expected):
    proc = template(helm, values=values, check=False)
    assert proc.returncode != 0
    assert "values don't meet the specifications of the schema" in proc.stderr
    assert expected in proc.stderr, proc.stderr


def test_autoscaling_bounds_are_checked(helm):
    proc = template(helm, values={"bridge": {"autoscaling": {"enabled": True, "minReplicas": 5, "maxReplicas": 2}}},
                    check=False)
    assert proc.returncode != 0 and "minReplicas (5) must not exceed maxReplicas (2)" in proc.stderr


def test_previous_chart_version_fixture_is_older(helm):
    old = yaml.safe_load((FIXTURES / "foundry-0.0.9" / "Chart.yaml").read_text())
    new = yaml.safe_load((CHART / "Chart.yaml").read_text())
    as_tuple = lambda v: tuple(int(x) for x in v.split("."))  # noqa: E731
    assert as_tuple(old["version"]) < as_tuple(new["version"])
    from foundry import __version__

    assert new["appVersion"] == __version__, "Chart.yaml appVersion must follow foundry/__init__.py"


def test_operator_pause_and_shards(helm, default_objects):
    # Unsharded and not paused: the one Deployment, neither flag, no shard label (its selector,
    # which is immutable, is what it was before shards existed).
    operator = one(default_objects, "Deployment", "-operator")
    args = operator["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--paused" not in args and "--shard-count" not in args
    assert "foundry.dev/shard" not in operator["spec"]["selector"]["matchLabels"]

    objs = render(helm, values={"operator": {"shards": 3, "paused": True}})
    deployments = {d["metadata"]["name"]: d for d in by_kind(objs, "Deployment")
                   if d["metadata"]["name"].startswith("rel-foundry-operator")}
    assert sorted(deployments) == [f"rel-foundry-operator-shard-{i}" for i in range(3)]
    selectors = set()
    for i in range(3):
        spec = deployments[f"rel-foundry-operator-shard-{i}"]["spec"]
        args = spec["template"]["spec"]["containers"][0]["args"]
        assert args[args.index("--shard-count") + 1] == "3" and args[args.index("--shard-index") + 1] == str(i)
        assert "--paused" in args
        assert spec["replicas"] == 2, "each shard has its leader and its standby"
        match = spec["selector"]["matchLabels"]
        assert match["foundry.dev/shard"] == str(i)
        assert spec["template"]["metadata"]["labels"].items() >= match.items()
        selectors.add(tuple(sorted(match.items())))
    assert len(selectors) == 3, "no two shards' Deployments may select each other's pods"
    pdbs = {p["metadata"]["name"]: p["spec"]["selector"]["matchLabels"]["foundry.dev/shard"]
            for p in by_kind(objs, "PodDisruptionBudget") if "-operator" in p["metadata"]["name"]}
    assert pdbs == {f"rel-foundry-operator-shard-{i}": str(i) for i in range(3)}
    # Each shard elects on its own Lease, so a Lease name set by hand (shared by all) is refused.
    proc = template(helm, values={"operator": {"shards": 2},
                                  "config": {"operator": {"leader_election": {"lease_name": "x"}}}}, check=False)
    assert proc.returncode != 0 and "each shard's own Lease" in proc.stderr
    for bad in (0, 65):
        proc = template(helm, values={"operator": {"shards": bad}}, check=False)
        assert proc.returncode != 0 and "shards" in proc.stderr
