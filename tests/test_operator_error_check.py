"""The operator tests' error check (tests.support.pytest_operator_errors): an
ERROR or a traceback from Foundry or kopf fails the test unless the test allows
it, in this process and in an operator child's log.

The check is run for real: pytest in a child process on a small test module.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.support.pytest_operator_errors import errors_in_log

CHILD_LOG = """\
2026-12-02 01:00:00,001 INFO kopf.objects Handler 'reconcile' succeeded.
2026-12-02 01:00:01,002 ERROR kopf.objects Handler 'reconcile' failed temporarily: database unavailable
2026-12-02 01:00:02,003 WARNING foundry.operator could not post event
2026-12-02 01:00:03,004 INFO foundry.operator.run resync of r1 failed
Traceback (most recent call last):
  File "x.py", line 1, in <module>
KeyError: 'app'
2026-12-02 01:00:04,005 INFO foundry.operator.run all well
"""


def test_errors_and_tracebacks_are_found_in_a_child_operators_log():
    found = errors_in_log(CHILD_LOG)
    assert len(found) == 2, found
    assert "failed temporarily: database unavailable" in found[0]
    assert found[1].splitlines()[0].endswith("resync of r1 failed") and "KeyError: 'app'" in found[1]


def _pytest(tmp_path: Path, body: str) -> subprocess.CompletedProcess:
    module = tmp_path / "test_operator_sample.py"
    module.write_text(textwrap.dedent(body))
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p",
                           "tests.support.pytest_operator_errors", "--rootdir", str(tmp_path), str(module)],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})


def test_an_unexpected_operator_error_fails_the_test_and_an_allowed_one_does_not(tmp_path):
    result = _pytest(tmp_path, """
        import logging
        from pathlib import Path

        import pytest

        from tests.support.pytest_operator_errors import watch_log

        def test_logs_an_error():
            logging.getLogger("foundry.operator.run").error("resync of r1 failed: boom")

        def test_raises_in_a_kopf_handler():
            try:
                raise KeyError("app")
            except KeyError:
                logging.getLogger("kopf.objects").warning("handler crashed", exc_info=True)

        def test_a_child_logs_an_error(tmp_path):
            log = tmp_path / "operator.log"
            log.write_text("2026-12-02 01:00:00,000 INFO foundry.operator old error line ERROR\\n")
            watch_log(log)
            with open(log, "a") as fh:
                fh.write("2026-12-02 01:00:01,000 ERROR kopf.objects Handler 'reconcile' failed permanently: x\\n")

        @pytest.mark.allow_operator_errors(r"resync of r\\d failed")
        def test_allows_its_error():
            logging.getLogger("foundry.operator.run").error("resync of r1 failed: boom")

        def test_other_loggers_and_warnings_pass():
            logging.getLogger("urllib3").error("not ours")
            logging.getLogger("foundry.operator").warning("a warning")
        """)
    out = result.stdout + result.stderr
    assert result.returncode == 1, out
    # A test with unexpected errors fails at teardown (pytest counts its call as passed).
    assert "5 passed, 3 errors" in out, out
    for test in ("test_logs_an_error", "test_raises_in_a_kopf_handler", "test_a_child_logs_an_error"):
        assert f"ERROR test_operator_sample.py::{test}" in out, out
    assert "KeyError: 'app'" in out and "failed permanently: x" in out, out
