"""Read-only accessors over a FoundryRun dict, so steps read like prose."""

from __future__ import annotations

from typing import Any

from foundry.domain.phases import Phase


class RunView:
    def __init__(self, body: dict[str, Any]) -> None:
        self.body = body
        self.meta: dict[str, Any] = body["metadata"]
        self.spec: dict[str, Any] = body.get("spec") or {}
        self.status: dict[str, Any] = body.get("status") or {}

    @property
    def name(self) -> str:
        return self.meta["name"]

    @property
    def namespace(self) -> str:
        return self.meta["namespace"]

    @property
    def uid(self) -> str:
        return self.meta["uid"]

    @property
    def phase(self) -> Phase:
        raw = self.status.get("phase")
        return Phase(raw) if raw else Phase.PENDING

    @property
    def issue_id(self) -> str:
        return self.spec["issueId"]

    @property
    def issue_key(self) -> str:
        return self.spec.get("issueKey") or self.spec["issueId"]

    @property
    def tracker(self) -> str:
        return self.spec.get("tracker", "linear")

    @property
    def ticket(self) -> dict[str, Any]:
        return self.spec.get("ticket") or {}

    @property
    def branch(self) -> str:
        return f"foundry/{self.name}"

    @property
    def comments(self) -> dict[str, str]:
        return dict(self.status.get("comments") or {})

    @property
    def agent(self) -> dict[str, Any]:
        return dict(self.status.get("agent") or {})

    @property
    def jobs(self) -> list[dict[str, Any]]:
        return [dict(j) for j in self.agent.get("jobs") or []]

    @property
    def attempt(self) -> int:
        return int(self.agent.get("attempt") or 0)

    @property
    def pr(self) -> dict[str, Any]:
        return dict(self.status.get("pr") or {})

    @property
    def remediations(self) -> dict[str, int]:
        return dict(self.status.get("remediations") or {})

    @property
    def pr_hint(self) -> str | None:
        return (self.meta.get("annotations") or {}).get("foundry.dev/pr-hint")
