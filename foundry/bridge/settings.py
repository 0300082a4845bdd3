"""The bridge's configuration, read from the environment (and the config file for trigger rules)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from foundry.bridge.verify import DEFAULT_TOLERANCE_SECONDS, parse_secrets
from foundry.domain.triggers import DEFAULT_TRIGGER_LABEL, TriggerRule
from foundry.linear_sweep.loop import sweep_settings
from foundry.linear_sweep.sweeper import SweepSettings

DEFAULT_NAMESPACE = "foundry"
# Few threads: the work is I/O plus GIL-bound client code, and more threads
# only add contention (measured: 4-8 beat 32 on a 2-core machine). With the lean
# path it also sizes that path's PostgreSQL pool (and 4x as many API server connections).
DEFAULT_WORKERS = 8


class SettingsError(ValueError):
    """The environment or config file does not describe a usable bridge; the message says what to fix."""


@dataclass(frozen=True)
class Settings:
    namespace: str
    linear_secrets: tuple[str, ...]
    github_secrets: tuple[str, ...]
    tolerance_seconds: float
    trigger: TriggerRule
    workers: int
    database_url: str | None  # None: the db module's default
    kubeconfig: str | None  # None: KUBECONFIG's default or in-cluster
    # The intake hot path on the event loop (PostgreSQL only; foundry.bridge.lean).
    # Off only to compare, or as an escape hatch: the threaded path is the reference.
    lean: bool = True
    # The Linear sweep (foundry.linear_sweep): it reads Linear with this key; None turns it off.
    linear_api_key: str | None = None
    linear_url: str = "https://api.linear.app/graphql"
    sweep: SweepSettings | None = None


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number of seconds, got {raw!r}") from None
    if value <= 0:
        raise SettingsError(f"{name} must be positive, got {raw!r}")
    return value


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a whole number, got {raw!r}") from None
    if not 1 <= value <= 256:
        raise SettingsError(f"{name} must be between 1 and 256, got {raw!r}")
    return value


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{name} must be true or false, got {raw!r}")


def trigger_from_config(config: object | None) -> TriggerRule:
    """The trigger rule from a loaded config's `trigger` section (label, states); defaults without one."""
    section = getattr(config, "trigger", None) if config is not None else None
    if section is None and isinstance(config, Mapping):
        section = config.get("trigger")
    if section is None:
        return TriggerRule()
    if isinstance(section, TriggerRule):  # a loaded FoundryConfig: validated, linear.team included
        return section
    if isinstance(section, Mapping):
        label, states = section.get("label", DEFAULT_TRIGGER_LABEL), section.get("states", ())
    else:
        label, states = getattr(section, "label", DEFAULT_TRIGGER_LABEL), getattr(section, "states", ())
    if label is not None and not isinstance(label, str):
        raise SettingsError(f"trigger.label must be a string, got {label!r}")
    if isinstance(states, str) or not all(isinstance(s, str) for s in states or ()):
        raise SettingsError(f"trigger.states must be a list of workflow state names, got {states!r}")
    rule = TriggerRule(label=label or None, states=tuple(states or ()))
    if not rule.label and not rule.states:
        raise SettingsError("trigger needs a label or at least one state; as written nothing would ever start a run")
    return rule


def settings_from_env(env: Mapping[str, str], config: object | None = None) -> Settings:
    """Settings from `env` (os.environ in production) and the already loaded config file, if any."""
    linear = parse_secrets(env.get("FOUNDRY_LINEAR_WEBHOOK_SECRET"))
    github = parse_secrets(env.get("FOUNDRY_GITHUB_WEBHOOK_SECRET"))
    if not linear and not github:
        raise SettingsError(
            "no webhook secret configured: set FOUNDRY_LINEAR_WEBHOOK_SECRET and/or "
            "FOUNDRY_GITHUB_WEBHOOK_SECRET (comma-separated to rotate)"
        )
    return Settings(
        namespace=env.get("FOUNDRY_NAMESPACE", "").strip() or DEFAULT_NAMESPACE,
        linear_secrets=linear,
        github_secrets=github,
        tolerance_seconds=_float(env, "FOUNDRY_WEBHOOK_TOLERANCE_SECONDS", DEFAULT_TOLERANCE_SECONDS),
        trigger=trigger_from_config(config),
        workers=_int(env, "FOUNDRY_BRIDGE_WORKERS", DEFAULT_WORKERS),
        database_url=env.get("FOUNDRY_DATABASE_URL", "").strip() or None,
        kubeconfig=env.get("KUBECONFIG", "").strip() or None,
        lean=_flag(env, "FOUNDRY_BRIDGE_LEAN", True),
        linear_api_key=env.get("FOUNDRY_LINEAR_API_KEY", "").strip() or None,
        linear_url=(env.get("FOUNDRY_LINEAR_URL", "").strip()
                    or getattr(getattr(config, "linear", None), "api_url", None) or Settings.linear_url),
        sweep=sweep_settings(config),
    )
