"""Risk areas (auth, payments, pii, migrations, infra) of a ticket, and later of a diff.

Before the work: words in the ticket's title, description and labels.
After the work: the changed file paths, which are the better evidence; the
policy compares the two, so a change that strays into an area nobody
approved goes back to a human.

Built-in word and path lists cover the common cases; `policy.risk_keywords`
and `policy.risk_paths` in the config add to them per area.
Results are always in RISK_AREAS order, so they compare and store stably.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from foundry.config import RISK_AREAS, FoundryConfig
from foundry.domain.globs import glob_match

# Whole words or phrases, matched case-insensitively; a trailing * allows any word ending.
KEYWORDS: Mapping[str, tuple[str, ...]] = {
    "auth": ("auth", "authn", "authz", "authentication", "authori*", "login*", "log in", "logout", "sign in",
             "sign-in", "signin", "password*", "oauth*", "sso", "saml", "jwt", "session token*", "2fa", "mfa",
             "permission*", "rbac", "access control", "api key*", "credential*"),
    "payments": ("payment*", "billing", "invoice*", "stripe", "checkout", "refund*", "subscription*",
                 "credit card*", "chargeback*", "pricing", "payout*"),
    "pii": ("pii", "personal data", "personally identifiable", "gdpr", "ccpa", "email address*", "phone number*",
            "date of birth", "ssn", "social security", "home address*", "user data export", "data retention"),
    "migrations": ("migration*", "migrate", "schema change*", "alter table", "add column", "drop column",
                   "rename column", "alembic", "backfill*", "database schema"),
    "infra": ("terraform", "kubernetes", "k8s", "helm", "dockerfile", "infrastructure", "infra", "iam",
              "dns", "load balancer*", "ci pipeline", "github actions", "deploy pipeline*", "cloudformation",
              "networking", "firewall*"),
}

PATHS: Mapping[str, tuple[str, ...]] = {
    "auth": ("**/auth/**", "**/authn/**", "**/authz/**", "auth.*", "*_auth.*", "*-auth.*", "auth_*", "*login*", "*session*", "*oauth*",
             "*permission*", "*password*"),
    "payments": ("**/payments/**", "**/billing/**", "*payment*", "*billing*", "*invoice*", "*stripe*",
                 "*checkout*"),
    "pii": ("**/pii/**", "*pii*", "*gdpr*", "*personal_data*", "*user_profile*"),
    "migrations": ("**/migrations/**", "**/alembic/**", "*.sql", "**/schema/**", "*migration*"),
    "infra": ("**/infra/**", "**/terraform/**", "*.tf", "*.tfvars", "**/helm/**", "**/charts/**", "**/k8s/**",
              "Dockerfile", "*.dockerfile", "docker-compose*.yml", "docker-compose*.yaml",
              ".github/workflows/**", "**/deploy/**"),
}


def _word_pattern(word: str) -> str:
    stem = word.rstrip("*")
    body = r"\s+".join(re.escape(part) for part in stem.split())
    tail = r"[\w-]*" if word.endswith("*") else ""
    return rf"(?<![\w-]){body}{tail}(?![\w-])"


def _keywords(area: str, cfg: FoundryConfig | None) -> tuple[str, ...]:
    extra = cfg.policy.risk_keywords.get(area, ()) if cfg is not None else ()
    return KEYWORDS[area] + tuple(extra)


def _paths(area: str, cfg: FoundryConfig | None) -> tuple[str, ...]:
    extra = cfg.policy.risk_paths.get(area, ()) if cfg is not None else ()
    return PATHS[area] + tuple(extra)


def _label_names(ticket: Mapping[str, Any]) -> list[str]:
    names = []
    for label in ticket.get("labels") or []:
        if isinstance(label, Mapping):
            label = label.get("name")
        if isinstance(label, str):
            names.append(label.strip().lower())
    return names


def areas_in_text(text: str, cfg: FoundryConfig | None = None) -> tuple[str, ...]:
    """Risk areas whose words appear in `text`."""
    lowered = text.lower()
    return tuple(
        area for area in RISK_AREAS
        if any(re.search(_word_pattern(w.lower()), lowered) for w in _keywords(area, cfg))
    )


def areas_from_ticket(ticket: Mapping[str, Any], cfg: FoundryConfig | None = None) -> tuple[str, ...]:
    """Risk areas of a ticket snapshot: its words, plus labels named after an area (`auth`, `risk:pii`)."""
    text = "\n".join(str(ticket.get(k) or "") for k in ("title", "description"))
    found = set(areas_in_text(text, cfg))
    for label in _label_names(ticket):
        name = label.split(":", 1)[1] if label.startswith("risk:") else label
        if name in RISK_AREAS:
            found.add(name)
    return tuple(a for a in RISK_AREAS if a in found)


def areas_of_path(path: str, cfg: FoundryConfig | None = None) -> tuple[str, ...]:
    """Risk areas one changed file belongs to (file names are matched case-insensitively)."""
    lowered = path.lower()
    return tuple(a for a in RISK_AREAS if any(glob_match(lowered, p.lower()) for p in _paths(a, cfg)))


def areas_from_paths(paths: Iterable[str], cfg: FoundryConfig | None = None) -> tuple[str, ...]:
    """Risk areas touched by a set of changed files (a pull request's diff)."""
    found: set[str] = set()
    for path in paths:
        found.update(areas_of_path(path, cfg))
    return tuple(a for a in RISK_AREAS if a in found)
