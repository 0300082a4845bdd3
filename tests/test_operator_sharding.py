"""Which runs a shard owns, and each shard's Lease (foundry.operator.sharding, pure)."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter

import pytest

from foundry.config import parse_config
from foundry.operator.handlers import with_shard_lease
from foundry.operator.sharding import Shard, lease_name, shard_from_env, shard_of

NAMES = [f"linear-{i:06x}-a1" for i in range(4000)]


def test_every_run_belongs_to_exactly_one_shard_and_the_shards_are_even():
    shards = [Shard(4, i) for i in range(4)]
    owners = [sum(s.owns(n) for s in shards) for n in NAMES]
    assert set(owners) == {1}
    sizes = Counter(shard_of(n, 4) for n in NAMES)
    assert all(900 < sizes[i] < 1100 for i in range(4)), sizes


def test_the_hash_is_the_same_in_another_process():
    # Python's hash() of a str changes per process; the shard must not.
    code = "from foundry.operator.sharding import shard_of; print([shard_of(f'run-{i}', 7) for i in range(50)])"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={"PYTHONHASHSEED": "12345", "PATH": ""}).stdout.strip()
    assert other == str([shard_of(f"run-{i}", 7) for i in range(50)])


def test_one_shard_owns_everything_and_bad_settings_are_refused(monkeypatch):
    assert all(Shard().owns(n) for n in NAMES[:100])
    with pytest.raises(ValueError, match="index"):
        Shard(2, 2)
    with pytest.raises(ValueError, match="count"):
        Shard(0, 0)
    monkeypatch.setenv("FOUNDRY_SHARD_COUNT", "3")
    monkeypatch.setenv("FOUNDRY_SHARD_INDEX", "2")
    assert shard_from_env() == Shard(3, 2)
    assert shard_from_env(5, 1) == Shard(5, 1)  # flags win over the environment
    monkeypatch.setenv("FOUNDRY_SHARD_COUNT", "three")
    with pytest.raises(ValueError, match="FOUNDRY_SHARD_COUNT"):
        shard_from_env()


def test_each_shard_elects_its_own_leader_under_its_own_lease():
    assert lease_name(Shard()) == "foundry-operator"
    assert lease_name(Shard(3, 1)) == "foundry-operator-shard-1-of-3"
    cfg = parse_config({"operator": {"leader_election": {"enabled": True}}})
    assert with_shard_lease(cfg, Shard()) is cfg
    sharded = with_shard_lease(cfg, Shard(3, 1))
    assert sharded.operator.leader_election.lease_name == "foundry-operator-shard-1-of-3"
    assert sharded.operator.leader_election.enabled
    named = parse_config({"operator": {"leader_election": {"enabled": True, "lease_name": "mine"}}})
    assert with_shard_lease(named, Shard(3, 1)).operator.leader_election.lease_name == "mine"  # a name set is kept
