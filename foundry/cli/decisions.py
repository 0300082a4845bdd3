"""`foundry approve|reject|stop RUN`: a human decision, recorded as the
authenticated Kubernetes user.

The approver is never taken from a flag: the API server says who we are
(SelfSubjectReview), and in a cluster with Foundry's chart an admission policy
refuses a FoundryApproval whose approver is not the requesting user anyway.
The object's name is deterministic, so repeating the command changes nothing.
"""

from __future__ import annotations

from typing import Any

import click

from foundry.cli.kubeaccess import REQUEST_TIMEOUT, CliError, KubeTarget, connect, kube_errors, kube_options
from foundry.domain.phases import Phase

_PAST = {"approve": "approved", "reject": "rejected", "stop": "stopped"}


def whoami(api: Any) -> str:
    """The username the API server authenticates this client as (authentication.k8s.io/v1 SelfSubjectReview)."""
    from kubernetes import client

    body = client.V1SelfSubjectReview(api_version="authentication.k8s.io/v1", kind="SelfSubjectReview")
    review = client.AuthenticationV1Api(api).create_self_subject_review(body, _request_timeout=REQUEST_TIMEOUT)
    user = review.status.user_info if review.status else None
    if user is None or not user.username:
        raise CliError("the API server did not say who you are (SelfSubjectReview returned no username)")
    return user.username


def refusal(decision: str, run: str, phase: str | None) -> str | None:
    """Why `decision` cannot apply to a run in `phase` (None: it can). Pure."""
    try:
        current = Phase(phase or "Pending")
    except ValueError:
        return None  # a phase this CLI does not know: let the operator judge
    if current.is_terminal:
        return f"run {run} is {current.value}, which is final; there is nothing to {decision}"
    return None


def record_decision(api: Any, namespace: str, run_ref: str, decision: str, comment: str | None) -> tuple[str, str, bool, str]:
    """(run name, approval object name, created?, approver) after recording `decision` on the run."""
    from foundry.cli.runs import find_run
    from foundry.kube.approvals import build_approval_manifest, create_or_attach_approval

    obj = find_run(api, namespace, run_ref)
    name = obj["metadata"]["name"]
    why_not = refusal(decision, name, (obj.get("status") or {}).get("phase"))
    if why_not:
        raise CliError(why_not)
    approver = whoami(api)
    try:
        manifest = build_approval_manifest(name, decision, approver, "kubernetes", comment, namespace=namespace)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    result = create_or_attach_approval(api, namespace, manifest)
    return name, result.name, result.created, approver


def _command(decision: str, help_text: str) -> click.Command:
    @click.command(decision, help=help_text)
    @click.argument("run")
    @click.option("-m", "--comment", default=None, help="A note kept with the decision (at most 4096 characters).")
    @kube_options
    def command(run: str, comment: str | None, target: KubeTarget) -> None:
        api, namespace = connect(target)
        with kube_errors(api.configuration.host):
            name, approval, created, approver = record_decision(api, namespace, run, decision, comment)
        if created:
            click.echo(f"{_PAST[decision]} run {name} as {approver} (foundryapproval/{approval})")
        else:
            click.echo(f"already recorded: {approver} {_PAST[decision]} run {name} (foundryapproval/{approval}); nothing changed")

    return command


_EXIT = "\n\nExit status: 0 recorded (or already recorded), 1 no such run or the run is final or the API refused, 3 cluster unreachable."

approve = _command("approve", "Approve RUN (a run name or issue key) as the current Kubernetes user." + _EXIT)
reject = _command("reject", "Reject RUN's plan as the current Kubernetes user; the run ends as Rejected." + _EXIT)
stop = _command("stop", "Stop RUN as the current Kubernetes user: its agent is cancelled and it ends as Stopped." + _EXIT)
