"""Every repository path and module the docs and the YAML comments cite exists.

Read: docs/**/*.md, README.md, helm/**/README.md, the comments (`# ...` and
`{{/* ... */}}`) of the chart, the CRDs and the example config, and the comments
and docstrings of the product code (foundry/) and tools/. A cited path
(`foundry/kube/attach.py`, `tests/test_steps_*.py`, `[x](examples/config.yaml)`)
must exist relative to the repository or to the citing file; a cited module
(`foundry.kube.attach`, `foundry.kube.runs.run_identity`) must import from the
tree, and a name after it must appear in that module. No reference may point
outside the repository (`../shared/...`) or at an issue number.
"""

from __future__ import annotations

import io
import re
import tokenize
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# An unpacked older release of the chart, kept as it was released (helm/fixtures/README.md).
RECORDED = ROOT / "helm" / "fixtures" / "foundry-0.0.9"

TOP = "foundry|tests|docs|tools|helm|crds|migrations|images|examples|\\.ci"
SEGMENT = r"(?:[\w.*-]|<[\w -]+>)+"
PATH = re.compile(rf"(?<![\w./~:@-])((?:{TOP})/{SEGMENT}(?:/{SEGMENT})*/?)")
MARKDOWN_LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
# A module path; one followed by "/" is a host or an API group (foundry.local/pause:1, foundry.dev/v1alpha1).
MODULE = re.compile(r"(?<![\w./-])((?:foundry|tests)(?:\.[A-Za-z_]\w*)+)(?![\w/])")
# Branches Foundry pushes are named foundry/<run name> (a DNS label: hyphens, never an
# underscore or a dot as a module has); examples of them are not files.
RUN_BRANCH = re.compile(r"^foundry/[a-z0-9]+(?:-[a-z0-9]+)+$")
# Made when the wheel is built (pyproject.toml: the crds and migrations directories).
WHEEL_ONLY = ("foundry/_data/",)
OUTSIDE = re.compile(r"\.\./shared|(?<![\w./-])shared/(?:DESIGN|notes)|(?<![\w./-])/work/")
ISSUE_NUMBER = re.compile(r"\bissues? #?\d{1,3}\b", re.IGNORECASE)


def _documents() -> list[Path]:
    found = sorted((ROOT / "docs").rglob("*.md")) + [ROOT / "README.md"] + sorted((ROOT / "helm").rglob("README.md"))
    return [p for p in found if RECORDED not in p.parents]


def _yaml_files() -> list[Path]:
    found = [*sorted((ROOT / "helm").rglob("*.yaml")), *sorted((ROOT / "helm").rglob("*.tpl")),
             *sorted((ROOT / "crds").glob("*.yaml")), *sorted((ROOT / "docs").rglob("*.yaml"))]
    return [p for p in found if RECORDED not in p.parents]


def _comment_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, comment text) of a YAML or chart-template file."""
    out: list[tuple[int, str]] = []
    in_block = False
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if in_block or "{{/*" in line or "{{- /*" in line:
            out.append((number, line))
            in_block = "*/" not in line
        elif "#" in line:
            # A '#' inside a quoted value is not a comment; the chart writes none outside comments.
            out.append((number, line[line.index("#"):]))
    return out


def _python_comments(path: Path) -> list[tuple[int, str]]:
    """(line, text) of the comments and docstrings of a Python file."""
    out: list[tuple[int, str]] = []
    for tok in tokenize.generate_tokens(io.StringIO(path.read_text(encoding="utf-8")).readline):
        if tok.type == tokenize.COMMENT:
            out.append((tok.start[0], tok.string))
        elif tok.type == tokenize.STRING and tok.string.lstrip("rbuRBU").startswith(('"""', "'''")):
            out += [(tok.start[0] + i, line) for i, line in enumerate(tok.string.splitlines())]
    return out


def _cited_texts() -> list[tuple[Path, int, str]]:
    texts = [(doc, n, line) for doc in _documents()
             for n, line in enumerate(doc.read_text(encoding="utf-8").splitlines(), 1)]
    texts += [(path, n, text) for path in _yaml_files() for n, text in _comment_lines(path)]
    code = sorted((ROOT / "foundry").rglob("*.py")) + sorted((ROOT / "tools").rglob("*.py"))
    texts += [(path, n, text) for path in code for n, text in _python_comments(path)]
    return texts


def _exists(cited: str, where: Path) -> bool:
    pattern = re.sub(r"<[^>]+>", "*", cited.rstrip("/"))
    for base in (ROOT, where.parent):
        if any(ch in pattern for ch in "*?["):
            if any(base.glob(pattern)):
                return True
        elif (base / pattern).exists():
            return True
    return False


def _module_exists(ref: str) -> bool:
    parts = ref.split(".")
    for k in range(len(parts), 0, -1):
        base = ROOT.joinpath(*parts[:k])
        module = base.with_suffix(".py") if base.with_suffix(".py").is_file() else base / "__init__.py"
        if not module.is_file():
            continue
        rest = parts[k:]
        if not rest:
            return True
        if len(rest) > 2:  # module.Class.method at most
            return False
        return re.search(rf"\b{re.escape(rest[0])}\b", module.read_text(encoding="utf-8")) is not None
    return False


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def missing_paths() -> list[str]:
    missing = []
    for where, number, text in _cited_texts():
        cited = {m.group(1).rstrip(".,;:") for m in PATH.finditer(text)}
        if where.suffix == ".md":
            cited |= {m.group(1) for m in MARKDOWN_LINK.finditer(text) if "://" not in m.group(1)
                      and not m.group(1).startswith("mailto:")}
        for path in sorted(cited):
            if not RUN_BRANCH.match(path) and not path.startswith(WHEEL_ONLY) and not _exists(path, where):
                missing.append(f"{_rel(where)}:{number}: {path}")
    return missing


def _chart_templates() -> set[str]:
    """The chart's named templates (`define "foundry.labels"`): in its comments they are not modules."""
    return {m.group(1) for tpl in (ROOT / "helm").rglob("*.tpl")
            for m in re.finditer(r'define\s+"([^"]+)"', tpl.read_text(encoding="utf-8"))}


def missing_modules() -> list[str]:
    templates = _chart_templates()
    return [f"{_rel(where)}:{number}: {m.group(1)}"
            for where, number, text in _cited_texts()
            for m in MODULE.finditer(text)
            if not (where.suffix in (".yaml", ".tpl") and m.group(1) in templates)
            and not _module_exists(m.group(1).rstrip("."))]


def outside_references() -> list[str]:
    return [f"{_rel(where)}:{number}: {text.strip()[:120]}"
            for where, number, text in _cited_texts() if OUTSIDE.search(text) or ISSUE_NUMBER.search(text)]


def test_every_cited_path_exists() -> None:
    assert missing_paths() == []


def test_every_cited_module_exists() -> None:
    assert missing_modules() == []


def test_no_reference_outside_the_repository_or_to_an_issue_number() -> None:
    assert outside_references() == []


@pytest.mark.parametrize("text, found", [
    ("see tests/test_rbac_live.py, which", ["tests/test_rbac_live.py"]),
    ("(`tests/test_steps_<group>.py`)", []),
    ("[example](examples/config.yaml)", []),
    ('"branch": "foundry/linear-acme-42-1"', []),
    ("pushes foundry/acme-42-a1 and foundry/no_such_module", ["foundry/no_such_module"]),
    ("https://github.com/acme/foundry/blob/main/x.py", []),
])
def test_the_path_rule(tmp_path: Path, text: str, found: list[str]) -> None:
    cited = {m.group(1).rstrip(".,;:") for m in PATH.finditer(text)}
    cited |= {m.group(1) for m in MARKDOWN_LINK.finditer(text)}
    assert sorted(p for p in cited if not RUN_BRANCH.match(p) and not _exists(p, ROOT / "docs" / "x.md")) == found


def test_the_module_rule() -> None:
    assert _module_exists("foundry.kube.runs.run_identity") and _module_exists("foundry.kube.attach")
    assert not _module_exists("foundry.testing.linear_server") and not _module_exists("foundry.kube.runs.nothing_here")
    assert [m.group(1) for m in MODULE.finditer("foundry.local/pause:1 and foundry.dev/v1alpha1")] == []
