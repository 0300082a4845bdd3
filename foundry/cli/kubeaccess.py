"""How CLI commands reach the cluster: kubeconfig/context/namespace options, a
client that fails fast, and one readable message for each foreseeable failure.

Exit codes shared by the CLI commands (documented in docs/operations.md):
  0 success, 1 the thing asked about does not exist or the request was refused,
  2 usage error (click), 3 the cluster or the database cannot be reached.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import click

EXIT_NOT_FOUND = 1
EXIT_UNREACHABLE = 3
# Connect quickly, read patiently: a missing cluster should not hang the prompt.
REQUEST_TIMEOUT = (5, 30)

F = TypeVar("F", bound=Callable[..., Any])


class CliError(click.ClickException):
    """A message for the user and a meaningful exit status; never a traceback."""

    def __init__(self, message: str, exit_code: int = EXIT_NOT_FOUND) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True)
class KubeTarget:
    """Where the command should talk to, as the user asked on the command line."""

    kubeconfig: str | None
    context: str | None
    namespace: str | None


def kube_options(func: F) -> F:
    """--kubeconfig, --context and -n/--namespace, collected into `target`."""

    @click.option("--kubeconfig", envvar="KUBECONFIG", type=click.Path(dir_okay=False), default=None,
                  help="Kubeconfig file. [env: KUBECONFIG, else ~/.kube/config]")
    @click.option("--context", default=None, help="Kubeconfig context (default: the current context).")
    @click.option("-n", "--namespace", default=None, envvar="FOUNDRY_NAMESPACE",
                  help="Namespace of the runs. [env: FOUNDRY_NAMESPACE, else the context's namespace, else default]")
    @functools.wraps(func)
    def wrapper(*args: Any, kubeconfig: str | None, context: str | None, namespace: str | None, **kwargs: Any) -> Any:
        # KUBECONFIG may list several files separated by ':'; the python client takes one.
        if kubeconfig and os.pathsep in kubeconfig:
            kubeconfig = kubeconfig.split(os.pathsep)[0]
        return func(*args, target=KubeTarget(kubeconfig, context, namespace), **kwargs)

    return wrapper  # type: ignore[return-value]


def connect(target: KubeTarget) -> tuple[Any, str]:
    """(ApiClient, namespace) for `target`; CliError with a clear message if there is no usable config."""
    from kubernetes import client
    from kubernetes import config as kube_config

    from foundry.kube.client import load_configuration

    path = target.kubeconfig or os.path.expanduser("~/.kube/config")
    if not os.path.exists(path):
        if os.environ.get("KUBERNETES_SERVICE_HOST"):
            return _in_cluster(target)
        raise CliError(
            f"no Kubernetes configuration: {path} does not exist. Start a local cluster with "
            "`foundry dev up` (or `foundry dev cluster`) and export the KUBECONFIG it prints.",
            EXIT_UNREACHABLE,
        )
    try:
        api = client.ApiClient(load_configuration(path, context=target.context))
        _, active = kube_config.list_kube_config_contexts(config_file=path)
        if target.context:
            contexts, _ = kube_config.list_kube_config_contexts(config_file=path)
            active = next(c for c in contexts if c["name"] == target.context)
    except (kube_config.ConfigException, StopIteration, OSError, ValueError) as exc:
        # foundry.kube.client names the file itself; the client's own words are in the cause.
        raise CliError(f"cannot use kubeconfig {path}: {exc.__cause__ or exc}", EXIT_UNREACHABLE) from None
    # The client retries refused connections three times by default; a person
    # waiting at a prompt wants the answer "no cluster" at once.
    api.configuration.retries = 0
    namespace = target.namespace or (active.get("context") or {}).get("namespace") or "default"
    return api, namespace


def _in_cluster(target: KubeTarget) -> tuple[Any, str]:
    from kubernetes import client
    from kubernetes import config as kube_config

    cfg = client.Configuration()
    kube_config.load_incluster_config(client_configuration=cfg)
    cfg.retries = 0
    ns_file = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
    namespace = target.namespace or (open(ns_file).read().strip() if os.path.exists(ns_file) else "default")
    return client.ApiClient(cfg), namespace


@contextmanager
def kube_errors(server: str | None = None) -> Iterator[None]:
    """Translate the failures a person can act on into CliError (no traceback)."""
    import urllib3
    from kubernetes.client.exceptions import ApiException

    from foundry.kube.errors import AccessDenied, IdentityConflict, KubeRequestError, api_status

    where = f" at {server}" if server else ""
    try:
        yield
    except CliError:
        raise
    except (urllib3.exceptions.HTTPError, ConnectionError) as exc:
        raise CliError(
            f"cannot reach the Kubernetes API{where}: {_root_cause(exc)}. Is the cluster running? "
            "(`foundry dev up` starts a local one)",
            EXIT_UNREACHABLE,
        ) from None
    except AccessDenied as exc:
        raise CliError(f"refused by the Kubernetes API: {exc}") from None
    except (KubeRequestError, IdentityConflict) as exc:
        raise CliError(str(exc)) from None
    except ApiException as exc:
        status, reason, message = api_status(exc)
        if status == 404 and resource_type_missing(message):
            raise CliError("Foundry's CRDs are not installed in this cluster (`foundry dev up` installs them)") from None
        if status in (401, 403):
            raise CliError(f"refused by the Kubernetes API: {message} (HTTP {status})") from None
        raise CliError(f"the Kubernetes API answered HTTP {status} {reason}: {message}") from None


def resource_type_missing(message: str) -> bool:
    """A 404 for the kind itself (CRD not installed), as opposed to one object not existing."""
    return "could not find the requested resource" in message or "404 page not found" in message


def _root_cause(exc: BaseException) -> str:
    # MaxRetryError wraps the NewConnectionError that says what actually happened.
    reason = getattr(exc, "reason", None)
    text = str(reason or exc)
    if "Connection refused" in text:
        return "connection refused"
    if "timed out" in text.lower():
        return "connection timed out"
    return text
