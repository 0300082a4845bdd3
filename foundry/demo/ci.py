"""The demo's CI: run the example repository's tests on exactly the files of a
pull request's head commit, and report a check run conclusion."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class CiResult:
    conclusion: str  # success | failure
    output: str


def run_tests(files: dict[str, str], timeout: float = 60.0) -> CiResult:
    """`python -m unittest` in a scratch copy of `files`."""
    with tempfile.TemporaryDirectory(prefix="foundry-demo-ci-") as scratch:
        for name, content in files.items():
            path = Path(scratch) / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content)
        try:
            proc = subprocess.run([sys.executable, "-m", "unittest", "-q"], cwd=scratch, capture_output=True,
                                  text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return CiResult("failure", f"tests did not finish within {timeout:g}s")
    output = (proc.stdout + proc.stderr).strip()
    return CiResult("success" if proc.returncode == 0 else "failure", output)
