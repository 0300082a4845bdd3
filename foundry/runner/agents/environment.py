"""The agent CLI's environment: an allow-list, never the runner's own environment.

The CLI reads ticket text written by anyone who can file a ticket, so it must not
see a GitHub credential or a Kubernetes token even if the runner's environment has
one. Only the basics (PATH, locale, TZ, TMPDIR), HOME (the run's private home) and the
model-API variables the CLI needs pass; a deny rule is checked on top, so widening
an allow-list by mistake still cannot let a credential through.
"""

from __future__ import annotations

import fnmatch
from typing import Iterable, Mapping

BASICS = ("PATH", "LANG", "LC_*", "TZ", "TMPDIR")
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"

# Model-API keys whose names contain TOKEN but are what the CLI is meant to have.
MODEL_KEYS_NAMED_TOKEN = frozenset({"ANTHROPIC_AUTH_TOKEN"})
DENIED = ("GITHUB_*", "GH_*", "GIT_*ASKPASS", "SSH_ASKPASS", "KUBERNETES_*", "KUBECONFIG", "FOUNDRY_GITHUB_TOKEN_FILE",
          "*TOKEN*", "AWS_*", "GOOGLE_APPLICATION_CREDENTIALS")


def denied(name: str) -> bool:
    upper = name.upper()
    if upper in MODEL_KEYS_NAMED_TOKEN:
        return False
    return any(fnmatch.fnmatchcase(upper, pattern) for pattern in DENIED)


def _allowed(name: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def build_env(source: Mapping[str, str], *, home: str, model_vars: Iterable[str],
              fixed: Mapping[str, str] | None = None) -> dict[str, str]:
    """The CLI's environment: allow-listed names from `source`, HOME, then the adapter's fixed switches.

    `model_vars` are name patterns (e.g. "ANTHROPIC_*" is too wide; list them) for the
    model API; `fixed` are the adapter's own settings (telemetry off ...), which win.
    """
    patterns = (*BASICS, *model_vars)
    env = {k: v for k, v in source.items() if _allowed(k, patterns) and not denied(k)}
    env.setdefault("PATH", DEFAULT_PATH)
    env["HOME"] = home
    for key, value in (fixed or {}).items():
        if denied(key):  # an adapter bug, not user input: fail loudly
            raise ValueError(f"refusing to pass {key} to an agent CLI")
        env[key] = value
    return env
