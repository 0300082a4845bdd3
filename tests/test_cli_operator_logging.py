"""The operator's log levels (foundry.cli.operator.configure_logging)."""

from __future__ import annotations

import logging
from typing import Iterator

import pytest

from foundry.cli.operator import configure_logging


@pytest.fixture(autouse=True)
def restore_levels() -> Iterator[None]:
    names = ("httpx", "kopf.objects")
    levels = {n: logging.getLogger(n).level for n in names}
    yield
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


def test_request_lines_are_off_by_default_and_back_with_verbose() -> None:
    """httpx logs each request at INFO; the operator made one line per Linear call, for nothing."""
    configure_logging(verbose=False, log_format="text")
    assert logging.getLogger("httpx").level == logging.WARNING
    assert logging.getLogger("kopf.objects").level == logging.WARNING
    assert logging.getLogger("foundry.operator").level == logging.NOTSET  # the transitions keep the root's INFO
    configure_logging(verbose=True, log_format="text")
    assert logging.getLogger("httpx").level == logging.NOTSET  # the root's DEBUG
