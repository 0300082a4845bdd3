"""An operator started without Linear or GitHub credentials (the chart's no-values install) starts,
says what is missing, and makes a run that needs them wait rather than fail."""

from __future__ import annotations

import logging

import pytest

from foundry.connectors.unconfigured import NotConfigured
from foundry.operator.deps import build_deps
from foundry.operator.errors import RetryLater
from foundry.operator.outside import outside_call

pytestmark = [pytest.mark.kube, pytest.mark.postgres]


def test_missing_credentials_start_an_operator_whose_calls_wait(control_plane, pg_url, monkeypatch, caplog, tmp_path):
    monkeypatch.setenv("KUBECONFIG", str(control_plane.kubeconfig))
    monkeypatch.setenv("FOUNDRY_DATABASE_URL", pg_url)
    monkeypatch.setenv("FOUNDRY_CONFIG", str(tmp_path / "config.yaml"))
    (tmp_path / "config.yaml").write_text("")
    monkeypatch.delenv("FOUNDRY_LINEAR_API_KEY", raising=False)
    monkeypatch.setenv("FOUNDRY_GITHUB_TOKEN", "  ")  # blank counts as unset
    with caplog.at_level(logging.WARNING, logger="foundry.operator"):
        deps = build_deps()
    try:
        warnings = " ".join(r.getMessage() for r in caplog.records)
        assert "FOUNDRY_LINEAR_API_KEY is not set (chart value secrets.linearApiKey)" in warnings
        assert "FOUNDRY_GITHUB_TOKEN is not set (chart value secrets.githubToken)" in warnings

        with pytest.raises(NotConfigured) as refused:
            deps.linear.get_issue("issue-1")
        assert refused.value.retryable and not refused.value.maybe_applied
        # What a reconcile step sees: a retry later, with the reason in its message (status, Events).
        with pytest.raises(RetryLater) as later:
            with outside_call("reading the ticket"):
                deps.github.get_pull("acme/api", 7)
        assert "secrets.githubToken" in str(later.value)
        # Attributes read with getattr(..., default) stay plain values, not callables.
        assert deps.github.base_url is None and deps.linear.url is None
    finally:
        deps.close()


def test_set_credentials_give_the_real_clients(control_plane, pg_url, monkeypatch, tmp_path):
    from foundry.connectors.github import GitHubClient
    from foundry.connectors.linear import LinearClient

    monkeypatch.setenv("KUBECONFIG", str(control_plane.kubeconfig))
    monkeypatch.setenv("FOUNDRY_DATABASE_URL", pg_url)
    monkeypatch.delenv("FOUNDRY_CONFIG", raising=False)
    monkeypatch.setenv("FOUNDRY_LINEAR_API_KEY", "lin_api_x")
    monkeypatch.setenv("FOUNDRY_GITHUB_TOKEN", "ghp_x")
    deps = build_deps()
    try:
        assert isinstance(deps.linear, LinearClient) and isinstance(deps.github, GitHubClient)
    finally:
        deps.close()
