"""The kubeconfig token refresh hook runs at most once per interval, not before every request."""

from __future__ import annotations

import time

from kubernetes import client

from foundry.kube.client import throttle_token_refresh


def test_refresh_hook_is_throttled_but_still_runs():
    calls: list[float] = []
    cfg = client.Configuration()
    cfg.refresh_api_key_hook = lambda c: calls.append(time.monotonic())
    throttle_token_refresh(cfg, every=0.2)
    for _ in range(50):  # a burst of requests
        cfg.get_api_key_with_prefix("authorization")
    assert len(calls) == 1
    time.sleep(0.25)
    cfg.get_api_key_with_prefix("authorization")
    assert len(calls) == 2  # an expired token is still reloaded, at most `every` late


def test_no_hook_stays_no_hook():
    cfg = client.Configuration()
    throttle_token_refresh(cfg)
    assert cfg.refresh_api_key_hook is None
