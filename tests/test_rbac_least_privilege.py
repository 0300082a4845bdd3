"""Least privilege, proven on the real API server with the chart installed.

(a) Everything the bridge and the operator need is allowed: their code runs
    authenticated as the chart's ServiceAccounts (tokens from the TokenRequest
    API). The bridge's command functions create, attach, approve and hint; the
    real kopf operator, logged in as its ServiceAccount, takes a ticket from
    Pending through analysis, a Linear approval, an agent Job, a PR whose CI
    fails once (attempt 2 cancels attempt 1's still-running Job), to a merge
    and Complete.
(b) What they must not do is denied: a `kubectl auth can-i --as=...` matrix.
(c) The ValidatingAdmissionPolicy: nobody records a decision in someone else's name.

The chart is installed with --no-hooks: the migration hook is proven in
tests/test_helm_install.py; here the schema comes from `migrate.upgrade`.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timezone

import pytest
from kubernetes import client

from foundry.bridge import commands
from foundry.bridge.backend import RealBackend
from foundry.bridge.mapping import Decision, Intake, PrHint, Ticket
from foundry.db import migrate
from foundry.db.engine import make_engine
from tests.support.helmchart import CHART, run_tool, set_args
from tests.support.jobs import finish_job
from tests.support.kubeutil import client_with_token, service_account_token
from tests.support.operator_stack import runner_message

pytestmark = [pytest.mark.kube, pytest.mark.slow]

RELEASE = "lp"
OPERATOR_SA = f"{RELEASE}-foundry-operator"
BRIDGE_SA = f"{RELEASE}-foundry-bridge"


@pytest.fixture(scope="module")
def release(control_plane, kube_client):
    """The chart installed into a fresh namespace; alice and mallory may record decisions there."""
    core = client.CoreV1Api(kube_client)
    ns = f"lp-{uuid.uuid4().hex[:8]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
    values = {"rbac": {"approvers": [{"kind": "User", "name": "alice"}, {"kind": "User", "name": "mallory"}]},
              "secrets": {"databaseUrl": "postgresql+psycopg://unused@127.0.0.1/unused"}}
    helm = [control_plane.helm, "--kubeconfig", control_plane.kubeconfig]
    run_tool([*helm, "install", RELEASE, CHART, "-n", ns, "--no-hooks", *set_args(values)], timeout=300)
    yield ns
    run_tool([*helm, "uninstall", RELEASE, "-n", ns], check=False)
    try:
        core.delete_namespace(ns)
    except client.ApiException:
        pass


def _as_sa(kube_client, namespace: str, sa: str) -> client.ApiClient:
    return client_with_token(kube_client, service_account_token(kube_client, namespace, sa, seconds=3600))


def _can_i(control_plane, verb: str, resource: str, *, sa: str, sa_namespace: str, namespace: str | None,
           subresource: str | None = None) -> bool:
    args = [control_plane.kubectl, "--kubeconfig", control_plane.kubeconfig, "auth", "can-i", verb, resource,
            f"--as=system:serviceaccount:{sa_namespace}:{sa}"]
    args += ["-n", namespace] if namespace else ["--all-namespaces"]
    if subresource:
        args += ["--subresource", subresource]
    proc = run_tool(args, check=False)
    assert proc.stdout.strip() in ("yes", "no"), proc.stderr
    return proc.stdout.strip() == "yes"


# ---------------------------------------------------------------- (a) the happy path as the ServiceAccounts

@pytest.mark.postgres
def test_bridge_and_operator_do_their_work_as_the_chart_service_accounts(
        control_plane, kube_client, release, pg_url, tmp_path, caplog):
    from foundry.agents.credentials import StaticTokenSource
    from foundry.agents.job_provider import JobProvider
    from foundry.config import parse_config
    from foundry.connectors.linear import LinearClient
    from foundry.demo import example_repo
    from foundry.demo.config import APPROVER_EMAIL, APPROVER_NAME, TEAM, demo_config
    from foundry.operator.deps import Deps
    from tests.support.operator_kit import operator_thread, wait_for, wait_phase
    from foundry.connectors.github import GitHubClient
    from foundry.dev.github_server import GitHubServer
    from foundry.dev.linear_server import LinearServer

    ns = release
    migrate.upgrade(pg_url)
    engine = make_engine(pg_url)
    bridge_api = _as_sa(kube_client, ns, BRIDGE_SA)
    operator_api = _as_sa(kube_client, ns, OPERATOR_SA)
    batch = client.BatchV1Api(kube_client)
    linear = LinearServer().start()
    github = GitHubServer().start()
    try:
        github.add_repo(example_repo.REPO, default_branch=example_repo.BASE_BRANCH,
                        files=dict(example_repo.INITIAL_FILES))
        linear.add_team(TEAM, "Acme")
        approver_id = linear.add_user(APPROVER_NAME, APPROVER_EMAIL)
        issue_id = linear.create_issue(TEAM, example_repo.TICKET_TITLE, example_repo.TICKET_DESCRIPTION,
                                       labels=["foundry"], actor_id=approver_id)
        issue = linear.issue_json(issue_id)
        raw = demo_config(linear_graphql_url=linear.graphql_url, github_url=github.url,
                          agent_workdir=tmp_path / "agents")
        raw["agent"] = {"provider": "job", "image": "registry.example.com/agent:1"}
        raw["plan"] = {"mode": "heuristic"}  # no kubelet here to run a plan Job's pod
        raw["timeouts"]["resync_seconds"] = 1
        cfg = parse_config(raw)
        repo = example_repo.REPO

        # -- the bridge, as its ServiceAccount: intake twice (create, then attach)
        backend = RealBackend(engine, bridge_api, ns)
        assert backend.check_ready() == {"database": "ok", "kubernetes": "ok"}
        ticket = Ticket(issue_id=issue_id, issue_key=issue["identifier"], title=issue["title"],
                        description=issue["description"], url=issue["url"], labels=("foundry",),
                        state=issue["state"]["name"], team_key=TEAM,
                        updated_at=datetime.fromisoformat(issue["updatedAt"].replace("Z", "+00:00")),
                        priority=None)
        trigger = commands.Trigger(delivery_id=str(uuid.uuid4()), received_at=datetime.now(timezone.utc))
        first = commands.intake(backend, Intake(ticket, approver_id), trigger)
        assert first.status == "created", first
        assert commands.intake(backend, Intake(ticket, approver_id), trigger).status == "attached"
        run = first.run

        def hint(number: int, delivery: str) -> None:
            # What the bridge does on a GitHub pull_request/check_run delivery.
            outcome = commands.pr_hint(backend, PrHint("pull_request", (run,), (), number), delivery)
            assert outcome.status != "ignored", outcome

        # -- the operator, as its ServiceAccount: the real kopf operator with the job provider
        deps = Deps(api=operator_api, engine=engine, linear=LinearClient(linear.api_key, url=linear.graphql_url),
                    github=GitHubClient(github.token, base_url=github.url), config=cfg,
                    agents=JobProvider(cfg, operator_api, StaticTokenSource(github.token)))
        caplog.set_level(logging.WARNING)
        with operator_thread(deps, ns):
            wait_phase(kube_client, ns, run, "WaitingApproval", timeout=60)
            # A Linear approval: the bridge records it (the admission policy lets only the bridge do that).
            said = linear.add_comment(issue_id, "/foundry approve ship it", user_id=approver_id)
            assert commands.decide(backend, Decision("approve", issue_id, APPROVER_EMAIL, "ship it",
                                                     comment_id=said)).status == "applied"
            wait_phase(kube_client, ns, run, "AgentRunning", timeout=60)
            job = batch.read_namespaced_job(f"{run}-a1", ns)
            assert job.metadata.owner_references[0].name == run
            assert client.CoreV1Api(kube_client).read_namespaced_config_map(f"{run}-a1-input", ns)

            # The agent pushes and opens the PR; CI fails while its Job still runs.
            github.create_branch(repo, f"foundry/{run}")
            head = github.commit(repo, f"foundry/{run}", {"greeter.py": "def greet(name):\n    return name\n"},
                                 runner_message("a1", run, 1), author="Foundry agent")
            number = github.open_pr(repo, f"foundry/{run}", f"{run}: greet")
            hint(number, "hint-1")
            wait_phase(kube_client, ns, run, "PROpen", timeout=60)
            github.set_check(repo, head, "failure")
            hint(number, "hint-2")
            # Attempt 2: a new Job, and attempt 1's Job deleted by the operator.
            wait_for(lambda: _job_exists(batch, ns, f"{run}-a2"), timeout=60, what="the attempt-2 Job")
            wait_for(lambda: _job_gone(batch, ns, f"{run}-a1"), timeout=30, what="attempt 1's Job deleted")
            # The new attempt's agent pushes once the run records it (a push racing the record
            # would be judged as the head of attempt 1's remediation-free PR).
            wait_for(lambda: _attempt(kube_client, ns, run) == 2, timeout=30, what="attempt 2 recorded")

            head = github.commit(repo, f"foundry/{run}", {"test_greeter.py": "def test_ok():\n    pass\n"},
                                 runner_message("a2", run, 2), author="Foundry agent")
            github.set_check(repo, head, "success")
            finish_job(kube_client, ns, f"{run}-a2")
            hint(number, "hint-3")
            wait_phase(kube_client, ns, run, "PROpen", timeout=60)
            github.merge(repo, number)
            hint(number, "hint-4")
            done = wait_phase(kube_client, ns, run, "Complete", timeout=60)

        assert done["status"]["pr"]["number"] == number
        assert [(j["attempt"], j["state"]) for j in done["status"]["agent"]["jobs"]][-1] == (2, "succeeded"), \
            done["status"]["agent"]
        assert linear.issue_json(issue_id)["state"]["name"] == "Done"
        body = client.CustomObjectsApi(kube_client).get_namespaced_custom_object(
            "foundry.dev", "v1alpha1", ns, "foundryruns", run)
        assert body["metadata"]["annotations"]["foundry.dev/pr-hint"] == "hint-4"
        events = {e.reason for e in client.CoreV1Api(kube_client).list_namespaced_event(ns).items
                  if e.involved_object.name == run}
        assert events, "the operator posted no Events"
        # Nothing the two identities did was refused, except kopf's optional
        # cluster-wide scans of namespaces and CRDs, denied on purpose (kopf then
        # uses the namespace it was given and the CRDs it found at start).
        optional_scans = ("/api/v1/namespaces -> ", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions -> ",
                          "Not enough permissions to")
        refused = [m for m in (r.getMessage() for r in caplog.records)
                   if ("403" in m or "orbidden" in m) and not any(s in m for s in optional_scans)]
        assert not refused, refused
    finally:
        linear.stop()
        github.stop()
        engine.dispose()


def _attempt(kube_client, ns: str, run: str) -> int:
    body = client.CustomObjectsApi(kube_client).get_namespaced_custom_object("foundry.dev", "v1alpha1", ns,
                                                                            "foundryruns", run)
    return int(((body.get("status") or {}).get("agent") or {}).get("attempt") or 0)


def _job_exists(batch, ns: str, name: str) -> bool:
    try:
        batch.read_namespaced_job(name, ns)
    except client.ApiException as err:
        if err.status == 404:
            return False
        raise
    return True


def _job_gone(batch, ns: str, name: str) -> bool:
    try:
        job = batch.read_namespaced_job(name, ns)
    except client.ApiException as err:
        return err.status == 404
    return job.metadata.deletion_timestamp is not None


# ---------------------------------------------------------------- (b) what they must not do

ALLOWED = {
    OPERATOR_SA: [
        ("list", "foundryruns.foundry.dev", None), ("watch", "foundryruns.foundry.dev", None),
        ("patch", "foundryruns.foundry.dev", None), ("patch", "foundryruns.foundry.dev", "status"),
        ("watch", "foundryapprovals.foundry.dev", None), ("create", "jobs.batch", None),
        ("delete", "jobs.batch", None), ("create", "configmaps", None), ("create", "events", None),
        # The agent attempt's token Secret, its pod's termination messages, the Job controller's Events.
        ("create", "secrets", None), ("get", "secrets", None), ("patch", "secrets", None),
        ("delete", "secrets", None), ("get", "pods", None), ("list", "pods", None), ("list", "events", None),
        # The leader election's Lease: read, created once, renewed and released.
        ("get", "leases.coordination.k8s.io", None), ("create", "leases.coordination.k8s.io", None),
        ("update", "leases.coordination.k8s.io", None),
    ],
    BRIDGE_SA: [
        ("create", "foundryruns.foundry.dev", None), ("get", "foundryruns.foundry.dev", None),
        ("patch", "foundryruns.foundry.dev", None), ("list", "foundryruns.foundry.dev", None),
        ("create", "foundryapprovals.foundry.dev", None),
    ],
}

DENIED_IN_NAMESPACE = {
    OPERATOR_SA: [
        ("list", "secrets", None), ("watch", "secrets", None), ("update", "secrets", None),
        ("create", "pods", "exec"), ("get", "pods", "log"), ("create", "pods", None), ("delete", "pods", None), ("create", "foundryapprovals.foundry.dev", None),
        ("patch", "foundryapprovals.foundry.dev", None), ("delete", "foundryruns.foundry.dev", None),
        ("update", "configmaps", None), ("delete", "configmaps", None), ("list", "configmaps", None),
        ("create", "roles.rbac.authorization.k8s.io", None), ("create", "rolebindings.rbac.authorization.k8s.io", None),
        ("create", "serviceaccounts", "token"), ("impersonate", "serviceaccounts", None),
        ("delete", "leases.coordination.k8s.io", None), ("list", "leases.coordination.k8s.io", None),
        ("patch", "leases.coordination.k8s.io", None),
    ],
    BRIDGE_SA: [
        ("get", "secrets", None), ("create", "pods", "exec"), ("create", "jobs.batch", None),
        ("patch", "foundryruns.foundry.dev", "status"), ("delete", "foundryruns.foundry.dev", None),
        ("watch", "foundryruns.foundry.dev", None), ("delete", "foundryapprovals.foundry.dev", None),
        ("patch", "foundryapprovals.foundry.dev", None), ("create", "configmaps", None), ("create", "events", None),
    ],
}

DENIED_CLUSTER = [
    ("list", "secrets"), ("get", "secrets"), ("create", "customresourcedefinitions.apiextensions.k8s.io"),
    ("patch", "customresourcedefinitions.apiextensions.k8s.io"), ("delete", "customresourcedefinitions.apiextensions.k8s.io"),
    ("list", "namespaces"), ("create", "clusterrolebindings.rbac.authorization.k8s.io"),
    ("patch", "validatingadmissionpolicies.admissionregistration.k8s.io"),
    ("delete", "validatingadmissionpolicybindings.admissionregistration.k8s.io"),
    ("list", "foundryruns.foundry.dev"), ("create", "jobs.batch"),
]


def test_can_i_matrix(control_plane, kube_client, release):
    other = f"other-{uuid.uuid4().hex[:6]}"
    client.CoreV1Api(kube_client).create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=other)))
    wrong: list[str] = []
    for sa, checks in ALLOWED.items():
        for verb, res, sub in checks:
            if not _can_i(control_plane, verb, res, sa=sa, sa_namespace=release, namespace=release, subresource=sub):
                wrong.append(f"{sa} should be able to {verb} {res}{'/' + sub if sub else ''}")
            # ...but only in the release's namespace.
            if _can_i(control_plane, verb, res, sa=sa, sa_namespace=release, namespace=other, subresource=sub):
                wrong.append(f"{sa} may {verb} {res} in another namespace")
    for sa, checks in DENIED_IN_NAMESPACE.items():
        for verb, res, sub in checks:
            if _can_i(control_plane, verb, res, sa=sa, sa_namespace=release, namespace=release, subresource=sub):
                wrong.append(f"{sa} must not {verb} {res}{'/' + sub if sub else ''}")
    for sa in ALLOWED:
        for verb, res in DENIED_CLUSTER:
            if _can_i(control_plane, verb, res, sa=sa, sa_namespace=release, namespace=None):
                wrong.append(f"{sa} must not {verb} {res} cluster-wide")
    assert not wrong, "\n".join(wrong)
    client.CoreV1Api(kube_client).delete_namespace(other)


# ---------------------------------------------------------------- (c) the approval policy

def _approval(run: str, approver: str, source: str = "kubernetes") -> dict:
    from foundry.kube.approvals import build_approval_manifest

    return build_approval_manifest(run, "approve", approver, source, None, namespace=None,
                                   comment_id="c-1" if source == "linear" else None)


def _create(api: client.ApiClient, ns: str, body: dict):
    return client.CustomObjectsApi(api).create_namespaced_custom_object("foundry.dev", "v1alpha1", ns,
                                                                        "foundryapprovals", body)


def test_nobody_approves_in_someone_elses_name(control_plane, kube_client, release):
    ns = release
    run = f"run-{uuid.uuid4().hex[:6]}"
    alice = control_plane.api_client(control_plane.user_token("alice"))
    mallory = control_plane.api_client(control_plane.user_token("mallory"))
    bridge = _as_sa(kube_client, ns, BRIDGE_SA)

    # In one's own name: allowed, through the CLI's own function (which asks the API server who we are).
    from foundry.cli.decisions import whoami
    from foundry.kube.approvals import create_or_attach_approval

    assert whoami(alice) == "alice"
    assert create_or_attach_approval(alice, ns, _approval(run, "alice")).created

    def refused(api, body) -> str:
        with pytest.raises(client.ApiException) as err:
            _create(api, ns, body)
        assert err.value.status == 403, err.value.body
        return err.value.body

    # In someone else's name: refused by the API server, naming who is asking.
    msg = refused(mallory, _approval(run, "alice"))
    assert "spec.approver must be your own username: you are mallory, the approval names alice" in msg
    # A Linear decision is the bridge's alone: a person cannot dress up as Linear.
    assert "may record a decision from Linear" in refused(mallory, _approval(run, "alice@acme.dev", "linear"))
    # Even the cluster admin cannot forge one.
    assert "you are foundry-admin" in refused(kube_client, _approval(run, "bob"))
    # The bridge may record Linear decisions, but not Kubernetes ones in a person's name.
    assert _create(bridge, ns, _approval(run, "alice@acme.dev", "linear"))
    assert "you are system:serviceaccount:" in refused(bridge, _approval(run, "alice"))
    # bob is not in rbac.approvers: RBAC refuses him before the policy is asked.
    bob = control_plane.api_client(control_plane.user_token("bob"))
    with pytest.raises(client.ApiException) as err:
        _create(bob, ns, _approval(run, "bob"))
    assert err.value.status == 403 and "cannot create resource" in err.value.body
