"""The pre-push policy (foundry.domain.changes): each rule, on both sides of its limit."""

from __future__ import annotations

import pytest

from foundry.domain.changes import (
    RULE_FORBIDDEN, RULE_MAX_FILES, RULE_MAX_LINES, RULE_WORKFLOW, Change, Constraints, check_changes,
    from_github_files,
)

LIMITS = {"forbiddenPaths": ["secrets/**", "*.pem", "deploy/prod.yaml"], "maxChangedFiles": 3,
          "maxChangedLines": 10, "allowWorkflows": False}


def rules(verdict) -> list[tuple[str, str | None]]:
    return [(v.rule, v.path) for v in verdict.violations]


def test_an_ordinary_change_passes() -> None:
    verdict = check_changes([Change("app/main.py", "modified", additions=4, deletions=2),
                             Change("tests/test_main.py", "added", additions=3)], LIMITS)
    assert verdict.allowed
    assert verdict.violations == ()
    assert (verdict.files, verdict.lines) == (2, 9)


@pytest.mark.parametrize("path,pattern", [
    ("secrets/db.txt", "secrets/**"),
    ("certs/server.pem", "*.pem"),
    ("deploy/prod.yaml", "deploy/prod.yaml"),
])
def test_editing_a_forbidden_path_is_refused(path: str, pattern: str) -> None:
    verdict = check_changes([Change(path, "modified", additions=1)], LIMITS)
    assert not verdict.allowed
    assert rules(verdict) == [(RULE_FORBIDDEN, path)]
    assert verdict.violations[0].pattern == pattern
    assert path in verdict.reason and pattern in verdict.reason


def test_deleting_a_forbidden_path_is_refused() -> None:
    verdict = check_changes([Change("deploy/prod.yaml", "removed", deletions=7)], LIMITS)
    assert rules(verdict) == [(RULE_FORBIDDEN, "deploy/prod.yaml")]
    assert "removed" in verdict.reason


def test_renaming_a_protected_file_away_is_refused_by_its_old_path() -> None:
    verdict = check_changes([Change("deploy/old-prod.yaml", "renamed", previous_path="deploy/prod.yaml")], LIMITS)
    assert not verdict.allowed
    assert rules(verdict) == [(RULE_FORBIDDEN, "deploy/prod.yaml")]
    assert "renamed away to deploy/old-prod.yaml" in verdict.reason


def test_renaming_a_file_into_a_forbidden_path_is_refused_by_its_new_path() -> None:
    verdict = check_changes([Change("secrets/notes.md", "renamed", previous_path="docs/notes.md")], LIMITS)
    assert rules(verdict) == [(RULE_FORBIDDEN, "secrets/notes.md")]


def test_a_rename_between_ordinary_paths_passes() -> None:
    assert check_changes([Change("docs/b.md", "renamed", previous_path="docs/a.md")], LIMITS).allowed


@pytest.mark.parametrize("change", [
    Change(".github/workflows/ci.yml", "modified", additions=1),
    Change(".github/workflows/new.yaml", "added", additions=1),
    Change(".github/workflows/ci.yml", "removed", deletions=1),
    Change("ci.yml", "renamed", previous_path=".github/workflows/ci.yml"),
    Change(".github/workflows/nested/x.yml", "added"),
])
def test_workflow_files_are_refused_unless_allowed(change: Change) -> None:
    refused = check_changes([change], LIMITS)
    assert [v.rule for v in refused.violations] == [RULE_WORKFLOW]
    assert "workflow" in refused.reason
    assert check_changes([change], {**LIMITS, "allowWorkflows": True}).allowed


def test_other_github_files_are_not_workflows() -> None:
    assert check_changes([Change(".github/CODEOWNERS"), Change(".github/workflows.md")], LIMITS).allowed


def test_workflows_are_refused_by_default_when_constraints_say_nothing() -> None:
    assert not check_changes([Change(".github/workflows/ci.yml")], None).allowed
    assert check_changes([Change("x.py", additions=10_000)] * 500, None).allowed


def test_max_files_is_an_inclusive_limit() -> None:
    three = [Change(f"f{i}.py", "added", additions=1) for i in range(3)]
    assert check_changes(three, LIMITS).allowed
    verdict = check_changes([*three, Change("f3.py", "added", additions=1)], LIMITS)
    assert rules(verdict) == [(RULE_MAX_FILES, None)]
    assert verdict.reason == "4 files changed, more than the limit of 3"


def test_max_lines_counts_additions_and_deletions() -> None:
    assert check_changes([Change("a.py", additions=6, deletions=4)], LIMITS).allowed
    verdict = check_changes([Change("a.py", additions=6, deletions=3), Change("b.py", "removed", deletions=2)], LIMITS)
    assert rules(verdict) == [(RULE_MAX_LINES, None)]
    assert verdict.reason == "11 lines changed, more than the limit of 10"


def test_every_violation_is_listed_and_the_reason_names_the_first() -> None:
    verdict = check_changes([
        Change("secrets/a", "added", additions=20),
        Change(".github/workflows/ci.yml"),
        Change("x.py"), Change("y.py"),
    ], LIMITS)
    assert [v.rule for v in verdict.violations] == [RULE_FORBIDDEN, RULE_WORKFLOW, RULE_MAX_FILES, RULE_MAX_LINES]
    assert verdict.reason.startswith("secrets/a matches forbidden path secrets/**")
    assert verdict.reason.endswith("(and 3 more violations)")


def test_github_pr_files_carry_the_old_path_of_a_rename() -> None:
    files = [
        {"filename": "deploy/moved.yaml", "status": "renamed", "previous_filename": "deploy/prod.yaml",
         "additions": 0, "deletions": 0},
        {"filename": "app.py", "status": "changed", "additions": 0, "deletions": 0},
        {"filename": "gone.txt", "status": "removed", "additions": 0, "deletions": 3},
    ]
    changes = from_github_files(files)
    assert [(c.path, c.status, c.previous_path) for c in changes] == [
        ("deploy/moved.yaml", "renamed", "deploy/prod.yaml"), ("app.py", "modified", None), ("gone.txt", "removed", None)]
    assert rules(check_changes(changes, LIMITS)) == [(RULE_FORBIDDEN, "deploy/prod.yaml")]


@pytest.mark.parametrize("raw,message", [
    ({"maxChangedFiles": "20"}, "maxChangedFiles must be a non-negative integer"),
    ({"maxChangedLines": -1}, "maxChangedLines must be a non-negative integer"),
    ({"allowWorkflows": "yes"}, "allowWorkflows must be true or false"),
    ({"forbiddenPaths": "secrets/**"}, "forbiddenPaths must be a list"),
])
def test_bad_constraints_say_which_field(raw: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Constraints.from_mapping(raw)


def test_a_change_needs_a_known_status() -> None:
    with pytest.raises(ValueError, match="status must be one of"):
        Change("a.py", "deleted")
