"""kopf handler for agent Jobs: a Job finished → reconcile the run that owns it."""

from __future__ import annotations

from typing import Any

import kopf

from foundry.operator.drive import reconcile_soon

RUN_LABEL = "foundry.dev/run"
RUN_NAMESPACE_LABEL = "foundry.dev/run-namespace"


def _finished(status: dict[str, Any]) -> bool:
    return any(c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
               for c in (status or {}).get("conditions") or [])


@kopf.on.event("batch", "v1", "jobs", labels={RUN_LABEL: kopf.PRESENT})
async def job_seen(type: str | None, body: Any, namespace: str, memo: Any, **_: Any) -> None:
    if type in (None, "DELETED") or not _finished(body.get("status") or {}):
        return  # None: the initial listing, which the runs' own resume handlers cover
    labels = body["metadata"]["labels"]
    run = labels[RUN_LABEL]
    # A Job in a dedicated agent namespace (agent.namespace) names its run's namespace.
    home = labels.get(RUN_NAMESPACE_LABEL) or namespace
    await reconcile_soon(memo.deps, home, run, f"job {body['metadata']['name']} finished")
