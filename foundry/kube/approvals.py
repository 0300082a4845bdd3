"""FoundryApproval objects: one approver's decision on one run, recorded at most once.

The name is approval_name(run, decision, approver[, comment id][, plan hash]),
so a retried webhook or a repeated `foundry approve` gets 409 and attaches
instead of counting twice. A decision from Linear names the comment it was made
in (spec.commentId): the operator reads that comment back from Linear before the
decision counts. A decision about a plan (approve, replan) names the plan's
hash (spec.planHash): it counts for that plan only, so approving a re-plan is a
new object rather than a 409 onto the approval of the plan it replaced.
"""

from __future__ import annotations

from typing import Any, Hashable

from kubernetes import client

from foundry.domain.naming import approval_name, label_value
from foundry.domain.plan_stamp import STAMPED
from foundry.kube import attach
from foundry.kube.attach import AttachResult
from foundry.kube.crds import GROUP, VERSION

KIND = "FoundryApproval"
PLURAL = "foundryapprovals"
API_VERSION = f"{GROUP}/{VERSION}"

LABEL_RUN = "foundry.dev/run"
LABEL_DECISION = "foundry.dev/decision"
LABEL_SOURCE = "foundry.dev/source"
# The short plan hash, for `kubectl get fa` (its Plan column) and `-l foundry.dev/plan=...`;
# spec.planHash is what the operator reads, a label being editable.
LABEL_PLAN = "foundry.dev/plan"
PLAN_LABEL_DIGITS = 12

SOURCES = ("kubernetes", "linear")
COMMENT_MAX = 4096
COMMENT_ID_MAX = 128


def build_approval_manifest(
    run: str,
    decision: str,
    approver: str,
    source: str,
    comment: str | None = None,
    *,
    namespace: str | None = None,
    comment_id: str | None = None,
    plan_hash: str | None = None,
) -> dict[str, Any]:
    """The FoundryApproval for `approver`'s `decision` on `run` (pure).

    `comment_id`: the Linear comment the decision was made in (source linear only).
    `plan_hash`: the run's status.plan.hash the decision is about (approve, replan)."""
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
    if comment_id is not None and (source != "linear" or not comment_id or len(comment_id) > COMMENT_ID_MAX):
        raise ValueError(f"comment_id is for source linear, 1 to {COMMENT_ID_MAX} characters; got {comment_id!r}")
    if plan_hash is not None and decision not in STAMPED:
        raise ValueError(f"plan_hash is for a decision about a plan ({', '.join(sorted(STAMPED))}), not {decision}")
    name = approval_name(run, decision, approver, comment_id, plan_hash)  # validates all five
    if len(approver) > 256:
        raise ValueError(f"approver identity is longer than 256 characters: {approver[:40]!r}...")
    if comment is not None and len(comment) > COMMENT_MAX:
        raise ValueError(f"comment is longer than {COMMENT_MAX} characters ({len(comment)})")
    spec: dict[str, Any] = {"run": run, "decision": decision, "approver": approver, "source": source}
    if comment:
        spec["comment"] = comment
    if comment_id is not None:
        spec["commentId"] = comment_id
    if plan_hash is not None:
        spec["planHash"] = plan_hash
    metadata: dict[str, Any] = {
        "name": name,
        "labels": {LABEL_RUN: run, LABEL_DECISION: decision, LABEL_SOURCE: label_value(source)},
    }
    if plan_hash is not None:
        metadata["labels"][LABEL_PLAN] = plan_hash.removeprefix("sha256:")[:PLAN_LABEL_DIGITS]
    if namespace is not None:
        metadata["namespace"] = namespace
    return {"apiVersion": API_VERSION, "kind": KIND, "metadata": metadata, "spec": spec}


def approval_identity(obj: dict[str, Any]) -> Hashable:
    """Same run, decision, approver, comment and plan: the same approval (the note may differ)."""
    spec = obj.get("spec") or {}
    return (spec.get("run"), spec.get("decision"), spec.get("approver"), spec.get("commentId"), spec.get("planHash"))


def _describe(identity: Hashable) -> str:
    run, decision, approver, comment_id, plan_hash = identity  # type: ignore[misc]
    made = f" in Linear comment {comment_id}" if comment_id else ""
    plan = f" of plan {plan_hash}" if plan_hash else ""
    return f"{decision}{plan} on run {run} by {approver!r}{made}"


def create_or_attach_approval(
    api_client: client.ApiClient, namespace: str, manifest: dict[str, Any]
) -> AttachResult:
    """Record the decision, or attach to the identical one already recorded."""
    return attach.create_or_attach(
        api_client, namespace, manifest, plural=PLURAL, identity=approval_identity, describe=_describe
    )
