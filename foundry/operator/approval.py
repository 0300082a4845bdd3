"""kopf handler for FoundryApproval: a decision appeared → reconcile its run.

Watched as raw events, so the operator never writes to approval objects (an
admission policy binds them to their author). kopf does not retry event
handlers; drive.reconcile_soon does.
"""

from __future__ import annotations

from typing import Any

import kopf

from foundry.operator.drive import reconcile_soon
from foundry.operator.kubeio import APPROVALS, GROUP, VERSION


@kopf.on.event(GROUP, VERSION, APPROVALS)
async def approval_seen(type: str | None, body: Any, namespace: str, memo: Any, **_: Any) -> None:
    if type in (None, "DELETED"):
        return  # None: the initial listing, which the runs' own resume handlers cover
    run = (body.get("spec") or {}).get("run")
    if run:
        await reconcile_soon(memo.deps, namespace, run, f"approval {body['metadata']['name']}")
