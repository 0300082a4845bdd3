"""GitHub App authentication: App JWTs and installation access tokens.

Foundry acts on GitHub as an App installation, never as a person:
- the *runner token*: minted per agent attempt for exactly one repository with only
  `contents: write` and `pull_requests: write`, handed to the attempt's pod in a
  Secret (it lives an hour on GitHub and is never refreshed: an attempt is shorter);
- the *reader token*: minted per plan Job for one repository with `contents: read` and
  `metadata: read` only, so a plan's clone can never push;
- the *operator token*: the operator's own reads (PRs, files, checks, statuses,
  reviews), cached and minted again before it expires (5 minutes early), safe to
  share between threads.

The JWT follows GitHub's guidance: RS256 signed with the App's private key, `iss`
the App id, `iat` 60 s in the past (clock drift), `exp` 9 minutes ahead (GitHub
allows at most 10 after `iat`).

Tokens are secrets: InstallationToken's repr hides the value, errors never carry
it, and nothing here logs it.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable, Mapping

import httpx
import jwt

from foundry.connectors.errors import BadResponse, ConnectorError, NotFound, ServerError, Unauthorized
from foundry.connectors.retry import RetryPolicy, call_with_retry
from foundry.connectors.transport import send

DEFAULT_URL = "https://api.github.com"
API_VERSION = "2022-11-28"
JWT_BACKDATE = 60  # seconds: GitHub's advice against clock drift
JWT_LIFETIME = 9 * 60  # seconds ahead of now; with the backdate, exactly GitHub's 10-minute maximum
REFRESH_MARGIN = 5 * 60.0  # mint a new operator token this long before the old one expires
RUNNER_PERMISSIONS: Mapping[str, str] = {"contents": "write", "pull_requests": "write"}
READER_PERMISSIONS: Mapping[str, str] = {"contents": "read", "metadata": "read"}  # a plan's clone
# pull_requests: write only for the one edit the operator makes, the PR body's "Plan drift" section.
OPERATOR_PERMISSIONS: Mapping[str, str] = {
    "contents": "read", "pull_requests": "write", "checks": "read", "statuses": "read"}


class AppKeyError(ValueError):
    """The App's private key is missing or is not an RSA private key in PEM form."""


@dataclass(frozen=True)
class InstallationToken:
    token: str = field(repr=False)
    expires_at: float  # epoch seconds
    permissions: Mapping[str, str]
    repositories: tuple[str, ...] | None  # full names the token is limited to; None: all of the installation's
    minted_at: float = 0.0

    def __repr__(self) -> str:
        return (f"InstallationToken(expires_at={self.expires_at:.0f}, permissions={dict(self.permissions)}, "
                f"repositories={self.repositories})")


def load_private_key(pem: str, *, source: str) -> Any:
    """Parse an RSA private key in PEM form; AppKeyError naming `source` otherwise."""
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    try:
        key = load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError) as err:
        raise AppKeyError(f"{source}: not a PEM private key ({err})") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise AppKeyError(f"{source}: a GitHub App key is RSA, got {type(key).__name__}")
    return key


def app_jwt(app_id: int | str, private_key: Any, *, now: float) -> str:
    """An App JWT valid from `now - 60 s` to `now + 9 min`."""
    issued = int(now) - JWT_BACKDATE
    claims = {"iat": issued, "exp": int(now) + JWT_LIFETIME, "iss": str(app_id)}
    return jwt.encode(claims, private_key, algorithm="RS256")


def _epoch(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


class GitHubApp:
    """One App installation: mints installation tokens (thread-safe)."""

    def __init__(
        self,
        app_id: int | str,
        installation_id: int,
        private_key_pem: str,
        *,
        base_url: str = DEFAULT_URL,
        timeout: float = 10.0,
        retry: RetryPolicy = RetryPolicy(),
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
        transport: httpx.BaseTransport | None = None,
        refresh_margin: float = REFRESH_MARGIN,
        operator_permissions: Mapping[str, str] | None = OPERATOR_PERMISSIONS,
        key_source: str = "the GitHub App private key",
    ) -> None:
        if not str(app_id).strip():
            raise ValueError("GitHubApp needs an app id")
        if not isinstance(installation_id, int) or installation_id < 1:
            raise ValueError(f"installation id must be a positive integer, got {installation_id!r}")
        self.app_id = app_id
        self.installation_id = installation_id
        self._key = load_private_key(private_key_pem, source=key_source)
        self.base_url = base_url.rstrip("/")
        self.retry = retry
        self.refresh_margin = refresh_margin
        self.operator_permissions = dict(operator_permissions) if operator_permissions is not None else None
        self._sleep = sleep
        self._clock = clock
        self._http = httpx.Client(timeout=timeout, transport=transport, headers={
            "Accept": "application/vnd.github+json", "X-GitHub-Api-Version": API_VERSION, "User-Agent": "foundry"})
        self._lock = threading.Lock()  # the counter
        # Held while the operator token is checked and minted: one mint however many threads ask.
        self._operator_lock = threading.Lock()
        self._operator: InstallationToken | None = None
        #: How many tokens this object minted (for metrics and tests).
        self.minted = 0

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "GitHubApp":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def jwt(self) -> str:
        return app_jwt(self.app_id, self._key, now=self._clock())

    # -- tokens ---------------------------------------------------------------------

    def mint(self, *, repositories: list[str] | None = None,
             permissions: Mapping[str, str] | None = None) -> InstallationToken:
        """A new installation token, limited to `repositories` (full names "owner/name", all of one
        owner) and `permissions` when given (GitHub refuses with 422 what the App lacks)."""
        body: dict[str, Any] = {}
        if repositories is not None:
            owners = {r.partition("/")[0] for r in repositories}
            if len(owners) != 1 or any(r.count("/") != 1 for r in repositories):
                raise ValueError(f"repositories must be 'owner/name' of one owner, got {repositories!r}")
            body["repositories"] = [r.partition("/")[2] for r in repositories]  # GitHub wants bare names
        if permissions is not None:
            body["permissions"] = dict(permissions)
        target = f"installation {self.installation_id}"
        url = f"{self.base_url}/app/installations/{self.installation_id}/access_tokens"

        def once() -> InstallationToken:
            response = send(self._http, "create_installation_token", target, "POST", url, json=body,
                            headers={"Authorization": f"Bearer {self.jwt()}"})
            return self._read_token(target, response)

        # Minting twice does no harm (the spare token expires unused), so every retryable error is retried.
        token = call_with_retry(once, self.retry, sleep=self._sleep)
        with self._lock:
            self.minted += 1
        return token

    def bot_login(self) -> str:
        """The login GitHub shows for what the App's installation tokens do: `<slug>[bot]` (cached)."""
        with self._lock:
            cached = getattr(self, "_bot_login", None)
        if cached:
            return cached
        url = f"{self.base_url}/app"

        def once() -> str:
            response = send(self._http, "get_app", "app", "GET", url, headers={"Authorization": f"Bearer {self.jwt()}"})
            if response.status_code != 200:
                raise BadResponse("get_app", "app", f"HTTP {response.status_code}: {_message(response)}",
                                  status=response.status_code)
            return f"{response.json()['slug']}[bot]"

        login = call_with_retry(once, self.retry, sleep=self._sleep)
        with self._lock:
            self._bot_login = login
        return login

    def runner_token(self, repo: str) -> InstallationToken:
        """The token an agent attempt gets: one repository, contents and pull requests write, nothing else."""
        return self.mint(repositories=[repo], permissions=RUNNER_PERMISSIONS)

    def reader_token(self, repo: str) -> InstallationToken:
        """The token a plan Job gets: one repository, read only (it clones; it can never push)."""
        return self.mint(repositories=[repo], permissions=READER_PERMISSIONS)

    def operator_token(self) -> str:
        """The operator's own token, cached and minted again `refresh_margin` before expiry
        (or half-way through its life, if that is shorter)."""
        with self._operator_lock:
            current = self._operator
            if current is not None and not self._due(current):
                return current.token
            fresh = self.mint(permissions=self.operator_permissions)
            self._operator = fresh
            return fresh.token

    def invalidate_operator_token(self, token: str | None = None) -> None:
        """Forget the cached operator token (GitHub refused it: revoked, or the clock lied)."""
        with self._operator_lock:
            if self._operator is not None and (token is None or self._operator.token == token):
                self._operator = None

    def _due(self, token: InstallationToken) -> bool:
        life = max(0.0, token.expires_at - token.minted_at)
        margin = min(self.refresh_margin, life / 2)
        return self._clock() >= token.expires_at - margin

    def _read_token(self, target: str, response: httpx.Response) -> InstallationToken:
        status = response.status_code
        message = _message(response)
        if status >= 500:
            raise ServerError("create_installation_token", target, message, status=status)
        if status in (401, 403):
            raise Unauthorized("create_installation_token", target, f"GitHub refused the App's JWT: {message}",
                               status=status)
        if status == 404:
            raise NotFound("create_installation_token", target,
                           f"no such installation of App {self.app_id}: {message}", status=status)
        if status != 201:
            raise BadResponse("create_installation_token", target, f"unexpected status: {message}", status=status)
        try:
            data = response.json()
            token, expires = data["token"], _epoch(data["expires_at"])
        except (ValueError, KeyError, TypeError) as err:
            raise BadResponse("create_installation_token", target, f"malformed answer ({type(err).__name__})") \
                from None
        repos = data.get("repositories")
        return InstallationToken(token, expires, dict(data.get("permissions") or {}),
                                 tuple(r["full_name"] for r in repos) if isinstance(repos, list) else None,
                                 minted_at=self._clock())


def _message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.reason_phrase or f"HTTP {response.status_code}"
    if isinstance(body, dict) and body.get("message"):
        return str(body["message"])
    return response.reason_phrase or f"HTTP {response.status_code}"


# -- from configuration --------------------------------------------------------------------


def private_key_from(settings: Any, env: Mapping[str, str] | None = None) -> tuple[str, str]:
    """(PEM text, where it came from) for a GitHubSettings that names an App key."""
    env = os.environ if env is None else env
    if getattr(settings, "private_key_file", None):
        path = settings.private_key_file
        try:
            with open(path, encoding="utf-8") as f:
                return f.read(), f"github.private_key_file {path}"
        except OSError as err:
            raise AppKeyError(f"github.private_key_file: cannot read {path}: {err.strerror}") from None
    name = getattr(settings, "private_key_env", None)
    if name:
        value = env.get(name)
        if not value:
            raise AppKeyError(f"github.private_key_env: environment variable {name} is not set or empty")
        return value, f"${name}"
    raise AppKeyError("github: app_id is set but neither private_key_file nor private_key_env names the key")


def app_from_settings(settings: Any, env: Mapping[str, str] | None = None, **kwargs: Any) -> GitHubApp | None:
    """The App configured in `settings` (GitHubSettings), or None when only a static token is used."""
    if getattr(settings, "app_id", None) is None:
        return None
    pem, source = private_key_from(settings, env)
    kwargs.setdefault("base_url", settings.api_url)  # a caller may override it ($FOUNDRY_GITHUB_URL)
    return GitHubApp(settings.app_id, settings.installation_id, pem, key_source=source, **kwargs)


def token_source(app: GitHubApp) -> Callable[[], str]:
    """A callable GitHubClient accepts as its token: the operator's cached installation token."""
    def current() -> str:
        return app.operator_token()

    current.invalidate = app.invalidate_operator_token  # type: ignore[attr-defined]
    current.login = app.bot_login  # type: ignore[attr-defined]  # who the App's tokens act as
    return current


__all__ = ["AppKeyError", "ConnectorError", "GitHubApp", "InstallationToken", "OPERATOR_PERMISSIONS",
           "RUNNER_PERMISSIONS", "app_from_settings", "app_jwt", "load_private_key", "private_key_from",
           "token_source"]
