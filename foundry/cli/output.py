"""Rendering for the CLI: rich tables and colours on a terminal, plain aligned
text when piped (so `foundry runs list | grep` and scripts see stable columns),
JSON/YAML on request. The formatting helpers are pure; `Printer` does the I/O.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any, TextIO

import yaml

FORMATS = ("table", "wide", "json", "yaml")

_PHASE_STYLE = {
    "Complete": "green",
    "Closed": "yellow",
    "Rejected": "red",
    "Stopped": "yellow",
    "Blocked": "red",
    "ExecutionFailed": "red",
    "Duplicate": "dim",
    "Expired": "yellow",
    "NeedsClarification": "yellow",
}


def parse_time(value: Any) -> datetime | None:
    """An aware datetime from an RFC 3339 string or datetime; None for anything else."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def age(value: Any, now: datetime | None = None) -> str:
    """kubectl-style age: 42s, 7m, 3h, 2d ('' when unknown)."""
    then = parse_time(value)
    if then is None:
        return ""
    seconds = max(0, int(((now or datetime.now(timezone.utc)) - then).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def plain_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Columns padded to their widest cell, three spaces apart, like kubectl."""
    cells = [[str(h).upper() for h in headers]] + [["" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["   ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    return "\n".join(lines)


def dump(data: Any, fmt: str) -> str:
    """`data` as JSON (indented, stable keys) or YAML."""
    if fmt == "json":
        return json.dumps(data, indent=2, sort_keys=True, default=str)
    if fmt == "yaml":
        return yaml.safe_dump(_plain(data), sort_keys=False, default_flow_style=False).rstrip()
    raise ValueError(f"unknown data format {fmt!r}")


def _plain(data: Any) -> Any:
    # safe_dump refuses datetimes inside arbitrary containers from the DB; stringify them.
    if isinstance(data, dict):
        return {k: _plain(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [_plain(v) for v in data]
    if isinstance(data, datetime):
        return data.isoformat()
    return data


class Printer:
    """Writes to stdout, with rich styling only when stdout is a terminal."""

    def __init__(self, stream: TextIO | None = None, rich: bool | None = None) -> None:
        self.stream = stream or sys.stdout
        self.rich = self.stream.isatty() if rich is None else rich
        self._console = None
        if self.rich:
            from rich.console import Console

            self._console = Console(file=self.stream, highlight=False)

    def line(self, text: str = "", style: str | None = None) -> None:
        if self._console is not None:
            self._console.print(text, style=style, markup=False)
        else:
            print(text, file=self.stream)

    def table(self, headers: Sequence[str], rows: Sequence[Sequence[Any]], title: str | None = None) -> None:
        if self._console is None:
            if title:
                print(title, file=self.stream)
            print(plain_table(headers, rows), file=self.stream)
            return
        from rich import box
        from rich.table import Table

        table = Table(title=title, box=box.SIMPLE_HEAD, title_justify="left", header_style="bold")
        for header in headers:
            table.add_column(str(header).upper())
        for row in rows:
            table.add_row(*[self._cell(headers[i], c) for i, c in enumerate(row)])
        self._console.print(table)

    def section(self, title: str) -> None:
        if self._console is not None:
            self._console.print(f"\n{title}", style="bold underline", markup=False)
        else:
            print(f"\n{title}:", file=self.stream)

    def fields(self, pairs: Sequence[tuple[str, Any]]) -> None:
        """`Key: value` lines, keys aligned; empty values are left out."""
        shown = [(k, v) for k, v in pairs if v not in (None, "", [], {})]
        width = max((len(k) for k, _ in shown), default=0)
        for key, value in shown:
            text = f"  {(key + ':').ljust(width + 1)} {value}"
            if self._console is not None and key == "Phase":
                self._console.print(text, style=_PHASE_STYLE.get(str(value), "cyan"), markup=False)
            else:
                self.line(text)

    def data(self, data: Any, fmt: str) -> None:
        print(dump(data, fmt), file=self.stream)

    @staticmethod
    def _cell(header: str, value: Any) -> Any:
        text = "" if value is None else str(value)
        if header.upper() == "PHASE":
            from rich.text import Text

            return Text(text, style=_PHASE_STYLE.get(text, "cyan"))
        return text
