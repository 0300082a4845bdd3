"""`foundry approve|reject|stop|replan RUN`: a human decision, recorded as the
authenticated Kubernetes user.

approve and replan are about the run's plan: the FoundryApproval is stamped
with the run's current status.plan.hash (printed), or with the one given by
`--plan-hash`, which must be the current one: approving a hash you read
somewhere else than the run means approving a plan it no longer has.

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
from foundry.domain.plan_stamp import StampRefused, current_hash, current_revision, stamp

_PAST = {"approve": "approved", "reject": "rejected", "stop": "stopped", "replan": "asked to re-plan"}
# The operator re-plans only a run whose plan is not approved yet.
_REPLANNABLE = (Phase.ANALYSING, Phase.WAITING_APPROVAL)


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
    if decision == "replan" and current not in _REPLANNABLE:
        return (f"run {run} is {current.value}; only a run whose plan is not approved yet "
                f"({' or '.join(p.value for p in _REPLANNABLE)}) can be re-planned")
    return None


def record_decision(api: Any, namespace: str, run_ref: str, decision: str, comment: str | None,
                    plan_hash: str | None = None) -> tuple[str, str, bool, str, str | None, int | None]:
    """(run name, approval object name, created?, approver, plan hash stamped, its revision) after recording `decision`."""
    from foundry.cli.runs import find_run
    from foundry.kube.approvals import build_approval_manifest, create_or_attach_approval

    obj = find_run(api, namespace, run_ref)
    name = obj["metadata"]["name"]
    why_not = refusal(decision, name, (obj.get("status") or {}).get("phase"))
    if why_not:
        raise CliError(why_not)
    try:
        stamped = stamp(decision, current_hash(obj), plan_hash)
    except StampRefused as exc:
        raise CliError(f"not recorded: {exc} (`foundry runs show {name}` prints the current plan)") from None
    approver = whoami(api)
    try:
        manifest = build_approval_manifest(name, decision, approver, "kubernetes", comment, namespace=namespace,
                                           plan_hash=stamped)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    result = create_or_attach_approval(api, namespace, manifest)
    return name, result.name, result.created, approver, stamped, current_revision(obj) if stamped else None


def _plan_note(stamped: str | None, revision: int | None) -> str:
    return f" for plan {stamped}" + (f" (revision {revision})" if revision else "") if stamped else ""


def _command(decision: str, help_text: str, *, about_plan: bool = False) -> click.Command:
    @click.command(decision, help=help_text)
    @click.argument("run")
    @click.option("-m", "--comment", default=None, help="A note kept with the decision (at most 4096 characters).")
    @kube_options
    def command(run: str, comment: str | None, target: KubeTarget, plan_hash: str | None = None) -> None:
        api, namespace = connect(target)
        with kube_errors(api.configuration.host):
            name, approval, created, approver, stamped, revision = record_decision(
                api, namespace, run, decision, comment, plan_hash)
        plan = _plan_note(stamped, revision)
        if created:
            click.echo(f"{_PAST[decision]} run {name}{plan} as {approver} (foundryapproval/{approval})")
        else:
            click.echo(f"already recorded: {approver} {_PAST[decision]} run {name}{plan} "
                       f"(foundryapproval/{approval}); nothing changed")
        if about_plan and not stamped:
            click.echo("the run has no plan hash yet, so the decision names no plan "
                       "(it counts only while the run has had one plan)")

    if about_plan:
        command = click.option(
            "--plan-hash", default=None, metavar="HASH",
            help="The plan this is about (sha256:<hex>, or its first 12+ hex digits, as `foundry runs show` and "
                 "the ticket print it); refused unless it is the run's current plan. Default: the current plan.",
        )(command)
    return command



_EXIT = "\n\nExit status: 0 recorded (or already recorded), 1 no such run or the run is final or the API refused, 3 cluster unreachable."

approve = _command("approve", "Approve RUN's current plan (RUN: a run name or issue key) as the current Kubernetes "
                              "user. The approval names the plan's hash and counts for that plan only." + _EXIT,
                   about_plan=True)
reject = _command("reject", "Reject RUN's plan as the current Kubernetes user; the run ends as Rejected." + _EXIT)
stop = _command("stop", "Stop RUN as the current Kubernetes user: its agent is cancelled and it ends as Stopped." + _EXIT)
replan = _command("replan", "Ask for a new plan of RUN (Analysing or WaitingApproval) as the current Kubernetes user: "
                            "the operator plans again, and approvals of the plan it replaces no longer count." + _EXIT,
                  about_plan=True)
