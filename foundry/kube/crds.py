"""Install Foundry's CRDs (server-side apply) and wait until the API serves them."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import urllib3
import yaml
from kubernetes import client

from foundry.kube.errors import KubeRequestError, translate

GROUP = "foundry.dev"
VERSION = "v1alpha1"
FIELD_MANAGER = "foundry"
_APPLY = "application/apply-patch+yaml"


class CrdError(RuntimeError):
    """A CRD file is missing or malformed, or the API server would not establish it."""


def default_crd_dir() -> Path:
    """Where the CRD YAML lives: inside an installed wheel, else the source checkout's crds/."""
    package_root = Path(__file__).resolve().parents[1]
    for candidate in (package_root / "_data" / "crds", package_root.parent / "crds"):
        if candidate.is_dir():
            return candidate
    raise CrdError(
        f"no CRD directory found (looked in {package_root / '_data' / 'crds'} and "
        f"{package_root.parent / 'crds'}); pass crd_dir explicitly"
    )


def load_crds(crd_dir: Path | str | None = None) -> list[dict[str, Any]]:
    """Every CustomResourceDefinition in `crd_dir`/*.yaml, sorted by file name."""
    directory = Path(crd_dir) if crd_dir is not None else default_crd_dir()
    files = sorted(directory.glob("*.yaml"))
    if not files:
        raise CrdError(f"no *.yaml files in CRD directory {directory}")
    crds = []
    for path in files:
        try:
            documents = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]
        except yaml.YAMLError as exc:
            raise CrdError(f"{path}: not valid YAML: {exc}") from exc
        for doc in documents:
            if not isinstance(doc, dict) or doc.get("kind") != "CustomResourceDefinition":
                raise CrdError(f"{path}: expected only CustomResourceDefinition documents")
            if not doc.get("metadata", {}).get("name"):
                raise CrdError(f"{path}: a CustomResourceDefinition without metadata.name")
            crds.append(doc)
    return crds


def established(crd: client.V1CustomResourceDefinition) -> tuple[bool, str | None]:
    """(serving?, why not) from a CRD's status conditions.

    A NamesAccepted=False condition never resolves by waiting (another CRD
    owns the names), so it is reported as the reason to stop early.
    """
    conditions = {c.type: c for c in (crd.status.conditions or [])} if crd.status else {}
    names = conditions.get("NamesAccepted")
    if names is not None and names.status == "False":
        return False, f"names not accepted: {names.message}"
    est = conditions.get("Established")
    return bool(est is not None and est.status == "True"), None


def install_crds(
    api_client: client.ApiClient,
    crd_dir: Path | str | None = None,
    timeout: float = 60.0,
) -> list[str]:
    """Server-side apply every CRD in `crd_dir` and wait until each is Established.

    Safe to run repeatedly and from several processes at once (apply is
    idempotent; force takes over fields another manager set). Returns the CRD
    names. Raises KubeRequestError if the server refuses the apply and CrdError
    if a CRD is not established within `timeout` seconds.
    """
    api = client.ApiextensionsV1Api(api_client)
    crds = load_crds(crd_dir)
    names = [crd["metadata"]["name"] for crd in crds]
    for crd in crds:
        name = crd["metadata"]["name"]
        try:
            api.patch_custom_resource_definition(
                name, crd, field_manager=FIELD_MANAGER, force=True, _content_type=_APPLY
            )
        except client.ApiException as exc:
            raise translate(exc, f"applying CRD {name}") from exc
        except urllib3.exceptions.HTTPError as exc:
            raise KubeRequestError(f"applying CRD {name}", 0, "Unreachable", str(exc)) from exc
    deadline = time.monotonic() + timeout
    for name in names:
        _wait_established(api, name, deadline, timeout)
    for crd in crds:
        _first_read(api_client, crd)
    return names


def _first_read(api_client: client.ApiClient, crd: dict[str, Any]) -> None:
    # Established means the API is registered, but the server builds the
    # resource's storage on the first request (about a second). Paying for it
    # here keeps that delay out of the first real create. A caller allowed to
    # install CRDs but not to list the resources simply skips this.
    spec = crd["spec"]
    version = next((v["name"] for v in spec["versions"] if v.get("served")), None)
    if version is None:
        return
    try:
        client.CustomObjectsApi(api_client).list_cluster_custom_object(
            spec["group"], version, spec["names"]["plural"], limit=1
        )
    except client.ApiException as exc:
        if exc.status not in (401, 403):
            raise translate(exc, f"listing {spec['names']['plural']}") from exc


def _wait_established(api: client.ApiextensionsV1Api, name: str, deadline: float, timeout: float) -> None:
    delay = 0.05
    while True:
        try:
            ok, problem = established(api.read_custom_resource_definition(name))
        except client.ApiException as exc:
            raise translate(exc, f"reading CRD {name}") from exc
        if ok:
            return
        if problem:
            raise CrdError(f"CRD {name} cannot be established: {problem}")
        if time.monotonic() >= deadline:
            raise CrdError(f"CRD {name} was not Established within {timeout:g}s")
        time.sleep(delay)
        delay = min(delay * 2, 0.5)
