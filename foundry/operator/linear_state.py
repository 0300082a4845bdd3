"""Linear workflow-state updates on key transitions.

Which state a phase moves the issue to comes from the config's `linear`
section (state_started / state_review / state_done); None leaves it alone.
The state is a courtesy to people reading Linear: an outage is retried like
any outside call, but a state name the team does not have is logged and never
holds a run back.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from foundry.connectors.errors import ConnectorError
from foundry.domain.phases import Phase
from foundry.operator.outside import outside_call

if TYPE_CHECKING:
    from foundry.operator.deps import Deps
    from foundry.operator.reconcile.view import RunView

log = logging.getLogger(__name__)

_SETTING_FOR_PHASE = {
    Phase.AGENT_RUNNING: "state_started",
    Phase.PR_OPEN: "state_review",
    Phase.REVIEW_REQUIRED: "state_review",
    Phase.COMPLETE: "state_done",
}


def target_state(config: object, phase: Phase) -> str | None:
    setting = _SETTING_FOR_PHASE.get(phase)
    linear = getattr(config, "linear", None)
    return getattr(linear, setting, None) if setting and linear is not None else None


def sync(deps: "Deps", run: "RunView", phase: Phase) -> None:
    state = target_state(deps.config, phase)
    if not state or run.tracker != "linear":
        return
    deps.leadership.fence()  # an old leader must not move the issue back to an earlier state
    try:
        with outside_call(f"moving {run.issue_key} to {state!r}"):
            deps.linear.set_issue_state(run.issue_id, state)
    except ConnectorError as err:  # not retryable (outside_call raised the retryable ones as RetryLater)
        log.warning("could not move %s to Linear state %r: %s", run.issue_key, state, err)
