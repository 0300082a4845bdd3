"""Read the image configuration a Dockerfile's final stage describes (pure, no I/O).

The locally built images (foundry.dev.images) take their entrypoint, user,
workdir, environment, labels and ports from here, so the Dockerfiles users build
stay the one description of each image; the tests compare the built images'
OCI configs with the same reading.

Only what the final stage sets is read: a stage's base image's own config
(the official python image's PATH and LANG) is supplied by the caller as `base_env`.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field

_VAR = re.compile(r"\$(?:\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))")


class DockerfileError(ValueError):
    pass


@dataclass
class ImageConfig:
    """The parts of an OCI image config a Dockerfile sets."""

    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    user: str = ""
    workdir: str = ""
    env: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    exposed_ports: list[str] = field(default_factory=list)  # "8080/tcp"
    volumes: list[str] = field(default_factory=list)
    stop_signal: str = ""


def instructions(text: str) -> list[tuple[str, str]]:
    """(WORD, rest) per instruction: continuation lines joined, comments and blanks dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue  # a comment inside a continued instruction is not part of it
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    if pending:
        word, _, rest = pending.strip().partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def substitute(value: str, variables: dict[str, str]) -> str:
    """Docker's $VAR, ${VAR} and ${VAR:-default}; an unknown variable becomes empty, as in docker build."""

    def repl(m: re.Match[str]) -> str:
        name = m.group("braced") or m.group("bare")
        if name in variables and (variables[name] or m.group("default") is None):
            return variables[name]
        return m.group("default") or ""

    return _VAR.sub(repl, value)


def _pairs(rest: str, variables: dict[str, str], word: str) -> list[tuple[str, str]]:
    """KEY=VALUE pairs (shell-quoted) of ENV, LABEL or ARG; also the legacy `ENV KEY value` form."""
    tokens = shlex.split(rest)
    if word == "ENV" and tokens and "=" not in tokens[0]:
        key, _, value = rest.partition(" ")
        return [(key, substitute(value.strip(), variables))]
    pairs = []
    for token in tokens:
        key, eq, value = token.partition("=")
        if not eq and word != "ARG":
            raise DockerfileError(f"{word} {rest!r}: expected KEY=VALUE")
        pairs.append((key, substitute(value, variables) if eq else ""))
    return pairs


def _exec_form(rest: str, word: str) -> list[str]:
    if not rest.startswith("["):
        # The shell form runs under /bin/sh -c, which our images configure the same way.
        return ["/bin/sh", "-c", rest]
    try:
        value = json.loads(rest)
    except json.JSONDecodeError as exc:
        raise DockerfileError(f"{word} {rest!r} is not a JSON array: {exc}") from None
    if not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
        raise DockerfileError(f"{word} {rest!r} must be a JSON array of strings")
    return value


def final_stage(text: str) -> list[tuple[str, str]]:
    steps = instructions(text)
    froms = [i for i, (word, _) in enumerate(steps) if word == "FROM"]
    if not froms:
        raise DockerfileError("no FROM instruction")
    return steps[froms[-1]:]


def global_args(text: str) -> dict[str, str]:
    """ARG defaults declared before the first FROM (they parameterise FROM lines only)."""
    out: dict[str, str] = {}
    for word, rest in instructions(text):
        if word == "FROM":
            break
        if word == "ARG":
            out.update(_pairs(rest, out, "ARG"))
    return out


def stage_args(text: str) -> dict[str, str]:
    """ARG defaults declared anywhere in the file (a build stage, or the global scope)."""
    out: dict[str, str] = {}
    for word, rest in instructions(text):
        if word == "ARG":
            for key, value in _pairs(rest, out, "ARG"):
                out.setdefault(key, value)
    return out


def image_config(text: str, build_args: dict[str, str] | None = None,
                 base_env: dict[str, str] | None = None) -> ImageConfig:
    """The config the final stage gives its image, with build args applied over the ARG defaults."""
    build_args = build_args or {}
    config = ImageConfig(env=dict(base_env or {}))
    declared: dict[str, str] = {}
    for word, rest in final_stage(text)[1:]:
        variables = {**config.env, **declared}
        if word == "ARG":
            for key, default in _pairs(rest, variables, "ARG"):
                declared[key] = build_args.get(key, default)
        elif word == "ENV":
            config.env.update(_pairs(rest, variables, "ENV"))
        elif word == "LABEL":
            config.labels.update(_pairs(rest, variables, "LABEL"))
        elif word == "USER":
            config.user = substitute(rest, variables)
        elif word == "WORKDIR":
            path = substitute(rest, variables)
            config.workdir = path if path.startswith("/") else f"{config.workdir.rstrip('/')}/{path}"
        elif word == "ENTRYPOINT":
            config.entrypoint = _exec_form(rest, word)
            config.cmd = []  # docker build: a new ENTRYPOINT resets an inherited CMD
        elif word == "CMD":
            config.cmd = _exec_form(rest, word)
        elif word == "EXPOSE":
            for port in substitute(rest, variables).split():
                config.exposed_ports.append(port if "/" in port else f"{port}/tcp")
        elif word == "VOLUME":
            config.volumes.extend(_exec_form(rest, word) if rest.startswith("[") else rest.split())
        elif word == "STOPSIGNAL":
            config.stop_signal = substitute(rest, variables)
    return config


def copies_from_context(text: str) -> list[str]:
    """Every source path a COPY/ADD takes from the build context (all stages)."""
    sources = []
    for word, rest in instructions(text):
        if word not in ("COPY", "ADD"):
            continue
        parts = [p for p in shlex.split(rest) if not p.startswith("--")]
        if any(p.startswith("--from") for p in shlex.split(rest)):
            continue
        sources.extend(parts[:-1])
    return sources
