"""Where an attempt's files live (docs/agent-contract.md, "Paths and environment").

In a pod these are the contract's fixed mounts; outside one (the local
provider, tests) $FOUNDRY_WORK_DIR and $FOUNDRY_PUBLISH_DIR move them, and
without those `work/` and `publish/` in the current directory are used.

Trust follows the volumes: `work` is writable by the agent CLI, so nothing
publish relies on is kept there except the work tree's files themselves;
`publish` (the pristine git directory and the state prepare leaves for
publish) is never mounted in the agent's container.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

DEFAULT_INPUT = "/foundry/input/input.json"
DEFAULT_WORK = "/foundry/work"
DEFAULT_PUBLISH = "/foundry/publish"
DEFAULT_TOKEN_FILE = "/foundry/credentials/token"
DEFAULT_READ_TOKEN_FILE = "/foundry/credentials/read-token"

ENV_INPUT = "FOUNDRY_JOB_INPUT"
ENV_WORK = "FOUNDRY_WORK_DIR"
ENV_PUBLISH = "FOUNDRY_PUBLISH_DIR"
ENV_TOKEN_FILE = "FOUNDRY_GITHUB_TOKEN_FILE"
ENV_READ_TOKEN_FILE = "FOUNDRY_GITHUB_READ_TOKEN_FILE"


@dataclass(frozen=True)
class Layout:
    work: Path
    publish: Path
    token_file: Path
    # A plan clones with a read-only token (contents: read), never the push token.
    read_token_file: Path = Path(DEFAULT_READ_TOKEN_FILE)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, cwd: Path | None = None,
                 in_pod: bool | None = None) -> "Layout":
        """The pod's mounts; outside a pod (no /foundry/work), `work/` and `publish/` in the current
        directory (the local provider starts the runner in the attempt's folder), unless set."""
        env = os.environ if env is None else env
        here = Path(cwd or os.getcwd())
        in_pod = Path(DEFAULT_WORK).is_dir() if in_pod is None else in_pod
        work = env.get(ENV_WORK) or (DEFAULT_WORK if in_pod else str(here / "work"))
        publish = env.get(ENV_PUBLISH) or (DEFAULT_PUBLISH if in_pod else str(here / "publish"))
        return cls(Path(work), Path(publish), Path(env.get(ENV_TOKEN_FILE) or DEFAULT_TOKEN_FILE),
                   Path(env.get(ENV_READ_TOKEN_FILE) or DEFAULT_READ_TOKEN_FILE))

    @property
    def repo(self) -> Path:
        """The work tree the agent edits."""
        return self.work / "repo"

    @property
    def home(self) -> Path:
        """The CLI's HOME: its config and session files stay out of the repository."""
        return self.work / "home"

    @property
    def state(self) -> Path:
        """What the agent step records (untrusted by publish: the CLI could write here)."""
        return self.work / "state"

    @property
    def git_dir(self) -> Path:
        """The pristine git directory prepare cloned and publish commits in."""
        return self.publish / "repo.git"

    @property
    def prepared(self) -> Path:
        """prepare's record for publish (base commit), on the volume the agent never sees."""
        return self.publish / "prepared.json"

    @property
    def index(self) -> Path:
        """publish's private index file."""
        return self.publish / "index"

    @property
    def scratch(self) -> Path:
        """Scratch space for the runner's own git HOME (not the CLI's)."""
        return self.publish / "tmp"
