"""The real agent CLIs for tests: tools/agent-clis.sh installs the pinned versions once.

A CLI that cannot be installed is a setup failure (the tests fail with what to run),
never a skip: these tests exist to prove the real CLIs work.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "tools" / "agent-clis.sh"
CLIS = ("claude", "codex", "aider")


def install_agent_clis(timeout: float = 900) -> Path:
    """Run tools/agent-clis.sh (reuses a complete install) and return its bin directory."""
    proc = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"tools/agent-clis.sh failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    lines = proc.stdout.strip().splitlines()
    if not lines:
        raise RuntimeError("tools/agent-clis.sh printed no directory")
    bin_dir = Path(lines[-1]) / "bin"
    missing = [c for c in CLIS if not (bin_dir / c).exists()]
    if missing:
        raise RuntimeError(f"tools/agent-clis.sh left no {', '.join(missing)} in {bin_dir}")
    return bin_dir


@pytest.fixture(scope="session")
def agent_bin_dir() -> Path:
    """The directory holding the pinned claude, codex and aider executables."""
    try:
        return install_agent_clis()
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as err:
        pytest.fail(f"the agent CLIs are required for these tests and could not be installed: {err}\n"
                    f"run: bash tools/agent-clis.sh (needs npm and python3.11, and the npm and PyPI registries)",
                    pytrace=False)
