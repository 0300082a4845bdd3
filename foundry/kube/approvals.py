"""FoundryApproval objects: one approver's decision on one run, recorded at most once.

The name is approval_name(run, decision, approver[, comment id]), so a retried
webhook or a repeated `foundry approve` gets 409 and attaches instead of
counting twice. A decision from Linear names the comment it was made in
(spec.commentId): the operator reads that comment back from Linear before the
decision counts.
"""

from __future__ import annotations

from typing import Any, Hashable

from kubernetes import client

from foundry.domain.naming import approval_name, label_value
from foundry.kube import attach
from foundry.kube.attach import AttachResult
from foundry.kube.crds import GROUP, VERSION

KIND = "FoundryApproval"
PLURAL = "foundryapprovals"
API_VERSION = f"{GROUP}/{VERSION}"

LABEL_RUN = "foundry.dev/run"
LABEL_DECISION = "foundry.dev/decision"
LABEL_SOURCE = "foundry.dev/source"

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
) -> dict[str, Any]:
    """The FoundryApproval for `approver`'s `decision` on `run` (pure).

    `comment_id`: the Linear comment the decision was made in (source linear only)."""
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
    if comment_id is not None and (source != "linear" or not comment_id or len(comment_id) > COMMENT_ID_MAX):
        raise ValueError(f"comment_id is for source linear, 1 to {COMMENT_ID_MAX} characters; got {comment_id!r}")
    name = approval_name(run, decision, approver, comment_id)  # validates run, decision, approver
    if len(approver) > 256:
        raise ValueError(f"approver identity is longer than 256 characters: {approver[:40]!r}...")
    if comment is not None and len(comment) > COMMENT_MAX:
        raise ValueError(f"comment is longer than {COMMENT_MAX} characters ({len(comment)})")
    spec: dict[str, Any] = {"run": run, "decision": decision, "approver": approver, "source": source}
    if comment:
        spec["comment"] = comment
    if comment_id is not None:
        spec["commentId"] = comment_id
    metadata: dict[str, Any] = {
        "name": name,
        "labels": {LABEL_RUN: run, LABEL_DECISION: decision, LABEL_SOURCE: label_value(source)},
    }
    if namespace is not None:
        metadata["namespace"] = namespace
    return {"apiVersion": API_VERSION, "kind": KIND, "metadata": metadata, "spec": spec}


def approval_identity(obj: dict[str, Any]) -> Hashable:
    """Same run, same decision, same approver: the same approval (the comment may differ)."""
    spec = obj.get("spec") or {}
    return (spec.get("run"), spec.get("decision"), spec.get("approver"), spec.get("commentId"))


def _describe(identity: Hashable) -> str:
    run, decision, approver, comment_id = identity  # type: ignore[misc]
    made = f" in Linear comment {comment_id}" if comment_id else ""
    return f"{decision} on run {run} by {approver!r}{made}"


def create_or_attach_approval(
    api_client: client.ApiClient, namespace: str, manifest: dict[str, Any]
) -> AttachResult:
    """Record the decision, or attach to the identical one already recorded."""
    return attach.create_or_attach(
        api_client, namespace, manifest, plural=PLURAL, identity=approval_identity, describe=_describe
    )
