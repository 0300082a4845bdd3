"""Who may do what on the local GitHub: access tokens, a GitHub App and its JWTs.

Two kinds of token exist, like on GitHub:
- static tokens a test registers (a personal access token: one user, optionally
  limited to some repositories and permissions, optionally expiring);
- installation tokens the stand-in mints on `POST /app/installations/{id}/access_tokens`
  for a registered App, limited to the repositories and permissions asked for.

The JWT rules are GitHub's: RS256 signed with the App's key, `iss` the App id,
`iat` not in the future (60 s of clock skew allowed), `exp` in the future and at
most 10 minutes after `iat`.
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Mapping

import jwt

LEVELS = {"read": 1, "write": 2, "admin": 3}
# What a full-access static token holds (the stand-in's default token: today's behaviour).
ALL_PERMISSIONS: Mapping[str, str] = {
    "contents": "write", "pull_requests": "write", "checks": "write", "statuses": "write",
    "issues": "write", "metadata": "read",
}
JWT_SKEW = 60  # seconds an `iat` may lie in the future
JWT_MAX_LIFETIME = 600  # exp - iat, GitHub's ten minutes


class AuthError(Exception):
    """A request GitHub would refuse: `status` and GitHub's kind of message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class AccessToken:
    token: str
    login: str  # who acts with it: a user, or "<app-slug>[bot]" for an installation token
    repositories: frozenset[str] | None  # full names; None: every repository
    permissions: dict[str, str]
    expires_at: float | None  # epoch seconds; None: never
    kind: str = "static"  # static | installation
    installation_id: int | None = None

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and now >= self.expires_at

    def can_see(self, repo: str) -> bool:
        return self.repositories is None or repo in self.repositories

    def has(self, permission: str, level: str) -> bool:
        return LEVELS.get(self.permissions.get(permission, ""), 0) >= LEVELS[level]


@dataclass
class App:
    app_id: int
    slug: str
    public_key_pem: str
    installation_id: int
    permissions: dict[str, str]
    account: str | None = None  # the installation's owner; None: every repository on the server
    repositories: frozenset[str] | None = None  # full names the installation may reach; None: all of the account's
    client_id: str = ""
    jwts_seen: list[dict[str, Any]] = field(default_factory=list)

    @property
    def bot_login(self) -> str:
        return f"{self.slug}[bot]"


class Tokens:
    """Thread-safe registry of tokens and Apps."""

    def __init__(self, *, clock: Any = time.time) -> None:
        self._lock = threading.Lock()
        self._tokens: dict[str, AccessToken] = {}
        self.apps: dict[int, App] = {}  # by installation id
        self.clock = clock
        self.minted: list[AccessToken] = []

    def register(self, token: str, *, login: str, repositories: list[str] | None = None,
                 permissions: Mapping[str, str] | None = None, expires_in: float | None = None) -> AccessToken:
        perms = dict(permissions if permissions is not None else ALL_PERMISSIONS)
        _check_permissions(perms)
        entry = AccessToken(token, login, frozenset(repositories) if repositories is not None else None, perms,
                            None if expires_in is None else self.clock() + expires_in)
        with self._lock:
            self._tokens[token] = entry
        return entry

    def revoke(self, token: str) -> None:
        with self._lock:
            self._tokens.pop(token, None)

    def expire(self, token: str) -> None:
        with self._lock:
            if token in self._tokens:
                self._tokens[token].expires_at = self.clock() - 1

    def lookup(self, token: str) -> AccessToken:
        """The token, or AuthError(401) for an unknown or expired one."""
        with self._lock:
            entry = self._tokens.get(token)
        if entry is None or entry.expired(self.clock()):
            raise AuthError(401, "Bad credentials")
        return entry

    def get(self, token: str) -> AccessToken | None:
        with self._lock:
            return self._tokens.get(token)

    # -- Apps ------------------------------------------------------------------

    def add_app(self, app: App) -> App:
        _check_permissions(app.permissions)
        with self._lock:
            self.apps[app.installation_id] = app
        return app

    def verify_jwt(self, token: str) -> App:
        """The App whose key signed `token`, after GitHub's checks; AuthError(401) otherwise."""
        try:
            header = jwt.get_unverified_header(token)
            claims = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise AuthError(401, "A JSON web token could not be decoded") from None
        if header.get("alg") != "RS256":
            raise AuthError(401, f"A JSON web token must be signed with RS256, not {header.get('alg')!r}")
        iss = str(claims.get("iss", ""))
        with self._lock:
            app = next((a for a in self.apps.values() if iss in (str(a.app_id), a.client_id) and iss), None)
        if app is None:
            raise AuthError(401, f"'Issuer' claim ('iss') names no known GitHub App: {iss!r}")
        try:
            jwt.decode(token, app.public_key_pem, algorithms=["RS256"],
                       options={"verify_exp": False, "verify_iat": False, "verify_nbf": False, "verify_aud": False})
        except jwt.PyJWTError:
            raise AuthError(401, "A JSON web token could not be decoded: the signature does not match the App's "
                                 "public key") from None
        iat, exp = claims.get("iat"), claims.get("exp")
        if not isinstance(iat, (int, float)) or isinstance(iat, bool):
            raise AuthError(401, "'Issued at' claim ('iat') must be an Integer representing the time that the "
                                 "assertion was issued")
        if not isinstance(exp, (int, float)) or isinstance(exp, bool):
            raise AuthError(401, "'Expiration time' claim ('exp') must be a numeric value representing the future "
                                 "time at which the assertion expires")
        now = self.clock()
        if iat > now + JWT_SKEW:
            raise AuthError(401, "'Issued at' claim ('iat') must be an Integer representing a time in the past")
        if exp <= now:
            raise AuthError(401, "'Expiration time' claim ('exp') is in the past: the JWT has expired")
        if exp - iat > JWT_MAX_LIFETIME:
            raise AuthError(401, "'Expiration time' claim ('exp') is too far in the future: at most 10 minutes "
                                 "after 'iat'")
        app.jwts_seen.append(claims)
        return app

    def mint(self, app: App, *, repositories: list[str] | None, permissions: Mapping[str, str] | None,
             lifetime: float) -> AccessToken:
        perms = dict(permissions) if permissions else dict(app.permissions)
        for name, level in perms.items():
            if level not in LEVELS or LEVELS[level] > LEVELS.get(app.permissions.get(name, ""), 0):
                raise AuthError(422, "The permissions requested are not granted to this installation.")
        perms.setdefault("metadata", "read")
        entry = AccessToken("ghs_" + secrets.token_urlsafe(27)[:36], app.bot_login,
                            frozenset(repositories) if repositories is not None else app.repositories, perms,
                            self.clock() + lifetime, kind="installation", installation_id=app.installation_id)
        with self._lock:
            self._tokens[entry.token] = entry
            self.minted.append(entry)
        return entry


def _check_permissions(perms: Mapping[str, str]) -> None:
    for name, level in perms.items():
        if level not in LEVELS:
            raise ValueError(f"permission {name!r} must be read, write or admin, got {level!r}")


def generate_app_key(bits: int = 2048) -> tuple[str, str]:
    """(private PEM, public PEM) of a fresh RSA key, like the one GitHub gives an App."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return private, public
