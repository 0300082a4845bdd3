"""The operator's kopf handlers: settings, login, dependencies, the watches of FoundryRuns
(watch_runs.py, started here) and, by import, kopf's in watch_approvals.py and watch_jobs.py, which feed the run controller
(foundry.operator.controller: the work queue, its scheduler and workers).

Import this module, then start kopf (`foundry operator`, or `kopf run
operator/main.py`). Everything here is wiring; the decisions live in
foundry.operator.reconcile.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

import kopf

from foundry.operator import watch_approvals, watch_jobs  # noqa: F401 - importing registers their handlers

ENV_PAUSED = "FOUNDRY_OPERATOR_PAUSED"
# Where kopf kept its progress and diff base while it ran the handlers. Nothing writes there now;
# runs made by an earlier operator may still carry these annotations, and they are ignored.
ANNOTATION_PREFIX = "kopf.foundry.dev"
LIST_PAGE = 500  # objects per page of kopf's listings

log = logging.getLogger(__name__)


def apply_settings(settings: kopf.OperatorSettings, *, workers: int = 16) -> None:
    # kopf only watches: its handlers are raw event handlers, which keep no progress or
    # diff base and write nothing. Its finalizer setting stays kopf's own default on
    # purpose: kopf removes *that* finalizer from objects no handler of its needs, and
    # Foundry's (foundry.dev/finalizer) is Foundry's business.
    settings.peering.standalone = True
    # Namespaces are named exactly (or all of them): nothing to discover, and
    # scanning would need a cluster-wide `list namespaces` the chart's RBAC
    # does not grant.
    settings.scanning.disabled = True
    # The reconciler posts one Event per transition itself; kopf's per-handler
    # "Handler succeeded" events would double the API writes for nothing.
    settings.posting.level = logging.WARNING
    settings.execution.max_workers = workers
    settings.persistence.diffbase_storage = NoDiffBase()
    settings.networking.error_backoffs = (1, 1, 2, 3, 5, 8)
    # The initial listing (at start, and after a watch expired) comes in pages, so ten
    # thousand runs are never one response in the API server's memory or in ours.
    settings.watching.chunk_size = LIST_PAGE
    # A watch that silently stalls must be noticed well before a resync period.
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    # kopf's own short requests (patches, posts): its default waits five minutes.
    settings.networking.request_timeout = 30
    settings.networking.connect_timeout = 5


class NoDiffBase(kopf.DiffBaseStorage):
    """No diff base. kopf builds one (a deep copy of the object, less its status) on every watch
    event, to give change handlers their diff; raw event handlers, the only kind registered here,
    get none. On the operator's event loop, which every watch event of every run goes through,
    that copy was a tenth of the operator's CPU during an intake burst (tools/bench_operator.py)."""

    def build(self, *, body: Any, extra_fields: Any = None) -> Any:
        return None

    def fetch(self, *, body: Any) -> Any:
        return None

    def store(self, *, body: Any, patch: Any, essence: Any) -> None:
        pass


def paused_from(memo: Any) -> bool:
    """The operator-wide pause: the memo's `paused`, else FOUNDRY_OPERATOR_PAUSED=true."""
    value = memo.get("paused")
    if value is None:
        value = os.environ.get(ENV_PAUSED, "").strip().lower() in ("1", "true", "yes")
    return bool(value)


def with_shard_lease(config: Any, shard: Any) -> Any:
    """Each shard elects its own leader: a sharded operator whose Lease name is the default
    gets the shard's own (foundry.operator.sharding.lease_name); a name set by hand is kept."""
    import dataclasses

    from foundry.operator.sharding import DEFAULT_LEASE, lease_name

    election = getattr(getattr(config, "operator", None), "leader_election", None)
    if shard.count == 1 or election is None or election.lease_name != DEFAULT_LEASE:
        return config
    election = dataclasses.replace(election, lease_name=lease_name(shard, election.lease_name))
    return dataclasses.replace(config, operator=dataclasses.replace(config.operator, leader_election=election))


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    from foundry.operator.controller import RunController
    from foundry.operator.deps import build_deps
    from foundry.operator.pool import ReconcilePool
    from foundry.operator.sharding import shard_from_env

    workers = int(memo.get("workers") or os.environ.get("FOUNDRY_OPERATOR_WORKERS", 16))
    apply_settings(settings, workers=workers)
    if memo.get("deps") is None:
        memo.deps = build_deps(config_path=memo.get("config_path"))
    # Every reconcile path runs on this pool (foundry.operator.pool), so `workers` bounds them all.
    memo.deps.pool = ReconcilePool(workers)
    shard = shard_from_env(memo.get("shard_count"), memo.get("shard_index"))
    memo.deps.config = with_shard_lease(memo.deps.config, shard)
    from foundry.operator import election  # the Lease (operator.leader_election), before anything acts

    election.start(memo)
    memo.controller = RunController(memo.deps, workers=workers, shard=shard, paused_all=paused_from(memo))
    await memo.controller.start()
    memo.run_watches = start_run_watches(memo)
    if memo.controller.paused_all:
        log.warning("the operator runs paused (%s): every run is left alone, with a Paused condition", ENV_PAUSED)
    from foundry.operator import housekeeping  # the reaper, delivery pruning, finished-run GC

    memo.housekeeper = housekeeping.start(memo.deps, memo)
    port = memo.get("metrics_port") or os.environ.get("FOUNDRY_METRICS_PORT")
    if port:
        memo.deps.metrics.serve(int(port))
        log.info("metrics on :%s/metrics", port)


def start_run_watches(memo: Any) -> list[Any]:
    """One plain watch of FoundryRuns per watched namespace, or one of every namespace
    (foundry.operator.watch_runs), feeding the controller on this event loop."""
    from foundry.operator.watch_runs import RunWatch

    if "namespaces" in memo:  # `foundry operator` says (an empty list: every namespace)
        namespaces = list(memo.namespaces)
    elif os.environ.get("FOUNDRY_NAMESPACE"):  # `kopf run operator/main.py` cannot tell its handlers
        namespaces = [ns.strip() for ns in os.environ["FOUNDRY_NAMESPACE"].split(",") if ns.strip()]
    else:
        raise RuntimeError("say which namespaces to watch: `foundry operator -n NS` (or -A), or set "
                           "FOUNDRY_NAMESPACE for `kopf run operator/main.py`")
    deliver, forget = memo.controller.from_watch(asyncio.get_running_loop())
    return [RunWatch(memo.deps.api.configuration, ns, deliver, forget).start() for ns in (namespaces or [None])]


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
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    from foundry.operator import housekeeping

    for watch in memo.get("run_watches") or ():
        await asyncio.to_thread(watch.stop)
    controller = memo.get("controller")
    if controller is not None:
        await controller.stop()
    await asyncio.to_thread(housekeeping.stop, memo)  # joins its thread: not on the event loop
    from foundry.operator import election

    election.stop(memo)  # the work has stopped: release the Lease so a standby takes over at once
    deps = memo.get("deps")
    if deps is not None:
        await asyncio.to_thread(deps.close)
