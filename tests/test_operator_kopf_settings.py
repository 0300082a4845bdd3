"""kopf's settings as the operator applies them (foundry.operator.handlers.apply_settings)."""

from __future__ import annotations

import copy

import kopf
import pytest

from foundry.operator import handlers


def test_no_diff_base_is_built_for_a_watch_event(monkeypatch: pytest.MonkeyPatch) -> None:
    """kopf deep-copied every object on every watch event to build a diff base that only change
    handlers use; the operator's watches build none."""
    settings = kopf.OperatorSettings()
    handlers.apply_settings(settings)
    copies: list[object] = []
    real = copy.deepcopy
    monkeypatch.setattr(copy, "deepcopy", lambda x, *a: copies.append(x) or real(x, *a))
    body = kopf.Body({"apiVersion": "foundry.dev/v1alpha1", "kind": "FoundryRun",
                      "metadata": {"name": "r", "namespace": "ns", "labels": {"a": "b"}},
                      "spec": {"issueKey": "ACME-1"}, "status": {"phase": "Pending"}})
    storage = settings.persistence.diffbase_storage
    assert storage.build(body=body) is None and storage.fetch(body=body) is None
    assert copies == []


def test_only_raw_event_handlers_are_registered() -> None:
    """The reason a diff base is not needed: a change, create, resume, timer or daemon handler
    would get an empty diff (and kopf's per-object state), so adding one must revisit that."""
    registry = kopf.get_default_registry()
    # approvals and Jobs; FoundryRuns have a plain watch of their own (foundry.operator.watch_runs)
    assert len(list(registry._watching.get_all_handlers())) == 2
    assert list(registry._changing.get_all_handlers()) == []
    assert list(registry._spawning.get_all_handlers()) == []
