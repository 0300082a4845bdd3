"""The operator's kopf handlers: settings, login, dependencies, and (by import)
the per-resource handlers in run.py, approval.py and job.py.

Import this module, then start kopf (`foundry operator`, or `kopf run
operator/main.py`). Everything here is wiring; the decisions live in
foundry.operator.reconcile.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import kopf

from foundry.operator import approval, job, run  # noqa: F401 - importing registers their handlers

FINALIZER = "foundry.dev/finalizer"
# kopf's own annotations (progress, diff base and its `<prefix>/kopf-managed`
# marker). Not "foundry.dev": kopf leaves every annotation under a marked
# prefix out of the diff, so the bridge's `foundry.dev/pr-hint` bump would
# never reach the update handler and a hint would wait for the resync timer.
ANNOTATION_PREFIX = "kopf.foundry.dev"

log = logging.getLogger(__name__)


def apply_settings(settings: kopf.OperatorSettings, *, workers: int = 16) -> None:
    settings.persistence.finalizer = FINALIZER
    # Progress and the diff base live in annotations: the CRD's status schema is
    # structural and would prune kopf's own `status.kopf` stanza.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=ANNOTATION_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=ANNOTATION_PREFIX, key="last-handled-configuration")
    settings.peering.standalone = True
    # Namespaces are named exactly (or all of them): nothing to discover, and
    # scanning would need a cluster-wide `list namespaces` the chart's RBAC
    # does not grant.
    settings.scanning.disabled = True
    # The reconciler posts one Event per transition itself; kopf's per-handler
    # "Handler succeeded" events would double the API writes for nothing.
    settings.posting.level = logging.WARNING
    settings.execution.max_workers = workers
    settings.networking.error_backoffs = (1, 1, 2, 3, 5, 8)
    # A watch that silently stalls must be noticed well before a resync period.
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    # kopf's own short requests (patches, posts): its default waits five minutes.
    settings.networking.request_timeout = 30
    settings.networking.connect_timeout = 5


@kopf.on.startup()
def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    from foundry.operator.deps import build_deps
    from foundry.operator.pool import ReconcilePool

    workers = int(memo.get("workers") or os.environ.get("FOUNDRY_OPERATOR_WORKERS", 16))
    apply_settings(settings, workers=workers)
    if memo.get("deps") is None:
        memo.deps = build_deps(config_path=memo.get("config_path"))
    # Every reconcile path runs on this pool (foundry.operator.pool), so `workers` bounds them all.
    memo.deps.pool = ReconcilePool(workers)
    from foundry.operator import election  # the Lease (operator.leader_election), before anything acts

    election.start(memo)
    from foundry.operator import housekeeping  # the reaper, delivery pruning, finished-run GC

    memo.housekeeper = housekeeping.start(memo.deps, memo)
    port = memo.get("metrics_port") or os.environ.get("FOUNDRY_METRICS_PORT")
    if port:
        memo.deps.metrics.serve(int(port))
        log.info("metrics on :%s/metrics", port)


@kopf.on.login()
def login(memo: kopf.Memo, **kwargs: Any) -> kopf.ConnectionInfo | None:
    # kopf talks to the same API server, as the same identity, as the Deps'
    # ApiClient (KUBECONFIG, the ServiceAccount, or what a test handed in), so
    # the operator never acts under two identities.
    deps = memo.get("deps")
    if deps is None:
        return kopf.login_with_kubeconfig(**kwargs)
    return connection_info(deps.api)


def connection_info(api: Any) -> kopf.ConnectionInfo:
    cfg = api.configuration
    auth = (cfg.api_key or {}).get("authorization") or (cfg.api_key or {}).get("BearerToken")
    if auth and cfg.api_key_prefix.get("authorization"):
        auth = f"{cfg.api_key_prefix['authorization']} {auth}"
    scheme, token = (auth.split(" ", 1) if auth and " " in auth else ("Bearer", auth)) if auth else (None, None)
    return kopf.ConnectionInfo(
        server=cfg.host,
        ca_path=cfg.ssl_ca_cert or None,
        insecure=not cfg.verify_ssl,
        scheme=scheme,
        token=token,
        certificate_path=cfg.cert_file or None,
        private_key_path=cfg.key_file or None,
    )


@kopf.on.cleanup()
def cleanup(memo: kopf.Memo, **_: Any) -> None:
    from foundry.operator import housekeeping

    housekeeping.stop(memo)
    from foundry.operator import election

    election.stop(memo)  # the work has stopped: release the Lease so a standby takes over at once
    deps = memo.get("deps")
    if deps is not None:
        deps.close()
