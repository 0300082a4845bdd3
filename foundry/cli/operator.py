"""`foundry operator`: run the kopf operator in this process."""

from __future__ import annotations

import asyncio
import logging
import os

import click


@click.command("operator")
@click.option("-n", "--namespace", "namespaces", multiple=True, envvar="FOUNDRY_NAMESPACE",
              help="Namespace to watch (repeatable). Default: $FOUNDRY_NAMESPACE.")
@click.option("-A", "--all-namespaces", is_flag=True, help="Watch FoundryRuns in every namespace.")
@click.option("--config", "config_path", envvar="FOUNDRY_CONFIG", type=click.Path(dir_okay=False),
              help="Foundry's YAML config file. Default: $FOUNDRY_CONFIG.")
@click.option("--liveness", "liveness_endpoint", default=None, metavar="URL",
              help="Serve kopf's liveness probe, e.g. http://0.0.0.0:8080/healthz.")
@click.option("--metrics-port", type=int, default=None, envvar="FOUNDRY_METRICS_PORT",
              help="Serve Prometheus metrics on this port (/metrics).")
@click.option("--readiness-port", type=int, default=None, envvar="FOUNDRY_READINESS_PORT",
              help="Serve /readyz on this port: 200 leading or standby (able to take over), 503 otherwise.")
@click.option("--standalone", is_flag=True, help="Act alone, without the Lease, even if "
              "operator.leader_election.enabled is set (one process only).")
@click.option("--workers", type=click.IntRange(1, 256), default=16, show_default=True,
              help="Threads that run reconciles.")
@click.option("--paused", is_flag=True, default=None, help="Leave every run alone (a Paused condition on "
              "each says so) until started without it. [env: FOUNDRY_OPERATOR_PAUSED=true]")
@click.option("--shard-count", type=click.IntRange(1, 1024), default=None, envvar="FOUNDRY_SHARD_COUNT",
              help="Split the runs of the watched namespaces among this many operators (by a hash of "
              "the run's name). [default: 1]")
@click.option("--shard-index", type=click.IntRange(0, 1023), default=None, envvar="FOUNDRY_SHARD_INDEX",
              help="Which of the shards this operator owns, 0 … shard count - 1. [default: 0]")
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True,
              envvar="FOUNDRY_LOG_FORMAT", help="json: one JSON object per line, with run, phase and reason "
              "fields on transitions (for log pipelines). [env: FOUNDRY_LOG_FORMAT]")
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
def operator(namespaces: tuple[str, ...], all_namespaces: bool, config_path: str | None,
             liveness_endpoint: str | None, metrics_port: int | None, readiness_port: int | None,
             standalone: bool, workers: int, paused: bool | None, shard_count: int | None,
             shard_index: int | None, log_format: str, verbose: bool) -> None:
    """Drive FoundryRuns from intake to a merged pull request. With operator.leader_election
    enabled, only the holder of the operator's Lease acts; the others wait, watching."""
    if not namespaces and not all_namespaces:
        raise click.UsageError("say which namespace to watch: --namespace NAME (or --all-namespaces)")
    if namespaces and all_namespaces:
        raise click.UsageError("--namespace and --all-namespaces exclude each other")
    if (shard_index or 0) >= (shard_count or 1):
        raise click.BadParameter(f"must be below the shard count ({shard_count or 1})", param_hint="--shard-index")
    if config_path and not os.path.exists(config_path):
        raise click.BadParameter(f"no such file: {config_path}", param_hint="--config")

    import kopf

    from foundry.operator import handlers  # noqa: F401 - registers the handlers
    from foundry.operator.deps import DepsError, build_deps

    configure_logging(verbose=verbose, log_format=log_format)
    try:
        deps = build_deps(config_path)
    except (DepsError, ValueError, OSError) as err:
        raise click.ClickException(f"cannot start the operator: {err}") from err
    memo = kopf.Memo(deps=deps, metrics_port=metrics_port, workers=workers, standalone=standalone,
                     namespaces=list(namespaces), readiness_port=readiness_port, paused=paused,
                     shard_count=shard_count, shard_index=shard_index)
    asyncio.run(kopf.operator(
        standalone=True,
        clusterwide=all_namespaces,
        namespaces=list(namespaces),
        liveness_endpoint=liveness_endpoint,
        memo=memo,
    ))


def configure_logging(*, verbose: bool, log_format: str) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if log_format == "json":
        from foundry.jsonlog import JsonFormatter

        for handler in logging.getLogger().handlers:
            handler.setFormatter(JsonFormatter())
    quiet = logging.NOTSET if verbose else logging.WARNING
    logging.getLogger("kopf.objects").setLevel(quiet)
    # httpx logs every request at INFO: a line per Linear and GitHub call, which says nothing a
    # failure would not say and cost CPU under load (-v brings them back).
    logging.getLogger("httpx").setLevel(quiet)
