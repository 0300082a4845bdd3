"""kopf's watch on FoundryApprovals: a decision appeared → its run is due now.

Watched as raw events, so the operator never writes to approval objects (an
admission policy binds them to their author). Retries are the work queue's
(foundry.operator.controller): a reconcile that meets an outage is held back
and tried again, so the decision is not dropped.
"""

from __future__ import annotations

from typing import Any

import kopf

from foundry.operator.kubeio import APPROVALS, GROUP, VERSION


@kopf.on.event(GROUP, VERSION, APPROVALS)
async def approval_seen(type: str | None, body: Any, namespace: str, memo: Any, **_: Any) -> None:
    if type in (None, "DELETED"):
        return  # None: the initial listing; every active run is due at the start anyway
    run = (body.get("spec") or {}).get("run")
    controller = memo.get("controller")
    if run and controller is not None:
        controller.nudge(namespace, run, f"approval {body['metadata']['name']}")
