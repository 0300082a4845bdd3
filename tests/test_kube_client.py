"""foundry.kube.client: the one ApiClient construction of the bridge and the operator."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from foundry.bridge.backend import KUBE_RETRIES, KUBE_TIMEOUT
from foundry.kube.client import DEFAULT_RETRIES, KubeConfigError, api_client, load_configuration
from foundry.operator.deps import Deps, DepsError
from foundry.operator.deps import kube_api_client as operator_client


def _kubeconfig(path: Path, server: str) -> Path:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "k", "cluster": {"server": server}}],
        "users": [{"name": "u", "user": {"token": "t0ken"}}],
        "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}],
    }))
    return path


def test_a_named_kubeconfig_wins_over_the_pod(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    monkeypatch.setenv("KUBECONFIG", str(_kubeconfig(tmp_path / "env.yaml", "https://127.0.0.1:6443")))
    assert load_configuration().host == "https://127.0.0.1:6443"
    named = _kubeconfig(tmp_path / "named.yaml", "https://127.0.0.2:6443")
    assert load_configuration(str(named)).host == "https://127.0.0.2:6443"


def test_a_missing_kubeconfig_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    missing = tmp_path / "nope.yaml"
    with pytest.raises(KubeConfigError, match="nope.yaml"):
        load_configuration(str(missing))
    monkeypatch.setenv("KUBECONFIG", str(missing))
    with pytest.raises(DepsError, match="set KUBECONFIG or run in a pod"):
        operator_client()


def test_both_processes_bound_their_requests_their_way(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(_kubeconfig(tmp_path / "k.yaml", "https://127.0.0.1:6443")))
    bridge = api_client(None, timeouts=KUBE_TIMEOUT, retries=KUBE_RETRIES, pool_size=3)  # as RealBackend does
    assert bridge.configuration.connection_pool_maxsize == 3
    assert bridge.rest_client.pool_manager.connection_pool_kw["retries"] is KUBE_RETRIES

    operator = operator_client()
    Deps(api=operator, engine=None, linear=None, github=None, config=None, agents=None,  # type: ignore[arg-type]
         kube_timeouts=(4.0, 9.0))
    assert operator.rest_client.pool_manager.connection_pool_kw["retries"] is DEFAULT_RETRIES
    # How long each waits on a silent API server: test_bridge_timeouts, test_operator_timeouts.


def test_a_named_context_is_used(tmp_path: Path) -> None:
    path = _kubeconfig(tmp_path / "k.yaml", "https://127.0.0.1:6443")
    doc = yaml.safe_load(path.read_text())
    doc["clusters"].append({"name": "k2", "cluster": {"server": "https://127.0.0.3:6443"}})
    doc["contexts"].append({"name": "other", "context": {"cluster": "k2", "user": "u"}})
    path.write_text(yaml.safe_dump(doc))
    assert load_configuration(str(path)).host == "https://127.0.0.1:6443"
    assert load_configuration(str(path), context="other").host == "https://127.0.0.3:6443"
    with pytest.raises(KubeConfigError, match="k.yaml"):
        load_configuration(str(path), context="nope")
