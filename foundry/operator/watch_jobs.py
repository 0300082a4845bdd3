"""kopf's watch on agent Jobs: a Job finished → the run that owns it is due now."""

from __future__ import annotations

from typing import Any

import kopf

RUN_LABEL = "foundry.dev/run"
RUN_NAMESPACE_LABEL = "foundry.dev/run-namespace"


def _finished(status: dict[str, Any]) -> bool:
    return any(c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
               for c in (status or {}).get("conditions") or [])


@kopf.on.event("batch", "v1", "jobs", labels={RUN_LABEL: kopf.PRESENT})
async def job_seen(type: str | None, body: Any, namespace: str, memo: Any, **_: Any) -> None:
    if type in (None, "DELETED") or not _finished(body.get("status") or {}):
        return  # None: the initial listing; every active run is due at the start anyway
    labels = body["metadata"]["labels"]
    # A Job in a dedicated agent namespace (agent.namespace) names its run's namespace.
    home = labels.get(RUN_NAMESPACE_LABEL) or namespace
    controller = memo.get("controller")
    if controller is not None:
        controller.nudge(home, labels[RUN_LABEL], f"job {body['metadata']['name']} finished")
