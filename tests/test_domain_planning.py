"""Planning: a deterministic plan from the ticket text."""

from __future__ import annotations

from foundry.domain.planning import MAX_ITEMS, make_plan, mentioned_paths

TICKET = {
    "title": "Coupon applied twice",
    "description": (
        "The checkout total is wrong when a coupon is applied twice. See `src/cart/total.py` and "
        "src/cart/coupons/ (https://example.com/docs/x.py is a link, not a file).\n\n"
        "## Acceptance criteria\n- The second coupon is refused\n- The total never goes below zero\n\n"
        "## Out of scope\n- Coupon admin UI\n"
    ),
}


def test_plan_shape_and_content():
    plan = make_plan(TICKET, "web", ["payments"])
    assert set(plan) == {"goal", "steps", "files", "tests", "outOfScope"}
    assert plan["goal"] == "Coupon applied twice: The checkout total is wrong when a coupon is applied twice."
    assert plan["files"] == ["src/cart/total.py", "src/cart/coupons/"]
    assert "Make it so that: The second coupon is refused" in plan["steps"]
    assert "Make it so that: The total never goes below zero" in plan["steps"]
    assert any("payments" in s for s in plan["steps"])
    assert plan["steps"][-1].startswith("Run the test suite")
    assert "A test showing: The second coupon is refused" in plan["tests"]
    assert any(t.startswith("For payments:") for t in plan["tests"])
    assert plan["outOfScope"][0] == "Coupon admin UI"


def test_plan_is_deterministic():
    assert make_plan(TICKET, "web", ["payments"]) == make_plan(dict(TICKET), "web", ["payments"])


def test_no_risk_areas_puts_risky_changes_out_of_scope():
    plan = make_plan(TICKET, "web", [])
    assert any("authentication, payments" in o for o in plan["outOfScope"])


def test_mentioned_paths_ignore_urls_numbers_and_prose():
    found = mentioned_paths("see https://x.io/a/b.py, version 1.2/3 and config.yaml and `pkg/mod.go`.")
    assert "config.yaml" in found and "pkg/mod.go" in found
    assert not any("x.io" in f or f.startswith("1.2") for f in found)


def test_limits_from_the_crd_hold():
    many = "\n".join(f"- criterion {i}" for i in range(300))
    plan = make_plan({"title": "t" * 5000, "description": f"Lots of things to do here today.\n\n## Acceptance criteria\n{many}"}, "web", [])
    assert len(plan["goal"]) <= 4096
    assert len(plan["steps"]) <= MAX_ITEMS and len(plan["tests"]) <= MAX_ITEMS
    assert plan["steps"][-1].startswith("Run the test suite")  # the closing steps survive the cut
