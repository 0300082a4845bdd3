"""The operator's checkpoints are a seam, not fault injection: the product
passes them and nothing happens; only a handler a test installs acts there."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from foundry.operator import checkpoints
from tests.support.crash_points import on_point

ROOT = Path(__file__).resolve().parents[1]


def test_an_armed_fault_does_nothing_in_a_process_that_installed_no_handler(tmp_path):
    # What a deployed operator is: FOUNDRY_FAULT in its environment cannot kill it.
    code = "from foundry.operator.checkpoints import reached; reached('after-job-create'); print('alive')"
    env = {"FOUNDRY_FAULT": "after-job-create", "FOUNDRY_FAULT_ONCE_DIR": str(tmp_path), "PATH": "/usr/bin",
           "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout.strip()) == (0, "alive"), done.stderr
    assert not list(tmp_path.iterdir())


def test_no_product_module_reads_the_crash_switches():
    readers = [str(p.relative_to(ROOT)) for p in (ROOT / "foundry").rglob("*.py")
               if "FOUNDRY_FAULT" in p.read_text()]  # FOUNDRY_FAULT, _ONCE_DIR, _BLOCK_LEASE: tests.support
    assert readers == []
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("foundry.operator.faults")


def test_a_misspelt_checkpoint_is_refused():
    with pytest.raises(ValueError, match="unknown checkpoint"):
        checkpoints.reached("after-lunch")


def test_an_action_runs_at_its_point_only_while_its_block_runs():
    seen: list[str] = []
    with on_point("after-db-phase", lambda: seen.append("phase")):
        checkpoints.reached("after-db-insert")
        checkpoints.reached("after-db-phase")
        checkpoints.reached("after-db-phase")
    checkpoints.reached("after-db-phase")
    assert seen == ["phase", "phase"]


def test_a_point_takes_one_action_at_a_time():
    with on_point("after-comment-post", lambda: None):
        with pytest.raises(RuntimeError, match="already has an action"):
            with on_point("after-comment-post", lambda: None):
                pass
