"""`foundry bridge`: the webhook service (stateless; run as many replicas as needed)."""

from __future__ import annotations

import os

import click

from foundry.bridge.settings import SettingsError, settings_from_env


def _load_config(path: str | None) -> object | None:
    if not path:
        return None
    from foundry.config import load_config  # the operator's config file; only its `trigger` section is read

    try:
        return load_config(path)
    except FileNotFoundError:
        raise click.ClickException(f"config file {path} does not exist") from None
    except ValueError as exc:
        raise click.ClickException(f"config file {path}: {exc}") from None


@click.command()
@click.option("--host", default="0.0.0.0", show_default=True, help="Address to listen on.")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535), help="Port (0: any free port).")
@click.option(
    "--config",
    "config_path",
    envvar="FOUNDRY_CONFIG",
    type=click.Path(dir_okay=False),
    help="Foundry config file; its `trigger` section says which issues start a run. [env: FOUNDRY_CONFIG]",
)
@click.option("--log-level", default="INFO", show_default=True, type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"]))
def bridge(host: str, port: int, config_path: str | None, log_level: str) -> None:
    """Receive signed Linear and GitHub webhooks and turn them into FoundryRuns, exactly once.

    Configured from the environment: KUBECONFIG (else in-cluster), FOUNDRY_NAMESPACE,
    FOUNDRY_DATABASE_URL, FOUNDRY_LINEAR_WEBHOOK_SECRET and FOUNDRY_GITHUB_WEBHOOK_SECRET
    (comma-separated to rotate), FOUNDRY_WEBHOOK_TOLERANCE_SECONDS (default 60),
    FOUNDRY_BRIDGE_WORKERS (blocking-call threads, default 8), FOUNDRY_BRIDGE_LEAN
    (default true: PostgreSQL and the API server over pooled async HTTP; false uses
    the portable SQLAlchemy path, which SQLite always takes).

    Endpoints: POST /webhooks/linear, POST /webhooks/github, GET /healthz, GET /readyz, GET /metrics.
    """
    from foundry.bridge import logs, server
    from kubernetes.config import ConfigException

    from foundry.db.engine import DatabaseConfigError

    try:
        settings = settings_from_env(os.environ, _load_config(config_path))
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None
    logs.configure(log_level)
    try:
        server.run(settings, host, port)
    except DatabaseConfigError as exc:
        raise click.ClickException(str(exc)) from None
    except ConfigException as exc:
        raise click.ClickException(f"no Kubernetes configuration (set KUBECONFIG or run in a cluster): {exc}") from None
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


if __name__ == "__main__":  # `python -m foundry.cli.bridge`, before it is registered in foundry.cli.main
    bridge()
