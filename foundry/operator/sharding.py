"""Which runs this operator owns, when several operators split one cluster (pure).

Two ways to split, usable together:

- by namespace: each operator is started for its own namespaces (`--namespace`),
  so it never even watches the others' runs;
- by shard: `shard_count` operators watch the same namespaces and each acts on
  the runs whose name hashes to its `shard_index`. The hash is SHA-256 of the
  run's name, so it is the same in every process, on every machine, across
  restarts (Python's own `hash()` is salted per process).

Each shard elects its own leader, so each needs its own Lease: `lease_name`
gives the default one.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

ENV_SHARD_COUNT = "FOUNDRY_SHARD_COUNT"
ENV_SHARD_INDEX = "FOUNDRY_SHARD_INDEX"
DEFAULT_LEASE = "foundry-operator"


def shard_of(name: str, count: int) -> int:
    """The shard (0 … count-1) of the run called `name`."""
    digest = hashlib.sha256(name.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % count


@dataclass(frozen=True)
class Shard:
    count: int = 1
    index: int = 0

    def __post_init__(self) -> None:
        if self.count < 1:
            raise ValueError(f"the shard count must be at least 1, got {self.count}")
        if not 0 <= self.index < self.count:
            raise ValueError(f"the shard index must be in 0..{self.count - 1}, got {self.index}")

    def owns(self, name: str) -> bool:
        return self.count == 1 or shard_of(name, self.count) == self.index

    @property
    def label(self) -> str:
        """How logs, metrics and the default Lease name say which shard this is ("" when unsharded)."""
        return "" if self.count == 1 else f"shard-{self.index}-of-{self.count}"


def lease_name(shard: Shard, base: str = DEFAULT_LEASE) -> str:
    """The default Lease of `shard`'s leader election: the base name, suffixed with the shard when sharded."""
    return base if shard.count == 1 else f"{base}-{shard.label}"


def shard_from_env(count: int | None = None, index: int | None = None) -> Shard:
    """The shard named by the arguments, else by FOUNDRY_SHARD_COUNT / FOUNDRY_SHARD_INDEX, else the whole."""
    def pick(value: int | None, env: str, default: int) -> int:
        if value is not None:
            return int(value)
        raw = os.environ.get(env, "").strip()
        try:
            return int(raw) if raw else default
        except ValueError:
            raise ValueError(f"{env} must be a whole number, got {raw!r}") from None

    return Shard(pick(count, ENV_SHARD_COUNT, 1), pick(index, ENV_SHARD_INDEX, 0))
