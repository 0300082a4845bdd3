"""The `crds` fixture: Foundry's CRDs installed (and Established) once per session."""

from __future__ import annotations

import pytest

from foundry.kube.crds import install_crds


@pytest.fixture(scope="session")
def crds(kube_client) -> list[str]:
    """Names of the installed CRDs. Applying is idempotent, so an existing
    cluster (FOUNDRY_TEST_KUBECONFIG) simply gets the current definitions."""
    return install_crds(kube_client, timeout=60)
