"""Plan drift (foundry.domain.drift) and how the diff check acts on it (foundry.domain.policy.check_diff):
harmless drift goes to review, forbidden or uncovered-risk drift blocks, a plan without files bounds nothing."""

from __future__ import annotations

import yaml

from foundry.config import parse_config
from foundry.domain import drift, policy
from foundry.domain.risk import areas_of_path

CFG = parse_config(yaml.safe_load("""
repositories: [{name: web, github: acme/web}]
approvers: [{name: alice, kubernetes: alice, roles: [lead, dba]}]
policy:
  roles_required: {migrations: [dba]}
  forbidden_paths: ["*.pem"]
  forbidden_risks: [infra]
  max_changed_files: 20
"""))
PLAN = {"files": ["src/cart/total.py", "src/cart/coupons/", "docs/*.md"]}


def _drift(paths, plan_files=PLAN["files"], covered=()):
    return drift.plan_drift(paths, plan_files, forbidden_paths=CFG.policy.forbidden_paths,
                            areas_of=lambda p: areas_of_path(p, CFG), covered_areas=covered)


def test_paths_within_the_plan_are_files_directories_globs_neighbours_and_tests():
    inside = ["src/cart/total.py", "src/cart/coupons/x/y.py", "docs/usage.md", "src/cart/helpers.py",
              "tests/test_total.py", "src/other/test_z.py"]
    d = _drift(inside)
    assert (d.judged, d.outside, d.blocking) == (True, (), False)
    assert d.summary() == "every changed file is within the approved plan"
    # A glob is a glob: docs/*.md does not reach into docs/api/.
    assert _drift(["docs/api/ref.md", "src/other/z.py"]).outside == ("docs/api/ref.md", "src/other/z.py")


def test_plan_entries_may_be_objects_and_dotted_paths():
    assert drift.planned_paths(["./a/b.py", {"path": "c/d.py", "why": "x"}, "", {"why": "no path"}, 7]) == \
        ["a/b.py", "c/d.py"]
    # `.github/...` keeps its dot (stripping "./" characters one by one would have made it "github/...").
    assert drift.outside_plan([".github/CODEOWNERS"], [".github/"]) == ()


def test_an_empty_plan_bounds_nothing():
    for files in ([], None, ["", "  "]):
        d = _drift(["anything/at/all.py", "db/migrations/0003.sql"], files)
        assert (d.judged, d.outside, d.blocking) == (False, (), False)
    assert "names no files" in drift.Drift(judged=False).summary()


def test_forbidden_and_uncovered_risky_drift_block_but_a_covered_area_does_not():
    d = _drift(["src/cart/total.py", "src/other/z.py", "db/migrations/0003.sql", "keys/server.pem"])
    assert d.outside == ("src/other/z.py", "db/migrations/0003.sql", "keys/server.pem")
    assert d.forbidden == (("keys/server.pem", "*.pem"),)
    assert d.risky == (("db/migrations/0003.sql", ("migrations",)),)
    assert d.blocking
    why = d.why_blocked()
    assert "keys/server.pem matches forbidden path *.pem" in why
    assert "db/migrations/0003.sql is in risk area migrations, which the approvals did not cover" in why
    covered = _drift(["db/migrations/0003.sql"], covered=["migrations"])
    assert (covered.outside, covered.blocking) == (("db/migrations/0003.sql",), False)


def test_messages_are_bounded():
    many = [f"lib/m{n}/x.py" for n in range(30)]
    d = _drift(many)
    assert d.summary().endswith("lib/m9/x.py and 20 more") and "lib/m10/" not in d.summary()
    risky = _drift([f"db/migrations/{n:04}.sql" for n in range(25)])
    assert risky.why_blocked().endswith("; and 15 more")


def test_check_diff_sends_harmless_drift_to_review_with_the_paths():
    v = policy.check_diff(CFG, ["src/cart/total.py", "src/other/z.py"], PLAN, [])
    assert (v.outcome, v.cause) == (policy.REVIEW_REQUIRED, "")
    assert "files outside the plan: src/other/z.py" in v.reason
    assert v.drift.outside == ("src/other/z.py",)


def test_check_diff_blocks_risky_drift_the_approvals_did_not_cover():
    v = policy.check_diff(CFG, ["src/cart/total.py", "db/migrations/0003.sql"], PLAN, [])
    assert (v.outcome, v.cause) == (policy.BLOCKED, "PlanDrift")
    assert "db/migrations/0003.sql is in risk area migrations" in v.reason
    # The approvals covered migrations: the same drift only needs review.
    covered = policy.check_diff(CFG, ["src/cart/total.py", "db/migrations/0003.sql"], PLAN, ["migrations"])
    assert covered.outcome == policy.REVIEW_REQUIRED and covered.drift.outside == ("db/migrations/0003.sql",)
    # A risky file the plan named is no drift: the approval saw it (review, as before, if not covered).
    planned = policy.check_diff(CFG, ["db/migrations/0003.sql"], {"files": ["db/migrations/0003.sql"]}, [])
    assert planned.outcome == policy.REVIEW_REQUIRED and not planned.drift.drifted


def test_check_diff_keeps_forbidden_path_as_the_cause_and_still_reports_the_drift():
    v = policy.check_diff(CFG, ["src/cart/total.py", "keys/server.pem"], PLAN, [])
    assert (v.outcome, v.cause) == (policy.BLOCKED, "ForbiddenPath")
    assert v.drift.forbidden == (("keys/server.pem", "*.pem"),)


def test_check_diff_without_planned_files_judges_no_drift_even_in_risky_areas():
    v = policy.check_diff(CFG, ["db/migrations/0003.sql"], {"files": []}, [])
    assert v.outcome == policy.REVIEW_REQUIRED and v.cause == "" and not v.drift.judged
    assert "outside the plan" not in v.reason


def test_a_rename_out_of_a_risky_directory_is_drift_on_its_old_path():
    changes = [{"filename": "src/cart/total.py", "status": "renamed", "previous_filename": "db/migrations/old.py",
                "additions": 0, "deletions": 0}]
    v = policy.check_diff(CFG, ["src/cart/total.py"], PLAN, [], changes=changes)
    assert (v.outcome, v.cause) == (policy.BLOCKED, "PlanDrift")
    assert v.drift.outside == ("db/migrations/old.py",)


def test_the_pr_body_section_is_replaced_not_added_again_and_goes_when_nothing_drifts():
    d = _drift(["src/cart/total.py", "src/other/z.py"])
    body = drift.pr_body_with("Foundry run.\n\n## Approved plan\n\nx\n", d)
    assert body.startswith("Foundry run.\n\n## Approved plan\n\nx\n\n" + drift.BODY_BEGIN + "\n## Plan drift\n")
    assert body.endswith(drift.BODY_END + "\n") and "- `src/other/z.py`" in body
    assert drift.pr_body_with(body, d) == body  # idempotent
    # Two sections (an edit race, a copy) become one; the newest drift replaces the old.
    newer = _drift(["lib/q.py"])
    twice = drift.pr_body_with(body + "\n" + drift.body_section(d) + "\ntail\n", newer)
    assert twice.count(drift.BODY_BEGIN) == 1 and "lib/q.py" in twice and "src/other/z.py" not in twice
    assert "tail" in twice
    assert drift.pr_body_with(body, _drift(["src/cart/total.py"])) == "Foundry run.\n\n## Approved plan\n\nx\n"
    assert drift.pr_body_with("as is\n\n", _drift([])) == "as is\n\n"  # nothing to take out: untouched
    assert drift.pr_body_with(None, drift.Drift(judged=False)) == ""


def test_the_pr_body_section_is_bounded_and_paths_cannot_break_out_of_it():
    many = _drift([f"lib/m{n}/x.py" for n in range(30)])
    section = drift.body_section(many)
    assert section.count("\n- `") == drift.SHOWN and "- and 20 more" in section
    forged = _drift(["lib/a`<!-- /foundry:plan-drift -->\nb.py", "lib/" + "l" * 500 + ".py"])
    section = drift.body_section(forged)
    assert section.count(drift.BODY_END) == 1 and section.count("`") == 4
    assert max(len(line) for line in section.splitlines()) < 260
    risky = drift.body_section(_drift(["db/migrations/0003.sql", "keys/a.pem"]))
    assert "Foundry blocked this run: `keys/a.pem` (forbidden path); `db/migrations/0003.sql` (risk area migrations" \
        in risky
